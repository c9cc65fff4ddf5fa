//! The shared state of a fleet of `skiff server` hosts, in Redis: the implementation of
//! [`skiff_server::cluster::SharedState`] that `skiff server --cluster redis://…` runs on.
//!
//! Redis does the hard parts: every change is one Lua script, which Redis runs alone, so a
//! compare-and-swap and the quota checks that go with it are atomic across hosts; and every
//! change is announced on a pub/sub channel, which hosts subscribe to. There is no consensus,
//! election or gossip of skiff's own. One Redis (or a managed one with a replica for
//! failover) holds the state; a Redis Cluster is not supported (the scripts touch keys of
//! several slots).
//!
//! Keys, all under `skiff:c:` (the key-value stores of apps use `skiff:{len}:…`, so the two
//! never meet in one database):
//!
//! | key | type | holds |
//! |---|---|---|
//! | `skiff:c:tenants` | hash | tenant name → its record (JSON, token hashed) |
//! | `skiff:c:apps` | hash | app name → revision of its record |
//! | `skiff:c:app:NAME` | string | the app's record (JSON): versions, live one, stored manifests |
//! | `skiff:c:code:TENANT` | hash | app name → bytes of code live, for the tenant's quotas |
//! | `skiff:c:bundle:ID` | string | a deployed bundle as uploaded (packed) |
//! | `skiff:c:revision` | counter | the last revision given to any change |
//! | `skiff:c:host:HOST` | hash, expiring | app name → revision that host serves |
//! | `skiff:c:hosts` | sorted set | host → when its report expires (ms) |
//! | `skiff:c:usage:YYYY-MM-DD` | list, expiring | usage lines (JSON) every host wrote out that day |
//! | `skiff:c:logs:TENANT:APP` | stream, expiring | the app's newest log lines (JSON) from every host |
//! | `skiff:c:changes` | channel | `tenant NAME` or `app NAME` on every change |
//!
//! Availability: connecting does no I/O, so a host starts while Redis is down, serves what it
//! had, and refuses changes; the connection is remade by itself when Redis is back. Every call
//! is bounded by a timeout. Messages name Redis by address and never show a password.

#![forbid(unsafe_code)]

mod leases;
pub use leases::RedisLeases;

use std::collections::HashMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures_util::StreamExt;
use redis::{Cmd, Script};
use skiff_server::cluster::{AppSwap, Change, SharedError, SharedState, SwapOutcome};
use skiff_store::{RedisConnection, StoreError};

const TENANTS: &str = "skiff:c:tenants";
const APPS: &str = "skiff:c:apps";
const REVISION: &str = "skiff:c:revision";
const HOSTS: &str = "skiff:c:hosts";
const CHANGES: &str = "skiff:c:changes";

/// How long a day of usage stays in Redis: longer than a usage query may reach back.
const USAGE_KEPT: Duration = Duration::from_secs(400 * 24 * 60 * 60);

/// Log lines kept per app (about: Redis trims whole blocks of a stream).
const LOG_LINES_KEPT: usize = 1000;
/// How long the lines of an app that logs nothing more are kept.
const LOGS_KEPT: Duration = Duration::from_secs(7 * 24 * 60 * 60);

/// Announcements a slow host may have waiting before it reads everything instead.
const CHANGE_BACKLOG: usize = 1024;

/// Tenant compare-and-swap. KEYS: tenants, revision. ARGV: name, expected (`-` absent, else
/// `=` then the record), new record (empty: remove), channel.
const SWAP_TENANT_LUA: &str = r"
local current = redis.call('HGET', KEYS[1], ARGV[1])
if ARGV[2] == '-' then
  if current then return 0 end
elseif current ~= string.sub(ARGV[2], 2) then
  return 0
end
if ARGV[3] == '' then
  redis.call('HDEL', KEYS[1], ARGV[1])
else
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[3])
end
local revision = redis.call('INCR', KEYS[2])
redis.call('PUBLISH', ARGV[4], 'tenant ' .. ARGV[1] .. ' ' .. revision)
return 1
";

/// App compare-and-swap with the tenant's quotas. KEYS: app record, apps, tenant's code,
/// tenants, revision. ARGV: name, expected revision (empty: absent), new record (empty:
/// delete), tenant, code bytes, max apps, max code bytes, channel.
/// Replies `{status, number}`: `done` and the new revision, `changed`, `no_tenant`,
/// `too_many_apps` and the tenant's other apps, `too_much_code` and their code.
const SWAP_APP_LUA: &str = r"
local current = redis.call('HGET', KEYS[2], ARGV[1])
if (current or '') ~= ARGV[2] then return {'changed', 0} end
if ARGV[3] == '' then
  redis.call('DEL', KEYS[1])
  redis.call('HDEL', KEYS[2], ARGV[1])
  redis.call('HDEL', KEYS[3], ARGV[1])
  local revision = redis.call('INCR', KEYS[5])
  redis.call('PUBLISH', ARGV[8], 'app ' .. ARGV[1] .. ' ' .. revision)
  return {'done', 0}
end
if redis.call('HEXISTS', KEYS[4], ARGV[4]) == 0 then return {'no_tenant', 0} end
local others, code = 0, 0
local apps = redis.call('HGETALL', KEYS[3])
for i = 1, #apps, 2 do
  if apps[i] ~= ARGV[1] then
    others = others + 1
    code = code + tonumber(apps[i + 1])
  end
end
if others + 1 > tonumber(ARGV[6]) then return {'too_many_apps', others} end
if code + tonumber(ARGV[5]) > tonumber(ARGV[7]) then return {'too_much_code', code} end
local revision = redis.call('INCR', KEYS[5])
redis.call('SET', KEYS[1], ARGV[3])
redis.call('HSET', KEYS[2], ARGV[1], revision)
redis.call('HSET', KEYS[3], ARGV[1], ARGV[5])
redis.call('PUBLISH', ARGV[8], 'app ' .. ARGV[1] .. ' ' .. revision)
return {'done', revision}
";

/// The cluster's state in one Redis database.
pub struct RedisState {
    redis: RedisConnection,
    swap_tenant: Script,
    swap_app: Script,
}

impl RedisState {
    /// The state in the Redis at `url` (`redis://[user:password@]host[:port][/db]`, or
    /// `rediss://` for TLS). Only parses the URL: it connects on first use.
    pub fn new(url: &str) -> Result<RedisState, SharedError> {
        Ok(RedisState {
            redis: RedisConnection::open(url).map_err(shared_error)?,
            swap_tenant: Script::new(SWAP_TENANT_LUA),
            swap_app: Script::new(SWAP_APP_LUA),
        })
    }

    /// The same state with another bound on each Redis call.
    pub fn with_timeout(self, timeout: Duration) -> RedisState {
        RedisState {
            redis: self.redis.with_timeout(timeout),
            ..self
        }
    }

    async fn query<T: redis::FromRedisValue>(&self, cmd: &Cmd) -> Result<T, SharedError> {
        self.redis.query(cmd).await.map_err(shared_error)
    }

    async fn pipeline<T: redis::FromRedisValue>(
        &self,
        pipe: &redis::Pipeline,
    ) -> Result<T, SharedError> {
        self.redis.pipeline(pipe).await.map_err(shared_error)
    }

    async fn run<T: redis::FromRedisValue>(
        &self,
        invocation: &redis::ScriptInvocation<'_>,
    ) -> Result<T, SharedError> {
        self.redis.invoke(invocation).await.map_err(shared_error)
    }
}

/// The store's error as the cluster's: the same two kinds.
fn shared_error(err: StoreError) -> SharedError {
    match err {
        StoreError::Unavailable(why) => SharedError::Unavailable(why),
        StoreError::Invalid(why) => SharedError::Invalid(why),
    }
}

fn app_key(name: &str) -> String {
    format!("skiff:c:app:{name}")
}

fn code_key(tenant: &str) -> String {
    format!("skiff:c:code:{tenant}")
}

fn bundle_key(id: &str) -> String {
    format!("skiff:c:bundle:{id}")
}

fn usage_key(day: &str) -> String {
    format!("skiff:c:usage:{day}")
}

fn logs_key(tenant: &str, app: &str) -> String {
    // By tenant too: lines of an app deleted by one tenant never reach another that takes the
    // name later, even those shared just after the delete.
    format!("skiff:c:logs:{tenant}:{app}")
}

fn host_key(host: &str) -> String {
    format!("skiff:c:host:{host}")
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_millis() as u64)
}

#[async_trait::async_trait]
impl SharedState for RedisState {
    fn describe(&self) -> String {
        format!("Redis at {}", self.redis.target())
    }

    async fn tenants(&self) -> Result<Vec<Vec<u8>>, SharedError> {
        self.query(redis::cmd("HVALS").arg(TENANTS)).await
    }

    async fn tenant(&self, name: &str) -> Result<Option<Vec<u8>>, SharedError> {
        self.query(redis::cmd("HGET").arg(TENANTS).arg(name)).await
    }

    async fn swap_tenant(
        &self,
        name: &str,
        expected: Option<&[u8]>,
        record: Option<&[u8]>,
    ) -> Result<bool, SharedError> {
        let expected = match expected {
            None => b"-".to_vec(),
            Some(bytes) => [b"=".as_slice(), bytes].concat(),
        };
        let mut invocation = self.swap_tenant.prepare_invoke();
        invocation
            .key(TENANTS)
            .key(REVISION)
            .arg(name)
            .arg(expected)
            .arg(record.unwrap_or_default())
            .arg(CHANGES);
        let done: i64 = self.run(&invocation).await?;
        Ok(done == 1)
    }

    async fn app_revisions(&self) -> Result<HashMap<String, u64>, SharedError> {
        self.query(redis::cmd("HGETALL").arg(APPS)).await
    }

    async fn revision(&self) -> Result<u64, SharedError> {
        let revision: Option<u64> = self.query(redis::cmd("GET").arg(REVISION)).await?;
        Ok(revision.unwrap_or(0))
    }

    async fn touch_host(&self, host: &str, ttl: Duration) -> Result<(), SharedError> {
        let mut pipe = redis::pipe();
        pipe.atomic()
            .cmd("PEXPIRE")
            .arg(host_key(host))
            .arg(ttl.as_millis() as u64)
            .ignore()
            .cmd("ZADD")
            .arg(HOSTS)
            .arg(now_ms() + ttl.as_millis() as u64)
            .arg(host)
            .ignore();
        self.pipeline::<()>(&pipe).await
    }

    async fn app_revision(&self, name: &str) -> Result<Option<u64>, SharedError> {
        self.query(redis::cmd("HGET").arg(APPS).arg(name)).await
    }

    async fn app(&self, name: &str) -> Result<Option<(u64, Vec<u8>)>, SharedError> {
        // One script would be atomic, but two reads are enough: a record newer than its
        // revision is announced again, and the host reads it once more.
        let (revision, record): (Option<u64>, Option<Vec<u8>>) = self
            .pipeline(
                redis::pipe()
                    .cmd("HGET")
                    .arg(APPS)
                    .arg(name)
                    .cmd("GET")
                    .arg(app_key(name)),
            )
            .await?;
        Ok(revision.zip(record))
    }

    async fn swap_app(&self, swap: AppSwap<'_>) -> Result<SwapOutcome, SharedError> {
        let mut invocation = self.swap_app.prepare_invoke();
        invocation
            .key(app_key(swap.name))
            .key(APPS)
            .key(code_key(swap.tenant))
            .key(TENANTS)
            .key(REVISION)
            .arg(swap.name)
            .arg(swap.expected.map(|r| r.to_string()).unwrap_or_default())
            .arg(swap.record.unwrap_or_default())
            .arg(swap.tenant)
            .arg(swap.code_bytes)
            .arg(swap.max_apps)
            .arg(swap.max_code_bytes)
            .arg(CHANGES);
        let (status, number): (String, u64) = self.run(&invocation).await?;
        Ok(match status.as_str() {
            "done" => SwapOutcome::Done(number),
            "changed" => SwapOutcome::Changed,
            "no_tenant" => SwapOutcome::NoTenant,
            "too_many_apps" => SwapOutcome::TooManyApps(number as u32),
            "too_much_code" => SwapOutcome::TooMuchCode(number),
            other => {
                return Err(SharedError::Invalid(format!(
                    "unexpected reply `{other}` from the app swap"
                )));
            }
        })
    }

    async fn put_bundle(&self, id: &str, packed: &[u8]) -> Result<(), SharedError> {
        self.query(redis::cmd("SET").arg(bundle_key(id)).arg(packed))
            .await
    }

    async fn bundle(&self, id: &str) -> Result<Option<Vec<u8>>, SharedError> {
        self.query(redis::cmd("GET").arg(bundle_key(id))).await
    }

    async fn remove_bundles(&self, ids: &[String]) -> Result<(), SharedError> {
        if ids.is_empty() {
            return Ok(());
        }
        let keys: Vec<String> = ids.iter().map(|id| bundle_key(id)).collect();
        self.query(redis::cmd("DEL").arg(keys)).await
    }

    async fn report_host(
        &self,
        host: &str,
        applied: &HashMap<String, u64>,
        ttl: Duration,
    ) -> Result<(), SharedError> {
        let key = host_key(host);
        let mut pipe = redis::pipe();
        pipe.atomic().cmd("DEL").arg(&key).ignore();
        if !applied.is_empty() {
            pipe.cmd("HSET").arg(&key).arg(applied).ignore();
        }
        pipe.cmd("PEXPIRE")
            .arg(&key)
            .arg(ttl.as_millis() as u64)
            .ignore()
            .cmd("ZADD")
            .arg(HOSTS)
            .arg(now_ms() + ttl.as_millis() as u64)
            .arg(host)
            .ignore()
            .cmd("ZREMRANGEBYSCORE")
            .arg(HOSTS)
            .arg("-inf")
            .arg(now_ms())
            .ignore();
        self.pipeline::<()>(&pipe).await
    }

    async fn forget_host(&self, host: &str) -> Result<(), SharedError> {
        let mut pipe = redis::pipe();
        pipe.atomic()
            .cmd("DEL")
            .arg(host_key(host))
            .ignore()
            .cmd("ZREM")
            .arg(HOSTS)
            .arg(host)
            .ignore();
        self.pipeline::<()>(&pipe).await
    }

    async fn hosts_serving(&self, app: &str) -> Result<Vec<(String, Option<u64>)>, SharedError> {
        let hosts: Vec<String> = self
            .query(
                redis::cmd("ZRANGEBYSCORE")
                    .arg(HOSTS)
                    .arg(now_ms())
                    .arg("+inf"),
            )
            .await?;
        if hosts.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        for host in &hosts {
            pipe.cmd("HGET").arg(host_key(host)).arg(app);
        }
        let revisions: Vec<Option<u64>> = self.pipeline(&pipe).await?;
        let mut serving: Vec<(String, Option<u64>)> = hosts.into_iter().zip(revisions).collect();
        serving.sort();
        Ok(serving)
    }

    async fn push_usage(&self, day: &str, lines: &[u8]) -> Result<(), SharedError> {
        let key = usage_key(day);
        let mut pipe = redis::pipe();
        pipe.atomic()
            .cmd("RPUSH")
            .arg(&key)
            .arg(lines)
            .ignore()
            .cmd("EXPIRE")
            .arg(&key)
            .arg(USAGE_KEPT.as_secs())
            .ignore();
        self.pipeline::<()>(&pipe).await
    }

    async fn usage(&self, day: &str) -> Result<Vec<Vec<u8>>, SharedError> {
        self.query(redis::cmd("LRANGE").arg(usage_key(day)).arg(0).arg(-1))
            .await
    }

    async fn append_logs(&self, lines: &[(String, String, Vec<u8>)]) -> Result<(), SharedError> {
        if lines.is_empty() {
            return Ok(());
        }
        let mut pipe = redis::pipe();
        for (tenant, app, line) in lines {
            let key = logs_key(tenant, app);
            pipe.cmd("XADD")
                .arg(&key)
                .arg("MAXLEN")
                .arg("~")
                .arg(LOG_LINES_KEPT)
                .arg("*")
                .arg("line")
                .arg(line.as_slice())
                .ignore()
                .cmd("EXPIRE")
                .arg(&key)
                .arg(LOGS_KEPT.as_secs())
                .ignore();
        }
        self.pipeline::<()>(&pipe).await
    }

    async fn logs(
        &self,
        tenant: &str,
        app: &str,
        after: Option<&str>,
        count: usize,
    ) -> Result<Vec<(String, Vec<u8>)>, SharedError> {
        let key = logs_key(tenant, app);
        let entries: Vec<(String, Vec<Vec<u8>>)> = match after {
            None => {
                let mut newest: Vec<(String, Vec<Vec<u8>>)> = self
                    .query(
                        redis::cmd("XREVRANGE")
                            .arg(&key)
                            .arg("+")
                            .arg("-")
                            .arg("COUNT")
                            .arg(count),
                    )
                    .await?;
                newest.reverse();
                newest
            }
            Some(id) => {
                self.query(
                    redis::cmd("XRANGE")
                        .arg(&key)
                        .arg(format!("({id}"))
                        .arg("+")
                        .arg("COUNT")
                        .arg(count),
                )
                .await?
            }
        };
        // Each entry's fields are `line`, then the line.
        Ok(entries
            .into_iter()
            .filter_map(|(id, mut fields)| (fields.len() == 2).then(|| (id, fields.remove(1))))
            .collect())
    }

    async fn subscribe(&self) -> Result<tokio::sync::mpsc::Receiver<Change>, SharedError> {
        let redis = &self.redis;
        let mut pubsub = redis
            .timed(async {
                redis
                    .client()
                    .get_async_pubsub()
                    .await
                    .map_err(|err| redis.error(&err))
            })
            .await
            .map_err(shared_error)?;
        redis
            .timed(async {
                pubsub
                    .subscribe(CHANGES)
                    .await
                    .map_err(|err| redis.error(&err))
            })
            .await
            .map_err(shared_error)?;
        let (sender, receiver) = tokio::sync::mpsc::channel(CHANGE_BACKLOG);
        tokio::spawn(async move {
            let mut messages = pubsub.into_on_message();
            while let Some(message) = messages.next().await {
                let Ok(text) = message.get_payload::<String>() else {
                    continue;
                };
                let Some(change) = parse_change(&text) else {
                    continue;
                };
                match sender.try_send(change) {
                    Ok(()) => {}
                    // The host is far behind: it reads everything instead of each change.
                    Err(tokio::sync::mpsc::error::TrySendError::Full(_)) => {
                        let _ = sender.send(Change::Everything).await;
                    }
                    Err(tokio::sync::mpsc::error::TrySendError::Closed(_)) => return,
                }
            }
            // The connection is gone: dropping the sender tells the host so.
        });
        Ok(receiver)
    }
}

/// `tenant NAME REVISION` or `app NAME REVISION`, as the scripts publish them.
fn parse_change(text: &str) -> Option<Change> {
    let mut words = text.split(' ');
    let (kind, name, revision) = (words.next()?, words.next()?, words.next()?);
    let revision = revision.parse().ok()?;
    match kind {
        "tenant" => Some(Change::Tenant(name.to_string(), revision)),
        "app" => Some(Change::App(name.to_string(), revision)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_never_reach_messages() {
        let state = RedisState::new("redis://skiff:hunter2secret@127.0.0.1:1/3").unwrap();
        assert_eq!(state.describe(), "Redis at 127.0.0.1:1/3");
        let err = RedisState::new("redis://u:hunter2secret@[bad")
            .err()
            .unwrap();
        assert!(!err.to_string().contains("hunter2secret"), "{err}");
    }

    #[test]
    fn announcements_name_the_change_and_its_revision() {
        assert_eq!(
            parse_change("app hello 42"),
            Some(Change::App("hello".into(), 42))
        );
        assert_eq!(
            parse_change("tenant acme 7"),
            Some(Change::Tenant("acme".into(), 7))
        );
        for bad in ["app hello", "app hello x", "other a 1", ""] {
            assert_eq!(parse_change(bad), None, "{bad}");
        }
    }
}
