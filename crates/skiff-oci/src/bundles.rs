//! Deployed bundles kept in a registry, for the hosts of a `skiff server` cluster: each one, as
//! the tenant uploaded it, is the single layer of an artifact tagged with the bundle's id in a
//! repository of the operator's. Hosts pull it by that tag the first time they load the
//! version, and the host that drops the version deletes the tag's manifest (when the registry
//! allows deletes; otherwise the registry's retention policy must prune the repository).

use bytes::Bytes;
use oci_client::secrets::RegistryAuth;
use oci_client::token_cache::RegistryOperation;

use crate::error::OciError;
use crate::media::{self, Descriptor, ImageManifest};
use crate::reference::ImageRef;
use crate::registry::{RegistryOptions, Session, classify, fetch};

/// The artifact type of a stored bundle.
pub const BUNDLE_ARTIFACT: &str = "application/vnd.skiff.bundle.v1";
/// Its one layer: the bundle as uploaded (tar.gz, tar or zip; the server sniffs which).
pub const BUNDLE_LAYER: &str = "application/vnd.skiff.bundle.v1.upload";
/// The OCI empty descriptor's media type and content: an artifact with no config.
const EMPTY_CONFIG: &str = "application/vnd.oci.empty.v1+json";
const EMPTY: &[u8] = b"{}";

/// Stores `packed` as the artifact `reference` (a tagged reference) points at. A layer the
/// repository already has is not sent again.
pub async fn push_bundle(
    reference: &ImageRef,
    packed: Bytes,
    options: &RegistryOptions,
) -> Result<(), OciError> {
    let session = Session::open(reference, options).await?;
    let oci = reference.as_oci();
    let fail = |e| classify(e, reference, "push to");
    let config = Descriptor::of(EMPTY_CONFIG, EMPTY);
    let layer = Descriptor::of(BUNDLE_LAYER, &packed);
    for (descriptor, bytes) in [(&config, Bytes::from_static(EMPTY)), (&layer, packed)] {
        if !session
            .client
            .blob_exists(oci, &descriptor.digest)
            .await
            .map_err(fail)?
        {
            session
                .client
                .push_blob(oci, bytes, &descriptor.digest)
                .await
                .map_err(fail)?;
        }
    }
    let manifest = ImageManifest {
        schema_version: 2,
        media_type: Some(media::OCI_MANIFEST.into()),
        artifact_type: Some(BUNDLE_ARTIFACT.into()),
        config,
        layers: vec![layer],
        annotations: Default::default(),
    };
    let content_type = reqwest::header::HeaderValue::from_static(media::OCI_MANIFEST);
    session
        .client
        .push_manifest_raw(oci, media::to_json(&manifest), content_type)
        .await
        .map_err(fail)?;
    Ok(())
}

/// The bundle `reference` points at: at most `options.max_pull_bytes`, its digest checked.
pub async fn pull_bundle(
    reference: &ImageRef,
    options: &RegistryOptions,
) -> Result<Vec<u8>, OciError> {
    let session = Session::open(reference, options).await?;
    let (raw, _) = session
        .client
        .pull_manifest_raw(reference.as_oci(), &session.auth, &[media::OCI_MANIFEST])
        .await
        .map_err(|e| classify(e, reference, "pull from"))?;
    let not_a_bundle = |what: String| OciError::NotSkiff {
        reference: reference.to_string(),
        what,
    };
    let manifest: ImageManifest = serde_json::from_slice(&raw)
        .map_err(|e| not_a_bundle(format!("a manifest skiff cannot read ({e})")))?;
    let layer = match (
        manifest.artifact_type.as_deref(),
        manifest.layers.as_slice(),
    ) {
        (Some(BUNDLE_ARTIFACT), [layer]) if layer.media_type == BUNDLE_LAYER => layer,
        (kind, layers) => {
            return Err(not_a_bundle(format!(
                "an artifact of type {} with {} layer(s), not a stored bundle",
                kind.unwrap_or("(none)"),
                layers.len()
            )));
        }
    };
    if layer.size > options.max_pull_bytes {
        return Err(OciError::TooLarge {
            reference: reference.to_string(),
            what: "the bundle".into(),
            size: layer.size,
            limit: options.max_pull_bytes,
        });
    }
    fetch(&session, reference, layer).await
}

/// Deletes the manifest `reference` (a tag) points at, so that the registry's garbage
/// collection can free its layer. Already gone is done.
pub async fn delete_bundle(
    reference: &ImageRef,
    options: &RegistryOptions,
) -> Result<(), OciError> {
    let session = Session::open(reference, options).await?;
    let oci = reference.as_oci();
    let fail = |e| classify(e, reference, "delete from");
    let digest = match session
        .client
        .fetch_manifest_digest(oci, &session.auth)
        .await
    {
        Ok(digest) => digest,
        Err(e) => {
            return match classify(e, reference, "delete from") {
                OciError::NotFound { .. } => Ok(()),
                other => Err(other),
            };
        }
    };
    // oci-client has no delete: the distribution API's DELETE, with the session's token (a
    // bearer one if the registry hands them out) or login.
    let token = session
        .client
        .auth(oci, &session.auth, RegistryOperation::Push)
        .await
        .map_err(fail)?;
    let scheme = if session.plain_http { "http" } else { "https" };
    let url = format!(
        "{scheme}://{}/v2/{}/manifests/{digest}",
        reference.registry(),
        reference.repository()
    );
    let client = reqwest::Client::builder()
        .danger_accept_invalid_certs(session.unverified)
        .timeout(std::time::Duration::from_secs(30))
        .build()
        .map_err(|e| OciError::Unreachable {
            registry: reference.registry().to_string(),
            detail: format!("cannot set up the HTTP client: {e}"),
            hint: "",
        })?;
    let request = match (&token, &session.auth) {
        (Some(token), _) => client.delete(&url).bearer_auth(token),
        (None, RegistryAuth::Basic(user, secret)) => {
            client.delete(&url).basic_auth(user, Some(secret))
        }
        (None, _) => client.delete(&url),
    };
    let response = request.send().await.map_err(|e| OciError::Unreachable {
        registry: reference.registry().to_string(),
        detail: e.to_string(),
        hint: "",
    })?;
    match response.status().as_u16() {
        200..=299 | 404 => Ok(()),
        status => Err(OciError::Registry {
            reference: reference.to_string(),
            detail: format!(
                "DELETE of the manifest answered {status} (a registry that does not allow \
                 deletes answers 405; docker's registry needs REGISTRY_STORAGE_DELETE_ENABLED)"
            ),
        }),
    }
}
