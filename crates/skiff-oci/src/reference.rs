//! Registry references as skiff accepts them: always with the registry's host, so a reference
//! can never be mistaken for a folder, nor a folder name quietly sent to Docker Hub.

use std::fmt;

use crate::error::OciError;

/// `HOST[:PORT]/REPOSITORY[:TAG][@DIGEST]`, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageRef {
    inner: oci_client::Reference,
}

impl ImageRef {
    /// Parses `text`; the registry host must be explicit (`localhost:5000/app`,
    /// `ghcr.io/org/app:v1`), and a reference with neither tag nor digest means `:latest`.
    pub fn parse(text: &str) -> Result<Self, OciError> {
        let bad = |reason: &str| OciError::BadReference {
            reference: text.to_string(),
            reason: reason.to_string(),
        };
        if !names_a_registry(text) {
            return Err(bad(
                "it does not start with a registry host (a name with a dot or a port, or \
                 localhost)",
            ));
        }
        let inner = oci_client::Reference::try_from(text).map_err(|e| bad(&e.to_string()))?;
        if let Some(digest) = inner.digest()
            && crate::cache::hex_of(digest).is_none()
        {
            return Err(bad(
                "its digest is not `sha256:` and 64 lowercase hex digits",
            ));
        }
        Ok(ImageRef { inner })
    }

    /// The same repository with `digest` pinned (the tag dropped).
    pub fn with_digest(&self, digest: &str) -> Self {
        ImageRef {
            inner: oci_client::Reference::with_digest(
                self.registry().to_string(),
                self.repository().to_string(),
                digest.to_string(),
            ),
        }
    }

    /// `host[:port]` as written.
    pub fn registry(&self) -> &str {
        self.inner.registry()
    }

    pub fn repository(&self) -> &str {
        self.inner.repository()
    }

    pub fn tag(&self) -> Option<&str> {
        self.inner.tag()
    }

    pub fn digest(&self) -> Option<&str> {
        self.inner.digest()
    }

    pub(crate) fn as_oci(&self) -> &oci_client::Reference {
        &self.inner
    }

    /// Whether the registry is this machine (plain HTTP is then allowed without asking).
    pub fn is_loopback(&self) -> bool {
        is_loopback_host(self.registry())
    }
}

impl fmt::Display for ImageRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.registry(), self.repository())?;
        if let Some(tag) = self.tag() {
            write!(f, ":{tag}")?;
        }
        if let Some(digest) = self.digest() {
            write!(f, "@{digest}")?;
        }
        Ok(())
    }
}

/// Whether `text` starts with a registry host: `localhost`, or a first path segment with a dot
/// or a port (`ghcr.io/...`, `10.0.0.5:5000/...`, `[::1]:5000/...`). This is how docker tells
/// a registry from a Docker Hub namespace, and what the CLI uses to tell a reference from a
/// path.
pub fn names_a_registry(text: &str) -> bool {
    let Some((first, rest)) = text.split_once('/') else {
        return false;
    };
    !rest.is_empty() && (first == "localhost" || first.contains(['.', ':']))
}

/// Whether `host[:port]` is this machine.
pub fn is_loopback_host(registry: &str) -> bool {
    let host = match registry.strip_prefix('[') {
        Some(rest) => rest.split(']').next().unwrap_or(rest),
        None => registry.rsplit_once(':').map_or(registry, |(host, _)| host),
    };
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn references_name_their_registry() {
        let r = ImageRef::parse("localhost:5000/apps/hello").unwrap();
        assert_eq!(r.registry(), "localhost:5000");
        assert_eq!(r.repository(), "apps/hello");
        assert_eq!(r.tag(), Some("latest"));
        assert!(r.is_loopback());
        assert_eq!(r.to_string(), "localhost:5000/apps/hello:latest");
        let digest = format!("sha256:{}", "a".repeat(64));
        let pinned = r.with_digest(&digest);
        assert_eq!(
            pinned.to_string(),
            format!("localhost:5000/apps/hello@{digest}")
        );
        assert!(!ImageRef::parse("ghcr.io/org/app:v1").unwrap().is_loopback());
        assert!(
            ImageRef::parse("127.0.0.1:40000/x:y")
                .unwrap()
                .is_loopback()
        );

        for bad in [
            "hello",
            "hello:v1",
            "library/hello",
            "./app",
            "app/",
            "localhost:5000/UPPER",
        ] {
            assert!(ImageRef::parse(bad).is_err(), "{bad} parsed");
        }
        let err = ImageRef::parse("localhost:5000/x@sha256:../../etc").unwrap_err();
        assert!(
            err.to_string()
                .contains("localhost:5000/x@sha256:../../etc"),
            "{err}"
        );
    }
}
