//! `skiff server --insecure-dev` takes management calls without a token, so it must answer only
//! programs on this machine: not a web page that reaches the loopback port through DNS
//! rebinding (a foreign `Host`) or a cross-site form (a foreign `Origin`).

#![allow(clippy::unwrap_used, clippy::expect_used)] // A panic here is a failure with its message.

mod common;

use common::{Server, client, fresh_data_dir, skiff};

/// `skiff GLOBAL... server --insecure-dev` and the address of its management API.
fn dev_server(global: &[&str]) -> (Server, String) {
    let data = fresh_data_dir().join("server");
    let mut command = skiff();
    command.env_remove("SKIFF_ADMIN_TOKEN");
    let mut args = global.to_vec();
    args.extend([
        "server",
        "--insecure-dev",
        "--api-listen",
        "127.0.0.1:0",
        "--data",
        data.to_str().unwrap(),
    ]);
    let server = Server::start_with(command, &args);
    let api = server
        .stdout_lines
        .iter()
        .find_map(|line| line.strip_prefix("Management API "))
        .unwrap()
        .to_string();
    (server, api)
}

#[tokio::test]
async fn insecure_dev_answers_only_requests_addressed_to_and_sent_from_this_machine() {
    let (_server, api) = dev_server(&[]);
    let port = api.rsplit(':').next().unwrap().to_string();
    let tenants = format!("{api}/v1/tenants");

    let ok = client().get(&tenants).send().await.unwrap();
    assert_eq!(ok.status(), 200);
    let ok = client()
        .get(&tenants)
        .header("host", format!("localhost:{port}"))
        .header("origin", format!("http://localhost:{port}"))
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);

    // DNS rebinding: the browser sends the attacker's name.
    let rebound = client()
        .get(&tenants)
        .header("host", format!("attacker.example:{port}"))
        .send()
        .await
        .unwrap();
    assert_eq!(rebound.status(), 403);
    assert!(rebound.text().await.unwrap().contains("Host"));

    // A cross-site POST that would create a tenant.
    let forged = client()
        .post(&tenants)
        .header("origin", "https://attacker.example")
        .header("content-type", "text/plain")
        .body(r#"{"name":"forged"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), 403);
    let listed = client()
        .get(&tenants)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(!listed.contains("forged"), "{listed}");
}

#[tokio::test]
async fn a_tenant_without_its_own_quota_may_not_take_every_instance() {
    let (_server, api) = dev_server(&["--max-instances", "40"]);
    let created: serde_json::Value = client()
        .post(format!("{api}/v1/tenants"))
        .json(&serde_json::json!({ "name": "acme" }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(created["quotas"]["max_in_flight"], 10, "{created}");
}
