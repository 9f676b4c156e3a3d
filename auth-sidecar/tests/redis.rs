//! Shared state through a real `redis-server` (started here on a free port): real sidecar
//! processes sharing one bucket per identity (exactly the GCRA's allowance across them),
//! prefixed keys with an expiry, revocations written by the CLI reaching every replica
//! (cached tokens included) and a late replica catching up, a Redis outage decided by
//! `deny_on_error` and recovered from without a restart, the script's GCRA against the
//! local limiter on one sequence, and every new config field's bad value named.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::support::{claims, env, hs, http_get, unix_now};
use auth_sidecar::ratelimit::{RateLimit, RateLimiter, SharedLimiter};
use auth_sidecar::redis_pool::{RedisPool, RedisSettings};
use serde_json::json;
use test_support::{Proc, RedisServer, assert_promtool_metrics, eventually_blocking, free_port};

const BIN: &str = env!("CARGO_BIN_EXE_auth-sidecar");
const PREFIX: &str = "it-sidecar:";

/// A config sharing `redis_url`; `rules` is the YAML of the rule list. Timeouts are
/// generous: a loaded test machine must not turn into `rate_limit_unavailable`.
fn config(port: u16, redis_url: &str, rules: &str) -> String {
    format!(
        r#"
listen: 127.0.0.1:{port}
workers: 1
redis:
  url: {redis_url}
  key_prefix: "{PREFIX}"
  pool_size: 2
  connect_timeout: 1s
  command_timeout: 2s
  revocation: true
issuers:
  - issuer: https://idp.test
    audiences: [omni2]
    keys: [{{kid: hs, alg: HS256, secret_env: HS_SECRET}}]
rules:
{rules}
"#
    )
}

/// A sidecar process on its own port and config file.
struct Sidecar {
    port: u16,
    config: PathBuf,
    proc: Proc,
}

impl Sidecar {
    fn start(dir: &Path, name: &str, redis_url: &str, rules: &str) -> Sidecar {
        let port = free_port();
        let config = dir.join(format!("{name}.yaml"));
        std::fs::write(&config, self::config(port, redis_url, rules)).expect("write config");
        let mut cmd = Command::new(BIN);
        cmd.args(["serve", "--config"])
            .arg(&config)
            .env("HS_SECRET", env("HS_SECRET").expect("test secret"))
            .env("RUST_LOG", "info");
        let proc = Proc::spawn(name, cmd, dir.join(format!("{name}.log")));
        let mut sidecar = Sidecar { port, config, proc };
        sidecar.wait_ready();
        sidecar
    }

    /// Until `/readyz` answers 200: with revocations through Redis, after the first load.
    fn wait_ready(&mut self) {
        let port = self.port;
        let proc = &mut self.proc;
        eventually_blocking("the sidecar to be ready", Duration::from_secs(20), || {
            proc.check_alive().unwrap_or_else(|e| panic!("{e}"));
            match http_get(port, "/readyz", &[]) {
                Ok((200, _)) => Ok(()),
                other => Err(format!("{other:?}")),
            }
        });
    }

    /// `GET <uri>` forwarded with `token`: (status, raw answer).
    fn verify(&self, uri: &str, token: &str) -> (u16, String) {
        let auth = format!("Bearer {token}");
        http_get(
            self.port,
            "/verify",
            &[
                ("X-Forwarded-Method", "GET"),
                ("X-Forwarded-Uri", uri),
                ("Authorization", &auth),
            ],
        )
        .unwrap_or_else(|e| panic!("sidecar on {} does not answer: {e}", self.port))
    }

    fn metrics(&self) -> String {
        let (status, raw) = http_get(self.port, "/metrics", &[]).expect("metrics");
        assert_eq!(status, 200, "{raw}");
        raw.split_once("\r\n\r\n")
            .expect("head and body")
            .1
            .to_owned()
    }
}

/// The deny code in a raw answer's JSON body.
fn error_code(raw: &str) -> String {
    let body = raw.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    serde_json::from_str::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v["error"].as_str().map(str::to_owned))
        .unwrap_or_default()
}

/// A value of a metric line that starts with `series` (name and labels as rendered).
fn metric(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
}

fn token(sub: &str, jti: &str) -> String {
    let mut c = claims(sub, "user");
    c["jti"] = json!(jti);
    hs().mint(&c)
}

/// The CLI with the test secret, as an operator runs it next to the sidecars.
fn cli(args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .env("HS_SECRET", env("HS_SECRET").expect("test secret"))
        .env("RUST_LOG", "warn")
        .output()
        .expect("run auth-sidecar")
}

#[track_caller]
fn cli_ok(args: &[&str]) {
    let out = cli(args);
    assert!(out.status.success(), "{args:?}: {out:?}");
}

const LIMITED: &str = "  - name: api
    path_prefix: /api
    action: authenticated
    rate_limit: {requests: 2, per: 1h, burst: 5, store: redis}";

#[test]
fn replicas_share_one_bucket_and_keys_carry_the_prefix_and_an_expiry() {
    let dir = tempfile::tempdir().expect("temp dir");
    let redis = RedisServer::start(dir.path().to_owned());
    let replicas: Vec<Sidecar> = (0..3)
        .map(|i| Sidecar::start(dir.path(), &format!("replica-{i}"), &redis.url(), LIMITED))
        .collect();
    let alice = token("alice", "a-1");
    // One token every 30 minutes, five at once: within this test exactly five pass, in
    // total, whichever replicas they reach.
    let mut allowed = 0;
    for i in 0..24 {
        let (status, raw) = replicas[i % 3].verify("/api/x", &alice);
        match status {
            200 => allowed += 1,
            429 => {
                assert_eq!(error_code(&raw), "rate_limited", "{raw}");
                assert!(raw.to_ascii_lowercase().contains("retry-after:"), "{raw}");
            }
            other => panic!("unexpected {other}: {raw}"),
        }
    }
    assert_eq!(allowed, 5, "the burst, across three replicas");
    // Another identity has its own bucket.
    assert_eq!(replicas[1].verify("/api/x", &token("bob", "b-1")).0, 200);

    let key = format!("{PREFIX}rl:api:sub:alice");
    let keys = redis.cli(&["KEYS", &format!("{PREFIX}rl:*")]);
    assert!(keys.lines().any(|k| k == key), "{keys}");
    // Five taken at 30 min each: full again 2.5 h from the first, never later.
    let ttl: i64 = redis.cli(&["PTTL", &key]).parse().expect("PTTL in ms");
    assert!(
        ttl > 0 && ttl <= 150 * 60 * 1000,
        "the bucket key expires when it is full again: PTTL {ttl}"
    );
    let bob_ttl: i64 = redis
        .cli(&["PTTL", &format!("{PREFIX}rl:api:sub:bob")])
        .parse()
        .expect("PTTL");
    assert!(
        bob_ttl > 0 && bob_ttl <= 30 * 60 * 1000,
        "one taken: {bob_ttl}"
    );

    let text = replicas[0].metrics();
    assert_promtool_metrics(&text);
    assert_eq!(
        metric(
            &text,
            "auth_sidecar_redis_errors_total{operation=\"rate_limit\"}"
        ),
        Some(0.0)
    );
    assert!(
        metric(
            &text,
            "auth_sidecar_redis_command_duration_seconds_count{operation=\"rate_limit\"}"
        )
        .is_some_and(|n| n >= 1.0),
        "{text}"
    );
}

const OPEN: &str = "  - name: api
    path_prefix: /api
    action: authenticated";

#[test]
fn revocations_through_redis_reach_every_replica_and_a_late_one_catches_up() {
    let dir = tempfile::tempdir().expect("temp dir");
    let redis = RedisServer::start(dir.path().to_owned());
    let replicas: Vec<Sidecar> = (0..2)
        .map(|i| Sidecar::start(dir.path(), &format!("replica-{i}"), &redis.url(), OPEN))
        .collect();
    let config = replicas[0].config.to_str().expect("utf-8 path").to_owned();
    let (carol, dave) = (token("carol", "jti-carol"), token("dave", "jti-dave"));
    // Verified and cached on every replica first.
    for r in &replicas {
        for t in [&carol, &dave, &carol, &dave] {
            assert_eq!(r.verify("/api/x", t).0, 200);
        }
    }
    let expires = (unix_now() + 600).to_string();
    cli_ok(&[
        "revoke",
        "--config",
        &config,
        "--jti",
        "jti-carol",
        "--expires",
        &expires,
    ]);
    // Dave's token was issued 10 s ago: a not-before of now revokes it.
    cli_ok(&["revoke", "--config", &config, "--sub", "dave"]);
    for r in &replicas {
        eventually_blocking(
            "the revocations to reach the replica",
            Duration::from_secs(1),
            || {
                let answers = [r.verify("/api/x", &carol), r.verify("/api/x", &dave)];
                answers
                    .iter()
                    .all(|(s, raw)| *s == 401 && error_code(raw) == "revoked")
                    .then_some(())
                    .ok_or_else(|| format!("{answers:?}"))
            },
        );
        let text = r.metrics();
        assert!(
            metric(&text, "auth_sidecar_token_cache_hits_total").is_some_and(|n| n >= 4.0),
            "the tokens were answered from the cache: {text}"
        );
    }
    // The stored set, in Redis, expires the jti entry with the token.
    let score = redis.cli(&["ZSCORE", &format!("{PREFIX}revoked:jti"), "jti-carol"]);
    assert_eq!(score, expires);

    // A replica started after the revocations loads them before it is ready.
    let late = Sidecar::start(dir.path(), "late", &redis.url(), OPEN);
    assert_eq!(error_code(&late.verify("/api/x", &carol).1), "revoked");
    assert_eq!(error_code(&late.verify("/api/x", &dave).1), "revoked");
    assert_eq!(late.verify("/api/x", &token("erin", "jti-erin")).0, 200);

    cli_ok(&["unrevoke", "--config", &config, "--jti", "jti-carol"]);
    cli_ok(&["unrevoke", "--config", &config, "--sub", "dave"]);
    for r in replicas.iter().chain([&late]) {
        eventually_blocking(
            "the unrevocations to reach the replica",
            Duration::from_secs(1),
            || {
                let answers = [r.verify("/api/x", &carol).0, r.verify("/api/x", &dave).0];
                (answers == [200, 200])
                    .then_some(())
                    .ok_or_else(|| format!("{answers:?}"))
            },
        );
    }
    let text = late.metrics();
    assert_promtool_metrics(&text);
    assert_eq!(
        metric(&text, "auth_sidecar_redis_revocation_subscribed"),
        Some(1.0)
    );
}

#[test]
fn a_redis_outage_follows_deny_on_error_and_recovers_without_a_restart() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut redis = RedisServer::start(dir.path().to_owned());
    let rules = "  - name: strict
    path_prefix: /strict
    action: authenticated
    rate_limit: {requests: 1000, per: 1s, store: redis}
  - name: lenient
    path_prefix: /lenient
    action: authenticated
    rate_limit: {requests: 1000, per: 1s, store: redis, deny_on_error: false}
  - name: leased
    path_prefix: /leased
    action: authenticated
    rate_limit: {requests: 1000, per: 1s, store: redis, lease: 4}";
    let mut sidecar = Sidecar::start(dir.path(), "sidecar", &redis.url(), rules);
    let alice = token("alice", "a-1");
    assert_eq!(sidecar.verify("/strict/x", &alice).0, 200);
    assert_eq!(sidecar.verify("/lenient/x", &alice).0, 200);
    // Four tokens leased: this one and at most three more are spent without Redis.
    assert_eq!(sidecar.verify("/leased/x", &alice).0, 200);

    redis.kill();
    let (status, raw) = sidecar.verify("/strict/x", &alice);
    assert_eq!(
        (status, error_code(&raw).as_str()),
        (429, "rate_limit_unavailable"),
        "{raw}"
    );
    assert!(
        raw.to_ascii_lowercase().contains("retry-after: 1\r\n"),
        "{raw}"
    );
    assert!(!raw.to_ascii_lowercase().contains("x-user-id"), "{raw}");
    assert_eq!(
        sidecar.verify("/lenient/x", &alice).0,
        200,
        "allowed, counted"
    );
    // A lease spends what Redis granted before the outage (at most three here, fewer once
    // the hold ran out), then denies like any check that cannot reach Redis: never more.
    let answers: Vec<(u16, String)> = (0..8)
        .map(|_| {
            let (status, raw) = sidecar.verify("/leased/x", &alice);
            (status, error_code(&raw))
        })
        .collect();
    let allowed = answers.iter().take_while(|(s, _)| *s == 200).count();
    assert!(allowed <= 3, "only leased tokens are spent: {answers:?}");
    assert!(
        answers[allowed..]
            .iter()
            .all(|(s, code)| *s == 429 && code == "rate_limit_unavailable"),
        "then every answer is rate_limit_unavailable: {answers:?}"
    );
    let text = sidecar.metrics();
    assert_promtool_metrics(&text);
    assert!(
        metric(
            &text,
            "auth_sidecar_redis_errors_total{operation=\"rate_limit\"}"
        )
        .is_some_and(|n| n >= 2.0),
        "{text}"
    );
    assert!(
        metric(
            &text,
            "auth_sidecar_decisions_total{decision=\"deny\",reason=\"rate_limit_unavailable\",rule=\"strict\"}"
        )
        .is_some_and(|n| n >= 1.0),
        "{text}"
    );

    redis.restart();
    eventually_blocking(
        "the strict rule to allow again",
        Duration::from_secs(20),
        || {
            let (status, raw) = sidecar.verify("/strict/x", &alice);
            (status == 200).then_some(()).ok_or(raw)
        },
    );
    eventually_blocking(
        "the leased rule to allow again",
        Duration::from_secs(20),
        || {
            let (status, raw) = sidecar.verify("/leased/x", &alice);
            (status == 200).then_some(()).ok_or(raw)
        },
    );
    // The subscriber came back too: the replica is ready and subscribed.
    sidecar.wait_ready();
    eventually_blocking("the subscriber to be back", Duration::from_secs(20), || {
        metric(
            &sidecar.metrics(),
            "auth_sidecar_redis_revocation_subscribed",
        ) == Some(1.0)
    });
}

/// One sequence of (gap, identity) through the script (at given times, in Redis) and the
/// local limiter: the same answers and the same waits.
#[test]
fn the_script_s_gcra_answers_like_the_local_limiter() {
    let dir = tempfile::tempdir().expect("temp dir");
    let redis = RedisServer::start(dir.path().to_owned());
    // 60 s per token, burst 4: keys live minutes of real time, longer than this test.
    let limit = RateLimit {
        requests: 60,
        per: Duration::from_secs(3600),
        burst: 4,
        max_keys: 100,
    };
    let settings = RedisSettings::new(
        &redis.url(),
        "gcra-test:".into(),
        1,
        Duration::from_secs(1),
        Duration::from_secs(5),
        false,
    )
    .expect("valid settings");
    let shared = SharedLimiter::new(limit, "seq", true, Arc::new(RedisPool::new(settings)));
    let local = RateLimiter::new(limit);
    let mut rng = fastrand::Rng::with_seed(15);
    let start = Instant::now();
    let base_us: u64 = 1_700_000_000_000_000;
    let mut offset_us: u64 = 0;
    let mut denied = 0;
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(async {
            for step in 0..300 {
                // Bursts (no gap), short and long gaps, in whole microseconds.
                offset_us += match rng.u8(0..4) {
                    0 => 0,
                    1 => rng.u64(0..5_000_000),
                    2 => rng.u64(0..60_000_000),
                    _ => rng.u64(0..300_000_000),
                };
                let who = ["alice", "bob"][rng.usize(0..2)];
                let want = local.check(who, start + Duration::from_micros(offset_us));
                let got = shared
                    .check_at(who, base_us + offset_us)
                    .await
                    .expect("Redis answers");
                assert_eq!(got, want, "step {step}: {who} at +{offset_us} µs");
                denied += usize::from(want.is_err());
            }
        });
    assert!(
        (30..270).contains(&denied),
        "the sequence exercises both answers: {denied} denied of 300"
    );
}

fn gcra_settings(redis: &RedisServer, prefix: &str) -> RedisSettings {
    RedisSettings::new(
        &redis.url(),
        prefix.into(),
        1,
        Duration::from_secs(1),
        Duration::from_secs(5),
        false,
    )
    .expect("valid settings")
}

/// Taking up to k tokens in one script call answers as k checks of the local limiter at
/// that instant: as many tokens as those allow, or the same wait when none is left.
#[test]
fn taking_k_tokens_at_once_is_k_checks_at_one_instant() {
    let dir = tempfile::tempdir().expect("temp dir");
    let redis = RedisServer::start(dir.path().to_owned());
    let limit = RateLimit {
        requests: 60,
        per: Duration::from_secs(3600),
        burst: 6,
        max_keys: 100,
    };
    let pool = Arc::new(RedisPool::new(gcra_settings(&redis, "take-test:")));
    let shared = SharedLimiter::new(limit, "take", true, pool);
    let local = RateLimiter::new(limit);
    let mut rng = fastrand::Rng::with_seed(11);
    let start = Instant::now();
    let base_us: u64 = 1_700_000_000_000_000;
    let (mut offset_us, mut partial, mut empty) = (0u64, 0, 0);
    runtime().block_on(async {
        for step in 0..300 {
            offset_us += match rng.u8(0..3) {
                0 => 0,
                1 => rng.u64(0..120_000_000),
                _ => rng.u64(0..600_000_000),
            };
            let wanted = rng.u32(1..9);
            let at = start + Duration::from_micros(offset_us);
            let mut want = Err(Duration::ZERO);
            for i in 0..wanted {
                match local.check("alice", at) {
                    Ok(()) => want = Ok(i + 1),
                    Err(wait) if i == 0 => want = Err(wait),
                    Err(_) => break,
                }
            }
            let got = shared
                .take_at("alice", wanted, base_us + offset_us)
                .await
                .expect("Redis answers");
            assert_eq!(got, want, "step {step}: {wanted} wanted at +{offset_us} µs");
            partial += usize::from(matches!(want, Ok(n) if n < wanted));
            empty += usize::from(want.is_err());
        }
    });
    assert!(
        partial >= 10 && empty >= 10,
        "partial takes ({partial}) and empty buckets ({empty}) were exercised"
    );
}

/// Three replicas (three pools, one Redis) leasing 3 tokens at a time, on a random sequence
/// of requests and gaps in both clocks: in every window between two allowed requests the
/// count stays within the bound in `ratelimit/shared.rs`. With the clocks stopped the
/// replicas allow at most the burst in total, and what they hold makes up the rest.
#[test]
fn leases_across_replicas_stay_within_limit_plus_the_bounded_overshoot() {
    const REPLICAS: usize = 3;
    const LEASE: u32 = 3;
    let dir = tempfile::tempdir().expect("temp dir");
    let redis = RedisServer::start(dir.path().to_owned());
    // One token every 500 ms, burst 5: rate x hold = 2 < replicas x (lease - 1) = 6.
    let limit = RateLimit {
        requests: 2,
        per: Duration::from_secs(1),
        burst: 5,
        max_keys: 100,
    };
    let interval_us: u64 = 500_000;
    let hold_us = auth_sidecar::ratelimit::LEASE_HOLD.as_micros() as u64;
    let replicas: Vec<SharedLimiter> = (0..REPLICAS)
        .map(|_| {
            let pool = Arc::new(RedisPool::new(gcra_settings(&redis, "lease-test:")));
            SharedLimiter::new(limit, "lease", true, pool).with_lease(LEASE)
        })
        .collect();
    let start = Instant::now();
    let base_us: u64 = 1_700_000_000_000_000;
    runtime().block_on(async {
        // Stopped clocks: a flood at one instant takes the burst and no more. The first
        // replica leases 3 (spends 1), the second the 2 left (spends 1), the third is told
        // to wait; then the held tokens are spent and nothing else.
        let mut allowed = 0;
        for i in 0..30 {
            let r = &replicas[i % REPLICAS];
            match r.check_leased_at("frozen", base_us, start).await {
                Ok(Ok(())) => allowed += 1,
                Ok(Err(wait)) => assert!(wait > Duration::ZERO),
                Err(e) => panic!("Redis answers: {e}"),
            }
            if i == REPLICAS - 1 {
                let mut held = Vec::new();
                for r in &replicas {
                    held.push(r.held_at("frozen", start).await);
                }
                assert_eq!((allowed, held), (2, vec![2, 1, 0]), "after one round");
            }
        }
        assert_eq!(allowed, 5, "the burst, in total");
        for r in &replicas {
            assert_eq!(r.held_at("frozen", start).await, 0);
        }

        let mut rng = fastrand::Rng::with_seed(15);
        let mut offset_us: u64 = 10_000_000_000; // far past the frozen flood's bucket
        let mut times = Vec::new();
        for _ in 0..600 {
            offset_us += match rng.u8(0..4) {
                0 => 0,
                1 => rng.u64(0..50_000),
                2 => rng.u64(0..400_000),
                _ => rng.u64(0..3_000_000),
            };
            let r = &replicas[rng.usize(0..REPLICAS)];
            let at = start + Duration::from_micros(offset_us);
            match r
                .check_leased_at("alice", base_us + offset_us, at)
                .await
                .expect("Redis answers")
            {
                Ok(()) => times.push(offset_us),
                Err(wait) => assert!(wait > Duration::ZERO),
            }
        }
        let overshoot = (REPLICAS as u64 * u64::from(LEASE - 1)).min(hold_us.div_ceil(interval_us));
        let mut tightest = 0;
        for i in 0..times.len() {
            for j in i..times.len() {
                let (count, w) = ((j - i + 1) as u64, times[j] - times[i]);
                let bound = 5 + (w / interval_us) + overshoot;
                assert!(
                    count <= bound,
                    "{count} allowed within {w} µs (from +{} µs): bound {bound}",
                    times[i]
                );
                tightest = tightest.max(count.saturating_sub(5 + w / interval_us));
            }
        }
        assert!(times.len() > 50, "the sequence allows: {}", times.len());
        assert!(
            tightest >= 1,
            "the sequence reaches past the plain GCRA bound, so the check can fail"
        );
    });
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

const BAD: &[(&str, &str, &str)] = &[
    ("redis.url", "redis: {pool_size: 2}", "is required"),
    (
        "redis.url",
        "redis: {url: \"http://127.0.0.1:6379\"}",
        "expected redis://",
    ),
    (
        "redis.key_prefix",
        "redis: {url: \"redis://127.0.0.1:1\", key_prefix: \"\"}",
        "non-empty",
    ),
    (
        "redis.pool_size",
        "redis: {url: \"redis://127.0.0.1:1\", pool_size: 0}",
        "between 1 and",
    ),
    (
        "redis.connect_timeout",
        "redis: {url: \"redis://127.0.0.1:1\", connect_timeout: 0s}",
        "greater than zero",
    ),
    (
        "redis.command_timeout",
        "redis: {url: \"redis://127.0.0.1:1\", command_timeout: soon}",
        "",
    ),
    (
        "redis.revocation",
        "redis: {url: \"redis://127.0.0.1:1\", revocation: maybe}",
        "invalid type",
    ),
    (
        "redis.colour",
        "redis: {url: \"redis://127.0.0.1:1\", colour: blue}",
        "unknown",
    ),
];

#[test]
fn every_bad_redis_field_is_named_by_check_config() {
    let dir = tempfile::tempdir().expect("temp dir");
    let head = "issuers:\n  - issuer: https://idp.test\n    audiences: [omni2]\n    keys: [{kid: hs, alg: HS256, secret_env: HS_SECRET}]\n";
    let check = |name: &str, yaml: &str| -> String {
        let path = dir.path().join(name);
        std::fs::write(&path, yaml).expect("write config");
        let out = cli(&["check-config", path.to_str().expect("utf-8")]);
        assert_eq!(out.status.code(), Some(1), "{yaml}\n{out:?}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let rules = "rules:\n  - {name: api, path_prefix: /api, action: authenticated}\n";
    for (i, (field, block, message)) in BAD.iter().enumerate() {
        let text = check(&format!("bad-{i}.yaml"), &format!("{head}{block}\n{rules}"));
        assert!(
            text.lines()
                .any(|l| l.contains(&format!("- {field}:")) && l.contains(message)),
            "{field}: {text}"
        );
    }
    let rule = |limit: &str| {
        format!(
            "rules:\n  - {{name: api, path_prefix: /api, action: authenticated, rate_limit: {limit}}}\n"
        )
    };
    let with_redis = "redis: {url: \"redis://127.0.0.1:1\"}\n";
    for (name, yaml, want) in [
        (
            "no-block",
            format!("{head}{}", rule("{requests: 5, store: redis}")),
            "rules[0].rate_limit.store: store: redis needs the top-level redis: block",
        ),
        (
            "bad-store",
            format!("{head}{with_redis}{}", rule("{requests: 5, store: disk}")),
            "rules[0].rate_limit.store: invalid value \"disk\": expected local or redis",
        ),
        (
            "bad-lease",
            format!(
                "{head}{with_redis}{}",
                rule("{requests: 5, store: redis, lease: 0}")
            ),
            "rules[0].rate_limit.lease: 0 is not between 1 and 10000",
        ),
        (
            "local-lease",
            format!("{head}{with_redis}{}", rule("{requests: 5, lease: 4}")),
            "rules[0].rate_limit.lease: applies to store: redis only",
        ),
        (
            "bad-deny",
            format!(
                "{head}{with_redis}{}",
                rule("{requests: 5, store: redis, deny_on_error: sometimes}")
            ),
            "rules[0].rate_limit.deny_on_error: invalid type",
        ),
    ] {
        let text = check(&format!("{name}.yaml"), &yaml);
        assert!(text.contains(want), "{name}: {text}");
    }
    // A password in the URL never reaches the output, even when the URL is refused.
    let text = check(
        "secret.yaml",
        &format!("{head}redis: {{url: \"rediss://user:hunter2-secret@127.0.0.1:1\"}}\n{rules}"),
    );
    assert!(text.contains("redis.url"), "{text}");
    assert!(!text.contains("hunter2-secret"), "{text}");
}

#[test]
fn revoke_without_a_redis_block_or_a_reachable_redis_fails_clearly() {
    let dir = tempfile::tempdir().expect("temp dir");
    let head = "issuers:\n  - issuer: https://idp.test\n    audiences: [omni2]\n    keys: [{kid: hs, alg: HS256, secret_env: HS_SECRET}]\nrules:\n  - {name: api, path_prefix: /api, action: authenticated}\n";
    let plain = dir.path().join("plain.yaml");
    std::fs::write(&plain, head).expect("write");
    let out = cli(&[
        "revoke",
        "--config",
        plain.to_str().expect("utf-8"),
        "--sub",
        "x",
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no redis: block"), "{err}");

    // A port nothing listens on.
    let gone = dir.path().join("gone.yaml");
    let port = free_port();
    std::fs::write(
        &gone,
        format!("{head}redis: {{url: \"redis://127.0.0.1:{port}\", revocation: true}}\n"),
    )
    .expect("write");
    let gone = gone.to_str().expect("utf-8");
    let out = cli(&["unrevoke", "--config", gone, "--jti", "x"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("cannot write the revocation to Redis"),
        "{err}"
    );
    // And bad arguments are refused before Redis is asked.
    let out = cli(&["revoke", "--config", gone, "--jti", "x"]);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--expires"),
        "{out:?}"
    );
    let out = cli(&[
        "revoke",
        "--config",
        gone,
        "--jti",
        "x",
        "--expires",
        "2001-01-01T00:00:00Z",
    ]);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("in the past"),
        "{out:?}"
    );
}
