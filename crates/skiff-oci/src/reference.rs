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
        // Parsed by hand to the distribution grammar rather than with `oci_client`'s parser:
        // that one compiles a large regex first, which cost every `skiff up REF` 50 ms.
        let (name, digest) = match text.split_once('@') {
            Some((name, digest)) => (name, Some(digest)),
            None => (text, None),
        };
        let (registry, path) = name
            .split_once('/')
            .ok_or_else(|| bad("it has no repository"))?;
        if !valid_registry(registry) {
            return Err(bad("its registry is not HOST or HOST:PORT"));
        }
        let (repository, tag) = match path.rsplit_once(':') {
            Some((repository, tag)) if !tag.contains('/') => (repository, Some(tag)),
            _ => (path, None),
        };
        if repository.len() > 255 || !repository.split('/').all(valid_path_component) {
            return Err(bad(
                "its repository must be lower-case letters and digits, separated by `/`, `.`, \
                 `_`, `__` or dashes",
            ));
        }
        if let Some(tag) = tag
            && !valid_tag(tag)
        {
            return Err(bad(
                "its tag must be at most 128 letters, digits, `_`, `.` and `-`, not starting with \
                 `.` or `-`",
            ));
        }
        if let Some(digest) = digest
            && crate::cache::hex_of(digest).is_none()
        {
            return Err(bad(
                "its digest is not `sha256:` and 64 lowercase hex digits",
            ));
        }
        let (registry, repository) = (registry.to_string(), repository.to_string());
        let inner = match (tag, digest) {
            (Some(tag), Some(digest)) => oci_client::Reference::with_tag_and_digest(
                registry,
                repository,
                tag.to_string(),
                digest.to_string(),
            ),
            (None, Some(digest)) => {
                oci_client::Reference::with_digest(registry, repository, digest.to_string())
            }
            (Some(tag), None) => {
                oci_client::Reference::with_tag(registry, repository, tag.to_string())
            }
            (None, None) => oci_client::Reference::with_tag(registry, repository, "latest".into()),
        };
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

    /// `registry/repository`: where a blob is, whatever tag or digest named it.
    pub(crate) fn location(&self) -> String {
        format!("{}/{}", self.registry(), self.repository())
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

/// `host`, `host:port`, `[ipv6]` or `[ipv6]:port`.
fn valid_registry(registry: &str) -> bool {
    let valid_port = |port: &str| {
        !port.is_empty() && port.len() <= 5 && port.bytes().all(|b| b.is_ascii_digit())
    };
    if let Some(rest) = registry.strip_prefix('[') {
        let Some((ip, after)) = rest.split_once(']') else {
            return false;
        };
        return ip.parse::<std::net::Ipv6Addr>().is_ok()
            && (after.is_empty() || after.strip_prefix(':').is_some_and(valid_port));
    }
    let (host, port) = match registry.split_once(':') {
        Some((host, port)) => (host, Some(port)),
        None => (registry, None),
    };
    !host.is_empty()
        && host.split('.').all(|label| {
            !label.is_empty()
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
        && port.is_none_or(valid_port)
}

/// A repository path component: `[a-z0-9]+` runs joined by `.`, `_`, `__` or dashes.
fn valid_path_component(component: &str) -> bool {
    let bytes = component.as_bytes();
    let alnum = |b: &u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    if !bytes.first().is_some_and(alnum) || !bytes.last().is_some_and(alnum) {
        return false;
    }
    bytes.split(alnum).all(|separator| {
        matches!(separator, b"" | b"." | b"_" | b"__") || separator.iter().all(|&b| b == b'-')
    })
}

/// `[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}`.
fn valid_tag(tag: &str) -> bool {
    let bytes = tag.as_bytes();
    let word = |b: &u8| b.is_ascii_alphanumeric() || *b == b'_';
    bytes.first().is_some_and(word)
        && bytes.len() <= 128
        && bytes.iter().all(|b| word(b) || *b == b'.' || *b == b'-')
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
