//! Prometheus metrics of the HTTP trigger: requests by status class, latency, requests in
//! flight and failures by cause, per tenant, app, component and route.
//!
//! Labels name routes as written in the manifest (`/api/...`), never raw paths, so the number of
//! series is bounded by what is deployed. The handles of one app's routes are made when the app
//! is loaded ([`HttpMetrics::for_app`]), so a request updates its own atomics and takes no lock
//! on a shared map.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use skiff_manifest::App;
use skiff_runtime::{INTERNAL_DOMAIN, InvokeError};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    tenant: String,
    app: String,
    component: String,
    route: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StatusLabels {
    tenant: String,
    app: String,
    component: String,
    route: String,
    /// `2xx`, `4xx`, `5xx`...
    status: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FailureLabels {
    tenant: String,
    app: String,
    component: String,
    route: String,
    /// What stopped the request: `deadline`, `memory`, `fuel`, `trap`, `overloaded`...
    cause: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct UpstreamLabels {
    tenant: String,
    app: String,
    upstream: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct UpstreamOutcomeLabels {
    tenant: String,
    app: String,
    upstream: String,
    /// The upstream's own answer (`2xx`, `5xx`...), or what skiff answered for it.
    outcome: &'static str,
}

const STATUS_CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

/// The index in [`STATUS_CLASSES`] of `status`'s class.
fn status_class(status: u16) -> usize {
    usize::from(status / 100).clamp(1, 5) - 1
}
const CAUSES: [&str; 9] = [
    "deadline",
    "memory",
    "fuel",
    "trap",
    "instantiate",
    "no_response",
    "guest_error",
    "overloaded",
    "stopped",
];

/// The metric families of the HTTP trigger, registered once per host.
pub struct HttpMetrics {
    requests: Family<StatusLabels, Counter>,
    duration: Family<RouteLabels, Histogram, fn() -> Histogram>,
    in_flight: Family<RouteLabels, Gauge>,
    failures: Family<FailureLabels, Counter>,
    upstream_responses: Family<UpstreamOutcomeLabels, Counter>,
    upstream_duration: Family<UpstreamLabels, Histogram, fn() -> Histogram>,
    /// Every route that has series, so that an app's can be dropped when it goes.
    known_routes: Mutex<HashSet<RouteLabels>>,
    known_upstreams: Mutex<HashSet<UpstreamLabels>>,
}

fn latency_histogram() -> Histogram {
    // 50 µs to about 26 s: a hello request and a request that runs into a long deadline.
    Histogram::new(exponential_buckets(0.000_05, 2.0, 20))
}

impl HttpMetrics {
    /// Registers the families in `registry` (under the `skiff_http_` prefix).
    pub fn register(registry: &mut Registry) -> Arc<HttpMetrics> {
        let metrics = HttpMetrics {
            requests: Family::default(),
            duration: Family::new_with_constructor(latency_histogram),
            in_flight: Family::default(),
            failures: Family::default(),
            upstream_responses: Family::default(),
            upstream_duration: Family::new_with_constructor(latency_histogram),
            known_routes: Mutex::default(),
            known_upstreams: Mutex::default(),
        };
        let registry = registry.sub_registry_with_prefix("skiff_http");
        registry.register(
            "requests",
            "Requests answered, by status class",
            metrics.requests.clone(),
        );
        registry.register(
            "request_duration_seconds",
            "Time from a request's arrival to its response head, guest start-up included",
            metrics.duration.clone(),
        );
        registry.register(
            "requests_in_flight",
            "Requests whose response head is not sent yet",
            metrics.in_flight.clone(),
        );
        registry.register(
            "request_failures",
            "Requests a guest did not answer, by cause",
            metrics.failures.clone(),
        );
        registry.register(
            "upstream_responses",
            "Requests sent on to an upstream, by its answer's status class, or by what skiff \
             answered when it gave none (unreachable, broken, timeout, unavailable, \
             websocket_limit)",
            metrics.upstream_responses.clone(),
        );
        registry.register(
            "upstream_duration_seconds",
            "Time from sending a request to an upstream to its response head (or failure), \
             retries included",
            metrics.upstream_duration.clone(),
        );
        Arc::new(metrics)
    }

    /// The handles of every route of `app`. `tenant` is empty outside a multi-tenant host.
    /// Scheduled runs count like requests, under the route `schedule[<index>]`, messages
    /// delivered as requests under `consume[<queue>]`, and the in-process calls a component
    /// gets from others of its app under `<id>.skiff.internal` (for components some other may
    /// call). A request through a middleware chain counts once, under its route, labelled with
    /// what answers the route.
    pub fn for_app(&self, tenant: &str, app: &App) -> AppMetrics {
        let routes = app
            .routes
            .iter()
            .map(|route| self.route_metrics(tenant, app, app.target_name(route), &route.as_written))
            .collect();
        let schedules = app
            .schedules
            .iter()
            .map(|s| {
                let component = component_id(app, s.component);
                self.route_metrics(tenant, app, component, &format!("schedule[{}]", s.index))
            })
            .collect();
        let consumers = app
            .consumers
            .iter()
            .map(|c| {
                let component = component_id(app, c.component);
                self.route_metrics(tenant, app, component, &format!("consume[{}]", c.queue))
            })
            .collect();
        let internal = (0..app.components.len())
            .map(|index| {
                app.reachable_in_process(index).then(|| {
                    let component = component_id(app, index);
                    let route = format!("{component}.{INTERNAL_DOMAIN}");
                    self.route_metrics(tenant, app, component, &route)
                })
            })
            .collect();
        let upstreams = app
            .upstreams
            .iter()
            .map(|upstream| self.upstream_metrics(tenant, app, &upstream.name))
            .collect();
        AppMetrics {
            routes,
            schedules,
            consumers,
            internal,
            upstreams,
        }
    }

    fn upstream_metrics(&self, tenant: &str, app: &App, upstream: &str) -> Arc<UpstreamMetrics> {
        let labels = UpstreamLabels {
            tenant: tenant.to_string(),
            app: app.name.clone(),
            upstream: upstream.to_string(),
        };
        let counter = |outcome| {
            self.upstream_responses
                .get_or_create_owned(&labels.with_outcome(outcome))
        };
        let metrics = UpstreamMetrics {
            by_status: STATUS_CLASSES.map(counter),
            by_reason: UPSTREAM_FAILURES.map(counter),
            duration: self.upstream_duration.get_or_create_owned(&labels),
        };
        self.known_upstreams
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(labels);
        Arc::new(metrics)
    }

    fn route_metrics(&self, tenant: &str, app: &App, component: &str, route: &str) -> RouteMetrics {
        let labels = RouteLabels {
            tenant: tenant.to_string(),
            app: app.name.clone(),
            component: component.to_string(),
            route: route.to_string(),
        };
        let metrics = RouteMetrics {
            by_status: STATUS_CLASSES.map(|class| {
                self.requests
                    .get_or_create_owned(&labels.with_status(class))
            }),
            duration: self.duration.get_or_create_owned(&labels),
            in_flight: self.in_flight.get_or_create_owned(&labels),
            by_cause: CAUSES.map(|c| self.failures.get_or_create_owned(&labels.with_cause(c))),
        };
        self.known_routes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(labels);
        metrics
    }
}

fn component_id(app: &App, index: usize) -> &str {
    app.components.get(index).map_or("", |c| c.id.as_str())
}

impl HttpMetrics {
    /// Drops every series of an app that is gone, so that deleted apps do not pile up in the
    /// scrape.
    pub fn forget_app(&self, tenant: &str, app: &str) {
        for labels in take_where(&self.known_routes, |l| l.tenant == tenant && l.app == app) {
            for status in STATUS_CLASSES {
                self.requests.remove(&labels.with_status(status));
            }
            for cause in CAUSES {
                self.failures.remove(&labels.with_cause(cause));
            }
            self.duration.remove(&labels);
            self.in_flight.remove(&labels);
        }
        for labels in take_where(&self.known_upstreams, |l| {
            l.tenant == tenant && l.app == app
        }) {
            for outcome in STATUS_CLASSES.into_iter().chain(UPSTREAM_FAILURES) {
                self.upstream_responses
                    .remove(&labels.with_outcome(outcome));
            }
            self.upstream_duration.remove(&labels);
        }
    }
}

/// Removes from `known` the label sets that `gone` picks, and returns them.
fn take_where<L: Clone + Eq + std::hash::Hash>(
    known: &Mutex<HashSet<L>>,
    gone: impl Fn(&L) -> bool,
) -> Vec<L> {
    let mut known = known.lock().unwrap_or_else(|e| e.into_inner());
    let taken: Vec<L> = known.iter().filter(|l| gone(l)).cloned().collect();
    known.retain(|l| !gone(l));
    taken
}

impl UpstreamLabels {
    fn with_outcome(&self, outcome: &'static str) -> UpstreamOutcomeLabels {
        UpstreamOutcomeLabels {
            tenant: self.tenant.clone(),
            app: self.app.clone(),
            upstream: self.upstream.clone(),
            outcome,
        }
    }
}

impl RouteLabels {
    fn with_status(&self, status: &'static str) -> StatusLabels {
        StatusLabels {
            tenant: self.tenant.clone(),
            app: self.app.clone(),
            component: self.component.clone(),
            route: self.route.clone(),
            status,
        }
    }

    fn with_cause(&self, cause: &'static str) -> FailureLabels {
        FailureLabels {
            tenant: self.tenant.clone(),
            app: self.app.clone(),
            component: self.component.clone(),
            route: self.route.clone(),
            cause,
        }
    }
}

/// One app's metric handles, route by route.
pub struct AppMetrics {
    routes: Vec<RouteMetrics>,
    schedules: Vec<RouteMetrics>,
    consumers: Vec<RouteMetrics>,
    /// By component: its in-process calls, if any component may call it.
    internal: Vec<Option<RouteMetrics>>,
    /// In the order of the app's upstreams.
    upstreams: Vec<Arc<UpstreamMetrics>>,
}

impl AppMetrics {
    pub(crate) fn route(&self, index: usize) -> Option<&RouteMetrics> {
        self.routes.get(index)
    }

    pub(crate) fn schedule(&self, index: usize) -> Option<&RouteMetrics> {
        self.schedules.get(index)
    }

    pub(crate) fn consumer(&self, index: usize) -> Option<&RouteMetrics> {
        self.consumers.get(index)
    }

    pub(crate) fn internal(&self, component: usize) -> Option<&RouteMetrics> {
        self.internal.get(component)?.as_ref()
    }

    pub(crate) fn upstream(&self, index: usize) -> Option<&Arc<UpstreamMetrics>> {
        self.upstreams.get(index)
    }
}

/// How a request sent on to an upstream ended: the upstream's own answer, or skiff's for it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum UpstreamOutcome {
    /// The upstream answered with this status.
    Answered(u16),
    /// No connection could be made (502).
    Unreachable,
    /// The connection broke before an answer (502).
    Broken,
    /// No response head in time (504).
    Timeout,
    /// No healthy address (503).
    Unavailable,
    /// A WebSocket handshake beyond the upstream's `websocket_limit` (503).
    WebsocketLimit,
}

/// The `outcome` labels of what skiff answered for an upstream that gave no answer; its own
/// answers are labelled by [`STATUS_CLASSES`].
const UPSTREAM_FAILURES: [&str; 5] = [
    "unreachable",
    "broken",
    "timeout",
    "unavailable",
    "websocket_limit",
];

/// One upstream's metric handles.
pub(crate) struct UpstreamMetrics {
    by_status: [Counter; 5],
    by_reason: [Counter; 5],
    duration: Histogram,
}

impl UpstreamMetrics {
    pub(crate) fn record(&self, outcome: UpstreamOutcome, seconds: f64) {
        let counter = match outcome {
            UpstreamOutcome::Answered(status) => &self.by_status[status_class(status)],
            UpstreamOutcome::Unreachable => &self.by_reason[0],
            UpstreamOutcome::Broken => &self.by_reason[1],
            UpstreamOutcome::Timeout => &self.by_reason[2],
            UpstreamOutcome::Unavailable => &self.by_reason[3],
            UpstreamOutcome::WebsocketLimit => &self.by_reason[4],
        };
        counter.inc();
        // A refusal at the limit never reached the upstream: it has no duration.
        if outcome != UpstreamOutcome::WebsocketLimit {
            self.duration.observe(seconds);
        }
    }
}

pub(crate) struct RouteMetrics {
    by_status: [Counter; 5],
    duration: Histogram,
    in_flight: Gauge,
    by_cause: [Counter; 9],
}

impl RouteMetrics {
    /// Counts a request in flight until the guard is dropped.
    pub(crate) fn start(&self) -> InFlight<'_> {
        self.in_flight.inc();
        InFlight(&self.in_flight)
    }

    pub(crate) fn answered(&self, status: u16, seconds: f64) {
        self.by_status[status_class(status)].inc();
        self.duration.observe(seconds);
    }

    pub(crate) fn failed(&self, err: &InvokeError) {
        let cause = match err {
            InvokeError::Deadline(_) => 0,
            InvokeError::OutOfMemory { .. } => 1,
            InvokeError::OutOfFuel { .. } => 2,
            InvokeError::Trap(_) => 3,
            InvokeError::Instantiate(_) => 4,
            InvokeError::NoResponse => 5,
            InvokeError::Guest(_) => 6,
            InvokeError::Overloaded(_) => 7,
            InvokeError::Stopped => 8,
        };
        self.by_cause[cause].inc();
    }
}

pub(crate) struct InFlight<'m>(&'m Gauge);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// Serves `GET /metrics` (the OpenMetrics text of `registry`) on `listener`, for hosts that
/// have no management API of their own (`skiff up --metrics-listen`). Runs until dropped.
pub async fn serve_metrics(listener: tokio::net::TcpListener, registry: Arc<Registry>) {
    use http::{Response, StatusCode};
    use http_body_util::Full;
    use hyper_util::rt::{TokioExecutor, TokioIo};

    loop {
        let Ok((stream, _)) = listener.accept().await else {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            continue;
        };
        let registry = registry.clone();
        let service = hyper::service::service_fn(move |request: http::Request<_>| {
            let registry = registry.clone();
            async move {
                let mut response = Response::new(Full::new(bytes::Bytes::new()));
                if request.uri().path() != "/metrics" {
                    *response.status_mut() = StatusCode::NOT_FOUND;
                    *response.body_mut() = Full::new("metrics are at /metrics\n".into());
                    return Ok::<_, std::convert::Infallible>(response);
                }
                let mut text = String::new();
                if let Err(err) = prometheus_client::encoding::text::encode(&mut text, &registry) {
                    tracing::error!("cannot encode the metrics: {err}");
                }
                response.headers_mut().insert(
                    http::header::CONTENT_TYPE,
                    http::HeaderValue::from_static(
                        "application/openmetrics-text; version=1.0.0; charset=utf-8",
                    ),
                );
                *response.body_mut() = Full::new(text.into());
                Ok(response)
            }
        });
        tokio::spawn(async move {
            let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            let _ = builder
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}
