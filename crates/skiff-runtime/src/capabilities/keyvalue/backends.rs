//! The key-value backends of one host: opened on first use, shared by every app that maps a
//! label to the same file or server, closed when no loaded app uses them any more.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use skiff_manifest::{Component, StoreSpec};
use skiff_store::{Backend, KeyPage, Store, StoreError};
use skiff_store::{EmbeddedBackend, RedisBackend};

use super::KeyValueGrant;
use crate::capabilities::LoadContext;
use crate::error::{LoadError, LoadErrorKind};

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
        load: &LoadContext<'_>,
        component: &Component,
    ) -> Result<KeyValueGrant, LoadError> {
        let app = load.app;
        let mut stores = Vec::with_capacity(component.key_value_stores.len());
        for label in &component.key_value_stores {
            let mut namespace = format!("{}/{label}", app.name);
            let key = match load.runtime_config.store(label) {
                Some(StoreSpec::Redis { url }) => BackendKey::Redis(url.clone()),
                Some(StoreSpec::Embedded { path: Some(path) }) => BackendKey::File(path.clone()),
                None if let Some(shared) = load.shared_store => {
                    namespace = format!("{}/{namespace}", shared.owner);
                    BackendKey::Redis(shared.redis_url.clone())
                }
                Some(StoreSpec::Embedded { path: None }) | None => {
                    let Some(data_dir) = load.data_dir else {
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
            let backend = self.backend(&key).map_err(|err| {
                LoadError::new(
                    &app.manifest_path,
                    LoadErrorKind::Store {
                        label: label.clone(),
                        reason: err.to_string(),
                    },
                )
            })?;
            let mut store = backend.open(&namespace);
            if let Some(refused) = load.writes_refused {
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
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        let before = open.len();
        // A loader between `backend` and opening its store holds a clone of the Arc.
        open.retain(|_, backend| Arc::strong_count(backend) > 1 || backend.in_use());
        before - open.len()
    }

    fn backend(&self, key: &BackendKey) -> Result<Arc<dyn Backend>, StoreError> {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(backend) = open.get(key) {
            return Ok(backend.clone());
        }
        let backend: Arc<dyn Backend> = match key {
            BackendKey::File(path) => Arc::new(EmbeddedBackend::open(path)?),
            BackendKey::Redis(url) => Arc::new(RedisBackend::connect(url)?),
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
