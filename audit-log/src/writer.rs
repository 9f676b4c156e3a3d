//! The queue and its one writer thread.
//!
//! A plain OS thread, not a runtime task: the file writes block (a full pipe, a FIFO
//! nobody reads, a slow disk), and they must block only the writer. The thread never
//! ends while the process runs: a sink error or panic is counted, reported once per
//! episode, and the sink reopened (at most once a second); a panic outside the sink
//! restarts the loop.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use prometheus::{IntCounter, IntCounterVec, Opts, Registry};
use serde::Serialize;

use crate::config::{AuditSettings, SinkSettings};
use crate::sink::{self, BUFFER_BYTES, Sink};

/// A broken sink is reopened at most this often.
const REOPEN_EVERY: Duration = Duration::from_secs(1);
/// Once woken by a line, the writer lets more gather this long before each write: one
/// wake-up and one write per batch instead of per line (a context switch and a syscall per
/// request were most of what auditing every allow cost). The queue holds the lines meanwhile.
const LINGER: Duration = Duration::from_millis(2);
/// Room for a typical event, so building one is a single allocation.
const LINE_CAPACITY: usize = 320;

/// `<prefix>_audit_events_total{result="written"|"failed"}` and
/// `<prefix>_audit_dropped_total`.
#[derive(Clone, Debug)]
pub struct AuditCounters {
    events: IntCounterVec,
    written: IntCounter,
    failed: IntCounter,
    dropped: IntCounter,
}

impl AuditCounters {
    /// Counters named after `prefix` (`auth_sidecar`, `omni2`), both results at 0.
    pub fn new(prefix: &str) -> Self {
        let events = IntCounterVec::new(
            Opts::new(
                format!("{prefix}_audit_events_total"),
                "Audit events the writer settled, by result (written to the sink, or failed).",
            ),
            &["result"],
        )
        .expect("static metric definition");
        let dropped = IntCounter::new(
            format!("{prefix}_audit_dropped_total"),
            "Audit events dropped because the audit queue was full.",
        )
        .expect("static metric definition");
        AuditCounters {
            written: events.with_label_values(&["written"]),
            failed: events.with_label_values(&["failed"]),
            events,
            dropped,
        }
    }

    /// Registers both families in `registry`.
    pub fn register(&self, registry: &Registry) -> prometheus::Result<()> {
        registry.register(Box::new(self.events.clone()))?;
        registry.register(Box::new(self.dropped.clone()))
    }

    pub fn written(&self) -> u64 {
        self.written.get()
    }

    pub fn failed(&self) -> u64 {
        self.failed.get()
    }

    pub fn dropped(&self) -> u64 {
        self.dropped.get()
    }
}

/// An event the writer thread serialises: the request path only moves its fields into it
/// (no JSON, no timestamp formatting), which keeps auditing off the request's CPU budget.
pub trait DeferredEvent: Send + 'static {
    /// Writes the event as one JSON object, without the newline.
    fn write_json(&self, out: &mut Vec<u8>) -> serde_json::Result<()>;
}

/// What the queue carries: a finished line, or an event still to serialise.
enum Item {
    Line(Vec<u8>),
    Deferred(Box<dyn DeferredEvent>),
}

/// The audit trail: off, or a queue into a running writer. Cheap to share behind an `Arc`.
#[derive(Debug)]
pub struct AuditLog {
    queue: Option<SyncSender<Item>>,
    settings: Option<AuditSettings>,
    counters: AuditCounters,
    /// Why the sink is failing now, if it is.
    sink_error: Arc<Mutex<Option<String>>>,
}

impl AuditLog {
    /// Audit off: [`AuditLog::is_on`] is false and nothing is ever written.
    pub fn off(counters: AuditCounters) -> Self {
        AuditLog {
            queue: None,
            settings: None,
            counters,
            sink_error: Arc::default(),
        }
    }

    /// Starts the writer for `settings` (`None`: off).
    pub fn start(settings: Option<&AuditSettings>, counters: AuditCounters) -> Self {
        let Some(settings) = settings else {
            return Self::off(counters);
        };
        let (tx, rx) = sync_channel(settings.queue);
        let sink_error = Arc::<Mutex<Option<String>>>::default();
        let writer = Writer {
            sink: settings.sink.clone(),
            counters: counters.clone(),
            sink_error: sink_error.clone(),
        };
        let spawned = std::thread::Builder::new()
            .name("audit-writer".into())
            .spawn(move || writer.run(rx));
        let queue = match spawned {
            Ok(_) => Some(tx),
            Err(e) => {
                // Without a writer every event fails; say so loudly, keep serving.
                tracing::error!(error = %e, "Cannot start the audit writer thread; audit events will be counted as failed.");
                *lock(&sink_error) = Some(format!("no writer thread: {e}"));
                None
            }
        };
        AuditLog {
            queue,
            settings: Some(settings.clone()),
            counters,
            sink_error,
        }
    }

    /// Whether events are wanted at all (check before building one).
    pub fn is_on(&self) -> bool {
        self.settings.is_some()
    }

    /// The settings the writer runs with (`None`: off). A reload with other sink settings
    /// takes effect only after a restart.
    pub fn settings(&self) -> Option<&AuditSettings> {
        self.settings.as_ref()
    }

    pub fn counters(&self) -> &AuditCounters {
        &self.counters
    }

    /// Why the sink is failing now, if it is.
    pub fn sink_error(&self) -> Option<String> {
        lock(&self.sink_error).clone()
    }

    /// Serialises `event` as one JSON line and queues it; never blocks. A full queue drops
    /// the line and counts it.
    pub fn submit<T: Serialize>(&self, event: &T) {
        if !self.is_on() {
            return;
        }
        let mut line = Vec::with_capacity(LINE_CAPACITY);
        if serde_json::to_writer(&mut line, event).is_err() {
            // Our own event types always serialise; never lose one silently.
            self.counters.failed.inc();
            return;
        }
        line.push(b'\n');
        self.submit_line(line);
    }

    /// Queues `event` for the writer thread to serialise; never blocks. A full queue drops
    /// it and counts it; an event that fails to serialise is counted as failed.
    pub fn submit_deferred(&self, event: Box<dyn DeferredEvent>) {
        if self.is_on() {
            self.enqueue(Item::Deferred(event));
        }
    }

    /// Queues a finished line (newline included); never blocks.
    pub fn submit_line(&self, line: Vec<u8>) {
        self.enqueue(Item::Line(line));
    }

    fn enqueue(&self, item: Item) {
        let Some(queue) = &self.queue else {
            if self.is_on() {
                self.counters.failed.inc();
            }
            return;
        };
        match queue.try_send(item) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => self.counters.dropped.inc(),
            // The writer never returns while we hold the sender; count it if it did.
            Err(TrySendError::Disconnected(_)) => self.counters.failed.inc(),
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

struct Writer {
    sink: SinkSettings,
    counters: AuditCounters,
    sink_error: Arc<Mutex<Option<String>>>,
}

/// The open sink, lines it holds unwritten, and when it may be reopened after a failure.
struct State {
    sink: Option<Box<dyn Sink>>,
    /// Where deferred events are serialised (reused).
    scratch: Vec<u8>,
    unflushed: u64,
    reopen_at: Option<Instant>,
}

impl Writer {
    fn run(self, rx: Receiver<Item>) {
        let mut state = State {
            sink: None,
            scratch: Vec::with_capacity(LINE_CAPACITY),
            unflushed: 0,
            reopen_at: None,
        };
        loop {
            let ended = catch_unwind(AssertUnwindSafe(|| self.drain(&rx, &mut state)));
            match ended {
                // Every sender is gone: the process is shutting down.
                Ok(()) => return,
                Err(_) => {
                    tracing::error!("The audit writer panicked; restarting it.");
                    self.fail(&mut state, "the writer panicked".into());
                }
            }
        }
    }

    /// Sleeps on the queue while it is empty; once lines come, writes them in batches
    /// [`LINGER`] apart until a pause finds nothing new.
    fn drain(&self, rx: &Receiver<Item>, state: &mut State) {
        while let Ok(item) = rx.recv() {
            self.append_item(state, item);
            loop {
                // Parked, not waiting on the queue: senders do not wake it line by line.
                std::thread::park_timeout(LINGER);
                let mut got = 0;
                while let Ok(item) = rx.try_recv() {
                    got += 1;
                    self.append_item(state, item);
                    if state
                        .sink
                        .as_ref()
                        .is_some_and(|s| s.buffered() >= BUFFER_BYTES)
                    {
                        self.flush(state);
                    }
                }
                self.flush(state);
                if got == 0 {
                    break;
                }
            }
        }
        self.flush(state);
    }

    fn append_item(&self, state: &mut State, item: Item) {
        match item {
            Item::Line(line) => self.append(state, &line),
            Item::Deferred(event) => {
                let mut line = std::mem::take(&mut state.scratch);
                line.clear();
                if event.write_json(&mut line).is_ok() {
                    line.push(b'\n');
                    self.append(state, &line);
                } else {
                    // Our own event types always serialise; never lose one silently.
                    self.counters.failed.inc();
                }
                state.scratch = line;
            }
        }
    }

    fn append(&self, state: &mut State, line: &[u8]) {
        if state.sink.is_none() && !self.reopen(state) {
            self.counters.failed.inc();
            return;
        }
        let Some(sink) = state.sink.as_mut() else {
            return;
        };
        match catch_unwind(AssertUnwindSafe(|| sink.append(line))) {
            Ok(Ok(())) => state.unflushed += 1,
            Ok(Err(e)) => {
                state.unflushed += 1;
                self.fail(state, e.to_string());
            }
            Err(_) => {
                state.unflushed += 1;
                self.fail(state, "the sink panicked".into());
            }
        }
    }

    fn flush(&self, state: &mut State) {
        let Some(sink) = state.sink.as_mut() else {
            return;
        };
        if state.unflushed == 0 {
            return;
        }
        match catch_unwind(AssertUnwindSafe(|| sink.flush())) {
            Ok(Ok(())) => {
                // Clear the error before counting, so whoever sees the count sees the recovery.
                self.recovered();
                self.counters.written.inc_by(state.unflushed);
                state.unflushed = 0;
            }
            Ok(Err(e)) => self.fail(state, e.to_string()),
            Err(_) => self.fail(state, "the sink panicked".into()),
        }
    }

    /// Opens the sink if it is time to; false when it stays closed.
    fn reopen(&self, state: &mut State) -> bool {
        if state.reopen_at.is_some_and(|at| Instant::now() < at) {
            return false;
        }
        match catch_unwind(AssertUnwindSafe(|| sink::open(&self.sink))) {
            Ok(Ok(s)) => {
                state.sink = Some(s);
                state.reopen_at = None;
                true
            }
            Ok(Err(e)) => {
                self.fail(state, format!("cannot open the audit sink: {e}"));
                false
            }
            Err(_) => {
                self.fail(state, "opening the audit sink panicked".into());
                false
            }
        }
    }

    /// Counts the lines in hand as failed, closes the sink and reports the episode once.
    fn fail(&self, state: &mut State, why: String) {
        self.counters.failed.inc_by(state.unflushed);
        state.unflushed = 0;
        state.sink = None;
        state.reopen_at = Some(Instant::now() + REOPEN_EVERY);
        let mut error = lock(&self.sink_error);
        if error.is_none() {
            tracing::error!(error = %why, "Audit sink failed: events are counted as failed until it works again.");
        }
        *error = Some(why);
    }

    fn recovered(&self) {
        let mut error = lock(&self.sink_error);
        if error.take().is_some() {
            tracing::warn!("Audit sink works again.");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Allows, Arguments};

    fn settings(sink: SinkSettings, queue: usize) -> AuditSettings {
        AuditSettings {
            sink,
            queue,
            allows: Allows::All,
            arguments: Arguments::Hash,
        }
    }

    fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while !done() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            std::thread::yield_now();
        }
    }

    #[test]
    fn lines_reach_the_file_and_are_counted() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("a.log");
        let sink = SinkSettings::File {
            path: path.clone(),
            max_bytes: 1 << 20,
            keep: 2,
        };
        let log = AuditLog::start(Some(&settings(sink, 100)), AuditCounters::new("t"));
        for i in 0..10 {
            log.submit(&serde_json::json!({ "i": i }));
        }
        wait_until("10 written", || log.counters().written() == 10);
        let text = std::fs::read_to_string(&path).expect("file");
        assert_eq!(text.lines().count(), 10);
        assert_eq!(text.lines().next(), Some(r#"{"i":0}"#));
        assert_eq!(log.counters().dropped(), 0);
    }

    #[test]
    fn an_unopenable_sink_counts_failures_and_recovers() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("sub").join("a.log");
        let sink = SinkSettings::File {
            path: path.clone(),
            max_bytes: 1 << 20,
            keep: 2,
        };
        let log = AuditLog::start(Some(&settings(sink, 100)), AuditCounters::new("t"));
        log.submit(&1);
        wait_until("a failure", || log.counters().failed() == 1);
        assert!(log.sink_error().is_some());
        std::fs::create_dir(dir.path().join("sub")).expect("mkdir");
        // Reopened at most once a second: keep submitting until one is written.
        wait_until("recovery", || {
            log.submit(&2);
            std::thread::yield_now();
            log.counters().written() > 0
        });
        assert!(log.sink_error().is_none());
    }

    #[test]
    fn off_writes_nothing() {
        let log = AuditLog::start(None, AuditCounters::new("t"));
        assert!(!log.is_on());
        log.submit(&1);
        assert_eq!(
            (
                log.counters().written(),
                log.counters().failed(),
                log.counters().dropped()
            ),
            (0, 0, 0)
        );
    }
}
