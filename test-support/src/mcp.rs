//! What the MCP gateway tests (omni2-core's and the end-to-end ones) run besides the
//! binaries: `server-everything` (npm, pinned in
//! `tests/node/package.json`), a TCP proxy that records what omni2 sends a backend, and the
//! official SDK clients as scripts (Python `mcp`: omni2-core's `gateway_client.py`;
//! TypeScript `@modelcontextprotocol/sdk`: `tests/node/gateway-client.mjs`) whose JSON lines
//! the tests assert on. A missing tool fails the test.

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::docs::repo_root;
use crate::free_addr;
use crate::process::{Proc, wait_listening};
use crate::wait::patience;

/// `@modelcontextprotocol/server-everything`, streamable HTTP on a free loopback port.
pub struct Everything {
    pub addr: SocketAddr,
    proc: Proc,
}

impl Everything {
    pub async fn start(dir: &Path) -> Everything {
        let bin = repo_root().join("tests/node/node_modules/.bin/mcp-server-everything");
        assert!(
            bin.exists(),
            "{} is missing: run `cd tests/node && npm ci` (.ci/run does)",
            bin.display()
        );
        let addr = free_addr();
        let mut cmd = Command::new(bin);
        cmd.arg("streamableHttp")
            .env("PORT", addr.port().to_string());
        let mut proc = Proc::spawn("server-everything", cmd, dir.join("everything.log"));
        wait_listening(&mut proc, addr, "server-everything listening").await;
        Everything { addr, proc }
    }

    pub fn url(&self) -> String {
        format!("http://{}/mcp", self.addr)
    }

    pub fn log(&self) -> String {
        self.proc.log()
    }
}

/// A TCP proxy to `target` that records every byte sent through it, both ways.
pub struct RecordingProxy {
    pub addr: SocketAddr,
    sent: Arc<Mutex<Vec<u8>>>,
    received: Arc<Mutex<Vec<u8>>>,
}

impl RecordingProxy {
    pub async fn start(target: SocketAddr) -> RecordingProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let addr = listener.local_addr().expect("proxy addr");
        let sent = Arc::new(Mutex::new(Vec::new()));
        let received = Arc::new(Mutex::new(Vec::new()));
        let (record, record_back) = (sent.clone(), received.clone());
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let (record, record_back) = (record.clone(), record_back.clone());
                tokio::spawn(async move {
                    let Ok(upstream) = TcpStream::connect(target).await else {
                        return;
                    };
                    let (mut cr, mut cw) = client.into_split();
                    let (mut ur, mut uw) = upstream.into_split();
                    let up = async move {
                        let mut buf = vec![0u8; 16 << 10];
                        while let Ok(n) = cr.read(&mut buf).await {
                            if n == 0 {
                                break;
                            }
                            record.lock().expect("lock").extend_from_slice(&buf[..n]);
                            if uw.write_all(&buf[..n]).await.is_err() {
                                break;
                            }
                        }
                        let _ = uw.shutdown().await;
                    };
                    let down = async move {
                        let mut buf = vec![0u8; 16 << 10];
                        while let Ok(n) = ur.read(&mut buf).await {
                            if n == 0 {
                                break;
                            }
                            record_back
                                .lock()
                                .expect("lock")
                                .extend_from_slice(&buf[..n]);
                            if cw.write_all(&buf[..n]).await.is_err() {
                                break;
                            }
                        }
                        let _ = cw.shutdown().await;
                    };
                    tokio::join!(up, down);
                });
            }
        });
        RecordingProxy {
            addr,
            sent,
            received,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}/mcp", self.addr)
    }

    /// Everything the target answered so far.
    pub fn received(&self) -> String {
        String::from_utf8_lossy(&self.received.lock().expect("lock")).into_owned()
    }

    /// Everything sent so far, lower-cased.
    pub fn sent(&self) -> String {
        String::from_utf8_lossy(&self.sent.lock().expect("lock")).to_ascii_lowercase()
    }
}

/// An SDK client script; its JSON lines arrive on a channel.
pub struct Client {
    _proc: Proc,
    lines: Receiver<Value>,
    logs: Option<PathBuf>,
}

impl Client {
    /// `python3 omni2-core/tests/fixtures/gateway_client.py URL MODE [extra]` (`mode`:
    /// `session` = 2025-11-25 `initialize`, `discover` = 2026-07-28).
    pub fn python(url: &str, mode: &str, extra: &[&str], headers: &Value) -> Client {
        let script = repo_root().join("omni2-core/tests/fixtures/gateway_client.py");
        let mut args = vec![script.display().to_string(), url.into(), mode.into()];
        args.extend(extra.iter().map(|s| s.to_string()));
        Client::start("python3", &args, headers)
    }

    /// `python3 <script> [args]`, `stdin` as one JSON line (for a script of its own).
    pub fn python_script(script: &Path, args: &[&str], stdin: &Value) -> Client {
        let mut all = vec![script.display().to_string()];
        all.extend(args.iter().map(|s| s.to_string()));
        Client::start("python3", &all, stdin)
    }

    /// `node tests/node/gateway-client.mjs URL [extra]` (2025-11-25 session).
    pub fn node(url: &str, extra: &[&str], headers: &Value) -> Client {
        let mut args = vec!["gateway-client.mjs".to_owned(), url.into()];
        args.extend(extra.iter().map(|s| s.to_string()));
        Client::start("node", &args, headers)
    }

    fn start(program: &str, args: &[String], headers: &Value) -> Client {
        let mut child = Command::new(program)
            .args(args)
            .current_dir(repo_root().join("tests/node"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("{program} must be installed (.ci/run): {e}"));
        let mut stdin = child.stdin.take().expect("stdin");
        writeln!(stdin, "{headers}").expect("write headers");
        drop(stdin);
        let stdout = child.stdout.take().expect("stdout");
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                match serde_json::from_str::<Value>(&line) {
                    Ok(v) => {
                        let _ = tx.send(v);
                    }
                    Err(_) => eprintln!("client: {line}"),
                }
            }
        });
        Client {
            _proc: Proc::adopt(program, child),
            lines,
            logs: None,
        }
    }

    /// On a missing step, show the `*.log` files of `dir` (the stack's processes).
    pub fn logs_from(mut self, dir: &Path) -> Client {
        self.logs = Some(dir.to_owned());
        self
    }

    fn logs(&self) -> String {
        let Some(dir) = &self.logs else {
            return String::new();
        };
        let mut out = String::new();
        let files = std::fs::read_dir(dir)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path())
            .chain([dir.join("traefik/traefik.log")]);
        for path in files {
            if path.extension().is_some_and(|e| e == "log") {
                let text = std::fs::read_to_string(&path).unwrap_or_default();
                let tail: String = text
                    .chars()
                    .rev()
                    .take(6000)
                    .collect::<Vec<_>>()
                    .into_iter()
                    .rev()
                    .collect();
                out.push_str(&format!("--- {}:\n{tail}\n", path.display()));
            }
        }
        out
    }

    /// The next line, which must be `step` (bounded by `TEST_PATIENCE` × 60 s).
    pub fn step(&self, step: &str) -> Value {
        let limit = patience(Duration::from_secs(60));
        let line = match self.lines.recv_timeout(limit) {
            Ok(line) => line,
            Err(RecvTimeoutError::Timeout) => {
                panic!(
                    "client printed no {step:?} within {limit:?}\n{}",
                    self.logs()
                )
            }
            Err(RecvTimeoutError::Disconnected) => {
                panic!(
                    "client exited before {step:?} (its stderr is above)\n{}",
                    self.logs()
                )
            }
        };
        assert_eq!(line["step"], step, "{line}");
        line
    }
}

/// A client's `down_call` step, made while the server is down: the breaker's JSON-RPC
/// error (-32001 `circuit_open`, no upstream attempt) saying it is unavailable and when to
/// retry.
#[track_caller]
pub fn assert_breaker_refused(down: &Value) {
    assert_eq!(down["ok"], false, "{down}");
    assert_eq!(down["code"], -32001, "{down}");
    assert_eq!(down["data"]["error"], "circuit_open", "{down}");
    assert!(down["data"]["retry_after_ms"].as_u64().is_some(), "{down}");
    assert!(
        down["message"]
            .as_str()
            .is_some_and(|m| m.contains("unavailable")),
        "{down}"
    );
}

/// The tool names of a `{"tools": [...]}` line.
pub fn names(line: &Value) -> Vec<String> {
    line["tools"]
        .as_array()
        .expect("tools")
        .iter()
        .map(|t| t.as_str().expect("name").to_owned())
        .collect()
}
