//! Tenants and their tokens. A token is shown once, when its tenant is created; the server
//! keeps only its SHA-256, so a leaked data folder leaks no credential. Tokens are 256 random
//! bits, so a fast hash is the right one (there is nothing to brute-force), and looking a
//! hash up in a map reveals nothing useful about the token through timing.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use skiff_runtime::SharedPermits;
use subtle::ConstantTimeEq;
use tokio::sync::Semaphore;

use crate::api::Quotas;
use crate::persist::{self, PersistError};

/// What every tenant token starts with, so that one found in a log or a repository is easy to
/// recognise (and to scan for).
pub const TOKEN_PREFIX: &str = "skf_";

/// One tenant, as the server holds it.
pub struct Tenant {
    pub name: String,
    pub quotas: Quotas,
    /// Permits for the tenant's requests in flight, shared by all its apps (and held by the
    /// instances its apps keep idle for reuse).
    pub in_flight: Arc<SharedPermits>,
    /// One deploy of the tenant's at a time: a tenant with many slow uploads holds one of the
    /// host's upload slots, never all of them.
    pub deploying: Arc<Semaphore>,
    /// Set while the tenant's apps take more disk than its quota (see
    /// `Platform::check_disk_quotas`): its apps' writes are refused until it is under again.
    pub over_disk: Arc<AtomicBool>,
}

/// The tenants file: `DATA/tenants.json`.
#[derive(Default, Serialize, Deserialize)]
struct TenantsFile {
    tenants: Vec<TenantRecord>,
}

/// One tenant as written down: in `tenants.json`, or as the JSON of the cluster's state.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct TenantRecord {
    pub name: String,
    /// Hex SHA-256 of the token; empty once the token is revoked (no token hashes to it).
    pub token_sha256: String,
    pub quotas: Quotas,
    pub created_at: String,
}

impl TenantRecord {
    /// A new tenant's record and its token (shown once, never stored).
    pub fn create(name: &str, quotas: Quotas) -> Result<(TenantRecord, String), TenantsError> {
        let token = new_token()?;
        let record = TenantRecord {
            name: name.to_string(),
            token_sha256: token_hash(&token),
            quotas,
            created_at: persist::now_rfc3339(),
        };
        Ok((record, token))
    }

    /// Gives the tenant a new token, returned; the old one no longer hashes to this record.
    pub fn rotate(&mut self) -> Result<String, TenantsError> {
        let token = new_token()?;
        self.token_sha256 = token_hash(&token);
        Ok(token)
    }
}

/// Every tenant, by name and by token hash.
pub struct Tenants {
    /// `None` in a cluster, where the shared state holds the records and this is its copy.
    file: Option<PathBuf>,
    records: Vec<TenantRecord>,
    by_name: HashMap<String, Arc<Tenant>>,
    by_token: HashMap<String, String>,
}

impl Tenants {
    /// Reads `DATA/tenants.json`; a missing file is no tenants yet.
    pub fn open(data_dir: &Path) -> Result<Tenants, TenantsError> {
        let file = data_dir.join("tenants.json");
        let stored: TenantsFile = persist::read_json(&file)?.unwrap_or_default();
        let mut tenants = Tenants::in_memory();
        tenants.file = Some(file);
        for record in stored.tenants {
            tenants.index(record);
        }
        Ok(tenants)
    }

    /// No tenants yet, and none written anywhere: a cluster host's copy of the shared state.
    pub fn in_memory() -> Tenants {
        Tenants {
            file: None,
            records: Vec::new(),
            by_name: HashMap::new(),
            by_token: HashMap::new(),
        }
    }

    /// Makes `records` the tenants, as the shared state holds them now. A tenant that stays
    /// keeps its permits (requests in flight hold them), resized to its quota; returns the
    /// names of the tenants that are new and of those that are gone.
    pub(crate) fn sync(&mut self, records: Vec<TenantRecord>) -> (Vec<String>, Vec<String>) {
        let mut by_name = HashMap::new();
        let mut added = Vec::new();
        for record in &records {
            let tenant = match self.by_name.get(&record.name) {
                Some(old) if old.quotas == record.quotas => old.clone(),
                Some(old) => {
                    old.in_flight.resize(record.quotas.max_in_flight);
                    Arc::new(Tenant {
                        name: record.name.clone(),
                        quotas: record.quotas.clone(),
                        in_flight: old.in_flight.clone(),
                        deploying: old.deploying.clone(),
                        over_disk: old.over_disk.clone(),
                    })
                }
                None => {
                    added.push(record.name.clone());
                    new_tenant(record)
                }
            };
            by_name.insert(record.name.clone(), tenant);
        }
        let removed = self
            .by_name
            .keys()
            .filter(|name| !by_name.contains_key(*name))
            .cloned()
            .collect();
        self.by_token = records
            .iter()
            .filter(|r| !r.token_sha256.is_empty())
            .map(|r| (r.token_sha256.clone(), r.name.clone()))
            .collect();
        self.by_name = by_name;
        self.records = records;
        (added, removed)
    }

    fn index(&mut self, record: TenantRecord) {
        self.by_name
            .insert(record.name.clone(), new_tenant(&record));
        if !record.token_sha256.is_empty() {
            self.by_token
                .insert(record.token_sha256.clone(), record.name.clone());
        }
        self.records.push(record);
    }

    /// Writes `records` as the tenants file, then makes them the ones served: a change that
    /// cannot be written down is not made.
    fn replace(&mut self, records: Vec<TenantRecord>) -> Result<(), TenantsError> {
        self.write(&records)?;
        self.by_token = records
            .iter()
            .filter(|r| !r.token_sha256.is_empty())
            .map(|r| (r.token_sha256.clone(), r.name.clone()))
            .collect();
        self.records = records;
        Ok(())
    }

    /// The records with the one named `name` changed by `change`; `None` if there is none.
    fn changed(
        &self,
        name: &str,
        change: impl FnOnce(&mut TenantRecord),
    ) -> Option<Vec<TenantRecord>> {
        let mut records = self.records.clone();
        change(records.iter_mut().find(|r| r.name == name)?);
        Some(records)
    }

    fn write(&self, records: &[TenantRecord]) -> Result<(), TenantsError> {
        if let Some(file) = &self.file {
            persist::write_json(
                file,
                &TenantsFile {
                    tenants: records.to_vec(),
                },
            )?;
        }
        Ok(())
    }

    /// Gives the tenant a new token and returns it; the old one stops working at once.
    /// `None` if there is no such tenant.
    pub fn rotate_token(&mut self, name: &str) -> Result<Option<String>, TenantsError> {
        let mut token = String::new();
        let mut failed = None;
        let Some(records) = self.changed(name, |r| match r.rotate() {
            Ok(new) => token = new,
            Err(err) => failed = Some(err),
        }) else {
            return Ok(None);
        };
        if let Some(err) = failed {
            return Err(err);
        }
        self.replace(records)?;
        Ok(Some(token))
    }

    /// Takes the tenant's token away: no call is made as it until a new one is rotated in.
    /// Its apps keep serving. `false` if there is no such tenant.
    pub fn revoke_token(&mut self, name: &str) -> Result<bool, TenantsError> {
        let Some(records) = self.changed(name, |r| r.token_sha256.clear()) else {
            return Ok(false);
        };
        self.replace(records)?;
        Ok(true)
    }

    /// Sets the tenant's quotas and returns it as it is now. Its apps take the new in-flight
    /// ceiling at once (the same permits are resized); the other quotas apply to the next
    /// deploy. `None` if there is no such tenant.
    pub fn set_quotas(
        &mut self,
        name: &str,
        quotas: Quotas,
    ) -> Result<Option<Arc<Tenant>>, TenantsError> {
        let Some(old) = self.by_name.get(name).cloned() else {
            return Ok(None);
        };
        let Some(records) = self.changed(name, |r| r.quotas = quotas.clone()) else {
            return Ok(None);
        };
        self.replace(records)?;
        old.in_flight.resize(quotas.max_in_flight);
        let tenant = Arc::new(Tenant {
            name: name.to_string(),
            quotas,
            in_flight: old.in_flight.clone(),
            deploying: old.deploying.clone(),
            over_disk: old.over_disk.clone(),
        });
        self.by_name.insert(name.to_string(), tenant.clone());
        Ok(Some(tenant))
    }

    /// Removes the tenant; its token stops working at once. `false` if there is none.
    pub fn remove(&mut self, name: &str) -> Result<bool, TenantsError> {
        if !self.by_name.contains_key(name) {
            return Ok(false);
        }
        let records = self
            .records
            .iter()
            .filter(|r| r.name != name)
            .cloned()
            .collect();
        self.replace(records)?;
        self.by_name.remove(name);
        Ok(true)
    }

    /// Creates a tenant and returns its token, or `None` if the name is taken.
    pub fn create(&mut self, name: &str, quotas: Quotas) -> Result<Option<String>, TenantsError> {
        if self.by_name.contains_key(name) {
            return Ok(None);
        }
        let (record, token) = TenantRecord::create(name, quotas)?;
        let mut records = self.records.clone();
        records.push(record.clone());
        self.write(&records)?;
        self.index(record);
        Ok(Some(token))
    }

    pub fn by_token(&self, token: &str) -> Option<Arc<Tenant>> {
        let name = self.by_token.get(&token_hash(token))?;
        self.by_name.get(name).cloned()
    }

    pub fn get(&self, name: &str) -> Option<Arc<Tenant>> {
        self.by_name.get(name).cloned()
    }

    /// Every tenant, by name.
    pub fn all(&self) -> Vec<Arc<Tenant>> {
        let mut all: Vec<_> = self.by_name.values().cloned().collect();
        all.sort_by(|a, b| a.name.cmp(&b.name));
        all
    }
}

/// Why the tenants could not be read or changed.
#[derive(Debug, thiserror::Error)]
pub enum TenantsError {
    #[error(transparent)]
    Persist(#[from] PersistError),
    #[error("no randomness for a token: {0}")]
    NoRandomness(getrandom::Error),
}

fn new_tenant(record: &TenantRecord) -> Arc<Tenant> {
    Arc::new(Tenant {
        name: record.name.clone(),
        quotas: record.quotas.clone(),
        in_flight: SharedPermits::new(record.quotas.max_in_flight),
        deploying: Arc::new(Semaphore::new(1)),
        over_disk: Arc::new(AtomicBool::new(false)),
    })
}

/// 256 random bits from the operating system, hex-encoded behind [`TOKEN_PREFIX`].
fn new_token() -> Result<String, TenantsError> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(TenantsError::NoRandomness)?;
    Ok(format!("{TOKEN_PREFIX}{}", hex(&bytes)))
}

pub fn token_hash(token: &str) -> String {
    hex(&Sha256::digest(token.as_bytes()))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Compares two secrets in time that does not depend on where they differ (nor on their
/// lengths: the digests are compared, in constant time).
pub fn same_secret(a: &str, b: &str) -> bool {
    let (a, b) = (Sha256::digest(a.as_bytes()), Sha256::digest(b.as_bytes()));
    a.as_slice().ct_eq(b.as_slice()).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_stored_hashed_and_survive_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let mut tenants = Tenants::open(dir.path()).unwrap();
        let token = tenants.create("acme", Quotas::default()).unwrap().unwrap();
        assert!(token.starts_with(TOKEN_PREFIX) && token.len() == TOKEN_PREFIX.len() + 64);
        assert!(tenants.create("acme", Quotas::default()).unwrap().is_none());

        let stored = std::fs::read_to_string(dir.path().join("tenants.json")).unwrap();
        assert!(
            !stored.contains(&token),
            "the token itself is never written"
        );
        assert!(stored.contains(&token_hash(&token)));

        let reopened = Tenants::open(dir.path()).unwrap();
        assert_eq!(reopened.by_token(&token).unwrap().name, "acme");
        assert!(reopened.by_token("skf_wrong").is_none());
        assert!(reopened.by_token(&token[..token.len() - 1]).is_none());
    }

    #[tokio::test]
    async fn rotated_and_revoked_tokens_stop_working_and_stay_so_after_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let mut tenants = Tenants::open(dir.path()).unwrap();
        let first = tenants.create("acme", Quotas::default()).unwrap().unwrap();
        let second = tenants.rotate_token("acme").unwrap().unwrap();
        assert!(tenants.by_token(&first).is_none());
        assert_eq!(tenants.by_token(&second).unwrap().name, "acme");
        assert!(tenants.rotate_token("nobody").unwrap().is_none());

        assert!(tenants.revoke_token("acme").unwrap());
        assert!(tenants.by_token(&second).is_none());
        // A revoked token's empty hash is matched by no token at all.
        assert!(tenants.by_token("").is_none());
        let reopened = Tenants::open(dir.path()).unwrap();
        assert!(reopened.by_token(&second).is_none());
        assert!(reopened.get("acme").is_some());

        let quotas = Quotas {
            max_in_flight: 3,
            ..Quotas::default()
        };
        let changed = tenants.set_quotas("acme", quotas.clone()).unwrap().unwrap();
        assert_eq!(changed.quotas, quotas);
        assert_eq!(changed.in_flight.available(), 3);
        assert_eq!(
            Tenants::open(dir.path())
                .unwrap()
                .get("acme")
                .unwrap()
                .quotas,
            quotas
        );

        assert!(tenants.remove("acme").unwrap());
        assert!(tenants.get("acme").is_none());
        assert!(Tenants::open(dir.path()).unwrap().get("acme").is_none());
    }

    #[test]
    fn secrets_compare_whole() {
        assert!(same_secret("abc", "abc"));
        assert!(!same_secret("abc", "abd"));
        assert!(!same_secret("abc", "abcd"));
    }
}
