//! Loading: from a validated [`App`] to components that are compiled, linked and ready to be
//! instantiated in microseconds, each with its grants and limits.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use skiff_manifest::App;
use tokio::sync::Semaphore;
use wasmtime::component::{Component, InstancePre};
use wasmtime_wasi::p2::bindings::CommandPre;
use wasmtime_wasi_http::p2::bindings::ProxyPre;
use wasmtime_wasi_http::p3::bindings::ServicePre;

use crate::cache::{CacheOutcome, CodeCache};
use crate::capabilities::LoadContext;
use crate::capabilities::guest_log::LogSink;
use crate::capabilities::keyvalue::Backends;
use crate::capabilities::messaging::HandlerIndices;
use crate::config::RuntimeConfig;
use crate::engine::{Flavor, Sandboxes};
use crate::error::{LoadError, LoadErrorKind};
use crate::host::{AppGrants, Grants, Host};
use crate::limits::Limits;
use crate::metrics::{ComponentMetrics, MetricsScope};
use crate::reuse::{InstanceReuse, SharedPermits};
use crate::usage::UsageSink;

/// An app whose every component is ready to serve.
pub struct LoadedApp {
    app: Arc<App>,
    /// In the order of `app.components`.
    components: Vec<Arc<LoadedComponent>>,
    /// Whether the host lets this app reach private networks and itself where its manifest
    /// names them (see [`Destination`](crate::Destination)).
    allow_private_outbound: bool,
    /// The TLS client configuration of each upstream, in the order of `app.upstreams`.
    upstream_tls: Vec<Arc<rustls::ClientConfig>>,
}

impl LoadedApp {
    /// The app as its manifest describes it.
    pub fn app(&self) -> &Arc<App> {
        &self.app
    }

    /// Its components, in the order of `app().components`.
    pub fn components(&self) -> &[Arc<LoadedComponent>] {
        &self.components
    }

    /// Which addresses a host the manifest names (an upstream's) may be connected to.
    pub fn destination(&self, host: &str) -> crate::Destination {
        crate::Destination::new(host, self.allow_private_outbound)
    }

    /// How the `https://` addresses of the upstream at `index` of `app().upstreams` are
    /// trusted: its `tls.ca`, read at load, or else the public roots.
    pub fn upstream_tls(&self, index: usize) -> Arc<rustls::ClientConfig> {
        self.upstream_tls
            .get(index)
            .cloned()
            .unwrap_or_else(crate::tls::public_config)
    }
}

/// What a component's code is linked as: each unit of work starts from it.
pub(crate) enum Linked {
    /// An HTTP component (`wasi:http/proxy`), shared with every component built from the same
    /// bytes (see [`CodeShare`]).
    Http(Arc<ProxyPre<Host>>),
    /// A WASI 0.3 HTTP component (`wasi:http/service@0.3`: component-model async), on the
    /// async engine; shared the same way.
    Service(Arc<ServicePre<Host>>),
    /// A command (`wasi:cli/run`), which a trigger (a schedule) runs; it serves no routes.
    Command(Commands),
    /// Neither, but a queue consumer's `wasi:messaging/incoming-handler`: the queue trigger
    /// calls it; it serves no routes.
    Messages(InstancePre<Host>),
}

/// A command of either version of WASI.
#[derive(Clone)]
pub(crate) enum Commands {
    /// `wasi:cli/run@0.2`.
    Wasip2(CommandPre<Host>),
    /// `wasi:cli/run@0.3` (an async `run`), on the async engine.
    Wasi03(wasmtime_wasi::p3::bindings::CommandPre<Host>),
}

impl Linked {
    pub(crate) fn instance_pre(&self) -> &InstancePre<Host> {
        match self {
            Linked::Http(pre) => pre.instance_pre(),
            Linked::Service(pre) => pre.instance_pre(),
            Linked::Command(Commands::Wasip2(pre)) => pre.instance_pre(),
            Linked::Command(Commands::Wasi03(pre)) => pre.instance_pre(),
            Linked::Messages(pre) => pre,
        }
    }

    /// What the component is, for messages that say what it should be.
    fn kind(&self) -> &'static str {
        match self {
            Linked::Http(_) => "an HTTP component (`wasi:http/proxy`)",
            Linked::Service(_) => "an HTTP component (`wasi:http/service@0.3`)",
            Linked::Command(_) => "a command (`wasi:cli/run`)",
            Linked::Messages(_) => "a queue consumer (`wasi:messaging/incoming-handler`) only",
        }
    }
}

/// One component, ready to run: an HTTP component serves requests, a command runs when a
/// trigger starts it ([`LoadedComponent::run_command`]), and a component that exports
/// `wasi:messaging/incoming-handler` (beside HTTP, or alone) handles the messages of the queue
/// it consumes ([`LoadedComponent::handle_message`]).
pub struct LoadedComponent {
    pub(crate) app: Arc<str>,
    pub(crate) id: Arc<str>,
    source: PathBuf,
    pub(crate) linked: Linked,
    /// Its `wasi:messaging/incoming-handler` export, if it has one.
    pub(crate) message_handler: Option<HandlerIndices>,
    pub(crate) grants: Grants,
    /// Its deadline (always set), memory cap and fuel budget per request.
    pub(crate) limits: Limits,
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
    pub(crate) sandboxes: Arc<Sandboxes>,
    /// What loading its code took: a cache hit, or a compile and how long.
    load_outcome: CacheOutcome,
}

impl LoadedComponent {
    /// The name of the app it belongs to.
    pub fn app(&self) -> &Arc<str> {
        &self.app
    }

    /// Its id in the manifest.
    pub fn id(&self) -> &Arc<str> {
        &self.id
    }

    /// The Wasm file it was loaded from.
    pub fn source(&self) -> &Path {
        &self.source
    }

    /// What loading its code took: a cache hit, or a compile and how long.
    pub fn load_outcome(&self) -> CacheOutcome {
        self.load_outcome
    }

    /// Whether it is a command (`wasi:cli/run`) rather than an HTTP component.
    pub fn is_command(&self) -> bool {
        matches!(self.linked, Linked::Command(_))
    }

    /// How long one of its requests may take.
    pub fn timeout(&self) -> Duration {
        self.limits.timeout.unwrap_or(Duration::MAX)
    }
}

/// How one app is loaded, beyond its manifest: what a multi-tenant host sets per app or per
/// tenant. The default is what `skiff up` uses; start from it and set what you need.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
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
    pub writes_refused: Option<Arc<AtomicBool>>,
    /// Keep the stores the operator's runtime config does not place in this Redis instead of
    /// the embedded database: a cluster's hosts share them so.
    pub shared_store: Option<crate::capabilities::SharedStore>,
    /// Where the app's queues are (`publish`, and the queue trigger's consumers).
    pub queues: Option<crate::capabilities::messaging::QueueSpace>,
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
    by_content: Mutex<HashMap<blake3::Hash, SharedCode>>,
}

enum SharedCode {
    Http(Weak<ProxyPre<Host>>),
    Service(Weak<ServicePre<Host>>),
}

impl SharedCode {
    fn upgrade(&self) -> Option<Linked> {
        match self {
            SharedCode::Http(pre) => pre.upgrade().map(Linked::Http),
            SharedCode::Service(pre) => pre.upgrade().map(Linked::Service),
        }
    }

    fn in_use(&self) -> bool {
        match self {
            SharedCode::Http(pre) => pre.strong_count() > 0,
            SharedCode::Service(pre) => pre.strong_count() > 0,
        }
    }
}

impl CodeShare {
    fn get(&self, content: &blake3::Hash) -> Option<Linked> {
        let shared = self.by_content.lock().unwrap_or_else(|e| e.into_inner());
        shared.get(content).and_then(SharedCode::upgrade)
    }

    /// Shares `linked` if it is HTTP code (commands and consumers are linked per load).
    fn insert(&self, content: blake3::Hash, linked: &Linked) {
        let code = match linked {
            Linked::Http(pre) => SharedCode::Http(Arc::downgrade(pre)),
            Linked::Service(pre) => SharedCode::Service(Arc::downgrade(pre)),
            Linked::Command(_) | Linked::Messages(_) => return,
        };
        let mut shared = self.by_content.lock().unwrap_or_else(|e| e.into_inner());
        shared.retain(|_, code| code.in_use());
        shared.insert(content, code);
    }
}

/// Loads apps: what the runtime lends it for one load.
pub(crate) struct Loader<'a> {
    pub sandboxes: &'a Arc<Sandboxes>,
    pub cache: &'a CodeCache,
    pub config: &'a RuntimeConfig,
    pub backends: &'a Backends,
    pub code_share: &'a CodeShare,
    pub stats: &'a LoadStats,
}

impl Loader<'_> {
    /// Reads a component file and returns it compiled (or loaded from the cache, or shared
    /// with a component already loaded from the same bytes) and linked, for HTTP or as a
    /// command.
    fn linked_component(&self, path: &Path) -> Result<(Linked, CacheOutcome), LoadError> {
        let wasm = crate::code::read_wasm(path)?;
        let content = blake3::hash(&wasm);
        let stats = self.stats;
        if let Some(linked) = self.code_share.get(&content) {
            stats.shared.fetch_add(1, Ordering::Relaxed);
            return Ok((linked, CacheOutcome::Hit));
        }
        let (component, outcome, flavor) = self.compile(path, &wasm)?;
        match outcome {
            CacheOutcome::Hit => stats.cache_hits.fetch_add(1, Ordering::Relaxed),
            CacheOutcome::Compiled(took) => {
                let nanos = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX);
                stats.compile_nanos.fetch_add(nanos, Ordering::Relaxed);
                stats.compiles.fetch_add(1, Ordering::Relaxed)
            }
        };
        let linked = self.prepare(path, &component, flavor)?;
        self.code_share.insert(content, &linked);
        Ok((linked, outcome))
    }

    /// Compiles a component (or maps it from the cache) for the engine it needs. One that
    /// exports WASI 0.3's handler goes to the async engine at once. Any other is tried on the
    /// WASIp2 engine first; one that uses component-model async some other way fails there
    /// at its first async type, near the start, before any compiling, and then goes to the
    /// async engine. A file that fails on both is reported with the WASIp2 engine's reason,
    /// unless that reason was the async feature.
    fn compile(
        &self,
        path: &Path,
        wasm: &[u8],
    ) -> Result<(Component, CacheOutcome, Flavor), LoadError> {
        if crate::code::wasi_0_3_exports(wasm).http_handler {
            let (engine, _) = self
                .sandboxes
                .engine_and_linker(Flavor::Async)
                .map_err(|reason| LoadError::new(path, LoadErrorKind::AsyncUnavailable(reason)))?;
            return compile_async(engine, self.cache, path, wasm);
        }
        let sync_err = match crate::code::component(self.sandboxes.engine(), self.cache, path, wasm)
        {
            Ok((component, outcome)) => return Ok((component, outcome, Flavor::Sync)),
            Err(err) if matches!(err.kind, LoadErrorKind::Invalid(_)) => err,
            Err(err) => return Err(err),
        };
        let uses_async = matches!(&sync_err.kind,
            LoadErrorKind::Invalid(why) if crate::code::needs_component_model_async(why));
        let (engine, _) = match self.sandboxes.engine_and_linker(Flavor::Async) {
            Ok(engine) => engine,
            Err(reason) if uses_async => {
                return Err(LoadError::new(
                    path,
                    LoadErrorKind::AsyncUnavailable(reason),
                ));
            }
            Err(_) => return Err(sync_err),
        };
        // For a component that uses component-model async, what the async engine says (a
        // feature it lacks too, a cache that cannot be written) is the news.
        compile_async(engine, self.cache, path, wasm)
            .map_err(|err| if uses_async { err } else { sync_err })
    }

    fn prepare(
        &self,
        path: &Path,
        component: &Component,
        flavor: Flavor,
    ) -> Result<Linked, LoadError> {
        let (_, linker) = self
            .sandboxes
            .engine_and_linker(flavor)
            .map_err(|reason| LoadError::new(path, LoadErrorKind::AsyncUnavailable(reason)))?;
        let instance_pre = linker
            .instantiate_pre(component)
            .map_err(|err| LoadError::from_link(path, err))?;
        if flavor == Flavor::Async {
            if let Ok(pre) = ServicePre::new(instance_pre.clone()) {
                return Ok(Linked::Service(Arc::new(pre)));
            }
            if let Ok(pre) = wasmtime_wasi::p3::bindings::CommandPre::new(instance_pre) {
                return Ok(Linked::Command(Commands::Wasi03(pre)));
            }
            return Err(LoadError::new(
                path,
                LoadErrorKind::MissingExport {
                    expected: "wasi:http/handler@0.3",
                    hint: "this component uses WASI 0.3 (component-model async), and skiff runs \
                           WASI 0.3 components that export the `wasi:http/handler` of \
                           `wasi:http/service@0.3.x` or the `wasi:cli/run` of WASI 0.3; queue \
                           consumers are WASIp2 only for now",
                },
            ));
        }
        if let Ok(pre) = ProxyPre::new(instance_pre.clone()) {
            return Ok(Linked::Http(Arc::new(pre)));
        }
        if let Ok(pre) = CommandPre::new(instance_pre.clone()) {
            return Ok(Linked::Command(Commands::Wasip2(pre)));
        }
        if HandlerIndices::new(&instance_pre).is_ok() {
            return Ok(Linked::Messages(instance_pre));
        }
        Err(LoadError::new(
            path,
            LoadErrorKind::MissingExport {
                expected: "wasi:http/incoming-handler",
                hint: "an HTTP component implements the `wasi:http/proxy` world, a command \
                       the `wasi:cli/run` world, a queue consumer exports \
                       `wasi:messaging/incoming-handler@0.2.0-draft`",
            },
        ))
    }

    /// What no folder grant may reach: the code cache and the key-value databases.
    fn protected_state(&self, data_dir: Option<&Path>) -> Vec<PathBuf> {
        let mut state: Vec<PathBuf> = self
            .cache
            .dir()
            .map(Path::to_path_buf)
            .into_iter()
            .collect();
        if let Some(data_dir) = data_dir {
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
        state
    }

    /// Loads every component of `app`. Code shared by several components, of this app or
    /// any other, is compiled and linked once.
    /// The first failure is returned with the index of its component, so the caller can point
    /// at the manifest line.
    pub(crate) fn load(&self, app: App, options: &LoadOptions) -> Result<LoadedApp, LoadError> {
        let app = Arc::new(app);
        let app_name: Arc<str> = app.name.as_str().into();
        let data_dir = options
            .data_dir
            .as_deref()
            .or(self.config.data_dir.as_deref());
        let protected = self.protected_state(data_dir);
        let load = LoadContext {
            app: &app,
            runtime_config: &self.config.runtime_config,
            data_dir,
            variables_from_env: self.config.variables_from_env,
            allow_private_outbound: self.config.allow_private_outbound,
            writes_refused: options.writes_refused.as_ref(),
            shared_store: options.shared_store.as_ref(),
            protected: &protected,
            backends: self.backends,
            queues: options.queues.as_ref(),
        };
        let app_grants = AppGrants::new(&load)?;
        let mut components = Vec::with_capacity(app.components.len());
        for (index, spec) in app.components.iter().enumerate() {
            let with_index = |mut err: LoadError| {
                err.component = Some(index);
                err
            };
            let (linked, outcome) = self.linked_component(&spec.source).map_err(with_index)?;
            let message_handler = HandlerIndices::new(linked.instance_pre()).ok();
            check_triggers(&app, index, &linked, message_handler.is_some())
                .map_err(|kind| with_index(LoadError::new(&spec.source, kind)))?;
            if spec.limits.fuel.is_some() && !self.config.fuel {
                return Err(with_index(LoadError::new(
                    &spec.source,
                    LoadErrorKind::FuelDisabled,
                )));
            }
            let grants = app_grants.component(&load, spec).map_err(with_index)?;
            let reuse = InstanceReuse::new(
                spec.limits.requests_per_instance,
                self.config.max_instances,
                self.config.reuse_idle_timeout,
            );
            if let Some(reuse) = &reuse {
                self.sandboxes.permits.register(reuse);
                if let Some(shared) = &options.shared_concurrency {
                    shared.register(reuse);
                }
            }
            components.push(Arc::new(LoadedComponent {
                app: app_name.clone(),
                id: spec.id.as_str().into(),
                source: spec.source.clone(),
                linked,
                message_handler,
                grants,
                limits: Limits {
                    timeout: Some(spec.limits.timeout.unwrap_or(self.config.default_timeout)),
                    memory: spec.limits.memory.or(self.config.default_memory),
                    fuel: spec.limits.fuel,
                },
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
                sandboxes: self.sandboxes.clone(),
                load_outcome: outcome,
            }));
        }
        check_upstreams(&app, self.config.allow_private_outbound)?;
        let upstream_tls = crate::tls::upstream_configs(&app)?;
        Ok(LoadedApp {
            app,
            components,
            allow_private_outbound: self.config.allow_private_outbound,
            upstream_tls,
        })
    }
}

/// Refuses an upstream address, written as an IP, that the host's outbound policy does not
/// let apps reach (the host itself or the cloud metadata service, or any private address on
/// a host that allows public ones only), so that a deploy says so rather than every request
/// failing. Names are checked when they are resolved, at connect time.
fn check_upstreams(app: &App, allow_private: bool) -> Result<(), LoadError> {
    for upstream in &app.upstreams {
        for url in &upstream.urls {
            let Ok(ip) = url.host.parse::<std::net::IpAddr>() else {
                continue;
            };
            let destination = crate::Destination::new(&url.host, allow_private);
            if !destination.admits(ip) {
                return Err(LoadError::new(
                    &app.manifest_path,
                    LoadErrorKind::Upstream {
                        upstream: upstream.name.clone(),
                        address: url.to_string(),
                        reason: destination.refusal(),
                    },
                ));
            }
        }
    }
    Ok(())
}

/// Refuses a component that cannot do what the manifest's triggers ask of it: a route or a
/// scheduled `POST` needs an HTTP component, a scheduled run without a path a command, and a
/// queue consumer either the `wasi:messaging` handler or (with `path`) an HTTP component.
fn check_triggers(
    app: &App,
    index: usize,
    linked: &Linked,
    handles_messages: bool,
) -> Result<(), LoadErrorKind> {
    let is_http = matches!(linked, Linked::Http(_) | Linked::Service(_));
    let is_command = matches!(linked, Linked::Command(_));
    let kind = linked.kind();
    if !is_http && app.routes.iter().any(|r| r.component() == Some(index)) {
        let hint = if is_command {
            "it is a command (`wasi:cli/run`), which serves no routes: run it with `skiff run`, \
             or remove its `route` and give it a schedule (a command can run on a schedule)"
                .to_string()
        } else {
            format!("it is {kind}, which serves no routes: remove its `route`")
        };
        // The component's code is what does not fit: its `source` is the line to show.
        return Err(LoadErrorKind::WrongKind {
            field: "source",
            expected: "wasi:http/incoming-handler",
            hint,
        });
    }
    for schedule in app.schedules.iter().filter(|s| s.component == index) {
        let (ok, expected, fix): (bool, &'static str, &str) = match schedule.path {
            Some(_) => (
                is_http,
                "wasi:http/incoming-handler",
                "a schedule with a `path` calls an HTTP component: point it at one, or give \
                 a command's schedule `args` instead",
            ),
            None => (
                is_command,
                "wasi:cli/run",
                "a schedule without a `path` runs a command: give it the `path` of an HTTP \
                 route to call",
            ),
        };
        if !ok {
            return Err(LoadErrorKind::WrongKind {
                field: "schedule",
                expected,
                hint: format!("it is {kind}; {fix}"),
            });
        }
    }
    for consume in app.consumers.iter().filter(|c| c.component == index) {
        let (ok, expected, fix): (bool, &'static str, &str) = match consume.path {
            Some(_) => (
                is_http,
                "wasi:http/incoming-handler",
                "a `consume` table with a `path` delivers each message as an HTTP `POST`: \
                 point it at an HTTP component, or remove `path` to call the component's \
                 `wasi:messaging/incoming-handler`",
            ),
            None => (
                handles_messages,
                "wasi:messaging/incoming-handler@0.2.0-draft",
                "a `consume` table without a `path` calls the component's \
                 `wasi:messaging/incoming-handler` export: export it (the \
                 `wasi:messaging/messaging-core` world), or set `path` to receive each message \
                 as an HTTP `POST`",
            ),
        };
        if !ok {
            return Err(LoadErrorKind::WrongKind {
                field: "consume",
                expected,
                hint: format!("it is {kind}; {fix}"),
            });
        }
    }
    Ok(())
}

/// Compiles `wasm` on the async engine (`engine`); a file that engine refuses too is
/// reported as a component-model async feature skiff does not support.
fn compile_async(
    engine: &wasmtime::Engine,
    cache: &CodeCache,
    path: &Path,
    wasm: &[u8],
) -> Result<(Component, CacheOutcome, Flavor), LoadError> {
    match crate::code::component(engine, cache, path, wasm) {
        Ok((component, outcome)) => Ok((component, outcome, Flavor::Async)),
        Err(LoadError {
            kind: LoadErrorKind::Invalid(why),
            ..
        }) => Err(LoadError::new(path, LoadErrorKind::AsyncUnsupported(why))),
        Err(err) => Err(err),
    }
}
