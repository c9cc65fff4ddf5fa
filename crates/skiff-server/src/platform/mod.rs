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
//! | `oci/` | apps pulled from registries, by digest (see `skiff_oci::Cache`) |
//!
//! The request path reads the app index through an `ArcSwap`, without a lock. Every change to
//! one app (deploy, rollback, delete) holds that app's lock from its first look at the record
//! to its last write, so changes to one app happen one after another; the short steps that
//! touch the index or the quotas of several apps also hold one host-wide mutex. A version is
//! made live only once it is completely loaded, so a request sees either the old version or
//! the new one.
//!
//! By job: this module holds the state and opens the data folder; `tenancy` changes tenants,
//! `deploy` changes apps (deploy, rollback, delete), `pull` deploys from a registry, `schedules` runs deployed apps' schedules, `inspect` answers what tenants ask of their
//! apps, `serving` is the data plane's side (load on first request, unload when idle, the disk
//! check), and `metrics` the host's figures.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{Duration, Instant};

use arc_swap::{ArcSwap, ArcSwapOption};
use skiff_http::HttpApp;
use skiff_runtime::Runtime;
use skiff_store::QueueBackend;

use crate::api::{ErrorCode, Quotas};
use crate::bundle::BundleLimits;
use crate::cluster::ClusterOptions;
use crate::logs::{LogForward, LogForwarded, LogHub};
use crate::persist::{self, PersistError};
use crate::records::AppRecord;
use crate::refusal::Refusal;
use crate::tenants::{Tenant, Tenants, TenantsError};
use crate::usage::UsageLedger;

mod deploy;
mod inspect;
mod metrics;
mod pull;
mod replica;
mod serving;
mod shared_changes;
mod tenancy;
mod triggers;

use metrics::PlatformMetrics;
pub use pull::RegistryPolicy;
pub(crate) use replica::usage_refusal;

/// Why the data folder could not be opened; the host does not start.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error(transparent)]
    Tenants(#[from] TenantsError),
    #[error(transparent)]
    Persist(#[from] PersistError),
    #[error("cannot read the apps folder: {0}")]
    AppsFolder(#[source] std::io::Error),
    #[error("the queues: {0}")]
    Queues(#[source] skiff_store::StoreError),
}

/// What the operator decides for the whole host. [`PlatformConfig::new`] gives what
/// `skiff server` uses without flags; set what you need.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
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
    /// Which registries tenants may deploy from (none unless the operator says).
    pub registries: RegistryPolicy,
    /// Keep apps' queues in the Redis at this URL; `None`: the cluster's Redis on a cluster
    /// host, else `queues.redb` in the data folder.
    pub queues_url: Option<String>,
    /// Most messages one queue holds, waiting and in flight; `None`: the backend's default.
    pub queue_max_depth: Option<u64>,
    /// Most bytes of messages one tenant's queues hold together; `None`: the default.
    pub queue_max_bytes: Option<u64>,
}

impl PlatformConfig {
    /// The settings `skiff server` runs with when no flag says otherwise, its state in
    /// `data_dir`.
    pub fn new(data_dir: PathBuf) -> Self {
        PlatformConfig {
            data_dir,
            domain: "localhost".into(),
            max_bundle_bytes: 256 << 20,
            bundle_limits: BundleLimits::default(),
            keep_versions: 5,
            default_quotas: Quotas::default(),
            idle_unload: Some(Duration::from_secs(10 * 60)),
            usage_flush: Duration::from_secs(30),
            upload_timeout: Duration::from_secs(5 * 60),
            disk_check: Duration::from_secs(30),
            registries: RegistryPolicy::default(),
            queues_url: None,
            queue_max_depth: None,
            queue_max_bytes: None,
        }
    }
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

/// Log lines a cluster host holds for sharing before it drops new ones.
const LOG_SHARE_BACKLOG: usize = 4096;

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
    /// In a cluster: the revision of the shared record that `record` copies (0 otherwise).
    revision: AtomicU64,
    pub logs: Arc<LogHub>,
}

struct LiveVersion {
    version: u64,
    app: Arc<HttpApp>,
}

/// An app on disk that is not served.
#[derive(Clone)]
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
    usage: Arc<UsageLedger>,
    /// In a cluster: where apps' log lines go to be shared, and (until the sharing task takes
    /// it) the other end.
    log_forward: Option<LogForward>,
    log_shared: Mutex<Option<LogForwarded>>,
    /// In a cluster: usage written out here that the cluster's state has not taken yet.
    usage_unshared: Mutex<Vec<(String, String)>>,
    /// In a cluster: the shared state, which this host's index copies.
    cluster: Option<ClusterOptions>,
    /// Whether the host serves what it should: at once on one host; in a cluster, once it has
    /// read the cluster's tenants and apps. Off again when shutdown starts.
    ready: AtomicBool,
    /// In a cluster: whether the host has read the cluster's state once.
    in_step: AtomicBool,
    /// In a cluster: every change up to this revision is applied here (the watermark; it
    /// moves only past changes applied one after the other).
    applied: AtomicU64,
    /// In a cluster: held while the tenants are read and applied.
    tenant_sync: tokio::sync::Mutex<()>,
    /// Runs the schedules of deployed apps, once `run_triggers` has started it.
    scheduler: std::sync::OnceLock<Arc<skiff_triggers::Scheduler>>,
    /// Runs the queue consumers of deployed apps, once `run_triggers` has started it.
    consumers: std::sync::OnceLock<Arc<skiff_triggers::Consumers>>,
    /// Set once the host shuts down: triggers start nothing new.
    triggers_stopped: AtomicBool,
    /// Where apps' queues live: the cluster's Redis, or one database in the data folder.
    queues: Arc<dyn skiff_store::Queues>,
}

impl Platform {
    /// Opens the data folder: tenants and app records are read, no app is loaded yet (each
    /// loads on its first request). A record that cannot be read, or breaks a rule, is set
    /// aside with an error naming it, and an app whose tenant is missing with a warning; the
    /// host starts either way, and neither loses its bundles or data.
    ///
    /// In a cluster the data folder holds no tenants or app records (the shared state does):
    /// the host starts with none, not ready, and [`Platform::run_replica`] fills it in.
    pub fn open(
        runtime: Arc<Runtime>,
        config: PlatformConfig,
        cluster: Option<ClusterOptions>,
    ) -> Result<Arc<Platform>, OpenError> {
        for dir in ["apps", "bundles", "tenants"] {
            let path = config.data_dir.join(dir);
            std::fs::create_dir_all(&path)
                .map_err(|source| PersistError::CreateFolder { path, source })?;
        }
        if cluster.is_some() {
            return Platform::build(
                runtime,
                config,
                Tenants::in_memory(),
                HashMap::new(),
                cluster,
            );
        }
        let tenants = Tenants::open(&config.data_dir)?;
        let bundles = config.data_dir.join("bundles");
        let mut apps = HashMap::new();
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
            if let Err(err) = record.check(&name, Some(&bundles)) {
                damaged(format!("its record is inconsistent: {err}"));
                continue;
            }
            let Some(tenant) = tenants.get(&record.tenant) else {
                set_aside.insert(name, SetAside::Orphan(record));
                continue;
            };
            let entry = AppEntry::new(record, tenant, LogHub::new());
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
        let platform = Platform::build(runtime, config, tenants, apps, None)?;
        *lock(&platform.set_aside) = set_aside;
        Ok(platform)
    }

    fn build(
        runtime: Arc<Runtime>,
        config: PlatformConfig,
        tenants: Tenants,
        apps: HashMap<String, Arc<AppEntry>>,
        cluster: Option<ClusterOptions>,
    ) -> Result<Arc<Platform>, OpenError> {
        let log_hubs = apps
            .values()
            .map(|entry| (entry.name.clone(), entry.logs.clone()))
            .collect();
        let metrics = PlatformMetrics::new(cluster.as_ref().map(|c| c.host_id.as_str()));
        let (log_forward, log_shared) = match cluster {
            Some(_) => {
                let (sender, receiver) = tokio::sync::mpsc::channel(LOG_SHARE_BACKLOG);
                (Some(sender), Some(receiver))
            }
            None => (None, None),
        };
        let usage = UsageLedger::open(config.data_dir.join("usage"), metrics.usage.clone())?;
        let queues_url = config
            .queues_url
            .as_deref()
            .or(cluster.as_ref().and_then(|c| c.store_url.as_deref()));
        let queues = skiff_store::open_queues(
            &match queues_url {
                Some(url) => QueueBackend::Redis(url.to_string()),
                None => QueueBackend::Embedded(config.data_dir.join("queues.redb")),
            },
            config.queue_max_depth,
            config.queue_max_bytes,
        )
        .map_err(OpenError::Queues)?;
        Ok(Arc::new(Platform {
            runtime,
            metrics,
            config,
            public_port: AtomicU64::new(0),
            tenants: RwLock::new(tenants),
            apps: ArcSwap::from_pointee(apps),
            set_aside: Mutex::default(),
            app_locks: AppLocks::default(),
            changes: Mutex::new(()),
            seeding: Arc::default(),
            log_hubs: Mutex::new(log_hubs),
            deploys: tokio::sync::Semaphore::new(MAX_CONCURRENT_DEPLOYS),
            uploads: tokio::sync::Semaphore::new(MAX_CONCURRENT_UPLOADS),
            started: Instant::now(),
            usage: Arc::new(usage),
            usage_unshared: Mutex::default(),
            log_forward,
            log_shared: Mutex::new(log_shared),
            ready: AtomicBool::new(cluster.is_none()),
            in_step: AtomicBool::new(false),
            applied: AtomicU64::new(0),
            tenant_sync: tokio::sync::Mutex::new(()),
            scheduler: std::sync::OnceLock::new(),
            consumers: std::sync::OnceLock::new(),
            triggers_stopped: AtomicBool::new(false),
            queues,
            cluster,
        }))
    }

    /// Waits for a slot to read an upload in; hold it until the deploy ends (the upload is
    /// in memory until then).
    #[expect(clippy::expect_used, reason = "the semaphore is never closed")]
    pub async fn upload_slot(&self) -> tokio::sync::SemaphorePermit<'_> {
        self.uploads
            .acquire()
            .await
            .expect("the upload semaphore is never closed")
    }

    /// Waits for a slot to unpack and compile; take it once the upload has been read.
    #[expect(clippy::expect_used, reason = "the semaphore is never closed")]
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
}

impl Platform {
    /// The tenants, to read.
    fn tenants_ref(&self) -> RwLockReadGuard<'_, Tenants> {
        self.tenants.read().unwrap_or_else(PoisonError::into_inner)
    }

    /// The tenants, to change (hold `changes` too).
    fn tenants_mut(&self) -> RwLockWriteGuard<'_, Tenants> {
        self.tenants.write().unwrap_or_else(PoisonError::into_inner)
    }

    /// The usage ledger: what apps used, for billing.
    pub fn usage(&self) -> &UsageLedger {
        &self.usage
    }

    pub(crate) fn usage_ledger(&self) -> Arc<UsageLedger> {
        self.usage.clone()
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
/// or a first deploy cut short by a crash), and deleted tenants' folders a crash left. Those of damaged records are kept, whatever their
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
        // A deleted tenant's folder whose removal a crash cut short.
        if tenant_name.starts_with(".deleted-") {
            let _ = std::fs::remove_dir_all(tenant.path());
            continue;
        }
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
impl AppEntry {
    pub(super) fn new(record: AppRecord, tenant: Arc<Tenant>, logs: Arc<LogHub>) -> AppEntry {
        AppEntry {
            name: record.name.clone(),
            tenant,
            record: Mutex::new(record),
            live: ArcSwapOption::empty(),
            loading: tokio::sync::Mutex::new(()),
            last_used: AtomicU64::new(0),
            revision: AtomicU64::new(0),
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
