//! The outbound HTTP capability (`wasi:http/outgoing-handler`): a guest may call only hosts
//! that match its `allowed_outbound_hosts` patterns. Anything else fails inside the guest with
//! `HTTP-request-denied`, is logged with app and component, and never leaves the machine.
//!
//! Which addresses a matching pattern reaches depends on how it names the host:
//!
//! | pattern host | reaches |
//! |---|---|
//! | `*` | public addresses only |
//! | a name or `*.domain` | public and private networks (`db.internal` → 10.0.0.5), never the host itself or its link (loopback, link-local, cloud metadata at 169.254.169.254) |
//! | an IP literal, or `localhost` | exactly what it names, loopback included |
//!
//! So a guest cannot reach the host's own admin endpoints or the metadata service unless a
//! pattern names them literally. The check applies to the addresses a name resolves to, and
//! the connection goes to exactly those checked addresses (see [`connect`]), so a DNS answer
//! cannot sneak past it. Such a refusal reaches the guest as `destination-IP-prohibited`.
//!
//! Requests to `http://ID.skiff.internal` (another component of the app) and a middleware's
//! requests to its next hop never leave the process: see [`in_process`].
//!
//! Every request that leaves carries the caller's trace in `traceparent` (a guest's own is
//! replaced: the callee sees a child of this request's trace), and is a client span of it when
//! traces are recorded.

mod address;
mod connect;
mod in_process;

use address::{is_host_local, is_public};
pub use in_process::{
    CallFuture, CallRouter, Callee, CallerInfo, INTERNAL_DOMAIN, InProcessCalls, MAX_CALL_DEPTH,
    NextHop,
};

use std::net::IpAddr;
use std::sync::Arc;

use opentelemetry::KeyValue;
use opentelemetry::trace::SpanKind;
use skiff_manifest::{Component, HostMatch, HostPattern};
use wasmtime::component::{Linker, ResourceTable};
use wasmtime_wasi_http::{
    Error, RequestOptions, WasiBody, WasiHttpCtx, WasiHttpCtxView, WasiHttpHooks, WasiHttpView,
};

use super::{Capability, InstanceIdentity, LoadContext, warn_for};
use crate::error::LoadError;
use crate::metrics::{ComponentMetrics, OutboundOutcome};
use crate::trace::TraceContext;

/// `wasi:http`: the types every HTTP component uses, and the outgoing handler this capability
/// guards.
pub(crate) struct OutboundHttpCapability;

impl Capability for OutboundHttpCapability {
    type AppGrant = ();
    type Grant = OutboundHttpGrant;
    type Instance = HttpState;

    /// The component's patterns; a host that runs other people's apps caps them all at
    /// public addresses.
    fn grant(
        _: &(),
        load: &LoadContext<'_>,
        component: &Component,
    ) -> Result<OutboundHttpGrant, LoadError> {
        let grant = OutboundHttpGrant::new(component.allowed_outbound_hosts.clone());
        Ok(if load.allow_private_outbound {
            grant
        } else {
            grant.public_only()
        })
    }

    fn instance(grant: &OutboundHttpGrant, identity: &InstanceIdentity) -> HttpState {
        HttpState {
            ctx: WasiHttpCtx::new(),
            hooks: OutboundHttp {
                allowed: grant.allowed.clone(),
                ceiling: grant.ceiling,
                identity: identity.clone(),
                trace: TraceContext::default(),
                calls: None,
                tls: grant.tls.clone(),
            },
        }
    }

    fn next_request(state: &mut HttpState, identity: &InstanceIdentity) {
        state.hooks.identity = identity.clone();
    }

    fn trace(state: &mut HttpState, trace: &TraceContext) {
        state.hooks.trace = trace.clone();
    }

    /// A kept instance must not hold its last request's router: that holds the app, and the
    /// app holds the kept instance.
    fn request_done(state: &mut HttpState) {
        state.hooks.calls = None;
    }
}

/// Links `wasi:http` (types and outgoing-handler; the incoming handler is the guest's export).
pub(crate) fn add_to_linker<T: WasiHttpView + 'static>(
    linker: &mut Linker<T>,
) -> wasmtime::Result<()> {
    wasmtime_wasi_http::p2::add_only_http_to_linker_async(linker)
}

/// Links `wasi:http` 0.3 (types and client), whose requests go through the same hooks, so
/// the same grants and policy, as 0.2's.
pub(crate) fn add_wasi_0_3_to_linker<T: WasiHttpView + 'static>(
    linker: &mut Linker<T>,
) -> wasmtime::Result<()> {
    wasmtime_wasi_http::p3::add_to_linker(linker)
}

/// An instance's `wasi:http` state: wasmtime's context and skiff's hooks for outgoing calls.
pub(crate) struct HttpState {
    ctx: WasiHttpCtx,
    hooks: OutboundHttp,
}

impl HttpState {
    /// Where this unit of work's in-process requests go (see [`in_process`]).
    pub(crate) fn set_calls(&mut self, calls: Option<InProcessCalls>) {
        self.hooks.calls = calls;
    }

    /// What `WasiHttpView` hands out, with the instance's resource table.
    pub(crate) fn view<'a>(&'a mut self, table: &'a mut ResourceTable) -> WasiHttpCtxView<'a> {
        WasiHttpCtxView {
            ctx: &mut self.ctx,
            table,
            hooks: &mut self.hooks,
        }
    }
}

/// The validated patterns of one component, shared by all its instances. The default has
/// none: it reaches nothing.
#[derive(Clone)]
pub(crate) struct OutboundHttpGrant {
    allowed: Arc<[HostPattern]>,
    /// The widest reach any pattern may grant: the host's policy over the manifest's.
    ceiling: Reach,
    /// How its `https://` requests are made: the public roots, with a TLS session cache of
    /// the component's own when it may reach anything, so that no other component (of another
    /// app or tenant) resumes its sessions or learns from a quick handshake where it went.
    tls: Arc<rustls::ClientConfig>,
}

impl std::fmt::Debug for OutboundHttpGrant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OutboundHttpGrant")
            .field("allowed", &self.allowed)
            .field("ceiling", &self.ceiling)
            .finish_non_exhaustive()
    }
}

impl Default for OutboundHttpGrant {
    fn default() -> Self {
        OutboundHttpGrant::new(Vec::new())
    }
}

impl OutboundHttpGrant {
    fn new(allowed: Vec<HostPattern>) -> Self {
        let tls = if allowed.is_empty() {
            crate::tls::public_config()
        } else {
            crate::tls::with_own_sessions(&crate::tls::public_config(), GUEST_TLS_SERVERS)
        };
        OutboundHttpGrant {
            allowed: allowed.into(),
            ceiling: Reach::Exact,
            tls,
        }
    }

    /// The same patterns, reaching public addresses only, however they name the host.
    fn public_only(mut self) -> Self {
        self.ceiling = Reach::Public;
        self
    }
}

/// How many servers a component's TLS session cache remembers (the most recently used).
const GUEST_TLS_SERVERS: usize = 4;

/// The scheme, host and port a request goes to, as the patterns see them.
struct Target<'u> {
    scheme: &'u str,
    /// Without the brackets `http::Uri` keeps around an IPv6 literal.
    host: &'u str,
    port: u16,
}

impl<'u> Target<'u> {
    fn of(uri: &'u http::Uri) -> Option<Self> {
        let (scheme, host) = (uri.scheme_str()?, uri.host()?);
        let port = uri.port_u16().unwrap_or(match scheme {
            "https" => 443,
            _ => 80,
        });
        let host = host.trim_start_matches('[').trim_end_matches(']');
        Some(Target { scheme, host, port })
    }

    /// The widest reach any matching pattern grants this target.
    fn grant(&self, allowed: &[HostPattern]) -> Reach {
        allowed
            .iter()
            .filter(|pattern| pattern.matches(self.scheme, self.host, self.port))
            .map(|pattern| match pattern.host() {
                HostMatch::Any => Reach::Public,
                HostMatch::Name(name) => Reach::of_host(name),
                HostMatch::Subdomains(_) => Reach::Networks,
                HostMatch::Ip(_) => Reach::Exact,
            })
            .max()
            .unwrap_or(Reach::Nothing)
    }
}

/// Which addresses a destination the manifest names in full (an upstream's host) may be
/// connected to: the reach a pattern naming that host would grant, under the host's policy.
/// Check every address a name resolves to, at connect time, so that a DNS answer cannot
/// sneak past it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Destination {
    reach: Reach,
    /// The host lets guests reach public addresses only.
    public_only: bool,
}

impl Destination {
    pub(crate) fn new(host: &str, allow_private: bool) -> Destination {
        let named = Reach::of_host(host);
        Destination {
            reach: if allow_private {
                named
            } else {
                named.min(Reach::Public)
            },
            public_only: !allow_private,
        }
    }

    /// Whether a connection to `ip` is allowed.
    pub fn admits(&self, ip: IpAddr) -> bool {
        self.reach.admits(ip)
    }

    /// Why an address was refused, and the fix, for the log.
    pub fn refusal(&self) -> &'static str {
        if self.public_only {
            "this host lets apps reach public addresses only"
        } else {
            "a name never reaches loopback or link-local addresses; write the address itself \
             (e.g. http://127.0.0.1:8080) to reach it"
        }
    }
}

/// Which addresses a request may connect to, widening in this order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Reach {
    Nothing,
    /// Public addresses only.
    Public,
    /// Public and private networks, but not the host itself or its link.
    Networks,
    /// Whatever the pattern names (it names an IP, or `localhost`).
    Exact,
}

impl Reach {
    /// What naming one host grants: exactly that address for an IP or `localhost` (naming
    /// the host itself is the grant), any network but the host's own for a name.
    fn of_host(host: &str) -> Reach {
        if host.eq_ignore_ascii_case("localhost") || host.parse::<IpAddr>().is_ok() {
            Reach::Exact
        } else {
            Reach::Networks
        }
    }

    fn admits(self, ip: IpAddr) -> bool {
        match self {
            Reach::Nothing => false,
            Reach::Public => is_public(ip),
            Reach::Networks => !is_host_local(ip),
            Reach::Exact => true,
        }
    }
}

/// Per-instance hooks of `wasi:http`.
struct OutboundHttp {
    allowed: Arc<[HostPattern]>,
    ceiling: Reach,
    identity: InstanceIdentity,
    /// The guest call's place in the request's trace: outbound requests are its children.
    trace: TraceContext,
    /// Where in-process requests go; `None` for work that can make none (`skiff run`).
    calls: Option<InProcessCalls>,
    /// The component's TLS client configuration (see [`OutboundHttpGrant`]).
    tls: Arc<rustls::ClientConfig>,
}

/// Where an outgoing request goes, when it does not go out on the network.
enum InProcess {
    /// To a component of the app (the id as the host names it).
    Component(String),
    NextHop {
        chain: usize,
        hop: usize,
    },
}

impl OutboundHttp {
    fn count(&self, outcome: OutboundOutcome) {
        if let Some(metrics) = &self.identity.metrics {
            metrics.outbound(outcome);
        }
    }

    /// Whether `request` stays in the process, and where it goes then.
    fn in_process(&self, request: &http::Request<WasiBody>, target: &Target) -> Option<InProcess> {
        if let Some(next) = self.calls.as_ref().and_then(|c| c.next_hop.as_ref())
            && request
                .uri()
                .authority()
                .is_some_and(|a| a.as_str().eq_ignore_ascii_case(&next.authority))
        {
            return Some(InProcess::NextHop {
                chain: next.chain,
                hop: next.hop,
            });
        }
        in_process::is_internal(target.host).then(|| {
            InProcess::Component(
                in_process::internal_component(target.host)
                    .unwrap_or_default()
                    .to_string(),
            )
        })
    }

    /// Serves a request that stays in the process: checks the grant (for a call to a
    /// component) and the depth, then hands it to the trigger's router.
    fn call_in_process(
        &self,
        to: InProcess,
        mut request: http::Request<WasiBody>,
        host: String,
        granted: bool,
    ) -> SendFuture {
        let what = match &to {
            InProcess::Component(id) => format!("component `{id}`"),
            InProcess::NextHop { .. } => "the next hop of its chain".to_string(),
        };
        let span = self.trace.child(SpanKind::Client, || {
            (
                request.method().to_string().into(),
                vec![
                    KeyValue::new("http.request.method", request.method().to_string()),
                    KeyValue::new("server.address", host),
                    KeyValue::new("url.full", without_query(request.uri())),
                    KeyValue::new("skiff.in_process", true),
                ],
            )
        });
        let refuse = |outcome: OutboundOutcome, error: Error, why: String| -> SendFuture {
            warn_for!(self.identity, "refused in-process request to {what}: {why}");
            self.count(outcome);
            span.set_error(why);
            span.end();
            Box::new(async move { Err(error) })
        };
        if let InProcess::Component(id) = &to
            && !granted
        {
            return refuse(
                OutboundOutcome::Denied,
                Error::HttpRequestDenied,
                format!(
                    "allowed_outbound_hosts does not name it; to allow the call, add \
                     \"http://{id}.{INTERNAL_DOMAIN}\" (or \"http://*.{INTERNAL_DOMAIN}\")"
                ),
            );
        }
        let Some(calls) = &self.calls else {
            return refuse(
                OutboundOutcome::Failed,
                Error::DestinationNotFound,
                "this kind of work has no app to call into".to_string(),
            );
        };
        // A chain's hops move forward only, so they cannot loop and do not nest: only calls
        // into components count towards the depth.
        let into_component = matches!(to, InProcess::Component(_));
        if into_component && calls.depth >= MAX_CALL_DEPTH {
            return refuse(
                OutboundOutcome::Failed,
                Error::LoopDetected,
                format!(
                    "in-process calls are nested {} deep, the most allowed: do components \
                     call each other in a loop (A calls B calls A)?",
                    calls.depth
                ),
            );
        }
        span.inject(request.headers_mut());
        let caller = CallerInfo {
            request_id: self.identity.request_id,
            depth: calls.depth + u8::from(into_component),
            component: &self.identity.component,
        };
        let call = match &to {
            InProcess::Component(id) => {
                calls
                    .router
                    .clone()
                    .call(Callee::Component(id), request, caller)
            }
            InProcess::NextHop { chain, hop } => calls.router.clone().call(
                Callee::NextHop {
                    chain: *chain,
                    hop: *hop,
                },
                request,
                caller,
            ),
        };
        let metrics = self.identity.metrics.clone();
        Box::new(async move {
            let result = call.await;
            let status = result.as_ref().map(|response| response.status());
            finish_span(span, metrics, status);
            let done: Box<dyn Future<Output = Result<(), Error>> + Send> =
                Box::new(async { Ok(()) });
            result.map(|response| (response, done))
        })
    }
}

/// Whether a pattern names this internal host: by name or as `*.skiff.internal`. `*` does
/// not count, as it does not for loopback: a call into another component is granted by
/// naming it.
fn grants_internal(allowed: &[HostPattern], target: &Target) -> bool {
    allowed.iter().any(|pattern| {
        matches!(
            pattern.host(),
            HostMatch::Name(_) | HostMatch::Subdomains(_)
        ) && pattern.matches(target.scheme, target.host, target.port)
    })
}

type SendFuture = Box<
    dyn Future<
            Output = wasmtime_wasi_http::Result<(
                http::Response<WasiBody>,
                Box<dyn Future<Output = Result<(), Error>> + Send>,
            )>,
        > + Send,
>;

impl WasiHttpHooks for OutboundHttp {
    fn send_request(
        &mut self,
        mut request: http::Request<WasiBody>,
        options: Option<RequestOptions>,
        fut: Box<dyn Future<Output = Result<(), Error>> + Send>,
    ) -> SendFuture {
        _ = fut;
        let Some(target) = Target::of(request.uri()) else {
            self.count(OutboundOutcome::Failed);
            return Box::new(async { Err(Error::HttpRequestUriInvalid) });
        };
        if let Some(to) = self.in_process(&request, &target) {
            let granted = grants_internal(&self.allowed, &target);
            let host = target.host.to_string();
            return self.call_in_process(to, request, host, granted);
        }
        let span = self.trace.child(SpanKind::Client, || {
            (
                request.method().to_string().into(),
                vec![
                    KeyValue::new("http.request.method", request.method().to_string()),
                    KeyValue::new("server.address", target.host.to_string()),
                    KeyValue::new("server.port", i64::from(target.port)),
                    KeyValue::new("url.full", without_query(request.uri())),
                ],
            )
        });
        let reach = target.grant(&self.allowed).min(self.ceiling);
        if reach == Reach::Nothing {
            warn_for!(
                self.identity,
                "denied outbound request to {}: no pattern in allowed_outbound_hosts matches it",
                redact(request.uri()),
            );
            self.count(OutboundOutcome::Denied);
            span.set_error("denied: no pattern in allowed_outbound_hosts matches it");
            span.end();
            return Box::new(async { Err(Error::HttpRequestDenied) });
        }
        let (host, port, tls) = (
            target.host.to_string(),
            target.port,
            (target.scheme == "https").then(|| self.tls.clone()),
        );
        span.inject(request.headers_mut());
        let identity = self.identity.clone();
        let metrics = self.identity.metrics.clone();
        let fix = if self.ceiling == Reach::Public {
            "this host lets guests reach public addresses only"
        } else {
            "`*` reaches public addresses only, a name never loopback or link-local; to allow \
             it, list that address literally, e.g. http://127.0.0.1:8080"
        };
        let send = async move {
            let resolved = resolve(&host, port, &options).await?;
            let (addrs, refused): (Vec<_>, Vec<_>) = resolved
                .into_iter()
                .partition(|addr| reach.admits(addr.ip()));
            if addrs.is_empty() {
                warn_for!(
                    identity,
                    "refused outbound request to {}: {host} is at {}, which its pattern in \
                     allowed_outbound_hosts does not reach ({fix})",
                    redact(request.uri()),
                    refused
                        .first()
                        .map(|addr| addr.ip().to_string())
                        .unwrap_or_default(),
                );
                return Err(Error::DestinationIpProhibited);
            }
            let destination = connect::Destination { host, addrs, tls };
            connect::send(request, options, destination).await
        };
        Box::new(async move {
            let result = send.await;
            let status = result.as_ref().map(|(response, _)| response.status());
            finish_span(span, metrics, status);
            result
        })
    }
}

/// Ends an outgoing request's client span with how it went, and counts it.
fn finish_span(
    span: TraceContext,
    metrics: Option<ComponentMetrics>,
    status: Result<http::StatusCode, &Error>,
) {
    let outcome = match status {
        Ok(status) => {
            span.set_attribute(KeyValue::new(
                "http.response.status_code",
                i64::from(status.as_u16()),
            ));
            OutboundOutcome::Response
        }
        Err(err) => {
            span.set_error(format!("{err:?}"));
            match err {
                Error::DestinationIpProhibited => OutboundOutcome::Denied,
                _ => OutboundOutcome::Failed,
            }
        }
    };
    span.end();
    if let Some(metrics) = metrics {
        metrics.outbound(outcome);
    }
}

/// The addresses of a host: an IP literal as is, a name through the system resolver.
async fn resolve(
    host: &str,
    port: u16,
    options: &Option<RequestOptions>,
) -> Result<Vec<std::net::SocketAddr>, Error> {
    if let Ok(ip) = host.parse::<std::net::IpAddr>() {
        return Ok(vec![(ip, port).into()]);
    }
    let timeout = options
        .and_then(|o| o.connect_timeout)
        .unwrap_or(connect::DEFAULT_TIMEOUT);
    match tokio::time::timeout(timeout, tokio::net::lookup_host((host, port))).await {
        Err(_) => Err(Error::DnsTimeout),
        Ok(Err(_)) => Err(Error::DnsError {
            rcode: None,
            info_code: None,
        }),
        Ok(Ok(addrs)) => Ok(addrs.collect()),
    }
}

/// A URI without its query, which may carry secrets: what a trace records of it.
fn without_query(uri: &http::Uri) -> String {
    format!("{}{}", redact(uri), uri.path())
}

/// The scheme, host and port of a URI: enough to fix the grant, without the credentials
/// (`user:password@`), path and query that may carry secrets.
fn redact(uri: &http::Uri) -> String {
    let scheme = uri.scheme_str().unwrap_or("?");
    let host = uri.host().unwrap_or("?");
    match uri.port_u16() {
        Some(port) => format!("{scheme}://{host}:{port}"),
        None => format!("{scheme}://{host}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reach(patterns: &[&str], url: &str) -> Reach {
        let allowed: Vec<_> = patterns
            .iter()
            .map(|p| HostPattern::parse(p).unwrap())
            .collect();
        let uri: http::Uri = url.parse().unwrap();
        Target::of(&uri).unwrap().grant(&allowed)
    }

    #[test]
    fn how_a_pattern_names_the_host_decides_its_reach() {
        use Reach::*;
        assert_eq!(reach(&[], "http://example.com/"), Nothing);
        assert_eq!(
            reach(&["https://example.com"], "http://example.com/"),
            Nothing
        );
        assert_eq!(reach(&["*://*:*"], "http://127.0.0.1/"), Public);
        assert_eq!(
            reach(&["http://*.internal"], "http://db.internal/"),
            Networks
        );
        assert_eq!(
            reach(&["http://db.internal"], "http://db.internal/x"),
            Networks
        );
        assert_eq!(
            reach(&["http://127.0.0.1:*"], "http://127.0.0.1:8080/"),
            Exact
        );
        assert_eq!(reach(&["http://[::1]:80"], "http://[::1]/"), Exact);
        assert_eq!(reach(&["http://localhost:*"], "http://localhost:1/"), Exact);
        // The widest matching pattern wins.
        assert_eq!(
            reach(&["*://*:*", "http://localhost:*"], "http://localhost:1/"),
            Exact
        );
    }

    #[test]
    fn logged_urls_carry_no_credentials_path_or_query() {
        let uri: http::Uri = "http://user:s3cret@example.com:8080/p/a?token=t"
            .parse()
            .unwrap();
        assert_eq!(redact(&uri), "http://example.com:8080");
        assert_eq!(without_query(&uri), "http://example.com:8080/p/a");
        let uri: http::Uri = "https://k@[::1]/x".parse().unwrap();
        assert_eq!(redact(&uri), "https://[::1]");
    }

    #[test]
    fn reaches_admit_addresses() {
        let ip = |s: &str| s.parse::<std::net::IpAddr>().unwrap();
        assert!(Reach::Public.admits(ip("93.184.216.34")));
        assert!(!Reach::Public.admits(ip("10.0.0.5")));
        assert!(Reach::Networks.admits(ip("10.0.0.5")));
        assert!(!Reach::Networks.admits(ip("127.0.0.1")));
        assert!(!Reach::Networks.admits(ip("169.254.169.254")));
        assert!(Reach::Exact.admits(ip("127.0.0.1")));
        assert!(!Reach::Nothing.admits(ip("93.184.216.34")));
    }
}
