//! Packing, the client's side: the manifest and every file it references, as a deterministic
//! tar.gz.

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
