//! The `wasi:cli` environment and `wasi:filesystem` capability: environment variables and
//! granted folders. Sockets stay denied: no address is ever allowed, and name lookup is off.

use std::path::PathBuf;

use wasmtime_wasi::{FsPerms, WasiCtxBuilder};

use crate::error::{LoadError, LoadErrorKind};

/// A host folder made visible to the guest.
#[derive(Debug, Clone)]
pub struct DirGrant {
    pub host: PathBuf,
    pub guest: String,
    pub writable: bool,
}

impl DirGrant {
    /// Checks the folder exists now, so a mistake is a load error and not a failing request.
    pub fn validate(&self) -> Result<(), LoadError> {
        let reason = match std::fs::metadata(&self.host) {
            Ok(meta) if meta.is_dir() => return Ok(()),
            Ok(_) => "it is a file, and skiff grants folders: put it in a folder and grant that"
                .to_string(),
            Err(err) => format!("{err}"),
        };
        Err(LoadError::new(
            &self.host,
            LoadErrorKind::Grant {
                host: self.host.clone(),
                guest: self.guest.clone(),
                reason,
            },
        ))
    }
}

#[derive(Debug, Clone, Default)]
pub struct WasiGrant {
    pub env: Vec<(String, String)>,
    pub dirs: Vec<DirGrant>,
}

impl WasiGrant {
    pub fn from_component(component: &skiff_manifest::Component) -> Result<Self, LoadError> {
        let dirs: Vec<DirGrant> = component
            .files
            .iter()
            .map(|mount| DirGrant {
                host: mount.host.clone(),
                guest: mount.guest.clone(),
                writable: mount.writable,
            })
            .collect();
        for dir in &dirs {
            dir.validate()?;
        }
        Ok(WasiGrant {
            env: component.environment.clone(),
            dirs,
        })
    }

    /// A builder holding exactly this grant and nothing else.
    pub fn builder(&self) -> wasmtime::Result<WasiCtxBuilder> {
        let mut builder = WasiCtxBuilder::new();
        builder
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false);
        builder.envs(&self.env);
        for dir in &self.dirs {
            let perms = if dir.writable {
                FsPerms::ReadWrite
            } else {
                FsPerms::ReadOnly
            };
            builder.preopened_dir(&dir.host, &dir.guest, perms)?;
        }
        Ok(builder)
    }
}
