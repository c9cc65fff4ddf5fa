//! A real `redis-server` for the tests and the benchmark: started on a free loopback port with
//! no persistence, killed when dropped. Shared by `tests/conformance.rs` and `benches/ops.rs`.

// Each user takes what it needs: the benchmark uses less than the tests.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A `redis-server` child process, killed on drop.
pub struct RedisServer {
    child: Option<Child>,
    port: u16,
    extra_args: Vec<String>,
}

impl RedisServer {
    /// Starts a server on a free loopback port. Panics, saying how to install it, when
    /// `redis-server` is missing: the Redis tests must fail rather than pass unrun.
    pub fn start() -> Self {
        Self::start_with(&[])
    }

    /// As [`start`](Self::start), with more `redis-server` arguments (e.g. `--requirepass`).
    pub fn start_with(extra_args: &[&str]) -> Self {
        let extra_args: Vec<String> = extra_args.iter().map(|a| a.to_string()).collect();
        // Another test may take the port between our probe and the server's bind; then the
        // server exits at once and we try another port.
        for _ in 0..5 {
            let mut server = RedisServer {
                child: None,
                port: free_port(),
                extra_args: extra_args.clone(),
            };
            if server.try_start() {
                return server;
            }
        }
        panic!("redis-server did not start on any of 5 free ports");
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    /// Kills the server (as a crash would: no shutdown, no save).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same port, after [`stop`](Self::stop).
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "restart() needs stop() first");
        let deadline = Instant::now() + Duration::from_secs(10);
        // The old server's port can take a moment to be free for the new one.
        while !self.try_start() {
            assert!(
                Instant::now() < deadline,
                "redis-server did not restart on port {}",
                self.port
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Freezes the server (SIGSTOP): connections stay open, nothing answers.
    pub fn pause(&self) {
        self.signal("-STOP");
    }

    pub fn resume(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, signal: &str) {
        let pid = self.child.as_ref().expect("server is running").id();
        let status = Command::new("kill")
            .args([signal, &pid.to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill {signal} {pid} failed");
    }

    /// Starts `redis-server` on `self.port`; true once it answers PING, false if it exited.
    fn try_start(&mut self) -> bool {
        let port = self.port.to_string();
        let dir = std::env::temp_dir();
        let spawned = Command::new("redis-server")
            .args(["--port", &port, "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
            .arg("--dir")
            .arg(&dir)
            .args(&self.extra_args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
        let mut child = match spawned {
            Ok(child) => child,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => panic!(
                "redis-server is not installed, and the Redis tests need a real Redis: install \
                 it with `apt-get install -y redis-server` (.ci/run does this)"
            ),
            Err(e) => panic!("cannot start redis-server: {e}"),
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(Some(_)) = child.try_wait() {
                return false;
            }
            if answers_ping(self.port) {
                self.child = Some(child);
                return true;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "redis-server on port {} did not answer PING in 10 s",
                    self.port
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        // SIGKILL ends a paused (SIGSTOPped) server too.
        self.stop();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind a loopback port")
        .port()
}

fn answers_ping(port: u16) -> bool {
    let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(1)));
    if stream.write_all(b"PING\r\n").is_err() {
        return false;
    }
    let mut reply = [0u8; 64];
    match stream.read(&mut reply) {
        // `+PONG`, or `-NOAUTH` from a server started with --requirepass: either way it is up.
        Ok(n) => n > 0 && (reply[..n].starts_with(b"+PONG") || reply[..n].starts_with(b"-NOAUTH")),
        Err(_) => false,
    }
}
