//! Path confinement and name checks: the rules that keep a hostile bundle inside its folder.
//!
//! [`clean_name`] and [`check_name`] judge archive entry names (for [`unpack`](crate::unpack)
//! and, by the same rules, for [`pack`](crate::pack)); [`confine`] checks, after the server has
//! loaded the unpacked manifest, that every path it names lies inside the bundle.

use std::fs;
use std::path::Path;

use skiff_manifest::App;

use crate::error::{ConfineError, NameError};

/// Checks an entry name from an archive and returns it cleaned: parts joined by `/`, without
/// empty or `.` parts (so `./a//b/` is `a/b`, and `./` is empty, the root). Refuses, with the
/// reason, anything that could land outside the destination on any system.
pub(crate) fn clean_name(raw: &str) -> Result<String, NameError> {
    if raw.is_empty() {
        return Err(NameError::Empty);
    }
    if raw.contains('\0') {
        return Err(NameError::Nul);
    }
    if raw.contains('\\') {
        return Err(NameError::Backslash);
    }
    if raw.starts_with('/') {
        return Err(NameError::Absolute);
    }
    let b = raw.as_bytes();
    if b.len() >= 2 && b[0].is_ascii_alphabetic() && b[1] == b':' {
        return Err(NameError::WindowsDrive);
    }
    let mut parts = Vec::new();
    for part in raw.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                return Err(NameError::ParentDir);
            }
            part => parts.push(part),
        }
    }
    Ok(parts.join("/"))
}

/// The same rules, for a path [`pack`](crate::pack) is about to store.
pub(crate) fn check_name(rel: &str) -> Result<(), NameError> {
    match clean_name(rel) {
        Ok(clean) if clean == rel => Ok(()),
        Ok(_) => Err(NameError::NotClean),
        Err(reason) => Err(reason),
    }
}

/// An entry name as shown in a message: a hostile archive's names may be megabytes long.
pub(crate) fn shown(name: &str) -> String {
    const MAX: usize = 200;
    match name.char_indices().nth(MAX) {
        Some((end, _)) => format!("{}...", &name[..end]),
        None => name.to_string(),
    }
}

/// Checks that every component source, every `files` mount and every upstream's `tls.ca` of
/// `app` lies inside `root`, the folder the bundle was unpacked into. A manifest that passed validation may still name
/// `/etc/passwd` or mount `../../`: those exist on the server, just not in the bundle.
///
/// [`unpack`](crate::unpack) writes no symlinks, so comparing canonical paths is enough; mounted folders are
/// not walked. The message names the component, the field and the path as written, never
/// `root`.
pub fn confine(app: &App, root: &Path) -> Result<(), ConfineError> {
    let root_resolved = fs::canonicalize(root).map_err(ConfineError::OpenBundle)?;
    let check = |field: String, path: &Path| -> Result<(), ConfineError> {
        let written = path
            .strip_prefix(&app.base_dir)
            .or_else(|_| path.strip_prefix(root))
            .unwrap_or(path);
        match fs::canonicalize(path) {
            Ok(resolved) if resolved.starts_with(&root_resolved) => Ok(()),
            Err(source) => Err(ConfineError::Unreadable {
                field,
                path: written.to_path_buf(),
                source,
            }),
            Ok(_) => Err(ConfineError::Outside {
                field,
                path: written.to_path_buf(),
            }),
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
    for upstream in &app.upstreams {
        if let Some(ca) = &upstream.tls.ca {
            check(format!("upstream.{}.tls.ca", upstream.name), ca)?;
        }
    }
    Ok(())
}

/// `a`, `a/b`, `a/b/c` for `a/b/c`; nothing for the empty path.
pub(crate) fn prefixes(rel: &str) -> Vec<String> {
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
