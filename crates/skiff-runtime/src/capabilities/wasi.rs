//! The `wasi:cli` environment and `wasi:filesystem` capability: environment variables and
//! granted folders. Sockets stay denied: no address is ever allowed, and name lookup is off.
//!
//! A granted folder is opened **once, at load**, and every instance gets a clone of that
//! handle, never the path. A guest may make anything inside a writable folder (a symlink to
//! `/etc` in place of a subfolder, a fake `skiff.toml`), so a path the host resolves after a
//! guest has run is a path the guest chose. Holding the handle also takes the path walk and
//! the `open` off every request. The checks in [`check_folders`] keep the rest of that class
//! out: no granted folder lies inside another component's writable one (its path would be
//! resolved through the guest's files at the next load), and no writable folder holds skiff's
//! own files (the manifest, the components' code, the code cache, the key-value data).

use std::path::{Path, PathBuf};

use skiff_manifest::App;
use wasmtime_wasi::filesystem::WasiFilesystemCtx;
use wasmtime_wasi::{FsPerms, WasiCtx, WasiCtxBuilder};

use crate::error::{LoadError, LoadErrorKind};

/// A host folder made visible to the guest.
#[derive(Debug, Clone)]
pub struct DirGrant {
    pub host: PathBuf,
    pub guest: String,
    pub writable: bool,
}

impl DirGrant {
    fn error(&self, reason: impl Into<String>) -> LoadError {
        LoadError::new(
            &self.host,
            LoadErrorKind::Grant {
                host: self.host.clone(),
                guest: self.guest.clone(),
                reason: reason.into(),
            },
        )
    }

    /// Checks the folder exists now, so a mistake is a load error and not a failing request.
    pub fn validate(&self) -> Result<(), LoadError> {
        match std::fs::metadata(&self.host) {
            Ok(meta) if meta.is_dir() => Ok(()),
            Ok(_) => Err(self.error(
                "it is a file, and skiff grants folders: put it in a folder and grant that",
            )),
            Err(err) => Err(self.error(err.to_string())),
        }
    }
}

/// What a component may see of the host: variables and folders. [`WasiGrant::open`] turns
/// the folders into handles; until then the grant can describe folders but not give them.
#[derive(Clone, Default)]
pub struct WasiGrant {
    pub env: Vec<(String, String)>,
    pub dirs: Vec<DirGrant>,
    /// The folders of `dirs`, opened: what every instance is handed.
    opened: Option<WasiFilesystemCtx>,
}

impl std::fmt::Debug for WasiGrant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WasiGrant")
            .field("env", &self.env.iter().map(|(k, _)| k).collect::<Vec<_>>())
            .field("dirs", &self.dirs)
            .field("opened", &self.opened.is_some())
            .finish()
    }
}

impl WasiGrant {
    /// The grant of `component`, its folders opened.
    pub fn from_component(component: &skiff_manifest::Component) -> Result<Self, LoadError> {
        let dirs = component
            .files
            .iter()
            .map(|mount| DirGrant {
                host: mount.host.clone(),
                guest: mount.guest.clone(),
                writable: mount.writable,
            })
            .collect();
        WasiGrant {
            env: component.environment.clone(),
            dirs,
            opened: None,
        }
        .open()
    }

    /// Checks and opens every granted folder, once: instances get these handles.
    pub fn open(mut self) -> Result<Self, LoadError> {
        let mut builder = WasiCtxBuilder::new();
        for dir in &self.dirs {
            dir.validate()?;
            let perms = if dir.writable {
                FsPerms::ReadWrite
            } else {
                FsPerms::ReadOnly
            };
            builder
                .preopened_dir(&dir.host, &dir.guest, perms)
                .map_err(|err| dir.error(format!("{err:#}")))?;
        }
        self.opened = Some(builder.build().filesystem().clone());
        Ok(self)
    }

    /// A builder with this grant's variables and nothing else; the context built from it
    /// gets its folders from [`WasiGrant::give_folders`].
    pub(crate) fn builder(&self) -> WasiCtxBuilder {
        let mut builder = WasiCtxBuilder::new();
        builder
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false);
        builder.envs(&self.env);
        builder
    }

    /// Hands `ctx` the folders opened at load (clones of the handles). No path is resolved.
    pub(crate) fn give_folders(&self, ctx: &mut WasiCtx) -> wasmtime::Result<()> {
        match &self.opened {
            Some(opened) => *ctx.filesystem() = opened.clone(),
            None if self.dirs.is_empty() => {}
            None => wasmtime::bail!("the granted folders were never opened (a skiff bug)"),
        }
        Ok(())
    }
}

/// Paths of skiff's own that no grant may expose: a writable folder holding one of them, or
/// any folder inside one, is refused.
#[derive(Debug, Default)]
pub(crate) struct Protected {
    /// Written by skiff and read back as trusted data: the compiled-code cache and the
    /// key-value databases. No grant may reach into them, and none may hold them writable.
    pub state: Vec<PathBuf>,
}

/// Refuses folder grants of `app` that would let a guest reach what it was not given:
///
/// - two grants of one component that are the same folder or nest (one inside the other);
/// - a grant inside another component's writable grant: its path would be resolved through
///   files that guest made (a symlink in place of the folder) when the app next loads;
/// - a writable grant that holds the manifest or another component's code (the guest could
///   grant itself more at the next start), or skiff's state;
/// - any grant inside skiff's state (other apps' compiled code and data).
pub(crate) fn check_folders(app: &App, protected: &Protected) -> Result<(), LoadError> {
    struct Mount<'a> {
        component: usize,
        index: usize,
        grant: &'a skiff_manifest::FileMount,
        real: PathBuf,
    }
    let describe = |app: &App, m: &Mount| {
        format!(
            "component `{}` files[{}] (`{}` at `{}`{})",
            app.components[m.component].id,
            m.index,
            m.grant.host.display(),
            m.grant.guest,
            if m.grant.writable { ", writable" } else { "" }
        )
    };
    let mut mounts = Vec::new();
    for (component, spec) in app.components.iter().enumerate() {
        for (index, grant) in spec.files.iter().enumerate() {
            let real = std::fs::canonicalize(&grant.host).map_err(|err| {
                let mut error = LoadError::new(
                    &app.manifest_path,
                    LoadErrorKind::Grant {
                        host: grant.host.clone(),
                        guest: grant.guest.clone(),
                        reason: err.to_string(),
                    },
                );
                error.component = Some(component);
                error
            })?;
            mounts.push(Mount {
                component,
                index,
                grant,
                real,
            });
        }
    }
    let refuse = |component: usize, reason: String| {
        let mut error = LoadError::new(&app.manifest_path, LoadErrorKind::Folders { reason });
        error.component = Some(component);
        error
    };
    for (i, a) in mounts.iter().enumerate() {
        for b in &mounts[i + 1..] {
            let (outer, inner) = if b.real.starts_with(&a.real) {
                (a, b)
            } else if a.real.starts_with(&b.real) {
                (b, a)
            } else {
                continue;
            };
            if a.component == b.component {
                return Err(refuse(
                    a.component,
                    format!(
                        "{} and {} overlap: a folder may be granted once, and grants may not \
                         nest; grant the outer folder alone, or move the inner one out of it",
                        describe(app, outer),
                        describe(app, inner)
                    ),
                ));
            }
            if outer.grant.writable && inner.real != outer.real {
                return Err(refuse(
                    inner.component,
                    format!(
                        "{} lies inside {}, which the other component may change (it could \
                         put a link to anywhere in its place); move the folder out of the \
                         writable one, or make that one read-only",
                        describe(app, inner),
                        describe(app, outer)
                    ),
                ));
            }
        }
    }
    // `skiff serve` has no manifest: its component stands in for one, and rewriting its own
    // code gains a guest nothing it does not have.
    let has_manifest = !app.components.iter().any(|c| c.source == app.manifest_path);
    for m in mounts.iter().filter(|m| m.grant.writable) {
        let own = &app.components[m.component].source;
        let manifest = has_manifest.then_some((app.manifest_path.as_path(), "the manifest"));
        let others = app
            .components
            .iter()
            .filter(|c| c.source != *own)
            .map(|c| (c.source.as_path(), "another component's code"));
        for (path, what) in manifest.into_iter().chain(others) {
            if real_path(path).starts_with(&m.real) {
                return Err(refuse(
                    m.component,
                    format!(
                        "{} holds {what} ({}): the guest could rewrite it to grant itself more \
                         at the next start; grant a folder that holds only the app's data",
                        describe(app, m),
                        path.display()
                    ),
                ));
            }
        }
    }
    for state in &protected.state {
        let state = real_path(state);
        for m in &mounts {
            if m.real.starts_with(&state) || (m.grant.writable && state.starts_with(&m.real)) {
                return Err(refuse(
                    m.component,
                    format!(
                        "{} reaches skiff's own state at {} (compiled code or stored data); \
                         grant a folder outside it",
                        describe(app, m),
                        state.display()
                    ),
                ));
            }
        }
    }
    Ok(())
}

/// `path` with every symlink resolved, as far as it exists (the rest appended as written):
/// a cache folder not created yet is still where it will be.
fn real_path(path: &Path) -> PathBuf {
    let absolute = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    let mut existing = absolute.as_path();
    let mut rest = Vec::new();
    loop {
        if let Ok(real) = std::fs::canonicalize(existing) {
            return rest.iter().rev().fold(real, |acc, part| acc.join(part));
        }
        match (existing.parent(), existing.file_name()) {
            (Some(parent), Some(name)) => {
                rest.push(name.to_os_string());
                existing = parent;
            }
            _ => return absolute,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn real_path_resolves_the_part_that_exists() {
        let dir = tempfile::tempdir().unwrap();
        let real = std::fs::canonicalize(dir.path()).unwrap();
        std::os::unix::fs::symlink(&real, dir.path().join("link")).unwrap();
        assert_eq!(
            real_path(&dir.path().join("link/not/yet")),
            real.join("not/yet")
        );
    }
}
