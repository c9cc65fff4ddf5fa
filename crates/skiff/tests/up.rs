//! `skiff up`: an app of several components behind routes, against the real server.

mod common;

use common::{Server, app_dir, client, guest, repo_root};

/// Three components built from one guest, told apart by an environment variable.
fn routed_app() -> (tempfile::TempDir, Server) {
    let wasm = guest("http-guest");
    let wasm = wasm.to_str().unwrap();
    let manifest = format!(
        r#"
[app]
name = "routed"
version = "1.2.3"

[component.home]
source = "{wasm}"
route = "/"
environment = {{ SKIFF_TEST_NAME = "home" }}

[component.api]
source = "{wasm}"
route = "/api/..."
environment = {{ SKIFF_TEST_NAME = "api" }}

[component.users]
source = "{wasm}"
route = ["/api/users/...", "/exact"]
environment = {{ SKIFF_TEST_NAME = "users" }}
files = [{{ source = "assets", destination = "/assets" }}]

[component.caller]
source = "{wasm}"
route = "/caller/..."
allowed_outbound_hosts = ["http://127.0.0.1:*"]

[component.writer]
source = "{wasm}"
route = "/writer/..."
files = [{{ source = "out", destination = "/out", writable = true }}]

[component.slow]
source = "{wasm}"
route = "/slow/..."
limits = {{ timeout = "300ms", memory = "8MiB" }}
"#
    );
    let dir = app_dir(&[
        ("skiff.toml", &manifest),
        ("assets/greeting.txt", "hello from a file\n"),
        ("out/.keep", ""),
    ]);
    let manifest = dir.path().join("skiff.toml");
    let server = Server::start(&["up", manifest.to_str().unwrap()]);
    (dir, server)
}

async fn get(server: &Server, path: &str) -> (u16, String) {
    let response = client().get(server.url(path)).send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.text().await.unwrap())
}

#[tokio::test]
async fn the_most_specific_route_wins() {
    let (_dir, server) = routed_app();

    let (status, body) = get(&server, "/").await;
    assert_eq!(status, 200);
    assert!(body.contains("component=home"), "{body}");
    assert!(body.contains("matched=/ "), "{body}");

    let (_, body) = get(&server, "/api/orders/9").await;
    assert!(body.contains("component=api"), "{body}");
    assert!(body.contains("matched=/api/..."), "{body}");
    assert!(body.contains("info=/orders/9"), "{body}");

    let (_, body) = get(&server, "/api").await;
    assert!(body.contains("component=api"), "{body}");

    let (_, body) = get(&server, "/api/users/42").await;
    assert!(body.contains("component=users"), "{body}");
    assert!(body.contains("matched=/api/users/..."), "{body}");
    assert!(body.contains("info=/42"), "{body}");

    let (_, body) = get(&server, "/exact").await;
    assert!(body.contains("component=users"), "{body}");
}

#[tokio::test]
async fn a_path_that_matches_no_route_is_404_from_skiff() {
    let (_dir, server) = routed_app();
    for path in ["/nothing", "/apiary", "/exact/more"] {
        let (status, body) = get(&server, path).await;
        assert_eq!(status, 404, "{path}");
        assert!(body.contains("no route matches"), "{body}");
    }
    // Nothing was instantiated for them: no request reached a guest.
    assert!(
        !server.logs().contains("component=home"),
        "{}",
        server.logs()
    );
}

#[tokio::test]
async fn route_headers_cannot_be_spoofed_by_clients() {
    let (_dir, server) = routed_app();
    let body = client()
        .get(server.url("/api/x"))
        .header("skiff-matched-route", "/forged")
        .header("Skiff-Path-Info", "/forged")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(body.contains("matched=/api/..."), "{body}");
    assert!(body.contains("info=/x"), "{body}");
}

#[tokio::test]
async fn files_and_environment_are_granted_per_component() {
    let (_dir, server) = routed_app();
    let (status, body) = get(&server, "/api/users/file?path=/assets/greeting.txt").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body, "hello from a file\n");
    // The api component was granted no files.
    let (status, _) = get(&server, "/api/file?path=/assets/greeting.txt").await;
    assert_eq!(status, 500);

    let (status, body) = get(&server, "/api/users/env/SKIFF_TEST_NAME").await;
    assert_eq!((status, body.as_str()), (200, "users"));
    let (status, _) = get(&server, "/api/users/env/PATH").await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn granted_files_are_read_only_unless_marked_writable() {
    let (dir, server) = routed_app();
    let (status, _) = get(&server, "/api/users/write?path=/assets/new.txt").await;
    assert_eq!(status, 500);
    assert!(!dir.path().join("assets/new.txt").exists());
    // Marked writable, the guest's write lands in the host folder.
    let (status, body) = get(&server, "/writer/write?path=/out/new.txt").await;
    assert_eq!((status, body.as_str()), (200, "written"));
    assert_eq!(
        std::fs::read_to_string(dir.path().join("out/new.txt")).unwrap(),
        "written"
    );
}

#[test]
fn it_prints_the_routes_it_serves() {
    let (_dir, server) = routed_app();
    let out = server.stdout_lines.join("\n");
    assert!(out.contains(&format!("home: {}/", server.url)), "{out}");
    assert!(
        out.contains(&format!("api: {}/api (wildcard)", server.url)),
        "{out}"
    );
    assert!(
        out.contains(&format!("users: {}/exact", server.url)),
        "{out}"
    );
}

#[test]
fn up_finds_skiff_toml_in_the_current_folder() {
    let hello = repo_root().join("examples/hello");
    let mut command = common::skiff();
    command.current_dir(&hello);
    let server = Server::start_with(command, &["up"]);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let body = runtime.block_on(async {
        client()
            .get(server.url("/"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    });
    assert_eq!(body, "hello\n");
    let body = runtime.block_on(async {
        client()
            .get(server.url("/hello/world"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    });
    assert_eq!(body, "hello, world\n");
}

#[tokio::test]
async fn a_request_past_its_deadline_gets_504_and_the_host_keeps_serving() {
    let (_dir, server) = routed_app();
    let (status, body) = get(&server, "/slow/sleep?ms=10000").await;
    assert_eq!(status, 504, "{body}");
    assert!(body.contains("request id"), "{body}");
    // Had the deadline not fired, the guest would have answered 200 after its sleep.
    let logs = server.wait_for_log("deadline");
    assert!(logs.contains("component=slow"), "{logs}");
    // Within its deadline the same component answers.
    let (status, body) = get(&server, "/slow/sleep?ms=10").await;
    assert_eq!((status, body.as_str()), (200, "slept"));
}

#[tokio::test]
async fn outbound_http_reaches_only_granted_hosts() {
    let (_dir, server) = routed_app();
    let port = server.url.rsplit(':').next().unwrap().to_string();

    // Granted: the caller reaches another route of this very server.
    let target = format!("http://127.0.0.1:{port}/api/x");
    let (status, body) = get(&server, &format!("/caller/fetch?url={target}")).await;
    assert_eq!((status, body.as_str()), (200, "status=200"));

    // Not granted: the guest sees HTTP-request-denied, and the log names who tried what.
    let (status, body) = get(&server, &format!("/api/fetch?url={target}")).await;
    assert_eq!(status, 502, "{body}");
    assert!(body.contains("HttpRequestDenied"), "{body}");
    let logs = server.wait_for_log("denied outbound request");
    let line = logs
        .lines()
        .find(|line| line.contains("denied outbound request"))
        .unwrap();
    assert!(line.contains("component=api"), "{line}");
    assert!(line.contains(&format!("http://127.0.0.1:{port}")), "{line}");
    assert!(
        !line.contains("/api/x"),
        "the path may hold secrets: {line}"
    );

    // A host outside the caller's patterns is denied too, without leaving the machine.
    let (status, body) = get(&server, "/caller/fetch?url=http://example.com/").await;
    assert_eq!(status, 502, "{body}");
    assert!(body.contains("HttpRequestDenied"), "{body}");
}

#[tokio::test]
async fn a_request_over_its_memory_limit_fails_alone() {
    let (_dir, server) = routed_app();
    let (status, body) = get(&server, "/slow/alloc?mib=1").await;
    assert_eq!((status, body.as_str()), (200, "allocated 256 pages"));
    let (status, body) = get(&server, "/slow/alloc?mib=64").await;
    assert_eq!(status, 500, "{body}");
    assert!(body.contains("out of memory"), "{body}");
    let logs = server.wait_for_log("ran out of memory");
    assert!(logs.contains("limit 8388608 bytes"), "{logs}");
    // A component without the limit can allocate as much, and the host keeps serving.
    let (status, _) = get(&server, "/api/alloc?mib=64").await;
    assert_eq!(status, 200);
}

/// A guest's `https://` request really speaks TLS, to the checked address, and verifies the
/// server's certificate: a self-signed one is refused with the precise wasi:http error.
#[tokio::test]
async fn outbound_https_verifies_the_certificate() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio_rustls::rustls;

    let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(certified.signing_key.serialize_der().into());
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(vec![certified.cert.der().clone()], key)
    .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let tls_port = listener.local_addr().unwrap().port();
    let handshakes = Arc::new(AtomicUsize::new(0));
    tokio::spawn({
        let handshakes = handshakes.clone();
        async move {
            while let Ok((stream, _)) = listener.accept().await {
                // The client aborts once it sees the certificate: the handshake fails here.
                let _ = acceptor.accept(stream).await;
                handshakes.fetch_add(1, Ordering::SeqCst);
            }
        }
    });

    let wasm = guest("http-guest");
    let manifest = format!(
        r#"
[app]
name = "tls"

[component.caller]
source = "{}"
route = "/..."
allowed_outbound_hosts = ["https://localhost:*"]
"#,
        wasm.display()
    );
    let dir = app_dir(&[("skiff.toml", &manifest)]);
    let server = Server::start(&["up", dir.path().join("skiff.toml").to_str().unwrap()]);
    let (status, body) = get(
        &server,
        &format!("/fetch?url=https://localhost:{tls_port}/"),
    )
    .await;
    assert_eq!(status, 502, "{body}");
    assert!(body.contains("TlsCertificateError"), "{body}");
    // The server notices the aborted handshake a moment after the client gave up.
    let waited = std::time::Instant::now();
    while handshakes.load(Ordering::SeqCst) == 0 {
        assert!(
            waited.elapsed() < std::time::Duration::from_secs(10),
            "no TLS handshake reached the server"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn metrics_listen_serves_prometheus_counts_per_route() {
    let hello = repo_root().join("examples/hello");
    let server = Server::start(&[
        "up",
        "--metrics-listen",
        "127.0.0.1:0",
        hello.to_str().unwrap(),
    ]);
    let metrics_url = server
        .stdout_lines
        .iter()
        .find_map(|line| line.strip_prefix("Metrics "))
        .unwrap_or_else(|| panic!("no metrics line in {:?}", server.stdout_lines))
        .to_string();
    for path in ["/", "/hello/a", "/hello/b", "/nowhere"] {
        client().get(server.url(path)).send().await.unwrap();
    }
    let text = client()
        .get(&metrics_url)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let series = |route: &str| {
        format!(
            "skiff_http_requests_total{{tenant=\"\",app=\"hello\",component=\"hello\",route=\"{route}\",status=\"2xx\"}}"
        )
    };
    assert!(text.contains(&format!("{} 1\n", series("/"))), "{text}");
    // Routes by template, not by raw path: both /hello/a and /hello/b count here.
    assert!(
        text.contains(&format!("{} 2\n", series("/hello/..."))),
        "{text}"
    );
    assert!(
        !text.contains("/hello/a") && !text.contains("nowhere"),
        "{text}"
    );
}
