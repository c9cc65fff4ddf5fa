//! A real `redis-server` for the tests that share state through Redis.

use std::process::{Command, Stdio};

/// A real `redis-server` on a free loopback port, stopped when dropped.
pub struct Redis {
    child: std::process::Child,
    pub port: u16,
    /// With `--appendonly yes` in this folder: what was written survives a restart.
    persistent: Option<tempfile::TempDir>,
}

impl Redis {
    pub fn start() -> Redis {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        Self::start_on(port)
    }

    pub fn start_on(port: u16) -> Redis {
        Self::spawn(port, None)
    }

    /// A Redis that writes every change to its append-only file before answering, so that
    /// [`restart`](Self::restart) finds all of it again, as a production Redis would.
    pub fn start_persistent() -> Redis {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        Self::spawn(port, Some(tempfile::tempdir().unwrap()))
    }

    /// Kills Redis (as a crash would) and waits for it to be gone.
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Starts Redis again on the same port, with the same files.
    pub fn restart(&mut self) {
        self.stop();
        let restarted = Self::spawn(self.port, self.persistent.take());
        *self = restarted;
    }

    fn spawn(port: u16, persistent: Option<tempfile::TempDir>) -> Redis {
        let mut command = Command::new("redis-server");
        command.args(["--port", &port.to_string(), "--bind", "127.0.0.1"]);
        match &persistent {
            Some(dir) => command
                .args([
                    "--save",
                    "",
                    "--appendonly",
                    "yes",
                    "--appendfsync",
                    "always",
                ])
                .arg("--dir")
                .arg(dir.path()),
            None => command.args(["--save", "", "--appendonly", "no"]),
        };
        let child = command
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server is needed for these tests: apt-get install -y redis-server");
        super::wait_for_port(port, "redis-server");
        Redis {
            child,
            port,
            persistent,
        }
    }

    /// Runs one command with `redis-cli` (Debian's redis-tools, which redis-server brings);
    /// returns its reply as redis-cli prints it.
    pub fn cli(&self, args: &[&str]) -> String {
        let output = Command::new("redis-cli")
            .args(["-p", &self.port.to_string()])
            .args(args)
            .output()
            .expect("redis-cli comes with redis-server");
        assert!(output.status.success(), "redis-cli {args:?}: {output:?}");
        String::from_utf8(output.stdout).unwrap()
    }

    /// How many times Redis has run `command` (lowercase) since it started, scripts included.
    pub fn calls(&self, command: &str) -> u64 {
        let stats = self.cli(&["INFO", "commandstats"]);
        let prefix = format!("cmdstat_{command}:calls=");
        stats
            .lines()
            .find_map(|line| line.strip_prefix(&prefix))
            .map_or(0, |rest| {
                rest.split(',').next().unwrap().trim().parse().unwrap()
            })
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
