//! Queues in Redis Streams: a queue is the stream `skiff:q:QUEUE` with one consumer group,
//! `skiff`, which every consumer of the queue (on every host) joins. Redis does the delivery
//! bookkeeping: `XREADGROUP` hands each new entry to one consumer and records it as pending
//! until `XACK`; `XAUTOCLAIM` hands an entry pending for longer than `redeliver_after` to the
//! consumer asking (its delivery count, which `XPENDING` reads, is the attempt number). An
//! acknowledged entry is deleted (`XDEL`), so a stream holds only what is waiting or in flight
//! and its length is the queue's depth.
//!
//! A consumer blocks in `XREADGROUP ... BLOCK` on a connection of its own: on the shared one
//! it would hold up every other command behind it.

use std::sync::Arc;
use std::time::Duration;

use ::redis::streams::{StreamAutoClaimReply, StreamId, StreamPendingCountReply, StreamReadReply};
use ::redis::{Script, Value};

use crate::queue::{
    Consumer, Delivery, Message, QueueDepth, Queues, check_message, check_queue_name, dead_message,
    full,
};
use crate::redis_connection::{DEFAULT_TIMEOUT, RedisConnection};
use crate::{StoreError, message_codec};

/// The consumer group every consumer of a queue joins.
const GROUP: &str = "skiff";
/// The one field of an entry: the message, encoded.
const FIELD: &str = "m";

/// Appends to a queue unless it is full. KEYS: stream. ARGV: group, most entries, whether to
/// trim the oldest instead of refusing (`1`, for dead letters), the encoded message. The group
/// is made with the stream, from its start, so that nothing published before the first
/// consumer came is missed.
const PUBLISH_LUA: &str = r"
if ARGV[3] ~= '1' and redis.call('XLEN', KEYS[1]) >= tonumber(ARGV[2]) then return 0 end
redis.pcall('XGROUP', 'CREATE', KEYS[1], ARGV[1], '0', 'MKSTREAM')
if ARGV[3] == '1' then
  redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[2], '*', 'm', ARGV[4])
else
  redis.call('XADD', KEYS[1], '*', 'm', ARGV[4])
end
return 1
";

/// Moves an entry to a dead-letter queue. KEYS: stream, dead stream. ARGV: group, entry id,
/// most entries of the dead queue, the encoded dead message.
const DEAD_LETTER_LUA: &str = r"
redis.pcall('XGROUP', 'CREATE', KEYS[2], ARGV[1], '0', 'MKSTREAM')
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[3], '*', 'm', ARGV[4])
redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
redis.call('XDEL', KEYS[1], ARGV[2])
return 1
";

/// Queues in one Redis database.
#[derive(Clone)]
pub struct RedisQueues {
    inner: Arc<Inner>,
}

struct Inner {
    redis: RedisConnection,
    max_depth: u64,
    publish: Script,
    dead_letter: Script,
}

impl RedisQueues {
    /// Queues in the Redis at `url`. Only parses the URL: it connects on first use.
    pub fn connect(url: &str) -> Result<RedisQueues, StoreError> {
        Ok(RedisQueues {
            inner: Arc::new(Inner {
                redis: RedisConnection::open(url)?,
                max_depth: crate::queue::DEFAULT_MAX_QUEUE_DEPTH,
                publish: Script::new(PUBLISH_LUA),
                dead_letter: Script::new(DEAD_LETTER_LUA),
            }),
        })
    }

    /// The same queues, each holding at most `depth` messages. Right after `connect` only.
    pub fn with_max_depth(mut self, depth: u64) -> RedisQueues {
        if let Some(inner) = Arc::get_mut(&mut self.inner) {
            inner.max_depth = depth;
        }
        self
    }
}

fn stream_key(queue: &str) -> String {
    format!("skiff:q:{queue}")
}

#[async_trait::async_trait]
impl Queues for RedisQueues {
    fn describe(&self) -> String {
        format!("Redis at {}", self.inner.redis.target())
    }

    async fn publish(&self, queue: &str, message: &Message) -> Result<(), StoreError> {
        check_queue_name(queue)?;
        check_message(message)?;
        let mut invocation = self.inner.publish.prepare_invoke();
        invocation
            .key(stream_key(queue))
            .arg(GROUP)
            .arg(self.inner.max_depth)
            .arg("0")
            .arg(message_codec::encode(message));
        let added: i64 = self.inner.redis.invoke(&invocation).await?;
        if added == 0 {
            return Err(full(queue, self.inner.max_depth));
        }
        Ok(())
    }

    fn consumer(&self, queue: &str, name: &str) -> Result<Box<dyn Consumer>, StoreError> {
        check_queue_name(queue)?;
        check_queue_name(name)?;
        Ok(Box::new(RedisConsumer {
            inner: self.inner.clone(),
            queue: queue.to_string(),
            key: stream_key(queue),
            name: name.to_string(),
            blocking: tokio::sync::Mutex::new(None),
        }))
    }

    async fn depth(&self, queue: &str) -> Result<QueueDepth, StoreError> {
        check_queue_name(queue)?;
        let messages: u64 = self
            .inner
            .redis
            .query(::redis::cmd("XLEN").arg(stream_key(queue)))
            .await?;
        Ok(QueueDepth { messages })
    }
}

struct RedisConsumer {
    inner: Arc<Inner>,
    queue: String,
    key: String,
    name: String,
    /// The connection blocking reads wait on, and the wait it was made for.
    blocking: tokio::sync::Mutex<Option<(Duration, RedisConnection)>>,
}

impl RedisConsumer {
    /// Makes the group (and the stream) if there is none yet: a consumer may come before the
    /// first message, or after Redis lost its data.
    async fn make_group(&self) -> Result<(), StoreError> {
        let made = self
            .inner
            .redis
            .query::<()>(
                ::redis::cmd("XGROUP")
                    .arg("CREATE")
                    .arg(&self.key)
                    .arg(GROUP)
                    .arg("0")
                    .arg("MKSTREAM"),
            )
            .await;
        match made {
            Err(StoreError::Unavailable(why)) if why.contains("BUSYGROUP") => Ok(()),
            other => other,
        }
    }

    /// Entries pending for longer than `idle` (their consumer failed or is gone), now this
    /// consumer's, with their attempt numbers.
    async fn reclaim(&self, count: usize, idle: Duration) -> Result<Vec<Delivery>, StoreError> {
        let redis = &self.inner.redis;
        let claimed: StreamAutoClaimReply = redis
            .query(
                ::redis::cmd("XAUTOCLAIM")
                    .arg(&self.key)
                    .arg(GROUP)
                    .arg(&self.name)
                    .arg(idle.as_millis() as u64)
                    .arg("0-0")
                    .arg("COUNT")
                    .arg(count),
            )
            .await?;
        if claimed.claimed.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = ::redis::pipe();
        for entry in &claimed.claimed {
            pipe.cmd("XPENDING")
                .arg(&self.key)
                .arg(GROUP)
                .arg(&entry.id)
                .arg(&entry.id)
                .arg(1);
        }
        let pending: Vec<StreamPendingCountReply> = redis.pipeline(&pipe).await?;
        let mut deliveries = Vec::with_capacity(claimed.claimed.len());
        for (entry, pending) in claimed.claimed.iter().zip(pending) {
            let attempt = pending
                .ids
                .first()
                .map_or(1, |p| u32::try_from(p.times_delivered).unwrap_or(u32::MAX));
            if let Some(delivery) = self.delivery(entry, attempt).await? {
                deliveries.push(delivery);
            }
        }
        Ok(deliveries)
    }

    /// An entry as a delivery; `None` (and the entry acknowledged and deleted) if it does not
    /// hold a message skiff wrote: nobody could ever handle it.
    async fn delivery(
        &self,
        entry: &StreamId,
        attempt: u32,
    ) -> Result<Option<Delivery>, StoreError> {
        let decoded = match entry.map.get(FIELD) {
            Some(Value::BulkString(bytes)) => message_codec::decode(bytes),
            _ => None,
        };
        match decoded {
            Some(message) => Ok(Some(Delivery {
                id: entry.id.clone(),
                message,
                attempt,
            })),
            None => {
                tracing::warn!(
                    queue = %self.queue,
                    "dropping entry {} of the queue: it does not hold a message skiff wrote",
                    entry.id
                );
                self.ack(&entry.id).await?;
                Ok(None)
            }
        }
    }

    /// The connection for blocking reads of up to `wait`, made on first use.
    async fn blocking_connection(
        &self,
        wait: Duration,
    ) -> tokio::sync::MappedMutexGuard<'_, RedisConnection> {
        let mut slot = self.blocking.lock().await;
        if slot.as_ref().is_some_and(|(made_for, _)| *made_for < wait) {
            *slot = None;
        }
        tokio::sync::MutexGuard::map(slot, |slot| {
            let (_, connection) = slot.get_or_insert_with(|| {
                (wait, self.inner.redis.with_timeout(wait + DEFAULT_TIMEOUT))
            });
            connection
        })
    }
}

/// Redis' error text for an operation on a group that does not exist.
fn no_group(err: &StoreError) -> bool {
    matches!(err, StoreError::Unavailable(why) if why.contains("NOGROUP"))
}

#[async_trait::async_trait]
impl Consumer for RedisConsumer {
    async fn receive(
        &self,
        count: usize,
        redeliver_after: Duration,
        wait: Duration,
    ) -> Result<Vec<Delivery>, StoreError> {
        let count = count.max(1);
        let mut deliveries = match self.reclaim(count, redeliver_after).await {
            Err(err) if no_group(&err) => {
                self.make_group().await?;
                Vec::new()
            }
            other => other?,
        };
        if deliveries.len() >= count {
            return Ok(deliveries);
        }
        let mut read = ::redis::cmd("XREADGROUP");
        read.arg("GROUP")
            .arg(GROUP)
            .arg(&self.name)
            .arg("COUNT")
            .arg(count - deliveries.len());
        // Wait only when there is nothing to hand back yet.
        let wait = if deliveries.is_empty() {
            wait
        } else {
            Duration::ZERO
        };
        if !wait.is_zero() {
            read.arg("BLOCK").arg(wait.as_millis().max(1) as u64);
        }
        read.arg("STREAMS").arg(&self.key).arg(">");
        let reply: Result<Option<StreamReadReply>, StoreError> = if wait.is_zero() {
            self.inner.redis.query(&read).await
        } else {
            self.blocking_connection(wait).await.query(&read).await
        };
        let reply = match reply {
            Err(err) if no_group(&err) => {
                self.make_group().await?;
                None
            }
            other => other?,
        };
        for stream in reply.map(|r| r.keys).unwrap_or_default() {
            for entry in &stream.ids {
                if let Some(delivery) = self.delivery(entry, 1).await? {
                    deliveries.push(delivery);
                }
            }
        }
        Ok(deliveries)
    }

    async fn ack(&self, id: &str) -> Result<(), StoreError> {
        let mut pipe = ::redis::pipe();
        pipe.atomic()
            .cmd("XACK")
            .arg(&self.key)
            .arg(GROUP)
            .arg(id)
            .ignore()
            .cmd("XDEL")
            .arg(&self.key)
            .arg(id)
            .ignore();
        self.inner.redis.pipeline::<()>(&pipe).await
    }

    async fn dead_letter(
        &self,
        delivery: &Delivery,
        dead: &str,
        reason: &str,
    ) -> Result<(), StoreError> {
        check_queue_name(dead)?;
        let message = dead_message(delivery, &self.queue, reason);
        let mut invocation = self.inner.dead_letter.prepare_invoke();
        invocation
            .key(&self.key)
            .key(stream_key(dead))
            .arg(GROUP)
            .arg(&delivery.id)
            .arg(self.inner.max_depth)
            .arg(message_codec::encode(&message));
        self.inner.redis.invoke::<i64>(&invocation).await.map(drop)
    }
}
