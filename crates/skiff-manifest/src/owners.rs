//! What owns routes, and the routes collected from them: components and upstreams each add
//! theirs to one list, where no two may mean the same path. Also the rule for the names of
//! apps, components and upstreams.

use std::collections::HashMap;
use std::ops::Range;

use toml::Spanned;

use crate::error::Source;
use crate::raw::RawRoutes;
use crate::{Location, ManifestError, Route, RoutePattern, RouteTarget};

/// What a route belongs to, to name it in errors: `component.<id>` or `upstream.<name>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Owner<'a> {
    Component(&'a str),
    Upstream(&'a str),
}

impl<'a> Owner<'a> {
    /// `component` or `upstream`.
    fn kind(self) -> &'static str {
        match self {
            Owner::Component(_) => "component",
            Owner::Upstream(_) => "upstream",
        }
    }

    fn name(self) -> &'a str {
        match self {
            Owner::Component(name) | Owner::Upstream(name) => name,
        }
    }

    /// The dotted path of one of its fields, e.g. `upstream.orders.route`.
    pub(crate) fn field(self, rest: &str) -> String {
        format!("{}.{}.{rest}", self.kind(), self.name())
    }
}

/// `component `api`` or `upstream `orders``.
impl std::fmt::Display for Owner<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} `{}`", self.kind(), self.name())
    }
}

/// The app's routes as they are collected, in file order. A route may belong to one component
/// or upstream only: each normalised pattern is kept with who wrote it, as written, and its
/// line, to name both routes when two clash.
#[derive(Default)]
pub(crate) struct Routes {
    pub(crate) list: Vec<Route>,
    seen: HashMap<RoutePattern, (String, String, usize)>,
}

impl Routes {
    /// Parses the `route` field of `owner` and adds its routes, answered by `target`, with no
    /// middleware yet; returns their indexes in the list.
    pub(crate) fn add(
        &mut self,
        src: &Source,
        owner: Owner,
        route: Option<&Spanned<RawRoutes>>,
        target: RouteTarget,
    ) -> Result<Range<usize>, ManifestError> {
        let first = self.list.len();
        for (as_written, span, field) in route_list(&owner.field("route"), route) {
            let pattern = RoutePattern::parse(&as_written).map_err(|e| {
                src.error(
                    Some(span.clone()),
                    &field,
                    format!("`{field}`: {}", e.message),
                    e.help,
                )
            })?;
            let line = Location::from_offset(src.text, span.start).line;
            let this = owner.to_string();
            if let Some((other, other_route, other_line)) = self.seen.get(&pattern) {
                let whose = if *other == this {
                    format!("the same {}", owner.kind())
                } else {
                    other.clone()
                };
                return Err(src.error(
                    Some(span),
                    &field,
                    format!(
                        "`{field}`: route `{as_written}` of {this} (line {line}) collides with \
                         route `{other_route}` of {whose} (line {other_line})"
                    ),
                    format!(
                        "each route may belong to one component or upstream only; change or \
                         remove one of them (both mean `{pattern}`)"
                    ),
                ));
            }
            self.seen
                .insert(pattern.clone(), (this, as_written.clone(), line));
            self.list.push(Route {
                pattern,
                as_written,
                target,
                middleware: Vec::new(),
            });
        }
        Ok(first..self.list.len())
    }

    /// Gives the routes at `indexes` their middleware.
    pub(crate) fn set_middleware(&mut self, indexes: Range<usize>, middleware: &[usize]) {
        for route in self.list.get_mut(indexes).into_iter().flatten() {
            route.middleware = middleware.to_vec();
        }
    }
}

/// Each route with its span and dotted field name (`field`, or `field[i]` in a list).
fn route_list(
    field: &str,
    route: Option<&Spanned<RawRoutes>>,
) -> Vec<(String, Range<usize>, String)> {
    let Some(route) = route else {
        return Vec::new();
    };
    match route.get_ref() {
        RawRoutes::One(r) => vec![(r.clone(), route.span(), field.to_string())],
        RawRoutes::Many(rs) => rs
            .iter()
            .enumerate()
            .map(|(i, r)| (r.get_ref().clone(), r.span(), format!("{field}[{i}]")))
            .collect(),
    }
}

/// App names and component ids: `[a-z][a-z0-9-]*`, at most 63 characters (a DNS label, so they
/// can name hosts, metrics and Kubernetes objects unchanged).
pub(crate) fn check_name(
    src: &Source,
    name: &Spanned<String>,
    field: &str,
    what: &str,
) -> Result<(), ManifestError> {
    let n = name.get_ref();
    let Some(why) = name_problem(n) else {
        return Ok(());
    };
    Err(src.error(
        Some(name.span()),
        field,
        format!("`{field}`: {what} `{n}` {why}"),
        format!(
            "use lowercase letters, digits and `-`, starting with a letter, e.g. \"{}\"",
            suggested_name(n)
        ),
    ))
}

/// What is wrong with `name` as an app name or component id (a DNS label: lowercase letters,
/// digits and `-`, starting with a letter, at most 63 characters), or `None` if nothing.
pub fn name_problem(name: &str) -> Option<&'static str> {
    if name.is_empty() {
        Some("is empty")
    } else if name.len() > 63 {
        Some("is longer than 63 characters")
    } else if !name.starts_with(|c: char| c.is_ascii_lowercase()) {
        Some("must start with a lowercase letter")
    } else if !name
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
    {
        Some("may contain only lowercase letters, digits and `-`")
    } else {
        None
    }
}

/// A valid name close to `name`, to suggest in its place.
pub fn suggested_name(name: &str) -> String {
    let suggestion: String = name
        .to_ascii_lowercase()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .skip_while(|c| !c.is_ascii_lowercase())
        .take(63)
        .collect();
    if suggestion.is_empty() {
        "my-app".into()
    } else {
        suggestion
    }
}
