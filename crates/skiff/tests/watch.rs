//! `skiff up --watch`: a change to a file a build watches rebuilds that component and swaps the
//! new app in while requests in flight finish on the old one; a change to the manifest
//! reloads it; a failed build or a broken manifest is told and the old app keeps serving;
//! files no pattern names change nothing.

#![allow(clippy::unwrap_used, clippy::expect_used)] // A panic here is a failure with its message.

mod common;

use std::path::Path;
use std::time::Duration;

use common::{Server, app_dir, client, eventually, get, guest, repo_root};

/// The build copies the component named in `src/which.txt` into place and logs each run.
fn manifest(route: &str) -> String {
    format!(
        r#"[app]
name = "watched"

[component.web]
source = "out/web.wasm"
route = "{route}"

[component.web.build]
command = "mkdir -p out && cp \"$(cat src/which.txt)\" out/web.wasm && echo built >> builds.log"
watch = ["src/*.txt"]
"#
    )
}

fn builds(dir: &Path) -> usize {
    std::fs::read_to_string(dir.join("builds.log"))
        .unwrap_or_default()
        .lines()
        .count()
}

#[tokio::test]
async fn watch_rebuilds_and_swaps_the_app_without_dropping_requests() {
    let http_guest = guest("http-guest").display().to_string();
    let hello = repo_root()
        .join("examples/hello/hello.wasm")
        .display()
        .to_string();
    let dir = app_dir(&[
        ("skiff.toml", &manifest("/...")),
        ("src/which.txt", &http_guest),
        ("src/notes.md", "not watched"),
    ]);
    let server = Server::start(&["up", "--watch", dir.path().to_str().unwrap()]);
    assert_eq!(builds(dir.path()), 1);
    assert_eq!(get(&server, "/env/HOME").await.0, 404);

    // A request in flight while the code changes under it.
    let slow = tokio::spawn({
        let url = server.url("/sleep?ms=1500");
        async move {
            let response = client().get(url).send().await.unwrap();
            (response.status().as_u16(), response.text().await.unwrap())
        }
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    std::fs::write(dir.path().join("src/which.txt"), &hello).unwrap();
    eventually(
        Duration::from_secs(30),
        "the rebuilt app answers",
        || async { get(&server, "/").await == (200, "hello\n".to_string()) },
    )
    .await;
    assert_eq!(builds(dir.path()), 2);
    // The old version finished what it had started.
    assert_eq!(slow.await.unwrap(), (200, "slept".to_string()));
    let logs = server.wait_for_log("Reloaded app `watched`");
    assert!(logs.contains("Changed: src/which.txt"), "{logs}");

    // A file no pattern names: no build.
    std::fs::write(dir.path().join("src/notes.md"), "still not watched").unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(builds(dir.path()), 2);

    // A failed build is told, and the app that was serving goes on.
    std::fs::write(dir.path().join("src/which.txt"), "/no/such/file.wasm").unwrap();
    let logs = server.wait_for_log("failed with exit code");
    assert!(
        logs.contains("component `web`: the build command"),
        "{logs}"
    );
    assert_eq!(get(&server, "/").await, (200, "hello\n".to_string()));

    // The manifest: a broken one is told and waited out; a fixed one reloads without a build.
    std::fs::write(dir.path().join("src/which.txt"), &hello).unwrap();
    eventually(Duration::from_secs(30), "the fourth build", || async {
        builds(dir.path()) == 3
    })
    .await;
    std::fs::write(dir.path().join("skiff.toml"), "[app\nname = ").unwrap();
    let logs = server.wait_for_log("skiff.toml:1");
    assert!(logs.contains("error"), "{logs}");
    assert_eq!(get(&server, "/").await, (200, "hello\n".to_string()));
    std::fs::write(dir.path().join("skiff.toml"), manifest("/v2/...")).unwrap();
    // Under `/v2/...` the component sees the path below it.
    eventually(Duration::from_secs(30), "the new route", || async {
        get(&server, "/v2/x").await == (200, "hello, x\n".to_string())
    })
    .await;
    assert_eq!(get(&server, "/").await.0, 404);
    assert_eq!(builds(dir.path()), 3);
}

#[test]
fn watch_waits_for_a_first_build_that_works() {
    let dir = app_dir(&[
        ("skiff.toml", &manifest("/...")),
        ("src/which.txt", "/no/such/file.wasm"),
    ]);
    let fix = {
        let which = dir.path().join("src/which.txt");
        let hello = repo_root().join("examples/hello/hello.wasm");
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_secs(2));
            std::fs::write(which, hello.display().to_string()).unwrap();
        })
    };
    // Serving starts once the fixed build has run.
    let server = Server::start(&["up", "--watch", dir.path().to_str().unwrap()]);
    fix.join().unwrap();
    let logs = server.logs();
    assert!(logs.contains("failed with exit code"), "{logs}");
    assert!(logs.contains("Waiting for a change"), "{logs}");
    assert_eq!(builds(dir.path()), 1);
}

#[test]
fn watch_needs_a_manifest_on_this_machine() {
    let output = common::skiff()
        .args(["up", "--watch", "localhost:5000/apps/hello:v1"])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("a registry reference cannot be watched"),
        "{stderr}"
    );
}
