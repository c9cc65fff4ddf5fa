//! Skiff apps and Wasm components as OCI artifacts, so they ship through any registry like
//! container images do: CI pushes a digest, every environment pulls the same bytes.
//!
//! Three shapes are pushed ([`Artifact`]): a whole app (its manifest, each component and each
//! set of mounted files a layer of its own, so an unchanged component is never uploaded
//! twice), a single component as the CNCF Wasm artifact (`application/vnd.wasm.config.v0+json`
//! with one `application/wasm` layer, which other tools read too), and an app folder as the one
//! rootfs layer of an ordinary `wasi/wasm` container image, which any containerd unpacks.
//! [`pull`] reads all three (and Wasm artifacts pushed by other tools) into a [`Cache`] keyed by
//! digest, checking every blob's digest and validating an app like a server validates an
//! upload before anything enters the cache. Logins live where docker keeps them
//! ([`CredentialStore`]). `docs/oci.md` lists the media types.
//!
//! The HTTP client is rustls without a built-in crypto provider: the program installs one
//! (skiff installs ring) before the first call.
//!
//! Modules: `reference` (what a reference may be), `media` (media types and JSON documents),
//! `artifact` (building pushes), `registry` (push, pull, login check), `bundles` (a cluster's
//! deployed bundles kept in a registry), `cache`, `credentials`, `error`.

#![forbid(unsafe_code)]
// `OciError::Pack` carries the bundle's report (a manifest error with its snippet) as it is.
#![allow(clippy::result_large_err)]

mod artifact;
mod bundles;
mod cache;
mod credentials;
mod error;
pub mod media;
mod reference;
mod registry;

pub use artifact::{Artifact, ArtifactKind};
pub use bundles::{BUNDLE_ARTIFACT, BUNDLE_LAYER, delete_bundle, pull_bundle, push_bundle};
pub use cache::{Cache, Local};
pub use credentials::{Credential, CredentialStore};
pub use error::OciError;
pub use reference::{ImageRef, is_loopback_host, names_a_registry};
pub use registry::{PullSource, Pulled, Pushed, RegistryOptions, check_login, pull, push};
