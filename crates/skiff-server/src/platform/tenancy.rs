//! Tenants: creating them, their tokens and quotas, and deleting them with their apps.
use std::collections::HashMap;
use std::sync::Arc;

use super::{AppEntry, Platform, SetAside, lock, no_tenant};
use crate::api::{self, ErrorCode, Quotas};
use crate::refusal::{Refusal, Refused};
use crate::tenants::Tenant;

impl Platform {
    pub fn tenant_by_token(&self, token: &str) -> Option<Arc<Tenant>> {
        self.tenants_ref().by_token(token)
    }

    pub fn tenant(&self, name: &str) -> Option<Arc<Tenant>> {
        self.tenants_ref().get(name)
    }

    /// Creates a tenant; its token is returned, and never again. Apps of a tenant of this name
    /// that were kept aside (its record was missing from `tenants.json`) are served again.
    pub fn create_tenant(&self, name: &str, quotas: Quotas) -> Refused<String> {
        api::check_name("tenant", name)?;
        let _changes = lock(&self.changes);
        let created = self
            .tenants_mut()
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
            .tenants_mut()
            .rotate_token(name)
            .map_err(Refusal::internal)?;
        tracing::info!(tenant = name, "token rotated");
        rotated.ok_or_else(|| no_tenant(name))
    }

    /// Takes tenant `name`'s token away; its apps keep serving.
    pub fn revoke_token(&self, name: &str) -> Refused<()> {
        let _changes = lock(&self.changes);
        let revoked = self
            .tenants_mut()
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
        let mut tenants = self.tenants_mut();
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
            self.tenants_mut().remove(name).map_err(Refusal::internal)?;
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
        let tenants = self.tenants_ref().all();
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
}
