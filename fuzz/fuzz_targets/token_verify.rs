//! Forwarded headers → token extraction → JWS parsing → verification against a fixed
//! HS256 key, and the whole decision: never a panic, and never an allow, because the
//! fuzzer cannot sign with a key it does not have.
//!
//! Input: a header block (`authorization:`, `cookie:`, `sec-websocket-protocol:`,
//! `x-forwarded-uri:`, `x-forwarded-method:`, ... one per line; repeats are kept, so a
//! repeated single-valued header is as ambiguous as on the wire).
#![no_main]

use std::path::Path;
use std::sync::OnceLock;
use std::time::Duration;

use auth_sidecar::config::Runtime;
use auth_sidecar::decide::decide;
use auth_sidecar::facts::{RequestFacts, Single};
use auth_sidecar::mint::{MintRequest, mint};
use auth_sidecar::{jwt, token};
use auth_sidecar_fuzz::{header_lines, values};
use libfuzzer_sys::fuzz_target;

/// The decision time: fixed, so a run is reproducible.
const NOW: i64 = 1_767_225_600;

/// Every token source on, one rule that needs a token for every path, one that needs a role.
const CONFIG: &str = r#"
listen: 127.0.0.1:8700
realm: fuzz
trusted_proxies: [127.0.0.0/8]
tokens:
  max_length: 4096
  cookie: session
  websocket_protocol_prefix: base64url.bearer.authorization.k8s.io.
issuers:
  - issuer: fuzz-issuer
    audiences: [omni2]
    leeway: 30s
    max_lifetime: 24h
    required_claims: [sub]
    keys:
      - kid: fuzz-hs256
        alg: HS256
        secret_env: FUZZ_SECRET
rules:
  - name: admin
    path_prefix: /admin
    action: roles
    roles: [admin]
  - name: everything
    path_prefix: /
    action: authenticated
    allow_query_token: true
"#;

/// Never written to the corpus: the seeds are signed with another secret.
const SECRET: &str = "fuzz-target-secret-that-the-corpus-never-contains-0123456789";

fn runtime() -> &'static Runtime {
    static RT: OnceLock<Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        let env = |name: &str| (name == "FUZZ_SECRET").then(|| SECRET.to_owned());
        let rt = Runtime::from_yaml(CONFIG, Path::new("/nonexistent"), &env)
            .unwrap_or_else(|p| panic!("fuzz config: {p}"));
        self_check(&rt);
        rt
    })
}

/// The oracle can fail: a token really signed with the key is allowed, on every source,
/// and the same token with its signature altered or stripped is not.
fn self_check(rt: &Runtime) {
    let request = MintRequest {
        sub: "alice".into(),
        ttl: Duration::from_secs(600),
        ..Default::default()
    };
    let good = mint(rt, &request, NOW).expect("mint with the fuzz key");
    let header =
        format!("x-forwarded-method: GET\nx-forwarded-uri: /api\nauthorization: Bearer {good}");
    assert!(run(rt, &header).0, "a genuine token must be allowed");
    assert!(jwt::verify(&good, &rt.issuers, NOW).is_ok());
    let cookie = format!("x-forwarded-method: GET\nx-forwarded-uri: /api\ncookie: session={good}");
    assert!(run(rt, &cookie).0, "a genuine cookie token must be allowed");
    let query = format!("x-forwarded-method: GET\nx-forwarded-uri: /ws?access_token={good}");
    assert!(run(rt, &query).0, "a genuine query token must be allowed");

    let mut forged = good.clone();
    let last = forged.pop().expect("non-empty token");
    forged.push(if last == 'A' { 'B' } else { 'A' });
    assert!(
        !run(rt, &header.replace(&good, &forged)).0,
        "an altered signature must be denied"
    );
    let stripped = &good[..=good.rfind('.').expect("three parts")];
    assert!(
        !run(rt, &header.replace(&good, stripped)).0,
        "a stripped signature must be denied"
    );
}

/// Whether the request is allowed, and whether any token was verified.
fn run(rt: &Runtime, text: &str) -> (bool, bool) {
    let block = header_lines(text);
    let single = |name: &str| {
        let mut s = Single::Absent;
        for v in values(&block, name) {
            s.push(Some(v));
        }
        s
    };
    let facts = RequestFacts {
        method: single("x-forwarded-method"),
        uri: single("x-forwarded-uri"),
        host: single("x-forwarded-host"),
        proto: single("x-forwarded-proto"),
        forwarded_for: values(&block, "x-forwarded-for"),
        authorization: single("authorization"),
        cookies: values(&block, "cookie"),
        websocket_protocols: values(&block, "sec-websocket-protocol"),
        has_origin: !values(&block, "origin").is_empty(),
        has_preflight_method: !values(&block, "access-control-request-method").is_empty(),
        accept: values(&block, "accept"),
        ..Default::default()
    };

    let mut verified = false;
    if let Ok(Some((tok, _source))) = token::extract(&facts, &rt.tokens, true) {
        let _ = jwt::parse(&tok);
        verified = jwt::verify(&tok, &rt.issuers, NOW).is_ok();
    }
    (decide(&facts, rt, NOW).decision.is_allow(), verified)
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let rt = runtime();
    // The raw input as a token too: the JWS parser sees every byte sequence, not only
    // the ones a header line can carry.
    let _ = jwt::parse(text);
    assert!(
        jwt::verify(text, &rt.issuers, NOW).is_err(),
        "made-up token verified"
    );
    let (allowed, verified) = run(rt, text);
    assert!(!verified, "made-up token verified: {text:?}");
    assert!(!allowed, "made-up request allowed: {text:?}");
});
