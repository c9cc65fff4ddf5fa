//! A running `skiff server` driven as a user drives it: the `skiff` CLI as the client, and
//! requests on its data plane by host name.

use std::path::{Path, PathBuf};
use std::process::Output;

use serde_json::Value;

use super::{Server, client, fresh_data_dir, guest, skiff};

pub const ADMIN_TOKEN: &str = "test-admin-token-0123456789abcdef";

/// A running `skiff server` with its two addresses.
pub struct Host {
    pub server: Server,
    /// The management API, e.g. `http://127.0.0.1:41234`.
    pub api: String,
    pub data_dir: PathBuf,
}

impl Host {
    pub fn start() -> Host {
        Host::start_in(fresh_data_dir().join("server"), &[])
    }

    pub fn start_in(data_dir: PathBuf, extra: &[&str]) -> Host {
        Host::start_with(skiff(), data_dir, extra)
    }

    pub fn start_with(
        mut command: std::process::Command,
        data_dir: PathBuf,
        extra: &[&str],
    ) -> Host {
        command.env("SKIFF_ADMIN_TOKEN", ADMIN_TOKEN);
        let data = data_dir.to_str().unwrap().to_string();
        let mut args = vec!["server", "--data", &data];
        if !extra.contains(&"--api-listen") {
            args.extend(["--api-listen", "127.0.0.1:0"]);
        }
        args.extend_from_slice(extra);
        let server = Server::start_with(command, &args);
        let api = server
            .stdout_lines
            .iter()
            .find_map(|line| line.strip_prefix("Management API "))
            .unwrap_or_else(|| panic!("no API line in {:?}", server.stdout_lines))
            .to_string();
        Host {
            server,
            api,
            data_dir,
        }
    }

    /// Host `host-N` of the cluster in the Redis at `url`, with a data folder of its own.
    pub fn start_in_cluster(url: &str, n: usize, extra: &[&str]) -> Host {
        Host::start_in_cluster_at(url, n, fresh_data_dir().join("server"), extra)
    }

    /// [`start_in_cluster`](Self::start_in_cluster) with data folder `data_dir` (a host coming
    /// back with what it had).
    pub fn start_in_cluster_at(url: &str, n: usize, data_dir: PathBuf, extra: &[&str]) -> Host {
        let id = format!("host-{n}");
        let mut args = vec!["--cluster", url, "--host-id", &id];
        args.extend_from_slice(extra);
        Host::start_in(data_dir, &args)
    }

    /// Waits until the host answers `/readyz` with 200 (a cluster host has read the shared
    /// state).
    pub async fn wait_until_ready(&self) {
        let ready = || async {
            client()
                .get(format!("{}/readyz", self.api))
                .send()
                .await
                .is_ok_and(|r| r.status() == 200)
        };
        super::eventually(
            std::time::Duration::from_secs(30),
            "the host is ready",
            ready,
        )
        .await;
    }

    /// Runs the `skiff` CLI against this server with `token`.
    pub fn cli(&self, token: &str, args: &[&str]) -> Output {
        skiff()
            .args(args)
            .env("SKIFF_SERVER", &self.api)
            .env("SKIFF_TOKEN", token)
            .env_remove("SKIFF_ADMIN_TOKEN")
            .output()
            .expect("running the skiff CLI")
    }

    pub fn cli_ok(&self, token: &str, args: &[&str]) -> String {
        let output = self.cli(token, args);
        assert!(
            output.status.success(),
            "skiff {args:?} failed: {}\n{}\nserver log:\n{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr),
            self.server.logs()
        );
        String::from_utf8(output.stdout).unwrap()
    }

    /// Creates a tenant with the CLI; returns its token (the last line of stdout).
    pub fn tenant(&self, name: &str, extra: &[&str]) -> String {
        let mut args = vec!["tenants", "create", name];
        args.extend_from_slice(extra);
        let stdout = self.cli_ok(ADMIN_TOKEN, &args);
        stdout.lines().last().unwrap().trim().to_string()
    }

    pub fn deploy(&self, token: &str, folder: &Path, name: &str) -> Output {
        self.cli(token, &["deploy", "--name", name, folder.to_str().unwrap()])
    }

    pub fn deploy_ok(&self, token: &str, folder: &Path, name: &str) -> String {
        self.cli_ok(token, &["deploy", "--name", name, folder.to_str().unwrap()])
    }

    /// A request on the data plane to the app `app`.
    pub async fn get(&self, app: &str, path: &str) -> (u16, String) {
        let response = client()
            .get(self.server.url(path))
            .header("host", format!("{app}.localhost"))
            .send()
            .await
            .expect("request to the data plane");
        let status = response.status().as_u16();
        (status, response.text().await.unwrap())
    }

    /// The Prometheus text at `path` (`/metrics` or `/v1/metrics`) as `token` sees it.
    pub async fn scrape(&self, token: &str, path: &str) -> String {
        let url = format!("{}{path}", self.api);
        let response = client().get(url).bearer_auth(token).send().await.unwrap();
        assert_eq!(response.status(), 200);
        response.text().await.unwrap()
    }

    /// A raw management API call.
    pub async fn api(
        &self,
        method: reqwest::Method,
        path: &str,
        token: Option<&str>,
    ) -> (u16, Value) {
        let mut request = client().request(method, format!("{}{path}", self.api));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let text = response.text().await.unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }
}

/// An app folder: the http guest, with `VERSION` in its environment so that every response
/// says which deploy served it.
pub fn http_app(version: u32) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(guest("http-guest"), dir.path().join("web.wasm")).unwrap();
    std::fs::write(
        dir.path().join("skiff.toml"),
        format!(
            "[app]\nname = \"web\"\nversion = \"1.0.{version}\"\n\n\
             [component.web]\nsource = \"web.wasm\"\nroute = \"/...\"\n\
             environment = {{ VERSION = \"{version}\" }}\n"
        ),
    )
    .unwrap();
    dir
}
