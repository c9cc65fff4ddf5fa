//! Requests that never leave the process. Two kinds of outgoing request are served by the
//! trigger that started the work instead of going out on the network:
//!
//! - **calls to another component of the same app**, at `http://ID.skiff.internal/...`: no
//!   socket, no DNS, no TLS. Only where `allowed_outbound_hosts` names that host (or
//!   `*.skiff.internal`); `*` alone never grants it, as it never grants loopback.
//! - **the next hop of a middleware chain**: a middleware sends the request on to the
//!   authority it arrived at (as a Cloudflare Worker's `fetch(request)` reaches its origin),
//!   and the trigger hands it to the next middleware or to the route's target. Being placed in
//!   a chain by the manifest is the grant.
//!
//! The runtime knows nothing of routes or upstreams: it recognises these requests, checks the
//! grant and the nesting depth, and hands them to the [`CallRouter`] the trigger gave with the
//! unit of work.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use wasmtime_wasi_http::{Error, WasiBody};

/// The domain under which an app's components reach each other in process.
pub const INTERNAL_DOMAIN: &str = "skiff.internal";

/// How deeply calls into components may nest (A calls B calls C ...). Past it a call fails
/// with `loop-detected`: a loop (A calls B calls A) ends there instead of exhausting the host.
/// The hops of a middleware chain do not count: they only move forward.
pub const MAX_CALL_DEPTH: u8 = 8;

/// Who an in-process request goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Callee<'a> {
    /// A component of the caller's app, by id.
    Component(&'a str),
    /// Step `hop` of chain `chain`, as the trigger numbered them in [`NextHop`].
    NextHop { chain: usize, hop: usize },
}

/// What the callee's unit of work inherits from the caller's.
#[derive(Debug, Clone, Copy)]
pub struct CallerInfo<'a> {
    /// The caller's request id: one id for every unit of work a request causes.
    pub request_id: u64,
    /// How deep the callee is in calls into components: 1 for a call from the unit of work
    /// the trigger started; a chain's next hop is as deep as its caller.
    pub depth: u8,
    /// The calling component's id.
    pub component: &'a str,
}

/// The answer to an in-process request. A callee that fails answers with an error status, as
/// it would over HTTP; an `Err` is for a callee that could not be reached at all.
pub type CallFuture = Pin<Box<dyn Future<Output = Result<http::Response<WasiBody>, Error>> + Send>>;

/// Serves in-process requests: implemented by the trigger, which knows the app's components
/// and chains. The request carries the caller's trace in `traceparent`.
pub trait CallRouter: Send + Sync + 'static {
    fn call(
        self: Arc<Self>,
        callee: Callee<'_>,
        request: http::Request<WasiBody>,
        caller: CallerInfo<'_>,
    ) -> CallFuture;
}

/// Where a unit of work's in-process requests go, given by the trigger with the work.
#[derive(Clone)]
pub struct InProcessCalls {
    pub router: Arc<dyn CallRouter>,
    /// How deep this unit of work is: 0 for one a trigger started.
    pub depth: u8,
    /// Set when this unit of work is a middleware: where its requests to its own authority go.
    pub next_hop: Option<NextHop>,
}

impl std::fmt::Debug for InProcessCalls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InProcessCalls")
            .field("depth", &self.depth)
            .field("next_hop", &self.next_hop)
            .finish_non_exhaustive()
    }
}

/// The next hop of a middleware: requests to `authority` go to step `hop` of `chain`.
#[derive(Debug, Clone)]
pub struct NextHop {
    /// The authority the middleware's request arrived at (`Host`), compared without case.
    pub authority: Arc<str>,
    pub chain: usize,
    pub hop: usize,
}

/// The component a `http://ID.skiff.internal` host names, if it is one.
pub(super) fn internal_component(host: &str) -> Option<&str> {
    let id = host
        .len()
        .checked_sub(INTERNAL_DOMAIN.len() + 1)
        .and_then(|end| {
            let (id, domain) = host.split_at_checked(end)?;
            let domain = domain.strip_prefix('.')?;
            domain.eq_ignore_ascii_case(INTERNAL_DOMAIN).then_some(id)
        })?;
    Some(id)
}

/// Whether a host is in the internal domain at all (`skiff.internal` itself included): such a
/// host is never looked up in DNS, whether or not it names a component.
pub(super) fn is_internal(host: &str) -> bool {
    host.eq_ignore_ascii_case(INTERNAL_DOMAIN) || internal_component(host).is_some()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn internal_hosts_name_components() {
        assert_eq!(internal_component("back.skiff.internal"), Some("back"));
        assert_eq!(internal_component("Back.SKIFF.Internal"), Some("Back"));
        assert_eq!(internal_component("a.b.skiff.internal"), Some("a.b"));
        assert_eq!(internal_component("skiff.internal"), None);
        assert_eq!(internal_component(".skiff.internal"), Some(""));
        assert_eq!(internal_component("backskiff.internal"), None);
        assert_eq!(internal_component("back.skiff.internal.evil.com"), None);
        assert!(is_internal("skiff.internal"));
        assert!(!is_internal("example.com"));
    }
}
