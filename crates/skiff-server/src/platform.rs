//! The platform: every tenant and every deployed app of one host, what is live, and the
//! changes the management API makes (deploy, roll back, delete).
//!
//! On disk, under the data folder:
//!
//! | path | holds |
//! |---|---|
//! | `tenants.json` | tenants, their quotas and token hashes |
//! | `apps/NAME.json` | one app: its tenant, versions (each with the app as validated) and which one is live |
//! | `bundles/ID/` | one deployed version, unpacked (a deploy unpacks into a fresh one); never written again |
//! | `tenants/TENANT/kv/` | the tenant's embedded key-value data, one file per app |
//! | `tenants/TENANT/apps/NAME/files/` | the app's writable mounts, one folder each (see [`crate::appfiles`]) |
//! | `cache/` | compiled code (unless `--cache-dir` says elsewhere) |
//! | `usage/YYYY-MM-DD.ndjson` | what apps used, per app and minute (see [`crate::usage`]) |
//!
//! The request path reads the app index through an `ArcSwap`, without a lock. Every change to
//! one app (deploy, rollback, delete) holds that app's lock from its first look at the record
//! to its last write, so changes to one app happen one after another; the short steps that
//! touch the index or the quotas of several apps also hold one host-wide mutex. A version is
//! made live only once it is completely loaded, so a request sees either the old version or
//! the new one.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock};
use std::time::{Duration, Instant};

use arc_swap::{ArcSwap, ArcSwapOption};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use skiff_http::{HttpApp, HttpMetrics};
use skiff_manifest::{App, format_size};
use skiff_runtime::{LoadOptions, MetricsScope, Runtime, RuntimeMetrics};

use crate::api::{
    self, AppInfo, AppStatus, AppSummary, ComponentInfo, ErrorCode, LimitsInfo, Quotas, RouteInfo,
    VersionInfo,
};
use crate::appfiles;
use crate::bundle::{self, BundleLimits};
use crate::logs::LogHub;
use crate::persist::{self, PersistError};
use crate::records::{AppRecord, VersionRecord, prune};
use crate::refusal::{Refusal, Refused};
use crate::tenants::{Tenant, Tenants, TenantsError};
use crate::usage::{UsageLedger, UsageMetrics};

/// Why the data folder could not be opened; the host does not start.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error(transparent)]
    Tenants(#[from] TenantsError),
    #[error(transparent)]
    Persist(#[from] PersistError),
    #[error("cannot read the apps folder: {0}")]
    AppsFolder(#[source] std::io::Error),
}

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
    /// Longest time one upload may take; a client that sends nothing for a tenth of it (at
    /// most 30 s) is cut off sooner.
    pub upload_timeout: Duration,
    /// How often every tenant's disk use is measured against its quota; a tenant over it has
    /// its apps' writes refused until it is under again.
    pub disk_check: Duration,
}

fn no_tenant(name: &str) -> Refusal {
    Refusal::new(
        ErrorCode::NotFound,
        format!("no tenant named `{name}`; `skiff tenants list` shows them"),
    )
}

/// Deploys that may unpack and compile at once (their uploads read); more wait their turn.
const MAX_CONCURRENT_DEPLOYS: usize = 4;
/// Uploads that may be read at once, each into memory. A tenant has one at a time (see
/// `Tenant::deploying`), so a slow client of one tenant never blocks the others' deploys.
const MAX_CONCURRENT_UPLOADS: usize = 16;

/// The longest manifest report sent back to a deployer. The manifest crate already bounds
/// what it quotes from a file; this bounds the whole answer, whatever the report holds.
const MAX_REPORT_BYTES: usize = 16 * 1024;

/// One deployed app.
pub struct AppEntry {
    pub name: String,
    pub tenant: Arc<Tenant>,
    record: Mutex<AppRecord>,
    /// The loaded live version; `None` while idle (not loaded yet, or unloaded). Stored only
    /// with `record` locked, so that it always agrees with the record's live version.
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

/// An app on disk that is not served.
enum SetAside {
    /// Its tenant is not in `tenants.json` (an older backup restored?): kept, bundles and
    /// data included, and served again once a tenant of that name exists.
    Orphan(AppRecord),
    /// Its record cannot be read or breaks a rule: kept for the operator to repair or remove.
    Damaged,
}

/// One async lock per app name. Entries exist only while a change holds or waits for one.
#[derive(Default)]
struct AppLocks {
    locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

struct AppLock<'a> {
    locks: &'a AppLocks,
    name: String,
    guard: Option<tokio::sync::OwnedMutexGuard<()>>,
}

impl AppLocks {
    async fn lock(&self, name: &str) -> AppLock<'_> {
        let lock = lock(&self.locks)
            .entry(name.to_string())
            .or_default()
            .clone();
        let guard = lock.lock_owned().await;
        AppLock {
            locks: self,
            name: name.to_string(),
            guard: Some(guard),
        }
    }
}

impl Drop for AppLock<'_> {
    fn drop(&mut self) {
        let mut locks = lock(&self.locks.locks);
        self.guard.take();
        // Nobody else holds or waits for it (their clones would count): forget it.
        if locks
            .get(&self.name)
            .is_some_and(|lock| Arc::strong_count(lock) == 1)
        {
            locks.remove(&self.name);
        }
    }
}

/// Locks a mutex whose holder may have panicked: every value behind these is replaced whole
/// under the lock, so a panic never leaves one half-changed.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

pub struct Platform {
    runtime: Arc<Runtime>,
    metrics: PlatformMetrics,
    config: PlatformConfig,
    /// `http://` and the data plane's port, once it listens: app URLs are made from it.
    public_port: AtomicU64,
    tenants: RwLock<Tenants>,
    apps: ArcSwap<HashMap<String, Arc<AppEntry>>>,
    /// Apps on disk that are not served, by name; their names stay taken.
    set_aside: Mutex<HashMap<String, SetAside>>,
    /// Serialises changes to one app: held by each deploy, rollback and delete of it.
    app_locks: AppLocks,
    /// Serialises the short steps that change tenants, records and the index, and check the
    /// quotas over all of a tenant's apps.
    changes: Mutex<()>,
    /// Held while writable folders are seeded, so that a deploy and a load of the same app
    /// never copy into one at once.
    seeding: Arc<Mutex<()>>,
    log_hubs: Mutex<HashMap<String, Arc<LogHub>>>,
    /// Deploys in progress at once: each holds its upload in memory and compiles, so a burst
    /// of them must not take the host's memory and CPU from the apps it serves.
    deploys: tokio::sync::Semaphore,
    uploads: tokio::sync::Semaphore,
    started: Instant,
    usage: UsageLedger,
}

impl Platform {
    /// Opens the data folder: tenants and app records are read, no app is loaded yet (each
    /// loads on its first request). A record that cannot be read, or breaks a rule, is set
    /// aside with an error naming it, and an app whose tenant is missing with a warning; the
    /// host starts either way, and neither loses its bundles or data.
    pub fn open(runtime: Arc<Runtime>, config: PlatformConfig) -> Result<Arc<Platform>, OpenError> {
        for dir in ["apps", "bundles", "tenants"] {
            let path = config.data_dir.join(dir);
            std::fs::create_dir_all(&path)
                .map_err(|source| PersistError::CreateFolder { path, source })?;
        }
        let tenants = Tenants::open(&config.data_dir)?;
        let bundles = config.data_dir.join("bundles");
        let mut apps = HashMap::new();
        let mut log_hubs = HashMap::new();
        let mut set_aside = HashMap::new();
        // Bundles to keep: those records name, and any that a damaged record may name.
        let mut referenced = HashSet::new();
        let mut damaged_prefixes = Vec::new();
        let listing =
            std::fs::read_dir(config.data_dir.join("apps")).map_err(OpenError::AppsFolder)?;
        for file in listing.flatten() {
            let path = file.path();
            if path.extension().is_none_or(|ext| ext != "json") {
                continue;
            }
            let Some(name) = path.file_stem().and_then(|s| s.to_str()).map(String::from) else {
                continue;
            };
            let mut damaged = |why: String| {
                tracing::error!(
                    app = %name,
                    "the app `{name}` is not served: {why}. Its bundles and data are kept; \
                     repair {} or remove it, and restart",
                    path.display()
                );
                damaged_prefixes.push(format!("{name}-"));
                set_aside.insert(name.clone(), SetAside::Damaged);
            };
            let mut record = match persist::read_json::<AppRecord>(&path) {
                Ok(Some(record)) => record,
                Ok(None) => continue,
                Err(err) => {
                    damaged(err.to_string());
                    continue;
                }
            };
            referenced.extend(record.bundles().map(String::from));
            drop_missing_old_versions(&mut record, &bundles);
            if let Err(err) = record.check(&name, &bundles) {
                damaged(format!("its record is inconsistent: {err}"));
                continue;
            }
            let Some(tenant) = tenants.get(&record.tenant) else {
                set_aside.insert(name, SetAside::Orphan(record));
                continue;
            };
            let entry = AppEntry::new(record, tenant, LogHub::new());
            log_hubs.insert(entry.name.clone(), entry.logs.clone());
            apps.insert(entry.name.clone(), Arc::new(entry));
        }
        let mut orphans: Vec<String> = set_aside
            .iter()
            .filter_map(|(name, aside)| match aside {
                SetAside::Orphan(record) => Some(format!("`{name}` (tenant `{}`)", record.tenant)),
                SetAside::Damaged => None,
            })
            .collect();
        if !orphans.is_empty() {
            orphans.sort();
            tracing::warn!(
                "{} app(s) belong to tenants that tenants.json does not hold (was an older copy \
                 restored?): {}. They are kept aside, bundles and data included, and not \
                 served; each comes back when its tenant does (restore tenants.json, or create \
                 the tenant again)",
                orphans.len(),
                orphans.join(", ")
            );
        }
        // Bundles no record names are left over from deploys that failed or were cut short.
        if let Ok(listing) = std::fs::read_dir(&bundles) {
            for dir in listing.flatten() {
                let name = dir.file_name().to_string_lossy().into_owned();
                let kept = referenced.contains(&name)
                    || damaged_prefixes
                        .iter()
                        .any(|p| name.starts_with(p.as_str()));
                if !kept {
                    let _ = std::fs::remove_dir_all(dir.path());
                }
            }
        }
        remove_stray_app_folders(&config.data_dir, &apps, &set_aside);
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
            set_aside: Mutex::new(set_aside),
            app_locks: AppLocks::default(),
            changes: Mutex::new(()),
            seeding: Arc::default(),
            log_hubs: Mutex::new(log_hubs),
            deploys: tokio::sync::Semaphore::new(MAX_CONCURRENT_DEPLOYS),
            uploads: tokio::sync::Semaphore::new(MAX_CONCURRENT_UPLOADS),
            started: Instant::now(),
            usage,
        }))
    }

    /// Waits for a slot to read an upload in; hold it until the deploy ends (the upload is
    /// in memory until then).
    pub async fn upload_slot(&self) -> tokio::sync::SemaphorePermit<'_> {
        self.uploads
            .acquire()
            .await
            .expect("the upload semaphore is never closed")
    }

    /// Waits for a slot to unpack and compile; take it once the upload has been read.
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

    /// Creates a tenant; its token is returned, and never again. Apps of a tenant of this name
    /// that were kept aside (its record was missing from `tenants.json`) are served again.
    pub fn create_tenant(&self, name: &str, quotas: Quotas) -> Refused<String> {
        api::check_name("tenant", name)?;
        let _changes = lock(&self.changes);
        let created = self
            .tenants
            .write()
            .expect("tenants lock")
            .create(name, quotas)
            .map_err(Refusal::internal)?;
        let token = created.ok_or_else(|| {
            Refusal::new(
                ErrorCode::Conflict,
                format!("a tenant named `{name}` exists already"),
            )
        })?;
        self.adopt_orphans(name);
        Ok(token)
    }

    /// Serves again the apps kept aside for the tenant `name`, which exists now.
    fn adopt_orphans(&self, name: &str) {
        let Some(tenant) = self.tenant(name) else {
            return;
        };
        let mut set_aside = lock(&self.set_aside);
        let names: Vec<String> = set_aside
            .iter()
            .filter(|(_, aside)| matches!(aside, SetAside::Orphan(r) if r.tenant == name))
            .map(|(app, _)| app.clone())
            .collect();
        if names.is_empty() {
            return;
        }
        let mut index = HashMap::clone(&self.apps.load());
        for app in &names {
            if let Some(SetAside::Orphan(record)) = set_aside.remove(app) {
                let entry = AppEntry::new(record, tenant.clone(), self.log_hub(app));
                index.insert(app.clone(), Arc::new(entry));
            }
        }
        self.apps.store(Arc::new(index));
        tracing::warn!(
            tenant = name,
            "the tenant `{name}` exists again: serving its app(s) kept aside: {}",
            names.join(", ")
        );
    }

    /// Gives tenant `name` a new token, returned once; the old one stops working at once.
    pub fn rotate_token(&self, name: &str) -> Refused<String> {
        let _changes = lock(&self.changes);
        let rotated = self
            .tenants
            .write()
            .expect("tenants lock")
            .rotate_token(name)
            .map_err(Refusal::internal)?;
        tracing::info!(tenant = name, "token rotated");
        rotated.ok_or_else(|| no_tenant(name))
    }

    /// Takes tenant `name`'s token away; its apps keep serving.
    pub fn revoke_token(&self, name: &str) -> Refused<()> {
        let _changes = lock(&self.changes);
        let revoked = self
            .tenants
            .write()
            .expect("tenants lock")
            .revoke_token(name)
            .map_err(Refusal::internal)?;
        if !revoked {
            return Err(no_tenant(name));
        }
        tracing::info!(tenant = name, "token revoked");
        Ok(())
    }

    /// Changes some of tenant `name`'s quotas (the others stay as they are).
    pub fn set_quotas(&self, name: &str, overrides: &api::QuotaOverrides) -> Refused<Arc<Tenant>> {
        let _changes = lock(&self.changes);
        let mut tenants = self.tenants.write().expect("tenants lock");
        let current = tenants.get(name).ok_or_else(|| no_tenant(name))?;
        let quotas = overrides.apply(current.quotas.clone());
        let tenant = tenants
            .set_quotas(name, quotas)
            .map_err(Refusal::internal)?
            .ok_or_else(|| no_tenant(name))?;
        tracing::info!(tenant = name, quotas = ?tenant.quotas, "quotas changed");
        Ok(tenant)
    }

    /// Removes tenant `name`: its token stops working at once, then its apps are deleted and
    /// its data (key-value stores, apps' writable folders) removed. A tenant with apps is
    /// removed only when `with_apps` says so, so that no app disappears by mistake.
    pub async fn delete_tenant(&self, name: &str, with_apps: bool) -> Refused<()> {
        let tenant = self.tenant(name).ok_or_else(|| no_tenant(name))?;
        let apps: Vec<String> = self
            .apps
            .load()
            .values()
            .filter(|entry| entry.tenant.name == name)
            .map(|entry| entry.name.clone())
            .collect();
        if !apps.is_empty() && !with_apps {
            return Err(Refusal::new(
                ErrorCode::Conflict,
                format!(
                    "tenant `{name}` has {} app(s) ({}); delete them first, or delete the \
                     tenant with its apps (`skiff tenants delete {name} --with-apps`)",
                    apps.len(),
                    apps.join(", ")
                ),
            ));
        }
        {
            let _changes = lock(&self.changes);
            self.tenants
                .write()
                .expect("tenants lock")
                .remove(name)
                .map_err(Refusal::internal)?;
        }
        for app in apps {
            match self.delete(&tenant, &app).await {
                Ok(())
                | Err(Refusal {
                    code: ErrorCode::NotFound,
                    ..
                }) => {}
                Err(refusal) => return Err(refusal),
            }
        }
        let data = self.tenant_dir(name);
        if let Err(err) = tokio::fs::remove_dir_all(&data).await
            && err.kind() != std::io::ErrorKind::NotFound
        {
            return Err(Refusal::internal(format!(
                "cannot remove {}: {err}",
                data.display()
            )));
        }
        tracing::info!(tenant = name, "tenant deleted");
        Ok(())
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
    pub async fn serve(&self, name: &str) -> Option<Refused<Arc<HttpApp>>> {
        let entry = self.apps.load().get(name)?.clone();
        entry.last_used.store(self.now_ms(), Ordering::Relaxed);
        if let Some(live) = entry.live.load().as_ref() {
            return Some(Ok(live.app.clone()));
        }
        Some(self.load_live(&entry).await)
    }

    async fn load_live(&self, entry: &Arc<AppEntry>) -> Refused<Arc<HttpApp>> {
        let _loading = entry.loading.lock().await;
        loop {
            let version = {
                let record = entry.record();
                if let Some(live) = entry.live.load().as_ref() {
                    return Ok(live.app.clone());
                }
                record
                    .live_version()
                    .map_err(|err| Refusal::internal(format!("app `{}`: {err}", entry.name)))?
                    .clone()
            };
            let started = Instant::now();
            let app = self.load_version(entry, &version).await?;
            // A deploy or rollback may have made another version live meanwhile: that one
            // wins, and this load is thrown away.
            let record = entry.record();
            if let Some(live) = entry.live.load().as_ref() {
                return Ok(live.app.clone());
            }
            if record.live != version.version {
                continue;
            }
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
            return Ok(app);
        }
    }

    /// Loads a deployed version from the app it stored (its code from the cache).
    async fn load_version(
        &self,
        entry: &AppEntry,
        version: &VersionRecord,
    ) -> Refused<Arc<HttpApp>> {
        let dir = self.config.data_dir.join("bundles").join(&version.bundle);
        let stored = match &version.app {
            Some(stored) => stored.clone(),
            // Written before versions stored their app: its bundle's manifest is read once
            // more (a plain file only, never through a link).
            None => {
                let (app, _) = self
                    .read_bundle(dir.clone(), entry.name.clone(), &entry.tenant.quotas)
                    .await?;
                appfiles::to_stored(&app, &dir)
                    .map_err(|e| Refusal::new(ErrorCode::InvalidBundle, e.to_string()))?
            }
        };
        let files = self.files_folder(&entry.tenant.name, &entry.name);
        self.seed(&stored, &dir, &files).await?;
        let app = appfiles::place(&stored, &dir, &files);
        self.load(app, &entry.tenant, &entry.logs, &dir).await
    }

    /// `tenants/TENANT/apps/NAME/files`: the app's writable mounts.
    /// `DATA/tenants/TENANT`: the tenant's key-value data and its apps' writable folders.
    fn tenant_dir(&self, tenant: &str) -> PathBuf {
        self.config.data_dir.join("tenants").join(tenant)
    }

    fn files_folder(&self, tenant: &str, name: &str) -> PathBuf {
        appfiles::app_folder(&self.config.data_dir, tenant, name).join("files")
    }

    /// Seeds the writable folders of `stored` that do not exist yet; returns those it made.
    async fn seed(&self, stored: &App, bundle: &Path, files: &Path) -> Refused<Vec<PathBuf>> {
        let writable: Vec<PathBuf> = stored
            .components
            .iter()
            .flat_map(|c| &c.files)
            .filter(|m| m.writable)
            .map(|m| files.join(appfiles::mount_folder_name(&m.guest)))
            .filter(|folder| !folder.is_dir())
            .collect();
        if writable.is_empty() {
            return Ok(writable);
        }
        let (stored, bundle, files) = (stored.clone(), bundle.to_path_buf(), files.to_path_buf());
        let seeding = self.seeding.clone();
        // The copy may be large: off the async threads, one at a time.
        tokio::task::spawn_blocking(move || {
            let _seeding = lock(&seeding);
            appfiles::seed_writable(&stored, &bundle, &files).map_err(|err| {
                Refusal::internal(format!(
                    "cannot make the writable folders of `{}` in {}: {err}",
                    stored.name,
                    files.display()
                ))
            })
        })
        .await
        .map_err(|err| Refusal::internal(format!("seeding stopped: {err}")))??;
        Ok(writable)
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
            let closed = self.runtime.close_unused_stores();
            if closed > 0 {
                tracing::debug!("closed {closed} key-value database(s) no loaded app uses");
            }
            give_back_freed_memory();
        }
        unloaded
    }

    /// Measures every tenant's disk use (bundles kept, writable files, key-value data) against
    /// its quota. A tenant that goes over has its apps' writes refused: key-value writes fail at
    /// once, and its loaded apps are unloaded so that the next request loads them with their
    /// writable folders read-only; once it is under again, the same the other way. Between two
    /// checks a guest can write past the quota by what it manages in that time.
    pub async fn check_disk_quotas(&self) {
        let bundles_root = self.config.data_dir.join("bundles");
        for (tenant, _) in self.tenants() {
            let mut paths: Vec<PathBuf> = Vec::new();
            for entry in self.apps.load().values() {
                if entry.tenant.name == tenant.name {
                    let record = entry.record();
                    paths.extend(record.versions.iter().map(|v| bundles_root.join(&v.bundle)));
                }
            }
            let tenant_dir = self.tenant_dir(&tenant.name);
            paths.push(tenant_dir.join("apps"));
            paths.push(tenant_dir.join("kv"));
            let Ok(used) =
                tokio::task::spawn_blocking(move || appfiles::total_disk_usage(&paths)).await
            else {
                continue;
            };
            let quota = tenant.quotas.max_disk_bytes;
            let over = used > quota;
            if tenant.over_disk.swap(over, Ordering::Relaxed) == over {
                continue;
            }
            if over {
                tracing::warn!(
                    tenant = %tenant.name,
                    "over its disk quota ({} of {}): its apps' writes are refused until it is under",
                    format_size(used),
                    format_size(quota)
                );
            } else {
                tracing::info!(
                    tenant = %tenant.name,
                    "under its disk quota again ({} of {}): its apps may write",
                    format_size(used),
                    format_size(quota)
                );
            }
            for entry in self.apps.load().values() {
                if entry.tenant.name == tenant.name {
                    entry.live.store(None);
                }
            }
        }
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
            .filter_map(|entry| self.summary(entry, &entry.record()).ok())
            .collect();
        apps.sort_by(|a, b| a.name.cmp(&b.name));
        apps
    }

    pub fn inspect(&self, tenant: &Tenant, name: &str) -> Refused<AppInfo> {
        let entry = self.entry_of(tenant, name)?;
        self.info(&entry)
    }

    pub fn logs(&self, tenant: &Tenant, name: &str) -> Refused<Arc<LogHub>> {
        Ok(self.entry_of(tenant, name)?.logs.clone())
    }

    fn summary(&self, entry: &AppEntry, record: &AppRecord) -> Refused<AppSummary> {
        let live = record
            .live_version()
            .map_err(|err| Refusal::internal(format!("app `{}`: {err}", entry.name)))?;
        Ok(AppSummary {
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
        })
    }

    fn info(&self, entry: &AppEntry) -> Refused<AppInfo> {
        let record = entry.record();
        let summary = self.summary(entry, &record)?;
        let live = record
            .live_version()
            .map_err(|err| Refusal::internal(format!("app `{}`: {err}", entry.name)))?;
        Ok(AppInfo {
            summary,
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
        })
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
        api::check_name("app", name)?;
        let _app = self.app_locks.lock(name).await;
        // Refuse early what would be refused at the end anyway, before the expensive part.
        self.check_deploy(tenant, name, 0)?;

        let bundle_id = format!("{name}-{}", unique_suffix());
        let dir = self.config.data_dir.join("bundles").join(&bundle_id);
        let mut seeded = Vec::new();
        let result = self
            .prepare(tenant, name, bundle_bytes, &dir, &bundle_id, &mut seeded)
            .await;
        let result = match result {
            Ok((version, app)) => self.commit(tenant, name, version, app),
            Err(refusal) => Err(refusal),
        };
        if result.is_err() {
            let _ = tokio::fs::remove_dir_all(&dir).await;
            // Writable folders this deploy made hold nothing anyone wrote yet.
            for folder in seeded {
                let _ = tokio::fs::remove_dir_all(folder).await;
            }
            // A first deploy that failed leaves no usage series behind.
            if !self.apps.load().contains_key(name) {
                self.usage.forget_unused(&tenant.name, name);
            }
        }
        result
    }

    /// Unpacks, validates and loads a bundle: everything but making it live. The writable
    /// folders it seeds are added to `seeded`.
    async fn prepare(
        &self,
        tenant: &Arc<Tenant>,
        name: &str,
        bundle_bytes: bytes::Bytes,
        dir: &Path,
        bundle_id: &str,
        seeded: &mut Vec<PathBuf>,
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
        let stored = appfiles::to_stored(&app, dir)
            .map_err(|e| Refusal::new(ErrorCode::InvalidBundle, e.to_string()))?;
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
            app: Some(stored.clone()),
        };
        let files = self.files_folder(&tenant.name, name);
        self.check_disk(tenant, name, dir, &stored, &files).await?;
        seeded.extend(self.seed(&stored, dir, &files).await?);
        // An update keeps the app's log stream, so `skiff logs --follow` goes on across it.
        let logs = self.log_hub(name);
        let app = appfiles::place(&stored, dir, &files);
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
            // An unpacked bundle holds plain files only; anything else was not sent by the
            // deployer, and must not be followed (a link to the server's own files).
            if !std::fs::symlink_metadata(&manifest).is_ok_and(|m| m.is_file()) {
                return Err(Refusal::new(
                    ErrorCode::InvalidManifest,
                    "skiff.toml in the bundle is not a plain file; deploy the app again",
                ));
            }
            let mut app = skiff_manifest::load(&manifest).map_err(|mut err| {
                err.path = PathBuf::from("skiff.toml");
                let mut report = relative_to(&err.to_string(), &dir);
                if report.len() > MAX_REPORT_BYTES {
                    let mut cut = MAX_REPORT_BYTES;
                    while !report.is_char_boundary(cut) {
                        cut -= 1;
                    }
                    report.truncate(cut);
                    report.push_str("… (cut)");
                }
                Refusal::new(ErrorCode::InvalidManifest, report)
            })?;
            bundle::confine(&app, &dir)
                .map_err(|e| Refusal::new(ErrorCode::InvalidBundle, e.to_string()))?;
            for component in &app.components {
                for (i, mount) in component.files.iter().enumerate() {
                    if mount.writable && !mount.host.is_dir() {
                        return Err(Refusal::new(
                            ErrorCode::InvalidBundle,
                            format!(
                                "`component.{}.files[{i}]` (mounted at `{}`) is writable but not \
                                 a folder; mount a folder, or drop `writable = true`",
                                component.id, mount.guest
                            ),
                        ));
                    }
                }
            }
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
            data_dir: Some(self.tenant_dir(&tenant.name)),
            shared_concurrency: Some(tenant.in_flight.clone()),
            log_sink: Some(logs.sink()),
            usage: Some(self.usage.sink(&tenant.name, &app.name)),
            metrics: Some(MetricsScope {
                metrics: self.metrics.runtime.clone(),
                tenant: tenant.name.as_str().into(),
            }),
            writes_refused: Some(tenant.over_disk.clone()),
        };
        let runtime = self.runtime.clone();
        let dir = dir.to_path_buf();
        let files = self.files_folder(&tenant.name, &app.name);
        let data_dir = self.config.data_dir.clone();
        let http_metrics = self.metrics.http.clone();
        let tenant = tenant.name.clone();
        tokio::task::spawn_blocking(move || {
            let components: Vec<String> = app.components.iter().map(|c| c.id.clone()).collect();
            let app_name = app.name.clone();
            runtime
                .load_app_with(app, &options)
                .map(|loaded| Arc::new(HttpApp::new(loaded).with_metrics(&http_metrics, &tenant)))
                .map_err(|err| {
                    let component = err
                        .component
                        .and_then(|i| components.get(i))
                        .map(|id| format!("component `{id}`: "))
                        .unwrap_or_default();
                    let message = format!("{component}{err}");
                    if is_server_fault(&err.kind) {
                        // The code cache, a database or the disk: the server's, and its paths
                        // are nobody else's business.
                        return Refusal::internal(format!("loading app `{app_name}`: {message}"));
                    }
                    // The writable folders are the server's paths too: named, never shown.
                    let message = relative_to(&message, &dir)
                        .replace(&files.display().to_string(), "(the app's writable files)")
                        .replace(&data_dir.display().to_string(), "(the server's data)");
                    Refusal::new(ErrorCode::LoadFailed, message)
                })
        })
        .await
        .map_err(|err| Refusal::internal(format!("loading stopped: {err}")))?
    }

    /// The checks a deploy must pass before and after the expensive part: the name is not
    /// another tenant's (nor an app's kept aside), and the quotas hold with `code_bytes` of
    /// new code.
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
        match lock(&self.set_aside).get(name) {
            Some(SetAside::Orphan(_)) => {
                return Err(Refusal::new(
                    ErrorCode::Conflict,
                    format!("the app name `{name}` is taken; deploy under another with --name"),
                ));
            }
            Some(SetAside::Damaged) => {
                return Err(Refusal::new(
                    ErrorCode::Conflict,
                    format!(
                        "the app `{name}` cannot be changed now: its record on the server needs \
                         the operator's repair (the server's log says why); deploy under \
                         another name with --name, or ask the operator"
                    ),
                ));
            }
            None => {}
        }
        let quotas = &tenant.quotas;
        let mine = apps.values().filter(|a| a.tenant.name == tenant.name);
        let (mut count, mut code) = (0u32, 0u64);
        for app in mine {
            if app.name != name {
                count += 1;
                code += app.record().live_version().map_or(0, |v| v.code_bytes);
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

    /// The disk quota: the versions the tenant's apps keep (this deploy's bundle at `dir`
    /// included, those it will prune left out), their writable files (with what this deploy
    /// would seed) and their key-value data must fit in `max_disk_bytes`. Checked at deploy
    /// only: what guests write between deploys is counted at the next one.
    async fn check_disk(
        &self,
        tenant: &Tenant,
        name: &str,
        dir: &Path,
        stored: &App,
        files: &Path,
    ) -> Refused<()> {
        let bundles_root = self.config.data_dir.join("bundles");
        let keep = self.config.keep_versions;
        let mut bundles = vec![dir.to_path_buf()];
        for entry in self.apps.load().values() {
            if entry.tenant.name != tenant.name {
                continue;
            }
            let record = entry.record();
            let kept: Box<dyn Iterator<Item = &VersionRecord>> = if entry.name == name {
                // This version goes live; the newest `keep` of the others stay.
                Box::new(record.versions.iter().rev().take(keep))
            } else {
                Box::new(record.versions.iter())
            };
            bundles.extend(kept.map(|v| bundles_root.join(&v.bundle)));
        }
        let seeds: Vec<PathBuf> = stored
            .components
            .iter()
            .flat_map(|c| &c.files)
            .filter(|m| m.writable && !files.join(appfiles::mount_folder_name(&m.guest)).exists())
            .map(|m| dir.join(&m.host))
            .collect();
        let tenant_dir = self.tenant_dir(&tenant.name);
        let (code, data, kv) = tokio::task::spawn_blocking(move || {
            let code = appfiles::total_disk_usage(&bundles);
            let data = appfiles::disk_usage(&tenant_dir.join("apps"))
                .saturating_add(appfiles::total_disk_usage(&seeds));
            (code, data, appfiles::disk_usage(&tenant_dir.join("kv")))
        })
        .await
        .map_err(|err| Refusal::internal(format!("measuring the disk stopped: {err}")))?;
        let quota = tenant.quotas.max_disk_bytes;
        let total = code.saturating_add(data).saturating_add(kv);
        if total > quota {
            return Err(Refusal::new(
                ErrorCode::QuotaExceeded,
                format!(
                    "quota max_disk_bytes: with this version the tenant's apps would take {} on \
                     disk ({} in the versions kept for rollbacks, this one included; {} of \
                     writable files; {} of key-value data), over the quota of {}; delete apps \
                     you no longer need (`skiff apps delete NAME`), leave files the app does not \
                     use out of the bundle, or ask the operator for more",
                    format_size(total),
                    format_size(code),
                    format_size(data),
                    format_size(kv),
                    format_size(quota)
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
        let _changes = lock(&self.changes);
        // The tenant may have been deleted while this deploy compiled: it makes no app then.
        if self.tenant(&tenant.name).is_none() {
            return Err(no_tenant(&tenant.name));
        }
        // Another tenant's deploy may have committed while this one compiled.
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
        entry.last_used.store(self.now_ms(), Ordering::Relaxed);
        entry.publish(record, version.version, app);
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
        Ok((self.info(&entry)?, created))
    }

    /// Makes the version before the live one live again.
    pub async fn rollback(&self, tenant: &Tenant, name: &str) -> Refused<AppInfo> {
        let _app = self.app_locks.lock(name).await;
        // Looked up under the app's lock: a delete or deploy that came first is seen whole.
        let entry = self.entry_of(tenant, name)?;
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
            let _changes = lock(&self.changes);
            let mut record = entry.record().clone();
            record.live = previous.version;
            self.write_record(&record)?;
            entry.publish(record, previous.version, app);
        }
        tracing::info!(app = name, version = previous.version, "rolled back");
        self.info(&entry)
    }

    /// Stops serving an app and removes its versions and its writable folders. Requests
    /// already running finish. The tenant's key-value data stays: deploying the app again
    /// finds it.
    pub async fn delete(&self, tenant: &Tenant, name: &str) -> Refused<()> {
        let _app = self.app_locks.lock(name).await;
        let entry = self.entry_of(tenant, name)?;
        {
            let _changes = lock(&self.changes);
            let path = self.record_path(name);
            std::fs::remove_file(&path).map_err(|err| {
                Refusal::internal(format!("cannot remove {}: {err}", path.display()))
            })?;
            // The removal is durable only once the folder is synced: otherwise a crash could
            // bring a deleted app back.
            persist::sync_folder(&path)
                .map_err(|err| Refusal::internal(format!("cannot sync the apps folder: {err}")))?;
            let mut index = HashMap::clone(&self.apps.load());
            index.remove(name);
            self.apps.store(Arc::new(index));
        }
        {
            let _record = entry.record();
            entry.live.store(None);
        }
        lock(&self.log_hubs).remove(name);
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
        self.remove_app_folder(&tenant.name, name);
        tracing::info!(app = name, tenant = %tenant.name, "deleted");
        Ok(())
    }

    /// Removes the app's own folder (its writable mounts). It is renamed aside at once, so
    /// that a deploy of the name right after seeds a fresh one, and removed in the background.
    fn remove_app_folder(&self, tenant: &str, name: &str) {
        let folder = appfiles::app_folder(&self.config.data_dir, tenant, name);
        if !folder.exists() {
            return;
        }
        // Not an app name (those never start with a dot), so startup removes it if a crash
        // comes first.
        let aside = folder.with_file_name(format!(".deleted-{name}-{}", unique_suffix()));
        match std::fs::rename(&folder, &aside) {
            Ok(()) => {
                tokio::task::spawn_blocking(move || {
                    let _ = std::fs::remove_dir_all(aside);
                });
            }
            Err(err) => tracing::error!(
                app = name,
                "cannot remove the files of the deleted app `{name}` ({}): {err}",
                folder.display()
            ),
        }
    }

    /// The log stream of the app named `name`: one per name from its first deploy until it
    /// is deleted, so that concurrent first deploys share it.
    fn log_hub(&self, name: &str) -> Arc<LogHub> {
        let mut hubs = lock(&self.log_hubs);
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

    /// Writes an app record, after checking it: an inconsistent one is never written.
    fn write_record(&self, record: &AppRecord) -> Refused<()> {
        record
            .check(&record.name, &self.config.data_dir.join("bundles"))
            .map_err(|err| {
                Refusal::internal(format!(
                    "refusing to write an inconsistent record of the app `{}`: {err}",
                    record.name
                ))
            })?;
        persist::write_json(&self.record_path(&record.name), record)
            .map_err(|err| Refusal::internal(err.to_string()))
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

/// Versions other than the live one whose bundle is gone (removed by hand?) are forgotten
/// with a warning, rather than keeping the whole app from being served.
fn drop_missing_old_versions(record: &mut AppRecord, bundles: &Path) {
    let live = record.live;
    let name = record.name.clone();
    record.versions.retain(|v| {
        let gone = v.version != live
            && crate::records::is_plain_name(&v.bundle)
            && !bundles.join(&v.bundle).is_dir();
        if gone {
            tracing::warn!(
                app = %name,
                "the bundle of version {} of `{name}` is missing; that version is forgotten",
                v.version
            );
        }
        !gone
    });
}

/// Removes folders under `tenants/*/apps/` that belong to no app on disk (left by a delete
/// or a first deploy cut short by a crash). Those of damaged records are kept, whatever their
/// tenant, since their record cannot say.
fn remove_stray_app_folders(
    data_dir: &Path,
    apps: &HashMap<String, Arc<AppEntry>>,
    set_aside: &HashMap<String, SetAside>,
) {
    let Ok(tenants) = std::fs::read_dir(data_dir.join("tenants")) else {
        return;
    };
    for tenant in tenants.flatten() {
        let tenant_name = tenant.file_name().to_string_lossy().into_owned();
        let Ok(folders) = std::fs::read_dir(tenant.path().join("apps")) else {
            continue;
        };
        for folder in folders.flatten() {
            let name = folder.file_name().to_string_lossy().into_owned();
            let owned = match (apps.get(&name), set_aside.get(&name)) {
                (Some(entry), _) => entry.tenant.name == tenant_name,
                (None, Some(SetAside::Orphan(record))) => record.tenant == tenant_name,
                (None, Some(SetAside::Damaged)) => true,
                (None, None) => false,
            };
            if owned {
                // A seed cut short by a crash is not the app's data.
                if let Ok(inside) = std::fs::read_dir(folder.path()) {
                    for item in inside.flatten() {
                        if item.file_name().to_string_lossy().starts_with(".seed-") {
                            let _ = std::fs::remove_dir_all(item.path());
                        }
                    }
                }
            } else {
                let _ = std::fs::remove_dir_all(folder.path());
            }
        }
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

    fn record(&self) -> MutexGuard<'_, AppRecord> {
        lock(&self.record)
    }

    /// Makes `record` this app's record and `app` (its version `version`) the one served,
    /// together: a load that finishes later sees the record changed and keeps its hands off.
    fn publish(&self, record: AppRecord, version: u64, app: Arc<HttpApp>) {
        let mut current = self.record();
        *current = record;
        self.live
            .store(Some(Arc::new(LiveVersion { version, app })));
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

/// Whether a load failed for the server's own reasons (its cache, its databases, its disk)
/// rather than anything in the tenant's bundle.
fn is_server_fault(kind: &skiff_runtime::LoadErrorKind) -> bool {
    use skiff_runtime::LoadErrorKind::*;
    matches!(kind, Cache { .. } | Store { .. } | Read(_))
}

/// Error messages name files by their path in the bundle, not on the server.
fn relative_to(message: &str, dir: &Path) -> String {
    let prefix = format!("{}/", dir.display());
    message
        .replace(&prefix, "")
        .replace(&dir.display().to_string(), ".")
}

/// A name part no other deploy, deletion or seeding will pick: a UUIDv7 in its short form (32
/// hex digits), which also sorts by time.
pub(crate) fn unique_suffix() -> String {
    uuid::Uuid::now_v7().simple().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_name_bundle_paths_not_server_paths() {
        let dir = Path::new("/srv/skiff/bundles/x-1");
        assert_eq!(
            relative_to("/srv/skiff/bundles/x-1/app.wasm: not wasm", dir),
            "app.wasm: not wasm"
        );
    }
}
