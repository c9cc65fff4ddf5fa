//! Each app's own log stream: what its guests print and log, kept apart from every other app
//! so that a tenant reads its apps' lines and nobody else's. The last lines are kept in memory
//! for `skiff logs`, and followers get new lines as they come.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use skiff_runtime::capabilities::guest_log::{GuestOutput, LogSink};
use tokio::sync::broadcast;

use crate::api::LogLine;
use crate::persist::now_rfc3339;

/// Lines kept per app for a newcomer.
const KEPT_LINES: usize = 1000;
/// Lines a slow follower may fall behind before it misses some (it is told so).
const FOLLOW_BUFFER: usize = 1024;

pub struct LogHub {
    lines: Mutex<Lines>,
}

struct Lines {
    recent: VecDeque<Arc<LogLine>>,
    /// Made when the first follower comes: its buffer is allocated up front, and a thousand
    /// apps nobody follows should not pay for a thousand of them.
    live: Option<broadcast::Sender<Arc<LogLine>>>,
}

impl LogHub {
    pub fn new() -> Arc<LogHub> {
        Arc::new(LogHub {
            lines: Mutex::new(Lines {
                recent: VecDeque::new(),
                live: None,
            }),
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
        });
        let mut lines = self.lines.lock().unwrap_or_else(|e| e.into_inner());
        if lines.recent.len() == KEPT_LINES {
            lines.recent.pop_front();
        }
        lines.recent.push_back(line.clone());
        if let Some(live) = &lines.live {
            // Followers that have gone away are not an error.
            let _ = live.send(line);
        }
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
