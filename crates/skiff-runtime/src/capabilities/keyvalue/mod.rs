//! The key-value capability (`wasi:keyvalue`: store, atomics, batch, in both versions guests
//! use: 0.2.0-draft, wasmtime's, here, and 0.2.0-draft2, Spin's, with compare-and-swap, in
//! [`draft2`]). A component
//! opens only the stores its manifest lists in `key_value_stores`; opening any other label
//! fails in the guest with `access-denied` and is logged. Each label is one namespace of a
//! backend from `skiff-store` (chosen by the operator's runtime config), so two apps that both
//! say `default` never share data, while two components of one app that name the same label
//! do. Backend failures (Redis down) reach the guest as `error::other`, never as a trap.

mod backends;
mod draft2;

pub(crate) use backends::Backends;

use std::sync::Arc;

use opentelemetry::KeyValue;
use opentelemetry::trace::SpanKind;
use skiff_manifest::Component;
use skiff_store::{Store, StoreError};
use wasmtime::component::{Linker, Resource};

use super::{
    Capability, CapabilityCtx, Ctx, HasCapability, InstanceIdentity, LoadContext, warn_for,
};
use crate::error::LoadError;
use crate::metrics::{ComponentMetrics, KeyValueOutcome};
use crate::trace::TraceContext;

mod bindings {
    wasmtime::component::bindgen!({
        path: "wit",
        world: "skiff:host/keyvalue",
        imports: { default: async | trappable },
        with: {
            "wasi:keyvalue/store@0.2.0-draft.bucket": super::Bucket,
            "wasi:keyvalue/store@0.2.0-draft2.bucket": super::Bucket,
            "wasi:keyvalue/atomics@0.2.0-draft2.cas": super::draft2::Cas,
        },
    });
}
use bindings::wasi::keyvalue0_2_0_draft::{atomics, batch, store};

pub(crate) struct KeyValueCapability;

impl Capability for KeyValueCapability {
    type AppGrant = ();
    type Grant = KeyValueGrant;
    type Instance = KeyValueGrant;

    /// The stores the component lists, each opened on the backend the runtime config maps
    /// its label to.
    fn grant(
        _: &(),
        load: &LoadContext<'_>,
        component: &Component,
    ) -> Result<KeyValueGrant, LoadError> {
        load.backends.grant(load, component)
    }

    fn instance(grant: &KeyValueGrant, _: &InstanceIdentity) -> KeyValueGrant {
        grant.clone()
    }
}

/// Links both versions of `wasi:keyvalue` (store, atomics, batch).
pub(crate) fn add_to_linker<T: HasCapability<KeyValueGrant> + Send + 'static>(
    linker: &mut Linker<T>,
) -> wasmtime::Result<()> {
    use bindings::wasi::keyvalue0_2_0_draft2 as draft2;
    store::add_to_linker::<T, Ctx<KeyValueGrant>>(linker, T::capability)?;
    atomics::add_to_linker::<T, Ctx<KeyValueGrant>>(linker, T::capability)?;
    batch::add_to_linker::<T, Ctx<KeyValueGrant>>(linker, T::capability)?;
    draft2::store::add_to_linker::<T, Ctx<KeyValueGrant>>(linker, T::capability)?;
    draft2::atomics::add_to_linker::<T, Ctx<KeyValueGrant>>(linker, T::capability)?;
    draft2::batch::add_to_linker::<T, Ctx<KeyValueGrant>>(linker, T::capability)
}

/// The stores one component may open, by label, shared by all its instances.
#[derive(Clone, Default)]
pub(crate) struct KeyValueGrant {
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
    pub(crate) fn new(stores: Vec<(String, Arc<dyn Store>)>) -> Self {
        KeyValueGrant {
            stores: stores.into(),
        }
    }

    fn store(&self, label: &str) -> Option<&Arc<dyn Store>> {
        self.stores.iter().find(|(l, _)| l == label).map(|(_, s)| s)
    }
}

/// Makes calls to a store seen from outside: each is a span below the guest call when traces
/// are recorded, and a count in the component's metrics.
struct KvCalls<'a> {
    trace: &'a TraceContext,
    metrics: Option<&'a ComponentMetrics>,
}

impl KvCalls<'_> {
    async fn call<T>(
        self,
        operation: &'static str,
        label: &str,
        call: impl Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        let span = self.trace.child(SpanKind::Client, || {
            (
                format!("{operation} {label}").into(),
                vec![
                    KeyValue::new("db.system.name", "skiff.keyvalue"),
                    KeyValue::new("db.operation.name", operation),
                    KeyValue::new("db.namespace", label.to_string()),
                ],
            )
        });
        let result = call.await;
        if let Err(err) = &result {
            span.set_error(err.to_string());
        }
        span.end();
        let outcome = match result {
            Ok(_) => KeyValueOutcome::Ok,
            Err(_) => KeyValueOutcome::Error,
        };
        self.count(operation, outcome);
        result
    }

    fn count(&self, operation: &'static str, outcome: KeyValueOutcome) {
        if let Some(metrics) = self.metrics {
            metrics.key_value(operation, outcome);
        }
    }
}

/// An open store: what a guest's `bucket` handle points at.
pub struct Bucket {
    store: Arc<dyn Store>,
    label: Arc<str>,
}

type Outcome<T> = wasmtime::Result<Result<T, store::Error>>;

impl CapabilityCtx<'_, KeyValueGrant> {
    fn bucket(&self, bucket: &Resource<Bucket>) -> wasmtime::Result<(Arc<dyn Store>, Arc<str>)> {
        let bucket = self.table.get(bucket)?;
        Ok((bucket.store.clone(), bucket.label.clone()))
    }

    /// The guest's description of a backend failure. Unavailability is the operator's
    /// business too, so it is logged; a refused request (too large, not a number) is the
    /// guest's alone.
    fn store_failure(&self, label: &str, err: StoreError) -> String {
        if let StoreError::Unavailable(why) = &err {
            warn_for!(
                self.call.identity,
                "key-value store `{label}` failed: {why}"
            );
        }
        err.to_string()
    }

    fn outcome<T>(&self, label: &str, result: Result<T, StoreError>) -> Outcome<T> {
        Ok(result.map_err(|err| store::Error::Other(self.store_failure(label, err))))
    }

    /// What watches this instance's key-value calls. It borrows fields, not the whole host
    /// (which is not `Sync`), so a call's future holding it stays `Send`.
    fn kv(&self) -> KvCalls<'_> {
        KvCalls {
            trace: &self.call.trace,
            metrics: self.call.identity.metrics.as_ref(),
        }
    }

    /// A bucket for a granted label; `None` (logged) for any other.
    fn open_bucket(&mut self, label: String) -> wasmtime::Result<Option<Resource<Bucket>>> {
        let Some(store) = self.state.store(&label).cloned() else {
            self.kv().count("open", KeyValueOutcome::Denied);
            warn_for!(
                self.call.identity,
                "denied opening key-value store `{label}`: it is not in the component's key_value_stores"
            );
            return Ok(None);
        };
        self.kv().count("open", KeyValueOutcome::Ok);
        let bucket = Bucket {
            store,
            label: label.into(),
        };
        Ok(Some(self.table.push(bucket)?))
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
        self.outcome(&label, result)
    }

    async fn set(&mut self, bucket: Resource<Bucket>, key: String, value: Vec<u8>) -> Outcome<()> {
        let (store, label) = self.bucket(&bucket)?;
        let result = self.kv().call("set", &label, store.set(&key, &value)).await;
        self.outcome(&label, result)
    }

    async fn delete(&mut self, bucket: Resource<Bucket>, key: String) -> Outcome<()> {
        let (store, label) = self.bucket(&bucket)?;
        let result = self.kv().call("delete", &label, store.delete(&key)).await;
        self.outcome(&label, result)
    }

    async fn exists(&mut self, bucket: Resource<Bucket>, key: String) -> Outcome<bool> {
        let (store, label) = self.bucket(&bucket)?;
        let result = self.kv().call("exists", &label, store.exists(&key)).await;
        self.outcome(&label, result)
    }

    async fn list_keys(
        &mut self,
        bucket: Resource<Bucket>,
        cursor: Option<u64>,
    ) -> Outcome<store::KeyResponse> {
        let (store, label) = self.bucket(&bucket)?;
        let result = self
            .kv()
            .call("list_keys", &label, store.list_keys(cursor))
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

impl atomics::Host for CapabilityCtx<'_, KeyValueGrant> {
    async fn increment(
        &mut self,
        bucket: Resource<Bucket>,
        key: String,
        delta: u64,
    ) -> Outcome<u64> {
        let (store, label) = self.bucket(&bucket)?;
        let result = self
            .kv()
            .call("increment", &label, store.increment(&key, delta))
            .await;
        self.outcome(&label, result)
    }
}

impl batch::Host for CapabilityCtx<'_, KeyValueGrant> {
    async fn get_many(
        &mut self,
        bucket: Resource<Bucket>,
        keys: Vec<String>,
    ) -> Outcome<Vec<Option<(String, Vec<u8>)>>> {
        let (store, label) = self.bucket(&bucket)?;
        let values = self
            .kv()
            .call("get_many", &label, store.get_many(&keys))
            .await;
        let result = values.map(|values| {
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
        let result = self
            .kv()
            .call("set_many", &label, store.set_many(&key_values))
            .await;
        self.outcome(&label, result)
    }

    async fn delete_many(&mut self, bucket: Resource<Bucket>, keys: Vec<String>) -> Outcome<()> {
        let (store, label) = self.bucket(&bucket)?;
        let result = self
            .kv()
            .call("delete_many", &label, store.delete_many(&keys))
            .await;
        self.outcome(&label, result)
    }
}
