//! The sidecar as the front door of an MCP server (issue 14), through real Traefik on the
//! shipped config, with tokens from a real identity provider (npm `oidc-provider`) and the
//! echo upstream standing in for omni2's `/mcp`:
//! - without a token: 401 naming the resource metadata and scope; that URL, fetched through
//!   Traefik, is the sidecar's RFC 9728 document, whose authorization server is the IdP;
//! - the IdP's token for our resource passes (RS256, ES256, EdDSA); one for another
//!   audience, and an ID token, are refused;
//! - a missing scope gets 403 `insufficient_scope` with every scope the call needs;
//! - a per-tool rule on `Mcp-Name` allows one tool and denies another, and refuses an old or
//!   absent `MCP-Protocol-Version`;
//! - the official Python SDK client, with no token and only its IdP credentials, in front of
//!   omni2's `/mcp`: its own discovery (401 → resource metadata → the IdP's metadata → a
//!   token for this resource) ends in `initialize`, `tools/list` and a call; a wrong secret
//!   ends in an error, no tools.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use e2e::http::{EchoUpstream, Request, Response, Target, echoed, send};
use e2e::idp::{CLIENTS, Idp, generate_keys};
use e2e::mcp_gateway::{Client, names};
use e2e::process::{eventually, free_addr, repo_root};
use e2e::stack::{McpServer, Omni2, Sidecar};
use e2e::traefik::Traefik;
use serde_json::{Value, json};

const V: &str = "2026-07-28";

/// A sidecar config for the MCP resource at `resource`, trusting `issuer` by discovery.
fn write_config(dir: &Path, resource: &str, issuer: &str) -> PathBuf {
    let mcp = |scopes: &str| {
        format!(
            "{{resource: \"{resource}\", authorization_servers: [\"{issuer}\"], scopes_supported: [mcp:tools, mcp:admin], resource_documentation: \"https://omni2.example.com/docs/mcp\", scopes: [{scopes}]}}"
        )
    };
    let yaml = format!(
        r#"
listen: ${{AUTH_SIDECAR_LISTEN:-127.0.0.1:8700}}
admin_listen: ${{AUTH_SIDECAR_ADMIN_LISTEN:-127.0.0.1:8701}}
issuers:
  - issuer: "{issuer}"
    discovery: true
    require_typ: [at+jwt, application/at+jwt]
    required_claims: [sub]
rules:
  - name: health
    path: /health
    action: public
  - name: mcp-echo
    path: /mcp
    methods: [POST]
    mcp_tools: [echo]
    action: authenticated
    mcp: {echo}
  - name: mcp-admin-tools
    path: /mcp
    methods: [POST]
    mcp_tools: ["admin__*"]
    action: authenticated
    mcp: {admin}
  - name: mcp-other-tools
    path: /mcp
    methods: [POST]
    mcp_methods: [tools/call]
    action: deny
  - name: mcp
    path: /mcp
    action: authenticated
    mcp: {any}
"#,
        echo = mcp("mcp:tools"),
        admin = mcp("mcp:tools, mcp:admin"),
        any = mcp(""),
    );
    let path = dir.join("auth-sidecar.yaml");
    std::fs::write(&path, yaml).expect("write config");
    path
}

struct Stack {
    idp: Idp,
    traefik: Traefik,
    sidecar: Sidecar,
    resource: String,
    upstream: Upstream,
}

/// What Traefik sends the admitted requests to.
enum Upstream {
    /// Kept running; its reports arrive in the responses.
    Echo { _server: EchoUpstream },
    /// omni2's `/mcp` in front of the example MCP server (tools `py__*`).
    Omni2(Omni2, McpServer),
}

impl Stack {
    async fn start(dir: &Path) -> Stack {
        let idp = Idp::start(dir, &generate_keys(dir, "k1")).await;
        let echo = EchoUpstream::start().await;
        let (sidecar_addr, admin): (SocketAddr, SocketAddr) = (free_addr(), free_addr());
        let wiring = Traefik::wiring(dir, sidecar_addr, echo.addr);
        let resource = format!("http://127.0.0.1:{}/mcp", wiring.web.port());
        let config = write_config(dir, &resource, &idp.issuer);
        let sidecar = Sidecar::start_on(dir, &config, sidecar_addr, admin, &[]).await;
        let traefik = Traefik::start_wired(dir, wiring).await;
        Stack {
            idp,
            traefik,
            sidecar,
            resource,
            upstream: Upstream::Echo { _server: echo },
        }
    }

    /// The same front door before omni2, with the MCP gateway tests' configs
    /// (`tests/fixtures/e2e-mcp-*.yaml`: the shipped `mcp` rule, roles from `client_id`).
    async fn start_omni2(dir: &Path) -> Stack {
        let idp = Idp::start(dir, &generate_keys(dir, "k1")).await;
        let py = McpServer::start(dir).await;
        let omni2_addr = free_addr();
        let omni2 = Omni2::start_with(
            dir,
            &repo_root().join("tests/fixtures/e2e-mcp-omni2.yaml"),
            Target::Tcp(omni2_addr),
            &[
                ("OMNI2_PY_URL", &py.url()),
                ("OMNI2_EV_URL", "http://127.0.0.1:9/mcp"),
            ],
        )
        .await;
        let (sidecar_addr, admin): (SocketAddr, SocketAddr) = (free_addr(), free_addr());
        let wiring = Traefik::wiring(dir, sidecar_addr, omni2_addr);
        let resource = format!("http://127.0.0.1:{}/mcp", wiring.web.port());
        let env = [
            ("OMNI2_MCP_RESOURCE".to_owned(), resource.clone()),
            ("OMNI2_AUTHORIZATION_SERVER".to_owned(), idp.issuer.clone()),
        ];
        let config = repo_root().join("tests/fixtures/e2e-mcp-sidecar.yaml");
        let sidecar = Sidecar::start_on(dir, &config, sidecar_addr, admin, &env).await;
        let traefik = Traefik::start_wired(dir, wiring).await;
        Stack {
            idp,
            traefik,
            sidecar,
            resource,
            upstream: Upstream::Omni2(omni2, py),
        }
    }

    async fn send(&self, req: &Request) -> Response {
        send(&self.traefik.target(), req)
            .await
            .unwrap_or_else(|e| panic!("{e}\n{}", self.logs()))
    }

    /// A `tools/call` of `tool` as a 2026-07-28 client sends it (`version` aside).
    async fn call(&self, token: Option<&str>, version: Option<&str>, tool: &str) -> Response {
        let body = json!({
            "jsonrpc": "2.0", "id": 1, "method": "tools/call",
            "params": {"name": tool, "arguments": {}},
        });
        let mut req = Request::post_json("/mcp", &body)
            .header("Mcp-Method", "tools/call")
            .header("Mcp-Name", tool);
        if let Some(v) = version {
            req = req.header("MCP-Protocol-Version", v);
        }
        if let Some(t) = token {
            req = req.bearer(t);
        }
        self.send(&req).await
    }

    async fn token(&self, client: &str, resource: &str, scope: &str) -> String {
        self.idp
            .access_token(client, resource, scope)
            .await
            .unwrap_or_else(|e| panic!("{e}\n{}", self.idp.log()))
    }

    fn logs(&self) -> String {
        format!(
            "--- sidecar:\n{}\n--- traefik:\n{}\n--- idp:\n{}{}",
            self.sidecar.log(),
            self.traefik.log(),
            self.idp.log(),
            match &self.upstream {
                Upstream::Echo { .. } => String::new(),
                Upstream::Omni2(omni2, py) =>
                    format!("\n--- omni2:\n{}\n--- py:\n{}", omni2.log(), py.log()),
            }
        )
    }
}

/// The `key="value"` parameters of a Bearer challenge.
fn params(challenge: &str) -> Vec<(String, String)> {
    let rest = challenge.strip_prefix("Bearer ").unwrap_or("");
    rest.split("\", ")
        .filter_map(|p| p.split_once("=\""))
        .map(|(k, v)| (k.to_owned(), v.trim_end_matches('"').to_owned()))
        .collect()
}

fn param<'a>(params: &'a [(String, String)], key: &str) -> Option<&'a str> {
    params
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_token_the_client_discovers_the_resource_and_its_idp() {
    let dir = tempfile::tempdir().expect("temp dir");
    let s = Stack::start(dir.path()).await;

    let r = s.call(None, Some(V), "echo").await;
    assert_eq!(r.status, 401, "{}\n{}", r.text(), s.logs());
    let challenge = r.header("www-authenticate").unwrap_or_default();
    let p = params(challenge);
    let metadata_url = format!(
        "{}/.well-known/oauth-protected-resource/mcp",
        s.resource.trim_end_matches("/mcp")
    );
    assert_eq!(
        param(&p, "resource_metadata"),
        Some(metadata_url.as_str()),
        "{challenge}"
    );
    assert_eq!(param(&p, "scope"), Some("mcp:tools"), "{challenge}");
    assert_eq!(
        param(&p, "error"),
        None,
        "no token, no error code: {challenge}"
    );

    // The metadata, through Traefik's public route to the sidecar.
    let path = metadata_url
        .split_once("127.0.0.1:")
        .and_then(|(_, rest)| rest.find('/').map(|i| &rest[i..]))
        .expect("a path");
    let r = s.send(&Request::get(path)).await;
    assert_eq!(r.status, 200, "{}\n{}", r.text(), s.logs());
    assert_eq!(r.header("content-type"), Some("application/json"));
    let doc = r.json();
    assert_eq!(doc["resource"], json!(s.resource));
    assert_eq!(doc["authorization_servers"], json!([s.idp.issuer]));
    assert_eq!(doc["scopes_supported"], json!(["mcp:tools", "mcp:admin"]));
    assert_eq!(doc["bearer_methods_supported"], json!(["header"]));
    // Another path names no resource here.
    let r = s
        .send(&Request::get("/.well-known/oauth-protected-resource/other"))
        .await;
    assert_eq!(r.status, 404, "{}", r.text());

    // The authorization server's own metadata, from the issuer the document names.
    let issuer = doc["authorization_servers"][0].as_str().expect("issuer");
    let r = send(
        &Target::Tcp(s.idp.addr),
        &Request::get("/.well-known/openid-configuration"),
    )
    .await
    .expect("discovery");
    assert_eq!(r.status, 200, "{}", r.text());
    let as_meta: Value = r.json();
    assert_eq!(as_meta["issuer"], json!(issuer));
    assert!(
        as_meta["grant_types_supported"]
            .as_array()
            .is_some_and(|g| g.contains(&json!("client_credentials"))),
        "{as_meta}"
    );
    assert!(as_meta["token_endpoint"].is_string(), "{as_meta}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_access_tokens_for_this_resource_pass() {
    let dir = tempfile::tempdir().expect("temp dir");
    let s = Stack::start(dir.path()).await;

    for (client, _alg) in CLIENTS {
        let t = s.token(client, &s.resource, "mcp:tools").await;
        let r = s.call(Some(&t), Some(V), "echo").await;
        assert_eq!(r.status, 200, "{client}: {}\n{}", r.text(), s.logs());
        let report = r.json();
        assert_eq!(echoed(&report, "X-User-Id"), [client], "{client}");
        assert!(
            echoed(&report, "Authorization").is_empty(),
            "{client}: the client's token never reaches the MCP server"
        );
    }

    // The same IdP, another resource: refused as not for us.
    let other = s
        .token("agent-es256", "https://other.example.test/mcp", "mcp:tools")
        .await;
    let r = s.call(Some(&other), Some(V), "echo").await;
    assert_eq!(r.status, 401, "{}", r.text());
    assert_eq!(r.json()["error"], "bad_audience");
    let p = params(r.header("www-authenticate").unwrap_or_default());
    assert_eq!(param(&p, "error"), Some("invalid_token"));
    assert!(param(&p, "resource_metadata").is_some());

    // An ID token of the same IdP, correctly signed: not an access token.
    let id = s.idp.id_token("agent-rs256").await;
    let r = s.call(Some(&id), Some(V), "echo").await;
    assert_eq!(r.status, 401, "{}", r.text());
    assert_eq!(r.json()["error"], "id_token");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scopes_step_up_and_per_tool_rules_need_a_recent_protocol_version() {
    let dir = tempfile::tempdir().expect("temp dir");
    let s = Stack::start(dir.path()).await;
    let tools = s.token("agent-es256", &s.resource, "mcp:tools").await;

    // A tool needing mcp:admin too: 403 naming every scope the call needs.
    let r = s.call(Some(&tools), Some(V), "admin__reset").await;
    assert_eq!(r.status, 403, "{}\n{}", r.text(), s.logs());
    assert_eq!(r.json()["error"], "insufficient_scope");
    let challenge = r.header("www-authenticate").unwrap_or_default();
    let p = params(challenge);
    assert_eq!(
        param(&p, "error"),
        Some("insufficient_scope"),
        "{challenge}"
    );
    assert_eq!(
        param(&p, "scope"),
        Some("mcp:tools mcp:admin"),
        "{challenge}"
    );
    assert!(
        param(&p, "resource_metadata")
            .is_some_and(|u| u.ends_with("/.well-known/oauth-protected-resource/mcp")),
        "{challenge}"
    );
    // Step up: a token with both scopes passes.
    let admin = s
        .token("agent-es256", &s.resource, "mcp:tools mcp:admin")
        .await;
    let r = s.call(Some(&admin), Some(V), "admin__reset").await;
    assert_eq!(r.status, 200, "{}", r.text());

    // Per tool: echo passes, add is denied by the catch-all tools/call rule.
    assert_eq!(s.call(Some(&tools), Some(V), "echo").await.status, 200);
    let r = s.call(Some(&tools), Some(V), "add").await;
    assert_eq!(r.status, 403, "{}", r.text());
    assert_eq!(r.json()["error"], "rule_denied");

    // Older or absent versions send no trustworthy Mcp-Name: refused, not passed on.
    for version in [Some("2025-11-25"), Some("2025-06-18"), None] {
        let r = s.call(Some(&tools), version, "echo").await;
        assert_eq!(r.status, 403, "{version:?}: {}", r.text());
        assert_eq!(r.json()["error"], "mcp_protocol_version", "{version:?}");
        assert!(
            r.json()["message"]
                .as_str()
                .is_some_and(|m| m.contains("2026-07-28")),
            "{}",
            r.text()
        );
    }
    // The GET stream is no tool call: the resource's general rule lets it through.
    let r = s.send(&Request::get("/mcp").bearer(&tools)).await;
    assert_eq!(r.status, 200, "{}", r.text());
}

/// `tests/fixtures/sdk_oauth_client.py` (the Python SDK's own client-credentials OAuth) for
/// `client` with `secret`, against the resource.
fn sdk_client(s: &Stack, dir: &Path, client: &str, secret: &str) -> Client {
    let creds = json!({"client_id": client, "client_secret": secret, "issuer": s.idp.issuer});
    let script = repo_root().join("tests/fixtures/sdk_oauth_client.py");
    Client::python_script(&script, &[&s.resource], &creds).logs_from(dir)
}

/// Where in the client's `trace` the first request matching `f` is.
fn position(trace: &[Value], what: &str, f: impl Fn(&str, &str, u64) -> bool) -> usize {
    trace
        .iter()
        .position(|r| {
            f(
                r["method"].as_str().unwrap_or(""),
                r["url"].as_str().unwrap_or(""),
                r["status"].as_u64().unwrap_or(0),
            )
        })
        .unwrap_or_else(|| panic!("no {what} in {trace:#?}"))
}

/// `auth_sidecar_decisions_total` of the sidecar's `mcp` rule with `reason`.
async fn mcp_decisions(s: &Stack, reason: &str) -> f64 {
    let r = send(&Target::Tcp(s.sidecar.admin), &Request::get("/metrics"))
        .await
        .expect("metrics");
    let labels = format!("reason=\"{reason}\"");
    r.text()
        .lines()
        .filter(|l| l.starts_with("auth_sidecar_decisions_total{"))
        .filter(|l| l.contains(&labels) && l.contains("rule=\"mcp\""))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_python_sdk_discovers_the_idp_and_gets_its_own_token() {
    let dir = tempfile::tempdir().expect("temp dir");
    let s = Stack::start_omni2(dir.path()).await;
    // omni2 lists a backend's tools once its probe found it healthy.
    let admin = s.token("agent-es256", &s.resource, "mcp:tools").await;
    let req = Request::get("/api/v1/mcp/servers/py").bearer(&admin);
    eventually("py healthy", Duration::from_secs(30), || async {
        let r = send(&s.traefik.target(), &req).await?;
        (r.status == 200 && r.json()["state"] == "healthy")
            .then_some(())
            .ok_or(format!("{} {}", r.status, r.text()))
    })
    .await;
    let unauthenticated = mcp_decisions(&s, "missing_token").await;

    // The user client, with nothing but its credentials and the issuer they belong to.
    let c = sdk_client(&s, dir.path(), "agent-rs256", "agent-rs256-secret");
    let init = c.step("initialize");
    assert!(init["protocol"].is_string(), "{init}");
    let listed = names(&c.step("list"));
    for t in ["py__echo", "py__counter"] {
        assert!(listed.contains(&t.to_owned()), "{t} in {listed:?}");
    }
    // Roles come from the SDK's token: the user does not see the admin's tool.
    assert!(!listed.contains(&"py__add".to_owned()), "{listed:?}");
    let call = c.step("call");
    assert_eq!(call["is_error"], false, "{call}");
    assert_eq!(call["text"], json!(["discovered"]), "{call}");

    // The discovery, as the client saw it: a 401 from the resource, the metadata through
    // Traefik, the IdP's own metadata, its token endpoint, then the resource admitting it.
    let trace = c.step("trace")["requests"]
        .as_array()
        .expect("requests")
        .clone();
    let base = s.resource.trim_end_matches("/mcp");
    let issuer = s.idp.issuer.as_str();
    let challenged = position(&trace, "401 from /mcp", |_, u, st| {
        u == s.resource && st == 401
    });
    let prm = position(&trace, "the resource metadata", |m, u, st| {
        m == "GET" && u == format!("{base}/.well-known/oauth-protected-resource/mcp") && st == 200
    });
    let as_meta = position(&trace, "the IdP's metadata", |m, u, st| {
        m == "GET" && u.starts_with(issuer) && u.contains("/.well-known/") && st == 200
    });
    let token = position(&trace, "a token from the IdP", |m, u, st| {
        m == "POST" && u.starts_with(issuer) && u.ends_with("/token") && st == 200
    });
    let admitted = position(&trace, "/mcp admitting the token", |_, u, st| {
        u == s.resource && st == 200
    });
    assert!(
        challenged < prm && prm < as_meta && as_meta < token && token < admitted,
        "{trace:#?}"
    );
    // The token the SDK got is for this resource, from this IdP, for this client.
    let t = c.step("token");
    assert_eq!(t["claims"]["aud"], json!(s.resource), "{t}");
    assert_eq!(t["claims"]["iss"], json!(issuer), "{t}");
    assert_eq!(t["claims"]["client_id"], "agent-rs256", "{t}");
    assert!(
        t["claims"]["scope"]
            .as_str()
            .is_some_and(|sc| sc.split(' ').any(|x| x == "mcp:tools")),
        "{t}"
    );
    // The sidecar itself refused the tokenless request.
    assert!(
        mcp_decisions(&s, "missing_token").await > unauthenticated,
        "{}",
        s.logs()
    );

    // A wrong secret: the IdP refuses it, the client fails without reaching any tool.
    let c = sdk_client(&s, dir.path(), "agent-rs256", "not-the-secret");
    let err = c.step("error");
    let trace = c.step("trace")["requests"]
        .as_array()
        .expect("requests")
        .clone();
    position(&trace, "the refused token request", |m, u, st| {
        m == "POST" && u.starts_with(issuer) && u.ends_with("/token") && st == 401
    });
    assert!(
        !trace
            .iter()
            .any(|r| r["url"] == json!(s.resource) && r["status"] == 200),
        "{err}\n{trace:#?}"
    );
}
