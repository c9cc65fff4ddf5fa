//! App-level rules: `[app]`, `[variables]`, the list of components and their routes (no two
//! alike). Each component's own fields are checked in [`crate::component`].

use std::collections::HashMap;
use std::ops::Range;
use std::path::{Path, PathBuf};

use toml::Spanned;

use crate::component::ComponentCx;
use crate::error::Source;
use crate::raw::{OrderedMap, RawManifest, RawRoutes, RawVariable};
use crate::toml_error::{join_key, toml_error, underscored};
use crate::variables::{Variable, is_variable_name};
use crate::{App, Component, Consume, Location, ManifestError, Route, RoutePattern};

/// From TOML text to a checked [`App`]: toml errors made located, then the semantic rules, in
/// file order, stopping at the first error.
pub(crate) fn parse(src: &Source, manifest_path: PathBuf) -> Result<App, ManifestError> {
    let raw: RawManifest = toml::from_str(src.text).map_err(|e| toml_error(src, &e))?;
    build(src, raw, manifest_path)
}

fn build(src: &Source, raw: RawManifest, manifest_path: PathBuf) -> Result<App, ManifestError> {
    let base_dir = manifest_path
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default();

    let Some(app) = raw.app else {
        return Err(src.error(
            None,
            "app",
            "missing `[app]` table",
            "add at the top of the manifest:\n[app]\nname = \"my-app\"".to_string(),
        ));
    };
    let app_span = app.span();
    let app = app.into_inner();
    let Some(name) = app.name else {
        return Err(src.error(
            Some(app_span),
            "app.name",
            "missing required field `app.name`",
            "add `name = \"my-app\"` under [app]".to_string(),
        ));
    };
    check_name(src, &name, "app.name", "app name")?;
    let version = match app.version {
        Some(v) if v.get_ref().trim().is_empty() => {
            return Err(src.error(
                Some(v.span()),
                "app.version",
                "`app.version` is empty",
                "write a version such as \"0.1.0\", or leave the field out".to_string(),
            ));
        }
        Some(v) => v.into_inner(),
        None => "0.0.0".to_string(),
    };

    let variables = app_variables(src, raw.variables)?;

    let raw_components = raw.component.map(|m| m.0).unwrap_or_default();
    if raw_components.is_empty() {
        return Err(src.error(
            Some(app_span),
            "component",
            "the app has no components (no `[component.<id>]` table)",
            "add one, e.g.\n[component.hello]\nsource = \"hello.wasm\"\nroute = \"/hello\""
                .to_string(),
        ));
    }

    let mut components: Vec<Component> = Vec::with_capacity(raw_components.len());
    let mut routes = Vec::new();
    let mut consumers: Vec<Consume> = Vec::new();
    let mut schedules = Vec::new();
    // Normalised pattern -> (component id, route as written, line), to name both in a clash.
    let mut seen_routes: HashMap<RoutePattern, (String, String, usize)> = HashMap::new();
    for (index, (id, comp)) in raw_components.into_iter().enumerate() {
        let comp_span = comp.span();
        let id_span = id.span();
        let id = id.into_inner();
        check_name(
            src,
            &Spanned::new(id_span, id.clone()),
            &format!("component.{id}"),
            "component id",
        )?;
        let cx = ComponentCx {
            src,
            base_dir: &base_dir,
            id: &id,
            span: comp_span,
            app_variables: &variables,
        };
        let mut comp = comp.into_inner();
        let raw_consume = comp.consume.take();
        let raw_schedules = comp.schedule.take().unwrap_or_default();
        for (as_written, span, field) in route_list(&id, comp.route.as_ref()) {
            let pattern = RoutePattern::parse(&as_written).map_err(|e| {
                src.error(
                    Some(span.clone()),
                    &field,
                    format!("`{field}`: {}", e.message),
                    e.help,
                )
            })?;
            let line = Location::from_offset(src.text, span.start).line;
            if let Some((other_id, other_route, other_line)) = seen_routes.get(&pattern) {
                let whose = if *other_id == id {
                    "the same component".to_string()
                } else {
                    format!("component `{other_id}`")
                };
                return Err(src.error(
                    Some(span),
                    &field,
                    format!(
                        "`{field}`: route `{as_written}` of component `{id}` (line {line}) \
                         collides with route `{other_route}` of {whose} (line {other_line})"
                    ),
                    format!("each route may belong to one component only; change or remove one of them (both mean `{pattern}`)"),
                ));
            }
            seen_routes.insert(pattern.clone(), (id.clone(), as_written.clone(), line));
            routes.push(Route {
                pattern,
                as_written,
                component: index,
            });
        }
        let component = cx.build(comp)?;
        if let Some(raw) = raw_consume {
            let span = raw.span();
            let consume = cx.consume(raw, index, &component.limits)?;
            if let Some(other) = consumers.iter().find(|c| c.queue == consume.queue) {
                let field = format!("component.{id}.consume.queue");
                return Err(src.error(
                    Some(span),
                    &field,
                    format!(
                        "`{field}`: component `{}` consumes the queue `{}` already",
                        components[other.component].id, consume.queue
                    ),
                    "a queue has one consumer per app: let one component consume it (and \
                     publish to others what they should see)"
                        .to_string(),
                ));
            }
            consumers.push(consume);
        }
        components.push(component);
        let found = cx.schedules(raw_schedules, index, schedules.len())?;
        schedules.extend(found);
    }

    Ok(App {
        name: name.into_inner(),
        version,
        description: app.description,
        manifest_path,
        base_dir,
        variables,
        components,
        routes,
        consumers,
        schedules,
    })
}

/// Each route with its span and dotted field name.
fn route_list(id: &str, route: Option<&Spanned<RawRoutes>>) -> Vec<(String, Range<usize>, String)> {
    let Some(route) = route else {
        return Vec::new();
    };
    let field = format!("component.{id}.route");
    match route.get_ref() {
        RawRoutes::One(r) => vec![(r.clone(), route.span(), field)],
        RawRoutes::Many(rs) => rs
            .iter()
            .enumerate()
            .map(|(i, r)| (r.get_ref().clone(), r.span(), format!("{field}[{i}]")))
            .collect(),
    }
}

/// App names and component ids: `[a-z][a-z0-9-]*`, at most 63 characters (a DNS label, so they
/// can name hosts, metrics and Kubernetes objects unchanged).
fn check_name(
    src: &Source,
    name: &Spanned<String>,
    field: &str,
    what: &str,
) -> Result<(), ManifestError> {
    let n = name.get_ref();
    let why = if n.is_empty() {
        "is empty"
    } else if n.len() > 63 {
        "is longer than 63 characters"
    } else if !n.starts_with(|c: char| c.is_ascii_lowercase()) {
        "must start with a lowercase letter"
    } else if !n
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
    {
        "may contain only lowercase letters, digits and `-`"
    } else {
        return Ok(());
    };
    let mut suggestion: String = n
        .to_ascii_lowercase()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .skip_while(|c| !c.is_ascii_lowercase())
        .take(63)
        .collect();
    if suggestion.is_empty() {
        suggestion = "my-app".into();
    }
    Err(src.error(
        Some(name.span()),
        field,
        format!("`{field}`: {what} `{n}` {why}"),
        format!(
            "use lowercase letters, digits and `-`, starting with a letter, e.g. \"{suggestion}\""
        ),
    ))
}

/// `[variables]`: names, and a default or `required` (not both).
fn app_variables(
    src: &Source,
    raw: Option<OrderedMap<Spanned<RawVariable>>>,
) -> Result<Vec<Variable>, ManifestError> {
    let mut variables = Vec::new();
    for (name, var) in raw.map(|m| m.0).unwrap_or_default() {
        let field = join_key("variables", name.get_ref());
        if !is_variable_name(name.get_ref()) {
            let suggestion = underscored(name.get_ref(), char::to_ascii_lowercase);
            return Err(src.error(
                Some(name.span()),
                &field,
                format!("`{field}`: `{}` is not a valid variable name", name.get_ref()),
                format!("use lowercase letters, digits and `_`, starting with a letter, e.g. `{suggestion}`"),
            ));
        }
        let span = var.span();
        let var = var.into_inner();
        let required = var.required.unwrap_or(false);
        if required && var.default.is_some() {
            return Err(src.error(
                Some(span),
                &field,
                format!("`{field}` is `required` and has a `default`; a required variable has no default"),
                "drop `required = true` to fall back on the default, or drop the `default`".to_string(),
            ));
        }
        variables.push(Variable {
            name: name.into_inner(),
            default: var.default,
            required,
            secret: var.secret.unwrap_or(false),
        });
    }
    Ok(variables)
}
