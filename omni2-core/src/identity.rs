//! The caller's identity, from the headers the gateway (auth-sidecar via Traefik) sets.
//!
//! Missing id → 401. With `identity_secret` configured, `X-Auth-Signature` must sign the
//! header values exactly as received (empty when absent), in the `identity-wire` format the
//! sidecar signs with the same code, and a past `X-Auth-Expires` is refused: a request that
//! bypasses the gateway cannot invent an identity. Values are decoded as `identity-wire`
//! encodes them: role headers are `,`-separated lists of percent-encoded items.

use std::future::{Ready, ready};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use actix_web::dev::Payload;
use actix_web::http::StatusCode;
use actix_web::http::header::HeaderMap;
use actix_web::{FromRequest, HttpRequest, HttpResponse, ResponseError, web};
use identity_wire::{SigningKey, decode_list, decode_scalar};
use serde::Serialize;

use crate::config::IdentityHeaders;

/// A caller as asserted by the gateway.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Identity {
    /// Subject (`X-User-Id`), never empty.
    pub id: String,
    /// `X-User-Username`, percent-decoded; empty when absent.
    pub username: String,
    /// `X-User-Role`, percent-decoded; empty when absent.
    pub role: String,
    /// Union of `X-User-Role` and `X-User-Roles` items, decoded, sorted, deduplicated.
    pub roles: Vec<String>,
    /// `X-User-Email`; empty when absent.
    pub email: String,
    /// `X-Auth-Expires` in unix seconds, when given.
    pub expires: Option<u64>,
}

/// Why an identity was refused. `as_str` is the stable `error` code in the JSON body.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum IdentityError {
    /// No (or an empty) id header.
    #[error("no identity")]
    Missing,
    /// A header is not visible ASCII, repeated, or `X-Auth-Expires` is not a number.
    #[error("malformed identity headers")]
    Malformed,
    /// A secret is configured and the signature is missing or wrong.
    #[error("bad identity signature")]
    BadSignature,
    /// `X-Auth-Expires` is in the past.
    #[error("identity expired")]
    Expired,
    /// Authenticated, but none of the required roles.
    #[error("role not allowed")]
    RoleDenied,
}

impl IdentityError {
    /// Stable code for bodies and logs.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Missing => "missing_identity",
            Self::Malformed => "malformed",
            Self::BadSignature => "bad_signature",
            Self::Expired => "expired",
            Self::RoleDenied => "role_denied",
        }
    }
}

impl ResponseError for IdentityError {
    fn status_code(&self) -> StatusCode {
        match self {
            Self::RoleDenied => StatusCode::FORBIDDEN,
            _ => StatusCode::UNAUTHORIZED,
        }
    }

    fn error_response(&self) -> HttpResponse {
        HttpResponse::build(self.status_code())
            .insert_header(("cache-control", "no-store"))
            .json(serde_json::json!({"error": self.as_str(), "message": self.to_string()}))
    }
}

/// How identities are read and checked; shared by every request.
pub struct IdentityVerifier {
    headers: IdentityHeaders,
    key: Option<SigningKey>,
}

impl std::fmt::Debug for IdentityVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IdentityVerifier")
            .field("headers", &self.headers)
            .field("signed", &self.key.is_some())
            .finish()
    }
}

impl IdentityVerifier {
    /// Builds a verifier; `secret = None` trusts unsigned headers.
    pub fn new(headers: IdentityHeaders, secret: Option<&[u8]>) -> Self {
        Self {
            headers,
            key: secret.map(SigningKey::new),
        }
    }

    /// True when a signature is required.
    pub fn is_signed(&self) -> bool {
        self.key.is_some()
    }

    /// Reads and checks the identity in `headers` at `now` (unix seconds).
    pub fn verify(&self, headers: &HeaderMap, now: u64) -> Result<Identity, IdentityError> {
        let h = &self.headers;
        let values = h.slots().map(|name| single(headers, name));
        let mut raw: [&str; 6] = [""; 6];
        for (slot, value) in raw.iter_mut().zip(values) {
            *slot = value?;
        }
        let [id, username, role, roles, email, expires] = raw;
        if id.is_empty() {
            return Err(IdentityError::Missing);
        }
        if let Some(key) = &self.key {
            let signature = single(headers, &h.signature)?;
            if !key.verify(&raw, signature) {
                return Err(IdentityError::BadSignature);
            }
        }
        let expires = match expires {
            "" => None,
            e => Some(e.parse::<u64>().map_err(|_| IdentityError::Malformed)?),
        };
        if expires.is_some_and(|e| e <= now) {
            return Err(IdentityError::Expired);
        }
        let mut all_roles: Vec<String> = decode_list(role).chain(decode_list(roles)).collect();
        all_roles.sort_unstable();
        all_roles.dedup();
        Ok(Identity {
            id: decode_scalar(id),
            username: decode_scalar(username),
            role: decode_scalar(role),
            roles: all_roles,
            email: decode_scalar(email),
            expires,
        })
    }
}

/// The header's value, `""` when absent; repeated or non-ASCII values are malformed.
fn single<'a>(
    headers: &'a HeaderMap,
    name: &actix_web::http::header::HeaderName,
) -> Result<&'a str, IdentityError> {
    let mut values = headers.get_all(name);
    let Some(first) = values.next() else {
        return Ok("");
    };
    if values.next().is_some() {
        return Err(IdentityError::Malformed);
    }
    first.to_str().map_err(|_| IdentityError::Malformed)
}

/// Unix seconds now.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl Identity {
    /// Has any of `allowed` (an empty list allows every identity).
    pub fn has_any_role(&self, allowed: &[String]) -> bool {
        allowed.is_empty() || allowed.iter().any(|a| self.roles.iter().any(|r| r == a))
    }

    /// Role guard: `Err(RoleDenied)` (403) unless the identity has one of `allowed`.
    pub fn require_any(&self, allowed: &[String]) -> Result<(), IdentityError> {
        if self.has_any_role(allowed) {
            Ok(())
        } else {
            Err(IdentityError::RoleDenied)
        }
    }
}

impl FromRequest for Identity {
    type Error = IdentityError;
    type Future = Ready<Result<Self, Self::Error>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        // Without a verifier the app is misconfigured: fail closed.
        let Some(verifier) = req.app_data::<web::Data<Arc<IdentityVerifier>>>() else {
            tracing::error!("Identity extractor used without an IdentityVerifier in app data.");
            return ready(Err(IdentityError::Missing));
        };
        let result = verifier.verify(req.headers(), unix_now());
        if let Err(e) = &result {
            tracing::debug!(reason = e.as_str(), path = req.path(), "Identity refused.");
        }
        ready(result)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::http::header::{HeaderName, HeaderValue};

    const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                HeaderName::try_from(*k).expect("name"),
                HeaderValue::from_str(v).expect("value"),
            );
        }
        h
    }

    fn sign(values: [&str; 6]) -> String {
        SigningKey::new(SECRET).sign(&values)
    }

    #[test]
    fn unsigned_identity_decoded_and_roles_unioned() {
        let v = IdentityVerifier::new(IdentityHeaders::default(), None);
        let id = v
            .verify(
                &headers(&[
                    ("x-user-id", "zo%C3%AB"),
                    ("x-user-role", "ops"),
                    ("x-user-roles", "admin,a%2Cb,ops"),
                    ("x-auth-expires", "2000"),
                ]),
                1000,
            )
            .expect("valid");
        assert_eq!(id.id, "zoë");
        assert_eq!(id.roles, ["a,b", "admin", "ops"]);
        assert_eq!(id.expires, Some(2000));
        assert!(id.require_any(&["admin".into()]).is_ok());
        assert_eq!(
            id.require_any(&["root".into()]),
            Err(IdentityError::RoleDenied)
        );
    }

    #[test]
    fn refusals() {
        let v = IdentityVerifier::new(IdentityHeaders::default(), None);
        #[track_caller]
        fn case(v: &IdentityVerifier, h: &[(&str, &str)], want: IdentityError) {
            assert_eq!(v.verify(&headers(h), 1000), Err(want));
        }
        case(&v, &[], IdentityError::Missing);
        case(&v, &[("x-user-id", "")], IdentityError::Missing);
        case(
            &v,
            &[("x-user-id", "a"), ("x-user-id", "b")],
            IdentityError::Malformed,
        );
        case(
            &v,
            &[("x-user-id", "a"), ("x-auth-expires", "soon")],
            IdentityError::Malformed,
        );
        case(
            &v,
            &[("x-user-id", "a"), ("x-auth-expires", "1000")],
            IdentityError::Expired,
        );
    }

    #[test]
    fn signature_over_the_sidecar_string() {
        let v = IdentityVerifier::new(IdentityHeaders::default(), Some(SECRET));
        let values = [
            "alice",
            "Alice",
            "admin",
            "admin,ops",
            "a@example.com",
            "2000",
        ];
        let good = sign(values);
        let base = [
            ("x-user-id", "alice"),
            ("x-user-username", "Alice"),
            ("x-user-role", "admin"),
            ("x-user-roles", "admin,ops"),
            ("x-user-email", "a@example.com"),
            ("x-auth-expires", "2000"),
        ];
        let mut ok = base.to_vec();
        ok.push(("x-auth-signature", &good));
        assert_eq!(v.verify(&headers(&ok), 1000).expect("valid").id, "alice");

        // Missing signature, a signature over other values, garbage.
        assert_eq!(
            v.verify(&headers(&base), 1000),
            Err(IdentityError::BadSignature)
        );
        let mut forged = ok.clone();
        forged[2] = ("x-user-role", "root");
        assert_eq!(
            v.verify(&headers(&forged), 1000),
            Err(IdentityError::BadSignature)
        );
        let mut garbage = base.to_vec();
        garbage.push(("x-auth-signature", "!!"));
        assert_eq!(
            v.verify(&headers(&garbage), 1000),
            Err(IdentityError::BadSignature)
        );
        // Valid signature but expired.
        assert_eq!(v.verify(&headers(&ok), 2000), Err(IdentityError::Expired));
    }

    #[test]
    fn a_role_with_a_comma_stays_one_role_through_a_signed_round_trip() {
        // As the sidecar emits a `role` claim "user,admin" and a `roles` claim [" ops"].
        let role = identity_wire::encode_list(["user,admin"]).expect("encodable");
        let roles = identity_wire::encode_list([" ops"]).expect("encodable");
        let id = identity_wire::encode_scalar("alice ").expect("encodable");
        let values = [id.as_str(), "", &role, &roles, "", "2000"];
        let signature = sign(values);
        let v = IdentityVerifier::new(IdentityHeaders::default(), Some(SECRET));
        let got = v
            .verify(
                &headers(&[
                    ("x-user-id", &id),
                    ("x-user-role", &role),
                    ("x-user-roles", &roles),
                    ("x-auth-expires", "2000"),
                    ("x-auth-signature", &signature),
                ]),
                1000,
            )
            .expect("valid");
        assert_eq!(got.roles, [" ops", "user,admin"]);
        assert_eq!(got.role, "user,admin");
        assert_eq!(got.id, "alice ");
        assert_eq!(
            got.require_any(&["admin".into()]),
            Err(IdentityError::RoleDenied),
            "\"user,admin\" is not the role admin"
        );
    }
}
