//! Registry credentials where docker, podman, oras, helm and spin keep them: the `auths` of
//! `$DOCKER_CONFIG/config.json` (default `~/.docker/config.json`), or the credential helper it
//! names (`credHelpers` for one registry, `credsStore` for all), so one `login` serves every
//! tool. The file is rewritten through a private temporary file and a rename, keeping every
//! field skiff does not know.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use base64::Engine as _;
use serde_json::{Map, Value};

use crate::error::OciError;

/// Docker Hub's key in `auths`, whatever name the reference used.
const DOCKER_HUB_KEY: &str = "https://index.docker.io/v1/";

/// A user name and password (or token) for one registry.
#[derive(Clone, PartialEq, Eq)]
pub struct Credential {
    pub username: String,
    pub secret: String,
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credential")
            .field("username", &self.username)
            .field("secret", &"<redacted>")
            .finish()
    }
}

/// The docker-style credential file (and the helpers it names).
#[derive(Debug, Clone)]
pub struct CredentialStore {
    path: PathBuf,
}

impl CredentialStore {
    /// The file docker reads: `$DOCKER_CONFIG/config.json`, else `~/.docker/config.json`.
    pub fn default_location() -> Option<Self> {
        let dir = match std::env::var_os("DOCKER_CONFIG") {
            Some(dir) if !dir.is_empty() => PathBuf::from(dir),
            _ => PathBuf::from(std::env::var_os("HOME")?).join(".docker"),
        };
        Some(CredentialStore {
            path: dir.join("config.json"),
        })
    }

    /// The store in the file at `path`.
    pub fn at(path: impl Into<PathBuf>) -> Self {
        CredentialStore { path: path.into() }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The credential saved for `registry` (`host[:port]`), if any.
    pub fn get(&self, registry: &str) -> Result<Option<Credential>, OciError> {
        let config = self.read()?;
        if let Some(helper) = helper_for(&config, registry) {
            return self.helper_get(&helper, registry);
        }
        let Some(auths) = config.get("auths").and_then(Value::as_object) else {
            return Ok(None);
        };
        let Some(entry) = auths
            .iter()
            .find(|(key, _)| key_matches(key, registry))
            .map(|(_, entry)| entry)
        else {
            return Ok(None);
        };
        if let Some(auth) = entry.get("auth").and_then(Value::as_str)
            && !auth.is_empty()
        {
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(auth.trim())
                .ok()
                .and_then(|bytes| String::from_utf8(bytes).ok())
                .ok_or_else(|| self.bad(format!("`auths.{registry}.auth` is not base64")))?;
            let (username, secret) = decoded.split_once(':').ok_or_else(|| {
                self.bad(format!("`auths.{registry}.auth` is not `user:password`"))
            })?;
            return Ok(Some(Credential {
                username: username.to_string(),
                secret: secret.to_string(),
            }));
        }
        if let (Some(username), Some(secret)) = (
            entry.get("username").and_then(Value::as_str),
            entry.get("password").and_then(Value::as_str),
        ) {
            return Ok(Some(Credential {
                username: username.into(),
                secret: secret.into(),
            }));
        }
        Ok(None)
    }

    /// Saves `credential` for `registry`: in its credential helper if the file names one, else
    /// in `auths` (the file is made readable by its owner only).
    pub fn save(&self, registry: &str, credential: &Credential) -> Result<(), OciError> {
        let mut config = self.read()?;
        if let Some(helper) = helper_for(&config, registry) {
            let body = serde_json::json!({
                "ServerURL": key_for(registry),
                "Username": credential.username,
                "Secret": credential.secret,
            });
            return self
                .helper_run(&helper, "store", &body.to_string())
                .map(drop);
        }
        let auth = base64::engine::general_purpose::STANDARD
            .encode(format!("{}:{}", credential.username, credential.secret));
        let auths = config
            .entry("auths")
            .or_insert_with(|| Value::Object(Map::new()));
        let Value::Object(auths) = auths else {
            return Err(self.bad("`auths` is not an object".into()));
        };
        auths.retain(|key, _| !key_matches(key, registry));
        auths.insert(key_for(registry), serde_json::json!({ "auth": auth }));
        self.write(&config)
    }

    /// Forgets the credential for `registry`; returns whether there was one.
    pub fn remove(&self, registry: &str) -> Result<bool, OciError> {
        let mut config = self.read()?;
        if let Some(helper) = helper_for(&config, registry) {
            return self
                .helper_run(&helper, "erase", &key_for(registry))
                .map(|_| true);
        }
        let Some(Value::Object(auths)) = config.get_mut("auths") else {
            return Ok(false);
        };
        let before = auths.len();
        auths.retain(|key, _| !key_matches(key, registry));
        if auths.len() == before {
            return Ok(false);
        }
        self.write(&config)?;
        Ok(true)
    }

    fn read(&self) -> Result<Map<String, Value>, OciError> {
        let text = match std::fs::read_to_string(&self.path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Map::new()),
            Err(source) => {
                return Err(OciError::Io {
                    op: "read",
                    path: self.path.clone(),
                    source,
                });
            }
        };
        if text.trim().is_empty() {
            return Ok(Map::new());
        }
        match serde_json::from_str(&text) {
            Ok(Value::Object(map)) => Ok(map),
            Ok(_) => Err(self.bad("the file is not a JSON object".into())),
            Err(e) => Err(self.bad(format!(
                "the file is not valid JSON ({e}); fix or remove it"
            ))),
        }
    }

    fn write(&self, config: &Map<String, Value>) -> Result<(), OciError> {
        let io = |op: &'static str, source| OciError::Io {
            op,
            path: self.path.clone(),
            source,
        };
        let dir = self.path.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir).map_err(|e| io("create the folder of", e))?;
        // A fresh temporary file is created private (0600) and renamed over the old one, so
        // the credentials are never readable by others, not even for a moment.
        let mut file = tempfile::NamedTempFile::new_in(dir).map_err(|e| io("write", e))?;
        let mut text = serde_json::to_vec_pretty(config).unwrap_or_default();
        text.push(b'\n');
        file.write_all(&text).map_err(|e| io("write", e))?;
        file.as_file().sync_all().map_err(|e| io("write", e))?;
        file.persist(&self.path).map_err(|e| io("write", e.error))?;
        Ok(())
    }

    fn helper_get(&self, helper: &str, registry: &str) -> Result<Option<Credential>, OciError> {
        let Some(out) = self.helper_run(helper, "get", &key_for(registry))? else {
            return Ok(None);
        };
        let value: Value = serde_json::from_str(&out).map_err(|e| {
            self.bad(format!(
                "docker-credential-{helper} answered with no JSON ({e})"
            ))
        })?;
        let field = |name| value.get(name).and_then(Value::as_str).map(str::to_string);
        Ok(match (field("Username"), field("Secret")) {
            (Some(username), Some(secret)) if !secret.is_empty() => {
                Some(Credential { username, secret })
            }
            _ => None,
        })
    }

    /// Runs `docker-credential-<helper> <action>` with `input` on stdin. `None` when the
    /// helper says it has no credential for the registry.
    fn helper_run(
        &self,
        helper: &str,
        action: &str,
        input: &str,
    ) -> Result<Option<String>, OciError> {
        let program = format!("docker-credential-{helper}");
        let mut child = Command::new(&program)
            .arg(action)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| {
                self.bad(format!(
                    "it names the credential helper `{helper}`, but `{program}` cannot be \
                     started ({e}); install it, or remove `credsStore`/`credHelpers` from the file"
                ))
            })?;
        if let Some(mut stdin) = child.stdin.take() {
            // A helper that exits early closes its stdin; its exit status tells why.
            let _ = stdin.write_all(input.as_bytes());
        }
        let output = child
            .wait_with_output()
            .map_err(|e| self.bad(format!("`{program} {action}` failed: {e}")))?;
        let stdout = String::from_utf8_lossy(&output.stdout).trim().to_string();
        if output.status.success() {
            return Ok(Some(stdout));
        }
        if stdout.contains("credentials not found") {
            return Ok(None);
        }
        let stderr = String::from_utf8_lossy(&output.stderr);
        Err(self.bad(format!(
            "`{program} {action}` failed: {}",
            if stdout.is_empty() {
                stderr.trim()
            } else {
                &stdout
            }
        )))
    }

    fn bad(&self, detail: String) -> OciError {
        OciError::Credentials {
            path: self.path.clone(),
            detail,
        }
    }
}

/// The helper the file names for `registry`, if any.
fn helper_for(config: &Map<String, Value>, registry: &str) -> Option<String> {
    let per_registry = config
        .get("credHelpers")
        .and_then(Value::as_object)
        .and_then(|helpers| {
            helpers
                .iter()
                .find(|(key, _)| key_matches(key, registry))
                .and_then(|(_, helper)| helper.as_str())
        });
    per_registry
        .or_else(|| config.get("credsStore").and_then(Value::as_str))
        .filter(|helper| !helper.is_empty())
        .map(str::to_string)
}

fn is_docker_hub(registry: &str) -> bool {
    matches!(
        registry,
        "docker.io" | "index.docker.io" | "registry-1.docker.io"
    )
}

/// The key docker writes for `registry`.
fn key_for(registry: &str) -> String {
    if is_docker_hub(registry) {
        DOCKER_HUB_KEY.to_string()
    } else {
        registry.to_string()
    }
}

/// Whether a key of `auths` (a bare `host[:port]`, or a URL as older docker wrote them) is
/// `registry`'s.
fn key_matches(key: &str, registry: &str) -> bool {
    if is_docker_hub(registry) && key == DOCKER_HUB_KEY {
        return true;
    }
    let bare = key
        .strip_prefix("https://")
        .or_else(|| key.strip_prefix("http://"))
        .unwrap_or(key);
    let host = bare.split('/').next().unwrap_or(bare);
    host.eq_ignore_ascii_case(registry)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn login_writes_what_docker_reads_and_keeps_other_fields() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.json");
        std::fs::write(
            &path,
            r#"{"auths":{"https://other.example/v1/":{"auth":"dTpw"}},"proxies":{"x":1}}"#,
        )
        .unwrap();
        let store = CredentialStore::at(&path);
        let alice = Credential {
            username: "alice".into(),
            secret: "pa:ss".into(),
        };
        store.save("localhost:5000", &alice).unwrap();
        let saved: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        assert_eq!(saved["auths"]["localhost:5000"]["auth"], "YWxpY2U6cGE6c3M=");
        assert_eq!(saved["proxies"]["x"], 1);
        assert_eq!(store.get("localhost:5000").unwrap(), Some(alice));
        // A key written as a URL (older docker) still matches its host.
        assert_eq!(
            store.get("other.example").unwrap(),
            Some(Credential {
                username: "u".into(),
                secret: "p".into()
            })
        );
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o077, 0, "readable by others: {mode:o}");
        }
        assert!(store.remove("localhost:5000").unwrap());
        assert!(!store.remove("localhost:5000").unwrap());
        assert_eq!(store.get("localhost:5000").unwrap(), None);
    }

    #[test]
    fn a_damaged_file_is_named_and_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.json");
        std::fs::write(&path, "{not json").unwrap();
        let store = CredentialStore::at(&path);
        let err = store
            .save(
                "r.example",
                &Credential {
                    username: "a".into(),
                    secret: "b".into(),
                },
            )
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("config.json") && err.contains("not valid JSON"),
            "{err}"
        );
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "{not json");
    }
}
