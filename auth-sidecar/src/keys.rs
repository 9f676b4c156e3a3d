//! Verification keys, parsed once into ready-to-verify form.
//!
//! jsonwebtoken reads PEM and JWK into key material; verification itself goes straight to
//! aws-lc-rs with keys parsed once (`ParsedPublicKey`, `hmac::Key`), so a request never
//! re-parses a key. Every key is pinned to one algorithm: a token whose `alg` differs is
//! rejected before any crypto runs, which rules out RS/HS confusion.
//!
//! [`jwks`]: remote key sets fetched over HTTP, refreshed in the background.

pub mod jwks;

use std::collections::HashMap;
use std::sync::Arc;

use aws_lc_rs::hmac;
use aws_lc_rs::signature::{self, ParsedPublicKey, RsaParameters, RsaPublicKeyComponents};
use jsonwebtoken::jwk::{AlgorithmParameters, Jwk, JwkSet, KeyOperations, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey, DecodingKeyKind};

/// Why a key could not be loaded. The message never contains key material.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum KeyError {
    #[error("{0}")]
    Invalid(String),
    #[error("HMAC secret for {alg:?} is {len} bytes; RFC 7518 §3.2 requires at least {min}")]
    ShortSecret {
        alg: Algorithm,
        len: usize,
        min: usize,
    },
    #[error("algorithm {0:?} is not supported")]
    Unsupported(Algorithm),
}

/// The algorithms we verify: HS256/384/512, RS256/384/512, PS256/384/512, ES256/384, EdDSA.
pub const SUPPORTED: [Algorithm; 12] = [
    Algorithm::HS256,
    Algorithm::HS384,
    Algorithm::HS512,
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
    Algorithm::ES256,
    Algorithm::ES384,
    Algorithm::EdDSA,
];

// Keys are few and long-lived; boxing would add a pointer chase to every verification.
#[expect(
    clippy::large_enum_variant,
    reason = "one per configured key, on the hot path"
)]
enum Verifier {
    Hmac(hmac::Key),
    Public(ParsedPublicKey),
}

/// One key, pinned to one algorithm.
pub struct VerifyingKey {
    pub kid: Option<String>,
    pub alg: Algorithm,
    verifier: Verifier,
}

impl std::fmt::Debug for VerifyingKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VerifyingKey")
            .field("kid", &self.kid)
            .field("alg", &self.alg)
            .finish_non_exhaustive()
    }
}

fn hmac_algorithm(alg: Algorithm) -> Option<(hmac::Algorithm, usize)> {
    match alg {
        Algorithm::HS256 => Some((hmac::HMAC_SHA256, 32)),
        Algorithm::HS384 => Some((hmac::HMAC_SHA384, 48)),
        Algorithm::HS512 => Some((hmac::HMAC_SHA512, 64)),
        _ => None,
    }
}

fn rsa_parameters(alg: Algorithm) -> Option<&'static RsaParameters> {
    match alg {
        Algorithm::RS256 => Some(&signature::RSA_PKCS1_2048_8192_SHA256),
        Algorithm::RS384 => Some(&signature::RSA_PKCS1_2048_8192_SHA384),
        Algorithm::RS512 => Some(&signature::RSA_PKCS1_2048_8192_SHA512),
        Algorithm::PS256 => Some(&signature::RSA_PSS_2048_8192_SHA256),
        Algorithm::PS384 => Some(&signature::RSA_PSS_2048_8192_SHA384),
        Algorithm::PS512 => Some(&signature::RSA_PSS_2048_8192_SHA512),
        _ => None,
    }
}

fn public_algorithm(alg: Algorithm) -> Option<&'static dyn signature::VerificationAlgorithm> {
    if let Some(rsa) = rsa_parameters(alg) {
        return Some(rsa);
    }
    match alg {
        Algorithm::ES256 => Some(&signature::ECDSA_P256_SHA256_FIXED),
        Algorithm::ES384 => Some(&signature::ECDSA_P384_SHA384_FIXED),
        Algorithm::EdDSA => Some(&signature::ED25519),
        _ => None,
    }
}

impl VerifyingKey {
    /// An HMAC key. The secret must be at least as long as the hash output.
    pub fn hmac(kid: Option<String>, alg: Algorithm, secret: &[u8]) -> Result<Self, KeyError> {
        let (algorithm, min) = hmac_algorithm(alg).ok_or(KeyError::Invalid(format!(
            "algorithm {alg:?} is not an HMAC algorithm"
        )))?;
        if secret.len() < min {
            return Err(KeyError::ShortSecret {
                alg,
                len: secret.len(),
                min,
            });
        }
        Ok(VerifyingKey {
            kid,
            alg,
            verifier: Verifier::Hmac(hmac::Key::new(algorithm, secret)),
        })
    }

    /// A public key from PEM (SPKI or PKCS#1 for RSA).
    pub fn from_pem(kid: Option<String>, alg: Algorithm, pem: &[u8]) -> Result<Self, KeyError> {
        let decoding = match alg {
            Algorithm::RS256
            | Algorithm::RS384
            | Algorithm::RS512
            | Algorithm::PS256
            | Algorithm::PS384
            | Algorithm::PS512 => DecodingKey::from_rsa_pem(pem),
            Algorithm::ES256 | Algorithm::ES384 => DecodingKey::from_ec_pem(pem),
            Algorithm::EdDSA => DecodingKey::from_ed_pem(pem),
            other => return Err(KeyError::Unsupported(other)),
        }
        .map_err(|e| KeyError::Invalid(format!("not a {alg:?} public key in PEM: {e}")))?;
        Self::from_decoding_key(kid, alg, &decoding)
    }

    /// A public key from its raw form: PKCS#1 or SPKI DER for RSA, the uncompressed point
    /// for ECDSA, the 32-byte key for Ed25519.
    pub fn from_public_der(
        kid: Option<String>,
        alg: Algorithm,
        der: &[u8],
    ) -> Result<Self, KeyError> {
        if hmac_algorithm(alg).is_some() {
            return Err(KeyError::Invalid(format!(
                "{alg:?} takes a secret, not a public key"
            )));
        }
        let decoding = match alg {
            Algorithm::ES256 | Algorithm::ES384 => DecodingKey::from_ec_der(der),
            Algorithm::EdDSA => DecodingKey::from_ed_der(der),
            _ => DecodingKey::from_rsa_der(der),
        };
        Self::from_decoding_key(kid, alg, &decoding)
    }

    fn from_decoding_key(
        kid: Option<String>,
        alg: Algorithm,
        key: &DecodingKey,
    ) -> Result<Self, KeyError> {
        if hmac_algorithm(alg).is_some() {
            let secret = key
                .try_get_as_bytes()
                .map_err(|e| KeyError::Invalid(e.to_string()))?;
            return Self::hmac(kid, alg, secret);
        }
        let rejected = |e: aws_lc_rs::error::KeyRejected| {
            KeyError::Invalid(format!("key rejected for {alg:?}: {e}"))
        };
        let parsed = match key.kind() {
            DecodingKeyKind::RsaModulusExponent { n, e } => {
                let params = rsa_parameters(alg).ok_or(KeyError::Invalid(format!(
                    "an RSA key cannot be used with {alg:?}"
                )))?;
                RsaPublicKeyComponents { n, e }
                    .to_parsed_public_key(params)
                    .map_err(rejected)?
            }
            DecodingKeyKind::SecretOrDer(der) => {
                let algorithm = public_algorithm(alg).ok_or(KeyError::Unsupported(alg))?;
                ParsedPublicKey::new(algorithm, der).map_err(rejected)?
            }
        };
        Ok(VerifyingKey {
            kid,
            alg,
            verifier: Verifier::Public(parsed),
        })
    }

    /// A key from a JWK. The algorithm comes from `alg`, else from the key type where that
    /// is unambiguous (EC curve, OKP); an RSA key without `alg` is taken as RS256.
    /// Keys marked for encryption (`use: enc`, or `key_ops` without `verify`) are refused.
    /// Symmetric (`oct`) keys are only accepted when `allow_symmetric` (local files).
    pub fn from_jwk(jwk: &Jwk, allow_symmetric: bool) -> Result<Self, KeyError> {
        let common = &jwk.common;
        if matches!(&common.public_key_use, Some(u) if *u != PublicKeyUse::Signature) {
            return Err(KeyError::Invalid("key is not for signatures (use)".into()));
        }
        if let Some(ops) = &common.key_operations
            && !ops.contains(&KeyOperations::Verify)
        {
            return Err(KeyError::Invalid("key_ops does not include verify".into()));
        }
        if matches!(jwk.algorithm, AlgorithmParameters::OctetKey(_)) && !allow_symmetric {
            return Err(KeyError::Invalid(
                "symmetric keys are not accepted here".into(),
            ));
        }
        let alg = match common.key_algorithm {
            Some(ka) => ka
                .to_string()
                .parse::<Algorithm>()
                .map_err(|_| KeyError::Invalid(format!("unsupported JWK alg {ka}")))?,
            None => infer_algorithm(jwk)?,
        };
        if !SUPPORTED.contains(&alg) {
            return Err(KeyError::Unsupported(alg));
        }
        if !key_type_fits(jwk, alg) {
            return Err(KeyError::Invalid(format!(
                "key type or curve does not fit alg {alg:?}"
            )));
        }
        let decoding = DecodingKey::from_jwk(jwk)
            .map_err(|e| KeyError::Invalid(format!("unreadable JWK: {e}")))?;
        Self::from_decoding_key(common.key_id.clone(), alg, &decoding)
    }

    /// Verifies `signature` over `message` (the JWS signing input). Constant-time for HMAC.
    pub fn verify(&self, message: &[u8], signature: &[u8]) -> bool {
        match &self.verifier {
            Verifier::Hmac(key) => hmac::verify(key, message, signature).is_ok(),
            Verifier::Public(key) => key.verify_sig(message, signature).is_ok(),
        }
    }

    /// Signs `message` with an HMAC key (`mint`, development); `None` for a public key.
    pub fn sign_hmac(&self, message: &[u8]) -> Option<Vec<u8>> {
        match &self.verifier {
            Verifier::Hmac(key) => Some(hmac::sign(key, message).as_ref().to_vec()),
            Verifier::Public(_) => None,
        }
    }
}

/// Whether the JWK's type (and curve) is the one `alg` is defined over (RFC 7518 §3.1).
/// The key material alone decides what is verified, so a P-256 point labelled `P-384`, or
/// an EC key labelled for RS256, is refused rather than silently used (Wycheproof JWK
/// vector "wrong_curve").
fn key_type_fits(jwk: &Jwk, alg: Algorithm) -> bool {
    use jsonwebtoken::jwk::EllipticCurve;
    match (&jwk.algorithm, alg) {
        (AlgorithmParameters::OctetKey(_), a) => hmac_algorithm(a).is_some(),
        (AlgorithmParameters::RSA(_), a) => rsa_parameters(a).is_some(),
        (AlgorithmParameters::EllipticCurve(p), Algorithm::ES256) => p.curve == EllipticCurve::P256,
        (AlgorithmParameters::EllipticCurve(p), Algorithm::ES384) => p.curve == EllipticCurve::P384,
        (AlgorithmParameters::OctetKeyPair(p), Algorithm::EdDSA) => {
            p.curve == EllipticCurve::Ed25519
        }
        _ => false,
    }
}

fn infer_algorithm(jwk: &Jwk) -> Result<Algorithm, KeyError> {
    use jsonwebtoken::jwk::EllipticCurve;
    match &jwk.algorithm {
        AlgorithmParameters::RSA(_) => Ok(Algorithm::RS256),
        AlgorithmParameters::EllipticCurve(p) => match p.curve {
            EllipticCurve::P256 => Ok(Algorithm::ES256),
            EllipticCurve::P384 => Ok(Algorithm::ES384),
            _ => Err(KeyError::Invalid(format!(
                "unsupported curve {:?}",
                p.curve
            ))),
        },
        AlgorithmParameters::OctetKeyPair(_) => Ok(Algorithm::EdDSA),
        _ => Err(KeyError::Invalid(
            "JWK without alg and of no inferable type".into(),
        )),
    }
}

/// The keys of one issuer, by `kid`.
#[derive(Debug, Default)]
pub struct KeySet {
    by_kid: HashMap<String, Arc<VerifyingKey>>,
    /// Keys configured without a kid; used only for tokens without a kid.
    anonymous: Vec<Arc<VerifyingKey>>,
}

impl KeySet {
    pub fn insert(&mut self, key: VerifyingKey) {
        let key = Arc::new(key);
        match &key.kid {
            Some(kid) => {
                self.by_kid.insert(kid.clone(), key);
            }
            None => self.anonymous.push(key),
        }
    }

    /// Consumes the set, yielding its keys (to merge sets).
    pub fn into_keys(self) -> impl Iterator<Item = VerifyingKey> {
        self.by_kid
            .into_values()
            .chain(self.anonymous)
            .filter_map(|k| Arc::try_unwrap(k).ok())
    }

    /// Whether a key with this kid is in the set.
    pub fn has_kid(&self, kid: &str) -> bool {
        self.by_kid.contains_key(kid)
    }

    pub fn len(&self) -> usize {
        self.by_kid.len() + self.anonymous.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The key for a token: by kid when it has one; without a kid only when exactly one
    /// key of the token's algorithm exists, so a kid-less token is never ambiguous.
    pub fn find(&self, kid: Option<&str>, alg: Algorithm) -> Option<&Arc<VerifyingKey>> {
        match kid {
            Some(kid) => self.by_kid.get(kid),
            None => {
                let mut candidates = self
                    .anonymous
                    .iter()
                    .chain(self.by_kid.values())
                    .filter(|k| k.alg == alg);
                let first = candidates.next()?;
                candidates.next().is_none().then_some(first)
            }
        }
    }

    /// Loads every usable key of a JWKS document; returns the set and one message per
    /// skipped key (so an operator sees why a key is missing).
    pub fn from_jwks(json: &str, allow_symmetric: bool) -> Result<(KeySet, Vec<String>), String> {
        let set: JwkSet = serde_json::from_str(json).map_err(|e| format!("invalid JWKS: {e}"))?;
        let mut keys = KeySet::default();
        let mut skipped = Vec::new();
        let kid_count = |kid: &str| {
            set.keys
                .iter()
                .filter(|k| k.common.key_id.as_deref() == Some(kid))
                .count()
        };
        let is_symmetric = |k: &Jwk| matches!(k.algorithm, AlgorithmParameters::OctetKey(_));
        // A set mixing shared secrets with public keys is ambiguous about which kind a token
        // may use (Wycheproof "MixedKeySet"): its secrets are not used.
        let mixed = set.keys.iter().any(is_symmetric) && !set.keys.iter().all(is_symmetric);
        for (i, jwk) in set.keys.iter().enumerate() {
            let kid = jwk.common.key_id.as_deref().unwrap_or("");
            // Two keys under one kid: neither can be chosen safely (Wycheproof "DuplicateKid").
            if !kid.is_empty() && kid_count(kid) > 1 {
                skipped.push(format!(
                    "keys[{i}] (kid {kid:?}): kid is not unique in the set"
                ));
                continue;
            }
            if mixed && is_symmetric(jwk) {
                skipped.push(format!(
                    "keys[{i}] (kid {kid:?}): symmetric key in a set with public keys"
                ));
                continue;
            }
            match VerifyingKey::from_jwk(jwk, allow_symmetric) {
                Ok(k) => keys.insert(k),
                Err(e) => skipped.push(format!("keys[{i}] (kid {kid:?}): {e}")),
            }
        }
        Ok((keys, skipped))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_hmac_secrets_are_refused() {
        let err = VerifyingKey::hmac(None, Algorithm::HS256, b"short").expect_err("too short");
        assert_eq!(
            err,
            KeyError::ShortSecret {
                alg: Algorithm::HS256,
                len: 5,
                min: 32
            }
        );
        assert!(VerifyingKey::hmac(None, Algorithm::HS512, &[7u8; 48]).is_err());
        assert!(VerifyingKey::hmac(None, Algorithm::HS512, &[7u8; 64]).is_ok());
        assert!(VerifyingKey::hmac(None, Algorithm::RS256, &[7u8; 64]).is_err());
    }

    #[test]
    fn kidless_lookup_must_be_unambiguous() {
        let mut set = KeySet::default();
        set.insert(VerifyingKey::hmac(None, Algorithm::HS256, &[1; 32]).expect("key"));
        assert!(set.find(None, Algorithm::HS256).is_some());
        assert!(set.find(None, Algorithm::HS384).is_none());
        set.insert(VerifyingKey::hmac(Some("b".into()), Algorithm::HS256, &[2; 32]).expect("key"));
        assert!(
            set.find(None, Algorithm::HS256).is_none(),
            "two HS256 keys: ambiguous"
        );
        assert!(set.find(Some("b"), Algorithm::HS256).is_some());
        assert!(set.find(Some("c"), Algorithm::HS256).is_none());
    }

    #[test]
    fn jwks_skips_encryption_keys_and_symmetric_when_not_allowed() {
        let jwks = r#"{"keys":[
            {"kty":"oct","kid":"h","alg":"HS256","k":"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"},
            {"kty":"oct","kid":"e","alg":"HS256","use":"enc","k":"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"}
        ]}"#;
        let (set, skipped) = KeySet::from_jwks(jwks, true).expect("parses");
        assert_eq!(set.len(), 1);
        assert_eq!(skipped.len(), 1);
        let (set, skipped) = KeySet::from_jwks(jwks, false).expect("parses");
        assert_eq!(set.len(), 0);
        assert_eq!(skipped.len(), 2);
    }
}
