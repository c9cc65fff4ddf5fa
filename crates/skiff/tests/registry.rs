#![allow(clippy::unwrap_used, clippy::expect_used)]
//! `skiff push`, `pull`, `registry login` and `up`/`run` of a registry reference, against a
//! real registry (Debian's `docker-registry`) on a free loopback port.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use common::registry::Registry;
use common::{Server, guest, skiff};

/// A client environment of its own: the data folder (where pulls are kept) and docker's
/// config. The code cache is the tests' shared one.
struct Client {
    cache: tempfile::TempDir,
    docker: tempfile::TempDir,
    ca_file: Option<std::path::PathBuf>,
}

impl Client {
    fn new() -> Client {
        Client {
            cache: tempfile::tempdir().unwrap(),
            docker: tempfile::tempdir().unwrap(),
            ca_file: None,
        }
    }

    fn trusting(registry: &Registry) -> Client {
        Client {
            ca_file: registry.ca_file.clone(),
            ..Client::new()
        }
    }

    fn command(&self) -> Command {
        let mut command = skiff();
        command
            .env("SKIFF_DATA_DIR", self.cache.path())
            .env("DOCKER_CONFIG", self.docker.path());
        if let Some(ca) = &self.ca_file {
            command.env("SSL_CERT_FILE", ca);
        }
        command
    }

    fn run(&self, args: &[&str]) -> Output {
        self.run_with_stdin(args, "")
    }

    fn run_with_stdin(&self, args: &[&str], stdin: &str) -> Output {
        let mut child = self
            .command()
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        std::io::Write::write_all(&mut child.stdin.take().unwrap(), stdin.as_bytes()).unwrap();
        child.wait_with_output().unwrap()
    }

    /// Runs and expects success; returns the last line of stdout.
    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "skiff {args:?} failed:\n{}",
            text(&out)
        );
        String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .last()
            .unwrap_or_default()
            .to_string()
    }

    /// Runs and expects failure; returns stderr.
    fn fails(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            !out.status.success(),
            "skiff {args:?} succeeded:\n{}",
            text(&out)
        );
        String::from_utf8(out.stderr).unwrap()
    }

    /// What the pull cache holds: digests of pulled artifacts, and leftovers of pulls.
    fn cached(&self) -> (Vec<String>, Vec<String>) {
        let list = |dir: &str| -> Vec<String> {
            std::fs::read_dir(self.cache.path().join("oci").join(dir))
                .map(|entries| {
                    entries
                        .map(|e| e.unwrap().file_name().into_string().unwrap())
                        .collect()
                })
                .unwrap_or_default()
        };
        (list("sha256"), list("tmp"))
    }
}

fn text(out: &Output) -> String {
    format!(
        "stdout:\n{}\nstderr:\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// An app folder: the http guest with a read-only folder and a writable one.
fn app_folder(name: &str) -> tempfile::TempDir {
    let dir = common::app_dir(&[
        (
            "skiff.toml",
            &format!(
                "[app]\nname = \"{name}\"\n\n[component.web]\nsource = \"web.wasm\"\nroute = \
                 \"/...\"\nfiles = [\"static\", {{ source = \"notes\", destination = \"/notes\", \
                 writable = true }}]\n"
            ),
        ),
        ("static/index.html", "<h1>from the registry</h1>"),
        ("static/css/site.css", "body {}"),
        ("notes/first.txt", "first"),
    ]);
    std::fs::copy(guest("http-guest"), dir.path().join("web.wasm")).unwrap();
    dir
}

/// Every file under `dir`, by relative path.
fn files(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    fn walk(dir: &Path, rel: &str, out: &mut BTreeMap<String, Vec<u8>>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let entry = entry.unwrap();
            let name = entry.file_name().into_string().unwrap();
            let rel = if rel.is_empty() {
                name
            } else {
                format!("{rel}/{name}")
            };
            if entry.file_type().unwrap().is_dir() {
                walk(&entry.path(), &rel, out);
            } else {
                out.insert(rel, std::fs::read(entry.path()).unwrap());
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(dir, "", &mut out);
    out
}

fn layer_digest(manifest: &serde_json::Value, media_type: &str) -> String {
    manifest["layers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["mediaType"] == media_type)
        .unwrap_or_else(|| panic!("no {media_type} layer in {manifest}"))["digest"]
        .as_str()
        .unwrap()
        .to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn an_app_round_trips_through_a_registry_and_serves_from_it() {
    let mut registry = Registry::plain();
    let app = app_folder("shop");
    let client = Client::new();
    let reference = format!("{}/apps/shop:v1", registry.addr);
    let app_path = app.path().to_str().unwrap();

    let pinned = client.ok(&["push", &reference, app_path]);
    assert!(
        pinned.starts_with(&format!("{}/apps/shop@sha256:", registry.addr)),
        "{pinned}"
    );
    // The manifest, the component and each mount are layers of their own, plus the config.
    let first = registry.uploads();
    assert_eq!(first.len(), 5, "{first:?}");
    let manifest = registry.manifest("apps/shop", "v1").await;
    assert_eq!(
        manifest["config"]["mediaType"],
        "application/vnd.skiff.app.config.v1+json"
    );
    let component = layer_digest(
        &manifest,
        "application/vnd.skiff.app.component.v1.wasm+gzip",
    );
    assert_eq!(
        manifest["layers"][1]["annotations"]["org.opencontainers.image.title"],
        "web.wasm"
    );
    // Compressed: Wasm shrinks to well under half.
    let wasm_size = std::fs::metadata(app.path().join("web.wasm"))
        .unwrap()
        .len();
    assert!(manifest["layers"][1]["size"].as_u64().unwrap() < wasm_size / 2);

    // The same push again sends no blob, and gives the same digest.
    assert_eq!(client.ok(&["push", &reference, app_path]), pinned);
    assert_eq!(registry.uploads(), first, "a second push uploaded again");

    // Another app with the same component reuses its layer.
    let other = app_folder("shop-admin");
    std::fs::write(other.path().join("static/index.html"), "<h1>admin</h1>").unwrap();
    client.ok(&[
        "push",
        &format!("{}/apps/shop:admin", registry.addr),
        other.path().to_str().unwrap(),
    ]);
    let second: Vec<String> = registry.uploads()[first.len()..].to_vec();
    assert!(
        !second.contains(&component),
        "the component went up again: {second:?}"
    );
    // Its config, manifest and changed folder went up; the unchanged `notes` did not.
    assert_eq!(second.len(), 3, "{second:?}");

    // In another repository of the registry, the component is mounted, not uploaded.
    let before = registry.uploads().len();
    let out = client.run(&[
        "push",
        &format!("{}/apps/admin:v1", registry.addr),
        other.path().to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("mounted from other repositories"),
        "{}",
        text(&out)
    );
    let third: Vec<String> = registry.uploads()[before..].to_vec();
    assert!(
        !third.contains(&component),
        "the component went up again: {third:?}"
    );
    let mount = format!("mount={}", component.replace(':', "%3A"));
    assert!(
        registry
            .log()
            .lines()
            .any(|l| l.contains(&mount) && l.contains("from=apps%2Fshop") && l.contains("\" 201 ")),
        "no mount of the component in the registry's log"
    );

    // Pulled elsewhere: byte for byte the referenced files, nothing else.
    let elsewhere = Client::new();
    let pulled = elsewhere.ok(&["pull", &reference]);
    assert_eq!(pulled, pinned);
    let (cached, leftovers) = elsewhere.cached();
    assert_eq!(cached.len(), 1);
    assert!(leftovers.is_empty(), "{leftovers:?}");
    let cached_app = elsewhere
        .cache
        .path()
        .join("oci/sha256")
        .join(&cached[0])
        .join("app");
    let mut expected = files(app.path());
    let manifest_text = expected.remove("skiff.toml").unwrap();
    let mut got = files(&cached_app);
    assert_eq!(got.remove("skiff.toml").unwrap(), manifest_text);
    assert_eq!(got, expected);

    // `skiff up REF` serves it; the writable mount is a copy, so the cache stays as pushed.
    {
        let server = Server::start_with(elsewhere.command(), &["up", &reference]);
        let (status, body) = common::get(&server, "/file?path=/static/index.html").await;
        assert_eq!((status, body.as_str()), (200, "<h1>from the registry</h1>"));
        let (status, _) = common::get(&server, "/write?path=/notes/first.txt").await;
        assert_eq!(status, 200);
        let (_, body) = common::get(&server, "/file?path=/notes/first.txt").await;
        assert_eq!(body, "written");
    }
    assert_eq!(
        std::fs::read(cached_app.join("notes/first.txt")).unwrap(),
        b"first"
    );

    // Offline: the tag resolves to the digest pulled before.
    registry.stop();
    let server = Server::start_with(elsewhere.command(), &["up", &reference]);
    let (status, _) = common::get(&server, "/file?path=/static/css/site.css").await;
    assert_eq!(status, 200);
    assert!(
        server.logs().contains("resolved to before"),
        "{}",
        server.logs()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_component_is_a_cncf_wasm_artifact_and_runs_from_the_registry() {
    let registry = Registry::plain();
    let client = Client::new();
    let reference = format!("{}/tools/cli:1.0", registry.addr);
    let wasm = guest("cli-guest");
    client.ok(&["push", &reference, wasm.to_str().unwrap()]);

    let manifest = registry.manifest("tools/cli", "1.0").await;
    assert_eq!(
        manifest["config"]["mediaType"],
        "application/vnd.wasm.config.v0+json"
    );
    assert_eq!(manifest["layers"].as_array().unwrap().len(), 1);
    assert_eq!(manifest["layers"][0]["mediaType"], "application/wasm");

    let out = client.run(&["run", &reference, "args", "one", "two"]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "one\ntwo\n");

    let (cached, _) = client.cached();
    let pulled = client
        .cache
        .path()
        .join("oci/sha256")
        .join(&cached[0])
        .join("component.wasm");
    assert_eq!(
        std::fs::read(pulled).unwrap(),
        std::fs::read(&wasm).unwrap()
    );

    // As another tool writes it (the spec's example config, with the fields skiff does not
    // write), and with the older layer type.
    let spec_config = serde_json::json!({
        "created": "2024-05-01T10:00:00Z",
        "author": "someone else",
        "architecture": "wasm",
        "os": "wasip2",
        "layerDigests": [sha256(&std::fs::read(&wasm).unwrap())],
        "component": {
            "exports": ["wasi:cli/run@0.2.0"],
            "imports": ["wasi:cli/environment@0.2.0"],
            "target": null
        }
    })
    .to_string();
    let bytes = std::fs::read(&wasm).unwrap();
    for (tag, layer_type) in [
        ("spec", "application/wasm"),
        ("older", "application/vnd.wasm.content.layer.v1+wasm"),
    ] {
        let foreign = push_raw(
            &registry,
            "tools/other",
            tag,
            (
                "application/vnd.wasm.config.v0+json",
                spec_config.as_bytes(),
            ),
            &[(layer_type, &bytes, None)],
        )
        .await;
        let out = client.run(&["run", &foreign, "args", "three"]);
        assert!(out.status.success(), "{tag}: {}", text(&out));
        assert_eq!(String::from_utf8_lossy(&out.stdout), "three\n");
    }

    // An app is not a component: `run` says what to do instead.
    let app = app_folder("svc");
    let app_ref = format!("{}/apps/svc:1", registry.addr);
    client.ok(&["push", &app_ref, app.path().to_str().unwrap()]);
    let err = client.fails(&["run", &app_ref]);
    assert!(
        err.contains("is an app") && err.contains("skiff up"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn registry_errors_name_the_reference_and_leave_nothing_cached() {
    let registry = Registry::plain();
    let client = Client::new();
    let app = app_folder("shop");
    let reference = format!("{}/apps/shop:v1", registry.addr);
    client.ok(&["push", &reference, app.path().to_str().unwrap()]);

    // A missing tag.
    let missing = format!("{}/apps/shop:nope", registry.addr);
    let err = client.fails(&["pull", &missing]);
    assert!(err.contains(&missing) && err.contains("not found"), "{err}");

    // Nothing listening.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let err = client.fails(&["pull", &format!("127.0.0.1:{port}/apps/shop:v1")]);
    assert!(
        err.contains(&format!("cannot reach the registry 127.0.0.1:{port}")),
        "{err}"
    );

    // Not a reference at all, and not a path either.
    let err = client.fails(&["pull", "shop:v1"]);
    assert!(
        err.contains("not a registry reference") && err.contains("localhost:5000"),
        "{err}"
    );

    // Something that is neither an app nor a component.
    let foreign = push_foreign_artifact(&registry, "other/thing", "v1").await;
    let err = client.fails(&["pull", &foreign]);
    assert!(
        err.contains(&foreign)
            && err.contains("application/vnd.example.thing.config+json")
            && err.contains("neither a skiff app nor a Wasm component"),
        "{err}"
    );

    // A blob damaged in the registry's storage: caught by its digest, nothing cached.
    let manifest = registry.manifest("apps/shop", "v1").await;
    let component = layer_digest(
        &manifest,
        "application/vnd.skiff.app.component.v1.wasm+gzip",
    );
    let blob = registry.blob_file(&component);
    let mut bytes = std::fs::read(&blob).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    std::fs::write(&blob, bytes).unwrap();
    let fresh = Client::new();
    let err = fresh.fails(&["pull", &reference]);
    assert!(
        err.contains(&reference) && err.contains("does not match its digest"),
        "{err}"
    );
    assert_eq!(
        fresh.cached(),
        (vec![], vec![]),
        "a failed pull left something"
    );
    // Nor does `up` start from it.
    let out = fresh.run(&["up", &reference]);
    assert!(!out.status.success());
}

/// Pushes an artifact of a type skiff does not know (as another tool might), with plain
/// HTTP requests; returns its reference.
async fn push_foreign_artifact(registry: &Registry, repo: &str, tag: &str) -> String {
    push_raw(
        registry,
        repo,
        tag,
        (
            "application/vnd.example.thing.config+json",
            br#"{"thing":true}"#,
        ),
        &[],
    )
    .await
}

/// A layer to push by hand: media type, bytes, title annotation.
type RawLayer<'a> = (&'a str, &'a [u8], Option<&'a str>);

/// Pushes blobs and a manifest naming them as given, the way any registry client would
/// (and a hostile one might).
async fn push_raw(
    registry: &Registry,
    repo: &str,
    tag: &str,
    (config_type, config): (&str, &[u8]),
    layers: &[RawLayer<'_>],
) -> String {
    let http = common::client();
    let base = format!("http://{}/v2/{repo}", registry.addr);
    let upload = |bytes: Vec<u8>| {
        let http = http.clone();
        let base = base.clone();
        let addr = registry.addr.clone();
        async move {
            let digest = sha256(&bytes);
            let started = http
                .post(format!("{base}/blobs/uploads/"))
                .send()
                .await
                .unwrap();
            assert_eq!(started.status(), 202);
            let location = started.headers()["location"].to_str().unwrap().to_string();
            let location = if location.starts_with("http") {
                location
            } else {
                format!("http://{addr}{location}")
            };
            let separator = if location.contains('?') { '&' } else { '?' };
            let response = http
                .put(format!("{location}{separator}digest={digest}"))
                .header("Content-Type", "application/octet-stream")
                .body(bytes.clone())
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), 201, "{:?}", response.text().await);
            serde_json::json!({ "digest": digest, "size": bytes.len() })
        }
    };
    let mut config_descriptor = upload(config.to_vec()).await;
    config_descriptor["mediaType"] = config_type.into();
    let mut descriptors = Vec::new();
    for (media_type, bytes, title) in layers {
        let mut descriptor = upload(bytes.to_vec()).await;
        descriptor["mediaType"] = (*media_type).into();
        if let Some(title) = title {
            descriptor["annotations"] =
                serde_json::json!({ "org.opencontainers.image.title": title });
        }
        descriptors.push(descriptor);
    }
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": config_descriptor,
        "layers": descriptors,
    });
    let response = http
        .put(format!("{base}/manifests/{tag}"))
        .header("Content-Type", "application/vnd.oci.image.manifest.v1+json")
        .body(manifest.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201, "{:?}", response.text().await);
    format!("{}/{repo}:{tag}", registry.addr)
}

#[tokio::test(flavor = "multi_thread")]
async fn hostile_artifacts_are_refused_and_nothing_is_cached() {
    let registry = Registry::plain();
    let client = Client::new();
    let app_config = ("application/vnd.skiff.app.config.v1+json", &b"{}"[..]);
    let manifest = b"[app]\nname = \"evil\"\n\n[component.web]\nsource = \"web.wasm\"\n";
    let wasm = std::fs::read(guest("http-guest")).unwrap();
    let cases: Vec<(&str, Vec<RawLayer>, &str)> = vec![
        (
            "climbs",
            vec![
                (
                    "application/vnd.skiff.app.manifest.v1+toml",
                    manifest,
                    Some("skiff.toml"),
                ),
                ("application/wasm", &wasm, Some("../../escape.wasm")),
            ],
            "..",
        ),
        (
            "absolute",
            vec![
                (
                    "application/vnd.skiff.app.manifest.v1+toml",
                    manifest,
                    Some("skiff.toml"),
                ),
                ("application/wasm", &wasm, Some("/tmp/escape.wasm")),
            ],
            "escape.wasm",
        ),
        (
            "twice",
            vec![
                (
                    "application/vnd.skiff.app.manifest.v1+toml",
                    manifest,
                    Some("skiff.toml"),
                ),
                (
                    "application/vnd.skiff.app.file.v1",
                    b"x",
                    Some("skiff.toml"),
                ),
            ],
            "skiff.toml",
        ),
        (
            "no-manifest",
            vec![("application/wasm", &wasm, Some("web.wasm"))],
            "skiff.toml",
        ),
        (
            "not-wasm",
            vec![
                (
                    "application/vnd.skiff.app.manifest.v1+toml",
                    manifest,
                    Some("skiff.toml"),
                ),
                (
                    "application/wasm",
                    b"#!/bin/sh\nrm -rf /\n",
                    Some("web.wasm"),
                ),
            ],
            "web.wasm",
        ),
        (
            "untitled",
            vec![("application/wasm", &wasm, None)],
            "without a title",
        ),
    ];
    for (tag, layers, expected) in cases {
        let reference = push_raw(&registry, "evil/app", tag, app_config, &layers).await;
        let err = client.fails(&["pull", &reference]);
        assert!(
            err.contains(&reference) && err.contains(expected),
            "{tag}: {err}"
        );
        assert_eq!(client.cached(), (vec![], vec![]), "{tag} left something");
    }
    // A symlink inside a files layer.
    let mut tar = tar::Builder::new(Vec::new());
    let mut header = tar::Header::new_gnu();
    header.set_entry_type(tar::EntryType::Symlink);
    header.set_size(0);
    tar.append_link(&mut header, "static/passwd", "/etc/passwd")
        .unwrap();
    let tar = tar.into_inner().unwrap();
    let reference = push_raw(
        &registry,
        "evil/app",
        "link",
        app_config,
        &[
            (
                "application/vnd.skiff.app.manifest.v1+toml",
                manifest,
                Some("skiff.toml"),
            ),
            ("application/wasm", &wasm, Some("web.wasm")),
            ("application/vnd.skiff.app.files.v1.tar+gzip", &tar, None),
        ],
    )
    .await;
    let err = client.fails(&["pull", &reference]);
    assert!(
        err.contains("static/passwd") && err.contains("symbolic link"),
        "{err}"
    );
    assert_eq!(client.cached(), (vec![], vec![]));
    // Nothing was written outside the cache either.
    assert!(!client.cache.path().join("escape.wasm").exists());
    assert!(!Path::new("/tmp/escape.wasm").exists());
}

fn sha256(bytes: &[u8]) -> String {
    let mut child = Command::new("sha256sum")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(&mut child.stdin.take().unwrap(), bytes).unwrap();
    let out = child.wait_with_output().unwrap();
    let hex = String::from_utf8(out.stdout).unwrap();
    format!("sha256:{}", hex.split_whitespace().next().unwrap())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_tls_registry_with_a_password_needs_a_login_which_docker_reads_too() {
    let registry = Registry::tls_with_login("alice", "s3cret-pass");
    let client = Client::trusting(&registry);
    let app = app_folder("private");
    let reference = format!("{}/team/private:v1", registry.addr);
    let app_path = app.path().to_str().unwrap();
    let config_json = client.docker.path().join("config.json");

    // Anonymous: refused, with the command that fixes it.
    let err = client.fails(&["push", &reference, app_path]);
    assert!(
        err.contains(&reference)
            && err.contains(&format!("skiff registry login {}", registry.addr)),
        "{err}"
    );

    // A wrong password is refused and nothing is saved.
    let out = client.run_with_stdin(
        &[
            "registry",
            "login",
            &registry.addr,
            "-u",
            "alice",
            "--password-stdin",
        ],
        "wrong\n",
    );
    assert!(!out.status.success(), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("refused") && err.contains("nothing was saved"),
        "{err}"
    );
    assert!(!config_json.exists());

    // The right one is saved where docker keeps it.
    let out = client.run_with_stdin(
        &[
            "registry",
            "login",
            &registry.addr,
            "-u",
            "alice",
            "--password-stdin",
        ],
        "s3cret-pass\n",
    );
    assert!(out.status.success(), "{}", text(&out));
    let saved: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&config_json).unwrap()).unwrap();
    // base64("alice:s3cret-pass")
    assert_eq!(
        saved["auths"][&registry.addr]["auth"],
        "YWxpY2U6czNjcmV0LXBhc3M="
    );

    let pinned = client.ok(&["push", &reference, app_path]);
    let elsewhere = Client {
        docker: client.docker.path().to_path_buf().into_temp_copy(),
        ..Client::trusting(&registry)
    };
    assert_eq!(elsewhere.ok(&["pull", &pinned]), pinned);

    // Without trusting the certificate, TLS fails and says so.
    let untrusting = Client {
        docker: client.docker.path().to_path_buf().into_temp_copy(),
        ..Client::new()
    };
    let err = untrusting.fails(&["pull", &reference]);
    assert!(err.contains(&registry.addr), "{err}");

    // Logged out: refused again.
    client.ok(&["registry", "logout", &registry.addr]);
    let fresh_cache = Client {
        docker: client.docker.path().to_path_buf().into_temp_copy(),
        ..Client::trusting(&registry)
    };
    let err = fresh_cache.fails(&["pull", &reference]);
    assert!(err.contains("refused access"), "{err}");
}

trait TempCopy {
    fn into_temp_copy(self) -> tempfile::TempDir;
}

impl TempCopy for std::path::PathBuf {
    /// A fresh temporary folder holding a copy of this folder's files.
    fn into_temp_copy(self) -> tempfile::TempDir {
        let copy = tempfile::tempdir().unwrap();
        for entry in std::fs::read_dir(&self).unwrap() {
            let entry = entry.unwrap();
            std::fs::copy(entry.path(), copy.path().join(entry.file_name())).unwrap();
        }
        copy
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_registry_with_a_token_service_takes_the_login_for_bearer_tokens() {
    let (registry, tokens) = Registry::with_token_service("carol", "t0ken-pass");
    let client = Client::new();
    let app = app_folder("tokened");
    let reference = format!("{}/team/tokened:v1", registry.addr);

    let err = client.fails(&["push", &reference, app.path().to_str().unwrap()]);
    assert!(err.contains("skiff registry login"), "{err}");

    let login = [
        "registry",
        "login",
        registry.addr.as_str(),
        "-u",
        "carol",
        "--password-stdin",
    ];
    let out = client.run_with_stdin(&login, "wrong\n");
    assert!(!out.status.success(), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("refused"),
        "{}",
        text(&out)
    );
    let out = client.run_with_stdin(&login, "t0ken-pass\n");
    assert!(out.status.success(), "{}", text(&out));

    let issued = tokens.issued();
    let pinned = client.ok(&["push", &reference, app.path().to_str().unwrap()]);
    assert!(tokens.issued() > issued, "the push used no token");
    let elsewhere = Client {
        docker: client.docker.path().to_path_buf().into_temp_copy(),
        ..Client::new()
    };
    assert_eq!(elsewhere.ok(&["pull", &reference]), pinned);
}
