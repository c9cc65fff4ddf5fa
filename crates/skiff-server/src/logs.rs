//! Each app's own log stream: what its guests print and log, kept apart from every other app
//! so that a tenant reads its apps' lines and nobody else's. The last lines are kept in memory
//! for `skiff logs`, and followers get new lines as they come.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use skiff_runtime::{GuestOutput, LogSink};
use tokio::sync::broadcast;

use crate::api::LogLine;
use crate::persist::now_rfc3339;

/// Lines kept per app for a newcomer, at most...
const KEPT_LINES: usize = 1000;
/// ...and at most this many bytes of them: a line may be 16 KiB, and a host keeps thousands
/// of apps, so a count alone would let every app hold 16 MiB of the host's memory.
const KEPT_BYTES: usize = 256 * 1024;
/// Lines a slow follower may fall behind before it misses some (it is told so). Only apps
/// someone follows have this buffer.
const FOLLOW_BUFFER: usize = 256;

pub struct LogHub {
    lines: Mutex<Lines>,
    /// On a cluster: every line also goes here, to be shared with the other hosts.
    forward: Option<Forward>,
}

/// Where a cluster host sends its apps' lines to be shared (with the app's tenant), through a
/// bounded channel: a guest that logs faster than they can be shared loses lines from the
/// shared stream, never time on its requests.
pub type LogForward = tokio::sync::mpsc::Sender<(String, Arc<LogLine>)>;
/// The other end of a [`LogForward`].
pub type LogForwarded = tokio::sync::mpsc::Receiver<(String, Arc<LogLine>)>;

struct Forward {
    tenant: String,
    host: String,
    sender: LogForward,
}

struct Lines {
    recent: VecDeque<Arc<LogLine>>,
    /// What `recent` holds, in bytes (as [`weight`] counts them).
    recent_bytes: usize,
    /// Made when the first follower comes: its buffer is allocated up front, and a thousand
    /// apps nobody follows should not pay for a thousand of them.
    live: Option<broadcast::Sender<Arc<LogLine>>>,
}

impl LogHub {
    pub fn new() -> Arc<LogHub> {
        LogHub::with_forward(None)
    }

    /// A hub of a cluster host: its lines name `host` and are also sent to `sender`, as the
    /// lines of `tenant`'s app.
    pub fn forwarding(tenant: &str, host: &str, sender: LogForward) -> Arc<LogHub> {
        LogHub::with_forward(Some(Forward {
            tenant: tenant.to_string(),
            host: host.to_string(),
            sender,
        }))
    }

    fn with_forward(forward: Option<Forward>) -> Arc<LogHub> {
        Arc::new(LogHub {
            lines: Mutex::new(Lines {
                recent: VecDeque::new(),
                recent_bytes: 0,
                live: None,
            }),
            forward,
        })
    }

    /// The sink the app's components write to.
    pub fn sink(self: &Arc<Self>) -> LogSink {
        let hub = self.clone();
        LogSink::new(move |output: &GuestOutput<'_>| hub.push(output))
    }

    fn push(&self, output: &GuestOutput<'_>) {
        let line = Arc::new(LogLine {
            time: now_rfc3339(),
            app: output.app.to_string(),
            component: output.component.to_string(),
            request_id: output.request_id,
            trace_id: output.trace_id.to_string(),
            stream: output.stream.to_string(),
            level: output.level.map(str::to_string),
            message: output.message.to_string(),
            host: self.forward.as_ref().map(|f| f.host.clone()),
        });
        if let Some(forward) = &self.forward {
            // Full: the line stays in this host's buffer only.
            let _ = forward
                .sender
                .try_send((forward.tenant.clone(), line.clone()));
        }
        let mut lines = self.lines.lock().unwrap_or_else(|e| e.into_inner());
        lines.recent_bytes += weight(&line);
        lines.recent.push_back(line.clone());
        while lines.recent.len() > KEPT_LINES || lines.recent_bytes > KEPT_BYTES {
            let Some(oldest) = lines.recent.pop_front() else {
                break;
            };
            lines.recent_bytes -= weight(&oldest);
        }
        if let Some(live) = &lines.live {
            // Followers that have gone away are not an error.
            let _ = live.send(line);
        }
    }

    /// Bytes of the lines kept for newcomers.
    pub fn kept_bytes(&self) -> usize {
        self.lines
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .recent_bytes
    }

    /// Ends every follower's stream: the app is gone.
    pub fn close(&self) {
        let mut lines = self.lines.lock().unwrap_or_else(|e| e.into_inner());
        // Dropping the only sender closes the channel; followers see its end.
        lines.live = None;
    }

    /// The last `tail` lines, and (subscribed at the same moment, so nothing falls between
    /// them) a receiver of the lines after those.
    pub fn tail_and_follow(
        &self,
        tail: usize,
    ) -> (Vec<Arc<LogLine>>, broadcast::Receiver<Arc<LogLine>>) {
        let mut lines = self.lines.lock().unwrap_or_else(|e| e.into_inner());
        let receiver = lines
            .live
            .get_or_insert_with(|| broadcast::channel(FOLLOW_BUFFER).0)
            .subscribe();
        let skip = lines.recent.len().saturating_sub(tail);
        (lines.recent.iter().skip(skip).cloned().collect(), receiver)
    }
}

/// What a kept line costs, near enough: its text and the fields around it.
fn weight(line: &LogLine) -> usize {
    std::mem::size_of::<LogLine>()
        + line.time.len()
        + line.app.len()
        + line.component.len()
        + line.trace_id.len()
        + line.stream.len()
        + line.level.as_ref().map_or(0, String::len)
        + line.message.len()
}

#[cfg(test)]
mod tests {
    use super::*;
    use skiff_runtime::GuestOutput;

    #[test]
    fn kept_lines_are_bounded_in_bytes_as_well_as_in_count() {
        let hub = LogHub::new();
        let long = "x".repeat(16 * 1024);
        for request_id in 0..1000 {
            hub.push(&GuestOutput {
                app: "a",
                component: "c",
                request_id,
                trace_id: opentelemetry::trace::TraceId::INVALID,
                stream: "stdout",
                level: None,
                message: &long,
            });
        }
        assert!(hub.kept_bytes() <= KEPT_BYTES, "{}", hub.kept_bytes());
        let (kept, _) = hub.tail_and_follow(usize::MAX);
        assert!(kept.len() >= KEPT_BYTES / (20 * 1024), "{}", kept.len());
        // The newest lines are the ones kept.
        assert_eq!(kept.last().unwrap().request_id, 999);
    }
}
