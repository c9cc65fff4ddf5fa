//! `skiff run`: a WASI command to completion, stdio passed through, with only the folders and
//! variables granted on the command line.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Result, bail};
use clap::Args;
use skiff_runtime::{CommandOptions, CommandOutcome, DirGrant, Runtime, TRAP_EXIT_CODE, WasiGrant};

use crate::single;

#[derive(Args)]
pub struct RunArgs {
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
    #[command(flatten)]
    registry: crate::oci::RegistryArgs,
    /// The Wasm file to run, or a registry reference to a component (HOST/REPO[:TAG]).
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
    pub fn to_grant(&self) -> Result<WasiGrant> {
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

pub async fn run(
    runtime: &Arc<Runtime>,
    mut args: RunArgs,
    cache: &skiff_oci::Cache,
) -> Result<ExitCode> {
    let grant = args.grants.to_grant()?;
    // The guest's program name and what errors call the command: the file's name and path,
    // or the reference it was pulled by (never the cache's path).
    let given = args.file.to_string_lossy().into_owned();
    let program = match crate::oci::pulled_if_reference(&args.file, &args.registry, cache).await? {
        Some(pulled) => {
            args.file = crate::oci::component_of(&pulled, &args.file, "serve it with `skiff up`")?;
            given.clone()
        }
        None => args
            .file
            .file_name()
            .map(|name| name.to_string_lossy().into_owned())
            .unwrap_or_default(),
    };
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
            eprintln!("error: {given} trapped: {reason}");
            Ok(ExitCode::from(TRAP_EXIT_CODE as u8))
        }
    }
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
