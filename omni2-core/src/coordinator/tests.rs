//! Coordinator under paused tokio time with fake MCP servers.

use std::sync::atomic::{AtomicUsize, Ordering};

use futures_util::FutureExt;
use futures_util::future::BoxFuture;
use serde_json::{Map, Value};

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{broadcast, watch};

use super::*;
use crate::breaker::CircuitState;
use crate::coordinator::server_state::TOOLS_REFRESH_EVERY;
use crate::health::HealthState;
use crate::mcp::{self, McpClient, ToolInfo};
use crate::metrics::Metrics;
use crate::test_util::{Behaviour, FakeMcp, server_config, tool};

/// A [`FakeMcp`] that can announce tool-list changes and counts `tools/list` calls.
struct Announcing {
    fake: Arc<FakeMcp>,
    tools_changed: watch::Sender<()>,
    lists: AtomicUsize,
}

impl Announcing {
    /// The server says its tool list changed.
    fn announce(&self) {
        self.tools_changed.send_replace(());
    }

    fn lists(&self) -> usize {
        self.lists.load(Ordering::SeqCst)
    }
}

impl McpClient for Announcing {
    fn probe(&self) -> BoxFuture<'_, Result<(), mcp::Error>> {
        self.fake.probe()
    }

    fn list_tools(&self) -> BoxFuture<'_, Result<Vec<ToolInfo>, mcp::Error>> {
        self.lists.fetch_add(1, Ordering::SeqCst);
        self.fake.list_tools()
    }

    fn call_tool<'a>(
        &'a self,
        tool: &'a str,
        arguments: Map<String, Value>,
    ) -> BoxFuture<'a, Result<mcp::ToolResult, mcp::Error>> {
        self.fake.call_tool(tool, arguments)
    }

    fn reset(&self) -> BoxFuture<'_, ()> {
        self.fake.reset().boxed()
    }

    fn tool_list_changes(&self) -> Option<watch::Receiver<()>> {
        Some(self.tools_changed.subscribe())
    }
}

struct Harness {
    fakes: Vec<Arc<FakeMcp>>,
    clients: Vec<Arc<Announcing>>,
    registry: Arc<Registry>,
    published: Published,
    events: broadcast::Receiver<Arc<Event>>,
    _stop: watch::Sender<bool>,
}

fn start(names: &[&str], max_concurrent: usize) -> Harness {
    let fakes: Vec<Arc<FakeMcp>> = names.iter().map(|_| Arc::new(FakeMcp::new())).collect();
    let clients: Vec<Arc<Announcing>> = fakes
        .iter()
        .map(|fake| {
            Arc::new(Announcing {
                fake: fake.clone(),
                tools_changed: watch::Sender::new(()),
                lists: AtomicUsize::new(0),
            })
        })
        .collect();
    let servers = names
        .iter()
        .zip(&clients)
        .map(|(n, c)| (server_config(n), c.clone() as Arc<dyn McpClient>))
        .collect();
    let (registry, published, coordinator) = build(servers, max_concurrent, 64, Metrics::new());
    let events = published.events.subscribe();
    let (stop, stop_rx) = watch::channel(false);
    tokio::spawn(coordinator.run(stop_rx));
    Harness {
        fakes,
        clients,
        registry,
        published,
        events,
        _stop: stop,
    }
}

impl Harness {
    fn state(&self, i: usize) -> (HealthState, CircuitState) {
        let s = self.published.snapshot.borrow().servers[i].clone();
        (s.state, s.circuit)
    }

    /// Advance paused time in small steps so spawned probes run.
    async fn advance(&self, d: Duration) {
        let steps = (d.as_millis() / 50).max(1);
        for _ in 0..steps {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn drain(&mut self) -> Vec<(EventKind, String)> {
        let mut out = Vec::new();
        while let Ok(e) = self.events.try_recv() {
            out.push((e.kind, e.json_tail.clone()));
        }
        out
    }
}

#[tokio::test(start_paused = true)]
async fn healthy_then_unhealthy_after_threshold_then_recovers() {
    let mut h = start(&["a"], 4);
    h.advance(Duration::from_millis(100)).await;
    assert_eq!(h.state(0), (HealthState::Healthy, CircuitState::Closed));
    let events = h.drain();
    assert!(events.iter().any(|(k, _)| *k == EventKind::ToolsChanged));
    assert!(
        events
            .iter()
            .any(|(k, j)| *k == EventKind::ServerStatus && j.contains("\"healthy\""))
    );

    h.fakes[0].set(Behaviour::Down);
    h.advance(Duration::from_secs(1)).await;
    assert_eq!(
        h.state(0).0,
        HealthState::Healthy,
        "one failure is below the threshold"
    );
    h.advance(Duration::from_secs(1)).await;
    // unhealthy_after = 2 and breaker failure_threshold = 2.
    assert_eq!(h.state(0), (HealthState::Unhealthy, CircuitState::Open));
    assert!(h.registry.admit(0).is_err(), "calls fast-fail");
    let events = h.drain();
    assert!(
        events
            .iter()
            .any(|(k, j)| *k == EventKind::CircuitState && j.contains("\"to\":\"open\""))
    );

    h.fakes[0].set(Behaviour::Answer(Duration::ZERO));
    // Breaker open 3 s; the probe after it admits a trial and closes it; 2 successes heal.
    h.advance(Duration::from_secs(4)).await;
    assert_eq!(h.state(0), (HealthState::Healthy, CircuitState::Closed));
}

#[tokio::test(start_paused = true)]
async fn slow_answers_are_degraded_and_hangs_time_out() {
    let h = start(&["a"], 4);
    h.fakes[0].set(Behaviour::Answer(Duration::from_millis(300)));
    h.advance(Duration::from_millis(1000)).await;
    assert_eq!(h.state(0).0, HealthState::Degraded);
    let s = h.published.snapshot.borrow().servers[0].clone();
    assert!(s.latency_ms.is_some_and(|l| l >= 300.0));

    h.fakes[0].set(Behaviour::Hang);
    h.advance(Duration::from_secs(4)).await;
    let s = h.published.snapshot.borrow().servers[0].clone();
    assert_eq!(s.state, HealthState::Unhealthy);
    assert!(
        s.last_error
            .as_deref()
            .is_some_and(|e| e.contains("timed out")),
        "{s:?}"
    );
    assert!(
        h.fakes[0].resets.load(Ordering::SeqCst) >= 2,
        "a timed-out probe drops the session"
    );
}

#[tokio::test(start_paused = true)]
async fn concurrent_probes_are_capped() {
    let h = start(&["a", "b", "c", "d"], 2);
    for f in &h.fakes {
        f.set(Behaviour::Hang);
    }
    h.advance(Duration::from_millis(100)).await;
    let started: usize = h
        .fakes
        .iter()
        .map(|f| f.probes.load(Ordering::SeqCst))
        .sum();
    assert_eq!(started, 2, "only two probes run at once");
    // Each hang times out at 500 ms, freeing a slot for the others.
    h.advance(Duration::from_millis(600)).await;
    let started: usize = h
        .fakes
        .iter()
        .map(|f| f.probes.load(Ordering::SeqCst))
        .sum();
    assert_eq!(started, 4);
}

/// What bounds probe load per server, per replica (docs/scaling.md): one probe in flight,
/// the next one `probe_interval` after the previous one ended, never a catch-up burst.
#[tokio::test(start_paused = true)]
async fn a_hung_server_gets_one_probe_at_a_time_spaced_by_the_interval() {
    let h = start(&["a"], 8);
    h.fakes[0].set(Behaviour::Hang);
    // Interval 1 s, timeout 500 ms: probes start at 0, 1.5, 3, 4.5, 6, 7.5, 9 s.
    h.advance(Duration::from_secs(10)).await;
    let started = h.fakes[0].probes.load(Ordering::SeqCst);
    assert!(
        (6..=7).contains(&started),
        "{started} probes in 10 s (one per 1.5 s, never overlapping)"
    );
}

#[tokio::test(start_paused = true)]
async fn tool_list_change_is_an_event_and_call_transitions_publish() {
    let mut h = start(&["a"], 4);
    h.advance(Duration::from_millis(100)).await;
    h.drain();
    // Calls open the breaker (threshold 2) through the registry.
    for _ in 0..2 {
        h.registry.admit(0).expect("closed").finish(false);
    }
    h.advance(Duration::from_millis(50)).await;
    assert_eq!(
        h.state(0),
        (HealthState::ToolsFailing, CircuitState::Open),
        "probes succeed, tool calls tripped the breaker"
    );
    let events = h.drain();
    let kinds: Vec<_> = events.iter().map(|(k, _)| *k).collect();
    assert_eq!(
        kinds,
        [EventKind::ServerStatus, EventKind::CircuitState],
        "{events:?}"
    );
    assert!(
        events[0].1.contains("\"state\":\"tools_failing\""),
        "{events:?}"
    );

    h.fakes[0].set_tools(vec![tool("only", None)]);
    // Tool lists are refreshed every TOOLS_REFRESH_EVERY probes.
    h.advance(Duration::from_secs(u64::from(TOOLS_REFRESH_EVERY) + 1))
        .await;
    let s = h.published.snapshot.borrow().servers[0].clone();
    assert_eq!(s.tool_count, 1);
    assert!(
        h.drain()
            .iter()
            .any(|(k, j)| *k == EventKind::ToolsChanged && j.contains("\"only\""))
    );
}

#[tokio::test(start_paused = true)]
async fn abandoned_half_open_trial_is_released() {
    let h = start(&["a"], 4);
    h.fakes[0].set(Behaviour::Hang);
    for _ in 0..2 {
        h.registry.admit(0).expect("closed").finish(false);
    }
    h.advance(Duration::from_secs(3)).await;
    let permit = h.registry.admit(0).expect("half-open trial");
    assert!(h.registry.admit(0).is_err(), "one trial at a time");
    drop(permit);
    assert!(
        h.registry.admit(0).is_ok(),
        "the abandoned trial slot is free again"
    );
}

#[tokio::test(start_paused = true)]
async fn announced_tool_list_change_is_refreshed_before_the_periodic_refresh() {
    let mut h = start(&["a"], 4);
    h.advance(Duration::from_millis(100)).await;
    assert_eq!(h.clients[0].lists(), 1, "first probe lists tools");
    h.drain();

    h.fakes[0].set_tools(vec![tool("add", Some(true)), tool("new", None)]);
    // Two probes in, far from the periodic refresh (every TOOLS_REFRESH_EVERY probes).
    h.advance(Duration::from_millis(2000)).await;
    assert_eq!(h.clients[0].lists(), 1, "no periodic refresh yet");
    h.clients[0].announce();
    h.advance(Duration::from_millis(50)).await;

    assert_eq!(h.clients[0].lists(), 2);
    let s = h.published.snapshot.borrow().servers[0].clone();
    assert_eq!(s.tool_count, 2);
    let events = h.drain();
    assert!(
        events
            .iter()
            .any(|(k, j)| *k == EventKind::ToolsChanged && j.contains("\"new\"")),
        "{events:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn announcement_bursts_are_coalesced_and_rate_limited() {
    let h = start(&["a"], 4);
    h.advance(Duration::from_millis(100)).await;
    assert_eq!(h.clients[0].lists(), 1);

    for _ in 0..20 {
        h.clients[0].announce();
        tokio::task::yield_now().await;
    }
    h.advance(Duration::from_millis(50)).await;
    assert_eq!(h.clients[0].lists(), 2, "a burst is one refresh");

    // Right after a signalled refresh, the next one waits for TOOLS_CHANGED_MIN_GAP.
    h.clients[0].announce();
    h.advance(Duration::from_millis(100)).await;
    assert_eq!(h.clients[0].lists(), 2, "not yet");
    h.advance(TOOLS_CHANGED_MIN_GAP).await;
    assert_eq!(h.clients[0].lists(), 3, "then once");
    h.advance(TOOLS_CHANGED_MIN_GAP * 2).await;
    assert_eq!(h.clients[0].lists(), 3, "and no more");
}

#[tokio::test(start_paused = true)]
async fn announcement_waits_while_the_breaker_is_open() {
    let mut h = start(&["a"], 4);
    h.advance(Duration::from_millis(100)).await;
    // Calls open the breaker (threshold 2, open 3 s); probes keep succeeding.
    for _ in 0..2 {
        h.registry.admit(0).expect("closed").finish(false);
    }
    h.advance(Duration::from_millis(50)).await;
    assert_eq!(h.state(0).1, CircuitState::Open);
    h.drain();

    h.fakes[0].set_tools(vec![tool("later", None)]);
    h.clients[0].announce();
    h.advance(Duration::from_millis(2000)).await;
    assert_eq!(h.state(0).1, CircuitState::Open);
    assert_eq!(
        h.clients[0].lists(),
        1,
        "no tools/list while the breaker is open"
    );

    // Probes after the open period (at 4 s) do not close a breaker tool calls opened.
    h.advance(Duration::from_millis(2000)).await;
    assert_eq!(h.state(0), (HealthState::ToolsFailing, CircuitState::Open));
    assert_eq!(h.clients[0].lists(), 1);
    // A tool call is its trial: its success closes the breaker, then the tools refresh at
    // once.
    h.registry.admit(0).expect("half-open trial").finish(true);
    h.advance(Duration::from_millis(100)).await;
    assert_eq!(h.state(0), (HealthState::Healthy, CircuitState::Closed));
    assert_eq!(h.clients[0].lists(), 2);
    assert!(
        h.drain()
            .iter()
            .any(|(k, j)| *k == EventKind::ToolsChanged && j.contains("\"later\""))
    );
}

#[tokio::test(start_paused = true)]
async fn a_reload_keeps_unchanged_servers_replaces_changed_ones_and_drops_late_news() {
    let mut h = start(&["a", "b", "c"], 4);
    h.advance(Duration::from_millis(100)).await;
    // `a`'s breaker opens through calls: an unchanged server must keep it.
    for _ in 0..2 {
        h.registry.admit(0).expect("closed").finish(false);
    }
    h.advance(Duration::from_millis(100)).await;
    assert_eq!(h.state(0).1, CircuitState::Open);
    // A call to `c` is in flight across the reload (c is removed).
    let late = h.registry.admit(2).expect("closed");
    // `b` hangs: its probe is in flight when it is replaced.
    h.fakes[1].set(Behaviour::Hang);
    h.advance(Duration::from_secs(1)).await;
    h.drain();

    let new_fake = Arc::new(FakeMcp::new());
    let made = new_fake.clone();
    let mut b = server_config("b");
    b.probe_interval = Duration::from_secs(2);
    let servers = vec![server_config("a"), b, server_config("d")];
    let summary = h
        .registry
        .reload(
            servers,
            Box::new(move |_| made.clone() as Arc<dyn McpClient>),
        )
        .await
        .expect("coordinator running");
    assert_eq!(summary.unchanged, ["a"]);
    assert_eq!(summary.changed, ["b"]);
    assert_eq!(summary.added, ["d"]);
    assert_eq!(summary.removed, ["c"]);
    let names: Vec<String> = h
        .registry
        .servers()
        .iter()
        .map(|e| e.config.name.clone())
        .collect();
    assert_eq!(names, ["a", "b", "d"]);
    assert_eq!(h.state(0).1, CircuitState::Open, "a kept its breaker");
    let events = h.drain();
    let kinds = |k: EventKind| {
        events
            .iter()
            .filter(|(kind, _)| *kind == k)
            .map(|(_, j)| j.clone())
            .collect::<Vec<_>>()
    };
    let removed = kinds(EventKind::ServerRemoved);
    assert_eq!(removed.len(), 2, "{removed:?}");
    assert!(removed.iter().any(|j| j.contains("\"c\"")));
    let added = kinds(EventKind::ServerAdded);
    assert_eq!(added.len(), 2, "{added:?}");
    assert!(
        added
            .iter()
            .any(|j| j.contains("\"b\"") && j.contains("\"replaced\":true"))
    );
    assert!(
        added
            .iter()
            .any(|j| j.contains("\"d\"") && j.contains("\"replaced\":false"))
    );

    // The old `c` call finishing, and the old `b` probe, change nothing now.
    late.finish(false);
    h.advance(Duration::from_secs(1)).await;
    assert_eq!(h.registry.index("c"), None);
    // The new `b` and `d` (new clients) are probed and healthy.
    assert_eq!(h.state(1).0, HealthState::Healthy);
    assert_eq!(h.state(2).0, HealthState::Healthy);
    assert!(new_fake.probes.load(Ordering::SeqCst) >= 2);
    // A control action by name reaches the new `d`.
    let outcome = h
        .registry
        .control_named("d", ServerOp::Probe)
        .await
        .expect("configured");
    assert!(
        matches!(outcome, Ok(OpOutcome::Probed { .. })),
        "{outcome:?}"
    );
    assert!(
        h.registry
            .control_named("c", ServerOp::Probe)
            .await
            .is_none()
    );
}
