//! The shared state of a fleet of `skiff server` hosts, in Redis: the implementation of
//! [`skiff_server::cluster::SharedState`] that `skiff server --cluster redis://…` runs on.
//!
//! Redis does the hard parts: every change is one Lua script, which Redis runs alone, so a
//! compare-and-swap and the quota checks that go with it are atomic across hosts; every change
//! is announced on a pub/sub channel, which hosts subscribe to, and appended to a change log
//! (a stream), from which a host that missed announcements catches up. There is no consensus,
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
//! | `skiff:c:code:TENANT` | hash | app name → bytes of code live, for the tenant's `max_code_bytes` |
//! | `skiff:c:kept:TENANT` | hash | app name → bytes of the versions it keeps, for the tenant's `max_disk_bytes` |
//! | `skiff:c:bundle:ID` | string | a deployed bundle as uploaded (packed), unless they are kept in a registry ([`RegistryBundles`]) |
//! | `skiff:c:revision` | counter | the last revision given to any change |
//! | `skiff:c:host:HOST` | hash, expiring | `applied` → the revision up to which that host applied every change; `skipped:APP` for each app it does not serve |
//! | `skiff:c:hosts` | sorted set | host → when its report expires (ms) |
//! | `skiff:c:usage:YYYY-MM-DD` | list, expiring | usage lines (JSON) every host wrote out that day |
//! | `skiff:c:logs:TENANT:APP` | stream, expiring | the app's newest log lines (JSON) from every host |
//! | `skiff:c:changes` | channel | `tenant NAME REVISION` or `app NAME REVISION` on every change |
//! | `skiff:c:change-log` | stream | the newest 100,000 changes, entry id `REVISION-0`, fields `kind` and `name` |
//!
//! Availability: connecting does no I/O, so a host starts while Redis is down, serves what it
//! had, and refuses changes; the connection is remade by itself when Redis is back. Every call
//! is bounded by a timeout. Messages name Redis by address and never show a password.

#![forbid(unsafe_code)]

mod leases;
mod registry;

pub use leases::RedisLeases;
pub use registry::RegistryBundles;

use std::collections::HashMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures_util::StreamExt;
use redis::{Cmd, Script};
use skiff_server::cluster::{
    AppSwap, BundleStore, Change, HostReport, SharedError, SharedState, SwapOutcome,
};
use skiff_store::{RedisConnection, StoreError};

const TENANTS: &str = "skiff:c:tenants";
const APPS: &str = "skiff:c:apps";
const REVISION: &str = "skiff:c:revision";
const HOSTS: &str = "skiff:c:hosts";
const CHANGES: &str = "skiff:c:changes";
const CHANGE_LOG: &str = "skiff:c:change-log";

/// How long a day of usage stays in Redis: longer than a usage query may reach back.
const USAGE_KEPT: Duration = Duration::from_secs(400 * 24 * 60 * 60);

/// Log lines kept per app (about: Redis trims whole blocks of a stream).
const LOG_LINES_KEPT: usize = 1000;
/// How long the lines of an app that logs nothing more are kept.
const LOGS_KEPT: Duration = Duration::from_secs(7 * 24 * 60 * 60);

/// Announcements a slow host may have waiting before it catches up from the change log instead.
const CHANGE_BACKLOG: usize = 1024;

/// Changes the change log keeps (about: Redis trims whole blocks of a stream). A host that
/// falls further behind than this reads everything instead. About 60 bytes each.
const CHANGE_LOG_KEPT: u64 = 100_000;

/// Appends a change to the change log, under its revision as the entry's id, so that a host
/// reads what came after the revision it applied last. `pcall`: a log that cannot take the
/// entry (its newest id is ahead of the revision: someone reset the counter) never blocks a
/// change; hosts then find a gap and read everything.
const LOG_CHANGE_LUA: &str = r"
local function log_change(log, kept, revision, kind, name)
  redis.pcall('XADD', log, 'MAXLEN', '~', kept, revision .. '-0', 'kind', kind, 'name', name)
end
";

/// Tenant compare-and-swap. KEYS: tenants, revision, change log. ARGV: name, expected (`-`
/// absent, else `=` then the record), new record (empty: remove), channel, changes the log
/// keeps.
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
log_change(KEYS[3], ARGV[5], revision, 'tenant', ARGV[1])
redis.call('PUBLISH', ARGV[4], 'tenant ' .. ARGV[1] .. ' ' .. revision)
return 1
";

/// App compare-and-swap with the tenant's quotas. KEYS: app record, apps, tenant's code,
/// tenants, revision, change log, tenant's kept versions. ARGV: name, expected revision
/// (empty: absent), new record (empty: delete), tenant, code bytes, max apps, max code bytes,
/// channel, changes the log keeps, bytes of the versions kept, room for versions on disk.
/// Replies `{status, number}`: `done` and the new revision, `changed`, `no_tenant`,
/// `too_many_apps` and the tenant's other apps, `too_much_code` and their code,
/// `too_much_disk` and their versions' bytes.
const SWAP_APP_LUA: &str = r"
local current = redis.call('HGET', KEYS[2], ARGV[1])
if (current or '') ~= ARGV[2] then return {'changed', 0} end
if ARGV[3] == '' then
  redis.call('DEL', KEYS[1])
  redis.call('HDEL', KEYS[2], ARGV[1])
  redis.call('HDEL', KEYS[3], ARGV[1])
  redis.call('HDEL', KEYS[7], ARGV[1])
  local revision = redis.call('INCR', KEYS[5])
  log_change(KEYS[6], ARGV[9], revision, 'app', ARGV[1])
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
local kept = tonumber(ARGV[10])
if kept > tonumber(redis.call('HGET', KEYS[7], ARGV[1]) or '0') then
  local others_kept = 0
  local versions = redis.call('HGETALL', KEYS[7])
  for i = 1, #versions, 2 do
    if versions[i] ~= ARGV[1] then others_kept = others_kept + tonumber(versions[i + 1]) end
  end
  if others_kept + kept > tonumber(ARGV[11]) then return {'too_much_disk', others_kept} end
end
local revision = redis.call('INCR', KEYS[5])
redis.call('SET', KEYS[1], ARGV[3])
redis.call('HSET', KEYS[2], ARGV[1], revision)
redis.call('HSET', KEYS[3], ARGV[1], ARGV[5])
redis.call('HSET', KEYS[7], ARGV[1], ARGV[10])
log_change(KEYS[6], ARGV[9], revision, 'app', ARGV[1])
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
            swap_tenant: Script::new(&[LOG_CHANGE_LUA, SWAP_TENANT_LUA].concat()),
            swap_app: Script::new(&[LOG_CHANGE_LUA, SWAP_APP_LUA].concat()),
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

fn kept_key(tenant: &str) -> String {
    format!("skiff:c:kept:{tenant}")
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

/// In a host's report: the revision up to which it applied every change.
const APPLIED_FIELD: &str = "applied";

/// In a host's report: an app whose record the host applied but does not serve.
fn skipped_field(app: &str) -> String {
    format!("skipped:{app}")
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
            .key(CHANGE_LOG)
            .arg(name)
            .arg(expected)
            .arg(record.unwrap_or_default())
            .arg(CHANGES)
            .arg(CHANGE_LOG_KEPT);
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
            .key(CHANGE_LOG)
            .key(kept_key(swap.tenant))
            .arg(swap.name)
            .arg(swap.expected.map(|r| r.to_string()).unwrap_or_default())
            .arg(swap.record.unwrap_or_default())
            .arg(swap.tenant)
            .arg(swap.code_bytes)
            .arg(swap.max_apps)
            .arg(swap.max_code_bytes)
            .arg(CHANGES)
            .arg(CHANGE_LOG_KEPT)
            .arg(swap.kept_bytes)
            .arg(swap.disk_room);
        let (status, number): (String, u64) = self.run(&invocation).await?;
        Ok(match status.as_str() {
            "done" => SwapOutcome::Done(number),
            "changed" => SwapOutcome::Changed,
            "no_tenant" => SwapOutcome::NoTenant,
            "too_many_apps" => SwapOutcome::TooManyApps(number as u32),
            "too_much_code" => SwapOutcome::TooMuchCode(number),
            "too_much_disk" => SwapOutcome::TooMuchDisk(number),
            other => {
                return Err(SharedError::Invalid(format!(
                    "unexpected reply `{other}` from the app swap"
                )));
            }
        })
    }

    async fn report_host(
        &self,
        host: &str,
        applied: u64,
        skipped: &[String],
        ttl: Duration,
    ) -> Result<(), SharedError> {
        let key = host_key(host);
        let mut pipe = redis::pipe();
        pipe.atomic()
            .cmd("DEL")
            .arg(&key)
            .ignore()
            .cmd("HSET")
            .arg(&key)
            .arg(APPLIED_FIELD)
            .arg(applied)
            .ignore();
        if !skipped.is_empty() {
            let fields: Vec<(String, u8)> =
                skipped.iter().map(|app| (skipped_field(app), 1)).collect();
            pipe.cmd("HSET").arg(&key).arg(fields).ignore();
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

    async fn hosts_serving(&self, app: &str) -> Result<Vec<HostReport>, SharedError> {
        let mut hosts: Vec<String> = self
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
        hosts.sort();
        let mut pipe = redis::pipe();
        for host in &hosts {
            pipe.cmd("HMGET")
                .arg(host_key(host))
                .arg(APPLIED_FIELD)
                .arg(skipped_field(app));
        }
        let reports: Vec<(Option<u64>, Option<u8>)> = self.pipeline(&pipe).await?;
        Ok(hosts
            .into_iter()
            .zip(reports)
            .map(|(host, (applied, skipped))| HostReport {
                host,
                applied: applied.unwrap_or(0),
                skipped: skipped.is_some(),
            })
            .collect())
    }

    async fn changes_since(
        &self,
        after: u64,
        count: usize,
    ) -> Result<Option<Vec<Change>>, SharedError> {
        // Every entry's id is `REVISION-0`, so starting at `AFTER-1` leaves out `after` itself
        // (what `(` does, on Redis 6.2 and later only).
        let entries: Vec<(String, Vec<String>)> = self
            .query(
                redis::cmd("XRANGE")
                    .arg(CHANGE_LOG)
                    .arg(format!("{after}-1"))
                    .arg("+")
                    .arg("COUNT")
                    .arg(count),
            )
            .await?;
        let mut changes = Vec::with_capacity(entries.len());
        for (id, fields) in entries {
            let change = logged_change(&id, &fields).ok_or_else(|| {
                SharedError::Invalid(format!(
                    "the change log (`{CHANGE_LOG}`) holds an entry skiff did not write: {id}"
                ))
            })?;
            changes.push(change);
        }
        let next = after + 1;
        match changes.first() {
            Some(Change::App(_, revision) | Change::Tenant(_, revision)) if *revision != next => {
                Ok(None)
            }
            _ => Ok(Some(changes)),
        }
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
                    // The host is far behind: it catches up from the change log instead.
                    Err(tokio::sync::mpsc::error::TrySendError::Full(_)) => {
                        let _ = sender.send(Change::CatchUp).await;
                    }
                    Err(tokio::sync::mpsc::error::TrySendError::Closed(_)) => return,
                }
            }
            // The connection is gone: dropping the sender tells the host so.
        });
        Ok(receiver)
    }
}

/// A change log entry: id `REVISION-0`, fields `kind` (`app` or `tenant`) and `name`.
fn logged_change(id: &str, fields: &[String]) -> Option<Change> {
    let revision = id.strip_suffix("-0")?.parse().ok()?;
    match fields {
        [kind_field, kind, name_field, name] if kind_field == "kind" && name_field == "name" => {
            match kind.as_str() {
                "tenant" => Some(Change::Tenant(name.clone(), revision)),
                "app" => Some(Change::App(name.clone(), revision)),
                _ => None,
            }
        }
        _ => None,
    }
}

/// Bundles in the same Redis as the state, unless the operator gives a registry
/// ([`RegistryBundles`]).
#[async_trait::async_trait]
impl BundleStore for RedisState {
    fn location(&self) -> String {
        format!("the cluster's Redis at {}", self.redis.target())
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

    #[test]
    fn change_log_entries_are_read_as_the_scripts_write_them() {
        let fields = |kind: &str, name: &str| -> Vec<String> {
            vec!["kind".into(), kind.into(), "name".into(), name.into()]
        };
        assert_eq!(
            logged_change("42-0", &fields("app", "hello")),
            Some(Change::App("hello".into(), 42))
        );
        assert_eq!(
            logged_change("7-0", &fields("tenant", "acme")),
            Some(Change::Tenant("acme".into(), 7))
        );
        assert_eq!(logged_change("7-1", &fields("app", "a")), None);
        assert_eq!(logged_change("1712-0", &fields("other", "a")), None);
        assert_eq!(logged_change("7-0", &["kind".into(), "app".into()]), None);
    }
}
