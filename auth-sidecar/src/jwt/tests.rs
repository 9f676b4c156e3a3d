//! JWS parsing and signature checks in isolation. Whole-token adversarial cases live in
//! `tests/adversarial.rs`; claim timing is covered through `decide` in `decide/tests.rs`.

use jsonwebtoken::Algorithm;
use serde_json::json;

use super::*;
use crate::test_util::{asymmetric_key, hmac_key};

fn enc(v: &serde_json::Value) -> String {
    URL_SAFE_NO_PAD.encode(v.to_string())
}

fn compact(header: serde_json::Value, payload: serde_json::Value, sig: &str) -> String {
    format!("{}.{}.{sig}", enc(&header), enc(&payload))
}

#[test]
fn shape_errors_are_malformed() {
    let ok_header = json!({"alg": "HS256"});
    let cases = [
        ("two parts", "a.b".to_owned()),
        ("four parts", "a.b.c.d".to_owned()),
        ("empty", String::new()),
        ("header not base64", format!("!!.{}.AA", enc(&json!({})))),
        (
            "header not JSON",
            format!("{}.e30.AA", URL_SAFE_NO_PAD.encode("nope")),
        ),
        ("header not object", format!("{}.e30.AA", enc(&json!([1])))),
        ("padded payload", format!("{}.e30=.AA", enc(&ok_header))),
        ("standard alphabet", format!("{}.e30.A+/A", enc(&ok_header))),
        // 'AB' decodes with non-zero trailing bits: not canonical base64url.
        ("non-canonical", format!("{}.e30.AB", enc(&ok_header))),
        ("no alg", compact(json!({"typ": "JWT"}), json!({}), "AA")),
        (
            "crit",
            compact(
                json!({"alg": "HS256", "crit": ["exp"], "exp": 1}),
                json!({}),
                "AA",
            ),
        ),
        (
            "b64 false",
            compact(json!({"alg": "HS256", "b64": false}), json!({}), "AA"),
        ),
    ];
    for (name, token) in cases {
        assert_eq!(parse(&token).err(), Some(DenyReason::Malformed), "{name}");
    }
}

#[test]
fn none_and_unsupported_algorithms_are_refused() {
    for alg in ["none", "None", "NONE", "ES512", "HS1", "RSA-OAEP", ""] {
        let token = compact(json!({"alg": alg}), json!({}), "");
        assert_eq!(parse(&token).err(), Some(DenyReason::AlgMismatch), "{alg}");
    }
}

#[test]
fn key_fetching_headers_are_ignored() {
    // jku/x5u/jwk parse fine and play no part: keys only come from config.
    let token = compact(
        json!({"alg": "RS256", "kid": "k", "jku": "http://127.0.0.1:1/jwks", "x5u": "http://x",
               "jwk": {"kty": "oct", "k": "AAAA"}}),
        json!({}),
        "AA",
    );
    let jws = parse(&token).expect("parses");
    assert_eq!(jws.alg, Algorithm::RS256);
    assert_eq!(jws.kid.as_deref(), Some("k"));
}

#[test]
fn signature_pins_the_key_algorithm() {
    let rs = asymmetric_key(Algorithm::RS256, "rs");
    let token = rs.mint(&json!({"sub": "x"}));
    let jws = parse(&token).expect("parses");
    assert_eq!(verify_signature(&jws, &rs.verifying()), Ok(()));

    // The same RSA key pinned to PS256 refuses an RS256 token.
    let ps = VerifyingKey::from_public_der(None, Algorithm::PS256, &rs.public).expect("key");
    assert_eq!(verify_signature(&jws, &ps), Err(DenyReason::AlgMismatch));

    // One flipped signature bit.
    let mut bad = parse(&token).expect("parses");
    bad.signature[0] ^= 1;
    assert_eq!(
        verify_signature(&bad, &rs.verifying()),
        Err(DenyReason::BadSignature)
    );

    let hs = hmac_key(Algorithm::HS256, "hs");
    let hs_token = hs.mint(&json!({"sub": "x"}));
    let mut stripped = parse(&hs_token).expect("parses");
    stripped.signature.clear();
    assert_eq!(
        verify_signature(&stripped, &hs.verifying()),
        Err(DenyReason::BadSignature)
    );
}
