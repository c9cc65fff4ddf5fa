//! Deployed apps' triggers on this host: schedules and queue consumers. Once a second they
//! are brought in line with the index: every app whose live version has schedules or
//! consumers is kept loaded (neither waits for a request) and they run; a redeploy or
//! rollback makes another version live, whose triggers replace the old ones; a deleted app,
//! or one whose tenant is gone, stops. In a cluster every host runs every app's triggers: the
//! shared leases decide which host runs each due time, and the hosts' consumers of a queue
//! share its messages (each goes to one of them).
use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use skiff_runtime::QueueSpace;
use skiff_triggers::{Consumers, RunLeases, Scheduler};

use super::Platform;
use crate::api::{ConsumerInfo, ScheduleInfo};
use crate::tenants::Tenant;

/// How often the triggers are brought in line with the deployed apps: how long after a
/// deploy, rollback or delete its schedules and consumers change.
const SYNC_PERIOD: Duration = Duration::from_secs(1);

impl Platform {
    /// Runs the schedules and queue consumers of every deployed app, taking each due time's
    /// lease from `leases`, until aborted.
    pub async fn run_triggers(self: Arc<Self>, leases: Arc<dyn RunLeases>) {
        let host = self
            .cluster
            .as_ref()
            .map_or_else(|| "local".to_string(), |c| c.host_id.clone());
        let scheduler = Scheduler::new(host.clone(), leases, Some(self.metrics.schedules.clone()));
        let scheduler = self.scheduler.get_or_init(|| scheduler).clone();
        let consumers = Consumers::new(host, Some(self.metrics.queues.clone()));
        let consumers = self.consumers.get_or_init(|| consumers).clone();
        loop {
            self.sync_triggers(&scheduler, &consumers).await;
            tokio::time::sleep(SYNC_PERIOD).await;
        }
    }

    /// Stops every schedule and consumer (the host is shutting down), and gives the queue
    /// handlers still running up to `grace` to finish and acknowledge their messages.
    pub(crate) async fn stop_triggers(&self, grace: Duration) {
        // First, so that a sync going on now starts nothing more.
        self.triggers_stopped.store(true, Ordering::Release);
        if let Some(scheduler) = self.scheduler.get() {
            for (tenant, app) in scheduler.apps() {
                // Nothing to forget: only this host stops.
                scheduler.remove_app(&tenant, &app, false).await;
            }
        }
        if let Some(consumers) = self.consumers.get() {
            consumers.stop(grace).await;
        }
    }

    async fn sync_triggers(&self, scheduler: &Arc<Scheduler>, consumers: &Arc<Consumers>) {
        // A cluster host that has not read the shared state yet knows of no app; one shutting
        // down starts nothing new.
        if !self.is_ready() || self.triggers_stopped.load(Ordering::Acquire) {
            return;
        }
        let apps = self.apps.load_full();
        let mut scheduled = HashSet::new();
        let mut consuming = HashSet::new();
        for entry in apps.values() {
            let (has_schedules, has_consumers) = {
                let record = entry.record();
                record
                    .live_version()
                    .ok()
                    .and_then(|v| v.app.as_ref())
                    .map_or((false, false), |app| {
                        (!app.schedules.is_empty(), !app.consumers.is_empty())
                    })
            };
            if !has_schedules && !has_consumers {
                continue;
            }
            // Loads it if idle, and counts as a use, so it is not unloaded while triggered.
            match self.serve(&entry.name).await {
                Some(Ok(app)) => {
                    let key = (entry.tenant.name.clone(), entry.name.clone());
                    if has_schedules {
                        scheduler.set_app(&entry.tenant.name, app.clone());
                        scheduled.insert(key.clone());
                    }
                    if has_consumers {
                        // A tenant's queues are its own, as for publishing.
                        let space = QueueSpace {
                            queues: self.queues.clone(),
                            owner: entry.tenant.name.clone(),
                        };
                        consumers.set_app(&entry.tenant.name, app, &space);
                        consuming.insert(key);
                    }
                }
                Some(Err(refusal)) => {
                    tracing::warn!(app = %entry.name, "cannot load the app to run its schedules and queue consumers: {refusal}");
                }
                None => {}
            }
        }
        let deleted =
            |tenant: &str, name: &str| apps.get(name).is_none_or(|e| e.tenant.name != tenant);
        for (tenant, name) in scheduler.apps() {
            if !scheduled.contains(&(tenant.clone(), name.clone())) {
                // Deleted (or its tenant deleted): its results go too. Still deployed but no
                // longer scheduled (a redeploy dropped its schedules): they are kept.
                scheduler
                    .remove_app(&tenant, &name, deleted(&tenant, &name))
                    .await;
            }
        }
        for (tenant, name) in consumers.apps() {
            if !consuming.contains(&(tenant.clone(), name.clone())) {
                consumers.remove_app(&tenant, &name, deleted(&tenant, &name));
            }
        }
    }

    /// The validated manifest of the live version of `tenant`'s app `name`, if it has one.
    fn live_manifest(&self, tenant: &Tenant, name: &str) -> Option<skiff_manifest::App> {
        let entry = self.entry_of(tenant, name).ok()?;
        let record = entry.record();
        record.live_version().ok().and_then(|v| v.app.clone())
    }

    /// What `apps inspect` shows of the queue consumers of `tenant`'s app `name` (its live
    /// version): each with how many messages its queue and its dead-letter queue hold. Empty if
    /// it has none, or is not the tenant's.
    pub async fn consumers_of(&self, tenant: &Tenant, name: &str) -> Vec<ConsumerInfo> {
        let Some(app) = self.live_manifest(tenant, name) else {
            return Vec::new();
        };
        if app.consumers.is_empty() {
            return Vec::new();
        }
        let space = QueueSpace {
            queues: self.queues.clone(),
            owner: tenant.name.clone(),
        };
        let depth = |queue: String| {
            let queues = space.queues.clone();
            async move { queues.depth(&queue).await.ok().map(|d| d.messages) }
        };
        let mut out = Vec::with_capacity(app.consumers.len());
        for consume in &app.consumers {
            out.push(ConsumerInfo {
                component: app
                    .components
                    .get(consume.component)
                    .map_or_else(String::new, |c| c.id.clone()),
                queue: consume.queue.clone(),
                path: consume.path.clone(),
                concurrency: consume.concurrency,
                batch: consume.batch,
                max_attempts: consume.max_attempts,
                retry_after_ms: u64::try_from(consume.retry_after.as_millis()).unwrap_or(u64::MAX),
                dead_letter: consume.dead_letter.clone(),
                messages: depth(space.queue(&consume.queue)).await,
                dead: depth(space.queue(&consume.dead_letter)).await,
            });
        }
        out
    }

    /// What `apps inspect` shows of the schedules of `tenant`'s app `name` (its live version):
    /// next due times and last results. Empty if it has none, or is not the tenant's.
    pub async fn schedules_of(&self, tenant: &Tenant, name: &str) -> Vec<ScheduleInfo> {
        let Some(app) = self.live_manifest(tenant, name) else {
            return Vec::new();
        };
        if app.schedules.is_empty() {
            return Vec::new();
        }
        match self.scheduler.get() {
            Some(scheduler) => scheduler.inspect(&tenant.name, &app).await,
            None => Vec::new(),
        }
    }
}
