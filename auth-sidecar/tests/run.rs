//! `auth_sidecar::run` in-process, on port 0, over real HTTP: a decision, a hot reload
//! after rewriting the file, a clean stop when the shutdown future resolves, and a config
//! watcher that dies being reported by `/readyz` and restarted.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use crate::support::{claims, hs};
use auth_sidecar::app::{ConfigSource, Serve, run_state};
use auth_sidecar::http::AppState;
use test_support::eventually;
use tokio::sync::oneshot;

fn config(api_action: &str) -> String {
    format!(
        r#"
issuers:
  - issuer: https://idp.test
    audiences: [omni2]
    keys: [{{kid: hs, alg: HS256, secret_file: hs.key}}]
rules:
  - name: api
    path_prefix: /api
    {api_action}
"#
    )
}

const AUTHENTICATED: &str = "action: authenticated";
const ADMIN_ONLY: &str = "action: roles\n    roles: [admin]";

struct Sidecar {
    _dir: tempfile::TempDir,
    path: PathBuf,
    base: String,
    state: Arc<AppState>,
    stop: Option<oneshot::Sender<()>>,
    done: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

impl Sidecar {
    /// Writes the config and its key file, then serves them through `run_state` (what
    /// `run` does after building the state) on a port-0 listener.
    fn start(api_action: &str) -> Sidecar {
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::write(dir.path().join("hs.key"), hs().public).expect("key file");
        let path = dir.path().join("sidecar.yaml");
        std::fs::write(&path, config(api_action)).expect("config");
        let serve = Serve::load(ConfigSource::File(path.clone())).expect("valid config");
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let base = format!("http://{}", listener.local_addr().expect("addr"));
        let state = Arc::new(AppState::new(serve.rt));
        let (stop, stopped) = oneshot::channel();
        let done = actix_web::rt::spawn(run_state(
            state.clone(),
            listener,
            None,
            serve.source,
            1,
            async {
                let _ = stopped.await;
            },
        ));
        Sidecar {
            _dir: dir,
            path,
            base,
            state,
            stop: Some(stop),
            done: Some(done),
        }
    }

    fn dir(&self) -> &Path {
        self.path.parent().expect("config dir")
    }

    /// `GET /api/x` as Traefik asks it; the status, or None when nothing answers.
    async fn verify(&self, token: Option<&str>) -> Option<(u16, Option<String>)> {
        let mut req = client()
            .get(format!("{}/verify", self.base))
            .header("X-Forwarded-Method", "GET")
            .header("X-Forwarded-Uri", "/api/x");
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let res = req.send().await.ok()?;
        let user = res
            .headers()
            .get("x-user-id")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        Some((res.status().as_u16(), user))
    }

    async fn readyz(&self) -> Option<(u16, serde_json::Value)> {
        let res = client()
            .get(format!("{}/readyz", self.base))
            .send()
            .await
            .ok()?;
        let status = res.status().as_u16();
        Some((status, res.json().await.ok()?))
    }

    /// Resolves the shutdown future and waits for `run` to return.
    async fn stop(mut self) -> anyhow::Result<()> {
        let _ = self.stop.take().expect("running").send(());
        let done = self.done.take().expect("running");
        tokio::time::timeout(Duration::from_secs(30), done)
            .await
            .expect("run returns after shutdown")
            .expect("run did not panic")
    }
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .pool_max_idle_per_host(0)
        .build()
        .expect("client")
}

fn user_token() -> String {
    hs().mint(&claims("alice", "user"))
}

#[actix_web::test]
async fn a_decision_over_real_http() {
    let sidecar = Sidecar::start(AUTHENTICATED);
    let token = user_token();
    assert_eq!(
        sidecar.verify(Some(&token)).await,
        Some((200, Some("alice".to_owned())))
    );
    assert_eq!(sidecar.verify(None).await, Some((401, None)));
    sidecar.stop().await.expect("clean stop");
}

#[actix_web::test]
async fn rewriting_the_file_reloads_it() {
    let sidecar = Sidecar::start(AUTHENTICATED);
    let token = user_token();
    assert_eq!(sidecar.verify(Some(&token)).await.map(|a| a.0), Some(200));
    std::fs::write(&sidecar.path, config(ADMIN_ONLY)).expect("rewrite");
    eventually(
        "the rewritten config to take effect",
        Duration::from_secs(20),
        || async { sidecar.verify(Some(&token)).await.map(|a| a.0) == Some(403) },
    )
    .await;
    sidecar.stop().await.expect("clean stop");
}

#[actix_web::test]
async fn resolving_the_shutdown_future_stops_cleanly() {
    let sidecar = Sidecar::start(AUTHENTICATED);
    let base = sidecar.base.clone();
    assert_eq!(sidecar.verify(None).await.map(|a| a.0), Some(401));
    sidecar.stop().await.expect("run returns Ok");
    // The listener is closed: nothing answers any more.
    let after = client().get(format!("{base}/healthz")).send().await;
    assert!(after.is_err(), "still answering after shutdown: {after:?}");
}

#[actix_web::test]
async fn a_dead_config_watcher_fails_readiness_and_is_restarted() {
    let sidecar = Sidecar::start(AUTHENTICATED);
    assert_eq!(sidecar.readyz().await.map(|r| r.0), Some(200));

    // The watcher panics on its next wake-up; touch the directory until it has woken.
    sidecar
        .state
        .test_hooks
        .panic_watcher
        .store(true, Ordering::SeqCst);
    let mut touches = 0;
    eventually(
        "/readyz to report the dead watcher",
        Duration::from_secs(20),
        || {
            touches += 1;
            std::fs::write(sidecar.dir().join("touch"), touches.to_string()).expect("touch");
            async {
                match sidecar.readyz().await {
                    Some((503, body)) => body["not_ready"]
                        .as_array()
                        .is_some_and(|n| n.iter().any(|e| e["task"] == "config_watcher")),
                    _ => false,
                }
            }
        },
    )
    .await;

    // Restarted after the first delay: ready again, and reloads work again.
    eventually(
        "the watcher to be restarted",
        Duration::from_secs(20),
        || async { sidecar.readyz().await.map(|r| r.0) == Some(200) },
    )
    .await;
    let token = user_token();
    eventually(
        "the restarted watcher to reload",
        Duration::from_secs(20),
        || {
            std::fs::write(&sidecar.path, config(ADMIN_ONLY)).expect("rewrite");
            async { sidecar.verify(Some(&token)).await.map(|a| a.0) == Some(403) }
        },
    )
    .await;
    sidecar.stop().await.expect("clean stop");
}

#[actix_web::test]
async fn a_watcher_that_keeps_dying_ends_run_with_an_error() {
    let mut sidecar = Sidecar::start(AUTHENTICATED);
    let done = sidecar.done.take().expect("running");
    // Re-arm the hook and wake the watcher until its restarts are used up (about 16 s of
    // restart delays in all); `run` then stops serving and fails.
    let mut touches = 0;
    eventually(
        "run to end with a dead watcher",
        Duration::from_secs(90),
        || {
            touches += 1;
            sidecar
                .state
                .test_hooks
                .panic_watcher
                .store(true, Ordering::SeqCst);
            std::fs::write(sidecar.dir().join("touch"), touches.to_string()).expect("touch");
            let finished = done.is_finished();
            async move { finished }
        },
    )
    .await;
    let error = done
        .await
        .expect("run did not panic")
        .expect_err("run fails");
    assert!(
        error.to_string().contains("config watcher died"),
        "{error:#}"
    );
}
