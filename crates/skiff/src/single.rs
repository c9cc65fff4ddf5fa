//! `skiff serve FILE.wasm`: one component, no manifest. It becomes an app of one component
//! that answers every path, so it runs through the very same path as `skiff up`.

use std::path::Path;

use std::time::Duration;

use anyhow::{Result, bail};
use clap::Args;
use skiff_manifest::{
    App, Component, FileMount, HostPattern, Limits, Location, Route, RoutePattern,
};
use skiff_runtime::WasiGrant;

/// The limits and outbound grants a manifest would give, as flags.
#[derive(Args)]
pub struct LimitArgs {
    /// Deadline for each request, e.g. `250ms`, `3s`.
    #[arg(long, value_name = "DURATION", value_parser = parse_timeout)]
    timeout: Option<Duration>,
    /// Memory cap of each instance (all its linear memories together), e.g. `64MiB`.
    #[arg(long, value_name = "SIZE", value_parser = skiff_manifest::parse_memory)]
    max_memory: Option<u64>,
    /// Requests served at once; more get 503 with Retry-After at once.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    max_concurrency: Option<u32>,
    /// Let the guest call hosts matching PATTERN (`scheme://host[:port]`, `*` wildcards).
    #[arg(long = "allow-outbound", value_name = "PATTERN", value_parser = parse_host_pattern)]
    allow_outbound: Vec<HostPattern>,
    /// Fuel budget of each request (about one unit per Wasm instruction): a CPU limit that,
    /// unlike --timeout, does not depend on how busy the machine is. Turns on fuel metering.
    #[arg(long, value_name = "UNITS", value_parser = clap::value_parser!(u64).range(1..))]
    fuel: Option<u64>,
    /// Requests one instance serves, one after another, before a fresh one takes over
    /// (default 1: a fresh instance per request). More reuses instances: faster, but state
    /// one request leaves in the guest's memory is seen by the next.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    requests_per_instance: Option<u32>,
}

pub fn parse_timeout(text: &str) -> Result<Duration, String> {
    match humantime::parse_duration(text) {
        Ok(duration) if duration > skiff_manifest::MAX_TIMEOUT => {
            Err("longer than a day; a deadline that far away is no deadline".into())
        }
        Ok(duration) if !duration.is_zero() => Ok(duration),
        Ok(_) => Err("a timeout of zero would fail every request".into()),
        Err(err) => Err(format!("{err}; write e.g. 250ms, 3s or 2m")),
    }
}

fn parse_host_pattern(text: &str) -> Result<HostPattern, String> {
    HostPattern::parse(text).map_err(|err| format!("{}; {}", err.message, err.help))
}

pub fn app_for_component(file: &Path, grant: WasiGrant, limits: &LimitArgs) -> Result<App> {
    if !file.is_file() {
        bail!(
            "{}: no such file; give the path of a wasi:http component (.wasm)",
            file.display()
        );
    }
    let source = std::path::absolute(file)?;
    let id = component_id(&source);
    let base_dir = source.parent().map(Path::to_path_buf).unwrap_or_default();
    Ok(App {
        name: id.clone(),
        version: "0.0.0".into(),
        description: None,
        variables: Vec::new(),
        manifest_path: source.clone(),
        base_dir,
        components: vec![Component {
            id,
            source,
            source_location: Location { line: 1, column: 1 },
            environment: grant.env,
            files: grant
                .dirs
                .into_iter()
                .map(|dir| FileMount {
                    host: dir.host,
                    guest: dir.guest,
                    writable: dir.writable,
                })
                .collect(),
            allowed_outbound_hosts: limits.allow_outbound.clone(),
            key_value_stores: Vec::new(),
            variables: Vec::new(),
            limits: Limits {
                memory: limits.max_memory,
                timeout: limits.timeout,
                max_concurrency: limits.max_concurrency,
                fuel: limits.fuel,
                requests_per_instance: limits.requests_per_instance,
            },
        }],
        routes: vec![Route {
            pattern: RoutePattern::Prefix(String::new()),
            as_written: "/...".into(),
            component: 0,
        }],
    })
}

/// A readable id from the file name, in the manifest's id alphabet, for log lines.
fn component_id(source: &Path) -> String {
    let stem = source
        .file_stem()
        .map(|s| s.to_string_lossy().to_lowercase())
        .unwrap_or_default();
    let id: String = stem
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    if id.is_empty() {
        "component".into()
    } else {
        id
    }
}
