//! Bad manifests: each kind of mistake stops `skiff up` before anything listens, with a
//! message that names the file, the line and column, and the field.

#![allow(clippy::unwrap_used, clippy::expect_used)] // A panic here is a failure with its message.

mod common;

use common::{app_dir, guest, guest_p1, skiff};

/// Runs `skiff up` on a manifest and returns its stderr, asserting it failed without serving.
fn up_fails(manifest: &str, extra: &[(&str, &str)]) -> String {
    let mut files = vec![("skiff.toml", manifest)];
    files.extend_from_slice(extra);
    let dir = app_dir(&files);
    let path = dir.path().join("skiff.toml");
    let output = skiff()
        .args(["up", "--listen", "127.0.0.1:0", path.to_str().unwrap()])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        !String::from_utf8_lossy(&output.stdout).contains("Serving"),
        "it served anyway"
    );
    assert!(stderr.contains("skiff.toml:"), "no file:line in {stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    stderr
}

fn http_wasm() -> String {
    guest("http-guest").to_str().unwrap().to_string()
}

#[test]
fn unknown_field() {
    let manifest = format!(
        "[app]\nname = \"x\"\n\n[component.web]\nsorce = \"{}\"\nroute = \"/\"\n",
        http_wasm()
    );
    let err = up_fails(&manifest, &[]);
    assert!(err.contains("sorce"), "{err}");
    assert!(err.contains("skiff.toml:5:"), "{err}");
    assert!(
        err.contains("source"),
        "the fix lists the valid field: {err}"
    );
}

#[test]
fn missing_source_file() {
    let err = up_fails(
        "[app]\nname = \"x\"\n\n[component.web]\nsource = \"target/web.wasm\"\nroute = \"/\"\n",
        &[],
    );
    assert!(err.contains("component.web.source"), "{err}");
    assert!(err.contains("target/web.wasm"), "{err}");
    assert!(err.contains("skiff.toml:5:"), "{err}");
}

#[test]
fn source_that_is_not_a_component() {
    let module = guest_p1("cli-guest");
    let manifest = format!(
        "[app]\nname = \"x\"\n\n[component.web]\nsource = \"{}\"\nroute = \"/\"\n",
        module.display()
    );
    let err = up_fails(&manifest, &[]);
    assert!(err.contains("component.web.source"), "{err}");
    assert!(err.contains("core WebAssembly module"), "{err}");
    assert!(err.contains("wasm32-wasip2"), "{err}");
}

#[test]
fn source_that_is_not_wasm() {
    let err = up_fails(
        "[app]\nname = \"x\"\n\n[component.web]\nsource = \"web.wasm\"\nroute = \"/\"\n",
        &[("web.wasm", "<html>not wasm</html>")],
    );
    assert!(err.contains("component.web.source"), "{err}");
    assert!(err.contains("not a WebAssembly file"), "{err}");
}

#[test]
fn a_component_that_is_not_an_http_handler() {
    let command = guest("cli-guest");
    let manifest = format!(
        "[app]\nname = \"x\"\n\n[component.web]\nsource = \"{}\"\nroute = \"/\"\n",
        command.display()
    );
    let err = up_fails(&manifest, &[]);
    assert!(err.contains("component.web.source"), "{err}");
    assert!(err.contains("wasi:http/incoming-handler"), "{err}");
    assert!(err.contains("skiff.toml:5:"), "{err}");
}

#[test]
fn colliding_routes() {
    let wasm = http_wasm();
    let manifest = format!(
        "[app]\nname = \"x\"\n\n[component.a]\nsource = \"{wasm}\"\nroute = \"/api/...\"\n\n\
         [component.b]\nsource = \"{wasm}\"\nroute = \"/api/...\"\n"
    );
    let err = up_fails(&manifest, &[]);
    assert!(err.contains("/api/..."), "{err}");
    assert!(err.contains("component.b.route"), "{err}");
    assert!(err.contains('a') && err.contains("skiff.toml:10:"), "{err}");
}

#[test]
fn malformed_host_pattern() {
    let manifest = format!(
        "[app]\nname = \"x\"\n\n[component.web]\nsource = \"{}\"\nroute = \"/\"\n\
         allowed_outbound_hosts = [\"https://api.example.com/v1\"]\n",
        http_wasm()
    );
    let err = up_fails(&manifest, &[]);
    assert!(err.contains("allowed_outbound_hosts"), "{err}");
    assert!(err.contains("https://api.example.com/v1"), "{err}");
    assert!(err.contains("skiff.toml:7:"), "{err}");
}

#[test]
fn toml_syntax_error() {
    let err = up_fails("[app\nname = \"x\"\n", &[]);
    assert!(err.contains("skiff.toml:1:"), "{err}");
}

#[test]
fn missing_manifest() {
    let dir = tempfile::tempdir().unwrap();
    let output = skiff()
        .current_dir(dir.path())
        .args(["up", "--listen", "127.0.0.1:0"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let err = String::from_utf8_lossy(&output.stderr);
    assert!(err.contains("skiff.toml"), "{err}");
}

#[test]
fn malformed_schedules_are_manifest_errors_naming_the_field_and_the_fix() {
    let wasm = guest("state-guest");
    let app = format!(
        "[app]\nname = \"x\"\n\n[component.job]\nsource = \"{}\"\n\n[[component.job.schedule]]\n",
        wasm.display()
    );
    for (body, field, fix) in [
        (
            "cron = \"* * *\"\n",
            "component.job.schedule[0].cron",
            "six with leading seconds",
        ),
        // February 30th never comes.
        (
            "cron = \"0 0 30 2 *\"\n",
            "component.job.schedule[0].cron",
            "never fires",
        ),
        (
            "cron = \"* * * * *\"\ntimezone = \"Europe/Pari\"\n",
            "component.job.schedule[0].timezone",
            "did you mean \"Europe/Paris\"?",
        ),
        (
            "cron = \"* * * * *\"\npath = \"jobs\"\n",
            "component.job.schedule[0].path",
            "path = \"/jobs\"",
        ),
        (
            "cron = \"* * * * *\"\noverlap = \"queue\"\n",
            "component.job.schedule[0].overlap",
            "\"allow\"",
        ),
        (
            "cron = \"* * * * *\"\nevery = \"1s\"\n",
            "every",
            "cron, timezone, path, args, overlap",
        ),
    ] {
        let err = up_fails(&format!("{app}{body}"), &[]);
        assert!(err.contains(field), "{field} not named:\n{err}");
        assert!(err.contains(fix), "no fix `{fix}`:\n{err}");
    }
    // A thousand every-second schedules are refused: the cap is per app.
    let mut many = app.replace("[[component.job.schedule]]\n", "");
    for _ in 0..1000 {
        many.push_str("[[component.job.schedule]]\ncron = \"* * * * * *\"\npath = \"/\"\n");
    }
    let err = up_fails(&many, &[]);
    assert!(err.contains("component.job.schedule[32]"), "{err}");
    assert!(err.contains("at most 32 schedules"), "{err}");
}

#[test]
fn a_command_component_serves_no_routes() {
    let manifest = format!(
        "[app]\nname = \"x\"\n\n[component.job]\nsource = \"{}\"\nroute = \"/\"\n",
        guest("cli-guest").display()
    );
    let err = up_fails(&manifest, &[]);
    assert!(err.contains("component.job"), "{err}");
    assert!(err.contains("can run on a schedule"), "{err}");
}
