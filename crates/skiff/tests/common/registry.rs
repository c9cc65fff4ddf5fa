//! A real OCI registry for tests: Debian's `docker-registry` (the reference `distribution`
//! registry), on a free loopback port, storing in a temporary folder. Plain HTTP without auth,
//! or TLS with a self-signed certificate and htpasswd basic auth.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Registry {
    child: Option<Child>,
    /// `host:port`, as references name it.
    pub addr: String,
    dir: tempfile::TempDir,
    /// The certificate a client must trust (PEM), for a TLS registry.
    pub ca_file: Option<PathBuf>,
}

impl Registry {
    /// Plain HTTP, anyone may push and pull.
    pub fn plain() -> Registry {
        Self::start(None, None)
    }

    /// HTTPS with a self-signed certificate for `localhost`, and one account (basic auth).
    pub fn tls_with_login(user: &str, password: &str) -> Registry {
        Self::start(Some((user, password)), None)
    }

    /// Plain HTTP, with bearer-token auth as Docker Hub, GHCR and Harbor do it: the registry
    /// sends clients to a token service (`TokenService`, in this process), which checks the
    /// account and hands out JWTs the registry verifies.
    pub fn with_token_service(user: &str, password: &str) -> (Registry, TokenService) {
        let service = TokenService::start(user, password);
        let registry = Self::start(None, Some(&service));
        (registry, service)
    }

    fn start(login: Option<(&str, &str)>, tokens: Option<&TokenService>) -> Registry {
        let dir = tempfile::tempdir().unwrap();
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut config = format!(
            "version: 0.1\nlog:\n  level: info\nstorage:\n  filesystem:\n    rootdirectory: {}\n  \
             delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:{port}\n  secret: test-secret\n",
            dir.path().join("data").display()
        );
        let mut ca_file = None;
        let host = if let Some((user, password)) = login {
            let certified =
                rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
            let cert = dir.path().join("cert.pem");
            let key = dir.path().join("key.pem");
            std::fs::write(&cert, certified.cert.pem()).unwrap();
            std::fs::write(&key, certified.signing_key.serialize_pem()).unwrap();
            let htpasswd = Command::new("htpasswd")
                .args(["-Bbn", user, password])
                .output()
                .expect("htpasswd (apache2-utils) is needed: apt-get install apache2-utils");
            assert!(htpasswd.status.success());
            let passwords = dir.path().join("htpasswd");
            std::fs::write(&passwords, htpasswd.stdout).unwrap();
            config.push_str(&format!(
                "  tls:\n    certificate: {}\n    key: {}\nauth:\n  htpasswd:\n    realm: skiff-tests\n    path: {}\n",
                cert.display(),
                key.display(),
                passwords.display()
            ));
            ca_file = Some(cert);
            "localhost"
        } else {
            "127.0.0.1"
        };
        if let Some(tokens) = tokens {
            let bundle = dir.path().join("token-issuer.pem");
            std::fs::write(&bundle, &tokens.certificate_pem).unwrap();
            config.push_str(&format!(
                "auth:\n  token:\n    realm: {}\n    service: {TOKEN_AUDIENCE}\n    issuer: \
                 {TOKEN_ISSUER}\n    rootcertbundle: {}\n",
                tokens.realm,
                bundle.display()
            ));
        }
        let config_path = dir.path().join("config.yml");
        std::fs::write(&config_path, config).unwrap();
        let log = std::fs::File::create(dir.path().join("registry.log")).unwrap();
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&config_path)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("docker-registry is needed: apt-get install docker-registry");
        let registry = Registry {
            child: Some(child),
            addr: format!("{host}:{port}"),
            dir,
            ca_file,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "the registry did not start:\n{}",
                registry.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        registry
    }

    /// Everything the registry logged, its access log included.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("registry.log")).unwrap_or_default()
    }

    /// The digests of the blobs uploaded so far, one entry per completed upload, in order.
    pub fn uploads(&self) -> Vec<String> {
        self.log()
            .lines()
            .filter(|line| line.contains("\"PUT /v2/") && line.contains("/blobs/uploads/"))
            .filter_map(|line| {
                let at = line.find("digest=sha256%3A")? + "digest=sha256%3A".len();
                Some(format!("sha256:{}", &line[at..at + 64]))
            })
            .collect()
    }

    /// The image manifest the registry holds for `repo:tag`, as JSON (plain HTTP only).
    pub async fn manifest(&self, repo: &str, tag: &str) -> serde_json::Value {
        let url = format!("http://{}/v2/{repo}/manifests/{tag}", self.addr);
        let response = super::client()
            .get(url)
            .header("Accept", "application/vnd.oci.image.manifest.v1+json")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        response.json().await.unwrap()
    }

    /// Where the registry keeps the content of blob `digest`.
    pub fn blob_file(&self, digest: &str) -> PathBuf {
        let hex = digest.strip_prefix("sha256:").unwrap();
        self.dir
            .path()
            .join("data/docker/registry/v2/blobs/sha256")
            .join(&hex[..2])
            .join(hex)
            .join("data")
    }

    /// Stops the registry (its storage stays).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn storage(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        self.stop();
    }
}

const TOKEN_ISSUER: &str = "skiff-test-token-service";
const TOKEN_AUDIENCE: &str = "skiff-test-registry";

/// A registry token service (the Docker token auth protocol): `GET /token?service=...&scope=...`
/// with the account in basic auth answers a JWT, signed ES256 with a key whose certificate the
/// registry trusts, granting the scopes asked for. A wrong account gets 401.
pub struct TokenService {
    pub realm: String,
    certificate_pem: String,
    /// Tokens handed out so far.
    issued: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl TokenService {
    fn start(user: &str, password: &str) -> TokenService {
        use base64::Engine as _;
        let certified = rcgen::generate_simple_self_signed(vec!["tokens".to_string()]).unwrap();
        let certificate_der = certified.cert.der().to_vec();
        let key_pkcs8 = certified.signing_key.serialize_der();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let realm = format!("http://{}/token", listener.local_addr().unwrap());
        let expected = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
        );
        let issued = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counter = issued.clone();
        std::thread::spawn(move || {
            let key = ring::signature::EcdsaKeyPair::from_pkcs8(
                &ring::signature::ECDSA_P256_SHA256_FIXED_SIGNING,
                &key_pkcs8,
                &ring::rand::SystemRandom::new(),
            )
            .unwrap();
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                let _ = answer(stream, &expected, &key, &certificate_der, &counter);
            }
        });
        TokenService {
            realm,
            certificate_pem: certified.cert.pem(),
            issued,
        }
    }

    pub fn issued(&self) -> usize {
        self.issued.load(std::sync::atomic::Ordering::SeqCst)
    }
}

/// Answers one request on `stream` (HTTP/1.1, one request per connection).
fn answer(
    mut stream: std::net::TcpStream,
    expected_auth: &str,
    key: &ring::signature::EcdsaKeyPair,
    certificate_der: &[u8],
    issued: &std::sync::atomic::AtomicUsize,
) -> std::io::Result<()> {
    use base64::Engine as _;
    use std::io::{BufRead, Write};
    let mut reader = std::io::BufReader::new(stream.try_clone()?);
    let mut request_line = String::new();
    reader.read_line(&mut request_line)?;
    let mut authorized = false;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 || line.trim().is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':')
            && name.eq_ignore_ascii_case("authorization")
        {
            authorized = value.trim() == expected_auth;
        }
    }
    if !authorized {
        let body = r#"{"errors":[{"code":"UNAUTHORIZED","message":"wrong account"}]}"#;
        return write!(
            stream,
            "HTTP/1.1 401 Unauthorized\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
    }
    // Every `scope=repository:NAME:ACTIONS` asked for is granted.
    let query = request_line
        .split_whitespace()
        .nth(1)
        .and_then(|target| target.split_once('?'))
        .map(|(_, query)| query.to_string())
        .unwrap_or_default();
    let access: Vec<serde_json::Value> = query
        .split('&')
        .filter_map(|pair| pair.strip_prefix("scope="))
        .map(|scope| {
            scope
                .replace("%3A", ":")
                .replace("%2F", "/")
                .replace("%2C", ",")
        })
        .filter_map(|scope| {
            let mut parts = scope.splitn(3, ':');
            let (kind, name, actions) = (parts.next()?, parts.next()?, parts.next()?);
            Some(serde_json::json!({
                "type": kind,
                "name": name,
                "actions": actions.split(',').collect::<Vec<_>>(),
            }))
        })
        .collect();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let header = serde_json::json!({
        "typ": "JWT",
        "alg": "ES256",
        "x5c": [base64::engine::general_purpose::STANDARD.encode(certificate_der)],
    });
    let claims = serde_json::json!({
        "iss": TOKEN_ISSUER,
        "sub": "tester",
        "aud": TOKEN_AUDIENCE,
        "exp": now + 300,
        "nbf": now - 10,
        "iat": now,
        "jti": format!("{now}-{}", issued.load(std::sync::atomic::Ordering::SeqCst)),
        "access": access,
    });
    let signing_input = format!(
        "{}.{}",
        b64.encode(header.to_string()),
        b64.encode(claims.to_string())
    );
    let signature = key
        .sign(&ring::rand::SystemRandom::new(), signing_input.as_bytes())
        .unwrap();
    let token = format!("{signing_input}.{}", b64.encode(signature.as_ref()));
    issued.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    let body =
        serde_json::json!({ "token": token, "access_token": token, "expires_in": 300 }).to_string();
    write!(
        stream,
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
}
