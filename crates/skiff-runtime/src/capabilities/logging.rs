//! The logging capability (`wasi:logging`): a guest's log records go to skiff's log at their
//! level, tagged with app, component and request id, like its stdout and stderr lines.

use super::state_bindings::wasi::logging::logging::{self, Level};
use crate::host::Host;

/// Longest message kept; the rest is cut, so that one guest cannot flood the log with a
/// single call.
const MAX_MESSAGE_BYTES: usize = 16 << 10;

impl logging::Host for Host {
    async fn log(
        &mut self,
        level: Level,
        context: String,
        message: String,
    ) -> wasmtime::Result<()> {
        let message = truncate(&message, MAX_MESSAGE_BYTES);
        let context = truncate(&context, 256);
        let id = &self.identity;
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
