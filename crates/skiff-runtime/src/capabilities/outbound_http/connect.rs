//! Sends a guest's outbound request to addresses that were resolved and checked beforehand.
//!
//! Why not `wasmtime_wasi_http::default_send_request`: it resolves the host name itself at
//! connect time, so a check made on an earlier lookup could be bypassed by a DNS answer that
//! changes in between (DNS rebinding). Here the connection goes to exactly the addresses that
//! passed the policy, and TLS still verifies the certificate against the host *name*.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::BodyExt;
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use wasmtime_wasi_http::{Error, RequestOptions, WasiBody};

/// Where a checked request goes.
pub(super) struct Destination {
    /// The host as the guest wrote it (a name or an IP literal): the TLS server name.
    pub host: String,
    /// The resolved addresses that passed the policy, tried in order.
    pub addrs: Vec<SocketAddr>,
    /// For `https://`: the component's TLS client configuration.
    pub tls: Option<Arc<rustls::ClientConfig>>,
}

/// The guest may ask for shorter timeouts; longer waits are cut anyway by the request's deadline.
pub(super) const DEFAULT_TIMEOUT: Duration = Duration::from_secs(600);

pub(super) type IoFuture = Box<dyn Future<Output = Result<(), Error>> + Send>;

pub(super) async fn send(
    mut request: http::Request<WasiBody>,
    options: Option<RequestOptions>,
    destination: Destination,
) -> Result<(http::Response<WasiBody>, IoFuture), Error> {
    let connect_timeout = options
        .and_then(|o| o.connect_timeout)
        .unwrap_or(DEFAULT_TIMEOUT);
    let first_byte_timeout = options
        .and_then(|o| o.first_byte_timeout)
        .unwrap_or(DEFAULT_TIMEOUT);

    let tcp = tokio::time::timeout(connect_timeout, connect_any(&destination.addrs))
        .await
        .map_err(|_| Error::ConnectionTimeout)??;
    let stream: Box<dyn Stream> = if let Some(config) = destination.tls {
        let name = server_name(&destination.host)?;
        let connector = tokio_rustls::TlsConnector::from(config);
        let tls = tokio::time::timeout(connect_timeout, connector.connect(name, tcp))
            .await
            .map_err(|_| Error::ConnectionTimeout)?
            .map_err(tls_error)?;
        Box::new(tls)
    } else {
        Box::new(tcp)
    };
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(Error::from)?;

    // The request line carries only the path: scheme and authority are for proxies, and the
    // `Host` header (set by wasi:http) names the server.
    let path = request
        .uri()
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/");
    *request.uri_mut() = http::Uri::try_from(path).map_err(|_| Error::HttpRequestUriInvalid)?;

    // The connection must be driven while the response is awaited; it runs as its own task,
    // cancelled when wasi:http drops the returned I/O future along with the guest's resources.
    let connection = wasmtime_wasi::runtime::spawn(connection);
    let response = tokio::time::timeout(first_byte_timeout, sender.send_request(request))
        .await
        .map_err(|_| Error::ConnectionReadTimeout)?
        .map_err(Error::from)?;
    let response = response.map(|body| body.map_err(Error::from).boxed_unsync());
    let io: IoFuture = Box::new(async move {
        match connection.await {
            Ok(()) => Ok(()),
            Err(err) if err.is_timeout() => Err(Error::HttpResponseTimeout),
            Err(err) => Err(Error::from(err)),
        }
    });
    Ok((response, io))
}

trait Stream: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Stream for T {}

async fn connect_any(addrs: &[SocketAddr]) -> Result<TcpStream, Error> {
    let mut last_error = None;
    for addr in addrs {
        match TcpStream::connect(addr).await {
            Ok(stream) => {
                _ = stream.set_nodelay(true);
                return Ok(stream);
            }
            Err(err) => last_error = Some(err),
        }
    }
    Err(match last_error {
        Some(err) if err.kind() == std::io::ErrorKind::ConnectionRefused => {
            Error::ConnectionRefused
        }
        Some(err) => Error::Connect(err),
        None => Error::DestinationNotFound,
    })
}

fn server_name(host: &str) -> Result<ServerName<'static>, Error> {
    match host.parse::<std::net::IpAddr>() {
        Ok(ip) => Ok(ServerName::from(ip)),
        Err(_) => Ok(ServerName::try_from(host.to_string())?),
    }
}

/// The precise wasi:http code for a failed TLS handshake, so a guest can tell an untrusted
/// certificate from a broken connection.
fn tls_error(err: std::io::Error) -> Error {
    match err
        .get_ref()
        .and_then(|e| e.downcast_ref::<rustls::Error>())
    {
        Some(rustls::Error::InvalidCertificate(_)) => Error::TlsCertificateError,
        Some(rustls::Error::AlertReceived(alert)) => Error::TlsAlertReceived {
            alert_id: Some(u8::from(*alert)),
            alert_message: Some(format!("{alert:?}")),
        },
        Some(_) => Error::TlsProtocolError,
        None => Error::Tls(err),
    }
}
