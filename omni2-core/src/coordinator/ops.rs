//! Operator actions on one server that only the coordinator task may carry out (it is the
//! only writer of server state): what is asked, and what it answers.

use crate::breaker::CircuitState;
use crate::health::HealthState;

/// An operator's request about one server.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ServerOp {
    /// Probe now (and publish the outcome as a `server_status` event even if nothing
    /// changed); answered when the probe has finished.
    Probe,
    /// Force the breaker to `Closed` or `HalfOpen`.
    ResetBreaker(CircuitState),
    /// `false`: stop probing and calling the server; `true`: start again from "not probed".
    SetEnabled(bool),
}

/// What an operator action did.
#[derive(Clone, Debug, PartialEq)]
pub enum OpOutcome {
    /// A probe ran; the server's status after it.
    Probed {
        /// Health state after the probe.
        state: HealthState,
        /// Breaker state after the probe.
        circuit: CircuitState,
        /// Latency of the last successful probe, milliseconds.
        latency_ms: Option<f64>,
        /// The probe's error text, if it failed.
        last_error: Option<String>,
    },
    /// The breaker was reset (`from == to`: it was already there).
    Breaker {
        /// State before.
        from: CircuitState,
        /// State after.
        to: CircuitState,
    },
    /// Enabled or disabled (`changed: false`: it already was).
    Enabled {
        /// Whether anything changed.
        changed: bool,
        /// Health state now.
        state: HealthState,
    },
}

/// Why an operator action did not run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OpError {
    /// The server is disabled: it is not probed.
    Disabled,
    /// The coordinator is gone (shutdown) or did not answer in time.
    Unavailable,
}
