//! The native baseline of the queue benchmark (bench/queues.py): consumes the Redis stream
//! QUEUE-KEY as skiff's queue trigger does (crates/skiff-triggers/src/consume.rs with
//! crates/skiff-store/src/redis_queue.rs) and transforms each message as
//! bench/queues/transform-guest does, natively:
//!
//! - reads only when a slot is free, as many messages as there are free slots (at most
//!   BATCH, default min(CONCURRENCY, 10)): `XAUTOCLAIM` (messages whose consumer died) then
//!   `XREADGROUP GROUP skiff NAME COUNT n BLOCK 2000` on a connection of its own;
//! - each message in a task of its own, at most CONCURRENCY at once: decodes it (skiff's
//!   message codec, copied below), upper-cases its data and publishes the result to
//!   RESULTS-KEY with skiff's publish script (`XLEN` check, group, `XADD`), then acknowledges
//!   it (`MULTI XACK XDEL EXEC`).
//!
//! So the Redis work per message is skiff's, and what the comparison shows is what the
//! component, its sandbox and the trigger's bookkeeping cost on top.
//!
//!     native-consumer REDIS-URL QUEUE-KEY RESULTS-KEY CONCURRENCY [BATCH]
//!
//! It runs until killed.

use std::sync::Arc;
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::streams::{StreamAutoClaimReply, StreamReadReply};
use redis::{Script, Value};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// skiff's consumer group and the one field of an entry.
const GROUP: &str = "skiff";
const FIELD: &str = "m";
/// skiff's defaults: a queue's most messages, a read's wait, `retry_after`.
const MAX_DEPTH: u64 = 100_000;
const RECEIVE_WAIT: Duration = Duration::from_secs(2);
const RETRY_AFTER: Duration = Duration::from_secs(30);

/// skiff's publish script (crates/skiff-store/src/redis_queue.rs) as it was when this was
/// measured; skiff's now also keeps its tenant's byte count (one GET and one INCRBY more inside
/// the script, and its acknowledgement is a script too).
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

struct Consumer {
    shared: ConnectionManager,
    blocking: ConnectionManager,
    key: String,
    results: String,
    name: String,
    publish: Script,
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() < 4 {
        eprintln!("usage: native-consumer REDIS-URL QUEUE-KEY RESULTS-KEY CONCURRENCY [BATCH]");
        std::process::exit(2);
    }
    let concurrency: usize = args[3].parse().expect("CONCURRENCY: a number");
    let batch: usize = match args.get(4) {
        Some(batch) => batch.parse().expect("BATCH: a number"),
        None => concurrency.min(10),
    };
    let client = redis::Client::open(args[0].as_str()).expect("a Redis URL");
    let config = || {
        ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(5)))
            .set_response_timeout(Some(RECEIVE_WAIT + Duration::from_secs(5)))
            .set_number_of_retries(1)
    };
    let shared = ConnectionManager::new_with_config(client.clone(), config())
        .await
        .expect("cannot reach Redis");
    let blocking = ConnectionManager::new_with_config(client, config())
        .await
        .expect("cannot reach Redis");
    let consumer = Arc::new(Consumer {
        shared,
        blocking,
        key: args[1].clone(),
        results: args[2].clone(),
        name: format!("native-{}", std::process::id()),
        publish: Script::new(PUBLISH_LUA),
    });
    consumer.read(concurrency, batch.max(1)).await;
}

impl Consumer {
    /// Reads as slots free up and starts a task for each message, forever.
    async fn read(self: Arc<Self>, concurrency: usize, batch: usize) {
        let permits = Arc::new(Semaphore::new(concurrency));
        loop {
            let first = permits.clone().acquire_owned().await.expect("never closed");
            let mut held = vec![first];
            while held.len() < batch {
                match permits.clone().try_acquire_owned() {
                    Ok(permit) => held.push(permit),
                    Err(_) => break,
                }
            }
            match self.receive(held.len()).await {
                Ok(entries) => {
                    for (id, bytes) in entries {
                        let Some(permit) = held.pop() else { break };
                        tokio::spawn(self.clone().handle(id, bytes, permit));
                    }
                }
                Err(err) => {
                    eprintln!("native-consumer: cannot read the queue: {err}");
                    drop(held);
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }

    /// Up to `count` entries: first those pending too long, then new ones (waiting only
    /// when there is nothing yet).
    async fn receive(&self, count: usize) -> redis::RedisResult<Vec<(String, Vec<u8>)>> {
        let mut shared = self.shared.clone();
        let claimed: redis::RedisResult<StreamAutoClaimReply> = redis::cmd("XAUTOCLAIM")
            .arg(&self.key)
            .arg(GROUP)
            .arg(&self.name)
            .arg(RETRY_AFTER.as_millis() as u64)
            .arg("0-0")
            .arg("COUNT")
            .arg(count)
            .query_async(&mut shared)
            .await;
        let mut entries = Vec::new();
        match claimed {
            Ok(claimed) => entries.extend(claimed.claimed.iter().filter_map(entry)),
            Err(err) if err.code() == Some("NOGROUP") => self.make_group().await?,
            Err(err) => return Err(err),
        }
        if entries.len() >= count {
            return Ok(entries);
        }
        let mut read = redis::cmd("XREADGROUP");
        read.arg("GROUP")
            .arg(GROUP)
            .arg(&self.name)
            .arg("COUNT")
            .arg(count - entries.len());
        let reply: redis::RedisResult<Option<StreamReadReply>> = if entries.is_empty() {
            read.arg("BLOCK")
                .arg(RECEIVE_WAIT.as_millis() as u64)
                .arg("STREAMS")
                .arg(&self.key)
                .arg(">");
            read.query_async(&mut self.blocking.clone()).await
        } else {
            read.arg("STREAMS").arg(&self.key).arg(">");
            read.query_async(&mut shared).await
        };
        let reply = match reply {
            Err(err) if err.code() == Some("NOGROUP") => {
                self.make_group().await?;
                None
            }
            other => other?,
        };
        for stream in reply.map(|r| r.keys).unwrap_or_default() {
            entries.extend(stream.ids.iter().filter_map(entry));
        }
        Ok(entries)
    }

    async fn make_group(&self) -> redis::RedisResult<()> {
        let made: redis::RedisResult<()> = redis::cmd("XGROUP")
            .arg("CREATE")
            .arg(&self.key)
            .arg(GROUP)
            .arg("0")
            .arg("MKSTREAM")
            .query_async(&mut self.shared.clone())
            .await;
        match made {
            Err(err) if err.code() == Some("BUSYGROUP") => Ok(()),
            other => other,
        }
    }

    /// One message: the transform, its result published, then the acknowledgement. The
    /// slot is held until all is done.
    async fn handle(self: Arc<Self>, id: String, bytes: Vec<u8>, _permit: OwnedSemaphorePermit) {
        let mut shared = self.shared.clone();
        let Some(mut message) = codec::decode(&bytes) else {
            eprintln!("native-consumer: entry {id} does not hold a message skiff wrote");
            return;
        };
        message.data.make_ascii_uppercase();
        let result = codec::Message {
            data: message.data,
            content_type: None,
            metadata: Vec::new(),
        };
        let published: redis::RedisResult<i64> = self
            .publish
            .key(&self.results)
            .arg(GROUP)
            .arg(MAX_DEPTH)
            .arg("0")
            .arg(codec::encode(&result))
            .invoke_async(&mut shared)
            .await;
        match published {
            Ok(1) => {}
            Ok(_) => {
                eprintln!("native-consumer: {} is full; {id} is delivered again later", self.results);
                return;
            }
            Err(err) => {
                eprintln!("native-consumer: cannot publish the result of {id}: {err}");
                return;
            }
        }
        let mut ack = redis::pipe();
        ack.atomic()
            .cmd("XACK")
            .arg(&self.key)
            .arg(GROUP)
            .arg(&id)
            .ignore()
            .cmd("XDEL")
            .arg(&self.key)
            .arg(&id)
            .ignore();
        if let Err(err) = ack.query_async::<()>(&mut shared).await {
            eprintln!("native-consumer: cannot acknowledge {id}: {err}");
        }
    }
}

/// An entry's id and encoded message (its field `m`).
fn entry(entry: &redis::streams::StreamId) -> Option<(String, Vec<u8>)> {
    match entry.map.get(FIELD) {
        Some(Value::BulkString(bytes)) => Some((entry.id.clone(), bytes.clone())),
        _ => None,
    }
}

/// skiff's message codec (crates/skiff-store/src/message_codec.rs), copied: a version byte,
/// the data, the content type (a presence byte, then it) and the metadata (a count, then
/// each key and value), every variable part preceded by its length as a 4-byte
/// little-endian number.
mod codec {
    const VERSION: u8 = 1;

    #[derive(Debug, Default, PartialEq)]
    pub struct Message {
        pub data: Vec<u8>,
        pub content_type: Option<String>,
        pub metadata: Vec<(String, String)>,
    }

    pub fn encode(message: &Message) -> Vec<u8> {
        let metadata_bytes: usize = message
            .metadata
            .iter()
            .map(|(key, value)| 8 + key.len() + value.len())
            .sum();
        let mut out = Vec::with_capacity(14 + message.data.len() + metadata_bytes);
        out.push(VERSION);
        put(&mut out, &message.data);
        match &message.content_type {
            Some(content_type) => {
                out.push(1);
                put(&mut out, content_type.as_bytes());
            }
            None => out.push(0),
        }
        out.extend_from_slice(&(message.metadata.len() as u32).to_le_bytes());
        for (key, value) in &message.metadata {
            put(&mut out, key.as_bytes());
            put(&mut out, value.as_bytes());
        }
        out
    }

    pub fn decode(bytes: &[u8]) -> Option<Message> {
        let mut reader = Reader { bytes };
        if reader.byte()? != VERSION {
            return None;
        }
        let data = reader.part()?.to_vec();
        let content_type = match reader.byte()? {
            0 => None,
            1 => Some(reader.text()?),
            _ => return None,
        };
        let count = reader.number()?;
        let mut metadata = Vec::new();
        for _ in 0..count {
            metadata.push((reader.text()?, reader.text()?));
        }
        reader.bytes.is_empty().then_some(Message {
            data,
            content_type,
            metadata,
        })
    }

    fn put(out: &mut Vec<u8>, part: &[u8]) {
        out.extend_from_slice(&(part.len() as u32).to_le_bytes());
        out.extend_from_slice(part);
    }

    struct Reader<'a> {
        bytes: &'a [u8],
    }

    impl<'a> Reader<'a> {
        fn take(&mut self, count: usize) -> Option<&'a [u8]> {
            if self.bytes.len() < count {
                return None;
            }
            let (taken, rest) = self.bytes.split_at(count);
            self.bytes = rest;
            Some(taken)
        }

        fn byte(&mut self) -> Option<u8> {
            Some(self.take(1)?[0])
        }

        fn number(&mut self) -> Option<usize> {
            let bytes: [u8; 4] = self.take(4)?.try_into().ok()?;
            usize::try_from(u32::from_le_bytes(bytes)).ok()
        }

        fn part(&mut self) -> Option<&'a [u8]> {
            let length = self.number()?;
            self.take(length)
        }

        fn text(&mut self) -> Option<String> {
            String::from_utf8(self.part()?.to_vec()).ok()
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn round_trip() {
            let message = Message {
                data: b"\0binary\xff".to_vec(),
                content_type: Some("application/json".into()),
                metadata: vec![("b".into(), "2".into())],
            };
            assert_eq!(decode(&encode(&message)), Some(message));
        }
    }
}
