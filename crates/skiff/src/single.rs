//! `skiff serve FILE.wasm`: one component, no manifest. It becomes an app of one component
//! that answers every path, so it runs through the very same path as `skiff up`.

use std::path::Path;

use std::time::Duration;

use anyhow::{Result, bail};
use clap::Args;
use skiff_manifest::{App, Component, FileMount, HostPattern, Limits, TimeoutError};
use skiff_runtime::WasiGrant;

/// The limits and outbound grants a manifest would give, as flags.
#[derive(Args, Default)]
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

/// `skiff_manifest::parse_timeout`, with an example when the text is no duration at all.
pub fn parse_timeout(text: &str) -> Result<Duration, String> {
    skiff_manifest::parse_timeout(text).map_err(|err| match err {
        TimeoutError::NotADuration(err) => format!("{err}; write e.g. 250ms, 3s or 2m"),
        other => other.to_string(),
    })
}

/// A duration that may be zero (a delay that may be left out), e.g. `0s`, `5s`.
pub fn parse_delay(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text).map_err(|err| format!("{err}; write e.g. 0s, 500ms or 5s"))
}

fn parse_host_pattern(text: &str) -> Result<HostPattern, String> {
    HostPattern::parse(text).map_err(|err| format!("{}; {}", err.message, err.help))
}

/// The app `skiff serve` runs: the component at `file` with the flags' grants and limits.
pub fn app_for_component(file: &Path, grant: WasiGrant, limits: &LimitArgs) -> Result<App> {
    if !file.is_file() {
        bail!(
            "{}: no such file; give the path of a wasi:http component (.wasm)",
            file.display()
        );
    }
    let mut component = Component::of_file(std::path::absolute(file)?);
    component.environment = grant.env;
    component.files = grant
        .dirs
        .into_iter()
        .map(|dir| FileMount {
            host: dir.host,
            guest: dir.guest,
            writable: dir.writable,
        })
        .collect();
    component.allowed_outbound_hosts = limits.allow_outbound.clone();
    component.limits = Limits {
        memory: limits.max_memory,
        timeout: limits.timeout,
        max_concurrency: limits.max_concurrency,
        fuel: limits.fuel,
        requests_per_instance: limits.requests_per_instance,
    };
    Ok(App::of_one_component(component))
}
