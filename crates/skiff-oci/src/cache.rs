//! The local cache of pulled artifacts, by digest, so an app pulled once runs offline and is
//! never fetched twice.
//!
//! ```text
//! CACHE/sha256/<hex>/app/skiff.toml     a pulled app (or image) folder, as unpacked
//! CACHE/sha256/<hex>/component.wasm     a pulled component
//! CACHE/refs/<hash of the reference>    "reference\ndigest": the last digest a tag resolved to
//! CACHE/blobs/<hex>                     "registry/repository" lines: where a blob was seen,
//!                                       so a push to another repository can mount it
//! CACHE/tmp/                            pulls in progress; renamed into sha256/ once valid
//! ```
//!
//! An entry appears whole or not at all: a pull unpacks and validates under `tmp/`, then
//! renames. Entries are never changed afterwards: their name is the digest of what they hold.

use std::io::Write;
use std::path::{Path, PathBuf};

use crate::error::OciError;
use crate::media::sha256_digest;

/// What a pulled artifact is on disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Local {
    /// An app folder; this is its `skiff.toml`.
    App { manifest: PathBuf },
    /// A single component (or core module) file.
    Component { wasm: PathBuf },
}

/// The cache folder.
#[derive(Debug, Clone)]
pub struct Cache {
    root: PathBuf,
}

impl Cache {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Cache { root: root.into() }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The cached artifact with `digest`, if it was pulled before.
    pub fn lookup(&self, digest: &str) -> Option<Local> {
        let dir = self.entry(digest)?;
        let manifest = dir.join("app").join("skiff.toml");
        if manifest.is_file() {
            return Some(Local::App { manifest });
        }
        let wasm = dir.join("component.wasm");
        wasm.is_file().then_some(Local::Component { wasm })
    }

    /// The digest `reference` (a tag) last resolved to in a successful pull.
    pub fn resolved(&self, reference: &str) -> Option<String> {
        let text = std::fs::read_to_string(self.ref_file(reference)).ok()?;
        let (name, digest) = text.split_once('\n')?;
        let digest = digest.trim();
        (name == reference && hex_of(digest).is_some()).then(|| digest.to_string())
    }

    /// Records that `reference` resolved to `digest`.
    pub(crate) fn record(&self, reference: &str, digest: &str) -> Result<(), OciError> {
        let path = self.ref_file(reference);
        let dir = self.root.join("refs");
        let io = |source| OciError::Io {
            op: "write",
            path: path.clone(),
            source,
        };
        std::fs::create_dir_all(&dir).map_err(io)?;
        let mut file = tempfile::NamedTempFile::new_in(&dir).map_err(io)?;
        file.write_all(format!("{reference}\n{digest}\n").as_bytes())
            .map_err(io)?;
        file.persist(&path).map_err(|e| io(e.error))?;
        Ok(())
    }

    /// The repositories (`registry/repository`) where blob `digest` was pushed or pulled.
    pub(crate) fn blob_locations(&self, digest: &str) -> Vec<String> {
        let Some(hex) = hex_of(digest) else {
            return Vec::new();
        };
        std::fs::read_to_string(self.root.join("blobs").join(hex))
            .map(|text| text.lines().map(str::to_string).collect())
            .unwrap_or_default()
    }

    /// Remembers that blob `digest` is in `location` (`registry/repository`). Best effort:
    /// what it saves is an upload later, and losing it costs only that.
    pub(crate) fn remember_blob(&self, digest: &str, location: &str) {
        let Some(hex) = hex_of(digest) else {
            return;
        };
        let mut locations = self.blob_locations(digest);
        if locations.iter().any(|l| l == location) {
            return;
        }
        locations.push(location.to_string());
        // The most recent few are enough to find one to mount from.
        let keep = locations.len().saturating_sub(8);
        let dir = self.root.join("blobs");
        let write = || -> std::io::Result<()> {
            std::fs::create_dir_all(&dir)?;
            let mut file = tempfile::NamedTempFile::new_in(&dir)?;
            for location in &locations[keep..] {
                writeln!(file, "{location}")?;
            }
            file.persist(dir.join(hex))?;
            Ok(())
        };
        if let Err(e) = write() {
            tracing::debug!("cannot remember where {digest} is: {e}");
        }
    }

    /// A fresh folder to pull into, removed when dropped unless committed.
    pub(crate) fn staging(&self) -> Result<tempfile::TempDir, OciError> {
        let dir = self.root.join("tmp");
        let io = |source| OciError::Io {
            op: "create a folder in the cache",
            path: dir.clone(),
            source,
        };
        std::fs::create_dir_all(&dir).map_err(io)?;
        tempfile::Builder::new()
            .prefix("pull-")
            .tempdir_in(&dir)
            .map_err(io)
    }

    /// Moves a validated pull into place under its digest. If another pull of the same digest
    /// got there first, its entry (the same bytes) is kept.
    pub(crate) fn commit(
        &self,
        staging: tempfile::TempDir,
        digest: &str,
    ) -> Result<Local, OciError> {
        let Some(target) = self.entry(digest) else {
            return Err(OciError::Invalid {
                reference: digest.into(),
                reason: "the digest is not a sha256 digest".into(),
            });
        };
        let parent = target.parent().unwrap_or(&self.root).to_path_buf();
        std::fs::create_dir_all(&parent).map_err(|source| OciError::Io {
            op: "create a folder in the cache",
            path: parent,
            source,
        })?;
        let from = staging.keep();
        if let Err(e) = std::fs::rename(&from, &target) {
            let _ = std::fs::remove_dir_all(&from);
            if !target.is_dir() {
                return Err(OciError::Io {
                    op: "move a pull into",
                    path: target,
                    source: e,
                });
            }
        }
        self.lookup(digest).ok_or_else(|| OciError::Invalid {
            reference: digest.into(),
            reason: "the pulled artifact holds neither an app nor a component".into(),
        })
    }

    /// `CACHE/sha256/<hex>`, for a well-formed digest only: a digest comes from a registry and
    /// becomes a path, so nothing but 64 hex digits gets through.
    fn entry(&self, digest: &str) -> Option<PathBuf> {
        Some(self.root.join("sha256").join(hex_of(digest)?))
    }

    fn ref_file(&self, reference: &str) -> PathBuf {
        let name = sha256_digest(reference.as_bytes());
        self.root
            .join("refs")
            .join(name.trim_start_matches("sha256:"))
    }
}

/// The hex part of a `sha256:<64 lowercase hex digits>` digest.
pub(crate) fn hex_of(digest: &str) -> Option<&str> {
    let hex = digest.strip_prefix("sha256:")?;
    (hex.len() == 64 && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))).then_some(hex)
}
