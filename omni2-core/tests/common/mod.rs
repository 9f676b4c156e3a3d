//! Process-level helpers: the real Python MCP server, the real `omni2` binary, identity
//! headers. Children are [`Proc`] guards, killed by PID on drop; `eventually` is
//! test-support's.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use identity_wire::{SIGNATURE_HEADER, SigningKey, Slot};
use serde_json::{Value, json};
pub use test_support::eventually;
use test_support::{Proc, Signal};

pub const SECRET: &str = "test-secret-0123456789abcdef-0123456789";

fn fixture_path(script: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(script)
}

/// What the reader does with the pipe once the wanted line has come.
#[derive(Clone, Copy, PartialEq, Eq)]
enum AfterLine {
    /// Keep draining, so the child never blocks on a full pipe.
    Drain,
    /// Drop the reader: the pipe's read end is closed (the log-pipe tests).
    Close,
}

/// Reads `pipe` until a line starts with `prefix` (bounded by `limit`) and returns the rest.
fn read_line(
    pipe: std::process::ChildStdout,
    prefix: &str,
    limit: Duration,
    after: AfterLine,
) -> String {
    let (tx, rx) = std::sync::mpsc::channel();
    let wanted = prefix.to_owned();
    std::thread::spawn(move || {
        for line in BufReader::new(pipe).lines() {
            let Ok(line) = line else { break };
            if let Some(rest) = line.strip_prefix(&wanted) {
                let _ = tx.send(rest.trim().to_owned());
                if after == AfterLine::Close {
                    return;
                }
            }
        }
    });
    rx.recv_timeout(limit)
        .unwrap_or_else(|_| panic!("no line starting with {prefix:?} within {limit:?}"))
}

/// Reads the child's stdout until a line starts with `prefix`, then keeps draining it.
fn wait_for_line(child: &mut Child, prefix: &str, limit: Duration) -> String {
    let stdout = child.stdout.take().expect("piped stdout");
    read_line(stdout, prefix, limit, AfterLine::Drain)
}

/// The reference Python MCP server (mcp SDK), on 127.0.0.1.
pub struct McpServer {
    child: Option<Proc>,
    pub port: u16,
    args: Vec<String>,
    script: &'static str,
}

impl McpServer {
    pub fn start(args: &[&str]) -> Self {
        Self::start_script("mcp_server.py", args)
    }

    /// Another Python fixture of `tests/fixtures` with the same `--port`/`PORT` contract.
    pub fn start_script(script: &'static str, args: &[&str]) -> Self {
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        let (child, port) = Self::spawn(script, &args, 0);
        Self {
            child: Some(Proc::adopt(script, child)),
            port,
            args,
            script,
        }
    }

    fn spawn(script: &str, args: &[String], port: u16) -> (Child, u16) {
        let mut child = Command::new("python3")
            .arg(fixture_path(script))
            .arg("--port")
            .arg(port.to_string())
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("python3 with the mcp package (pip install mcp)");
        let port = wait_for_line(&mut child, "PORT ", Duration::from_secs(30))
            .parse()
            .expect("port number");
        (child, port)
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}/mcp", self.port)
    }

    fn proc(&self) -> &Proc {
        self.child.as_ref().expect("running")
    }

    /// SIGKILL and reap.
    pub fn kill(&mut self) {
        if let Some(mut p) = self.child.take() {
            p.kill();
        }
    }

    /// Starts again on the same port.
    pub fn restart(&mut self) {
        self.kill();
        let (child, port) = Self::spawn(self.script, &self.args, self.port);
        assert_eq!(port, self.port);
        self.child = Some(Proc::adopt(self.script, child));
    }

    pub fn pause(&self) {
        self.proc().signal(Signal::SIGSTOP);
    }

    pub fn resume(&self) {
        self.proc().signal(Signal::SIGCONT);
    }
}

impl Drop for McpServer {
    fn drop(&mut self) {
        if let Some(p) = &self.child {
            // A stopped process must be continued to die cleanly on some kernels.
            p.signal(Signal::SIGCONT);
        }
        self.kill();
    }
}

/// The real `omni2` binary with a config file.
pub struct Omni2 {
    child: Option<Proc>,
    pub addr: String,
    dir: tempfile::TempDir,
}

impl Omni2 {
    /// Starts `omni2 --config <yaml> --listen <listen>`; `listen` defaults to 127.0.0.1:0.
    pub fn start(yaml: &str, listen: Option<&str>) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("omni2.yaml");
        std::fs::write(&path, yaml).expect("write config");
        let mut child = Command::new(env!("CARGO_BIN_EXE_omni2"))
            .arg("--config")
            .arg(&path)
            .arg("--listen")
            .arg(listen.unwrap_or("127.0.0.1:0"))
            .args(["--workers", "2"])
            .env("OMNI2_TEST_SECRET", SECRET)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn omni2");
        let addr = wait_for_line(&mut child, "omni2 listening on ", Duration::from_secs(30));
        Self {
            child: Some(Proc::adopt("omni2", child)),
            addr,
            dir,
        }
    }

    /// Starts `omni2 --config <yaml>` logging at info with stdout and stderr on pipes whose
    /// read ends are closed once it listens: every later log line meets a broken pipe.
    pub fn start_with_logs_closed(yaml: &str) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("omni2.yaml");
        std::fs::write(&path, yaml).expect("write config");
        let mut child = Command::new(env!("CARGO_BIN_EXE_omni2"))
            .arg("--config")
            .arg(&path)
            .args(["--listen", "127.0.0.1:0", "--workers", "2"])
            .env("OMNI2_TEST_SECRET", SECRET)
            .env("RUST_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn omni2");
        let stderr = child.stderr.take().expect("piped stderr");
        let stdout = child.stdout.take().expect("piped stdout");
        let addr = read_line(
            stdout,
            "omni2 listening on ",
            Duration::from_secs(30),
            AfterLine::Close,
        );
        drop(stderr);
        Self {
            child: Some(Proc::adopt("omni2", child)),
            addr,
            dir,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// The `/metrics` exposition text.
    pub async fn metrics(&self, http: &reqwest::Client) -> String {
        let r = http
            .get(self.url("/metrics"))
            .send()
            .await
            .expect("metrics");
        r.text().await.expect("metrics text")
    }

    pub fn ws_url(&self) -> String {
        format!("ws://{}/ws/mcp-status", self.addr)
    }

    /// The config file it was started with (`--config`).
    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("omni2.yaml")
    }

    pub fn signal(&self, signal: Signal) {
        self.child.as_ref().expect("running").signal(signal);
    }

    pub fn sigterm(&self) {
        self.child
            .as_ref()
            .expect("running")
            .signal(Signal::SIGTERM);
    }

    /// Waits (bounded) for the process to exit; returns its success.
    pub fn wait_exit(&mut self, limit: Duration) -> bool {
        let mut p = self.child.take().expect("running");
        p.wait_exit(limit).success()
    }
}

impl Drop for Omni2 {
    fn drop(&mut self) {
        // At once: a clean shutdown with open sockets would only slow the tests down.
        if let Some(mut p) = self.child.take() {
            p.kill();
        }
    }
}

/// A config for one server at `url`, with short test intervals, plus `extra` top-level YAML.
pub fn config(servers: &[(&str, &str)], extra: &str) -> String {
    let mut yaml = String::from(extra);
    yaml.push_str(if servers.is_empty() {
        "\nservers: []\n"
    } else {
        "\nservers:\n"
    });
    for (name, url) in servers {
        yaml.push_str(&format!(
            r#"  - name: {name}
    url: {url}
    probe_interval: 200ms
    probe_timeout: 1s
    call_timeout: 5s
    degraded_latency: 300ms
    unhealthy_after: 2
    healthy_after: 1
    breaker: {{failure_threshold: 2, failure_rate: 0.5, window: 10, min_calls: 10, open_duration: 1s, max_open_duration: 2s}}
    tools:
      counter: {{cache: true, ttl: 1m}}
      echo: {{cache: true}}
      fail: {{cache: true}}
"#
        ));
    }
    yaml
}

pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs()
}

/// `config(..)` with every server pinned to the legacy lifecycle (initialize, session, ping).
pub fn legacy_config(servers: &[(&str, &str)], extra: &str) -> String {
    config(servers, extra).replace(
        "    probe_interval:",
        "    protocol: legacy\n    probe_interval:",
    )
}

/// Identity headers as the sidecar emits them; signed when `secret` is given.
pub fn identity(
    id: &str,
    roles: &str,
    expires: u64,
    secret: Option<&str>,
) -> Vec<(String, String)> {
    let values = [id, "", "", roles, "", &expires.to_string()].map(str::to_owned);
    let mut headers: Vec<(String, String)> = Slot::ALL
        .iter()
        .zip(&values)
        .map(|(slot, v)| (slot.default_header().to_ascii_lowercase(), v.clone()))
        .collect();
    if let Some(secret) = secret {
        headers.push((
            SIGNATURE_HEADER.to_ascii_lowercase(),
            SigningKey::new(secret.as_bytes()).sign(&values),
        ));
    }
    headers
}

pub fn user() -> Vec<(String, String)> {
    identity("alice", "user", unix_now() + 3600, None)
}

pub fn admin() -> Vec<(String, String)> {
    identity("root", "admin", unix_now() + 3600, None)
}

pub fn with(
    mut req: reqwest::RequestBuilder,
    headers: &[(String, String)],
) -> reqwest::RequestBuilder {
    for (k, v) in headers {
        req = req.header(k, v);
    }
    req
}

/// The tests' HTTP client. Idle connections are dropped after 1 s, well before actix's 5 s
/// keep-alive closes them: a request sent on a connection at the moment the server closes it
/// fails with `IncompleteMessage` (seen on a loaded CI machine, in a polling loop).
pub fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .pool_idle_timeout(std::time::Duration::from_secs(1))
        .build()
        .expect("test HTTP client")
}

/// `GET /api/v1/mcp/servers/{name}` as JSON.
pub async fn server_status(http: &reqwest::Client, omni2: &Omni2, name: &str) -> serde_json::Value {
    with(
        http.get(omni2.url(&format!("/api/v1/mcp/servers/{name}"))),
        &user(),
    )
    .send()
    .await
    .expect("request")
    .json()
    .await
    .expect("json")
}

/// A raw `/mcp` POST (JSON body, the Accept streamable HTTP asks for), with `extra` headers.
pub async fn mcp_post(
    http: &reqwest::Client,
    o: &Omni2,
    who: &[(String, String)],
    extra: &[(&str, &str)],
    body: impl Into<reqwest::Body>,
) -> (u16, reqwest::header::HeaderMap, String) {
    let mut req = with(http.post(o.url("/mcp")), who)
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream");
    for (k, v) in extra {
        req = req.header(*k, *v);
    }
    let r = req.body(body).send().await.expect("request");
    let status = r.status().as_u16();
    let headers = r.headers().clone();
    (status, headers, r.text().await.expect("body"))
}

/// The `_meta` every 2026-07-28 request carries.
pub fn mcp_meta() -> Value {
    json!({
        "io.modelcontextprotocol/protocolVersion": "2026-07-28",
        "io.modelcontextprotocol/clientInfo": {"name": "raw", "version": "1"},
        "io.modelcontextprotocol/clientCapabilities": {},
    })
}

/// The header every 2026-07-28 request carries.
pub const MCP_MODERN: [(&str, &str); 1] = [("mcp-protocol-version", "2026-07-28")];
