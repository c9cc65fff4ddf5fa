//! The management API's wire format: the JSON bodies of requests and answers, shared by the
//! server (`skiff-server`) and its client (`skiff-client`) so that the two cannot drift apart.
//! Plain serde types and name rules, nothing more, so that a client does not build the server
//! to talk to it. `skiff-server/openapi.json` describes the same shapes for everyone else.
//!
//! Routes (all under the `--api-listen` address; every one but `/openapi.json` and
//! `/v1/health` needs `Authorization: Bearer TOKEN`):
//!
//! | method and path | who | body in | answer |
//! |---|---|---|---|
//! | `POST /v1/tenants` | admin | [`CreateTenant`] | 201 [`TenantCreated`] |
//! | `GET /v1/tenants` | admin | | [`TenantList`] |
//! | `PATCH /v1/tenants/{name}` | admin | [`QuotaOverrides`] (the quotas to change) | [`TenantSummary`] |
//! | `DELETE /v1/tenants/{name}?with_apps=BOOL` | admin | | 204 |
//! | `POST /v1/tenants/{name}/token` | admin, or the tenant itself | | [`TokenIssued`] (a new token; the old one stops working) |
//! | `DELETE /v1/tenants/{name}/token` | admin, or the tenant itself | | 204 (no token works until one is rotated in) |
//! | `GET /v1/whoami` | anyone with a token | | [`WhoAmI`] |
//! | `PUT /v1/apps/{name}` | tenant | a bundle: tar, tar.gz or zip | 201 (new) or 200 [`AppInfo`] |
//! | `GET /v1/apps` | tenant | | [`AppList`] |
//! | `GET /v1/apps/{name}` | tenant | | [`AppInfo`] |
//! | `POST /v1/apps/{name}/rollback` | tenant | | [`AppInfo`] |
//! | `DELETE /v1/apps/{name}` | tenant | | 204 |
//! | `GET /v1/apps/{name}/logs?follow=BOOL&tail=N` | tenant | | NDJSON of [`LogLine`] |
//! | `GET /metrics` | admin | | Prometheus (OpenMetrics) text, every series |
//! | `GET /v1/metrics` | tenant | | the same, the tenant's own series only |
//! | `GET /v1/usage?from=T&to=T&tenant=NAME` | tenant or admin | | [`UsageReport`] |
//!
//! Every failure answers an [`ErrorBody`]. Another tenant's app is `404`, exactly like an app
//! that does not exist, so that names do not leak.

#![forbid(unsafe_code)]

use serde::{Deserialize, Serialize};

/// Paths of the API, for the server's router and the client alike.
pub mod paths {
    pub const OPENAPI: &str = "/openapi.json";
    /// The web dashboard (no token needed for the page; it asks for one).
    pub const DASHBOARD: &str = "/dashboard";
    pub const HEALTH: &str = "/v1/health";
    /// Liveness, for Kubernetes probes: the process answers.
    pub const HEALTHZ: &str = "/healthz";
    /// Readiness: the host serves what it should (in a cluster, once it has read the
    /// cluster's apps), and is not shutting down.
    pub const READYZ: &str = "/readyz";
    pub const TENANTS: &str = "/v1/tenants";
    pub const APPS: &str = "/v1/apps";
    /// Prometheus metrics of the whole host (admin).
    pub const METRICS: &str = "/metrics";
    /// Prometheus metrics of the caller's apps only (tenant).
    pub const TENANT_METRICS: &str = "/v1/metrics";
    /// What apps used over a time range (a tenant its own; the admin any tenant's).
    pub const USAGE: &str = "/v1/usage";
    /// Who the caller's token says it is.
    pub const WHOAMI: &str = "/v1/whoami";

    /// One tenant: `PATCH` its quotas, `DELETE` it.
    pub fn tenant(name: &str) -> String {
        format!("{TENANTS}/{name}")
    }

    /// A tenant's token: `POST` rotates it, `DELETE` revokes it.
    pub fn tenant_token(name: &str) -> String {
        format!("{TENANTS}/{name}/token")
    }
}

/// Every non-2xx answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ErrorDetail {
    /// Stable, for scripts: one of [`ErrorCode`]'s names in snake case.
    pub code: ErrorCode,
    /// For people: what went wrong and how to fix it. For a bad manifest this is the whole
    /// compiler-style report, several lines long.
    pub message: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// No token, or a token the server does not know (401).
    Unauthorized,
    /// A tenant token on an admin route (403).
    Forbidden,
    /// No such app or tenant, or one that belongs to another tenant (404).
    NotFound,
    /// The name is taken, or there is nothing to roll back to (409).
    Conflict,
    /// The upload is not a readable tar, tar.gz or zip, or breaks the bundle rules (400).
    InvalidBundle,
    /// The bundle's skiff.toml is invalid (400); the message is the full report.
    InvalidManifest,
    /// The manifest is valid but a component cannot be loaded: not a component, a missing
    /// import, a store or variable that cannot be resolved (400).
    LoadFailed,
    /// The deploy would exceed one of the tenant's quotas, named in the message (403).
    QuotaExceeded,
    /// The upload is larger than the server accepts (413).
    PayloadTooLarge,
    /// A deploy from a registry could not pull: the registry cannot be reached, or it refused
    /// the server's credentials (502). Other pull failures have the codes above: a registry
    /// the server does not pull from is `forbidden`, a missing tag `not_found`, an artifact
    /// that is no app `invalid_bundle`.
    RegistryFailed,
    /// The request itself is malformed: bad JSON, a bad name (400).
    BadRequest,
    /// Something failed on the server; details are in its log (500).
    Internal,
    /// A cluster host cannot reach the cluster's shared state, so it refuses changes for now
    /// (it keeps serving the apps it has); try again shortly, or through another host (503).
    Unavailable,
}

/// What one tenant may use. Every field is optional on the way in: a missing one takes the
/// server's default.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Quotas {
    /// Apps the tenant may have deployed at once.
    pub max_apps: u32,
    /// Total size of the Wasm components of all the tenant's live apps, in bytes.
    pub max_code_bytes: u64,
    /// Requests of all the tenant's apps running at once; more get 503.
    pub max_in_flight: u32,
    /// Highest `limits.memory` a component may ask for, in bytes (also what a component
    /// that sets none gets, if lower than the server's default).
    pub max_memory_bytes: u64,
    /// Highest `limits.timeout` a component may ask for, in milliseconds.
    pub max_timeout_ms: u64,
    /// Bytes on disk of all the tenant's apps: every version kept (bundles), writable files
    /// and key-value data. Checked at each deploy.
    #[serde(default = "default_max_disk_bytes")]
    pub max_disk_bytes: u64,
}

/// Tenants stored before the disk quota existed get the default.
fn default_max_disk_bytes() -> u64 {
    Quotas::default().max_disk_bytes
}

impl Default for Quotas {
    fn default() -> Self {
        Quotas {
            max_apps: 100,
            max_code_bytes: 512 << 20,
            max_in_flight: 1000,
            max_memory_bytes: 512 << 20,
            max_timeout_ms: 5 * 60 * 1000,
            max_disk_bytes: 10 << 30,
        }
    }
}

/// [`Quotas`] as a request gives them: what is left out keeps the default.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QuotaOverrides {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_apps: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_code_bytes: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_in_flight: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_memory_bytes: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_timeout_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_disk_bytes: Option<u64>,
}

impl QuotaOverrides {
    pub fn apply(&self, base: Quotas) -> Quotas {
        Quotas {
            max_apps: self.max_apps.unwrap_or(base.max_apps),
            max_code_bytes: self.max_code_bytes.unwrap_or(base.max_code_bytes),
            max_in_flight: self.max_in_flight.unwrap_or(base.max_in_flight),
            max_memory_bytes: self.max_memory_bytes.unwrap_or(base.max_memory_bytes),
            max_timeout_ms: self.max_timeout_ms.unwrap_or(base.max_timeout_ms),
            max_disk_bytes: self.max_disk_bytes.unwrap_or(base.max_disk_bytes),
        }
    }
}

/// The answer to `POST /v1/tenants/{name}/token`: the tenant's new token, shown only now.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TokenIssued {
    pub name: String,
    pub token: String,
}

/// The answer to `GET /v1/whoami`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WhoAmI {
    /// `admin` or `tenant`.
    pub role: String,
    /// The tenant's name, for a tenant's token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
    /// The tenant's quotas, for a tenant's token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quotas: Option<Quotas>,
}

/// `POST /v1/tenants`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateTenant {
    /// Lower-case letters, digits and `-`, starting with a letter, at most 63 characters.
    pub name: String,
    #[serde(default)]
    pub quotas: QuotaOverrides,
}

/// `POST /v1/apps`: deploy an app the server pulls from an OCI registry (one that its
/// operator allows with `--allow-registry`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeployFrom {
    /// `HOST[:PORT]/REPOSITORY[:TAG]` or `...@sha256:DIGEST`; a tag is resolved once, and the
    /// version records the digest.
    pub from: String,
    /// The app's name on the server [default: `[app] name` from its skiff.toml].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

/// Where a version came from, when it was pulled from a registry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VersionSource {
    /// The reference as the deploy gave it.
    pub reference: String,
    /// The digest it resolved to: the exact bytes deployed.
    pub digest: String,
}

/// The answer to `POST /v1/tenants`: the only time the token is ever shown (the server keeps
/// only its hash).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TenantCreated {
    pub name: String,
    pub token: String,
    pub quotas: Quotas,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TenantSummary {
    pub name: String,
    pub quotas: Quotas,
    /// Apps deployed now.
    pub apps: u32,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TenantList {
    pub tenants: Vec<TenantSummary>,
}

/// Whether an app's code is in memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AppStatus {
    /// Loaded: the next request instantiates at once.
    Live,
    /// Deployed but not in memory (not requested lately): the next request maps its compiled
    /// code from the cache first, in milliseconds.
    Idle,
}

/// One app in `GET /v1/apps`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AppSummary {
    pub name: String,
    /// The deployment number of the live version: 1 for the first deploy, one more for each
    /// deploy after it (a rollback makes an older number live again).
    pub version: u64,
    /// `version` from the app's skiff.toml.
    pub app_version: String,
    /// Where the data plane serves it, e.g. `http://hello.localhost:3000/`.
    pub url: String,
    /// When the live version was deployed, RFC 3339.
    pub deployed_at: String,
    pub status: AppStatus,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AppList {
    pub apps: Vec<AppSummary>,
}

/// `GET /v1/apps/{name}`, and the answer to a deploy or a rollback.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AppInfo {
    #[serde(flatten)]
    pub summary: AppSummary,
    pub tenant: String,
    pub routes: Vec<RouteInfo>,
    pub components: Vec<ComponentInfo>,
    /// Every version kept, newest deployment first.
    pub versions: Vec<VersionInfo>,
    /// On a cluster: which hosts serve the app as it is now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<ClusterInfo>,
    /// The app's schedules, in manifest order, with their next due times and last runs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub schedules: Vec<ScheduleInfo>,
    /// The app's queue consumers, in manifest order, with how full their queues are.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub consumers: Vec<ConsumerInfo>,
}

/// One queue consumer of an app, as `GET /v1/apps/NAME` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConsumerInfo {
    pub component: String,
    pub queue: String,
    /// The path each message is `POST`ed to; absent: the component's
    /// `wasi:messaging/incoming-handler` is called.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    pub concurrency: u32,
    pub batch: u32,
    pub max_attempts: u32,
    pub retry_after_ms: u64,
    pub dead_letter: String,
    /// Messages in the queue, waiting or being handled; absent if the queues cannot be read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub messages: Option<u64>,
    /// Messages in the dead-letter queue; absent if the queues cannot be read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dead: Option<u64>,
}

/// One schedule of an app, as `GET /v1/apps/NAME` shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScheduleInfo {
    pub component: String,
    /// Its position among the component's schedules: `component.<id>.schedule[<index>]`.
    pub index: usize,
    pub cron: String,
    pub timezone: String,
    /// The path an HTTP component is called at.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// The arguments a command component runs with.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<String>,
    /// `skip` or `allow`.
    pub overlap: String,
    /// The next due times, RFC 3339 in UTC.
    pub next: Vec<String>,
    /// Runs that were due while an earlier run was still going, and so did not happen (since
    /// the host started, or in a cluster since the count began in Redis).
    pub skipped: u64,
    /// The last runs, newest first (a bounded number).
    pub last: Vec<ScheduleRun>,
}

/// One due time of a schedule and what became of it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScheduleRun {
    /// The due time, RFC 3339 in UTC.
    pub due: String,
    /// The host that ran it (in a cluster, the one that won the run's lease).
    pub host: String,
    /// `ok` (a 2xx answer, or exit code 0), `failed` (another status or code, or the guest
    /// failed) or `skipped`.
    pub outcome: String,
    /// The HTTP status the run answered, if it answered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    /// A command component's exit code, if it exited.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    /// What went wrong, for a failed run the guest did not answer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// From the start of the run to the end of its response body.
    pub duration_ms: u64,
}

/// How far a change to an app has reached the hosts of a cluster.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ClusterInfo {
    /// The revision of the app's record in the cluster's state: every change makes a new one.
    pub revision: u64,
    /// Every live host, by name.
    pub hosts: Vec<HostInfo>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HostInfo {
    pub host: String,
    /// The app's revision the host serves: the newest, once it has applied every change up to
    /// it; `None` while it has not (or does not serve the app at all).
    pub revision: Option<u64>,
    /// Whether it serves the newest revision.
    pub converged: bool,
    /// The host has applied every change (to any app or tenant) up to this revision.
    #[serde(default)]
    pub applied: u64,
    /// The host has applied the app's record but does not serve it: the record is damaged, or
    /// names a tenant the host does not know (its log says which).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub skipped: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RouteInfo {
    /// As written in the manifest, e.g. `/api/...`.
    pub route: String,
    /// What answers the route: a component's id, or with `upstream` an upstream's name.
    pub component: String,
    /// Whether `component` names an upstream (an HTTP service outside the app).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub upstream: bool,
    /// The middleware components the route's requests go through first, in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub middleware: Vec<String>,
}

impl RouteInfo {
    /// What serves the route, for people: `api`, `upstream orders`, `api via auth, limit`.
    pub fn served_by(&self) -> String {
        let target = if self.upstream {
            format!("upstream {}", self.component)
        } else {
            self.component.clone()
        };
        if self.middleware.is_empty() {
            target
        } else {
            format!("{target} via {}", self.middleware.join(", "))
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ComponentInfo {
    pub id: String,
    /// The component file, relative to the bundle's root.
    pub source: String,
    pub code_bytes: u64,
    /// The limits in force: the manifest's, or the server's defaults where it sets none.
    pub limits: LimitsInfo,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LimitsInfo {
    pub memory_bytes: Option<u64>,
    pub timeout_ms: u64,
    pub max_concurrency: Option<u32>,
    pub fuel: Option<u64>,
    /// Requests one instance serves one after another; absent: a fresh one per request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requests_per_instance: Option<u32>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct VersionInfo {
    pub version: u64,
    pub app_version: String,
    pub deployed_at: String,
    pub live: bool,
    /// The registry reference and digest it was deployed from; absent for an uploaded folder.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<VersionSource>,
}

/// One line of `GET /v1/apps/{name}/logs`, sent as newline-delimited JSON.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogLine {
    /// RFC 3339 with milliseconds.
    pub time: String,
    pub app: String,
    pub component: String,
    pub request_id: u64,
    /// The request's W3C trace id (32 hex digits), as in the host's log and its spans.
    #[serde(default)]
    pub trace_id: String,
    /// `stdout` or `stderr` for what the guest printed, `log` for wasi:logging.
    pub stream: String,
    /// For wasi:logging lines: `trace`, `debug`, `info`, `warn`, `error` or `critical`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub level: Option<String>,
    pub message: String,
    /// On a cluster: the host whose guest wrote the line.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
}

/// `GET /v1/usage`: what apps used over a time range, from per-minute sums. Only apps that
/// served at least one request in the range are listed.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UsageReport {
    /// The start of the first minute counted, RFC 3339 (`from` rounded up to a minute).
    pub from: String,
    /// The end of the last minute counted, RFC 3339 (`to` rounded up to a minute).
    pub to: String,
    /// By tenant, then app.
    pub apps: Vec<AppUsage>,
    /// Each tenant's apps summed, by tenant.
    pub tenants: Vec<TenantUsage>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AppUsage {
    pub tenant: String,
    pub app: String,
    #[serde(flatten)]
    pub usage: UsageFigures,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TenantUsage {
    pub tenant: String,
    #[serde(flatten)]
    pub usage: UsageFigures,
}

/// Sums over requests. A request counts in the minute it ended.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct UsageFigures {
    /// Requests admitted (not those refused with 503 by a concurrency limit).
    pub requests: u64,
    /// From admission until the response body was finished.
    pub wall_seconds: f64,
    /// Thread CPU time of the guest's task: guest code and the host work done for it in its
    /// task (instantiation, WASI calls), never time spent waiting.
    pub guest_cpu_seconds: f64,
    /// Each request's peak linear memory times its wall time, summed.
    pub memory_byte_seconds: f64,
    /// Request body bytes read on the guests' behalf.
    pub bytes_in: u64,
    /// Response body bytes sent (headers not counted).
    pub bytes_out: u64,
}

impl UsageFigures {
    pub fn add(&mut self, other: &UsageFigures) {
        self.requests += other.requests;
        self.wall_seconds += other.wall_seconds;
        self.guest_cpu_seconds += other.guest_cpu_seconds;
        self.memory_byte_seconds += other.memory_byte_seconds;
        self.bytes_in += other.bytes_in;
        self.bytes_out += other.bytes_out;
    }
}

/// Names of tenants and apps: they become DNS labels (`NAME.localhost`) and folder names, so
/// they follow the DNS label rules, lower case only.
pub fn check_name(kind: &str, name: &str) -> Result<(), InvalidName> {
    let valid = !name.is_empty()
        && name.len() <= 63
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && !name.ends_with('-')
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if valid {
        Ok(())
    } else {
        Err(InvalidName {
            kind: kind.to_string(),
            name: name.to_string(),
        })
    }
}

/// A tenant's or app's name that [`check_name`] refuses.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "`{name}` is not a valid {kind} name: use 1 to 63 lower-case letters, digits and `-`, \
     starting with a letter and not ending with `-` (it becomes a host name, e.g. `my-app`)"
)]
pub struct InvalidName {
    /// `app` or `tenant`.
    pub kind: String,
    pub name: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_dns_labels() {
        for good in ["a", "hello", "my-app-2", &"x".repeat(63)] {
            assert!(check_name("app", good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "Hello",
            "2fast",
            "-a",
            "a-",
            "a_b",
            "a.b",
            "../x",
            &"x".repeat(64),
        ] {
            let err = check_name("app", bad).unwrap_err();
            assert!(
                err.to_string().contains("not a valid app name"),
                "{bad}: {err}"
            );
        }
    }

    #[test]
    fn errors_use_snake_case_codes() {
        let body = ErrorBody {
            error: ErrorDetail {
                code: ErrorCode::QuotaExceeded,
                message: "m".into(),
            },
        };
        let json = serde_json::to_string(&body).unwrap();
        assert_eq!(json, r#"{"error":{"code":"quota_exceeded","message":"m"}}"#);
    }
}
