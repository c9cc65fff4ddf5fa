//! `skiff server`, the multi-tenant host, driven as a user drives it: the real binary as the
//! server, the `skiff` CLI as the client (deploy, apps, tenants, logs), and real guests
//! answering on the data plane by host name.

#![allow(clippy::unwrap_used, clippy::expect_used)] // A panic here is a failure with its message.

mod common;

use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::host::{ADMIN_TOKEN, Host, http_app};
use common::{client, fresh_data_dir, guest, skiff};
use serde_json::Value;

/// An app folder: the state guest as `state.wasm`, with `manifest` as its skiff.toml.
fn state_app(manifest: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(guest("state-guest"), dir.path().join("state.wasm")).unwrap();
    std::fs::write(dir.path().join("skiff.toml"), manifest).unwrap();
    dir
}

/// Waits up to 9 s (less than the server's 10 s shutdown grace) for `child` to exit; kills it
/// and fails with `why` if it does not.
fn wait_for_exit(child: &mut std::process::Child, why: &str) -> std::process::ExitStatus {
    wait_for_exit_within(child, Duration::from_secs(9), why)
}

fn wait_for_exit_within(
    child: &mut std::process::Child,
    bound: Duration,
    why: &str,
) -> std::process::ExitStatus {
    let started = std::time::Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if started.elapsed() > bound {
            let _ = child.kill();
            panic!("{why}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[tokio::test]
async fn deploy_serves_by_host_name_and_updates_roll_back_and_delete() {
    let host = Host::start();
    let token = host.tenant("acme", &[]);
    assert!(token.starts_with("skf_"), "{token}");

    let v1 = http_app(1);
    let out = host.deploy_ok(&token, v1.path(), "hello");
    assert!(out.contains("hello"), "{out}");
    assert_eq!(host.get("hello", "/env/VERSION").await, (200, "1".into()));
    // Host names are case-insensitive; other names are not this app.
    let (status, _) = host.get("HELLO", "/env/VERSION").await;
    assert_eq!(status, 200);
    let (status, body) = host.get("nope", "/").await;
    assert_eq!(status, 404);
    assert!(
        body.contains("no app is deployed at nope.localhost"),
        "{body}"
    );

    let v2 = http_app(2);
    host.deploy_ok(&token, v2.path(), "hello");
    assert_eq!(host.get("hello", "/env/VERSION").await, (200, "2".into()));

    let list = host.cli_ok(&token, &["apps", "list", "--json"]);
    let list: Value = serde_json::from_str(&list).unwrap();
    assert_eq!(list["apps"][0]["name"], "hello");
    assert_eq!(list["apps"][0]["version"], 2);
    let info: Value =
        serde_json::from_str(&host.cli_ok(&token, &["apps", "inspect", "hello", "--json"]))
            .unwrap();
    assert_eq!(info["tenant"], "acme");
    assert_eq!(info["app_version"], "1.0.2");
    assert_eq!(info["routes"][0]["route"], "/...");
    assert_eq!(info["components"][0]["id"], "web");
    assert_eq!(info["versions"].as_array().unwrap().len(), 2);
    assert_eq!(info["versions"][0]["live"], true);

    let out = host.cli_ok(&token, &["apps", "rollback", "hello"]);
    assert!(out.contains("version 1"), "{out}");
    assert_eq!(host.get("hello", "/env/VERSION").await, (200, "1".into()));
    // Nothing is older than version 1.
    let out = host.cli(&token, &["apps", "rollback", "hello"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("no version older"),
        "{}",
        stderr(&out)
    );

    // Deleting ends the app's log followers. (The follower is known to be following once it
    // has printed the line the guest logged before it started.)
    assert_eq!(host.get("hello", "/log").await.0, 200);
    let mut follower = skiff()
        .args(["logs", "hello", "--follow"])
        .env("SKIFF_SERVER", &host.api)
        .env("SKIFF_TOKEN", &token)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut first_line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(follower.stdout.take().unwrap()),
        &mut first_line,
    )
    .unwrap();
    assert!(first_line.contains("hello"), "{first_line}");
    host.cli_ok(&token, &["apps", "delete", "hello"]);
    let status = wait_for_exit(&mut follower, "the follower of a deleted app went on");
    assert!(status.success(), "{status:?}");
    assert_eq!(host.get("hello", "/env/VERSION").await.0, 404);
    let out = host.cli(&token, &["apps", "inspect", "hello"]);
    assert!(!out.status.success());
}

#[tokio::test]
async fn a_bad_bundle_is_refused_with_the_manifest_error_and_the_live_version_keeps_serving() {
    let host = Host::start();
    let token = host.tenant("acme", &[]);
    let good = http_app(1);
    host.deploy_ok(&token, good.path(), "steady");

    // A typo in a field: the CLI validates before uploading and prints the report.
    let bad = http_app(2);
    std::fs::write(
        bad.path().join("skiff.toml"),
        "[app]\nname = \"steady\"\nversion = \"2\"\n\n[component.web]\nsource = \"web.wasm\"\nroute = \"/...\"\ntimeout = \"1s\"\n",
    )
    .unwrap();
    let out = host.deploy(&token, bad.path(), "steady");
    assert!(!out.status.success());
    assert!(stderr(&out).contains("skiff.toml"), "{}", stderr(&out));

    // Past the client: a bundle whose component is not Wasm at all, uploaded raw.
    let raw = tempfile::tempdir().unwrap();
    std::fs::write(raw.path().join("web.wasm"), b"\0asm\x0d\x00\x01\x00garbage").unwrap();
    std::fs::write(
        raw.path().join("skiff.toml"),
        "[app]\nname = \"steady\"\nversion = \"3\"\n\n[component.web]\nsource = \"web.wasm\"\nroute = \"/...\"\n",
    )
    .unwrap();
    let packed = skiff_server::bundle::pack(&raw.path().join("skiff.toml")).unwrap();
    let response = client()
        .put(format!("{}/v1/apps/steady", host.api))
        .bearer_auth(&token)
        .body(packed.bytes)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 400);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "load_failed", "{body}");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains("web.wasm"), "{message}");
    assert!(
        !message.contains(host.data_dir.to_str().unwrap()),
        "server paths stay private: {message}"
    );

    // Not an archive at all.
    let response = client()
        .put(format!("{}/v1/apps/steady", host.api))
        .bearer_auth(&token)
        .body("just some text")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 400);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "invalid_bundle", "{body}");

    assert_eq!(host.get("steady", "/env/VERSION").await, (200, "1".into()));
    let info = host
        .api(reqwest::Method::GET, "/v1/apps/steady", Some(&token))
        .await;
    assert_eq!(info.1["version"], 1, "{:?}", info);
}

/// The zero-downtime promise: 20 deploys while clients hammer the app. Every request must
/// succeed, every answer must come from one whole deployed version, and once a client has
/// seen version N it never sees an older one.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn twenty_updates_under_load_fail_no_request_and_never_mix_versions() {
    let host = Arc::new(Host::start());
    let token = host.tenant("acme", &[]);
    host.deploy_ok(&token, http_app(1).path(), "live");
    assert_eq!(host.get("live", "/env/VERSION").await, (200, "1".into()));

    let done = Arc::new(AtomicBool::new(false));
    let mut clients = Vec::new();
    for _ in 0..4 {
        let (host, done) = (host.clone(), done.clone());
        clients.push(tokio::spawn(async move {
            let http = client();
            let (mut seen, mut failures, mut latest) = (0u32, Vec::new(), 0u32);
            while !done.load(Ordering::Relaxed) {
                let result = http
                    .get(host.server.url("/env/VERSION"))
                    .header("host", "live.localhost")
                    .send()
                    .await;
                match result {
                    Ok(response) if response.status() == 200 => {
                        let body = response.text().await.unwrap_or_default();
                        match body.parse::<u32>() {
                            Ok(version) if (1..=21).contains(&version) && version >= latest => {
                                latest = version;
                                seen += 1;
                            }
                            _ => failures.push(format!("after {latest}: {body:?}")),
                        }
                    }
                    Ok(response) => failures.push(format!("status {}", response.status())),
                    Err(err) => failures.push(format!("error {err}")),
                }
            }
            (seen, failures, latest)
        }));
    }
    for version in 2..=21 {
        let folder = http_app(version);
        let deploy_host = host.clone();
        let token = token.clone();
        tokio::task::spawn_blocking(move || {
            deploy_host.deploy_ok(&token, folder.path(), "live");
        })
        .await
        .unwrap();
    }
    // Let the clients see the last version for a moment, then stop them.
    tokio::time::sleep(Duration::from_millis(300)).await;
    done.store(true, Ordering::Relaxed);
    let mut total = 0;
    for handle in clients {
        let (seen, failures, latest) = handle.await.unwrap();
        assert!(failures.is_empty(), "failed or mixed answers: {failures:?}");
        assert_eq!(latest, 21, "a client never saw the last version");
        total += seen;
    }
    assert!(total > 100, "the load was too light to prove much: {total}");
    println!("{total} requests across 20 updates, none failed");
}

#[tokio::test]
async fn tenants_see_only_their_own_apps_and_data() {
    let host = Host::start();
    let alice = host.tenant("alice", &[]);
    let bob = host.tenant("bob", &[]);
    host.deploy_ok(&alice, http_app(1).path(), "alices");

    // Bob cannot see, inspect, roll back, delete or read the logs of Alice's app: 404, as
    // if it did not exist.
    for (method, path) in [
        (reqwest::Method::GET, "/v1/apps/alices"),
        (reqwest::Method::POST, "/v1/apps/alices/rollback"),
        (reqwest::Method::DELETE, "/v1/apps/alices"),
        (reqwest::Method::GET, "/v1/apps/alices/logs"),
    ] {
        let (status, body) = host.api(method.clone(), path, Some(&bob)).await;
        assert_eq!(status, 404, "{method} {path}: {body}");
        assert_eq!(body["error"]["code"], "not_found");
    }
    let (status, body) = host.api(reqwest::Method::GET, "/v1/apps", Some(&bob)).await;
    assert_eq!(status, 200);
    assert_eq!(body["apps"].as_array().unwrap().len(), 0, "{body}");
    // The name is Alice's while she has it.
    let out = host.deploy(&bob, http_app(9).path(), "alices");
    assert!(!out.status.success());
    assert!(stderr(&out).contains("taken"), "{}", stderr(&out));
    assert_eq!(host.get("alices", "/env/VERSION").await, (200, "1".into()));

    // Key-value data belongs to the tenant, not to the app name: Alice stores a secret under
    // `vault`, deletes the app, and Bob deploying his own `vault` does not find it.
    let state = state_app(
        "[app]\nname = \"vault\"\nversion = \"1\"\n\n[component.kv]\nsource = \"state.wasm\"\nroute = \"/...\"\nkey_value_stores = [\"default\"]\n",
    );
    host.deploy_ok(&alice, state.path(), "vault");
    let response = client()
        .post(host.server.url("/kv/set?store=default&key=secret"))
        .header("host", "vault.localhost")
        .body("alice's")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(
        host.get("vault", "/kv/get?store=default&key=secret").await,
        (200, "alice's".into())
    );
    host.cli_ok(&alice, &["apps", "delete", "vault"]);
    host.deploy_ok(&bob, state.path(), "vault");
    assert_eq!(
        host.get("vault", "/kv/get?store=default&key=secret").await,
        (404, "missing".into())
    );

    // Tokens: none, a wrong one, and a tenant's on an admin route.
    let (status, body) = host.api(reqwest::Method::GET, "/v1/apps", None).await;
    assert_eq!(
        (status, &body["error"]["code"]),
        (401, &Value::from("unauthorized"))
    );
    let (status, _) = host
        .api(reqwest::Method::GET, "/v1/apps", Some("skf_0000"))
        .await;
    assert_eq!(status, 401);
    let (status, body) = host
        .api(reqwest::Method::GET, "/v1/tenants", Some(&alice))
        .await;
    assert_eq!(
        (status, &body["error"]["code"]),
        (403, &Value::from("forbidden"))
    );
    let (status, body) = host
        .api(reqwest::Method::GET, "/v1/tenants", Some(ADMIN_TOKEN))
        .await;
    assert_eq!(status, 200);
    assert_eq!(body["tenants"].as_array().unwrap().len(), 2, "{body}");

    // Tokens are stored hashed.
    let stored = std::fs::read_to_string(host.data_dir.join("tenants.json")).unwrap();
    assert!(!stored.contains(&alice) && !stored.contains(&bob));
}

/// Runs the `skiff` CLI with `config` as its client config file and no server or token in its
/// environment, writing `stdin` to it.
fn cli_from_config(config: &Path, args: &[&str], stdin: &str) -> Output {
    let mut child = skiff()
        .args(args)
        .env("SKIFF_CONFIG", config)
        .env_remove("SKIFF_SERVER")
        .env_remove("SKIFF_TOKEN")
        .env_remove("SKIFF_ADMIN_TOKEN")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("running the skiff CLI");
    // Dropping the pipe closes stdin: a command that reads it sees the end.
    std::io::Write::write_all(&mut child.stdin.take().unwrap(), stdin.as_bytes()).unwrap();
    child.wait_with_output().unwrap()
}

fn app_names(list_json: &[u8]) -> Vec<String> {
    let list: Value = serde_json::from_slice(list_json).unwrap();
    list["apps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|app| app["name"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test]
async fn login_saves_a_checked_token_that_the_client_commands_use_until_logout() {
    let host = Host::start();
    let alice = host.tenant("alice", &[]);
    let bob = host.tenant("bob", &[]);
    host.deploy_ok(&alice, http_app(1).path(), "alices");
    host.deploy_ok(&bob, http_app(1).path(), "bobs");
    let home = tempfile::tempdir().unwrap();
    let config = home.path().join("skiff").join("config.toml");
    let ok = |out: &Output, what: &str| {
        assert!(
            out.status.success(),
            "{what} failed: {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            stderr(out)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };

    // A token the server does not know is refused, and nothing is written.
    let out = cli_from_config(
        &config,
        &["login", "--server", &host.api, "--token", "skf_0000"],
        "",
    );
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("refused the token from --token") && err.contains("nothing was saved"),
        "{err}"
    );
    assert!(
        !home.path().join("skiff").exists(),
        "login wrote after a refusal"
    );

    // Alice's token on stdin: checked, then saved with the server, for her eyes only.
    let out = cli_from_config(
        &config,
        &["login", "--server", &host.api],
        &format!("{alice}\n"),
    );
    let said = ok(&out, "login");
    assert!(
        said.contains(&format!("logged in to {} as tenant alice", host.api)),
        "{said}"
    );
    assert!(said.contains(config.to_str().unwrap()), "{said}");
    let saved = std::fs::read_to_string(&config).unwrap();
    assert!(
        saved.contains(&format!("server = \"{}\"", host.api))
            && saved.contains(&format!("token = \"{alice}\"")),
        "{saved}"
    );
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&config).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "{mode:o}");
    }

    // With neither flags nor variables, the client takes both from the file.
    let out = cli_from_config(&config, &["apps", "list", "--json"], "");
    ok(&out, "apps list");
    assert_eq!(app_names(&out.stdout), ["alices"]);

    // A variable wins over the file: Bob's token shows Bob's apps (at the saved server).
    let out = skiff()
        .args(["apps", "list", "--json"])
        .env("SKIFF_CONFIG", &config)
        .env("SKIFF_TOKEN", &bob)
        .env_remove("SKIFF_SERVER")
        .env_remove("SKIFF_ADMIN_TOKEN")
        .output()
        .unwrap();
    ok(&out, "apps list with SKIFF_TOKEN");
    assert_eq!(app_names(&out.stdout), ["bobs"]);

    // Logout forgets the token, keeps the server, and then the client has no token.
    let said = ok(&cli_from_config(&config, &["logout"], ""), "logout");
    assert!(said.contains("removed the token"), "{said}");
    let saved = std::fs::read_to_string(&config).unwrap();
    assert!(
        !saved.contains("token") && saved.contains(&host.api),
        "{saved}"
    );
    let said = ok(
        &cli_from_config(&config, &["logout"], ""),
        "a second logout",
    );
    assert!(said.contains("no token saved"), "{said}");
    let out = cli_from_config(&config, &["apps", "list"], "");
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("no token was given"),
        "{}",
        stderr(&out)
    );

    // The admin token may be saved too, at the server saved before.
    let out = cli_from_config(&config, &["login", "--token", ADMIN_TOKEN], "");
    let said = ok(&out, "login with the admin token");
    assert!(
        said.contains(&format!("logged in to {} as admin", host.api)),
        "{said}"
    );
    let out = cli_from_config(&config, &["tenants", "list", "--json"], "");
    ok(&out, "tenants list");
    let list: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(list["tenants"].as_array().unwrap().len(), 2, "{list}");
}

#[tokio::test]
async fn quotas_refuse_a_deploy_and_name_the_quota() {
    let host = Host::start();
    let token = host.tenant("small", &["--max-apps", "1", "--max-memory", "64MiB"]);
    host.deploy_ok(&token, http_app(1).path(), "first");
    let out = host.deploy(&token, http_app(1).path(), "second");
    assert!(!out.status.success());
    assert!(stderr(&out).contains("max_apps"), "{}", stderr(&out));
    // Updating the one app is not a new app.
    host.deploy_ok(&token, http_app(2).path(), "first");

    // A component that sets no memory limit runs under the ceiling, below the server's
    // default of 128 MiB; one that asks for more than the ceiling is refused.
    let info = host
        .api(reqwest::Method::GET, "/v1/apps/first", Some(&token))
        .await;
    assert_eq!(info.1["components"][0]["limits"]["memory_bytes"], 64 << 20);
    let greedy = http_app(3);
    let manifest = std::fs::read_to_string(greedy.path().join("skiff.toml")).unwrap();
    std::fs::write(
        greedy.path().join("skiff.toml"),
        format!("{manifest}\n[component.web.limits]\nmemory = \"128MiB\"\n"),
    )
    .unwrap();
    let out = host.deploy(&token, greedy.path(), "first");
    assert!(!out.status.success());
    let message = stderr(&out);
    assert!(
        message.contains("max_memory_bytes") && message.contains("64 MiB"),
        "{message}"
    );
    assert_eq!(host.get("first", "/env/VERSION").await, (200, "2".into()));

    // The http guest is over 100 KiB of code.
    let tiny = host.tenant("tiny", &["--max-code-size", "100KiB"]);
    let out = host.deploy(&tiny, http_app(1).path(), "tiny-app");
    assert!(!out.status.success());
    let message = stderr(&out);
    assert!(
        message.contains("max_code_bytes") && message.contains("100 KiB"),
        "{message}"
    );
}

#[tokio::test]
async fn a_restarted_server_serves_its_apps_again_from_the_cache() {
    let data_dir = fresh_data_dir().join("server");
    let token;
    {
        let host = Host::start_in(data_dir.clone(), &[]);
        token = host.tenant("acme", &[]);
        host.deploy_ok(&token, http_app(7).path(), "durable");
        assert_eq!(host.get("durable", "/env/VERSION").await, (200, "7".into()));
    }
    // The code cache lives in the data folder; this one has not compiled anything.
    let host = Host::start_in(data_dir, &[]);
    assert_eq!(host.get("durable", "/env/VERSION").await, (200, "7".into()));
    let logs = host.server.wait_for_log("loaded in");
    assert!(
        !logs.contains("compiling"),
        "recompiled after a restart:\n{logs}"
    );
    let list = host.cli_ok(&token, &["apps", "list"]);
    assert!(list.contains("durable"), "{list}");
}

#[tokio::test]
async fn logs_follow_streams_one_apps_guest_output() {
    let host = Host::start();
    let token = host.tenant("acme", &[]);
    host.deploy_ok(&token, http_app(1).path(), "chatty");
    host.deploy_ok(&token, http_app(1).path(), "quiet");
    assert_eq!(host.get("chatty", "/log").await.0, 200);

    let out = host.cli_ok(&token, &["logs", "chatty", "--json"]);
    let lines: Vec<Value> = out
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    assert!(
        lines
            .iter()
            .any(|l| l["stream"] == "stdout" && l["message"] == "hello stdout from http-guest"),
        "{out}"
    );
    assert!(lines.iter().all(|l| l["app"] == "chatty"), "{out}");
    let out = host.cli_ok(&token, &["logs", "quiet", "--json"]);
    assert!(out.trim().is_empty(), "another app's lines leaked: {out}");

    // --follow: start following, then make the guest print.
    let mut follower = skiff()
        .args(["logs", "chatty", "--follow", "--tail", "0"])
        .env("SKIFF_SERVER", &host.api)
        .env("SKIFF_TOKEN", &token)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = follower.stdout.take().unwrap();
    let (lines_tx, lines_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            let _ = lines_tx.send(line);
        }
    });
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let mut seen = Vec::new();
    'outer: while std::time::Instant::now() < deadline {
        assert_eq!(host.get("chatty", "/log").await.0, 200);
        while let Ok(line) = lines_rx.recv_timeout(Duration::from_millis(200)) {
            let found = line.contains("hello stderr from http-guest");
            seen.push(line);
            if found {
                break 'outer;
            }
        }
    }
    assert!(
        seen.iter()
            .any(|l| l.contains("hello stderr from http-guest")),
        "{seen:?}"
    );

    // Shutting the server down ends the follow stream at once, rather than after the grace
    // period for requests in flight (10 s): both exit cleanly.
    let mut host = host;
    let status = std::process::Command::new("kill")
        .args(["-TERM", &host.server.pid().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let follower_status =
        wait_for_exit(&mut follower, "the follower outlived the server's shutdown");
    assert!(follower_status.success(), "{follower_status:?}");
    let server_status = host.server.child().wait().unwrap();
    assert!(server_status.success(), "{server_status:?}");
}

#[tokio::test]
async fn the_api_describes_itself_and_the_server_refuses_to_start_unprotected() {
    let host = Host::start();
    let (status, doc) = host.api(reqwest::Method::GET, "/openapi.json", None).await;
    assert_eq!(status, 200);
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    for path in [
        "/v1/tenants",
        "/v1/tenants/{name}",
        "/v1/tenants/{name}/token",
        "/v1/whoami",
        "/v1/apps",
        "/v1/apps/{name}",
        "/v1/apps/{name}/rollback",
        "/v1/apps/{name}/logs",
    ] {
        assert!(doc["paths"].get(path).is_some(), "{path} is not documented");
    }

    let out = skiff()
        .args([
            "server",
            "--listen",
            "127.0.0.1:0",
            "--api-listen",
            "127.0.0.1:0",
        ])
        .env_remove("SKIFF_ADMIN_TOKEN")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("SKIFF_ADMIN_TOKEN"),
        "{}",
        stderr(&out)
    );
    let out = skiff()
        .args([
            "server",
            "--insecure-dev",
            "--listen",
            "0.0.0.0:0",
            "--api-listen",
            "127.0.0.1:0",
        ])
        .env_remove("SKIFF_ADMIN_TOKEN")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(stderr(&out).contains("loopback"), "{}", stderr(&out));
}

#[tokio::test]
async fn an_idle_app_is_unloaded_and_its_next_request_loads_it_again() {
    let host = Host::start_in(fresh_data_dir().join("server"), &["--idle-unload", "300ms"]);
    let token = host.tenant("acme", &[]);
    host.deploy_ok(&token, http_app(4).path(), "sleepy");
    let status = |info: &Value| info["status"].as_str().unwrap_or_default().to_string();
    let (_, info) = host
        .api(reqwest::Method::GET, "/v1/apps/sleepy", Some(&token))
        .await;
    assert_eq!(status(&info), "live");

    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let (_, info) = host
            .api(reqwest::Method::GET, "/v1/apps/sleepy", Some(&token))
            .await;
        if status(&info) == "idle" {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "never unloaded: {info}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // A burst of first requests: all answered, the app loaded once.
    let requests = (0..8).map(|_| host.get("sleepy", "/env/VERSION"));
    for answer in futures_util::future::join_all(requests).await {
        assert_eq!(answer, (200, "4".into()));
    }
    let logs = host.server.logs();
    assert_eq!(logs.matches("loaded in").count(), 1, "{logs}");
}

/// What runs on the host belongs to the operator: a tenant's app reaches neither this
/// machine's services (the management API here) nor the server's environment, whatever its
/// manifest asks for; and one tenant's flood of requests stops at its own in-flight quota.
#[tokio::test]
async fn tenant_apps_reach_no_host_services_no_host_environment_and_only_their_own_share() {
    let mut command = skiff();
    command.env("SKIFF_VAR_PASSWORD", "the operator's secret");
    let host = Host::start_with(command, fresh_data_dir().join("server"), &[]);
    let api = host.api.clone();
    let token = host.tenant("greedy", &["--max-in-flight", "1"]);

    // The manifest names the API's address literally, which `skiff up` would allow.
    let app = http_app(1);
    let manifest = std::fs::read_to_string(app.path().join("skiff.toml")).unwrap();
    std::fs::write(
        app.path().join("skiff.toml"),
        manifest.replace(
            "route = \"/...\"",
            "route = \"/...\"\nallowed_outbound_hosts = [\"http://127.0.0.1:*\"]",
        ),
    )
    .unwrap();
    host.deploy_ok(&token, app.path(), "prober");
    let (status, body) = host
        .get("prober", &format!("/fetch?url={api}/v1/health"))
        .await;
    assert_eq!(status, 502, "{body}");
    assert!(
        body.contains("destination-IP-prohibited") || body.contains("Prohibited"),
        "{body}"
    );
    host.server.wait_for_log("public addresses only");

    // Variables take no value from the server's environment.
    let state = state_app(
        "[app]\nname = \"peek\"\nversion = \"1\"\n\n[variables]\npassword = { default = \"none\" }\n\n[component.peek]\nsource = \"state.wasm\"\nroute = \"/...\"\nvariables = { password = \"{{ password }}\" }\n",
    );
    host.deploy_ok(&token, state.path(), "peek");
    assert_eq!(
        host.get("peek", "/config").await,
        (200, "password=none".into())
    );

    // One request in flight is this tenant's quota: a second waits for nothing, it gets 503.
    // (The probe itself holds the one permit while it runs, so a slow request that arrives
    // just then is the one refused: try again until the slow one is in first.)
    let mut attempts = Vec::new();
    let refused = loop {
        assert!(attempts.len() < 10, "the quota never refused: {attempts:?}");
        let url = host.server.url("/sleep?ms=1500");
        let slow = tokio::spawn(async move {
            let response = client().get(url).header("host", "prober.localhost").send();
            response.await.unwrap().status().as_u16()
        });
        tokio::time::sleep(Duration::from_millis(300)).await;
        let (status, body) = host.get("peek", "/config").await;
        let slow_status = slow.await.unwrap();
        attempts.push((slow_status, status));
        if status == 503 {
            assert_eq!(slow_status, 200);
            break body;
        }
    };
    assert!(refused.contains("too many requests"), "{refused}");
    assert_eq!(host.get("peek", "/config").await.0, 200);
}

/// Prometheus metrics after a known sequence of requests: the operator sees every series, a
/// tenant only its own.
#[tokio::test]
async fn metrics_count_requests_per_route_and_tenants_see_only_their_own() {
    let host = Host::start();
    let alice = host.tenant("alice", &[]);
    let bob = host.tenant("bob", &[]);
    host.deploy_ok(&alice, http_app(1).path(), "counted");
    host.deploy_ok(&bob, http_app(1).path(), "other");
    for _ in 0..3 {
        assert_eq!(host.get("counted", "/env/VERSION").await.0, 200);
    }
    for _ in 0..2 {
        assert_eq!(host.get("counted", "/env/NOT_SET").await.0, 404);
    }
    assert_eq!(host.get("counted", "/panic").await.0, 500);
    assert_eq!(host.get("other", "/env/VERSION").await.0, 200);

    let all = host.scrape(ADMIN_TOKEN, "/metrics").await;
    let series = |labels: &str| {
        format!("{{tenant=\"alice\",app=\"counted\",component=\"web\",route=\"/...\"{labels}}}")
    };
    for expected in [
        format!("skiff_http_requests_total{} 3", series(",status=\"2xx\"")),
        format!("skiff_http_requests_total{} 2", series(",status=\"4xx\"")),
        format!("skiff_http_requests_total{} 1", series(",status=\"5xx\"")),
        format!("skiff_http_request_duration_seconds_count{} 6", series("")),
        format!(
            "skiff_http_request_failures_total{} 1",
            series(",cause=\"trap\"")
        ),
        format!("skiff_http_requests_in_flight{} 0", series("")),
        "skiff_apps_deployed 2".to_string(),
        "skiff_tenants 2".to_string(),
        // Both apps run the same component: compiled once, then shared.
        "skiff_code_compiles_total 1".to_string(),
        "skiff_code_shared_total 1".to_string(),
        "skiff_code_cache_hits_total 0".to_string(),
    ] {
        assert!(all.contains(&expected), "no `{expected}` in:\n{all}");
    }
    assert!(all.contains("app=\"other\""));

    let mine = host.scrape(&alice, "/v1/metrics").await;
    assert!(mine.contains(&format!(
        "skiff_http_requests_total{} 3",
        series(",status=\"2xx\"")
    )));
    assert!(
        !mine.contains("bob") && !mine.contains("app=\"other\""),
        "{mine}"
    );
    let theirs = host.scrape(&bob, "/v1/metrics").await;
    assert!(!theirs.contains("counted"), "{theirs}");
    // The host-wide figures are the operator's.
    let (status, _) = host
        .api(reqwest::Method::GET, "/metrics", Some(&alice))
        .await;
    assert_eq!(status, 403);

    // A deleted app's series go with it.
    host.cli_ok(&bob, &["apps", "delete", "other"]);
    let all = host.scrape(ADMIN_TOKEN, "/metrics").await;
    assert!(!all.contains("app=\"other\""), "{all}");
    assert!(all.contains("app=\"counted\""));
}

#[tokio::test]
async fn path_routing_serves_an_app_below_its_name_when_the_host_names_none() {
    let host = Host::start_in(fresh_data_dir().join("server"), &["--path-routing"]);
    let token = host.tenant("acme", &[]);
    host.deploy_ok(&token, http_app(5).path(), "hello");
    let get = |path: &str| {
        let url = host.server.url(path);
        async move {
            let response = client().get(url).send().await.unwrap();
            (response.status().as_u16(), response.text().await.unwrap())
        }
    };
    // No Host naming an app (the client sends 127.0.0.1:PORT): the first segment does, and
    // the app sees the path below it.
    assert_eq!(get("/hello/env/VERSION").await, (200, "5".into()));
    let (status, body) = get("/hello/some/where?x=1").await;
    assert_eq!(status, 200);
    assert!(body.contains("path=/some/where?x=1 "), "{body}");
    let (status, body) = get("/hello").await;
    assert_eq!(status, 200);
    assert!(body.contains("path=/ "), "{body}");
    assert_eq!(get("/nobody/env/VERSION").await.0, 404);
    // The host name still wins when it names an app.
    assert_eq!(host.get("hello", "/env/VERSION").await, (200, "5".into()));
}

/// Runs headless Chromium on `url`; returns the DOM once the page's scripts have run, and
/// saves a screenshot under the test artifacts.
fn chromium(url: &str, screenshot: &Path) -> String {
    let browser = ["chromium", "chromium-browser"]
        .into_iter()
        .find(|name| {
            std::process::Command::new(name)
                .arg("--version")
                .output()
                .is_ok_and(|out| out.status.success())
        })
        .expect("the dashboard test needs Chromium: apt-get install chromium (.ci/run does)");
    let common = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--hide-scrollbars",
        // Lets the page's polling run (two polls) before the DOM is taken.
        "--virtual-time-budget=5000",
    ];
    let dom = std::process::Command::new(browser)
        .args(common)
        .args(["--dump-dom", url])
        .output()
        .unwrap();
    assert!(
        dom.status.success(),
        "{}",
        String::from_utf8_lossy(&dom.stderr)
    );
    std::fs::create_dir_all(screenshot.parent().unwrap()).unwrap();
    let shot = std::process::Command::new(browser)
        .args(common)
        .arg("--window-size=1280,720")
        .arg(format!("--screenshot={}", screenshot.display()))
        .arg(url)
        .output()
        .unwrap();
    assert!(
        shot.status.success(),
        "{}",
        String::from_utf8_lossy(&shot.stderr)
    );
    String::from_utf8(dom.stdout).unwrap()
}

#[tokio::test]
async fn the_dashboard_shows_apps_and_their_traffic_in_a_real_browser() {
    let host = Host::start();
    let alice = host.tenant("alice", &[]);
    let bob = host.tenant("bob", &[]);
    // The shop has two routes: `/api/...` (component `api`, the same guest) and `/...`.
    let shop = http_app(1);
    let manifest = shop.path().join("skiff.toml");
    let mut text = std::fs::read_to_string(&manifest).unwrap();
    text.push_str(
        "\n[component.api]\nsource = \"web.wasm\"\nroute = \"/api/...\"\n\
         environment = { VERSION = \"1\" }\n",
    );
    std::fs::write(&manifest, text).unwrap();
    host.deploy_ok(&alice, shop.path(), "shop");
    host.deploy_ok(&bob, http_app(1).path(), "blog");
    for path in ["/env/VERSION", "/env/VERSION", "/api/env/VERSION"] {
        assert_eq!(host.get("shop", path).await, (200, "1".into()), "{path}");
    }
    assert_eq!(host.get("shop", "/api/panic").await.0, 500);
    assert_eq!(host.get("blog", "/env/VERSION").await.0, 200);
    // The usage table reads /v1/usage: wait until it counts all five requests.
    let usage = usage_once(&host, ADMIN_TOKEN, "", 5).await;
    assert_eq!(usage_row(&usage, "shop")["requests"], 4, "{usage}");
    assert_eq!(usage_row(&usage, "blog")["requests"], 1, "{usage}");
    let blog_bytes = |field: &str| usage_row(&usage, "blog")[field].as_u64().unwrap();
    let (blog_in, blog_out) = (blog_bytes("bytes_in"), blog_bytes("bytes_out"));
    assert!(blog_in < 1024 && blog_out < 1024, "{usage}");

    let artifacts = Path::new(env!("CARGO_TARGET_TMPDIR")).join("test-artifacts");
    // The rows of the apps table, whole. (The DOM holds the page's script too: only the
    // table's body is read.)
    let app_table = |dom: &str| -> Vec<String> {
        let start = dom
            .find("<tbody id=\"apps\">")
            .unwrap_or_else(|| panic!("{dom}"));
        let body = &dom[start..start + dom[start..].find("</tbody>").unwrap()];
        body.split("<tr ")
            .skip(1)
            .map(|row| format!("<tr {}", &row[..row.find("</tr>").unwrap()]))
            .collect()
    };
    // The start of each row, to its first cell: an app's row, then a row per route (the route
    // as written in the manifest, and the component serving it), with the raw counts.
    let heads = |rows: &[String]| -> Vec<String> {
        rows.iter()
            .map(|row| row[..row.find("</td>").unwrap() + 5].to_string())
            .collect()
    };
    let app_row = |app: &str, tenant: &str, requests: u32, errors: u32| {
        format!(
            "<tr class=\"app\" data-app=\"{app}\" data-tenant=\"{tenant}\" \
             data-requests=\"{requests}\" data-errors=\"{errors}\"><td>{app}</td>"
        )
    };
    let route_row =
        |app: &str, tenant: &str, route: &str, component: &str, requests: u32, errors: u32| {
            format!(
                "<tr class=\"route\" data-app=\"{app}\" data-tenant=\"{tenant}\" \
             data-route=\"{route}\" data-component=\"{component}\" data-requests=\"{requests}\" \
             data-errors=\"{errors}\"><td>{route}<span class=\"component\">{component}</span></td>"
            )
        };
    let blog_rows = [
        app_row("blog", "bob", 1, 0),
        route_row("blog", "bob", "/...", "web", 1, 0),
    ];
    // What a route's row shows after its name: requests, 5xx errors and error rate (after the
    // request rate, which is 0.0 once nothing new comes in), then p50 and p99 as bucket bounds.
    let route_counts = |row: &str, shown: &str| {
        // After the route's cell and the empty tenant cell: the rate, then the counts.
        let (_, rate_on) = row.split_once("</td><td></td>").unwrap();
        let cells = &rate_on[rate_on.find("</td>").unwrap() + 5..];
        assert!(cells.starts_with(shown), "{row}");
        assert_eq!(cells.matches("<td>≤ ").count(), 2, "{row}");
    };
    // A usage row: the app, the tenant (for the operator only), then the request count shown.
    let usage_html = |dom: &str, app: &str, tenant: &str, requests: u32, operator: bool| {
        let tenant_cell = if operator {
            format!("<td class=\"text\">{tenant}</td>")
        } else {
            String::new()
        };
        let start = format!(
            "<tr data-usage-app=\"{app}\" data-tenant=\"{tenant}\" data-requests=\"{requests}\">\
             <td class=\"text\">{app}</td>{tenant_cell}<td>{requests}</td>"
        );
        let at = dom.find(&start)?;
        let end = dom[at..].find("</tr>")?;
        Some(dom[at..at + end].to_string())
    };
    let usage_total = |dom: &str, tenant: &str, requests: u32, operator: bool| {
        let tenant_cell = if operator {
            format!("<td class=\"text\">{tenant}</td>")
        } else {
            String::new()
        };
        dom.contains(&format!(
            "<tr class=\"total\" data-usage-total=\"{tenant}\" data-requests=\"{requests}\">\
             <td class=\"text\">total</td>{tenant_cell}<td>{requests}</td>"
        ))
    };
    let usage_tenant_header = "<th class=\"text\">tenant</th>";
    // Bytes in and out are the last two cells, in bytes when under a KiB.
    let blog_bytes_cells = format!("<td>{blog_in} B</td><td>{blog_out} B</td>");

    // The operator sees every app.
    let url = format!("{}/dashboard#token={ADMIN_TOKEN}", host.api);
    let dom = chromium(&url, &artifacts.join("dashboard-operator.png"));
    assert!(dom.contains("all tenants"), "{dom}");
    // The busiest app first, each followed by its routes, busiest first (then by component).
    let rows = app_table(&dom);
    let mut expected = vec![
        app_row("shop", "alice", 4, 1),
        route_row("shop", "alice", "/api/...", "api", 2, 1),
        route_row("shop", "alice", "/...", "web", 2, 0),
    ];
    expected.extend(blog_rows.clone());
    assert_eq!(heads(&rows), expected, "{dom}");
    route_counts(
        &rows[1],
        "<td>2</td><td class=\"bad\">1</td><td class=\"bad\">50.0%</td>",
    );
    route_counts(&rows[2], "<td>2</td><td>0</td><td>0.0%</td>");
    route_counts(&rows[4], "<td>1</td><td>0</td><td>0.0%</td>");
    assert!(dom.contains("apps deployed"), "{dom}");
    // ...and every app's usage over the last 24 hours (the default range), with a tenant
    // column and each tenant's total.
    assert!(
        dom.contains("data-range=\"24h\" aria-pressed=\"true\">last 24 hours"),
        "{dom}"
    );
    assert!(dom.contains(usage_tenant_header), "{dom}");
    assert!(
        usage_html(&dom, "shop", "alice", 4, true).is_some(),
        "{dom}"
    );
    let blog = usage_html(&dom, "blog", "bob", 1, true).unwrap_or_else(|| panic!("{dom}"));
    assert!(blog.ends_with(&blog_bytes_cells), "{blog}");
    assert!(usage_total(&dom, "alice", 4, true), "{dom}");
    assert!(usage_total(&dom, "bob", 1, true), "{dom}");
    assert!(dom.contains(" UTC</span>"), "{dom}");

    // A tenant sees its own apps only.
    let url = format!("{}/dashboard#token={bob}", host.api);
    let dom = chromium(&url, &artifacts.join("dashboard-tenant.png"));
    assert!(dom.contains("your apps"), "{dom}");
    assert_eq!(heads(&app_table(&dom)), blog_rows, "{dom}");
    assert!(!dom.contains("shop"), "{dom}");
    // ...and only its own usage, without a tenant column.
    assert!(!dom.contains(usage_tenant_header), "{dom}");
    let blog = usage_html(&dom, "blog", "bob", 1, false).unwrap_or_else(|| panic!("{dom}"));
    assert!(blog.ends_with(&blog_bytes_cells), "{blog}");
    assert!(usage_total(&dom, "bob", 1, false), "{dom}");
    assert!(!dom.contains("data-usage-total=\"alice\""), "{dom}");

    // A tenant whose apps served nothing is told so.
    let carol = host.tenant("carol", &[]);
    let url = format!("{}/dashboard#token={carol}", host.api);
    let dom = chromium(&url, &artifacts.join("dashboard-tenant-no-usage.png"));
    assert!(dom.contains("your apps"), "{dom}");
    // (The page's script holds that sentence too: the whole table body is compared.)
    assert!(
        dom.contains(
            "<tbody id=\"usage\"><tr><td class=\"text\" colspan=\"7\">\
             No requests in this range yet</td></tr></tbody>"
        ),
        "{dom}"
    );

    let png = std::fs::read(artifacts.join("dashboard-operator.png")).unwrap();
    assert!(
        png.starts_with(b"\x89PNG") && png.len() > 10_000,
        "{} bytes",
        png.len()
    );
    println!("screenshots in {}", artifacts.display());
}

/// `GET /v1/usage` with `token` and `query`, once the figures count `requests` requests in
/// all: a request is reported once its response body is finished, a moment after the client
/// has read it.
async fn usage_once(host: &Host, token: &str, query: &str, requests: u64) -> Value {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (status, report) = host
            .api(
                reqwest::Method::GET,
                &format!("/v1/usage{query}"),
                Some(token),
            )
            .await;
        assert_eq!(status, 200, "{report}");
        let counted: u64 = report["tenants"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["requests"].as_u64().unwrap())
            .sum();
        if counted >= requests || std::time::Instant::now() > deadline {
            return report;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The row of `app` in a usage report.
fn usage_row<'a>(report: &'a Value, app: &str) -> &'a Value {
    report["apps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|row| row["app"] == app)
        .unwrap_or_else(|| panic!("no row for `{app}` in {report}"))
}

#[tokio::test]
async fn usage_sums_known_work_per_app_and_tenants_see_only_their_own() {
    let host = Host::start();
    let alice = host.tenant("alice", &[]);
    let bob = host.tenant("bob", &[]);
    host.deploy_ok(&alice, http_app(1).path(), "spinner");
    host.deploy_ok(&bob, http_app(1).path(), "idler");

    // Known work. The spinner: ROUNDS rounds of a multiply-add chain per request; each round
    // waits for the multiply before it (3 cycles or more on any CPU), so even at 6 GHz a
    // round takes 0.5 ns of CPU: the floor below allows half of that.
    const SPINS: u64 = 4;
    const ROUNDS: u64 = 100_000_000;
    let mut spinner_out = 0;
    for _ in 0..SPINS {
        let (status, body) = host.get("spinner", &format!("/spin?n={ROUNDS}")).await;
        assert_eq!(status, 200, "{body}");
        spinner_out += body.len() as u64;
    }
    // The idler: trivial requests, an echo of a known body, a large response.
    const COUNTS: u64 = 4;
    let mut idler_out = 0;
    for _ in 0..COUNTS {
        let (status, body) = host.get("idler", "/count").await;
        assert_eq!((status, body.as_str()), (200, "1"));
        idler_out += 1;
    }
    const ECHOED: usize = 100_000;
    let echo = client()
        .post(host.server.url("/echo"))
        .header("host", "idler.localhost")
        .body(vec![b'e'; ECHOED])
        .send()
        .await
        .unwrap();
    assert_eq!(echo.status(), 200);
    assert_eq!(echo.bytes().await.unwrap().len(), ECHOED);
    const BIG: u64 = 300_000;
    let (status, body) = host.get("idler", &format!("/big?n={BIG}")).await;
    assert_eq!((status, body.len() as u64), (200, BIG));
    let idler_requests = COUNTS + 2;
    idler_out += ECHOED as u64 + BIG;

    // The admin sees both tenants.
    let all = usage_once(&host, ADMIN_TOKEN, "", SPINS + idler_requests).await;
    let spinner = usage_row(&all, "spinner");
    let idler = usage_row(&all, "idler");
    assert_eq!(spinner["tenant"], "alice");
    assert_eq!(idler["tenant"], "bob");
    assert_eq!(spinner["requests"], SPINS, "{all}");
    assert_eq!(idler["requests"], idler_requests, "{all}");
    // Bytes are exact: body bytes only, headers not counted.
    assert_eq!(spinner["bytes_in"], 0);
    assert_eq!(spinner["bytes_out"], spinner_out, "{all}");
    assert_eq!(idler["bytes_in"], ECHOED as u64, "{all}");
    assert_eq!(idler["bytes_out"], idler_out, "{all}");
    let figure = |row: &Value, name: &str| row[name].as_f64().unwrap();
    let spinner_cpu = figure(spinner, "guest_cpu_seconds");
    let idler_cpu = figure(idler, "guest_cpu_seconds");
    let floor = (SPINS * ROUNDS) as f64 * 0.25e-9;
    assert!(
        spinner_cpu >= floor,
        "spinner CPU {spinner_cpu} s < {floor} s"
    );
    assert!(
        spinner_cpu > 5.0 * idler_cpu,
        "spinner CPU {spinner_cpu} s, idler {idler_cpu} s"
    );
    for row in [spinner, idler] {
        // CPU is measured inside the wall time of the same requests.
        assert!(
            figure(row, "guest_cpu_seconds") <= figure(row, "wall_seconds"),
            "{row}"
        );
        assert!(figure(row, "guest_cpu_seconds") > 0.0, "{row}");
        // Every request had linear memory for some time.
        assert!(figure(row, "memory_byte_seconds") > 0.0, "{row}");
    }
    let tenants = all["tenants"].as_array().unwrap();
    assert_eq!(tenants.len(), 2, "{all}");
    assert_eq!(tenants[0]["tenant"], "alice");
    assert_eq!(tenants[0]["requests"], SPINS);
    assert_eq!(tenants[1]["tenant"], "bob");
    assert_eq!(tenants[1]["bytes_out"], idler_out);

    // A tenant sees its own apps only, and asking for another's is like asking for nobody.
    let mine = usage_once(&host, &alice, "", SPINS).await;
    assert_eq!(mine["apps"].as_array().unwrap().len(), 1, "{mine}");
    assert_eq!(usage_row(&mine, "spinner")["requests"], SPINS);
    let theirs = usage_once(&host, &bob, "", idler_requests).await;
    assert_eq!(theirs["apps"].as_array().unwrap().len(), 1, "{theirs}");
    assert_eq!(usage_row(&theirs, "idler")["bytes_in"], ECHOED as u64);
    let (status, body) = host
        .api(reqwest::Method::GET, "/v1/usage?tenant=bob", Some(&alice))
        .await;
    assert_eq!(status, 404, "{body}");
    let (status, _) = host
        .api(
            reqwest::Method::GET,
            "/v1/usage?tenant=nobody",
            Some(&alice),
        )
        .await;
    assert_eq!(status, 404);
    // The admin may narrow to one tenant.
    let only_bob = usage_once(&host, ADMIN_TOKEN, "?tenant=bob", idler_requests).await;
    assert_eq!(only_bob["apps"].as_array().unwrap().len(), 1, "{only_bob}");

    // `skiff usage` shows the same figures. The admin: a TENANT column, each tenant's apps then
    // its TOTAL. (The names and the request count hold no spaces; the figures after them may.)
    let firsts = |table: &str, columns: usize| -> Vec<String> {
        table
            .lines()
            .skip(2)
            .map(|line| {
                let cells: Vec<&str> = line.split_whitespace().take(columns).collect();
                cells.join(" ")
            })
            .collect()
    };
    let table = host.cli_ok(ADMIN_TOKEN, &["usage"]);
    assert!(table.starts_with("Usage from "), "{table}");
    assert_eq!(
        firsts(&table, 3),
        [
            "TENANT APP REQUESTS".to_string(),
            format!("alice spinner {SPINS}"),
            format!("alice TOTAL {SPINS}"),
            format!("bob idler {idler_requests}"),
            format!("bob TOTAL {idler_requests}"),
        ],
        "{table}"
    );
    // A tenant: its own apps only, named in the heading rather than in a column.
    let table = host.cli_ok(&alice, &["usage", "--from", "1h"]);
    assert!(table.starts_with("Usage of alice from "), "{table}");
    assert_eq!(
        firsts(&table, 2),
        [
            "APP REQUESTS".to_string(),
            format!("spinner {SPINS}"),
            format!("TOTAL {SPINS}"),
        ],
        "{table}"
    );
    assert!(
        !table.contains("idler") && !table.contains("bob"),
        "{table}"
    );
    let output = host.cli(&alice, &["usage", "--tenant", "bob"]);
    assert!(!output.status.success());
    assert!(
        stderr(&output).contains("no tenant named `bob`"),
        "{}",
        stderr(&output)
    );
    // `--json` prints the API's answer; with no SKIFF_TOKEN, SKIFF_ADMIN_TOKEN is used.
    let output = skiff()
        .args(["usage", "--json", "--from", "24h", "--tenant", "bob"])
        .env("SKIFF_SERVER", &host.api)
        .env_remove("SKIFF_TOKEN")
        .env("SKIFF_ADMIN_TOKEN", ADMIN_TOKEN)
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", stderr(&output));
    let json: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(json["apps"].as_array().unwrap().len(), 1, "{json}");
    assert_eq!(usage_row(&json, "idler")["requests"], idler_requests);
    assert_eq!(usage_row(&json, "idler")["bytes_in"], ECHOED as u64);
    // Days and times are sent as RFC 3339; a range without the requests says so.
    let empty = host.cli_ok(
        &bob,
        &["usage", "--from", "2020-01-01", "--to", "2020-01-02"],
    );
    assert_eq!(
        empty,
        "no requests from 2020-01-01T00:00:00Z to 2020-01-02T00:00:00Z\n"
    );
    let output = host.cli(&bob, &["usage", "--from", "yesterday"]);
    assert!(!output.status.success());
    assert!(
        stderr(&output).contains("e.g. 1h, 24h, 7d"),
        "{}",
        stderr(&output)
    );
    // A range without the requests has none of them; a bad time is refused with an example.
    let (status, past) = host
        .api(
            reqwest::Method::GET,
            "/v1/usage?from=2020-01-01T00:00:00Z&to=2020-01-02T00:00:00Z",
            Some(ADMIN_TOKEN),
        )
        .await;
    assert_eq!(status, 200, "{past}");
    assert_eq!(past["apps"], serde_json::json!([]));
    assert_eq!(past["from"], "2020-01-01T00:00:00Z");
    let (status, bad) = host
        .api(
            reqwest::Method::GET,
            "/v1/usage?from=yesterday",
            Some(&alice),
        )
        .await;
    assert_eq!(status, 400);
    assert!(
        bad["error"]["message"]
            .as_str()
            .unwrap()
            .contains("2025-01-31T00:00:00Z"),
        "{bad}"
    );

    // The same sums as counters.
    let metrics = host.scrape(ADMIN_TOKEN, "/metrics").await;
    for expected in [
        format!("skiff_usage_requests_total{{tenant=\"alice\",app=\"spinner\"}} {SPINS}"),
        format!("skiff_usage_requests_total{{tenant=\"bob\",app=\"idler\"}} {idler_requests}"),
        format!("skiff_usage_bytes_in_total{{tenant=\"bob\",app=\"idler\"}} {ECHOED}"),
        format!("skiff_usage_bytes_out_total{{tenant=\"bob\",app=\"idler\"}} {idler_out}"),
        "skiff_usage_guest_cpu_seconds_total{tenant=\"alice\",app=\"spinner\"}".to_string(),
        "skiff_usage_wall_seconds_total{tenant=\"alice\",app=\"spinner\"}".to_string(),
        "skiff_usage_memory_byte_seconds_total{tenant=\"alice\",app=\"spinner\"}".to_string(),
    ] {
        assert!(
            metrics.contains(&expected),
            "no `{expected}` in:\n{metrics}"
        );
    }
    let own = host.scrape(&alice, "/v1/metrics").await;
    assert!(
        own.contains("skiff_usage_requests_total{tenant=\"alice\""),
        "{own}"
    );
    assert!(!own.contains("idler"), "{own}");
    let (_, doc) = host.api(reqwest::Method::GET, "/openapi.json", None).await;
    assert!(
        doc["paths"].get("/v1/usage").is_some(),
        "/v1/usage is not documented"
    );
}

#[tokio::test]
async fn usage_from_before_a_restart_is_still_reported() {
    let data_dir = fresh_data_dir().join("server");
    let token;
    const ECHOED: usize = 12_345;
    {
        let mut host = Host::start_in(data_dir.clone(), &[]);
        token = host.tenant("acme", &[]);
        host.deploy_ok(&token, http_app(1).path(), "billed");
        for _ in 0..3 {
            let response = client()
                .post(host.server.url("/echo"))
                .header("host", "billed.localhost")
                .body(vec![b'e'; ECHOED])
                .send()
                .await
                .unwrap();
            assert_eq!(response.bytes().await.unwrap().len(), ECHOED);
        }
        let before = usage_once(&host, &token, "", 3).await;
        assert_eq!(usage_row(&before, "billed")["bytes_in"], 3 * ECHOED as u64);
        // A graceful shutdown writes out the minutes still in memory.
        let status = std::process::Command::new("kill")
            .args(["-TERM", &host.server.pid().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        let status = host.server.child().wait().unwrap();
        assert!(status.success(), "{status:?}");
    }
    let files: Vec<_> = std::fs::read_dir(data_dir.join("usage"))
        .unwrap()
        .flatten()
        .map(|f| f.file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        files.iter().any(|name| name.ends_with(".ndjson")),
        "{files:?}"
    );
    let host = Host::start_in(data_dir, &[]);
    let after = usage_once(&host, &token, "", 3).await;
    let row = usage_row(&after, "billed");
    assert_eq!(row["requests"], 3, "{after}");
    assert_eq!(row["bytes_in"], 3 * ECHOED as u64);
    assert_eq!(row["bytes_out"], 3 * ECHOED as u64);
}

#[tokio::test]
async fn tokens_rotate_and_revoke_tenants_change_and_go_and_whoami_names_the_caller() {
    let data_dir = fresh_data_dir().join("server");
    let host = Host::start_in(data_dir.clone(), &[]);
    let alice = host.tenant("alice", &[]);
    let bob = host.tenant("bob", &[]);
    host.deploy_ok(&alice, http_app(1).path(), "hello");

    assert!(host.cli_ok(&alice, &["whoami"]).contains("tenant alice"));
    assert!(host.cli_ok(ADMIN_TOKEN, &["whoami"]).contains("the admin"));
    let (status, who) = host
        .api(reqwest::Method::GET, "/v1/whoami", Some(&bob))
        .await;
    assert_eq!((status, who["role"].as_str()), (200, Some("tenant")));
    assert_eq!(who["tenant"], "bob");

    // A tenant rotates its own token: the old one stops working at once.
    let out = host.cli_ok(&alice, &["tenants", "rotate-token", "alice"]);
    let rotated = out.lines().last().unwrap().trim().to_string();
    assert_ne!(rotated, alice);
    assert!(!host.cli(&alice, &["apps", "list"]).status.success());
    assert!(host.cli_ok(&rotated, &["apps", "list"]).contains("hello"));
    // Not another tenant's.
    let out = host.cli(&bob, &["tenants", "rotate-token", "alice"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("only its own token"),
        "{}",
        stderr(&out)
    );

    // Revoked by the admin: nothing is done as alice, and her app keeps serving.
    host.cli_ok(ADMIN_TOKEN, &["tenants", "revoke-token", "alice"]);
    assert!(!host.cli(&rotated, &["apps", "list"]).status.success());
    assert_eq!(host.get("hello", "/env/VERSION").await, (200, "1".into()));
    let out = host.cli_ok(ADMIN_TOKEN, &["tenants", "rotate-token", "alice"]);
    let alice = out.lines().last().unwrap().trim().to_string();

    // Quotas change: one app is all she may have now.
    let out = host.cli_ok(
        ADMIN_TOKEN,
        &["tenants", "set-quotas", "alice", "--max-apps", "1"],
    );
    assert!(out.contains("1 apps"), "{out}");
    let out = host.deploy(&alice, http_app(2).path(), "second");
    assert!(!out.status.success());
    assert!(stderr(&out).contains("max_apps"), "{}", stderr(&out));
    // The other quotas stayed as they were.
    let (_, list) = host
        .api(reqwest::Method::GET, "/v1/tenants", Some(ADMIN_TOKEN))
        .await;
    let quotas = &list["tenants"][0]["quotas"];
    assert_eq!(
        (
            quotas["max_apps"].as_u64(),
            quotas["max_code_bytes"].as_u64()
        ),
        (Some(1), Some(512 << 20))
    );

    // A tenant with apps goes only with them.
    let out = host.cli(ADMIN_TOKEN, &["tenants", "delete", "alice"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("hello"), "{}", stderr(&out));
    host.cli_ok(ADMIN_TOKEN, &["tenants", "delete", "alice", "--with-apps"]);
    assert!(!host.cli(&alice, &["apps", "list"]).status.success());
    assert_eq!(host.get("hello", "/").await.0, 404);
    drop(host);

    // All of it was written down.
    let host = Host::start_in(data_dir, &[]);
    let list = host.cli_ok(ADMIN_TOKEN, &["tenants", "list"]);
    assert!(!list.contains("alice") && list.contains("bob"), "{list}");
    assert!(!host.cli(&rotated, &["apps", "list"]).status.success());
    assert_eq!(host.get("hello", "/").await.0, 404);
}

#[tokio::test]
async fn a_tenants_stalled_uploads_neither_block_other_tenants_nor_hold_on_forever() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let host = Host::start_in(fresh_data_dir().join("server"), &["--upload-timeout", "3s"]);
    let slow = host.tenant("slow", &[]);
    let other = host.tenant("other", &[]);
    let addr = host.api.strip_prefix("http://").unwrap().to_string();
    // More uploads than the host has deploy slots: each announces a bundle, sends a few
    // bytes, and stalls.
    let mut stalled = Vec::new();
    for i in 0..8 {
        let mut stream = tokio::net::TcpStream::connect(&addr).await.unwrap();
        let head = format!(
            "PUT /v1/apps/stall{i} HTTP/1.1\r\nhost: {addr}\r\nauthorization: Bearer {slow}\r\n\
             content-length: 100000\r\n\r\npartial"
        );
        stream.write_all(head.as_bytes()).await.unwrap();
        stalled.push(stream);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;

    // Another tenant's deploy goes through meanwhile (bounded here: it used to wait forever).
    let folder = http_app(1);
    let mut deploy = skiff()
        .args(["deploy", "--name", "busy", folder.path().to_str().unwrap()])
        .env("SKIFF_SERVER", &host.api)
        .env("SKIFF_TOKEN", &other)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let status = wait_for_exit(
        &mut deploy,
        "a deploy waited on another tenant's stalled uploads",
    );
    assert!(status.success());
    assert_eq!(host.get("busy", "/env/VERSION").await, (200, "1".into()));

    // Every stalled upload is answered with an error (timed out, or waited out for the
    // tenant's own slot) and its connection let go.
    for mut stream in stalled {
        let mut answer = vec![0u8; 4096];
        let n = tokio::time::timeout(Duration::from_secs(30), stream.read(&mut answer))
            .await
            .expect("a stalled upload was held on to")
            .unwrap();
        let answer = String::from_utf8_lossy(&answer[..n]);
        assert!(
            answer.starts_with("HTTP/1.1 400") || answer.starts_with("HTTP/1.1 409"),
            "{answer}"
        );
    }
    let list = host.cli_ok(&slow, &["apps", "list"]);
    assert!(!list.contains("stall"), "{list}");
}

#[tokio::test]
async fn a_fault_of_the_server_reaches_the_tenant_as_a_reference_without_server_paths() {
    let host = Host::start();
    let token = host.tenant("acme", &[]);
    // The tenant's key-value folder cannot be made: a file stands in its way.
    let kv = host.data_dir.join("tenants/acme/kv");
    std::fs::create_dir_all(kv.parent().unwrap()).unwrap();
    std::fs::write(&kv, "in the way").unwrap();
    let state = state_app(
        "[app]\nname = \"vault\"\nversion = \"1\"\n\n[component.kv]\nsource = \"state.wasm\"\nroute = \"/...\"\nkey_value_stores = [\"default\"]\n",
    );
    let out = host.deploy(&token, state.path(), "vault");
    assert!(!out.status.success());
    let said = stderr(&out);
    let data_dir = host.data_dir.to_str().unwrap();
    assert!(!said.contains(data_dir), "{said}");
    assert!(!said.contains("tenants/acme"), "{said}");
    let reference = said
        .split("reference ")
        .nth(1)
        .and_then(|rest| rest.split(')').next())
        .unwrap_or_else(|| panic!("no reference in {said}"))
        .to_string();
    // The operator's log has the details under that reference.
    let logs = host.server.wait_for_log(&reference);
    let line = logs
        .lines()
        .find(|line| line.contains(&reference))
        .unwrap_or_else(|| panic!("{reference} is not in the log:\n{logs}"));
    assert!(line.contains("kv"), "{line}");
}

// ---- hardening: racing management calls, damaged records, immutable bundles ----

/// Uploads `bundle` as app `name` through the API itself (no client-side checks).
async fn put_bundle(host: &Host, token: &str, name: &str, bundle: Vec<u8>) -> (u16, Value) {
    let response = client()
        .put(format!("{}/v1/apps/{name}", host.api))
        .bearer_auth(token)
        .body(bundle)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

fn packed(folder: &Path) -> Vec<u8> {
    skiff_server::bundle::pack(&folder.join("skiff.toml"))
        .unwrap()
        .bytes
}

/// A small xorshift generator: the race test's choices, reproducible from the seed it prints.
struct Dice(u64);

impl Dice {
    fn roll(&mut self, sides: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % sides
    }
}

/// Checks every promise about the apps `names` of `token`'s tenant, through the API, the data
/// plane and the data folder: each app either exists whole (its record readable, its live
/// version among its versions, no version twice, every bundle on disk, and the data plane
/// serving exactly the live version) or not at all (no record, 404 everywhere).
async fn check_apps(host: &Host, token: &str, names: &[&str]) {
    let listed = host
        .api(reqwest::Method::GET, "/v1/apps", Some(token))
        .await;
    assert_eq!(listed.0, 200, "{listed:?}");
    let listed: Vec<String> = listed.1["apps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["name"].as_str().unwrap().to_string())
        .collect();
    for name in names {
        let (status, info) = host
            .api(
                reqwest::Method::GET,
                &format!("/v1/apps/{name}"),
                Some(token),
            )
            .await;
        let record_path = host.data_dir.join("apps").join(format!("{name}.json"));
        match status {
            404 => {
                assert!(
                    !listed.iter().any(|l| l == name),
                    "{name} listed: {listed:?}"
                );
                assert!(!record_path.exists(), "{name} deleted, its record stayed");
                assert_eq!(host.get(name, "/env/VERSION").await.0, 404, "{name}");
            }
            200 => {
                assert!(listed.iter().any(|l| l == name), "{name} not listed");
                let live = info["version"].as_u64().unwrap();
                let versions: Vec<u64> = info["versions"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|v| v["version"].as_u64().unwrap())
                    .collect();
                assert!(versions.contains(&live), "{info}");
                let mut unique = versions.clone();
                unique.dedup();
                assert_eq!(unique, versions, "{info}");
                let record: Value =
                    serde_json::from_slice(&std::fs::read(&record_path).unwrap()).unwrap();
                assert_eq!(record["live"], live, "{record}");
                for version in record["versions"].as_array().unwrap() {
                    let bundle = version["bundle"].as_str().unwrap();
                    assert!(
                        host.data_dir.join("bundles").join(bundle).is_dir(),
                        "{name}: bundle {bundle} is missing"
                    );
                }
                // The app version is `1.0.N` and the guest answers N.
                let app_version = info["app_version"].as_str().unwrap();
                let served = host.get(name, "/env/VERSION").await;
                assert_eq!(served.0, 200, "{name}: {served:?}");
                assert_eq!(
                    app_version.strip_prefix("1.0.").unwrap(),
                    served.1,
                    "{name}: the data plane serves another version than the live one"
                );
            }
            _ => panic!("{name}: inspect answered {status}: {info}"),
        }
    }
}

/// Tenants racing their own management calls: deploys (that prune old versions, since only
/// one is kept), rollbacks and deletes of the same few apps at once, for a bounded number of
/// calls. No call may fail on the server's side (500) or leave an app half there, and every
/// promise still holds after a restart of the server. Longer runs: SKIFF_RACE_CALLS=2000.
///
/// This is the bounded CI target for concurrent management calls (rather than a cargo-fuzz
/// target in `fuzz/`): the races live in the real server's timing between tasks, HTTP calls and
/// the disk, which a single-threaded, input-driven fuzzer does not explore, and the invariants
/// are worth checking after a restart of the real binary, which only a test like this does.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn racing_deploys_rollbacks_and_deletes_leave_every_app_whole_across_a_restart() {
    let data_dir = fresh_data_dir().join("server");
    let host = Arc::new(Host::start_in(data_dir.clone(), &["--keep-versions", "1"]));
    let token = host.tenant("acme", &[]);
    let bundles: Arc<Vec<Vec<u8>>> =
        Arc::new((1..=4).map(|v| packed(http_app(v).path())).collect());
    const APPS: [&str; 3] = ["race-a", "race-b", "race-c"];
    let calls: u64 = std::env::var("SKIFF_RACE_CALLS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(240);
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
        | 1;
    println!("race seed {seed}");
    let workers = 8;
    let mut tasks = Vec::new();
    for worker in 0..workers {
        let (host, token, bundles) = (host.clone(), token.clone(), bundles.clone());
        tasks.push(tokio::spawn(async move {
            let mut dice = Dice(seed.wrapping_mul(worker + 1) | 1);
            let mut failures = Vec::new();
            let mut tally = std::collections::BTreeMap::new();
            for _ in 0..calls / workers {
                let app = APPS[dice.roll(APPS.len() as u64) as usize];
                let path = format!("/v1/apps/{app}");
                let (call, status, body) = match dice.roll(10) {
                    0..=3 => {
                        let bundle = bundles[dice.roll(bundles.len() as u64) as usize].clone();
                        let (status, body) = put_bundle(&host, &token, app, bundle).await;
                        ("deploy", status, body)
                    }
                    4..=6 => {
                        let (status, body) = host
                            .api(
                                reqwest::Method::POST,
                                &format!("{path}/rollback"),
                                Some(&token),
                            )
                            .await;
                        ("rollback", status, body)
                    }
                    7 => {
                        let (status, body) =
                            host.api(reqwest::Method::DELETE, &path, Some(&token)).await;
                        ("delete", status, body)
                    }
                    8 => {
                        let (status, body) =
                            host.api(reqwest::Method::GET, &path, Some(&token)).await;
                        ("inspect", status, body)
                    }
                    _ => {
                        let (status, body) = host.get(app, "/env/VERSION").await;
                        ("request", status, Value::String(body))
                    }
                };
                let fine = match call {
                    "deploy" => matches!(status, 200 | 201),
                    "rollback" => matches!(status, 200 | 404 | 409),
                    "delete" => matches!(status, 204 | 404),
                    "inspect" => matches!(status, 200 | 404),
                    // A request racing a delete may find the app gone.
                    _ => matches!(status, 200 | 404),
                };
                *tally.entry(format!("{call} {status}")).or_insert(0u32) += 1;
                if !fine {
                    failures.push(format!("{call} {app}: {status} {body}"));
                }
            }
            (failures, tally)
        }));
    }
    let mut tally = std::collections::BTreeMap::new();
    for task in tasks {
        let (failures, counts) = task.await.unwrap();
        for (outcome, n) in counts {
            *tally.entry(outcome).or_insert(0) += n;
        }
        assert!(
            failures.is_empty(),
            "seed {seed}: {failures:#?}\nserver log:\n{}",
            host.server.logs()
        );
    }
    println!("calls by outcome: {tally:?}");
    check_apps(&host, &token, &APPS).await;
    let logs = host.server.logs();
    assert!(!logs.contains("panicked"), "{logs}");
    assert!(!logs.contains("inconsistent"), "{logs}");
    drop(host);

    let host = Host::start_in(data_dir, &["--keep-versions", "1"]);
    check_apps(&host, &token, &APPS).await;
    let logs = host.server.logs();
    assert!(!logs.contains("is not served"), "{logs}");
    assert!(!logs.contains("panicked"), "{logs}");
    // The names are all usable again after the restart.
    for app in APPS {
        let (status, body) = put_bundle(&host, &token, app, bundles[0].clone()).await;
        assert!(matches!(status, 200 | 201), "{app}: {status} {body}");
    }
    check_apps(&host, &token, &APPS).await;
}

/// A record that cannot be read, or that breaks a rule (its live version is not among its
/// versions), keeps only its own app from being served: the host starts, says which app and
/// why, serves the others, keeps the damaged app's bundles, and serves it again once the
/// record is repaired.
#[tokio::test]
async fn a_damaged_or_inconsistent_record_sets_only_its_app_aside() {
    let data_dir = fresh_data_dir().join("server");
    let token;
    {
        let host = Host::start_in(data_dir.clone(), &[]);
        token = host.tenant("acme", &[]);
        for name in ["good", "broken", "skewed"] {
            host.deploy_ok(&token, http_app(1).path(), name);
        }
    }
    let apps = data_dir.join("apps");
    std::fs::write(apps.join("broken.json"), "{\"name\": \"broken\", \"ten").unwrap();
    let skewed = std::fs::read_to_string(apps.join("skewed.json")).unwrap();
    let mut record: Value = serde_json::from_str(&skewed).unwrap();
    record["live"] = 99.into();
    std::fs::write(apps.join("skewed.json"), record.to_string()).unwrap();
    let bundles_before = std::fs::read_dir(data_dir.join("bundles")).unwrap().count();

    let host = Host::start_in(data_dir.clone(), &[]);
    assert_eq!(host.get("good", "/env/VERSION").await, (200, "1".into()));
    let logs = host.server.wait_for_log("`skewed` is not served");
    assert!(logs.contains("`broken` is not served"), "{logs}");
    assert!(
        logs.contains("live version 99 is not among its versions"),
        "{logs}"
    );
    for name in ["broken", "skewed"] {
        assert_eq!(host.get(name, "/").await.0, 404);
    }
    let list = host.cli_ok(&token, &["apps", "list", "--json"]);
    assert_eq!(app_names(list.as_bytes()), ["good"]);
    assert_eq!(
        std::fs::read_dir(data_dir.join("bundles")).unwrap().count(),
        bundles_before,
        "the bundles of set-aside apps were removed"
    );
    // Nobody deploys over a record that waits for repair.
    let (status, body) = put_bundle(&host, &token, "skewed", packed(http_app(2).path())).await;
    assert_eq!(status, 409, "{body}");
    drop(host);

    std::fs::write(apps.join("skewed.json"), skewed).unwrap();
    let host = Host::start_in(data_dir, &[]);
    assert_eq!(host.get("skewed", "/env/VERSION").await, (200, "1".into()));
}

/// Restoring an older `tenants.json` (a backup from before a tenant was created) must not
/// delete that tenant's apps: they are kept aside, named in a warning, and served again once
/// the tenant exists again.
#[tokio::test]
async fn an_older_tenants_file_keeps_the_apps_of_a_missing_tenant_until_it_returns() {
    let data_dir = fresh_data_dir().join("server");
    let older = data_dir.join("tenants.json.backup");
    let acme;
    {
        let host = Host::start_in(data_dir.clone(), &[]);
        acme = host.tenant("acme", &[]);
        host.deploy_ok(&acme, http_app(1).path(), "first");
        std::fs::copy(data_dir.join("tenants.json"), &older).unwrap();
        let beta = host.tenant("beta", &[]);
        host.deploy_ok(&beta, http_app(2).path(), "later");
    }
    std::fs::copy(&older, data_dir.join("tenants.json")).unwrap();
    let bundles_before = std::fs::read_dir(data_dir.join("bundles")).unwrap().count();

    let host = Host::start_in(data_dir.clone(), &[]);
    assert_eq!(host.get("first", "/env/VERSION").await, (200, "1".into()));
    assert_eq!(host.get("later", "/env/VERSION").await.0, 404);
    let logs = host.server.wait_for_log("kept aside");
    assert!(logs.contains("`later` (tenant `beta`)"), "{logs}");
    assert!(data_dir.join("apps/later.json").exists());
    assert_eq!(
        std::fs::read_dir(data_dir.join("bundles")).unwrap().count(),
        bundles_before
    );
    // The name stays taken meanwhile.
    let (status, body) = put_bundle(&host, &acme, "later", packed(http_app(3).path())).await;
    assert_eq!(status, 409, "{body}");

    let beta = host.tenant("beta", &[]);
    assert_eq!(host.get("later", "/env/VERSION").await, (200, "2".into()));
    let list = host.cli_ok(&beta, &["apps", "list", "--json"]);
    assert_eq!(app_names(list.as_bytes()), ["later"]);
    drop(host);
    let host = Host::start_in(data_dir, &[]);
    assert_eq!(host.get("later", "/env/VERSION").await, (200, "2".into()));
}

/// An app folder whose whole bundle is mounted writable at `/app`, as a manifest may ask.
fn writable_app(version: u32) -> tempfile::TempDir {
    let dir = http_app(version);
    std::fs::write(dir.path().join("seed.txt"), "from the bundle").unwrap();
    let manifest = std::fs::read_to_string(dir.path().join("skiff.toml")).unwrap();
    std::fs::write(
        dir.path().join("skiff.toml"),
        format!(
            "{manifest}files = [{{ source = \".\", destination = \"/app\", writable = true }}]\n"
        ),
    )
    .unwrap();
    dir
}

fn bundle_files(data_dir: &Path, file: &str) -> Vec<PathBuf> {
    std::fs::read_dir(data_dir.join("bundles"))
        .unwrap()
        .flatten()
        .map(|b| b.path().join(file))
        .filter(|p| std::fs::symlink_metadata(p).is_ok())
        .collect()
}

/// A writable mount never reaches the bundle: the guest writes to a folder of the app's own,
/// seeded from the bundle, kept across versions, and removed with the app.
#[tokio::test]
async fn a_writable_mount_gets_the_apps_own_folder_and_the_bundle_stays_as_deployed() {
    let host = Host::start();
    let token = host.tenant("acme", &[]);
    host.deploy_ok(&token, writable_app(1).path(), "notes");
    assert_eq!(
        host.get("notes", "/file?path=/app/seed.txt").await,
        (200, "from the bundle".into())
    );
    assert_eq!(
        host.get("notes", "/write?path=/app/note").await,
        (200, "written".into())
    );
    assert_eq!(
        host.get("notes", "/write?path=/app/seed.txt").await,
        (200, "written".into())
    );
    assert!(
        bundle_files(&host.data_dir, "note").is_empty(),
        "the guest wrote into its bundle"
    );
    for seed in bundle_files(&host.data_dir, "seed.txt") {
        assert_eq!(std::fs::read_to_string(seed).unwrap(), "from the bundle");
    }
    let files = host.data_dir.join("tenants/acme/apps/notes/files/app");
    assert_eq!(
        std::fs::read_to_string(files.join("note")).unwrap(),
        "written"
    );

    // A new version finds what the last one wrote; the seed does not overwrite it.
    host.deploy_ok(&token, writable_app(2).path(), "notes");
    assert_eq!(host.get("notes", "/env/VERSION").await, (200, "2".into()));
    assert_eq!(
        host.get("notes", "/file?path=/app/note").await,
        (200, "written".into())
    );
    assert_eq!(
        host.get("notes", "/file?path=/app/seed.txt").await,
        (200, "written".into())
    );

    host.cli_ok(&token, &["apps", "delete", "notes"]);
    assert!(!host.data_dir.join("tenants/acme/apps/notes").exists());
    // Deployed again, it starts from its bundle.
    host.deploy_ok(&token, writable_app(3).path(), "notes");
    assert_eq!(host.get("notes", "/file?path=/app/note").await.0, 500);
    assert_eq!(
        host.get("notes", "/file?path=/app/seed.txt").await,
        (200, "from the bundle".into())
    );
}

/// The attack a writable bundle allowed: the guest replaces `/app/skiff.toml` with a link to
/// the server's own environment, its tenant deploys again and rolls back, the server reads
/// the manifest again through the link and quotes it in the error, admin token included.
/// Now the rollback loads the app validated at deploy and reads nothing the guest touched.
#[tokio::test]
async fn a_link_planted_by_a_guest_never_makes_a_rollback_quote_the_servers_environment() {
    let data_dir = fresh_data_dir().join("server");
    let host = Host::start_in(data_dir.clone(), &[]);
    let token = host.tenant("acme", &[]);
    host.deploy_ok(&token, writable_app(1).path(), "trap");
    let environ = format!("{}proc/self/environ", "../".repeat(40));
    let (status, body) = host
        .get(
            "trap",
            &format!("/symlink?target={environ}&path=/app/skiff.toml"),
        )
        .await;
    assert_eq!((status, body.as_str()), (200, "linked"));
    host.deploy_ok(&token, writable_app(2).path(), "trap");

    let out = host.cli(&token, &["apps", "rollback", "trap"]);
    let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), stderr(&out));
    assert!(
        !said.contains(ADMIN_TOKEN),
        "the server's environment leaked: {said}"
    );
    assert!(out.status.success(), "{said}");
    assert_eq!(host.get("trap", "/env/VERSION").await, (200, "1".into()));
    // The bundles are as deployed: plain files, no link.
    for manifest in bundle_files(&data_dir, "skiff.toml") {
        assert!(std::fs::symlink_metadata(&manifest).unwrap().is_file());
    }
    drop(host);

    // A restart loads what was validated too.
    let host = Host::start_in(data_dir, &[]);
    assert_eq!(host.get("trap", "/env/VERSION").await, (200, "1".into()));
    assert!(!host.server.logs().contains(ADMIN_TOKEN));
}

/// Loading a version again (an idle app's next request, a restart) starts from the app
/// validated at deploy, whatever has happened to the files of its bundle since.
#[tokio::test]
async fn reloads_and_restarts_load_the_app_validated_at_deploy() {
    let data_dir = fresh_data_dir().join("server");
    let args = ["--idle-unload", "300ms"];
    let host = Host::start_in(data_dir.clone(), &args);
    let token = host.tenant("acme", &[]);
    host.deploy_ok(&token, http_app(1).path(), "steadfast");
    assert_eq!(
        host.get("steadfast", "/env/VERSION").await,
        (200, "1".into())
    );
    for manifest in bundle_files(&data_dir, "skiff.toml") {
        let text = std::fs::read_to_string(&manifest).unwrap();
        std::fs::write(
            &manifest,
            text.replace("VERSION = \"1\"", "VERSION = \"evil\""),
        )
        .unwrap();
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let (_, info) = host
            .api(reqwest::Method::GET, "/v1/apps/steadfast", Some(&token))
            .await;
        if info["status"] == "idle" {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "never unloaded: {info}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        host.get("steadfast", "/env/VERSION").await,
        (200, "1".into())
    );
    drop(host);
    let host = Host::start_in(data_dir, &args);
    assert_eq!(
        host.get("steadfast", "/env/VERSION").await,
        (200, "1".into())
    );
}

/// A manifest error quotes the deployer's own file, and only a bounded part of a long line.
#[tokio::test]
async fn a_manifest_error_quotes_a_bounded_part_of_a_long_line() {
    let host = Host::start();
    let token = host.tenant("acme", &[]);
    let long = "x".repeat(200_000);
    let manifest = format!("[app]\nname = \"long\"\nversion = {long}\n");
    let mut archive = tar::Builder::new(Vec::new());
    let mut header = tar::Header::new_gnu();
    header.set_size(manifest.len() as u64);
    header.set_mode(0o644);
    header.set_cksum();
    archive
        .append_data(&mut header, "skiff.toml", manifest.as_bytes())
        .unwrap();
    let bundle = archive.into_inner().unwrap();
    let (status, body) = put_bundle(&host, &token, "long", bundle).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["code"], "invalid_manifest", "{body}");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains("skiff.toml:3"), "{message}");
    assert!(message.contains("xxxx…"), "{message}");
    assert!(message.len() < 8 * 1024, "{} bytes quoted", message.len());
}

/// A bundle's manifest that names the server's own files (one that exists, one that does not,
/// a FIFO that would hold whoever opens it) is refused in the same words for each, before the
/// server looks at any of them.
#[tokio::test]
async fn a_bundle_naming_the_servers_files_learns_nothing_of_them() {
    let host = Host::start();
    let token = host.tenant("acme", &[]);
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("pipe");
    assert!(
        std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap()
            .success()
    );
    let wasm = std::fs::read(guest("http-guest")).unwrap();
    for source in [
        fifo.to_str().unwrap(),
        "/etc/hostname",
        "/no/such/file.wasm",
        "../x.wasm",
    ] {
        let manifest = format!(
            "[app]\nname = \"nosy\"\n\n[component.web]\nsource = \"{source}\"\nroute = \"/...\"\n"
        );
        let mut archive = tar::Builder::new(Vec::new());
        for (name, bytes) in [("skiff.toml", manifest.as_bytes()), ("web.wasm", &wasm[..])] {
            let mut header = tar::Header::new_gnu();
            header.set_size(bytes.len() as u64);
            header.set_mode(0o644);
            header.set_cksum();
            archive.append_data(&mut header, name, bytes).unwrap();
        }
        let bundle = archive.into_inner().unwrap();
        let put = put_bundle(&host, &token, "nosy", bundle);
        let (status, body) = tokio::time::timeout(Duration::from_secs(30), put)
            .await
            .unwrap_or_else(|_| panic!("the deploy naming `{source}` did not end"));
        assert_eq!(status, 400, "{source}: {body}");
        assert_eq!(body["error"]["code"], "invalid_manifest", "{body}");
        let message = body["error"]["message"].as_str().unwrap();
        assert!(
            message.contains(&format!("`{source}` lies outside the app's folder")),
            "{message}"
        );
        assert!(!message.contains("does not exist"), "{message}");
        assert!(!message.contains("WebAssembly"), "{message}");
    }
}

/// The disk quota counts every version kept for rollbacks: a tenant with room for one copy of
/// its app deploys it once, and the second version is refused, naming the quota and the fix.
#[tokio::test]
async fn a_deploy_over_the_disk_quota_is_refused_naming_the_quota() {
    let host = Host::start();
    let wasm = std::fs::metadata(guest("http-guest")).unwrap().len();
    let quota = (wasm + wasm / 2).to_string();
    let token = host.tenant("acme", &["--max-disk", &quota]);
    host.deploy_ok(&token, http_app(1).path(), "roomy");
    let out = host.deploy(&token, http_app(2).path(), "roomy");
    assert!(!out.status.success());
    let said = stderr(&out);
    assert!(said.contains("quota max_disk_bytes"), "{said}");
    assert!(said.contains("skiff apps delete"), "{said}");
    assert_eq!(host.get("roomy", "/env/VERSION").await, (200, "1".into()));
    let tenants = host.cli_ok(ADMIN_TOKEN, &["tenants", "list", "--json"]);
    let tenants: Value = serde_json::from_str(&tenants).unwrap();
    assert_eq!(
        tenants["tenants"][0]["quotas"]["max_disk_bytes"].to_string(),
        quota
    );
}

/// Records written before versions stored their app still load, from their bundle's manifest;
/// but never through a link in its place.
#[tokio::test]
async fn a_record_from_before_stored_apps_loads_from_its_bundle_but_never_through_a_link() {
    let data_dir = fresh_data_dir().join("server");
    {
        let host = Host::start_in(data_dir.clone(), &[]);
        let token = host.tenant("acme", &[]);
        host.deploy_ok(&token, http_app(1).path(), "old");
        host.deploy_ok(&token, http_app(2).path(), "linked");
    }
    for name in ["old", "linked"] {
        let path = data_dir.join("apps").join(format!("{name}.json"));
        let mut record: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        for version in record["versions"].as_array_mut().unwrap() {
            version.as_object_mut().unwrap().remove("app").unwrap();
        }
        std::fs::write(&path, record.to_string()).unwrap();
        if name == "linked" {
            let bundle = record["versions"][0]["bundle"].as_str().unwrap();
            let manifest = data_dir.join("bundles").join(bundle).join("skiff.toml");
            std::fs::remove_file(&manifest).unwrap();
            std::os::unix::fs::symlink("/proc/self/environ", &manifest).unwrap();
        }
    }
    let host = Host::start_in(data_dir, &[]);
    assert_eq!(host.get("old", "/env/VERSION").await, (200, "1".into()));
    let (status, body) = host.get("linked", "/env/VERSION").await;
    assert_ne!(status, 200, "{body}");
    assert!(!body.contains(ADMIN_TOKEN), "{body}");
    let logs = host.server.wait_for_log("not a plain file");
    assert!(logs.contains("not a plain file"), "{logs}");
    assert!(!logs.contains(ADMIN_TOKEN), "{logs}");
}

/// A tenant's idle instances (kept for reuse) count against its own in-flight quota, never
/// against what all tenants share: a tenant with a quota of 2 and three reusing components
/// keeps at most 2 instances, so a neighbour still finds the host's instances free; and the
/// tenant's own requests reclaim its idle instances' permits when they need them.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_tenants_idle_instances_count_against_its_own_quota() {
    let host = Host::start_in(fresh_data_dir().join("server"), &["--max-instances", "8"]);
    let greedy = host.tenant("greedy", &["--max-in-flight", "2"]);
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(guest("http-guest"), dir.path().join("web.wasm")).unwrap();
    let mut manifest = String::from("[app]\nname = \"greedy\"\n");
    for id in ["a", "b", "c"] {
        manifest.push_str(&format!(
            "\n[component.{id}]\nsource = \"web.wasm\"\nroute = \"/{id}/...\"\n\
             limits = {{ requests_per_instance = 1000 }}\n"
        ));
    }
    std::fs::write(dir.path().join("skiff.toml"), manifest).unwrap();
    host.deploy_ok(&greedy, dir.path(), "greedy");
    let neighbour = host.tenant("neighbour", &["--max-in-flight", "6"]);
    host.deploy_ok(&neighbour, http_app(1).path(), "neighbour");

    // `n` requests at once to `app`: the statuses, in order.
    let at_once = |app: &'static str, path: &'static str, n: usize| {
        let url = host.server.url(path);
        async move {
            let requests = (0..n).map(|_| {
                let url = url.clone();
                tokio::spawn(async move {
                    let response = client()
                        .get(url)
                        .header("host", format!("{app}.localhost"))
                        .send()
                        .await
                        .unwrap();
                    response.status().as_u16()
                })
            });
            let mut statuses = Vec::new();
            for request in requests.collect::<Vec<_>>() {
                statuses.push(request.await.unwrap());
            }
            statuses
        }
    };
    // Two instances of each of the greedy tenant's components, one component after the
    // other: each pair fits its quota, and each instance is kept when its request is done.
    for path in ["/a/sleep?ms=500", "/b/sleep?ms=500", "/c/sleep?ms=500"] {
        assert_eq!(at_once("greedy", path, 2).await, [200, 200], "{path}");
    }
    // Six instances kept idle would leave two of the host's eight for everyone else; the
    // tenant keeps at most its quota, so four requests of the neighbour are served at once.
    assert_eq!(
        at_once("neighbour", "/sleep?ms=1000", 4).await,
        [200, 200, 200, 200],
        "log:\n{}",
        host.server.logs()
    );
    // The greedy tenant's own requests still pass, whichever component kept the instances.
    assert_eq!(at_once("greedy", "/a/sleep?ms=200", 2).await, [200, 200]);
    assert_eq!(at_once("greedy", "/c/sleep?ms=200", 2).await, [200, 200]);
}

/// `skiff server` stopped by SIGTERM while a guest computes for ever: it exits once its grace
/// period is over.
#[tokio::test]
async fn a_server_stops_guests_still_computing_and_exits_on_sigterm() {
    use tokio::io::AsyncWriteExt;
    let mut host = Host::start_in(fresh_data_dir().join("server"), &["--shutdown-grace", "1s"]);
    let token = host.tenant("acme", &[]);
    host.deploy_ok(&token, http_app(1).path(), "web");
    let addr = host.server.url.trim_start_matches("http://").to_string();
    let mut spinning = tokio::net::TcpStream::connect(&addr).await.unwrap();
    spinning
        .write_all(b"GET /spin HTTP/1.1\r\nHost: web.localhost\r\n\r\n")
        .await
        .unwrap();
    let pid = host.server.pid();
    let used = common::cpu_used(pid, Duration::from_millis(500), Duration::from_secs(1)).await;
    assert!(
        used >= Duration::from_millis(200),
        "the guest is not computing: {used:?}"
    );
    common::sigterm(pid);
    let status = common::wait_for_exit(host.server.child(), Duration::from_secs(30));
    assert!(
        status.is_some_and(|status| status.success()),
        "{status:?}; log:\n{}",
        host.server.logs()
    );
    drop(spinning);
}

/// Disk written between deploys: once the tenant's apps take more than its quota, their
/// key-value writes fail and their writable folders are read-only, until it is under again.
#[tokio::test]
async fn a_tenant_over_its_disk_quota_has_its_apps_writes_refused_until_it_is_under() {
    let host = Host::start_in(
        fresh_data_dir().join("server"),
        &["--disk-check-interval", "200ms"],
    );
    let token = host.tenant("filler", &["--max-disk", "2MiB"]);
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(guest("state-guest"), dir.path().join("state.wasm")).unwrap();
    std::fs::copy(guest("http-guest"), dir.path().join("web.wasm")).unwrap();
    std::fs::create_dir_all(dir.path().join("data")).unwrap();
    std::fs::write(dir.path().join("data/.keep"), "").unwrap();
    std::fs::write(
        dir.path().join("skiff.toml"),
        "[app]\nname = \"filler\"\n\n[component.kv]\nsource = \"state.wasm\"\nroute = \"/...\"\n\
         key_value_stores = [\"default\"]\n\n[component.web]\nsource = \"web.wasm\"\n\
         route = \"/web/...\"\nfiles = [{ source = \"data\", destination = \"/data\", writable = true }]\n",
    )
    .unwrap();
    host.deploy_ok(&token, dir.path(), "filler");
    let set = |key: &str, bytes: usize| {
        client()
            .post(host.server.url(&format!("/kv/set?store=default&key={key}")))
            .header("host", "filler.localhost")
            .body(vec![b'x'; bytes])
            .send()
    };
    assert_eq!(host.get("filler", "/web/write?path=/data/a").await.0, 200);
    // Values pile up until the next check finds the tenant over its two megabytes.
    assert_eq!(set("first", 1 << 20).await.unwrap().status(), 200);
    let mut refused = None;
    for n in 0..100 {
        let response = set(&format!("more{n}"), 256 << 10).await.unwrap();
        if response.status() != 200 {
            refused = Some(response);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let refused = refused.expect("writes went on past the disk quota");
    assert_eq!(refused.status(), 503);
    assert!(refused.text().await.unwrap().contains("disk quota"));
    assert!(host.server.logs().contains("over its disk quota"));
    let (status, _) = host.get("filler", "/web/write?path=/data/b").await;
    assert_eq!(status, 500, "a write to the folder went through");
    // Reads go on.
    assert_eq!(
        host.get("filler", "/kv/get?store=default&key=first")
            .await
            .0,
        200
    );
    assert_eq!(host.get("filler", "/web/file?path=/data/a").await.0, 200);

    // A larger quota lets it write again at the next check.
    host.cli_ok(
        ADMIN_TOKEN,
        &["tenants", "set-quotas", "filler", "--max-disk", "1GiB"],
    );
    host.server.wait_for_log("under its disk quota again");
    assert_eq!(set("four", 10).await.unwrap().status(), 200);
    assert_eq!(host.get("filler", "/web/write?path=/data/b").await.0, 200);
}

/// Pushes `folder` to `reference` with `skiff push` (anonymously: a plain test registry).
fn push(reference: &str, folder: &Path) -> String {
    let docker = tempfile::tempdir().unwrap();
    let out = skiff()
        .env("DOCKER_CONFIG", docker.path())
        .args(["push", reference, folder.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "push failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

#[tokio::test]
async fn tenants_deploy_from_allowed_registries_and_versions_record_the_digest() {
    let mut registry = common::registry::Registry::plain();
    let addr = registry.addr.clone();
    let v1 = push(&format!("{addr}/apps/web:v1"), http_app(1).path());
    let host = Host::start_in(
        fresh_data_dir().join("server"),
        &["--allow-registry", &format!("{addr}/apps")],
    );
    let token = host.tenant("acme", &[]);

    let out = host.cli_ok(
        &token,
        &["deploy", "--from", &format!("{addr}/apps/web:v1")],
    );
    assert!(out.contains("Deployed web version 1 (new)"), "{out}");
    assert_eq!(host.get("web", "/env/VERSION").await, (200, "1".into()));
    let digest = v1.split_once('@').unwrap().1;
    let inspect = host.cli_ok(&token, &["apps", "inspect", "web"]);
    assert!(
        inspect.contains(&format!("{addr}/apps/web:v1 ({digest})")),
        "{inspect}"
    );

    // A new tag is a new version; the tag's digest is what the version records.
    let v2 = push(&format!("{addr}/apps/web:v2"), http_app(2).path());
    host.cli_ok(
        &token,
        &["deploy", "--from", &format!("{addr}/apps/web:v2")],
    );
    assert_eq!(host.get("web", "/env/VERSION").await, (200, "2".into()));
    let (_, info) = host
        .api(reqwest::Method::GET, "/v1/apps/web", Some(&token))
        .await;
    assert_eq!(
        info["versions"][0]["source"]["digest"],
        v2.split_once('@').unwrap().1
    );

    // Outside the allowed prefix: refused, naming what is allowed.
    push(&format!("{addr}/other/web:v1"), http_app(3).path());
    let out = host.cli(
        &token,
        &["deploy", "--from", &format!("{addr}/other/web:v1")],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains(&format!("deploys only from {addr}/apps")),
        "{err}"
    );

    // A missing tag, and a single component: clear refusals.
    let out = host.cli(
        &token,
        &["deploy", "--from", &format!("{addr}/apps/web:v9")],
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("not found in the registry"));
    let component = guest("http-guest");
    push(&format!("{addr}/apps/bare:v1"), &component);
    let out = host.cli(
        &token,
        &["deploy", "--from", &format!("{addr}/apps/bare:v1")],
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("is a single component"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // A damaged blob fails the deploy; version 2 keeps serving.
    let v3 = push(&format!("{addr}/apps/web:v3"), http_app(3).path());
    let manifest = registry.manifest("apps/web", "v3").await;
    // Its first layer is its skiff.toml, which differs from v2's.
    let manifest_layer = manifest["layers"][0]["digest"].as_str().unwrap();
    let blob = registry.blob_file(manifest_layer);
    let mut bytes = std::fs::read(&blob).unwrap();
    bytes[0] ^= 0x20;
    std::fs::write(&blob, bytes).unwrap();
    let out = host.cli(&token, &["deploy", "--from", &v3]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("does not match its digest"), "{err}");
    assert_eq!(host.get("web", "/env/VERSION").await, (200, "2".into()));

    // Even a digest the server pulled before is deployed only while the registry serves it.
    registry.stop();
    let out = host.cli(&token, &["deploy", "--from", &v2]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cannot reach the registry"), "{err}");

    // A server that allows no registry says so.
    let closed = Host::start();
    let token = closed.tenant("acme", &[]);
    let out = closed.cli(
        &token,
        &["deploy", "--from", &format!("{addr}/apps/web:v1")],
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("deploys from no registry"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
