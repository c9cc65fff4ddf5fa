//! Admission and per-request limits, set in the manifest or as `skiff serve` flags.

#![allow(clippy::unwrap_used, clippy::expect_used)] // A panic here is a failure with its message.

mod common;

use std::time::Duration;

use common::{Server, app_dir, client, guest};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Sends `/sleep?ms=3000` and, while it is in flight, more requests: one of them must be
/// turned away at once with 503 and `Retry-After`; once the first is done, requests pass again.
/// A poll can win the race for the last permit before the slow request is admitted, in which
/// case the slow one is the refused one and the round is tried again.
async fn second_request_is_refused_while_first_runs(server: &Server, prefix: &str) {
    let http = client();
    for _round in 0..5 {
        let slow = tokio::spawn({
            let http = http.clone();
            let url = server.url(&format!("{prefix}/sleep?ms=3000"));
            async move {
                let response = http.get(url).send().await.unwrap();
                (response.status().as_u16(), response.text().await.unwrap())
            }
        });
        tokio::time::sleep(Duration::from_millis(200)).await;
        let mut refused = None;
        for _ in 0..40 {
            let response = http
                .get(server.url(&format!("{prefix}/count")))
                .send()
                .await
                .unwrap();
            if response.status() == 503 {
                refused = Some(response);
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let slow = slow.await.unwrap();
        if slow.0 == 503 {
            continue;
        }
        assert_eq!(slow, (200, "slept".to_string()));
        let refused = refused.expect("no request was refused while the limit was reached");
        assert_eq!(refused.headers()["retry-after"], "1");
        let body = refused.text().await.unwrap();
        assert!(body.contains("retry shortly"), "{body}");
        // The slow request's client has its answer a little before the host has dropped its
        // instance (slower still on the Pulley interpreter): its permit comes back soon after.
        let url = server.url(&format!("{prefix}/count"));
        common::eventually(Duration::from_secs(10), "the permit came back", || {
            let (http, url) = (http.clone(), url.clone());
            async move { http.get(url).send().await.unwrap().status() == 200 }
        })
        .await;
        return;
    }
    panic!("the slow request was never admitted");
}

#[tokio::test]
async fn component_concurrency_limit_from_the_manifest() {
    let wasm = guest("http-guest");
    let wasm = wasm.to_str().unwrap();
    let manifest = format!(
        r#"
[app]
name = "limited"

[component.single]
source = "{wasm}"
route = "/single/..."
limits = {{ max_concurrency = 1 }}

[component.free]
source = "{wasm}"
route = "/free/..."
"#
    );
    let dir = app_dir(&[("skiff.toml", &manifest)]);
    let server = Server::start(&["up", dir.path().join("skiff.toml").to_str().unwrap()]);
    // The other component is not affected by its neighbour's limit.
    let neighbour = {
        let url = server.url("/free/sleep?ms=2000");
        tokio::spawn(async move { client().get(url).send().await.unwrap().status() })
    };
    second_request_is_refused_while_first_runs(&server, "/single").await;
    assert_eq!(neighbour.await.unwrap(), 200);
    let logs = server.logs();
    assert!(logs.contains("max_concurrency 1"), "{logs}");
}

#[tokio::test]
async fn host_instance_limit() {
    let wasm = guest("http-guest");
    let server = Server::start(&["--max-instances", "1", "serve", wasm.to_str().unwrap()]);
    second_request_is_refused_while_first_runs(&server, "").await;
    assert!(
        server.logs().contains("max_instances 1"),
        "{}",
        server.logs()
    );
}

#[tokio::test]
async fn serve_takes_limits_and_grants_as_flags() {
    let wasm = guest("http-guest");
    let data = app_dir(&[("note.txt", "granted by flag\n")]);
    let mapping = format!("{}::/data", data.path().display());
    let server = Server::start(&[
        "serve",
        "--timeout",
        "300ms",
        "--max-memory",
        "8MiB",
        "--env",
        "SKIFF_TEST_NAME=flagged",
        "--dir",
        &mapping,
        "--allow-outbound",
        "http://127.0.0.1:*",
        wasm.to_str().unwrap(),
    ]);
    let http = client();
    let get = |path: &str| {
        let http = http.clone();
        let url = server.url(path);
        async move {
            let response = http.get(url).send().await.unwrap();
            (response.status().as_u16(), response.text().await.unwrap())
        }
    };
    assert_eq!(get("/sleep?ms=10000").await.0, 504);
    assert_eq!(get("/alloc?mib=64").await.0, 500);
    assert_eq!(get("/alloc?mib=1").await.0, 200);
    assert_eq!(get("/env/SKIFF_TEST_NAME").await, (200, "flagged".into()));
    assert_eq!(
        get("/file?path=/data/note.txt").await,
        (200, "granted by flag\n".into())
    );
    let own = server.url("/count");
    assert_eq!(
        get(&format!("/fetch?url={own}")).await,
        (200, "status=200".into())
    );
    let (status, body) = get("/fetch?url=http://example.com/").await;
    assert_eq!(status, 502);
    assert!(body.contains("HttpRequestDenied"), "{body}");
}

#[test]
fn bad_limit_flags_are_usage_errors() {
    let wasm = guest("http-guest");
    for (flag, value) in [
        ("--timeout", "soon"),
        ("--max-memory", "lots"),
        ("--max-concurrency", "0"),
        ("--fuel", "0"),
        ("--timeout", "500000000000years"),
        ("--allow-outbound", "https://example.com/path"),
    ] {
        let output = common::skiff()
            .args(["serve", flag, value, wasm.to_str().unwrap()])
            .output()
            .unwrap();
        assert_eq!(output.status.code(), Some(2), "{flag} {value}");
        let err = String::from_utf8_lossy(&output.stderr);
        assert!(err.contains(flag) && err.contains(value), "{err}");
    }
}

#[tokio::test]
async fn oversized_bodies_are_refused() {
    let wasm = guest("http-guest");
    let server = Server::start(&["serve", "--max-body-size", "1MiB", wasm.to_str().unwrap()]);
    let http = client();

    // Declared too large: 413 before any guest runs, and before the body is sent at all.
    // (A client that sends the body anyway may see the connection reset under its upload,
    // since the server does not read 2 MiB it has refused; so this client sends the head only.)
    let addr = server.url.trim_start_matches("http://").to_string();
    let mut stream = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let head = format!(
        "POST /echo HTTP/1.1\r\nHost: {addr}\r\nContent-Length: {}\r\n\r\n",
        2 << 20
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let mut answer = vec![0u8; 1024];
    let n = stream.read(&mut answer).await.unwrap();
    let answer = String::from_utf8_lossy(&answer[..n]);
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");

    // Within the limit, it passes.
    let response = http
        .post(server.url("/echo"))
        .body(vec![b'a'; 1 << 20])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.bytes().await.unwrap().len(), 1 << 20);

    // Streamed without a length, it is cut off at the limit: the echo never completes.
    let upload = futures_util::stream::iter(
        (0..8).map(|_| Ok::<_, std::io::Error>(bytes::Bytes::from(vec![b'b'; 512 << 10]))),
    );
    let echoed = async {
        let response = http
            .post(server.url("/echo"))
            .body(reqwest::Body::wrap_stream(upload))
            .send()
            .await?;
        response.bytes().await
    }
    .await;
    // An error means the connection was cut: also a refusal.
    if let Ok(body) = echoed {
        assert!(body.len() <= 1 << 20, "{} bytes passed", body.len());
    }
    // The host keeps serving.
    let response = http.get(server.url("/count")).send().await.unwrap();
    assert_eq!(response.status(), 200);
}

#[tokio::test]
async fn too_many_headers_get_431() {
    let wasm = guest("http-guest");
    let server = Server::start(&["serve", "--max-headers", "20", wasm.to_str().unwrap()]);
    let mut request = client().get(server.url("/count"));
    for i in 0..40 {
        request = request.header(format!("x-h{i}"), "v");
    }
    assert_eq!(request.send().await.unwrap().status(), 431);
    let response = client().get(server.url("/count")).send().await.unwrap();
    assert_eq!(response.status(), 200);
}

#[tokio::test]
async fn a_fuel_budget_stops_a_busy_guest_and_refills_per_request() {
    let wasm = guest("http-guest");
    let server = Server::start(&["serve", "--fuel", "50000000", wasm.to_str().unwrap()]);
    let http = client();
    let get = |path: &str| {
        let (http, url) = (http.clone(), server.url(path));
        async move {
            let response = http.get(url).send().await.unwrap();
            (response.status().as_u16(), response.text().await.unwrap())
        }
    };
    // Within the budget the guest answers, request after request: each gets a full tank.
    for _ in 0..3 {
        let (status, body) = get("/spin?n=100000").await;
        assert_eq!(status, 200, "{body}");
    }
    // A guest that would spin forever is stopped by fuel, long before the 30 s deadline.
    let (status, body) = get("/spin").await;
    assert_eq!(status, 500, "{body}");
    assert!(body.contains("CPU budget"), "{body}");
    let logs = server.wait_for_log("fuel budget of 50000000");
    assert!(logs.contains("fuel budget of 50000000"), "{logs}");
    assert_eq!(get("/spin?n=100000").await.0, 200);
}

#[tokio::test]
async fn an_overlong_request_target_gets_414_and_a_huge_head_431() {
    let wasm = guest("http-guest");
    let server = Server::start(&["serve", "--max-uri-length", "1KiB", wasm.to_str().unwrap()]);
    let http = client();
    let status = |url: String| {
        let http = http.clone();
        async move { http.get(url).send().await.unwrap().status().as_u16() }
    };
    // Just under the limit the guest answers; past it, in the path or the query, it is 414.
    let path = format!("/{}", "p".repeat(1000));
    assert_eq!(status(server.url(&path)).await, 200);
    assert_eq!(
        status(server.url(&format!("/{}", "p".repeat(1100)))).await,
        414
    );
    assert_eq!(
        status(server.url(&format!("/count?q={}", "q".repeat(1100)))).await,
        414
    );
    // A request head past the 64 KiB limit is refused by the parser itself.
    let huge = client()
        .get(server.url("/count"))
        .header("x-huge", "h".repeat(80 << 10))
        .send()
        .await
        .unwrap();
    assert_eq!(huge.status(), 431);
    assert_eq!(status(server.url("/count")).await, 200);
}

#[test]
fn a_slow_client_is_disconnected() {
    use std::io::{Read, Write};
    let wasm = guest("http-guest");
    let server = Server::start(&[
        "serve",
        "--header-read-timeout",
        "300ms",
        wasm.to_str().unwrap(),
    ]);
    let addr = server.url.trim_start_matches("http://").to_string();
    let mut stream = std::net::TcpStream::connect(&addr).unwrap();
    // Half a request head, then nothing: the server must hang up on its own.
    stream
        .write_all(b"GET /count HTTP/1.1\r\nHost: x\r\n")
        .unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mut rest = Vec::new();
    let read = stream.read_to_end(&mut rest);
    assert!(
        read.is_ok(),
        "the server kept the connection open: {read:?}"
    );
    let answer = String::from_utf8_lossy(&rest);
    assert!(
        answer.is_empty() || answer.starts_with("HTTP/1.1 408"),
        "{answer}"
    );
}

#[tokio::test]
async fn unbounded_recursion_traps_cleanly() {
    let wasm = guest("http-guest");
    let server = Server::start(&["serve", wasm.to_str().unwrap()]);
    let http = client();
    let response = http
        .get(server.url("/recurse?depth=1000"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.text().await.unwrap(), "recursed 1000");
    let response = http
        .get(server.url("/recurse?depth=100000000"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 500);
    let logs = server.wait_for_log("stack overflow");
    assert!(logs.contains("stack overflow"), "{logs}");
    let response = http.get(server.url("/count")).send().await.unwrap();
    assert_eq!(response.status(), 200);
}

/// The per-instance counter of `/count`, `times` requests in a row.
async fn counts(server: &Server, prefix: &str, times: usize) -> Vec<String> {
    let mut seen = Vec::new();
    for _ in 0..times {
        let response = client()
            .get(server.url(&format!("{prefix}/count")))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        seen.push(response.text().await.unwrap());
    }
    seen
}

#[tokio::test]
async fn an_instance_serves_several_requests_only_where_the_component_allows_it() {
    let wasm = guest("http-guest");
    let manifest = format!(
        r#"
[app]
name = "reuse"

[component.fresh]
source = "{wasm}"
route = "/fresh/..."

[component.reused]
source = "{wasm}"
route = "/reused/..."
limits = {{ requests_per_instance = 3 }}
"#,
        wasm = wasm.display()
    );
    let dir = app_dir(&[("skiff.toml", &manifest)]);
    let server = Server::start(&["up", dir.path().join("skiff.toml").to_str().unwrap()]);

    // The default: every request a fresh instance, nothing left of the one before.
    assert_eq!(counts(&server, "/fresh", 3).await, ["1", "1", "1"]);
    // Opted in: one instance serves three requests in a row, then a fresh one takes over.
    assert_eq!(
        counts(&server, "/reused", 7).await,
        ["1", "2", "3", "1", "2", "3", "1"]
    );
    // An instance that fails is never served again.
    assert_eq!(counts(&server, "/reused", 1).await, ["2"]);
    let response = client()
        .get(server.url("/reused/panic"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 500);
    assert_eq!(counts(&server, "/reused", 1).await, ["1"]);

    // What a reused instance prints is logged under the request that printed it.
    for _ in 0..2 {
        let response = client()
            .get(server.url("/reused/log"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.text().await.unwrap(), "logged");
    }
    let request_ids = |logs: &str| -> Vec<String> {
        logs.lines()
            .filter(|line| line.contains("hello stdout from http-guest"))
            .filter_map(|line| line.split("request_id=").nth(1))
            .filter_map(|rest| rest.split_whitespace().next())
            .map(str::to_string)
            .collect()
    };
    let started = std::time::Instant::now();
    while request_ids(&server.logs()).len() < 2 && started.elapsed() < Duration::from_secs(10) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let logs = server.logs();
    let ids = request_ids(&logs);
    assert_eq!(ids.len(), 2, "{logs}");
    assert_ne!(ids[0], ids[1], "each line names its own request: {logs}");
}

/// Opens a connection, sends a `POST /echo` head declaring a 1000-byte body and ten bytes of
/// it, and waits for the echo's response head: from then on the guest holds its instance and
/// reads a body that does not come.
async fn start_slow_upload(server: &Server) -> tokio::net::TcpStream {
    let addr = server.url.trim_start_matches("http://").to_string();
    let mut stream = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let head = format!("POST /echo HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 1000\r\n\r\n");
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(b"0123456789").await.unwrap();
    let mut answer = vec![0u8; 512];
    let n = stream.read(&mut answer).await.unwrap();
    let answer = String::from_utf8_lossy(&answer[..n]);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    stream
}

/// Polls `url` until it answers 200; fails if it is still refused after a generous while.
async fn wait_until_served(http: &reqwest::Client, url: &str, why: &str) {
    for _ in 0..300 {
        if http.get(url).send().await.unwrap().status() == 200 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{why}");
}

/// A client that stops sending its request body, or sends it a byte now and then, cannot hold
/// an instance until the guest's (here five-minute) deadline: the guest's read fails and its
/// instance is free again, while the client still holds its connection.
#[tokio::test]
async fn a_stalled_or_dribbled_request_body_frees_the_instance() {
    let wasm = guest("http-guest");
    let server = Server::start(&[
        "--log-level",
        "info",
        "serve",
        "--timeout",
        "5m",
        "--max-concurrency",
        "1",
        "--body-read-timeout",
        "2s",
        "--body-min-rate",
        "100",
        wasm.to_str().unwrap(),
    ]);
    let http = client();
    let count = server.url("/count");

    // Stalled: ten bytes of a thousand, then nothing.
    let stalled = start_slow_upload(&server).await;
    assert_eq!(http.get(&count).send().await.unwrap().status(), 503);
    wait_until_served(&http, &count, "a stalled upload kept its instance").await;
    let logs = server.wait_for_log("stopped sending its request body");
    assert!(logs.contains("stopped sending its request body"), "{logs}");

    // Dribbled: a byte every 200 ms, never a pause as long as the body read timeout, but far
    // below the minimum rate of 100 bytes a second.
    let mut dribbled = start_slow_upload(&server).await;
    let dribbler = tokio::spawn(async move {
        for _ in 0..600 {
            tokio::time::sleep(Duration::from_millis(200)).await;
            if dribbled.write_all(b"x").await.is_err() {
                break;
            }
        }
    });
    assert_eq!(http.get(&count).send().await.unwrap().status(), 503);
    wait_until_served(&http, &count, "a dribbled upload kept its instance").await;
    dribbler.abort();
    drop(stalled);

    // A client that sends its body at a normal pace is not affected.
    let response = http
        .post(server.url("/echo"))
        .body(vec![b'a'; 256 << 10])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.bytes().await.unwrap().len(), 256 << 10);
}

type H2Body = http_body_util::combinators::BoxBody<bytes::Bytes, std::convert::Infallible>;
type H2Sender = hyper::client::conn::http2::SendRequest<H2Body>;

/// An HTTP/2 (h2c, prior knowledge) connection to `server`, and the task driving it (which
/// ends when the connection does).
async fn h2_connect(server: &Server) -> (H2Sender, tokio::task::JoinHandle<()>) {
    let addr = server.url.trim_start_matches("http://").to_string();
    let stream = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let (sender, connection) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(stream),
    )
    .await
    .unwrap();
    let driver = tokio::spawn(async move {
        let _ = connection.await;
    });
    (sender, driver)
}

async fn h2_send(
    sender: &mut H2Sender,
    request: http::request::Builder,
    body: H2Body,
) -> Result<http::Response<hyper::body::Incoming>, hyper::Error> {
    sender.ready().await?;
    sender.send_request(request.body(body).unwrap()).await
}

fn h2_get(server: &Server, path: &str) -> http::request::Builder {
    http::Request::builder().method("GET").uri(server.url(path))
}

fn empty() -> H2Body {
    use http_body_util::BodyExt;
    http_body_util::Empty::new().boxed()
}

/// HTTP/2 gets the limits HTTP/1 has: header count, header size, request target, body size,
/// body read timeout, and a connection that sends no request is closed.
#[tokio::test]
async fn http2_requests_get_the_same_input_limits() {
    use futures_util::StreamExt;
    use http_body_util::BodyExt;
    let wasm = guest("http-guest");
    let server = Server::start(&[
        "serve",
        "--max-headers",
        "20",
        "--max-uri-length",
        "1KiB",
        "--max-body-size",
        "1KiB",
        "--max-concurrency",
        "1",
        "--timeout",
        "5m",
        "--header-read-timeout",
        "1s",
        "--body-read-timeout",
        "2s",
        wasm.to_str().unwrap(),
    ]);
    let (mut h2, _driver) = h2_connect(&server).await;

    let ok = h2_send(&mut h2, h2_get(&server, "/count"), empty())
        .await
        .unwrap();
    assert_eq!(ok.version(), http::Version::HTTP_2);
    assert_eq!(ok.status(), 200);

    let mut many = h2_get(&server, "/count");
    for i in 0..40 {
        many = many.header(format!("x-h{i}"), "v");
    }
    let response = h2_send(&mut h2, many, empty()).await.unwrap();
    assert_eq!(response.status(), 431);

    let long = format!("/{}", "p".repeat(1100));
    let response = h2_send(&mut h2, h2_get(&server, &long), empty())
        .await
        .unwrap();
    assert_eq!(response.status(), 414);

    let declared = http::Request::builder()
        .method("POST")
        .uri(server.url("/echo"))
        .header("content-length", "2048");
    let body = http_body_util::Full::new(bytes::Bytes::from(vec![b'a'; 2048])).boxed();
    assert_eq!(
        h2_send(&mut h2, declared, body).await.unwrap().status(),
        413
    );

    // A header list over the 64 KiB head limit is refused: 431 from h2, or the stream (or the
    // client itself, which knows the server's limit) gives up. Never served.
    let huge = h2_get(&server, "/count").header("x-huge", "h".repeat(80 << 10));
    if let Ok(response) = h2_send(&mut h2, huge, empty()).await {
        assert_eq!(response.status(), 431);
    }

    // A body that stalls after ten bytes fails the guest's read; the instance is free again.
    let (mut h2, _driver) = h2_connect(&server).await;
    let stalled = futures_util::stream::iter([Ok::<_, std::convert::Infallible>(
        hyper::body::Frame::data(bytes::Bytes::from_static(b"0123456789")),
    )])
    .chain(futures_util::stream::pending());
    let upload = http::Request::builder()
        .method("POST")
        .uri(server.url("/echo"));
    let echo = h2_send(
        &mut h2,
        upload,
        BodyExt::boxed(http_body_util::StreamBody::new(stalled)),
    )
    .await
    .unwrap();
    assert_eq!(echo.status(), 200);
    let http = client();
    let count = server.url("/count");
    assert_eq!(http.get(&count).send().await.unwrap().status(), 503);
    wait_until_served(&http, &count, "a stalled HTTP/2 upload kept its instance").await;
    drop(echo);

    // A connection that never sends a request, in either protocol, is closed.
    let addr = server.url.trim_start_matches("http://").to_string();
    for preface in [&b""[..], b"PRI * HTTP/2.0\r\n"] {
        let mut silent = tokio::net::TcpStream::connect(&addr).await.unwrap();
        silent.write_all(preface).await.unwrap();
        let mut rest = Vec::new();
        let closed =
            tokio::time::timeout(Duration::from_secs(30), silent.read_to_end(&mut rest)).await;
        assert!(
            closed.is_ok(),
            "a connection without a request stayed open ({preface:?})"
        );
    }
    // And an HTTP/2 connection that starts no more requests is told to go away (the client
    // keeps its end: only the server can end the connection here).
    let (mut h2, driver) = h2_connect(&server).await;
    let response = h2_send(&mut h2, h2_get(&server, "/count"), empty())
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    drop(response);
    let ended = tokio::time::timeout(Duration::from_secs(30), driver).await;
    assert!(ended.is_ok(), "an idle HTTP/2 connection stayed open");
    drop(h2);
}

/// An instance kept for reuse that waits longer than `--reuse-idle-timeout` is dropped: the
/// next request gets a fresh one.
#[tokio::test]
async fn an_idle_kept_instance_expires() {
    let wasm = guest("http-guest");
    let server = Server::start(&[
        "--reuse-idle-timeout",
        "1s",
        "serve",
        "--requests-per-instance",
        "100",
        wasm.to_str().unwrap(),
    ]);
    assert_eq!(counts(&server, "", 3).await, ["1", "2", "3"]);
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(counts(&server, "", 2).await, ["1", "2"]);
}

/// Instances kept idle by one component give way to another component's requests when the
/// host's instances run out: an idle instance is worth less than a request waiting now.
#[tokio::test]
async fn idle_kept_instances_give_way_to_other_requests() {
    let wasm = guest("http-guest");
    let manifest = format!(
        r#"
[app]
name = "give-way"

[component.keeper]
source = "{wasm}"
route = "/keeper/..."
limits = {{ requests_per_instance = 1000 }}

[component.other]
source = "{wasm}"
route = "/other/..."
"#,
        wasm = wasm.display()
    );
    let dir = app_dir(&[("skiff.toml", &manifest)]);
    let server = Server::start(&[
        "--max-instances",
        "4",
        "--reuse-idle-timeout",
        "10m",
        "up",
        dir.path().join("skiff.toml").to_str().unwrap(),
    ]);
    let at_once = |path: &'static str, n: usize| {
        let url = server.url(path);
        async move {
            let requests: Vec<_> = (0..n)
                .map(|_| {
                    let url = url.clone();
                    tokio::spawn(async move {
                        client().get(url).send().await.unwrap().status().as_u16()
                    })
                })
                .collect();
            let mut statuses = Vec::new();
            for request in requests {
                statuses.push(request.await.unwrap());
            }
            statuses
        }
    };
    // Three instances of `keeper` at once, all kept: three of the host's four wait idle.
    assert_eq!(at_once("/keeper/sleep?ms=500", 3).await, [200, 200, 200]);
    // Two requests of `other` at once still pass: the second takes an idle instance's place.
    assert_eq!(
        at_once("/other/sleep?ms=500", 2).await,
        [200, 200],
        "{}",
        server.logs()
    );
    // And `keeper` goes on being served, from what it kept or afresh.
    assert_eq!(at_once("/keeper/count", 2).await, [200, 200]);
}
