//! Queues in a redb file, for one process (`skiff up`): durable like the embedded key-value
//! backend (a publish, an acknowledgement and a dead letter are on disk once they return), so
//! that a message survives a crash of skiff until a handler has succeeded with it.
//!
//! Tables: `messages` (queue, sequence number) → the encoded message; `leases` (queue,
//! sequence) → (attempts so far, when it was last delivered, in ms since the epoch); `queues`
//! queue → (next sequence number, messages held); `owners` owner → bytes of messages held by
//! all its queues. A receive takes the oldest messages never
//! delivered or last delivered `redeliver_after` ago (the receiver's, as Redis' `XAUTOCLAIM`
//! has it); the delivery is written without waiting for the disk (one lost in a crash only
//! means an earlier redelivery, which at-least-once allows). Waiting receivers are woken by
//! each publish, or when the earliest delivery comes due again.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use redb::{Database, DatabaseError, Durability, ReadableDatabase, ReadableTable, TableDefinition};
use tokio::sync::Notify;

use crate::queue::{
    Consumer, Delivery, Message, QueueDepth, Queues, check_message, check_queue_name, dead_message,
    full, owner_full, owner_of,
};
use crate::{StoreError, message_codec};

const MESSAGES: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("messages");
const LEASES: TableDefinition<(&str, u64), (u32, u64)> = TableDefinition::new("leases");
const QUEUES: TableDefinition<&str, (u64, u64)> = TableDefinition::new("queues");
const OWNERS: TableDefinition<&str, u64> = TableDefinition::new("owners");

/// Queues in one redb file. Cheap to clone.
#[derive(Clone)]
pub struct EmbeddedQueues {
    shared: Arc<Shared>,
}

struct Shared {
    path: PathBuf,
    db: Database,
    max_depth: u64,
    max_owner_bytes: u64,
    /// Woken by every publish.
    published: Notify,
}

impl EmbeddedQueues {
    /// Opens (or creates) the queue database at `path`. Only one process may have it open.
    pub fn open(path: &Path) -> Result<EmbeddedQueues, StoreError> {
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(|e| {
                StoreError::Unavailable(format!(
                    "cannot create the folder {} for the queue database: {e}",
                    parent.display()
                ))
            })?;
        }
        let db = Database::create(path).map_err(|e| match e {
            DatabaseError::DatabaseAlreadyOpen => StoreError::Unavailable(format!(
                "the queue database {} is in use by another process: only one skiff at a time \
                 can use it; stop the other one, or give this one another data folder",
                path.display()
            )),
            other => StoreError::Unavailable(format!(
                "cannot open the queue database {}: {other}",
                path.display()
            )),
        })?;
        let queues = EmbeddedQueues {
            shared: Arc::new(Shared {
                path: path.to_owned(),
                db,
                max_depth: crate::queue::DEFAULT_MAX_QUEUE_DEPTH,
                max_owner_bytes: crate::queue::DEFAULT_MAX_OWNER_BYTES,
                published: Notify::new(),
            }),
        };
        queues.shared.write(Durability::Immediate, |txn| {
            txn.open_table(MESSAGES)?;
            txn.open_table(LEASES)?;
            txn.open_table(QUEUES)?;
            Ok(())
        })?;
        Ok(queues)
    }

    /// The same queues, each holding at most `depth` messages. Right after `open` only.
    pub fn with_max_depth(mut self, depth: u64) -> EmbeddedQueues {
        if let Some(shared) = Arc::get_mut(&mut self.shared) {
            shared.max_depth = depth;
        }
        self
    }

    /// The same queues, each owner's holding at most `bytes` together. Right after `open`.
    pub fn with_max_owner_bytes(mut self, bytes: u64) -> EmbeddedQueues {
        if let Some(shared) = Arc::get_mut(&mut self.shared) {
            shared.max_owner_bytes = bytes;
        }
        self
    }
}

impl Shared {
    /// Runs `work` in one write transaction and commits it.
    fn write<T>(
        &self,
        durability: Durability,
        work: impl FnOnce(&redb::WriteTransaction) -> Result<T, redb::Error>,
    ) -> Result<T, StoreError> {
        let run = || -> Result<T, redb::Error> {
            let mut txn = self.db.begin_write()?;
            txn.set_durability(durability)?;
            let value = work(&txn)?;
            txn.commit()?;
            Ok(value)
        };
        run().map_err(|e| {
            StoreError::Unavailable(format!("the queue database {}: {e}", self.path.display()))
        })
    }
}

/// Runs blocking database work off the async threads.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, StoreError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| StoreError::Unavailable(format!("a queue operation stopped: {e}")))?
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_millis() as u64)
}

/// What became of a message given to [`append`].
enum Appended {
    Added,
    /// The queue holds its most messages.
    QueueFull,
    /// Its owner's queues hold this many bytes: the message would take them past their most.
    OwnerFull(u64),
}

/// Adds `message` to `queue` inside `txn`. With `trim` (a dead letter: the message moves, it
/// is not new) the queue's oldest messages go if it is full, and the owner's bytes are not
/// checked; without, a full queue or owner refuses it.
fn append(
    txn: &redb::WriteTransaction,
    queue: &str,
    message: &Message,
    shared: &Shared,
    trim: bool,
) -> Result<Appended, redb::Error> {
    let encoded = message_codec::encode(message);
    let size = encoded.len() as u64;
    let owner = owner_of(queue);
    let mut owners = txn.open_table(OWNERS)?;
    let mut owner_bytes = owners.get(owner)?.map_or(0, |v| v.value());
    if !trim && owner_bytes.saturating_add(size) > shared.max_owner_bytes {
        return Ok(Appended::OwnerFull(owner_bytes));
    }
    let mut queues = txn.open_table(QUEUES)?;
    let (next, mut held) = queues.get(queue)?.map_or((0, 0), |v| v.value());
    let mut messages = txn.open_table(MESSAGES)?;
    if held >= shared.max_depth {
        if !trim {
            return Ok(Appended::QueueFull);
        }
        let oldest = messages
            .range((queue, 0)..=(queue, u64::MAX))?
            .next()
            .transpose()?
            .map(|(key, _)| key.value().1);
        if let Some(oldest) = oldest {
            if let Some(gone) = messages.remove((queue, oldest))? {
                owner_bytes = owner_bytes.saturating_sub(gone.value().len() as u64);
            }
            txn.open_table(LEASES)?.remove((queue, oldest))?;
            held -= 1;
        }
    }
    messages.insert((queue, next), encoded.as_slice())?;
    queues.insert(queue, (next + 1, held + 1))?;
    owners.insert(owner, owner_bytes.saturating_add(size))?;
    Ok(Appended::Added)
}

/// Removes message `seq` of `queue` inside `txn`; whether it was there.
fn remove(txn: &redb::WriteTransaction, queue: &str, seq: u64) -> Result<bool, redb::Error> {
    let removed = txn
        .open_table(MESSAGES)?
        .remove((queue, seq))?
        .map(|gone| gone.value().len() as u64);
    txn.open_table(LEASES)?.remove((queue, seq))?;
    let Some(size) = removed else {
        return Ok(false);
    };
    let mut queues = txn.open_table(QUEUES)?;
    let (next, held) = queues.get(queue)?.map_or((0, 0), |v| v.value());
    queues.insert(queue, (next, held.saturating_sub(1)))?;
    let mut owners = txn.open_table(OWNERS)?;
    let owner = owner_of(queue);
    let bytes = owners.get(owner)?.map_or(0, |v| v.value());
    owners.insert(owner, bytes.saturating_sub(size))?;
    Ok(true)
}

#[async_trait::async_trait]
impl Queues for EmbeddedQueues {
    fn describe(&self) -> String {
        format!("the queue database {}", self.shared.path.display())
    }

    async fn publish(&self, queue: &str, message: &Message) -> Result<(), StoreError> {
        check_queue_name(queue)?;
        check_message(message)?;
        let (shared, name, message) = (self.shared.clone(), queue.to_string(), message.clone());
        let appended = blocking(move || {
            shared.write(Durability::Immediate, |txn| {
                append(txn, &name, &message, &shared, false)
            })
        })
        .await?;
        match appended {
            Appended::Added => {}
            Appended::QueueFull => return Err(full(queue, self.shared.max_depth)),
            Appended::OwnerFull(held) => {
                return Err(owner_full(queue, held, self.shared.max_owner_bytes));
            }
        }
        self.shared.published.notify_waiters();
        Ok(())
    }

    fn consumer(&self, queue: &str, name: &str) -> Result<Box<dyn Consumer>, StoreError> {
        check_queue_name(queue)?;
        check_queue_name(name)?;
        Ok(Box::new(EmbeddedConsumer {
            shared: self.shared.clone(),
            queue: queue.to_string(),
        }))
    }

    async fn depth(&self, queue: &str) -> Result<QueueDepth, StoreError> {
        check_queue_name(queue)?;
        let (shared, queue) = (self.shared.clone(), queue.to_string());
        blocking(move || {
            let read = || -> Result<u64, redb::Error> {
                let txn = shared.db.begin_read()?;
                let held = txn
                    .open_table(QUEUES)?
                    .get(queue.as_str())?
                    .map_or(0, |v| v.value().1);
                Ok(held)
            };
            read().map(|messages| QueueDepth { messages }).map_err(|e| {
                StoreError::Unavailable(format!(
                    "the queue database {}: {e}",
                    shared.path.display()
                ))
            })
        })
        .await
    }
}

struct EmbeddedConsumer {
    shared: Arc<Shared>,
    queue: String,
}

/// What one scan of a queue found: the messages leased now, and when the earliest lease still
/// running ends (ms since the epoch).
struct Scan {
    leased: Vec<Delivery>,
    next_expiry: Option<u64>,
}

/// Delivers up to `count` messages of `queue`: those never delivered, and those whose last
/// delivery was `redeliver_after` ago or more without an acknowledgement.
fn lease(
    shared: &Shared,
    queue: &str,
    count: usize,
    redeliver_after: Duration,
) -> Result<Scan, StoreError> {
    let now = now_ms();
    let hold = redeliver_after.as_millis() as u64;
    shared.write(Durability::None, |txn| {
        let messages = txn.open_table(MESSAGES)?;
        let mut leases = txn.open_table(LEASES)?;
        let mut scan = Scan {
            leased: Vec::new(),
            next_expiry: None,
        };
        for entry in messages.range((queue, 0)..=(queue, u64::MAX))? {
            if scan.leased.len() >= count {
                break;
            }
            let (key, value) = entry?;
            let seq = key.value().1;
            let last = leases.get((queue, seq))?.map(|v| v.value());
            if let Some((_, delivered_at)) = last {
                let due = delivered_at.saturating_add(hold);
                if due > now {
                    scan.next_expiry = Some(scan.next_expiry.map_or(due, |e| e.min(due)));
                    continue;
                }
            }
            let Some(message) = message_codec::decode(value.value()) else {
                continue;
            };
            let attempt = last.map_or(0, |(attempts, _)| attempts).saturating_add(1);
            leases.insert((queue, seq), (attempt, now))?;
            scan.leased.push(Delivery {
                id: seq.to_string(),
                message,
                attempt,
            });
        }
        Ok(scan)
    })
}

impl EmbeddedConsumer {
    fn seq(id: &str) -> Result<u64, StoreError> {
        id.parse()
            .map_err(|_| StoreError::Invalid(format!("`{id}` is not a message id of this queue")))
    }
}

#[async_trait::async_trait]
impl Consumer for EmbeddedConsumer {
    async fn receive(
        &self,
        count: usize,
        redeliver_after: Duration,
        wait: Duration,
    ) -> Result<Vec<Delivery>, StoreError> {
        let count = count.max(1);
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            // Registered before the scan, so a publish during it is not missed.
            let published = self.shared.published.notified();
            tokio::pin!(published);
            published.as_mut().enable();
            let (shared, queue) = (self.shared.clone(), self.queue.clone());
            let scan = blocking(move || lease(&shared, &queue, count, redeliver_after)).await?;
            if !scan.leased.is_empty() {
                return Ok(scan.leased);
            }
            let now = tokio::time::Instant::now();
            if now >= deadline {
                return Ok(Vec::new());
            }
            let mut until = deadline;
            if let Some(expiry) = scan.next_expiry {
                let left = Duration::from_millis(expiry.saturating_sub(now_ms()));
                until = until.min(now + left);
            }
            let _ = tokio::time::timeout_at(until, published).await;
        }
    }

    async fn ack(&self, id: &str) -> Result<(), StoreError> {
        let seq = Self::seq(id)?;
        let (shared, queue) = (self.shared.clone(), self.queue.clone());
        blocking(move || shared.write(Durability::Immediate, |txn| remove(txn, &queue, seq)))
            .await
            .map(drop)
    }

    async fn retry_later(
        &self,
        id: &str,
        after: Duration,
        redeliver_after: Duration,
    ) -> Result<(), StoreError> {
        let seq = Self::seq(id)?;
        let (shared, queue) = (self.shared.clone(), self.queue.clone());
        // Its delivery moved back so that `redeliver_after` from it is `after` from now.
        let back = redeliver_after.saturating_sub(after.min(redeliver_after));
        let delivered_at = now_ms().saturating_sub(back.as_millis() as u64);
        blocking(move || {
            shared.write(Durability::None, |txn| {
                let mut leases = txn.open_table(LEASES)?;
                let attempts = leases.get((queue.as_str(), seq))?.map(|v| v.value().0);
                if let Some(attempts) = attempts {
                    leases.insert((queue.as_str(), seq), (attempts, delivered_at))?;
                }
                Ok(())
            })
        })
        .await?;
        // A waiting receiver may sleep until the old due time: it scans again now.
        self.shared.published.notify_waiters();
        Ok(())
    }

    async fn dead_letter(
        &self,
        delivery: &Delivery,
        dead: &str,
        reason: &str,
    ) -> Result<(), StoreError> {
        check_queue_name(dead)?;
        let seq = Self::seq(&delivery.id)?;
        let message = dead_message(delivery, &self.queue, reason);
        let (shared, queue, dead) = (self.shared.clone(), self.queue.clone(), dead.to_string());
        blocking(move || {
            shared.write(Durability::Immediate, |txn| {
                if remove(txn, &queue, seq)? {
                    append(txn, &dead, &message, &shared, true)?;
                }
                Ok(())
            })
        })
        .await?;
        self.shared.published.notify_waiters();
        Ok(())
    }
}
