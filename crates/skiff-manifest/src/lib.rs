//! Parses and validates `skiff.toml`, the Skiff app manifest, into [`App`]: plain data that the
//! runtime loads and the HTTP trigger routes on. All checking happens here, before any Wasm is
//! compiled, and every problem comes back as a [`ManifestError`] naming the file, line and
//! column, the field (a dotted path such as `component.hello.source`), what is wrong and how to
//! fix it. Besides reading the manifest, the only I/O is checking that referenced files exist
//! and reading the 8-byte header of each component's `source`.
//!
//! # The manifest
//!
//! ```toml
//! [app]
//! name = "hello"              # required; [a-z0-9-], starts with a letter, at most 63 chars
//! version = "0.1.0"           # optional, default "0.0.0"
//! description = "Says hello"  # optional
//!
//! [variables]                 # optional; app variables, given values by the operator
//! api_token = { required = true, secret = true }
//! greeting = { default = "hello" }
//!
//! [component.hello]           # the component id follows the same rules as the app name
//! source = "hello.wasm"       # required; relative to the manifest's folder; a Wasm *component*
//! route = "/hello"            # optional; a string or an array of strings
//! environment = { GREETING = "hi" }   # optional; names match [A-Za-z_][A-Za-z0-9_]*
//! files = [                   # optional
//!   "static",                 # host `static` (relative to the manifest) mounted at `/static`
//!   { source = "data", destination = "/data", writable = true },  # writable defaults to false
//! ]
//! allowed_outbound_hosts = ["https://api.example.com", "http://*.internal:8080", "*://localhost:*"]
//! key_value_stores = ["default"]   # optional; labels of the stores it may open
//! variables = { token = "Bearer {{ api_token }}" }   # optional; read via wasi:config/store
//!
//! [component.hello.limits]
//! memory = "64MiB"            # optional; bytes, or a number with B, KB, KiB, MB, MiB, GB, GiB
//! timeout = "5s"              # optional; e.g. "250ms", "5s", "2m"; at most "24h"
//! max_concurrency = 50         # optional; requests served at once; more get 503 at once
//! fuel = 5_000_000_000        # optional; Wasm instructions (roughly) one request may execute
//! requests_per_instance = 100 # optional; default 1, a fresh instance per request; see Limits
//!
//! [component.hello.build]     # optional; run by `skiff build` and `skiff up --watch`, never by a host
//! command = "cargo build --target wasm32-wasip2 --release"   # required; run with `sh -c`
//! workdir = "hello"           # optional; relative to the manifest's folder
//! watch = ["src/**/*.rs"]     # optional; globs relative to workdir (`*` stays in a folder)
//!
//! [[component.hello.schedule]]   # optional, repeatable; see Schedules
//! cron = "0 30 2 * * *"       # required; 5 fields, or 6 with leading seconds
//! timezone = "Europe/Paris"   # optional; an IANA zone, default "UTC"
//! path = "/jobs/nightly"      # HTTP components: the path the run requests (POST)
//! args = ["--full"]           # command components (wasi:cli/run): arguments, optional
//! overlap = "skip"            # optional; "skip" (default) or "allow"
//!
//! [component.api]
//! source = "api.wasm"
//! route = ["/api/...", "/..."]
//! middleware = ["hello"]      # optional; components a request goes through first, in order
//!
//! [upstream.orders]           # optional; an HTTP service outside the app, named like a component
//! url = "http://orders:8080/v1"   # or urls = ["http://10.0.0.7:8080", "http://[fd00::7]:8080"]
//! route = "/orders/..."       # required; like a component's
//! middleware = ["hello"]      # optional
//! connect_timeout = "2s"      # optional; default 2s
//! timeout = "60s"             # optional; default 60s, the wait for the response head
//! body_idle_timeout = "60s"   # optional; default 60s, the wait for each next piece of the body
//! retries = 1                 # optional; default 1, at most 10
//! health_check = { path = "/healthz", interval = "5s", timeout = "2s" }   # optional
//! websocket_limit = 1024      # optional; default 1024 connections switched to WebSocket at once
//! websocket_idle_timeout = "5m"   # optional; default 5m, then a silent one is closed
//! ```
//!
//! Unknown fields are errors everywhere.
//!
//! **Routes.** `"/hello"` matches that path exactly (a trailing slash is ignored); `"/api/..."`
//! matches `/api` and everything under `/api/`, but not `/apiary`; `"/..."` matches everything.
//! An exact route beats a prefix, and a longer prefix beats a shorter one. No two routes, of
//! the same component or upstream or of different ones, may be the same after normalisation.
//! See [`RouteTable`].
//!
//! **Upstreams and middleware.** A route may be answered by an [`Upstream`], reached over
//! plain `http` at one or more addresses ([`UpstreamUrl`]). `middleware` (on an upstream, or on
//! a component for all its routes) lists components of the app that each request goes through
//! first, in order; each is stored in [`Route::middleware`]. A component calls another in
//! process at `http://ID.skiff.internal` when its `allowed_outbound_hosts` names that host or
//! `*.skiff.internal` (see [`App::reachable_in_process`]); such a host must name a component
//! of the app. See `docs/manifest-gateway.md`.
//!
//! **Outbound hosts.** `scheme://host[:port]`, where the scheme is `http`, `https` or `*`; the
//! host a name, an IPv4 address, `[ipv6]`, `*`, or `*.suffix` (subdomains of `suffix`, not
//! `suffix` itself); the port a number or `*`, defaulting to 80 for http and 443 for https (with
//! scheme `*` the port must be written). See [`HostPattern`].
//!
//! **Schedules.** A component may have schedules beside or instead of routes, at most
//! [`MAX_SCHEDULES_PER_APP`] per app. Each run of an HTTP component is a `POST` to `path`
//! through the same dispatch as a client's request; see [`Schedule`] and [`CronTimes`]. A
//! pattern that never fires (`0 0 30 2 *`) is an error.
//!
//! # Use
//!
//! ```no_run
//! let app = skiff_manifest::load(std::path::Path::new("skiff.toml"))?;
//! let table = skiff_manifest::RouteTable::new(&app);
//! if let Some(m) = table.lookup("/api/users/1") {
//!     match m.target {
//!         skiff_manifest::RouteTarget::Component(c) => println!("{} serves it", app.components[c].id),
//!         skiff_manifest::RouteTarget::Upstream(u) => println!("{} serves it", app.upstreams[u].name),
//!     }
//!     println!("path info {}", m.path_info);
//! }
//! # Ok::<(), skiff_manifest::ManifestError>(())
//! ```

// `ManifestError` is returned once per load, never on a hot path, and its fields are public API;
// boxing it would only make every caller unwrap a box.
#![allow(clippy::result_large_err)]
#![forbid(unsafe_code)]

mod app;
mod build;
mod component;
mod error;
mod host;
mod owners;
mod queue;
mod raw;
mod refs;
mod route;
mod runtime_config;
mod schedule;
mod toml_error;
mod units;
mod upstream;
mod variables;

pub use units::{MAX_TIMEOUT, SizeError, TimeoutError, format_size, parse_memory, parse_timeout};
pub use variables::{Template, TemplateError, Variable, is_store_label, is_variable_name};

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use build::{ComponentBuild, load_builds};
pub use error::{Location, ManifestError, Snippet};
pub use host::{HostMatch, HostPattern, HostPatternError, PortPattern, SchemePattern};
pub use owners::{name_problem, suggested_name};
pub use queue::{
    Consume, MAX_ATTEMPTS, MAX_CONSUME_BATCH, MAX_CONSUME_CONCURRENCY, MAX_QUEUE_NAME,
    is_queue_name,
};
pub use refs::INTERNAL_DOMAIN;
pub use route::{RouteError, RouteMatch, RoutePattern, RouteTable};
pub use runtime_config::{
    QueueSpec, RuntimeConfigFile, StoreSpec, load_runtime_config, parse_runtime_config,
};
pub use schedule::{CronTimes, MAX_SCHEDULES_PER_APP, Overlap, Schedule};
pub use upstream::{
    DEFAULT_BODY_IDLE_TIMEOUT, DEFAULT_CONNECT_TIMEOUT, DEFAULT_HEALTH_INTERVAL,
    DEFAULT_HEALTH_TIMEOUT, DEFAULT_RETRIES, DEFAULT_UPSTREAM_TIMEOUT,
    DEFAULT_WEBSOCKET_IDLE_TIMEOUT, DEFAULT_WEBSOCKET_LIMIT, MAX_HEALTH_PATH, MAX_RETRIES,
    MAX_UPSTREAM_URLS, MAX_WEBSOCKET_LIMIT, MIN_HEALTH_INTERVAL, UpstreamUrlError,
};

/// A validated app. It is plain data (serde) so that a host can store what it validated and
/// load that later, rather than parse a file again that may have changed since.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct App {
    pub name: String,
    pub version: String,
    pub description: Option<String>,
    /// The manifest's path, made absolute.
    pub manifest_path: PathBuf,
    /// The manifest's folder; relative paths in the manifest are relative to it.
    pub base_dir: PathBuf,
    /// The app's `[variables]`, in file order.
    pub variables: Vec<Variable>,
    /// In file order.
    pub components: Vec<Component>,
    /// All routes of all components, in file order.
    pub routes: Vec<Route>,
    /// All schedules of all components, in file order. (Apps stored before schedules existed
    /// have none.)
    #[serde(default)]
    pub schedules: Vec<Schedule>,
    /// The queues the app's components consume, one consumer per queue. (Apps stored before
    /// queues existed have none.)
    #[serde(default)]
    pub consumers: Vec<Consume>,
    /// The HTTP services outside the app that its routes send requests to (`[upstream.NAME]`),
    /// in file order.
    #[serde(default)]
    pub upstreams: Vec<Upstream>,
}

impl App {
    /// The component with this id.
    pub fn component(&self, id: &str) -> Option<&Component> {
        self.components.iter().find(|c| c.id == id)
    }

    /// An app of one component that answers every path, with no manifest (`skiff serve
    /// FILE.wasm`): named after the component, its file standing in for the manifest.
    pub fn of_one_component(component: Component) -> App {
        let base_dir = component
            .source
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_default();
        App {
            name: component.id.clone(),
            version: "0.0.0".into(),
            description: None,
            manifest_path: component.source.clone(),
            base_dir,
            variables: Vec::new(),
            components: vec![component],
            routes: vec![Route {
                pattern: RoutePattern::Prefix(String::new()),
                as_written: "/...".into(),
                target: RouteTarget::Component(0),
                middleware: Vec::new(),
            }],
            schedules: Vec::new(),
            consumers: Vec::new(),
            upstreams: Vec::new(),
        }
    }

    /// What answers `route`: its component's id or its upstream's name.
    pub fn target_name(&self, route: &Route) -> &str {
        match route.target {
            RouteTarget::Component(i) => self.components.get(i).map_or("", |c| c.id.as_str()),
            RouteTarget::Upstream(i) => self.upstreams.get(i).map_or("", |u| u.name.as_str()),
        }
    }

    /// Whether any component sets a fuel budget: metering slows every guest, so a host meters
    /// only when asked to.
    pub fn uses_fuel(&self) -> bool {
        self.components.iter().any(|c| c.limits.fuel.is_some())
    }

    /// The upstream with this name.
    #[cfg(test)]
    pub fn upstream(&self, name: &str) -> Option<&Upstream> {
        self.upstreams.iter().find(|u| u.name == name)
    }

    /// Whether component number `component` may be called in process, at
    /// `http://ID.skiff.internal`: some component of the app (itself included) names that
    /// host in `allowed_outbound_hosts`, by name or by a `*.` pattern that covers it such as
    /// `*.skiff.internal`. Scheme and port are not compared, so this may say yes for a grant
    /// the runtime would not honour for a given request, never the other way round. `*`
    /// alone grants no in-process call. (A middleware is reached in process through its
    /// routes, whether or not this says so.)
    pub fn reachable_in_process(&self, component: usize) -> bool {
        let Some(target) = self.components.get(component) else {
            return false;
        };
        let host = format!("{}.{INTERNAL_DOMAIN}", target.id);
        self.components
            .iter()
            .flat_map(|c| &c.allowed_outbound_hosts)
            .any(|pattern| match pattern.host() {
                HostMatch::Name(name) => *name == host,
                HostMatch::Subdomains(suffix) => host
                    .strip_suffix(suffix.as_str())
                    .is_some_and(|rest| rest.len() > 1 && rest.ends_with('.')),
                HostMatch::Any | HostMatch::Ip(_) => false,
            })
    }
}

impl Component {
    /// A component of `source` with nothing granted and no limits set, its id made from the
    /// file name (in the manifest's id alphabet, for log lines).
    pub fn of_file(source: PathBuf) -> Component {
        let stem = source
            .file_stem()
            .map(|s| s.to_string_lossy().to_lowercase())
            .unwrap_or_default();
        let id: String = stem
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
            .collect();
        Component {
            id: if id.is_empty() {
                "component".into()
            } else {
                id
            },
            source,
            source_location: Location { line: 1, column: 1 },
            environment: Vec::new(),
            files: Vec::new(),
            allowed_outbound_hosts: Vec::new(),
            key_value_stores: Vec::new(),
            variables: Vec::new(),
            limits: Limits::default(),
            publish: Vec::new(),
        }
    }
}

/// The manifest `given` names: the `skiff.toml` inside it when it is a folder, else itself.
pub fn manifest_in(given: &Path) -> PathBuf {
    if given.is_dir() {
        given.join("skiff.toml")
    } else {
        given.to_path_buf()
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Component {
    pub id: String,
    /// `base_dir` joined with the path as written (so absolute if the manifest path was).
    pub source: PathBuf,
    /// Where `source` is written, for errors found later (see [`ManifestError::at`]).
    pub source_location: Location,
    /// In file order.
    pub environment: Vec<(String, String)>,
    pub files: Vec<FileMount>,
    pub allowed_outbound_hosts: Vec<HostPattern>,
    /// Labels of the key-value stores the component may open, in file order.
    pub key_value_stores: Vec<String>,
    /// What the guest reads through `wasi:config/store`: name and template, in file order.
    pub variables: Vec<(String, Template)>,
    pub limits: Limits,
    /// The queues it may publish to through `wasi:messaging`, in file order.
    #[serde(default)]
    pub publish: Vec<String>,
}

/// A host folder or file made visible to the guest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileMount {
    /// `base_dir` joined with the path as written; it existed when the manifest was checked.
    pub host: PathBuf,
    /// Absolute guest path without a trailing slash (except `/` itself), never containing `..`.
    pub guest: String,
    pub writable: bool,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limits {
    /// Bytes of linear memory.
    pub memory: Option<u64>,
    pub timeout: Option<Duration>,
    /// Requests the component may serve at once; more are refused with 503 at once.
    pub max_concurrency: Option<u32>,
    /// A budget of fuel (about one unit per Wasm instruction) for one request: a limit on work
    /// done that, unlike `timeout`, does not depend on how busy the machine is.
    pub fuel: Option<u64>,
    /// Requests one instance may serve, one after another, before a fresh one takes over.
    /// `None` (or 1): a fresh instance for every request, nothing kept between requests. More
    /// is the component's opt-in to instance reuse: faster, but what one request leaves in the
    /// instance's memory (globals, caches) the next request of the same component sees. An
    /// instance that fails (a trap, a deadline) is never reused.
    pub requests_per_instance: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Route {
    pub pattern: RoutePattern,
    /// As written in the manifest, e.g. `/api/...`.
    pub as_written: String,
    /// What answers the route's requests. (Stored as `"component": N` or `"upstream": N`, as
    /// apps stored before upstreams existed wrote `"component": N`.)
    #[serde(flatten)]
    pub target: RouteTarget,
    /// The middleware components a request goes through before the target, in order: indexes
    /// into [`App::components`]. Each may answer itself or send the request on to the next.
    #[serde(default)]
    pub middleware: Vec<usize>,
}

impl Route {
    /// The component that answers the route, if a component does (not an upstream).
    pub fn component(&self) -> Option<usize> {
        match self.target {
            RouteTarget::Component(index) => Some(index),
            RouteTarget::Upstream(_) => None,
        }
    }

    /// The component a request of this route reaches first: its first middleware, else its
    /// target component.
    #[cfg(test)]
    pub fn first_component(&self) -> Option<usize> {
        self.middleware.first().copied().or(self.component())
    }
}

/// What answers a route's requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RouteTarget {
    /// Index into [`App::components`].
    Component(usize),
    /// Index into [`App::upstreams`].
    Upstream(usize),
}

/// An HTTP service outside the app (a container, a pod, any server the manifest names) that
/// routes send their requests to, through their middleware: `[upstream.NAME]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Upstream {
    /// A DNS label, like a component id.
    pub name: String,
    /// Where it listens; requests are spread over them round-robin, skipping those that
    /// failed lately. At least one.
    pub urls: Vec<UpstreamUrl>,
    /// Longest wait for a connection to be made (`connect_timeout`, default 2 s).
    pub connect_timeout: Duration,
    /// Longest wait for the response head once the request is sent (`timeout`, default 60 s);
    /// past it the client gets 504. The body then streams for as long as it takes.
    pub timeout: Duration,
    /// How many more times a request is tried, on another address when there is one, after a
    /// failure that shows the upstream did not process it (`retries`, default 1): a refused
    /// connection, or for an idempotent request without a body a connection that broke before
    /// any answer.
    pub retries: u32,
    /// Active health checks; without them an address that fails is left out for a while
    /// (passive checks only).
    pub health_check: Option<HealthCheck>,
    /// Longest wait for each next piece of the response body once the head came
    /// (`body_idle_timeout`, default 60 s); past it the response is cut off, so a stalled
    /// upstream holds no connection open for ever. A body that keeps moving may take as long
    /// as it needs.
    #[serde(default = "upstream::default_body_idle_timeout")]
    pub body_idle_timeout: Duration,
    /// The most connections switched to another protocol (WebSocket) through this upstream
    /// at once (`websocket_limit`, default 1024); a handshake beyond it gets 503 and never
    /// reaches the upstream.
    #[serde(default = "upstream::default_websocket_limit")]
    pub websocket_limit: u32,
    /// A switched connection on which no byte has moved either way for this long is closed
    /// (`websocket_idle_timeout`, default 5 min).
    #[serde(default = "upstream::default_websocket_idle_timeout")]
    pub websocket_idle_timeout: Duration,
    /// How its `https://` addresses are trusted (`tls`); the default when not written.
    #[serde(default)]
    pub tls: UpstreamTls,
}

/// One address of an upstream: `http[s]://HOST[:PORT][/BASE]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpstreamUrl {
    /// `https://`: spoken to over TLS, its certificate checked against the host (or the
    /// upstream's `tls.server_name`).
    #[serde(default)]
    pub tls: bool,
    /// A name, an IPv4 address, or an IPv6 address without brackets; lowercase.
    pub host: String,
    /// As written, or 80 (443 for https).
    pub port: u16,
    /// A path put before each request's path: empty, or `/api` (no trailing slash).
    pub base_path: String,
}

impl std::fmt::Display for UpstreamUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let scheme = if self.tls { "https" } else { "http" };
        if self.host.contains(':') {
            write!(
                f,
                "{scheme}://[{}]:{}{}",
                self.host, self.port, self.base_path
            )
        } else {
            write!(
                f,
                "{scheme}://{}:{}{}",
                self.host, self.port, self.base_path
            )
        }
    }
}

/// `tls = { ca = "certs/ca.pem", server_name = "orders.internal" }`: how the upstream's
/// `https://` addresses are trusted. Without it, their certificates are checked against the
/// Mozilla root set for the URL's host, as a guest's outgoing requests are.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpstreamTls {
    /// A PEM file of the certificates trusted instead of the Mozilla roots (a private CA):
    /// `base_dir` joined with the path as written; it was a file when the manifest was
    /// checked. Read, and its certificates checked, when the app is loaded.
    pub ca: Option<PathBuf>,
    /// The name the certificates must be for (and sent in SNI) in place of each URL's host:
    /// for addresses written as IPs, or a service reached under another name.
    pub server_name: Option<String>,
}

/// `health_check = { path = "/healthz", interval = "5s" }`: a `GET` of `path` on every address
/// each `interval`; a 2xx or 3xx within `timeout` marks it up, anything else down.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthCheck {
    /// Starts with `/`; may carry a query.
    pub path: String,
    /// Default 5 s, at least 100 ms.
    pub interval: Duration,
    /// Default 2 s, at most `interval`.
    pub timeout: Duration,
}

/// Reads, parses and validates the manifest at `path`, including the filesystem checks.
pub fn load(path: &Path) -> Result<App, ManifestError> {
    let text = std::fs::read_to_string(path).map_err(|e| manifest_error_reading(path, &e))?;
    parse(&text, path)
}

/// [`load`], for a manifest unpacked from a bundle on a server: every path it names (a
/// component's `source`, a `files` mount, an upstream's `tls.ca`) must be written relative to
/// the manifest and stay inside its folder, and one that does not is refused before it is
/// looked at. So a hostile manifest touches none of the server's files (a FIFO would hold the
/// check for ever) and learns nothing of them (whether one exists, what it starts with). The
/// check is on the path as written: a bundle holds no links (`skiff_bundle::confine` checks
/// the resolved paths afterwards all the same).
pub fn load_in_bundle(path: &Path) -> Result<App, ManifestError> {
    let text = std::fs::read_to_string(path).map_err(|e| manifest_error_reading(path, &e))?;
    let src = error::Source { text: &text, path };
    let manifest_path = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    app::parse(&src, manifest_path, Paths::InBundle)
}

/// Where the paths a manifest names may lead.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Paths {
    /// Anywhere the user can read (`skiff up` of their own folder).
    Anywhere,
    /// Inside the manifest's folder only, checked before anything is looked at.
    InBundle,
}

impl Paths {
    /// Why `rel`, as written in the manifest, may not be followed: it is absolute, or its
    /// `..` climb out of the manifest's folder. `None` when it may.
    fn refusal(self, rel: &str) -> Option<&'static str> {
        use std::path::Component as Part;
        if self == Paths::Anywhere {
            return None;
        }
        let mut depth = 0usize;
        for part in Path::new(rel).components() {
            match part {
                Part::Prefix(_) | Part::RootDir => return Some("it is absolute"),
                Part::ParentDir if depth == 0 => {
                    return Some("its `..` lead out of the app's folder");
                }
                Part::ParentDir => depth -= 1,
                Part::Normal(_) => depth += 1,
                Part::CurDir => {}
            }
        }
        None
    }

    /// The error for `rel`, written at `span` of `field`, if it may not be followed.
    pub(crate) fn check(
        self,
        src: &error::Source,
        span: std::ops::Range<usize>,
        field: &str,
        rel: &str,
    ) -> Result<(), ManifestError> {
        match self.refusal(rel) {
            None => Ok(()),
            Some(why) => Err(src.field_error(
                span,
                field,
                format!("`{rel}` lies outside the app's folder: {why}"),
                "a deployed app reaches only the files in its bundle: put the file in the app's \
                 folder, name it relative to skiff.toml, and deploy again",
            )),
        }
    }
}

/// The error of a manifest that cannot be read.
fn manifest_error_reading(path: &Path, err: &std::io::Error) -> ManifestError {
    ManifestError {
        path: path.to_path_buf(),
        location: None,
        field: String::new(),
        message: format!("cannot read manifest `{}`: {err}", path.display()),
        help: Some("run from the folder containing skiff.toml, or pass its path".into()),
        snippet: None,
    }
}

/// Like [`load`] with the text given; files named in it are still looked up relative to
/// `path.parent()`.
pub fn parse(text: &str, path: &Path) -> Result<App, ManifestError> {
    let src = error::Source { text, path };
    // `absolute` does no I/O beyond reading the current directory, and keeps symlinks as the
    // user wrote them.
    let manifest_path = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    app::parse(&src, manifest_path, Paths::Anywhere)
}

#[cfg(test)]
mod tests;
