//! The compiled-code cache: a second start compiles nothing, and a damaged entry is
//! detected, discarded and rebuilt.

#![allow(clippy::unwrap_used, clippy::expect_used)] // A panic here is a failure with its message.

mod common;

use std::path::Path;

use common::{Server, client, guest, skiff};

fn entries(dir: &Path, suffix: &str) -> Vec<std::path::PathBuf> {
    let mut found: Vec<_> = std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .map(|entry| entry.unwrap().path())
                .filter(|path| path.to_string_lossy().ends_with(suffix))
                .collect()
        })
        .unwrap_or_default();
    found.sort();
    found
}

fn serve_with_cache(cache: &Path) -> Server {
    let wasm = guest("http-guest");
    let mut command = skiff();
    command.env("SKIFF_CACHE_DIR", cache);
    Server::start_with(
        command,
        &[
            "--log-level",
            "info,skiff_runtime=debug",
            "serve",
            wasm.to_str().unwrap(),
        ],
    )
}

async fn answers(server: &Server) {
    let response = client().get(server.url("/count")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.text().await.unwrap().trim(), "1");
}

#[tokio::test]
async fn the_second_start_compiles_nothing() {
    let cache = tempfile::tempdir().unwrap();

    let first = serve_with_cache(cache.path());
    answers(&first).await;
    let logs = first.logs();
    assert!(logs.contains("compiling"), "{logs}");
    drop(first);
    let compiled = entries(cache.path(), ".cwasm");
    assert_eq!(compiled.len(), 1, "{compiled:?}");
    let written = std::fs::metadata(&compiled[0]).unwrap().modified().unwrap();

    let second = serve_with_cache(cache.path());
    answers(&second).await;
    let logs = second.logs();
    assert!(!logs.contains("compiling"), "{logs}");
    assert!(logs.contains("code cache hit"), "{logs}");
    assert_eq!(entries(cache.path(), ".cwasm"), compiled);
    assert_eq!(
        std::fs::metadata(&compiled[0]).unwrap().modified().unwrap(),
        written
    );
}

#[tokio::test]
async fn a_corrupted_entry_is_discarded_and_rebuilt() {
    let cache = tempfile::tempdir().unwrap();
    drop(serve_with_cache(cache.path()));
    let compiled = entries(cache.path(), ".cwasm").remove(0);

    // Flip bytes in the middle of the compiled code, where a header check would not look.
    let mut bytes = std::fs::read(&compiled).unwrap();
    let middle = bytes.len() / 2;
    for byte in &mut bytes[middle..middle + 64] {
        *byte ^= 0xff;
    }
    std::fs::write(&compiled, &bytes).unwrap();

    let server = serve_with_cache(cache.path());
    answers(&server).await;
    let logs = server.logs();
    assert!(logs.contains("corrupted"), "{logs}");
    assert!(logs.contains("compiling"), "{logs}");
    assert_ne!(
        std::fs::read(&compiled).unwrap(),
        bytes,
        "the entry was not rebuilt"
    );

    // A truncated entry is caught the same way.
    drop(server);
    let len = std::fs::metadata(&compiled).unwrap().len();
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(&compiled)
        .unwrap();
    file.set_len(len / 3).unwrap();
    drop(file);
    let server = serve_with_cache(cache.path());
    answers(&server).await;
    assert!(server.logs().contains("corrupted"), "{}", server.logs());
}

#[test]
fn concurrent_starts_compile_once() {
    let cache = tempfile::tempdir().unwrap();
    let wasm = guest("cli-guest");
    let runs: Vec<_> = (0..3)
        .map(|_| {
            let mut command = skiff();
            // `run` logs its compiling only to a terminal, or when asked.
            command.env("SKIFF_CACHE_DIR", cache.path()).args([
                "--log-level",
                "info",
                "run",
                wasm.to_str().unwrap(),
                "exit",
                "0",
            ]);
            command
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let compiles = runs
        .into_iter()
        .map(|child| {
            let output = child.wait_with_output().unwrap();
            assert!(output.status.success());
            String::from_utf8_lossy(&output.stderr)
                .matches("compiling")
                .count()
        })
        .sum::<usize>();
    assert_eq!(compiles, 1);
    assert_eq!(entries(cache.path(), ".cwasm").len(), 1);
}

#[test]
fn cache_location_flags() {
    let wasm = guest("cli-guest");
    let from_env = tempfile::tempdir().unwrap();
    let from_flag = tempfile::tempdir().unwrap();
    let run = |extra: &[&str]| {
        let status = skiff()
            .env("SKIFF_CACHE_DIR", from_env.path())
            .args(extra)
            .args(["run", wasm.to_str().unwrap(), "exit", "0"])
            .status()
            .unwrap();
        assert!(status.success());
    };
    run(&["--no-cache"]);
    assert!(entries(from_env.path(), ".cwasm").is_empty());
    run(&["--cache-dir", from_flag.path().to_str().unwrap()]);
    assert!(entries(from_env.path(), ".cwasm").is_empty());
    assert_eq!(entries(from_flag.path(), ".cwasm").len(), 1);
    run(&[]);
    assert_eq!(entries(from_env.path(), ".cwasm").len(), 1);
}

#[tokio::test]
async fn an_entry_of_other_code_under_this_key_is_never_loaded() {
    // Checksums alone would pass an intact entry moved under another key: each entry must
    // also say which engine compiled which bytes.
    let cache = tempfile::tempdir().unwrap();
    drop(serve_with_cache(cache.path()));
    let ours = entries(cache.path(), ".cwasm").remove(0);
    let other_cache = tempfile::tempdir().unwrap();
    let state = guest("state-guest");
    let mut command = skiff();
    command.env("SKIFF_CACHE_DIR", other_cache.path());
    drop(Server::start_with(
        command,
        &["serve", state.to_str().unwrap()],
    ));
    let theirs = entries(other_cache.path(), ".cwasm").remove(0);
    std::fs::copy(&theirs, &ours).unwrap();
    std::fs::copy(
        theirs.with_extension("").with_extension("b3"),
        ours.with_extension("").with_extension("b3"),
    )
    .unwrap();

    let server = serve_with_cache(cache.path());
    answers(&server).await;
    let logs = server.logs();
    assert!(logs.contains("corrupted"), "{logs}");
    assert!(logs.contains("compiling"), "{logs}");
}
