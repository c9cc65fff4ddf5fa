//! The management API over HTTPS (`--api-tls-cert`, `--api-tls-key`): loading and checking the
//! certificate and key, re-reading them when they change on disk (cert-manager renews them in
//! place), and serving the API's router on TLS connections, HTTP/1.1 and HTTP/2 by ALPN.
//!
//! A handshake is bounded ([`HANDSHAKE_TIMEOUT`]) and runs in the connection's own task, so a
//! client that connects and sends nothing holds up no one; a failed handshake is the client's
//! problem and is logged at debug. A plain-HTTP request gets a short 400 that says to use
//! `https://`, rather than bytes a client cannot read.

use std::fmt;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// How long a client may take to complete the TLS handshake after connecting.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// How often, at most, the files are looked at again for a new certificate (on a handshake).
const RELOAD_CHECK: Duration = Duration::from_secs(5);

/// The certificate and key files of the management API, as given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiTlsFiles {
    /// PEM: the server's certificate first, then any intermediates.
    pub cert: PathBuf,
    /// PEM: the private key (PKCS#8, PKCS#1 or SEC1; RSA, ECDSA or Ed25519).
    pub key: PathBuf,
}

/// Why the certificate or key cannot be used. Each message names the flag, the file and the
/// fix.
#[derive(Debug, thiserror::Error)]
pub enum ApiTlsError {
    #[error(
        "cannot read --api-tls-{flag} {}: {error}; give the path of the PEM file (or set \
         SKIFF_API_TLS_{})",
        path.display(),
        flag.to_uppercase()
    )]
    Unreadable {
        flag: &'static str,
        path: PathBuf,
        error: std::io::Error,
    },
    #[error(
        "--api-tls-{flag} {} is not valid PEM ({problem}); give a PEM file as \
         `openssl x509 -outform PEM` (or `openssl pkey`) writes it",
        path.display()
    )]
    NotPem {
        flag: &'static str,
        path: PathBuf,
        problem: String,
    },
    #[error(
        "--api-tls-cert {} holds no certificate (no `-----BEGIN CERTIFICATE-----` block){hint}; \
         give the PEM file of the server's certificate, followed by its intermediates",
        path.display()
    )]
    NoCertificate { path: PathBuf, hint: &'static str },
    #[error(
        "--api-tls-key {} holds no private key (a `-----BEGIN PRIVATE KEY-----`, `RSA PRIVATE \
         KEY` or `EC PRIVATE KEY` block){hint}; give the certificate's private key, unencrypted \
         (`openssl pkey -in KEY -out key.pem` decrypts one)",
        path.display()
    )]
    NoKey { path: PathBuf, hint: &'static str },
    #[error(
        "--api-tls-key {}: the key cannot be used for TLS ({error}); give an RSA (2048 bits or \
         more), ECDSA (P-256 or P-384) or Ed25519 key",
        path.display()
    )]
    UnusableKey { path: PathBuf, error: rustls::Error },
    #[error(
        "--api-tls-key {key} is not the key of the certificate in --api-tls-cert {cert}; give \
         the key the certificate was made for (the two files of one `kubernetes.io/tls` Secret, \
         or of one `openssl req -newkey` run)",
        key = key.display(),
        cert = cert.display()
    )]
    KeyMismatch { cert: PathBuf, key: PathBuf },
    #[error(
        "--api-tls-cert {}: the certificate cannot be used ({error}); give a DER X.509 \
         certificate in PEM",
        path.display()
    )]
    BadCertificate { path: PathBuf, error: rustls::Error },
}

/// The management API's TLS settings, loaded and checked: ready to accept connections.
pub(crate) struct ApiTls {
    config: Arc<rustls::ServerConfig>,
}

impl ApiTls {
    /// Reads and checks both files. The crypto provider is the one the process installed
    /// (skiff installs ring at start), else ring.
    pub(crate) fn load(files: ApiTlsFiles) -> Result<ApiTls, ApiTlsError> {
        let provider = CryptoProvider::get_default()
            .cloned()
            .unwrap_or_else(|| Arc::new(rustls::crypto::ring::default_provider()));
        let stamps = Stamps::of(&files);
        let key = load_certified_key(&files, &provider)?;
        let resolver = ReloadingCert {
            files,
            provider: provider.clone(),
            state: Mutex::new(ReloadState {
                checked: Instant::now(),
                stamps,
                key: Arc::new(key),
            }),
        };
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|error| ApiTlsError::BadCertificate {
                path: resolver.files.cert.clone(),
                error,
            })?
            .with_no_client_auth()
            .with_cert_resolver(Arc::new(resolver));
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(ApiTls {
            config: Arc::new(config),
        })
    }
}

/// Reads the certificate chain and the key, and checks that they belong together.
fn load_certified_key(
    files: &ApiTlsFiles,
    provider: &CryptoProvider,
) -> Result<CertifiedKey, ApiTlsError> {
    let chain = read_certificates(&files.cert)?;
    let key = read_key(&files.key)?;
    let signing_key = provider
        .key_provider
        .load_private_key(key)
        .map_err(|error| ApiTlsError::UnusableKey {
            path: files.key.clone(),
            error,
        })?;
    let certified = CertifiedKey::new(chain, signing_key);
    match certified.keys_match() {
        // A key that cannot tell its public half is taken on trust, as rustls itself does.
        Ok(()) | Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => {
            Ok(certified)
        }
        Err(rustls::Error::InconsistentKeys(_)) => Err(ApiTlsError::KeyMismatch {
            cert: files.cert.clone(),
            key: files.key.clone(),
        }),
        Err(error) => Err(ApiTlsError::BadCertificate {
            path: files.cert.clone(),
            error,
        }),
    }
}

fn read_certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, ApiTlsError> {
    let text = read("cert", path)?;
    let chain = CertificateDer::pem_slice_iter(&text)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| not_pem("cert", path, error))?;
    if chain.is_empty() {
        let hint = if PrivateKeyDer::from_pem_slice(&text).is_ok() {
            " but a private key: are --api-tls-cert and --api-tls-key swapped?"
        } else {
            ""
        };
        return Err(ApiTlsError::NoCertificate {
            path: path.to_path_buf(),
            hint,
        });
    }
    Ok(chain)
}

fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, ApiTlsError> {
    let text = read("key", path)?;
    match PrivateKeyDer::from_pem_slice(&text) {
        Ok(key) => Ok(key),
        Err(rustls::pki_types::pem::Error::NoItemsFound) => {
            let hint = if CertificateDer::pem_slice_iter(&text).any(|item| item.is_ok()) {
                " but a certificate: are --api-tls-cert and --api-tls-key swapped?"
            } else if text.windows(9).any(|w| w == b"ENCRYPTED") {
                " but an encrypted one"
            } else {
                ""
            };
            Err(ApiTlsError::NoKey {
                path: path.to_path_buf(),
                hint,
            })
        }
        Err(error) => Err(not_pem("key", path, error)),
    }
}

fn read(flag: &'static str, path: &Path) -> Result<Vec<u8>, ApiTlsError> {
    std::fs::read(path).map_err(|error| ApiTlsError::Unreadable {
        flag,
        path: path.to_path_buf(),
        error,
    })
}

fn not_pem(flag: &'static str, path: &Path, error: rustls::pki_types::pem::Error) -> ApiTlsError {
    ApiTlsError::NotPem {
        flag,
        path: path.to_path_buf(),
        problem: error.to_string(),
    }
}

/// What tells a changed file from the one loaded: its modification time and length (a renewed
/// Secret on Kubernetes is a new file behind the same link).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Stamps([Option<(SystemTime, u64)>; 2]);

impl Stamps {
    fn of(files: &ApiTlsFiles) -> Stamps {
        let stamp = |path: &Path| {
            let meta = std::fs::metadata(path).ok()?;
            Some((meta.modified().ok()?, meta.len()))
        };
        Stamps([stamp(&files.cert), stamp(&files.key)])
    }
}

/// The certificate the handshakes present; on a handshake at most every [`RELOAD_CHECK`], the
/// files are looked at (two `stat`s) and, if they changed, read again. A new pair that does not
/// load (half written, or a key that does not match yet) leaves the old one in use, with a
/// warning, until the files change again.
struct ReloadingCert {
    files: ApiTlsFiles,
    provider: Arc<CryptoProvider>,
    state: Mutex<ReloadState>,
}

struct ReloadState {
    checked: Instant,
    /// The files as last read (whether or not they loaded).
    stamps: Stamps,
    key: Arc<CertifiedKey>,
}

impl fmt::Debug for ReloadingCert {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReloadingCert")
            .field("files", &self.files)
            .finish_non_exhaustive()
    }
}

impl ResolvesServerCert for ReloadingCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let mut state = self
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if state.checked.elapsed() >= RELOAD_CHECK {
            state.checked = Instant::now();
            let stamps = Stamps::of(&self.files);
            if stamps != state.stamps {
                state.stamps = stamps;
                match load_certified_key(&self.files, &self.provider) {
                    Ok(key) => {
                        tracing::info!(
                            "the management API's certificate changed on disk: now serving the \
                             one in {}",
                            self.files.cert.display()
                        );
                        state.key = Arc::new(key);
                    }
                    Err(err) => tracing::warn!(
                        "the management API's certificate or key changed on disk but cannot be \
                         used, so the previous one is still served: {err}"
                    ),
                }
            }
        }
        Some(state.key.clone())
    }
}

/// Serves `router` over TLS on `listener` until `shutdown` resolves; then stops accepting,
/// lets the calls in flight finish, and returns once every connection has ended. (The caller
/// bounds that wait by the shutdown grace.)
pub(crate) async fn serve(
    listener: TcpListener,
    tls: ApiTls,
    router: axum::Router,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let acceptor = tokio_rustls::TlsAcceptor::from(tls.config);
    let service = TowerToHyperService::new(router);
    let mut builder = auto::Builder::new(TokioExecutor::new());
    // With a timer, hyper bounds how long a request's head may take (its default, 30 s).
    builder.http1().timer(TokioTimer::new());
    builder.http2().timer(TokioTimer::new());
    // Every connection task holds a receiver: shutdown is a message to all of them, and the
    // sender learns when the last one has ended.
    let (stop, stopped) = tokio::sync::watch::channel(());
    tokio::pin!(shutdown);
    loop {
        let (stream, client) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(err) => {
                    // Out of file descriptors and the like: pause rather than spin.
                    tracing::warn!("management API: accept failed: {err}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let acceptor = acceptor.clone();
        let service = service.clone();
        let builder = builder.clone();
        let mut stopped = stopped.clone();
        tokio::spawn(async move {
            let handshake = tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake(acceptor, stream));
            let stream = tokio::select! {
                outcome = handshake => match outcome {
                    Ok(Ok(Some(stream))) => stream,
                    Ok(Ok(None)) => return,
                    Ok(Err(err)) => {
                        tracing::debug!(%client, "management API: TLS handshake failed: {err}");
                        return;
                    }
                    Err(_) => {
                        tracing::debug!(
                            %client,
                            "management API: no TLS handshake within {HANDSHAKE_TIMEOUT:?}; \
                             closing the connection"
                        );
                        return;
                    }
                },
                _ = stopped.changed() => return,
            };
            let connection = builder
                .serve_connection_with_upgrades(TokioIo::new(stream), service)
                .into_owned();
            tokio::pin!(connection);
            tokio::select! {
                result = connection.as_mut() => {
                    if let Err(err) = result {
                        tracing::debug!(%client, "management API: connection ended: {err}");
                    }
                    return;
                }
                _ = stopped.changed() => {}
            }
            // Calls in flight finish; no new one is read.
            connection.as_mut().graceful_shutdown();
            if let Err(err) = connection.await {
                tracing::debug!(%client, "management API: connection ended: {err}");
            }
            drop(stopped);
        });
    }
    drop(listener);
    drop(stopped);
    let _ = stop.send(());
    stop.closed().await;
    Ok(())
}

/// The TLS handshake on `stream`; `None` if the client spoke plain HTTP (it was told to use
/// https://).
async fn handshake(
    acceptor: tokio_rustls::TlsAcceptor,
    stream: TcpStream,
) -> std::io::Result<Option<tokio_rustls::server::TlsStream<TcpStream>>> {
    let mut first = [0u8; 1];
    if stream.peek(&mut first).await? == 0 {
        return Ok(None);
    }
    // A TLS connection opens with a handshake record (type 22); a request line opens with a
    // method in capitals.
    if first[0].is_ascii_uppercase() {
        refuse_plain_http(stream).await;
        return Ok(None);
    }
    acceptor.accept(stream).await.map(Some)
}

/// Answers a plain-HTTP request with the API's 400 (`bad_request`) that says to use
/// https://, then closes.
async fn refuse_plain_http(mut stream: TcpStream) {
    let body = serde_json::to_string(&skiff_api::ErrorBody {
        error: skiff_api::ErrorDetail {
            code: skiff_api::ErrorCode::BadRequest,
            message: "this skiff management API speaks HTTPS only: use https:// instead of \
                      http:// in the server's address"
                .to_string(),
        },
    })
    .unwrap_or_default();
    let answer = format!(
        "HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\n\
         content-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    if stream.write_all(answer.as_bytes()).await.is_err() {
        return;
    }
    let _ = stream.shutdown().await;
    // Read what the client sent (briefly, and not much) before closing: closing with unread
    // bytes would reset the connection, and the client might lose the answer.
    let mut sink = [0u8; 4096];
    let drain = async {
        let mut total = 0;
        while total < 64 * 1024 {
            match stream.read(&mut sink).await {
                Ok(0) | Err(_) => break,
                Ok(n) => total += n,
            }
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(1), drain).await;
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use std::process::Command;

    use super::*;

    /// Makes a key with `openssl GENKEY...` and a self-signed certificate for it, as
    /// `NAME.key` and `NAME.crt` in `dir`; returns (cert, key).
    fn openssl_pair(dir: &Path, name: &str, genkey: &[&str]) -> (PathBuf, PathBuf) {
        let key = dir.join(format!("{name}.key"));
        let cert = dir.join(format!("{name}.crt"));
        let run = |command: &mut Command| {
            let out = command
                .output()
                .expect("openssl is needed for these tests: apt-get install openssl");
            assert!(
                out.status.success(),
                "{command:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        // `-out` right after the subcommand: genrsa takes its size last.
        run(Command::new("openssl")
            .arg(genkey[0])
            .arg("-out")
            .arg(&key)
            .args(&genkey[1..]));
        run(Command::new("openssl")
            .args([
                "req",
                "-x509",
                "-days",
                "2",
                "-subj",
                "/CN=localhost",
                "-key",
            ])
            .arg(&key)
            .arg("-out")
            .arg(&cert));
        (cert, key)
    }

    fn load(cert: &Path, key: &Path) -> Result<ApiTls, ApiTlsError> {
        ApiTls::load(ApiTlsFiles {
            cert: cert.to_path_buf(),
            key: key.to_path_buf(),
        })
    }

    fn message(result: Result<ApiTls, ApiTlsError>) -> String {
        match result {
            Ok(_) => panic!("loaded"),
            Err(err) => err.to_string(),
        }
    }

    #[test]
    fn rsa_ecdsa_and_ed25519_keys_load_in_each_pem_form() {
        let dir = tempfile::tempdir().unwrap();
        let kinds: [(&str, &[&str]); 5] = [
            (
                "rsa-pkcs8",
                &[
                    "genpkey",
                    "-algorithm",
                    "RSA",
                    "-pkeyopt",
                    "rsa_keygen_bits:2048",
                ],
            ),
            ("rsa-pkcs1", &["genrsa", "-traditional", "2048"]),
            (
                "ec-pkcs8",
                &[
                    "genpkey",
                    "-algorithm",
                    "EC",
                    "-pkeyopt",
                    "ec_paramgen_curve:P-256",
                ],
            ),
            (
                "ec-sec1",
                &["ecparam", "-name", "secp384r1", "-genkey", "-noout"],
            ),
            ("ed25519", &["genpkey", "-algorithm", "ED25519"]),
        ];
        for (name, genkey) in kinds {
            let (cert, key) = openssl_pair(dir.path(), name, genkey);
            if let Err(err) = load(&cert, &key) {
                panic!("{name}: {err}");
            }
        }
    }

    #[test]
    fn wrong_files_name_the_flag_the_file_and_the_fix() {
        let dir = tempfile::tempdir().unwrap();
        let ec = [
            "genpkey",
            "-algorithm",
            "EC",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
        ];
        let (cert, key) = openssl_pair(dir.path(), "a", &ec);
        let (_, other_key) = openssl_pair(dir.path(), "b", &ec);

        let text = message(load(&cert, &other_key));
        assert!(
            text.contains("--api-tls-key") && text.contains("is not the key of the certificate"),
            "{text}"
        );
        assert!(text.contains(&*other_key.to_string_lossy()), "{text}");

        let text = message(load(&key, &cert));
        assert!(text.contains("--api-tls-cert"), "{text}");
        assert!(text.contains("swapped"), "{text}");

        let missing = dir.path().join("missing.pem");
        let text = message(load(&missing, &key));
        assert!(
            text.starts_with("cannot read --api-tls-cert")
                && text.contains(&*missing.to_string_lossy())
                && text.contains("SKIFF_API_TLS_CERT"),
            "{text}"
        );

        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "not a certificate\n").unwrap();
        let text = message(load(&empty, &key));
        assert!(text.contains("holds no certificate"), "{text}");
        let text = message(load(&cert, &empty));
        assert!(
            text.contains("--api-tls-key") && text.contains("holds no private key"),
            "{text}"
        );
    }
}
