//! Queues for queue consumers, behind one trait: [`Queues`] holds any number of named queues;
//! a producer [`publish`](Queues::publish)es to one, and the [`Consumer`]s of a queue share its
//! messages (each goes to one of them), with at-least-once delivery:
//! - a message is gone only once a consumer [`ack`](Consumer::ack)s it (after its handler
//!   succeeded) or moves it to a dead-letter queue;
//! - a message delivered and not acknowledged within `redeliver_after` (its consumer failed,
//!   died or hangs) is delivered again, to whichever consumer asks next, with its attempt
//!   number one higher; a consumer gives up on a message after the attempts it allows by
//!   moving it to a dead-letter queue ([`Consumer::dead_letter`]);
//! - a queue holds at most [`DEFAULT_MAX_QUEUE_DEPTH`] messages (or what the backend was
//!   given; waiting and in flight), and an owner's queues (those whose names start with the
//!   same `OWNER/`: a tenant's) hold at most [`DEFAULT_MAX_OWNER_BYTES`] of messages together;
//!   publishing past either is refused as unavailable, which is the producer's back-pressure:
//!   nothing is buffered without bound, no owner takes the memory or disk of the others, and
//!   nothing is dropped.
//!
//! Backends: Redis Streams with one consumer group per queue (for servers and clusters, where
//! every host's consumers share the group), and an embedded one in a redb file (`skiff up`).
//! The conformance tests in `tests/queues.rs` hold both to this contract.
//!
//! Queue names are the caller's business (skiff prefixes them with the tenant), up to
//! [`MAX_QUEUE_NAME_BYTES`] of printable ASCII.

use std::time::Duration;

use crate::StoreError;

/// Largest message payload.
pub const MAX_MESSAGE_BYTES: usize = 1 << 20;
/// Most messages a queue holds, waiting and in flight, unless the backend is given another.
pub const DEFAULT_MAX_QUEUE_DEPTH: u64 = 100_000;
/// Most bytes (of encoded messages) an owner's queues hold together, dead letters included,
/// unless the backend is given another.
pub const DEFAULT_MAX_OWNER_BYTES: u64 = 256 << 20;
/// Longest queue name.
pub const MAX_QUEUE_NAME_BYTES: usize = 200;
/// Most metadata entries on a message, and the longest key, value or content type.
pub const MAX_METADATA_ENTRIES: usize = 64;
pub const MAX_METADATA_BYTES: usize = 1024;

/// A message: bytes, and what the producer said about them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Message {
    pub data: Vec<u8>,
    pub content_type: Option<String>,
    /// Headers, in order; a key appears at most once.
    pub metadata: Vec<(String, String)>,
}

/// A message as a consumer received it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    /// The backend's id of the message, to acknowledge it.
    pub id: String,
    pub message: Message,
    /// 1 the first time the message is delivered, 2 the next, and so on.
    pub attempt: u32,
}

/// How much a queue holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QueueDepth {
    /// Published, not yet acknowledged (waiting or being handled).
    pub messages: u64,
}

/// Where queues live.
#[async_trait::async_trait]
pub trait Queues: Send + Sync + 'static {
    /// Where, for messages (no credentials).
    fn describe(&self) -> String;
    /// Appends `message` to `queue` (made on first use). A full queue refuses it with
    /// [`StoreError::Unavailable`]: try again later.
    async fn publish(&self, queue: &str, message: &Message) -> Result<(), StoreError>;
    /// A consumer of `queue`, named `name` (unique among the queue's consumers: a host and a
    /// worker, say). Cheap; connects on first use.
    fn consumer(&self, queue: &str, name: &str) -> Result<Box<dyn Consumer>, StoreError>;
    async fn depth(&self, queue: &str) -> Result<QueueDepth, StoreError>;
}

/// One consumer of one queue.
#[async_trait::async_trait]
pub trait Consumer: Send + Sync {
    /// Up to `count` messages: first those delivered (to any consumer) and not acknowledged
    /// for `redeliver_after`, then new ones. Waits up to `wait` for one if there is none.
    async fn receive(
        &self,
        count: usize,
        redeliver_after: Duration,
        wait: Duration,
    ) -> Result<Vec<Delivery>, StoreError>;
    /// The message was handled: it is gone. `id` is one this consumer's queue delivered (an id
    /// means nothing in another queue).
    async fn ack(&self, id: &str) -> Result<(), StoreError>;
    /// Its handler failed: the message is due again `after` from now (at most
    /// `redeliver_after`, what the consumers' receives wait for), not `redeliver_after` after
    /// its delivery. Its attempt count goes up when it is delivered again, as for any
    /// redelivery. Nothing happens to a message already acknowledged.
    async fn retry_later(
        &self,
        id: &str,
        after: Duration,
        redeliver_after: Duration,
    ) -> Result<(), StoreError>;
    /// Gives up on a message: appends it to queue `dead` with `reason` and its attempts in its
    /// metadata (`skiff-dead-reason`, `skiff-attempts`, `skiff-queue`), and acknowledges it,
    /// in one step. The dead-letter queue takes it even when full (it drops its oldest).
    async fn dead_letter(
        &self,
        delivery: &Delivery,
        dead: &str,
        reason: &str,
    ) -> Result<(), StoreError>;
}

/// Whose queue `queue` is: its name up to the first `/` (a tenant), or all of it.
pub(crate) fn owner_of(queue: &str) -> &str {
    queue.split('/').next().unwrap_or(queue)
}

/// The refusal of a publish past its owner's bytes.
pub(crate) fn owner_full(queue: &str, held: u64, limit: u64) -> StoreError {
    StoreError::Unavailable(format!(
        "the queues of `{}` hold {held} bytes of messages, and this one would take them past \
         the {limit} they may hold together: their consumers are behind; try again later",
        owner_of(queue)
    ))
}

/// Refuses a queue name skiff would not make.
pub(crate) fn check_queue_name(queue: &str) -> Result<(), StoreError> {
    let printable = queue.bytes().all(|b| b.is_ascii_graphic());
    if queue.is_empty() || queue.len() > MAX_QUEUE_NAME_BYTES || !printable {
        return Err(StoreError::Invalid(format!(
            "`{}` is not a queue name: 1 to {MAX_QUEUE_NAME_BYTES} printable ASCII characters",
            queue.escape_debug()
        )));
    }
    Ok(())
}

/// Refuses a message over the limits.
pub(crate) fn check_message(message: &Message) -> Result<(), StoreError> {
    if message.data.len() > MAX_MESSAGE_BYTES {
        return Err(StoreError::Invalid(format!(
            "the message is {} bytes, over the limit of {MAX_MESSAGE_BYTES} bytes (1 MiB)",
            message.data.len()
        )));
    }
    if message.metadata.len() > MAX_METADATA_ENTRIES {
        return Err(StoreError::Invalid(format!(
            "the message has {} metadata entries, over the limit of {MAX_METADATA_ENTRIES}",
            message.metadata.len()
        )));
    }
    let texts = message
        .metadata
        .iter()
        .flat_map(|(key, value)| [key, value])
        .chain(&message.content_type);
    if texts
        .into_iter()
        .any(|text| text.len() > MAX_METADATA_BYTES)
    {
        return Err(StoreError::Invalid(format!(
            "a metadata key or value, or the content type, is over the limit of \
             {MAX_METADATA_BYTES} bytes"
        )));
    }
    Ok(())
}

/// The refusal of a publish to a full queue.
pub(crate) fn full(queue: &str, depth: u64) -> StoreError {
    StoreError::Unavailable(format!(
        "the queue `{queue}` is full ({depth} messages waiting or being handled): its \
         consumers are behind; try again later"
    ))
}

/// `delivery`'s message as it goes to a dead-letter queue: with why, after how many attempts,
/// and from which queue, in its metadata.
pub(crate) fn dead_message(delivery: &Delivery, queue: &str, reason: &str) -> Message {
    let mut message = delivery.message.clone();
    let added = [
        ("skiff-dead-reason", truncate(reason, MAX_METADATA_BYTES)),
        ("skiff-attempts", delivery.attempt.to_string()),
        ("skiff-queue", queue.to_string()),
    ];
    message
        .metadata
        .retain(|(key, _)| !added.iter().any(|(name, _)| key == name));
    message
        .metadata
        .extend(added.map(|(key, value)| (key.to_string(), value)));
    message
}

/// At most `limit` bytes of `text`, cut at a character boundary.
fn truncate(text: &str, limit: usize) -> String {
    let mut end = text.len().min(limit);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_messages_are_bounded() {
        assert!(check_queue_name("acme/orders").is_ok());
        for bad in [
            "",
            "a b",
            "tab\there",
            &"q".repeat(MAX_QUEUE_NAME_BYTES + 1),
        ] {
            assert!(check_queue_name(bad).is_err(), "{bad:?}");
        }
        let mut message = Message {
            data: vec![0; MAX_MESSAGE_BYTES],
            ..Message::default()
        };
        assert!(check_message(&message).is_ok());
        message.data.push(0);
        assert!(check_message(&message).is_err());
        message.data.clear();
        message.content_type = Some("x".repeat(MAX_METADATA_BYTES + 1));
        assert!(check_message(&message).is_err());
    }

    #[test]
    fn a_dead_letter_says_why_once() {
        let delivery = Delivery {
            id: "1".into(),
            message: Message {
                data: b"x".to_vec(),
                content_type: None,
                metadata: vec![
                    ("skiff-attempts".into(), "forged".into()),
                    ("trace".into(), "abc".into()),
                ],
            },
            attempt: 5,
        };
        let dead = dead_message(&delivery, "acme/orders", &"é".repeat(2000));
        let get = |key: &str| {
            dead.metadata
                .iter()
                .filter(|(k, _)| k == key)
                .map(|(_, v)| v.as_str())
                .collect::<Vec<_>>()
        };
        assert_eq!(get("skiff-attempts"), ["5"]);
        assert_eq!(get("trace"), ["abc"]);
        assert_eq!(get("skiff-queue"), ["acme/orders"]);
        assert!(get("skiff-dead-reason")[0].len() <= MAX_METADATA_BYTES);
    }
}
