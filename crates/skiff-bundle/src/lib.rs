//! Bundles: an app folder packed for upload to `skiff server`, and unpacked safely there.
//!
//! A bundle holds `skiff.toml` (always at its root, whatever the manifest file was called) and
//! every file the manifest references: each component's `source` and each `files` mount, stored
//! at their paths relative to the manifest's folder, so that the unpacked manifest finds them
//! where it did on the client. Nothing else goes in: build output next to the manifest stays
//! home. [`pack`] is the client's side and writes a deterministic tar.gz; [`unpack`] is the
//! server's and accepts tar.gz, tar or zip from a tenant it must not trust: only plain files and
//! folders, inside the destination, within [`BundleLimits`]. A registry stores a bundle in
//! parts instead (the manifest, each component, each set of files: see [`plan`]), which an
//! [`Unpacker`] puts back together under the same rules. After unpacking, the server loads
//! the manifest like `skiff up` would and calls [`confine`], because a valid manifest may still
//! name files outside the bundle (`source = "/etc/passwd"`).
//!
//! One module per job, all private: `pack`, `unpack`, `confine` (path confinement and the rules
//! for entry names, shared by both sides) and `error`.

// `BundleError::Manifest` carries the manifest's report as is, so the CLI can print it verbatim;
// that makes the error large, but it is returned once per deploy, never on a hot path.
#![allow(clippy::result_large_err)]
#![forbid(unsafe_code)]

mod confine;
mod error;
mod pack;
mod unpack;

#[cfg(test)]
mod tests;

pub use confine::confine;
pub use error::{BundleError, ConfineError, EntryProblem, NameError};
pub use pack::{Packed, Part, PartContent, PartKind, Plan, pack, plan};
pub use unpack::{BundleLimits, Unpacked, Unpacker, unpack};

/// The manifest's name at the root of every bundle, whatever it was called in the app folder.
const MANIFEST: &str = "skiff.toml";
