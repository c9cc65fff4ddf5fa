//! `--engine pulley` (or `SKIFF_ENGINE=pulley`): the same components, the same sandbox, on
//! wasmtime's interpreter instead of native code. Commands keep their exit codes and stdio,
//! HTTP components answer, and a guest that computes for ever is still stopped at its
//! deadline (epochs) and by its fuel. The whole acceptance suite also runs under Pulley in
//! scripts/test.sh.

#![allow(clippy::unwrap_used, clippy::expect_used)] // A panic here is a failure with its message.

mod common;

use common::{Server, get, guest, guest_p1, skiff};

#[test]
fn commands_run_under_pulley() {
    for wasm in [guest("cli-guest"), guest_p1("cli-guest")] {
        let output = skiff()
            .args(["--engine", "pulley", "run"])
            .arg(&wasm)
            .args(["exit", "7"])
            .output()
            .unwrap();
        assert_eq!(output.status.code(), Some(7), "{}", wasm.display());
        let output = skiff()
            .env("SKIFF_ENGINE", "pulley")
            .arg("run")
            .arg(&wasm)
            .args(["stderr", "from pulley"])
            .output()
            .unwrap();
        assert_eq!(String::from_utf8_lossy(&output.stderr), "from pulley\n");
    }
}

#[tokio::test]
async fn pulley_serves_within_the_same_limits() {
    let wasm = guest("http-guest");
    let server = Server::start(&[
        "--engine",
        "pulley",
        "serve",
        "--timeout",
        "1s",
        wasm.to_str().unwrap(),
    ]);
    assert_eq!(get(&server, "/env/HOME").await, (404, "unset".to_string()));
    let (status, body) = get(&server, "/spin?n=1000").await;
    assert_eq!(status, 200, "{body}");
    // Computing for ever is stopped at the deadline.
    assert_eq!(get(&server, "/spin").await.0, 504);
    assert_eq!(get(&server, "/env/HOME").await.0, 404);

    let fuel = Server::start(&[
        "--engine",
        "pulley",
        "serve",
        "--fuel",
        "50000000",
        wasm.to_str().unwrap(),
    ]);
    let (status, body) = get(&fuel, "/spin").await;
    assert_eq!(status, 500, "{body}");
    assert!(body.contains("CPU budget"), "{body}");
}

#[test]
fn native_and_pulley_code_are_cached_apart() {
    let cache = tempfile::tempdir().unwrap();
    let wasm = guest("cli-guest");
    let compiles = |engine: &str| {
        let output = skiff()
            .env("SKIFF_CACHE_DIR", cache.path())
            .args(["--log-level", "info", "--engine", engine, "run"])
            .arg(&wasm)
            .args(["exit", "0"])
            .output()
            .unwrap();
        assert!(output.status.success());
        String::from_utf8_lossy(&output.stderr)
            .matches("compiling")
            .count()
    };
    assert_eq!(compiles("native"), 1);
    assert_eq!(
        compiles("pulley"),
        1,
        "Pulley took native code from the cache"
    );
    assert_eq!(compiles("pulley"), 0);
    assert_eq!(compiles("native"), 0);
}
