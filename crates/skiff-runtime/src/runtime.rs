//! [`Runtime`]: everything shared by all apps and units of work of one process, and the
//! entry points of the spine: [`Runtime::load_app`] and [`Runtime::run_command`].

use std::path::Path;
use std::sync::Arc;

use skiff_manifest::App;

use crate::cache::CodeCache;
use crate::capabilities::keyvalue::Backends;
use crate::command::{self, CommandOptions, CommandOutcome};
use crate::config::RuntimeConfig;
use crate::engine::Sandboxes;
use crate::error::LoadError;
use crate::load::{CodeShare, LoadOptions, LoadStats, LoadedApp, Loader};

/// Everything shared by all apps and requests of one process. Cheap to share behind an `Arc`.
pub struct Runtime {
    sandboxes: Arc<Sandboxes>,
    cache: CodeCache,
    config: RuntimeConfig,
    backends: Backends,
    code_share: CodeShare,
    load_stats: LoadStats,
}

impl Runtime {
    pub fn new(config: RuntimeConfig) -> wasmtime::Result<Arc<Runtime>> {
        let sandboxes = Sandboxes::new(&config)?;
        let cache = CodeCache::new(config.cache_dir.clone(), config.map_cached_code);
        Ok(Arc::new(Runtime {
            sandboxes: Arc::new(sandboxes),
            cache,
            config,
            backends: Default::default(),
            code_share: Default::default(),
            load_stats: Default::default(),
        }))
    }

    /// Loads every component of `app`. Code shared by several components, of this app or
    /// any other, is compiled and linked once. The first failure is returned with the index
    /// of its component, so the caller can point at the manifest line.
    pub fn load_app(&self, app: App) -> Result<LoadedApp, LoadError> {
        self.load_app_with(app, &LoadOptions::default())
    }

    /// [`Runtime::load_app`] with per-app options.
    pub fn load_app_with(&self, app: App, options: &LoadOptions) -> Result<LoadedApp, LoadError> {
        Loader {
            sandboxes: &self.sandboxes,
            cache: &self.cache,
            config: &self.config,
            backends: &self.backends,
            code_share: &self.code_share,
            stats: &self.load_stats,
        }
        .load(app, options)
    }

    /// Runs the command at `path` to completion. A load problem (no such file, not Wasm, no
    /// `run` export, an import skiff does not provide) is an `Err`; whatever the guest does is
    /// an outcome.
    pub async fn run_command(
        &self,
        path: &Path,
        options: CommandOptions,
    ) -> Result<CommandOutcome, LoadError> {
        command::run(&self.sandboxes, &self.cache, path, options).await
    }

    /// Interrupts every guest of this runtime that is still running, at its next epoch tick
    /// (their requests fail with [`crate::InvokeError::Stopped`]), and every guest started
    /// afterwards at its first tick. For a host that is shutting down, once the grace period
    /// for requests in flight is over: a guest that computes forever would otherwise keep its
    /// thread, and the process, alive until its deadline, or for ever without one.
    pub fn stop_guests(&self) {
        self.sandboxes.stop_guests();
    }

    pub fn engine(&self) -> &wasmtime::Engine {
        self.sandboxes.engine()
    }

    pub fn cache(&self) -> &CodeCache {
        &self.cache
    }

    pub fn config(&self) -> &RuntimeConfig {
        &self.config
    }

    /// How components got their code so far: shared, from the cache, or compiled.
    pub fn load_stats(&self) -> &LoadStats {
        &self.load_stats
    }

    /// Closes the key-value databases that no loaded app uses (see `Backends::close_unused`);
    /// returns how many. A host that unloads idle apps calls it after each sweep.
    pub fn close_unused_stores(&self) -> usize {
        self.backends.close_unused()
    }

    /// Instances running now, across every app of this runtime.
    pub fn instances_running(&self) -> u32 {
        self.sandboxes.permits.in_use()
    }
}
