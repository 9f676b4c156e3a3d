//! The real `omni2` binary against the real Python MCP server: tool calls, cache, metrics,
//! identity, and chaos (kill, restart, SIGSTOP, slow server).

use std::time::Duration;

use crate::common::*;
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(20);

async fn call(
    http: &reqwest::Client,
    o: &Omni2,
    server: &str,
    tool: &str,
    args: Value,
) -> reqwest::Response {
    with(
        http.post(o.url(&format!("/api/v1/mcp/servers/{server}/tools/{tool}/call"))),
        &user(),
    )
    .json(&args)
    .send()
    .await
    .expect("request")
}

/// A tool call that must answer JSON.
async fn call_value(
    http: &reqwest::Client,
    o: &Omni2,
    server: &str,
    tool: &str,
    args: Value,
) -> Value {
    call(http, o, server, tool, args)
        .await
        .json()
        .await
        .expect("json")
}

async fn wait_state(
    http: &reqwest::Client,
    o: &Omni2,
    server: &str,
    state: &str,
    circuit: Option<&str>,
) -> Value {
    eventually(&format!("{server} {state} {circuit:?}"), WAIT, || async {
        let s = server_status(http, o, server).await;
        let ok = s["state"] == state && circuit.is_none_or(|c| s["circuit"] == c);
        ok.then_some(s)
    })
    .await
}

#[tokio::test]
async fn tool_calls_cache_and_metrics_against_the_python_sdk() {
    let mcp = McpServer::start(&[]);
    let o = Omni2::start(&config(&[("py", &mcp.url())], ""), None);
    let http = http_client();
    let s = wait_state(&http, &o, "py", "healthy", Some("closed")).await;
    let names: Vec<&str> = s["tools"]
        .as_array()
        .expect("tools")
        .iter()
        .filter_map(|t| t["name"].as_str())
        .collect();
    for t in ["add", "echo", "sleep", "fail", "counter"] {
        assert!(names.contains(&t), "{t} in {names:?}");
    }
    let add = s["tools"]
        .as_array()
        .expect("tools")
        .iter()
        .find(|t| t["name"] == "add")
        .expect("add");
    assert_eq!(add["readOnlyHint"], true);

    // Not cacheable (no config, annotations untrusted): two upstream calls.
    let r: Value = call_value(&http, &o, "py", "add", json!({"a": 2, "b": 3})).await;
    assert_eq!(r["cached"], false);
    assert_eq!(r["isError"], false);
    assert_eq!(r["structuredContent"]["result"], 5, "{r}");

    // counter is configured cacheable: the second call is a hit and does not increment.
    let first: Value = call_value(&http, &o, "py", "counter", json!({})).await;
    let second: Value = call_value(&http, &o, "py", "counter", json!({})).await;
    assert_eq!(first["cached"], false);
    assert_eq!(second["cached"], true);
    assert_eq!(first["structuredContent"], second["structuredContent"]);

    // Argument order does not matter for the key.
    let a: Value = call_value(&http, &o, "py", "echo", json!({"text": "hi"})).await;
    assert_eq!(a["cached"], false);
    let raw = with(
        http.post(o.url("/api/v1/mcp/servers/py/tools/echo/call")),
        &user(),
    )
    .header("content-type", "application/json")
    .body(r#"{ "text" : "hi" }"#)
    .send()
    .await
    .expect("request");
    let b: Value = raw.json().await.expect("json");
    assert_eq!(b["cached"], true);

    // isError results are never cached, even for a cacheable tool.
    for _ in 0..2 {
        let f: Value = call_value(&http, &o, "py", "fail", json!({})).await;
        assert_eq!(f["isError"], true, "{f}");
        assert_eq!(f["cached"], false);
    }

    // Unknown tool and server, malformed arguments.
    assert_eq!(call(&http, &o, "py", "nope", json!({})).await.status(), 404);
    assert_eq!(call(&http, &o, "zz", "add", json!({})).await.status(), 404);
    let bad = with(
        http.post(o.url("/api/v1/mcp/servers/py/tools/add/call")),
        &user(),
    )
    .body("[1,2]")
    .send()
    .await
    .expect("request");
    assert_eq!(bad.status(), 400);

    // Cache stats; invalidation needs the admin role.
    let stats: Value = with(http.get(o.url("/api/v1/cache")), &user())
        .send()
        .await
        .expect("req")
        .json()
        .await
        .expect("json");
    assert_eq!(stats["hits"], 2, "{stats}");
    assert!(stats["entries"].as_u64().is_some_and(|e| e >= 2), "{stats}");
    assert!(stats["bytes"].as_u64().is_some_and(|b| b > 0), "{stats}");
    let denied = with(http.delete(o.url("/api/v1/cache/py/counter")), &user())
        .send()
        .await
        .expect("req");
    assert_eq!(denied.status(), 403);
    let ok = with(http.delete(o.url("/api/v1/cache/py/counter")), &admin())
        .send()
        .await
        .expect("req");
    assert_eq!(ok.status(), 200);
    let third: Value = call_value(&http, &o, "py", "counter", json!({})).await;
    assert_eq!(third["cached"], false, "invalidated");
    assert_ne!(third["structuredContent"], first["structuredContent"]);

    // Metrics: the exact names, and promtool accepts the exposition.
    let text = o.metrics(&http).await;
    for name in [
        "omni2_mcp_server_up{server=\"py\"} 1",
        "omni2_mcp_server_state{server=\"py\",state=\"healthy\"} 1",
        "omni2_mcp_probe_duration_seconds_bucket",
        "omni2_circuit_state{server=\"py\",state=\"closed\"} 1",
        "omni2_tool_calls_total{result=\"cached\",server=\"py\",tool=\"counter\"} 1",
        "omni2_tool_cache_hits_total 2",
        "omni2_tool_cache_misses_total",
        "omni2_tool_cache_evictions_total",
        "omni2_ws_connections 0",
        "omni2_ws_messages_total",
        "omni2_ws_dropped_total",
    ] {
        assert!(text.contains(name), "{name} missing in:\n{text}");
    }
    test_support::assert_promtool_metrics(&text);
}

#[tokio::test]
async fn kill_opens_the_breaker_and_restart_heals() {
    // Legacy sessions: after the restart the server has forgotten the session.
    let mut mcp = McpServer::start(&["--json"]);
    let o = Omni2::start(&legacy_config(&[("py", &mcp.url())], ""), None);
    let http = http_client();
    wait_state(&http, &o, "py", "healthy", Some("closed")).await;

    mcp.kill();
    let s = wait_state(&http, &o, "py", "unhealthy", Some("open")).await;
    assert!(
        s["last_error"].as_str().is_some_and(|e| !e.is_empty()),
        "{s}"
    );
    let r = call(&http, &o, "py", "add", json!({"a": 1, "b": 1})).await;
    assert_eq!(r.status(), 503);
    let retry: u64 = r.headers()["retry-after"]
        .to_str()
        .expect("ascii")
        .parse()
        .expect("seconds");
    assert!((1..=2).contains(&retry), "{retry}");
    let body: Value = r.json().await.expect("json");
    assert_eq!(body["error"], "circuit_open");

    mcp.restart();
    wait_state(&http, &o, "py", "healthy", Some("closed")).await;
    let r: Value = call_value(&http, &o, "py", "add", json!({"a": 1, "b": 1})).await;
    assert_eq!(r["structuredContent"]["result"], 2, "{r}");
}

#[tokio::test]
async fn sigstop_makes_probes_time_out_and_sigcont_recovers() {
    // Legacy lifecycle: the probe is `ping` on an open session.
    let mcp = McpServer::start(&[]);
    let o = Omni2::start(&legacy_config(&[("py", &mcp.url())], ""), None);
    let http = http_client();
    wait_state(&http, &o, "py", "healthy", None).await;
    mcp.pause();
    let s = wait_state(&http, &o, "py", "unhealthy", None).await;
    assert!(
        s["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("timed out")),
        "{s}"
    );
    // The app itself stays responsive while probes hang.
    assert_eq!(
        http.get(o.url("/health"))
            .send()
            .await
            .expect("req")
            .status(),
        200
    );
    mcp.resume();
    wait_state(&http, &o, "py", "healthy", None).await;
}

#[tokio::test]
async fn slow_server_is_degraded() {
    let mcp = McpServer::start(&[]);
    let o = Omni2::start(&config(&[("py", &mcp.url())], ""), None);
    let http = http_client();
    wait_state(&http, &o, "py", "healthy", None).await;
    let r = call(&http, &o, "py", "slow_down", json!({"milliseconds": 500})).await;
    assert_eq!(r.status(), 200);
    let s = wait_state(&http, &o, "py", "degraded", None).await;
    assert!(s["latency_ms"].as_f64().is_some_and(|l| l >= 300.0), "{s}");
    call(&http, &o, "py", "slow_down", json!({"milliseconds": 0})).await;
    wait_state(&http, &o, "py", "healthy", None).await;
}

#[tokio::test]
async fn legacy_lifecycle_calls_and_caches() {
    let mcp = McpServer::start(&[]);
    let o = Omni2::start(&legacy_config(&[("py", &mcp.url())], ""), None);
    let http = http_client();
    wait_state(&http, &o, "py", "healthy", Some("closed")).await;
    let first: Value = call_value(&http, &o, "py", "counter", json!({})).await;
    let second: Value = call_value(&http, &o, "py", "counter", json!({})).await;
    assert_eq!(
        (first["cached"].clone(), second["cached"].clone()),
        (json!(false), json!(true))
    );
    assert!(
        first.get("resultType").is_none(),
        "legacy results carry no resultType: {first}"
    );
}

#[tokio::test]
async fn stateless_server_is_probed_and_called() {
    let mcp = McpServer::start(&["--stateless", "--json"]);
    let o = Omni2::start(&config(&[("st", &mcp.url())], ""), None);
    let http = http_client();
    wait_state(&http, &o, "st", "healthy", Some("closed")).await;
    let r: Value = call_value(&http, &o, "st", "add", json!({"a": 20, "b": 22})).await;
    assert_eq!(r["structuredContent"]["result"], 42, "{r}");
}

#[tokio::test]
async fn identity_is_required_and_signatures_checked() {
    let extra = "identity_secret: ${OMNI2_TEST_SECRET}\nroles: {tool_call: [tools]}\n";
    let o = Omni2::start(&config(&[], extra), None);
    let http = http_client();
    let get = |h: Vec<(String, String)>| {
        let req = with(http.get(o.url("/api/v1/mcp/servers")), &h);
        async move { req.send().await.expect("req") }
    };
    let exp = unix_now() + 600;
    // Public liveness, no identity.
    assert_eq!(
        http.get(o.url("/health"))
            .send()
            .await
            .expect("req")
            .status(),
        200
    );
    let r = get(vec![]).await;
    assert_eq!(r.status(), 401);
    let body: Value = r.json().await.expect("json");
    assert_eq!(body["error"], "missing_identity");
    // Unsigned, wrongly signed, expired.
    assert_eq!(get(identity("a", "user", exp, None)).await.status(), 401);
    assert_eq!(
        get(identity(
            "a",
            "user",
            exp,
            Some("another-secret-another-secret-0000")
        ))
        .await
        .status(),
        401
    );
    assert_eq!(
        get(identity("a", "user", unix_now() - 1, Some(SECRET)))
            .await
            .status(),
        401
    );
    // Tampered after signing.
    let mut forged = identity("a", "user", exp, Some(SECRET));
    forged[3].1 = "admin".into();
    assert_eq!(get(forged).await.status(), 401);
    assert_eq!(
        get(identity("a", "user", exp, Some(SECRET))).await.status(),
        200
    );
    // Role guard on tool calls: 403 before any server lookup.
    let r = with(
        http.post(o.url("/api/v1/mcp/servers/x/tools/y/call")),
        &identity("a", "user", exp, Some(SECRET)),
    )
    .send()
    .await
    .expect("req");
    assert_eq!(r.status(), 403);
}

#[tokio::test]
async fn listens_on_a_unix_socket() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sock = dir.path().join("omni2.sock");
    let listen = format!("unix:{}", sock.display());
    let o = Omni2::start(&config(&[], ""), Some(&listen));
    assert_eq!(o.addr, listen);
    let http = reqwest::Client::builder()
        .unix_socket(sock.clone())
        .build()
        .expect("client");
    let r = http
        .get("http://omni2/health")
        .send()
        .await
        .expect("req over the socket");
    assert_eq!(r.status(), 200);
}

/// A tool added at runtime shows in omni2's status once the server announces it
/// (`notifications/tools/list_changed`). Probes are an hour apart, so only the announcement
/// can explain the refresh.
async fn announced_tool_appears(
    server_args: &[&str],
    yaml: fn(&[(&str, &str)], &str) -> String,
    on_request_stream: bool,
) {
    let mcp = McpServer::start(server_args);
    let fast_probes = yaml(&[("py", &mcp.url())], "");
    // Without this, the periodic refresh (every 10th 200 ms probe) would pass the test alone.
    assert!(
        fast_probes.contains("probe_interval: 200ms"),
        "{fast_probes}"
    );
    let slow_probes = fast_probes.replace("probe_interval: 200ms", "probe_interval: 1h");
    let o = Omni2::start(&slow_probes, None);
    let http = http_client();
    let before = wait_state(&http, &o, "py", "healthy", Some("closed")).await;
    let has_tool = |s: &Value, name: &str| {
        s["tools"]
            .as_array()
            .is_some_and(|tools| tools.iter().any(|t| t["name"] == name))
    };
    assert!(!has_tool(&before, "late"), "{before}");
    let tool_count = before["tool_count"].as_u64().expect("tool_count");

    let added: Value = call_value(
        &http,
        &o,
        "py",
        "add_tool_later",
        json!({"name": "late", "on_request_stream": on_request_stream}),
    )
    .await;
    assert_eq!(added["isError"], false, "{added}");
    let after = eventually("the announced tool in the status", WAIT, || async {
        let s = server_status(&http, &o, "py").await;
        has_tool(&s, "late").then_some(s)
    })
    .await;
    assert_eq!(after["tool_count"], tool_count + 1, "{after}");
    let late: Value = call_value(&http, &o, "py", "late", json!({})).await;
    assert_eq!(late["isError"], false, "{late}");
}

#[tokio::test]
async fn announced_tool_list_change_over_a_listen_stream() {
    // Revision 2026-07-28: the change rides a `subscriptions/listen` stream.
    announced_tool_appears(&[], config, false).await;
}

#[tokio::test]
async fn announced_tool_list_change_over_a_listen_stream_json() {
    announced_tool_appears(&["--json"], config, false).await;
}

#[tokio::test]
async fn announced_tool_list_change_over_the_session_stream() {
    // Earlier revisions: the change rides the session's standalone GET stream.
    announced_tool_appears(&[], legacy_config, false).await;
}

#[tokio::test]
async fn announced_tool_list_change_over_the_session_stream_json() {
    announced_tool_appears(&["--json"], legacy_config, false).await;
}

#[tokio::test]
async fn announced_tool_list_change_over_the_call_response_without_session() {
    // Earlier revisions without sessions have no standalone stream: the change rides the
    // SSE response of the call that made it.
    announced_tool_appears(&["--stateless"], legacy_config, true).await;
}
