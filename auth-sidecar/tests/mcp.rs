//! The MCP front door over the real actix app: the RFC 9728 metadata routes (path-inserted,
//! root, several resources told apart by `Host`, 404 elsewhere), the MCP headers read from a
//! forwardAuth request, the challenges, the metrics labels of the new reasons, and
//! `explain` with the MCP flags.

use std::process::Command;

use actix_web::test::TestRequest;
use serde_json::{Value, json};

use crate::support::{ISS, app, call, forwarded, hs, runtime, unix_now};

const CONFIG: &str = r#"
issuers:
  - issuer: https://idp.test
    keys: [{kid: hs, alg: HS256, secret_env: HS_SECRET}]
rules:
  - name: mcp-echo
    path: /mcp
    methods: [POST]
    mcp_tools: [echo]
    action: authenticated
    mcp: {resource: "https://a.example.test/mcp", authorization_servers: [https://idp.test], scopes: [mcp:tools]}
  - name: mcp-tools
    path: /mcp
    mcp_methods: [tools/call]
    action: deny
  - name: mcp
    path: /mcp
    hosts: [a.example.test]
    action: authenticated
    mcp: {resource: "https://a.example.test/mcp", authorization_servers: [https://idp.test], scopes: [mcp:tools]}
  - name: mcp-b
    path: /mcp
    hosts: [b.example.test]
    action: authenticated
    mcp: {resource: "https://b.example.test:8443/mcp", authorization_servers: [https://idp-b.test]}
  - name: root
    hosts: [c.example.test]
    action: authenticated
    mcp: {resource: "https://c.example.test/", authorization_servers: [https://idp.test]}
"#;

fn config() -> String {
    CONFIG.to_owned()
}

fn token(scope: &str) -> String {
    let now = unix_now();
    hs().mint(&json!({
        "iss": ISS, "sub": "agent", "aud": "https://a.example.test/mcp", "scope": scope,
        "iat": now - 5, "exp": now + 600,
    }))
}

#[actix_web::test]
async fn metadata_is_served_at_the_path_inserted_urls() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (svc, _) = app(runtime(&config(), dir.path())).await;
    let get = |path: &str, host: &str| {
        TestRequest::get()
            .uri(path)
            .insert_header(("Host", host.to_owned()))
    };
    let doc = |body: &str| -> Value { serde_json::from_str(body).expect("JSON") };

    // Two resources share the path /mcp: Host tells them apart.
    let a = call(
        &svc,
        get(
            "/.well-known/oauth-protected-resource/mcp",
            "a.example.test",
        ),
    )
    .await;
    assert_eq!(a.status, 200, "{a:?}");
    assert_eq!(a.one("content-type"), "application/json");
    assert_eq!(doc(&a.body)["resource"], "https://a.example.test/mcp");
    assert_eq!(
        doc(&a.body)["authorization_servers"],
        json!(["https://idp.test"])
    );
    let b = call(
        &svc,
        get(
            "/.well-known/oauth-protected-resource/mcp",
            "b.example.test:8443",
        ),
    )
    .await;
    assert_eq!(doc(&b.body)["resource"], "https://b.example.test:8443/mcp");
    assert_eq!(
        doc(&b.body)["authorization_servers"],
        json!(["https://idp-b.test"])
    );
    let unknown_host = call(
        &svc,
        get("/.well-known/oauth-protected-resource/mcp", "x.test"),
    )
    .await;
    assert_eq!(
        unknown_host.status, 404,
        "ambiguous without a matching Host"
    );

    // A resource without a path: the bare well-known URL.
    let c = call(
        &svc,
        get("/.well-known/oauth-protected-resource", "c.example.test"),
    )
    .await;
    assert_eq!(c.status, 200, "{c:?}");
    assert_eq!(doc(&c.body)["resource"], "https://c.example.test");
    let nothing = call(
        &svc,
        get(
            "/.well-known/oauth-protected-resource/other",
            "a.example.test",
        ),
    )
    .await;
    assert_eq!(nothing.status, 404);
    assert_eq!(nothing.one("cache-control"), "no-store");
}

#[actix_web::test]
async fn the_mcp_headers_of_a_forward_auth_request_decide_per_tool() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (svc, state) = app(runtime(&config(), dir.path())).await;
    let mcp = |tool: &str, version: Option<&str>, token: Option<&str>| {
        let mut req = forwarded("POST", "/mcp")
            .insert_header(("X-Forwarded-Host", "a.example.test"))
            .insert_header(("Mcp-Method", "tools/call"))
            .insert_header(("Mcp-Name", tool.to_owned()));
        if let Some(v) = version {
            req = req.insert_header(("MCP-Protocol-Version", v.to_owned()));
        }
        if let Some(t) = token {
            req = req.insert_header(("Authorization", format!("Bearer {t}")));
        }
        req
    };
    let v = Some("2026-07-28");
    let r = call(&svc, mcp("echo", v, None)).await;
    assert_eq!(r.status, 401);
    assert_eq!(
        r.one("www-authenticate"),
        "Bearer realm=\"omni2\", resource_metadata=\"https://a.example.test/.well-known/oauth-protected-resource/mcp\", scope=\"mcp:tools\""
    );
    let good = token("mcp:tools");
    assert_eq!(call(&svc, mcp("echo", v, Some(&good))).await.status, 200);
    let r = call(&svc, mcp("add", v, Some(&good))).await;
    assert_eq!((r.status, r.error()), (403, "rule_denied".to_owned()));
    let r = call(&svc, mcp("echo", Some("2025-11-25"), Some(&good))).await;
    assert_eq!(
        (r.status, r.error()),
        (403, "mcp_protocol_version".to_owned())
    );
    let r = call(&svc, mcp("echo", v, Some(&token("other")))).await;
    assert_eq!(
        (r.status, r.error()),
        (403, "insufficient_scope".to_owned())
    );
    assert!(
        r.one("www-authenticate")
            .contains("error=\"insufficient_scope\""),
        "{r:?}"
    );

    // Each new reason has its own series.
    let text = state.metrics.render(&state.active.load().rt);
    for reason in [
        "mcp_protocol_version",
        "insufficient_scope",
        "id_token",
        "bad_token_type",
    ] {
        assert!(
            text.contains(&format!("reason=\"{reason}\"")),
            "no series for {reason}"
        );
    }
}

#[test]
fn explain_takes_the_mcp_headers_and_prints_the_challenge() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("mcp.yaml");
    std::fs::write(&path, config()).expect("write config");
    let explain = |extra: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_auth-sidecar"))
            .args(["explain", "--config"])
            .arg(&path)
            .args([
                "--method",
                "POST",
                "--uri",
                "/mcp",
                "--host",
                "a.example.test",
            ])
            .args(extra)
            .env("HS_SECRET", String::from_utf8(hs().public).expect("ASCII"))
            .env("RUST_LOG", "warn")
            .output()
            .expect("run explain");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let out = explain(&[
        "--mcp-method",
        "tools/call",
        "--mcp-name",
        "echo",
        "--mcp-protocol-version",
        "2026-07-28",
    ]);
    assert!(out.contains("rule:     mcp-echo"), "{out}");
    assert!(out.contains("reason:   missing_token"), "{out}");
    assert!(
        out.contains("challenge: Bearer realm=\"omni2\", resource_metadata=\"https://a.example.test/.well-known/oauth-protected-resource/mcp\", scope=\"mcp:tools\""),
        "{out}"
    );
    let out = explain(&["--mcp-method", "tools/call", "--mcp-name", "echo"]);
    assert!(out.contains("decision: deny (403)"), "{out}");
    assert!(out.contains("reason:   mcp_protocol_version"), "{out}");
}
