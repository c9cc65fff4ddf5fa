//! The engine room of skiff: turns a validated [`skiff_manifest::App`] into loaded, ready-to-run
//! components, and runs one unit of work (an HTTP request, a CLI command) in a fresh sandbox.
//!
//! It owns the wasmtime [`wasmtime::Engine`] (pooling allocator, copy-on-write memory images,
//! epoch interruption), the on-disk [`cache::CodeCache`] of compiled code, the per-instance
//! [`host::Host`] state with its resource limits, and the host capabilities, one module each
//! under [`capabilities`]. Triggers (the HTTP server, later schedules and queues) depend on this
//! crate; it knows nothing of them.
//!
//! The spine every unit of work follows: [`Runtime::load_app`] compiles (or loads from the
//! cache) each component once and keeps an `InstancePre`; [`LoadedComponent::handle_http`] then
//! instantiates a fresh `Store` per request, calls the guest, and drops the store when done;
//! when the host set a [`UsageSink`], what the request used (wall and CPU time, peak memory,
//! bytes in and out) is reported to it once the request is over ([`usage`]).

pub mod app;
pub mod cache;
pub mod capabilities;
pub mod command;
pub mod engine;
pub mod error;
pub mod host;
pub mod invoke;
pub mod metrics;
pub mod state;
pub mod trace;
pub mod usage;

pub use app::{LoadOptions, LoadStats, LoadedApp, LoadedComponent};
pub use cache::{CacheOutcome, CodeCache};
pub use engine::{Runtime, RuntimeConfig};
pub use error::{InvokeError, LoadError, LoadErrorKind, OverloadScope};
pub use invoke::{RequestInfo, ResponseBody, SharedPermits};
pub use metrics::{ComponentMetrics, MetricsScope, RuntimeMetrics};
pub use trace::TraceContext;
pub use usage::{RequestUsage, UsageSink};
