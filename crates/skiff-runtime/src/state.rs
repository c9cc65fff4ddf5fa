//! State and configuration of an app at load: the key-value backends its store labels map to
//! (through the operator's runtime config), and the values of its variables (through the
//! providers). What comes out are the grants the `keyvalue` and `config` capabilities hand to
//! each instance; nothing here runs per request.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use skiff_manifest::{App, Component, RuntimeConfigFile, StoreSpec};
use skiff_store::embedded::EmbeddedBackend;
use skiff_store::redis::RedisBackend;
use skiff_store::{Backend, KeyPage, Store, StoreError};

use crate::capabilities::config::ConfigGrant;
use crate::capabilities::keyvalue::KeyValueGrant;
use crate::error::{LoadError, LoadErrorKind};

/// Prefix of the environment variables that give app variables their values:
/// `SKIFF_VAR_API_TOKEN` is `api_token`.
pub const VARIABLE_ENV_PREFIX: &str = "SKIFF_VAR_";

/// The backends of one host, opened on first use and shared by every app that maps a label to
/// the same file or server.
#[derive(Default)]
pub(crate) struct Backends {
    open: Mutex<HashMap<BackendKey, Arc<dyn Backend>>>,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum BackendKey {
    File(PathBuf),
    Redis(String),
}

impl Backends {
    /// The stores `component` may open, each its own namespace (`app/label`) of the backend
    /// the runtime config gives the label; unlisted labels live in the embedded database in
    /// the data folder, one file per app.
    pub(crate) fn grant(
        &self,
        app: &App,
        component: &Component,
        config: &RuntimeConfigFile,
        data_dir: Option<&Path>,
        writes_refused: Option<&Arc<AtomicBool>>,
    ) -> Result<KeyValueGrant, LoadError> {
        let mut stores = Vec::with_capacity(component.key_value_stores.len());
        for label in &component.key_value_stores {
            let key = match config.store(label) {
                Some(StoreSpec::Redis { url }) => BackendKey::Redis(url.clone()),
                Some(StoreSpec::Embedded { path: Some(path) }) => BackendKey::File(path.clone()),
                Some(StoreSpec::Embedded { path: None }) | None => {
                    let Some(data_dir) = data_dir else {
                        return Err(LoadError::new(
                            &app.manifest_path,
                            LoadErrorKind::Store {
                                label: label.clone(),
                                reason: "skiff has no data folder for the embedded store (no $HOME); give one with --data-dir or SKIFF_DATA_DIR".into(),
                            },
                        ));
                    };
                    BackendKey::File(data_dir.join("kv").join(format!("{}.redb", app.name)))
                }
            };
            let backend = self.backend(&key).map_err(|reason| {
                LoadError::new(
                    &app.manifest_path,
                    LoadErrorKind::Store {
                        label: label.clone(),
                        reason,
                    },
                )
            })?;
            let mut store = backend.open(&format!("{}/{label}", app.name));
            if let Some(refused) = writes_refused {
                store = Arc::new(WritesGuarded {
                    inner: store,
                    refused: refused.clone(),
                });
            }
            stores.push((label.clone(), store));
        }
        Ok(KeyValueGrant::new(stores))
    }

    /// Closes the backends no loaded app uses any more (an app unloaded when idle lets go of
    /// its stores): a host of thousands of apps would otherwise keep a database file open for
    /// every app ever loaded. Under the lock, so a load that needs one again waits for it to
    /// be closed and then opens it afresh. Returns how many were closed.
    pub(crate) fn close_unused(&self) -> usize {
        let mut open = self.open.lock().expect("backends lock");
        let before = open.len();
        // A loader between `backend` and opening its store holds a clone of the Arc.
        open.retain(|_, backend| Arc::strong_count(backend) > 1 || backend.in_use());
        before - open.len()
    }

    fn backend(&self, key: &BackendKey) -> Result<Arc<dyn Backend>, String> {
        let mut open = self.open.lock().expect("backends lock");
        if let Some(backend) = open.get(key) {
            return Ok(backend.clone());
        }
        let backend: Arc<dyn Backend> = match key {
            BackendKey::File(path) => {
                Arc::new(EmbeddedBackend::open(path).map_err(|err| err.to_string())?)
            }
            BackendKey::Redis(url) => {
                Arc::new(RedisBackend::connect(url).map_err(|err| err.to_string())?)
            }
        };
        open.insert(key.clone(), backend.clone());
        Ok(backend)
    }
}

/// A store whose writes fail while `refused` is set: the host sets it while the app's tenant is
/// over its disk quota. Reads and deletes (which make room) go on.
struct WritesGuarded {
    inner: Arc<dyn Store>,
    refused: Arc<AtomicBool>,
}

impl WritesGuarded {
    fn check(&self) -> Result<(), StoreError> {
        if self.refused.load(Ordering::Relaxed) {
            return Err(StoreError::Invalid(
                "the app's tenant is over its disk quota: nothing more can be written until \
                 some data is deleted (deletes still work) or the quota is raised"
                    .into(),
            ));
        }
        Ok(())
    }
}

#[async_trait::async_trait]
impl Store for WritesGuarded {
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        self.inner.get(key).await
    }
    async fn set(&self, key: &str, value: &[u8]) -> Result<(), StoreError> {
        self.check()?;
        self.inner.set(key, value).await
    }
    async fn delete(&self, key: &str) -> Result<(), StoreError> {
        self.inner.delete(key).await
    }
    async fn exists(&self, key: &str) -> Result<bool, StoreError> {
        self.inner.exists(key).await
    }
    async fn list_keys(&self, cursor: Option<u64>) -> Result<KeyPage, StoreError> {
        self.inner.list_keys(cursor).await
    }
    async fn increment(&self, key: &str, delta: u64) -> Result<u64, StoreError> {
        self.check()?;
        self.inner.increment(key, delta).await
    }
    async fn compare_and_swap(
        &self,
        key: &str,
        expected: Option<&[u8]>,
        new: &[u8],
    ) -> Result<bool, StoreError> {
        self.check()?;
        self.inner.compare_and_swap(key, expected, new).await
    }
    async fn get_many(&self, keys: &[String]) -> Result<Vec<Option<Vec<u8>>>, StoreError> {
        self.inner.get_many(keys).await
    }
    async fn set_many(&self, entries: &[(String, Vec<u8>)]) -> Result<(), StoreError> {
        self.check()?;
        self.inner.set_many(entries).await
    }
    async fn delete_many(&self, keys: &[String]) -> Result<(), StoreError> {
        self.inner.delete_many(keys).await
    }
}

/// The values of an app's variables, from the first provider that has one: the environment
/// (`SKIFF_VAR_<NAME>`), the runtime config's variables file, its `[variables]` table, and
/// last the manifest's default. A required variable without a value is a load error naming it
/// and where to give it; secret values are never shown. `from_env` off skips the environment.
pub(crate) fn resolve_variables(
    app: &App,
    config: &RuntimeConfigFile,
    from_env: bool,
) -> Result<HashMap<String, String>, LoadError> {
    let file_values = match &config.variables_file {
        Some(path) => read_variables_file(path).map_err(|reason| {
            LoadError::new(&app.manifest_path, LoadErrorKind::Variables { reason })
        })?,
        None => HashMap::new(),
    };
    let mut values = HashMap::new();
    for variable in &app.variables {
        let env_name = format!(
            "{VARIABLE_ENV_PREFIX}{}",
            variable.name.to_ascii_uppercase()
        );
        let value = std::env::var(&env_name)
            .ok()
            .filter(|_| from_env)
            .or_else(|| file_values.get(&variable.name).cloned())
            .or_else(|| {
                config
                    .variables
                    .iter()
                    .find(|(name, _)| *name == variable.name)
                    .map(|(_, value)| value.clone())
            })
            .or_else(|| variable.default.clone());
        match value {
            Some(value) => {
                values.insert(variable.name.clone(), value);
            }
            None if variable.required => {
                let name = &variable.name;
                let reason = if from_env {
                    format!(
                        "the required variable `{name}` has no value; set the environment \
                         variable {env_name}, or give it under [variables] in the runtime \
                         config (--runtime-config)"
                    )
                } else {
                    format!(
                        "the required variable `{name}` has no value; this host takes no values \
                         from its environment: give `{name}` a default in skiff.toml"
                    )
                };
                return Err(LoadError::new(
                    &app.manifest_path,
                    LoadErrorKind::Variables { reason },
                ));
            }
            // Optional and unset: templates that use it are left out (see `config_grant`).
            None => {}
        }
    }
    Ok(values)
}

/// A component's variables rendered from the app's values. A template that uses an optional
/// variable without a value is left out, so the guest sees it as unset.
pub(crate) fn config_grant(component: &Component, values: &HashMap<String, String>) -> ConfigGrant {
    let rendered = component
        .variables
        .iter()
        .filter_map(|(name, template)| {
            let value = template.render(|var| values.get(var).map(String::as_str))?;
            Some((name.clone(), value))
        })
        .collect();
    ConfigGrant::new(rendered)
}

/// A variables file: TOML of `name = "value"`.
fn read_variables_file(path: &Path) -> Result<HashMap<String, String>, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read the variables file {}: {e}", path.display()))?;
    toml::from_str(&text).map_err(|e| {
        // Not `e` itself: its snippet would print the line, which may hold a secret.
        format!(
            "the variables file {} is not TOML of `name = \"value\"` lines: {}",
            path.display(),
            e.message()
        )
    })
}
