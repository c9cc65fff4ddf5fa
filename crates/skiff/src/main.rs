//! The `skiff` command line: parses arguments, wires the manifest, runtime and HTTP crates
//! together, and prints. No logic of its own beyond turning errors into messages for people.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::{Args, Parser, Subcommand, ValueEnum};
use skiff_manifest::{App, ManifestError};
use skiff_runtime::{CommandOptions, CommandOutcome, TRAP_EXIT_CODE};
use skiff_runtime::{DirGrant, WasiGrant};
use skiff_runtime::{Runtime, RuntimeConfig};

mod cmd;
mod server;
mod single;
mod telemetry;

const DEFAULT_LISTEN: &str = "127.0.0.1:3000";

/// Run WebAssembly components as sandboxed serverless workloads.
#[derive(Parser)]
#[command(name = "skiff", version, about, propagate_version = true)]
struct Cli {
    #[command(flatten)]
    global: GlobalOptions,
    #[command(subcommand)]
    command: Command,
}

#[derive(Args)]
struct GlobalOptions {
    /// Format of log lines on stderr.
    #[arg(long, value_enum, default_value_t = LogFormat::Text, global = true)]
    log_format: LogFormat,
    /// Log filter, e.g. `debug` or `info,skiff_runtime=debug` (RUST_LOG overrides it).
    #[arg(long, default_value = "info", global = true)]
    log_level: String,
    /// Folder of the compiled-code cache [default: $SKIFF_CACHE_DIR, else ~/.cache/skiff].
    #[arg(long, global = true, value_name = "DIR")]
    cache_dir: Option<PathBuf>,
    /// Compile every time; keep nothing on disk.
    #[arg(long, global = true)]
    no_cache: bool,
    /// Folder for state: the embedded key-value databases [default: $SKIFF_DATA_DIR, else
    /// ~/.local/share/skiff].
    #[arg(long, global = true, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// Instances that may run at once on this host; requests past it get 503 at once.
    #[arg(long, global = true, default_value_t = 1000, value_name = "N")]
    max_instances: u32,
    /// Deadline of a request to a component that sets no `limits.timeout`.
    #[arg(long, global = true, default_value = "30s", value_name = "DURATION", value_parser = single::parse_timeout)]
    default_timeout: Duration,
    /// How long an instance kept for reuse (`requests_per_instance`) waits for its next request
    /// before it is dropped with its memory.
    #[arg(long, global = true, default_value = "10s", value_name = "DURATION", value_parser = single::parse_timeout)]
    reuse_idle_timeout: Duration,
    /// Memory cap of an instance of a component that sets no `limits.memory`.
    #[arg(long, global = true, default_value = "128MiB", value_name = "SIZE", value_parser = skiff_manifest::parse_memory)]
    default_memory: u64,
    /// Export every request's trace spans over OTLP/HTTP to this collector, e.g.
    /// http://127.0.0.1:4318 (`/v1/traces` is added). Off when unset.
    #[arg(
        long,
        global = true,
        env = "OTEL_EXPORTER_OTLP_ENDPOINT",
        value_name = "URL"
    )]
    otlp_endpoint: Option<String>,
    /// Threads that serve requests [default: the CPUs this process may use]. With 1, one
    /// thread does all the work, without a work-stealing scheduler.
    #[arg(long, global = true, env = "SKIFF_THREADS", value_name = "N", value_parser = clap::value_parser!(u16).range(1..))]
    threads: Option<u16>,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Run a WASI command (a wasi:cli/run component or a WASI preview 1 module) to completion.
    Run(RunArgs),
    /// Serve one wasi:http/proxy component on every path.
    Serve(ServeArgs),
    /// Serve an app described by a skiff.toml manifest.
    Up(UpArgs),
    /// Run a multi-tenant host: apps deployed over its management API, served by host name.
    Server(server::ServerArgs),
    /// Deploy the app in a folder to a skiff server, or update it there.
    Deploy(cmd::deploy::DeployArgs),
    /// List, inspect, roll back or delete apps on a skiff server.
    #[command(subcommand)]
    Apps(cmd::apps::AppsCommand),
    /// Create, list, change and delete the tenants of a skiff server, and rotate or revoke
    /// their tokens (needs the admin token; a tenant may rotate or revoke its own).
    #[command(subcommand)]
    Tenants(cmd::tenants::TenantsCommand),
    /// Print the guest logs of an app on a skiff server.
    Logs(cmd::logs::LogsArgs),
    /// Show what apps used (requests, CPU, memory, bytes) on a skiff server.
    Usage(cmd::usage::UsageArgs),
    /// Check a token with a skiff server, then save it and the server's address for the other
    /// client commands.
    Login(cmd::login::LoginArgs),
    /// Forget the token `skiff login` saved (the server's address stays).
    Logout,
    /// Say whose token this is on a skiff server: the admin's, or which tenant's.
    Whoami(cmd::whoami::WhoamiArgs),
}

#[derive(Args)]
struct RunArgs {
    #[command(flatten)]
    grants: GrantArgs,
    /// Stop the command after this long, e.g. `30s`, `5m`: it ends as a trap does (exit 134).
    /// Default: no limit.
    #[arg(long, value_name = "DURATION", value_parser = single::parse_timeout)]
    timeout: Option<Duration>,
    /// Memory cap of the command (all its linear memories together), e.g. `256MiB`; past it,
    /// growing memory fails (most programs then trap). Default: no cap.
    #[arg(long, value_name = "SIZE", value_parser = skiff_manifest::parse_memory)]
    max_memory: Option<u64>,
    /// The Wasm file to run.
    file: PathBuf,
    /// Arguments for the guest.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    args: Vec<String>,
}

/// What a guest may reach besides stdio; nothing unless granted here.
#[derive(Args)]
pub struct GrantArgs {
    /// Grant a host folder, read-write, at GUEST inside the sandbox (default: the same path).
    #[arg(long = "dir", value_name = "HOST[::GUEST]")]
    pub dirs: Vec<String>,
    /// Set an environment variable for the guest.
    #[arg(long = "env", value_name = "K=V")]
    pub envs: Vec<String>,
    /// Pass one of skiff's own environment variables through to the guest.
    #[arg(long = "env-inherit", value_name = "K")]
    pub env_inherit: Vec<String>,
}

impl GrantArgs {
    fn to_grant(&self) -> Result<WasiGrant> {
        let mut grant = WasiGrant::default();
        for dir in &self.dirs {
            let (host, guest) = dir.split_once("::").unwrap_or((dir.as_str(), dir.as_str()));
            grant.dirs.push(DirGrant {
                host: PathBuf::from(host),
                guest: guest.to_string(),
                writable: true,
            });
        }
        for env in &self.envs {
            let Some((key, value)) = env.split_once('=') else {
                bail!("--env `{env}` is not KEY=VALUE; write e.g. --env GREETING=hello");
            };
            grant.env.push((key.to_string(), value.to_string()));
        }
        for key in &self.env_inherit {
            match std::env::var(key) {
                Ok(value) => grant.env.push((key.clone(), value)),
                Err(_) => {
                    tracing::warn!("--env-inherit {key}: skiff has no such variable; not set")
                }
            }
        }
        Ok(grant)
    }
}

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

#[derive(Args)]
struct ServeArgs {
    /// Address to listen on; port 0 picks a free port.
    #[arg(long, default_value = DEFAULT_LISTEN)]
    listen: SocketAddr,
    /// Serve Prometheus metrics at http://ADDR/metrics (off unless given).
    #[arg(long, value_name = "ADDR")]
    metrics_listen: Option<SocketAddr>,
    #[command(flatten)]
    http: HttpArgs,
    #[command(flatten)]
    grants: GrantArgs,
    #[command(flatten)]
    limits: single::LimitArgs,
    /// The wasi:http/proxy component to serve.
    file: PathBuf,
}

#[derive(Args)]
struct UpArgs {
    /// Address to listen on; port 0 picks a free port.
    #[arg(long, default_value = DEFAULT_LISTEN)]
    listen: SocketAddr,
    /// Serve Prometheus metrics at http://ADDR/metrics (off unless given).
    #[arg(long, value_name = "ADDR")]
    metrics_listen: Option<SocketAddr>,
    #[command(flatten)]
    http: HttpArgs,
    /// The operator's runtime config: where key-value store labels live, variable values.
    #[arg(long, value_name = "FILE")]
    runtime_config: Option<PathBuf>,
    /// The app manifest, or the folder holding its skiff.toml.
    #[arg(default_value = "skiff.toml")]
    manifest: PathBuf,
}

fn main() -> ExitCode {
    // wasmtime's errors capture a backtrace whenever RUST_BACKTRACE asks for one, and some are
    // made and dropped on every request (when a store is torn down): with RUST_BACKTRACE=1 in
    // the environment a request cost 40% more. RUST_LIB_BACKTRACE=0 turns off only those
    // captures; panics still print their backtrace. A user who sets RUST_LIB_BACKTRACE wins.
    if std::env::var_os("RUST_LIB_BACKTRACE").is_none() {
        // SAFETY: nothing else runs yet: no thread has been started that could read the
        // environment concurrently.
        #[allow(unsafe_code)]
        unsafe {
            std::env::set_var("RUST_LIB_BACKTRACE", "0")
        };
    }
    let cli = Cli::parse();
    init_logging(&cli.global);
    // Made before the async runtime: the exporter's client runs its own, on its own thread.
    let serves = matches!(
        cli.command,
        Command::Serve(_) | Command::Up(_) | Command::Server(_)
    );
    let traces = match cli.global.otlp_endpoint.as_deref().filter(|_| serves) {
        Some(endpoint) => match telemetry::export_traces(endpoint) {
            Ok(export) => {
                tracing::info!("exporting traces to {}", export.url());
                Some(export)
            }
            Err(err) => return fail(err),
        },
        None => None,
    };
    let runtime = match async_runtime(cli.global.threads) {
        Ok(runtime) => runtime,
        Err(err) => return fail(anyhow::anyhow!("cannot start the async runtime: {err}")),
    };
    let outcome = runtime.block_on(dispatch(cli));
    // A host that served has stopped its guests by now; the tasks left (connections past the
    // grace period, guests that were waiting on the host) are dropped here. The bound is for
    // blocking work that cannot be cancelled: the process exits whatever is left running.
    runtime.shutdown_timeout(Duration::from_secs(2));
    // The spans of the last requests are still queued: send them before exiting.
    if let Some(traces) = traces {
        traces.shutdown();
    }
    match outcome {
        Ok(code) => code,
        Err(err) => fail(err),
    }
}

/// The async runtime that serves requests: tokio's work-stealing scheduler over one worker per
/// CPU, or, where the process has one CPU (a pinned process, a container limited to one CPU),
/// a single-threaded one. On one CPU, work stealing has nothing to steal and only costs: a
/// hello app at 32 connections answers 41-42k req/s on the single-threaded runtime against
/// 36k on a one-worker work-stealing one (server pinned to one CPU, wrk on the other).
/// Guests yield at every epoch tick either way, so a guest that computes for long shares the
/// thread with its neighbours.
fn async_runtime(threads: Option<u16>) -> std::io::Result<tokio::runtime::Runtime> {
    let threads = match threads {
        Some(threads) => usize::from(threads),
        None => std::thread::available_parallelism().map_or(1, |n| n.get()),
    };
    let mut builder = if threads == 1 {
        tracing::debug!("serving from a single-threaded runtime");
        tokio::runtime::Builder::new_current_thread()
    } else {
        tracing::debug!("serving from a work-stealing runtime of {threads} threads");
        let mut builder = tokio::runtime::Builder::new_multi_thread();
        builder.worker_threads(threads);
        builder
    };
    builder.enable_all().build()
}

fn fail(err: anyhow::Error) -> ExitCode {
    // A manifest error is already a full, formatted report.
    if let Some(manifest) = err.downcast_ref::<ManifestError>() {
        eprintln!("{manifest}");
    } else {
        eprintln!("error: {err:#}");
    }
    ExitCode::FAILURE
}

async fn dispatch(cli: Cli) -> Result<ExitCode> {
    let mut config = RuntimeConfig::default();
    config.max_instances = cli.global.max_instances.max(1);
    config.default_timeout = cli.global.default_timeout;
    config.default_memory = Some(cli.global.default_memory);
    config.reuse_idle_timeout = cli.global.reuse_idle_timeout;
    if let Some(dir) = cli.global.data_dir.clone() {
        config.data_dir = Some(dir);
    }
    if cli.global.no_cache {
        config.cache_dir = None;
    } else if let Some(dir) = cli.global.cache_dir.clone() {
        config.cache_dir = Some(dir);
    }
    let new_runtime = |config| Runtime::new(config).map_err(|e| anyhow::anyhow!("{e:#}"));
    match cli.command {
        Command::Deploy(args) => cmd::deploy::deploy(args).await,
        Command::Apps(command) => cmd::apps::apps(command).await,
        Command::Tenants(command) => cmd::tenants::tenants(command).await,
        Command::Logs(args) => cmd::logs::logs(args).await,
        Command::Usage(args) => cmd::usage::usage(args).await,
        Command::Login(args) => cmd::login::login(args).await,
        Command::Logout => cmd::login::logout(),
        Command::Whoami(args) => cmd::whoami::whoami(args).await,
        Command::Server(args) => {
            let folders = server::Folders {
                data_dir: config.data_dir.clone(),
                cache_dir: cli.global.cache_dir.clone(),
                no_cache: cli.global.no_cache,
            };
            server::run(config, folders, args).await
        }
        Command::Run(args) => run(&new_runtime(config)?, args).await,
        Command::Serve(args) => {
            let grant = args.grants.to_grant()?;
            let app = single::app_for_component(&args.file, grant, &args.limits)?;
            config.fuel = app.uses_fuel();
            let runtime = new_runtime(config)?;
            up(
                &runtime,
                app,
                args.listen,
                &args.http,
                args.metrics_listen,
                false,
            )
            .await
        }
        Command::Up(args) => {
            let path = skiff_manifest::manifest_in(&args.manifest);
            let app = skiff_manifest::load(&path)?;
            if let Some(file) = &args.runtime_config {
                config.runtime_config = skiff_manifest::load_runtime_config(file)?;
            }
            config.fuel = app.uses_fuel();
            let runtime = new_runtime(config)?;
            up(
                &runtime,
                app,
                args.listen,
                &args.http,
                args.metrics_listen,
                true,
            )
            .await
        }
    }
}

async fn run(runtime: &Arc<Runtime>, args: RunArgs) -> Result<ExitCode> {
    let grant = args.grants.to_grant()?;
    let program = args
        .file
        .file_name()
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut options = CommandOptions::default();
    options.args = std::iter::once(program).chain(args.args).collect();
    options.grant = grant;
    options.timeout = args.timeout;
    options.max_memory = args.max_memory;
    // A signal stops the command wherever it is (computing, or waiting on input): dropping
    // its future drops its instance. The handler matters where the signal's default action
    // would not end skiff: as PID 1 of a container, the kernel ignores SIGTERM and SIGINT
    // without one.
    let outcome = tokio::select! {
        outcome = runtime.run_command(&args.file, options) => outcome?,
        signal = termination_signal() => return Ok(ExitCode::from(128 + signal)),
    };
    match outcome {
        CommandOutcome::Exited(code) => Ok(ExitCode::from(code.clamp(0, 255) as u8)),
        CommandOutcome::Trapped(reason) => {
            eprintln!("error: {} trapped: {reason}", args.file.display());
            Ok(ExitCode::from(TRAP_EXIT_CODE as u8))
        }
    }
}

/// Loads and serves `app`. `from_manifest` says whether load errors can point at a manifest.
async fn up(
    runtime: &Arc<Runtime>,
    app: App,
    listen: SocketAddr,
    http: &HttpArgs,
    metrics_listen: Option<SocketAddr>,
    from_manifest: bool,
) -> Result<ExitCode> {
    // The runtime's metrics count from the first instance: they are made before the app loads.
    let mut registry = prometheus_client::registry::Registry::default();
    let mut options = skiff_runtime::LoadOptions::default();
    if metrics_listen.is_some() {
        options.metrics = Some(skiff_runtime::MetricsScope {
            metrics: skiff_runtime::RuntimeMetrics::register(&mut registry),
            tenant: "".into(),
        });
    }
    let loaded = {
        let runtime = runtime.clone();
        let for_errors = app.clone();
        tokio::task::spawn_blocking(move || runtime.load_app_with(app, &options))
            .await
            .context("loading the app")?
            .map_err(|err| match err.component {
                Some(index) if from_manifest => {
                    let field = err.manifest_field();
                    ManifestError::at(&for_errors, index, field, err.to_string(), None).into()
                }
                _ => anyhow::Error::from(err),
            })?
    };
    let app = loaded.app().clone();
    let mut http_app = skiff_http::HttpApp::new(loaded);
    if let Some(metrics_listen) = metrics_listen {
        let metrics = skiff_http::HttpMetrics::register(&mut registry);
        http_app = http_app.with_metrics(&metrics, "");
        let listener = tokio::net::TcpListener::bind(metrics_listen)
            .await
            .with_context(|| format!("cannot listen on {metrics_listen} (--metrics-listen)"))?;
        println!("Metrics http://{}/metrics", listener.local_addr()?);
        tokio::spawn(skiff_http::serve_metrics(listener, Arc::new(registry)));
    }
    let server = skiff_http::Server::bind(listen, http_app)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    let addr = server.local_addr()?;
    // Scripts wait for this line: it is printed only once the socket listens.
    println!("Serving http://{addr}");
    println!("Available routes:");
    let base = format!("http://{addr}");
    for route in &app.routes {
        let component = &app.components[route.component];
        println!(
            "  {}: {}",
            component.id,
            cmd::route_url(&base, &route.as_written)
        );
    }
    server
        .with_limits(http.limits())
        .with_shutdown_grace(http.shutdown_grace())
        .with_guests_of(runtime.clone())
        .serve(shutdown_signal())
        .await?;
    tracing::info!("stopped");
    Ok(ExitCode::SUCCESS)
}

/// Waits for SIGINT or SIGTERM and returns its number, for the exit code a shell expects
/// (128 plus the number).
// Installing a handler fails only outside a runtime with signals enabled; `main` builds its
// runtime with them.
#[allow(clippy::expect_used)]
async fn termination_signal() -> u8 {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut interrupt = signal(SignalKind::interrupt()).expect("installing the SIGINT handler");
        let mut terminate =
            signal(SignalKind::terminate()).expect("installing the SIGTERM handler");
        tokio::select! {
            _ = interrupt.recv() => 2,
            _ = terminate.recv() => 15,
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
        2
    }
}

// As for `termination_signal`, installing the handler cannot fail here.
#[allow(clippy::expect_used)]
pub(crate) async fn shutdown_signal() {
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
    tracing::info!("shutdown requested: no longer accepting connections");
}

fn init_logging(options: &GlobalOptions) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&options.log_level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // Colour only for people: log files and pipes get plain text.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    match options.log_format {
        LogFormat::Text => builder.with_target(false).init(),
        LogFormat::Json => builder.json().init(),
    }
}
