//! One audit event per decision (JSON lines through `audit-log`): denials always, allows
//! as `audit.allows` samples them. The sampling is decided before anything is built. The
//! request only copies what the event shows into one `Recorded` (its strings in one
//! buffer): the JSON, timestamp included, is written on the audit writer thread.
//!
//! Fields, and nothing else: never a token, a query string, or any header value but the
//! forwarded method and host and the request id.

use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use actix_web::http::header::{HeaderMap, HeaderName};
use audit_log::{Allows, AuditLog, AuditSettings, Timestamp};
use serde::Serialize;

use crate::cache::CacheUse;
use crate::config::Runtime;
use crate::decide::Outcome;
use crate::facts::{RequestFacts, Single};
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

/// One decision, as written.
#[derive(Serialize)]
struct DecisionEvent<'a> {
    time: Timestamp,
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

/// The strings an event shows, in [`Recorded::text`], by position.
#[derive(Clone, Copy)]
enum Text {
    Sub,
    Method,
    Host,
    Path,
    RequestId,
}

/// A decision's event as the request recorded it, serialised later by the writer thread:
/// one allocation for the box and one for all its strings.
struct Recorded {
    time: std::time::SystemTime,
    decision: &'static str,
    reason: &'static str,
    rule: Option<std::sync::Arc<str>>,
    client: Option<IpAddr>,
    latency_us: u64,
    cache: &'static str,
    /// The strings, back to back; `spans[i]`: where [`Text`] `i` is, if present.
    text: String,
    spans: [Option<(u32, u32)>; 5],
}

impl Recorded {
    fn push(&mut self, which: Text, value: Option<&str>) {
        if let Some(v) = value {
            let start = self.text.len();
            self.text.push_str(v);
            // Header values and paths are far below 4 GiB; a longer one is not shown.
            if let (Ok(a), Ok(b)) = (u32::try_from(start), u32::try_from(self.text.len())) {
                self.spans[which as usize] = Some((a, b));
            }
        }
    }

    fn get(&self, which: Text) -> Option<&str> {
        let (a, b) = self.spans[which as usize]?;
        self.text.get(a as usize..b as usize)
    }
}

impl audit_log::DeferredEvent for Recorded {
    fn write_json(&self, out: &mut Vec<u8>) -> serde_json::Result<()> {
        serde_json::to_writer(
            out,
            &DecisionEvent {
                time: Timestamp(self.time),
                decision: self.decision,
                reason: self.reason,
                rule: self.rule.as_deref(),
                sub: self.get(Text::Sub),
                client: self.client,
                method: self.get(Text::Method),
                host: self.get(Text::Host),
                path: self.get(Text::Path),
                latency_us: self.latency_us,
                cache: self.cache,
                request_id: self.get(Text::RequestId),
            },
        )
    }
}

/// Queues the event for this decision if audit is on and the sampling wants it.
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
    let sub = outcome
        .authenticated
        .as_ref()
        .and_then(|a| a.subject.as_deref());
    let (method, host) = (facts.method.get(), facts.host.get());
    let path = facts.uri.get().map(|uri| split_uri(uri).0);
    let request_id = request_id(headers);
    let size = [sub, method, host, path, request_id]
        .iter()
        .map(|t| t.map_or(0, str::len))
        .sum();
    let mut event = Recorded {
        time: std::time::SystemTime::now(),
        decision: if decision.is_allow() { "allow" } else { "deny" },
        reason: decision.reason_str(),
        rule: decision.rule().map(|i| rt.policy.rules[i].name.clone()),
        client,
        latency_us: u64::try_from(latency.as_micros()).unwrap_or(u64::MAX),
        cache: match outcome.cache {
            CacheUse::Hit => "hit",
            CacheUse::Miss => "miss",
            CacheUse::NotNeeded => "none",
        },
        text: String::with_capacity(size),
        spans: [None; 5],
    };
    event.push(Text::Sub, sub);
    event.push(Text::Method, method);
    event.push(Text::Host, host);
    event.push(Text::Path, path);
    event.push(Text::RequestId, request_id);
    log.submit_deferred(Box::new(event));
}

/// `X-Request-Id` when the gateway sends one, else the trace id of a W3C `traceparent`;
/// shown only when it is one short token of `[A-Za-z0-9._:+=/-]`.
fn request_id(headers: &HeaderMap) -> Option<&str> {
    let one = |name: &HeaderName| {
        let mut s = Single::Absent;
        for v in headers.get_all(name) {
            s.push(v.to_str().ok());
        }
        s.get()
    };
    if let Some(id) = one(&X_REQUEST_ID) {
        let plain = |b: u8| b.is_ascii_alphanumeric() || b"._:+=/-".contains(&b);
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
    fn one_in_n_samples_every_nth() {
        let s = AllowSampler::default();
        let picked = (0..10).filter(|_| s.sample(Allows::OneIn(3))).count();
        assert_eq!(picked, 4, "0, 3, 6, 9");
        assert!(s.sample(Allows::All));
        assert!(!s.sample(Allows::None));
    }
}
