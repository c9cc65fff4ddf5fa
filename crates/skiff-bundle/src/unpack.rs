//! Unpacking, the server's side: a tar.gz, tar or zip from a tenant it must not trust, written
//! as plain files and folders inside the destination, within [`BundleLimits`].

use std::cell::Cell;
use std::collections::HashSet;
use std::fs;
use std::io::{self, Cursor, Read, Write};
use std::path::{Path, PathBuf};
use std::rc::Rc;

use skiff_manifest::format_size;

use crate::MANIFEST;
use crate::confine::{clean_name, prefixes, shown};
use crate::error::{BundleError, EntryProblem};

/// Limits on what an upload may unpack to. Start from the default and set what you need.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct BundleLimits {
    /// Bytes of file content, counted as written (not as the archive claims).
    pub max_unpacked_bytes: u64,
    /// Archive entries of any kind, folders included.
    pub max_entries: usize,
}

impl BundleLimits {
    /// Limits of `max_unpacked_bytes` of content in at most `max_entries` entries.
    pub const fn new(max_unpacked_bytes: u64, max_entries: usize) -> Self {
        BundleLimits {
            max_unpacked_bytes,
            max_entries,
        }
    }
}

impl Default for BundleLimits {
    fn default() -> Self {
        BundleLimits::new(1 << 30, 10_000)
    }
}

/// What [`unpack`] wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unpacked {
    /// Regular files written.
    pub files: usize,
    /// Bytes written to them.
    pub unpacked_bytes: u64,
    /// `dest/skiff.toml`.
    pub manifest_path: PathBuf,
}

/// Unpacks `bytes` into `dest`, an existing, empty folder.
///
/// The format is sniffed from the bytes: gzip holding a tar, a plain tar, or zip. The archive
/// comes from a tenant and is treated as hostile: only regular files and folders are written
/// (links, devices and FIFOs are refused, naming the entry); names must be relative, without
/// `..`, backslashes or drive prefixes; a name may appear once; nothing is written through an
/// existing symlink or outside `dest`; files get mode 0o644 and folders 0o755 whatever the
/// archive says. Unpacking stops as soon as more than `limits.max_unpacked_bytes` have been
/// written (counted as written, so a header or zip directory that understates a size does not
/// help) or the archive has more than `limits.max_entries` entries.
///
/// On error, `dest` may hold part of the bundle; the caller removes it.
pub fn unpack(bytes: &[u8], dest: &Path, limits: &BundleLimits) -> Result<Unpacked, BundleError> {
    let mut unpacker = Unpacker::new(dest, limits)?;
    unpacker.archive(bytes)?;
    unpacker.finish()
}

/// Unpacks a bundle that arrives in parts (as a registry stores it: the manifest, each
/// component and each set of files on its own) into one folder, with every rule and limit of
/// [`unpack`] applied across all the parts together: a name may appear once in the whole
/// bundle, and the limits count everything.
pub struct Unpacker<'a> {
    sink: Sink<'a>,
}

impl<'a> Unpacker<'a> {
    /// Starts unpacking into `dest`, an existing, empty folder.
    pub fn new(dest: &'a Path, limits: &'a BundleLimits) -> Result<Self, BundleError> {
        let not_empty = fs::read_dir(dest)
            .map_err(|source| BundleError::Io {
                op: "open the destination folder",
                path: PathBuf::from("."),
                source,
            })?
            .next()
            .is_some();
        if not_empty {
            return Err(BundleError::Io {
                op: "unpack into",
                path: PathBuf::from("."),
                source: io::Error::other("the destination folder is not empty"),
            });
        }
        Ok(Unpacker {
            sink: Sink {
                dest,
                limits,
                seen: HashSet::new(),
                entries: 0,
                files: 0,
                bytes: 0,
                buf: vec![0; 64 * 1024],
                folders: Vec::new(),
            },
        })
    }

    /// Writes one file at `name`, a path of the bundle checked like an archive entry's.
    pub fn file(&mut self, name: &str, bytes: &[u8]) -> Result<(), BundleError> {
        self.sink.count_entry()?;
        self.sink.file(name, bytes.len() as u64, &mut &bytes[..])
    }

    /// Unpacks an archive (tar.gz, tar or zip, sniffed from the bytes) whose names are paths
    /// of the bundle.
    pub fn archive(&mut self, bytes: &[u8]) -> Result<(), BundleError> {
        let sink = &mut self.sink;
        match sniff(bytes) {
            Format::TarGz => unpack_tar(flate2::read::MultiGzDecoder::new(bytes), "tar.gz", sink),
            Format::Tar => unpack_tar(bytes, "tar", sink),
            Format::Zip => unpack_zip(bytes, sink),
            Format::Unknown => Err(BundleError::UnknownFormat),
        }
    }

    /// Makes what was written durable and checks that the bundle has its `skiff.toml`.
    pub fn finish(self) -> Result<Unpacked, BundleError> {
        let sink = self.sink;
        sink.sync_folders()?;
        let manifest_path = sink.dest.join(MANIFEST);
        match fs::symlink_metadata(&manifest_path) {
            Ok(meta) if meta.is_file() => Ok(Unpacked {
                files: sink.files,
                unpacked_bytes: sink.bytes,
                manifest_path,
            }),
            _ => Err(BundleError::NoManifest),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    TarGz,
    Tar,
    Zip,
    Unknown,
}

fn sniff(bytes: &[u8]) -> Format {
    if bytes.starts_with(&[0x1f, 0x8b]) {
        Format::TarGz
    } else if bytes.starts_with(b"PK\x03\x04") || bytes.starts_with(b"PK\x05\x06") {
        Format::Zip
    } else if bytes.len() >= 512 && (&bytes[257..262] == b"ustar" || tar_checksum_ok(&bytes[..512]))
    {
        Format::Tar
    } else {
        Format::Unknown
    }
}

/// Whether `block` is a pre-POSIX tar header: no magic, but a checksum that adds up.
fn tar_checksum_ok(block: &[u8]) -> bool {
    let field = &block[148..156];
    let digits: String = field
        .iter()
        .map(|&b| b as char)
        .filter(|c| !matches!(c, ' ' | '\0'))
        .collect();
    let Ok(stored) = u32::from_str_radix(&digits, 8) else {
        return false;
    };
    let sum: u32 = block[..148]
        .iter()
        .chain(&block[156..])
        .map(|&b| u32::from(b))
        .sum::<u32>()
        + 8 * u32::from(b' ');
    !digits.is_empty() && sum == stored && block.iter().any(|&b| b != 0)
}

/// The most a tar header, with its GNU long-name or PAX extension, may take. The tar reader
/// reads extensions into memory whole, so without this a gzip bomb in a "long name" would
/// exhaust memory before any file is written.
const HEADER_BUDGET: u64 = 1 << 20;

/// Counts what the tar reader takes from the decompressed stream, and fails once the current
/// allowance is spent.
struct Budgeted<R> {
    inner: R,
    left: Rc<Cell<u64>>,
}

impl<R: Read> Read for Budgeted<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let left = self.left.get();
        if left == 0 && !buf.is_empty() {
            return Err(io::Error::other("over budget"));
        }
        let want = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
        let n = self.inner.read(&mut buf[..want])?;
        self.left.set(left - n as u64);
        Ok(n)
    }
}

fn unpack_tar<R: Read>(reader: R, format: &str, sink: &mut Sink) -> Result<(), BundleError> {
    let left = Rc::new(Cell::new(HEADER_BUDGET));
    let mut archive = tar::Archive::new(Budgeted {
        inner: reader,
        left: left.clone(),
    });
    let damaged = |e: io::Error, left: &Cell<u64>| {
        if left.get() == 0 {
            BundleError::Corrupt(format!(
                "a {format} header (with its long name or PAX extension) is larger than {}",
                format_size(HEADER_BUDGET)
            ))
        } else {
            BundleError::Corrupt(format!("the {format} cannot be read: {e}"))
        }
    };
    let mut entries = archive.entries().map_err(|e| damaged(e, &left))?;
    loop {
        left.set(HEADER_BUDGET);
        let mut entry = match entries.next() {
            None => break,
            Some(Ok(entry)) => entry,
            Some(Err(e)) => return Err(damaged(e, &left)),
        };
        // The entry reader stops at the size in the header, which `Sink::file` checks first.
        left.set(u64::MAX);
        sink.count_entry()?;
        let raw = entry.path_bytes().into_owned();
        let name = String::from_utf8(raw).map_err(|e| BundleError::UnsafeEntry {
            entry: shown(&String::from_utf8_lossy(e.as_bytes())),
            reason: EntryProblem::NameNotUtf8,
        })?;
        let unsafe_entry = |reason: EntryProblem| BundleError::UnsafeEntry {
            entry: shown(&name),
            reason,
        };
        let kind = entry.header().entry_type();
        match kind {
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                let declared = entry.size();
                sink.file(&name, declared, &mut entry)?;
            }
            tar::EntryType::Directory => sink.dir(&name)?,
            // Global PAX headers (as `git archive` writes) only set defaults for later entries.
            tar::EntryType::XGlobalHeader => {}
            tar::EntryType::Symlink => {
                let target = entry
                    .link_name_bytes()
                    .map(|t| shown(&String::from_utf8_lossy(&t)))
                    .unwrap_or_default();
                return Err(unsafe_entry(EntryProblem::Symlink {
                    target: Some(target),
                }));
            }
            tar::EntryType::Link => {
                let target = entry
                    .link_name_bytes()
                    .map(|t| shown(&String::from_utf8_lossy(&t)))
                    .unwrap_or_default();
                return Err(unsafe_entry(EntryProblem::HardLink { target }));
            }
            tar::EntryType::Char | tar::EntryType::Block => {
                return Err(unsafe_entry(EntryProblem::Device));
            }
            tar::EntryType::Fifo => {
                return Err(unsafe_entry(EntryProblem::Fifo));
            }
            tar::EntryType::GNUSparse => {
                return Err(unsafe_entry(EntryProblem::Sparse));
            }
            other => {
                return Err(unsafe_entry(EntryProblem::TarType(
                    (other.as_byte() as char).escape_default().to_string(),
                )));
            }
        }
    }
    Ok(())
}

fn unpack_zip(bytes: &[u8], sink: &mut Sink) -> Result<(), BundleError> {
    // The zip reader builds a record for every entry of the central directory as it opens
    // the archive: the count it will read is checked first, so a bundle that claims millions
    // of entries costs nothing.
    let listed = zip_listed_entries(bytes).ok_or_else(|| {
        BundleError::Corrupt("the zip has no readable end-of-central-directory record".into())
    })?;
    if listed > sink.limits.max_entries as u64 {
        return Err(BundleError::TooManyEntries {
            limit: sink.limits.max_entries,
        });
    }
    let mut archive = zip::ZipArchive::new(Cursor::new(bytes))
        .map_err(|e| BundleError::Corrupt(format!("the zip cannot be read: {e}")))?;
    // The zip reader keys entries by name, so a name listed twice silently becomes one entry;
    // the count in the end record still tells.
    if listed != archive.len() as u64 {
        return Err(BundleError::Corrupt(format!(
            "the zip lists {listed} entries but only {} distinct names, so some name is \
             listed more than once",
            archive.len()
        )));
    }
    for index in 0..archive.len() {
        sink.count_entry()?;
        let name = archive
            .name_for_index(index)
            .unwrap_or_default()
            .to_string();
        let mut file = archive
            .by_index(index)
            .map_err(|e| BundleError::Corrupt(format!("`{}` cannot be read: {e}", shown(&name))))?;
        let kind = file.unix_mode().map_or(0, |mode| mode & 0o170_000);
        let unsafe_entry = |reason: EntryProblem| BundleError::UnsafeEntry {
            entry: shown(&name),
            reason,
        };
        match kind {
            0o120_000 => return Err(unsafe_entry(EntryProblem::Symlink { target: None })),
            0o020_000 | 0o060_000 => return Err(unsafe_entry(EntryProblem::Device)),
            0o010_000 => return Err(unsafe_entry(EntryProblem::Fifo)),
            0o140_000 => return Err(unsafe_entry(EntryProblem::Socket)),
            0o040_000 => sink.dir(&name)?,
            _ if file.is_dir() => sink.dir(&name)?,
            0 | 0o100_000 => {
                let declared = file.size();
                sink.file(&name, declared, &mut file)?;
            }
            _ => return Err(unsafe_entry(EntryProblem::NotFileOrFolder)),
        }
    }
    Ok(())
}

/// The entry count in the zip's end-of-central-directory record, or in the zip64 record it
/// defers to. `None` if neither can be found.
fn zip_listed_entries(bytes: &[u8]) -> Option<u64> {
    const END: &[u8] = b"PK\x05\x06";
    // The record is 22 bytes plus a comment of at most 65535; the last consistent one wins.
    let floor = bytes.len().saturating_sub(22 + 65_535);
    let mut at = bytes.len().checked_sub(22)?;
    loop {
        if &bytes[at..at + 4] == END {
            let comment = u16::from_le_bytes([bytes[at + 20], bytes[at + 21]]) as usize;
            if at + 22 + comment == bytes.len() {
                let total = u16::from_le_bytes([bytes[at + 10], bytes[at + 11]]);
                if total != u16::MAX {
                    return Some(u64::from(total));
                }
                return zip64_listed_entries(bytes, at);
            }
        }
        if at == floor {
            return None;
        }
        at -= 1;
    }
}

/// The entry count of a zip64 archive: its locator sits right before the end record (at
/// `end`) and points at the zip64 end record, which holds the count as 8 bytes at 32.
fn zip64_listed_entries(bytes: &[u8], end: usize) -> Option<u64> {
    let le64 = |at: usize| -> Option<u64> {
        Some(u64::from_le_bytes(bytes.get(at..at + 8)?.try_into().ok()?))
    };
    let locator = end.checked_sub(20)?;
    if bytes.get(locator..locator + 4)? != b"PK\x06\x07" {
        return None;
    }
    let record = usize::try_from(le64(locator + 8)?).ok()?;
    if bytes.get(record..record + 4)? != b"PK\x06\x06" {
        return None;
    }
    le64(record + 32)
}

/// Writes entries under `dest`, enforcing the rules and limits common to all formats.
struct Sink<'a> {
    dest: &'a Path,
    limits: &'a BundleLimits,
    /// Cleaned names of the entries seen so far.
    seen: HashSet<String>,
    entries: usize,
    files: usize,
    bytes: u64,
    buf: Vec<u8>,
    /// Folders created, to be synced once every entry is in: a version is made live only
    /// after unpacking, so its files must be on disk before the record that names them.
    folders: Vec<String>,
}

impl Sink<'_> {
    /// Makes the names of everything unpacked durable (each file's data was synced as it was
    /// written): the folders, deepest first, then the destination itself.
    fn sync_folders(&self) -> Result<(), BundleError> {
        for rel in self.folders.iter().rev() {
            sync_dir(&self.dest.join(rel)).map_err(|source| io_at("sync", rel, source))?;
        }
        sync_dir(self.dest).map_err(|source| io_at("sync", ".", source))
    }

    fn count_entry(&mut self) -> Result<(), BundleError> {
        self.entries += 1;
        if self.entries > self.limits.max_entries {
            return Err(BundleError::TooManyEntries {
                limit: self.limits.max_entries,
            });
        }
        Ok(())
    }

    /// Checks `raw` and returns its cleaned form (`a/b`), refusing a repeat.
    fn claim(&mut self, raw: &str) -> Result<String, BundleError> {
        let name = clean_name(raw).map_err(|reason| BundleError::UnsafeEntry {
            entry: shown(raw),
            reason: reason.into(),
        })?;
        if !name.is_empty() && !self.seen.insert(name.clone()) {
            return Err(BundleError::Duplicate {
                entry: shown(&name),
            });
        }
        Ok(name)
    }

    fn dir(&mut self, raw: &str) -> Result<(), BundleError> {
        // `./` (as `tar -C app .` writes first) is the root itself.
        let name = self.claim(raw)?;
        for prefix in prefixes(&name) {
            self.make_dir(&prefix)?;
        }
        Ok(())
    }

    fn file(&mut self, raw: &str, declared: u64, data: &mut dyn Read) -> Result<(), BundleError> {
        let name = self.claim(raw)?;
        if name.is_empty() {
            return Err(BundleError::UnsafeEntry {
                entry: shown(raw),
                reason: EntryProblem::NoFileName,
            });
        }
        let too_large = BundleError::TooLarge {
            limit: self.limits.max_unpacked_bytes,
        };
        // Refuse early what the header already admits to; what it hides is caught below.
        if declared > self.limits.max_unpacked_bytes - self.bytes {
            return Err(too_large);
        }
        let parents = prefixes(&name);
        for prefix in &parents[..parents.len() - 1] {
            self.make_dir(prefix)?;
        }
        let path = self.dest.join(&name);
        let mut options = fs::OpenOptions::new();
        // `create_new` fails on any existing name, a symlink included, so nothing is written
        // through a link or over an earlier entry.
        options.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o644);
        let mut out = match options.open(&path) {
            Ok(out) => out,
            // Two different names can meet here on a file system that ignores case.
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                return Err(if path.is_dir() {
                    BundleError::UnsafeEntry {
                        entry: shown(&name),
                        reason: EntryProblem::FolderExists,
                    }
                } else {
                    BundleError::Duplicate {
                        entry: shown(&name),
                    }
                });
            }
            Err(source) => return Err(io_at("write", &name, source)),
        };
        // The umask may have taken bits away; the rule is exactly 0o644.
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            out.set_permissions(fs::Permissions::from_mode(0o644))
                .map_err(|source| io_at("write", &name, source))?;
        }
        loop {
            let n = match data.read(&mut self.buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    return Err(BundleError::Corrupt(format!(
                        "`{}` cannot be read: {e}",
                        shown(&name)
                    )));
                }
            };
            self.bytes += n as u64;
            if self.bytes > self.limits.max_unpacked_bytes {
                return Err(BundleError::TooLarge {
                    limit: self.limits.max_unpacked_bytes,
                });
            }
            out.write_all(&self.buf[..n])
                .map_err(|source| io_at("write", &name, source))?;
        }
        out.sync_all()
            .map_err(|source| io_at("sync", &name, source))?;
        self.files += 1;
        Ok(())
    }

    /// Creates the folder `rel` (its parent exists), or accepts it if it is already a real
    /// folder; a file or symlink in the way is refused, never followed.
    fn make_dir(&mut self, rel: &str) -> Result<(), BundleError> {
        let path = self.dest.join(rel);
        let mut builder = fs::DirBuilder::new();
        #[cfg(unix)]
        std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o755);
        match builder.create(&path) {
            Ok(()) => {
                #[cfg(unix)]
                {
                    use std::os::unix::fs::PermissionsExt;
                    fs::set_permissions(&path, fs::Permissions::from_mode(0o755))
                        .map_err(|source| io_at("create the folder", rel, source))?;
                }
                self.folders.push(rel.to_string());
                Ok(())
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                match fs::symlink_metadata(&path) {
                    Ok(meta) if meta.file_type().is_dir() => Ok(()),
                    _ => Err(BundleError::UnsafeEntry {
                        entry: shown(rel),
                        reason: EntryProblem::FileAndFolder,
                    }),
                }
            }
            Err(source) => Err(io_at("create the folder", rel, source)),
        }
    }
}

fn sync_dir(path: &Path) -> io::Result<()> {
    fs::File::open(path)?.sync_all()
}

/// An I/O error while unpacking, naming the entry by its path in the bundle.
fn io_at(op: &'static str, rel: &str, source: io::Error) -> BundleError {
    BundleError::Io {
        op,
        path: PathBuf::from(rel),
        source,
    }
}
