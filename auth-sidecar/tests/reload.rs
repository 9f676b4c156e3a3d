//! Hot reload: a good change takes effect, a bad one is refused while the old config keeps
//! answering, the file watcher and SIGHUP trigger reloads, unchanged issuers keep their
//! fetched keys, and 100 reloads under a bounded loopback load give no failed or wrong
//! decision.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::jwks_support::{EcKey, JwksServer};
use crate::support::{self, app, call, claims, env, hs, unix_now};
use actix_web::test::TestRequest;
use actix_web::{App, HttpServer};
use auth_sidecar::config::Runtime;
use auth_sidecar::http::{AppState, configure_verify};
use auth_sidecar::reload::{reload, watch};
use serde_json::json;
use test_support::{Proc, eventually, eventually_blocking};

fn token(sub: &str, role: &str) -> String {
    hs().mint(&claims(sub, role))
}

/// A config whose `api` rule needs `api_role` (`any` = authenticated only).
fn config(api_role: &str, extra: &str) -> String {
    let action = if api_role == "any" {
        "action: authenticated".to_owned()
    } else {
        format!("action: roles\n    roles: [{api_role}]")
    };
    format!(
        r#"
issuers:
  - issuer: https://idp.test
    audiences: [omni2]
    keys: [{{kid: hs, alg: HS256, secret_env: HS_SECRET}}]
rules:
  - name: admin
    path_prefix: /api/v1/admin
    action: roles
    roles: [admin]
  - name: api
    path_prefix: /api
    {action}
{extra}"#
    )
}

struct ConfigFile {
    _dir: tempfile::TempDir,
    path: PathBuf,
}

impl ConfigFile {
    fn new(text: &str) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("sidecar.yaml");
        std::fs::write(&path, text).expect("write config");
        ConfigFile { _dir: dir, path }
    }

    /// Replaces the file the way editors and config management do: write aside, rename.
    fn write(&self, text: &str) {
        let aside = self.path.with_extension("tmp");
        std::fs::write(&aside, text).expect("write config");
        std::fs::rename(&aside, &self.path).expect("rename config");
    }
}

fn verify(uri: &str, token: Option<&str>) -> TestRequest {
    let mut req = support::forwarded("GET", uri);
    if let Some(t) = token {
        req = req.insert_header(("Authorization", format!("Bearer {t}")));
    }
    req
}

fn reloads(state: &AppState, result: &str) -> u64 {
    state
        .metrics
        .config_reloads
        .with_label_values(&[result])
        .get()
}

#[actix_web::test]
async fn a_good_change_takes_effect_and_a_bad_one_is_refused() {
    let file = ConfigFile::new(&config("any", ""));
    let (app, state) = app(Runtime::load(&file.path, &env).expect("valid config")).await;
    let user = token("alice", "user");
    assert_eq!(call(&app, verify("/api/x", Some(&user))).await.status, 200);
    let hash_before = state.active.load().rt.hash.clone();

    file.write(&config("ops", ""));
    reload(&state, &file.path, &env).expect("good config");
    let res = call(&app, verify("/api/x", Some(&user))).await;
    assert_eq!(res.status, 403, "the api rule now needs role ops");
    let readyz = call(&app, TestRequest::get().uri("/readyz")).await.body;
    let hash_after = state.active.load().rt.hash.clone();
    assert_ne!(hash_before, hash_after);
    assert!(readyz.contains(&hash_after), "{readyz}");

    // Two problems: both reported, nothing changes.
    file.write(&config(
        "ops",
        "  - {name: broken, path_prefix: /x, action: maybe, allow_cidrs: [10.0.0/8]}\n",
    ));
    let problems = reload(&state, &file.path, &env)
        .expect_err("bad config")
        .to_string();
    assert!(
        problems.contains(r#"rules[2].action: invalid action "maybe""#),
        "{problems}"
    );
    assert!(
        problems.contains(r#"rules[2].allow_cidrs[0]: invalid CIDR "10.0.0/8""#),
        "{problems}"
    );
    assert_eq!(
        state.active.load().rt.hash,
        hash_after,
        "last good config kept"
    );
    let res = call(&app, verify("/api/x", Some(&token("bob", "ops")))).await;
    assert_eq!(res.status, 200, "the last good config still answers");
    assert_eq!(
        (reloads(&state, "success"), reloads(&state, "failure")),
        (1, 1)
    );
    let metrics = call(&app, TestRequest::get().uri("/metrics")).await.body;
    assert!(
        metrics.contains("auth_sidecar_config_reloads_total{result=\"failure\"} 1"),
        "{metrics}"
    );
}

#[actix_web::test]
async fn the_file_watcher_reloads_on_change() {
    let file = ConfigFile::new(&config("any", ""));
    let (app, state) = app(Runtime::load(&file.path, &env).expect("valid config")).await;
    let watcher = actix_web::rt::spawn(watch(state.clone(), file.path.clone(), Box::new(env)));
    let user = token("alice", "user");
    // The watch starts asynchronously: rewrite until a reload is seen (bounded).
    eventually(
        "the change to be picked up (403)",
        Duration::from_secs(10),
        || async {
            if reloads(&state, "success") == 0 {
                file.write(&config("ops", ""));
            }
            call(&app, verify("/api/x", Some(&user))).await.status == 403
        },
    )
    .await;
    watcher.abort();
}

#[actix_web::test]
async fn unchanged_issuers_keep_their_keys_and_cache_across_reloads() {
    let a = EcKey::generate("a");
    let server = JwksServer::start(&[&a]);
    let remote = |cooldown: &str| {
        format!(
            r#"  - issuer: https://remote.idp.test
    audiences: [omni2]
    jwks_uri: {}
    jwks: {{cooldown: {cooldown}}}
"#,
            server.jwks_uri()
        )
    };
    let with = |extra_rule: bool, cooldown: &str, identity: &str| {
        let text = config(
            "any",
            if extra_rule {
                "  - {name: extra, path: /extra, action: deny}\n"
            } else {
                ""
            },
        );
        let text = text.replace("rules:\n", &format!("{}rules:\n", remote(cooldown)));
        format!("{text}{identity}")
    };
    let file = ConfigFile::new(&with(false, "30s", ""));
    let (app, state) = app(Runtime::load(&file.path, &env).expect("valid config")).await;
    let now = unix_now();
    let remote_token = a.mint(&json!({"iss": "https://remote.idp.test", "aud": "omni2",
                                       "sub": "carol", "iat": now - 5, "exp": now + 3600}));
    assert!(
        call(&app, verify("/api/x", Some(&remote_token)))
            .await
            .status
            == 200
    );
    let keys_before = state.active.load().rt.issuers[1]
        .remote
        .clone()
        .expect("remote");
    let cache_before = state.active.load().rt.cache.clone();
    let hits = server.jwks_hits();
    assert!(hits >= 1);

    // A rule change: same keys object, same cache, no fetch.
    file.write(&with(true, "30s", ""));
    reload(&state, &file.path, &env).expect("valid");
    // (the same remote keys object, the same cache)
    let kept = || {
        let active = state.active.load();
        let keys = active.rt.issuers[1].remote.as_ref().expect("remote");
        (
            Arc::ptr_eq(&keys_before, keys),
            Arc::ptr_eq(&cache_before, &active.rt.cache),
        )
    };
    assert_eq!(kept(), (true, true), "validation unchanged: cache kept");
    assert!(
        call(&app, verify("/api/x", Some(&remote_token)))
            .await
            .status
            == 200
    );
    assert_eq!(server.jwks_hits(), hits, "no refetch");

    // An identity mapping change: keys kept, cache cleared.
    file.write(&with(
        true,
        "30s",
        "identity:\n  user_id: {header: X-Subject}\n",
    ));
    reload(&state, &file.path, &env).expect("valid");
    assert_eq!(kept(), (true, false), "validation changed: cache cleared");

    // The issuer's own settings change: new key set, fetched again on use.
    file.write(&with(true, "31s", ""));
    reload(&state, &file.path, &env).expect("valid");
    assert!(!kept().0, "issuer settings changed: new key set");
    assert!(
        call(&app, verify("/api/x", Some(&remote_token)))
            .await
            .status
            == 200
    );
    assert!(server.jwks_hits() > hits);
}

/// 100 reloads, alternating between two configs that must decide the probes the same way
/// (they differ in rules, realm and cache settings), while four loopback clients keep
/// asking. Every answer must be the expected one.
#[test]
fn a_hundred_reloads_under_load_give_no_failed_or_wrong_decision() {
    let config_a = config("any", "");
    let config_b = config(
        "any",
        "  - {name: extra, path: /extra, action: deny}\ncache: {max_ttl: 1m}\nrealm: other\n",
    );
    let file = ConfigFile::new(&config_a);
    let state = Arc::new(AppState::new(
        Runtime::load(&file.path, &env).expect("valid config"),
    ));
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind loopback");
    let addr = listener.local_addr().expect("addr");
    let (tx, rx) = std::sync::mpsc::channel();
    let server_state = state.clone();
    let server = std::thread::spawn(move || {
        actix_web::rt::System::new().block_on(async move {
            let data = actix_web::web::Data::from(server_state);
            let srv = HttpServer::new(move || {
                App::new()
                    .app_data(data.clone())
                    .configure(configure_verify)
            })
            .workers(2)
            .disable_signals()
            .shutdown_timeout(1)
            .listen(listener)
            .expect("listen")
            .run();
            tx.send(srv.handle()).expect("handle");
            let _ = srv.await;
        })
    });
    let handle = rx.recv().expect("server started");

    let done = Arc::new(AtomicBool::new(false));
    let (requests, failures) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let user = token("alice", "user");
    let url = format!("http://{addr}/verify");
    let clients: Vec<_> = (0..4)
        .map(|c| {
            let (done, requests, failures) = (done.clone(), requests.clone(), failures.clone());
            let (user, url) = (user.clone(), url.clone());
            std::thread::spawn(move || {
                block_on(async move {
                    let client = reqwest::Client::new();
                    // (uri, token, expected status, expected X-User-Id)
                    let probes = [
                        ("/api/v1/things", Some(user.as_str()), 200, Some("alice")),
                        ("/api/v1/things", None, 401, None),
                        ("/api/v1/admin/x", Some(user.as_str()), 403, None),
                    ];
                    let mut i = c;
                    // Bounded: stops when the reloads are done, or after 100,000 requests.
                    while !done.load(Ordering::Acquire)
                        && requests.load(Ordering::Relaxed) < 100_000
                    {
                        let (uri, token, want, user_id) = probes[i % probes.len()];
                        i += 1;
                        let mut req = client
                            .get(&url)
                            .header("X-Forwarded-Method", "GET")
                            .header("X-Forwarded-Uri", uri);
                        if let Some(t) = token {
                            req = req.header("Authorization", format!("Bearer {t}"));
                        }
                        requests.fetch_add(1, Ordering::Relaxed);
                        let right = match req.send().await {
                            Ok(res) => {
                                res.status().as_u16() == want
                                    && res.headers().get("x-user-id").and_then(|v| v.to_str().ok())
                                        == user_id
                            }
                            Err(_) => false,
                        };
                        if !right {
                            failures.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                })
            })
        })
        .collect();

    // Let the load start, then reload 100 times.
    eventually_blocking("the load to start", Duration::from_secs(30), || {
        requests.load(Ordering::Relaxed) >= 200
    });
    let started = Instant::now();
    for i in 0..100 {
        file.write(if i % 2 == 0 { &config_b } else { &config_a });
        reload(&state, &file.path, &env).expect("valid config");
        // Spread the reloads over the load rather than bunching them.
        let target = requests.load(Ordering::Relaxed) + 20;
        while requests.load(Ordering::Relaxed) < target {
            std::thread::yield_now();
        }
    }
    let elapsed = started.elapsed();
    done.store(true, Ordering::Release);
    for c in clients {
        c.join().expect("client thread");
    }
    drop(handle.stop(true));
    server.join().expect("server thread");

    let (n, failed) = (
        requests.load(Ordering::Relaxed),
        failures.load(Ordering::Relaxed),
    );
    println!(
        "reload under load: 100 reloads in {elapsed:?}, {n} requests from 4 loopback clients, {failed} failed or wrong"
    );
    assert_eq!(reloads(&state, "success"), 100);
    assert_eq!(failed, 0);
}

/// Runs `f` on a fresh single-thread runtime (for plain threads and `#[test]`s).
fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
        .block_on(f)
}

fn get(url: &str) -> Option<(u16, String)> {
    block_on(async {
        let res = reqwest::Client::new()
            .get(url)
            .header("X-Forwarded-Method", "GET")
            .header("X-Forwarded-Uri", "/api/x")
            .send()
            .await
            .ok()?;
        Some((res.status().as_u16(), res.text().await.ok()?))
    })
}

#[test]
fn the_binary_reloads_on_sighup_and_refuses_a_bad_file() {
    let port = TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port();
    let file = ConfigFile::new(&format!("listen: 127.0.0.1:{port}\n{}", config("any", "")));
    let child = Command::new(env!("CARGO_BIN_EXE_auth-sidecar"))
        .args(["serve", "--config"])
        .arg(&file.path)
        .env("HS_SECRET", env("HS_SECRET").expect("secret"))
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start the sidecar");
    // The real binary: SIGHUP reloads; a bad file is refused and counted; the old config answers.
    let sidecar = Proc::adopt("auth-sidecar", child);
    let base = format!("http://127.0.0.1:{port}");
    let metric = |result: &str| {
        get(&format!("{base}/metrics")).is_some_and(|(_, text)| {
            text.contains(&format!(
                "auth_sidecar_config_reloads_total{{result=\"{result}\"}} 1"
            ))
        })
    };
    eventually_blocking("the sidecar to serve", Duration::from_secs(15), || {
        get(&format!("{base}/readyz")).is_some_and(|(s, _)| s == 200)
    });

    // The shell's builtin `kill`: no procps needed.
    let status = Command::new("sh")
        .args([
            "-c",
            &format!("kill -HUP {}", sidecar.pid().expect("running")),
        ])
        .status()
        .expect("kill -HUP");
    assert!(status.success());
    eventually_blocking(
        "a reload counted after SIGHUP",
        Duration::from_secs(15),
        || metric("success"),
    );

    file.write(&format!(
        "listen: 127.0.0.1:{port}\nrules: []\nissuers: nope\n"
    ));
    eventually_blocking(
        "the bad file to be refused",
        Duration::from_secs(15),
        || metric("failure"),
    );
    let (status, _) = get(&format!("{base}/verify")).expect("still serving");
    assert_eq!(status, 401, "the last good config answers");
    assert!(Path::new(&file.path).exists());
}
