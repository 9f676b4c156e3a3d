//! `/mcp`: the real `omni2` binary serving MCP, with the official Python SDK client and the
//! TypeScript SDK client, in front of the Python reference server and server-everything.
//! Identity is the sidecar's signed headers the tests mint; clients also send a bearer
//! token, as they would through Traefik, which must never reach a backend (a recording
//! TCP proxy sits between omni2 and the Python server).

use std::time::Duration;

use serde_json::{Value, json};
use test_support::mcp::{Client, Everything, RecordingProxy, assert_breaker_refused, names};

use crate::common::*;

const WAIT: Duration = Duration::from_secs(30);
const BEARER: &str = "Bearer client-token-must-not-leak-7f3a9";

fn config(py: &str, ev: &str) -> String {
    config_with(py, ev, "30s", "60s")
}

/// `config` with the Python server's breaker open for `open` (backing off up to `max`).
fn config_with(py: &str, ev: &str, open: &str, max: &str) -> String {
    format!(
        r#"identity_secret: ${{OMNI2_TEST_SECRET}}
gateway:
  separator: "__"
servers:
  - name: py
    url: {py}
    protocol: legacy
    probe_interval: 200ms
    probe_timeout: 1s
    call_timeout: 5s
    unhealthy_after: 2
    healthy_after: 1
    breaker: {{failure_threshold: 2, failure_rate: 0.5, window: 10, min_calls: 10, open_duration: {open}, max_open_duration: {max}}}
    tools:
      counter: {{cache: true, ttl: 10m}}
      add: {{roles: [admin]}}
      echo: {{rate_limit: {{burst: 2, every: 1h}}}}
  - name: ev
    url: {ev}
    protocol: legacy
    probe_interval: 500ms
    probe_timeout: 2s
    call_timeout: 5s
"#
    )
}

/// Signed identity headers (plus the client's bearer token) as a JSON object.
fn headers(id: &str, roles: &str) -> Value {
    let mut h: serde_json::Map<String, Value> =
        identity(id, roles, unix_now() + 3600, Some(SECRET))
            .into_iter()
            .map(|(k, v)| (k, Value::String(v)))
            .collect();
    h.insert("authorization".into(), BEARER.into());
    Value::Object(h)
}

fn signed(id: &str, roles: &str) -> Vec<(String, String)> {
    identity(id, roles, unix_now() + 3600, Some(SECRET))
}

async fn wait_healthy(http: &reqwest::Client, o: &Omni2, server: &str, want: &str) {
    eventually(&format!("{server} {want}"), WAIT, || async {
        let r = with(
            http.get(o.url(&format!("/api/v1/mcp/servers/{server}"))),
            &signed("root", "admin"),
        )
        .send()
        .await
        .ok()?;
        let s: Value = r.json().await.ok()?;
        (s["state"] == want).then_some(())
    })
    .await;
}

/// Steps both runs of the Python client print: the user's on the session revision, the
/// admin's on the stateless one.
fn assert_python_calls(c: &Client, is_admin: bool) {
    let add = c.step("add");
    if is_admin {
        assert_eq!(add["ok"], true, "{add}");
        assert_eq!(add["structured"]["result"], 5, "{add}");
    } else {
        // Not listed for this caller, and refused when called anyway.
        assert_eq!(add["ok"], false, "{add}");
        assert_eq!(add["code"], -32003, "{add}");
        assert_eq!(add["data"]["error"], "role_denied", "{add}");
    }
    let (c1, c2) = (c.step("counter1"), c.step("counter2"));
    assert_eq!(c2["cached"], true, "{c2}");
    // Served from the cache: the backend's counter did not move.
    assert_eq!(c1["structured"], c2["structured"], "{c1} {c2}");
    let echo = c.step("everything_echo");
    assert_eq!(echo["ok"], true, "{echo}");
    assert!(
        echo["text"][0].as_str().is_some_and(|t| t.contains("hi")),
        "{echo}"
    );
    let unknown = c.step("unknown");
    assert_eq!(unknown["code"], -32602, "{unknown}");
    let (l0, l1, l2) = (c.step("limited0"), c.step("limited1"), c.step("limited2"));
    assert_eq!(l0["ok"], true, "{l0}");
    assert_eq!(l1["ok"], true, "{l1}");
    assert_eq!(l2["ok"], false, "{l2}");
    assert_eq!(l2["code"], -32005, "{l2}");
    assert!(
        l2["data"]["retry_after_ms"]
            .as_u64()
            .is_some_and(|ms| ms > 1000),
        "{l2}"
    );
    // `ping` is in the session revisions only (2026-07-28 removed it).
    let ping = c.step("ping");
    if is_admin {
        assert_eq!(ping["code"], -32601, "{ping}");
    } else {
        assert_eq!(ping["ok"], true, "{ping}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_and_typescript_sdk_clients_use_both_backends_through_mcp() {
    let mut py = McpServer::start(&[]);
    let proxy = RecordingProxy::start(([127, 0, 0, 1], py.port).into()).await;
    let dir = tempfile::tempdir().expect("temp dir");
    let ev = Everything::start(dir.path()).await;
    let o = Omni2::start(&config(&proxy.url(), &ev.url()), None);
    let http = http_client();
    wait_healthy(&http, &o, "py", "healthy").await;
    wait_healthy(&http, &o, "ev", "healthy").await;
    let url = o.url("/mcp");

    // The session revision, as a user: `py__add` (admin only) is not listed.
    let alice = headers("alice", "user");
    let c = Client::python(&url, "session", &[], &alice);
    let init = c.step("initialize");
    assert_eq!(init["protocol"], "2025-11-25", "{init}");
    assert_eq!(init["server"], "omni2");
    assert_eq!(init["list_changed"], true);
    let listed = names(&c.step("list"));
    for t in ["py__counter", "py__echo", "ev__echo", "ev__get-sum"] {
        assert!(listed.contains(&t.to_owned()), "{t} in {listed:?}");
    }
    assert!(!listed.contains(&"py__add".to_owned()), "{listed:?}");
    assert_python_calls(&c, false);

    // The stateless revision, as an admin: `py__add` is listed and callable.
    let root = headers("root", "admin");
    let c = Client::python(&url, "discover", &[], &root);
    let d = c.step("discover");
    assert!(
        d["versions"]
            .as_array()
            .expect("versions")
            .contains(&json!("2026-07-28")),
        "{d}"
    );
    let listed = names(&c.step("list"));
    assert!(listed.contains(&"py__add".to_owned()), "{listed:?}");
    assert_python_calls(&c, true);

    // The TypeScript SDK (session revision).
    let c = Client::node(&url, &[], &root);
    let init = c.step("initialize");
    assert_eq!(init["server"], "omni2", "{init}");
    assert_eq!(init["session"], true, "{init}");
    assert!(names(&c.step("list")).contains(&"py__add".to_owned()));
    let add = c.step("add");
    assert_eq!(add["structured"]["result"], 42, "{add}");
    let (c1, c2) = (c.step("counter1"), c.step("counter2"));
    assert_eq!(c1["cached"], true, "cached by the Python runs: {c1}");
    assert_eq!(c2["structured"], c1["structured"], "{c2}");
    let echo = c.step("everything_echo");
    assert!(
        echo["text"][0]
            .as_str()
            .is_some_and(|t| t.contains("from ts")),
        "{echo}"
    );
    let sum = c.step("everything_sum");
    assert_eq!(sum["ok"], true, "{sum}");
    assert!(
        sum["text"][0].as_str().is_some_and(|t| t.contains('3')),
        "{sum}"
    );

    // The backend saw omni2's own requests only: no client token, no identity headers.
    let sent = proxy.sent();
    assert!(sent.contains("tools/call"), "the proxy recorded the calls");
    assert!(
        !sent.contains("client-token-must-not-leak"),
        "bearer token leaked"
    );
    assert!(
        !sent.contains("authorization:"),
        "an authorization header reached the backend"
    );
    assert!(
        !sent.contains("x-user-id"),
        "identity headers reached the backend"
    );
    py.kill();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_changed_reaches_both_sdk_clients_when_a_backend_dies() {
    let mut py = McpServer::start(&[]);
    let dir = tempfile::tempdir().expect("temp dir");
    let ev = Everything::start(dir.path()).await;
    let o = Omni2::start(&config(&py.url(), &ev.url()), None);
    let http = http_client();
    wait_healthy(&http, &o, "py", "healthy").await;
    wait_healthy(&http, &o, "ev", "healthy").await;
    let url = o.url("/mcp");
    let root = headers("root", "admin");
    let pyc = Client::python(&url, "session", &["--wait-change"], &root);
    let ts = Client::node(&url, &["--wait-change"], &root);
    pyc.step("initialize");
    ts.step("initialize");
    assert!(names(&pyc.step("list")).contains(&"py__counter".to_owned()));
    assert!(names(&ts.step("list")).contains(&"py__counter".to_owned()));
    pyc.step("ready");
    ts.step("ready");

    py.kill();
    for c in [&pyc, &ts] {
        let listed = names(&c.step("changed"));
        assert!(listed.iter().all(|t| !t.starts_with("py__")), "{listed:?}");
        assert!(listed.contains(&"ev__echo".to_owned()), "{listed:?}");
    }
    // The breaker is open: the call fails at once, saying when to retry (both SDKs).
    for c in [&pyc, &ts] {
        assert_breaker_refused(&c.step("down_call"));
    }
}

#[tokio::test]
async fn bad_input_gets_a_clear_error_and_omni2_stays_up() {
    let mut py = McpServer::start(&[]);
    let o = Omni2::start(&config(&py.url(), "http://127.0.0.1:9/mcp"), None);
    let http = http_client();
    wait_healthy(&http, &o, "py", "healthy").await;
    let root = signed("root", "admin");

    // No identity: refused before any MCP processing, like REST.
    let (status, _, body) = mcp_post(&http, &o, &[], &[], "{}").await;
    assert_eq!(status, 401, "{body}");
    assert!(body.contains("missing_identity"), "{body}");

    // Malformed JSON.
    let (status, _, body) = mcp_post(&http, &o, &root, &[], "{not json").await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body.contains("-32700") && body.contains("Parse error"),
        "{body}"
    );

    // A JSON-RPC batch (no revision we serve has batches), huge or not.
    let batch: Vec<Value> = (0..20_000)
        .map(|i| json!({"jsonrpc": "2.0", "id": i, "method": "ping"}))
        .collect();
    let text = serde_json::to_string(&batch).expect("json");
    assert!(text.len() < omni2_core::gateway::MAX_BODY_BYTES);
    let (status, _, body) = mcp_post(&http, &o, &root, &[], text).await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body.contains("-32600") && body.contains("batches"),
        "{body}"
    );
    // Over the body limit.
    let big = format!("{{\"pad\": \"{}\"}}", "x".repeat(1_100_000));
    let (status, _, _) = mcp_post(&http, &o, &root, &[], big).await;
    assert_eq!(status, 413);

    // Unknown method (stateless revision).
    let unknown = json!({"jsonrpc": "2.0", "id": 1, "method": "nope/nothing", "params": {"_meta": mcp_meta()}});
    let mut h = MCP_MODERN.to_vec();
    h.push(("mcp-method", "nope/nothing"));
    let (status, _, body) = mcp_post(&http, &o, &root, &h, unknown.to_string()).await;
    eprintln!("unknown: {status} {body}");
    assert!(body.contains("-32601"), "{status} {body}");

    // Mirrored headers that contradict the body: 400 / -32020.
    let list =
        json!({"jsonrpc": "2.0", "id": 2, "method": "tools/list", "params": {"_meta": mcp_meta()}});
    let mut h = MCP_MODERN.to_vec();
    h.push(("mcp-method", "tools/call"));
    let (status, _, body) = mcp_post(&http, &o, &root, &h, list.to_string()).await;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("-32020"), "{body}");
    let call = json!({"jsonrpc": "2.0", "id": 3, "method": "tools/call",
        "params": {"name": "py__counter", "arguments": {}, "_meta": mcp_meta()}});
    let mut h = MCP_MODERN.to_vec();
    h.extend([("mcp-method", "tools/call"), ("mcp-name", "py__echo")]);
    let (status, _, body) = mcp_post(&http, &o, &root, &h, call.to_string()).await;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("-32020"), "{body}");

    // Missing mirrored headers are a mismatch too.
    let mut h = MCP_MODERN.to_vec();
    h.push(("mcp-method", "tools/call"));
    let (status, _, body) = mcp_post(&http, &o, &root, &h, call.to_string()).await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body.contains("-32020") && body.contains("Mcp-Name"),
        "{body}"
    );

    // Matching headers: served.
    let mut h = MCP_MODERN.to_vec();
    h.extend([("mcp-method", "tools/call"), ("mcp-name", "py__counter")]);
    let (status, _, body) = mcp_post(&http, &o, &root, &h, call.to_string()).await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"result\""), "{body}");

    // A session opened by one user is not another's.
    let init = json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "raw", "version": "1"}}});
    let (status, headers, body) = mcp_post(&http, &o, &root, &[], init.to_string()).await;
    assert_eq!(status, 200, "{body}");
    let session = headers["mcp-session-id"]
        .to_str()
        .expect("session id")
        .to_owned();
    let ping = json!({"jsonrpc": "2.0", "id": 2, "method": "ping"}).to_string();
    let session_headers = [
        ("mcp-session-id", session.as_str()),
        ("mcp-protocol-version", "2025-06-18"),
    ];
    let alice = signed("alice", "user");
    let (status, _, _) = mcp_post(&http, &o, &alice, &session_headers, ping.clone()).await;
    assert_eq!(status, 404);
    let (status, _, body) = mcp_post(&http, &o, &root, &session_headers, ping).await;
    assert_eq!(status, 200, "{body}");

    // Still up and serving.
    let health = http.get(o.url("/health")).send().await.expect("health");
    assert_eq!(health.status(), 200);
    py.kill();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_changed_when_a_backend_recovers_and_when_its_tools_change() {
    let mut py = McpServer::start(&[]);
    let dir = tempfile::tempdir().expect("temp dir");
    let ev = Everything::start(dir.path()).await;
    let o = Omni2::start(&config_with(&py.url(), &ev.url(), "500ms", "1s"), None);
    let http = http_client();
    wait_healthy(&http, &o, "py", "healthy").await;
    let root = headers("root", "admin");
    let c = Client::python(
        &o.url("/mcp"),
        "session",
        &["--wait-change", "--wait-recovery"],
        &root,
    );
    c.step("initialize");
    c.step("list");
    c.step("ready");
    py.kill();
    let listed = names(&c.step("changed"));
    assert!(listed.iter().all(|t| !t.starts_with("py__")), "{listed:?}");
    c.step("down_call");
    c.step("ready2");
    py.restart();
    let listed = names(&c.step("recovered"));
    assert!(listed.contains(&"py__add".to_owned()), "{listed:?}");
    assert!(!listed.contains(&"py__late_tool".to_owned()), "{listed:?}");
    let added = c.step("add_tool");
    assert_eq!(added["ok"], true, "{added}");
    // The backend said its list changed; omni2 refetched it and told its own clients.
    let added = c.step("added");
    assert!(
        names(&added).contains(&"py__late_tool".to_owned()),
        "{added}"
    );
}

/// The namespaced tools a caller lists over 2026-07-28, or `None` if the answer has none.
async fn listed(
    http: &reqwest::Client,
    o: &Omni2,
    who: &[(String, String)],
) -> Option<Vec<String>> {
    let list =
        json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {"_meta": mcp_meta()}});
    let mut h = MCP_MODERN.to_vec();
    h.push(("mcp-method", "tools/list"));
    let (status, _, body) = mcp_post(http, o, who, &h, list.to_string()).await;
    if status != 200 {
        return None;
    }
    let v: Value = serde_json::from_str(&body).ok()?;
    let tools = v["result"]["tools"].as_array()?;
    let mut names: Vec<String> = tools
        .iter()
        .filter_map(|t| Some(t["name"].as_str()?.to_owned()))
        .collect();
    names.sort();
    Some(names)
}

/// A reload that puts a new server in front of `py` leaves `py__add` admin-only: each
/// server's per-tool `roles` are found by name in the live config, never by position.
#[tokio::test]
async fn per_tool_roles_follow_their_server_across_a_reload() {
    let py = McpServer::start(&[]);
    let other = McpServer::start(&[]);
    let server = |name: &str, url: &str, tools: &str| {
        format!(
            "  - name: {name}\n    url: {url}\n    protocol: legacy\n    probe_interval: 200ms\n    probe_timeout: 1s\n    healthy_after: 1\n{tools}"
        )
    };
    let head = "identity_secret: ${OMNI2_TEST_SECRET}\nservers:\n";
    let guarded = "    tools:\n      add: {roles: [admin]}\n";
    let before = format!("{head}{}", server("py", &py.url(), guarded));
    let o = Omni2::start(&before, None);
    let http = http_client();
    let alice = signed("alice", "user");
    let has = |names: &[String], tool: &str| names.iter().any(|n| n == tool);
    eventually("py's tools listed", WAIT, || async {
        listed(&http, &o, &alice)
            .await
            .filter(|n| has(n, "py__echo"))
    })
    .await;
    let names = listed(&http, &o, &alice).await.expect("list");
    assert!(!has(&names, "py__add"), "{names:?}");

    // `other` (no tool policies) now comes first; `py` keeps its policy.
    let after = format!(
        "{head}{}{}",
        server("other", &other.url(), ""),
        server("py", &py.url(), guarded)
    );
    let tmp = o.config_path().with_extension("yaml.tmp");
    std::fs::write(&tmp, after).expect("write");
    std::fs::rename(&tmp, o.config_path()).expect("rename");
    let names = eventually("both servers listed", WAIT, || async {
        listed(&http, &o, &alice)
            .await
            .filter(|n| has(n, "other__echo") && has(n, "py__echo"))
    })
    .await;
    assert!(
        !has(&names, "py__add"),
        "py's policy went to another server: {names:?}"
    );
    assert!(has(&names, "other__add"), "{names:?}");
    let root = signed("root", "admin");
    let names = listed(&http, &o, &root).await.expect("list");
    assert!(has(&names, "py__add"), "{names:?}");
}
