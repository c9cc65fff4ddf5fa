//! The client's config file: the server address and token that `skiff login` saves, so that
//! the client commands work without `--server`/`--token` or variables in every shell.
//!
//! It lives at `$SKIFF_CONFIG`, else `$XDG_CONFIG_HOME/skiff/config.toml`, else
//! `~/.config/skiff/config.toml`, and holds at most three keys:
//!
//! ```toml
//! server = "https://skiff.example.com:3001"
//! token = "skf_..."
//! # `skiff login --ca-cert`: the CA that signed the server's certificate, trusted for it.
//! ca_cert = "/home/me/skiff-ca.pem"
//! ```
//!
//! A file that does not exist is no error: the commands then need flags or variables.

use std::ffi::OsString;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use crate::ClientError;

const KEYS: [&str; 3] = ["server", "token", "ca_cert"];

/// The config file's path from the environment, or `None` when neither SKIFF_CONFIG nor a
/// config folder (XDG_CONFIG_HOME, HOME) is known.
pub fn default_config_path() -> Option<PathBuf> {
    path_from(
        std::env::var_os("SKIFF_CONFIG"),
        std::env::var_os("XDG_CONFIG_HOME"),
        std::env::var_os("HOME"),
    )
}

// Hand-written rather than `etcetera`'s `Xdg` (or `directories`): those take an empty HOME for
// a home folder, which puts the file (a secret) at the relative `.config/skiff/config.toml` of
// whatever folder the command runs in; they also refuse to answer without a home folder even
// when XDG_CONFIG_HOME names one, and on macOS or Windows they pick folders our docs do not
// promise. The rules below are the documented ones and fit in a few lines.
fn path_from(
    skiff_config: Option<OsString>,
    xdg_config_home: Option<OsString>,
    home: Option<OsString>,
) -> Option<PathBuf> {
    let set = |value: Option<OsString>| value.filter(|v| !v.is_empty()).map(PathBuf::from);
    if let Some(path) = set(skiff_config) {
        return Some(path);
    }
    // The XDG spec says a relative XDG_CONFIG_HOME is invalid and to be ignored.
    if let Some(folder) = set(xdg_config_home).filter(|p| p.is_absolute()) {
        return Some(folder.join("skiff").join("config.toml"));
    }
    set(home).map(|home| home.join(".config").join("skiff").join("config.toml"))
}

/// The contents of one config file, checked: only known keys, each a string.
#[derive(Debug, Clone, PartialEq)]
pub struct ClientConfig {
    path: PathBuf,
    table: toml::Table,
}

impl ClientConfig {
    /// An empty config that [`ClientConfig::save`] would write at `path`.
    pub fn empty(path: PathBuf) -> ClientConfig {
        ClientConfig {
            path,
            table: toml::Table::new(),
        }
    }

    /// Reads and checks the file at `path`; `None` if there is none.
    pub fn load(path: &Path) -> Result<Option<ClientConfig>, ClientError> {
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(error) => {
                return Err(ClientError::ConfigUnreadable {
                    path: path.to_path_buf(),
                    error,
                });
            }
        };
        Self::parse(path, &text).map(Some)
    }

    /// The config file at its usual place (see [`default_config_path`]), if there is one.
    pub fn load_default() -> Result<Option<ClientConfig>, ClientError> {
        match default_config_path() {
            Some(path) => ClientConfig::load(&path),
            None => Ok(None),
        }
    }

    /// Checks `text`, the contents of the file at `path`.
    pub fn parse(path: &Path, text: &str) -> Result<ClientConfig, ClientError> {
        let table: toml::Table =
            toml::from_str(text).map_err(|err| ClientError::ConfigNotToml {
                path: path.to_path_buf(),
                message: err.to_string().trim_end().to_string(),
            })?;
        for (key, value) in &table {
            if !KEYS.contains(&key.as_str()) {
                return Err(ClientError::ConfigUnknownKey {
                    path: path.to_path_buf(),
                    key: key.clone(),
                });
            }
            if !value.is_str() {
                return Err(ClientError::ConfigNotAString {
                    path: path.to_path_buf(),
                    key: key.clone(),
                });
            }
        }
        Ok(ClientConfig {
            path: path.to_path_buf(),
            table,
        })
    }

    /// Where the file is (or would be written).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The saved server address; a blank one counts as none.
    pub fn server(&self) -> Option<&str> {
        self.get("server")
    }

    /// The saved token; a blank one counts as none.
    pub fn token(&self) -> Option<&str> {
        self.get("token")
    }

    /// The CA certificate file saved with the server; a blank one counts as none.
    pub fn ca_cert(&self) -> Option<&str> {
        self.get("ca_cert")
    }

    fn get(&self, key: &str) -> Option<&str> {
        self.table
            .get(key)
            .and_then(toml::Value::as_str)
            .map(str::trim)
            .filter(|v| !v.is_empty())
    }

    /// Sets the server and token, as `skiff login` saves them, and the CA certificate to
    /// trust for that server (none: any CA saved before is forgotten).
    pub fn set_login(&mut self, server: &str, token: &str, ca_cert: Option<&Path>) {
        self.table.insert("server".into(), server.into());
        self.table.insert("token".into(), token.into());
        match ca_cert {
            Some(path) => {
                self.table
                    .insert("ca_cert".into(), path.to_string_lossy().as_ref().into());
            }
            None => {
                self.table.remove("ca_cert");
            }
        }
    }

    /// Removes the token; false if there was none.
    pub fn remove_token(&mut self) -> bool {
        self.table.remove("token").is_some()
    }

    /// Writes the file so that a reader (or a crash) never sees half of it: a temporary file in
    /// the same folder, then a rename over the old one. The file holds a secret, so it is
    /// readable by its owner only, and a folder made for it too.
    pub fn save(&self) -> Result<(), ClientError> {
        let text = toml::to_string(&self.table).map_err(ClientError::ConfigNotSerializable)?;
        // A config file kept as a symlink (dotfiles) stays one: the rename goes to its target.
        let path = std::fs::canonicalize(&self.path).unwrap_or_else(|_| self.path.clone());
        write_atomically(&path, text.as_bytes()).map_err(|error| ClientError::ConfigUnwritable {
            path: self.path.clone(),
            error,
        })
    }
}

fn write_atomically(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    let folder = match path.parent() {
        Some(folder) if !folder.as_os_str().is_empty() => folder,
        _ => Path::new("."),
    };
    let mut folders = std::fs::DirBuilder::new();
    folders.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut folders, 0o700);
    folders.create(folder)?;
    // tempfile makes the file readable by its owner only (0600 on Unix) and removes it again if
    // anything below fails.
    let mut file = tempfile::NamedTempFile::new_in(folder)?;
    file.write_all(contents)?;
    file.as_file().sync_all()?;
    file.persist(path).map_err(|err| err.error)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<ClientConfig, ClientError> {
        ClientConfig::parse(Path::new("/home/u/.config/skiff/config.toml"), text)
    }

    #[test]
    fn the_path_is_skiff_config_then_xdg_then_home() {
        let some = |s: &str| Some(OsString::from(s));
        assert_eq!(
            path_from(some("/etc/skiff.toml"), some("/xdg"), some("/home/u")),
            Some(PathBuf::from("/etc/skiff.toml"))
        );
        assert_eq!(
            path_from(None, some("/xdg"), some("/home/u")),
            Some(PathBuf::from("/xdg/skiff/config.toml"))
        );
        assert_eq!(
            path_from(some(""), some("relative"), some("/home/u")),
            Some(PathBuf::from("/home/u/.config/skiff/config.toml"))
        );
        assert_eq!(
            path_from(None, some("/xdg"), None),
            Some(PathBuf::from("/xdg/skiff/config.toml"))
        );
        assert_eq!(path_from(None, None, some("")), None);
        assert_eq!(path_from(None, None, None), None);
    }

    #[test]
    fn a_config_holds_a_server_and_a_token() {
        let config = parse("server = \"http://h:3001\"\ntoken = \"skf_x\"\n").unwrap();
        assert_eq!(config.server(), Some("http://h:3001"));
        assert_eq!(config.token(), Some("skf_x"));
        let config = parse("server = \"https://h\"\nca_cert = \"/home/u/ca.pem\"\n").unwrap();
        assert_eq!(config.ca_cert(), Some("/home/u/ca.pem"));
        let config = parse("token = \"  \"\n").unwrap();
        assert_eq!((config.server(), config.token()), (None, None));
    }

    #[test]
    fn an_unknown_key_names_the_file_the_key_and_the_fix() {
        let err = parse("server = \"http://h:3001\"\ntokne = \"skf_x\"\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains(
                "unknown key `tokne` in the client config file /home/u/.config/skiff/config.toml"
            ),
            "{err}"
        );
        assert!(err.contains("remove `tokne`"), "{err}");
    }

    #[test]
    fn malformed_files_name_the_file() {
        let err = parse("server = \n").unwrap_err().to_string();
        assert!(
            err.contains("/home/u/.config/skiff/config.toml is not valid TOML"),
            "{err}"
        );
        let err = parse("server = 3001\n").unwrap_err().to_string();
        assert!(
            err.contains("`server` in the client config file /home/u/.config/skiff/config.toml must be a string"),
            "{err}"
        );
    }

    #[test]
    fn saving_keeps_the_other_key_and_hides_the_file_from_others() {
        let folder = tempfile::tempdir().unwrap();
        let path = folder.path().join("new").join("config.toml");
        assert_eq!(ClientConfig::load(&path).unwrap(), None);

        let mut config = ClientConfig::empty(path.clone());
        config.set_login("http://h:3001", "skf_x", None);
        config.save().unwrap();
        let mut config = ClientConfig::load(&path).unwrap().unwrap();
        assert_eq!(config.token(), Some("skf_x"));
        // A login with a CA saves it; one without forgets it.
        config.set_login("https://h:3001", "skf_x", Some(Path::new("/etc/ca.pem")));
        assert_eq!(config.ca_cert(), Some("/etc/ca.pem"));
        config.set_login("http://h:3001", "skf_x", None);
        assert_eq!(config.ca_cert(), None);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }

        assert!(config.remove_token());
        config.save().unwrap();
        let config = ClientConfig::load(&path).unwrap().unwrap();
        assert_eq!(
            (config.server(), config.token()),
            (Some("http://h:3001"), None)
        );
        // Only the config file is left in the folder: no temporary files.
        let names: Vec<_> = std::fs::read_dir(path.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["config.toml"]);
    }
}
