//! Changing an app: deploy (unpack, validate, confine, load, check quotas, commit), roll back
//! and delete, each under the app's lock; and the records and bundles they leave on disk.
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use skiff_http::HttpApp;
use skiff_manifest::{App, RouteTarget, format_size};
use skiff_runtime::{LoadOptions, MetricsScope, QueueSpace, SharedStore};

use crate::api::{self, AppInfo, ErrorCode, Quotas, RouteInfo};
use crate::appfiles;
use crate::bundle::{self};
use crate::logs::LogHub;
use crate::persist::{self};
use crate::records::{AppRecord, VersionRecord, prune};
use crate::refusal::{Refusal, Refused};
use crate::tenants::Tenant;

use super::inspect::component_info;
use super::replica::unavailable;
use super::{AppEntry, MAX_REPORT_BYTES, Platform, SetAside, lock, no_tenant};
use crate::persist::unique_suffix;

impl Platform {
    /// Deploys a bundle as app `name` of `tenant`: a new app, or a new version of one. The
    /// bundle is unpacked into a fresh folder, validated and loaded completely before anything
    /// live changes; on any failure the folder is removed and the live version keeps serving.
    /// Returns the app and whether it is new. `source` is the registry reference and digest
    /// the bundle was pulled from, if it was.
    pub async fn deploy(
        &self,
        tenant: &Arc<Tenant>,
        name: &str,
        bundle_bytes: bytes::Bytes,
        source: Option<api::VersionSource>,
    ) -> Refused<(AppInfo, bool)> {
        api::check_name("app", name)?;
        let _app = self.app_locks.lock(name).await;
        // Refuse early what would be refused at the end anyway, before the expensive part:
        // on a cluster, that includes a Redis that cannot be reached.
        self.check_deploy(tenant, name, 0)?;
        self.check_in_step()?;
        if let Some(shared) = self.shared() {
            shared.app_revision(name).await.map_err(unavailable)?;
        }

        let bundle_id = format!("{name}-{}", unique_suffix());
        let dir = self.config.data_dir.join("bundles").join(&bundle_id);
        let mut seeded = Vec::new();
        let packed = bundle_bytes.clone();
        let result = self
            .prepare(tenant, name, bundle_bytes, &dir, &bundle_id, &mut seeded)
            .await;
        let result = match result {
            Ok((mut version, app, local_bytes)) => {
                version.source = source;
                if self.shared().is_some() {
                    let disk_room = tenant.quotas.max_disk_bytes.saturating_sub(local_bytes);
                    self.commit_shared(tenant, name, version, app, &packed, disk_room)
                        .await
                } else {
                    self.commit(tenant, name, version, app)
                }
            }
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
    ) -> Refused<(VersionRecord, (Arc<HttpApp>, Arc<LogHub>), u64)> {
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
        let unpacked = dir.to_path_buf();
        let bundle_bytes = tokio::task::spawn_blocking(move || appfiles::disk_usage(&unpacked))
            .await
            .map_err(|err| Refusal::internal(format!("measuring the bundle stopped: {err}")))?;
        let version = VersionRecord {
            version: 0, // numbered when committed
            app_version: app.version.clone(),
            deployed_at: String::new(),
            bundle: bundle_id.to_string(),
            code_bytes,
            bundle_bytes,
            routes: app
                .routes
                .iter()
                .map(|route| RouteInfo {
                    route: route.as_written.clone(),
                    component: app.target_name(route).to_string(),
                    upstream: matches!(route.target, RouteTarget::Upstream(_)),
                    middleware: route
                        .middleware
                        .iter()
                        .filter_map(|&m| app.components.get(m).map(|c| c.id.clone()))
                        .collect(),
                })
                .collect(),
            components: app
                .components
                .iter()
                .map(|c| component_info(c, dir, &self.runtime))
                .collect(),
            app: Some(stored.clone()),
            source: None,
        };
        let files = self.files_folder(&tenant.name, name);
        let local_bytes = self.check_disk(tenant, name, dir, &stored, &files).await?;
        seeded.extend(self.seed(&stored, dir, &files).await?);
        // An update keeps the app's log stream, so `skiff logs --follow` goes on across it.
        let logs = self.log_hub(name, &tenant.name);
        let app = appfiles::place(&stored, dir, &files);
        let loaded = self.load(app, tenant, &logs, dir).await?;
        Ok((version, (loaded, logs), local_bytes))
    }

    /// Parses and checks the manifest of an unpacked bundle against the tenant's ceilings;
    /// returns the app (named `name`, whatever its manifest says, and with the limits it
    /// will run under) and the size of its code.
    pub(super) async fn read_bundle(
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
            let mut app = skiff_manifest::load_in_bundle(&manifest).map_err(|mut err| {
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
    pub(super) async fn load(
        &self,
        app: App,
        tenant: &Tenant,
        logs: &Arc<LogHub>,
        dir: &Path,
    ) -> Refused<Arc<HttpApp>> {
        let mut options = LoadOptions::default();
        options.data_dir = Some(self.tenant_dir(&tenant.name));
        options.shared_concurrency = Some(tenant.in_flight.clone());
        options.log_sink = Some(logs.sink());
        options.usage = Some(self.usage.sink(&tenant.name, &app.name));
        options.metrics = Some(MetricsScope {
            metrics: self.metrics.runtime.clone(),
            tenant: tenant.name.as_str().into(),
        });
        options.writes_refused = Some(tenant.over_disk.clone());
        options.shared_store = self
            .cluster
            .as_ref()
            .and_then(|cluster| cluster.store_url.clone())
            .map(|redis_url| SharedStore {
                redis_url,
                owner: tenant.name.clone(),
            });
        // A tenant's queues are its own: `orders` of two tenants are two queues.
        options.queues = Some(QueueSpace {
            queues: self.queues.clone(),
            owner: tenant.name.clone(),
        });
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
            return Err(name_taken(name));
        }
        match lock(&self.set_aside).get(name) {
            Some(SetAside::Orphan(_)) => return Err(name_taken(name)),
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
            return Err(too_many_apps(count));
        }
        if code + code_bytes > quotas.max_code_bytes {
            return Err(too_much_code(code_bytes, code, quotas));
        }
        Ok(())
    }

    /// The disk quota: the versions the tenant's apps keep (this deploy's bundle at `dir`
    /// included, those it will prune left out), their writable files (with what this deploy
    /// would seed) and their key-value data must fit in `max_disk_bytes`. Checked at deploy
    /// only: what guests write between deploys is counted at the next one. Returns the bytes
    /// outside the versions (files and key-value data), which a cluster's swap counts with
    /// the versions every host has committed, in one atomic step.
    async fn check_disk(
        &self,
        tenant: &Tenant,
        name: &str,
        dir: &Path,
        stored: &App,
        files: &Path,
    ) -> Refused<u64> {
        let bundles_root = self.config.data_dir.join("bundles");
        let keep = self.config.keep_versions;
        // Each with the size recorded at its deploy, which counts for a bundle this host has
        // not fetched (on a cluster, versions deployed and loaded elsewhere).
        let mut bundles = vec![(dir.to_path_buf(), 0)];
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
            bundles.extend(kept.map(|v| (bundles_root.join(&v.bundle), v.bundle_bytes)));
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
            let code = bundles
                .iter()
                .map(|(path, recorded)| match path.is_dir() {
                    true => appfiles::disk_usage(path),
                    false => *recorded,
                })
                .fold(0u64, u64::saturating_add);
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
        Ok(data.saturating_add(kv))
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
        let (record, dropped) = with_version(
            entry.record().clone(),
            &mut version,
            self.config.keep_versions,
        );
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
        if let Some(shared) = self.shared() {
            self.check_in_step()?;
            return self.rollback_shared(shared, tenant, name).await;
        }
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
        if let Some(shared) = self.shared() {
            self.check_in_step()?;
            return self.delete_shared(shared, tenant, name).await;
        }
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
        }
        self.forget(&entry);
        tracing::info!(app = name, tenant = %tenant.name, "deleted");
        Ok(())
    }

    /// The host's side of a delete, once the record is gone: the app leaves the index and
    /// stops being served (requests already running finish), and its log stream, figures,
    /// bundles and writable folders go.
    pub(super) fn forget(&self, entry: &Arc<AppEntry>) {
        let (tenant, name) = (&entry.tenant.name, entry.name.as_str());
        {
            let _changes = lock(&self.changes);
            let apps = self.apps.load();
            if apps.get(name).is_some_and(|e| Arc::ptr_eq(e, entry)) {
                let mut index = HashMap::clone(&apps);
                index.remove(name);
                self.apps.store(Arc::new(index));
            }
        }
        {
            let _record = entry.record();
            entry.live.store(None);
        }
        lock(&self.log_hubs).remove(name);
        entry.logs.close();
        self.metrics.http.forget_app(tenant, name);
        self.metrics.runtime.forget_app(tenant, name);
        self.usage.retire(tenant, name);
        let bundles = entry.record().bundles().map(String::from).collect();
        self.remove_bundles(bundles);
        self.remove_app_folder(tenant, name);
    }

    /// Removes the app's own folder (its writable mounts). It is renamed aside at once, so
    /// that a deploy of the name right after seeds a fresh one, and removed in the background.
    pub(super) fn remove_app_folder(&self, tenant: &str, name: &str) {
        let folder = appfiles::app_folder(&self.config.data_dir, tenant, name);
        remove_aside(&folder, &format!("the deleted app `{name}`"));
    }

    /// Removes the tenant's folder (its apps' writable mounts, its key-value data), as
    /// [`remove_app_folder`](Self::remove_app_folder) does an app's.
    pub(super) fn remove_tenant_folder(&self, name: &str) {
        remove_aside(
            &self.tenant_dir(name),
            &format!("the deleted tenant `{name}`"),
        );
    }

    /// The log stream of the app named `name`: one per name from its first deploy until it
    /// is deleted, so that concurrent first deploys share it.
    pub(super) fn log_hub(&self, name: &str, tenant: &str) -> Arc<LogHub> {
        let mut hubs = lock(&self.log_hubs);
        hubs.entry(name.to_string())
            .or_insert_with(|| match (&self.cluster, &self.log_forward) {
                (Some(cluster), Some(forward)) => {
                    LogHub::forwarding(tenant, &cluster.host_id, forward.clone())
                }
                _ => LogHub::new(),
            })
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
            .check(&record.name, Some(&self.config.data_dir.join("bundles")))
            .map_err(|err| {
                Refusal::internal(format!(
                    "refusing to write an inconsistent record of the app `{}`: {err}",
                    record.name
                ))
            })?;
        persist::write_json(&self.record_path(&record.name), record)
            .map_err(|err| Refusal::internal(err.to_string()))
    }

    pub(super) fn remove_bundles(&self, bundles: Vec<String>) {
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
}

/// Renames `folder` aside (to `.deleted-NAME-SUFFIX` beside it: not an app or tenant name,
/// since those never start with a dot, so startup removes it if a crash comes first) and
/// removes it in the background. A folder already gone is done: a delete elsewhere (the
/// tenant's, an app's) may have taken it first.
fn remove_aside(folder: &Path, what: &str) {
    let Some(name) = folder.file_name() else {
        return;
    };
    let aside = folder.with_file_name(format!(
        ".deleted-{}-{}",
        name.to_string_lossy(),
        unique_suffix()
    ));
    match std::fs::rename(folder, &aside) {
        Ok(()) => {
            tokio::task::spawn_blocking(move || std::fs::remove_dir_all(aside));
        }
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
        Err(err) => tracing::error!(
            "cannot remove the files of {what} ({}): {err}",
            folder.display()
        ),
    }
}

pub(super) fn too_many_apps(count: u32) -> Refusal {
    Refusal::new(
        ErrorCode::QuotaExceeded,
        format!(
            "quota max_apps: the tenant has {count} apps, the most it may have; delete one \
             (`skiff apps delete NAME`) or ask the operator for more"
        ),
    )
}

/// The disk quota, as the cluster's swap found it: the versions of the tenant's apps on every
/// host, with this host's files and key-value data, would not fit.
pub(super) fn too_much_disk(kept: u64, others: u64, room: u64, quotas: &Quotas) -> Refusal {
    Refusal::new(
        ErrorCode::QuotaExceeded,
        format!(
            "quota max_disk_bytes: this app's versions kept for rollbacks take {} and the \
             tenant's other apps' versions {} (with deploys just made through other hosts), \
             more than the {} of the quota of {} that files and key-value data leave; delete \
             apps you no longer need (`skiff apps delete NAME`) or ask the operator for more",
            format_size(kept),
            format_size(others),
            format_size(room),
            format_size(quotas.max_disk_bytes)
        ),
    )
}

pub(super) fn too_much_code(code_bytes: u64, others: u64, quotas: &Quotas) -> Refusal {
    Refusal::new(
        ErrorCode::QuotaExceeded,
        format!(
            "quota max_code_bytes: this app's components are {} and the tenant's other apps \
             {}, over the quota of {}; make the components smaller or ask the operator for more",
            format_size(code_bytes),
            format_size(others),
            format_size(quotas.max_code_bytes)
        ),
    )
}

pub(super) fn name_taken(name: &str) -> Refusal {
    Refusal::new(
        ErrorCode::Conflict,
        format!("the app name `{name}` is taken; deploy under another with --name"),
    )
}

/// `record` with `version` added (numbered) and live, and the versions past those kept pruned;
/// returns it and the bundles of the pruned versions.
pub(super) fn with_version(
    mut record: AppRecord,
    version: &mut VersionRecord,
    keep: usize,
) -> (AppRecord, Vec<String>) {
    version.version = record.next_version;
    record.next_version += 1;
    record.live = version.version;
    record.versions.push(version.clone());
    let dropped = prune(&mut record, keep);
    (record, dropped)
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
