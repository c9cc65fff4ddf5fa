//! TLS client settings: one for guests' outgoing requests (the Mozilla root set), and one per
//! upstream with `https://` addresses, trusting the manifest's `tls.ca` file when it names one
//! (HTTP/1.1 is offered by ALPN by the client that uses it, hyper-rustls).
//!
//! An upstream's CA file is read when the app is loaded, never later: by then a server has
//! checked that the file lies in the app's bundle, which no guest can write to. It is read
//! with a size bound (a manifest could name a device that never ends) and must hold at least
//! one certificate; each must parse as one, so a wrong file fails the load with its reason
//! instead of every request failing with an unknown issuer.

use std::io::Read;
use std::path::Path;
use std::sync::{Arc, OnceLock};

use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use skiff_manifest::App;

use crate::error::{LoadError, LoadErrorKind};

/// The largest `tls.ca` file read: a bundle of a few hundred CA certificates is far below it.
pub const MAX_CA_FILE_BYTES: u64 = 1 << 20;

/// A TLS client configuration with ring, the default protocol versions, no client certificate
/// and the given roots.
pub(crate) fn client_config(roots: rustls::RootCertStore) -> rustls::ClientConfig {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    #[expect(
        clippy::expect_used,
        reason = "ring supports rustls' default TLS versions"
    )]
    rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("ring supports the default TLS versions")
        .with_root_certificates(roots)
        .with_no_client_auth()
}

/// The Mozilla root set.
fn public_roots() -> rustls::RootCertStore {
    rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.into(),
    }
}

/// The public roots, one configuration for the process: what the configurations of guests and
/// upstreams start from, and the one of those that never speak TLS.
pub(crate) fn public_config() -> Arc<rustls::ClientConfig> {
    static CONFIG: OnceLock<Arc<rustls::ClientConfig>> = OnceLock::new();
    CONFIG
        .get_or_init(|| Arc::new(client_config(public_roots())))
        .clone()
}

/// How many TLS 1.3 tickets rustls keeps per server.
const TICKETS_PER_SERVER: usize = 8;

/// `base` with a TLS session cache of its own for `servers` servers (the most recently used):
/// connections made with it resume only sessions that its own connections began. The roots
/// and the verifier are `base`'s, shared.
pub(crate) fn with_own_sessions(
    base: &rustls::ClientConfig,
    servers: usize,
) -> Arc<rustls::ClientConfig> {
    let mut config = base.clone();
    config.resumption =
        rustls::client::Resumption::in_memory_sessions(servers.max(1) * TICKETS_PER_SERVER);
    Arc::new(config)
}

/// The TLS client configuration of each upstream of `app`, in the order of `app.upstreams`.
/// Each upstream with `https://` addresses gets one of its own, with its `tls.ca` or the public
/// roots and its own session cache: its TLS sessions are resumed by its own connections only,
/// never by another app's (or tenant's) connections to the same server.
pub(crate) fn upstream_configs(app: &App) -> Result<Vec<Arc<rustls::ClientConfig>>, LoadError> {
    app.upstreams
        .iter()
        .map(|upstream| {
            if !upstream.urls.iter().any(|url| url.tls) {
                return Ok(public_config());
            }
            let base = match &upstream.tls.ca {
                None => public_config(),
                Some(path) => Arc::new(client_config(read_ca(path).map_err(|reason| {
                    LoadError::new(
                        path,
                        LoadErrorKind::UpstreamCa {
                            upstream: upstream.name.clone(),
                            reason,
                        },
                    )
                })?)),
            };
            Ok(with_own_sessions(&base, upstream.urls.len()))
        })
        .collect()
}

/// The certificates of a PEM file, as roots to trust; why not, as a sentence.
fn read_ca(path: &Path) -> Result<rustls::RootCertStore, String> {
    let unreadable = |e: std::io::Error| format!("cannot be read: {e}");
    // Looked at before it is opened: opening a FIFO waits for a writer.
    if !std::fs::metadata(path).map_err(unreadable)?.is_file() {
        return Err("is not a file".into());
    }
    let mut bytes = Vec::new();
    std::fs::File::open(path)
        .and_then(|file| file.take(MAX_CA_FILE_BYTES + 1).read_to_end(&mut bytes))
        .map_err(unreadable)?;
    if bytes.len() as u64 > MAX_CA_FILE_BYTES {
        return Err(format!(
            "is larger than {} KiB: it should hold CA certificates only",
            MAX_CA_FILE_BYTES >> 10
        ));
    }
    let mut roots = rustls::RootCertStore::empty();
    for (n, cert) in CertificateDer::pem_slice_iter(&bytes).enumerate() {
        let cert = cert.map_err(|e| format!("is not valid PEM (certificate {}): {e}", n + 1))?;
        roots
            .add(cert)
            .map_err(|e| format!("certificate {} is not a usable CA certificate: {e}", n + 1))?;
    }
    if roots.is_empty() {
        return Err(
            "holds no certificate (a `-----BEGIN CERTIFICATE-----` block in PEM)".to_string(),
        );
    }
    Ok(roots)
}
