//! The registry of servers and the one task that owns their health state.
//!
//! The coordinator probes each enabled server every `probe_interval` (at most
//! `max_concurrent_probes` at once, each bounded by `probe_timeout`), feeds the results to the
//! health tracker and the breaker, publishes a [`Snapshot`] (tokio `watch`) after every change
//! and an [`Event`] (tokio `broadcast`) per change. Tool calls share the breakers through
//! [`Registry`]; their transitions reach the task as commands so that it stays the only
//! writer of the published state.
//!
//! A server that says its tool list changed ([`McpClient::tool_list_changes`]) gets its next
//! probe, with `tools/list`, brought forward: at once, then at most once per
//! [`TOOLS_CHANGED_MIN_GAP`], within the probe cap, and only while its breaker is closed. The
//! periodic refresh stays as a safety net for lost notifications.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, SystemTime};

use futures_util::StreamExt;
use futures_util::stream::{self, BoxStream, SelectAll};
use serde::Serialize;
use tokio::sync::{broadcast, mpsc, watch};
use tokio::task::JoinSet;
use tokio::time::{Instant, sleep_until, timeout};

use crate::breaker::{Admission, Breaker, CircuitState, Transition};
use crate::cache::{CacheStats, ToolCache};
use crate::config::ServerConfig;
use crate::health::{HealthPolicy, HealthState, HealthTracker};
use crate::mcp::{self, McpClient, ToolInfo};
use crate::metrics::Metrics;

/// Probes between two `tools/list` refreshes of a healthy server.
const TOOLS_REFRESH_EVERY: u32 = 10;

/// Least time between two refreshes brought forward by tool-list change signals, so that a
/// server announcing changes in a loop costs at most one extra probe per this period.
pub const TOOLS_CHANGED_MIN_GAP: Duration = Duration::from_secs(1);

/// One configured server and what calls share with the coordinator.
pub struct ServerEntry {
    /// Its configuration.
    pub config: ServerConfig,
    /// The MCP client.
    pub client: Arc<dyn McpClient>,
    /// The breaker, shared by probes and tool calls (short critical sections, no await).
    breaker: Mutex<Breaker>,
}

impl std::fmt::Debug for ServerEntry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerEntry")
            .field("name", &self.config.name)
            .finish()
    }
}

/// The configured servers, by index and by name.
#[derive(Debug)]
pub struct Registry {
    servers: Vec<Arc<ServerEntry>>,
    by_name: HashMap<String, usize>,
    commands: mpsc::UnboundedSender<Command>,
}

/// A permit to call a server, from [`Registry::admit`]. Report with [`CallPermit::finish`];
/// dropping it unreported (e.g. the client went away) gives a half-open trial back.
#[derive(Debug)]
pub struct CallPermit {
    index: usize,
    registry: Arc<Registry>,
    is_done: bool,
}

impl CallPermit {
    /// Records the call's outcome (`ok` = no outage).
    pub fn finish(mut self, ok: bool) {
        self.is_done = true;
        let entry = &self.registry.servers[self.index];
        let transition = lock(&entry.breaker).on_result(ok, Instant::now());
        self.registry.notify(self.index, transition);
    }
}

impl Drop for CallPermit {
    fn drop(&mut self) {
        if !self.is_done {
            let entry = &self.registry.servers[self.index];
            lock(&entry.breaker).abandon();
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic while holding the breaker lock cannot leave it half-updated in a way that
    // matters more than losing breaker protection: keep serving.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Registry {
    /// Index of the server named `name`.
    pub fn index(&self, name: &str) -> Option<usize> {
        self.by_name.get(name).copied()
    }

    /// The server at `index`.
    pub fn get(&self, index: usize) -> &Arc<ServerEntry> {
        &self.servers[index]
    }

    /// Every server, in configured order.
    pub fn servers(&self) -> &[Arc<ServerEntry>] {
        &self.servers
    }

    /// Asks the server's breaker for a call; `Err(retry_after)` when open.
    pub fn admit(self: &Arc<Self>, index: usize) -> Result<CallPermit, Duration> {
        let admission = lock(&self.servers[index].breaker).admit(Instant::now());
        match admission {
            Admission::Allowed(transition) => {
                self.notify(index, transition);
                Ok(CallPermit {
                    index,
                    registry: self.clone(),
                    is_done: false,
                })
            }
            Admission::Rejected { retry_after } => Err(retry_after),
        }
    }

    fn notify(&self, index: usize, transition: Option<Transition>) {
        if let Some(t) = transition {
            // The coordinator is gone only at shutdown: nothing left to publish to.
            let _ = self.commands.send(Command::Circuit(index, t));
        }
    }
}

enum Command {
    Circuit(usize, Transition),
}

/// One server's published status.
#[derive(Clone, Debug, Serialize)]
pub struct ServerStatus {
    /// Server name.
    pub name: Arc<str>,
    /// Health state.
    pub state: HealthState,
    /// Breaker state.
    pub circuit: CircuitState,
    /// Latency of the last successful probe, milliseconds.
    pub latency_ms: Option<f64>,
    /// Text of the last probe error (cleared by a success).
    pub last_error: Option<String>,
    /// When `state` last changed, RFC 3339.
    pub last_change: String,
    /// Tools from the last successful `tools/list`.
    pub tool_count: usize,
    /// The tools themselves.
    pub tools: Arc<Vec<ToolInfo>>,
}

/// Every server's status, as of one moment.
#[derive(Debug, Default)]
pub struct Snapshot {
    /// In configured order.
    pub servers: Vec<Arc<ServerStatus>>,
    /// The `servers` array as JSON without tool lists (for WebSocket snapshots), built once.
    summary_json: OnceLock<String>,
}

/// A server's entry in a WebSocket snapshot (no tool list).
#[derive(Serialize)]
struct Summary<'a> {
    name: &'a str,
    state: HealthState,
    circuit: CircuitState,
    tool_count: usize,
    latency_ms: Option<f64>,
    last_error: Option<&'a str>,
    last_change: &'a str,
}

impl Snapshot {
    /// A snapshot of `servers` (the coordinator publishes these; benches build their own).
    pub fn new(servers: Vec<Arc<ServerStatus>>) -> Self {
        Self {
            servers,
            summary_json: OnceLock::new(),
        }
    }

    /// Status of `name`.
    pub fn get(&self, name: &str) -> Option<&Arc<ServerStatus>> {
        self.servers.iter().find(|s| &*s.name == name)
    }

    /// JSON array of server summaries, optionally only the servers `keep` accepts.
    pub fn summary_json(&self, keep: Option<&dyn Fn(&str) -> bool>) -> String {
        let build = |keep: Option<&dyn Fn(&str) -> bool>| {
            let items: Vec<Summary<'_>> = self
                .servers
                .iter()
                .filter(|s| keep.is_none_or(|k| k(&s.name)))
                .map(|s| Summary {
                    name: &s.name,
                    state: s.state,
                    circuit: s.circuit,
                    tool_count: s.tool_count,
                    latency_ms: s.latency_ms,
                    last_error: s.last_error.as_deref(),
                    last_change: &s.last_change,
                })
                .collect();
            serde_json::to_string(&items).unwrap_or_else(|_| "[]".to_owned())
        };
        match keep {
            None => self.summary_json.get_or_init(|| build(None)).clone(),
            Some(k) => build(Some(k)),
        }
    }
}

/// What an event is about (also the `type` of its WebSocket message).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    /// A server's health state, latency or error changed.
    ServerStatus,
    /// A breaker changed state.
    CircuitState,
    /// A server's tool list changed.
    ToolsChanged,
    /// Periodic cache statistics.
    CacheStats,
}

impl EventKind {
    /// Wire name.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::ServerStatus => "server_status",
            Self::CircuitState => "circuit_state",
            Self::ToolsChanged => "tools_changed",
            Self::CacheStats => "cache_stats",
        }
    }

    /// Parses a wire name.
    pub fn parse(s: &str) -> Option<Self> {
        [
            Self::ServerStatus,
            Self::CircuitState,
            Self::ToolsChanged,
            Self::CacheStats,
        ]
        .into_iter()
        .find(|k| k.as_str() == s)
    }
}

/// A published change, serialised once for every subscriber.
#[derive(Debug)]
pub struct Event {
    /// What it is about.
    pub kind: EventKind,
    /// The server it concerns (`None` for cache stats).
    pub server: Option<Arc<str>>,
    /// The message's JSON object without its opening `{` and without `seq`: each connection
    /// prepends `{"seq":N,`.
    pub json_tail: String,
}

#[derive(Serialize)]
struct Stamped<'a, T: Serialize> {
    #[serde(rename = "type")]
    kind: EventKind,
    ts: &'a str,
    #[serde(flatten)]
    body: T,
}

impl Event {
    fn new<T: Serialize>(kind: EventKind, server: Option<Arc<str>>, body: T) -> Self {
        let ts = now_rfc3339();
        let json = serde_json::to_string(&Stamped {
            kind,
            ts: &ts,
            body,
        })
        .unwrap_or_else(|_| format!("{{\"type\":\"{}\"}}", kind.as_str()));
        Self {
            kind,
            server,
            json_tail: json[1..].to_owned(),
        }
    }

    /// Cache statistics event.
    pub fn cache_stats(stats: CacheStats) -> Self {
        #[derive(Serialize)]
        struct Body {
            stats: CacheStats,
        }
        Self::new(EventKind::CacheStats, None, Body { stats })
    }
}

/// Now, RFC 3339 with milliseconds.
pub fn now_rfc3339() -> String {
    humantime::format_rfc3339_millis(SystemTime::now()).to_string()
}

/// Handles to what the coordinator publishes.
#[derive(Clone, Debug)]
pub struct Published {
    /// Latest snapshot.
    pub snapshot: watch::Receiver<Arc<Snapshot>>,
    /// Change events.
    pub events: broadcast::Sender<Arc<Event>>,
}

/// Builds the registry and the (not yet running) coordinator.
pub fn build(
    servers: Vec<(ServerConfig, Arc<dyn McpClient>)>,
    max_concurrent_probes: usize,
    event_capacity: usize,
    metrics: Metrics,
) -> (Arc<Registry>, Published, Coordinator) {
    let (commands, command_rx) = mpsc::unbounded_channel();
    let entries: Vec<Arc<ServerEntry>> = servers
        .into_iter()
        .map(|(config, client)| {
            Arc::new(ServerEntry {
                breaker: Mutex::new(Breaker::new(config.breaker.clone())),
                config,
                client,
            })
        })
        .collect();
    let by_name = entries
        .iter()
        .enumerate()
        .map(|(i, e)| (e.config.name.clone(), i))
        .collect();
    let now = now_rfc3339();
    let states: Vec<ServerState> = entries
        .iter()
        .map(|e| {
            let c = &e.config;
            let state = if c.enabled {
                HealthState::Unhealthy
            } else {
                HealthState::Disabled
            };
            metrics.set_health(&c.name, state);
            metrics.set_circuit(&c.name, CircuitState::Closed);
            metrics.precreate_tool_calls(&c.name, std::iter::empty());
            ServerState {
                tracker: HealthTracker::new(HealthPolicy {
                    unhealthy_after: c.unhealthy_after,
                    healthy_after: c.healthy_after,
                    degraded_latency: c.degraded_latency,
                }),
                status: Arc::new(ServerStatus {
                    name: c.name.as_str().into(),
                    state,
                    circuit: CircuitState::Closed,
                    latency_ms: None,
                    last_error: c.enabled.then(|| "not probed yet".to_owned()),
                    last_change: now.clone(),
                    tool_count: 0,
                    tools: Arc::default(),
                }),
                next_probe: Instant::now(),
                is_probing: false,
                probes_since_tools: 0,
                has_tools: false,
                tool_signals: 0,
                tool_signals_seen: 0,
                last_signalled_refresh: None,
            }
        })
        .collect();
    let snapshot = Arc::new(Snapshot::new(
        states.iter().map(|s| s.status.clone()).collect(),
    ));
    let (snapshot_tx, snapshot_rx) = watch::channel(snapshot);
    let (events, _) = broadcast::channel(event_capacity.max(16));
    let registry = Arc::new(Registry {
        servers: entries,
        by_name,
        commands,
    });
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

struct ServerState {
    tracker: HealthTracker,
    status: Arc<ServerStatus>,
    next_probe: Instant,
    is_probing: bool,
    probes_since_tools: u32,
    has_tools: bool,
    /// Tool-list change signals received so far.
    tool_signals: u64,
    /// `tool_signals` when the last successful `tools/list` started: the list is stale while
    /// they differ.
    tool_signals_seen: u64,
    /// When a probe last started early because of a change signal.
    last_signalled_refresh: Option<Instant>,
}

impl ServerState {
    fn is_tools_stale(&self) -> bool {
        self.tool_signals != self.tool_signals_seen
    }
}

struct ProbeOutcome {
    index: usize,
    elapsed: Duration,
    result: Result<(), mcp::Error>,
    tools: Option<Result<Vec<ToolInfo>, mcp::Error>>,
    /// `tool_signals` when the probe started.
    tool_signals: u64,
    /// It was brought forward to refresh a tool list said to have changed.
    is_signalled: bool,
}

/// Every enabled server's tool-list change signal, as a stream of server indexes. A watch
/// keeps only its latest change, so a burst while the coordinator is busy yields one item.
fn tool_list_signals(registry: &Registry) -> SelectAll<BoxStream<'static, usize>> {
    stream::select_all(
        registry
            .servers()
            .iter()
            .enumerate()
            .filter_map(|(index, entry)| {
                let changes = entry
                    .client
                    .tool_list_changes()
                    .filter(|_| entry.config.enabled)?;
                Some(
                    stream::unfold(changes, move |mut changes| async move {
                        changes.changed().await.ok()?;
                        Some((index, changes))
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
                .zip(self.registry.servers())
                .filter(|(s, e)| e.config.enabled && !s.is_probing)
                .map(|(s, _)| s.next_probe)
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
                    Command::Circuit(index, t) => self.apply_transition(index, t),
                },
                Some(index) = tool_signals.next(), if !tool_signals.is_empty() => {
                    self.on_tool_list_changed(index);
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
            if !entry.config.enabled || state.is_probing || state.next_probe > now {
                continue;
            }
            state.is_probing = true;
            // Signalled changes wait for a closed breaker (see `schedule_signalled_refresh`).
            let is_signalled =
                state.is_tools_stale() && state.status.circuit == CircuitState::Closed;
            if is_signalled {
                state.last_signalled_refresh = Some(now);
            }
            let want_tools = !state.has_tools
                || !state.status.state.is_up()
                || state.probes_since_tools + 1 >= TOOLS_REFRESH_EVERY
                || is_signalled;
            let tool_signals = state.tool_signals;
            let client = entry.client.clone();
            let limit = entry.config.probe_timeout;
            probes.spawn(async move {
                let started = Instant::now();
                let result = match timeout(limit, client.probe()).await {
                    Ok(r) => r,
                    Err(_) => {
                        client.reset().await;
                        Err(mcp::Error::timeout(limit))
                    }
                };
                let elapsed = started.elapsed();
                let tools = if result.is_ok() && want_tools {
                    Some(match timeout(limit, client.list_tools()).await {
                        Ok(r) => r,
                        Err(_) => Err(mcp::Error::timeout(limit)),
                    })
                } else {
                    None
                };
                ProbeOutcome {
                    index,
                    elapsed,
                    result,
                    tools,
                    tool_signals,
                    is_signalled,
                }
            });
        }
    }

    fn apply_probe(&mut self, outcome: ProbeOutcome) {
        let index = outcome.index;
        let entry = self.registry.get(index).clone();
        let name = entry.config.name.as_str();
        self.metrics
            .probe_duration
            .with_label_values(&[name])
            .observe(outcome.elapsed.as_secs_f64());
        let now = Instant::now();
        let ok = outcome.result.is_ok();
        // Probes go through the breaker like calls, but run whatever it says: health must
        // be known even while calls are fast-failed. Only outages count against it.
        let is_outage = outcome.result.as_ref().is_err_and(|e| e.is_outage());
        let mut transitions = Vec::new();
        {
            let mut breaker = lock(&entry.breaker);
            if let Admission::Allowed(t) = breaker.admit(now) {
                transitions.extend(t);
                transitions.extend(breaker.on_result(!is_outage, now));
            }
        }
        for t in transitions {
            self.apply_transition(index, t);
        }

        let state = &mut self.states[index];
        state.is_probing = false;
        state.next_probe = now + entry.config.probe_interval;
        let changed_state = state.tracker.record(ok.then_some(outcome.elapsed));
        let mut status = (*state.status).clone();
        let before_error = status.last_error.clone();
        match &outcome.result {
            Ok(()) => {
                status.latency_ms = Some(outcome.elapsed.as_secs_f64() * 1000.0);
                status.last_error = None;
            }
            Err(e) => status.last_error = Some(e.message.clone()),
        }
        let mut tools_changed = false;
        match outcome.tools {
            Some(Ok(tools)) => {
                state.probes_since_tools = 0;
                state.has_tools = true;
                state.tool_signals_seen = outcome.tool_signals;
                if *status.tools != tools {
                    self.metrics
                        .precreate_tool_calls(name, tools.iter().map(|t| t.name.as_str()));
                    status.tool_count = tools.len();
                    status.tools = Arc::new(tools);
                    tools_changed = true;
                }
            }
            Some(Err(e)) => {
                tracing::warn!(server = name, error = %e, "tools/list failed.");
            }
            None => state.probes_since_tools += 1,
        }
        if let Some(new_state) = changed_state {
            status.state = new_state;
            status.last_change = now_rfc3339();
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
        // A status event when the state, or the error text, changed; latency alone is not
        // worth waking every dashboard for.
        let is_news = changed_state.is_some() || before_error != status.last_error;
        let status = Arc::new(status);
        self.states[index].status = status.clone();
        if tools_changed {
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
        if is_news {
            self.emit_status(&status);
        }
        // Still stale: a change signalled while this probe ran may postdate its `tools/list`,
        // or the breaker closed meanwhile. A signalled refresh that failed is not retried at
        // once: the probe schedule retries it.
        let is_failed_attempt =
            outcome.is_signalled && self.states[index].tool_signals == outcome.tool_signals;
        if !is_failed_attempt {
            self.schedule_signalled_refresh(index);
        }
        self.publish();
    }

    /// The server says its tool list changed: refresh it soon.
    fn on_tool_list_changed(&mut self, index: usize) {
        tracing::debug!(
            server = %self.registry.get(index).config.name,
            "Tool list changed; refreshing it."
        );
        self.states[index].tool_signals += 1;
        self.schedule_signalled_refresh(index);
    }

    /// Brings the next probe of a server with a stale tool list forward: to now, or to
    /// [`TOOLS_CHANGED_MIN_GAP`] after the previous signalled refresh. Not while a probe runs
    /// (its end reschedules), nor while the breaker is not closed: a failing server is left
    /// alone, and its tools are refreshed once the breaker closes.
    fn schedule_signalled_refresh(&mut self, index: usize) {
        let state = &mut self.states[index];
        if state.is_probing
            || !state.is_tools_stale()
            || state.status.circuit != CircuitState::Closed
        {
            return;
        }
        let now = Instant::now();
        let earliest = state
            .last_signalled_refresh
            .map_or(now, |last| (last + TOOLS_CHANGED_MIN_GAP).max(now));
        state.next_probe = state.next_probe.min(earliest);
    }

    fn emit_status(&self, status: &Arc<ServerStatus>) {
        #[derive(Serialize)]
        struct Body<'a> {
            server: &'a str,
            state: HealthState,
            circuit: CircuitState,
            latency_ms: Option<f64>,
            last_error: Option<&'a str>,
            last_change: &'a str,
            tool_count: usize,
        }
        self.emit(Event::new(
            EventKind::ServerStatus,
            Some(status.name.clone()),
            Body {
                server: &status.name,
                state: status.state,
                circuit: status.circuit,
                latency_ms: status.latency_ms,
                last_error: status.last_error.as_deref(),
                last_change: &status.last_change,
                tool_count: status.tool_count,
            },
        ));
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
        let mut status = (*self.states[index].status).clone();
        status.circuit = t.to;
        let status = Arc::new(status);
        self.states[index].status = status.clone();
        if t.to == CircuitState::Closed {
            self.schedule_signalled_refresh(index);
        }
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

    fn emit(&self, event: Event) {
        // No subscribers is fine.
        let _ = self.events.send(Arc::new(event));
    }

    fn publish(&self) {
        let servers = self.states.iter().map(|s| s.status.clone()).collect();
        self.snapshot.send_replace(Arc::new(Snapshot::new(servers)));
    }
}

#[cfg(test)]
mod tests;
