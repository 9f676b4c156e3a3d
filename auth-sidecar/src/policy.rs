//! Compiled route rules: evaluated in order, the first match wins, unmatched is denied.

pub mod mcp;
pub mod path;

use std::sync::Arc;

use regex::Regex;

use crate::facts::RequestFacts;
use crate::mcp_resource::Resource;
use crate::net::CidrSet;
use crate::reason::DenyReason;
use mcp::McpMatcher;

/// What a matching rule does.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Allow without a token and emit no identity.
    Public,
    /// Any valid token.
    Authenticated,
    /// A valid token whose roles satisfy the requirement.
    Roles(RoleRequirement),
    /// Always deny (403 `rule_denied`).
    Deny,
}

/// Roles are looked up in the union of the role claim and the roles-array claim.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RoleRequirement {
    AnyOf(Vec<String>),
    AllOf(Vec<String>),
}

impl RoleRequirement {
    pub fn is_satisfied_by<'a>(&self, have: impl Iterator<Item = &'a str> + Clone) -> bool {
        match self {
            RoleRequirement::AnyOf(want) => want.iter().any(|w| have.clone().any(|h| h == w)),
            RoleRequirement::AllOf(want) => want.iter().all(|w| have.clone().any(|h| h == w)),
        }
    }
}

/// Host matcher: exact names or `*.suffix` (any depth below the suffix, not the suffix itself).
#[derive(Clone, Debug, Default)]
pub struct HostMatcher {
    exact: Vec<String>,
    /// Stored with the leading dot: `.example.com`.
    suffixes: Vec<String>,
}

impl HostMatcher {
    /// Patterns must already be lower-case (config validation does that).
    pub fn new(patterns: &[String]) -> Self {
        let mut m = HostMatcher::default();
        for p in patterns {
            match p.strip_prefix('*') {
                Some(suffix) => m.suffixes.push(suffix.to_owned()),
                None => m.exact.push(p.clone()),
            }
        }
        m
    }

    fn is_any(&self) -> bool {
        self.exact.is_empty() && self.suffixes.is_empty()
    }

    /// `host` is lower-cased with the port stripped.
    fn matches(&self, host: Option<&str>) -> bool {
        if self.is_any() {
            return true;
        }
        let Some(host) = host else { return false };
        self.exact.iter().any(|e| e == host)
            || self
                .suffixes
                .iter()
                .any(|s| host.len() > s.len() && host.ends_with(s.as_str()))
    }
}

/// Path matcher over the normalised path.
#[derive(Clone, Debug)]
pub enum PathMatcher {
    Any,
    Exact(String),
    /// Segment-aware: `/api` matches `/api`, `/api/` and `/api/x`, never `/api-internal`.
    Prefix(String),
    Regex(Regex),
}

impl PathMatcher {
    fn matches(&self, path: &str) -> bool {
        match self {
            PathMatcher::Any => true,
            PathMatcher::Exact(p) => path == p,
            PathMatcher::Prefix(p) => match path.strip_prefix(p.as_str()) {
                Some(rest) => rest.is_empty() || rest.starts_with('/') || p.ends_with('/'),
                None => false,
            },
            PathMatcher::Regex(r) => r.is_match(path),
        }
    }
}

/// HTTP methods as a bit set; empty means any.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MethodSet(u16);

const METHODS: [&str; 9] = [
    "GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "CONNECT", "TRACE",
];

impl MethodSet {
    /// Returns `None` for a method we do not know.
    pub fn bit(method: &str) -> Option<u16> {
        METHODS
            .iter()
            .position(|m| m.eq_ignore_ascii_case(method))
            .map(|i| 1 << i)
    }

    pub fn insert(&mut self, bit: u16) {
        self.0 |= bit;
    }

    fn matches(self, method: &str) -> bool {
        self.0 == 0 || MethodSet::bit(method).is_some_and(|b| self.0 & b != 0)
    }
}

/// Per-rule address filter.
#[derive(Clone, Debug, Default)]
pub struct CidrFilter {
    pub allow: CidrSet,
    pub deny: CidrSet,
}

impl CidrFilter {
    pub fn is_empty(&self) -> bool {
        self.allow.is_empty() && self.deny.is_empty()
    }
}

/// One compiled rule.
#[derive(Clone, Debug)]
pub struct Rule {
    pub name: Arc<str>,
    pub hosts: HostMatcher,
    pub path: PathMatcher,
    pub methods: MethodSet,
    pub action: Action,
    pub cidrs: CidrFilter,
    /// Read a token from the query parameter of `X-Forwarded-Uri` (WebSocket routes).
    pub allow_query_token: bool,
    /// Allow CORS preflights (OPTIONS + Origin + Access-Control-Request-Method) unauthenticated.
    pub allow_preflight: bool,
    /// Deny (`malformed`) a raw path holding `%2F`, `%5C` or `%00` unless the rule is
    /// `public`: a backend that decodes them before routing would serve another path than
    /// the one decided on (`/api/v1/public/..%2Fadmin`).
    pub deny_encoded_separators: bool,
    /// Token bucket per `sub` (per client address on public rules), in this process or in
    /// Redis; `None` = unlimited.
    pub rate_limit: Option<crate::ratelimit::Limiter>,
    /// Where browsers are sent instead of a `401`.
    pub login: Option<crate::login::LoginRedirect>,
    /// `mcp_methods` / `mcp_tools`: matched on the mirrored MCP headers.
    pub mcp_match: McpMatcher,
    /// The `mcp:` block: the protected resource tokens must be issued for, and the scopes
    /// this rule requires.
    pub mcp: Option<RuleMcp>,
}

/// A rule's `mcp:` block, compiled.
#[derive(Clone, Debug)]
pub struct RuleMcp {
    pub resource: Arc<Resource>,
    /// Every scope the token must carry here (beside any role requirement).
    pub scopes: Box<[Box<str>]>,
}

impl Rule {
    fn matches(&self, host: Option<&str>, path: &str, method: &str) -> bool {
        self.methods.matches(method) && self.hosts.matches(host) && self.path.matches(path)
    }
}

/// The ordered rule list.
#[derive(Clone, Debug, Default)]
pub struct Policy {
    pub rules: Vec<Rule>,
}

impl Policy {
    /// Index of the first rule matching the request, if any. A rule with MCP matchers whose
    /// host, path and method match but whose MCP headers cannot be relied on stops the
    /// search: `Err((rule, reason))`.
    pub fn find(
        &self,
        host: Option<&str>,
        path: &str,
        method: &str,
        facts: &RequestFacts<'_>,
    ) -> Result<Option<usize>, (usize, DenyReason)> {
        for (i, rule) in self.rules.iter().enumerate() {
            if !rule.matches(host, path, method) {
                continue;
            }
            match rule.mcp_match.check(facts) {
                Ok(true) => return Ok(Some(i)),
                Ok(false) => {}
                Err(reason) => return Err((i, reason)),
            }
        }
        Ok(None)
    }
}

/// Whether a raw (undecoded) path holds an encoded `/`, `\\` or NUL, in any case.
pub fn has_encoded_separator(raw_path: &str) -> bool {
    raw_path.as_bytes().windows(3).any(|w| {
        w[0] == b'%'
            && matches!(
                (w[1], w[2].to_ascii_uppercase()),
                (b'2', b'F') | (b'5', b'C') | (b'0', b'0')
            )
    })
}

/// Lower-cases a `Host`/`X-Forwarded-Host` value and strips the port.
pub fn normalize_host(host: &str) -> std::borrow::Cow<'_, str> {
    let host = host.trim();
    let without_port = if let Some(rest) = host.strip_prefix('[') {
        // [v6]:port → v6
        rest.split_once(']').map_or(rest, |(h, _)| h)
    } else {
        match host.rsplit_once(':') {
            Some((h, port)) if port.bytes().all(|b| b.is_ascii_digit()) => h,
            _ => host,
        }
    };
    let without_dot = without_port.strip_suffix('.').unwrap_or(without_port);
    if without_dot.bytes().any(|b| b.is_ascii_uppercase()) {
        std::borrow::Cow::Owned(without_dot.to_ascii_lowercase())
    } else {
        std::borrow::Cow::Borrowed(without_dot)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_is_segment_aware() {
        let p = PathMatcher::Prefix("/api/v1".into());
        assert!(p.matches("/api/v1"));
        assert!(p.matches("/api/v1/"));
        assert!(p.matches("/api/v1/x/y"));
        assert!(!p.matches("/api/v1x"));
        assert!(!p.matches("/api/v10/x"));
        assert!(!p.matches("/api"));
        let slash = PathMatcher::Prefix("/api/".into());
        assert!(slash.matches("/api/x"));
        assert!(!slash.matches("/api"));
    }

    #[test]
    fn encoded_separators_any_case() {
        for bad in [
            "/a/..%2Fadmin",
            "/a%2fb",
            "/a%5Cb",
            "/a%5cb",
            "/a%00",
            "%2F",
        ] {
            assert!(has_encoded_separator(bad), "{bad}");
        }
        for good in ["/a/b", "/a%2eb", "/a%20b", "/a%2", "/a%5", "/a%0A", "/100%"] {
            assert!(!has_encoded_separator(good), "{good}");
        }
    }

    #[test]
    fn hosts_exact_and_wildcard() {
        let h = HostMatcher::new(&["api.example.com".into(), "*.internal.example".into()]);
        assert!(h.matches(Some("api.example.com")));
        assert!(h.matches(Some("a.internal.example")));
        assert!(h.matches(Some("a.b.internal.example")));
        assert!(!h.matches(Some("internal.example")));
        assert!(!h.matches(Some("evilinternal.example")));
        assert!(!h.matches(None));
        assert!(HostMatcher::new(&[]).matches(None));
    }

    #[test]
    fn host_normalisation() {
        assert_eq!(normalize_host("API.Example.com:8443"), "api.example.com");
        assert_eq!(normalize_host("[2001:db8::1]:80"), "2001:db8::1");
        assert_eq!(normalize_host("example.com."), "example.com");
    }

    #[test]
    fn methods() {
        let mut m = MethodSet::default();
        assert!(m.matches("DELETE"));
        m.insert(MethodSet::bit("GET").expect("known"));
        assert!(m.matches("get"));
        assert!(!m.matches("POST"));
        assert!(!m.matches("BREW"));
    }

    #[test]
    fn roles_any_and_all() {
        let have = ["ops", "admin"];
        assert!(
            RoleRequirement::AnyOf(vec!["admin".into(), "x".into()])
                .is_satisfied_by(have.iter().copied())
        );
        assert!(
            !RoleRequirement::AllOf(vec!["admin".into(), "x".into()])
                .is_satisfied_by(have.iter().copied())
        );
        assert!(
            RoleRequirement::AllOf(vec!["admin".into(), "ops".into()])
                .is_satisfied_by(have.iter().copied())
        );
    }
}
