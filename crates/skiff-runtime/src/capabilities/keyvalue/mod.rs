//! The key-value capability (`wasi:keyvalue`: store, atomics, batch, in both versions guests
//! use: 0.2.0-draft, wasmtime's, here, and 0.2.0-draft2, Spin's, with compare-and-swap, in
//! [`draft2`]). A component
//! opens only the stores its manifest lists in `key_value_stores`; opening any other label
//! fails in the guest with `access-denied` and is logged. Each label is one namespace of a
//! backend from `skiff-store` (chosen by the operator's runtime config), so two apps that both
//! say `default` never share data, while two components of one app that name the same label
//! do. Backend failures (Redis down) reach the guest as `error::other`, never as a trap.

pub mod draft2;

use std::sync::Arc;

use skiff_store::{Store, StoreError};
use wasmtime::component::Resource;

use super::state_bindings::wasi::keyvalue0_2_0_draft::{atomics, batch, store};
use crate::host::Host;

/// The stores one component may open, by label, shared by all its instances.
#[derive(Clone, Default)]
pub struct KeyValueGrant {
    stores: Arc<[(String, Arc<dyn Store>)]>,
}

impl std::fmt::Debug for KeyValueGrant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let labels: Vec<&str> = self.stores.iter().map(|(l, _)| l.as_str()).collect();
        f.debug_struct("KeyValueGrant")
            .field("labels", &labels)
            .finish()
    }
}

impl KeyValueGrant {
    pub fn new(stores: Vec<(String, Arc<dyn Store>)>) -> Self {
        KeyValueGrant {
            stores: stores.into(),
        }
    }

    fn store(&self, label: &str) -> Option<&Arc<dyn Store>> {
        self.stores.iter().find(|(l, _)| l == label).map(|(_, s)| s)
    }
}

/// An open store: what a guest's `bucket` handle points at.
pub struct Bucket {
    store: Arc<dyn Store>,
    label: Arc<str>,
}

type Outcome<T> = wasmtime::Result<Result<T, store::Error>>;

impl Host {
    fn bucket(&self, bucket: &Resource<Bucket>) -> wasmtime::Result<(Arc<dyn Store>, Arc<str>)> {
        let bucket = self.table.get(bucket)?;
        Ok((bucket.store.clone(), bucket.label.clone()))
    }

    /// The guest's description of a backend failure. Unavailability is the operator's
    /// business too, so it is logged; a refused request (too large, not a number) is the
    /// guest's alone.
    fn store_failure(&self, label: &str, err: StoreError) -> String {
        if let StoreError::Unavailable(why) = &err {
            tracing::warn!(
                app = %self.identity.app,
                component = %self.identity.component,
                request_id = self.identity.request_id,
                "key-value store `{label}` failed: {why}"
            );
        }
        err.to_string()
    }

    fn outcome<T>(&self, label: &str, result: Result<T, StoreError>) -> Outcome<T> {
        Ok(result.map_err(|err| store::Error::Other(self.store_failure(label, err))))
    }

    /// A bucket for a granted label; `None` (logged) for any other.
    fn open_bucket(&mut self, label: String) -> wasmtime::Result<Option<Resource<Bucket>>> {
        let Some(store) = self.key_value.store(&label).cloned() else {
            tracing::warn!(
                app = %self.identity.app,
                component = %self.identity.component,
                request_id = self.identity.request_id,
                "denied opening key-value store `{label}`: it is not in the component's key_value_stores"
            );
            return Ok(None);
        };
        let bucket = Bucket {
            store,
            label: label.into(),
        };
        Ok(Some(self.table.push(bucket)?))
    }
}

impl store::Host for Host {
    async fn open(&mut self, identifier: String) -> Outcome<Resource<Bucket>> {
        Ok(self
            .open_bucket(identifier)?
            .ok_or(store::Error::AccessDenied))
    }
}

impl store::HostBucket for Host {
    async fn get(&mut self, bucket: Resource<Bucket>, key: String) -> Outcome<Option<Vec<u8>>> {
        let (store, label) = self.bucket(&bucket)?;
        let result = store.get(&key).await;
        self.outcome(&label, result)
    }

    async fn set(&mut self, bucket: Resource<Bucket>, key: String, value: Vec<u8>) -> Outcome<()> {
        let (store, label) = self.bucket(&bucket)?;
        let result = store.set(&key, &value).await;
        self.outcome(&label, result)
    }

    async fn delete(&mut self, bucket: Resource<Bucket>, key: String) -> Outcome<()> {
        let (store, label) = self.bucket(&bucket)?;
        let result = store.delete(&key).await;
        self.outcome(&label, result)
    }

    async fn exists(&mut self, bucket: Resource<Bucket>, key: String) -> Outcome<bool> {
        let (store, label) = self.bucket(&bucket)?;
        let result = store.exists(&key).await;
        self.outcome(&label, result)
    }

    async fn list_keys(
        &mut self,
        bucket: Resource<Bucket>,
        cursor: Option<u64>,
    ) -> Outcome<store::KeyResponse> {
        let (store, label) = self.bucket(&bucket)?;
        let result = store
            .list_keys(cursor)
            .await
            .map(|page| store::KeyResponse {
                keys: page.keys,
                cursor: page.cursor,
            });
        self.outcome(&label, result)
    }

    async fn drop(&mut self, bucket: Resource<Bucket>) -> wasmtime::Result<()> {
        self.table.delete(bucket)?;
        Ok(())
    }
}

impl atomics::Host for Host {
    async fn increment(
        &mut self,
        bucket: Resource<Bucket>,
        key: String,
        delta: u64,
    ) -> Outcome<u64> {
        let (store, label) = self.bucket(&bucket)?;
        let result = store.increment(&key, delta).await;
        self.outcome(&label, result)
    }
}

impl batch::Host for Host {
    async fn get_many(
        &mut self,
        bucket: Resource<Bucket>,
        keys: Vec<String>,
    ) -> Outcome<Vec<Option<(String, Vec<u8>)>>> {
        let (store, label) = self.bucket(&bucket)?;
        let result = store.get_many(&keys).await.map(|values| {
            keys.into_iter()
                .zip(values)
                .map(|(key, value)| value.map(|value| (key, value)))
                .collect()
        });
        self.outcome(&label, result)
    }

    async fn set_many(
        &mut self,
        bucket: Resource<Bucket>,
        key_values: Vec<(String, Vec<u8>)>,
    ) -> Outcome<()> {
        let (store, label) = self.bucket(&bucket)?;
        let result = store.set_many(&key_values).await;
        self.outcome(&label, result)
    }

    async fn delete_many(&mut self, bucket: Resource<Bucket>, keys: Vec<String>) -> Outcome<()> {
        let (store, label) = self.bucket(&bucket)?;
        let result = store.delete_many(&keys).await;
        self.outcome(&label, result)
    }
}
