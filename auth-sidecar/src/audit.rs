//! One audit event per decision (JSON lines through `audit-log`): denials always, allows
//! as `audit.allows` samples them. The sampling is decided before anything is built. The
//! request writes the JSON line itself, straight into its thread's audit buffer (no
//! allocation, no serde); the writer thread only moves the buffers to the sink.
//!
//! Fields, and nothing else: never a token, a query string, or any header value but the
//! forwarded method and host and the request id.

use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use actix_web::http::header::{HeaderMap, HeaderName};
use audit_log::json::Object;
use audit_log::{Allows, AuditLog, AuditSettings};
#[cfg(test)]
use serde::Serialize;

use crate::cache::CacheUse;
use crate::config::Runtime;
use crate::decide::Outcome;
use crate::facts::{RequestFacts, single};

use crate::net::{ClientIp, client_ip};
use crate::policy::path::split_uri;

const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
/// W3C trace context: Traefik sends it on the auth request when tracing is on.
const TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
/// A longer or odder request id is not shown: it is a client-controlled header.
const MAX_REQUEST_ID: usize = 128;

/// Counts allows across workers, for `audit.allows: 1/N`.
#[derive(Debug, Default)]
pub struct AllowSampler(AtomicU64);

impl AllowSampler {
    /// Whether this allow is audited under `allows`: every one, none, or every N-th.
    pub fn sample(&self, allows: Allows) -> bool {
        match allows {
            Allows::All => true,
            Allows::None => false,
            Allows::OneIn(n) => self.0.fetch_add(1, Ordering::Relaxed).is_multiple_of(n),
        }
    }
}

/// Whether a reload asks for a sink other than the running one (which needs a restart).
pub fn restart_needed(running: Option<&AuditSettings>, new: Option<&AuditSettings>) -> bool {
    match (running, new) {
        (None, None) => false,
        (Some(a), Some(b)) => (&a.sink, a.queue) != (&b.sink, b.queue),
        _ => true,
    }
}

/// One decision, as written: the fields in their documented order (docs/audit.md).
#[cfg_attr(test, derive(Serialize))]
struct DecisionEvent<'a> {
    #[cfg_attr(test, serde(serialize_with = "as_timestamp"))]
    time: SystemTime,
    decision: &'static str,
    reason: &'static str,
    rule: Option<&'a str>,
    sub: Option<&'a str>,
    client: Option<IpAddr>,
    method: Option<&'a str>,
    host: Option<&'a str>,
    /// Without the query (and fragment): a query may carry a token.
    path: Option<&'a str>,
    latency_us: u64,
    /// `hit` / `miss` when a token was verified, `none` when none was needed.
    cache: &'static str,
    request_id: Option<&'a str>,
}

impl DecisionEvent<'_> {
    /// Straight into the audit line (no serde: the tests check it writes what serde would).
    /// The fixed text between values goes in whole, and the schema's own words unscanned.
    fn write(&self, o: &mut Object<'_>) {
        o.raw("\"time\":\"");
        o.time_value(self.time);
        o.raw("\",\"decision\":\"");
        o.word(self.decision);
        o.raw("\",\"reason\":\"");
        o.word(self.reason);
        o.raw("\",\"rule\":");
        o.opt_str_value(self.rule);
        o.raw(",\"sub\":");
        o.opt_str_value(self.sub);
        o.raw(",\"client\":");
        o.ip_value(self.client);
        o.raw(",\"method\":");
        o.opt_str_value(self.method);
        o.raw(",\"host\":");
        o.opt_str_value(self.host);
        o.raw(",\"path\":");
        o.opt_str_value(self.path);
        o.raw(",\"latency_us\":");
        o.u64_value(self.latency_us);
        o.raw(",\"cache\":\"");
        o.word(self.cache);
        o.raw("\",\"request_id\":");
        o.opt_str_value(self.request_id);
    }
}

/// Writes the event for this decision if audit is on and the sampling wants it: straight
/// into the audit buffer, borrowing every field from the request.
pub fn record(
    log: &AuditLog,
    sampler: &AllowSampler,
    rt: &Runtime,
    facts: &RequestFacts<'_>,
    headers: &HeaderMap,
    outcome: &Outcome,
    latency: Duration,
) {
    let Some(settings) = &rt.audit else {
        return;
    };
    if !log.is_on() || (outcome.decision.is_allow() && !sampler.sample(settings.allows)) {
        return;
    }
    let decision = &outcome.decision;
    let client = match client_ip(
        facts.forwarded_for.iter().copied(),
        facts.peer,
        &rt.trusted_proxies,
    ) {
        ClientIp::Known(ip) => Some(ip),
        ClientIp::Invalid | ClientIp::Unknown => None,
    };
    let event = DecisionEvent {
        time: SystemTime::now(),
        decision: if decision.is_allow() { "allow" } else { "deny" },
        reason: decision.reason_str(),
        rule: decision.rule().map(|i| &*rt.policy.rules[i].name),
        sub: outcome
            .authenticated
            .as_ref()
            .and_then(|a| a.subject.as_deref()),
        client,
        method: facts.method.get(),
        host: facts.host.get(),
        path: facts.uri.get().map(|uri| split_uri(uri).0),
        latency_us: u64::try_from(latency.as_micros()).unwrap_or(u64::MAX),
        cache: match outcome.cache {
            CacheUse::Hit => "hit",
            CacheUse::Miss => "miss",
            CacheUse::NotNeeded => "none",
        },
        request_id: request_id(headers),
    };
    log.submit_object(|o| event.write(o));
}

#[cfg(test)]
fn as_timestamp<S: serde::Serializer>(t: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
    audit_log::Timestamp(*t).serialize(s)
}

/// `X-Request-Id` when the gateway sends one, else the trace id of a W3C `traceparent`;
/// shown only when it is one short token of `[A-Za-z0-9._:+=/-]`.
fn request_id(headers: &HeaderMap) -> Option<&str> {
    let one = |name: &HeaderName| single(headers, name).get();
    if let Some(id) = one(&X_REQUEST_ID) {
        let plain = |b: u8| matches!(b, b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'.' | b'_' | b':' | b'+' | b'=' | b'/' | b'-');
        return (!id.is_empty() && id.len() <= MAX_REQUEST_ID && id.bytes().all(plain))
            .then_some(id);
    }
    // version "-" trace-id (32 hex) "-" parent-id (16 hex) "-" flags
    let parts: Vec<&str> = one(&TRACEPARENT)?.split('-').collect();
    match parts.as_slice() {
        [version, trace, parent, flags]
            if version.len() == 2
                && trace.len() == 32
                && parent.len() == 16
                && flags.len() == 2
                && trace.bytes().all(|b| b.is_ascii_hexdigit()) =>
        {
            Some(trace)
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::http::header::HeaderValue;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (n, v) in pairs {
            h.append(HeaderName::from_static(n), HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn request_id_from_the_gateway_or_the_trace_context() {
        assert_eq!(
            request_id(&headers(&[("x-request-id", "abc-123")])),
            Some("abc-123")
        );
        assert_eq!(request_id(&headers(&[("x-request-id", "has space")])), None);
        assert_eq!(
            request_id(&headers(&[("x-request-id", "a"), ("x-request-id", "b")])),
            None,
            "repeated: ambiguous"
        );
        let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        assert_eq!(
            request_id(&headers(&[("traceparent", tp)])),
            Some("4bf92f3577b34da6a3ce929d0e0e4736")
        );
        assert_eq!(request_id(&headers(&[("traceparent", "garbage")])), None);
        assert_eq!(request_id(&HeaderMap::new()), None);
    }

    #[test]
    fn an_event_is_what_serde_writes_for_its_fields_hostile_text_included() {
        use audit_log::json::TimeText;
        use std::time::UNIX_EPOCH;
        let hostile = [
            "alice",
            "",
            "quo\"te",
            "back\\slash\\",
            "\n\r\t\u{8}\u{c}",
            "\u{0}\u{1}\u{1f}\u{7f}",
            "é ☃ 😀 \u{2028}\u{fffd}\u{feff}",
            "\",\"decision\":\"allow",
            "</script><!--",
        ];
        let clients: [Option<IpAddr>; 3] = [
            Some("203.0.113.9".parse().expect("ip")),
            None,
            Some("2001:db8::7".parse().expect("ip")),
        ];
        let mut clock = TimeText::default();
        for (i, text) in hostile.into_iter().enumerate() {
            let some = |t: &'static str| (i % 2 == 0).then_some(t);
            let event = DecisionEvent {
                time: UNIX_EPOCH + Duration::new(1_764_641_947 + i as u64 / 3, 412_345_678),
                decision: "deny",
                reason: "role_denied",
                rule: some(text),
                sub: Some(text),
                client: clients[i % 3],
                method: some("GET"),
                host: Some(text),
                path: some(text),
                latency_us: [38, 0, u64::MAX][i % 3],
                cache: "hit",
                request_id: (i % 2 == 1).then_some(text),
            };
            let mut ours = Vec::new();
            Object::write(&mut ours, &mut clock, |o| event.write(o));
            let ours = String::from_utf8(ours).expect("UTF-8");
            assert_eq!(
                ours,
                serde_json::to_string(&event).expect("serde"),
                "{text:?}"
            );
            let back: serde_json::Value = serde_json::from_str(&ours).expect("valid JSON");
            assert_eq!((&back["sub"], &back["host"]), (&text.into(), &text.into()));
            assert_eq!(back.as_object().map(|o| o.len()), Some(12), "{ours}");
        }
    }

    #[test]
    fn every_fixed_word_is_written_as_serde_would() {
        use crate::reason::{AllowReason, DenyReason};
        use audit_log::json::TimeText;
        let reasons = DenyReason::ALL
            .iter()
            .map(|r| r.as_str())
            .chain(AllowReason::ALL.iter().map(|r| r.as_str()));
        let mut clock = TimeText::default();
        for (i, reason) in reasons.enumerate() {
            let event = DecisionEvent {
                time: SystemTime::UNIX_EPOCH,
                decision: ["allow", "deny"][i % 2],
                reason,
                rule: None,
                sub: None,
                client: None,
                method: None,
                host: None,
                path: None,
                latency_us: 1,
                cache: ["hit", "miss", "none"][i % 3],
                request_id: None,
            };
            let mut ours = Vec::new();
            Object::write(&mut ours, &mut clock, |o| event.write(o));
            assert_eq!(
                String::from_utf8(ours).expect("UTF-8"),
                serde_json::to_string(&event).expect("serde")
            );
        }
    }

    #[test]
    fn one_in_n_samples_every_nth() {
        let s = AllowSampler::default();
        let picked = (0..10).filter(|_| s.sample(Allows::OneIn(3))).count();
        assert_eq!(picked, 4, "0, 3, 6, 9");
        assert!(s.sample(Allows::All));
        assert!(!s.sample(Allows::None));
    }
}
