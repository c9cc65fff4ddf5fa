//! `skiff up`: an app of several components behind routes, against the real server.

#![allow(clippy::unwrap_used, clippy::expect_used)] // A panic here is a failure with its message.

mod common;

use common::{Server, app_dir, client, get, guest, repo_root};

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

    let (acceptor, _) = localhost_tls();
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
    for path in ["/", "/hello/a", "/hello/b", "/nowhere"] {
        client().get(server.url(path)).send().await.unwrap();
    }
    let text = server.metrics().await;
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

/// A TLS server side for `localhost` with a fresh self-signed certificate, and that
/// certificate in PEM (for a client that is to trust it).
fn localhost_tls() -> (tokio_rustls::TlsAcceptor, String) {
    use std::sync::Arc;
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
    (
        tokio_rustls::TlsAcceptor::from(Arc::new(config)),
        certified.cert.pem(),
    )
}

/// One HTTP request a [`Recorder`] received.
struct Recorded {
    path: String,
    headers: http::HeaderMap,
    body: bytes::Bytes,
}

/// A small HTTP server on 127.0.0.1 that answers every request 200 with an empty body and
/// keeps what it got: the upstream of guests' outbound calls, and an OTLP/HTTP collector (an
/// empty body is an empty `ExportTraceServiceResponse`: all accepted). With `tls`, it serves
/// HTTPS for `localhost` with a self-signed certificate, written to `Recorder::ca_file`.
struct Recorder {
    url: String,
    received: std::sync::Arc<std::sync::Mutex<Vec<Recorded>>>,
    ca_file: Option<tempfile::NamedTempFile>,
}

async fn recorder(tls: bool) -> Recorder {
    use http_body_util::BodyExt;
    use std::sync::Arc;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let (url, acceptor, ca_file) = if tls {
        let (acceptor, certificate_pem) = localhost_tls();
        let mut ca_file = tempfile::NamedTempFile::new().unwrap();
        std::io::Write::write_all(&mut ca_file, certificate_pem.as_bytes()).unwrap();
        (
            format!("https://localhost:{port}"),
            Some(acceptor),
            Some(ca_file),
        )
    } else {
        (format!("http://127.0.0.1:{port}"), None, None)
    };
    let received = Arc::new(std::sync::Mutex::new(Vec::new()));
    let kept = received.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let kept = kept.clone();
            let service = hyper::service::service_fn(move |request: http::Request<_>| {
                let kept = kept.clone();
                async move {
                    let (parts, body): (_, hyper::body::Incoming) = request.into_parts();
                    let body = body
                        .collect()
                        .await
                        .map(|b| b.to_bytes())
                        .unwrap_or_default();
                    kept.lock().unwrap().push(Recorded {
                        path: parts.uri.path().to_string(),
                        headers: parts.headers,
                        body,
                    });
                    Ok::<_, std::convert::Infallible>(http::Response::new(http_body_util::Empty::<
                        bytes::Bytes,
                    >::new(
                    )))
                }
            });
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let http = hyper::server::conn::http1::Builder::new();
                match acceptor {
                    Some(acceptor) => {
                        if let Ok(stream) = acceptor.accept(stream).await {
                            let io = hyper_util::rt::TokioIo::new(stream);
                            let _ = http.serve_connection(io, service).await;
                        }
                    }
                    None => {
                        let io = hyper_util::rt::TokioIo::new(stream);
                        let _ = http.serve_connection(io, service).await;
                    }
                }
            });
        }
    });
    Recorder {
        url,
        received,
        ca_file,
    }
}

/// The spans a collector has received so far, with their service's name.
fn exported_spans(
    collector: &Recorder,
) -> Vec<(String, opentelemetry_proto::tonic::trace::v1::Span)> {
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use prost::Message;
    let received = collector.received.lock().unwrap();
    let mut spans = Vec::new();
    for export in received.iter() {
        assert_eq!(export.path, "/v1/traces");
        assert_eq!(export.headers["content-type"], "application/x-protobuf");
        let request = ExportTraceServiceRequest::decode(export.body.clone())
            .expect("an OTLP export is an ExportTraceServiceRequest");
        for resource_spans in request.resource_spans {
            let service = resource_spans
                .resource
                .iter()
                .flat_map(|r| &r.attributes)
                .find(|kv| kv.key == "service.name")
                .map(|kv| format!("{:?}", kv.value))
                .unwrap_or_default();
            for scope in resource_spans.scope_spans {
                for span in scope.spans {
                    spans.push((service.clone(), span));
                }
            }
        }
    }
    spans
}

/// A string or integer attribute of a span, as text.
fn attribute(span: &opentelemetry_proto::tonic::trace::v1::Span, key: &str) -> Option<String> {
    use opentelemetry_proto::tonic::common::v1::any_value::Value;
    let value = span
        .attributes
        .iter()
        .find(|kv| kv.key == key)?
        .value
        .as_ref()?;
    match value.value.as_ref()? {
        Value::StringValue(s) => Some(s.clone()),
        Value::IntValue(i) => Some(i.to_string()),
        other => Some(format!("{other:?}")),
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traces_reach_an_otlp_collector_as_a_tree_per_request_and_the_context_travels_on() {
    use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
    // The collector is reached over HTTPS, trusted through SSL_CERT_FILE as a hosted one would
    // be through the system's store.
    let collector = recorder(true).await;
    let upstream = recorder(false).await;
    let (caller, state) = (guest("http-guest"), guest("state-guest"));
    let manifest = format!(
        r#"
[app]
name = "traced"

[component.caller]
source = "{}"
route = "/caller/..."
allowed_outbound_hosts = ["http://127.0.0.1:*"]

[component.store]
source = "{}"
route = "/store/..."
key_value_stores = ["default"]

[component.ticker]
source = "{}"
key_value_stores = ["default"]

[[component.ticker.schedule]]
cron = "* * * * * *"
path = "/kv/set?store=default&key=tick"

[component.cmd]
source = "{}"

[[component.cmd.schedule]]
cron = "* * * * * *"
args = ["exit", "0"]
"#,
        caller.display(),
        state.display(),
        state.display(),
        guest("cli-guest").display()
    );
    let dir = app_dir(&[("skiff.toml", &manifest)]);
    let mut command = common::skiff();
    command
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", &collector.url)
        .env("SSL_CERT_FILE", collector.ca_file.as_ref().unwrap().path())
        .env("OTEL_BSP_SCHEDULE_DELAY", "100")
        .env("OTEL_SERVICE_NAME", "edge-7");
    let manifest = dir.path().join("skiff.toml");
    let mut server = Server::start_with(
        command,
        &[
            "up",
            "--metrics-listen",
            "127.0.0.1:0",
            manifest.to_str().unwrap(),
        ],
    );

    // A request inside a trace: skiff continues it, and passes it on to the upstream.
    let client_trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let client_span = "00f067aa0ba902b7";
    let response = client()
        .get(server.url(&format!("/caller/fetch?url={}/hop", upstream.url)))
        .header("traceparent", format!("00-{client_trace}-{client_span}-01"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.text().await.unwrap(), "status=200");
    let hop_parent = {
        let received = upstream.received.lock().unwrap();
        let hop = received
            .iter()
            .find(|r| r.path == "/hop")
            .expect("the upstream was called");
        let traceparent = hop.headers["traceparent"].to_str().unwrap().to_string();
        let parts: Vec<&str> = traceparent.split('-').collect();
        assert_eq!(parts.len(), 4, "{traceparent}");
        assert_eq!(
            (parts[0], parts[1], parts[3]),
            ("00", client_trace, "01"),
            "{traceparent}"
        );
        assert_ne!(
            parts[2], client_span,
            "the upstream's parent is skiff's span: {traceparent}"
        );
        parts[2].to_string()
    };

    // A request outside any trace starts one; its key-value call is a span of it.
    let response = client()
        .post(server.url("/store/kv/set?store=default&key=greeting"))
        .body("hello")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);

    // The guest's output is logged with the trace id of its request.
    let logged_trace = "0af7651916cd43dd8448eb211c80319c";
    let response = client()
        .get(server.url("/caller/log"))
        .header(
            "traceparent",
            format!("00-{logged_trace}-b7ad6b7169203331-01"),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let logs = server.wait_for_log(logged_trace);
    assert!(
        logs.lines()
            .any(|line| line.contains(logged_trace) && line.contains("component=caller")),
        "{logs}"
    );

    // The runtime's metrics count instantiations, outbound and key-value calls.
    let text = server.metrics().await;
    let labels = |component: &str| format!(r#"tenant="",app="traced",component="{component}""#);
    for series in [
        format!(
            "skiff_instantiate_seconds_count{{{}}} 2\n",
            labels("caller")
        ),
        format!("skiff_instantiate_seconds_count{{{}}} 1\n", labels("store")),
        format!(
            r#"skiff_outbound_requests_total{{{},outcome="response"}} 1"#,
            labels("caller")
        ) + "\n",
        format!(
            r#"skiff_keyvalue_operations_total{{{},operation="open",outcome="ok"}} 1"#,
            labels("store")
        ) + "\n",
        format!(
            r#"skiff_keyvalue_operations_total{{{},operation="set",outcome="ok"}} 1"#,
            labels("store")
        ) + "\n",
    ] {
        assert!(text.contains(&series), "no `{series}` in\n{text}");
    }

    // Scheduled runs are traced too: wait for one of each kind.
    server.wait_for_log("scheduled run done schedule=/traced/ticker/0");
    server.wait_for_log("scheduled run done schedule=/traced/cmd/0");

    // Spans are exported in batches; stopping skiff sends what is still queued.
    let status = std::process::Command::new("kill")
        .args(["-TERM", &server.pid().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let started = std::time::Instant::now();
    while server.child().try_wait().unwrap().is_none() {
        assert!(
            started.elapsed() < std::time::Duration::from_secs(30),
            "skiff did not stop"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let spans = exported_spans(&collector);
    // The operator's name for the service wins over skiff's default.
    assert!(
        spans
            .iter()
            .all(|(service, _)| service.contains("\"edge-7\"")),
        "service.name: {:?}",
        spans.first().map(|(service, _)| service)
    );
    let find = |trace: &str, name: &str| {
        let matching: Vec<_> = spans
            .iter()
            .map(|(_, span)| span)
            .filter(|span| hex(&span.trace_id) == trace && span.name == name)
            .collect();
        assert_eq!(
            matching.len(),
            1,
            "one span `{name}` in trace {trace}; all: {:?}",
            spans
                .iter()
                .map(|(_, s)| (&s.name, hex(&s.trace_id)))
                .collect::<Vec<_>>()
        );
        matching[0].clone()
    };

    // Trace 1: the client's span > GET /caller/... > instantiate, handle > GET (outbound).
    let request = find(client_trace, "GET /caller/...");
    assert_eq!(request.kind, SpanKind::Server as i32);
    assert_eq!(hex(&request.parent_span_id), client_span);
    assert_eq!(
        attribute(&request, "http.route").as_deref(),
        Some("/caller/...")
    );
    assert_eq!(
        attribute(&request, "http.response.status_code").as_deref(),
        Some("200")
    );
    assert_eq!(attribute(&request, "skiff.app").as_deref(), Some("traced"));
    let instantiate = find(client_trace, "instantiate");
    assert_eq!(instantiate.parent_span_id, request.span_id);
    let handle = find(client_trace, "wasi:http/incoming-handler.handle");
    assert_eq!(handle.parent_span_id, request.span_id);
    assert!(instantiate.end_time_unix_nano <= handle.start_time_unix_nano);
    let outbound = find(client_trace, "GET");
    assert_eq!(outbound.kind, SpanKind::Client as i32);
    assert_eq!(outbound.parent_span_id, handle.span_id);
    assert_eq!(
        hex(&outbound.span_id),
        hop_parent,
        "the upstream's parent is the client span"
    );
    assert_eq!(
        attribute(&outbound, "url.full"),
        Some(format!("{}/hop", upstream.url))
    );
    assert_eq!(
        attribute(&outbound, "http.response.status_code").as_deref(),
        Some("200")
    );

    // Trace 2: a new trace, POST /store/... > handle > set default (key-value).
    let (_, store_request) = spans
        .iter()
        .find(|(_, span)| span.name == "POST /store/...")
        .expect("a span for the key-value request");
    assert!(
        store_request.parent_span_id.is_empty(),
        "a new trace has no parent"
    );
    let store_trace = hex(&store_request.trace_id);
    assert_ne!(store_trace, client_trace);
    let handle = find(&store_trace, "wasi:http/incoming-handler.handle");
    assert_eq!(handle.parent_span_id, store_request.span_id);
    let set = find(&store_trace, "set default");
    assert_eq!(set.kind, SpanKind::Client as i32);
    assert_eq!(set.parent_span_id, handle.span_id);
    assert_eq!(attribute(&set, "db.operation.name").as_deref(), Some("set"));

    // A scheduled run of an HTTP component: a trace of its own, named after its schedule,
    // with the same spans below it as a request's.
    let (_, run) = spans
        .iter()
        .find(|(_, span)| span.name == "POST component.ticker.schedule[0]")
        .expect("a span for the scheduled run");
    assert!(run.parent_span_id.is_empty());
    assert_eq!(attribute(run, "url.path").as_deref(), Some("/kv/set"));
    let run_trace = hex(&run.trace_id);
    let handle = find(&run_trace, "wasi:http/incoming-handler.handle");
    assert_eq!(handle.parent_span_id, run.span_id);
    assert_eq!(
        find(&run_trace, "set default").parent_span_id,
        handle.span_id
    );
    // A scheduled command: its span, with its exit code.
    let (_, command) = spans
        .iter()
        .find(|(_, span)| span.name == "run component.cmd.schedule[0]")
        .expect("a span for the scheduled command");
    assert_eq!(
        attribute(command, "process.exit.code").as_deref(),
        Some("0")
    );
    assert_eq!(
        attribute(command, "skiff.trigger").as_deref(),
        Some("schedule")
    );
}
