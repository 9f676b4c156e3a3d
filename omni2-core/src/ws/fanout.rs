//! Per-worker fan-out of coordinator events to that worker's status connections.
//!
//! An actix worker is one thread, and a connection stays on the worker that accepted it. So
//! each worker has one broadcast receiver and one task that hands every event straight to
//! each connection's outgoing channel, without waking the connection's own task: at 10 000
//! connections, that wake-up (and the `select!` it re-polls) was a fifth of the per-client
//! cost of a status change. The send never waits: a connection whose channel is full (it
//! stopped reading) or whose own task is mid-send misses the event; the miss is counted and
//! the connection's task is told to send a fresh snapshot.

use std::cell::{Cell, RefCell};
use std::collections::HashSet;
use std::rc::{Rc, Weak};
use std::sync::Arc;

use actix_ws::Session;
use futures_util::FutureExt;
use tokio::sync::Notify;
use tokio::sync::broadcast::{self, error::RecvError};

use crate::coordinator::{Event, EventKind};
use crate::shared::Shared;

/// Connections served between two yields of the fan-out task, so a status change to
/// thousands of clients does not hold the worker thread for the whole loop.
const CHUNK: usize = 64;

/// What one connection wants to receive. `None` = everything.
#[derive(Debug, Default)]
pub(super) struct Filter {
    pub servers: Option<HashSet<String>>,
    pub events: Option<HashSet<EventKind>>,
    /// `unsubscribe` without arguments: no deltas until the next `subscribe`.
    pub is_paused: bool,
}

impl Filter {
    fn accepts(&self, event: &Event) -> bool {
        !self.is_paused
            && self.events.as_ref().is_none_or(|e| e.contains(&event.kind))
            && match (&self.servers, &event.server) {
                (Some(set), Some(server)) => set.contains(&**server),
                _ => true,
            }
    }
}

/// What the fan-out and a connection's own task share. Single-threaded (`Cell`/`RefCell`):
/// both run on the connection's worker, and neither holds a borrow across an `.await`.
pub(super) struct Outbox {
    /// The fan-out's clone of the session (the connection task has its own).
    session: RefCell<Session>,
    /// The last `seq` sent.
    pub seq: Cell<u64>,
    pub filter: RefCell<Filter>,
    /// The connection's task is sending: its frame's `seq` is not final yet, so the fan-out
    /// must not send.
    pub is_busy: Cell<bool>,
    /// The connection's task is closing it: nothing more is sent, nothing is missed.
    pub is_closing: Cell<bool>,
    /// Deltas were missed: the connection owes its client a snapshot.
    pub needs_resync: Cell<bool>,
    /// Wakes the connection's task when `needs_resync` turns true.
    pub missed: Notify,
}

impl Outbox {
    /// Records a missed delta and tells the connection's task, once per episode.
    pub fn miss(&self, count: u64, shared: &Shared) {
        shared.metrics.ws_dropped.inc_by(count);
        if !self.needs_resync.replace(true) {
            self.missed.notify_one();
        }
    }

    /// Sends `event` now if the connection wants it and can take it; true if sent.
    fn offer(&self, event: &Event, shared: &Shared) -> bool {
        if self.is_closing.get() || !self.filter.borrow().accepts(event) {
            return false;
        }
        if self.is_busy.get() || self.needs_resync.get() {
            self.miss(1, shared);
            return false;
        }
        let text = format!("{{\"seq\":{},{}", self.seq.get() + 1, event.json_tail);
        // Ready at once unless the channel is full; never waits.
        match self.session.borrow_mut().text(text).now_or_never() {
            Some(Ok(())) => {
                self.seq.set(self.seq.get() + 1);
                true
            }
            // Closed: the connection's task sees its stream end and cleans up.
            Some(Err(_)) => false,
            None => {
                self.miss(1, shared);
                false
            }
        }
    }
}

/// One worker's connections and its fan-out task. Cheap to clone; mounted as app data by
/// [`crate::Omni2::configure`], which actix calls once per worker.
#[derive(Clone, Default)]
pub struct WorkerFanout(Rc<Connections>);

#[derive(Default)]
struct Connections {
    outboxes: RefCell<Vec<Weak<Outbox>>>,
    is_started: Cell<bool>,
}

impl std::fmt::Debug for WorkerFanout {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkerFanout")
            .field("connections", &self.0.outboxes.borrow().len())
            .finish()
    }
}

impl WorkerFanout {
    /// Registers a connection. Call before reading the snapshot it starts with: every event
    /// published after this call reaches it.
    pub(super) fn register(&self, session: Session, shared: &Arc<Shared>) -> Rc<Outbox> {
        if !self.0.is_started.replace(true) {
            // Subscribed here, synchronously, so nothing published from now on is missed.
            let events = shared.published.events.subscribe();
            actix_web::rt::spawn(supervise(Rc::downgrade(&self.0), events, shared.clone()));
        }
        let outbox = Rc::new(Outbox {
            session: RefCell::new(session),
            seq: Cell::new(0),
            filter: RefCell::new(Filter::default()),
            is_busy: Cell::new(false),
            is_closing: Cell::new(false),
            needs_resync: Cell::new(false),
            missed: Notify::new(),
        });
        self.0.outboxes.borrow_mut().push(Rc::downgrade(&outbox));
        outbox
    }
}

/// Restarts of one worker's fan-out after a panic before the process is declared failed.
const FANOUT_RESTARTS: u32 = 3;

/// Runs the worker's fan-out and restarts it if it panics: its state is only the list of
/// connections, which outlives it, so a restart loses nothing but the events in between,
/// and every connection is sent a fresh snapshot for those. After [`FANOUT_RESTARTS`]
/// restarts the fault is taken as permanent: the process is marked failed (`/health` 503).
async fn supervise(
    connections: Weak<Connections>,
    events: broadcast::Receiver<Arc<Event>>,
    shared: Arc<Shared>,
) {
    let start = |events| run(connections.clone(), events, shared.clone());
    let resync = || {
        for outbox in connections.upgrade().map(|c| c.live()).unwrap_or_default() {
            outbox.miss(1, &shared);
        }
    };
    restart_on_panic(start, resync, events, &shared).await;
}

/// Runs `start(events)` as a local task; after a panic (not at shutdown), subscribes anew,
/// calls `resync` and starts it again, at most [`FANOUT_RESTARTS`] times; then marks the
/// process failed.
async fn restart_on_panic<F, Fut>(
    mut start: F,
    resync: impl Fn(),
    mut events: broadcast::Receiver<Arc<Event>>,
    shared: &Shared,
) where
    F: FnMut(broadcast::Receiver<Arc<Event>>) -> Fut,
    Fut: Future<Output = ()> + 'static,
{
    for restart in 1.. {
        let ended = actix_web::rt::spawn(tokio::task::unconstrained(start(events))).await;
        if ended.is_ok() || *shared.shutdown.borrow() {
            return;
        }
        if restart > FANOUT_RESTARTS {
            break;
        }
        // Subscribed before the resync is asked for: nothing after it is missed.
        events = shared.published.events.subscribe();
        resync();
        tracing::error!(
            task = "ws_fanout",
            restart,
            of = FANOUT_RESTARTS,
            "A WebSocket fan-out task panicked; restarting it, its clients resync."
        );
    }
    tracing::error!(
        task = "ws_fanout",
        "A WebSocket fan-out task keeps panicking: /health now answers 503."
    );
    shared.tasks.fail("ws_fanout");
}

/// The worker's fan-out task: until shutdown, or until the worker's app is gone.
///
/// Runs `unconstrained`: tokio's cooperative budget would otherwise make the 129th channel
/// send of one poll report "full", which would read as a lagging client.
async fn run(
    connections: Weak<Connections>,
    mut events: broadcast::Receiver<Arc<Event>>,
    shared: Arc<Shared>,
) {
    let mut shutdown = shared.shutdown.subscribe();
    loop {
        let event = tokio::select! {
            _ = shutdown.wait_for(|stop| *stop) => return,
            event = events.recv() => event,
        };
        let Some(connections) = connections.upgrade() else {
            return;
        };
        match event {
            Ok(event) => connections.deliver(&event, &shared).await,
            // This worker fell behind the coordinator: every connection missed `n` events.
            Err(RecvError::Lagged(n)) => {
                for outbox in connections.live() {
                    outbox.miss(n, &shared);
                }
            }
            Err(RecvError::Closed) => return,
        }
    }
}

impl Connections {
    /// Live outboxes; forgets closed connections.
    fn live(&self) -> Vec<Rc<Outbox>> {
        let mut outboxes = self.outboxes.borrow_mut();
        outboxes.retain(|o| o.strong_count() > 0);
        outboxes.iter().filter_map(Weak::upgrade).collect()
    }

    async fn deliver(&self, event: &Event, shared: &Shared) {
        self.outboxes.borrow_mut().retain(|o| o.strong_count() > 0);
        // By index, without holding the borrow across the yields: connections registered
        // meanwhile are appended (and get this event after their snapshot, harmlessly).
        let (mut i, mut sent) = (0, 0);
        loop {
            // A statement of its own, so the borrow ends before the body (which may yield).
            let next = self.outboxes.borrow().get(i).map(Weak::upgrade);
            let Some(outbox) = next else { break };
            if let Some(outbox) = outbox {
                sent += u64::from(outbox.offer(event, shared));
            }
            i += 1;
            if i % CHUNK == 0 {
                shared.metrics.ws_messages.inc_by(std::mem::take(&mut sent));
                tokio::task::yield_now().await;
            }
        }
        shared.metrics.ws_messages.inc_by(sent);
    }
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;

    use super::*;
    use crate::Omni2;
    use crate::config::Config;

    fn omni2() -> Omni2 {
        let config = Config::embedded(&std::collections::BTreeMap::new()).expect("default");
        Omni2::with_clients(config, Vec::new())
    }

    #[actix_web::test]
    async fn a_panicking_fanout_is_restarted_then_declared_failed() {
        let o = omni2();
        let shared = o.shared().clone();
        let (starts, resyncs) = (Rc::new(Cell::new(0)), Cell::new(0));
        let counted = starts.clone();
        let start = move |_events| {
            counted.set(counted.get() + 1);
            async { panic!("injected fan-out failure") }
        };
        let events = shared.published.events.subscribe();
        let resync = || resyncs.set(resyncs.get() + 1);
        restart_on_panic(start, resync, events, &shared).await;
        assert_eq!(starts.get(), FANOUT_RESTARTS + 1);
        assert_eq!(resyncs.get(), FANOUT_RESTARTS);
        assert_eq!(shared.tasks.failed(), Some("ws_fanout"));
    }

    #[actix_web::test]
    async fn one_panic_is_a_restart_not_a_failure() {
        let o = omni2();
        let shared = o.shared().clone();
        let starts = Rc::new(Cell::new(0));
        let counted = starts.clone();
        let start = move |_events| {
            counted.set(counted.get() + 1);
            let is_first = counted.get() == 1;
            async move { assert!(!is_first, "injected fan-out failure") }
        };
        let events = shared.published.events.subscribe();
        restart_on_panic(start, || {}, events, &shared).await;
        assert_eq!(starts.get(), 2);
        assert_eq!(shared.tasks.failed(), None);
    }
}
