//! The management API over HTTP (axum): authentication and the routes of [`crate::api`]. Every
//! handler returns `Result<_, Refusal>`; a [`Refusal`] is its own status code and JSON body.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use bytes::Bytes;
use http_body_util::BodyExt;
use serde::Deserialize;
use tokio::sync::broadcast::error::RecvError;

use crate::api::{
    AppInfo, AppList, CreateTenant, DeployFrom, ErrorCode, LogLine, QuotaOverrides, TenantCreated,
    TenantList, TenantSummary, TokenIssued, UsageReport, WhoAmI, paths,
};
use crate::platform::Platform;
use crate::platform::usage_refusal;
use crate::refusal::Refusal;
use crate::tenants::{Tenant, same_secret};
use skiff_manifest::format_size;

/// The OpenAPI document of this API.
pub const OPENAPI: &str = include_str!("../openapi.json");

/// The web dashboard (one self-contained page).
const DASHBOARD: &str = include_str!("../dashboard.html");

/// The tenant that `--insecure-dev` acts as when a call carries no token.
pub const DEV_TENANT: &str = "dev";

/// Who may call the admin routes.
#[derive(Clone)]
pub enum AdminAuth {
    Token(String),
    /// `--insecure-dev`: calls without a token are the admin, and the `dev` tenant on app
    /// routes. Only ever on loopback ([`crate::bind`] refuses anything else).
    InsecureDev,
}

/// Shortest admin token accepted: anything shorter can be guessed.
pub const MIN_ADMIN_TOKEN: usize = 16;

/// Why an admin token is refused.
#[derive(Debug, thiserror::Error)]
pub enum AdminTokenError {
    #[error(
        "is {length} characters long; use at least {MIN_ADMIN_TOKEN} random ones, e.g. \
         `openssl rand -hex 32`"
    )]
    TooShort { length: usize },
}

impl AdminAuth {
    /// The admin token `text` (white space around it ignored), if it is long enough.
    pub fn token(text: &str) -> Result<AdminAuth, AdminTokenError> {
        let token = text.trim();
        let length = token.chars().count();
        if length < MIN_ADMIN_TOKEN {
            return Err(AdminTokenError::TooShort { length });
        }
        Ok(AdminAuth::Token(token.to_string()))
    }
}

#[derive(Clone)]
struct ApiState {
    platform: Arc<Platform>,
    admin: AdminAuth,
    /// Turns true when the server shuts down: log followers are ended then, rather than
    /// holding the shutdown up.
    stopping: tokio::sync::watch::Receiver<bool>,
}

pub fn router(
    platform: Arc<Platform>,
    admin: AdminAuth,
    stopping: tokio::sync::watch::Receiver<bool>,
) -> Router {
    let insecure_dev = matches!(admin, AdminAuth::InsecureDev);
    let state = ApiState {
        platform,
        admin,
        stopping,
    };
    let router = Router::new()
        .route(paths::OPENAPI, get(openapi))
        .route(paths::DASHBOARD, get(dashboard))
        .route(paths::HEALTH, get(health))
        .route(paths::HEALTHZ, get(health))
        .route(paths::READYZ, get(ready))
        .route(paths::TENANTS, post(create_tenant).get(list_tenants))
        .route(
            "/v1/tenants/{name}",
            axum::routing::patch(change_quotas).delete(delete_tenant),
        )
        .route(
            "/v1/tenants/{name}/token",
            post(rotate_token).delete(revoke_token),
        )
        .route(paths::WHOAMI, get(whoami))
        .route(paths::APPS, get(list_apps).post(deploy_from_registry))
        .route(
            "/v1/apps/{name}",
            get(inspect_app).put(deploy_app).delete(delete_app),
        )
        .route("/v1/apps/{name}/rollback", post(rollback_app))
        .route("/v1/apps/{name}/logs", get(app_logs))
        .route(paths::METRICS, get(host_metrics))
        .route(paths::TENANT_METRICS, get(tenant_metrics))
        .route(paths::USAGE, get(usage))
        .fallback(|| async {
            Refusal::new(
                ErrorCode::NotFound,
                "no such API route; GET /openapi.json describes them",
            )
        })
        .with_state(state);
    if insecure_dev {
        router.layer(axum::middleware::from_fn(loopback_callers_only))
    } else {
        router
    }
}

/// `--insecure-dev` takes calls without a token, so only programs on this machine may make
/// them. Listening on loopback is not enough: a web page open in the developer's browser can
/// reach a loopback port too, by DNS rebinding (a name of the attacker's that resolves to
/// 127.0.0.1: the request carries that name in `Host`) or by a cross-site form POST (it
/// carries the attacker's `Origin`). Both headers must name this machine.
async fn loopback_callers_only(
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let headers = request.headers();
    let host = headers
        .get(header::HOST)
        .and_then(|host| host.to_str().ok())
        .or_else(|| request.uri().authority().map(|a| a.as_str()));
    if !host.is_some_and(is_loopback_authority) {
        return Refusal::new(
            ErrorCode::Forbidden,
            "--insecure-dev answers only requests addressed to localhost, 127.0.0.1 or [::1] \
             (the Host header names another host)",
        )
        .into_response();
    }
    if let Some(origin) = headers.get(header::ORIGIN) {
        let loopback = origin
            .to_str()
            .ok()
            .and_then(|o| {
                o.strip_prefix("http://")
                    .or_else(|| o.strip_prefix("https://"))
            })
            .is_some_and(is_loopback_authority);
        if !loopback {
            return Refusal::new(
                ErrorCode::Forbidden,
                "--insecure-dev answers no calls from web pages of other sites (the Origin \
                 header names another host)",
            )
            .into_response();
        }
    }
    next.run(request).await
}

/// `localhost`, a loopback address, or one of them with a port.
fn is_loopback_authority(authority: &str) -> bool {
    let host = match authority.strip_prefix('[') {
        Some(rest) => rest.split(']').next().unwrap_or_default(),
        None => authority.split(':').next().unwrap_or_default(),
    };
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

enum Caller {
    Admin,
    Tenant(Arc<Tenant>),
}

fn bearer(headers: &HeaderMap) -> Result<Option<&str>, Refusal> {
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return Ok(None);
    };
    value
        .to_str()
        .ok()
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(|token| Some(token.trim()))
        .ok_or_else(|| {
            Refusal::new(
                ErrorCode::Unauthorized,
                "the Authorization header must be `Bearer TOKEN`",
            )
        })
}

fn no_token() -> Refusal {
    Refusal::new(
        ErrorCode::Unauthorized,
        "this call needs a token: send `Authorization: Bearer TOKEN` (the skiff CLI takes \
         --token or SKIFF_TOKEN)",
    )
}

fn unknown_token() -> Refusal {
    Refusal::new(
        ErrorCode::Unauthorized,
        "the token is not valid on this server; check --token or SKIFF_TOKEN",
    )
}

impl ApiState {
    fn caller(&self, headers: &HeaderMap) -> Result<Caller, Refusal> {
        match (bearer(headers)?, &self.admin) {
            (None, AdminAuth::InsecureDev) => Ok(Caller::Admin),
            (None, AdminAuth::Token(_)) => Err(no_token()),
            (Some(token), AdminAuth::Token(admin)) if same_secret(token, admin) => {
                Ok(Caller::Admin)
            }
            (Some(token), _) => self
                .platform
                .tenant_by_token(token)
                .map(Caller::Tenant)
                .ok_or_else(unknown_token),
        }
    }

    fn admin(&self, headers: &HeaderMap) -> Result<(), Refusal> {
        match self.caller(headers)? {
            Caller::Admin => Ok(()),
            Caller::Tenant(_) => Err(Refusal::new(
                ErrorCode::Forbidden,
                "this call needs the admin token; a tenant token manages only its apps",
            )),
        }
    }

    async fn tenant(&self, headers: &HeaderMap) -> Result<Arc<Tenant>, Refusal> {
        match self.caller(headers)? {
            Caller::Tenant(tenant) => Ok(tenant),
            Caller::Admin if matches!(self.admin, AdminAuth::InsecureDev) => {
                if let Some(tenant) = self.platform.tenant(DEV_TENANT) {
                    return Ok(tenant);
                }
                // Racing creators both end up with the one tenant.
                let _ = self
                    .platform
                    .create_tenant(DEV_TENANT, self.platform.config().default_quotas.clone())
                    .await;
                self.platform
                    .tenant(DEV_TENANT)
                    .ok_or_else(|| Refusal::new(ErrorCode::Internal, "cannot create `dev`"))
            }
            Caller::Admin => Err(Refusal::new(
                ErrorCode::Forbidden,
                "apps belong to tenants: use a tenant's token (create one with `skiff tenants \
                 create NAME`)",
            )),
        }
    }
}

async fn openapi() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI)
}

/// The dashboard: a static page that asks for a token and reads the metrics with it, so it
/// shows nothing its viewer could not fetch anyway.
async fn dashboard() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            // Scripts from this page only; no framing by other sites.
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; \
                 connect-src 'self'; frame-ancestors 'none'",
            ),
        ],
        DASHBOARD,
    )
}

/// The process answers (`/healthz`, and `/v1/health` as before).
async fn health() -> impl IntoResponse {
    axum::Json(serde_json::json!({ "status": "ok" }))
}

/// `/readyz`: whether load balancers should send this host traffic. In a cluster, not before
/// the host has read the cluster's apps; anywhere, not once shutdown has started.
async fn ready(State(state): State<ApiState>) -> Response {
    let stopping = *state.stopping.borrow();
    if state.platform.is_ready() && !stopping {
        return axum::Json(serde_json::json!({ "status": "ready" })).into_response();
    }
    let why = if stopping {
        "shutting down"
    } else {
        "reading the cluster's apps"
    };
    (
        StatusCode::SERVICE_UNAVAILABLE,
        axum::Json(serde_json::json!({ "status": "not_ready", "reason": why })),
    )
        .into_response()
}

async fn create_tenant(
    State(state): State<ApiState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, Refusal> {
    state.admin(&headers)?;
    let request: CreateTenant = serde_json::from_slice(&body).map_err(|err| {
        Refusal::new(
            ErrorCode::BadRequest,
            format!(
                "the body is not a tenant: {err}; send e.g. {{\"name\": \"acme\", \"quotas\": \
                 {{\"max_apps\": 10}}}}"
            ),
        )
    })?;
    let quotas = request
        .quotas
        .apply(state.platform.config().default_quotas.clone());
    let token = state
        .platform
        .create_tenant(&request.name, quotas.clone())
        .await?;
    tracing::info!(tenant = %request.name, "tenant created");
    let created = TenantCreated {
        name: request.name,
        token,
        quotas,
    };
    Ok((StatusCode::CREATED, axum::Json(created)).into_response())
}

async fn list_tenants(
    State(state): State<ApiState>,
    headers: HeaderMap,
) -> Result<axum::Json<TenantList>, Refusal> {
    state.admin(&headers)?;
    let tenants = state
        .platform
        .tenants()
        .into_iter()
        .map(|(tenant, apps)| TenantSummary {
            name: tenant.name.clone(),
            quotas: tenant.quotas.clone(),
            apps,
        })
        .collect();
    Ok(axum::Json(TenantList { tenants }))
}

/// Changes some of a tenant's quotas; those the body leaves out stay as they are.
async fn change_quotas(
    State(state): State<ApiState>,
    headers: HeaderMap,
    Path(name): Path<String>,
    body: Bytes,
) -> Result<axum::Json<TenantSummary>, Refusal> {
    state.admin(&headers)?;
    let overrides: QuotaOverrides = serde_json::from_slice(&body).map_err(|err| {
        Refusal::new(
            ErrorCode::BadRequest,
            format!("the body is not a set of quotas: {err}; send e.g. {{\"max_apps\": 10}}"),
        )
    })?;
    let tenant = state.platform.set_quotas(&name, &overrides).await?;
    let apps = state
        .platform
        .tenants()
        .into_iter()
        .find(|(t, _)| t.name == name)
        .map_or(0, |(_, apps)| apps);
    Ok(axum::Json(TenantSummary {
        name,
        quotas: tenant.quotas.clone(),
        apps,
    }))
}

#[derive(Deserialize)]
struct DeleteTenantQuery {
    #[serde(default)]
    with_apps: bool,
}

async fn delete_tenant(
    State(state): State<ApiState>,
    headers: HeaderMap,
    Path(name): Path<String>,
    Query(query): Query<DeleteTenantQuery>,
) -> Result<StatusCode, Refusal> {
    state.admin(&headers)?;
    state.platform.delete_tenant(&name, query.with_apps).await?;
    Ok(StatusCode::NO_CONTENT)
}

impl ApiState {
    /// The admin, or tenant `name` itself: who may change that tenant's token.
    fn admin_or_self(&self, headers: &HeaderMap, name: &str) -> Result<(), Refusal> {
        match self.caller(headers)? {
            Caller::Admin => Ok(()),
            Caller::Tenant(tenant) if tenant.name == name => Ok(()),
            Caller::Tenant(_) => Err(Refusal::new(
                ErrorCode::Forbidden,
                "a tenant's token changes only its own token; this needs the admin token",
            )),
        }
    }
}

async fn rotate_token(
    State(state): State<ApiState>,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> Result<axum::Json<TokenIssued>, Refusal> {
    state.admin_or_self(&headers, &name)?;
    let token = state.platform.rotate_token(&name).await?;
    Ok(axum::Json(TokenIssued { name, token }))
}

async fn revoke_token(
    State(state): State<ApiState>,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> Result<StatusCode, Refusal> {
    state.admin_or_self(&headers, &name)?;
    state.platform.revoke_token(&name).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn whoami(
    State(state): State<ApiState>,
    headers: HeaderMap,
) -> Result<axum::Json<WhoAmI>, Refusal> {
    Ok(axum::Json(match state.caller(&headers)? {
        Caller::Admin => WhoAmI {
            role: "admin".into(),
            tenant: None,
            quotas: None,
        },
        Caller::Tenant(tenant) => WhoAmI {
            role: "tenant".into(),
            tenant: Some(tenant.name.clone()),
            quotas: Some(tenant.quotas.clone()),
        },
    }))
}

/// What Prometheus expects from a scrape of `prometheus-client`'s text.
const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Every series of the host, for the operator's Prometheus (admin token).
async fn host_metrics(
    State(state): State<ApiState>,
    headers: HeaderMap,
) -> Result<Response, Refusal> {
    state.admin(&headers)?;
    let text = state.platform.metrics_text(None);
    Ok(([(header::CONTENT_TYPE, OPENMETRICS)], text).into_response())
}

/// The series of the caller's own apps (tenant token).
async fn tenant_metrics(
    State(state): State<ApiState>,
    headers: HeaderMap,
) -> Result<Response, Refusal> {
    let tenant = state.tenant(&headers).await?;
    let text = state.platform.metrics_text(Some(&tenant.name));
    Ok(([(header::CONTENT_TYPE, OPENMETRICS)], text).into_response())
}

#[derive(Deserialize)]
struct UsageQuery {
    from: Option<String>,
    to: Option<String>,
    tenant: Option<String>,
}

/// What apps used over a time range (default: the last 24 hours): a tenant's own apps, or
/// for the admin every tenant's (or the one `tenant=` names).
async fn usage(
    State(state): State<ApiState>,
    headers: HeaderMap,
    query: Result<Query<UsageQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<axum::Json<UsageReport>, Refusal> {
    let caller = state.caller(&headers)?;
    let example = "e.g. ?from=2025-01-31T00:00:00Z&to=2025-02-01T00:00:00Z";
    let Query(query) =
        query.map_err(|err| Refusal::new(ErrorCode::BadRequest, format!("{err}; {example}")))?;
    let no_tenant = |name: &str| {
        Refusal::new(
            ErrorCode::NotFound,
            format!("no tenant named `{name}` whose usage you may see"),
        )
    };
    let tenant = match (caller, query.tenant) {
        (Caller::Admin, Some(name)) if state.platform.tenant(&name).is_none() => {
            return Err(no_tenant(&name));
        }
        (Caller::Admin, name) => name,
        // Another tenant's usage answers exactly like a tenant that does not exist.
        (Caller::Tenant(tenant), Some(name)) if name != tenant.name => {
            return Err(no_tenant(&name));
        }
        (Caller::Tenant(tenant), _) => Some(tenant.name.clone()),
    };
    let time = |name: &str, value: Option<String>| match value {
        None => Ok(None),
        Some(text) => humantime::parse_rfc3339_weak(&text)
            .map(Some)
            .map_err(|err| {
                Refusal::new(
                    ErrorCode::BadRequest,
                    format!("`{name}={text}` is not an RFC 3339 time in UTC ({err}); {example}"),
                )
            }),
    };
    let to = time("to", query.to)?.unwrap_or_else(std::time::SystemTime::now);
    let from = time("from", query.from)?
        .unwrap_or_else(|| to - std::time::Duration::from_secs(24 * 60 * 60));
    if state.platform.cluster().is_some() {
        return Ok(axum::Json(
            state.platform.cluster_usage(from, to, tenant).await?,
        ));
    }
    let platform = state.platform.clone();
    tokio::task::spawn_blocking(move || platform.usage().report(from, to, tenant.as_deref(), None))
        .await
        .map_err(|err| Refusal::new(ErrorCode::Internal, format!("the query stopped: {err}")))?
        .map(axum::Json)
        .map_err(usage_refusal)
}

async fn list_apps(
    State(state): State<ApiState>,
    headers: HeaderMap,
) -> Result<axum::Json<AppList>, Refusal> {
    let tenant = state.tenant(&headers).await?;
    Ok(axum::Json(AppList {
        apps: state.platform.list(&tenant),
    }))
}

async fn inspect_app(
    State(state): State<ApiState>,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> Result<Response, Refusal> {
    let tenant = state.tenant(&headers).await?;
    let mut info = state.platform.inspect(&tenant, &name)?;
    info.cluster = state.platform.convergence(&name).await;
    info.schedules = state.platform.schedules_of(&tenant, &name).await;
    info.consumers = state.platform.consumers_of(&tenant, &name).await;
    Ok(axum::Json(info).into_response())
}

async fn deploy_app(
    State(state): State<ApiState>,
    headers: HeaderMap,
    Path(name): Path<String>,
    body: Body,
) -> Result<Response, Refusal> {
    let tenant = state.tenant(&headers).await?;
    let limit = state.platform.config().max_bundle_bytes;
    let too_large = || {
        Refusal::new(
            ErrorCode::PayloadTooLarge,
            format!(
                "the bundle is larger than this server accepts ({}); leave build output and \
                 other files the app does not use out of the folder",
                format_size(limit)
            ),
        )
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|length| length > limit) {
        return Err(too_large());
    }
    let timeout = state.platform.config().upload_timeout;
    let _mine = deploy_turn(&state, &tenant).await?;
    let _upload = state.platform.upload_slot().await;
    let bytes = read_upload(body, limit, timeout)
        .await
        .map_err(|err| match err {
            UploadError::TooLarge => too_large(),
            UploadError::TimedOut => Refusal::new(
                ErrorCode::BadRequest,
                format!(
                    "the upload took longer than this server waits ({}); send it faster, or ask \
                 the operator for a longer --upload-timeout",
                    humantime::format_duration(timeout)
                ),
            ),
            UploadError::Broken(err) => Refusal::new(
                ErrorCode::BadRequest,
                format!("the upload broke off: {err}"),
            ),
        })?;
    let _slot = state.platform.deploy_slot().await;
    let (info, created) = state.platform.deploy(&tenant, &name, bytes, None).await?;
    Ok(deployed(info, created))
}

/// `POST /v1/apps`: a deploy of an app the server pulls from a registry.
async fn deploy_from_registry(
    State(state): State<ApiState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, Refusal> {
    let tenant = state.tenant(&headers).await?;
    let request: DeployFrom = serde_json::from_slice(&body).map_err(|err| {
        Refusal::new(
            ErrorCode::BadRequest,
            format!(
                "the body is not a deploy from a registry: {err}; send e.g. {{\"from\": \
                 \"registry.example.com/apps/hello:v1\"}}"
            ),
        )
    })?;
    let _mine = deploy_turn(&state, &tenant).await?;
    // The pull takes an upload's place: it is what brings the bundle in.
    let _upload = state.platform.upload_slot().await;
    let _slot = state.platform.deploy_slot().await;
    let (info, created) = state.platform.deploy_from(&tenant, request).await?;
    Ok(deployed(info, created))
}

/// One deploy per tenant at a time; a second one waits for the first, but not forever.
async fn deploy_turn(
    state: &ApiState,
    tenant: &Arc<Tenant>,
) -> Result<tokio::sync::OwnedSemaphorePermit, Refusal> {
    let timeout = state.platform.config().upload_timeout;
    tokio::time::timeout(timeout, tenant.deploying.clone().acquire_owned())
        .await
        .map_err(|_| {
            Refusal::new(
                ErrorCode::Conflict,
                "another deploy of this tenant has been running for too long; try again once \
                 it is done",
            )
        })?
        .map_err(|_| Refusal::internal("the tenant's deploy slot is closed"))
}

/// 201 with the app for a new app, 200 for a new version of one.
fn deployed(info: AppInfo, created: bool) -> Response {
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    (status, axum::Json(info)).into_response()
}

enum UploadError {
    TooLarge,
    TimedOut,
    Broken(axum::Error),
}

/// Reads an upload of at most `limit` bytes within `timeout`, and cuts off a client that
/// sends nothing for a tenth of it (at most 30 s): a slow client holds an upload slot no
/// longer than that.
async fn read_upload(body: Body, limit: u64, timeout: Duration) -> Result<Bytes, UploadError> {
    let idle = (timeout / 10).min(Duration::from_secs(30));
    let deadline = tokio::time::Instant::now() + timeout;
    let mut body = body;
    let mut bytes = bytes::BytesMut::new();
    loop {
        let next = tokio::time::timeout_at(
            deadline.min(tokio::time::Instant::now() + idle),
            body.frame(),
        );
        let frame = match next.await {
            Err(_) => return Err(UploadError::TimedOut),
            Ok(None) => return Ok(bytes.freeze()),
            Ok(Some(frame)) => frame.map_err(UploadError::Broken)?,
        };
        if let Ok(data) = frame.into_data() {
            if bytes.len() as u64 + data.len() as u64 > limit {
                return Err(UploadError::TooLarge);
            }
            bytes.extend_from_slice(&data);
        }
    }
}

async fn rollback_app(
    State(state): State<ApiState>,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> Result<Response, Refusal> {
    let tenant = state.tenant(&headers).await?;
    Ok(axum::Json(state.platform.rollback(&tenant, &name).await?).into_response())
}

async fn delete_app(
    State(state): State<ApiState>,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> Result<StatusCode, Refusal> {
    let tenant = state.tenant(&headers).await?;
    state.platform.delete(&tenant, &name).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
struct LogsQuery {
    #[serde(default)]
    follow: bool,
    #[serde(default = "default_tail")]
    tail: usize,
}

fn default_tail() -> usize {
    100
}

async fn app_logs(
    State(state): State<ApiState>,
    headers: HeaderMap,
    Path(name): Path<String>,
    query: Result<Query<LogsQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, Refusal> {
    let tenant = state.tenant(&headers).await?;
    let Query(query) = query.map_err(|err| {
        Refusal::new(
            ErrorCode::BadRequest,
            format!("{err}; e.g. ?follow=true&tail=100"),
        )
    })?;
    let hub = state.platform.logs(&tenant, &name)?;
    if state.platform.cluster().is_some() {
        return cluster_logs(state, tenant, name, query).await;
    }
    let (past, receiver) = hub.tail_and_follow(query.tail);
    let past = futures_util::stream::iter(past.into_iter().map(|line| Ok(ndjson(&line))));
    let body = if query.follow {
        let follow = (receiver, state.stopping.clone());
        let live =
            futures_util::stream::unfold(follow, |(mut receiver, mut stopping)| async move {
                let next = tokio::select! {
                    next = receiver.recv() => next,
                    _ = stopping.wait_for(|stop| *stop) => return None,
                };
                let line = match next {
                    Ok(line) => ndjson(&line),
                    Err(RecvError::Lagged(missed)) => ndjson(&LogLine {
                        time: crate::persist::now_rfc3339(),
                        app: String::new(),
                        component: String::new(),
                        request_id: 0,
                        trace_id: String::new(),
                        stream: "skiff".into(),
                        level: Some("warn".into()),
                        message: format!("{missed} lines skipped: this reader fell behind"),
                        host: None,
                    }),
                    Err(RecvError::Closed) => return None,
                };
                Some((Ok::<_, Infallible>(line), (receiver, stopping)))
            });
        Body::from_stream(futures_util::StreamExt::chain(past, live))
    } else {
        Body::from_stream(past)
    };
    Ok(ndjson_response(body))
}

fn ndjson_response(body: Body) -> Response {
    (
        [
            (header::CONTENT_TYPE, "application/x-ndjson"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        body,
    )
        .into_response()
}

/// How often a follower on a cluster looks for new lines.
const CLUSTER_LOG_POLL: Duration = Duration::from_millis(250);

/// On a cluster: the app's lines from every host, from the cluster's shared stream. A follower
/// polls it: a blocking read would hold a Redis connection for each follower.
async fn cluster_logs(
    state: ApiState,
    tenant: Arc<Tenant>,
    name: String,
    query: LogsQuery,
) -> Result<Response, Refusal> {
    let newest = state
        .platform
        .shared_logs(&tenant.name, &name, None, query.tail.max(1))
        .await?;
    // Following goes on after the newest line, shown or not.
    let cursor = newest
        .last()
        .map_or_else(|| "0-0".to_string(), |(id, _)| id.clone());
    let skip = newest.len().saturating_sub(query.tail);
    let past = futures_util::stream::iter(
        newest
            .into_iter()
            .skip(skip)
            .map(|(_, line)| Ok::<_, Infallible>(ndjson_bytes(line))),
    );
    if !query.follow {
        return Ok(ndjson_response(Body::from_stream(past)));
    }
    let follow = (state, tenant, name, cursor, VecDeque::new());
    let live = futures_util::stream::unfold(
        follow,
        |(state, tenant, name, mut cursor, mut pending)| async move {
            loop {
                if let Some(line) = pending.pop_front() {
                    return Some((Ok(line), (state, tenant, name, cursor, pending)));
                }
                let mut stopping = state.stopping.clone();
                tokio::select! {
                    _ = stopping.wait_for(|stop| *stop) => return None,
                    () = tokio::time::sleep(CLUSTER_LOG_POLL) => {}
                }
                // The app is gone (deleted through any host): the stream ends.
                state.platform.logs(&tenant, &name).ok()?;
                // While Redis cannot be reached, this follower waits for it.
                if let Ok(lines) = state
                    .platform
                    .shared_logs(&tenant.name, &name, Some(&cursor), 256)
                    .await
                {
                    for (id, line) in lines {
                        cursor = id;
                        pending.push_back(ndjson_bytes(line));
                    }
                }
            }
        },
    );
    Ok(ndjson_response(Body::from_stream(
        futures_util::StreamExt::chain(past, live),
    )))
}

fn ndjson_bytes(mut line: Vec<u8>) -> Bytes {
    line.push(b'\n');
    Bytes::from(line)
}

fn ndjson(line: &LogLine) -> Bytes {
    let mut bytes = serde_json::to_vec(line).unwrap_or_default();
    bytes.push(b'\n');
    Bytes::from(bytes)
}

#[cfg(test)]
mod tests {
    use super::{AdminAuth, is_loopback_authority};

    #[test]
    fn an_admin_token_is_long_enough_and_trimmed() {
        let err = AdminAuth::token("  short-token \n").err().unwrap();
        assert_eq!(
            err.to_string(),
            "is 11 characters long; use at least 16 random ones, e.g. `openssl rand -hex 32`"
        );
        match AdminAuth::token("0123456789abcdef\n") {
            Ok(AdminAuth::Token(token)) => assert_eq!(token, "0123456789abcdef"),
            _ => panic!("a 16-character token is accepted"),
        }
    }

    #[test]
    fn only_loopback_authorities_pass() {
        for good in [
            "localhost",
            "LOCALHOST:8080",
            "127.0.0.1:3000",
            "127.8.9.10",
            "[::1]:1",
        ] {
            assert!(is_loopback_authority(good), "{good}");
        }
        for bad in [
            "evil.example",
            "localhost.evil.example",
            "127.0.0.1.nip.io:80",
            "[::ffff:8.8.8.8]",
            "10.0.0.1:80",
            "",
            "null",
        ] {
            assert!(!is_loopback_authority(bad), "{bad}");
        }
    }
}
