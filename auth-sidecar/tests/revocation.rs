//! Revocation: a revoked `jti` and a subject's not-before time deny even tokens that were
//! verified and cached before; a bad list is refused and the last good one stays; the
//! watcher picks up a changed file.

use std::path::PathBuf;
use std::time::Duration;

use crate::support::{app, call, claims, env, forwarded, hs, unix_now};
use actix_web::body::BoxBody;
use actix_web::dev::{Response, Service};
use auth_sidecar::config::Runtime;
use auth_sidecar::http::AppState;
use auth_sidecar::reload::{reload_revocations, watch};
use serde_json::json;
use test_support::eventually;

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
    let mut c = claims(sub, "user");
    c["jti"] = json!(jti);
    c["iat"] = json!(iat);
    hs().mint(&c)
}

struct Setup {
    _dir: tempfile::TempDir,
    config: PathBuf,
    revoked: PathBuf,
    rt: Runtime,
}

fn setup() -> Setup {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = dir.path().join("sidecar.yaml");
    let revoked = dir.path().join("revoked.yaml");
    std::fs::write(&config, CONFIG).expect("write config");
    std::fs::write(&revoked, "jti: []\n").expect("write list");
    let rt = Runtime::load(&config, &env).expect("valid config");
    Setup {
        _dir: dir,
        config,
        revoked,
        rt,
    }
}

fn write(path: &PathBuf, text: &str) {
    let aside = path.with_extension("tmp");
    std::fs::write(&aside, text).expect("write");
    std::fs::rename(&aside, path).expect("rename");
}

/// Status, deny code and challenge for `GET /api/x` with `token`.
async fn ask(
    app: &impl Service<actix_http::Request, Response = Response<BoxBody>, Error = actix_web::Error>,
    token: &str,
) -> (u16, String, Option<String>) {
    let req =
        forwarded("GET", "/api/x").insert_header(("Authorization", format!("Bearer {token}")));
    let answer = call(app, req).await;
    let error = if answer.status == 200 {
        String::new()
    } else {
        answer.error()
    };
    let challenge = answer
        .all("www-authenticate")
        .first()
        .map(|c| c.to_string());
    (answer.status, error, challenge)
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
    let (app, state) = app(s.rt).await;
    let now = unix_now();
    let alice = token("alice", "jti-alice-1", now - 10);
    let bob_old = token("bob", "jti-bob-1", now - 100);
    for t in [&alice, &bob_old, &alice, &bob_old] {
        assert_eq!(ask(&app, t).await.0, 200);
    }
    let hits = cache_hits(&state);
    assert!(hits >= 2, "both tokens are cached");

    write(
        &s.revoked,
        &format!(
            "jti:\n  - {{id: jti-alice-1, expires: {}}}\nsubjects:\n  - {{sub: bob, not_before: {}}}\n",
            now + 3600,
            now - 50
        ),
    );
    reload_revocations(&state).expect("valid list");
    let (status, error, challenge) = ask(&app, &alice).await;
    assert_eq!((status, error.as_str()), (401, "revoked"));
    assert!(
        challenge.is_some_and(|c| c.contains(r#"error="invalid_token""#)),
        "revocation is a token problem"
    );
    assert_eq!(ask(&app, &bob_old).await.1, "revoked");
    assert!(
        cache_hits(&state) >= hits + 2,
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
    let problems = reload_revocations(&state)
        .expect_err("bad list")
        .to_string();
    assert!(
        problems.contains("revocation_file: jti[0].expires: invalid time \"someday\""),
        "{problems}"
    );
    assert_eq!(ask(&app, &alice).await.1, "revoked");
    let metrics = state.metrics.render(&state.active.load().rt);
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
    let (app, state) = app(s.rt).await;
    let watcher = actix_web::rt::spawn(watch(state, s.config.clone(), Box::new(env)));
    let now = unix_now();
    let carol = token("carol", "jti-carol", now - 10);
    assert_eq!(ask(&app, &carol).await.0, 200);
    let list = format!("subjects:\n  - {{sub: carol, not_before: {now}}}\n");
    // The watch starts asynchronously: rewrite until the change is seen (bounded).
    eventually("carol to be revoked", Duration::from_secs(10), || {
        write(&s.revoked, &list);
        async { ask(&app, &carol).await.1 == "revoked" }
    })
    .await;
    watcher.abort();
}
