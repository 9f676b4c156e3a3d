//! Issue 10: `auth-sidecar serve … 2>&1 | head -7`, then the log reader goes away. Every
//! later log line (debug logs one per decision) meets a broken pipe; the sidecar must keep
//! deciding and still exit 0 on SIGTERM.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::process::{Command, Stdio};
use std::time::Duration;

use test_support::{Proc, eventually_blocking, free_port};

const BIN: &str = env!("CARGO_BIN_EXE_auth-sidecar");
const DEV_SECRET: &str = "log-pipe-test-secret-0123456789abcdefghijkl";

/// `GET /verify` for `uri` over a fresh connection; the status code.
fn verify(port: u16, uri: &str, token: Option<&str>) -> std::io::Result<u16> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut req = format!(
        "GET /verify HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\
         X-Forwarded-Method: GET\r\nX-Forwarded-Uri: {uri}\r\n"
    );
    if let Some(t) = token {
        req.push_str(&format!("Authorization: Bearer {t}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes())?;
    s.shutdown(Shutdown::Write)?;
    let mut raw = String::new();
    s.read_to_string(&mut raw)?;
    raw.split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("not HTTP: {raw:?}")))
}

#[test]
fn closed_log_pipes_do_not_stop_decisions_or_sigterm() {
    let port = free_port();
    let mut child = Command::new(BIN)
        .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
        .args(["--workers", "1"])
        .env("AUTH_SIDECAR_DEV_SECRET", DEV_SECRET)
        .env("RUST_LOG", "debug")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn auth-sidecar");
    let stdout = child.stdout.take().expect("stdout");
    let stderr = child.stderr.take().expect("stderr");
    let mut sidecar = Proc::adopt("auth-sidecar", child);

    // The quick-start line (stdout) carries an admin token; then both read ends close.
    let mut lines = BufReader::new(stdout).lines();
    let token = loop {
        let line = lines.next().expect("quick-start printed").expect("utf-8");
        if let Some(i) = line.find("Bearer ") {
            break line[i + 7..].trim_end_matches('\'').to_owned();
        }
    };
    drop(lines);
    drop(stderr);

    eventually_blocking("the sidecar to come up", Duration::from_secs(10), || {
        verify(port, "/api/v1/mcp/servers", None)
    });
    // One worker: if a log line killed it, the next answers would not come.
    for _ in 0..5 {
        let allowed = verify(port, "/api/v1/mcp/servers", Some(&token)).expect("answer");
        assert_eq!(allowed, 200);
        let denied = verify(port, "/api/v1/mcp/servers", None).expect("answer");
        assert_eq!(denied, 401);
    }

    let pid = sidecar.pid().expect("running").to_string();
    let killed = Command::new("kill").args(["-TERM", &pid]).status();
    assert!(killed.expect("kill").success());
    let status = sidecar.wait_exit(Duration::from_secs(15));
    assert!(status.success(), "exit after SIGTERM: {status:?}");
}
