//! Usage accounting: what one request cost, measured as it runs and reported once, when all of
//! it is over, to a [`UsageSink`] the host sets per app (what an operator bills from).
//!
//! A request's figures are gathered in a [`UsageCell`] shared by every part of the request that
//! outlives the others in some case: the guest task (which measures CPU time around each poll),
//! the instance's memory limiter (which knows the peak), the request body handed to the guest,
//! and the response body streaming to the client. Whichever lets go last reports, so a record
//! covers the whole request, including a body that goes on streaming after the guest returned.
//! Without a sink none of this exists: no cell is allocated and every wrapper holds `None`.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;

/// What one request used, as a [`UsageSink`] gets it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RequestUsage {
    /// From admission (the request got its concurrency permits) until everything was over:
    /// the guest done and the response body finished (or dropped by the client).
    pub wall: Duration,
    /// CPU time of the threads that ran the guest's task, summed over its polls: guest code
    /// and the host work done inside those polls (instantiation, WASI calls, tear-down), never
    /// time spent waiting.
    pub guest_cpu: Duration,
    /// The largest total size of the instance's linear memories, in bytes (reserved pages,
    /// not resident memory).
    pub peak_memory_bytes: u64,
    /// Request body bytes read from the client on the guest's behalf.
    pub bytes_in: u64,
    /// Response body bytes handed to the connection (headers not included).
    pub bytes_out: u64,
}

/// Receives one [`RequestUsage`] per request served. It runs on whichever task finishes the
/// request last, so it must be quick and must not block.
#[derive(Clone)]
pub struct UsageSink(Arc<dyn Fn(&RequestUsage) + Send + Sync>);

impl UsageSink {
    pub fn new(sink: impl Fn(&RequestUsage) + Send + Sync + 'static) -> Self {
        UsageSink(Arc::new(sink))
    }

    /// Hands `usage` to the sink (the runtime does this once per request).
    pub fn send(&self, usage: &RequestUsage) {
        (self.0)(usage)
    }
}

impl std::fmt::Debug for UsageSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("UsageSink")
    }
}

/// One request's figures while it runs; reports to the sink when the last holder drops it.
pub(crate) struct UsageCell {
    sink: UsageSink,
    admitted: Instant,
    cpu_nanos: AtomicU64,
    peak_memory: AtomicU64,
    bytes_in: AtomicU64,
    bytes_out: AtomicU64,
}

impl UsageCell {
    pub(crate) fn new(sink: &UsageSink) -> Arc<UsageCell> {
        Arc::new(UsageCell {
            sink: sink.clone(),
            admitted: Instant::now(),
            cpu_nanos: AtomicU64::new(0),
            peak_memory: AtomicU64::new(0),
            bytes_in: AtomicU64::new(0),
            bytes_out: AtomicU64::new(0),
        })
    }

    pub(crate) fn memory_peak(&self, bytes: u64) {
        self.peak_memory.fetch_max(bytes, Ordering::Relaxed);
    }

    pub(crate) fn received(&self, bytes: usize) {
        self.bytes_in.fetch_add(bytes as u64, Ordering::Relaxed);
    }

    pub(crate) fn sent(&self, bytes: usize) {
        self.bytes_out.fetch_add(bytes as u64, Ordering::Relaxed);
    }
}

impl Drop for UsageCell {
    fn drop(&mut self) {
        let usage = RequestUsage {
            wall: self.admitted.elapsed(),
            guest_cpu: Duration::from_nanos(*self.cpu_nanos.get_mut()),
            peak_memory_bytes: *self.peak_memory.get_mut(),
            bytes_in: *self.bytes_in.get_mut(),
            bytes_out: *self.bytes_out.get_mut(),
        };
        self.sink.send(&usage);
    }
}

/// CPU time the calling thread has used so far. Each poll of a task runs on one thread, so
/// the difference across a poll is the CPU that poll used, whatever else the thread does
/// between polls.
#[cfg(unix)]
fn thread_cpu_time() -> Duration {
    let now = rustix::time::clock_gettime(rustix::time::ClockId::ThreadCPUTime);
    Duration::new(now.tv_sec as u64, now.tv_nsec as u32)
}

/// No per-thread CPU clock here: guest CPU time is reported as zero.
#[cfg(not(unix))]
fn thread_cpu_time() -> Duration {
    Duration::ZERO
}

pin_project_lite::pin_project! {
    /// A future whose polls are timed in thread CPU time, when there is a cell to add it to.
    pub(crate) struct CpuTimed<F> {
        #[pin]
        inner: F,
        usage: Option<Arc<UsageCell>>,
    }
}

impl<F> CpuTimed<F> {
    pub(crate) fn new(inner: F, usage: Option<Arc<UsageCell>>) -> Self {
        CpuTimed { inner, usage }
    }
}

impl<F: Future> Future for CpuTimed<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.project();
        let Some(usage) = this.usage else {
            return this.inner.poll(cx);
        };
        let before = thread_cpu_time();
        let result = this.inner.poll(cx);
        let used = thread_cpu_time().saturating_sub(before);
        usage
            .cpu_nanos
            .fetch_add(used.as_nanos() as u64, Ordering::Relaxed);
        result
    }
}

pin_project_lite::pin_project! {
    /// A request body that counts the data bytes read from it, when there is a cell.
    pub(crate) struct CountedBody<B> {
        #[pin]
        inner: B,
        usage: Option<Arc<UsageCell>>,
    }
}

impl<B> CountedBody<B> {
    pub(crate) fn new(inner: B, usage: Option<Arc<UsageCell>>) -> Self {
        CountedBody { inner, usage }
    }
}

impl<B: http_body::Body<Data = Bytes>> http_body::Body for CountedBody<B> {
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        let this = self.project();
        let frame = this.inner.poll_frame(cx);
        if let (Some(usage), Poll::Ready(Some(Ok(frame)))) = (this.usage, &frame)
            && let Some(data) = frame.data_ref()
        {
            usage
                .bytes_in
                .fetch_add(data.len() as u64, Ordering::Relaxed);
        }
        frame
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    #[test]
    fn the_last_holder_reports_once() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let sink = {
            let seen = seen.clone();
            UsageSink::new(move |usage| seen.lock().unwrap().push(*usage))
        };
        let cell = UsageCell::new(&sink);
        let other = cell.clone();
        cell.sent(10);
        other.memory_peak(5);
        other.memory_peak(3);
        drop(cell);
        assert!(seen.lock().unwrap().is_empty());
        drop(other);
        let seen = seen.lock().unwrap();
        assert_eq!(seen.len(), 1);
        assert_eq!((seen[0].bytes_out, seen[0].peak_memory_bytes), (10, 5));
    }

    #[cfg(unix)]
    #[test]
    fn cpu_time_counts_work_not_waiting() {
        let seen = Arc::new(Mutex::new(None));
        let sink = {
            let seen = seen.clone();
            UsageSink::new(move |usage| *seen.lock().unwrap() = Some(*usage))
        };
        let work = async {
            let mut x = 0u64;
            let start = Instant::now();
            while start.elapsed() < Duration::from_millis(30) {
                x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(7));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(CpuTimed::new(work, Some(UsageCell::new(&sink))));
        let usage = seen.lock().unwrap().expect("reported");
        // 30 ms of spinning (less if the machine is busy, never the 100 ms of sleep).
        assert!(usage.guest_cpu < Duration::from_millis(100), "{usage:?}");
        assert!(usage.guest_cpu > Duration::ZERO, "{usage:?}");
        assert!(usage.wall >= Duration::from_millis(130), "{usage:?}");
    }
}
