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
        Self::start(None)
    }

    /// HTTPS with a self-signed certificate for `localhost`, and one account.
    pub fn tls_with_login(user: &str, password: &str) -> Registry {
        Self::start(Some((user, password)))
    }

    fn start(login: Option<(&str, &str)>) -> Registry {
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
