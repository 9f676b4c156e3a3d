//! The real `auth-sidecar` binary: `check-config`, `explain`, `mint`, and `serve` on the
//! embedded development config, driven as a user would from a shell.

use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use crate::support::http_get;
use test_support::{Proc, eventually_blocking, free_port};

const BIN: &str = env!("CARGO_BIN_EXE_auth-sidecar");
/// A fixed secret so the test does not depend on the publicly known development default.
const DEV_SECRET: &str = "cli-test-secret-0123456789abcdefghijklmnop";

fn run(args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .env("AUTH_SIDECAR_DEV_SECRET", DEV_SECRET)
        .env("RUST_LOG", "warn")
        .output()
        .expect("run auth-sidecar")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn write(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write file");
    path.to_str().expect("utf-8 path").to_owned()
}

const GOOD: &str = r#"
issuers:
  - issuer: https://idp.test
    audiences: [omni2]
    keys:
      - {kid: hs, alg: HS256, secret_env: AUTH_SIDECAR_DEV_SECRET}
rules:
  - name: admin
    path_prefix: /api/v1/admin
    action: roles
    roles: [admin]
  - name: api
    path_prefix: /api/v1
    action: authenticated
"#;

#[test]
fn check_config_lists_every_problem_and_exits_1() {
    let dir = tempfile::tempdir().expect("temp dir");
    let bad = write(
        dir.path(),
        "bad.yaml",
        r#"
listen: not-an-address
issuers:
  - issuer: https://idp.test
    keys:
      - {kid: a, alg: HS256, secret_env: DOES_NOT_EXIST_ANYWHERE}
      - {kid: b, alg: XS999, pem_file: missing.pem}
rules:
  - name: x
    path_prefix: /api
    action: roles
    allow_cidrs: ["10.0.0.1/33"]
  - name: y
    path_prefix: /api
    action: authenticated
    colour: blue
"#,
    );
    let out = run(&["check-config", &bad]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let text = stdout(&out);
    for expected in [
        "listen",
        "issuers[0].keys[0]",
        "DOES_NOT_EXIST_ANYWHERE",
        "issuers[0].keys[1]",
        "rules[0].allow_cidrs[0]",
        "10.0.0.1/33",
        "rules[0]",
        "colour",
    ] {
        assert!(text.contains(expected), "missing {expected:?} in:\n{text}");
    }
    // Every problem on its own line, each naming its path.
    assert!(text.lines().count() >= 6, "{text}");

    let good = write(dir.path(), "good.yaml", GOOD);
    let out = run(&["check-config", &good]);
    assert!(out.status.success(), "{out:?}");
    assert!(
        stdout(&out).contains("ok (1 issuer(s), 2 rule(s)"),
        "{}",
        stdout(&out)
    );
}

/// `explain` for a GET of `uri`, with an optional bearer token.
fn explain(config: &str, uri: &str, token: Option<&str>) -> Output {
    let mut args = vec![
        "explain", "--config", config, "--method", "GET", "--uri", uri,
    ];
    if let Some(token) = token {
        args.extend(["--token", token]);
    }
    run(&args)
}

#[test]
fn mint_then_explain_shows_rule_decision_reason_and_headers() {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = write(dir.path(), "good.yaml", GOOD);
    let minted = run(&[
        "mint", "--config", &config, "--sub", "alice", "--role", "user", "--ttl", "10m",
    ]);
    assert!(minted.status.success(), "{minted:?}");
    let token = stdout(&minted).trim().to_owned();
    assert_eq!(token.split('.').count(), 3, "{token}");

    let allow = explain(&config, "/api/v1/things", Some(&token));
    let text = stdout(&allow);
    assert!(allow.status.success(), "{allow:?}");
    for expected in [
        "rule:     api",
        "decision: allow (200)",
        "reason:   authenticated",
        "X-User-Id: alice",
        "X-User-Role: user",
    ] {
        assert!(
            text.to_ascii_lowercase()
                .contains(&expected.to_ascii_lowercase()),
            "missing {expected:?} in:\n{text}"
        );
    }
    assert!(!text.contains(&token), "explain must not print the token");

    let deny = explain(&config, "/api/v1/admin/x", Some(&token));
    let text = stdout(&deny);
    for expected in [
        "rule:     admin",
        "decision: deny (403)",
        "reason:   role_denied",
    ] {
        assert!(text.contains(expected), "missing {expected:?} in:\n{text}");
    }
    let none = explain(&config, "/elsewhere", None);
    assert!(
        stdout(&none).contains("reason:   no_rule"),
        "{}",
        stdout(&none)
    );
}

/// Starts `serve` on the embedded config with one worker; `log` is `RUST_LOG`. Stdout is
/// piped for the quick-start line, stderr for the logs.
fn spawn_embedded(port: u16, log: &str) -> Child {
    Command::new(BIN)
        .args([
            "serve",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--workers",
            "1",
        ])
        .env("AUTH_SIDECAR_DEV_SECRET", DEV_SECRET)
        .env("RUST_LOG", log)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn auth-sidecar")
}

#[test]
fn serve_on_the_embedded_config_follows_the_readme() {
    let port = free_port();
    let mut child = spawn_embedded(port, "warn");
    let out = child.stdout.take().expect("stdout");
    let sidecar = Proc::adopt("auth-sidecar", child);

    // The quick-start line carries a ready-made admin token.
    let mut lines = BufReader::new(out).lines();
    let token = loop {
        let line = lines.next().expect("quick-start printed").expect("utf-8");
        if let Some(i) = line.find("Bearer ") {
            break line[i + 7..].trim_end_matches('\'').to_owned();
        }
    };

    wait_up(port);
    let fwd = |uri: &'static str| [("X-Forwarded-Method", "GET"), ("X-Forwarded-Uri", uri)];
    let auth = format!("Bearer {token}");
    let minted = run(&["mint", "--sub", "alice", "--role", "user"]);
    let user = format!("Bearer {}", stdout(&minted).trim());

    let (status, head) = http_get(
        port,
        "/verify",
        &[&fwd("/api/v1/mcp/servers")[..], &[("Authorization", &auth)]].concat(),
    )
    .expect("allow");
    assert_eq!(status, 200, "{head}");
    assert!(
        head.to_ascii_lowercase().contains("x-user-id: dev-admin"),
        "{head}"
    );

    let (status, head) = http_get(port, "/verify", &fwd("/api/v1/mcp/servers")).expect("401");
    assert_eq!(status, 401, "{head}");
    assert!(head.contains(r#"Bearer realm="omni2""#), "{head}");

    let (status, head) = http_get(
        port,
        "/verify",
        &[&fwd("/api/v1/admin/x")[..], &[("Authorization", &user)]].concat(),
    )
    .expect("403");
    assert_eq!(status, 403, "{head}");
    assert!(head.contains("insufficient_scope"), "{head}");

    let (status, _) = http_get(port, "/readyz", &[]).expect("readyz");
    assert_eq!(status, 200);
    drop(sidecar);
}

#[test]
fn the_embedded_config_refuses_a_non_loopback_listener() {
    let out = run(&["serve", "--listen", "0.0.0.0:0"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("refusing to listen on 0.0.0.0"), "{err}");
}

#[test]
fn a_bad_config_stops_serve_with_the_problem_list() {
    let dir = tempfile::tempdir().expect("temp dir");
    let bad = write(dir.path(), "bad.yaml", "issuers: []\nrules: nope\n");
    let out = run(&["serve", "--config", &bad]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("rules"), "{err}");
}

fn wait_up(port: u16) {
    eventually_blocking("the sidecar to come up", Duration::from_secs(10), || {
        http_get(port, "/healthz", &[])
    });
}

#[test]
fn debug_logs_never_contain_tokens_and_sigterm_stops_cleanly() {
    let port = free_port();
    let mut child = spawn_embedded(port, "debug");
    let mut stderr = child.stderr.take().expect("stderr");
    let mut child = Proc::adopt("auth-sidecar", child);
    wait_up(port);
    let minted = run(&["mint", "--sub", "alice", "--role", "user"]);
    let token = stdout(&minted).trim().to_owned();
    let bearer = format!("Bearer {token}");
    let in_query = format!("/ws/mcp-status?access_token={token}&x=1");
    let cookie = format!("omni2_session={token}");
    let cases: [&[(&str, &str)]; 3] = [
        &[
            ("X-Forwarded-Method", "GET"),
            ("X-Forwarded-Uri", "/api/v1/x"),
            ("Authorization", &bearer),
        ],
        &[
            ("X-Forwarded-Method", "GET"),
            ("X-Forwarded-Uri", &in_query),
        ],
        &[
            ("X-Forwarded-Method", "GET"),
            ("X-Forwarded-Uri", "/api/v1/x"),
            ("Cookie", &cookie),
        ],
    ];
    let mut statuses = Vec::new();
    for headers in cases {
        statuses.push(http_get(port, "/verify", headers).expect("request").0);
    }
    assert_eq!(
        statuses[..2],
        [200, 200],
        "bearer and query token are accepted"
    );

    // SIGTERM: actix drains and the process exits by itself, successfully.
    let pid = child.pid().expect("running").to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("kill")
            .success()
    );
    let status = child.wait_exit(Duration::from_secs(15));
    assert!(status.success(), "exit after SIGTERM: {status:?}");

    let mut logs = String::new();
    stderr.read_to_string(&mut logs).expect("read logs");
    assert!(
        logs.contains("Decided."),
        "debug decision lines are logged:\n{logs}"
    );
    let signature = token.rsplit('.').next().expect("signature part");
    for secret in [token.as_str(), signature, DEV_SECRET] {
        assert!(
            !logs.contains(secret),
            "a secret leaked into the logs:\n{logs}"
        );
    }
    assert!(
        logs.contains("access_token=REDACTED"),
        "the query is logged, redacted:\n{logs}"
    );
}
