//! What the container's spec and cgroup say about how to run the app: its port, the values
//! of its variables, the environment of a single component, its memory.
//!
//! Settings come from the container's environment (a Pod's `env`), named `SKIFF_*`; they are
//! skiff's, never the guest's. Everything else in the environment goes to a single
//! component, which has no manifest to grant it variables: the Pod's author wrote them for it.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::time::Duration;

use anyhow::{Result, bail};

/// The port an HTTP app listens on when `SKIFF_PORT` does not say.
const DEFAULT_PORT: u16 = 80;

/// Memory the shim itself needs besides its guests (engine, runtime, buffers), kept out of
/// the guests' share of the container's limit.
const SHIM_MEMORY: u64 = 32 << 20;

#[derive(Debug)]
pub struct PodSettings {
    /// `0.0.0.0:SKIFF_PORT`: every address of the Pod's network namespace.
    pub listen: SocketAddr,
    /// `0.0.0.0:SKIFF_METRICS_PORT`, when given.
    pub metrics_listen: Option<SocketAddr>,
    /// `SKIFF_VAR_<NAME>`: the app variable `<name>`'s value.
    pub variables: Vec<(String, String)>,
    /// Everything not `SKIFF_*`: a single component's environment.
    pub guest_env: Vec<(String, String)>,
    /// `SKIFF_LOG`: the log filter, e.g. `debug` (default `info`).
    pub log_filter: String,
    /// `SKIFF_SHUTDOWN_GRACE`: how long requests in flight may take after SIGTERM.
    pub shutdown_grace: Duration,
    /// `SKIFF_MEMORY_LIMIT`: the container's memory limit in bytes, as the Downward API gives
    /// it (`resourceFieldRef: {resource: limits.memory}`), for hosts where the container cannot
    /// read its cgroup (cgroup v1).
    pub memory_limit: Option<u64>,
}

impl PodSettings {
    /// Reads the container's environment, `NAME=VALUE` entries as the OCI spec has them.
    pub fn from_env(envs: &[String]) -> Result<PodSettings> {
        let mut settings = PodSettings {
            listen: any_address(DEFAULT_PORT),
            metrics_listen: None,
            variables: Vec::new(),
            guest_env: Vec::new(),
            log_filter: "info".into(),
            shutdown_grace: Duration::from_secs(10),
            memory_limit: None,
        };
        for entry in envs {
            let (name, value) = entry.split_once('=').unwrap_or((entry, ""));
            match name {
                "SKIFF_PORT" => settings.listen = any_address(port(name, value)?),
                "SKIFF_METRICS_PORT" => {
                    settings.metrics_listen = Some(any_address(port(name, value)?))
                }
                "SKIFF_LOG" => settings.log_filter = value.to_string(),
                "SKIFF_SHUTDOWN_GRACE" => {
                    settings.shutdown_grace = skiff_manifest::parse_timeout(value)
                        .map_err(|err| anyhow::anyhow!("{name}={value}: {err}; write e.g. 25s"))?
                }
                "SKIFF_MEMORY_LIMIT" => {
                    let limit = skiff_manifest::parse_memory(value).map_err(|err| {
                        anyhow::anyhow!("{name}={value}: {err}; give bytes, e.g. 134217728")
                    })?;
                    settings.memory_limit = Some(limit);
                }
                _ => match name.strip_prefix(skiff_runtime::VARIABLE_ENV_PREFIX) {
                    Some(variable) => settings
                        .variables
                        .push((variable.to_ascii_lowercase(), value.to_string())),
                    None if name.starts_with("SKIFF_") => {
                        tracing::warn!(
                            "{name} is not a skiff setting (SKIFF_PORT, SKIFF_METRICS_PORT, \
                             SKIFF_LOG, SKIFF_SHUTDOWN_GRACE, SKIFF_MEMORY_LIMIT, \
                             SKIFF_VAR_<NAME>); ignored"
                        )
                    }
                    None => settings
                        .guest_env
                        .push((name.to_string(), value.to_string())),
                },
            }
        }
        Ok(settings)
    }
}

fn any_address(port: u16) -> SocketAddr {
    SocketAddr::from((Ipv4Addr::UNSPECIFIED, port))
}

fn port(name: &str, value: &str) -> Result<u16> {
    match value.trim().parse::<u16>() {
        Ok(port) if port > 0 => Ok(port),
        _ => bail!("{name}={value} is not a port; give a number from 1 to 65535"),
    }
}

/// The memory the guests may use together: the container's memory limit (a Pod's
/// `resources.limits.memory`: its cgroup's, or `SKIFF_MEMORY_LIMIT`, whichever is lower) less
/// what the shim needs itself, or `None` without a limit. Capping guests below the limit
/// makes a guest that grows too far fail its own allocation, instead of the kernel killing
/// the whole Pod.
pub fn guest_memory_budget(settings: &PodSettings) -> Option<u64> {
    let cgroup = cgroup_memory_limit(Path::new("/sys/fs/cgroup"));
    let limit = match (cgroup, settings.memory_limit) {
        (Some(a), Some(b)) => a.min(b),
        (one, other) => one.or(other)?,
    };
    Some(if limit > 2 * SHIM_MEMORY {
        limit - SHIM_MEMORY
    } else {
        limit / 2
    })
}

/// The memory limit of the cgroup the container sees as its own: cgroup v2's `memory.max`,
/// else v1's `memory/memory.limit_in_bytes`. Only where the runtime mounts the container's
/// cgroup: runwasi's does on cgroup v2 hosts, and mounts none on cgroup v1 ones.
fn cgroup_memory_limit(root: &Path) -> Option<u64> {
    let read = |file: &str| std::fs::read_to_string(root.join(file)).ok();
    let text = read("memory.max").or_else(|| read("memory/memory.limit_in_bytes"))?;
    // "max" (v2) or a number near i64::MAX (v1) means no limit.
    let limit: u64 = text.trim().parse().ok()?;
    (limit < 1 << 60).then_some(limit)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn env(entries: &[&str]) -> Vec<String> {
        entries.iter().map(|e| e.to_string()).collect()
    }

    #[test]
    fn settings_come_from_skiff_variables_and_the_rest_is_the_guests() {
        let settings = PodSettings::from_env(&env(&[
            "PATH=/usr/bin",
            "SKIFF_PORT=8080",
            "SKIFF_METRICS_PORT=9090",
            "SKIFF_VAR_API_TOKEN=secret=with=equals",
            "SKIFF_MEMORY_LIMIT=100663296",
            "GREETING=hi",
        ]))
        .unwrap();
        assert_eq!(settings.memory_limit, Some(96 << 20));
        assert_eq!(settings.listen, "0.0.0.0:8080".parse().unwrap());
        assert_eq!(
            settings.metrics_listen,
            Some("0.0.0.0:9090".parse().unwrap())
        );
        assert_eq!(
            settings.variables,
            vec![("api_token".to_string(), "secret=with=equals".to_string())]
        );
        let names: Vec<&str> = settings.guest_env.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["PATH", "GREETING"]);
    }

    #[test]
    fn a_bad_port_is_refused_with_the_variable_named() {
        for bad in ["SKIFF_PORT=http", "SKIFF_PORT=0", "SKIFF_PORT=70000"] {
            let err = PodSettings::from_env(&env(&[bad])).unwrap_err().to_string();
            assert!(err.contains(bad) && err.contains("1 to 65535"), "{err}");
        }
        let err = PodSettings::from_env(&env(&["SKIFF_SHUTDOWN_GRACE=soon"]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("SKIFF_SHUTDOWN_GRACE=soon"), "{err}");
    }

    #[test]
    fn the_memory_limit_is_read_from_cgroup_v2_or_v1_and_max_means_none() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(cgroup_memory_limit(dir.path()), None);
        std::fs::create_dir(dir.path().join("memory")).unwrap();
        std::fs::write(
            dir.path().join("memory/memory.limit_in_bytes"),
            "9223372036854771712\n",
        )
        .unwrap();
        assert_eq!(cgroup_memory_limit(dir.path()), None);
        std::fs::write(
            dir.path().join("memory/memory.limit_in_bytes"),
            "134217728\n",
        )
        .unwrap();
        assert_eq!(cgroup_memory_limit(dir.path()), Some(128 << 20));
        std::fs::write(dir.path().join("memory.max"), "max\n").unwrap();
        assert_eq!(cgroup_memory_limit(dir.path()), None);
        std::fs::write(dir.path().join("memory.max"), "67108864\n").unwrap();
        assert_eq!(cgroup_memory_limit(dir.path()), Some(64 << 20));
    }
}
