//! Fuzzes `skiff_manifest::parse` and the compiler-style rendering of its errors.
//!
//! Each input is parsed twice: as `/fuzz/skiff.toml` (a folder with no files, so every
//! `source` is missing) and inside a fixture folder holding real component headers, mount
//! folders and a CA file, so that inputs naming them reach the checks past `source`
//! (environment, files, outbound hosts, stores, variables, limits, upstreams). The same text also goes through the operator's
//! runtime-config parser, which shares the error rendering. Besides "never panics", it checks
//! what the errors and the app promise: locations and snippets point into the text, the
//! rendering names file:line:col, `ManifestError::at` shows what the parser shows, and a
//! parsed app is consistent with itself and usable by the runtime (e.g. a timeout that a
//! deadline can be computed from).

#![no_main]

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use skiff_manifest::{App, ManifestError, RoutePattern, RouteTable};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    // The operator's runtime config shares the TOML error rendering.
    let runtime_config = Path::new("/fuzz/runtime.toml");
    if let Err(e) = skiff_manifest::parse_runtime_config(text, runtime_config) {
        check_error(text, runtime_config, &e);
    }
    let outside = check(text, Path::new("/fuzz/skiff.toml"));
    let inside = check(text, &fixture().join("skiff.toml"));
    if let (Ok(app), Err(e)) = (&inside, &outside) {
        check_same_source_error(text, app, e);
    }
});

#[allow(clippy::result_large_err)] // as in skiff-manifest itself
fn check(text: &str, path: &Path) -> Result<App, ManifestError> {
    let parsed = skiff_manifest::parse(text, path);
    match &parsed {
        Ok(app) => check_app(text, app),
        Err(e) => check_error(text, path, e),
    }
    parsed
}

/// The manifest is valid next to its files, and (unless its sources are absolute) fails
/// elsewhere on the first component's missing `source`. That error and the one that
/// `ManifestError::at` builds later for the same component must point at the same place and
/// show the same snippet.
fn check_same_source_error(text: &str, app: &App, e: &ManifestError) {
    // An app of upstreams alone fails elsewhere on a `tls.ca`, not on a source.
    let Some(first) = app.components.first() else {
        return;
    };
    if e.field != format!("component.{}.source", first.id) {
        return;
    }
    assert_eq!(e.location, Some(first.source_location), "{e}");
    if std::fs::write(&app.manifest_path, text).is_err() {
        return;
    }
    let at = ManifestError::at(app, 0, "source", "fuzz", None);
    let _ = std::fs::remove_file(&app.manifest_path);
    assert_eq!(
        at.snippet, e.snippet,
        "`at` shows:\n{at}\nthe parser shows:\n{e}"
    );
}

fn check_error(text: &str, path: &Path, e: &ManifestError) {
    let shown = e.to_string();
    assert!(shown.starts_with("error: "), "{shown}");
    assert_eq!(e.path, path);
    assert_eq!(e.location.is_some(), e.snippet.is_some(), "{shown}");
    if let Some(loc) = e.location {
        check_location(text, loc, e.snippet.as_ref(), &shown);
        let at = format!("{}:{}:{}", path.display(), loc.line, loc.column);
        assert!(shown.contains(&at), "no `{at}` in:\n{shown}");
    }
}

/// The location is inside the text, and the snippet is the line it names.
fn check_location(
    text: &str,
    loc: skiff_manifest::Location,
    snippet: Option<&skiff_manifest::Snippet>,
    shown: &str,
) {
    assert!(loc.line >= 1 && loc.column >= 1, "{loc:?}");
    let line = text
        .split('\n')
        .nth(loc.line - 1)
        .unwrap_or_else(|| panic!("line {} past the end of the text:\n{shown}", loc.line));
    assert!(
        loc.column <= line.chars().count() + 1,
        "column {} past the end of line {:?}:\n{shown}",
        loc.column,
        line
    );
    if let Some(s) = snippet {
        assert_eq!(s.line_text, line.trim_end_matches('\r'), "{shown}");
        let rest = s.line_text.chars().count().saturating_sub(loc.column - 1);
        assert!(
            s.underline >= 1 && s.underline <= rest.max(1),
            "underline {} with {rest} characters left on the line:\n{shown}",
            s.underline
        );
    }
}

fn check_app(text: &str, app: &App) {
    assert!(!app.components.is_empty());
    for (i, c) in app.components.iter().enumerate() {
        assert!(app.components[..i].iter().all(|o| o.id != c.id));
        assert_eq!(app.component(&c.id), Some(c));
        // `source_location` points at the string that names the source.
        let line = text.split('\n').nth(c.source_location.line - 1).unwrap();
        let at: String = line.chars().skip(c.source_location.column - 1).collect();
        assert!(
            at.starts_with(['"', '\'']),
            "{:?} -> {at:?}",
            c.source_location
        );
        for (j, m) in c.files.iter().enumerate() {
            assert!(m.guest.starts_with('/'), "{m:?}");
            assert!(m.guest == "/" || !m.guest.ends_with('/'), "{m:?}");
            assert!(!m.guest.split('/').any(|s| s == ".."), "{m:?}");
            assert!(c.files[..j].iter().all(|o| o.guest != m.guest), "{m:?}");
        }
        assert_ne!(c.limits.memory, Some(0));
        if let Some(t) = c.limits.timeout {
            assert!(t > std::time::Duration::ZERO);
            // The runtime computes each request's deadline as `Instant::now() + timeout`.
            assert!(
                std::time::Instant::now().checked_add(t).is_some(),
                "timeout {t:?} overflows a deadline"
            );
        }
        assert_ne!(c.limits.max_concurrency, Some(0));
        for (j, label) in c.key_value_stores.iter().enumerate() {
            assert!(skiff_manifest::is_store_label(label), "{label:?}");
            assert!(!c.key_value_stores[..j].contains(label), "{label:?}");
        }
        for (name, template) in &c.variables {
            assert!(skiff_manifest::is_variable_name(name), "{name:?}");
            for r in template.references() {
                assert!(app.variables.iter().any(|v| v.name == r), "{r:?}");
            }
        }
        for h in &c.allowed_outbound_hosts {
            // The printed form parses back to the same pattern.
            assert_eq!(h.to_string().parse().as_ref(), Ok(h), "{h}");
        }
        check_error_at(text, app, i);
    }
    for (i, v) in app.variables.iter().enumerate() {
        assert!(skiff_manifest::is_variable_name(&v.name), "{v:?}");
        assert!(!(v.required && v.default.is_some()), "{v:?}");
        assert!(app.variables[..i].iter().all(|o| o.name != v.name), "{v:?}");
    }
    for (i, r) in app.routes.iter().enumerate() {
        match r.target {
            skiff_manifest::RouteTarget::Component(c) => assert!(c < app.components.len()),
            skiff_manifest::RouteTarget::Upstream(u) => assert!(u < app.upstreams.len()),
        }
        assert!(r.middleware.iter().all(|&m| m < app.components.len()));
        // A component is never its own middleware.
        assert!(r.component().is_none_or(|c| !r.middleware.contains(&c)));
        assert_eq!(RoutePattern::parse(&r.as_written).as_ref(), Ok(&r.pattern));
        assert!(app.routes[..i].iter().all(|o| o.pattern != r.pattern));
    }
    let table = RouteTable::new(app);
    assert_eq!(table.len(), app.routes.len());
    for (i, r) in app.routes.iter().enumerate() {
        if let RoutePattern::Exact(p) = &r.pattern {
            let m = table
                .lookup(p)
                .expect("an exact route matches its own path");
            assert_eq!(m.route, i);
        }
    }
}

/// `ManifestError::at` re-reads the manifest from disk to show the component's `source` line.
fn check_error_at(text: &str, app: &App, component: usize) {
    if std::fs::write(&app.manifest_path, text).is_err() {
        return;
    }
    let e = ManifestError::at(app, component, "source", "fuzz", Some("help".to_string()));
    let _ = std::fs::remove_file(&app.manifest_path);
    let shown = e.to_string();
    assert_eq!(e.location, Some(app.components[component].source_location));
    let loc = e.location.unwrap();
    check_location(text, loc, e.snippet.as_ref(), &shown);
    assert!(e.snippet.is_some(), "{shown}");
}

/// A folder with what the seed manifests name: component headers, a core module, a text file
/// and two folders. One per process, since `ManifestError::at` is checked by writing the
/// manifest into it.
fn fixture() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = std::env::temp_dir()
            .join("skiff-fuzz")
            .join(std::process::id().to_string());
        std::fs::create_dir_all(dir.join("static")).unwrap();
        std::fs::create_dir_all(dir.join("data")).unwrap();
        let component = b"\0asm\x0d\x00\x01\x00";
        for name in ["hello.wasm", "api.wasm", "web.wasm", "c.wasm"] {
            std::fs::write(dir.join(name), component).unwrap();
        }
        std::fs::write(dir.join("core.wasm"), b"\0asm\x01\x00\x00\x00").unwrap();
        std::fs::write(dir.join("main.rs"), "fn main() {}\n").unwrap();
        // An upstream's `tls.ca` must be a file; its content is read at load, not here.
        std::fs::write(dir.join("ca.pem"), "-----BEGIN CERTIFICATE-----\n").unwrap();
        dir
    })
}
