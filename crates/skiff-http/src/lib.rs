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
//! | `skiff-matched-route` | the route as written in the manifest, e.g. `/api/...` (absent on a scheduled run: it is not routed) |
//! | `skiff-path-info` | the path after the route's prefix, e.g. `/users/1`; empty for an exact route |
//! | `skiff-component` | the id of the component serving the request |
//! | `skiff-client-addr` | the client's socket address, e.g. `127.0.0.1:51234` (absent on a scheduled run) |
//! | `skiff-request-id` | the request's id, as in skiff's log lines |
//! | `skiff-base-path` | when the app was chosen by a path prefix (`skiff server --path-routing`), that prefix, e.g. `/hello`; the path the guest sees is below it |
//! | `skiff-trigger` | `schedule` on a run a schedule started, `queue` on a queue message (absent on a client's request) |
//! | `skiff-scheduled-time` | on a scheduled run, its due time, RFC 3339 in UTC |
//! | `skiff-schedule` | on a scheduled run, which schedule: `component.<id>.schedule[<index>]` |
//! | `skiff-queue` | on a queue message delivered as a `POST` (`skiff-trigger: queue`), the queue, as the app names it |
//! | `skiff-message-id` | on a queue message, its id in the queue: the same on every delivery of it, so a handler can spot a repeat |
//! | `skiff-message-attempt` | on a queue message, which delivery this is: 1, then 2 after a failure, ... |
//! | `skiff-message-metadata` | on a queue message with metadata, its entries as a JSON object |
//! | `skiff-caller` | on a request another component of the app made in process (`http://ID.skiff.internal`), the caller's id |
//! | `traceparent` | the request's place in its W3C trace: the client's trace continued, or a new one; when skiff records spans, its parent is the request's span |
//!
//! Every request is a server span when traces are exported ([`skiff_runtime::trace`]), named
//! after its route (`GET /api/...`), with the guest's stages below it.
//!
//! Routes may also send their requests through a chain of middleware components and to an
//! upstream (an HTTP service outside the app), and components may call each other in process:
//! see `gateway` and `upstream`.
//!
//! Modules: `app` (what is served and how a request picks an app), `listener` (connections,
//! HTTP/1 and HTTP/2, shutdown), `dispatch` (one request through checks, routing and the
//! guest), `gateway` (middleware chains and in-process calls), `upstream` (services outside the
//! app: pooling, balancing, retries, health), `body` (request bodies that must keep arriving),
//! `metrics`, `standalone` (one app on a runtime of its own: `skiff up`, `skiff serve`, the
//! containerd shim).

#![forbid(unsafe_code)]

mod app;
mod body;
mod dispatch;
mod gateway;
mod listener;
mod metrics;
mod reply;
mod standalone;
mod upstream;

pub use app::{AppSource, HttpApp, HttpLimits, Selected};
pub use dispatch::{
    HostStopping, MESSAGE_ATTEMPT, MESSAGE_ID, MESSAGE_METADATA, NotAdmitted, QUEUE, QueuedMessage,
    SCHEDULE, SCHEDULED_TIME, ScheduledRequest, TRIGGER,
};
pub use listener::{Draining, Server};
pub use metrics::{AppMetrics, HttpMetrics, serve_metrics};
pub use reply::plain;
pub use standalone::{
    CurrentApp, Reloader, Standalone, StartError, Started, load_app, termination_signal,
};

use http::header::HeaderName;

pub const MATCHED_ROUTE: HeaderName = HeaderName::from_static("skiff-matched-route");
pub const PATH_INFO: HeaderName = HeaderName::from_static("skiff-path-info");
pub const COMPONENT: HeaderName = HeaderName::from_static("skiff-component");
pub const CLIENT_ADDR: HeaderName = HeaderName::from_static("skiff-client-addr");
pub const REQUEST_ID: HeaderName = HeaderName::from_static("skiff-request-id");
pub const BASE_PATH: HeaderName = HeaderName::from_static("skiff-base-path");
pub const CALLER: HeaderName = HeaderName::from_static("skiff-caller");
