//! The runtime config: the *operator's* file (`skiff up --runtime-config FILE`), apart from
//! the developer's `skiff.toml`, in the spirit of Spin's runtime-config.toml. It says where
//! each key-value store label lives, where the app's queues live, and gives values to app
//! variables, so one app moves from a laptop to a cluster without touching its manifest.
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
//!
//! # Where the app's queues live; without this table, embedded in the data folder.
//! [queues]
//! type = "redis"                       # or "embedded", with an optional `path`
//! url = "redis://127.0.0.1:6379"
//! max_depth = 100000                   # optional: most messages a queue holds
//! max_bytes = "256MiB"                 # optional: most bytes the app's queues hold together
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
    /// Where queues live (`[queues]`); `None`: embedded, in the data folder.
    pub queues: Option<QueueSpec>,
}

/// Where an app's queues live, and how deep each may grow.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueSpec {
    /// Embedded (a redb file: `path`, or skiff's default in its data folder) or Redis Streams.
    pub backend: StoreSpec,
    /// Most messages one queue holds, waiting and in flight; `None`: the backend's default.
    pub max_depth: Option<u64>,
    /// Most bytes of messages the app's queues hold together; `None`: the backend's default.
    pub max_bytes: Option<u64>,
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
    queues: Option<Spanned<RawQueues>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawQueues {
    #[serde(rename = "type")]
    kind: Option<Spanned<String>>,
    path: Option<String>,
    url: Option<Spanned<String>>,
    max_depth: Option<Spanned<u64>>,
    max_bytes: Option<Spanned<String>>,
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
        let spec = backend(&src, &field, span, store.into_inner(), base)?;
        stores.push((label.into_inner(), spec));
    }

    let queues = match raw.queues {
        None => None,
        Some(queues) => {
            let span = queues.span();
            let queues = queues.into_inner();
            if let Some(depth) = queues.max_depth.as_ref().filter(|d| *d.get_ref() == 0) {
                return Err(src.error(
                    Some(depth.span()),
                    "queues.max_depth",
                    "a queue must hold at least one message",
                    "remove `max_depth` for the default (100000), or give a positive number"
                        .to_string(),
                ));
            }
            let max_bytes = match queues.max_bytes {
                None => None,
                Some(text) => Some(crate::parse_memory(text.get_ref()).map_err(|why| {
                    src.error(
                        Some(text.span()),
                        "queues.max_bytes",
                        format!("`{}`: {why}", text.get_ref()),
                        "write a size such as \"256MiB\"".to_string(),
                    )
                })?),
            };
            let store = RawStore {
                kind: queues.kind,
                path: queues.path,
                url: queues.url,
            };
            Some(QueueSpec {
                backend: backend(&src, "queues", span, store, base)?,
                max_depth: queues.max_depth.map(Spanned::into_inner),
                max_bytes,
            })
        }
    };

    Ok(RuntimeConfigFile {
        stores,
        variables,
        variables_file: raw.variables_file.map(|f| base.join(f.into_inner())),
        queues,
    })
}

/// Where the table `field` (a store, or the queues) says its data lives.
fn backend(
    src: &Source<'_>,
    field: &str,
    span: std::ops::Range<usize>,
    store: RawStore,
    base: &Path,
) -> Result<StoreSpec, ManifestError> {
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
    Ok(spec)
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

    #[test]
    fn the_queues_table_says_where_queues_live() {
        let config = parse(
            "[queues]\ntype = \"redis\"\nurl = \"redis://10.0.0.5:6379\"\nmax_depth = 5000\n\
             max_bytes = \"1MiB\"\n",
        )
        .unwrap();
        assert_eq!(
            config.queues,
            Some(QueueSpec {
                backend: StoreSpec::Redis {
                    url: "redis://10.0.0.5:6379".into()
                },
                max_depth: Some(5000),
                max_bytes: Some(1 << 20),
            })
        );
        let config = parse("[queues]\ntype = \"embedded\"\npath = \"q.redb\"\n").unwrap();
        assert_eq!(
            config.queues.map(|q| q.backend),
            Some(StoreSpec::Embedded {
                path: Some("/etc/skiff/q.redb".into())
            })
        );
        assert_eq!(parse("").unwrap().queues, None);
        for (text, field) in [
            ("[queues]\ntype = \"redis\"\n", "queues.url"),
            ("[queues]\nurl = \"redis://x\"\n", "queues.type"),
            ("[queues]\ntype = \"kafka\"\n", "queues.type"),
            (
                "[queues]\ntype = \"embedded\"\nmax_depth = 0\n",
                "queues.max_depth",
            ),
            (
                "[queues]\ntype = \"embedded\"\nmax_bytes = \"lots\"\n",
                "queues.max_bytes",
            ),
        ] {
            assert_eq!(parse(text).unwrap_err().field, field, "{text}");
        }
        let e = parse("[queues]\ntype = \"embedded\"\ndepth = 3\n").unwrap_err();
        assert!(
            e.to_string().contains("max_depth"),
            "the known fields are listed: {e}"
        );
    }
}
