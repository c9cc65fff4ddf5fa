//! The outbound HTTP capability (`wasi:http/outgoing-handler`): a guest may call only hosts
//! that match its `allowed_outbound_hosts` patterns. Anything else fails inside the guest with
//! `HTTP-request-denied`, is logged with app and component, and never leaves the machine.

use std::sync::Arc;

use http_body_util::BodyExt;
use skiff_manifest::HostPattern;
use wasmtime_wasi_http::{Error, RequestOptions, WasiBody, WasiHttpHooks};

use super::InstanceIdentity;

/// The validated patterns of one component, shared by all its instances.
#[derive(Debug, Clone)]
pub struct OutboundHttpGrant {
    allowed: Arc<[HostPattern]>,
}

impl OutboundHttpGrant {
    pub fn new(allowed: Vec<HostPattern>) -> Self {
        OutboundHttpGrant {
            allowed: allowed.into(),
        }
    }

    pub(crate) fn instance(&self, identity: InstanceIdentity) -> OutboundHttp {
        OutboundHttp {
            allowed: self.allowed.clone(),
            identity,
        }
    }

    /// Whether a request to this URI would be let through.
    pub fn allows(&self, uri: &http::Uri) -> bool {
        allows(&self.allowed, uri)
    }
}

fn allows(allowed: &[HostPattern], uri: &http::Uri) -> bool {
    let (Some(scheme), Some(host)) = (uri.scheme_str(), uri.host()) else {
        return false;
    };
    let port = uri.port_u16().unwrap_or(match scheme {
        "https" => 443,
        _ => 80,
    });
    // `http::Uri` keeps the brackets of an IPv6 literal; patterns hold the bare address.
    let host = host.trim_start_matches('[').trim_end_matches(']');
    allowed
        .iter()
        .any(|pattern| pattern.matches(scheme, host, port))
}

/// Per-instance hooks of `wasi:http`.
pub struct OutboundHttp {
    allowed: Arc<[HostPattern]>,
    identity: InstanceIdentity,
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
        request: http::Request<WasiBody>,
        options: Option<RequestOptions>,
        fut: Box<dyn Future<Output = Result<(), Error>> + Send>,
    ) -> SendFuture {
        _ = fut;
        if !allows(&self.allowed, request.uri()) {
            tracing::warn!(
                app = %self.identity.app,
                component = %self.identity.component,
                request_id = self.identity.request_id,
                "denied outbound request to {}: no pattern in allowed_outbound_hosts matches it",
                redact(request.uri()),
            );
            return Box::new(async { Err(Error::HttpRequestDenied) });
        }
        Box::new(async move {
            let (response, io) = wasmtime_wasi_http::default_send_request(request, options).await?;
            Ok((
                response.map(|body| body.boxed_unsync()),
                Box::new(io) as Box<dyn Future<Output = _> + Send>,
            ))
        })
    }
}

/// The scheme, host and port of a URI: enough to fix the grant, without the path and query
/// that may carry secrets.
fn redact(uri: &http::Uri) -> String {
    format!(
        "{}://{}",
        uri.scheme_str().unwrap_or("?"),
        uri.authority().map(|a| a.as_str()).unwrap_or("?")
    )
}
