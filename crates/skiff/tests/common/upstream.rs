//! Real HTTP services on loopback for the gateway tests to put behind skiff: a hyper server
//! (plain, or TLS only) that answers by path, counts what reaches it, and can be told to fail
//! its health check; and a listener that breaks every connection off.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;

/// A service that answers, by the last segment of the path:
///
/// | path | answer |
/// |---|---|
/// | `/healthz` | 200, or 503 once [`TestUpstream::set_healthy`] made it unhealthy |
/// | `/fail` | 500 `upstream failed` |
/// | `/slow?ms=N` | 200 after N ms |
/// | `/big?n=BYTES` | BYTES bytes of `u` |
/// | `/stall?ms=N` | 200 with `start\n` at once, then `end\n` N ms later |
/// | `/ws` with `Upgrade` | 101, then every byte sent back prefixed by `echo:` per read |
/// | anything else | 200: `upstream NAME`, the method, path and query, the headers that tell what a proxy did, then `body=` and the request body |
pub struct TestUpstream {
    pub addr: SocketAddr,
    state: Arc<State>,
    task: tokio::task::JoinHandle<()>,
}

struct State {
    name: String,
    healthy: AtomicBool,
    /// Requests other than health checks.
    requests: AtomicUsize,
    health_checks: AtomicUsize,
    /// TLS handshakes that resumed an earlier session.
    resumed: AtomicUsize,
}

/// Headers the echo reports, when present.
const REPORTED: [&str; 12] = [
    "host",
    "x-seen-by",
    "x-rewritten-by",
    "x-forwarded-for",
    "x-forwarded-host",
    "x-forwarded-proto",
    "skiff-request-id",
    "skiff-client-addr",
    "skiff-component",
    "traceparent",
    "connection",
    "authorization",
];

impl TestUpstream {
    pub async fn start(name: &str) -> TestUpstream {
        Self::start_with(name, None).await
    }

    /// The same service over TLS only, with `cert_pem` (the chain) and `key_pem`. Each
    /// connection serves one request, so that every request makes a handshake (see
    /// [`TestUpstream::resumed`]).
    pub async fn start_tls(name: &str, cert_pem: &str, key_pem: &str) -> TestUpstream {
        use tokio_rustls::rustls;
        use tokio_rustls::rustls::pki_types::pem::PemObject;
        let certs = rustls::pki_types::CertificateDer::pem_slice_iter(cert_pem.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .unwrap();
        let key = rustls::pki_types::PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        Self::start_with(name, Some(acceptor)).await
    }

    async fn start_with(name: &str, tls: Option<tokio_rustls::TlsAcceptor>) -> TestUpstream {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(State {
            name: name.to_string(),
            healthy: AtomicBool::new(true),
            requests: AtomicUsize::new(0),
            health_checks: AtomicUsize::new(0),
            resumed: AtomicUsize::new(0),
        });
        let shared = state.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let state = shared.clone();
                let tls = tls.clone();
                let counts = shared.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |request| {
                        let state = state.clone();
                        async move { Ok::<_, Infallible>(answer(&state, request).await) }
                    });
                    let mut server =
                        hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                    let _ = match tls {
                        None => {
                            server
                                .serve_connection_with_upgrades(TokioIo::new(stream), service)
                                .await
                        }
                        // A client that does not trust the certificate ends here.
                        Some(tls) => match tls.accept(stream).await {
                            Ok(stream) => {
                                let kind = stream.get_ref().1.handshake_kind();
                                if kind == Some(tokio_rustls::rustls::HandshakeKind::Resumed) {
                                    counts.resumed.fetch_add(1, Ordering::SeqCst);
                                }
                                server.http1().keep_alive(false);
                                server
                                    .serve_connection_with_upgrades(TokioIo::new(stream), service)
                                    .await
                            }
                            Err(_) => Ok(()),
                        },
                    };
                });
            }
        });
        TestUpstream { addr, state, task }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Requests that reached it, health checks left out.
    pub fn requests(&self) -> usize {
        self.state.requests.load(Ordering::SeqCst)
    }

    /// TLS handshakes that resumed an earlier session (a TLS service only).
    pub fn resumed(&self) -> usize {
        self.state.resumed.load(Ordering::SeqCst)
    }

    pub fn health_checks(&self) -> usize {
        self.state.health_checks.load(Ordering::SeqCst)
    }

    pub fn set_healthy(&self, healthy: bool) {
        self.state.healthy.store(healthy, Ordering::SeqCst);
    }
}

impl Drop for TestUpstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// What the service answers with: a whole body, or one that streams.
type Body = UnsyncBoxBody<Bytes, Infallible>;

async fn answer(state: &State, request: Request<Incoming>) -> Response<Body> {
    let path = request.uri().path().to_string();
    let query = request.uri().query().unwrap_or("").to_string();
    let param = |name: &str| {
        query
            .split('&')
            .find_map(|pair| pair.strip_prefix(&format!("{name}=")))
            .and_then(|v| v.parse::<u64>().ok())
    };
    if path == "/healthz" {
        state.health_checks.fetch_add(1, Ordering::SeqCst);
        let status = if state.healthy.load(Ordering::SeqCst) {
            200
        } else {
            503
        };
        return respond(status, "health\n".into());
    }
    state.requests.fetch_add(1, Ordering::SeqCst);
    // The last segment picks the answer, whatever route prefix the request came through.
    let last = &path[path.rfind('/').unwrap_or(0)..];
    match last {
        "/fail" => respond(500, "upstream failed\n".into()),
        "/slow" => {
            tokio::time::sleep(Duration::from_millis(param("ms").unwrap_or(1000))).await;
            respond(200, format!("slow {}\n", state.name).into())
        }
        "/big" => respond(200, vec![b'u'; param("n").unwrap_or(0) as usize].into()),
        "/stall" => {
            let stall = Duration::from_millis(param("ms").unwrap_or(1000));
            let pieces =
                futures_util::stream::iter([(Duration::ZERO, "start\n"), (stall, "end\n")]).then(
                    |(wait, text)| async move {
                        tokio::time::sleep(wait).await;
                        Ok::<_, Infallible>(hyper::body::Frame::data(Bytes::from(text)))
                    },
                );
            let mut response = respond(200, Bytes::new());
            *response.body_mut() = StreamBody::new(pieces).boxed_unsync();
            response
        }
        "/ws" if request.headers().contains_key("upgrade") => switch_to_echo(request),
        _ => {
            let mut text = format!(
                "upstream {}\nmethod={}\npath={}\n",
                state.name,
                request.method(),
                request.uri().path_and_query().map_or("/", |pq| pq.as_str())
            );
            for name in REPORTED {
                for value in request.headers().get_all(name) {
                    text.push_str(&format!("{name}={}\n", value.to_str().unwrap_or("?")));
                }
            }
            let body = request.into_body().collect().await.unwrap().to_bytes();
            let mut out = text.into_bytes();
            out.extend_from_slice(b"body=");
            out.extend_from_slice(&body);
            respond(200, out.into())
        }
    }
}

/// Agrees to switch protocols, then echoes what arrives on the switched connection.
fn switch_to_echo(mut request: Request<Incoming>) -> Response<Body> {
    let upgrade = hyper::upgrade::on(&mut request);
    tokio::spawn(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let Ok(upgraded) = upgrade.await else { return };
        let mut io = TokioIo::new(upgraded);
        let mut buffer = [0u8; 4096];
        while let Ok(n) = io.read(&mut buffer).await {
            if n == 0 {
                break;
            }
            let mut out = b"echo:".to_vec();
            out.extend_from_slice(&buffer[..n]);
            if io.write_all(&out).await.is_err() {
                break;
            }
        }
    });
    let mut response = respond(101, Bytes::new());
    let headers = response.headers_mut();
    headers.insert("upgrade", "websocket".parse().unwrap());
    headers.insert("connection", "upgrade".parse().unwrap());
    response
}

fn respond(status: u16, body: Bytes) -> Response<Body> {
    let mut response = Response::new(Full::new(body).boxed_unsync());
    *response.status_mut() = hyper::StatusCode::from_u16(status).unwrap();
    response
        .headers_mut()
        .insert("x-upstream", "yes".parse().unwrap());
    response
}

/// A listener that accepts connections, reads the request's first bytes, and closes the
/// connection without a word: an upstream that crashes mid-request.
pub struct Resetting {
    pub addr: SocketAddr,
    pub accepted: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Resetting {
    pub async fn start() -> Resetting {
        use tokio::io::AsyncReadExt;
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let counter = accepted.clone();
        let task = tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                counter.fetch_add(1, Ordering::SeqCst);
                let mut buffer = [0u8; 1024];
                let _ = stream.read(&mut buffer).await;
                drop(stream);
            }
        });
        Resetting {
            addr,
            accepted,
            task,
        }
    }
}

impl Drop for Resetting {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A loopback port with nothing listening on it.
pub fn closed_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}
