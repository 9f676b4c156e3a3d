//! Routes in-process (`actix_web::test`) with fake MCP servers.

use std::sync::atomic::Ordering;

use actix_web::{App, test as atest};
use serde_json::json;

use super::*;
use crate::Omni2;
use crate::config::{Config, ToolPolicy};
use crate::mcp;
use crate::test_util::{Behaviour, FakeMcp, server_config};
use actix_web::http::StatusCode;

fn omni2(trust_annotations: bool, fake: Arc<FakeMcp>) -> Omni2 {
    let mut config = Config::embedded(&std::collections::BTreeMap::new()).expect("default");
    let mut server = server_config("f");
    server.trust_annotations = trust_annotations;
    server.tools.insert(
        "echo".into(),
        ToolPolicy {
            cache: Some(false),
            ttl: None,
            ..Default::default()
        },
    );
    config.servers.push(server);
    Omni2::with_clients(config, vec![fake])
}

fn user(req: atest::TestRequest) -> atest::TestRequest {
    req.insert_header(("x-user-id", "alice"))
        .insert_header(("x-user-roles", "user"))
}

async fn call_json<S>(app: &S, tool: &str) -> (StatusCode, Value, Option<String>)
where
    S: actix_web::dev::Service<
            actix_http::Request,
            Response = actix_web::dev::ServiceResponse,
            Error = actix_web::Error,
        >,
{
    let req =
        user(atest::TestRequest::post().uri(&format!("/api/v1/mcp/servers/f/tools/{tool}/call")))
            .set_json(json!({"b": 1, "a": 2}))
            .to_request();
    let resp = atest::call_service(app, req).await;
    let status = resp.status();
    let retry = resp
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let body: Value = atest::read_body_json(resp).await;
    (status, body, retry)
}

/// Waits (bounded) until the coordinator has probed the fake and published its tools.
async fn until_healthy(o: &Omni2) {
    let mut rx = o.shared().published.snapshot.clone();
    tokio::time::timeout(
        Duration::from_secs(5),
        rx.wait_for(|s| s.servers[0].state == HealthState::Healthy && s.servers[0].tool_count > 0),
    )
    .await
    .expect("healthy in time")
    .expect("coordinator running");
}

#[actix_web::test]
async fn read_only_tools_cached_only_when_annotations_are_trusted() {
    for trusted in [false, true] {
        let fake = Arc::new(FakeMcp::new());
        let o = omni2(trusted, fake.clone());
        let _handle = o.spawn();
        let app = atest::init_service(App::new().configure(|c| o.configure(c))).await;
        until_healthy(&o).await;
        let (s1, first, _) = call_json(&app, "add").await;
        let (_, second, _) = call_json(&app, "add").await;
        assert_eq!(s1, StatusCode::OK);
        assert_eq!(first["cached"], false);
        assert_eq!(second["cached"], trusted, "trusted={trusted}");
        assert_eq!(
            fake.calls.load(Ordering::SeqCst),
            if trusted { 1 } else { 2 }
        );
        // `cache: false` in config wins over everything.
        call_json(&app, "echo").await;
        let (_, echo, _) = call_json(&app, "echo").await;
        assert_eq!(echo["cached"], false);
    }
}

#[actix_web::test]
async fn open_breaker_fast_fails_with_retry_after_without_calling() {
    let fake = Arc::new(FakeMcp::new());
    let o = omni2(false, fake.clone());
    let _handle = o.spawn();
    let app = atest::init_service(App::new().configure(|c| o.configure(c))).await;
    until_healthy(&o).await;
    fake.set(Behaviour::Down);
    // failure_threshold = 2 in the test server config.
    for _ in 0..2 {
        let (status, body, _) = call_json(&app, "echo").await;
        assert_eq!(status, StatusCode::BAD_GATEWAY);
        assert_eq!(body["error"], "upstream_unavailable");
    }
    let probes_before = fake.probes.load(Ordering::SeqCst);
    let calls_before = fake.calls.load(Ordering::SeqCst);
    let (status, body, retry) = call_json(&app, "echo").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(body["error"], "circuit_open");
    assert_eq!(retry.as_deref(), Some("3"));
    assert_eq!(
        fake.calls.load(Ordering::SeqCst),
        calls_before,
        "no upstream call"
    );
    assert!(fake.probes.load(Ordering::SeqCst) <= probes_before + 1);
}

#[actix_web::test]
async fn identity_and_role_guards() {
    let fake = Arc::new(FakeMcp::new());
    let o = omni2(false, fake);
    let app = atest::init_service(App::new().configure(|c| o.configure(c))).await;
    let resp = atest::call_service(
        &app,
        atest::TestRequest::get()
            .uri("/api/v1/mcp/servers")
            .to_request(),
    )
    .await;
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    let body: Value = atest::read_body_json(resp).await;
    assert_eq!(body["error"], "missing_identity");
    let resp = atest::call_service(
        &app,
        user(atest::TestRequest::delete().uri("/api/v1/cache")).to_request(),
    )
    .await;
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    let admin = atest::TestRequest::delete()
        .uri("/api/v1/cache/f")
        .insert_header(("x-user-id", "root"))
        .insert_header(("x-user-role", "admin"))
        .to_request();
    assert_eq!(
        atest::call_service(&app, admin).await.status(),
        StatusCode::OK
    );
    let resp =
        atest::call_service(&app, atest::TestRequest::get().uri("/health").to_request()).await;
    assert_eq!(resp.status(), StatusCode::OK);
}

#[test]
fn cached_text_gets_the_flag_spliced_in() {
    assert_eq!(
        Body::Text(r#"{"a":1}"#.into()).with_cached(true),
        r#"{"a":1,"cached":true}"#
    );
    assert_eq!(
        Body::Text("{}".into()).with_cached(true),
        r#"{"cached":true}"#
    );
    assert_eq!(
        Body::Value(json!([1])).with_cached(false),
        r#"{"cached":false,"result":[1]}"#
    );
}

/// A client whose coordinator-side hook panics: the coordinator dies as it starts.
#[derive(Debug, Default)]
struct KillsTheCoordinator(FakeMcp);

impl crate::mcp::McpClient for KillsTheCoordinator {
    fn probe(&self) -> futures_util::future::BoxFuture<'_, Result<(), mcp::Error>> {
        self.0.probe()
    }

    fn list_tools(
        &self,
    ) -> futures_util::future::BoxFuture<'_, Result<Vec<crate::mcp::ToolInfo>, mcp::Error>> {
        self.0.list_tools()
    }

    fn call_tool<'a>(
        &'a self,
        tool: &'a str,
        arguments: Map<String, Value>,
    ) -> futures_util::future::BoxFuture<'a, Result<ToolResult, mcp::Error>> {
        self.0.call_tool(tool, arguments)
    }

    fn tool_list_changes(&self) -> Option<tokio::sync::watch::Receiver<()>> {
        panic!("injected coordinator failure");
    }
}

#[actix_web::test]
async fn a_dead_coordinator_fails_health_and_the_handle() {
    let mut config = Config::embedded(&std::collections::BTreeMap::new()).expect("default");
    config.servers.push(server_config("f"));
    let o = Omni2::with_clients(config, vec![Arc::new(KillsTheCoordinator::default())]);
    let handle = o.spawn();
    let app = atest::init_service(App::new().configure(|c| o.configure(c))).await;
    let task = tokio::time::timeout(Duration::from_secs(5), handle.failed())
        .await
        .expect("the death is noticed");
    assert_eq!(task, "coordinator");
    let resp =
        atest::call_service(&app, atest::TestRequest::get().uri("/health").to_request()).await;
    assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
    let body: Value = atest::read_body_json(resp).await;
    assert_eq!(body, json!({"status": "failed"}));
}

#[actix_web::test]
async fn a_coordinator_stopped_by_shutdown_is_not_a_failure() {
    let o = omni2(false, Arc::new(FakeMcp::new()));
    let handle = o.spawn();
    until_healthy(&o).await;
    let shared = o.shared().clone();
    handle.shutdown().await;
    assert_eq!(shared.tasks.failed(), None);
}

#[actix_web::test]
async fn the_body_code_is_the_metric_result_and_every_result_starts_at_zero() {
    let fake = Arc::new(FakeMcp::new());
    let o = omni2(false, fake.clone());
    let _handle = o.spawn();
    let app = atest::init_service(App::new().configure(|c| o.configure(c))).await;
    until_healthy(&o).await;
    fake.set(Behaviour::Down);
    let (status, body, _) = call_json(&app, "echo").await;
    assert_eq!(status, StatusCode::BAD_GATEWAY);
    assert_eq!(body["error"], "upstream_unavailable");
    let text = o.shared().metrics.render();
    let series = |tool: &str, result: &str, n: u64| {
        format!("omni2_tool_calls_total{{result=\"{result}\",server=\"f\",tool=\"{tool}\"}} {n}")
    };
    assert!(
        text.contains(&series("echo", "upstream_unavailable", 1)),
        "{text}"
    );
    for result in [
        "ok",
        "cached",
        "tool_error",
        "circuit_open",
        "upstream_timeout",
    ] {
        assert!(
            text.contains(&series("echo", result, 0)),
            "{result}: {text}"
        );
        assert!(text.contains(&series("add", result, 0)), "{result}: {text}");
        assert!(
            text.contains(&series("other", result, 0)),
            "{result}: {text}"
        );
    }
}

#[actix_web::test]
async fn status_page_is_served_without_identity_under_a_strict_policy() {
    let o = omni2(false, Arc::new(FakeMcp::new()));
    let app = atest::init_service(App::new().configure(|c| o.configure(c))).await;
    for (path, kind, needle) in [
        ("/status", "text/html", "/status/app.js"),
        ("/status/app.js", "text/javascript", "/ws/mcp-status"),
        ("/status/app.css", "text/css", ".conn"),
    ] {
        let resp =
            atest::call_service(&app, atest::TestRequest::get().uri(path).to_request()).await;
        assert_eq!(resp.status(), StatusCode::OK, "{path}");
        let header = |name: &str| {
            resp.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_owned()
        };
        assert!(header("content-type").starts_with(kind), "{path}");
        let csp = header("content-security-policy");
        assert!(
            csp.contains("script-src 'self'") && csp.contains("frame-ancestors 'none'"),
            "{csp}"
        );
        assert!(
            !csp.contains("unsafe-inline") && !csp.contains("unsafe-eval"),
            "{csp}"
        );
        assert_eq!(header("x-content-type-options"), "nosniff");
        let body = atest::read_body(resp).await;
        let text = std::str::from_utf8(&body).expect("utf-8");
        assert!(text.contains(needle), "{path} embeds its asset");
    }
    // The page itself has no inline script or style for the policy to forbid.
    let html = include_str!("../../static/status/index.html");
    assert!(
        !html.contains("<script>") && !html.contains("style="),
        "no inline script/style"
    );
    let resp =
        atest::call_service(&app, atest::TestRequest::post().uri("/status").to_request()).await;
    assert_ne!(resp.status(), StatusCode::OK, "GET only");
}

#[actix_web::test]
async fn a_tools_own_roles_guard_its_rest_calls_too() {
    let fake = Arc::new(FakeMcp::new());
    let mut config = Config::embedded(&std::collections::BTreeMap::new()).expect("default");
    let mut server = server_config("f");
    server.tools.insert(
        "echo".into(),
        ToolPolicy {
            roles: Some(vec!["admin".into()]),
            ..Default::default()
        },
    );
    config.servers.push(server);
    let o = Omni2::with_clients(config, vec![fake.clone()]);
    let _handle = o.spawn();
    let app = atest::init_service(App::new().configure(|c| o.configure(c))).await;
    until_healthy(&o).await;
    let (status, body, _) = call_json(&app, "echo").await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(body["error"], "role_denied");
    assert_eq!(fake.calls.load(Ordering::SeqCst), 0);
    // Tools without their own roles keep `roles.tool_call` (any identity here).
    let (status, _, _) = call_json(&app, "add").await;
    assert_eq!(status, StatusCode::OK);
}

/// A tool's `rate_limit` is one budget per user for REST and `/mcp`: calls through either
/// spend it, REST answers 429 with `Retry-After` once it is used up, `/mcp` `-32005`.
#[actix_web::test]
async fn a_rate_limit_is_one_budget_for_rest_and_mcp() {
    let fake = Arc::new(FakeMcp::new());
    let mut config = Config::embedded(&std::collections::BTreeMap::new()).expect("default");
    let mut server = server_config("f");
    server.tools.insert(
        "echo".into(),
        ToolPolicy {
            rate_limit: Some(crate::config::RateLimit {
                burst: 2,
                every: Duration::from_secs(3600),
            }),
            ..Default::default()
        },
    );
    config.servers.push(server);
    let o = Omni2::with_clients(config, vec![fake.clone()]);
    let _handle = o.spawn();
    let app = atest::init_service(App::new().configure(|c| o.configure(c))).await;
    until_healthy(&o).await;
    let mcp = || {
        let meta = json!({
            "io.modelcontextprotocol/protocolVersion": "2026-07-28",
            "io.modelcontextprotocol/clientInfo": {"name": "t", "version": "1"},
            "io.modelcontextprotocol/clientCapabilities": {},
        });
        user(atest::TestRequest::post().uri("/mcp"))
            .insert_header(("host", "localhost"))
            .insert_header(("content-type", "application/json"))
            .insert_header(("accept", "application/json, text/event-stream"))
            .insert_header(("mcp-protocol-version", "2026-07-28"))
            .insert_header(("mcp-method", "tools/call"))
            .insert_header(("mcp-name", "f__echo"))
            .set_payload(
                json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
                    "params": {"name": "f__echo", "arguments": {}, "_meta": meta}})
                .to_string(),
            )
            .to_request()
    };
    // One call through each path uses the burst of 2.
    let (status, _, _) = call_json(&app, "echo").await;
    assert_eq!(status, StatusCode::OK);
    let resp = atest::call_service(&app, mcp()).await;
    let body: Value = atest::read_body_json(resp).await;
    assert_eq!(body["result"]["isError"], false, "{body}");

    let (status, body, retry) = call_json(&app, "echo").await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{body}");
    assert_eq!(body["error"], "rate_limited");
    let secs: u64 = retry.expect("Retry-After").parse().expect("seconds");
    assert!(secs > 3000 && secs <= 3600, "{secs}");
    assert_eq!(body["retry_after_seconds"], secs);
    let resp = atest::call_service(&app, mcp()).await;
    let body: Value = atest::read_body_json(resp).await;
    assert_eq!(body["error"]["code"], -32005, "{body}");
    assert_eq!(
        fake.calls.load(Ordering::SeqCst),
        2,
        "refused calls go nowhere"
    );
    assert_eq!(o.shared().metrics.gateway_rate_limited.get(), 2);

    // Another user has their own budget; other tools have none.
    let req = atest::TestRequest::post()
        .uri("/api/v1/mcp/servers/f/tools/echo/call")
        .insert_header(("x-user-id", "bob"))
        .insert_header(("x-user-roles", "user"))
        .set_json(json!({}))
        .to_request();
    assert_eq!(
        atest::call_service(&app, req).await.status(),
        StatusCode::OK
    );
    let (status, _, _) = call_json(&app, "add").await;
    assert_eq!(status, StatusCode::OK);
}
