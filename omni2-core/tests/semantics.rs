//! Health and cache semantics a gateway needs, against the real `omni2` binary and a real
//! Python SDK server with injected faults (`fixtures/faults_mcp_server.py`).

use std::time::{Duration, Instant};

use crate::common::*;
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(30);
const FIXTURE: &str = "faults_mcp_server.py";

async fn call_as(
    http: &reqwest::Client,
    o: &Omni2,
    who: &[(String, String)],
    tool: &str,
    args: Value,
) -> (u16, Value) {
    let r = with(
        http.post(o.url(&format!("/api/v1/mcp/servers/f/tools/{tool}/call"))),
        who,
    )
    .json(&args)
    .send()
    .await
    .expect("request");
    let status = r.status().as_u16();
    (status, r.json().await.expect("json"))
}

async fn wait_state(http: &reqwest::Client, o: &Omni2, state: &str, circuit: &str) -> Value {
    eventually(&format!("f {state} {circuit}"), WAIT, || async {
        let s = server_status(http, o, "f").await;
        (s["state"] == state && s["circuit"] == circuit).then_some(s)
    })
    .await
}

/// `name{labels} value` from a Prometheus text page (0 when absent).
fn metric(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or(0.0)
}

async fn fault(http: &reqwest::Client, mcp: &McpServer, which: &str) {
    let url = format!("http://127.0.0.1:{}/fault/{which}", mcp.port);
    let r = http.post(url).send().await.expect("fault switch");
    assert!(r.status().is_success());
}

fn bob() -> Vec<(String, String)> {
    identity("bob", "user", unix_now() + 3600, None)
}

/// When only tool calls fail, probes must not close the breaker: the server shows
/// `tools_failing`, calls fast-fail across many successful probes, and only a tool-call
/// trial closes it again.
#[tokio::test]
async fn failing_tool_calls_keep_the_breaker_open_while_probes_succeed() {
    let mcp = McpServer::start_script(FIXTURE, &[]);
    let o = Omni2::start(&config(&[("f", &mcp.url())], ""), None);
    let http = http_client();
    wait_state(&http, &o, "healthy", "closed").await;

    fault(&http, &mcp, "calls").await;
    for i in 0..2 {
        let (status, body) = call_as(&http, &o, &user(), "echo", json!({"text": i})).await;
        assert_eq!(status, 502, "{body}");
        assert_eq!(body["error"], "upstream_unavailable", "{body}");
    }
    let s = wait_state(&http, &o, "tools_failing", "open").await;
    assert_eq!(s["last_error"], Value::Null, "probes still succeed: {s}");
    let m = o.metrics(&http).await;
    assert_eq!(
        metric(
            &m,
            "omni2_mcp_server_state{server=\"f\",state=\"tools_failing\"}"
        ),
        1.0
    );

    // Many probes (interval 200 ms) well past the open period (1 s, at most 2 s): none
    // closes the breaker, and calls keep fast-failing without reaching the server.
    let probes = |m: &str| metric(m, "omni2_mcp_probe_duration_seconds_count{server=\"f\"}");
    let start = probes(&m);
    eventually("20 more probes", WAIT, || async {
        (probes(&o.metrics(&http).await) >= start + 20.0).then_some(())
    })
    .await;
    let m = o.metrics(&http).await;
    assert_eq!(
        metric(
            &m,
            "omni2_circuit_transitions_total{server=\"f\",to=\"closed\"}"
        ),
        0.0,
        "a successful probe closed a breaker tool calls opened"
    );
    let s = server_status(&http, &o, "f").await;
    assert_eq!(s["state"], "tools_failing", "{s}");

    // Each open period admits one trial call; it still fails, so the breaker reopens.
    let reached_upstream = eventually("a failing trial call", WAIT, || async {
        let (status, body) = call_as(&http, &o, &user(), "echo", json!({"text": "t"})).await;
        (status == 502).then_some(body)
    })
    .await;
    assert_eq!(reached_upstream["error"], "upstream_unavailable");

    // The fault is gone: the next trial call succeeds and closes the breaker.
    fault(&http, &mcp, "none").await;
    let body = eventually("a successful trial call", WAIT, || async {
        let (status, body) = call_as(&http, &o, &user(), "echo", json!({"text": "ok"})).await;
        (status == 200).then_some(body)
    })
    .await;
    assert_eq!(body["content"][0]["text"], "ok", "{body}");
    wait_state(&http, &o, "healthy", "closed").await;
}

/// Recovery needs `healthy_after` successes spaced by the probe interval: the probe brought
/// forward by the reconnect's tool-list signal does not count.
#[tokio::test]
async fn recovery_needs_spaced_successes() {
    let mut mcp = McpServer::start_script(FIXTURE, &[]);
    let yaml = config(&[("f", &mcp.url())], "")
        .replace("probe_interval: 200ms", "probe_interval: 2s")
        .replace("healthy_after: 1", "healthy_after: 2");
    let o = Omni2::start(&yaml, None);
    let http = http_client();
    eventually("f healthy", WAIT, || async {
        (server_status(&http, &o, "f").await["state"] == "healthy").then_some(())
    })
    .await;
    mcp.kill();
    eventually("f unhealthy", WAIT, || async {
        (server_status(&http, &o, "f").await["state"] == "unhealthy").then_some(())
    })
    .await;
    mcp.restart();
    let restarted = Instant::now();
    eventually("f healthy again", WAIT, || async {
        (server_status(&http, &o, "f").await["state"] == "healthy").then_some(())
    })
    .await;
    // An ordering bound, not a speed figure: two successes a probe interval (2 s) apart
    // cannot both have happened within 2 s of the restart. (The breaker's open period, at
    // most 2 s, has always ended by the first success, so that success closes it and its
    // reconnect signals a tool-list refresh at once: the probe that used to count.)
    let took = restarted.elapsed();
    assert!(
        took >= Duration::from_secs(2),
        "healthy {took:?} after the restart: healthy_after was bypassed"
    );
}

/// Cache scopes against the real server: `per_user` (the default) never serves one user's
/// result to another, `shared` does, and the server's `_meta` hints narrow both.
#[tokio::test]
async fn cache_scopes_and_server_hints() {
    let mcp = McpServer::start_script(FIXTURE, &[]);
    let yaml = config(&[("f", &mcp.url())], "").replace(
        "    tools:\n",
        "    tools:\n      hinted: {cache: true, ttl: 1m, cache_scope: shared}\n",
    );
    let o = Omni2::start(&yaml, None);
    let http = http_client();
    wait_state(&http, &o, "healthy", "closed").await;
    let text = |b: &Value| b["content"][0]["text"].as_str().unwrap_or("").to_owned();

    // counter: cache: true, no scope = per_user.
    let (_, a1) = call_as(&http, &o, &user(), "counter", json!({})).await;
    let (_, a2) = call_as(&http, &o, &user(), "counter", json!({})).await;
    let (_, b1) = call_as(&http, &o, &bob(), "counter", json!({})).await;
    assert_eq!(
        (a1["cached"].clone(), a2["cached"].clone()),
        (json!(false), json!(true))
    );
    assert_eq!(text(&a1), text(&a2));
    assert_eq!(b1["cached"], false, "bob never gets alice's result: {b1}");
    assert_ne!(text(&b1), text(&a1));

    // hinted: cache_scope: shared; public results are shared across users.
    let public = json!({"scope": "public"});
    let (_, a) = call_as(&http, &o, &user(), "hinted", public.clone()).await;
    let (_, b) = call_as(&http, &o, &bob(), "hinted", public).await;
    assert_eq!(
        (a["cached"].clone(), b["cached"].clone()),
        (json!(false), json!(true))
    );
    assert_eq!(text(&a), text(&b));

    // A `cacheScope: private` result is never shared, even on a shared tool.
    let private = json!({"scope": "private"});
    let (_, a) = call_as(&http, &o, &user(), "hinted", private.clone()).await;
    let (_, b) = call_as(&http, &o, &bob(), "hinted", private.clone()).await;
    let (_, a2) = call_as(&http, &o, &user(), "hinted", private).await;
    for r in [&a, &b, &a2] {
        assert_eq!(r["cached"], false, "{r}");
    }
    assert_ne!(text(&a), text(&b));

    // `ttlMs: 0`: not stored at all.
    let zero = json!({"scope": "public", "ttl_ms": 0});
    call_as(&http, &o, &user(), "hinted", zero.clone()).await;
    let (_, again) = call_as(&http, &o, &user(), "hinted", zero).await;
    assert_eq!(again["cached"], false, "{again}");
}
