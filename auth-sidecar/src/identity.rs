//! Identity headers: what the backend receives on allow.
//!
//! Every configured header is emitted exactly once, on one line, empty when the claim is
//! absent, so every gateway overwrites a client's copy. The encoding of the values and the
//! optional signature are the wire format of the `identity-wire` crate, which omni2-core
//! verifies with the same code. A claim that has no encoding (a control character) is
//! refused (`malformed`), never sanitised into something else; a token without a user id
//! (the `user_id` claim, `sub` by default) is refused (`missing_claim`), since an empty
//! `X-User-Id` would make every such caller one user to the backend and the rate limits.

use actix_web::http::header::{HeaderName, HeaderValue};
use identity_wire::{SigningKey, Unencodable, encode_list, encode_scalar};
use serde_json::{Map, Value};

use crate::reason::DenyReason;

pub use identity_wire::{SIGNATURE_HEADER, Slot};

/// Compiled claim-to-header mapping.
pub struct IdentityMapping {
    /// Header name and claim name per slot, in `Slot::ALL` order.
    pub slots: Vec<(HeaderName, String)>,
    pub signature: Option<(HeaderName, SigningKey)>,
}

impl std::fmt::Debug for IdentityMapping {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IdentityMapping")
            .field("slots", &self.slots)
            .field("signed", &self.signature.is_some())
            .finish()
    }
}

impl IdentityMapping {
    /// The header names this mapping emits (for Traefik's `authResponseHeaders`).
    pub fn header_names(&self) -> Vec<&str> {
        let mut names: Vec<&str> = self.slots.iter().map(|(h, _)| h.as_str()).collect();
        if let Some((h, _)) = &self.signature {
            names.push(h.as_str());
        }
        names
    }

    fn claim(&self, slot: Slot) -> &str {
        &self.slots[slot as usize].1
    }

    /// Builds the headers and the role set from verified claims.
    pub fn build(&self, claims: &Map<String, Value>) -> Result<Identity, DenyReason> {
        let mut values: Vec<String> = Vec::with_capacity(Slot::ALL.len());
        for slot in Slot::ALL {
            let claim = claims.get(self.claim(slot));
            let value = match slot {
                Slot::UserId => match scalar_value(claim)? {
                    id if id.is_empty() => return Err(DenyReason::MissingClaim),
                    id => id,
                },
                Slot::Role | Slot::Roles => list_value(claim)?,
                Slot::Expires => match claim {
                    None | Some(Value::Null) => String::new(),
                    Some(Value::Number(n)) => n
                        .as_i64()
                        .or_else(|| n.as_f64().map(|f| f as i64))
                        .ok_or(DenyReason::Malformed)?
                        .to_string(),
                    Some(_) => return Err(DenyReason::Malformed),
                },
                Slot::Username | Slot::Email => scalar_value(claim)?,
            };
            values.push(value);
        }

        let mut roles = Vec::new();
        for slot in [Slot::Role, Slot::Roles] {
            collect_roles(claims.get(self.claim(slot)), &mut roles);
        }
        roles.sort_unstable();
        roles.dedup();

        let mut headers = Vec::with_capacity(self.slots.len() + 1);
        for ((name, _), value) in self.slots.iter().zip(&values) {
            let value = HeaderValue::from_str(value).map_err(|_| DenyReason::Malformed)?;
            headers.push((name.clone(), value));
        }
        if let Some((name, key)) = &self.signature {
            let values: &[String; 6] = values
                .as_slice()
                .try_into()
                .map_err(|_| DenyReason::Malformed)?;
            let signature = key.sign(values);
            headers.push((
                name.clone(),
                HeaderValue::from_str(&signature).map_err(|_| DenyReason::Malformed)?,
            ));
        }
        Ok(Identity {
            headers: IdentityHeaders(headers),
            roles: roles.into_boxed_slice(),
        })
    }
}

fn malformed(_: Unencodable) -> DenyReason {
    DenyReason::Malformed
}

fn scalar_text(v: &Value) -> Result<String, DenyReason> {
    match v {
        Value::String(s) => Ok(s.clone()),
        Value::Number(n) => Ok(n.to_string()),
        Value::Bool(b) => Ok(b.to_string()),
        _ => Err(DenyReason::Malformed),
    }
}

fn scalar_value(claim: Option<&Value>) -> Result<String, DenyReason> {
    match claim {
        None | Some(Value::Null) => Ok(String::new()),
        Some(v) => encode_scalar(&scalar_text(v)?).map_err(malformed),
    }
}

/// A role list: an array of items, or one string that is one item (a `,` inside it is
/// encoded, so `"user,admin"` stays one role on the backend too).
fn list_value(claim: Option<&Value>) -> Result<String, DenyReason> {
    let items = match claim {
        None | Some(Value::Null) => return Ok(String::new()),
        Some(Value::Array(items)) => items.iter().map(scalar_text).collect::<Result<_, _>>()?,
        Some(v) => vec![scalar_text(v)?],
    };
    encode_list(items.iter().map(String::as_str)).map_err(malformed)
}

fn collect_roles(claim: Option<&Value>, out: &mut Vec<String>) {
    match claim {
        Some(Value::String(s)) => out.push(s.clone()),
        Some(Value::Array(items)) => {
            out.extend(items.iter().filter_map(Value::as_str).map(str::to_owned));
        }
        _ => {}
    }
}

/// Headers to emit on allow, in configured order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IdentityHeaders(pub Vec<(HeaderName, HeaderValue)>);

impl IdentityHeaders {
    pub fn iter(&self) -> impl Iterator<Item = &(HeaderName, HeaderValue)> {
        self.0.iter()
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(n, _)| n.as_str().eq_ignore_ascii_case(name))
            .and_then(|(_, v)| v.to_str().ok())
    }
}

/// A verified caller: headers for the backend and roles for the policy.
#[derive(Clone, Debug)]
pub struct Identity {
    pub headers: IdentityHeaders,
    /// Union of the role claim and the roles-array claim, sorted and deduplicated.
    pub roles: Box<[String]>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_lc_rs::hmac;
    use base64::Engine;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use serde_json::json;

    fn mapping(secret: Option<&[u8]>) -> IdentityMapping {
        IdentityMapping {
            slots: Slot::ALL
                .iter()
                .map(|s| {
                    (
                        HeaderName::from_static(match s {
                            Slot::UserId => "x-user-id",
                            Slot::Username => "x-user-username",
                            Slot::Role => "x-user-role",
                            Slot::Roles => "x-user-roles",
                            Slot::Email => "x-user-email",
                            Slot::Expires => "x-auth-expires",
                        }),
                        s.default_claim().to_owned(),
                    )
                })
                .collect(),
            signature: secret.map(|s| {
                (
                    HeaderName::from_static("x-auth-signature"),
                    SigningKey::new(s),
                )
            }),
        }
    }

    fn claims(v: Value) -> Map<String, Value> {
        v.as_object().expect("object").clone()
    }

    #[test]
    fn every_header_once_empty_when_absent() {
        let id = mapping(None)
            .build(&claims(json!({"sub": "alice", "exp": 1700000000})))
            .expect("valid");
        let names: Vec<_> = id.headers.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names,
            [
                "x-user-id",
                "x-user-username",
                "x-user-role",
                "x-user-roles",
                "x-user-email",
                "x-auth-expires"
            ]
        );
        assert_eq!(id.headers.get("x-user-id"), Some("alice"));
        assert_eq!(id.headers.get("x-user-email"), Some(""));
        assert_eq!(id.headers.get("x-auth-expires"), Some("1700000000"));
    }

    #[test]
    fn lists_joined_and_roles_unioned() {
        let id = mapping(None)
            .build(&claims(
                json!({"sub": "a", "role": "ops", "roles": ["admin", "a,b", "ops"]}),
            ))
            .expect("valid");
        assert_eq!(id.headers.get("x-user-roles"), Some("admin,a%2Cb,ops"));
        assert_eq!(id.headers.get("x-user-role"), Some("ops"));
        assert_eq!(&*id.roles, ["a,b", "admin", "ops"]);
    }

    #[test]
    fn non_ascii_is_percent_encoded_and_controls_refused() {
        let id = mapping(None)
            .build(&claims(json!({"sub": "zoë 100%"})))
            .expect("valid");
        assert_eq!(id.headers.get("x-user-id"), Some("zo%C3%AB 100%25"));
        for bad in ["a\r\nX-Evil: 1", "a\u{0}b", "tab\there", "\u{85}"] {
            let err = mapping(None)
                .build(&claims(json!({"sub": bad})))
                .expect_err(bad);
            assert_eq!(err, DenyReason::Malformed);
        }
        let err = mapping(None)
            .build(&claims(json!({"sub": "a", "roles": ["ok", "x\ny"]})))
            .expect_err("control in a role");
        assert_eq!(err, DenyReason::Malformed);
        assert_eq!(
            mapping(None)
                .build(&claims(json!({"sub": {"nested": 1}})))
                .expect_err("object"),
            DenyReason::Malformed
        );
    }

    #[test]
    fn signature_covers_the_documented_string() {
        let secret = b"0123456789abcdef0123456789abcdef";
        let id = mapping(Some(secret))
            .build(&claims(
                json!({"sub": "alice", "preferred_username": "Alice", "role": "admin",
                "roles": ["admin", "ops"], "email": "a@example.com", "exp": 1700000000}),
            ))
            .expect("valid");
        let expected_input = "v1\nalice\nAlice\nadmin\nadmin,ops\na@example.com\n1700000000";
        let tag = hmac::sign(
            &hmac::Key::new(hmac::HMAC_SHA256, secret),
            expected_input.as_bytes(),
        );
        assert_eq!(
            id.headers.get("x-auth-signature"),
            Some(URL_SAFE_NO_PAD.encode(tag.as_ref()).as_str())
        );
    }

    #[test]
    fn a_user_id_is_required() {
        for missing in [json!({}), json!({"sub": ""}), json!({"sub": null})] {
            let err = mapping(None)
                .build(&claims(missing.clone()))
                .expect_err("no subject");
            assert_eq!(err, DenyReason::MissingClaim, "{missing}");
        }
    }

    #[test]
    fn a_role_with_a_comma_is_one_role_on_both_sides() {
        let secret = b"0123456789abcdef0123456789abcdef";
        let id = mapping(Some(secret))
            .build(&claims(
                json!({"sub": " alice ", "role": "user,admin", "roles": ["ops "]}),
            ))
            .expect("valid");
        assert_eq!(&*id.roles, ["ops ", "user,admin"]);
        assert_eq!(id.headers.get("x-user-role"), Some("user%2Cadmin"));
        // Edge spaces are encoded: a proxy that trims header values changes nothing.
        assert_eq!(id.headers.get("x-user-id"), Some("%20alice%20"));
        assert_eq!(id.headers.get("x-user-roles"), Some("ops%20"));

        // What omni2 does with the headers: verify, then decode.
        let values: [&str; 6] = Slot::ALL.map(|s| {
            id.headers
                .get(&s.default_header().to_ascii_lowercase())
                .expect("every slot emitted")
        });
        let signature = id.headers.get("x-auth-signature").expect("signed");
        assert!(SigningKey::new(secret).verify(&values, signature));
        let mut roles: Vec<String> = identity_wire::decode_list(values[2])
            .chain(identity_wire::decode_list(values[3]))
            .collect();
        roles.sort_unstable();
        assert_eq!(roles, *id.roles);
        assert_eq!(identity_wire::decode_scalar(values[0]), " alice ");
    }
}
