//! App-level rules: `[app]`, `[variables]`, the list of components, and the routes of
//! components and upstreams (no two alike). Each component's own fields are checked in
//! [`crate::component`], each upstream's in [`crate::upstream`], and what components name of
//! each other (middleware, in-process calls) in [`crate::refs`] once all are known.

use std::path::{Path, PathBuf};

use toml::Spanned;

use crate::component::ComponentCx;
use crate::error::Source;
use crate::owners::{Owner, Routes, check_name};
use crate::raw::{OrderedMap, RawManifest, RawVariable};
use crate::refs::{self, Chain, InternalCall};
use crate::toml_error::{join_key, toml_error, underscored};
use crate::upstream;
use crate::variables::{Variable, is_variable_name};
use crate::{App, Component, Consume, ManifestError, Paths, RouteTarget};

/// From TOML text to a checked [`App`]: toml errors made located, then the semantic rules, in
/// file order, stopping at the first error.
pub(crate) fn parse(
    src: &Source,
    manifest_path: PathBuf,
    paths: Paths,
) -> Result<App, ManifestError> {
    let raw: RawManifest = toml::from_str(src.text).map_err(|e| toml_error(src, &e))?;
    build(src, raw, manifest_path, paths)
}

fn build(
    src: &Source,
    raw: RawManifest,
    manifest_path: PathBuf,
    paths: Paths,
) -> Result<App, ManifestError> {
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
    // An app of upstreams only is a plain gateway; an app of nothing does nothing.
    let has_upstreams = raw.upstream.as_ref().is_some_and(|u| !u.0.is_empty());
    if raw_components.is_empty() && !has_upstreams {
        return Err(src.error(
            Some(app_span),
            "component",
            "the app has no components (no `[component.<id>]` table) and no upstreams",
            "add one, e.g.\n[component.hello]\nsource = \"hello.wasm\"\nroute = \"/hello\""
                .to_string(),
        ));
    }

    let mut components: Vec<Component> = Vec::with_capacity(raw_components.len());
    let mut routes = Routes::default();
    let mut consumers: Vec<Consume> = Vec::new();
    let mut schedules = Vec::new();
    // Names of other components, checked once all of them are known (they may come later).
    let mut chains: Vec<Chain> = Vec::new();
    let mut calls: Vec<InternalCall> = Vec::new();
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
            paths,
            id: &id,
            span: comp_span,
            app_variables: &variables,
        };
        let mut comp = comp.into_inner();
        let raw_consume = comp.consume.take();
        let raw_schedules = comp.schedule.take().unwrap_or_default();
        let owner = Owner::Component(&id);
        let own_routes = routes.add(
            src,
            owner,
            comp.route.as_ref(),
            RouteTarget::Component(index),
        )?;
        if let Some(list) = comp.middleware.take() {
            if own_routes.is_empty() && !list.get_ref().is_empty() {
                let field = owner.field("middleware");
                return Err(src.error(
                    Some(list.span()),
                    &field,
                    format!(
                        "`{field}`: component `{id}` has middleware but no `route`, so the \
                         middleware would never run"
                    ),
                    format!(
                        "middleware runs on the requests of a route: add one, e.g. route = \
                         \"/{id}/...\", or remove `middleware`"
                    ),
                ));
            }
            chains.push(Chain {
                field: owner.field("middleware"),
                list,
                owner: Some(index),
                routes: own_routes,
            });
        }
        let (component, found_calls) = cx.build(comp)?;
        calls.extend(found_calls);
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

    // Now that every component is known: what the components name of each other.
    for chain in &chains {
        let middleware = refs::middleware(src, &components, chain)?;
        routes.set_middleware(chain.routes.clone(), &middleware);
    }
    refs::check_internal_calls(src, &components, &calls)?;

    let upstreams = upstream::upstreams(
        src,
        &base_dir,
        paths,
        raw.upstream.map(|m| m.0).unwrap_or_default(),
        &components,
        &mut routes,
    )?;

    Ok(App {
        name: name.into_inner(),
        version,
        description: app.description,
        manifest_path,
        base_dir,
        variables,
        components,
        routes: routes.list,
        consumers,
        schedules,
        upstreams,
    })
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
