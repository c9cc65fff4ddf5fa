//! The Redis backend: for several skiff hosts that must share state. Every host points at the
//! same Redis; Redis runs each command (and each Lua script) alone, which makes `increment` and
//! `compare_and_swap` atomic across hosts.
//!
//! Keys are stored as `skiff:{len}:{namespace}:{key}`, where `len` is the namespace's length in
//! bytes. The length makes the split unambiguous: namespace `a:b` with key `c` is
//! `skiff:3:a:b:c`, namespace `a` with key `b:c` is `skiff:1:a:b:c`. Listing uses `SCAN` with
//! `MATCH skiff:{len}:{namespace}:*`, the namespace's glob characters escaped.
//!
//! Availability: [`RedisBackend::connect`] does no I/O, so skiff starts while Redis is down.
//! The connection is made on first use and remade by itself after Redis goes away
//! (`redis::aio::ConnectionManager`); meanwhile operations fail with
//! [`StoreError::Unavailable`], and work again once Redis is back, with no restart. Every call
//! is bounded by a timeout ([`DEFAULT_TIMEOUT`] unless [`RedisBackend::with_timeout`] says
//! otherwise), so a Redis that hangs cannot hold a request forever. Error messages name Redis by
//! address and never include the password from the URL.

use std::collections::HashSet;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use ::redis::{RedisError, Script};

use crate::{
    Backend, KeyPage, LIST_PAGE_KEYS, RedisConnection, Store, StoreError, check_key, check_value,
    parse_counter,
};

/// Most `SCAN` steps in one page of `list_keys`: a namespace that is small next to the whole
/// Redis database gets pages with few (even no) keys, rather than one call that walks the whole
/// database.
const MAX_SCANS_PER_PAGE: usize = 16;

/// `INCRBY`, refusing a value that is not a canonical decimal counter (the contract's rule, which
/// `INCRBY` alone would not enforce: it takes `-5`), with errors the backend can tell apart.
/// It returns the new value as the stored text, not `INCRBY`'s reply: Lua turns integer replies
/// into doubles, which round counters past 2^53.
const INCREMENT_LUA: &str = r"
local v = redis.call('GET', KEYS[1])
if v and not (string.match(v, '^[0-9]+$') and (#v == 1 or string.sub(v, 1, 1) ~= '0')) then
  return redis.error_reply('SKIFF_NOT_COUNTER the value is not a counter')
end
local r = redis.pcall('INCRBY', KEYS[1], ARGV[1])
if type(r) == 'table' and r.err then
  return redis.error_reply('SKIFF_OVERFLOW ' .. r.err)
end
return redis.call('GET', KEYS[1])
";

/// Compare-and-swap in one script, so that nothing runs between the compare and the set.
/// `ARGV[1]` is `1` when a current value is expected (`ARGV[2]`), `0` when the key must be absent.
const CAS_LUA: &str = r"
local cur = redis.call('GET', KEYS[1])
if ARGV[1] == '1' then
  if cur ~= ARGV[2] then return 0 end
elseif cur then
  return 0
end
redis.call('SET', KEYS[1], ARGV[3])
return 1
";

/// A Redis server (or anything speaking its protocol) holding any number of namespaces.
#[derive(Clone)]
pub struct RedisBackend {
    shared: Arc<Shared>,
}

struct Shared {
    redis: RedisConnection,
    increment: Script,
    compare_and_swap: Script,
}

impl RedisBackend {
    /// A backend for the Redis at `url` (`redis://[user:password@]host[:port][/db]`, or
    /// `rediss://`, `redis+unix://`). Only parses the URL: connecting happens on first use, so
    /// this succeeds while Redis is down. Fails with [`StoreError::Invalid`] on a malformed URL.
    pub fn connect(url: &str) -> Result<Self, StoreError> {
        Ok(Self::build(RedisConnection::open(url)?))
    }

    /// The same backend with another bound on each Redis call (default [`REDIS_DEFAULT_TIMEOUT`](crate::REDIS_DEFAULT_TIMEOUT)).
    /// Call it before opening stores: stores already opened keep the old connection.
    pub fn with_timeout(self, timeout: Duration) -> Self {
        Self::build(self.shared.redis.with_timeout(timeout))
    }

    fn build(redis: RedisConnection) -> Self {
        Self {
            shared: Arc::new(Shared {
                redis,
                increment: Script::new(INCREMENT_LUA),
                compare_and_swap: Script::new(CAS_LUA),
            }),
        }
    }

    /// Redis' address and database number, as shown in messages (no credentials).
    pub fn target(&self) -> &str {
        self.shared.redis.target()
    }
}

impl fmt::Debug for RedisBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisBackend")
            .field("target", &self.shared.redis.target())
            .field("timeout", &self.shared.redis.timeout())
            .finish()
    }
}

impl Backend for RedisBackend {
    fn open(&self, namespace: &str) -> Arc<dyn Store> {
        Arc::new(RedisStore {
            shared: self.shared.clone(),
            prefix: key_prefix(namespace),
            pattern: format!("skiff:{}:{}:*", namespace.len(), glob_escape(namespace)),
        })
    }
}

struct RedisStore {
    shared: Arc<Shared>,
    /// `skiff:{len}:{namespace}:`
    prefix: String,
    /// `SCAN` pattern matching exactly the keys under `prefix`.
    pattern: String,
}

impl RedisStore {
    fn key(&self, key: &str) -> String {
        format!("{}{key}", self.prefix)
    }

    fn keys(&self, keys: &[String]) -> Result<Vec<String>, StoreError> {
        keys.iter()
            .map(|k| check_key(k).map(|()| self.key(k)))
            .collect()
    }
}

#[async_trait::async_trait]
impl Store for RedisStore {
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        check_key(key)?;
        self.shared
            .redis
            .query(::redis::cmd("GET").arg(self.key(key)))
            .await
    }

    async fn set(&self, key: &str, value: &[u8]) -> Result<(), StoreError> {
        check_key(key)?;
        check_value(value)?;
        self.shared
            .redis
            .query(::redis::cmd("SET").arg(self.key(key)).arg(value))
            .await
    }

    async fn delete(&self, key: &str) -> Result<(), StoreError> {
        check_key(key)?;
        self.shared
            .redis
            .query(::redis::cmd("DEL").arg(self.key(key)))
            .await
    }

    async fn exists(&self, key: &str) -> Result<bool, StoreError> {
        check_key(key)?;
        self.shared
            .redis
            .query(::redis::cmd("EXISTS").arg(self.key(key)))
            .await
    }

    async fn list_keys(&self, cursor: Option<u64>) -> Result<KeyPage, StoreError> {
        // Redis' own SCAN cursor is the page cursor: SCAN keeps no state between calls, so any
        // host can continue a listing another began. One page joins several SCAN steps until it
        // is nearly full. A step that would overflow the page is dropped and its starting
        // cursor returned instead, so the next page does that step again and no key is lost.
        let mut scan_cursor = cursor.unwrap_or(0);
        let mut keys: Vec<String> = Vec::new();
        let mut seen = HashSet::new();
        let mut scans = 0;
        while scans < MAX_SCANS_PER_PAGE && keys.len() < LIST_PAGE_KEYS * 9 / 10 {
            scans += 1;
            let room = LIST_PAGE_KEYS - keys.len();
            // COUNT is a hint that a step can pass by a few keys (a whole hash bucket comes back
            // at once); asking for less than the room left keeps steps from overflowing.
            let mut count = (room * 3 / 4).max(1);
            let (next, batch) = loop {
                let (next, found): (u64, Vec<Vec<u8>>) = self
                    .shared
                    .redis
                    .query(
                        ::redis::cmd("SCAN")
                            .arg(scan_cursor)
                            .arg("MATCH")
                            .arg(&self.pattern)
                            .arg("COUNT")
                            .arg(count),
                    )
                    .await?;
                let batch: Vec<String> = found
                    .into_iter()
                    .filter_map(|k| {
                        // A key that is not UTF-8 was not written through this API, and could
                        // not be read through it: leave it out.
                        let k = k.strip_prefix(self.prefix.as_bytes())?.to_vec();
                        String::from_utf8(k).ok()
                    })
                    .filter(|k| !seen.contains(k))
                    .collect();
                if keys.len() + batch.len() <= LIST_PAGE_KEYS || count == 1 {
                    break (next, batch);
                }
                if !keys.is_empty() {
                    return Ok(KeyPage {
                        keys,
                        cursor: Some(scan_cursor),
                    });
                }
                // An empty page and still too many: the smallest step is one bucket. Should
                // even that overflow, the page is returned whole rather than lose keys.
                count = 1;
            };
            for k in batch {
                if seen.insert(k.clone()) {
                    keys.push(k);
                }
            }
            scan_cursor = next;
            if next == 0 {
                return Ok(KeyPage { keys, cursor: None });
            }
        }
        Ok(KeyPage {
            keys,
            cursor: Some(scan_cursor),
        })
    }

    async fn increment(&self, key: &str, delta: u64) -> Result<u64, StoreError> {
        check_key(key)?;
        let delta = i64::try_from(delta).map_err(|_| {
            StoreError::Invalid(format!(
                "cannot increment by {delta}: Redis counters take steps up to {}",
                i64::MAX
            ))
        })?;
        let key = self.key(key);
        let shared = &self.shared;
        let result: Result<Vec<u8>, RedisError> = shared
            .redis
            .timed(async {
                let mut connection = shared.redis.connection().await?;
                Ok(shared
                    .increment
                    .key(&key)
                    .arg(delta)
                    .invoke_async(&mut connection)
                    .await)
            })
            .await?;
        match result {
            Ok(text) => parse_counter(&text).ok_or_else(|| {
                StoreError::Unavailable(format!(
                    "Redis at {} answered an increment with {:?}, not a counter",
                    shared.redis.target(),
                    String::from_utf8_lossy(&text)
                ))
            }),
            Err(e) if e.code() == Some("SKIFF_NOT_COUNTER") => Err(StoreError::Invalid(
                "cannot increment: the value is not a counter (decimal digits)".into(),
            )),
            Err(e) if e.code() == Some("SKIFF_OVERFLOW") => Err(StoreError::Invalid(format!(
                "cannot increment by {delta}: the counter would pass {}, the largest a Redis \
                 counter holds",
                i64::MAX
            ))),
            Err(e) => Err(shared.redis.error(&e)),
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
        let key = self.key(key);
        let shared = &self.shared;
        shared
            .redis
            .timed(async {
                let mut connection = shared.redis.connection().await?;
                let swapped: i64 = shared
                    .compare_and_swap
                    .key(&key)
                    .arg(if expected.is_some() { "1" } else { "0" })
                    .arg(expected.unwrap_or_default())
                    .arg(new)
                    .invoke_async(&mut connection)
                    .await
                    .map_err(|e| shared.redis.error(&e))?;
                Ok(swapped == 1)
            })
            .await
    }

    async fn get_many(&self, keys: &[String]) -> Result<Vec<Option<Vec<u8>>>, StoreError> {
        let keys = self.keys(keys)?;
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        self.shared
            .redis
            .query(::redis::cmd("MGET").arg(keys))
            .await
    }

    async fn set_many(&self, entries: &[(String, Vec<u8>)]) -> Result<(), StoreError> {
        let mut cmd = ::redis::cmd("MSET");
        for (key, value) in entries {
            check_key(key)?;
            check_value(value)?;
            cmd.arg(self.key(key)).arg(value.as_slice());
        }
        if entries.is_empty() {
            return Ok(());
        }
        self.shared.redis.query(&cmd).await
    }

    async fn delete_many(&self, keys: &[String]) -> Result<(), StoreError> {
        let keys = self.keys(keys)?;
        if keys.is_empty() {
            return Ok(());
        }
        self.shared.redis.query(::redis::cmd("DEL").arg(keys)).await
    }
}

/// What every key of `namespace` starts with. The length makes the namespace's end certain even
/// when it contains `:`.
fn key_prefix(namespace: &str) -> String {
    format!("skiff:{}:{namespace}:", namespace.len())
}

/// Escapes the characters `SCAN MATCH` treats as glob syntax, so that a namespace such as
/// `a*` matches only itself.
fn glob_escape(s: &str) -> String {
    let mut escaped = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            escaped.push('\\');
        }
        escaped.push(c);
    }
    escaped
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn glob_characters_are_escaped() {
        assert_eq!(glob_escape(r"a*b?c[d]e\f"), r"a\*b\?c\[d\]e\\f");
        assert_eq!(glob_escape("plain:ns"), "plain:ns");
    }

    #[test]
    fn namespaces_cannot_collide() {
        let key = |ns: &str, k: &str| format!("{}{k}", key_prefix(ns));
        assert_eq!(key("a:b", "c"), "skiff:3:a:b:c");
        assert_eq!(key("a", "b:c"), "skiff:1:a:b:c");
        assert_eq!(key("", "x"), "skiff:0::x");
    }

    #[test]
    fn passwords_never_reach_messages() {
        let url = "redis://admin:s3cret-pw@db.internal:6380/2";
        let backend = RedisBackend::connect(url).unwrap();
        assert_eq!(backend.target(), "db.internal:6380/2");
        let message = backend
            .shared
            .redis
            .scrub("auth failed for admin:s3cret-pw (s3cret-pw)");
        assert!(!message.contains("s3cret-pw"), "{message}");

        let bad = RedisBackend::connect("redis://user:hunter2@[bad/0").unwrap_err();
        assert!(matches!(bad, StoreError::Invalid(_)));
        assert!(!bad.to_string().contains("hunter2"), "{bad}");
    }

    #[test]
    fn connecting_does_no_io() {
        // Port 1 has nothing listening: connect must still succeed.
        assert!(RedisBackend::connect("redis://127.0.0.1:1/0").is_ok());
    }
}
