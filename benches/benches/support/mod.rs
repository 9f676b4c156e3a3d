//! What more than one bench needs: the reference MCP server (the Python SDK fixture the
//! omni2-core tests use), started on a free loopback port and killed on drop.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

/// `omni2-core/tests/fixtures/mcp_server.py --json`, running.
pub struct PythonMcp {
    child: Child,
    /// Its loopback port.
    pub port: u16,
}

impl PythonMcp {
    /// Starts it; `None` when python3 or the `mcp` package is missing.
    pub fn start() -> Option<Self> {
        let script = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../omni2-core/tests/fixtures/mcp_server.py"
        );
        let mut child = Command::new("python3")
            .args([script, "--json"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .ok()?;
        let mut line = String::new();
        BufReader::new(child.stdout.take()?)
            .read_line(&mut line)
            .ok()?;
        let port = line.strip_prefix("PORT ")?.trim().parse().ok()?;
        Some(Self { child, port })
    }

    /// Its streamable-HTTP endpoint.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}/mcp", self.port)
    }

    /// Kills it now (a status change for whoever probes it).
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for PythonMcp {
    fn drop(&mut self) {
        self.kill();
    }
}
