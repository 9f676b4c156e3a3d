//! Adversarial tokens through the real HTTP app: algorithm confusion, `none`, `crit`,
//! key-fetching headers, stripped signatures, bad encodings, oversize, wrong iss/aud, and the
//! time bounds. Every case must be a 401 with `error="invalid_token"` and the stable reason,
//! never a 5xx and never an allow.

use std::io::ErrorKind;
use std::net::TcpListener;

use crate::support::*;
use auth_sidecar::test_util::{asymmetric_key, hmac_key};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use jsonwebtoken::{Algorithm, Header};
use serde_json::{Value, json};

const CONFIG: &str = r#"
realm: omni2
tokens:
  max_length: 4096
  cookie: omni2_session
issuers:
  - issuer: https://idp.test
    audiences: [omni2]
    leeway: 30s
    keys:
      - {kid: rs, alg: RS256, pem_file: rs.pub.pem}
      - {kid: hs, alg: HS256, secret_env: HS_SECRET}
rules:
  - name: api
    path_prefix: /api
    action: authenticated
"#;

/// PKCS#1 DER → the PEM an operator would configure.
fn rsa_public_pem(der: &[u8]) -> String {
    let b64 = STANDARD.encode(der);
    let lines: Vec<&str> = b64
        .as_bytes()
        .chunks(64)
        .map(|c| std::str::from_utf8(c).expect("base64 is ASCII"))
        .collect();
    format!(
        "-----BEGIN RSA PUBLIC KEY-----\n{}\n-----END RSA PUBLIC KEY-----\n",
        lines.join("\n")
    )
}

struct Setup {
    _dir: tempfile::TempDir,
    pem: String,
    rt: auth_sidecar::config::Runtime,
}

fn setup() -> Setup {
    let dir = tempfile::tempdir().expect("temp dir");
    let pem = rsa_public_pem(&asymmetric_key(Algorithm::RS256, "rs").public);
    std::fs::write(dir.path().join("rs.pub.pem"), &pem).expect("write PEM");
    let rt = runtime(CONFIG, dir.path());
    Setup { _dir: dir, pem, rt }
}

fn b64json(v: &Value) -> String {
    URL_SAFE_NO_PAD.encode(v.to_string())
}

/// A compact JWS with an arbitrary header, HMAC-signed with `secret` (for forgeries).
fn hmac_forgery(header: Value, claims: &Value, secret: &[u8]) -> String {
    let input = format!("{}.{}", b64json(&header), b64json(claims));
    let key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, secret);
    let tag = aws_lc_rs::hmac::sign(&key, input.as_bytes());
    format!("{input}.{}", URL_SAFE_NO_PAD.encode(tag.as_ref()))
}

/// Sends `token` as a bearer to an authenticated route; asserts a 401 with the reason.
#[track_caller]
fn expect_invalid(answer: &Answer, reason: &str, case: &str) {
    assert_eq!(answer.status, 401, "{case}: {answer:?}");
    assert_eq!(answer.error(), reason, "{case}");
    let challenge = answer.one("www-authenticate");
    assert!(
        challenge.starts_with("Bearer realm=\"omni2\", error=\"invalid_token\""),
        "{case}: {challenge}"
    );
    assert!(
        answer.all("x-user-id").is_empty(),
        "{case}: identity on a deny"
    );
}

async fn ask(rt: auth_sidecar::config::Runtime, token: &str) -> Answer {
    let (svc, _) = app(rt).await;
    call(
        &svc,
        forwarded("GET", "/api/things").insert_header(("Authorization", format!("Bearer {token}"))),
    )
    .await
}

#[actix_web::test]
async fn genuine_tokens_of_both_keys_are_allowed() {
    // The baseline the attacks below are measured against.
    for key in [
        asymmetric_key(Algorithm::RS256, "rs"),
        hmac_key(Algorithm::HS256, "hs"),
    ] {
        let answer = ask(setup().rt, &key.mint(&claims("alice", "user"))).await;
        assert_eq!(answer.status, 200, "{:?}: {answer:?}", key.alg);
        assert_eq!(answer.one("x-user-id"), "alice");
    }
}

#[actix_web::test]
async fn algorithm_confusion_is_refused() {
    let s = setup();
    let c = claims("mallory", "admin");
    let rs = asymmetric_key(Algorithm::RS256, "rs");
    let cases = [
        // RS→HS: the RSA public key (PEM text, then DER) used as the HMAC secret.
        (
            "HS256 signed with the RS key's PEM",
            hmac_forgery(json!({"alg": "HS256", "kid": "rs"}), &c, s.pem.as_bytes()),
            "alg_mismatch",
        ),
        (
            "HS256 signed with the RS key's DER",
            hmac_forgery(json!({"alg": "HS256", "kid": "rs"}), &c, &rs.public),
            "alg_mismatch",
        ),
        // HS→RS: an RS256 token presented under the HMAC key's kid.
        (
            "RS256 under the HS kid",
            {
                let mut h = Header::new(Algorithm::RS256);
                h.kid = Some("hs".into());
                jsonwebtoken::encode(&h, &c, &rs.encoding).expect("encode")
            },
            "alg_mismatch",
        ),
        (
            "alg none",
            format!(
                "{}.{}.",
                b64json(&json!({"alg": "none", "kid": "rs"})),
                b64json(&c)
            ),
            "alg_mismatch",
        ),
        (
            "alg None",
            format!("{}.{}.", b64json(&json!({"alg": "None"})), b64json(&c)),
            "alg_mismatch",
        ),
    ];
    for (case, token, reason) in cases {
        let (svc, _) = app(runtime(CONFIG, s._dir.path())).await;
        let answer = call(
            &svc,
            forwarded("GET", "/api/x").insert_header(("Authorization", format!("Bearer {token}"))),
        )
        .await;
        expect_invalid(&answer, reason, case);
    }
}

#[actix_web::test]
async fn key_fetching_headers_are_never_followed() {
    // A listener the attacker's headers point at; it must never see a connection.
    let trap = TcpListener::bind("127.0.0.1:0").expect("bind trap");
    trap.set_nonblocking(true).expect("nonblocking");
    let url = format!("http://{}/jwks.json", trap.local_addr().expect("addr"));
    // The attacker's own secret (hmac_key's secret is the real one, whatever the kid).
    let attacker_secret = b"attacker-controlled-secret-32-bytes-long!".as_slice();
    let c = claims("mallory", "admin");
    let cases = [
        (
            "jku with unknown kid",
            json!({"alg": "HS256", "kid": "evil", "jku": url}),
            "unknown_kid",
        ),
        (
            "x5u with unknown kid",
            json!({"alg": "HS256", "kid": "evil", "x5u": url}),
            "unknown_kid",
        ),
        // The real kid, but signed with the attacker's key and an embedded jwk/jku.
        (
            "jku with the real kid",
            json!({"alg": "HS256", "kid": "hs", "jku": url,
                   "jwk": {"kty": "oct", "k": URL_SAFE_NO_PAD.encode(attacker_secret)}}),
            "bad_signature",
        ),
    ];
    for (case, header, reason) in cases {
        let token = hmac_forgery(header, &c, attacker_secret);
        expect_invalid(&ask(setup().rt, &token).await, reason, case);
    }
    match trap.accept() {
        Err(e) if e.kind() == ErrorKind::WouldBlock => {}
        other => panic!("the sidecar contacted the jku/x5u URL: {other:?}"),
    }
}

#[actix_web::test]
async fn broken_encodings_and_shapes_are_malformed_or_bad_signature() {
    let hs = hs();
    let good = hs.mint(&claims("alice", "user"));
    let (h, rest) = good.split_once('.').expect("three parts");
    let (p, sig) = rest.split_once('.').expect("three parts");
    let mut flipped = URL_SAFE_NO_PAD.decode(sig).expect("sig");
    flipped[0] ^= 0x01;
    let cases = [
        ("stripped signature", format!("{h}.{p}."), "bad_signature"),
        (
            "signature bit flipped",
            format!("{h}.{p}.{}", URL_SAFE_NO_PAD.encode(&flipped)),
            "bad_signature",
        ),
        ("two parts", format!("{h}.{p}"), "malformed"),
        ("padded header", format!("{h}=.{p}.{sig}"), "malformed"),
        ("padded signature", format!("{h}.{p}.{sig}="), "malformed"),
        (
            "standard alphabet",
            format!("{h}.{p}.{}", sig.replace('-', "+").replace('_', "/") + "+/"),
            "malformed",
        ),
        ("whitespace inside", format!("{h}.{p} .{sig}"), "malformed"),
        (
            "crit header",
            hmac_forgery(
                json!({"alg": "HS256", "kid": "hs", "crit": ["exp"]}),
                &claims("a", "user"),
                &hs.public,
            ),
            "malformed",
        ),
        (
            "payload not JSON",
            hmac_forgery(
                json!({"alg": "HS256", "kid": "hs"}),
                &json!("just a string"),
                &hs.public,
            ),
            "malformed",
        ),
    ];
    for (case, token, reason) in cases {
        expect_invalid(&ask(setup().rt, &token).await, reason, case);
    }
}

#[actix_web::test]
async fn an_oversized_token_is_refused_even_when_validly_signed() {
    let mut c = claims("alice", "user");
    c["padding"] = json!("x".repeat(5000));
    let token = hs().mint(&c);
    assert!(token.len() > 4096);
    expect_invalid(&ask(setup().rt, &token).await, "malformed", "oversized");
}

#[actix_web::test]
async fn wrong_issuer_audience_and_time_bounds() {
    let hs = hs();
    let now = unix_now();
    let with = |patch: Value| {
        let mut c = claims("alice", "user");
        for (k, v) in patch.as_object().expect("object") {
            c[k] = v.clone();
        }
        hs.mint(&c)
    };
    let denied = [
        (
            "wrong iss",
            with(json!({"iss": "https://evil.test"})),
            "bad_issuer",
        ),
        (
            "wrong aud",
            with(json!({"aud": ["other", "another"]})),
            "bad_audience",
        ),
        (
            "expired past the leeway",
            with(json!({"exp": now - 31})),
            "expired",
        ),
        (
            "nbf past the leeway",
            with(json!({"nbf": now + 35})),
            "not_yet_valid",
        ),
        (
            "iat in the future",
            with(json!({"iat": now + 35})),
            "not_yet_valid",
        ),
        (
            "exp as a string",
            with(json!({"exp": "tomorrow"})),
            "malformed",
        ),
    ];
    for (case, token, reason) in denied {
        expect_invalid(&ask(setup().rt, &token).await, reason, case);
    }
    // Inside the 30 s leeway (with a few seconds' margin for the real clock).
    for (case, token) in [
        ("expired within the leeway", with(json!({"exp": now - 25}))),
        ("nbf within the leeway", with(json!({"nbf": now + 25}))),
        ("aud in a list", with(json!({"aud": ["other", "omni2"]}))),
    ] {
        let answer = ask(setup().rt, &token).await;
        assert_eq!(answer.status, 200, "{case}: {answer:?}");
    }
}

#[actix_web::test]
async fn a_forgery_is_not_rescued_by_the_cache_or_by_another_source() {
    // A valid token in the cookie does not rescue a bad bearer: present-but-invalid never
    // falls back to another source.
    let s = setup();
    let (svc, _) = app(s.rt).await;
    let good = hs().mint(&claims("alice", "user"));
    let forged = hmac_forgery(
        json!({"alg": "HS256", "kid": "hs"}),
        &claims("root", "admin"),
        b"guessed-secret-guessed-secret-32b",
    );
    let cookie_alone = call(
        &svc,
        forwarded("GET", "/api/x").insert_header(("Cookie", format!("omni2_session={good}"))),
    )
    .await;
    assert_eq!(
        cookie_alone.status, 200,
        "the cookie on its own is good: {cookie_alone:?}"
    );
    // Twice: the second answer may come from the negative cache and must not differ.
    for _ in 0..2 {
        let answer = call(
            &svc,
            forwarded("GET", "/api/x")
                .insert_header(("Authorization", format!("Bearer {forged}")))
                .insert_header(("Cookie", format!("omni2_session={good}"))),
        )
        .await;
        expect_invalid(&answer, "bad_signature", "forged bearer with a good cookie");
    }
}

#[test]
fn the_forgery_helper_signs_correctly() {
    // Keeps the cases above honest: with the real secret, `hmac_forgery` yields a token that
    // parses and verifies, so each forgery fails for the reason its case claims.
    let hs = hs();
    let token = hmac_forgery(
        json!({"alg": "HS256", "kid": "hs"}),
        &claims("a", "user"),
        &hs.public,
    );
    let jws = auth_sidecar::jwt::parse(&token).expect("parses");
    assert!(auth_sidecar::jwt::verify_signature(&jws, &hs.verifying()).is_ok());
}
