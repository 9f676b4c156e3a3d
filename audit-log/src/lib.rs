//! The audit trail writer auth-sidecar and omni2 share: one home for the `audit:` config
//! block, the queue, the writer and the sinks. Each binary builds its own events.
//!
//! A request hands an event to [`AuditLog::submit_deferred`] (a [`DeferredEvent`], which
//! the writer thread serialises: the cheapest for a hot path) or a finished JSON line to
//! [`AuditLog::submit`]; neither blocks: it goes into a bounded queue, or, when the queue is full, is dropped and counted
//! (`*_audit_dropped_total`). One writer thread drains the queue into the sink (stdout, or
//! a file rotated by size) and counts every line written or failed
//! (`*_audit_events_total{result}`). A sink that fails or panics is counted, logged once
//! per failure episode, and reopened at most once a second: the writer never stops.
//!
//! Layout: [`config`] (the `audit:` block as written → [`AuditSettings`], every problem
//! named), [`sink`] (stdout and the rotating file), [`writer`] (queue, thread, counters),
//! [`Timestamp`] (RFC 3339 time, written without an intermediate string).

pub mod config;
pub mod sink;
pub mod writer;

pub use config::{Allows, Arguments, AuditSettings, Binary, RawAudit, SinkSettings, compile};
pub use writer::{AuditCounters, AuditLog, DeferredEvent};

use std::time::SystemTime;

/// A wall-clock time serialised as RFC 3339 UTC with milliseconds
/// (`2026-12-02T02:05:56.123Z`).
#[derive(Clone, Copy, Debug)]
pub struct Timestamp(pub SystemTime);

impl Timestamp {
    pub fn now() -> Self {
        Timestamp(SystemTime::now())
    }
}

impl serde::Serialize for Timestamp {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&humantime::format_rfc3339_millis(self.0))
    }
}
