//! A cluster's deployed bundles in an OCI registry instead of Redis (`skiff server --cluster
//! … --cluster-bundles REGISTRY/REPOSITORY`): Redis then holds only records, which are small,
//! and the registry, built to hold and serve blobs, holds the code. Each bundle is an artifact
//! tagged with its id (see `skiff_oci::push_bundle`).

use std::time::Duration;

use skiff_oci::{ImageRef, OciError, RegistryOptions};
use skiff_server::cluster::{BundleStore, SharedError};

/// How long one registry call may take before the host gives up on it.
const REGISTRY_TIMEOUT: Duration = Duration::from_secs(60);

/// Bundles in one repository of a registry, reached with the host's registry logins.
pub struct RegistryBundles {
    repository: ImageRef,
    options: RegistryOptions,
}

impl RegistryBundles {
    /// Bundles in `repository` (`HOST[:PORT]/PATH`, no tag), pulled at most `max_bytes` each;
    /// `insecure` registries may be reached over plain HTTP or unverified TLS.
    pub fn new(
        repository: &str,
        max_bytes: u64,
        insecure: Vec<String>,
    ) -> Result<RegistryBundles, String> {
        let parsed = ImageRef::parse(repository).map_err(|err| err.to_string())?;
        // The parse gives a reference without tag `:latest`: compare with what was written.
        if format!("{}/{}", parsed.registry(), parsed.repository()) != repository {
            return Err(format!(
                "`{repository}` names a tag or digest; give a repository (HOST[:PORT]/PATH): \
                 each bundle is tagged with its id there"
            ));
        }
        Ok(RegistryBundles {
            repository: parsed,
            options: RegistryOptions::new()
                .insecure(insecure)
                .max_pull_bytes(max_bytes)
                .always_ask_registry(true),
        })
    }

    fn tagged(&self, id: &str) -> Result<ImageRef, SharedError> {
        let text = format!(
            "{}/{}:{id}",
            self.repository.registry(),
            self.repository.repository()
        );
        ImageRef::parse(&text)
            .map_err(|err| SharedError::Invalid(format!("bundle id `{id}`: {err}")))
    }

    /// `call`, or unavailable once it has taken too long.
    async fn timed<T>(
        &self,
        call: impl Future<Output = Result<T, OciError>>,
    ) -> Result<Result<T, OciError>, SharedError> {
        tokio::time::timeout(REGISTRY_TIMEOUT, call)
            .await
            .map_err(|_| {
                SharedError::Unavailable(format!(
                    "{} did not answer within {}s",
                    self.location(),
                    REGISTRY_TIMEOUT.as_secs()
                ))
            })
    }
}

/// A registry that cannot be reached, or refuses, is unavailable for now (the host retries,
/// and refuses changes meanwhile); a reply it cannot use is invalid.
fn registry_error(err: OciError) -> SharedError {
    match err {
        OciError::Unreachable { .. }
        | OciError::Unauthorized { .. }
        | OciError::Registry { .. } => SharedError::Unavailable(err.to_string()),
        err => SharedError::Invalid(err.to_string()),
    }
}

#[async_trait::async_trait]
impl BundleStore for RegistryBundles {
    fn location(&self) -> String {
        format!("the bundle registry {}", self.repository)
    }

    async fn put_bundle(&self, id: &str, packed: &[u8]) -> Result<(), SharedError> {
        let reference = self.tagged(id)?;
        let packed = bytes::Bytes::copy_from_slice(packed);
        self.timed(skiff_oci::push_bundle(&reference, packed, &self.options))
            .await?
            .map_err(registry_error)
    }

    async fn bundle(&self, id: &str) -> Result<Option<Vec<u8>>, SharedError> {
        let reference = self.tagged(id)?;
        match self
            .timed(skiff_oci::pull_bundle(&reference, &self.options))
            .await?
        {
            Ok(packed) => Ok(Some(packed)),
            Err(OciError::NotFound { .. }) => Ok(None),
            Err(err) => Err(registry_error(err)),
        }
    }

    async fn remove_bundles(&self, ids: &[String]) -> Result<(), SharedError> {
        let mut first_error = None;
        for id in ids {
            let reference = self.tagged(id)?;
            let removed = self
                .timed(skiff_oci::delete_bundle(&reference, &self.options))
                .await
                .and_then(|result| result.map_err(registry_error));
            if let Err(err) = removed {
                first_error.get_or_insert(err);
            }
        }
        first_error.map_or(Ok(()), Err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bundles_go_to_a_repository_never_a_tag() {
        let store =
            RegistryBundles::new("registry.internal:5000/skiff/bundles", 1 << 20, vec![]).unwrap();
        assert_eq!(
            store.tagged("hello-0a1b").unwrap().to_string(),
            "registry.internal:5000/skiff/bundles:hello-0a1b"
        );
        for bad in [
            "registry.internal:5000/skiff/bundles:v1",
            "registry.internal:5000/skiff/bundles@sha256:0000000000000000000000000000000000000000000000000000000000000000",
            "skiff/bundles",
        ] {
            assert!(RegistryBundles::new(bad, 1 << 20, vec![]).is_err(), "{bad}");
        }
    }
}
