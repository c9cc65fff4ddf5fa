//! Deploys from a registry: the server pulls the reference (from a registry its operator
//! allows), packs the pulled app as an upload would arrive, and deploys it through the very
//! same path as an upload, recording the reference and digest in the version.
//!
//! The server pulls with its operator's registry credentials (docker's config file of the
//! process), so a tenant can deploy whatever those credentials can read in an allowed
//! registry. `RegistryPolicy` entries may therefore name a repository prefix
//! (`ghcr.io/acme/public`), not only a host.

use std::sync::Arc;

use skiff_oci::{Cache, ImageRef, Local, OciError, RegistryOptions};

use crate::api::{self, AppInfo, ErrorCode, VersionSource};
use crate::refusal::{Refusal, Refused};
use crate::tenants::Tenant;

use super::Platform;

/// Which registries tenants may deploy from, and how to reach them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RegistryPolicy {
    /// `HOST[:PORT]`, or `HOST[:PORT]/PREFIX` for the repositories under a prefix. Empty:
    /// deploys from registries are refused.
    pub allowed: Vec<String>,
    /// Registries reached over plain HTTP or with unverified certificates (loopback ones may
    /// use plain HTTP without being named).
    pub insecure: Vec<String>,
}

impl RegistryPolicy {
    pub fn new(allowed: Vec<String>, insecure: Vec<String>) -> Self {
        RegistryPolicy { allowed, insecure }
    }

    /// Whether `reference` is in an allowed registry (and under an allowed prefix).
    fn allows(&self, reference: &ImageRef) -> bool {
        self.allowed.iter().any(|entry| {
            let (host, prefix) = match entry.split_once('/') {
                Some((host, prefix)) => (host, Some(prefix.trim_end_matches('/'))),
                None => (entry.as_str(), None),
            };
            host.eq_ignore_ascii_case(reference.registry())
                && prefix.is_none_or(|prefix| {
                    let repository = reference.repository();
                    repository == prefix
                        || repository
                            .strip_prefix(prefix)
                            .is_some_and(|rest| rest.starts_with('/'))
                })
        })
    }
}

impl Platform {
    /// Pulls `request.from` and deploys it as app `request.name` (default: the name in its
    /// manifest) of `tenant`. Everything after the pull is [`Platform::deploy`].
    pub async fn deploy_from(
        &self,
        tenant: &Arc<Tenant>,
        request: api::DeployFrom,
    ) -> Refused<(AppInfo, bool)> {
        let reference = ImageRef::parse(&request.from)
            .map_err(|e| Refusal::new(ErrorCode::BadRequest, e.to_string()))?;
        let policy = &self.config.registries;
        if !policy.allows(&reference) {
            let allowed = if policy.allowed.is_empty() {
                "this server deploys from no registry".to_string()
            } else {
                format!(
                    "this server deploys only from {}",
                    policy.allowed.join(", ")
                )
            };
            return Err(Refusal::new(
                ErrorCode::Forbidden,
                format!(
                    "{reference}: {allowed}; push the app there, or ask the operator to start \
                     `skiff server` with --allow-registry {}",
                    reference.registry()
                ),
            ));
        }
        if let Some(name) = &request.name {
            api::check_name("app", name)?;
        }
        let options = RegistryOptions::new()
            .insecure(policy.insecure.iter().cloned())
            .max_pull_bytes(self.config.max_bundle_bytes)
            .always_ask_registry(true);
        let cache = Cache::new(self.config.data_dir.join("oci"));
        let timeout = self.config.upload_timeout;
        let pulled = tokio::time::timeout(timeout, skiff_oci::pull(&reference, &cache, &options))
            .await
            .map_err(|_| {
                Refusal::new(
                    ErrorCode::RegistryFailed,
                    format!(
                        "{reference}: the pull took longer than this server waits ({}); try \
                         again, or ask the operator for a longer --upload-timeout",
                        humantime::format_duration(timeout)
                    ),
                )
            })?
            .map_err(|e| pull_refusal(&reference, e))?;
        let manifest = match pulled.local {
            Local::App { manifest } => manifest,
            Local::Component { .. } => {
                return Err(Refusal::new(
                    ErrorCode::InvalidBundle,
                    format!(
                        "{reference} is a single component; a server deploys apps: push the \
                         folder with its skiff.toml (`skiff push {reference} FOLDER`)"
                    ),
                ));
            }
        };
        let given = request.name.clone();
        let (name, bundle) = tokio::task::spawn_blocking(move || {
            let refused = |e: crate::bundle::BundleError| match e {
                crate::bundle::BundleError::Manifest(report) => {
                    Refusal::new(ErrorCode::InvalidManifest, report.to_string())
                }
                e => Refusal::new(ErrorCode::InvalidBundle, e.to_string()),
            };
            let plan = crate::bundle::plan(&manifest).map_err(refused)?;
            let name = given.unwrap_or_else(|| plan.app().name.clone());
            Ok::<_, Refusal>((name, plan.pack().map_err(refused)?.bytes))
        })
        .await
        .map_err(|e| Refusal::internal(format!("packing the pulled app stopped: {e}")))??;
        api::check_name("app", &name).map_err(|e| {
            Refusal::new(
                ErrorCode::BadRequest,
                format!("{e}; the pulled app's `[app] name` cannot be used: give a name"),
            )
        })?;
        let source = VersionSource {
            reference: request.from,
            digest: pulled.digest,
        };
        self.deploy(tenant, &name, bundle.into(), Some(source))
            .await
    }
}

/// The refusal a failed pull becomes: the registry's fault or the server's reach is a 502,
/// the tenant's reference or artifact a 4xx.
fn pull_refusal(reference: &ImageRef, error: OciError) -> Refusal {
    let code = match &error {
        OciError::NotFound { .. } => ErrorCode::NotFound,
        OciError::BadReference { .. } => ErrorCode::BadRequest,
        OciError::TooLarge { .. } => ErrorCode::PayloadTooLarge,
        OciError::NotSkiff { .. } | OciError::Invalid { .. } | OciError::Digest { .. } => {
            ErrorCode::InvalidBundle
        }
        OciError::Unreachable { .. }
        | OciError::Unauthorized { .. }
        | OciError::Registry { .. } => ErrorCode::RegistryFailed,
        _ => {
            tracing::error!("pulling {reference}: {error}");
            return Refusal::internal(format!("pulling {reference} failed on the server"));
        }
    };
    // "log in with `skiff registry login`" is the operator's fix on a server, not the
    // tenant's: say so.
    let message = match &error {
        OciError::Unauthorized { registry, .. } => format!(
            "{reference}: the registry {registry} refused this server's credentials; the \
             operator logs the server in (`skiff registry login {registry}` as the user \
             that runs it)"
        ),
        _ => error.to_string(),
    };
    Refusal::new(code, message)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn the_policy_allows_registries_and_prefixes() {
        let policy = RegistryPolicy::new(
            vec!["localhost:5000".into(), "ghcr.io/acme/public".into()],
            vec![],
        );
        let allows = |r: &str| policy.allows(&ImageRef::parse(r).unwrap());
        assert!(allows("localhost:5000/anything/at:all"));
        assert!(allows("ghcr.io/acme/public:v1"));
        assert!(allows("ghcr.io/acme/public/shop:v1"));
        assert!(!allows("ghcr.io/acme/publicity:v1"));
        assert!(!allows("ghcr.io/acme/private/shop:v1"));
        assert!(!allows("localhost:5001/x:v1"));
        assert!(!RegistryPolicy::default().allows(&ImageRef::parse("localhost:5000/x").unwrap()));
    }
}
