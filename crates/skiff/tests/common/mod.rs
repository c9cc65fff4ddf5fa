//! Shared pieces of the integration tests: the guest fixtures (built from source in
//! `tests/guests` once per test run; cargo's own lock serialises concurrent builders and makes
//! later calls no-ops) and a handle on a real `skiff` process listening on `127.0.0.1:0`.

#![allow(dead_code)]

pub mod ca;
pub mod host;
pub mod redis;
pub mod registry;
pub mod upstream;

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap()
}

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .map(|dir| {
            if dir.is_absolute() {
                dir
            } else {
                repo_root().join(dir)
            }
        })
        .unwrap_or_else(|| repo_root().join("target"))
}

fn guests_dir() -> PathBuf {
    target_dir().join("guests")
}

/// Builds the guests (both targets) once per test process.
fn build_guests() -> &'static Path {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT.get_or_init(|| {
        let status = Command::new("bash")
            .arg(repo_root().join("scripts/build-guests.sh"))
            .env("CARGO_TARGET_DIR", target_dir())
            .status()
            .expect("running scripts/build-guests.sh");
        assert!(status.success(), "building the guest fixtures failed");
        guests_dir()
    })
}

/// Builds one polyglot guest (`python` or `js`) with scripts/build-polyglot-guests.sh, which
/// installs the language's tools under the target dir first; a file lock keeps concurrent test
/// processes from running the installs side by side.
pub fn polyglot_guest(language: &str, file: &str) -> PathBuf {
    let guests = build_guests();
    let lock = std::fs::File::create(guests.join("polyglot.lock")).unwrap();
    lock.lock().unwrap();
    let status = Command::new("bash")
        .arg(repo_root().join("scripts/build-polyglot-guests.sh"))
        .arg(language)
        .env("CARGO_TARGET_DIR", target_dir())
        .status()
        .unwrap();
    assert!(status.success(), "building the {language} guest failed");
    let path = guests.join(file);
    assert!(path.exists(), "{}", path.display());
    path
}

/// Where scripts/build-polyglot-guests.sh installs the languages' tools.
pub fn polyglot_tools() -> PathBuf {
    target_dir().join("polyglot-tools")
}

/// The folder under `polyglot_tools()` where scripts/build-polyglot-guests.sh installed
/// `program` (as `bin/<program>`); none when it did not install it (a pinned one was already
/// on PATH).
pub fn installed_tool(program: &str) -> Option<PathBuf> {
    std::fs::read_dir(polyglot_tools())
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .find(|root| root.join("bin").join(program).exists())
}

/// The `wasm-component-ld` that rustup ships beside rustc (Rust's linker for wasm32-wasip2), if
/// this toolchain has one.
pub fn shipped_wasm_component_ld() -> Option<PathBuf> {
    let rustc = |args: &[&str]| {
        let output = Command::new("rustc").args(args).output().unwrap();
        String::from_utf8(output.stdout).unwrap()
    };
    let sysroot = rustc(&["--print", "sysroot"]);
    let host = rustc(&["-vV"])
        .lines()
        .find_map(|line| line.strip_prefix("host: ").map(str::to_owned))?;
    let path = Path::new(sysroot.trim())
        .join("lib/rustlib")
        .join(host)
        .join("bin/wasm-component-ld");
    path.exists().then_some(path)
}

/// The path of a guest built for `wasm32-wasip2` (a component).
pub fn guest(name: &str) -> PathBuf {
    let path = build_guests()
        .join("wasm32-wasip2/release")
        .join(format!("{}.wasm", name.replace('-', "_")));
    if path.exists() {
        return path;
    }
    // Binaries keep their dashes; libraries get underscores.
    let path = guests_dir()
        .join("wasm32-wasip2/release")
        .join(format!("{name}.wasm"));
    assert!(
        path.exists(),
        "guest {name} was not built: {}",
        path.display()
    );
    path
}

/// The path of a guest built for `wasm32-wasip1` (a core module).
pub fn guest_p1(name: &str) -> PathBuf {
    let path = build_guests()
        .join("wasm32-wasip1/release")
        .join(format!("{name}.wasm"));
    assert!(
        path.exists(),
        "guest {name} was not built: {}",
        path.display()
    );
    path
}

/// A code cache shared by the tests of one run, so each guest is compiled once, not once per
/// test (cache tests make their own).
pub fn shared_cache_dir() -> PathBuf {
    target_dir().join("test-code-cache")
}

/// A fresh data folder (key-value databases) for one skiff process, so that parallel tests
/// never share state or contend for a database file. Left under the target folder.
pub fn fresh_data_dir() -> PathBuf {
    static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = target_dir()
        .join("test-data")
        .join(format!("{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

pub fn skiff() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_skiff"));
    let data_dir = fresh_data_dir();
    command.env("SKIFF_CACHE_DIR", shared_cache_dir());
    // A client config file that does not exist, so that no test reads the machine's
    // `~/.config/skiff/config.toml` (a saved server or token); tests of `skiff login` set
    // their own.
    command.env("SKIFF_CONFIG", data_dir.join("client-config.toml"));
    command.env("SKIFF_DATA_DIR", data_dir);
    command.env_remove("RUST_LOG");
    command
}

/// Waits until `check` holds, failing with `what` once `bound` has passed: tests wait for
/// what they expect, for as long as a loaded machine may need, and never assert a timing.
pub async fn eventually<F, Fut>(bound: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let started = Instant::now();
    while !check().await {
        assert!(started.elapsed() < bound, "not within {bound:?}: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A running `skiff serve` or `skiff up`, killed when dropped.
pub struct Server {
    child: Child,
    pub url: String,
    pub stdout_lines: Vec<String>,
    stderr: Arc<Mutex<String>>,
}

impl Server {
    /// Starts `skiff ARGS... --listen 127.0.0.1:0` (unless ARGS has a `--listen`) and waits for
    /// its "Serving" line.
    pub fn start(args: &[&str]) -> Server {
        Self::start_with(skiff(), args)
    }

    pub fn start_with(mut command: Command, args: &[&str]) -> Server {
        let mut child = command
            .args(args)
            .args(if args.contains(&"--listen") {
                &[][..]
            } else {
                &["--listen", "127.0.0.1:0"][..]
            })
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("starting skiff");
        let stderr = Arc::new(Mutex::new(String::new()));
        {
            let stderr = stderr.clone();
            let mut pipe = child.stderr.take().unwrap();
            std::thread::spawn(move || {
                let mut buffer = [0u8; 8192];
                while let Ok(n) = pipe.read(&mut buffer) {
                    if n == 0 {
                        break;
                    }
                    stderr
                        .lock()
                        .unwrap()
                        .push_str(&String::from_utf8_lossy(&buffer[..n]));
                }
            });
        }
        let (lines_tx, lines_rx) = std::sync::mpsc::channel();
        let stdout = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if lines_tx.send(line).is_err() {
                    break;
                }
            }
        });
        let deadline = Instant::now() + Duration::from_secs(180);
        let mut stdout_lines = Vec::new();
        let url = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match lines_rx.recv_timeout(left) {
                Ok(line) => {
                    let url = line.strip_prefix("Serving ").map(str::to_string);
                    stdout_lines.push(line);
                    if let Some(url) = url {
                        break url;
                    }
                }
                Err(_) => {
                    let _ = child.kill();
                    let status = child.wait().ok();
                    std::thread::sleep(Duration::from_millis(100));
                    panic!(
                        "skiff did not start ({status:?}); stdout: {stdout_lines:?}; stderr:\n{}",
                        stderr.lock().unwrap()
                    );
                }
            }
        };
        // The route lines follow right after the URL; collect what has arrived shortly.
        let settle = Instant::now() + Duration::from_millis(300);
        while let Ok(line) = lines_rx.recv_timeout(settle.saturating_duration_since(Instant::now()))
        {
            stdout_lines.push(line);
        }
        Server {
            child,
            url,
            stdout_lines,
            stderr,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.url, path)
    }

    /// The Prometheus text of a server started with `--metrics-listen`, at the address it
    /// printed.
    pub async fn metrics(&self) -> String {
        let metrics_url = self
            .stdout_lines
            .iter()
            .find_map(|line| line.strip_prefix("Metrics "))
            .unwrap_or_else(|| panic!("no metrics line in {:?}", self.stdout_lines));
        let response = client().get(metrics_url).send().await.unwrap();
        response.text().await.unwrap()
    }

    /// Everything skiff has logged so far.
    pub fn logs(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// Waits until the log holds `needle` (log lines may trail the response a little).
    pub fn wait_for_log(&self, needle: &str) -> String {
        self.wait_for_log_within(needle, 10)
    }

    /// [`Server::wait_for_log`], for up to `seconds`.
    pub fn wait_for_log_within(&self, needle: &str, seconds: u64) -> String {
        let deadline = Instant::now() + Duration::from_secs(seconds);
        loop {
            let logs = self.logs();
            if logs.contains(needle) || Instant::now() > deadline {
                return logs;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn child(&mut self) -> &mut Child {
        &mut self.child
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Waits up to 10 s for something to listen on 127.0.0.1:`port`; fails naming `what`.
pub fn wait_for_port(port: u16, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "{what} did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
}

pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap()
}

/// A GET of `path` on `server`: the status and the body as text.
pub async fn get(server: &Server, path: &str) -> (u16, String) {
    let response = client().get(server.url(path)).send().await.unwrap();
    (response.status().as_u16(), response.text().await.unwrap())
}

/// Writes `files` (relative path, contents) into a fresh temporary folder.
pub fn app_dir(files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for (path, contents) in files {
        let path = dir.path().join(path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, contents).unwrap();
    }
    dir
}

/// CPU time (user and system) a process has used so far, from `/proc/PID/stat`.
pub fn cpu_time(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the command name (which may hold spaces) start with the state, field 3;
    // utime and stime are fields 14 and 15, in clock ticks.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .unwrap()
        .1
        .split_whitespace()
        .collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    // Linux reports these in USER_HZ, which is 100 whatever the kernel's own tick rate.
    Duration::from_millis(ticks * 10)
}

/// CPU time `pid` uses over `window`, after waiting `settle` first.
pub async fn cpu_used(pid: u32, settle: Duration, window: Duration) -> Duration {
    tokio::time::sleep(settle).await;
    let before = cpu_time(pid);
    tokio::time::sleep(window).await;
    cpu_time(pid).saturating_sub(before)
}

/// Sends SIGTERM to `pid`.
pub fn sigterm(pid: u32) {
    signal(pid, "TERM");
}

/// Sends signal `name` (`TERM`, `STOP`, `CONT`, ...) to `pid`.
pub fn signal(pid: u32, name: &str) {
    let status = Command::new("kill")
        .args([&format!("-{name}"), &pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success(), "kill -{name} {pid} failed");
}

/// Waits up to `bound` for `child` to exit; `None` if it is still running then.
pub fn wait_for_exit(child: &mut Child, bound: Duration) -> Option<std::process::ExitStatus> {
    let started = Instant::now();
    while started.elapsed() < bound {
        if let Some(status) = child.try_wait().unwrap() {
            return Some(status);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    None
}
