//! Real Traefik on the shipped config: the one transformation the tests apply (asserted), and
//! the Traefik-only behaviours, each through the release sidecar and the echo upstream:
//! CORS before auth, `internal-only` and `trustedIPs` against the TCP peer, what never reaches
//! the backend (token, aliases, forged identity on the public route, encoded separators), rate
//! limits, header floods, a stopped or hung sidecar, and the access log.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use e2e::http::{
    EchoUpstream, Request, Response, Target, echoed, send, send_from, websocket_close,
};
use e2e::process::{eventually, repo_root};
use e2e::stack::{McpServer, Omni2, Sidecar};
use e2e::traefik::{Traefik, Wiring, changed_paths, shipped, transform};
use nix::sys::signal::Signal;
use serde_json::json;

/// A loopback peer that is not 127.0.0.1, so outside `internal-only`'s 127.0.0.1/32.
const OTHER_PEER: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));
const ALLOWED_ORIGIN: &str = "https://omni2.example.com";

struct Stack {
    _dir: tempfile::TempDir,
    sidecar: Sidecar,
    _echo: EchoUpstream,
    traefik: Traefik,
}

impl Stack {
    async fn start() -> Stack {
        Stack::start_with(None).await
    }

    /// With a sidecar config other than the shipped one.
    async fn start_with(sidecar_config: Option<&str>) -> Stack {
        let dir = tempfile::tempdir().expect("temp dir");
        let sidecar = match sidecar_config {
            None => Sidecar::start(dir.path()).await,
            Some(text) => {
                let path = dir.path().join("auth-sidecar.yaml");
                std::fs::write(&path, text).expect("write sidecar config");
                Sidecar::start_with(dir.path(), &path).await
            }
        };
        let echo = EchoUpstream::start().await;
        let traefik = Traefik::start(dir.path(), sidecar.addr, echo.addr).await;
        Stack {
            _dir: dir,
            sidecar,
            _echo: echo,
            traefik,
        }
    }

    async fn send(&self, req: &Request) -> Response {
        send(&self.traefik.target(), req)
            .await
            .unwrap_or_else(|e| panic!("{} {}: {e}\n{}", req.method, req.target, self.logs()))
    }

    async fn send_from(&self, source: IpAddr, req: &Request) -> Response {
        send_from(source, self.traefik.addr(), req)
            .await
            .unwrap_or_else(|e| panic!("{} {}: {e}\n{}", req.method, req.target, self.logs()))
    }

    /// Sum of `auth_sidecar_decisions_total` over all labels: one per `/verify` call.
    async fn sidecar_decisions(&self) -> f64 {
        let r = send(&Target::Tcp(self.sidecar.admin), &Request::get("/metrics"))
            .await
            .expect("sidecar /metrics");
        r.text()
            .lines()
            .filter(|l| l.starts_with("auth_sidecar_decisions_total"))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }

    fn logs(&self) -> String {
        format!(
            "--- traefik:\n{}\n--- sidecar:\n{}",
            self.traefik.log(),
            self.sidecar.log()
        )
    }
}

fn method(mut req: Request, m: http::Method) -> Request {
    req.method = m;
    req
}

#[test]
fn traefik_transform_changes_only_the_wiring() {
    let (st, dynamic) = shipped();
    let addr = |port: u16| SocketAddr::from(([127, 0, 0, 1], port));
    let w = Wiring {
        web: addr(1001),
        websecure: addr(1002),
        metrics: addr(1003),
        api: addr(1004),
        sidecar: addr(1005),
        backend: addr(1006),
        dynamic_dir: PathBuf::from("/tmp/e2e-dynamic"),
    };
    let (new_st, new_dynamic) = transform(&st, &dynamic, &w);
    assert_eq!(
        changed_paths(&st, &new_st),
        [
            "/entryPoints/metrics/address",
            "/entryPoints/traefik/address",
            "/entryPoints/web/address",
            "/entryPoints/websecure/address",
            "/providers/docker",
            "/providers/file/directory",
        ]
    );
    assert_eq!(new_st["entryPoints"]["web"]["address"], "127.0.0.1:1001");
    assert_eq!(new_st["providers"]["file"]["directory"], "/tmp/e2e-dynamic");
    assert!(new_st["providers"]["docker"].is_null());
    assert_eq!(new_dynamic.len(), dynamic.len());
    for ((name, before), (new_name, after)) in dynamic.iter().zip(&new_dynamic) {
        assert_eq!(name, new_name);
        let changed = changed_paths(before, after);
        if name == "omni2.yml" {
            assert_eq!(
                changed,
                [
                    "/http/middlewares/auth/forwardAuth/address",
                    "/http/services/omni2/loadBalancer/servers/0/url",
                ]
            );
            assert_eq!(
                after["http"]["middlewares"]["auth"]["forwardAuth"]["address"],
                json!("http://127.0.0.1:1005/verify")
            );
            assert_eq!(
                after["http"]["services"]["omni2"]["loadBalancer"]["servers"][0]["url"],
                json!("http://127.0.0.1:1006")
            );
        }
        if name == "sidecar-metadata.yml" {
            assert_eq!(
                changed,
                ["/http/services/sidecar-metadata/loadBalancer/servers/0/url"]
            );
            assert_eq!(
                after["http"]["services"]["sidecar-metadata"]["loadBalancer"]["servers"][0]["url"],
                json!("http://127.0.0.1:1005")
            );
        }
    }
    // changed_paths itself sees a change anywhere (so the checks above can fail).
    let mut touched = new_dynamic[0].1.clone();
    touched["http"]["routers"]["omni2-api"]["priority"] = json!(1);
    assert!(
        changed_paths(&new_dynamic[0].1, &touched)
            .contains(&"/http/routers/omni2-api/priority".to_owned())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traefik_cors_preflight_is_answered_before_auth() {
    let s = Stack::start().await;
    let preflight = |origin: &str| {
        method(Request::get("/api/v1/mcp/servers"), http::Method::OPTIONS)
            .header("Origin", origin)
            .header("Access-Control-Request-Method", "GET")
            .header("Access-Control-Request-Headers", "authorization")
    };
    let before = s.sidecar_decisions().await;
    let r = s.send(&preflight(ALLOWED_ORIGIN)).await;
    assert_eq!(r.status, 200, "preflight: {}\n{}", r.text(), s.logs());
    assert_eq!(
        r.header("access-control-allow-origin"),
        Some(ALLOWED_ORIGIN)
    );
    let methods = r.header("access-control-allow-methods").unwrap_or("");
    assert!(methods.contains("DELETE"), "allow-methods {methods:?}");
    // Item 7: caches must key preflight answers on Origin.
    let vary = r.header("vary").unwrap_or("");
    assert!(vary.contains("Origin"), "preflight Vary {vary:?}");
    let disallowed = s.send(&preflight("https://evil.example.com")).await;
    assert_eq!(
        disallowed.header("access-control-allow-origin"),
        None,
        "disallowed origin got ACAO"
    );
    // No sidecar call for either preflight (counted by the sidecar itself).
    assert_eq!(
        s.sidecar_decisions().await,
        before,
        "a preflight called the sidecar"
    );

    // The sidecar's 401 and 403 carry ACAO for the allowed origin only, so a browser can
    // read the error.
    let r = s
        .send(&Request::get("/api/v1/mcp/servers").header("Origin", ALLOWED_ORIGIN))
        .await;
    assert_eq!(r.status, 401);
    assert_eq!(
        r.header("access-control-allow-origin"),
        Some(ALLOWED_ORIGIN)
    );
    let user = s.sidecar.token("alice", "user");
    let r = s
        .send(
            &Request::get("/api/v1/admin/users")
                .bearer(&user)
                .header("Origin", ALLOWED_ORIGIN),
        )
        .await;
    assert_eq!(r.status, 403);
    assert_eq!(r.json()["error"], "role_denied");
    assert_eq!(
        r.header("access-control-allow-origin"),
        Some(ALLOWED_ORIGIN)
    );
    let r = s
        .send(&Request::get("/api/v1/mcp/servers").header("Origin", "https://evil.example.com"))
        .await;
    assert_eq!(r.status, 401);
    assert_eq!(r.header("access-control-allow-origin"), None);
    assert!(
        s.sidecar_decisions().await >= before + 3.0,
        "denials were decided by the sidecar"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traefik_internal_only_and_trusted_ips_use_the_tcp_peer() {
    let s = Stack::start().await;
    let admin = s.sidecar.token("root", "admin");
    let clear = || method(Request::get("/api/v1/cache"), http::Method::DELETE).bearer(&admin);

    // Item 3: cache invalidation is guarded by internal-only, checked on the TCP peer.
    let inside = s.send(&clear()).await;
    assert_eq!(
        inside.status,
        200,
        "from 127.0.0.1: {}\n{}",
        inside.text(),
        s.logs()
    );
    for spoof in [None, Some("127.0.0.1"), Some("10.0.0.1")] {
        let mut req = clear();
        if let Some(ip) = spoof {
            req = req.header("X-Forwarded-For", ip).header("X-Real-Ip", ip);
        }
        let outside = s.send_from(OTHER_PEER, &req).await;
        assert_eq!(
            outside.status,
            403,
            "DELETE /api/v1/cache from 127.0.0.2 (spoofed {spoof:?}): {}",
            outside.text()
        );
    }

    // forwardedHeaders.trustedIPs: []: a client's X-Forwarded-For / X-Real-Ip are replaced
    // by the peer before the sidecar and the backend see them.
    let user = s.sidecar.token("alice", "user");
    let r = s
        .send_from(
            OTHER_PEER,
            &Request::get("/api/v1/mcp/servers")
                .bearer(&user)
                .header("X-Forwarded-For", "10.0.0.1")
                .header("X-Real-Ip", "10.0.0.1"),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let report = r.json();
    assert_eq!(echoed(&report, "X-Forwarded-For"), ["127.0.0.2"]);
    assert_eq!(echoed(&report, "X-Real-Ip"), ["127.0.0.2"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traefik_keeps_credentials_aliases_and_encoded_separators_from_the_backend() {
    let s = Stack::start().await;
    let user = s.sidecar.token("alice", "user");

    // Item 7: the bearer token is for the sidecar only.
    let r = s
        .send(&Request::get("/api/v1/mcp/servers").bearer(&user))
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(echoed(&r.json(), "Authorization"), Vec::<String>::new());
    assert_eq!(echoed(&r.json(), "X-User-Id"), ["alice"]);

    // Item 2: alias spellings of the identity headers never reach the backend.
    let r = s
        .send(
            &Request::get("/api/v1/mcp/servers")
                .bearer(&user)
                .header("X.User.Id", "root")
                .header("X-User.Id", "root")
                .header("X.Auth.Signature", "forged")
                .header("X_User_Role", "admin"),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let report = r.json();
    for alias in ["X.User.Id", "X-User.Id", "X.Auth.Signature", "X_User_Role"] {
        assert_eq!(
            echoed(&report, alias),
            Vec::<String>::new(),
            "{alias} reached the backend"
        );
    }

    // Item 7: forged identity on the public route (no forwardAuth there).
    let r = s
        .send(
            &Request::get("/health")
                .header("X-User-Id", "root")
                .header("X-User-Role", "admin")
                .header("X-Auth-Signature", "forged")
                .header("Authorization", "Bearer not-for-the-backend"),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let report = r.json();
    for name in [
        "X-User-Id",
        "X-User-Role",
        "X-Auth-Signature",
        "Authorization",
    ] {
        assert_eq!(
            echoed(&report, name),
            Vec::<String>::new(),
            "{name} on /health"
        );
    }

    // Item 1: encoded separators are refused at the edge (400), before any router.
    let before = s.sidecar_decisions().await;
    for path in [
        "/api/v1/public/..%2Fadmin/x",
        "/api/v1/public/..%2fadmin/x",
        "/api/v1/public/..%5Cadmin/x",
        "/api/v1/mcp/servers%00",
        "/api/v1/mcp/servers%3Bx",
        "/api/v1/mcp/servers%25",
    ] {
        let r = s.send(&Request::get(path).bearer(&user)).await;
        assert_eq!(r.status, 400, "{path}: {}", r.text());
    }
    assert_eq!(
        s.sidecar_decisions().await,
        before,
        "encoded paths reached the sidecar"
    );

    // No token in Traefik's logs (access log included), for a header or a query token.
    let _ = s
        .send(&Request::get(&format!(
            "/ws/mcp-status?access_token={user}"
        )))
        .await;
    // Access log lines (common log format, request path dropped) are there ...
    let log = eventually("the access log line", Duration::from_secs(10), || {
        let log = s.traefik.log();
        async move {
            log.lines()
                .any(|l| l.contains("\"GET - HTTP/1.1\"") && l.contains("omni2-ws@file"))
                .then_some(log.clone())
                .ok_or(format!(
                    "no access log line for the WebSocket route:\n{log}"
                ))
        }
    })
    .await;
    // ... and hold no part of the token.
    let signature = user.rsplit('.').next().expect("JWS signature");
    assert!(
        !log.contains(&user) && !log.contains(signature),
        "a token reached Traefik's log:\n{log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traefik_header_flood_is_answered_without_a_sidecar_error() {
    let s = Stack::start().await;
    let mut flood = Request::get("/api/v1/mcp/servers");
    for i in 0..1000 {
        flood = flood.header(&format!("X-Flood-{i}"), "x");
    }
    // Item 6: only authRequestHeaders reach the sidecar, which then answers 401 as usual.
    let r = s.send(&flood).await;
    assert_eq!(
        r.status,
        401,
        "flood without a token: {}\n{}",
        r.text(),
        s.logs()
    );
    let sidecar_log = s.sidecar.log();
    assert!(
        !sidecar_log.contains("ERROR"),
        "the sidecar logged an error:\n{sidecar_log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_header_flood_sent_straight_to_the_sidecar_is_refused_without_an_error_line() {
    // Defence in depth behind authRequestHeaders: actix-http refuses more than 96 headers
    // with 431 and logs each at ERROR unless the binary's filter silences its dispatcher.
    let dir = tempfile::tempdir().expect("temp dir");
    let sidecar = Sidecar::start(dir.path()).await;
    let mut flood = Request::get("/verify");
    for i in 0..200 {
        flood = flood.header(&format!("X-Flood-{i}"), "x");
    }
    let r = send(&Target::Tcp(sidecar.addr), &flood).await;
    // The connection may be closed before the answer is read; either way, never a 200.
    if let Ok(r) = &r {
        assert_eq!(r.status, 431, "flood straight to the sidecar: {}", r.text());
    }
    let fine = send(&Target::Tcp(sidecar.admin), &Request::get("/healthz"))
        .await
        .expect("the sidecar still answers");
    assert_eq!(fine.status, 200);
    let log = sidecar.log();
    assert!(
        !log.contains("ERROR"),
        "the flood wrote an ERROR line:\n{log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traefik_rate_limits_users_apart_and_anonymous_floods_at_the_edge() {
    let s = Stack::start().await;
    let (alice, bob) = (
        s.sidecar.token("alice", "user"),
        s.sidecar.token("bob", "user"),
    );
    let burst = |token: Option<String>, n: usize, forged: Option<&'static str>| {
        let target = s.traefik.target();
        async move {
            let sends = (0..n).map(|_| {
                let mut req = Request::get("/api/v1/mcp/servers");
                if let Some(t) = &token {
                    req = req.bearer(t);
                }
                if let Some(id) = forged {
                    req = req.header("X-User-Id", id);
                }
                let target = target.clone();
                async move { send(&target, &req).await.map(|r| r.status.as_u16()) }
            });
            futures_util::future::join_all(sends).await
        }
    };
    let count = |codes: &[Result<u16, String>], want: u16| {
        codes
            .iter()
            .filter(|c| c.as_ref().ok() == Some(&want))
            .count()
    };

    // Two users at once: alice floods (300 > burst 100) while claiming to be bob, bob sends
    // 20. Her X-User-Id is overwritten by forwardAuth before `ratelimit` keys on it, so she
    // drains only her own bucket and bob's requests all pass. (300 + 20 stay below the
    // edge limit's burst of 400 per IP.)
    let (alice_codes, bob_codes) = tokio::join!(
        burst(Some(alice.clone()), 300, Some("bob")),
        burst(Some(bob.clone()), 20, None)
    );
    assert!(
        count(&alice_codes, 429) > 0,
        "alice was never rate limited: {alice_codes:?}\n{}",
        s.logs()
    );
    assert!(count(&alice_codes, 200) > 0, "alice got no request through");
    assert_eq!(
        count(&bob_codes, 200),
        20,
        "bob shares a bucket with alice (or her X-User-Id): {bob_codes:?}"
    );

    // Item 7: anonymous floods are limited per IP before auth (edge-ratelimit).
    let mut anon_limited = false;
    for _ in 0..4 {
        let codes = burst(None, 300, None).await;
        if count(&codes, 429) > 0 {
            anon_limited = true;
            break;
        }
    }
    assert!(
        anon_limited,
        "an anonymous flood was never rate limited\n{}",
        s.logs()
    );
}

/// Traefik never answers 200 when the sidecar hangs or is gone. What it does answer, and how
/// long a hung sidecar holds a request, is printed (measured, not asserted).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traefik_sidecar_hung_or_stopped_never_allows() {
    let mut s = Stack::start().await;
    let user = s.sidecar.token("alice", "user");
    let req = Request::get("/api/v1/mcp/servers").bearer(&user);

    s.sidecar.signal(Signal::SIGSTOP);
    let started = Instant::now();
    let hung = tokio::time::timeout(Duration::from_secs(15), send(&s.traefik.target(), &req)).await;
    let held = started.elapsed();
    s.sidecar.signal(Signal::SIGCONT);
    match &hung {
        Ok(Ok(r)) => {
            println!("traefik: sidecar hung -> {} after {held:?}", r.status);
            assert_ne!(r.status, 200, "allowed with a hung sidecar");
        }
        Ok(Err(e)) => println!("traefik: sidecar hung -> no answer ({e}) after {held:?}"),
        Err(_) => {
            println!("traefik: sidecar hung -> still no answer after {held:?} (client gave up)")
        }
    }

    s.sidecar.stop();
    let started = Instant::now();
    let r = s.send(&req).await;
    println!(
        "traefik: sidecar stopped -> {} after {:?}",
        r.status,
        started.elapsed()
    );
    assert!(r.status.as_u16() >= 500, "sidecar stopped: {}", r.status);
    // The public route has no auth and stays up.
    assert_eq!(s.send(&Request::get("/health")).await.status, 200);
}

/// The reference `rules:` of auth-sidecar/README.md ("Configuration reference"), under the
/// test issuer.
fn readme_reference_config() -> String {
    let readme = std::fs::read_to_string(repo_root().join("auth-sidecar/README.md"))
        .expect("auth-sidecar/README.md");
    let rules: Vec<&str> = readme
        .lines()
        .skip_while(|l| !l.starts_with("rules:") || !l.contains("first match wins"))
        .take_while(|l| !l.starts_with("```"))
        .collect();
    assert!(
        rules.len() > 5,
        "no reference rules block in auth-sidecar/README.md"
    );
    let fixture = std::fs::read_to_string(repo_root().join("tests/fixtures/sidecar-cidr.yaml"))
        .expect("fixture");
    let head = &fixture[..fixture.find("\nrules:").expect("fixture rules") + 1];
    format!("{head}{}\n", rules.join("\n"))
}

/// Issue 10 item 5: the README's `admin` rule narrows by hosts and methods; another host or
/// method on /api/v1/admin must not fall through to the catch-all `api` rule.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traefik_readme_reference_rules_do_not_fall_through_to_api() {
    let s = Stack::start_with(Some(&readme_reference_config())).await;
    let user = s.sidecar.token("alice", "user");
    let r = s
        .send(&Request::get("/api/v1/mcp/servers").bearer(&user))
        .await;
    assert_eq!(r.status, 200, "the api rule: {}\n{}", r.text(), s.logs());
    for (host, m) in [
        ("evil.example.com", http::Method::GET),
        ("api.example.com", http::Method::DELETE),
        ("api.example.com", http::Method::PUT),
    ] {
        let req = method(Request::get("/api/v1/admin/x"), m.clone())
            .bearer(&user)
            .header("Host", host);
        let r = s.send(&req).await;
        assert_eq!(r.status, 403, "{m} /api/v1/admin/x on {host}: {}", r.text());
    }
}

/// The release omni2 (shipped config, on TCP: Traefik proxies only to TCP) with the Python
/// MCP example, behind real Traefik and the release sidecar.
async fn omni2_behind_traefik(dir: &std::path::Path) -> (McpServer, Sidecar, Omni2, Traefik) {
    let mcp = McpServer::start(dir).await;
    let mcp_url = mcp.url();
    let (sidecar, omni2) = tokio::join!(Sidecar::start(dir), Omni2::start_tcp(dir, &mcp_url));
    let Target::Tcp(backend) = omni2.target() else {
        panic!("omni2 on TCP")
    };
    let traefik = Traefik::start(dir, sidecar.addr, backend).await;
    (mcp, sidecar, omni2, traefik)
}

/// The live-status WebSocket through Traefik, to the release omni2: 101 with a query token,
/// and omni2's close code 1008 ("token expired") relayed when the token's `exp` passes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traefik_relays_the_websocket_expiry_close_code() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (_mcp, sidecar, omni2, traefik) = omni2_behind_traefik(dir.path()).await;
    let token = sidecar.token_expiring_in("short-lived", Duration::from_secs(3));
    let closed = websocket_close(
        traefik.addr(),
        &format!("/ws/mcp-status?access_token={token}"),
        Duration::from_secs(20),
    )
    .await;
    assert_eq!(
        closed,
        Ok((1008, "token expired".to_owned())),
        "\n--- traefik:\n{}\n--- omni2:\n{}",
        traefik.log(),
        omni2.log()
    );
}

/// A forwardAuth target denying with a `len`-byte body: far more than any sidecar answer,
/// to exercise the shipped `maxResponseBodySize` (the real sidecar never gets near it).
async fn oversized_deny(len: usize) -> (SocketAddr, tokio::task::JoinHandle<()>) {
    use http_body_util::Full;
    use hyper_util::rt::TokioIo;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let task = tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |_req| async move {
                    let body = bytes::Bytes::from(vec![b'x'; len]);
                    Ok::<_, std::convert::Infallible>(
                        http::Response::builder()
                            .status(401)
                            .body(Full::new(body))
                            .expect("static response"),
                    )
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (addr, task)
}

/// `maxResponseBodySize: 65536`: an auth answer over the limit never reaches the client
/// (Traefik answers an error of its own) and never allows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traefik_refuses_auth_answers_over_max_response_body_size() {
    let dir = tempfile::tempdir().expect("temp dir");
    let echo = EchoUpstream::start().await;
    let (auth, task) = oversized_deny(200_000).await;
    let traefik = Traefik::start(dir.path(), auth, echo.addr).await;
    let r = send(&traefik.target(), &Request::get("/api/v1/mcp/servers"))
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", traefik.log()));
    println!(
        "traefik: 200 kB auth answer -> {} ({} body bytes)",
        r.status,
        r.body.len()
    );
    assert_ne!(r.status, 200);
    assert!(
        r.body.len() < 65536,
        "the oversized auth body reached the client: {} {} bytes",
        r.status,
        r.body.len()
    );
    task.abort();
}

/// Cross-site WebSocket hijacking through Traefik: a page of another site can make the
/// browser open `/ws/mcp-status` with the user's query token, and Traefik and the sidecar
/// pass it (the token is valid). The release omni2 on the shipped `compose/config/omni2.yaml`
/// upgrades the allowed origin (the one the `cors` middleware lists) and answers 403 to any
/// other `Origin` before the upgrade.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traefik_websocket_upgrades_the_allowed_origin_and_refuses_others() {
    use futures_util::StreamExt;
    use tokio_tungstenite::tungstenite::{self, client::IntoClientRequest};

    let dir = tempfile::tempdir().expect("temp dir");
    let (_mcp, sidecar, omni2, traefik) = omni2_behind_traefik(dir.path()).await;
    let token = sidecar.token("browser-user", "user");
    let logs = || {
        format!(
            "\n--- traefik:\n{}\n--- omni2:\n{}",
            traefik.log(),
            omni2.log()
        )
    };
    let addr = traefik.addr();
    let handshake = |origin: &'static str| {
        let url = format!("ws://{addr}/ws/mcp-status?access_token={token}");
        async move {
            let mut req = url.into_client_request().expect("request");
            req.headers_mut()
                .insert("origin", origin.parse().expect("header value"));
            let stream = tokio::net::TcpStream::connect(addr)
                .await
                .expect("connect to traefik");
            tokio::time::timeout(
                Duration::from_secs(20),
                tokio_tungstenite::client_async(req, stream),
            )
            .await
            .expect("a handshake answer within 20 s")
        }
    };

    let (mut ws, response) = handshake(ALLOWED_ORIGIN)
        .await
        .unwrap_or_else(|e| panic!("allowed origin: {e}{}", logs()));
    assert_eq!(response.status(), 101);
    let first = tokio::time::timeout(Duration::from_secs(20), ws.next())
        .await
        .expect("a first message within 20 s");
    match first {
        Some(Ok(tungstenite::Message::Text(t))) => assert!(t.contains("snapshot"), "{t}"),
        other => panic!("expected the snapshot, got {other:?}{}", logs()),
    }

    for bad in ["https://evil.example.net", "null"] {
        match handshake(bad).await {
            Err(tungstenite::Error::Http(r)) => {
                assert_eq!(r.status(), 403, "{bad}{}", logs());
                let body = String::from_utf8_lossy(r.body().as_deref().unwrap_or_default());
                assert!(body.contains("origin_not_allowed"), "{bad}: {body}");
            }
            other => panic!("{bad}: expected 403, got {other:?}{}", logs()),
        }
    }
}
