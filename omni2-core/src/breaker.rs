//! Circuit breaker per server: a pure state machine, `closed → open → half_open → closed`.
//!
//! It takes `now` as an argument and never sleeps, so tests drive it with any clock. Probes
//! and tool calls both feed it: a call asks [`Breaker::admit`] first and reports with
//! [`Breaker::on_result`]; a probe reports with [`Breaker::on_probe`].
//!
//! Tool calls and probes are kept apart where they disagree. Tool-call outcomes fill the
//! failure window and streak; probe failures have their own streak. A breaker opened by tool
//! calls ([`Breaker::is_tripped_by_calls`]) is closed only by a tool-call trial: a server that
//! answers `ping` but fails its calls must not be closed by every successful probe.

use std::collections::VecDeque;
use std::time::Duration;

use serde::Serialize;
use tokio::time::Instant;

/// Breaker settings (see `examples/omni2.yaml`).
#[derive(Clone, Debug, PartialEq)]
pub struct BreakerConfig {
    /// Consecutive failures that open it (default 5).
    pub failure_threshold: u32,
    /// Failure share over the window that opens it (default 0.5; `None` = off).
    pub failure_rate: Option<f64>,
    /// Outcomes kept for the failure rate (default 20).
    pub window: usize,
    /// The rate applies once the window holds at least this many outcomes (default 10).
    pub min_calls: usize,
    /// First open period; doubles on each consecutive re-open (default 5 s).
    pub open_duration: Duration,
    /// Cap of the open period (default 60 s).
    pub max_open_duration: Duration,
    /// Trial calls admitted while half-open; all must succeed to close (default 1).
    pub half_open_trials: u32,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        Self {
            failure_threshold: 5,
            failure_rate: Some(0.5),
            window: 20,
            min_calls: 10,
            open_duration: Duration::from_secs(5),
            max_open_duration: Duration::from_secs(60),
            half_open_trials: 1,
        }
    }
}

/// The externally visible state.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CircuitState {
    /// Calls flow.
    Closed,
    /// Calls fast-fail until the open period ends.
    Open,
    /// A few trial calls decide between closed and open.
    HalfOpen,
}

impl CircuitState {
    /// Every state, for metrics.
    pub const ALL: [CircuitState; 3] = [Self::Closed, Self::Open, Self::HalfOpen];

    /// Label used in JSON, events and metrics.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Closed => "closed",
            Self::Open => "open",
            Self::HalfOpen => "half_open",
        }
    }
}

/// A state change, to publish as an event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Transition {
    /// State before.
    pub from: CircuitState,
    /// State after.
    pub to: CircuitState,
}

/// The answer to [`Breaker::admit`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Admission {
    /// Go ahead; report the outcome with `on_result`. Carries a transition when admitting
    /// moved the breaker from open to half-open.
    Allowed(Option<Transition>),
    /// Fast-fail; retry after this long.
    Rejected {
        /// Time until the breaker admits a trial.
        retry_after: Duration,
    },
}

#[derive(Clone, Copy, Debug)]
enum State {
    Closed,
    Open { until: Instant },
    HalfOpen { admitted: u32, succeeded: u32 },
}

/// One server's breaker.
#[derive(Debug)]
pub struct Breaker {
    config: BreakerConfig,
    state: State,
    consecutive_failures: u32,
    /// Consecutive probe failures (tool calls keep their own streak above).
    probe_failures: u32,
    /// Opened by tool-call failures: only a tool-call trial may close it, not a probe.
    tripped_by_calls: bool,
    /// Recent outcomes, `true` = failure.
    window: VecDeque<bool>,
    /// Consecutive opens without a close; drives the exponential backoff.
    opens: u32,
}

impl Breaker {
    /// A closed breaker.
    pub fn new(config: BreakerConfig) -> Self {
        Self {
            window: VecDeque::with_capacity(config.window),
            config,
            state: State::Closed,
            consecutive_failures: 0,
            probe_failures: 0,
            tripped_by_calls: false,
            opens: 0,
        }
    }

    /// Opened (or half-open) because tool calls failed while probes may still succeed: the
    /// next tool call after the open period is its trial.
    pub fn is_tripped_by_calls(&self) -> bool {
        self.tripped_by_calls && !matches!(self.state, State::Closed)
    }

    /// Records a probe (`ok` = no outage), which runs whatever the breaker says. Returns the
    /// transitions it caused, in order (open → half-open → closed at most).
    ///
    /// A probe is the half-open trial of a breaker that probes opened. A breaker opened by
    /// tool calls ignores successful probes; a failed probe means the whole server is down,
    /// so from then on probes decide again.
    pub fn on_probe(&mut self, ok: bool, now: Instant) -> Vec<Transition> {
        let mut out = Vec::new();
        if self.tripped_by_calls && !matches!(self.state, State::Closed) {
            if ok {
                return out;
            }
            self.tripped_by_calls = false;
        }
        match self.state {
            State::Closed => {
                if ok {
                    self.probe_failures = 0;
                } else {
                    self.probe_failures += 1;
                    if self.probe_failures >= self.config.failure_threshold {
                        out.push(self.open(CircuitState::Closed, now));
                    }
                }
            }
            _ => {
                if let Admission::Allowed(t) = self.admit(now) {
                    out.extend(t);
                    out.extend(self.record(ok, now, false));
                }
            }
        }
        out
    }

    /// Current state (an open breaker whose period ended still reads `open` until admitted).
    pub fn state(&self) -> CircuitState {
        match self.state {
            State::Closed => CircuitState::Closed,
            State::Open { .. } => CircuitState::Open,
            State::HalfOpen { .. } => CircuitState::HalfOpen,
        }
    }

    /// May a call go out now?
    pub fn admit(&mut self, now: Instant) -> Admission {
        match self.state {
            State::Closed => Admission::Allowed(None),
            State::Open { until } if now < until => Admission::Rejected {
                retry_after: until - now,
            },
            State::Open { .. } => {
                self.state = State::HalfOpen {
                    admitted: 1,
                    succeeded: 0,
                };
                Admission::Allowed(Some(Transition {
                    from: CircuitState::Open,
                    to: CircuitState::HalfOpen,
                }))
            }
            State::HalfOpen { admitted, .. } if admitted >= self.config.half_open_trials => {
                // Trials are out; the others wait for their verdict.
                Admission::Rejected {
                    retry_after: Duration::from_secs(1),
                }
            }
            State::HalfOpen {
                ref mut admitted, ..
            } => {
                *admitted += 1;
                Admission::Allowed(None)
            }
        }
    }

    /// Records the outcome of an admitted tool call.
    pub fn on_result(&mut self, ok: bool, now: Instant) -> Option<Transition> {
        self.record(ok, now, true)
    }

    fn record(&mut self, ok: bool, now: Instant, is_call: bool) -> Option<Transition> {
        match self.state {
            State::Closed => {
                if self.window.len() == self.config.window {
                    self.window.pop_front();
                }
                self.window.push_back(!ok);
                if ok {
                    self.consecutive_failures = 0;
                    return None;
                }
                self.consecutive_failures += 1;
                if self.consecutive_failures >= self.config.failure_threshold
                    || self.rate_exceeded()
                {
                    self.tripped_by_calls = is_call;
                    return Some(self.open(CircuitState::Closed, now));
                }
                None
            }
            // A late result from before the breaker opened: ignore it.
            State::Open { .. } => None,
            State::HalfOpen {
                ref mut succeeded, ..
            } => {
                if !ok {
                    self.tripped_by_calls = is_call;
                    return Some(self.open(CircuitState::HalfOpen, now));
                }
                *succeeded += 1;
                if *succeeded >= self.config.half_open_trials {
                    self.state = State::Closed;
                    self.opens = 0;
                    self.consecutive_failures = 0;
                    self.probe_failures = 0;
                    self.tripped_by_calls = false;
                    self.window.clear();
                    return Some(Transition {
                        from: CircuitState::HalfOpen,
                        to: CircuitState::Closed,
                    });
                }
                None
            }
        }
    }

    /// An admitted call ended without an outcome (its caller went away): frees its
    /// half-open trial slot so the breaker cannot stay half-open forever.
    pub fn abandon(&mut self) {
        if let State::HalfOpen { admitted, .. } = &mut self.state {
            *admitted = admitted.saturating_sub(1);
        }
    }

    /// An operator's reset: `Closed` clears the failure counts and the backoff; `HalfOpen`
    /// lets the next trials decide. `Open` is not a reset target and changes nothing.
    /// `None` when the breaker is already there (a half-open reset still restarts its trials).
    pub fn force(&mut self, to: CircuitState) -> Option<Transition> {
        let from = self.state();
        if to != CircuitState::Open {
            // The operator's reset lets probes decide again.
            self.tripped_by_calls = false;
        }
        match to {
            CircuitState::Closed => {
                self.state = State::Closed;
                self.opens = 0;
                self.consecutive_failures = 0;
                self.probe_failures = 0;
                self.window.clear();
            }
            CircuitState::HalfOpen => {
                self.state = State::HalfOpen {
                    admitted: 0,
                    succeeded: 0,
                };
            }
            CircuitState::Open => return None,
        }
        (from != to).then_some(Transition { from, to })
    }

    fn rate_exceeded(&self) -> bool {
        let Some(rate) = self.config.failure_rate else {
            return false;
        };
        let n = self.window.len();
        if n < self.config.min_calls {
            return false;
        }
        let failures = self.window.iter().filter(|f| **f).count();
        failures as f64 / n as f64 >= rate
    }

    fn open(&mut self, from: CircuitState, now: Instant) -> Transition {
        // Exponential backoff: open_duration * 2^opens, capped.
        let factor = 1u32 << self.opens.min(16);
        let period = self
            .config
            .open_duration
            .saturating_mul(factor)
            .min(self.config.max_open_duration);
        self.opens = self.opens.saturating_add(1);
        self.state = State::Open {
            until: now + period,
        };
        Transition {
            from,
            to: CircuitState::Open,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> BreakerConfig {
        BreakerConfig {
            failure_threshold: 3,
            failure_rate: None,
            window: 10,
            min_calls: 4,
            open_duration: Duration::from_secs(5),
            max_open_duration: Duration::from_secs(12),
            half_open_trials: 2,
        }
    }

    fn fail(b: &mut Breaker, now: Instant) -> Option<Transition> {
        assert!(matches!(b.admit(now), Admission::Allowed(_)));
        b.on_result(false, now)
    }

    #[test]
    fn force_closes_or_half_opens_and_reports_only_real_moves() {
        let t0 = Instant::now();
        let mut b = Breaker::new(config());
        assert_eq!(b.force(CircuitState::Closed), None, "already closed");
        for _ in 0..3 {
            fail(&mut b, t0);
        }
        assert_eq!(b.state(), CircuitState::Open);
        let t = b.force(CircuitState::Closed).expect("moves");
        assert_eq!((t.from, t.to), (CircuitState::Open, CircuitState::Closed));
        assert_eq!(b.admit(t0), Admission::Allowed(None), "calls flow at once");
        // The failure streak was cleared: two more failures do not reopen it.
        assert_eq!(fail(&mut b, t0), None);
        assert_eq!(fail(&mut b, t0), None);

        let t = b.force(CircuitState::HalfOpen).expect("moves");
        assert_eq!(
            (t.from, t.to),
            (CircuitState::Closed, CircuitState::HalfOpen)
        );
        // Trials decide: two successes (half_open_trials = 2) close it.
        for _ in 0..2 {
            assert!(matches!(b.admit(t0), Admission::Allowed(None)));
        }
        assert!(
            matches!(b.admit(t0), Admission::Rejected { .. }),
            "trials are out"
        );
        assert_eq!(b.on_result(true, t0), None);
        assert_eq!(
            b.on_result(true, t0).map(|t| t.to),
            Some(CircuitState::Closed)
        );
        assert_eq!(
            b.force(CircuitState::Open),
            None,
            "open is not a reset target"
        );
        assert_eq!(b.state(), CircuitState::Closed);
    }

    #[test]
    fn opens_after_consecutive_failures_and_fast_fails() {
        let t0 = Instant::now();
        let mut b = Breaker::new(config());
        assert_eq!(fail(&mut b, t0), None);
        assert_eq!(b.on_result(true, t0), None, "a success resets the streak");
        assert_eq!(fail(&mut b, t0), None);
        assert_eq!(fail(&mut b, t0), None);
        let t = fail(&mut b, t0).expect("opens");
        assert_eq!((t.from, t.to), (CircuitState::Closed, CircuitState::Open));
        assert_eq!(
            b.admit(t0 + Duration::from_secs(2)),
            Admission::Rejected {
                retry_after: Duration::from_secs(3)
            }
        );
    }

    #[test]
    fn half_open_admits_k_trials_then_closes() {
        let t0 = Instant::now();
        let mut b = Breaker::new(config());
        for _ in 0..3 {
            fail(&mut b, t0);
        }
        let t1 = t0 + Duration::from_secs(5);
        assert_eq!(
            b.admit(t1),
            Admission::Allowed(Some(Transition {
                from: CircuitState::Open,
                to: CircuitState::HalfOpen
            }))
        );
        assert_eq!(b.admit(t1), Admission::Allowed(None));
        assert!(
            matches!(b.admit(t1), Admission::Rejected { .. }),
            "only 2 trials"
        );
        assert_eq!(b.on_result(true, t1), None);
        assert_eq!(
            b.on_result(true, t1).map(|t| t.to),
            Some(CircuitState::Closed)
        );
        assert_eq!(b.state(), CircuitState::Closed);
    }

    #[test]
    fn reopen_backs_off_exponentially_with_cap() {
        let mut now = Instant::now();
        let mut b = Breaker::new(config());
        for _ in 0..3 {
            fail(&mut b, now);
        }
        // 5 s, then 10 s, then capped at 12 s.
        for expected in [5, 10, 12, 12] {
            assert_eq!(
                b.admit(now),
                Admission::Rejected {
                    retry_after: Duration::from_secs(expected)
                }
            );
            now += Duration::from_secs(expected);
            assert!(matches!(b.admit(now), Admission::Allowed(Some(_))));
            assert_eq!(
                b.on_result(false, now).map(|t| t.to),
                Some(CircuitState::Open)
            );
        }
    }

    #[test]
    fn opens_on_failure_rate_over_window() {
        let now = Instant::now();
        let mut b = Breaker::new(BreakerConfig {
            failure_threshold: 100,
            failure_rate: Some(0.5),
            ..config()
        });
        // Alternating: never 2 failures in a row, but 50% over >= min_calls.
        assert_eq!(fail(&mut b, now), None);
        assert_eq!(b.on_result(true, now), None);
        assert_eq!(fail(&mut b, now), None);
        assert_eq!(b.on_result(true, now), None);
        assert_eq!(fail(&mut b, now).map(|t| t.to), Some(CircuitState::Open));
    }

    #[test]
    fn successful_probes_never_close_a_breaker_tool_calls_opened() {
        let t0 = Instant::now();
        let mut b = Breaker::new(config());
        for _ in 0..3 {
            fail(&mut b, t0);
        }
        assert!(b.is_tripped_by_calls());
        let t1 = t0 + Duration::from_secs(6);
        // Probes keep succeeding, after the open period too: no trial, no move.
        assert!(b.on_probe(true, t0).is_empty());
        assert!(b.on_probe(true, t1).is_empty());
        assert_eq!(b.state(), CircuitState::Open);
        assert!(b.is_tripped_by_calls());
        // The next tool call is the trial; failing, it reopens with backoff.
        assert!(matches!(b.admit(t1), Admission::Allowed(Some(_))));
        assert_eq!(
            b.on_result(false, t1).map(|t| t.to),
            Some(CircuitState::Open)
        );
        assert_eq!(
            b.admit(t1),
            Admission::Rejected {
                retry_after: Duration::from_secs(10)
            }
        );
        // A succeeding call trial (two of them: half_open_trials = 2) closes it.
        let t2 = t1 + Duration::from_secs(10);
        assert!(matches!(b.admit(t2), Admission::Allowed(Some(_))));
        assert!(matches!(b.admit(t2), Admission::Allowed(None)));
        assert_eq!(b.on_result(true, t2), None);
        assert_eq!(
            b.on_result(true, t2).map(|t| t.to),
            Some(CircuitState::Closed)
        );
        assert!(!b.is_tripped_by_calls());
    }

    #[test]
    fn probes_decide_a_breaker_they_opened_or_once_they_fail() {
        let t0 = Instant::now();
        let mut b = Breaker::new(BreakerConfig {
            half_open_trials: 1,
            ..config()
        });
        // Probe successes do not reset the tool-call streak, nor the other way round.
        fail(&mut b, t0);
        assert!(b.on_probe(true, t0).is_empty());
        fail(&mut b, t0);
        assert!(b.on_probe(false, t0).is_empty());
        assert_eq!(fail(&mut b, t0).map(|t| t.to), Some(CircuitState::Open));
        // Tripped by calls, then the server stops answering probes: probes decide again.
        assert!(b.on_probe(false, t0).is_empty(), "still in its open period");
        assert!(!b.is_tripped_by_calls());
        let t1 = t0 + Duration::from_secs(5);
        let moves: Vec<_> = b.on_probe(true, t1).iter().map(|t| t.to).collect();
        assert_eq!(moves, [CircuitState::HalfOpen, CircuitState::Closed]);
        // Three failed probes in a row open it; a success in between resets their streak.
        b.on_probe(false, t1);
        b.on_probe(false, t1);
        assert!(b.on_probe(true, t1).is_empty());
        b.on_probe(false, t1);
        b.on_probe(false, t1);
        let moves: Vec<_> = b.on_probe(false, t1).iter().map(|t| t.to).collect();
        assert_eq!(moves, [CircuitState::Open]);
        assert!(!b.is_tripped_by_calls());
    }

    #[test]
    fn late_results_while_open_are_ignored() {
        let now = Instant::now();
        let mut b = Breaker::new(config());
        for _ in 0..3 {
            fail(&mut b, now);
        }
        assert_eq!(b.on_result(true, now), None);
        assert_eq!(b.state(), CircuitState::Open);
    }
}
