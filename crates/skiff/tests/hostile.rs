//! The hostile-guest suite: guests that loop, hog memory, recurse, panic, reach for files,
//! hosts and addresses they were not granted, flood or hold their response. Each case runs
//! against one real `skiff up` process while a well-behaved component of the same host
//! answers correctly, and the whole suite runs three times over to show that the host's
//! threads, open files and memory do not grow with the abuse.
//!
//! Run with `--nocapture` to see each case's status and time to stop, and the host's
//! resources after every round.

#![allow(clippy::unwrap_used, clippy::expect_used)] // A panic here is a failure with its message.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::{Server, app_dir, guest};

const ROUNDS: usize = 3;

/// What the client must see from a hostile request.
#[derive(Debug, Clone, Copy)]
enum Expect {
    /// A complete response with this status whose body contains the text.
    Status(u16, &'static str),
    /// A 200 head, then a body that breaks off (the deadline cut the guest) instead of ending.
    CutOff,
}

struct Case {
    name: &'static str,
    path: String,
    expect: Expect,
    /// Text that a new log line must hold: the cause, named by the host (or, for file access
    /// that WASI cannot even express, by the guest's own stderr, which the host logs).
    log: &'static str,
    /// Text the response body must never contain (a leaked secret).
    never: Option<&'static str>,
}

struct Suite {
    _dir: tempfile::TempDir,
    server: Server,
    port: u16,
}

impl Suite {
    /// A host serving the suite's app, started with `options` besides.
    fn start(options: &[&str]) -> Suite {
        let wasm = guest("http-guest");
        let wasm = wasm.to_str().unwrap();
        let manifest = format!(
            r#"
[app]
name = "hostile-suite"

[component.good]
source = "{wasm}"
route = "/good/..."
environment = {{ SKIFF_TEST_NAME = "good" }}
allowed_outbound_hosts = ["http://127.0.0.1:*"]

[component.evil]
source = "{wasm}"
route = "/evil/..."
files = [{{ source = "granted", destination = "/data" }}]
allowed_outbound_hosts = ["https://allowed.example.com"]
limits = {{ timeout = "1s", memory = "32MiB" }}

[component.wildcard]
source = "{wasm}"
route = "/wildcard/..."
allowed_outbound_hosts = ["*://*:*"]
limits = {{ timeout = "1s" }}

[component.unlimited]
source = "{wasm}"
route = "/unlimited/..."

[component.named]
source = "{wasm}"
route = "/named/..."
allowed_outbound_hosts = ["http://localhost:*"]

[component.fuel]
source = "{wasm}"
route = "/fuel/..."
limits = {{ timeout = "10s", fuel = 200_000_000 }}
"#
        );
        let dir = app_dir(&[
            ("skiff.toml", &manifest),
            ("granted/inside.txt", "inside the grant\n"),
            ("secret.txt", "TOP-SECRET next to the grant\n"),
        ]);
        // Planted links inside the granted folder that point out of it.
        let granted = dir.path().join("granted");
        std::os::unix::fs::symlink("../secret.txt", granted.join("relative-link")).unwrap();
        std::os::unix::fs::symlink(dir.path().join("secret.txt"), granted.join("absolute-link"))
            .unwrap();
        std::os::unix::fs::symlink("/etc/passwd", granted.join("passwd-link")).unwrap();
        let manifest = dir.path().join("skiff.toml");
        let mut args = vec!["up", manifest.to_str().unwrap()];
        args.extend_from_slice(options);
        let server = Server::start(&args);
        let port = server.url.rsplit(':').next().unwrap().parse().unwrap();
        Suite {
            _dir: dir,
            server,
            port,
        }
    }

    fn cases(&self) -> Vec<Case> {
        let port = self.port;
        let case = |name, path: &str, expect, log, never| Case {
            name,
            path: path.to_string(),
            expect,
            log,
            never,
        };
        use Expect::*;
        vec![
            case(
                "loop forever",
                "/evil/spin",
                Status(504, "did not answer in time"),
                "deadline",
                None,
            ),
            case(
                "loop forever, fuel budget",
                "/fuel/spin",
                Status(500, "CPU budget"),
                "fuel budget",
                None,
            ),
            case(
                "allocate until failure",
                "/evil/hog",
                Status(500, "out of memory"),
                "ran out of memory",
                None,
            ),
            case(
                "allocate until failure, no limit set",
                "/unlimited/hog",
                Status(500, "out of memory"),
                "ran out of memory (limit 134217728 bytes)",
                None,
            ),
            case(
                "recurse without end",
                "/evil/recurse?depth=100000000",
                Status(500, "failed"),
                "stack overflow",
                None,
            ),
            case(
                "panic",
                "/evil/panic",
                Status(500, "failed"),
                "panicked",
                None,
            ),
            case(
                "read /etc/passwd",
                "/evil/file?path=/etc/passwd",
                Status(500, ""),
                "cannot read /etc/passwd",
                Some("root:"),
            ),
            case(
                "walk ../ out of the grant",
                "/evil/file?path=/data/../secret.txt",
                Status(500, ""),
                "cannot read /data/../secret.txt",
                Some("TOP-SECRET"),
            ),
            case(
                "walk ../../ to /etc/passwd",
                "/evil/file?path=/data/../../../../../etc/passwd",
                Status(500, ""),
                "cannot read /data/../../",
                Some("root:"),
            ),
            case(
                "relative symlink out of the grant",
                "/evil/file?path=/data/relative-link",
                Status(500, ""),
                "cannot read /data/relative-link",
                Some("TOP-SECRET"),
            ),
            case(
                "absolute symlink out of the grant",
                "/evil/file?path=/data/absolute-link",
                Status(500, ""),
                "cannot read /data/absolute-link",
                Some("TOP-SECRET"),
            ),
            case(
                "symlink to /etc/passwd",
                "/evil/file?path=/data/passwd-link",
                Status(500, ""),
                "cannot read /data/passwd-link",
                Some("root:"),
            ),
            case(
                "ungranted outbound host",
                "/evil/fetch?url=http://example.com/",
                Status(502, "HttpRequestDenied"),
                "denied outbound request to http://example.com",
                None,
            ),
            case(
                "127.0.0.1, not granted",
                &format!("/evil/fetch?url=http://127.0.0.1:{port}/good/"),
                Status(502, "HttpRequestDenied"),
                "denied outbound request to http://127.0.0.1",
                None,
            ),
            case(
                "127.0.0.1 via a wildcard",
                &format!("/wildcard/fetch?url=http://127.0.0.1:{port}/good/"),
                Status(502, "DestinationIpProhibited"),
                "refused outbound request to http://127.0.0.1",
                None,
            ),
            case(
                "localhost via a wildcard (after DNS)",
                &format!("/wildcard/fetch?url=http://localhost:{port}/good/"),
                Status(502, "DestinationIpProhibited"),
                "refused outbound request to http://localhost",
                None,
            ),
            case(
                "[::ffff:127.0.0.1] via a wildcard",
                &format!("/wildcard/fetch?url=http://[::ffff:127.0.0.1]:{port}/good/"),
                Status(502, "DestinationIpProhibited"),
                "refused outbound request to http://[::ffff:127.0.0.1]",
                None,
            ),
            case(
                "169.254.169.254 (cloud metadata)",
                "/wildcard/fetch?url=http://169.254.169.254/latest/meta-data/",
                Status(502, "DestinationIpProhibited"),
                "refused outbound request to http://169.254.169.254",
                None,
            ),
            case(
                "huge response",
                "/evil/big?n=1000000000000",
                CutOff,
                "failed after sending its response head",
                None,
            ),
            case(
                "hold the response open",
                "/evil/hold",
                CutOff,
                "failed after sending its response head",
                None,
            ),
            case(
                "never answer",
                "/evil/sleep?ms=100000000",
                Status(504, "did not answer in time"),
                "deadline",
                None,
            ),
        ]
    }

    fn log_count(&self, needle: &str) -> usize {
        self.server.logs().matches(needle).count()
    }
}

/// What one hostile request did, as the client saw it.
struct Outcome {
    status: u16,
    body: String,
    cut_off: bool,
    bytes: u64,
    time_to_stop: Duration,
}

async fn hostile_request(client: &reqwest::Client, url: String) -> Outcome {
    let start = Instant::now();
    let mut response = client.get(url).send().await.unwrap();
    let status = response.status().as_u16();
    let (mut body, mut bytes, mut cut_off) = (Vec::new(), 0u64, false);
    loop {
        match response.chunk().await {
            Ok(Some(chunk)) => {
                bytes += chunk.len() as u64;
                if body.len() < 64 << 10 {
                    body.extend_from_slice(&chunk);
                }
            }
            Ok(None) => break,
            Err(_) => {
                cut_off = true;
                break;
            }
        }
    }
    Outcome {
        status,
        body: String::from_utf8_lossy(&body).into_owned(),
        cut_off,
        bytes,
        time_to_stop: start.elapsed(),
    }
}

/// Runs `hostile` while a neighbour keeps calling the well-behaved component, and checks
/// every neighbour answer. Returns the hostile result and how many neighbour calls succeeded.
async fn beside_a_neighbour<T>(
    client: &reqwest::Client,
    base: &str,
    hostile: impl Future<Output = T>,
) -> (T, usize) {
    let stop = Arc::new(AtomicBool::new(false));
    let neighbour = tokio::spawn({
        let (client, url, stop) = (client.clone(), format!("{base}/good/hello"), stop.clone());
        async move {
            let mut answered = 0;
            loop {
                let response = client.get(&url).send().await.unwrap();
                assert_eq!(response.status(), 200, "the neighbour failed");
                let body = response.text().await.unwrap();
                assert!(body.starts_with("component=good "), "{body}");
                answered += 1;
                if stop.load(Ordering::Relaxed) {
                    return answered;
                }
            }
        }
    });
    let result = hostile.await;
    stop.store(true, Ordering::Relaxed);
    (result, neighbour.await.expect("the neighbour task failed"))
}

/// Threads, open files and resident memory of a process.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Resources {
    threads: usize,
    fds: usize,
    rss_kib: u64,
}

fn resources(pid: u32) -> Resources {
    let count = |dir: &str| {
        std::fs::read_dir(format!("/proc/{pid}/{dir}"))
            .unwrap()
            .count()
    };
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let rss_kib = status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    Resources {
        threads: count("task"),
        fds: count("fd"),
        rss_kib,
    }
}

/// Resources once the host has closed the connections of a round (it notices the clients'
/// closes asynchronously, so wait until the open-file count stops moving).
async fn settled_resources(pid: u32) -> Resources {
    let mut last = resources(pid);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let now = resources(pid);
        if now.fds == last.fds || Instant::now() > deadline {
            return now;
        }
        last = now;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn hostile_guests_fail_alone_and_the_host_survives() {
    let suite = Suite::start(&[]);
    let pid = suite.server.pid();
    let base = suite.server.url.clone();
    let before = resources(pid);
    let mut after_round = Vec::new();
    let mut table = Vec::new();

    for round in 0..ROUNDS {
        // A fresh client per round: its connections close with it, so open files can settle.
        let client = reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(60))
            .build()
            .unwrap();
        for case in suite.cases() {
            let logged_before = suite.log_count(case.log);
            let url = format!("{base}{}", case.path);
            let (outcome, neighbour_answers) =
                beside_a_neighbour(&client, &base, hostile_request(&client, url)).await;
            let what = format!("{} ({}, round {round})", case.name, case.path);

            match case.expect {
                Expect::Status(status, text) => {
                    assert_eq!(outcome.status, status, "{what}: {}", outcome.body);
                    assert!(!outcome.cut_off, "{what}: the response broke off");
                    assert!(outcome.body.contains(text), "{what}: {}", outcome.body);
                }
                Expect::CutOff => {
                    assert_eq!(outcome.status, 200, "{what}");
                    assert!(outcome.cut_off, "{what}: the body ended normally");
                }
            }
            // A hostile request that runs for long must not starve the neighbour: it goes on
            // being served all along (dozens of answers a second even on a loaded machine;
            // a guest that kept its worker thread to itself would let through one or two).
            if outcome.time_to_stop >= Duration::from_millis(500) {
                assert!(
                    neighbour_answers >= 5,
                    "{what}: the neighbour was starved ({neighbour_answers} answers in {:?})",
                    outcome.time_to_stop
                );
            }
            if let Some(secret) = case.never {
                assert!(
                    !outcome.body.contains(secret),
                    "{what} leaked: {}",
                    outcome.body
                );
            }
            let deadline = Instant::now() + Duration::from_secs(10);
            while suite.log_count(case.log) <= logged_before {
                assert!(
                    Instant::now() < deadline,
                    "{what}: no new log line holds {:?}; log:\n{}",
                    case.log,
                    suite.server.logs()
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            // The host itself answers with no host details: no paths, no backtraces.
            if outcome.status >= 500 && outcome.status != 502 {
                assert!(!outcome.body.contains('/'), "{what}: {}", outcome.body);
            }
            if round == 0 {
                table.push(format!(
                    "| {} | {}{} | {:.0} ms | {} bytes | {} |",
                    case.name,
                    outcome.status,
                    if outcome.cut_off { ", cut off" } else { "" },
                    outcome.time_to_stop.as_secs_f64() * 1000.0,
                    outcome.bytes,
                    neighbour_answers,
                ));
            }
        }
        drop(client);
        after_round.push(settled_resources(pid).await);
    }

    println!("| case | client saw | time to stop | body | neighbour answers meanwhile |");
    println!("|---|---|---|---|---|");
    for line in &table {
        println!("{line}");
    }
    println!("host before the suite: {before:?}");
    for (round, r) in after_round.iter().enumerate() {
        println!("host after round {}: {r:?}", round + 1);
    }

    // The first round warms up pools (tokio's blocking threads, the instance pool); after it,
    // more abuse must not cost more threads, files or memory.
    let (first, last) = (after_round[0], after_round[ROUNDS - 1]);
    assert!(
        last.fds <= first.fds,
        "open files grew: {first:?} -> {last:?}"
    );
    assert!(
        last.threads <= first.threads + 2,
        "threads grew: {first:?} -> {last:?}"
    );
    assert!(
        last.rss_kib <= first.rss_kib + 32 * 1024,
        "resident memory grew by more than 32 MiB: {first:?} -> {last:?}"
    );
    // Naming a private host exactly is how an app reaches one: by IP, and by name after DNS.
    let port = suite.port;
    for path in [
        format!("/good/fetch?url=http://127.0.0.1:{port}/good/x"),
        format!("/named/fetch?url=http://localhost:{port}/good/x"),
    ] {
        let response = common::client()
            .get(format!("{base}{path}"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{path}");
        assert_eq!(response.text().await.unwrap(), "status=200", "{path}");
    }
    // And the host still serves.
    let body = common::client()
        .get(format!("{base}/good/still-there"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(body.starts_with("component=good "), "{body}");
}

/// On one thread (`--threads 1`, what a host with one CPU runs) nothing can steal the
/// neighbour's work while a guest computes: the guest's yield at every epoch tick is all that
/// lets the neighbour through. It must still be served all along, and the hostile requests
/// still stopped on time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_single_threaded_host_keeps_serving_a_neighbour_while_a_guest_computes() {
    let suite = Suite::start(&["--threads", "1", "--log-level", "info,skiff=debug"]);
    let base = suite.server.url.clone();
    let client = common::client();
    for (path, expect) in [
        ("/evil/spin", Expect::Status(504, "did not answer in time")),
        ("/evil/big?n=1000000000000", Expect::CutOff),
    ] {
        let (outcome, neighbour_answers) = beside_a_neighbour(
            &client,
            &base,
            hostile_request(&client, format!("{base}{path}")),
        )
        .await;
        match expect {
            Expect::Status(status, text) => {
                assert_eq!(outcome.status, status, "{path}: {}", outcome.body);
                assert!(outcome.body.contains(text), "{path}: {}", outcome.body);
            }
            Expect::CutOff => assert!(outcome.cut_off, "{path}: the body ended normally"),
        }
        assert!(
            outcome.time_to_stop < Duration::from_secs(5),
            "{path}: stopped only after {:?}",
            outcome.time_to_stop
        );
        assert!(
            neighbour_answers >= 5,
            "{path}: the neighbour was starved ({neighbour_answers} answers in {:?})",
            outcome.time_to_stop
        );
        println!(
            "{path}: stopped after {:?}, {neighbour_answers} neighbour answers meanwhile",
            outcome.time_to_stop
        );
    }
    // The host did run on one thread. (Counting its threads cannot tell: tokio's blocking
    // pool adds threads as file and DNS work comes and goes.)
    let logs = suite.server.logs();
    assert!(
        logs.contains("serving from a single-threaded runtime"),
        "no line says so: {logs}"
    );
}
