//! `wasi:keyvalue` 0.2.0-draft2, the version Spin 3 guests import: the same stores as
//! 0.2.0-draft, with string cursors, signed increments, `get-many` answering every key, and
//! compare-and-swap through a `cas` handle.

use std::sync::Arc;

use skiff_store::{Store, StoreError};
use wasmtime::component::Resource;

use super::bindings::wasi::keyvalue0_2_0_draft2::{atomics, batch, store};
use super::{Bucket, KeyValueGrant};
use crate::capabilities::CapabilityCtx;

/// A compare-and-swap handle: a key and its value when the handle was made.
pub struct Cas {
    store: Arc<dyn Store>,
    label: Arc<str>,
    key: String,
    current: Option<Vec<u8>>,
}

/// How often a negative increment retries its compare-and-swap before giving up on a key
/// that other writers keep changing.
const DECREMENT_ATTEMPTS: usize = 100;

type Outcome<T> = wasmtime::Result<Result<T, store::Error>>;

impl CapabilityCtx<'_, KeyValueGrant> {
    fn outcome2<T>(&self, label: &str, result: Result<T, StoreError>) -> Outcome<T> {
        Ok(result.map_err(|err| store::Error::Other(self.store_failure(label, err))))
    }
}

impl store::Host for CapabilityCtx<'_, KeyValueGrant> {
    async fn open(&mut self, identifier: String) -> Outcome<Resource<Bucket>> {
        Ok(self
            .open_bucket(identifier)?
            .ok_or(store::Error::AccessDenied))
    }
}

impl store::HostBucket for CapabilityCtx<'_, KeyValueGrant> {
    async fn get(&mut self, bucket: Resource<Bucket>, key: String) -> Outcome<Option<Vec<u8>>> {
        let (store, label) = self.bucket(&bucket)?;
        let result = self.kv().call("get", &label, store.get(&key)).await;
        self.outcome2(&label, result)
    }

    async fn set(&mut self, bucket: Resource<Bucket>, key: String, value: Vec<u8>) -> Outcome<()> {
        let (store, label) = self.bucket(&bucket)?;
        let result = self.kv().call("set", &label, store.set(&key, &value)).await;
        self.outcome2(&label, result)
    }

    async fn delete(&mut self, bucket: Resource<Bucket>, key: String) -> Outcome<()> {
        let (store, label) = self.bucket(&bucket)?;
        let result = self.kv().call("delete", &label, store.delete(&key)).await;
        self.outcome2(&label, result)
    }

    async fn exists(&mut self, bucket: Resource<Bucket>, key: String) -> Outcome<bool> {
        let (store, label) = self.bucket(&bucket)?;
        let result = self.kv().call("exists", &label, store.exists(&key)).await;
        self.outcome2(&label, result)
    }

    async fn list_keys(
        &mut self,
        bucket: Resource<Bucket>,
        cursor: Option<String>,
    ) -> Outcome<store::KeyResponse> {
        let (store, label) = self.bucket(&bucket)?;
        // Cursors are the backends' numbers, written out; anything else did not come from us.
        let cursor = match cursor.map(|c| c.parse::<u64>()) {
            None => None,
            Some(Ok(cursor)) => Some(cursor),
            Some(Err(_)) => {
                return Ok(Err(store::Error::Other(
                    "invalid cursor: pass back the cursor of the previous list-keys".into(),
                )));
            }
        };
        let result = self
            .kv()
            .call("list_keys", &label, store.list_keys(cursor))
            .await
            .map(|page| store::KeyResponse {
                keys: page.keys,
                cursor: page.cursor.map(|c| c.to_string()),
            });
        self.outcome2(&label, result)
    }

    async fn drop(&mut self, bucket: Resource<Bucket>) -> wasmtime::Result<()> {
        self.table.delete(bucket)?;
        Ok(())
    }
}

impl atomics::Host for CapabilityCtx<'_, KeyValueGrant> {
    async fn increment(
        &mut self,
        bucket: Resource<Bucket>,
        key: String,
        delta: i64,
    ) -> Outcome<i64> {
        let (store, label) = self.bucket(&bucket)?;
        let call = async {
            match u64::try_from(delta) {
                Ok(delta) => store.increment(&key, delta).await.and_then(signed),
                Err(_) => decrement(store.as_ref(), &key, delta.unsigned_abs()).await,
            }
        };
        let result = self.kv().call("increment", &label, call).await;
        self.outcome2(&label, result)
    }

    async fn swap(
        &mut self,
        cas: Resource<Cas>,
        value: Vec<u8>,
    ) -> wasmtime::Result<Result<(), atomics::CasError>> {
        let cas = self.table.delete(cas)?;
        let swap = cas
            .store
            .compare_and_swap(&cas.key, cas.current.as_deref(), &value);
        match self.kv().call("compare_and_swap", &cas.label, swap).await {
            Ok(true) => Ok(Ok(())),
            // Hand back a handle on the value that won, so the guest can retry from it.
            Ok(false) => match self
                .kv()
                .call("get", &cas.label, cas.store.get(&cas.key))
                .await
            {
                Ok(current) => {
                    let fresh = self.table.push(Cas { current, ..cas })?;
                    Ok(Err(atomics::CasError::CasFailed(fresh)))
                }
                Err(err) => Ok(Err(atomics::CasError::StoreError(store::Error::Other(
                    self.store_failure(&cas.label, err),
                )))),
            },
            Err(err) => Ok(Err(atomics::CasError::StoreError(store::Error::Other(
                self.store_failure(&cas.label, err),
            )))),
        }
    }
}

impl atomics::HostCas for CapabilityCtx<'_, KeyValueGrant> {
    async fn new(&mut self, bucket: Resource<Bucket>, key: String) -> Outcome<Resource<Cas>> {
        let (store, label) = self.bucket(&bucket)?;
        let current = match self.kv().call("get", &label, store.get(&key)).await {
            Ok(current) => current,
            Err(err) => return self.outcome2(&label, Err(err)),
        };
        let cas = Cas {
            store,
            label,
            key,
            current,
        };
        Ok(Ok(self.table.push(cas)?))
    }

    async fn current(&mut self, cas: Resource<Cas>) -> Outcome<Option<Vec<u8>>> {
        Ok(Ok(self.table.get(&cas)?.current.clone()))
    }

    async fn drop(&mut self, cas: Resource<Cas>) -> wasmtime::Result<()> {
        self.table.delete(cas)?;
        Ok(())
    }
}

impl batch::Host for CapabilityCtx<'_, KeyValueGrant> {
    async fn get_many(
        &mut self,
        bucket: Resource<Bucket>,
        keys: Vec<String>,
    ) -> Outcome<Vec<(String, Option<Vec<u8>>)>> {
        let (store, label) = self.bucket(&bucket)?;
        let result = self
            .kv()
            .call("get_many", &label, store.get_many(&keys))
            .await
            .map(|values| keys.into_iter().zip(values).collect());
        self.outcome2(&label, result)
    }

    async fn set_many(
        &mut self,
        bucket: Resource<Bucket>,
        key_values: Vec<(String, Vec<u8>)>,
    ) -> Outcome<()> {
        let (store, label) = self.bucket(&bucket)?;
        let result = self
            .kv()
            .call("set_many", &label, store.set_many(&key_values))
            .await;
        self.outcome2(&label, result)
    }

    async fn delete_many(&mut self, bucket: Resource<Bucket>, keys: Vec<String>) -> Outcome<()> {
        let (store, label) = self.bucket(&bucket)?;
        let result = self
            .kv()
            .call("delete_many", &label, store.delete_many(&keys))
            .await;
        self.outcome2(&label, result)
    }
}

/// Counters are unsigned in every backend; draft2 speaks `s64`.
fn signed(value: u64) -> Result<i64, StoreError> {
    i64::try_from(value)
        .map_err(|_| StoreError::Invalid(format!("the counter {value} does not fit an s64")))
}

/// Subtracts `amount` atomically, by compare-and-swap: the backends' counters only go up.
/// A counter never goes below zero.
async fn decrement(store: &dyn Store, key: &str, amount: u64) -> Result<i64, StoreError> {
    for _ in 0..DECREMENT_ATTEMPTS {
        let current = store.get(key).await?;
        let value = match &current {
            None => 0,
            Some(bytes) => std::str::from_utf8(bytes)
                .ok()
                .and_then(|text| text.parse::<u64>().ok())
                .ok_or_else(|| {
                    StoreError::Invalid(format!("the value at `{key}` is not a counter"))
                })?,
        };
        let Some(next) = value.checked_sub(amount) else {
            return Err(StoreError::Invalid(format!(
                "decrementing `{key}` ({value}) by {amount} would go below zero"
            )));
        };
        if store
            .compare_and_swap(key, current.as_deref(), next.to_string().as_bytes())
            .await?
        {
            return signed(next);
        }
    }
    Err(StoreError::Unavailable(format!(
        "`{key}` kept changing under {DECREMENT_ATTEMPTS} attempts to decrement it"
    )))
}
