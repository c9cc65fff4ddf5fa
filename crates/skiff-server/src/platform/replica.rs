//! A cluster host's copy of the shared state: the tenants and app records every host serves
//! from, kept in step with the cluster's by announcements and, in case one was missed, by the
//! change log. The host keeps a watermark, the revision up to which it has applied every
//! change, and reports only that (and the apps it does not serve): `apps inspect` compares it
//! with each app's revision. Bundles are fetched from the shared state the first time a
//! version is loaded here, and unpacked as carefully as an upload.
//!
//! Applying a record takes the app's lock, as a deploy does, so a host applies the change it
//! made itself only once (the revision it committed is already its own). An app that is loaded
//! here is loaded at its new version before the swap, as a deploy does: requests never wait
//! for a remote deploy's compile. An idle one stays idle.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use super::{AppEntry, LiveVersion, Platform, SetAside, lock};
use crate::api::{ClusterInfo, ErrorCode, HostInfo};
use crate::bundle;
use crate::cluster::{BundleStore, Change, ClusterOptions, SharedError, SharedState};
use crate::persist::unique_suffix;
use crate::records::AppRecord;
use crate::refusal::{Refusal, Refused};
use crate::tenants::TenantRecord;

/// Log lines a host shares with the cluster in one second at most.
const SHARED_LOG_LINES_PER_SECOND: usize = 2000;

/// Changes read from the change log in one round trip at most.
const CATCH_UP_BATCH: usize = 1000;

/// The revision of the last of `changes` if they follow revision `after` one by one, `None`
/// if there is a gap.
fn contiguous_end(after: u64, changes: &[Change]) -> Option<u64> {
    let mut expected = after + 1;
    for change in changes {
        match change {
            Change::Tenant(_, revision) | Change::App(_, revision) if *revision == expected => {
                expected += 1;
            }
            _ => return None,
        }
    }
    Some(expected - 1)
}

/// Log lines shared in one round trip at most.
const LOG_BATCH: usize = 256;

/// How long to wait before subscribing again after the subscription failed or was lost; it
/// doubles while Redis stays away, up to the most.
const RESUBSCRIBE_DELAY: Duration = Duration::from_millis(250);
const MAX_RESUBSCRIBE_DELAY: Duration = Duration::from_secs(4);

/// The refusal of a change while the shared state cannot be reached.
pub(crate) fn unavailable(err: SharedError) -> Refusal {
    match err {
        SharedError::Unavailable(why) => {
            tracing::warn!("a change was refused, the cluster's state is unreachable: {why}");
            Refusal::new(
                ErrorCode::Unavailable,
                "this host cannot reach the cluster's shared state, so it makes no changes \
                 now (it keeps serving the apps it has); try again shortly",
            )
        }
        SharedError::Invalid(why) => Refusal::internal(format!("the cluster's state: {why}")),
    }
}

/// How long a host's report lives unless renewed: three resync periods, so that a host that is
/// gone drops out of `apps inspect` soon, and one that is slow does not.
fn report_ttl(cluster: &ClusterOptions) -> Duration {
    (cluster.resync * 3).max(Duration::from_secs(5))
}

/// A usage query that has no answer, as the API says it.
pub(crate) fn usage_refusal(err: crate::usage::ReportError) -> Refusal {
    match err {
        crate::usage::ReportError::Range(message) => Refusal::new(ErrorCode::BadRequest, message),
        crate::usage::ReportError::Read(message) => Refusal::internal(message),
    }
}

impl Platform {
    pub(crate) fn shared(&self) -> Option<&Arc<dyn SharedState>> {
        self.cluster.as_ref().map(|cluster| &cluster.state)
    }

    /// Where the cluster keeps bundles; refused outside a cluster.
    pub(crate) fn bundles(&self) -> Refused<&Arc<dyn BundleStore>> {
        self.cluster
            .as_ref()
            .map(|cluster| &cluster.bundles)
            .ok_or_else(|| Refusal::internal("not in a cluster"))
    }

    pub fn cluster(&self) -> Option<&ClusterOptions> {
        self.cluster.as_ref()
    }

    /// Whether the host serves what it should (`/readyz`).
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Relaxed)
    }

    /// On a cluster, a host makes changes only once it has read the cluster's state (its
    /// checks read its copy) and not while it shuts down.
    pub(crate) fn check_in_step(&self) -> Refused<()> {
        if self.cluster.is_none() || self.is_ready() {
            return Ok(());
        }
        Err(Refusal::new(
            ErrorCode::Unavailable,
            "this host is not ready (it is still reading the cluster's state, or shutting \
             down); try again shortly, or through another host",
        ))
    }

    /// Marks the host not ready: shutdown has started.
    pub fn set_not_ready(&self) {
        self.ready.store(false, Ordering::Relaxed);
    }

    /// Keeps this host's copy in step with the cluster until the task is dropped: subscribes
    /// to announcements, reads everything, then applies each change announced. A change that
    /// was missed (an announcement lost with the subscription, or one that failed to apply)
    /// is caught up from the change log: when the next announcement shows a gap, or at the
    /// next `resync` at the latest.
    pub async fn run_replica(self: Arc<Self>) {
        let Some(cluster) = self.cluster.clone() else {
            return;
        };
        let mut resync = tokio::time::interval(cluster.resync.max(Duration::from_millis(100)));
        resync.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut delay = RESUBSCRIBE_DELAY;
        loop {
            let mut changes = match cluster.state.subscribe().await {
                Ok(changes) => changes,
                Err(err) => {
                    if delay == RESUBSCRIBE_DELAY {
                        tracing::warn!("cannot subscribe to the cluster's changes: {err}");
                    }
                    // Still read now and then: the host converges even without announcements.
                    tokio::select! {
                        _ = resync.tick() => self.catch_up_logged().await,
                        () = tokio::time::sleep(delay) => {}
                    }
                    delay = (delay * 2).min(MAX_RESUBSCRIBE_DELAY);
                    continue;
                }
            };
            if delay > RESUBSCRIBE_DELAY {
                tracing::info!("subscribed to the cluster's changes again");
            }
            delay = RESUBSCRIBE_DELAY;
            // Announcements may have been missed while there was no subscription.
            self.catch_up_logged().await;
            loop {
                tokio::select! {
                    change = changes.recv() => match change {
                        Some(change) => self.apply_change(change).await,
                        None => break,
                    },
                    _ = resync.tick() => self.catch_up_logged().await,
                }
            }
            tracing::warn!("the subscription to the cluster's changes was lost; subscribing again");
            tokio::time::sleep(RESUBSCRIBE_DELAY).await;
        }
    }

    /// Applies one announced change if it is the next one; catches up from the change log if
    /// announcements before it were missed.
    async fn apply_change(&self, change: Change) {
        let revision = match &change {
            Change::Tenant(_, revision) | Change::App(_, revision) => *revision,
            Change::CatchUp => return self.catch_up_logged().await,
        };
        let applied = self.applied.load(Ordering::Relaxed);
        if revision <= applied {
            // Already applied, by a catch-up or the first full read.
            return;
        }
        if revision > applied + 1 || !self.in_step.load(Ordering::Relaxed) {
            return self.catch_up_logged().await;
        }
        let result = match &change {
            Change::Tenant(..) => self.sync_tenants().await,
            Change::App(name, _) => self.sync_app(name).await,
            Change::CatchUp => Ok(()),
        };
        match result {
            Ok(()) => {
                self.applied.fetch_max(revision, Ordering::Relaxed);
                self.report_applied().await;
            }
            // The watermark stays: the next resync catches up from it.
            Err(err) => tracing::warn!("cannot apply the cluster's change ({change:?}): {err}"),
        }
    }

    /// Brings this host up to the cluster's newest change, logging what fails (the next
    /// resync tries again), and reports how far it is. The first time, everything is read,
    /// and the host becomes ready once that worked.
    async fn catch_up_logged(&self) {
        let first = !self.in_step.load(Ordering::Relaxed);
        let result = if first {
            self.sync_everything().await
        } else {
            self.catch_up().await
        };
        match result {
            Ok(()) => {
                if first && !self.in_step.swap(true, Ordering::Relaxed) {
                    // Before the host is ready, and so before it takes a deploy (which
                    // unpacks a bundle no record names yet).
                    self.remove_unused_files().await;
                    self.ready.store(true, Ordering::Relaxed);
                    tracing::info!(
                        apps = self.apps.load().len(),
                        "in step with the cluster: ready"
                    );
                }
            }
            Err(SharedError::Invalid(why)) => tracing::error!("{why}"),
            Err(SharedError::Unavailable(why)) => {
                // No report either: it could not be written.
                return tracing::warn!("cannot read the cluster's state: {why}");
            }
        }
        self.report_applied().await;
    }

    /// Applies every change after this host's watermark, as the change log lists them: one
    /// GET when there is none, a read of the changed apps when there are some, and a read of
    /// everything only when the log no longer reaches back to the watermark (the host was
    /// away for longer than the log keeps).
    async fn catch_up(&self) -> Result<(), SharedError> {
        let Some(shared) = self.shared() else {
            return Ok(());
        };
        let newest = self.newest_revision(shared).await?;
        let mut applied = self.applied.load(Ordering::Relaxed);
        while applied < newest {
            let changes = match shared.changes_since(applied, CATCH_UP_BATCH).await? {
                Some(changes) if !changes.is_empty() => changes,
                _ => {
                    tracing::info!(
                        "the cluster's change log no longer reaches back to revision {applied}, \
                         which this host applied last: reading everything"
                    );
                    return self.sync_everything().await;
                }
            };
            let Some(last) = contiguous_end(applied, &changes) else {
                tracing::warn!("the cluster's change log has a gap: reading everything");
                return self.sync_everything().await;
            };
            // Each read takes the newest record, so a name changed twice is read once; the
            // tenants first, so that an app of a new tenant finds it.
            if changes.iter().any(|c| matches!(c, Change::Tenant(..))) {
                self.sync_tenants().await?;
            }
            let mut read = HashSet::new();
            for change in &changes {
                if let Change::App(name, _) = change
                    && read.insert(name.as_str())
                {
                    self.sync_app(name).await?;
                }
            }
            tracing::debug!(
                changes = changes.len(),
                "caught up from the cluster's change log, to revision {last}"
            );
            self.applied.fetch_max(last, Ordering::Relaxed);
            applied = last;
        }
        Ok(())
    }

    /// Reads every tenant and every app's revision, and applies what differs.
    pub async fn sync_everything(&self) -> Result<(), SharedError> {
        let Some(shared) = self.shared() else {
            return Ok(());
        };
        // Read first: once everything below is applied, so is every change up to it.
        let newest = self.newest_revision(shared).await?;
        self.sync_tenants().await?;
        let revisions = shared.app_revisions().await?;
        let local: HashMap<String, u64> = self
            .apps
            .load()
            .iter()
            .map(|(name, entry)| (name.clone(), entry.revision.load(Ordering::Relaxed)))
            .collect();
        for (name, revision) in &revisions {
            if local.get(name) != Some(revision) {
                self.sync_app(name).await?;
            }
        }
        // Read again before removing: the list above may be older than a deploy applied
        // since.
        let aside: Vec<String> = lock(&self.set_aside).keys().cloned().collect();
        for name in local.keys().chain(&aside) {
            if !revisions.contains_key(name) {
                self.sync_app(name).await?;
            }
        }
        self.applied.fetch_max(newest, Ordering::Relaxed);
        Ok(())
    }

    /// The cluster's newest revision, refused if it went back: a Redis restarted without its
    /// data (no persistence, a failover to an empty replica) would otherwise stop every app on
    /// every host. The hosts keep serving what they have instead, and say why.
    async fn newest_revision(&self, shared: &Arc<dyn SharedState>) -> Result<u64, SharedError> {
        let newest = shared.revision().await?;
        let applied = self.applied.load(Ordering::Relaxed);
        if newest < applied {
            return Err(SharedError::Invalid(format!(
                "the cluster's {} has lost its state: its newest change is {newest}, but this \
                 host has applied changes up to {applied}. Nothing is applied from it: this host \
                 keeps serving what it has. Restore Redis from its persistence or a backup \
                 (and give it `appendonly yes`); to start the cluster afresh instead, restart \
                 the hosts",
                shared.describe()
            )));
        }
        Ok(newest)
    }

    /// Reads every tenant and makes this host's tenants the same. Apps of a tenant that is gone
    /// stop being served (kept aside); those of a tenant that is new are served.
    ///
    /// One at a time, read included, so that an older read never undoes a newer one.
    pub(crate) async fn sync_tenants(&self) -> Result<(), SharedError> {
        let Some(shared) = self.shared() else {
            return Ok(());
        };
        let _syncing = self.tenant_sync.lock().await;
        self.newest_revision(shared).await?;
        let mut records = Vec::new();
        for raw in shared.tenants().await? {
            match serde_json::from_slice::<TenantRecord>(&raw) {
                Ok(record) => records.push(record),
                Err(err) => tracing::error!("a tenant in the cluster's state is damaged: {err}"),
            }
        }
        let (added, removed) = {
            let _changes = lock(&self.changes);
            self.tenants_mut().sync(records)
        };
        if !removed.is_empty() {
            let _changes = lock(&self.changes);
            let mut index = HashMap::clone(&self.apps.load());
            let mut set_aside = lock(&self.set_aside);
            index.retain(|name, entry| {
                if !removed.contains(&entry.tenant.name) {
                    return true;
                }
                entry.live.store(None);
                set_aside.insert(name.clone(), SetAside::Orphan(entry.record().clone()));
                false
            });
            self.apps.store(Arc::new(index));
        }
        for name in added {
            self.adopt_orphans(&name);
        }
        for name in removed {
            self.remove_tenant_folder_if_unused(&name);
        }
        Ok(())
    }

    /// Removes the folder of tenant `name` from this host once the tenant is gone and none of
    /// its apps is left here (set aside ones included: their delete follows the tenant's).
    fn remove_tenant_folder_if_unused(&self, name: &str) {
        if self.tenant(name).is_some()
            || self.apps.load().values().any(|e| e.tenant.name == name)
            || lock(&self.set_aside)
                .values()
                .any(|a| matches!(a, SetAside::Orphan(r) if r.tenant == name))
        {
            return;
        }
        self.remove_tenant_folder(name);
    }

    /// Removes the unpacked bundles no record names (apps deleted or versions pruned while
    /// this host was away), and the files of apps and tenants deleted meanwhile. Once, when
    /// the host is first in step.
    async fn remove_unused_files(&self) {
        let apps = self.apps.load_full();
        let set_aside = lock(&self.set_aside).clone();
        let mut in_use: HashSet<String> = self
            .tenants_ref()
            .all()
            .into_iter()
            .map(|tenant| tenant.name.clone())
            .collect();
        in_use.extend(apps.values().map(|entry| entry.tenant.name.clone()));
        in_use.extend(set_aside.values().filter_map(|aside| match aside {
            SetAside::Orphan(record) => Some(record.tenant.clone()),
            SetAside::Damaged => None,
        }));
        let data_dir = self.config.data_dir.clone();
        let damaged = set_aside
            .values()
            .any(|aside| matches!(aside, SetAside::Damaged));
        let _ = tokio::task::spawn_blocking(move || {
            super::remove_stray_app_folders(&data_dir, &apps, &set_aside);
            // A damaged record cannot say whose folder is whose: keep every tenant's.
            if damaged {
                return;
            }
            let tenants = data_dir.join("tenants");
            for folder in std::fs::read_dir(&tenants).into_iter().flatten().flatten() {
                let name = folder.file_name().to_string_lossy().into_owned();
                if !in_use.contains(&name) {
                    let _ = std::fs::remove_dir_all(folder.path());
                }
            }
        })
        .await;
        self.remove_unused_bundles().await;
    }

    async fn remove_unused_bundles(&self) {
        let mut used: HashSet<String> = HashSet::new();
        for entry in self.apps.load().values() {
            used.extend(entry.record().bundles().map(String::from));
        }
        for aside in lock(&self.set_aside).values() {
            if let SetAside::Orphan(record) = aside {
                used.extend(record.bundles().map(String::from));
            }
        }
        let root = self.config.data_dir.join("bundles");
        let removed = tokio::task::spawn_blocking(move || {
            let mut removed = 0;
            for dir in std::fs::read_dir(&root).into_iter().flatten().flatten() {
                let name = dir.file_name().to_string_lossy().into_owned();
                // `.fetch-*`: a bundle being fetched for a load right now.
                if name.starts_with('.') || used.contains(&name) {
                    continue;
                }
                if std::fs::remove_dir_all(dir.path()).is_ok() {
                    removed += 1;
                }
            }
            removed
        })
        .await
        .unwrap_or(0);
        if removed > 0 {
            tracing::info!("removed {removed} unpacked bundle(s) no app uses any more");
        }
    }

    /// Reads one app's record and applies it.
    ///
    /// Under the app's lock, read included: of two syncs of one app, the one that reads later
    /// applies later, so an older read never undoes a newer one.
    pub(crate) async fn sync_app(&self, name: &str) -> Result<(), SharedError> {
        let Some(shared) = self.shared() else {
            return Ok(());
        };
        let _app = self.app_locks.lock(name).await;
        match shared.app(name).await? {
            None => self.apply_app(name, None).await,
            Some((revision, raw)) => match serde_json::from_slice::<AppRecord>(&raw) {
                Ok(record) => match record.check(name, None) {
                    Ok(()) => self.apply_app(name, Some((revision, record))).await,
                    Err(err) => self.set_damaged(name, &err.to_string()),
                },
                Err(err) => self.set_damaged(name, &err.to_string()),
            },
        }
        Ok(())
    }

    fn set_damaged(&self, name: &str, why: &str) {
        tracing::error!(
            app = name,
            "the app `{name}` in the cluster's state is damaged and not served: {why}"
        );
        if let Some(entry) = self.apps.load().get(name).cloned() {
            self.forget(&entry);
        }
        lock(&self.set_aside).insert(name.to_string(), SetAside::Damaged);
    }

    /// Makes this host's copy of app `name` the cluster's record (`None`: it is deleted). The
    /// caller holds the app's lock.
    async fn apply_app(&self, name: &str, remote: Option<(u64, AppRecord)>) {
        let current = self.apps.load().get(name).cloned();
        let Some((revision, record)) = remote else {
            let aside = lock(&self.set_aside).remove(name);
            match (current, aside) {
                (Some(entry), _) => {
                    self.forget(&entry);
                    tracing::info!(app = name, "deleted in the cluster: no longer served");
                }
                // Set aside when its tenant went first (a tenant deleted with its apps): its
                // files go now.
                (None, Some(SetAside::Orphan(record))) => {
                    self.remove_bundles(record.bundles().map(String::from).collect());
                    self.remove_app_folder(&record.tenant, name);
                    self.remove_tenant_folder_if_unused(&record.tenant);
                    tracing::info!(app = name, "deleted in the cluster: its files are removed");
                }
                (None, _) => {}
            }
            return;
        };
        let current = match current {
            Some(entry) if entry.revision.load(Ordering::Relaxed) == revision => return,
            // The name changed hands (deleted, then deployed by another tenant).
            Some(entry) if entry.tenant.name != record.tenant => {
                self.forget(&entry);
                None
            }
            current => current,
        };
        let Some(tenant) = self.tenant(&record.tenant) else {
            lock(&self.set_aside).insert(name.to_string(), SetAside::Orphan(record));
            return;
        };
        lock(&self.set_aside).remove(name);
        let Some(entry) = current else {
            let logs = self.log_hub(name, &tenant.name);
            let entry = Arc::new(AppEntry::new(record, tenant, logs));
            entry.revision.store(revision, Ordering::Relaxed);
            let _changes = lock(&self.changes);
            let mut index = HashMap::clone(&self.apps.load());
            index.insert(name.to_string(), entry);
            self.apps.store(Arc::new(index));
            tracing::info!(app = name, revision, "deployed in the cluster: served here");
            return;
        };
        let kept: HashSet<&str> = record.bundles().collect();
        let dropped: Vec<String> = entry
            .record()
            .bundles()
            .filter(|bundle| !kept.contains(bundle))
            .map(String::from)
            .collect();
        let loaded = entry.live.load().is_some();
        let live = record.live_version().ok().cloned();
        match live {
            Some(version) if loaded => match self.load_version(&entry, &version).await {
                Ok(app) => entry.publish(record, version.version, app),
                Err(refusal) => {
                    tracing::error!(
                        app = name,
                        "cannot load version {} of `{name}` here: {}; it loads on its next \
                         request",
                        version.version,
                        refusal.message
                    );
                    self.replace_record(&entry, record);
                }
            },
            _ => self.replace_record(&entry, record),
        }
        entry.revision.store(revision, Ordering::Relaxed);
        self.remove_bundles(dropped);
        tracing::info!(app = name, revision, "changed in the cluster: applied");
    }

    /// Makes `record` the entry's, unloaded: its live version loads on the next request.
    fn replace_record(&self, entry: &AppEntry, record: AppRecord) {
        let mut current = entry.record();
        *current = record;
        entry.live.store(None::<Arc<LiveVersion>>);
    }

    /// Unpacks bundle `id` from the shared state into the bundles folder, unless it is there.
    /// It is unpacked beside, then renamed in, so that a half-unpacked bundle is never taken
    /// for a whole one.
    pub(super) async fn fetch_bundle(&self, id: &str) -> Refused<()> {
        let Ok(store) = self.bundles() else {
            return Ok(());
        };
        let root = self.config.data_dir.join("bundles");
        let target = root.join(id);
        if tokio::fs::metadata(&target).await.is_ok_and(|m| m.is_dir()) {
            return Ok(());
        }
        let packed = store
            .bundle(id)
            .await
            .map_err(unavailable)?
            .ok_or_else(|| {
                Refusal::internal(format!(
                    "the bundle `{id}` is missing from {}",
                    store.location()
                ))
            })?;
        let limits = self.config.bundle_limits.clone();
        let partial = root.join(format!(".fetch-{}", unique_suffix()));
        tokio::task::spawn_blocking(move || {
            let result = std::fs::create_dir(&partial)
                .map_err(|err| format!("cannot create {}: {err}", partial.display()))
                .and_then(|()| {
                    bundle::unpack(&packed, &partial, &limits)
                        .map(drop)
                        .map_err(|err| err.to_string())
                })
                .and_then(|()| match std::fs::rename(&partial, &target) {
                    Ok(()) => Ok(()),
                    // Another load fetched it meanwhile.
                    Err(_) if target.is_dir() => Ok(()),
                    Err(err) => Err(format!("cannot rename into {}: {err}", target.display())),
                });
            if partial.exists() {
                let _ = std::fs::remove_dir_all(&partial);
            }
            result
        })
        .await
        .map_err(|err| Refusal::internal(format!("fetching a bundle stopped: {err}")))?
        .map_err(|err| Refusal::internal(format!("fetching the bundle `{id}`: {err}")))
    }

    /// Which hosts serve app `name` as the cluster holds it now; `None` outside a cluster, or
    /// (logged) while the cluster's state cannot be read.
    pub async fn convergence(&self, name: &str) -> Option<ClusterInfo> {
        let shared = self.shared()?;
        let read = async {
            let revision = shared.app_revision(name).await?;
            let hosts = shared.hosts_serving(name).await?;
            Ok::<_, SharedError>((revision, hosts))
        };
        match read.await {
            Ok((revision, hosts)) => {
                let revision = revision.unwrap_or(0);
                Some(ClusterInfo {
                    revision,
                    hosts: hosts
                        .into_iter()
                        .map(|report| {
                            let converged = !report.skipped && report.applied >= revision;
                            HostInfo {
                                host: report.host,
                                revision: converged.then_some(revision),
                                converged,
                                applied: report.applied,
                                skipped: report.skipped,
                            }
                        })
                        .collect(),
                })
            }
            Err(err) => {
                tracing::warn!(app = name, "cannot tell which hosts serve `{name}`: {err}");
                None
            }
        }
    }

    /// Shares usage this host wrote out (by day) with the cluster, with whatever an earlier
    /// call could not share; what cannot be shared now waits for the next call.
    pub async fn share_usage(&self, written: Vec<(String, String)>) {
        let Some(shared) = self.shared() else {
            return;
        };
        let mut pending = std::mem::take(&mut *lock(&self.usage_unshared));
        pending.extend(written);
        let mut left = Vec::new();
        for (day, text) in pending {
            if !left.is_empty() {
                left.push((day, text));
                continue;
            }
            if let Err(err) = shared.push_usage(&day, text.as_bytes()).await {
                tracing::warn!("cannot share this host's usage with the cluster yet: {err}");
                left.push((day, text));
            }
        }
        lock(&self.usage_unshared).extend(left);
    }

    /// The usage report of the whole cluster: what every host wrote out, and what this one
    /// holds in memory (other hosts' current minutes follow at their next write).
    pub async fn cluster_usage(
        &self,
        from: std::time::SystemTime,
        to: std::time::SystemTime,
        tenant: Option<String>,
    ) -> Refused<crate::api::UsageReport> {
        let Some(shared) = self.shared() else {
            return Err(Refusal::internal("not in a cluster"));
        };
        let days = crate::usage::UsageLedger::days(from, to).map_err(usage_refusal)?;
        let mut texts = HashMap::new();
        for day in days {
            let parts = shared.usage(&day).await.map_err(unavailable)?;
            let text: Vec<u8> = parts.concat();
            texts.insert(day, String::from_utf8_lossy(&text).into_owned());
        }
        let ledger = self.usage_ledger();
        tokio::task::spawn_blocking(move || {
            ledger.report(from, to, tenant.as_deref(), Some(&texts))
        })
        .await
        .map_err(|err| Refusal::internal(format!("the query stopped: {err}")))?
        .map_err(usage_refusal)
    }

    /// Shares this host's apps' log lines with the cluster, in batches, until the task is
    /// dropped. Lines that cannot be shared (Redis is down) are dropped from the shared
    /// stream; this host's own buffer keeps them.
    pub async fn share_logs(self: Arc<Self>) {
        let Some(shared) = self.shared().cloned() else {
            return;
        };
        let Some(mut receiver) = lock(&self.log_shared).take() else {
            return;
        };
        let mut failing = false;
        // One second's budget of lines: a tenant that logs without end must not take the
        // shared Redis from everyone else.
        let (mut second, mut budget) = (std::time::Instant::now(), SHARED_LOG_LINES_PER_SECOND);
        let mut dropped = 0u64;
        while let Some(first) = receiver.recv().await {
            let mut batch = vec![first];
            while batch.len() < LOG_BATCH {
                match receiver.try_recv() {
                    Ok(line) => batch.push(line),
                    Err(_) => break,
                }
            }
            if second.elapsed() >= Duration::from_secs(1) {
                if dropped > 0 {
                    tracing::warn!(
                        "{dropped} log line(s) were not shared with the cluster: more than \
                         {SHARED_LOG_LINES_PER_SECOND} a second (each host's own buffer has them)"
                    );
                }
                (second, budget, dropped) =
                    (std::time::Instant::now(), SHARED_LOG_LINES_PER_SECOND, 0);
            }
            if batch.len() > budget {
                dropped += (batch.len() - budget) as u64;
                batch.truncate(budget);
            }
            budget -= batch.len();
            if batch.is_empty() {
                continue;
            }
            let lines: Vec<(String, String, Vec<u8>)> = batch
                .into_iter()
                .filter_map(|(tenant, line)| {
                    let json = serde_json::to_vec(&*line).ok()?;
                    Some((tenant, line.app.clone(), json))
                })
                .collect();
            match shared.append_logs(&lines).await {
                Ok(()) => failing = false,
                Err(err) if !failing => {
                    failing = true;
                    tracing::warn!("cannot share log lines with the cluster: {err}");
                }
                Err(_) => {}
            }
        }
    }

    /// Lines of `tenant`'s app `name` from every host, each with its id (see
    /// [`SharedState::logs`]).
    pub async fn shared_logs(
        &self,
        tenant: &str,
        name: &str,
        after: Option<&str>,
        count: usize,
    ) -> Refused<Vec<(String, Vec<u8>)>> {
        let Some(shared) = self.shared() else {
            return Err(Refusal::internal("not in a cluster"));
        };
        shared
            .logs(tenant, name, after, count)
            .await
            .map_err(unavailable)
    }

    /// Tells the cluster this host is leaving: `apps inspect` stops listing it at once,
    /// rather than when its report expires.
    pub async fn leave_cluster(&self) {
        let Some(cluster) = &self.cluster else {
            return;
        };
        if let Err(err) = cluster.state.forget_host(&cluster.host_id).await {
            tracing::warn!("cannot take this host out of the cluster's list: {err}");
        }
    }

    /// Tells the cluster how far this host is: its watermark, and the apps it does not serve.
    async fn report_applied(&self) {
        let Some(cluster) = &self.cluster else {
            return;
        };
        let applied = self.applied.load(Ordering::Relaxed);
        let skipped: Vec<String> = lock(&self.set_aside).keys().cloned().collect();
        let ttl = report_ttl(cluster);
        if let Err(err) = cluster
            .state
            .report_host(&cluster.host_id, applied, &skipped, ttl)
            .await
        {
            tracing::warn!("cannot report this host's progress to the cluster: {err}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_catch_up_stops_at_a_gap_in_the_change_log() {
        let app = |revision| Change::App("a".into(), revision);
        assert_eq!(
            contiguous_end(4, &[app(5), Change::Tenant("t".into(), 6), app(7)]),
            Some(7)
        );
        assert_eq!(contiguous_end(4, &[app(5), app(7)]), None);
        assert_eq!(contiguous_end(4, &[app(6)]), None);
        assert_eq!(contiguous_end(4, &[Change::CatchUp]), None);
    }
}
