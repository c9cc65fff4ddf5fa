use std::path::PathBuf;
use std::time::Duration;

use tempfile::TempDir;

use super::*;

const COMPONENT_HEADER: [u8; 8] = [0, b'a', b's', b'm', 0x0d, 0, 1, 0];
const CORE_HEADER: [u8; 8] = [0, b'a', b's', b'm', 1, 0, 0, 0];

/// A temp app folder with a fake component, a core module, a non-wasm file and two folders.
struct Fixture {
    dir: TempDir,
}

impl Fixture {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path();
        std::fs::write(p.join("hello.wasm"), COMPONENT_HEADER).unwrap();
        std::fs::write(p.join("api.wasm"), COMPONENT_HEADER).unwrap();
        std::fs::write(p.join("core.wasm"), CORE_HEADER).unwrap();
        std::fs::write(p.join("main.rs"), "fn main() {}\n").unwrap();
        std::fs::create_dir(p.join("static")).unwrap();
        std::fs::create_dir(p.join("data")).unwrap();
        Fixture { dir }
    }

    fn manifest(&self) -> PathBuf {
        self.dir.path().join("skiff.toml")
    }

    fn parse(&self, text: &str) -> Result<App, ManifestError> {
        parse(text, &self.manifest())
    }

    fn ok(&self, text: &str) -> App {
        self.parse(text).unwrap_or_else(|e| panic!("{e}"))
    }

    /// Parses `text` expecting an error on `field` at `line`, and checks that the rendered
    /// message names the field and the line.
    fn err(&self, text: &str, field: &str, line: usize) -> ManifestError {
        let e = self.parse(text).expect_err("expected an error");
        let shown = e.to_string();
        assert_eq!(e.field, field, "wrong field in:\n{shown}");
        assert_eq!(
            e.location.map(|l| l.line),
            Some(line),
            "wrong line in:\n{shown}"
        );
        // Unknown fields are worded "unknown field `x` in component `y`", which names the
        // same field without the dotted path.
        let leaf = field.rsplit('.').next().unwrap_or(field);
        assert!(
            shown.contains(field)
                || (e.message.starts_with("unknown field") && shown.contains(&format!("`{leaf}`"))),
            "message does not name `{field}`:\n{shown}"
        );
        assert!(
            shown.contains(&format!("skiff.toml:{line}:")),
            "no location line in:\n{shown}"
        );
        e
    }
}

fn help(e: &ManifestError) -> &str {
    e.help.as_deref().unwrap_or_default()
}

const APP: &str = "[app]\nname = \"hello\"\n\n";

// --- happy path ---------------------------------------------------------------------------

#[test]
fn full_example_parses() {
    let f = Fixture::new();
    let text = r#"[app]
name = "hello"
version = "0.1.0"
description = "Says hello"

[component.hello]
source = "hello.wasm"
route = "/hello"
environment = { GREETING = "hi", _B = "2" }
files = [
  "static",
  { source = "data", destination = "/data", writable = true },
]
allowed_outbound_hosts = ["https://api.example.com", "http://*.internal:8080", "*://localhost:*"]

[component.hello.limits]
memory = "64MiB"
timeout = "5s"

[component.api]
source = "api.wasm"
route = ["/api/...", "/..."]
"#;
    let app = f.ok(text);
    assert_eq!(app.name, "hello");
    assert_eq!(app.version, "0.1.0");
    assert_eq!(app.description.as_deref(), Some("Says hello"));
    assert_eq!(app.base_dir, f.dir.path());
    assert_eq!(app.manifest_path, f.manifest());
    assert_eq!(app.components.len(), 2);

    let hello = &app.components[0];
    assert_eq!(hello.id, "hello");
    assert_eq!(hello.source, f.dir.path().join("hello.wasm"));
    assert_eq!(
        hello.source_location,
        Location {
            line: 7,
            column: 10
        }
    );
    assert_eq!(
        hello.environment,
        vec![
            ("GREETING".to_string(), "hi".to_string()),
            ("_B".to_string(), "2".to_string())
        ]
    );
    assert_eq!(
        hello.files,
        vec![
            FileMount {
                host: f.dir.path().join("static"),
                guest: "/static".into(),
                writable: false
            },
            FileMount {
                host: f.dir.path().join("data"),
                guest: "/data".into(),
                writable: true
            },
        ]
    );
    let hosts: Vec<String> = hello
        .allowed_outbound_hosts
        .iter()
        .map(|h| h.to_string())
        .collect();
    assert_eq!(
        hosts,
        [
            "https://api.example.com",
            "http://*.internal:8080",
            "*://localhost:*"
        ]
    );
    assert_eq!(hello.limits.memory, Some(64 << 20));
    assert_eq!(hello.limits.timeout, Some(Duration::from_secs(5)));

    assert_eq!(app.components[1].id, "api");
    assert_eq!(app.components[1].limits, Limits::default());
    let routes: Vec<(&str, usize)> = app
        .routes
        .iter()
        .map(|r| (r.as_written.as_str(), r.component().unwrap()))
        .collect();
    assert_eq!(routes, [("/hello", 0), ("/api/...", 1), ("/...", 1)]);
    assert_eq!(app.routes[1].pattern, RoutePattern::Prefix("/api".into()));
    assert_eq!(app.routes[2].pattern, RoutePattern::Prefix("".into()));
}

#[test]
fn defaults_and_components_in_file_order() {
    let f = Fixture::new();
    let app = f.ok(&format!(
        "{APP}[component.zed]\nsource = \"hello.wasm\"\n[component.alpha]\nsource = \"api.wasm\"\nroute = \"/a\"\n"
    ));
    assert_eq!(app.version, "0.0.0");
    assert_eq!(app.description, None);
    let ids: Vec<&str> = app.components.iter().map(|c| c.id.as_str()).collect();
    assert_eq!(ids, ["zed", "alpha"]);
    assert!(app.components[0].environment.is_empty());
    assert_eq!(app.routes[0].component(), Some(1));
    assert!(app.component("alpha").is_some());
}

#[test]
fn load_reads_the_file() {
    let f = Fixture::new();
    std::fs::write(
        f.manifest(),
        format!("{APP}[component.hello]\nsource = \"hello.wasm\"\n"),
    )
    .unwrap();
    let app = load(&f.manifest()).unwrap();
    assert_eq!(app.components[0].source, f.dir.path().join("hello.wasm"));
}

#[test]
fn load_missing_manifest() {
    let f = Fixture::new();
    let e = load(&f.manifest()).unwrap_err();
    assert!(e.to_string().contains("cannot read manifest"), "{e}");
}

#[test]
fn environment_keeps_file_order() {
    let f = Fixture::new();
    let app = f.ok(&format!(
        "{APP}[component.hello]\nsource = \"hello.wasm\"\n[component.hello.environment]\nZ = \"1\"\nA = \"2\"\n"
    ));
    let keys: Vec<&str> = app.components[0]
        .environment
        .iter()
        .map(|(k, _)| k.as_str())
        .collect();
    assert_eq!(keys, ["Z", "A"]);
}

#[test]
fn memory_as_integer_and_units() {
    let f = Fixture::new();
    for (value, bytes) in [
        ("1048576", 1 << 20),
        ("\"1KB\"", 1000),
        ("\"2 GiB\"", 2 << 30),
    ] {
        let app = f.ok(&format!(
            "{APP}[component.hello]\nsource = \"hello.wasm\"\nlimits = {{ memory = {value}, timeout = \"250ms\" }}\n"
        ));
        assert_eq!(app.components[0].limits.memory, Some(bytes));
        assert_eq!(
            app.components[0].limits.timeout,
            Some(Duration::from_millis(250))
        );
    }
}

// --- rendering ----------------------------------------------------------------------------

#[test]
fn unknown_field_renders_like_a_compiler() {
    let f = Fixture::new();
    let text = "[app]\nname = \"hello\"\n\n[component.hello]\nroute = \"/hello\"\n\nsorce = \"hello.wasm\"\n";
    let e = f.err(text, "component.hello.sorce", 7);
    let expected = format!(
        "error: unknown field `sorce` in component `hello`
  --> {}:7:1
   |
 7 | sorce = \"hello.wasm\"
   | ^^^^^
   = help: did you mean `source`?
           valid fields are: source, route, middleware, environment, files, allowed_outbound_hosts, key_value_stores, variables, limits, schedule, publish, consume, build",
        f.manifest().display()
    );
    assert_eq!(e.to_string(), expected);
}

#[test]
fn error_at_points_at_component_source() {
    let f = Fixture::new();
    let text = format!("{APP}[component.hello]\nsource   =   \"hello.wasm\"\n");
    std::fs::write(f.manifest(), &text).unwrap();
    let app = load(&f.manifest()).unwrap();
    let e = ManifestError::at(
        &app,
        0,
        "source",
        "not a valid component",
        Some("rebuild it".to_string()),
    );
    assert_eq!(e.field, "component.hello.source");
    assert_eq!(
        e.location,
        Some(Location {
            line: 5,
            column: 14
        })
    );
    let shown = e.to_string();
    assert!(
        shown.contains("`component.hello.source`: not a valid component"),
        "{shown}"
    );
    assert!(
        shown.contains(" 5 | source   =   \"hello.wasm\"\n   |              ^^^^^^^^^^^^"),
        "{shown}"
    );
    assert!(shown.contains("= help: rebuild it"), "{shown}");
    // An out-of-range index must not panic.
    let e = ManifestError::at(&app, 9, "source", "x", None);
    assert_eq!(e.location, None);
}

// --- one test per error kind --------------------------------------------------------------

#[test]
fn toml_syntax_error() {
    let f = Fixture::new();
    let e = f.err(
        &format!("{APP}[component.hello]\nsource = hello.wasm\n"),
        "component.hello",
        5,
    );
    assert!(e.message.contains("invalid TOML"), "{e}");
}

#[test]
fn unknown_field_at_top_level_and_in_app() {
    let f = Fixture::new();
    let e = f.err("[app]\nname = \"x\"\nnmae = \"y\"\n", "app.nmae", 3);
    assert!(help(&e).contains("name, version, description"), "{e}");
    let e = f.err(
        "[app]\nname = \"x\"\n[components.hello]\nsource = \"a\"\n",
        "components",
        3,
    );
    assert!(help(&e).contains("did you mean `component`?"), "{e}");
}

#[test]
fn unknown_field_in_limits_and_files() {
    let f = Fixture::new();
    let base = format!("{APP}[component.hello]\nsource = \"hello.wasm\"\n");
    let e = f.err(
        &format!("{base}[component.hello.limits]\nmemroy = \"1MiB\"\n"),
        "component.hello.limits.memroy",
        7,
    );
    assert!(help(&e).contains("memory, timeout"), "{e}");
    let e = f.err(
        &format!("{base}files = [\n  {{ source = \"data\", dest = \"/d\" }},\n]\n"),
        "component.hello.files[0].dest",
        7,
    );
    assert!(help(&e).contains("source, destination, writable"), "{e}");
    assert_eq!(e.location.unwrap().column, 22);
}

#[test]
fn wrong_type_names_field_and_example() {
    let f = Fixture::new();
    let e = f.err(
        &format!(
            "{APP}[component.hello]\nsource = \"hello.wasm\"\nenvironment = {{ PORT = 8080 }}\n"
        ),
        "component.hello.environment.PORT",
        6,
    );
    assert!(help(&e).contains("quote numbers"), "{e}");
    let e = f.err(
        &format!("{APP}[component.hello]\nsource = 5\n"),
        "component.hello.source",
        5,
    );
    assert!(help(&e).contains("source = \"hello.wasm\""), "{e}");
}

#[test]
fn missing_app_table() {
    let f = Fixture::new();
    let e = f
        .parse("[component.hello]\nsource = \"hello.wasm\"\n")
        .unwrap_err();
    assert_eq!(e.field, "app");
    assert_eq!(e.location, None);
    assert!(e.to_string().contains("`[app]`"), "{e}");
}

#[test]
fn missing_app_name() {
    let f = Fixture::new();
    let e = f.err(
        "\n[app]\nversion = \"1\"\n[component.hello]\nsource = \"hello.wasm\"\n",
        "app.name",
        2,
    );
    assert!(help(&e).contains("name = "), "{e}");
}

#[test]
fn bad_app_name_and_component_id() {
    let f = Fixture::new();
    let e = f.err(
        "[app]\nname = \"Hello_World\"\n[component.hello]\nsource = \"hello.wasm\"\n",
        "app.name",
        2,
    );
    assert!(help(&e).contains("\"hello-world\""), "{e}");
    f.err(
        &format!("{APP}[component.1st]\nsource = \"hello.wasm\"\n"),
        "component.1st",
        4,
    );
    let long = "a".repeat(64);
    f.err(
        &format!("[app]\nname = \"{long}\"\n[component.hello]\nsource = \"hello.wasm\"\n"),
        "app.name",
        2,
    );
}

#[test]
fn no_components() {
    let f = Fixture::new();
    let e = f.err(APP, "component", 1);
    assert!(help(&e).contains("[component.hello]"), "{e}");
}

#[test]
fn missing_source() {
    let f = Fixture::new();
    let e = f.err(
        &format!("{APP}[component.hello]\nroute = \"/\"\n"),
        "component.hello.source",
        4,
    );
    assert!(e.message.contains("has no `source`"), "{e}");
}

#[test]
fn source_does_not_exist() {
    let f = Fixture::new();
    let e = f.err(
        &format!("{APP}[component.hello]\nsource = \"target/missing.wasm\"\n"),
        "component.hello.source",
        5,
    );
    assert!(
        help(&e).contains("cargo build --target wasm32-wasip2 --release"),
        "{e}"
    );
    assert!(help(&e).contains("fix the path"), "{e}");
}

#[test]
fn source_is_not_wasm() {
    let f = Fixture::new();
    let e = f.err(
        &format!("{APP}[component.hello]\nsource = \"main.rs\"\n"),
        "component.hello.source",
        5,
    );
    assert!(e.message.contains("not a WebAssembly file"), "{e}");
    // A directory is not a Wasm file either.
    f.err(
        &format!("{APP}[component.hello]\nsource = \"static\"\n"),
        "component.hello.source",
        5,
    );
}

#[test]
fn source_is_a_core_module() {
    let f = Fixture::new();
    let e = f.err(
        &format!("{APP}[component.hello]\nsource = \"core.wasm\"\n"),
        "component.hello.source",
        5,
    );
    assert!(e.message.contains("core WebAssembly module"), "{e}");
    assert!(help(&e).contains("wasm32-wasip2"), "{e}");
    assert!(help(&e).contains("wasm-tools component new"), "{e}");
}

#[test]
fn route_collision_across_components() {
    let f = Fixture::new();
    let text = format!(
        "{APP}[component.hello]\nsource = \"hello.wasm\"\nroute = \"/hello\"\n\n[component.api]\nsource = \"api.wasm\"\nroute = [\"/api/...\", \"/hello/\"]\n"
    );
    let e = f.err(&text, "component.api.route[1]", 10);
    assert!(e.message.contains("component `hello`"), "{e}");
    assert!(e.message.contains("component `api`"), "{e}");
    assert!(e.message.contains("line 6"), "{e}");
}

#[test]
fn route_collision_within_component() {
    let f = Fixture::new();
    let e = f.err(
        &format!(
            "{APP}[component.hello]\nsource = \"hello.wasm\"\nroute = [\"/a/...\",\n  \"/a/...\"]\n"
        ),
        "component.hello.route[1]",
        7,
    );
    assert!(e.message.contains("same component"), "{e}");
}

#[test]
fn malformed_route() {
    let f = Fixture::new();
    let base = format!("{APP}[component.hello]\nsource = \"hello.wasm\"\n");
    let e = f.err(
        &format!("{base}route = \"hello\"\n"),
        "component.hello.route",
        6,
    );
    assert!(help(&e).contains("\"/hello\""), "{e}");
    f.err(
        &format!("{base}route = [\"/ok\", \"/a/.../b\"]\n"),
        "component.hello.route[1]",
        6,
    );
    f.err(
        &format!("{base}route = \"/a?b=1\"\n"),
        "component.hello.route",
        6,
    );
}

#[test]
fn malformed_host_pattern() {
    let f = Fixture::new();
    let e = f.err(
        &format!(
            "{APP}[component.hello]\nsource = \"hello.wasm\"\nallowed_outbound_hosts = [\n  \"https://ok.example.com\",\n  \"https://api.example.com/v1\",\n]\n"
        ),
        "component.hello.allowed_outbound_hosts[1]",
        8,
    );
    assert!(e.message.contains("https://api.example.com/v1"), "{e}");
    assert!(help(&e).contains("\"https://api.example.com\""), "{e}");
}

#[test]
fn bad_env_var_name() {
    let f = Fixture::new();
    let e = f.err(
        &format!("{APP}[component.hello]\nsource = \"hello.wasm\"\nenvironment = {{ OK = \"1\", \"my-var\" = \"2\" }}\n"),
        "component.hello.environment.my-var",
        6,
    );
    assert!(help(&e).contains("MY_VAR"), "{e}");
    assert_eq!(e.location.unwrap().column, 27);
    f.err(
        &format!("{APP}[component.hello]\nsource = \"hello.wasm\"\n[component.hello.environment]\n1X = \"1\"\n"),
        "component.hello.environment.1X",
        7,
    );
}

#[test]
fn bad_memory() {
    let f = Fixture::new();
    let base =
        format!("{APP}[component.hello]\nsource = \"hello.wasm\"\n[component.hello.limits]\n");
    for value in ["\"64XB\"", "\"lots\"", "0", "-5", "\"0MiB\""] {
        let e = f.err(
            &format!("{base}memory = {value}\n"),
            "component.hello.limits.memory",
            7,
        );
        assert!(help(&e).contains("MiB"), "{e}");
    }
    // Wrong type entirely.
    f.err(
        &format!("{base}memory = true\n"),
        "component.hello.limits.memory",
        7,
    );
}

#[test]
fn bad_timeout() {
    let f = Fixture::new();
    let base =
        format!("{APP}[component.hello]\nsource = \"hello.wasm\"\n[component.hello.limits]\n");
    for value in ["\"5\"", "\"soon\"", "\"0s\""] {
        let e = f.err(
            &format!("{base}timeout = {value}\n"),
            "component.hello.limits.timeout",
            7,
        );
        assert!(help(&e).contains("\"5s\""), "{e}");
    }
    let e = f.err(
        &format!("{base}timeout = 5\n"),
        "component.hello.limits.timeout",
        7,
    );
    assert!(help(&e).contains("\"5s\""), "{e}");
}

#[test]
fn files_host_path_missing() {
    let f = Fixture::new();
    let base = format!("{APP}[component.hello]\nsource = \"hello.wasm\"\n");
    let e = f.err(
        &format!("{base}files = [\"nope\"]\n"),
        "component.hello.files[0]",
        6,
    );
    assert!(e.message.contains("does not exist"), "{e}");
    f.err(
        &format!("{base}files = [\n  {{ source = \"gone\", destination = \"/g\" }},\n]\n"),
        "component.hello.files[0].source",
        7,
    );
    f.err(
        &format!("{base}files = [{{ destination = \"/g\" }}]\n"),
        "component.hello.files[0].source",
        6,
    );
}

#[test]
fn files_guest_path_invalid() {
    let f = Fixture::new();
    let base = format!("{APP}[component.hello]\nsource = \"hello.wasm\"\n");
    let e = f.err(
        &format!("{base}files = [{{ source = \"data\", destination = \"data\" }}]\n"),
        "component.hello.files[0].destination",
        6,
    );
    assert!(help(&e).contains("\"/data\""), "{e}");
    f.err(
        &format!("{base}files = [{{ source = \"data\", destination = \"/x/../etc\" }}]\n"),
        "component.hello.files[0].destination",
        6,
    );
    f.err(
        &format!("{base}files = [\"static\", \"../outside\"]\n"),
        "component.hello.files[1]",
        6,
    );
    f.err(
        &format!("{base}files = [{{ source = \"data\" }}]\n"),
        "component.hello.files[0].destination",
        6,
    );
    f.err(
        &format!(
            "{base}files = [\"static\", {{ source = \"data\", destination = \"/static/\" }}]\n"
        ),
        "component.hello.files[1].source",
        6,
    );
}

#[test]
fn first_error_wins() {
    let f = Fixture::new();
    let text = format!(
        "{APP}[component.one]\nsource = \"missing.wasm\"\n[component.two]\nsource = \"core.wasm\"\n"
    );
    f.err(&text, "component.one.source", 5);
}

// --- routes -------------------------------------------------------------------------------

#[test]
fn route_parsing_and_normalisation() {
    use RoutePattern::*;
    assert_eq!(RoutePattern::parse("/hello/"), Ok(Exact("/hello".into())));
    assert_eq!(RoutePattern::parse("/"), Ok(Exact("/".into())));
    assert_eq!(RoutePattern::parse("/..."), Ok(Prefix("".into())));
    assert_eq!(RoutePattern::parse("/api/..."), Ok(Prefix("/api".into())));
    for bad in [
        "", "api", "/a#b", "/a...", "/.../a", "/a//b", "/a/../b", "/a b",
    ] {
        assert!(RoutePattern::parse(bad).is_err(), "{bad:?} should fail");
    }
    assert_eq!(Prefix("/api".into()).to_string(), "/api/...");
}

#[test]
fn route_specificity_orders_exact_then_longest_prefix() {
    let mut v: Vec<RoutePattern> = ["/...", "/api/v1/...", "/x", "/api/..."]
        .iter()
        .map(|r| RoutePattern::parse(r).unwrap())
        .collect();
    v.sort();
    v.reverse();
    let shown: Vec<String> = v.iter().map(|r| r.to_string()).collect();
    assert_eq!(shown, ["/x", "/api/v1/...", "/api/...", "/..."]);
}

#[test]
fn route_pattern_match_path() {
    let p = RoutePattern::parse("/api/...").unwrap();
    assert_eq!(p.match_path("/api"), Some(""));
    assert_eq!(p.match_path("/api/users/1"), Some("/users/1"));
    assert_eq!(p.match_path("/apiary"), None);
    let e = RoutePattern::parse("/hello").unwrap();
    assert_eq!(e.match_path("/hello/"), Some(""));
    assert_eq!(e.match_path("/hello/x"), None);
}

fn table_app(f: &Fixture) -> App {
    f.ok(&format!(
        "{APP}[component.hello]\nsource = \"hello.wasm\"\nroute = [\"/hello\", \"/\"]\n\n[component.api]\nsource = \"api.wasm\"\nroute = [\"/api/...\", \"/api/v1/...\", \"/api/exact\"]\n\n[component.fallback]\nsource = \"api.wasm\"\nroute = \"/...\"\n"
    ))
}

#[test]
fn route_table_lookup() {
    let f = Fixture::new();
    let app = table_app(&f);
    let t = RouteTable::new(&app);
    let m = |p: &'static str| {
        t.lookup(p).map(|m| {
            (
                m.matched_route.to_string(),
                match m.target {
                    RouteTarget::Component(c) => c,
                    RouteTarget::Upstream(_) => usize::MAX,
                },
                m.path_info,
            )
        })
    };

    assert_eq!(m("/hello"), Some(("/hello".to_string(), 0, "")));
    assert_eq!(m("/hello/"), Some(("/hello".to_string(), 0, "")));
    assert_eq!(m("/"), Some(("/".to_string(), 0, "")));
    assert_eq!(m("/api"), Some(("/api/...".to_string(), 1, "")));
    assert_eq!(m("/api/"), Some(("/api/...".to_string(), 1, "/")));
    assert_eq!(
        m("/api/users/1"),
        Some(("/api/...".to_string(), 1, "/users/1"))
    );
    assert_eq!(
        m("/api/v1/x?q=1"),
        Some(("/api/v1/...".to_string(), 1, "/x"))
    );
    assert_eq!(m("/api/exact"), Some(("/api/exact".to_string(), 1, "")));
    assert_eq!(m("/apiary"), Some(("/...".to_string(), 2, "/apiary")));
    assert_eq!(
        m("/hello/world"),
        Some(("/...".to_string(), 2, "/hello/world"))
    );
    let r = t.lookup("/api/v1").unwrap();
    assert_eq!(app.routes[r.route].as_written, "/api/v1/...");
}

#[test]
fn route_table_without_catch_all() {
    let f = Fixture::new();
    let app = f.ok(&format!(
        "{APP}[component.hello]\nsource = \"hello.wasm\"\nroute = [\"/api/...\", \"/x\"]\n[component.api]\nsource = \"api.wasm\"\n"
    ));
    let t = RouteTable::new(&app);
    assert!(t.lookup("/").is_none());
    assert!(t.lookup("/apiary").is_none());
    assert!(t.lookup("/x/y").is_none());
    assert_eq!(t.lookup("/api/a").unwrap().path_info, "/a");
}

// --- host patterns ------------------------------------------------------------------------

#[test]
fn host_pattern_matching() {
    let p = |s: &str| HostPattern::parse(s).unwrap_or_else(|e| panic!("{s}: {e:?}"));

    let h = p("https://api.example.com");
    assert!(h.matches("https", "API.Example.com", 443));
    assert!(!h.matches("http", "api.example.com", 443));
    assert!(!h.matches("https", "api.example.com", 8443));
    assert!(!h.matches("https", "x.api.example.com", 443));
    assert_eq!(h.port(), PortPattern::Port(443));

    let h = p("http://*.internal:8080");
    assert!(h.matches("http", "db.internal", 8080));
    assert!(h.matches("HTTP", "a.b.INTERNAL", 8080));
    assert!(!h.matches("http", "internal", 8080));
    assert!(!h.matches("http", "xinternal", 8080));

    let h = p("*://localhost:*");
    assert!(h.matches("https", "localhost", 1));
    assert!(h.matches("http", "localhost", 65535));

    let h = p("http://[::1]:3000");
    assert!(h.matches("http", "[::1]", 3000));
    assert!(h.matches("http", "::1", 3000));
    assert_eq!(h.to_string(), "http://[::1]:3000");

    let h = p("http://10.0.0.1");
    assert!(h.matches("http", "10.0.0.1", 80));
    assert!(!h.matches("http", "10.0.0.2", 80));

    let h = p("https://*");
    assert!(h.matches("https", "anything.at.all", 443));
    assert_eq!(h.to_string(), "https://*");
}

#[test]
fn host_pattern_rejections_name_the_pattern_and_show_an_example() {
    for bad in [
        "api.example.com",
        "ftp://example.com",
        "https://example.com/path",
        "https://example.com?q",
        "https://user@example.com",
        "https://",
        "https://:80",
        "https://example.com:0",
        "https://example.com:99999",
        "https://example.com:",
        "*://example.com",
        "http://::1",
        "http://[::1",
        "http://[nope]",
        "http://a*b.com",
        "http://bad_.-x.com",
        "http://999.1.1.1",
    ] {
        let e = HostPattern::parse(bad).expect_err(bad);
        assert!(e.message.contains(bad), "{bad}: {e:?}");
        assert!(e.help.contains("://"), "{bad}: help has no example: {e:?}");
    }
    let e = HostPattern::parse("*://example.com").unwrap_err();
    assert!(e.help.contains(":*"), "{e:?}");
}

#[test]
#[ignore = "prints sample errors; run with --ignored --nocapture"]
fn show_samples() {
    let f = Fixture::new();
    let base = format!("{APP}[component.hello]\nsource = \"hello.wasm\"\n");
    for text in [
        format!("{APP}[component.hello]\nsource = hello.wasm\n"),
        format!("{APP}[component.hello]\nsource = \"core.wasm\"\n"),
        format!("{APP}[component.hello]\nsource = \"nope.wasm\"\n"),
        format!("{base}route = [\"/a\", \"/a/\"]\n"),
        format!("{base}allowed_outbound_hosts = [\"*://example.com\"]\n"),
        format!("{base}environment = {{ PORT = 8080 }}\n"),
        format!("{base}limits = {{ timeout = \"5 parsecs\" }}\n"),
        "[app]\nname = \"x\"\n".to_string(),
        "[[component]]\nsource = \"x\"\n".to_string(),
        with_upstream(
            "url = \"https://orders:8443/v1\"\nroute = \"/orders/...\"\ntls = { ca = \"x.pem\" }\n",
        ),
        with_upstream("url = \"http://orders\"\nroute = [\"/login\"]\n"),
        with_upstream("url = \"http://orders\"\nroute = \"/o\"\nmiddleware = [\"auht\"]\n"),
        with_upstream("url = \"http://orders\"\n"),
        with_upstream("route = \"/o\"\n"),
        with_upstream(
            "url = \"http://o\"\nroute = \"/o\"\nhealth_check = { path = \"/h\", timeout = \"9s\" }\n",
        ),
        format!("{base}middleware = [\"hello\"]\n"),
        format!("{base}allowed_outbound_hosts = [\"http://helo.skiff.internal\"]\n"),
    ] {
        println!("{}\n", f.parse(&text).unwrap_err());
    }
}

/// A FIFO at `path`: opening it for reading waits for a writer that never comes.
fn make_fifo(path: &std::path::Path) {
    let made = std::process::Command::new("mkfifo").arg(path).status();
    assert!(made.unwrap().success(), "mkfifo {}", path.display());
}

#[test]
fn a_source_that_is_a_fifo_or_a_device_is_refused_without_waiting() {
    let f = Fixture::new();
    let fifo = f.dir.path().join("pipe.wasm");
    make_fifo(&fifo);
    for source in [fifo.to_str().unwrap(), "/dev/zero", "/dev/null"] {
        let text = format!("{APP}[component.hello]\nsource = \"{source}\"\n");
        let manifest = f.manifest();
        // Opening a FIFO with no writer blocks: the check must not open it.
        let (done, result) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = done.send(
                parse(&text, &manifest)
                    .map(|_| ())
                    .map_err(|e| e.to_string()),
            );
        });
        let result = result
            .recv_timeout(std::time::Duration::from_secs(10))
            .unwrap_or_else(|_| panic!("checking `{source}` did not end"));
        let e = result.expect_err(source);
        assert!(e.contains("is not a regular file"), "{source}: {e}");
    }
}

#[test]
fn a_bundles_manifest_names_nothing_outside_its_folder_and_looks_at_nothing_there() {
    let f = Fixture::new();
    let inner = f.dir.path().join("app");
    std::fs::create_dir(&inner).unwrap();
    std::fs::write(inner.join("web.wasm"), COMPONENT_HEADER).unwrap();
    std::fs::create_dir(inner.join("static")).unwrap();
    std::fs::write(inner.join("ca.pem"), "pem\n").unwrap();
    let fifo = f.dir.path().join("pipe");
    make_fifo(&fifo);
    let manifest = inner.join("skiff.toml");
    let load = |body: &str| {
        std::fs::write(&manifest, format!("{APP}{body}")).unwrap();
        load_in_bundle(&manifest)
    };
    let component = |source: &str, more: &str| {
        format!("[component.web]\nsource = \"{source}\"\nroute = \"/...\"\n{more}")
    };
    // Inside: as `load` has it.
    let app = load(&component(
        "./static/../web.wasm",
        "files = [\"static\"]\n[upstream.u]\nurl = \"https://u\"\nroute = \"/u/...\"\ntls = { ca = \"ca.pem\" }\n",
    ))
    .unwrap();
    assert_eq!(app.components.len(), 1);
    // Outside, whether or not the file exists, a FIFO included (which must not be opened):
    // the same words, which tell nothing of the server's files.
    let outside = [
        (fifo.to_str().unwrap().to_string(), "it is absolute"),
        ("/etc/hostname".into(), "it is absolute"),
        ("/no/such/file".into(), "it is absolute"),
        (
            "../hello.wasm".into(),
            "its `..` lead out of the app's folder",
        ),
        (
            "static/../../pipe".into(),
            "its `..` lead out of the app's folder",
        ),
    ];
    for (path, why) in &outside {
        let e = load(&component(path, "")).unwrap_err();
        assert_eq!(e.field, "component.web.source", "{e}");
        assert_eq!(
            e.message,
            format!("`component.web.source`: `{path}` lies outside the app's folder: {why}")
        );
        assert!(
            help(&e).contains("reaches only the files in its bundle"),
            "{e}"
        );
        let e = load(&component(
            "web.wasm",
            &format!("files = [{{ source = \"{path}\", destination = \"/x\" }}]\n"),
        ))
        .unwrap_err();
        assert_eq!(e.field, "component.web.files[0].source", "{e}");
        assert!(e.message.contains("lies outside the app's folder"), "{e}");
        let e = load(&format!(
            "[upstream.u]\nurl = \"https://u\"\nroute = \"/u/...\"\ntls = {{ ca = \"{path}\" }}\n"
        ))
        .unwrap_err();
        assert_eq!(e.field, "upstream.u.tls.ca", "{e}");
        assert!(e.message.contains("lies outside the app's folder"), "{e}");
    }
    // `load`, for a user's own folder, follows them.
    std::fs::write(
        &manifest,
        format!("{APP}{}", component("../hello.wasm", "")),
    )
    .unwrap();
    super::load(&manifest).unwrap();
}

#[test]
fn max_concurrency_must_be_positive() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("c.wasm"), b"\0asm\x0d\x00\x01\x00").unwrap();
    let manifest = "[app]\nname = \"x\"\n\n[component.c]\nsource = \"c.wasm\"\nlimits = { max_concurrency = 0 }\n";
    let err = parse(manifest, &dir.path().join("skiff.toml")).unwrap_err();
    assert_eq!(err.field, "component.c.limits.max_concurrency");
    assert_eq!(err.location.map(|l| l.line), Some(6));

    let manifest = manifest.replace("= 0", "= 7");
    let app = parse(&manifest, &dir.path().join("skiff.toml")).unwrap();
    assert_eq!(app.components[0].limits.max_concurrency, Some(7));
}

#[test]
fn requests_per_instance_must_be_positive() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("c.wasm"), b"\0asm\x0d\x00\x01\x00").unwrap();
    let manifest = "[app]\nname = \"x\"\n\n[component.c]\nsource = \"c.wasm\"\nlimits = { requests_per_instance = 0 }\n";
    let err = parse(manifest, &dir.path().join("skiff.toml")).unwrap_err();
    assert_eq!(err.field, "component.c.limits.requests_per_instance");
    assert_eq!(err.location.map(|l| l.line), Some(6));
    assert!(
        err.help
            .as_deref()
            .unwrap()
            .contains("requests_per_instance = 100")
    );

    let err = parse(
        &manifest.replace("= 0", "= -1"),
        &dir.path().join("skiff.toml"),
    )
    .unwrap_err();
    assert_eq!(err.field, "component.c.limits.requests_per_instance");

    let app = parse(
        &manifest.replace("= 0", "= 100"),
        &dir.path().join("skiff.toml"),
    )
    .unwrap();
    assert_eq!(app.components[0].limits.requests_per_instance, Some(100));
    // Unset: a fresh instance per request.
    let app = parse(
        &manifest.replace("limits = { requests_per_instance = 0 }\n", ""),
        &dir.path().join("skiff.toml"),
    )
    .unwrap();
    assert_eq!(app.components[0].limits.requests_per_instance, None);
}

#[test]
fn fuel_must_be_a_positive_number() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("c.wasm"), b"\0asm\x0d\x00\x01\x00").unwrap();
    let manifest =
        "[app]\nname = \"x\"\n\n[component.c]\nsource = \"c.wasm\"\nlimits = { fuel = 0 }\n";
    let err = parse(manifest, &dir.path().join("skiff.toml")).unwrap_err();
    assert_eq!(err.field, "component.c.limits.fuel");
    assert_eq!(err.location.map(|l| l.line), Some(6));

    let err = parse(
        &manifest.replace("= 0", "= \"lots\""),
        &dir.path().join("skiff.toml"),
    )
    .unwrap_err();
    assert_eq!(err.field, "component.c.limits.fuel");

    let manifest = manifest.replace("= 0", "= 5_000_000_000");
    let app = parse(&manifest, &dir.path().join("skiff.toml")).unwrap();
    assert_eq!(app.components[0].limits.fuel, Some(5_000_000_000));
}

// --- variables and stores -------------------------------------------------------------------

#[test]
fn variables_and_stores_parse() {
    let f = Fixture::new();
    let app = f.ok(r#"[app]
name = "state"

[variables]
api_token = { required = true, secret = true }
greeting = { default = "hello" }

[component.web]
source = "hello.wasm"
key_value_stores = ["default", "sessions"]
variables = { auth = "Bearer {{ api_token }}", message = "{{greeting}}, world", plain = "x" }
"#);
    assert_eq!(
        app.variables,
        [
            Variable {
                name: "api_token".into(),
                default: None,
                required: true,
                secret: true
            },
            Variable {
                name: "greeting".into(),
                default: Some("hello".into()),
                required: false,
                secret: false
            },
        ]
    );
    let web = &app.components[0];
    assert_eq!(web.key_value_stores, ["default", "sessions"]);
    let names: Vec<&str> = web.variables.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["auth", "message", "plain"]);
    let message = &web.variables[1].1;
    assert_eq!(message.render(|_| Some("hi")).as_deref(), Some("hi, world"));
}

#[test]
fn variable_errors_name_the_field_and_the_fix() {
    let f = Fixture::new();
    let base = "[app]\nname = \"x\"\n\n[variables]\ngreeting = { default = \"hi\" }\n\n[component.c]\nsource = \"hello.wasm\"\n";

    let e = f.err(
        &format!("{base}variables = {{ message = \"{{{{ greting }}}}\" }}\n"),
        "component.c.variables.message",
        9,
    );
    assert!(e.message.contains("`greting`"), "{e}");
    assert!(help(&e).contains("did you mean `greeting`"), "{e}");

    let e = f.err(
        &format!("{base}variables = {{ message = \"{{{{ greeting\" }}\n"),
        "component.c.variables.message",
        9,
    );
    assert!(e.message.contains("never closed"), "{e}");

    let e = f.err(
        &format!("{base}variables = {{ Message = \"x\" }}\n"),
        "component.c.variables.Message",
        9,
    );
    assert!(e.message.contains("not a valid variable name"), "{e}");

    let e = f.err(
        "[app]\nname = \"x\"\n\n[variables]\nApi-Token = { required = true }\n\n[component.c]\nsource = \"hello.wasm\"\n",
        "variables.Api-Token",
        5,
    );
    assert!(help(&e).contains("api_token"), "{e}");

    let e = f.err(
        "[app]\nname = \"x\"\n\n[variables]\nt = { required = true, default = \"d\" }\n\n[component.c]\nsource = \"hello.wasm\"\n",
        "variables.t",
        5,
    );
    assert!(e.message.contains("required"), "{e}");

    let e = f.err(
        "[app]\nname = \"x\"\n\n[variables]\nt = { requird = true }\n\n[component.c]\nsource = \"hello.wasm\"\n",
        "variables.t.requird",
        5,
    );
    assert!(help(&e).contains("required"), "{e}");
}

#[test]
fn store_label_errors() {
    let f = Fixture::new();
    let base = "[app]\nname = \"x\"\n\n[component.c]\nsource = \"hello.wasm\"\n";
    let e = f.err(
        &format!("{base}key_value_stores = [\"default\", \"Bad Label\"]\n"),
        "component.c.key_value_stores[1]",
        6,
    );
    assert!(e.message.contains("not a valid store label"), "{e}");
    let e = f.err(
        &format!("{base}key_value_stores = [\"a\", \"a\"]\n"),
        "component.c.key_value_stores[1]",
        6,
    );
    assert!(e.message.contains("twice"), "{e}");
}

// Found by the `manifest` fuzz target: `ManifestError::at` underlined the rest of the line
// (a trailing comment, the rest of an inline table), not the `source` string that the parser's
// own errors underline.
#[test]
fn error_at_underlines_only_the_source_string() {
    let f = Fixture::new();
    for (text, line, column) in [
        (
            format!(
                "{APP}[component.hello]\nsource = \"hello.wasm\"   # built by build.sh 日本\u{3000}\n"
            ),
            5,
            10,
        ),
        (
            "component.hello = { source = 'hello.wasm', route = \"/x\" }\n[app]\nname = \"x\"\n"
                .to_string(),
            1,
            30,
        ),
    ] {
        std::fs::write(f.manifest(), &text).unwrap();
        let app = load(&f.manifest()).unwrap_or_else(|e| panic!("{e}"));
        let at = ManifestError::at(&app, 0, "source", "not a valid component", None);
        assert_eq!(at.location, Some(Location { line, column }), "{at}");
        assert_eq!(at.snippet.as_ref().unwrap().underline, 12, "{at}");
        // The same place and underline as the parser's error when the file is missing.
        std::fs::remove_file(f.dir.path().join("hello.wasm")).unwrap();
        let parsed = f.parse(&text).unwrap_err();
        std::fs::write(f.dir.path().join("hello.wasm"), COMPONENT_HEADER).unwrap();
        assert_eq!(parsed.location, at.location, "{parsed}");
        assert_eq!(parsed.snippet, at.snippet, "{parsed}\n{at}");
    }
}

// Found with the `manifest` fuzz target's check that every accepted timeout can be added to
// `Instant::now()` (the runtime's per-request deadline): "500000000000years" was accepted, and
// the deadline addition would panic on every request.
#[test]
fn timeout_is_at_most_a_day() {
    let f = Fixture::new();
    let base =
        format!("{APP}[component.hello]\nsource = \"hello.wasm\"\n[component.hello.limits]\n");
    for value in ["\"500000000000years\"", "\"24h 1s\"", "\"2days\""] {
        let e = f.err(
            &format!("{base}timeout = {value}\n"),
            "component.hello.limits.timeout",
            7,
        );
        assert!(e.message.contains("24h"), "{e}");
        assert!(help(&e).contains("\"5s\""), "{e}");
    }
    let app = f.ok(&format!("{base}timeout = \"24h\"\n"));
    assert_eq!(
        app.components[0].limits.timeout,
        Some(Duration::from_secs(24 * 60 * 60))
    );
}

#[test]
fn one_component_is_an_app_that_answers_every_path() {
    let component = Component::of_file(PathBuf::from("/srv/My_API.v2.wasm"));
    assert_eq!(component.id, "my-api-v2");
    assert_eq!(component.limits, Limits::default());
    let app = App::of_one_component(component);
    assert_eq!(app.name, "my-api-v2");
    assert_eq!(app.base_dir, PathBuf::from("/srv"));
    let table = RouteTable::new(&app);
    for path in ["/", "/anything/at/all"] {
        assert_eq!(
            table.lookup(path).map(|m| m.target),
            Some(RouteTarget::Component(0)),
            "{path}"
        );
    }
    assert!(!app.uses_fuel());
    // A file name with nothing of the id alphabet still gives an id.
    assert_eq!(Component::of_file(PathBuf::from("/srv/_.wasm")).id, "-");
    assert_eq!(Component::of_file(PathBuf::from("/")).id, "component");
}

// --- queues ----------------------------------------------------------------------------------

#[test]
fn a_pipeline_consumes_and_publishes() {
    let f = Fixture::new();
    let app = f.ok(&format!(
        "{APP}[component.web]\nsource = \"hello.wasm\"\nroute = \"/...\"\npublish = [\"orders\"]\n\n\
         [component.transform]\nsource = \"api.wasm\"\npublish = [\"results\", \"audit.v2\"]\n\
         limits = {{ timeout = \"40s\" }}\n\
         [component.transform.consume]\nqueue = \"orders\"\nconcurrency = 8\nmax_attempts = 3\n"
    ));
    assert_eq!(app.components[0].publish, ["orders"]);
    assert_eq!(app.components[1].publish, ["results", "audit.v2"]);
    let consume = &app.consumers[0];
    assert_eq!(consume.component, 1);
    assert_eq!(consume.queue, "orders");
    assert_eq!((consume.concurrency, consume.batch), (8, 8));
    assert_eq!(consume.max_attempts, 3);
    assert_eq!(consume.dead_letter, "orders-dead");
    assert_eq!(consume.path, None);
    // Unless told otherwise, a redelivery waits for the timeout, and then some.
    assert_eq!(consume.retry_after, Duration::from_secs(45));
    assert_eq!(consume.location.line, 13);
    // A failed message comes back after 1 s, then 2, 4... never later than `retry_after`.
    assert_eq!(consume.retry_delay, Duration::from_secs(1));
    let delays: Vec<u64> = (1..=8)
        .map(|attempt| consume.retry_delay_after(attempt).as_secs())
        .collect();
    assert_eq!(delays, [1, 2, 4, 8, 16, 32, 45, 45]);
    assert_eq!(consume.retry_delay_after(u32::MAX), Duration::from_secs(45));
}

#[test]
fn a_consumer_may_retry_at_once_or_later() {
    let f = Fixture::new();
    let consume = |extra: &str| {
        let app = f.ok(&format!(
            "{APP}[component.c]\nsource = \"api.wasm\"\n\n\
             [component.c.consume]\nqueue = \"q\"\n{extra}"
        ));
        app.consumers[0].clone()
    };
    assert_eq!(
        consume("retry_delay = \"0s\"\n").retry_delay_after(3),
        Duration::ZERO
    );
    assert_eq!(
        consume("retry_delay = \"500ms\"\n").retry_delay_after(2),
        Duration::from_secs(1)
    );
}

#[test]
fn bad_queue_sections_name_the_field_and_the_fix() {
    let f = Fixture::new();
    let component = "[component.c]\nsource = \"hello.wasm\"\n";
    let e = f.err(
        &format!("{APP}{component}publish = [\"Orders\"]\n"),
        "component.c.publish[0]",
        6,
    );
    assert!(help(&e).contains("lowercase"), "{e}");
    f.err(
        &format!("{APP}{component}publish = [\"a\", \"a\"]\n"),
        "component.c.publish[1]",
        6,
    );
    let consume = |body: &str| format!("{APP}{component}[component.c.consume]\n{body}");
    let e = f.err(
        &consume("concurrency = 2\n"),
        "component.c.consume.queue",
        6,
    );
    assert!(help(&e).contains("queue = \"orders\""), "{e}");
    f.err(
        &consume("queue = \"a b\"\n"),
        "component.c.consume.queue",
        7,
    );
    let e = f.err(
        &consume("queue = \"q\"\nconcurrency = 0\n"),
        "component.c.consume.concurrency",
        8,
    );
    assert!(help(&e).contains("1 to 256"), "{e}");
    f.err(
        &consume("queue = \"q\"\nbatch = 5000\n"),
        "component.c.consume.batch",
        8,
    );
    f.err(
        &consume("queue = \"q\"\nretry_after = \"soon\"\n"),
        "component.c.consume.retry_after",
        8,
    );
    f.err(
        &consume("queue = \"q\"\nretry_delay = \"-1s\"\n"),
        "component.c.consume.retry_delay",
        8,
    );
    let e = f.err(
        &consume("queue = \"q\"\ndead_letter = \"q\"\n"),
        "component.c.consume.dead_letter",
        8,
    );
    assert!(e.to_string().contains("for ever"), "{e}");
    f.err(
        &consume("queue = \"q\"\npath = \"consume\"\n"),
        "component.c.consume.path",
        8,
    );
    f.err(
        &consume("queue = \"q\"\nqueues = 3\n"),
        "component.c.consume.queues",
        8,
    );
    // A redelivery that could come while the handler still runs.
    let e = f.err(
        &format!(
            "{APP}{component}limits = {{ timeout = \"1m\" }}\n[component.c.consume]\n\
             queue = \"q\"\nretry_after = \"30s\"\n"
        ),
        "component.c.consume.retry_after",
        9,
    );
    assert!(e.to_string().contains("timeout"), "{e}");
    // One consumer per queue in an app.
    let e = f.err(
        &format!(
            "{APP}{component}[component.c.consume]\nqueue = \"q\"\n\n\
             [component.d]\nsource = \"api.wasm\"\n[component.d.consume]\nqueue = \"q\"\n"
        ),
        "component.d.consume.queue",
        11,
    );
    assert!(e.to_string().contains("component `c`"), "{e}");
}

// --- schedules ------------------------------------------------------------------------------

const SCHEDULED: &str = "[app]\nname = \"hello\"\n\n[component.hello]\nsource = \"hello.wasm\"\n";

#[test]
fn schedules_parse_with_defaults_and_zones() {
    let f = Fixture::new();
    let app = f.ok(&format!(
        "{SCHEDULED}route = \"/hello\"\n\n[[component.hello.schedule]]\ncron = \"*/5 * * * * *\"\npath = \"/jobs/tick\"\n\n[[component.hello.schedule]]\ncron = \"30 2 * * *\"\ntimezone = \"Europe/Paris\"\npath = \"/jobs/nightly?full=1\"\noverlap = \"allow\"\n"
    ));
    assert_eq!(app.schedules.len(), 2);
    let tick = &app.schedules[0];
    assert_eq!((tick.component, tick.index), (0, 0));
    assert_eq!(tick.timezone, "UTC");
    assert_eq!(tick.overlap, Overlap::Skip);
    assert_eq!(tick.path.as_deref(), Some("/jobs/tick"));
    assert_eq!(tick.location.line, 8);
    let nightly = &app.schedules[1];
    assert_eq!(nightly.index, 1);
    assert_eq!(nightly.overlap, Overlap::Allow);

    // Every five seconds, on the second; whole seconds only.
    let times = tick.times().unwrap();
    let start = std::time::UNIX_EPOCH + Duration::from_millis(1_000_000_001_500);
    let next = times.upcoming(start, 3);
    let secs: Vec<u64> = next
        .iter()
        .map(|t| t.duration_since(std::time::UNIX_EPOCH).unwrap().as_secs())
        .collect();
    assert_eq!(secs, vec![1_000_000_005, 1_000_000_010, 1_000_000_015]);
    // 02:30 in Paris is 00:30 UTC in summer (2001-09-09 is a Sunday in CEST, UTC+2).
    let nightly = nightly.times().unwrap().next_after(start).unwrap();
    let secs = nightly
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    assert_eq!(secs % 86_400, 30 * 60, "{secs}");
}

#[test]
fn a_component_may_have_only_a_schedule() {
    let f = Fixture::new();
    let app = f.ok(&format!(
        "{SCHEDULED}[[component.hello.schedule]]\ncron = \"* * * * *\"\npath = \"/\"\n"
    ));
    assert!(app.routes.is_empty());
    assert_eq!(app.schedules.len(), 1);
}

#[test]
fn malformed_schedules_name_the_field_and_the_fix() {
    let f = Fixture::new();
    let s = |body: &str| format!("{SCHEDULED}[[component.hello.schedule]]\n{body}");

    let e = f.err(
        &s("cron = \"61 * * * *\"\npath = \"/x\"\n"),
        "component.hello.schedule[0].cron",
        7,
    );
    assert!(help(&e).contains("six with leading seconds"), "{e}");
    f.err(
        &s("cron = \"* * *\"\npath = \"/x\"\n"),
        "component.hello.schedule[0].cron",
        7,
    );
    // Seven fields (a year) are not accepted.
    f.err(
        &s("cron = \"0 0 0 1 1 * 2030\"\npath = \"/x\"\n"),
        "component.hello.schedule[0].cron",
        7,
    );
    let e = f.err(&s("path = \"/x\"\n"), "component.hello.schedule[0].cron", 6);
    assert!(help(&e).contains("cron = "), "{e}");
    // February 30th never comes.
    let e = f.err(
        &s("cron = \"0 0 30 2 *\"\npath = \"/x\"\n"),
        "component.hello.schedule[0].cron",
        7,
    );
    assert!(e.message.contains("never fires"), "{e}");

    let e = f.err(
        &s("cron = \"* * * * *\"\ntimezone = \"Europe/Pari\"\n"),
        "component.hello.schedule[0].timezone",
        8,
    );
    assert!(help(&e).contains("Europe/Paris"), "{e}");
    let e = f.err(
        &s("cron = \"* * * * *\"\npath = \"jobs/x\"\n"),
        "component.hello.schedule[0].path",
        8,
    );
    assert!(help(&e).contains("\"/jobs/x\""), "{e}");
    f.err(
        &s("cron = \"* * * * *\"\npath = \"/a b\"\n"),
        "component.hello.schedule[0].path",
        8,
    );
    let e = f.err(
        &s("cron = \"* * * * *\"\noverlap = \"skp\"\n"),
        "component.hello.schedule[0].overlap",
        8,
    );
    assert!(help(&e).contains("\"skip\""), "{e}");
    let e = f.err(
        &s("cron = \"* * * * *\"\nmethod = \"GET\"\n"),
        "component.hello.schedule[0].method",
        8,
    );
    assert!(
        help(&e).contains("cron, timezone, path, args, overlap"),
        "{e}"
    );
    // The second entry is named by its own index.
    f.err(
        &format!(
            "{}\n[[component.hello.schedule]]\ncron = \"nope\"\n",
            s("cron = \"* * * * *\"\n")
        ),
        "component.hello.schedule[1].cron",
        10,
    );
}

#[test]
fn schedules_per_app_are_capped() {
    let f = Fixture::new();
    let mut text = String::from(APP);
    // Spread over components: the cap is per app, not per component.
    for c in 0..MAX_SCHEDULES_PER_APP + 1 {
        text.push_str(&format!("[component.c{c}]\nsource = \"hello.wasm\"\n"));
        text.push_str(&format!(
            "[[component.c{c}.schedule]]\ncron = \"* * * * * *\"\npath = \"/\"\n"
        ));
    }
    let e = f.parse(&text).unwrap_err();
    assert_eq!(
        e.field,
        format!("component.c{MAX_SCHEDULES_PER_APP}.schedule[0]")
    );
    assert!(e.message.contains("more than 32 schedules"), "{e}");
    // Exactly the cap is fine.
    let cut = text
        .find(&format!("[component.c{MAX_SCHEDULES_PER_APP}]"))
        .unwrap();
    assert_eq!(f.ok(&text[..cut]).schedules.len(), MAX_SCHEDULES_PER_APP);
}

#[test]
fn schedules_across_daylight_saving_changes() {
    use std::time::UNIX_EPOCH;
    let times = CronTimes::new("0 30 2 * * *", "Europe/Paris").unwrap();
    let secs = |t: std::time::SystemTime| t.duration_since(UNIX_EPOCH).unwrap().as_secs();
    // 2026-03-28 12:00 UTC: the next three runs across the spring change (29 March, 02:00
    // becomes 03:00, so 02:30 does not exist that day).
    let spring: Vec<u64> = times
        .upcoming(UNIX_EPOCH + Duration::from_secs(1_774_699_200), 3)
        .into_iter()
        .map(secs)
        .collect();
    // 2026-10-24 12:00 UTC: across the autumn change (25 October, 02:30 happens twice).
    let autumn: Vec<u64> = times
        .upcoming(UNIX_EPOCH + Duration::from_secs(1_792_843_200), 3)
        .into_iter()
        .map(secs)
        .collect();
    // In spring the missing 02:30 runs at 03:00 CEST, when the day's clock reaches past it;
    // then 02:30 CEST as usual.
    assert_eq!(spring, vec![1_774_746_000, 1_774_830_600, 1_774_917_000]);
    // In autumn 02:30 runs once, at its first occurrence (CEST); then 02:30 CET.
    assert_eq!(autumn, vec![1_792_888_200, 1_792_978_200, 1_793_064_600]);
}

// --- gateway: upstreams, middleware, in-process calls ---------------------------------------

const GATEWAY: &str = r#"[app]
name = "shop"

[component.auth]
source = "hello.wasm"
route = "/login"

[component.api]
source = "api.wasm"
route = ["/api/...", "/health"]
middleware = ["auth", "limit"]
allowed_outbound_hosts = ["http://auth.skiff.internal", "https://api.example.com"]

[component.limit]
source = "hello.wasm"

[upstream.orders]
url = "http://Orders.internal:8080/v1/"
route = "/orders/..."
middleware = ["limit", "auth"]
timeout = "30s"
retries = 3
health_check = { path = "/healthz", interval = "10s" }

[upstream.legacy]
urls = ["http://10.0.0.7", "https://[fd00::7]"]
route = ["/legacy/...", "/old"]
connect_timeout = "500ms"
retries = 0
body_idle_timeout = "2m"
websocket_limit = 10
websocket_idle_timeout = "30s"
tls = { server_name = "Legacy.Internal" }

[upstream.legacy.health_check]
path = "/ping?deep=1"
interval = "1s"
"#;

#[test]
fn a_gateway_parses_with_upstreams_and_middleware() {
    let f = Fixture::new();
    let app = f.ok(GATEWAY);
    let ids: Vec<&str> = app.components.iter().map(|c| c.id.as_str()).collect();
    assert_eq!(ids, ["auth", "api", "limit"]);

    let routes: Vec<(&str, RouteTarget, Vec<usize>)> = app
        .routes
        .iter()
        .map(|r| (r.as_written.as_str(), r.target, r.middleware.clone()))
        .collect();
    let c = RouteTarget::Component;
    let u = RouteTarget::Upstream;
    assert_eq!(
        routes,
        [
            ("/login", c(0), vec![]),
            // `limit` is written after `api`, which names it.
            ("/api/...", c(1), vec![0, 2]),
            ("/health", c(1), vec![0, 2]),
            ("/orders/...", u(0), vec![2, 0]),
            ("/legacy/...", u(1), vec![]),
            ("/old", u(1), vec![]),
        ]
    );
    assert_eq!(app.routes[1].first_component(), Some(0));
    assert_eq!(app.routes[3].first_component(), Some(2));
    assert_eq!(app.routes[4].first_component(), None);
    assert_eq!(app.routes[4].component(), None);

    assert_eq!(
        app.upstreams,
        vec![
            Upstream {
                name: "orders".into(),
                urls: vec![UpstreamUrl {
                    tls: false,
                    host: "orders.internal".into(),
                    port: 8080,
                    base_path: "/v1".into(),
                }],
                connect_timeout: DEFAULT_CONNECT_TIMEOUT,
                timeout: Duration::from_secs(30),
                retries: 3,
                health_check: Some(HealthCheck {
                    path: "/healthz".into(),
                    interval: Duration::from_secs(10),
                    timeout: DEFAULT_HEALTH_TIMEOUT,
                }),
                body_idle_timeout: DEFAULT_BODY_IDLE_TIMEOUT,
                websocket_limit: DEFAULT_WEBSOCKET_LIMIT,
                websocket_idle_timeout: DEFAULT_WEBSOCKET_IDLE_TIMEOUT,
                tls: UpstreamTls::default(),
            },
            Upstream {
                name: "legacy".into(),
                urls: vec![
                    UpstreamUrl {
                        tls: false,
                        host: "10.0.0.7".into(),
                        port: 80,
                        base_path: String::new(),
                    },
                    UpstreamUrl {
                        tls: true,
                        host: "fd00::7".into(),
                        port: 443,
                        base_path: String::new(),
                    },
                ],
                connect_timeout: Duration::from_millis(500),
                timeout: DEFAULT_UPSTREAM_TIMEOUT,
                retries: 0,
                // The default timeout (2 s) is cut to the interval.
                health_check: Some(HealthCheck {
                    path: "/ping?deep=1".into(),
                    interval: Duration::from_secs(1),
                    timeout: Duration::from_secs(1),
                }),
                body_idle_timeout: Duration::from_secs(120),
                websocket_limit: 10,
                websocket_idle_timeout: Duration::from_secs(30),
                tls: UpstreamTls {
                    ca: None,
                    server_name: Some("legacy.internal".into()),
                },
            },
        ]
    );
    assert_eq!(DEFAULT_CONNECT_TIMEOUT, Duration::from_secs(2));
    assert_eq!(DEFAULT_UPSTREAM_TIMEOUT, Duration::from_secs(60));
    assert_eq!(
        app.upstreams[1].urls[1].to_string(),
        "https://[fd00::7]:443"
    );
    assert_eq!(app.upstream("legacy").map(|u| u.urls.len()), Some(2));
    assert!(app.upstream("nope").is_none());

    let table = RouteTable::new(&app);
    let m = table.lookup("/orders/42?x=1").unwrap();
    assert_eq!((m.target, m.path_info), (RouteTarget::Upstream(0), "/42"));
    assert_eq!(table.lookup("/api/x").map(|m| m.target), Some(c(1)));

    // Only `auth` is named by an `allowed_outbound_hosts` entry.
    let reachable: Vec<bool> = (0..4).map(|i| app.reachable_in_process(i)).collect();
    assert_eq!(reachable, [true, false, false, false]);
}

#[test]
fn upstream_defaults() {
    let f = Fixture::new();
    let app = f.ok(&format!(
        "{APP}[component.hello]\nsource = \"hello.wasm\"\n\n[upstream.orders]\nurl = \"http://orders\"\nroute = \"/orders/...\"\n"
    ));
    let orders = &app.upstreams[0];
    assert_eq!(orders.urls[0].to_string(), "http://orders:80");
    assert_eq!(orders.connect_timeout, Duration::from_secs(2));
    assert_eq!(orders.timeout, Duration::from_secs(60));
    assert_eq!(orders.retries, DEFAULT_RETRIES);
    assert_eq!(orders.retries, 1);
    assert_eq!(orders.health_check, None);
    assert_eq!(app.routes[0].target, RouteTarget::Upstream(0));
    assert!(app.routes[0].middleware.is_empty());

    // A health check with only its path.
    let app = f.ok(&format!(
        "{APP}[component.hello]\nsource = \"hello.wasm\"\n\n[upstream.orders]\nurl = \"http://orders\"\nroute = \"/orders/...\"\n[upstream.orders.health_check]\npath = \"/\"\n"
    ));
    assert_eq!(
        app.upstreams[0].health_check,
        Some(HealthCheck {
            path: "/".into(),
            interval: DEFAULT_HEALTH_INTERVAL,
            timeout: DEFAULT_HEALTH_TIMEOUT,
        })
    );
    assert_eq!(DEFAULT_HEALTH_INTERVAL, Duration::from_secs(5));
}

#[test]
fn in_process_calls_by_name_or_wildcard() {
    let f = Fixture::new();
    let app = f.ok(&format!(
        "{APP}[component.front]\nsource = \"hello.wasm\"\nroute = \"/...\"\n\
         allowed_outbound_hosts = [\"http://*.skiff.internal\"]\n\
         [component.back]\nsource = \"api.wasm\"\n"
    ));
    assert!(app.reachable_in_process(0));
    assert!(app.reachable_in_process(1));
    // `*` names no component: it grants no in-process call.
    let app = f.ok(&format!(
        "{APP}[component.front]\nsource = \"hello.wasm\"\nroute = \"/...\"\n\
         allowed_outbound_hosts = [\"*://*:*\", \"http://*.internal\", \"http://skiff.internal\"]\n\
         [component.back]\nsource = \"api.wasm\"\n"
    ));
    // `*.internal` covers `back.skiff.internal`, as the runtime's matching does.
    assert!(app.reachable_in_process(1));
    let app = f.ok(&format!(
        "{APP}[component.front]\nsource = \"hello.wasm\"\nroute = \"/...\"\n\
         allowed_outbound_hosts = [\"*://*:*\", \"http://skiff.internal\", \"http://*.other.internal\"]\n\
         [component.back]\nsource = \"api.wasm\"\n"
    ));
    assert!(!app.reachable_in_process(1));
    assert!(!app.reachable_in_process(7));
    // A component written after the one that calls it.
    let app = f.ok(&format!(
        "{APP}[component.front]\nsource = \"hello.wasm\"\nroute = \"/...\"\n\
         allowed_outbound_hosts = [\"http://back.skiff.internal:80\"]\n\
         [component.back]\nsource = \"api.wasm\"\n"
    ));
    assert!(app.reachable_in_process(1));
    assert!(!app.reachable_in_process(0));
}

#[test]
fn a_middleware_list_may_be_empty_and_routeless() {
    let f = Fixture::new();
    let app = f.ok(&format!(
        "{APP}[component.hello]\nsource = \"hello.wasm\"\nmiddleware = []\n"
    ));
    assert!(app.routes.is_empty());
}

#[test]
fn apps_stored_before_upstreams_still_load() {
    // An app as the previous version stored it: routes name their component, and there are
    // no `middleware` or `upstreams` fields.
    let old = App::of_one_component(Component::of_file(PathBuf::from("/srv/hello.wasm")));
    let mut json = serde_json::to_value(&old).unwrap();
    let obj = json.as_object_mut().unwrap();
    obj.remove("upstreams");
    obj.insert(
        "routes".into(),
        serde_json::json!([{"pattern":{"Exact":"/x"},"as_written":"/x","component":0}]),
    );
    let text = serde_json::to_string(&json).unwrap();
    assert!(
        !text.contains("middleware") && !text.contains("upstream"),
        "{text}"
    );
    let app: App = serde_json::from_str(&text).unwrap();
    assert_eq!(
        app.routes,
        vec![Route {
            pattern: RoutePattern::Exact("/x".into()),
            as_written: "/x".into(),
            target: RouteTarget::Component(0),
            middleware: Vec::new(),
        }]
    );
    assert!(app.upstreams.is_empty());
}

#[test]
fn a_gateway_round_trips_through_json() {
    let f = Fixture::new();
    let app = f.ok(GATEWAY);
    let text = serde_json::to_string(&app).unwrap();
    // Routes keep the field older readers know for components.
    assert!(
        text.contains(r#""as_written":"/login","component":0,"middleware":[]"#),
        "{text}"
    );
    assert!(
        text.contains(r#""as_written":"/orders/...","upstream":0,"middleware":[2,0]"#),
        "{text}"
    );
    let back: App = serde_json::from_str(&text).unwrap();
    assert_eq!(back, app);
}

/// The gateway's first component, then `[upstream.orders]` with `body`, starting at line 8.
fn with_upstream(body: &str) -> String {
    format!(
        "[app]\nname = \"shop\"\n\n[component.auth]\nsource = \"hello.wasm\"\nroute = \"/login\"\n[upstream.orders]\n{body}"
    )
}

#[test]
fn upstream_url_errors() {
    let f = Fixture::new();
    let route = "route = \"/orders/...\"\n";
    let e = f.err(
        &with_upstream(&format!("url = \"ws://orders:8443\"\n{route}")),
        "upstream.orders.url",
        8,
    );
    assert!(e.message.contains("unsupported scheme `ws`"), "{e}");
    assert!(help(&e).contains("\"https://orders:8443\""), "{e}");
    let e = f.err(
        &with_upstream(&format!(
            "urls = [\"http://a:8080\", \"http://u@b:8080\"]\n{route}"
        )),
        "upstream.orders.urls[1]",
        8,
    );
    assert!(e.message.contains("user info"), "{e}");
    let e = f.err(
        &with_upstream(&format!(
            "url = \"http://a\"\n{route}urls = [\"http://b\"]\n"
        )),
        "upstream.orders.urls",
        10,
    );
    assert!(e.message.contains("both `url` and `urls`"), "{e}");
    let e = f.err(&with_upstream(route), "upstream.orders.url", 7);
    assert!(e.message.contains("has no `url`"), "{e}");
    assert!(help(&e).contains("url = \"http://orders:8080\""), "{e}");
    let e = f.err(
        &with_upstream(&format!("urls = []\n{route}")),
        "upstream.orders.urls",
        8,
    );
    assert!(e.message.contains("empty"), "{e}");
    let many: Vec<String> = (0..65).map(|i| format!("\"http://a{i}\"")).collect();
    let e = f.err(
        &with_upstream(&format!("urls = [{}]\n{route}", many.join(", "))),
        "upstream.orders.urls",
        8,
    );
    assert!(e.message.contains("65 addresses are more than 64"), "{e}");
    let e = f.err(
        &with_upstream(&format!("urls = [\"http://a:80\", \"http://A\"]\n{route}")),
        "upstream.orders.urls[1]",
        8,
    );
    assert!(e.message.contains("same address as `urls[0]`"), "{e}");
    let e = f.err(
        &with_upstream(&format!("url = \"http://a:0\"\n{route}")),
        "upstream.orders.url",
        8,
    );
    assert!(e.message.contains("not a port"), "{e}");
    // A type error goes through toml's path, with an example.
    let e = f.err(
        &with_upstream(&format!("url = [\"http://a\"]\n{route}")),
        "upstream.orders.url",
        8,
    );
    assert!(help(&e).contains("url = \"http://orders:8080\""), "{e}");
}

#[test]
fn upstream_route_errors() {
    let f = Fixture::new();
    let url = "url = \"http://orders\"\n";
    let e = f.err(&with_upstream(url), "upstream.orders.route", 7);
    assert!(e.message.contains("upstream `orders` has no route"), "{e}");
    assert!(help(&e).contains("route = \"/orders/...\""), "{e}");
    f.err(
        &with_upstream(&format!("{url}route = []\n")),
        "upstream.orders.route",
        9,
    );
    let e = f.err(
        &with_upstream(&format!("{url}route = \"orders\"\n")),
        "upstream.orders.route",
        9,
    );
    assert!(help(&e).contains("\"/orders\""), "{e}");
    // The same collision check as between components.
    let e = f.err(
        &with_upstream(&format!("{url}route = [\"/orders/...\", \"/login/\"]\n")),
        "upstream.orders.route[1]",
        9,
    );
    assert!(e.message.contains("upstream `orders`"), "{e}");
    assert!(e.message.contains("component `auth` (line 6)"), "{e}");
    assert!(help(&e).contains("one component or upstream only"), "{e}");
    let e = f.err(
        &with_upstream(&format!("{url}route = [\"/o\", \"/o/\"]\n")),
        "upstream.orders.route[1]",
        9,
    );
    assert!(e.message.contains("the same upstream"), "{e}");
    // An upstream's route, then a component's.
    let text = format!(
        "{}[component.late]\nsource = \"api.wasm\"\nroute = \"/orders/...\"\n",
        with_upstream(&format!("{url}route = \"/orders/...\"\n"))
    );
    let e = f.err(&text, "upstream.orders.route", 9);
    assert!(e.message.contains("component `late`"), "{e}");
}

#[test]
fn middleware_errors() {
    let f = Fixture::new();
    let up = "url = \"http://orders\"\nroute = \"/orders/...\"\n";
    let e = f.err(
        &with_upstream(&format!("{up}middleware = [\"auht\"]\n")),
        "upstream.orders.middleware[0]",
        10,
    );
    assert!(
        e.message.contains("`auht` is not a component of this app"),
        "{e}"
    );
    assert!(help(&e).contains("did you mean `auth`?"), "{e}");
    let e = f.err(
        &with_upstream(&format!("{up}middleware = [\"ratelimiter\"]\n")),
        "upstream.orders.middleware[0]",
        10,
    );
    assert!(help(&e).contains("components are `auth`"), "{e}");
    let e = f.err(
        &with_upstream(&format!("{up}middleware = [\"auth\", \"auth\"]\n")),
        "upstream.orders.middleware[1]",
        10,
    );
    assert!(e.message.contains("listed twice"), "{e}");

    let comp = |body: &str| {
        format!(
            "{APP}[component.api]\nsource = \"api.wasm\"\n{body}\n[component.auth]\nsource = \"hello.wasm\"\n"
        )
    };
    let e = f.err(
        &comp("route = \"/api/...\"\nmiddleware = [\"auth\", \"api\"]"),
        "component.api.middleware[1]",
        7,
    );
    assert!(e.message.contains("lists itself"), "{e}");
    let e = f.err(
        &comp("route = \"/api/...\"\nmiddleware = [\"atuh\"]"),
        "component.api.middleware[0]",
        7,
    );
    assert!(help(&e).contains("did you mean `auth`?"), "{e}");
    f.err(
        &comp("route = \"/api/...\"\nmiddleware = [\"auth\", \"auth\"]"),
        "component.api.middleware[1]",
        7,
    );
    let e = f.err(
        &comp("middleware = [\"auth\"]"),
        "component.api.middleware",
        6,
    );
    assert!(e.message.contains("no `route`"), "{e}");
    assert!(help(&e).contains("add one"), "{e}");
    let e = f.err(
        &comp("route = \"/api/...\"\nmiddleware = \"auth\""),
        "component.api.middleware",
        7,
    );
    assert!(help(&e).contains("middleware = [\"auth\"]"), "{e}");
}

#[test]
fn upstream_timeout_and_retry_errors() {
    let f = Fixture::new();
    let up = "url = \"http://orders\"\nroute = \"/orders/...\"\n";
    let e = f.err(
        &with_upstream(&format!("{up}connect_timeout = \"0s\"\n")),
        "upstream.orders.connect_timeout",
        10,
    );
    assert!(e.message.contains("`0s` is zero"), "{e}");
    let e = f.err(
        &with_upstream(&format!("{up}timeout = \"soon\"\n")),
        "upstream.orders.timeout",
        10,
    );
    assert!(e.message.contains("not a duration"), "{e}");
    let e = f.err(
        &with_upstream(&format!("{up}body_idle_timeout = \"0ms\"\n")),
        "upstream.orders.body_idle_timeout",
        10,
    );
    assert!(help(&e).contains("body_idle_timeout = \"60s\""), "{e}");
    f.err(
        &with_upstream(&format!("{up}timeout = \"2d\"\n")),
        "upstream.orders.timeout",
        10,
    );
    let e = f.err(
        &with_upstream(&format!("{up}retries = 11\n")),
        "upstream.orders.retries",
        10,
    );
    assert!(e.message.contains("more than 10"), "{e}");
    assert!(help(&e).contains("from 0 to 10"), "{e}");
    f.err(
        &with_upstream(&format!("{up}retries = -1\n")),
        "upstream.orders.retries",
        10,
    );
}

#[test]
fn tls_trusts_a_ca_file_and_names_the_server() {
    let f = Fixture::new();
    std::fs::create_dir(f.dir.path().join("certs")).unwrap();
    std::fs::write(f.dir.path().join("certs/ca.pem"), "not read at load\n").unwrap();
    let up = "url = \"https://10.0.0.7:8443\"\nroute = \"/orders/...\"\n";
    let app = f.ok(&with_upstream(&format!(
        "{up}tls = {{ ca = \"certs/ca.pem\", server_name = \"orders.internal\" }}\n"
    )));
    let tls = &app.upstreams[0].tls;
    assert_eq!(tls.ca, Some(f.dir.path().join("certs/ca.pem")));
    assert_eq!(tls.server_name.as_deref(), Some("orders.internal"));
    assert!(app.upstreams[0].urls[0].tls);

    let e = f.err(
        &with_upstream(&format!("{up}tls = {{ ca = \"certs/missing.pem\" }}\n")),
        "upstream.orders.tls.ca",
        10,
    );
    assert!(e.message.contains("missing.pem` does not exist"), "{e}");
    assert!(
        help(&e).contains("PEM file of the certificates to trust"),
        "{e}"
    );
    let e = f.err(
        &with_upstream(&format!("{up}tls = {{ ca = \"certs\" }}\n")),
        "upstream.orders.tls.ca",
        10,
    );
    assert!(e.message.contains("is not a file"), "{e}");
    let e = f.err(
        &with_upstream(&format!("{up}tls = {{ ca = \"\" }}\n")),
        "upstream.orders.tls.ca",
        10,
    );
    assert!(
        help(&e).contains("remove `ca` to trust the usual public roots"),
        "{e}"
    );
    for name in ["under_score!", "1.2.3", ""] {
        let e = f.err(
            &with_upstream(&format!("{up}tls = {{ server_name = \"{name}\" }}\n")),
            "upstream.orders.tls.server_name",
            10,
        );
        assert!(
            e.message.contains("not a host name or an IP address"),
            "{e}"
        );
    }
    f.ok(&with_upstream(&format!(
        "{up}tls = {{ server_name = \"fd00::7\" }}\n"
    )));
    let e = f.err(
        &with_upstream("url = \"http://orders\"\nroute = \"/orders/...\"\ntls = { server_name = \"orders\" }\n"),
        "upstream.orders.tls",
        10,
    );
    assert!(
        e.message.contains("no address of `orders` is `https://`"),
        "{e}"
    );
    f.err(
        &with_upstream(&format!("{up}tls = {{ verify = false }}\n")),
        "upstream.orders.tls.verify",
        10,
    );
}

#[test]
fn websocket_limit_and_idle_timeout_errors() {
    let f = Fixture::new();
    let up = "url = \"http://orders\"\nroute = \"/orders/...\"\n";
    for limit in ["0", "65537"] {
        let e = f.err(
            &with_upstream(&format!("{up}websocket_limit = {limit}\n")),
            "upstream.orders.websocket_limit",
            10,
        );
        assert!(e.message.contains("not from 1 to 65536"), "{e}");
        assert!(help(&e).contains("websocket_limit = 1024"), "{e}");
        assert!(
            help(&e).contains("may be open through `orders` at once"),
            "{e}"
        );
    }
    let e = f.err(
        &with_upstream(&format!("{up}websocket_idle_timeout = \"0s\"\n")),
        "upstream.orders.websocket_idle_timeout",
        10,
    );
    assert!(e.message.contains("`0s` is zero"), "{e}");
    assert!(help(&e).contains("websocket_idle_timeout = \"5m\""), "{e}");
}

#[test]
fn health_check_errors() {
    let f = Fixture::new();
    let up = "url = \"http://orders\"\nroute = \"/orders/...\"\n";
    let e = f.err(
        &with_upstream(&format!("{up}health_check = {{ interval = \"5s\" }}\n")),
        "upstream.orders.health_check.path",
        10,
    );
    assert!(e.message.contains("missing `path`"), "{e}");
    let e = f.err(
        &with_upstream(&format!(
            "{up}[upstream.orders.health_check]\npath = \"healthz\"\n"
        )),
        "upstream.orders.health_check.path",
        11,
    );
    assert!(e.message.contains("does not start with `/`"), "{e}");
    let e = f.err(
        &with_upstream(&format!(
            "{up}health_check = {{ path = \"/h\", interval = \"50ms\" }}\n"
        )),
        "upstream.orders.health_check.interval",
        10,
    );
    assert!(e.message.contains("shorter than 100ms"), "{e}");
    let e = f.err(
        &with_upstream(&format!(
            "{up}health_check = {{ path = \"/h\", timeout = \"10s\" }}\n"
        )),
        "upstream.orders.health_check.timeout",
        10,
    );
    assert!(e.message.contains("longer than the interval (5s)"), "{e}");
    let e = f.err(
        &with_upstream(&format!(
            "{up}health_check = {{ path = \"/h\", every = \"10s\" }}\n"
        )),
        "upstream.orders.health_check.every",
        10,
    );
    assert!(help(&e).contains("path, interval, timeout"), "{e}");
}

#[test]
fn upstream_names_and_fields() {
    let f = Fixture::new();
    let e = f.err(
        "[app]\nname = \"shop\"\n[component.auth]\nsource = \"hello.wasm\"\n[upstream.Orders]\nurl = \"http://o\"\nroute = \"/o\"\n",
        "upstream.Orders",
        5,
    );
    assert!(e.message.contains("upstream name `Orders`"), "{e}");
    assert!(help(&e).contains("\"orders\""), "{e}");
    let e = f.err(
        &with_upstream("url = \"http://o\"\nroute = \"/o\"\nurll = \"x\"\n"),
        "upstream.orders.urll",
        10,
    );
    assert!(e.message.contains("in upstream `orders`"), "{e}");
    assert!(help(&e).contains("did you mean `url`?"), "{e}");
    // TOML itself refuses a second table of the same name.
    let e = f
        .parse(&with_upstream(
            "url = \"http://o\"\nroute = \"/o\"\n[upstream.orders]\nurl = \"http://p\"\n",
        ))
        .unwrap_err();
    assert_eq!(e.location.map(|l| l.line), Some(10), "{e}");
}

#[test]
fn in_process_hosts_must_name_a_component() {
    let f = Fixture::new();
    let text = format!(
        "{APP}[component.front]\nsource = \"hello.wasm\"\n\
         allowed_outbound_hosts = [\"http://bakc.skiff.internal\"]\n\
         [component.back]\nsource = \"api.wasm\"\n"
    );
    let e = f.err(&text, "component.front.allowed_outbound_hosts[0]", 6);
    assert_eq!(
        e.message,
        "`component.front.allowed_outbound_hosts[0]`: `http://bakc.skiff.internal` names no \
         component of this app"
    );
    assert!(help(&e).contains("did you mean `back`?"), "{e}");
    let e = f.err(
        &format!(
            "{APP}[component.front]\nsource = \"hello.wasm\"\n\
             allowed_outbound_hosts = [\"https://ok.example.com\", \"*://zzzzzz.skiff.internal:*\"]\n"
        ),
        "component.front.allowed_outbound_hosts[1]",
        6,
    );
    assert!(help(&e).contains("components are `front`"), "{e}");
}

// --- builds -------------------------------------------------------------------------------

#[test]
fn builds_are_read_before_their_sources_exist() {
    let f = Fixture::new();
    std::fs::create_dir(f.dir.path().join("api")).unwrap();
    let text = r#"[app]
name = "hello"

[component.web]
source = "target/web.wasm"
route = "/..."
build = { command = "cargo build --release", watch = ["src/**/*.rs", "Cargo.toml"] }

[component.plain]
source = "hello.wasm"

[component.api]
source = "api/out.wasm"
[component.api.build]
command = "make"
workdir = "api"
"#;
    std::fs::write(f.manifest(), text).unwrap();
    let builds = load_builds(&f.manifest()).unwrap();
    let base = std::path::absolute(f.dir.path()).unwrap();
    assert_eq!(
        builds,
        vec![
            ComponentBuild {
                component: "web".into(),
                command: "cargo build --release".into(),
                workdir: base.clone(),
                watch: vec!["src/**/*.rs".into(), "Cargo.toml".into()],
                source: Some(base.join("target/web.wasm")),
            },
            ComponentBuild {
                component: "api".into(),
                command: "make".into(),
                workdir: base.join("api"),
                watch: Vec::new(),
                source: Some(base.join("api/out.wasm")),
            },
        ]
    );
    // Loading wants the sources, and says how to make them.
    let e = f.err(text, "component.web.source", 5);
    assert!(help(&e).contains("skiff build"), "{e}");
    // Once they exist, the app loads; its build tables change nothing it serves.
    std::fs::create_dir(f.dir.path().join("target")).unwrap();
    std::fs::write(f.dir.path().join("target/web.wasm"), COMPONENT_HEADER).unwrap();
    std::fs::write(f.dir.path().join("api/out.wasm"), COMPONENT_HEADER).unwrap();
    let app = f.ok(text);
    assert_eq!(app.components.len(), 3);
}

#[test]
fn bad_builds_name_the_field() {
    let f = Fixture::new();
    let component = "[component.hello]\nsource = \"hello.wasm\"\n";
    let cases = [
        (
            "build = { workdir = \"x\" }",
            "component.hello.build.command",
            "no `command`",
        ),
        (
            "build = { command = \"  \" }",
            "component.hello.build.command",
            "is empty",
        ),
        (
            "build = { command = \"make\", workdir = \"/abs\" }",
            "component.hello.build.workdir",
            "not a relative path",
        ),
        (
            "build = { command = \"make\", watch = [\"/etc/*\"] }",
            "component.hello.build.watch[0]",
            "not a relative glob",
        ),
        (
            "build = { command = \"make\", watch = [\"src/*.rs\", \"../x/*\"] }",
            "component.hello.build.watch[1]",
            "leaves the build's workdir",
        ),
        (
            "build = { command = \"make\", watch = [\"src/[a\"] }",
            "component.hello.build.watch[0]",
            "not a valid glob pattern",
        ),
        (
            "build = { command = \"make\", dir = \"x\" }",
            "component.hello.build.dir",
            "unknown field",
        ),
    ];
    for (build, field, message) in cases {
        let text = format!("{APP}{component}{build}\n");
        let e = f.err(&text, field, 6);
        assert!(e.to_string().contains(message), "{build}: {e}");
        // `skiff build` reads the same tables and says the same.
        std::fs::write(f.manifest(), &text).unwrap();
        let again = load_builds(&f.manifest()).unwrap_err();
        assert_eq!(again.field, e.field, "{build}");
    }
}
