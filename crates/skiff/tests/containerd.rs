#![allow(clippy::unwrap_used, clippy::expect_used)]
//! `skiff push --image` makes an ordinary container image: a real containerd (Debian's, with
//! a config of its own: its own root, state and socket in a temporary folder, no CRI plugin,
//! the `native` snapshotter) pulls it from a real registry for platform `wasi/wasm`, unpacks
//! it, and its rootfs is the app folder; `skiff up` serves the same image.
//!
//! The skiff shim (`containerd-shim-skiff-v1`, crate `containerd-shim-skiff`) runs such images
//! as containers: `ctr run --runtime io.containerd.skiff.v1` serves the app on the host's
//! network, passes its logs to the task's stdout, drains on SIGTERM, runs a command to its exit
//! code, and refuses a bad image with a message in containerd's log.
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
        // containerd finds a runtime's shim (`containerd-shim-skiff-v1` for
        // `io.containerd.skiff.v1`) on its PATH.
        let search = format!(
            "{}:{}",
            shim_dir().display(),
            std::env::var("PATH").unwrap_or_default()
        );
        let child = Command::new("containerd")
            .arg("--config")
            .arg(path("config.toml"))
            .env("PATH", search)
            // The shims it starts keep compiled code here (default /var/lib/skiff/shim-cache).
            .env("SKIFF_SHIM_CACHE_DIR", path("shim-cache"))
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

    /// The folder where the skiff shims of this containerd keep compiled code.
    fn shim_cache(&self) -> PathBuf {
        self.dir.path().join("shim-cache")
    }

    /// The process id of the task `id` (its process 1), from `ctr task ls`.
    fn task_pid(&self, id: &str) -> u32 {
        let tasks = self.ctr_ok(&["task", "ls"]);
        tasks
            .lines()
            .find_map(|line| {
                let mut fields = line.split_whitespace();
                (fields.next() == Some(id)).then(|| fields.next().unwrap().parse().unwrap())
            })
            .unwrap_or_else(|| panic!("no task {id} in:\n{tasks}"))
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

    /// `ctr image pull` of a `wasi/wasm` image from a plain-HTTP registry, which must succeed.
    fn pull(&self, reference: &str) {
        self.ctr_ok(&[
            "image",
            "pull",
            "--plain-http",
            "--snapshotter",
            SNAPSHOTTER,
            "--platform",
            "wasi/wasm",
            reference,
        ]);
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
        // Tasks outlive their containerd (each has its shim process): end them first, also
        // when the test failed half way, so none keeps serving or holds its id.
        let tasks = self.ctr(&["task", "ls", "--quiet"]);
        for id in String::from_utf8_lossy(&tasks.stdout).split_whitespace() {
            let _ = self.ctr(&["task", "delete", "--force", id]);
            let _ = self.ctr(&["container", "delete", id]);
        }
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
    let pinned = push_image(&reference, app.path());
    let digest = pinned.rsplit_once('@').unwrap().1.to_string();
    // containerd checks every blob's digest, and while unpacking, the layer's uncompressed
    // digest against the config's `rootfs.diff_ids`: a wrong one fails the pull.
    containerd.pull(&reference);
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

/// Where cargo put the shim: beside the skiff binary (scripts/test.sh builds the whole
/// workspace).
fn shim_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_BIN_EXE_skiff")).parent().unwrap();
    assert!(
        dir.join("containerd-shim-skiff-v1").is_file(),
        "no containerd-shim-skiff-v1 in {}: cargo build -p containerd-shim-skiff",
        dir.display()
    );
    dir.to_path_buf()
}

const SKIFF_RUNTIME: &str = "io.containerd.skiff.v1";

/// The http guest with static files, plus the cli guest and a broken Wasm file as plain files
/// of the rootfs (under `tools/`), for containers whose command line names them.
fn shim_app_folder() -> tempfile::TempDir {
    let dir = common::app_dir(&[
        (
            "skiff.toml",
            "[app]\nname = \"hello\"\n\n[variables]\ngreeting = { default = \"from the \
             manifest\" }\n\n[component.web]\nsource = \"web.wasm\"\nroute = \"/...\"\n\
             files = [\"static\"]\n\n[component.tools]\nsource = \"web.wasm\"\nroute = \
             \"/tools/...\"\nfiles = [\"tools\"]\n\n[component.config]\nsource = \
             \"state.wasm\"\nroute = \"/state/...\"\nvariables = { greeting = \
             \"{{ greeting }}\" }\n",
        ),
        ("static/index.html", "<h1>from the skiff shim</h1>"),
        (
            "tools/broken.wasm",
            "\0asm\u{d}\0\u{1}\0 not a component after all",
        ),
    ]);
    std::fs::copy(guest("http-guest"), dir.path().join("web.wasm")).unwrap();
    std::fs::copy(guest("cli-guest"), dir.path().join("tools/cli.wasm")).unwrap();
    std::fs::copy(guest("state-guest"), dir.path().join("state.wasm")).unwrap();
    dir
}

/// `skiff push --image REFERENCE APP`, which must succeed; the pinned reference it prints.
fn push_image(reference: &str, app: &Path) -> String {
    let pushed = skiff()
        .args(["push", "--image", reference])
        .arg(app)
        .output()
        .unwrap();
    assert!(
        pushed.status.success(),
        "skiff push --image failed:\n{}",
        String::from_utf8_lossy(&pushed.stderr)
    );
    String::from_utf8(pushed.stdout).unwrap().trim().to_string()
}

/// Pushes `app` as an image to `registry` and pulls it into `containerd`; the reference.
fn push_and_pull(registry: &Registry, containerd: &Containerd, app: &Path) -> String {
    let reference = format!("{}/apps/shim:v1", registry.addr);
    push_image(&reference, app);
    containerd.pull(&reference);
    reference
}

/// A port nobody listens on now (the container binds it on the host's network).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Containerd {
    /// `ctr run --rm` of `reference` with the skiff runtime on the host's network, in the
    /// foreground: the container's stdout and stderr are the child's.
    fn run(&self, reference: &str, id: &str, env: &[&str], args: &[&str]) -> Child {
        self.run_with(reference, id, env, args, &[])
    }

    /// `run`, with more options for `ctr run`.
    fn run_with(
        &self,
        reference: &str,
        id: &str,
        env: &[&str],
        args: &[&str],
        options: &[&str],
    ) -> Child {
        let id = &container_id(id);
        let mut command = Command::new("ctr");
        command
            .arg("--address")
            .arg(&self.socket)
            .args(["run", "--rm", "--net-host", "--snapshotter", SNAPSHOTTER])
            .args(["--runtime", SKIFF_RUNTIME])
            .args(options);
        for pair in env {
            command.args(["--env", pair]);
        }
        command
            .args([reference, id])
            .args(args)
            .env_remove("CONTAINERD_NAMESPACE")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        command.spawn().expect("running ctr run")
    }
}

/// `name`, made unique on this machine: runwasi keeps a container's state under
/// `/run/containerd/skiff/NAMESPACE/ID` whichever containerd started it, so tests running at
/// once (each its own process) must not share an id.
fn container_id(name: &str) -> String {
    format!("{name}-{}", std::process::id())
}

/// Output of a finished `ctr run` child: its status code, stdout and stderr.
fn finish(child: Child) -> (Option<i32>, String, String) {
    let out = child.wait_with_output().unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Polls `url` until it answers 200 (the container is up), failing early if `child` exits.
async fn wait_until_serving(child: &mut Child, url: &str, containerd: &Containerd) {
    let client = common::client();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(response) = client.get(url).send().await
            && response.status() == 200
        {
            return;
        }
        if let Some(status) = child.try_wait().unwrap() {
            let mut stderr = String::new();
            std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut stderr).unwrap();
            panic!(
                "the container exited ({status}) before serving {url}:\n{stderr}\ncontainerd:\n{}",
                containerd.log()
            );
        }
        assert!(
            Instant::now() < deadline,
            "{url} did not answer within 60 s:\n{}",
            containerd.log()
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_shim_serves_an_app_image_logs_to_the_task_and_drains_on_sigterm() {
    let registry = Registry::plain();
    let containerd = Containerd::start();
    let app = shim_app_folder();
    let reference = push_and_pull(&registry, &containerd, app.path());
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");

    let metrics_port = free_port();
    // The container's memory limit (a Pod's `resources.limits.memory`) caps the guests below
    // it: 96 MiB leaves them 64 MiB, less than the default of 128 MiB. On this cgroup v1 host
    // the container cannot read its cgroup; a Pod gives the limit through the Downward API.
    let mut child = containerd.run_with(
        &reference,
        "web",
        &[
            &format!("SKIFF_PORT={port}"),
            &format!("SKIFF_METRICS_PORT={metrics_port}"),
            "SKIFF_VAR_GREETING=from the pod",
            &format!("SKIFF_MEMORY_LIMIT={}", 96u64 << 20),
        ],
        &[],
        &["--memory-limit", &(96u64 << 20).to_string()],
    );
    wait_until_serving(
        &mut child,
        &format!("{base}/static/index.html"),
        &containerd,
    )
    .await;
    let client = common::client();
    let page = client
        .get(format!("{base}/file?path=/static/index.html"))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 200);
    assert_eq!(page.text().await.unwrap(), "<h1>from the skiff shim</h1>");
    let logged = client.get(format!("{base}/log")).send().await.unwrap();
    assert_eq!(logged.status(), 200);
    // The components were compiled into the node's cache, and the container, now serving,
    // holds no way back to it: a guest that escaped its sandbox could not plant code there.
    let cached: Vec<String> = std::fs::read_dir(containerd.shim_cache())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|name| name.ends_with(".component.cwasm"))
        .collect();
    assert_eq!(cached.len(), 2, "http-guest and state-guest: {cached:?}");
    let pid = containerd.task_pid(&container_id("web"));
    let cache = containerd.shim_cache().canonicalize().unwrap();
    for fd in std::fs::read_dir(format!("/proc/{pid}/fd")).unwrap() {
        let target = std::fs::read_link(fd.unwrap().path()).unwrap_or_default();
        assert!(
            !target.starts_with(&cache),
            "the container still holds {}",
            target.display()
        );
    }
    let greeting = client
        .get(format!("{base}/state/config/greeting"))
        .send()
        .await
        .unwrap();
    assert_eq!(greeting.text().await.unwrap(), "from the pod");
    let small = client
        .get(format!("{base}/alloc?mib=16"))
        .send()
        .await
        .unwrap();
    assert_eq!(small.status(), 200);
    let large = client
        .get(format!("{base}/alloc?mib=80"))
        .send()
        .await
        .unwrap();
    assert_eq!(large.status(), 500, "80 MiB fit in a 96 MiB container");
    let metrics = client
        .get(format!("http://127.0.0.1:{metrics_port}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics
            .contains("skiff_http_requests_total{tenant=\"\",app=\"hello\",component=\"config\""),
        "{metrics}"
    );

    // A request in flight when SIGTERM arrives is answered; then the task ends cleanly.
    let slow = tokio::spawn({
        let client = client.clone();
        let url = format!("{base}/sleep?ms=1500");
        async move { client.get(url).send().await.map(|r| r.status().as_u16()) }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    containerd.ctr_ok(&["task", "kill", &container_id("web")]);
    assert_eq!(
        slow.await.unwrap().unwrap(),
        200,
        "the request in flight was cut"
    );
    let (code, stdout, stderr) = finish(child);
    assert_eq!(code, Some(0), "stdout:\n{stdout}\nstderr:\n{stderr}");
    let output = format!("{stdout}{stderr}");
    for expected in [
        &format!("serving http://0.0.0.0:{port}") as &str,
        "hello stdout from http-guest",
        "hello stderr from http-guest",
        "the container's memory limit leaves guests 67108864 bytes",
        "shutdown requested",
    ] {
        assert!(output.contains(expected), "no `{expected}` in:\n{output}");
    }
    assert!(
        client.get(format!("{base}/log")).send().await.is_err(),
        "still answering after the task ended"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_shim_runs_commands_to_their_exit_code_with_the_containers_args_and_env() {
    let registry = Registry::plain();
    let containerd = Containerd::start();
    let app = shim_app_folder();
    let reference = push_and_pull(&registry, &containerd, app.path());

    let child = containerd.run(&reference, "exit", &[], &["/tools/cli.wasm", "exit", "7"]);
    let (code, _, stderr) = finish(child);
    assert_eq!(code, Some(7), "{stderr}");

    let child = containerd.run(
        &reference,
        "env",
        &["GREETING=hello from the pod spec"],
        &["/tools/cli.wasm", "env", "GREETING"],
    );
    let (code, stdout, stderr) = finish(child);
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(stdout, "hello from the pod spec\n");

    let child = containerd.run(
        &reference,
        "args",
        &[],
        &["/tools/cli.wasm", "args", "one", "two words"],
    );
    let (code, stdout, stderr) = finish(child);
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(stdout, "one\ntwo words\n");
}

#[tokio::test(flavor = "multi_thread")]
async fn two_apps_run_at_once_sigkill_ends_one_and_a_bad_image_fails_with_a_clear_message() {
    let registry = Registry::plain();
    let containerd = Containerd::start();
    let app = shim_app_folder();
    let reference = push_and_pull(&registry, &containerd, app.path());
    let (port_a, port_b) = (free_port(), free_port());

    let mut a = containerd.run(&reference, "a", &[&format!("SKIFF_PORT={port_a}")], &[]);
    let url_a = format!("http://127.0.0.1:{port_a}/static/index.html");
    wait_until_serving(&mut a, &url_a, &containerd).await;
    // The second container of the same image finds its code in the node's cache.
    let mut b = containerd.run(&reference, "b", &[&format!("SKIFF_PORT={port_b}")], &[]);
    let url_b = format!("http://127.0.0.1:{port_b}/static/index.html");
    wait_until_serving(&mut b, &url_b, &containerd).await;

    containerd.ctr_ok(&["task", "kill", "--signal", "SIGKILL", &container_id("a")]);
    let (code, _, _) = finish(a);
    assert_eq!(code, Some(137), "SIGKILL should end the task as killed");
    let still = common::client().get(&url_b).send().await.unwrap();
    assert_eq!(still.status(), 200, "the other app stopped with the first");
    containerd.ctr_ok(&["task", "kill", &container_id("b")]);
    let (code, stdout, stderr) = finish(b);
    assert_eq!(code, Some(0), "{stderr}");
    let output = format!("{stdout}{stderr}");
    assert!(
        output.contains("serving http://") && !output.contains("compiling"),
        "the second start compiled again:\n{output}"
    );
    let containers = containerd.ctr_ok(&["container", "ls", "--quiet"]);
    assert!(containers.trim().is_empty(), "left behind: {containers}");

    // An entrypoint that is Wasm in name only: the task does not start, and containerd's log
    // says why.
    let child = containerd.run(&reference, "broken", &[], &["/tools/broken.wasm"]);
    let (code, stdout, stderr) = finish(child);
    assert_ne!(code, Some(0), "{stdout}{stderr}");
    let told = format!("{stderr}{}", containerd.log());
    assert!(
        told.contains("/tools/broken.wasm is no valid component"),
        "no clear message:\n{told}"
    );

    // An entrypoint the image does not have, or one that is no Wasm.
    for (entrypoint, message) in [
        (
            "/app/skiff.toml",
            "the entrypoint /app/skiff.toml is no file in the image",
        ),
        (
            "/static/index.html",
            "the entrypoint /static/index.html is neither a skiff manifest (.toml) nor a Wasm file",
        ),
    ] {
        let child = containerd.run(&reference, "wrong", &[], &[entrypoint]);
        let (code, stdout, stderr) = finish(child);
        assert_ne!(code, Some(0), "{stdout}{stderr}");
        let told = format!("{stderr}{}", containerd.log());
        assert!(told.contains(message), "no `{message}` in:\n{told}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn component_images_are_served_or_run_as_commands_with_the_containers_env() {
    let registry = Registry::plain();
    let containerd = Containerd::start();
    let files = tempfile::tempdir().unwrap();
    let (cli, web) = (files.path().join("cli.wasm"), files.path().join("web.wasm"));
    std::fs::copy(guest("cli-guest"), &cli).unwrap();
    std::fs::copy(guest("http-guest"), &web).unwrap();
    let cli_image = format!("{}/tools/cli:v1", registry.addr);
    let web_image = format!("{}/apps/web:v1", registry.addr);
    push_image(&cli_image, &cli);
    push_image(&web_image, &web);
    containerd.pull(&cli_image);
    containerd.pull(&web_image);

    // The image's entrypoint is the command (`/cli.wasm`), here without arguments: usage.
    let (code, _, stderr) = finish(containerd.run(&cli_image, "cli", &[], &[]));
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("usage: cli-guest"), "{stderr}");
    let (code, _, stderr) =
        finish(containerd.run(&cli_image, "cli", &[], &["/cli.wasm", "exit", "5"]));
    assert_eq!(code, Some(5), "{stderr}");

    // A wasi:http component is served, with the container's environment less skiff's own
    // settings.
    let port = free_port();
    let mut web_task = containerd.run(
        &web_image,
        "web",
        &[&format!("SKIFF_PORT={port}"), "GREETING=hello from the pod"],
        &[],
    );
    let base = format!("http://127.0.0.1:{port}");
    wait_until_serving(&mut web_task, &format!("{base}/env/GREETING"), &containerd).await;
    let client = common::client();
    let greeting = client
        .get(format!("{base}/env/GREETING"))
        .send()
        .await
        .unwrap();
    assert_eq!(greeting.text().await.unwrap(), "hello from the pod");
    let setting = client
        .get(format!("{base}/env/SKIFF_PORT"))
        .send()
        .await
        .unwrap();
    assert_eq!(setting.status(), 404, "the guest sees skiff's own settings");
    containerd.ctr_ok(&["task", "kill", &container_id("web")]);
    assert_eq!(finish(web_task).0, Some(0));

    // A WASI 0.3 component (`wasi:http/handler@0.3`, component-model async) is served too.
    let p3 = files.path().join("p3.wasm");
    std::fs::copy(guest("http-p3-guest"), &p3).unwrap();
    let p3_image = format!("{}/apps/p3:v1", registry.addr);
    push_image(&p3_image, &p3);
    containerd.pull(&p3_image);
    let port = free_port();
    let mut p3_task = containerd.run(
        &p3_image,
        "p3",
        &[
            &format!("SKIFF_PORT={port}"),
            "GREETING=hello from a 0.3 pod",
        ],
        &[],
    );
    let base = format!("http://127.0.0.1:{port}");
    wait_until_serving(&mut p3_task, &format!("{base}/env?GREETING"), &containerd).await;
    let greeting = client
        .get(format!("{base}/env?GREETING"))
        .send()
        .await
        .unwrap();
    assert_eq!(greeting.text().await.unwrap(), "hello from a 0.3 pod\n");
    containerd.ctr_ok(&["task", "kill", &container_id("p3")]);
    assert_eq!(finish(p3_task).0, Some(0));

    // skiff itself tells such an image from an app, and says what to do.
    let out = skiff().args(["pull", &web_image]).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && stderr.contains("push it without --image to run it here"),
        "{stderr}"
    );
}
