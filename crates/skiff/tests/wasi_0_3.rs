//! WASI 0.3 components (`wasi:http/service@0.3`: component-model async), built from source in
//! tests/guests/http-p3-guest with the `wasip3` crate, through every entry point (`serve`, `up`,
//! `server`) and under the same limits and grants as WASIp2 components.

#![allow(clippy::unwrap_used, clippy::expect_used)] // A panic here is a failure with its message.

mod common;

use bytes::Bytes;
use common::host::Host;
use common::upstream::TestUpstream;
use common::{Server, app_dir, client, guest};
use futures_util::StreamExt;

fn p3_guest() -> String {
    guest("http-p3-guest").to_str().unwrap().to_string()
}

async fn get(server: &Server, path: &str) -> (u16, String) {
    let response = client().get(server.url(path)).send().await.unwrap();
    (response.status().as_u16(), response.text().await.unwrap())
}

#[tokio::test]
async fn serve_answers_streams_and_echoes() {
    let server = Server::start(&["serve", &p3_guest()]);
    assert_eq!(
        get(&server, "/hello").await,
        (200, "hello from a WASI 0.3 component\n".into())
    );
    // The body is written by guest tasks after `handle` returned, 20 ms apart.
    assert_eq!(
        get(&server, "/stream?4").await,
        (200, "chunk 0\nchunk 1\nchunk 2\nchunk 3\n".into())
    );
    // The guest sees the request as wasi:http 0.3 describes it.
    let response = client()
        .put(server.url("/headers?x=1"))
        .header("x-custom", "kept")
        .body("b")
        .send()
        .await
        .unwrap();
    let text = response.text().await.unwrap();
    assert!(text.starts_with("PUT /headers?x=1\n"), "{text}");
    assert!(text.contains("x-custom: kept\n"), "{text}");
}

/// 64 MiB through a guest limited to 16 MiB of memory: the request's body stream is handed
/// back as the response's, chunk by chunk, never held whole.
#[tokio::test]
async fn a_large_body_streams_through() {
    let server = Server::start(&["serve", "--max-memory", "16MiB", &p3_guest()]);
    const CHUNK: usize = 1 << 20;
    const CHUNKS: usize = 64;
    let upload = futures_util::stream::iter(
        (0..CHUNKS).map(|i| Ok::<_, std::io::Error>(Bytes::from(vec![(i % 251) as u8; CHUNK]))),
    );
    let response = client()
        .post(server.url("/echo"))
        .header("content-type", "application/octet-stream")
        .body(reqwest::Body::wrap_stream(upload))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers()["content-type"],
        "application/octet-stream"
    );
    let mut stream = response.bytes_stream();
    let mut received = Vec::new();
    while let Some(chunk) = stream.next().await {
        received.extend_from_slice(&chunk.unwrap());
    }
    assert_eq!(received.len(), CHUNK * CHUNKS);
    for (i, block) in received.chunks(CHUNK).enumerate() {
        assert!(block.iter().all(|&b| b == (i % 251) as u8), "chunk {i}");
    }
}

/// Deadlines (a guest waiting on the host, a guest computing), memory limits and traps hold
/// for 0.3 components as for 0.2 ones, and the host goes on serving after each.
#[tokio::test]
async fn limits_and_failures_hold() {
    let server = Server::start(&[
        "serve",
        "--timeout",
        "300ms",
        "--max-memory",
        "8MiB",
        &p3_guest(),
    ]);
    assert_eq!(get(&server, "/sleep").await.0, 504);
    assert_eq!(get(&server, "/spin").await.0, 504);
    assert_eq!(get(&server, "/grow?64").await.0, 500);
    assert_eq!(get(&server, "/grow?1").await, (200, "grew 1 MiB\n".into()));
    assert_eq!(get(&server, "/trap").await.0, 500);
    // A guest that fails while writing its body: the client gets what was written and then
    // a broken body, never a clean end it could take for the whole response.
    let response = client()
        .get(server.url("/after-body-trap"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert!(response.text().await.is_err(), "a cut-off body must fail");
    // Work after the response is bounded by the same deadline: the answer stands, the work
    // is stopped and said so.
    assert_eq!(
        get(&server, "/linger?60000").await,
        (200, "answered\n".into())
    );
    let logs = server.wait_for_log("after sending its response head");
    assert!(logs.contains("after sending its response head: "), "{logs}");
    assert_eq!(get(&server, "/hello").await.0, 200);
    let logs = server.logs();
    assert!(logs.contains("deadline"), "{logs}");
}

/// `wasi:http/client.send` goes through the same outbound policy as 0.2's outgoing handler:
/// nothing without a grant, the granted host with one.
#[tokio::test]
async fn outbound_requests_need_a_grant() {
    let upstream = TestUpstream::start("backend").await;
    let target = format!("/call?{}/data", upstream.url());

    let denied = Server::start(&["serve", &p3_guest()]);
    let (status, text) = get(&denied, &target).await;
    assert_eq!(status, 502, "{text}");
    assert!(text.contains("HttpRequestDenied"), "{text}");
    assert_eq!(upstream.requests(), 0);

    let granted = Server::start(&["serve", "--allow-outbound", &upstream.url(), &p3_guest()]);
    let (status, text) = get(&granted, &target).await;
    assert_eq!(status, 200, "{text}");
    assert!(text.starts_with("got 200: "), "{text}");
    assert!(text.contains("backend"), "{text}");
    assert_eq!(upstream.requests(), 1);
}

/// One app with a WASIp2 and a WASI 0.3 component: both engines in one `skiff up`, each
/// component with its own environment.
#[tokio::test]
async fn up_serves_both_versions_side_by_side() {
    let dir = app_dir(&[(
        "skiff.toml",
        "[app]\nname = \"mixed\"\nversion = \"1.0.0\"\n\n\
         [component.old]\nsource = \"old.wasm\"\nroute = \"/old/...\"\n\
         environment = { SKIFF_TEST_NAME = \"p2\" }\n\n\
         [component.new]\nsource = \"new.wasm\"\nroute = \"/new/...\"\n\
         environment = { GREETING = \"from 0.3\" }\n",
    )]);
    std::fs::copy(guest("http-guest"), dir.path().join("old.wasm")).unwrap();
    std::fs::copy(guest("http-p3-guest"), dir.path().join("new.wasm")).unwrap();
    let server = Server::start(&["up", dir.path().join("skiff.toml").to_str().unwrap()]);
    assert_eq!(
        get(&server, "/new/env?GREETING").await,
        (200, "from 0.3\n".into())
    );
    // The 0.3 component sees only its own variables.
    assert_eq!(get(&server, "/new/env?SKIFF_TEST_NAME").await.0, 404);
    assert_eq!(
        get(&server, "/old/env/SKIFF_TEST_NAME").await,
        (200, "p2".into())
    );
}

#[tokio::test]
async fn the_multi_tenant_server_serves_it() {
    let host = Host::start();
    host.wait_until_ready().await;
    let token = host.tenant("acme", &[]);
    let dir = app_dir(&[(
        "skiff.toml",
        "[app]\nname = \"async\"\nversion = \"1.0.0\"\n\n\
         [component.web]\nsource = \"web.wasm\"\nroute = \"/...\"\n",
    )]);
    std::fs::copy(guest("http-p3-guest"), dir.path().join("web.wasm")).unwrap();
    host.deploy_ok(&token, dir.path(), "async");
    assert_eq!(
        host.get("async", "/hello").await,
        (200, "hello from a WASI 0.3 component\n".into())
    );
}

/// A component built against a release candidate of WASI 0.3 (as Spin 4's first templates
/// were) is refused at start, with what it is and what to rebuild with.
#[test]
fn a_release_candidate_build_is_refused_with_the_fix() {
    let wasm = guest("http-p3-rc-guest");
    let output = common::skiff()
        .args(["serve", wasm.to_str().unwrap(), "--listen", "127.0.0.1:0"])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("imports `wasi:http/types@0.3.0-rc-2025-09-16`"),
        "{stderr}"
    );
    assert!(
        stderr.contains("a release candidate of WASI 0.3"),
        "{stderr}"
    );
    assert!(stderr.contains("`wasip3` crate 0.10+"), "{stderr}");
    assert!(!stderr.contains("not a valid WebAssembly"), "{stderr}");
}

/// `requests_per_instance` keeps a 0.3 component's instances as it keeps a 0.2 one's: one
/// instance serves that many requests in a row, and one that failed is never served again.
/// What a guest does after answering runs to its end (the instance is not torn down under
/// it), and only then is the instance kept for another request.
#[tokio::test]
async fn instances_are_kept_where_the_component_allows_it() {
    let manifest = format!(
        "[app]\nname = \"reuse\"\n\n\
         [component.fresh]\nsource = \"{wasm}\"\nroute = \"/fresh/...\"\n\n\
         [component.reused]\nsource = \"{wasm}\"\nroute = \"/reused/...\"\n\
         limits = {{ requests_per_instance = 3 }}\n",
        wasm = p3_guest()
    );
    let dir = app_dir(&[("skiff.toml", &manifest)]);
    let server = Server::start(&["up", dir.path().join("skiff.toml").to_str().unwrap()]);
    // An instance goes back to its pool just after its response has ended (once the guest's
    // task has exited): a pause before each request keeps this test from racing that.
    let settle = || tokio::time::sleep(std::time::Duration::from_millis(100));
    let counts = async |prefix: &str, times: usize| {
        let mut seen = Vec::new();
        for _ in 0..times {
            settle().await;
            let (status, text) = get(&server, &format!("{prefix}/count")).await;
            assert_eq!(status, 200);
            seen.push(text.trim().to_string());
        }
        seen
    };

    assert_eq!(counts("/fresh", 3).await, ["1", "1", "1"]);
    assert_eq!(
        counts("/reused", 7).await,
        ["1", "2", "3", "1", "2", "3", "1"]
    );
    settle().await;
    assert_eq!(get(&server, "/reused/trap").await.0, 500);
    assert_eq!(counts("/reused", 1).await, ["1"]);

    // A fresh instance's work after its response is not cut off when the response ends.
    assert_eq!(get(&server, "/fresh/linger?10").await.1, "answered\n");
    assert!(
        server
            .wait_for_log("lingered 10 ms")
            .contains("lingered 10 ms")
    );

    // The instance that answered (request 2 of the one kept above) still works for two
    // seconds: it is not handed to the next request, which gets an instance of its own ...
    settle().await;
    assert_eq!(get(&server, "/reused/linger?2000").await.1, "answered\n");
    assert_eq!(counts("/reused", 1).await, ["1"]);
    // ... and once its work is done it is kept, and serves again: two instances are kept now,
    // one at 2 requests served, one at 1 (with only the second kept, a third count would
    // need a fresh instance and say 1).
    let logs = server.wait_for_log("lingered 2000 ms");
    assert!(logs.contains("lingered 2000 ms"), "{logs}");
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let mut next = counts("/reused", 3).await;
    next.sort();
    assert_eq!(next, ["2", "3", "3"], "both kept instances serve again");
}

/// A 0.3 component's requests are counted and traced as a 0.2 one's: its instantiations and
/// outbound calls in the runtime's metrics, its responses per route, and a client's trace
/// continued through `wasi:http/client.send` to the service it calls.
#[tokio::test]
async fn metrics_and_traces_cover_it() {
    let upstream = TestUpstream::start("traced").await;
    let dir = app_dir(&[(
        "skiff.toml",
        &format!(
            "[app]\nname = \"counted\"\nversion = \"1.0.0\"\n\n\
             [component.web]\nsource = \"web.wasm\"\nroute = \"/...\"\n\
             allowed_outbound_hosts = [\"{}\"]\n",
            upstream.url()
        ),
    )]);
    std::fs::copy(guest("http-p3-guest"), dir.path().join("web.wasm")).unwrap();
    let server = Server::start(&[
        "up",
        "--metrics-listen",
        "127.0.0.1:0",
        dir.path().join("skiff.toml").to_str().unwrap(),
    ]);
    let client_trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let response = client()
        .get(server.url(&format!("/call?{}/hop", upstream.url())))
        .header(
            "traceparent",
            format!("00-{client_trace}-00f067aa0ba902b7-01"),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let text = response.text().await.unwrap();
    assert!(
        text.contains(&format!("traceparent=00-{client_trace}-")),
        "{text}"
    );
    assert_eq!(get(&server, "/hello").await.0, 200);

    let metrics = server.metrics().await;
    let labels = r#"tenant="",app="counted",component="web""#;
    for series in [
        format!("skiff_instantiate_seconds_count{{{labels}}} 2\n"),
        format!(r#"skiff_outbound_requests_total{{{labels},outcome="response"}} 1"#) + "\n",
        format!(r#"skiff_http_requests_total{{{labels},route="/...",status="2xx"}} 2"#) + "\n",
    ] {
        assert!(metrics.contains(&series), "no {series} in\n{metrics}");
    }
}

/// What Spin users build today: Spin's `http-rust` template with spin-sdk 7 (`wasi:http`
/// 0.3.0), unchanged.
#[tokio::test]
async fn spins_rust_template_runs_unchanged() {
    let wasm = guest("spin-sdk-guest");
    let server = Server::start(&["serve", wasm.to_str().unwrap()]);
    assert_eq!(get(&server, "/").await, (200, "Hello, Spin".into()));
}

/// `skiff run` of a WASI 0.3 HTTP component says what it is and where it runs, never "not a
/// valid WebAssembly component".
#[test]
fn run_points_a_wasi_0_3_http_component_to_serve() {
    let output = common::skiff().args(["run", &p3_guest()]).output().unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("a WASI 0.3 HTTP component (`wasi:http/handler@0.3`)"),
        "{stderr}"
    );
    assert!(stderr.contains("skiff serve"), "{stderr}");
    assert!(!stderr.contains("not a valid WebAssembly"), "{stderr}");
}

/// `skiff run` runs a WASI 0.3 command (`wasi:cli/run@0.3`, tests/guests/cli-p3-guest) as it
/// runs a 0.2 one: its arguments, only the variables and folders granted, its exit status,
/// and the same time limit.
#[test]
fn run_runs_a_wasi_0_3_command_under_the_same_grants() {
    let wasm = guest("cli-p3-guest");
    let wasm = wasm.to_str().unwrap();
    let run = |args: &[&str]| common::skiff().arg("run").args(args).output().unwrap();
    let text = |bytes: &[u8]| String::from_utf8_lossy(bytes).to_string();

    // Written through wasi:cli/stdout@0.3's stream.
    let output = run(&[wasm, "hello"]);
    assert!(output.status.success(), "{}", text(&output.stderr));
    assert_eq!(text(&output.stdout), "hello from a WASI 0.3 command\n");
    assert_eq!(text(&run(&[wasm, "args", "a", "b c"]).stdout), "a\nb c\n");
    // An async wait on wasi:clocks@0.3.
    assert_eq!(text(&run(&[wasm, "sleep", "20"]).stdout), "slept\n");

    // Nothing granted, nothing seen; granted, seen.
    let output = common::skiff()
        .env("SKIFF_P3_SECRET", "s3cret")
        .args(["run", wasm, "env", "SKIFF_P3_SECRET"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1), "{}", text(&output.stderr));
    let output = run(&["--env", "GREETING=hi", wasm, "env", "GREETING"]);
    assert_eq!(text(&output.stdout), "hi\n", "{}", text(&output.stderr));
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("note.txt"), "from the host\n").unwrap();
    let outside = dir.path().join("note.txt");
    assert_eq!(
        run(&[wasm, "read", outside.to_str().unwrap()])
            .status
            .code(),
        Some(1)
    );
    let mapping = format!("{}::/data", dir.path().display());
    let output = run(&["--dir", &mapping, wasm, "read", "/data/note.txt"]);
    assert_eq!(
        text(&output.stdout),
        "from the host\n",
        "{}",
        text(&output.stderr)
    );

    // `run` returning `err` is exit status 1; a guest that never ends meets its time limit.
    assert_eq!(run(&[wasm, "fail"]).status.code(), Some(1));
    let output = run(&["--timeout", "300ms", wasm, "spin"]);
    assert_eq!(output.status.code(), Some(134), "{}", text(&output.stderr));
    assert!(
        text(&output.stderr).contains("time limit of 300ms"),
        "{}",
        text(&output.stderr)
    );
}

/// Trailers pass both ways: a chunked request's trailers reach the guest, which hands them
/// back (with the body stream) as its response's, and the client that asked for trailers
/// (`TE: trailers`) gets them after the body. (HTTP/1.1 sends the trailers a message's
/// `Trailer` header declares.)
#[tokio::test]
async fn trailers_pass_through() {
    use http_body_util::BodyExt;
    use hyper::body::Frame;

    let server = Server::start(&["serve", &p3_guest()]);
    let authority = server.url.trim_start_matches("http://").to_string();
    let stream = tokio::net::TcpStream::connect(&authority).await.unwrap();
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(connection);
    let mut trailers = http::HeaderMap::new();
    trailers.insert("x-checksum", "c0ffee".parse().unwrap());
    let frames = vec![
        Ok::<_, std::convert::Infallible>(Frame::data(Bytes::from("hello "))),
        Ok(Frame::data(Bytes::from("trailers"))),
        Ok(Frame::trailers(trailers)),
    ];
    let request = http::Request::post("/echo")
        .header("host", &authority)
        .header("te", "trailers")
        .header("trailer", "x-checksum")
        .body(http_body_util::StreamBody::new(futures_util::stream::iter(
            frames,
        )))
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    assert_eq!(response.status(), 200);
    let collected = response.into_body().collect().await.unwrap();
    let trailers = collected.trailers().cloned();
    assert_eq!(collected.to_bytes(), "hello trailers");
    let trailers = trailers.expect("the response has trailers");
    assert_eq!(trailers["x-checksum"], "c0ffee");
}

#[tokio::test]
async fn a_queue_delivers_its_messages_to_a_wasi_0_3_component_as_requests() {
    // `web` (WASIp2) publishes to `orders`; `sink` (WASI 0.3) consumes it as POST requests.
    let text = "[app]\nname = \"queued\"\n\n\
                [component.web]\nsource = \"queue.wasm\"\nroute = \"/...\"\n\
                key_value_stores = [\"default\"]\npublish = [\"orders\"]\n\n\
                [component.sink]\nsource = \"p3.wasm\"\n\n\
                [component.sink.consume]\nqueue = \"orders\"\npath = \"/hello\"\n";
    let dir = app_dir(&[("skiff.toml", text)]);
    std::fs::copy(guest("queue-guest"), dir.path().join("queue.wasm")).unwrap();
    std::fs::copy(guest("http-p3-guest"), dir.path().join("p3.wasm")).unwrap();
    let manifest = dir.path().join("skiff.toml");
    let server = Server::start(&[
        "up",
        "--metrics-listen",
        "127.0.0.1:0",
        manifest.to_str().unwrap(),
    ]);
    assert_eq!(
        get(&server, "/enqueue?queue=orders&n=5&prefix=m").await,
        (200, "sent 5".into())
    );
    // Each message is a request the 0.3 component answered: counted under its consumer.
    let answered = "skiff_http_requests_total{tenant=\"\",app=\"queued\",component=\"sink\",\
                    route=\"consume[orders]\",status=\"2xx\"} 5\n";
    common::eventually(
        std::time::Duration::from_secs(30),
        "the 0.3 consumer answered every message",
        || async { server.metrics().await.contains(answered) },
    )
    .await;
}
