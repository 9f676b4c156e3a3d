//! Background tasks that cannot die silently.
//!
//! [`supervise`] runs a task that should run forever. When it ends anyhow (an error, a
//! panic, or a plain return) the task is marked down in its [`TaskHealth`] — which
//! `/readyz` reports as not ready — and restarted after a growing delay, at most
//! [`Restart::max_restarts`] times; past that, `supervise` returns the last failure and
//! the caller decides (the config watcher ends the process; see `app::run`).

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Which supervised tasks are down, and why. Cheap to share; read by `/readyz`.
#[derive(Debug, Default)]
pub struct TaskHealth {
    down: Mutex<BTreeMap<&'static str, String>>,
}

impl TaskHealth {
    /// `(task, why)` for every task that is down now.
    pub fn down(&self) -> Vec<(&'static str, String)> {
        self.lock()
            .iter()
            .map(|(name, why)| (*name, why.clone()))
            .collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<&'static str, String>> {
        // The map stays consistent under a panic elsewhere: every update is one call.
        self.down.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn mark_down(&self, name: &'static str, why: String) {
        self.lock().insert(name, why);
    }

    fn mark_up(&self, name: &'static str) {
        self.lock().remove(name);
    }
}

/// How often and how soon a dead task is restarted.
#[derive(Clone, Copy, Debug)]
pub struct Restart {
    pub max_restarts: u32,
    /// Delay before the first restart; doubled each time, capped at `max_delay`.
    pub first_delay: Duration,
    pub max_delay: Duration,
}

impl Restart {
    /// The policy of the sidecar's background tasks.
    pub const DEFAULT: Restart = Restart {
        max_restarts: 5,
        first_delay: Duration::from_millis(500),
        max_delay: Duration::from_secs(30),
    };

    fn delay(&self, restart: u32) -> Duration {
        self.first_delay
            .saturating_mul(1 << restart.min(16))
            .min(self.max_delay)
    }
}

/// Runs `start()` as a task, restarting it when it ends, per `policy`; returns why it died
/// the last time once the restarts are used up. Dropping the returned future aborts the
/// task. Needs a tokio runtime.
pub async fn supervise<F, Fut>(
    name: &'static str,
    health: Arc<TaskHealth>,
    policy: Restart,
    mut start: F,
) -> String
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<(), String>> + Send + 'static,
{
    let mut restarts = 0;
    loop {
        // A JoinSet aborts its task when dropped, so dropping `supervise` stops it too.
        let mut task = tokio::task::JoinSet::new();
        task.spawn(start());
        let why = match task.join_next().await {
            Some(Ok(Ok(()))) => "the task returned".to_owned(),
            Some(Ok(Err(e))) => e,
            Some(Err(e)) if e.is_panic() => "the task panicked".to_owned(),
            Some(Err(e)) => format!("the task stopped: {e}"),
            None => "the task was not started".to_owned(),
        };
        health.mark_down(name, why.clone());
        if restarts >= policy.max_restarts {
            tracing::error!(task = name, reason = %why, restarts, "Background task died; no restarts left.");
            return why;
        }
        let delay = policy.delay(restarts);
        tracing::error!(task = name, reason = %why, ?delay, "Background task died; restarting.");
        tokio::time::sleep(delay).await;
        restarts += 1;
        health.mark_up(name);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;

    const QUICK: Restart = Restart {
        max_restarts: 2,
        first_delay: Duration::from_secs(1),
        max_delay: Duration::from_secs(4),
    };

    #[tokio::test(start_paused = true)]
    async fn a_panicking_task_is_marked_down_restarted_then_given_up() {
        let health = Arc::new(TaskHealth::default());
        let starts = Arc::new(AtomicU32::new(0));
        let counter = starts.clone();
        let why = supervise("flaky", health.clone(), QUICK, move || {
            let n = counter.fetch_add(1, Ordering::SeqCst);
            async move {
                if n < 2 {
                    panic!("injected");
                }
                Err("gave up".to_owned())
            }
        })
        .await;
        assert_eq!(why, "gave up");
        assert_eq!(
            starts.load(Ordering::SeqCst),
            3,
            "first run and two restarts"
        );
        assert_eq!(health.down(), [("flaky", "gave up".to_owned())]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_restarted_task_is_up_again() {
        let health = Arc::new(TaskHealth::default());
        let starts = Arc::new(AtomicU32::new(0));
        let counter = starts.clone();
        let running = tokio::spawn(supervise("once", health.clone(), QUICK, move || {
            let n = counter.fetch_add(1, Ordering::SeqCst);
            async move {
                if n == 0 {
                    return Err("first run fails".to_owned());
                }
                std::future::pending().await
            }
        }));
        // Paused time: each sleep returns as soon as the runtime is idle.
        for _ in 0..100 {
            if starts.load(Ordering::SeqCst) == 1 && !health.down().is_empty() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(health.down(), [("once", "first run fails".to_owned())]);
        for _ in 0..1000 {
            if starts.load(Ordering::SeqCst) == 2 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(starts.load(Ordering::SeqCst), 2);
        assert!(health.down().is_empty(), "{:?}", health.down());
        running.abort();
    }

    #[test]
    fn delays_double_up_to_the_cap() {
        let d: Vec<u64> = (0..5).map(|r| QUICK.delay(r).as_secs()).collect();
        assert_eq!(d, [1, 2, 4, 4, 4]);
    }
}
