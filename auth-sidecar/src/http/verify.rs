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
use actix_web::http::header::{self, HeaderMap, HeaderName};
use actix_web::{HttpRequest, HttpResponse, web};
use futures_util::future::{Either, LocalBoxFuture};

use super::answer;
use super::{Active, AppState};
use crate::audit;
use crate::clock::unix_now;
use crate::decide::{Outcome, decide, decide_with_keys, needs_keys, rate_limit, refresh_keys};
use crate::facts::{RequestFacts, all, single};
use crate::token::redact_uri;

const X_FORWARDED_METHOD: HeaderName = HeaderName::from_static("x-forwarded-method");
const X_FORWARDED_URI: HeaderName = HeaderName::from_static("x-forwarded-uri");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const MCP_METHOD: HeaderName = HeaderName::from_static("mcp-method");
const MCP_NAME: HeaderName = HeaderName::from_static("mcp-name");
const MCP_PROTOCOL_VERSION: HeaderName = HeaderName::from_static("mcp-protocol-version");

/// Collects the decision facts from an auth request.
pub fn facts_from_request(req: &HttpRequest) -> RequestFacts<'_> {
    facts_from_parts(req.headers(), req.peer_addr())
}

/// Collects the decision facts from an auth request's headers and TCP peer.
pub fn facts_from_parts(h: &HeaderMap, peer: Option<SocketAddr>) -> RequestFacts<'_> {
    RequestFacts {
        method: single(h, &X_FORWARDED_METHOD),
        uri: single(h, &X_FORWARDED_URI),
        host: single(h, &X_FORWARDED_HOST),
        proto: single(h, &X_FORWARDED_PROTO),
        forwarded_for: all(h, &X_FORWARDED_FOR),
        peer: peer.map(|a| a.ip()),
        authorization: single(h, &header::AUTHORIZATION),
        cookies: all(h, &header::COOKIE),
        websocket_protocols: all(h, &header::SEC_WEBSOCKET_PROTOCOL),
        has_origin: h.contains_key(header::ORIGIN),
        has_preflight_method: h.contains_key(header::ACCESS_CONTROL_REQUEST_METHOD),
        accept: all(h, &header::ACCEPT),
        mcp_method: single(h, &MCP_METHOD),
        mcp_name: single(h, &MCP_NAME),
        mcp_protocol_version: single(h, &MCP_PROTOCOL_VERSION),
    }
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
