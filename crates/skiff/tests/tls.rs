//! TLS where skiff meets the network as a server or a client of its own parts: the management
//! API over HTTPS (`skiff server --api-tls-cert/--api-tls-key`), the CLI trusting a private CA
//! (`skiff login --ca-cert`, SKIFF_CA_CERT), key-value stores on a Redis that speaks only TLS
//! (`rediss://`), and `https://` upstreams trusted by an app's own CA file (`tls.ca`). Every
//! certificate is made here, by a CA made here (rcgen).

#![allow(clippy::unwrap_used, clippy::expect_used)] // A panic here is a failure with its message.

mod common;

use std::io::{Read as _, Write as _};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::ca::Ca;
use common::host::{ADMIN_TOKEN, Host, http_app};
use common::{Server, app_dir, client, fresh_data_dir, guest, sigterm, skiff, wait_for_exit};
use tokio_rustls::rustls;

fn text(path: &Path) -> &str {
    path.to_str().unwrap()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn assert_ok(output: &Output, what: &str) -> String {
    assert!(
        output.status.success(),
        "{what} failed: {}\n{}",
        stdout(output),
        stderr(output)
    );
    stdout(output)
}

/// A `skiff server` whose management API speaks HTTPS with `cert` and `key`.
fn https_host(cert: &Path, key: &Path) -> Host {
    let host = Host::start_in(
        fresh_data_dir().join("server"),
        &["--api-tls-cert", text(cert), "--api-tls-key", text(key)],
    );
    assert!(host.api.starts_with("https://127.0.0.1:"), "{}", host.api);
    host
}

/// The `skiff` CLI with `config` as its client config file and nothing else to go on: no
/// server, token or CA in its environment.
fn cli_with_config(config: &Path, args: &[&str]) -> Command {
    let mut command = skiff();
    command
        .args(args)
        .env("SKIFF_CONFIG", config)
        .env_remove("SKIFF_SERVER")
        .env_remove("SKIFF_TOKEN")
        .env_remove("SKIFF_ADMIN_TOKEN")
        .env_remove("SKIFF_CA_CERT")
        .stdin(Stdio::null());
    command
}

/// The address `host:port` of an `https://` URL.
fn address(url: &str) -> &str {
    url.strip_prefix("https://").unwrap()
}

#[tokio::test]
async fn the_management_api_speaks_https_and_the_cli_trusts_the_private_ca_it_is_given() {
    let ca = Ca::new("api");
    let (cert, key) = ca.server_files("api");
    let host = https_host(&cert, &key);
    let home = tempfile::tempdir().unwrap();
    let config = home.path().join("config.toml");

    // The built-in public CAs do not vouch for this server: the CLI refuses, and says how to
    // trust its CA.
    let out = host.cli(ADMIN_TOKEN, &["tenants", "list"]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("presented a certificate that is not trusted")
            && err.contains("skiff login --ca-cert")
            && err.contains("SKIFF_CA_CERT"),
        "{err}"
    );
    let out = cli_with_config(
        &config,
        &["login", "--server", &host.api, "--token", ADMIN_TOKEN],
    )
    .output()
    .unwrap();
    assert!(!out.status.success());
    assert!(stderr(&out).contains("--ca-cert"), "{}", stderr(&out));
    assert!(!config.exists(), "login saved after a refusal");

    // With the CA: logged in, and the CA saved with the server.
    let out = cli_with_config(
        &config,
        &[
            "login",
            "--server",
            &host.api,
            "--token",
            ADMIN_TOKEN,
            "--ca-cert",
            text(&ca.file()),
        ],
    )
    .output()
    .unwrap();
    let said = assert_ok(&out, "login --ca-cert");
    assert!(said.contains("as admin"), "{said}");
    let saved = std::fs::read_to_string(&config).unwrap();
    assert!(
        saved.contains(&format!("ca_cert = \"{}\"", ca.file().display())),
        "{saved}"
    );

    // Later commands use the saved server, token and CA.
    let out = cli_with_config(&config, &["tenants", "create", "acme"])
        .output()
        .unwrap();
    let tenant = assert_ok(&out, "tenants create")
        .lines()
        .last()
        .unwrap()
        .trim()
        .to_string();
    assert!(tenant.starts_with("skf_"), "{tenant}");

    // Logging in again to the same server keeps its CA without --ca-cert; the tenant deploys.
    let out = cli_with_config(&config, &["login", "--token", &tenant])
        .output()
        .unwrap();
    assert_ok(&out, "login as the tenant");
    assert!(
        std::fs::read_to_string(&config)
            .unwrap()
            .contains("ca_cert")
    );
    let app = http_app(1);
    let out = cli_with_config(
        &config,
        &["deploy", "--name", "hello", app.path().to_str().unwrap()],
    )
    .output()
    .unwrap();
    assert_ok(&out, "deploy over https");
    assert_eq!(host.get("hello", "/env/VERSION").await, (200, "1".into()));

    // SKIFF_CA_CERT does the same without a saved login.
    let out = skiff()
        .args(["apps", "list", "--json"])
        .env("SKIFF_SERVER", &host.api)
        .env("SKIFF_TOKEN", &tenant)
        .env("SKIFF_CA_CERT", ca.file())
        .output()
        .unwrap();
    assert!(assert_ok(&out, "apps list with SKIFF_CA_CERT").contains("hello"));
    // A CA file that is not one is named, with the fix.
    let out = skiff()
        .args(["apps", "list"])
        .env("SKIFF_SERVER", &host.api)
        .env("SKIFF_TOKEN", &tenant)
        .env("SKIFF_CA_CERT", &key)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains(&format!("the CA certificate {}", key.display()))
            && err.contains("holds no certificate")
            && err.contains("SKIFF_CA_CERT"),
        "{err}"
    );

    // Plain HTTP to the HTTPS port gets no API, only a 400 that says to use https://.
    let plain = format!("http://{}", address(&host.api));
    let response = client()
        .get(format!("{plain}/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    assert!(response.text().await.unwrap().contains("use https://"));
    let out = skiff()
        .args(["apps", "list"])
        .env("SKIFF_SERVER", &plain)
        .env("SKIFF_TOKEN", &tenant)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("speaks HTTPS only: use https:// instead of http://"),
        "{}",
        stderr(&out)
    );

    // HTTP/2, chosen by ALPN, serves the API too.
    let (status, protocol) = http2_get(address(&host.api), &ca.pem, "/healthz").await;
    assert_eq!((status, protocol.as_slice()), (200, &b"h2"[..]));
}

/// A GET of `path` over TLS (trusting the CA `ca_pem`) that offers only HTTP/2: the status and
/// the protocol the server chose.
async fn http2_get(addr: &str, ca_pem: &str, path: &str) -> (u16, Vec<u8>) {
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls::pki_types::CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(cert.unwrap()).unwrap();
    }
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec()];
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
        .unwrap();
    let protocol = tls.get_ref().1.alpn_protocol().unwrap_or_default().to_vec();
    let (mut sender, connection) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(tls),
    )
    .await
    .unwrap();
    let connection = tokio::spawn(connection);
    let request = http::Request::get(format!("https://{addr}{path}"))
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .unwrap();
    let status = sender
        .send_request(request)
        .await
        .unwrap()
        .status()
        .as_u16();
    // Without a sender the connection closes; waiting for it leaves none open behind.
    drop(sender);
    tokio::time::timeout(Duration::from_secs(10), connection)
        .await
        .expect("the HTTP/2 connection did not close")
        .unwrap()
        .unwrap();
    (status, protocol)
}

#[tokio::test]
async fn a_client_that_never_shakes_hands_holds_up_no_one_and_is_cut_off() {
    let ca = Ca::new("silent");
    let (cert, key) = ca.server_files("api");
    let host = https_host(&cert, &key);
    let addr = address(&host.api).to_string();

    // One client connects and says nothing; another sends bytes that are no TLS.
    let mut silent = std::net::TcpStream::connect(&addr).unwrap();
    let mut garbage = std::net::TcpStream::connect(&addr).unwrap();
    garbage
        .write_all(&[0x16, 0x03, 0x01, 0xff, 0xff, 0, 0, 0])
        .unwrap();
    let opened = Instant::now();

    // Meanwhile every other caller is served, one after another.
    for _ in 0..3 {
        let out = skiff()
            .args(["whoami"])
            .env("SKIFF_SERVER", &host.api)
            .env("SKIFF_TOKEN", ADMIN_TOKEN)
            .env("SKIFF_CA_CERT", ca.file())
            .output()
            .unwrap();
        assert!(assert_ok(&out, "whoami").contains("admin"));
    }

    // The silent one is closed once the handshake's bound (10 s) is over, not kept for ever.
    silent
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut buffer = [0u8; 64];
    let read = silent.read(&mut buffer);
    let still_open = read.as_ref().is_err_and(|e| {
        matches!(
            e.kind(),
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
        )
    });
    assert!(
        !still_open && !matches!(read, Ok(n) if n > 0),
        "the silent connection is still open after {:?}: {read:?}",
        opened.elapsed()
    );
    // And the server still serves.
    let (status, _) = http2_get(&addr, &ca.pem, "/healthz").await;
    assert_eq!(status, 200);
    drop(garbage);

    // A handshake still pending holds up no shutdown either: SIGTERM ends the server at once,
    // well within its grace period (10 s).
    let _pending = std::net::TcpStream::connect(&addr).unwrap();
    let mut host = host;
    sigterm(host.server.pid());
    let status = wait_for_exit(host.server.child(), Duration::from_secs(8))
        .expect("the server did not exit on SIGTERM while a handshake was pending");
    assert!(status.success(), "{status:?}\n{}", host.server.logs());
}

#[test]
fn the_server_refuses_to_start_with_a_key_that_is_not_the_certificates() {
    let ca = Ca::new("mismatch");
    let (cert, _) = ca.server_files("one");
    let (_, other_key) = ca.server_files("two");
    let start = |args: &[&str]| {
        let mut all = vec![
            "server",
            "--listen",
            "127.0.0.1:0",
            "--api-listen",
            "127.0.0.1:0",
        ];
        all.extend_from_slice(args);
        skiff()
            .args(&all)
            .env("SKIFF_ADMIN_TOKEN", ADMIN_TOKEN)
            .env_remove("SKIFF_API_TLS_CERT")
            .env_remove("SKIFF_API_TLS_KEY")
            .output()
            .unwrap()
    };

    let out = start(&[
        "--api-tls-cert",
        text(&cert),
        "--api-tls-key",
        text(&other_key),
    ]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains(&format!("--api-tls-key {}", other_key.display()))
            && err.contains("is not the key of the certificate in --api-tls-cert"),
        "{err}"
    );
    assert!(!stdout(&out).contains("Management API"), "{}", stdout(&out));

    // Both flags or neither.
    let out = start(&["--api-tls-cert", text(&cert)]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("--api-tls-key"), "{}", stderr(&out));

    // A file that is not there is named, with its flag.
    let missing = ca.dir.path().join("missing.key");
    let out = start(&[
        "--api-tls-cert",
        text(&cert),
        "--api-tls-key",
        text(&missing),
    ]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains(&format!("cannot read --api-tls-key {}", missing.display())),
        "{err}"
    );
}

#[tokio::test]
async fn a_renewed_certificate_is_served_without_a_restart() {
    let first = Ca::new("first");
    let (cert, key) = first.server_files("api");
    let host = https_host(&cert, &key);
    let whoami = |ca: &Path| {
        skiff()
            .args(["whoami"])
            .env("SKIFF_SERVER", &host.api)
            .env("SKIFF_TOKEN", ADMIN_TOKEN)
            .env("SKIFF_CA_CERT", ca)
            .output()
            .unwrap()
    };
    assert_ok(&whoami(&first.file()), "whoami with the first CA");

    // A new certificate from another CA replaces both files, each by a rename, as
    // cert-manager's Secret volume does.
    let second = Ca::new("second");
    let (new_cert, new_key) = second.server_files("api");
    std::fs::rename(&new_key, &key).unwrap();
    std::fs::rename(&new_cert, &cert).unwrap();

    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let out = whoami(&second.file());
        if out.status.success() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the new certificate was not served: {}\nserver log:\n{}",
            stderr(&out),
            host.server.logs()
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    let out = whoami(&first.file());
    assert!(!out.status.success(), "the old certificate is still served");
}

// ---- rediss:// ---------------------------------------------------------------------------

/// A `redis-server` that speaks only TLS, with a certificate from `ca`, on a free port.
struct TlsRedis {
    child: std::process::Child,
    port: u16,
}

impl TlsRedis {
    fn start(ca: &Ca) -> TlsRedis {
        let (cert, key) = ca.server_files("redis");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new("redis-server")
            .args(["--port", "0", "--bind", "127.0.0.1"])
            .args(["--tls-port", &port.to_string()])
            .args(["--tls-cert-file", text(&cert), "--tls-key-file", text(&key)])
            .args(["--tls-ca-cert-file", text(&ca.file())])
            .args([
                "--tls-auth-clients",
                "no",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server is needed for these tests: apt-get install -y redis-server");
        common::wait_for_port(port, "redis-server (TLS)");
        TlsRedis { child, port }
    }
}

impl Drop for TlsRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test]
async fn an_apps_store_on_a_redis_that_speaks_only_tls_reads_back_what_it_wrote() {
    let ca = Ca::new("redis");
    let redis = TlsRedis::start(&ca);
    let wasm = guest("state-guest");
    let manifest = format!(
        "[app]\nname = \"tls\"\n\n[component.c]\nsource = \"{}\"\nroute = \"/...\"\n\
         key_value_stores = [\"default\"]\n",
        wasm.display()
    );
    let runtime = format!(
        "[key_value_store.default]\ntype = \"redis\"\nurl = \"rediss://127.0.0.1:{}\"\n",
        redis.port
    );
    let dir = app_dir(&[("skiff.toml", &manifest), ("runtime.toml", &runtime)]);
    let mut command = skiff();
    // The test's CA is the only one trusted for Redis: the system's store is not asked.
    command
        .env("SSL_CERT_FILE", ca.file())
        .env_remove("SSL_CERT_DIR");
    let server = Server::start_with(
        command,
        &[
            "up",
            "--runtime-config",
            text(&dir.path().join("runtime.toml")),
            text(&dir.path().join("skiff.toml")),
        ],
    );
    let http = client();
    let response = http
        .post(server.url("/kv/set?store=default&key=greeting"))
        .body("hello over TLS")
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let body = response.text().await.unwrap();
    assert_eq!((status, body.as_str()), (200, "ok"), "{}", server.logs());
    let response = http
        .get(server.url("/kv/get?store=default&key=greeting"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.text().await.unwrap(), "hello over TLS");

    // Without the test's CA, Redis' certificate is not trusted: the certificate is checked.
    let mut command = skiff();
    command
        .env_remove("SSL_CERT_FILE")
        .env_remove("SSL_CERT_DIR");
    let untrusting = Server::start_with(
        command,
        &[
            "up",
            "--runtime-config",
            text(&dir.path().join("runtime.toml")),
            text(&dir.path().join("skiff.toml")),
        ],
    );
    let response = http
        .get(untrusting.url("/kv/get?store=default&key=greeting"))
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let body = response.text().await.unwrap();
    assert_eq!(status, 503, "{body}");
    assert!(body.starts_with("store error: other("), "{body}");
}

/// An app whose upstreams all go to `url` (a TLS-only service), each trusting it in another
/// way, with `certs/ca.pem` from `ca` and the gateway guest as a middleware in front of one.
fn https_upstream_app(ca: &Ca, port: u16) -> tempfile::TempDir {
    let url = format!("https://127.0.0.1:{port}");
    let manifest = format!(
        r#"[app]
name = "tls-gateway"

[component.mw]
source = "gw.wasm"
environment = {{ MODE = "forward", ID = "mw" }}

[upstream.own-ca]
url = "{url}/base"
route = "/own/..."
middleware = ["mw"]
tls = {{ ca = "certs/ca.pem" }}

[upstream.by-name]
url = "{url}"
route = "/by-name/..."
tls = {{ ca = "certs/ca.pem", server_name = "localhost" }}
health_check = {{ path = "/healthz", interval = "2s" }}

[upstream.other-name]
url = "{url}"
route = "/other-name/..."
retries = 0
tls = {{ ca = "certs/ca.pem", server_name = "orders.example" }}

[upstream.public-roots]
url = "{url}"
route = "/public/..."
retries = 0

[upstream.plain]
url = "http://127.0.0.1:{port}"
route = "/plain/..."
retries = 0
"#
    );
    let dir = app_dir(&[("skiff.toml", &manifest)]);
    std::fs::create_dir(dir.path().join("certs")).unwrap();
    std::fs::copy(ca.file(), dir.path().join("certs/ca.pem")).unwrap();
    std::fs::copy(guest("gateway-guest"), dir.path().join("gw.wasm")).unwrap();
    dir
}

#[tokio::test]
async fn https_upstreams_are_trusted_by_the_apps_own_ca_for_the_name_it_gives() {
    let ca = Ca::new("upstream");
    let service = ca.tls_service("secure").await;
    let dir = https_upstream_app(&ca, service.addr.port());
    let toml = dir.path().join("skiff.toml");
    let server = Server::start(&["up", text(&toml)]);
    // Only the upstreams that trust the service's CA for the name in its certificate reach it.
    let (status, body) = common::get(&server, "/own/hello?x=1").await;
    assert_eq!(status, 200, "{body}");
    assert!(body.starts_with("upstream secure\n"), "{body}");
    assert!(body.contains("path=/base/own/hello?x=1\n"), "{body}");
    assert!(
        body.contains("x-seen-by=mw\n"),
        "through the middleware: {body}"
    );
    let (status, body) = common::get(&server, "/by-name/x").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(service.requests(), 2);
    // Health checks go over TLS too. (Their interval, 2 s, is also their timeout: a shorter one
    // fails them on a busy machine, and the address with them.)
    let checks = service.health_checks();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while service.health_checks() == checks {
        assert!(std::time::Instant::now() < deadline, "no health check came");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // A certificate for other names, one no public CA signed, a plain request to a TLS port:
    // each ends before any request reaches the service.
    for path in ["/other-name/x", "/public/x", "/plain/x"] {
        let (status, body) = common::get(&server, path).await;
        assert_eq!(status, 502, "{path}: {body}");
    }
    assert_eq!(service.requests(), 2);
    // The log says why, for the operator: the name, the issuer.
    let logs = server.wait_for_log("upstream=public-roots");
    for (upstream, why) in [
        ("other-name", "invalid peer certificate"),
        ("public-roots", "invalid peer certificate"),
    ] {
        assert!(
            logs.lines()
                .any(|line| line.contains(&format!("upstream={upstream}")) && line.contains(why)),
            "{upstream}: {why}?\n{logs}"
        );
    }
    assert!(logs.contains("orders.example"), "{logs}");
    assert!(logs.contains("UnknownIssuer"), "{logs}");
    drop(server);

    // On a shared host: the CA file travels in the bundle, and the app is served the same.
    let host = Host::start_in(
        fresh_data_dir().join("server"),
        &["--allow-private-outbound"],
    );
    let token = host.tenant("acme", &[]);
    host.deploy_ok(&token, dir.path(), "gw");
    let service_before = service.requests();
    let (status, body) = host.get("gw", "/own/deployed").await;
    assert_eq!(status, 200, "{body}\n{}", host.server.logs());
    assert!(body.contains("path=/base/own/deployed\n"), "{body}");
    assert_eq!(service.requests(), service_before + 1);
    drop(host);

    // Through a registry: the CA file is a layer of the app's image, and `skiff up REF` serves
    // the pulled app the same.
    let registry = common::registry::Registry::plain();
    let reference = format!("{}/apps/gw:v1", registry.addr);
    let (data, docker) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let cli = || {
        let mut command = skiff();
        command
            .env("SKIFF_DATA_DIR", data.path())
            .env("DOCKER_CONFIG", docker.path());
        command
    };
    let pushed = cli()
        .args(["push", &reference, text(dir.path())])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_ok(&pushed, "skiff push");
    let server = Server::start_with(cli(), &["up", &reference]);
    let (status, body) = common::get(&server, "/own/pulled").await;
    assert_eq!(status, 200, "{body}\n{}", server.logs());
    assert!(body.contains("path=/base/own/pulled\n"), "{body}");
}

#[tokio::test]
async fn an_upstream_resumes_only_the_tls_sessions_of_its_own_connections() {
    let ca = Ca::new("upstream");
    let service = ca.tls_service("secure").await;
    let url = format!("https://127.0.0.1:{}", service.addr.port());
    // Two upstreams to the same service, as two apps or two tenants could have.
    let manifest = format!(
        "[app]\nname = \"sessions\"\n\n\
         [upstream.a]\nurl = \"{url}\"\nroute = \"/a/...\"\ntls = {{ ca = \"ca.pem\" }}\n\n\
         [upstream.b]\nurl = \"{url}\"\nroute = \"/b/...\"\ntls = {{ ca = \"ca.pem\" }}\n"
    );
    let dir = app_dir(&[("skiff.toml", &manifest)]);
    std::fs::copy(ca.file(), dir.path().join("ca.pem")).unwrap();
    let server = Server::start(&["up", text(&dir.path().join("skiff.toml"))]);
    // The service closes each connection after one answer: every request shakes hands.
    let mut resumed = Vec::new();
    for path in ["/a/1", "/a/2", "/b/1", "/b/2"] {
        let (status, body) = common::get(&server, path).await;
        assert_eq!(status, 200, "{path}: {body}");
        resumed.push(service.resumed());
    }
    // `a` resumes its own session; `b`'s first handshake is a full one, though `a` just
    // spoke to the same server; then `b` resumes its own.
    assert_eq!(resumed, [0, 1, 1, 2]);
}

#[test]
fn a_ca_file_that_gives_no_certificate_stops_the_load_and_says_why() {
    let ca = Ca::new("upstream");
    let dir = https_upstream_app(&ca, 9);
    let toml = dir.path().join("skiff.toml");
    let big = vec![b'#'; (1 << 20) + 1];
    for (content, why) in [
        (b"hello\n".to_vec(), "holds no certificate"),
        (
            b"-----BEGIN CERTIFICATE-----\nnot base64!\n-----END CERTIFICATE-----\n".to_vec(),
            "is not valid PEM (certificate 1)",
        ),
        (big, "is larger than 1024 KiB"),
    ] {
        std::fs::write(dir.path().join("certs/ca.pem"), &content).unwrap();
        let mut child = skiff()
            .args(["up", "--listen", "127.0.0.1:0", text(&toml)])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let status = wait_for_exit(&mut child, Duration::from_secs(60)).expect("skiff up exits");
        assert!(!status.success());
        let mut stderr = String::new();
        child
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut stderr)
            .unwrap();
        assert!(stderr.contains("`upstream.own-ca.tls.ca`"), "{stderr}");
        assert!(stderr.contains(why), "{why}: {stderr}");
        assert!(stderr.contains("certs/ca.pem"), "{stderr}");
        assert!(
            stderr.contains("remove `ca` to trust the usual public roots"),
            "{stderr}"
        );
    }
}
