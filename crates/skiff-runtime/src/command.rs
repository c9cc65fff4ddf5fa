//! Running a WASI command to completion, as `skiff run` does: a `wasi:cli/run` component or a
//! WASI preview 1 core module, with stdio passed through and only the folders and variables
//! the caller grants. Its store comes from the same place as a request's
//! ([`Sandboxes::new_store`]), with a memory cap and a deadline when asked for.
//!
//! A command component of an app runs the other way, when a trigger starts it
//! ([`LoadedComponent::run_command`]): as a request does, with the component's grants, limits,
//! admission, log and usage, its output going to the log.

use std::path::Path;
use std::time::Duration;

use wasmtime::{Linker, Store, Trap};
use wasmtime_wasi::I32Exit;
use wasmtime_wasi::p1::WasiP1Ctx;
use wasmtime_wasi::p2::bindings::CommandPre;

use crate::cache::CodeCache;
use crate::capabilities::InstanceIdentity;
use crate::capabilities::wasi::WasiGrant;
use crate::code::{self, WasmKind};
use crate::engine::{Flavor, Sandboxes};
use crate::error::InvokeError;
use crate::error::{LoadError, LoadErrorKind};
use crate::host::{Grants, Host};
use crate::invoke::{RequestInfo, classify};
use crate::limits::{InstanceLimiter, Limits, Sandboxed};
use crate::load::{Commands, Linked, LoadedComponent};

/// What a command may see besides stdio, and how much it may use. Start from
/// `CommandOptions::default()` (nothing granted, no limits) and set what you need.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct CommandOptions {
    /// The guest's argv, program name first.
    pub args: Vec<String>,
    pub grant: WasiGrant,
    /// The most its linear memories may add up to, in bytes; `None`: no cap.
    pub max_memory: Option<u64>,
    /// How long it may run; `None`: as long as it likes.
    pub timeout: Option<Duration>,
}

/// How a command ended, when it ran at all.
#[derive(Debug)]
pub enum CommandOutcome {
    /// The guest exited (returned, or called `exit`) with this code.
    Exited(i32),
    /// The guest trapped (or ran out of time or memory); the message says why.
    Trapped(String),
}

/// The exit code of a trapped command, as a process killed by `SIGABRT` would have: what
/// wasmtime's own CLI does, so scripts see the same.
pub const TRAP_EXIT_CODE: i32 = 134;

/// Runs the command at `path`. A load problem (no such file, not Wasm, no `run` export, an
/// import skiff does not provide) is an `Err`; whatever the guest does is an outcome.
pub(crate) async fn run(
    sandboxes: &Sandboxes,
    cache: &CodeCache,
    path: &Path,
    options: CommandOptions,
) -> Result<CommandOutcome, LoadError> {
    let grant = options.grant.open()?.for_command(options.args);
    let limits = Limits {
        timeout: options.timeout,
        memory: options.max_memory,
        fuel: None,
    };
    let wasm = code::read_wasm(path)?;
    let run = async {
        match code::wasm_kind(path, &wasm)? {
            WasmKind::Component => {
                run_component(sandboxes, cache, path, &wasm, grant, limits).await
            }
            WasmKind::CoreModule => run_module(sandboxes, cache, path, &wasm, grant, limits).await,
        }
    };
    match limits.timeout {
        // The epoch deadline stops guest code; this also stops a guest waiting on the host
        // (reading stdin).
        Some(timeout) => tokio::time::timeout(timeout, run)
            .await
            .unwrap_or_else(|_| Ok(past_deadline(timeout))),
        None => run.await,
    }
}

async fn run_component(
    sandboxes: &Sandboxes,
    cache: &CodeCache,
    path: &Path,
    wasm: &[u8],
    grant: WasiGrant,
    limits: Limits,
) -> Result<CommandOutcome, LoadError> {
    let exports = code::wasi_0_3_exports(wasm);
    if exports.http_handler {
        return Err(LoadError::new(
            path,
            LoadErrorKind::MissingExport {
                expected: "wasi:cli/run",
                hint: "this is a WASI 0.3 HTTP component (`wasi:http/handler@0.3`): serve it \
                       with `skiff serve`",
            },
        ));
    }
    // A WASI 0.3 command (an async `run`) runs on the async engine, with the same grants,
    // limits and outcomes.
    let flavor = if exports.cli_run {
        Flavor::Async
    } else {
        Flavor::Sync
    };
    let (engine, linker) = sandboxes
        .engine_and_linker(flavor)
        .map_err(|reason| LoadError::new(path, LoadErrorKind::AsyncUnavailable(reason)))?;
    let (component, _) =
        code::component(engine, cache, path, wasm).map_err(|err| match err.kind {
            LoadErrorKind::Invalid(why)
                if flavor == Flavor::Sync && code::needs_component_model_async(&why) =>
            {
                LoadError::new(
                    path,
                    LoadErrorKind::Unsupported {
                        field: "source",
                        reason: format!(
                            "this component uses component-model async ({why}) but exports \
                         neither WASI 0.3's `wasi:cli/run` nor its `wasi:http/handler`: \
                         skiff runs it as neither a command nor an HTTP component"
                        ),
                    },
                )
            }
            _ => err,
        })?;
    let instance_pre = linker
        .instantiate_pre(&component)
        .map_err(|err| LoadError::from_link(path, err))?;
    let command = match flavor {
        Flavor::Sync => CommandPre::new(instance_pre).map(Commands::Wasip2).map_err(|_| {
            LoadError::new(
                path,
                LoadErrorKind::MissingExport {
                    expected: "wasi:cli/run",
                    hint: "a command is built as a binary for wasm32-wasip2; if this is an HTTP \
                           component, serve it with `skiff serve`",
                },
            )
        })?,
        Flavor::Async => wasmtime_wasi::p3::bindings::CommandPre::new(instance_pre)
            .map(Commands::Wasi03)
            .map_err(|_| {
                LoadError::new(
                    path,
                    LoadErrorKind::MissingExport {
                        expected: "wasi:cli/run@0.3",
                        hint: "its `run` export does not have the type WASI 0.3 gives it",
                    },
                )
            })?,
    };
    let grants = Grants {
        wasi: grant,
        ..Grants::none()
    };
    let host = Host::new(&grants, InstanceIdentity::command(path), limits.memory);
    let mut store = sandboxes.new_store_on(engine, host, &limits);
    let result = command.run(&mut store).await.and_then(|ran| ran);
    Ok(match result {
        Ok(Ok(())) => CommandOutcome::Exited(0),
        Ok(Err(())) => CommandOutcome::Exited(1),
        Err(err) => outcome_of_error(err, &mut store, limits),
    })
}

impl Commands {
    /// Instantiates the command in `store` and runs its `run` to the end. The outer error is
    /// the instantiation's; inside is how `run` ended: its result (`Err(())` is exit status
    /// 1), or the error that stopped it.
    pub(crate) async fn run(
        &self,
        store: &mut Store<Host>,
    ) -> wasmtime::Result<wasmtime::Result<Result<(), ()>>> {
        Ok(match self {
            Commands::Wasip2(pre) => {
                let command = pre.instantiate_async(&mut *store).await?;
                command.wasi_cli_run().call_run(&mut *store).await
            }
            Commands::Wasi03(pre) => {
                let command = pre.instantiate_async(&mut *store).await?;
                store
                    .run_concurrent(async move |accessor| {
                        command.wasi_cli_run().call_run(accessor).await
                    })
                    .await
                    .and_then(|ran| ran)
            }
        })
    }
}

impl LoadedComponent {
    /// Runs this command component once with `args` (after its program name, the component's
    /// id), for a trigger: admitted, limited, logged and metered as a request is, its stdout
    /// and stderr going to the log. Returns its exit code; a guest stopped by a limit (or that
    /// trapped) is an error, as for a request.
    pub async fn run_command(
        &self,
        args: &[String],
        info: RequestInfo,
    ) -> Result<i32, InvokeError> {
        let Linked::Command(pre) = &self.linked else {
            return Err(InvokeError::Instantiate(format!(
                "component `{}` is an HTTP component, not a command",
                self.id
            )));
        };
        let mut grants = self.grants.clone();
        grants.wasi.args = std::iter::once(self.id.to_string())
            .chain(args.iter().cloned())
            .collect();
        let (limits, sandboxes) = (self.limits, self.sandboxes.clone());
        let exited =
            move |result: wasmtime::Result<Result<(), ()>>, store: &mut Store<Host>| match result {
                Ok(Ok(())) => Ok(0),
                Ok(Err(())) => Ok(1),
                Err(err) => match err.downcast_ref::<I32Exit>() {
                    Some(exit) => Ok(exit.0),
                    None => Err(classify(err, store, limits, &sandboxes)),
                },
            };
        let command = pre.clone();
        self.run_in_fresh_store(&grants, &info, 0, move |store| {
            Box::pin(async move {
                let result = command
                    .run(store)
                    .await
                    .map_err(|err| InvokeError::Instantiate(format!("{err:#}")))?;
                exited(result, store)
            })
        })
        .await
    }
}

/// The state of a preview 1 command's store.
struct Preview1 {
    ctx: WasiP1Ctx,
    limiter: InstanceLimiter,
}

impl Sandboxed for Preview1 {
    fn limiter(&mut self) -> &mut InstanceLimiter {
        &mut self.limiter
    }
}

async fn run_module(
    sandboxes: &Sandboxes,
    cache: &CodeCache,
    path: &Path,
    wasm: &[u8],
    grant: WasiGrant,
    limits: Limits,
) -> Result<CommandOutcome, LoadError> {
    let (module, _) = code::module(sandboxes.engine(), cache, path, wasm)?;
    let mut linker: Linker<Preview1> = Linker::new(sandboxes.engine());
    wasmtime_wasi::p1::add_to_linker_async(&mut linker, |state| &mut state.ctx)
        .map_err(|err| LoadError::new(path, LoadErrorKind::Link(format!("{err:#}"))))?;
    let instance_pre = linker
        .instantiate_pre(&module)
        .map_err(|err| LoadError::from_link(path, err))?;
    if module.get_export("_start").is_none() {
        return Err(LoadError::new(
            path,
            LoadErrorKind::MissingExport {
                expected: "_start",
                hint: "a WASI preview 1 command exports `_start`; build it as an executable \
                       (not a library) for wasm32-wasip1",
            },
        ));
    }
    let state = Preview1 {
        ctx: grant.preview1(),
        limiter: InstanceLimiter::new(limits.memory),
    };
    let mut store = sandboxes.new_store(state, &limits);
    let result = async {
        let instance = instance_pre.instantiate_async(&mut store).await?;
        let start = instance.get_typed_func::<(), ()>(&mut store, "_start")?;
        start.call_async(&mut store, ()).await
    }
    .await;
    Ok(match result {
        Ok(()) => CommandOutcome::Exited(0),
        Err(err) => outcome_of_error(err, &mut store, limits),
    })
}

fn past_deadline(timeout: Duration) -> CommandOutcome {
    CommandOutcome::Trapped(format!(
        "the command ran past its time limit of {timeout:?}"
    ))
}

fn outcome_of_error<T: Sandboxed>(
    err: wasmtime::Error,
    store: &mut Store<T>,
    limits: Limits,
) -> CommandOutcome {
    if let Some(exit) = err.downcast_ref::<I32Exit>() {
        return CommandOutcome::Exited(exit.0);
    }
    match err.downcast_ref::<Trap>() {
        Some(Trap::StackOverflow) => return CommandOutcome::Trapped("stack overflow".into()),
        Some(Trap::Interrupt) => {
            if let Some(timeout) = limits.timeout {
                return past_deadline(timeout);
            }
        }
        _ => {}
    }
    if let Some(limit) = limits.memory.filter(|_| store.data_mut().limiter().refused) {
        return CommandOutcome::Trapped(format!(
            "the command ran out of memory: it may use {limit} bytes ({err:#})"
        ));
    }
    CommandOutcome::Trapped(format!("{err:#}"))
}
