//! The whole MCP path (issue 14): an MCP client with an access token from a real IdP (npm
//! `oidc-provider`, client credentials with the `resource` indicator) → real Traefik on the
//! shipped config → the release sidecar (test configs `tests/fixtures/e2e-mcp-sidecar*.yaml`:
//! the shipped `mcp` rule with the IdP as issuer) → the release omni2's `/mcp` → the Python
//! reference server (behind a recording proxy) and server-everything.
//!
//! - the official Python SDK client on 2026-07-28 (`server/discover`, stateless): listing
//!   filtered by role (the IdP client id is the role), calls on both backends, a cached call,
//!   an unknown tool, a rate limit; the backend never sees the client's token or identity;
//! - the 2025-11-25 session revision with the Python and TypeScript SDK clients, and
//!   `list_changed` when a backend dies with the fast-failing call after it;
//! - bad input through the stack gets clear errors and everything stays up;
//! - the front door: 401 → resource metadata → the IdP's metadata → a token from its token
//!   endpoint; another audience and ID tokens refused; `insufficient_scope` step-up; a
//!   per-tool rule on `Mcp-Name` allowing one tool and denying another, refusing older
//!   protocol versions, and omni2 refusing a header that lies about the body.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use e2e::http::{Request, Response, Target, send};
use e2e::idp::{Idp, generate_keys};
use e2e::mcp_gateway::{Client, Everything, RecordingProxy, assert_breaker_refused, names};
use e2e::process::{eventually, free_addr, repo_root};
use e2e::stack::{McpServer, Omni2, Sidecar};
use e2e::traefik::Traefik;
use serde_json::{Value, json};

const MODERN: &str = "2026-07-28";
/// The IdP clients: a user (`tool_call` only) and an admin (also `py__add`).
const USER: &str = "agent-rs256";
const ADMIN: &str = "agent-es256";

struct Stack {
    idp: Idp,
    traefik: Traefik,
    sidecar: Sidecar,
    omni2: Omni2,
    py: McpServer,
    proxy: RecordingProxy,
    ev: Option<Everything>,
    /// `http://127.0.0.1:<traefik web port>/mcp`: the resource, and where clients connect.
    resource: String,
}

impl Stack {
    /// The stack with sidecar config `tests/fixtures/<sidecar>`; server-everything too when
    /// `everything`.
    async fn start(dir: &Path, sidecar: &str, everything: bool) -> Stack {
        let idp = Idp::start(dir, &generate_keys(dir, "k1")).await;
        let py = McpServer::start(dir).await;
        let proxy = RecordingProxy::start(py.addr).await;
        let ev = if everything {
            Some(Everything::start(dir).await)
        } else {
            None
        };
        let ev_url = ev
            .as_ref()
            .map_or_else(|| "http://127.0.0.1:9/mcp".to_owned(), Everything::url);
        let omni2_addr = free_addr();
        let omni2 = Omni2::start_with(
            dir,
            &repo_root().join("tests/fixtures/e2e-mcp-omni2.yaml"),
            Target::Tcp(omni2_addr),
            &[("OMNI2_PY_URL", &proxy.url()), ("OMNI2_EV_URL", &ev_url)],
        )
        .await;
        let (sidecar_addr, admin): (SocketAddr, SocketAddr) = (free_addr(), free_addr());
        let wiring = Traefik::wiring(dir, sidecar_addr, omni2_addr);
        let resource = format!("http://127.0.0.1:{}/mcp", wiring.web.port());
        let env = [
            ("OMNI2_MCP_RESOURCE".to_owned(), resource.clone()),
            ("OMNI2_AUTHORIZATION_SERVER".to_owned(), idp.issuer.clone()),
        ];
        let sidecar = Sidecar::start_on(
            dir,
            &repo_root().join("tests/fixtures").join(sidecar),
            sidecar_addr,
            admin,
            &env,
        )
        .await;
        let traefik = Traefik::start_wired(dir, wiring).await;
        Stack {
            idp,
            traefik,
            sidecar,
            omni2,
            py,
            proxy,
            ev,
            resource,
        }
    }

    async fn send(&self, req: &Request) -> Response {
        send(&self.traefik.target(), req)
            .await
            .unwrap_or_else(|e| panic!("{e}\n{}", self.logs()))
    }

    async fn token(&self, client: &str, resource: &str, scope: &str) -> String {
        self.idp
            .access_token(client, resource, scope)
            .await
            .unwrap_or_else(|e| panic!("{e}\n{}", self.idp.log()))
    }

    /// Waits until omni2, asked through the stack, reports `server` in `state`.
    async fn wait_state(&self, token: &str, server: &str, state: &str) {
        let req = Request::get(&format!("/api/v1/mcp/servers/{server}")).bearer(token);
        eventually(
            &format!("{server} {state}"),
            Duration::from_secs(30),
            || async {
                let r = send(&self.traefik.target(), &req).await?;
                if r.status == 200 && r.json()["state"] == state {
                    Ok(())
                } else {
                    Err(format!("{} {}", r.status, r.text()))
                }
            },
        )
        .await;
    }

    /// A 2026-07-28 request as an SDK sends it: `_meta` in the body, the mirrored headers.
    fn modern(&self, method: &str, name: Option<&str>, params: Value) -> Request {
        let mut params = params;
        params["_meta"] = json!({
            "io.modelcontextprotocol/protocolVersion": MODERN,
            "io.modelcontextprotocol/clientInfo": {"name": "e2e", "version": "1"},
            "io.modelcontextprotocol/clientCapabilities": {},
        });
        let body = json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params});
        let mut req = Request::post_json("/mcp", &body)
            .header("accept", "application/json, text/event-stream")
            .header("mcp-protocol-version", MODERN)
            .header("mcp-method", method);
        if let Some(n) = name {
            req = req.header("mcp-name", n);
        }
        req
    }

    fn call(&self, tool: &str, arguments: Value) -> Request {
        self.modern(
            "tools/call",
            Some(tool),
            json!({"name": tool, "arguments": arguments}),
        )
    }

    fn url(&self) -> String {
        self.resource.clone()
    }

    fn logs(&self) -> String {
        format!(
            "--- sidecar:\n{}\n--- traefik:\n{}\n--- omni2:\n{}\n--- py:\n{}\n--- everything:\n{}\n--- idp:\n{}",
            self.sidecar.log(),
            self.traefik.log(),
            self.omni2.log(),
            self.py.log(),
            self.ev.as_ref().map(Everything::log).unwrap_or_default(),
            self.idp.log()
        )
    }
}

fn bearer(token: &str) -> Value {
    json!({"Authorization": format!("Bearer {token}")})
}

/// The `key="value"` parameters of a Bearer challenge.
fn param(challenge: &str, key: &str) -> Option<String> {
    challenge
        .strip_prefix("Bearer ")?
        .split("\", ")
        .filter_map(|p| p.split_once("=\""))
        .find(|(k, _)| *k == key)
        .map(|(_, v)| v.trim_end_matches('"').to_owned())
}

/// The Python client's default run (omni2-core's `gateway_client.py`).
fn assert_python_calls(c: &Client, is_admin: bool, session: bool) {
    let add = c.step("add");
    if is_admin {
        assert_eq!(add["structured"]["result"], 5, "{add}");
    } else {
        assert_eq!(add["ok"], false, "{add}");
        assert_eq!(add["code"], -32003, "{add}");
        assert_eq!(add["data"]["error"], "role_denied", "{add}");
    }
    let (c1, c2) = (c.step("counter1"), c.step("counter2"));
    assert_eq!(c2["cached"], true, "{c2}");
    // The backend's counter did not move: the cache answered.
    assert_eq!(c1["structured"], c2["structured"], "{c1} {c2}");
    let echo = c.step("everything_echo");
    assert_eq!(echo["ok"], true, "{echo}");
    assert!(
        echo["text"][0].as_str().is_some_and(|t| t.contains("hi")),
        "{echo}"
    );
    let unknown = c.step("unknown");
    assert_eq!(unknown["code"], -32602, "{unknown}");
    // py__echo: 2 calls per user, then -32005 with a retry hint.
    let (l0, l1, l2) = (c.step("limited0"), c.step("limited1"), c.step("limited2"));
    assert_eq!(l0["ok"], true, "{l0}");
    assert_eq!(l1["ok"], true, "{l1}");
    assert_eq!(l2["code"], -32005, "{l2}");
    let ping = c.step("ping");
    // `ping` exists in the session revisions only.
    assert_eq!(ping["ok"], session, "{ping}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_sdk_client_through_traefik_and_the_sidecar_with_idp_tokens() {
    let dir = tempfile::tempdir().expect("temp dir");
    let s = Stack::start(dir.path(), "e2e-mcp-sidecar.yaml", true).await;
    let user = s.token(USER, &s.resource, "mcp:tools").await;
    let admin = s.token(ADMIN, &s.resource, "mcp:tools mcp:admin").await;
    s.wait_state(&admin, "py", "healthy").await;
    s.wait_state(&admin, "ev", "healthy").await;

    // Python SDK, 2026-07-28 (stateless, mirrored headers), as the user: py__add is not
    // listed, and refused when called anyway.
    let c = Client::python(&s.url(), "discover", &[], &bearer(&user)).logs_from(dir.path());
    let d = c.step("discover");
    assert!(
        d["versions"]
            .as_array()
            .is_some_and(|v| v.contains(&json!(MODERN))),
        "{d}"
    );
    let listed = names(&c.step("list"));
    for t in ["py__counter", "py__echo", "ev__echo", "ev__get-sum"] {
        assert!(listed.contains(&t.to_owned()), "{t} in {listed:?}");
    }
    assert!(!listed.contains(&"py__add".to_owned()), "{listed:?}");
    assert_python_calls(&c, false, false);

    // Python SDK, 2026-07-28 (stateless, mirrored headers), as the admin.
    let c = Client::python(&s.url(), "discover", &[], &bearer(&admin)).logs_from(dir.path());
    let d = c.step("discover");
    assert!(
        d["versions"]
            .as_array()
            .is_some_and(|v| v.contains(&json!(MODERN))),
        "{d}"
    );
    assert!(names(&c.step("list")).contains(&"py__add".to_owned()));
    assert_python_calls(&c, true, false);

    // Bad input through the whole stack: clear errors from omni2, nothing falls over.
    let bad = |body: Vec<u8>| {
        let mut r = Request::post_json("/mcp", &json!({}))
            .header("accept", "application/json, text/event-stream")
            .bearer(&admin);
        r.body = body;
        r
    };
    let r = s.send(&bad(b"{not json".to_vec())).await;
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(r.text().contains("-32700"), "{}", r.text());
    let batch: Vec<Value> = (0..20_000)
        .map(|i| json!({"jsonrpc": "2.0", "id": i, "method": "ping"}))
        .collect();
    let r = s
        .send(&bad(serde_json::to_vec(&batch).expect("json")))
        .await;
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(
        r.text().contains("-32600") && r.text().contains("batches"),
        "{}",
        r.text()
    );
    let big = format!("{{\"pad\": \"{}\"}}", "x".repeat(1_100_000));
    let r = s.send(&bad(big.into_bytes())).await;
    assert_eq!(r.status, 413, "{}", r.text());
    let r = s
        .send(&s.modern("nope/nothing", None, json!({})).bearer(&admin))
        .await;
    assert!(r.text().contains("-32601"), "{} {}", r.status, r.text());
    // Mcp-Name says one tool, the body calls another: refused by omni2.
    let mut lie = s.call("py__counter", json!({})).bearer(&admin);
    lie.headers.retain(|(k, _)| k != "mcp-name");
    let lie = lie.header("mcp-name", "py__echo");
    let r = s.send(&lie).await;
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(r.text().contains("-32020"), "{}", r.text());
    // Still up, and still serving.
    let r = s.send(&Request::get("/health")).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let r = s
        .send(&s.call("py__counter", json!({})).bearer(&admin))
        .await;
    assert_eq!(r.status, 200, "{}\n{}", r.text(), s.logs());
    assert!(
        r.json()["result"]["structuredContent"].is_object(),
        "{}",
        r.text()
    );

    // What reached the Python server: omni2's own requests only.
    let sent = s.proxy.sent();
    assert!(sent.contains("tools/call"), "the proxy recorded the calls");
    for token in [&user, &admin] {
        assert!(
            !sent.contains(&token.to_ascii_lowercase()),
            "a client token leaked"
        );
    }
    for header in ["authorization:", "x-user-id", "x-auth-signature"] {
        assert!(!sent.contains(header), "{header} reached the backend");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
/// The session revision (2025-11-25) through Traefik, with both SDK clients, and
/// `list_changed` on their GET streams, then the fast-failing call. It once lost about one
/// session POST's SSE answer in two after rmcp's first chunk: Traefik's transport failed on
/// the client's request body (closed by Go's server at the first answer header), closed the
/// connection to omni2 and aborted the answer; `forwardBody` on `auth`
/// (traefik/dynamic/omni2.yml) is the fix, and this test the check.
async fn session_clients_through_traefik_and_list_changed() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut s = Stack::start(dir.path(), "e2e-mcp-sidecar.yaml", true).await;
    let user = s.token(USER, &s.resource, "mcp:tools").await;
    let admin = s.token(ADMIN, &s.resource, "mcp:tools mcp:admin").await;
    s.wait_state(&admin, "py", "healthy").await;
    s.wait_state(&admin, "ev", "healthy").await;

    // Python SDK, 2025-11-25 session, as the user: py__add is not listed, and refused.
    let c = Client::python(&s.url(), "session", &[], &bearer(&user)).logs_from(dir.path());
    let init = c.step("initialize");
    assert_eq!(init["protocol"], "2025-11-25", "{init}");
    assert_eq!(init["server"], "omni2", "{init}");
    assert_eq!(init["list_changed"], true, "{init}");
    let listed = names(&c.step("list"));
    for t in ["py__counter", "py__echo", "ev__echo", "ev__get-sum"] {
        assert!(listed.contains(&t.to_owned()), "{t} in {listed:?}");
    }
    assert!(!listed.contains(&"py__add".to_owned()), "{listed:?}");
    assert_python_calls(&c, false, true);

    // TypeScript SDK, 2025-11-25 session, as the user: py__add is not listed, and refused.
    let c = Client::node(&s.url(), &[], &bearer(&user)).logs_from(dir.path());
    assert_eq!(c.step("initialize")["session"], true);
    let listed = names(&c.step("list"));
    assert!(listed.contains(&"py__counter".to_owned()), "{listed:?}");
    assert!(!listed.contains(&"py__add".to_owned()), "{listed:?}");
    let add = c.step("add");
    assert_eq!(add["ok"], false, "{add}");
    assert_eq!(add["code"], -32003, "{add}");
    assert_eq!(add["data"]["error"], "role_denied", "{add}");

    // TypeScript SDK, 2025-11-25 session, as the admin.
    let c = Client::node(&s.url(), &[], &bearer(&admin)).logs_from(dir.path());
    let init = c.step("initialize");
    assert_eq!(init["server"], "omni2", "{init}");
    assert_eq!(init["session"], true, "{init}");
    assert!(names(&c.step("list")).contains(&"py__add".to_owned()));
    let add = c.step("add");
    assert_eq!(add["structured"]["result"], 42, "{add}\n{}", s.logs());
    // Cached per user (the default cache_scope): the user's Python calls do not answer the
    // admin's first call; the admin's second is cached.
    let (c1, c2) = (c.step("counter1"), c.step("counter2"));
    assert_eq!(c1["cached"], false, "{c1}");
    assert_eq!(c2["cached"], true, "{c2}");
    assert_eq!(c2["structured"], c1["structured"], "{c2}");
    let echo = c.step("everything_echo");
    assert!(
        echo["text"][0]
            .as_str()
            .is_some_and(|t| t.contains("from ts")),
        "{echo}"
    );
    let sum = c.step("everything_sum");
    assert!(
        sum["text"][0].as_str().is_some_and(|t| t.contains('3')),
        "{sum}"
    );

    // list_changed when the Python server dies, to both SDK clients; then a fast failure.
    let pyc = Client::python(&s.url(), "session", &["--wait-change"], &bearer(&admin))
        .logs_from(dir.path());
    let ts = Client::node(&s.url(), &["--wait-change"], &bearer(&admin)).logs_from(dir.path());
    for c in [&pyc, &ts] {
        c.step("initialize");
        assert!(names(&c.step("list")).contains(&"py__counter".to_owned()));
        c.step("ready");
    }
    // Nothing cached for py__counter: the call below must reach the breaker.
    let r = s
        .send(
            &Request {
                method: http::Method::DELETE,
                ..Request::get("/api/v1/cache/py")
            }
            .bearer(&admin),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    s.py.stop();
    for c in [&pyc, &ts] {
        let listed = names(&c.step("changed"));
        assert!(listed.iter().all(|t| !t.starts_with("py__")), "{listed:?}");
        assert!(listed.contains(&"ev__echo".to_owned()), "{listed:?}");
    }
    // Both clients get the breaker's error (no upstream attempt), with a retry hint.
    for c in [&pyc, &ts] {
        assert_breaker_refused(&c.step("down_call"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_front_door_discovery_scopes_and_per_tool_rules() {
    let dir = tempfile::tempdir().expect("temp dir");
    let s = Stack::start(dir.path(), "e2e-mcp-sidecar-per-tool.yaml", false).await;

    // No token: 401 naming the metadata and the scope.
    let r = s.send(&s.call("py__counter", json!({}))).await;
    assert_eq!(r.status, 401, "{}\n{}", r.text(), s.logs());
    let challenge = r.header("www-authenticate").unwrap_or_default().to_owned();
    let metadata_url = s
        .resource
        .replace("/mcp", "/.well-known/oauth-protected-resource/mcp");
    assert_eq!(
        param(&challenge, "resource_metadata").as_deref(),
        Some(metadata_url.as_str()),
        "{challenge}"
    );
    assert_eq!(param(&challenge, "scope").as_deref(), Some("mcp:tools"));
    // The client follows it: the metadata, through Traefik...
    let path = &metadata_url[metadata_url.find("/.well-known").expect("path")..];
    let r = s.send(&Request::get(path)).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let doc = r.json();
    assert_eq!(doc["resource"], json!(s.resource));
    assert_eq!(doc["authorization_servers"], json!([s.idp.issuer]));
    // ...then the authorization server's metadata, from the issuer it names...
    let issuer = doc["authorization_servers"][0].as_str().expect("issuer");
    let r = send(
        &Target::Tcp(s.idp.addr),
        &Request::get("/.well-known/openid-configuration"),
    )
    .await
    .expect("IdP discovery");
    assert_eq!(r.status, 200, "{}", r.text());
    let as_meta = r.json();
    assert_eq!(as_meta["issuer"], json!(issuer));
    assert!(
        as_meta["grant_types_supported"]
            .as_array()
            .is_some_and(|g| g.contains(&json!("client_credentials"))),
        "{as_meta}"
    );
    // ...whose token endpoint issues the token for this resource (Idp::access_token).
    assert_eq!(as_meta["token_endpoint"], json!(format!("{issuer}/token")));
    let user = s.token(USER, &s.resource, "mcp:tools").await;
    let admin = s.token(ADMIN, &s.resource, "mcp:tools mcp:admin").await;
    s.wait_state(&admin, "py", "healthy").await;

    // Allowed tool, through to the Python server.
    let r = s
        .send(&s.call("py__counter", json!({})).bearer(&user))
        .await;
    assert_eq!(r.status, 200, "{}\n{}", r.text(), s.logs());
    assert!(
        r.json()["result"]["structuredContent"].is_object(),
        "{}",
        r.text()
    );
    // tools/list, filtered by role (the IdP client id).
    let list = |t: &str| s.modern("tools/list", None, json!({})).bearer(t);
    let tools = |r: &Response| -> Vec<String> {
        r.json()["result"]["tools"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|t| t["name"].as_str().map(str::to_owned))
            .collect()
    };
    let r = s.send(&list(&user)).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(
        tools(&r).contains(&"py__counter".to_owned()),
        "{}",
        r.text()
    );
    assert!(!tools(&r).contains(&"py__add".to_owned()), "{}", r.text());
    let r = s.send(&list(&admin)).await;
    assert!(tools(&r).contains(&"py__add".to_owned()), "{}", r.text());

    // Another tool: denied at the front door by the catch-all tools/call rule.
    let r = s
        .send(&s.call("py__echo", json!({"text": "x"})).bearer(&user))
        .await;
    assert_eq!(r.status, 403, "{}", r.text());
    assert_eq!(r.json()["error"], "rule_denied");
    // Lying in Mcp-Name to pass that rule: the sidecar allows, omni2 refuses (-32020).
    let mut lie = s.call("py__echo", json!({"text": "x"})).bearer(&user);
    lie.headers.retain(|(k, _)| k != "mcp-name");
    let r = s.send(&lie.header("mcp-name", "py__counter")).await;
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(r.text().contains("-32020"), "{}", r.text());

    // Step-up: py__add needs mcp:admin too.
    let r = s
        .send(&s.call("py__add", json!({"a": 2, "b": 3})).bearer(&user))
        .await;
    assert_eq!(r.status, 403, "{}", r.text());
    let challenge = r.header("www-authenticate").unwrap_or_default().to_owned();
    assert_eq!(
        param(&challenge, "error").as_deref(),
        Some("insufficient_scope")
    );
    assert_eq!(
        param(&challenge, "scope").as_deref(),
        Some("mcp:tools mcp:admin"),
        "{challenge}"
    );
    assert_eq!(
        param(&challenge, "resource_metadata").as_deref(),
        Some(metadata_url.as_str())
    );
    let r = s
        .send(&s.call("py__add", json!({"a": 2, "b": 3})).bearer(&admin))
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        r.json()["result"]["structuredContent"]["result"],
        5,
        "{}",
        r.text()
    );

    // Older revisions send no Mcp-Name to trust: refused where per-tool rules apply.
    let init = json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-11-25", "capabilities": {},
        "clientInfo": {"name": "old", "version": "1"}}});
    let r = s
        .send(
            &Request::post_json("/mcp", &init)
                .header("accept", "application/json, text/event-stream")
                .bearer(&user),
        )
        .await;
    assert_eq!(r.status, 403, "{}", r.text());
    assert_eq!(r.json()["error"], "mcp_protocol_version");
    let mut old = s.call("py__counter", json!({})).bearer(&user);
    old.headers.retain(|(k, _)| k != "mcp-protocol-version");
    let r = s
        .send(&old.header("mcp-protocol-version", "2025-06-18"))
        .await;
    assert_eq!(r.status, 403, "{}", r.text());
    assert_eq!(r.json()["error"], "mcp_protocol_version");

    // A token for another audience, and an ID token: refused.
    let other = s
        .token(USER, "https://other.example.test/mcp", "mcp:tools")
        .await;
    let r = s
        .send(&s.call("py__counter", json!({})).bearer(&other))
        .await;
    assert_eq!(r.status, 401, "{}", r.text());
    assert_eq!(r.json()["error"], "bad_audience");
    let id = s.idp.id_token(USER).await;
    let r = s.send(&s.call("py__counter", json!({})).bearer(&id)).await;
    assert_eq!(r.status, 401, "{}", r.text());
    assert_eq!(r.json()["error"], "id_token");

    // Nothing of the client's reached the backend.
    let sent = s.proxy.sent();
    assert!(sent.contains("tools/call"), "the proxy recorded the calls");
    for token in [&user, &admin, &other, &id] {
        assert!(
            !sent.contains(&token.to_ascii_lowercase()),
            "a client token leaked"
        );
    }
    assert!(!sent.contains("authorization:"), "{sent}");
}
