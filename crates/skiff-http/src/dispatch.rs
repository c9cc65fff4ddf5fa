//! One request, from its checks to the guest's answer: size checks, choosing the app and the
//! route, the `skiff-*` headers, the guest call, and the status for each failure.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{HOST, HeaderName, HeaderValue};
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use hyper::body::Incoming;
use opentelemetry::KeyValue;
use opentelemetry::trace::SpanKind;
use skiff_manifest::RouteTarget;
use skiff_runtime::{
    InProcessCalls, InvokeError, NextHop, RequestInfo, ResponseBody, TraceContext,
};

use crate::body::BodyReadTimeout;
use crate::metrics::RouteMetrics;
use crate::reply::plain;
use crate::upstream::{ClientUpgrade, Forwarded};
use crate::{
    AppSource, BASE_PATH, CLIENT_ADDR, COMPONENT, HttpApp, MATCHED_ROUTE, PATH_INFO, REQUEST_ID,
    Selected,
};

/// The per-request checks of [`HttpLimits`] (the rest are enforced by hyper).
#[derive(Debug, Clone, Copy)]
pub(crate) struct RequestLimits {
    pub(crate) max_body: u64,
    pub(crate) max_uri: usize,
    pub(crate) max_headers: usize,
    pub(crate) body_read_timeout: Duration,
    pub(crate) body_min_rate: u64,
}

pub(crate) async fn dispatch(
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
        ..
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
    let Some(route) = app.loaded.app().routes.get(matched.route) else {
        return plain(StatusCode::NOT_FOUND, format!("no route matches {path}\n"));
    };
    // The first hop: the route's first middleware, else what answers the route.
    let (first, chain) = match (route.middleware.first(), route.target) {
        (Some(&middleware), _) => (middleware, Some((matched.route, 1))),
        (None, RouteTarget::Component(component)) => (component, None),
        (None, RouteTarget::Upstream(upstream)) => {
            let forwarded = EdgeForward {
                route: matched.route,
                upstream,
                client,
                arrived,
            };
            let request = request.map(|body| limited_body(body, limits, request_id));
            return forward_from_edge(&app, forwarded, request, request_id).await;
        }
    };
    // Values are made before the request moves on: the match borrows the request's path.
    let target = Target {
        component: first,
        // The same text as `matched.matched_route`, borrowed from the app, not the request.
        route_name: route.as_written.as_str(),
        matched_route: HeaderValue::from_str(matched.matched_route).ok(),
        path_info: HeaderValue::from_str(matched.path_info).ok(),
        metrics: app.metrics.as_ref().and_then(|m| m.route(matched.route)),
    };
    // A WebSocket handshake on a chain to an upstream: the middleware sees an ordinary request
    // (wasi:http has no `Upgrade`), and the upstream hop switches the connection if the
    // chain lets the request through.
    let upgrade = matches!(route.target, RouteTarget::Upstream(_))
        .then(|| ClientUpgrade::take(&mut request))
        .flatten()
        .map(|upgrade| PendingUpgrade::hold(&app, request_id, upgrade));
    let request = request.map(|body| limited_body(body, limits, request_id));
    let origin = Origin {
        arrived,
        client: Some(client),
        local_addr: Some(local_addr),
        base_path,
        trigger: Vec::new(),
        depth: 0,
        chain,
    };
    let mut response = serve(&app, target, request, origin, request_id).await;
    if let Some(upgrade) = upgrade {
        upgrade.finish(&mut response);
    }
    response
}

/// A client's request to switch protocols, held for the upstream hop of its chain, which
/// takes it by the request id. Whatever the chain did, it is gone once the chain answered.
struct PendingUpgrade<'a> {
    app: &'a HttpApp,
    request_id: u64,
    protocol: HeaderValue,
}

impl<'a> PendingUpgrade<'a> {
    fn hold(app: &'a HttpApp, request_id: u64, upgrade: ClientUpgrade) -> Self {
        let protocol = upgrade.protocol.clone();
        app.upgrades
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(request_id, upgrade);
        PendingUpgrade {
            app,
            request_id,
            protocol,
        }
    }

    /// If the upstream switched (its hop took the upgrade) and the chain passed its `101` on,
    /// gives the answer back the `Upgrade` and `Connection` a guest cannot set.
    fn finish(self, response: &mut Response<ResponseBody>) {
        let taken = self
            .app
            .upgrades
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&self.request_id)
            .is_none();
        if taken && response.status() == StatusCode::SWITCHING_PROTOCOLS {
            let headers = response.headers_mut();
            headers.insert(
                http::header::CONNECTION,
                HeaderValue::from_static("upgrade"),
            );
            headers.insert(http::header::UPGRADE, self.protocol.clone());
        }
    }
}

impl Drop for PendingUpgrade<'_> {
    fn drop(&mut self) {
        self.app
            .upgrades
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&self.request_id);
    }
}

/// A client's request body as guests and upstreams get it: one without a declared length is
/// counted as it streams, and cut off at the limit; one that stops arriving fails the reader
/// instead of holding it.
fn limited_body(
    body: Incoming,
    limits: RequestLimits,
    request_id: u64,
) -> BodyReadTimeout<impl hyper::body::Body<Data = Bytes, Error = wasmtime_wasi_http::Error>> {
    BodyReadTimeout::new(
        Limited::new(body, limits.max_body as usize).map_err(body_error),
        limits.body_read_timeout,
        limits.body_min_rate,
        request_id,
    )
}

/// The component a unit of work goes to, and what its headers, span and metrics call it.
pub(crate) struct Target<'a> {
    pub(crate) component: usize,
    /// The route as written (`/api/...`), or for a scheduled run its schedule: the span's name.
    pub(crate) route_name: &'a str,
    pub(crate) matched_route: Option<HeaderValue>,
    pub(crate) path_info: Option<HeaderValue>,
    pub(crate) metrics: Option<&'a RouteMetrics>,
}

/// Where a unit of work came from: a client, or a trigger of skiff's own.
pub(crate) struct Origin {
    /// When the work arrived: its duration is counted from here.
    pub(crate) arrived: Instant,
    /// The client's address; `None` for work skiff started itself (a schedule).
    pub(crate) client: Option<SocketAddr>,
    /// The `Host` to give a request that has none (wasi:http needs an authority): the
    /// listener's address, or `localhost` (`None`) for work skiff started itself. Written out
    /// only for a request without one, not on every request.
    pub(crate) local_addr: Option<SocketAddr>,
    pub(crate) base_path: Option<HeaderValue>,
    /// `skiff-*` headers the trigger sets, after any the request carried were removed.
    pub(crate) trigger: Vec<(HeaderName, HeaderValue)>,
    /// How deeply nested in in-process calls the work is: 0 for work a trigger started.
    pub(crate) depth: u8,
    /// Set when the work is a middleware of a route's chain: `(route, hop)`, where its requests
    /// to its own authority go next.
    pub(crate) chain: Option<(usize, usize)>,
}

/// One unit of work through the guest, whatever started it: the `skiff-*` headers, the span,
/// the metrics, the call and the status for each failure. Client requests and scheduled runs
/// both end here, so both get the same limits, logs, usage and traces.
pub(crate) async fn serve<B>(
    app: &Arc<HttpApp>,
    target: Target<'_>,
    mut request: Request<B>,
    origin: Origin,
    request_id: u64,
) -> Response<ResponseBody>
where
    B: hyper::body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<wasmtime_wasi_http::Error>,
{
    let arrived = origin.arrived;
    let path = request.uri().path();
    let component = &app.loaded.components()[target.component];
    let metrics = target.metrics;
    let trace = TraceContext::inbound(request.headers()).child(SpanKind::Server, || {
        let mut attributes = vec![
            KeyValue::new("http.request.method", request.method().to_string()),
            KeyValue::new("http.route", target.route_name.to_string()),
            KeyValue::new("url.path", path.to_string()),
            KeyValue::new("skiff.app", component.app().to_string()),
            KeyValue::new("skiff.component", component.id().to_string()),
            KeyValue::new("skiff.request_id", request_id as i64),
        ];
        if let Some(client) = origin.client {
            attributes.push(KeyValue::new("client.address", client.ip().to_string()));
        }
        if !app.tenant.is_empty() {
            attributes.push(KeyValue::new("skiff.tenant", app.tenant.to_string()));
        }
        let name = format!("{} {}", request.method(), target.route_name);
        (name.into(), attributes)
    });
    let trace_id = trace.trace_id();
    let _in_flight = metrics.map(|m| m.start());

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
    if let Some(value) = target.matched_route {
        headers.insert(MATCHED_ROUTE, value);
    }
    if let Some(value) = target.path_info {
        headers.insert(PATH_INFO, value);
    }
    if let Some(base_path) = origin.base_path {
        headers.insert(BASE_PATH, base_path);
    }
    for (name, value) in origin.trigger {
        headers.insert(name, value);
    }
    set(headers, COMPONENT, component.id());
    if let Some(client) = origin.client {
        set(headers, CLIENT_ADDR, &client.to_string());
    }
    set(headers, REQUEST_ID, &request_id.to_string());
    // The guest sees the request's own span as its parent, to continue the trace from.
    trace.inject(headers);
    // HTTP/1.0 clients may send no Host; wasi:http needs an authority.
    if !headers.contains_key(HOST) && request.uri().authority().is_none() {
        let host = origin
            .local_addr
            .map_or_else(|| "localhost".to_string(), |addr| addr.to_string());
        set(request.headers_mut(), HOST, &host);
    }

    let method = request.method().clone();
    let next_hop = origin.chain.map(|(chain, hop)| NextHop {
        authority: authority(&request).into(),
        chain,
        hop,
    });
    let info = RequestInfo {
        request_id,
        https: false,
        trace: trace.clone(),
        calls: Some(InProcessCalls {
            router: app.clone(),
            depth: origin.depth,
            next_hop,
        }),
    };
    match component.handle_http(request, info).await {
        Ok(response) => {
            if let Some(metrics) = metrics {
                metrics.answered(response.status().as_u16(), arrived.elapsed().as_secs_f64());
            }
            tracing::debug!(
                request_id, %trace_id, app = %component.app(), component = %component.id(),
                %method, status = response.status().as_u16(), "served"
            );
            record_outcome(&trace, response.status(), None);
            held_until_sent(response, trace)
        }
        Err(err) => {
            let status = status_for(&err);
            if let Some(metrics) = metrics {
                metrics.failed(&err);
                metrics.answered(status.as_u16(), arrived.elapsed().as_secs_f64());
            }
            tracing::warn!(
                request_id, %trace_id, app = %component.app(), component = %component.id(),
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
            match err {
                InvokeError::Overloaded(_) => {
                    response.extensions_mut().insert(NotAdmitted);
                }
                InvokeError::Stopped => {
                    response.extensions_mut().insert(HostStopping);
                }
                _ => {}
            }
            response
        }
    }
}

/// The authority a request was sent to, as its guest sees it: the URI's, else `Host`.
fn authority<B>(request: &Request<B>) -> String {
    match request.uri().authority() {
        Some(authority) => authority.as_str().to_string(),
        None => request
            .headers()
            .get(HOST)
            .and_then(|h| h.to_str().ok())
            .unwrap_or_default()
            .to_string(),
    }
}

/// Records the outcome on the request's span. Only a 5xx is an error of the server's.
pub(crate) fn record_outcome(trace: &TraceContext, status: StatusCode, err: Option<&InvokeError>) {
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
fn strip_base_path<B>(request: &mut Request<B>, len: usize) -> Option<HeaderValue> {
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

/// Set (as a response extension, which only the host sees) on skiff's own answer to a request
/// that was not admitted: the guest did not run, and a trigger may try again soon. A guest's
/// own 503 does not have it.
#[derive(Debug, Clone, Copy)]
pub struct NotAdmitted;

/// Set (as a response extension) on skiff's own answer to a request whose guest the host
/// stopped because it is shutting down: the work was cut off, not failed.
#[derive(Debug, Clone, Copy)]
pub struct HostStopping;

/// Marks a request a trigger started: `skiff-trigger: schedule` or `queue`. A client cannot send it
/// (every `skiff-*` header a client sends is removed), so a guest can trust it.
pub const TRIGGER: HeaderName = HeaderName::from_static("skiff-trigger");
/// The scheduled time of the run, RFC 3339 in UTC, e.g. `2026-12-07T02:30:00Z`: the due time,
/// not when the run started.
pub const SCHEDULED_TIME: HeaderName = HeaderName::from_static("skiff-scheduled-time");
/// Which schedule started the run: `component.<id>.schedule[<index>]`.
pub const SCHEDULE: HeaderName = HeaderName::from_static("skiff-schedule");
/// The queue a message came from, as the app names it.
pub const QUEUE: HeaderName = HeaderName::from_static("skiff-queue");
/// A message's id in its queue: the same on every delivery of that message.
pub const MESSAGE_ID: HeaderName = HeaderName::from_static("skiff-message-id");
/// Which delivery of the message this is: 1, then 2 after a failure, ...
pub const MESSAGE_ATTEMPT: HeaderName = HeaderName::from_static("skiff-message-attempt");
/// A message's metadata, as a JSON object (absent when it has none).
pub const MESSAGE_METADATA: HeaderName = HeaderName::from_static("skiff-message-metadata");

/// A run that a schedule started, for [`HttpApp::run_scheduled`].
pub struct ScheduledRequest<'a> {
    /// Index into the app's `schedules`.
    pub schedule: usize,
    /// The due time, RFC 3339, for `skiff-scheduled-time`.
    pub scheduled_time: &'a str,
    pub request_id: u64,
}

impl HttpApp {
    /// Runs schedule `run.schedule` once: a `POST` with an empty body to the schedule's path,
    /// sent to the schedule's component (no routing: a component may have no routes), through
    /// the same path as a client's request, so the same limits, admission, logs, usage, traces
    /// and metrics apply. Returns the response, whose body the caller drains (the guest may
    /// still be writing it). A schedule without a path, or one this app does not have, is
    /// answered 404 by skiff, as a request that matches no route is.
    pub async fn run_scheduled(
        self: &Arc<Self>,
        run: ScheduledRequest<'_>,
    ) -> Response<ResponseBody> {
        let arrived = Instant::now();
        let Some(schedule) = self.loaded.app().schedules.get(run.schedule) else {
            return plain(StatusCode::NOT_FOUND, "no such schedule\n".into());
        };
        let Some(path) = &schedule.path else {
            return plain(
                StatusCode::NOT_FOUND,
                "the schedule has no `path` to call its HTTP component at\n".into(),
            );
        };
        let name = self
            .schedule_names
            .get(run.schedule)
            .map_or("", String::as_str);
        let mut trigger = vec![(TRIGGER, HeaderValue::from_static("schedule"))];
        if let Ok(value) = HeaderValue::from_str(run.scheduled_time) {
            trigger.push((SCHEDULED_TIME, value));
        }
        if let Ok(value) = HeaderValue::from_str(name) {
            trigger.push((SCHEDULE, value));
        }
        let post = TriggeredPost {
            traceparent: None,
            component: schedule.component,
            name,
            path,
            body: Bytes::new(),
            content_type: None,
            trigger,
            metrics: self.metrics.as_ref().and_then(|m| m.schedule(run.schedule)),
            request_id: run.request_id,
            arrived,
        };
        self.serve_triggered(post).await
    }

    /// A unit of work a trigger started: a `POST` of `post.body` to `post.path`, sent to
    /// `post.component` without routing (a component may have no routes), through [`serve`].
    async fn serve_triggered(self: &Arc<Self>, post: TriggeredPost<'_>) -> Response<ResponseBody> {
        let body = Full::new(post.body)
            .map_err(|never: Infallible| -> wasmtime_wasi_http::Error { match never {} });
        let mut request = Request::new(body);
        *request.method_mut() = http::Method::POST;
        match post.path.parse() {
            Ok(uri) => *request.uri_mut() = uri,
            Err(_) => {
                return plain(
                    StatusCode::BAD_REQUEST,
                    format!("malformed path `{}`\n", post.path.escape_debug()),
                );
            }
        }
        if let Some(value) = post.content_type {
            request
                .headers_mut()
                .insert(http::header::CONTENT_TYPE, value);
        }
        if let Some(value) = post.traceparent {
            request.headers_mut().insert(TRACEPARENT, value);
        }
        let target = Target {
            component: post.component,
            route_name: post.name,
            matched_route: None,
            path_info: None,
            metrics: post.metrics,
        };
        let origin = Origin {
            arrived: post.arrived,
            client: None,
            local_addr: None,
            base_path: None,
            trigger: post.trigger,
            depth: 0,
            chain: None,
        };
        serve(self, target, request, origin, post.request_id).await
    }
}

/// What [`HttpApp::serve_triggered`] sends.
struct TriggeredPost<'a> {
    component: usize,
    /// The span's name: the schedule or consumer.
    name: &'a str,
    path: &'a str,
    body: Bytes,
    content_type: Option<HeaderValue>,
    /// Where the work's trace continues from, if anywhere.
    traceparent: Option<HeaderValue>,
    /// The `skiff-*` headers the trigger sets.
    trigger: Vec<(HeaderName, HeaderValue)>,
    metrics: Option<&'a RouteMetrics>,
    request_id: u64,
    arrived: Instant,
}

const TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");

/// A queue message delivered as a request, for [`HttpApp::deliver_message`].
pub struct QueuedMessage<'a> {
    /// Index into the app's `consumers`.
    pub consumer: usize,
    pub data: Bytes,
    pub content_type: Option<&'a str>,
    pub metadata: &'a [(String, String)],
    /// The message's id in its queue.
    pub id: &'a str,
    pub attempt: u32,
    pub request_id: u64,
}

impl HttpApp {
    /// Delivers a queue message to consumer `message.consumer`, whose `consume` table has a
    /// `path`: a `POST` of the message's data to that path, with its content type, sent to
    /// the consumer's component (no routing) through the same path as a client's request.
    /// The message was handled if the answer is a 2xx. The caller drains the body.
    pub async fn deliver_message(
        self: &Arc<Self>,
        message: QueuedMessage<'_>,
    ) -> Response<ResponseBody> {
        let arrived = Instant::now();
        let Some(consume) = self.loaded.app().consumers.get(message.consumer) else {
            return plain(StatusCode::NOT_FOUND, "no such consumer\n".into());
        };
        let Some(path) = &consume.path else {
            return plain(
                StatusCode::NOT_FOUND,
                "the consumer has no `path` to deliver messages to\n".into(),
            );
        };
        let mut trigger = vec![(TRIGGER, HeaderValue::from_static("queue"))];
        let mut add = |name: HeaderName, value: &str| {
            // All valid (the metadata is escaped to ASCII); were one not, it would be left out
            // rather than fail the delivery.
            if let Ok(value) = HeaderValue::from_str(value) {
                trigger.push((name, value));
            }
        };
        add(QUEUE, &consume.queue);
        add(MESSAGE_ID, message.id);
        add(MESSAGE_ATTEMPT, &message.attempt.to_string());
        if !message.metadata.is_empty() {
            let metadata: serde_json::Map<String, serde_json::Value> = message
                .metadata
                .iter()
                .map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone())))
                .collect();
            // Escaped to ASCII, so that any text makes a valid header value.
            add(MESSAGE_METADATA, &ascii_json(&metadata));
        }
        // The producer's place in its trace, which the request's span continues (as a
        // client's `traceparent` header would).
        let traceparent = skiff_runtime::message_traceparent(message.metadata);
        let name = self
            .consumer_names
            .get(message.consumer)
            .map_or("", String::as_str);
        let post = TriggeredPost {
            traceparent,
            component: consume.component,
            name,
            path,
            body: message.data,
            content_type: message
                .content_type
                .and_then(|c| HeaderValue::from_str(c).ok()),
            trigger,
            metrics: self
                .metrics
                .as_ref()
                .and_then(|m| m.consumer(message.consumer)),
            request_id: message.request_id,
            arrived,
        };
        self.serve_triggered(post).await
    }
}

/// `value` as JSON with every character outside printable ASCII escaped (`\u00e9`).
fn ascii_json(value: &serde_json::Map<String, serde_json::Value>) -> String {
    let text = serde_json::Value::Object(value.clone()).to_string();
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if c.is_ascii() && !c.is_ascii_control() {
            out.push(c);
        } else {
            let mut units = [0u16; 2];
            for unit in c.encode_utf16(&mut units) {
                out.push_str(&format!("\\u{unit:04x}"));
            }
        }
    }
    out
}

/// A route that sends its requests straight to an upstream, with no middleware.
pub(crate) struct EdgeForward {
    pub route: usize,
    pub upstream: usize,
    pub client: SocketAddr,
    pub arrived: Instant,
}

/// Sends a client's request straight to the route's upstream: a server span and the route's
/// metrics, as for a request a guest answers.
pub(crate) async fn forward_from_edge<B>(
    app: &Arc<HttpApp>,
    edge: EdgeForward,
    mut request: Request<B>,
    request_id: u64,
) -> Response<ResponseBody>
where
    B: hyper::body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<wasmtime_wasi_http::Error>,
{
    let (Some(route), Some(pool)) = (
        app.loaded.app().routes.get(edge.route),
        app.upstreams.get(edge.upstream),
    ) else {
        return plain(StatusCode::NOT_FOUND, "no such upstream\n".into());
    };
    let metrics = app.metrics.as_ref().and_then(|m| m.route(edge.route));
    let _in_flight = metrics.map(|m| m.start());
    let trace = TraceContext::inbound(request.headers()).child(SpanKind::Server, || {
        let attributes = vec![
            KeyValue::new("http.request.method", request.method().to_string()),
            KeyValue::new("http.route", route.as_written.clone()),
            KeyValue::new("url.path", request.uri().path().to_string()),
            KeyValue::new("skiff.app", app.loaded.app().name.clone()),
            KeyValue::new(
                "skiff.upstream",
                app.loaded.app().target_name(route).to_string(),
            ),
            KeyValue::new("skiff.request_id", request_id as i64),
            KeyValue::new("client.address", edge.client.ip().to_string()),
        ];
        let name = format!("{} {}", request.method(), route.as_written);
        (name.into(), attributes)
    });
    // The upstream continues the request's trace.
    trace.inject(request.headers_mut());
    // A WebSocket handshake: the upstream may switch the connection to its protocol.
    let upgrade = ClientUpgrade::take(&mut request);
    // HTTP/2 carries the authority in the URI, not in `Host`: the upstream gets it as `Host`,
    // as an HTTP/1 client would have sent it.
    if !request.headers().contains_key(HOST)
        && let Some(value) = request
            .uri()
            .authority()
            .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
    {
        request.headers_mut().insert(HOST, value);
    }
    let host = request.headers().get(HOST).cloned();
    let forwarded = Forwarded {
        request_id,
        client: Some(edge.client),
        host: host.as_ref(),
    };
    let method = request.method().clone();
    let response = pool.forward(request, forwarded, upgrade).await;
    let status = response.status();
    if let Some(metrics) = metrics {
        metrics.answered(status.as_u16(), edge.arrived.elapsed().as_secs_f64());
    }
    tracing::debug!(
        request_id, app = %app.loaded.app().name, upstream = app.loaded.app().target_name(route),
        %method, status = status.as_u16(), "forwarded"
    );
    record_outcome(&trace, status, None);
    held_until_sent(response, trace)
}

/// The request's span ends with its response body, which the guest or the upstream may still
/// be sending: the body holds the span until it is done.
fn held_until_sent(
    response: Response<ResponseBody>,
    trace: TraceContext,
) -> Response<ResponseBody> {
    if !trace.is_recording() {
        return response;
    }
    response.map(|body| {
        body.map_frame(move |frame| {
            let _span = &trace;
            frame
        })
        .boxed_unsync()
    })
}
