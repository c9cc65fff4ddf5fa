//! Granted folders against a hostile guest: a guest may make anything inside a writable
//! folder (a symlink to `/etc` in place of a subfolder), so the host opens each granted folder
//! once, at load, and never resolves a path below a writable one afterwards. Grants that would
//! make the host do so (nested grants, a writable folder holding the manifest, the code cache
//! or the key-value data) are refused at load, naming both entries and the fix.

#![allow(clippy::unwrap_used, clippy::expect_used)] // A panic here is a failure with its message.

mod common;

use std::path::Path;
use std::process::Output;

use common::{Server, app_dir, get, guest, skiff};

/// A manifest serving the http-guest at `/...` with `files` as written.
fn manifest_with_files(files: &str) -> String {
    let wasm = guest("http-guest");
    format!(
        r#"
[app]
name = "folders"

[component.web]
source = "{}"
route = "/..."
files = {files}
"#,
        wasm.display()
    )
}

fn up_output(manifest: &Path) -> Output {
    up_output_with(manifest, &[])
}

/// `skiff up MANIFEST` with `env` set, run until it exits (it fails to start, here).
fn up_output_with(manifest: &Path, env: &[(&str, &Path)]) -> Output {
    let mut command = skiff();
    for (name, value) in env {
        command.env(name, value);
    }
    command
        .args(["up", manifest.to_str().unwrap(), "--listen", "127.0.0.1:0"])
        .output()
        .unwrap()
}

#[tokio::test]
async fn nested_grants_are_refused_so_a_guest_link_cannot_lead_the_host_out() {
    // The attack: `data` writable at /data and `data/sub` at /sub. The guest replaces
    // /data/sub with a link to /etc; the next instance's preopen of `data/sub` used to follow
    // it, and the guest read the host's /etc/passwd at /sub/passwd.
    let manifest = manifest_with_files(
        r#"[{ source = "data", destination = "/data", writable = true },
            { source = "data/sub", destination = "/sub" }]"#,
    );
    let dir = app_dir(&[("skiff.toml", &manifest), ("data/sub/.keep", "")]);
    let output = up_output(&dir.path().join("skiff.toml"));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{stderr}");
    assert!(stderr.contains("files[0]"), "{stderr}");
    assert!(stderr.contains("files[1]"), "{stderr}");
    assert!(stderr.contains("overlap"), "{stderr}");
    assert!(stderr.contains("component.web.files"), "{stderr}");

    // The same folder twice is an overlap too.
    let manifest = manifest_with_files(
        r#"[{ source = "data", destination = "/a" }, { source = "data", destination = "/b" }]"#,
    );
    std::fs::write(dir.path().join("skiff.toml"), manifest).unwrap();
    let output = up_output(&dir.path().join("skiff.toml"));
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("overlap"));
}

#[tokio::test]
async fn a_grant_inside_another_components_writable_folder_is_refused() {
    let wasm = guest("http-guest");
    let manifest = format!(
        r#"
[app]
name = "folders"

[component.writer]
source = "{wasm}"
route = "/w/..."
files = [{{ source = "data", destination = "/data", writable = true }}]

[component.reader]
source = "{wasm}"
route = "/r/..."
files = [{{ source = "data/sub", destination = "/sub" }}]
"#,
        wasm = wasm.display()
    );
    let dir = app_dir(&[("skiff.toml", &manifest), ("data/sub/.keep", "")]);
    let output = up_output(&dir.path().join("skiff.toml"));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{stderr}");
    assert!(
        stderr.contains("component `reader` files[0]")
            && stderr.contains("component `writer` files[0]"),
        "{stderr}"
    );
    assert!(stderr.contains("make that one read-only"), "{stderr}");

    // Read-only, the outer folder is safe to share.
    let manifest = manifest.replace(", writable = true", "");
    std::fs::write(dir.path().join("skiff.toml"), manifest).unwrap();
    let server = Server::start(&["up", dir.path().join("skiff.toml").to_str().unwrap()]);
    assert_eq!(get(&server, "/r/file?path=/sub/.keep").await.0, 200);
}

#[test]
fn a_writable_grant_may_not_hold_the_manifest() {
    // A guest able to rewrite skiff.toml grants itself more at the next start.
    let manifest =
        manifest_with_files(r#"[{ source = ".", destination = "/app", writable = true }]"#);
    let dir = app_dir(&[("skiff.toml", &manifest)]);
    let output = up_output(&dir.path().join("skiff.toml"));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{stderr}");
    assert!(stderr.contains("holds the manifest"), "{stderr}");
}

#[test]
fn no_grant_reaches_the_code_cache_or_the_key_value_data() {
    // The cache is native code skiff maps and runs: a guest that could write it would run
    // its own machine code in the host.
    let manifest =
        manifest_with_files(r#"[{ source = "data", destination = "/data", writable = true }]"#);
    let dir = app_dir(&[("skiff.toml", &manifest), ("data/.keep", "")]);
    let manifest = dir.path().join("skiff.toml");
    let cache = dir.path().join("data/cache");
    let output = up_output_with(&manifest, &[("SKIFF_CACHE_DIR", &cache)]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{stderr}");
    assert!(stderr.contains("skiff's own state"), "{stderr}");

    // Read-only inside the key-value data (other apps' databases) is refused too.
    let manifest = manifest_with_files(r#"[{ source = "state/kv", destination = "/kv" }]"#);
    std::fs::write(dir.path().join("skiff.toml"), manifest).unwrap();
    std::fs::create_dir_all(dir.path().join("state/kv")).unwrap();
    let state = dir.path().join("state");
    let output = up_output_with(
        &dir.path().join("skiff.toml"),
        &[("SKIFF_DATA_DIR", &state)],
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{stderr}");
    assert!(stderr.contains("skiff's own state"), "{stderr}");
}

#[tokio::test]
async fn a_granted_folder_is_opened_once_and_its_path_never_resolved_again() {
    // Swapping the granted path for a link after start (what a guest does to a folder below
    // its writable one) must change nothing: instances get the handle opened at load.
    let root = tempfile::tempdir().unwrap();
    let granted = root.path().join("granted");
    let elsewhere = root.path().join("elsewhere");
    std::fs::create_dir_all(&granted).unwrap();
    std::fs::create_dir_all(&elsewhere).unwrap();
    std::fs::write(granted.join("note.txt"), "granted").unwrap();
    std::fs::write(elsewhere.join("note.txt"), "secret").unwrap();
    let wasm = guest("http-guest");
    let server = Server::start(&[
        "serve",
        "--dir",
        &format!("{}::/files", granted.display()),
        wasm.to_str().unwrap(),
    ]);
    assert_eq!(
        get(&server, "/file?path=/files/note.txt").await,
        (200, "granted".to_string())
    );

    std::fs::rename(&granted, root.path().join("moved")).unwrap();
    std::os::unix::fs::symlink(&elsewhere, &granted).unwrap();
    assert_eq!(
        get(&server, "/file?path=/files/note.txt").await,
        (200, "granted".to_string()),
        "a request resolved the granted path again and followed the link"
    );

    // A granted folder that is gone fails the guest's file calls, not every request.
    std::fs::remove_file(&granted).unwrap();
    std::fs::remove_dir_all(root.path().join("moved")).unwrap();
    assert_eq!(get(&server, "/count").await, (200, "1".to_string()));
    assert_eq!(get(&server, "/file?path=/files/note.txt").await.0, 500);
}

#[tokio::test]
async fn a_guest_link_out_of_its_writable_folder_leads_nowhere() {
    let manifest =
        manifest_with_files(r#"[{ source = "data", destination = "/data", writable = true }]"#);
    let dir = app_dir(&[("skiff.toml", &manifest), ("data/sub/.keep", "")]);
    let server = Server::start(&["up", dir.path().join("skiff.toml").to_str().unwrap()]);
    let depth = "../".repeat(dir.path().components().count() + 2);
    assert_eq!(get(&server, "/remove?path=/data/sub").await.0, 200);
    let (status, body) = get(
        &server,
        &format!("/symlink?target={depth}etc&path=/data/sub"),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    // The link exists on the host, and neither this request nor the next follows it.
    assert!(dir.path().join("data/sub").is_symlink());
    let (status, body) = get(&server, "/file?path=/data/sub/passwd").await;
    assert_eq!(status, 500, "{body}");
    assert!(!body.contains("root:"), "{body}");
    let (status, _) = get(&server, "/count").await;
    assert_eq!(status, 200);
}
