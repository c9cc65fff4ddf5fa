//! Where every sandbox is made: the wasmtime [`Engine`]s of a skiff process, their
//! [`Linker`]s, the host-wide instance permits, and the epoch tickers that make deadlines
//! enforceable inside guest code. Every unit of work (a request, a command, the triggers to
//! come) gets its store from [`Sandboxes::new_store`], with the same limits and epochs.
//!
//! There are two engines. WASIp2 components run on the first, built with the component
//! model's concurrency support off: it costs every guest-to-host call a host task. WASI 0.3
//! components (component-model async: `stream`, `future`, async exports) need it, and run on
//! the second, [`Flavor::Async`], made when the first of them loads: a host that serves none
//! pays nothing for it. Code compiled for one engine never runs on the other.
//!
//! The ticker runs for as long as the engine exists, not as long as the runtime: every
//! store holds the engine, so guests still running when the host lets go of its runtime (at
//! shutdown, or when an app is dropped) keep their deadlines and keep yielding their threads.
//! A host that stops for good calls [`Sandboxes::stop_guests`], after which every guest still
//! running is interrupted at its next tick.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use wasmtime::component::Linker;
use wasmtime::{
    Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig, Store, UpdateDeadline,
};

use crate::config::RuntimeConfig;
use crate::host::{self, Host};
use crate::limits::{Limits, Sandboxed};
use crate::reuse::HostPermits;

/// Which engine a component's code runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Flavor {
    /// WASIp2 and commands: concurrency support off.
    Sync,
    /// Component-model async (WASI 0.3): concurrency support on.
    Async,
}

/// An engine and the linker of everything skiff provides on it.
struct Linked {
    engine: Engine,
    linker: Linker<Host>,
}

pub(crate) struct Sandboxes {
    sync: Linked,
    /// Made by the first WASI 0.3 component to load; the error, if it cannot be, is kept and
    /// told to every such component.
    async_engine: OnceLock<Result<Linked, String>>,
    /// What the async engine is built from, when it is.
    settings: RuntimeConfig,
    /// Whether stores meter fuel (`RuntimeConfig::fuel`).
    fuel: bool,
    /// Set by [`Sandboxes::stop_guests`]: every guest's epoch check reads it, so that guests
    /// still running when the host stops are interrupted rather than left to their deadlines.
    stopping: Arc<AtomicBool>,
    /// One permit per instance allowed to run at once, host-wide.
    pub(crate) permits: HostPermits,
}

impl Sandboxes {
    pub(crate) fn new(config: &RuntimeConfig) -> wasmtime::Result<Sandboxes> {
        let engine = build_engine(config, Flavor::Sync)?;
        let mut linker = Linker::new(&engine);
        host::add_to_linker(&mut linker)?;
        start_epoch_ticker(&engine, config.epoch_tick)?;
        Ok(Sandboxes {
            sync: Linked { engine, linker },
            async_engine: OnceLock::new(),
            settings: config.clone(),
            fuel: config.fuel,
            stopping: Arc::new(AtomicBool::new(false)),
            permits: HostPermits::new(config.max_instances),
        })
    }

    /// The WASIp2 engine.
    pub(crate) fn engine(&self) -> &Engine {
        &self.sync.engine
    }

    /// The engine and linker for `flavor`, the async one made on first use.
    pub(crate) fn engine_and_linker(
        &self,
        flavor: Flavor,
    ) -> Result<(&Engine, &Linker<Host>), String> {
        let linked = match flavor {
            Flavor::Sync => &self.sync,
            Flavor::Async => self
                .async_engine
                .get_or_init(|| {
                    build_async(&self.settings).map_err(|err| {
                        format!("the engine for WASI 0.3 components cannot be made: {err:#}")
                    })
                })
                .as_ref()
                .map_err(Clone::clone)?,
        };
        Ok((&linked.engine, &linked.linker))
    }

    /// A store for one unit of work on the WASIp2 engine, with its memory limit, deadline
    /// and fuel.
    pub(crate) fn new_store<T: Sandboxed>(&self, state: T, limits: &Limits) -> Store<T> {
        self.new_store_on(&self.sync.engine, state, limits)
    }

    /// [`Sandboxes::new_store`] on `engine`, one of these sandboxes' engines.
    pub(crate) fn new_store_on<T: Sandboxed>(
        &self,
        engine: &Engine,
        state: T,
        limits: &Limits,
    ) -> Store<T> {
        let mut store = Store::new(engine, state);
        store.limiter(|state| state.limiter());
        self.arm(&mut store, limits);
        store
    }

    /// Starts a unit of work's clock in `store` (a fresh one, or one kept from an earlier
    /// request): guest code checks in at every epoch tick. Past the deadline it is
    /// interrupted; before it, it yields to the executor, so a guest that computes for long
    /// (or forever) shares its worker thread instead of stalling the work queued on it, and
    /// whoever awaits it may also wait for something else (a signal) and stop it by dropping
    /// its future. A host that is stopping interrupts every guest the same way.
    pub(crate) fn arm<T>(&self, store: &mut Store<T>, limits: &Limits) {
        let deadline = limits.timeout.map(|timeout| Instant::now() + timeout);
        let stopping = self.stopping.clone();
        store.set_epoch_deadline(1);
        store.epoch_deadline_callback(move |_| {
            if deadline.is_some_and(|deadline| Instant::now() >= deadline)
                || stopping.load(Ordering::Relaxed)
            {
                Ok(UpdateDeadline::Interrupt)
            } else {
                Ok(UpdateDeadline::YieldCustom(
                    1,
                    Box::pin(tokio::task::yield_now()),
                ))
            }
        });
        if self.fuel {
            // With metering on every store has fuel to set; a failure here is a skiff bug.
            if let Err(err) = store.set_fuel(limits.fuel.unwrap_or(u64::MAX)) {
                tracing::error!("setting a store's fuel failed: {err:#}");
            }
        }
    }

    /// Interrupts every guest that is still running, at its next epoch tick, and every guest
    /// started afterwards at its first tick.
    pub(crate) fn stop_guests(&self) {
        self.stopping.store(true, Ordering::Relaxed);
    }

    /// Whether [`Sandboxes::stop_guests`] was called: an interrupt is then a stop, not a
    /// deadline.
    pub(crate) fn stopping(&self) -> bool {
        self.stopping.load(Ordering::Relaxed)
    }
}

/// The engine for WASI 0.3 components, its epoch ticker, and a linker of WASIp2 (a 0.3
/// component built by today's toolchains imports both) and WASI 0.3.
fn build_async(settings: &RuntimeConfig) -> wasmtime::Result<Linked> {
    let engine = build_engine(settings, Flavor::Async)?;
    let mut linker = Linker::new(&engine);
    host::add_to_linker(&mut linker)?;
    host::add_wasi_0_3_to_linker(&mut linker)?;
    start_epoch_ticker(&engine, settings.epoch_tick)?;
    Ok(Linked { engine, linker })
}

/// Pulley for this host's pointer width and byte order.
const PULLEY_TARGET: &str = if cfg!(target_pointer_width = "64") {
    if cfg!(target_endian = "big") {
        "pulley64be"
    } else {
        "pulley64"
    }
} else if cfg!(target_endian = "big") {
    "pulley32be"
} else {
    "pulley32"
};

fn build_engine(settings: &RuntimeConfig, flavor: Flavor) -> wasmtime::Result<Engine> {
    let mut config = Config::new();
    config.wasm_component_model(true);
    // With concurrency support on, every guest-to-host call creates and deletes a host task
    // in the store's concurrent state. WASIp2 components never need it: off, a hello request
    // costs 13.3 µs instead of 16.8 µs (`cargo bench -p skiff-runtime --bench sandbox`, back
    // to back). WASI 0.3 components cannot run without it.
    let concurrent = flavor == Flavor::Async;
    config.concurrency_support(concurrent);
    config.wasm_component_model_async(concurrent);
    config.epoch_interruption(true);
    config.consume_fuel(settings.fuel);
    // Copy-on-write heap images make instantiation independent of the data segment size.
    config.memory_init_cow(true);
    if settings.engine == crate::EngineKind::Pulley {
        // The code cache keys on the engine's compatibility hash, which holds the target:
        // native and Pulley code never mix.
        config.target(PULLEY_TARGET)?;
    }
    if settings.pooling {
        config.allocation_strategy(InstanceAllocationStrategy::Pooling(pooling_config(
            settings.max_instances,
        )));
        match Engine::new(&config) {
            Ok(engine) => return Ok(engine),
            Err(err) => {
                // Typically a container or ulimit with little virtual address space. Serving
                // slower beats not serving at all.
                tracing::warn!(
                    "the pooling allocator is unavailable ({err:#}); falling back to on-demand allocation"
                );
                config.allocation_strategy(InstanceAllocationStrategy::OnDemand);
            }
        }
    }
    Engine::new(&config)
}

/// Sizing of the pool. Slots only reserve virtual memory until used, so the counts are
/// generous; the per-component limits leave room for the large components that Python
/// (componentize-py) and JavaScript (jco) produce, which hold many core instances, memories
/// and tables each.
/// The pool holds one slot more than the host's instance limit allows at once, so a request
/// admitted by the limit always finds a slot.
fn pooling_config(max_instances: u32) -> PoolingAllocationConfig {
    let instances = max_instances.saturating_add(1);
    let mut pool = PoolingAllocationConfig::default();
    pool.total_component_instances(instances)
        .total_core_instances(instances.saturating_mul(10))
        .total_memories(instances.saturating_mul(2))
        .total_tables(instances.saturating_mul(4))
        .total_stacks(instances)
        .max_core_instances_per_component(64)
        .max_memories_per_component(16)
        .max_tables_per_component(64)
        .table_elements(100_000)
        .max_component_instance_size(4 << 20)
        .max_core_instance_size(4 << 20)
        // Reuse a slot without giving its pages back to the kernel: PAGEMAP_SCAN (Linux 6.7+)
        // finds the pages the last instance touched, and only those are reset, by copying the
        // image back or zeroing, up to the keep-resident size. Before this, madvise plus the
        // page faults of the next instance were 40% of the cost of a hello request (28.7 µs
        // down to 16.9 µs in `cargo bench -p skiff-runtime --bench sandbox`). Older kernels
        // fall back to madvise.
        .pagemap_scan(wasmtime::Enabled::Auto)
        .linear_memory_keep_resident(1 << 20)
        .table_keep_resident(64 << 10);
    pool
}

/// Starts a thread that advances the engine's epoch every tick, so that epoch deadlines fire
/// and guests yield. It holds the engine only weakly and ends once the engine is gone: every
/// store (so every running guest) holds a strong reference, so ticks go on until the last
/// guest is over, however the runtime itself was dropped. Nothing joins it: a runtime dropped
/// while guests still run must not wait for them.
fn start_epoch_ticker(engine: &Engine, tick: Duration) -> std::io::Result<()> {
    let engine = engine.weak();
    std::thread::Builder::new()
        .name("skiff-epoch".into())
        .spawn(move || {
            while let Some(engine) = engine.upgrade() {
                engine.increment_epoch();
                drop(engine);
                std::thread::sleep(tick);
            }
        })
        .map(drop)
}
