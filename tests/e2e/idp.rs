//! The sidecar's remote key sets against a real identity provider (npm `oidc-provider`, see
//! `e2e::idp`), beside the in-process key server of `auth-sidecar/tests/jwks.rs`: discovery
//! and JWT access tokens for every algorithm, the background refresh, rotation by restarting
//! the provider with new keys, an outage served from the last good keys until `max_stale`,
//! and an unknown `kid` costing one fetch per cooldown. Decisions run in process with an
//! injected clock (`now`), so cooldowns and staleness need no waiting.

use std::path::Path;
use std::time::Duration;

use auth_sidecar::clock::unix_now;
use auth_sidecar::config::Runtime;
use auth_sidecar::decide::decide_with_keys;
use auth_sidecar::decision::{Decision, DenyReason};
use auth_sidecar::facts::{RequestFacts, Single};
use auth_sidecar::test_util::asymmetric_key;
use e2e::idp::{CLIENTS, Idp, generate_keys, peek};
use e2e::process::eventually;
use jsonwebtoken::Algorithm;
use serde_json::json;

const RESOURCE: &str = "http://127.0.0.1:9/mcp";
/// Key-set tuning: one forced fetch per 30 s, last good keys for an hour.
const DEFAULT: &str = "cooldown: 30s, max_stale: 1h";

fn config(issuer: &str, tuning: &str) -> Runtime {
    let yaml = format!(
        r#"
issuers:
  - issuer: {issuer}
    discovery: true
    require_typ: [at+jwt, application/at+jwt]
    required_claims: [sub]
    jwks: {{timeout: 2s, {tuning}}}
rules:
  - name: mcp
    path: /mcp
    action: authenticated
    mcp:
      resource: {RESOURCE}
      authorization_servers: ["{issuer}"]
      scopes: [mcp:tools]
"#
    );
    Runtime::from_yaml(&yaml, Path::new("."), &|_: &str| None)
        .unwrap_or_else(|p| panic!("test config is invalid:\n{p}"))
}

/// Decides `POST /mcp` with `token` at `now`, fetching keys as the server would.
async fn ask(rt: &Runtime, token: &str, now: i64) -> Result<(), DenyReason> {
    let auth = format!("Bearer {token}");
    let facts = RequestFacts {
        method: Single::One("POST"),
        uri: Single::One("/mcp"),
        authorization: Single::One(&auth),
        ..Default::default()
    };
    match decide_with_keys(&facts, rt, now).await.decision {
        Decision::Allow { .. } => Ok(()),
        Decision::Deny { reason, .. } => Err(reason),
    }
}

fn fetches(rt: &Runtime, result: &str) -> u64 {
    let remote = rt.issuers[0].remote.as_ref().expect("a remote issuer");
    remote
        .fetch_counts()
        .iter()
        .find(|(label, _)| *label == result)
        .map(|(_, n)| *n)
        .expect("a known result label")
}

async fn token(idp: &Idp, client: &str) -> String {
    idp.access_token(client, RESOURCE, "mcp:tools")
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", idp.log()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discovery_finds_the_idp_keys_for_rs256_es256_and_eddsa() {
    let dir = tempfile::tempdir().expect("temp dir");
    let idp = Idp::start(dir.path(), &generate_keys(dir.path(), "k1")).await;
    let rt = config(&idp.issuer, DEFAULT);
    let now = unix_now();
    for (client, alg) in CLIENTS {
        let t = token(&idp, client).await;
        let (header, claims) = peek(&t);
        assert_eq!(header["alg"], alg, "{client}");
        assert_eq!(header["typ"], "at+jwt", "{client}: RFC 9068 access token");
        assert_eq!(claims["aud"], RESOURCE, "{client}: RFC 8707 audience");
        assert_eq!(claims["iss"], json!(idp.issuer));
        assert_eq!(ask(&rt, &t, now).await, Ok(()), "{client}");
    }
    assert_eq!(fetches(&rt, "success"), 1, "one set holds all three keys");
    // The provider's own token for another resource, and without the scope, are refused.
    let other = idp
        .access_token("agent-es256", "https://other.example.test/mcp", "mcp:tools")
        .await
        .expect("a token for another resource");
    assert_eq!(ask(&rt, &other, now).await, Err(DenyReason::BadAudience));
    let unscoped = idp
        .access_token("agent-es256", RESOURCE, "mcp:admin")
        .await
        .expect("a token without mcp:tools");
    assert_eq!(
        ask(&rt, &unscoped, now).await,
        Err(DenyReason::InsufficientScope)
    );
    // An ID token of the same provider, correctly signed, is not an access token.
    let id = idp.id_token("agent-rs256").await;
    assert!(peek(&id).1["nonce"].is_string(), "{id}");
    assert_eq!(ask(&rt, &id, now).await, Err(DenyReason::IdToken));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_key_set_is_refreshed_in_the_background() {
    let dir = tempfile::tempdir().expect("temp dir");
    let idp = Idp::start(dir.path(), &generate_keys(dir.path(), "k1")).await;
    let rt = config(
        &idp.issuer,
        "refresh_min: 1s, refresh_max: 1s, cooldown: 1s, max_stale: 1h",
    );
    rt.start_background();
    eventually(
        "two background fetches from the provider",
        Duration::from_secs(30),
        || {
            let n = fetches(&rt, "success");
            async move {
                if n >= 2 {
                    Ok(())
                } else {
                    Err(format!("{n} fetches"))
                }
            }
        },
    )
    .await;
    assert_eq!(
        ask(&rt, &token(&idp, "agent-eddsa").await, unix_now()).await,
        Ok(())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotation_by_restarting_the_provider_with_a_new_key() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut idp = Idp::start(dir.path(), &generate_keys(dir.path(), "k1")).await;
    let rt = config(&idp.issuer, DEFAULT);
    let now = unix_now();
    let old = token(&idp, "agent-es256").await;
    assert_eq!(ask(&rt, &old, now).await, Ok(()));

    let addr = idp.addr;
    idp.stop();
    let idp = Idp::start_on(dir.path(), addr, &generate_keys(dir.path(), "k2")).await;
    let new = token(&idp, "agent-es256").await;
    assert_eq!(peek(&new).0["kid"], "k2-es256");
    assert_eq!(
        ask(&rt, &new, now + 10).await,
        Err(DenyReason::UnknownKid),
        "within the cooldown of the first fetch"
    );
    assert_eq!(ask(&rt, &new, now + 31).await, Ok(()), "one cooldown later");
    assert_eq!(fetches(&rt, "success"), 2);
    // The old key left the set: its token is refused although it was cached.
    assert_eq!(ask(&rt, &old, now + 32).await, Err(DenyReason::UnknownKid));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_is_served_from_the_last_good_keys_until_max_stale() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut idp = Idp::start(dir.path(), &generate_keys(dir.path(), "k1")).await;
    let rt = config(&idp.issuer, "cooldown: 30s, max_stale: 120s");
    let now = unix_now();
    // Tokens never presented before the outage: answers come from the keys, not the cache.
    let mut tokens = Vec::new();
    for client in ["agent-rs256", "agent-es256", "agent-eddsa", "agent-es256"] {
        tokens.push(token(&idp, client).await);
    }
    assert_eq!(ask(&rt, &tokens[0], now).await, Ok(()));
    idp.stop();

    // An unknown kid forces a fetch, which fails: the last good keys stay.
    let stranger = asymmetric_key(Algorithm::ES256, "k1-unknown");
    let mut claims = peek(&tokens[1]).1;
    claims["sub"] = json!("stranger");
    let forged = stranger.mint(&claims);
    assert_eq!(
        ask(&rt, &forged, now + 40).await,
        Err(DenyReason::UnknownKid)
    );
    assert_eq!(fetches(&rt, "transport"), 1, "the failed fetch is counted");
    assert_eq!(
        ask(&rt, &tokens[1], now + 60).await,
        Ok(()),
        "last good keys"
    );
    assert_eq!(
        ask(&rt, &tokens[2], now + 120).await,
        Ok(()),
        "at max_stale"
    );
    assert_eq!(
        ask(&rt, &tokens[3], now + 121).await,
        Err(DenyReason::KeysUnavailable),
        "past max_stale"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_kid_costs_one_fetch_per_cooldown() {
    let dir = tempfile::tempdir().expect("temp dir");
    let idp = Idp::start(dir.path(), &generate_keys(dir.path(), "k1")).await;
    let rt = config(&idp.issuer, DEFAULT);
    let now = unix_now();
    let good = token(&idp, "agent-rs256").await;
    assert_eq!(ask(&rt, &good, now).await, Ok(()));
    assert_eq!(fetches(&rt, "success"), 1);

    // The provider's claims, signed by a key it never published.
    let stranger = asymmetric_key(Algorithm::ES256, "not-at-the-idp");
    let claims = peek(&good).1;
    for i in 0..10 {
        let mut c = claims.clone();
        c["jti"] = json!(format!("forged-{i}"));
        assert_eq!(
            ask(&rt, &stranger.mint(&c), now + 31 + i).await,
            Err(DenyReason::UnknownKid),
            "{i}"
        );
    }
    assert_eq!(
        fetches(&rt, "success"),
        2,
        "one forced fetch in the cooldown, however many unknown-kid tokens"
    );
}
