//! Bundles: an app folder packed for upload to `skiff server`, and unpacked safely there.
//!
//! A bundle holds `skiff.toml` (always at its root, whatever the manifest file was called) and
//! every file the manifest references: each component's `source` and each `files` mount, stored
//! at their paths relative to the manifest's folder, so that the unpacked manifest finds them
//! where it did on the client. Nothing else goes in: build output next to the manifest stays
//! home. [`pack`] is the client's side and writes a deterministic tar.gz; [`unpack`] is the
//! server's and accepts tar.gz, tar or zip from a tenant it must not trust: only plain files and
//! folders, inside the destination, within [`BundleLimits`]. After unpacking, the server loads
//! the manifest like `skiff up` would and calls [`confine`], because a valid manifest may still
//! name files outside the bundle (`source = "/etc/passwd"`).

// `BundleError::Manifest` carries the manifest's report as is, so the CLI can print it verbatim;
// that makes the error large, but it is returned once per deploy, never on a hot path.
#![allow(clippy::result_large_err)]

use std::cell::Cell;
use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::fs;
use std::io::{self, Cursor, Read, Write};
use std::path::{Component as PathPart, Path, PathBuf};
use std::rc::Rc;

use skiff_manifest::{App, ManifestError, format_size};

/// Limits on what an upload may unpack to.
#[derive(Debug, Clone)]
pub struct BundleLimits {
    /// Bytes of file content, counted as written (not as the archive claims).
    pub max_unpacked_bytes: u64,
    /// Archive entries of any kind, folders included.
    pub max_entries: usize,
}

impl Default for BundleLimits {
    fn default() -> Self {
        BundleLimits {
            max_unpacked_bytes: 1 << 30,
            max_entries: 10_000,
        }
    }
}

/// A packed bundle, ready to upload.
pub struct Packed {
    /// A gzip-compressed tar.
    pub bytes: Vec<u8>,
    /// Regular files in the bundle, `skiff.toml` included.
    pub files: usize,
    /// The sum of the files' sizes.
    pub unpacked_bytes: u64,
}

impl fmt::Debug for Packed {
    // The bytes themselves would drown any log line.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Packed")
            .field("bytes", &format_args!("<{} bytes>", self.bytes.len()))
            .field("files", &self.files)
            .field("unpacked_bytes", &self.unpacked_bytes)
            .finish()
    }
}

/// What [`unpack`] wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unpacked {
    /// Regular files written.
    pub files: usize,
    /// Bytes written to them.
    pub unpacked_bytes: u64,
    /// `dest/skiff.toml`.
    pub manifest_path: PathBuf,
}

/// Why a bundle could not be packed or unpacked. Each message is meant for the person who
/// deploys: it names the component, file or archive entry, and says what to do. Messages from
/// [`unpack`] name entries by their path in the bundle, never by a path on the server.
#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    /// The manifest is invalid; the report is printed as the manifest crate wrote it.
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    /// The manifest references a file outside the app folder, directly or through a symlink.
    #[error(
        "{what} `{path}` is outside the app folder `{root}` (it resolves to `{resolved}`); a \
         bundle holds only what lies under the folder of the manifest: {fix}",
        path = path.display(),
        root = root.display(),
        resolved = resolved.display()
    )]
    Outside {
        /// E.g. "component `web` source".
        what: String,
        path: PathBuf,
        resolved: PathBuf,
        root: PathBuf,
        fix: &'static str,
    },
    /// Something under the app folder cannot go in a bundle (a FIFO, a symlink loop, a name
    /// the server would refuse, ...).
    #[error("cannot pack `{path}`: {reason}", path = path.display())]
    CannotPack { path: PathBuf, reason: String },
    #[error("cannot {op} `{path}`: {source}", path = path.display())]
    Io {
        /// What was being done, e.g. "read", "write", "create the folder".
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(
        "the upload is not a bundle: a bundle is a tar, tar.gz or zip archive (as made by \
         `skiff deploy`)"
    )]
    UnknownFormat,
    /// The archive is damaged or truncated; the message says where.
    #[error("the bundle is damaged: {0}; pack and upload it again (e.g. with `skiff deploy`)")]
    Corrupt(String),
    #[error(
        "the bundle entry `{entry}` is refused: {reason}; a bundle holds only plain files and \
         folders under its root (as made by `skiff deploy`)"
    )]
    UnsafeEntry { entry: String, reason: String },
    #[error(
        "the bundle unpacks to more than {}, the most this server accepts; leave build output \
         and other files the manifest does not reference out of it",
        format_size(*limit)
    )]
    TooLarge { limit: u64 },
    #[error(
        "the bundle has more than {limit} entries, the most this server accepts; mount fewer \
         files, or pack many small files into one"
    )]
    TooManyEntries { limit: usize },
    #[error(
        "the bundle has no skiff.toml at its root; pack the app with `skiff deploy` in the \
         folder that holds skiff.toml, or put skiff.toml at the top of the archive, not in a \
         subfolder"
    )]
    NoManifest,
    #[error(
        "the bundle holds `{entry}` more than once; an archive made by `skiff deploy` lists \
         each file once, so pack it again"
    )]
    Duplicate { entry: String },
}

// ---------------------------------------------------------------------------------------------
// Packing (the client's side)
// ---------------------------------------------------------------------------------------------

/// What goes in the tar at one path.
enum Item {
    File(PathBuf),
    Dir,
}

/// Packs the app whose manifest is `manifest_path`: the manifest itself (always stored as
/// `skiff.toml` at the root of the bundle), each component `source` file, and each `files`
/// mount's host path (a file, or a folder recursively), all stored at their path relative to
/// the manifest's folder.
///
/// The manifest is validated first (an invalid one comes back as [`BundleError::Manifest`]).
/// Anything that lies outside the manifest's folder, directly or through a symlink, is refused
/// with [`BundleError::Outside`]; symlinks inside it are stored as the files or folders they
/// point at, since a server never unpacks a link. The same bytes come out for the same folder.
pub fn pack(manifest_path: &Path) -> Result<Packed, BundleError> {
    let app = skiff_manifest::load(manifest_path)?;
    let root = fs::canonicalize(&app.base_dir).map_err(|source| BundleError::Io {
        op: "open the app folder",
        path: app.base_dir.clone(),
        source,
    })?;
    let mut packer = Packer {
        base: &app.base_dir,
        root,
        manifest: fs::canonicalize(&app.manifest_path).ok(),
        items: BTreeMap::new(),
    };
    packer
        .items
        .insert(MANIFEST.to_string(), Item::File(app.manifest_path.clone()));
    // `App` holds `base_dir` joined with the path as written, so an absolute path into the app
    // folder looks just like a relative one there; the manifest text still tells them apart.
    let text = fs::read_to_string(&app.manifest_path).unwrap_or_default();
    for component in &app.components {
        let what = format!("component `{}` source", component.id);
        if written_absolute(&text, component.source_location) {
            return Err(BundleError::CannotPack {
                path: component.source.clone(),
                reason: format!("in {what}, {ABSOLUTE}"),
            });
        }
        packer.add(&what, &component.source)?;
    }
    for component in &app.components {
        for mount in &component.files {
            let what = format!("component `{}` files mount `{}`", component.id, mount.guest);
            packer.add(&what, &mount.host)?;
        }
    }
    packer.write()
}

const MANIFEST: &str = "skiff.toml";

struct Packer<'a> {
    /// The manifest's folder as `App` spells it: the paths in `App` start with it.
    base: &'a Path,
    /// The same folder, canonical: what "inside" is measured against.
    root: PathBuf,
    manifest: Option<PathBuf>,
    items: BTreeMap<String, Item>,
}

impl Packer<'_> {
    /// Adds a path named by the manifest (`base` joined with what was written there).
    fn add(&mut self, what: &str, path: &Path) -> Result<(), BundleError> {
        let written = path.strip_prefix(self.base).unwrap_or(path);
        let outside = |resolved: PathBuf, root: &Path| BundleError::Outside {
            what: what.to_string(),
            path: written.to_path_buf(),
            resolved,
            root: root.to_path_buf(),
            fix: "move or copy it into that folder and change the path in the manifest",
        };
        let resolved = fs::canonicalize(path).map_err(|source| BundleError::Io {
            op: "read",
            path: path.to_path_buf(),
            source,
        })?;
        if !resolved.starts_with(&self.root) {
            return Err(outside(resolved, &self.root));
        }
        // The server joins the path as written to a folder of its own, so the written path
        // must be relative and stay inside lexically too, and any folder a `..` steps out of
        // must exist there.
        let unplaceable = |reason: &str| BundleError::CannotPack {
            path: written.to_path_buf(),
            reason: format!("in {what}, {reason}"),
        };
        if path.strip_prefix(self.base).is_err() {
            return Err(unplaceable(ABSOLUTE));
        }
        let mut parts: Vec<String> = Vec::new();
        let mut stepped_out_of = Vec::new();
        for part in written.components() {
            match part {
                PathPart::Normal(p) => parts.push(self.utf8(path, p)?),
                PathPart::CurDir => {}
                PathPart::ParentDir if !parts.is_empty() => {
                    stepped_out_of.push(parts.join("/"));
                    parts.pop();
                }
                _ => {
                    return Err(unplaceable(
                        "the path leaves the app folder with `..` and comes back in, and the \
                         server's folder has another name; write it without the `..`",
                    ));
                }
            }
        }
        if !stepped_out_of.is_empty() {
            let plain = self.base.join(parts.join("/"));
            if fs::canonicalize(&plain).ok().as_ref() != Some(&resolved) {
                return Err(unplaceable(
                    "a `..` in the path follows a symlink, so the server would find another \
                     file; write the path without `..`",
                ));
            }
            for dir in stepped_out_of {
                for prefix in prefixes(&dir) {
                    self.insert(prefix, Item::Dir)?;
                }
            }
        }
        let rel = parts.join("/");
        let mut stack = Vec::new();
        self.add_resolved(what, path, rel, resolved, &mut stack)
    }

    /// Adds `path` (known to resolve to `resolved`, inside the root) at `rel`, recursing into
    /// folders. `stack` holds the canonical folders being walked, to catch symlink loops.
    fn add_resolved(
        &mut self,
        what: &str,
        path: &Path,
        rel: String,
        resolved: PathBuf,
        stack: &mut Vec<PathBuf>,
    ) -> Result<(), BundleError> {
        let meta = fs::metadata(path).map_err(|source| BundleError::Io {
            op: "read",
            path: path.to_path_buf(),
            source,
        })?;
        if meta.is_file() {
            return self.insert(rel, Item::File(path.to_path_buf()));
        }
        if !meta.is_dir() {
            return Err(BundleError::CannotPack {
                path: path.to_path_buf(),
                reason: format!(
                    "in {what}, it is not a regular file or folder (a socket, FIFO or device); \
                     a bundle holds only files and folders, so remove it or mount a folder \
                     without it"
                ),
            });
        }
        if stack.contains(&resolved) {
            return Err(BundleError::CannotPack {
                path: path.to_path_buf(),
                reason: format!(
                    "in {what}, it is a symlink to a folder that contains it, so a bundle would \
                     never end; remove the link"
                ),
            });
        }
        if !rel.is_empty() {
            self.insert(rel.clone(), Item::Dir)?;
        }
        let listing = fs::read_dir(path).map_err(|source| BundleError::Io {
            op: "list the folder",
            path: path.to_path_buf(),
            source,
        })?;
        let mut names = Vec::new();
        for entry in listing {
            let entry = entry.map_err(|source| BundleError::Io {
                op: "list the folder",
                path: path.to_path_buf(),
                source,
            })?;
            names.push(entry.file_name());
        }
        names.sort();
        stack.push(resolved.clone());
        for name in names {
            let child = path.join(&name);
            let name = self.utf8(&child, &name)?;
            let child_rel = if rel.is_empty() {
                name
            } else {
                format!("{rel}/{name}")
            };
            let link = fs::symlink_metadata(&child).map_err(|source| BundleError::Io {
                op: "read",
                path: child.clone(),
                source,
            })?;
            // Only a symlink can lead out of a folder that is itself inside.
            let child_resolved = if link.file_type().is_symlink() {
                let target = fs::canonicalize(&child).map_err(|_| BundleError::CannotPack {
                    path: child.clone(),
                    reason: format!(
                        "in {what}, it is a symlink to nothing; remove it or fix its target"
                    ),
                })?;
                if !target.starts_with(&self.root) {
                    return Err(BundleError::Outside {
                        what: format!("in {what}, the symlink"),
                        path: child
                            .strip_prefix(self.base)
                            .unwrap_or(&child)
                            .to_path_buf(),
                        resolved: target,
                        root: self.root.clone(),
                        fix: "replace the link with a copy of what it points at, or remove it",
                    });
                }
                target
            } else {
                resolved.join(child.file_name().unwrap_or_default())
            };
            self.add_resolved(what, &child, child_rel, child_resolved, stack)?;
        }
        stack.pop();
        Ok(())
    }

    fn insert(&mut self, rel: String, item: Item) -> Result<(), BundleError> {
        // Checked here so the client, not the server, tells of a name `unpack` would refuse.
        if let Err(reason) = check_name(&rel) {
            return Err(BundleError::CannotPack {
                path: self.base.join(&rel),
                reason: format!("{reason}, which a server refuses; rename it"),
            });
        }
        match (self.items.get(&rel), &item) {
            (None, _) => {
                self.items.insert(rel, item);
                Ok(())
            }
            (Some(Item::Dir), Item::Dir) => Ok(()),
            // The same relative path is the same file, except for `skiff.toml`, which is the
            // manifest whatever the manifest file is called.
            (Some(Item::File(_)), Item::File(_)) if rel != MANIFEST => Ok(()),
            (Some(Item::File(_)), Item::File(path))
                if fs::canonicalize(path).ok() == self.manifest =>
            {
                Ok(())
            }
            (_, Item::File(path)) => Err(BundleError::CannotPack {
                path: path.clone(),
                reason: if rel == MANIFEST {
                    "the bundle stores the manifest as `skiff.toml`, and the manifest mounts \
                     another file of that name; rename that file, or name the manifest \
                     skiff.toml"
                        .into()
                } else {
                    "it is a file, and also a folder elsewhere in the manifest".into()
                },
            }),
            (_, Item::Dir) => Err(BundleError::CannotPack {
                path: self.base.join(&rel),
                reason: if rel == MANIFEST {
                    "the bundle stores the manifest as `skiff.toml`, and the manifest mounts a \
                     folder of that name; rename the folder"
                        .into()
                } else {
                    "it is a folder, and also a file elsewhere in the manifest".into()
                },
            }),
        }
    }

    fn utf8(&self, path: &Path, name: &std::ffi::OsStr) -> Result<String, BundleError> {
        name.to_str()
            .map(str::to_string)
            .ok_or_else(|| BundleError::CannotPack {
                path: path.to_path_buf(),
                reason: "its name is not valid UTF-8, which a server refuses; rename it".into(),
            })
    }

    fn write(self) -> Result<Packed, BundleError> {
        let gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(6));
        let mut tar = tar::Builder::new(gz);
        let mut files = 0;
        let mut unpacked_bytes = 0;
        let tar_error = |rel: &str| {
            let path = PathBuf::from(rel);
            move |source| BundleError::Io {
                op: "add to the bundle",
                path,
                source,
            }
        };
        for (rel, item) in &self.items {
            // Fixed owner, time and modes: the server ignores them, and the same folder should
            // give the same bytes.
            let mut header = tar::Header::new_gnu();
            header.set_mtime(0);
            header.set_uid(0);
            header.set_gid(0);
            match item {
                Item::Dir => {
                    header.set_entry_type(tar::EntryType::Directory);
                    header.set_mode(0o755);
                    header.set_size(0);
                    tar.append_data(&mut header, rel, io::empty())
                        .map_err(tar_error(rel))?;
                }
                Item::File(path) => {
                    // Read whole, so a file that grows while packing cannot break the tar.
                    let data = fs::read(path).map_err(|source| BundleError::Io {
                        op: "read",
                        path: path.clone(),
                        source,
                    })?;
                    header.set_entry_type(tar::EntryType::Regular);
                    header.set_mode(0o644);
                    header.set_size(data.len() as u64);
                    tar.append_data(&mut header, rel, data.as_slice())
                        .map_err(tar_error(rel))?;
                    files += 1;
                    unpacked_bytes += data.len() as u64;
                }
            }
        }
        let bytes = tar
            .into_inner()
            .and_then(|gz| gz.finish())
            .map_err(tar_error("."))?;
        Ok(Packed {
            bytes,
            files,
            unpacked_bytes,
        })
    }
}

const ABSOLUTE: &str = "the path is absolute, and the server keeps the app in a folder of its \
                        own; write it relative to the manifest's folder";

/// Whether the string value at `at` in the manifest text starts like an absolute path.
fn written_absolute(text: &str, at: skiff_manifest::Location) -> bool {
    let Some(line) = text.lines().nth(at.line.saturating_sub(1)) else {
        return false;
    };
    let value: String = line.chars().skip(at.column.saturating_sub(1)).collect();
    let value = value.trim_start_matches(['"', '\'']);
    value.starts_with(['/', '\\']) || value.as_bytes().get(1) == Some(&b':')
}

/// `a`, `a/b`, `a/b/c` for `a/b/c`; nothing for the empty path.
fn prefixes(rel: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut end = 0;
    for part in rel.split('/').filter(|p| !p.is_empty()) {
        end = if end == 0 {
            part.len()
        } else {
            end + 1 + part.len()
        };
        out.push(rel[..end].to_string());
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Unpacking (the server's side)
// ---------------------------------------------------------------------------------------------

/// Unpacks `bytes` into `dest`, an existing, empty folder.
///
/// The format is sniffed from the bytes: gzip holding a tar, a plain tar, or zip. The archive
/// comes from a tenant and is treated as hostile: only regular files and folders are written
/// (links, devices and FIFOs are refused, naming the entry); names must be relative, without
/// `..`, backslashes or drive prefixes; a name may appear once; nothing is written through an
/// existing symlink or outside `dest`; files get mode 0o644 and folders 0o755 whatever the
/// archive says. Unpacking stops as soon as more than `limits.max_unpacked_bytes` have been
/// written (counted as written, so a header or zip directory that understates a size does not
/// help) or the archive has more than `limits.max_entries` entries.
///
/// On error, `dest` may hold part of the bundle; the caller removes it.
pub fn unpack(bytes: &[u8], dest: &Path, limits: &BundleLimits) -> Result<Unpacked, BundleError> {
    let not_empty = fs::read_dir(dest)
        .map_err(|source| BundleError::Io {
            op: "open the destination folder",
            path: PathBuf::from("."),
            source,
        })?
        .next()
        .is_some();
    if not_empty {
        return Err(BundleError::Io {
            op: "unpack into",
            path: PathBuf::from("."),
            source: io::Error::other("the destination folder is not empty"),
        });
    }
    let mut sink = Sink {
        dest,
        limits,
        seen: HashSet::new(),
        entries: 0,
        files: 0,
        bytes: 0,
        buf: vec![0; 64 * 1024],
        folders: Vec::new(),
    };
    match sniff(bytes) {
        Format::TarGz => unpack_tar(
            flate2::read::MultiGzDecoder::new(bytes),
            "tar.gz",
            &mut sink,
        )?,
        Format::Tar => unpack_tar(bytes, "tar", &mut sink)?,
        Format::Zip => unpack_zip(bytes, &mut sink)?,
        Format::Unknown => return Err(BundleError::UnknownFormat),
    }
    sink.sync_folders()?;
    let manifest_path = dest.join(MANIFEST);
    match fs::symlink_metadata(&manifest_path) {
        Ok(meta) if meta.is_file() => Ok(Unpacked {
            files: sink.files,
            unpacked_bytes: sink.bytes,
            manifest_path,
        }),
        _ => Err(BundleError::NoManifest),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    TarGz,
    Tar,
    Zip,
    Unknown,
}

fn sniff(bytes: &[u8]) -> Format {
    if bytes.starts_with(&[0x1f, 0x8b]) {
        Format::TarGz
    } else if bytes.starts_with(b"PK\x03\x04") || bytes.starts_with(b"PK\x05\x06") {
        Format::Zip
    } else if bytes.len() >= 512 && (&bytes[257..262] == b"ustar" || tar_checksum_ok(&bytes[..512]))
    {
        Format::Tar
    } else {
        Format::Unknown
    }
}

/// Whether `block` is a pre-POSIX tar header: no magic, but a checksum that adds up.
fn tar_checksum_ok(block: &[u8]) -> bool {
    let field = &block[148..156];
    let digits: String = field
        .iter()
        .map(|&b| b as char)
        .filter(|c| !matches!(c, ' ' | '\0'))
        .collect();
    let Ok(stored) = u32::from_str_radix(&digits, 8) else {
        return false;
    };
    let sum: u32 = block[..148]
        .iter()
        .chain(&block[156..])
        .map(|&b| u32::from(b))
        .sum::<u32>()
        + 8 * u32::from(b' ');
    !digits.is_empty() && sum == stored && block.iter().any(|&b| b != 0)
}

/// The most a tar header, with its GNU long-name or PAX extension, may take. The tar reader
/// reads extensions into memory whole, so without this a gzip bomb in a "long name" would
/// exhaust memory before any file is written.
const HEADER_BUDGET: u64 = 1 << 20;

/// Counts what the tar reader takes from the decompressed stream, and fails once the current
/// allowance is spent.
struct Budgeted<R> {
    inner: R,
    left: Rc<Cell<u64>>,
}

impl<R: Read> Read for Budgeted<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let left = self.left.get();
        if left == 0 && !buf.is_empty() {
            return Err(io::Error::other("over budget"));
        }
        let want = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
        let n = self.inner.read(&mut buf[..want])?;
        self.left.set(left - n as u64);
        Ok(n)
    }
}

fn unpack_tar<R: Read>(reader: R, format: &str, sink: &mut Sink) -> Result<(), BundleError> {
    let left = Rc::new(Cell::new(HEADER_BUDGET));
    let mut archive = tar::Archive::new(Budgeted {
        inner: reader,
        left: left.clone(),
    });
    let damaged = |e: io::Error, left: &Cell<u64>| {
        if left.get() == 0 {
            BundleError::Corrupt(format!(
                "a {format} header (with its long name or PAX extension) is larger than {}",
                format_size(HEADER_BUDGET)
            ))
        } else {
            BundleError::Corrupt(format!("the {format} cannot be read: {e}"))
        }
    };
    let mut entries = archive.entries().map_err(|e| damaged(e, &left))?;
    loop {
        left.set(HEADER_BUDGET);
        let mut entry = match entries.next() {
            None => break,
            Some(Ok(entry)) => entry,
            Some(Err(e)) => return Err(damaged(e, &left)),
        };
        // The entry reader stops at the size in the header, which `Sink::file` checks first.
        left.set(u64::MAX);
        sink.count_entry()?;
        let raw = entry.path_bytes().into_owned();
        let name = String::from_utf8(raw).map_err(|e| BundleError::UnsafeEntry {
            entry: shown(&String::from_utf8_lossy(e.as_bytes())),
            reason: "its name is not valid UTF-8".into(),
        })?;
        let unsafe_entry = |reason: String| BundleError::UnsafeEntry {
            entry: shown(&name),
            reason,
        };
        let kind = entry.header().entry_type();
        match kind {
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                let declared = entry.size();
                sink.file(&name, declared, &mut entry)?;
            }
            tar::EntryType::Directory => sink.dir(&name)?,
            // Global PAX headers (as `git archive` writes) only set defaults for later entries.
            tar::EntryType::XGlobalHeader => {}
            tar::EntryType::Symlink => {
                let target = entry
                    .link_name_bytes()
                    .map(|t| shown(&String::from_utf8_lossy(&t)))
                    .unwrap_or_default();
                return Err(unsafe_entry(format!(
                    "it is a symbolic link (to `{target}`)"
                )));
            }
            tar::EntryType::Link => {
                let target = entry
                    .link_name_bytes()
                    .map(|t| shown(&String::from_utf8_lossy(&t)))
                    .unwrap_or_default();
                return Err(unsafe_entry(format!("it is a hard link (to `{target}`)")));
            }
            tar::EntryType::Char | tar::EntryType::Block => {
                return Err(unsafe_entry("it is a device".into()));
            }
            tar::EntryType::Fifo => {
                return Err(unsafe_entry("it is a FIFO (named pipe)".into()));
            }
            tar::EntryType::GNUSparse => {
                return Err(unsafe_entry("it is a sparse file".into()));
            }
            other => {
                return Err(unsafe_entry(format!(
                    "its tar entry type `{}` is not a file or folder",
                    (other.as_byte() as char).escape_default()
                )));
            }
        }
    }
    Ok(())
}

fn unpack_zip(bytes: &[u8], sink: &mut Sink) -> Result<(), BundleError> {
    // The zip reader builds a record for every entry of the central directory as it opens
    // the archive: the count it will read is checked first, so a bundle that claims millions
    // of entries costs nothing.
    let listed = zip_listed_entries(bytes).ok_or_else(|| {
        BundleError::Corrupt("the zip has no readable end-of-central-directory record".into())
    })?;
    if listed > sink.limits.max_entries as u64 {
        return Err(BundleError::TooManyEntries {
            limit: sink.limits.max_entries,
        });
    }
    let mut archive = zip::ZipArchive::new(Cursor::new(bytes))
        .map_err(|e| BundleError::Corrupt(format!("the zip cannot be read: {e}")))?;
    // The zip reader keys entries by name, so a name listed twice silently becomes one entry;
    // the count in the end record still tells.
    if listed != archive.len() as u64 {
        return Err(BundleError::Corrupt(format!(
            "the zip lists {listed} entries but only {} distinct names, so some name is \
             listed more than once",
            archive.len()
        )));
    }
    for index in 0..archive.len() {
        sink.count_entry()?;
        let name = archive
            .name_for_index(index)
            .unwrap_or_default()
            .to_string();
        let mut file = archive
            .by_index(index)
            .map_err(|e| BundleError::Corrupt(format!("`{}` cannot be read: {e}", shown(&name))))?;
        let kind = file.unix_mode().map_or(0, |mode| mode & 0o170_000);
        let unsafe_entry = |reason: &str| BundleError::UnsafeEntry {
            entry: shown(&name),
            reason: reason.into(),
        };
        match kind {
            0o120_000 => return Err(unsafe_entry("it is a symbolic link")),
            0o020_000 | 0o060_000 => return Err(unsafe_entry("it is a device")),
            0o010_000 => return Err(unsafe_entry("it is a FIFO (named pipe)")),
            0o140_000 => return Err(unsafe_entry("it is a socket")),
            0o040_000 => sink.dir(&name)?,
            _ if file.is_dir() => sink.dir(&name)?,
            0 | 0o100_000 => {
                let declared = file.size();
                sink.file(&name, declared, &mut file)?;
            }
            _ => return Err(unsafe_entry("its file type is not a file or folder")),
        }
    }
    Ok(())
}

/// The entry count in the zip's end-of-central-directory record, or in the zip64 record it
/// defers to. `None` if neither can be found.
fn zip_listed_entries(bytes: &[u8]) -> Option<u64> {
    const END: &[u8] = b"PK\x05\x06";
    // The record is 22 bytes plus a comment of at most 65535; the last consistent one wins.
    let floor = bytes.len().saturating_sub(22 + 65_535);
    let mut at = bytes.len().checked_sub(22)?;
    loop {
        if &bytes[at..at + 4] == END {
            let comment = u16::from_le_bytes([bytes[at + 20], bytes[at + 21]]) as usize;
            if at + 22 + comment == bytes.len() {
                let total = u16::from_le_bytes([bytes[at + 10], bytes[at + 11]]);
                if total != u16::MAX {
                    return Some(u64::from(total));
                }
                return zip64_listed_entries(bytes, at);
            }
        }
        if at == floor {
            return None;
        }
        at -= 1;
    }
}

/// The entry count of a zip64 archive: its locator sits right before the end record (at
/// `end`) and points at the zip64 end record, which holds the count as 8 bytes at 32.
fn zip64_listed_entries(bytes: &[u8], end: usize) -> Option<u64> {
    let le64 = |at: usize| -> Option<u64> {
        Some(u64::from_le_bytes(bytes.get(at..at + 8)?.try_into().ok()?))
    };
    let locator = end.checked_sub(20)?;
    if bytes.get(locator..locator + 4)? != b"PK\x06\x07" {
        return None;
    }
    let record = usize::try_from(le64(locator + 8)?).ok()?;
    if bytes.get(record..record + 4)? != b"PK\x06\x06" {
        return None;
    }
    le64(record + 32)
}

/// Writes entries under `dest`, enforcing the rules and limits common to all formats.
struct Sink<'a> {
    dest: &'a Path,
    limits: &'a BundleLimits,
    /// Cleaned names of the entries seen so far.
    seen: HashSet<String>,
    entries: usize,
    files: usize,
    bytes: u64,
    buf: Vec<u8>,
    /// Folders created, to be synced once every entry is in: a version is made live only
    /// after unpacking, so its files must be on disk before the record that names them.
    folders: Vec<String>,
}

impl Sink<'_> {
    /// Makes the names of everything unpacked durable (each file's data was synced as it was
    /// written): the folders, deepest first, then the destination itself.
    fn sync_folders(&self) -> Result<(), BundleError> {
        for rel in self.folders.iter().rev() {
            sync_dir(&self.dest.join(rel)).map_err(|source| io_at("sync", rel, source))?;
        }
        sync_dir(self.dest).map_err(|source| io_at("sync", ".", source))
    }

    fn count_entry(&mut self) -> Result<(), BundleError> {
        self.entries += 1;
        if self.entries > self.limits.max_entries {
            return Err(BundleError::TooManyEntries {
                limit: self.limits.max_entries,
            });
        }
        Ok(())
    }

    /// Checks `raw` and returns its cleaned form (`a/b`), refusing a repeat.
    fn claim(&mut self, raw: &str) -> Result<String, BundleError> {
        let name = clean_name(raw).map_err(|reason| BundleError::UnsafeEntry {
            entry: shown(raw),
            reason,
        })?;
        if !name.is_empty() && !self.seen.insert(name.clone()) {
            return Err(BundleError::Duplicate {
                entry: shown(&name),
            });
        }
        Ok(name)
    }

    fn dir(&mut self, raw: &str) -> Result<(), BundleError> {
        // `./` (as `tar -C app .` writes first) is the root itself.
        let name = self.claim(raw)?;
        for prefix in prefixes(&name) {
            self.make_dir(&prefix)?;
        }
        Ok(())
    }

    fn file(&mut self, raw: &str, declared: u64, data: &mut dyn Read) -> Result<(), BundleError> {
        let name = self.claim(raw)?;
        if name.is_empty() {
            return Err(BundleError::UnsafeEntry {
                entry: shown(raw),
                reason: "a file needs a name".into(),
            });
        }
        let too_large = BundleError::TooLarge {
            limit: self.limits.max_unpacked_bytes,
        };
        // Refuse early what the header already admits to; what it hides is caught below.
        if declared > self.limits.max_unpacked_bytes - self.bytes {
            return Err(too_large);
        }
        let parents = prefixes(&name);
        for prefix in &parents[..parents.len() - 1] {
            self.make_dir(prefix)?;
        }
        let path = self.dest.join(&name);
        let mut options = fs::OpenOptions::new();
        // `create_new` fails on any existing name, a symlink included, so nothing is written
        // through a link or over an earlier entry.
        options.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o644);
        let mut out = match options.open(&path) {
            Ok(out) => out,
            // Two different names can meet here on a file system that ignores case.
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                return Err(if path.is_dir() {
                    BundleError::UnsafeEntry {
                        entry: shown(&name),
                        reason: "a folder of that name is already in the bundle".into(),
                    }
                } else {
                    BundleError::Duplicate {
                        entry: shown(&name),
                    }
                });
            }
            Err(source) => return Err(io_at("write", &name, source)),
        };
        // The umask may have taken bits away; the rule is exactly 0o644.
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            out.set_permissions(fs::Permissions::from_mode(0o644))
                .map_err(|source| io_at("write", &name, source))?;
        }
        loop {
            let n = match data.read(&mut self.buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    return Err(BundleError::Corrupt(format!(
                        "`{}` cannot be read: {e}",
                        shown(&name)
                    )));
                }
            };
            self.bytes += n as u64;
            if self.bytes > self.limits.max_unpacked_bytes {
                return Err(BundleError::TooLarge {
                    limit: self.limits.max_unpacked_bytes,
                });
            }
            out.write_all(&self.buf[..n])
                .map_err(|source| io_at("write", &name, source))?;
        }
        out.sync_all()
            .map_err(|source| io_at("sync", &name, source))?;
        self.files += 1;
        Ok(())
    }

    /// Creates the folder `rel` (its parent exists), or accepts it if it is already a real
    /// folder; a file or symlink in the way is refused, never followed.
    fn make_dir(&mut self, rel: &str) -> Result<(), BundleError> {
        let path = self.dest.join(rel);
        let mut builder = fs::DirBuilder::new();
        #[cfg(unix)]
        std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o755);
        match builder.create(&path) {
            Ok(()) => {
                #[cfg(unix)]
                {
                    use std::os::unix::fs::PermissionsExt;
                    fs::set_permissions(&path, fs::Permissions::from_mode(0o755))
                        .map_err(|source| io_at("create the folder", rel, source))?;
                }
                self.folders.push(rel.to_string());
                Ok(())
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                match fs::symlink_metadata(&path) {
                    Ok(meta) if meta.file_type().is_dir() => Ok(()),
                    _ => Err(BundleError::UnsafeEntry {
                        entry: shown(rel),
                        reason: "it is a file in the bundle, and also a folder".into(),
                    }),
                }
            }
            Err(source) => Err(io_at("create the folder", rel, source)),
        }
    }
}

fn sync_dir(path: &Path) -> io::Result<()> {
    fs::File::open(path)?.sync_all()
}

/// An I/O error while unpacking, naming the entry by its path in the bundle.
fn io_at(op: &'static str, rel: &str, source: io::Error) -> BundleError {
    BundleError::Io {
        op,
        path: PathBuf::from(rel),
        source,
    }
}

/// Checks an entry name from an archive and returns it cleaned: parts joined by `/`, without
/// empty or `.` parts (so `./a//b/` is `a/b`, and `./` is empty, the root). Refuses, with the
/// reason, anything that could land outside the destination on any system.
fn clean_name(raw: &str) -> Result<String, String> {
    if raw.is_empty() {
        return Err("its name is empty".into());
    }
    if raw.contains('\0') {
        return Err("its name holds a NUL byte".into());
    }
    if raw.contains('\\') {
        return Err("its name holds a backslash (`\\`); bundles separate folders with `/`".into());
    }
    if raw.starts_with('/') {
        return Err("its path is absolute; entries are relative to the bundle's root".into());
    }
    let b = raw.as_bytes();
    if b.len() >= 2 && b[0].is_ascii_alphabetic() && b[1] == b':' {
        return Err("its path starts with a Windows drive (like `C:`)".into());
    }
    let mut parts = Vec::new();
    for part in raw.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                return Err("its path has a `..` part, which would climb out of the bundle".into());
            }
            part => parts.push(part),
        }
    }
    Ok(parts.join("/"))
}

/// The same rules, for a path [`pack`] is about to store.
fn check_name(rel: &str) -> Result<(), String> {
    match clean_name(rel) {
        Ok(clean) if clean == rel => Ok(()),
        Ok(_) => Err("its name has empty or `.` parts".into()),
        Err(reason) => Err(reason),
    }
}

/// An entry name as shown in a message: a hostile archive's names may be megabytes long.
fn shown(name: &str) -> String {
    const MAX: usize = 200;
    match name.char_indices().nth(MAX) {
        Some((end, _)) => format!("{}...", &name[..end]),
        None => name.to_string(),
    }
}

// ---------------------------------------------------------------------------------------------
// Confinement (after the server loads the unpacked manifest)
// ---------------------------------------------------------------------------------------------

/// Checks that every component source and every `files` mount of `app` lies inside `root`, the
/// folder the bundle was unpacked into. A manifest that passed validation may still name
/// `/etc/passwd` or mount `../../`: those exist on the server, just not in the bundle.
///
/// [`unpack`] writes no symlinks, so comparing canonical paths is enough; mounted folders are
/// not walked. The message names the component, the field and the path as written, never
/// `root`.
pub fn confine(app: &App, root: &Path) -> Result<(), String> {
    let root_resolved =
        fs::canonicalize(root).map_err(|e| format!("cannot open the unpacked bundle: {e}"))?;
    let check = |field: String, path: &Path| -> Result<(), String> {
        let written = path
            .strip_prefix(&app.base_dir)
            .or_else(|_| path.strip_prefix(root))
            .unwrap_or(path);
        match fs::canonicalize(path) {
            Ok(resolved) if resolved.starts_with(&root_resolved) => Ok(()),
            Err(e) => Err(format!(
                "`{field}` = `{}` cannot be read: {e}",
                written.display()
            )),
            Ok(_) => Err(format!(
                "`{field}` = `{}` lies outside the bundle; a deployed manifest may name only \
                 files in its bundle, written relative to skiff.toml (pack the app with \
                 `skiff deploy`, which takes along every file the manifest names)",
                written.display()
            )),
        }
    };
    for component in &app.components {
        check(
            format!("component.{}.source", component.id),
            &component.source,
        )?;
        for (i, mount) in component.files.iter().enumerate() {
            check(
                format!(
                    "component.{}.files[{i}] (mounted at `{}`)",
                    component.id, mount.guest
                ),
                &mount.host,
            )?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    /// The 8 bytes the manifest validator reads: `\0asm`, version 0x0d, layer 1 (a component).
    fn component() -> Vec<u8> {
        let mut bytes = b"\0asm\x0d\x00\x01\x00".to_vec();
        bytes.extend_from_slice(b"stand-in code");
        bytes
    }

    fn put(path: &Path, bytes: &[u8]) {
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, bytes).unwrap();
    }

    /// Every folder (as `None`) and file (with its bytes) under `dir`, by relative path.
    fn tree(dir: &Path) -> BTreeMap<String, Option<Vec<u8>>> {
        fn walk(dir: &Path, rel: &str, out: &mut BTreeMap<String, Option<Vec<u8>>>) {
            for entry in fs::read_dir(dir).unwrap() {
                let entry = entry.unwrap();
                let name = entry.file_name().into_string().unwrap();
                let rel = if rel.is_empty() {
                    name
                } else {
                    format!("{rel}/{name}")
                };
                let kind = entry.file_type().unwrap();
                assert!(!kind.is_symlink(), "{rel} is a symlink");
                if kind.is_dir() {
                    out.insert(rel.clone(), None);
                    walk(&entry.path(), &rel, out);
                } else {
                    out.insert(rel, Some(fs::read(entry.path()).unwrap()));
                }
            }
        }
        let mut out = BTreeMap::new();
        walk(dir, "", &mut out);
        out
    }

    /// A temporary folder holding only `dest`, so a test can see that nothing landed beside it.
    struct Scene {
        outer: tempfile::TempDir,
        dest: PathBuf,
    }

    impl Scene {
        fn new() -> Self {
            let outer = tempfile::tempdir().unwrap();
            let dest = outer.path().join("dest");
            fs::create_dir(&dest).unwrap();
            Scene { outer, dest }
        }

        fn unpack(&self, bytes: &[u8]) -> Result<Unpacked, BundleError> {
            self.unpack_with(bytes, &BundleLimits::default())
        }

        fn unpack_with(
            &self,
            bytes: &[u8],
            limits: &BundleLimits,
        ) -> Result<Unpacked, BundleError> {
            unpack(bytes, &self.dest, limits)
        }

        /// Asserts that the outer folder holds `dest` and nothing else.
        fn assert_contained(&self) {
            let names: Vec<String> = fs::read_dir(self.outer.path())
                .unwrap()
                .map(|e| e.unwrap().file_name().into_string().unwrap())
                .collect();
            assert_eq!(names, ["dest"], "something was written outside dest");
        }
    }

    enum Kind<'a> {
        File(&'a [u8]),
        Dir,
        Symlink(&'a str),
        HardLink(&'a str),
        Fifo,
    }

    /// A plain tar with names written straight into the headers, so that names the `tar`
    /// builder would refuse (`../evil`, `/abs`) can be made.
    fn raw_tar(entries: &[(&str, Kind)]) -> Vec<u8> {
        let mut builder = tar::Builder::new(Vec::new());
        for (name, kind) in entries {
            let mut header = tar::Header::new_gnu();
            header.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
            header.set_mode(0o4755);
            header.set_mtime(0);
            let data: &[u8] = match kind {
                Kind::File(data) => {
                    header.set_entry_type(tar::EntryType::Regular);
                    data
                }
                Kind::Dir => {
                    header.set_entry_type(tar::EntryType::Directory);
                    &[]
                }
                Kind::Symlink(target) => {
                    header.set_entry_type(tar::EntryType::Symlink);
                    header.set_link_name_literal(target).unwrap();
                    &[]
                }
                Kind::HardLink(target) => {
                    header.set_entry_type(tar::EntryType::Link);
                    header.set_link_name_literal(target).unwrap();
                    &[]
                }
                Kind::Fifo => {
                    header.set_entry_type(tar::EntryType::Fifo);
                    &[]
                }
            };
            header.set_size(data.len() as u64);
            header.set_cksum();
            builder.append(&header, data).unwrap();
        }
        builder.into_inner().unwrap()
    }

    fn gzip(bytes: &[u8]) -> Vec<u8> {
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(bytes).unwrap();
        gz.finish().unwrap()
    }

    fn zip_of(entries: &[(&str, Option<&[u8]>)]) -> Vec<u8> {
        let mut zip = zip::ZipWriter::new(Cursor::new(Vec::new()));
        let options = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Deflated)
            .unix_permissions(0o4755);
        for (name, data) in entries {
            match data {
                Some(data) => {
                    zip.start_file(*name, options).unwrap();
                    zip.write_all(data).unwrap();
                }
                None => zip.add_directory(*name, options).unwrap(),
            }
        }
        zip.finish().unwrap().into_inner()
    }

    const MANIFEST_TEXT: &[u8] = b"[app]\nname = \"demo\"\n";

    /// An app folder with referenced and unreferenced files.
    fn app_folder() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        put(
            &d.join("skiff.toml"),
            br#"[app]
name = "demo"

[component.web]
source = "web.wasm"
route = "/..."
files = ["static", { source = "config/app.json", destination = "/etc/app.json" }]

[component.api]
source = "./web.wasm"
route = "/api/..."
files = [{ source = "static/css", destination = "/css" }]
"#,
        );
        put(&d.join("web.wasm"), &component());
        put(&d.join("static/index.html"), b"<h1>hi</h1>");
        put(&d.join("static/css/site.css"), b"body {}");
        put(&d.join("static/deep/er/still.txt"), b"deep");
        fs::create_dir_all(d.join("static/empty")).unwrap();
        put(&d.join("config/app.json"), b"{}");
        // Not referenced: must stay home.
        put(&d.join("config/secret.txt"), b"hunter2");
        put(&d.join("target/debug/huge.bin"), &[7; 4096]);
        put(&d.join("notes.txt"), b"todo");
        dir
    }

    #[test]
    fn a_packed_app_unpacks_to_the_referenced_files_only() {
        let app = app_folder();
        let packed = pack(&app.path().join("skiff.toml")).unwrap();
        assert_eq!(&packed.bytes[..2], &[0x1f, 0x8b], "a tar.gz");
        // Stored once though referenced twice: web.wasm, static/css.
        assert_eq!(packed.files, 6, "{packed:?}");

        let scene = Scene::new();
        let unpacked = scene.unpack(&packed.bytes).unwrap();
        assert_eq!(unpacked.files, packed.files);
        assert_eq!(unpacked.unpacked_bytes, packed.unpacked_bytes);
        assert_eq!(unpacked.manifest_path, scene.dest.join("skiff.toml"));

        let got = tree(&scene.dest);
        let original = tree(app.path());
        let expected: Vec<&str> = vec![
            "config",
            "config/app.json",
            "skiff.toml",
            "static",
            "static/css",
            "static/css/site.css",
            "static/deep",
            "static/deep/er",
            "static/deep/er/still.txt",
            "static/empty",
            "static/index.html",
            "web.wasm",
        ];
        assert_eq!(got.keys().map(String::as_str).collect::<Vec<_>>(), expected);
        for (rel, content) in &got {
            assert_eq!(Some(content), original.get(rel), "{rel} differs");
        }
        assert_eq!(
            packed.unpacked_bytes,
            got.values().flatten().map(|b| b.len() as u64).sum::<u64>()
        );

        // The server's view: the unpacked manifest loads, and everything is inside.
        let loaded = skiff_manifest::load(&unpacked.manifest_path).unwrap();
        confine(&loaded, &scene.dest).unwrap();
        scene.assert_contained();

        // Same folder, same bytes.
        let again = pack(&app.path().join("skiff.toml")).unwrap();
        assert_eq!(packed.bytes, again.bytes);
    }

    #[test]
    fn a_manifest_under_another_name_is_stored_as_skiff_toml() {
        let dir = tempfile::tempdir().unwrap();
        put(
            &dir.path().join("prod.toml"),
            b"[app]\nname = \"demo\"\n\n[component.web]\nsource = \"web.wasm\"\n",
        );
        put(&dir.path().join("web.wasm"), &component());
        let packed = pack(&dir.path().join("prod.toml")).unwrap();
        let scene = Scene::new();
        scene.unpack(&packed.bytes).unwrap();
        let names: Vec<String> = tree(&scene.dest).into_keys().collect();
        assert_eq!(names, ["skiff.toml", "web.wasm"]);
    }

    #[test]
    fn packed_paths_resolve_the_same_on_the_server() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        // Longer than the 100 bytes a plain tar header holds.
        let long = format!("{}/{}", "a".repeat(60), "b".repeat(60));
        put(&d.join(&long).join("file.txt"), b"long");
        put(&d.join("web.wasm"), &component());
        put(&d.join("sub/unreferenced.txt"), b"stays home");
        let manifest = d.join("skiff.toml");
        put(
            &manifest,
            format!(
                "[app]\nname = \"demo\"\n\n[component.web]\nsource = \"sub/../web.wasm\"\n\
                 files = [{{ source = \"{long}\", destination = \"/long\" }}]\n"
            )
            .as_bytes(),
        );
        let packed = pack(&manifest).unwrap();
        let scene = Scene::new();
        scene.unpack(&packed.bytes).unwrap();
        // `sub` is there (empty), so `sub/../web.wasm` resolves.
        assert_eq!(tree(&scene.dest).get("sub"), Some(&None));
        assert!(!scene.dest.join("sub/unreferenced.txt").exists());
        assert_eq!(
            fs::read(scene.dest.join(&long).join("file.txt")).unwrap(),
            b"long"
        );
        let app = skiff_manifest::load(&scene.dest.join("skiff.toml")).unwrap();
        confine(&app, &scene.dest).unwrap();

        // An absolute path would name a folder the server does not have.
        put(
            &manifest,
            format!(
                "[app]\nname = \"demo\"\n\n[component.web]\nsource = {:?}\n",
                d.join("web.wasm").to_str().unwrap()
            )
            .as_bytes(),
        );
        let err = pack(&manifest).unwrap_err();
        assert!(matches!(err, BundleError::CannotPack { .. }), "{err:?}");
        assert!(err.to_string().contains("relative"), "{err}");
    }

    #[test]
    fn pack_refuses_a_source_outside_the_app_folder() {
        let outer = tempfile::tempdir().unwrap();
        put(&outer.path().join("x.wasm"), &component());
        let app = outer.path().join("app");
        put(
            &app.join("skiff.toml"),
            b"[app]\nname = \"demo\"\n\n[component.web]\nsource = \"../x.wasm\"\n",
        );
        let err = pack(&app.join("skiff.toml")).unwrap_err();
        assert!(matches!(err, BundleError::Outside { .. }), "{err:?}");
        let message = err.to_string();
        assert!(message.contains("component `web` source"), "{message}");
        assert!(message.contains("`../x.wasm`"), "{message}");
        assert!(message.contains("move or copy it"), "{message}");
    }

    #[test]
    fn pack_refuses_a_mount_of_the_parent_folder() {
        let outer = tempfile::tempdir().unwrap();
        let app = outer.path().join("app");
        put(&app.join("web.wasm"), &component());
        put(
            &app.join("skiff.toml"),
            b"[app]\nname = \"demo\"\n\n[component.web]\nsource = \"web.wasm\"\n\
              files = [{ source = \"..\", destination = \"/up\" }]\n",
        );
        let err = pack(&app.join("skiff.toml")).unwrap_err();
        assert!(matches!(err, BundleError::Outside { .. }), "{err:?}");
        assert!(err.to_string().contains("files mount `/up`"), "{err}");
    }

    #[cfg(unix)]
    #[test]
    fn pack_refuses_a_symlink_out_of_a_mounted_folder_and_follows_one_inside() {
        let outer = tempfile::tempdir().unwrap();
        put(&outer.path().join("secret"), b"hunter2");
        let app = outer.path().join("app");
        put(&app.join("web.wasm"), &component());
        put(
            &app.join("skiff.toml"),
            b"[app]\nname = \"demo\"\n\n[component.web]\nsource = \"web.wasm\"\nfiles = [\"static\"]\n",
        );
        put(&app.join("static/a.txt"), b"a");
        std::os::unix::fs::symlink("../web.wasm", app.join("static/code.wasm")).unwrap();

        // A link to a file inside is stored as that file.
        let packed = pack(&app.join("skiff.toml")).unwrap();
        let scene = Scene::new();
        scene.unpack(&packed.bytes).unwrap();
        assert_eq!(
            fs::read(scene.dest.join("static/code.wasm")).unwrap(),
            component()
        );

        std::os::unix::fs::symlink(outer.path().join("secret"), app.join("static/leak")).unwrap();
        let err = pack(&app.join("skiff.toml")).unwrap_err();
        assert!(matches!(err, BundleError::Outside { .. }), "{err:?}");
        let message = err.to_string();
        assert!(message.contains("static/leak"), "{message}");
        assert!(message.contains("symlink"), "{message}");

        // A link to its own folder would never end.
        fs::remove_file(app.join("static/leak")).unwrap();
        std::os::unix::fs::symlink(".", app.join("static/again")).unwrap();
        let err = pack(&app.join("skiff.toml")).unwrap_err();
        assert!(matches!(err, BundleError::CannotPack { .. }), "{err:?}");
    }

    #[test]
    fn pack_returns_the_manifest_report_verbatim() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("skiff.toml");
        put(
            &path,
            b"[app]\nname = \"demo\"\n\n[component.web]\nsource = \"missing.wasm\"\n",
        );
        let report = skiff_manifest::load(&path).unwrap_err().to_string();
        let err = pack(&path).unwrap_err();
        assert!(matches!(err, BundleError::Manifest(_)), "{err:?}");
        assert_eq!(err.to_string(), report);
    }

    #[test]
    fn plain_tar_and_zip_unpack_with_fixed_modes() {
        let entries = [
            ("skiff.toml", Kind::File(MANIFEST_TEXT)),
            ("static/", Kind::Dir),
            ("static/a/b.txt", Kind::File(b"b")),
        ];
        let tar = raw_tar(&entries);
        let zip = zip_of(&[
            ("skiff.toml", Some(MANIFEST_TEXT)),
            ("static/", None),
            ("static/a/b.txt", Some(b"b")),
        ]);
        for bytes in [tar.clone(), gzip(&tar), zip] {
            let scene = Scene::new();
            let unpacked = scene.unpack(&bytes).unwrap();
            assert_eq!(unpacked.files, 2);
            assert_eq!(unpacked.unpacked_bytes, MANIFEST_TEXT.len() as u64 + 1);
            assert_eq!(fs::read(scene.dest.join("static/a/b.txt")).unwrap(), b"b");
            #[cfg(unix)]
            {
                use std::os::unix::fs::PermissionsExt;
                let mode = |p: &str| {
                    fs::metadata(scene.dest.join(p))
                        .unwrap()
                        .permissions()
                        .mode()
                        & 0o7777
                };
                assert_eq!(mode("skiff.toml"), 0o644);
                assert_eq!(mode("static/a/b.txt"), 0o644);
                assert_eq!(mode("static"), 0o755);
                assert_eq!(mode("static/a"), 0o755);
            }
            scene.assert_contained();
        }
    }

    #[test]
    fn a_tar_without_magic_is_still_a_tar() {
        let mut builder = tar::Builder::new(Vec::new());
        let mut header = tar::Header::new_old();
        header.set_path("skiff.toml").unwrap();
        header.set_size(MANIFEST_TEXT.len() as u64);
        header.set_mode(0o644);
        header.set_cksum();
        builder.append(&header, MANIFEST_TEXT).unwrap();
        let bytes = builder.into_inner().unwrap();
        assert_ne!(&bytes[257..262], b"ustar");
        let scene = Scene::new();
        scene.unpack(&bytes).unwrap();
    }

    fn assert_unsafe(err: BundleError, entry: &str, reason: &str) {
        match &err {
            BundleError::UnsafeEntry {
                entry: e,
                reason: r,
            } => {
                assert_eq!(e, entry, "{err}");
                assert!(r.contains(reason), "{err}");
            }
            _ => panic!("expected UnsafeEntry for {entry}, got {err:?}"),
        }
    }

    #[test]
    fn unpack_refuses_names_that_climb_out() {
        for name in ["../evil", "a/../../evil", "a/b/../../../evil", "./../evil"] {
            let scene = Scene::new();
            let bytes = raw_tar(&[
                ("skiff.toml", Kind::File(MANIFEST_TEXT)),
                (name, Kind::File(b"evil")),
            ]);
            let err = scene.unpack(&gzip(&bytes)).unwrap_err();
            assert_unsafe(err, name, "`..`");
            scene.assert_contained();
        }
    }

    #[test]
    fn unpack_refuses_absolute_names() {
        let scene = Scene::new();
        let target = scene.outer.path().join("abs");
        let name = target.to_str().unwrap();
        let err = scene
            .unpack(&raw_tar(&[(name, Kind::File(b"evil"))]))
            .unwrap_err();
        assert_unsafe(err, name, "absolute");
        assert!(!target.exists());
        scene.assert_contained();
    }

    #[test]
    fn unpack_refuses_windows_path_tricks() {
        for (name, reason) in [
            ("C:/evil", "drive"),
            ("c:evil", "drive"),
            ("a\\..\\..\\evil", "backslash"),
            ("\\\\server\\share\\evil", "backslash"),
        ] {
            let scene = Scene::new();
            let err = scene.unpack(&zip_of(&[(name, Some(b"evil"))])).unwrap_err();
            assert_unsafe(err, name, reason);
            assert_eq!(tree(&scene.dest).len(), 0);
            scene.assert_contained();
        }
        assert!(clean_name("").is_err());
        assert_eq!(clean_name("./a//b/").unwrap(), "a/b");
        assert_eq!(clean_name("./").unwrap(), "");
    }

    #[test]
    fn unpack_refuses_links_and_special_files_naming_the_entry() {
        let cases = [
            ("link", Kind::Symlink("/etc"), "symbolic link (to `/etc`)"),
            ("hard", Kind::HardLink("skiff.toml"), "hard link"),
            ("pipe", Kind::Fifo, "FIFO"),
        ];
        for (name, kind, reason) in cases {
            let scene = Scene::new();
            let bytes = raw_tar(&[
                ("skiff.toml", Kind::File(MANIFEST_TEXT)),
                (name, kind),
                // Were the link made, this would be written through it.
                ("link/passwd", Kind::File(b"evil")),
            ]);
            let err = scene.unpack(&gzip(&bytes)).unwrap_err();
            assert_unsafe(err, name, reason);
            assert!(fs::symlink_metadata(scene.dest.join(name)).is_err());
            scene.assert_contained();
        }

        let scene = Scene::new();
        let mut zip = zip::ZipWriter::new(Cursor::new(Vec::new()));
        let options = zip::write::SimpleFileOptions::default();
        zip.add_symlink("link", "/etc", options).unwrap();
        let bytes = zip.finish().unwrap().into_inner();
        assert_unsafe(scene.unpack(&bytes).unwrap_err(), "link", "symbolic link");
        assert!(fs::symlink_metadata(scene.dest.join("link")).is_err());
    }

    #[test]
    fn unpack_refuses_zip_names_that_climb_out() {
        let scene = Scene::new();
        let bytes = zip_of(&[
            ("skiff.toml", Some(MANIFEST_TEXT)),
            ("../evil", Some(b"evil")),
        ]);
        assert_unsafe(scene.unpack(&bytes).unwrap_err(), "../evil", "`..`");
        scene.assert_contained();
    }

    #[test]
    fn unpack_stops_at_the_byte_limit() {
        let limits = BundleLimits {
            max_unpacked_bytes: 1000,
            ..BundleLimits::default()
        };
        let big = vec![b'x'; 1001];
        let tar = raw_tar(&[
            ("skiff.toml", Kind::File(MANIFEST_TEXT)),
            ("big", Kind::File(&big)),
        ]);
        let zip = zip_of(&[("skiff.toml", Some(MANIFEST_TEXT)), ("big", Some(&big))]);
        for bytes in [gzip(&tar), zip] {
            let scene = Scene::new();
            let err = scene.unpack_with(&bytes, &limits).unwrap_err();
            assert!(
                matches!(err, BundleError::TooLarge { limit: 1000 }),
                "{err:?}"
            );
            assert!(err.to_string().contains("1000 B"), "{err}");
            assert!(!scene.dest.join("big").exists());
            scene.assert_contained();
        }

        // Exactly at the limit is fine.
        let exact = vec![b'x'; 1000 - MANIFEST_TEXT.len()];
        let bytes = raw_tar(&[
            ("skiff.toml", Kind::File(MANIFEST_TEXT)),
            ("big", Kind::File(&exact)),
        ]);
        Scene::new().unpack_with(&bytes, &limits).unwrap();
    }

    /// A zip whose directory says a file is 10 bytes while it inflates to 100,000: the bytes
    /// written are what count.
    #[test]
    fn unpack_counts_bytes_written_not_bytes_declared() {
        let real = vec![0u8; 100_000];
        let mut bytes = zip_of(&[("skiff.toml", Some(MANIFEST_TEXT)), ("bomb", Some(&real))]);
        let size = (real.len() as u32).to_le_bytes();
        let mut patched = 0;
        // The uncompressed size sits at offset 22 of a local header and 24 of a central one.
        for (signature, offset) in [(b"PK\x03\x04", 22), (b"PK\x01\x02", 24)] {
            let mut at = 0;
            while let Some(i) = bytes[at..].windows(4).position(|w| w == signature) {
                let start = at + i;
                if bytes[start + offset..start + offset + 4] == size {
                    bytes[start + offset..start + offset + 4].copy_from_slice(&10u32.to_le_bytes());
                    patched += 1;
                }
                at = start + 4;
            }
        }
        assert_eq!(patched, 2, "both headers patched");
        let limits = BundleLimits {
            max_unpacked_bytes: 1000,
            ..BundleLimits::default()
        };
        let scene = Scene::new();
        let err = scene.unpack_with(&bytes, &limits).unwrap_err();
        assert!(matches!(err, BundleError::TooLarge { .. }), "{err:?}");
        let written = fs::metadata(scene.dest.join("bomb")).map_or(0, |m| m.len());
        assert!(written <= 1000, "wrote {written} bytes");
        scene.assert_contained();
    }

    /// A GNU long name is read into memory whole by the tar reader; a huge one is refused
    /// before it is.
    #[test]
    fn unpack_refuses_a_huge_long_name() {
        let mut builder = tar::Builder::new(Vec::new());
        let mut header = tar::Header::new_gnu();
        header.as_old_mut().name[..13].copy_from_slice(b"././@LongLink");
        header.set_entry_type(tar::EntryType::GNULongName);
        let name = vec![b'a'; 2 << 20];
        header.set_size(name.len() as u64);
        header.set_cksum();
        builder.append(&header, name.as_slice()).unwrap();
        let mut bytes = builder.into_inner().unwrap();
        bytes.extend(raw_tar(&[("skiff.toml", Kind::File(MANIFEST_TEXT))]));
        let scene = Scene::new();
        let err = scene.unpack(&gzip(&bytes)).unwrap_err();
        match &err {
            BundleError::Corrupt(m) => assert!(m.contains("larger than 1 MiB"), "{err}"),
            _ => panic!("{err:?}"),
        }
        scene.assert_contained();
    }

    #[test]
    fn unpack_stops_at_the_entry_limit() {
        let limits = BundleLimits {
            max_entries: 5,
            ..BundleLimits::default()
        };
        let names: Vec<String> = (0..10).map(|i| format!("f{i}")).collect();
        let mut entries = vec![("skiff.toml", Kind::File(MANIFEST_TEXT))];
        entries.extend(names.iter().map(|n| (n.as_str(), Kind::File(b"x"))));
        let tar = raw_tar(&entries);
        let mut zip_entries = vec![("skiff.toml", Some(MANIFEST_TEXT))];
        zip_entries.extend(names.iter().map(|n| (n.as_str(), Some(&b"x"[..]))));
        let zip = zip_of(&zip_entries);
        for bytes in [gzip(&tar), zip] {
            let scene = Scene::new();
            let err = scene.unpack_with(&bytes, &limits).unwrap_err();
            assert!(
                matches!(err, BundleError::TooManyEntries { limit: 5 }),
                "{err:?}"
            );
            assert!(tree(&scene.dest).len() <= 5);
            scene.assert_contained();
        }
    }

    #[test]
    fn a_zip_claiming_too_many_entries_is_refused_before_its_directory_is_read() {
        let zip = zip_of(&[("skiff.toml", Some(MANIFEST_TEXT))]);
        let end = zip.len() - 22;
        assert_eq!(&zip[end..end + 4], b"PK\x05\x06");
        // The end record claims 60,000 entries.
        let mut claimed = zip.clone();
        claimed[end + 8..end + 12].copy_from_slice(&[0x60, 0xea, 0x60, 0xea]);
        // A zip64 end record (and its locator) claims a trillion; the end record defers to it.
        let mut zip64 = zip[..end].to_vec();
        let record_at = zip64.len() as u64;
        zip64.extend_from_slice(b"PK\x06\x06");
        zip64.extend_from_slice(&44u64.to_le_bytes());
        zip64.extend_from_slice(&[45, 0, 45, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        zip64.extend_from_slice(&1_000_000_000_000u64.to_le_bytes());
        zip64.extend_from_slice(&1_000_000_000_000u64.to_le_bytes());
        zip64.extend_from_slice(&zip[end + 12..end + 16]);
        zip64.extend_from_slice(&[0; 4]);
        zip64.extend_from_slice(&zip[end + 16..end + 20]);
        zip64.extend_from_slice(&[0; 4]);
        zip64.extend_from_slice(b"PK\x06\x07");
        zip64.extend_from_slice(&[0; 4]);
        zip64.extend_from_slice(&record_at.to_le_bytes());
        zip64.extend_from_slice(&1u32.to_le_bytes());
        let mut end_record = zip[end..].to_vec();
        end_record[8..12].copy_from_slice(&[0xff; 4]);
        zip64.extend_from_slice(&end_record);
        for bytes in [claimed, zip64] {
            let scene = Scene::new();
            let err = scene.unpack(&bytes).unwrap_err();
            assert!(matches!(err, BundleError::TooManyEntries { .. }), "{err:?}");
            assert!(tree(&scene.dest).is_empty());
        }
    }

    #[test]
    fn unpack_refuses_unknown_bytes() {
        for bytes in [&b"just some text"[..], &[], &[0u8; 1024]] {
            let scene = Scene::new();
            let err = scene.unpack(bytes).unwrap_err();
            assert!(matches!(err, BundleError::UnknownFormat), "{err:?}");
            assert!(err.to_string().contains("tar, tar.gz or zip"), "{err}");
        }
        // Looks like gzip, but is not.
        let scene = Scene::new();
        let err = scene.unpack(b"\x1f\x8bnot really").unwrap_err();
        assert!(matches!(err, BundleError::Corrupt(_)), "{err:?}");
    }

    #[test]
    fn unpack_requires_skiff_toml_at_the_root() {
        let nested = raw_tar(&[("app/skiff.toml", Kind::File(MANIFEST_TEXT))]);
        let folder = raw_tar(&[("skiff.toml/", Kind::Dir)]);
        let empty_zip = zip_of(&[]);
        assert!(empty_zip.starts_with(b"PK\x05\x06"));
        for bytes in [nested, folder, empty_zip] {
            let scene = Scene::new();
            let err = scene.unpack(&bytes).unwrap_err();
            assert!(matches!(err, BundleError::NoManifest), "{err:?}");
            assert!(
                err.to_string().contains("no skiff.toml at its root"),
                "{err}"
            );
        }
    }

    #[test]
    fn unpack_refuses_duplicates() {
        for second in ["a.txt", "./a.txt", "a.txt/"] {
            let scene = Scene::new();
            let kind = if second.ends_with('/') {
                Kind::Dir
            } else {
                Kind::File(b"second")
            };
            let bytes = raw_tar(&[
                ("skiff.toml", Kind::File(MANIFEST_TEXT)),
                ("a.txt", Kind::File(b"first")),
                (second, kind),
            ]);
            let err = scene.unpack(&bytes).unwrap_err();
            assert!(
                matches!(&err, BundleError::Duplicate { entry } if entry == "a.txt"),
                "{err:?}"
            );
            assert_eq!(fs::read(scene.dest.join("a.txt")).unwrap(), b"first");
        }

        // A file where a folder was, and the other way round.
        let scene = Scene::new();
        let bytes = raw_tar(&[("a/b", Kind::File(b"b")), ("a", Kind::File(b"a"))]);
        assert_unsafe(scene.unpack(&bytes).unwrap_err(), "a", "folder");
        let scene = Scene::new();
        let bytes = raw_tar(&[("a", Kind::File(b"a")), ("a/b", Kind::File(b"b"))]);
        assert_unsafe(scene.unpack(&bytes).unwrap_err(), "a", "file");

        // The zip reader folds a repeated name into one entry; the end record still counts two.
        let mut bytes = zip_of(&[
            ("skiff.toml", Some(MANIFEST_TEXT)),
            ("a.txt", Some(b"a")),
            ("b.txt", Some(b"b")),
        ]);
        let at: Vec<usize> = bytes
            .windows(5)
            .enumerate()
            .filter(|(_, w)| w == b"b.txt")
            .map(|(i, _)| i)
            .collect();
        assert_eq!(at.len(), 2, "in the local and the central header");
        for i in at {
            bytes[i..i + 5].copy_from_slice(b"a.txt");
        }
        let scene = Scene::new();
        let err = scene.unpack(&bytes).unwrap_err();
        assert!(
            matches!(err, BundleError::Corrupt(ref m) if m.contains("more than once")),
            "{err:?}"
        );
    }

    #[test]
    fn unpack_wants_an_empty_destination() {
        let scene = Scene::new();
        put(&scene.dest.join("old"), b"old");
        let bytes = raw_tar(&[("skiff.toml", Kind::File(MANIFEST_TEXT))]);
        let err = scene.unpack(&bytes).unwrap_err();
        assert!(err.to_string().contains("not empty"), "{err}");
    }

    #[test]
    fn confine_refuses_paths_outside_the_bundle() {
        let outer = tempfile::tempdir().unwrap();
        let elsewhere = outer.path().join("elsewhere.wasm");
        put(&elsewhere, &component());
        let root = outer.path().join("bundle");
        put(&root.join("web.wasm"), &component());
        let manifest = root.join("skiff.toml");

        // An absolute source: valid as a manifest, since the file exists on this machine.
        put(
            &manifest,
            format!(
                "[app]\nname = \"demo\"\n\n[component.web]\nsource = {:?}\n",
                elsewhere.to_str().unwrap()
            )
            .as_bytes(),
        );
        let app = skiff_manifest::load(&manifest).unwrap();
        let message = confine(&app, &root).unwrap_err();
        assert!(message.contains("component.web.source"), "{message}");
        assert!(message.contains("elsewhere.wasm"), "{message}");

        // A mount of the folder above.
        put(
            &manifest,
            b"[app]\nname = \"demo\"\n\n[component.web]\nsource = \"web.wasm\"\n\
              files = [{ source = \"..\", destination = \"/up\" }]\n",
        );
        let app = skiff_manifest::load(&manifest).unwrap();
        let message = confine(&app, &root).unwrap_err();
        assert!(message.contains("component.web.files[0]"), "{message}");
        assert!(message.contains("`..`"), "{message}");
        assert!(
            !message.contains(root.to_str().unwrap()),
            "no server paths: {message}"
        );

        // Inside is fine.
        put(
            &manifest,
            b"[app]\nname = \"demo\"\n\n[component.web]\nsource = \"web.wasm\"\n\
              files = [{ source = \".\", destination = \"/app\" }]\n",
        );
        let app = skiff_manifest::load(&manifest).unwrap();
        confine(&app, &root).unwrap();
    }
}
