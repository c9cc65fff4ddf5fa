//! Components from other toolchains run unchanged: Python (componentize-py), JavaScript
//! (ComponentizeJS) and C (clang, wasi-libc, wit-bindgen) HTTP handlers, built from source in
//! `tests/guests-py`, `tests/guests-js` and `tests/guests-c`. The Python and JavaScript ones
//! import far more than the `wasi:http/proxy` world (filesystem, sockets, terminal, at mixed
//! 0.2.x versions), which skiff links with nothing granted.

#![allow(clippy::unwrap_used, clippy::expect_used)] // A panic here is a failure with its message.

mod common;

use std::path::PathBuf;

use common::{Server, client, polyglot_guest};

async fn serves_unchanged(wasm: PathBuf, greeting: &str) {
    let server = Server::start(&["serve", wasm.to_str().unwrap()]);
    let http = client();
    let response = http.get(server.url("/x?y=1")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.text().await.unwrap(),
        format!("{greeting}, path=/x?y=1\n")
    );

    let payload: Vec<u8> = (0..300_000u32).map(|i| (i * 13 % 256) as u8).collect();
    let response = http
        .post(server.url("/echo"))
        .body(payload.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert!(response.bytes().await.unwrap() == payload, "echo differs");

    // Every request a fresh instance, many at once.
    let requests: Vec<_> = (0..8)
        .map(|i| {
            let http = http.clone();
            let url = server.url(&format!("/n{i}"));
            tokio::spawn(async move { http.get(url).send().await.unwrap().text().await.unwrap() })
        })
        .collect();
    for (i, request) in requests.into_iter().enumerate() {
        assert_eq!(request.await.unwrap(), format!("{greeting}, path=/n{i}\n"));
    }
}

#[tokio::test]
async fn a_python_component_is_served() {
    let wasm = polyglot_guest("python", "python_http.wasm");
    serves_unchanged(wasm, "hello from python").await;
}

#[tokio::test]
async fn a_javascript_component_is_served() {
    let wasm = polyglot_guest("js", "js_http.wasm");
    serves_unchanged(wasm, "hello from javascript").await;
}

#[tokio::test]
async fn a_c_component_is_served() {
    let wasm = polyglot_guest("c", "c_http.wasm");
    serves_unchanged(wasm, "hello from c").await;
}
