//! Per-tool matching on the headers MCP 2026-07-28 mirrors from the JSON-RPC body
//! (`Mcp-Method`, `Mcp-Name`, `MCP-Protocol-Version`), so a forward-auth layer can decide
//! without reading the body.
//!
//! The headers are only as true as the backend makes them: the MCP server must refuse a
//! request whose headers disagree with its body (omni2's `/mcp` answers `400`/`-32020`).
//! Older revisions do not send them, so a rule that matches on them refuses a request
//! without a recent `MCP-Protocol-Version` outright: falling through to a broader rule would
//! let an old client call any tool.

use crate::facts::{RequestFacts, Single};
use crate::reason::DenyReason;

/// The first revision that mirrors method and name into headers.
pub const MIN_PROTOCOL_VERSION: &str = "2026-07-28";

/// The method whose `Mcp-Name` is a tool name.
pub const TOOLS_CALL: &str = "tools/call";

/// A pattern: an exact name, or a prefix ending in `*` (`weather__*`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NamePattern(Box<str>);

impl NamePattern {
    pub fn new(pattern: &str) -> NamePattern {
        NamePattern(pattern.into())
    }

    pub fn matches(&self, name: &str) -> bool {
        match self.0.strip_suffix('*') {
            Some(prefix) => name.starts_with(prefix),
            None => *self.0 == *name,
        }
    }
}

/// A rule's `mcp_methods` and `mcp_tools`; both empty: the rule does not look at MCP headers.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct McpMatcher {
    pub methods: Vec<NamePattern>,
    /// Tool names; implies `Mcp-Method: tools/call`.
    pub tools: Vec<NamePattern>,
}

impl McpMatcher {
    pub fn is_empty(&self) -> bool {
        self.methods.is_empty() && self.tools.is_empty()
    }

    /// Whether a request whose host, path and method matched the rule also matches on the
    /// MCP headers; `Err` when the rule applies but its headers cannot be relied on (absent
    /// or old protocol version → `mcp_protocol_version`, a header sent twice or not text →
    /// `malformed`).
    pub fn check(&self, facts: &RequestFacts<'_>) -> Result<bool, DenyReason> {
        if self.is_empty() {
            return Ok(true);
        }
        match facts.mcp_protocol_version {
            Single::Absent => return Err(DenyReason::McpProtocolVersion),
            Single::Invalid => return Err(DenyReason::Malformed),
            Single::One(v) if !is_recent(v.trim()) => return Err(DenyReason::McpProtocolVersion),
            Single::One(_) => {}
        }
        let method = header(facts.mcp_method)?;
        let name = header(facts.mcp_name)?;
        if !self.methods.is_empty()
            && !method.is_some_and(|m| self.methods.iter().any(|p| p.matches(m)))
        {
            return Ok(false);
        }
        if !self.tools.is_empty() {
            let is_call = method == Some(TOOLS_CALL);
            if !is_call || !name.is_some_and(|n| self.tools.iter().any(|p| p.matches(n))) {
                return Ok(false);
            }
        }
        Ok(true)
    }
}

/// A mirrored header's value; sent twice or not text → `malformed`.
fn header(s: Single<'_>) -> Result<Option<&str>, DenyReason> {
    match s {
        Single::Invalid => Err(DenyReason::Malformed),
        other => Ok(other.get().map(str::trim)),
    }
}

/// `YYYY-MM-DD` at or after [`MIN_PROTOCOL_VERSION`]; anything else is not a revision that
/// mirrors its headers.
fn is_recent(version: &str) -> bool {
    let b = version.as_bytes();
    let shaped = b.len() == 10
        && b.iter().enumerate().all(|(i, c)| {
            if i == 4 || i == 7 {
                *c == b'-'
            } else {
                c.is_ascii_digit()
            }
        });
    // Same shape, so the text order is the date order.
    shaped && version >= MIN_PROTOCOL_VERSION
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts<'a>(
        version: Option<&'a str>,
        method: Option<&'a str>,
        name: Option<&'a str>,
    ) -> RequestFacts<'a> {
        let one = |v: Option<&'a str>| v.map_or(Single::Absent, Single::One);
        RequestFacts {
            mcp_protocol_version: one(version),
            mcp_method: one(method),
            mcp_name: one(name),
            ..Default::default()
        }
    }

    fn tools(names: &[&str]) -> McpMatcher {
        McpMatcher {
            methods: Vec::new(),
            tools: names.iter().map(|n| NamePattern::new(n)).collect(),
        }
    }

    #[test]
    fn tools_match_only_tool_calls_by_name() {
        let m = tools(&["echo", "weather__*"]);
        let v = Some("2026-07-28");
        assert_eq!(
            m.check(&facts(v, Some("tools/call"), Some("echo"))),
            Ok(true)
        );
        assert_eq!(
            m.check(&facts(v, Some("tools/call"), Some("weather__now"))),
            Ok(true)
        );
        assert_eq!(
            m.check(&facts(v, Some("tools/call"), Some("add"))),
            Ok(false)
        );
        assert_eq!(
            m.check(&facts(v, Some("prompts/get"), Some("echo"))),
            Ok(false)
        );
        assert_eq!(m.check(&facts(v, Some("tools/call"), None)), Ok(false));
        assert_eq!(
            m.check(&facts(Some("2027-01-01"), Some("tools/call"), Some("echo"))),
            Ok(true)
        );
    }

    #[test]
    fn old_absent_or_odd_versions_are_refused() {
        let m = tools(&["echo"]);
        for v in [
            None,
            Some("2025-11-25"),
            Some("2025-06-18"),
            Some("latest"),
            Some("2026-7-28"),
        ] {
            assert_eq!(
                m.check(&facts(v, Some("tools/call"), Some("echo"))),
                Err(DenyReason::McpProtocolVersion),
                "{v:?}"
            );
        }
        let mut twice = facts(Some("2026-07-28"), Some("tools/call"), Some("echo"));
        twice.mcp_name.push(Some("add"));
        assert_eq!(m.check(&twice), Err(DenyReason::Malformed));
        // A rule without MCP matchers never looks at the headers.
        assert_eq!(
            McpMatcher::default().check(&facts(None, None, None)),
            Ok(true)
        );
    }

    #[test]
    fn methods_match() {
        let m = McpMatcher {
            methods: vec![
                NamePattern::new("tools/list"),
                NamePattern::new("resources/*"),
            ],
            tools: Vec::new(),
        };
        let v = Some("2026-07-28");
        assert_eq!(m.check(&facts(v, Some("tools/list"), None)), Ok(true));
        assert_eq!(
            m.check(&facts(v, Some("resources/read"), Some("file:///x"))),
            Ok(true)
        );
        assert_eq!(
            m.check(&facts(v, Some("tools/call"), Some("echo"))),
            Ok(false)
        );
        assert_eq!(m.check(&facts(v, None, None)), Ok(false));
    }
}
