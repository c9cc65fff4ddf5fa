//! Request bodies that must keep arriving while the guest reads them.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;

/// A request body that must keep arriving while the guest reads it. The timer exists only
/// once the body is slower than the guest (a body already in hyper's buffer never waits), and
/// is re-armed only after progress, so a fast upload costs no timer at all.
///
/// The deadline for the next piece is the earlier of `idle` after the last one and the time by
/// which the body, counted from the guest's first read, would fall below `min_rate` after a
/// first `idle` of grace. The first catches a client that stops; the second one that sends a
/// byte every few seconds, which an idle timer alone would let hold the instance until the
/// deadline. The rate is counted from the first read, not the request's arrival: until the
/// guest reads, flow control holds the client back, and that is no fault of the client's.
pub(crate) struct BodyReadTimeout<B> {
    body: B,
    /// When the guest first asked for the body.
    reading_since: Option<Instant>,
    idle: Duration,
    min_rate: u64,
    received: u64,
    /// Set after a piece arrived: the next wait gets a fresh deadline.
    progressed: bool,
    timer: Option<Pin<Box<tokio::time::Sleep>>>,
    timed_out: bool,
    request_id: u64,
}

impl<B> BodyReadTimeout<B> {
    pub(crate) fn new(body: B, idle: Duration, min_rate: u64, request_id: u64) -> Self {
        BodyReadTimeout {
            body,
            reading_since: None,
            idle,
            min_rate,
            received: 0,
            progressed: false,
            timer: None,
            timed_out: false,
            request_id,
        }
    }

    fn deadline(&self, now: Instant, reading_since: Instant) -> Instant {
        let idle = now + self.idle;
        if self.min_rate == 0 {
            return idle;
        }
        let earned = Duration::from_secs_f64(self.received as f64 / self.min_rate as f64);
        idle.min(reading_since + self.idle + earned)
    }
}

impl<B> hyper::body::Body for BodyReadTimeout<B>
where
    B: hyper::body::Body<Data = Bytes, Error = wasmtime_wasi_http::Error> + Unpin,
{
    type Data = Bytes;
    type Error = wasmtime_wasi_http::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<hyper::body::Frame<Bytes>, Self::Error>>> {
        let this = self.get_mut();
        if this.timed_out {
            return Poll::Ready(Some(Err(wasmtime_wasi_http::Error::ConnectionReadTimeout)));
        }
        if this.reading_since.is_none() && !this.body.is_end_stream() {
            this.reading_since = Some(Instant::now());
        }
        match Pin::new(&mut this.body).poll_frame(cx) {
            Poll::Pending => {}
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    this.received += data.len() as u64;
                }
                this.progressed = true;
                return Poll::Ready(Some(Ok(frame)));
            }
            done => return done,
        }
        let now = Instant::now();
        let deadline = this.deadline(now, this.reading_since.unwrap_or(now));
        let timer = match &mut this.timer {
            Some(timer) => {
                if this.progressed {
                    timer.as_mut().reset(deadline.into());
                }
                timer
            }
            None => this
                .timer
                .insert(Box::pin(tokio::time::sleep_until(deadline.into()))),
        };
        this.progressed = false;
        if timer.as_mut().poll(cx).is_pending() {
            return Poll::Pending;
        }
        this.timed_out = true;
        tracing::info!(
            request_id = this.request_id,
            received = this.received,
            "the client stopped sending its request body (or sends it too slowly); \
             the guest's read fails"
        );
        Poll::Ready(Some(Err(wasmtime_wasi_http::Error::ConnectionReadTimeout)))
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.body.size_hint()
    }
}
