//! `HttpMcpClient` against rmcp's own streamable-HTTP server, in process (fast cases): the
//! stateless revision (`server/discover`, no `ping`), the legacy session lifecycle with
//! `ping`, and a server that forgets the session (404) being re-initialised once.

use std::borrow::Cow;
use std::convert::Infallible;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

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

/// An rmcp server on 127.0.0.1:0 whose session store can be swapped (a "restart").
struct RmcpServer {
    url: String,
    current: Arc<Mutex<Service>>,
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
        let shared = current.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let shared = shared.clone();
                tokio::spawn(async move {
                    // Look the service up per request so a swap affects pooled connections.
                    let svc = service_fn(move |req| {
                        let mut svc = shared.lock().expect("lock").clone();
                        async move {
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
            legacy,
            handler,
            task,
        }
    }

    /// Forgets every session, as a restarted server would.
    fn forget_sessions(&self) {
        *self.current.lock().expect("lock") = service(self.handler.clone(), self.legacy);
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

#[tokio::test]
async fn a_forgotten_session_is_reinitialised_once() {
    let server = RmcpServer::start(true).await;
    let client = HttpMcpClient::new(
        &server.url,
        Protocol::Legacy,
        HttpMcpClient::default_http_client(),
    );
    client.probe().await.expect("probe");
    server.forget_sessions();
    // The next request carries the old Mcp-Session-Id: 404, then one re-initialisation.
    let r = client
        .call_tool("add", args(json!({"a": 1, "b": 2})))
        .await
        .expect("after re-init");
    assert_eq!(r.body["structuredContent"]["result"], 3);
    client.probe().await.expect("probe on the new session");
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
