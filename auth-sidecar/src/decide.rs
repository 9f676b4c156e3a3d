//! The decision: plain data in, `Decision` out. No I/O, no clock reads (`now` is passed).
//!
//! Phases, in order:
//! 1. forwarded facts: method and URI are required; the path is normalised;
//! 2. the first matching rule, else deny `no_rule`; a per-tool rule (`mcp_tools`) whose
//!    MCP headers cannot be relied on denies `mcp_protocol_version` (or `malformed`);
//! 3. the rule's CIDR filter against the client address (right-most untrusted XFF entry);
//! 4. preflight and `public`/`deny` actions, which need no token;
//! 5. the token: extracted by fixed precedence, verified through the cache (a cached entry
//!    counts only while its issuer's keys are the generation it was verified with);
//! 6. revocation (after the signature, before any allow, cached or not);
//! 7. an `mcp:` rule's resource in `aud` (else `bad_audience`), the role requirement, then
//!    the `mcp:` rule's scopes (else `insufficient_scope`);
//! 8. a `401` on a rule with `login_url` becomes a redirect for browsers.
//!
//! Around it, [`decide_with_keys`] is the one async step: when the token needs remote keys
//! we lack, it fetches them (singleflight, cooldown) and decides again. [`rate_limit`] runs
//! after an allow with a monotonic `now`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::cache::{Authenticated, CacheUse, Lookup};
use crate::config::Runtime;
use crate::decision::{Decision, DenyAnswer, RuleIndex};
use crate::facts::RequestFacts;
use crate::jwt;
use crate::keys::jwks::RemoteKeys;
use crate::login::prefers_html;
use crate::mcp_resource::Grants;
use crate::net::{ClientIp, client_ip};
use crate::policy::path::{normalize, split_uri};
use crate::policy::{Action, Rule, has_encoded_separator, normalize_host};
use crate::ratelimit::{Limiter, SharedLimiter};
use crate::reason::{AllowReason, DenyReason};
use crate::token;

/// Remote keys a token needs and we lack: its issuer (index) and `kid`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyRequest {
    pub issuer: usize,
    pub kid: Option<String>,
}

/// A decision and how it was reached.
#[derive(Debug)]
pub struct Outcome {
    pub decision: Decision,
    pub cache: CacheUse,
    /// Set when the token was denied for want of remote keys a fetch might bring.
    pub key_request: Option<KeyRequest>,
    /// The verified token behind an authenticated allow (rate limits key on its `sub`) or a
    /// role denial (its audit event names the subject).
    pub authenticated: Option<Arc<Authenticated>>,
}

/// What `decide_inner` learns on the way, besides the decision.
struct Trace {
    cache: CacheUse,
    key_request: Option<KeyRequest>,
    authenticated: Option<Arc<Authenticated>>,
}

fn deny(rule: RuleIndex, reason: DenyReason, token_presented: bool) -> Decision {
    Decision::Deny {
        rule,
        reason,
        token_presented,
        answer: DenyAnswer::Standard,
    }
}

/// Decides one forwardAuth request at unix time `now`, with the keys installed now.
pub fn decide(facts: &RequestFacts<'_>, rt: &Runtime, now: i64) -> Outcome {
    let mut trace = Trace {
        cache: CacheUse::NotNeeded,
        key_request: None,
        authenticated: None,
    };
    let mut decision = decide_inner(facts, rt, now, &mut trace);
    if let Decision::Deny {
        rule: Some(index),
        reason,
        answer,
        ..
    } = &mut decision
        && reason.is_unauthenticated()
        // Logging in again cannot help while the issuer's keys are unavailable: no loop.
        && *reason != DenyReason::KeysUnavailable
        && let Some(login) = &rt.policy.rules[*index].login
        && prefers_html(&facts.accept)
    {
        *answer = DenyAnswer::Redirect(login.location(facts, &rt.tokens.query_param));
    }
    Outcome {
        decision,
        cache: trace.cache,
        key_request: trace.key_request,
        authenticated: trace.authenticated,
    }
}

/// Decides like [`decide`], but when the token needs remote keys we do not have (unknown
/// `kid`, nothing fetched yet, or stale), first fetches them (at most one fetch in flight
/// per issuer and one forced fetch per cooldown) and decides again.
pub async fn decide_with_keys(facts: &RequestFacts<'_>, rt: &Runtime, now: i64) -> Outcome {
    let outcome = decide(facts, rt, now);
    if refresh_keys(&outcome, rt, now).await {
        decide(facts, rt, now)
    } else {
        outcome
    }
}

/// The remote key set `outcome` was denied for want of, if any: then the caller should
/// [`refresh_keys`] and decide again.
pub fn needs_keys<'a>(outcome: &Outcome, rt: &'a Runtime) -> Option<&'a RemoteKeys> {
    let request = outcome.key_request.as_ref()?;
    rt.issuers.get(request.issuer)?.remote.as_deref()
}

/// Fetches the keys `outcome` was denied for want of (see [`decide_with_keys`]); true when
/// a fetch completed, so deciding again may now succeed.
pub async fn refresh_keys(outcome: &Outcome, rt: &Runtime, now: i64) -> bool {
    let Some(remote) = needs_keys(outcome, rt) else {
        return false;
    };
    let kid = outcome.key_request.as_ref().and_then(|r| r.kid.as_deref());
    remote.refresh_for_kid(kid, now).await
}

/// Applies the matched rule's rate limit to an allow, at monotonic time `now`: per `sub`
/// when a token was verified, else per client address. Over the limit: `429 rate_limited`
/// with `Retry-After`. Preflights are not counted. A rule whose limit is kept in Redis
/// (`store: redis`) is not decided here: the returned [`SharedCheck`] must be awaited.
pub fn rate_limit(
    outcome: &mut Outcome,
    facts: &RequestFacts<'_>,
    rt: &Runtime,
    now: Instant,
) -> Option<SharedCheck> {
    let Decision::Allow {
        rule: Some(index),
        reason,
        ..
    } = &outcome.decision
    else {
        return None;
    };
    let index = *index;
    let limiter = rt.policy.rules[index].rate_limit.as_ref()?;
    if *reason == AllowReason::Preflight {
        return None;
    }
    let subject = outcome
        .authenticated
        .as_ref()
        .and_then(|a| a.subject.as_deref());
    let token_presented = subject.is_some();
    let key = match subject {
        Some(sub) => format!("sub:{sub}"),
        None => match client_ip(
            facts.forwarded_for.iter().copied(),
            facts.peer,
            &rt.trusted_proxies,
        ) {
            ClientIp::Known(ip) => format!("ip:{ip}"),
            // Unknown addresses share one bucket rather than escaping the limit.
            _ => "ip:unknown".to_owned(),
        },
    };
    match limiter {
        Limiter::Local(local) => {
            if let Err(wait) = local.check(&key, now) {
                outcome.decision = over_limit(index, wait, token_presented);
            }
            None
        }
        Limiter::Shared(shared) => Some(SharedCheck {
            index,
            identity: key,
            limiter: shared.clone(),
            token_presented,
        }),
    }
}

fn over_limit(index: usize, wait: Duration, token_presented: bool) -> Decision {
    Decision::Deny {
        rule: Some(index),
        reason: DenyReason::RateLimited,
        token_presented,
        answer: DenyAnswer::RetryAfter(wait.as_secs() + u64::from(wait.subsec_nanos() > 0)),
    }
}

/// A rate-limit check that asks Redis, for an allow [`rate_limit`] left undecided.
#[derive(Debug)]
pub struct SharedCheck {
    index: usize,
    identity: String,
    limiter: Arc<SharedLimiter>,
    token_presented: bool,
}

impl SharedCheck {
    /// Takes a token from the shared bucket. When Redis gives no answer in time, the rule's
    /// `deny_on_error` decides: deny `rate_limit_unavailable` (429, `Retry-After: 1`: the
    /// caller may pass, the limiter cannot say so now) or keep the allow; either way the
    /// failure is counted in `auth_sidecar_redis_errors_total{operation="rate_limit"}`.
    pub async fn apply(self, outcome: &mut Outcome) {
        match self.limiter.check(&self.identity).await {
            Ok(Ok(())) => {}
            Ok(Err(wait)) => {
                outcome.decision = over_limit(self.index, wait, self.token_presented);
            }
            Err(_) if self.limiter.deny_on_error => {
                outcome.decision = Decision::Deny {
                    rule: Some(self.index),
                    reason: DenyReason::RateLimitUnavailable,
                    token_presented: self.token_presented,
                    answer: DenyAnswer::RetryAfter(1),
                };
            }
            Err(_) => {}
        }
    }
}

fn decide_inner(facts: &RequestFacts<'_>, rt: &Runtime, now: i64, trace: &mut Trace) -> Decision {
    let (Some(method), Some(uri)) = (facts.method.get(), facts.uri.get()) else {
        return deny(None, DenyReason::Malformed, false);
    };
    let (raw_path, _) = split_uri(uri);
    let Ok(path) = normalize(raw_path) else {
        return deny(None, DenyReason::Malformed, false);
    };
    let host = facts.host.get().map(normalize_host);
    let index = match rt.policy.find(host.as_deref(), &path, method, facts) {
        Ok(Some(index)) => index,
        Ok(None) => return deny(None, DenyReason::NoRule, false),
        Err((index, reason)) => return deny(Some(index), reason, false),
    };
    let rule = &rt.policy.rules[index];
    let at = Some(index);
    if rule.deny_encoded_separators
        && !matches!(rule.action, Action::Public)
        && has_encoded_separator(raw_path)
    {
        return deny(at, DenyReason::Malformed, false);
    }

    if !rule.cidrs.is_empty() && !address_allowed(facts, rt, rule) {
        return deny(at, DenyReason::IpDenied, false);
    }
    if rule.allow_preflight
        && method.eq_ignore_ascii_case("OPTIONS")
        && facts.has_origin
        && facts.has_preflight_method
    {
        return Decision::Allow {
            rule: at,
            reason: AllowReason::Preflight,
            identity: None,
        };
    }
    match rule.action {
        Action::Public => {
            return Decision::Allow {
                rule: at,
                reason: AllowReason::Public,
                identity: None,
            };
        }
        Action::Deny => return deny(at, DenyReason::RuleDenied, false),
        Action::Authenticated | Action::Roles(_) => {}
    }

    let token = match token::extract(facts, &rt.tokens, rule.allow_query_token) {
        Ok(Some((token, _source))) => token,
        Ok(None) => return deny(at, DenyReason::MissingToken, false),
        Err(reason) => return deny(at, reason, true),
    };
    let authenticated = match verify_cached(&token, rt, now, &mut trace.cache) {
        Ok(a) => a,
        Err(reason) => {
            if matches!(reason, DenyReason::UnknownKid | DenyReason::KeysUnavailable) {
                trace.key_request = jwt::key_request(&token, &rt.issuers)
                    .map(|(issuer, kid)| KeyRequest { issuer, kid });
            }
            return deny(at, reason, true);
        }
    };
    // Known from here on, so a role denial's audit event names the subject too.
    trace.authenticated = Some(authenticated.clone());
    // RFC 8707: a token issued for another resource is not for us, whatever it grants.
    if let Some(mcp) = &rule.mcp
        && !authenticated.grants.has_audience(&mcp.resource.uri)
    {
        return deny(at, DenyReason::BadAudience, true);
    }
    if let Action::Roles(required) = &rule.action
        && !required.is_satisfied_by(authenticated.roles.iter().map(String::as_str))
    {
        return deny(at, DenyReason::RoleDenied, true);
    }
    if let Some(mcp) = &rule.mcp
        && !authenticated.grants.has_scopes(&mcp.scopes)
    {
        return deny(at, DenyReason::InsufficientScope, true);
    }
    let identity = Some(authenticated.headers.clone());
    Decision::Allow {
        rule: at,
        reason: AllowReason::Authenticated,
        identity,
    }
}

fn address_allowed(facts: &RequestFacts<'_>, rt: &Runtime, rule: &Rule) -> bool {
    let ClientIp::Known(ip) = client_ip(
        facts.forwarded_for.iter().copied(),
        facts.peer,
        &rt.trusted_proxies,
    ) else {
        return false;
    };
    !rule.cidrs.deny.contains(ip) && (rule.cidrs.allow.is_empty() || rule.cidrs.allow.contains(ip))
}

/// Verifies a token, answering from the cache when it can. A cached entry counts only while
/// its issuer's keys are the generation it was verified with; revocation is checked on
/// every answer, cached or not, and a revoked token is never cached.
pub fn verify_cached(
    token: &str,
    rt: &Runtime,
    now: i64,
    cache: &mut CacheUse,
) -> Result<Arc<Authenticated>, DenyReason> {
    *cache = CacheUse::Miss;
    match rt.cache.get(token, now) {
        Lookup::Valid(a) => {
            let current = rt.issuers.get(a.issuer).and_then(|i| i.generation(now));
            if current == Some(a.key_generation) {
                *cache = CacheUse::Hit;
                if rt.revocation.is_revoked(&a, now) {
                    return Err(DenyReason::Revoked);
                }
                return Ok(a);
            }
            // Keys changed or became unusable since: verify again below.
        }
        Lookup::Invalid(reason) => {
            *cache = CacheUse::Hit;
            return Err(reason);
        }
        Lookup::Miss => {}
    }
    match verify_uncached(token, rt, now) {
        Ok(a) if rt.revocation.is_revoked(&a, now) => Err(DenyReason::Revoked),
        Ok(a) => {
            let a = Arc::new(a);
            rt.cache.insert_valid(token, a.clone(), now);
            Ok(a)
        }
        Err(reason) => {
            rt.cache.insert_invalid(token, reason);
            Err(reason)
        }
    }
}

/// Full verification and identity building, no cache.
pub fn verify_uncached(token: &str, rt: &Runtime, now: i64) -> Result<Authenticated, DenyReason> {
    let verified = jwt::verify(token, &rt.issuers, now)?;
    let identity = rt.identity.build(&verified.claims)?;
    let text = |name: &str| {
        verified
            .claims
            .get(name)
            .and_then(serde_json::Value::as_str)
            .map(Box::from)
    };
    Ok(Authenticated {
        issuer: verified.issuer,
        roles: identity.roles,
        valid_until: verified.valid_until,
        headers: Arc::new(identity.headers),
        key_generation: verified.key_generation,
        subject: text("sub"),
        jti: text("jti"),
        issued_at: verified.claims.get("iat").and_then(|v| {
            v.as_i64()
                .or_else(|| v.as_f64().filter(|f| f.is_finite()).map(|f| f as i64))
        }),
        // Only rules with an `mcp:` block read grants; without one a miss skips them.
        grants: if rt.resources.is_empty() {
            Grants::default()
        } else {
            Grants::from_claims(&verified.claims)
        },
    })
}

#[cfg(test)]
mod mcp_tests;
#[cfg(test)]
mod tests;
