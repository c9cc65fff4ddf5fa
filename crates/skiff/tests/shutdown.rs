//! Stopping: guests whose clients went away, and hosts asked to stop (SIGTERM) while guests
//! still compute. Whatever the guests do, a client that hangs up stops its guest, and a host
//! that is told to stop exits once its grace period is over. Measured by behaviour only: the
//! process's CPU time stops growing, the process exits, within generous bounds.

#![allow(clippy::unwrap_used, clippy::expect_used)] // A panic here is a failure with its message.

mod common;

use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::time::Duration;

use common::{Server, app_dir, client, cpu_time, cpu_used, guest, guest_p1, sigterm, skiff};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Far beyond any grace period or deadline the tests set: only a hang takes this long.
const EXIT_BOUND: Duration = Duration::from_secs(30);

/// Opens `n` connections that each send `GET path` and then wait, without reading.
async fn requests_in_flight(server: &Server, path: &str, n: usize) -> Vec<TcpStream> {
    let addr = server.url.trim_start_matches("http://").to_string();
    let mut streams = Vec::new();
    for _ in 0..n {
        let mut stream = TcpStream::connect(&addr).await.unwrap();
        let head = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n\r\n");
        stream.write_all(head.as_bytes()).await.unwrap();
        streams.push(stream);
    }
    streams
}

/// Waits until the guests are computing: the process uses CPU. Fails if it never does, since
/// then a later "CPU stopped growing" would prove nothing.
async fn wait_until_computing(pid: u32) {
    for _ in 0..20 {
        if cpu_used(pid, Duration::ZERO, Duration::from_millis(500)).await
            >= Duration::from_millis(200)
        {
            return;
        }
    }
    panic!("the guests never started computing");
}

fn exited(server: &mut Server, why: &str) -> std::process::ExitStatus {
    match common::wait_for_exit(server.child(), EXIT_BOUND) {
        Some(status) => status,
        None => panic!(
            "{why}: skiff still runs {EXIT_BOUND:?} after SIGTERM; log:\n{}",
            server.logs()
        ),
    }
}

/// The scenario of the report: four requests to a guest that computes for ever, whose clients
/// hang up after a second, then SIGTERM. skiff used to log `stopped` and then spin in guest
/// code for ever: the epoch thread ended with the runtime, and with it every deadline.
#[tokio::test]
async fn sigterm_after_clients_hung_up_on_computing_guests_exits() {
    let wasm = guest("http-guest");
    let mut server = Server::start(&[
        "--log-level",
        "info",
        "serve",
        "--timeout",
        "3s",
        wasm.to_str().unwrap(),
    ]);
    let pid = server.pid();
    let clients = requests_in_flight(&server, "/spin", 4).await;
    wait_until_computing(pid).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    drop(clients);
    sigterm(pid);
    let status = exited(&mut server, "abandoned guests kept the host alive");
    assert!(status.success(), "{status:?}; log:\n{}", server.logs());
    // The log is read on a thread of its own, which may still be behind the exit.
    let logs = server.wait_for_log("stopped");
    assert!(logs.contains("stopped"), "{logs}");
}

/// A client that goes away stops its guest: before the response head (a guest computing for
/// ever) and after it (a guest holding its response open, and its instance with it).
#[tokio::test]
async fn a_client_that_hangs_up_stops_its_guest() {
    let wasm = guest("http-guest");
    let wasm = wasm.to_str().unwrap();
    let manifest = format!(
        r#"
[app]
name = "hang-up"

[component.spin]
source = "{wasm}"
route = "/spin/..."
limits = {{ timeout = "5m" }}

[component.hold]
source = "{wasm}"
route = "/hold/..."
limits = {{ timeout = "5m", max_concurrency = 1 }}
"#
    );
    let dir = app_dir(&[("skiff.toml", &manifest)]);
    let server = Server::start(&[
        "up",
        dir.path().join("skiff.toml").to_str().unwrap(),
        "--log-level",
        "info,skiff_runtime=debug",
    ]);
    let pid = server.pid();

    // Before the head: two guests compute, their clients hang up, the CPU use stops.
    let clients = requests_in_flight(&server, "/spin/spin", 2).await;
    wait_until_computing(pid).await;
    drop(clients);
    let used = cpu_used(pid, Duration::from_secs(1), Duration::from_secs(2)).await;
    assert!(
        used < Duration::from_millis(500),
        "the guests went on computing after their clients left: {used:?} of CPU in 2 s"
    );
    let logs = server.wait_for_log("the client went away: stopping its guest");
    assert!(logs.contains("the client went away"), "{logs}");

    // After the head: the one instance `hold` may have is freed when its client goes away,
    // long before its five-minute deadline.
    let mut held = requests_in_flight(&server, "/hold/hold", 1).await;
    let mut first = vec![0u8; 256];
    let n = held[0].read(&mut first).await.unwrap();
    assert!(
        String::from_utf8_lossy(&first[..n]).starts_with("HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&first[..n])
    );
    let busy = client()
        .get(server.url("/hold/count"))
        .send()
        .await
        .unwrap();
    assert_eq!(busy.status(), 503, "the held instance is in use");
    drop(held);
    let mut status = 503;
    for _ in 0..100 {
        status = client()
            .get(server.url("/hold/count"))
            .send()
            .await
            .unwrap()
            .status()
            .as_u16();
        if status == 200 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        status, 200,
        "the instance stayed held after its client left"
    );
}

/// SIGTERM while clients still wait on guests that compute for ever, and on one that waits on
/// the host for ever (it holds its response open): the host waits out its grace period, then
/// stops every guest and exits 0. On a work-stealing runtime and on a single thread alike.
#[tokio::test]
async fn sigterm_stops_guests_still_running_after_the_grace_period() {
    let wasm = guest("http-guest");
    for threads in ["2", "1"] {
        let mut server = Server::start(&[
            "--log-level",
            "info",
            "serve",
            "--threads",
            threads,
            "--timeout",
            "5m",
            "--shutdown-grace",
            "1s",
            wasm.to_str().unwrap(),
        ]);
        let pid = server.pid();
        let mut clients = requests_in_flight(&server, "/spin", 2).await;
        clients.extend(requests_in_flight(&server, "/hold", 1).await);
        wait_until_computing(pid).await;
        sigterm(pid);
        let status = exited(&mut server, "guests still running kept the host alive");
        assert!(status.success(), "{status:?}; log:\n{}", server.logs());
        let logs = server.logs();
        assert!(
            logs.contains("waiting for 3 open connection(s)")
                && logs.contains("the host is shutting down and stopped the component")
                && logs.contains("stopped"),
            "--threads {threads}: {logs}"
        );
        // The clients learn that their requests are over: a 503, a response cut off, or the
        // connection closed; never a hang.
        for stream in &mut clients {
            let mut answer = Vec::new();
            let read = tokio::time::timeout(EXIT_BOUND, stream.read_to_end(&mut answer)).await;
            assert!(read.is_ok(), "--threads {threads}: a client still waits");
            let answer = String::from_utf8_lossy(&answer);
            assert!(
                answer.is_empty()
                    || answer.starts_with("HTTP/1.1 503")
                    || answer.starts_with("HTTP/1.1 200"),
                "{answer}"
            );
        }
    }
}

/// `skiff run` of a command that computes for ever ends on SIGTERM, with the exit code a
/// shell expects (143), also where SIGTERM's default action does nothing: skiff as PID 1 of a
/// container, emulated here by starting it with SIGTERM ignored.
#[test]
fn sigterm_ends_a_command_that_computes_for_ever() {
    for wasm in [guest("cli-guest"), guest_p1("cli-guest")] {
        for ignored in [false, true] {
            let args = ["run", wasm.to_str().unwrap(), "spin"];
            let mut command = if ignored {
                with_sigterm_ignored(skiff(), &args)
            } else {
                let mut command = skiff();
                command.args(args);
                command
            };
            let mut child = command
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .spawn()
                .unwrap();
            let mut line = String::new();
            BufReader::new(child.stdout.take().unwrap())
                .read_line(&mut line)
                .unwrap();
            assert_eq!(line, "spinning\n");
            let before = cpu_time(child.id());
            std::thread::sleep(Duration::from_millis(300));
            assert!(
                cpu_time(child.id()) > before,
                "the command is not computing"
            );
            sigterm(child.id());
            let status = common::wait_for_exit(&mut child, EXIT_BOUND);
            if status.is_none() {
                let _ = child.kill();
            }
            let status = status.unwrap_or_else(|| {
                panic!("skiff run still runs after SIGTERM (SIGTERM ignored: {ignored})")
            });
            assert_eq!(status.code(), Some(143), "SIGTERM ignored: {ignored}");
        }
    }
}

/// `skiff` run through `sh`, which ignores SIGTERM before it `exec`s skiff with `args`: a
/// process started with a signal ignored keeps it ignored, unless it handles the signal.
fn with_sigterm_ignored(skiff: std::process::Command, args: &[&str]) -> std::process::Command {
    let mut command = std::process::Command::new("sh");
    command
        .args(["-c", "trap '' TERM; exec \"$0\" \"$@\""])
        .arg(skiff.get_program())
        .args(args);
    for (name, value) in skiff.get_envs() {
        match value {
            Some(value) => command.env(name, value),
            None => command.env_remove(name),
        };
    }
    command
}
