//! `skiff new`: every template makes an app that builds with its language's real toolchain
//! (`skiff build`) and then answers on `skiff up` (or runs, for the command and the job). The
//! Python and JavaScript tools are the pinned ones scripts/build-polyglot-guests.sh installs.

#![allow(clippy::unwrap_used, clippy::expect_used)] // A panic here is a failure with its message.

mod common;

use std::path::Path;
use std::process::{Command, Output};

use common::{Server, client, installed_tool, polyglot_guest, shipped_wasm_component_ld, skiff};

/// `skiff new TEMPLATE NAME --dir <fresh folder>/NAME`.
fn new_app(template: &str, name: &str) -> (tempfile::TempDir, std::path::PathBuf) {
    let parent = tempfile::tempdir().unwrap();
    let dir = parent.path().join(name);
    let output = skiff()
        .args(["new", template, name, "--dir"])
        .arg(&dir)
        .output()
        .unwrap();
    assert_success(&output, "skiff new");
    let said = String::from_utf8_lossy(&output.stdout);
    assert!(said.contains("skiff build"), "{said}");
    (parent, dir)
}

/// Puts `dir` first on `command`'s PATH.
fn prepend_path(command: &mut Command, dir: &Path) {
    let path = format!("{}:{}", dir.display(), std::env::var("PATH").unwrap());
    command.env("PATH", path);
}

fn assert_success(output: &Output, what: &str) {
    assert!(
        output.status.success(),
        "{what} failed ({}):\nstdout:\n{}\nstderr:\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// `skiff build` in `dir`, with `command` adjusted (tools on PATH) by the caller.
fn build(mut command: Command, dir: &Path) {
    let output = command.arg("build").current_dir(dir).output().unwrap();
    assert_success(&output, "skiff build");
    let said = String::from_utf8_lossy(&output.stderr);
    assert!(said.contains("Finished: app"), "{said}");
}

async fn answers(dir: &Path, name: &str) {
    let server = Server::start(&["up", dir.to_str().unwrap()]);
    let response = client().patch(server.url("/hi?x=1")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.text().await.unwrap(),
        format!("Hello from {name}! You asked for PATCH /hi?x=1\n")
    );
}

#[tokio::test]
async fn the_rust_http_template_builds_and_answers() {
    let (_keep, dir) = new_app("http-rust", "web-api");
    build(skiff(), &dir);
    answers(&dir, "web-api").await;
}

#[tokio::test]
async fn the_python_http_template_builds_and_answers() {
    // Installs the pinned componentize-py, as a user's `pip install` would.
    polyglot_guest("python", "python_http.wasm");
    let tools = installed_tool("componentize-py").expect("componentize-py is installed");
    let (_keep, dir) = new_app("http-python", "py-api");
    let mut command = skiff();
    command.env("PYTHONPATH", &tools);
    prepend_path(&mut command, &tools.join("bin"));
    build(command, &dir);
    answers(&dir, "py-api").await;
}

#[tokio::test]
async fn the_javascript_http_template_builds_and_answers() {
    // The build runs `npm install` in the app: warm npm's cache with the same packages first.
    polyglot_guest("js", "js_http.wasm");
    let (_keep, dir) = new_app("http-js", "js-api");
    build(skiff(), &dir);
    answers(&dir, "js-api").await;
}

#[tokio::test]
async fn the_c_http_template_builds_and_answers() {
    // Installs the pinned wit-bindgen, as the README's `cargo install` would; clang, wasm-ld and
    // wasi-libc are the system's (.ci/run installs Debian's).
    polyglot_guest("c", "c_http.wasm");
    let (_keep, dir) = new_app("http-c", "c-api");
    let mut command = skiff();
    if let Some(tools) = installed_tool("wit-bindgen") {
        prepend_path(&mut command, &tools.join("bin"));
    }
    if let Some(linker) = shipped_wasm_component_ld() {
        command.env("WASM_COMPONENT_LD", linker);
    }
    build(command, &dir);
    answers(&dir, "c-api").await;
}

#[test]
fn the_rust_command_template_builds_and_runs() {
    let (_keep, dir) = new_app("command-rust", "tool");
    build(skiff(), &dir);
    let output = skiff()
        .args(["run", "--env", "GREETING_NAME=tests"])
        .arg(dir.join("target/wasm32-wasip2/release/tool.wasm"))
        .args(["one", "two"])
        .output()
        .unwrap();
    assert_success(&output, "skiff run");
    assert_eq!(
        String::from_utf8_lossy(&output.stdout),
        "Hello, tests, from tool!\narguments: one two\n"
    );
}

#[test]
fn the_rust_job_template_runs_on_its_schedule() {
    let (_keep, dir) = new_app("job-rust", "nightly-report");
    build(skiff(), &dir);
    let server = Server::start(&["up", dir.to_str().unwrap()]);
    assert!(
        server
            .stdout_lines
            .iter()
            .any(|line| line.contains("*/10 * * * * *")),
        "{:?}",
        server.stdout_lines
    );
    // It runs every ten seconds.
    let logs = server.wait_for_log_within("nightly-report: tick job ran at unix time", 25);
    assert!(
        logs.contains("nightly-report: tick job ran at unix time"),
        "{logs}"
    );
}

#[test]
fn new_lists_its_templates_and_refuses_what_it_cannot_make() {
    let output = skiff().args(["new", "--list"]).output().unwrap();
    assert_success(&output, "skiff new --list");
    let list = String::from_utf8_lossy(&output.stdout);
    for template in [
        "http-rust",
        "http-python",
        "http-js",
        "http-c",
        "command-rust",
        "job-rust",
    ] {
        assert!(list.contains(template), "{list}");
    }

    let parent = tempfile::tempdir().unwrap();
    let refused = |args: &[&str], says: &str| {
        let output = skiff()
            .args(args)
            .current_dir(parent.path())
            .output()
            .unwrap();
        assert!(!output.status.success(), "{args:?} succeeded");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(says), "{args:?}: {stderr}");
    };
    refused(&["new", "http-cobol", "x"], "no template `http-cobol`");
    refused(&["new", "http-rust", "My_App"], "e.g. `my-app`");
    refused(&["new", "http-rust"], "NAME");
    std::fs::create_dir(parent.path().join("taken")).unwrap();
    std::fs::write(parent.path().join("taken/keep.txt"), "mine").unwrap();
    refused(&["new", "http-rust", "taken"], "is not empty");
    assert_eq!(
        std::fs::read_to_string(parent.path().join("taken/keep.txt")).unwrap(),
        "mine"
    );
    // An empty folder is fine.
    std::fs::create_dir(parent.path().join("empty")).unwrap();
    let output = skiff()
        .args(["new", "http-rust", "empty"])
        .current_dir(parent.path())
        .output()
        .unwrap();
    assert_success(&output, "skiff new into an empty folder");
    let manifest = std::fs::read_to_string(parent.path().join("empty/skiff.toml")).unwrap();
    assert!(manifest.contains("name = \"empty\""), "{manifest}");
    assert!(!manifest.contains("{{"), "{manifest}");
}
