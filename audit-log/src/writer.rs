//! The per-thread line buffers and the one writer thread.
//!
//! A request writes its line into a buffer of its own thread's (one of 16, each behind a
//! mutex that otherwise only the writer takes): no allocation once the buffers have grown,
//! no channel, and no wake-up while the writer is busy. A shared count of waiting lines
//! bounds them all (`queue`); past it a line is dropped and counted. The writer empties
//! every buffer 2 ms apart while lines come, and sleeps once a round finds none, until the
//! next line wakes it.
//!
//! A plain OS thread, not a runtime task: the file writes block (a full pipe, a FIFO
//! nobody reads, a slow disk), and they must block only the writer. The thread never
//! ends while the log is in use: a sink error or panic is counted, reported once per
//! episode, and the sink reopened (at most once a second); a panic outside the sink
//! restarts the loop.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::Thread;
use std::time::{Duration, Instant};

use prometheus::{IntCounter, IntCounterVec, Opts, Registry};
use serde::Serialize;

use crate::config::{AuditSettings, SinkSettings};
use crate::json::{Object, TimeText};
use crate::sink::{self, BUFFER_BYTES, Sink};

/// A broken sink is reopened at most this often.
const REOPEN_EVERY: Duration = Duration::from_secs(1);
/// While lines come, the writer empties the buffers this far apart: one wake-up and one
/// write per round instead of per line (a context switch and a syscall per request were
/// most of what auditing every allow cost). The buffers hold the lines meanwhile.
const LINGER: Duration = Duration::from_millis(2);
/// Line buffers: threads take them in turn, so up to this many threads write without
/// meeting; more share (still correct, they take turns on the mutex).
const SHARDS: usize = 16;
/// A buffer that grew past this in a burst is given back once emptied.
const KEEP_CAPACITY: usize = 256 << 10;

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

/// Lines written by requests, not yet taken by the writer.
#[derive(Default)]
struct Lines {
    text: Vec<u8>,
    count: u64,
    /// This buffer's time text cache.
    clock: TimeText,
}

/// One buffer, on a cache line of its own so that threads do not slow each other down.
#[repr(align(128))]
#[derive(Default)]
struct Shard(Mutex<Lines>);

/// What the requests and the writer share.
struct Shared {
    shards: [Shard; SHARDS],
    /// Lines counted in, not yet taken by the writer: at most `queue`.
    waiting: AtomicUsize,
    queue: usize,
    /// The writer is asleep (or about to be) and wants a wake-up for the next line.
    asleep: AtomicBool,
    /// The log was dropped: the writer writes what is left and ends.
    closed: AtomicBool,
    writer: OnceLock<Thread>,
}

impl Shared {
    /// The calling thread's buffer, the same for its whole life.
    fn shard(&self) -> &Mutex<Lines> {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        thread_local!(static MINE: usize = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % SHARDS);
        &self.shards[MINE.with(|i| *i)].0
    }

    fn wake_writer(&self) {
        // Pairs with the writer's store of `asleep` and load of `waiting` (both SeqCst):
        // either it sees this line counted, or this load sees it asleep.
        if self.asleep.load(SeqCst)
            && self.asleep.swap(false, SeqCst)
            && let Some(writer) = self.writer.get()
        {
            writer.unpark();
        }
    }
}

/// The audit trail: off, or buffers drained by a running writer. Cheap to share behind an
/// `Arc`; dropping it lets the writer write what is left and end.
pub struct AuditLog {
    /// `None`: off, or no writer thread (every event fails).
    shared: Option<Arc<Shared>>,
    settings: Option<AuditSettings>,
    counters: AuditCounters,
    /// Why the sink is failing now, if it is.
    sink_error: Arc<Mutex<Option<String>>>,
}

impl std::fmt::Debug for AuditLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditLog")
            .field("settings", &self.settings)
            .field("writer", &self.shared.is_some())
            .finish_non_exhaustive()
    }
}

impl AuditLog {
    /// Audit off: [`AuditLog::is_on`] is false and nothing is ever written.
    pub fn off(counters: AuditCounters) -> Self {
        AuditLog {
            shared: None,
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
        let shared = Arc::new(Shared {
            shards: Default::default(),
            waiting: AtomicUsize::new(0),
            queue: settings.queue,
            asleep: AtomicBool::new(false),
            closed: AtomicBool::new(false),
            writer: OnceLock::new(),
        });
        let sink_error = Arc::<Mutex<Option<String>>>::default();
        let writer = Writer {
            sink: settings.sink.clone(),
            counters: counters.clone(),
            sink_error: sink_error.clone(),
            shared: shared.clone(),
        };
        let spawned = std::thread::Builder::new()
            .name("audit-writer".into())
            .spawn(move || writer.run());
        let shared = match spawned {
            Ok(handle) => {
                let _ = shared.writer.set(handle.thread().clone());
                Some(shared)
            }
            Err(e) => {
                // Without a writer every event fails; say so loudly, keep serving.
                tracing::error!(error = %e, "Cannot start the audit writer thread; audit events will be counted as failed.");
                *lock(&sink_error) = Some(format!("no writer thread: {e}"));
                None
            }
        };
        AuditLog {
            shared,
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

    /// Writes one JSON object, the fields `fields` writes, as a line; never blocks for
    /// longer than another thread takes to append its own line. A full queue drops it and
    /// counts it. The cheapest: for a hot path.
    pub fn submit_object(&self, fields: impl FnOnce(&mut Object<'_>)) {
        self.append(|lines| {
            Object::write(&mut lines.text, &mut lines.clock, fields);
            true
        });
    }

    /// Serialises `event` as one JSON line; never blocks (as above). An event that fails to
    /// serialise is counted as failed.
    pub fn submit<T: Serialize>(&self, event: &T) {
        self.append(|lines| serde_json::to_writer(&mut lines.text, event).is_ok());
    }

    /// Queues a finished line: one JSON object, without the newline; never blocks (as above).
    pub fn submit_line(&self, line: &[u8]) {
        self.append(|lines| {
            lines.text.extend_from_slice(line);
            true
        });
    }

    /// Counts a line in (or drops it), lets `write` append it to this thread's buffer
    /// (false: it could not, nothing kept), ends it, and wakes the writer if it sleeps.
    fn append(&self, write: impl FnOnce(&mut Lines) -> bool) {
        if !self.is_on() {
            return;
        }
        let Some(shared) = &self.shared else {
            self.counters.failed.inc();
            return;
        };
        if shared.waiting.fetch_add(1, SeqCst) >= shared.queue {
            shared.waiting.fetch_sub(1, SeqCst);
            self.counters.dropped.inc();
            return;
        }
        let written = {
            let mut lines = lock(shared.shard());
            let line = Uncommitted {
                start: lines.text.len(),
                lines: &mut lines,
                waiting: &shared.waiting,
            };
            let written = write(line.lines);
            if written {
                line.lines.text.push(b'\n');
                line.lines.count += 1;
                line.commit();
            }
            written
        };
        if written {
            shared.wake_writer();
        } else {
            self.counters.failed.inc();
        }
    }
}

impl Drop for AuditLog {
    fn drop(&mut self) {
        if let Some(shared) = &self.shared {
            shared.closed.store(true, SeqCst);
            if let Some(writer) = shared.writer.get() {
                writer.unpark();
            }
        }
    }
}

/// A line being appended: unless committed (a failed or panicking write), its partial text
/// is cut off again and its place in the queue given back.
struct Uncommitted<'a> {
    start: usize,
    lines: &'a mut Lines,
    waiting: &'a AtomicUsize,
}

impl Uncommitted<'_> {
    fn commit(mut self) {
        self.start = usize::MAX;
    }
}

impl Drop for Uncommitted<'_> {
    fn drop(&mut self) {
        if self.start != usize::MAX {
            self.lines.text.truncate(self.start);
            self.waiting.fetch_sub(1, SeqCst);
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
    shared: Arc<Shared>,
}

/// The open sink, lines it holds unwritten, and when it may be reopened after a failure.
struct State {
    sink: Option<Box<dyn Sink>>,
    /// The buffer swapped in for the one taken (reused).
    spare: Vec<u8>,
    unflushed: u64,
    reopen_at: Option<Instant>,
}

impl Writer {
    fn run(self) {
        let mut state = State {
            sink: None,
            spare: Vec::new(),
            unflushed: 0,
            reopen_at: None,
        };
        loop {
            let ended = catch_unwind(AssertUnwindSafe(|| self.serve(&mut state)));
            match ended {
                // The log was dropped and everything in it written.
                Ok(()) => return,
                Err(_) => {
                    tracing::error!("The audit writer panicked; restarting it.");
                    self.fail(&mut state, "the writer panicked".into());
                }
            }
        }
    }

    /// Rounds [`LINGER`] apart while lines come; asleep after a round that found none.
    fn serve(&self, state: &mut State) {
        let shared = &*self.shared;
        loop {
            let took = self.take_all(state);
            self.flush(state);
            if took > 0 {
                std::thread::park_timeout(LINGER);
                continue;
            }
            if shared.closed.load(SeqCst) {
                return;
            }
            shared.asleep.store(true, SeqCst);
            if shared.waiting.load(SeqCst) > 0 {
                // A line is being appended right now: come back for it.
                shared.asleep.store(false, SeqCst);
                std::thread::park_timeout(LINGER);
                continue;
            }
            // Woken by the next line (or the log's drop); a spurious wake-up just loops.
            std::thread::park();
            shared.asleep.store(false, SeqCst);
        }
    }

    /// Moves every buffer's lines into the sink; how many.
    fn take_all(&self, state: &mut State) -> u64 {
        let mut took = 0;
        for shard in &self.shared.shards {
            let mut text = std::mem::take(&mut state.spare);
            let count = {
                let mut lines = lock(&shard.0);
                if lines.count == 0 {
                    state.spare = text;
                    continue;
                }
                std::mem::swap(&mut lines.text, &mut text);
                std::mem::take(&mut lines.count)
            };
            self.shared
                .waiting
                .fetch_sub(usize::try_from(count).unwrap_or(usize::MAX), SeqCst);
            self.append(state, &text, count);
            text.clear();
            if text.capacity() > KEEP_CAPACITY {
                text = Vec::new();
            }
            state.spare = text;
            took += count;
        }
        took
    }

    /// Hands `count` whole lines to the sink, opening it first if need be.
    fn append(&self, state: &mut State, text: &[u8], count: u64) {
        if state.sink.is_none() && !self.reopen(state) {
            self.counters.failed.inc_by(count);
            return;
        }
        let Some(sink) = state.sink.as_mut() else {
            return;
        };
        let appended = catch_unwind(AssertUnwindSafe(|| sink.append(text)));
        let full = sink.buffered() >= BUFFER_BYTES;
        state.unflushed += count;
        match appended {
            Ok(Ok(())) if full => self.flush(state),
            Ok(Ok(())) => {}
            Ok(Err(e)) => self.fail(state, e.to_string()),
            Err(_) => self.fail(state, "the sink panicked".into()),
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

    fn file(path: &std::path::Path) -> SinkSettings {
        SinkSettings::File {
            path: path.to_path_buf(),
            max_bytes: 1 << 20,
            keep: 2,
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
        let log = AuditLog::start(Some(&settings(file(&path), 100)), AuditCounters::new("t"));
        for i in 0..10 {
            log.submit(&serde_json::json!({ "i": i }));
        }
        log.submit_line(br#"{"line":1}"#);
        log.submit_object(|o| o.u64("object", 2));
        wait_until("12 written", || log.counters().written() == 12);
        let text = std::fs::read_to_string(&path).expect("file");
        assert_eq!(text.lines().count(), 12);
        assert_eq!(text.lines().next(), Some(r#"{"i":0}"#));
        assert!(text.ends_with("{\"line\":1}\n{\"object\":2}\n"), "{text}");
        assert_eq!(log.counters().dropped(), 0);
    }

    #[test]
    fn lines_from_many_threads_with_pauses_all_arrive_whole() {
        // Pauses let the writer fall asleep between bursts: every line must still wake it.
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("a.log");
        let log = AuditLog::start(
            Some(&settings(file(&path), 100_000)),
            AuditCounters::new("t"),
        );
        const THREADS: u64 = 24; // more than SHARDS: some share a buffer
        const BURSTS: u64 = 20;
        const LINES: u64 = 50;
        let submitted = std::sync::atomic::AtomicU64::new(0);
        std::thread::scope(|s| {
            for t in 0..THREADS {
                let (log, submitted) = (&log, &submitted);
                s.spawn(move || {
                    for b in 0..BURSTS {
                        for i in 0..LINES {
                            log.submit_object(|o| {
                                o.u64("t", t);
                                o.u64("b", b);
                                o.u64("i", i);
                                o.str("pad", "x\"y\\z");
                            });
                        }
                        // Until everything submitted so far is written: then pause.
                        let so_far = submitted.fetch_add(LINES, SeqCst) + LINES;
                        wait_until("progress", || log.counters().written() >= so_far);
                    }
                });
            }
        });
        let all = THREADS * BURSTS * LINES;
        wait_until("every line", || log.counters().written() == all);
        let text = std::fs::read_to_string(&path).expect("file");
        let mut seen = std::collections::HashSet::new();
        for line in text.lines() {
            let v: serde_json::Value = serde_json::from_str(line).expect("a whole JSON line");
            assert_eq!(v["pad"], "x\"y\\z");
            assert!(seen.insert((v["t"].as_u64(), v["b"].as_u64(), v["i"].as_u64())));
        }
        assert_eq!(seen.len() as u64, all);
        assert_eq!((log.counters().dropped(), log.counters().failed()), (0, 0));
    }

    #[test]
    fn a_line_whose_writing_panics_leaves_nothing_behind() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("a.log");
        let log = AuditLog::start(Some(&settings(file(&path), 1)), AuditCounters::new("t"));
        let panicked = catch_unwind(AssertUnwindSafe(|| {
            log.submit_object(|o| {
                o.str("half", "a line");
                panic!("while writing");
            });
        }));
        assert!(panicked.is_err());
        // Its place in the queue (of one) was given back, and its text cut.
        log.submit_object(|o| o.str("whole", "line"));
        wait_until("one written", || log.counters().written() == 1);
        assert_eq!(
            std::fs::read_to_string(&path).expect("file"),
            "{\"whole\":\"line\"}\n"
        );
        assert_eq!(log.counters().dropped(), 0);
    }

    #[cfg(unix)]
    #[test]
    fn a_stuck_sink_drops_past_the_queue_and_catches_up_once_it_moves() {
        // A FIFO nobody reads: the writer blocks in its open, requests do not.
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("fifo");
        let made = std::process::Command::new("mkfifo").arg(&path).status();
        assert!(made.expect("mkfifo").success());
        const QUEUE: u64 = 3;
        const N: u64 = 100;
        let log = AuditLog::start(
            Some(&settings(file(&path), QUEUE as usize)),
            AuditCounters::new("t"),
        );
        for i in 0..N {
            log.submit_object(|o| o.u64("i", i));
        }
        let dropped = log.counters().dropped();
        // At most QUEUE waiting, and at most QUEUE taken by the writer before it blocked.
        assert!(dropped >= N - 2 * QUEUE, "dropped {dropped}");
        assert_eq!(log.counters().written(), 0);
        let reader = std::thread::spawn(move || std::fs::read_to_string(&path).expect("read"));
        wait_until("the rest written", || {
            log.counters().written() + dropped == N
        });
        drop(log); // the writer ends, closing the FIFO: the reader sees its end
        let text = reader.join().expect("reader");
        assert_eq!(text.lines().count() as u64, N - dropped);
    }

    #[test]
    fn an_unopenable_sink_counts_failures_and_recovers() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("sub").join("a.log");
        let log = AuditLog::start(Some(&settings(file(&path), 100)), AuditCounters::new("t"));
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
        log.submit_object(|o| o.u64("n", 1));
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
