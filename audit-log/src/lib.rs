//! The audit trail writer auth-sidecar and omni2 share: one home for the `audit:` config
//! block, the queue, the writer and the sinks. Each binary builds its own events.
//!
//! A request writes its event as one JSON line into a buffer of its thread's:
//! [`AuditLog::submit_object`] writes the fields itself ([`json::Object`], the cheapest:
//! for a hot path), [`AuditLog::submit`] through serde, [`AuditLog::submit_line`] copies a
//! finished one. None blocks: the lines waiting for the writer are bounded (`queue`), and
//! past that an event is dropped and counted (`*_audit_dropped_total`). One writer thread
//! moves the buffers into the sink (stdout, or a file rotated by size) and counts every
//! line written or failed (`*_audit_events_total{result}`). A sink that fails or panics is
//! counted, logged once per failure episode, and reopened at most once a second: the writer
//! never stops.
//!
//! Layout: [`config`] (the `audit:` block as written → [`AuditSettings`], every problem
//! named), [`sink`] (stdout and the rotating file), [`writer`] (buffers, thread, counters),
//! [`json`] (the hand-written JSON of [`AuditLog::submit_object`]), [`Timestamp`] (the same
//! RFC 3339 time, for serde).

pub mod config;
pub mod json;
pub mod sink;
pub mod writer;

pub use config::{Allows, Arguments, AuditSettings, Binary, RawAudit, SinkSettings, compile};
pub use writer::{AuditCounters, AuditLog};

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
