//! The platform: every tenant and every deployed app of one host, what is live, and the
//! changes the management API makes (deploy, roll back, delete).
//!
//! On disk, under the data folder:
//!
//! | path | holds |
//! |---|---|
//! | `tenants.json` | tenants, their quotas and token hashes |
//! | `apps/NAME.json` | one app: its tenant, versions and which one is live |
//! | `bundles/ID/` | one deployed version, unpacked (a deploy unpacks into a fresh one) |
//! | `tenants/TENANT/kv/` | the tenant's embedded key-value data, one file per app |
//! | `cache/` | compiled code (unless `--cache-dir` says elsewhere) |
//! | `usage/YYYY-MM-DD.ndjson` | what apps used, per app and minute (see [`crate::usage`]) |
//!
//! The request path reads the app index through an `ArcSwap`, without a lock; changes are
//! made under one mutex and published by swapping in a new index. A version is made live only
//! once it is completely loaded, so a request sees either the old version or the new one.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use arc_swap::{ArcSwap, ArcSwapOption};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use serde::{Deserialize, Serialize};
use skiff_http::{HttpApp, HttpMetrics};
use skiff_manifest::{App, format_size};
use skiff_runtime::{LoadOptions, MetricsScope, Runtime, RuntimeMetrics};

use crate::api::{
    self, AppInfo, AppStatus, AppSummary, ComponentInfo, ErrorCode, LimitsInfo, Quotas, RouteInfo,
    VersionInfo,
};
use crate::bundle::{self, BundleLimits};
use crate::logs::LogHub;
use crate::persist;
use crate::tenants::{Tenant, Tenants};
use crate::usage::{UsageLedger, UsageMetrics};

/// What the operator decides for the whole host.
#[derive(Debug, Clone)]
pub struct PlatformConfig {
    pub data_dir: PathBuf,
    /// Apps are served at `NAME.DOMAIN`.
    pub domain: String,
    /// Largest upload, packed.
    pub max_bundle_bytes: u64,
    pub bundle_limits: BundleLimits,
    /// Versions kept per app besides the live one, for rollbacks.
    pub keep_versions: usize,
    /// Quotas of a tenant created without its own.
    pub default_quotas: Quotas,
    /// An app not requested for this long is dropped from memory (its compiled code stays in
    /// the cache, and the next request maps it back in).
    pub idle_unload: Option<Duration>,
    /// How often minutes of usage that have ended are written to `usage/`.
    pub usage_flush: Duration,
}

/// Why a management call was refused: a code for scripts, a message for people.
#[derive(Debug, Clone)]
pub struct Refusal {
    pub code: ErrorCode,
    pub message: String,
}

impl Refusal {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Refusal {
            code,
            message: message.into(),
        }
    }

    fn not_found(name: &str) -> Self {
        Refusal::new(
            ErrorCode::NotFound,
            format!("no app named `{name}`; `skiff apps list` shows yours"),
        )
    }

    /// A failure of the server itself: the details (paths, OS errors) go to the operator's
    /// log, not to the tenant.
    pub(crate) fn internal(message: impl Into<String>) -> Self {
        tracing::error!("{}", message.into());
        Refusal::new(
            ErrorCode::Internal,
            "the server failed to do this; its log says why (try again, or ask the operator)",
        )
    }
}

type Refused<T> = Result<T, Refusal>;

/// Deploys that may upload and compile at once; more wait their turn.
const MAX_CONCURRENT_DEPLOYS: usize = 4;

/// One deployed app.
pub struct AppEntry {
    pub name: String,
    pub tenant: Arc<Tenant>,
    record: Mutex<AppRecord>,
    /// The loaded live version; `None` while idle (not loaded yet, or unloaded).
    live: ArcSwapOption<LiveVersion>,
    /// Held while loading, so that a burst of first requests loads the app once.
    loading: tokio::sync::Mutex<()>,
    /// Milliseconds since the platform started, at the last request.
    last_used: AtomicU64,
    pub logs: Arc<LogHub>,
}

struct LiveVersion {
    version: u64,
    app: Arc<HttpApp>,
}

/// `apps/NAME.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct AppRecord {
    name: String,
    tenant: String,
    live: u64,
    next_version: u64,
    /// Oldest first.
    versions: Vec<VersionRecord>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct VersionRecord {
    version: u64,
    app_version: String,
    deployed_at: String,
    /// The folder under `bundles/`.
    bundle: String,
    code_bytes: u64,
    routes: Vec<RouteInfo>,
    components: Vec<ComponentInfo>,
}

impl AppRecord {
    fn version(&self, version: u64) -> Option<&VersionRecord> {
        self.versions.iter().find(|v| v.version == version)
    }

    fn live_version(&self) -> &VersionRecord {
        self.version(self.live)
            .expect("an app record always holds its live version")
    }
}

pub struct Platform {
    runtime: Arc<Runtime>,
    metrics: PlatformMetrics,
    config: PlatformConfig,
    /// `http://` and the data plane's port, once it listens: app URLs are made from it.
    public_port: AtomicU64,
    tenants: RwLock<Tenants>,
    apps: ArcSwap<HashMap<String, Arc<AppEntry>>>,
    /// Serialises changes to tenants, app records and the index.
    changes: Mutex<()>,
    log_hubs: Mutex<HashMap<String, Arc<LogHub>>>,
    /// Deploys in progress at once: each holds its upload in memory and compiles, so a burst
    /// of them must not take the host's memory and CPU from the apps it serves.
    deploys: tokio::sync::Semaphore,
    started: Instant,
    usage: UsageLedger,
}

impl Platform {
    /// Opens the data folder: tenants and app records are read, no app is loaded yet (each
    /// loads on its first request).
    pub fn open(runtime: Arc<Runtime>, config: PlatformConfig) -> Result<Arc<Platform>, String> {
        for dir in ["apps", "bundles", "tenants"] {
            let path = config.data_dir.join(dir);
            std::fs::create_dir_all(&path)
                .map_err(|err| format!("cannot create {}: {err}", path.display()))?;
        }
        let tenants = Tenants::open(&config.data_dir)?;
        let mut apps = HashMap::new();
        let mut log_hubs = HashMap::new();
        let mut referenced = std::collections::HashSet::new();
        let listing = std::fs::read_dir(config.data_dir.join("apps"))
            .map_err(|err| format!("cannot read the apps folder: {err}"))?;
        for file in listing.flatten() {
            let path = file.path();
            if path.extension().is_none_or(|ext| ext != "json") {
                continue;
            }
            let Some(record) = persist::read_json::<AppRecord>(&path)? else {
                continue;
            };
            let Some(tenant) = tenants.get(&record.tenant) else {
                tracing::warn!(
                    "{}: its tenant `{}` no longer exists; not serving it",
                    path.display(),
                    record.tenant
                );
                continue;
            };
            referenced.extend(record.versions.iter().map(|v| v.bundle.clone()));
            let entry = AppEntry::new(record, tenant, LogHub::new());
            log_hubs.insert(entry.name.clone(), entry.logs.clone());
            apps.insert(entry.name.clone(), Arc::new(entry));
        }
        // Bundles no record names are left over from deploys that failed or were cut short.
        if let Ok(listing) = std::fs::read_dir(config.data_dir.join("bundles")) {
            for dir in listing.flatten() {
                let name = dir.file_name().to_string_lossy().into_owned();
                if !referenced.contains(&name) {
                    let _ = std::fs::remove_dir_all(dir.path());
                }
            }
        }
        tracing::info!(
            apps = apps.len(),
            tenants = tenants.all().len(),
            "opened {}",
            config.data_dir.display()
        );
        let metrics = PlatformMetrics::new();
        let usage = UsageLedger::open(config.data_dir.join("usage"), metrics.usage.clone())?;
        Ok(Arc::new(Platform {
            runtime,
            metrics,
            config,
            public_port: AtomicU64::new(0),
            tenants: RwLock::new(tenants),
            apps: ArcSwap::from_pointee(apps),
            changes: Mutex::new(()),
            log_hubs: Mutex::new(log_hubs),
            deploys: tokio::sync::Semaphore::new(MAX_CONCURRENT_DEPLOYS),
            started: Instant::now(),
            usage,
        }))
    }

    /// Waits for a deploy slot; hold it from before the upload is read until the deploy ends.
    pub async fn deploy_slot(&self) -> tokio::sync::SemaphorePermit<'_> {
        self.deploys
            .acquire()
            .await
            .expect("the deploy semaphore is never closed")
    }

    pub fn config(&self) -> &PlatformConfig {
        &self.config
    }

    /// Tells the platform where the data plane listens, for the URLs it reports.
    pub fn set_public_port(&self, port: u16) {
        self.public_port.store(port.into(), Ordering::Relaxed);
    }

    fn url(&self, name: &str) -> String {
        match self.public_port.load(Ordering::Relaxed) {
            0 | 80 => format!("http://{name}.{}/", self.config.domain),
            port => format!("http://{name}.{}:{port}/", self.config.domain),
        }
    }

    fn now_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    // ---- tenants ----

    pub fn tenant_by_token(&self, token: &str) -> Option<Arc<Tenant>> {
        self.tenants.read().expect("tenants lock").by_token(token)
    }

    pub fn tenant(&self, name: &str) -> Option<Arc<Tenant>> {
        self.tenants.read().expect("tenants lock").get(name)
    }

    /// Creates a tenant; its token is returned, and never again.
    pub fn create_tenant(&self, name: &str, quotas: Quotas) -> Refused<String> {
        api::check_name("tenant", name).map_err(|m| Refusal::new(ErrorCode::BadRequest, m))?;
        let _changes = self.changes.lock().expect("changes lock");
        let created = self
            .tenants
            .write()
            .expect("tenants lock")
            .create(name, quotas)
            .map_err(Refusal::internal)?;
        created.ok_or_else(|| {
            Refusal::new(
                ErrorCode::Conflict,
                format!("a tenant named `{name}` exists already"),
            )
        })
    }

    pub fn tenants(&self) -> Vec<(Arc<Tenant>, u32)> {
        let apps = self.apps.load();
        let tenants = self.tenants.read().expect("tenants lock").all();
        tenants
            .into_iter()
            .map(|tenant| {
                let count = apps
                    .values()
                    .filter(|a| a.tenant.name == tenant.name)
                    .count();
                (tenant, count as u32)
            })
            .collect()
    }

    // ---- the data plane ----

    /// The live version of the app named `name`, loading it if it is idle. `None` if there
    /// is no such app.
    pub async fn serve(&self, name: &str) -> Option<Result<Arc<HttpApp>, String>> {
        let entry = self.apps.load().get(name)?.clone();
        entry.last_used.store(self.now_ms(), Ordering::Relaxed);
        if let Some(live) = entry.live.load().as_ref() {
            return Some(Ok(live.app.clone()));
        }
        Some(
            self.load_live(&entry)
                .await
                .map_err(|refusal| refusal.message),
        )
    }

    async fn load_live(&self, entry: &Arc<AppEntry>) -> Refused<Arc<HttpApp>> {
        let _loading = entry.loading.lock().await;
        if let Some(live) = entry.live.load().as_ref() {
            return Ok(live.app.clone());
        }
        let version = entry.record().live_version().clone();
        let started = Instant::now();
        let app = self.load_version(entry, &version).await?;
        self.metrics
            .app_loads
            .observe(started.elapsed().as_secs_f64());
        tracing::info!(
            app = %entry.name, version = version.version,
            "loaded in {:.1} ms", started.elapsed().as_secs_f64() * 1000.0
        );
        entry.live.store(Some(Arc::new(LiveVersion {
            version: version.version,
            app: app.clone(),
        })));
        Ok(app)
    }

    /// Loads a deployed version from its bundle (its code from the cache).
    async fn load_version(
        &self,
        entry: &AppEntry,
        version: &VersionRecord,
    ) -> Refused<Arc<HttpApp>> {
        let dir = self.config.data_dir.join("bundles").join(&version.bundle);
        let (app, _) = self
            .read_bundle(dir.clone(), entry.name.clone(), &entry.tenant.quotas)
            .await?;
        self.load(app, &entry.tenant, &entry.logs, &dir).await
    }

    /// Drops apps not requested for the idle period from memory; returns how many.
    pub fn unload_idle(&self) -> usize {
        let Some(idle) = self.config.idle_unload else {
            return 0;
        };
        let now = self.now_ms();
        let idle = idle.as_millis() as u64;
        let mut unloaded = 0;
        for entry in self.apps.load().values() {
            if entry.live.load().is_some()
                && now.saturating_sub(entry.last_used.load(Ordering::Relaxed)) >= idle
            {
                entry.live.store(None);
                unloaded += 1;
            }
        }
        if unloaded > 0 {
            give_back_freed_memory();
        }
        unloaded
    }

    // ---- apps ----

    fn entry_of(&self, tenant: &Tenant, name: &str) -> Refused<Arc<AppEntry>> {
        // Another tenant's app answers exactly like a missing one: names do not leak.
        match self.apps.load().get(name) {
            Some(entry) if entry.tenant.name == tenant.name => Ok(entry.clone()),
            _ => Err(Refusal::not_found(name)),
        }
    }

    pub fn list(&self, tenant: &Tenant) -> Vec<AppSummary> {
        let mut apps: Vec<AppSummary> = self
            .apps
            .load()
            .values()
            .filter(|entry| entry.tenant.name == tenant.name)
            .map(|entry| self.summary(entry, &entry.record()))
            .collect();
        apps.sort_by(|a, b| a.name.cmp(&b.name));
        apps
    }

    pub fn inspect(&self, tenant: &Tenant, name: &str) -> Refused<AppInfo> {
        let entry = self.entry_of(tenant, name)?;
        Ok(self.info(&entry))
    }

    pub fn logs(&self, tenant: &Tenant, name: &str) -> Refused<Arc<LogHub>> {
        Ok(self.entry_of(tenant, name)?.logs.clone())
    }

    fn summary(&self, entry: &AppEntry, record: &AppRecord) -> AppSummary {
        let live = record.live_version();
        AppSummary {
            name: entry.name.clone(),
            version: live.version,
            app_version: live.app_version.clone(),
            url: self.url(&entry.name),
            deployed_at: live.deployed_at.clone(),
            status: if entry.live.load().is_some() {
                AppStatus::Live
            } else {
                AppStatus::Idle
            },
        }
    }

    fn info(&self, entry: &AppEntry) -> AppInfo {
        let record = entry.record();
        let live = record.live_version();
        AppInfo {
            summary: self.summary(entry, &record),
            tenant: entry.tenant.name.clone(),
            routes: live.routes.clone(),
            components: live.components.clone(),
            versions: record
                .versions
                .iter()
                .rev()
                .map(|v| VersionInfo {
                    version: v.version,
                    app_version: v.app_version.clone(),
                    deployed_at: v.deployed_at.clone(),
                    live: v.version == record.live,
                })
                .collect(),
        }
    }

    /// Deploys a bundle as app `name` of `tenant`: a new app, or a new version of one. The
    /// bundle is unpacked into a fresh folder, validated and loaded completely before anything
    /// live changes; on any failure the folder is removed and the live version keeps serving.
    /// Returns the app and whether it is new.
    pub async fn deploy(
        &self,
        tenant: &Arc<Tenant>,
        name: &str,
        bundle_bytes: bytes::Bytes,
    ) -> Refused<(AppInfo, bool)> {
        api::check_name("app", name).map_err(|m| Refusal::new(ErrorCode::BadRequest, m))?;
        // Refuse early what would be refused at the end anyway, before the expensive part.
        self.check_deploy(tenant, name, 0)?;

        let bundle_id = format!("{name}-{}", unique_suffix());
        let dir = self.config.data_dir.join("bundles").join(&bundle_id);
        let result = self
            .prepare(tenant, name, bundle_bytes, &dir, &bundle_id)
            .await;
        let result = match result {
            Ok((version, app)) => self.commit(tenant, name, version, app),
            Err(refusal) => Err(refusal),
        };
        if result.is_err() {
            let _ = tokio::fs::remove_dir_all(&dir).await;
            // A first deploy that failed leaves no usage series behind.
            if !self.apps.load().contains_key(name) {
                self.usage.forget_unused(&tenant.name, name);
            }
        }
        result
    }

    /// Unpacks, validates and loads a bundle: everything but making it live.
    async fn prepare(
        &self,
        tenant: &Arc<Tenant>,
        name: &str,
        bundle_bytes: bytes::Bytes,
        dir: &Path,
        bundle_id: &str,
    ) -> Refused<(VersionRecord, (Arc<HttpApp>, Arc<LogHub>))> {
        let limits = self.config.bundle_limits.clone();
        let target = dir.to_path_buf();
        tokio::task::spawn_blocking(move || {
            std::fs::create_dir_all(&target)?;
            Ok::<_, std::io::Error>(bundle::unpack(&bundle_bytes, &target, &limits))
        })
        .await
        .map_err(|err| Refusal::internal(format!("unpacking stopped: {err}")))?
        .map_err(|err| Refusal::internal(format!("cannot create {}: {err}", dir.display())))?
        .map_err(|err| match err {
            // The server's disk failing is not the tenant's upload being wrong.
            bundle::BundleError::Io { .. } => Refusal::internal(format!("unpacking: {err}")),
            err => Refusal::new(ErrorCode::InvalidBundle, err.to_string()),
        })?;

        let (app, code_bytes) = self
            .read_bundle(dir.to_path_buf(), name.to_string(), &tenant.quotas)
            .await?;
        self.check_deploy(tenant, name, code_bytes)?;
        let version = VersionRecord {
            version: 0, // numbered when committed
            app_version: app.version.clone(),
            deployed_at: String::new(),
            bundle: bundle_id.to_string(),
            code_bytes,
            routes: app
                .routes
                .iter()
                .map(|route| RouteInfo {
                    route: route.as_written.clone(),
                    component: app.components[route.component].id.clone(),
                })
                .collect(),
            components: app
                .components
                .iter()
                .map(|c| component_info(c, dir, &self.runtime))
                .collect(),
        };
        // An update keeps the app's log stream, so `skiff logs --follow` goes on across it.
        let logs = self.log_hub(name);
        let loaded = self.load(app, tenant, &logs, dir).await?;
        Ok((version, (loaded, logs)))
    }

    /// Parses and checks the manifest of an unpacked bundle against the tenant's ceilings;
    /// returns the app (named `name`, whatever its manifest says, and with the limits it
    /// will run under) and the size of its code.
    async fn read_bundle(
        &self,
        dir: PathBuf,
        name: String,
        quotas: &Quotas,
    ) -> Refused<(App, u64)> {
        let quotas = quotas.clone();
        let defaults = (
            self.runtime.config().default_memory,
            self.runtime.config().default_timeout,
        );
        tokio::task::spawn_blocking(move || {
            let manifest = dir.join("skiff.toml");
            let mut app = skiff_manifest::load(&manifest).map_err(|mut err| {
                err.path = PathBuf::from("skiff.toml");
                Refusal::new(
                    ErrorCode::InvalidManifest,
                    relative_to(&err.to_string(), &dir),
                )
            })?;
            bundle::confine(&app, &dir).map_err(|m| Refusal::new(ErrorCode::InvalidBundle, m))?;
            app.name = name;
            apply_ceilings(&mut app, &quotas, defaults)?;
            let mut sources: Vec<&Path> = app.components.iter().map(|c| &*c.source).collect();
            sources.sort();
            sources.dedup();
            let code_bytes = sources
                .iter()
                .map(|path| std::fs::metadata(path).map_or(0, |m| m.len()))
                .sum();
            Ok((app, code_bytes))
        })
        .await
        .map_err(|err| Refusal::internal(format!("reading the bundle stopped: {err}")))?
    }

    /// Compiles (or maps from the cache) and links every component of `app`.
    async fn load(
        &self,
        app: App,
        tenant: &Tenant,
        logs: &Arc<LogHub>,
        dir: &Path,
    ) -> Refused<Arc<HttpApp>> {
        let options = LoadOptions {
            data_dir: Some(self.config.data_dir.join("tenants").join(&tenant.name)),
            shared_concurrency: Some(tenant.in_flight.clone()),
            log_sink: Some(logs.sink()),
            usage: Some(self.usage.sink(&tenant.name, &app.name)),
            metrics: Some(MetricsScope {
                metrics: self.metrics.runtime.clone(),
                tenant: tenant.name.as_str().into(),
            }),
        };
        let runtime = self.runtime.clone();
        let dir = dir.to_path_buf();
        let http_metrics = self.metrics.http.clone();
        let tenant = tenant.name.clone();
        tokio::task::spawn_blocking(move || {
            let components: Vec<String> = app.components.iter().map(|c| c.id.clone()).collect();
            runtime
                .load_app_with(app, &options)
                .map(|loaded| Arc::new(HttpApp::new(loaded).with_metrics(&http_metrics, &tenant)))
                .map_err(|err| {
                    let component = err
                        .component
                        .and_then(|i| components.get(i))
                        .map(|id| format!("component `{id}`: "))
                        .unwrap_or_default();
                    Refusal::new(
                        ErrorCode::LoadFailed,
                        relative_to(&format!("{component}{err}"), &dir),
                    )
                })
        })
        .await
        .map_err(|err| Refusal::internal(format!("loading stopped: {err}")))?
    }

    /// The checks a deploy must pass before and after the expensive part: the name is not
    /// another tenant's, and the quotas hold with `code_bytes` of new code.
    fn check_deploy(&self, tenant: &Tenant, name: &str, code_bytes: u64) -> Refused<()> {
        let apps = self.apps.load();
        if let Some(existing) = apps.get(name)
            && existing.tenant.name != tenant.name
        {
            // Unavoidable: app names are host names, one namespace for the whole host.
            return Err(Refusal::new(
                ErrorCode::Conflict,
                format!("the app name `{name}` is taken; deploy under another with --name"),
            ));
        }
        let quotas = &tenant.quotas;
        let mine = apps.values().filter(|a| a.tenant.name == tenant.name);
        let (mut count, mut code) = (0u32, 0u64);
        for app in mine {
            if app.name != name {
                count += 1;
                code += app.record().live_version().code_bytes;
            }
        }
        if count + 1 > quotas.max_apps {
            return Err(Refusal::new(
                ErrorCode::QuotaExceeded,
                format!(
                    "quota max_apps: the tenant has {count} apps, the most it may have; delete \
                     one (`skiff apps delete NAME`) or ask the operator for more"
                ),
            ));
        }
        if code + code_bytes > quotas.max_code_bytes {
            return Err(Refusal::new(
                ErrorCode::QuotaExceeded,
                format!(
                    "quota max_code_bytes: this app's components are {} and the tenant's other \
                     apps {}, over the quota of {}; make the components smaller or ask the \
                     operator for more",
                    format_size(code_bytes),
                    format_size(code),
                    format_size(quotas.max_code_bytes)
                ),
            ));
        }
        Ok(())
    }

    /// Makes a prepared version live, and writes it down.
    fn commit(
        &self,
        tenant: &Arc<Tenant>,
        name: &str,
        mut version: VersionRecord,
        (app, logs): (Arc<HttpApp>, Arc<LogHub>),
    ) -> Refused<(AppInfo, bool)> {
        let _changes = self.changes.lock().expect("changes lock");
        // Another deploy may have committed while this one compiled.
        self.check_deploy(tenant, name, version.code_bytes)?;
        version.deployed_at = persist::now_rfc3339();
        let apps = self.apps.load();
        let existing = apps.get(name).cloned();
        let created = existing.is_none();
        let entry = match existing {
            Some(entry) => entry,
            None => Arc::new(AppEntry::new(
                AppRecord {
                    name: name.to_string(),
                    tenant: tenant.name.clone(),
                    live: 0,
                    next_version: 1,
                    versions: Vec::new(),
                },
                tenant.clone(),
                logs,
            )),
        };
        let (record, dropped) = {
            let mut record = entry.record().clone();
            version.version = record.next_version;
            record.next_version += 1;
            record.live = version.version;
            record.versions.push(version.clone());
            let dropped = prune(&mut record, self.config.keep_versions);
            (record, dropped)
        };
        self.write_record(&record)?;
        *entry.record.lock().expect("record lock") = record;
        entry.last_used.store(self.now_ms(), Ordering::Relaxed);
        entry.live.store(Some(Arc::new(LiveVersion {
            version: version.version,
            app,
        })));
        if created {
            let mut index = HashMap::clone(&apps);
            index.insert(name.to_string(), entry.clone());
            self.apps.store(Arc::new(index));
        }
        self.remove_bundles(dropped);
        tracing::info!(
            app = name, tenant = %tenant.name, version = version.version,
            "deployed: version {} is live", version.version
        );
        Ok((self.info(&entry), created))
    }

    /// Makes the version before the live one live again.
    pub async fn rollback(&self, tenant: &Tenant, name: &str) -> Refused<AppInfo> {
        let entry = self.entry_of(tenant, name)?;
        let _loading = entry.loading.lock().await;
        let previous = {
            let record = entry.record();
            record
                .versions
                .iter()
                .rev()
                .find(|v| v.version < record.live)
                .cloned()
        };
        let Some(previous) = previous else {
            return Err(Refusal::new(
                ErrorCode::Conflict,
                format!("`{name}` has no version older than the live one to roll back to"),
            ));
        };
        let app = self.load_version(&entry, &previous).await?;
        {
            let _changes = self.changes.lock().expect("changes lock");
            let mut record = entry.record().clone();
            record.live = previous.version;
            self.write_record(&record)?;
            *entry.record.lock().expect("record lock") = record;
            entry.live.store(Some(Arc::new(LiveVersion {
                version: previous.version,
                app,
            })));
        }
        tracing::info!(app = name, version = previous.version, "rolled back");
        Ok(self.info(&entry))
    }

    /// Stops serving an app and removes its versions. Requests already running finish. The
    /// tenant's key-value data stays: deploying the app again finds it.
    pub fn delete(&self, tenant: &Tenant, name: &str) -> Refused<()> {
        let _changes = self.changes.lock().expect("changes lock");
        let entry = self.entry_of(tenant, name)?;
        let path = self.record_path(name);
        std::fs::remove_file(&path)
            .map_err(|err| Refusal::internal(format!("cannot remove {}: {err}", path.display())))?;
        let mut index = HashMap::clone(&self.apps.load());
        index.remove(name);
        self.apps.store(Arc::new(index));
        entry.live.store(None);
        self.log_hubs.lock().expect("log hubs lock").remove(name);
        entry.logs.close();
        self.metrics.http.forget_app(&tenant.name, name);
        self.metrics.runtime.forget_app(&tenant.name, name);
        self.usage.retire(&tenant.name, name);
        let bundles = entry
            .record()
            .versions
            .iter()
            .map(|v| v.bundle.clone())
            .collect();
        self.remove_bundles(bundles);
        tracing::info!(app = name, tenant = %tenant.name, "deleted");
        Ok(())
    }

    /// The log stream of the app named `name`: one per name from its first deploy until it
    /// is deleted, so that concurrent first deploys share it.
    fn log_hub(&self, name: &str) -> Arc<LogHub> {
        let mut hubs = self.log_hubs.lock().expect("log hubs lock");
        hubs.entry(name.to_string())
            .or_insert_with(LogHub::new)
            .clone()
    }

    fn record_path(&self, name: &str) -> PathBuf {
        self.config
            .data_dir
            .join("apps")
            .join(format!("{name}.json"))
    }

    fn write_record(&self, record: &AppRecord) -> Refused<()> {
        persist::write_json(&self.record_path(&record.name), record).map_err(Refusal::internal)
    }

    fn remove_bundles(&self, bundles: Vec<String>) {
        if bundles.is_empty() {
            return;
        }
        let root = self.config.data_dir.join("bundles");
        // In the background: a request still running on an old version may read its files.
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(60)).await;
            for bundle in bundles {
                let _ = tokio::fs::remove_dir_all(root.join(bundle)).await;
            }
        });
    }

    /// The usage ledger: what apps used, for billing.
    pub fn usage(&self) -> &UsageLedger {
        &self.usage
    }

    /// The live version number being served, if loaded (for tests and status).
    pub fn loaded_version(&self, name: &str) -> Option<u64> {
        let apps = self.apps.load();
        let live = apps.get(name)?.live.load();
        live.as_ref().map(|live| live.version)
    }
}

/// The host's metrics: the HTTP trigger's, per route, and a few of the platform's own, set
/// when scraped.
struct PlatformMetrics {
    registry: Registry,
    http: Arc<HttpMetrics>,
    runtime: Arc<RuntimeMetrics>,
    apps_deployed: Gauge,
    apps_loaded: Gauge,
    tenants: Gauge,
    instances_running: Gauge,
    /// Loads of an idle app on its first request, by how long they took.
    app_loads: Histogram,
    code: CodeMetrics,
    usage: UsageMetrics,
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
        let mut seen = self.seen.lock().expect("code metrics lock");
        let delta = |i: usize| now[i].saturating_sub(seen[i]);
        self.shared.inc_by(delta(0));
        self.cache_hits.inc_by(delta(1));
        self.compiles.inc_by(delta(2));
        self.compile_seconds.inc_by(delta(3) as f64 / 1e9);
        *seen = now;
    }
}

impl PlatformMetrics {
    fn new() -> Self {
        let mut registry = Registry::default();
        let http = HttpMetrics::register(&mut registry);
        let runtime = RuntimeMetrics::register(&mut registry);
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
        metrics
            .tenants
            .set(self.tenants.read().expect("tenants lock").all().len() as i64);
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

impl AppEntry {
    fn new(record: AppRecord, tenant: Arc<Tenant>, logs: Arc<LogHub>) -> AppEntry {
        AppEntry {
            name: record.name.clone(),
            tenant,
            record: Mutex::new(record),
            live: ArcSwapOption::empty(),
            loading: tokio::sync::Mutex::new(()),
            last_used: AtomicU64::new(0),
            logs,
        }
    }

    fn record(&self) -> std::sync::MutexGuard<'_, AppRecord> {
        self.record.lock().expect("record lock")
    }
}

/// Returns the heap that unloaded apps freed to the operating system. glibc keeps freed
/// memory for reuse; after an unload sweep that is most of an idle app's footprint (measured:
/// a host with 1,000 idle apps went from 141 to 65 MiB).
fn give_back_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only releases free memory; it is safe to call at any time.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Keeps the live version and the `keep` newest others; returns the bundles of the rest.
fn prune(record: &mut AppRecord, keep: usize) -> Vec<String> {
    let live = record.live;
    let others = record.versions.iter().filter(|v| v.version != live).count();
    let mut excess = others.saturating_sub(keep);
    let mut dropped = Vec::new();
    record.versions.retain(|v| {
        if excess > 0 && v.version != live {
            excess -= 1;
            dropped.push(v.bundle.clone());
            false
        } else {
            true
        }
    });
    dropped
}

/// Holds every component to the tenant's ceilings: a limit the manifest sets above one is
/// refused; a limit it leaves out becomes the server's default, or the ceiling if that is
/// lower, so that what the app runs under is what `apps inspect` shows.
fn apply_ceilings(
    app: &mut App,
    quotas: &Quotas,
    (default_memory, default_timeout): (Option<u64>, Duration),
) -> Refused<()> {
    let max_timeout = Duration::from_millis(quotas.max_timeout_ms);
    for component in &mut app.components {
        let limits = &mut component.limits;
        let memory = *limits.memory.get_or_insert(
            default_memory.map_or(quotas.max_memory_bytes, |d| d.min(quotas.max_memory_bytes)),
        );
        if memory > quotas.max_memory_bytes {
            return Err(Refusal::new(
                ErrorCode::QuotaExceeded,
                format!(
                    "quota max_memory_bytes: component `{}` may use {} of memory, over the \
                     tenant's ceiling of {}; lower [component.{}.limits] memory",
                    component.id,
                    format_size(memory),
                    format_size(quotas.max_memory_bytes),
                    component.id
                ),
            ));
        }
        let timeout = *limits
            .timeout
            .get_or_insert(default_timeout.min(max_timeout));
        if timeout > max_timeout {
            return Err(Refusal::new(
                ErrorCode::QuotaExceeded,
                format!(
                    "quota max_timeout_ms: component `{}` has a timeout of {}, over the \
                     tenant's ceiling of {}; lower [component.{}.limits] timeout",
                    component.id,
                    humantime::format_duration(timeout),
                    humantime::format_duration(max_timeout),
                    component.id
                ),
            ));
        }
    }
    Ok(())
}

fn component_info(
    component: &skiff_manifest::Component,
    dir: &Path,
    runtime: &Runtime,
) -> ComponentInfo {
    let limits = &component.limits;
    ComponentInfo {
        id: component.id.clone(),
        source: component
            .source
            .strip_prefix(dir)
            .unwrap_or(&component.source)
            .display()
            .to_string(),
        code_bytes: std::fs::metadata(&component.source).map_or(0, |m| m.len()),
        limits: LimitsInfo {
            memory_bytes: limits.memory.or(runtime.config().default_memory),
            timeout_ms: limits
                .timeout
                .unwrap_or(runtime.config().default_timeout)
                .as_millis() as u64,
            max_concurrency: limits.max_concurrency,
            fuel: limits.fuel,
            requests_per_instance: limits.requests_per_instance,
        },
    }
}

/// Error messages name files by their path in the bundle, not on the server.
fn relative_to(message: &str, dir: &Path) -> String {
    let prefix = format!("{}/", dir.display());
    message
        .replace(&prefix, "")
        .replace(&dir.display().to_string(), ".")
}

fn unique_suffix() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let mut random = [0u8; 4];
    let _ = getrandom::fill(&mut random);
    format!("{nanos:x}-{:08x}", u32::from_le_bytes(random))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn version(n: u64) -> VersionRecord {
        VersionRecord {
            version: n,
            app_version: "1".into(),
            deployed_at: String::new(),
            bundle: format!("b{n}"),
            code_bytes: 0,
            routes: Vec::new(),
            components: Vec::new(),
        }
    }

    #[test]
    fn pruning_keeps_the_live_version_and_the_newest_others() {
        let mut record = AppRecord {
            name: "a".into(),
            tenant: "t".into(),
            live: 2,
            next_version: 7,
            versions: (1..=6).map(version).collect(),
        };
        let dropped = prune(&mut record, 2);
        assert_eq!(dropped, ["b1", "b3", "b4"]);
        let kept: Vec<u64> = record.versions.iter().map(|v| v.version).collect();
        assert_eq!(kept, [2, 5, 6]);
    }

    #[test]
    fn messages_name_bundle_paths_not_server_paths() {
        let dir = Path::new("/srv/skiff/bundles/x-1");
        assert_eq!(
            relative_to("/srv/skiff/bundles/x-1/app.wasm: not wasm", dir),
            "app.wasm: not wasm"
        );
    }
}
