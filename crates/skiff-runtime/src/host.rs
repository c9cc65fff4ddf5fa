//! The state of one sandbox: what a `Store<Host>` holds for the length of one unit of work.
//! Everything here is built fresh per instance from the component's grants and dropped with the
//! store, so nothing of one request can leak into the next.
//!
//! This is where the capabilities meet: the list below is the only place that names them all.
//! From it come a component's [`Grants`], an instance's state, the views each capability reads
//! its state through, and the linking of their interfaces.

use wasmtime::component::{Linker, ResourceTable};
use wasmtime_wasi::{WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtxView, WasiHttpView};

use crate::capabilities::{
    Call, Capability, CapabilityCtx, HasCapability, InstanceIdentity, LoadContext, config,
    keyvalue, logging, messaging, outbound_http, wasi,
};
use crate::error::LoadError;
use crate::limits::{InstanceLimiter, Sandboxed};
use crate::trace::TraceContext;
use crate::usage::UsageCell;

/// Declares the capabilities, one line each: `field: module::Capability`.
macro_rules! capabilities {
    ($($field:ident: $module:ident::$capability:ident),* $(,)?) => {
        /// Everything one component is allowed to reach, validated at load.
        #[derive(Debug, Clone)]
        pub(crate) struct Grants {
            $(pub $field: <$module::$capability as Capability>::Grant,)*
        }

        /// What each capability worked out once for a whole app, at load.
        pub(crate) struct AppGrants {
            $($field: <$module::$capability as Capability>::AppGrant,)*
        }

        impl AppGrants {
            /// Runs every capability's checks of the whole app.
            pub(crate) fn new(load: &LoadContext<'_>) -> Result<AppGrants, LoadError> {
                Ok(AppGrants {
                    $($field: <$module::$capability as Capability>::app_grant(load)?,)*
                })
            }

            /// The grants of one component of the app.
            pub(crate) fn component(
                &self,
                load: &LoadContext<'_>,
                component: &skiff_manifest::Component,
            ) -> Result<Grants, LoadError> {
                Ok(Grants {
                    $($field: <$module::$capability as Capability>::grant(
                        &self.$field, load, component,
                    )?,)*
                })
            }
        }

        impl Grants {
            /// Nothing granted: no files, no variables, no hosts, no stores.
            pub(crate) fn none() -> Grants {
                Grants {
                    $($field: Default::default(),)*
                }
            }
        }

        /// The per-instance state of every capability.
        struct Capabilities {
            $($field: <$module::$capability as Capability>::Instance,)*
        }

        impl Capabilities {
            fn new(grants: &Grants, identity: &InstanceIdentity) -> Self {
                Capabilities {
                    $($field: <$module::$capability as Capability>::instance(
                        &grants.$field, identity,
                    ),)*
                }
            }

            fn next_request(&mut self, identity: &InstanceIdentity) {
                $(<$module::$capability as Capability>::next_request(&mut self.$field, identity);)*
            }

            fn trace(&mut self, trace: &TraceContext) {
                $(<$module::$capability as Capability>::trace(&mut self.$field, trace);)*
            }

            fn request_done(&mut self) {
                $(<$module::$capability as Capability>::request_done(&mut self.$field);)*
            }
        }

        $(
            impl HasCapability<<$module::$capability as Capability>::Instance> for Host {
                fn capability(
                    &mut self,
                ) -> CapabilityCtx<'_, <$module::$capability as Capability>::Instance> {
                    CapabilityCtx {
                        state: &mut self.capabilities.$field,
                        table: &mut self.table,
                        call: &self.call,
                    }
                }
            }
        )*

        /// Links every capability's interfaces, once per engine.
        pub(crate) fn add_to_linker(linker: &mut Linker<Host>) -> wasmtime::Result<()> {
            $($module::add_to_linker(linker)?;)*
            Ok(())
        }
    };
}

/// Links the WASI 0.3 interfaces, on the async engine only, beside the 0.2 ones: each comes
/// from the capability that grants its 0.2 twin and uses the same per-instance state, so a
/// grant means the same whichever version a guest imports.
pub(crate) fn add_wasi_0_3_to_linker(linker: &mut Linker<Host>) -> wasmtime::Result<()> {
    wasi::add_wasi_0_3_to_linker(linker)?;
    outbound_http::add_wasi_0_3_to_linker(linker)
}

capabilities! {
    wasi: wasi::Wasi,
    outbound_http: outbound_http::OutboundHttpCapability,
    key_value: keyvalue::KeyValueCapability,
    config: config::Config,
    logging: logging::Logging,
    messaging: messaging::Messaging,
}

pub(crate) struct Host {
    table: ResourceTable,
    /// What the instance works for now: log lines, denials and metrics name it.
    call: Call,
    capabilities: Capabilities,
    limiter: InstanceLimiter,
}

impl Host {
    /// A fresh instance's state, from its component's grants.
    pub(crate) fn new(
        grants: &Grants,
        identity: InstanceIdentity,
        memory_limit: Option<u64>,
    ) -> Host {
        Host {
            table: ResourceTable::new(),
            capabilities: Capabilities::new(grants, &identity),
            call: Call {
                identity,
                trace: TraceContext::default(),
            },
            limiter: InstanceLimiter::new(memory_limit),
        }
    }

    /// Readies a reused instance for its next request: log lines, denials and metrics name
    /// that request, and its usage starts from the instance's memory as it is now.
    pub(crate) fn next_request(
        &mut self,
        identity: InstanceIdentity,
        usage: Option<std::sync::Arc<UsageCell>>,
    ) {
        self.capabilities.next_request(&identity);
        self.call.identity = identity;
        self.limiter.next_request(usage);
    }

    /// The guest call's place in the request's trace: what the guest calls are spans below.
    pub(crate) fn set_trace(&mut self, trace: TraceContext) {
        self.capabilities.trace(&trace);
        self.call.trace = trace;
    }

    /// Where the unit of work's in-process requests go (another component, a chain's next
    /// hop); `None`: it can make none.
    pub(crate) fn set_calls(&mut self, calls: Option<outbound_http::InProcessCalls>) {
        self.capabilities.outbound_http.set_calls(calls);
    }

    /// The request is over and the instance is kept: its output and usage are final now.
    pub(crate) fn request_done(&mut self) {
        self.capabilities.request_done();
        self.limiter.report_peak();
    }
}

impl Sandboxed for Host {
    fn limiter(&mut self) -> &mut InstanceLimiter {
        &mut self.limiter
    }
}

impl WasiView for Host {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        self.capabilities.wasi.view(&mut self.table)
    }
}

impl WasiHttpView for Host {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        self.capabilities.outbound_http.view(&mut self.table)
    }
}
