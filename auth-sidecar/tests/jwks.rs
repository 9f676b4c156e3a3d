//! Remote key sets against a real JWKS server on loopback: rotation, outages served from the
//! last good keys, `max_stale`, a random-kid flood, concurrent unknown kids sharing one
//! fetch, discovery, readiness and metrics. The clock is injected (`now`); only the hang
//! case waits for the configured 300 ms fetch timeout.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use crate::jwks_support::{EcKey, JwksServer, Mode};
use crate::support;
use actix_web::test::TestRequest;
use auth_sidecar::config::Runtime;
use auth_sidecar::decide::decide_with_keys;
use auth_sidecar::decision::{Decision, DenyReason};
use auth_sidecar::facts::{RequestFacts, Single};
use serde_json::{Value, json};
use test_support::eventually;

const NOW: i64 = 1_900_000_000;
/// One issuer name for every test: nothing is shared between runtimes.
const ISS: &str = "https://idp.test";

fn config(issuer: &str, source: &str, tuning: &str) -> Runtime {
    let yaml = format!(
        r#"
issuers:
  - issuer: {issuer}
    audiences: [omni2]
    {source}
    jwks: {{timeout: 300ms, cooldown: 30s, max_stale: 1h {tuning}}}
rules:
  - {{name: api, path_prefix: /api, action: authenticated}}
"#
    );
    Runtime::from_yaml(&yaml, Path::new("."), &|_: &str| None)
        .unwrap_or_else(|p| panic!("test config is invalid:\n{p}"))
}

fn claims(issuer: &str, sub: &str, now: i64) -> Value {
    json!({"iss": issuer, "aud": "omni2", "sub": sub, "iat": now - 5, "exp": now + 7200})
}

/// Decides `GET /api/x` with `token` at `now`, fetching keys as the server would.
async fn ask(rt: &Runtime, token: &str, now: i64) -> Result<(), DenyReason> {
    let auth = format!("Bearer {token}");
    let facts = RequestFacts {
        method: Single::One("GET"),
        uri: Single::One("/api/x"),
        authorization: Single::One(&auth),
        ..Default::default()
    };
    match decide_with_keys(&facts, rt, now).await.decision {
        Decision::Allow { .. } => Ok(()),
        Decision::Deny { reason, .. } => Err(reason),
    }
}

/// A JWKS server publishing key `a`, and a runtime for `iss` that fetched it at `NOW`.
async fn serving(iss: &str) -> (EcKey, JwksServer, Arc<Runtime>) {
    let a = EcKey::generate("a");
    let server = JwksServer::start(&[&a]);
    let rt = Arc::new(config(iss, &format!("jwks_uri: {}", server.jwks_uri()), ""));
    let first = ask(&rt, &a.mint(&claims(iss, "alice", NOW)), NOW).await;
    assert_eq!(first, Ok(()), "first use fetches the keys");
    assert_eq!(server.jwks_hits(), 1);
    (a, server, rt)
}

/// Fetch attempts with `result` by the runtime's only issuer's key set. Each key set owns
/// its counters, so tests share issuer names freely.
fn fetches(rt: &Runtime, result: &str) -> u64 {
    let remote = rt.issuers[0].remote.as_ref().expect("a remote issuer");
    let counts = remote.fetch_counts();
    counts
        .iter()
        .find(|(label, _)| *label == result)
        .map(|(_, n)| *n)
        .expect("a known result label")
}

#[tokio::test]
async fn rotation_is_picked_up_and_removed_keys_stop_working() {
    let iss = ISS;
    let (a, b) = (EcKey::generate("a"), EcKey::generate("b"));
    let server = JwksServer::start(&[&a]);
    let rt = config(iss, &format!("jwks_uri: {}", server.jwks_uri()), "");
    let token_a = a.mint(&claims(iss, "alice", NOW));
    let token_b = b.mint(&claims(iss, "bob", NOW));

    assert_eq!(ask(&rt, &token_a, NOW).await, Ok(()), "first use fetches");
    assert_eq!(server.jwks_hits(), 1);
    assert_eq!(ask(&rt, &token_a, NOW).await, Ok(()));
    assert_eq!(server.jwks_hits(), 1, "known kid: no fetch");

    server.set_keys(&[&b]);
    assert_eq!(
        ask(&rt, &token_b, NOW + 10).await,
        Err(DenyReason::UnknownKid),
        "within the cooldown of the last forced fetch"
    );
    assert_eq!(server.jwks_hits(), 1);
    assert_eq!(
        ask(&rt, &token_b, NOW + 30).await,
        Ok(()),
        "one cooldown later"
    );
    assert_eq!(server.jwks_hits(), 2);
    // Key a left the set: its token is refused even though it was cached.
    assert_eq!(
        ask(&rt, &token_a, NOW + 31).await,
        Err(DenyReason::UnknownKid)
    );
    assert_eq!(server.jwks_hits(), 2);
}

#[tokio::test]
async fn outages_are_served_from_last_good_keys_until_max_stale() {
    let iss = ISS;
    let a = EcKey::generate("a");
    let mut server = JwksServer::start(&[&a]);
    let rt = config(iss, &format!("jwks_uri: {}", server.jwks_uri()), "");
    let mut fresh = 0;
    // A token never seen before, so the answer comes from the keys, not the cache.
    let mut new_token = |now| {
        fresh += 1;
        a.mint(&claims(iss, &format!("user-{fresh}"), now))
    };
    assert_eq!(ask(&rt, &new_token(NOW), NOW).await, Ok(()));

    let failures = [
        (Mode::Status(500), "http_status"),
        (Mode::Garbage, "invalid"),
        (Mode::Empty, "empty"),
        (Mode::Hang, "timeout"),
    ];
    for (i, (mode, label)) in failures.into_iter().enumerate() {
        server.set_mode(mode);
        let now = NOW + 100 * (i as i64 + 1);
        let hits = server.jwks_hits();
        // An unknown kid forces a fetch, which fails.
        let unknown = a.mint_as(&format!("new-{i}"), &claims(iss, "x", now));
        assert_eq!(
            ask(&rt, &unknown, now).await,
            Err(DenyReason::UnknownKid),
            "{mode:?}"
        );
        assert_eq!(server.jwks_hits(), hits + 1, "{mode:?}: one fetch");
        assert_eq!(fetches(&rt, label), 1, "{mode:?}");
        assert_eq!(
            ask(&rt, &new_token(now), now).await,
            Ok(()),
            "{mode:?}: last good keys"
        );
    }
    server.go_down();
    let unknown = a.mint_as("new-down", &claims(iss, "x", NOW + 500));
    assert_eq!(
        ask(&rt, &unknown, NOW + 500).await,
        Err(DenyReason::UnknownKid)
    );
    assert_eq!(fetches(&rt, "transport"), 1);
    assert_eq!(fetches(&rt, "success"), 1);

    let cached = new_token(NOW + 600);
    assert_eq!(ask(&rt, &cached, NOW + 600).await, Ok(()));
    let last_good = NOW + 3600;
    assert_eq!(
        ask(&rt, &new_token(last_good), last_good).await,
        Ok(()),
        "at max_stale"
    );
    let stale = last_good + 1;
    assert_eq!(
        ask(&rt, &new_token(stale), stale).await,
        Err(DenyReason::KeysUnavailable)
    );
    assert_eq!(
        ask(&rt, &cached, stale).await,
        Err(DenyReason::KeysUnavailable),
        "a cached token needs fresh keys too"
    );
    let remote = rt.issuers[0].remote.as_ref().expect("remote issuer");
    let why = remote.availability(stale).expect_err("stale").to_string();
    assert!(why.starts_with("keys are 3601s old, older than max_stale 3600s; last fetch failed: request to http://127.0.0.1:"), "{why}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_random_kid_flood_costs_at_most_one_fetch_per_cooldown() {
    let iss = ISS;
    let (a, server, rt) = serving(iss).await;
    assert_eq!(server.jwks_hits(), 1);

    // 10,000 requests with random kids over 90 s (three cooldowns), all in flight at once.
    const FLOOD: i64 = 10_000;
    let start = NOW + 1;
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..FLOOD {
        let now = start + i * 90 / FLOOD;
        let token = a.mint_as(
            &format!("{:032x}", fastrand::u128(..)),
            &claims(iss, "x", now),
        );
        let rt = rt.clone();
        tasks.spawn(async move { ask(&rt, &token, now).await });
    }
    let mut unknown = 0;
    while let Some(result) = tasks.join_next().await {
        if result.expect("task") == Err(DenyReason::UnknownKid) {
            unknown += 1;
        }
    }
    let flood_fetches = server.jwks_hits() - 1;
    println!(
        "random-kid flood: {FLOOD} requests over 90 s (3 cooldowns of 30 s) caused {flood_fetches} JWKS fetches"
    );
    assert_eq!(unknown, FLOOD);
    assert!(flood_fetches <= 3, "{flood_fetches} fetches");
    // The real key still works after the flood, with no further fetch.
    assert_eq!(
        ask(&rt, &a.mint(&claims(iss, "bob", start + 91)), start + 91).await,
        Ok(())
    );
    assert_eq!(server.jwks_hits(), 1 + flood_fetches);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_unknown_kid_requests_share_one_fetch() {
    let iss = ISS;
    let (a, server, rt) = serving(iss).await;
    let b = EcKey::generate("b");

    // b is published; the server answers slowly, so all 50 requests overlap one fetch.
    server.set_keys(&[&a, &b]);
    server.set_mode(Mode::Slow(Duration::from_millis(150)));
    let now = NOW + 60;
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..50 {
        let token = b.mint(&claims(iss, &format!("user-{i}"), now));
        let rt = rt.clone();
        tasks.spawn(async move { ask(&rt, &token, now).await });
    }
    while let Some(result) = tasks.join_next().await {
        assert_eq!(result.expect("task"), Ok(()));
    }
    assert_eq!(
        server.jwks_hits(),
        2,
        "one initial fetch, one shared forced fetch"
    );
}

#[tokio::test]
async fn discovery_finds_the_jwks_and_checks_the_issuer() {
    let a = EcKey::generate("a");
    let server = JwksServer::start(&[&a]);
    let iss = server.url.clone();
    let rt = config(&iss, "discovery: true", "");
    assert_eq!(
        ask(&rt, &a.mint(&claims(&iss, "alice", NOW)), NOW).await,
        Ok(())
    );
    assert_eq!((server.discovery_hits(), server.jwks_hits()), (1, 1));

    // A discovery document for another issuer is refused: no keys from it.
    let other = JwksServer::start(&[&a]);
    other.set_discovery_issuer("https://someone-else.test");
    let iss = other.url.clone();
    let rt = config(&iss, "discovery: true", "");
    assert_eq!(
        ask(&rt, &a.mint(&claims(&iss, "alice", NOW)), NOW).await,
        Err(DenyReason::KeysUnavailable)
    );
    assert_eq!((other.discovery_hits(), other.jwks_hits()), (1, 0));
    let why = rt.issuers[0]
        .remote
        .as_ref()
        .expect("remote")
        .availability(NOW);
    assert!(format!("{:?}", why).contains("someone-else"), "{why:?}");
}

#[actix_web::test]
async fn readiness_follows_required_issuers_and_metrics_pass_promtool() {
    let iss = ISS;
    let a = EcKey::generate("a");
    let server = JwksServer::start(&[&a]);
    server.set_mode(Mode::Status(503));
    let rt = config(iss, &format!("jwks_uri: {}", server.jwks_uri()), "");
    let (app, _state) = support::app(rt).await;
    let get = |path: &str| TestRequest::get().uri(path);

    // The background refresh fetched (and failed) at start; poll, bounded, until it did.
    let readyz = eventually(
        "/readyz to name the failed fetch",
        Duration::from_secs(10),
        || async {
            let res = support::call(&app, get("/readyz")).await;
            assert_eq!(res.status, 503);
            let text = res.body;
            text.contains("HTTP 503").then_some(text)
        },
    )
    .await;
    let v: Value = serde_json::from_str(&readyz).expect("JSON");
    assert_eq!(v["ready"], false);
    assert_eq!(v["not_ready"][0]["issuer"], iss);
    let reason = v["not_ready"][0]["reason"].as_str().expect("reason");
    assert!(
        reason.starts_with("no keys fetched yet; last fetch failed:"),
        "{reason}"
    );
    assert!(reason.contains("answered HTTP 503"), "{reason}");

    // The IdP recovers; the first request fetches (first forced fetch: no cooldown yet).
    server.set_mode(Mode::Serve);
    let now = auth_sidecar::clock::unix_now();
    let token = a.mint(&claims(iss, "alice", now));
    let req = support::forwarded("GET", "/api/x")
        .insert_header(("Authorization", format!("Bearer {token}")));
    assert_eq!(support::call(&app, req).await.status, 200);
    assert_eq!(support::call(&app, get("/readyz")).await.status, 200);

    let metrics = support::call(&app, get("/metrics")).await.body;
    for line in [
        format!("auth_sidecar_jwks_keys{{issuer=\"{iss}\"}} 1"),
        format!("auth_sidecar_jwks_fetch_total{{issuer=\"{iss}\",result=\"success\"}} 1"),
        format!("auth_sidecar_jwks_fetch_total{{issuer=\"{iss}\",result=\"http_status\"}} 1"),
        format!("auth_sidecar_jwks_age_seconds{{issuer=\"{iss}\"}}"),
        format!("auth_sidecar_jwks_last_success_timestamp_seconds{{issuer=\"{iss}\"}}"),
    ] {
        assert!(metrics.contains(&line), "missing {line:?} in\n{metrics}");
    }
    test_support::assert_promtool_metrics(&metrics);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_waiting_on_a_hung_fetch_are_released_by_the_timeout() {
    let iss = ISS;
    let (a, server, rt) = serving(iss).await;

    // The IdP hangs; 20 requests for a new kid wait on one fetch, which the 300 ms timeout
    // ends. They all get an answer (a deny), and known keys keep working meanwhile.
    server.set_mode(Mode::Hang);
    let now = NOW + 60;
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..20 {
        let token = a.mint_as("rotated-in", &claims(iss, &format!("user-{i}"), now));
        let rt = rt.clone();
        tasks.spawn(async move { ask(&rt, &token, now).await });
    }
    assert_eq!(
        ask(&rt, &a.mint(&claims(iss, "bob", now)), now).await,
        Ok(())
    );
    while let Some(result) = tasks.join_next().await {
        assert_eq!(result.expect("task"), Err(DenyReason::UnknownKid));
    }
    assert_eq!(
        server.jwks_hits(),
        2,
        "one initial fetch, one shared (hung) fetch"
    );
    assert_eq!(fetches(&rt, "timeout"), 1);
}

#[actix_web::test]
async fn a_dead_key_refresh_fails_readiness_and_is_restarted() {
    let a = EcKey::generate("a");
    let server = JwksServer::start(&[&a]);
    let rt = config(ISS, &format!("jwks_uri: {}", server.jwks_uri()), "");
    // Before the refresh starts: its first round panics.
    rt.issuers[0]
        .remote
        .as_ref()
        .expect("remote issuer")
        .panic_refresh();
    let (app, _state) = support::app(rt).await;
    let get = || TestRequest::get().uri("/readyz");

    // Bounded polls: down first (the panic), then ready once the restarted task fetched.
    let saw_down = std::cell::Cell::new(false);
    let ready = eventually(
        "/readyz to be ready again",
        Duration::from_secs(20),
        || async {
            let res = support::call(&app, get()).await;
            if res
                .body
                .contains("the key refresh task is down: the task panicked")
            {
                assert_eq!(res.status, 503, "{}", res.body);
                saw_down.set(true);
            }
            (res.status == 200).then_some(res)
        },
    )
    .await;
    assert!(
        saw_down.get(),
        "/readyz never reported the dead refresh task"
    );
    assert_eq!(ready.status, 200, "not restarted: {}", ready.body);
    assert!(server.jwks_hits() >= 1, "the restarted task fetched");
}
