//! Queues, through `wasi:messaging`: what a component may publish, where its messages go, and
//! that tenants' queues are apart, against the real `skiff up` and `skiff server` and a real
//! Redis. The guest is `tests/guests/queue-guest`.

#![allow(clippy::unwrap_used, clippy::expect_used)] // A panic here is a failure with its message.

mod common;

use common::host::Host;
use common::redis::Redis;
use common::{Server, app_dir, client, get, guest, skiff};

/// The queue guest as an app folder that may publish to `orders`.
fn queue_app(name: &str) -> tempfile::TempDir {
    let text = format!(
        "[app]\nname = \"{name}\"\n\n[component.web]\nsource = \"queue.wasm\"\nroute = \"/...\"\n\
         key_value_stores = [\"default\"]\npublish = [\"orders\"]\n"
    );
    let dir = app_dir(&[("skiff.toml", &text)]);
    std::fs::copy(guest("queue-guest"), dir.path().join("queue.wasm")).unwrap();
    dir
}

#[tokio::test]
async fn a_component_publishes_to_the_queues_it_lists_and_no_other() {
    let dir = queue_app("shop");
    let server = Server::start(&["up", dir.path().join("skiff.toml").to_str().unwrap()]);
    assert_eq!(
        get(&server, "/enqueue?queue=orders&n=3&prefix=order").await,
        (200, "sent 3".into())
    );
    let (status, body) = get(&server, "/enqueue?queue=secret&n=1&prefix=x").await;
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("PermissionDenied"), "{body}");
    assert!(
        body.contains("publish"),
        "the guest is told the fix: {body}"
    );
    // The denial is logged for the operator (the log arrives through a pipe: give it time).
    let started = std::time::Instant::now();
    while !server
        .logs()
        .contains("denied publishing to queue `secret`")
    {
        assert!(started.elapsed().as_secs() < 10, "{}", server.logs());
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn on_a_cluster_each_tenant_publishes_to_queues_of_its_own_in_redis() {
    let redis = Redis::start();
    let host = Host::start_in_cluster(&redis.url(), 1, &[]);
    let started = std::time::Instant::now();
    while client()
        .get(format!("{}/readyz", host.api))
        .send()
        .await
        .map_or(true, |r| r.status() != 200)
    {
        assert!(started.elapsed().as_secs() < 20, "the host is not ready");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let acme = host.tenant("acme", &[]);
    let globex = host.tenant("globex", &[]);
    host.deploy_ok(&acme, queue_app("shop").path(), "shop");
    host.deploy_ok(&globex, queue_app("shop").path(), "store");
    assert_eq!(
        host.get("shop", "/enqueue?queue=orders&n=5&prefix=a").await,
        (200, "sent 5".into())
    );
    assert_eq!(
        host.get("store", "/enqueue?queue=orders&n=2&prefix=g")
            .await,
        (200, "sent 2".into())
    );
    assert_eq!(redis.cli(&["XLEN", "skiff:q:acme/orders"]).trim(), "5");
    assert_eq!(redis.cli(&["XLEN", "skiff:q:globex/orders"]).trim(), "2");
    // Redis down: the guest hears that its publish failed, and the host goes on serving.
    drop(redis);
    let (status, body) = host.get("shop", "/enqueue?queue=orders&n=1&prefix=a").await;
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("Connection"), "{body}");
}

#[test]
fn a_consume_table_is_refused_until_skiff_runs_consumers() {
    let dir = queue_app("shop");
    let manifest = dir.path().join("skiff.toml");
    let mut text = std::fs::read_to_string(&manifest).unwrap();
    text.push_str("[component.web.consume]\nqueue = \"orders\"\n");
    std::fs::write(&manifest, text).unwrap();
    let out = skiff()
        .args(["up", manifest.to_str().unwrap(), "--listen", "127.0.0.1:0"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains("component.web.consume"), "{stderr}");
    assert!(
        stderr.contains("does not run queue consumers yet"),
        "{stderr}"
    );
}
