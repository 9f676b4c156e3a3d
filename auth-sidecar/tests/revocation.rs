//! Revocation: a revoked `jti` and a subject's not-before time deny even tokens that were
//! verified and cached before; a bad list is refused and the last good one stays; the
//! watcher picks up a changed file.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix_web::App;
use actix_web::body::MessageBody;
use actix_web::dev::{Service, ServiceResponse};
use actix_web::test::{self, TestRequest};
use auth_sidecar::config::Runtime;
use auth_sidecar::config::watch::{reload_revocations, watch};
use auth_sidecar::http::{AppState, configure_admin, configure_verify};
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
revocation_file: revoked.yaml
issuers:
  - issuer: https://idp.test
    audiences: [omni2]
    keys: [{kid: hs, alg: HS256, secret_env: HS_SECRET}]
rules:
  - {name: api, path_prefix: /api, action: authenticated}
"#;

fn token(sub: &str, jti: &str, iat: i64) -> String {
    hs().mint(
        &json!({"iss": "https://idp.test", "aud": "omni2", "sub": sub, "jti": jti,
                      "iat": iat, "exp": unix_now() + 3600}),
    )
}

struct Setup {
    _dir: tempfile::TempDir,
    config: PathBuf,
    revoked: PathBuf,
    state: Arc<AppState>,
}

fn setup() -> Setup {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = dir.path().join("sidecar.yaml");
    let revoked = dir.path().join("revoked.yaml");
    std::fs::write(&config, CONFIG).expect("write config");
    std::fs::write(&revoked, "jti: []\n").expect("write list");
    let state = Arc::new(AppState::new(
        Runtime::load(&config, &env).expect("valid config"),
    ));
    Setup {
        _dir: dir,
        config,
        revoked,
        state,
    }
}

fn write(path: &PathBuf, text: &str) {
    let aside = path.with_extension("tmp");
    std::fs::write(&aside, text).expect("write");
    std::fs::rename(&aside, path).expect("rename");
}

async fn ask(
    app: &impl Service<actix_http::Request, Response = ServiceResponse, Error = actix_web::Error>,
    token: &str,
) -> (u16, String, Option<String>) {
    let res = test::call_service(
        app,
        TestRequest::get()
            .uri("/verify")
            .insert_header(("X-Forwarded-Method", "GET"))
            .insert_header(("X-Forwarded-Uri", "/api/x"))
            .insert_header(("Authorization", format!("Bearer {token}")))
            .to_request(),
    )
    .await;
    let status = res.status().as_u16();
    let challenge = res
        .headers()
        .get("www-authenticate")
        .map(|v| v.to_str().expect("ASCII").to_owned());
    let body =
        String::from_utf8(res.into_body().try_into_bytes().expect("body").to_vec()).expect("UTF-8");
    let error = serde_json::from_str::<Value>(&body)
        .ok()
        .and_then(|v| v["error"].as_str().map(str::to_owned))
        .unwrap_or_default();
    (status, error, challenge)
}

fn cache_hits(state: &AppState) -> u64 {
    let text = state.metrics.render(&state.active.load().rt);
    text.lines()
        .find_map(|l| l.strip_prefix("auth_sidecar_token_cache_hits_total "))
        .and_then(|n| n.parse().ok())
        .expect("cache hit counter")
}

#[actix_web::test]
async fn revoked_jti_and_subject_not_before_deny_cached_tokens() {
    let s = setup();
    let app = test::init_service(
        App::new()
            .app_data(actix_web::web::Data::from(s.state.clone()))
            .configure(configure_verify)
            .configure(configure_admin),
    )
    .await;
    let now = unix_now();
    let alice = token("alice", "jti-alice-1", now - 10);
    let bob_old = token("bob", "jti-bob-1", now - 100);
    for t in [&alice, &bob_old, &alice, &bob_old] {
        assert_eq!(ask(&app, t).await.0, 200);
    }
    let hits = cache_hits(&s.state);
    assert!(hits >= 2, "both tokens are cached");

    write(
        &s.revoked,
        &format!(
            "jti:\n  - {{id: jti-alice-1, expires: {}}}\nsubjects:\n  - {{sub: bob, not_before: {}}}\n",
            now + 3600,
            now - 50
        ),
    );
    reload_revocations(&s.state).expect("valid list");
    let (status, error, challenge) = ask(&app, &alice).await;
    assert_eq!((status, error.as_str()), (401, "revoked"));
    assert!(
        challenge.is_some_and(|c| c.contains(r#"error="invalid_token""#)),
        "revocation is a token problem"
    );
    assert_eq!(ask(&app, &bob_old).await.1, "revoked");
    assert!(
        cache_hits(&s.state) >= hits + 2,
        "answered through the cache, still refused"
    );
    // bob's tokens issued after the cut-off, and other jtis, still pass.
    assert_eq!(ask(&app, &token("bob", "jti-bob-2", now - 10)).await.0, 200);
    assert_eq!(
        ask(&app, &token("alice", "jti-alice-2", now - 10)).await.0,
        200
    );

    // A bad list is refused; the last good list stays in force.
    write(&s.revoked, "jti:\n  - {id: x, expires: someday}\n");
    let problems = reload_revocations(&s.state)
        .expect_err("bad list")
        .to_string();
    assert!(
        problems.contains("revocation_file: jti[0].expires: invalid time \"someday\""),
        "{problems}"
    );
    assert_eq!(ask(&app, &alice).await.1, "revoked");
    let metrics = s.state.metrics.render(&s.state.active.load().rt);
    for line in [
        "auth_sidecar_revocation_reloads_total{result=\"failure\"} 1",
        "auth_sidecar_revocation_reloads_total{result=\"success\"} 1",
        "auth_sidecar_revocation_entries{kind=\"jti\"} 1",
        "auth_sidecar_revocation_entries{kind=\"subject\"} 1",
    ] {
        assert!(metrics.contains(line), "missing {line} in\n{metrics}");
    }
}

#[actix_web::test]
async fn the_watcher_reloads_a_changed_revocation_file() {
    let s = setup();
    let watcher = actix_web::rt::spawn(watch(s.state.clone(), s.config.clone(), Box::new(env)));
    let app = test::init_service(
        App::new()
            .app_data(actix_web::web::Data::from(s.state.clone()))
            .configure(configure_verify),
    )
    .await;
    let now = unix_now();
    let carol = token("carol", "jti-carol", now - 10);
    assert_eq!(ask(&app, &carol).await.0, 200);
    let list = format!("subjects:\n  - {{sub: carol, not_before: {now}}}\n");
    // The watch starts asynchronously: rewrite until the change is seen (bounded).
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut error = String::new();
    while error != "revoked" && Instant::now() < deadline {
        write(&s.revoked, &list);
        tokio::time::sleep(Duration::from_millis(100)).await;
        error = ask(&app, &carol).await.1;
    }
    assert_eq!(error, "revoked");
    watcher.abort();
}
