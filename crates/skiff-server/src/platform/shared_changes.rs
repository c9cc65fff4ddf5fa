//! Deploy, roll back and delete on a cluster host: the same steps as on one host, but the
//! record is changed by a compare-and-swap on the shared state (which also holds the tenant's
//! quotas over every host's deploys) instead of a file, and only then applied here. A swap
//! that finds the record changed by another host reads it again and decides again.
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use skiff_http::HttpApp;

use super::deploy::{name_taken, too_many_apps, too_much_code, too_much_disk, with_version};
use super::replica::unavailable;
use super::{AppEntry, Platform, lock, no_tenant};
use crate::api::{AppInfo, ErrorCode};
use crate::cluster::{AppSwap, SharedState, SwapOutcome};
use crate::logs::LogHub;
use crate::persist;
use crate::records::{AppRecord, VersionRecord};
use crate::refusal::{Refusal, Refused};
use crate::tenants::Tenant;

/// Swaps tried before a change gives up: each failed one means another host changed the same
/// app meanwhile.
const MAX_SWAPS: usize = 8;

/// What a change makes of the app's record as the shared state holds it now.
struct Decision {
    /// The new record; `None` deletes the app.
    record: Option<AppRecord>,
    /// Bundles no version names any more.
    dropped: Vec<String>,
    /// Whether the record makes a new app.
    created: bool,
}

impl Platform {
    /// Reads the app's record, lets `decide` change it, and swaps the change in; returns the
    /// new revision and the decision. A record that keeps more bytes of versions than before
    /// must fit, with the tenant's other apps' versions, in `disk_room`.
    async fn swap_app(
        &self,
        shared: &Arc<dyn SharedState>,
        tenant: &Tenant,
        name: &str,
        disk_room: u64,
        decide: impl Fn(Option<AppRecord>) -> Refused<Decision>,
    ) -> Refused<(u64, Decision)> {
        for _ in 0..MAX_SWAPS {
            let (expected, current) = match shared.app(name).await.map_err(unavailable)? {
                None => (None, None),
                Some((revision, raw)) => {
                    let record = serde_json::from_slice::<AppRecord>(&raw).map_err(|err| {
                        Refusal::internal(format!("the app `{name}` in the cluster: {err}"))
                    })?;
                    (Some(revision), Some(record))
                }
            };
            let decision = decide(current)?;
            let (record, code_bytes, kept_bytes) = match &decision.record {
                Some(record) => {
                    record.check(name, None).map_err(|err| {
                        Refusal::internal(format!(
                            "refusing to write an inconsistent record of `{name}`: {err}"
                        ))
                    })?;
                    let code = record.live_version().map_or(0, |v| v.code_bytes);
                    let kept = record.versions.iter().map(|v| v.bundle_bytes).sum();
                    let json = serde_json::to_vec(record)
                        .map_err(|err| Refusal::internal(format!("encoding `{name}`: {err}")))?;
                    (Some(json), code, kept)
                }
                None => (None, 0, 0),
            };
            let swap = AppSwap {
                name,
                expected,
                record,
                tenant: &tenant.name,
                code_bytes,
                max_apps: tenant.quotas.max_apps,
                max_code_bytes: tenant.quotas.max_code_bytes,
                kept_bytes,
                disk_room,
            };
            match shared.swap_app(swap).await.map_err(unavailable)? {
                SwapOutcome::Done(revision) => return Ok((revision, decision)),
                SwapOutcome::Changed => continue,
                SwapOutcome::NoTenant => return Err(no_tenant(&tenant.name)),
                SwapOutcome::TooManyApps(count) => return Err(too_many_apps(count)),
                SwapOutcome::TooMuchCode(others) => {
                    return Err(too_much_code(code_bytes, others, &tenant.quotas));
                }
                SwapOutcome::TooMuchDisk(others) => {
                    return Err(too_much_disk(kept_bytes, others, disk_room, &tenant.quotas));
                }
            }
        }
        Err(Refusal::new(
            ErrorCode::Conflict,
            format!("`{name}` was changed through other hosts meanwhile; try again"),
        ))
    }

    /// Makes a prepared version live in the cluster: its bundle is stored first, then the
    /// record swapped in, then the version made live here.
    pub(super) async fn commit_shared(
        &self,
        tenant: &Arc<Tenant>,
        name: &str,
        version: VersionRecord,
        (app, logs): (Arc<HttpApp>, Arc<LogHub>),
        packed: &[u8],
        disk_room: u64,
    ) -> Refused<(AppInfo, bool)> {
        let shared = self
            .shared()
            .ok_or_else(|| Refusal::internal("not in a cluster"))?;
        let bundles = self.bundles()?;
        bundles
            .put_bundle(&version.bundle, packed)
            .await
            .map_err(unavailable)?;
        let keep = self.config.keep_versions;
        let swapped = self
            .swap_app(shared, tenant, name, disk_room, |current| {
                let created = current.is_none();
                let base = match current {
                    Some(record) if record.tenant != tenant.name => return Err(name_taken(name)),
                    Some(record) => record,
                    None => AppRecord {
                        name: name.to_string(),
                        tenant: tenant.name.clone(),
                        live: 0,
                        next_version: 1,
                        versions: Vec::new(),
                    },
                };
                let mut version = version.clone();
                version.deployed_at = persist::now_rfc3339();
                let (record, dropped) = with_version(base, &mut version, keep);
                Ok(Decision {
                    record: Some(record),
                    dropped,
                    created,
                })
            })
            .await;
        let (revision, decision) = match swapped {
            Ok(swapped) => swapped,
            Err(refusal) => {
                // No record names the bundle: nobody will fetch it.
                let _ = bundles
                    .remove_bundles(std::slice::from_ref(&version.bundle))
                    .await;
                return Err(refusal);
            }
        };
        let created = decision.created;
        let Some(record) = decision.record else {
            return Err(Refusal::internal("a deploy decided to delete"));
        };
        let live = record.live;
        let entry = {
            let _changes = lock(&self.changes);
            let apps = self.apps.load();
            let existing = apps
                .get(name)
                .filter(|entry| entry.tenant.name == tenant.name)
                .cloned();
            let is_new_here = existing.is_none();
            let entry = existing
                .unwrap_or_else(|| Arc::new(AppEntry::new(record.clone(), tenant.clone(), logs)));
            entry.last_used.store(self.now_ms(), Ordering::Relaxed);
            entry.publish(record, live, app);
            entry.revision.store(revision, Ordering::Relaxed);
            if is_new_here {
                let mut index = HashMap::clone(&apps);
                index.insert(name.to_string(), entry.clone());
                self.apps.store(Arc::new(index));
            }
            entry
        };
        self.drop_bundles(decision.dropped);
        tracing::info!(
            app = name, tenant = %tenant.name, version = live, revision,
            "deployed to the cluster: version {live} is live"
        );
        Ok((self.info(&entry)?, created))
    }

    /// Makes the version before the live one live again, in the cluster.
    pub(super) async fn rollback_shared(
        &self,
        shared: &Arc<dyn SharedState>,
        tenant: &Tenant,
        name: &str,
    ) -> Refused<AppInfo> {
        // This host's copy is brought up to date first: the version to load is the cluster's.
        self.sync_app(name).await.map_err(unavailable)?;
        let _app = self.app_locks.lock(name).await;
        let entry = self.entry_of(tenant, name)?;
        let (previous, expected_live) = {
            let record = entry.record();
            let previous = record
                .versions
                .iter()
                .rev()
                .find(|v| v.version < record.live)
                .cloned();
            (previous, record.live)
        };
        let Some(previous) = previous else {
            return Err(Refusal::new(
                ErrorCode::Conflict,
                format!("`{name}` has no version older than the live one to roll back to"),
            ));
        };
        let app = self.load_version(&entry, &previous).await?;
        let (revision, decision) = self
            .swap_app(shared, tenant, name, u64::MAX, |current| match current {
                Some(mut record) if record.tenant == tenant.name => {
                    // Another host deployed or rolled back since: this rollback is not the
                    // one the caller meant.
                    if record.live != expected_live || record.version(previous.version).is_none() {
                        return Err(Refusal::new(
                            ErrorCode::Conflict,
                            format!(
                                "`{name}` was changed through another host meanwhile; look at \
                                     it again (`skiff apps inspect {name}`) and try again"
                            ),
                        ));
                    }
                    record.live = previous.version;
                    Ok(Decision {
                        record: Some(record),
                        dropped: Vec::new(),
                        created: false,
                    })
                }
                _ => Err(Refusal::not_found(name)),
            })
            .await?;
        if let Some(record) = decision.record {
            let _changes = lock(&self.changes);
            entry.publish(record, previous.version, app);
            entry.revision.store(revision, Ordering::Relaxed);
        }
        tracing::info!(
            app = name,
            version = previous.version,
            "rolled back in the cluster"
        );
        self.info(&entry)
    }

    /// Deletes the app from the cluster, then from this host.
    pub(super) async fn delete_shared(
        &self,
        shared: &Arc<dyn SharedState>,
        tenant: &Tenant,
        name: &str,
    ) -> Refused<()> {
        let (_, decision) = self
            .swap_app(shared, tenant, name, u64::MAX, |current| match current {
                Some(record) if record.tenant == tenant.name => Ok(Decision {
                    record: None,
                    dropped: record.bundles().map(String::from).collect(),
                    created: false,
                }),
                _ => Err(Refusal::not_found(name)),
            })
            .await?;
        let _app = self.app_locks.lock(name).await;
        if let Some(entry) = self.apps.load().get(name).cloned() {
            self.forget(&entry);
        }
        self.drop_bundles(decision.dropped);
        tracing::info!(app = name, tenant = %tenant.name, "deleted from the cluster");
        Ok(())
    }

    /// Removes bundles no record names, from the shared state and from this host.
    fn drop_bundles(&self, bundles: Vec<String>) {
        if bundles.is_empty() {
            return;
        }
        if let Ok(store) = self.bundles() {
            let store = store.clone();
            let ids = bundles.clone();
            tokio::spawn(async move {
                if let Err(err) = store.remove_bundles(&ids).await {
                    tracing::warn!("cannot remove old bundles from {}: {err}", store.location());
                }
            });
        }
        self.remove_bundles(bundles);
    }
}
