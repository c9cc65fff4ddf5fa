//! Loading: from a validated [`App`] to components that are compiled, linked and ready to be
//! instantiated in microseconds, each with its grants and limits.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use skiff_manifest::App;
use tokio::sync::Semaphore;
use wasmtime::component::Component;
use wasmtime_wasi_http::p2::bindings::ProxyPre;

use crate::cache::{CacheOutcome, CodeKind};
use crate::capabilities::Grants;
use crate::capabilities::guest_log::LogSink;
use crate::engine::Runtime;
use crate::error::{LoadError, LoadErrorKind};
use crate::host::Host;
use crate::invoke::{InstanceReuse, SharedPermits};
use crate::metrics::{ComponentMetrics, MetricsScope};
use crate::usage::UsageSink;

/// An app whose every component is ready to serve.
pub struct LoadedApp {
    pub app: Arc<App>,
    /// In the order of `app.components`.
    pub components: Vec<Arc<LoadedComponent>>,
}

/// One HTTP component, ready to serve: the per-request work starts from `pre`.
pub struct LoadedComponent {
    pub app: Arc<str>,
    pub id: Arc<str>,
    pub source: PathBuf,
    /// Shared with every component built from the same bytes (see [`CodeShare`]).
    pub(crate) pre: Arc<ProxyPre<Host>>,
    pub(crate) grants: Grants,
    pub(crate) timeout: Duration,
    pub(crate) memory_limit: Option<u64>,
    pub(crate) fuel: Option<u64>,
    /// Permits for `limits.max_concurrency`, when set.
    pub(crate) concurrency: Option<(Arc<Semaphore>, u32)>,
    /// Permits shared with other apps (a tenant's in-flight quota), when set.
    pub(crate) shared_concurrency: Option<Arc<SharedPermits>>,
    pub(crate) log_sink: Option<LogSink>,
    /// Where each request's usage goes; `None`: nothing is measured.
    pub(crate) usage: Option<UsageSink>,
    /// Instantiation time, outbound and key-value calls, if the host keeps metrics.
    pub(crate) metrics: Option<ComponentMetrics>,
    /// Instances kept between requests, if `limits.requests_per_instance` allows it.
    pub(crate) reuse: Option<Arc<InstanceReuse>>,
    pub(crate) runtime: Arc<Runtime>,
    /// What loading its code took: a cache hit, or a compile and how long.
    pub load_outcome: CacheOutcome,
}

impl LoadedComponent {
    pub fn timeout(&self) -> Duration {
        self.timeout
    }
}

/// How one app is loaded, beyond its manifest: what a multi-tenant host sets per app or per
/// tenant. The default is what `skiff up` uses.
#[derive(Debug, Clone, Default)]
pub struct LoadOptions {
    /// Folder of the app's embedded key-value databases (`kv/<app>.redb` inside it), instead
    /// of the runtime's data folder: a host gives each tenant its own.
    pub data_dir: Option<PathBuf>,
    /// Permits shared with other apps: a request that finds none left gets 503.
    pub shared_concurrency: Option<Arc<SharedPermits>>,
    /// Also hand every line the app's guests output to this sink.
    pub log_sink: Option<LogSink>,
    /// Measure every request of the app and report its usage here.
    pub usage: Option<UsageSink>,
    /// Count what the app's instances do in these metrics.
    pub metrics: Option<MetricsScope>,
    /// While set, the app may not write: its key-value writes fail, and an app loaded then
    /// gets its writable folders read-only. A host sets it while the app's tenant is over its
    /// disk quota (and reloads the app when it changes).
    pub writes_refused: Option<Arc<std::sync::atomic::AtomicBool>>,
}

/// What the kind of Wasm file is, from its 8-byte header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum WasmKind {
    Component,
    CoreModule,
}

pub(crate) fn wasm_kind(path: &Path, bytes: &[u8]) -> Result<WasmKind, LoadError> {
    if bytes.len() < 8 || &bytes[..4] != b"\0asm" {
        return Err(LoadError::new(path, LoadErrorKind::NotWasm));
    }
    // Bytes 4..8 are the version and layer: `01 00 00 00` for a core module, layer 1 for a
    // component.
    Ok(if bytes[6..8] == [1, 0] {
        WasmKind::Component
    } else {
        WasmKind::CoreModule
    })
}

pub(crate) fn read_wasm(path: &Path) -> Result<Vec<u8>, LoadError> {
    std::fs::read(path).map_err(|err| LoadError::new(path, LoadErrorKind::Read(err)))
}

/// How components got their code, since the runtime started: what the host's metrics report.
#[derive(Debug, Default)]
pub struct LoadStats {
    /// Shared with a component already loaded from the same bytes: nothing read or mapped.
    pub shared: AtomicU64,
    /// Mapped from the on-disk code cache.
    pub cache_hits: AtomicU64,
    /// Compiled (the cache missed, or there is none).
    pub compiles: AtomicU64,
    /// Time spent compiling, in nanoseconds.
    pub compile_nanos: AtomicU64,
}

/// Linked code, shared by every component built from the same Wasm bytes, whichever app it
/// belongs to. One compiled module means one copy-on-write memory image and pool slots that
/// stay warm for all of them: with a thousand apps of the same code, a request no longer maps
/// the image afresh (a third of the throughput went there), and the code is in memory once.
/// Entries are weak: code no live component uses is dropped.
#[derive(Default)]
pub(crate) struct CodeShare {
    by_content: Mutex<HashMap<blake3::Hash, Weak<ProxyPre<Host>>>>,
}

impl CodeShare {
    fn get(&self, content: &blake3::Hash) -> Option<Arc<ProxyPre<Host>>> {
        let shared = self.by_content.lock().unwrap_or_else(|e| e.into_inner());
        shared.get(content).and_then(Weak::upgrade)
    }

    fn insert(&self, content: blake3::Hash, pre: &Arc<ProxyPre<Host>>) {
        let mut shared = self.by_content.lock().unwrap_or_else(|e| e.into_inner());
        shared.retain(|_, weak| weak.strong_count() > 0);
        shared.insert(content, Arc::downgrade(pre));
    }
}

impl Runtime {
    /// Reads a component file and returns it compiled (or loaded from the cache, or shared
    /// with a component already loaded from the same bytes) and linked for HTTP.
    fn load_http_component(
        &self,
        path: &Path,
    ) -> Result<(Arc<ProxyPre<Host>>, CacheOutcome), LoadError> {
        let wasm = read_wasm(path)?;
        let content = blake3::hash(&wasm);
        let stats = &self.load_stats;
        if let Some(pre) = self.code_share.get(&content) {
            stats.shared.fetch_add(1, Ordering::Relaxed);
            return Ok((pre, CacheOutcome::Hit));
        }
        let (component, outcome) = self.load_component_code(path, &wasm)?;
        match outcome {
            CacheOutcome::Hit => stats.cache_hits.fetch_add(1, Ordering::Relaxed),
            CacheOutcome::Compiled(took) => {
                let nanos = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX);
                stats.compile_nanos.fetch_add(nanos, Ordering::Relaxed);
                stats.compiles.fetch_add(1, Ordering::Relaxed)
            }
        };
        let pre = Arc::new(self.prepare_http(path, &component)?);
        self.code_share.insert(content, &pre);
        Ok((pre, outcome))
    }

    /// Compiles a component file's bytes (or loads them from the cache).
    pub(crate) fn load_component_code(
        &self,
        path: &Path,
        wasm: &[u8],
    ) -> Result<(Component, CacheOutcome), LoadError> {
        if wasm_kind(path, wasm)? == WasmKind::CoreModule {
            return Err(LoadError::new(
                path,
                LoadErrorKind::Invalid(
                    "this is a core module, not a component: build it for wasm32-wasip2, or wrap \
                     it with `wasm-tools component new`"
                        .into(),
                ),
            ));
        }
        self.compile_component(path, wasm)
    }

    /// Compiles component bytes read from `path`, or loads their compiled code from the cache.
    pub(crate) fn compile_component(
        &self,
        path: &Path,
        wasm: &[u8],
    ) -> Result<(Component, CacheOutcome), LoadError> {
        self.cache.load(
            &self.engine,
            path,
            wasm,
            CodeKind::Component,
            // SAFETY: see `CodeCache::load`: only files we wrote and checksummed get here.
            |file| unsafe { Component::deserialize_file(&self.engine, file) },
            |bytes| unsafe { Component::deserialize(&self.engine, bytes) },
        )
    }

    fn prepare_http(
        &self,
        path: &Path,
        component: &Component,
    ) -> Result<ProxyPre<Host>, LoadError> {
        let instance_pre = self
            .linker
            .instantiate_pre(component)
            .map_err(|err| LoadError::from_link(path, err))?;
        ProxyPre::new(instance_pre).map_err(|_| {
            LoadError::new(
                path,
                LoadErrorKind::MissingExport {
                    expected: "wasi:http/incoming-handler",
                    hint: "an HTTP component implements the `wasi:http/proxy` world; if this is a \
                           command, run it with `skiff run`",
                },
            )
        })
    }

    /// What no folder grant may reach: the code cache and the key-value databases.
    fn protected_state(&self, options: &LoadOptions) -> crate::capabilities::wasi::Protected {
        let mut state: Vec<PathBuf> = self
            .cache
            .dir()
            .map(Path::to_path_buf)
            .into_iter()
            .collect();
        if let Some(data_dir) = options.data_dir.as_ref().or(self.config.data_dir.as_ref()) {
            state.push(data_dir.join("kv"));
        }
        state.extend(
            self.config
                .runtime_config
                .stores
                .iter()
                .filter_map(|(_, spec)| match spec {
                    skiff_manifest::StoreSpec::Embedded { path } => path.clone(),
                    _ => None,
                }),
        );
        crate::capabilities::wasi::Protected { state }
    }

    /// Loads every component of `app`. Code shared by several components, of this app or
    /// any other, is compiled and linked once.
    /// The first failure is returned with the index of its component, so the caller can point
    /// at the manifest line.
    pub fn load_app(self: &Arc<Self>, app: App) -> Result<LoadedApp, LoadError> {
        self.load_app_with(app, &LoadOptions::default())
    }

    /// [`Runtime::load_app`] with per-app options.
    pub fn load_app_with(
        self: &Arc<Self>,
        app: App,
        options: &LoadOptions,
    ) -> Result<LoadedApp, LoadError> {
        let app = Arc::new(app);
        let app_name: Arc<str> = app.name.as_str().into();
        let mut components = Vec::with_capacity(app.components.len());
        crate::capabilities::wasi::check_folders(&app, &self.protected_state(options))?;
        let variables = crate::state::resolve_variables(
            &app,
            &self.config.runtime_config,
            self.config.variables_from_env,
        )?;
        let writes_refused = options
            .writes_refused
            .as_ref()
            .is_some_and(|refused| refused.load(Ordering::Relaxed));
        for (index, spec) in app.components.iter().enumerate() {
            let with_index = |mut err: LoadError| {
                err.component = Some(index);
                err
            };
            let (pre, outcome) = self.load_http_component(&spec.source).map_err(with_index)?;
            if spec.limits.fuel.is_some() && !self.config.fuel {
                return Err(with_index(LoadError::new(
                    &spec.source,
                    LoadErrorKind::FuelDisabled,
                )));
            }
            let key_value = self
                .backends
                .grant(
                    &app,
                    spec,
                    &self.config.runtime_config,
                    options
                        .data_dir
                        .as_deref()
                        .or(self.config.data_dir.as_deref()),
                    options.writes_refused.as_ref(),
                )
                .map_err(with_index)?;
            let read_only;
            let spec = if writes_refused {
                let mut copy = spec.clone();
                copy.files
                    .iter_mut()
                    .for_each(|mount| mount.writable = false);
                read_only = copy;
                &read_only
            } else {
                spec
            };
            let config = crate::state::config_grant(spec, &variables);
            let mut grants = Grants::from_component(spec, key_value, config).map_err(with_index)?;
            if !self.config.allow_private_outbound {
                grants.outbound_http = grants.outbound_http.public_only();
            }
            let reuse = InstanceReuse::new(
                spec.limits.requests_per_instance,
                self.config.max_instances,
                self.config.reuse_idle_timeout,
            );
            if let Some(reuse) = &reuse {
                self.idle_instances.register(reuse);
                if let Some(shared) = &options.shared_concurrency {
                    shared.register(reuse);
                }
            }
            components.push(Arc::new(LoadedComponent {
                app: app_name.clone(),
                id: spec.id.as_str().into(),
                source: spec.source.clone(),
                pre,
                grants,
                timeout: spec.limits.timeout.unwrap_or(self.config.default_timeout),
                memory_limit: spec.limits.memory.or(self.config.default_memory),
                fuel: spec.limits.fuel,
                concurrency: spec
                    .limits
                    .max_concurrency
                    .map(|n| (Arc::new(Semaphore::new(n as usize)), n)),
                shared_concurrency: options.shared_concurrency.clone(),
                log_sink: options.log_sink.clone(),
                usage: options.usage.clone(),
                metrics: options
                    .metrics
                    .as_ref()
                    .map(|scope| scope.for_component(&app_name, &spec.id)),
                reuse,
                runtime: self.clone(),
                load_outcome: outcome,
            }));
        }
        Ok(LoadedApp { app, components })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_tells_component_from_module() {
        let p = Path::new("x.wasm");
        assert_eq!(
            wasm_kind(p, b"\0asm\x0d\x00\x01\x00").unwrap(),
            WasmKind::Component
        );
        assert_eq!(
            wasm_kind(p, b"\0asm\x01\x00\x00\x00").unwrap(),
            WasmKind::CoreModule
        );
        assert!(matches!(
            wasm_kind(p, b"#!/bin/sh\n").unwrap_err().kind,
            LoadErrorKind::NotWasm
        ));
        assert!(matches!(
            wasm_kind(p, b"\0as").unwrap_err().kind,
            LoadErrorKind::NotWasm
        ));
    }
}
