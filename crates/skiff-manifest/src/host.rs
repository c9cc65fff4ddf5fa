//! Outbound host patterns: `scheme://host[:port]` with wildcards.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

/// One entry of `allowed_outbound_hosts`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct HostPattern {
    scheme: SchemePattern,
    host: HostMatch,
    port: PortPattern,
    /// Whether the port was written out, so that `Display` prints the pattern back as written.
    explicit_port: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum SchemePattern {
    Any,
    Http,
    Https,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum HostMatch {
    /// `*`: any host.
    Any,
    /// A DNS name, stored lowercase.
    Name(String),
    /// `*.suffix`: any name ending in `.suffix` (but not `suffix` itself), stored lowercase.
    Subdomains(String),
    Ip(IpAddr),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum PortPattern {
    Any,
    Port(u16),
}

/// Why a host pattern was rejected, with a suggested fix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostPatternError {
    pub message: String,
    pub help: String,
}

const EXAMPLES: &str =
    "\"https://api.example.com\", \"http://*.internal:8080\" or \"*://localhost:*\"";

impl HostPattern {
    pub fn parse(pattern: &str) -> Result<Self, HostPatternError> {
        let err = |what: &str, help: String| {
            Err(HostPatternError {
                message: format!("invalid host pattern `{pattern}`: {what}"),
                help,
            })
        };
        let Some((scheme, rest)) = pattern.split_once("://") else {
            let guess = pattern.trim_start_matches('/');
            return err(
                "missing scheme",
                format!("write `scheme://host[:port]`, e.g. \"https://{guess}\""),
            );
        };
        let scheme = match scheme.to_ascii_lowercase().as_str() {
            "http" => SchemePattern::Http,
            "https" => SchemePattern::Https,
            "*" => SchemePattern::Any,
            other => {
                return err(
                    &format!("unsupported scheme `{other}`"),
                    format!("use `http`, `https` or `*`, e.g. \"https://{rest}\""),
                );
            }
        };
        let scheme_str = scheme_text(scheme);
        if let Some(at) = rest.find('@') {
            return err(
                "user info (`user@`) is not allowed",
                format!("remove it: \"{scheme_str}://{}\"", &rest[at + 1..]),
            );
        }
        if let Some(cut) = rest.find(['/', '?', '#']) {
            return err(
                "a host pattern has no path, query or fragment",
                format!("remove them: \"{scheme_str}://{}\"", &rest[..cut]),
            );
        }
        if rest.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return err("contains whitespace", format!("e.g. {EXAMPLES}"));
        }
        let words = AuthorityWords {
            scheme: scheme_str,
            ipv6_example: "::1",
            empty_help: format!("name a host, or `*` for any: e.g. {EXAMPLES}"),
            ipv6_help: "write IPv6 addresses as \"http://[::1]:8080\"",
            too_many_colons: "too many `:` (IPv6 addresses must be in brackets)",
        };
        let (host, port) = match split_authority(rest, &words) {
            Err((what, help)) => return err(&what, help),
            Ok((AuthorityHost::Ipv6(ip), port)) => (HostMatch::Ip(IpAddr::V6(ip)), port),
            Ok((AuthorityHost::Other(host), port)) => match parse_host(host) {
                Ok(h) => (h, port),
                Err(what) => return err(&what.to_string(), format!("e.g. {EXAMPLES}")),
            },
        };

        let explicit_port = port.is_some();
        let port = match port {
            Some("*") => PortPattern::Any,
            Some(p) => match p.parse::<u16>() {
                Ok(n) if n > 0 => PortPattern::Port(n),
                _ => {
                    return err(
                        &format!("`{p}` is not a port (1-65535 or `*`)"),
                        format!("e.g. \"{scheme_str}://{}:8080\"", HostDisplay(&host)),
                    );
                }
            },
            None => match scheme {
                SchemePattern::Http => PortPattern::Port(80),
                SchemePattern::Https => PortPattern::Port(443),
                SchemePattern::Any => {
                    return err(
                        "with scheme `*` the port cannot be implied",
                        format!(
                            "add `:*` for any port or a number: \"*://{0}:*\" or \"*://{0}:8080\"",
                            HostDisplay(&host)
                        ),
                    );
                }
            },
        };
        Ok(HostPattern {
            scheme,
            host,
            port,
            explicit_port,
        })
    }

    /// Whether a request to `scheme://host:port` is allowed by this pattern. The scheme and host
    /// compare case-insensitively; `host` may be a name, an IP address, or `[ipv6]`.
    pub fn matches(&self, scheme: &str, host: &str, port: u16) -> bool {
        let scheme_ok = match self.scheme {
            SchemePattern::Any => true,
            SchemePattern::Http => scheme.eq_ignore_ascii_case("http"),
            SchemePattern::Https => scheme.eq_ignore_ascii_case("https"),
        };
        let port_ok = match self.port {
            PortPattern::Any => true,
            PortPattern::Port(p) => p == port,
        };
        scheme_ok && port_ok && self.matches_host(host)
    }

    fn matches_host(&self, host: &str) -> bool {
        // A fully qualified name's trailing dot names the same host.
        let host = match host.strip_suffix('.') {
            Some(h) if !h.is_empty() => h,
            _ => host,
        };
        match &self.host {
            HostMatch::Any => true,
            HostMatch::Name(name) => host.eq_ignore_ascii_case(name),
            HostMatch::Subdomains(suffix) => {
                let (h, s) = (host.as_bytes(), suffix.as_bytes());
                h.len() > s.len() + 1
                    && h[h.len() - s.len() - 1] == b'.'
                    && h[h.len() - s.len()..].eq_ignore_ascii_case(s)
            }
            HostMatch::Ip(ip) => {
                let bare = host
                    .strip_prefix('[')
                    .and_then(|h| h.strip_suffix(']'))
                    .unwrap_or(host);
                bare.parse::<IpAddr>().is_ok_and(|a| a == *ip)
            }
        }
    }

    pub fn scheme(&self) -> SchemePattern {
        self.scheme
    }

    pub fn host(&self) -> &HostMatch {
        &self.host
    }

    /// The port to match; the scheme's default if none was written.
    pub fn port(&self) -> PortPattern {
        self.port
    }
}

/// What a caller of [`split_authority`] says in its errors, where host patterns and upstream
/// URLs word them differently: each gives its own examples.
pub(crate) struct AuthorityWords<'a> {
    /// The scheme that examples of a port are written with.
    pub scheme: &'a str,
    /// The IPv6 address of the example for a host with more than one `:`.
    pub ipv6_example: &'a str,
    /// The help for an empty host.
    pub empty_help: String,
    /// The help for an unclosed `[`, or brackets around anything but an IPv6 address.
    pub ipv6_help: &'a str,
    /// The message for a host with more than one `:` outside brackets.
    pub too_many_colons: &'a str,
}

/// The host of an authority, as [`split_authority`] finds it.
pub(crate) enum AuthorityHost<'a> {
    /// A bracketed IPv6 address, `[addr]`.
    Ipv6(Ipv6Addr),
    /// Anything else: not empty and without `:`, for the caller to check.
    Other(&'a str),
}

/// Splits the authority of a host pattern or an upstream URL, `HOST[:PORT]` or
/// `[IPV6][:PORT]` (user info, path and the rest already refused by the caller), into its
/// host and the text of its port, if a `:` is written. Host patterns and upstream URLs share
/// these rules; an error is a message and a help, worded by `words`.
pub(crate) fn split_authority<'a>(
    authority: &'a str,
    words: &AuthorityWords,
) -> Result<(AuthorityHost<'a>, Option<&'a str>), (String, String)> {
    let empty = || Err(("the host is empty".to_string(), words.empty_help.clone()));
    if authority.is_empty() {
        return empty();
    }
    if let Some(inner) = authority.strip_prefix('[') {
        let Some((addr, after)) = inner.split_once(']') else {
            return Err(("unclosed `[`".into(), words.ipv6_help.into()));
        };
        let Ok(ip) = addr.parse::<Ipv6Addr>() else {
            return Err((
                format!("`{addr}` is not an IPv6 address"),
                words.ipv6_help.into(),
            ));
        };
        let port = match after {
            "" => None,
            _ => match after.strip_prefix(':') {
                Some(p) => Some(p),
                None => {
                    return Err((
                        format!("unexpected `{after}` after `]`"),
                        format!("e.g. \"{}://[{ip}]:8080\"", words.scheme),
                    ));
                }
            },
        };
        return Ok((AuthorityHost::Ipv6(ip), port));
    }
    if authority.matches(':').count() > 1 {
        return Err((
            words.too_many_colons.into(),
            format!("e.g. \"{}://[{}]:8080\"", words.scheme, words.ipv6_example),
        ));
    }
    let (host, port) = match authority.split_once(':') {
        Some((h, p)) => (h, Some(p)),
        None => (authority, None),
    };
    if host.is_empty() {
        return empty();
    }
    Ok((AuthorityHost::Other(host), port))
}

fn parse_host(host: &str) -> Result<HostMatch, HostError> {
    if host == "*" {
        return Ok(HostMatch::Any);
    }
    if let Some(suffix) = host.strip_prefix("*.") {
        validate_dns_name(suffix)?;
        return Ok(HostMatch::Subdomains(suffix.to_ascii_lowercase()));
    }
    if host.contains('*') {
        return Err(HostError::Wildcard { host: host.into() });
    }
    if host.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        return host
            .parse::<Ipv4Addr>()
            .map(|ip| HostMatch::Ip(IpAddr::V4(ip)))
            .map_err(|_| HostError::NotIpv4 { host: host.into() });
    }
    validate_dns_name(host)?;
    Ok(HostMatch::Name(host.to_ascii_lowercase()))
}

pub(crate) fn validate_dns_name(name: &str) -> Result<(), HostError> {
    let bad = |why: &str| {
        Err(HostError::BadName {
            name: name.into(),
            why: why.into(),
        })
    };
    if name.is_empty() {
        return bad("it is empty");
    }
    if name.len() > 253 {
        return bad("longer than 253 characters");
    }
    for label in name.split('.') {
        if label.is_empty() {
            return bad("empty label (`..` or a leading/trailing `.`)");
        }
        if label.len() > 63 {
            return bad("a label is longer than 63 characters");
        }
        if label.starts_with('-') || label.ends_with('-') {
            return bad("a label starts or ends with `-`");
        }
        // Underscores are not valid in host names but do occur in real ones (e.g. SRV-style).
        if let Some(c) = label
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || *c == '-' || *c == '_'))
        {
            return bad(&format!("`{c}` is not allowed"));
        }
    }
    Ok(())
}

/// Why the host part of a pattern is refused.
#[derive(Debug, thiserror::Error)]
pub(crate) enum HostError {
    #[error("`{host}`: a wildcard may only be the whole host (`*`) or a leading `*.`")]
    Wildcard { host: String },
    #[error("`{host}` is not an IPv4 address")]
    NotIpv4 { host: String },
    #[error("`{name}` is not a valid host name: {why}")]
    BadName { name: String, why: String },
}

fn scheme_text(s: SchemePattern) -> &'static str {
    match s {
        SchemePattern::Any => "*",
        SchemePattern::Http => "http",
        SchemePattern::Https => "https",
    }
}

struct HostDisplay<'a>(&'a HostMatch);

impl fmt::Display for HostDisplay<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            HostMatch::Any => f.write_str("*"),
            HostMatch::Name(n) => f.write_str(n),
            HostMatch::Subdomains(s) => write!(f, "*.{s}"),
            HostMatch::Ip(IpAddr::V4(ip)) => write!(f, "{ip}"),
            HostMatch::Ip(IpAddr::V6(ip)) => write!(f, "[{ip}]"),
        }
    }
}

impl fmt::Display for HostMatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        HostDisplay(self).fmt(f)
    }
}

impl fmt::Display for SchemePattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(scheme_text(*self))
    }
}

impl fmt::Display for PortPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PortPattern::Any => f.write_str("*"),
            PortPattern::Port(p) => write!(f, "{p}"),
        }
    }
}

/// Prints the pattern back (lowercased; the port only if it was written).
impl fmt::Display for HostPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}://{}", self.scheme, self.host)?;
        if self.explicit_port {
            write!(f, ":{}", self.port)?;
        }
        Ok(())
    }
}

impl FromStr for HostPattern {
    type Err = HostPatternError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}
