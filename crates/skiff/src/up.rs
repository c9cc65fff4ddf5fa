//! `skiff serve FILE.wasm` and `skiff up [MANIFEST]`: one app, from one component or from a
//! manifest (or either from a registry), served on one listener until SIGINT or SIGTERM.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Args;
use skiff_manifest::{App, StoreSpec};
use skiff_oci::{Cache, Local};
use skiff_runtime::{Runtime, RuntimeConfig};
use skiff_store::QueueBackend;

use crate::run::GrantArgs;
use crate::{cmd, oci, single};

const DEFAULT_LISTEN: &str = "127.0.0.1:3000";

/// Limits on what HTTP clients may send, checked before any guest runs.
#[derive(Args)]
pub struct HttpArgs {
    /// Largest request body, e.g. `10MiB`; larger gets 413.
    #[arg(long, value_name = "SIZE", default_value = "128MiB", value_parser = skiff_manifest::parse_memory)]
    max_body_size: u64,
    /// Most header fields in one request; more gets 431.
    #[arg(long, value_name = "N", default_value_t = 100)]
    max_headers: usize,
    /// Longest request target (path and query), e.g. `16KiB`; longer gets 414.
    #[arg(long, value_name = "SIZE", default_value = "16KiB", value_parser = skiff_manifest::parse_memory)]
    max_uri_length: u64,
    /// Time a client has to send its request head; a slower one is disconnected. Also how
    /// long a connection may go without starting a request.
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = single::parse_timeout)]
    header_read_timeout: Duration,
    /// Longest wait for the next piece of a request body the guest is reading; past it the
    /// guest's read fails, so a stalled upload cannot hold an instance.
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = single::parse_timeout)]
    body_read_timeout: Duration,
    /// Slowest average rate, per second, a request body may arrive at once the first
    /// --body-read-timeout has passed, e.g. `1KiB`; 0 turns the check off.
    #[arg(long, value_name = "SIZE", default_value = "1KiB", value_parser = parse_rate)]
    body_min_rate: u64,
    /// How long requests in flight may take to finish once SIGINT or SIGTERM arrives; then
    /// every guest still running is stopped and skiff exits.
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = single::parse_timeout)]
    shutdown_grace: Duration,
}

/// A size per second; unlike other sizes, zero is allowed (it means no minimum).
fn parse_rate(text: &str) -> Result<u64, String> {
    match text.trim() {
        "0" => Ok(0),
        text => skiff_manifest::parse_memory(text).map_err(|e| e.to_string()),
    }
}

impl HttpArgs {
    pub fn limits(&self) -> skiff_http::HttpLimits {
        let mut limits = skiff_http::HttpLimits::default();
        limits.max_body_bytes = self.max_body_size;
        limits.max_headers = self.max_headers;
        limits.max_uri_bytes = usize::try_from(self.max_uri_length).unwrap_or(usize::MAX);
        limits.header_read_timeout = self.header_read_timeout;
        limits.body_read_timeout = self.body_read_timeout;
        limits.body_min_rate = self.body_min_rate;
        limits
    }

    pub fn shutdown_grace(&self) -> Duration {
        self.shutdown_grace
    }
}

/// Where `serve` and `up` listen, and the limits on their clients.
#[derive(Args)]
pub struct ListenArgs {
    /// Address to listen on; port 0 picks a free port.
    #[arg(long, default_value = DEFAULT_LISTEN)]
    listen: SocketAddr,
    /// Serve Prometheus metrics at http://ADDR/metrics (off unless given).
    #[arg(long, value_name = "ADDR")]
    metrics_listen: Option<SocketAddr>,
    #[command(flatten)]
    http: HttpArgs,
}

#[derive(Args)]
pub struct ServeArgs {
    #[command(flatten)]
    listen: ListenArgs,
    #[command(flatten)]
    grants: GrantArgs,
    #[command(flatten)]
    limits: single::LimitArgs,
    #[command(flatten)]
    registry: oci::RegistryArgs,
    /// The wasi:http/proxy component to serve, or a registry reference to one
    /// (HOST/REPO[:TAG]).
    file: PathBuf,
}

#[derive(Args)]
pub struct UpArgs {
    #[command(flatten)]
    listen: ListenArgs,
    /// The operator's runtime config: where key-value store labels live, variable values.
    #[arg(long, value_name = "FILE")]
    runtime_config: Option<PathBuf>,
    #[command(flatten)]
    registry: oci::RegistryArgs,
    /// The app manifest, or the folder holding its skiff.toml, or a registry reference to an
    /// app or a component (HOST/REPO[:TAG], pulled once and then run from the cache).
    #[arg(default_value = "skiff.toml")]
    manifest: PathBuf,
}

pub fn new_runtime(config: RuntimeConfig) -> Result<Arc<Runtime>> {
    Runtime::new(config).map_err(|e| anyhow::anyhow!("{e:#}"))
}

pub async fn serve(config: RuntimeConfig, args: ServeArgs, cache: &Cache) -> Result<ExitCode> {
    let grant = args.grants.to_grant()?;
    let file = match oci::pulled_if_reference(&args.file, &args.registry, cache).await? {
        Some(pulled) => oci::component_of(&pulled, &args.file, "serve it with `skiff up`")?,
        None => args.file,
    };
    let app = single::app_for_component(&file, grant, &args.limits)?;
    up_app(config, app, &args.listen, false).await
}

pub async fn up(mut config: RuntimeConfig, args: UpArgs, cache: &Cache) -> Result<ExitCode> {
    if let Some(file) = &args.runtime_config {
        config.runtime_config = skiff_manifest::load_runtime_config(file)?;
    }
    match oci::pulled_if_reference(&args.manifest, &args.registry, cache).await? {
        None => {
            let path = skiff_manifest::manifest_in(&args.manifest);
            let app = skiff_manifest::load(&path)?;
            up_app(config, app, &args.listen, true).await
        }
        Some(pulled) => match &pulled.local {
            Local::App { manifest } => {
                let mut app = skiff_manifest::load(manifest)?;
                // Kept until the app stops: the writable copies live in it.
                let _scratch = oci::private_writable_mounts(&mut app)?;
                up_app(config, app, &args.listen, true).await
            }
            Local::Component { wasm } => {
                let app = single::app_for_component(
                    wasm,
                    skiff_runtime::WasiGrant::default(),
                    &single::LimitArgs::default(),
                )?;
                up_app(config, app, &args.listen, false).await
            }
        },
    }
}

/// The queues of an app that uses any: where the operator's runtime config says (`[queues]`),
/// or else an embedded database of its own in the data folder (`queues/APP.redb`), as its
/// key-value stores are, so its messages outlive a restart.
fn queue_space(config: &RuntimeConfig, app: &App) -> Result<Option<skiff_runtime::QueueSpace>> {
    let uses_queues =
        !app.consumers.is_empty() || app.components.iter().any(|c| !c.publish.is_empty());
    if !uses_queues {
        return Ok(None);
    }
    let spec = config.runtime_config.queues.as_ref();
    let default_path = || {
        config
            .data_dir
            .as_ref()
            .map(|dir| dir.join("queues").join(format!("{}.redb", app.name)))
            .context(
                "no data folder for the app's queues: set SKIFF_DATA_DIR, or give a `[queues]` \
                 table in the runtime config",
            )
    };
    let backend = match spec.map(|s| &s.backend) {
        Some(StoreSpec::Redis { url }) => QueueBackend::Redis(url.clone()),
        Some(StoreSpec::Embedded { path: Some(path) }) => QueueBackend::Embedded(path.clone()),
        Some(StoreSpec::Embedded { path: None }) | None => QueueBackend::Embedded(default_path()?),
    };
    let queues = skiff_store::open_queues(
        &backend,
        spec.and_then(|s| s.max_depth),
        spec.and_then(|s| s.max_bytes),
    )?;
    Ok(Some(skiff_runtime::QueueSpace {
        queues,
        owner: app.name.clone(),
    }))
}

/// An error starting an app, as `fail` prints it: a load error of a component at its
/// manifest field, as a manifest error.
pub fn start_error(err: skiff_http::StartError) -> anyhow::Error {
    match err {
        skiff_http::StartError::Manifest(err) => anyhow::Error::from(*err),
        skiff_http::StartError::Listen {
            addr,
            metrics: true,
            source,
        } => anyhow::Error::from(source)
            .context(format!("cannot listen on {addr} (--metrics-listen)")),
        other => anyhow::Error::from(other),
    }
}

/// Loads and serves `app` on a runtime of its own until SIGINT or SIGTERM.
/// `from_manifest` says whether load errors can point at a manifest.
async fn up_app(
    config: RuntimeConfig,
    app: App,
    listen: &ListenArgs,
    from_manifest: bool,
) -> Result<ExitCode> {
    let queues = queue_space(&config, &app)?;
    let standalone = skiff_http::Standalone {
        listen: listen.listen,
        metrics_listen: listen.metrics_listen,
        limits: listen.http.limits(),
        shutdown_grace: listen.http.shutdown_grace(),
        from_manifest,
        queues: queues.clone(),
    };
    let (mut schedule_metrics, mut queue_metrics) = (None, None);
    let started = standalone
        .start_with_metrics(config, app, |registry| {
            schedule_metrics = Some(skiff_triggers::ScheduleMetrics::register(registry));
            queue_metrics = Some(skiff_triggers::QueueMetrics::register(registry));
        })
        .await
        .map_err(start_error)?;
    if let Some(addr) = started.metrics_addr() {
        println!("Metrics http://{addr}/metrics");
    }
    let addr = started.local_addr()?;
    // Scripts wait for this line: it is printed only once the socket listens.
    println!("Serving http://{addr}");
    println!("Available routes:");
    let base = format!("http://{addr}");
    let app = started.app();
    for route in &app.routes {
        println!(
            "  {}: {}",
            app.target_name(route),
            cmd::route_url(&base, &route.as_written)
        );
    }
    // The app's schedules run from here on, each run through the same dispatch as a request;
    // dropping the scheduler stops them (runs already going finish within the shutdown grace).
    let scheduler = (!app.schedules.is_empty()).then(|| {
        let scheduler = skiff_triggers::Scheduler::new(
            "local",
            Arc::new(skiff_triggers::LocalLeases::new()),
            schedule_metrics,
        );
        scheduler.set_app("", started.http_app().clone());
        scheduler
    });
    if !app.schedules.is_empty() {
        println!("Schedules:");
    }
    for schedule in &app.schedules {
        let component = &app.components[schedule.component];
        let what = match &schedule.path {
            Some(path) => format!("POST {path}"),
            None => format!("run {:?}", schedule.args),
        };
        println!(
            "  {}: {} ({}) {what}",
            component.id, schedule.cron, schedule.timezone
        );
    }
    // Its queue consumers read from here on; dropping them stops the reading (handlers already
    // running finish within the shutdown grace, and what they leave is delivered next time).
    let consumers = queues.filter(|_| !app.consumers.is_empty()).map(|space| {
        let consumers = skiff_triggers::Consumers::new("local", queue_metrics);
        consumers.set_app("", started.http_app().clone(), &space);
        consumers
    });
    if !app.consumers.is_empty() {
        println!("Queue consumers:");
    }
    for consume in &app.consumers {
        let component = &app.components[consume.component];
        let how = match &consume.path {
            Some(path) => format!("POST {path}"),
            None => "wasi:messaging/incoming-handler".to_string(),
        };
        println!(
            "  {}: queue {} ({how}, {} at once)",
            component.id, consume.queue, consume.concurrency
        );
    }
    // At SIGINT or SIGTERM the consumers stop reading with the listener, and their handlers
    // get the same grace period as requests to finish and acknowledge their messages.
    let started = match consumers {
        Some(consumers) => {
            let grace = listen.http.shutdown_grace();
            started.with_draining(Box::new(move || {
                Box::pin(async move {
                    consumers.stop(grace).await;
                })
            }))
        }
        None => started,
    };
    started.serve(skiff_http::termination_signal()).await?;
    drop(scheduler);
    tracing::info!("stopped");
    Ok(ExitCode::SUCCESS)
}
