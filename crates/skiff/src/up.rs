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
use crate::watch::Watch;
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
    /// Run the components' builds first; then, while serving, rebuild and reload the app
    /// whenever a file their `watch` patterns name changes (or the manifest, or the source of
    /// a component without a build). Requests in flight finish on the version they started on.
    #[arg(long)]
    watch: bool,
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
    up_app(config, app, &args.listen, false, None).await
}

pub async fn up(mut config: RuntimeConfig, args: UpArgs, cache: &Cache) -> Result<ExitCode> {
    if let Some(file) = &args.runtime_config {
        config.runtime_config = skiff_manifest::load_runtime_config(file)?;
    }
    if args.watch {
        let path = skiff_manifest::manifest_in(&args.manifest);
        if !path.is_file() {
            anyhow::bail!(
                "--watch serves an app from this machine's files, and `{}` is not a manifest \
                 (a registry reference cannot be watched)",
                path.display()
            );
        }
        let mut watch = Watch::start(&path)?;
        let app = watch.first_app().await;
        return up_app(config, app, &args.listen, true, Some(watch)).await;
    }
    match oci::pulled_if_reference(&args.manifest, &args.registry, cache).await? {
        None => {
            let path = skiff_manifest::manifest_in(&args.manifest);
            let app = skiff_manifest::load(&path)?;
            up_app(config, app, &args.listen, true, None).await
        }
        Some(pulled) => match &pulled.local {
            Local::App { manifest } => {
                let mut app = skiff_manifest::load_in_bundle(manifest)?;
                // Kept until the app stops: the writable copies live in it.
                let _scratch = oci::private_writable_mounts(&mut app)?;
                up_app(config, app, &args.listen, true, None).await
            }
            Local::Component { wasm } => {
                let app = single::app_for_component(
                    wasm,
                    skiff_runtime::WasiGrant::default(),
                    &single::LimitArgs::default(),
                )?;
                up_app(config, app, &args.listen, false, None).await
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
/// `from_manifest` says whether load errors can point at a manifest. With `watch`, a change
/// to the app's files rebuilds and reloads it while it serves, and an app that fails to load
/// at the start is waited on until a change fixes it.
async fn up_app(
    config: RuntimeConfig,
    mut app: App,
    listen: &ListenArgs,
    from_manifest: bool,
    mut watch: Option<Watch>,
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
    let (started, schedule_metrics, queue_metrics) = loop {
        let (mut schedule_metrics, mut queue_metrics) = (None, None);
        let outcome = standalone
            .start_with_metrics(config.clone(), app, |registry| {
                schedule_metrics = Some(skiff_triggers::ScheduleMetrics::register(registry));
                queue_metrics = Some(skiff_triggers::QueueMetrics::register(registry));
            })
            .await;
        match (outcome, watch.as_mut()) {
            (Ok(started), _) => break (started, schedule_metrics, queue_metrics),
            (
                Err(err @ (skiff_http::StartError::Manifest(_) | skiff_http::StartError::Load(_))),
                Some(watch),
            ) => {
                crate::report(&start_error(err));
                eprintln!("Waiting for a change to try again...");
                app = watch.next_app().await;
            }
            (Err(err), _) => return Err(start_error(err)),
        }
    };
    if let Some(addr) = started.metrics_addr() {
        println!("Metrics http://{addr}/metrics");
    }
    let addr = started.local_addr()?;
    // Scripts wait for this line: it is printed only once the socket listens.
    println!("Serving http://{addr}");
    let base = format!("http://{addr}");
    let app = started.app().clone();
    print!("{}", describe_app(&base, &app));
    // The app's schedules run from here on, each run through the same dispatch as a request;
    // dropping the scheduler stops them (runs already going finish within the shutdown grace).
    // A watched app may gain schedules when it reloads.
    let scheduler = (!app.schedules.is_empty() || watch.is_some()).then(|| {
        let scheduler = skiff_triggers::Scheduler::new(
            "local",
            Arc::new(skiff_triggers::LocalLeases::new()),
            schedule_metrics,
        );
        if !app.schedules.is_empty() {
            scheduler.set_app("", started.http_app().clone());
        }
        scheduler
    });
    // Its queue consumers read from here on; dropping them stops the reading (handlers already
    // running finish within the shutdown grace, and what they leave is delivered next time).
    // A watched app may gain consumers when it reloads (of the queues it had at the start).
    let consume = !app.consumers.is_empty() || watch.is_some();
    let consumers = queues.clone().filter(|_| consume).map(|space| {
        let consumers = skiff_triggers::Consumers::new("local", queue_metrics);
        consumers.set_app("", started.http_app().clone(), &space);
        consumers
    });
    let reloading = watch.map(|watch| {
        tokio::spawn(reload_on_change(
            watch,
            started.reloader(),
            Triggers {
                base,
                name: app.name.clone(),
                scheduler: scheduler.clone(),
                consumers: consumers.clone().zip(queues),
            },
        ))
    });
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
    if let Some(reloading) = reloading {
        reloading.abort();
    }
    drop(scheduler);
    tracing::info!("stopped");
    Ok(ExitCode::SUCCESS)
}

/// The app's routes, schedules and queue consumers, as `skiff up` lists them.
fn describe_app(base: &str, app: &App) -> String {
    use std::fmt::Write;
    let mut out = String::from("Available routes:\n");
    for route in &app.routes {
        let url = cmd::route_url(base, &route.as_written);
        let _ = writeln!(out, "  {}: {url}", app.target_name(route));
    }
    if !app.schedules.is_empty() {
        out.push_str("Schedules:\n");
    }
    for schedule in &app.schedules {
        let component = &app.components[schedule.component];
        let what = match &schedule.path {
            Some(path) => format!("POST {path}"),
            None => format!("run {:?}", schedule.args),
        };
        let _ = writeln!(
            out,
            "  {}: {} ({}) {what}",
            component.id, schedule.cron, schedule.timezone
        );
    }
    if !app.consumers.is_empty() {
        out.push_str("Queue consumers:\n");
    }
    for consume in &app.consumers {
        let component = &app.components[consume.component];
        let how = match &consume.path {
            Some(path) => format!("POST {path}"),
            None => "wasi:messaging/incoming-handler".to_string(),
        };
        let _ = writeln!(
            out,
            "  {}: queue {} ({how}, {} at once)",
            component.id, consume.queue, consume.concurrency
        );
    }
    out
}

/// The triggers besides HTTP that a reloaded app is handed to.
struct Triggers {
    base: String,
    /// The app's name as they know it.
    name: String,
    scheduler: Option<Arc<skiff_triggers::Scheduler>>,
    consumers: Option<(Arc<skiff_triggers::Consumers>, skiff_runtime::QueueSpace)>,
}

/// `skiff up --watch`'s loop: each change that builds and loads becomes the app served.
async fn reload_on_change(
    mut watch: Watch,
    reloader: skiff_http::Reloader,
    mut triggers: Triggers,
) {
    loop {
        let app = watch.next_app().await;
        let started = std::time::Instant::now();
        let uses_queues =
            !app.consumers.is_empty() || app.components.iter().any(|c| !c.publish.is_empty());
        if uses_queues && triggers.consumers.is_none() {
            eprintln!(
                "error: the app now uses queues, which `skiff up` sets up when it starts: stop \
                 it and start it again"
            );
            continue;
        }
        let http_app = match reloader.reload(app).await {
            Ok(http_app) => http_app,
            Err(err) => {
                crate::report(&start_error(err));
                continue;
            }
        };
        let app = http_app.loaded().app().clone();
        // On stderr, with the builds' output: stdout has said where the app listens, and may be
        // a pipe that a script stopped reading.
        eprint!(
            "Reloaded app `{}` in {:.1?}\n{}",
            app.name,
            started.elapsed(),
            describe_app(&triggers.base, &app)
        );
        if let Some(scheduler) = &triggers.scheduler {
            if app.name != triggers.name || app.schedules.is_empty() {
                scheduler.remove_app("", &triggers.name, false).await;
            }
            if !app.schedules.is_empty() {
                scheduler.set_app("", http_app.clone());
            }
        }
        if let Some((consumers, space)) = &triggers.consumers {
            if app.name != triggers.name {
                consumers.remove_app("", &triggers.name, false);
            }
            consumers.set_app("", http_app.clone(), space);
        }
        triggers.name = app.name.clone();
    }
}
