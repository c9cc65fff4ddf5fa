//! The compiled-code cache the shim keeps on the node, so a container starts from code
//! compiled once per component (keyed by the Wasm's hash and the engine) instead of compiling
//! it on every start (~150 ms for the hello app, seconds for a Python one).
//!
//! The cache is native code every container on the node maps and runs, so no guest may ever be
//! able to write it. The container's process cannot see the node's folders at all: it reaches
//! the cache only through a descriptor of the folder that the shim's process on the node opens
//! before any container exists (the container's process is forked from it, without exec, and
//! inherits it), as `/proc/self/fd/N`. The process closes that descriptor once its app is
//! loaded, before any guest runs, and loads its code from the bytes it checked rather than
//! mapping the cache's files (`RuntimeConfig::map_cached_code`), whose descriptors could be
//! reopened for writing through `/proc/self/fd`: from then on nothing in the container can
//! reach the cache, even code that escaped a guest's sandbox. Until then only the shim's own
//! code runs there, compiling the image's components with the engine, which is made to take
//! hostile Wasm.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::fs::DirBuilderExt;
use std::path::PathBuf;
use std::sync::Mutex;

/// Where the cache is when containerd's environment does not say (`SKIFF_SHIM_CACHE_DIR`,
/// or `off`).
const DEFAULT_DIR: &str = "/var/lib/skiff/shim-cache";

static FOLDER: Mutex<Option<File>> = Mutex::new(None);

/// Opens (creating it, private to root) the cache folder. Called in the shim's process on the
/// node, before it starts any container; a folder that cannot be opened means no cache.
pub fn open_on_node() {
    // containerd also runs the binary to start the shim's daemon (`start`) and to clean up
    // after it (`delete`); only the daemon starts containers. `-v` prints the version.
    let not_the_daemon = std::env::args()
        .skip(1)
        .any(|arg| matches!(arg.as_str(), "start" | "delete" | "-v" | "--version"));
    if not_the_daemon {
        return;
    }
    let dir = match std::env::var_os("SKIFF_SHIM_CACHE_DIR") {
        Some(dir) if dir == "off" => return,
        Some(dir) if !dir.is_empty() => PathBuf::from(dir),
        _ => PathBuf::from(DEFAULT_DIR),
    };
    let opened = std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&dir)
        .and_then(|()| File::open(&dir));
    match (opened, FOLDER.lock()) {
        (Ok(folder), Ok(mut slot)) => *slot = Some(folder),
        (Err(err), _) => eprintln!(
            "skiff shim: no compiled-code cache: cannot open {}: {err}",
            dir.display()
        ),
        (_, Err(_)) => {}
    }
}

/// The cache folder as the container's process reaches it, while it is still open.
pub fn path_in_container() -> Option<PathBuf> {
    let slot = FOLDER.lock().ok()?;
    let folder = slot.as_ref()?;
    Some(PathBuf::from(format!(
        "/proc/self/fd/{}",
        folder.as_raw_fd()
    )))
}

/// Closes the descriptor for good: call before any guest runs.
pub fn close() {
    if let Ok(mut slot) = FOLDER.lock() {
        slot.take();
    }
}
