//! The multi-tenant host behind `skiff server`: one process serves many apps of many tenants
//! on one data-plane listener (apps chosen by the `Host` header), and a management API on a
//! second listener lets tenants deploy, update, roll back and delete their apps while it runs.
//!
//! A deploy goes through the same spine as `skiff up`: the bundle is unpacked, its manifest
//! validated, its components compiled (into the shared code cache) and linked, and only then
//! is the new version swapped in, atomically: requests already running finish on the version
//! they started on. Apps, versions and tenants (with hashed tokens) persist in the data folder,
//! so a restarted host serves them again from the cache without recompiling.

// The one `unsafe` is `malloc_trim` (see `platform::serving`), allowed there alone.

pub use skiff_api as api;
mod api_tls;
mod appfiles;
pub mod cluster;
/// Bundles are their own crate so that they can be fuzzed without the whole server.
pub use skiff_bundle as bundle;
mod logs;
mod management;
mod persist;
mod platform;
mod records;
mod refusal;
mod routing;
pub mod schedule_lease;
mod tenants;
mod usage;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use skiff_http::HttpLimits;
use skiff_runtime::Runtime;
use tokio::net::TcpListener;

pub use api_tls::{ApiTlsError, ApiTlsFiles};
pub use management::{AdminAuth, AdminTokenError, MIN_ADMIN_TOKEN};
pub use platform::{Platform, PlatformConfig, RegistryPolicy};
pub use refusal::Refusal;

/// How long requests and API calls in flight may take to finish once shutdown starts, unless
/// the options say otherwise.
pub const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// Everything `skiff server` is started with. [`ServerOptions::new`] gives the defaults of
/// `skiff server`; set what you need.
#[non_exhaustive]
pub struct ServerOptions {
    /// The data plane: apps' traffic.
    pub listen: SocketAddr,
    /// The management API.
    pub api_listen: SocketAddr,
    /// Serve the management API over HTTPS only, with this certificate and key.
    pub api_tls: Option<ApiTlsFiles>,
    pub http_limits: HttpLimits,
    /// How long requests and API calls in flight may take to finish once shutdown starts.
    pub shutdown_grace: Duration,
    /// Also choose apps by the first path segment (`/NAME/...`) when the host names none.
    pub path_routing: bool,
    pub admin: AdminAuth,
    pub platform: PlatformConfig,
    /// In a cluster: the shared state and this host's name in it.
    pub cluster: Option<cluster::ClusterOptions>,
    /// Once shutdown starts, how long the host goes on serving while `/readyz` says it is not
    /// ready, so that load balancers stop sending it requests before it stops taking them.
    pub drain_delay: Duration,
    /// Who runs each due time of a schedule: `None` for this host alone (in-process leases);
    /// a cluster's hosts share leases in Redis (`skiff_cluster::RedisLeases`), so each due
    /// time runs on one of them.
    pub schedule_leases: Option<Arc<dyn schedule_lease::RunLeases>>,
}

impl ServerOptions {
    /// Listens on 127.0.0.1:3000 (apps) and 127.0.0.1:3001 (management), with the default
    /// HTTP limits and shutdown grace, and no path routing.
    pub fn new(admin: AdminAuth, platform: PlatformConfig) -> Self {
        ServerOptions {
            listen: SocketAddr::from(([127, 0, 0, 1], 3000)),
            api_listen: SocketAddr::from(([127, 0, 0, 1], 3001)),
            api_tls: None,
            http_limits: HttpLimits::default(),
            shutdown_grace: DEFAULT_SHUTDOWN_GRACE,
            path_routing: false,
            admin,
            platform,
            cluster: None,
            drain_delay: Duration::ZERO,
            schedule_leases: None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot open the data folder: {0}")]
    Data(#[from] platform::OpenError),
    #[error("cannot open the data folder: {0}")]
    DataTask(#[source] tokio::task::JoinError),
    #[error("cannot listen on {addr} ({what}): {source}")]
    Listen {
        what: &'static str,
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error(
        "--insecure-dev serves without authentication, so it listens on loopback only, but \
         the {what} would listen on {addr}; use a 127.0.0.1 address, or set an admin token \
         (SKIFF_ADMIN_TOKEN) instead of --insecure-dev"
    )]
    InsecureDevOffLoopback {
        what: &'static str,
        addr: SocketAddr,
    },
    #[error(transparent)]
    ApiTls(#[from] ApiTlsError),
}

/// A server whose listeners are bound, ready to serve.
pub struct BoundServer {
    data: skiff_http::Server<routing::HostRouter>,
    api: TcpListener,
    /// Set: the management API speaks HTTPS only.
    api_tls: Option<api_tls::ApiTls>,
    platform: Arc<Platform>,
    admin: AdminAuth,
    shutdown_grace: Duration,
    drain_delay: Duration,
    schedule_leases: Arc<dyn schedule_lease::RunLeases>,
}

/// Opens the data folder and binds both listeners.
pub async fn bind(
    runtime: Arc<Runtime>,
    options: ServerOptions,
) -> Result<BoundServer, StartError> {
    if matches!(options.admin, AdminAuth::InsecureDev) {
        for (what, addr) in [
            ("data plane (--listen)", options.listen),
            ("management API (--api-listen)", options.api_listen),
        ] {
            if !addr.ip().is_loopback() {
                return Err(StartError::InsecureDevOffLoopback { what, addr });
            }
        }
    }
    // The certificate is checked before anything is opened: a mistake there is the quickest
    // to report and to fix.
    let api_tls = options.api_tls.map(api_tls::ApiTls::load).transpose()?;
    let platform_config = options.platform;
    let guests = runtime.clone();
    let cluster = options.cluster;
    let platform =
        tokio::task::spawn_blocking(move || Platform::open(runtime, platform_config, cluster))
            .await
            .map_err(StartError::DataTask)??;
    let listen_error = |what, addr| move |source| StartError::Listen { what, addr, source };
    let data = skiff_http::Server::bind_source(
        options.listen,
        routing::HostRouter::new(platform.clone(), options.path_routing),
    )
    .await
    .map_err(listen_error("data plane", options.listen))?
    .with_limits(options.http_limits)
    .with_shutdown_grace(options.shutdown_grace)
    .with_guests_of(guests)
    .with_draining({
        // Queue consumers stop reading with the data plane; their handlers get the same grace
        // as requests.
        let (platform, grace) = (platform.clone(), options.shutdown_grace);
        Box::new(move || Box::pin(async move { platform.stop_triggers(grace).await }))
    });
    let api = TcpListener::bind(options.api_listen)
        .await
        .map_err(listen_error("management API", options.api_listen))?;
    if let Ok(addr) = data.local_addr() {
        platform.set_public_port(addr.port());
    }
    Ok(BoundServer {
        data,
        api,
        api_tls,
        platform,
        admin: options.admin,
        shutdown_grace: options.shutdown_grace,
        drain_delay: options.drain_delay,
        schedule_leases: options
            .schedule_leases
            .unwrap_or_else(|| Arc::new(schedule_lease::LocalLeases::new())),
    })
}

impl BoundServer {
    pub fn data_addr(&self) -> std::io::Result<SocketAddr> {
        self.data.local_addr()
    }

    pub fn api_addr(&self) -> std::io::Result<SocketAddr> {
        self.api.local_addr()
    }

    /// The management API's URL: `https://ADDR` with TLS, else `http://ADDR`.
    pub fn api_url(&self) -> std::io::Result<String> {
        let scheme = if self.api_tls.is_some() {
            "https"
        } else {
            "http"
        };
        Ok(format!("{scheme}://{}", self.api_addr()?))
    }

    pub fn platform(&self) -> &Arc<Platform> {
        &self.platform
    }

    /// Serves both listeners until `shutdown` resolves; then both stop accepting, and
    /// requests in flight get the grace period to finish.
    pub async fn serve(self, shutdown: impl Future<Output = ()>) -> std::io::Result<()> {
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let until_stopped = |mut stopped: tokio::sync::watch::Receiver<bool>| async move {
            let _ = stopped.wait_for(|stop| *stop).await;
        };
        let unloader = tokio::spawn(unload_idle_apps(self.platform.clone()));
        let disk_watch = tokio::spawn(check_disk_quotas(self.platform.clone()));
        let usage_writer = tokio::spawn(write_usage(self.platform.clone()));
        let replica = tokio::spawn(self.platform.clone().run_replica());
        let log_sharing = tokio::spawn(self.platform.clone().share_logs());
        let triggers = tokio::spawn(
            self.platform
                .clone()
                .run_triggers(self.schedule_leases.clone()),
        );
        let router = management::router(self.platform.clone(), self.admin, stopped.clone());
        let api_stopped = stopped.clone();
        let grace = self.shutdown_grace;
        let api = async move {
            let serve = match self.api_tls {
                None => futures_util::future::Either::Left(
                    axum::serve(self.api, router)
                        .with_graceful_shutdown(until_stopped(api_stopped.clone()))
                        .into_future(),
                ),
                Some(tls) => futures_util::future::Either::Right(api_tls::serve(
                    self.api,
                    tls,
                    router,
                    until_stopped(api_stopped.clone()),
                )),
            };
            // Log followers end when shutdown starts; anything else still open past the grace
            // period is cut, so that shutdown never waits forever.
            let deadline = async {
                until_stopped(api_stopped).await;
                tokio::time::sleep(grace).await;
            };
            tokio::select! {
                result = serve => result,
                () = deadline => Ok(()),
            }
        };
        let data = self.data.serve(until_stopped(stopped));
        let platform = self.platform.clone();
        let drain_delay = self.drain_delay;
        let signal = async move {
            shutdown.await;
            platform.set_not_ready();
            if !drain_delay.is_zero() {
                tracing::info!(
                    "shutting down: not ready, serving {drain_delay:?} more while load \
                     balancers take this host out"
                );
                tokio::time::sleep(drain_delay).await;
            }
            let _ = stop.send(true);
        };
        let (data, api, ()) = tokio::join!(data, api, signal);
        unloader.abort();
        disk_watch.abort();
        usage_writer.abort();
        replica.abort();
        log_sharing.abort();
        // Future due times and queue reads stopped with the data plane, whose grace period the
        // runs and handlers going on had too, like requests (a message whose handler was cut
        // off is delivered again, here after a restart or on another host).
        triggers.abort();
        self.platform.leave_cluster().await;
        // Requests are over (or cut off): every minute of usage still in memory is written,
        // so that a restart loses none of it.
        let platform = self.platform.clone();
        if let Ok(written) = tokio::task::spawn_blocking(move || platform.usage().flush(true)).await
        {
            self.platform.share_usage(written).await;
        }
        data.and(api)
    }
}

/// Writes the minutes of usage that have ended to the data folder now and then. A cluster
/// host writes out (and shares) the minute still running too, so that a report through any
/// host lags behind by one period at most, not by a minute: the lines of one minute are
/// summed.
async fn write_usage(platform: Arc<Platform>) {
    let period = platform
        .config()
        .usage_flush
        .max(Duration::from_millis(100));
    let everything = platform.cluster().is_some();
    loop {
        tokio::time::sleep(period).await;
        let flushing = platform.clone();
        if let Ok(written) =
            tokio::task::spawn_blocking(move || flushing.usage().flush(everything)).await
        {
            platform.share_usage(written).await;
        }
    }
}

/// Measures tenants' disk use against their quotas now and then.
async fn check_disk_quotas(platform: Arc<Platform>) {
    let period = platform.config().disk_check.max(Duration::from_millis(100));
    loop {
        tokio::time::sleep(period).await;
        platform.check_disk_quotas().await;
    }
}

/// Drops idle apps from memory now and then.
async fn unload_idle_apps(platform: Arc<Platform>) {
    let Some(idle) = platform.config().idle_unload else {
        return;
    };
    let period = (idle / 4).clamp(Duration::from_millis(100), Duration::from_secs(30));
    loop {
        tokio::time::sleep(period).await;
        let unloaded = platform.unload_idle();
        if unloaded > 0 {
            tracing::debug!("unloaded {unloaded} idle app(s)");
        }
    }
}
