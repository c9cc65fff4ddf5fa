//! Where requests go that are not simply routed to a component: along a route's middleware
//! chain, to an upstream, and from one component to another in process. The runtime hands
//! the in-process requests of guests to [`HttpApp`] as their [`CallRouter`]; each hop is a
//! unit of work of its own through [`serve`], with its own span, limits and usage, nested
//! under the caller's trace.
//!
//! A chain is numbered by its route: hop `i` of route `r` is the route's `i`-th middleware,
//! and the hop after the last middleware is the route's target (a component or an upstream).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use http::Request;
use http::header::{HOST, HeaderValue};
use skiff_manifest::{Route, RouteTarget};
use skiff_runtime::{CallFuture, CallRouter, Callee, CallerInfo};
use wasmtime_wasi_http::{Error as ErrorCode, WasiBody};

use crate::dispatch::{Origin, Target, serve};
use crate::upstream::Forwarded;
use crate::{BASE_PATH, CALLER, CLIENT_ADDR, HttpApp};

impl CallRouter for HttpApp {
    fn call(
        self: Arc<Self>,
        callee: Callee<'_>,
        request: Request<WasiBody>,
        caller: CallerInfo<'_>,
    ) -> CallFuture {
        match callee {
            Callee::Component(id) => self.call_component(id, request, caller),
            Callee::NextHop { chain, hop } => self.next_hop(chain, hop, request, caller),
        }
    }
}

impl HttpApp {
    /// A request from one component to another (`http://ID.skiff.internal`), served as if it
    /// had come over HTTP, with `skiff-caller` naming the caller.
    fn call_component(
        self: Arc<Self>,
        id: &str,
        request: Request<WasiBody>,
        caller: CallerInfo<'_>,
    ) -> CallFuture {
        let Some(index) = self.loaded.app().components.iter().position(|c| c.id == id) else {
            tracing::warn!(
                request_id = caller.request_id, app = %self.loaded.app().name,
                component = caller.component,
                "in-process request to `{id}`, which is no component of the app"
            );
            return Box::pin(async { Err(ErrorCode::DestinationNotFound) });
        };
        let origin = Origin {
            arrived: Instant::now(),
            client: None,
            local_addr: None,
            base_path: None,
            trigger: HeaderValue::from_str(caller.component)
                .map(|value| vec![(CALLER, value)])
                .unwrap_or_default(),
            depth: caller.depth,
            chain: None,
        };
        let request_id = caller.request_id;
        Box::pin(async move {
            let target = Target {
                component: index,
                route_name: self.internal_names.get(index).map_or("", String::as_str),
                matched_route: None,
                path_info: None,
                metrics: self.metrics.as_ref().and_then(|m| m.internal(index)),
            };
            Ok(serve(&self, target, request, origin, request_id).await)
        })
    }

    /// A middleware sent its request on: to the chain's next middleware, or past the last one
    /// to what answers the route.
    fn next_hop(
        self: Arc<Self>,
        chain: usize,
        hop: usize,
        request: Request<WasiBody>,
        caller: CallerInfo<'_>,
    ) -> CallFuture {
        let request_id = caller.request_id;
        let depth = caller.depth;
        Box::pin(async move {
            let app = self.loaded.app().clone();
            let Some(route) = app.routes.get(chain) else {
                return Err(ErrorCode::DestinationNotFound);
            };
            let (component, next) = match (route.middleware.get(hop), route.target) {
                (Some(&middleware), _) => (middleware, Some((chain, hop + 1))),
                (None, RouteTarget::Component(component)) => (component, None),
                (None, RouteTarget::Upstream(upstream)) => {
                    let Some(pool) = self.upstreams.get(upstream) else {
                        return Err(ErrorCode::DestinationNotFound);
                    };
                    let host = request.headers().get(HOST).cloned();
                    let forwarded = Forwarded {
                        request_id,
                        client: client_of(&request),
                        host: host.as_ref(),
                    };
                    // A WebSocket handshake the chain let through (see dispatch).
                    let upgrade = self
                        .upgrades
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .remove(&request_id);
                    return Ok(pool.forward(request, forwarded, upgrade).await);
                }
            };
            // The hop sees the route's headers as a routed request would, for the path it was
            // sent (a middleware may have rewritten it).
            let (matched_route, path_info) = route_headers(route, request.uri().path());
            let origin = Origin {
                arrived: Instant::now(),
                client: client_of(&request),
                local_addr: None,
                base_path: request.headers().get(BASE_PATH).cloned(),
                trigger: Vec::new(),
                depth,
                chain: next,
            };
            let target = Target {
                component,
                route_name: &route.as_written,
                matched_route,
                path_info,
                metrics: None,
            };
            Ok(serve(&self, target, request, origin, request_id).await)
        })
    }
}

/// `skiff-matched-route` and `skiff-path-info` for a request of `route` at `path`: none when a
/// middleware sent it to a path outside the route.
fn route_headers(route: &Route, path: &str) -> (Option<HeaderValue>, Option<HeaderValue>) {
    match route.pattern.match_path(path) {
        Some(info) => (
            HeaderValue::from_str(&route.as_written).ok(),
            HeaderValue::from_str(info).ok(),
        ),
        None => (None, None),
    }
}

/// The client's address as skiff told the first hop (`skiff-client-addr`), which a middleware
/// passes on with the rest of the request's headers.
fn client_of<B>(request: &Request<B>) -> Option<SocketAddr> {
    request
        .headers()
        .get(CLIENT_ADDR)?
        .to_str()
        .ok()?
        .parse()
        .ok()
}
