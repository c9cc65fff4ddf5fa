//! Where a deployed app's files are, and the form in which the validated app is stored.
//!
//! A bundle is immutable: no guest ever gets a writable grant on it, so whatever the host reads
//! from it later (component code, read-only mounts, upstreams' CA files) is what the deployer
//! sent. A mount with `writable = true` gets a folder of the app's own instead,
//! `tenants/TENANT/apps/NAME/files/MOUNT`, seeded from the bundle's folder when it is first
//! needed, kept across versions and rollbacks, and removed with the app. The host reads no file
//! below it: it only copies the bundle into it and, at deletion, removes it.
//!
//! The validated [`App`] is stored in the app record with every path relative to the bundle
//! ([`to_stored`]) and turned back into an app with real paths at load ([`place`]), so that a
//! rollback, an idle reload or a restart parses no file again.

use std::io;
use std::path::{Path, PathBuf};

use skiff_manifest::App;

/// `DATA/tenants/TENANT/apps/NAME`: the app's own folder (its writable mounts are below it).
pub(crate) fn app_folder(data_dir: &Path, tenant: &str, name: &str) -> PathBuf {
    data_dir
        .join("tenants")
        .join(tenant)
        .join("apps")
        .join(name)
}

/// The folder name of the writable mount at `guest` under `files/`: one path component, the
/// guest path without its leading slash, `%` and `/` escaped (`/data/x` is `data%2Fx`), so that
/// two mounts never share a folder and none nests inside another.
pub(crate) fn mount_folder_name(guest: &str) -> String {
    let name = guest
        .strip_prefix('/')
        .unwrap_or(guest)
        .replace('%', "%25")
        .replace('/', "%2F");
    match name.as_str() {
        "" => "%2F".to_string(),
        "." | ".." => name.replace('.', "%2E"),
        _ => name,
    }
}

/// The app as it is stored: paths relative to the bundle at `bundle`. Fails, naming the field,
/// if a path lies outside it (the caller has confined the app already, so this is a bug guard).
pub(crate) fn to_stored(app: &App, bundle: &Path) -> Result<App, NotInBundle> {
    let relative = |field: &str, path: &Path| -> Result<PathBuf, NotInBundle> {
        path.strip_prefix(bundle)
            .map(Path::to_path_buf)
            .map_err(|_| NotInBundle {
                field: field.to_string(),
            })
    };
    let mut stored = app.clone();
    stored.manifest_path = relative("manifest", &app.manifest_path)?;
    stored.base_dir = relative("manifest", &app.base_dir)?;
    for component in &mut stored.components {
        let id = component.id.clone();
        component.source = relative(&format!("component.{id}.source"), &component.source)?;
        for (i, mount) in component.files.iter_mut().enumerate() {
            mount.host = relative(&format!("component.{id}.files[{i}]"), &mount.host)?;
        }
    }
    for upstream in &mut stored.upstreams {
        if let Some(ca) = &mut upstream.tls.ca {
            *ca = relative(&format!("upstream.{}.tls.ca", upstream.name), ca)?;
        }
    }
    Ok(stored)
}

/// A path of the app that does not lie in its bundle.
#[derive(Debug, thiserror::Error)]
#[error("`{field}` is not written relative to skiff.toml")]
pub(crate) struct NotInBundle {
    field: String,
}

/// A stored app made loadable: code and read-only mounts in the bundle, writable mounts in the
/// app's `files` folder.
pub(crate) fn place(stored: &App, bundle: &Path, files: &Path) -> App {
    let mut app = stored.clone();
    app.manifest_path = bundle.join(&stored.manifest_path);
    app.base_dir = bundle.join(&stored.base_dir);
    for component in &mut app.components {
        component.source = bundle.join(&component.source);
        for mount in &mut component.files {
            mount.host = if mount.writable {
                files.join(mount_folder_name(&mount.guest))
            } else {
                bundle.join(&mount.host)
            };
        }
    }
    for upstream in &mut app.upstreams {
        if let Some(ca) = &mut upstream.tls.ca {
            *ca = bundle.join(&*ca);
        }
    }
    app
}

/// Makes every writable folder of the stored app that does not exist yet, as a copy of its
/// folder in the bundle; one that exists is kept as it is (the app's data from earlier
/// versions). Each is copied beside `files` and renamed into place, so that a crash leaves
/// either no folder or a whole one.
pub(crate) fn seed_writable(stored: &App, bundle: &Path, files: &Path) -> io::Result<()> {
    for component in &stored.components {
        for mount in component.files.iter().filter(|m| m.writable) {
            let target = files.join(mount_folder_name(&mount.guest));
            if target.exists() {
                continue;
            }
            std::fs::create_dir_all(files)?;
            let parent = files.parent().unwrap_or(files);
            let scratch = parent.join(format!(".seed-{}", crate::persist::unique_suffix()));
            let copied = copy_tree(&bundle.join(&mount.host), &scratch)
                .and_then(|()| std::fs::rename(&scratch, &target));
            if let Err(err) = copied {
                let _ = std::fs::remove_dir_all(&scratch);
                // Another load seeded it first: theirs is as good as ours.
                if !target.is_dir() {
                    return Err(err);
                }
            }
        }
    }
    Ok(())
}

/// Copies the folder `from` to a new folder `to`: folders and regular files only. Links and
/// anything else are skipped, never followed: a bundle holds none, so one found was made by
/// someone else.
fn copy_tree(from: &Path, to: &Path) -> io::Result<()> {
    std::fs::create_dir(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        // `DirEntry::file_type` does not follow a link.
        let kind = entry.file_type()?;
        let target = to.join(entry.file_name());
        if kind.is_dir() {
            copy_tree(&entry.path(), &target)?;
        } else if kind.is_file() {
            std::fs::copy(entry.path(), &target)?;
        }
    }
    Ok(())
}

/// [`disk_usage`] of every one of `paths`, summed; a tree too large to count is `u64::MAX`,
/// so the sum saturates rather than wraps.
pub(crate) fn total_disk_usage(paths: &[PathBuf]) -> u64 {
    paths
        .iter()
        .map(|path| disk_usage(path))
        .fold(0u64, u64::saturating_add)
}

/// Deepest folder [`disk_usage`] walks into, and most entries it looks at, before it gives up
/// and counts the tree as over any quota: a tree that deep or that large is no app's data.
const MAX_WALK_DEPTH: usize = 64;
const MAX_WALK_ENTRIES: u64 = 1_000_000;

/// Bytes of disk taken by the regular files under `path` (blocks allocated, so a sparse file
/// costs what it holds); 0 if it does not exist; `u64::MAX` if the tree is deeper or larger
/// than any app's data (see [`MAX_WALK_DEPTH`]).
///
/// The tree may be a guest's writable folder, changing while it is walked: every folder is
/// opened relative to its parent's handle, without following links, and no path below `path`
/// is ever resolved, so a folder swapped for a link to `/` leads nowhere.
pub(crate) fn disk_usage(path: &Path) -> u64 {
    use rustix::fs::{AtFlags, CWD, Dir, FileType, Mode, OFlags, openat, statat};
    let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    let Ok(root) = openat(CWD, path, flags, Mode::empty()) else {
        return 0;
    };
    let Ok(listing) = Dir::read_from(&root) else {
        return 0;
    };
    let mut total = 0u64;
    let mut entries = 0u64;
    // Each level: the folder's handle (for the calls below it) and its listing.
    let mut stack = vec![(root, listing)];
    loop {
        let depth = stack.len();
        let Some((folder, listing)) = stack.last_mut() else {
            break;
        };
        let Some(Ok(entry)) = listing.next() else {
            stack.pop();
            continue;
        };
        let name = entry.file_name();
        if name == c"." || name == c".." {
            continue;
        }
        entries += 1;
        if entries > MAX_WALK_ENTRIES {
            return u64::MAX;
        }
        let Ok(stat) = statat(&*folder, name, AtFlags::SYMLINK_NOFOLLOW) else {
            continue;
        };
        match FileType::from_raw_mode(stat.st_mode) {
            FileType::RegularFile => {
                total = total.saturating_add((stat.st_blocks as u64).saturating_mul(512));
            }
            FileType::Directory => {
                if depth >= MAX_WALK_DEPTH {
                    return u64::MAX;
                }
                let Ok(child) = openat(&*folder, name, flags, Mode::empty()) else {
                    continue;
                };
                if let Ok(child_listing) = Dir::read_from(&child) {
                    stack.push((child, child_listing));
                }
            }
            _ => {}
        }
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_mount_gets_one_folder_of_its_own() {
        assert_eq!(mount_folder_name("/app"), "app");
        assert_eq!(mount_folder_name("/data/x"), "data%2Fx");
        assert_eq!(mount_folder_name("/data%2Fx"), "data%252Fx");
        assert_eq!(mount_folder_name("/"), "%2F");
        assert_eq!(mount_folder_name("/.."), "%2E%2E");
    }

    #[cfg(unix)]
    #[test]
    fn seeding_copies_files_and_folders_and_never_follows_a_link() {
        let dir = tempfile::tempdir().unwrap();
        let from = dir.path().join("from");
        std::fs::create_dir_all(from.join("sub")).unwrap();
        std::fs::write(from.join("a"), "a").unwrap();
        std::fs::write(from.join("sub/b"), "b").unwrap();
        std::os::unix::fs::symlink("/etc/passwd", from.join("link")).unwrap();
        std::os::unix::fs::symlink("/etc", from.join("dirlink")).unwrap();
        let to = dir.path().join("to");
        copy_tree(&from, &to).unwrap();
        assert_eq!(std::fs::read_to_string(to.join("a")).unwrap(), "a");
        assert_eq!(std::fs::read_to_string(to.join("sub/b")).unwrap(), "b");
        assert!(std::fs::symlink_metadata(to.join("link")).is_err());
        assert!(std::fs::symlink_metadata(to.join("dirlink")).is_err());
        // Two one-byte files: a block each (whatever the file system's block size).
        let usage = disk_usage(&to);
        assert!((2..=2 * 64 * 1024).contains(&usage), "{usage}");
    }

    /// What a guest leaves in its writable folder for the host's disk accounting to walk.
    #[test]
    fn disk_usage_follows_no_link_and_gives_up_on_absurd_trees() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("files");
        std::fs::create_dir_all(root.join("sub")).unwrap();
        std::fs::write(root.join("sub/data"), vec![7u8; 64 * 1024]).unwrap();
        let own = disk_usage(&root);
        assert!(own >= 64 * 1024, "{own}");
        // Links to big trees elsewhere count nothing.
        std::os::unix::fs::symlink("/usr", root.join("usr")).unwrap();
        std::os::unix::fs::symlink("/usr/bin", root.join("sub/bin")).unwrap();
        assert_eq!(disk_usage(&root), own);
        // A sparse file costs what it holds, not what it claims.
        let sparse = std::fs::File::create(root.join("sparse")).unwrap();
        sparse.set_len(1 << 40).unwrap();
        assert!(disk_usage(&root) < own + (1 << 20));
        // A tree deeper than any app's data counts as over every quota.
        let mut deep = root.clone();
        for _ in 0..MAX_WALK_DEPTH + 1 {
            deep.push("d");
        }
        std::fs::create_dir_all(&deep).unwrap();
        assert_eq!(disk_usage(&root), u64::MAX);
        assert_eq!(disk_usage(&dir.path().join("missing")), 0);
    }
}
