//! References between an app's parts by component id: `middleware` lists (the components a
//! route's requests pass through before its component or upstream) and in-process calls
//! (`http://ID.skiff.internal` in `allowed_outbound_hosts`). A component may name one written
//! later in the file, so these are checked once all components are known, at the spans kept
//! for the purpose.

use std::ops::Range;

use toml::Spanned;

use crate::error::Source;
use crate::toml_error::closest;
use crate::{Component, HostMatch, HostPattern, ManifestError};

/// The domain under which an app's components call each other in process:
/// `http://ID.skiff.internal`, granted by naming that host (or `*.skiff.internal`) in
/// `allowed_outbound_hosts`.
pub const INTERNAL_DOMAIN: &str = "skiff.internal";

/// A `middleware` list as written, with what it applies to.
pub(crate) struct Chain {
    /// `component.<id>.middleware` or `upstream.<name>.middleware`.
    pub(crate) field: String,
    pub(crate) list: Spanned<Vec<Spanned<String>>>,
    /// The component whose list it is (a component may not list itself); `None` for an
    /// upstream's.
    pub(crate) owner: Option<usize>,
    /// The routes it applies to: indexes into the app's routes.
    pub(crate) routes: Range<usize>,
}

/// An `allowed_outbound_hosts` entry that names one component: `http://ID.skiff.internal`.
pub(crate) struct InternalCall {
    /// `component.<id>.allowed_outbound_hosts[<i>]`.
    pub(crate) field: String,
    /// The component it names.
    pub(crate) id: String,
    /// The entry as written.
    pub(crate) written: String,
    pub(crate) span: Range<usize>,
}

/// The component id a pattern's host names under [`INTERNAL_DOMAIN`], if it does (`*` and
/// `*.skiff.internal` name none in particular).
pub(crate) fn internal_component(pattern: &HostPattern) -> Option<&str> {
    match pattern.host() {
        HostMatch::Name(name) => name
            .strip_suffix(INTERNAL_DOMAIN)?
            .strip_suffix('.')
            .filter(|id| !id.is_empty()),
        _ => None,
    }
}

/// The components of a `middleware` list, as indexes into `components`: each must be a
/// component of the app, listed once, and not the list's own component.
pub(crate) fn middleware(
    src: &Source,
    components: &[Component],
    chain: &Chain,
) -> Result<Vec<usize>, ManifestError> {
    let mut out: Vec<usize> = Vec::with_capacity(chain.list.get_ref().len());
    for (i, name) in chain.list.get_ref().iter().enumerate() {
        let field = format!("{}[{i}]", chain.field);
        let n = name.get_ref();
        let err = |message: String, help: String| {
            src.error(
                Some(name.span()),
                &field,
                format!("`{field}`: {message}"),
                help,
            )
        };
        let Some(index) = components.iter().position(|c| c.id == *n) else {
            return Err(err(
                format!("`{n}` is not a component of this app"),
                unknown_help(
                    n,
                    components,
                    "a middleware is a component of the app, named by its id",
                ),
            ));
        };
        if chain.owner == Some(index) {
            return Err(err(
                format!("component `{n}` lists itself as middleware"),
                format!(
                    "a component's middleware runs before it; remove `{n}` from the list, or \
                     list the components that should run first"
                ),
            ));
        }
        if out.contains(&index) {
            return Err(err(
                format!("`{n}` is listed twice"),
                "a request passes through each middleware once; list it once".to_string(),
            ));
        }
        out.push(index);
    }
    Ok(out)
}

/// Every `http://ID.skiff.internal` entry must name a component of the app.
pub(crate) fn check_internal_calls(
    src: &Source,
    components: &[Component],
    calls: &[InternalCall],
) -> Result<(), ManifestError> {
    let Some(call) = calls
        .iter()
        .find(|call| !components.iter().any(|c| c.id == call.id))
    else {
        return Ok(());
    };
    let field = &call.field;
    Err(src.error(
        Some(call.span.clone()),
        field,
        format!(
            "`{field}`: `{}` names no component of this app",
            call.written
        ),
        unknown_help(
            &call.id,
            components,
            "a component calls another in process at http://ID.skiff.internal, ID being the \
             other's id",
        ),
    ))
}

/// "did you mean" the closest component id, else the list of ids, then `what`.
fn unknown_help(name: &str, components: &[Component], what: &str) -> String {
    let ids: Vec<&str> = components.iter().map(|c| c.id.as_str()).collect();
    match closest(name, &ids) {
        Some(near) => format!("did you mean `{near}`? ({what})"),
        None => {
            let listed: Vec<String> = ids.iter().map(|id| format!("`{id}`")).collect();
            format!("{what}; the app's components are {}", listed.join(", "))
        }
    }
}
