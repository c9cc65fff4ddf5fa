//! Who runs a due time, and where its result is kept. Every host that serves an app computes
//! the same due times from the same manifest; a lease per due time makes exactly one of them
//! run it. A schedule's "running" mark, held (and renewed) while a run goes on, is how the next
//! due time learns that its predecessor has not finished, whichever host ran it.
//!
//! Keys are opaque strings made by the scheduler: a schedule is
//! `<tenant>/<app>/<component>/<index>` (names that cannot contain `/`), a run is the
//! schedule's key and `@<unix seconds of the due time>`.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;

/// The leases and run records of schedules. One host uses [`LocalLeases`]; hosts sharing a
/// cluster use the Redis one in `skiff-cluster`, so that each due time runs on one host.
#[async_trait]
pub trait RunLeases: Send + Sync + 'static {
    /// Takes the lease on run `run` for `ttl`: `true` for exactly one caller per key while the
    /// lease lasts. An error means nobody can know, and the run does not happen here.
    async fn claim(&self, run: &str, ttl: Duration) -> Result<bool, String>;
    /// Marks `schedule` as running under `token` for `ttl`: `false` if another run holds the
    /// mark.
    async fn mark_running(
        &self,
        schedule: &str,
        token: &str,
        ttl: Duration,
    ) -> Result<bool, String>;
    /// Extends the mark, if `token` still holds it.
    async fn renew_running(&self, schedule: &str, token: &str, ttl: Duration);
    /// Drops the mark, if `token` still holds it.
    async fn clear_running(&self, schedule: &str, token: &str);
    /// Keeps `record` (a `skiff_api::ScheduleRun` as JSON) as the schedule's newest result, at
    /// most `keep` of them, and counts a skipped run.
    async fn record(&self, schedule: &str, record: &str, skipped: bool, keep: usize);
    /// The kept records, newest first, and how many runs were skipped.
    async fn history(&self, schedule: &str) -> (Vec<String>, u64);
    /// Forgets what is kept about `schedule` (its app is gone).
    async fn forget(&self, schedule: &str);
}

/// The leases of one host alone: every claim is won (there is nobody else), marks and records
/// live in memory.
#[derive(Default)]
pub struct LocalLeases {
    running: Mutex<HashMap<String, String>>,
    claimed: Mutex<HashSet<String>>,
    records: Mutex<HashMap<String, (VecDeque<String>, u64)>>,
}

impl LocalLeases {
    pub fn new() -> Self {
        Self::default()
    }
}

#[async_trait]
impl RunLeases for LocalLeases {
    async fn claim(&self, run: &str, _ttl: Duration) -> Result<bool, String> {
        // The same app loaded twice (a redeploy racing its predecessor's tasks) must not run a
        // due time twice: remember the keys, and drop old ones now and then to stay bounded.
        let mut claimed = self.claimed.lock().unwrap_or_else(|e| e.into_inner());
        if claimed.len() > 100_000 {
            claimed.clear();
        }
        Ok(claimed.insert(run.to_string()))
    }

    async fn mark_running(
        &self,
        schedule: &str,
        token: &str,
        _ttl: Duration,
    ) -> Result<bool, String> {
        let mut running = self.running.lock().unwrap_or_else(|e| e.into_inner());
        if running.contains_key(schedule) {
            return Ok(false);
        }
        running.insert(schedule.to_string(), token.to_string());
        Ok(true)
    }

    async fn renew_running(&self, _schedule: &str, _token: &str, _ttl: Duration) {}

    async fn clear_running(&self, schedule: &str, token: &str) {
        let mut running = self.running.lock().unwrap_or_else(|e| e.into_inner());
        if running.get(schedule).is_some_and(|t| t == token) {
            running.remove(schedule);
        }
    }

    async fn record(&self, schedule: &str, record: &str, skipped: bool, keep: usize) {
        let mut records = self.records.lock().unwrap_or_else(|e| e.into_inner());
        let (kept, skips) = records.entry(schedule.to_string()).or_default();
        kept.push_front(record.to_string());
        kept.truncate(keep);
        if skipped {
            *skips += 1;
        }
    }

    async fn history(&self, schedule: &str) -> (Vec<String>, u64) {
        let records = self.records.lock().unwrap_or_else(|e| e.into_inner());
        records
            .get(schedule)
            .map(|(kept, skips)| (kept.iter().cloned().collect(), *skips))
            .unwrap_or_default()
    }

    async fn forget(&self, schedule: &str) {
        let mut records = self.records.lock().unwrap_or_else(|e| e.into_inner());
        records.remove(schedule);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn one_host_claims_each_run_once_and_keeps_a_bounded_history() {
        let leases = LocalLeases::new();
        let ttl = Duration::from_secs(1);
        assert!(leases.claim("t/a/c/0@100", ttl).await.unwrap());
        assert!(!leases.claim("t/a/c/0@100", ttl).await.unwrap());
        assert!(leases.claim("t/a/c/0@101", ttl).await.unwrap());

        // The running mark: one holder; only the holder drops it.
        assert!(leases.mark_running("t/a/c/0", "h@100", ttl).await.unwrap());
        assert!(!leases.mark_running("t/a/c/0", "h@101", ttl).await.unwrap());
        leases.clear_running("t/a/c/0", "h@101").await;
        assert!(!leases.mark_running("t/a/c/0", "h@102", ttl).await.unwrap());
        leases.clear_running("t/a/c/0", "h@100").await;
        assert!(leases.mark_running("t/a/c/0", "h@103", ttl).await.unwrap());

        for i in 0..5 {
            leases
                .record("t/a/c/0", &i.to_string(), i % 2 == 0, 3)
                .await;
        }
        let (kept, skipped) = leases.history("t/a/c/0").await;
        assert_eq!(kept, vec!["4", "3", "2"]);
        assert_eq!(skipped, 3);
        leases.forget("t/a/c/0").await;
        assert_eq!(leases.history("t/a/c/0").await, (Vec::new(), 0));
    }
}
