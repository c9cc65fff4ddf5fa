//! The data plane's side: the live version of an app, loaded (and its writable folders
//! seeded) on first request, unloaded when idle; and the periodic disk-quota check.
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use skiff_http::HttpApp;
use skiff_manifest::{App, format_size};

use super::{AppEntry, LiveVersion, Platform, lock};
use crate::api::ErrorCode;
use crate::appfiles;
use crate::records::VersionRecord;
use crate::refusal::{Refusal, Refused};

impl Platform {
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
    pub(super) async fn load_version(
        &self,
        entry: &AppEntry,
        version: &VersionRecord,
    ) -> Refused<Arc<HttpApp>> {
        self.fetch_bundle(&version.bundle).await?;
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
    pub(super) fn tenant_dir(&self, tenant: &str) -> PathBuf {
        self.config.data_dir.join("tenants").join(tenant)
    }

    pub(super) fn files_folder(&self, tenant: &str, name: &str) -> PathBuf {
        appfiles::app_folder(&self.config.data_dir, tenant, name).join("files")
    }

    /// Seeds the writable folders of `stored` that do not exist yet; returns those it made.
    pub(super) async fn seed(
        &self,
        stored: &App,
        bundle: &Path,
        files: &Path,
    ) -> Refused<Vec<PathBuf>> {
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
}

/// Returns the heap that unloaded apps freed to the operating system. glibc keeps freed
/// memory for reuse; after an unload sweep that is most of an idle app's footprint (measured:
/// a host with 1,000 idle apps went from 141 to 65 MiB).
#[allow(unsafe_code)]
fn give_back_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only releases free memory; it is safe to call at any time.
    unsafe {
        libc::malloc_trim(0);
    }
}
