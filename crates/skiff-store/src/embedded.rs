//! The embedded backend, skiff's default: every namespace lives in one redb database file in
//! skiff's data folder, so a single host needs no server to keep state.
//!
//! Why redb rather than SQLite: it is pure Rust (no C toolchain, nothing to link), it keeps
//! everything in one file, its MVCC lets readers run beside the writer without blocking it, and a
//! committed write transaction is durable (`Durability::Immediate`, redb's default, fsyncs before
//! `commit` returns), so a write that returned to the guest survives `kill -9`.
//!
//! Layout: one table keyed by the tuple `(namespace, key)`. Tuples order by their first field
//! first, so the keys of a namespace are one contiguous, sorted range: namespaces cannot see each
//! other's keys, and listing is a range scan.
//!
//! Writes go through one writer thread that commits them in groups: it takes every write that is
//! waiting, applies them in order in one transaction, commits once, then answers each. redb
//! serialises write transactions anyway, and each commit costs an fsync (milliseconds on a
//! disk), so committing one write per transaction would cap the backend at a few hundred writes a
//! second; grouped, concurrent writers share the fsync. `increment` and `compare_and_swap` read
//! and write inside that one transaction, after every write queued before them, so they are
//! atomic. Reads run on tokio's blocking pool, each in its own read transaction (a consistent
//! snapshot), and never wait for the writer.
//!
//! redb lets one process open a database file at a time (it locks the file); a second skiff
//! pointed at the same data folder gets [`StoreError::Unavailable`] naming the file. Hosts that
//! must share state use the Redis backend.
//!
//! List cursors: keys come back in sorted order. A cursor packs two things into its `u64`: a
//! token (high 32 bits) naming the last key returned, which the backend remembers in memory for
//! its [`MAX_LIVE_CURSORS`] most recent pages, and the number of keys returned so far (low 32
//! bits). A remembered token resumes just after that key, so a listing returns every key that
//! exists throughout it exactly once, whatever is written meanwhile, and each page costs one
//! B-tree seek. A token the backend no longer remembers (evicted, or skiff restarted) falls back
//! to skipping that many keys from the start of the namespace: still a complete listing if the
//! namespace did not change, and never an error. A cursor with a zero token is a plain offset.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError, mpsc};
use std::thread::JoinHandle;

use redb::{
    Database, DatabaseError, ReadOnlyTable, ReadableDatabase, ReadableTable, Table, TableDefinition,
};
use tokio::sync::oneshot;

use crate::{
    Backend, KeyPage, LIST_PAGE_KEYS, Store, StoreError, check_key, check_value, parse_counter,
};

/// The one table: `(namespace, key) -> value`.
const KV: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("kv");

/// How many list cursors the backend remembers (see the module docs). Each holds one key, at most
/// 4 KiB, so this bounds the memory a guest can pin by starting listings and abandoning them.
pub const MAX_LIVE_CURSORS: usize = 1024;

/// A group commit stops taking more writes past this many, or past this many value bytes, so
/// one commit's memory and latency stay bounded under a flood of writes.
const MAX_GROUP_WRITES: usize = 1024;
const MAX_GROUP_BYTES: usize = 64 << 20;

/// The embedded backend: one redb database file. Cheap to clone; the file is closed when the last
/// clone and the last [`Store`] opened from it are dropped.
#[derive(Clone)]
pub struct EmbeddedBackend {
    shared: Arc<Shared>,
}

struct Shared {
    path: PathBuf,
    db: Arc<Database>,
    // Options so that Drop can close the channel first and then wait for the writer to finish
    // its last group, before the database is closed.
    writes: Option<mpsc::Sender<WriteJob>>,
    writer: Option<JoinHandle<()>>,
    cursors: Mutex<Cursors>,
}

impl EmbeddedBackend {
    /// Opens the database file at `path`, creating it and its parent folders if missing.
    ///
    /// Fails with [`StoreError::Unavailable`] if another process (or another `EmbeddedBackend`
    /// in this one) has the file open, or if the file cannot be created or is not a redb
    /// database.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(|e| {
                StoreError::Unavailable(format!(
                    "cannot create the folder {} for the key-value database: {e}",
                    parent.display()
                ))
            })?;
        }
        let db = Database::create(path).map_err(|e| match e {
            DatabaseError::DatabaseAlreadyOpen => StoreError::Unavailable(format!(
                "the key-value database {} is in use by another process (or already open in \
                 this one): only one skiff at a time can use an embedded database file; stop \
                 the other one, give this one another data folder, or use a Redis store to \
                 share state between hosts",
                path.display()
            )),
            other => StoreError::Unavailable(format!(
                "cannot open the key-value database {}: {other}",
                path.display()
            )),
        })?;
        // Create the table now, so that readers never meet a database without it.
        let create = || -> Result<(), redb::Error> {
            let txn = db.begin_write()?;
            txn.open_table(KV)?;
            txn.commit()?;
            Ok(())
        };
        create().map_err(|e| {
            StoreError::Unavailable(format!(
                "cannot initialise the key-value database {}: {e}",
                path.display()
            ))
        })?;

        let db = Arc::new(db);
        let (writes, jobs) = mpsc::channel();
        let writer_db = db.clone();
        let writer = std::thread::Builder::new()
            .name("skiff-store-writer".into())
            .spawn(move || run_writer(&writer_db, &jobs))
            .map_err(|e| {
                StoreError::Unavailable(format!("cannot start the database writer thread: {e}"))
            })?;
        Ok(Self {
            shared: Arc::new(Shared {
                path: path.to_owned(),
                db,
                writes: Some(writes),
                writer: Some(writer),
                cursors: Mutex::new(Cursors::default()),
            }),
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.shared.path
    }
}

impl fmt::Debug for EmbeddedBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EmbeddedBackend")
            .field("path", &self.shared.path)
            .finish()
    }
}

impl Drop for Shared {
    fn drop(&mut self) {
        // Closing the channel ends the writer once it has committed what it holds; waiting for
        // it means that when the last handle is gone the file is closed too, so it can be
        // reopened at once (redb refuses a second open while the first one lives).
        drop(self.writes.take());
        if let Some(writer) = self.writer.take() {
            let _ = writer.join();
        }
    }
}

impl Backend for EmbeddedBackend {
    fn open(&self, namespace: &str) -> Arc<dyn Store> {
        Arc::new(EmbeddedStore {
            shared: self.shared.clone(),
            namespace: namespace.into(),
        })
    }

    fn in_use(&self) -> bool {
        // Every store holds the shared state; so does this backend and each of its clones.
        Arc::strong_count(&self.shared) > 1
    }
}

struct EmbeddedStore {
    shared: Arc<Shared>,
    namespace: Arc<str>,
}

type KvTable = ReadOnlyTable<(&'static str, &'static str), &'static [u8]>;

impl EmbeddedStore {
    /// Runs `f` on a read snapshot, on the blocking pool (redb's calls block on file I/O).
    async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&KvTable, &str) -> Result<T, redb::StorageError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let shared = self.shared.clone();
        let namespace = self.namespace.clone();
        tokio::task::spawn_blocking(move || {
            let snapshot = || -> Result<T, redb::Error> {
                let txn = shared.db.begin_read()?;
                let table = txn.open_table(KV)?;
                Ok(f(&table, &namespace)?)
            };
            snapshot().map_err(|e| shared.failed(e))
        })
        .await
        .map_err(|e| StoreError::Unavailable(format!("the database read task failed: {e}")))?
    }

    /// Queues a write for the writer thread and waits for its group to commit.
    async fn write(&self, op: WriteOp) -> Result<Reply, StoreError> {
        let (reply, answer) = oneshot::channel();
        let job = WriteJob {
            namespace: self.namespace.clone(),
            op,
            reply,
        };
        let stopped = || StoreError::Unavailable("the database writer has stopped".into());
        let writes = self.shared.writes.as_ref().ok_or_else(stopped)?;
        writes.send(job).map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }
}

impl Shared {
    fn failed(&self, e: impl fmt::Display) -> StoreError {
        StoreError::Unavailable(format!(
            "the key-value database {} failed: {e}",
            self.path.display()
        ))
    }
}

#[async_trait::async_trait]
impl Store for EmbeddedStore {
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        check_key(key)?;
        let key = key.to_owned();
        self.read(move |table, ns| Ok(table.get((ns, key.as_str()))?.map(|v| v.value().to_vec())))
            .await
    }

    async fn set(&self, key: &str, value: &[u8]) -> Result<(), StoreError> {
        check_key(key)?;
        check_value(value)?;
        self.write(WriteOp::Set(key.to_owned(), value.to_vec()))
            .await
            .map(drop)
    }

    async fn delete(&self, key: &str) -> Result<(), StoreError> {
        check_key(key)?;
        self.write(WriteOp::Delete(vec![key.to_owned()]))
            .await
            .map(drop)
    }

    async fn exists(&self, key: &str) -> Result<bool, StoreError> {
        check_key(key)?;
        let key = key.to_owned();
        self.read(move |table, ns| Ok(table.get((ns, key.as_str()))?.is_some()))
            .await
    }

    async fn list_keys(&self, cursor: Option<u64>) -> Result<KeyPage, StoreError> {
        let (token, offset) = cursor.map_or((0, 0), split_cursor);
        let resume_after = (token != 0)
            .then(|| {
                self.shared
                    .cursors
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .get(token, &self.namespace)
            })
            .flatten();
        let (keys, more) = self
            .read(move |table, ns| list_page(table, ns, resume_after.as_deref(), offset))
            .await?;
        let cursor = match keys.last() {
            Some(last) if more => {
                let returned = offset.saturating_add(keys.len() as u64);
                let token = self
                    .shared
                    .cursors
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .remember(&self.namespace, last);
                Some(join_cursor(token, returned))
            }
            _ => None,
        };
        Ok(KeyPage { keys, cursor })
    }

    async fn increment(&self, key: &str, delta: u64) -> Result<u64, StoreError> {
        check_key(key)?;
        match self
            .write(WriteOp::Increment(key.to_owned(), delta))
            .await?
        {
            Reply::Counter(value) => Ok(value),
            other => unreachable!("increment answered {other:?}"),
        }
    }

    async fn compare_and_swap(
        &self,
        key: &str,
        expected: Option<&[u8]>,
        new: &[u8],
    ) -> Result<bool, StoreError> {
        check_key(key)?;
        check_value(new)?;
        let op = WriteOp::CompareAndSwap {
            key: key.to_owned(),
            expected: expected.map(<[u8]>::to_vec),
            new: new.to_vec(),
        };
        match self.write(op).await? {
            Reply::Swapped(swapped) => Ok(swapped),
            other => unreachable!("compare_and_swap answered {other:?}"),
        }
    }

    async fn get_many(&self, keys: &[String]) -> Result<Vec<Option<Vec<u8>>>, StoreError> {
        keys.iter().try_for_each(|k| check_key(k))?;
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let keys = keys.to_vec();
        self.read(move |table, ns| {
            keys.iter()
                .map(|k| Ok(table.get((ns, k.as_str()))?.map(|v| v.value().to_vec())))
                .collect()
        })
        .await
    }

    async fn set_many(&self, entries: &[(String, Vec<u8>)]) -> Result<(), StoreError> {
        for (key, value) in entries {
            check_key(key)?;
            check_value(value)?;
        }
        if entries.is_empty() {
            return Ok(());
        }
        self.write(WriteOp::SetMany(entries.to_vec()))
            .await
            .map(drop)
    }

    async fn delete_many(&self, keys: &[String]) -> Result<(), StoreError> {
        keys.iter().try_for_each(|k| check_key(k))?;
        if keys.is_empty() {
            return Ok(());
        }
        self.write(WriteOp::Delete(keys.to_vec())).await.map(drop)
    }
}

/// One page of keys of `ns`, starting after `resume_after` if given, else after skipping
/// `offset` keys; and whether more keys follow.
fn list_page(
    table: &KvTable,
    ns: &str,
    resume_after: Option<&str>,
    offset: u64,
) -> Result<(Vec<String>, bool), redb::StorageError> {
    let (start, skip) = match resume_after {
        Some(last) => (Bound::Excluded((ns, last)), 0),
        None => (Bound::Included((ns, "")), offset),
    };
    let mut entries = table.range((start, Bound::Unbounded))?;
    let mut keys = Vec::new();
    let mut skipped = 0;
    for entry in entries.by_ref() {
        let (key, _) = entry?;
        let (key_ns, key) = key.value();
        if key_ns != ns {
            return Ok((keys, false));
        }
        if skipped < skip {
            skipped += 1;
            continue;
        }
        if keys.len() == LIST_PAGE_KEYS {
            return Ok((keys, true));
        }
        keys.push(key.to_owned());
    }
    Ok((keys, false))
}

fn split_cursor(cursor: u64) -> (u32, u64) {
    ((cursor >> 32) as u32, cursor & u64::from(u32::MAX))
}

fn join_cursor(token: u32, returned: u64) -> u64 {
    (u64::from(token) << 32) | returned.min(u64::from(u32::MAX))
}

/// The last key of each recent page, by token, for resumable cursors (see the module docs).
#[derive(Default)]
struct Cursors {
    last_token: u32,
    live: HashMap<u32, (Arc<str>, String)>,
    order: VecDeque<u32>,
}

impl Cursors {
    fn remember(&mut self, namespace: &Arc<str>, last_key: &str) -> u32 {
        // Zero means "no token", so the counter skips it when it wraps.
        self.last_token = self.last_token.checked_add(1).unwrap_or(1);
        let token = self.last_token;
        let entry = (namespace.clone(), last_key.to_owned());
        if self.live.insert(token, entry).is_none() {
            self.order.push_back(token);
        }
        while self.order.len() > MAX_LIVE_CURSORS {
            if let Some(oldest) = self.order.pop_front() {
                self.live.remove(&oldest);
            }
        }
        token
    }

    fn get(&self, token: u32, namespace: &str) -> Option<String> {
        // A cursor from another namespace is not honoured as a position in this one.
        let (ns, last_key) = self.live.get(&token)?;
        (**ns == *namespace).then(|| last_key.clone())
    }
}

struct WriteJob {
    namespace: Arc<str>,
    op: WriteOp,
    reply: oneshot::Sender<Result<Reply, StoreError>>,
}

enum WriteOp {
    Set(String, Vec<u8>),
    SetMany(Vec<(String, Vec<u8>)>),
    Delete(Vec<String>),
    Increment(String, u64),
    CompareAndSwap {
        key: String,
        expected: Option<Vec<u8>>,
        new: Vec<u8>,
    },
}

impl WriteOp {
    fn bytes(&self) -> usize {
        match self {
            WriteOp::Set(_, value) => value.len(),
            WriteOp::SetMany(entries) => entries.iter().map(|(_, v)| v.len()).sum(),
            WriteOp::CompareAndSwap { new, .. } => new.len(),
            WriteOp::Delete(_) | WriteOp::Increment(..) => 0,
        }
    }
}

#[derive(Debug, Clone)]
enum Reply {
    Done,
    Counter(u64),
    Swapped(bool),
}

/// The writer thread: group commits until every sender is gone.
fn run_writer(db: &Database, jobs: &mpsc::Receiver<WriteJob>) {
    while let Ok(first) = jobs.recv() {
        let mut bytes = first.op.bytes();
        let mut group = vec![first];
        while group.len() < MAX_GROUP_WRITES && bytes < MAX_GROUP_BYTES {
            let Ok(job) = jobs.try_recv() else { break };
            bytes += job.op.bytes();
            group.push(job);
        }
        let results = commit_group(db, &group);
        for (job, result) in group.into_iter().zip(results) {
            // The caller may have gone (its request was cancelled); the write stands anyway.
            let _ = job.reply.send(result);
        }
    }
}

/// Applies `group` in order in one write transaction and commits it. A refused operation (a
/// counter that is not a number) changes nothing and does not disturb the others; a storage
/// failure fails the whole group, since none of it was committed.
fn commit_group(db: &Database, group: &[WriteJob]) -> Vec<Result<Reply, StoreError>> {
    let run = || -> Result<Vec<Result<Reply, StoreError>>, redb::Error> {
        let txn = db.begin_write()?;
        let results = {
            let mut table = txn.open_table(KV)?;
            group
                .iter()
                .map(|job| apply(&mut table, &job.namespace, &job.op))
                .collect::<Result<Vec<_>, _>>()?
        };
        txn.commit()?;
        Ok(results)
    };
    match run() {
        Ok(results) => results,
        Err(e) => {
            let error = StoreError::Unavailable(format!("the key-value database failed: {e}"));
            vec![Err(error); group.len()]
        }
    }
}

type KvWriteTable<'t> = Table<'t, (&'static str, &'static str), &'static [u8]>;

fn apply(
    table: &mut KvWriteTable<'_>,
    ns: &str,
    op: &WriteOp,
) -> Result<Result<Reply, StoreError>, redb::StorageError> {
    match op {
        WriteOp::Set(key, value) => {
            table.insert((ns, key.as_str()), value.as_slice())?;
        }
        WriteOp::SetMany(entries) => {
            for (key, value) in entries {
                table.insert((ns, key.as_str()), value.as_slice())?;
            }
        }
        WriteOp::Delete(keys) => {
            for key in keys {
                table.remove((ns, key.as_str()))?;
            }
        }
        WriteOp::Increment(key, delta) => {
            let current = match table.get((ns, key.as_str()))? {
                None => 0,
                Some(value) => match parse_counter(value.value()) {
                    Some(n) => n,
                    None => {
                        return Ok(Err(StoreError::Invalid(
                            "cannot increment: the value is not a counter (decimal digits)".into(),
                        )));
                    }
                },
            };
            let Some(next) = current.checked_add(*delta) else {
                return Ok(Err(StoreError::Invalid(format!(
                    "cannot increment: {current} + {delta} is past the largest counter, {}",
                    u64::MAX
                ))));
            };
            table.insert((ns, key.as_str()), next.to_string().as_bytes())?;
            return Ok(Ok(Reply::Counter(next)));
        }
        WriteOp::CompareAndSwap { key, expected, new } => {
            let matches = {
                let current = table.get((ns, key.as_str()))?;
                current.as_ref().map(|v| v.value()) == expected.as_deref()
            };
            if matches {
                table.insert((ns, key.as_str()), new.as_slice())?;
            }
            return Ok(Ok(Reply::Swapped(matches)));
        }
    }
    Ok(Ok(Reply::Done))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_backend_is_in_use_while_a_store_of_it_lives_and_reopens_once_closed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kv.redb");
        let backend = EmbeddedBackend::open(&path).unwrap();
        assert!(!backend.in_use());
        let store = backend.open("app/default");
        assert!(backend.in_use());
        drop(store);
        assert!(!backend.in_use());
        // Closing it releases the file: the next open of the same path succeeds.
        drop(backend);
        EmbeddedBackend::open(&path).unwrap();
    }
}
