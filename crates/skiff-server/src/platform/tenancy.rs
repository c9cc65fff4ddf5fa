//! Tenants: creating them, their tokens and quotas, and deleting them with their apps.
use std::collections::HashMap;
use std::sync::Arc;

use super::replica::unavailable;
use super::{AppEntry, Platform, SetAside, lock, no_tenant};
use crate::api::{self, ErrorCode, Quotas};
use crate::refusal::{Refusal, Refused};
use crate::tenants::{Tenant, TenantRecord, TenantsError};

/// Swaps tried before a change to a tenant gives up: each failed one means another host
/// changed the same tenant meanwhile.
const MAX_TENANT_SWAPS: usize = 8;

fn exists(name: &str) -> Refusal {
    Refusal::new(
        ErrorCode::Conflict,
        format!("a tenant named `{name}` exists already"),
    )
}

fn encode(record: &TenantRecord) -> Refused<Vec<u8>> {
    serde_json::to_vec(record).map_err(|err| Refusal::internal(format!("encoding a tenant: {err}")))
}

impl Platform {
    pub fn tenant_by_token(&self, token: &str) -> Option<Arc<Tenant>> {
        self.tenants_ref().by_token(token)
    }

    pub fn tenant(&self, name: &str) -> Option<Arc<Tenant>> {
        self.tenants_ref().get(name)
    }

    /// Creates a tenant; its token is returned, and never again. Apps of a tenant of this name
    /// that were kept aside (its record was missing from `tenants.json`) are served again.
    pub async fn create_tenant(&self, name: &str, quotas: Quotas) -> Refused<String> {
        api::check_name("tenant", name)?;
        if let Some(shared) = self.shared() {
            let (record, token) = TenantRecord::create(name, quotas).map_err(Refusal::internal)?;
            let created = shared
                .swap_tenant(name, None, Some(&encode(&record)?))
                .await
                .map_err(unavailable)?;
            if !created {
                return Err(exists(name));
            }
            self.sync_tenants_after_change().await;
            return Ok(token);
        }
        let _changes = lock(&self.changes);
        let created = self
            .tenants_mut()
            .create(name, quotas)
            .map_err(Refusal::internal)?;
        let token = created.ok_or_else(|| exists(name))?;
        self.adopt_orphans(name);
        Ok(token)
    }

    /// Serves again the apps kept aside for the tenant `name`, which exists now.
    pub(super) fn adopt_orphans(&self, name: &str) {
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
                let entry = AppEntry::new(record, tenant.clone(), self.log_hub(app, name));
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
    pub async fn rotate_token(&self, name: &str) -> Refused<String> {
        if self.shared().is_some() {
            let token = self
                .change_shared_tenant(name, |record| record.rotate().map(Some))
                .await?;
            tracing::info!(tenant = name, "token rotated in the cluster");
            return token.ok_or_else(|| no_tenant(name));
        }
        let _changes = lock(&self.changes);
        let rotated = self
            .tenants_mut()
            .rotate_token(name)
            .map_err(Refusal::internal)?;
        tracing::info!(tenant = name, "token rotated");
        rotated.ok_or_else(|| no_tenant(name))
    }

    /// Takes tenant `name`'s token away; its apps keep serving.
    pub async fn revoke_token(&self, name: &str) -> Refused<()> {
        if self.shared().is_some() {
            self.change_shared_tenant(name, |record| {
                record.token_sha256.clear();
                Ok(Some(()))
            })
            .await?;
            tracing::info!(tenant = name, "token revoked in the cluster");
            return Ok(());
        }
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
    pub async fn set_quotas(
        &self,
        name: &str,
        overrides: &api::QuotaOverrides,
    ) -> Refused<Arc<Tenant>> {
        if self.shared().is_some() {
            self.change_shared_tenant(name, |record| {
                record.quotas = overrides.apply(record.quotas.clone());
                Ok(Some(()))
            })
            .await?;
            return self.tenant(name).ok_or_else(|| no_tenant(name));
        }
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
        if self.shared().is_some() {
            // Its token stops working everywhere, and no host makes it a new app, before its
            // apps go.
            self.change_shared_tenant(name, |_| Ok(None::<()>)).await?;
        } else {
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
        self.remove_tenant_folder(name);
        tracing::info!(tenant = name, "tenant deleted");
        Ok(())
    }

    /// Changes tenant `name` in the cluster: `change` edits its record as the cluster holds it
    /// now, and returns `None` to remove it; then this host's tenants are read again. Returns
    /// what `change` returned the time its edit was swapped in.
    async fn change_shared_tenant<T>(
        &self,
        name: &str,
        change: impl Fn(&mut TenantRecord) -> Result<Option<T>, TenantsError>,
    ) -> Refused<Option<T>> {
        let Some(shared) = self.shared() else {
            return Err(Refusal::internal("not in a cluster"));
        };
        for _ in 0..MAX_TENANT_SWAPS {
            let Some(raw) = shared.tenant(name).await.map_err(unavailable)? else {
                return Err(no_tenant(name));
            };
            let mut record: TenantRecord = serde_json::from_slice(&raw).map_err(|err| {
                Refusal::internal(format!("the tenant `{name}` in the cluster: {err}"))
            })?;
            let outcome = change(&mut record).map_err(Refusal::internal)?;
            let new = match outcome {
                Some(_) => Some(encode(&record)?),
                None => None,
            };
            if shared
                .swap_tenant(name, Some(&raw), new.as_deref())
                .await
                .map_err(unavailable)?
            {
                self.sync_tenants_after_change().await;
                return Ok(outcome);
            }
        }
        Err(Refusal::new(
            ErrorCode::Conflict,
            format!("the tenant `{name}` was changed through other hosts meanwhile; try again"),
        ))
    }

    /// Reads the tenants again after a change this host made. The change is made whatever
    /// happens here (its caller must get the token it made): if Redis went away just now, the
    /// next read catches up.
    async fn sync_tenants_after_change(&self) {
        if let Err(err) = self.sync_tenants().await {
            tracing::warn!(
                "a tenant changed, but this host cannot read the tenants again yet: {err}"
            );
        }
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
