//! The issue 5 matrix: per gateway (nginx, Caddy, Envoy), the release auth-sidecar with the
//! shipped config, the release omni2 with the shipped config on a unix socket only the
//! gateway is pointed at, and the shipped Python MCP example server. Every case is asserted
//! through the gateway; the results are printed as a table per gateway.

use std::time::Duration;

use e2e::gateway::{Gateway, Kind};
use e2e::http::{Request, Response, Target, WsOutcome, send, websocket};
use e2e::process::eventually;
use e2e::stack::{
    McpServer, Omni2, Prometheus, Sidecar, holds_sockets, promtool_check_metrics, tcp_listeners_of,
};
use serde_json::json;

/// `Err` from a test case with a formatted message.
macro_rules! ensure {
    ($cond:expr, $($msg:tt)+) => {
        if !$cond {
            return Err(format!($($msg)+));
        }
    };
}

/// Case results for one gateway, printed as a table at the end.
struct Matrix {
    gateway: &'static str,
    rows: Vec<(&'static str, Result<(), String>)>,
}

impl Matrix {
    fn record(&mut self, case: &'static str, result: Result<(), String>) {
        self.rows.push((case, result));
    }

    fn finish(self, logs: String) {
        let mut table = format!("\n{} matrix:\n", self.gateway);
        for (case, result) in &self.rows {
            let mark = if result.is_ok() { "pass" } else { "FAIL" };
            table.push_str(&format!("  {mark}  {case}\n"));
        }
        println!("{table}");
        let failures: Vec<String> = self
            .rows
            .iter()
            .filter_map(|(case, r)| r.as_ref().err().map(|e| format!("{case}: {e}")))
            .collect();
        assert!(
            failures.is_empty(),
            "{table}\nfailures:\n  {}\n{logs}",
            failures.join("\n  ")
        );
    }
}

fn status(r: &Response, want: u16, what: &str) -> Result<(), String> {
    ensure!(
        r.status == want,
        "{what}: got {} (want {want}), body {}",
        r.status,
        r.text()
    );
    Ok(())
}

/// Removes ANSI colour sequences from a log.
fn plain(log: &str) -> String {
    let mut out = String::with_capacity(log.len());
    let mut chars = log.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Denied with `want`; where the gateway relays deny bodies, with `reason` too.
fn denied(kind: Kind, r: &Response, want: u16, reason: &str, what: &str) -> Result<(), String> {
    status(r, want, what)?;
    if kind.relays_deny_body() {
        ensure!(
            r.json()["error"] == reason,
            "{what}: deny reason {} (want {reason})",
            r.text()
        );
    }
    Ok(())
}

async fn omni2_matrix(kind: Kind) {
    assert!(
        kind.installed(),
        "{} is not installed; .ci/run installs it",
        kind.name()
    );
    let dir = tempfile::tempdir().expect("temp dir");
    let mcp = McpServer::start(dir.path()).await;
    let mcp_url = mcp.url();
    // Traefik proxies to TCP only: omni2 on loopback there (the netns tests isolate it).
    let omni2_start = async {
        if kind == Kind::Traefik {
            Omni2::start_tcp(dir.path(), &mcp_url).await
        } else {
            Omni2::start(dir.path(), &mcp_url).await
        }
    };
    let (mut sidecar, omni2) = tokio::join!(Sidecar::start(dir.path()), omni2_start);
    let identity = sidecar.identity_headers();
    let upstream = omni2.upstream();
    let gw = Gateway::start(kind, dir.path(), sidecar.addr, &upstream, &identity).await;
    let to = gw.target();
    let user = sidecar.token("alice", "user");
    let admin = sidecar.token("root", "admin");
    let servers = || Request::get("/api/v1/mcp/servers");

    // omni2 probes the MCP server in the background; wait until it is healthy with tools.
    eventually(
        "example MCP server healthy",
        Duration::from_secs(30),
        || {
            let (to, req) = (to.clone(), servers().bearer(&user));
            async move {
                let body = send(&to, &req).await?.json();
                let s = &body["servers"][0];
                (s["state"] == "healthy" && s["tool_count"].as_u64() > Some(0))
                    .then_some(())
                    .ok_or(format!("{body}"))
            }
        },
    )
    .await;

    let mut m = Matrix {
        gateway: kind.name(),
        rows: Vec::new(),
    };

    m.record(
        "/health without a token: 200",
        async {
            let r = send(&to, &Request::get("/health")).await?;
            status(&r, 200, "/health")?;
            ensure!(r.json()["status"] == "ok", "body {}", r.text());
            Ok(())
        }
        .await,
    );

    m.record(
        "/api/v1/mcp/servers without a token: 401 + WWW-Authenticate",
        async {
            let r = send(&to, &servers()).await?;
            status(&r, 401, "no token")?;
            let challenge = r.header("www-authenticate").unwrap_or("");
            ensure!(
                challenge.starts_with("Bearer realm=\"omni2\""),
                "challenge {challenge:?}"
            );
            Ok(())
        }
        .await,
    );

    m.record(
        "valid token: 200 + server list (omni2 verified the sidecar's signature)",
        async {
            let r = send(&to, &servers().bearer(&user)).await?;
            status(&r, 200, "valid token")?;
            let body = r.json();
            ensure!(body["servers"][0]["name"] == "example", "servers {body}");
            Ok(())
        }
        .await,
    );

    m.record(
        "forged X-User-Id/X-User-Role/X_User_Id never reach omni2 as identity",
        async {
            // The signature covers id, role and roles: a 200 means omni2 got exactly the
            // sidecar's values. The WebSocket log shows which id omni2 accepted.
            let forged = servers()
                .bearer(&user)
                .header("X-User-Id", "admin")
                .header("X-User-Role", "admin")
                .header("X_User_Id", "admin")
                .header("X_User_Role", "admin");
            status(&send(&to, &forged).await?, 200, "forged + token")?;
            let sub = format!("ws-{}", kind.name());
            let token = sidecar.token(&sub, "user");
            let outcome = websocket(
                gw.addr,
                &format!("/ws/mcp-status?access_token={token}"),
                &[
                    ("X-User-Id", "admin"),
                    ("X_User_Id", "admin"),
                    ("X-User-Role", "admin"),
                ],
            )
            .await?;
            ensure!(
                matches!(outcome, WsOutcome::Upgraded { .. }),
                "forged WebSocket not upgraded"
            );
            let log = eventually("omni2 logs the WebSocket", Duration::from_secs(10), || {
                let log = plain(&omni2.log());
                async move {
                    log.contains("Status WebSocket opened")
                        .then_some(log)
                        .ok_or("no 'Status WebSocket opened' yet".to_owned())
                }
            })
            .await;
            ensure!(
                log.contains(&format!("user={sub}")),
                "omni2 did not log user={sub}"
            );
            ensure!(
                !log.contains("user=admin"),
                "omni2 accepted a forged id:\n{log}"
            );
            let forged_only = servers()
                .header("X-User-Id", "admin")
                .header("X-User-Role", "admin")
                .header("X_User_Id", "admin");
            status(
                &send(&to, &forged_only).await?,
                401,
                "forged without a token",
            )
        }
        .await,
    );

    m.record(
        "wrong role on an admin route: 403",
        async {
            let r = send(&to, &Request::get("/api/v1/admin/users").bearer(&user)).await?;
            denied(kind, &r, 403, "role_denied", "/api/v1/admin as user")?;
            let mut clear = Request::get("/api/v1/cache").bearer(&user);
            clear.method = http::Method::DELETE;
            denied(
                kind,
                &send(&to, &clear).await?,
                403,
                "role_denied",
                "DELETE /api/v1/cache as user",
            )
        }
        .await,
    );

    m.record(
        "expired token: 401",
        async {
            let r = send(&to, &servers().bearer(&sidecar.expired_token("alice"))).await?;
            denied(kind, &r, 401, "expired", "expired")
        }
        .await,
    );

    m.record(
        "client X-Forwarded-For: 10.0.0.1 changes no decision",
        async {
            let xff = |r: Request| r.header("X-Forwarded-For", "10.0.0.1");
            status(&send(&to, &xff(servers())).await?, 401, "no token + XFF")?;
            status(
                &send(&to, &xff(servers().bearer(&user))).await?,
                200,
                "token + XFF",
            )?;
            let admin_route = xff(Request::get("/api/v1/admin/users").bearer(&user));
            status(&send(&to, &admin_route).await?, 403, "admin route + XFF")
        }
        .await,
    );

    m.record(
        "/api/v1/public/../admin and %2e%2e forms: denied as admin",
        async {
            for path in [
                "/api/v1/public/../admin",
                "/api/v1/public/%2e%2e/admin",
                "/api/v1/public/%2E%2E/admin",
                "/api/v1/public/.%2e/admin",
            ] {
                let r = send(&to, &Request::get(path).bearer(&user)).await?;
                denied(kind, &r, 403, "role_denied", path)?;
                status(&send(&to, &Request::get(path)).await?, 401, path)?;
            }
            Ok(())
        }
        .await,
    );

    m.record(
        "WebSocket ?access_token=: 101 + snapshot",
        async {
            let target = format!("/ws/mcp-status?access_token={user}");
            match websocket(gw.addr, &target, &[]).await? {
                WsOutcome::Upgraded { first_message } => {
                    ensure!(
                        first_message["type"] == "snapshot",
                        "first message {first_message}"
                    );
                    ensure!(
                        first_message["servers"].is_array(),
                        "snapshot {first_message}"
                    );
                    Ok(())
                }
                WsOutcome::Refused(s) => Err(format!("refused with {s}")),
            }
        }
        .await,
    );

    m.record(
        "WebSocket without a token: 401, no upgrade",
        async {
            match websocket(gw.addr, "/ws/mcp-status", &[]).await? {
                WsOutcome::Refused(s) if s == 401 => Ok(()),
                WsOutcome::Refused(s) => Err(format!("refused with {s}, want 401")),
                WsOutcome::Upgraded { .. } => Err("upgraded without a token".into()),
            }
        }
        .await,
    );

    m.record(
        "tool call: MCP result, second call cached: true",
        async {
            let call = |tool: &str, args| {
                Request::post_json(
                    &format!("/api/v1/mcp/servers/example/tools/{tool}/call"),
                    &args,
                )
                .bearer(&user)
            };
            let r = send(&to, &call("add", json!({"a": 2, "b": 3}))).await?;
            status(&r, 200, "add")?;
            ensure!(r.text().contains('5'), "add(2, 3): {}", r.text());
            let first = send(&to, &call("counter", json!({}))).await?;
            status(&first, 200, "counter")?;
            let second = send(&to, &call("counter", json!({}))).await?;
            status(&second, 200, "counter again")?;
            let (first, second) = (first.json(), second.json());
            ensure!(first["cached"] == false, "first call {first}");
            ensure!(second["cached"] == true, "second call {second}");
            let strip = |mut v: serde_json::Value| {
                v.as_object_mut().map(|o| o.remove("cached"));
                v
            };
            ensure!(
                strip(first.clone()) == strip(second.clone()),
                "cached result differs: {first} vs {second}"
            );
            Ok(())
        }
        .await,
    );

    m.record(
        "isolation: omni2 holds no TCP listener; forged identity on its socket: 401",
        async {
            let pid = omni2.pid();
            ensure!(
                holds_sockets(pid),
                "cannot see omni2's sockets in /proc/{pid}/fd"
            );
            let tcp = tcp_listeners_of(pid);
            // Behind Traefik omni2 listens on loopback TCP; `netns` isolates it for real.
            let want_tcp = usize::from(kind == Kind::Traefik);
            ensure!(
                tcp.len() == want_tcp,
                "omni2 TCP listeners (inodes {tcp:?}), want {want_tcp}"
            );
            // The probe can see TCP listeners: the sidecar has two (verify and admin).
            let sidecar_pid = sidecar.pid().ok_or("sidecar not running")?;
            let sidecar_tcp = tcp_listeners_of(sidecar_pid);
            ensure!(
                sidecar_tcp.len() >= 2,
                "probe sees no sidecar listeners: {sidecar_tcp:?}"
            );
            let direct = omni2.target();
            let forged = servers()
                .header("X-User-Id", "admin")
                .header("X-User-Role", "admin")
                .header("X-User-Roles", "admin")
                .header("X-Auth-Expires", "4102444800");
            status(
                &send(&direct, &forged).await?,
                401,
                "unsigned forged identity",
            )?;
            let signed_badly = forged.header(
                "X-Auth-Signature",
                "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
            );
            status(
                &send(&direct, &signed_badly).await?,
                401,
                "badly signed identity",
            )
        }
        .await,
    );

    m.record(
        "metrics: promtool clean; Prometheus up == 1 for every job (Traefik: its entry point too)",
        async {
            let sidecar_metrics =
                send(&Target::Tcp(sidecar.admin), &Request::get("/metrics")).await?;
            status(&sidecar_metrics, 200, "sidecar /metrics")?;
            promtool_check_metrics(&sidecar_metrics.text()).map_err(|e| format!("sidecar: {e}"))?;
            let omni2_metrics = send(&omni2.target(), &Request::get("/metrics")).await?;
            status(&omni2_metrics, 200, "omni2 /metrics")?;
            promtool_check_metrics(&omni2_metrics.text()).map_err(|e| format!("omni2: {e}"))?;
            // Behind Traefik, as compose does: Traefik's metrics entry point, the sidecar's
            // admin port and omni2, all directly. Elsewhere omni2 has no TCP port and is
            // scraped through the gateway with an admin token (the sidecar's `metrics` rule).
            let mut jobs = vec![("auth-sidecar", sidecar.admin, None)];
            match (&gw.traefik_metrics, omni2.target()) {
                (Some(traefik_metrics), Target::Tcp(omni2_addr)) => {
                    jobs.push(("omni2", omni2_addr, None));
                    jobs.push(("traefik", *traefik_metrics, None));
                }
                _ => jobs.push(("omni2", gw.addr, Some(admin.as_str()))),
            }
            let prom = Prometheus::start(dir.path(), &jobs).await;
            let want: Vec<&str> = jobs.iter().map(|j| j.0).collect();
            eventually(
                "Prometheus up == 1 for every job",
                Duration::from_secs(20),
                || {
                    let (prom, want) = (&prom, &want);
                    async move {
                        let up = prom.up().await?;
                        let is_up = |job: &&str| up.iter().any(|(j, v)| j == job && v == "1");
                        want.iter()
                            .all(is_up)
                            .then_some(())
                            .ok_or(format!("up = {up:?}"))
                    }
                },
            )
            .await;
            Ok(())
        }
        .await,
    );

    m.record(
        "sidecar stopped: 5xx or 403, never 200",
        async {
            sidecar.stop();
            // Traefik's /health router runs no `auth` (public), so it must stay 200 there.
            if kind == Kind::Traefik {
                status(&send(&to, &Request::get("/health")).await?, 200, "public")?;
            }
            let guarded = if kind == Kind::Traefik {
                vec![servers().bearer(&user)]
            } else {
                vec![servers().bearer(&user), Request::get("/health")]
            };
            for req in guarded {
                let r = send(&to, &req).await?;
                let code = r.status.as_u16();
                println!("{}: sidecar stopped, {} -> {code}", kind.name(), req.target);
                ensure!(
                    code != 200 && (code >= 500 || code == 403),
                    "{}: got {code}",
                    req.target
                );
            }
            Ok(())
        }
        .await,
    );

    let logs = format!(
        "--- gateway:\n{}\n--- sidecar:\n{}\n--- omni2:\n{}\n--- mcp:\n{}",
        gw.log(),
        sidecar.log(),
        omni2.log(),
        mcp.log()
    );
    m.finish(logs);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traefik_in_front_of_the_real_stack() {
    omni2_matrix(Kind::Traefik).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nginx_in_front_of_the_real_stack() {
    omni2_matrix(Kind::Nginx).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn caddy_in_front_of_the_real_stack() {
    omni2_matrix(Kind::Caddy).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envoy_in_front_of_the_real_stack() {
    omni2_matrix(Kind::Envoy).await;
}
