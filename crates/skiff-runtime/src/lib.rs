//! The engine room of skiff: turns a validated [`skiff_manifest::App`] into loaded, ready-to-run
//! components, and runs one unit of work (an HTTP request, a CLI command) in a fresh sandbox.
//!
//! It owns the wasmtime engine (pooling allocator, copy-on-write memory images, epoch
//! interruption), the on-disk [`CodeCache`] of compiled code, the per-instance state with its
//! resource limits, and the host capabilities, one module each (files and environment,
//! outbound HTTP, key-value, configuration, logging, messaging). Triggers (the HTTP server,
//! schedules, queue consumers) depend on this crate; it knows nothing of them.
//!
//! The spine every unit of work follows: [`Runtime::load_app`] compiles (or loads from the
//! cache) each component once and keeps an `InstancePre`; [`LoadedComponent::handle_http`] then
//! instantiates a fresh `Store` per request, calls the guest, and drops the store when done;
//! [`Runtime::run_command`] runs a command through the same store-making path, and
//! [`LoadedComponent::run_command`] a command component of an app, when a trigger starts it;
//! [`LoadedComponent::handle_message`] hands a queue message to a component's
//! `wasi:messaging/incoming-handler` the same way. When the host set a [`UsageSink`], what a
//! request used (wall and CPU time, peak memory, bytes in and out) is reported to it once the
//! request is over.
//!
//! Inside, the modules are layered, each using only those above it: errors, settings and
//! measurements (`error`, `config`, `trace`, `metrics`, `usage`, `limits`, `cache`, `code`);
//! the `capabilities`; `host`, where they meet; `reuse` and `engine` (admission, instance
//! reuse, making stores); `load`, `invoke`, `command` and `message` (the spine); and `runtime`
//! on top.

mod cache;
mod capabilities;
mod code;
mod command;
mod config;
mod engine;
mod error;
mod host;
mod invoke;
mod limits;
mod load;
mod message;
mod metrics;
mod reuse;
mod runtime;
mod tls;
pub mod trace;
mod usage;

pub use cache::{CacheOutcome, CodeCache};
pub use capabilities::SharedStore;
pub use capabilities::config::VARIABLE_ENV_PREFIX;
pub use capabilities::guest_log::{GuestOutput, LogSink};
pub use capabilities::messaging::{QueueSpace, TRACEPARENT, message_traceparent};
pub use capabilities::outbound_http::{
    CallFuture, CallRouter, Callee, CallerInfo, Destination, INTERNAL_DOMAIN, InProcessCalls,
    MAX_CALL_DEPTH, NextHop,
};
pub use capabilities::wasi::{DirGrant, WasiGrant};
pub use command::{CommandOptions, CommandOutcome, TRAP_EXIT_CODE};
pub use config::{
    DEFAULT_EPOCH_TICK, DEFAULT_REUSE_IDLE_TIMEOUT, EngineKind, RuntimeConfig, default_cache_dir,
    default_data_dir,
};
pub use error::{InvokeError, LoadError, LoadErrorKind, OverloadScope};
pub use invoke::{RequestInfo, ResponseBody};
pub use load::{LoadOptions, LoadStats, LoadedApp, LoadedComponent};
pub use metrics::{ComponentMetrics, MetricsScope, RuntimeMetrics};
pub use reuse::SharedPermits;
pub use runtime::Runtime;
pub use trace::TraceContext;
pub use usage::{RequestUsage, UsageSink};
