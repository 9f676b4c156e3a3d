//! omni2-core: tool-cache hit vs a real MCP round trip (Python SDK server), breaker
//! `on_result`, status snapshot serialisation.
//!
//! `cargo bench -p benches --bench omni2_core`. The MCP group needs `python3` with the `mcp`
//! package; without it that group is skipped with a note.

mod support;

use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use omni2_core::breaker::{Breaker, BreakerConfig, CircuitState};
use omni2_core::cache::{CacheCounters, CacheKey, ToolCache};
use omni2_core::config::Protocol;
use omni2_core::coordinator::{ServerStatus, Snapshot};
use omni2_core::health::HealthState;
use omni2_core::mcp::{HttpMcpClient, McpClient, ToolResult};
use omni2_core::test_util::tool;
use prometheus::IntCounter;
use serde_json::{Map, Value, json};
use support::PythonMcp;

fn counters() -> CacheCounters {
    let c = |n: &str| IntCounter::new(n, "bench").expect("counter");
    CacheCounters {
        hits: c("h"),
        misses: c("m"),
        evictions: c("e"),
        redis_errors: prometheus::IntCounterVec::new(
            prometheus::Opts::new("r", "bench"),
            &["operation"],
        )
        .expect("counter"),
    }
}

fn args() -> Map<String, Value> {
    json!({"b": 3, "a": 2}).as_object().expect("object").clone()
}

fn cache_vs_round_trip(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let mut group = c.benchmark_group("tool_call");

    // The hit path as the route runs it: canonical key, lookup, shared result.
    let cache = ToolCache::new(64 << 20, counters());
    let body = json!({"content": [{"type": "text", "text": "5"}], "structuredContent": {"result": 5}, "isError": false});
    rt.block_on(cache.get_or_call(
        CacheKey::new("py", "add", &args()),
        Duration::from_secs(3600),
        async {
            Ok::<_, ()>(ToolResult {
                body: body.clone(),
                is_error: false,
            })
        },
    ))
    .expect("filled");
    let arguments = args();
    group.bench_function("cache_hit", |b| {
        b.iter(|| {
            let key = CacheKey::new("py", "add", black_box(&arguments));
            let (hit, _) = rt
                .block_on(cache.get_or_call(key, Duration::from_secs(3600), async {
                    Err::<ToolResult, ()>(())
                }))
                .expect("hit");
            black_box(hit);
        })
    });

    match PythonMcp::start() {
        Some(server) => {
            let client = HttpMcpClient::new(
                &server.url(),
                Protocol::Auto,
                HttpMcpClient::default_http_client(),
            );
            rt.block_on(client.call_tool("add", args()))
                .expect("warm-up call");
            group.bench_function("mcp_round_trip_python", |b| {
                b.iter(|| black_box(rt.block_on(client.call_tool("add", args())).expect("call")))
            });
            drop(server);
        }
        None => eprintln!("note: python3 with `mcp` not available; skipping mcp_round_trip_python"),
    }
    group.finish();
}

fn breaker(c: &mut Criterion) {
    let mut group = c.benchmark_group("breaker/on_result");
    let now = tokio::time::Instant::now();
    let mut b = Breaker::new(BreakerConfig::default());
    group.bench_function("closed_success", |bench| {
        bench.iter(|| black_box(b.on_result(black_box(true), now)))
    });
    // Alternating outcomes keep the failure-rate window scanning without opening.
    let mut b = Breaker::new(BreakerConfig {
        failure_rate: Some(0.9),
        failure_threshold: 100,
        ..BreakerConfig::default()
    });
    let mut ok = false;
    group.bench_function("closed_mixed_rate_window", |bench| {
        bench.iter(|| {
            ok = !ok;
            black_box(b.on_result(black_box(ok), now))
        })
    });
    assert_eq!(b.state(), CircuitState::Closed);
    group.finish();
}

fn snapshot(c: &mut Criterion) {
    let mut group = c.benchmark_group("snapshot");
    let tools = Arc::new(
        (0..20)
            .map(|i| tool(&format!("tool_{i}"), Some(i % 2 == 0)))
            .collect::<Vec<_>>(),
    );
    let servers: Vec<Arc<ServerStatus>> = (0..50)
        .map(|i| {
            Arc::new(ServerStatus {
                name: format!("server-{i}").into(),
                state: HealthState::Healthy,
                circuit: CircuitState::Closed,
                latency_ms: Some(3.25),
                last_error: None,
                last_change: "2026-11-23T04:00:00.000Z".to_owned(),
                tool_count: tools.len(),
                tools: tools.clone(),
            })
        })
        .collect();
    group.bench_function("ws_summary_50_servers", |b| {
        b.iter_batched(
            || Snapshot::new(servers.clone()),
            |s| black_box(s.summary_json(None)),
            BatchSize::SmallInput,
        )
    });
    group.bench_function("rest_full_50_servers_20_tools", |b| {
        b.iter(|| black_box(serde_json::to_string(&servers).expect("json")))
    });
    group.finish();
}

criterion_group!(benches, cache_vs_round_trip, breaker, snapshot);
criterion_main!(benches);
