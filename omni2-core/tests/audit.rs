//! omni2's audit trail, real binary against the real Python MCP server: a tool call is one
//! event with the argument hash (and the canonical text when `arguments: full`), a cached
//! call is marked cached, refusals and cache invalidations are audited too.

use std::path::Path;
use std::time::Duration;

use aws_lc_rs::digest;
use serde_json::{Value, json};

use crate::common::*;

const WAIT: Duration = Duration::from_secs(20);

fn sha256_hex(text: &str) -> String {
    digest::digest(&digest::SHA256, text.as_bytes())
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn audit_config(mcp: &McpServer, file: &Path, arguments: &str) -> String {
    config(
        &[("py", &mcp.url())],
        &format!(
            "audit:\n  sink: file\n  file: {}\n  arguments: {arguments}\n",
            file.display()
        ),
    )
}

/// Waits until the audit file holds `n` events, and returns them.
async fn events(file: &Path, n: usize) -> Vec<Value> {
    eventually(&format!("{n} audit events"), WAIT, || async {
        let text = std::fs::read_to_string(file).unwrap_or_default();
        let got: Vec<Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
            .collect();
        if got.len() == n {
            Ok(got)
        } else {
            Err(format!("{} so far:\n{text}", got.len()))
        }
    })
    .await
}

async fn wait_healthy(http: &reqwest::Client, o: &Omni2) {
    eventually("py healthy with its tools", WAIT, || async {
        let s = server_status(http, o, "py").await;
        (s["state"] == "healthy" && s["tool_count"].as_u64().is_some_and(|n| n > 0)).then_some(())
    })
    .await;
}

async fn post(
    http: &reqwest::Client,
    o: &Omni2,
    who: &[(String, String)],
    tool: &str,
    body: &str,
) -> Value {
    with(
        http.post(o.url(&format!("/api/v1/mcp/servers/py/tools/{tool}/call"))),
        who,
    )
    .header("content-type", "application/json")
    .body(body.to_owned())
    .send()
    .await
    .expect("request")
    .json()
    .await
    .expect("json")
}

#[tokio::test]
async fn tool_calls_and_invalidations_are_audited_with_the_argument_hash() {
    let mcp = McpServer::start(&[]);
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("audit.log");
    let o = Omni2::start(&audit_config(&mcp, &file, "hash"), None);
    let http = http_client();
    wait_healthy(&http, &o).await;

    // echo is cacheable (test config): a miss, then a hit with the keys in another order.
    let secret_text = "audit-argument-sentinel-41";
    let first = post(
        &http,
        &o,
        &user(),
        "echo",
        &format!(r#"{{"text":"{secret_text}"}}"#),
    )
    .await;
    assert_eq!(first["cached"], false, "{first}");
    let second = post(
        &http,
        &o,
        &user(),
        "echo",
        &format!(r#"{{ "text" : "{secret_text}" }}"#),
    )
    .await;
    assert_eq!(second["cached"], true, "{second}");
    // Refused: an unknown tool; a role the cache admin guard does not allow; then allowed.
    post(&http, &o, &user(), "nope", "{}").await;
    let denied = with(http.delete(o.url("/api/v1/cache/py/echo")), &user())
        .send()
        .await
        .expect("delete");
    assert_eq!(denied.status(), 403);
    let cleared = with(http.delete(o.url("/api/v1/cache/py/echo")), &admin())
        .send()
        .await
        .expect("delete");
    assert_eq!(cleared.status(), 200);
    let third = post(
        &http,
        &o,
        &user(),
        "echo",
        &format!(r#"{{"text":"{secret_text}"}}"#),
    )
    .await;
    assert_eq!(third["cached"], false, "invalidated: {third}");
    // The same call through `/mcp` (2026-07-28, stateless) shares the path: audited, and
    // served by the cache the REST call filled.
    let call = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {
        "name": "py__echo", "arguments": {"text": secret_text}, "_meta": mcp_meta()}});
    let mut headers = MCP_MODERN.to_vec();
    headers.extend([("mcp-method", "tools/call"), ("mcp-name", "py__echo")]);
    let (status, _, body) = mcp_post(&http, &o, &user(), &headers, call.to_string()).await;
    assert_eq!(status, 200, "{body}");
    let mcp: Value = serde_json::from_str(&body).expect("json");
    assert_eq!(mcp["result"]["_meta"]["omni2/cached"], true, "{mcp}");

    let got = events(&file, 7).await;
    let hash = sha256_hex(&format!(r#"{{"text":"{secret_text}"}}"#));
    let call = |e: &Value, result: &str, cached: bool| {
        assert_eq!(e["event"], "tool_call", "{e}");
        assert_eq!(e["user"], "alice", "{e}");
        assert_eq!(e["roles"], json!(["user"]), "{e}");
        assert_eq!(e["server"], "py", "{e}");
        assert_eq!(e["result"], result, "{e}");
        assert_eq!(e["cached"], cached, "{e}");
        assert!(e["latency_us"].is_u64(), "{e}");
        assert!(e["time"].as_str().is_some_and(|t| t.ends_with('Z')), "{e}");
        assert_eq!(e["arguments"], Value::Null, "hash only by default: {e}");
    };
    call(&got[0], "ok", false);
    assert_eq!(got[0]["tool"], "echo");
    assert_eq!(got[0]["args_sha256"], hash.as_str());
    call(&got[1], "cached", true);
    assert_eq!(
        got[1]["args_sha256"],
        hash.as_str(),
        "key order does not change the hash"
    );
    call(&got[2], "unknown_tool", false);
    assert_eq!(got[2]["tool"], "nope");
    assert_eq!(
        got[2]["args_sha256"],
        Value::Null,
        "refused before the arguments were read"
    );
    for (e, user, result) in [(&got[3], "alice", "role_denied"), (&got[4], "root", "ok")] {
        assert_eq!(e["event"], "cache_invalidation", "{e}");
        assert_eq!(e["user"], user, "{e}");
        assert_eq!(
            (&e["server"], &e["tool"]),
            (&json!("py"), &json!("echo")),
            "{e}"
        );
        assert_eq!(e["result"], result, "{e}");
    }
    call(&got[5], "ok", false);
    call(&got[6], "cached", true);
    assert_eq!(
        (&got[6]["tool"], &got[6]["args_sha256"]),
        (&json!("echo"), &json!(hash))
    );

    let text = std::fs::read_to_string(&file).expect("audit");
    assert!(
        !text.contains(secret_text),
        "arguments are hashed, not written: {text}"
    );

    let metrics = o.metrics(&http).await;
    assert!(
        metrics.contains("omni2_audit_events_total{result=\"written\"} 7"),
        "{metrics}"
    );
    assert!(metrics.contains("omni2_audit_dropped_total 0"), "{metrics}");
    test_support::assert_promtool_metrics(&metrics);
}

#[tokio::test]
async fn full_arguments_are_the_hashed_canonical_text() {
    let mcp = McpServer::start(&[]);
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("audit.log");
    let o = Omni2::start(&audit_config(&mcp, &file, "full"), None);
    let http = http_client();
    wait_healthy(&http, &o).await;

    let r = post(&http, &o, &user(), "add", r#"{"b": 3, "a": 2}"#).await;
    assert_eq!(r["structuredContent"]["result"], 5, "{r}");
    let got = events(&file, 1).await;
    let canonical = r#"{"a":2,"b":3}"#;
    assert_eq!(got[0]["arguments"], canonical, "{}", got[0]);
    assert_eq!(got[0]["args_sha256"], sha256_hex(canonical).as_str());
    assert_eq!(got[0]["result"], "ok");
}
