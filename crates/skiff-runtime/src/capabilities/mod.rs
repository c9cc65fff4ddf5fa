//! Host capabilities, one module each. Every capability owns the same three phases:
//!
//! 1. **at load**: turn its part of the manifest into a validated grant ([`Capability::grant`],
//!    after [`Capability::app_grant`] for what it checks once per app); a bad grant is a
//!    [`LoadError`] naming the field and the fix;
//! 2. **once per engine**: add its WIT bindings to the `Linker` (its `add_to_linker`);
//! 3. **per instance**: build its small state from the grant ([`Capability::instance`]), with
//!    no I/O and no global lock: this runs on every request.
//!
//! A capability reaches its per-instance state through a view, as `wasmtime-wasi-http` does
//! with `WasiHttpView`: either wasmtime's own (`WasiView`, `WasiHttpView`) or
//! [`HasCapability`], which hands out a [`CapabilityCtx`] (the capability's state, the
//! instance's resource table and what the instance works for). The host state implements the
//! views; no capability names it. Adding a capability is adding a module here and one line in
//! the list in `host.rs`.

pub(crate) mod config;
pub(crate) mod guest_log;
pub(crate) mod keyvalue;
pub(crate) mod logging;
pub(crate) mod messaging;
pub(crate) mod outbound_http;
pub(crate) mod wasi;

use std::marker::PhantomData;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use opentelemetry::trace::TraceId;
use skiff_manifest::{App, Component, RuntimeConfigFile};
use wasmtime::component::{HasData, ResourceTable};

use crate::error::LoadError;
use crate::metrics::ComponentMetrics;
use crate::trace::TraceContext;

/// One capability: how its grant is made at load and its state per instance. Its WIT bindings
/// go to the linker through its module's `add_to_linker`, which states the view it needs.
pub(crate) trait Capability {
    /// What the capability works out once per app, before any component: checks across
    /// components, values shared by all of them. `()` for most.
    type AppGrant: Default;
    /// What one component may reach, validated at load and shared by all its instances. Its
    /// default grants nothing: what a command run with no flags, or a test, gets.
    type Grant: Clone + Default + Send + Sync + std::fmt::Debug + 'static;
    /// The state of one instance, built from the grant on every request.
    type Instance: Send + 'static;

    fn app_grant(_load: &LoadContext<'_>) -> Result<Self::AppGrant, LoadError> {
        Ok(Self::AppGrant::default())
    }

    fn grant(
        app: &Self::AppGrant,
        load: &LoadContext<'_>,
        component: &Component,
    ) -> Result<Self::Grant, LoadError>;

    fn instance(grant: &Self::Grant, identity: &InstanceIdentity) -> Self::Instance;

    /// A kept instance starts another request: what it logs and counts names that one now.
    fn next_request(_instance: &mut Self::Instance, _identity: &InstanceIdentity) {}

    /// The guest call's place in the trace is known: calls out of the guest are its children.
    fn trace(_instance: &mut Self::Instance, _trace: &TraceContext) {}

    /// The request is over and the instance is kept: what it holds for the request is final.
    fn request_done(_instance: &mut Self::Instance) {}
}

/// What a capability's load phase may read: the app, the operator's settings, and the state
/// the host keeps for all apps.
/// Where a cluster keeps its apps' default key-value stores: one Redis, each store in the
/// namespace `OWNER/APP/LABEL`, so that an app name deleted by one tenant and taken by another
/// never finds the first one's data.
#[derive(Debug, Clone)]
pub struct SharedStore {
    /// `redis://…` or `rediss://…`.
    pub redis_url: String,
    /// The app's owner (its tenant).
    pub owner: String,
}

pub(crate) struct LoadContext<'a> {
    pub app: &'a App,
    /// The operator's runtime config: store backends and variable values.
    pub runtime_config: &'a RuntimeConfigFile,
    /// Folder of the app's embedded key-value databases, if there is one.
    pub data_dir: Option<&'a Path>,
    /// Let app variables take values from `SKIFF_VAR_*` in skiff's environment.
    pub variables_from_env: bool,
    /// Let guests reach private networks and the host where their manifest names them.
    pub allow_private_outbound: bool,
    /// While set, the app may not write (its tenant is over its disk quota).
    pub writes_refused: Option<&'a Arc<AtomicBool>>,
    /// Where stores the runtime config does not place live, instead of the embedded database.
    pub shared_store: Option<&'a SharedStore>,
    /// What no folder grant may reach: the code cache and the key-value databases.
    pub protected: &'a [std::path::PathBuf],
    /// The key-value backends of the host, opened on first use.
    pub backends: &'a keyvalue::Backends,
    /// Where the app's queues are, if the host has queues.
    pub queues: Option<&'a messaging::QueueSpace>,
}

impl LoadContext<'_> {
    /// Whether the app loads with its writes refused.
    pub fn writes_refused_now(&self) -> bool {
        self.writes_refused
            .is_some_and(|refused| refused.load(Ordering::Relaxed))
    }
}

/// Who a sandbox works for, carried into logs, denials and metrics.
#[derive(Debug, Clone)]
pub(crate) struct InstanceIdentity {
    pub app: Arc<str>,
    pub component: Arc<str>,
    pub request_id: u64,
    /// The trace of the request, on every log line about it.
    pub trace_id: TraceId,
    /// Where the guest's output goes besides skiff's log, if anywhere.
    pub log_sink: Option<guest_log::LogSink>,
    /// The component's counters of outbound and key-value calls, if the host keeps metrics.
    pub metrics: Option<ComponentMetrics>,
}

impl InstanceIdentity {
    /// A sandbox that serves no request (a command run from the command line).
    pub fn command(path: &Path) -> Self {
        InstanceIdentity {
            app: "run".into(),
            component: path.display().to_string().into(),
            request_id: 0,
            trace_id: TraceId::INVALID,
            log_sink: None,
            metrics: None,
        }
    }
}

/// What an instance works for now: the request and its place in the trace.
#[derive(Debug, Clone)]
pub(crate) struct Call {
    pub identity: InstanceIdentity,
    /// The guest call's span: key-value calls are spans below it.
    pub trace: TraceContext,
}

/// A capability's view of one instance: its own state, the instance's resource table (where
/// its handles live) and what the instance works for.
pub(crate) struct CapabilityCtx<'a, S> {
    pub state: &'a mut S,
    pub table: &'a mut ResourceTable,
    pub call: &'a Call,
}

/// Implemented by the host state for each capability's state `S`.
pub(crate) trait HasCapability<S> {
    fn capability(&mut self) -> CapabilityCtx<'_, S>;
}

/// The [`HasData`] that makes a [`CapabilityCtx`] what a binding's host trait is implemented
/// for: `add_to_linker::<T, Ctx<S>>(linker, T::capability)`.
pub(crate) struct Ctx<S>(PhantomData<S>);

impl<S: 'static> HasData for Ctx<S> {
    type Data<'a> = CapabilityCtx<'a, S>;
}

/// Logs a guest action the host refused or a failure the operator should see, tagged with
/// the instance's app, component, request and trace.
macro_rules! warn_for {
    ($identity:expr, $($message:tt)+) => {{
        let identity = &$identity;
        tracing::warn!(
            app = %identity.app,
            component = %identity.component,
            request_id = identity.request_id,
            trace_id = %identity.trace_id,
            $($message)+
        )
    }};
}
pub(crate) use warn_for;
