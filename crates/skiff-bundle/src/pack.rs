//! Packing, the client's side: the manifest and every file it references, as a deterministic
//! tar.gz ([`pack`]), or as the parts a registry stores one by one ([`plan`]).

use std::collections::BTreeMap;
use std::fmt;
use std::fs;
use std::io;
use std::path::{Component as PathPart, Path, PathBuf};

use crate::MANIFEST;
use crate::confine::{check_name, prefixes};
use crate::error::BundleError;

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

/// What goes in the tar at one path.
#[derive(Debug, Clone)]
enum Item {
    File(PathBuf),
    Dir,
}

/// Which entry of the manifest brought a path into the bundle; the first one to name it keeps it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Origin {
    Manifest,
    Component(usize),
    Mount(usize, usize),
    UpstreamCa(usize),
}

/// What [`plan`] found: every path a bundle of the app holds, and which part of the manifest
/// brought it in.
#[derive(Debug)]
pub struct Plan {
    items: BTreeMap<String, (Item, Origin)>,
    parts: Vec<(Origin, PartKind)>,
    /// The app as its manifest was validated.
    app: skiff_manifest::App,
}

/// What one [`Part`] of a planned bundle is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PartKind {
    /// The manifest, stored as `skiff.toml`.
    Manifest,
    /// The `source` of the component with this id.
    Component(String),
    /// A `files` mount of a component: its id and the mount's guest path.
    Files { component: String, guest: String },
    /// The `tls.ca` file of the upstream with this name.
    UpstreamCa(String),
}

/// A part of a planned bundle: what one entry of the manifest brings in, read from disk.
/// Registries store each part as a layer of its own, so an app that changes one component
/// uploads only that component.
#[derive(Debug)]
pub struct Part {
    pub kind: PartKind,
    pub content: PartContent,
}

/// The bytes of a [`Part`].
pub enum PartContent {
    /// A single file (the manifest, or a component's source) at this path of the bundle.
    File { path: String, bytes: Vec<u8> },
    /// Several entries (a mounted folder, or a file with the folders a `..` in its path needs),
    /// as a deterministic tar.gz whose names are paths of the bundle.
    Archive(Vec<u8>),
}

impl fmt::Debug for PartContent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PartContent::File { path, bytes } => f
                .debug_struct("File")
                .field("path", path)
                .field("bytes", &format_args!("<{} bytes>", bytes.len()))
                .finish(),
            PartContent::Archive(bytes) => write!(f, "Archive(<{} bytes>)", bytes.len()),
        }
    }
}

impl Plan {
    /// The app, as its manifest was validated while planning.
    pub fn app(&self) -> &skiff_manifest::App {
        &self.app
    }

    /// The whole bundle as one deterministic tar.gz, as [`pack`] returns it.
    pub fn pack(&self) -> Result<Packed, BundleError> {
        write_tar_gz(self.items.iter().map(|(rel, (item, _))| (rel, item)))
    }

    /// The bundle as parts, in manifest order (the manifest first), each path in exactly one
    /// part. Parts that turned out empty (a mount whose files all came with a component) are
    /// left out. Unpacking the parts in order with an [`crate::Unpacker`] gives the folder that
    /// unpacking [`Plan::pack`] gives.
    pub fn parts(&self) -> Result<Vec<Part>, BundleError> {
        let mut parts = Vec::new();
        for (origin, kind) in &self.parts {
            let entries: Vec<(&String, &Item)> = self
                .items
                .iter()
                .filter(|(_, (_, o))| o == origin)
                .map(|(rel, (item, _))| (rel, item))
                .collect();
            let content = match entries.as_slice() {
                [] => continue,
                [(rel, Item::File(path))] => PartContent::File {
                    path: (*rel).clone(),
                    bytes: read_file(path)?,
                },
                _ => PartContent::Archive(write_tar_gz(entries.into_iter())?.bytes),
            };
            parts.push(Part {
                kind: kind.clone(),
                content,
            });
        }
        Ok(parts)
    }
}

/// Packs the app whose manifest is `manifest_path`: the manifest itself (always stored as
/// `skiff.toml` at the root of the bundle), each component `source` file, each `files`
/// mount's host path (a file, or a folder recursively) and each upstream's `tls.ca` file, all
/// stored at their path relative to the manifest's folder.
///
/// The manifest is validated first (an invalid one comes back as [`BundleError::Manifest`]).
/// Anything that lies outside the manifest's folder, directly or through a symlink, is refused
/// with [`BundleError::Outside`]; symlinks inside it are stored as the files or folders they
/// point at, since a server never unpacks a link. The same bytes come out for the same folder.
pub fn pack(manifest_path: &Path) -> Result<Packed, BundleError> {
    plan(manifest_path)?.pack()
}

/// Finds what a bundle of the app whose manifest is `manifest_path` holds, with the checks
/// [`pack`] makes, without reading the files yet.
pub fn plan(manifest_path: &Path) -> Result<Plan, BundleError> {
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
        origin: Origin::Manifest,
    };
    let mut parts = vec![(Origin::Manifest, PartKind::Manifest)];
    packer.insert(MANIFEST.to_string(), Item::File(app.manifest_path.clone()))?;
    // `App` holds `base_dir` joined with the path as written, so an absolute path into the app
    // folder looks just like a relative one there; the manifest text still tells them apart.
    let text = fs::read_to_string(&app.manifest_path).unwrap_or_default();
    for (index, component) in app.components.iter().enumerate() {
        let what = format!("component `{}` source", component.id);
        if written_absolute(&text, component.source_location) {
            return Err(BundleError::CannotPack {
                path: component.source.clone(),
                reason: format!("in {what}, {ABSOLUTE}"),
            });
        }
        packer.origin = Origin::Component(index);
        parts.push((packer.origin, PartKind::Component(component.id.to_string())));
        packer.add(&what, &component.source)?;
    }
    for (index, component) in app.components.iter().enumerate() {
        for (mount_index, mount) in component.files.iter().enumerate() {
            let what = format!("component `{}` files mount `{}`", component.id, mount.guest);
            packer.origin = Origin::Mount(index, mount_index);
            parts.push((
                packer.origin,
                PartKind::Files {
                    component: component.id.to_string(),
                    guest: mount.guest.to_string(),
                },
            ));
            packer.add(&what, &mount.host)?;
        }
    }
    for (index, upstream) in app.upstreams.iter().enumerate() {
        if let Some(ca) = &upstream.tls.ca {
            let what = format!("upstream `{}` tls.ca", upstream.name);
            packer.origin = Origin::UpstreamCa(index);
            parts.push((packer.origin, PartKind::UpstreamCa(upstream.name.clone())));
            packer.add(&what, ca)?;
        }
    }
    let items = packer.items;
    Ok(Plan { items, parts, app })
}

struct Packer<'a> {
    /// The manifest's folder as `App` spells it: the paths in `App` start with it.
    base: &'a Path,
    /// The same folder, canonical: what "inside" is measured against.
    root: PathBuf,
    manifest: Option<PathBuf>,
    items: BTreeMap<String, (Item, Origin)>,
    /// Who the paths being added now belong to.
    origin: Origin,
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
        match (self.items.get(&rel).map(|(item, _)| item), &item) {
            (None, _) => {
                self.items.insert(rel, (item, self.origin));
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
}

/// Reads a whole file, so a file that grows while packing cannot break the tar.
fn read_file(path: &Path) -> Result<Vec<u8>, BundleError> {
    fs::read(path).map_err(|source| BundleError::Io {
        op: "read",
        path: path.to_path_buf(),
        source,
    })
}

/// A deterministic tar.gz of `items` (in the order given).
fn write_tar_gz<'a>(
    items: impl Iterator<Item = (&'a String, &'a Item)>,
) -> Result<Packed, BundleError> {
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
    for (rel, item) in items {
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
                let data = read_file(path)?;
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
