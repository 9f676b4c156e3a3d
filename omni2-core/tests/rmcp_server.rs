//! `HttpMcpClient` against rmcp's own streamable-HTTP server, in process (fast cases): the
//! stateless revision (`server/discover`, no `ping`), the legacy session lifecycle with
//! `ping`, and a server that forgets the session (404) being re-initialised once.

use std::borrow::Cow;
use std::collections::HashSet;
use std::convert::Infallible;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};

use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use omni2_core::config::Protocol;
use omni2_core::mcp::{Fault, HttpMcpClient, McpClient};
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, ErrorData, InitializeResult,
    ListToolsResult, PaginatedRequestParams, ProtocolVersion, ServerCapabilities, Tool,
};
use rmcp::service::RequestContext;
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::{StreamableHttpServerConfig, StreamableHttpService};
use rmcp::{RoleServer, ServerHandler};
use serde_json::{Map, Value, json};

/// Tools `add` and `crash` (a JSON-RPC error); counts calls and pings, records the
/// protocol version of each call. `legacy_only` hides the stateless revision.
#[derive(Clone, Default)]
struct Calc {
    calls: Arc<AtomicUsize>,
    pings: Arc<AtomicUsize>,
    versions: Arc<Mutex<Vec<String>>>,
    legacy_only: bool,
}

impl ServerHandler for Calc {
    fn get_info(&self) -> InitializeResult {
        InitializeResult::new(ServerCapabilities::builder().enable_tools().build())
    }

    fn supported_protocol_versions(&self) -> Cow<'static, [ProtocolVersion]> {
        if self.legacy_only {
            Cow::Owned(vec![
                ProtocolVersion::V_2025_06_18,
                ProtocolVersion::V_2025_03_26,
            ])
        } else {
            Cow::Borrowed(ProtocolVersion::KNOWN_VERSIONS)
        }
    }

    async fn ping(&self, _context: RequestContext<RoleServer>) -> Result<(), ErrorData> {
        self.pings.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        let schema = |v: Value| Arc::new(v.as_object().expect("object").clone());
        Ok(ListToolsResult::with_all_items(vec![
            Tool::new(
                "add",
                "a + b",
                schema(
                    json!({"type": "object", "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}}}),
                ),
            ),
            Tool::new(
                "crash",
                "always a JSON-RPC error",
                schema(json!({"type": "object"})),
            ),
        ]))
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let version = context
            .protocol_version()
            .map(|v| v.to_string())
            .unwrap_or_default();
        self.versions.lock().expect("lock").push(version);
        let args = request.arguments.unwrap_or_default();
        match &*request.name {
            "add" => {
                let n = |k: &str| args.get(k).and_then(Value::as_i64).unwrap_or(0);
                Ok(CallToolResult::structured(json!({"result": n("a") + n("b")})).into())
            }
            _ => Err(ErrorData::internal_error("crashed on purpose", None)),
        }
    }
}

type Service = StreamableHttpService<Calc, LocalSessionManager>;

/// Session ids seen, and the ones to refuse with 400 (a server that answers 400, not 404,
/// for a session it no longer knows).
#[derive(Default)]
struct Sessions {
    seen: HashSet<String>,
    refused: HashSet<String>,
    /// Answer with the request's id (correlated) instead of `null`.
    echo_id: bool,
}

/// 400 with a JSON-RPC "invalid request" error for the request `id` (`null` like the Python
/// SDK, or the request's own id).
fn bad_request(id: Value) -> hyper::Response<BoxBody<Bytes, Infallible>> {
    let body = json!({"jsonrpc": "2.0", "id": id,
        "error": {"code": -32600, "message": "Bad Request: unknown session"}});
    hyper::Response::builder()
        .status(400)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_string())).boxed())
        .expect("response")
}

/// An rmcp server on 127.0.0.1:0 whose session store can be swapped (a "restart").
struct RmcpServer {
    url: String,
    current: Arc<Mutex<Service>>,
    sessions: Arc<Mutex<Sessions>>,
    legacy: bool,
    handler: Calc,
    task: tokio::task::JoinHandle<()>,
}

fn service(handler: Calc, legacy: bool) -> Service {
    let mut config = StreamableHttpServerConfig::default();
    config.legacy_session_mode = legacy;
    config.json_response = !legacy;
    StreamableHttpService::new(
        move || Ok(handler.clone()),
        Arc::new(LocalSessionManager::default()),
        config,
    )
}

impl RmcpServer {
    async fn start(legacy: bool) -> Self {
        Self::start_with(legacy, Calc::default()).await
    }

    async fn start_with(legacy: bool, handler: Calc) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let url = format!("http://{}/mcp", listener.local_addr().expect("addr"));
        let current = Arc::new(Mutex::new(service(handler.clone(), legacy)));
        let sessions = Arc::new(Mutex::new(Sessions::default()));
        let shared = current.clone();
        let tracked = sessions.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let (shared, tracked) = (shared.clone(), tracked.clone());
                tokio::spawn(async move {
                    // Look the service up per request so a swap affects pooled connections.
                    let svc = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                        let mut svc = shared.lock().expect("lock").clone();
                        let session = req
                            .headers()
                            .get("mcp-session-id")
                            .and_then(|v| v.to_str().ok())
                            .map(str::to_owned);
                        let refuse = session.is_some_and(|id| {
                            let mut t = tracked.lock().expect("lock");
                            t.seen.insert(id.clone());
                            t.refused.contains(&id)
                        });
                        let echo_id = tracked.lock().expect("lock").echo_id;
                        async move {
                            if refuse {
                                let id = if echo_id {
                                    let body = req.into_body().collect().await.expect("body");
                                    let v: Value = serde_json::from_slice(&body.to_bytes())
                                        .unwrap_or_default();
                                    v["id"].clone()
                                } else {
                                    Value::Null
                                };
                                return Ok::<_, Infallible>(bad_request(id));
                            }
                            let resp = tower_service::Service::call(&mut svc, req).await;
                            Ok::<_, Infallible>(resp.unwrap_or_else(|e| match e {}))
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        Self {
            url,
            current,
            sessions,
            legacy,
            handler,
            task,
        }
    }

    /// Forgets every session, as a restarted server would.
    fn forget_sessions(&self) {
        *self.current.lock().expect("lock") = service(self.handler.clone(), self.legacy);
    }

    /// Answers 400 from now on to every session seen so far.
    fn refuse_known_sessions(&self, echo_id: bool) {
        let mut t = self.sessions.lock().expect("lock");
        t.refused = t.seen.clone();
        t.echo_id = echo_id;
    }
}

impl Drop for RmcpServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn args(v: Value) -> Map<String, Value> {
    v.as_object().expect("object").clone()
}

/// Probe, list, call, error; returns (pings, protocol version seen by the calls).
async fn exercise(protocol: Protocol, server: RmcpServer) -> (usize, String) {
    let client = HttpMcpClient::new(&server.url, protocol, HttpMcpClient::default_http_client());
    client.probe().await.expect("probe");
    let tools = client.list_tools().await.expect("tools");
    assert_eq!(
        tools.iter().map(|t| t.name.as_str()).collect::<Vec<_>>(),
        ["add", "crash"]
    );
    let r = client
        .call_tool("add", args(json!({"a": 40, "b": 2})))
        .await
        .expect("call");
    assert!(!r.is_error);
    assert_eq!(r.body["structuredContent"]["result"], 42, "{}", r.body);
    // A JSON-RPC error is the server's fault, not an outage.
    let e = client
        .call_tool("crash", Map::new())
        .await
        .expect_err("error");
    assert_eq!(e.fault, Fault::Upstream);
    assert!(!e.is_outage());
    let h = &server.handler;
    assert_eq!(h.calls.load(Ordering::SeqCst), 2);
    let versions = h.versions.lock().expect("lock").clone();
    assert_eq!(versions[0], versions[1]);
    (h.pings.load(Ordering::SeqCst), versions[0].clone())
}

#[tokio::test]
async fn stateless_revision_is_probed_without_ping() {
    let (pings, version) = exercise(Protocol::Auto, RmcpServer::start(false).await).await;
    assert_eq!(version, "2026-07-28");
    assert_eq!(
        pings, 0,
        "the stateless revision has no ping: tools/list probes"
    );
}

#[tokio::test]
async fn legacy_session_with_ping() {
    let (pings, version) = exercise(Protocol::Legacy, RmcpServer::start(true).await).await;
    assert_ne!(version, "2026-07-28");
    assert_eq!(pings, 1);
}

#[tokio::test]
async fn auto_falls_back_to_initialize_on_a_legacy_only_server() {
    let calc = Calc {
        legacy_only: true,
        ..Calc::default()
    };
    let (pings, version) = exercise(Protocol::Auto, RmcpServer::start_with(true, calc).await).await;
    assert_eq!(version, "2025-06-18");
    assert_eq!(pings, 1);
}

/// A legacy session the server has since forgotten; `refuse` makes it answer that session
/// with 400 (`Some(true)`: with the request's id, `Some(false)`: with `null`) instead of 404.
async fn stale_legacy_session(refuse: Option<bool>) -> (RmcpServer, HttpMcpClient) {
    let server = RmcpServer::start(true).await;
    let client = HttpMcpClient::new(
        &server.url,
        Protocol::Legacy,
        HttpMcpClient::default_http_client(),
    );
    client.probe().await.expect("probe");
    server.forget_sessions();
    if let Some(echo_id) = refuse {
        server.refuse_known_sessions(echo_id);
    }
    (server, client)
}

#[tokio::test]
async fn a_forgotten_session_is_reinitialised_once() {
    let (_server, client) = stale_legacy_session(None).await;
    // The next request carries the old Mcp-Session-Id: 404, then one re-initialisation.
    let r = client
        .call_tool("add", args(json!({"a": 1, "b": 2})))
        .await
        .expect("after re-init");
    assert_eq!(r.body["structuredContent"]["result"], 3);
    client.probe().await.expect("probe on the new session");
}

#[tokio::test]
async fn a_400_on_a_known_session_recovers_through_reset() {
    // Like the Python SDK, the server answers 400 with `"id": null`, which rmcp cannot match
    // to the request: the call waits until the caller's timeout. The coordinator then resets
    // the client (as after any probe timeout) and the next session works.
    let (server, client) = stale_legacy_session(Some(false)).await;
    let stuck = tokio::time::timeout(
        std::time::Duration::from_millis(500),
        client.call_tool("add", args(json!({"a": 2, "b": 2}))),
    )
    .await;
    assert!(
        stuck.is_err(),
        "an uncorrelated 400 leaves the request unanswered"
    );
    client.reset().await;
    let r = client
        .call_tool("add", args(json!({"a": 2, "b": 2})))
        .await
        .expect("after reset");
    assert_eq!(r.body["structuredContent"]["result"], 4);
    assert_eq!(
        server.handler.calls.load(Ordering::SeqCst),
        1,
        "the refused call never ran"
    );
}

#[tokio::test]
async fn a_correlated_400_on_a_known_session_is_reinitialised_once() {
    let (server, client) = stale_legacy_session(Some(true)).await;
    let r = client
        .call_tool("add", args(json!({"a": 3, "b": 4})))
        .await
        .expect("after re-init");
    assert_eq!(r.body["structuredContent"]["result"], 7);
    assert_eq!(
        server.handler.calls.load(Ordering::SeqCst),
        1,
        "the refused call never ran"
    );
}

#[tokio::test]
async fn unreachable_server_is_a_transport_fault() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("http://{}/mcp", listener.local_addr().expect("addr"));
    drop(listener);
    let client = HttpMcpClient::new(&url, Protocol::Auto, HttpMcpClient::default_http_client());
    let e = client.probe().await.expect_err("refused");
    assert_eq!(e.fault, Fault::Transport);
    assert!(e.is_outage());
}
