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

use skiff_manifest::{App, Component};
use wasmtime::component::{Linker, ResourceTable};
use wasmtime_wasi::filesystem::WasiFilesystemCtx;
use wasmtime_wasi::{FsPerms, WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};

use super::guest_log::{self, GuestOutputs};
use super::{Capability, InstanceIdentity, LoadContext};
use crate::error::{LoadError, LoadErrorKind};

/// The `wasi:cli` environment and `wasi:filesystem`.
pub(crate) struct Wasi;

impl Capability for Wasi {
    type AppGrant = ();
    type Grant = WasiGrant;
    type Instance = WasiState;

    /// Refuses folder grants that would let a guest reach what it was not given.
    fn app_grant(load: &LoadContext<'_>) -> Result<(), LoadError> {
        check_folders(load.app, load.protected)
    }

    /// The component's variables and folders, the folders opened. While the app's writes are
    /// refused, its writable folders are granted read-only.
    fn grant(
        _: &(),
        load: &LoadContext<'_>,
        component: &Component,
    ) -> Result<WasiGrant, LoadError> {
        let read_only = load.writes_refused_now();
        let dirs = component
            .files
            .iter()
            .map(|mount| DirGrant {
                host: mount.host.clone(),
                guest: mount.guest.clone(),
                writable: mount.writable && !read_only,
            })
            .collect();
        WasiGrant {
            env: component.environment.clone(),
            dirs,
            ..WasiGrant::default()
        }
        .open()
    }

    fn instance(grant: &WasiGrant, identity: &InstanceIdentity) -> WasiState {
        let mut builder = grant.builder();
        let outputs = match &grant.command_args {
            Some(args) => {
                builder.inherit_stdio().args(args);
                None
            }
            None => {
                if !grant.args.is_empty() {
                    builder.args(&grant.args);
                }
                Some(guest_log::attach(&mut builder, identity))
            }
        };
        let mut ctx = builder.build();
        grant.give_folders(&mut ctx);
        WasiState { ctx, outputs }
    }

    fn next_request(state: &mut WasiState, identity: &InstanceIdentity) {
        if let Some(outputs) = &state.outputs {
            outputs.retag(identity);
        }
    }

    fn request_done(state: &mut WasiState) {
        if let Some(outputs) = &state.outputs {
            outputs.flush();
        }
    }
}

/// Links every WASI 0.2 interface (cli, filesystem, sockets, clocks, random, io). Linking an
/// interface grants nothing by itself: an empty grant denies every use. Linking them all is
/// what lets components from any toolchain (componentize-py and jco import filesystem and
/// sockets even for pure HTTP handlers) instantiate unchanged.
pub(crate) fn add_to_linker<T: WasiView + 'static>(linker: &mut Linker<T>) -> wasmtime::Result<()> {
    wasmtime_wasi::p2::add_to_linker_async(linker)
}

/// Links every WASI 0.3 interface, on the same context: the same folders, variables,
/// sockets policy and output as 0.2.
pub(crate) fn add_wasi_0_3_to_linker<T: WasiView + 'static>(
    linker: &mut Linker<T>,
) -> wasmtime::Result<()> {
    wasmtime_wasi::p3::add_to_linker(linker)
}

/// An instance's WASI context, and where its stdout and stderr go when not to skiff's own.
pub(crate) struct WasiState {
    ctx: WasiCtx,
    outputs: Option<GuestOutputs>,
}

impl WasiState {
    /// What `WasiView` hands out, with the instance's resource table.
    pub(crate) fn view<'a>(&'a mut self, table: &'a mut ResourceTable) -> WasiCtxView<'a> {
        WasiCtxView {
            ctx: &mut self.ctx,
            table,
        }
    }
}

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
    fn validate(&self) -> Result<(), LoadError> {
        match std::fs::metadata(&self.host) {
            Ok(meta) if meta.is_dir() => Ok(()),
            Ok(_) => Err(self.error(
                "it is a file, and skiff grants folders: put it in a folder and grant that",
            )),
            Err(err) => Err(self.error(err.to_string())),
        }
    }
}

/// What a component may see of the host: variables and folders. The folders are opened when
/// the grant is loaded; instances get those handles, never the paths.
#[derive(Clone, Default)]
pub struct WasiGrant {
    pub env: Vec<(String, String)>,
    pub dirs: Vec<DirGrant>,
    /// The folders of `dirs`, opened: what every instance is handed.
    opened: Option<WasiFilesystemCtx>,
    /// A command's argv: its stdio is the host's, not the log.
    command_args: Option<Vec<String>>,
    /// The argv of a command component of an app that a trigger runs (a schedule): its
    /// stdio goes to the log, as a request's does.
    pub(crate) args: Vec<String>,
}

impl std::fmt::Debug for WasiGrant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WasiGrant")
            .field("env", &self.env.iter().map(|(k, _)| k).collect::<Vec<_>>())
            .field("dirs", &self.dirs)
            .field("opened", &self.opened.is_some())
            .finish_non_exhaustive()
    }
}

impl WasiGrant {
    /// Checks and opens every granted folder, once: instances get these handles.
    pub(crate) fn open(mut self) -> Result<Self, LoadError> {
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

    /// The grant of a command: stdio passes through, and the guest sees `args` as its argv.
    pub(crate) fn for_command(mut self, args: Vec<String>) -> Self {
        self.command_args = Some(args);
        self
    }

    /// A builder with this grant's variables and nothing else; the context built from it
    /// gets its folders from [`WasiGrant::give_folders`].
    fn builder(&self) -> WasiCtxBuilder {
        let mut builder = WasiCtxBuilder::new();
        builder
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false);
        builder.envs(&self.env);
        builder
    }

    /// Hands `ctx` the folders opened at load (clones of the handles). No path is resolved.
    fn give_folders(&self, ctx: &mut WasiCtx) {
        // Unopened folders would be denied, never resolved by path; but it is a skiff bug.
        debug_assert!(self.opened.is_some() || self.dirs.is_empty());
        if let Some(opened) = &self.opened {
            *ctx.filesystem() = opened.clone();
        }
    }

    /// A WASI preview 1 context from this grant, for a core module command.
    pub(crate) fn preview1(&self) -> wasmtime_wasi::p1::WasiP1Ctx {
        let mut builder = self.builder();
        builder.inherit_stdio();
        if let Some(args) = &self.command_args {
            builder.args(args);
        }
        let mut ctx = builder.build_p1();
        // The preview 1 adapter reads the preopens on the guest's first call, after this.
        self.give_folders(ctx.ctx().ctx);
        ctx
    }
}

/// Refuses folder grants of `app` that would let a guest reach what it was not given:
///
/// - two grants of one component that are the same folder or nest (one inside the other);
/// - a grant inside another component's writable grant: its path would be resolved through
///   files that guest made (a symlink in place of the folder) when the app next loads;
/// - a writable grant that holds the manifest or another component's code (the guest could
///   grant itself more at the next start), or skiff's state;
/// - any grant inside skiff's state (other apps' compiled code and data).
///
/// `protected` is skiff's state: written by skiff and read back as trusted data (the
/// compiled-code cache, the key-value databases).
fn check_folders(app: &App, protected: &[PathBuf]) -> Result<(), LoadError> {
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
    for state in protected {
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
