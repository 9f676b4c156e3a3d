//! The decision: plain data in, `Decision` out. No I/O, no clock reads (`now` is passed).
//!
//! Phases, in order:
//! 1. forwarded facts: method and URI are required; the path is normalised;
//! 2. the first matching rule, else deny `no_rule`;
//! 3. the rule's CIDR filter against the client address (right-most untrusted XFF entry);
//! 4. preflight and `public`/`deny` actions, which need no token;
//! 5. the token: extracted by fixed precedence, verified through the cache;
//! 6. role requirement.

use std::sync::Arc;

use crate::cache::{Authenticated, Lookup};
use crate::config::Runtime;
use crate::decision::{AllowReason, Decision, DenyReason, RuleIndex};
use crate::facts::RequestFacts;
use crate::jwt;
use crate::net::{ClientIp, client_ip};
use crate::policy::path::{normalize, split_uri};
use crate::policy::{Action, Rule, normalize_host};
use crate::token;

/// Whether the verification cache answered (for metrics).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CacheUse {
    NotNeeded,
    Hit,
    Miss,
}

/// A decision and how it was reached.
#[derive(Debug)]
pub struct Outcome {
    pub decision: Decision,
    pub cache: CacheUse,
}

fn deny(rule: RuleIndex, reason: DenyReason, token_presented: bool) -> Decision {
    Decision::Deny {
        rule,
        reason,
        token_presented,
    }
}

/// Decides one forwardAuth request at unix time `now`.
pub fn decide(facts: &RequestFacts<'_>, rt: &Runtime, now: i64) -> Outcome {
    let mut cache = CacheUse::NotNeeded;
    let decision = decide_inner(facts, rt, now, &mut cache);
    Outcome { decision, cache }
}

fn decide_inner(
    facts: &RequestFacts<'_>,
    rt: &Runtime,
    now: i64,
    cache: &mut CacheUse,
) -> Decision {
    let (Some(method), Some(uri)) = (facts.method.get(), facts.uri.get()) else {
        return deny(None, DenyReason::Malformed, false);
    };
    let (raw_path, _) = split_uri(uri);
    let Ok(path) = normalize(raw_path) else {
        return deny(None, DenyReason::Malformed, false);
    };
    let host = facts.host.get().map(normalize_host);
    let Some(index) = rt.policy.find(host.as_deref(), &path, method) else {
        return deny(None, DenyReason::NoRule, false);
    };
    let rule = &rt.policy.rules[index];
    let at = Some(index);

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
    let authenticated = match verify_cached(&token, rt, now, cache) {
        Ok(a) => a,
        Err(reason) => return deny(at, reason, true),
    };
    if let Action::Roles(required) = &rule.action
        && !required.is_satisfied_by(authenticated.roles.iter().map(String::as_str))
    {
        return deny(at, DenyReason::RoleDenied, true);
    }
    Decision::Allow {
        rule: at,
        reason: AllowReason::Authenticated,
        identity: Some(authenticated.headers.clone()),
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

/// Verifies a token, answering from the cache when it can.
pub fn verify_cached(
    token: &str,
    rt: &Runtime,
    now: i64,
    cache: &mut CacheUse,
) -> Result<Arc<Authenticated>, DenyReason> {
    match rt.cache.get(token, now) {
        Lookup::Valid(a) => {
            *cache = CacheUse::Hit;
            return Ok(a);
        }
        Lookup::Invalid(reason) => {
            *cache = CacheUse::Hit;
            return Err(reason);
        }
        Lookup::Miss => *cache = CacheUse::Miss,
    }
    match verify_uncached(token, rt, now) {
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
    Ok(Authenticated {
        issuer: verified.issuer,
        roles: identity.roles,
        valid_until: verified.valid_until,
        headers: Arc::new(identity.headers),
    })
}

#[cfg(test)]
mod tests;
