//! Fuzzes route parsing and matching: `RoutePattern::parse`, `RoutePattern::match_path` and
//! `RouteTable::lookup`, checked against the documented semantics rather than only for panics.
//!
//! Routes and paths are built from segments that are mostly drawn from a small set (so that
//! routes and paths share prefixes and `...`, `.`, `..`, empty segments, `?` and multibyte
//! text turn up often), with arbitrary strings mixed in. The valid, distinct routes become a
//! real `App` through a generated manifest, since `RouteTable::new` takes one.

#![no_main]

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use skiff_manifest::{App, RoutePattern, RouteTable};

#[derive(Debug, Arbitrary)]
enum Seg {
    A,
    B,
    Api,
    Apiary,
    V1,
    Dots,
    Empty,
    Dot,
    DotDot,
    Unicode,
    Query,
    Raw(String),
}

impl Seg {
    fn text(&self) -> &str {
        match self {
            Seg::A => "a",
            Seg::B => "b",
            Seg::Api => "api",
            Seg::Apiary => "apiary",
            Seg::V1 => "v1",
            Seg::Dots => "...",
            Seg::Empty => "",
            Seg::Dot => ".",
            Seg::DotDot => "..",
            Seg::Unicode => "é€",
            Seg::Query => "x?q=1/2",
            Seg::Raw(s) => s,
        }
    }
}

/// `/seg/seg/...`, with an optional trailing slash, or an arbitrary string.
#[derive(Debug, Arbitrary)]
enum PathIn {
    Segments {
        segs: Vec<Seg>,
        trailing_slash: bool,
    },
    Raw(String),
}

impl PathIn {
    fn render(&self) -> String {
        match self {
            PathIn::Raw(s) => s.clone(),
            PathIn::Segments {
                segs,
                trailing_slash,
            } => {
                let mut out = String::new();
                for s in segs.iter().take(8) {
                    out.push('/');
                    out.push_str(s.text());
                }
                if *trailing_slash || out.is_empty() {
                    out.push('/');
                }
                out
            }
        }
    }
}

#[derive(Debug, Arbitrary)]
struct Input {
    /// Route and the component (0..3) it belongs to.
    routes: Vec<(PathIn, u8)>,
    paths: Vec<PathIn>,
    /// Write each component's routes as one array (`route = [...]`) or, where there is just one,
    /// as a string.
    route_arrays: bool,
}

fuzz_target!(|input: Input| {
    let mut valid: Vec<(String, RoutePattern, usize)> = Vec::new();
    for (route, component) in input.routes.iter().take(12) {
        let written = route.render();
        let Ok(pattern) = RoutePattern::parse(&written) else {
            continue;
        };
        check_pattern(&written, &pattern);
        if valid.iter().all(|(_, p, _)| *p != pattern) {
            valid.push((written, pattern, usize::from(*component % 3)));
        }
    }

    let mut paths: Vec<String> = input.paths.iter().take(12).map(PathIn::render).collect();
    // Every route's own path, and the paths just under and beside it.
    for (_, p, _) in &valid {
        let base = p.path().trim_end_matches('/');
        paths.extend([
            p.path().to_string(),
            format!("{base}/"),
            format!("{base}/x"),
            format!("{base}x"),
        ]);
    }

    for (_, pattern, _) in &valid {
        for path in &paths {
            check_match(pattern, path);
        }
    }

    let app = build_app(&valid, input.route_arrays);
    let table = RouteTable::new(&app);
    assert_eq!(table.len(), valid.len());
    for path in &paths {
        check_lookup(&app, &table, path);
    }
});

/// Normalisation is idempotent and printing round-trips.
fn check_pattern(written: &str, pattern: &RoutePattern) {
    assert_eq!(
        RoutePattern::parse(&pattern.to_string()).as_ref(),
        Ok(pattern),
        "{written:?} -> {pattern:?} does not round-trip"
    );
    let p = pattern.path();
    match pattern {
        RoutePattern::Exact(_) => {
            assert!(p.starts_with('/'), "{written:?} -> {pattern:?}");
            assert!(p == "/" || !p.ends_with('/'), "{written:?} -> {pattern:?}");
        }
        RoutePattern::Prefix(_) => {
            assert!(
                p.is_empty() || p.starts_with('/'),
                "{written:?} -> {pattern:?}"
            );
            assert!(!p.ends_with('/'), "{written:?} -> {pattern:?}");
            assert!(written.ends_with("/..."));
        }
    }
    assert!(
        !p.split('/')
            .any(|s| s == "." || s == ".." || s.contains("..."))
    );
    assert!(!p.contains("//") && !p.contains(['?', '#']));
}

/// `match_path` against the documented semantics.
fn check_match(pattern: &RoutePattern, path: &str) {
    let got = pattern.match_path(path);
    let expected = match pattern {
        // Exactly the path, or the path with one trailing slash.
        RoutePattern::Exact(p) => {
            (path == p || path.strip_suffix('/') == Some(p.as_str())).then_some("")
        }
        // The catch-all matches everything, with the whole path as path info.
        RoutePattern::Prefix(p) if p.is_empty() => Some(path),
        // Segment-wise: the path itself, or anything under `p/`.
        RoutePattern::Prefix(p) => {
            if path == p {
                Some("")
            } else if path.starts_with(&format!("{p}/")) {
                Some(&path[p.len()..])
            } else {
                None
            }
        }
    };
    assert_eq!(got, expected, "{pattern:?} on {path:?}");
}

/// `lookup` picks the most specific matching route, and only a matching one.
fn check_lookup(app: &App, table: &RouteTable, path: &str) {
    let bare = path.split_once('?').map_or(path, |(p, _)| p);
    let best = app
        .routes
        .iter()
        .enumerate()
        .filter_map(|(i, r)| r.pattern.match_path(bare).map(|info| (i, info)))
        .max_by_key(|(i, _)| app.routes[*i].pattern.specificity());
    let got = table.lookup(path);
    match (got, best) {
        (None, None) => {}
        (Some(m), Some((i, info))) => {
            let route = &app.routes[m.route];
            assert_eq!(
                route.pattern.match_path(bare),
                Some(m.path_info),
                "{path:?} got {m:?}, whose pattern does not match"
            );
            assert_eq!(m.target, route.target);
            assert_eq!(m.matched_route, route.as_written);
            // Routes are distinct, so the most specific match is unique.
            assert_eq!(
                m.route, i,
                "{path:?} got {m:?}, but {:?} is more specific",
                app.routes[i]
            );
            assert_eq!(m.path_info, info);
            assert!(bare.ends_with(m.path_info));
        }
        (got, best) => panic!(
            "{path:?}: lookup gave {got:?}, the most specific matching route is {:?}",
            best.map(|(i, _)| &app.routes[i])
        ),
    }
}

/// An app with components `c0`..`c2` serving `routes`; every route is valid and distinct, so
/// the manifest must parse.
fn build_app(routes: &[(String, RoutePattern, usize)], arrays: bool) -> App {
    let mut text = String::from("[app]\nname = \"fuzz\"\n");
    for c in 0..3 {
        text.push_str(&format!("\n[component.c{c}]\nsource = \"c.wasm\"\n"));
        let mine: Vec<&str> = routes
            .iter()
            .filter(|(_, _, owner)| *owner == c)
            .map(|(w, _, _)| w.as_str())
            .collect();
        match mine.as_slice() {
            [] => {}
            [one] if !arrays => text.push_str(&format!("route = {}\n", toml_string(one))),
            many => {
                let items: Vec<String> = many.iter().map(|r| toml_string(r)).collect();
                text.push_str(&format!("route = [{}]\n", items.join(", ")));
            }
        }
    }
    let app = skiff_manifest::parse(&text, &fixture().join("skiff.toml"))
        .unwrap_or_else(|e| panic!("valid routes were rejected:\n{text}\n{e}"));
    // Routes come out in file order: by component, then as listed.
    let mut in_file_order: Vec<&(String, RoutePattern, usize)> = routes.iter().collect();
    in_file_order.sort_by_key(|(_, _, owner)| *owner);
    assert_eq!(app.routes.len(), routes.len());
    for (r, (written, pattern, owner)) in app.routes.iter().zip(in_file_order) {
        let owner_id = format!("c{owner}");
        let component = r.component().expect("every route here is a component's");
        assert_eq!(app.components[component].id, owner_id);
        assert_eq!(&r.as_written, written);
        assert_eq!(&r.pattern, pattern);
    }
    app
}

fn toml_string(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => out.push_str(&format!("\\u{:04X}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// A folder holding `c.wasm`, a component header, for the generated manifests to name.
fn fixture() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = std::env::temp_dir()
            .join("skiff-fuzz")
            .join(format!("router-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("c.wasm"), b"\0asm\x0d\x00\x01\x00").unwrap();
        dir
    })
}
