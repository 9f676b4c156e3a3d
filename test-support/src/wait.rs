//! Polling a condition until a deadline: the one `eventually` of the workspace.
//!
//! Tests never assert on elapsed time; they wait for an outcome, bounded. The bound is
//! scaled by `TEST_PATIENCE` (a factor, default 1) for slow or loaded machines.

use std::fmt::Display;
use std::future::Future;
use std::time::{Duration, Instant};

/// How often a probe is retried.
const POLL: Duration = Duration::from_millis(20);

/// The environment variable that scales every deadline (e.g. `TEST_PATIENCE=3`).
pub const PATIENCE_VAR: &str = "TEST_PATIENCE";

/// `deadline` times the `TEST_PATIENCE` factor. A value that is not a positive number is
/// refused (panics naming the variable) rather than silently ignored.
pub fn patience(deadline: Duration) -> Duration {
    match std::env::var(PATIENCE_VAR) {
        Err(_) => deadline,
        Ok(raw) => match raw.trim().parse::<f64>() {
            Ok(f) if f.is_finite() && f > 0.0 && f <= 100.0 => deadline.mul_f64(f),
            _ => panic!("{PATIENCE_VAR}={raw:?}: expected a factor in (0, 100], e.g. 2.5"),
        },
    }
}

/// What a probe returns: done with a value, or not yet (with why, for the failure message).
pub trait Probe {
    type Value;
    fn into_outcome(self) -> Result<Self::Value, String>;
}

impl Probe for bool {
    type Value = ();
    fn into_outcome(self) -> Result<(), String> {
        if self {
            Ok(())
        } else {
            Err("still false".into())
        }
    }
}

impl<T> Probe for Option<T> {
    type Value = T;
    fn into_outcome(self) -> Result<T, String> {
        self.ok_or_else(|| "still None".into())
    }
}

impl<T, E: Display> Probe for Result<T, E> {
    type Value = T;
    fn into_outcome(self) -> Result<T, String> {
        self.map_err(|e| e.to_string())
    }
}

/// The number of tries that fit in `deadline` (plus the first), so the loop is bounded in
/// count as well as in time.
fn max_tries(deadline: Duration) -> u128 {
    deadline.as_millis() / POLL.as_millis() + 2
}

#[track_caller]
fn give_up(what: &str, deadline: Duration, last: &str) -> ! {
    panic!("timed out after {deadline:?} waiting for {what}; last probe: {last}")
}

/// Polls `probe` every 20 ms until it is done (`true`, `Some`, `Ok`), and returns its value;
/// panics naming `what` and the last probe's answer after `patience(deadline)`.
pub async fn eventually<P, F, Fut>(what: &str, deadline: Duration, mut probe: F) -> P::Value
where
    P: Probe,
    F: FnMut() -> Fut,
    Fut: Future<Output = P>,
{
    let deadline = patience(deadline);
    let until = Instant::now() + deadline;
    let mut last = String::from("never probed");
    for _ in 0..max_tries(deadline) {
        match probe().await.into_outcome() {
            Ok(v) => return v,
            Err(e) => last = e,
        }
        if Instant::now() >= until {
            break;
        }
        tokio::time::sleep(POLL).await;
    }
    give_up(what, deadline, &last)
}

/// [`eventually`] for plain threads and `#[test]`s without a runtime.
#[track_caller]
pub fn eventually_blocking<P: Probe>(
    what: &str,
    deadline: Duration,
    probe: impl FnMut() -> P,
) -> P::Value {
    let deadline = patience(deadline);
    match poll_blocking(deadline, probe) {
        Ok(v) => v,
        Err(last) => give_up(what, deadline, &last),
    }
}

/// Polls `probe` until it is done or `deadline` (not scaled) passes; `Err` with the last
/// answer then. For clean-up paths that must not panic.
pub fn poll_blocking<P: Probe>(
    deadline: Duration,
    mut probe: impl FnMut() -> P,
) -> Result<P::Value, String> {
    let until = Instant::now() + deadline;
    let mut last = String::from("never probed");
    for _ in 0..max_tries(deadline) {
        match probe().into_outcome() {
            Ok(v) => return Ok(v),
            Err(e) => last = e,
        }
        if Instant::now() >= until {
            break;
        }
        pause();
    }
    Err(last)
}

/// The workspace's one blocking sleep (clippy.toml forbids `std::thread::sleep` elsewhere).
#[expect(
    clippy::disallowed_methods,
    reason = "the bounded poll of eventually_blocking; tests call it, never sleep themselves"
)]
fn pause() {
    std::thread::sleep(POLL);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn returns_the_first_ready_value() {
        let mut n = 0;
        let got = eventually_blocking("n to reach 3", Duration::from_secs(5), || {
            n += 1;
            (n >= 3).then_some(n)
        });
        assert_eq!(got, 3);
    }

    #[test]
    #[should_panic(expected = "waiting for the impossible; last probe: nope")]
    fn names_what_was_awaited_and_the_last_answer() {
        eventually_blocking("the impossible", Duration::from_millis(60), || {
            Err::<(), _>("nope")
        });
    }

    #[tokio::test]
    async fn async_probe_of_a_bool() {
        let mut n = 0;
        eventually("n to reach 2", Duration::from_secs(5), || {
            n += 1;
            let done = n >= 2;
            async move { done }
        })
        .await;
        assert_eq!(n, 2);
    }

    #[test]
    fn tries_are_bounded_in_count() {
        assert_eq!(max_tries(Duration::ZERO), 2);
        assert_eq!(max_tries(Duration::from_millis(100)), 7);
    }
}
