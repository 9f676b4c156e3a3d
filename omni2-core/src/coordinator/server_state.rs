//! One server's state as the coordinator task owns it: health tracker, published status,
//! probe schedule and tool-list freshness.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use crate::breaker::CircuitState;
use crate::config::ServerConfig;
use crate::coordinator::ops::{OpError, OpOutcome};
use crate::coordinator::probe::{ProbeOutcome, ProbePlan};
use crate::coordinator::registry::OpReply;
use crate::coordinator::status::{ServerStatus, now_rfc3339};
use crate::health::{HealthPolicy, HealthState, HealthTracker};
use crate::mcp;

/// Probes between two `tools/list` refreshes of a healthy server.
pub(crate) const TOOLS_REFRESH_EVERY: u32 = 10;

/// Least time between two refreshes brought forward by tool-list change signals, so that a
/// server announcing changes in a loop costs at most one extra probe per this period.
pub const TOOLS_CHANGED_MIN_GAP: Duration = Duration::from_secs(1);

pub(crate) struct ServerState {
    tracker: HealthTracker,
    policy: HealthPolicy,
    /// Probed and called (from config, then switched by operators).
    pub enabled: bool,
    /// Operators waiting for the next probe's outcome.
    probe_waiters: Vec<OpReply>,
    pub status: Arc<ServerStatus>,
    pub next_probe: Instant,
    pub is_probing: bool,
    probes_since_tools: u32,
    has_tools: bool,
    /// Tool-list change signals received so far.
    pub tool_signals: u64,
    /// `tool_signals` when the last successful `tools/list` started: the list is stale while
    /// they differ.
    tool_signals_seen: u64,
    /// When a probe last started early because of a change signal.
    last_signalled_refresh: Option<Instant>,
    /// The breaker is open because tool calls failed (see `Breaker::is_tripped_by_calls`):
    /// an up server is published as `tools_failing`.
    is_tools_failing: bool,
}

/// What one probe changed in a server's status.
pub(crate) struct Changes {
    /// The new health state, if it changed.
    pub state: Option<HealthState>,
    /// The tool list changed (the new one is in the status).
    pub is_tools_changed: bool,
    /// Listing tools failed.
    pub tools_error: Option<mcp::Error>,
    /// Worth a `server_status` event: the state or the error text changed (latency alone
    /// is not worth waking every dashboard for).
    pub is_news: bool,
}

impl ServerState {
    /// A server not probed yet: unhealthy if enabled, else disabled; probe due now.
    pub fn new(c: &ServerConfig, now: &str) -> Self {
        let state = if c.enabled {
            HealthState::Unhealthy
        } else {
            HealthState::Disabled
        };
        let policy = HealthPolicy {
            unhealthy_after: c.unhealthy_after,
            healthy_after: c.healthy_after,
            degraded_latency: c.degraded_latency,
            min_spacing: c.probe_interval,
        };
        Self {
            tracker: HealthTracker::new(policy),
            policy,
            enabled: c.enabled,
            probe_waiters: Vec::new(),
            status: Arc::new(ServerStatus {
                name: c.name.as_str().into(),
                state,
                circuit: CircuitState::Closed,
                latency_ms: None,
                last_error: c.enabled.then(|| "not probed yet".to_owned()),
                last_change: now.to_owned(),
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
            is_tools_failing: false,
        }
    }

    /// The state to publish: the probes' verdict, or `tools_failing` when probes say up
    /// but tool calls tripped the breaker.
    fn effective_state(&self) -> HealthState {
        let probed = self.tracker.state();
        if !self.enabled {
            HealthState::Disabled
        } else if probed.is_up() && self.is_tools_failing {
            HealthState::ToolsFailing
        } else {
            probed
        }
    }

    /// Records whether tool calls tripped the breaker; returns the new published state if
    /// that changed it.
    pub fn set_tools_failing(&mut self, on: bool) -> Option<HealthState> {
        self.is_tools_failing = on;
        let state = self.effective_state();
        if state == self.status.state {
            return None;
        }
        let mut status = (*self.status).clone();
        status.state = state;
        status.last_change = now_rfc3339();
        self.status = Arc::new(status);
        Some(state)
    }

    fn is_tools_stale(&self) -> bool {
        self.tool_signals != self.tool_signals_seen
    }

    /// Marks a probe started now and plans what it asks.
    pub fn start_probe(&mut self, now: Instant) -> ProbePlan {
        self.is_probing = true;
        // Signalled changes wait for a closed breaker (see `schedule_signalled_refresh`).
        let is_signalled = self.is_tools_stale() && self.status.circuit == CircuitState::Closed;
        if is_signalled {
            self.last_signalled_refresh = Some(now);
        }
        let want_tools = !self.has_tools
            || !self.tracker.state().is_up()
            || self.probes_since_tools + 1 >= TOOLS_REFRESH_EVERY
            || is_signalled;
        ProbePlan {
            want_tools,
            tool_signals: self.tool_signals,
            is_signalled,
        }
    }

    /// Records a finished probe: health, latency, error text, tools; schedules the next one
    /// `interval` from `now`.
    pub fn record(&mut self, outcome: ProbeOutcome, now: Instant, interval: Duration) -> Changes {
        self.is_probing = false;
        self.next_probe = now + interval;
        self.tracker
            .record(outcome.result.is_ok().then_some(outcome.elapsed), now);
        let mut status = (*self.status).clone();
        let changed_state = Some(self.effective_state()).filter(|s| *s != status.state);
        let before_error = status.last_error.clone();
        match &outcome.result {
            Ok(()) => {
                status.latency_ms = Some(outcome.elapsed.as_secs_f64() * 1000.0);
                status.last_error = None;
            }
            Err(e) => status.last_error = Some(e.message.clone()),
        }
        let mut is_tools_changed = false;
        let mut tools_error = None;
        match outcome.tools {
            Some(Ok(tools)) => {
                self.probes_since_tools = 0;
                self.has_tools = true;
                self.tool_signals_seen = outcome.plan.tool_signals;
                if *status.tools != tools {
                    status.tool_count = tools.len();
                    status.tools = Arc::new(tools);
                    is_tools_changed = true;
                }
            }
            Some(Err(e)) => tools_error = Some(e),
            None => self.probes_since_tools += 1,
        }
        if let Some(new_state) = changed_state {
            status.state = new_state;
            status.last_change = now_rfc3339();
        }
        // An operator asked for this probe: they see its outcome even when nothing changed.
        let is_requested = !self.probe_waiters.is_empty();
        let is_news = changed_state.is_some() || before_error != status.last_error || is_requested;
        self.status = Arc::new(status);
        let outcome = OpOutcome::Probed {
            state: self.status.state,
            circuit: self.status.circuit,
            latency_ms: self.status.latency_ms,
            last_error: self.status.last_error.clone(),
        };
        for waiter in self.probe_waiters.drain(..) {
            // The operator may have gone away: nothing to tell then.
            let _ = waiter.send(Ok(outcome.clone()));
        }
        Changes {
            state: changed_state,
            is_tools_changed,
            tools_error,
            is_news,
        }
    }

    /// An operator asked for a probe now: it starts at the next turn (or the one running
    /// answers), and `reply` gets its outcome.
    pub fn request_probe(&mut self, reply: OpReply) {
        if !self.enabled {
            let _ = reply.send(Err(OpError::Disabled));
            return;
        }
        self.probe_waiters.push(reply);
        if !self.is_probing {
            self.next_probe = Instant::now();
        }
    }

    /// Stops probing: published as `disabled`; waiting operators are told. Returns whether
    /// anything changed.
    pub fn disable(&mut self) -> bool {
        if !self.enabled {
            return false;
        }
        self.enabled = false;
        for waiter in self.probe_waiters.drain(..) {
            let _ = waiter.send(Err(OpError::Disabled));
        }
        let mut status = (*self.status).clone();
        status.state = HealthState::Disabled;
        status.last_error = None;
        status.last_change = now_rfc3339();
        self.status = Arc::new(status);
        true
    }

    /// Starts probing again, from scratch: unhealthy until probes say otherwise, probe due
    /// now. Returns whether anything changed.
    pub fn enable(&mut self) -> bool {
        if self.enabled {
            return false;
        }
        self.enabled = true;
        self.tracker = HealthTracker::new(self.policy);
        self.next_probe = Instant::now();
        let mut status = (*self.status).clone();
        status.state = HealthState::Unhealthy;
        status.last_error = Some("not probed yet".to_owned());
        status.last_change = now_rfc3339();
        self.status = Arc::new(status);
        true
    }

    /// Records a breaker move in the published status.
    pub fn set_circuit(&mut self, circuit: CircuitState) {
        let mut status = (*self.status).clone();
        status.circuit = circuit;
        self.status = Arc::new(status);
    }

    /// The server said its tool list changed.
    pub fn on_tool_list_changed(&mut self) {
        self.tool_signals += 1;
        self.schedule_signalled_refresh();
    }

    /// Brings the next probe of a server with a stale tool list forward: to now, or to
    /// [`TOOLS_CHANGED_MIN_GAP`] after the previous signalled refresh. Not while a probe runs
    /// (its end reschedules), nor while the breaker is not closed: a failing server is left
    /// alone, and its tools are refreshed once the breaker closes.
    pub fn schedule_signalled_refresh(&mut self) {
        if self.is_probing || !self.is_tools_stale() || self.status.circuit != CircuitState::Closed
        {
            return;
        }
        let now = Instant::now();
        let earliest = self
            .last_signalled_refresh
            .map_or(now, |last| (last + TOOLS_CHANGED_MIN_GAP).max(now));
        self.next_probe = self.next_probe.min(earliest);
    }
}
