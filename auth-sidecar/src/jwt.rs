//! JWT validation: JWS compact parsing, issuer and key selection, signature, claims.
//!
//! Order of checks (each failure is one `DenyReason`):
//! 1. shape: three base64url parts (strict: no padding, canonical), JSON header and payload
//!    object, no `crit` → `malformed`;
//! 2. header `alg` supported and not `none` → `alg_mismatch`;
//! 3. `iss` names a configured issuer → `bad_issuer`;
//! 4. a key for `kid` (or the single key of that alg when there is no kid) → `unknown_kid`;
//!    static keys first, then the installed remote set (missing or older than `max_stale`
//!    → `keys_unavailable`);
//! 5. the key's pinned alg equals the header's → `alg_mismatch`;
//! 6. signature → `bad_signature`;
//! 7. claims with `now` and the issuer's leeway: `exp`, `nbf`, `iat`, lifetime, `aud`,
//!    required claims;
//! 8. an access token: no ID token (`nonce`/`at_hash`) → `id_token`, and with `require_typ`
//!    a listed `typ` → `bad_token_type`.
//!
//! `jku`, `x5u` and `jwk` header parameters are ignored: keys only ever come from config
//! (files, or the issuer's configured `jwks_uri`/discovery).

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::Algorithm;
use serde::Deserialize;
use serde::de::IgnoredAny;
use serde_json::{Map, Value};

use std::sync::Arc;

use crate::keys::jwks::RemoteKeys;
use crate::keys::{KeySet, SUPPORTED, VerifyingKey};
use crate::reason::DenyReason;

/// Validation settings of one trusted issuer.
#[derive(Debug)]
pub struct Issuer {
    /// Exact `iss` value.
    pub issuer: String,
    /// Accepted audiences; empty means `aud` is not checked.
    pub audiences: Vec<String>,
    /// Clock skew tolerated on `exp`, `nbf` and `iat`, in seconds.
    pub leeway: i64,
    pub require_exp: bool,
    /// Upper bound on a token's lifetime (`exp - iat`), in seconds.
    pub max_lifetime: Option<i64>,
    /// Claims that must be present (any value).
    pub required_claims: Vec<String>,
    /// Accept OpenID Connect ID tokens (`nonce` or `at_hash` present) as access tokens.
    pub accept_id_tokens: bool,
    /// Accepted JOSE `typ` values, lower-case without `application/` (RFC 7515 §4.1.9);
    /// empty: `typ` is not checked.
    pub require_typ: Vec<String>,
    /// Keys from the config (inline, PEM files, a local JWKS file).
    pub keys: KeySet,
    /// Keys fetched from `jwks_uri` or discovery; shared across reloads that keep this
    /// issuer's settings.
    pub remote: Option<Arc<RemoteKeys>>,
    /// Digest of everything that decides what this issuer accepts (settings and key
    /// material); equal fingerprints let a reload keep the remote keys.
    pub fingerprint: Vec<u8>,
}

impl Issuer {
    /// The key for a token and the key generation it was found in. Static keys come first;
    /// a static key found while the remote set is unusable gets generation 0, which no
    /// remote set has, so its cache entry is re-verified once the remote set is back.
    pub fn key(
        &self,
        kid: Option<&str>,
        alg: Algorithm,
        now: i64,
    ) -> Result<(Arc<VerifyingKey>, u64), DenyReason> {
        let Some(remote) = &self.remote else {
            let key = self.keys.find(kid, alg).ok_or(DenyReason::UnknownKid)?;
            return Ok((key.clone(), 0));
        };
        let remote_key = remote.find(kid, alg, now);
        if let Some(key) = self.keys.find(kid, alg) {
            let generation = remote_key.as_ref().map_or(0, |(_, g)| *g);
            return Ok((key.clone(), generation));
        }
        match remote_key {
            Ok((Some(key), generation)) => Ok((key, generation)),
            Ok((None, _)) => Err(DenyReason::UnknownKid),
            Err(_) => Err(DenyReason::KeysUnavailable),
        }
    }

    /// The current key generation, `None` when remote keys are unusable at `now`. A cached
    /// verification from another generation must be redone.
    pub fn generation(&self, now: i64) -> Option<u64> {
        match &self.remote {
            None => Some(0),
            Some(remote) => remote.generation(now),
        }
    }
}

/// The JOSE header fields we read. Unknown fields are ignored (RFC 7515 §4), except the
/// ones that change how the JWS must be processed.
#[derive(Deserialize)]
struct RawHeader {
    alg: String,
    kid: Option<String>,
    typ: Option<String>,
    crit: Option<IgnoredAny>,
    /// RFC 7797 unencoded payload; we only process standard JWS.
    b64: Option<IgnoredAny>,
}

/// A JWS in compact form, decoded but not yet verified.
#[derive(Debug)]
pub struct Jws<'a> {
    pub alg: Algorithm,
    pub kid: Option<String>,
    /// The JOSE `typ`, as sent.
    pub typ: Option<String>,
    /// `base64url(header) . base64url(payload)`: what the signature covers.
    pub signing_input: &'a str,
    pub payload: Vec<u8>,
    pub signature: Vec<u8>,
}

fn b64(part: &str) -> Result<Vec<u8>, DenyReason> {
    URL_SAFE_NO_PAD
        .decode(part)
        .map_err(|_| DenyReason::Malformed)
}

/// Parses a compact JWS. Does no crypto.
pub fn parse(token: &str) -> Result<Jws<'_>, DenyReason> {
    let mut parts = token.splitn(4, '.');
    let (Some(h), Some(p), Some(s), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(DenyReason::Malformed);
    };
    let header: RawHeader = serde_json::from_slice(&b64(h)?).map_err(|_| DenyReason::Malformed)?;
    if header.crit.is_some() || header.b64.is_some() {
        return Err(DenyReason::Malformed);
    }
    let alg = header
        .alg
        .parse::<Algorithm>()
        .ok()
        .filter(|a| SUPPORTED.contains(a))
        .ok_or(DenyReason::AlgMismatch)?;
    Ok(Jws {
        alg,
        kid: header.kid,
        typ: header.typ,
        signing_input: &token[..h.len() + 1 + p.len()],
        payload: b64(p)?,
        signature: b64(s)?,
    })
}

/// Checks the pinned algorithm, then the signature.
pub fn verify_signature(jws: &Jws<'_>, key: &VerifyingKey) -> Result<(), DenyReason> {
    if key.alg != jws.alg {
        return Err(DenyReason::AlgMismatch);
    }
    if key.verify(jws.signing_input.as_bytes(), &jws.signature) {
        Ok(())
    } else {
        Err(DenyReason::BadSignature)
    }
}

/// A token whose signature and claims checked out.
#[derive(Debug)]
pub struct Verified {
    /// Index of the issuer in the configured list.
    pub issuer: usize,
    pub claims: Map<String, Value>,
    /// Unix time after which the token stops being accepted, and why it then fails.
    pub valid_until: Option<(i64, DenyReason)>,
    /// The issuer's key generation the signature was checked against.
    pub key_generation: u64,
}

/// Full validation of a bearer token at time `now` (unix seconds).
pub fn verify(token: &str, issuers: &[Issuer], now: i64) -> Result<Verified, DenyReason> {
    let jws = parse(token)?;
    let claims: Map<String, Value> =
        serde_json::from_slice(&jws.payload).map_err(|_| DenyReason::Malformed)?;
    let iss = claims.get("iss").and_then(Value::as_str);
    let (index, issuer) = issuers
        .iter()
        .enumerate()
        .find(|(_, i)| Some(i.issuer.as_str()) == iss)
        .ok_or(DenyReason::BadIssuer)?;
    let (key, key_generation) = issuer.key(jws.kid.as_deref(), jws.alg, now)?;
    verify_signature(&jws, &key)?;
    let valid_until = check_claims(&claims, issuer, now)?;
    check_token_kind(jws.typ.as_deref(), &claims, issuer)?;
    Ok(Verified {
        issuer: index,
        claims,
        valid_until,
        key_generation,
    })
}

/// Which remote issuer and kid a token needs, when its keys were missing: parses the
/// token again (only on the `unknown_kid`/`keys_unavailable` path). `None` for issuers
/// without remote keys, where fetching cannot help.
pub fn key_request(token: &str, issuers: &[Issuer]) -> Option<(usize, Option<String>)> {
    #[derive(Deserialize)]
    struct Iss {
        iss: Option<String>,
    }
    let jws = parse(token).ok()?;
    let iss: Iss = serde_json::from_slice(&jws.payload).ok()?;
    let index = issuers
        .iter()
        .position(|i| Some(i.issuer.as_str()) == iss.iss.as_deref())?;
    issuers[index].remote.as_ref()?;
    Some((index, jws.kid))
}

/// The token must be an access token: an ID token (`nonce` or `at_hash`, OpenID Connect
/// Core §2/§3.1.3.6) is refused unless the issuer accepts them, and with `require_typ` the
/// header's `typ` must be listed (RFC 9068 §2.1: `at+jwt`).
fn check_token_kind(
    typ: Option<&str>,
    claims: &Map<String, Value>,
    issuer: &Issuer,
) -> Result<(), DenyReason> {
    if !issuer.accept_id_tokens && (claims.contains_key("nonce") || claims.contains_key("at_hash"))
    {
        return Err(DenyReason::IdToken);
    }
    if !issuer.require_typ.is_empty() {
        let typ = typ.map(media_type).unwrap_or_default();
        if !issuer.require_typ.contains(&typ) {
            return Err(DenyReason::BadTokenType);
        }
    }
    Ok(())
}

/// A `typ` media type compared as RFC 7515 §4.1.9 says: case-insensitive, `application/`
/// optional.
pub fn media_type(typ: &str) -> String {
    let lower = typ.trim().to_ascii_lowercase();
    match lower.strip_prefix("application/") {
        Some(rest) => rest.to_owned(),
        None => lower,
    }
}

/// A NumericDate (RFC 7519 §2): a JSON number of seconds; fractions are truncated.
fn numeric_date(claims: &Map<String, Value>, name: &str) -> Result<Option<i64>, DenyReason> {
    match claims.get(name) {
        None => Ok(None),
        Some(Value::Number(n)) => n
            .as_i64()
            .or_else(|| n.as_f64().filter(|f| f.is_finite()).map(|f| f as i64))
            .map(Some)
            .ok_or(DenyReason::Malformed),
        Some(_) => Err(DenyReason::Malformed),
    }
}

/// Time and audience checks. Returns when the token stops being valid (for cache TTLs).
pub fn check_claims(
    claims: &Map<String, Value>,
    issuer: &Issuer,
    now: i64,
) -> Result<Option<(i64, DenyReason)>, DenyReason> {
    let exp = numeric_date(claims, "exp")?;
    let nbf = numeric_date(claims, "nbf")?;
    let iat = numeric_date(claims, "iat")?;
    let leeway = issuer.leeway;

    let mut valid_until: Option<(i64, DenyReason)> = None;
    match exp {
        Some(exp) => {
            if now >= exp.saturating_add(leeway) {
                return Err(DenyReason::Expired);
            }
            valid_until = Some((exp.saturating_add(leeway), DenyReason::Expired));
        }
        None if issuer.require_exp => return Err(DenyReason::MissingClaim),
        None => {}
    }
    if let Some(nbf) = nbf
        && nbf > now.saturating_add(leeway)
    {
        return Err(DenyReason::NotYetValid);
    }
    if let Some(iat) = iat
        && iat > now.saturating_add(leeway)
    {
        return Err(DenyReason::NotYetValid);
    }
    if let Some(max) = issuer.max_lifetime {
        match (iat, exp) {
            (Some(iat), Some(exp)) if exp.saturating_sub(iat) > max => {
                return Err(DenyReason::TokenTooOld);
            }
            // Without iat, the remaining lifetime must fit.
            (None, Some(exp)) if exp.saturating_sub(now) > max => {
                return Err(DenyReason::TokenTooOld);
            }
            // Without exp, the age must fit.
            (Some(iat), None) => {
                let until = iat.saturating_add(max).saturating_add(leeway);
                if now >= until {
                    return Err(DenyReason::TokenTooOld);
                }
                valid_until = Some((until, DenyReason::TokenTooOld));
            }
            (None, None) => return Err(DenyReason::MissingClaim),
            _ => {}
        }
    }
    if !issuer.audiences.is_empty() && !audience_matches(claims.get("aud"), &issuer.audiences)? {
        return Err(DenyReason::BadAudience);
    }
    if issuer
        .required_claims
        .iter()
        .any(|c| claims.get(c).is_none_or(Value::is_null))
    {
        return Err(DenyReason::MissingClaim);
    }
    Ok(valid_until)
}

fn audience_matches(aud: Option<&Value>, accepted: &[String]) -> Result<bool, DenyReason> {
    let accepts = |a: &str| accepted.iter().any(|x| x == a);
    match aud {
        None => Ok(false),
        Some(Value::String(a)) => Ok(accepts(a)),
        Some(Value::Array(list)) => {
            let mut any = false;
            for a in list {
                any |= accepts(a.as_str().ok_or(DenyReason::Malformed)?);
            }
            Ok(any)
        }
        Some(_) => Err(DenyReason::Malformed),
    }
}

#[cfg(test)]
mod tests;
