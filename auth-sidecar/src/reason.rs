//! Why a request was allowed or denied: one closed vocabulary shared by the response body,
//! the logs and the metric labels (`as_str`). A leaf: no HTTP types, no other module.

/// Why a request was denied. `Copy`, allocation-free, shared by responses, logs and metrics.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DenyReason {
    MissingToken,
    Malformed,
    BadSignature,
    UnknownKid,
    AlgMismatch,
    Expired,
    NotYetValid,
    BadIssuer,
    BadAudience,
    MissingClaim,
    TokenTooOld,
    IpDenied,
    RoleDenied,
    RuleDenied,
    NoRule,
    /// The issuer's remote keys are missing or older than `max_stale`.
    KeysUnavailable,
    /// The token's `jti` or its subject's not-before time is in the revocation list.
    Revoked,
    /// The rule's rate limit for this identity or client address is exhausted.
    RateLimited,
    /// The rule's limit is kept in Redis, which did not answer in time (`deny_on_error`).
    RateLimitUnavailable,
    /// An OpenID Connect ID token (`nonce` or `at_hash`) presented as an access token.
    IdToken,
    /// The issuer requires a JWT `typ` (e.g. `at+jwt`) the token does not have.
    BadTokenType,
    /// The token lacks a scope the rule's `mcp.scopes` requires (`403 insufficient_scope`).
    InsufficientScope,
    /// A per-tool rule applies, but `MCP-Protocol-Version` is absent or older than the
    /// revision that mirrors `Mcp-Method`/`Mcp-Name`.
    McpProtocolVersion,
}

impl DenyReason {
    /// Every reason, in a stable order (metric series are pre-created from this list).
    pub const ALL: [DenyReason; 23] = [
        Self::MissingToken,
        Self::Malformed,
        Self::BadSignature,
        Self::UnknownKid,
        Self::AlgMismatch,
        Self::Expired,
        Self::NotYetValid,
        Self::BadIssuer,
        Self::BadAudience,
        Self::MissingClaim,
        Self::TokenTooOld,
        Self::IpDenied,
        Self::RoleDenied,
        Self::RuleDenied,
        Self::NoRule,
        Self::KeysUnavailable,
        Self::Revoked,
        Self::RateLimited,
        Self::RateLimitUnavailable,
        Self::IdToken,
        Self::BadTokenType,
        Self::InsufficientScope,
        Self::McpProtocolVersion,
    ];

    /// The stable error code used in bodies, logs and metric labels.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::MissingToken => "missing_token",
            Self::Malformed => "malformed",
            Self::BadSignature => "bad_signature",
            Self::UnknownKid => "unknown_kid",
            Self::AlgMismatch => "alg_mismatch",
            Self::Expired => "expired",
            Self::NotYetValid => "not_yet_valid",
            Self::BadIssuer => "bad_issuer",
            Self::BadAudience => "bad_audience",
            Self::MissingClaim => "missing_claim",
            Self::TokenTooOld => "token_too_old",
            Self::IpDenied => "ip_denied",
            Self::RoleDenied => "role_denied",
            Self::RuleDenied => "rule_denied",
            Self::NoRule => "no_rule",
            Self::KeysUnavailable => "keys_unavailable",
            Self::Revoked => "revoked",
            Self::RateLimited => "rate_limited",
            Self::RateLimitUnavailable => "rate_limit_unavailable",
            Self::IdToken => "id_token",
            Self::BadTokenType => "bad_token_type",
            Self::InsufficientScope => "insufficient_scope",
            Self::McpProtocolVersion => "mcp_protocol_version",
        }
    }

    /// A short human-readable message; static, so safe in a header and a body.
    pub const fn message(self) -> &'static str {
        match self {
            Self::MissingToken => "a bearer token is required",
            Self::Malformed => "the token or request is malformed",
            Self::BadSignature => "the token signature is invalid",
            Self::UnknownKid => "the token key id is unknown",
            Self::AlgMismatch => "the token algorithm is not allowed for its key",
            Self::Expired => "the token has expired",
            Self::NotYetValid => "the token is not valid yet",
            Self::BadIssuer => "the token issuer is not trusted",
            Self::BadAudience => "the token audience is not accepted",
            Self::MissingClaim => "the token lacks a required claim",
            Self::TokenTooOld => "the token lifetime exceeds the allowed maximum",
            Self::IpDenied => "the client address is not allowed",
            Self::RoleDenied => "the token lacks a required role",
            Self::RuleDenied => "access to this route is denied",
            Self::NoRule => "no rule allows this request",
            Self::KeysUnavailable => "the token issuer's keys are unavailable",
            Self::Revoked => "the token has been revoked",
            Self::RateLimited => "too many requests",
            Self::RateLimitUnavailable => "the rate limiter is unavailable; retry shortly",
            Self::IdToken => "an ID token is not an access token",
            Self::BadTokenType => "the token type (typ) is not accepted",
            Self::InsufficientScope => "the token lacks a required scope",
            Self::McpProtocolVersion => {
                "this MCP operation needs MCP-Protocol-Version 2026-07-28 or later"
            }
        }
    }

    /// True when the reason is about the token itself (RFC 6750 `invalid_token`).
    pub const fn is_token_problem(self) -> bool {
        matches!(
            self,
            Self::Malformed
                | Self::BadSignature
                | Self::UnknownKid
                | Self::AlgMismatch
                | Self::Expired
                | Self::NotYetValid
                | Self::BadIssuer
                | Self::BadAudience
                | Self::MissingClaim
                | Self::TokenTooOld
                | Self::Revoked
                | Self::IdToken
                | Self::BadTokenType
        )
    }

    /// True when the caller is not authenticated (answered `401`); the others are `403`
    /// (authenticated but may not pass) or `429` (over its rate limit, or the shared
    /// limiter cannot tell).
    pub const fn is_unauthenticated(self) -> bool {
        !matches!(
            self,
            Self::RateLimited
                | Self::RateLimitUnavailable
                | Self::IpDenied
                | Self::RoleDenied
                | Self::RuleDenied
                | Self::NoRule
                | Self::InsufficientScope
                | Self::McpProtocolVersion
        )
    }

    /// Position in `ALL`.
    pub const fn index(self) -> usize {
        self as usize
    }
}

/// Why a request was allowed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AllowReason {
    /// A `public` rule: no token needed, no identity emitted.
    Public,
    /// A CORS preflight on a rule with `allow_preflight`.
    Preflight,
    /// A valid token that satisfied the rule.
    Authenticated,
}

impl AllowReason {
    pub const ALL: [AllowReason; 3] = [Self::Public, Self::Preflight, Self::Authenticated];

    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Public => "public",
            Self::Preflight => "preflight",
            Self::Authenticated => "authenticated",
        }
    }

    /// Position in `ALL`.
    pub const fn index(self) -> usize {
        self as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_are_unique_and_indexed_in_order() {
        for (i, r) in DenyReason::ALL.iter().enumerate() {
            assert_eq!(r.index(), i, "{r:?}");
        }
        for (i, r) in AllowReason::ALL.iter().enumerate() {
            assert_eq!(r.index(), i, "{r:?}");
        }
        let mut names: Vec<_> = DenyReason::ALL.iter().map(|r| r.as_str()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), DenyReason::ALL.len());
    }

    #[test]
    fn unauthenticated_split() {
        assert!(DenyReason::MissingToken.is_unauthenticated());
        assert!(DenyReason::Expired.is_unauthenticated());
        assert!(DenyReason::KeysUnavailable.is_unauthenticated());
        for r in [
            DenyReason::RoleDenied,
            DenyReason::NoRule,
            DenyReason::IpDenied,
            DenyReason::RuleDenied,
            DenyReason::RateLimited,
            DenyReason::RateLimitUnavailable,
        ] {
            assert!(!r.is_unauthenticated(), "{r:?}");
        }
    }
}
