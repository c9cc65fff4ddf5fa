//! The data plane's choice of app: `NAME.DOMAIN` in the `Host` header (or the authority of an
//! HTTP/2 request) selects the app named NAME; with path routing on, a request whose host names
//! no app is chosen by its first path segment (`/NAME/...`). An idle app is loaded here, on its
//! first request.

use std::sync::Arc;

use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use skiff_http::{AppSource, Selected, plain};
use skiff_runtime::ResponseBody;

use crate::platform::Platform;

pub struct HostRouter {
    platform: Arc<Platform>,
    /// `.DOMAIN`, lower case.
    suffix: String,
    /// When the host name names no app, the first path segment may: `/NAME/...`.
    path_routing: bool,
}

impl HostRouter {
    pub fn new(platform: Arc<Platform>, path_routing: bool) -> Self {
        let suffix = format!(".{}", platform.config().domain.to_ascii_lowercase());
        HostRouter {
            platform,
            suffix,
            path_routing,
        }
    }
}

impl AppSource for HostRouter {
    async fn select(
        &self,
        request: &Request<Incoming>,
    ) -> Result<Selected, Response<ResponseBody>> {
        let host = request.uri().host().or_else(|| {
            request
                .headers()
                .get(http::header::HOST)
                .and_then(|value| value.to_str().ok())
        });
        let Some(host) = host else {
            return Err(plain(
                StatusCode::BAD_REQUEST,
                "no Host header: apps are chosen by host name\n".into(),
            ));
        };
        let (name, base_path_len) = match app_name(host, &self.suffix) {
            Some(name) => (name, 0),
            None if self.path_routing => match first_segment(request.uri().path()) {
                Some(name) => (name, name.len() + 1),
                None => return Err(not_found(host, &self.suffix)),
            },
            None => return Err(not_found(host, &self.suffix)),
        };
        let lowered;
        let name = if name.bytes().any(|b| b.is_ascii_uppercase()) {
            lowered = name.to_ascii_lowercase();
            lowered.as_str()
        } else {
            name
        };
        match self.platform.serve(name).await {
            Some(Ok(app)) => Ok(Selected { app, base_path_len }),
            Some(Err(reason)) => {
                tracing::error!(app = name, "cannot load the app: {reason}");
                Err(plain(
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!("the app `{name}` cannot be loaded right now\n"),
                ))
            }
            None => Err(not_found(host, &self.suffix)),
        }
    }
}

fn not_found(host: &str, suffix: &str) -> Response<ResponseBody> {
    let host: String = host.chars().take(255).collect();
    plain(
        StatusCode::NOT_FOUND,
        format!("no app is deployed at {host}; apps are served at NAME{suffix}\n"),
    )
}

/// `hello` of `/hello/api/x` or `/hello`.
fn first_segment(path: &str) -> Option<&str> {
    let rest = path.strip_prefix('/')?;
    let name = rest.split('/').next()?;
    (!name.is_empty()).then_some(name)
}

/// The app label of `host` (`hello` in `hello.localhost:3000`), if it is one label directly
/// under the domain.
fn app_name<'h>(host: &'h str, suffix: &str) -> Option<&'h str> {
    let host = match host.rsplit_once(':') {
        Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
        _ => host,
    };
    let host = host.strip_suffix('.').unwrap_or(host);
    let split = host.len().checked_sub(suffix.len())?;
    if !host.is_char_boundary(split) || !host[split..].eq_ignore_ascii_case(suffix) {
        return None;
    }
    let name = &host[..split];
    (!name.is_empty() && !name.contains('.')).then_some(name)
}

#[cfg(test)]
mod tests {
    use super::app_name;

    #[test]
    fn the_label_under_the_domain_names_the_app() {
        let s = ".localhost";
        assert_eq!(app_name("hello.localhost", s), Some("hello"));
        assert_eq!(app_name("hello.localhost:3000", s), Some("hello"));
        assert_eq!(app_name("hello.localhost.", s), Some("hello"));
        assert_eq!(app_name("Hello.LocalHost", s), Some("Hello"));
        assert_eq!(app_name("localhost", s), None);
        assert_eq!(app_name(".localhost", s), None);
        assert_eq!(app_name("a.b.localhost", s), None);
        assert_eq!(app_name("hello.example.com", s), None);
        assert_eq!(app_name("127.0.0.1:3000", s), None);
        assert_eq!(app_name("é.localhost", s), Some("é"));
        assert_eq!(app_name("x.ĺocalhost", s), None);
    }
}
