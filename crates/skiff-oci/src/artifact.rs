//! Building what `skiff push` uploads: an app, a single component, or an app as a container
//! image, each as an OCI image manifest and the blobs it names.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use skiff_bundle::{PartContent, PartKind};

use crate::error::OciError;
use crate::media::{self, Descriptor, ImageManifest};

/// What an artifact is, as its config's media type says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArtifactKind {
    /// A whole app: its manifest, components and files, each its own layer.
    App,
    /// One component as the CNCF Wasm artifact.
    Component,
    /// An app folder as the single rootfs layer of a container image.
    Image,
}

/// An artifact ready to push: its manifest and every blob it names (config first).
pub struct Artifact {
    pub kind: ArtifactKind,
    /// The image manifest's exact bytes: its digest is the artifact's.
    pub manifest: Bytes,
    pub blobs: Vec<(Descriptor, Bytes)>,
}

impl std::fmt::Debug for Artifact {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Artifact")
            .field("kind", &self.kind)
            .field("digest", &self.digest())
            .field(
                "blobs",
                &self
                    .blobs
                    .iter()
                    .map(|(d, _)| &d.digest)
                    .collect::<Vec<_>>(),
            )
            .finish()
    }
}

impl Artifact {
    /// The app whose manifest is `manifest_path`, as `skiff deploy` would pack it, but with the
    /// manifest, each component and each `files` mount a layer of its own: pushing an app in
    /// which one component changed uploads that component only.
    pub fn app(manifest_path: &Path) -> Result<Self, OciError> {
        let plan = skiff_bundle::plan(manifest_path)?;
        let parts = plan.parts()?;
        let mut layers = Vec::new();
        for part in parts {
            let (media_type, path, bytes) = match (&part.kind, part.content) {
                (PartKind::Manifest, PartContent::File { path, bytes }) => {
                    (media::APP_MANIFEST_LAYER, Some(path), bytes)
                }
                (PartKind::Component(_), PartContent::File { path, bytes }) => (
                    media::APP_COMPONENT_LAYER,
                    Some(path),
                    gzip(&bytes, manifest_path)?,
                ),
                (_, PartContent::File { path, bytes }) => {
                    (media::APP_FILE_LAYER, Some(path), bytes)
                }
                (_, PartContent::Archive(bytes)) => (media::APP_FILES_LAYER, None, bytes),
            };
            let mut descriptor = Descriptor::of(media_type, &bytes);
            if let Some(path) = path {
                descriptor.annotations.insert(media::TITLE.into(), path);
            }
            if let PartKind::Component(id) = &part.kind {
                descriptor
                    .annotations
                    .insert(media::COMPONENT.into(), id.clone());
            }
            layers.push((descriptor, Bytes::from(bytes)));
        }
        let app = plan.app();
        let config = media::AppConfig {
            name: app.name.to_string(),
            components: app.components.iter().map(|c| c.id.to_string()).collect(),
        };
        Ok(Self::assemble(
            ArtifactKind::App,
            media::APP_CONFIG,
            media::to_json(&config),
            layers,
        ))
    }

    /// One component (or core module) file as the CNCF Wasm OCI artifact, which `wasmtime`,
    /// `wkg` and other tools also read.
    pub fn component(wasm_path: &Path) -> Result<Self, OciError> {
        let bytes = std::fs::read(wasm_path).map_err(|source| OciError::Io {
            op: "read",
            path: wasm_path.to_path_buf(),
            source,
        })?;
        let os = match wasm_layer(&bytes) {
            Some(WasmLayer::Component) => "wasip2",
            Some(WasmLayer::Module) => "wasip1",
            None => {
                return Err(OciError::NotWasm {
                    path: wasm_path.to_path_buf(),
                });
            }
        };
        let layer = Descriptor::of(media::WASM_LAYER, &bytes);
        let config = media::WasmConfig {
            architecture: "wasm".into(),
            os: os.into(),
            layer_digests: vec![layer.digest.clone()],
        };
        Ok(Self::assemble(
            ArtifactKind::Component,
            media::WASM_CONFIG,
            media::to_json(&config),
            vec![(layer, Bytes::from(bytes))],
        ))
    }

    /// The app as an ordinary container image for platform `wasi/wasm`: one gzipped rootfs
    /// layer holding what `skiff deploy` packs (`/skiff.toml`, components, files). Any
    /// containerd pulls and unpacks it, which a shim that runs apps from a rootfs needs.
    pub fn image(manifest_path: &Path) -> Result<Self, OciError> {
        let packed = skiff_bundle::pack(manifest_path)?;
        let mut tar = Vec::new();
        flate2::read::GzDecoder::new(packed.bytes.as_slice())
            .read_to_end(&mut tar)
            .map_err(|source| OciError::Io {
                op: "read back the packed app",
                path: PathBuf::from(manifest_path),
                source,
            })?;
        Ok(Self::rootfs_image(&tar, packed.bytes, "/skiff.toml".into()))
    }

    /// One component (or core module) as an ordinary container image for platform
    /// `wasi/wasm`: its rootfs holds the file alone, at `/NAME.wasm`, the image's entrypoint.
    /// The containerd shim serves a `wasi:http` component, and runs anything else as a
    /// command with the container's arguments (a Kubernetes Job's `args`).
    pub fn component_image(wasm_path: &Path) -> Result<Self, OciError> {
        let io = |op: &'static str| {
            move |source| OciError::Io {
                op,
                path: wasm_path.to_path_buf(),
                source,
            }
        };
        let bytes = std::fs::read(wasm_path).map_err(io("read"))?;
        if wasm_layer(&bytes).is_none() {
            return Err(OciError::NotWasm {
                path: wasm_path.to_path_buf(),
            });
        }
        let name = rootfs_name(wasm_path);
        // The same bytes every time: no owner, no time. Not executable: runwasi runs an
        // executable entrypoint as a Linux program.
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(tar::EntryType::Regular);
        header.set_size(bytes.len() as u64);
        header.set_mode(0o644);
        header.set_mtime(0);
        let mut builder = tar::Builder::new(Vec::new());
        builder
            .append_data(&mut header, &name, bytes.as_slice())
            .map_err(io("pack"))?;
        let tar = builder.into_inner().map_err(io("pack"))?;
        let gzipped = gzip(&tar, wasm_path)?;
        Ok(Self::rootfs_image(&tar, gzipped, format!("/{name}")))
    }

    /// An image of one gzipped rootfs layer (`tar`, compressed as `gzipped`) that runs
    /// `entrypoint`.
    fn rootfs_image(tar: &[u8], gzipped: Vec<u8>, entrypoint: String) -> Self {
        let config = media::ImageConfig {
            architecture: media::IMAGE_ARCHITECTURE.into(),
            os: media::IMAGE_OS.into(),
            rootfs: media::RootFs {
                kind: "layers".into(),
                diff_ids: vec![media::sha256_digest(tar)],
            },
            config: media::ImageRunConfig {
                entrypoint: vec![entrypoint],
            },
        };
        let layer = Descriptor::of(media::IMAGE_LAYER_GZIP, &gzipped);
        Self::assemble(
            ArtifactKind::Image,
            media::IMAGE_CONFIG,
            media::to_json(&config),
            vec![(layer, Bytes::from(gzipped))],
        )
    }

    fn assemble(
        kind: ArtifactKind,
        config_type: &str,
        config: Vec<u8>,
        layers: Vec<(Descriptor, Bytes)>,
    ) -> Self {
        let config_descriptor = Descriptor::of(config_type, &config);
        let manifest = ImageManifest {
            schema_version: 2,
            media_type: Some(media::OCI_MANIFEST.into()),
            artifact_type: None,
            config: config_descriptor.clone(),
            layers: layers.iter().map(|(d, _)| d.clone()).collect(),
            annotations: BTreeMap::new(),
        };
        let mut blobs = vec![(config_descriptor, Bytes::from(config))];
        // A layer listed twice (two mounts of equal content) is one blob.
        for (descriptor, bytes) in layers {
            if !blobs.iter().any(|(d, _)| d.digest == descriptor.digest) {
                blobs.push((descriptor, bytes));
            }
        }
        Artifact {
            kind,
            manifest: Bytes::from(media::to_json(&manifest)),
            blobs,
        }
    }

    /// `sha256:<hex>` of the manifest: what `REF@digest` pins.
    pub fn digest(&self) -> String {
        media::sha256_digest(&self.manifest)
    }
}

/// The name a component gets in an image's rootfs: its file's name when that is a plain one
/// (`cli.wasm`), else `component.wasm`.
fn rootfs_name(wasm_path: &Path) -> String {
    let plain = |name: &&str| {
        name.ends_with(".wasm")
            && name.len() > 5
            && !name.starts_with('.')
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
    };
    wasm_path
        .file_name()
        .and_then(|name| name.to_str())
        .filter(plain)
        .unwrap_or("component.wasm")
        .to_string()
}

/// `bytes` gzip-compressed, the same bytes every time (no name, no time in the header).
fn gzip(bytes: &[u8], manifest_path: &Path) -> Result<Vec<u8>, OciError> {
    use std::io::Write as _;
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    encoder
        .write_all(bytes)
        .and_then(|()| encoder.finish())
        .map_err(|source| OciError::Io {
            op: "compress a component of",
            path: manifest_path.to_path_buf(),
            source,
        })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum WasmLayer {
    Module,
    Component,
}

/// Whether `bytes` start like a core module or a component (bytes 4..8 are the version and
/// layer: layer 0 is a core module, layer 1 a component).
pub(crate) fn wasm_layer(bytes: &[u8]) -> Option<WasmLayer> {
    if bytes.len() < 8 || &bytes[..4] != b"\0asm" {
        return None;
    }
    match bytes[6..8] {
        [0, 0] => Some(WasmLayer::Module),
        [1, 0] => Some(WasmLayer::Component),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn a_component_keeps_a_plain_file_name_in_the_rootfs_and_nothing_else() {
        for (given, expected) in [
            ("target/cli.wasm", "cli.wasm"),
            ("my_tool-2.0.wasm", "my_tool-2.0.wasm"),
            ("../../etc/passwd", "component.wasm"),
            ("with space.wasm", "component.wasm"),
            (".wasm", "component.wasm"),
            (".hidden.wasm", "component.wasm"),
            ("tool.wasm\n", "component.wasm"),
            ("tool", "component.wasm"),
        ] {
            assert_eq!(rootfs_name(Path::new(given)), expected, "{given:?}");
        }
    }

    #[test]
    fn a_component_image_is_reproducible_and_runs_its_component() {
        let dir = tempfile::tempdir().unwrap();
        let wasm = dir.path().join("cli.wasm");
        std::fs::write(&wasm, b"\0asm\x0d\0\x01\0rest").unwrap();
        let first = Artifact::component_image(&wasm).unwrap();
        let second = Artifact::component_image(&wasm).unwrap();
        assert_eq!(first.digest(), second.digest());
        let config: media::ImageConfig = serde_json::from_slice(&first.blobs[0].1).unwrap();
        assert_eq!(config.config.entrypoint, ["/cli.wasm"]);
        std::fs::write(&wasm, b"not wasm").unwrap();
        assert!(matches!(
            Artifact::component_image(&wasm),
            Err(OciError::NotWasm { .. })
        ));
    }
}
