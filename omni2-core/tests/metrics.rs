//! `/metrics` of the real binary under real traffic: each series moves with what it counts,
//! and the whole exposition passes `promtool check metrics`.

use std::time::Duration;

use crate::common::*;
use crate::ws_status::{connect, next};
use futures_util::SinkExt;
use test_support::assert_promtool_metrics;
use tokio_tungstenite::tungstenite::Message;

const WAIT: Duration = Duration::from_secs(20);

/// The value of the series written exactly `series` (name and labels), if present.
fn value(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|l| {
        l.strip_prefix(series)?
            .strip_prefix(' ')?
            .trim()
            .parse()
            .ok()
    })
}

fn value_or_zero(text: &str, series: &str) -> f64 {
    value(text, series).unwrap_or(0.0)
}

async fn wait_for_series(
    o: &Omni2,
    http: &reqwest::Client,
    what: &str,
    pred: impl Fn(&str) -> bool,
) -> String {
    eventually(what, WAIT, || async {
        let text = o.metrics(http).await;
        pred(&text).then_some(text)
    })
    .await
}

#[tokio::test]
async fn series_follow_real_traffic_and_pass_promtool() {
    let mut mcp = McpServer::start(&["--json"]);
    let o = Omni2::start(
        &config(&[("s1", &mcp.url())], "roles: {ws_status: [user, admin]}"),
        None,
    );
    let http = http_client();
    let text = wait_for_series(&o, &http, "a successful probe", |t| {
        value_or_zero(t, r#"omni2_mcp_probes_total{result="ok",server="s1"}"#) >= 1.0
    })
    .await;
    assert_promtool_metrics(&text);
    for name in [
        "process_cpu_seconds_total",
        "process_resident_memory_bytes",
        "process_open_fds",
        "omni2_build_info{version=",
    ] {
        assert!(text.contains(name), "{name} missing:\n{text}");
    }
    assert_eq!(
        value(
            &text,
            r#"omni2_mcp_probes_total{result="timeout",server="s1"}"#
        ),
        Some(0.0),
        "every result series is created at 0"
    );
    assert_eq!(value(&text, "omni2_tool_cache_entries"), Some(0.0));

    // Wait until tools/list is known, so that `echo` gets its own label.
    eventually("tools listed", WAIT, || async {
        (server_status(&http, &o, "s1").await["tool_count"].as_u64() > Some(0)).then_some(())
    })
    .await;

    // One upstream call, then the same call from the cache.
    let call = o.url("/api/v1/mcp/servers/s1/tools/echo/call");
    for _ in 0..2 {
        let r = with(http.post(&call), &user())
            .body(r#"{"text":"hi"}"#)
            .send()
            .await
            .expect("call");
        assert_eq!(r.status(), 200);
    }
    let missing = with(http.get(o.url("/api/v1/mcp/servers/nope")), &user())
        .send()
        .await
        .expect("get");
    assert_eq!(missing.status(), 404);
    let unmatched = http.get(o.url("/no/such/route")).send().await.expect("get");
    assert_eq!(unmatched.status(), 404);

    let text = o.metrics(&http).await;
    assert_eq!(
        value(
            &text,
            r#"omni2_tool_call_duration_seconds_count{server="s1",tool="echo"}"#
        ),
        Some(1.0),
        "the cache hit is not an upstream call:\n{text}"
    );
    assert_eq!(value(&text, "omni2_tool_cache_entries"), Some(1.0));
    assert!(value_or_zero(&text, "omni2_tool_cache_bytes") > 0.0);
    let route = "/api/v1/mcp/servers/{name}/tools/{tool}/call";
    assert_eq!(
        value(
            &text,
            &format!(r#"omni2_http_requests_total{{route="{route}",status="200"}}"#)
        ),
        Some(2.0),
        "{text}"
    );
    assert_eq!(
        value(
            &text,
            r#"omni2_http_requests_total{route="/api/v1/mcp/servers/{name}",status="404"}"#
        ),
        Some(1.0)
    );
    assert_eq!(
        value(
            &text,
            r#"omni2_http_requests_total{route="unmatched",status="404"}"#
        ),
        Some(1.0),
        "a path matching no route is `unmatched`, never the path itself"
    );
    assert!(!text.contains("/no/such/route"));

    // WebSocket: a refused Origin, a missing identity, a user without the role, then a
    // client that connects and closes.
    let ws_http = |headers: &[(String, String)]| {
        let mut r = with(http.get(o.url("/ws/mcp-status")), headers)
            .header("connection", "upgrade")
            .header("upgrade", "websocket")
            .header("sec-websocket-version", "13")
            .header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==");
        r = r.timeout(Duration::from_secs(10));
        r
    };
    let origin = ws_http(&user())
        .header("origin", "https://evil.example")
        .send()
        .await
        .expect("handshake");
    assert_eq!(origin.status(), 403);
    let anonymous = ws_http(&[]).send().await.expect("handshake");
    assert_eq!(anonymous.status(), 401);
    let nobody = identity("bob", "nobody", unix_now() + 3600, None);
    let role = ws_http(&nobody).send().await.expect("handshake");
    assert_eq!(role.status(), 403);
    let mut ws = connect(&o, &user()).await;
    assert_eq!(next(&mut ws).await["type"], "snapshot");
    ws.send(Message::Close(None)).await.expect("close");
    let text = wait_for_series(&o, &http, "the client's close counted", |t| {
        value_or_zero(t, r#"omni2_ws_closes_total{reason="client"}"#) >= 1.0
    })
    .await;
    for (reason, n) in [("origin", 1.0), ("identity", 1.0), ("role", 1.0)] {
        assert_eq!(
            value(
                &text,
                &format!(r#"omni2_ws_handshakes_rejected_total{{reason="{reason}"}}"#)
            ),
            Some(n),
            "{reason}:\n{text}"
        );
    }

    // The server goes away: probes fail as transport errors.
    let before = value_or_zero(
        &text,
        r#"omni2_mcp_probes_total{result="transport_error",server="s1"}"#,
    );
    mcp.kill();
    let text = wait_for_series(&o, &http, "failed probes counted", |t| {
        value_or_zero(
            t,
            r#"omni2_mcp_probes_total{result="transport_error",server="s1"}"#,
        ) > before
    })
    .await;
    assert_promtool_metrics(&text);
}
