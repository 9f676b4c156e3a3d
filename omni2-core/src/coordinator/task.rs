//! The coordinator task: the only writer of per-server state and of what is published.

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use futures_util::stream::{self, BoxStream, SelectAll};
use serde::Serialize;
use tokio::sync::{broadcast, mpsc, watch};
use tokio::task::JoinSet;
use tokio::time::{Instant, sleep_until};

use crate::breaker::{CircuitState, Transition};
use crate::cache::ToolCache;
use crate::config::ServerConfig;
use crate::coordinator::ops::{OpError, OpOutcome, ServerOp};
use crate::coordinator::probe::{self, ProbeOutcome};
use crate::coordinator::registry::{Command, OpReply, Registry, ReloadSummary, ServerEntry};
use crate::coordinator::server_state::{Changes, ServerState};
use crate::coordinator::status::{
    Event, EventKind, Published, ServerStatus, Snapshot, now_rfc3339,
};
use crate::health::HealthState;
use crate::mcp::{McpClient, ToolInfo};
use crate::metrics::Metrics;

/// Builds the registry and the (not yet running) coordinator.
pub fn build(
    servers: Vec<(ServerConfig, Arc<dyn McpClient>)>,
    max_concurrent_probes: usize,
    event_capacity: usize,
    metrics: Metrics,
) -> (Arc<Registry>, Published, Coordinator) {
    let (commands, command_rx) = mpsc::unbounded_channel();
    let registry = Arc::new(Registry::new(servers, commands));
    let now = now_rfc3339();
    let states: Vec<ServerState> = registry
        .servers()
        .iter()
        .map(|e| {
            let state = ServerState::new(&e.config, &now);
            metrics.set_health(&e.config.name, state.status.state);
            metrics.set_circuit(&e.config.name, CircuitState::Closed);
            metrics.precreate_server(&e.config.name);
            state
        })
        .collect();
    let snapshot = Arc::new(Snapshot::new(
        states.iter().map(|s| s.status.clone()).collect(),
    ));
    let (snapshot_tx, snapshot_rx) = watch::channel(snapshot);
    let (events, _) = broadcast::channel(event_capacity.max(16));
    let coordinator = Coordinator {
        registry: registry.clone(),
        states,
        snapshot: snapshot_tx,
        events: events.clone(),
        commands: command_rx,
        max_concurrent: max_concurrent_probes.max(1),
        metrics,
        cache: None,
    };
    (
        registry,
        Published {
            snapshot: snapshot_rx,
            events,
        },
        coordinator,
    )
}

/// Every enabled server's tool-list change signal, as a stream of server ids. A watch
/// keeps only its latest change, so a burst while the coordinator is busy yields one item.
fn tool_list_signals(registry: &Registry) -> SelectAll<BoxStream<'static, u64>> {
    stream::select_all(
        registry
            .servers()
            .iter()
            .map(|entry| (entry.id, entry))
            .filter_map(|(id, entry)| {
                let changes = entry
                    .client
                    .tool_list_changes()
                    .filter(|_| entry.config.enabled)?;
                Some(
                    stream::unfold(changes, move |mut changes| async move {
                        changes.changed().await.ok()?;
                        Some((id, changes))
                    })
                    .boxed(),
                )
            }),
    )
}

/// The task that owns per-server state. Run it with [`Coordinator::run`].
pub struct Coordinator {
    registry: Arc<Registry>,
    states: Vec<ServerState>,
    snapshot: watch::Sender<Arc<Snapshot>>,
    events: broadcast::Sender<Arc<Event>>,
    commands: mpsc::UnboundedReceiver<Command>,
    max_concurrent: usize,
    metrics: Metrics,
    cache: Option<(Arc<ToolCache>, Duration)>,
}

impl std::fmt::Debug for Coordinator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Coordinator")
            .field("servers", &self.states.len())
            .finish()
    }
}

impl Coordinator {
    /// Also publish `cache_stats` events every `period`.
    pub fn with_cache_stats(mut self, cache: Arc<ToolCache>, period: Duration) -> Self {
        self.cache = Some((cache, period));
        self
    }

    /// Runs until `shutdown` turns true (or its sender is dropped). Aborts probes in flight.
    pub async fn run(mut self, mut shutdown: watch::Receiver<bool>) {
        let mut probes: JoinSet<ProbeOutcome> = JoinSet::new();
        let far = Duration::from_secs(365 * 24 * 3600);
        let mut next_stats = self.cache.as_ref().map(|(_, p)| Instant::now() + *p);
        let mut tool_signals = tool_list_signals(&self.registry);
        loop {
            self.start_due_probes(&mut probes);
            let next_probe = self
                .states
                .iter()
                .filter(|s| s.enabled && !s.is_probing)
                .map(|s| s.next_probe)
                .min()
                .unwrap_or_else(|| Instant::now() + far);
            // Probe slots all taken: wait for a probe to finish instead of the next due time.
            let wake = if probes.len() >= self.max_concurrent {
                Instant::now() + far
            } else {
                next_probe
            };
            let stats_at = next_stats.unwrap_or_else(|| Instant::now() + far);
            tokio::select! {
                changed = shutdown.changed() => {
                    if changed.is_err() || *shutdown.borrow() {
                        break;
                    }
                }
                Some(done) = probes.join_next(), if !probes.is_empty() => match done {
                    Ok(outcome) => self.apply_probe(outcome),
                    Err(e) => tracing::error!(error = %e, "A probe task failed."),
                },
                Some(command) = self.commands.recv() => match command {
                    Command::Circuit(id, t) => {
                        // A server a reload replaced or removed: nobody watches it now.
                        if let Some(index) = self.position(id) {
                            self.apply_transition(index, t);
                        }
                    }
                    Command::Control(id, op, reply) => match self.position(id) {
                        Some(index) => self.apply_op(index, op, reply),
                        None => {
                            let _ = reply.send(Err(OpError::Unavailable));
                        }
                    },
                    Command::Reload(servers, client, reply) => {
                        let summary = self.apply_reload(servers, client.as_ref());
                        // The new servers' signals; the old streams end with their clients.
                        tool_signals = tool_list_signals(&self.registry);
                        let _ = reply.send(summary);
                    }
                },
                Some(id) = tool_signals.next(), if !tool_signals.is_empty() => {
                    if let Some(index) = self.position(id) {
                        tracing::debug!(
                            server = %self.registry.get(index).config.name,
                            "Tool list changed; refreshing it."
                        );
                        self.states[index].on_tool_list_changed();
                    }
                }
                _ = sleep_until(wake) => {}
                _ = sleep_until(stats_at), if next_stats.is_some() => {
                    if let Some((cache, period)) = &self.cache {
                        let _ = self.events.send(Arc::new(Event::cache_stats(cache.stats())));
                        next_stats = Some(Instant::now() + *period);
                    }
                }
            }
        }
        probes.abort_all();
        tracing::info!("Health coordinator stopped.");
    }

    fn start_due_probes(&mut self, probes: &mut JoinSet<ProbeOutcome>) {
        let now = Instant::now();
        for (index, entry) in self.registry.servers().iter().enumerate() {
            if probes.len() >= self.max_concurrent {
                return;
            }
            let state = &mut self.states[index];
            if !state.enabled || state.is_probing || state.next_probe > now {
                continue;
            }
            let plan = state.start_probe(now);
            let client = entry.client.clone();
            probes.spawn(probe::run(
                entry.id,
                client,
                entry.config.probe_timeout,
                plan,
            ));
        }
    }

    /// A probe finished: breaker, health, status, events, snapshot.
    fn apply_probe(&mut self, outcome: ProbeOutcome) {
        // A server a reload replaced or removed while it was probed: drop the outcome.
        let Some(index) = self.position(outcome.id) else {
            return;
        };
        let name = self.registry.get(index).config.name.clone();
        self.metrics.count_probe(&name, outcome.result_label);
        if !self.states[index].enabled {
            // Disabled while it ran: its outcome is about a server nobody watches now.
            self.states[index].is_probing = false;
            return;
        }
        let entry = self.registry.get(index).clone();
        self.metrics
            .probe_duration
            .with_label_values(&[entry.config.name.as_str()])
            .observe(outcome.elapsed.as_secs_f64());
        let now = Instant::now();
        self.feed_breaker(index, &entry, &outcome, now);
        let plan = outcome.plan;
        let changes = self.states[index].record(outcome, now, entry.config.probe_interval);
        self.report(&entry, changes, index);
        // Still stale: a change signalled while this probe ran may postdate its `tools/list`,
        // or the breaker closed meanwhile. A signalled refresh that failed is not retried at
        // once: the probe schedule retries it.
        let is_failed_attempt =
            plan.is_signalled && self.states[index].tool_signals == plan.tool_signals;
        if !is_failed_attempt {
            self.states[index].schedule_signalled_refresh();
        }
        self.publish();
    }

    /// Probes go through the breaker like calls, but run whatever it says: health must be
    /// known even while calls are fast-failed. Only outages count against it.
    fn feed_breaker(
        &mut self,
        index: usize,
        entry: &ServerEntry,
        outcome: &ProbeOutcome,
        now: Instant,
    ) {
        let is_outage = outcome.result.as_ref().is_err_and(|e| e.is_outage());
        let transitions = entry.breaker().on_probe(!is_outage, now);
        for t in transitions {
            self.apply_transition(index, t);
        }
    }

    /// Metrics, logs and events for what a probe changed.
    fn report(&self, entry: &ServerEntry, changes: Changes, index: usize) {
        let name = entry.config.name.as_str();
        let status = self.states[index].status.clone();
        if let Some(e) = &changes.tools_error {
            tracing::warn!(server = name, error = %e, "tools/list failed.");
        }
        if let Some(new_state) = changes.state {
            self.metrics.set_health(name, new_state);
            match new_state {
                HealthState::Unhealthy => tracing::warn!(
                    server = name,
                    error = status.last_error.as_deref().unwrap_or(""),
                    "MCP server unhealthy."
                ),
                s => tracing::info!(
                    server = name,
                    state = s.as_str(),
                    "MCP server state changed."
                ),
            }
        }
        if changes.is_tools_changed {
            self.metrics
                .precreate_tool_calls(name, status.tools.iter().map(|t| t.name.as_str()));
            #[derive(Serialize)]
            struct Body<'a> {
                server: &'a str,
                tool_count: usize,
                tools: &'a [ToolInfo],
            }
            self.emit(Event::new(
                EventKind::ToolsChanged,
                Some(status.name.clone()),
                Body {
                    server: &status.name,
                    tool_count: status.tool_count,
                    tools: &status.tools,
                },
            ));
        }
        if changes.is_news {
            self.emit_status(&status);
        }
    }

    fn emit_status(&self, status: &Arc<ServerStatus>) {
        self.emit(Event::new(
            EventKind::ServerStatus,
            Some(status.name.clone()),
            StatusBody::of(status),
        ));
    }

    /// An operator action: carried out here, the only writer; answered on `reply` (a probe
    /// answers when it has finished, from `ServerState::record`).
    fn apply_op(&mut self, index: usize, op: ServerOp, reply: OpReply) {
        let Some(entry) = self.registry.servers().get(index).cloned() else {
            let _ = reply.send(Err(OpError::Unavailable));
            return;
        };
        let answer = match op {
            ServerOp::Probe => {
                self.states[index].request_probe(reply);
                return;
            }
            ServerOp::ResetBreaker(to) => {
                let moved = entry.breaker().force(to);
                let from = moved.map_or(to, |t| t.from);
                if let Some(t) = moved {
                    self.apply_transition(index, t);
                }
                if to == CircuitState::HalfOpen {
                    // Let a trial decide soon rather than at the next scheduled probe.
                    self.states[index].next_probe = Instant::now();
                }
                Ok(OpOutcome::Breaker { from, to })
            }
            ServerOp::SetEnabled(on) => {
                let state = &mut self.states[index];
                let changed = if on { state.enable() } else { state.disable() };
                let status = state.status.clone();
                if changed {
                    let name = entry.config.name.as_str();
                    self.metrics.set_health(name, status.state);
                    tracing::info!(
                        server = name,
                        enabled = on,
                        "MCP server switched by an operator."
                    );
                    self.emit_status(&status);
                    self.publish();
                }
                Ok(OpOutcome::Enabled {
                    changed,
                    state: status.state,
                })
            }
        };
        // The operator may have gone away: nothing to tell then.
        let _ = reply.send(answer);
    }

    fn apply_transition(&mut self, index: usize, t: Transition) {
        let name = self.registry.get(index).config.name.clone();
        self.metrics.set_circuit(&name, t.to);
        self.metrics
            .circuit_transitions
            .with_label_values(&[name.as_str(), t.to.as_str()])
            .inc();
        tracing::info!(
            server = %name,
            from = t.from.as_str(),
            to = t.to.as_str(),
            "Circuit breaker changed state."
        );
        let is_tools_failing = self.registry.get(index).breaker().is_tripped_by_calls();
        let state = &mut self.states[index];
        state.set_circuit(t.to);
        if t.to == CircuitState::Closed {
            state.schedule_signalled_refresh();
        }
        if let Some(new_state) = state.set_tools_failing(is_tools_failing) {
            self.metrics.set_health(&name, new_state);
            tracing::info!(
                server = %name,
                state = new_state.as_str(),
                "MCP server state changed."
            );
            let status = self.states[index].status.clone();
            self.emit_status(&status);
        }
        let status = self.states[index].status.clone();
        #[derive(Serialize)]
        struct Body<'a> {
            server: &'a str,
            from: CircuitState,
            to: CircuitState,
        }
        self.emit(Event::new(
            EventKind::CircuitState,
            Some(status.name.clone()),
            Body {
                server: &status.name,
                from: t.from,
                to: t.to,
            },
        ));
        self.publish();
    }

    /// The index of server `id` in the current list.
    fn position(&self, id: u64) -> Option<usize> {
        self.registry.servers().iter().position(|e| e.id == id)
    }

    /// Replaces the server list: unchanged servers keep their entry (breaker, client) and
    /// state; new and changed ones start as at startup; removed ones are forgotten (their
    /// metrics series too). Every status client hears `server_removed` / `server_added`.
    fn apply_reload(
        &mut self,
        servers: Vec<ServerConfig>,
        client: &dyn Fn(&ServerConfig) -> Arc<dyn McpClient>,
    ) -> ReloadSummary {
        let mut old: Vec<Option<(Arc<ServerEntry>, ServerState)>> = self
            .registry
            .servers()
            .iter()
            .cloned()
            .zip(std::mem::take(&mut self.states))
            .map(Some)
            .collect();
        let mut take_old = |name: &str| {
            old.iter_mut()
                .find(|slot| slot.as_ref().is_some_and(|(e, _)| e.config.name == name))
                .and_then(Option::take)
        };
        let mut summary = ReloadSummary::default();
        let mut entries = Vec::with_capacity(servers.len());
        let mut fresh = Vec::new();
        let now = now_rfc3339();
        for config in servers {
            let previous = take_old(&config.name);
            match previous {
                Some((entry, state)) if entry.config == config => {
                    summary.unchanged.push(config.name.clone());
                    entries.push(entry);
                    self.states.push(state);
                }
                previous => {
                    let name = config.name.clone();
                    if let Some((entry, state)) = previous {
                        self.forget(&entry, &state);
                        summary.changed.push(name);
                    } else {
                        summary.added.push(name);
                    }
                    let state = ServerState::new(&config, &now);
                    self.metrics.set_health(&config.name, state.status.state);
                    self.metrics.set_circuit(&config.name, CircuitState::Closed);
                    self.metrics.precreate_server(&config.name);
                    fresh.push(state.status.clone());
                    let made = client(&config);
                    entries.push(Arc::new(ServerEntry::new(config, made)));
                    self.states.push(state);
                }
            }
        }
        let removed: Vec<(Arc<ServerEntry>, ServerState)> = old.into_iter().flatten().collect();
        for (entry, state) in &removed {
            self.forget(entry, state);
            summary.removed.push(entry.config.name.clone());
        }
        self.registry.install(entries);
        #[derive(Serialize)]
        struct Removed<'a> {
            server: &'a str,
        }
        let replaced = |name: &str| summary.changed.iter().any(|c| c == name);
        for name in summary.removed.iter().chain(&summary.changed) {
            self.emit(Event::new(
                EventKind::ServerRemoved,
                Some(name.as_str().into()),
                Removed { server: name },
            ));
        }
        for status in &fresh {
            self.emit_added(status, replaced(&status.name));
        }
        self.publish();
        summary
    }

    /// A server leaving the list: its metric series go, its waiting operators are told.
    fn forget(&self, entry: &ServerEntry, state: &ServerState) {
        let tools = state.status.tools.iter().map(|t| t.name.as_str());
        self.metrics.forget_server(&entry.config.name, tools);
        // `state` is dropped by the caller: waiting operators' replies close (unavailable).
    }

    fn emit_added(&self, status: &Arc<ServerStatus>, replaced: bool) {
        #[derive(Serialize)]
        struct Body<'a> {
            #[serde(flatten)]
            status: StatusBody<'a>,
            /// The server was configured before, with another configuration.
            replaced: bool,
        }
        self.emit(Event::new(
            EventKind::ServerAdded,
            Some(status.name.clone()),
            Body {
                status: StatusBody::of(status),
                replaced,
            },
        ));
    }

    fn emit(&self, event: Event) {
        // No subscribers is fine.
        let _ = self.events.send(Arc::new(event));
    }

    fn publish(&self) {
        let servers = self.states.iter().map(|s| s.status.clone()).collect();
        self.snapshot.send_replace(Arc::new(Snapshot::new(servers)));
    }
}

/// What `server_status` and `server_added` say of a server.
#[derive(Serialize)]
struct StatusBody<'a> {
    server: &'a str,
    state: HealthState,
    circuit: CircuitState,
    latency_ms: Option<f64>,
    last_error: Option<&'a str>,
    last_change: &'a str,
    tool_count: usize,
}

impl<'a> StatusBody<'a> {
    fn of(status: &'a ServerStatus) -> Self {
        StatusBody {
            server: &status.name,
            state: status.state,
            circuit: status.circuit,
            latency_ms: status.latency_ms,
            last_error: status.last_error.as_deref(),
            last_change: &status.last_change,
            tool_count: status.tool_count,
        }
    }
}
