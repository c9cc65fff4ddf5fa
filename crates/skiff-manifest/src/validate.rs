//! From TOML text to a checked [`App`]: turning toml errors into located ones, then the
//! semantic rules, in file order, stopping at the first error.

use std::collections::HashMap;
use std::io::Read;
use std::ops::Range;
use std::path::{Component as PathPart, Path, PathBuf};
use std::time::Duration;

use toml::Spanned;
use toml::de::{DeTable, DeValue};

use crate::error::Source;
use crate::raw::{
    OrderedMap, RawComponent, RawFile, RawManifest, RawMemory, RawRoutes, RawVariable,
};
use crate::variables::{Template, Variable, is_store_label, is_variable_name};
use crate::{
    App, Component, FileMount, HostPattern, Limits, Location, ManifestError, Route, RoutePattern,
};

pub(crate) fn parse(src: &Source, manifest_path: PathBuf) -> Result<App, ManifestError> {
    let raw: RawManifest = toml::from_str(src.text).map_err(|e| toml_error(src, &e))?;
    build(src, raw, manifest_path)
}

// ---------------------------------------------------------------------------------------------
// toml errors

pub(crate) fn toml_error(src: &Source, e: &toml::de::Error) -> ManifestError {
    let span = e.span();
    let msg = e.message().trim();
    // A document that does not parse as TOML at all has no tree to find the field in; the
    // nearest table header above the error is the best field name there is.
    let doc = match DeTable::parse(src.text) {
        Ok(doc) => doc,
        Err(_) => {
            let field = header_before(src.text, span.as_ref().map_or(0, |s| s.start));
            let message = if field.is_empty() {
                format!("invalid TOML: {msg}")
            } else {
                format!("invalid TOML in `[{field}]`: {msg}")
            };
            return src.error(
                span,
                field,
                message,
                "fix the TOML syntax here (strings need quotes, tables need `[name]` headers)"
                    .to_string(),
            );
        }
    };
    let node = span
        .as_ref()
        .and_then(|s| find_in_table(doc.get_ref(), s, ""));

    if msg.starts_with("unknown field `") {
        // serde's message: unknown field `x`, expected one of `a`, `b`, ...
        let quoted: Vec<&str> = msg.split('`').skip(1).step_by(2).collect();
        let name = quoted.first().copied().unwrap_or_default();
        let valid = &quoted[1.min(quoted.len())..];
        let (parent, key_span) = match &node {
            Some(n) if n.is_key => (n.parent.clone(), span.clone()),
            Some(n) => {
                let key_span = n
                    .table
                    .and_then(|t| t.iter().find(|(k, _)| k.get_ref() == name))
                    .map(|(k, _)| k.span());
                (n.path.clone(), key_span.or(span.clone()))
            }
            None => (
                header_before(src.text, span.as_ref().map_or(0, |s| s.start)),
                span.clone(),
            ),
        };
        let mut help = String::new();
        if let Some(best) = closest(name, valid) {
            help.push_str(&format!("did you mean `{best}`?\n"));
        }
        help.push_str(&format!("valid fields are: {}", valid.join(", ")));
        return src.error(
            key_span,
            join_key(&parent, name),
            format!("unknown field `{name}` in {}", describe_table(&parent)),
            help,
        );
    }

    let field = match &node {
        Some(n) => n.path.clone(),
        None => header_before(src.text, span.as_ref().map_or(0, |s| s.start)),
    };
    let message = if field.is_empty() {
        msg.to_string()
    } else {
        format!("`{field}`: {msg}")
    };
    src.error(span, field.clone(), message, help_for_field(&field))
}

/// Where a span points in the document tree.
struct Node<'a> {
    path: String,
    parent: String,
    /// The span is a key (e.g. an unknown field) rather than a value.
    is_key: bool,
    /// Set when the span is a table value, to look keys up in it.
    table: Option<&'a DeTable<'a>>,
}

// Depth-first, children before parents: a `[component.x]` header is both the span of table
// `component.x` and of nothing deeper, but inline values nest, and the deepest match is the
// most precise field.
fn find_in_table<'a>(t: &'a DeTable<'a>, span: &Range<usize>, prefix: &str) -> Option<Node<'a>> {
    for (k, v) in t {
        let path = join_key(prefix, k.get_ref());
        if k.span() == *span {
            return Some(Node {
                path,
                parent: prefix.to_string(),
                is_key: true,
                table: None,
            });
        }
        if let Some(n) = find_in_value(v, span, &path, prefix) {
            return Some(n);
        }
    }
    None
}

fn find_in_value<'a>(
    v: &'a Spanned<DeValue<'a>>,
    span: &Range<usize>,
    path: &str,
    parent: &str,
) -> Option<Node<'a>> {
    let deeper = match v.get_ref() {
        DeValue::Table(t) => find_in_table(t, span, path),
        DeValue::Array(items) => items
            .iter()
            .enumerate()
            .find_map(|(i, item)| find_in_value(item, span, &format!("{path}[{i}]"), path)),
        _ => None,
    };
    deeper.or_else(|| {
        (v.span() == *span).then(|| Node {
            path: path.to_string(),
            parent: parent.to_string(),
            is_key: false,
            table: match v.get_ref() {
                DeValue::Table(t) => Some(t),
                _ => None,
            },
        })
    })
}

/// The name of the last `[table]` header before `offset`, e.g. `component.hello`.
fn header_before(text: &str, offset: usize) -> String {
    let offset = offset.min(text.len());
    let before = text.get(..offset).unwrap_or(text);
    before
        .lines()
        .rev()
        .map(str::trim)
        .find(|l| l.starts_with('[') && l.contains(']'))
        .map(|l| {
            let l = l.trim_start_matches('[');
            let end = l.find(']').unwrap_or(l.len());
            l[..end]
                .split('.')
                .map(str::trim)
                .collect::<Vec<_>>()
                .join(".")
        })
        .unwrap_or_default()
}

fn join_key(prefix: &str, key: &str) -> String {
    let bare = !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    let key = if bare {
        key.to_string()
    } else {
        format!("{key:?}")
    };
    if prefix.is_empty() {
        key
    } else {
        format!("{prefix}.{key}")
    }
}

fn describe_table(path: &str) -> String {
    match path.strip_prefix("component.") {
        _ if path.is_empty() => "the top level".to_string(),
        Some(id) if !id.contains(['.', '[']) => format!("component `{id}`"),
        _ => format!("`{path}`"),
    }
}

/// A field-specific example for type errors ("expected a string" alone does not show the fix).
fn help_for_field(field: &str) -> Option<String> {
    // Reduce `component.<id>.files[2].source` to `component.files.source`.
    let mut parts: Vec<String> = field
        .split('.')
        .map(|p| p.split('[').next().unwrap_or(p).to_string())
        .collect();
    if parts.len() >= 2 && parts[0] == "component" {
        parts.remove(1);
    }
    let key = parts.join(".");
    let help = match key.as_str() {
        "app" => "write `[app]` with `name = \"my-app\"`",
        "app.name" => "e.g. name = \"hello\"",
        "app.version" => "e.g. version = \"0.1.0\"",
        "app.description" => "e.g. description = \"says hello\"",
        "component" => "declare each component as a table: `[component.hello]`",
        "component.source" => "e.g. source = \"hello.wasm\" (a path relative to skiff.toml)",
        "component.route" => "e.g. route = \"/hello\" or route = [\"/hello\", \"/api/...\"]",
        "component.environment" => "e.g. environment = { GREETING = \"hi\" }",
        "component.files" => {
            "e.g. files = [\"static\", { source = \"data\", destination = \"/data\" }]"
        }
        "component.files.source" => "e.g. { source = \"data\", destination = \"/data\" }",
        "component.files.destination" => "e.g. { source = \"data\", destination = \"/data\" }",
        "component.files.writable" => "writable is `true` or `false`",
        "component.allowed_outbound_hosts" => {
            "e.g. allowed_outbound_hosts = [\"https://api.example.com\"]"
        }
        "component.limits" => "e.g. [component.hello.limits] with memory = \"64MiB\"",
        "component.limits.memory" => "e.g. memory = \"64MiB\" or memory = 67108864",
        "component.limits.timeout" => "e.g. timeout = \"5s\" or timeout = \"250ms\"",
        "component.limits.max_concurrency" => "e.g. max_concurrency = 50",
        "component.limits.fuel" => "e.g. fuel = 5_000_000_000 (about as many Wasm instructions)",
        "component.limits.requests_per_instance" => "e.g. requests_per_instance = 100",
        "component.key_value_stores" => "e.g. key_value_stores = [\"default\"]",
        "component.variables" => "e.g. variables = { api_url = \"https://{{ host }}/api\" }",
        k if k.starts_with("component.variables.") => {
            "variable values are strings, e.g. api_url = \"https://{{ host }}/api\""
        }
        "variables" => "e.g. [variables] with api_token = { required = true, secret = true }",
        k if k.starts_with("variables.") => {
            "a variable is a table, e.g. greeting = { default = \"hello\" } or token = { required = true, secret = true }"
        }
        k if k.starts_with("component.environment.") => {
            "environment values are strings; quote numbers and booleans, e.g. PORT = \"8080\""
        }
        _ => return None,
    };
    Some(help.to_string())
}

/// The candidate within edit distance 2 of `name`, for "did you mean".
fn closest<'a>(name: &str, candidates: &[&'a str]) -> Option<&'a str> {
    candidates
        .iter()
        .map(|c| (edit_distance(name, c), *c))
        .filter(|(d, _)| *d <= 2)
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != *cb);
            cur.push((prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1));
        }
        prev = cur;
    }
    prev[b.len()]
}

// ---------------------------------------------------------------------------------------------
// semantic rules

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

    let mut components = Vec::with_capacity(raw_components.len());
    let mut routes = Vec::new();
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
        let comp = comp.into_inner();
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
        components.push(cx.build(comp)?);
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
            let suggestion: String = name
                .get_ref()
                .chars()
                .map(|c| {
                    if c.is_ascii_alphanumeric() {
                        c.to_ascii_lowercase()
                    } else {
                        '_'
                    }
                })
                .collect();
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

struct ComponentCx<'a> {
    src: &'a Source<'a>,
    base_dir: &'a Path,
    id: &'a str,
    span: Range<usize>,
    app_variables: &'a [Variable],
}

impl ComponentCx<'_> {
    fn field(&self, rest: &str) -> String {
        format!("component.{}.{rest}", self.id)
    }

    fn err(
        &self,
        span: Range<usize>,
        field: &str,
        message: impl std::fmt::Display,
        help: impl Into<String>,
    ) -> ManifestError {
        self.src.error(
            Some(span),
            field,
            format!("`{field}`: {message}"),
            help.into(),
        )
    }

    fn build(&self, comp: RawComponent) -> Result<Component, ManifestError> {
        let (source, source_span) = self.source(comp.source)?;
        let environment = self.environment(comp.environment)?;
        let files = self.files(comp.files.unwrap_or_default())?;
        let allowed_outbound_hosts = self.hosts(comp.allowed_outbound_hosts.unwrap_or_default())?;
        let key_value_stores = self.store_labels(comp.key_value_stores.unwrap_or_default())?;
        let variables = self.variables(comp.variables)?;
        let limits = match comp.limits {
            Some(l) => self.limits(l.into_inner())?,
            None => Limits::default(),
        };
        Ok(Component {
            id: self.id.to_string(),
            source,
            source_location: Location::from_offset(self.src.text, source_span.start),
            environment,
            files,
            allowed_outbound_hosts,
            key_value_stores,
            variables,
            limits,
        })
    }

    fn store_labels(&self, labels: Vec<Spanned<String>>) -> Result<Vec<String>, ManifestError> {
        let mut out: Vec<String> = Vec::with_capacity(labels.len());
        for (i, label) in labels.into_iter().enumerate() {
            let field = format!("{}[{i}]", self.field("key_value_stores"));
            if !is_store_label(label.get_ref()) {
                return Err(self.err(
                    label.span(),
                    &field,
                    format!("`{}` is not a valid store label", label.get_ref()),
                    "use lowercase letters, digits, `-` and `_`, e.g. \"default\" or \"sessions\"",
                ));
            }
            if out.contains(label.get_ref()) {
                return Err(self.err(
                    label.span(),
                    &field,
                    format!("`{}` is listed twice", label.get_ref()),
                    "list each store once",
                ));
            }
            out.push(label.into_inner());
        }
        Ok(out)
    }

    fn variables(
        &self,
        raw: Option<OrderedMap<Spanned<String>>>,
    ) -> Result<Vec<(String, Template)>, ManifestError> {
        let mut out = Vec::new();
        for (name, value) in raw.map(|m| m.0).unwrap_or_default() {
            let field = join_key(&self.field("variables"), name.get_ref());
            if !is_variable_name(name.get_ref()) {
                return Err(self.err(
                    name.span(),
                    &field,
                    format!("`{}` is not a valid variable name", name.get_ref()),
                    "use lowercase letters, digits and `_`, starting with a letter, e.g. `api_url`",
                ));
            }
            let template = Template::parse(value.get_ref()).map_err(|why| {
                self.err(
                    value.span(),
                    &field,
                    why,
                    "refer to an app variable as `{{ name }}`",
                )
            })?;
            if let Some(unknown) = template
                .references()
                .find(|r| !self.app_variables.iter().any(|v| v.name == *r))
            {
                let declared: Vec<&str> =
                    self.app_variables.iter().map(|v| v.name.as_str()).collect();
                let help = match closest(unknown, &declared) {
                    Some(near) => format!(
                        "did you mean `{near}`? App variables are declared under [variables]"
                    ),
                    None => format!(
                        "declare it under [variables], e.g.\n[variables]\n{unknown} = {{ default = \"...\" }}"
                    ),
                };
                return Err(self.err(
                    value.span(),
                    &field,
                    format!("refers to `{unknown}`, which is not an app variable"),
                    help,
                ));
            }
            out.push((name.into_inner(), template));
        }
        Ok(out)
    }

    fn source(
        &self,
        source: Option<Spanned<String>>,
    ) -> Result<(PathBuf, Range<usize>), ManifestError> {
        let field = self.field("source");
        let Some(source) = source else {
            return Err(self.err(
                self.span.clone(),
                &field,
                format!("component `{}` has no `source`", self.id),
                format!(
                    "add the path of its Wasm component, e.g. source = \"{}.wasm\"",
                    self.id
                ),
            ));
        };
        let span = source.span();
        let rel = source.into_inner();
        if rel.trim().is_empty() {
            return Err(self.err(
                span,
                &field,
                "is empty",
                format!("e.g. source = \"{}.wasm\"", self.id),
            ));
        }
        let path = self.base_dir.join(&rel);
        let mut header = [0u8; 8];
        let read = std::fs::File::open(&path).and_then(|mut f| {
            if f.metadata()?.is_dir() {
                return Err(std::io::Error::other("is a directory"));
            }
            let mut n = 0;
            while n < header.len() {
                match f.read(&mut header[n..])? {
                    0 => break,
                    k => n += k,
                }
            }
            Ok(n)
        });
        let n = match read {
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(self.err(
                    span,
                    &field,
                    format!("`{}` does not exist", path.display()),
                    "build it first, e.g. `cargo build --target wasm32-wasip2 --release`, or fix the path (it is relative to the manifest's folder)",
                ));
            }
            Err(e) => {
                return Err(self.err(
                    span,
                    &field,
                    format!("cannot read `{}`: {e}", path.display()),
                    "point `source` at a readable .wasm file",
                ));
            }
        };
        if n < 8 || &header[..4] != b"\0asm" {
            return Err(self.err(
                span,
                &field,
                format!("`{}` is not a WebAssembly file (it does not start with `\\0asm`)", path.display()),
                "point `source` at the compiled .wasm component, not at source code or a text (.wat) file",
            ));
        }
        // Bytes 4..8 are version and layer: layer 0 is a core module, layer 1 a component.
        // Any component version is let through; the runtime reports versions it cannot load.
        if header[6..8] != [1, 0] {
            return Err(self.err(
                span,
                &field,
                format!("`{}` is a core WebAssembly module, not a component", path.display()),
                "build it for `wasm32-wasip2` (e.g. `cargo build --target wasm32-wasip2 --release`), or wrap it with `wasm-tools component new`",
            ));
        }
        Ok((path, span))
    }

    fn environment(
        &self,
        env: Option<crate::raw::OrderedMap<String>>,
    ) -> Result<Vec<(String, String)>, ManifestError> {
        let mut out = Vec::new();
        for (key, value) in env.map(|m| m.0).unwrap_or_default() {
            let field = join_key(&self.field("environment"), key.get_ref());
            let k = key.get_ref();
            let valid = k.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
                && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
            if !valid {
                let suggestion: String = k
                    .chars()
                    .map(|c| {
                        if c.is_ascii_alphanumeric() {
                            c.to_ascii_uppercase()
                        } else {
                            '_'
                        }
                    })
                    .collect();
                let suggestion = if suggestion.starts_with(|c: char| c.is_ascii_digit()) {
                    format!("_{suggestion}")
                } else {
                    suggestion
                };
                return Err(self.err(
                    key.span(),
                    &field,
                    format!("`{k}` is not a valid environment variable name"),
                    format!("use letters, digits and `_`, not starting with a digit, e.g. `{suggestion}`"),
                ));
            }
            out.push((key.into_inner(), value));
        }
        Ok(out)
    }

    fn files(&self, files: Vec<Spanned<RawFile>>) -> Result<Vec<FileMount>, ManifestError> {
        let mut mounts: Vec<FileMount> = Vec::with_capacity(files.len());
        for (i, entry) in files.into_iter().enumerate() {
            let entry_field = format!("{}[{i}]", self.field("files"));
            let entry_span = entry.span();
            let (host_rel, host_span, host_field, guest, writable) = match entry.into_inner() {
                RawFile::Short(s) => {
                    let guest = self.shorthand_guest(&s, entry_span.clone(), &entry_field)?;
                    (s, entry_span.clone(), entry_field.clone(), guest, false)
                }
                RawFile::Full(t) => {
                    let Some(source) = t.source else {
                        return Err(self.err(
                            entry_span,
                            &format!("{entry_field}.source"),
                            "missing `source` (the host folder or file to mount)",
                            "e.g. { source = \"data\", destination = \"/data\" }",
                        ));
                    };
                    let Some(dest) = t.destination else {
                        return Err(self.err(
                            entry_span,
                            &format!("{entry_field}.destination"),
                            "missing `destination` (where the guest sees the files)",
                            format!(
                                "e.g. {{ source = {:?}, destination = \"/data\" }}",
                                source.get_ref()
                            ),
                        ));
                    };
                    let dest_field = format!("{entry_field}.destination");
                    let guest = self.guest_path(dest.get_ref(), dest.span(), &dest_field)?;
                    let span = source.span();
                    (
                        source.into_inner(),
                        span,
                        format!("{entry_field}.source"),
                        guest,
                        t.writable.unwrap_or(false),
                    )
                }
            };
            if host_rel.trim().is_empty() {
                return Err(self.err(
                    host_span,
                    &host_field,
                    "the host path is empty",
                    "name a folder or file relative to skiff.toml",
                ));
            }
            let host = self.base_dir.join(&host_rel);
            if !host.exists() {
                return Err(self.err(
                    host_span,
                    &host_field,
                    format!("`{}` does not exist", host.display()),
                    "create it, or fix the path (it is relative to the manifest's folder)",
                ));
            }
            if let Some(prev) = mounts.iter().find(|m| m.guest == guest) {
                return Err(self.err(
                    host_span,
                    &host_field,
                    format!(
                        "`{guest}` is already mounted from `{}`",
                        prev.host.display()
                    ),
                    "give each mount its own destination",
                ));
            }
            mounts.push(FileMount {
                host,
                guest,
                writable,
            });
        }
        Ok(mounts)
    }

    /// `"static"` mounts at `/static`, so it must be a plain relative path.
    fn shorthand_guest(
        &self,
        s: &str,
        span: Range<usize>,
        field: &str,
    ) -> Result<String, ManifestError> {
        let path = Path::new(s);
        let mut parts = Vec::new();
        for part in path.components() {
            match part {
                PathPart::Normal(p) => parts.push(p.to_string_lossy().into_owned()),
                PathPart::CurDir => {}
                _ => {
                    return Err(self.err(
                        span,
                        field,
                        format!("the shorthand `{s}` must be a relative path inside the app folder (no `..`, not absolute)"),
                        format!("use the long form to choose where it appears: {{ source = {s:?}, destination = \"/data\" }}"),
                    ));
                }
            }
        }
        Ok(format!("/{}", parts.join("/")))
    }

    fn guest_path(
        &self,
        dest: &str,
        span: Range<usize>,
        field: &str,
    ) -> Result<String, ManifestError> {
        if !dest.starts_with('/') {
            return Err(self.err(
                span,
                field,
                format!("`{dest}` is not an absolute path"),
                format!(
                    "guest paths start with `/`, e.g. \"/{}\"",
                    dest.trim_start_matches("./")
                ),
            ));
        }
        if dest.split('/').any(|seg| seg == "..") {
            return Err(self.err(
                span,
                field,
                format!("`{dest}` contains `..`"),
                "write the destination without `..`, e.g. \"/data\"",
            ));
        }
        let trimmed = dest.trim_end_matches('/');
        Ok(if trimmed.is_empty() {
            "/".into()
        } else {
            trimmed.to_string()
        })
    }

    fn hosts(&self, hosts: Vec<Spanned<String>>) -> Result<Vec<HostPattern>, ManifestError> {
        hosts
            .into_iter()
            .enumerate()
            .map(|(i, h)| {
                HostPattern::parse(h.get_ref()).map_err(|e| {
                    let field = format!("{}[{i}]", self.field("allowed_outbound_hosts"));
                    self.err(h.span(), &field, e.message, e.help)
                })
            })
            .collect()
    }

    /// A count that must not be zero, where zero would make the component useless.
    fn positive<T: Copy + Default + PartialEq>(
        &self,
        value: Option<Spanned<T>>,
        field: &str,
        why_not_zero: &str,
        help: &str,
    ) -> Result<Option<T>, ManifestError> {
        match value {
            None => Ok(None),
            Some(n) if *n.get_ref() == T::default() => {
                Err(self.err(n.span(), &self.field(field), why_not_zero, help))
            }
            Some(n) => Ok(Some(*n.get_ref())),
        }
    }

    fn limits(&self, limits: crate::raw::RawLimits) -> Result<Limits, ManifestError> {
        let memory = match limits.memory {
            None => None,
            Some(m) => {
                let field = self.field("limits.memory");
                let parsed = match m.get_ref() {
                    RawMemory::Bytes(n) if *n > 0 => Ok(*n as u64),
                    RawMemory::Bytes(n) => Err(format!("`{n}` bytes is not a usable memory limit")),
                    RawMemory::Text(t) => parse_memory(t),
                };
                Some(parsed.map_err(|why| {
                    self.err(m.span(), &field, why, "write bytes as a number, or a size with a unit (B, KB, KiB, MB, MiB, GB, GiB), e.g. \"64MiB\"")
                })?)
            }
        };
        let timeout = match limits.timeout {
            None => None,
            Some(t) => {
                let field = self.field("limits.timeout");
                let help = "write a duration with a unit, e.g. \"250ms\", \"5s\" or \"2m\"";
                match humantime::parse_duration(t.get_ref().trim()) {
                    // The runtime adds the timeout to the clock for each request's deadline;
                    // past a bound that addition would overflow, and no request needs that long.
                    Ok(d) if d > MAX_TIMEOUT => {
                        return Err(self.err(
                            t.span(),
                            &field,
                            format!(
                                "`{}` is longer than the longest request timeout, 24h",
                                t.get_ref()
                            ),
                            "write a duration of at most \"24h\", e.g. \"5s\" or \"10m\"",
                        ));
                    }
                    Ok(d) if d > Duration::ZERO => Some(d),
                    Ok(_) => {
                        return Err(self.err(
                            t.span(),
                            &field,
                            "a timeout of zero would fail every request",
                            help,
                        ));
                    }
                    Err(e) => {
                        return Err(self.err(
                            t.span(),
                            &field,
                            format!("`{}` is not a duration ({e})", t.get_ref()),
                            help,
                        ));
                    }
                }
            }
        };
        let max_concurrency = self.positive(
            limits.max_concurrency,
            "limits.max_concurrency",
            "a concurrency limit of zero would refuse every request",
            "give the number of requests this component may serve at once, e.g. 50",
        )?;
        let fuel = self.positive(
            limits.fuel,
            "limits.fuel",
            "a fuel budget of zero would stop every request before it starts",
            "give about as many Wasm instructions as one request may run, e.g. fuel = 5_000_000_000",
        )?;
        let requests_per_instance = self.positive(
            limits.requests_per_instance,
            "limits.requests_per_instance",
            "an instance that may serve no request could never answer",
            "write 1 for a fresh instance per request (the default), or more to reuse one, e.g. requests_per_instance = 100",
        )?;
        Ok(Limits {
            memory,
            timeout,
            max_concurrency,
            fuel,
            requests_per_instance,
        })
    }
}

/// The longest `limits.timeout` accepted.
pub const MAX_TIMEOUT: Duration = Duration::from_secs(24 * 60 * 60);

/// Bytes in binary units, as [`parse_memory`] reads them: `512 B`, `128 MiB`, `1.2 MiB`.
pub fn format_size(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut unit = 0;
    let mut whole = bytes;
    while whole >= 1024 && unit < UNITS.len() - 1 {
        whole /= 1024;
        unit += 1;
    }
    let scale = 1u64 << (10 * unit);
    if bytes.is_multiple_of(scale) {
        format!("{} {}", bytes / scale, UNITS[unit])
    } else {
        format!("{:.1} {}", bytes as f64 / scale as f64, UNITS[unit])
    }
}

/// `"64MiB"`, `"1 GB"`, `"512"` (bytes). Units are case-insensitive.
/// Parses a size such as `64MiB` or `512` (bytes), as `limits.memory` takes it; the CLI uses
/// it for its flags so that both spell sizes the same way.
pub fn parse_memory(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let digits_end = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (number, unit) = t.split_at(digits_end);
    if number.is_empty() {
        return Err(format!("`{text}` does not start with a number"));
    }
    let multiplier: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kb" => 1000,
        "kib" => 1 << 10,
        "mb" => 1000 * 1000,
        "mib" => 1 << 20,
        "gb" => 1000 * 1000 * 1000,
        "gib" => 1 << 30,
        other => return Err(format!("unknown unit `{other}` in `{text}`")),
    };
    let bytes = number
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(multiplier))
        .ok_or_else(|| format!("`{text}` is too large"))?;
    if bytes == 0 {
        return Err(format!("`{text}` is zero; a component needs some memory"));
    }
    Ok(bytes)
}

#[cfg(test)]
pub(crate) mod unit {
    use super::*;

    #[test]
    fn memory_units() {
        assert_eq!(parse_memory("64MiB"), Ok(64 << 20));
        assert_eq!(parse_memory("64 mib"), Ok(64 << 20));
        assert_eq!(parse_memory("1KB"), Ok(1000));
        assert_eq!(parse_memory("2GiB"), Ok(2 << 30));
        assert_eq!(parse_memory("512"), Ok(512));
        assert!(parse_memory("64XB").is_err());
        assert!(parse_memory("MiB").is_err());
        assert!(parse_memory("0MiB").is_err());
        assert!(parse_memory("99999999999999GiB").is_err());
    }

    #[test]
    fn header_before_finds_nearest_table() {
        let text = "[app]\nname = \"x\"\n[component.hello]\nsource = \"a\"\n";
        assert_eq!(header_before(text, text.len()), "component.hello");
        assert_eq!(header_before(text, 8), "app");
        assert_eq!(header_before(text, 0), "");
    }

    #[test]
    fn did_you_mean() {
        assert_eq!(closest("sorce", &["source", "route"]), Some("source"));
        assert_eq!(closest("zzzzzz", &["source", "route"]), None);
    }
}
