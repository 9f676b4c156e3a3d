//! Per-rule rate limits (429 + Retry-After at the bound, other identities unaffected, per
//! client address on public rules) and login redirects (browsers get 302 to an absolute
//! login URL, API clients keep 401).

use std::path::Path;

use crate::support::{self, app, call, claims, hs, runtime};
use actix_web::test::TestRequest;

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
    hs().mint(&claims(sub, "user"))
}

/// An auth request from `client` (the address Traefik puts in X-Forwarded-For).
fn forwarded(uri: &str, client: &str) -> TestRequest {
    support::forwarded("GET", uri).insert_header(("X-Forwarded-For", client))
}

fn as_user(req: TestRequest, token: &str) -> TestRequest {
    req.insert_header(("Authorization", format!("Bearer {token}")))
}

#[actix_web::test]
async fn per_identity_limit_answers_429_with_retry_after_and_spares_others() {
    let (app, _) = app(runtime(CONFIG, Path::new("."))).await;
    let (alice, bob) = (token("alice"), token("bob"));
    // Burst 3: the 4th request within the same instant is over the bound.
    for _ in 0..3 {
        assert_eq!(
            call(&app, as_user(forwarded("/api/x", "203.0.113.7"), &alice))
                .await
                .status,
            200
        );
    }
    let over = call(&app, as_user(forwarded("/api/x", "203.0.113.7"), &alice)).await;
    assert_eq!((over.status, over.error().as_str()), (429, "rate_limited"));
    let retry: u64 = over.one("retry-after").parse().expect("seconds");
    assert!((1..=2).contains(&retry), "one token every 2 s: {retry}");
    assert!(over.all("x-user-id").is_empty(), "no identity on a deny");
    // Another identity, even from the same address, has its own bucket.
    assert_eq!(
        call(&app, as_user(forwarded("/api/x", "203.0.113.7"), &bob))
            .await
            .status,
        200
    );
    // Another rule without a limit is unaffected.
    assert_eq!(
        call(&app, as_user(forwarded("/app/x", "203.0.113.7"), &alice))
            .await
            .status,
        200
    );
}

#[actix_web::test]
async fn public_rules_limit_per_client_address() {
    let (app, _) = app(runtime(CONFIG, Path::new("."))).await;
    for _ in 0..2 {
        assert_eq!(
            call(&app, forwarded("/pub/x", "203.0.113.7")).await.status,
            200
        );
    }
    let over = call(&app, forwarded("/pub/x", "203.0.113.7")).await;
    assert_eq!(over.status, 429);
    assert!(!over.all("retry-after").is_empty());
    assert_eq!(
        call(&app, forwarded("/pub/x", "203.0.113.8")).await.status,
        200
    );
}

#[actix_web::test]
async fn browsers_are_sent_to_login_and_api_clients_keep_401() {
    let (app, _) = app(runtime(CONFIG, Path::new("."))).await;
    let browser = forwarded("/app/page?tab=2&access_token=leak", "203.0.113.7").insert_header((
        "Accept",
        "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8",
    ));
    let res = call(&app, browser).await;
    assert_eq!(res.status, 302);
    assert_eq!(
        res.one("location"),
        "https://login.example.com/start?client=omni2&return_to=https%3A%2F%2Fapi%2Eexample%2Etest%2Fapp%2Fpage%3Ftab%3D2"
    );
    assert!(res.all("www-authenticate").is_empty());

    for accept in ["application/json", "*/*"] {
        let res = call(
            &app,
            forwarded("/app/page", "203.0.113.7").insert_header(("Accept", accept)),
        )
        .await;
        assert_eq!(res.status, 401, "{accept}");
        assert!(!res.all("www-authenticate").is_empty());
        assert!(res.all("location").is_empty());
    }
    // Rules without login_url never redirect.
    let res = call(
        &app,
        forwarded("/api/x", "203.0.113.7").insert_header(("Accept", "text/html")),
    )
    .await;
    assert_eq!(res.status, 401);
}
