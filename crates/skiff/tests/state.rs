//! State and configuration through standard WASI interfaces: `wasi:keyvalue` stores (embedded
//! and Redis), `wasi:config` variables and `wasi:logging`, against the real `skiff up` and a
//! real Redis server.

#![allow(clippy::unwrap_used, clippy::expect_used)] // A panic here is a failure with its message.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::redis::Redis;
use common::{Server, app_dir, client, get, guest};

/// A manifest of the state guest: `components` are (id, route, extra TOML lines).
fn manifest(app: &str, variables: &str, components: &[(&str, &str, &str)]) -> String {
    let wasm = guest("state-guest");
    let mut text = format!("[app]\nname = \"{app}\"\n\n{variables}\n");
    for (id, route, extra) in components {
        text.push_str(&format!(
            "[component.{id}]\nsource = \"{}\"\nroute = \"{route}\"\n{extra}\n\n",
            wasm.display()
        ));
    }
    text
}

async fn post(server: &Server, path: &str, body: &str) -> (u16, String) {
    let response = client()
        .post(server.url(path))
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    (response.status().as_u16(), response.text().await.unwrap())
}

/// GETs every URL at once and checks that each answers 200.
async fn all_answer_200(urls: Vec<String>) {
    let http = client();
    let requests: Vec<_> = urls
        .into_iter()
        .map(|url| {
            let http = http.clone();
            tokio::spawn(async move { http.get(url).send().await.unwrap().status().as_u16() })
        })
        .collect();
    for request in requests {
        assert_eq!(request.await.unwrap(), 200);
    }
}

#[tokio::test]
async fn a_component_uses_its_store_and_cannot_open_others() {
    let text = manifest(
        "kv",
        "",
        &[
            ("writer", "/w/...", "key_value_stores = [\"default\"]"),
            (
                "reader",
                "/r/...",
                "key_value_stores = [\"default\", \"other\"]",
            ),
        ],
    );
    let dir = app_dir(&[("skiff.toml", &text)]);
    let server = Server::start(&["up", dir.path().join("skiff.toml").to_str().unwrap()]);

    assert_eq!(
        post(&server, "/w/kv/set?store=default&key=greeting", "hello").await,
        (200, "ok".into())
    );
    // Two components of one app that name the same label share it.
    assert_eq!(
        get(&server, "/r/kv/get?store=default&key=greeting").await,
        (200, "hello".into())
    );
    assert_eq!(
        get(&server, "/r/kv/exists?store=default&key=greeting").await,
        (200, "true".into())
    );
    assert_eq!(
        get(&server, "/r/kv/get?store=other&key=greeting").await,
        (404, "missing".into())
    );
    assert_eq!(
        get(&server, "/w/kv/delete?store=default&key=greeting")
            .await
            .0,
        200
    );
    assert_eq!(
        get(&server, "/r/kv/get?store=default&key=greeting").await,
        (404, "missing".into())
    );

    // Listing follows the cursor across pages: 1,500 keys come back exactly once each.
    let (status, body) = get(&server, "/w/kv/batch?store=default&prefix=b&n=3").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body,
        "b0=value of b0\nb1=value of b1\nb2=value of b2\nnone\nleft after delete-many: 0"
    );
    for i in 0..3 {
        post(&server, &format!("/w/kv/set?store=default&key=k{i}"), "v").await;
    }
    let (_, keys) = get(&server, "/w/kv/list?store=default").await;
    assert_eq!(keys, "k0\nk1\nk2");

    // A label the component was not granted: the guest gets access-denied, the log says who.
    let (status, body) = get(&server, "/w/kv/get?store=other&key=x").await;
    assert_eq!((status, body.as_str()), (503, "store error: access-denied"));
    let logs = server.wait_for_log("denied opening key-value store `other`");
    let line = logs
        .lines()
        .find(|l| l.contains("denied opening key-value store"))
        .unwrap();
    assert!(line.contains("component=writer"), "{line}");
}

#[tokio::test]
async fn fifty_concurrent_requests_of_a_hundred_increments_make_exactly_5000() {
    let text = manifest(
        "counter",
        "",
        &[("c", "/...", "key_value_stores = [\"default\"]")],
    );
    let dir = app_dir(&[("skiff.toml", &text)]);
    let server = Server::start(&["up", dir.path().join("skiff.toml").to_str().unwrap()]);
    let url = server.url("/kv/incr?store=default&key=hits&times=100");
    all_answer_200(vec![url; 50]).await;
    assert_eq!(
        get(&server, "/kv/get?store=default&key=hits").await,
        (200, "5000".into())
    );
}

/// Spin 3 guests speak wasi:keyvalue 0.2.0-draft2: compare-and-swap, signed increments and
/// string cursors, over the very same stores.
#[tokio::test]
async fn draft2_guests_compare_and_swap_under_contention() {
    let text = manifest(
        "cas",
        "",
        &[("c", "/...", "key_value_stores = [\"default\"]")],
    );
    let dir = app_dir(&[("skiff.toml", &text)]);
    let server = Server::start(&["up", dir.path().join("skiff.toml").to_str().unwrap()]);

    // 20 requests each add 1 twenty-five times by compare-and-swap: no update is lost.
    let url = server.url("/kv2/cas-add?store=default&key=n&by=1&times=25");
    all_answer_200(vec![url; 20]).await;
    assert_eq!(
        get(&server, "/kv/get?store=default&key=n").await,
        (200, "500".into())
    );

    // Signed increments go down too, never below zero.
    assert_eq!(
        get(&server, "/kv2/incr?store=default&key=n&by=-200").await,
        (200, "300".into())
    );
    let (status, body) = get(&server, "/kv2/incr?store=default&key=n&by=-301").await;
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("below zero"), "{body}");
    assert_eq!(
        get(&server, "/kv2/incr?store=default&key=m&by=7").await,
        (200, "7".into())
    );
    assert_eq!(
        get(&server, "/kv2/list?store=default").await,
        (200, "m\nn".into())
    );
}

/// Every write the guest saw acknowledged survives `kill -9` of skiff.
#[tokio::test]
async fn acknowledged_writes_survive_kill_9() {
    let text = manifest(
        "durable",
        "",
        &[("c", "/...", "key_value_stores = [\"default\"]")],
    );
    let dir = app_dir(&[("skiff.toml", &text)]);
    let data = tempfile::tempdir().unwrap();
    let args = |data: &Path| {
        vec![
            "--data-dir".to_string(),
            data.to_str().unwrap().to_string(),
            "up".to_string(),
            dir.path().join("skiff.toml").to_str().unwrap().to_string(),
        ]
    };
    let args1 = args(data.path());
    let mut server = Server::start(&args1.iter().map(String::as_str).collect::<Vec<_>>());

    // Four writers; the process is killed while they run.
    let acknowledged = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let http = client();
    let writers: Vec<_> = (0..4)
        .map(|w| {
            let (http, base, acknowledged) = (http.clone(), server.url(""), acknowledged.clone());
            tokio::spawn(async move {
                for i in 0.. {
                    let key = format!("w{w}-{i}");
                    let url = format!("{base}/kv/set?store=default&key={key}");
                    match http.post(url).body(format!("value {key}")).send().await {
                        Ok(r) if r.status() == 200 => acknowledged.lock().unwrap().push(key),
                        _ => return,
                    }
                }
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(700)).await;
    let pid = server.pid();
    Command::new("kill")
        .args(["-9", &pid.to_string()])
        .status()
        .unwrap();
    let _ = server.child().wait();
    for writer in writers {
        writer.await.unwrap();
    }
    let acknowledged = acknowledged.lock().unwrap().clone();
    assert!(
        acknowledged.len() > 20,
        "too few writes before the kill: {}",
        acknowledged.len()
    );

    let args2 = args(data.path());
    let server = Server::start(&args2.iter().map(String::as_str).collect::<Vec<_>>());
    for key in &acknowledged {
        let (status, body) = get(&server, &format!("/kv/get?store=default&key={key}")).await;
        assert_eq!(
            (status, body),
            (200, format!("value {key}")),
            "acknowledged key {key} was lost"
        );
    }
}

#[tokio::test]
async fn variables_come_from_providers_and_templates() {
    let variables = r#"[variables]
api_token = { required = true, secret = true }
greeting = { default = "hello" }
region = { default = "eu" }
unset = {}
"#;
    let text = manifest(
        "vars",
        variables,
        &[(
            "c",
            "/...",
            r#"variables = { auth = "Bearer {{ api_token }}", message = "{{ greeting }} from {{ region }}", maybe = "{{ unset }}" }"#,
        )],
    );
    let dir = app_dir(&[
        ("skiff.toml", &text),
        (
            "runtime.toml",
            "variables_file = \"secrets.toml\"\n\n[variables]\ngreeting = \"hi\"\nregion = \"from config\"\n",
        ),
        ("secrets.toml", "region = \"from file\"\n"),
    ]);
    let manifest_path = dir.path().join("skiff.toml");
    let runtime_config = dir.path().join("runtime.toml");

    // A required variable without a value stops the load, naming it and where to give it.
    let output = common::skiff()
        .args([
            "up",
            "--listen",
            "127.0.0.1:0",
            manifest_path.to_str().unwrap(),
        ])
        .env_remove("SKIFF_VAR_API_TOKEN")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!output.status.success());
    let err = String::from_utf8_lossy(&output.stderr);
    assert!(
        err.contains("`api_token`") && err.contains("SKIFF_VAR_API_TOKEN"),
        "{err}"
    );

    // Environment first, then the variables file, then the runtime config, then the default.
    let mut command = common::skiff();
    command.env("SKIFF_VAR_API_TOKEN", "s3cr3t-t0ken");
    let server = Server::start_with(
        command,
        &[
            "--log-level",
            "debug",
            "up",
            "--runtime-config",
            runtime_config.to_str().unwrap(),
            manifest_path.to_str().unwrap(),
        ],
    );
    assert_eq!(
        get(&server, "/config/auth").await,
        (200, "Bearer s3cr3t-t0ken".into())
    );
    assert_eq!(
        get(&server, "/config/message").await,
        (200, "hi from from file".into())
    );
    // A template over an optional variable nobody set is itself unset.
    assert_eq!(get(&server, "/config/maybe").await, (404, "unset".into()));
    assert_eq!(
        get(&server, "/config/api_token").await,
        (404, "unset".into())
    );
    let (_, all) = get(&server, "/config").await;
    assert_eq!(all, "auth=Bearer s3cr3t-t0ken\nmessage=hi from from file");
    // The secret never reaches the log, even at debug level.
    assert!(!server.logs().contains("s3cr3t"), "{}", server.logs());
}

#[tokio::test]
async fn guest_log_records_reach_the_log_with_level_and_request() {
    let text = manifest("logs", "", &[("c", "/...", "")]);
    let dir = app_dir(&[("skiff.toml", &text)]);
    let server = Server::start(&[
        "--log-format",
        "json",
        "up",
        dir.path().join("skiff.toml").to_str().unwrap(),
    ]);
    assert_eq!(
        get(&server, "/log?level=warn&message=disk+almost+full")
            .await
            .0,
        200
    );
    let logs = server.wait_for_log("disk almost full");
    let line = logs
        .lines()
        .find(|l| l.contains("disk almost full"))
        .unwrap();
    let record: serde_json::Value = serde_json::from_str(line).unwrap();
    assert_eq!(record["level"], "WARN", "{line}");
    assert_eq!(record["target"], "guest", "{line}");
    assert_eq!(record["fields"]["context"], "state-guest", "{line}");
    assert_eq!(record["fields"]["app"], "logs", "{line}");
    assert!(record["fields"]["request_id"].is_u64(), "{line}");
}

// ---- Redis ---------------------------------------------------------------------------------

fn redis_app(app: &str, redis: &Redis) -> tempfile::TempDir {
    let text = manifest(
        app,
        "",
        &[("c", "/...", "key_value_stores = [\"default\"]")],
    );
    let runtime = format!(
        "[key_value_store.default]\ntype = \"redis\"\nurl = \"{}\"\n",
        redis.url()
    );
    app_dir(&[("skiff.toml", &text), ("runtime.toml", &runtime)])
}

fn up_with_runtime_config(dir: &Path) -> Server {
    Server::start(&[
        "up",
        "--runtime-config",
        dir.join("runtime.toml").to_str().unwrap(),
        dir.join("skiff.toml").to_str().unwrap(),
    ])
}

#[tokio::test]
async fn two_hosts_share_a_redis_store_and_apps_stay_apart() {
    let redis = Redis::start();
    let dir = redis_app("shared", &redis);
    let (a, b) = (
        up_with_runtime_config(dir.path()),
        up_with_runtime_config(dir.path()),
    );

    // The increments of 50 requests, split across both hosts, all count.
    let path = "/kv/incr?store=default&key=hits&times=100";
    let urls = (0..50)
        .map(|i| if i % 2 == 0 { a.url(path) } else { b.url(path) })
        .collect();
    all_answer_200(urls).await;
    assert_eq!(
        get(&a, "/kv/get?store=default&key=hits").await,
        (200, "5000".into())
    );
    assert_eq!(
        get(&b, "/kv/get?store=default&key=hits").await,
        (200, "5000".into())
    );

    // Another app with the same label on the same Redis sees none of it.
    let other_dir = redis_app("other", &redis);
    let other = up_with_runtime_config(other_dir.path());
    assert_eq!(
        get(&other, "/kv/get?store=default&key=hits").await,
        (404, "missing".into())
    );
}

#[tokio::test]
async fn redis_down_is_an_error_for_the_guest_and_skiff_reconnects() {
    let redis = Redis::start();
    let port = redis.port;
    let dir = redis_app("flaky", &redis);
    let server = up_with_runtime_config(dir.path());
    assert_eq!(
        post(&server, "/kv/set?store=default&key=k", "before")
            .await
            .0,
        200
    );

    drop(redis);
    let (status, body) = get(&server, "/kv/get?store=default&key=k").await;
    assert_eq!(status, 503, "{body}");
    assert!(body.starts_with("store error: other("), "{body}");
    let logs = server.wait_for_log("key-value store `default` failed");
    assert!(logs.contains("key-value store `default` failed"), "{logs}");

    // Back on the same port (empty: it saved nothing); skiff reconnects by itself.
    let _redis = Redis::start_on(port);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (status, body) = post(&server, "/kv/set?store=default&key=k", "after").await;
        if status == 200 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "skiff did not reconnect: {status} {body}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(
        get(&server, "/kv/get?store=default&key=k").await,
        (200, "after".into())
    );
}
