//! Choosing a queue backend: what an operator's settings name (a Redis URL, or an embedded
//! database file) opened with its bounds, behind the one [`Queues`] trait.

use std::path::PathBuf;
use std::sync::Arc;

use crate::queue::{DEFAULT_MAX_OWNER_BYTES, DEFAULT_MAX_QUEUE_DEPTH, Queues};
use crate::{EmbeddedQueues, RedisQueues, StoreError};

/// Where queues are: a Redis server, or an embedded database file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QueueBackend {
    /// Redis Streams in the Redis at this URL.
    Redis(String),
    /// A redb file at this path (made if missing).
    Embedded(PathBuf),
}

/// Opens the queues of `backend`, each holding at most `max_depth` messages, and each owner's
/// at most `max_owner_bytes` together (`None`: the defaults, [`DEFAULT_MAX_QUEUE_DEPTH`] and
/// [`DEFAULT_MAX_OWNER_BYTES`]).
pub fn open_queues(
    backend: &QueueBackend,
    max_depth: Option<u64>,
    max_owner_bytes: Option<u64>,
) -> Result<Arc<dyn Queues>, StoreError> {
    let depth = max_depth.unwrap_or(DEFAULT_MAX_QUEUE_DEPTH);
    let bytes = max_owner_bytes.unwrap_or(DEFAULT_MAX_OWNER_BYTES);
    Ok(match backend {
        QueueBackend::Redis(url) => Arc::new(
            RedisQueues::connect(url)?
                .with_max_depth(depth)
                .with_max_owner_bytes(bytes),
        ),
        QueueBackend::Embedded(path) => Arc::new(
            EmbeddedQueues::open(path)?
                .with_max_depth(depth)
                .with_max_owner_bytes(bytes),
        ),
    })
}
