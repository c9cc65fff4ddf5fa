//! The one-line spinner `skiff deploy` shows on a terminal while it packs, uploads and waits.

use std::io::Write as _;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// What a deploy is doing, for the progress line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Packing,
    Uploading { total: u64, files: usize },
}

/// The progress line's text: once the whole bundle is sent, the server is compiling.
fn phase_text(phase: Phase, sent: u64) -> String {
    match phase {
        Phase::Packing => "Packing…".into(),
        Phase::Uploading { total, files } if sent < total => {
            let percent = sent.saturating_mul(100) / total.max(1);
            let noun = if files == 1 { "file" } else { "files" };
            format!(
                "Uploading {} ({files} {noun})… {percent}%",
                skiff_manifest::format_size(total)
            )
        }
        Phase::Uploading { .. } => "Compiling and checking…".into(),
    }
}

/// A one-line spinner on stderr, only when stderr is a terminal: a log file or a pipe gets
/// nothing. Cheap to clone; [`Progress::finish`] (or dropping the last clone) clears the line.
#[derive(Clone)]
pub struct Progress(Option<Arc<ProgressState>>);

struct ProgressState {
    phase: Mutex<Phase>,
    sent: AtomicU64,
    /// Set under `draw`'s lock, so that no frame is drawn after the line is cleared.
    stopped: AtomicBool,
    draw: Mutex<()>,
}

impl Progress {
    pub fn start(enabled: bool) -> Progress {
        if !enabled {
            return Progress(None);
        }
        let state = Arc::new(ProgressState {
            phase: Mutex::new(Phase::Packing),
            sent: AtomicU64::new(0),
            stopped: AtomicBool::new(false),
            draw: Mutex::new(()),
        });
        let ticker = Arc::downgrade(&state);
        tokio::spawn(async move {
            const FRAMES: [char; 10] = ['⠋', '⠙', '⠹', '⠸', '⠼', '⠴', '⠦', '⠧', '⠇', '⠏'];
            let mut interval = tokio::time::interval(Duration::from_millis(100));
            for frame in FRAMES.iter().cycle() {
                interval.tick().await;
                // The ticker holds only a weak reference: it ends with the last `Progress`.
                let Some(state) = ticker.upgrade() else { break };
                let _guard = state.draw.lock().unwrap_or_else(|e| e.into_inner());
                if state.stopped.load(Ordering::Acquire) {
                    break;
                }
                let phase = *state.phase.lock().unwrap_or_else(|e| e.into_inner());
                let text = phase_text(phase, state.sent.load(Ordering::Relaxed));
                let mut stderr = std::io::stderr().lock();
                let _ = write!(stderr, "\r\x1b[2K{frame} {text}");
                let _ = stderr.flush();
            }
        });
        Progress(Some(state))
    }

    pub fn set(&self, phase: Phase) {
        if let Some(state) = &self.0 {
            *state.phase.lock().unwrap_or_else(|e| e.into_inner()) = phase;
            state.sent.store(0, Ordering::Relaxed);
        }
    }

    pub fn sent(&self, bytes: u64) {
        if let Some(state) = &self.0 {
            state.sent.fetch_add(bytes, Ordering::Relaxed);
        }
    }

    /// Clears the line, so that the result or the error prints on a clean one.
    pub fn finish(&self) {
        if let Some(state) = &self.0 {
            let _guard = state.draw.lock().unwrap_or_else(|e| e.into_inner());
            if !state.stopped.swap(true, Ordering::AcqRel) {
                let mut stderr = std::io::stderr().lock();
                let _ = write!(stderr, "\r\x1b[2K");
                let _ = stderr.flush();
            }
        }
    }
}

impl Drop for ProgressState {
    fn drop(&mut self) {
        // An early `?` return skips `finish`; the line must not be left behind.
        if !self.stopped.load(Ordering::Acquire) {
            let _ = write!(std::io::stderr(), "\r\x1b[2K");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_upload_phase_turns_into_compiling_once_everything_is_sent() {
        let phase = Phase::Uploading {
            total: 2 << 20,
            files: 3,
        };
        assert_eq!(phase_text(phase, 1 << 20), "Uploading 2 MiB (3 files)… 50%");
        assert_eq!(phase_text(phase, 2 << 20), "Compiling and checking…");
        assert_eq!(phase_text(Phase::Packing, 0), "Packing…");
    }
}
