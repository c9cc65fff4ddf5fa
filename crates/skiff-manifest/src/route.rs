//! Route patterns (`/hello`, `/api/...`, `/...`) and the table that matches request paths.

use std::cmp::Ordering;
use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;

use crate::{App, RouteTarget};

/// A parsed, normalised route.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum RoutePattern {
    /// Matches exactly this path (a trailing slash on the request is tolerated).
    Exact(String),
    /// Matches this path and everything under it, segment-wise: `Prefix("/api")` matches
    /// `/api` and `/api/x` but not `/apiary`. `Prefix("")` is the catch-all `/...`.
    Prefix(String),
}

/// Why a route string was rejected, with a suggested fix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteError {
    pub message: String,
    pub help: String,
}

impl RoutePattern {
    /// Parses a route as written in the manifest.
    pub fn parse(route: &str) -> Result<Self, RouteError> {
        let err = |message: String, help: String| Err(RouteError { message, help });
        if route.is_empty() {
            return err(
                "route is empty".into(),
                "write a path such as \"/hello\", or \"/...\" to match everything".into(),
            );
        }
        if !route.starts_with('/') {
            return err(
                format!("route `{route}` must start with `/`"),
                format!("did you mean \"/{route}\"?"),
            );
        }
        if let Some(c) = route.chars().find(|c| *c == '?' || *c == '#') {
            let path = &route[..route.find(c).unwrap_or(route.len())];
            return err(
                format!("route `{route}` contains `{c}`; routes match the path only"),
                format!("remove the query or fragment, e.g. \"{path}\""),
            );
        }
        if route.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return err(
                format!("route `{route:?}` contains whitespace or control characters"),
                "percent-encode them or remove them".into(),
            );
        }
        let segments: Vec<&str> = route[1..].split('/').collect();
        let last = segments.len() - 1;
        for (i, seg) in segments.iter().enumerate() {
            if seg.contains("...") && (*seg != "..." || i != last) {
                let base = route[..route.find("...").unwrap_or(0)].trim_end_matches('/');
                return err(
                    format!("in route `{route}`, `...` may only appear as the whole last segment"),
                    format!("to match everything under a path write \"{base}/...\""),
                );
            }
            if *seg == "." || *seg == ".." {
                return err(
                    format!("route `{route}` contains a `{seg}` segment"),
                    "write the path without `.` or `..` segments".into(),
                );
            }
            if seg.is_empty() && i != last {
                return err(
                    format!("route `{route}` contains an empty segment (`//`)"),
                    format!("did you mean \"{}\"?", collapse_slashes(route)),
                );
            }
        }
        Ok(if segments[last] == "..." {
            RoutePattern::Prefix(route[..route.len() - 4].to_string())
        } else if route == "/" {
            RoutePattern::Exact("/".into())
        } else {
            RoutePattern::Exact(route.trim_end_matches('/').to_string())
        })
    }

    /// If `path` matches, returns the part of it after the route ("path info"): empty for an
    /// exact match, `/users/1` for prefix `/api` and path `/api/users/1`.
    pub fn match_path<'p>(&self, path: &'p str) -> Option<&'p str> {
        match self {
            RoutePattern::Exact(p) => {
                let trimmed = match path.strip_suffix('/') {
                    Some(t) if !t.is_empty() => t,
                    _ => path,
                };
                (trimmed == p || path == p).then_some("")
            }
            RoutePattern::Prefix(p) => {
                let rest = path.strip_prefix(p.as_str())?;
                (p.is_empty() || rest.is_empty() || rest.starts_with('/')).then_some(rest)
            }
        }
    }

    /// A key by which routes are ranked when several match the same path: any exact route beats
    /// any prefix, and among prefixes the longer wins. Higher is more specific.
    pub fn specificity(&self) -> (u8, usize) {
        match self {
            RoutePattern::Exact(p) => (1, p.len()),
            RoutePattern::Prefix(p) => (0, p.len()),
        }
    }

    /// The normalised path (without the `/...` of a prefix).
    pub fn path(&self) -> &str {
        match self {
            RoutePattern::Exact(p) | RoutePattern::Prefix(p) => p,
        }
    }
}

/// Orders by [`RoutePattern::specificity`] (more specific is greater), then by path so that
/// the order is total.
impl Ord for RoutePattern {
    fn cmp(&self, other: &Self) -> Ordering {
        self.specificity()
            .cmp(&other.specificity())
            .then_with(|| self.path().cmp(other.path()))
    }
}

impl PartialOrd for RoutePattern {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl FromStr for RoutePattern {
    type Err = RouteError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

/// Prints the normalised form, which parses back to the same pattern.
impl fmt::Display for RoutePattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RoutePattern::Exact(p) => f.write_str(p),
            RoutePattern::Prefix(p) => write!(f, "{p}/..."),
        }
    }
}

fn collapse_slashes(route: &str) -> String {
    let mut out = String::with_capacity(route.len());
    for c in route.chars() {
        if !(c == '/' && out.ends_with('/')) {
            out.push(c);
        }
    }
    out
}

/// Picks the route for a request path. Built once per app; [`RouteTable::lookup`] runs on
/// every request, so it does not allocate: an exact lookup, then one hash lookup per ancestor
/// of the path from the longest down, which makes "longest prefix wins" and segment
/// boundaries fall out of the walk.
#[derive(Debug, Clone)]
pub struct RouteTable {
    exact: HashMap<String, usize>,
    prefix: HashMap<String, usize>,
    /// Per route index: (target, route as written).
    routes: Vec<(RouteTarget, String)>,
}

/// The result of [`RouteTable::lookup`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RouteMatch<'a> {
    /// Index into [`App::routes`].
    pub route: usize,
    /// What answers the route (before it, the route's middleware, in [`App::routes`]).
    pub target: RouteTarget,
    /// The route as written in the manifest, e.g. `/api/...`.
    pub matched_route: &'a str,
    /// The rest of the path after a prefix route (`/users/1`), empty for an exact match.
    pub path_info: &'a str,
}

impl RouteTable {
    pub fn new(app: &App) -> Self {
        let mut exact = HashMap::new();
        let mut prefix = HashMap::new();
        for (i, route) in app.routes.iter().enumerate() {
            // Validation rejects duplicates; if an `App` was built by hand, the first one wins.
            let map = match &route.pattern {
                RoutePattern::Exact(_) => &mut exact,
                RoutePattern::Prefix(_) => &mut prefix,
            };
            map.entry(route.pattern.path().to_string()).or_insert(i);
        }
        let routes = app
            .routes
            .iter()
            .map(|r| (r.target, r.as_written.clone()))
            .collect();
        RouteTable {
            exact,
            prefix,
            routes,
        }
    }

    /// Finds the most specific route for `path` (anything from `?` on is ignored).
    pub fn lookup<'a>(&'a self, path: &'a str) -> Option<RouteMatch<'a>> {
        let path = path.split_once('?').map_or(path, |(p, _)| p);
        let found = |route: usize, path_info: &'a str| {
            let (target, as_written) = &self.routes[route];
            RouteMatch {
                route,
                target: *target,
                matched_route: as_written,
                path_info,
            }
        };
        if !self.exact.is_empty() {
            let trimmed = match path.strip_suffix('/') {
                Some(t) if !t.is_empty() => t,
                _ => path,
            };
            if let Some(&i) = self.exact.get(path).or_else(|| self.exact.get(trimmed)) {
                return Some(found(i, ""));
            }
        }
        if self.prefix.is_empty() {
            return None;
        }
        let mut candidate = path;
        loop {
            if let Some(&i) = self.prefix.get(candidate) {
                return Some(found(i, &path[candidate.len()..]));
            }
            if candidate.is_empty() {
                return None;
            }
            candidate = &candidate[..candidate.rfind('/').unwrap_or(0)];
        }
    }

    /// Number of routes in the table.
    pub fn len(&self) -> usize {
        self.routes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.routes.is_empty()
    }
}
