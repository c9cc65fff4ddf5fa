//! Running a WASI command to completion, as `skiff run` does: a `wasi:cli/run` component or a
//! WASI preview 1 core module, with stdio passed through and only the folders and variables
//! the caller grants.

use std::path::Path;

use wasmtime::component::ResourceTable;
use wasmtime::{Linker, Module, Store, Trap, UpdateDeadline};
use wasmtime_wasi::p2::bindings::CommandPre;
use wasmtime_wasi::{I32Exit, WasiCtxBuilder, WasiView};
use wasmtime_wasi_http::WasiHttpCtx;

use crate::app::{WasmKind, read_wasm, wasm_kind};
use crate::cache::CodeKind;
use crate::capabilities::InstanceIdentity;
use crate::capabilities::outbound_http::OutboundHttpGrant;
use crate::capabilities::wasi::WasiGrant;
use crate::engine::Runtime;
use crate::error::{LoadError, LoadErrorKind};
use crate::host::{Host, InstanceLimiter};

/// What a command may see besides stdio.
#[derive(Debug, Clone, Default)]
pub struct CommandOptions {
    /// The guest's argv, program name first.
    pub args: Vec<String>,
    pub grant: WasiGrant,
}

/// How a command ended, when it ran at all.
#[derive(Debug)]
pub enum CommandOutcome {
    /// The guest exited (returned, or called `exit`) with this code.
    Exited(i32),
    /// The guest trapped; the message says why.
    Trapped(String),
}

/// The exit code of a trapped command, as a process killed by `SIGABRT` would have: what
/// wasmtime's own CLI does, so scripts see the same.
pub const TRAP_EXIT_CODE: i32 = 134;

impl Runtime {
    /// Runs the command at `path`. A load problem (no such file, not Wasm, no `run` export, an
    /// import skiff does not provide) is an `Err`; whatever the guest does is an outcome.
    pub async fn run_command(
        &self,
        path: &Path,
        options: CommandOptions,
    ) -> Result<CommandOutcome, LoadError> {
        let options = CommandOptions {
            grant: options.grant.open()?,
            ..options
        };
        let wasm = read_wasm(path)?;
        match wasm_kind(path, &wasm)? {
            WasmKind::Component => self.run_component(path, &wasm, options).await,
            WasmKind::CoreModule => self.run_module(path, &wasm, options).await,
        }
    }

    fn command_builder(options: &CommandOptions) -> WasiCtxBuilder {
        let mut builder = options.grant.builder();
        builder.inherit_stdio().args(&options.args);
        builder
    }

    /// Gives a command's context its granted folders.
    fn give_folders(
        path: &Path,
        options: &CommandOptions,
        ctx: &mut wasmtime_wasi::WasiCtx,
    ) -> Result<(), LoadError> {
        options
            .grant
            .give_folders(ctx)
            .map_err(|err| LoadError::new(path, LoadErrorKind::Link(format!("{err:#}"))))
    }

    async fn run_component(
        &self,
        path: &Path,
        wasm: &[u8],
        options: CommandOptions,
    ) -> Result<CommandOutcome, LoadError> {
        let (component, _) = self.compile_component(path, wasm)?;
        let instance_pre = self
            .linker
            .instantiate_pre(&component)
            .map_err(|err| LoadError::from_link(path, err))?;
        let pre = CommandPre::new(instance_pre).map_err(|_| {
            LoadError::new(
                path,
                LoadErrorKind::MissingExport {
                    expected: "wasi:cli/run",
                    hint: "a command is built as a binary for wasm32-wasip2; if this is an HTTP \
                           component, serve it with `skiff serve`",
                },
            )
        })?;
        let identity = InstanceIdentity {
            app: "run".into(),
            component: path.display().to_string().into(),
            request_id: 0,
            trace_id: opentelemetry::trace::TraceId::INVALID,
            log_sink: None,
            metrics: None,
        };
        let mut wasi = Self::command_builder(&options).build();
        Self::give_folders(path, &options, &mut wasi)?;
        let host = Host {
            table: ResourceTable::new(),
            wasi,
            http: WasiHttpCtx::new(),
            outbound: OutboundHttpGrant::new(Vec::new()).instance(identity.clone()),
            key_value: Default::default(),
            config: Default::default(),
            identity,
            trace: Default::default(),
            outputs: None,
            limiter: InstanceLimiter::new(None),
        };
        let mut store = Store::new(&self.engine, host);
        store.limiter(|host| &mut host.limiter);
        yield_at_every_tick(&mut store);
        self.fill_fuel(&mut store, None);
        let result = async {
            let command = pre.instantiate_async(&mut store).await?;
            command.wasi_cli_run().call_run(&mut store).await
        }
        .await;
        Ok(match result {
            Ok(Ok(())) => CommandOutcome::Exited(0),
            Ok(Err(())) => CommandOutcome::Exited(1),
            Err(err) => outcome_of_error(err),
        })
    }

    async fn run_module(
        &self,
        path: &Path,
        wasm: &[u8],
        options: CommandOptions,
    ) -> Result<CommandOutcome, LoadError> {
        let (module, _) = self.cache.load(
            &self.engine,
            path,
            wasm,
            CodeKind::Module,
            // SAFETY: see `CodeCache::load`.
            |file| unsafe { Module::deserialize_file(&self.engine, file) },
            |bytes| unsafe { Module::deserialize(&self.engine, bytes) },
        )?;
        let mut linker: Linker<wasmtime_wasi::p1::WasiP1Ctx> = Linker::new(&self.engine);
        wasmtime_wasi::p1::add_to_linker_async(&mut linker, |ctx| ctx)
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
        let mut ctx = Self::command_builder(&options).build_p1();
        // The preview 1 adapter reads the preopens on the guest's first call, after this.
        Self::give_folders(path, &options, ctx.ctx().ctx)?;
        let mut store = Store::new(&self.engine, ctx);
        yield_at_every_tick(&mut store);
        self.fill_fuel(&mut store, None);
        let result = async {
            let instance = instance_pre.instantiate_async(&mut store).await?;
            let start = instance.get_typed_func::<(), ()>(&mut store, "_start")?;
            start.call_async(&mut store, ()).await
        }
        .await;
        Ok(match result {
            Ok(()) => CommandOutcome::Exited(0),
            Err(err) => outcome_of_error(err),
        })
    }
}

/// A command runs as long as it likes, but it checks in at every epoch tick and yields to the
/// executor: whoever awaits it can then also wait for something else (a signal) and stop the
/// command by dropping its future, even while it computes without end.
fn yield_at_every_tick<T>(store: &mut Store<T>) {
    store.set_epoch_deadline(1);
    store.epoch_deadline_callback(|_| {
        Ok(UpdateDeadline::YieldCustom(
            1,
            Box::pin(tokio::task::yield_now()),
        ))
    });
}

fn outcome_of_error(err: wasmtime::Error) -> CommandOutcome {
    if let Some(exit) = err.downcast_ref::<I32Exit>() {
        return CommandOutcome::Exited(exit.0);
    }
    if let Some(Trap::StackOverflow) = err.downcast_ref::<Trap>() {
        return CommandOutcome::Trapped("stack overflow".into());
    }
    CommandOutcome::Trapped(format!("{err:#}"))
}
