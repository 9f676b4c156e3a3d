//! `jwt/verify`: full token validation (`auth_sidecar::jwt::verify`: parse, issuer and key
//! lookup, algorithm pin, signature, claims) per algorithm, beside the naive floor for the
//! same token: base64url-decode the three parts, parse header and claims as JSON, and one
//! raw aws-lc-rs verify with a pre-parsed key. The ratio full/floor is what the sidecar adds.

use std::hint::black_box;

use auth_sidecar::jwt::{self, Issuer};
use auth_sidecar::keys::KeySet;
use auth_sidecar::test_util::{TestKey, key};
use aws_lc_rs::{hmac, signature};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use criterion::{Criterion, criterion_group, criterion_main};
use jsonwebtoken::Algorithm;
use serde_json::{Map, Value, json};

const NOW: i64 = 1_800_000_000;

fn issuer(test_key: &TestKey) -> Issuer {
    let mut keys = KeySet::default();
    keys.insert(test_key.verifying());
    Issuer {
        issuer: "https://idp.bench".into(),
        audiences: vec!["omni2".into()],
        leeway: 30,
        require_exp: true,
        max_lifetime: Some(3600),
        required_claims: vec!["sub".into()],
        accept_id_tokens: false,
        require_typ: Vec::new(),
        keys,
        remote: None,
        fingerprint: Vec::new(),
    }
}

/// A realistic access token: the claims an IdP puts in one.
fn token(test_key: &TestKey) -> String {
    test_key.mint(&json!({
        "iss": "https://idp.bench", "aud": "omni2", "sub": "user-1234",
        "preferred_username": "alice", "email": "alice@example.test",
        "role": "user", "roles": ["reader", "writer"],
        "iat": NOW - 60, "exp": NOW + 600, "jti": "0f8b5c1e-7d1a-4c1e-9a53-2b3f3c0d9e11",
    }))
}

/// The floor: decode and parse what any validator must, then one raw signature check.
fn raw(token: &str, verify: &dyn Fn(&[u8], &[u8]) -> bool) -> bool {
    let mut parts = token.split('.');
    let (h, p, s) = (
        parts.next().unwrap(),
        parts.next().unwrap(),
        parts.next().unwrap(),
    );
    let header: Map<String, Value> =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(h).unwrap()).unwrap();
    let claims: Map<String, Value> =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(p).unwrap()).unwrap();
    let sig = URL_SAFE_NO_PAD.decode(s).unwrap();
    black_box((&header, &claims));
    verify(&token.as_bytes()[..h.len() + 1 + p.len()], &sig)
}

/// `(signing input, signature) -> valid`.
type RawVerify = Box<dyn Fn(&[u8], &[u8]) -> bool>;

fn raw_verifier(test_key: &TestKey) -> RawVerify {
    let public: &'static dyn signature::VerificationAlgorithm = match test_key.alg {
        Algorithm::HS256 => {
            let k = hmac::Key::new(hmac::HMAC_SHA256, &test_key.public);
            return Box::new(move |m, s| hmac::verify(&k, m, s).is_ok());
        }
        Algorithm::RS256 => &signature::RSA_PKCS1_2048_8192_SHA256,
        Algorithm::ES256 => &signature::ECDSA_P256_SHA256_FIXED,
        Algorithm::EdDSA => &signature::ED25519,
        other => panic!("no raw verifier for {other:?}"),
    };
    let k = signature::ParsedPublicKey::new(public, &test_key.public).expect("public key");
    Box::new(move |m, s| k.verify_sig(m, s).is_ok())
}

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("jwt/verify");
    for alg in [
        Algorithm::HS256,
        Algorithm::RS256,
        Algorithm::ES256,
        Algorithm::EdDSA,
    ] {
        let test_key = key(alg, "k1");
        let issuers = [issuer(&test_key)];
        let token = token(&test_key);
        assert!(
            jwt::verify(&token, &issuers, NOW).is_ok(),
            "{alg:?} token verifies"
        );
        let verifier = raw_verifier(&test_key);
        assert!(raw(&token, &*verifier), "{alg:?} raw verify");
        let name = format!("{alg:?}").to_ascii_lowercase();
        group.bench_function(format!("{name}_sidecar"), |b| {
            b.iter(|| jwt::verify(black_box(&token), &issuers, NOW).is_ok())
        });
        group.bench_function(format!("{name}_raw_floor"), |b| {
            b.iter(|| raw(black_box(&token), &*verifier))
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
