//! `rules[i]`: matchers, action, CIDR filters, rate limit and login redirect.

use std::sync::Arc;
use std::time::Duration;

use regex::Regex;

use super::compiler::Compiler;
use super::raw::{RawRateLimit, RawRule};
use crate::login::LoginRedirect;
use crate::policy::{
    Action, CidrFilter, HostMatcher, MethodSet, PathMatcher, RoleRequirement, Rule,
};
use crate::ratelimit::{Limiter, MAX_LEASE, RateLimit, RateLimiter, SharedLimiter};
use crate::redis_pool::RedisPool;

/// Compiles `rules[i]`; `None` when it has a problem. `redis` is the compiled `redis:`
/// block (`redis_block`: whether one was written, even with problems of its own).
pub(super) fn compile_rule(
    raw: &RawRule,
    path: &str,
    redis: Option<&Arc<RedisPool>>,
    redis_block: bool,
    c: &mut Compiler,
) -> Option<Rule> {
    let before = c.problem_count();
    if raw.name.is_empty() {
        c.push(
            format!("{path}.name"),
            "is required (it labels metrics and logs)",
        );
    }
    let given = [&raw.path, &raw.path_prefix, &raw.path_regex]
        .iter()
        .filter(|p| p.is_some())
        .count();
    if given > 1 {
        c.push(path, "give at most one of path, path_prefix, path_regex");
    }
    let check_path = |p: &str, key: &str, c: &mut Compiler| {
        if !p.starts_with('/') {
            c.push(
                format!("{path}.{key}"),
                format!("{p:?} must start with \"/\""),
            );
        }
    };
    let matcher = if let Some(p) = &raw.path {
        check_path(p, "path", c);
        PathMatcher::Exact(p.clone())
    } else if let Some(p) = &raw.path_prefix {
        check_path(p, "path_prefix", c);
        PathMatcher::Prefix(p.clone())
    } else if let Some(r) = &raw.path_regex {
        match Regex::new(r) {
            Ok(re) => PathMatcher::Regex(re),
            Err(e) => {
                c.push(
                    format!("{path}.path_regex"),
                    format!("invalid regex {r:?}: {e}"),
                );
                PathMatcher::Any
            }
        }
    } else {
        PathMatcher::Any
    };
    let mut methods = MethodSet::default();
    for (i, m) in raw.methods.iter().enumerate() {
        match MethodSet::bit(m) {
            Some(b) => methods.insert(b),
            None => c.push(
                format!("{path}.methods[{i}]"),
                format!("unknown HTTP method {m:?}"),
            ),
        }
    }
    let mut hosts = Vec::new();
    for (i, h) in raw.hosts.iter().enumerate() {
        let lower = h.to_ascii_lowercase();
        let body = lower.strip_prefix("*.").unwrap_or(&lower);
        if body.is_empty() || body.contains('*') || body.contains(':') || body.contains('/') {
            c.push(
                format!("{path}.hosts[{i}]"),
                format!("invalid host {h:?}: expected a name or \"*.suffix\""),
            );
        }
        hosts.push(lower);
    }
    let action = match raw.action.as_str() {
        "public" => Action::Public,
        "authenticated" => Action::Authenticated,
        "deny" => Action::Deny,
        "roles" => {
            if raw.roles.is_empty() {
                c.push(
                    format!("{path}.roles"),
                    "action roles needs at least one role",
                );
            }
            match raw.roles_mode.as_deref().unwrap_or("any") {
                "any" => Action::Roles(RoleRequirement::AnyOf(raw.roles.clone())),
                "all" => Action::Roles(RoleRequirement::AllOf(raw.roles.clone())),
                other => {
                    c.push(
                        format!("{path}.roles_mode"),
                        format!("invalid value {other:?}: expected any or all"),
                    );
                    Action::Deny
                }
            }
        }
        other => {
            c.push(
                format!("{path}.action"),
                format!("invalid action {other:?}: expected public, authenticated, roles or deny"),
            );
            Action::Deny
        }
    };
    if !matches!(action, Action::Roles(_)) && (!raw.roles.is_empty() || raw.roles_mode.is_some()) {
        c.push(
            format!("{path}.roles"),
            "roles only apply with action: roles",
        );
    }
    let cidrs = CidrFilter {
        allow: c.cidrs(&raw.allow_cidrs, &format!("{path}.allow_cidrs")),
        deny: c.cidrs(&raw.deny_cidrs, &format!("{path}.deny_cidrs")),
    };
    let rate_limit = raw.rate_limit.as_ref().and_then(|r| {
        let at = format!("{path}.rate_limit");
        compile_rate_limit(r, &raw.name, &at, redis, redis_block, c)
    });
    let login = raw.login_url.as_ref().and_then(|url| {
        let key = format!("{path}.login_url");
        match reqwest::Url::parse(url) {
            Ok(u) if matches!(u.scheme(), "http" | "https") && u.host_str().is_some() => {
                if matches!(action, Action::Public | Action::Deny) {
                    c.push(&key, "applies only to authenticated and roles rules");
                }
                Some(LoginRedirect { url: url.clone() })
            }
            _ => {
                c.push(
                    key,
                    format!("invalid URL {url:?}: must be absolute (https://login.example.com/...), since a relative Location is resolved against the sidecar's address"),
                );
                None
            }
        }
    });
    (c.problem_count() == before).then(|| Rule {
        name: Arc::from(raw.name.as_str()),
        hosts: HostMatcher::new(&hosts),
        path: matcher,
        methods,
        action,
        cidrs,
        allow_query_token: raw.allow_query_token,
        allow_preflight: raw.allow_preflight,
        deny_encoded_separators: raw.deny_encoded_separators.unwrap_or(true),
        rate_limit,
        login,
    })
}

fn compile_rate_limit(
    raw: &RawRateLimit,
    rule: &str,
    path: &str,
    redis: Option<&Arc<RedisPool>>,
    redis_block: bool,
    c: &mut Compiler,
) -> Option<Limiter> {
    let before = c.problem_count();
    let shared = match raw.store.as_deref().unwrap_or("local") {
        "local" => false,
        "redis" => {
            if !redis_block {
                c.push(
                    format!("{path}.store"),
                    "store: redis needs the top-level redis: block (url, ...)",
                );
            }
            true
        }
        other => {
            c.push(
                format!("{path}.store"),
                format!("invalid value {other:?}: expected local or redis"),
            );
            false
        }
    };
    if shared && raw.max_keys.is_some() {
        c.warn(format!(
            "{path}.max_keys: applies to store: local only; keys in Redis expire once their bucket is full again"
        ));
    }
    if raw.requests == 0 {
        c.push(format!("{path}.requests"), "must be at least 1");
    }
    let per = c.duration(
        raw.per.as_ref(),
        Duration::from_secs(1),
        &format!("{path}.per"),
    );
    if per.is_zero() {
        c.push(format!("{path}.per"), "must be greater than zero");
    }
    let burst = raw.burst.unwrap_or(raw.requests);
    if burst == 0 {
        c.push(format!("{path}.burst"), "must be at least 1");
    }
    let max_keys = raw.max_keys.unwrap_or(100_000);
    if max_keys == 0 {
        c.push(format!("{path}.max_keys"), "must be at least 1");
    }
    let lease = raw.lease.unwrap_or(1);
    if !(1..=MAX_LEASE).contains(&lease) {
        c.push(
            format!("{path}.lease"),
            format!("{lease} is not between 1 and {MAX_LEASE}"),
        );
    } else if lease > 1 && !shared {
        c.push(format!("{path}.lease"), "applies to store: redis only");
    }
    if c.problem_count() != before {
        return None;
    }
    let limit = RateLimit {
        requests: raw.requests,
        per,
        burst,
        max_keys,
    };
    if !shared {
        return Some(Limiter::Local(Arc::new(RateLimiter::new(limit))));
    }
    // `None` when the redis: block has problems of its own (already reported).
    let pool = redis?.clone();
    let deny_on_error = raw.deny_on_error.unwrap_or(true);
    Some(Limiter::Shared(Arc::new(
        SharedLimiter::new(limit, rule, deny_on_error, pool).with_lease(lease),
    )))
}
