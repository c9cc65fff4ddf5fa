//! Schedule leases in the cluster's Redis: the implementation of
//! [`skiff_server::schedule_lease::RunLeases`] that makes each due time of a schedule run on
//! exactly one host. Every host computes the same due times; the first to `SET key host NX PX
//! ttl` on a due time's key runs it, the others see the key taken. A host that dies mid-run
//! loses nothing for later due times: each has a key of its own.
//!
//! Keys, all under `skiff:s:` (apart from the cluster state's `skiff:c:` and apps' stores):
//!
//! | key | type | holds |
//! |---|---|---|
//! | `skiff:s:run:SCHEDULE@DUE` | string, expiring ([`RUN_LEASE_TTL`]) | the host that runs that due time |
//! | `skiff:s:running:SCHEDULE` | string, expiring ([`RUNNING_MARK_TTL`], renewed while running) | `HOST@DUE` of the run going on |
//! | `skiff:s:results:SCHEDULE` | list, at most [`RUNS_KEPT`] | the last run records (JSON), newest first |
//! | `skiff:s:skipped:SCHEDULE` | counter | due times skipped because a run was still going |
//!
//! `SCHEDULE` is `TENANT/APP/COMPONENT/INDEX`, `DUE` unix seconds. An error (Redis down) means
//! the due time does not run on this host: a run that might happen twice is worse than one
//! that does not happen while the cluster cannot agree.
//!
//! [`RUN_LEASE_TTL`]: skiff_server::schedule_lease::RUN_LEASE_TTL
//! [`RUNNING_MARK_TTL`]: skiff_server::schedule_lease::RUNNING_MARK_TTL
//! [`RUNS_KEPT`]: skiff_server::schedule_lease::RUNS_KEPT

use std::time::Duration;

use redis::{Cmd, Script};
use skiff_server::schedule_lease::RunLeases;
use skiff_store::RedisConnection;

/// Renews or drops the running mark only if it is still the caller's (a mark that expired and
/// was taken by a later run is left alone).
const IF_OURS_LUA: &str = r"
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
if ARGV[2] == '0' then return redis.call('DEL', KEYS[1]) end
return redis.call('PEXPIRE', KEYS[1], ARGV[2])
";

/// Schedule leases and run records in one Redis database.
pub struct RedisLeases {
    redis: RedisConnection,
    /// This host's name, the value of the leases it takes.
    host: String,
    if_ours: Script,
}

impl RedisLeases {
    /// Leases in the Redis at `url`, taken in the name of `host`. Only parses the URL.
    pub fn new(url: &str, host: &str) -> Result<RedisLeases, String> {
        Ok(RedisLeases {
            redis: RedisConnection::open(url).map_err(|e| e.to_string())?,
            host: host.to_string(),
            if_ours: Script::new(IF_OURS_LUA),
        })
    }

    async fn if_ours(&self, schedule: &str, token: &str, ttl_ms: u64) {
        let mut invocation = self.if_ours.prepare_invoke();
        invocation
            .key(format!("skiff:s:running:{schedule}"))
            .arg(token)
            .arg(ttl_ms.to_string());
        if let Err(err) = self.redis.invoke::<i64>(&invocation).await {
            tracing::warn!(
                schedule,
                "cannot renew or drop a schedule's running mark: {err}"
            );
        }
    }
}

fn millis(ttl: Duration) -> u64 {
    u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1)
}

/// `SET key value NX PX ttl`: whether the key was free.
async fn set_if_free(
    redis: &RedisConnection,
    key: String,
    value: &str,
    ttl: Duration,
) -> Result<bool, String> {
    let mut cmd = Cmd::new();
    cmd.arg("SET")
        .arg(key)
        .arg(value)
        .arg("NX")
        .arg("PX")
        .arg(millis(ttl));
    let answer: Option<String> = redis.query(&cmd).await.map_err(|e| e.to_string())?;
    Ok(answer.is_some())
}

#[async_trait::async_trait]
impl RunLeases for RedisLeases {
    async fn claim(&self, run: &str, ttl: Duration) -> Result<bool, String> {
        set_if_free(&self.redis, format!("skiff:s:run:{run}"), &self.host, ttl).await
    }

    async fn mark_running(
        &self,
        schedule: &str,
        token: &str,
        ttl: Duration,
    ) -> Result<bool, String> {
        set_if_free(
            &self.redis,
            format!("skiff:s:running:{schedule}"),
            token,
            ttl,
        )
        .await
    }

    async fn renew_running(&self, schedule: &str, token: &str, ttl: Duration) {
        self.if_ours(schedule, token, millis(ttl)).await;
    }

    async fn clear_running(&self, schedule: &str, token: &str) {
        self.if_ours(schedule, token, 0).await;
    }

    async fn record(&self, schedule: &str, record: &str, skipped: bool, keep: usize) {
        let results = format!("skiff:s:results:{schedule}");
        let mut pipe = redis::pipe();
        pipe.atomic()
            .cmd("LPUSH")
            .arg(&results)
            .arg(record)
            .ignore()
            .cmd("LTRIM")
            .arg(&results)
            .arg(0)
            .arg(keep.saturating_sub(1))
            .ignore();
        if skipped {
            pipe.cmd("INCR")
                .arg(format!("skiff:s:skipped:{schedule}"))
                .ignore();
        }
        if let Err(err) = self.redis.pipeline::<()>(&pipe).await {
            tracing::warn!(schedule, "cannot keep a scheduled run's result: {err}");
        }
    }

    async fn history(&self, schedule: &str) -> (Vec<String>, u64) {
        let mut pipe = redis::pipe();
        pipe.cmd("LRANGE")
            .arg(format!("skiff:s:results:{schedule}"))
            .arg(0)
            .arg(-1)
            .cmd("GET")
            .arg(format!("skiff:s:skipped:{schedule}"));
        match self
            .redis
            .pipeline::<(Vec<String>, Option<u64>)>(&pipe)
            .await
        {
            Ok((records, skipped)) => (records, skipped.unwrap_or(0)),
            Err(err) => {
                tracing::warn!(schedule, "cannot read a schedule's results: {err}");
                (Vec::new(), 0)
            }
        }
    }

    async fn forget(&self, schedule: &str) {
        let mut cmd = Cmd::new();
        cmd.arg("DEL")
            .arg(format!("skiff:s:results:{schedule}"))
            .arg(format!("skiff:s:skipped:{schedule}"));
        if let Err(err) = self.redis.query::<i64>(&cmd).await {
            tracing::warn!(schedule, "cannot forget a schedule's results: {err}");
        }
    }
}
