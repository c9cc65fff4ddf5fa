//! One app served alone, on a runtime of its own. `skiff up`, `skiff serve` and the containerd
//! shim all start their app here, so an app behaves the same under each: the same load
//! errors, limits, metrics and graceful shutdown.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use skiff_manifest::{App, ManifestError};
use skiff_runtime::{
    LoadError, LoadOptions, LoadedApp, MetricsScope, Runtime, RuntimeConfig, RuntimeMetrics,
};

use arc_swap::ArcSwap;
use hyper::body::Incoming;
use hyper::{Request, Response};

use skiff_runtime::ResponseBody;

use crate::{AppSource, HttpApp, HttpLimits, HttpMetrics, Selected, Server, serve_metrics};

/// Where and how one app is served.
#[derive(Clone, Debug)]
pub struct Standalone {
    pub listen: SocketAddr,
    /// Serve Prometheus metrics at `http://ADDR/metrics` too.
    pub metrics_listen: Option<SocketAddr>,
    pub limits: HttpLimits,
    /// How long requests in flight may take to finish once shutdown starts.
    pub shutdown_grace: Duration,
    /// The app came from a manifest, so load errors may point at its fields.
    pub from_manifest: bool,
    /// Where the app's queues are, if it uses any.
    pub queues: Option<skiff_runtime::QueueSpace>,
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot make the Wasm engine: {0}")]
    Engine(String),
    #[error(transparent)]
    Load(#[from] LoadError),
    /// A load error of one component, told at its manifest field.
    #[error(transparent)]
    Manifest(#[from] Box<ManifestError>),
    #[error("cannot listen on {addr}")]
    Listen {
        addr: SocketAddr,
        /// The metrics listener, not the app's.
        metrics: bool,
        source: std::io::Error,
    },
    #[error("loading the app stopped: {0}")]
    Interrupted(String),
}

/// An app loaded and its listeners bound; nothing is answered until [`Started::serve`].
pub struct Started {
    server: Server<CurrentApp>,
    runtime: Arc<Runtime>,
    app: Arc<App>,
    http_app: Arc<HttpApp>,
    metrics_addr: Option<SocketAddr>,
    reloader: Reloader,
}

/// The app a standalone server answers with: one for every request, replaced as a whole by
/// [`Reloader::reload`]. A request keeps the version it started on until it is answered.
pub struct CurrentApp(ArcSwap<HttpApp>);

impl AppSource for CurrentApp {
    async fn select(
        &self,
        _request: &Request<Incoming>,
    ) -> Result<Selected, Response<ResponseBody>> {
        Ok(Selected {
            app: self.0.load_full(),
            base_path_len: 0,
        })
    }
}

/// Loads a new version of a standalone server's app on the same runtime (so its compiled
/// code, key-value stores and queues carry over) and puts it in place of the old one, with
/// the same metrics. `skiff up --watch` reloads so after each rebuild.
#[derive(Clone)]
pub struct Reloader {
    runtime: Arc<Runtime>,
    current: Arc<CurrentApp>,
    queues: Option<skiff_runtime::QueueSpace>,
    metrics: Option<(MetricsScope, Arc<HttpMetrics>)>,
}

impl Reloader {
    /// Loads `app` and serves it from now on; the old version finishes the requests it has.
    /// On an error the old version stays.
    pub async fn reload(&self, app: App) -> Result<Arc<HttpApp>, StartError> {
        let mut options = LoadOptions::default();
        options.queues = self.queues.clone();
        options.metrics = self.metrics.as_ref().map(|(scope, _)| scope.clone());
        let loaded = load_app(&self.runtime, app, options, true).await?;
        let mut http_app = HttpApp::new(loaded);
        if let Some((_, metrics)) = &self.metrics {
            http_app = http_app.with_metrics(metrics, "");
        }
        let http_app = Arc::new(http_app);
        self.current.0.store(http_app.clone());
        Ok(http_app)
    }
}

impl Standalone {
    /// Makes a runtime for `app` alone (metering fuel only if the app asks for it), loads the
    /// app and binds the listeners.
    pub async fn start(&self, config: RuntimeConfig, app: App) -> Result<Started, StartError> {
        self.start_with_metrics(config, app, |_| {}).await
    }

    /// [`Standalone::start`], letting `register` add families of its own (another trigger's)
    /// to the metrics served at `metrics_listen`.
    pub async fn start_with_metrics(
        &self,
        mut config: RuntimeConfig,
        app: App,
        register: impl FnOnce(&mut prometheus_client::registry::Registry),
    ) -> Result<Started, StartError> {
        config.fuel = app.uses_fuel();
        let runtime = Runtime::new(config).map_err(|e| StartError::Engine(format!("{e:#}")))?;
        // The runtime's metrics count from the first instance: they are made before the app
        // loads.
        let mut registry = prometheus_client::registry::Registry::default();
        let mut options = LoadOptions::default();
        options.queues = self.queues.clone();
        if self.metrics_listen.is_some() {
            options.metrics = Some(MetricsScope {
                metrics: RuntimeMetrics::register(&mut registry),
                tenant: "".into(),
            });
        }
        let scope = options.metrics.clone();
        let loaded = load_app(&runtime, app, options, self.from_manifest).await?;
        let app = loaded.app().clone();
        let mut http_app = HttpApp::new(loaded);
        let mut metrics_addr = None;
        let mut reload_metrics = None;
        if let (Some(addr), Some(scope)) = (self.metrics_listen, scope) {
            register(&mut registry);
            let metrics = HttpMetrics::register(&mut registry);
            http_app = http_app.with_metrics(&metrics, "");
            reload_metrics = Some((scope, metrics));
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .map_err(|source| StartError::Listen {
                    addr,
                    metrics: true,
                    source,
                })?;
            metrics_addr = Some(listener.local_addr().map_err(|source| StartError::Listen {
                addr,
                metrics: true,
                source,
            })?);
            tokio::spawn(serve_metrics(listener, Arc::new(registry)));
        }
        let http_app = Arc::new(http_app);
        let current = Arc::new(CurrentApp(ArcSwap::new(http_app.clone())));
        let reloader = Reloader {
            runtime: runtime.clone(),
            current: current.clone(),
            queues: self.queues.clone(),
            metrics: reload_metrics,
        };
        let server = Server::bind_shared(self.listen, current)
            .await
            .map_err(|source| StartError::Listen {
                addr: self.listen,
                metrics: false,
                source,
            })?
            .with_limits(self.limits.clone())
            .with_shutdown_grace(self.shutdown_grace)
            .with_guests_of(runtime.clone());
        Ok(Started {
            server,
            runtime,
            app,
            http_app,
            metrics_addr,
            reloader,
        })
    }
}

/// Loads `app` on `runtime` on a blocking thread (compiling takes long), its errors told at
/// the manifest's fields when `from_manifest`.
pub async fn load_app(
    runtime: &Arc<Runtime>,
    app: App,
    options: LoadOptions,
    from_manifest: bool,
) -> Result<LoadedApp, StartError> {
    let runtime = runtime.clone();
    let for_errors = app.clone();
    tokio::task::spawn_blocking(move || runtime.load_app_with(app, &options))
        .await
        .map_err(|err| StartError::Interrupted(err.to_string()))?
        .map_err(|err| match err.component {
            Some(index) if from_manifest => {
                let field = err.manifest_field();
                let at = ManifestError::at(&for_errors, index, field, err.to_string(), None);
                StartError::Manifest(Box::new(at))
            }
            _ => StartError::Load(err),
        })
}

impl Started {
    /// The address the app listens on (the real port when port 0 was asked for).
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.server.local_addr()
    }

    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_addr
    }

    /// The app as loaded (its routes, components).
    pub fn app(&self) -> &App {
        &self.app
    }

    /// The app as served, for other triggers (schedules) to start work in.
    pub fn http_app(&self) -> &Arc<HttpApp> {
        &self.http_app
    }

    pub fn runtime(&self) -> &Arc<Runtime> {
        &self.runtime
    }

    /// What puts a new version of the app in place while this one serves.
    pub fn reloader(&self) -> Reloader {
        self.reloader.clone()
    }

    /// At shutdown, also let the work `draining` winds down (queue handlers) finish within
    /// the grace period (see [`Server::with_draining`]).
    pub fn with_draining(mut self, draining: crate::Draining) -> Self {
        self.server = self.server.with_draining(draining);
        self
    }

    /// Serves until `shutdown` completes, then lets requests in flight finish within the
    /// shutdown grace and stops every guest still running.
    pub async fn serve(self, shutdown: impl Future<Output = ()>) -> std::io::Result<()> {
        self.server.serve(shutdown).await
    }
}

/// Completes at SIGINT or SIGTERM (what Ctrl-C, systemd, the kubelet and `ctr task kill`
/// send), for [`Started::serve`]. As process 1 of a container the kernel delivers these only
/// to a handler, so without one a container would run on until SIGKILL.
// Installing a handler fails only outside a runtime with signals enabled.
#[allow(clippy::expect_used)]
pub async fn termination_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut terminate =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                .expect("installing the SIGTERM handler");
        tokio::select! {
            _ = interrupt => {}
            _ = terminate.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = interrupt.await;
    tracing::info!("shutdown requested (SIGINT or SIGTERM)");
}
