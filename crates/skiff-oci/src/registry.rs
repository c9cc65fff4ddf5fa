//! Talking to a registry: push an [`Artifact`], pull a reference into the [`Cache`], check a
//! login. `oci-client` speaks the protocol (auth challenges, bearer tokens, chunked uploads,
//! digests checked as blobs arrive); this module decides what to send, what to accept, and what
//! an error means for the user.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::errors::OciDistributionError;
use oci_client::secrets::RegistryAuth;
use tracing::{debug, warn};

use crate::artifact::{Artifact, ArtifactKind, wasm_layer};
use crate::cache::{Cache, Local};
use crate::credentials::{Credential, CredentialStore};
use crate::error::OciError;
use crate::media::{self, Descriptor, ImageManifest};
use crate::reference::ImageRef;

/// How to reach registries.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct RegistryOptions {
    /// Registries (`host[:port]`) that may be reached over plain HTTP or with a certificate
    /// that does not verify. Loopback registries may use plain HTTP without being named here
    /// (their certificates, if they speak TLS, are still verified).
    pub insecure: Vec<String>,
    /// Where saved logins are read; `None` pulls and pushes anonymously.
    pub credentials: Option<CredentialStore>,
    /// The most a pull may download and unpack.
    pub max_pull_bytes: u64,
    /// Ask the registry even for a digest already cached, so a pull succeeds only while the
    /// registry still serves it to these credentials (the content still comes from the
    /// cache). A server sets this: what it deploys must be reachable where the tenant named
    /// it, not merely have been pulled once by someone.
    pub always_ask_registry: bool,
}

impl RegistryOptions {
    /// Logins from docker's file, plain HTTP only for loopback, pulls of at most 1 GiB.
    pub fn new() -> Self {
        RegistryOptions {
            insecure: Vec::new(),
            credentials: CredentialStore::default_location(),
            max_pull_bytes: 1 << 30,
            always_ask_registry: false,
        }
    }

    pub fn always_ask_registry(mut self, yes: bool) -> Self {
        self.always_ask_registry = yes;
        self
    }

    pub fn insecure(mut self, registries: impl IntoIterator<Item = String>) -> Self {
        self.insecure.extend(registries);
        self
    }

    pub fn credentials(mut self, store: Option<CredentialStore>) -> Self {
        self.credentials = store;
        self
    }

    pub fn max_pull_bytes(mut self, bytes: u64) -> Self {
        self.max_pull_bytes = bytes;
        self
    }

    fn named_insecure(&self, registry: &str) -> bool {
        self.insecure
            .iter()
            .any(|r| r.eq_ignore_ascii_case(registry))
    }
}

/// What a push did.
#[derive(Debug, Clone)]
pub struct Pushed {
    /// The reference pinned to the pushed manifest's digest (`REPO@sha256:...`).
    pub pinned: ImageRef,
    pub digest: String,
    /// Blobs (config and layers) sent, those the registry already had in the repository, and
    /// those it mounted from another of its repositories.
    pub uploaded: usize,
    pub reused: usize,
    pub mounted: usize,
    /// Bytes sent, and bytes of every blob the artifact names.
    pub uploaded_bytes: u64,
    pub total_bytes: u64,
}

/// What a pull found.
#[derive(Debug, Clone)]
pub struct Pulled {
    pub digest: String,
    pub local: Local,
    /// How the pull got it.
    pub source: PullSource,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PullSource {
    /// Downloaded now.
    Registry,
    /// Already in the cache (the registry was asked only to resolve a tag, if at all).
    Cache,
    /// The registry could not be reached; the digest the tag last resolved to was used.
    CacheOffline { error: String },
}

/// One registry, reached with the right protocol and credentials.
pub(crate) struct Session {
    pub(crate) client: oci_client::Client,
    pub(crate) auth: RegistryAuth,
    /// Reached over plain HTTP (a loopback or insecure registry that speaks no TLS).
    pub(crate) plain_http: bool,
    /// A certificate that does not verify is accepted (the registry was named insecure).
    pub(crate) unverified: bool,
}

impl Session {
    pub(crate) async fn open(
        reference: &ImageRef,
        options: &RegistryOptions,
    ) -> Result<Self, OciError> {
        let registry = reference.registry();
        let named = options.named_insecure(registry);
        let mut config = ClientConfig {
            accept_invalid_certificates: named,
            connect_timeout: Some(Duration::from_secs(10)),
            read_timeout: Some(Duration::from_secs(60)),
            user_agent: concat!("skiff/", env!("CARGO_PKG_VERSION")),
            ..ClientConfig::default()
        };
        let mut plain_http = false;
        if named || reference.is_loopback() {
            // As docker does for insecure registries: TLS if the registry speaks it, else
            // plain HTTP.
            if !speaks_tls(registry).await {
                debug!(registry, "no TLS: using plain HTTP");
                config.protocol = ClientProtocol::HttpsExcept(vec![registry.to_string()]);
                plain_http = true;
            }
        }
        let client = oci_client::Client::try_from(config).map_err(|e| OciError::Unreachable {
            registry: registry.to_string(),
            detail: format!("cannot set up the HTTP client: {e}"),
            hint: "",
        })?;
        let auth = match &options.credentials {
            None => RegistryAuth::Anonymous,
            Some(store) => match store.get(registry)? {
                Some(Credential { username, secret }) => RegistryAuth::Basic(username, secret),
                None => RegistryAuth::Anonymous,
            },
        };
        client
            .store_auth_if_needed(reference.as_oci().resolve_registry(), &auth)
            .await;
        Ok(Session {
            client,
            auth,
            plain_http,
            unverified: named,
        })
    }
}

/// Whether something answers TLS at `registry` (certificates unchecked: this only picks the
/// protocol; the real connection verifies them unless the registry was named insecure).
async fn speaks_tls(registry: &str) -> bool {
    let Ok(client) = reqwest::Client::builder()
        .danger_accept_invalid_certs(true)
        .timeout(Duration::from_secs(5))
        .build()
    else {
        return false;
    };
    client
        .get(format!("https://{registry}/v2/"))
        .send()
        .await
        .is_ok()
}

/// Pushes `artifact` to `reference` (its tag; a digest in the reference must match).
///
/// Every blob the repository already has (this app's unchanged components, a layer another
/// app shares) is skipped, and one that `cache` knows to be in another repository of the same
/// registry is mounted from there instead of uploaded; the manifest goes last, so a pull never
/// sees it before its blobs.
pub async fn push(
    reference: &ImageRef,
    artifact: &Artifact,
    options: &RegistryOptions,
    cache: &Cache,
) -> Result<Pushed, OciError> {
    let digest = artifact.digest();
    if let Some(pinned) = reference.digest()
        && pinned != digest
    {
        return Err(OciError::BadReference {
            reference: reference.to_string(),
            reason: format!("it pins {pinned}, but the artifact's digest is {digest}"),
        });
    }
    let session = Session::open(reference, options).await?;
    let oci = reference.as_oci();
    let fail = |e| classify(e, reference, "push to");
    let here = reference.location();
    let (mut uploaded, mut reused, mut mounted, mut uploaded_bytes, mut total_bytes) =
        (0, 0, 0, 0, 0);
    for (descriptor, bytes) in &artifact.blobs {
        total_bytes += descriptor.size;
        let digest = &descriptor.digest;
        if session
            .client
            .blob_exists(oci, digest)
            .await
            .map_err(fail)?
        {
            debug!(digest, "already in the repository");
            reused += 1;
        } else if mount(&session, reference, digest, cache).await {
            mounted += 1;
        } else {
            session
                .client
                .push_blob(oci, bytes.clone(), digest)
                .await
                .map_err(fail)?;
            uploaded += 1;
            uploaded_bytes += descriptor.size;
        }
    }
    let content_type = reqwest::header::HeaderValue::from_static(media::OCI_MANIFEST);
    session
        .client
        .push_manifest_raw(oci, artifact.manifest.clone(), content_type)
        .await
        .map_err(fail)?;
    for (descriptor, _) in &artifact.blobs {
        cache.remember_blob(&descriptor.digest, &here);
    }
    Ok(Pushed {
        pinned: reference.with_digest(&digest),
        digest,
        uploaded,
        reused,
        mounted,
        uploaded_bytes,
        total_bytes,
    })
}

/// Asks the registry to mount blob `digest` into `reference`'s repository from another of its
/// repositories where `cache` saw it. Whether it did: a registry that cannot (or a repository
/// the account may not read) answers otherwise, and the blob is uploaded instead.
async fn mount(session: &Session, reference: &ImageRef, digest: &str, cache: &Cache) -> bool {
    let prefix = format!("{}/", reference.registry());
    for location in cache.blob_locations(digest) {
        let Some(repository) = location.strip_prefix(&prefix) else {
            continue;
        };
        if repository == reference.repository() {
            continue;
        }
        let source = oci_client::Reference::with_tag(
            reference.registry().to_string(),
            repository.to_string(),
            "latest".to_string(),
        );
        match session
            .client
            .mount_blob(reference.as_oci(), &source, digest)
            .await
        {
            Ok(()) => {
                debug!(digest, from = repository, "mounted");
                return true;
            }
            Err(e) => debug!(digest, from = repository, "cannot mount: {e}"),
        }
    }
    false
}

/// Pulls `reference` into `cache` and returns where it is.
///
/// A digest already in the cache is used without asking the registry. A tag is resolved
/// once, and the artifact is downloaded only if its digest is not cached yet; if the registry
/// cannot be reached, the digest the tag last resolved to is used (see [`PullSource`]).
/// Everything downloaded is checked against its digest and the app validated before it enters
/// the cache, so a failed pull leaves nothing behind and a tag never moves to a broken app.
pub async fn pull(
    reference: &ImageRef,
    cache: &Cache,
    options: &RegistryOptions,
) -> Result<Pulled, OciError> {
    if let Some(digest) = reference.digest()
        && !options.always_ask_registry
        && let Some(local) = cache.lookup(digest)
    {
        return Ok(Pulled {
            digest: digest.to_string(),
            local,
            source: PullSource::Cache,
        });
    }
    let key = reference.to_string();
    let offline = |error: OciError| -> Result<Pulled, OciError> {
        if let OciError::Unreachable { .. } = error
            && reference.digest().is_none()
            && !options.always_ask_registry
            && let Some(digest) = cache.resolved(&key)
            && let Some(local) = cache.lookup(&digest)
        {
            warn!(%reference, %digest, "registry unreachable; using the cached digest");
            return Ok(Pulled {
                digest,
                local,
                source: PullSource::CacheOffline {
                    error: error.to_string(),
                },
            });
        }
        Err(error)
    };
    let session = match Session::open(reference, options).await {
        Ok(session) => session,
        Err(e) => return offline(e),
    };
    let oci = reference.as_oci();
    let accepted = [
        media::OCI_MANIFEST,
        media::DOCKER_MANIFEST,
        media::OCI_INDEX,
        media::DOCKER_LIST,
    ];
    let (manifest_bytes, digest) = match session
        .client
        .pull_manifest_raw(oci, &session.auth, &accepted)
        .await
    {
        Ok(found) => found,
        Err(e) => return offline(classify(e, reference, "pull from")),
    };
    if let Some(local) = cache.lookup(&digest) {
        cache.record(&key, &digest)?;
        return Ok(Pulled {
            digest,
            local,
            source: PullSource::Cache,
        });
    }
    let manifest = parse_manifest(reference, &manifest_bytes)?;
    let kind = kind_of(reference, &manifest)?;
    let declared: u64 = manifest.layers.iter().map(|l| l.size).sum();
    if declared > options.max_pull_bytes {
        return Err(OciError::TooLarge {
            reference: reference.to_string(),
            what: "the sum of its layers".into(),
            size: declared,
            limit: options.max_pull_bytes,
        });
    }
    let staging = cache.staging()?;
    let mut fetched = Vec::with_capacity(manifest.layers.len());
    for layer in &manifest.layers {
        fetched.push(fetch(&session, reference, layer).await?);
    }
    let invalid = |reason: String| OciError::Invalid {
        reference: reference.to_string(),
        reason,
    };
    match kind {
        ArtifactKind::Component => {
            if wasm_layer(&fetched[0]).is_none() {
                return Err(invalid("its layer is not a WebAssembly file".into()));
            }
            let path = staging.path().join("component.wasm");
            std::fs::write(&path, &fetched[0]).map_err(|source| OciError::Io {
                op: "write",
                path,
                source,
            })?;
        }
        ArtifactKind::App | ArtifactKind::Image => {
            let app_dir = staging.path().join("app");
            std::fs::create_dir(&app_dir).map_err(|source| OciError::Io {
                op: "create",
                path: app_dir.clone(),
                source,
            })?;
            let limits = skiff_bundle::BundleLimits::new(options.max_pull_bytes, 100_000);
            let mut unpacker = skiff_bundle::Unpacker::new(&app_dir, &limits)
                .map_err(|e| invalid(e.to_string()))?;
            for (layer, bytes) in manifest.layers.iter().zip(&fetched) {
                let written = match (kind, layer.title()) {
                    (ArtifactKind::App, Some(title))
                        if layer.media_type == media::APP_COMPONENT_LAYER =>
                    {
                        let wasm = gunzip(bytes, options.max_pull_bytes).map_err(|e| {
                            invalid(format!(
                                "its layer {} cannot be decompressed: {e}",
                                layer.digest
                            ))
                        })?;
                        unpacker.file(title, &wasm)
                    }
                    (ArtifactKind::App, Some(title))
                        if layer.media_type != media::APP_FILES_LAYER =>
                    {
                        unpacker.file(title, bytes)
                    }
                    _ => unpacker.archive(bytes),
                };
                written.map_err(|e| invalid(e.to_string()))?;
            }
            let unpacked = unpacker.finish().map_err(|e| match e {
                skiff_bundle::BundleError::NoManifest if kind == ArtifactKind::Image => invalid(
                    "it is a container image without /skiff.toml: not an app pushed with \
                     `skiff push --image FOLDER`. A component pushed with `skiff push --image \
                     FILE.wasm` is for the containerd shim; push it without --image to run \
                     it here"
                        .into(),
                ),
                e => invalid(e.to_string()),
            })?;
            // The manifest's own checks include that every `source` is a Wasm component.
            let app = skiff_manifest::load_in_bundle(&unpacked.manifest_path)
                .map_err(|e| invalid(format!("its skiff.toml is invalid:\n{e}")))?;
            skiff_bundle::confine(&app, &app_dir).map_err(|e| invalid(e.to_string()))?;
        }
    }
    let local = cache.commit(staging, &digest)?;
    cache.record(&key, &digest)?;
    let here = reference.location();
    for layer in std::iter::once(&manifest.config).chain(&manifest.layers) {
        cache.remember_blob(&layer.digest, &here);
    }
    Ok(Pulled {
        digest,
        local,
        source: PullSource::Registry,
    })
}

/// Checks `credential` against `registry` without saving it: a login that would fail at the
/// first push is refused at once.
pub async fn check_login(
    registry: &str,
    credential: &Credential,
    options: &RegistryOptions,
) -> Result<(), OciError> {
    // Any repository name does: the check is whether the registry (or its token service)
    // accepts the account, which it decides before looking at the repository.
    let reference = ImageRef::parse(&format!("{registry}/skiff-login-check:latest"))?;
    let session = Session::open(&reference, &options.clone().credentials(None)).await?;
    let auth = RegistryAuth::Basic(credential.username.clone(), credential.secret.clone());
    let refused = |detail: String| OciError::Unauthorized {
        reference: registry.to_string(),
        registry: registry.to_string(),
        action: "log in to",
        detail,
    };
    match session
        .client
        .auth(
            reference.as_oci(),
            &auth,
            oci_client::RegistryOperation::Pull,
        )
        .await
    {
        // A bearer token: the token service accepted the account.
        Ok(Some(_)) => Ok(()),
        // Basic auth (or none): the registry itself must accept a request carrying it.
        Ok(None) => {
            match session
                .client
                .pull_manifest_raw(reference.as_oci(), &auth, &[media::OCI_MANIFEST])
                .await
            {
                Ok(_) => Ok(()),
                Err(e) => match classify(e, &reference, "pull from") {
                    OciError::NotFound { .. } => Ok(()),
                    OciError::Unauthorized { detail, .. } => Err(refused(detail)),
                    other => Err(other),
                },
            }
        }
        Err(e) => match classify(e, &reference, "log in to") {
            OciError::Unauthorized { detail, .. } => Err(refused(detail)),
            other => Err(other),
        },
    }
}

/// `bytes` decompressed, at most `limit` of them: a small layer may not unpack to gigabytes.
fn gunzip(bytes: &[u8], limit: u64) -> std::io::Result<Vec<u8>> {
    use std::io::Read as _;
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(bytes)
        .take(limit.saturating_add(1))
        .read_to_end(&mut out)?;
    if out.len() as u64 > limit {
        return Err(std::io::Error::other(format!(
            "it unpacks to more than {limit} bytes"
        )));
    }
    Ok(out)
}

fn parse_manifest(reference: &ImageRef, bytes: &[u8]) -> Result<ImageManifest, OciError> {
    let not = |what: String| OciError::NotSkiff {
        reference: reference.to_string(),
        what,
    };
    let value: serde_json::Value = serde_json::from_slice(bytes)
        .map_err(|e| not(format!("a manifest that is not JSON ({e})")))?;
    let media_type = value
        .get("mediaType")
        .and_then(serde_json::Value::as_str)
        .unwrap_or(media::OCI_MANIFEST);
    if media_type == media::OCI_INDEX || media_type == media::DOCKER_LIST {
        return Err(not(
            "an image index (a list of manifests for several platforms)".into(),
        ));
    }
    if media_type != media::OCI_MANIFEST && media_type != media::DOCKER_MANIFEST {
        return Err(not(format!("a manifest of type {media_type}")));
    }
    serde_json::from_value(value).map_err(|e| not(format!("a manifest skiff cannot read ({e})")))
}

/// What the manifest holds, from its config's media type and its layers.
fn kind_of(reference: &ImageRef, manifest: &ImageManifest) -> Result<ArtifactKind, OciError> {
    let not = |what: String| OciError::NotSkiff {
        reference: reference.to_string(),
        what,
    };
    let layer_types: Vec<&str> = manifest
        .layers
        .iter()
        .map(|l| l.media_type.as_str())
        .collect();
    match manifest.config.media_type.as_str() {
        media::APP_CONFIG => {
            for layer in &manifest.layers {
                let titled = matches!(
                    layer.media_type.as_str(),
                    media::APP_MANIFEST_LAYER
                        | media::APP_COMPONENT_LAYER
                        | media::WASM_LAYER
                        | media::APP_FILE_LAYER
                );
                if !(titled && layer.title().is_some()
                    || layer.media_type == media::APP_FILES_LAYER)
                {
                    return Err(OciError::Invalid {
                        reference: reference.to_string(),
                        reason: format!(
                            "its layer {} is of type {} {}; it was not pushed by this version of \
                             skiff",
                            layer.digest,
                            layer.media_type,
                            if titled {
                                "without a title"
                            } else {
                                "unknown to skiff"
                            }
                        ),
                    });
                }
            }
            Ok(ArtifactKind::App)
        }
        media::WASM_CONFIG => match layer_types.as_slice() {
            [media::WASM_LAYER] | [oci_client::manifest::WASM_LAYER_MEDIA_TYPE] => {
                Ok(ArtifactKind::Component)
            }
            _ => Err(not(format!(
                "a Wasm artifact with layers {layer_types:?} (skiff runs one `application/wasm` \
                 layer)"
            ))),
        },
        media::IMAGE_CONFIG | media::DOCKER_IMAGE_CONFIG => match layer_types.as_slice() {
            [media::IMAGE_LAYER_GZIP | media::IMAGE_LAYER_TAR | media::DOCKER_LAYER_GZIP] => {
                Ok(ArtifactKind::Image)
            }
            _ => Err(not(format!(
                "a container image with {} layers (`skiff push --image` makes one)",
                layer_types.len()
            ))),
        },
        other => Err(not(format!("an artifact whose config is of type {other}"))),
    }
}

/// Downloads one blob, at most its declared size, its digest checked by the client.
pub(crate) async fn fetch(
    session: &Session,
    reference: &ImageRef,
    layer: &Descriptor,
) -> Result<Vec<u8>, OciError> {
    let descriptor = oci_client::manifest::OciDescriptor {
        media_type: layer.media_type.clone(),
        digest: layer.digest.clone(),
        size: i64::try_from(layer.size).unwrap_or(i64::MAX),
        ..Default::default()
    };
    let mut sink = Capped {
        bytes: Vec::with_capacity(usize::try_from(layer.size.min(64 << 20)).unwrap_or(0)),
        limit: layer.size,
    };
    match session
        .client
        .pull_blob(reference.as_oci(), &descriptor, &mut sink)
        .await
    {
        Ok(()) if sink.bytes.len() as u64 == layer.size => Ok(sink.bytes),
        Ok(()) => Err(OciError::Digest {
            reference: reference.to_string(),
            blob: layer.digest.clone(),
            detail: format!(
                "the manifest says {} bytes, the registry sent {}",
                layer.size,
                sink.bytes.len()
            ),
        }),
        Err(OciDistributionError::IoError(e)) if e.kind() == std::io::ErrorKind::FileTooLarge => {
            Err(OciError::Digest {
                reference: reference.to_string(),
                blob: layer.digest.clone(),
                detail: format!(
                    "the registry sent more than the {} bytes the manifest says",
                    layer.size
                ),
            })
        }
        Err(e) => Err(classify(e, reference, "pull from")),
    }
}

/// A buffer that refuses to grow past the size a manifest declared.
struct Capped {
    bytes: Vec<u8>,
    limit: u64,
}

impl tokio::io::AsyncWrite for Capped {
    fn poll_write(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        if self.bytes.len() as u64 + buf.len() as u64 > self.limit {
            return Poll::Ready(Err(std::io::Error::new(
                std::io::ErrorKind::FileTooLarge,
                "more bytes than declared",
            )));
        }
        self.bytes.extend_from_slice(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

/// What an `oci-client` error means for the user.
pub(crate) fn classify(
    error: OciDistributionError,
    reference: &ImageRef,
    action: &'static str,
) -> OciError {
    use OciDistributionError as E;
    let registry = reference.registry().to_string();
    let unauthorized = |detail: String| OciError::Unauthorized {
        reference: reference.to_string(),
        registry: registry.clone(),
        action,
        detail,
    };
    let not_found = || OciError::NotFound {
        reference: reference.to_string(),
    };
    match error {
        E::UnauthorizedError { .. } => unauthorized("401 Unauthorized".into()),
        E::AuthenticationFailure(detail) => unauthorized(detail),
        E::ImageManifestNotFoundError(_) => not_found(),
        E::RegistryError { envelope, .. } => {
            let codes: Vec<String> = envelope
                .errors
                .iter()
                .map(|e| format!("{:?}", e.code))
                .collect();
            let text = envelope
                .errors
                .iter()
                .map(|e| format!("{:?}: {}", e.code, e.message))
                .collect::<Vec<_>>()
                .join("; ");
            if codes.iter().any(|c| c.contains("Unknown")) {
                not_found()
            } else if codes
                .iter()
                .any(|c| c.contains("Unauthorized") || c.contains("Denied"))
            {
                unauthorized(text)
            } else {
                OciError::Registry {
                    reference: reference.to_string(),
                    detail: text,
                }
            }
        }
        E::ServerError {
            code: 401, message, ..
        }
        | E::ServerError {
            code: 403, message, ..
        } => unauthorized(message),
        E::ServerError { code: 404, .. } => not_found(),
        E::DigestError(e) => OciError::Digest {
            reference: reference.to_string(),
            blob: "a blob".into(),
            detail: e.to_string(),
        },
        E::RequestError(e) if matches!(e.status().map(|s| s.as_u16()), Some(401 | 403)) => {
            unauthorized(e.status().map(|s| s.to_string()).unwrap_or_default())
        }
        E::RequestError(e) if e.status().is_some_and(|s| s.as_u16() == 404) => not_found(),
        E::RequestError(e) if e.is_connect() || e.is_timeout() || e.is_request() => {
            OciError::Unreachable {
                registry,
                detail: chain(&e),
                hint: if reference.is_loopback() {
                    ""
                } else {
                    "; for a registry without TLS, name it with --insecure"
                },
            }
        }
        other => OciError::Registry {
            reference: reference.to_string(),
            detail: chain(&other),
        },
    }
}

/// An error with its causes, on one line.
fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let next = cause.to_string();
        if !text.contains(&next) {
            text.push_str(": ");
            text.push_str(&next);
        }
        source = cause.source();
    }
    text
}
