//! The only place that builds forwardAuth HTTP answers from a [`Decision`].
//!
//! Bodies and `WWW-Authenticate` values are static strings: nothing from the request is
//! ever echoed into a response.

use actix_web::HttpResponse;
use actix_web::http::StatusCode;
use actix_web::http::header::{
    CACHE_CONTROL, CONTENT_TYPE, HeaderValue, LOCATION, RETRY_AFTER, WWW_AUTHENTICATE,
};

use crate::decision::{Decision, DenyAnswer};
use crate::reason::DenyReason;

/// 401 when the caller is not authenticated, 403 when it is but may not pass, 429 when it
/// is over its rate limit or its shared limiter cannot answer (a retry can succeed; a
/// 5xx would tell the gateway the auth service is broken, a 403 that the caller may not).
pub const fn status(reason: DenyReason) -> StatusCode {
    match reason {
        DenyReason::RateLimited | DenyReason::RateLimitUnavailable => StatusCode::TOO_MANY_REQUESTS,
        r if r.is_unauthenticated() => StatusCode::UNAUTHORIZED,
        _ => StatusCode::FORBIDDEN,
    }
}

/// Builds the HTTP answer. Allow is exactly 200 with an empty body.
pub fn to_response(decision: &Decision, realm: &Realm) -> HttpResponse {
    match decision {
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
            rule,
            reason,
            token_presented,
            answer,
        } => match answer {
            DenyAnswer::Standard => deny_response(*reason, *token_presented, realm.for_rule(*rule)),
            DenyAnswer::Redirect(location) => HttpResponse::Found()
                .insert_header((LOCATION, location.clone()))
                .insert_header((CACHE_CONTROL, HeaderValue::from_static("no-store")))
                .finish(),
            DenyAnswer::RetryAfter(seconds) => {
                let mut res = deny_response(*reason, *token_presented, realm.for_rule(*rule));
                res.headers_mut()
                    .insert(RETRY_AFTER, HeaderValue::from((*seconds).max(1)));
                res
            }
        },
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
    /// Per rule (by index): the challenges of rules with an `mcp:` block.
    mcp: Vec<Option<McpChallenge>>,
}

/// The challenges one rule answers with: the realm's, or its MCP resource's.
#[derive(Clone, Copy)]
enum Challenges<'a> {
    Realm(&'a Realm),
    Mcp(&'a McpChallenge),
}

/// Pre-rendered challenges of a rule with an `mcp:` block (MCP authorization, RFC 9728
/// §5.1): every one names the resource metadata and the scopes the rule needs.
#[derive(Debug)]
pub struct McpChallenge {
    bare: HeaderValue,
    invalid_token: Vec<HeaderValue>,
    /// `403`: `error="insufficient_scope"`, for missing scopes and roles alike.
    insufficient_scope: HeaderValue,
}

impl McpChallenge {
    /// `realm` is validated; `metadata_url` is a canonical URL and `scopes` are scope tokens
    /// (config validation guarantees both), so none needs escaping.
    pub fn new(realm: &str, metadata_url: &str, scopes: &[Box<str>]) -> McpChallenge {
        let scope = if scopes.is_empty() {
            String::new()
        } else {
            format!(", scope=\"{}\"", scopes.join(" "))
        };
        let value = |error: &str| {
            HeaderValue::from_str(&format!(
                "Bearer realm=\"{realm}\", resource_metadata=\"{metadata_url}\"{scope}{error}"
            ))
            .expect("realm, URL and scopes are validated as header-safe")
        };
        McpChallenge {
            bare: value(""),
            invalid_token: DenyReason::ALL
                .iter()
                .map(|r| {
                    value(&format!(
                        ", error=\"invalid_token\", error_description=\"{}\"",
                        r.message()
                    ))
                })
                .collect(),
            insufficient_scope: value(&format!(
                ", error=\"insufficient_scope\", error_description=\"{}\"",
                DenyReason::InsufficientScope.message()
            )),
        }
    }
}

/// The Protected Resource Metadata document (`mcp_resource::Resource::document`): public,
/// cacheable for a while.
pub fn resource_metadata(document: &str) -> HttpResponse {
    HttpResponse::Ok()
        .insert_header((CONTENT_TYPE, HeaderValue::from_static("application/json")))
        .insert_header((
            CACHE_CONTROL,
            HeaderValue::from_static("public, max-age=300"),
        ))
        .body(document.to_owned())
}

/// No protected resource at this metadata path.
pub fn resource_metadata_not_found() -> HttpResponse {
    HttpResponse::NotFound()
        .insert_header((CONTENT_TYPE, HeaderValue::from_static("application/json")))
        .insert_header((CACHE_CONTROL, HeaderValue::from_static("no-store")))
        .body("{\"error\":\"not_found\",\"message\":\"no protected resource here\"}")
}

impl Realm {
    /// Attaches the per-rule MCP challenges (indexed like the policy's rules).
    pub fn with_mcp(mut self, mcp: Vec<Option<McpChallenge>>) -> Self {
        self.mcp = mcp;
        self
    }

    fn for_rule(&self, rule: Option<usize>) -> Challenges<'_> {
        match rule.and_then(|i| self.mcp.get(i)).and_then(Option::as_ref) {
            Some(mcp) => Challenges::Mcp(mcp),
            None => Challenges::Realm(self),
        }
    }

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
            mcp: Vec::new(),
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

fn deny_response(reason: DenyReason, token_presented: bool, realm: Challenges<'_>) -> HttpResponse {
    let status = status(reason);
    let mut res = HttpResponse::build(status);
    res.insert_header((CONTENT_TYPE, HeaderValue::from_static("application/json")));
    res.insert_header((CACHE_CONTROL, HeaderValue::from_static("no-store")));
    let (bare, invalid_token, insufficient_scope) = match realm {
        Challenges::Realm(r) => (&r.bare, &r.invalid_token, &r.insufficient_scope),
        Challenges::Mcp(m) => (&m.bare, &m.invalid_token, &m.insufficient_scope),
    };
    let challenge = match reason {
        DenyReason::RoleDenied | DenyReason::InsufficientScope => Some(insufficient_scope.clone()),
        _ if status == StatusCode::UNAUTHORIZED => {
            Some(if token_presented && reason.is_token_problem() {
                invalid_token[reason.index()].clone()
            } else {
                bare.clone()
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
        assert_eq!(status(DenyReason::MissingToken), StatusCode::UNAUTHORIZED);
        assert_eq!(status(DenyReason::Expired), StatusCode::UNAUTHORIZED);
        assert_eq!(status(DenyReason::RoleDenied), StatusCode::FORBIDDEN);
        assert_eq!(status(DenyReason::NoRule), StatusCode::FORBIDDEN);
        assert_eq!(status(DenyReason::IpDenied), StatusCode::FORBIDDEN);
        assert_eq!(
            status(DenyReason::RateLimited),
            StatusCode::TOO_MANY_REQUESTS
        );
        assert_eq!(
            status(DenyReason::RateLimitUnavailable),
            StatusCode::TOO_MANY_REQUESTS
        );
    }
}
