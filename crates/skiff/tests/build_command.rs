//! `skiff build`: each component's `[component.X.build] command` runs in its workdir with its
//! output on the terminal, a failure names the component and stops, and the app is then
//! loaded as `skiff up` would load it, so a build that made something unservable fails here.

#![allow(clippy::unwrap_used, clippy::expect_used)] // A panic here is a failure with its message.

mod common;

use std::path::Path;
use std::process::Output;

use common::{app_dir, guest, guest_p1, skiff};

fn build(dir: &Path, extra: &[&str]) -> Output {
    skiff()
        .arg("build")
        .args(extra)
        .current_dir(dir)
        .output()
        .unwrap()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// A manifest whose two components copy prebuilt guests into place, each logging its run
/// into `runs.log`.
fn two_builds() -> tempfile::TempDir {
    let http = guest("http-guest");
    let cli = guest("cli-guest");
    let manifest = format!(
        r#"[app]
name = "built"

[component.web]
source = "out/web.wasm"
route = "/..."
build = {{ command = "mkdir -p out && cp '{}' out/web.wasm && echo web-tool-output && echo web >> runs.log" }}

[component.job]
source = "job/job.wasm"
[component.job.build]
command = "cp '{}' job.wasm && echo job >> ../runs.log"
workdir = "job"
"#,
        http.display(),
        cli.display()
    );
    app_dir(&[("skiff.toml", &manifest), ("job/.keep", "")])
}

#[test]
fn build_runs_each_components_command_in_its_workdir_then_checks_the_app() {
    let dir = two_builds();
    let output = build(dir.path(), &[]);
    let said = stderr(&output);
    assert!(output.status.success(), "{said}");
    // The tool's own output passes through.
    assert!(
        String::from_utf8_lossy(&output.stdout).contains("web-tool-output"),
        "{output:?}"
    );
    assert!(said.contains("Building component `web`"), "{said}");
    assert!(said.contains("Building component `job`"), "{said}");
    assert!(
        said.contains("Finished: app `built` loads (2 components)"),
        "{said}"
    );
    assert_eq!(
        std::fs::read_to_string(dir.path().join("runs.log")).unwrap(),
        "web\njob\n"
    );

    // `-c` picks components.
    let output = build(dir.path(), &["-c", "job"]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(
        std::fs::read_to_string(dir.path().join("runs.log")).unwrap(),
        "web\njob\njob\n"
    );
    let output = build(dir.path(), &["-c", "nope"]);
    assert!(!output.status.success());
    assert!(
        stderr(&output).contains("no component `nope` with a `build` table"),
        "{}",
        stderr(&output)
    );
}

#[test]
fn a_failed_build_names_the_component_and_keeps_the_tools_words() {
    let dir = app_dir(&[(
        "skiff.toml",
        r#"[app]
name = "broken"

[component.first]
source = "first.wasm"
build = { command = "echo 'src/lib.rs:3: expected `;`' >&2; exit 3" }

[component.second]
source = "second.wasm"
build = { command = "touch second-ran" }
"#,
    )]);
    let output = build(dir.path(), &[]);
    assert!(!output.status.success());
    let said = stderr(&output);
    assert!(said.contains("src/lib.rs:3: expected `;`"), "{said}");
    assert!(
        said.contains(
            "component `first`: the build command `echo 'src/lib.rs:3: expected `;`' >&2; \
             exit 3` failed with exit code 3 (its output is above)"
        ),
        "{said}"
    );
    // The builds after a failure do not run.
    assert!(!dir.path().join("second-ran").exists());
}

#[test]
fn a_build_that_makes_nothing_servable_fails() {
    let core_module = guest_p1("cli-guest");
    let cases = [
        // Nothing where `source` points.
        (
            "true".to_string(),
            "the build command succeeded but made no",
        ),
        // A core module where a component belongs: the manifest's check.
        (
            format!("cp '{}' app.wasm", core_module.display()),
            "is a core WebAssembly module, not a component",
        ),
        // A component header over garbage: the runtime's check, told at the source field.
        (
            r"printf '\000asm\015\000\001\000garbage' > app.wasm".to_string(),
            "component.app.source",
        ),
    ];
    for (command, says) in cases {
        let manifest = format!(
            "[app]\nname = \"bad\"\n\n[component.app]\nsource = \"app.wasm\"\nroute = \"/\"\n\
             build = {{ command = {command:?} }}\n"
        );
        let dir = app_dir(&[("skiff.toml", &manifest)]);
        let output = build(dir.path(), &[]);
        let said = stderr(&output);
        assert!(!output.status.success(), "{command}: {said}");
        assert!(said.contains(says), "{command}: {said}");
    }

    let dir = app_dir(&[(
        "skiff.toml",
        "[app]\nname = \"bad\"\n\n[component.app]\nsource = \"app.wasm\"\n\
         build = { command = \"true\", workdir = \"missing\" }\n",
    )]);
    let said = stderr(&build(dir.path(), &[]));
    assert!(
        said.contains("its build's workdir") && said.contains("is not a folder"),
        "{said}"
    );
}

/// A required variable is the operator's to give when the app runs: `skiff build` checks the
/// app without it (`skiff up` still refuses to start without it).
#[test]
fn build_does_not_need_the_values_of_required_variables() {
    let manifest = format!(
        "[app]\nname = \"secretive\"\n\n[variables]\napi_token = {{ required = true, secret = true }}\n\n\
         [component.web]\nsource = \"web.wasm\"\nroute = \"/...\"\n\
         variables = {{ token = \"{{{{ api_token }}}}\" }}\n\
         build = {{ command = \"cp '{}' web.wasm\" }}\n",
        guest("http-guest").display()
    );
    let dir = app_dir(&[("skiff.toml", &manifest)]);
    let output = build(dir.path(), &[]);
    assert!(output.status.success(), "{}", stderr(&output));
    let up = skiff()
        .args(["up", "--listen", "127.0.0.1:0"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(!up.status.success());
    assert!(
        stderr(&up).contains("the required variable `api_token` has no value"),
        "{}",
        stderr(&up)
    );
}
