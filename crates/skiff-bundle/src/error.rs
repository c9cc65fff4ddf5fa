//! The errors of packing, unpacking and confining, each worded for the person who deploys.

use std::io;
use std::path::PathBuf;

use skiff_manifest::{ManifestError, format_size};

/// Why a bundle could not be packed or unpacked. Each message is meant for the person who
/// deploys: it names the component, file or archive entry, and says what to do. Messages from
/// [`unpack`](crate::unpack) name entries by their path in the bundle, never by a path on the server.
#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    /// The manifest is invalid; the report is printed as the manifest crate wrote it.
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    /// The manifest references a file outside the app folder, directly or through a symlink.
    #[error(
        "{what} `{path}` is outside the app folder `{root}` (it resolves to `{resolved}`); a \
         bundle holds only what lies under the folder of the manifest: {fix}",
        path = path.display(),
        root = root.display(),
        resolved = resolved.display()
    )]
    Outside {
        /// E.g. "component `web` source".
        what: String,
        path: PathBuf,
        resolved: PathBuf,
        root: PathBuf,
        fix: &'static str,
    },
    /// Something under the app folder cannot go in a bundle (a FIFO, a symlink loop, a name
    /// the server would refuse, ...).
    #[error("cannot pack `{path}`: {reason}", path = path.display())]
    CannotPack { path: PathBuf, reason: String },
    #[error("cannot {op} `{path}`: {source}", path = path.display())]
    Io {
        /// What was being done, e.g. "read", "write", "create the folder".
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(
        "the upload is not a bundle: a bundle is a tar, tar.gz or zip archive (as made by \
         `skiff deploy`)"
    )]
    UnknownFormat,
    /// The archive is damaged or truncated; the message says where.
    #[error("the bundle is damaged: {0}; pack and upload it again (e.g. with `skiff deploy`)")]
    Corrupt(String),
    #[error(
        "the bundle entry `{entry}` is refused: {reason}; a bundle holds only plain files and \
         folders under its root (as made by `skiff deploy`)"
    )]
    UnsafeEntry { entry: String, reason: EntryProblem },
    #[error(
        "the bundle unpacks to more than {}, the most this server accepts; leave build output \
         and other files the manifest does not reference out of it",
        format_size(*limit)
    )]
    TooLarge { limit: u64 },
    #[error(
        "the bundle has more than {limit} entries, the most this server accepts; mount fewer \
         files, or pack many small files into one"
    )]
    TooManyEntries { limit: usize },
    #[error(
        "the bundle has no skiff.toml at its root; pack the app with `skiff deploy` in the \
         folder that holds skiff.toml, or put skiff.toml at the top of the archive, not in a \
         subfolder"
    )]
    NoManifest,
    #[error(
        "the bundle holds `{entry}` more than once; an archive made by `skiff deploy` lists \
         each file once, so pack it again"
    )]
    Duplicate { entry: String },
}

/// Why an archive entry is refused: its name (see [`NameError`]) or its kind.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EntryProblem {
    #[error(transparent)]
    Name(#[from] NameError),
    #[error("its name is not valid UTF-8")]
    NameNotUtf8,
    #[error("a file needs a name")]
    NoFileName,
    /// A tar link names its target; a zip link does not.
    #[error("it is a symbolic link{}", target.as_deref().map(|t| format!(" (to `{t}`)")).unwrap_or_default())]
    Symlink { target: Option<String> },
    #[error("it is a hard link (to `{target}`)")]
    HardLink { target: String },
    #[error("it is a device")]
    Device,
    #[error("it is a FIFO (named pipe)")]
    Fifo,
    #[error("it is a socket")]
    Socket,
    #[error("it is a sparse file")]
    Sparse,
    /// A tar entry type other than file, folder, link or special file (the byte, escaped).
    #[error("its tar entry type `{0}` is not a file or folder")]
    TarType(String),
    #[error("its file type is not a file or folder")]
    NotFileOrFolder,
    #[error("a folder of that name is already in the bundle")]
    FolderExists,
    #[error("it is a file in the bundle, and also a folder")]
    FileAndFolder,
}

/// Why a path cannot be a bundle entry's name: anything that could land outside the destination
/// on any system. [`pack`](crate::pack) checks its own names by the same rules, so the client,
/// not the server, tells of a name the server would refuse.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("its name is empty")]
    Empty,
    #[error("its name holds a NUL byte")]
    Nul,
    #[error("its name holds a backslash (`\\`); bundles separate folders with `/`")]
    Backslash,
    #[error("its path is absolute; entries are relative to the bundle's root")]
    Absolute,
    #[error("its path starts with a Windows drive (like `C:`)")]
    WindowsDrive,
    #[error("its path has a `..` part, which would climb out of the bundle")]
    ParentDir,
    /// Only for names [`pack`](crate::pack) is about to store: they must be written clean.
    #[error("its name has empty or `.` parts")]
    NotClean,
}

/// Why an unpacked app may not be deployed: the manifest names a file outside its bundle.
/// Each message names the component, the field and the path as written, never the server's
/// folder.
#[derive(Debug, thiserror::Error)]
pub enum ConfineError {
    #[error("cannot open the unpacked bundle: {0}")]
    OpenBundle(#[source] io::Error),
    #[error("`{field}` = `{path}` cannot be read: {source}", path = path.display())]
    Unreadable {
        /// E.g. `component.web.source`.
        field: String,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(
        "`{field}` = `{path}` lies outside the bundle; a deployed manifest may name only files \
         in its bundle, written relative to skiff.toml (pack the app with `skiff deploy`, which \
         takes along every file the manifest names)",
        path = path.display()
    )]
    Outside { field: String, path: PathBuf },
}
