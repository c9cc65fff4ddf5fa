//! Key-value storage for guests, behind one trait: [`Backend`] opens [`Store`]s, one per
//! namespace; and queues for queue consumers, behind another ([`Queues`], see [`queue`];
//! [`open_queues`] opens the backend an operator names). A namespace is an isolated key space
//! (skiff uses one per app and store label, so two apps that both say `default` never see each
//! other's data, while two components of one app that name the same label share it).
//!
//! Backends:
//! - the embedded one (the default): one database file in skiff's data folder, durable once a
//!   write returns;
//! - Redis: for several hosts that must share state.
//!
//! Every backend keeps the same contract, which the conformance tests in this crate check
//! against each of them:
//! - values are bytes of any length up to [`MAX_VALUE_BYTES`]; keys are UTF-8 strings up to
//!   [`MAX_KEY_BYTES`];
//! - a counter touched by [`Store::increment`] holds its value as decimal ASCII text (`"5000"`),
//!   as Redis' `INCRBY` does, so `get` reads it back the same on every backend; incrementing a
//!   missing key starts from 0; incrementing a value that is not a decimal `u64`, or past
//!   `u64::MAX`, is an error and changes nothing;
//! - `increment` and `compare_and_swap` are atomic, also between processes sharing a backend;
//! - `list_keys` pages through the keys of a namespace with an opaque cursor; a page holds at
//!   most [`LIST_PAGE_KEYS`] keys; `None` as the next cursor means the listing is complete;
//! - batch operations are not transactions: each key is handled as by the single operation.
//!
//! Where the backends differ, within that contract:
//! - counters: Redis' `INCRBY` works on signed 64-bit integers, so a Redis counter stops at
//!   `i64::MAX` (going past it is the same [`StoreError::Invalid`] as going past `u64::MAX` on
//!   the embedded backend);
//! - `list_keys`: the embedded backend returns every key exactly once, in sorted order; Redis
//!   returns keys in no particular order and, as its `SCAN` does, may repeat a key if the
//!   database is resized during the listing. On both, a key present for the whole listing is
//!   returned, and a key added or removed meanwhile may or may not be;
//! - a batch on Redis is applied at once (`MSET`, `DEL`); on the embedded backend it is one
//!   transaction too. Neither is promised.

#![forbid(unsafe_code)]

use std::sync::Arc;

mod embedded;
mod embedded_queue;
mod message_codec;
pub mod queue;
mod queue_backend;
mod redis;
mod redis_connection;
mod redis_queue;

pub use embedded::EmbeddedBackend;
pub use embedded_queue::EmbeddedQueues;
pub use queue::{Consumer, Delivery, Message, QueueDepth, Queues};
pub use queue_backend::{QueueBackend, open_queues};
pub use redis::RedisBackend;
pub use redis_connection::{DEFAULT_TIMEOUT as REDIS_DEFAULT_TIMEOUT, RedisConnection};
pub use redis_queue::RedisQueues;

/// Largest value a guest may store (bigger values are refused with an error naming the limit).
pub const MAX_VALUE_BYTES: usize = 16 << 20;
/// Longest key.
pub const MAX_KEY_BYTES: usize = 4096;
/// Most keys in one page of [`Store::list_keys`].
pub const LIST_PAGE_KEYS: usize = 1000;

/// Why a storage operation failed. Guests see these as `wasi:keyvalue` errors, never as traps.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum StoreError {
    /// The backend could not be reached or failed (e.g. Redis is down). Transient.
    #[error("the store is unavailable: {0}")]
    Unavailable(String),
    /// The request itself was refused: a value or key over the limit, a counter that is not a
    /// number, an overflow.
    #[error("{0}")]
    Invalid(String),
}

/// One page of keys.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeyPage {
    /// At most [`LIST_PAGE_KEYS`]. May be empty while `cursor` is `Some` (Redis, on a namespace
    /// that is small next to the whole database): keep following the cursor.
    pub keys: Vec<String>,
    /// Pass back to get the next page; `None` when there are no more keys. Opaque: its meaning
    /// is the backend's (the embedded backend's is documented in [`EmbeddedBackend`], Redis' is its
    /// `SCAN` cursor).
    pub cursor: Option<u64>,
}

/// A backend: a database holding any number of namespaces.
pub trait Backend: Send + Sync + 'static {
    /// The key space `namespace` (created on first write). Cheap: no I/O.
    fn open(&self, namespace: &str) -> Arc<dyn Store>;

    /// Whether a [`Store`] opened from this backend is still alive. A host closes backends
    /// nobody uses; one that cannot tell is never closed.
    fn in_use(&self) -> bool {
        true
    }
}

/// One namespace of one backend.
#[async_trait::async_trait]
pub trait Store: Send + Sync + 'static {
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError>;
    async fn set(&self, key: &str, value: &[u8]) -> Result<(), StoreError>;
    /// Deleting a missing key is not an error.
    async fn delete(&self, key: &str) -> Result<(), StoreError>;
    async fn exists(&self, key: &str) -> Result<bool, StoreError>;
    async fn list_keys(&self, cursor: Option<u64>) -> Result<KeyPage, StoreError>;
    /// Adds `delta` to the counter at `key` and returns the new value.
    async fn increment(&self, key: &str, delta: u64) -> Result<u64, StoreError>;
    /// Sets `key` to `new` if its current value is `expected` (`None`: the key is absent).
    /// Returns whether it swapped.
    async fn compare_and_swap(
        &self,
        key: &str,
        expected: Option<&[u8]>,
        new: &[u8],
    ) -> Result<bool, StoreError>;
    /// The values of `keys`, in order; `None` for a missing key.
    async fn get_many(&self, keys: &[String]) -> Result<Vec<Option<Vec<u8>>>, StoreError>;
    async fn set_many(&self, entries: &[(String, Vec<u8>)]) -> Result<(), StoreError>;
    async fn delete_many(&self, keys: &[String]) -> Result<(), StoreError>;
}

/// Refuses a key over [`MAX_KEY_BYTES`].
pub(crate) fn check_key(key: &str) -> Result<(), StoreError> {
    if key.len() > MAX_KEY_BYTES {
        return Err(StoreError::Invalid(format!(
            "the key is {} bytes, over the limit of {MAX_KEY_BYTES} bytes",
            key.len()
        )));
    }
    Ok(())
}

/// Refuses a value over [`MAX_VALUE_BYTES`].
pub(crate) fn check_value(value: &[u8]) -> Result<(), StoreError> {
    if value.len() > MAX_VALUE_BYTES {
        return Err(StoreError::Invalid(format!(
            "the value is {} bytes, over the limit of {MAX_VALUE_BYTES} bytes (16 MiB)",
            value.len()
        )));
    }
    Ok(())
}

/// Reads a counter as the contract stores it: canonical decimal ASCII (no sign, no leading
/// zero, no spaces). Redis' `INCRBY` refuses the same non-canonical forms, which keeps the two
/// backends in agreement on what counts as a counter.
pub(crate) fn parse_counter(bytes: &[u8]) -> Option<u64> {
    let canonical = !bytes.is_empty()
        && bytes.iter().all(u8::is_ascii_digit)
        && (bytes.len() == 1 || bytes[0] != b'0');
    if !canonical {
        return None;
    }
    std::str::from_utf8(bytes).ok()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_must_be_canonical_decimal() {
        assert_eq!(parse_counter(b"0"), Some(0));
        assert_eq!(parse_counter(b"5000"), Some(5000));
        assert_eq!(parse_counter(b"18446744073709551615"), Some(u64::MAX));
        for bad in [
            &b""[..],
            b"007",
            b"+5",
            b"-5",
            b" 5",
            b"5 ",
            b"1e3",
            b"18446744073709551616",
        ] {
            assert_eq!(
                parse_counter(bad),
                None,
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn limits_are_enforced_at_the_boundary() {
        assert!(check_key(&"k".repeat(MAX_KEY_BYTES)).is_ok());
        assert!(matches!(
            check_key(&"k".repeat(MAX_KEY_BYTES + 1)),
            Err(StoreError::Invalid(_))
        ));
        assert!(check_value(&vec![0; MAX_VALUE_BYTES]).is_ok());
        assert!(matches!(
            check_value(&vec![0; MAX_VALUE_BYTES + 1]),
            Err(StoreError::Invalid(_))
        ));
    }
}
