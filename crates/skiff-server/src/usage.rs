//! The host's usage ledger: what every app used, request by request, summed per (tenant, app)
//! and per UTC minute, so that an operator can bill from it (`GET /v1/usage`) and watch it
//! (`skiff_usage_*` counters).
//!
//! The runtime measures each request and hands a [`RequestUsage`] to the app's
//! [`UsageSink`]; the sink adds it to its app's [`AppMeter`] (one mutex per app, never one for
//! the whole host) and to the app's counters. Minutes that have ended are moved to
//! `DATA/usage/YYYY-MM-DD.ndjson` now and then (and every minute still in memory at shutdown),
//! one JSON line per app and minute, appended and synced: billing survives a restart. A query
//! reads the files of the days in range and adds what is still in memory. The same
//! (tenant, app, minute) may appear on several lines (a request that ended just as its
//! minute was written out, a shutdown in mid-minute); they are summed.

use std::collections::{BTreeMap, HashMap};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use serde::{Deserialize, Serialize};
use skiff_runtime::{RequestUsage, UsageSink};

use crate::api::{AppUsage, TenantUsage, UsageFigures, UsageReport};
use crate::persist::PersistError;

const MINUTES_PER_DAY: u64 = 24 * 60;

/// The longest range one query may cover: a query reads one file per day.
pub const MAX_QUERY_DAYS: u64 = 366;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AppLabels {
    tenant: String,
    app: String,
}

type Seconds = Counter<f64, AtomicU64>;

/// The `skiff_usage_*` counter families, labelled by tenant and app.
#[derive(Clone, Default)]
pub(crate) struct UsageMetrics {
    requests: Family<AppLabels, Counter>,
    wall: Family<AppLabels, Seconds>,
    guest_cpu: Family<AppLabels, Seconds>,
    memory: Family<AppLabels, Seconds>,
    bytes_in: Family<AppLabels, Counter>,
    bytes_out: Family<AppLabels, Counter>,
}

impl UsageMetrics {
    /// Registers the families in `registry` (already prefixed `skiff`).
    pub(crate) fn register(registry: &mut Registry) -> UsageMetrics {
        let metrics = UsageMetrics::default();
        let usage = registry.sub_registry_with_prefix("usage");
        usage.register(
            "requests",
            "Requests admitted and finished",
            metrics.requests.clone(),
        );
        usage.register(
            "wall_seconds",
            "Wall time of requests, from admission until the response body was sent",
            metrics.wall.clone(),
        );
        usage.register(
            "guest_cpu_seconds",
            "Thread CPU time of requests' guest tasks (guest code and host work done in them)",
            metrics.guest_cpu.clone(),
        );
        usage.register(
            "memory_byte_seconds",
            "Peak linear memory of each request times its wall time",
            metrics.memory.clone(),
        );
        usage.register(
            "bytes_in",
            "Request body bytes read on guests' behalf",
            metrics.bytes_in.clone(),
        );
        usage.register(
            "bytes_out",
            "Response body bytes sent, headers excluded",
            metrics.bytes_out.clone(),
        );
        metrics
    }

    /// One app's counters, made once per meter so that a request touches only atomics.
    fn counters(&self, labels: &AppLabels) -> AppCounters {
        AppCounters {
            requests: self.requests.get_or_create_owned(labels),
            wall: self.wall.get_or_create_owned(labels),
            guest_cpu: self.guest_cpu.get_or_create_owned(labels),
            memory: self.memory.get_or_create_owned(labels),
            bytes_in: self.bytes_in.get_or_create_owned(labels),
            bytes_out: self.bytes_out.get_or_create_owned(labels),
        }
    }

    fn forget(&self, labels: &AppLabels) {
        self.requests.remove(labels);
        self.wall.remove(labels);
        self.guest_cpu.remove(labels);
        self.memory.remove(labels);
        self.bytes_in.remove(labels);
        self.bytes_out.remove(labels);
    }
}

struct AppCounters {
    requests: Counter,
    wall: Seconds,
    guest_cpu: Seconds,
    memory: Seconds,
    bytes_in: Counter,
    bytes_out: Counter,
}

/// One minute's sums for one app, as kept in memory: times in whole nanoseconds, so that
/// sums of many short requests lose nothing to rounding.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
struct Sums {
    requests: u64,
    wall_nanos: u64,
    cpu_nanos: u64,
    memory_byte_seconds: f64,
    bytes_in: u64,
    bytes_out: u64,
}

impl Sums {
    fn add(&mut self, other: &Sums) {
        self.requests += other.requests;
        self.wall_nanos += other.wall_nanos;
        self.cpu_nanos += other.cpu_nanos;
        self.memory_byte_seconds += other.memory_byte_seconds;
        self.bytes_in += other.bytes_in;
        self.bytes_out += other.bytes_out;
    }

    fn figures(&self) -> UsageFigures {
        UsageFigures {
            requests: self.requests,
            wall_seconds: self.wall_nanos as f64 / 1e9,
            guest_cpu_seconds: self.cpu_nanos as f64 / 1e9,
            memory_byte_seconds: self.memory_byte_seconds,
            bytes_in: self.bytes_in,
            bytes_out: self.bytes_out,
        }
    }
}

/// What one app used, by minute, since its minutes were last written out.
pub struct AppMeter {
    tenant: String,
    app: String,
    /// (UTC minute number since the epoch, sums), oldest first; a few entries at most.
    minutes: Mutex<Vec<(u64, Sums)>>,
    counters: AppCounters,
}

impl AppMeter {
    fn record(&self, usage: &RequestUsage) {
        let wall = usage.wall.as_secs_f64();
        let sums = Sums {
            requests: 1,
            wall_nanos: nanos(usage.wall),
            cpu_nanos: nanos(usage.guest_cpu),
            memory_byte_seconds: usage.peak_memory_bytes as f64 * wall,
            bytes_in: usage.bytes_in,
            bytes_out: usage.bytes_out,
        };
        let counters = &self.counters;
        counters.requests.inc();
        counters.wall.inc_by(wall);
        counters.guest_cpu.inc_by(usage.guest_cpu.as_secs_f64());
        counters.memory.inc_by(sums.memory_byte_seconds);
        counters.bytes_in.inc_by(usage.bytes_in);
        counters.bytes_out.inc_by(usage.bytes_out);
        self.add(minute_of(SystemTime::now()), &sums);
    }

    fn add(&self, minute: u64, sums: &Sums) {
        let mut minutes = self.minutes.lock().unwrap_or_else(|e| e.into_inner());
        match minutes.last_mut() {
            Some((last, total)) if *last == minute => total.add(sums),
            _ => minutes.push((minute, *sums)),
        }
    }

    /// Takes the minutes before `before` out of memory.
    fn take_before(&self, before: u64) -> Vec<(u64, Sums)> {
        let mut minutes = self.minutes.lock().unwrap_or_else(|e| e.into_inner());
        let (taken, kept) = minutes.drain(..).partition(|(minute, _)| *minute < before);
        *minutes = kept;
        taken
    }

    fn is_empty(&self) -> bool {
        self.minutes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_empty()
    }
}

/// One line of a usage file.
#[derive(Debug, Serialize, Deserialize)]
struct UsageLine {
    /// The start of the minute, RFC 3339 UTC.
    minute: String,
    tenant: String,
    app: String,
    #[serde(flatten)]
    usage: UsageFigures,
}

pub struct UsageLedger {
    dir: PathBuf,
    /// The meter of every app that is loaded (its sink holds it) or has minutes not yet
    /// written out. Locked when an app is loaded, at a flush and at a query; never per request.
    meters: Mutex<HashMap<(String, String), Arc<AppMeter>>>,
    /// Meters of deleted apps whose minutes are not written out yet (or whose last requests
    /// are still running).
    retired: Mutex<Vec<Arc<AppMeter>>>,
    /// Held while minutes move from memory to the files, and while a query reads both, so
    /// that a query never misses minutes in transit.
    io: Mutex<()>,
    metrics: UsageMetrics,
}

impl UsageLedger {
    /// A ledger writing to `dir` (created if missing).
    pub(crate) fn open(dir: PathBuf, metrics: UsageMetrics) -> Result<UsageLedger, PersistError> {
        std::fs::create_dir_all(&dir).map_err(|source| PersistError::CreateFolder {
            path: dir.clone(),
            source,
        })?;
        Ok(UsageLedger {
            dir,
            meters: Mutex::default(),
            retired: Mutex::default(),
            io: Mutex::default(),
            metrics,
        })
    }

    /// The sink for the requests of `app` of `tenant`: what loading the app hands the runtime.
    pub fn sink(&self, tenant: &str, app: &str) -> UsageSink {
        let meter = {
            let mut meters = self.meters.lock().unwrap_or_else(|e| e.into_inner());
            meters
                .entry((tenant.to_string(), app.to_string()))
                .or_insert_with(|| {
                    let labels = AppLabels {
                        tenant: tenant.to_string(),
                        app: app.to_string(),
                    };
                    Arc::new(AppMeter {
                        tenant: labels.tenant.clone(),
                        app: labels.app.clone(),
                        minutes: Mutex::default(),
                        counters: self.metrics.counters(&labels),
                    })
                })
                .clone()
        };
        UsageSink::new(move |usage| meter.record(usage))
    }

    /// An app is deleted: its counters leave the metrics, its minutes stay to be written out
    /// (and requests still running on it are still recorded).
    pub fn retire(&self, tenant: &str, app: &str) {
        let key = (tenant.to_string(), app.to_string());
        let meter = self
            .meters
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&key);
        if let Some(meter) = meter {
            self.retired
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(meter);
        }
        self.metrics.forget(&AppLabels {
            tenant: key.0,
            app: key.1,
        });
    }

    /// Drops the meter and the series of an app that nothing records into and that has no
    /// usage (a first deploy that failed to load). An app being loaded meanwhile holds a sink,
    /// and keeps them.
    pub fn forget_unused(&self, tenant: &str, app: &str) {
        let mut meters = self.meters.lock().unwrap_or_else(|e| e.into_inner());
        let key = (tenant.to_string(), app.to_string());
        if meters
            .get(&key)
            .is_some_and(|meter| Arc::strong_count(meter) == 1 && meter.is_empty())
        {
            meters.remove(&key);
            self.metrics.forget(&AppLabels {
                tenant: key.0,
                app: key.1,
            });
        }
    }

    fn all_meters(&self) -> Vec<Arc<AppMeter>> {
        let mut all: Vec<Arc<AppMeter>> = self
            .meters
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .cloned()
            .collect();
        all.extend(
            self.retired
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .iter()
                .cloned(),
        );
        all
    }

    /// Writes out the minutes that have ended, or with `everything` (at shutdown) every
    /// minute in memory. Blocking: file I/O. Returns what it wrote, by day (`YYYY-MM-DD`),
    /// for a cluster host to share.
    pub fn flush(&self, everything: bool) -> Vec<(String, String)> {
        let mut written = Vec::new();
        let _io = self.io.lock().unwrap_or_else(|e| e.into_inner());
        let before = if everything {
            u64::MAX
        } else {
            minute_of(SystemTime::now())
        };
        let mut by_day: BTreeMap<u64, Vec<(Arc<AppMeter>, u64, Sums)>> = BTreeMap::new();
        for meter in self.all_meters() {
            for (minute, sums) in meter.take_before(before) {
                by_day.entry(minute / MINUTES_PER_DAY).or_default().push((
                    meter.clone(),
                    minute,
                    sums,
                ));
            }
        }
        for (day, entries) in by_day {
            let mut text = String::new();
            for (meter, minute, sums) in &entries {
                let line = UsageLine {
                    minute: minute_rfc3339(*minute),
                    tenant: meter.tenant.clone(),
                    app: meter.app.clone(),
                    usage: sums.figures(),
                };
                text.push_str(&serde_json::to_string(&line).unwrap_or_default());
                text.push('\n');
            }
            let path = self.day_file(day);
            match append(&path, text.as_bytes()) {
                Ok(()) => written.push((day_name(day), text)),
                Err(Appended::Nothing(err)) => {
                    // Kept in memory, to be tried again at the next flush.
                    tracing::error!("cannot write usage to {}: {err}", path.display());
                    for (meter, minute, sums) in &entries {
                        meter.add(*minute, sums);
                    }
                }
                Err(Appended::Partly(err)) => {
                    tracing::error!(
                        "writing usage to {} failed midway ({err}); some minutes of usage may \
                         be missing from it",
                        path.display()
                    );
                    written.push((day_name(day), text));
                }
            }
        }
        // Meters nobody can record into any more (their app is unloaded or deleted and no
        // request of it is running) and with nothing left in memory are dropped; loading the
        // app again makes a new one, with the same counters.
        self.meters
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|_, meter| Arc::strong_count(meter) > 1 || !meter.is_empty());
        self.retired
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|meter| Arc::strong_count(meter) > 1 || !meter.is_empty());
        written
    }

    fn day_file(&self, day: u64) -> PathBuf {
        self.dir.join(format!("{}.ndjson", day_name(day)))
    }

    /// The days (`YYYY-MM-DD`) a query of `from`..`to` reads.
    pub fn days(from: SystemTime, to: SystemTime) -> Result<Vec<String>, ReportError> {
        let (first, end) = query_minutes(from, to)?;
        Ok((first / MINUTES_PER_DAY..=(end - 1) / MINUTES_PER_DAY)
            .map(day_name)
            .collect())
    }

    /// What apps used in the minutes that start at or after `from` and before `to`, of one
    /// tenant or all. Blocking: reads the files of the days in range.
    ///
    /// On a cluster, `shared` holds what every host wrote out, by day (see [`Self::days`]);
    /// it is read instead of this host's files, which hold only this host's share.
    pub fn report(
        &self,
        from: SystemTime,
        to: SystemTime,
        tenant: Option<&str>,
        shared: Option<&HashMap<String, String>>,
    ) -> Result<UsageReport, ReportError> {
        let (first, end) = query_minutes(from, to)?;
        let wanted = |minute: u64, of: &str| {
            (first..end).contains(&minute) && tenant.is_none_or(|tenant| tenant == of)
        };
        let mut apps: BTreeMap<(String, String), UsageFigures> = BTreeMap::new();
        let _io = self.io.lock().unwrap_or_else(|e| e.into_inner());
        for day in first / MINUTES_PER_DAY..=(end - 1) / MINUTES_PER_DAY {
            let add = |line: UsageLine| {
                let Ok(start) = humantime::parse_rfc3339(&line.minute) else {
                    return;
                };
                if wanted(minute_of(start), &line.tenant) {
                    apps.entry((line.tenant, line.app))
                        .or_default()
                        .add(&line.usage);
                }
            };
            match shared {
                Some(days) => {
                    let name = day_name(day);
                    let text = days.get(&name).map_or("", String::as_str);
                    each_line(text, &format!("the cluster's usage of {name}"), add);
                }
                None => read_day(&self.day_file(day), add).map_err(ReportError::Read)?,
            }
        }
        for meter in self.all_meters() {
            let minutes = meter.minutes.lock().unwrap_or_else(|e| e.into_inner());
            for (minute, sums) in minutes.iter() {
                if wanted(*minute, &meter.tenant) {
                    apps.entry((meter.tenant.clone(), meter.app.clone()))
                        .or_default()
                        .add(&sums.figures());
                }
            }
        }
        let mut tenants: BTreeMap<String, UsageFigures> = BTreeMap::new();
        for ((tenant, _), usage) in &apps {
            tenants.entry(tenant.clone()).or_default().add(usage);
        }
        Ok(UsageReport {
            from: minute_rfc3339(first),
            to: minute_rfc3339(end),
            apps: apps
                .into_iter()
                .map(|((tenant, app), usage)| AppUsage { tenant, app, usage })
                .collect(),
            tenants: tenants
                .into_iter()
                .map(|(tenant, usage)| TenantUsage { tenant, usage })
                .collect(),
        })
    }
}

/// Why a usage query has no answer.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    /// The range asked for is empty or too long: the message says how.
    #[error("{0}")]
    Range(String),
    /// A usage file cannot be read: the message is for the operator's log.
    #[error(transparent)]
    Read(PersistError),
}

fn nanos(duration: Duration) -> u64 {
    u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX)
}

/// The UTC minute `time` falls in, counted from the epoch.
fn minute_of(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() / 60)
}

/// The first minute that starts at or after `time`.
fn minute_ceil(time: SystemTime) -> u64 {
    let nanos = time.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos());
    nanos.div_ceil(60_000_000_000) as u64
}

fn minute_rfc3339(minute: u64) -> String {
    humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(minute * 60)).to_string()
}

enum Appended {
    Nothing(std::io::Error),
    Partly(std::io::Error),
}

/// Appends `text` to the file at `path` and syncs it. A file whose last line was cut short
/// (a crash in mid-write) gets a line break first, so that the cut line spoils only itself.
fn append(path: &Path, text: &[u8]) -> Result<(), Appended> {
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .read(true)
        .append(true)
        .open(path)
        .map_err(Appended::Nothing)?;
    let length = file.metadata().map_err(Appended::Nothing)?.len();
    let mut last = [b'\n'];
    if length > 0 {
        file.seek(SeekFrom::Start(length - 1))
            .and_then(|_| file.read_exact(&mut last))
            .map_err(Appended::Nothing)?;
    }
    if last[0] != b'\n' {
        file.write_all(b"\n").map_err(Appended::Nothing)?;
    }
    file.write_all(text).map_err(Appended::Partly)?;
    file.sync_data().map_err(Appended::Partly)
}

/// The first minute and the end (exclusive) of a query, checked.
fn query_minutes(from: SystemTime, to: SystemTime) -> Result<(u64, u64), ReportError> {
    let first = minute_ceil(from);
    let end = minute_ceil(to);
    if end <= first {
        return Err(ReportError::Range(
            "no minute starts between `from` and `to`: usage is kept by the minute; ask for a \
             wider range"
                .into(),
        ));
    }
    if end - first > MAX_QUERY_DAYS * MINUTES_PER_DAY {
        return Err(ReportError::Range(format!(
            "the range is longer than {MAX_QUERY_DAYS} days; ask for less at a time"
        )));
    }
    Ok((first, end))
}

/// `YYYY-MM-DD` of day number `day` since the epoch.
fn day_name(day: u64) -> String {
    minute_rfc3339(day * MINUTES_PER_DAY)[..10].to_string()
}

/// Calls `each` with every line of a usage file; a missing file has none. Lines that do not
/// parse (one cut short by a crash) are skipped.
fn read_day(path: &Path, each: impl FnMut(UsageLine)) -> Result<(), PersistError> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(source) => {
            return Err(PersistError::Read {
                path: path.to_path_buf(),
                source,
            });
        }
    };
    each_line(&text, &path.display().to_string(), each);
    Ok(())
}

/// Calls `each` with every line of usage in `text` (from `source`), skipping damaged ones.
fn each_line(text: &str, source: &str, mut each: impl FnMut(UsageLine)) {
    for line in text.lines().filter(|line| !line.trim().is_empty()) {
        match serde_json::from_str(line) {
            Ok(line) => each(line),
            Err(err) => tracing::warn!("{source}: skipping a damaged line: {err}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn usage(ms: u64, memory: u64, bytes: u64) -> RequestUsage {
        RequestUsage {
            wall: Duration::from_millis(ms),
            guest_cpu: Duration::from_millis(ms / 2),
            peak_memory_bytes: memory,
            bytes_in: bytes,
            bytes_out: 2 * bytes,
        }
    }

    fn ledger(dir: &Path) -> UsageLedger {
        let mut registry = Registry::default();
        UsageLedger::open(dir.join("usage"), UsageMetrics::register(&mut registry)).unwrap()
    }

    #[test]
    fn sums_survive_a_flush_and_a_new_ledger() {
        let dir = tempfile::tempdir().unwrap();
        let now = SystemTime::now();
        let day = Duration::from_secs(86_400);
        {
            let ledger = ledger(dir.path());
            let sink = ledger.sink("acme", "web");
            ledger.sink("other", "site").send(&usage(1, 1, 1));
            sink.send(&usage(200, 1 << 20, 10));
            sink.send(&usage(300, 1 << 20, 5));
            let report = ledger
                .report(now - day, now + day, Some("acme"), None)
                .unwrap();
            assert_eq!(report.apps.len(), 1);
            let figures = report.apps[0].usage;
            assert_eq!(figures.requests, 2);
            assert_eq!((figures.bytes_in, figures.bytes_out), (15, 30));
            assert!((figures.wall_seconds - 0.5).abs() < 1e-9);
            assert!((figures.guest_cpu_seconds - 0.25).abs() < 1e-9);
            assert!((figures.memory_byte_seconds - 0.5 * f64::from(1 << 20)).abs() < 1e-3);
            ledger.flush(true);
            // Flushed: the same answer, now from the file.
            let again = ledger
                .report(now - day, now + day, Some("acme"), None)
                .unwrap();
            assert_eq!(again.apps[0].usage, figures);
            // A request after the flush adds to it.
            sink.send(&usage(100, 0, 1));
            let more = ledger.report(now - day, now + day, None, None).unwrap();
            assert_eq!(more.apps.len(), 2);
            assert_eq!(more.tenants[0].tenant, "acme");
            assert_eq!(more.tenants[0].usage.requests, 3);
            ledger.flush(true);
        }
        let ledger = ledger(dir.path());
        let report = ledger.report(now - day, now + day, None, None).unwrap();
        let requests: Vec<(String, u64)> = report
            .tenants
            .iter()
            .map(|t| (t.tenant.clone(), t.usage.requests))
            .collect();
        assert_eq!(requests, [("acme".into(), 3), ("other".into(), 1)]);
        // Outside the range: nothing.
        let before = ledger.report(now - 2 * day, now - day, None, None).unwrap();
        assert!(before.apps.is_empty());
    }

    #[test]
    fn a_cut_line_spoils_only_itself() {
        let dir = tempfile::tempdir().unwrap();
        let ledger = ledger(dir.path());
        let now = SystemTime::now();
        let path = ledger.day_file(minute_of(now) / MINUTES_PER_DAY);
        std::fs::write(&path, "{\"minute\":\"20").unwrap();
        ledger.sink("acme", "web").send(&usage(1, 0, 0));
        ledger.flush(true);
        let hour = Duration::from_secs(3600);
        let report = ledger.report(now - hour, now + hour, None, None).unwrap();
        assert_eq!(report.tenants[0].usage.requests, 1);
    }

    #[test]
    fn an_unused_meter_leaves_no_series_and_a_used_one_stays() {
        let dir = tempfile::tempdir().unwrap();
        let mut registry = Registry::default();
        let metrics = UsageMetrics::register(&mut registry);
        let ledger = UsageLedger::open(dir.path().join("usage"), metrics).unwrap();
        let scrape = |registry: &Registry| {
            let mut text = String::new();
            prometheus_client::encoding::text::encode(&mut text, registry).unwrap();
            text
        };
        drop(ledger.sink("acme", "failed"));
        let held = ledger.sink("acme", "loading");
        ledger.forget_unused("acme", "failed");
        ledger.forget_unused("acme", "loading");
        let text = scrape(&registry);
        assert!(!text.contains("failed"), "{text}");
        assert!(
            text.contains("usage_requests_total{tenant=\"acme\",app=\"loading\"} 0"),
            "{text}"
        );
        held.send(&usage(1, 0, 0));
        drop(held);
        ledger.forget_unused("acme", "loading");
        assert!(scrape(&registry).contains("app=\"loading\"} 1"));
    }

    #[test]
    fn minutes_round_up() {
        let at = |secs: u64, nanos: u32| UNIX_EPOCH + Duration::new(secs, nanos);
        assert_eq!(minute_ceil(at(120, 0)), 2);
        assert_eq!(minute_ceil(at(120, 1)), 3);
        assert_eq!(minute_of(at(179, 999)), 2);
        assert_eq!(minute_rfc3339(1), "1970-01-01T00:01:00Z");
    }
}
