//! Per-rule rate limits (429 + Retry-After at the bound, other identities unaffected, per
//! client address on public rules) and login redirects (browsers get 302 to an absolute
//! login URL, API clients keep 401).

use std::path::Path;

use actix_web::App;
use actix_web::body::MessageBody;
use actix_web::dev::{Service, ServiceResponse};
use actix_web::test::{self, TestRequest};
use auth_sidecar::config::Runtime;
use auth_sidecar::http::{AppState, configure_verify};
use auth_sidecar::keys::jwks::unix_now;
use auth_sidecar::test_util::{TestKey, hmac_key};
use jsonwebtoken::Algorithm;
use serde_json::{Value, json};

fn hs() -> TestKey {
    hmac_key(Algorithm::HS256, "hs")
}

fn env(name: &str) -> Option<String> {
    (name == "HS_SECRET").then(|| String::from_utf8(hs().public).expect("ASCII secret"))
}

const CONFIG: &str = r#"
issuers:
  - issuer: https://idp.test
    audiences: [omni2]
    keys: [{kid: hs, alg: HS256, secret_env: HS_SECRET}]
rules:
  - name: public
    path_prefix: /pub
    action: public
    rate_limit: {requests: 2, per: 1m}
  - name: app
    path_prefix: /app
    action: authenticated
    login_url: https://login.example.com/start?client=omni2
  - name: api
    path_prefix: /api
    action: authenticated
    rate_limit: {requests: 30, per: 1m, burst: 3}
"#;

fn token(sub: &str) -> String {
    let now = unix_now();
    hs().mint(
        &json!({"iss": "https://idp.test", "aud": "omni2", "sub": sub,
                      "iat": now - 5, "exp": now + 3600}),
    )
}

struct Answer {
    status: u16,
    headers: actix_web::http::header::HeaderMap,
    error: String,
}

async fn send(
    app: &impl Service<actix_http::Request, Response = ServiceResponse, Error = actix_web::Error>,
    req: TestRequest,
) -> Answer {
    let res = test::call_service(app, req.to_request()).await;
    let status = res.status().as_u16();
    let headers = res.headers().clone();
    let body = res.into_body().try_into_bytes().expect("body");
    let error = serde_json::from_slice::<Value>(&body)
        .ok()
        .and_then(|v| v["error"].as_str().map(str::to_owned))
        .unwrap_or_default();
    Answer {
        status,
        headers,
        error,
    }
}

fn forwarded(uri: &str, client: &str) -> TestRequest {
    TestRequest::get()
        .uri("/verify")
        .insert_header(("X-Forwarded-Method", "GET"))
        .insert_header(("X-Forwarded-Uri", uri))
        .insert_header(("X-Forwarded-Proto", "https"))
        .insert_header(("X-Forwarded-Host", "app.example.com"))
        .insert_header(("X-Forwarded-For", client))
}

fn as_user(req: TestRequest, token: &str) -> TestRequest {
    req.insert_header(("Authorization", format!("Bearer {token}")))
}

async fn app()
-> impl Service<actix_http::Request, Response = ServiceResponse, Error = actix_web::Error> {
    let rt = Runtime::from_yaml(CONFIG, Path::new("."), &env).expect("valid config");
    test::init_service(
        App::new()
            .app_data(actix_web::web::Data::new(AppState::new(rt)))
            .configure(configure_verify),
    )
    .await
}

#[actix_web::test]
async fn per_identity_limit_answers_429_with_retry_after_and_spares_others() {
    let app = app().await;
    let (alice, bob) = (token("alice"), token("bob"));
    // Burst 3: the 4th request within the same instant is over the bound.
    for _ in 0..3 {
        assert_eq!(
            send(&app, as_user(forwarded("/api/x", "203.0.113.7"), &alice))
                .await
                .status,
            200
        );
    }
    let over = send(&app, as_user(forwarded("/api/x", "203.0.113.7"), &alice)).await;
    assert_eq!((over.status, over.error.as_str()), (429, "rate_limited"));
    let retry: u64 = over
        .headers
        .get("retry-after")
        .expect("Retry-After")
        .to_str()
        .expect("ASCII")
        .parse()
        .expect("seconds");
    assert!((1..=2).contains(&retry), "one token every 2 s: {retry}");
    assert!(
        over.headers.get("x-user-id").is_none(),
        "no identity on a deny"
    );
    // Another identity, even from the same address, has its own bucket.
    assert_eq!(
        send(&app, as_user(forwarded("/api/x", "203.0.113.7"), &bob))
            .await
            .status,
        200
    );
    // Another rule without a limit is unaffected.
    assert_eq!(
        send(&app, as_user(forwarded("/app/x", "203.0.113.7"), &alice))
            .await
            .status,
        200
    );
}

#[actix_web::test]
async fn public_rules_limit_per_client_address() {
    let app = app().await;
    for _ in 0..2 {
        assert_eq!(
            send(&app, forwarded("/pub/x", "203.0.113.7")).await.status,
            200
        );
    }
    let over = send(&app, forwarded("/pub/x", "203.0.113.7")).await;
    assert_eq!(over.status, 429);
    assert!(over.headers.contains_key("retry-after"));
    assert_eq!(
        send(&app, forwarded("/pub/x", "203.0.113.8")).await.status,
        200
    );
}

#[actix_web::test]
async fn browsers_are_sent_to_login_and_api_clients_keep_401() {
    let app = app().await;
    let browser = forwarded("/app/page?tab=2&access_token=leak", "203.0.113.7").insert_header((
        "Accept",
        "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8",
    ));
    let res = send(&app, browser).await;
    assert_eq!(res.status, 302);
    assert_eq!(
        res.headers.get("location").expect("Location"),
        "https://login.example.com/start?client=omni2&return_to=https%3A%2F%2Fapp%2Eexample%2Ecom%2Fapp%2Fpage%3Ftab%3D2"
    );
    assert!(res.headers.get("www-authenticate").is_none());

    for accept in ["application/json", "*/*"] {
        let res = send(
            &app,
            forwarded("/app/page", "203.0.113.7").insert_header(("Accept", accept)),
        )
        .await;
        assert_eq!(res.status, 401, "{accept}");
        assert!(res.headers.contains_key("www-authenticate"));
        assert!(res.headers.get("location").is_none());
    }
    // Rules without login_url never redirect.
    let res = send(
        &app,
        forwarded("/api/x", "203.0.113.7").insert_header(("Accept", "text/html")),
    )
    .await;
    assert_eq!(res.status, 401);
}
