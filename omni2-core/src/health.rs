//! Health of one server from its probe results: consecutive thresholds, degraded when slow.
//!
//! Pure: takes `now` and a latency, never sleeps. The coordinator owns one per server.
//!
//! Recovery from `unhealthy` needs `healthy_after` successes spaced by at least
//! `min_spacing` (the probe interval): a probe brought forward (a tool-list change signal
//! after a reconnect, an operator's probe) may report a failure, but its success does not
//! count towards recovery.

use std::time::Duration;

use tokio::time::Instant;

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
    /// Answers probes, but its breaker was opened by failing tool calls: calls fast-fail
    /// until a tool-call trial succeeds (probes do not close it).
    ToolsFailing,
}

impl HealthState {
    /// Every state, for metrics.
    pub const ALL: [HealthState; 5] = [
        Self::Healthy,
        Self::Degraded,
        Self::Unhealthy,
        Self::Disabled,
        Self::ToolsFailing,
    ];

    /// Label used in JSON, events and metrics.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Healthy => "healthy",
            Self::Degraded => "degraded",
            Self::Unhealthy => "unhealthy",
            Self::Disabled => "disabled",
            Self::ToolsFailing => "tools_failing",
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
    /// Least time between two successes that both count towards `healthy_after`.
    pub min_spacing: Duration,
}

/// Consecutive-result tracking for one server.
#[derive(Clone, Debug)]
pub struct HealthTracker {
    policy: HealthPolicy,
    state: HealthState,
    successes: u32,
    /// When the last success that counted towards `successes` was recorded.
    last_counted: Option<Instant>,
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
            last_counted: None,
            failures: 0,
            is_first: true,
        }
    }

    /// Current state.
    pub fn state(&self) -> HealthState {
        self.state
    }

    /// Feeds a probe result (`Some(latency)` on success) that ended at `now`; returns the new
    /// state if it changed.
    pub fn record(&mut self, latency: Option<Duration>, now: Instant) -> Option<HealthState> {
        let before = self.state;
        let is_first = std::mem::replace(&mut self.is_first, false);
        match latency {
            Some(latency) => {
                self.failures = 0;
                let is_spaced = self.last_counted.is_none_or(|last| {
                    now.saturating_duration_since(last) >= self.policy.min_spacing
                });
                if is_spaced {
                    self.successes = self.successes.saturating_add(1);
                    self.last_counted = Some(now);
                }
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
                self.last_counted = None;
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

    const SPACING: Duration = Duration::from_secs(1);

    fn tracker() -> HealthTracker {
        HealthTracker::new(HealthPolicy {
            unhealthy_after: 3,
            healthy_after: 2,
            degraded_latency: Duration::from_millis(100),
            min_spacing: SPACING,
        })
    }

    /// Records results one probe interval apart.
    struct Clock(Instant);

    impl Clock {
        fn tick(&mut self) -> Instant {
            self.0 += SPACING;
            self.0
        }
    }

    const FAST: Option<Duration> = Some(Duration::from_millis(5));
    const SLOW: Option<Duration> = Some(Duration::from_millis(500));

    #[test]
    fn first_result_decides_then_thresholds_apply() {
        let mut t = tracker();
        let mut c = Clock(Instant::now());
        assert_eq!(t.record(FAST, c.tick()), Some(HealthState::Healthy));
        assert_eq!(t.record(None, c.tick()), None);
        assert_eq!(t.record(None, c.tick()), None);
        assert_eq!(t.record(None, c.tick()), Some(HealthState::Unhealthy));
        assert_eq!(t.record(FAST, c.tick()), None, "one success is not enough");
        assert_eq!(
            t.record(None, c.tick()),
            None,
            "a failure resets the success streak"
        );
        assert_eq!(t.record(FAST, c.tick()), None);
        assert_eq!(t.record(FAST, c.tick()), Some(HealthState::Healthy));
    }

    #[test]
    fn recovery_needs_successes_a_probe_interval_apart() {
        let mut t = tracker();
        let mut c = Clock(Instant::now());
        t.record(None, c.tick());
        let first = c.tick();
        assert_eq!(t.record(FAST, first), None);
        // An early probe right after: its success does not count.
        let early = first + Duration::from_millis(5);
        assert_eq!(t.record(FAST, early), None);
        assert_eq!(
            t.record(FAST, first + SPACING - Duration::from_millis(1)),
            None
        );
        assert_eq!(t.state(), HealthState::Unhealthy);
        assert_eq!(
            t.record(FAST, first + SPACING),
            Some(HealthState::Healthy),
            "the second spaced success recovers"
        );
    }

    #[test]
    fn slow_success_is_degraded_and_recovers() {
        let mut t = tracker();
        let mut c = Clock(Instant::now());
        assert_eq!(t.record(SLOW, c.tick()), Some(HealthState::Degraded));
        assert_eq!(t.record(SLOW, c.tick()), None);
        assert_eq!(t.record(FAST, c.tick()), Some(HealthState::Healthy));
        assert_eq!(t.record(SLOW, c.tick()), Some(HealthState::Degraded));
    }

    #[test]
    fn first_failure_keeps_unhealthy_without_waiting() {
        let mut t = tracker();
        assert_eq!(t.record(None, Instant::now()), None);
        assert_eq!(t.state(), HealthState::Unhealthy);
    }
}
