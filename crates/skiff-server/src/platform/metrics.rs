//! The host's metrics: the HTTP trigger's and the runtime's, per route, and the platform's
//! own, set when scraped.
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use skiff_http::HttpMetrics;
use skiff_runtime::RuntimeMetrics;

use super::Platform;
use crate::usage::UsageMetrics;

/// The host's metrics: the HTTP trigger's, per route, and a few of the platform's own, set
/// when scraped.
pub(super) struct PlatformMetrics {
    registry: Registry,
    pub(super) http: Arc<HttpMetrics>,
    pub(super) runtime: Arc<RuntimeMetrics>,
    pub(super) schedules: Arc<skiff_triggers::ScheduleMetrics>,
    pub(super) queues: Arc<skiff_triggers::QueueMetrics>,
    apps_deployed: Gauge,
    apps_loaded: Gauge,
    tenants: Gauge,
    instances_running: Gauge,
    /// Loads of an idle app on its first request, by how long they took.
    pub(super) app_loads: Histogram,
    code: CodeMetrics,
    pub(super) usage: UsageMetrics,
}

/// The runtime's code loading figures. The runtime keeps plain totals; these counters are
/// brought up to them at each scrape.
struct CodeMetrics {
    shared: Counter,
    cache_hits: Counter,
    compiles: Counter,
    compile_seconds: Counter<f64, AtomicU64>,
    /// The runtime's totals at the last scrape.
    seen: Mutex<[u64; 4]>,
}

impl CodeMetrics {
    fn catch_up(&self, stats: &skiff_runtime::LoadStats) {
        let now = [
            stats.shared.load(Ordering::Relaxed),
            stats.cache_hits.load(Ordering::Relaxed),
            stats.compiles.load(Ordering::Relaxed),
            stats.compile_nanos.load(Ordering::Relaxed),
        ];
        let mut seen = self.seen.lock().unwrap_or_else(PoisonError::into_inner);
        let delta = |i: usize| now[i].saturating_sub(seen[i]);
        self.shared.inc_by(delta(0));
        self.cache_hits.inc_by(delta(1));
        self.compiles.inc_by(delta(2));
        self.compile_seconds.inc_by(delta(3) as f64 / 1e9);
        *seen = now;
    }
}

impl PlatformMetrics {
    /// The metrics of a host; on a cluster, `host` names it, and every series carries it as
    /// the label `host`, so that series of several hosts add up without clashing.
    pub(super) fn new(host: Option<&str>) -> Self {
        let mut registry = match host {
            Some(host) => {
                Registry::with_labels(std::iter::once(("host".into(), host.to_string().into())))
            }
            None => Registry::default(),
        };
        let http = HttpMetrics::register(&mut registry);
        let runtime = RuntimeMetrics::register(&mut registry);
        let schedules = skiff_triggers::ScheduleMetrics::register(&mut registry);
        let queues = skiff_triggers::QueueMetrics::register(&mut registry);
        let host = registry.sub_registry_with_prefix("skiff");
        let gauge = |registry: &mut Registry, name: &str, help: &str| {
            let gauge = Gauge::default();
            registry.register(name, help, gauge.clone());
            gauge
        };
        let apps_deployed = gauge(host, "apps_deployed", "Apps deployed on this host");
        let apps_loaded = gauge(host, "apps_loaded", "Apps whose code is in memory now");
        let tenants = gauge(host, "tenants", "Tenants of this host");
        let instances_running = gauge(
            host,
            "instances_running",
            "Sandboxes alive now, across all apps: running, or kept for reuse",
        );
        // 100 µs to about 6.5 s: mapped from the cache, or compiled.
        let app_loads = Histogram::new(exponential_buckets(0.000_1, 2.0, 17));
        host.register(
            "app_load_seconds",
            "Loads of an idle app on its first request",
            app_loads.clone(),
        );
        let code = CodeMetrics {
            shared: Counter::default(),
            cache_hits: Counter::default(),
            compiles: Counter::default(),
            compile_seconds: Counter::default(),
            seen: Mutex::new([0; 4]),
        };
        host.register(
            "code_shared",
            "Components that reused code already loaded from the same bytes",
            code.shared.clone(),
        );
        host.register(
            "code_cache_hits",
            "Components whose code was mapped from the code cache",
            code.cache_hits.clone(),
        );
        host.register(
            "code_compiles",
            "Components compiled (the code cache missed)",
            code.compiles.clone(),
        );
        host.register(
            "code_compile_seconds",
            "Time spent compiling components",
            code.compile_seconds.clone(),
        );
        let usage = UsageMetrics::register(host);
        PlatformMetrics {
            registry,
            http,
            runtime,
            schedules,
            queues,
            apps_deployed,
            apps_loaded,
            tenants,
            instances_running,
            app_loads,
            code,
            usage,
        }
    }
}

impl Platform {
    /// The metrics in the OpenMetrics text format: every series, or with `tenant`, only that
    /// tenant's (a tenant sees its own apps' figures and nobody else's).
    pub fn metrics_text(&self, tenant: Option<&str>) -> String {
        let apps = self.apps.load();
        let metrics = &self.metrics;
        metrics.apps_deployed.set(apps.len() as i64);
        let loaded = apps.values().filter(|a| a.live.load().is_some()).count();
        metrics.apps_loaded.set(loaded as i64);
        metrics.tenants.set(self.tenants_ref().all().len() as i64);
        metrics
            .instances_running
            .set(i64::from(self.runtime.instances_running()));
        metrics.code.catch_up(self.runtime.load_stats());
        let mut text = String::new();
        if let Err(err) = prometheus_client::encoding::text::encode(&mut text, &metrics.registry) {
            tracing::error!("cannot encode the metrics: {err}");
        }
        match tenant {
            None => text,
            Some(tenant) => {
                let label = format!("tenant=\"{tenant}\"");
                text.lines()
                    .filter(|line| line.starts_with('#') || line.contains(&label))
                    .flat_map(|line| [line, "\n"])
                    .collect()
            }
        }
    }
}
