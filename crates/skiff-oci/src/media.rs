//! The media types skiff writes and reads, and the small JSON documents (image manifest and
//! configs) that go with them. `docs/oci.md` describes them for people.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// An OCI image manifest: what every artifact skiff pushes is.
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// Docker's image manifest, which registries and tools still produce for container images.
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
/// Indexes (multi-platform lists): named in errors, never pushed.
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";

/// The config of a whole skiff app.
pub const APP_CONFIG: &str = "application/vnd.skiff.app.config.v1+json";
/// The app's manifest, stored as `skiff.toml`.
pub const APP_MANIFEST_LAYER: &str = "application/vnd.skiff.app.manifest.v1+toml";
/// A component of an app: its Wasm file, gzip-compressed (Wasm shrinks to about a third).
pub const APP_COMPONENT_LAYER: &str = "application/vnd.skiff.app.component.v1.wasm+gzip";
/// A single file of an app other than its manifest and components (a mounted file).
pub const APP_FILE_LAYER: &str = "application/vnd.skiff.app.file.v1";
/// Several files of an app (a mounted folder) as a tar.gz of paths in the app folder.
pub const APP_FILES_LAYER: &str = "application/vnd.skiff.app.files.v1.tar+gzip";

/// The CNCF TAG Runtime's Wasm artifact: its config, and its one layer (uncompressed, as the
/// spec has it).
pub const WASM_CONFIG: &str = "application/vnd.wasm.config.v0+json";
pub const WASM_LAYER: &str = "application/wasm";

/// A container image's config and its rootfs layers.
pub const IMAGE_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const DOCKER_IMAGE_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
pub const IMAGE_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
pub const IMAGE_LAYER_TAR: &str = "application/vnd.oci.image.layer.v1.tar";
pub const DOCKER_LAYER_GZIP: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";

/// The annotation that names a layer's path in the app folder (as ORAS uses it for files).
pub const TITLE: &str = "org.opencontainers.image.title";
/// The annotation on a component layer naming the component it is the source of.
pub const COMPONENT: &str = "dev.skiff.component";

/// The platform a `--image` push declares: the one runwasi's shims and Docker's Wasm support
/// select (`ctr pull --platform wasi/wasm`).
pub const IMAGE_OS: &str = "wasi";
pub const IMAGE_ARCHITECTURE: &str = "wasm";

/// A content descriptor: a blob's media type, digest and size.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    pub media_type: String,
    pub digest: String,
    pub size: u64,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

impl Descriptor {
    /// The descriptor of `bytes` as `media_type`.
    pub fn of(media_type: &str, bytes: &[u8]) -> Self {
        Descriptor {
            media_type: media_type.to_string(),
            digest: sha256_digest(bytes),
            size: bytes.len() as u64,
            annotations: BTreeMap::new(),
        }
    }

    /// The path of the app folder the layer holds, from its title annotation.
    pub fn title(&self) -> Option<&str> {
        self.annotations.get(TITLE).map(String::as_str)
    }
}

/// An OCI image manifest (schema 2), as skiff writes it and reads it back.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ImageManifest {
    pub schema_version: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact_type: Option<String>,
    pub config: Descriptor,
    pub layers: Vec<Descriptor>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

/// The config of a skiff app artifact. Not needed to unpack the app (the layers' titles say
/// where each goes); it tells a person or a tool what the artifact is without fetching it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AppConfig {
    /// The app's name from its manifest.
    pub name: String,
    /// The ids of its components, in manifest order.
    pub components: Vec<String>,
}

/// The config of a CNCF Wasm artifact (`application/vnd.wasm.config.v0+json`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WasmConfig {
    pub architecture: String,
    pub os: String,
    pub layer_digests: Vec<String>,
}

/// The few fields of an OCI image config that a `--image` push sets.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ImageConfig {
    pub architecture: String,
    pub os: String,
    pub rootfs: RootFs,
    pub config: ImageRunConfig,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RootFs {
    #[serde(rename = "type")]
    pub kind: String,
    pub diff_ids: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ImageRunConfig {
    /// `/skiff.toml`: what a shim runs is the app that manifest describes.
    #[serde(rename = "Entrypoint")]
    pub entrypoint: Vec<String>,
}

/// `sha256:<hex>` of `bytes`.
pub fn sha256_digest(bytes: &[u8]) -> String {
    use sha2::Digest as _;
    let hash = sha2::Sha256::digest(bytes);
    let mut out = String::with_capacity(7 + 64);
    out.push_str("sha256:");
    for byte in hash {
        out.push_str(&format!("{byte:02x}"));
    }
    out
}

/// The canonical bytes of a JSON document (sorted keys come from the structs' field order and
/// `BTreeMap`s; no whitespace), so the same artifact always has the same digest.
pub fn to_json(value: &impl Serialize) -> Vec<u8> {
    // Serializing these plain structs cannot fail: no maps with non-string keys, no
    // `Serialize` impls that error.
    serde_json::to_vec(value).unwrap_or_default()
}
