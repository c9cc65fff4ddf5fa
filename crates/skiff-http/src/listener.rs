//! The listener: accepting connections, serving HTTP/1 and HTTP/2 on them with the limits of
//! [`HttpLimits`], and shutting down gracefully.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use http::Request;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use skiff_runtime::Runtime;
use tokio::net::TcpListener;

use crate::dispatch::{RequestLimits, dispatch};
use crate::{AppSource, HttpLimits};

/// A bound listener, ready to serve. Binding is separate from serving so that the caller can
/// print the real address (when port 0 was asked for) before the first request.
pub struct Server<S: AppSource> {
    listener: TcpListener,
    apps: Arc<S>,
    next_request_id: Arc<AtomicU64>,
    shutdown_grace: Duration,
    limits: HttpLimits,
    /// The runtime whose guests are stopped once the grace period is over.
    guests: Option<Arc<Runtime>>,
    /// Other work of the runtime's guests (queue handlers) that shutdown lets finish within
    /// the grace period too, before stopping the guests.
    draining: Option<Draining>,
}

/// Starts, when shutdown starts, the wind-down of work other than requests, and completes
/// when that work is over (see [`Server::with_draining`]).
pub type Draining = Box<dyn FnOnce() -> Pin<Box<dyn Future<Output = ()> + Send>> + Send>;

impl<S: AppSource> Server<S> {
    /// A listener whose requests go to the apps `apps` selects.
    pub async fn bind_source(addr: SocketAddr, apps: S) -> std::io::Result<Server<S>> {
        Self::bind_shared(addr, Arc::new(apps)).await
    }

    /// [`Server::bind_source`], with `apps` kept by the caller too (to change what it selects).
    pub async fn bind_shared(addr: SocketAddr, apps: Arc<S>) -> std::io::Result<Server<S>> {
        let listener = TcpListener::bind(addr).await?;
        Ok(Server {
            listener,
            apps,
            next_request_id: Arc::new(AtomicU64::new(1)),
            shutdown_grace: Duration::from_secs(10),
            limits: HttpLimits::default(),
            guests: None,
            draining: None,
        })
    }

    pub fn with_limits(mut self, limits: HttpLimits) -> Self {
        self.limits = limits;
        self
    }

    /// How long in-flight requests may take to finish once shutdown starts.
    pub fn with_shutdown_grace(mut self, grace: Duration) -> Self {
        self.shutdown_grace = grace;
        self
    }

    /// Once the grace period is over, stop the guests of `runtime` that are still running
    /// ([`Runtime::stop_guests`]), whether their clients wait or went away unnoticed, and give
    /// their requests a moment to answer 503. Without it, a guest that computes for ever
    /// would keep the process alive.
    pub fn with_guests_of(mut self, runtime: Arc<Runtime>) -> Self {
        self.guests = Some(runtime);
        self
    }

    /// At shutdown, also start `draining` (a trigger stops taking work and waits for what it
    /// started), and stop the guests only once both it and the requests are over, or the
    /// grace period is.
    pub fn with_draining(mut self, draining: Draining) -> Self {
        self.draining = Some(draining);
        self
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves until `shutdown` resolves, then stops accepting and gives in-flight requests up
    /// to the grace period to finish.
    pub async fn serve(self, shutdown: impl Future<Output = ()>) -> std::io::Result<()> {
        let mut builder = auto::Builder::new(TokioExecutor::new());
        builder
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(self.limits.header_read_timeout)
            .max_headers(self.limits.max_headers)
            // hyper's read buffer bounds the request head; it refuses less than 8 KiB.
            .max_buf_size(self.limits.max_head_bytes.max(8192));
        builder
            .http2()
            .timer(TokioTimer::new())
            // The HTTP/2 twin of the HTTP/1 head limit: past it, h2 refuses the stream itself
            // (a 431, or a reset).
            .max_header_list_size(u32::try_from(self.limits.max_head_bytes).unwrap_or(u32::MAX));
        let limits = RequestLimits {
            max_body: self.limits.max_body_bytes,
            max_uri: self.limits.max_uri_bytes,
            max_headers: self.limits.max_headers,
            body_read_timeout: self.limits.body_read_timeout,
            body_min_rate: self.limits.body_min_rate,
        };
        let idle_limit = self.limits.header_read_timeout;
        let local_addr = self.listener.local_addr()?;
        // Every connection task holds a receiver: shutdown is a message to all of them, and
        // the sender learns when the last one has ended.
        let (stop, stopped) = tokio::sync::watch::channel(());
        tokio::pin!(shutdown);
        loop {
            let (stream, client) = tokio::select! {
                accepted = self.listener.accept() => match accepted {
                    Ok(pair) => pair,
                    Err(err) => {
                        // Out of file descriptors and the like: pause rather than spin.
                        tracing::warn!("accept failed: {err}");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
                () = &mut shutdown => break,
            };
            let _ = stream.set_nodelay(true);
            let apps = self.apps.clone();
            let ids = self.next_request_id.clone();
            let requests = Arc::new(ConnectionRequests::default());
            let service = service_fn({
                let requests = requests.clone();
                move |request: Request<Incoming>| {
                    requests.started(request.version());
                    let id = ids.fetch_add(1, Ordering::Relaxed);
                    let apps = apps.clone();
                    async move {
                        Ok::<_, Infallible>(
                            dispatch(&*apps, request, client, local_addr, id, limits).await,
                        )
                    }
                }
            });
            let connection = builder
                .serve_connection_with_upgrades(TokioIo::new(stream), service)
                .into_owned();
            let mut stopped = stopped.clone();
            tokio::spawn(async move {
                tokio::pin!(connection);
                let mut seen = 0;
                loop {
                    tokio::select! {
                        result = connection.as_mut() => {
                            if let Err(err) = result {
                                tracing::debug!(%client, "connection ended with an error: {err}");
                            }
                            return;
                        }
                        _ = stopped.changed() => break,
                        () = tokio::time::sleep(idle_limit) => {
                            // No request for a whole period: a connection that never sent one
                            // (hyper's HTTP/1 timer starts only once the protocol is known), or
                            // an HTTP/2 one that starts no more streams. Idle HTTP/1 ones are
                            // closed by hyper's own timer.
                            let now = requests.count();
                            if now == seen && (now == 0 || requests.is_http2()) {
                                tracing::debug!(%client, "closing a connection without requests");
                                break;
                            }
                            seen = now;
                        }
                    }
                }
                // Requests in flight finish; no new one is read.
                connection.as_mut().graceful_shutdown();
                if let Err(err) = connection.await {
                    tracing::debug!(%client, "connection ended with an error: {err}");
                }
                drop(stopped);
            });
        }
        drop(self.listener);
        drop(stopped);
        let open = stop.receiver_count();
        if open > 0 {
            tracing::info!("shutting down: waiting for {open} open connection(s)");
        }
        let _ = stop.send(());
        let draining = self.draining.map(|start| tokio::spawn(start()));
        let all_over = async {
            stop.closed().await;
            if let Some(draining) = draining {
                let _ = draining.await;
            }
        };
        let finished = tokio::time::timeout(self.shutdown_grace, all_over)
            .await
            .is_ok();
        if let Some(runtime) = &self.guests {
            runtime.stop_guests();
        }
        if !finished {
            tracing::warn!(
                "shutdown: {} connection(s) still open, or queue handlers still running, after \
                 {:?}; stopping their guests",
                stop.receiver_count(),
                self.shutdown_grace
            );
            // Guests that compute stop at their next epoch tick, and their requests answer
            // 503 at once; a guest waiting on the host (a response held open) does not, and
            // its connection is cut when the process ends.
            if self.guests.is_some() {
                let _ = tokio::time::timeout(STOPPED_ANSWER_WAIT, stop.closed()).await;
            }
        }
        Ok(())
    }
}

/// How long the requests of guests stopped at shutdown get to send their 503: ample for an
/// epoch tick and a write, short beside the grace period.
const STOPPED_ANSWER_WAIT: Duration = Duration::from_secs(1);

/// What a connection's service tells its watchdog: how many requests it has started, and
/// whether they came over HTTP/2. Plain atomics, per connection: one relaxed add per request.
#[derive(Default)]
struct ConnectionRequests {
    started: AtomicU64,
    http2: AtomicBool,
}

impl ConnectionRequests {
    fn started(&self, version: http::Version) {
        self.started.fetch_add(1, Ordering::Relaxed);
        if version == http::Version::HTTP_2 {
            self.http2.store(true, Ordering::Relaxed);
        }
    }

    fn count(&self) -> u64 {
        self.started.load(Ordering::Relaxed)
    }

    fn is_http2(&self) -> bool {
        self.http2.load(Ordering::Relaxed)
    }
}
