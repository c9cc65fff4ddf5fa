//! The runtime config: the *operator's* file (`skiff up --runtime-config FILE`), apart from
//! the developer's `skiff.toml`, in the spirit of Spin's runtime-config.toml. It says where
//! each key-value store label lives and gives values to app variables, so one app moves from a
//! laptop to a cluster without touching its manifest.
//!
//! ```toml
//! # Values for app variables (after the SKIFF_VAR_* environment and the variables file).
//! variables_file = "secrets.toml"      # optional; a TOML file of `name = "value"` lines
//!
//! [variables]
//! greeting = "hello from the operator"
//!
//! # Any label not listed is embedded, in the data folder.
//! [key_value_store.default]
//! type = "embedded"
//! path = "state/default.redb"          # optional; relative to this file
//!
//! [key_value_store.shared]
//! type = "redis"
//! url = "redis://127.0.0.1:6379"
//! ```
//!
//! Errors point at the file, line and field, like the manifest's.

use std::path::{Path, PathBuf};

use serde::Deserialize;
use toml::Spanned;

use crate::error::Source;
use crate::raw::OrderedMap;
use crate::toml_error::toml_error;
use crate::{ManifestError, is_store_label, is_variable_name};

/// A validated runtime config. The default (no file) maps every label to the embedded store
/// and gives no variable values.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RuntimeConfigFile {
    /// Store label and where it lives, in file order.
    pub stores: Vec<(String, StoreSpec)>,
    /// Variable values, from the file's `[variables]` table.
    pub variables: Vec<(String, String)>,
    /// A file of further values (`variables_file`), resolved against the config's folder.
    pub variables_file: Option<PathBuf>,
}

/// Where one key-value store label lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreSpec {
    /// The embedded database; `None` means skiff's default file in its data folder.
    Embedded { path: Option<PathBuf> },
    /// A Redis server shared by several hosts.
    Redis { url: String },
}

impl RuntimeConfigFile {
    pub fn store(&self, label: &str) -> Option<&StoreSpec> {
        self.stores
            .iter()
            .find(|(l, _)| l == label)
            .map(|(_, spec)| spec)
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRuntimeConfig {
    variables_file: Option<Spanned<String>>,
    variables: Option<OrderedMap<String>>,
    key_value_store: Option<OrderedMap<Spanned<RawStore>>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStore {
    #[serde(rename = "type")]
    kind: Option<Spanned<String>>,
    path: Option<String>,
    url: Option<Spanned<String>>,
}

/// Reads and validates the runtime config at `path`.
pub fn load_runtime_config(path: &Path) -> Result<RuntimeConfigFile, ManifestError> {
    let text = std::fs::read_to_string(path).map_err(|e| ManifestError {
        path: path.to_path_buf(),
        location: None,
        field: String::new(),
        message: format!("cannot read the runtime config `{}`: {e}", path.display()),
        help: Some("check the path given to --runtime-config".into()),
        snippet: None,
    })?;
    parse_runtime_config(&text, path)
}

/// Like [`load_runtime_config`] with the text given.
pub fn parse_runtime_config(text: &str, path: &Path) -> Result<RuntimeConfigFile, ManifestError> {
    let src = Source { text, path };
    let raw: RawRuntimeConfig = toml::from_str(text).map_err(|e| toml_error(&src, &e))?;
    let base = path.parent().unwrap_or(Path::new(""));

    let mut variables = Vec::new();
    for (name, value) in raw.variables.map(|m| m.0).unwrap_or_default() {
        if !is_variable_name(name.get_ref()) {
            return Err(src.error(
                Some(name.span()),
                format!("variables.{}", name.get_ref()),
                format!("`{}` is not a valid variable name", name.get_ref()),
                "variable names are lowercase letters, digits and `_`, starting with a letter, as in skiff.toml".to_string(),
            ));
        }
        variables.push((name.into_inner(), value));
    }

    let mut stores = Vec::new();
    for (label, store) in raw.key_value_store.map(|m| m.0).unwrap_or_default() {
        let field = format!("key_value_store.{}", label.get_ref());
        if !is_store_label(label.get_ref()) {
            return Err(src.error(
                Some(label.span()),
                field,
                format!("`{}` is not a valid store label", label.get_ref()),
                "labels are lowercase letters, digits, `-` and `_`, as in skiff.toml".to_string(),
            ));
        }
        let span = store.span();
        let store = store.into_inner();
        let Some(kind) = store.kind else {
            return Err(src.error(
                Some(span),
                format!("{field}.type"),
                format!("`{field}` has no `type`"),
                "add `type = \"embedded\"` or `type = \"redis\"`".to_string(),
            ));
        };
        let spec = match kind.get_ref().as_str() {
            "embedded" => {
                if let Some(url) = store.url {
                    return Err(src.error(
                        Some(url.span()),
                        format!("{field}.url"),
                        "an embedded store has no `url`",
                        "remove `url`, or set `type = \"redis\"`".to_string(),
                    ));
                }
                StoreSpec::Embedded {
                    path: store.path.map(|p| base.join(p)),
                }
            }
            "redis" => {
                let Some(url) = store.url else {
                    return Err(src.error(
                        Some(span),
                        format!("{field}.url"),
                        format!("`{field}` is a Redis store without a `url`"),
                        "add e.g. `url = \"redis://127.0.0.1:6379\"`".to_string(),
                    ));
                };
                if !["redis://", "rediss://", "redis+unix://"]
                    .iter()
                    .any(|scheme| url.get_ref().starts_with(scheme))
                {
                    return Err(src.error(
                        Some(url.span()),
                        format!("{field}.url"),
                        "a Redis URL starts with `redis://`, `rediss://` (TLS) or `redis+unix://`",
                        "e.g. `url = \"redis://127.0.0.1:6379\"`".to_string(),
                    ));
                }
                StoreSpec::Redis {
                    url: url.into_inner(),
                }
            }
            other => {
                return Err(src.error(
                    Some(kind.span()),
                    format!("{field}.type"),
                    format!("unknown store type `{other}`"),
                    "use `embedded` or `redis`".to_string(),
                ));
            }
        };
        stores.push((label.into_inner(), spec));
    }

    Ok(RuntimeConfigFile {
        stores,
        variables,
        variables_file: raw.variables_file.map(|f| base.join(f.into_inner())),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<RuntimeConfigFile, ManifestError> {
        parse_runtime_config(text, Path::new("/etc/skiff/runtime.toml"))
    }

    #[test]
    fn a_full_config_parses() {
        let config = parse(
            r#"variables_file = "secrets.toml"

[variables]
greeting = "hi"

[key_value_store.default]
type = "embedded"
path = "state/default.redb"

[key_value_store.shared]
type = "redis"
url = "redis://127.0.0.1:6379"
"#,
        )
        .unwrap();
        assert_eq!(config.variables, [("greeting".into(), "hi".into())]);
        assert_eq!(
            config.variables_file.as_deref(),
            Some(Path::new("/etc/skiff/secrets.toml"))
        );
        assert_eq!(
            config.store("default"),
            Some(&StoreSpec::Embedded {
                path: Some("/etc/skiff/state/default.redb".into())
            })
        );
        assert_eq!(
            config.store("shared"),
            Some(&StoreSpec::Redis {
                url: "redis://127.0.0.1:6379".into()
            })
        );
        assert_eq!(config.store("other"), None);
        assert_eq!(parse("").unwrap(), RuntimeConfigFile::default());
    }

    #[test]
    fn mistakes_are_located() {
        let e = parse("[key_value_store.shared]\ntype = \"redis\"\n").unwrap_err();
        assert_eq!(e.field, "key_value_store.shared.url");
        let e = parse("[key_value_store.s]\ntype = \"memcached\"\n").unwrap_err();
        assert_eq!(e.field, "key_value_store.s.type");
        assert_eq!(e.location.map(|l| l.line), Some(2));
        let e = parse("[key_value_store.s]\ntype = \"redis\"\nurl = \"http://x\"\n").unwrap_err();
        assert_eq!(e.field, "key_value_store.s.url");
        assert!(parse("[key_value_store.s]\ntype = \"redis\"\nurl = \"rediss://x\"\n").is_ok());
        let e = parse("[variables]\nBad = \"x\"\n").unwrap_err();
        assert_eq!(e.field, "variables.Bad");
        let e = parse("[key_value_store.s]\ntype = \"redis\"\nurll = \"x\"\n").unwrap_err();
        assert!(e.to_string().contains("url"), "{e}");
    }
}
