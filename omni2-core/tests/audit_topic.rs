//! The admin-only `audit` topic on `/ws/mcp-status`, and the tools' `inputSchema` in the
//! status API, against the real binary and the real Python MCP server.

use std::time::Duration;

use crate::common::*;
use crate::ws_status::{connect, send, until};
use serde_json::json;

#[tokio::test]
async fn admins_watch_tool_calls_live_and_users_are_refused() {
    let mcp = McpServer::start(&["--json"]);
    let o = Omni2::start(&config(&[("s1", &mcp.url())], ""), None);
    let http = http_client();
    let status = eventually("tools listed", Duration::from_secs(20), || async {
        let s = server_status(&http, &o, "s1").await;
        (s["tool_count"].as_u64() > Some(0)).then_some(s)
    })
    .await;
    // Each tool carries the inputSchema of tools/list.
    let echo = status["tools"]
        .as_array()
        .and_then(|t| t.iter().find(|t| t["name"] == "echo"))
        .expect("echo listed");
    assert_eq!(echo["inputSchema"]["type"], "object", "{echo}");
    assert_eq!(
        echo["inputSchema"]["properties"]["text"]["type"], "string",
        "{echo}"
    );
    assert_eq!(echo["inputSchema"]["required"], json!(["text"]), "{echo}");

    let mut user_ws = connect(&o, &user()).await;
    let mut user_seq = 0;
    until(&mut user_ws, &mut user_seq, |m| m["type"] == "snapshot").await;
    send(&mut user_ws, json!({"action": "subscribe_audit"})).await;
    let refused = until(&mut user_ws, &mut user_seq, |m| m["type"] == "error").await;
    assert_eq!(refused["action"], "subscribe_audit");
    assert_eq!(refused["error"], "role_denied", "{refused}");

    let mut admin_ws = connect(&o, &admin()).await;
    let mut admin_seq = 0;
    until(&mut admin_ws, &mut admin_seq, |m| m["type"] == "snapshot").await;
    send(&mut admin_ws, json!({"action": "subscribe_audit"})).await;
    until(&mut admin_ws, &mut admin_seq, |m| {
        m["type"] == "audit_subscribed"
    })
    .await;

    let call = with(
        http.post(o.url("/api/v1/mcp/servers/s1/tools/echo/call")),
        &user(),
    )
    .body(r#"{"text":"secret words"}"#)
    .send()
    .await
    .expect("call");
    assert_eq!(call.status(), 200);
    let seen = until(&mut admin_ws, &mut admin_seq, |m| m["type"] == "audit").await;
    let event = &seen["event"];
    assert_eq!(event["event"], "tool_call", "{seen}");
    assert_eq!(
        (
            &event["user"],
            &event["server"],
            &event["tool"],
            &event["result"]
        ),
        (&json!("alice"), &json!("s1"), &json!("echo"), &json!("ok")),
        "{seen}"
    );
    assert!(event["args_sha256"].as_str().is_some_and(|h| h.len() == 64));
    assert!(
        !seen.to_string().contains("secret words"),
        "arguments are hashed by default: {seen}"
    );

    // The user's socket got nothing of it; unsubscribing stops the admin's stream.
    send(&mut user_ws, json!({"action": "ping"})).await;
    let next = until(&mut user_ws, &mut user_seq, |m| {
        m["type"] != "server_status"
    })
    .await;
    assert_eq!(next["type"], "pong", "no audit message for a user: {next}");
    send(&mut admin_ws, json!({"action": "unsubscribe_audit"})).await;
    until(&mut admin_ws, &mut admin_seq, |m| {
        m["type"] == "audit_unsubscribed"
    })
    .await;
    let again = with(
        http.post(o.url("/api/v1/mcp/servers/s1/tools/echo/call")),
        &user(),
    )
    .body(r#"{"text":"again"}"#)
    .send()
    .await
    .expect("call");
    assert_eq!(again.status(), 200);
    send(&mut admin_ws, json!({"action": "ping"})).await;
    let next = until(&mut admin_ws, &mut admin_seq, |m| {
        m["type"] != "server_status"
    })
    .await;
    assert_eq!(next["type"], "pong", "no audit after unsubscribing: {next}");
}
