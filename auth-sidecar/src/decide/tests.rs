//! Tables for the pure decision function: every deny reason, every token source and its
//! precedence, path normalisation, client-IP walking, preflight, identity sanitising, and the
//! HTTP answers (inline snapshots).

use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;

use actix_web::body::MessageBody;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::Algorithm;
use serde_json::{Value, json};

use super::*;
use crate::facts::Single;
use crate::http::answer::to_response;
use crate::reason::AllowReason;
use crate::test_util::{TestKey, hmac_key};

const NOW: i64 = 1_800_000_000;
const ISS: &str = "https://idp.test";

const CONFIG: &str = r#"
realm: omni2
trusted_proxies: [127.0.0.0/8, "192.168.0.0/16", "fd00::/8"]
tokens:
  cookie: omni2_session
issuers:
  - issuer: https://idp.test
    audiences: [omni2]
    leeway: 30s
    max_lifetime: 1h
    required_claims: [sub]
    keys:
      - kid: hs
        alg: HS256
        secret_env: TEST_SECRET
  - issuer: https://other.test
    audiences: [omni2]
    keys:
      - kid: other
        alg: HS256
        secret_env: OTHER_SECRET
rules:
  - name: health
    path_regex: "^/(health|healthz)$"
    action: public
  - name: ws-status
    path: /ws/mcp-status
    action: authenticated
    allow_query_token: true
  - name: internal
    path_prefix: /internal
    action: authenticated
    allow_cidrs: [10.0.0.0/8, "2001:db8::/32"]
    deny_cidrs: [10.6.6.0/24]
  - name: blocked
    path_prefix: /api/v1/blocked
    action: deny
  - name: ops
    path_prefix: /api/v1/ops
    methods: [POST]
    action: roles
    roles: [ops, oncall]
    roles_mode: all
  - name: admin
    path_prefix: /api/v1/admin
    action: roles
    roles: [admin]
  - name: api
    path_prefix: /api/v1
    action: authenticated
    allow_preflight: true
"#;

fn secret(name: &str) -> Option<String> {
    match name {
        "TEST_SECRET" => Some(String::from_utf8(hs().public).expect("ascii secret")),
        "OTHER_SECRET" => Some("another-secret-at-least-32-bytes-long!!".into()),
        _ => None,
    }
}

fn runtime() -> Runtime {
    Runtime::from_yaml(CONFIG, Path::new("."), &secret).expect("the test config is valid")
}

fn hs() -> TestKey {
    hmac_key(Algorithm::HS256, "hs")
}

fn claims() -> Value {
    json!({
        "iss": ISS, "aud": "omni2", "sub": "u-1", "preferred_username": "alice",
        "role": "user", "roles": ["reader"], "email": "alice@example.test",
        "iat": NOW - 60, "exp": NOW + 600,
    })
}

/// A token from the test issuer with `patch` merged over the default claims.
fn token(patch: Value) -> String {
    let mut c = claims();
    for (k, v) in patch.as_object().expect("patch is an object") {
        if v.is_null() {
            c.as_object_mut().expect("object").remove(k);
        } else {
            c[k] = v.clone();
        }
    }
    hs().mint(&c)
}

/// A request as Traefik forwards it from a client behind no other proxy.
fn get(uri: &str) -> RequestFacts<'_> {
    RequestFacts {
        method: Single::One("GET"),
        uri: Single::One(uri),
        host: Single::One("api.example.test"),
        proto: Single::One("https"),
        forwarded_for: vec!["203.0.113.9"],
        peer: Some(IpAddr::V4(Ipv4Addr::LOCALHOST)),
        ..Default::default()
    }
}

fn bearer(t: &str) -> String {
    format!("Bearer {t}")
}

#[track_caller]
fn assert_deny(rt: &Runtime, facts: &RequestFacts<'_>, want: DenyReason, want_rule: Option<&str>) {
    match decide(facts, rt, NOW).decision {
        Decision::Deny { reason, rule, .. } => {
            assert_eq!(reason, want, "deny reason");
            let name = rule.map(|i| &*rt.policy.rules[i].name);
            assert_eq!(name, want_rule, "rule");
        }
        other => panic!("expected deny {want:?}, got {other:?}"),
    }
}

#[track_caller]
fn assert_allow(rt: &Runtime, facts: &RequestFacts<'_>, want: AllowReason, want_rule: &str) {
    match decide(facts, rt, NOW).decision {
        Decision::Allow { reason, rule, .. } => {
            assert_eq!(reason, want, "allow reason");
            assert_eq!(rule.map(|i| &*rt.policy.rules[i].name), Some(want_rule));
        }
        other => panic!("expected allow {want:?} by {want_rule}, got {other:?}"),
    }
}

#[test]
fn every_token_deny_reason() {
    let rt = runtime();
    let other_issuer = hmac_key(Algorithm::HS256, "other");
    let wrong_key = TestKey {
        encoding: jsonwebtoken::EncodingKey::from_secret(b"not-the-right-secret-but-long-enough!"),
        ..hs()
    };
    let hs384 = TestKey {
        alg: Algorithm::HS384,
        ..hs()
    };
    let unknown_kid = hmac_key(Algorithm::HS256, "rotated-away");
    let cases: Vec<(&str, String, DenyReason)> = vec![
        ("garbage", "not.a.jwt".into(), DenyReason::Malformed),
        (
            "bad signature",
            wrong_key.mint(&claims()),
            DenyReason::BadSignature,
        ),
        (
            "unknown kid",
            unknown_kid.mint(&claims()),
            DenyReason::UnknownKid,
        ),
        (
            "alg differs from key",
            hs384.mint(&claims()),
            DenyReason::AlgMismatch,
        ),
        (
            "expired",
            token(json!({"exp": NOW - 31})),
            DenyReason::Expired,
        ),
        (
            "not yet valid",
            token(json!({"nbf": NOW + 31})),
            DenyReason::NotYetValid,
        ),
        (
            "issued in the future",
            token(json!({"iat": NOW + 31})),
            DenyReason::NotYetValid,
        ),
        (
            "unknown issuer",
            token(json!({"iss": "https://evil.test"})),
            DenyReason::BadIssuer,
        ),
        // Signed with the other issuer's secret but claiming the first issuer.
        (
            "issuer/key mismatch",
            other_issuer.mint(&claims()),
            DenyReason::UnknownKid,
        ),
        (
            "wrong audience",
            token(json!({"aud": "someone-else"})),
            DenyReason::BadAudience,
        ),
        (
            "no exp",
            token(json!({"exp": null})),
            DenyReason::MissingClaim,
        ),
        (
            "no sub",
            token(json!({"sub": null})),
            DenyReason::MissingClaim,
        ),
        (
            "lifetime over max",
            token(json!({"iat": NOW - 10, "exp": NOW + 3 * 3600})),
            DenyReason::TokenTooOld,
        ),
        (
            "CR in a claim",
            token(json!({"preferred_username": "alice\r\nX-User-Role: admin"})),
            DenyReason::Malformed,
        ),
    ];
    for (name, t, want) in cases {
        let auth = bearer(&t);
        let facts = RequestFacts {
            authorization: Single::One(&auth),
            ..get("/api/v1/things")
        };
        match decide(&facts, &rt, NOW).decision {
            Decision::Deny {
                reason,
                token_presented,
                ..
            } => {
                assert_eq!(reason, want, "{name}");
                assert!(token_presented, "{name}");
            }
            other => panic!("{name}: expected {want:?}, got {other:?}"),
        }
    }
}

/// RFC 7519 §4.1.4: valid strictly before `exp`; §4.1.5: valid from `nbf` on. Leeway 30 s.
#[test]
fn leeway_bounds() {
    let rt = runtime();
    for (patch, allowed) in [
        (json!({"exp": NOW - 29}), true),
        (json!({"exp": NOW - 30}), false),
        (json!({"nbf": NOW + 30}), true),
        (json!({"nbf": NOW + 31}), false),
    ] {
        let auth = bearer(&token(patch.clone()));
        let facts = RequestFacts {
            authorization: Single::One(&auth),
            ..get("/api/v1/things")
        };
        let outcome = decide(&facts, &rt, NOW);
        assert_eq!(outcome.decision.is_allow(), allowed, "{patch}");
    }
}

#[test]
fn every_policy_deny_reason() {
    let rt = runtime();
    let user = bearer(&token(json!({})));
    assert_deny(
        &rt,
        &get("/api/v1/x"),
        DenyReason::MissingToken,
        Some("api"),
    );
    assert_deny(&rt, &get("/nothing/here"), DenyReason::NoRule, None);
    assert_deny(
        &rt,
        &get("/api/v1/blocked/x"),
        DenyReason::RuleDenied,
        Some("blocked"),
    );

    let admin_as_user = RequestFacts {
        authorization: Single::One(&user),
        ..get("/api/v1/admin/x")
    };
    assert_deny(&rt, &admin_as_user, DenyReason::RoleDenied, Some("admin"));

    // The client is 203.0.113.9: outside the internal rule's networks.
    let internal = RequestFacts {
        authorization: Single::One(&user),
        ..get("/internal/metrics")
    };
    assert_deny(&rt, &internal, DenyReason::IpDenied, Some("internal"));

    // Missing forwarded method or URI, or a repeated one, is malformed: never guess.
    let no_method = RequestFacts {
        method: Single::Absent,
        ..get("/health")
    };
    assert_deny(&rt, &no_method, DenyReason::Malformed, None);
    let two_uris = RequestFacts {
        uri: Single::Invalid,
        ..get("/health")
    };
    assert_deny(&rt, &two_uris, DenyReason::Malformed, None);
}

#[test]
fn roles_any_and_all_over_role_and_roles_claims() {
    let rt = runtime();
    let ok_cases = [
        (json!({"role": "admin"}), "/api/v1/admin/x", "GET"),
        (
            json!({"roles": ["reader", "admin"]}),
            "/api/v1/admin/x",
            "GET",
        ),
        (
            json!({"role": "ops", "roles": ["oncall"]}),
            "/api/v1/ops/page",
            "POST",
        ),
    ];
    for (patch, uri, method) in ok_cases {
        let auth = bearer(&token(patch.clone()));
        let facts = RequestFacts {
            method: Single::One(method),
            authorization: Single::One(&auth),
            ..get(uri)
        };
        assert!(
            decide(&facts, &rt, NOW).decision.is_allow(),
            "{patch} {uri}"
        );
    }
    // all-of: one of two roles is not enough.
    let auth = bearer(&token(json!({"role": "ops", "roles": []})));
    let facts = RequestFacts {
        method: Single::One("POST"),
        authorization: Single::One(&auth),
        ..get("/api/v1/ops/page")
    };
    assert_deny(&rt, &facts, DenyReason::RoleDenied, Some("ops"));
    // The ops rule is POST-only; a GET falls through to the plain api rule.
    let facts = RequestFacts {
        authorization: Single::One(&auth),
        ..get("/api/v1/ops/page")
    };
    assert_allow(&rt, &facts, AllowReason::Authenticated, "api");
}

#[test]
fn traversal_and_encoded_forms_hit_the_admin_rule() {
    let rt = runtime();
    let user = bearer(&token(json!({})));
    for uri in [
        "/api/v1/public/../admin",
        "/api/v1/public/../admin/users",
        "/api/v1/%2e%2e/v1/admin",
        "/api/v1/public/%2E%2E/admin",
        "/api/v1/./admin",
        "/api/v1//admin",
        "/api/v1/%61dmin",
        "/api/v1/public/..%2f..%2fadmin/../admin",
    ] {
        let facts = RequestFacts {
            authorization: Single::One(&user),
            ..get(uri)
        };
        let outcome = decide(&facts, &rt, NOW);
        match outcome.decision {
            Decision::Deny {
                reason: DenyReason::RoleDenied,
                rule: Some(i),
                ..
            } => assert_eq!(&*rt.policy.rules[i].name, "admin", "{uri}"),
            // `..%2f..%2fadmin` is one opaque segment: it must never become a separator,
            // and `deny_encoded_separators` (default on) refuses it on the `api` rule.
            Decision::Deny {
                reason: DenyReason::Malformed,
                rule: Some(i),
                ..
            } if uri.contains("%2f") && &*rt.policy.rules[i].name == "api" => {}
            other => panic!("{uri}: expected the admin rule to deny, got {other:?}"),
        }
    }
    // Escaping above the root stays at the root.
    assert_allow(&rt, &get("/../../health"), AllowReason::Public, "health");
}

#[test]
fn encoded_separators_are_malformed_on_protected_rules_unless_opted_out() {
    let rt = runtime();
    let user = bearer(&token(json!({})));
    for uri in [
        "/api/v1/public/..%2Fadmin/x",
        "/api/v1/public/..%2fadmin/x",
        "/api/v1/a%5Cb",
        "/api/v1/a%5cb",
        "/api/v1/a%00",
        "/ws/mcp-status%2F",
    ] {
        let facts = RequestFacts {
            authorization: Single::One(&user),
            ..get(uri)
        };
        let rule = if uri.starts_with("/ws") {
            None
        } else {
            Some("api")
        };
        if rule.is_some() {
            assert_deny(&rt, &facts, DenyReason::Malformed, rule);
        } else {
            // No rule matches `/ws/mcp-status%2F`: denied either way.
            assert!(!decide(&facts, &rt, NOW).decision.is_allow(), "{uri}");
        }
    }
    // `%2e` is not a separator.
    let facts = RequestFacts {
        authorization: Single::One(&user),
        ..get("/api/v1/a%2eb")
    };
    assert_allow(&rt, &facts, AllowReason::Authenticated, "api");
    // Opting out keeps the old behaviour (the path stays one opaque segment).
    let opted_out = CONFIG.replace(
        "    allow_preflight: true\n",
        "    allow_preflight: true\n    deny_encoded_separators: false\n",
    );
    assert_ne!(opted_out, CONFIG);
    let rt = Runtime::from_yaml(&opted_out, Path::new("."), &secret).expect("valid");
    let facts = RequestFacts {
        authorization: Single::One(&user),
        ..get("/api/v1/public/..%2Fadmin/x")
    };
    assert_allow(&rt, &facts, AllowReason::Authenticated, "api");
    // `public` rules are not checked: nothing to protect.
    let with_docs = CONFIG.replace(
        "rules:\n",
        "rules:\n  - name: docs\n    path_prefix: /docs\n    action: public\n",
    );
    let rt = Runtime::from_yaml(&with_docs, Path::new("."), &secret).expect("valid");
    assert_allow(&rt, &get("/docs/a%2Fb"), AllowReason::Public, "docs");
}

#[test]
fn client_ip_is_the_right_most_untrusted_entry() {
    let rt = runtime();
    let user = bearer(&token(json!({})));
    let at = |xff: Vec<&'static str>| -> Decision {
        let facts = RequestFacts {
            forwarded_for: xff,
            authorization: Single::One(&user),
            ..get("/internal/x")
        };
        decide(&facts, &rt, NOW).decision
    };
    // A spoofed left-most entry is ignored: the right-most untrusted hop is the client.
    assert!(!at(vec!["10.0.0.1, 203.0.113.9"]).is_allow());
    assert!(!at(vec!["10.0.0.1", "203.0.113.9, 192.168.1.1"]).is_allow());
    // A real internal client behind a trusted proxy.
    assert!(at(vec!["203.0.113.9, 10.1.2.3, 192.168.1.1"]).is_allow());
    // Deny list wins inside an allowed network.
    assert!(!at(vec!["10.6.6.6"]).is_allow());
    // IPv6, and IPv4-mapped IPv6 that must count as IPv4.
    assert!(at(vec!["2001:db8::7"]).is_allow());
    assert!(at(vec!["::ffff:10.9.9.9"]).is_allow());
    assert!(!at(vec!["::ffff:203.0.113.9"]).is_allow());
    // Malformed entries deny rules that need the address.
    assert!(!at(vec!["10.0.0.1, not-an-ip"]).is_allow());
    // Without X-Forwarded-For, the gateway peer (127.0.0.1) is the client.
    assert!(!at(vec![]).is_allow());
    // Rules without CIDRs do not care about the address, even a malformed one.
    let facts = RequestFacts {
        forwarded_for: vec!["garbage"],
        ..get("/health")
    };
    assert_allow(&rt, &facts, AllowReason::Public, "health");
}

#[test]
fn token_sources_and_precedence() {
    let rt = runtime();
    let good = token(json!({}));
    let bad = "eyJhbGciOiJIUzI1NiJ9.not-json.AAAA";
    let auth_good = bearer(&good);
    let auth_bad = bearer(bad);
    let auth_lower = format!("bearer {good}");
    let cookie_good = format!("theme=dark; omni2_session={good}");
    let cookie_bad = format!("omni2_session={bad}");
    let proto_good = format!(
        "mcp.v1, base64url.bearer.authorization.k8s.io.{}",
        URL_SAFE_NO_PAD.encode(&good)
    );
    let query_good = format!("/ws/mcp-status?x=1&access_token={good}");
    let query_on_api = format!("/api/v1/x?access_token={good}");

    let allow = |facts: RequestFacts<'_>| decide(&facts, &rt, NOW).decision.is_allow();
    // Each source alone.
    assert!(allow(RequestFacts {
        authorization: Single::One(&auth_good),
        ..get("/api/v1/x")
    }));
    assert!(allow(RequestFacts {
        authorization: Single::One(&auth_lower),
        ..get("/api/v1/x")
    }));
    assert!(allow(RequestFacts {
        cookies: vec![&cookie_good],
        ..get("/api/v1/x")
    }));
    assert!(allow(RequestFacts {
        websocket_protocols: vec![&proto_good],
        ..get("/ws/mcp-status")
    }));
    assert!(allow(get(&query_good)));
    // The query token is ignored where the rule does not enable it.
    assert_deny(
        &rt,
        &get(&query_on_api),
        DenyReason::MissingToken,
        Some("api"),
    );
    // A present but invalid higher-precedence token never falls back to a good one.
    let facts = RequestFacts {
        authorization: Single::One(&auth_bad),
        cookies: vec![&cookie_good],
        websocket_protocols: vec![&proto_good],
        ..get(&query_good)
    };
    assert_deny(&rt, &facts, DenyReason::Malformed, Some("ws-status"));
    let facts = RequestFacts {
        cookies: vec![&cookie_bad],
        ..get(&query_good)
    };
    assert_deny(&rt, &facts, DenyReason::Malformed, Some("ws-status"));
    // A good higher-precedence token wins over a bad lower one.
    assert!(allow(RequestFacts {
        authorization: Single::One(&auth_good),
        cookies: vec![&cookie_bad],
        ..get("/api/v1/x")
    }));
    // Basic auth is not a bearer token.
    let basic = RequestFacts {
        authorization: Single::One("Basic dXNlcjpwYXNz"),
        ..get("/api/v1/x")
    };
    assert_deny(&rt, &basic, DenyReason::Malformed, Some("api"));
    // Oversized tokens are refused before parsing.
    let huge = bearer(&"a".repeat(9000));
    let facts = RequestFacts {
        authorization: Single::One(&huge),
        ..get("/api/v1/x")
    };
    assert_deny(&rt, &facts, DenyReason::Malformed, Some("api"));
}

#[test]
fn preflight_needs_origin_and_request_method_and_the_rule_flag() {
    let rt = runtime();
    let preflight = |uri| RequestFacts {
        method: Single::One("OPTIONS"),
        has_origin: true,
        has_preflight_method: true,
        ..get(uri)
    };
    assert_allow(&rt, &preflight("/api/v1/x"), AllowReason::Preflight, "api");
    // Not on rules without allow_preflight.
    assert_deny(
        &rt,
        &preflight("/api/v1/admin/x"),
        DenyReason::MissingToken,
        Some("admin"),
    );
    // A bare OPTIONS is not a preflight.
    let bare = RequestFacts {
        has_preflight_method: false,
        ..preflight("/api/v1/x")
    };
    assert_deny(&rt, &bare, DenyReason::MissingToken, Some("api"));
}

#[test]
fn allow_emits_each_identity_header_once_and_public_emits_none() {
    let rt = runtime();
    let auth = bearer(&token(json!({"roles": ["a", "b,c", "é"], "email": null})));
    let facts = RequestFacts {
        authorization: Single::One(&auth),
        ..get("/api/v1/x")
    };
    let Decision::Allow {
        identity: Some(id), ..
    } = decide(&facts, &rt, NOW).decision
    else {
        panic!("expected an authenticated allow");
    };
    let got: Vec<(String, String)> = id
        .iter()
        .map(|(n, v)| (n.to_string(), v.to_str().expect("ascii").to_owned()))
        .collect();
    insta::assert_debug_snapshot!(got, @r#"
    [
        (
            "x-user-id",
            "u-1",
        ),
        (
            "x-user-username",
            "alice",
        ),
        (
            "x-user-role",
            "user",
        ),
        (
            "x-user-roles",
            "a,b%2Cc,%C3%A9",
        ),
        (
            "x-user-email",
            "",
        ),
        (
            "x-auth-expires",
            "1800000600",
        ),
    ]
    "#);
    let Decision::Allow { identity, .. } = decide(&get("/health"), &rt, NOW).decision else {
        panic!("health is public");
    };
    assert!(identity.is_none());
}

#[test]
fn cache_is_used_but_policy_is_evaluated_every_time() {
    let rt = runtime();
    let auth = bearer(&token(json!({})));
    let facts = RequestFacts {
        authorization: Single::One(&auth),
        ..get("/api/v1/x")
    };
    assert_eq!(decide(&facts, &rt, NOW).cache, CacheUse::Miss);
    assert_eq!(decide(&facts, &rt, NOW).cache, CacheUse::Hit);
    // Same cached token, admin route: the role check still runs.
    let admin = RequestFacts {
        authorization: Single::One(&auth),
        ..get("/api/v1/admin/x")
    };
    let outcome = decide(&admin, &rt, NOW);
    assert_eq!(outcome.cache, CacheUse::Hit);
    assert!(!outcome.decision.is_allow());
    // Past exp (plus leeway) the cache no longer answers allow.
    assert!(!decide(&facts, &rt, NOW + 700).decision.is_allow());
}

fn answer(rt: &Runtime, facts: &RequestFacts<'_>) -> (u16, Vec<(String, String)>, String) {
    let res = to_response(&decide(facts, rt, NOW).decision, &rt.realm);
    let status = res.status().as_u16();
    let mut headers: Vec<(String, String)> = res
        .headers()
        .iter()
        .map(|(n, v)| (n.to_string(), v.to_str().expect("ascii").to_owned()))
        .collect();
    headers.sort();
    let body = res.into_body().try_into_bytes().expect("sized body");
    (
        status,
        headers,
        String::from_utf8(body.to_vec()).expect("utf-8"),
    )
}

#[test]
fn http_answers() {
    let rt = runtime();
    let expired = bearer(&token(json!({"exp": NOW - 100})));
    let user = bearer(&token(json!({})));

    insta::assert_debug_snapshot!(answer(&rt, &get("/api/v1/x")), @r#"
    (
        401,
        [
            (
                "cache-control",
                "no-store",
            ),
            (
                "content-type",
                "application/json",
            ),
            (
                "www-authenticate",
                "Bearer realm=\"omni2\"",
            ),
        ],
        "{\"error\":\"missing_token\",\"message\":\"a bearer token is required\"}",
    )
    "#);
    let facts = RequestFacts {
        authorization: Single::One(&expired),
        ..get("/api/v1/x")
    };
    insta::assert_debug_snapshot!(answer(&rt, &facts), @r#"
    (
        401,
        [
            (
                "cache-control",
                "no-store",
            ),
            (
                "content-type",
                "application/json",
            ),
            (
                "www-authenticate",
                "Bearer realm=\"omni2\", error=\"invalid_token\", error_description=\"the token has expired\"",
            ),
        ],
        "{\"error\":\"expired\",\"message\":\"the token has expired\"}",
    )
    "#);
    let facts = RequestFacts {
        authorization: Single::One(&user),
        ..get("/api/v1/admin/x")
    };
    insta::assert_debug_snapshot!(answer(&rt, &facts), @r#"
    (
        403,
        [
            (
                "cache-control",
                "no-store",
            ),
            (
                "content-type",
                "application/json",
            ),
            (
                "www-authenticate",
                "Bearer realm=\"omni2\", error=\"insufficient_scope\", error_description=\"the token lacks a required role\"",
            ),
        ],
        "{\"error\":\"role_denied\",\"message\":\"the token lacks a required role\"}",
    )
    "#);
    insta::assert_debug_snapshot!(answer(&rt, &get("/elsewhere")), @r#"
    (
        403,
        [
            (
                "cache-control",
                "no-store",
            ),
            (
                "content-type",
                "application/json",
            ),
        ],
        "{\"error\":\"no_rule\",\"message\":\"no rule allows this request\"}",
    )
    "#);
    let facts = RequestFacts {
        authorization: Single::One(&user),
        ..get("/api/v1/x")
    };
    let (status, headers, body) = answer(&rt, &facts);
    assert_eq!(status, 200);
    assert!(body.is_empty());
    assert!(headers.iter().any(|(n, v)| n == "x-user-id" && v == "u-1"));
}
