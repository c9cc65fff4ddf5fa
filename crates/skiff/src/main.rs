//! The `skiff` command line: parses arguments, wires the manifest, runtime and HTTP crates
//! together, and prints. No logic of its own beyond turning errors into messages for people.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Result;
use clap::{Args, Parser, Subcommand, ValueEnum};
use skiff_manifest::ManifestError;
use skiff_runtime::RuntimeConfig;

mod build;
mod cmd;
mod completions;
mod new;
mod oci;
mod run;
mod server;
mod single;
mod telemetry;
mod up;
mod watch;

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
    /// Log filter, e.g. `debug` or `info,skiff_runtime=debug` (RUST_LOG overrides it)
    /// [default: `info`; for `run`, `warn`, so that only problems mix into the program's own
    /// stderr; for `serve`, `warn` and the guests' output. Both add compile progress when
    /// stderr is a terminal].
    #[arg(long, global = true, value_name = "FILTER")]
    log_level: Option<String>,
    /// Folder of the compiled-code cache [default: $SKIFF_CACHE_DIR, else ~/.cache/skiff].
    #[arg(long, global = true, value_name = "DIR")]
    cache_dir: Option<PathBuf>,
    /// Compile every time; keep nothing on disk.
    #[arg(long, global = true)]
    no_cache: bool,
    /// Folder for state: the embedded key-value databases and pulled apps [default:
    /// $SKIFF_DATA_DIR, else ~/.local/share/skiff].
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
    /// What runs the guests: `native` code compiled by Cranelift, or `pulley`, wasmtime's
    /// interpreter, where the host forbids making memory executable (some 20 times slower).
    #[arg(long, global = true, env = "SKIFF_ENGINE", value_enum, default_value_t = EngineChoice::Native)]
    engine: EngineChoice,
    /// Threads that serve requests [default: the CPUs this process may use]. With 1, one
    /// thread does all the work, without a work-stealing scheduler.
    #[arg(long, global = true, env = "SKIFF_THREADS", value_name = "N", value_parser = clap::value_parser!(u16).range(1..))]
    threads: Option<u16>,
}

#[derive(Clone, Copy, ValueEnum)]
enum EngineChoice {
    Native,
    Pulley,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Run a WASI command (a wasi:cli/run component or a WASI preview 1 module) to completion.
    Run(run::RunArgs),
    /// Serve one wasi:http/proxy component on every path.
    Serve(up::ServeArgs),
    /// Serve an app described by a skiff.toml manifest.
    Up(up::UpArgs),
    /// Create an app from a template: `skiff new http-rust my-app` (`--list` shows them all).
    New(new::NewArgs),
    /// Run each component's build command (`[component.X.build]`), then check that the app
    /// loads.
    Build(build::BuildArgs),
    /// Push an app (or a single component) to an OCI registry; prints the pinned reference.
    Push(oci::PushArgs),
    /// Pull an app or component from an OCI registry into the local cache.
    Pull(oci::PullArgs),
    /// Log in to an OCI registry, or out of it.
    #[command(subcommand)]
    Registry(oci::RegistryCommand),
    /// Run a multi-tenant host: apps deployed over its management API, served by host name.
    Server(Box<server::ServerArgs>),
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
    /// Print shell completions for bash, zsh, fish, elvish or PowerShell.
    Completions(completions::CompletionsArgs),
    /// Print the manual page, or write one per command into a folder.
    Man(completions::ManArgs),
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
    init_logging(&cli.global, &cli.command);
    // Every HTTPS client in skiff (registries, OTLP, the management API's) is rustls with ring.
    // Installing fails only if a provider is installed already, which is as good.
    let _ = rustls::crypto::ring::default_provider().install_default();
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
    report(&err);
    ExitCode::FAILURE
}

/// Prints `err` on stderr for people.
fn report(err: &anyhow::Error) {
    // A manifest error is already a full, formatted report.
    if let Some(manifest) = err.downcast_ref::<ManifestError>() {
        eprintln!("{manifest}");
    } else {
        eprintln!("error: {err:#}");
    }
}

async fn dispatch(cli: Cli) -> Result<ExitCode> {
    let mut config = RuntimeConfig::default();
    config.max_instances = cli.global.max_instances.max(1);
    config.default_timeout = cli.global.default_timeout;
    config.default_memory = Some(cli.global.default_memory);
    config.reuse_idle_timeout = cli.global.reuse_idle_timeout;
    config.engine = match cli.global.engine {
        EngineChoice::Native => skiff_runtime::EngineKind::Native,
        EngineChoice::Pulley => skiff_runtime::EngineKind::Pulley,
    };
    if let Some(dir) = cli.global.data_dir.clone() {
        config.data_dir = Some(dir);
    }
    if cli.global.no_cache {
        config.cache_dir = None;
    } else if let Some(dir) = cli.global.cache_dir.clone() {
        config.cache_dir = Some(dir);
    }
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
            server::run(config, folders, *args).await
        }
        Command::Push(args) => oci::push(args, &pull_cache(&cli.global)?).await,
        Command::Pull(args) => oci::pull(args, &pull_cache(&cli.global)?).await,
        Command::Registry(command) => oci::registry(command).await,
        Command::Run(args) => {
            let cache = pull_cache(&cli.global)?;
            run::run(&up::new_runtime(config)?, args, &cache).await
        }
        Command::Serve(args) => {
            let cache = pull_cache(&cli.global)?;
            up::serve(config, args, &cache).await
        }
        Command::New(args) => new::new(args),
        Command::Completions(args) => completions::completions(args),
        Command::Man(args) => completions::man(args),
        Command::Build(args) => build::build(config, args).await,
        Command::Up(args) => {
            let cache = pull_cache(&cli.global)?;
            up::up(config, args, &cache).await
        }
    }
}

/// Where pulled apps are kept (and where pushed blobs were seen): in the data folder
/// (`--data-dir`, else the default).
fn pull_cache(global: &GlobalOptions) -> Result<skiff_oci::Cache> {
    oci::pull_cache(global.data_dir.as_deref())
}

fn init_logging(options: &GlobalOptions, command: &Command) {
    use tracing_subscriber::EnvFilter;
    let terminal = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let level = options
        .log_level
        .clone()
        .unwrap_or_else(|| default_log_filter(command, terminal));
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // Colour only for people: log files and pipes get plain text.
        .with_ansi(terminal);
    match options.log_format {
        LogFormat::Text => builder.with_target(false).init(),
        LogFormat::Json => builder.json().init(),
    }
}

/// What is logged when `--log-level` is not given. `run` and `serve` stand in for `wasmtime
/// run` and `wasmtime serve`: a command's stderr is its own (skiff adds only its problems),
/// and `serve` shows what the guests print. Compile progress (the first start of a large
/// component takes seconds) is for a person watching, not for a log or a pipe.
fn default_log_filter(command: &Command, terminal: bool) -> String {
    let quiet = match command {
        Command::Run(_) => "warn",
        Command::Serve(_) => "warn,guest=info",
        _ => return "info".to_string(),
    };
    if terminal {
        format!("{quiet},skiff_runtime::cache=info")
    } else {
        quiet.to_string()
    }
}
