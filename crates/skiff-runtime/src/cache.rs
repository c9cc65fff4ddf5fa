//! The on-disk cache of compiled code, so that compiling (the one slow step: ~10 s for a
//! Python or JavaScript component) happens once per Wasm file and engine, not once per start.
//!
//! An entry is keyed by the BLAKE3 hash of the Wasm bytes together with the engine's
//! compatibility hash and skiff's version, so a changed file, a changed engine setting or a new
//! skiff never loads stale code. Each entry is two files: `KEY.cwasm` (loaded with
//! `deserialize_file`, memory-mapped) and `KEY.b3`, which says what the code was compiled from
//! and by what (the engine's key and the BLAKE3 of the Wasm bytes) and the BLAKE3 of the
//! `.cwasm`. All three are checked before every load: a truncated or flipped file, or an entry
//! renamed or copied from another key, is discarded and rebuilt, never mapped as code.
//! A lock file per key makes concurrent loaders, in this process or another, compile once.
//!
//! The cache is native code that skiff maps and runs, so it must live where no guest can
//! write: the runtime refuses any folder grant that reaches it (see `capabilities::wasi`).
//! Without `map_cached_code`, an entry is not mapped from its file but loaded from the bytes
//! that were checked, so the process keeps no descriptor or mapping of the cache's files
//! (the containerd shim, whose cache is shared by every container of the node).

use std::fs::{self, File};
use std::hash::{Hash, Hasher};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use wasmtime::Engine;

use crate::error::{LoadError, LoadErrorKind};

/// What happened when a piece of code was loaded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheOutcome {
    /// Loaded from the cache: nothing was compiled.
    Hit,
    /// Compiled now (and stored, if the cache is enabled).
    Compiled(Duration),
}

/// Whether the bytes are a component or a core module: they compile and load differently.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CodeKind {
    Component,
    Module,
}

impl CodeKind {
    fn extension(self) -> &'static str {
        match self {
            CodeKind::Component => "component.cwasm",
            CodeKind::Module => "module.cwasm",
        }
    }
}

pub struct CodeCache {
    dir: Option<PathBuf>,
    /// Map entries from their files; else load the very bytes that were checked.
    map_files: bool,
}

impl CodeCache {
    pub(crate) fn new(dir: Option<PathBuf>, map_files: bool) -> Self {
        CodeCache { dir, map_files }
    }

    pub fn dir(&self) -> Option<&Path> {
        self.dir.as_deref()
    }

    /// Compiles `wasm` (read from `path`), or loads its compiled code from the cache.
    pub(crate) fn load<T>(
        &self,
        engine: &Engine,
        path: &Path,
        wasm: &[u8],
        kind: CodeKind,
        deserialize: impl Fn(&Path) -> wasmtime::Result<T>,
        from_bytes: impl Fn(&[u8]) -> wasmtime::Result<T>,
    ) -> Result<(T, CacheOutcome), LoadError> {
        let compile = || -> Result<(Vec<u8>, Duration), LoadError> {
            let started = Instant::now();
            tracing::info!(
                "compiling {} ({:.1} MiB), once; later starts load it from the cache",
                path.display(),
                wasm.len() as f64 / (1024.0 * 1024.0)
            );
            let compiled = match kind {
                CodeKind::Component => engine.precompile_component(wasm),
                CodeKind::Module => engine.precompile_module(wasm),
            }
            .map_err(|err| LoadError::new(path, LoadErrorKind::Invalid(format!("{err:#}"))))?;
            let took = started.elapsed();
            tracing::info!("compiled {} in {:.2?}", path.display(), took);
            Ok((compiled, took))
        };

        let Some(dir) = &self.dir else {
            let (compiled, took) = compile()?;
            let code = from_bytes(&compiled)
                .map_err(|err| LoadError::new(path, LoadErrorKind::Invalid(format!("{err:#}"))))?;
            return Ok((code, CacheOutcome::Compiled(took)));
        };

        let cache_err = |reason: String| {
            LoadError::new(
                path,
                LoadErrorKind::Cache {
                    dir: dir.clone(),
                    reason,
                },
            )
        };
        fs::create_dir_all(dir).map_err(|e| cache_err(format!("cannot create it: {e}")))?;

        // A process has two engines (see `engine.rs`): each one's code is its own.
        let engine_key = engine_key(engine);
        let key = key(&engine_key, wasm);
        let code_path = dir.join(format!("{key}.{}", kind.extension()));
        let sum_path = dir.join(format!("{key}.b3"));
        let lock_path = dir.join(format!("{key}.lock"));

        // Held until this function returns: a second loader of the same code waits here and
        // then finds the entry the first one wrote.
        let lock = File::create(&lock_path)
            .map_err(|e| cache_err(format!("cannot create {}: {e}", lock_path.display())))?;
        lock.lock()
            .map_err(|e| cache_err(format!("cannot lock {}: {e}", lock_path.display())))?;

        let label = label(&engine_key, wasm);
        match verify(&code_path, &sum_path, &label) {
            Entry::Valid(code) => {
                // SAFETY: the file is one we wrote with `precompile_*` of an engine with the
                // same compatibility hash, and its checksum matched just now.
                let loaded = if self.map_files {
                    deserialize(&code_path)
                } else {
                    from_bytes(&code)
                };
                match loaded {
                    Ok(code) => {
                        tracing::debug!(
                            "code cache hit: {} loaded from {}",
                            path.display(),
                            code_path.display()
                        );
                        return Ok((code, CacheOutcome::Hit));
                    }
                    Err(err) => tracing::warn!(
                        "code cache entry {} does not load ({err:#}); rebuilding it",
                        code_path.display()
                    ),
                }
            }
            Entry::Corrupt => tracing::warn!(
                "code cache entry {} is corrupted (checksum mismatch); rebuilding it",
                code_path.display()
            ),
            Entry::Missing => {}
        }
        let _ = fs::remove_file(&code_path);
        let _ = fs::remove_file(&sum_path);

        let (compiled, took) = compile()?;
        let stored = write_atomically(&code_path, &compiled).and_then(|()| {
            let sum = format!("{label} {}", blake3::hash(&compiled).to_hex());
            write_atomically(&sum_path, sum.as_bytes())
        });
        if let Err(err) = stored {
            // A read-only or full disk costs the next start a compile, nothing more.
            tracing::warn!("cannot store compiled code in {}: {err}", dir.display());
            let code = from_bytes(&compiled)
                .map_err(|err| LoadError::new(path, LoadErrorKind::Invalid(format!("{err:#}"))))?;
            return Ok((code, CacheOutcome::Compiled(took)));
        }
        let loaded = if self.map_files {
            deserialize(&code_path)
        } else {
            from_bytes(&compiled)
        };
        let code = loaded
            .map_err(|err| cache_err(format!("freshly written entry does not load: {err:#}")))?;
        Ok((code, CacheOutcome::Compiled(took)))
    }
}

/// What compiled code depends on besides the Wasm bytes: the engine's settings and skiff's
/// version.
fn engine_key(engine: &Engine) -> [u8; 8] {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    engine.precompile_compatibility_hash().hash(&mut hasher);
    env!("CARGO_PKG_VERSION").hash(&mut hasher);
    hasher.finish().to_le_bytes()
}

/// What an entry for `wasm` must say it was compiled from: this engine, these bytes.
fn label(engine_key: &[u8; 8], wasm: &[u8]) -> String {
    format!(
        "engine={} wasm={}",
        hex(engine_key),
        blake3::hash(wasm).to_hex()
    )
}

fn key(engine_key: &[u8; 8], wasm: &[u8]) -> String {
    let mut hasher = blake3::Hasher::new();
    hasher.update(engine_key);
    hasher.update(wasm);
    hasher.finalize().to_hex()[..32].to_string()
}

enum Entry {
    /// Its code, as read and checked.
    Valid(Vec<u8>),
    Corrupt,
    Missing,
}

/// Checks an entry against what it must be: compiled by this engine from these bytes
/// (`label`), and its code intact. Anything else is `Corrupt`: rebuilt, never loaded.
fn verify(code_path: &Path, sum_path: &Path, label: &str) -> Entry {
    let (Ok(code), Ok(sum)) = (fs::read(code_path), fs::read_to_string(sum_path)) else {
        return if code_path.exists() {
            Entry::Corrupt
        } else {
            Entry::Missing
        };
    };
    let Some((written_label, code_sum)) = sum.trim().rsplit_once(' ') else {
        return Entry::Corrupt;
    };
    if written_label == label && blake3::hash(&code).to_hex().as_str() == code_sum {
        Entry::Valid(code)
    } else {
        Entry::Corrupt
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Writes through a temporary file in the same folder and a rename, so a crash mid-write
/// leaves no half file under the final name.
fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let folder = path.parent().unwrap_or(Path::new("."));
    let mut file = tempfile::NamedTempFile::new_in(folder)?;
    file.write_all(bytes)?;
    file.as_file().sync_all()?;
    file.persist(path).map(drop).map_err(|err| err.error)
}
