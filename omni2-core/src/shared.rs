//! The state every route and task shares, the health of the background tasks, and the
//! WebSocket connection count (here, not in `ws`, so that `ws` → `shared` is one-way).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::sync::watch;

use crate::audit::Audit;
use crate::cache::ToolCache;
use crate::config::Config;
use crate::coordinator::{Published, Registry};
use crate::identity::IdentityVerifier;
use crate::limits::Limits;
use crate::metrics::Metrics;

/// State shared by every route and task.
#[derive(Debug)]
pub struct Shared {
    /// The configuration in force.
    pub config: Config,
    /// Servers and their breakers.
    pub registry: Arc<Registry>,
    /// Snapshot and events from the coordinator.
    pub published: Published,
    /// Tool-result cache.
    pub cache: Arc<ToolCache>,
    /// Metrics.
    pub metrics: Metrics,
    /// WebSocket connection accounting.
    pub hub: Hub,
    /// Turns true on shutdown: WebSockets close with 1001, tasks stop.
    pub shutdown: watch::Sender<bool>,
    /// Whether a background task has died.
    pub tasks: TaskHealth,
    /// The audit trail (off unless `audit.sink` is set); control actions record themselves
    /// with [`Audit::control_action`].
    pub audit: Audit,
    pub(crate) verifier: Arc<IdentityVerifier>,
    /// Per-tool rate limits (REST and `/mcp` share them).
    pub(crate) limits: Limits,
}

/// The background task that died first, if any. Once set it stays set: `/health` answers
/// 503 from then on, and the `omni2` binary exits.
#[derive(Debug)]
pub struct TaskHealth(watch::Sender<Option<&'static str>>);

impl Default for TaskHealth {
    fn default() -> Self {
        Self(watch::channel(None).0)
    }
}

impl TaskHealth {
    /// Records that `task` died (the first one named stays).
    pub fn fail(&self, task: &'static str) {
        self.0.send_if_modified(|failed| {
            let is_first = failed.is_none();
            if is_first {
                *failed = Some(task);
            }
            is_first
        });
    }

    /// The task that died, if one did.
    pub fn failed(&self) -> Option<&'static str> {
        *self.0.borrow()
    }

    /// Waits until a task dies; returns its name.
    pub async fn wait_failed(&self) -> &'static str {
        let mut rx = self.0.subscribe();
        match rx.wait_for(Option::is_some).await {
            Ok(failed) => failed.unwrap_or("unknown"),
            // The sender lives in `self`, so this cannot end; never report a failure for it.
            Err(_) => std::future::pending().await,
        }
    }
}

/// Open-connection accounting, shared by all workers.
#[derive(Debug, Default)]
pub struct Hub {
    pub(crate) connections: AtomicUsize,
}

impl Hub {
    /// Open connections now.
    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::Relaxed)
    }
}
