//! TOML errors made located: a `toml` parse or type error becomes a [`ManifestError`] naming the
//! field (found again in the document tree), the line, and an example of the fix. Also the two
//! helpers every rule uses to name things: [`join_key`] for dotted field paths and [`closest`]
//! for "did you mean".

use std::ops::Range;

use toml::Spanned;
use toml::de::{DeTable, DeValue};

use crate::ManifestError;
use crate::error::Source;

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

pub(crate) fn join_key(prefix: &str, key: &str) -> String {
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
    if path.is_empty() {
        return "the top level".to_string();
    }
    for kind in ["component", "upstream"] {
        if let Some(name) = path
            .strip_prefix(kind)
            .and_then(|rest| rest.strip_prefix('.'))
            && !name.contains(['.', '['])
        {
            return format!("{kind} `{name}`");
        }
    }
    format!("`{path}`")
}

/// A field-specific example for type errors ("expected a string" alone does not show the fix).
fn help_for_field(field: &str) -> Option<String> {
    // Reduce `component.<id>.files[2].source` to `component.files.source`, and
    // `upstream.<name>.url` to `upstream.url`.
    let mut parts: Vec<String> = field
        .split('.')
        .map(|p| p.split('[').next().unwrap_or(p).to_string())
        .collect();
    if parts.len() >= 2 && (parts[0] == "component" || parts[0] == "upstream") {
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
        "component.middleware" | "upstream.middleware" => {
            "e.g. middleware = [\"auth\"] (ids of components of this app, in the order they run)"
        }
        "upstream" => "declare each upstream as a table: `[upstream.orders]`",
        "upstream.url" => "e.g. url = \"http://orders:8080\"",
        "upstream.urls" => "e.g. urls = [\"http://orders-1:8080\", \"http://orders-2:8080\"]",
        "upstream.route" => "e.g. route = \"/orders/...\" or route = [\"/orders/...\", \"/cart\"]",
        "upstream.connect_timeout" => "e.g. connect_timeout = \"2s\"",
        "upstream.timeout" => "e.g. timeout = \"30s\"",
        "upstream.body_idle_timeout" => "e.g. body_idle_timeout = \"60s\"",
        "upstream.retries" => "a number from 0 to 10, e.g. retries = 1",
        "upstream.websocket_limit" => "a number from 1 to 65536, e.g. websocket_limit = 1024",
        "upstream.websocket_idle_timeout" => "e.g. websocket_idle_timeout = \"5m\"",
        "upstream.health_check" => {
            "e.g. health_check = { path = \"/healthz\", interval = \"5s\", timeout = \"2s\" }"
        }
        "upstream.health_check.path" => "e.g. path = \"/healthz\"",
        "upstream.health_check.interval" => "e.g. interval = \"5s\"",
        "upstream.health_check.timeout" => "e.g. timeout = \"2s\"",
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

/// `name` with every character but ASCII letters and digits made `_`, and those cased by
/// `case`: the suggestion for a variable name (lower case) or an environment name (upper).
pub(crate) fn underscored(name: &str, case: fn(&char) -> char) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                case(&c)
            } else {
                '_'
            }
        })
        .collect()
}

/// The candidate within edit distance 2 of `name`, for "did you mean".
pub(crate) fn closest<'a>(name: &str, candidates: &[&'a str]) -> Option<&'a str> {
    candidates
        .iter()
        .map(|c| (strsim::levenshtein(name, c), *c))
        .filter(|(d, _)| *d <= 2)
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

#[cfg(test)]
mod unit {
    use super::*;

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
        // Counted in characters, not bytes, as before.
        assert_eq!(closest("größe", &["grösse"]), Some("grösse"));
    }
}
