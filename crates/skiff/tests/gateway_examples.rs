//! The gateway examples, built from source and run under the real `skiff up`:
//!
//! - `examples/chaining`: `front` calls `pricing` in process; `pricing` has no route.
//! - `examples/gateway`: the `jwt` and `limit` middleware components in front of the static C
//!   server of `examples/gateway/service`, run in a real `crun` container (host network). The
//!   test makes its own tokens (HS256 with ring's HMAC, RS256 with the example's demo key).
//!
//! Each example's guests are built with cargo for `wasm32-wasip2` into the target folder
//! (`example-guests/NAME`), once per test process; cargo's lock serialises concurrent builders.

#![allow(clippy::unwrap_used, clippy::expect_used)] // A panic here is a failure with its message.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use common::{Server, client, repo_root};

// ---- building an example ------------------------------------------------------------------

fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from) {
        Some(dir) if dir.is_absolute() => dir,
        Some(dir) => repo_root().join(dir),
        None => repo_root().join("target"),
    }
}

/// Builds `examples/NAME` (its own Cargo workspace) for `wasm32-wasip2`, once per test
/// process, and returns the folder holding its `.wasm` files.
fn build_example(name: &'static str) -> PathBuf {
    static BUILT: OnceLock<std::sync::Mutex<Vec<&'static str>>> = OnceLock::new();
    let out = target_dir().join("example-guests").join(name);
    let built = BUILT.get_or_init(Default::default);
    let mut built = built.lock().unwrap();
    if !built.contains(&name) {
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let status = Command::new(cargo)
            .args([
                "build",
                "--release",
                "--target",
                "wasm32-wasip2",
                "--manifest-path",
            ])
            .arg(repo_root().join("examples").join(name).join("Cargo.toml"))
            .arg("--target-dir")
            .arg(&out)
            .status()
            .expect("running cargo build");
        assert!(status.success(), "building examples/{name} failed");
        built.push(name);
    }
    out.join("wasm32-wasip2/release")
}

/// A copy of `examples/NAME`'s `skiff.toml` (edited by `edit`), its `folders` and its freshly
/// built `components`, laid out as the manifest expects, in a temporary folder.
fn example_app(
    name: &'static str,
    components: &[&str],
    folders: &[&str],
    edit: impl FnOnce(String) -> String,
) -> tempfile::TempDir {
    let example = repo_root().join("examples").join(name);
    let built = build_example(name);
    let dir = tempfile::tempdir().unwrap();
    let manifest = std::fs::read_to_string(example.join("skiff.toml")).unwrap();
    std::fs::write(dir.path().join("skiff.toml"), edit(manifest)).unwrap();
    for component in components {
        let file = format!("{component}.wasm");
        std::fs::copy(built.join(&file), dir.path().join(&file)).unwrap();
    }
    for folder in folders {
        copy_dir(&example.join(folder), &dir.path().join(folder));
    }
    dir
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
    }
}

/// A request of `path` with `headers`: status, headers, body.
async fn request(
    server: &Server,
    path: &str,
    headers: &[(&str, &str)],
) -> (u16, reqwest::header::HeaderMap, String) {
    let mut request = client().get(server.url(path));
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let head = response.headers().clone();
    (status, head, response.text().await.unwrap())
}

fn header<'a>(head: &'a reqwest::header::HeaderMap, name: &str) -> &'a str {
    head.get(name)
        .map(|v| v.to_str().unwrap())
        .unwrap_or_else(|| panic!("no `{name}` header in {head:?}"))
}

// ---- chaining -----------------------------------------------------------------------------

#[tokio::test]
async fn the_chaining_example_composes_an_answer_in_process_and_hides_pricing() {
    let dir = example_app("chaining", &["front", "pricing"], &[], |m| m);
    let server = Server::start(&["up", dir.path().join("skiff.toml").to_str().unwrap()]);

    let (status, _, body) = request(&server, "/", &[]).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body,
        "A coffee costs 3.20 EUR.\n(priced by the pricing component, called in process)\n"
    );
    let (status, _, body) = request(&server, "/?item=tea", &[]).await;
    assert_eq!(status, 200, "{body}");
    assert!(body.starts_with("A tea costs 2.50 EUR.\n"), "{body}");
    let (status, _, body) = request(&server, "/?item=caviar", &[]).await;
    assert_eq!(status, 404, "{body}");
    assert_eq!(body, "We do not sell caviar.\n");

    // `pricing` has no route: skiff lists only front's, and no path, host name or absolute
    // request target reaches it. Whatever comes from outside is front's (a 404 in text, never
    // pricing's JSON).
    let routes = server.stdout_lines.join("\n");
    assert!(routes.contains("front: "), "{routes}");
    assert!(!routes.contains("pricing"), "{routes}");
    for headers in [&[][..], &[("host", "pricing.skiff.internal")][..]] {
        let (status, _, body) = request(&server, "/price?item=coffee", headers).await;
        assert_eq!(status, 404, "{headers:?}: {body}");
        assert!(body.starts_with("not found"), "{headers:?}: {body}");
    }
    let raw = raw_get(&server, "http://pricing.skiff.internal/price?item=coffee");
    assert!(raw.starts_with("HTTP/1.1 404"), "{raw}");
    assert!(!raw.contains("price_cents"), "{raw}");
    // A client cannot pass for `front` either: `skiff-caller` from outside is dropped.
    let (status, _, body) = request(&server, "/", &[("skiff-caller", "admin")]).await;
    assert_eq!(status, 200, "{body}");
}

/// A GET with an absolute-form request target (`GET http://host/path HTTP/1.1`), as a proxy
/// client sends it: the whole answer as text.
fn raw_get(server: &Server, target: &str) -> String {
    use std::io::{Read, Write};
    let addr = server.url.trim_start_matches("http://");
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    write!(
        stream,
        "GET {target} HTTP/1.1\r\nhost: pricing.skiff.internal\r\nconnection: close\r\n\r\n"
    )
    .unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    answer
}

// ---- gateway ------------------------------------------------------------------------------

/// The demo HS256 secret the test gives skiff.
const SECRET: &str = "test-only-hs256-secret-0123456789abcdef";
/// The RS256 key id of `examples/gateway/jwks/jwks.json`.
const KID: &str = "demo-rs256-1";

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// Claims the example's manifest accepts (its default `aud` and `iss`), for `sub`, expiring
/// `exp_in` seconds from now.
fn claims(sub: &str, exp_in: i64) -> serde_json::Value {
    let now = now() as i64;
    serde_json::json!({
        "sub": sub, "aud": "demo-api", "iss": "demo-issuer", "iat": now, "exp": now + exp_in,
    })
}

fn signing_input(header: &serde_json::Value, claims: &serde_json::Value) -> String {
    format!(
        "{}.{}",
        b64(header.to_string().as_bytes()),
        b64(claims.to_string().as_bytes())
    )
}

fn hs256(claims: &serde_json::Value, secret: &[u8]) -> String {
    let input = signing_input(&serde_json::json!({"alg": "HS256", "typ": "JWT"}), claims);
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret);
    let tag = ring::hmac::sign(&key, input.as_bytes());
    format!("{input}.{}", b64(tag.as_ref()))
}

/// The example's demo private key (PKCS#8 PEM), as DER.
fn demo_private_key() -> Vec<u8> {
    let pem =
        std::fs::read_to_string(repo_root().join("examples/gateway/demo-keys/rs256-private.pem"))
            .unwrap();
    let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    STANDARD.decode(body).unwrap()
}

fn rs256(claims: &serde_json::Value, kid: &str) -> String {
    let input = signing_input(
        &serde_json::json!({"alg": "RS256", "typ": "JWT", "kid": kid}),
        claims,
    );
    let key = ring::signature::RsaKeyPair::from_pkcs8(&demo_private_key()).unwrap();
    let mut signature = vec![0u8; key.public().modulus_len()];
    key.sign(
        &ring::signature::RSA_PKCS1_SHA256,
        &ring::rand::SystemRandom::new(),
        input.as_bytes(),
        &mut signature,
    )
    .unwrap();
    format!("{input}.{}", b64(&signature))
}

/// Why the gateway test cannot run here, if it cannot.
fn container_unsupported() -> Option<String> {
    let found = |tool: &str| {
        Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    if !found("crun") {
        return Some("crun is not installed (Debian: apt-get install crun)".into());
    }
    if !found("gcc") {
        return Some("gcc is not installed (Debian: apt-get install gcc libc6-dev)".into());
    }
    let uid = Command::new("id").arg("-u").output().ok()?;
    if String::from_utf8_lossy(&uid.stdout).trim() != "0" {
        return Some("crun needs root here, and the tests do not run as root".into());
    }
    None
}

/// The example's service in a crun container, killed and deleted when dropped (also when the
/// test fails).
struct Container {
    id: String,
    child: Child,
}

impl Container {
    fn crun() -> Command {
        let mut command = Command::new("bash");
        command.arg(repo_root().join("examples/gateway/service/crun.sh"));
        command
    }

    fn start(bundle: &Path, port: u16) -> Container {
        let id = format!("skiff-test-gateway-{}", std::process::id());
        // A container of that name left by an earlier run of this process id would block ours.
        let _ = Self::crun()
            .args(["delete", "-f", &id])
            .stderr(Stdio::null())
            .status();
        let child = Self::crun()
            .args(["run", "--bundle"])
            .arg(bundle)
            .arg(&id)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .expect("starting crun");
        let mut container = Container { id, child };
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Some(status) = container.child.try_wait().unwrap() {
                panic!("the container exited before it listened: {status}");
            }
            assert!(Instant::now() < deadline, "the container did not listen");
            std::thread::sleep(Duration::from_millis(20));
        }
        container
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        let _ = Self::crun()
            .args(["kill", &self.id, "KILL"])
            .stderr(Stdio::null())
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = Self::crun()
            .args(["delete", "-f", &self.id])
            .stderr(Stdio::null())
            .status();
    }
}

#[tokio::test]
async fn the_gateway_example_checks_tokens_and_limits_rates_in_front_of_a_container() {
    if let Some(why) = container_unsupported() {
        eprintln!("SKIPPED the gateway example test: {why}");
        return;
    }
    let port = common::upstream::closed_port();
    let work = tempfile::tempdir().unwrap();
    let bundle = work.path().join("bundle");
    let status = Command::new("bash")
        .arg(repo_root().join("examples/gateway/service/make-bundle.sh"))
        .arg(&bundle)
        .arg(port.to_string())
        .status()
        .unwrap();
    assert!(status.success(), "make-bundle.sh failed");
    let _container = Container::start(&bundle, port);

    let dir = example_app("gateway", &["jwt", "limit"], &["jwks"], |manifest| {
        let old = "url = \"http://127.0.0.1:8080\"";
        assert!(manifest.contains(old), "{manifest}");
        manifest.replace(old, &format!("url = \"http://127.0.0.1:{port}\""))
    });
    let mut command = common::skiff();
    command
        .env("SKIFF_VAR_JWT_HS256_SECRET", SECRET)
        // A long window, so that no window ends in the middle of the test's requests.
        .env("SKIFF_VAR_RATE_WINDOW_SECONDS", "3600");
    let server = Server::start_with(
        command,
        &["up", dir.path().join("skiff.toml").to_str().unwrap()],
    );
    let bearer = |token: &str| format!("Bearer {token}");

    // No token: 401 from `jwt`, with a challenge.
    let (status, head, body) = request(&server, "/api/hello", &[]).await;
    assert_eq!(status, 401, "{body}");
    assert_eq!(
        header(&head, "www-authenticate"),
        "Bearer realm=\"gateway\""
    );
    assert!(body.contains("\"error\":\"missing_token\""), "{body}");

    // A valid HS256 token: the container's answer, with the verified subject passed on and
    // the client's own `x-jwt-sub` dropped.
    let token = hs256(&claims("alice", 300), SECRET.as_bytes());
    let (status, head, body) = request(
        &server,
        "/api/hello?x=1",
        &[("authorization", &bearer(&token)), ("x-jwt-sub", "mallory")],
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body,
        "hello from the container\nrequest: GET /api/hello?x=1 HTTP/1.1\nx-jwt-sub: alice\n"
    );
    assert_eq!(header(&head, "x-ratelimit-limit"), "5");
    assert_eq!(header(&head, "x-ratelimit-remaining"), "4");

    // A valid RS256 token, its key picked by `kid` from the JWKS file.
    let token = rs256(&claims("bob", 300), KID);
    let (status, _, body) =
        request(&server, "/api/hello", &[("authorization", &bearer(&token))]).await;
    assert_eq!(status, 200, "{body}");
    assert!(body.ends_with("x-jwt-sub: bob\n"), "{body}");

    // Refused tokens: 401 with `error="invalid_token"` and why.
    let mut tampered = rs256(&claims("bob", 300), KID);
    {
        // Another payload under bob's signature.
        let parts: Vec<&str> = tampered.split('.').collect();
        let forged = b64(claims("root", 300).to_string().as_bytes());
        tampered = format!("{}.{forged}.{}", parts[0], parts[2]);
    }
    let public_pem =
        std::fs::read(repo_root().join("examples/gateway/demo-keys/rs256-public.pem")).unwrap();
    let none = format!(
        "{}.",
        signing_input(
            &serde_json::json!({"alg": "none", "typ": "JWT"}),
            &claims("eve", 300)
        )
    );
    let mut wrong_audience = claims("alice", 300);
    wrong_audience["aud"] = "another-api".into();
    let mut not_yet = claims("alice", 3600);
    not_yet["nbf"] = (now() + 600).into();
    let refused = [
        (
            "expired",
            hs256(&claims("alice", -120), SECRET.as_bytes()),
            "expired",
        ),
        ("alg none", none, "algorithm is not accepted"),
        (
            "wrong HS256 key",
            hs256(
                &claims("alice", 300),
                b"another-secret-another-secret-another",
            ),
            "signature does not verify",
        ),
        (
            "RS256 with a changed payload",
            tampered,
            "signature does not verify",
        ),
        (
            "HS256 signed with the RSA public key (alg confusion)",
            hs256(&claims("alice", 300), &public_pem),
            "signature does not verify",
        ),
        (
            "unknown kid",
            rs256(&claims("bob", 300), "no-such-key"),
            "unknown key id",
        ),
        (
            "wrong audience",
            hs256(&wrong_audience, SECRET.as_bytes()),
            "another audience",
        ),
        (
            "not valid yet",
            hs256(&not_yet, SECRET.as_bytes()),
            "not valid yet",
        ),
        ("garbage", "not-a-jwt".to_string(), "three parts"),
    ];
    for (what, token, why) in refused {
        let (status, head, body) =
            request(&server, "/api/hello", &[("authorization", &bearer(&token))]).await;
        assert_eq!(status, 401, "{what}: {body}");
        let challenge = header(&head, "www-authenticate");
        assert!(
            challenge.starts_with("Bearer error=\"invalid_token\", error_description=\""),
            "{what}: {challenge}"
        );
        assert!(challenge.contains(why), "{what}: {challenge}");
        assert!(
            body.contains("\"error\":\"invalid_token\""),
            "{what}: {body}"
        );
        assert!(!body.contains("hello from the container"), "{what}: {body}");
    }

    // The rate limit: 5 requests per window per subject; the 6th is refused while another
    // subject goes on.
    let carol = hs256(&claims("carol", 300), SECRET.as_bytes());
    let dave = hs256(&claims("dave", 300), SECRET.as_bytes());
    let left = 3600 - now() % 3600;
    if left < 30 {
        // Too close to the end of the window: wait for the next one.
        tokio::time::sleep(Duration::from_secs(left + 1)).await;
    }
    for n in 1..=5 {
        let (status, head, body) =
            request(&server, "/api/hello", &[("authorization", &bearer(&carol))]).await;
        assert_eq!(status, 200, "request {n}: {body}");
        assert_eq!(
            header(&head, "x-ratelimit-remaining"),
            (5 - n).to_string(),
            "request {n}"
        );
    }
    let (status, head, body) =
        request(&server, "/api/hello", &[("authorization", &bearer(&carol))]).await;
    assert_eq!(status, 429, "{body}");
    let retry_after: u64 = header(&head, "retry-after").parse().unwrap();
    assert!((1..=3600).contains(&retry_after), "{retry_after}");
    assert_eq!(header(&head, "x-ratelimit-limit"), "5");
    assert_eq!(header(&head, "x-ratelimit-remaining"), "0");
    assert!(body.contains("\"error\":\"rate_limited\""), "{body}");
    let (status, head, body) =
        request(&server, "/api/hello", &[("authorization", &bearer(&dave))]).await;
    assert_eq!(status, 200, "{body}");
    assert!(body.ends_with("x-jwt-sub: dave\n"), "{body}");
    assert_eq!(header(&head, "x-ratelimit-remaining"), "4");

    // The health check reaches the container too: the upstream was never marked down.
    let logs = server.logs();
    assert!(!logs.contains("health check failed"), "{logs}");
}

#[tokio::test]
async fn the_limit_middleware_alone_counts_requests_by_client_ip() {
    // The example's `limit` component in front of a test upstream, with no token check before
    // it: clients are told apart by `skiff-client-addr`.
    let upstream = common::upstream::TestUpstream::start("svc").await;
    let built = build_example("gateway");
    let manifest = format!(
        "[app]\nname = \"limit-alone\"\n\n\
         [component.limit]\nsource = \"limit.wasm\"\nkey_value_stores = [\"default\"]\n\
         variables = {{ limit = \"2\", window_seconds = \"3600\" }}\n\n\
         [upstream.svc]\nurl = \"{}\"\nroute = \"/...\"\nmiddleware = [\"limit\"]\n",
        upstream.url()
    );
    let dir = common::app_dir(&[("skiff.toml", &manifest)]);
    std::fs::copy(built.join("limit.wasm"), dir.path().join("limit.wasm")).unwrap();
    let server = Server::start(&["up", dir.path().join("skiff.toml").to_str().unwrap()]);

    let left = 3600 - now() % 3600;
    if left < 30 {
        tokio::time::sleep(Duration::from_secs(left + 1)).await;
    }
    for remaining in ["1", "0"] {
        let (status, head, body) = request(&server, "/x", &[]).await;
        assert_eq!(status, 200, "{body}");
        assert!(body.starts_with("upstream svc\n"), "{body}");
        assert_eq!(header(&head, "x-ratelimit-remaining"), remaining);
    }
    let (status, head, body) = request(&server, "/x", &[]).await;
    assert_eq!(status, 429, "{body}");
    assert!(header(&head, "retry-after").parse::<u64>().unwrap() >= 1);
    assert_eq!(
        upstream.requests(),
        2,
        "the refused request went no further"
    );
}
