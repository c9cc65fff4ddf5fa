//! Upstreams: the HTTP services outside the app that routes send requests to (`[upstream.NAME]`),
//! such as a container beside the host. Each has a pool of kept-alive connections (hyper's
//! client), spreads requests round-robin over its addresses, leaves out an address that
//! refused a connection for a while (and, with `health_check`, one whose check fails), retries
//! what is safe to retry, and turns every failure into an answer: 502 when the upstream could
//! not be reached or broke off, 503 when no address is healthy, 504 when it did not answer in
//! time, each naming the request id. Nothing waits without a bound.
//!
//! A request reaches exactly the addresses the manifest names: its URI is built from the
//! upstream's address and the request's path, never from the request's own authority. The
//! addresses a name resolves to are checked against the host's outbound policy at connect time
//! ([`Destination`]), as a guest's requests are.
//!
//! `https://` addresses are spoken to over TLS (HTTP/1.1 by ALPN). The certificate is checked
//! against the URL's host, or `tls.server_name`, which is also what SNI sends, and against the
//! roots the runtime read at load: the manifest's `tls.ca`, or the public ones.

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock, Weak};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Request, Response, StatusCode, Uri};
use http_body_util::{BodyExt, Empty};
use hyper_rustls::{FixedServerNameResolver, HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::connect::dns::Name;
use hyper_util::rt::TokioExecutor;
use rustls::pki_types::ServerName;
use skiff_manifest::{HealthCheck, Upstream, UpstreamTls, UpstreamUrl};
use skiff_runtime::{Destination, LoadedApp, ResponseBody};
use wasmtime_wasi_http::{Error as ErrorCode, WasiBody};

use crate::metrics::{AppMetrics, UpstreamMetrics, UpstreamOutcome};
use crate::reply::plain;

/// How long an address that refused a connection is left out, when no health check says
/// otherwise.
const FAIL_TIMEOUT: Duration = Duration::from_secs(10);

/// Idle connections kept per address.
const MAX_IDLE_PER_ADDRESS: usize = 64;

/// How long an idle connection is kept.
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// The app's upstreams, in the order of `app.upstreams`.
pub(crate) struct Upstreams(Vec<Arc<Pool>>);

impl Upstreams {
    pub(crate) fn new(loaded: &LoadedApp) -> Upstreams {
        Upstreams(
            loaded
                .app()
                .upstreams
                .iter()
                .enumerate()
                .map(|(index, upstream)| Pool::new(loaded, index, upstream))
                .collect(),
        )
    }

    pub(crate) fn get(&self, index: usize) -> Option<&Arc<Pool>> {
        self.0.get(index)
    }

    /// Counts each upstream's requests in `metrics` from now on.
    pub(crate) fn count_in(&self, metrics: &AppMetrics) {
        for (index, pool) in self.0.iter().enumerate() {
            if let Some(upstream) = metrics.upstream(index) {
                let _ = pool.metrics.set(upstream.clone());
            }
        }
    }
}

/// One upstream: its addresses, its connection pool and its settings.
pub(crate) struct Pool {
    name: Arc<str>,
    addresses: Vec<Address>,
    /// Where the next request starts looking for an address.
    cursor: AtomicUsize,
    client: Client<HttpsConnector<HttpConnector<PolicyResolver>>, WasiBody>,
    connect_timeout: Duration,
    timeout: Duration,
    retries: u32,
    /// With active checks, an address is used only while its last check passed.
    checked: bool,
    /// What `Address::down_until` counts from.
    epoch: Instant,
    /// One permit per connection switched to WebSocket that may be open at once.
    websockets: Arc<tokio::sync::Semaphore>,
    websocket_limit: u32,
    websocket_idle_timeout: Duration,
    body_idle_timeout: Duration,
    /// Set once the app's metrics are made (after the pools).
    metrics: OnceLock<Arc<UpstreamMetrics>>,
}

struct Address {
    url: UpstreamUrl,
    authority: http::uri::Authority,
    /// Milliseconds since the pool's epoch until which the address is left out; 0 for never.
    down_until: AtomicU64,
    /// Its last health check passed (always true without checks).
    healthy: AtomicBool,
}

/// Who a forwarded request is for: what the upstream is told in `x-forwarded-*`.
pub(crate) struct Forwarded<'a> {
    pub request_id: u64,
    /// The client's address, if a client sent the request.
    pub client: Option<SocketAddr>,
    /// The authority the client asked for.
    pub host: Option<&'a HeaderValue>,
}

impl Pool {
    fn new(loaded: &LoadedApp, index: usize, upstream: &Upstream) -> Arc<Pool> {
        let addresses: Vec<Address> = upstream
            .urls
            .iter()
            .filter(|url| {
                // hyper connects to an address written as an IP without asking the resolver,
                // so those are checked here, once.
                let policy = loaded.destination(&url.host);
                let refused = url
                    .host
                    .parse::<IpAddr>()
                    .is_ok_and(|ip| !policy.admits(ip));
                if refused {
                    tracing::warn!(
                        app = %loaded.app().name, upstream = %upstream.name, address = %url,
                        "address left out: {}", policy.refusal()
                    );
                }
                !refused
            })
            .filter_map(|url| {
                let authority = authority_of(url)?;
                Some(Address {
                    url: url.clone(),
                    authority,
                    down_until: AtomicU64::new(0),
                    healthy: AtomicBool::new(true),
                })
            })
            .collect();
        let resolver = PolicyResolver {
            policies: upstream
                .urls
                .iter()
                .map(|url| (url.host.clone(), loaded.destination(&url.host)))
                .collect::<Vec<_>>()
                .into(),
            timeout: upstream.connect_timeout,
        };
        let mut connector = HttpConnector::new_with_resolver(resolver);
        connector.set_connect_timeout(Some(upstream.connect_timeout));
        connector.set_nodelay(true);
        // The TLS layer below takes `https://` URIs; plain HTTP ones pass through it.
        connector.enforce_http(false);
        let connector = tls_connector(loaded.upstream_tls(index), &upstream.tls, connector);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(IDLE_TIMEOUT)
            .pool_max_idle_per_host(MAX_IDLE_PER_ADDRESS)
            .build(connector);
        let pool = Arc::new(Pool {
            name: upstream.name.as_str().into(),
            addresses,
            cursor: AtomicUsize::new(0),
            client,
            connect_timeout: upstream.connect_timeout,
            timeout: upstream.timeout,
            retries: upstream.retries,
            checked: upstream.health_check.is_some(),
            epoch: Instant::now(),
            websockets: Arc::new(tokio::sync::Semaphore::new(
                upstream.websocket_limit as usize,
            )),
            websocket_limit: upstream.websocket_limit,
            websocket_idle_timeout: upstream.websocket_idle_timeout,
            body_idle_timeout: upstream.body_idle_timeout,
            metrics: OnceLock::new(),
        });
        if let Some(check) = &upstream.health_check {
            match tokio::runtime::Handle::try_current() {
                Ok(runtime) => {
                    runtime.spawn(health_checks(Arc::downgrade(&pool), check.clone()));
                }
                Err(_) => tracing::warn!(
                    upstream = %upstream.name,
                    "no async runtime to run health checks on: passive checks only"
                ),
            }
        }
        pool
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    /// The next address to try: round-robin over those that are up; when none is, the one
    /// that comes back soonest if only passive checks left them out (it may be back), or none
    /// when active checks say all are down.
    fn pick(&self, skip: Option<usize>) -> Option<usize> {
        let n = self.addresses.len();
        if n == 0 {
            return None;
        }
        let now = self.now_ms();
        let start = self.cursor.fetch_add(1, Ordering::Relaxed);
        let usable = |i: usize| {
            let address = &self.addresses[i];
            address.healthy.load(Ordering::Relaxed)
                && address.down_until.load(Ordering::Relaxed) <= now
        };
        let candidates = (0..n).map(|k| (start + k) % n);
        if let Some(i) = candidates.clone().find(|&i| usable(i) && Some(i) != skip) {
            return Some(i);
        }
        if let Some(i) = skip.filter(|&i| usable(i)) {
            return Some(i);
        }
        if self.checked {
            return None;
        }
        candidates.min_by_key(|&i| self.addresses[i].down_until.load(Ordering::Relaxed))
    }

    fn mark_down(&self, index: usize) {
        if let Some(address) = self.addresses.get(index) {
            let until = self.now_ms() + FAIL_TIMEOUT.as_millis() as u64;
            address.down_until.store(until, Ordering::Relaxed);
        }
    }

    /// Sends `request` to the upstream and returns its answer, or skiff's answer for a
    /// failure. The path and query are the request's, below the address's base path. With
    /// `upgrade`, the request asks the upstream to switch protocols (a WebSocket handshake);
    /// if it agrees, the client's connection and the upstream's are joined once the `101`
    /// is sent.
    pub(crate) async fn forward<B>(
        &self,
        request: Request<B>,
        forwarded: Forwarded<'_>,
        upgrade: Option<ClientUpgrade>,
    ) -> Response<ResponseBody>
    where
        B: hyper::body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<ErrorCode>,
    {
        let started = Instant::now();
        let (response, outcome) = self.send(request, forwarded, upgrade).await;
        if let (Some(metrics), Some(outcome)) = (self.metrics.get(), outcome) {
            metrics.record(outcome, started.elapsed().as_secs_f64());
        }
        response
    }

    /// [`Pool::forward`], and how it ended for the metrics (nothing for a request that never
    /// came near the upstream).
    async fn send<B>(
        &self,
        request: Request<B>,
        forwarded: Forwarded<'_>,
        upgrade: Option<ClientUpgrade>,
    ) -> (Response<ResponseBody>, Option<UpstreamOutcome>)
    where
        B: hyper::body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<ErrorCode>,
    {
        let request_id = forwarded.request_id;
        // A switched connection holds two sockets for as long as it lasts: the limit is taken
        // before the upstream hears of the handshake, and held until the connection closes.
        let upgrade = match upgrade {
            Some(upgrade) => match self.websockets.clone().try_acquire_owned() {
                Ok(permit) => Some((upgrade, permit)),
                Err(_) => {
                    tracing::warn!(
                        request_id, upstream = %self.name,
                        "WebSocket handshake refused: {} connections are open (websocket_limit)",
                        self.websocket_limit
                    );
                    let response =
                        too_many_websockets(&self.name, self.websocket_limit, request_id);
                    return (response, Some(UpstreamOutcome::WebsocketLimit));
                }
            },
            None => None,
        };
        let (mut parts, body) = request.into_parts();
        // Upstreams are spoken to in HTTP/1.1, whatever the client used.
        parts.version = http::Version::HTTP_11;
        prepare_headers(&mut parts.headers, &forwarded);
        if let Some((upgrade, _)) = &upgrade {
            parts
                .headers
                .insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
            parts
                .headers
                .insert(header::UPGRADE, upgrade.protocol.clone());
        }
        let path_and_query = match parts.uri.path_and_query() {
            Some(pq) if pq.as_str().starts_with('/') => pq.as_str().to_string(),
            Some(pq) => format!("/{}", pq.as_str()),
            None => "/".to_string(),
        };
        // A request without a body can be sent again; one with a body cannot (it streams).
        let replayable = body.is_end_stream();
        let idempotent = is_idempotent(&parts.method);
        let mut body = Some(body.map_err(Into::into).boxed_unsync());
        let mut tried = None;
        let mut attempt = 0;
        loop {
            let Some(index) = self.pick(tried) else {
                let why = if self.addresses.is_empty() {
                    "it has no address this host lets the app reach"
                } else {
                    "the health checks of all its addresses fail"
                };
                tracing::warn!(request_id, upstream = %self.name, "no healthy address: {why}");
                return (
                    unavailable(&self.name, request_id),
                    Some(UpstreamOutcome::Unavailable),
                );
            };
            tried = Some(index);
            let address = &self.addresses[index];
            let uri = match upstream_uri(address, &path_and_query) {
                Ok(uri) => uri,
                Err(()) => {
                    let response = plain(
                        StatusCode::BAD_REQUEST,
                        format!("malformed request path (request id {request_id})\n"),
                    );
                    return (response, None);
                }
            };
            let mut request = Request::from_parts(parts.clone(), ());
            *request.uri_mut() = uri;
            let body = match body.take() {
                Some(body) => body,
                None => empty_body(),
            };
            let sent = tokio::time::timeout(
                self.connect_timeout + self.timeout,
                self.client.request(request.map(|()| body)),
            )
            .await;
            let error = match sent {
                Ok(Ok(response)) if response.status() == StatusCode::SWITCHING_PROTOCOLS => {
                    let (response, outcome) = match upgrade {
                        Some((upgrade, permit)) => {
                            let switched = Switched {
                                request_id,
                                upstream: self.name.clone(),
                                idle_timeout: self.websocket_idle_timeout,
                                permit,
                            };
                            (
                                switch(response, upgrade, switched),
                                UpstreamOutcome::Answered(101),
                            )
                        }
                        None => {
                            tracing::warn!(
                                request_id, upstream = %self.name, address = %address.url,
                                "the upstream switched protocols unasked"
                            );
                            let response = bad_gateway(&self.name, request_id, false);
                            (response, UpstreamOutcome::Broken)
                        }
                    };
                    return (response, Some(outcome));
                }
                Ok(Ok(response)) => {
                    let status = response.status().as_u16();
                    let response = self.answer(response, request_id);
                    return (response, Some(UpstreamOutcome::Answered(status)));
                }
                Ok(Err(error)) => error,
                Err(_) => {
                    tracing::warn!(
                        request_id, upstream = %self.name, address = %address.url,
                        "the upstream did not answer within {:?}", self.timeout
                    );
                    let response = gateway_timeout(&self.name, request_id);
                    return (response, Some(UpstreamOutcome::Timeout));
                }
            };
            let connect_failed = error.is_connect();
            if connect_failed {
                self.mark_down(index);
            }
            let may_retry = replayable && (connect_failed || idempotent);
            attempt += 1;
            let detail = describe(&error);
            if may_retry && attempt <= self.retries {
                tracing::info!(
                    request_id, upstream = %self.name, address = %address.url,
                    "{detail}: trying again ({attempt} of {})", self.retries
                );
                continue;
            }
            tracing::warn!(
                request_id, upstream = %self.name, address = %address.url,
                "{detail}"
            );
            let outcome = if connect_failed {
                UpstreamOutcome::Unreachable
            } else {
                UpstreamOutcome::Broken
            };
            return (
                bad_gateway(&self.name, request_id, connect_failed),
                Some(outcome),
            );
        }
    }
}

/// A client's request to switch protocols: the protocol (`websocket`), and its connection,
/// to be taken over once the answer is `101`.
pub(crate) struct ClientUpgrade {
    pub protocol: HeaderValue,
    pub connection: hyper::upgrade::OnUpgrade,
}

impl ClientUpgrade {
    /// The upgrade a client's request asks for (`Connection: upgrade` and `Upgrade`), taken
    /// out of it; `None` for an ordinary request.
    pub(crate) fn take<B>(request: &mut Request<B>) -> Option<ClientUpgrade> {
        let asks =
            connection_tokens(request.headers()).any(|token| token.eq_ignore_ascii_case("upgrade"));
        let protocol = request.headers().get(header::UPGRADE)?.clone();
        if !asks {
            return None;
        }
        let connection = request
            .extensions_mut()
            .remove::<hyper::upgrade::OnUpgrade>()?;
        Some(ClientUpgrade {
            protocol,
            connection,
        })
    }
}

/// A connection being switched to another protocol: what it is, how long it may stay silent,
/// and its place under the upstream's `websocket_limit` (given back when it closes).
struct Switched {
    request_id: u64,
    upstream: Arc<str>,
    idle_timeout: Duration,
    permit: tokio::sync::OwnedSemaphorePermit,
}

/// The upstream agreed to switch protocols: the client gets its `101` (with the `Upgrade` and
/// `Connection` that say so), and once both sides have switched, a task copies bytes both
/// ways until either closes, or until no byte has moved for the idle timeout.
fn switch(
    mut response: Response<hyper::body::Incoming>,
    client: ClientUpgrade,
    switched: Switched,
) -> Response<ResponseBody> {
    let upstream = hyper::upgrade::on(&mut response);
    tokio::spawn(async move {
        let Switched {
            request_id,
            upstream: name,
            idle_timeout,
            permit,
        } = switched;
        match tokio::try_join!(client.connection, upstream) {
            Ok((client, upstream)) => {
                let moved = Arc::new(Activity::new());
                let mut client = Active::new(hyper_util::rt::TokioIo::new(client), &moved);
                let mut upstream = Active::new(hyper_util::rt::TokioIo::new(upstream), &moved);
                let mut copy = Box::pin(tokio::io::copy_bidirectional(&mut client, &mut upstream));
                loop {
                    let silent_for = moved.silent_for();
                    if silent_for >= idle_timeout {
                        tracing::debug!(
                            request_id, upstream = %name,
                            "switched connection closed: nothing moved for {idle_timeout:?}"
                        );
                        break;
                    }
                    tokio::select! {
                        copied = &mut copy => {
                            match copied {
                                Ok((up, down)) => tracing::debug!(
                                    request_id, upstream = %name,
                                    "switched connection closed after {up} bytes up, {down} down"
                                ),
                                Err(error) => tracing::debug!(
                                    request_id, upstream = %name,
                                    "switched connection broke off: {error}"
                                ),
                            }
                            break;
                        }
                        () = tokio::time::sleep(idle_timeout - silent_for) => {}
                    }
                }
                // The place under the limit is given back before the sockets close, so a
                // client that saw its connection end may open the next one at once.
                drop(copy);
                drop(permit);
                drop((client, upstream));
            }
            Err(error) => tracing::warn!(
                request_id, upstream = %name, "switching protocols failed: {error}"
            ),
        }
    });
    let (mut parts, _) = response.into_parts();
    let protocol = parts.headers.get(header::UPGRADE).cloned();
    remove_hop_by_hop(&mut parts.headers);
    parts
        .headers
        .insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    if let Some(protocol) = protocol {
        parts.headers.insert(header::UPGRADE, protocol);
    }
    Response::from_parts(parts, empty_body())
}

/// When bytes last moved on a switched connection, either way.
struct Activity {
    started: Instant,
    /// Milliseconds since `started`.
    last: AtomicU64,
}

impl Activity {
    fn new() -> Activity {
        Activity {
            started: Instant::now(),
            last: AtomicU64::new(0),
        }
    }

    fn touch(&self) {
        let now = self.started.elapsed().as_millis() as u64;
        self.last.store(now, Ordering::Relaxed);
    }

    fn silent_for(&self) -> Duration {
        let last = Duration::from_millis(self.last.load(Ordering::Relaxed));
        self.started.elapsed().saturating_sub(last)
    }
}

/// One side of a switched connection, noting in its [`Activity`] every read and write that
/// moves bytes.
struct Active<T> {
    io: T,
    activity: Arc<Activity>,
}

impl<T> Active<T> {
    fn new(io: T, activity: &Arc<Activity>) -> Active<T> {
        Active {
            io,
            activity: activity.clone(),
        }
    }
}

impl<T: tokio::io::AsyncRead + Unpin> tokio::io::AsyncRead for Active<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.io).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.activity.touch();
        }
        polled
    }
}

impl<T: tokio::io::AsyncWrite + Unpin> tokio::io::AsyncWrite for Active<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let polled = Pin::new(&mut self.io).poll_write(cx, buf);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        polled
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

impl Pool {
    /// The upstream's answer, its hop-by-hop headers removed, its body cut off if it stalls
    /// for longer than `body_idle_timeout`.
    fn answer(
        &self,
        response: Response<hyper::body::Incoming>,
        request_id: u64,
    ) -> Response<ResponseBody> {
        let (mut parts, body) = response.into_parts();
        remove_hop_by_hop(&mut parts.headers);
        let body = StallBound {
            inner: body.map_err(ErrorCode::from),
            idle: self.body_idle_timeout,
            deadline: None,
            armed: false,
            cut: false,
            request_id,
            upstream: self.name.clone(),
        };
        Response::from_parts(parts, body.boxed_unsync())
    }
}

/// A response body that fails with `ConnectionReadTimeout` when no frame comes for `idle`:
/// the client then sees the response cut off, and the upstream's connection is dropped, not
/// kept for another request. The timer is set only when the body has to wait, from that
/// moment: a body whose frames are there when asked for (most small answers) costs no timer.
struct StallBound<B> {
    inner: B,
    idle: Duration,
    deadline: Option<Pin<Box<tokio::time::Sleep>>>,
    /// The deadline runs for the current wait.
    armed: bool,
    cut: bool,
    request_id: u64,
    upstream: Arc<str>,
}

impl<B> hyper::body::Body for StallBound<B>
where
    B: hyper::body::Body<Data = Bytes, Error = ErrorCode> + Unpin,
{
    type Data = Bytes;
    type Error = ErrorCode;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<hyper::body::Frame<Bytes>, ErrorCode>>> {
        let this = &mut *self;
        if this.cut {
            return Poll::Ready(None);
        }
        if let Poll::Ready(frame) = Pin::new(&mut this.inner).poll_frame(cx) {
            this.armed = false;
            return Poll::Ready(frame);
        }
        let deadline = match &mut this.deadline {
            Some(deadline) if this.armed => deadline,
            Some(deadline) => {
                deadline
                    .as_mut()
                    .reset(tokio::time::Instant::now() + this.idle);
                deadline
            }
            None => this
                .deadline
                .insert(Box::pin(tokio::time::sleep(this.idle))),
        };
        this.armed = true;
        match deadline.as_mut().poll(cx) {
            Poll::Ready(()) => {
                this.cut = true;
                tracing::warn!(
                    request_id = this.request_id, upstream = %this.upstream,
                    "response body cut off: nothing came for {:?} (body_idle_timeout)", this.idle
                );
                Poll::Ready(Some(Err(ErrorCode::ConnectionReadTimeout)))
            }
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.cut || self.inner.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}

fn empty_body() -> WasiBody {
    Empty::<Bytes>::new()
        .map_err(|never| match never {})
        .boxed_unsync()
}

fn bad_gateway(name: &str, request_id: u64, connect_failed: bool) -> Response<ResponseBody> {
    let what = if connect_failed {
        "could not be reached"
    } else {
        "broke off the connection before answering"
    };
    plain(
        StatusCode::BAD_GATEWAY,
        format!("Bad Gateway: upstream `{name}` {what} (request id {request_id})\n"),
    )
}

fn gateway_timeout(name: &str, request_id: u64) -> Response<ResponseBody> {
    plain(
        StatusCode::GATEWAY_TIMEOUT,
        format!(
            "Gateway Timeout: upstream `{name}` did not answer in time (request id {request_id})\n"
        ),
    )
}

fn too_many_websockets(name: &str, limit: u32, request_id: u64) -> Response<ResponseBody> {
    let mut response = plain(
        StatusCode::SERVICE_UNAVAILABLE,
        format!(
            "Service Unavailable: upstream `{name}` has {limit} WebSocket connections open, its \
             websocket_limit (request id {request_id})\n"
        ),
    );
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    response
}

fn unavailable(name: &str, request_id: u64) -> Response<ResponseBody> {
    let mut response = plain(
        StatusCode::SERVICE_UNAVAILABLE,
        format!(
            "Service Unavailable: upstream `{name}` has no healthy address (request id {request_id})\n"
        ),
    );
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    response
}

/// What went wrong, for the log: hyper's error with its causes.
fn describe(error: &hyper_util::client::legacy::Error) -> String {
    let mut text = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

fn is_idempotent(method: &http::Method) -> bool {
    use http::Method;
    [
        Method::GET,
        Method::HEAD,
        Method::OPTIONS,
        Method::PUT,
        Method::DELETE,
        Method::TRACE,
    ]
    .contains(method)
}

/// `http` wrapped in TLS for `https://` URIs (the upstream's `https://` addresses) with
/// `config`, checking the certificate for `tls.server_name` in place of the URL's host if set.
fn tls_connector(
    config: Arc<rustls::ClientConfig>,
    tls: &UpstreamTls,
    http: HttpConnector<PolicyResolver>,
) -> HttpsConnector<HttpConnector<PolicyResolver>> {
    let builder = HttpsConnectorBuilder::new()
        .with_tls_config(Arc::unwrap_or_clone(config))
        .https_or_http();
    let server_name = tls
        .server_name
        .as_deref()
        .and_then(|name| ServerName::try_from(name.to_string()).ok());
    let builder = match server_name {
        Some(name) => builder.with_server_name_resolver(FixedServerNameResolver::new(name)),
        None => builder,
    };
    builder.enable_http1().wrap_connector(http)
}

fn authority_of(url: &UpstreamUrl) -> Option<http::uri::Authority> {
    let text = if url.host.contains(':') {
        format!("[{}]:{}", url.host, url.port)
    } else {
        format!("{}:{}", url.host, url.port)
    };
    text.parse().ok()
}

/// `http[s]://ADDRESS/BASE/PATH?QUERY`: built from its parts, so nothing in the request's
/// path can change where it goes.
fn upstream_uri(address: &Address, path_and_query: &str) -> Result<Uri, ()> {
    let base = &address.url.base_path;
    let path = if base.is_empty() {
        path_and_query.to_string()
    } else {
        format!("{base}{path_and_query}")
    };
    Uri::builder()
        .scheme(if address.url.tls { "https" } else { "http" })
        .authority(address.authority.clone())
        .path_and_query(path)
        .build()
        .map_err(drop)
}

/// The comma-separated tokens of every `Connection` header (RFC 9110, 7.6.1), trimmed: the
/// options of this connection and the names of its other hop-by-hop fields.
fn connection_tokens(headers: &HeaderMap) -> impl Iterator<Item = &str> {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
}

/// Headers that describe one connection, not the message (RFC 9110, 7.6.1): never forwarded.
const HOP_BY_HOP: [HeaderName; 8] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
];

fn remove_hop_by_hop(headers: &mut HeaderMap) {
    // Fields named in `Connection` are hop-by-hop too.
    let named: Vec<HeaderName> = connection_tokens(headers)
        .filter_map(|name| HeaderName::from_bytes(name.as_bytes()).ok())
        .collect();
    for name in named.iter().chain(&HOP_BY_HOP) {
        headers.remove(name);
    }
    headers.remove(header::UPGRADE);
}

/// The request's headers as the upstream gets them: hop-by-hop ones and skiff's own
/// (`skiff-*`, meant for guests) removed except the request id, and `x-forwarded-*` added.
fn prepare_headers(headers: &mut HeaderMap, forwarded: &Forwarded<'_>) {
    remove_hop_by_hop(headers);
    let skiff: Vec<HeaderName> = headers
        .keys()
        .filter(|name| name.as_str().starts_with("skiff-") && *name != crate::REQUEST_ID)
        .cloned()
        .collect();
    for name in skiff {
        headers.remove(name);
    }
    if let Ok(value) = HeaderValue::from_str(&forwarded.request_id.to_string()) {
        headers.insert(crate::REQUEST_ID, value);
    }
    if let Some(client) = forwarded.client {
        let ip = client.ip().to_string();
        let value = match headers.get(X_FORWARDED_FOR).and_then(|v| v.to_str().ok()) {
            Some(earlier) => format!("{earlier}, {ip}"),
            None => ip,
        };
        if let Ok(value) = HeaderValue::from_str(&value) {
            headers.insert(X_FORWARDED_FOR, value);
        }
        headers.insert(X_FORWARDED_PROTO, HeaderValue::from_static("http"));
        if let Some(host) = forwarded.host {
            headers.insert(X_FORWARDED_HOST, host.clone());
        }
    }
}

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");

/// Resolves an upstream's host names and keeps only the addresses the host's outbound policy
/// lets the app reach, so that a name cannot lead to the host's own or its link's addresses
/// (cloud metadata) unless the manifest wrote them literally.
#[derive(Clone)]
struct PolicyResolver {
    /// Each address's host and its policy.
    policies: Arc<[(String, Destination)]>,
    timeout: Duration,
}

type Resolving =
    Pin<Box<dyn Future<Output = Result<std::vec::IntoIter<SocketAddr>, std::io::Error>> + Send>>;

impl tower_service::Service<Name> for PolicyResolver {
    type Response = std::vec::IntoIter<SocketAddr>;
    type Error = std::io::Error;
    type Future = Resolving;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, name: Name) -> Self::Future {
        let policies = self.policies.clone();
        let timeout = self.timeout;
        Box::pin(async move {
            let host = name.as_str();
            let refused =
                |why: String| std::io::Error::new(std::io::ErrorKind::PermissionDenied, why);
            let Some(policy) = policies
                .iter()
                .find(|(h, _)| h.eq_ignore_ascii_case(host))
                .map(|(_, policy)| *policy)
            else {
                return Err(refused(format!("{host} is no address of this upstream")));
            };
            let resolved: Vec<SocketAddr> = match host.parse::<IpAddr>() {
                Ok(ip) => vec![SocketAddr::new(ip, 0)],
                Err(_) => tokio::time::timeout(timeout, tokio::net::lookup_host((host, 0)))
                    .await
                    .map_err(|_| {
                        std::io::Error::new(std::io::ErrorKind::TimedOut, "name lookup timed out")
                    })??
                    .collect(),
            };
            let admitted: Vec<SocketAddr> = resolved
                .iter()
                .copied()
                .filter(|addr| policy.admits(addr.ip()))
                .collect();
            if admitted.is_empty() {
                let at = resolved
                    .first()
                    .map(|a| a.ip().to_string())
                    .unwrap_or_default();
                return Err(refused(format!(
                    "{host} is at {at}, which the app may not reach: {}",
                    policy.refusal()
                )));
            }
            Ok(admitted.into_iter())
        })
    }
}

/// Checks every address of an upstream each `check.interval` until the upstream is gone:
/// a 2xx or 3xx answer to `GET check.path` within `check.timeout` marks it healthy, anything
/// else unhealthy. Changes are logged.
async fn health_checks(pool: Weak<Pool>, check: HealthCheck) {
    let mut ticks = tokio::time::interval(check.interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        let Some(pool) = pool.upgrade() else {
            return;
        };
        for address in &pool.addresses {
            let healthy = probe(&pool, address, &check).await;
            let was = address.healthy.swap(healthy.is_ok(), Ordering::Relaxed);
            match (&healthy, was) {
                (Ok(()), false) => tracing::info!(
                    upstream = %pool.name, address = %address.url, "health check passes again"
                ),
                (Err(why), true) => tracing::warn!(
                    upstream = %pool.name, address = %address.url,
                    "health check failed, address left out: {why}"
                ),
                _ => {}
            }
        }
    }
}

async fn probe(pool: &Pool, address: &Address, check: &HealthCheck) -> Result<(), String> {
    let uri = upstream_uri(address, &check.path).map_err(|()| "malformed path".to_string())?;
    let mut request = Request::new(empty_body());
    *request.uri_mut() = uri;
    match tokio::time::timeout(check.timeout, pool.client.request(request)).await {
        Err(_) => Err(format!("no answer within {:?}", check.timeout)),
        Ok(Err(error)) => Err(describe(&error)),
        Ok(Ok(response)) => {
            let status = response.status();
            // The body is read so that the connection can be kept.
            let _ = response.into_body().collect().await;
            if status.is_success() || status.is_redirection() {
                Ok(())
            } else {
                Err(format!("answered {status}"))
            }
        }
    }
}
