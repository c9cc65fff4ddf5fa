//! What a fleet of `skiff server` hosts shares: the interface to the cluster's state, which
//! the `skiff-cluster` crate implements on Redis. With it, the shared state is the truth and
//! each host's data folder only a cache (unpacked bundles, compiled code): every management
//! write is an atomic compare-and-swap on the shared state, and every host, the writer
//! included, applies what changed to its own index (see `platform::replica`).
//!
//! The records cross this interface as the JSON the host writes, so that the state's keeper
//! knows nothing of their fields beyond what it must check atomically (a tenant exists, the
//! tenant's apps and code fit its quotas).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

/// Why the shared state could not be read or changed: it is unreachable (or slow past its
/// timeout), or it holds something this host cannot read.
#[derive(Debug, Clone, thiserror::Error)]
pub enum SharedError {
    #[error("{0}")]
    Unavailable(String),
    #[error("{0}")]
    Invalid(String),
}

/// One change to an app record, made only if the app's revision is still `expected`.
#[derive(Debug, Clone)]
pub struct AppSwap<'a> {
    pub name: &'a str,
    /// The revision read before deciding the change; `None`: the app must not exist.
    pub expected: Option<u64>,
    /// The new record; `None` deletes the app.
    pub record: Option<Vec<u8>>,
    pub tenant: &'a str,
    /// The code of the version the record makes live, counted against the tenant's quota.
    pub code_bytes: u64,
    pub max_apps: u32,
    pub max_code_bytes: u64,
    /// The bytes of every version the record keeps, counted against the disk quota.
    pub kept_bytes: u64,
    /// What the disk quota leaves for the versions of all the tenant's apps. Checked only if
    /// the record keeps more bytes than before (a rollback or delete never fails on it).
    pub disk_room: u64,
}

/// What an [`AppSwap`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SwapOutcome {
    /// Made; the app's new revision (0 once deleted).
    Done(u64),
    /// The app's revision is no longer the expected one: read it again and decide again.
    Changed,
    /// The tenant is gone.
    NoTenant,
    /// The tenant has `0` other apps, the most it may have.
    TooManyApps(u32),
    /// The tenant's other apps' code already takes `0` bytes, too much to add this one.
    TooMuchCode(u64),
    /// The tenant's other apps' versions already take `0` bytes, too much to add these.
    TooMuchDisk(u64),
}

/// A change another host (or this one) made, as the state's subscription announces it, with
/// the revision the change got.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    Tenant(String, u64),
    App(String, u64),
    /// Announcements may have been missed (the host fell behind): catch up from the change
    /// log.
    CatchUp,
}

/// What a host said of itself, as it concerns one app.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostReport {
    pub host: String,
    /// The host has applied every change up to this revision.
    pub applied: u64,
    /// The host does not serve the app although it has applied its record.
    pub skipped: bool,
}

/// The cluster's shared state. Every call is bounded in time by the implementation, and fails
/// with [`SharedError::Unavailable`] while the state cannot be reached.
#[async_trait::async_trait]
pub trait SharedState: Send + Sync + 'static {
    /// Where the state is, for messages (no credentials).
    fn describe(&self) -> String;

    /// Every tenant record.
    async fn tenants(&self) -> Result<Vec<Vec<u8>>, SharedError>;
    async fn tenant(&self, name: &str) -> Result<Option<Vec<u8>>, SharedError>;
    /// Sets tenant `name` to `record` (`None` removes it) if it is `expected` now (`None`:
    /// absent). `false` if it was not.
    async fn swap_tenant(
        &self,
        name: &str,
        expected: Option<&[u8]>,
        record: Option<&[u8]>,
    ) -> Result<bool, SharedError>;

    /// The revision of the newest change of any kind (0 before the first).
    async fn revision(&self) -> Result<u64, SharedError>;

    /// Every app's name and revision.
    async fn app_revisions(&self) -> Result<HashMap<String, u64>, SharedError>;
    /// One app's revision, `None` if there is no such app.
    async fn app_revision(&self, name: &str) -> Result<Option<u64>, SharedError>;
    /// One app's revision and record.
    async fn app(&self, name: &str) -> Result<Option<(u64, Vec<u8>)>, SharedError>;
    async fn swap_app(&self, swap: AppSwap<'_>) -> Result<SwapOutcome, SharedError>;

    /// Says how far this host is: it has applied every change up to revision `applied`, except
    /// that it does not serve the apps `skipped` (their record is damaged, or names a tenant
    /// it does not have). The report lives `ttl`, so that a host that is gone drops out of
    /// [`hosts_serving`](Self::hosts_serving). One small write, however many apps there are.
    async fn report_host(
        &self,
        host: &str,
        applied: u64,
        skipped: &[String],
        ttl: Duration,
    ) -> Result<(), SharedError>;
    /// Takes the host's report away at once: it is leaving (shutting down).
    async fn forget_host(&self, host: &str) -> Result<(), SharedError>;
    /// Each live host's report, as it concerns app `app`, by host name.
    async fn hosts_serving(&self, app: &str) -> Result<Vec<HostReport>, SharedError>;

    /// Adds usage one host wrote out (lines of JSON) to the cluster's record of day `day`
    /// (`YYYY-MM-DD`).
    async fn push_usage(&self, day: &str, lines: &[u8]) -> Result<(), SharedError>;
    /// Everything every host wrote out for day `day`.
    async fn usage(&self, day: &str) -> Result<Vec<Vec<u8>>, SharedError>;

    /// Appends log lines, each `(tenant, app, line as JSON)`, to each app's shared stream,
    /// which keeps only the newest few thousand.
    async fn append_logs(&self, lines: &[(String, String, Vec<u8>)]) -> Result<(), SharedError>;
    /// Lines of `tenant`'s app `app`, each with its id: the newest `count` if `after` is
    /// `None`, else up to `count` that came after the line `after`; oldest first.
    async fn logs(
        &self,
        tenant: &str,
        app: &str,
        after: Option<&str>,
        count: usize,
    ) -> Result<Vec<(String, Vec<u8>)>, SharedError>;

    /// The changes after revision `after`, oldest first, at most `count`: from the change
    /// log, which keeps the newest changes only. `None` if the log no longer holds the change
    /// right after `after` (it was trimmed past it, or lost): read everything instead. Empty
    /// if there is none yet (or the log lost them all: compare with [`revision`](Self::revision)).
    async fn changes_since(
        &self,
        after: u64,
        count: usize,
    ) -> Result<Option<Vec<Change>>, SharedError>;

    /// Announcements of changes, until the subscription is lost (the receiver then ends; the
    /// host subscribes again and reads everything).
    async fn subscribe(&self) -> Result<tokio::sync::mpsc::Receiver<Change>, SharedError>;
}

/// Where the cluster keeps deployed bundles, as uploaded: its shared state (Redis), or an OCI
/// registry the operator gives. Every call is bounded in time by the implementation.
#[async_trait::async_trait]
pub trait BundleStore: Send + Sync + 'static {
    /// Where the bundles are, for messages (no credentials).
    fn location(&self) -> String;
    /// Stores a bundle as uploaded (packed) under its unique id, once, before any record names
    /// it.
    async fn put_bundle(&self, id: &str, packed: &[u8]) -> Result<(), SharedError>;
    /// The bundle stored as `id`, `None` if there is none.
    async fn bundle(&self, id: &str) -> Result<Option<Vec<u8>>, SharedError>;
    async fn remove_bundles(&self, ids: &[String]) -> Result<(), SharedError>;
}

/// How this host takes part in a cluster.
#[derive(Clone)]
pub struct ClusterOptions {
    pub state: Arc<dyn SharedState>,
    /// Where deployed bundles are kept (often the same Redis as `state`).
    pub bundles: Arc<dyn BundleStore>,
    /// This host's name in the cluster (its Pod name on Kubernetes).
    pub host_id: String,
    /// How often the host checks the cluster's newest revision against its own, catching up
    /// from the change log on any announcement it missed, and renews its report.
    pub resync: Duration,
    /// The Redis that holds apps' key-value stores unless the runtime config places them
    /// elsewhere (normally the cluster's own), so that every host sees the same data.
    pub store_url: Option<String>,
}
