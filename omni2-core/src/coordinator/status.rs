//! What the coordinator publishes: per-server [`ServerStatus`] in a [`Snapshot`], and
//! [`Event`]s, each serialised once for every subscriber.

use std::sync::{Arc, OnceLock};
use std::time::SystemTime;

use serde::Serialize;
use tokio::sync::{broadcast, watch};

use crate::breaker::CircuitState;
use crate::cache::CacheStats;
use crate::health::HealthState;
use crate::mcp::ToolInfo;

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
    /// A configuration reload added a server, or replaced it (`replaced: true`).
    ServerAdded,
    /// A configuration reload removed a server (or replaced it: `server_added` follows).
    ServerRemoved,
}

impl EventKind {
    /// Wire name.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::ServerStatus => "server_status",
            Self::CircuitState => "circuit_state",
            Self::ToolsChanged => "tools_changed",
            Self::CacheStats => "cache_stats",
            Self::ServerAdded => "server_added",
            Self::ServerRemoved => "server_removed",
        }
    }

    /// Parses a wire name.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == s)
    }

    /// Every kind.
    pub const ALL: [Self; 6] = [
        Self::ServerStatus,
        Self::CircuitState,
        Self::ToolsChanged,
        Self::CacheStats,
        Self::ServerAdded,
        Self::ServerRemoved,
    ];
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
    /// An event of `kind` about `server`, stamped now, with `body`'s fields.
    pub(crate) fn new<T: Serialize>(kind: EventKind, server: Option<Arc<str>>, body: T) -> Self {
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
