//! Host capabilities, one module each. Every capability has the same three phases:
//!
//! 1. **at load**: turn its part of the manifest into a validated grant (a bad grant is a
//!    [`LoadError`] naming the component and the fix);
//! 2. **once per engine**: add its WIT bindings to the [`Linker`] ([`add_to_linker`]);
//! 3. **per instance**: build its small state from the grant, with no I/O beyond what the
//!    grant itself needs (opening a granted folder) and no global lock.
//!
//! Adding a capability is adding a module here, a field in [`Grants`], and one line in
//! [`add_to_linker`].

pub mod config;
pub mod guest_log;
pub mod keyvalue;
pub mod logging;
pub mod outbound_http;
mod state_bindings;
pub mod wasi;

use std::sync::Arc;

use wasmtime::component::{HasSelf, Linker, ResourceTable};
use wasmtime_wasi_http::WasiHttpCtx;

use crate::error::LoadError;
use crate::host::{Host, InstanceLimiter};
use crate::metrics::ComponentMetrics;
use crate::trace::TraceContext;
use opentelemetry::trace::TraceId;

/// Links every WASI 0.2 interface (cli, filesystem, sockets, clocks, random, io) and
/// `wasi:http`. Linking an interface grants nothing by itself: what an instance may reach is
/// decided per instance by its grants, and an empty grant denies every use. Linking them all
/// is what lets components from any toolchain (componentize-py and jco import filesystem and
/// sockets even for pure HTTP handlers) instantiate unchanged.
pub fn add_to_linker(linker: &mut Linker<Host>) -> wasmtime::Result<()> {
    wasmtime_wasi::p2::add_to_linker_async(linker)?;
    wasmtime_wasi_http::p2::add_only_http_to_linker_async(linker)?;
    state_bindings::State::add_to_linker::<Host, HasSelf<Host>>(linker, |host| host)?;
    Ok(())
}

/// Everything one component is allowed to reach, validated at load.
#[derive(Debug, Clone)]
pub struct Grants {
    pub wasi: wasi::WasiGrant,
    pub outbound_http: outbound_http::OutboundHttpGrant,
    pub key_value: keyvalue::KeyValueGrant,
    pub config: config::ConfigGrant,
}

impl Grants {
    /// The grants of `component`; its stores and variable values are resolved by the caller,
    /// which knows the backends and the variable providers.
    pub fn from_component(
        component: &skiff_manifest::Component,
        key_value: keyvalue::KeyValueGrant,
        config: config::ConfigGrant,
    ) -> Result<Grants, LoadError> {
        Ok(Grants {
            wasi: wasi::WasiGrant::from_component(component)?,
            outbound_http: outbound_http::OutboundHttpGrant::new(
                component.allowed_outbound_hosts.clone(),
            ),
            key_value,
            config,
        })
    }

    /// Nothing granted: no files, no variables, no hosts.
    pub fn none() -> Grants {
        Grants {
            wasi: wasi::WasiGrant::default(),
            outbound_http: outbound_http::OutboundHttpGrant::new(Vec::new()),
            key_value: keyvalue::KeyValueGrant::default(),
            config: config::ConfigGrant::default(),
        }
    }
}

/// Who a sandbox works for, carried into logs, denials and metrics.
#[derive(Debug, Clone)]
pub struct InstanceIdentity {
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

/// Builds the per-instance state of a request-serving sandbox from its grants.
pub(crate) fn instance_state(
    grants: &Grants,
    identity: &InstanceIdentity,
    memory_limit: Option<u64>,
) -> wasmtime::Result<Host> {
    let mut builder = grants.wasi.builder();
    let outputs = guest_log::attach(&mut builder, identity);
    let mut wasi = builder.build();
    grants.wasi.give_folders(&mut wasi)?;
    Ok(Host {
        table: ResourceTable::new(),
        wasi,
        http: WasiHttpCtx::new(),
        outbound: grants.outbound_http.instance(identity.clone()),
        key_value: grants.key_value.clone(),
        config: grants.config.clone(),
        identity: identity.clone(),
        trace: TraceContext::default(),
        outputs: Some(outputs),
        limiter: InstanceLimiter::new(memory_limit),
    })
}
