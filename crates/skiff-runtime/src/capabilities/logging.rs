//! The logging capability (`wasi:logging`): a guest's log records go to skiff's log at their
//! level, tagged with app, component and request id, like its stdout and stderr lines.

use skiff_manifest::Component;
use wasmtime::component::Linker;

use super::{Capability, CapabilityCtx, Ctx, HasCapability, InstanceIdentity, LoadContext};
use crate::error::LoadError;

mod bindings {
    wasmtime::component::bindgen!({
        path: "wit",
        world: "skiff:host/logging",
        imports: { default: async | trappable },
    });
}
use bindings::wasi::logging::logging::{self, Level};

/// Every component may log: there is nothing to grant, and no state beyond the identity.
pub(crate) struct Logging;

/// The (empty) state of an instance's logging: what its view is for.
pub(crate) struct Logger;

impl Capability for Logging {
    type AppGrant = ();
    type Grant = ();
    type Instance = Logger;

    fn grant(_: &(), _: &LoadContext<'_>, _: &Component) -> Result<(), LoadError> {
        Ok(())
    }

    fn instance(_: &(), _: &InstanceIdentity) -> Logger {
        Logger
    }
}

pub(crate) fn add_to_linker<T: HasCapability<Logger> + Send + 'static>(
    linker: &mut Linker<T>,
) -> wasmtime::Result<()> {
    logging::add_to_linker::<T, Ctx<Logger>>(linker, T::capability)
}

/// Longest message kept; the rest is cut, so that one guest cannot flood the log with a
/// single call.
const MAX_MESSAGE_BYTES: usize = 16 << 10;

impl logging::Host for CapabilityCtx<'_, Logger> {
    async fn log(
        &mut self,
        level: Level,
        context: String,
        message: String,
    ) -> wasmtime::Result<()> {
        let message = truncate(&message, MAX_MESSAGE_BYTES);
        let context = truncate(&context, 256);
        let id = &self.call.identity;
        macro_rules! emit {
            ($level:expr) => {
                tracing::event!(
                    target: "guest",
                    $level,
                    app = %id.app,
                    component = %id.component,
                    request_id = id.request_id,
                    trace_id = %id.trace_id,
                    context,
                    "{message}"
                )
            };
        }
        match level {
            Level::Trace => emit!(tracing::Level::TRACE),
            Level::Debug => emit!(tracing::Level::DEBUG),
            Level::Info => emit!(tracing::Level::INFO),
            Level::Warn => emit!(tracing::Level::WARN),
            // tracing has no level above error; a critical record is an error that says so.
            Level::Error | Level::Critical => {
                let critical = matches!(level, Level::Critical);
                tracing::event!(
                    target: "guest",
                    tracing::Level::ERROR,
                    app = %id.app,
                    component = %id.component,
                    request_id = id.request_id,
                    trace_id = %id.trace_id,
                    context,
                    critical,
                    "{message}"
                )
            }
        }
        if let Some(sink) = &id.log_sink {
            sink.send(&super::guest_log::GuestOutput {
                app: &id.app,
                component: &id.component,
                request_id: id.request_id,
                trace_id: id.trace_id,
                stream: "log",
                level: Some(level_name(level)),
                message,
            });
        }
        Ok(())
    }
}

fn level_name(level: Level) -> &'static str {
    match level {
        Level::Trace => "trace",
        Level::Debug => "debug",
        Level::Info => "info",
        Level::Warn => "warn",
        Level::Error => "error",
        Level::Critical => "critical",
    }
}

fn truncate(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}
