//! The management API over HTTP (axum): authentication, the routes of [`crate::api`], and the
//! mapping of [`Refusal`]s to status codes and JSON error bodies.

use std::convert::Infallible;
use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use bytes::Bytes;
use http_body_util::{BodyExt, LengthLimitError, Limited};
use serde::Deserialize;
use tokio::sync::broadcast::error::RecvError;

use crate::api::{
    AppList, CreateTenant, ErrorBody, ErrorCode, ErrorDetail, LogLine, TenantCreated, TenantList,
    TenantSummary, UsageReport, paths,
};
use crate::platform::{Platform, Refusal};
use crate::tenants::{Tenant, same_secret};
use crate::usage::ReportError;
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
    /// routes. Only ever on loopback.
    InsecureDev,
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
    let state = ApiState {
        platform,
        admin,
        stopping,
    };
    Router::new()
        .route(paths::OPENAPI, get(openapi))
        .route(paths::DASHBOARD, get(dashboard))
        .route(paths::HEALTH, get(health))
        .route(paths::TENANTS, post(create_tenant).get(list_tenants))
        .route(paths::APPS, get(list_apps))
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
        .with_state(state)
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        let status = match self.code {
            ErrorCode::Unauthorized => StatusCode::UNAUTHORIZED,
            ErrorCode::Forbidden | ErrorCode::QuotaExceeded => StatusCode::FORBIDDEN,
            ErrorCode::NotFound => StatusCode::NOT_FOUND,
            ErrorCode::Conflict => StatusCode::CONFLICT,
            ErrorCode::InvalidBundle
            | ErrorCode::InvalidManifest
            | ErrorCode::LoadFailed
            | ErrorCode::BadRequest => StatusCode::BAD_REQUEST,
            ErrorCode::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ErrorCode::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        };
        let unauthorized = self.code == ErrorCode::Unauthorized;
        let body = ErrorBody {
            error: ErrorDetail {
                code: self.code,
                message: self.message,
            },
        };
        let mut response = (status, axum::Json(body)).into_response();
        if unauthorized {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
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

    fn tenant(&self, headers: &HeaderMap) -> Result<Arc<Tenant>, Refusal> {
        match self.caller(headers)? {
            Caller::Tenant(tenant) => Ok(tenant),
            Caller::Admin if matches!(self.admin, AdminAuth::InsecureDev) => {
                if let Some(tenant) = self.platform.tenant(DEV_TENANT) {
                    return Ok(tenant);
                }
                // Racing creators both end up with the one tenant.
                let _ = self
                    .platform
                    .create_tenant(DEV_TENANT, self.platform.config().default_quotas.clone());
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

async fn health() -> impl IntoResponse {
    axum::Json(serde_json::json!({ "status": "ok" }))
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
        .create_tenant(&request.name, quotas.clone())?;
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
    let tenant = state.tenant(&headers)?;
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
    let platform = state.platform.clone();
    tokio::task::spawn_blocking(move || platform.usage().report(from, to, tenant.as_deref()))
        .await
        .map_err(|err| Refusal::new(ErrorCode::Internal, format!("the query stopped: {err}")))?
        .map(axum::Json)
        .map_err(|err| match err {
            ReportError::Range(message) => Refusal::new(ErrorCode::BadRequest, message),
            ReportError::Read(message) => Refusal::internal(message),
        })
}

async fn list_apps(
    State(state): State<ApiState>,
    headers: HeaderMap,
) -> Result<axum::Json<AppList>, Refusal> {
    let tenant = state.tenant(&headers)?;
    Ok(axum::Json(AppList {
        apps: state.platform.list(&tenant),
    }))
}

async fn inspect_app(
    State(state): State<ApiState>,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> Result<Response, Refusal> {
    let tenant = state.tenant(&headers)?;
    Ok(axum::Json(state.platform.inspect(&tenant, &name)?).into_response())
}

async fn deploy_app(
    State(state): State<ApiState>,
    headers: HeaderMap,
    Path(name): Path<String>,
    body: Body,
) -> Result<Response, Refusal> {
    let tenant = state.tenant(&headers)?;
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
    let _slot = state.platform.deploy_slot().await;
    let bytes = Limited::new(body, usize::try_from(limit).unwrap_or(usize::MAX))
        .collect()
        .await
        .map_err(|err| {
            if err.is::<LengthLimitError>() {
                too_large()
            } else {
                Refusal::new(
                    ErrorCode::BadRequest,
                    format!("the upload broke off: {err}"),
                )
            }
        })?
        .to_bytes();
    let (info, created) = state.platform.deploy(&tenant, &name, bytes).await?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, axum::Json(info)).into_response())
}

async fn rollback_app(
    State(state): State<ApiState>,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> Result<Response, Refusal> {
    let tenant = state.tenant(&headers)?;
    Ok(axum::Json(state.platform.rollback(&tenant, &name).await?).into_response())
}

async fn delete_app(
    State(state): State<ApiState>,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> Result<StatusCode, Refusal> {
    let tenant = state.tenant(&headers)?;
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
    let tenant = state.tenant(&headers)?;
    let Query(query) = query.map_err(|err| {
        Refusal::new(
            ErrorCode::BadRequest,
            format!("{err}; e.g. ?follow=true&tail=100"),
        )
    })?;
    let hub = state.platform.logs(&tenant, &name)?;
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
                    }),
                    Err(RecvError::Closed) => return None,
                };
                Some((Ok::<_, Infallible>(line), (receiver, stopping)))
            });
        Body::from_stream(futures_util::StreamExt::chain(past, live))
    } else {
        Body::from_stream(past)
    };
    Ok((
        [
            (header::CONTENT_TYPE, "application/x-ndjson"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        body,
    )
        .into_response())
}

fn ndjson(line: &LogLine) -> Bytes {
    let mut bytes = serde_json::to_vec(line).unwrap_or_default();
    bytes.push(b'\n');
    Bytes::from(bytes)
}
