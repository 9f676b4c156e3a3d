//! `rules[i]`: matchers, action, CIDR filters, rate limit and login redirect.

use std::sync::Arc;
use std::time::Duration;

use regex::Regex;

use super::compiler::Compiler;
use super::raw::{RawMcp, RawRateLimit, RawRule};
use crate::login::LoginRedirect;
use crate::mcp_resource::{Metadata, Resource, canonical_resource, is_scope_token};
use crate::policy::mcp::{McpMatcher, NamePattern, TOOLS_CALL};
use crate::policy::{
    Action, CidrFilter, HostMatcher, MethodSet, PathMatcher, RoleRequirement, Rule, RuleMcp,
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
    resources: &mut Resources,
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
    let mcp_match = compile_mcp_match(raw, path, c);
    let mcp = raw
        .mcp
        .as_ref()
        .and_then(|m| compile_mcp(m, raw, &action, &format!("{path}.mcp"), resources, c));
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
        mcp_match,
        mcp,
    })
}

/// The protected resources of all rules so far: rules naming one resource share it, and
/// must describe it alike.
#[derive(Debug, Default)]
pub(super) struct Resources {
    pub list: Vec<(Metadata, Arc<Resource>)>,
}

fn compile_mcp_match(raw: &RawRule, path: &str, c: &mut Compiler) -> McpMatcher {
    let patterns = |list: &[String], key: &str, c: &mut Compiler| -> Vec<NamePattern> {
        let mut out = Vec::new();
        for (i, p) in list.iter().enumerate() {
            let body = p.strip_suffix('*').unwrap_or(p);
            if p.is_empty() || body.contains('*') || !p.bytes().all(|b| b.is_ascii_graphic()) {
                c.push(
                    format!("{path}.{key}[{i}]"),
                    format!("invalid name {p:?}: visible ASCII, with at most a trailing \"*\""),
                );
            }
            out.push(NamePattern::new(p));
        }
        out
    };
    let methods = patterns(&raw.mcp_methods, "mcp_methods", c);
    let tools = patterns(&raw.mcp_tools, "mcp_tools", c);
    if !tools.is_empty() && !methods.is_empty() && !methods.iter().any(|m| m.matches(TOOLS_CALL)) {
        c.push(
            format!("{path}.mcp_methods"),
            "mcp_tools match tools/call only, which mcp_methods leaves out: the rule could never match",
        );
    }
    McpMatcher { methods, tools }
}

/// An absolute https URL (http on loopback), for the URLs an `mcp:` block publishes.
fn check_public_url(url: &str, key: &str, c: &mut Compiler) {
    if let Err(e) = canonical_resource(url) {
        c.push(key, e);
    }
}

fn compile_mcp(
    raw: &RawMcp,
    rule: &RawRule,
    action: &Action,
    path: &str,
    resources: &mut Resources,
    c: &mut Compiler,
) -> Option<RuleMcp> {
    let before = c.problem_count();
    if !matches!(action, Action::Authenticated | Action::Roles(_)) {
        c.push(
            path,
            "applies only to authenticated and roles rules (a protected resource needs a token)",
        );
    }
    if rule.allow_query_token {
        c.push(
            path,
            "cannot be combined with allow_query_token: MCP clients must send the token in the Authorization header",
        );
    }
    if rule.login_url.is_some() {
        c.push(
            path,
            "cannot be combined with login_url: MCP clients follow the WWW-Authenticate challenge, not a redirect",
        );
    }
    let uri = if raw.resource.is_empty() {
        c.push(
            format!("{path}.resource"),
            "is required: the canonical URI of the MCP server (https://mcp.example.com/mcp)",
        );
        None
    } else {
        match canonical_resource(&raw.resource) {
            Ok(u) => Some(u),
            Err(e) => {
                c.push(format!("{path}.resource"), e);
                None
            }
        }
    };
    if raw.authorization_servers.is_empty() {
        c.push(
            format!("{path}.authorization_servers"),
            "needs at least one issuer URL: MCP clients find the authorization server there",
        );
    }
    for (i, a) in raw.authorization_servers.iter().enumerate() {
        check_public_url(a, &format!("{path}.authorization_servers[{i}]"), c);
    }
    if let Some(docs) = &raw.resource_documentation {
        check_public_url(docs, &format!("{path}.resource_documentation"), c);
    }
    for (key, list) in [
        ("scopes_supported", &raw.scopes_supported),
        ("scopes", &raw.scopes),
    ] {
        for (i, s) in list.iter().enumerate() {
            if !is_scope_token(s) {
                c.push(
                    format!("{path}.{key}[{i}]"),
                    format!("invalid scope {s:?}: printable ASCII without spaces, quotes or backslashes (RFC 6749 §3.3)"),
                );
            }
        }
    }
    let uri = uri?;
    if c.problem_count() != before {
        return None;
    }
    let metadata = Metadata {
        authorization_servers: raw.authorization_servers.clone(),
        scopes_supported: raw.scopes_supported.clone(),
        resource_documentation: raw.resource_documentation.clone(),
    };
    let resource = match resources.list.iter().find(|(_, r)| r.uri == uri) {
        Some((m, r)) if *m == metadata => r.clone(),
        Some(_) => {
            c.push(
                path,
                format!("describes resource {uri:?} unlike an earlier rule: authorization_servers, scopes_supported and resource_documentation must be the same on every rule naming it"),
            );
            return None;
        }
        None => {
            let r = Arc::new(Resource::new(&uri, &metadata));
            resources.list.push((metadata, r.clone()));
            r
        }
    };
    Some(RuleMcp {
        resource,
        scopes: raw.scopes.iter().map(|s| Box::from(s.as_str())).collect(),
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
