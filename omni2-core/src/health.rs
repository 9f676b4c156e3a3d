//! Health of one server from its probe results: consecutive thresholds, degraded when slow.
//!
//! Pure: takes `now` and a latency, never sleeps. The coordinator owns one per server.

use std::time::Duration;

use serde::Serialize;

/// A server's health.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum HealthState {
    /// Answers, fast enough.
    Healthy,
    /// Answers, but slower than `degraded_latency`.
    Degraded,
    /// Failed `unhealthy_after` probes in a row (or not probed successfully yet).
    Unhealthy,
    /// Disabled in config: never probed or called.
    Disabled,
}

impl HealthState {
    /// Every state, for metrics.
    pub const ALL: [HealthState; 4] = [
        Self::Healthy,
        Self::Degraded,
        Self::Unhealthy,
        Self::Disabled,
    ];

    /// Label used in JSON, events and metrics.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Healthy => "healthy",
            Self::Degraded => "degraded",
            Self::Unhealthy => "unhealthy",
            Self::Disabled => "disabled",
        }
    }

    /// Serves requests (healthy or degraded).
    pub const fn is_up(self) -> bool {
        matches!(self, Self::Healthy | Self::Degraded)
    }
}

/// Thresholds for one server.
#[derive(Clone, Copy, Debug)]
pub struct HealthPolicy {
    /// Consecutive failures before `unhealthy`.
    pub unhealthy_after: u32,
    /// Consecutive successes before leaving `unhealthy`.
    pub healthy_after: u32,
    /// A success slower than this is `degraded`.
    pub degraded_latency: Duration,
}

/// Consecutive-result tracking for one server.
#[derive(Clone, Debug)]
pub struct HealthTracker {
    policy: HealthPolicy,
    state: HealthState,
    successes: u32,
    failures: u32,
    /// The first result decides at once: no reason to call a fresh server unhealthy for
    /// `healthy_after` probes.
    is_first: bool,
}

impl HealthTracker {
    /// Starts `unhealthy` (not yet probed).
    pub fn new(policy: HealthPolicy) -> Self {
        Self {
            policy,
            state: HealthState::Unhealthy,
            successes: 0,
            failures: 0,
            is_first: true,
        }
    }

    /// Current state.
    pub fn state(&self) -> HealthState {
        self.state
    }

    /// Feeds a probe result (`Some(latency)` on success); returns the new state if it changed.
    pub fn record(&mut self, latency: Option<Duration>) -> Option<HealthState> {
        let before = self.state;
        let is_first = std::mem::replace(&mut self.is_first, false);
        match latency {
            Some(latency) => {
                self.failures = 0;
                self.successes = self.successes.saturating_add(1);
                let up = if latency > self.policy.degraded_latency {
                    HealthState::Degraded
                } else {
                    HealthState::Healthy
                };
                if self.state.is_up() || is_first || self.successes >= self.policy.healthy_after {
                    self.state = up;
                }
            }
            None => {
                self.successes = 0;
                self.failures = self.failures.saturating_add(1);
                if is_first || self.failures >= self.policy.unhealthy_after {
                    self.state = HealthState::Unhealthy;
                }
            }
        }
        (self.state != before).then_some(self.state)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tracker() -> HealthTracker {
        HealthTracker::new(HealthPolicy {
            unhealthy_after: 3,
            healthy_after: 2,
            degraded_latency: Duration::from_millis(100),
        })
    }

    const FAST: Option<Duration> = Some(Duration::from_millis(5));
    const SLOW: Option<Duration> = Some(Duration::from_millis(500));

    #[test]
    fn first_result_decides_then_thresholds_apply() {
        let mut t = tracker();
        assert_eq!(t.record(FAST), Some(HealthState::Healthy));
        assert_eq!(t.record(None), None);
        assert_eq!(t.record(None), None);
        assert_eq!(t.record(None), Some(HealthState::Unhealthy));
        assert_eq!(t.record(FAST), None, "one success is not enough");
        assert_eq!(t.record(None), None, "a failure resets the success streak");
        assert_eq!(t.record(FAST), None);
        assert_eq!(t.record(FAST), Some(HealthState::Healthy));
    }

    #[test]
    fn slow_success_is_degraded_and_recovers() {
        let mut t = tracker();
        assert_eq!(t.record(SLOW), Some(HealthState::Degraded));
        assert_eq!(t.record(SLOW), None);
        assert_eq!(t.record(FAST), Some(HealthState::Healthy));
        assert_eq!(t.record(SLOW), Some(HealthState::Degraded));
    }

    #[test]
    fn first_failure_keeps_unhealthy_without_waiting() {
        let mut t = tracker();
        assert_eq!(t.record(None), None);
        assert_eq!(t.state(), HealthState::Unhealthy);
    }
}
