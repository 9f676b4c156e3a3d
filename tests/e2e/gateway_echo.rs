//! The release sidecar behind each real gateway, in front of the echo upstream (issue 2):
//! allow with the sidecar's identity, 401 with `WWW-Authenticate`, 403 on a wrong role, and
//! a client-sent identity never reaching the upstream. Then, with a test config of CIDR
//! rules, that a client-sent `X-Forwarded-For` cannot choose the IP the sidecar sees.

use e2e::gateway::{Gateway, Kind, Upstream};
use e2e::http::{EchoUpstream, Request, echoed, send};
use e2e::process::repo_root;
use e2e::stack::Sidecar;

async fn echo_matrix(kind: Kind) {
    if !kind.installed() {
        panic!("{} is not installed; .ci/run installs it", kind.name());
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let sidecar = Sidecar::start(dir.path()).await;
    let echo = EchoUpstream::start().await;
    let identity = sidecar.identity_headers();
    let gw = Gateway::start(
        kind,
        dir.path(),
        sidecar.addr,
        &Upstream::Tcp(echo.addr),
        &identity,
    )
    .await;
    let to = gw.target();
    let user = sidecar.token("alice", "user");
    let ctx = |what: &str| format!("{} {what}\n--- gateway log:\n{}", kind.name(), gw.log());

    // Allow: 200, and the upstream sees the sidecar's identity, once per header.
    let r = send(&to, &Request::get("/api/v1/mcp/servers").bearer(&user))
        .await
        .unwrap_or_else(|e| panic!("{}", ctx(&e)));
    assert_eq!(r.status, 200, "{}", ctx("allow"));
    let report = r.json();
    assert_eq!(
        echoed(&report, "X-User-Id"),
        ["alice"],
        "{}",
        ctx("X-User-Id")
    );
    assert_eq!(
        echoed(&report, "X-User-Role"),
        ["user"],
        "{}",
        ctx("X-User-Role")
    );
    for name in &identity {
        assert_eq!(
            echoed(&report, name).len(),
            1,
            "{}",
            ctx(&format!("{name} once"))
        );
    }

    // No token: 401 with the sidecar's challenge relayed.
    let r = send(&to, &Request::get("/api/v1/mcp/servers"))
        .await
        .unwrap();
    assert_eq!(r.status, 401, "{}", ctx("no token"));
    let challenge = r.header("www-authenticate").unwrap_or_default();
    assert!(
        challenge.starts_with("Bearer realm=\"omni2\""),
        "{}",
        ctx(challenge)
    );

    // Authenticated, wrong role on an admin route: 403.
    let r = send(&to, &Request::get("/api/v1/admin/users").bearer(&user))
        .await
        .unwrap();
    assert_eq!(r.status, 403, "{}", ctx("wrong role"));
    if kind.relays_deny_body() {
        assert_eq!(r.json()["error"], "role_denied", "{}", ctx("deny body"));
    }

    // Forged identity with a valid token: the upstream sees only the sidecar's values.
    let forged = Request::get("/api/v1/mcp/servers")
        .bearer(&user)
        .header("X-User-Id", "admin")
        .header("X-User-Role", "admin")
        .header("X-Auth-Signature", "forged");
    let r = send(&to, &forged).await.unwrap();
    assert_eq!(r.status, 200, "{}", ctx("forged + token"));
    let report = r.json();
    assert_eq!(
        echoed(&report, "X-User-Id"),
        ["alice"],
        "{}",
        ctx("forged X-User-Id")
    );
    assert_eq!(
        echoed(&report, "X-User-Role"),
        ["user"],
        "{}",
        ctx("forged X-User-Role")
    );
    assert_ne!(
        echoed(&report, "X-Auth-Signature"),
        ["forged"],
        "{}",
        ctx("forged signature")
    );

    // Forged identity on the public route (the sidecar emits none there): removed.
    let r = send(&to, &Request::get("/health").header("X-User-Id", "admin"))
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{}", ctx("public"));
    assert!(
        echoed(&r.json(), "X-User-Id").is_empty(),
        "{}",
        ctx("public forged id")
    );

    // Forged identity without a token: denied before the upstream.
    let r = send(
        &to,
        &Request::get("/api/v1/mcp/servers").header("X-User-Id", "admin"),
    )
    .await
    .unwrap();
    assert_eq!(r.status, 401, "{}", ctx("forged, no token"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traefik_relays_sidecar_decisions_to_the_echo_upstream() {
    echo_matrix(Kind::Traefik).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nginx_relays_sidecar_decisions_to_the_echo_upstream() {
    echo_matrix(Kind::Nginx).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn caddy_relays_sidecar_decisions_to_the_echo_upstream() {
    echo_matrix(Kind::Caddy).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envoy_relays_sidecar_decisions_to_the_echo_upstream() {
    echo_matrix(Kind::Envoy).await;
}

/// The real client is 127.0.0.1. A client-sent `X-Forwarded-For` must neither open a rule
/// for 10.0.0.0/8 nor change any decision: nginx and Caddy overwrite the header with the
/// peer; Envoy (`use_remote_address`) appends the peer, and the sidecar takes the right-most
/// untrusted entry. For a loopback peer Envoy appends its own host address instead of
/// 127.0.0.1, so behind Envoy the loopback rule denies too, with or without spoofing.
async fn xff_matrix(kind: Kind) {
    assert!(
        kind.installed(),
        "{} is not installed; .ci/run installs it",
        kind.name()
    );
    let dir = tempfile::tempdir().expect("temp dir");
    let config = repo_root().join("tests/fixtures/sidecar-cidr.yaml");
    let sidecar = Sidecar::start_with(dir.path(), &config).await;
    let echo = EchoUpstream::start().await;
    let identity = sidecar.identity_headers();
    let upstream = Upstream::Tcp(echo.addr);
    let gw = Gateway::start(kind, dir.path(), sidecar.addr, &upstream, &identity).await;
    let to = gw.target();
    let user = sidecar.token("alice", "user");
    let ctx = |what: &str| format!("{} {what}\n--- gateway log:\n{}", kind.name(), gw.log());
    let loopback_status = if kind == Kind::Envoy { 403 } else { 200 };

    for spoofed in [
        None,
        Some("10.0.0.1"),
        Some("10.0.0.1, 10.1.1.1"),
        Some("127.0.0.1"),
    ] {
        let request = |path: &str| {
            let r = Request::get(path).bearer(&user);
            match spoofed {
                Some(xff) => r.header("X-Forwarded-For", xff),
                None => r,
            }
        };
        let r = send(&to, &request("/api/v1/from-ten/x")).await.unwrap();
        assert_eq!(
            r.status,
            403,
            "{}",
            ctx(&format!("/from-ten, XFF {spoofed:?}"))
        );
        if kind.relays_deny_body() {
            assert_eq!(r.json()["error"], "ip_denied", "{}", ctx("deny reason"));
        }
        let r = send(&to, &request("/api/v1/from-loopback/x"))
            .await
            .unwrap();
        assert_eq!(
            r.status,
            loopback_status,
            "{}",
            ctx(&format!("/from-loopback, XFF {spoofed:?}: {}", r.text()))
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traefik_client_forwarded_for_cannot_choose_the_ip() {
    xff_matrix(Kind::Traefik).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nginx_client_forwarded_for_cannot_choose_the_ip() {
    xff_matrix(Kind::Nginx).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn caddy_client_forwarded_for_cannot_choose_the_ip() {
    xff_matrix(Kind::Caddy).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envoy_client_forwarded_for_cannot_choose_the_ip() {
    xff_matrix(Kind::Envoy).await;
}
