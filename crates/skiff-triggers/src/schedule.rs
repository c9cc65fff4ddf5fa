//! The scheduler: for each app it is given, one task per schedule sleeps until the next due
//! time, takes that due time's lease, and starts the run through the HTTP trigger's dispatch
//! ([`HttpApp::run_scheduled`]): a `POST` to the schedule's path, so a run has the limits,
//! grants, logs, usage, metrics and traces of a request.
//!
//! Due times are whole seconds computed from the wall clock, the same on every host. A host
//! never catches up: after a pause (a stopped process, a suspended machine) it runs the due
//! time it was waiting for if it is at most [`LATE_LIMIT`] late, and then the next one after
//! *now*, never the ones in between. With overlap `skip`, a due time whose schedule is still
//! running (on any host: the "running" mark is a lease too) is skipped and counted.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use opentelemetry::KeyValue;
use opentelemetry::trace::SpanKind;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use skiff_api::{ScheduleInfo, ScheduleRun};
use skiff_http::{HttpApp, ScheduledRequest};
use skiff_manifest::{Overlap, Schedule};
use skiff_runtime::{RequestInfo, TraceContext};

use crate::lease::RunLeases;
use crate::response::drain;
use crate::running::{RunningApps, app_key};

/// How late a due time may be run. Later than this, the host was paused (or its clock
/// jumped); the run is dropped rather than started long after its time. Shorter than
/// [`RUN_LEASE_TTL`], so a late host never runs a due time whose lease has expired after
/// another host ran it.
pub const LATE_LIMIT: Duration = Duration::from_secs(30);

/// How long a due time's lease lives. Hosts must agree on the time to well within this (NTP
/// does): a host whose clock lags by more could run a due time again.
pub const RUN_LEASE_TTL: Duration = Duration::from_secs(120);

/// How long a run's "running" mark lives without renewal. The host running it renews it every
/// third of that; a host that dies mid-run stops renewing, and its mark is gone this long
/// after, so at most a few due times after a crash are skipped as overlapping.
pub const RUNNING_MARK_TTL: Duration = Duration::from_secs(6);

/// How many results of each schedule are kept for inspect.
pub const RUNS_KEPT: usize = 10;

/// How many next due times inspect shows.
const NEXT_SHOWN: usize = 3;

/// Scheduled runs' request ids start here, far above a listener's (which count from 1), so a
/// log line's id names one unit of work.
const FIRST_REQUEST_ID: u64 = 1 << 48;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ScheduleLabels {
    tenant: String,
    app: String,
    component: String,
    schedule: String,
}

/// `skiff_schedule_runs` by outcome (`ok`, `failed`, `skipped`), per schedule. Run durations
/// and statuses are counted with requests too, under the route `schedule[<index>]`.
pub struct ScheduleMetrics {
    runs: Family<RunLabels, Counter>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RunLabels {
    tenant: String,
    app: String,
    component: String,
    schedule: String,
    outcome: &'static str,
}

impl ScheduleMetrics {
    pub fn register(registry: &mut Registry) -> Arc<ScheduleMetrics> {
        let metrics = ScheduleMetrics {
            runs: Family::default(),
        };
        registry
            .sub_registry_with_prefix("skiff_schedule")
            .register(
                "runs",
                "Due times of schedules run on this host, or skipped because a run was still going",
                metrics.runs.clone(),
            );
        Arc::new(metrics)
    }

    /// Drops the series of a schedule whose app is gone.
    fn forget(&self, labels: &ScheduleLabels) {
        for outcome in ["ok", "failed", "skipped"] {
            self.runs.remove(&labels.with_outcome(outcome));
        }
    }

    fn count(&self, labels: &ScheduleLabels, outcome: &'static str) {
        self.runs.get_or_create(&labels.with_outcome(outcome)).inc();
    }
}

impl ScheduleLabels {
    fn with_outcome(&self, outcome: &'static str) -> RunLabels {
        RunLabels {
            tenant: self.tenant.clone(),
            app: self.app.clone(),
            component: self.component.clone(),
            schedule: self.schedule.clone(),
            outcome,
        }
    }
}

/// Runs the schedules of the apps it is given, until they are taken away or it is dropped.
pub struct Scheduler {
    host: Arc<str>,
    leases: Arc<dyn RunLeases>,
    metrics: Option<Arc<ScheduleMetrics>>,
    next_request_id: AtomicU64,
    /// Each app's tasks, one per schedule. Runs already started go on when they stop (they
    /// hold the app); only future due times stop.
    apps: RunningApps,
}

/// What one schedule's task needs.
struct Job {
    scheduler: Arc<Scheduler>,
    app: Arc<HttpApp>,
    /// Index into the app's `schedules`.
    schedule: usize,
    /// `<tenant>/<app>/<component>/<index>`.
    key: String,
    labels: ScheduleLabels,
}

impl Scheduler {
    /// A scheduler for host `host` (named in run results), taking leases from `leases`.
    pub fn new(
        host: impl Into<Arc<str>>,
        leases: Arc<dyn RunLeases>,
        metrics: Option<Arc<ScheduleMetrics>>,
    ) -> Arc<Scheduler> {
        Arc::new(Scheduler {
            host: host.into(),
            leases,
            metrics,
            next_request_id: AtomicU64::new(FIRST_REQUEST_ID),
            apps: RunningApps::default(),
        })
    }

    /// Runs `app`'s schedules under `tenant` (empty outside a multi-tenant host), instead of
    /// those of the app's earlier version, if any. Giving the same loaded app again changes
    /// nothing. Must be called inside a tokio runtime.
    pub fn set_app(self: &Arc<Self>, tenant: &str, app: Arc<HttpApp>) {
        let name = app.loaded().app().name.clone();
        let manifest = app.loaded().app().clone();
        let start = || {
            manifest
                .schedules
                .iter()
                .enumerate()
                .map(|(i, schedule)| {
                    let component = component_id(&manifest, schedule);
                    let job = Job {
                        scheduler: self.clone(),
                        app: app.clone(),
                        schedule: i,
                        key: schedule_key(tenant, &name, &component, schedule.index),
                        labels: ScheduleLabels {
                            tenant: tenant.to_string(),
                            app: name.clone(),
                            component,
                            schedule: schedule.index.to_string(),
                        },
                    };
                    tokio::spawn(job.run())
                })
                .collect()
        };
        if self.apps.set(tenant, &app, start) {
            let (key, count) = (app_key(tenant, &name), manifest.schedules.len());
            tracing::info!(app = %key, schedules = count, "schedules started");
        }
    }

    /// Stops the schedules of `tenant`'s app `name`. With `forget`, the results kept for
    /// it go too (the app was deleted, not just moved to another host).
    pub async fn remove_app(&self, tenant: &str, name: &str, forget: bool) {
        let removed = self.apps.remove(tenant, name);
        if removed.is_some() {
            tracing::info!(app = %app_key(tenant, name), "schedules stopped");
        }
        if let (Some(removed), true) = (removed, forget) {
            let manifest = removed.loaded().app().clone();
            for schedule in &manifest.schedules {
                let component = component_id(&manifest, schedule);
                let key = schedule_key(tenant, name, &component, schedule.index);
                self.leases.forget(&key).await;
                if let Some(metrics) = &self.metrics {
                    metrics.forget(&ScheduleLabels {
                        tenant: tenant.to_string(),
                        app: name.to_string(),
                        component,
                        schedule: schedule.index.to_string(),
                    });
                }
            }
        }
    }

    /// The apps whose schedules run, as `(tenant, app)`.
    pub fn apps(&self) -> Vec<(String, String)> {
        self.apps.list()
    }

    /// What inspect shows of each schedule of `app` (its next due times and last runs), for
    /// an app of `tenant` that this scheduler may or may not be running.
    pub async fn inspect(&self, tenant: &str, app: &skiff_manifest::App) -> Vec<ScheduleInfo> {
        let now = SystemTime::now();
        let mut out = Vec::with_capacity(app.schedules.len());
        for schedule in &app.schedules {
            let component = component_id(app, schedule);
            let key = schedule_key(tenant, &app.name, &component, schedule.index);
            let next = schedule
                .times()
                .map(|t| t.upcoming(now, NEXT_SHOWN))
                .unwrap_or_default()
                .into_iter()
                .map(rfc3339)
                .collect();
            let (records, skipped) = self.leases.history(&key).await;
            let last = records
                .iter()
                .filter_map(|r| serde_json::from_str::<ScheduleRun>(r).ok())
                .collect();
            out.push(ScheduleInfo {
                component,
                index: schedule.index,
                cron: schedule.cron.clone(),
                timezone: schedule.timezone.clone(),
                path: schedule.path.clone(),
                args: schedule.args.clone(),
                overlap: schedule.overlap.as_str().to_string(),
                next,
                skipped,
                last,
            });
        }
        out
    }
}

impl Job {
    fn schedule(&self) -> &Schedule {
        // `schedule` was an index of this app's list when the job was made.
        &self.app.loaded().app().schedules[self.schedule]
    }

    /// Sleeps until each due time and starts its run, until aborted.
    async fn run(self) {
        let job = Arc::new(self);
        let times = match job.schedule().times() {
            Ok(times) => times,
            Err(why) => {
                tracing::error!(schedule = %job.key, "the schedule cannot run: {why}");
                return;
            }
        };
        let mut after = SystemTime::now();
        while let Some(due) = times.next_after(after) {
            sleep_until(due).await;
            let now = SystemTime::now();
            let late = now.duration_since(due).unwrap_or_default();
            if late > LATE_LIMIT {
                tracing::warn!(
                    schedule = %job.key, late_seconds = late.as_secs(),
                    "a due time passed while the host was paused; it is not run (no catch-up)"
                );
            } else {
                // Each run is a task of its own: the schedule keeps time however long it takes.
                tokio::spawn(job.clone().run_once(due));
            }
            // From the later of the due time and now: missed due times are not caught up.
            after = due.max(now);
        }
    }

    /// One due time: its lease, the overlap check, the run, its record.
    async fn run_once(self: Arc<Self>, due: SystemTime) {
        let scheduler = &self.scheduler;
        let due_secs = due.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
        let run_key = format!("{}@{due_secs}", self.key);
        match scheduler.leases.claim(&run_key, RUN_LEASE_TTL).await {
            Ok(true) => {}
            Ok(false) => return,
            Err(why) => {
                tracing::warn!(schedule = %self.key, due = due_secs, "cannot take the run's lease, so it does not run here: {why}");
                return;
            }
        }
        let token = format!("{}@{due_secs}", scheduler.host);
        let marked = match self.schedule().overlap {
            Overlap::Allow => false,
            Overlap::Skip => match scheduler
                .leases
                .mark_running(&self.key, &token, RUNNING_MARK_TTL)
                .await
            {
                Ok(true) => true,
                Ok(false) => {
                    tracing::info!(schedule = %self.key, due = due_secs, "skipped: the previous run is still going");
                    self.finish(ScheduleRun {
                        due: rfc3339(due),
                        host: scheduler.host.to_string(),
                        outcome: "skipped".into(),
                        status: None,
                        exit_code: None,
                        error: Some("the previous run was still going".into()),
                        duration_ms: 0,
                    })
                    .await;
                    return;
                }
                Err(why) => {
                    tracing::warn!(schedule = %self.key, due = due_secs, "cannot mark the run as running, so it does not run: {why}");
                    return;
                }
            },
        };
        // Keeps the mark alive while the run goes on; a host that dies stops renewing it.
        let renew = marked.then(|| {
            let job = self.clone();
            let token = token.clone();
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(RUNNING_MARK_TTL / 3).await;
                    job.scheduler
                        .leases
                        .renew_running(&job.key, &token, RUNNING_MARK_TTL)
                        .await;
                }
            })
        });
        let started = Instant::now();
        let request_id = scheduler.next_request_id.fetch_add(1, Ordering::Relaxed);
        let (status, exit_code, error) = if self.is_command() {
            self.run_command(request_id).await
        } else {
            self.run_http(due, request_id).await
        };
        if let Some(renew) = renew {
            renew.abort();
            scheduler.leases.clear_running(&self.key, &token).await;
        }
        let ok = error.is_none()
            && status.is_none_or(|s| (200..300).contains(&s))
            && exit_code.is_none_or(|code| code == 0);
        tracing::info!(
            schedule = %self.key, due = due_secs, request_id, status, exit_code,
            "scheduled run {}", if ok { "done" } else { "failed" }
        );
        self.finish(ScheduleRun {
            due: rfc3339(due),
            host: scheduler.host.to_string(),
            outcome: if ok { "ok" } else { "failed" }.into(),
            status,
            exit_code,
            error,
            duration_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
        })
        .await;
    }

    fn is_command(&self) -> bool {
        let component = self.schedule().component;
        self.app
            .loaded()
            .components()
            .get(component)
            .is_some_and(|c| c.is_command())
    }

    /// Runs a command component: its exit code, or why it stopped.
    async fn run_command(&self, request_id: u64) -> (Option<u16>, Option<i32>, Option<String>) {
        let schedule = self.schedule();
        let Some(component) = self.app.loaded().components().get(schedule.component) else {
            return (None, None, Some("no such component".into()));
        };
        // A new trace, as a request without `traceparent` starts one; its span is the run's.
        let trace = TraceContext::inbound(&http::HeaderMap::new()).child(SpanKind::Server, || {
            let mut attributes = vec![
                KeyValue::new("skiff.app", component.app().to_string()),
                KeyValue::new("skiff.component", component.id().to_string()),
                KeyValue::new("skiff.request_id", request_id as i64),
                KeyValue::new("skiff.trigger", "schedule"),
            ];
            if !self.labels.tenant.is_empty() {
                attributes.push(KeyValue::new("skiff.tenant", self.labels.tenant.clone()));
            }
            let name = format!(
                "run component.{}.schedule[{}]",
                component.id(),
                schedule.index
            );
            (name.into(), attributes)
        });
        let info = RequestInfo {
            request_id,
            https: false,
            trace: trace.clone(),
            calls: Some(self.app.calls()),
        };
        let result = component.run_command(&schedule.args, info).await;
        let outcome = match result {
            Ok(code) => {
                trace.set_attribute(KeyValue::new("process.exit.code", i64::from(code)));
                if code != 0 {
                    trace.set_error(format!("exit code {code}"));
                }
                (None, Some(code), None)
            }
            Err(err) => {
                trace.set_error(err.to_string());
                (None, None, Some(err.to_string()))
            }
        };
        trace.end();
        outcome
    }

    /// Runs an HTTP component: the status of its answer, and what went wrong if it failed.
    async fn run_http(
        &self,
        due: SystemTime,
        request_id: u64,
    ) -> (Option<u16>, Option<i32>, Option<String>) {
        let response = self
            .app
            .run_scheduled(ScheduledRequest {
                schedule: self.schedule,
                scheduled_time: &rfc3339(due),
                request_id,
            })
            .await;
        let (status, error) = drain(response).await;
        (Some(status), None, error)
    }

    async fn finish(&self, record: ScheduleRun) {
        let scheduler = &self.scheduler;
        if let Some(metrics) = &scheduler.metrics {
            let outcome = match record.outcome.as_str() {
                "ok" => "ok",
                "skipped" => "skipped",
                _ => "failed",
            };
            metrics.count(&self.labels, outcome);
        }
        match serde_json::to_string(&record) {
            Ok(text) => {
                scheduler
                    .leases
                    .record(&self.key, &text, record.outcome == "skipped", RUNS_KEPT)
                    .await
            }
            Err(err) => tracing::error!("cannot encode a run record: {err}"),
        }
    }
}

/// The longest one sleep of a schedule's task: due times are wall-clock times, and the timer
/// runs on the monotonic clock, so a long wait is cut into pieces that look at the wall clock
/// again (it may have been set, or the machine suspended), and none is longer than tokio's
/// timer wheel reaches (a yearly schedule waits a year).
const LONGEST_SLEEP: Duration = Duration::from_secs(60);

/// Returns once the wall clock has reached `due`.
async fn sleep_until(due: SystemTime) {
    while let Ok(wait) = due.duration_since(SystemTime::now()) {
        if wait.is_zero() {
            return;
        }
        tokio::time::sleep(wait.min(LONGEST_SLEEP)).await;
    }
}

fn schedule_key(tenant: &str, app: &str, component: &str, index: usize) -> String {
    format!("{tenant}/{app}/{component}/{index}")
}

fn component_id(app: &skiff_manifest::App, schedule: &Schedule) -> String {
    app.components
        .get(schedule.component)
        .map_or_else(String::new, |c| c.id.clone())
}

fn rfc3339(time: SystemTime) -> String {
    chrono::DateTime::<chrono::Utc>::from(time).to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::LocalLeases;

    #[tokio::test]
    async fn inspect_shows_the_next_due_times_and_the_kept_runs() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("job.wasm"),
            [0, b'a', b's', b'm', 0x0d, 0, 1, 0],
        )
        .unwrap();
        let manifest = "[app]\nname = \"app\"\n\n[component.job]\nsource = \"job.wasm\"\n\n\
                        [[component.job.schedule]]\ncron = \"*/10 * * * * *\"\npath = \"/tick\"\n";
        let app = skiff_manifest::parse(manifest, &dir.path().join("skiff.toml")).unwrap();
        let leases = Arc::new(LocalLeases::new());
        let record = ScheduleRun {
            due: "2026-12-07T02:00:00Z".into(),
            host: "h".into(),
            outcome: "skipped".into(),
            status: None,
            exit_code: None,
            error: None,
            duration_ms: 0,
        };
        leases
            .record(
                "acme/app/job/0",
                &serde_json::to_string(&record).unwrap(),
                true,
                RUNS_KEPT,
            )
            .await;
        let scheduler = Scheduler::new("h", leases, None);
        let info = scheduler.inspect("acme", &app).await;
        assert_eq!(info.len(), 1);
        let schedule = &info[0];
        assert_eq!((schedule.component.as_str(), schedule.index), ("job", 0));
        assert_eq!(schedule.path.as_deref(), Some("/tick"));
        assert_eq!(schedule.skipped, 1);
        assert_eq!(schedule.last, vec![record]);
        // Three due times, ten seconds apart, on whole tens of seconds.
        let secs: Vec<u64> = schedule
            .next
            .iter()
            .map(|t| {
                chrono::DateTime::parse_from_rfc3339(t)
                    .unwrap()
                    .timestamp()
                    .try_into()
                    .unwrap()
            })
            .collect();
        assert_eq!(secs.len(), 3);
        assert!(secs.iter().all(|s| s % 10 == 0), "{secs:?}");
        assert_eq!((secs[1] - secs[0], secs[2] - secs[1]), (10, 10));
    }

    #[tokio::test]
    async fn sleep_until_a_past_time_returns_at_once() {
        sleep_until(SystemTime::now() - Duration::from_secs(5)).await;
        let due = SystemTime::now() + Duration::from_millis(20);
        sleep_until(due).await;
        assert!(SystemTime::now() >= due);
    }
}
