//! What the HTTP trigger serves: apps, how a request picks one, and the limits on what a
//! client may send.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::{Request, Response};
use hyper::body::Incoming;
use skiff_manifest::RouteTable;
use skiff_runtime::{INTERNAL_DOMAIN, InProcessCalls, LoadedApp, ResponseBody};

use crate::upstream::{ClientUpgrade, Upstreams};

use crate::{AppMetrics, HttpMetrics};

/// Limits on what a client may send, applied before any guest runs, alike over HTTP/1 and
/// HTTP/2. Start from the default and set what you need.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
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
    pub(crate) loaded: LoadedApp,
    pub(crate) routes: RouteTable,
    pub(crate) metrics: Option<AppMetrics>,
    /// The tenant the app belongs to, for its spans; empty for none.
    pub(crate) tenant: Arc<str>,
    /// What spans, metrics and the `skiff-schedule` header call each schedule:
    /// `component.<id>.schedule[<index>]`, in the order of the app's `schedules`.
    pub(crate) schedule_names: Vec<String>,
    /// What spans and metrics call each queue consumer's requests: `consume[<queue>]`, in the
    /// order of the app's `consumers`.
    pub(crate) consumer_names: Vec<String>,
    /// What spans call a request to each component in process: `ID.skiff.internal`, in the
    /// order of the app's components.
    pub(crate) internal_names: Vec<String>,
    /// The services outside the app that its routes send requests to.
    pub(crate) upstreams: Upstreams,
    /// Clients' requests to switch protocols (WebSocket handshakes) on their way through a
    /// middleware chain to an upstream, by request id.
    pub(crate) upgrades: Mutex<HashMap<u64, ClientUpgrade>>,
}

impl HttpApp {
    pub fn new(loaded: LoadedApp) -> Self {
        let routes = RouteTable::new(loaded.app());
        let schedule_names = schedule_names(loaded.app());
        let consumer_names = consumer_names(loaded.app());
        let internal_names = loaded
            .app()
            .components
            .iter()
            .map(|c| format!("{}.{INTERNAL_DOMAIN}", c.id))
            .collect();
        let upstreams = Upstreams::new(&loaded);
        HttpApp {
            loaded,
            routes,
            schedule_names,
            consumer_names,
            internal_names,
            upstreams,
            upgrades: Mutex::default(),
            metrics: None,
            tenant: "".into(),
        }
    }

    /// Counts the app's requests in `metrics`, under `tenant` (empty for none).
    pub fn with_metrics(mut self, metrics: &HttpMetrics, tenant: &str) -> Self {
        let app_metrics = metrics.for_app(tenant, self.loaded.app());
        self.upstreams.count_in(&app_metrics);
        self.metrics = Some(app_metrics);
        self.tenant = tenant.into();
        self
    }

    pub fn loaded(&self) -> &LoadedApp {
        &self.loaded
    }

    /// Where the in-process requests of work a trigger starts in this app go (other components,
    /// by `http://ID.skiff.internal`), for triggers that call the runtime themselves.
    pub fn calls(self: &Arc<Self>) -> InProcessCalls {
        InProcessCalls {
            router: self.clone(),
            depth: 0,
            next_hop: None,
        }
    }
}

/// `component.<id>.schedule[<index>]` for each schedule of `app`.
pub(crate) fn schedule_names(app: &skiff_manifest::App) -> Vec<String> {
    app.schedules
        .iter()
        .map(|s| {
            let id = app
                .components
                .get(s.component)
                .map_or("", |c| c.id.as_str());
            format!("component.{id}.schedule[{}]", s.index)
        })
        .collect()
}

/// `consume[<queue>]` for each queue consumer of `app`.
pub(crate) fn consumer_names(app: &skiff_manifest::App) -> Vec<String> {
    app.consumers
        .iter()
        .map(|c| format!("consume[{}]", c.queue))
        .collect()
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
