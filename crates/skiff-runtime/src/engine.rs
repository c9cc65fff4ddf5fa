//! The one wasmtime [`Engine`] of a skiff process, its [`Linker`], and the epoch ticker that
//! makes deadlines enforceable inside guest code.
//!
//! The ticker runs for as long as the engine exists, not as long as the [`Runtime`]: every
//! store holds the engine, so guests still running when the host lets go of its runtime (at
//! shutdown, or when an app is dropped) keep their deadlines and keep yielding their threads.
//! A host that stops for good calls [`Runtime::stop_guests`], after which every guest still
//! running is interrupted at its next tick.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::sync::Semaphore;
use wasmtime::component::Linker;
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

use crate::cache::CodeCache;
use crate::capabilities;
use crate::host::Host;

/// How often the engine's epoch advances. A guest stuck in a loop is interrupted at most one
/// tick after its deadline; a shorter tick costs a little CPU on an otherwise idle host.
pub const DEFAULT_EPOCH_TICK: Duration = Duration::from_millis(10);

/// How long a kept instance waits idle by default: long enough that a component with steady
/// traffic (a request every few seconds) keeps its instances warm, short enough that a burst's
/// instances do not sit on memory and pool slots for long after it.
pub const DEFAULT_REUSE_IDLE_TIMEOUT: Duration = Duration::from_secs(10);

/// Host-wide runtime settings. Per-component limits come from the manifest.
#[derive(Debug, Clone)]
pub struct RuntimeConfig {
    /// Where compiled code is kept between runs; `None` disables the on-disk cache.
    pub cache_dir: Option<PathBuf>,
    /// Use the pooling instance allocator (pre-reserved slots, copy-on-write images). Turn it
    /// off only where virtual address space is scarce.
    pub pooling: bool,
    pub epoch_tick: Duration,
    /// Deadline for one request when the component sets none.
    pub default_timeout: Duration,
    /// Memory cap of one request's instance when the component sets none: without one, a
    /// guest could take as much as its pool slot holds (gigabytes), times every instance.
    pub default_memory: Option<u64>,
    /// Instances that may run at once across the whole host; requests past it get 503 at
    /// once rather than queueing without bound. Also sizes the instance pool.
    pub max_instances: u32,
    /// How long an instance kept for reuse (`limits.requests_per_instance`) may wait idle for
    /// its component's next request before it is dropped, giving back its memory, its pool
    /// slot and the permits it holds.
    pub reuse_idle_timeout: Duration,
    /// Where skiff keeps state (the embedded key-value databases); `None` when there is no
    /// home folder to put it in.
    pub data_dir: Option<PathBuf>,
    /// The operator's runtime config: store backends and variable values.
    pub runtime_config: skiff_manifest::RuntimeConfigFile,
    /// Meter fuel, so that components may set `limits.fuel`. Off by default: metering slows
    /// every guest down, and only apps that ask for it should pay.
    pub fuel: bool,
    /// Let app variables take values from `SKIFF_VAR_*` in skiff's environment. A host that
    /// runs other people's apps turns it off: its environment is not theirs to read.
    pub variables_from_env: bool,
    /// Let guests reach private networks and the host itself where their manifest names them
    /// (`allowed_outbound_hosts`). Off, every grant reaches public addresses only: what a
    /// host running other people's apps wants, so that no tenant can call the management
    /// API, the metadata service or the operator's internal services.
    pub allow_private_outbound: bool,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        RuntimeConfig {
            cache_dir: CodeCache::default_dir(),
            pooling: true,
            epoch_tick: DEFAULT_EPOCH_TICK,
            default_timeout: Duration::from_secs(30),
            default_memory: Some(128 << 20),
            max_instances: 1000,
            reuse_idle_timeout: DEFAULT_REUSE_IDLE_TIMEOUT,
            fuel: false,
            data_dir: default_data_dir(),
            runtime_config: Default::default(),
            variables_from_env: true,
            allow_private_outbound: true,
        }
    }
}

/// `$SKIFF_DATA_DIR`, else `$XDG_DATA_HOME/skiff`, else `~/.local/share/skiff`.
pub fn default_data_dir() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("SKIFF_DATA_DIR") {
        return Some(PathBuf::from(dir));
    }
    if let Some(dir) = std::env::var_os("XDG_DATA_HOME") {
        return Some(PathBuf::from(dir).join("skiff"));
    }
    std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".local/share/skiff"))
}

/// Everything shared by all apps and requests of one process. Cheap to share behind an `Arc`.
pub struct Runtime {
    pub(crate) engine: Engine,
    pub(crate) linker: Linker<Host>,
    pub(crate) cache: CodeCache,
    pub(crate) config: RuntimeConfig,
    /// One permit per instance allowed to run at once, host-wide.
    pub(crate) instances: Arc<Semaphore>,
    /// Every component's pool of instances kept for reuse, which hold host permits while idle.
    pub(crate) idle_instances: crate::invoke::IdlePools,
    pub(crate) backends: crate::state::Backends,
    pub(crate) code_share: crate::app::CodeShare,
    pub(crate) load_stats: crate::app::LoadStats,
    /// Set by [`Runtime::stop_guests`]: every guest's epoch check reads it, so that guests
    /// still running when the host stops are interrupted rather than left to their deadlines.
    pub(crate) stopping: Arc<AtomicBool>,
}

impl Runtime {
    pub fn new(config: RuntimeConfig) -> wasmtime::Result<Arc<Runtime>> {
        let engine = build_engine(&config)?;
        let mut linker = Linker::new(&engine);
        capabilities::add_to_linker(&mut linker)?;
        let cache = CodeCache::new(config.cache_dir.clone(), &engine);
        start_epoch_ticker(&engine, config.epoch_tick);
        Ok(Arc::new(Runtime {
            engine,
            linker,
            cache,
            instances: Arc::new(Semaphore::new(config.max_instances as usize)),
            idle_instances: Default::default(),
            backends: Default::default(),
            code_share: Default::default(),
            load_stats: Default::default(),
            config,
            stopping: Arc::new(AtomicBool::new(false)),
        }))
    }

    /// Interrupts every guest of this runtime that is still running, at its next epoch tick
    /// (their requests fail with [`crate::InvokeError::Stopped`]), and every guest started
    /// afterwards at its first tick. For a host that is shutting down, once the grace period
    /// for requests in flight is over: a guest that computes forever would otherwise keep its
    /// thread, and the process, alive until its deadline, or for ever without one.
    pub fn stop_guests(&self) {
        self.stopping.store(true, Ordering::Relaxed);
    }

    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    pub fn cache(&self) -> &CodeCache {
        &self.cache
    }

    pub fn config(&self) -> &RuntimeConfig {
        &self.config
    }

    /// How components got their code so far: shared, from the cache, or compiled.
    pub fn load_stats(&self) -> &crate::app::LoadStats {
        &self.load_stats
    }

    /// Closes the key-value databases that no loaded app uses (see `Backends::close_unused`);
    /// returns how many. A host that unloads idle apps calls it after each sweep.
    pub fn close_unused_stores(&self) -> usize {
        self.backends.close_unused()
    }

    /// Instances running now, across every app of this runtime.
    pub fn instances_running(&self) -> u32 {
        let free = self.instances.available_permits();
        self.config
            .max_instances
            .saturating_sub(u32::try_from(free).unwrap_or(u32::MAX))
    }

    /// Gives a new store its fuel: the component's budget, or no practical limit. With
    /// metering off this does nothing (a store then has no fuel to set).
    pub(crate) fn fill_fuel<T>(&self, store: &mut wasmtime::Store<T>, budget: Option<u64>) {
        if self.config.fuel {
            store
                .set_fuel(budget.unwrap_or(u64::MAX))
                .expect("fuel metering is on");
        }
    }
}

fn build_engine(settings: &RuntimeConfig) -> wasmtime::Result<Engine> {
    let mut config = Config::new();
    config.wasm_component_model(true);
    // The component-model-async machinery (WASIp3) is compiled into wasmtime, and with it on,
    // every guest-to-host call creates and deletes a host task in the store's concurrent
    // state. skiff links WASIp2 only, so nothing needs it: off, a hello request costs 13.3 µs
    // instead of 16.8 µs (`cargo bench -p skiff-runtime --bench sandbox`, back to back).
    config.concurrency_support(false);
    config.epoch_interruption(true);
    config.consume_fuel(settings.fuel);
    // Copy-on-write heap images make instantiation independent of the data segment size.
    config.memory_init_cow(true);
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
fn start_epoch_ticker(engine: &Engine, tick: Duration) {
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
        .expect("spawning the epoch thread");
}
