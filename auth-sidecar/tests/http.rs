//! The forwardAuth HTTP contract, in-process against the real actix app: which addresses and
//! methods answer, that only the forwarded facts count, the exact shape of allow and deny
//! answers, and the admin endpoints (with the metrics checked by the real `promtool`).

use crate::support::*;
use actix_web::test::TestRequest;

const CONFIG: &str = r#"
realm: omni2
issuers:
  - issuer: https://idp.test
    audiences: [omni2]
    keys:
      - {kid: hs, alg: HS256, secret_env: HS_SECRET}
rules:
  - name: health
    path: /health
    action: public
  - name: admin
    path_prefix: /api/v1/admin
    action: roles
    roles: [admin]
  - name: api
    path_prefix: /api/v1
    action: authenticated
    allow_preflight: true
"#;

fn rt() -> auth_sidecar::config::Runtime {
    runtime(CONFIG, std::path::Path::new("."))
}

fn bearer(sub: &str, role: &str) -> String {
    format!("Bearer {}", hs().mint(&claims(sub, role)))
}

const IDENTITY: [&str; 6] = [
    "x-user-id",
    "x-user-username",
    "x-user-role",
    "x-user-roles",
    "x-user-email",
    "x-auth-expires",
];

#[actix_web::test]
async fn every_address_and_method_answers_from_the_forwarded_facts() {
    let (svc, _) = app(rt()).await;
    let auth = bearer("alice", "user");
    for path in [
        "/verify",
        "/verify/",
        "/verify/deep/er?x=1",
        "/api/v1/auth/validate",
        // Not the exact spelling the lean front takes: answered by the App's routes.
        "/%76erify",
    ] {
        for method in ["GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"] {
            // Envoy sends the original method and a prefixed path; Traefik sends GET /verify.
            // Either way the request line must not matter, only X-Forwarded-*.
            let m = actix_web::http::Method::from_bytes(method.as_bytes()).expect("method");
            let allow = call(
                &svc,
                forwarded("GET", "/api/v1/things")
                    .method(m.clone())
                    .uri(path)
                    .insert_header(("Host", "admin.evil.test"))
                    .insert_header(("Authorization", auth.clone())),
            )
            .await;
            assert_eq!(allow.status, 200, "{method} {path}: {allow:?}");
            let deny = call(
                &svc,
                forwarded("GET", "/api/v1/admin/users")
                    .method(m)
                    .uri(path)
                    .insert_header(("Authorization", auth.clone())),
            )
            .await;
            assert_eq!(deny.status, 403, "{method} {path}: {deny:?}");
        }
    }
}

#[actix_web::test]
async fn a_body_and_content_headers_are_tolerated() {
    // Traefik's forwardBody sends the original body on a GET; nginx may forward
    // Content-Length; Expect must not stall the answer.
    let (svc, _) = app(rt()).await;
    let answer = call(
        &svc,
        forwarded("POST", "/api/v1/things")
            .insert_header(("Authorization", bearer("alice", "user")))
            .insert_header(("Content-Type", "application/json"))
            .set_payload(r#"{"big":"body"}"#),
    )
    .await;
    assert_eq!(answer.status, 200, "{answer:?}");
}

#[actix_web::test]
async fn allow_is_an_empty_200_with_each_identity_header_once() {
    let (svc, _) = app(rt()).await;
    let answer = call(
        &svc,
        forwarded("GET", "/api/v1/things")
            .insert_header(("Authorization", bearer("alice", "user")))
            // Client-sent identity must never be echoed or merged.
            .insert_header(("X-User-Id", "admin"))
            .insert_header(("X-User-Role", "admin"))
            .insert_header(("X_User_Id", "admin")),
    )
    .await;
    assert_eq!(answer.status, 200);
    assert_eq!(answer.body, "");
    for name in IDENTITY {
        answer.one(name);
    }
    assert_eq!(answer.one("x-user-id"), "alice");
    assert_eq!(answer.one("x-user-role"), "user");
    assert_eq!(answer.one("x-user-roles"), "user");
    assert_eq!(answer.one("x-user-email"), "alice@example.test");
    assert!(
        answer
            .one("x-auth-expires")
            .parse::<i64>()
            .expect("unix time")
            > unix_now()
    );
    assert!(answer.all("x_user_id").is_empty());
    assert!(
        answer.all("set-cookie").is_empty(),
        "no cookies on 200 (contract §1.10)"
    );
}

#[actix_web::test]
async fn public_and_preflight_allow_without_identity() {
    let (svc, _) = app(rt()).await;
    let public = call(
        &svc,
        forwarded("GET", "/health").insert_header(("X-User-Id", "admin")),
    )
    .await;
    let preflight = call(
        &svc,
        forwarded("OPTIONS", "/api/v1/things")
            .insert_header(("Origin", "https://app.example.test"))
            .insert_header(("Access-Control-Request-Method", "POST")),
    )
    .await;
    for answer in [public, preflight] {
        assert_eq!(answer.status, 200, "{answer:?}");
        for name in IDENTITY {
            assert!(
                answer.all(name).is_empty(),
                "{name} on an anonymous allow: {answer:?}"
            );
        }
    }
}

#[actix_web::test]
async fn no_token_is_a_bare_401_challenge() {
    let (svc, _) = app(rt()).await;
    let answer = call(
        &svc,
        forwarded("GET", "/api/v1/things").insert_header(("X-User-Id", "admin")),
    )
    .await;
    assert_eq!(answer.status, 401);
    // RFC 6750 §3.1: no error code when the request carried no token.
    assert_eq!(answer.one("www-authenticate"), r#"Bearer realm="omni2""#);
    assert_eq!(answer.one("cache-control"), "no-store");
    assert_eq!(answer.one("content-type"), "application/json");
    assert_eq!(answer.error(), "missing_token");
    assert!(answer.body.len() < 1024);
    for name in IDENTITY {
        assert!(answer.all(name).is_empty(), "{name} on a deny");
    }
}

#[actix_web::test]
async fn a_wrong_role_is_403_insufficient_scope() {
    let (svc, _) = app(rt()).await;
    let answer = call(
        &svc,
        forwarded("GET", "/api/v1/admin/users")
            .insert_header(("Authorization", bearer("bob", "user"))),
    )
    .await;
    assert_eq!(answer.status, 403);
    assert_eq!(answer.error(), "role_denied");
    assert!(
        answer
            .one("www-authenticate")
            .starts_with(r#"Bearer realm="omni2", error="insufficient_scope""#),
        "{answer:?}"
    );
    assert!(answer.all("x-user-id").is_empty());
    let admin = call(
        &svc,
        forwarded("GET", "/api/v1/admin/users")
            .insert_header(("Authorization", bearer("root", "admin"))),
    )
    .await;
    assert_eq!(admin.status, 200);
}

#[actix_web::test]
async fn missing_or_repeated_facts_deny_and_never_5xx() {
    let (svc, _) = app(rt()).await;
    let auth = bearer("alice", "user");
    let cases = [
        (
            "no X-Forwarded-Uri",
            TestRequest::get()
                .uri("/verify")
                .insert_header(("X-Forwarded-Method", "GET")),
        ),
        (
            "no X-Forwarded-Method",
            TestRequest::get()
                .uri("/verify")
                .insert_header(("X-Forwarded-Uri", "/api/v1/x")),
        ),
        (
            "two X-Forwarded-Uri",
            forwarded("GET", "/api/v1/x").append_header(("X-Forwarded-Uri", "/api/v1/admin/x")),
        ),
        (
            "nothing at all",
            TestRequest::get().uri("/api/v1/auth/validate"),
        ),
    ];
    for (case, req) in cases {
        let answer = call(&svc, req.insert_header(("Authorization", auth.clone()))).await;
        assert!(
            answer.status == 401 || answer.status == 403,
            "{case}: {answer:?}"
        );
        assert_eq!(answer.error(), "malformed", "{case}");
    }
    // Unmatched path: the default is deny.
    let unmatched = call(
        &svc,
        forwarded("GET", "/elsewhere").insert_header(("Authorization", auth)),
    )
    .await;
    assert_eq!(
        (unmatched.status, unmatched.error().as_str()),
        (403, "no_rule")
    );
}

#[actix_web::test]
async fn health_readiness_and_metrics() {
    let rt = rt();
    let hash = rt.hash.clone();
    let (svc, _) = app(rt).await;
    let healthz = call(&svc, TestRequest::get().uri("/healthz")).await;
    assert_eq!(healthz.status, 200);
    let readyz = call(&svc, TestRequest::get().uri("/readyz")).await;
    assert_eq!(readyz.status, 200, "{readyz:?}");
    let ready: serde_json::Value = serde_json::from_str(&readyz.body).expect("JSON");
    assert_eq!(ready["config_hash"], hash.as_str());

    // Two allows and a deny, then the counters must show exactly that.
    let auth = bearer("alice", "user");
    for _ in 0..2 {
        let a = call(
            &svc,
            forwarded("GET", "/api/v1/x").insert_header(("Authorization", auth.clone())),
        )
        .await;
        assert_eq!(a.status, 200);
    }
    assert_eq!(call(&svc, forwarded("GET", "/api/v1/x")).await.status, 401);
    let metrics = call(&svc, TestRequest::get().uri("/metrics")).await;
    assert_eq!(metrics.status, 200);
    let text = &metrics.body;
    let sample = |prefix: &str| -> f64 {
        text.lines()
            .find(|l| l.starts_with(prefix))
            .unwrap_or_else(|| panic!("no sample {prefix} in\n{text}"))
            .rsplit(' ')
            .next()
            .and_then(|v| v.parse().ok())
            .expect("numeric sample")
    };
    assert_eq!(
        sample(
            r#"auth_sidecar_decisions_total{decision="allow",reason="authenticated",rule="api"}"#
        ),
        2.0
    );
    assert_eq!(
        sample(
            r#"auth_sidecar_decisions_total{decision="deny",reason="missing_token",rule="api"}"#
        ),
        1.0
    );
    assert_eq!(sample("auth_sidecar_token_cache_hits_total"), 1.0);
    assert_eq!(sample("auth_sidecar_token_cache_misses_total"), 1.0);
    assert!(
        !text.contains(auth.trim_start_matches("Bearer ")),
        "a token leaked into metrics"
    );
    test_support::assert_promtool_metrics(text);
}
