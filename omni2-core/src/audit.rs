//! omni2's audit trail (JSON lines through `audit-log`): one event per tool call, per
//! cache invalidation and per control action, refused ones included.
//!
//! Arguments are recorded as the SHA-256 of their canonical JSON (the cache key's form:
//! object keys sorted at every depth), so equal calls hash equal; `audit.arguments: full`
//! adds that canonical text itself. Results are the `result` label of
//! `omni2_tool_calls_total` (`ok`, `cached`, `tool_error`, an error code), or the error
//! code of a refused request.
//!
//! The control actions (probe, breaker reset, disable/enable, …) are recorded with
//! [`Audit::control_action`]: call it once per action, after it was carried out or refused.
//!
//! [`Audit::subscribe`] gives the same events live (for an admin-only WebSocket topic),
//! whether or not a sink is configured; with neither a sink nor a subscriber, no event is
//! built at all.

use std::sync::Arc;
use std::time::Duration;

use audit_log::{Arguments, AuditCounters, AuditLog, AuditSettings, Timestamp};
use aws_lc_rs::digest;
use serde::Serialize;
use serde_json::{Map, Value};
use tokio::sync::broadcast;

use crate::cache::canonical_object;
use crate::identity::Identity;

/// The `event` of each kind.
pub mod event {
    pub const TOOL_CALL: &str = "tool_call";
    pub const CACHE_INVALIDATION: &str = "cache_invalidation";
    pub const CONTROL_ACTION: &str = "control_action";
}

/// The `result` of an action that was carried out.
pub const OK: &str = "ok";

/// One tool call, as the route saw it.
#[derive(Clone, Copy, Debug)]
pub struct ToolCall<'a> {
    pub actor: &'a Identity,
    pub server: &'a str,
    pub tool: &'a str,
    /// `None` when the request was refused before its arguments were read.
    pub arguments: Option<&'a Map<String, Value>>,
    /// `omni2_tool_calls_total`'s `result` label, or the refusal's error code.
    pub result: &'a str,
    pub cached: bool,
    pub latency: Duration,
}

/// Live events buffered per subscriber; a slower one gets `Lagged` and skips ahead.
pub const LIVE_BUFFER: usize = 256;

/// The audit trail: off, or a running writer; and its live subscribers.
#[derive(Debug)]
pub struct Audit {
    log: AuditLog,
    arguments: Arguments,
    live: broadcast::Sender<Arc<str>>,
}

#[derive(Serialize)]
struct ToolCallEvent<'a> {
    time: Timestamp,
    event: &'static str,
    user: &'a str,
    roles: &'a [String],
    server: &'a str,
    tool: &'a str,
    /// Hex SHA-256 of the canonical arguments; null when they were never read.
    args_sha256: Option<String>,
    /// The canonical arguments, with `audit.arguments: full`; else null.
    arguments: Option<String>,
    result: &'a str,
    cached: bool,
    latency_us: u64,
}

#[derive(Serialize)]
struct InvalidationEvent<'a> {
    time: Timestamp,
    event: &'static str,
    user: &'a str,
    roles: &'a [String],
    /// Null: every server.
    server: Option<&'a str>,
    /// Null: every tool of `server`.
    tool: Option<&'a str>,
    result: &'a str,
}

#[derive(Serialize)]
struct ControlEvent<'a> {
    time: Timestamp,
    event: &'static str,
    user: &'a str,
    roles: &'a [String],
    action: &'a str,
    target: &'a str,
    result: &'a str,
}

impl Audit {
    /// Starts the writer for `settings` (`None`: off).
    pub fn new(settings: Option<&AuditSettings>, counters: AuditCounters) -> Self {
        Audit {
            log: AuditLog::start(settings, counters),
            arguments: settings.map_or(Arguments::Hash, |s| s.arguments),
            live: broadcast::channel(LIVE_BUFFER).0,
        }
    }

    /// Whether an event would go anywhere (a sink, or a live subscriber).
    pub fn is_on(&self) -> bool {
        self.log.is_on() || self.live.receiver_count() > 0
    }

    /// Every event from now on, as its JSON text (one object, no newline). Arguments are
    /// shown as configured (`hash` or `full`), exactly as in the sink.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<str>> {
        self.live.subscribe()
    }

    /// Serialises once; the line goes to the sink and to live subscribers.
    fn emit<T: Serialize>(&self, event: &T) {
        if self.live.receiver_count() == 0 {
            self.log.submit(event);
            return;
        }
        let Ok(line) = serde_json::to_vec(event) else {
            return;
        };
        if let Ok(text) = std::str::from_utf8(&line) {
            // No subscriber left since the check: nothing to do.
            let _ = self.live.send(Arc::from(text));
        }
        if self.log.is_on() {
            self.log.submit_line(&line);
        }
    }

    /// Why the sink is failing now, if it is.
    pub fn sink_error(&self) -> Option<String> {
        self.log.sink_error()
    }

    /// Records one tool call (answered, failed or refused).
    pub fn tool_call(&self, call: ToolCall<'_>) {
        if !self.is_on() {
            return;
        }
        let canonical = call.arguments.map(canonical_object);
        let args_sha256 = canonical.as_deref().map(sha256_hex);
        let arguments = match self.arguments {
            Arguments::Full => canonical,
            Arguments::Hash => None,
        };
        self.emit(&ToolCallEvent {
            time: Timestamp::now(),
            event: event::TOOL_CALL,
            user: &call.actor.id,
            roles: &call.actor.roles,
            server: call.server,
            tool: call.tool,
            args_sha256,
            arguments,
            result: call.result,
            cached: call.cached,
            latency_us: u64::try_from(call.latency.as_micros()).unwrap_or(u64::MAX),
        });
    }

    /// Records a cache invalidation: `server` `None` is all of them, `tool` `None` all of
    /// the server's; `result` is [`OK`] or the refusal's error code.
    pub fn cache_invalidation(
        &self,
        actor: &Identity,
        server: Option<&str>,
        tool: Option<&str>,
        result: &str,
    ) {
        if !self.is_on() {
            return;
        }
        self.emit(&InvalidationEvent {
            time: Timestamp::now(),
            event: event::CACHE_INVALIDATION,
            user: &actor.id,
            roles: &actor.roles,
            server,
            tool,
            result,
        });
    }

    /// Records one control action by `actor`: `action` a short fixed word (`probe`,
    /// `reset_breaker`, `disable`, `enable`, …), `target` what it acted on (a server name,
    /// `server/tool`), `result` [`OK`] or the refusal's error code (e.g. `role_denied`).
    pub fn control_action(&self, actor: &Identity, action: &str, target: &str, result: &str) {
        if !self.is_on() {
            return;
        }
        self.emit(&ControlEvent {
            time: Timestamp::now(),
            event: event::CONTROL_ACTION,
            user: &actor.id,
            roles: &actor.roles,
            action,
            target,
            result,
        });
    }
}

fn sha256_hex(text: &str) -> String {
    let d = digest::digest(&digest::SHA256, text.as_bytes());
    d.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alice() -> Identity {
        Identity {
            id: "alice".into(),
            username: String::new(),
            role: "admin".into(),
            roles: vec!["admin".into()],
            email: String::new(),
            expires: None,
        }
    }

    #[test]
    fn subscribers_see_events_without_a_sink() {
        let audit = Audit::new(None, AuditCounters::new("t"));
        assert!(!audit.is_on(), "no sink, no subscriber: nothing is built");
        let mut rx = audit.subscribe();
        assert!(audit.is_on());
        audit.control_action(&alice(), "probe", "py", OK);
        let line = rx.try_recv().expect("an event");
        let v: Value = serde_json::from_str(&line).expect("json");
        assert_eq!(v["event"], event::CONTROL_ACTION);
        assert_eq!(
            (&v["user"], &v["action"], &v["target"], &v["result"]),
            (&"alice".into(), &"probe".into(), &"py".into(), &"ok".into())
        );
        assert_eq!(v["roles"], serde_json::json!(["admin"]));
    }

    #[test]
    fn the_hash_is_of_the_canonical_text() {
        // Both hashes as `printf … | sha256sum` prints them.
        let args = serde_json::json!({"b": [2, {"d": 4, "c": 3}], "a": 1});
        let text = canonical_object(args.as_object().expect("object"));
        assert_eq!(text, r#"{"a":1,"b":[2,{"c":3,"d":4}]}"#);
        assert_eq!(
            sha256_hex(""),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_eq!(
            sha256_hex(&text),
            "88c3cdf568e74603bc9ea42ed03f42ad6dcf46dbfbb56089d8a163f6b84a0c52"
        );
    }
}
