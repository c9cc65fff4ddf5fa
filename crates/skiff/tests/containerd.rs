#![allow(clippy::unwrap_used, clippy::expect_used)]
//! `skiff push --image` makes an ordinary container image: a real containerd (Debian's, with
//! a config of its own: its own root, state and socket in a temporary folder, no CRI plugin,
//! the `native` snapshotter) pulls it from a real registry for platform `wasi/wasm`, unpacks
//! it, and its rootfs is the app folder; `skiff up` serves the same image.
//!
//! Needs root (containerd mounts snapshots) and the packages `containerd` (which has `ctr`)
//! and `docker-registry`. A missing tool fails the test with the package to install.

mod common;

use std::cell::RefCell;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::registry::Registry;
use common::{Server, guest, skiff};

/// The snapshotter every `ctr` call here names: it copies instead of mounting overlays, so it
/// works on any file system the temporary folder is on.
const SNAPSHOTTER: &str = "native";

/// A containerd daemon of this test's own. Dropping it unmounts what `mount` mounted, then
/// stops the daemon, also when the test failed half way.
struct Containerd {
    child: Option<Child>,
    dir: tempfile::TempDir,
    socket: PathBuf,
    mounted: RefCell<Vec<PathBuf>>,
}

impl Containerd {
    fn start() -> Containerd {
        let found = Command::new("ctr").arg("--version").output();
        assert!(
            found.is_ok_and(|out| out.status.success()),
            "`ctr` is needed: apt-get install containerd"
        );
        let dir = tempfile::tempdir().unwrap();
        let path = |name: &str| dir.path().join(name);
        let socket = path("containerd.sock");
        // A Unix socket path must fit in 108 bytes; a temporary folder's always does.
        let config = format!(
            "version = 2\nroot = \"{root}\"\nstate = \"{state}\"\n\
             disabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n\n\
             [grpc]\n  address = \"{socket}\"\n\n\
             [ttrpc]\n  address = \"{socket}.ttrpc\"\n\n\
             [debug]\n  address = \"{debug}\"\n\n\
             [plugins.\"io.containerd.internal.v1.opt\"]\n  path = \"{opt}\"\n",
            root = path("root").display(),
            state = path("state").display(),
            socket = socket.display(),
            debug = path("debug.sock").display(),
            opt = path("opt").display(),
        );
        std::fs::write(path("config.toml"), config).unwrap();
        let log = std::fs::File::create(path("containerd.log")).unwrap();
        let child = Command::new("containerd")
            .arg("--config")
            .arg(path("config.toml"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("`containerd` is needed: apt-get install containerd");
        let mut containerd = Containerd {
            child: Some(child),
            dir,
            socket,
            mounted: RefCell::new(Vec::new()),
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if containerd.socket.exists() && containerd.ctr(&["version"]).status.success() {
                break;
            }
            if let Some(status) = containerd.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("containerd exited ({status}):\n{}", containerd.log());
            }
            assert!(
                Instant::now() < deadline,
                "containerd did not answer on {} within 30 s:\n{}",
                containerd.socket.display(),
                containerd.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        containerd
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("containerd.log")).unwrap_or_default()
    }

    /// `ctr --address SOCKET ARGS...`, whatever its outcome.
    fn ctr(&self, args: &[&str]) -> Output {
        Command::new("ctr")
            .arg("--address")
            .arg(&self.socket)
            .args(args)
            .env_remove("CONTAINERD_NAMESPACE")
            .env_remove("CONTAINERD_SNAPSHOTTER")
            .stdin(Stdio::null())
            .output()
            .expect("running ctr")
    }

    /// `ctr ARGS...`, which must succeed; its stdout.
    fn ctr_ok(&self, args: &[&str]) -> String {
        let out = self.ctr(args);
        assert!(
            out.status.success(),
            "ctr {args:?} failed:\nstdout:\n{}\nstderr:\n{}\ncontainerd:\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            self.log()
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// Mounts the (already pulled) image's rootfs read-only on a fresh folder, with
    /// `ctr image mount`.
    fn mount(&self, reference: &str) -> PathBuf {
        let target = self.dir.path().join("rootfs");
        std::fs::create_dir_all(&target).unwrap();
        self.mounted.borrow_mut().push(target.clone());
        self.ctr_ok(&[
            "image",
            "mount",
            "--snapshotter",
            SNAPSHOTTER,
            "--platform",
            "wasi/wasm",
            reference,
            target.to_str().unwrap(),
        ]);
        target
    }

    /// `ctr image unmount --rm`, which must succeed (it also removes the snapshot view).
    fn unmount(&self, target: &Path) {
        self.ctr_ok(&["image", "unmount", "--rm", target.to_str().unwrap()]);
        self.mounted.borrow_mut().retain(|m| m != target);
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        for target in self.mounted.take() {
            let target_text = target.to_str().unwrap();
            if !self
                .ctr(&["image", "unmount", "--rm", target_text])
                .status
                .success()
            {
                let _ = Command::new("umount").arg("-l").arg(&target).status();
            }
        }
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The http guest serving a static folder (with a nested folder), as one app folder.
fn app_folder() -> tempfile::TempDir {
    let dir = common::app_dir(&[
        (
            "skiff.toml",
            "[app]\nname = \"hello\"\n\n[component.web]\nsource = \"web.wasm\"\nroute = \
             \"/...\"\nfiles = [\"static\"]\n",
        ),
        ("static/index.html", "<h1>from containerd's registry</h1>"),
        ("static/css/site.css", "body {}"),
    ]);
    std::fs::copy(guest("http-guest"), dir.path().join("web.wasm")).unwrap();
    dir
}

#[tokio::test(flavor = "multi_thread")]
async fn containerd_pulls_and_unpacks_an_image_push_and_skiff_up_serves_it() {
    let registry = Registry::plain();
    let containerd = Containerd::start();
    let app = app_folder();
    let reference = format!("{}/apps/hello:v1", registry.addr);

    let pushed = skiff()
        .args(["push", "--image", &reference])
        .arg(app.path())
        .output()
        .unwrap();
    assert!(
        pushed.status.success(),
        "skiff push --image failed:\n{}",
        String::from_utf8_lossy(&pushed.stderr)
    );
    let pinned = String::from_utf8(pushed.stdout).unwrap();
    let digest = pinned.trim().rsplit_once('@').unwrap().1.to_string();

    // containerd checks every blob's digest, and while unpacking, the layer's uncompressed
    // digest against the config's `rootfs.diff_ids`: a wrong one fails the pull.
    containerd.ctr_ok(&[
        "image",
        "pull",
        "--plain-http",
        "--snapshotter",
        SNAPSHOTTER,
        "--platform",
        "wasi/wasm",
        &reference,
    ]);
    let listed = containerd.ctr_ok(&["image", "ls"]);
    let line = listed
        .lines()
        .find(|l| l.starts_with(&reference))
        .unwrap_or_else(|| panic!("{reference} is not among containerd's images:\n{listed}"));
    assert!(line.contains(&digest), "{line}");
    assert!(line.contains("wasi/wasm"), "{line}");

    // The rootfs is the app folder: the manifest at the root, the component byte for byte,
    // the static files in their folders.
    let rootfs = containerd.mount(&reference);
    assert_eq!(
        std::fs::read(rootfs.join("skiff.toml")).unwrap(),
        std::fs::read(app.path().join("skiff.toml")).unwrap()
    );
    assert_eq!(
        std::fs::read(rootfs.join("web.wasm")).unwrap(),
        std::fs::read(guest("http-guest")).unwrap(),
        "the component in the rootfs differs from the one pushed"
    );
    assert_eq!(
        std::fs::read_to_string(rootfs.join("static/index.html")).unwrap(),
        "<h1>from containerd's registry</h1>"
    );
    assert_eq!(
        std::fs::read_to_string(rootfs.join("static/css/site.css")).unwrap(),
        "body {}"
    );
    let mut top: Vec<String> = std::fs::read_dir(&rootfs)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    top.sort();
    assert_eq!(top, ["skiff.toml", "static", "web.wasm"]);
    containerd.unmount(&rootfs);

    // skiff itself pulls the same image (it tells an image from an app artifact by its
    // config) and serves it, from a data folder of its own.
    let server = Server::start_with(skiff(), &["up", &reference]);
    let (status, body) = common::get(&server, "/file?path=/static/index.html").await;
    assert_eq!(
        (status, body.as_str()),
        (200, "<h1>from containerd's registry</h1>")
    );
}
