//! Upstreams: `[upstream.<name>]`, an HTTP service outside the app (a container, a pod, any
//! server on the network) that routes send their requests to, after the route's middleware.
//! Its addresses are `http[s]://HOST[:PORT][/BASE]` URLs, read by a small parser of our own: a
//! general URL parser accepts much that an upstream address must not have (user info, a
//! query, a fragment, other schemes), and each of those deserves its own error and fix. Its
//! timeouts are durations as everywhere in the manifest; its health check is optional.

use std::net::{IpAddr, Ipv4Addr};
use std::ops::Range;
use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use toml::Spanned;

use crate::error::Source;
use crate::host::{AuthorityHost, AuthorityWords, split_authority, validate_dns_name};
use crate::owners::{Owner, Routes, check_name};
use crate::raw::{RawHealthCheck, RawUpstream, RawUpstreamTls};
use crate::refs::{self, Chain};
use crate::units::{TimeoutError, parse_timeout};
use crate::{
    Component, HealthCheck, ManifestError, Paths, RouteTarget, Upstream, UpstreamTls, UpstreamUrl,
};

/// The longest wait for a connection to an upstream, unless `connect_timeout` says.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// The longest wait for an upstream's response head, unless `timeout` says.
pub const DEFAULT_UPSTREAM_TIMEOUT: Duration = Duration::from_secs(60);
/// Further tries of a request that the upstream did not process, unless `retries` says.
pub const DEFAULT_RETRIES: u32 = 1;
/// The most `retries`.
pub const MAX_RETRIES: u32 = 10;
/// The most addresses (`urls`) of one upstream.
pub const MAX_UPSTREAM_URLS: usize = 64;
/// How often a health check runs, unless `interval` says.
pub const DEFAULT_HEALTH_INTERVAL: Duration = Duration::from_secs(5);
/// The shortest health check `interval`.
pub const MIN_HEALTH_INTERVAL: Duration = Duration::from_millis(100);
/// How long a health check waits for its answer, unless `timeout` says (and never longer
/// than the interval).
pub const DEFAULT_HEALTH_TIMEOUT: Duration = Duration::from_secs(2);
/// The longest health check `path`, in bytes.
pub const MAX_HEALTH_PATH: usize = 1024;
/// The longest wait for each next piece of a response body, unless `body_idle_timeout` says.
pub const DEFAULT_BODY_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Connections switched to WebSocket through one upstream at once, unless `websocket_limit`
/// says.
pub const DEFAULT_WEBSOCKET_LIMIT: u32 = 1024;
/// The most `websocket_limit`: each switched connection holds two sockets on the host.
pub const MAX_WEBSOCKET_LIMIT: u32 = 65_536;
/// How long a switched connection may stay silent, unless `websocket_idle_timeout` says.
pub const DEFAULT_WEBSOCKET_IDLE_TIMEOUT: Duration = Duration::from_secs(300);

pub(crate) fn default_body_idle_timeout() -> Duration {
    DEFAULT_BODY_IDLE_TIMEOUT
}

pub(crate) fn default_websocket_limit() -> u32 {
    DEFAULT_WEBSOCKET_LIMIT
}

pub(crate) fn default_websocket_idle_timeout() -> Duration {
    DEFAULT_WEBSOCKET_IDLE_TIMEOUT
}

/// Why an upstream URL was rejected, with a suggested fix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamUrlError {
    pub message: String,
    pub help: String,
}

const URL_EXAMPLES: &str = "\"http://orders:8080\" or \"http://10.0.0.7:8080/api\"";

impl UpstreamUrl {
    /// Parses `http[s]://HOST[:PORT][/BASE]`: HOST a name, an IPv4 address or `[ipv6]`; PORT
    /// 1-65535, 80 (443 for https) if not written; BASE a path, kept without its trailing
    /// slash. No user info, query, fragment or whitespace.
    pub fn parse(url: &str) -> Result<UpstreamUrl, UpstreamUrlError> {
        let err = |what: &str, help: String| {
            Err(UpstreamUrlError {
                message: format!("`{url}` is not an upstream URL: {what}"),
                help,
            })
        };
        if url.is_empty() {
            return Err(UpstreamUrlError {
                message: "the URL is empty".into(),
                help: format!("write http[s]://HOST[:PORT][/BASE], e.g. {URL_EXAMPLES}"),
            });
        }
        if url.chars().any(|c| c.is_whitespace() || c.is_control()) {
            let kept: String = url
                .chars()
                .filter(|c| !(c.is_whitespace() || c.is_control()))
                .collect();
            return err("it contains whitespace", format!("remove it: \"{kept}\""));
        }
        let Some((scheme, rest)) = url.split_once("://") else {
            let guess = url.trim_start_matches('/');
            return err(
                "it has no scheme",
                format!("write it as \"http://{guess}\""),
            );
        };
        let tls = if scheme.eq_ignore_ascii_case("https") {
            true
        } else if scheme.eq_ignore_ascii_case("http") {
            false
        } else {
            return err(
                &format!("unsupported scheme `{scheme}`"),
                format!(
                    "upstreams are reached over http or https: \"http://{rest}\" or \"https://{rest}\""
                ),
            );
        };
        // The scheme as messages write it back: lowercase, as the URL is shown everywhere.
        let scheme = if tls { "https" } else { "http" };

        let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
        let (authority, tail) = rest.split_at(authority_end);
        if let Some(at) = authority.rfind('@') {
            return err(
                "user info (`user@`) is not allowed",
                format!(
                    "remove it: \"{scheme}://{}{tail}\"; to authenticate to the upstream, let a \
                     middleware add the header",
                    &authority[at + 1..]
                ),
            );
        }
        if let Some(cut) = tail.find(['?', '#']) {
            let what = if tail[cut..].starts_with('?') {
                "a query (`?`) is not allowed"
            } else {
                "a fragment (`#`) is not allowed"
            };
            return err(
                what,
                format!(
                    "remove it: \"{scheme}://{authority}{}\"; each request's own query is passed on",
                    &tail[..cut]
                ),
            );
        }
        let words = AuthorityWords {
            scheme,
            ipv6_example: "fd00::7",
            empty_help: format!("name the host, e.g. {URL_EXAMPLES}"),
            ipv6_help: "write IPv6 addresses in brackets, e.g. \"http://[fd00::7]:8080\"",
            too_many_colons: "too many `:` (IPv6 addresses are written in brackets)",
        };
        let (host, port) = match split_authority(authority, &words) {
            Err((what, help)) => return err(&what, help),
            Ok((AuthorityHost::Ipv6(ip), port)) => (ip.to_string(), port),
            Ok((AuthorityHost::Other(host), port)) => {
                if host.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
                    if host.parse::<Ipv4Addr>().is_err() {
                        return err(
                            &format!("`{host}` is not an IPv4 address"),
                            format!("write four numbers from 0 to 255, e.g. {URL_EXAMPLES}"),
                        );
                    }
                } else if let Err(why) = validate_dns_name(host) {
                    return err(&why.to_string(), format!("e.g. {URL_EXAMPLES}"));
                }
                (host.to_ascii_lowercase(), port)
            }
        };
        let shown_host = if host.contains(':') {
            format!("[{host}]")
        } else {
            host.clone()
        };

        let port = match port {
            None if tls => 443,
            None => 80,
            Some("") => {
                return err(
                    "the port after `:` is empty",
                    format!(
                        "write a port, e.g. \"{scheme}://{shown_host}:8080{tail}\", or leave out `:` for {}",
                        if tls { 443 } else { 80 }
                    ),
                );
            }
            Some(p) => match p.parse::<u16>() {
                Ok(n) if n > 0 && p.bytes().all(|b| b.is_ascii_digit()) => n,
                _ => {
                    return err(
                        &format!("`{p}` is not a port (1-65535)"),
                        format!("e.g. \"{scheme}://{shown_host}:8080{tail}\""),
                    );
                }
            },
        };

        let base_path = match base_path(tail) {
            Ok(path) => path,
            Err(what) => {
                return err(
                    &what,
                    format!(
                        "write the base path with letters, digits and `-._~`, percent-encoding others, e.g. \"{scheme}://{shown_host}:{port}/api\""
                    ),
                );
            }
        };
        Ok(UpstreamUrl {
            tls,
            host,
            port,
            base_path,
        })
    }
}

impl FromStr for UpstreamUrl {
    type Err = UpstreamUrlError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

/// The path of an upstream URL (empty, or starting with `/`) without its trailing slashes:
/// segments of path characters (RFC 3986 `pchar`, escapes well formed), none empty, `.` or
/// `..`.
fn base_path(path: &str) -> Result<String, String> {
    let trimmed = path.trim_end_matches('/');
    if trimmed.is_empty() {
        return Ok(String::new());
    }
    for segment in trimmed[1..].split('/') {
        match segment {
            "" => return Err("the base path contains an empty segment (`//`)".into()),
            "." | ".." => {
                return Err(format!("the base path contains a `{segment}` segment"));
            }
            _ => {}
        }
        let bytes = segment.as_bytes();
        for (i, &b) in bytes.iter().enumerate() {
            let plain = b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=:@".contains(&b);
            if b == b'%' {
                let escape = bytes.get(i + 1..i + 3);
                if !escape.is_some_and(|e| e.iter().all(u8::is_ascii_hexdigit)) {
                    return Err("`%` in the base path is not followed by two hex digits".into());
                }
            } else if !plain {
                let c = segment[i..].chars().next().unwrap_or('?');
                return Err(format!("`{c}` is not allowed in the base path"));
            }
        }
    }
    Ok(trimmed.to_string())
}

/// Checks the app's `[upstream.<name>]` tables, in file order, adding their routes to
/// `routes`; `components` are all of the app's, for `middleware`.
pub(crate) fn upstreams(
    src: &Source,
    base_dir: &Path,
    paths: Paths,
    raw: Vec<(Spanned<String>, Spanned<RawUpstream>)>,
    components: &[Component],
    routes: &mut Routes,
) -> Result<Vec<Upstream>, ManifestError> {
    let mut out = Vec::with_capacity(raw.len());
    // TOML refuses a table written twice, so the names are unique already.
    for (index, (name, upstream)) in raw.into_iter().enumerate() {
        let name_span = name.span();
        let name = name.into_inner();
        check_name(
            src,
            &Spanned::new(name_span, name.clone()),
            &format!("upstream.{name}"),
            "upstream name",
        )?;
        let cx = UpstreamCx {
            src,
            base_dir,
            paths,
            name: &name,
            span: upstream.span(),
        };
        out.push(cx.build(upstream.into_inner(), index, components, routes)?);
    }
    Ok(out)
}

struct UpstreamCx<'a> {
    src: &'a Source<'a>,
    /// The manifest's folder, which `tls.ca` is relative to.
    base_dir: &'a Path,
    /// Where `tls.ca` may lead.
    paths: Paths,
    name: &'a str,
    /// The whole table, for what is missing from it.
    span: Range<usize>,
}

impl UpstreamCx<'_> {
    fn field(&self, rest: &str) -> String {
        Owner::Upstream(self.name).field(rest)
    }

    fn build(
        &self,
        raw: RawUpstream,
        index: usize,
        components: &[Component],
        routes: &mut Routes,
    ) -> Result<Upstream, ManifestError> {
        let name = self.name;
        let urls = self.urls(raw.url, raw.urls)?;
        let tls = match raw.tls {
            None => UpstreamTls::default(),
            Some(tls) => self.tls(tls, &urls)?,
        };

        let owner = Owner::Upstream(name);
        let own_routes = routes.add(
            self.src,
            owner,
            raw.route.as_ref(),
            RouteTarget::Upstream(index),
        )?;
        if own_routes.is_empty() {
            let span = raw.route.as_ref().map_or(self.span.clone(), Spanned::span);
            return Err(self.src.field_error(
                span,
                &self.field("route"),
                format!("upstream `{name}` has no route, so no request would reach it"),
                format!("add the paths it serves, e.g. route = \"/{name}/...\""),
            ));
        }
        if let Some(list) = raw.middleware {
            let chain = Chain {
                field: self.field("middleware"),
                list,
                owner: None,
                routes: own_routes,
            };
            let middleware = refs::middleware(self.src, components, &chain)?;
            routes.set_middleware(chain.routes, &middleware);
        }

        let connect_timeout = match raw.connect_timeout {
            None => DEFAULT_CONNECT_TIMEOUT,
            Some(t) => self.duration(&t, "connect_timeout", "connect_timeout = \"2s\"")?,
        };
        let timeout = match raw.timeout {
            None => DEFAULT_UPSTREAM_TIMEOUT,
            Some(t) => self.duration(&t, "timeout", "timeout = \"30s\"")?,
        };
        let body_idle_timeout = match raw.body_idle_timeout {
            None => DEFAULT_BODY_IDLE_TIMEOUT,
            Some(t) => self.duration(&t, "body_idle_timeout", "body_idle_timeout = \"60s\"")?,
        };
        let retries = match raw.retries {
            None => DEFAULT_RETRIES,
            Some(r) if *r.get_ref() <= MAX_RETRIES => *r.get_ref(),
            Some(r) => {
                return Err(self.src.field_error(
                    r.span(),
                    &self.field("retries"),
                    format!("{} retries are more than {MAX_RETRIES}", r.get_ref()),
                    format!(
                        "write a number from 0 to {MAX_RETRIES}; a request is retried only when \
                         the upstream did not process it, on another address when there is one"
                    ),
                ));
            }
        };
        let health_check = match raw.health_check {
            None => None,
            Some(h) => Some(self.health_check(h)?),
        };
        let websocket_limit = match raw.websocket_limit {
            None => DEFAULT_WEBSOCKET_LIMIT,
            Some(n) if (1..=MAX_WEBSOCKET_LIMIT).contains(n.get_ref()) => *n.get_ref(),
            Some(n) => {
                return Err(self.src.field_error(
                    n.span(),
                    &self.field("websocket_limit"),
                    format!("{} is not from 1 to {MAX_WEBSOCKET_LIMIT}", n.get_ref()),
                    format!(
                        "write how many WebSocket connections may be open through `{name}` at \
                         once, e.g. websocket_limit = {DEFAULT_WEBSOCKET_LIMIT}"
                    ),
                ));
            }
        };
        let websocket_idle_timeout = match raw.websocket_idle_timeout {
            None => DEFAULT_WEBSOCKET_IDLE_TIMEOUT,
            Some(t) => self.duration(
                &t,
                "websocket_idle_timeout",
                "websocket_idle_timeout = \"5m\"",
            )?,
        };
        Ok(Upstream {
            name: name.to_string(),
            urls,
            connect_timeout,
            timeout,
            retries,
            health_check,
            body_idle_timeout,
            websocket_limit,
            websocket_idle_timeout,
            tls,
        })
    }

    /// `tls = { ca = "...", server_name = "..." }`, for an upstream with an `https://` address.
    /// `ca` is only looked at here (it must be a file): it is read when the app is loaded, by
    /// which time a server has checked that it lies in the app's bundle.
    fn tls(
        &self,
        raw: Spanned<RawUpstreamTls>,
        urls: &[UpstreamUrl],
    ) -> Result<UpstreamTls, ManifestError> {
        let name = self.name;
        let span = raw.span();
        let raw = raw.into_inner();
        if !urls.iter().any(|url| url.tls) {
            return Err(self.src.field_error(
                span,
                &self.field("tls"),
                format!("`tls` is set, but no address of `{name}` is `https://`"),
                "write the addresses that speak TLS as https://..., or remove `tls`",
            ));
        }
        let ca = match raw.ca {
            None => None,
            Some(ca) => {
                let field = self.field("tls.ca");
                let rel = ca.get_ref();
                let example = "e.g. ca = \"certs/internal-ca.pem\"";
                if rel.trim().is_empty() {
                    return Err(self.src.field_error(
                        ca.span(),
                        &field,
                        "is empty",
                        format!(
                            "write the path of a PEM file of the certificates to trust, \
                             relative to the manifest's folder, {example}; or remove `ca` to \
                             trust the usual public roots"
                        ),
                    ));
                }
                self.paths.check(self.src, ca.span(), &field, rel)?;
                let path = self.base_dir.join(rel);
                let why = match std::fs::metadata(&path) {
                    Ok(meta) if meta.is_file() => None,
                    Ok(_) => Some(format!("`{}` is not a file", path.display())),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                        Some(format!("`{}` does not exist", path.display()))
                    }
                    Err(e) => Some(format!("`{}` cannot be read: {e}", path.display())),
                };
                if let Some(why) = why {
                    return Err(self.src.field_error(
                        ca.span(),
                        &field,
                        why,
                        format!(
                            "write the path of a PEM file of the certificates to trust \
                             (relative to the manifest's folder), {example}"
                        ),
                    ));
                }
                Some(path)
            }
        };
        let server_name = match raw.server_name {
            None => None,
            Some(text) => {
                let value = text.get_ref();
                let valid = value.parse::<IpAddr>().is_ok()
                    || (!value.bytes().all(|b| b.is_ascii_digit() || b == b'.')
                        && validate_dns_name(value).is_ok());
                if !valid {
                    return Err(self.src.field_error(
                        text.span(),
                        &self.field("tls.server_name"),
                        format!("`{value}` is not a host name or an IP address"),
                        "write the name the upstream's certificate is for, e.g. \
                         server_name = \"orders.internal\"",
                    ));
                }
                Some(value.to_ascii_lowercase())
            }
        };
        Ok(UpstreamTls { ca, server_name })
    }

    /// `url = "..."` or `urls = [...]`, exactly one of them.
    fn urls(
        &self,
        url: Option<Spanned<String>>,
        urls: Option<Spanned<Vec<Spanned<String>>>>,
    ) -> Result<Vec<UpstreamUrl>, ManifestError> {
        let name = self.name;
        let list = match (url, urls) {
            (Some(_), Some(list)) => {
                return Err(self.src.field_error(
                    list.span(),
                    &self.field("urls"),
                    "both `url` and `urls` are set",
                    "keep one: `url` for one address, `urls` for several",
                ));
            }
            (None, None) => {
                return Err(self.src.field_error(
                    self.span.clone(),
                    &self.field("url"),
                    format!("upstream `{name}` has no `url`"),
                    format!(
                        "add where it listens, e.g. url = \"http://{name}:8080\", or \
                         urls = [\"http://{name}-1:8080\", \"http://{name}-2:8080\"] for several"
                    ),
                ));
            }
            (Some(url), None) => return Ok(vec![self.url(&url, &self.field("url"))?]),
            (None, Some(list)) => list,
        };
        let field = self.field("urls");
        if list.get_ref().is_empty() {
            return Err(self.src.field_error(
                list.span(),
                &field,
                "the list is empty",
                format!("list at least one address, e.g. urls = [\"http://{name}:8080\"]"),
            ));
        }
        if list.get_ref().len() > MAX_UPSTREAM_URLS {
            return Err(self.src.field_error(
                list.span(),
                &field,
                format!(
                    "{} addresses are more than {MAX_UPSTREAM_URLS}",
                    list.get_ref().len()
                ),
                format!(
                    "list at most {MAX_UPSTREAM_URLS}, or put a load balancer in front and name \
                     its address"
                ),
            ));
        }
        let mut out: Vec<UpstreamUrl> = Vec::with_capacity(list.get_ref().len());
        for (i, text) in list.get_ref().iter().enumerate() {
            let url = self.url(text, &format!("{field}[{i}]"))?;
            if let Some(first) = out.iter().position(|u| *u == url) {
                return Err(self.src.field_error(
                    text.span(),
                    &format!("{field}[{i}]"),
                    format!(
                        "`{}` is the same address as `urls[{first}]` ({url})",
                        text.get_ref()
                    ),
                    "list each address once",
                ));
            }
            out.push(url);
        }
        Ok(out)
    }

    fn url(&self, text: &Spanned<String>, field: &str) -> Result<UpstreamUrl, ManifestError> {
        UpstreamUrl::parse(text.get_ref())
            .map_err(|e| self.src.field_error(text.span(), field, e.message, e.help))
    }

    /// A duration such as `"2s"` or `"250ms"`: more than zero, at most a day.
    fn duration(
        &self,
        text: &Spanned<String>,
        rest: &str,
        example: &str,
    ) -> Result<Duration, ManifestError> {
        let t = text.get_ref();
        let why = match parse_timeout(t) {
            Ok(d) => return Ok(d),
            Err(TimeoutError::Zero) => format!("`{t}` is zero"),
            Err(TimeoutError::TooLong) => format!("`{t}` is longer than a day"),
            Err(TimeoutError::NotADuration(e)) => format!("`{t}` is not a duration ({e})"),
        };
        Err(self.src.field_error(
            text.span(),
            &self.field(rest),
            why,
            format!("write a duration of more than zero with a unit, e.g. {example}"),
        ))
    }

    fn health_check(&self, raw: Spanned<RawHealthCheck>) -> Result<HealthCheck, ManifestError> {
        let span = raw.span();
        let raw = raw.into_inner();
        let Some(path) = raw.path else {
            return Err(self.src.field_error(
                span,
                &self.field("health_check.path"),
                "missing `path` (what to GET on each address)",
                "e.g. health_check = { path = \"/healthz\" }",
            ));
        };
        let p = path.get_ref();
        let what = if !p.starts_with('/') {
            Some(format!("`{p}` does not start with `/`"))
        } else if p.len() > MAX_HEALTH_PATH {
            Some(format!("the path is longer than {MAX_HEALTH_PATH} bytes"))
        } else if !p.chars().all(|c| c.is_ascii_graphic()) {
            Some(format!(
                "`{p}` contains whitespace or non-ASCII characters; percent-encode them"
            ))
        } else if p.contains('#') {
            Some(format!(
                "`{p}` contains a fragment (`#`), which is never sent"
            ))
        } else {
            None
        };
        if let Some(what) = what {
            return Err(self.src.field_error(
                path.span(),
                &self.field("health_check.path"),
                what,
                "write the path (and query) to GET, starting with `/`, e.g. path = \"/healthz\"",
            ));
        }

        let interval = match &raw.interval {
            None => DEFAULT_HEALTH_INTERVAL,
            Some(t) => self.duration(t, "health_check.interval", "interval = \"5s\"")?,
        };
        if let Some(t) = &raw.interval
            && interval < MIN_HEALTH_INTERVAL
        {
            return Err(self.src.field_error(
                t.span(),
                &self.field("health_check.interval"),
                format!("`{}` is shorter than 100ms", t.get_ref()),
                "check at most ten times a second, e.g. interval = \"5s\"",
            ));
        }
        let timeout = match &raw.timeout {
            None => DEFAULT_HEALTH_TIMEOUT.min(interval),
            Some(t) => {
                let timeout = self.duration(t, "health_check.timeout", "timeout = \"2s\"")?;
                if timeout > interval {
                    return Err(self.src.field_error(
                        t.span(),
                        &self.field("health_check.timeout"),
                        format!(
                            "`{}` is longer than the interval ({})",
                            t.get_ref(),
                            humantime::format_duration(interval)
                        ),
                        "a check must end before the next one starts: make the timeout at most \
                         the interval",
                    ));
                }
                timeout
            }
        };
        Ok(HealthCheck {
            path: path.into_inner(),
            interval,
            timeout,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(url: &str) -> (String, u16, String) {
        let u = UpstreamUrl::parse(url).unwrap_or_else(|e| panic!("{url}: {}", e.message));
        (u.host, u.port, u.base_path)
    }

    fn bad(url: &str) -> UpstreamUrlError {
        UpstreamUrl::parse(url).expect_err(url)
    }

    #[test]
    fn upstream_urls_parse() {
        let t = |h: &str, p: u16, b: &str| (h.to_string(), p, b.to_string());
        assert_eq!(ok("http://orders:8080"), t("orders", 8080, ""));
        assert_eq!(ok("http://orders"), t("orders", 80, ""));
        assert_eq!(
            ok("HTTP://Orders.Default.SVC:80/"),
            t("orders.default.svc", 80, "")
        );
        assert_eq!(ok("http://10.0.0.7:8080/api/"), t("10.0.0.7", 8080, "/api"));
        assert_eq!(ok("http://10.0.0.7/api/v1"), t("10.0.0.7", 80, "/api/v1"));
        assert_eq!(ok("http://[::1]:9000"), t("::1", 9000, ""));
        assert_eq!(ok("http://[FD00::7]"), t("fd00::7", 80, ""));
        assert_eq!(ok("http://a_b:1/x%2Fy/~z"), t("a_b", 1, "/x%2Fy/~z"));
        assert_eq!(ok("http://a:65535"), t("a", 65535, ""));
        assert_eq!(
            UpstreamUrl::parse("http://[::1]:9000/a").map(|u| u.to_string()),
            Ok("http://[::1]:9000/a".to_string())
        );
        assert_eq!(
            "http://x/".parse::<UpstreamUrl>().map(|u| u.to_string()),
            Ok("http://x:80".to_string())
        );
        assert_eq!(ok("https://orders"), t("orders", 443, ""));
        assert_eq!(ok("HTTPS://orders:8443/api"), t("orders", 8443, "/api"));
        assert_eq!(
            "https://[fd00::7]/v1"
                .parse::<UpstreamUrl>()
                .map(|u| (u.tls, u.to_string())),
            Ok((true, "https://[fd00::7]:443/v1".to_string()))
        );
        assert!(!UpstreamUrl::parse("http://orders").is_ok_and(|u| u.tls));
    }

    #[test]
    fn upstream_url_rejections_say_why_and_how() {
        let e = bad("https://user@orders:8443");
        assert!(e.help.contains("\"https://orders:8443\""), "{e:?}");
        let e = bad("https://orders:");
        assert!(e.help.contains("leave out `:` for 443"), "{e:?}");
        let e = bad("orders:8080");
        assert!(e.message.contains("no scheme"), "{e:?}");
        assert!(e.help.contains("\"http://orders:8080\""), "{e:?}");
        assert!(
            bad("ftp://orders")
                .message
                .contains("unsupported scheme `ftp`")
        );
        let e = bad("http://user:pw@orders:8080/x");
        assert!(e.message.contains("user info"), "{e:?}");
        assert!(e.help.contains("\"http://orders:8080/x\""), "{e:?}");
        let e = bad("http://orders/api?x=1");
        assert!(e.message.contains("query"), "{e:?}");
        assert!(e.help.contains("\"http://orders/api\""), "{e:?}");
        assert!(bad("http://orders#top").message.contains("fragment"));
        assert!(bad("http://orders /x").message.contains("whitespace"));
        assert!(bad(" http://orders").message.contains("whitespace"));
        assert!(bad("").message.contains("empty"));
        assert!(bad("http://").message.contains("host is empty"));
        assert!(bad("http://:8080").message.contains("host is empty"));
        assert!(bad("http:///api").message.contains("host is empty"));
        for port in ["0", "65536", "-1", "+80", "http", "8080x"] {
            let e = bad(&format!("http://orders:{port}"));
            assert!(e.message.contains("not a port"), "{port}: {e:?}");
        }
        assert!(
            bad("http://orders:")
                .message
                .contains("port after `:` is empty")
        );
        assert!(bad("http://::1:8080").message.contains("brackets"));
        assert!(bad("http://[::1").message.contains("unclosed"));
        assert!(
            bad("http://[nope]:80")
                .message
                .contains("not an IPv6 address")
        );
        assert!(bad("http://[::1]x").message.contains("unexpected `x`"));
        assert!(
            bad("http://256.1.1.1")
                .message
                .contains("not an IPv4 address")
        );
        assert!(
            bad("http://or*ders")
                .message
                .contains("not a valid host name")
        );
        assert!(
            bad("http://-orders")
                .message
                .contains("not a valid host name")
        );
        assert!(
            bad("http://orders..svc")
                .message
                .contains("not a valid host name")
        );
        assert!(bad("http://o/a//b").message.contains("empty segment"));
        assert!(bad("http://o/a/../b").message.contains("`..` segment"));
        assert!(bad("http://o/a%zz").message.contains("two hex digits"));
        assert!(bad("http://o/a%2").message.contains("two hex digits"));
        assert!(bad("http://o/é").message.contains("`é` is not allowed"));
        assert!(bad("http://o/a{b}").message.contains("`{` is not allowed"));
        // Every message quotes the URL as written.
        assert!(bad("http://o/a{b}").message.contains("`http://o/a{b}`"));
    }
}
