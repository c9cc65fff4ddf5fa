//! `skiff serve`: one wasi:http component on every path, against the real server.

#![allow(clippy::unwrap_used, clippy::expect_used)] // A panic here is a failure with its message.

mod common;

use bytes::Bytes;
use common::{Server, client, guest};
use futures_util::StreamExt;

fn serve(name: &str) -> Server {
    let wasm = guest(name);
    Server::start(&["serve", wasm.to_str().unwrap()])
}

#[tokio::test]
async fn get_answers_from_the_guest() {
    let server = serve("http-guest");
    assert!(
        server.url.starts_with("http://127.0.0.1:"),
        "{}",
        server.url
    );
    let response = client()
        .get(server.url("/some/path?x=1"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let body = response.text().await.unwrap();
    assert!(body.contains("method=GET"), "{body}");
    assert!(body.contains("path=/some/path?x=1"), "{body}");
    // A single component is served on every path, as the catch-all route.
    assert!(body.contains("matched=/..."), "{body}");
    assert!(body.contains("info=/some/path"), "{body}");
}

#[tokio::test]
async fn post_body_headers_and_status_pass_through() {
    let server = serve("http-guest");
    let payload: Vec<u8> = (0..3_000_000u32).map(|i| (i * 7 % 256) as u8).collect();
    let response = client()
        .post(server.url("/echo"))
        .header("x-echo-status", "201")
        .header("x-custom", "kept")
        .header("content-type", "application/octet-stream")
        .body(payload.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    assert_eq!(response.headers()["x-custom"], "kept");
    assert_eq!(
        response.headers()["content-type"],
        "application/octet-stream"
    );
    let body = response.bytes().await.unwrap();
    assert_eq!(body.len(), payload.len());
    assert!(body.as_ref() == payload.as_slice(), "echoed body differs");
}

/// A 100 MiB upload streams through skiff and the guest and back, chunk by chunk: neither
/// holds it whole (the guest's memory is limited to far less than the body).
#[tokio::test]
async fn a_large_body_streams_both_ways() {
    let server = serve("http-guest");
    const CHUNK: usize = 1 << 20;
    const CHUNKS: usize = 100;
    let upload = futures_util::stream::iter(
        (0..CHUNKS).map(|i| Ok::<_, std::io::Error>(Bytes::from(vec![(i % 251) as u8; CHUNK]))),
    );
    let response = client()
        .post(server.url("/echo"))
        .body(reqwest::Body::wrap_stream(upload))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let mut stream = response.bytes_stream();
    let mut received = 0usize;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.unwrap();
        for (offset, byte) in chunk.iter().enumerate() {
            let expected = ((received + offset) / CHUNK % 251) as u8;
            assert_eq!(*byte, expected, "byte {} differs", received + offset);
        }
        received += chunk.len();
    }
    assert_eq!(received, CHUNK * CHUNKS);
}

#[tokio::test]
async fn every_request_gets_a_fresh_instance() {
    let server = serve("http-guest");
    let http = client();
    for _ in 0..5 {
        let body = http
            .get(server.url("/count"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert_eq!(body.trim(), "1");
    }
    // Concurrent requests never share an instance either.
    let requests = (0..16).map(|_| {
        let http = http.clone();
        let url = server.url("/count");
        tokio::spawn(async move { http.get(url).send().await.unwrap().text().await.unwrap() })
    });
    for request in requests {
        assert_eq!(request.await.unwrap().trim(), "1");
    }
}

#[tokio::test]
async fn guest_output_goes_to_the_log_tagged_with_the_request() {
    let server = serve("http-guest");
    let response = client().get(server.url("/log")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let logs = server.wait_for_log("hello stderr from http-guest");
    let line = logs
        .lines()
        .find(|line| line.contains("hello stdout from http-guest"))
        .unwrap_or_else(|| panic!("no guest stdout line in:\n{logs}"));
    assert!(line.contains("component=http-guest"), "{line}");
    assert!(line.contains("request_id="), "{line}");
    assert!(
        line.contains("stream=\"stdout\"") || line.contains("stream=stdout"),
        "{line}"
    );
    assert!(logs.contains("hello stderr from http-guest"), "{logs}");
}

#[tokio::test]
async fn json_logs_are_one_object_per_line() {
    let wasm = guest("http-guest");
    let server = Server::start(&["--log-format", "json", "serve", wasm.to_str().unwrap()]);
    client().get(server.url("/log")).send().await.unwrap();
    let logs = server.wait_for_log("hello stdout from http-guest");
    let line = logs
        .lines()
        .find(|line| line.contains("hello stdout from http-guest"))
        .unwrap_or_else(|| panic!("no guest line in:\n{logs}"));
    assert!(line.starts_with('{') && line.ends_with('}'), "{line}");
    assert!(line.contains("\"component\":\"http-guest\""), "{line}");
    assert!(line.contains("\"request_id\":"), "{line}");
}

#[tokio::test]
async fn a_component_exporting_run_too_is_served() {
    let server = serve("http-with-run");
    let body = client()
        .get(server.url("/"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(body.trim(), "http export works");
}

#[tokio::test]
async fn the_guest_sees_no_host_environment_or_files() {
    let server = serve("http-guest");
    let http = client();
    let response = http.get(server.url("/env/HOME")).send().await.unwrap();
    assert_eq!(response.status(), 404);
    let response = http
        .get(server.url("/file?path=/etc/passwd"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 500);
    let body = response.text().await.unwrap();
    assert!(!body.contains("root:"), "{body}");
}

#[test]
fn serving_a_command_is_refused_before_listening() {
    let wasm = guest("cli-guest");
    let output = common::skiff()
        .args(["serve", "--listen", "127.0.0.1:0", wasm.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let err = String::from_utf8_lossy(&output.stderr);
    assert!(
        err.contains("cli-guest.wasm") && err.contains("wasi:http/incoming-handler"),
        "{err}"
    );
    assert!(String::from_utf8_lossy(&output.stdout).is_empty());
}

#[test]
fn sigterm_lets_in_flight_requests_finish_then_exits_zero() {
    let mut server = serve("http-guest");
    let url = server.url("/sleep?ms=1500");
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Runtime::new().unwrap();
        let result = runtime.block_on(async {
            let response = client().get(url).send().await?;
            let status = response.status();
            let body = response.text().await?;
            Ok::<_, reqwest::Error>((status, body))
        });
        done_tx.send(result.map_err(|e| e.to_string())).unwrap();
    });
    // Once the guest is sleeping inside the request, ask skiff to stop.
    std::thread::sleep(std::time::Duration::from_millis(500));
    let pid = server.pid().to_string();
    assert!(
        std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let status = server.child().wait().unwrap();
    assert_eq!(status.code(), Some(0), "logs:\n{}", server.logs());
    let (code, body) = done_rx.recv().unwrap().expect("in-flight request failed");
    assert_eq!((code.as_u16(), body.as_str()), (200, "slept"));
    // And it no longer accepts new connections.
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let url = server.url("/");
    assert!(
        runtime
            .block_on(async { client().get(url).send().await })
            .is_err()
    );
}

/// `serve`'s stderr holds what the guests print and skiff's problems, not its progress: a
/// first start (compiling, no cache) adds no line when stderr is not a terminal.
#[tokio::test]
async fn serve_logs_the_guests_output_and_little_else() {
    let wasm = guest("http-guest");
    let server = Server::start(&["--no-cache", "serve", wasm.to_str().unwrap()]);
    let response = client().get(server.url("/log")).send().await.unwrap();
    assert_eq!(response.text().await.unwrap(), "logged");
    let logs = server.wait_for_log("hello stderr from http-guest");
    assert!(logs.contains("hello stdout from http-guest"), "{logs}");
    let lines: Vec<&str> = logs.lines().collect();
    assert_eq!(lines.len(), 2, "{logs}");
    assert!(!logs.contains("compiling"), "{logs}");
}
