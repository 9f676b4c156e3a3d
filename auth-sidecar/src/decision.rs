//! The outcome of a forwardAuth call and the only place that turns it into an HTTP response.
//!
//! Deny reasons form one closed vocabulary shared by the response body, the logs and the
//! metric labels (`DenyReason::as_str`). Bodies and `WWW-Authenticate` values are static
//! strings: nothing from the request is ever echoed into a response.

use std::sync::Arc;

use actix_web::HttpResponse;
use actix_web::http::StatusCode;
use actix_web::http::header::{
    CACHE_CONTROL, CONTENT_TYPE, HeaderValue, LOCATION, RETRY_AFTER, WWW_AUTHENTICATE,
};

use crate::identity::IdentityHeaders;

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
}

impl DenyReason {
    /// Every reason, in a stable order (metric series are pre-created from this list).
    pub const ALL: [DenyReason; 18] = [
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
        )
    }

    /// 401 when the caller is not authenticated, 403 when it is but may not pass, 429 when
    /// it is over its rate limit.
    pub const fn status(self) -> StatusCode {
        match self {
            Self::RateLimited => StatusCode::TOO_MANY_REQUESTS,
            Self::IpDenied | Self::RoleDenied | Self::RuleDenied | Self::NoRule => {
                StatusCode::FORBIDDEN
            }
            _ => StatusCode::UNAUTHORIZED,
        }
    }

    fn index(self) -> usize {
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

    fn index(self) -> usize {
        self as usize
    }
}

/// Index of a rule in the active policy; `None` when no rule matched.
pub type RuleIndex = Option<usize>;

/// How a deny is answered beyond its reason's status and challenge.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum DenyAnswer {
    /// The reason's status with `WWW-Authenticate` and the JSON body.
    #[default]
    Standard,
    /// A browser on a rule with `login_url`: `302` to this absolute URL instead of `401`.
    Redirect(HeaderValue),
    /// `429` with `Retry-After` in whole seconds (at least 1).
    RetryAfter(u64),
}

/// What the sidecar answers.
#[derive(Clone, Debug)]
pub enum Decision {
    Allow {
        rule: RuleIndex,
        reason: AllowReason,
        /// Identity headers to emit; `None` for public and preflight allows.
        identity: Option<Arc<IdentityHeaders>>,
    },
    Deny {
        rule: RuleIndex,
        reason: DenyReason,
        /// Whether a token was presented (RFC 6750 §3: error codes only then).
        token_presented: bool,
        /// Redirect or `Retry-After`; usually `Standard`.
        answer: DenyAnswer,
    },
}

/// Number of distinct outcomes: per-rule metric handles are kept in an array this long.
pub const OUTCOMES: usize = AllowReason::ALL.len() + DenyReason::ALL.len();

impl Decision {
    pub fn rule(&self) -> RuleIndex {
        match self {
            Decision::Allow { rule, .. } | Decision::Deny { rule, .. } => *rule,
        }
    }

    pub fn is_allow(&self) -> bool {
        matches!(self, Decision::Allow { .. })
    }

    /// The reason label: an allow reason or a deny reason.
    pub fn reason_str(&self) -> &'static str {
        match self {
            Decision::Allow { reason, .. } => reason.as_str(),
            Decision::Deny { reason, .. } => reason.as_str(),
        }
    }

    /// Dense index of this outcome in `0..OUTCOMES`, for pre-resolved metric handles.
    pub fn outcome_index(&self) -> usize {
        match self {
            Decision::Allow { reason, .. } => reason.index(),
            Decision::Deny { reason, .. } => AllowReason::ALL.len() + reason.index(),
        }
    }

    /// Builds the HTTP answer. Allow is exactly 200 with an empty body.
    pub fn to_response(&self, realm: &Realm) -> HttpResponse {
        match self {
            Decision::Allow { identity, .. } => {
                let mut res = HttpResponse::Ok();
                if let Some(identity) = identity {
                    for (name, value) in identity.iter() {
                        res.insert_header((name.clone(), value.clone()));
                    }
                }
                res.finish()
            }
            Decision::Deny {
                reason,
                token_presented,
                answer,
                ..
            } => match answer {
                DenyAnswer::Standard => deny_response(*reason, *token_presented, realm),
                DenyAnswer::Redirect(location) => HttpResponse::Found()
                    .insert_header((LOCATION, location.clone()))
                    .insert_header((CACHE_CONTROL, HeaderValue::from_static("no-store")))
                    .finish(),
                DenyAnswer::RetryAfter(seconds) => {
                    let mut res = deny_response(*reason, *token_presented, realm);
                    res.headers_mut()
                        .insert(RETRY_AFTER, HeaderValue::from((*seconds).max(1)));
                    res
                }
            },
        }
    }
}

/// Pre-rendered `WWW-Authenticate` values for one realm, so denying never formats strings.
#[derive(Debug)]
pub struct Realm {
    /// Without an error code: no token was presented (RFC 6750 §3.1).
    bare: HeaderValue,
    /// `error="invalid_token"` per token-related reason, indexed like `DenyReason::ALL`.
    invalid_token: Vec<HeaderValue>,
    insufficient_scope: HeaderValue,
}

impl Realm {
    /// `realm` must be a valid quoted-string body; config validation guarantees it.
    pub fn new(realm: &str) -> Self {
        let bare = format!("Bearer realm=\"{realm}\"");
        let invalid_token = DenyReason::ALL
            .iter()
            .map(|r| {
                HeaderValue::from_str(&format!(
                    "Bearer realm=\"{realm}\", error=\"invalid_token\", error_description=\"{}\"",
                    r.message()
                ))
                .expect("realm is validated as printable ASCII without quotes")
            })
            .collect();
        Realm {
            bare: HeaderValue::from_str(&bare)
                .expect("realm is validated as printable ASCII without quotes"),
            invalid_token,
            insufficient_scope: HeaderValue::from_str(&format!(
                "Bearer realm=\"{realm}\", error=\"insufficient_scope\", error_description=\"{}\"",
                DenyReason::RoleDenied.message()
            ))
            .expect("realm is validated as printable ASCII without quotes"),
        }
    }
}

/// The JSON body of a deny: `{"error":"<reason>","message":"<text>"}`, well under 1 KiB.
pub fn deny_body(reason: DenyReason) -> String {
    format!(
        "{{\"error\":\"{}\",\"message\":\"{}\"}}",
        reason.as_str(),
        reason.message()
    )
}

fn deny_response(reason: DenyReason, token_presented: bool, realm: &Realm) -> HttpResponse {
    let status = reason.status();
    let mut res = HttpResponse::build(status);
    res.insert_header((CONTENT_TYPE, HeaderValue::from_static("application/json")));
    res.insert_header((CACHE_CONTROL, HeaderValue::from_static("no-store")));
    let challenge = match reason {
        DenyReason::RoleDenied => Some(realm.insufficient_scope.clone()),
        _ if status == StatusCode::UNAUTHORIZED => {
            Some(if token_presented && reason.is_token_problem() {
                realm.invalid_token[reason.index()].clone()
            } else {
                realm.bare.clone()
            })
        }
        _ => None,
    };
    if let Some(challenge) = challenge {
        res.insert_header((WWW_AUTHENTICATE, challenge));
    }
    res.body(deny_body(reason))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_are_unique_and_indexed_in_order() {
        for (i, r) in DenyReason::ALL.iter().enumerate() {
            assert_eq!(r.index(), i, "{r:?}");
        }
        let mut names: Vec<_> = DenyReason::ALL.iter().map(|r| r.as_str()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), DenyReason::ALL.len());
    }

    #[test]
    fn deny_bodies_are_small_json() {
        for r in DenyReason::ALL {
            let body = deny_body(r);
            assert!(body.len() < 1024);
            let v: serde_json::Value = serde_json::from_str(&body).expect("valid JSON");
            assert_eq!(v["error"], r.as_str());
        }
    }

    #[test]
    fn status_split_between_authn_and_authz() {
        assert_eq!(DenyReason::MissingToken.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(DenyReason::Expired.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(DenyReason::RoleDenied.status(), StatusCode::FORBIDDEN);
        assert_eq!(DenyReason::NoRule.status(), StatusCode::FORBIDDEN);
        assert_eq!(DenyReason::IpDenied.status(), StatusCode::FORBIDDEN);
    }
}
