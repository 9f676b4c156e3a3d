//! The forwardAuth handler. Phases: read the forwarded facts → fetch remote keys if the
//! token needs ones we lack (async, bounded) → decide (pure) → rate limit (async only for a
//! `store: redis` limit, bounded by `command_timeout`) → count, audit and log → respond.
//! The request line, `Host` and body of the auth request are never used.

use std::future::{Ready, ready};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use actix_http::Request;
use actix_web::body::BoxBody;
use actix_web::dev::Response;
use actix_web::http::header::HeaderMap;
use actix_web::{HttpRequest, HttpResponse, web};
use futures_util::future::{Either, LocalBoxFuture};

use super::answer;
use super::{Active, AppState};
use crate::audit;
use crate::clock::unix_now;
use crate::decide::{Outcome, decide, decide_with_keys, needs_keys, rate_limit, refresh_keys};
use crate::facts::{RequestFacts, text};
use crate::token::redact_uri;

/// Collects the decision facts from an auth request.
pub fn facts_from_request(req: &HttpRequest) -> RequestFacts<'_> {
    facts_from_parts(req.headers(), req.peer_addr())
}

/// Collects the decision facts from an auth request's headers and TCP peer, in one pass
/// over the headers the gateway sent: a hashed lookup per header we read cost three times
/// as much, for the dozen we look for and the handful that are there.
pub fn facts_from_parts(h: &HeaderMap, peer: Option<SocketAddr>) -> RequestFacts<'_> {
    let mut f = RequestFacts {
        peer: peer.map(|a| a.ip()),
        ..RequestFacts::default()
    };
    // Names are lowercase in a HeaderMap; each name's values come in the order sent.
    for (name, value) in h.iter() {
        match name.as_str() {
            "authorization" => f.authorization.push(text(value)),
            "x-forwarded-method" => f.method.push(text(value)),
            "x-forwarded-uri" => f.uri.push(text(value)),
            "x-forwarded-host" => f.host.push(text(value)),
            "x-forwarded-proto" => f.proto.push(text(value)),
            "x-forwarded-for" => f.forwarded_for.extend(text(value)),
            "cookie" => f.cookies.extend(text(value)),
            "sec-websocket-protocol" => f.websocket_protocols.extend(text(value)),
            "accept" => f.accept.extend(text(value)),
            "origin" => f.has_origin = true,
            "access-control-request-method" => f.has_preflight_method = true,
            "mcp-method" => f.mcp_method.push(text(value)),
            "mcp-name" => f.mcp_name.push(text(value)),
            "mcp-protocol-version" => f.mcp_protocol_version.push(text(value)),
            _ => {}
        }
    }
    f
}

/// The App's forwardAuth handler (paths [`super::front`] leaves to the App).
pub(super) async fn verify(req: HttpRequest, state: web::Data<AppState>) -> HttpResponse {
    let started = Instant::now();
    // Holds this config for the whole request, even if a reload swaps in another meanwhile.
    let active = state.active.load_full();
    let facts = facts_from_request(&req);
    let mut outcome = decide_with_keys(&facts, &active.rt, unix_now()).await;
    if let Some(shared) = rate_limit(&mut outcome, &facts, &active.rt, started) {
        shared.apply(&mut outcome).await;
    }
    finish(&state, &active, &facts, req.headers(), &outcome, started)
}

type Reply = Result<Response<BoxBody>, actix_web::Error>;

/// A forwardAuth answer: ready now, or a future that first asks something remote.
pub(super) type Answer = Either<Ready<Reply>, LocalBoxFuture<'static, Reply>>;

/// The same decision as [`verify`], from the actix-http request: answered at once when it
/// needs nothing remote (the usual case), else by a future that fetches the keys the token
/// needs and/or asks the shared rate limiter, then answers.
pub(super) fn answer(state: &Arc<AppState>, req: Request) -> Answer {
    let started = Instant::now();
    let now = unix_now();
    let active = state.active.load_full();
    let facts = facts_from_parts(&req.head().headers, req.peer_addr());
    let mut outcome = decide(&facts, &active.rt, now);
    let keys_needed = needs_keys(&outcome, &active.rt).is_some();
    let mut shared = None;
    if !keys_needed {
        shared = rate_limit(&mut outcome, &facts, &active.rt, started);
        if shared.is_none() {
            let res = finish(
                state,
                &active,
                &facts,
                &req.head().headers,
                &outcome,
                started,
            );
            return Either::Left(ready(Ok(res.into())));
        }
    }
    let state = state.clone();
    Either::Right(Box::pin(async move {
        // `facts` borrows the request, which moved in here: read again (not the usual path).
        let facts = facts_from_parts(&req.head().headers, req.peer_addr());
        if keys_needed {
            if refresh_keys(&outcome, &active.rt, now).await {
                outcome = decide(&facts, &active.rt, now);
            }
            shared = rate_limit(&mut outcome, &facts, &active.rt, started);
        }
        if let Some(shared) = shared {
            shared.apply(&mut outcome).await;
        }
        let res = finish(
            &state,
            &active,
            &facts,
            &req.head().headers,
            &outcome,
            started,
        );
        Ok(res.into())
    }))
}

/// Counts, audits and logs a decision, and answers it.
fn finish(
    state: &AppState,
    active: &Active,
    facts: &RequestFacts<'_>,
    headers: &HeaderMap,
    outcome: &Outcome,
    started: Instant,
) -> HttpResponse {
    let latency = started.elapsed();
    state.metrics.record(
        &active.counters,
        &outcome.decision,
        outcome.cache,
        latency.as_secs_f64(),
    );
    audit::record(
        &state.audit,
        &state.audit_sampler,
        &active.rt,
        facts,
        headers,
        outcome,
        latency,
    );
    if tracing::enabled!(tracing::Level::DEBUG) {
        let rule = outcome
            .decision
            .rule()
            .map_or("none", |i| &*active.rt.policy.rules[i].name);
        tracing::debug!(
            decision = if outcome.decision.is_allow() { "allow" } else { "deny" },
            reason = outcome.decision.reason_str(),
            rule,
            method = facts.method.get().unwrap_or(""),
            uri = %facts.uri.get().map(redact_uri).unwrap_or_default(),
            cache = ?outcome.cache,
            "Decided."
        );
    }
    answer::to_response(&outcome.decision, &active.rt.realm)
}

#[cfg(test)]
mod tests {
    use super::facts_from_parts;
    use crate::facts::{RequestFacts, Single};
    use actix_web::http::header::{HeaderMap, HeaderName, HeaderValue};

    /// The facts as a lookup per header reads them (the single pass must agree).
    fn by_lookup(h: &HeaderMap) -> RequestFacts<'_> {
        let single = |n: &str| {
            let mut s = Single::Absent;
            for v in h.get_all(n) {
                s.push(v.to_str().ok());
            }
            s
        };
        let all = |n: &str| h.get_all(n).filter_map(|v| v.to_str().ok()).collect();
        RequestFacts {
            method: single("x-forwarded-method"),
            uri: single("x-forwarded-uri"),
            host: single("x-forwarded-host"),
            proto: single("x-forwarded-proto"),
            forwarded_for: all("x-forwarded-for"),
            peer: None,
            authorization: single("authorization"),
            cookies: all("cookie"),
            websocket_protocols: all("sec-websocket-protocol"),
            has_origin: h.contains_key("origin"),
            has_preflight_method: h.contains_key("access-control-request-method"),
            accept: all("accept"),
            mcp_method: single("mcp-method"),
            mcp_name: single("mcp-name"),
            mcp_protocol_version: single("mcp-protocol-version"),
        }
    }

    #[test]
    fn one_pass_reads_what_a_lookup_per_header_reads() {
        let names = [
            "authorization",
            "x-forwarded-method",
            "x-forwarded-uri",
            "x-forwarded-host",
            "x-forwarded-proto",
            "x-forwarded-for",
            "cookie",
            "sec-websocket-protocol",
            "accept",
            "origin",
            "access-control-request-method",
            "mcp-method",
            "mcp-name",
            "mcp-protocol-version",
            "user-agent",
        ];
        let values: [&[u8]; 4] = [b"a", b"b, c", b"caf\xc3\xa9", b""];
        // Every name absent, once, twice and three times, with valid and invalid text.
        for round in 0..48usize {
            let mut h = HeaderMap::new();
            for (i, name) in names.iter().enumerate() {
                let count = (round + i) % 4;
                for k in 0..count {
                    let v = values[(round / 4 + i + k) % values.len()];
                    h.append(
                        HeaderName::from_static(name),
                        HeaderValue::from_bytes(v).expect("value"),
                    );
                }
            }
            let got = facts_from_parts(&h, None);
            let want = by_lookup(&h);
            assert_eq!(format!("{got:?}"), format!("{want:?}"), "round {round}");
        }
    }
}
