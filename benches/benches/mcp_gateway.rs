//! omni2's `/mcp` gateway: a `tools/call` cache hit through `/mcp` vs through REST (both
//! in process, actix test service, identity headers included) vs a real round trip to the
//! Python SDK server; `tools/list` of 10 servers × 50 tools filtered per role.
//!
//! `cargo bench -p benches --bench mcp_gateway`. Ratios to read (same run):
//! - `tool_call_hit/mcp_stateless` ÷ `tool_call_hit/rest` (goal ≤ 1.20), and
//!   `mcp_session` ÷ `rest`; `python_round_trip` is what a hit saves.
//! - `tools_list/*` against `tools_list/serialize_floor` (serialising the 500 tools, the
//!   least any answer costs); goal for `mcp_in_process`: ≤ 100 µs.
//!
//! `MCP_GATEWAY_COUNT=<variant>:<n>` runs `n` hits of one variant and exits (instruction
//! counts under callgrind; see [`count_mode`]).
//!
//! The Python group needs `python3` with `mcp`; without it that one figure is skipped.

mod support;

use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use actix_web::dev::{Service, ServiceResponse};
use actix_web::{App, test as atest};
use criterion::{Criterion, criterion_group, criterion_main};
use omni2_core::Omni2;
use omni2_core::breaker::CircuitState;
use omni2_core::config::{Config, ProcessEnv, Protocol};
use omni2_core::coordinator::{ServerStatus, Snapshot};
use omni2_core::gateway::Catalog;
use omni2_core::health::HealthState;
use omni2_core::identity::Identity;
use omni2_core::mcp::{HttpMcpClient, McpClient};
use omni2_core::test_util::{FakeMcp, tool};
use serde_json::{Value, json};
use support::PythonMcp;

const SERVERS: usize = 10;
const TOOLS: usize = 50;

/// `servers` fake servers; every tool cacheable; odd tools admin-only.
fn config(servers: usize, tools: usize) -> Config {
    let mut yaml = String::from("roles: {tool_call: [user, admin]}\nservers:\n");
    for s in 0..servers {
        yaml.push_str(&format!(
            "  - name: s{s}\n    url: http://127.0.0.1:9/mcp\n    probe_interval: 1h\n    healthy_after: 1\n    tools:\n"
        ));
        for t in 0..tools {
            let roles = if t % 2 == 1 { ", roles: [admin]" } else { "" };
            yaml.push_str(&format!("      t{t}: {{cache: true, ttl: 1h{roles}}}\n"));
        }
    }
    Config::from_yaml(&yaml, &ProcessEnv).expect("bench config")
}

fn user_headers(req: atest::TestRequest) -> atest::TestRequest {
    req.insert_header(("host", "omni2.internal"))
        .insert_header(("x-user-id", "bench"))
        .insert_header(("x-user-roles", "user"))
        .insert_header(("content-type", "application/json"))
        .insert_header(("accept", "application/json, text/event-stream"))
}

fn meta() -> Value {
    json!({
        "io.modelcontextprotocol/protocolVersion": "2026-07-28",
        "io.modelcontextprotocol/clientInfo": {"name": "bench", "version": "1"},
        "io.modelcontextprotocol/clientCapabilities": {},
    })
}

/// An in-process omni2 over fakes, its coordinator running, every server healthy.
async fn omni2(servers: usize, tools: usize) -> (Omni2, omni2_core::Omni2Handle) {
    let config = config(servers, tools);
    let clients = (0..servers)
        .map(|_| {
            let fake = FakeMcp::new();
            fake.set_tools((0..tools).map(|t| tool(&format!("t{t}"), None)).collect());
            Arc::new(fake) as Arc<dyn McpClient>
        })
        .collect();
    let o = Omni2::with_clients(config, clients);
    let handle = o.spawn();
    let mut rx = o.shared().published.snapshot.clone();
    tokio::time::timeout(
        Duration::from_secs(10),
        rx.wait_for(|s| {
            s.servers
                .iter()
                .all(|s| s.state == HealthState::Healthy && s.tool_count == tools)
        }),
    )
    .await
    .expect("healthy in time")
    .expect("coordinator running");
    (o, handle)
}

async fn body<S>(app: &S, req: actix_http::Request) -> (u16, String)
where
    S: Service<actix_http::Request, Response = ServiceResponse, Error = actix_web::Error>,
{
    let resp = atest::call_service(app, req).await;
    let status = resp.status().as_u16();
    let bytes = atest::read_body(resp).await;
    (status, String::from_utf8_lossy(&bytes).into_owned())
}

fn tool_call_hit(c: &mut Criterion) {
    let sys = actix_web::rt::System::new();
    let (o, _handle) = sys.block_on(omni2(1, 2));
    let app = sys.block_on(atest::init_service(
        App::new().configure(|cfg| o.configure(cfg)),
    ));
    let args = json!({"a": 2, "b": 3});
    let rest = || {
        user_headers(atest::TestRequest::post().uri("/api/v1/mcp/servers/s0/tools/t0/call"))
            .set_payload(args.to_string())
            .to_request()
    };
    let call = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
        "params": {"name": "s0__t0", "arguments": args, "_meta": meta()}})
    .to_string();
    let stateless = || {
        user_headers(atest::TestRequest::post().uri("/mcp"))
            .insert_header(("mcp-protocol-version", "2026-07-28"))
            .insert_header(("mcp-method", "tools/call"))
            .insert_header(("mcp-name", "s0__t0"))
            .set_payload(call.clone())
            .to_request()
    };
    // Fill the cache, and check every path answers a hit.
    let (status, first) = sys.block_on(body(&app, rest()));
    assert_eq!(status, 200, "{first}");
    let (_, hit) = sys.block_on(body(&app, rest()));
    assert!(hit.contains("\"cached\":true"), "{hit}");
    let (status, answer) = sys.block_on(body(&app, stateless()));
    assert!(
        status == 200 && answer.contains("\"omni2/cached\":true"),
        "{status} {answer}"
    );

    // A session (2025-11-25): initialize once, then calls on it.
    let init = json!({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
        "protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "bench", "version": "1"}}});
    let resp = sys.block_on(atest::call_service(
        &app,
        user_headers(atest::TestRequest::post().uri("/mcp"))
            .set_payload(init.to_string())
            .to_request(),
    ));
    let session = resp
        .headers()
        .get("mcp-session-id")
        .expect("a session")
        .to_str()
        .expect("session id")
        .to_owned();
    sys.block_on(atest::read_body(resp));
    let on_session = |body: String| {
        user_headers(atest::TestRequest::post().uri("/mcp"))
            .insert_header(("mcp-session-id", session.as_str()))
            .insert_header(("mcp-protocol-version", "2025-11-25"))
            .set_payload(body)
            .to_request()
    };
    let initialized = json!({"jsonrpc": "2.0", "method": "notifications/initialized"});
    sys.block_on(body(&app, on_session(initialized.to_string())));
    let session_call = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
        "params": {"name": "s0__t0", "arguments": args}})
    .to_string();
    let (status, answer) = sys.block_on(body(&app, on_session(session_call.clone())));
    assert!(
        status == 200 && answer.contains("\"omni2/cached\":true"),
        "{status} {answer}"
    );

    // Instruction counts (valgrind) want a fixed number of requests, not criterion's loop.
    if let Some((variant, n)) = count_mode() {
        for _ in 0..n {
            let req = match variant.as_str() {
                "rest" => rest(),
                "mcp_stateless" => stateless(),
                "mcp_session" => on_session(session_call.clone()),
                other => panic!("MCP_GATEWAY_COUNT: unknown variant {other:?}"),
            };
            black_box(sys.block_on(body(&app, req)));
        }
        std::process::exit(0);
    }

    let mut group = c.benchmark_group("tool_call_hit");
    group.bench_function("rest", |b| {
        b.iter(|| black_box(sys.block_on(body(&app, rest()))))
    });
    group.bench_function("mcp_stateless", |b| {
        b.iter(|| black_box(sys.block_on(body(&app, stateless()))))
    });
    group.bench_function("mcp_session", |b| {
        b.iter(|| black_box(sys.block_on(body(&app, on_session(session_call.clone())))))
    });
    match PythonMcp::start() {
        Some(server) => {
            let client = HttpMcpClient::new(
                &server.url(),
                Protocol::Auto,
                HttpMcpClient::default_http_client(),
            );
            let args = args.as_object().expect("object").clone();
            sys.block_on(client.call_tool("add", args.clone()))
                .expect("warm-up call");
            group.bench_function("python_round_trip", |b| {
                b.iter(|| {
                    black_box(
                        sys.block_on(client.call_tool("add", args.clone()))
                            .expect("call"),
                    )
                })
            });
        }
        None => eprintln!("note: python3 with `mcp` not available; skipping python_round_trip"),
    }
    group.finish();
}

/// `MCP_GATEWAY_COUNT=<variant>:<n>`: run `n` hits of `rest`, `mcp_stateless` or
/// `mcp_session` after the setup, then exit (for `valgrind --tool=callgrind`: the cost of
/// `n` requests is the difference between two runs with different `n`).
fn count_mode() -> Option<(String, u32)> {
    let spec = std::env::var("MCP_GATEWAY_COUNT").ok()?;
    let (variant, n) = spec
        .split_once(':')
        .expect("MCP_GATEWAY_COUNT=<variant>:<n>");
    Some((variant.to_owned(), n.parse().expect("a request count")))
}

fn caller(roles: &[&str]) -> Identity {
    Identity {
        id: "bench".into(),
        username: String::new(),
        role: String::new(),
        roles: roles.iter().map(|r| r.to_string()).collect(),
        email: String::new(),
        expires: None,
    }
}

fn tools_list(c: &mut Criterion) {
    let config = config(SERVERS, TOOLS);
    let tools = Arc::new(
        (0..TOOLS)
            .map(|t| tool(&format!("t{t}"), None))
            .collect::<Vec<_>>(),
    );
    let snapshot = Snapshot::new(
        (0..SERVERS)
            .map(|s| {
                Arc::new(ServerStatus {
                    name: format!("s{s}").into(),
                    state: HealthState::Healthy,
                    circuit: CircuitState::Closed,
                    latency_ms: Some(1.0),
                    last_error: None,
                    last_change: String::new(),
                    tool_count: TOOLS,
                    tools: tools.clone(),
                })
            })
            .collect(),
    );
    let catalog = Catalog::build(&config, &snapshot);
    assert_eq!(catalog.len(), SERVERS * TOOLS);
    let (user, admin) = (caller(&["user"]), caller(&["admin"]));
    assert_eq!(catalog.visible(&user).len(), SERVERS * TOOLS / 2);
    let everything = catalog.visible(&admin);

    let mut group = c.benchmark_group("tools_list");
    group.bench_function("serialize_floor", |b| {
        b.iter(|| black_box(serde_json::to_string(&everything).expect("json")))
    });
    group.bench_function("filter_user", |b| {
        b.iter(|| black_box(catalog.visible(black_box(&user))))
    });
    group.bench_function("filter_serialize_admin", |b| {
        b.iter(|| black_box(serde_json::to_string(&catalog.visible(&admin)).expect("json")))
    });

    // The whole request in process: bridge, rmcp (stateless), catalog, JSON answer.
    let sys = actix_web::rt::System::new();
    let (o, _handle) = sys.block_on(omni2(SERVERS, TOOLS));
    let app = sys.block_on(atest::init_service(
        App::new().configure(|cfg| o.configure(cfg)),
    ));
    let list =
        json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {"_meta": meta()}})
            .to_string();
    let request = || {
        user_headers(atest::TestRequest::post().uri("/mcp"))
            .insert_header(("mcp-protocol-version", "2026-07-28"))
            .insert_header(("mcp-method", "tools/list"))
            .set_payload(list.clone())
            .to_request()
    };
    let (status, answer) = sys.block_on(body(&app, request()));
    assert_eq!(status, 200, "{answer}");
    assert_eq!(
        answer.matches("\"inputSchema\"").count(),
        SERVERS * TOOLS / 2
    );
    group.bench_function("mcp_in_process_user", |b| {
        b.iter(|| black_box(sys.block_on(body(&app, request()))))
    });
    group.finish();
}

criterion_group!(benches, tool_call_hit, tools_list);
criterion_main!(benches);
