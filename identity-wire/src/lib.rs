//! The identity wire format: what auth-sidecar emits on allow and omni2-core trusts.
//!
//! Six slots, in this order: user id, username, role, roles, email, expires. Each travels
//! in one header (defaults in [`Slot::default_header`]), on one line, empty when the claim is
//! absent. Values are ASCII:
//! - non-ASCII bytes and `%` are percent-encoded as UTF-8;
//! - a role value (the `role` and `roles` slots) is a `,`-separated list whose items have
//!   `,` encoded, so `"user,admin"` as one role stays one role on both sides;
//! - leading and trailing spaces are encoded (`%20`), because Go's net/http (Traefik) trims
//!   header values and the backend would then see other bytes than the sidecar signed;
//! - a value with a control character cannot be encoded ([`Unencodable`]): the sidecar
//!   refuses the token rather than sanitising it into something else.
//!
//! Optional signature (default header `X-Auth-Signature`): base64url without padding of
//! HMAC-SHA256(secret, S) where
//! `S = "v1\n" + id + "\n" + username + "\n" + role + "\n" + roles + "\n" + email + "\n" + expires`
//! over the header values exactly as emitted ([`signing_string`]).

use aws_lc_rs::hmac;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use percent_encoding::{AsciiSet, CONTROLS, percent_decode_str, utf8_percent_encode};

/// The six identity slots, in signing order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Slot {
    UserId,
    Username,
    Role,
    Roles,
    Email,
    Expires,
}

impl Slot {
    /// Every slot, in signing order (`slot as usize` is its index).
    pub const ALL: [Slot; 6] = [
        Slot::UserId,
        Slot::Username,
        Slot::Role,
        Slot::Roles,
        Slot::Email,
        Slot::Expires,
    ];

    /// The config key of the slot (`identity.user_id`, ...).
    pub const fn key(self) -> &'static str {
        match self {
            Slot::UserId => "user_id",
            Slot::Username => "username",
            Slot::Role => "role",
            Slot::Roles => "roles",
            Slot::Email => "email",
            Slot::Expires => "expires",
        }
    }

    /// The header the slot travels in unless configured otherwise.
    pub const fn default_header(self) -> &'static str {
        match self {
            Slot::UserId => "X-User-Id",
            Slot::Username => "X-User-Username",
            Slot::Role => "X-User-Role",
            Slot::Roles => "X-User-Roles",
            Slot::Email => "X-User-Email",
            Slot::Expires => "X-Auth-Expires",
        }
    }

    /// The JWT claim the slot carries unless configured otherwise.
    pub const fn default_claim(self) -> &'static str {
        match self {
            Slot::UserId => "sub",
            Slot::Username => "preferred_username",
            Slot::Role => "role",
            Slot::Roles => "roles",
            Slot::Email => "email",
            Slot::Expires => "exp",
        }
    }

    /// Whether the slot's value is a `,`-separated list of roles.
    pub const fn is_list(self) -> bool {
        matches!(self, Slot::Role | Slot::Roles)
    }
}

/// Default name of the signature header.
pub const SIGNATURE_HEADER: &str = "X-Auth-Signature";

/// The separator of list values.
pub const LIST_SEPARATOR: char = ',';

/// Scalars: non-ASCII (always encoded by `utf8_percent_encode`), controls and `%`.
const SCALAR: &AsciiSet = &CONTROLS.add(b'%');
/// List items: also `,`, the list separator.
const LIST_ITEM: &AsciiSet = &SCALAR.add(b',');

/// A value with a control character: it has no encoding and must be refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Unencodable;

impl std::fmt::Display for Unencodable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("identity value contains a control character")
    }
}

impl std::error::Error for Unencodable {}

/// Encodes a scalar value (id, username, email).
pub fn encode_scalar(raw: &str) -> Result<String, Unencodable> {
    encode(raw, SCALAR)
}

/// Encodes a list of roles: each item encoded (`,` included), joined with `,`.
pub fn encode_list<'a>(items: impl IntoIterator<Item = &'a str>) -> Result<String, Unencodable> {
    let mut out = String::new();
    for (i, item) in items.into_iter().enumerate() {
        if i > 0 {
            out.push(LIST_SEPARATOR);
        }
        out.push_str(&encode(item, LIST_ITEM)?);
    }
    Ok(out)
}

/// Decodes a scalar value as received.
pub fn decode_scalar(value: &str) -> String {
    percent_decode_str(value).decode_utf8_lossy().into_owned()
}

/// Decodes a list value as received: split on `,`, empty items dropped, each decoded.
pub fn decode_list(value: &str) -> impl Iterator<Item = String> + '_ {
    value
        .split(LIST_SEPARATOR)
        .filter(|item| !item.is_empty())
        .map(decode_scalar)
}

fn encode(raw: &str, set: &'static AsciiSet) -> Result<String, Unencodable> {
    if raw.chars().any(char::is_control) {
        return Err(Unencodable);
    }
    // Spaces at either end are what an HTTP stack trims; encode them so none is lost.
    let body = raw.trim_matches(' ');
    let lead = raw.len() - raw.trim_start_matches(' ').len();
    let trail = if body.is_empty() {
        0
    } else {
        raw.len() - raw.trim_end_matches(' ').len()
    };
    let mut out = "%20".repeat(lead);
    out.extend(utf8_percent_encode(body, set));
    out.push_str(&"%20".repeat(trail));
    Ok(out)
}

/// The string the signature covers: `"v1"`, then each slot's value after a `\n`.
pub fn signing_string<S: AsRef<str>>(values: &[S; 6]) -> String {
    let mut s = String::from("v1");
    for v in values {
        s.push('\n');
        s.push_str(v.as_ref());
    }
    s
}

/// The HMAC-SHA256 key shared by the signer and the verifier.
pub struct SigningKey(hmac::Key);

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SigningKey(..)")
    }
}

impl SigningKey {
    pub fn new(secret: &[u8]) -> Self {
        Self(hmac::Key::new(hmac::HMAC_SHA256, secret))
    }

    /// The signature header value over the six slot values as emitted.
    pub fn sign<S: AsRef<str>>(&self, values: &[S; 6]) -> String {
        let tag = hmac::sign(&self.0, signing_string(values).as_bytes());
        URL_SAFE_NO_PAD.encode(tag.as_ref())
    }

    /// Whether `signature` is the signature of `values` (constant-time comparison).
    pub fn verify<S: AsRef<str>>(&self, values: &[S; 6], signature: &str) -> bool {
        let Ok(tag) = URL_SAFE_NO_PAD.decode(signature) else {
            return false;
        };
        hmac::verify(&self.0, signing_string(values).as_bytes(), &tag).is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";
    const VALUES: [&str; 6] = [
        "alice",
        "Alice",
        "admin",
        "admin,ops",
        "a@example.com",
        "1700000000",
    ];

    #[test]
    fn golden_vector() {
        assert_eq!(
            signing_string(&VALUES),
            "v1\nalice\nAlice\nadmin\nadmin,ops\na@example.com\n1700000000"
        );
        // HMAC-SHA256 of the string above with SECRET, computed independently
        // (`printf 'v1\nalice\n...' | openssl dgst -sha256 -hmac ... -binary | base64url`).
        assert_eq!(
            SigningKey::new(SECRET).sign(&VALUES),
            "K4VI8tvDZh9AZhgdRnx9lPs3uM_qZnmnX5ZRmwWfPZM"
        );
    }

    #[test]
    fn verify_accepts_only_the_signed_values() {
        let key = SigningKey::new(SECRET);
        let good = key.sign(&VALUES);
        assert!(key.verify(&VALUES, &good));
        let mut other = VALUES;
        other[2] = "root";
        assert!(!key.verify(&other, &good));
        assert!(!key.verify(&VALUES, "!!"));
        assert!(!key.verify(&VALUES, ""));
        assert!(!SigningKey::new(b"another secret of 32 bytes......").verify(&VALUES, &good));
    }

    #[test]
    fn header_names_and_claims_in_slot_order() {
        let headers: Vec<_> = Slot::ALL.iter().map(|s| s.default_header()).collect();
        assert_eq!(
            headers,
            [
                "X-User-Id",
                "X-User-Username",
                "X-User-Role",
                "X-User-Roles",
                "X-User-Email",
                "X-Auth-Expires"
            ]
        );
        for (i, slot) in Slot::ALL.iter().enumerate() {
            assert_eq!(*slot as usize, i);
        }
        assert_eq!(Slot::UserId.default_claim(), "sub");
    }

    #[test]
    fn a_role_with_a_comma_stays_one_role() {
        let wire = encode_list(["user,admin"]).expect("encodable");
        assert_eq!(wire, "user%2Cadmin");
        assert_eq!(decode_list(&wire).collect::<Vec<_>>(), ["user,admin"]);
        let wire = encode_list(["admin", "a,b", "100%"]).expect("encodable");
        assert_eq!(wire, "admin,a%2Cb,100%25");
        assert_eq!(
            decode_list(&wire).collect::<Vec<_>>(),
            ["admin", "a,b", "100%"]
        );
        assert_eq!(decode_list("").count(), 0);
    }

    #[test]
    fn edge_spaces_survive_a_trimming_proxy() {
        for raw in [" alice", "alice ", "  a b  ", " ", "a b"] {
            let wire = encode_scalar(raw).expect("encodable");
            assert_eq!(wire.trim(), wire, "{raw:?} -> {wire:?}");
            assert_eq!(decode_scalar(&wire), raw);
            let list = encode_list([raw]).expect("encodable");
            assert_eq!(list.trim(), list);
            assert_eq!(decode_list(&list).collect::<Vec<_>>(), [raw]);
        }
        assert_eq!(encode_scalar("a b").expect("inner space"), "a b");
    }

    #[test]
    fn non_ascii_encoded_and_controls_refused() {
        assert_eq!(encode_scalar("zoë 100%"), Ok("zo%C3%AB 100%25".into()));
        assert_eq!(decode_scalar("zo%C3%AB 100%25"), "zoë 100%");
        for bad in ["a\r\nX-Evil: 1", "a\u{0}b", "tab\there", "\u{85}"] {
            assert_eq!(encode_scalar(bad), Err(Unencodable), "{bad:?}");
            assert_eq!(encode_list(["ok", bad]), Err(Unencodable), "{bad:?}");
        }
    }
}
