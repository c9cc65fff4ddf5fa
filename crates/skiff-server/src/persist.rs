//! The server's small JSON files (tenants, app records), written so that a crash at any moment
//! leaves either the old file or the new one, never half of one.

use std::io::Write;
use std::path::Path;

use serde::Serialize;
use serde::de::DeserializeOwned;

/// Reads a JSON file; `None` if it does not exist.
pub fn read_json<T: DeserializeOwned>(path: &Path) -> Result<Option<T>, String> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(err) => return Err(format!("cannot read {}: {err}", path.display())),
    };
    serde_json::from_str(&text).map(Some).map_err(|err| {
        format!(
            "{} is damaged ({err}); restore it from a backup or remove it",
            path.display()
        )
    })
}

/// Writes a JSON file atomically: a temporary file beside it, synced, then renamed over it.
pub fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<(), String> {
    let fail = |err: std::io::Error| format!("cannot write {}: {err}", path.display());
    let text = serde_json::to_vec_pretty(value).map_err(|err| err.to_string())?;
    let temporary = path.with_extension("json.tmp");
    let mut file = std::fs::File::create(&temporary).map_err(fail)?;
    file.write_all(&text).map_err(fail)?;
    file.sync_all().map_err(fail)?;
    std::fs::rename(&temporary, path).map_err(fail)?;
    // The rename is durable only once the folder holding it is synced.
    sync_folder(path).map_err(fail)
}

/// Syncs the folder holding `path`, so that a file created, renamed or removed there stays so
/// after a crash.
pub fn sync_folder(path: &Path) -> std::io::Result<()> {
    match path.parent() {
        Some(parent) => std::fs::File::open(parent)?.sync_all(),
        None => Ok(()),
    }
}

pub fn now_rfc3339() -> String {
    humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string()
}
