//! The inbound HTTP trigger: a listener that routes each request to a component of a loaded
//! app and answers with what the component answers. It owns what happens before and after the
//! guest runs (routing, the `skiff-*` request headers, status codes for failures, graceful
//! shutdown); the runtime owns the sandbox.
//!
//! Headers skiff sets on every request it passes to a guest (any a client sent with these
//! names are removed first, so a guest can trust them):
//!
//! | header | value |
//! |---|---|
//! | `skiff-matched-route` | the route as written in the manifest, e.g. `/api/...` |
//! | `skiff-path-info` | the path after the route's prefix, e.g. `/users/1`; empty for an exact route |
//! | `skiff-component` | the id of the component serving the request |
//! | `skiff-client-addr` | the client's socket address, e.g. `127.0.0.1:51234` |
//! | `skiff-request-id` | the request's id, as in skiff's log lines |
//! | `skiff-base-path` | when the app was chosen by a path prefix (`skiff server --path-routing`), that prefix, e.g. `/hello`; the path the guest sees is below it |
//! | `traceparent` | the request's place in its W3C trace: the client's trace continued, or a new one; when skiff records spans, its parent is the request's span |
//!
//! Every request is a server span when traces are exported ([`skiff_runtime::trace`]), named
//! after its route (`GET /api/...`), with the guest's stages below it.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{HOST, HeaderName, HeaderValue};
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use opentelemetry::KeyValue;
use opentelemetry::trace::SpanKind;
use skiff_manifest::RouteTable;
use skiff_runtime::{InvokeError, LoadedApp, RequestInfo, ResponseBody, Runtime, TraceContext};
use tokio::net::TcpListener;

mod metrics;
pub use metrics::{AppMetrics, HttpMetrics, serve_metrics};

pub const MATCHED_ROUTE: HeaderName = HeaderName::from_static("skiff-matched-route");
pub const PATH_INFO: HeaderName = HeaderName::from_static("skiff-path-info");
pub const COMPONENT: HeaderName = HeaderName::from_static("skiff-component");
pub const CLIENT_ADDR: HeaderName = HeaderName::from_static("skiff-client-addr");
pub const REQUEST_ID: HeaderName = HeaderName::from_static("skiff-request-id");
pub const BASE_PATH: HeaderName = HeaderName::from_static("skiff-base-path");

/// Limits on what a client may send, applied before any guest runs, alike over HTTP/1 and
/// HTTP/2.
#[derive(Debug, Clone)]
pub struct HttpLimits {
    /// Largest request body; a larger declared `content-length` gets 413 at once, and a
    /// streamed body that grows past it is cut off.
    pub max_body_bytes: u64,
    /// Most header fields in one request; more get 431.
    pub max_headers: usize,
    /// Largest request head in bytes: request line plus headers for HTTP/1 (431 past it), the
    /// header list as RFC 9113 counts it for HTTP/2 (431, or the stream reset).
    pub max_head_bytes: usize,
    /// Longest request target (path and query) in bytes; longer gets 414. Paths end up in
    /// headers handed to the guest and in log lines, so they are kept to a sane size.
    pub max_uri_bytes: usize,
    /// Time a client has to send its whole request head, so a slow client cannot hold a
    /// connection open forever. It also bounds how long a connection may stay open without
    /// a request: a new one until its first request (either protocol), an idle HTTP/1 one
    /// between requests (hyper's own timer), and an HTTP/2 one that starts no new stream for
    /// that long (it is told to go away; streams still running finish).
    pub header_read_timeout: Duration,
    /// Longest wait for the next piece of a request body once the guest reads it. Past it the
    /// guest's read fails (`connection-read-timeout`), so a client that stalls its upload
    /// cannot hold an instance until the guest's deadline.
    pub body_read_timeout: Duration,
    /// Slowest average rate a request body may arrive at, in bytes per second, once the first
    /// `body_read_timeout` has passed: a client that dribbles a byte now and then defeats the
    /// wait between pieces, not this. Zero turns the check off.
    pub body_min_rate: u64,
}

impl Default for HttpLimits {
    fn default() -> Self {
        HttpLimits {
            max_body_bytes: 128 << 20,
            max_headers: 100,
            max_head_bytes: 64 << 10,
            max_uri_bytes: 16 << 10,
            header_read_timeout: Duration::from_secs(10),
            body_read_timeout: Duration::from_secs(10),
            body_min_rate: 1024,
        }
    }
}

/// An app as the HTTP trigger sees it: loaded components and the table that routes to them.
pub struct HttpApp {
    loaded: LoadedApp,
    routes: RouteTable,
    metrics: Option<AppMetrics>,
    /// The tenant the app belongs to, for its spans; empty for none.
    tenant: Arc<str>,
}

impl HttpApp {
    pub fn new(loaded: LoadedApp) -> Self {
        let routes = RouteTable::new(&loaded.app);
        HttpApp {
            loaded,
            routes,
            metrics: None,
            tenant: "".into(),
        }
    }

    /// Counts the app's requests in `metrics`, under `tenant` (empty for none).
    pub fn with_metrics(mut self, metrics: &HttpMetrics, tenant: &str) -> Self {
        self.metrics = Some(metrics.for_app(tenant, &self.loaded.app));
        self.tenant = tenant.into();
        self
    }

    pub fn loaded(&self) -> &LoadedApp {
        &self.loaded
    }
}

/// Chooses the app that serves a request: one app for everything (`skiff up`), or one of
/// many by host name (`skiff server`). It runs on every request, after the size checks and
/// before routing, so it must be quick; it may load an app that is not in memory.
pub trait AppSource: Send + Sync + 'static {
    /// The app for `request`, or the response to send instead (e.g. 404 for an unknown
    /// host). The app is held until the guest has answered, so swapping in a new version
    /// lets requests already running finish on the old one.
    fn select(
        &self,
        request: &Request<Incoming>,
    ) -> impl Future<Output = Result<Selected, Response<ResponseBody>>> + Send;
}

/// The app chosen for a request, and how much of the path chose it.
pub struct Selected {
    pub app: Arc<HttpApp>,
    /// Bytes at the start of the path that named the app (`/hello` of `/hello/api/x`), to be
    /// removed before routing: the app sees the path below its base path. Zero when the host
    /// name chose the app.
    pub base_path_len: usize,
}

/// One app that serves every request, whatever its host name.
pub struct SingleApp(pub Arc<HttpApp>);

impl AppSource for SingleApp {
    async fn select(
        &self,
        _request: &Request<Incoming>,
    ) -> Result<Selected, Response<ResponseBody>> {
        Ok(Selected {
            app: self.0.clone(),
            base_path_len: 0,
        })
    }
}

/// A bound listener, ready to serve. Binding is separate from serving so that the caller can
/// print the real address (when port 0 was asked for) before the first request.
pub struct Server<S: AppSource = SingleApp> {
    listener: TcpListener,
    apps: Arc<S>,
    next_request_id: Arc<AtomicU64>,
    shutdown_grace: Duration,
    limits: HttpLimits,
    /// The runtime whose guests are stopped once the grace period is over.
    guests: Option<Arc<Runtime>>,
}

impl Server<SingleApp> {
    pub async fn bind(addr: SocketAddr, app: HttpApp) -> std::io::Result<Server<SingleApp>> {
        Server::bind_source(addr, SingleApp(Arc::new(app))).await
    }
}

impl<S: AppSource> Server<S> {
    /// A listener whose requests go to the apps `apps` selects.
    pub async fn bind_source(addr: SocketAddr, apps: S) -> std::io::Result<Server<S>> {
        let listener = TcpListener::bind(addr).await?;
        Ok(Server {
            listener,
            apps: Arc::new(apps),
            next_request_id: Arc::new(AtomicU64::new(1)),
            shutdown_grace: Duration::from_secs(10),
            limits: HttpLimits::default(),
            guests: None,
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
        let finished = tokio::time::timeout(self.shutdown_grace, stop.closed())
            .await
            .is_ok();
        if let Some(runtime) = &self.guests {
            runtime.stop_guests();
        }
        if !finished {
            tracing::warn!(
                "shutdown: {} connection(s) still open after {:?}; stopping their guests",
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

/// The per-request checks of [`HttpLimits`] (the rest are enforced by hyper).
#[derive(Debug, Clone, Copy)]
struct RequestLimits {
    max_body: u64,
    max_uri: usize,
    max_headers: usize,
    body_read_timeout: Duration,
    body_min_rate: u64,
}

async fn dispatch(
    apps: &impl AppSource,
    mut request: Request<Incoming>,
    client: SocketAddr,
    local_addr: SocketAddr,
    request_id: u64,
    limits: RequestLimits,
) -> Response<ResponseBody> {
    let arrived = Instant::now();
    let RequestLimits {
        max_body,
        max_uri,
        max_headers,
        body_read_timeout,
        body_min_rate,
    } = limits;
    // hyper counts HTTP/1 header lines itself; HTTP/2 has no such limit of its own.
    if request.headers().len() > max_headers {
        tracing::debug!(
            request_id,
            "request with over {max_headers} header fields refused"
        );
        return plain(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            format!("more header fields than the limit of {max_headers}\n"),
        );
    }
    if target_length(request.uri()) > max_uri {
        tracing::debug!(request_id, "request target over {max_uri} bytes refused");
        return plain(
            StatusCode::URI_TOO_LONG,
            format!("request target (path and query) longer than the limit of {max_uri} bytes\n"),
        );
    }
    if declared_length(&request).is_some_and(|length| length > max_body) {
        tracing::debug!(request_id, "request body over {max_body} bytes refused");
        return plain(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("request body larger than the limit of {max_body} bytes\n"),
        );
    }
    let (app, base_path) = match apps.select(&request).await {
        Ok(Selected {
            app,
            base_path_len: 0,
        }) => (app, None),
        Ok(Selected { app, base_path_len }) => match strip_base_path(&mut request, base_path_len) {
            Some(base_path) => (app, Some(base_path)),
            None => return plain(StatusCode::BAD_REQUEST, "malformed request path\n".into()),
        },
        Err(response) => return response,
    };
    let path = request.uri().path();
    let Some(matched) = app.routes.lookup(path) else {
        tracing::debug!(request_id, %path, "no route matches");
        return plain(StatusCode::NOT_FOUND, format!("no route matches {path}\n"));
    };
    let component = &app.loaded.components[matched.component];
    let metrics = app.metrics.as_ref().and_then(|m| m.route(matched.route));
    let trace = TraceContext::inbound(request.headers()).child(SpanKind::Server, || {
        let mut attributes = vec![
            KeyValue::new("http.request.method", request.method().to_string()),
            KeyValue::new("http.route", matched.matched_route.to_string()),
            KeyValue::new("url.path", path.to_string()),
            KeyValue::new("client.address", client.ip().to_string()),
            KeyValue::new("skiff.app", component.app.to_string()),
            KeyValue::new("skiff.component", component.id.to_string()),
            KeyValue::new("skiff.request_id", request_id as i64),
        ];
        if !app.tenant.is_empty() {
            attributes.push(KeyValue::new("skiff.tenant", app.tenant.to_string()));
        }
        let name = format!("{} {}", request.method(), matched.matched_route);
        (name.into(), attributes)
    });
    let trace_id = trace.trace_id();
    let _in_flight = metrics.map(|m| m.start());
    // Values are made before the headers are touched: the match borrows the request's path.
    let matched_route = HeaderValue::from_str(matched.matched_route);
    let path_info = HeaderValue::from_str(matched.path_info);

    let headers = request.headers_mut();
    // Names are stored lower-case, so a prefix test on the string catches every spelling.
    let spoofed: Vec<HeaderName> = headers
        .keys()
        .filter(|name| name.as_str().starts_with("skiff-"))
        .cloned()
        .collect();
    for name in spoofed {
        headers.remove(name);
    }
    let set = |headers: &mut http::HeaderMap, name: HeaderName, value: &str| {
        if let Ok(value) = HeaderValue::from_str(value) {
            headers.insert(name, value);
        }
    };
    if let Ok(value) = matched_route {
        headers.insert(MATCHED_ROUTE, value);
    }
    if let Ok(value) = path_info {
        headers.insert(PATH_INFO, value);
    }
    if let Some(base_path) = base_path {
        headers.insert(BASE_PATH, base_path);
    }
    set(headers, COMPONENT, &component.id);
    set(headers, CLIENT_ADDR, &client.to_string());
    set(headers, REQUEST_ID, &request_id.to_string());
    // The guest sees the request's own span as its parent, to continue the trace from.
    trace.inject(headers);
    // HTTP/1.0 clients may send no Host; wasi:http needs an authority.
    if !headers.contains_key(HOST) && request.uri().authority().is_none() {
        set(request.headers_mut(), HOST, &local_addr.to_string());
    }

    let method = request.method().clone();
    let info = RequestInfo {
        request_id,
        https: false,
        trace: trace.clone(),
    };
    // A body without a declared length is counted as it streams, and cut off at the limit;
    // one that stops arriving fails the guest's read instead of holding its instance.
    let request = request.map(|body| {
        BodyReadTimeout::new(
            Limited::new(body, max_body as usize).map_err(body_error),
            body_read_timeout,
            body_min_rate,
            request_id,
        )
    });
    match component.handle_http(request, info).await {
        Ok(response) => {
            if let Some(metrics) = metrics {
                metrics.answered(response.status().as_u16(), arrived.elapsed().as_secs_f64());
            }
            tracing::debug!(
                request_id, %trace_id, app = %component.app, component = %component.id,
                %method, status = response.status().as_u16(), "served"
            );
            record_outcome(&trace, response.status(), None);
            if !trace.is_recording() {
                return response;
            }
            // The request's span ends with its response body, which the guest may still be
            // writing: the body holds the span until it is done.
            response.map(|body| {
                body.map_frame(move |frame| {
                    let _span = &trace;
                    frame
                })
                .boxed_unsync()
            })
        }
        Err(err) => {
            let status = status_for(&err);
            if let Some(metrics) = metrics {
                metrics.failed(&err);
                metrics.answered(status.as_u16(), arrived.elapsed().as_secs_f64());
            }
            tracing::warn!(
                request_id, %trace_id, app = %component.app, component = %component.id,
                %method, status = status.as_u16(), "request failed: {err}"
            );
            record_outcome(&trace, status, Some(&err));
            // The body names the request id so an operator can find the log line; details
            // of the failure stay in the log, away from clients.
            let mut response = plain(
                status,
                format!(
                    "{}: {} (request id {request_id})\n",
                    status.canonical_reason().unwrap_or("error"),
                    short_reason(&err)
                ),
            );
            if status == StatusCode::SERVICE_UNAVAILABLE {
                // Admission limits free up as soon as a request ends: retrying soon is right.
                response
                    .headers_mut()
                    .insert(http::header::RETRY_AFTER, HeaderValue::from_static("1"));
            }
            response
        }
    }
}

/// Records the outcome on the request's span. Only a 5xx is an error of the server's.
fn record_outcome(trace: &TraceContext, status: StatusCode, err: Option<&InvokeError>) {
    if !trace.is_recording() {
        return;
    }
    trace.set_attribute(KeyValue::new(
        "http.response.status_code",
        i64::from(status.as_u16()),
    ));
    if status.is_server_error() {
        trace.set_error(match err {
            Some(err) => err.to_string(),
            None => format!("the component answered {status}"),
        });
    }
}

/// Removes the base path that chose the app from the request's path, so that the app routes
/// and sees paths as it would at a host of its own; returns the base path, which the guest
/// gets in `skiff-base-path` (to build links with). `None` if the path cannot be split there.
fn strip_base_path(request: &mut Request<Incoming>, len: usize) -> Option<HeaderValue> {
    let uri = request.uri();
    let path_and_query = uri.path_and_query().map_or("/", |pq| pq.as_str());
    let (base, rest) = path_and_query.split_at_checked(len)?;
    let rest = if rest.starts_with('/') {
        rest.to_string()
    } else {
        format!("/{rest}")
    };
    let mut parts = uri.clone().into_parts();
    parts.path_and_query = Some(rest.parse().ok()?);
    let base = HeaderValue::from_str(base).ok()?;
    *request.uri_mut() = http::Uri::from_parts(parts).ok()?;
    Some(base)
}

/// Bytes of the request target as the client sent it (origin form, or absolute form).
fn target_length(uri: &http::Uri) -> usize {
    let path_and_query = uri.path_and_query().map_or(0, |pq| pq.as_str().len());
    let scheme = uri.scheme_str().map_or(0, |s| s.len() + 3);
    let authority = uri.authority().map_or(0, |a| a.as_str().len());
    scheme + authority + path_and_query
}

fn declared_length<B>(request: &Request<B>) -> Option<u64> {
    request
        .headers()
        .get(http::header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .parse()
        .ok()
}

fn body_error(err: Box<dyn std::error::Error + Send + Sync>) -> wasmtime_wasi_http::Error {
    if err.is::<LengthLimitError>() {
        return wasmtime_wasi_http::Error::HttpRequestBodySize(None);
    }
    match err.downcast::<hyper::Error>() {
        Ok(hyper) => wasmtime_wasi_http::Error::from(*hyper),
        Err(other) => wasmtime_wasi_http::Error::InternalError(Some(other.to_string())),
    }
}

fn status_for(err: &InvokeError) -> StatusCode {
    match err {
        InvokeError::Deadline(_) => StatusCode::GATEWAY_TIMEOUT,
        InvokeError::Overloaded(_) | InvokeError::Stopped => StatusCode::SERVICE_UNAVAILABLE,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

fn short_reason(err: &InvokeError) -> &'static str {
    match err {
        InvokeError::Deadline(_) => "the component did not answer in time",
        InvokeError::OutOfMemory { .. } => "the component ran out of memory",
        InvokeError::OutOfFuel { .. } => "the component used up its CPU budget",
        InvokeError::Trap(_) => "the component failed",
        InvokeError::Instantiate(_) => "the component could not be started",
        InvokeError::NoResponse => "the component sent no response",
        InvokeError::Guest(_) => "the component reported an error",
        InvokeError::Overloaded(_) => "too many requests in flight; retry shortly",
        InvokeError::Stopped => "the server is shutting down; retry shortly",
    }
}

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
struct BodyReadTimeout<B> {
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
    fn new(body: B, idle: Duration, min_rate: u64, request_id: u64) -> Self {
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

/// A response made by skiff itself rather than a guest.
pub fn plain(status: StatusCode, body: String) -> Response<ResponseBody> {
    let mut response = Response::new(
        Full::new(Bytes::from(body))
            .map_err(|never: Infallible| match never {})
            .boxed_unsync(),
    );
    *response.status_mut() = status;
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}
