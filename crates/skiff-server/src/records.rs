//! App records (`apps/NAME.json`): which versions of an app exist and which one is live, and
//! the rules a record must keep. A record is checked before it is written, so the server never
//! writes an inconsistent one, and when it is read, so that one damaged by hand, by a restored
//! backup or by a bug is set aside with an error naming it instead of taking the host down.

use std::collections::HashSet;
use std::path::Path;

use serde::{Deserialize, Serialize};
use skiff_manifest::App;

use crate::api::{ComponentInfo, RouteInfo, VersionSource};

/// `apps/NAME.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct AppRecord {
    pub name: String,
    pub tenant: String,
    pub live: u64,
    pub next_version: u64,
    /// Oldest first.
    pub versions: Vec<VersionRecord>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct VersionRecord {
    pub version: u64,
    pub app_version: String,
    pub deployed_at: String,
    /// The folder under `bundles/`.
    pub bundle: String,
    pub code_bytes: u64,
    /// Disk the unpacked bundle takes, measured at deploy: on a cluster, a host counts the
    /// tenant's versions that it has not fetched by this (0 in records written before).
    #[serde(default)]
    pub bundle_bytes: u64,
    pub routes: Vec<RouteInfo>,
    pub components: Vec<ComponentInfo>,
    /// The app as validated when this version was deployed (tenant's ceilings applied), with
    /// every path relative to the bundle. Loading a version (rollback, idle reload, restart)
    /// starts from this, never from a file parsed again. `None` only in records written before
    /// skiff stored it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app: Option<App>,
    /// The registry reference and digest this version was pulled from, if it was.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<VersionSource>,
}

/// What makes a record inconsistent. Each names what is wrong; the caller names the app.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum RecordError {
    #[error("it is named `{found}` but its file says `{expected}`")]
    WrongName { found: String, expected: String },
    #[error("its live version {live} is not among its versions")]
    NoLiveVersion { live: u64 },
    #[error("version {0} is listed more than once")]
    DuplicateVersion(u64),
    #[error("version {version} is not below its next_version {next}")]
    VersionAhead { version: u64, next: u64 },
    #[error("the bundle `{0}` is named by more than one version")]
    DuplicateBundle(String),
    #[error("the bundle name `{0}` is not a plain folder name")]
    BadBundleName(String),
    #[error("the bundle `{bundle}` of version {version} is missing")]
    MissingBundle { version: u64, bundle: String },
}

impl AppRecord {
    pub fn version(&self, version: u64) -> Option<&VersionRecord> {
        self.versions.iter().find(|v| v.version == version)
    }

    pub fn live_version(&self) -> Result<&VersionRecord, RecordError> {
        self.version(self.live)
            .ok_or(RecordError::NoLiveVersion { live: self.live })
    }

    /// Checks every rule of a record named `name` whose bundles live in `bundles` (`None`: a
    /// cluster's record, whose bundles are fetched when needed).
    pub fn check(&self, name: &str, bundles: Option<&Path>) -> Result<(), RecordError> {
        if self.name != name {
            return Err(RecordError::WrongName {
                found: self.name.clone(),
                expected: name.to_string(),
            });
        }
        self.live_version()?;
        let mut numbers = HashSet::new();
        let mut folders = HashSet::new();
        for version in &self.versions {
            if !numbers.insert(version.version) {
                return Err(RecordError::DuplicateVersion(version.version));
            }
            if version.version >= self.next_version {
                return Err(RecordError::VersionAhead {
                    version: version.version,
                    next: self.next_version,
                });
            }
            // The name is joined to the data folder to load and to remove a bundle: anything
            // but one plain name would reach elsewhere.
            if !is_plain_name(&version.bundle) {
                return Err(RecordError::BadBundleName(version.bundle.clone()));
            }
            if !folders.insert(version.bundle.as_str()) {
                return Err(RecordError::DuplicateBundle(version.bundle.clone()));
            }
            if let Some(bundles) = bundles
                && !bundles.join(&version.bundle).is_dir()
            {
                return Err(RecordError::MissingBundle {
                    version: version.version,
                    bundle: version.bundle.clone(),
                });
            }
        }
        Ok(())
    }

    /// Bundles this record names that are safe to keep by name (a damaged record may name
    /// anything).
    pub fn bundles(&self) -> impl Iterator<Item = &str> {
        self.versions
            .iter()
            .map(|v| v.bundle.as_str())
            .filter(|b| is_plain_name(b))
    }
}

/// One path component that is a name: no separator, not `.` or `..`.
pub(crate) fn is_plain_name(name: &str) -> bool {
    !name.is_empty() && name != "." && name != ".." && !name.contains(['/', '\\', '\0'])
}

/// Keeps the live version and the `keep` newest others; returns the bundles of the rest.
pub(crate) fn prune(record: &mut AppRecord, keep: usize) -> Vec<String> {
    let live = record.live;
    let others = record.versions.iter().filter(|v| v.version != live).count();
    let mut excess = others.saturating_sub(keep);
    let mut dropped = Vec::new();
    record.versions.retain(|v| {
        if excess > 0 && v.version != live {
            excess -= 1;
            dropped.push(v.bundle.clone());
            false
        } else {
            true
        }
    });
    dropped
}

#[cfg(test)]
mod tests {
    use super::*;

    fn version(n: u64) -> VersionRecord {
        VersionRecord {
            version: n,
            app_version: "1".into(),
            deployed_at: String::new(),
            bundle: format!("b{n}"),
            code_bytes: 0,
            bundle_bytes: 0,
            routes: Vec::new(),
            components: Vec::new(),
            app: None,
            source: None,
        }
    }

    fn record(live: u64, versions: impl IntoIterator<Item = u64>) -> AppRecord {
        AppRecord {
            name: "a".into(),
            tenant: "t".into(),
            live,
            next_version: 7,
            versions: versions.into_iter().map(version).collect(),
        }
    }

    #[test]
    fn pruning_keeps_the_live_version_and_the_newest_others() {
        let mut record = record(2, 1..=6);
        let dropped = prune(&mut record, 2);
        assert_eq!(dropped, ["b1", "b3", "b4"]);
        let kept: Vec<u64> = record.versions.iter().map(|v| v.version).collect();
        assert_eq!(kept, [2, 5, 6]);
    }

    #[test]
    fn every_inconsistency_is_named() {
        let bundles = tempfile::tempdir().unwrap();
        for n in 1..=6 {
            std::fs::create_dir(bundles.path().join(format!("b{n}"))).unwrap();
        }
        let check = |record: &AppRecord| record.check("a", Some(bundles.path()));
        assert_eq!(check(&record(2, 1..=6)), Ok(()));
        assert_eq!(
            check(&record(9, 1..=6)),
            Err(RecordError::NoLiveVersion { live: 9 })
        );
        assert_eq!(
            check(&record(2, [1, 2, 2])),
            Err(RecordError::DuplicateVersion(2))
        );
        let mut ahead = record(2, 1..=6);
        ahead.next_version = 6;
        assert!(matches!(
            check(&ahead),
            Err(RecordError::VersionAhead { version: 6, .. })
        ));
        let mut shared = record(2, 1..=2);
        shared.versions[1].bundle = "b1".into();
        assert_eq!(
            check(&shared),
            Err(RecordError::DuplicateBundle("b1".into()))
        );
        let mut escaping = record(1, [1]);
        escaping.versions[0].bundle = "../../etc".into();
        assert_eq!(
            check(&escaping),
            Err(RecordError::BadBundleName("../../etc".into()))
        );
        assert_eq!(escaping.bundles().count(), 0);
        assert!(matches!(check(&record(1, [1, 2, 3])), Ok(())));
        std::fs::remove_dir(bundles.path().join("b3")).unwrap();
        assert_eq!(
            check(&record(1, [1, 3])),
            Err(RecordError::MissingBundle {
                version: 3,
                bundle: "b3".into()
            })
        );
        assert!(matches!(
            record(2, 1..=2).check("b", Some(bundles.path())),
            Err(RecordError::WrongName { .. })
        ));
    }
}
