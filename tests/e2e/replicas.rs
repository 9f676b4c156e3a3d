//! Three sidecar replicas and two omni2 replicas behind one real Traefik (load balancing with
//! health checks) and the Python MCP example server: the asserted transformation, the spread
//! over the sidecars, a sidecar replica SIGKILLed under load (no wrong decision; what Traefik
//! answers while it is out is printed) and restarted, and a WebSocket client of a killed omni2 replica
//! reconnecting to the other one and resyncing; with a Redis added through the harness's
//! options: a revocation written by the CLI reaching every sidecar replica within 1 s, one
//! `store: redis` limit holding across the replicas (at most the GCRA's bound), and a Redis
//! outage following `deny_on_error` with recovery and no sidecar restart.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use e2e::http::{Request, send};
use e2e::process::eventually;
use e2e::replicas::*;
use e2e::traefik::{Wiring, changed_paths, shipped, transform};
use nix::sys::signal::Signal;
use serde_json::json;

fn options() -> ReplicaOptions {
    ReplicaOptions {
        sidecars: 3,
        omni2s: 2,
        ..ReplicaOptions::default()
    }
}

#[test]
fn replica_transform_adds_only_the_load_balancing() {
    let (st, dynamic) = shipped();
    let addr = |ip: u8, port: u16| SocketAddr::from(([127, 0, 0, ip], port));
    let w = ReplicaWiring {
        base: Wiring {
            web: addr(1, 1001),
            websecure: addr(1, 1002),
            metrics: addr(1, 1003),
            api: addr(1, 1004),
            sidecar: addr(1, 1005),
            backend: addr(1, 1006),
            dynamic_dir: PathBuf::from("/tmp/e2e-dynamic"),
        },
        auth_lb: addr(1, 1005),
        sidecars: vec![addr(10, 2000), addr(11, 2000), addr(12, 2000)],
        sidecar_admin_port: 2001,
        omni2s: vec![addr(1, 1006), addr(1, 1007)],
    };
    let (one_st, one_dynamic) = transform(&st, &dynamic, &w.base);
    let (new_st, new_dynamic) = transform_replicas(&st, &dynamic, &w);
    assert_eq!(changed_paths(&one_st, &new_st), ["/entryPoints/auth-lb"]);
    assert_eq!(
        new_st["entryPoints"]["auth-lb"]["address"],
        "127.0.0.1:1005"
    );
    assert_eq!(new_dynamic.len(), one_dynamic.len() + 1);
    for ((name, before), (new_name, after)) in one_dynamic.iter().zip(&new_dynamic) {
        assert_eq!(name, new_name);
        if name == "omni2.yml" {
            assert_eq!(
                changed_paths(before, after),
                ["/http/services/omni2/loadBalancer/servers"]
            );
            assert_eq!(
                after["http"]["services"]["omni2"]["loadBalancer"]["servers"],
                json!([{"url": "http://127.0.0.1:1006"}, {"url": "http://127.0.0.1:1007"}])
            );
            // The shipped health check stays; forwardAuth calls the balancing entry point.
            assert_eq!(
                after["http"]["services"]["omni2"]["loadBalancer"]["healthCheck"],
                before["http"]["services"]["omni2"]["loadBalancer"]["healthCheck"]
            );
            assert_eq!(
                after["http"]["middlewares"]["auth"]["forwardAuth"]["address"],
                "http://127.0.0.1:1005/verify"
            );
        } else {
            assert_eq!(changed_paths(before, after), Vec::<String>::new(), "{name}");
        }
    }
    let (name, lb) = new_dynamic.last().expect("auth-lb.yml");
    assert_eq!(name, AUTH_LB_FILE);
    assert_eq!(
        lb["http"]["services"][SIDECAR_SERVICE]["loadBalancer"],
        json!({
            "servers": [
                {"url": "http://127.0.0.10:2000"},
                {"url": "http://127.0.0.11:2000"},
                {"url": "http://127.0.0.12:2000"},
            ],
            "healthCheck": {"path": "/readyz", "port": 2001, "interval": "1s", "timeout": "1s"},
        })
    );
    assert_eq!(
        lb["http"]["routers"][SIDECAR_SERVICE]["entryPoints"],
        json!(["auth-lb"])
    );
    // No shipped router listens on the new entry point (each names web, websecure).
    for (_, d) in &new_dynamic[..new_dynamic.len() - 1] {
        for (router, r) in d["http"]["routers"].as_object().into_iter().flatten() {
            assert_eq!(r["entryPoints"], json!(["web", "websecure"]), "{router}");
        }
    }
}

/// The requests of the load: one that must be allowed, four that must be refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    Allowed,
    NoToken,
    BadSignature,
    Expired,
    NotAdmin,
}

const KINDS: [Kind; 5] = [
    Kind::Allowed,
    Kind::NoToken,
    Kind::BadSignature,
    Kind::Expired,
    Kind::NotAdmin,
];

/// Phases of the kill: all up, killed but still in Traefik's rotation, out of rotation.
const PHASES: [&str; 3] = ["all up", "killed, not yet out", "out of rotation"];

struct Record {
    phase: u8,
    kind: Kind,
    status: String,
    /// An answer that a correct gateway never gives (an allow for a refused request, or a
    /// 200 without omni2's identity-checked body).
    wrong: bool,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sidecar_replicas_share_the_load_and_a_killed_one_gives_no_wrong_decision() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut r = Replicas::start(dir.path(), &options()).await;
    let web = r.target();
    let sidecar = r.any_sidecar();
    let users: Vec<String> = (0..10)
        .map(|i| sidecar.token(&format!("u{i}"), "user"))
        .collect();
    let expired = sidecar.expired_token("u0");
    let bad = {
        let mut t = users[0].clone();
        let last = t.pop().expect("a token");
        t.push(if last == 'A' { 'B' } else { 'A' });
        t
    };

    // Spread: every replica decides some of 60 sequential requests.
    let before = r.sidecar_decisions().await;
    for i in 0..60 {
        let resp = send(
            &web,
            &Request::get("/api/v1/mcp/servers").bearer(&users[i % 10]),
        )
        .await
        .expect("request");
        assert_eq!(resp.status, 200, "{}\n{}", resp.text(), r.logs());
    }
    let after = r.sidecar_decisions().await;
    let spread: Vec<f64> = before
        .iter()
        .zip(&after)
        .map(|(b, a)| a.unwrap_or(0.0) - b.unwrap_or(0.0))
        .collect();
    println!("decisions per sidecar replica for 60 requests through Traefik: {spread:?}");
    assert!(spread.iter().all(|d| *d >= 1.0), "not spread: {spread:?}");
    assert_eq!(spread.iter().sum::<f64>(), 60.0, "one decision per request");

    // Load, paced well under the rate limits (~80 requests/s from 4 workers, 10 users).
    let phase = Arc::new(AtomicU8::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let records = Arc::new(Mutex::new(Vec::<Record>::new()));
    let mut workers = Vec::new();
    for w in 0..4usize {
        let (phase, stop, records, web) =
            (phase.clone(), stop.clone(), records.clone(), web.clone());
        let (users, expired, bad) = (users.clone(), expired.clone(), bad.clone());
        workers.push(tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(50));
            for i in 0..2000usize {
                if stop.load(Ordering::SeqCst) {
                    break;
                }
                tick.tick().await;
                let kind = KINDS[(i + w) % KINDS.len()];
                let user = &users[(i * 4 + w) % users.len()];
                let req = match kind {
                    Kind::Allowed => Request::get("/api/v1/mcp/servers").bearer(user),
                    Kind::NoToken => Request::get("/api/v1/mcp/servers"),
                    Kind::BadSignature => Request::get("/api/v1/mcp/servers").bearer(&bad),
                    Kind::Expired => Request::get("/api/v1/mcp/servers").bearer(&expired),
                    Kind::NotAdmin => {
                        let mut r = Request::get("/api/v1/cache").bearer(user);
                        r.method = http::Method::DELETE;
                        r
                    }
                };
                let at = phase.load(Ordering::SeqCst);
                let (status, wrong) = match send(&web, &req).await {
                    Ok(resp) => {
                        let ok = resp.status == 200;
                        let wrong = match kind {
                            Kind::Allowed => ok && !resp.json()["servers"].is_array(),
                            _ => ok,
                        };
                        (resp.status.as_u16().to_string(), wrong)
                    }
                    Err(e) => (format!("transport error ({e})"), false),
                };
                records.lock().expect("records").push(Record {
                    phase: at,
                    kind,
                    status,
                    wrong,
                });
            }
        }));
    }
    let count_in = |p: u8| {
        let records = records.clone();
        move || {
            records
                .lock()
                .expect("records")
                .iter()
                .filter(|r| r.phase == p)
                .count()
        }
    };
    let phase0 = count_in(0);
    eventually(
        "100 requests with all replicas up",
        Duration::from_secs(30),
        || {
            let n = phase0();
            async move { (n >= 100).then_some(()).ok_or(format!("{n}")) }
        },
    )
    .await;
    let victim = 1;
    // Taken out of the harness (its guard and log kept): nothing asks it for metrics.
    let dead = r.sidecars[victim].take().expect("victim");
    let pid = dead.pid().expect("pid");
    dead.signal(Signal::SIGKILL);
    phase.store(1, Ordering::SeqCst);
    let killed_at = tokio::time::Instant::now();
    r.wait_servers(SIDECAR_SERVICE, 2, 1, Duration::from_secs(30))
        .await;
    let out_after = killed_at.elapsed();
    phase.store(2, Ordering::SeqCst);
    let phase2 = count_in(2);
    eventually(
        "100 requests after the replica left",
        Duration::from_secs(30),
        || {
            let n = phase2();
            async move { (n >= 100).then_some(()).ok_or(format!("{n}")) }
        },
    )
    .await;
    stop.store(true, Ordering::SeqCst);
    for w in workers {
        w.await.expect("worker");
    }

    let records = std::mem::take(&mut *records.lock().expect("records"));
    let mut table: BTreeMap<(u8, Kind, String), usize> = BTreeMap::new();
    for rec in records.iter() {
        *table
            .entry((rec.phase, rec.kind, rec.status.clone()))
            .or_default() += 1;
    }
    println!(
        "sidecar replica {victim} (pid {pid}) SIGKILLed; Traefik marked it DOWN after {out_after:?} (health check every {SIDECAR_HEALTH_INTERVAL})"
    );
    for ((p, kind, status), n) in &table {
        let kind = format!("{kind:?}");
        println!("  {:<22} {kind:<13} {status:<24} {n}", PHASES[*p as usize]);
    }
    let wrong: Vec<&Record> = records.iter().filter(|r| r.wrong).collect();
    assert!(
        wrong.is_empty(),
        "wrong decisions: {:?}",
        wrong
            .iter()
            .map(|r| (r.phase, r.kind, &r.status))
            .collect::<Vec<_>>()
    );
    // With every replica up, and once the dead one is out, every answer is the right one.
    for rec in records.iter().filter(|r| r.phase != 1) {
        let want_ok = rec.kind == Kind::Allowed;
        assert_eq!(
            rec.status == "200",
            want_ok,
            "{} {:?}: {}",
            PHASES[rec.phase as usize],
            rec.kind,
            rec.status
        );
    }
    // Refusals are the sidecar's, not a gateway error: 401 or 403.
    for rec in records
        .iter()
        .filter(|r| r.phase != 1 && r.kind != Kind::Allowed)
    {
        assert!(
            rec.status == "401" || rec.status == "403",
            "{:?}: {}",
            rec.kind,
            rec.status
        );
    }
    // The survivors decided everything after the kill.
    let end = r.sidecar_decisions().await;
    for (i, (a, e)) in after.iter().zip(&end).enumerate() {
        if i != victim {
            assert!(
                e.unwrap_or(0.0) > a.unwrap_or(0.0),
                "replica {i}: {a:?} -> {e:?}"
            );
        }
    }
    drop(dead);

    // The replica comes back on its address: Traefik's health check puts it back in
    // rotation and it decides again.
    r.restart_sidecar(victim).await;
    r.wait_servers(SIDECAR_SERVICE, 3, 0, Duration::from_secs(30))
        .await;
    let before = r.sidecar_decisions().await;
    for i in 0..30 {
        let resp = send(
            &web,
            &Request::get("/api/v1/mcp/servers").bearer(&users[i % 10]),
        )
        .await
        .expect("request");
        assert_eq!(resp.status, 200, "{}", resp.text());
    }
    let after = r.sidecar_decisions().await;
    assert!(
        after[victim].unwrap_or(0.0) > before[victim].unwrap_or(0.0),
        "the restarted replica decides again: {before:?} -> {after:?}"
    );
}

/// The `omni2_ws_connections` gauge of each omni2 replica that is still running.
async fn ws_connections(r: &Replicas) -> Vec<Option<f64>> {
    let mut out = Vec::new();
    for o in &r.omni2s {
        out.push(match o {
            Some(o) => Some(metric_sum(&o.target(), "omni2_ws_connections").await),
            None => None,
        });
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_client_of_a_killed_omni2_replica_reconnects_and_resyncs() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut r = Replicas::start(dir.path(), &options()).await;
    let token = r.any_sidecar().token("ws-user", "user");
    let target = format!("/ws/mcp-status?access_token={token}");
    let web = r.traefik.addr();

    let mut ws = WsClient::connect(web, &target)
        .await
        .expect("WebSocket through Traefik");
    let first = ws
        .next_json(Duration::from_secs(10))
        .await
        .expect("snapshot");
    assert_eq!(
        (first["type"].clone(), first["seq"].clone()),
        (json!("snapshot"), json!(1))
    );
    let holder = eventually(
        "one omni2 replica holds the socket",
        Duration::from_secs(10),
        || {
            let r = &r;
            async move {
                let c = ws_connections(r).await;
                let holders: Vec<usize> = (0..c.len()).filter(|i| c[*i] == Some(1.0)).collect();
                match holders[..] {
                    [one] if c.iter().flatten().sum::<f64>() == 1.0 => Ok(one),
                    _ => Err(format!("{c:?}")),
                }
            }
        },
    )
    .await;

    let dead = r.omni2s[holder].take().expect("holder");
    dead.signal(Signal::SIGKILL);
    let ended = ws.next_json(Duration::from_secs(15)).await;
    assert!(
        ended.is_err(),
        "the socket of a killed replica must end: {ended:?}"
    );

    // Reconnect through Traefik until a replica answers (the dead one stays in rotation
    // until the shipped health check, every 10 s, marks it down).
    let mut failed = Vec::new();
    let mut fresh = None;
    for _ in 0..60 {
        match WsClient::connect(web, &target).await {
            Ok(mut c) => match c.next_json(Duration::from_secs(10)).await {
                Ok(m) => {
                    fresh = Some((c, m));
                    break;
                }
                Err(e) => failed.push(e),
            },
            Err(e) => failed.push(e),
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    println!(
        "reconnect attempts refused before one succeeded: {} {failed:?}",
        failed.len()
    );
    let (mut ws, snapshot) =
        fresh.unwrap_or_else(|| panic!("never reconnected: {failed:?}\n{}", r.logs()));
    assert_eq!(snapshot["type"], "snapshot", "{snapshot}");
    assert_eq!(snapshot["seq"], 1, "a new connection starts a new sequence");
    assert!(
        snapshot["servers"]
            .as_array()
            .is_some_and(|s| s.iter().any(|s| s["name"] == "example")),
        "{snapshot}"
    );
    let c = ws_connections(&r).await;
    assert_eq!(
        c[1 - holder],
        Some(1.0),
        "the other replica holds it now: {c:?}"
    );
    // An explicit resync on the new replica answers a fresh snapshot.
    ws.send_json(&json!({"action": "resync"}))
        .await
        .expect("send resync");
    // Deltas may come first; a handful of messages bounds the wait.
    let mut again = json!(null);
    for _ in 0..10 {
        again = ws
            .next_json(Duration::from_secs(10))
            .await
            .expect("a message");
        if again["type"] == "snapshot" {
            break;
        }
    }
    assert_eq!(again["type"], "snapshot", "{again}");
    assert!(again["seq"].as_u64() > Some(1), "{again}");
    drop(dead);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revocation_through_redis_reaches_every_sidecar_replica() {
    let dir = tempfile::tempdir().expect("tempdir");
    let redis_dir = dir.path().join("redis");
    std::fs::create_dir_all(&redis_dir).expect("redis dir");
    let redis = test_support::RedisServer::start(redis_dir);
    let opts = ReplicaOptions {
        sidecar_config: Some(shipped_sidecar_config_plus(
            "redis:\n  url: ${REDIS_URL}\n  revocation: true\n",
        )),
        sidecar_env: vec![("REDIS_URL".into(), redis.url())],
        ..options()
    };
    let r = Replicas::start(dir.path(), &opts).await;
    let path = "/api/v1/mcp/servers";
    let (token, other) = (
        r.any_sidecar().token("revoked-user", "user"),
        r.any_sidecar().token("other-user", "user"),
    );
    for i in 0..3 {
        assert_eq!(r.decision_of(i, path, &token).await, Ok(200), "replica {i}");
    }

    // The CLI writes the revocation to Redis (stored set + publish); the replicas are not
    // told anything else. `--not-before` past the token's `iat` (whole seconds).
    let not_before = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs()
        + 2;
    let mut env = e2e::stack::sidecar_env(e2e::process::free_addr(), e2e::process::free_addr());
    env.push(("REDIS_URL", redis.url()));
    let out = std::process::Command::new(e2e::process::sidecar_binary())
        .args(["revoke", "--config"])
        .arg(r.sidecar_config())
        .args([
            "--sub",
            "revoked-user",
            "--not-before",
            &not_before.to_string(),
        ])
        .envs(env)
        .output()
        .expect("run auth-sidecar revoke");
    assert!(out.status.success(), "revoke: {out:?}");
    let revoked_at = tokio::time::Instant::now();
    // The bound, polled (not slept): every replica denies within 1 s of the CLI
    // returning. Bounded by time and by count.
    let mut answers = Vec::new();
    for _ in 0..200 {
        answers.clear();
        for i in 0..3 {
            answers.push(r.decision_of(i, path, &token).await);
        }
        if answers.iter().all(|a| *a == Ok(401)) || revoked_at.elapsed() > Duration::from_secs(1) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let reached_after = revoked_at.elapsed();
    assert!(
        answers.iter().all(|a| *a == Ok(401)),
        "not every replica denies the revoked subject: {answers:?}\n{}",
        r.logs()
    );
    assert!(
        reached_after <= Duration::from_secs(1),
        "the revocation reached every replica only after {reached_after:?} (bound 1 s)"
    );
    println!(
        "a revocation through Redis reached all 3 replicas within {reached_after:?} of the CLI returning"
    );
    // Through Traefik too, while another user is unaffected.
    let through = send(&r.target(), &Request::get(path).bearer(&token))
        .await
        .expect("request");
    assert_eq!(through.status, 401, "{}", through.text());
    let through = send(&r.target(), &Request::get(path).bearer(&other))
        .await
        .expect("request");
    assert_eq!(through.status, 200, "{}", through.text());
}

/// The GCRA parameters of the shared-limit rule: 6 per minute (one every 10 s), burst 10.
const SHARED_REQUESTS: u64 = 6;
const SHARED_PER_SECS: u64 = 60;
const SHARED_BURST: u64 = 10;

/// The most a GCRA of `burst` refilled at one per `interval` allows within `elapsed`,
/// starting full: the burst, plus one per whole interval that passed.
fn gcra_bound(burst: u64, interval: Duration, elapsed: Duration) -> u64 {
    burst + (elapsed.as_micros() / interval.as_micros()) as u64
}

#[test]
fn gcra_bound_is_the_burst_plus_one_per_elapsed_interval() {
    let e = Duration::from_secs(10);
    assert_eq!(gcra_bound(10, e, Duration::from_secs(3)), 10);
    assert_eq!(gcra_bound(10, e, Duration::from_secs(10)), 11);
    assert_eq!(gcra_bound(10, e, Duration::from_millis(29_999)), 12);
}

#[test]
fn sum_samples_filters_on_every_label() {
    let text = "# HELP d x\n# TYPE d counter\n\
        d{decision=\"allow\",reason=\"ok\",rule=\"a\"} 3\n\
        d{decision=\"deny\",reason=\"rate_limited\",rule=\"a\"} 4\n\
        d{decision=\"allow\",reason=\"ok\",rule=\"b\"} 5\n\
        d_other{rule=\"a\"} 100\nd 7\n";
    assert_eq!(sum_samples(text, "d", &[]), 19.0);
    assert_eq!(sum_samples(text, "d", &[("rule", "a")]), 7.0);
    assert_eq!(
        sum_samples(text, "d", &[("rule", "a"), ("decision", "allow")]),
        3.0
    );
    assert_eq!(sum_samples(text, "d", &[("rule", "c")]), 0.0);
}

#[test]
fn rules_go_first_in_the_shipped_config() {
    let text = shipped_sidecar_config_with_rules(
        "  - name: first\n    path: /x\n    action: deny\n",
        "k: v",
    );
    let at = text
        .find("\nrules:\n  - name: first\n")
        .expect("first rule");
    assert!(
        text[at..].contains("- name: health"),
        "the shipped rules follow"
    );
    assert!(text.ends_with("\nk: v\n"));
}

/// Per sidecar replica, `auth_sidecar_decisions_total` of `rule` with `labels`.
async fn rule_decisions(r: &Replicas, rule: &str, labels: &[(&str, &str)]) -> Vec<f64> {
    let mut out = Vec::new();
    for s in r.sidecars.iter().flatten() {
        let mut l = vec![("rule", rule)];
        l.extend_from_slice(labels);
        out.push(
            metric_sum_where(
                &e2e::http::Target::Tcp(s.admin),
                "auth_sidecar_decisions_total",
                &l,
            )
            .await,
        );
    }
    out
}

fn error_of(resp: &e2e::http::Response) -> String {
    resp.json()["error"].as_str().unwrap_or("").to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_limit_in_redis_holds_across_every_sidecar_replica() {
    let dir = tempfile::tempdir().expect("tempdir");
    let redis_dir = dir.path().join("redis");
    std::fs::create_dir_all(&redis_dir).expect("redis dir");
    let redis = test_support::RedisServer::start(redis_dir);
    let rule = format!(
        "  - name: shared-limit\n    path: /api/v1/mcp/servers\n    action: authenticated\n    \
         rate_limit: {{requests: {SHARED_REQUESTS}, per: {SHARED_PER_SECS}s, burst: {SHARED_BURST}, store: redis}}\n"
    );
    let opts = ReplicaOptions {
        sidecar_config: Some(shipped_sidecar_config_with_rules(
            &rule,
            "redis:\n  url: ${REDIS_URL}\n",
        )),
        sidecar_env: vec![("REDIS_URL".into(), redis.url())],
        ..options()
    };
    let r = Replicas::start(dir.path(), &opts).await;
    let web = r.target();
    let path = "/api/v1/mcp/servers";
    let (user, other) = (
        r.any_sidecar().token("limited-user", "user"),
        r.any_sidecar().token("other-user", "user"),
    );
    let before_allow = rule_decisions(&r, "shared-limit", &[("decision", "allow")]).await;
    let before_all = rule_decisions(&r, "shared-limit", &[]).await;

    // 45 requests, one at a time: 15 per replica under round robin, three times the burst.
    let sent = 45u64;
    let started = tokio::time::Instant::now();
    let (mut allowed, mut limited) = (0u64, 0u64);
    for _ in 0..sent {
        let resp = send(&web, &Request::get(path).bearer(&user))
            .await
            .expect("request");
        match resp.status.as_u16() {
            200 => allowed += 1,
            429 => {
                assert_eq!(error_of(&resp), "rate_limited", "{}", resp.text());
                assert!(
                    resp.headers.contains_key("retry-after"),
                    "{:?}",
                    resp.headers
                );
                limited += 1;
            }
            s => panic!("unexpected {s}: {}\n{}", resp.text(), r.logs()),
        }
    }
    let elapsed = started.elapsed();
    let interval = Duration::from_secs(SHARED_PER_SECS / SHARED_REQUESTS);
    let bound = gcra_bound(SHARED_BURST, interval, elapsed);

    let after_allow = rule_decisions(&r, "shared-limit", &[("decision", "allow")]).await;
    let after_all = rule_decisions(&r, "shared-limit", &[]).await;
    let diff = |a: &[f64], b: &[f64]| -> Vec<u64> {
        a.iter().zip(b).map(|(a, b)| (a - b) as u64).collect()
    };
    let decided = diff(&after_all, &before_all);
    let allowed_per = diff(&after_allow, &before_allow);
    println!(
        "shared limit (burst {SHARED_BURST}, {SHARED_REQUESTS}/{SHARED_PER_SECS}s): {allowed} of {sent} \
         allowed through Traefik in {elapsed:?} (GCRA bound {bound}), {limited} limited; \
         decisions per replica {decided:?}, allows per replica {allowed_per:?}"
    );
    assert!(
        decided.iter().all(|d| *d >= 1),
        "every replica decided: {decided:?}"
    );
    assert_eq!(
        decided.iter().sum::<u64>(),
        sent,
        "one decision per request"
    );
    assert_eq!(
        allowed_per.iter().sum::<u64>(),
        allowed,
        "the replicas' allows are what the client saw"
    );
    assert!(
        allowed <= bound,
        "{allowed} allowed, the GCRA allows at most {bound}"
    );
    // The limit was reached: the whole burst was usable, and the rest refused.
    assert!(
        allowed >= SHARED_BURST,
        "{allowed} allowed, burst {SHARED_BURST}"
    );
    assert_eq!(allowed + limited, sent);
    assert!(limited > 0);

    // Another user has a bucket of their own.
    for i in 0..5 {
        let resp = send(&web, &Request::get(path).bearer(&other))
            .await
            .expect("request");
        assert_eq!(resp.status, 200, "other user, request {i}: {}", resp.text());
    }
    drop(redis);
}

/// What the outage test records for one request: when it started and what came back.
struct Answer {
    phase: u8,
    /// The phase when the answer came back: an answer is an outage answer only if Redis
    /// was gone from the request's start to its end.
    phase_end: u8,
    status: u16,
    error: String,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_outage_follows_deny_on_error_and_recovery_needs_no_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let redis_dir = dir.path().join("redis");
    std::fs::create_dir_all(&redis_dir).expect("redis dir");
    let mut redis = test_support::RedisServer::start(redis_dir);
    // Both rules: 3 per minute, burst 3, in Redis; they differ only in deny_on_error.
    let limit = "{requests: 3, per: 1m, burst: 3, store: redis, deny_on_error: ";
    let rules = format!(
        "  - name: strict\n    path: /api/v1/mcp/servers\n    action: authenticated\n    \
         rate_limit: {limit}true}}\n\
         \x20 - name: lenient\n    path: /api/v1/mcp/servers/example\n    action: authenticated\n    \
         rate_limit: {limit}false}}\n"
    );
    let opts = ReplicaOptions {
        sidecar_config: Some(shipped_sidecar_config_with_rules(
            &rules,
            "redis:\n  url: ${REDIS_URL}\n",
        )),
        sidecar_env: vec![("REDIS_URL".into(), redis.url())],
        ..options()
    };
    let r = Replicas::start(dir.path(), &opts).await;
    let web = r.target();
    let (strict, lenient) = ("/api/v1/mcp/servers", "/api/v1/mcp/servers/example");
    let pids: Vec<Option<u32>> = r.sidecars.iter().flatten().map(|s| s.pid()).collect();
    let tokens: Vec<String> = (0..400)
        .map(|i| r.any_sidecar().token(&format!("fresh-{i}"), "user"))
        .collect();
    let get = |path: &'static str, token: &str| {
        let (web, req) = (web.clone(), Request::get(path).bearer(token));
        async move { send(&web, &req).await.expect("request through Traefik") }
    };
    // `n` requests of one user on `path`: their (status, error) answers.
    async fn burst<F, Fut>(get: F, n: usize) -> Vec<(u16, String)>
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = e2e::http::Response>,
    {
        let mut out = Vec::new();
        for _ in 0..n {
            let resp = get().await;
            out.push((resp.status.as_u16(), error_of(&resp)));
        }
        out
    }
    let ok = (200, String::new());
    let limited = (429, "rate_limited".to_owned());
    let unavailable = (429, "rate_limit_unavailable".to_owned());

    // Redis up: both limits apply.
    let u = r.any_sidecar().token("before-outage", "user");
    for path in [strict, lenient] {
        let answers = burst(|| get(path, &u), 5).await;
        assert_eq!(answers[..3], [ok.clone(), ok.clone(), ok.clone()], "{path}");
        assert_eq!(answers[3..], [limited.clone(), limited.clone()], "{path}");
    }

    // Traffic on the strict rule while Redis dies: one fresh user per request, so only an
    // unavailable limiter can refuse one.
    let phase = Arc::new(AtomicU8::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let answers = Arc::new(Mutex::new(Vec::<Answer>::new()));
    let worker = {
        let (phase, stop, answers, tokens) =
            (phase.clone(), stop.clone(), answers.clone(), tokens.clone());
        let web = web.clone();
        tokio::spawn(async move {
            for token in tokens.iter().take(300) {
                if stop.load(Ordering::SeqCst) {
                    break;
                }
                let at = phase.load(Ordering::SeqCst);
                let resp = send(&web, &Request::get(strict).bearer(token))
                    .await
                    .expect("request through Traefik");
                answers.lock().expect("answers").push(Answer {
                    phase: at,
                    phase_end: phase.load(Ordering::SeqCst),
                    status: resp.status.as_u16(),
                    error: error_of(&resp),
                });
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };
    let count_in = |p: u8| {
        answers
            .lock()
            .expect("answers")
            .iter()
            .filter(|a| a.phase == p)
            .count()
    };
    eventually(
        "10 answers before the outage",
        Duration::from_secs(20),
        || {
            let n = count_in(0);
            async move { (n >= 10).then_some(()).ok_or(format!("{n}")) }
        },
    )
    .await;
    redis.kill();
    phase.store(1, Ordering::SeqCst);
    eventually(
        "20 answers during the outage",
        Duration::from_secs(20),
        || {
            let n = count_in(1);
            async move { (n >= 20).then_some(()).ok_or(format!("{n}")) }
        },
    )
    .await;
    // Redis down: the lenient rule allows past its burst, the strict one refuses every time.
    let u = r.any_sidecar().token("during-outage", "user");
    assert_eq!(
        burst(|| get(lenient, &u), 5).await,
        vec![ok.clone(); 5],
        "lenient"
    );
    for i in 0..5 {
        let resp = get(strict, &u).await;
        assert_eq!(
            (resp.status.as_u16(), error_of(&resp)),
            unavailable,
            "strict, request {i}"
        );
        assert_eq!(resp.header("retry-after"), Some("1"), "{:?}", resp.headers);
    }

    // The recovery phase starts before the restart, so an answer that began and ended in
    // the outage phase never met a live Redis (one sent while Redis was down and answered
    // after the restart was a 200, and counted as an outage answer before).
    phase.store(2, Ordering::SeqCst);
    redis.restart();
    let restarted_at = tokio::time::Instant::now();
    // Each replica notices on its own next command; wait until every one, asked directly,
    // checks in Redis again (fresh users, so only the limiter can refuse).
    let fresh = std::sync::atomic::AtomicUsize::new(300);
    eventually(
        "every replica checks limits in Redis again",
        Duration::from_secs(20),
        || {
            let (r, fresh, tokens) = (&r, &fresh, &tokens);
            async move {
                let mut got = Vec::new();
                for i in 0..3 {
                    let t = &tokens[fresh.fetch_add(1, Ordering::SeqCst) % tokens.len()];
                    got.push(r.decision_of(i, strict, t).await?);
                }
                (got == [200, 200, 200])
                    .then_some(())
                    .ok_or(format!("{got:?}"))
            }
        },
    )
    .await;
    println!(
        "after redis-server restarted on the same port, every replica allowed again within {:?}",
        restarted_at.elapsed()
    );
    eventually(
        "the traffic is allowed again",
        Duration::from_secs(20),
        || {
            let last = answers
                .lock()
                .expect("answers")
                .last()
                .map(|a| (a.phase, a.status));
            async move {
                (last == Some((2, 200)))
                    .then_some(())
                    .ok_or(format!("{last:?}"))
            }
        },
    )
    .await;
    stop.store(true, Ordering::SeqCst);
    worker.await.expect("worker");

    let answers = std::mem::take(&mut *answers.lock().expect("answers"));
    let mut table: BTreeMap<(u8, u16, String), usize> = BTreeMap::new();
    for a in &answers {
        *table
            .entry((a.phase, a.status, a.error.clone()))
            .or_default() += 1;
    }
    println!("strict rule, one fresh user per request, through Traefik:");
    for ((p, status, error), n) in &table {
        let p = ["redis up", "redis killed", "redis restarted"][*p as usize];
        println!("  {p:<16} {status} {error:<24} {n}");
    }
    // Never an allow once Redis was gone; only the limiter's "not now" while it was.
    let in_outage = |a: &&Answer| a.phase == 1 && a.phase_end == 1;
    for a in answers.iter().filter(in_outage) {
        assert_eq!(
            (a.status, a.error.as_str()),
            (429, "rate_limit_unavailable"),
            "during the outage"
        );
    }
    for a in answers.iter().filter(|a| !in_outage(a)) {
        assert!(
            (a.status, a.error.as_str()) == (200, "")
                || (a.status, a.error.as_str()) == (429, "rate_limit_unavailable"),
            "phase {}: {} {}",
            a.phase,
            a.status,
            a.error
        );
    }
    assert!(answers.iter().any(|a| a.phase == 0 && a.status == 200));

    // Redis back (empty): both limits apply again, with the same sidecar processes.
    let u = r.any_sidecar().token("after-outage", "user");
    for path in [strict, lenient] {
        let answers = burst(|| get(path, &u), 5).await;
        assert_eq!(answers[..3], [ok.clone(), ok.clone(), ok.clone()], "{path}");
        assert_eq!(answers[3..], [limited.clone(), limited.clone()], "{path}");
    }
    // Each replica, asked directly, checks its limit in Redis again: same processes.
    let now: Vec<Option<u32>> = r.sidecars.iter().flatten().map(|s| s.pid()).collect();
    assert_eq!(now, pids, "no sidecar was restarted");
    for i in 0..3 {
        let token = r.any_sidecar().token(&format!("direct-{i}"), "user");
        assert_eq!(
            r.decision_of(i, strict, &token).await,
            Ok(200),
            "replica {i}"
        );
    }
    let errors = {
        let mut sum = 0.0;
        for s in r.sidecars.iter().flatten() {
            sum += metric_sum_where(
                &e2e::http::Target::Tcp(s.admin),
                "auth_sidecar_redis_errors_total",
                &[("operation", "rate_limit")],
            )
            .await;
        }
        sum
    };
    println!(
        "auth_sidecar_redis_errors_total{{operation=\"rate_limit\"}} over the replicas: {errors}"
    );
    // Every refused check of the worker during the outage, and the 5 + 5 just above.
    let refused = answers.iter().filter(in_outage).count() + 10;
    assert!(
        errors >= refused as f64,
        "every failed check is counted: {errors} < {refused}"
    );
}
