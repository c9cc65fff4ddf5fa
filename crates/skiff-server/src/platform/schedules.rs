//! Deployed apps' schedules on this host. Once a second the scheduler is brought in line
//! with the index: every app whose live version has schedules is kept loaded (a schedule does
//! not wait for a request) and its schedules run; a redeploy or rollback makes another
//! version live, whose schedules replace the old ones; a deleted app, or one whose tenant is
//! gone, stops. In a cluster every host runs every app's schedules, and the shared leases
//! decide which host runs each due time.
use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use skiff_triggers::{RunLeases, Scheduler};

use super::Platform;
use crate::api::ScheduleInfo;
use crate::tenants::Tenant;

/// How often the scheduler is brought in line with the deployed apps: how long after a
/// deploy, rollback or delete its schedules change.
const SYNC_PERIOD: Duration = Duration::from_secs(1);

impl Platform {
    /// Runs the schedules of every deployed app, taking each due time's lease from `leases`,
    /// until aborted.
    pub async fn run_schedules(self: Arc<Self>, leases: Arc<dyn RunLeases>) {
        let host = self
            .cluster
            .as_ref()
            .map_or_else(|| "local".to_string(), |c| c.host_id.clone());
        let scheduler = Scheduler::new(host, leases, Some(self.metrics.schedules.clone()));
        let scheduler = self.scheduler.get_or_init(|| scheduler).clone();
        loop {
            self.sync_schedules(&scheduler).await;
            tokio::time::sleep(SYNC_PERIOD).await;
        }
    }

    /// Stops every schedule (the host is shutting down).
    pub(crate) fn stop_schedules(&self) {
        if let Some(scheduler) = self.scheduler.get() {
            for (tenant, app) in scheduler.apps() {
                // Nothing to forget: only this host stops.
                let scheduler = scheduler.clone();
                tokio::spawn(async move { scheduler.remove_app(&tenant, &app, false).await });
            }
        }
    }

    async fn sync_schedules(&self, scheduler: &Arc<Scheduler>) {
        // A cluster host that has not read the shared state yet knows of no app.
        if !self.is_ready() {
            return;
        }
        let apps = self.apps.load_full();
        let mut running = HashSet::new();
        for entry in apps.values() {
            let scheduled = {
                let record = entry.record();
                record
                    .live_version()
                    .ok()
                    .and_then(|v| v.app.as_ref())
                    .is_some_and(|app| !app.schedules.is_empty())
            };
            if !scheduled {
                continue;
            }
            // Loads it if idle, and counts as a use, so it is not unloaded while scheduled.
            match self.serve(&entry.name).await {
                Some(Ok(app)) => {
                    scheduler.set_app(&entry.tenant.name, app);
                    running.insert((entry.tenant.name.clone(), entry.name.clone()));
                }
                Some(Err(refusal)) => {
                    tracing::warn!(app = %entry.name, "cannot load the app to run its schedules: {refusal}");
                }
                None => {}
            }
        }
        for (tenant, name) in scheduler.apps() {
            if !running.contains(&(tenant.clone(), name.clone())) {
                // Deleted (or its tenant deleted): its results go too. Still deployed but no
                // longer scheduled (a redeploy dropped its schedules): they are kept.
                let deleted = apps.get(&name).is_none_or(|e| e.tenant.name != tenant);
                scheduler.remove_app(&tenant, &name, deleted).await;
            }
        }
    }

    /// What `apps inspect` shows of the schedules of `tenant`'s app `name` (its live version):
    /// next due times and last results. Empty if it has none, or is not the tenant's.
    pub async fn schedules_of(&self, tenant: &Tenant, name: &str) -> Vec<ScheduleInfo> {
        let Ok(entry) = self.entry_of(tenant, name) else {
            return Vec::new();
        };
        let app = {
            let record = entry.record();
            match record.live_version().ok().and_then(|v| v.app.clone()) {
                Some(app) if !app.schedules.is_empty() => app,
                _ => return Vec::new(),
            }
        };
        match self.scheduler.get() {
            Some(scheduler) => scheduler.inspect(&tenant.name, &app).await,
            None => Vec::new(),
        }
    }
}
