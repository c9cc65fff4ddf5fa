//! [`Client`]: one server's management API, with the token for one kind of call.

use std::marker::PhantomData;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use reqwest::header::{ACCEPT, CONTENT_LENGTH, CONTENT_TYPE};
use reqwest::{Method, RequestBuilder, Response, StatusCode};
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use serde::de::DeserializeOwned;
use skiff_api::{
    AppInfo, AppList, CreateTenant, DeployFrom, QuotaOverrides, TenantCreated, TenantList,
    TenantSummary, TokenIssued, UsageReport, WhoAmI, check_name, paths,
};

use crate::logs::LogStream;
use crate::origin::{CaCert, CaCertFrom, Role};
use crate::resolve::{Server, Token};
use crate::{ApiError, ClientConfig, ClientError};

/// A 2xx answer: its status, and its JSON body as the server sent it, decoded on demand (a
/// caller that only shows the JSON never depends on this client knowing every field).
#[derive(Debug, Clone)]
pub struct Reply<T> {
    status: StatusCode,
    body: Bytes,
    kind: PhantomData<fn() -> T>,
}

impl<T: DeserializeOwned> Reply<T> {
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The body as the server sent it.
    pub fn body(&self) -> &Bytes {
        &self.body
    }

    /// The body as `T`.
    pub fn decode(&self) -> Result<T, ClientError> {
        serde_json::from_slice(&self.body).map_err(ClientError::UnexpectedAnswer)
    }
}

/// The range and tenant of a usage report; unset fields take the server's defaults (the 24
/// hours before now; a tenant's own apps, or every tenant's for the admin).
#[derive(Debug, Clone, Default)]
pub struct UsageQuery {
    pub from: Option<SystemTime>,
    pub to: Option<SystemTime>,
    pub tenant: Option<String>,
}

/// One server's management API, with the token for one kind of call ([`Role`]). Cheap to make;
/// every call is one request.
pub struct Client {
    server: Server,
    token: Option<Token>,
    role: Role,
    http: reqwest::Client,
}

impl Client {
    /// A client for `role` from what the user gave (`--server` and `--token`, which may have
    /// come from SKIFF_SERVER and SKIFF_TOKEN), the SKIFF_TOKEN and SKIFF_ADMIN_TOKEN
    /// variables, and then the file `skiff login` saved: see [`Token::resolve`] and
    /// [`Server::resolve`].
    pub fn from_env(
        role: Role,
        server: Option<&str>,
        token: Option<&str>,
    ) -> Result<Client, ClientError> {
        let env = |name| std::env::var(name).ok();
        let (env_token, env_admin) = (env("SKIFF_TOKEN"), env("SKIFF_ADMIN_TOKEN"));
        let given = Token::resolve(role, token, env_token.as_deref(), env_admin.as_deref());
        // Read only when flags and variables leave something open: a broken config file must
        // not stand in the way of a command that needs nothing from it. (With both given, it
        // is still asked for a CA certificate saved with an https:// server, if it reads.)
        let saved = if server.is_none() || given.is_none() {
            ClientConfig::load_default()?
        } else if server.is_some_and(|s| s.trim_start().starts_with("https://")) {
            ClientConfig::load_default().ok().flatten()
        } else {
            None
        };
        let mut server = Server::resolve(server, saved.as_ref())?;
        if let Some(path) = env("SKIFF_CA_CERT").filter(|path| !path.trim().is_empty()) {
            server = server.with_ca_cert(CaCert::new(path, CaCertFrom::Env));
        }
        let token = given.or_else(|| Token::saved(saved.as_ref()));
        Client::new(server, token, role)
    }

    /// A client of `server` that sends `token` (none: a server in `--insecure-dev` mode). An
    /// `https://` server's certificate must be signed by a public CA (Mozilla's set, built in)
    /// or by the server's [`CaCert`](crate::CaCert), whose file is read here.
    pub fn new(server: Server, token: Option<Token>, role: Role) -> Result<Client, ClientError> {
        let mut http = reqwest::Client::builder()
            // Only the connection gets a deadline: a deploy compiles on the server before it
            // answers, and a followed log is meant to stay open.
            .connect_timeout(Duration::from_secs(10))
            .user_agent(concat!("skiff/", env!("CARGO_PKG_VERSION")));
        if let Some(ca_cert) = server.ca_cert() {
            for certificate in load_ca_cert(ca_cert)? {
                http = http.add_root_certificate(certificate);
            }
        }
        let http = http.build().map_err(ClientError::HttpClient)?;
        Ok(Client {
            server,
            token,
            role,
            http,
        })
    }

    pub fn server(&self) -> &Server {
        &self.server
    }

    pub fn token(&self) -> Option<&Token> {
        self.token.as_ref()
    }

    // ---- apps

    /// `GET /v1/apps`: the caller's apps.
    pub async fn apps(&self) -> Result<Reply<AppList>, ClientError> {
        self.fetch(self.request(Method::GET, paths::APPS)).await
    }

    /// `GET /v1/apps/NAME`: one app's versions, routes and components.
    pub async fn app(&self, name: &str) -> Result<Reply<AppInfo>, ClientError> {
        self.fetch(self.request(Method::GET, &app_path(name, "")?))
            .await
    }

    /// `PUT /v1/apps/NAME`: deploys `bundle` (tar, tar.gz or zip) as a new version; the
    /// status is 201 for a new app. `sent` is told each piece's size as it is written to the
    /// connection, for a progress display.
    pub async fn deploy(
        &self,
        name: &str,
        bundle: Bytes,
        sent: impl Fn(u64) + Send + Sync + 'static,
    ) -> Result<Reply<AppInfo>, ClientError> {
        let total = bundle.len() as u64;
        let request = self
            .request(Method::PUT, &app_path(name, "")?)
            .header(CONTENT_TYPE, "application/gzip")
            // A streamed body has no length of its own; giving it lets the server refuse an
            // oversized bundle (413) before reading it.
            .header(CONTENT_LENGTH, total)
            .body(upload_body(bundle, sent));
        self.fetch(request).await
    }

    /// `POST /v1/apps`: asks the server to pull an app from a registry and deploy it; the
    /// status is 201 for a new app.
    pub async fn deploy_from(&self, request: &DeployFrom) -> Result<Reply<AppInfo>, ClientError> {
        if let Some(name) = &request.name {
            check_name("app", name)?;
        }
        self.fetch(self.request(Method::POST, paths::APPS).json(request))
            .await
    }

    /// `POST /v1/apps/NAME/rollback`: makes the version before the live one live again.
    pub async fn rollback(&self, name: &str) -> Result<Reply<AppInfo>, ClientError> {
        self.fetch(self.request(Method::POST, &app_path(name, "/rollback")?))
            .await
    }

    /// `DELETE /v1/apps/NAME`.
    pub async fn delete_app(&self, name: &str) -> Result<(), ClientError> {
        self.send(self.request(Method::DELETE, &app_path(name, "")?))
            .await
            .map(drop)
    }

    /// `GET /v1/apps/NAME/logs`: the last `tail` lines of the app's guest output, then, with
    /// `follow`, new ones as they come.
    pub async fn logs(
        &self,
        name: &str,
        follow: bool,
        tail: u32,
    ) -> Result<LogStream, ClientError> {
        let request = self
            .request(Method::GET, &app_path(name, "/logs")?)
            .query(&[("follow", follow.to_string()), ("tail", tail.to_string())])
            .header(ACCEPT, "application/x-ndjson");
        let response = self.send(request).await?;
        Ok(LogStream::new(response, self.server.clone()))
    }

    // ---- tenants

    /// `POST /v1/tenants` (admin): the new tenant's token is in the answer, and nowhere else.
    pub async fn create_tenant(
        &self,
        tenant: &CreateTenant,
    ) -> Result<Reply<TenantCreated>, ClientError> {
        check_tenant(&tenant.name)?;
        self.fetch(self.request(Method::POST, paths::TENANTS).json(tenant))
            .await
    }

    /// `GET /v1/tenants` (admin).
    pub async fn tenants(&self) -> Result<Reply<TenantList>, ClientError> {
        self.fetch(self.request(Method::GET, paths::TENANTS)).await
    }

    /// `PATCH /v1/tenants/NAME` (admin): changes the quotas given, keeps the others.
    pub async fn set_quotas(
        &self,
        name: &str,
        quotas: &QuotaOverrides,
    ) -> Result<Reply<TenantSummary>, ClientError> {
        check_tenant(name)?;
        let request = self
            .request(Method::PATCH, &paths::tenant(name))
            .json(quotas);
        self.fetch(request).await
    }

    /// `POST /v1/tenants/NAME/token` (admin, or the tenant): a new token; the old one stops
    /// working.
    pub async fn rotate_token(&self, name: &str) -> Result<Reply<TokenIssued>, ClientError> {
        check_tenant(name)?;
        self.fetch(self.request(Method::POST, &paths::tenant_token(name)))
            .await
    }

    /// `DELETE /v1/tenants/NAME/token` (admin, or the tenant): no token works until one is
    /// rotated in.
    pub async fn revoke_token(&self, name: &str) -> Result<(), ClientError> {
        check_tenant(name)?;
        self.send(self.request(Method::DELETE, &paths::tenant_token(name)))
            .await
            .map(drop)
    }

    /// `DELETE /v1/tenants/NAME` (admin); a tenant with apps only `with_apps`.
    pub async fn delete_tenant(&self, name: &str, with_apps: bool) -> Result<(), ClientError> {
        check_tenant(name)?;
        let path = format!("{}?with_apps={with_apps}", paths::tenant(name));
        self.send(self.request(Method::DELETE, &path))
            .await
            .map(drop)
    }

    // ---- anyone

    /// `GET /v1/whoami`: whose token this is.
    pub async fn whoami(&self) -> Result<Reply<WhoAmI>, ClientError> {
        self.fetch(self.request(Method::GET, paths::WHOAMI)).await
    }

    /// `GET /v1/usage`: what apps used over a range.
    pub async fn usage(&self, query: &UsageQuery) -> Result<Reply<UsageReport>, ClientError> {
        let mut pairs = Vec::new();
        for (name, time) in [("from", query.from), ("to", query.to)] {
            if let Some(time) = time {
                pairs.push((name, humantime::format_rfc3339_seconds(time).to_string()));
            }
        }
        if let Some(tenant) = &query.tenant {
            check_tenant(tenant)?;
            pairs.push(("tenant", tenant.clone()));
        }
        self.fetch(self.request(Method::GET, paths::USAGE).query(&pairs))
            .await
    }

    // ---- the plumbing

    fn request(&self, method: Method, path: &str) -> RequestBuilder {
        let request = self
            .http
            .request(method, format!("{}{path}", self.server.url()));
        match &self.token {
            Some(token) => request.bearer_auth(token.value()),
            None => request,
        }
    }

    /// Sends `request`; a transport failure or a non-2xx answer becomes an error.
    async fn send(&self, request: RequestBuilder) -> Result<Response, ClientError> {
        let response = request.send().await.map_err(|e| self.transport(e))?;
        let status = response.status();
        if status.is_success() {
            return Ok(response);
        }
        // The body of an error is small; if even it cannot be read, the status alone must do.
        let body = response.bytes().await.unwrap_or_default();
        let token = self.token.as_ref().map(|t| t.from().clone());
        Err(ClientError::Api(Box::new(ApiError::new(
            status, &body, token, self.role,
        ))))
    }

    /// Sends `request` and reads the whole (JSON) answer.
    async fn fetch<T>(&self, request: RequestBuilder) -> Result<Reply<T>, ClientError> {
        let response = self
            .send(request.header(ACCEPT, "application/json"))
            .await?;
        let status = response.status();
        let body = response.bytes().await.map_err(|e| self.transport(e))?;
        Ok(Reply {
            status,
            body,
            kind: PhantomData,
        })
    }

    fn transport(&self, error: reqwest::Error) -> ClientError {
        ClientError::transport(
            self.server.url(),
            self.server.from(),
            self.server.ca_cert(),
            error,
        )
    }
}

/// The certificates in `ca`'s file, each checked to be DER inside PEM; at least one.
fn load_ca_cert(ca: &CaCert) -> Result<Vec<reqwest::Certificate>, ClientError> {
    let problem = |problem: String| ClientError::CaCert {
        path: ca.path().to_path_buf(),
        from: ca.from().clone(),
        problem,
    };
    let text = std::fs::read(ca.path()).map_err(|e| problem(format!("cannot be read: {e}")))?;
    let ders = CertificateDer::pem_slice_iter(&text)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| problem(format!("is not valid PEM ({e})")))?;
    if ders.is_empty() {
        return Err(problem(
            "holds no certificate (no `-----BEGIN CERTIFICATE-----` block)".into(),
        ));
    }
    ders.iter()
        .map(|der| {
            reqwest::Certificate::from_der(der)
                .map_err(|e| problem(format!("holds a certificate that cannot be used ({e})")))
        })
        .collect()
}

/// The path of one app; the name is checked first so that it cannot escape its segment.
fn app_path(name: &str, rest: &str) -> Result<String, ClientError> {
    check_name("app", name)?;
    Ok(format!("{}/{name}{rest}", paths::APPS))
}

fn check_tenant(name: &str) -> Result<(), ClientError> {
    Ok(check_name("tenant", name)?)
}

/// The bundle as a streamed body, so that `sent` can tell how much has been written.
fn upload_body(bytes: Bytes, sent: impl Fn(u64) + Send + Sync + 'static) -> reqwest::Body {
    const CHUNK: usize = 64 * 1024;
    let chunks: Vec<Bytes> = (0..bytes.len())
        .step_by(CHUNK)
        .map(|start| bytes.slice(start..(start + CHUNK).min(bytes.len())))
        .collect();
    // `map` runs as hyper pulls each chunk, i.e. as it is written to the connection.
    let stream = futures_util::stream::iter(chunks.into_iter().map(move |chunk| {
        sent(chunk.len() as u64);
        Ok::<_, std::convert::Infallible>(chunk)
    }));
    reqwest::Body::wrap_stream(stream)
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn a_ca_file_must_hold_a_pem_certificate() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ca.pem");
        let ca = CaCert::new(&path, CaCertFrom::Flag);
        let err = load_ca_cert(&ca).unwrap_err().to_string();
        assert!(err.contains("cannot be read"), "{err}");
        assert!(err.contains("give --ca-cert the PEM file"), "{err}");
        std::fs::write(
            &path,
            "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
        )
        .unwrap();
        let err = load_ca_cert(&ca).unwrap_err().to_string();
        assert!(err.contains("holds no certificate"), "{err}");
    }
}
