//! What can go wrong talking to a registry, each with the reference it was about and the fix.

use std::path::PathBuf;

use skiff_bundle::BundleError;

/// An error of a push, a pull or a login. Each message names the reference or registry and
/// says what to do.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OciError {
    #[error(
        "`{reference}` is not a registry reference: {reason}; write it as \
         HOST[:PORT]/REPOSITORY[:TAG] or HOST[:PORT]/REPOSITORY@sha256:DIGEST, for example \
         localhost:5000/hello:v1"
    )]
    BadReference { reference: String, reason: String },

    #[error(
        "cannot reach the registry {registry}: {detail}; check the address and that the \
         registry is running{hint}"
    )]
    Unreachable {
        registry: String,
        detail: String,
        hint: &'static str,
    },

    #[error(
        "{reference}: the registry {registry} refused access ({detail}); log in with `skiff \
         registry login {registry}` (it reads and writes ~/.docker/config.json, like docker), \
         or check that this account may {action} this repository"
    )]
    Unauthorized {
        reference: String,
        registry: String,
        action: &'static str,
        detail: String,
    },

    #[error(
        "{reference}: not found in the registry (no such repository, tag or digest); check \
         the name and tag, or push it first with `skiff push {reference}`"
    )]
    NotFound { reference: String },

    #[error(
        "{reference} is {what}, neither a skiff app nor a Wasm component; push apps with \
         `skiff push` and components as the CNCF Wasm artifact (config \
         application/vnd.wasm.config.v0+json)"
    )]
    NotSkiff { reference: String, what: String },

    #[error(
        "{reference}: the content of {blob} does not match its digest ({detail}): it was \
         damaged in the registry or on the way. Nothing was cached; push it again"
    )]
    Digest {
        reference: String,
        blob: String,
        detail: String,
    },

    #[error(
        "{reference}: {what} is {size} bytes, more than the {limit} bytes skiff accepts; \
         check that the reference names the app you meant"
    )]
    TooLarge {
        reference: String,
        what: String,
        size: u64,
        limit: u64,
    },

    #[error("{reference} cannot be used as an app: {reason}. Nothing was cached")]
    Invalid { reference: String, reason: String },

    #[error("{reference}: the registry answered with an error: {detail}")]
    Registry { reference: String, detail: String },

    #[error(
        "`{path}` is not a WebAssembly file (it does not start with `\\0asm`); push a \
         compiled .wasm component, or an app folder"
    )]
    NotWasm { path: PathBuf },

    #[error("registry credentials in {path}: {detail}")]
    Credentials { path: PathBuf, detail: String },

    #[error("cannot {op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// The app folder cannot be packed (an invalid manifest, a file outside the folder): the
    /// bundle's own report, as it is.
    #[error(transparent)]
    Pack(#[from] BundleError),
}
