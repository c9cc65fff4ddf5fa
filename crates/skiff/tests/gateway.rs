//! The gateway: routes answered by upstreams (real HTTP services on loopback) through chains
//! of middleware components, and components calling each other in process. Against the real
//! `skiff up`; the middleware is `tests/guests/gateway-guest`, whose role each component's
//! `MODE` variable picks.

#![allow(clippy::unwrap_used, clippy::expect_used)] // A panic here is a failure with its message.

mod common;

use std::time::Duration;

use common::upstream::{Resetting, TestUpstream, closed_port};
use common::{Server, app_dir, client, get, guest};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// An app folder with `manifest` (after `[app]`) and the gateway guest as `gw.wasm`.
fn gateway_app(manifest: &str) -> tempfile::TempDir {
    let text = format!("[app]\nname = \"gateway\"\n\n{manifest}");
    let dir = app_dir(&[("skiff.toml", &text)]);
    std::fs::copy(guest("gateway-guest"), dir.path().join("gw.wasm")).unwrap();
    dir
}

/// A component of the gateway guest in `mode`, with more TOML lines after.
fn component(id: &str, mode: &str, more: &str) -> String {
    component_with(id, &[("MODE", mode)], more)
}

/// A component of the gateway guest with the environment `env`, and more TOML lines after.
fn component_with(id: &str, env: &[(&str, &str)], more: &str) -> String {
    let env: Vec<String> = env.iter().map(|(k, v)| format!("{k} = \"{v}\"")).collect();
    format!(
        "[component.{id}]\nsource = \"gw.wasm\"\nenvironment = {{ {} }}\n{more}\n",
        env.join(", ")
    )
}

fn up(dir: &tempfile::TempDir) -> Server {
    Server::start(&["up", dir.path().join("skiff.toml").to_str().unwrap()])
}

/// [`up`], with the metrics served too (`Server::metrics`).
fn up_with_metrics(dir: &tempfile::TempDir) -> Server {
    let toml = dir.path().join("skiff.toml");
    Server::start(&[
        "up",
        "--metrics-listen",
        "127.0.0.1:0",
        toml.to_str().unwrap(),
    ])
}

/// A request of `path` with `headers`: status, the headers as `name: value` lines, and body.
async fn request(server: &Server, path: &str, headers: &[(&str, &str)]) -> (u16, String, String) {
    let mut request = client().get(server.url(path));
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let head = response
        .headers()
        .iter()
        .map(|(n, v)| format!("{n}: {}\n", v.to_str().unwrap_or("?")))
        .collect();
    (status, head, response.text().await.unwrap())
}

const TOKEN: (&str, &str) = ("authorization", "Bearer letmein");

#[tokio::test]
async fn components_call_each_other_in_process_only_where_the_manifest_names_them() {
    let calls_back = [("MODE", "call"), ("TARGET", "http://back.skiff.internal")];
    let manifest = [
        component_with(
            "front",
            &calls_back,
            "route = \"/front/...\"\nallowed_outbound_hosts = [\"http://back.skiff.internal\"]",
        ),
        component("back", "echo", ""),
        // `*` reaches public addresses; it never names another component.
        component_with(
            "star",
            &calls_back,
            "route = \"/star/...\"\nallowed_outbound_hosts = [\"*://*:*\"]",
        ),
        component_with("none", &calls_back, "route = \"/none/...\""),
    ]
    .concat();
    let dir = gateway_app(&manifest);
    let server = up_with_metrics(&dir);

    let (status, body) = get(&server, "/front/x?q=1").await;
    assert_eq!(status, 200, "{body}");
    assert!(body.starts_with("front got 200: echo back\n"), "{body}");
    assert!(body.contains("path=/front/x?q=1\n"), "{body}");
    // The callee knows who called it (a header no client can forge), and continues the
    // caller's trace.
    assert!(body.contains("skiff-caller=front\n"), "{body}");
    assert!(body.contains("skiff-component=back\n"), "{body}");
    assert!(body.contains("traceparent=00-"), "{body}");

    // A client cannot pretend to be a caller.
    let (_, _, body) = request(&server, "/front/x", &[("skiff-caller", "admin")]).await;
    assert!(body.contains("skiff-caller=front\n"), "{body}");

    for path in ["/star/x", "/none/x"] {
        let (status, body) = get(&server, path).await;
        assert_eq!(status, 502, "{path}: {body}");
        assert!(body.contains("HttpRequestDenied"), "{path}: {body}");
    }
    // The callee's calls are counted as its own, apart from the routes'.
    let text = server.metrics().await;
    let series = "skiff_http_requests_total{tenant=\"\",app=\"gateway\",component=\"back\",\
                  route=\"back.skiff.internal\",status=\"2xx\"}";
    assert!(text.contains(&format!("{series} 2\n")), "{text}");

    let logs = server.wait_for_log("http://back.skiff.internal");
    assert!(
        logs.contains("refused in-process request to component `back`"),
        "{logs}"
    );
}

#[tokio::test]
async fn a_loop_of_in_process_calls_stops_at_a_bounded_depth() {
    let manifest = [
        component_with(
            "a",
            &[("MODE", "call"), ("TARGET", "http://b.skiff.internal")],
            "route = \"/a/...\"\nallowed_outbound_hosts = [\"http://*.skiff.internal\"]",
        ),
        component_with(
            "b",
            &[("MODE", "call"), ("TARGET", "http://a.skiff.internal")],
            "allowed_outbound_hosts = [\"http://a.skiff.internal\"]",
        ),
    ]
    .concat();
    let dir = gateway_app(&manifest);
    let server = up(&dir);
    let (status, body) = get(&server, "/a/x").await;
    // Each level answers 200 with what the level below said; the deepest call is refused.
    assert_eq!(status, 200, "{body}");
    assert!(
        body.contains("call failed: ErrorCode::LoopDetected"),
        "{body}"
    );
    // Nine instances: the first and eight nested calls; the ninth call is refused.
    assert_eq!(body.matches(" got ").count(), 8, "{body}");
    let logs = server.wait_for_log("nested 8 deep");
    assert!(logs.contains("A calls B calls A"), "{logs}");
    // The host goes on serving.
    let (status, _) = get(&server, "/a/y").await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn a_middleware_chain_checks_rewrites_and_forwards_to_an_upstream() {
    let upstream = TestUpstream::start("orders").await;
    let manifest = [
        component("auth", "auth", ""),
        component("rewrite", "rewrite", ""),
        format!(
            "[upstream.orders]\nurl = \"{}\"\nroute = \"/orders/...\"\n\
             middleware = [\"auth\", \"rewrite\"]\n",
            upstream.url()
        ),
    ]
    .concat();
    let dir = gateway_app(&manifest);
    let server = up(&dir);

    // Denied by the first middleware: nothing reaches the upstream.
    let (status, head, body) = request(&server, "/orders/42", &[]).await;
    assert_eq!(status, 401, "{body}");
    assert_eq!(body, "auth: denied\n");
    assert!(head.contains("www-authenticate: Bearer"), "{head}");
    assert_eq!(upstream.requests(), 0);

    let (status, head, body) = request(&server, "/orders/42?x=1", &[TOKEN]).await;
    // The rewrite middleware turned the upstream's 200 into 203 on the way back.
    assert_eq!(status, 203, "{body}");
    assert!(body.starts_with("upstream orders\nmethod=GET\n"), "{body}");
    assert!(body.contains("path=/rewritten/orders/42?x=1\n"), "{body}");
    assert!(body.contains("x-seen-by=auth,rewrite\n"), "{body}");
    assert!(body.contains("x-rewritten-by=rewrite\n"), "{body}");
    assert!(body.contains("authorization=Bearer letmein\n"), "{body}");
    assert!(body.contains("x-forwarded-for=127.0.0.1\n"), "{body}");
    assert!(body.contains("x-forwarded-proto=http\n"), "{body}");
    assert!(body.contains("skiff-request-id="), "{body}");
    assert!(body.contains("traceparent=00-"), "{body}");
    // skiff's headers for guests stay inside.
    assert!(!body.contains("skiff-component="), "{body}");
    assert!(!body.contains("skiff-client-addr="), "{body}");
    for header in [
        "x-upstream: yes",
        "x-passed-auth: yes",
        "x-passed-rewrite: yes",
        "x-response-rewritten: rewrite",
    ] {
        assert!(head.contains(header), "{header} in {head}");
    }
    assert_eq!(upstream.requests(), 1);
}

#[tokio::test]
async fn middleware_that_answers_fails_or_hangs_in_any_position_is_contained() {
    let upstream = TestUpstream::start("svc").await;
    let route = |name: &str, chain: &[&str]| {
        let list: Vec<String> = chain.iter().map(|m| format!("\"{m}\"")).collect();
        format!(
            "[upstream.{name}]\nurl = \"{}\"\nroute = \"/{name}/...\"\nmiddleware = [{}]\n",
            upstream.url(),
            list.join(", ")
        )
    };
    let manifest = [
        component("pass", "forward", ""),
        component("cache", "short", ""),
        component("crash", "trap", ""),
        component("stall", "sleep", "limits = { timeout = \"500ms\" }"),
        route("short-first", &["cache", "pass"]),
        route("short-last", &["pass", "cache"]),
        route("trap-first", &["crash", "pass"]),
        route("trap-last", &["pass", "crash"]),
        route("slow-first", &["stall", "pass"]),
        route("slow-last", &["pass", "stall"]),
    ]
    .concat();
    let dir = gateway_app(&manifest);
    let server = up(&dir);

    for path in ["/short-first/x", "/short-last/x"] {
        let (status, head, body) = request(&server, path, &[]).await;
        assert_eq!(status, 200, "{path}: {body}");
        assert_eq!(body, "short-circuit by cache\n", "{path}");
        assert!(head.contains("x-cache: hit"), "{path}: {head}");
    }
    // A trap is a 500 naming the request id, wherever it happens; a middleware after it in
    // the chain passes the failure on.
    for path in ["/trap-first/x", "/trap-last/x"] {
        let (status, body) = get(&server, path).await;
        assert_eq!(status, 500, "{path}: {body}");
        assert!(
            body.contains("the component failed (request id "),
            "{path}: {body}"
        );
    }
    // A middleware past its deadline is a 504, wherever it is.
    for path in ["/slow-first/x", "/slow-last/x"] {
        let (status, body) = get(&server, path).await;
        assert_eq!(status, 504, "{path}: {body}");
        assert!(body.contains("request id"), "{path}: {body}");
    }
    assert_eq!(
        upstream.requests(),
        0,
        "nothing got past a failing middleware"
    );
    // The host goes on serving.
    let (status, body) = get(&server, "/short-first/y").await;
    assert_eq!(status, 200, "{body}");
}

#[tokio::test]
async fn an_upstream_that_is_down_slow_resets_or_fails_gets_a_clear_answer() {
    let ok = TestUpstream::start("ok").await;
    let resetting = Resetting::start().await;
    let down = closed_port();
    let manifest = [
        format!(
            "[upstream.down]\nurl = \"http://127.0.0.1:{down}\"\nroute = \"/down/...\"\n\
             connect_timeout = \"1s\"\n"
        ),
        format!(
            "[upstream.slow]\nurl = \"{}\"\nroute = \"/slow\"\ntimeout = \"300ms\"\n",
            ok.url()
        ),
        format!(
            "[upstream.reset]\nurl = \"http://{}\"\nroute = \"/reset/...\"\nretries = 2\n",
            resetting.addr
        ),
        format!("[upstream.ok]\nurl = \"{}\"\nroute = \"/fail\"\n", ok.url()),
    ]
    .concat();
    let dir = gateway_app(&manifest);
    let server = up_with_metrics(&dir);

    let (status, body) = get(&server, "/down/x").await;
    assert_eq!(status, 502, "{body}");
    assert!(
        body.contains("upstream `down` could not be reached (request id "),
        "{body}"
    );

    let (status, body) = get(&server, "/slow?ms=3000").await;
    assert_eq!(status, 504, "{body}");
    assert!(
        body.contains("upstream `slow` did not answer in time (request id "),
        "{body}"
    );

    // A GET without a body is tried again (retries = 2): three connections, then 502.
    let (status, body) = get(&server, "/reset/x").await;
    assert_eq!(status, 502, "{body}");
    assert!(body.contains("broke off the connection"), "{body}");
    assert_eq!(
        resetting.accepted.load(std::sync::atomic::Ordering::SeqCst),
        3
    );
    // A POST is not: it may have been processed.
    let response = client()
        .post(server.url("/reset/x"))
        .body("order")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 502);
    assert_eq!(
        resetting.accepted.load(std::sync::atomic::Ordering::SeqCst),
        4
    );

    // An upstream's own error passes through as it is.
    let (status, head, body) = request(&server, "/fail", &[]).await;
    assert_eq!((status, body.as_str()), (500, "upstream failed\n"));
    assert!(head.contains("x-upstream: yes"), "{head}");

    // And the host goes on serving.
    let (status, _) = get(&server, "/slow?ms=1").await;
    assert_eq!(status, 200);

    // Each upstream's outcomes are counted apart: its own answers by status class, and what
    // skiff answered for it by why.
    let text = server.metrics().await;
    let series = |upstream: &str, outcome: &str| {
        format!(
            "skiff_http_upstream_responses_total{{tenant=\"\",app=\"gateway\",\
             upstream=\"{upstream}\",outcome=\"{outcome}\"}}"
        )
    };
    for (upstream, outcome, count) in [
        ("down", "unreachable", 1),
        ("slow", "timeout", 1),
        ("slow", "2xx", 1),
        ("reset", "broken", 2),
        ("ok", "5xx", 1),
        ("ok", "2xx", 0),
    ] {
        let line = format!("{} {count}\n", series(upstream, outcome));
        assert!(text.contains(&line), "no {line} in:\n{text}");
    }
    assert!(
        text.contains(
            "skiff_http_upstream_duration_seconds_count{tenant=\"\",app=\"gateway\",\
             upstream=\"slow\"} 2\n"
        ),
        "{text}"
    );
}

#[tokio::test]
async fn requests_spread_over_addresses_and_skip_those_that_fail() {
    let a = TestUpstream::start("a").await;
    let b = TestUpstream::start("b").await;
    let down = closed_port();
    let manifest = format!(
        "[upstream.pool]\nurls = [\"{}\", \"http://127.0.0.1:{down}\", \"{}\"]\nroute = \"/...\"\n",
        a.url(),
        b.url()
    );
    let dir = gateway_app(&manifest);
    let server = up(&dir);
    for i in 0..20 {
        let (status, body) = get(&server, &format!("/n/{i}")).await;
        assert_eq!(status, 200, "request {i}: {body}");
    }
    assert_eq!(a.requests() + b.requests(), 20);
    assert!(
        a.requests() >= 5 && b.requests() >= 5,
        "{} / {}",
        a.requests(),
        b.requests()
    );
}

#[tokio::test]
async fn health_checks_take_a_failing_address_out_and_back() {
    let a = TestUpstream::start("a").await;
    let b = TestUpstream::start("b").await;
    let manifest = format!(
        "[upstream.pool]\nurls = [\"{}\", \"{}\"]\nroute = \"/...\"\n\
         health_check = {{ path = \"/healthz\", interval = \"100ms\", timeout = \"100ms\" }}\n",
        a.url(),
        b.url()
    );
    let dir = gateway_app(&manifest);
    let server = up(&dir);
    b.set_healthy(false);
    common::eventually(Duration::from_secs(10), "b's failed check", || async {
        b.health_checks() >= 2
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = b.requests();
    for _ in 0..10 {
        let (status, body) = get(&server, "/x").await;
        assert_eq!(status, 200, "{body}");
        assert!(body.starts_with("upstream a\n"), "{body}");
    }
    assert_eq!(b.requests(), before);

    // Both failing: 503 at once, with a hint to retry.
    a.set_healthy(false);
    let checks = a.health_checks();
    common::eventually(Duration::from_secs(10), "a's failed check", || async {
        a.health_checks() >= checks + 2
    })
    .await;
    let response = client().get(server.url("/x")).send().await.unwrap();
    assert_eq!(response.status(), 503);
    assert_eq!(response.headers()["retry-after"], "1");
    assert!(
        response
            .text()
            .await
            .unwrap()
            .contains("upstream `pool` has no healthy address")
    );

    // Back in once its check passes again.
    b.set_healthy(true);
    common::eventually(Duration::from_secs(10), "b back", || async {
        get(&server, "/x").await.0 == 200
    })
    .await;
}

#[tokio::test]
async fn no_request_reaches_a_service_the_manifest_did_not_name() {
    let named = TestUpstream::start("named").await;
    let other = TestUpstream::start("other").await;
    let other_url = other.url();
    let manifest = [
        // A middleware that tries to send the request elsewhere than its next hop.
        component_with("sneaky", &[("MODE", "forward"), ("TARGET", &other_url)], ""),
        format!(
            "[upstream.named]\nurl = \"{}\"\nroute = \"/named/...\"\n",
            named.url()
        ),
        format!(
            "[upstream.sneaky]\nurl = \"{}\"\nroute = \"/sneaky/...\"\nmiddleware = [\"sneaky\"]\n",
            named.url()
        ),
    ]
    .concat();
    let dir = gateway_app(&manifest);
    let server = up(&dir);

    let (status, body) = get(&server, "/sneaky/x").await;
    assert_eq!(status, 502, "{body}");
    assert!(body.contains("HttpRequestDenied"), "{body}");

    // A client that names another host in its request target, or in `Host`, still reaches the
    // named upstream only.
    let stream = tokio::net::TcpStream::connect(server.url.trim_start_matches("http://"))
        .await
        .unwrap();
    let raw = format!(
        "GET http://{}/named/abs HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
        other.addr, other.addr
    );
    let answer = raw_exchange(stream, &raw).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.contains("upstream named\n"), "{answer}");
    assert!(answer.contains("path=/named/abs\n"), "{answer}");
    assert_eq!(other.requests(), 0);
}

/// Writes `raw` to `stream` and reads the answer until the server closes.
async fn raw_exchange(mut stream: tokio::net::TcpStream, raw: &str) -> String {
    stream.write_all(raw.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).await.unwrap();
    String::from_utf8_lossy(&answer).into_owned()
}

#[tokio::test]
async fn bodies_stream_through_an_upstream_route_both_ways() {
    let upstream = TestUpstream::start("svc").await;
    let manifest = [
        component("pass", "forward", ""),
        format!(
            "[upstream.svc]\nurl = \"{}\"\nroute = \"/direct/...\"\n",
            upstream.url()
        ),
        format!(
            "[upstream.chained]\nurl = \"{}\"\nroute = \"/chained/...\"\nmiddleware = [\"pass\"]\n",
            upstream.url()
        ),
    ]
    .concat();
    let dir = gateway_app(&manifest);
    let server = up(&dir);
    for prefix in ["/direct", "/chained"] {
        let payload = vec![b'p'; 8 << 20];
        let response = client()
            .post(server.url(&format!("{prefix}/upload")))
            .body(payload)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{prefix}");
        let body = response.bytes().await.unwrap();
        let text = String::from_utf8_lossy(&body[..body.len().min(400)]).to_string();
        assert!(text.contains("method=POST\n"), "{prefix}: {text}");
        assert!(
            body.ends_with(&vec![b'p'; 8 << 20]),
            "{prefix}: the upload came back whole"
        );

        let response = client()
            .get(server.url(&format!("{prefix}/big?n=20000000")))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{prefix}");
        assert_eq!(
            response.bytes().await.unwrap().len(),
            20_000_000,
            "{prefix}"
        );
    }
}

#[tokio::test]
async fn a_component_route_can_have_middleware_too() {
    let manifest = [
        component("auth", "auth", ""),
        component(
            "api",
            "echo",
            "route = \"/api/...\"\nmiddleware = [\"auth\"]",
        ),
    ]
    .concat();
    let dir = gateway_app(&manifest);
    let server = up(&dir);
    let (status, _, body) = request(&server, "/api/users/1", &[]).await;
    assert_eq!((status, body.as_str()), (401, "auth: denied\n"));
    let (status, _, body) = request(&server, "/api/users/1", &[TOKEN]).await;
    assert_eq!(status, 200, "{body}");
    assert!(body.starts_with("echo api\n"), "{body}");
    assert!(body.contains("x-seen-by=auth\n"), "{body}");
    // The target sees the route's headers as if it were routed to directly.
    assert!(body.contains("skiff-matched-route=/api/...\n"), "{body}");
    assert!(body.contains("skiff-path-info=/users/1\n"), "{body}");
    assert!(body.contains("skiff-component=api\n"), "{body}");
}

#[tokio::test]
async fn a_websocket_upgrade_passes_through_an_upstream_route_and_its_middleware() {
    let upstream = TestUpstream::start("ws").await;
    // And one over TLS: the switched connection is then the TLS stream.
    let ca = common::ca::Ca::new("ws");
    let secure = ca.tls_service("wss").await;
    let route = |name: &str, middleware: &str| {
        format!(
            "[upstream.{name}]\nurl = \"{}\"\nroute = \"/{name}/...\"\nmiddleware = [{middleware}]\n",
            upstream.url()
        )
    };
    let manifest = [
        component("pass", "forward", ""),
        component("auth", "auth", ""),
        route("direct", ""),
        route("chained", "\"auth\", \"pass\""),
        format!(
            "[upstream.secure]\nurl = \"https://127.0.0.1:{}\"\nroute = \"/secure/...\"\n\
             middleware = [\"pass\"]\ntls = {{ ca = \"ca.pem\" }}\n",
            secure.addr.port()
        ),
    ]
    .concat();
    let dir = gateway_app(&manifest);
    std::fs::copy(ca.file(), dir.path().join("ca.pem")).unwrap();
    let server = up(&dir);
    for (path, token) in [
        ("/direct/ws", ""),
        ("/chained/ws", "Authorization: Bearer letmein\r\n"),
        ("/secure/ws", ""),
    ] {
        let mut stream = websocket_handshake(&server, path, token).await;
        let head = read_head(&mut stream).await;
        assert!(head.starts_with("HTTP/1.1 101"), "{path}: {head}");
        let lower = head.to_ascii_lowercase();
        assert!(lower.contains("upgrade: websocket"), "{path}: {head}");
        assert!(lower.contains("connection: upgrade"), "{path}: {head}");
        // From here on the bytes are the upstream's: skiff copies them both ways, unframed.
        for message in ["hello", "again"] {
            stream.write_all(message.as_bytes()).await.unwrap();
            let mut buffer = [0u8; 64];
            let n = stream.read(&mut buffer).await.unwrap();
            assert_eq!(&buffer[..n], format!("echo:{message}").as_bytes(), "{path}");
        }
    }
    // A middleware that refuses the handshake keeps it from the upstream.
    let before = upstream.requests();
    let mut stream = websocket_handshake(&server, "/chained/ws", "").await;
    let head = read_head(&mut stream).await;
    assert!(head.starts_with("HTTP/1.1 401"), "{head}");
    assert_eq!(upstream.requests(), before);
    // The host goes on serving ordinary requests on the routes.
    for path in ["/direct/plain", "/chained/plain"] {
        let (status, _, body) = request(&server, path, &[TOKEN]).await;
        assert_eq!(status, 200, "{path}: {body}");
    }
}

/// Opens a connection to `server` and sends a WebSocket handshake for `path`, with `extra`
/// header lines.
async fn websocket_handshake(server: &Server, path: &str, extra: &str) -> tokio::net::TcpStream {
    let mut stream = tokio::net::TcpStream::connect(server.url.trim_start_matches("http://"))
        .await
        .unwrap();
    let handshake = format!(
        "GET {path} HTTP/1.1\r\nHost: example\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n{extra}\r\n"
    );
    stream.write_all(handshake.as_bytes()).await.unwrap();
    stream
}

/// Reads a response head (up to the blank line) from `stream`.
async fn read_head(stream: &mut tokio::net::TcpStream) -> String {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        let n = stream.read(&mut byte).await.unwrap();
        assert_eq!(
            n,
            1,
            "the connection closed in the head: {}",
            String::from_utf8_lossy(&head)
        );
        head.push(byte[0]);
    }
    String::from_utf8_lossy(&head).into_owned()
}

#[tokio::test]
async fn a_shared_host_keeps_tenants_upstreams_to_public_addresses() {
    let service = TestUpstream::start("private").await;
    let host = common::host::Host::start();
    let token = host.tenant("acme", &[]);
    // An address written out: refused at deploy, naming the upstream and why.
    let dir = gateway_app(&format!(
        "[upstream.svc]\nurl = \"{}\"\nroute = \"/...\"\n",
        service.url()
    ));
    let out = host.deploy(&token, dir.path(), "literal");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("`upstream.svc`")
            && stderr.contains("lets apps reach public addresses only"),
        "{stderr}"
    );
    // A name that resolves to the host itself: refused when it is resolved.
    let dir = gateway_app(&format!(
        "[upstream.svc]\nurl = \"http://localhost:{}\"\nroute = \"/...\"\n",
        service.addr.port()
    ));
    host.deploy_ok(&token, dir.path(), "named");
    let (status, body) = host.get("named", "/x").await;
    assert_eq!(status, 502, "{body}");
    assert!(body.contains("could not be reached"), "{body}");
    assert_eq!(service.requests(), 0);
    let logs = host.server.wait_for_log("which the app may not reach");
    assert!(
        logs.contains("this host lets apps reach public addresses only"),
        "{logs}"
    );
}

#[tokio::test]
async fn an_http2_client_reaches_an_upstream_with_its_authority_as_host() {
    use http_body_util::BodyExt;
    let upstream = TestUpstream::start("svc").await;
    let dir = gateway_app(&format!(
        "[upstream.svc]\nurl = \"{}\"\nroute = \"/...\"\n",
        upstream.url()
    ));
    let server = up(&dir);
    let stream = tokio::net::TcpStream::connect(server.url.trim_start_matches("http://"))
        .await
        .unwrap();
    let (mut sender, connection) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(stream),
    )
    .await
    .unwrap();
    tokio::spawn(connection);
    let request = http::Request::builder()
        .uri("http://shop.example:8080/h2?x=1")
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    assert_eq!(response.status(), 200);
    let body = response.into_body().collect().await.unwrap().to_bytes();
    let body = String::from_utf8_lossy(&body);
    assert!(body.contains("path=/h2?x=1\n"), "{body}");
    assert!(body.contains("host=shop.example:8080\n"), "{body}");
    assert!(
        body.contains("x-forwarded-host=shop.example:8080\n"),
        "{body}"
    );
}

#[tokio::test]
async fn a_long_chain_is_not_mistaken_for_a_loop() {
    let upstream = TestUpstream::start("svc").await;
    let ids: Vec<String> = (1..=10).map(|i| format!("m{i}")).collect();
    let mut manifest: String = ids.iter().map(|id| component(id, "forward", "")).collect();
    let list: Vec<String> = ids.iter().map(|id| format!("\"{id}\"")).collect();
    manifest.push_str(&format!(
        "[upstream.svc]\nurl = \"{}\"\nroute = \"/...\"\nmiddleware = [{}]\n",
        upstream.url(),
        list.join(", ")
    ));
    let dir = gateway_app(&manifest);
    let server = up(&dir);
    let (status, body) = get(&server, "/deep").await;
    assert_eq!(status, 200, "{body}");
    assert!(
        body.contains(&format!("x-seen-by={}\n", ids.join(","))),
        "{body}"
    );
}

/// A WASI 0.3 middleware (tests/guests/http-p3-guest with `MODE=forward`) sends the very
/// request it got on with `wasi:http/client.send` and hands back the response it gets, both
/// bodies as streams it never reads: skiff resolves the send to the next hop as for a 0.2
/// middleware, in a chain mixed with one.
#[tokio::test]
async fn a_wasi_0_3_middleware_passes_requests_and_bodies_through() {
    let upstream = TestUpstream::start("svc").await;
    let manifest = format!(
        "[component.p3]\nsource = \"p3.wasm\"\nenvironment = {{ MODE = \"forward\", ID = \"first\" }}\n\n\
         {}\
         [upstream.svc]\nurl = \"{}\"\nroute = \"/api/...\"\nmiddleware = [\"p3\", \"p2\"]\n",
        component("p2", "forward", ""),
        upstream.url()
    );
    let dir = gateway_app(&manifest);
    std::fs::copy(guest("http-p3-guest"), dir.path().join("p3.wasm")).unwrap();
    let server = up(&dir);

    let (status, head, body) = request(&server, "/api/items?x=1", &[("x-seen-by", "client")]).await;
    assert_eq!(status, 200, "{head}{body}");
    assert!(head.contains("x-passed-p3: first\n"), "{head}");
    assert!(head.contains("x-passed-p2: yes\n"), "{head}");
    assert!(body.starts_with("upstream svc\n"), "{body}");
    assert!(body.contains("path=/api/items?x=1\n"), "{body}");
    // The 0.3 hop passed the header on unchanged; the 0.2 hop after it added its name.
    assert!(body.contains("x-seen-by=client,p2\n"), "{body}");
    assert_eq!(upstream.requests(), 1);

    // A body streams through both hops and back.
    let payload = "p".repeat(3 << 20);
    let response = client()
        .post(server.url("/api/echo"))
        .body(payload.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let echoed = response.text().await.unwrap();
    assert!(
        echoed.starts_with("upstream svc\nmethod=POST\n"),
        "{echoed}"
    );
    assert!(
        echoed.ends_with(&format!("body={payload}")),
        "the body was not passed whole"
    );
}

#[tokio::test]
async fn websocket_connections_are_limited_and_closed_when_silent() {
    let upstream = TestUpstream::start("ws").await;
    let manifest = format!(
        "[upstream.ws]\nurl = \"{}\"\nroute = \"/ws/...\"\nwebsocket_limit = 2\n\
         websocket_idle_timeout = \"700ms\"\n",
        upstream.url()
    );
    let dir = gateway_app(&manifest);
    let server = up(&dir);
    let switch = || async {
        let mut stream = websocket_handshake(&server, "/ws/ws", "").await;
        let head = read_head(&mut stream).await;
        assert!(head.starts_with("HTTP/1.1 101"), "{head}");
        stream
    };
    let mut talking = switch().await;
    let mut silent = switch().await;

    // The limit is reached: the next handshake is refused before the upstream hears of it.
    let before = upstream.requests();
    let mut refused = websocket_handshake(&server, "/ws/ws", "").await;
    let head = read_head(&mut refused).await;
    assert!(head.starts_with("HTTP/1.1 503"), "{head}");
    assert!(
        head.to_ascii_lowercase().contains("retry-after: 1"),
        "{head}"
    );
    let mut body = vec![0u8; 512];
    let n = refused.read(&mut body).await.unwrap();
    let body = String::from_utf8_lossy(&body[..n]);
    assert!(body.contains("2 WebSocket connections open"), "{body}");
    assert!(body.contains("websocket_limit"), "{body}");
    assert_eq!(upstream.requests(), before);

    // A connection that keeps talking outlives the idle timeout; the silent one is closed.
    for i in 0..8 {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let message = format!("ping{i}");
        talking.write_all(message.as_bytes()).await.unwrap();
        let mut buffer = [0u8; 64];
        let n = talking.read(&mut buffer).await.unwrap();
        assert_eq!(&buffer[..n], format!("echo:{message}").as_bytes());
    }
    let mut buffer = [0u8; 64];
    let closed = tokio::time::timeout(Duration::from_secs(10), silent.read(&mut buffer))
        .await
        .expect("the silent connection is closed");
    assert!(matches!(closed, Ok(0) | Err(_)), "{closed:?}");

    // Its place under the limit is free again.
    let mut again = switch().await;
    again.write_all(b"back").await.unwrap();
    let n = again.read(&mut buffer).await.unwrap();
    assert_eq!(&buffer[..n], b"echo:back");
}

#[tokio::test]
async fn a_response_body_that_stalls_is_cut_off_and_one_that_moves_is_not() {
    let upstream = TestUpstream::start("stall").await;
    let manifest = format!(
        "[upstream.stall]\nurl = \"{}\"\nroute = \"/stall/...\"\nbody_idle_timeout = \"500ms\"\n",
        upstream.url()
    );
    let dir = gateway_app(&manifest);
    let server = up(&dir);
    let http = client();

    // A pause well within the bound: the whole body arrives.
    let response = http
        .get(server.url("/stall/stall?ms=50"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.text().await.unwrap(), "start\nend\n");

    // A pause far past it: the head and the first piece arrive, then the body is cut off
    // instead of holding the connection until the upstream goes on.
    let mut response = http
        .get(server.url("/stall/stall?ms=30000"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let first = response.chunk().await.unwrap().unwrap();
    assert_eq!(&first[..], b"start\n");
    let rest = tokio::time::timeout(Duration::from_secs(20), response.chunk())
        .await
        .expect("the stalled body is cut off");
    assert!(rest.is_err(), "{rest:?}");
    let logs = server.wait_for_log_within("response body cut off", 10);
    assert!(logs.contains("body_idle_timeout"), "{logs}");

    // The host goes on serving the route.
    let (status, _, body) = request(&server, "/stall/plain", &[]).await;
    assert_eq!(status, 200, "{body}");
}
