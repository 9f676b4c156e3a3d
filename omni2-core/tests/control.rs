//! Control actions against the real binary and a real Python MCP server: REST and the
//! WebSocket, admin against user, bad input. The state changes must show up where
//! everyone else sees them (the status API, WebSocket deltas), not only in the answer.

use std::time::Duration;

use crate::common::*;
use crate::ws_status::{Ws, connect, next, send, until};
use futures_util::SinkExt;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

const WAIT: Duration = Duration::from_secs(20);

async fn post(
    http: &reqwest::Client,
    o: &Omni2,
    path: &str,
    who: &[(String, String)],
    body: Option<&str>,
) -> (u16, Value) {
    let mut req = with(http.post(o.url(path)), who);
    if let Some(b) = body {
        req = req
            .header("content-type", "application/json")
            .body(b.to_owned());
    }
    let r = req.send().await.expect("request");
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

async fn healthy(http: &reqwest::Client, o: &Omni2, name: &str) {
    eventually(&format!("{name} healthy"), WAIT, || async {
        (server_status(http, o, name).await["state"] == "healthy").then_some(())
    })
    .await;
}

#[tokio::test]
async fn rest_control_actions_need_the_admin_role_and_change_the_published_state() {
    let mcp = McpServer::start(&["--json"]);
    // A slow schedule: only an operator's probe runs in the window the test looks at.
    let yaml =
        config(&[("a", &mcp.url())], "").replace("probe_interval: 200ms", "probe_interval: 1h");
    let o = Omni2::start(&yaml, None);
    let http = http_client();
    healthy(&http, &o, "a").await;

    // A user is refused everything, and nothing happens.
    for path in ["probe", "breaker/reset", "disable", "enable"] {
        let (status, body) = post(
            &http,
            &o,
            &format!("/api/v1/mcp/servers/a/{path}"),
            &user(),
            None,
        )
        .await;
        assert_eq!(
            (status, body["error"].as_str()),
            (403, Some("role_denied")),
            "{path}: {body}"
        );
    }
    let r = with(http.delete(o.url("/api/v1/cache/a")), &user())
        .send()
        .await
        .expect("delete");
    assert_eq!(r.status(), 403);
    assert_eq!(server_status(&http, &o, "a").await["state"], "healthy");

    // Probe now: answered with the outcome of a probe that really ran.
    let (status, body) = post(&http, &o, "/api/v1/mcp/servers/a/probe", &admin(), None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["action"], "probe");
    assert_eq!(body["server"], "a");
    assert_eq!(body["state"], "healthy");
    assert!(
        body["latency_ms"].as_f64().is_some_and(|ms| ms > 0.0),
        "{body}"
    );

    // Bad input: unknown server, bad reset body.
    let (status, body) = post(&http, &o, "/api/v1/mcp/servers/nope/probe", &admin(), None).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (404, Some("unknown_server"))
    );
    for bad in ["{\"to\":\"open\"}", "{\"to\":\"closed\",\"x\":1}", "{nope"] {
        let (status, body) = post(
            &http,
            &o,
            "/api/v1/mcp/servers/a/breaker/reset",
            &admin(),
            Some(bad),
        )
        .await;
        assert_eq!(
            (status, body["error"].as_str()),
            (400, Some("bad_arguments")),
            "{bad}: {body}"
        );
    }

    // Reset to half-open: the published circuit moves; the trial probe it brings forward
    // closes it again (the server is fine).
    let (status, body) = post(
        &http,
        &o,
        "/api/v1/mcp/servers/a/breaker/reset",
        &admin(),
        Some("{\"to\":\"half_open\"}"),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        (body["from"].as_str(), body["to"].as_str()),
        (Some("closed"), Some("half_open"))
    );
    assert_eq!(body["changed"], true);
    eventually("the trial closes the breaker", WAIT, || async {
        (server_status(&http, &o, "a").await["circuit"] == "closed").then_some(())
    })
    .await;
    let (_, body) = post(
        &http,
        &o,
        "/api/v1/mcp/servers/a/breaker/reset",
        &admin(),
        None,
    )
    .await;
    assert_eq!(
        (body["to"].as_str(), body["changed"].as_bool()),
        (Some("closed"), Some(false))
    );

    // Disable: shown as disabled, calls and probes fail fast with a clear error.
    let (status, body) = post(&http, &o, "/api/v1/mcp/servers/a/disable", &admin(), None).await;
    assert_eq!(
        (status, body["state"].as_str(), body["changed"].as_bool()),
        (200, Some("disabled"), Some(true))
    );
    assert_eq!(server_status(&http, &o, "a").await["state"], "disabled");
    let call = with(
        http.post(o.url("/api/v1/mcp/servers/a/tools/echo/call")),
        &user(),
    )
    .body("{\"text\":\"hi\"}")
    .send()
    .await
    .expect("call");
    assert_eq!(call.status(), 503);
    let body: Value = call.json().await.expect("json");
    assert_eq!(body["error"], "server_disabled");
    let (status, body) = post(&http, &o, "/api/v1/mcp/servers/a/probe", &admin(), None).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (503, Some("server_disabled"))
    );
    let (_, body) = post(&http, &o, "/api/v1/mcp/servers/a/disable", &admin(), None).await;
    assert_eq!(body["changed"], false, "already disabled");

    // Enable: probed again at once, healthy again.
    let (status, body) = post(&http, &o, "/api/v1/mcp/servers/a/enable", &admin(), None).await;
    assert_eq!(
        (status, body["changed"].as_bool()),
        (200, Some(true)),
        "{body}"
    );
    healthy(&http, &o, "a").await;

    // Cache invalidation goes through the same path (and keeps its answer's shape).
    let r = with(http.delete(o.url("/api/v1/cache/a/echo")), &admin())
        .send()
        .await
        .expect("delete");
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.expect("json");
    assert_eq!(body["invalidated"], json!({"server": "a", "tool": "echo"}));
}

/// Reads until an answer (`result` or `error`) to the control request tagged `id`.
async fn answer(ws: &mut Ws, seq: &mut u64, id: &str) -> Value {
    until(ws, seq, |m| {
        (m["type"] == "result" || m["type"] == "error") && m["id"] == id
    })
    .await
}

#[tokio::test]
async fn websocket_control_actions_answer_results_and_errors_and_never_close_the_socket() {
    let mcp = McpServer::start(&["--json"]);
    let dir = tempfile::tempdir().expect("tempdir");
    let audit_file = dir.path().join("audit.log");
    let audit = format!("audit:\n  sink: file\n  file: {}\n", audit_file.display());
    let yaml =
        config(&[("a", &mcp.url())], &audit).replace("probe_interval: 200ms", "probe_interval: 1h");
    let o = Omni2::start(&yaml, None);
    let http = http_client();
    healthy(&http, &o, "a").await;

    // The snapshot tells each client who it is and what it may do.
    let mut root = connect(&o, &admin()).await;
    let snap = next(&mut root).await;
    assert_eq!(snap["you"]["user"], "root");
    assert_eq!(
        snap["you"]["actions"],
        json!([
            "probe",
            "reset_breaker",
            "invalidate_cache",
            "disable",
            "enable"
        ])
    );
    let mut root_seq = 1;
    let mut alice = connect(&o, &user()).await;
    let snap = next(&mut alice).await;
    assert_eq!(snap["you"]["actions"], json!([]));
    let mut alice_seq = 1;

    // A user's requests: a clear error each, nothing happens, the socket stays open.
    for (i, msg) in [
        json!({"action": "probe", "server": "a"}),
        json!({"action": "reset_breaker", "server": "a", "to": "half_open"}),
        json!({"action": "invalidate_cache", "server": "a"}),
        json!({"action": "disable", "server": "a"}),
    ]
    .into_iter()
    .enumerate()
    {
        let id = format!("u{i}");
        let mut msg = msg;
        msg["id"] = json!(id);
        send(&mut alice, msg.clone()).await;
        let a = answer(&mut alice, &mut alice_seq, &id).await;
        assert_eq!(
            (a["type"].as_str(), a["error"].as_str()),
            (Some("error"), Some("role_denied")),
            "{msg}: {a}"
        );
        assert_eq!(a["action"], msg["action"]);
        assert!(
            a["message"].as_str().is_some_and(|m| m.contains("admin")),
            "{a}"
        );
    }
    assert_eq!(server_status(&http, &o, "a").await["state"], "healthy");
    assert_eq!(server_status(&http, &o, "a").await["circuit"], "closed");

    // Bad input: unknown server, unknown action, bad target, malformed JSON.
    send(
        &mut root,
        json!({"action": "probe", "server": "nope", "id": "b1"}),
    )
    .await;
    let a = answer(&mut root, &mut root_seq, "b1").await;
    assert_eq!(a["error"], "unknown_server", "{a}");
    for bad in [
        json!({"action": "explode", "server": "a"}).to_string(),
        json!({"action": "reset_breaker", "server": "a", "to": "open"}).to_string(),
        json!({"action": "probe"}).to_string(),
        "{\"action\":".to_owned(),
    ] {
        root.send(Message::Text(bad.clone().into()))
            .await
            .expect("send");
        let e = until(&mut root, &mut root_seq, |m| m["type"] == "error").await;
        assert!(
            e["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("invalid message")),
            "{bad}: {e}"
        );
    }

    // An admin's probe: a result with the outcome, and a server_status delta for everyone.
    send(
        &mut root,
        json!({"action": "probe", "server": "a", "id": "p1"}),
    )
    .await;
    let a = answer(&mut root, &mut root_seq, "p1").await;
    assert_eq!(
        (a["type"].as_str(), a["ok"].as_bool(), a["state"].as_str()),
        (Some("result"), Some(true), Some("healthy")),
        "{a}"
    );
    until(&mut alice, &mut alice_seq, |m| {
        m["type"] == "server_status" && m["server"] == "a"
    })
    .await;

    // Disable and enable: deltas arrive as ordinary server_status messages.
    send(
        &mut root,
        json!({"action": "disable", "server": "a", "id": 7}),
    )
    .await;
    let a = until(&mut root, &mut root_seq, |m| m["type"] == "result").await;
    assert_eq!(
        (a["id"].as_i64(), a["state"].as_str()),
        (Some(7), Some("disabled")),
        "{a}"
    );
    until(&mut alice, &mut alice_seq, |m| {
        m["type"] == "server_status" && m["state"] == "disabled"
    })
    .await;
    send(
        &mut root,
        json!({"action": "probe", "server": "a", "id": "p2"}),
    )
    .await;
    assert_eq!(
        answer(&mut root, &mut root_seq, "p2").await["error"],
        "server_disabled"
    );
    send(
        &mut root,
        json!({"action": "enable", "server": "a", "id": "e1"}),
    )
    .await;
    assert_eq!(
        answer(&mut root, &mut root_seq, "e1").await["changed"],
        true
    );
    until(&mut alice, &mut alice_seq, |m| {
        m["type"] == "server_status" && m["state"] == "healthy"
    })
    .await;

    // Breaker reset to half-open shows as a circuit_state delta.
    send(
        &mut root,
        json!({"action": "reset_breaker", "server": "a", "to": "half_open", "id": "r1"}),
    )
    .await;
    let a = answer(&mut root, &mut root_seq, "r1").await;
    assert_eq!(
        (a["from"].as_str(), a["to"].as_str()),
        (Some("closed"), Some("half_open")),
        "{a}"
    );
    until(&mut alice, &mut alice_seq, |m| {
        m["type"] == "circuit_state" && m["to"] == "half_open"
    })
    .await;

    // An admin's cache invalidation: the cached answer is gone.
    let echo = |who: Vec<(String, String)>| {
        let http = &http;
        let o = &o;
        async move {
            let (status, body) = post(
                http,
                o,
                "/api/v1/mcp/servers/a/tools/echo/call",
                &who,
                Some(r#"{"text":"ws-invalidate"}"#),
            )
            .await;
            assert_eq!(status, 200, "{body}");
            body["cached"].as_bool()
        }
    };
    assert_eq!(echo(user()).await, Some(false));
    assert_eq!(echo(user()).await, Some(true));
    send(
        &mut root,
        json!({"action": "invalidate_cache", "server": "a", "tool": "echo", "id": "i1"}),
    )
    .await;
    let a = answer(&mut root, &mut root_seq, "i1").await;
    assert_eq!(a["type"], "result", "{a}");
    assert_eq!(
        a["invalidated"],
        json!({"server": "a", "tool": "echo"}),
        "{a}"
    );
    assert_eq!(echo(user()).await, Some(false), "invalidated");

    // Every action that reached a server, refused or not, is in the audit trail, in order;
    // malformed messages never got that far.
    let action = |user: &str, action: &str, target: &str, result: &str| json!({"event": "control_action", "user": user, "action": action, "target": target, "result": result});
    let invalidation = |user: &str, tool: Option<&str>, result: &str| json!({"event": "cache_invalidation", "user": user, "server": "a", "tool": tool, "result": result});
    let want = [
        action("alice", "probe", "a", "role_denied"),
        action("alice", "reset_breaker", "a", "role_denied"),
        invalidation("alice", None, "role_denied"),
        action("alice", "disable", "a", "role_denied"),
        action("root", "probe", "nope", "unknown_server"),
        action("root", "probe", "a", "ok"),
        action("root", "disable", "a", "ok"),
        action("root", "probe", "a", "server_disabled"),
        action("root", "enable", "a", "ok"),
        action("root", "reset_breaker", "a", "ok"),
        invalidation("root", Some("echo"), "ok"),
    ];
    let got = eventually("the control actions' audit events", WAIT, || async {
        let text = std::fs::read_to_string(&audit_file).unwrap_or_default();
        // Whole lines only: the writer may be between two writes.
        let whole = text.rsplit_once('\n').map_or("", |(whole, _)| whole);
        let got: Vec<Value> = whole
            .lines()
            .map(|l| serde_json::from_str::<Value>(l).expect("a JSON line"))
            .filter(|e| e["event"] != "tool_call")
            .collect();
        (got.len() >= want.len()).then_some(got)
    })
    .await;
    assert_eq!(got.len(), want.len(), "{got:#?}");
    for (e, w) in got.iter().zip(&want) {
        for (key, value) in w.as_object().expect("an object") {
            assert_eq!(&e[key], value, "{key} of {e}, want {w}");
        }
    }

    // Still open after all of it.
    send(&mut alice, json!({"action": "ping"})).await;
    until(&mut alice, &mut alice_seq, |m| m["type"] == "pong").await;
    send(&mut root, json!({"action": "ping"})).await;
    until(&mut root, &mut root_seq, |m| m["type"] == "pong").await;
}
