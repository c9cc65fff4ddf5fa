//! The client commands (`deploy`, `apps`, `tenants`, `logs`, `usage`, `login`, `logout`): talk
//! to a `skiff server`'s management API and print tables for people, or JSON with `--json`.
//!
//! Every command goes through [`Api`]: it finds the server and the token (flags, then
//! variables, then the config file `skiff login` writes), joins the URL, and turns a refused
//! connection or an [`ErrorBody`] into one message that says what to do. The formatting of
//! tables, sizes, durations and log lines is plain functions of the wire types, so that tests
//! need no server.

use std::fmt::Write as _;
use std::io::{IsTerminal, Write as _};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use anyhow::{Context, Result, anyhow};
use bytes::Bytes;
use clap::{Args, Subcommand};
use reqwest::header::{ACCEPT, CONTENT_LENGTH, CONTENT_TYPE};
use reqwest::{Method, RequestBuilder, Response, StatusCode};
use serde::de::DeserializeOwned;
use skiff_server::api::{
    AppInfo, AppList, AppStatus, AppSummary, CreateTenant, ErrorBody, ErrorCode, LimitsInfo,
    LogLine, QuotaOverrides, Quotas, TenantCreated, TenantList, TenantSummary, TokenIssued,
    UsageFigures, UsageReport, WhoAmI, check_name, paths,
};

use crate::client_config::{self, ClientConfig};

/// The management API when neither a flag, a variable nor the config file names one.
const DEFAULT_SERVER: &str = "http://127.0.0.1:3001";

/// Where the server is and who we are; flags win over the environment, which wins over the
/// config file `skiff login` writes.
#[derive(Args, Clone)]
pub struct ConnectArgs {
    /// The server's management API [default: the one `skiff login` saved, else
    /// http://127.0.0.1:3001].
    // No clap default: it would hide whether the config file should be asked.
    #[arg(long, env = "SKIFF_SERVER", value_name = "URL")]
    pub server: Option<String>,
    /// The bearer token (a tenant's; for `tenants`, the admin token, also read from
    /// SKIFF_ADMIN_TOKEN; for `usage`, either, SKIFF_ADMIN_TOKEN when SKIFF_TOKEN is unset);
    /// without one, the token `skiff login` saved.
    #[arg(
        long,
        env = "SKIFF_TOKEN",
        hide_env_values = true,
        value_name = "TOKEN"
    )]
    pub token: Option<String>,
    /// Print the server's JSON answer instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args)]
pub struct DeployArgs {
    #[command(flatten)]
    pub connect: ConnectArgs,
    /// The app's name on the server [default: the name in skiff.toml].
    #[arg(long)]
    pub name: Option<String>,
    /// The app folder (holding skiff.toml), or the manifest itself.
    #[arg(default_value = ".")]
    pub folder: PathBuf,
}

#[derive(Subcommand)]
pub enum AppsCommand {
    /// The apps deployed, one line each.
    List {
        #[command(flatten)]
        connect: ConnectArgs,
    },
    /// One app: versions, routes, components and their limits.
    Inspect {
        #[command(flatten)]
        connect: ConnectArgs,
        name: String,
    },
    /// Make the version before the live one live again.
    Rollback {
        #[command(flatten)]
        connect: ConnectArgs,
        name: String,
    },
    /// Stop serving an app and remove its versions.
    Delete {
        #[command(flatten)]
        connect: ConnectArgs,
        name: String,
    },
}

#[derive(Subcommand)]
pub enum TenantsCommand {
    /// Create a tenant; its token is printed alone on the last line.
    Create {
        #[command(flatten)]
        connect: ConnectArgs,
        #[command(flatten)]
        quotas: QuotaArgs,
        name: String,
    },
    /// The tenants, with their quotas and app counts.
    List {
        #[command(flatten)]
        connect: ConnectArgs,
    },
    /// Change some of a tenant's quotas; those not given stay as they are. A lower in-flight
    /// ceiling applies at once, the others from the tenant's next deploy.
    SetQuotas {
        #[command(flatten)]
        connect: ConnectArgs,
        #[command(flatten)]
        quotas: QuotaArgs,
        name: String,
    },
    /// Give a tenant a new token, printed alone on the last line; the old one stops working
    /// at once. A tenant's own token may rotate itself.
    RotateToken {
        #[command(flatten)]
        connect: ConnectArgs,
        name: String,
    },
    /// Take a tenant's token away: nothing is done as the tenant until `rotate-token` gives it
    /// a new one. Its apps keep serving. A tenant's own token may revoke itself.
    RevokeToken {
        #[command(flatten)]
        connect: ConnectArgs,
        name: String,
    },
    /// Delete a tenant: its token stops working, and its data goes. A tenant that still has
    /// apps is deleted only with --with-apps, which deletes them too.
    Delete {
        #[command(flatten)]
        connect: ConnectArgs,
        /// Also delete the tenant's apps.
        #[arg(long)]
        with_apps: bool,
        name: String,
    },
}

#[derive(Args)]
pub struct WhoamiArgs {
    #[command(flatten)]
    pub connect: ConnectArgs,
}

/// A new tenant's quotas; each one left out takes the server's default.
#[derive(Args, Clone, Default)]
pub struct QuotaArgs {
    /// Apps the tenant may have deployed at once.
    #[arg(long, value_name = "N")]
    pub max_apps: Option<u32>,
    /// Total size of the Wasm components of all its live apps, e.g. `256MiB`.
    #[arg(long, value_name = "SIZE", value_parser = skiff_manifest::parse_memory)]
    pub max_code_size: Option<u64>,
    /// Requests of all its apps running at once; more get 503.
    #[arg(long, value_name = "N")]
    pub max_in_flight: Option<u32>,
    /// Highest `limits.memory` one of its components may ask for, e.g. `256MiB`.
    #[arg(long, value_name = "SIZE", value_parser = skiff_manifest::parse_memory)]
    pub max_memory: Option<u64>,
    /// Highest `limits.timeout` one of its components may ask for, e.g. `60s`.
    #[arg(long, value_name = "DURATION", value_parser = crate::single::parse_timeout)]
    pub max_timeout: Option<Duration>,
    /// Bytes on disk of all its apps (every version kept, writable files, key-value data),
    /// e.g. `2GiB`.
    #[arg(long, value_name = "SIZE", value_parser = skiff_manifest::parse_memory)]
    pub max_disk: Option<u64>,
}

impl QuotaArgs {
    fn overrides(&self) -> QuotaOverrides {
        QuotaOverrides {
            max_apps: self.max_apps,
            max_code_bytes: self.max_code_size,
            max_in_flight: self.max_in_flight,
            max_memory_bytes: self.max_memory,
            max_timeout_ms: self
                .max_timeout
                .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
            max_disk_bytes: self.max_disk,
        }
    }
}

#[derive(Args)]
pub struct LogsArgs {
    #[command(flatten)]
    pub connect: ConnectArgs,
    /// Keep printing new lines as they come.
    #[arg(long, short)]
    pub follow: bool,
    /// Lines from the past to print first.
    #[arg(long, default_value_t = 100)]
    pub tail: u32,
    pub name: String,
}

#[derive(Args)]
pub struct UsageArgs {
    #[command(flatten)]
    pub connect: ConnectArgs,
    /// The start of the range: a UTC time (`2025-01-31T00:00:00Z`, or a day, `2025-01-31`),
    /// or how long ago (`1h`, `24h`, `7d`) [default: 24 hours before --to].
    #[arg(long, value_name = "TIME", value_parser = parse_when)]
    pub from: Option<SystemTime>,
    /// The end of the range, written the same way [default: now].
    #[arg(long, value_name = "TIME", value_parser = parse_when)]
    pub to: Option<SystemTime>,
    /// One tenant's apps only (with the admin token; a tenant's token sees its own anyway).
    #[arg(long, value_name = "NAME")]
    pub tenant: Option<String>,
}

#[derive(Args)]
pub struct LoginArgs {
    /// The server's management API [default: the one saved before, else
    /// http://127.0.0.1:3001].
    #[arg(long, env = "SKIFF_SERVER", value_name = "URL")]
    pub server: Option<String>,
    /// The token to save, a tenant's or the admin token [default: the first line of stdin,
    /// asked for without echo on a terminal].
    #[arg(long, value_name = "TOKEN")]
    pub token: Option<String>,
}

// Each command prints its own failure and answers exit code 1, rather than handing an error to
// main: a manifest report (local or from the server) must be printed verbatim, without the
// `error: ` prefix main would put in front of its own `error: `.

pub async fn deploy(args: DeployArgs) -> Result<ExitCode> {
    Ok(finish(run_deploy(args).await))
}

pub async fn apps(command: AppsCommand) -> Result<ExitCode> {
    Ok(finish(run_apps(command).await))
}

pub async fn tenants(command: TenantsCommand) -> Result<ExitCode> {
    Ok(finish(run_tenants(command).await))
}

pub async fn whoami(args: WhoamiArgs) -> Result<ExitCode> {
    Ok(finish(run_whoami(args).await))
}

pub async fn logs(args: LogsArgs) -> Result<ExitCode> {
    Ok(finish(run_logs(args).await))
}

pub async fn usage(args: UsageArgs) -> Result<ExitCode> {
    Ok(finish(run_usage(args).await))
}

pub async fn login(args: LoginArgs) -> Result<ExitCode> {
    Ok(finish(run_login(args).await))
}

pub fn logout() -> Result<ExitCode> {
    Ok(finish(run_logout()))
}

fn finish(outcome: Result<()>) -> ExitCode {
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("{}", render_error(&err));
            ExitCode::FAILURE
        }
    }
}

/// `error: ` and the message, unless the message is already a full report that starts so
/// (a manifest error, from our own check or from the server's).
fn render_error(err: &anyhow::Error) -> String {
    let text = format!("{err:#}");
    if text.starts_with("error:") || text.starts_with("error[") {
        text
    } else {
        format!("error: {text}")
    }
}

// ---------------------------------------------------------------------------------------------
// The connection

/// Whose token a command needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    /// A tenant's: apps, deploy, logs.
    Tenant,
    /// The server's admin token: tenants.
    Admin,
    /// Either, for a tenant's own figures or every tenant's: usage.
    Any,
}

/// A token and where it came from, to name the right flag, variable or file when it is
/// refused.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Token {
    value: String,
    from: String,
}

/// Picks the bearer token. `given` is `--token`, which clap also fills from SKIFF_TOKEN;
/// `env_token` and `env_admin` are the SKIFF_TOKEN and SKIFF_ADMIN_TOKEN variables.
///
/// For admin commands SKIFF_ADMIN_TOKEN wins over SKIFF_TOKEN, so that one shell can hold both
/// a tenant's token and the admin token; an explicit `--token` wins over both. clap does not say
/// whether `given` came from the flag or the variable: a value equal to SKIFF_TOKEN is taken to
/// be the variable's. Commands that take either token use SKIFF_ADMIN_TOKEN only when neither
/// `--token` nor SKIFF_TOKEN gives one.
///
/// `None` is not an error here: a server started with `--insecure-dev` takes calls without a
/// token. Any other server answers 401, and [`error_message`] then says what to set.
fn resolve_token(
    role: Role,
    given: Option<&str>,
    env_token: Option<&str>,
    env_admin: Option<&str>,
) -> Option<Token> {
    let present = |v: Option<&str>| v.filter(|v| !v.trim().is_empty()).map(str::to_owned);
    let given = present(given);
    let env_token = present(env_token);
    let env_admin = present(env_admin);
    let from_env = given.is_some() && given == env_token;
    let token = |value, from: &str| {
        Some(Token {
            value,
            from: from.into(),
        })
    };
    match (role, given, env_admin) {
        (Role::Tenant, Some(value), _) if from_env => token(value, "SKIFF_TOKEN"),
        (Role::Tenant, Some(value), _) => token(value, "--token"),
        (Role::Tenant, None, _) => None,
        (Role::Admin, Some(value), _) if !from_env => token(value, "--token"),
        (Role::Admin, _, Some(value)) => token(value, "SKIFF_ADMIN_TOKEN"),
        (Role::Admin, Some(value), None) => token(value, "SKIFF_TOKEN"),
        (Role::Admin, None, None) => None,
        (Role::Any, Some(value), _) if from_env => token(value, "SKIFF_TOKEN"),
        (Role::Any, Some(value), _) => token(value, "--token"),
        (Role::Any, None, Some(value)) => token(value, "SKIFF_ADMIN_TOKEN"),
        (Role::Any, None, None) => None,
    }
}

/// The token `skiff login` saved, named by its file for messages about it: the last fallback
/// after [`resolve_token`], for every role (one may log in with the admin token as well as a
/// tenant's).
fn saved_token(saved: Option<&ClientConfig>) -> Option<Token> {
    let saved = saved?;
    Some(Token {
        value: saved.token()?.to_string(),
        from: format!("{} (skiff login)", saved.path.display()),
    })
}

/// Where the management API's address came from, to say where to change it.
#[derive(Debug, Clone, PartialEq, Eq)]
enum ServerFrom {
    /// `--server` or SKIFF_SERVER (clap does not tell which).
    Given,
    ConfigFile(PathBuf),
    Default,
}

/// The management API's address: `given` (`--server`, which clap also fills from
/// SKIFF_SERVER), else the one `skiff login` saved, else [`DEFAULT_SERVER`].
fn resolve_server(given: Option<&str>, saved: Option<&ClientConfig>) -> (String, ServerFrom) {
    if let Some(server) = given {
        return (server.to_string(), ServerFrom::Given);
    }
    if let Some(config) = saved
        && let Some(server) = config.server()
    {
        return (
            server.to_string(),
            ServerFrom::ConfigFile(config.path.clone()),
        );
    }
    (DEFAULT_SERVER.to_string(), ServerFrom::Default)
}

/// The config file at its usual place (see [`client_config::default_path`]), if there is one.
fn load_saved_config() -> Result<Option<ClientConfig>> {
    match client_config::default_path() {
        Some(path) => ClientConfig::load(&path),
        None => Ok(None),
    }
}

/// What to do about a token the server `refused` (401: unknown), or that is not allowed (403:
/// a tenant's token on an admin route), or the lack of one.
fn token_help(token: Option<&Token>, role: Role, refused: bool) -> String {
    let (what, fix) = match role {
        Role::Tenant => (
            "a tenant's token",
            "pass it with --token TOKEN or set SKIFF_TOKEN (`skiff tenants create NAME` prints \
             one), or save it with `skiff login`",
        ),
        Role::Admin => (
            "the admin token",
            "pass it with --token TOKEN or set SKIFF_ADMIN_TOKEN (the token `skiff server` was \
             started with), or save it with `skiff login`",
        ),
        Role::Any => (
            "a tenant's token or the admin token",
            "pass it with --token TOKEN or set SKIFF_TOKEN (or SKIFF_ADMIN_TOKEN, for every \
             tenant's figures), or save one with `skiff login`",
        ),
    };
    match (token, refused) {
        (None, _) => format!("no token was given; this call needs {what}: {fix}"),
        (Some(token), true) => format!(
            "the token from {} was refused; this call needs {what}: {fix}",
            token.from
        ),
        (Some(token), false) => format!(
            "the token from {} is a tenant's; this call needs {what}: {fix}",
            token.from
        ),
    }
}

/// The server's address as given, checked and without trailing slashes, so that paths can be
/// appended to it.
fn base_url(server: &str) -> Result<String, String> {
    check_base_url(server).map_err(|problem| {
        format!("{problem}; write e.g. --server http://127.0.0.1:3001 (or set SKIFF_SERVER)")
    })
}

/// [`base_url`] for an address from anywhere: the fix in the error names where it came from.
fn server_base(server: &str, from: &ServerFrom) -> Result<String, String> {
    match from {
        ServerFrom::ConfigFile(path) => check_base_url(server).map_err(|problem| {
            format!(
                "`server` in the client config file {}: {problem}; correct it there, run \
                 `skiff login --server URL` again, or pass --server",
                path.display()
            )
        }),
        ServerFrom::Given | ServerFrom::Default => base_url(server),
    }
}

/// [`base_url`] without the fix: only what is wrong.
fn check_base_url(server: &str) -> Result<String, String> {
    let trimmed = server.trim().trim_end_matches('/');
    let url = reqwest::Url::parse(trimmed).map_err(|e| format!("`{server}` is not a URL ({e})"))?;
    if !matches!(url.scheme(), "http" | "https") || !url.has_host() {
        return Err(format!("`{server}` is not an http:// or https:// URL"));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(format!(
            "`{server}` has a query or fragment; give only the server's address"
        ));
    }
    Ok(trimmed.to_string())
}

/// `base` (from [`base_url`]) joined with an API path that starts with `/`.
fn endpoint(base: &str, path: &str) -> String {
    format!("{base}{path}")
}

/// The path of one app; the name is checked first so that it cannot escape its segment.
fn app_path(name: &str, rest: &str) -> Result<String> {
    check_name("app", name).map_err(|e| anyhow!(e))?;
    Ok(format!("{}/{name}{rest}", paths::APPS))
}

/// One server's management API, with the token for one command.
struct Api {
    base: String,
    server_from: ServerFrom,
    token: Option<Token>,
    role: Role,
    http: reqwest::Client,
}

impl Api {
    fn new(connect: &ConnectArgs, role: Role) -> Result<Api> {
        let env = |name| std::env::var(name).ok();
        let (env_token, env_admin) = (env("SKIFF_TOKEN"), env("SKIFF_ADMIN_TOKEN"));
        let given = resolve_token(
            role,
            connect.token.as_deref(),
            env_token.as_deref(),
            env_admin.as_deref(),
        );
        // Read only when flags and variables leave something open: a broken config file must
        // not stand in the way of a command that needs nothing from it.
        let saved = if connect.server.is_none() || given.is_none() {
            load_saved_config()?
        } else {
            None
        };
        let (server, server_from) = resolve_server(connect.server.as_deref(), saved.as_ref());
        let base = server_base(&server, &server_from).map_err(|e| anyhow!(e))?;
        let token = given.or_else(|| saved_token(saved.as_ref()));
        Api::with(base, server_from, token, role)
    }

    fn with(
        base: String,
        server_from: ServerFrom,
        token: Option<Token>,
        role: Role,
    ) -> Result<Api> {
        let http = reqwest::Client::builder()
            // Only the connection gets a deadline: a deploy compiles on the server before it
            // answers, and `logs --follow` is meant to stay open.
            .connect_timeout(Duration::from_secs(10))
            .user_agent(concat!("skiff/", env!("CARGO_PKG_VERSION")))
            .build()
            .context("cannot set up the HTTP client")?;
        Ok(Api {
            base,
            server_from,
            token,
            role,
            http,
        })
    }

    fn request(&self, method: Method, path: &str) -> RequestBuilder {
        let request = self.http.request(method, endpoint(&self.base, path));
        match &self.token {
            Some(token) => request.bearer_auth(&token.value),
            None => request,
        }
    }

    /// Sends `request`; a transport failure or a non-2xx answer becomes a message for people.
    async fn send(&self, request: RequestBuilder) -> Result<Response> {
        let response = request
            .send()
            .await
            .map_err(|e| anyhow!(self.transport_message(&e)))?;
        let status = response.status();
        if status.is_success() {
            return Ok(response);
        }
        // The body of an error is small; if even it cannot be read, the status alone must do.
        let body = response.bytes().await.unwrap_or_default();
        Err(anyhow!(error_message(
            status,
            &body,
            self.token.as_ref(),
            self.role
        )))
    }

    fn transport_message(&self, err: &reqwest::Error) -> String {
        transport_message(&self.base, &self.server_from, err)
    }

    /// Sends `request` and reads the whole (JSON) answer.
    async fn fetch(&self, request: RequestBuilder) -> Result<(StatusCode, Bytes)> {
        let response = self
            .send(request.header(ACCEPT, "application/json"))
            .await?;
        let status = response.status();
        let body = response
            .bytes()
            .await
            .map_err(|e| anyhow!(self.transport_message(&e)))?;
        Ok((status, body))
    }

    /// Sends `request` and prints the answer: as it came (re-indented) with `--json`, else
    /// decoded and formatted by `human`.
    async fn show<T: DeserializeOwned>(
        &self,
        request: RequestBuilder,
        json: bool,
        human: impl FnOnce(T) -> String,
    ) -> Result<()> {
        let (_, body) = self.fetch(request).await?;
        let text = if json {
            pretty_json(&body)?
        } else {
            human(decode(&body)?)
        };
        print!("{text}");
        Ok(())
    }
}

fn decode<T: DeserializeOwned>(body: &[u8]) -> Result<T> {
    serde_json::from_slice(body).map_err(|e| {
        anyhow!(
            "the server's answer is not the JSON this client expects ({e}); is the skiff server \
             the same version as this client?"
        )
    })
}

/// The server's JSON, indented for people, with its fields in the order the server sent them
/// (a `serde_json::Value` would sort them).
fn pretty_json(body: &[u8]) -> Result<String> {
    let mut out = Vec::new();
    let mut reader = serde_json::Deserializer::from_slice(body);
    let mut writer = serde_json::Serializer::pretty(&mut out);
    serde_transcode::transcode(&mut reader, &mut writer)
        .and_then(|()| reader.end())
        .map_err(|e| anyhow!("the server's answer is not JSON ({e})"))?;
    let mut text = String::from_utf8(out).context("serde_json wrote text that is not UTF-8")?;
    text.push('\n');
    Ok(text)
}

/// Why a request never got an answer, and what to check.
fn transport_message(base: &str, server_from: &ServerFrom, err: &reqwest::Error) -> String {
    // reqwest's own text is "error sending request for url (...)"; the cause at the bottom of
    // the chain ("Connection refused", "dns error: ...") is the part that helps.
    let mut cause: &dyn std::error::Error = err;
    while let Some(source) = cause.source() {
        cause = source;
    }
    if err.is_connect() {
        let change = match server_from {
            ServerFrom::Given => "set --server or SKIFF_SERVER".to_string(),
            ServerFrom::ConfigFile(path) => format!(
                "the address is from {}: pass --server, or run `skiff login --server URL` again",
                path.display()
            ),
            ServerFrom::Default => {
                "set --server or SKIFF_SERVER, or save one with `skiff login --server URL`".into()
            }
        };
        format!(
            "cannot reach the skiff server at {base}: {cause}; is `skiff server` running? \
             ({change})"
        )
    } else if err.is_timeout() {
        format!("the skiff server at {base} did not answer in time: {cause}")
    } else {
        format!("talking to the skiff server at {base} failed: {cause}")
    }
}

/// The message of a non-2xx answer: the server's [`ErrorBody`] message, verbatim (it may be a
/// whole manifest report), plus a hint where the client knows better than the server what to
/// do (which flag or variable gave the refused token).
fn error_message(status: StatusCode, body: &[u8], token: Option<&Token>, role: Role) -> String {
    let Ok(parsed) = serde_json::from_slice::<ErrorBody>(body) else {
        let text = String::from_utf8_lossy(body);
        let text = text.trim();
        let shown: String = text.chars().take(200).collect();
        let shown = if shown.is_empty() {
            String::new()
        } else {
            format!(": {shown}")
        };
        return format!(
            "the server answered {status}{shown}; that is not a skiff management API answer: \
             is --server (or SKIFF_SERVER) the address of `skiff server`'s API listener?"
        );
    };
    let message = parsed.error.message.trim_end().to_string();
    let hint = match parsed.error.code {
        ErrorCode::Unauthorized => Some(token_help(token, role, true)),
        // A tenant's token on an admin route; the reverse (the admin token on an app route)
        // is explained well enough by the server.
        ErrorCode::Forbidden if role == Role::Admin => Some(token_help(token, role, false)),
        _ => None,
    };
    match hint {
        Some(hint) => format!("{message}\n  help: {hint}"),
        None => message,
    }
}

// ---------------------------------------------------------------------------------------------
// deploy

async fn run_deploy(args: DeployArgs) -> Result<()> {
    let api = Api::new(&args.connect, Role::Tenant)?;
    let manifest = if args.folder.is_dir() {
        args.folder.join("skiff.toml")
    } else {
        args.folder.clone()
    };
    // The manifest first: a mistake in it is the likeliest failure, and needs no server.
    let name = {
        let manifest = manifest.clone();
        let given_name = args.name.clone();
        tokio::task::spawn_blocking(move || app_name(&manifest, given_name))
            .await
            .context("reading the manifest")??
    };
    // Then something cheap of the server: an unreachable server or a refused token is reported
    // before a big folder is packed, and before an upload the server would cut off.
    api.send(api.request(Method::GET, paths::APPS)).await?;

    let progress = Progress::start(std::io::stderr().is_terminal());
    progress.set(Phase::Packing);
    // No context in front of a pack error: a manifest report must print as it is, starting
    // with `error:`.
    let bundle = tokio::task::spawn_blocking(move || {
        skiff_server::bundle::pack(&manifest).map_err(|e| anyhow!("{e}"))
    })
    .await
    .context("packing the app")??;

    let total = bundle.bytes.len() as u64;
    progress.set(Phase::Uploading {
        total,
        files: bundle.files,
    });
    let body = upload_body(Bytes::from(bundle.bytes), progress.clone());
    let request = api
        .request(Method::PUT, &app_path(&name, "")?)
        .header(CONTENT_TYPE, "application/gzip")
        // A streamed body has no length of its own; giving it lets the server refuse an
        // oversized bundle (413) before reading it.
        .header(CONTENT_LENGTH, total)
        .body(body);
    let outcome = api.fetch(request).await;
    progress.finish();
    let (status, body) = outcome?;
    if args.connect.json {
        print!("{}", pretty_json(&body)?);
        return Ok(());
    }
    let info: AppInfo = decode(&body).with_context(|| {
        format!("the server deployed `{name}`; `skiff apps inspect {name}` shows it")
    })?;
    print!("{}", format_deployed(&info, status == StatusCode::CREATED));
    Ok(())
}

/// The app's name on the server: `--name`, else `[app] name` from the manifest, which is read
/// (blocking) and checked in full, so that a bad manifest gets the report `skiff up` prints.
fn app_name(manifest: &Path, given_name: Option<String>) -> Result<String> {
    let app = skiff_manifest::load(manifest)?;
    match given_name {
        Some(name) => {
            check_name("app", &name).map_err(|e| anyhow!("--name: {e}"))?;
            Ok(name)
        }
        None => {
            check_name("app", &app.name).map_err(|e| {
                anyhow!(
                    "{e}; change `[app] name` in {} or pass --name",
                    manifest.display()
                )
            })?;
            Ok(app.name)
        }
    }
}

/// The bundle as a streamed body, so that the progress line can show how much has been sent.
fn upload_body(bytes: Bytes, progress: Progress) -> reqwest::Body {
    const CHUNK: usize = 64 * 1024;
    let chunks: Vec<Bytes> = (0..bytes.len())
        .step_by(CHUNK)
        .map(|start| bytes.slice(start..(start + CHUNK).min(bytes.len())))
        .collect();
    // `map` runs as hyper pulls each chunk, i.e. as it is written to the connection.
    let stream = futures_util::stream::iter(chunks.into_iter().map(move |chunk| {
        progress.sent(chunk.len() as u64);
        Ok::<_, std::convert::Infallible>(chunk)
    }));
    reqwest::Body::wrap_stream(stream)
}

/// `Deployed NAME version V (new|updated)`, the URL, then one line per route.
fn format_deployed(info: &AppInfo, new: bool) -> String {
    let s = &info.summary;
    let mut out = format!(
        "Deployed {} version {} ({})\n{}\n",
        s.name,
        s.version,
        if new { "new" } else { "updated" },
        s.url
    );
    if !info.routes.is_empty() {
        out.push_str("Routes:\n");
        for route in &info.routes {
            let _ = writeln!(
                out,
                "  {}: {}",
                route.component,
                route_url(&s.url, &route.route)
            );
        }
    }
    out
}

/// Where a route is served, shown as `skiff up` shows it: `/api/...` becomes
/// `URL/api (wildcard)`.
fn route_url(app_url: &str, route: &str) -> String {
    let wildcard = if route.ends_with("...") {
        " (wildcard)"
    } else {
        ""
    };
    let path = route.trim_end_matches("...").trim_end_matches('/');
    let path = if path.is_empty() { "/" } else { path };
    format!("{}{path}{wildcard}", app_url.trim_end_matches('/'))
}

// ---------------------------------------------------------------------------------------------
// Progress on a terminal

/// What a deploy is doing, for the progress line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Packing,
    Uploading { total: u64, files: usize },
}

/// The progress line's text: once the whole bundle is sent, the server is compiling.
fn phase_text(phase: Phase, sent: u64) -> String {
    match phase {
        Phase::Packing => "Packing…".into(),
        Phase::Uploading { total, files } if sent < total => {
            let percent = sent.saturating_mul(100) / total.max(1);
            let noun = if files == 1 { "file" } else { "files" };
            format!(
                "Uploading {} ({files} {noun})… {percent}%",
                skiff_manifest::format_size(total)
            )
        }
        Phase::Uploading { .. } => "Compiling and checking…".into(),
    }
}

/// A one-line spinner on stderr, only when stderr is a terminal: a log file or a pipe gets
/// nothing. Cheap to clone; [`Progress::finish`] (or dropping the last clone) clears the line.
#[derive(Clone)]
struct Progress(Option<Arc<ProgressState>>);

struct ProgressState {
    phase: Mutex<Phase>,
    sent: AtomicU64,
    /// Set under `draw`'s lock, so that no frame is drawn after the line is cleared.
    stopped: AtomicBool,
    draw: Mutex<()>,
}

impl Progress {
    fn start(enabled: bool) -> Progress {
        if !enabled {
            return Progress(None);
        }
        let state = Arc::new(ProgressState {
            phase: Mutex::new(Phase::Packing),
            sent: AtomicU64::new(0),
            stopped: AtomicBool::new(false),
            draw: Mutex::new(()),
        });
        let ticker = Arc::downgrade(&state);
        tokio::spawn(async move {
            const FRAMES: [char; 10] = ['⠋', '⠙', '⠹', '⠸', '⠼', '⠴', '⠦', '⠧', '⠇', '⠏'];
            let mut interval = tokio::time::interval(Duration::from_millis(100));
            for frame in FRAMES.iter().cycle() {
                interval.tick().await;
                // The ticker holds only a weak reference: it ends with the last `Progress`.
                let Some(state) = ticker.upgrade() else { break };
                let _guard = state.draw.lock().unwrap_or_else(|e| e.into_inner());
                if state.stopped.load(Ordering::Acquire) {
                    break;
                }
                let phase = *state.phase.lock().unwrap_or_else(|e| e.into_inner());
                let text = phase_text(phase, state.sent.load(Ordering::Relaxed));
                let mut stderr = std::io::stderr().lock();
                let _ = write!(stderr, "\r\x1b[2K{frame} {text}");
                let _ = stderr.flush();
            }
        });
        Progress(Some(state))
    }

    fn set(&self, phase: Phase) {
        if let Some(state) = &self.0 {
            *state.phase.lock().unwrap_or_else(|e| e.into_inner()) = phase;
            state.sent.store(0, Ordering::Relaxed);
        }
    }

    fn sent(&self, bytes: u64) {
        if let Some(state) = &self.0 {
            state.sent.fetch_add(bytes, Ordering::Relaxed);
        }
    }

    /// Clears the line, so that the result or the error prints on a clean one.
    fn finish(&self) {
        if let Some(state) = &self.0 {
            let _guard = state.draw.lock().unwrap_or_else(|e| e.into_inner());
            if !state.stopped.swap(true, Ordering::AcqRel) {
                let mut stderr = std::io::stderr().lock();
                let _ = write!(stderr, "\r\x1b[2K");
                let _ = stderr.flush();
            }
        }
    }
}

impl Drop for ProgressState {
    fn drop(&mut self) {
        // An early `?` return skips `finish`; the line must not be left behind.
        if !self.stopped.load(Ordering::Acquire) {
            let _ = write!(std::io::stderr(), "\r\x1b[2K");
        }
    }
}

// ---------------------------------------------------------------------------------------------
// apps

async fn run_apps(command: AppsCommand) -> Result<()> {
    match command {
        AppsCommand::List { connect } => {
            let api = Api::new(&connect, Role::Tenant)?;
            let request = api.request(Method::GET, paths::APPS);
            api.show(request, connect.json, |list: AppList| {
                format_app_list(&list, SystemTime::now())
            })
            .await
        }
        AppsCommand::Inspect { connect, name } => {
            let api = Api::new(&connect, Role::Tenant)?;
            let request = api.request(Method::GET, &app_path(&name, "")?);
            api.show(request, connect.json, |info: AppInfo| {
                format_app_info(&info, SystemTime::now())
            })
            .await
        }
        AppsCommand::Rollback { connect, name } => {
            let api = Api::new(&connect, Role::Tenant)?;
            let request = api.request(Method::POST, &app_path(&name, "/rollback")?);
            api.show(request, connect.json, |info: AppInfo| {
                format!(
                    "{}: version {} is live again\n",
                    info.summary.name, info.summary.version
                )
            })
            .await
        }
        AppsCommand::Delete { connect, name } => {
            let api = Api::new(&connect, Role::Tenant)?;
            api.send(api.request(Method::DELETE, &app_path(&name, "")?))
                .await?;
            // The server answers 204 with no body, so `--json` has nothing to print; the exit
            // code says it worked.
            if !connect.json {
                println!("deleted {name}");
            }
            Ok(())
        }
    }
}

fn status_text(status: AppStatus) -> &'static str {
    match status {
        AppStatus::Live => "live",
        AppStatus::Idle => "idle",
    }
}

fn format_app_list(list: &AppList, now: SystemTime) -> String {
    if list.apps.is_empty() {
        return "no apps deployed; deploy one with `skiff deploy FOLDER`\n".into();
    }
    let rows: Vec<Vec<String>> = list
        .apps
        .iter()
        .map(|app: &AppSummary| {
            vec![
                app.name.clone(),
                app.version.to_string(),
                app.app_version.clone(),
                status_text(app.status).into(),
                format_age(&app.deployed_at, now),
                app.url.clone(),
            ]
        })
        .collect();
    table(
        &[
            "NAME",
            "VERSION",
            "APP-VERSION",
            "STATUS",
            "DEPLOYED",
            "URL",
        ],
        &rows,
        "",
    )
}

fn format_app_info(info: &AppInfo, now: SystemTime) -> String {
    let s = &info.summary;
    let mut out = String::new();
    let _ = writeln!(out, "{}", s.name);
    let _ = writeln!(out, "  tenant:   {}", info.tenant);
    let _ = writeln!(out, "  url:      {}", s.url);
    let _ = writeln!(out, "  status:   {}", status_text(s.status));
    let _ = writeln!(
        out,
        "  live:     version {} (app version {}), deployed {} ({})",
        s.version,
        s.app_version,
        s.deployed_at,
        format_age(&s.deployed_at, now)
    );

    out.push_str("\nRoutes:\n");
    if info.routes.is_empty() {
        out.push_str("  none\n");
    } else {
        let rows: Vec<Vec<String>> = info
            .routes
            .iter()
            .map(|r| {
                vec![
                    r.route.clone(),
                    r.component.clone(),
                    route_url(&s.url, &r.route),
                ]
            })
            .collect();
        out.push_str(&table(&["ROUTE", "COMPONENT", "URL"], &rows, "  "));
    }

    out.push_str("\nComponents:\n");
    let rows: Vec<Vec<String>> = info
        .components
        .iter()
        .map(|c| {
            let [memory, timeout, concurrency, fuel] = limit_cells(&c.limits);
            vec![
                c.id.clone(),
                c.source.clone(),
                skiff_manifest::format_size(c.code_bytes),
                memory,
                timeout,
                concurrency,
                fuel,
            ]
        })
        .collect();
    out.push_str(&table(
        &[
            "ID",
            "SOURCE",
            "CODE",
            "MEMORY",
            "TIMEOUT",
            "CONCURRENCY",
            "FUEL",
        ],
        &rows,
        "  ",
    ));

    out.push_str("\nVersions (newest first, * = live):\n");
    let rows: Vec<Vec<String>> = info
        .versions
        .iter()
        .map(|v| {
            vec![
                if v.live { "*" } else { "" }.into(),
                v.version.to_string(),
                v.app_version.clone(),
                v.deployed_at.clone(),
                format_age(&v.deployed_at, now),
            ]
        })
        .collect();
    out.push_str(&table(
        &["", "VERSION", "APP-VERSION", "DEPLOYED", "AGE"],
        &rows,
        "  ",
    ));
    out
}

/// Memory, timeout, concurrency and fuel, for people; `none` where there is no limit.
fn limit_cells(limits: &LimitsInfo) -> [String; 4] {
    let none = || "none".to_string();
    [
        limits
            .memory_bytes
            .map_or_else(none, skiff_manifest::format_size),
        format_ms(limits.timeout_ms),
        limits.max_concurrency.map_or_else(none, |n| n.to_string()),
        limits.fuel.map_or_else(none, |n| n.to_string()),
    ]
}

// ---------------------------------------------------------------------------------------------
// tenants

async fn run_tenants(command: TenantsCommand) -> Result<()> {
    match command {
        TenantsCommand::Create {
            connect,
            quotas,
            name,
        } => {
            check_name("tenant", &name).map_err(|e| anyhow!(e))?;
            let api = Api::new(&connect, Role::Admin)?;
            let body = CreateTenant {
                name,
                quotas: quotas.overrides(),
            };
            let request = api.request(Method::POST, paths::TENANTS).json(&body);
            api.show(request, connect.json, |created: TenantCreated| {
                format_tenant_created(&created)
            })
            .await
        }
        TenantsCommand::List { connect } => {
            let api = Api::new(&connect, Role::Admin)?;
            let request = api.request(Method::GET, paths::TENANTS);
            api.show(request, connect.json, |list: TenantList| {
                format_tenant_list(&list)
            })
            .await
        }
        TenantsCommand::SetQuotas {
            connect,
            quotas,
            name,
        } => {
            check_name("tenant", &name).map_err(|e| anyhow!(e))?;
            let api = Api::new(&connect, Role::Admin)?;
            let request = api
                .request(Method::PATCH, &paths::tenant(&name))
                .json(&quotas.overrides());
            api.show(request, connect.json, |tenant: TenantSummary| {
                format!(
                    "tenant {}\n  quotas: {}\n",
                    tenant.name,
                    format_quotas(&tenant.quotas)
                )
            })
            .await
        }
        TenantsCommand::RotateToken { connect, name } => {
            check_name("tenant", &name).map_err(|e| anyhow!(e))?;
            let api = Api::new(&connect, Role::Any)?;
            let request = api.request(Method::POST, &paths::tenant_token(&name));
            api.show(request, connect.json, |issued: TokenIssued| {
                format!(
                    "New token of tenant {} (shown only now; the old one no longer works):\n{}\n",
                    issued.name, issued.token
                )
            })
            .await
        }
        TenantsCommand::RevokeToken { connect, name } => {
            check_name("tenant", &name).map_err(|e| anyhow!(e))?;
            let api = Api::new(&connect, Role::Any)?;
            api.send(api.request(Method::DELETE, &paths::tenant_token(&name)))
                .await?;
            if !connect.json {
                println!(
                    "revoked the token of tenant {name}; `skiff tenants rotate-token {name}` \
                     gives it a new one"
                );
            }
            Ok(())
        }
        TenantsCommand::Delete {
            connect,
            with_apps,
            name,
        } => {
            check_name("tenant", &name).map_err(|e| anyhow!(e))?;
            let api = Api::new(&connect, Role::Admin)?;
            let path = format!("{}?with_apps={with_apps}", paths::tenant(&name));
            api.send(api.request(Method::DELETE, &path)).await?;
            if !connect.json {
                println!("deleted tenant {name}");
            }
            Ok(())
        }
    }
}

async fn run_whoami(args: WhoamiArgs) -> Result<()> {
    let api = Api::new(&args.connect, Role::Any)?;
    let request = api.request(Method::GET, paths::WHOAMI);
    let base = api.base.clone();
    api.show(request, args.connect.json, |who: WhoAmI| {
        format_whoami(&who, &base)
    })
    .await
}

fn format_whoami(who: &WhoAmI, server: &str) -> String {
    match (&who.tenant, &who.quotas) {
        (Some(tenant), Some(quotas)) => format!(
            "tenant {tenant} on {server}\n  quotas: {}\n",
            format_quotas(quotas)
        ),
        _ => format!("the admin of {server}\n"),
    }
}

fn format_quotas(q: &Quotas) -> String {
    format!(
        "{} apps, {} of code, {} on disk, {} requests in flight, {} memory and {} timeout per \
         component",
        q.max_apps,
        skiff_manifest::format_size(q.max_code_bytes),
        skiff_manifest::format_size(q.max_disk_bytes),
        q.max_in_flight,
        skiff_manifest::format_size(q.max_memory_bytes),
        format_ms(q.max_timeout_ms)
    )
}

/// Scripts take the token with `tail -n1`: it must stay alone on the last line.
fn format_tenant_created(created: &TenantCreated) -> String {
    format!(
        "Created tenant {}\n  quotas: {}\nIts token (shown only now; the tenant passes it as \
         --token or SKIFF_TOKEN):\n{}\n",
        created.name,
        format_quotas(&created.quotas),
        created.token
    )
}

fn format_tenant_list(list: &TenantList) -> String {
    if list.tenants.is_empty() {
        return "no tenants; create one with `skiff tenants create NAME`\n".into();
    }
    let rows: Vec<Vec<String>> = list
        .tenants
        .iter()
        .map(|t| {
            let q = &t.quotas;
            vec![
                t.name.clone(),
                format!("{}/{}", t.apps, q.max_apps),
                skiff_manifest::format_size(q.max_code_bytes),
                q.max_in_flight.to_string(),
                skiff_manifest::format_size(q.max_memory_bytes),
                format_ms(q.max_timeout_ms),
            ]
        })
        .collect();
    table(
        &[
            "NAME",
            "APPS",
            "MAX-CODE",
            "MAX-IN-FLIGHT",
            "MAX-MEMORY",
            "MAX-TIMEOUT",
        ],
        &rows,
        "",
    )
}

// ---------------------------------------------------------------------------------------------
// logs

async fn run_logs(args: LogsArgs) -> Result<()> {
    let api = Api::new(&args.connect, Role::Tenant)?;
    let path = app_path(&args.name, "/logs")?;
    let request = api
        .request(Method::GET, &path)
        .query(&[
            ("follow", args.follow.to_string()),
            ("tail", args.tail.to_string()),
        ])
        .header(ACCEPT, "application/x-ndjson");
    let json = args.connect.json;
    let stream = async {
        let mut response = api.send(request).await?;
        let mut lines = LineSplitter::default();
        let mut stdout = std::io::stdout();
        loop {
            let chunk = response
                .chunk()
                .await
                .map_err(|e| anyhow!("the log stream broke off: {}", api.transport_message(&e)))?;
            let complete = match &chunk {
                Some(chunk) => lines.push(chunk),
                // The server ended the stream (the end of the tail without --follow, or the
                // server stopping): print a last line that had no newline, and stop.
                None => lines.finish().into_iter().collect(),
            };
            for line in complete {
                let text = if json {
                    String::from_utf8_lossy(&line).into_owned()
                } else {
                    format_log_bytes(&line)
                };
                if let Err(err) = writeln!(stdout, "{text}") {
                    // `skiff logs app | head` closes the pipe: that is the reader being done,
                    // not a failure.
                    if err.kind() == std::io::ErrorKind::BrokenPipe {
                        return Ok(());
                    }
                    return Err(err).context("cannot write to stdout");
                }
            }
            if chunk.is_none() {
                return Ok(());
            }
        }
    };
    tokio::select! {
        outcome = stream => outcome,
        // Ctrl-C is how `--follow` is meant to end: stop quietly, dropping the connection.
        _ = tokio::signal::ctrl_c() => Ok(()),
    }
}

/// Splits a byte stream into lines however the chunks fall; empty lines are skipped.
#[derive(Default)]
struct LineSplitter {
    pending: Vec<u8>,
}

impl LineSplitter {
    /// The lines that `chunk` completes, without their `\n` (or `\r\n`).
    fn push(&mut self, chunk: &[u8]) -> Vec<Vec<u8>> {
        self.pending.extend_from_slice(chunk);
        let mut lines = Vec::new();
        while let Some(end) = self.pending.iter().position(|b| *b == b'\n') {
            let mut line: Vec<u8> = self.pending.drain(..=end).collect();
            line.pop();
            if line.last() == Some(&b'\r') {
                line.pop();
            }
            if !line.is_empty() {
                lines.push(line);
            }
        }
        lines
    }

    /// What is left after the stream ended.
    fn finish(&mut self) -> Option<Vec<u8>> {
        let rest = std::mem::take(&mut self.pending);
        (!rest.iter().all(u8::is_ascii_whitespace)).then_some(rest)
    }
}

/// One NDJSON line for people; a line that is not a [`LogLine`] is shown as it came rather
/// than lost.
fn format_log_bytes(line: &[u8]) -> String {
    match serde_json::from_slice::<LogLine>(line) {
        Ok(log) => format_log_line(&log),
        Err(_) => String::from_utf8_lossy(line).into_owned(),
    }
}

/// `TIME component [request N] stream: message`; a wasi:logging line shows its level too
/// (`log warn:`).
fn format_log_line(log: &LogLine) -> String {
    let level = log
        .level
        .as_deref()
        .map(|l| format!(" {l}"))
        .unwrap_or_default();
    // The server's own notices (e.g. "lines skipped") belong to no component or request.
    let source = if log.component.is_empty() {
        String::new()
    } else {
        format!(" {} [request {}]", log.component, log.request_id)
    };
    format!(
        "{}{source} {}{level}: {}",
        log.time,
        log.stream,
        log.message.trim_end_matches(['\n', '\r'])
    )
}

// ---------------------------------------------------------------------------------------------
// usage

async fn run_usage(args: UsageArgs) -> Result<()> {
    if let Some(tenant) = &args.tenant {
        check_name("tenant", tenant).map_err(|e| anyhow!("--tenant: {e}"))?;
    }
    let api = Api::new(&args.connect, Role::Any)?;
    let mut query = Vec::new();
    for (name, time) in [("from", args.from), ("to", args.to)] {
        if let Some(time) = time {
            query.push((name, humantime::format_rfc3339_seconds(time).to_string()));
        }
    }
    if let Some(tenant) = args.tenant {
        query.push(("tenant", tenant));
    }
    let request = api.request(Method::GET, paths::USAGE).query(&query);
    api.show(request, args.connect.json, |report: UsageReport| {
        format_usage(&report)
    })
    .await
}

/// `--from` and `--to`: a UTC time in RFC 3339, a day (its midnight, UTC), or how long before
/// now (`1h`, `24h`, `7d`).
fn parse_when(text: &str) -> Result<SystemTime, String> {
    when(text, SystemTime::now())
}

fn when(text: &str, now: SystemTime) -> Result<SystemTime, String> {
    let text = text.trim();
    let time = humantime::parse_rfc3339_weak(text)
        .or_else(|_| humantime::parse_rfc3339(&format!("{text}T00:00:00Z")))
        .ok()
        .or_else(|| {
            let ago = humantime::parse_duration(text).ok()?;
            now.checked_sub(ago)
        });
    match time {
        // Times before 1970 cannot be written in RFC 3339 by humantime, nor have usage.
        Some(time) if time >= SystemTime::UNIX_EPOCH => Ok(time),
        _ => Err(format!(
            "`{text}` is neither a UTC time (e.g. 2025-01-31T00:00:00Z, or 2025-01-31) nor how \
             long ago (e.g. 1h, 24h, 7d)"
        )),
    }
}

/// One row per app, then a `TOTAL` row per tenant (app names are lower case, so no app is
/// called that). The TENANT column only when the report holds several tenants; for one, the
/// heading names it.
fn format_usage(report: &UsageReport) -> String {
    let range = format!("from {} to {}", report.from, report.to);
    let one = match report.tenants.as_slice() {
        [] => return format!("no requests {range}\n"),
        [only] => Some(only.tenant.as_str()),
        _ => None,
    };
    let mut out = match one {
        Some(tenant) => format!("Usage of {tenant} {range}\n\n"),
        None => format!("Usage {range}\n\n"),
    };
    let row = |tenant: &str, app: &str, usage: &UsageFigures| {
        let names = match one {
            Some(_) => vec![app.to_string()],
            None => vec![tenant.to_string(), app.to_string()],
        };
        names
            .into_iter()
            .chain(usage_cells(usage))
            .collect::<Vec<_>>()
    };
    let mut rows = Vec::new();
    for total in &report.tenants {
        for app in report.apps.iter().filter(|a| a.tenant == total.tenant) {
            rows.push(row(&app.tenant, &app.app, &app.usage));
        }
        rows.push(row(&total.tenant, "TOTAL", &total.usage));
    }
    let figures = ["REQUESTS", "WALL", "GUEST-CPU", "MEMORY", "IN", "OUT"];
    let names: &[&str] = if one.is_some() {
        &["APP"]
    } else {
        &["TENANT", "APP"]
    };
    let headers: Vec<&str> = names.iter().chain(&figures).copied().collect();
    let right: Vec<bool> = headers.iter().map(|h| figures.contains(h)).collect();
    out.push_str(&aligned_table(&headers, &rows, "", &right));
    out
}

/// Requests, wall time, guest CPU time, memory (byte-seconds), bytes in and out, for people.
fn usage_cells(usage: &UsageFigures) -> [String; 6] {
    [
        usage.requests.to_string(),
        format_seconds(usage.wall_seconds),
        format_seconds(usage.guest_cpu_seconds),
        // `as` saturates; a sum of byte-seconds is never negative.
        format!(
            "{}·s",
            skiff_manifest::format_size(usage.memory_byte_seconds.round() as u64)
        ),
        skiff_manifest::format_size(usage.bytes_in),
        skiff_manifest::format_size(usage.bytes_out),
    ]
}

/// Seconds in the unit that reads best: `350 µs`, `12.5 ms`, `3.21 s`, `4.5 min`, `2.0 h`.
/// Each unit ends where its rounding would reach the next one.
fn format_seconds(seconds: f64) -> String {
    if seconds <= 0.0 {
        "0 s".into()
    } else if seconds < 999.5e-6 {
        format!("{:.0} µs", seconds * 1e6)
    } else if seconds < 0.999_95 {
        format!("{:.1} ms", seconds * 1e3)
    } else if seconds < 59.995 {
        format!("{seconds:.2} s")
    } else if seconds < 3597.0 {
        format!("{:.1} min", seconds / 60.0)
    } else {
        format!("{:.1} h", seconds / 3600.0)
    }
}

// ---------------------------------------------------------------------------------------------
// login and logout

async fn run_login(args: LoginArgs) -> Result<()> {
    let path = client_config::default_path().ok_or_else(|| {
        anyhow!(
            "cannot tell where to save the login: none of SKIFF_CONFIG, XDG_CONFIG_HOME and \
             HOME is set; set SKIFF_CONFIG to the file to write"
        )
    })?;
    // A broken file is reported before a token is asked for, and never overwritten.
    let mut config = ClientConfig::load(&path)?.unwrap_or_else(|| ClientConfig::empty(path));
    let (server, server_from) = resolve_server(args.server.as_deref(), Some(&config));
    let base = server_base(&server, &server_from).map_err(|e| anyhow!(e))?;
    let (value, from) = match args.token {
        Some(value) => (value.trim().to_string(), "--token"),
        None => (read_token_from_stdin().await?, "stdin"),
    };
    if value.is_empty() {
        return Err(anyhow!(
            "the token from {from} is empty; give the token to save (`skiff tenants create NAME` \
             prints a tenant's)"
        ));
    }
    let token = Token {
        value: value.clone(),
        from: from.into(),
    };
    let api = Api::with(base, server_from, Some(token), Role::Any)?;
    let kind = token_kind(&api).await?;
    config.set_login(&api.base, &value);
    config.save()?;
    println!("logged in to {} as {kind}", api.base);
    println!("saved the server and token in {}", config.path.display());
    Ok(())
}

/// Whose token `api` holds, from the server's `GET /v1/whoami`: `admin`, or `tenant NAME`.
async fn token_kind(api: &Api) -> Result<String> {
    let response = api
        .request(Method::GET, paths::WHOAMI)
        .header(ACCEPT, "application/json")
        .send()
        .await
        .map_err(|e| anyhow!("{}; nothing was saved", api.transport_message(&e)))?;
    let status = response.status();
    let body = response.bytes().await.unwrap_or_default();
    if !status.is_success() {
        return Err(anyhow!(login_refusal(status, &body, api)));
    }
    let who: WhoAmI = serde_json::from_slice(&body)
        .map_err(|e| anyhow!("the server's answer to {} is not JSON: {e}", paths::WHOAMI))?;
    Ok(match who.tenant {
        Some(tenant) => format!("tenant {tenant}"),
        None => "admin".to_string(),
    })
}

/// Why `skiff login` saved nothing, from a non-2xx answer.
fn login_refusal(status: StatusCode, body: &[u8], api: &Api) -> String {
    let from = api.token.as_ref().map_or("", |t| t.from.as_str());
    if status != StatusCode::UNAUTHORIZED {
        let message = error_message(status, body, api.token.as_ref(), api.role);
        return format!("{message}\n  help: nothing was saved");
    }
    let message = serde_json::from_slice::<ErrorBody>(body)
        .map(|b| b.error.message.trim_end().to_string())
        .unwrap_or_else(|_| status.to_string());
    format!(
        "{message}\n  help: the server at {} refused the token from {from}; nothing was saved. \
         `skiff tenants create NAME` prints a tenant's token; the admin token is the one `skiff \
         server` was started with",
        api.base
    )
}

/// The token typed at a prompt (without echo) on a terminal, else the first line of stdin.
async fn read_token_from_stdin() -> Result<String> {
    let line = if std::io::stdin().is_terminal() {
        eprint!("Token: ");
        let _ = std::io::stderr().flush();
        read_line_without_echo().await?
    } else {
        tokio::task::spawn_blocking(read_stdin_line)
            .await
            .context("reading stdin")??
    };
    let token = line.trim();
    if token.is_empty() {
        return Err(anyhow!(
            "no token on stdin; type it at the prompt, pipe it in (`... | skiff login`), or pass \
             --token TOKEN"
        ));
    }
    Ok(token.to_string())
}

fn read_stdin_line() -> Result<String> {
    let mut line = String::new();
    std::io::stdin()
        .read_line(&mut line)
        .context("cannot read the token from stdin")?;
    Ok(line)
}

#[cfg(unix)]
async fn read_line_without_echo() -> Result<String> {
    use rustix::termios::{LocalModes, OptionalActions, tcgetattr, tcsetattr};
    let stdin = std::io::stdin();
    let shown = tcgetattr(&stdin).context("cannot read the terminal's settings")?;
    let mut hidden = shown.clone();
    hidden.local_modes.remove(LocalModes::ECHO);
    // The Enter that ends the token still moves the cursor to the next line.
    hidden.local_modes.insert(LocalModes::ECHONL);
    tcsetattr(&stdin, OptionalActions::Flush, &hidden)
        .context("cannot turn off the terminal's echo")?;
    let restore = || {
        let _ = tcsetattr(std::io::stdin(), OptionalActions::Now, &shown);
    };
    let line = tokio::select! {
        line = tokio::task::spawn_blocking(read_stdin_line) => line,
        // Ctrl-C would otherwise end the process with the terminal left silent.
        _ = tokio::signal::ctrl_c() => {
            restore();
            eprintln!();
            std::process::exit(130);
        }
    };
    restore();
    line.context("reading stdin")?
}

#[cfg(not(unix))]
async fn read_line_without_echo() -> Result<String> {
    tokio::task::spawn_blocking(read_stdin_line)
        .await
        .context("reading stdin")?
}

fn run_logout() -> Result<()> {
    let Some(path) = client_config::default_path() else {
        println!(
            "no token saved: none of SKIFF_CONFIG, XDG_CONFIG_HOME and HOME is set, so there is \
             no client config file"
        );
        return Ok(());
    };
    let Some(mut config) = ClientConfig::load(&path)? else {
        println!("no token saved: {} does not exist", path.display());
        return Ok(());
    };
    if !config.remove_token() {
        println!("no token saved in {}", path.display());
        return Ok(());
    }
    config.save()?;
    match config.server() {
        Some(server) => println!(
            "removed the token from {} (the server {server} stays saved)",
            path.display()
        ),
        None => println!("removed the token from {}", path.display()),
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Formatting

/// Left-aligned columns two spaces apart, each line starting with `indent`; no trailing spaces.
fn table(headers: &[&str], rows: &[Vec<String>], indent: &str) -> String {
    aligned_table(headers, rows, indent, &[])
}

/// [`table`], with the columns whose entry in `right` is true aligned to the right (figures).
fn aligned_table(headers: &[&str], rows: &[Vec<String>], indent: &str, right: &[bool]) -> String {
    let width = |s: &str| s.chars().count();
    let mut widths: Vec<usize> = headers.iter().map(|h| width(h)).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            if i < widths.len() {
                widths[i] = widths[i].max(width(cell));
            }
        }
    }
    let mut out = String::new();
    let header: Vec<String> = headers.iter().map(|h| h.to_string()).collect();
    for row in std::iter::once(&header).chain(rows) {
        let mut line = indent.to_string();
        for (i, cell) in row.iter().enumerate().take(widths.len()) {
            if i > 0 {
                line.push_str("  ");
            }
            let pad = std::iter::repeat_n(' ', widths[i] - width(cell));
            if right.get(i).copied().unwrap_or(false) {
                line.extend(pad);
                line.push_str(cell);
            } else {
                line.push_str(cell);
                line.extend(pad);
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// Milliseconds as the manifest writes durations: `30s`, `250ms`, `5m`, `1m 30s`.
fn format_ms(ms: u64) -> String {
    humantime::format_duration(Duration::from_millis(ms)).to_string()
}

/// How long ago an RFC 3339 time was, e.g. `5m ago`; the text itself if it cannot be read (a
/// time in an offset other than `Z`, which this server does not send).
fn format_age(rfc3339: &str, now: SystemTime) -> String {
    let Ok(then) = humantime::parse_rfc3339_weak(rfc3339) else {
        return rfc3339.to_string();
    };
    let Ok(age) = now.duration_since(then) else {
        // A clock a little behind the server's.
        return "just now".into();
    };
    let secs = age.as_secs();
    match secs {
        0..=9 => "just now".into(),
        10..=59 => format!("{secs}s ago"),
        60..=3599 => format!("{}m ago", secs / 60),
        3600..=86_399 => format!("{}h ago", secs / 3600),
        _ => format!("{}d ago", secs / 86_400),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use skiff_server::api::{
        AppUsage, ComponentInfo, ErrorDetail, RouteInfo, TenantSummary, TenantUsage, VersionInfo,
    };

    fn token(from: &str) -> Token {
        Token {
            value: "t".into(),
            from: from.into(),
        }
    }

    /// What [`Api::new`] picks: [`resolve_token`], else the saved token.
    fn resolve_token_or_saved(
        role: Role,
        given: Option<&str>,
        env_token: Option<&str>,
        env_admin: Option<&str>,
        saved: Option<&ClientConfig>,
    ) -> Option<Token> {
        resolve_token(role, given, env_token, env_admin).or_else(|| saved_token(saved))
    }

    fn saved_config(text: &str) -> ClientConfig {
        ClientConfig::parse(Path::new("/home/u/.config/skiff/config.toml"), text).unwrap()
    }

    fn error_json(code: ErrorCode, message: &str) -> Vec<u8> {
        serde_json::to_vec(&ErrorBody {
            error: ErrorDetail {
                code,
                message: message.into(),
            },
        })
        .unwrap()
    }

    fn summary(name: &str, version: u64) -> AppSummary {
        AppSummary {
            name: name.into(),
            version,
            app_version: "0.1.0".into(),
            url: format!("http://{name}.localhost:3000/"),
            deployed_at: "2025-06-01T10:00:00.000Z".into(),
            status: AppStatus::Live,
        }
    }

    fn at(rfc3339: &str) -> SystemTime {
        humantime::parse_rfc3339_weak(rfc3339).unwrap()
    }

    #[test]
    fn tables_align_columns_without_trailing_spaces() {
        let rows = vec![
            vec!["hello".to_string(), "1".into(), "x".into()],
            vec!["a".to_string(), "12345".into(), "".into()],
        ];
        assert_eq!(
            table(&["NAME", "VERSION", "URL"], &rows, ""),
            "NAME   VERSION  URL\n\
             hello  1        x\n\
             a      12345\n"
        );
        assert_eq!(
            table(&["A", "B"], &[vec!["é".into(), "z".into()]], "  "),
            "  A  B\n  é  z\n"
        );
    }

    #[test]
    fn server_urls_join_with_or_without_a_trailing_slash() {
        for given in [
            "http://127.0.0.1:3001",
            "http://127.0.0.1:3001/",
            " http://127.0.0.1:3001// ",
        ] {
            let base = base_url(given).unwrap();
            assert_eq!(
                endpoint(&base, paths::APPS),
                "http://127.0.0.1:3001/v1/apps"
            );
        }
        let base = base_url("https://skiff.example.com/api/").unwrap();
        assert_eq!(
            endpoint(&base, "/v1/tenants"),
            "https://skiff.example.com/api/v1/tenants"
        );
        for bad in [
            "127.0.0.1:3001",
            "localhost",
            "ftp://x",
            "http://x/?a=1",
            "",
        ] {
            let err = base_url(bad).unwrap_err();
            assert!(err.contains("SKIFF_SERVER"), "{bad}: {err}");
        }
    }

    #[test]
    fn app_paths_refuse_names_that_are_not_labels() {
        assert_eq!(app_path("hello", "").unwrap(), "/v1/apps/hello");
        assert_eq!(
            app_path("hello", "/rollback").unwrap(),
            "/v1/apps/hello/rollback"
        );
        let err = app_path("../tenants", "").unwrap_err().to_string();
        assert!(err.contains("not a valid app name"), "{err}");
    }

    #[test]
    fn tenant_commands_prefer_the_admin_variable_over_skiff_token() {
        let pick = resolve_token;
        let from = |t: Option<Token>| t.map(|t| (t.value, t.from));
        let it = |value: &str, from: &str| Some((value.to_string(), from.to_string()));
        // A flag different from SKIFF_TOKEN is the flag, and wins.
        assert_eq!(
            from(pick(
                Role::Admin,
                Some("flag"),
                Some("tenant"),
                Some("admin")
            )),
            it("flag", "--token")
        );
        // The value SKIFF_TOKEN put there gives way to SKIFF_ADMIN_TOKEN...
        assert_eq!(
            from(pick(
                Role::Admin,
                Some("tenant"),
                Some("tenant"),
                Some("admin")
            )),
            it("admin", "SKIFF_ADMIN_TOKEN")
        );
        // ...and is used when that is all there is.
        assert_eq!(
            from(pick(Role::Admin, Some("tenant"), Some("tenant"), None)),
            it("tenant", "SKIFF_TOKEN")
        );
        assert_eq!(
            from(pick(Role::Admin, None, None, Some("admin"))),
            it("admin", "SKIFF_ADMIN_TOKEN")
        );
        assert_eq!(pick(Role::Admin, None, None, Some("  ")), None);
        // Tenant commands never read the admin token.
        assert_eq!(pick(Role::Tenant, None, None, Some("admin")), None);
        assert_eq!(
            from(pick(Role::Tenant, Some("t"), Some("t"), None)),
            it("t", "SKIFF_TOKEN")
        );
        assert_eq!(
            from(pick(Role::Tenant, Some("t"), None, None)),
            it("t", "--token")
        );
    }

    #[test]
    fn the_saved_token_is_the_last_fallback_for_every_role() {
        let config = saved_config("server = \"http://h:3001\"\ntoken = \"saved\"\n");
        let saved = Some(&config);
        let pick = |role, given, env_token, env_admin| {
            resolve_token_or_saved(role, given, env_token, env_admin, saved)
                .map(|t| (t.value, t.from))
        };
        let it = |value: &str, from: &str| Some((value.to_string(), from.to_string()));
        let file = "/home/u/.config/skiff/config.toml (skiff login)";
        for role in [Role::Tenant, Role::Admin, Role::Any] {
            assert_eq!(pick(role, None, None, None), it("saved", file), "{role:?}");
            // A flag or a variable wins over the file...
            assert_eq!(
                pick(role, Some("flag"), None, None),
                it("flag", "--token"),
                "{role:?}"
            );
            assert_eq!(
                pick(role, Some("env"), Some("env"), None),
                it("env", "SKIFF_TOKEN"),
                "{role:?}"
            );
            // ...and a blank one does not count.
            assert_eq!(
                pick(role, Some(" "), Some(" "), None),
                it("saved", file),
                "{role:?}"
            );
        }
        assert_eq!(
            pick(Role::Admin, None, None, Some("admin")),
            it("admin", "SKIFF_ADMIN_TOKEN")
        );
        assert_eq!(
            pick(Role::Any, None, None, Some("admin")),
            it("admin", "SKIFF_ADMIN_TOKEN")
        );
        // Tenant commands never read the admin variable: the file comes next.
        assert_eq!(
            pick(Role::Tenant, None, None, Some("admin")),
            it("saved", file)
        );
        // A file without a token, or no file, leaves no token.
        let server_only = saved_config("server = \"http://h:3001\"\n");
        assert_eq!(
            resolve_token_or_saved(Role::Tenant, None, None, None, Some(&server_only)),
            None
        );
        assert_eq!(
            resolve_token_or_saved(Role::Any, None, None, None, None),
            None
        );
    }

    #[test]
    fn the_server_is_the_flag_or_variable_then_the_saved_one_then_the_default() {
        let config = saved_config("server = \"http://saved:3001\"\n");
        let path = PathBuf::from("/home/u/.config/skiff/config.toml");
        assert_eq!(
            resolve_server(Some("http://given:3001"), Some(&config)),
            ("http://given:3001".to_string(), ServerFrom::Given)
        );
        assert_eq!(
            resolve_server(None, Some(&config)),
            (
                "http://saved:3001".to_string(),
                ServerFrom::ConfigFile(path)
            )
        );
        let token_only = saved_config("token = \"t\"\n");
        for saved in [Some(&token_only), None] {
            assert_eq!(
                resolve_server(None, saved),
                (DEFAULT_SERVER.to_string(), ServerFrom::Default)
            );
        }
    }

    #[test]
    fn a_bad_saved_server_names_the_config_file() {
        let path = PathBuf::from("/home/u/.config/skiff/config.toml");
        let err = server_base("127.0.0.1:3001", &ServerFrom::ConfigFile(path)).unwrap_err();
        assert!(
            err.contains("`server` in the client config file /home/u/.config/skiff/config.toml"),
            "{err}"
        );
        assert!(err.contains("skiff login --server URL"), "{err}");
        assert_eq!(
            server_base("http://h:3001/", &ServerFrom::Default),
            Ok("http://h:3001".to_string())
        );
    }

    #[test]
    fn a_refused_saved_token_names_the_file_and_skiff_login() {
        let body = error_json(ErrorCode::Unauthorized, "unknown token");
        let saved = token("/root/.config/skiff/config.toml (skiff login)");
        let message = error_message(StatusCode::UNAUTHORIZED, &body, Some(&saved), Role::Tenant);
        assert!(
            message.contains(
                "the token from /root/.config/skiff/config.toml (skiff login) was refused"
            ),
            "{message}"
        );
        assert!(message.contains("save it with `skiff login`"), "{message}");
    }

    #[test]
    fn error_bodies_become_their_message_verbatim() {
        let report = "error: unknown field `sorce` in [component.hello]\n --> skiff.toml:7:1\n  |";
        let body = error_json(ErrorCode::InvalidManifest, report);
        let message = error_message(
            StatusCode::BAD_REQUEST,
            &body,
            Some(&token("--token")),
            Role::Tenant,
        );
        assert_eq!(message, report);
        // ...and such a report is printed without a second `error: `.
        assert_eq!(render_error(&anyhow!(message)), report);
        assert_eq!(
            render_error(&anyhow!("app `x` not found")),
            "error: app `x` not found"
        );
    }

    #[test]
    fn a_refused_token_names_where_it_came_from() {
        let body = error_json(ErrorCode::Unauthorized, "unknown token");
        let message = error_message(
            StatusCode::UNAUTHORIZED,
            &body,
            Some(&token("SKIFF_TOKEN")),
            Role::Tenant,
        );
        assert!(message.starts_with("unknown token\n  help: "), "{message}");
        assert!(
            message.contains("the token from SKIFF_TOKEN was refused"),
            "{message}"
        );
        assert!(
            message.contains("--token TOKEN or set SKIFF_TOKEN"),
            "{message}"
        );

        let body = error_json(ErrorCode::Unauthorized, "this call needs a token");
        let message = error_message(StatusCode::UNAUTHORIZED, &body, None, Role::Admin);
        assert!(message.contains("no token was given"), "{message}");
        assert!(message.contains("SKIFF_ADMIN_TOKEN"), "{message}");

        let body = error_json(ErrorCode::Forbidden, "admin only");
        let message = error_message(
            StatusCode::FORBIDDEN,
            &body,
            Some(&token("SKIFF_TOKEN")),
            Role::Admin,
        );
        assert!(
            message.contains(
                "the token from SKIFF_TOKEN is a tenant's; this call needs the admin token"
            ),
            "{message}"
        );
        assert!(message.contains("SKIFF_ADMIN_TOKEN"), "{message}");

        // A quota is a 403 too, but no token problem.
        let body = error_json(ErrorCode::QuotaExceeded, "at most 1 app");
        let message = error_message(
            StatusCode::FORBIDDEN,
            &body,
            Some(&token("--token")),
            Role::Tenant,
        );
        assert_eq!(message, "at most 1 app");
    }

    #[test]
    fn an_answer_that_is_not_an_error_body_points_at_the_server_address() {
        let message = error_message(
            StatusCode::NOT_FOUND,
            b"<html>nope</html>",
            Some(&token("--token")),
            Role::Tenant,
        );
        assert!(
            message.contains("404 Not Found: <html>nope</html>"),
            "{message}"
        );
        assert!(message.contains("--server"), "{message}");
    }

    #[test]
    fn sizes_and_durations_read_like_the_manifest() {
        assert_eq!(skiff_manifest::format_size(0), "0 B");
        assert_eq!(skiff_manifest::format_size(1000), "1000 B");
        assert_eq!(skiff_manifest::format_size(1024), "1 KiB");
        assert_eq!(skiff_manifest::format_size(128 << 20), "128 MiB");
        assert_eq!(skiff_manifest::format_size(1_258_291), "1.2 MiB");
        assert_eq!(skiff_manifest::format_size(3 << 30), "3 GiB");
        assert_eq!(format_ms(30_000), "30s");
        assert_eq!(format_ms(250), "250ms");
        assert_eq!(format_ms(300_000), "5m");
        assert_eq!(format_ms(90_000), "1m 30s");
        let limits = LimitsInfo {
            memory_bytes: Some(128 << 20),
            timeout_ms: 30_000,
            max_concurrency: None,
            fuel: Some(1000),
            requests_per_instance: None,
        };
        assert_eq!(limit_cells(&limits), ["128 MiB", "30s", "none", "1000"]);
    }

    #[test]
    fn ages_are_relative_to_now() {
        let now = at("2025-06-01T12:00:00Z");
        assert_eq!(format_age("2025-06-01T11:59:58.123Z", now), "just now");
        assert_eq!(format_age("2025-06-01T11:59:30Z", now), "30s ago");
        assert_eq!(format_age("2025-06-01T11:55:00Z", now), "5m ago");
        assert_eq!(format_age("2025-06-01T09:00:00Z", now), "3h ago");
        assert_eq!(format_age("2025-05-30T12:00:00Z", now), "2d ago");
        assert_eq!(format_age("2025-06-01T12:00:05Z", now), "just now");
        assert_eq!(format_age("yesterday", now), "yesterday");
    }

    #[test]
    fn route_urls_read_like_skiff_up() {
        let url = "http://hello.localhost:3000/";
        assert_eq!(
            route_url(url, "/..."),
            "http://hello.localhost:3000/ (wildcard)"
        );
        assert_eq!(
            route_url(url, "/api/..."),
            "http://hello.localhost:3000/api (wildcard)"
        );
        assert_eq!(
            route_url(url, "/health"),
            "http://hello.localhost:3000/health"
        );
    }

    #[test]
    fn a_deploy_prints_version_url_and_routes() {
        let info = AppInfo {
            summary: summary("hello", 2),
            tenant: "acme".into(),
            routes: vec![RouteInfo {
                route: "/...".into(),
                component: "hello".into(),
            }],
            components: vec![],
            versions: vec![],
        };
        assert_eq!(
            format_deployed(&info, false),
            "Deployed hello version 2 (updated)\n\
             http://hello.localhost:3000/\n\
             Routes:\n  hello: http://hello.localhost:3000/ (wildcard)\n"
        );
        assert!(format_deployed(&info, true).starts_with("Deployed hello version 2 (new)\n"));
    }

    #[test]
    fn app_lists_are_tables_or_a_hint() {
        let now = at("2025-06-01T10:05:00Z");
        let empty = AppList { apps: vec![] };
        assert!(format_app_list(&empty, now).contains("skiff deploy FOLDER"));
        let mut idle = summary("a", 12);
        idle.status = AppStatus::Idle;
        let list = AppList {
            apps: vec![summary("hello", 1), idle],
        };
        assert_eq!(
            format_app_list(&list, now),
            "NAME   VERSION  APP-VERSION  STATUS  DEPLOYED  URL\n\
             hello  1        0.1.0        live    5m ago    http://hello.localhost:3000/\n\
             a      12       0.1.0        idle    5m ago    http://a.localhost:3000/\n"
        );
    }

    #[test]
    fn inspect_shows_limits_and_marks_the_live_version() {
        let now = at("2025-06-01T10:05:00Z");
        let info = AppInfo {
            summary: summary("hello", 2),
            tenant: "acme".into(),
            routes: vec![RouteInfo {
                route: "/api/...".into(),
                component: "api".into(),
            }],
            components: vec![ComponentInfo {
                id: "api".into(),
                source: "api.wasm".into(),
                code_bytes: 2 << 20,
                limits: LimitsInfo {
                    memory_bytes: Some(128 << 20),
                    timeout_ms: 30_000,
                    max_concurrency: None,
                    fuel: None,
                    requests_per_instance: None,
                },
            }],
            versions: vec![
                VersionInfo {
                    version: 3,
                    app_version: "0.3.0".into(),
                    deployed_at: "2025-06-01T10:04:00Z".into(),
                    live: false,
                },
                VersionInfo {
                    version: 2,
                    app_version: "0.1.0".into(),
                    deployed_at: "2025-06-01T10:00:00.000Z".into(),
                    live: true,
                },
            ],
        };
        let text = format_app_info(&info, now);
        assert!(text.starts_with("hello\n  tenant:   acme\n"), "{text}");
        assert!(
            text.contains("  live:     version 2 (app version 0.1.0), deployed 2025-06-01T10:00:00.000Z (5m ago)"),
            "{text}"
        );
        assert!(
            text.contains("  /api/...  api        http://hello.localhost:3000/api (wildcard)\n"),
            "{text}"
        );
        assert!(
            text.contains("  api  api.wasm  2 MiB  128 MiB  30s      none         none\n"),
            "{text}"
        );
        assert!(
            text.contains("     3        0.3.0        2025-06-01T10:04:00Z      1m ago\n"),
            "{text}"
        );
        assert!(
            text.contains("  *  2        0.1.0        2025-06-01T10:00:00.000Z  5m ago\n"),
            "{text}"
        );
    }

    #[test]
    fn a_new_tenants_token_is_alone_on_the_last_line() {
        let created = TenantCreated {
            name: "acme".into(),
            token: "skt_secret".into(),
            quotas: Quotas::default(),
        };
        let text = format_tenant_created(&created);
        assert_eq!(text.lines().last(), Some("skt_secret"));
        assert!(text.ends_with("\nskt_secret\n"));
        assert!(
            text.contains(
                "100 apps, 512 MiB of code, 10 GiB on disk, 1000 requests in flight, 512 MiB \
                 memory and 5m timeout"
            ),
            "{text}"
        );
    }

    #[test]
    fn tenant_lists_show_use_against_quota() {
        let list = TenantList {
            tenants: vec![TenantSummary {
                name: "acme".into(),
                quotas: Quotas::default(),
                apps: 3,
            }],
        };
        assert_eq!(
            format_tenant_list(&list),
            "NAME  APPS   MAX-CODE  MAX-IN-FLIGHT  MAX-MEMORY  MAX-TIMEOUT\n\
             acme  3/100  512 MiB   1000           512 MiB     5m\n"
        );
        assert!(format_tenant_list(&TenantList { tenants: vec![] }).contains("tenants create"));
    }

    #[test]
    fn quota_flags_become_overrides() {
        let args = QuotaArgs {
            max_code_size: Some(256 << 20),
            max_timeout: Some(Duration::from_secs(60)),
            ..QuotaArgs::default()
        };
        assert_eq!(
            args.overrides(),
            QuotaOverrides {
                max_code_bytes: Some(256 << 20),
                max_timeout_ms: Some(60_000),
                ..QuotaOverrides::default()
            }
        );
    }

    #[test]
    fn json_keeps_the_servers_field_order() {
        let text = pretty_json(br#"{"name":"hello","version":2,"app_version":"0.1.0"}"#).unwrap();
        assert_eq!(
            text,
            "{\n  \"name\": \"hello\",\n  \"version\": 2,\n  \"app_version\": \"0.1.0\"\n}\n"
        );
        assert!(pretty_json(b"{\"a\":1} x").is_err());
    }

    #[test]
    fn log_streams_split_into_lines_however_the_chunks_fall() {
        let mut lines = LineSplitter::default();
        assert!(lines.push(b"{\"a\":").is_empty());
        assert_eq!(
            lines.push(b"1}\n{\"b\"\r\n\n:2"),
            vec![b"{\"a\":1}".to_vec(), b"{\"b\"".to_vec()]
        );
        assert_eq!(lines.finish(), Some(b":2".to_vec()));
        assert_eq!(lines.finish(), None);
    }

    #[test]
    fn log_lines_for_people() {
        let mut line = LogLine {
            time: "2025-06-01T10:00:00.123Z".into(),
            app: "hello".into(),
            component: "api".into(),
            request_id: 7,
            trace_id: "4bf92f3577b34da6a3ce929d0e0e4736".into(),
            stream: "stdout".into(),
            level: None,
            message: "hi\n".into(),
        };
        assert_eq!(
            format_log_line(&line),
            "2025-06-01T10:00:00.123Z api [request 7] stdout: hi"
        );
        line.stream = "log".into();
        line.level = Some("warn".into());
        let json = serde_json::to_vec(&line).unwrap();
        assert_eq!(
            format_log_bytes(&json),
            "2025-06-01T10:00:00.123Z api [request 7] log warn: hi"
        );
        assert_eq!(format_log_bytes(b"not json"), "not json");
        line.component = String::new();
        line.stream = "skiff".into();
        line.message = "3 lines skipped".into();
        assert_eq!(
            format_log_line(&line),
            "2025-06-01T10:00:00.123Z skiff warn: 3 lines skipped"
        );
    }

    #[test]
    fn the_upload_phase_turns_into_compiling_once_everything_is_sent() {
        let phase = Phase::Uploading {
            total: 2 << 20,
            files: 3,
        };
        assert_eq!(phase_text(phase, 1 << 20), "Uploading 2 MiB (3 files)… 50%");
        assert_eq!(phase_text(phase, 2 << 20), "Compiling and checking…");
        assert_eq!(phase_text(Phase::Packing, 0), "Packing…");
    }

    #[test]
    fn usage_takes_either_token_and_the_admin_variable_last() {
        let from = |t: Option<Token>| t.map(|t| (t.value, t.from));
        let it = |value: &str, from: &str| Some((value.to_string(), from.to_string()));
        assert_eq!(
            from(resolve_token(
                Role::Any,
                Some("tenant"),
                Some("tenant"),
                Some("admin")
            )),
            it("tenant", "SKIFF_TOKEN")
        );
        assert_eq!(
            from(resolve_token(Role::Any, Some("flag"), None, Some("admin"))),
            it("flag", "--token")
        );
        assert_eq!(
            from(resolve_token(Role::Any, None, None, Some("admin"))),
            it("admin", "SKIFF_ADMIN_TOKEN")
        );
        assert_eq!(resolve_token(Role::Any, None, None, None), None);
        let help = token_help(None, Role::Any, false);
        assert!(
            help.contains("SKIFF_TOKEN") && help.contains("SKIFF_ADMIN_TOKEN"),
            "{help}"
        );
    }

    #[test]
    fn usage_ranges_take_utc_times_days_or_how_long_ago() {
        let now = at("2025-06-08T12:30:00Z");
        assert_eq!(
            when("2025-06-01T10:00:00Z", now),
            Ok(at("2025-06-01T10:00:00Z"))
        );
        assert_eq!(when("2025-06-01", now), Ok(at("2025-06-01T00:00:00Z")));
        assert_eq!(when("1h", now), Ok(at("2025-06-08T11:30:00Z")));
        assert_eq!(when("24h", now), Ok(at("2025-06-07T12:30:00Z")));
        assert_eq!(when(" 7d ", now), Ok(at("2025-06-01T12:30:00Z")));
        for bad in ["yesterday", "2025-06-01T10:00:00+02:00", "", "100000y"] {
            let err = when(bad, now).unwrap_err();
            assert!(err.contains("e.g. 1h, 24h, 7d"), "{bad}: {err}");
        }
        let sent = humantime::format_rfc3339_seconds(when("1h", now).unwrap()).to_string();
        assert_eq!(sent, "2025-06-08T11:30:00Z");
    }

    #[test]
    fn seconds_read_in_the_unit_that_fits() {
        assert_eq!(format_seconds(0.0), "0 s");
        assert_eq!(format_seconds(0.000_35), "350 µs");
        assert_eq!(format_seconds(0.000_999_7), "1.0 ms");
        assert_eq!(format_seconds(0.0125), "12.5 ms");
        assert_eq!(format_seconds(0.999_97), "1.00 s");
        assert_eq!(format_seconds(3.214), "3.21 s");
        assert_eq!(format_seconds(270.0), "4.5 min");
        assert_eq!(format_seconds(7200.0), "2.0 h");
    }

    fn figures(requests: u64, bytes_out: u64) -> UsageFigures {
        UsageFigures {
            requests,
            wall_seconds: 0.0051 * requests as f64,
            guest_cpu_seconds: 0.002 * requests as f64,
            memory_byte_seconds: 1_258_291.0 * requests as f64,
            bytes_in: 0,
            bytes_out,
        }
    }

    fn usage_report(rows: &[(&str, &str, u64, u64)]) -> UsageReport {
        let mut tenants: Vec<TenantUsage> = Vec::new();
        let apps = rows
            .iter()
            .map(|&(tenant, app, requests, out)| {
                let usage = figures(requests, out);
                match tenants.last_mut() {
                    Some(last) if last.tenant == tenant => last.usage.add(&usage),
                    _ => tenants.push(TenantUsage {
                        tenant: tenant.into(),
                        usage,
                    }),
                }
                AppUsage {
                    tenant: tenant.into(),
                    app: app.into(),
                    usage,
                }
            })
            .collect();
        UsageReport {
            from: "2025-06-01T10:00:00Z".into(),
            to: "2025-06-02T10:01:00Z".into(),
            apps,
            tenants,
        }
    }

    #[test]
    fn usage_of_one_tenant_has_no_tenant_column_and_a_total() {
        let report = usage_report(&[("acme", "shop", 4, 4), ("acme", "web", 1200, 1830000)]);
        assert_eq!(
            format_usage(&report),
            "Usage of acme from 2025-06-01T10:00:00Z to 2025-06-02T10:01:00Z\n\
             \n\
             APP    REQUESTS     WALL  GUEST-CPU     MEMORY   IN      OUT\n\
             shop          4  20.4 ms     8.0 ms  4.8 MiB·s  0 B      4 B\n\
             web        1200   6.12 s     2.40 s  1.4 GiB·s  0 B  1.7 MiB\n\
             TOTAL      1204   6.14 s     2.41 s  1.4 GiB·s  0 B  1.7 MiB\n"
        );
    }

    #[test]
    fn usage_of_several_tenants_has_a_tenant_column_and_a_total_each() {
        let report = usage_report(&[("alice", "shop", 4, 4), ("bob", "blog", 1, 1)]);
        let text = format_usage(&report);
        assert!(
            text.starts_with(
                "Usage from 2025-06-01T10:00:00Z to 2025-06-02T10:01:00Z\n\nTENANT  APP    REQUESTS"
            ),
            "{text}"
        );
        let rows: Vec<Vec<&str>> = text
            .lines()
            .skip(3)
            .map(|line| {
                line.split("  ")
                    .filter(|c| !c.is_empty())
                    .map(str::trim)
                    .collect()
            })
            .collect();
        let firsts: Vec<(&str, &str, &str)> = rows.iter().map(|r| (r[0], r[1], r[2])).collect();
        assert_eq!(
            firsts,
            [
                ("alice", "shop", "4"),
                ("alice", "TOTAL", "4"),
                ("bob", "blog", "1"),
                ("bob", "TOTAL", "1")
            ]
        );
        let empty = usage_report(&[]);
        assert_eq!(
            format_usage(&empty),
            "no requests from 2025-06-01T10:00:00Z to 2025-06-02T10:01:00Z\n"
        );
    }
}
