//! The vocabulary of control requests and the hook every control attempt is reported to
//! (the audit trail plugs in here). Below `shared`, which holds the hook, and `control`,
//! which calls it.

use std::fmt::Debug;
use std::time::Duration;

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

/// One control attempt, as the audit trail records it.
#[derive(Debug)]
pub struct ControlEvent<'a> {
    /// Who asked (`X-User-Id`).
    pub user: &'a str,
    /// Their roles.
    pub roles: &'a [String],
    /// The request.
    pub request: &'a Request,
    /// `ok`, or the error code (`role_denied`, `unknown_server`, ...).
    pub outcome: &'static str,
    /// From the request to its answer.
    pub latency: Duration,
}

/// Receives every control attempt (the audit trail's hook). Must not block: it runs on
/// the request's task.
pub trait ControlRecorder: Send + Sync + Debug {
    /// Called once per attempt, after it was decided and carried out.
    fn record_control(&self, event: &ControlEvent<'_>);
}

/// The default recorder: records nothing (the log line in [`crate::control::execute`] still
/// goes out).
#[derive(Debug, Default)]
pub struct NoRecorder;

impl ControlRecorder for NoRecorder {
    fn record_control(&self, _event: &ControlEvent<'_>) {}
}
