//! The audit trail of the real `auth-sidecar` binary: a scripted sequence of decisions
//! each appears exactly once with the right fields; `allows: none` and `1/N` sample as
//! configured; no token or query string reaches the audit output or the process log; a
//! sink that blocks drops and counts while every request is still answered; rotation
//! keeps `keep` files, none past `max_bytes` (plus one line).

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::{Value, json};
use test_support::{Proc, eventually_blocking, free_port, patience};

use crate::support::{ISS, claims, hs, unix_now};

const BIN: &str = env!("CARGO_BIN_EXE_auth-sidecar");

/// A sidecar config: bearer, cookie and (on `/ws`) query tokens; an admin-only prefix, a
/// deny rule, a public path; `audit` as given.
fn config(audit: &str) -> String {
    format!(
        r#"
trusted_proxies: [127.0.0.0/8]
tokens:
  cookie: session
issuers:
  - issuer: {ISS}
    audiences: [omni2]
    keys: [{{kid: hs, alg: HS256, secret_file: hs.key}}]
rules:
  - name: health
    path: /health
    action: public
  - name: blocked
    path_prefix: /blocked
    action: deny
  - name: admin
    path_prefix: /admin
    action: roles
    roles: [admin]
  - name: ws
    path: /ws
    action: authenticated
    allow_query_token: true
  - name: api
    path_prefix: /api
    action: authenticated
audit:
{audit}
"#
    )
}

struct Sidecar {
    /// Stopped by PID when the test ends.
    _proc: Proc,
    port: u16,
    dir: tempfile::TempDir,
}

impl Sidecar {
    /// Starts the binary on `config(audit)` with debug logs (every decision logged too).
    /// `stdout`: where stdout goes (the audit sink when `sink: stdout`); `None` = the log.
    fn start(audit: &str) -> Sidecar {
        Self::start_with(audit, |dir, cmd| {
            let log = std::fs::File::create(dir.join("process.log")).expect("log");
            cmd.stdout(Stdio::from(log.try_clone().expect("clone")))
                .stderr(Stdio::from(log));
        })
    }

    fn start_with(audit: &str, io: impl FnOnce(&Path, &mut Command)) -> Sidecar {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("hs.key"), hs().public).expect("key");
        let path = dir.path().join("sidecar.yaml");
        std::fs::write(&path, config(audit)).expect("config");
        let port = free_port();
        let mut cmd = Command::new(BIN);
        cmd.args(["serve", "--config"])
            .arg(&path)
            .args(["--listen", &format!("127.0.0.1:{port}"), "--workers", "1"])
            .env("RUST_LOG", "debug")
            .stdin(Stdio::null());
        io(dir.path(), &mut cmd);
        let child = cmd.spawn().expect("spawn auth-sidecar");
        let mut proc = Proc::adopt("auth-sidecar", child);
        eventually_blocking("the sidecar to answer", Duration::from_secs(20), || {
            if let Err(exited) = proc.check_alive() {
                panic!("{exited}: {}", log_of(dir.path()));
            }
            get(port, "/healthz").map(|_| ())
        });
        Sidecar {
            _proc: proc,
            port,
            dir,
        }
    }

    fn audit_file(&self) -> PathBuf {
        self.dir.path().join("audit.log")
    }

    fn process_log(&self) -> String {
        log_of(self.dir.path())
    }

    /// One forwardAuth request as Traefik sends it; the status.
    fn verify(&self, uri: &str, headers: &[(&str, &str)]) -> u16 {
        let mut req = format!(
            "GET /verify HTTP/1.1\r\nHost: sidecar\r\nConnection: close\r\n\
             X-Forwarded-Method: GET\r\nX-Forwarded-Proto: https\r\n\
             X-Forwarded-Host: api.example.test\r\nX-Forwarded-For: 203.0.113.9\r\n\
             X-Forwarded-Uri: {uri}\r\n"
        );
        for (n, v) in headers {
            req.push_str(&format!("{n}: {v}\r\n"));
        }
        req.push_str("\r\n");
        let raw = exchange(self.port, &req).unwrap_or_else(|e| panic!("{uri}: no answer: {e}"));
        status(&raw)
    }

    /// `/metrics`, parsed into `name{labels}` → value.
    fn metrics(&self) -> (String, BTreeMap<String, f64>) {
        let text = get(self.port, "/metrics").expect("metrics");
        let body = text
            .split_once("\r\n\r\n")
            .map_or("", |(_, b)| b)
            .to_owned();
        let values = body
            .lines()
            .filter(|l| !l.starts_with('#'))
            .filter_map(|l| {
                let (k, v) = l.rsplit_once(' ')?;
                Some((k.to_owned(), v.parse().ok()?))
            })
            .collect();
        (body, values)
    }
}

fn log_of(dir: &Path) -> String {
    std::fs::read_to_string(dir.join("process.log")).unwrap_or_default()
}

fn exchange(port: u16, request: &str) -> std::io::Result<String> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(patience(Duration::from_secs(10))))?;
    s.write_all(request.as_bytes())?;
    s.shutdown(Shutdown::Write)?;
    let mut raw = String::new();
    s.read_to_string(&mut raw)?;
    Ok(raw)
}

fn get(port: u16, path: &str) -> std::io::Result<String> {
    exchange(
        port,
        &format!("GET {path} HTTP/1.1\r\nHost: sidecar\r\nConnection: close\r\n\r\n"),
    )
}

fn status(raw: &str) -> u16 {
    raw.split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("not HTTP: {raw:?}"))
}

/// Every audit line, parsed; panics on a line that is not a JSON object.
fn events(text: &str) -> Vec<Value> {
    text.lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap_or_else(|e| panic!("{e}: {l:?}")))
        .collect()
}

/// Waits until the file holds `n` events, and returns them.
fn wait_events(path: &Path, n: usize) -> Vec<Value> {
    eventually_blocking(
        &format!("{n} audit events"),
        Duration::from_secs(20),
        || {
            let text = std::fs::read_to_string(path).unwrap_or_default();
            let got = events(&text);
            if got.len() == n {
                Ok(got)
            } else {
                Err(format!("{} so far:\n{text}", got.len()))
            }
        },
    )
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

const FIELDS: [&str; 12] = [
    "time",
    "decision",
    "reason",
    "rule",
    "sub",
    "client",
    "method",
    "host",
    "path",
    "latency_us",
    "cache",
    "request_id",
];

#[test]
fn every_decision_once_with_its_fields_and_no_secret_anywhere() {
    let sidecar = Sidecar::start("  sink: file\n  file: audit.log\n  allows: all");
    let key = hs();
    let alice = key.mint(&claims("alice", "user"));
    let bob = key.mint(&claims("bob", "admin"));
    let carol = key.mint(&claims("carol", "user"));
    let mut expired_claims = claims("dave", "user");
    expired_claims["exp"] = json!(unix_now() - 3600);
    expired_claims["iat"] = json!(unix_now() - 7200);
    let expired = key.mint(&expired_claims);
    let mut forged = key.mint(&claims("mallory", "admin"));
    forged.truncate(forged.len() - 4);
    forged.push_str("AAAA");
    let query_secret = "q-sentinel-7f3a9c";
    let cookie = format!("session={bob}");
    let carol_query = format!("/ws?access_token={carol}&x={query_secret}");
    let alice_b = bearer(&alice);
    let expired_b = bearer(&expired);
    let forged_b = bearer(&forged);

    // (request id, uri, extra headers, status, decision, reason, rule, sub, cache)
    type Step<'a> = (
        &'a str,
        &'a str,
        Vec<(&'a str, &'a str)>,
        u16,
        &'a str,
        &'a str,
        Value,
        Value,
        &'a str,
    );
    let api_uri = format!("/api/items?secret={query_secret}");
    let script: Vec<Step> = vec![
        (
            "r01",
            &api_uri,
            vec![("Authorization", &alice_b)],
            200,
            "allow",
            "authenticated",
            json!("api"),
            json!("alice"),
            "miss",
        ),
        (
            "r02",
            &api_uri,
            vec![("Authorization", &alice_b)],
            200,
            "allow",
            "authenticated",
            json!("api"),
            json!("alice"),
            "hit",
        ),
        (
            "r03",
            "/api/items",
            vec![],
            401,
            "deny",
            "missing_token",
            json!("api"),
            Value::Null,
            "none",
        ),
        (
            "r04",
            "/api/items",
            vec![("Authorization", &forged_b)],
            401,
            "deny",
            "bad_signature",
            json!("api"),
            Value::Null,
            "miss",
        ),
        (
            "r05",
            "/api/items",
            vec![("Authorization", &expired_b)],
            401,
            "deny",
            "expired",
            json!("api"),
            Value::Null,
            "miss",
        ),
        (
            "r06",
            "/admin/panel",
            vec![("Authorization", &alice_b)],
            403,
            "deny",
            "role_denied",
            json!("admin"),
            json!("alice"),
            "hit",
        ),
        (
            "r07",
            "/admin/panel",
            vec![("Cookie", &cookie)],
            200,
            "allow",
            "authenticated",
            json!("admin"),
            json!("bob"),
            "miss",
        ),
        (
            "r08",
            &carol_query,
            vec![],
            200,
            "allow",
            "authenticated",
            json!("ws"),
            json!("carol"),
            "miss",
        ),
        (
            "r09",
            "/blocked/x",
            vec![("Authorization", &alice_b)],
            403,
            "deny",
            "rule_denied",
            json!("blocked"),
            Value::Null,
            "none",
        ),
        (
            "r10",
            "/nowhere",
            vec![],
            403,
            "deny",
            "no_rule",
            Value::Null,
            Value::Null,
            "none",
        ),
        (
            "r11",
            "/health?probe=1",
            vec![],
            200,
            "allow",
            "public",
            json!("health"),
            Value::Null,
            "none",
        ),
    ];
    for (id, uri, headers, want, ..) in &script {
        let mut headers = headers.clone();
        headers.push(("X-Request-Id", id));
        assert_eq!(sidecar.verify(uri, &headers), *want, "{id} {uri}");
    }
    // The trace-context fallback: no X-Request-Id, a W3C traceparent.
    let traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    assert_eq!(
        sidecar.verify("/nowhere", &[("traceparent", traceparent)]),
        403
    );

    let got = wait_events(&sidecar.audit_file(), script.len() + 1);
    for (id, uri, _, _, decision, reason, rule, sub, cache) in &script {
        let mine: Vec<&Value> = got.iter().filter(|e| e["request_id"] == *id).collect();
        assert_eq!(mine.len(), 1, "{id}: exactly one event in {got:#?}");
        let e = mine[0];
        let keys: Vec<&str> = e
            .as_object()
            .expect("object")
            .keys()
            .map(String::as_str)
            .collect();
        let mut want_keys = FIELDS.to_vec();
        want_keys.sort_unstable();
        let mut keys_sorted = keys.clone();
        keys_sorted.sort_unstable();
        assert_eq!(keys_sorted, want_keys, "{id}: the fields, and nothing else");
        assert_eq!(e["decision"], *decision, "{id} {e}");
        assert_eq!(e["reason"], *reason, "{id} {e}");
        assert_eq!(e["rule"], *rule, "{id} {e}");
        assert_eq!(e["sub"], *sub, "{id} {e}");
        assert_eq!(e["cache"], *cache, "{id} {e}");
        assert_eq!(e["method"], "GET", "{id}");
        assert_eq!(e["host"], "api.example.test", "{id}");
        assert_eq!(e["client"], "203.0.113.9", "{id}");
        let path = uri.split('?').next().expect("path");
        assert_eq!(e["path"], path, "{id}: the path without its query");
        assert!(e["latency_us"].is_u64(), "{id} {e}");
        let time = e["time"].as_str().expect("time");
        assert!(
            time.len() == 24 && time.ends_with('Z') && time.as_bytes()[10] == b'T',
            "{id}: RFC 3339 UTC, got {time}"
        );
    }
    let traced: Vec<&Value> = got
        .iter()
        .filter(|e| e["request_id"] == "4bf92f3577b34da6a3ce929d0e0e4736")
        .collect();
    assert_eq!(traced.len(), 1, "{got:#?}");

    // No token and no query string, anywhere: the audit file, or the (debug) process log.
    let audit_text = std::fs::read_to_string(sidecar.audit_file()).expect("audit");
    let log = sidecar.process_log();
    assert!(log.contains("Decided."), "debug logging was on: {log}");
    assert!(
        log.contains("is in the config file's directory, which is watched"),
        "an audit file beside the config is warned about: {log}"
    );
    let signatures: Vec<&str> = [&alice, &bob, &carol, &expired, &forged]
        .iter()
        .map(|t| t.rsplit('.').next().expect("signature"))
        .collect();
    let needles: Vec<&str> = [
        alice.as_str(),
        bob.as_str(),
        carol.as_str(),
        expired.as_str(),
        forged.as_str(),
        query_secret,
        "secret=",
        "access_token=ey",
        "probe=1",
        "?",
    ]
    .into_iter()
    .chain(signatures)
    .collect();
    for needle in &needles {
        assert!(
            !audit_text.contains(needle),
            "{needle:?} in the audit output:\n{audit_text}"
        );
    }
    for needle in needles
        .iter()
        .filter(|n| !["secret=", "probe=1", "?"].contains(n))
    {
        assert!(
            !log.contains(needle),
            "{needle:?} in the process log:\n{log}"
        );
    }
    // The debug log shows query keys only, with their values redacted.
    assert!(!log.contains(query_secret), "{log}");

    let (text, metrics) = sidecar.metrics();
    let n = (script.len() + 1) as f64;
    assert_eq!(
        metrics.get("auth_sidecar_audit_events_total{result=\"written\"}"),
        Some(&n),
        "{text}"
    );
    assert_eq!(
        metrics.get("auth_sidecar_audit_events_total{result=\"failed\"}"),
        Some(&0.0)
    );
    assert_eq!(metrics.get("auth_sidecar_audit_dropped_total"), Some(&0.0));
    test_support::assert_promtool_metrics(&text);
}

/// `n` allows (alice on /api) and `denies` denials (no token).
fn allows_and_denies(sidecar: &Sidecar, n: usize, denies: usize) {
    let token = bearer(&hs().mint(&claims("alice", "user")));
    for _ in 0..n {
        assert_eq!(sidecar.verify("/api/x", &[("Authorization", &token)]), 200);
    }
    for _ in 0..denies {
        assert_eq!(sidecar.verify("/api/x", &[]), 401);
    }
}

#[test]
fn allows_none_and_one_in_n_sample_allows_never_denials() {
    let none = Sidecar::start("  sink: file\n  file: audit.log\n  allows: none");
    allows_and_denies(&none, 7, 3);
    let got = wait_events(&none.audit_file(), 3);
    assert!(got.iter().all(|e| e["decision"] == "deny"), "{got:#?}");

    let sampled = Sidecar::start("  sink: file\n  file: audit.log\n  allows: \"1/4\"");
    allows_and_denies(&sampled, 12, 2);
    let got = wait_events(&sampled.audit_file(), 5);
    let allows = got.iter().filter(|e| e["decision"] == "allow").count();
    assert_eq!(allows, 3, "1 in 4 of 12 allows: {got:#?}");
    // The files hold every event written: nothing else is waiting to come.
    for (s, n) in [(&none, 3.0), (&sampled, 5.0)] {
        let (_, m) = s.metrics();
        let written = m
            .get("auth_sidecar_audit_events_total{result=\"written\"}")
            .copied();
        assert_eq!(written, Some(n));
    }
}

#[test]
fn a_blocked_sink_drops_and_counts_while_every_request_is_answered() {
    // stdout is a pipe this test never reads: once its buffer is full the writer blocks.
    // The read end stays open, unread, inside the adopted child until the end.
    let sidecar = Sidecar::start_with("  sink: stdout\n  queue: 4", |dir, cmd| {
        let log = std::fs::File::create(dir.join("process.log")).expect("log");
        cmd.stdout(Stdio::piped()).stderr(Stdio::from(log));
    });
    // Far more lines than a pipe buffer (64 KiB) and the queue hold.
    const N: usize = 1500;
    let token = bearer(&hs().mint(&claims("alice", "user")));
    for i in 0..N {
        let want = if i % 2 == 0 { 200 } else { 401 };
        let headers: &[(&str, &str)] = if want == 200 {
            &[("Authorization", &token)]
        } else {
            &[]
        };
        assert_eq!(sidecar.verify("/api/x", headers), want, "request {i}");
    }
    let (text, m) = sidecar.metrics();
    let dropped = m
        .get("auth_sidecar_audit_dropped_total")
        .copied()
        .unwrap_or(0.0);
    let written = m
        .get("auth_sidecar_audit_events_total{result=\"written\"}")
        .copied()
        .unwrap_or(0.0);
    assert!(dropped > 0.0, "a full queue drops: {text}");
    assert!(written + dropped <= N as f64, "{written} + {dropped}");
    // The rest are queued (at most 4) or in the writer's blocked batch (at most 64 KiB: some
    // 260 of these ~250-byte lines, 300 allowed).
    assert!(
        written + dropped + 4.0 + 300.0 >= N as f64,
        "every event is written, queued, in the writer's hands or dropped: {written} + {dropped}"
    );
    // The counter keeps rising while the sink stays blocked.
    for _ in 0..10 {
        assert_eq!(sidecar.verify("/api/x", &[]), 401);
    }
    let (_, m) = sidecar.metrics();
    assert_eq!(
        m.get("auth_sidecar_audit_dropped_total").copied(),
        Some(dropped + 10.0)
    );
    drop(sidecar);
}

#[test]
fn rotation_keeps_keep_files_none_past_max_bytes() {
    let sidecar = Sidecar::start("  sink: file\n  file: audit.log\n  max_bytes: 4KiB\n  keep: 2");
    // ~250 bytes an event: 200 events fill about a dozen 4 KiB files.
    allows_and_denies(&sidecar, 100, 100);
    eventually_blocking("200 events written", Duration::from_secs(20), || {
        let (_, m) = sidecar.metrics();
        let w = m
            .get("auth_sidecar_audit_events_total{result=\"written\"}")
            .copied();
        if w == Some(200.0) {
            Ok(())
        } else {
            Err(format!("{w:?}"))
        }
    });
    let mut names: Vec<String> = std::fs::read_dir(sidecar.dir.path())
        .expect("dir")
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.starts_with("audit.log"))
        .collect();
    names.sort();
    assert_eq!(names, ["audit.log", "audit.log.1", "audit.log.2"]);
    let mut longest = 0;
    for name in &names {
        let text = std::fs::read_to_string(sidecar.dir.path().join(name)).expect("read");
        assert!(text.ends_with('\n'), "{name}: whole lines only");
        longest = longest.max(text.lines().map(str::len).max().unwrap_or(0) + 1);
        assert!(!events(&text).is_empty(), "{name}");
    }
    for name in &names {
        let len = std::fs::metadata(sidecar.dir.path().join(name))
            .expect("meta")
            .len() as usize;
        assert!(
            len <= 4096,
            "{name}: {len} bytes > max_bytes (lines are {longest} at most)"
        );
    }
    // A rotated file was closed because the next line would not fit: it is nearly full.
    for name in &names[1..] {
        let len = std::fs::metadata(sidecar.dir.path().join(name))
            .expect("meta")
            .len() as usize;
        assert!(
            len + longest > 4096,
            "{name}: {len} bytes, lines up to {longest}"
        );
    }
}

/// docs/audit.md's sidecar table lists exactly the fields an event has, in their order.
#[test]
fn the_documented_fields_are_the_written_ones() {
    let doc = test_support::docs::read(&test_support::docs::repo_root().join("docs/audit.md"));
    let section = doc
        .split("## Sidecar events")
        .nth(1)
        .and_then(|s| s.split("\n## ").next())
        .expect("a sidecar events section in docs/audit.md");
    let documented: Vec<&str> = section
        .lines()
        .filter_map(|l| l.strip_prefix("| `")?.split('`').next())
        .collect();
    assert_eq!(documented, FIELDS);
}
