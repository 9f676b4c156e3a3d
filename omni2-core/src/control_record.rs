//! The vocabulary of control requests: actions on a named server. Below `control`, which
//! carries them out, and `ws`, which reads them from client messages.

use serde::Deserialize;

/// Where a breaker reset leaves it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ResetTo {
    /// Calls flow at once; failure counts and backoff cleared.
    #[default]
    Closed,
    /// The next trial calls (or probe) decide.
    HalfOpen,
}

/// What to do to a server.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Probe now; answered with the probe's outcome.
    Probe,
    /// Reset the breaker.
    ResetBreaker(ResetTo),
    /// Drop the server's cached results (one tool's, or all of them).
    InvalidateCache {
        /// Only this tool's.
        tool: Option<String>,
    },
    /// Stop probing and calling it.
    Disable,
    /// Start again.
    Enable,
}

impl Action {
    /// Every action name, in the order the page lists them.
    pub const NAMES: [&'static str; 5] = [
        "probe",
        "reset_breaker",
        "invalidate_cache",
        "disable",
        "enable",
    ];

    /// Wire name (the WebSocket message's `action`).
    pub const fn as_str(&self) -> &'static str {
        match self {
            Self::Probe => "probe",
            Self::ResetBreaker(_) => "reset_breaker",
            Self::InvalidateCache { .. } => "invalidate_cache",
            Self::Disable => "disable",
            Self::Enable => "enable",
        }
    }
}

/// A control request: an action on a named server.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    /// The server's configured name.
    pub server: String,
    /// What to do.
    pub action: Action,
}
