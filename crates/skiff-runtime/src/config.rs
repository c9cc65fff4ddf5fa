//! Host-wide runtime settings ([`RuntimeConfig`]); per-component limits come from the manifest.

use std::path::PathBuf;
use std::time::Duration;

/// How often the engine's epoch advances. A guest stuck in a loop is interrupted at most one
/// tick after its deadline; a shorter tick costs a little CPU on an otherwise idle host.
pub const DEFAULT_EPOCH_TICK: Duration = Duration::from_millis(10);

/// How long a kept instance waits idle by default: long enough that a component with steady
/// traffic (a request every few seconds) keeps its instances warm, short enough that a burst's
/// instances do not sit on memory and pool slots for long after it.
pub const DEFAULT_REUSE_IDLE_TIMEOUT: Duration = Duration::from_secs(10);

/// Host-wide runtime settings. Per-component limits come from the manifest.
///
/// Start from [`RuntimeConfig::default`] and set the fields you need: new settings may be
/// added, so the struct cannot be built field by field outside this crate.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct RuntimeConfig {
    /// Where compiled code is kept between runs; `None` disables the on-disk cache.
    pub cache_dir: Option<PathBuf>,
    /// Map cached code from its file (shared by every process that loads it, in the page
    /// cache), rather than copy the checked bytes into memory of this process's own. Off
    /// where the process may later be taken over by code that could write the file through
    /// what the mapping keeps open (the containerd shim: the cache is the node's).
    pub map_cached_code: bool,
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
    /// What runs the guests' code: native code (the default), or Pulley bytecode in an
    /// interpreter.
    pub engine: EngineKind,
}

/// What runs the guests' code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum EngineKind {
    /// Cranelift compiles each component to the host's machine code: the fastest.
    #[default]
    Native,
    /// Cranelift compiles each component to Pulley bytecode, which wasmtime's interpreter
    /// runs: no memory is ever made executable, for hosts that forbid JIT code (locked-down
    /// devices, hardened kernels), at some 20 times the CPU for compute-bound code. The same
    /// sandbox: the same limits, deadlines and grants.
    Pulley,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        RuntimeConfig {
            cache_dir: default_cache_dir(),
            map_cached_code: true,
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
            engine: EngineKind::Native,
        }
    }
}

/// `$SKIFF_DATA_DIR`, else `$XDG_DATA_HOME/skiff`, else `~/.local/share/skiff`.
pub fn default_data_dir() -> Option<PathBuf> {
    skiff_dir("SKIFF_DATA_DIR", etcetera::BaseStrategy::data_dir)
}

/// `$SKIFF_CACHE_DIR`, else `$XDG_CACHE_HOME/skiff`, else `~/.cache/skiff`.
pub fn default_cache_dir() -> Option<PathBuf> {
    skiff_dir("SKIFF_CACHE_DIR", etcetera::BaseStrategy::cache_dir)
}

/// The folder `$variable` names, else skiff's folder in the XDG base folder `base` picks (an
/// XDG variable that is not an absolute path is ignored, as the spec says); `None` when there
/// is no home folder either.
fn skiff_dir(
    variable: &str,
    base: fn(&etcetera::base_strategy::Xdg) -> PathBuf,
) -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os(variable) {
        return Some(PathBuf::from(dir));
    }
    let xdg = etcetera::base_strategy::Xdg::new().ok()?;
    Some(base(&xdg).join("skiff"))
}
