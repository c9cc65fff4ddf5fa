//! Typed errors of the runtime. Each names the file or component it is about and, where there
//! is one, the fix; the CLI only adds context.

use std::path::PathBuf;

/// Why a component (or core module) could not be made ready to run.
#[derive(Debug, thiserror::Error)]
#[error("{}: {kind}", path.display())]
pub struct LoadError {
    /// The Wasm file being loaded.
    pub path: PathBuf,
    /// Index of the component in the app's manifest, when loading an app.
    pub component: Option<usize>,
    pub kind: LoadErrorKind,
}

#[derive(Debug, thiserror::Error)]
pub enum LoadErrorKind {
    #[error("cannot read the file: {0}")]
    Read(#[source] std::io::Error),
    #[error("not a WebAssembly file (it does not start with the `\\0asm` magic bytes)")]
    NotWasm,
    #[error("not a valid WebAssembly component or module: {0}")]
    Invalid(String),
    /// A WASI 0.3 component, on a host whose engine for them cannot be made.
    #[error(
        "this component uses WASI 0.3 (component-model async: `stream`, `future`, async \
         exports), which needs skiff's second engine, and {0}"
    )]
    AsyncUnavailable(String),
    /// A component using component-model async in a way wasmtime 48 does not validate.
    #[error(
        "this component uses WASI 0.3 (component-model async), and uses it in a way this \
         skiff (wasmtime 48, WASI 0.3.0) cannot run: {0}"
    )]
    AsyncUnsupported(String),
    /// A manifest setting that this kind of component cannot honour (yet): `field` is the
    /// component's field, which the reason names.
    #[error("{reason}")]
    Unsupported { field: &'static str, reason: String },
    #[error(
        "imports `{import}`, which skiff does not provide ({})",
        import_hint(import)
    )]
    MissingImport { import: String },
    #[error("exports no `{expected}`; {hint}")]
    MissingExport {
        expected: &'static str,
        hint: &'static str,
    },
    #[error("cannot instantiate: {0}")]
    Link(String),
    #[error("cannot grant `{guest}` from `{host}`: {reason}")]
    Grant {
        host: PathBuf,
        guest: String,
        reason: String,
    },
    /// Folder grants that together would let a guest reach what it was not given.
    #[error("{reason}")]
    Folders { reason: String },
    #[error("the code cache at {dir} is unusable: {reason}")]
    Cache { dir: PathBuf, reason: String },
    #[error(
        "sets limits.fuel, but this host was started without fuel metering; \
         start it with fuel metering on (it costs some speed for every guest)"
    )]
    FuelDisabled,
    #[error("cannot open the key-value store `{label}`: {reason}")]
    Store { label: String, reason: String },
    #[error("{reason}")]
    Variables { reason: String },
    /// The component is not of the kind a trigger of it needs (a route of a command, a
    /// queue consumer without the handler): `field` is the manifest table that asks.
    #[error("exports no `{expected}`; {hint}")]
    WrongKind {
        field: &'static str,
        expected: &'static str,
        hint: String,
    },
    /// An upstream's address (written as an IP) that the host's outbound policy does not let
    /// apps reach.
    #[error(
        "`upstream.{upstream}`: {address} is an address this host does not let apps reach: {reason}"
    )]
    Upstream {
        upstream: String,
        address: String,
        reason: &'static str,
    },
    /// An upstream's `tls.ca` file that does not give the certificates to trust.
    #[error(
        "`upstream.{upstream}.tls.ca`: the file {reason}; name a PEM file of the CA \
         certificates the upstream's certificate is signed by, or remove `ca` to trust the \
         usual public roots"
    )]
    UpstreamCa { upstream: String, reason: String },
}

impl LoadError {
    pub(crate) fn new(path: impl Into<PathBuf>, kind: LoadErrorKind) -> Self {
        LoadError {
            path: path.into(),
            component: None,
            kind,
        }
    }

    /// The manifest field of the component (see [`LoadError::component`]) that the error is
    /// about, for pointing at its line.
    pub fn manifest_field(&self) -> &'static str {
        match self.kind {
            LoadErrorKind::Grant { .. } | LoadErrorKind::Folders { .. } => "files",
            LoadErrorKind::Store { .. } => "key_value_stores",
            LoadErrorKind::Variables { .. } => "variables",
            LoadErrorKind::FuelDisabled => "limits.fuel",
            LoadErrorKind::WrongKind { field, .. } | LoadErrorKind::Unsupported { field, .. } => {
                field
            }
            _ => "source",
        }
    }

    /// Turns a wasmtime instantiate-time failure into the most precise error we can name:
    /// a missing import is by far the most common, and deserves to say which one.
    pub(crate) fn from_link(path: impl Into<PathBuf>, err: wasmtime::Error) -> Self {
        let text = format!("{err:#}");
        let kind = match missing_import_name(&text) {
            Some(import) => LoadErrorKind::MissingImport { import },
            None => LoadErrorKind::Link(text),
        };
        LoadError::new(path, kind)
    }
}

/// What to say of an import skiff does not link: which versions of WASI it does link, and
/// for a release candidate of WASI 0.3, what to rebuild with.
fn import_hint(import: &str) -> String {
    const PROVIDED: &str = "skiff provides WASI 0.2 (wasi:cli, wasi:filesystem, wasi:sockets, \
                            wasi:clocks, wasi:random, wasi:io, wasi:http) and WASI 0.3.x \
                            (wasi:cli, wasi:filesystem, wasi:sockets, wasi:clocks, wasi:random, \
                            wasi:http)";
    if import.contains("@0.3.0-rc") || import.contains("@0.3.0-draft") {
        return format!(
            "it is from a release candidate of WASI 0.3, whose interfaces changed before the \
             release and which skiff does not link: rebuild it against the released WASI \
             0.3.0 or later (for Rust, the `wasip3` crate 0.10+ or spin-sdk 7+). {PROVIDED}"
        );
    }
    PROVIDED.to_string()
}

/// wasmtime reports a missing import as "component imports instance `NAME`, but a matching
/// implementation was not found in the linker" (or "... function `NAME` ..."); nested
/// contexts may add a tail. We pull out the first quoted name after "imports".
fn missing_import_name(text: &str) -> Option<String> {
    if !text.contains("matching implementation was not found") {
        return None;
    }
    let after = &text[text.find("imports")?..];
    let start = after.find('`')? + 1;
    let len = after[start..].find('`')?;
    Some(after[start..start + len].to_string())
}

/// Why one unit of work (a request) failed inside the sandbox. The HTTP trigger maps these to
/// status codes; none of them is allowed to take the host down.
#[derive(Debug, thiserror::Error)]
pub enum InvokeError {
    #[error("the component did not finish within its {0:?} deadline")]
    Deadline(std::time::Duration),
    #[error("the component ran out of memory (limit {limit} bytes)")]
    OutOfMemory { limit: u64 },
    #[error("the component used up its fuel budget of {budget}")]
    OutOfFuel { budget: u64 },
    #[error("the component trapped: {0}")]
    Trap(String),
    #[error("the component could not be instantiated: {0}")]
    Instantiate(String),
    #[error("the component returned without sending a response")]
    NoResponse,
    #[error("the component answered with an error: {0}")]
    Guest(String),
    #[error("too many requests in flight for {0}")]
    Overloaded(OverloadScope),
    #[error("the host is shutting down and stopped the component")]
    Stopped,
}

/// Which limit turned a request away.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OverloadScope {
    /// The component's `limits.max_concurrency`.
    Component(u32),
    /// The host's `max_instances`.
    Host(u32),
    /// The tenant's `max_in_flight` quota, shared by all its apps.
    Tenant(u32),
}

impl std::fmt::Display for OverloadScope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            OverloadScope::Component(n) => write!(f, "the component (max_concurrency {n})"),
            OverloadScope::Host(n) => write!(f, "the host (max_instances {n})"),
            OverloadScope::Tenant(n) => write!(f, "the tenant (max_in_flight {n})"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_import_is_named() {
        let text = "component imports instance `wasi:keyvalue/store@0.2.0-draft`, but a matching \
                    implementation was not found in the linker";
        assert_eq!(
            missing_import_name(text).as_deref(),
            Some("wasi:keyvalue/store@0.2.0-draft")
        );
        assert_eq!(missing_import_name("some other failure"), None);
    }
}
