//! What tenants see of their apps: the list, one app's versions, components and limits, its logs.
use std::path::Path;
use std::sync::Arc;

use skiff_runtime::Runtime;

use super::{AppEntry, Platform};
use crate::api::{AppInfo, AppStatus, AppSummary, ComponentInfo, LimitsInfo, VersionInfo};
use crate::logs::LogHub;
use crate::records::AppRecord;
use crate::refusal::{Refusal, Refused};
use crate::tenants::Tenant;

impl Platform {
    pub(super) fn entry_of(&self, tenant: &Tenant, name: &str) -> Refused<Arc<AppEntry>> {
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

    pub(super) fn info(&self, entry: &AppEntry) -> Refused<AppInfo> {
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
                    source: v.source.clone(),
                })
                .collect(),
            cluster: None,
            schedules: Vec::new(),
            consumers: Vec::new(),
        })
    }
}

pub(super) fn component_info(
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
