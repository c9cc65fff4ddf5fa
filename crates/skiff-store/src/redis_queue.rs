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
    full, owner_full, owner_of,
};
use crate::redis_connection::{DEFAULT_TIMEOUT, RedisConnection};
use crate::{StoreError, message_codec};

/// The consumer group every consumer of a queue joins.
const GROUP: &str = "skiff";
/// The one field of an entry: the message, encoded.
const FIELD: &str = "m";

/// Appends to a queue unless it, or its owner's queues together, are full. KEYS: stream, the
/// owner's byte count. ARGV: group, most entries, the encoded message, the owner's most
/// bytes. Returns 1, or 0 for a full queue, or -1 for a full owner. The group is made with
/// the stream, from its start, so that nothing published before the first consumer came is
/// missed.
const PUBLISH_LUA: &str = r"
if redis.call('XLEN', KEYS[1]) >= tonumber(ARGV[2]) then return 0 end
local held = tonumber(redis.call('GET', KEYS[2]) or '0')
if held + #ARGV[3] > tonumber(ARGV[4]) then return -1 end
redis.pcall('XGROUP', 'CREATE', KEYS[1], ARGV[1], '0', 'MKSTREAM')
redis.call('XADD', KEYS[1], '*', 'm', ARGV[3])
redis.call('INCRBY', KEYS[2], #ARGV[3])
return 1
";

/// Lua helpers of the scripts below: `gone(key, entry)` takes an entry's message bytes off
/// the owner's count (never below zero: a count lost with Redis' data starts again at zero).
const BYTES_LUA: &str = r"
local function gone(count, entry)
  local fields = entry[2]
  for i = 1, #fields, 2 do
    if fields[i] == 'm' then
      if redis.call('DECRBY', count, #fields[i + 1]) < 0 then redis.call('SET', count, 0) end
    end
  end
end
";

/// Acknowledges and deletes an entry, taking its bytes off its owner's count. KEYS: stream,
/// the owner's byte count. ARGV: group, entry id.
const ACK_LUA: &str = r"
local entry = redis.call('XRANGE', KEYS[1], ARGV[2], ARGV[2])
redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
if redis.call('XDEL', KEYS[1], ARGV[2]) == 1 and #entry == 1 then gone(KEYS[2], entry[1]) end
return 1
";

/// Moves an entry to a dead-letter queue of the same owner: it leaves its queue, and the dead
/// queue takes it even when full (its oldest entries go, their bytes with them). KEYS: stream,
/// dead stream, the owner's byte count. ARGV: group, entry id, most entries of the dead queue,
/// the encoded dead message. Nothing happens for an entry already gone (moved or handled).
const DEAD_LETTER_LUA: &str = r"
local entry = redis.call('XRANGE', KEYS[1], ARGV[2], ARGV[2])
redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
if redis.call('XDEL', KEYS[1], ARGV[2]) == 0 or #entry == 0 then return 0 end
gone(KEYS[3], entry[1])
redis.pcall('XGROUP', 'CREATE', KEYS[2], ARGV[1], '0', 'MKSTREAM')
while redis.call('XLEN', KEYS[2]) >= tonumber(ARGV[3]) do
  local oldest = redis.call('XRANGE', KEYS[2], '-', '+', 'COUNT', 1)
  if #oldest == 0 then break end
  redis.call('XDEL', KEYS[2], oldest[1][1])
  gone(KEYS[3], oldest[1])
end
redis.call('XADD', KEYS[2], '*', 'm', ARGV[4])
redis.call('INCRBY', KEYS[3], #ARGV[4])
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
    max_owner_bytes: u64,
    publish: Script,
    ack: Script,
    dead_letter: Script,
}

impl RedisQueues {
    /// Queues in the Redis at `url`. Only parses the URL: it connects on first use.
    pub fn connect(url: &str) -> Result<RedisQueues, StoreError> {
        Ok(RedisQueues {
            inner: Arc::new(Inner {
                redis: RedisConnection::open(url)?,
                max_depth: crate::queue::DEFAULT_MAX_QUEUE_DEPTH,
                max_owner_bytes: crate::queue::DEFAULT_MAX_OWNER_BYTES,
                publish: Script::new(PUBLISH_LUA),
                ack: Script::new(&format!("{BYTES_LUA}{ACK_LUA}")),
                dead_letter: Script::new(&format!("{BYTES_LUA}{DEAD_LETTER_LUA}")),
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

    /// The same queues, each owner's holding at most `bytes` together. Right after `connect`.
    pub fn with_max_owner_bytes(mut self, bytes: u64) -> RedisQueues {
        if let Some(inner) = Arc::get_mut(&mut self.inner) {
            inner.max_owner_bytes = bytes;
        }
        self
    }
}

fn stream_key(queue: &str) -> String {
    format!("skiff:q:{queue}")
}

/// The count of the bytes of messages that `queue`'s owner's queues hold.
fn owner_bytes_key(queue: &str) -> String {
    format!("skiff:qb:{}", owner_of(queue))
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
        let encoded = message_codec::encode(message);
        let size = encoded.len() as u64;
        invocation
            .key(stream_key(queue))
            .key(owner_bytes_key(queue))
            .arg(GROUP)
            .arg(self.inner.max_depth)
            .arg(encoded)
            .arg(self.inner.max_owner_bytes);
        match self.inner.redis.invoke::<i64>(&invocation).await? {
            0 => Err(full(queue, self.inner.max_depth)),
            -1 => {
                // What the owner holds now, for the message: the refusal is what counts.
                let held: u64 = self
                    .inner
                    .redis
                    .query(::redis::cmd("GET").arg(owner_bytes_key(queue)))
                    .await
                    .unwrap_or(self.inner.max_owner_bytes.saturating_sub(size));
                Err(owner_full(queue, held, self.inner.max_owner_bytes))
            }
            _ => Ok(()),
        }
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
        let mut invocation = self.inner.ack.prepare_invoke();
        invocation
            .key(&self.key)
            .key(owner_bytes_key(&self.queue))
            .arg(GROUP)
            .arg(id);
        self.inner.redis.invoke::<i64>(&invocation).await.map(drop)
    }

    async fn retry_later(
        &self,
        id: &str,
        after: Duration,
        redeliver_after: Duration,
    ) -> Result<(), StoreError> {
        // Claimed again by this consumer with its idle time set so that `XAUTOCLAIM`'s
        // `redeliver_after` is reached `after` from now; JUSTID keeps its delivery count.
        let idle = redeliver_after.saturating_sub(after.min(redeliver_after));
        self.inner
            .redis
            .query::<Value>(
                ::redis::cmd("XCLAIM")
                    .arg(&self.key)
                    .arg(GROUP)
                    .arg(&self.name)
                    .arg(0)
                    .arg(id)
                    .arg("IDLE")
                    .arg(idle.as_millis() as u64)
                    .arg("JUSTID"),
            )
            .await
            .map(drop)
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
            .key(owner_bytes_key(&self.queue))
            .arg(GROUP)
            .arg(&delivery.id)
            .arg(self.inner.max_depth)
            .arg(message_codec::encode(&message));
        self.inner.redis.invoke::<i64>(&invocation).await.map(drop)
    }
}
