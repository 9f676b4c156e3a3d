//! The fast path against rmcp's full path: two omni2s built alike, one with the fast path
//! off, get the same requests in the same order. Status, headers, body, audit events and
//! counters must match after every request, and the fast one must have answered exactly
//! the plain calls itself (so a request wrongly taken, or a plain one never taken, fails).

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use actix_web::dev::{Service, ServiceResponse};
use actix_web::{App, test as atest};
use serde_json::{Value, json};
use tokio::sync::broadcast;

use super::Gateway;
use crate::config::{Config, ProcessEnv};
use crate::health::HealthState;
use crate::mcp::{McpClient, ToolInfo};
use crate::test_util::{Behaviour, FakeMcp, tool};
use crate::{Omni2, Omni2Handle};

/// `s`: cached `add`, admin-only `secret`, rate-limited `limited`, `fail` (a tool error),
/// `tagged` (an `x-mcp-header` schema); `down`: a server about to fail.
const CONFIG: &str = r#"
roles: {tool_call: [user, admin]}
gateway: {enabled: false, separator: "__", allowed_hosts: [omni2.internal]}
servers:
  - name: s
    url: http://127.0.0.1:9/mcp
    probe_interval: 1h
    healthy_after: 1
    tools:
      add: {cache: true, ttl: 1h}
      secret: {roles: [admin]}
      limited: {rate_limit: {burst: 2, every: 1h}}
  - name: down
    url: http://127.0.0.1:9/mcp
    probe_interval: 1h
    healthy_after: 1
    breaker: {failure_threshold: 1, open_duration: 1h, max_open_duration: 1h}
"#;

fn tagged() -> ToolInfo {
    let mut t = tool("tagged", None);
    let schema = json!({"type": "object", "properties": {
        "region": {"type": "string", "x-mcp-header": "Region"}}});
    let definition = Arc::make_mut(&mut t.definition);
    definition.input_schema = Arc::new(schema.as_object().expect("object").clone());
    t
}

/// One omni2 with its own `/mcp` (fast path on or off) and an audit subscription.
struct Side {
    o: Omni2,
    _handle: Omni2Handle,
    gateway: Arc<Gateway>,
    down: Arc<FakeMcp>,
    audit: broadcast::Receiver<Arc<str>>,
}

async fn side(fast: bool) -> Side {
    let config = Config::from_yaml(CONFIG, &ProcessEnv).expect("config");
    let s = Arc::new(FakeMcp::new());
    s.set_tools(
        ["add", "echo", "secret", "limited", "fail"]
            .iter()
            .map(|t| tool(t, None))
            .chain([tagged()])
            .collect(),
    );
    let down = Arc::new(FakeMcp::new());
    down.set_tools(vec![tool("echo", None)]);
    let clients = vec![s as Arc<dyn McpClient>, down.clone() as Arc<dyn McpClient>];
    let o = Omni2::with_clients(config, clients);
    let handle = o.spawn();
    let mut rx = o.shared().published.snapshot.clone();
    tokio::time::timeout(
        Duration::from_secs(10),
        rx.wait_for(|s| {
            s.servers
                .iter()
                .all(|s| s.state == HealthState::Healthy && s.tool_count > 0)
        }),
    )
    .await
    .expect("healthy in time")
    .expect("coordinator running");
    let gateway = Gateway::new(o.shared().clone());
    let gateway = Arc::new(if fast {
        gateway
    } else {
        gateway.without_fast_path()
    });
    let audit = o.shared().audit.subscribe();
    Side {
        o,
        _handle: handle,
        gateway,
        down,
        audit,
    }
}

/// What a client sees of an answer, and what omni2 recorded of it.
#[derive(Debug, PartialEq)]
struct Seen {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
    /// Audit events without their time and latency.
    audit: Vec<Value>,
    /// The tool-call, cache and rate-limit counters.
    counters: Vec<String>,
}

async fn send<S>(app: &S, side: &mut Side, req: actix_http::Request) -> Seen
where
    S: Service<actix_http::Request, Response = ServiceResponse, Error = actix_web::Error>,
{
    let resp = atest::call_service(app, req).await;
    let status = resp.status().as_u16();
    let mut headers: Vec<(String, String)> = resp
        .headers()
        .iter()
        .map(|(k, v)| (k.to_string(), String::from_utf8_lossy(v.as_bytes()).into()))
        .collect();
    headers.sort();
    let body = String::from_utf8_lossy(&atest::read_body(resp).await).into_owned();
    let mut audit = Vec::new();
    while let Ok(line) = side.audit.try_recv() {
        let mut event: Value = serde_json::from_str(&line).expect("audit JSON");
        let fields = event.as_object_mut().expect("audit object");
        fields.remove("time");
        fields.remove("latency_us");
        audit.push(event);
    }
    let counters = side
        .o
        .shared()
        .metrics
        .render()
        .lines()
        .filter(|l| {
            [
                "omni2_tool_calls_total",
                "omni2_tool_cache_",
                "omni2_gateway_rate_limited_total",
            ]
            .iter()
            .any(|m| l.starts_with(m))
        })
        .map(str::to_owned)
        .collect();
    Seen {
        status,
        headers,
        body,
        audit,
        counters,
    }
}

/// Waits (`retry_after_ms`, "retry in N ms") depend on when each side was asked.
fn without_waits(body: &str) -> Value {
    fn mask(v: &mut Value) {
        match v {
            Value::Object(map) => {
                for (k, v) in map.iter_mut() {
                    if k == "retry_after_ms" {
                        *v = json!(0);
                    } else {
                        mask(v);
                    }
                }
            }
            Value::String(s) if s.contains("retry in ") => {
                *s = s.chars().filter(|c| !c.is_ascii_digit()).collect();
            }
            _ => {}
        }
    }
    let mut v: Value = serde_json::from_str(body).expect("JSON body");
    mask(&mut v);
    v
}

fn meta() -> Value {
    json!({
        "io.modelcontextprotocol/protocolVersion": "2026-07-28",
        "io.modelcontextprotocol/clientInfo": {"name": "t", "version": "1"},
        "io.modelcontextprotocol/clientCapabilities": {},
    })
}

fn call(name: &str, arguments: Value) -> Value {
    json!({"jsonrpc": "2.0", "id": 7, "method": "tools/call",
        "params": {"name": name, "arguments": arguments, "_meta": meta()}})
}

/// One request, and whether the fast path should answer it.
struct Case {
    what: &'static str,
    body: String,
    /// Headers replacing (or, with an empty value, removing) the plain ones.
    headers: Vec<(&'static str, String)>,
    /// Extra headers (repeats allowed).
    extra: Vec<(&'static str, &'static str)>,
    is_fast: bool,
    /// The answer holds a wait (compared without it).
    waits: bool,
}

fn case(what: &'static str, body: Value, is_fast: bool) -> Case {
    let name = body["params"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    Case {
        what,
        body: body.to_string(),
        headers: vec![("mcp-name", name)],
        extra: Vec::new(),
        is_fast,
        waits: false,
    }
}

impl Case {
    fn header(mut self, name: &'static str, value: &str) -> Self {
        self.headers.retain(|(n, _)| *n != name);
        self.headers.push((name, value.to_owned()));
        self
    }

    fn extra(mut self, name: &'static str, value: &'static str) -> Self {
        self.extra.push((name, value));
        self
    }

    fn raw(mut self, body: &str) -> Self {
        self.body = body.to_owned();
        self
    }

    fn waits(mut self) -> Self {
        self.waits = true;
        self
    }

    fn request(&self) -> actix_http::Request {
        let mut plain = vec![
            ("host", "omni2.internal".to_owned()),
            ("x-user-id", "alice".to_owned()),
            ("x-user-roles", "user".to_owned()),
            ("content-type", "application/json".to_owned()),
            ("accept", "application/json, text/event-stream".to_owned()),
            ("mcp-protocol-version", "2026-07-28".to_owned()),
            ("mcp-method", "tools/call".to_owned()),
        ];
        for (name, value) in &self.headers {
            plain.retain(|(n, _)| n != name);
            plain.push((name, value.clone()));
        }
        let mut req = atest::TestRequest::post().uri("/mcp");
        for (name, value) in plain.into_iter().filter(|(_, v)| !v.is_empty()) {
            req = req.insert_header((name, value));
        }
        for &(name, value) in &self.extra {
            req = req.append_header((name, value));
        }
        req.set_payload(self.body.clone()).to_request()
    }
}

/// Where the fast path's parse takes a body, rmcp's parse reads the same call from it.
fn parses_like_rmcp(body: &str) -> bool {
    use rmcp::model::{ClientJsonRpcMessage, ClientRequest, GetMeta};
    let Some(call) = super::fast::parse(body.as_bytes()) else {
        return false;
    };
    let Ok(ClientJsonRpcMessage::Request(r)) = serde_json::from_str::<ClientJsonRpcMessage>(body)
    else {
        panic!("rmcp does not read a request from {body}");
    };
    let meta = r.request.get_meta().clone();
    let ClientRequest::CallToolRequest(c) = r.request else {
        panic!("rmcp does not read a tools/call from {body}");
    };
    let ours = (
        call.id,
        call.params.name,
        call.params.arguments,
        call.params.meta,
    );
    let theirs = (r.id, c.params.name.into_owned(), c.params.arguments, meta);
    assert_eq!(ours, theirs, "{body}");
    true
}

#[test]
fn the_fast_parse_takes_only_what_rmcp_reads_the_same() {
    let m = meta().to_string();
    let taken = [
        format!(r#"{{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{{"name":"s__a","arguments":{{"x":[1,{{"y":null}}]}},"_meta":{m}}}}}"#),
        format!(r#"{{"params":{{"_meta":{m},"name":"s__a"}},"method":"tools/call","id":"x","jsonrpc":"2.0"}}"#),
        format!(r#"{{"jsonrpc":"2.0","id":-5,"method":"tools/call","params":{{"name":"s__a","arguments":null,"_meta":{m}}}}}"#),
        r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"s__a","arguments":{},"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientCapabilities":{},"progressToken":3,"other":{"a":1}}}}"#.to_owned(),
        format!(r#"{{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{{"name":"s__a","arguments":{{"a":1,"a":2}},"_meta":{m}}}}}"#),
    ];
    for body in &taken {
        assert!(parses_like_rmcp(body), "not taken: {body}");
    }
    let left = [
        format!(
            r#"{{"jsonrpc":"1.0","id":1,"method":"tools/call","params":{{"name":"s__a","_meta":{m}}}}}"#
        ),
        format!(
            r#"{{"jsonrpc":"2.0","id":null,"method":"tools/call","params":{{"name":"s__a","_meta":{m}}}}}"#
        ),
        format!(
            r#"{{"jsonrpc":"2.0","id":1.5,"method":"tools/call","params":{{"name":"s__a","_meta":{m}}}}}"#
        ),
        format!(
            r#"{{"jsonrpc":"2.0","method":"tools/call","params":{{"name":"s__a","_meta":{m}}}}}"#
        ),
        format!(r#"{{"jsonrpc":"2.0","id":1,"method":"tools/list","params":{{"_meta":{m}}}}}"#),
        format!(
            r#"{{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{{"name":"s__a","task":{{}},"_meta":{m}}}}}"#
        ),
        format!(
            r#"{{"jsonrpc":"2.0","id":1,"method":"tools/call","extra":1,"params":{{"name":"s__a","_meta":{m}}}}}"#
        ),
        format!(
            r#"{{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{{"name":"s__a","name":"s__b","_meta":{m}}}}}"#
        ),
        format!(
            r#"{{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{{"name":"s__a","arguments":[1],"_meta":{m}}}}}"#
        ),
        r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"s__a"}}"#.to_owned(),
        format!(
            r#"{{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{{"name":5,"_meta":{m}}}}}"#
        ),
    ];
    for body in &left {
        assert!(!parses_like_rmcp(body), "taken: {body}");
    }
}

#[actix_web::test]
async fn the_fast_path_answers_what_the_full_path_answers() {
    let mut fast = side(true).await;
    let mut full = side(false).await;
    let fast_app = atest::init_service(
        App::new()
            .configure(|c| fast.o.configure(c))
            .configure(|c| fast.gateway.configure(c)),
    )
    .await;
    let full_app = atest::init_service(
        App::new()
            .configure(|c| full.o.configure(c))
            .configure(|c| full.gateway.configure(c)),
    )
    .await;
    let add = call("s__add", json!({"a": 1}));
    let no_caps = {
        let mut c = call("s__echo", json!({}));
        c["params"]["_meta"]
            .as_object_mut()
            .expect("meta")
            .remove("io.modelcontextprotocol/clientCapabilities");
        c
    };
    let no_meta = json!({"jsonrpc": "2.0", "id": 7, "method": "tools/call",
        "params": {"name": "s__echo", "arguments": {}}});
    let mut string_id = call("s__echo", json!({"x": "y"}));
    string_id["id"] = json!("req-1");
    let no_arguments = json!({"jsonrpc": "2.0", "id": 8, "method": "tools/call",
        "params": {"name": "s__echo", "_meta": meta()}});
    let notification = json!({"jsonrpc": "2.0", "method": "tools/call",
        "params": {"name": "s__echo", "arguments": {}, "_meta": meta()}});

    let cases = [
        case("a miss", add.clone(), true),
        case("a hit", add.clone(), true),
        case(
            "an uncached call",
            call("s__echo", json!({"b": [1, 2]})),
            true,
        ),
        case("a tool error", call("s__fail", json!({})), true),
        case("a forbidden tool", call("s__secret", json!({})), true),
        case("an admin's tool", call("s__secret", json!({})), true).header("x-user-roles", "admin"),
        case("an unknown tool", call("s__nope", json!({})), true),
        case("an unknown server", call("x__echo", json!({})), true),
        case("no separator", call("echo", json!({})), true),
        case("a string id", string_id, true),
        case("no arguments", no_arguments, true),
        case("a stray Mcp-Param", call("s__echo", json!({})), true).extra("mcp-param-x", "1"),
        case("a host with a port", call("s__echo", json!({})), true)
            .header("host", "OMNI2.internal:8080"),
        case("limited 1", call("s__limited", json!({})), true),
        case("limited 2", call("s__limited", json!({})), true),
        case("limited 3", call("s__limited", json!({})), true).waits(),
        case("another user's limit", call("s__limited", json!({})), true)
            .header("x-user-id", "bob"),
        // Not plain: rmcp answers (most of these refuse).
        case("Mcp-Name ≠ body", add.clone(), false).header("mcp-name", "s__echo"),
        case("no Mcp-Name", add.clone(), false).header("mcp-name", ""),
        case("two Mcp-Name", add.clone(), false).extra("mcp-name", "s__add"),
        case("Mcp-Method ≠ body", add.clone(), false).header("mcp-method", "tools/list"),
        case("no Mcp-Method", add.clone(), false).header("mcp-method", ""),
        case("an older header", add.clone(), false).header("mcp-protocol-version", "2025-11-25"),
        case("an unknown header", add.clone(), false).header("mcp-protocol-version", "2099-01-01"),
        case("no version header", add.clone(), false).header("mcp-protocol-version", ""),
        case("no client capabilities", no_caps, false),
        case("no _meta", no_meta, false),
        case("Base64 Mcp-Name", add.clone(), false).header("mcp-name", "=?base64?c19fYWRk?="),
        case(
            "a tagged tool",
            call("s__tagged", json!({"region": "eu"})),
            false,
        ),
        case(
            "a tagged tool, header",
            call("s__tagged", json!({"region": "eu"})),
            false,
        )
        .extra("mcp-param-region", "eu"),
        case("JSON only", add.clone(), false).header("accept", "application/json"),
        case("Accept with q", add.clone(), false)
            .header("accept", "application/json;q=1, text/event-stream"),
        case("text/plain", add.clone(), false).header("content-type", "text/plain"),
        case("JSON with charset", add.clone(), true)
            .header("content-type", "application/json; charset=utf-8"),
        case("a foreign host", add.clone(), false).header("host", "evil.example"),
        case("no host", add.clone(), false).header("host", ""),
        case("an Origin", add.clone(), false).extra("origin", "http://omni2.internal"),
        case("an unknown session", add.clone(), false).header("mcp-session-id", "nope"),
        case("not JSON", add.clone(), false).raw("{nope"),
        case("arguments not an object", call("s__echo", json!(5)), false),
        case("a notification", notification, false),
        case("no identity", add.clone(), false).header("x-user-id", ""),
    ];
    for case in &cases {
        if case.is_fast {
            assert!(parses_like_rmcp(&case.body), "{}", case.what);
        }
        let before = fast.gateway.fast_answers.load(Ordering::Relaxed);
        let got = send(&fast_app, &mut fast, case.request()).await;
        let want = send(&full_app, &mut full, case.request()).await;
        let took = fast.gateway.fast_answers.load(Ordering::Relaxed) - before;
        assert_eq!(
            took,
            u64::from(case.is_fast),
            "{}: fast path taken",
            case.what
        );
        if case.waits {
            assert_eq!(
                without_waits(&got.body),
                without_waits(&want.body),
                "{}",
                case.what
            );
            assert_eq!(
                (got.status, &got.headers, &got.audit, &got.counters),
                (want.status, &want.headers, &want.audit, &want.counters),
                "{}",
                case.what
            );
        } else {
            assert_eq!(got, want, "{}", case.what);
        }
    }
    // A breaker opened by a failure: both paths refuse the same way.
    fast.down.set(Behaviour::Down);
    full.down.set(Behaviour::Down);
    for what in ["down, failing", "down, breaker open"] {
        let c = case(what, call("down__echo", json!({})), true).waits();
        let got = send(&fast_app, &mut fast, c.request()).await;
        let want = send(&full_app, &mut full, c.request()).await;
        assert_eq!(
            without_waits(&got.body),
            without_waits(&want.body),
            "{what}"
        );
        assert_eq!((got.status, got.audit), (want.status, want.audit), "{what}");
    }
    assert_eq!(full.gateway.fast_answers.load(Ordering::Relaxed), 0);

    // What the cases show, so that matching answers cannot both be wrong the same way.
    let hit = send(&fast_app, &mut fast, cases[1].request()).await;
    assert!(hit.body.contains("\"omni2/cached\":true"), "{}", hit.body);
    assert!(
        hit.body.contains("\"resultType\":\"complete\""),
        "{}",
        hit.body
    );
    let refused = |i: usize| cases[i].request();
    for (i, code) in [(4, "-32003"), (6, "-32602"), (15, "-32005")] {
        let seen = send(&fast_app, &mut fast, refused(i)).await;
        assert_eq!(seen.status, 200, "{}", cases[i].what);
        assert!(seen.body.contains(code), "{}: {}", cases[i].what, seen.body);
    }
    let mismatch = send(&fast_app, &mut fast, cases[17].request()).await;
    assert_eq!(mismatch.status, 400, "{}", mismatch.body);
    assert!(mismatch.body.contains("-32020"), "{}", mismatch.body);
    let open = send(
        &fast_app,
        &mut fast,
        case("open", call("down__echo", json!({})), true).request(),
    )
    .await;
    assert!(open.body.contains("circuit_open"), "{}", open.body);
}

/// The next bytes of a streaming body, or `None` once it ends or `within` passes.
async fn next_chunk(body: &mut actix_web::body::BoxBody, within: Duration) -> Option<Vec<u8>> {
    use actix_web::body::MessageBody;
    let mut body = std::pin::Pin::new(body);
    let next = std::future::poll_fn(|cx| body.as_mut().poll_next(cx));
    match tokio::time::timeout(within, next).await {
        Ok(Some(Ok(bytes))) => Some(bytes.to_vec()),
        _ => None,
    }
}

/// Reads `stream` until it carries `needle` (bounded in reads and time).
async fn wait_for(stream: &mut actix_web::body::BoxBody, needle: &str) -> bool {
    let mut seen = String::new();
    for _ in 0..100 {
        let Some(chunk) = next_chunk(stream, Duration::from_secs(10)).await else {
            return false;
        };
        seen.push_str(&String::from_utf8_lossy(&chunk));
        if seen.contains(needle) {
            return true;
        }
    }
    false
}

/// A reload that adds a server, then one that removes it: a connected session hears
/// `notifications/tools/list_changed` on its GET stream each time.
#[actix_web::test]
async fn a_session_hears_list_changed_when_a_reload_adds_or_removes_a_server() {
    let one = r#"
roles: {tool_call: [user]}
servers:
  - {name: s, url: "http://127.0.0.1:9/mcp", probe_interval: 1h, healthy_after: 1}
"#;
    let two = format!(
        "{one}  - {{name: t, url: \"http://127.0.0.1:9/mcp\", probe_interval: 1h, healthy_after: 1}}\n"
    );
    let config = Config::from_yaml(one, &ProcessEnv).expect("config");
    let o = Omni2::with_clients(config, vec![Arc::new(FakeMcp::new()) as Arc<dyn McpClient>]);
    let _handle = o.spawn();
    let app = atest::init_service(App::new().configure(|c| o.configure(c))).await;
    let post = |body: Value, session: Option<&str>| {
        let mut req = atest::TestRequest::post()
            .uri("/mcp")
            .insert_header(("host", "localhost"))
            .insert_header(("x-user-id", "alice"))
            .insert_header(("x-user-roles", "user"))
            .insert_header(("content-type", "application/json"))
            .insert_header(("accept", "application/json, text/event-stream"));
        if let Some(s) = session {
            req = req
                .insert_header(("mcp-session-id", s.to_owned()))
                .insert_header(("mcp-protocol-version", "2025-11-25"));
        }
        req.set_payload(body.to_string()).to_request()
    };
    let init = json!({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
        "protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}});
    let resp = atest::call_service(&app, post(init, None)).await;
    assert_eq!(resp.status(), 200);
    let session = resp
        .headers()
        .get("mcp-session-id")
        .expect("a session")
        .to_str()
        .expect("session id")
        .to_owned();
    atest::read_body(resp).await;
    let initialized = json!({"jsonrpc": "2.0", "method": "notifications/initialized"});
    let resp = atest::call_service(&app, post(initialized, Some(&session))).await;
    assert_eq!(resp.status(), 202);
    // A request on the session after `initialized`: its notifier is running by then.
    let list = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list"});
    let resp = atest::call_service(&app, post(list, Some(&session))).await;
    assert_eq!(resp.status(), 200);
    atest::read_body(resp).await;
    let get = atest::TestRequest::get()
        .uri("/mcp")
        .insert_header(("host", "localhost"))
        .insert_header(("x-user-id", "alice"))
        .insert_header(("x-user-roles", "user"))
        .insert_header(("accept", "text/event-stream"))
        .insert_header(("mcp-session-id", session.clone()))
        .insert_header(("mcp-protocol-version", "2025-11-25"))
        .to_request();
    let resp = atest::call_service(&app, get).await;
    assert_eq!(resp.status(), 200);
    let mut stream = resp.into_body();

    let fakes: crate::reload::ClientFactory =
        Arc::new(|_| Arc::new(FakeMcp::new()) as Arc<dyn McpClient>);
    let shared = o.shared();
    crate::reload::reload_text(shared, &two, Some(one), &ProcessEnv, &fakes)
        .await
        .expect("reload adding t");
    assert!(
        wait_for(&mut stream, "notifications/tools/list_changed").await,
        "list_changed after t was added"
    );
    crate::reload::reload_text(shared, one, Some(&two), &ProcessEnv, &fakes)
        .await
        .expect("reload removing t");
    assert!(
        wait_for(&mut stream, "notifications/tools/list_changed").await,
        "list_changed after t was removed"
    );
}
