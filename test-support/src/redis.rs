//! A real `redis-server` (Debian `redis-server`, installed by `.ci/run`) on a free loopback
//! port, with no persistence, started and stopped by PID. A missing server is a test
//! failure, never a skip.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use crate::process::{Proc, wait_for_log_line};

const INSTALL: &str =
    "redis-server is required (apt-get install redis-server; .ci/run installs it)";

/// A `redis-server` child; killed by PID on drop.
pub struct RedisServer {
    pub port: u16,
    dir: PathBuf,
    proc: Option<Proc>,
    starts: u32,
}

impl RedisServer {
    /// Starts a server on a free port, logging into `dir`.
    pub fn start(dir: PathBuf) -> RedisServer {
        let mut server = RedisServer {
            port: crate::free_port(),
            dir,
            proc: None,
            starts: 0,
        };
        server.restart();
        server
    }

    /// `redis://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Starts the server again on the same port (after [`RedisServer::kill`]); its data
    /// is gone, as after a crash without persistence.
    pub fn restart(&mut self) {
        assert!(self.proc.is_none(), "redis-server is already running");
        if Command::new("redis-server")
            .arg("--version")
            .output()
            .is_err()
        {
            panic!("{INSTALL}: cannot run redis-server");
        }
        self.starts += 1;
        let mut cmd = Command::new("redis-server");
        cmd.args(["--port", &self.port.to_string()])
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .current_dir(&self.dir);
        let log = self
            .dir
            .join(format!("redis-{}-{}.log", self.port, self.starts));
        let mut proc = Proc::spawn("redis-server", cmd, log);
        wait_for_log_line(
            &mut proc,
            "Ready to accept connections",
            Duration::from_secs(15),
        );
        self.proc = Some(proc);
    }

    /// SIGKILL, at once: Redis vanishes as in a crash.
    pub fn kill(&mut self) {
        if let Some(mut proc) = self.proc.take() {
            proc.kill();
        }
    }

    /// Runs one command through `redis-cli` (redis-tools, a dependency of redis-server)
    /// and returns its raw output, trimmed.
    pub fn cli(&self, args: &[&str]) -> String {
        let out = Command::new("redis-cli")
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string()])
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("{INSTALL}: cannot run redis-cli: {e}"));
        assert!(out.status.success(), "redis-cli {args:?}: {out:?}");
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn starts_answers_and_restarts_on_the_same_port() {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut redis = RedisServer::start(dir.path().to_owned());
        assert_eq!(redis.cli(&["PING"]), "PONG");
        redis.cli(&["SET", "k", "v"]);
        let port = redis.port;
        redis.kill();
        redis.restart();
        assert_eq!(redis.port, port);
        assert_eq!(redis.cli(&["EXISTS", "k"]), "0", "no persistence");
    }
}
