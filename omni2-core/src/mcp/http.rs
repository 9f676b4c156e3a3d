//! [`McpClient`] over rmcp's streamable-HTTP client transport and our own `reqwest::Client`.
//!
//! rmcp does the protocol work: `initialize` (or `server/discover` for the stateless
//! revision, falling back to `initialize` for older servers), `Mcp-Session-Id` and
//! `MCP-Protocol-Version` headers, JSON or SSE responses, and one re-initialisation when the
//! server forgets the session (404). We keep one session per server, open it lazily, and drop
//! it on transport errors so the next call starts a fresh one; a call that failed because the
//! transport was already closed is retried once on the new session.
//!
//! `notifications/tools/list_changed` raises [`McpClient::tool_list_changes`]. Servers on
//! earlier revisions send it unasked (on the session's standalone GET stream or a response
//! stream), and rmcp hands it to our [`ClientHandler`]; on the stateless revision a server
//! sends it only on a `subscriptions/listen` stream, which each session keeps open while the
//! server advertises `tools.listChanged`.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures_util::FutureExt;
use futures_util::future::BoxFuture;
use rmcp::model::{
    CallToolRequestParams, ClientRequest, ErrorCode, PingRequest, ProtocolVersion,
    ServerNotification, ServerResult, SubscriptionFilter,
};
use rmcp::service::{
    ClientCacheConfig, ClientInitializeError, ClientLifecycleMode, ClientServiceExt,
    NotificationContext, RoleClient, RunningService,
};
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::transport::streamable_http_client::{
    StreamableHttpClientTransportConfig, StreamableHttpError,
};
use rmcp::{ClientHandler, Peer, ServiceError};
use serde_json::{Map, Value};
use tokio::sync::{Mutex, watch};
use tokio::task::AbortHandle;

use super::{Error, McpClient, ToolInfo, ToolResult};
use crate::config::{Credentials, Protocol};

/// One MCP server over streamable HTTP.
pub struct HttpMcpClient {
    url: String,
    protocol: Protocol,
    /// `auto` found a server whose discovery lists only `initialize` versions.
    is_legacy_only: AtomicBool,
    http: reqwest::Client,
    session: Mutex<Option<Arc<Session>>>,
    /// Raised when the server may have changed its tool list (see the module docs).
    tools_changed: watch::Sender<()>,
    /// A session was opened before: a new one may have missed change notifications.
    has_had_session: AtomicBool,
}

impl std::fmt::Debug for HttpMcpClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpMcpClient")
            .field("url", &self.url)
            .finish()
    }
}

struct Session {
    service: RunningService<RoleClient, ToolListWatcher>,
    /// The stateless revision (no `initialize`, no `ping`).
    is_stateless: bool,
    /// The server answered `ping` with "method not found".
    has_no_ping: AtomicBool,
    /// The `subscriptions/listen` task (stateless revision), stopped with the session.
    listener: Option<AbortHandle>,
}

impl Drop for Session {
    fn drop(&mut self) {
        if let Some(listener) = &self.listener {
            listener.abort();
        }
    }
}

/// rmcp's notification handler for our sessions: it passes on tool-list changes.
struct ToolListWatcher {
    tools_changed: watch::Sender<()>,
}

impl ClientHandler for ToolListWatcher {
    async fn on_tool_list_changed(&self, _context: NotificationContext<RoleClient>) {
        tracing::debug!("MCP server says its tool list changed.");
        self.tools_changed.send_replace(());
    }
}

/// Wait before listening again after a `subscriptions/listen` stream ended or failed.
const RELISTEN_DELAY: Duration = Duration::from_secs(1);

/// Keeps a `subscriptions/listen` stream for tool-list changes open on a stateless-revision
/// session, raising `tools_changed` for each change. Streams do not resume: after one ends,
/// listen again and raise the signal once, since changes may have been missed meanwhile.
async fn listen_for_tool_changes(peer: Peer<RoleClient>, tools_changed: watch::Sender<()>) {
    let filter = SubscriptionFilter::builder().tools_list_changed().build();
    let mut has_listened = false;
    while !peer.is_transport_closed() {
        match peer.listen(filter.clone()).await {
            Ok(mut subscription) => {
                if has_listened {
                    tools_changed.send_replace(());
                }
                has_listened = true;
                loop {
                    match subscription.next().await {
                        Ok(Some(ServerNotification::ToolListChangedNotification(_))) => {
                            tracing::debug!("MCP server says its tool list changed.");
                            tools_changed.send_replace(());
                        }
                        Ok(Some(_)) => {}
                        Ok(None) => break,
                        Err(e) => {
                            tracing::debug!(error = %e, "Tool-list subscription failed.");
                            break;
                        }
                    }
                }
            }
            Err(e) if is_method_not_found(&e) => return,
            Err(e) => tracing::debug!(error = %e, "Could not listen for tool-list changes."),
        }
        tokio::time::sleep(RELISTEN_DELAY).await;
    }
}

impl HttpMcpClient {
    /// A client for `url`, sharing `http` (and its connection pool) with other servers.
    pub fn new(url: &str, protocol: Protocol, http: reqwest::Client) -> Self {
        Self {
            url: url.to_owned(),
            protocol,
            is_legacy_only: AtomicBool::new(false),
            http,
            session: Mutex::new(None),
            tools_changed: watch::Sender::new(()),
            has_had_session: AtomicBool::new(false),
        }
    }

    /// A reqwest client suited to MCP: pooled keep-alive connections (rmcp's default client
    /// keeps none idle), bounded connect time, no overall timeout (SSE streams are long).
    pub fn default_http_client() -> reqwest::Client {
        Self::http_builder()
            .build()
            // unwrap: a builder without TLS roots or proxies from files cannot fail.
            .expect("reqwest client builds")
    }

    fn http_builder() -> reqwest::ClientBuilder {
        reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .pool_idle_timeout(Duration::from_secs(90))
            .pool_max_idle_per_host(16)
            .tcp_nodelay(true)
            .user_agent(concat!("omni2/", env!("CARGO_PKG_VERSION")))
    }

    /// An HTTP client for one server's own credentials: its headers on every request, its
    /// CA beside the built-in roots, its client certificate. The config check parsed every
    /// PEM already; the error text names no secret.
    pub fn http_client_with(credentials: &Credentials) -> Result<reqwest::Client, String> {
        let mut builder = Self::http_builder().default_headers(credentials.headers.clone());
        if let Some(pem) = &credentials.ca_pem {
            for cert in reqwest::Certificate::from_pem_bundle(pem).map_err(|e| e.to_string())? {
                builder = builder.add_root_certificate(cert);
            }
        }
        if let Some(pem) = &credentials.identity_pem {
            builder =
                builder.identity(reqwest::Identity::from_pem(pem).map_err(|e| e.to_string())?);
        }
        builder.build().map_err(|e| e.to_string())
    }

    async fn session(&self) -> Result<Arc<Session>, Error> {
        let mut slot = self.session.lock().await;
        if let Some(s) = slot.as_ref()
            && !s.service.is_closed()
        {
            return Ok(s.clone());
        }
        *slot = None;
        let auto = ClientLifecycleMode::Auto {
            preferred_versions: vec![ProtocolVersion::V_2026_07_28],
            legacy_version: Some(ProtocolVersion::V_2025_06_18),
        };
        let service = match self.protocol {
            Protocol::Legacy => self.connect(ClientLifecycleMode::Initialize).await,
            Protocol::Auto if self.is_legacy_only.load(Ordering::Relaxed) => {
                self.connect(ClientLifecycleMode::Initialize).await
            }
            Protocol::Auto => match self.connect(auto).await {
                // The server answers `server/discover` but lists only versions that use
                // `initialize` (rmcp does not fall back in that case): fall back ourselves,
                // and remember it for later sessions.
                Err(ClientInitializeError::NoCompatibleProtocolVersion {
                    server_supported,
                    ..
                }) if !server_supported.is_empty()
                    && server_supported.iter().all(ProtocolVersion::has_initialize) =>
                {
                    self.is_legacy_only.store(true, Ordering::Relaxed);
                    self.connect(ClientLifecycleMode::Initialize).await
                }
                other => other,
            },
        }
        .map_err(init_error)?;
        // rmcp may serve a stale tools/list when a refetch fails; a health probe must not.
        service
            .peer()
            .set_response_cache_config(ClientCacheConfig::disabled())
            .await;
        let is_stateless = service
            .peer()
            .peer_info()
            .is_some_and(|info| !info.protocol_version.has_initialize());
        tracing::debug!(url = %self.url, is_stateless, "MCP session opened.");
        let announces_changes = service
            .peer()
            .peer_info()
            .and_then(|info| info.capabilities.tools.as_ref()?.list_changed)
            == Some(true);
        let listener = (is_stateless && announces_changes).then(|| {
            let peer = service.peer().clone();
            tokio::spawn(listen_for_tool_changes(peer, self.tools_changed.clone())).abort_handle()
        });
        if self.has_had_session.swap(true, Ordering::Relaxed) {
            // Changes announced while no session was open were lost.
            self.tools_changed.send_replace(());
        }
        let session = Arc::new(Session {
            service,
            is_stateless,
            has_no_ping: AtomicBool::new(false),
            listener,
        });
        *slot = Some(session.clone());
        Ok(session)
    }

    async fn connect(
        &self,
        lifecycle: ClientLifecycleMode,
    ) -> Result<RunningService<RoleClient, ToolListWatcher>, ClientInitializeError> {
        let config = StreamableHttpClientTransportConfig::with_uri(self.url.as_str())
            .reinit_on_expired_session(true)
            .max_json_response_size(16 << 20);
        let transport = StreamableHttpClientTransport::with_client(self.http.clone(), config);
        let watcher = ToolListWatcher {
            tools_changed: self.tools_changed.clone(),
        };
        watcher.serve_with_lifecycle(transport, lifecycle).await
    }

    async fn forget(&self, dead: &Arc<Session>) {
        let mut slot = self.session.lock().await;
        if slot.as_ref().is_some_and(|s| Arc::ptr_eq(s, dead)) {
            *slot = None;
        }
    }

    /// Runs `op` on the session; a closed transport gets one fresh session and one retry.
    async fn with_session<T, F>(&self, op: F) -> Result<T, Error>
    where
        F: for<'p> Fn(&'p Peer<RoleClient>, &'p Session) -> BoxFuture<'p, Result<T, ServiceError>>,
    {
        let session = self.session().await?;
        match op(session.service.peer(), &session).await {
            Ok(v) => Ok(v),
            // Closed transport, or the server no longer knows the session (404 after rmcp's
            // own re-initialisation failed, or 400 "invalid request" on a known session): a
            // fresh session and one retry. The server refused the request, so it never ran.
            Err(e)
                if matches!(e, ServiceError::TransportClosed)
                    || is_session_rejected(&e, &session) =>
            {
                self.forget(&session).await;
                let session = self.session().await?;
                let result = op(session.service.peer(), &session).await;
                if result.is_err() {
                    self.forget(&session).await;
                }
                result.map_err(service_error)
            }
            Err(e) => {
                let e = service_error(e);
                if e.is_outage() {
                    self.forget(&session).await;
                }
                Err(e)
            }
        }
    }
}

fn init_error(e: ClientInitializeError) -> Error {
    match e {
        ClientInitializeError::JsonRpcError(data) => {
            Error::upstream(Some(data.code.0), data.message)
        }
        ClientInitializeError::Cancelled => Error::internal("initialisation cancelled"),
        other => Error::transport(format!("initialize: {other}")),
    }
}

fn service_error(e: ServiceError) -> Error {
    match e {
        ServiceError::McpError(data) => Error::upstream(Some(data.code.0), data.message),
        ServiceError::UnexpectedResponse => Error::upstream(None, "unexpected response type"),
        ServiceError::Timeout { timeout } => Error::timeout(timeout),
        ServiceError::Cancelled { .. } => Error::internal("request cancelled"),
        other => Error::transport(other),
    }
}

fn is_session_rejected(e: &ServiceError, session: &Session) -> bool {
    if session.is_stateless {
        return false;
    }
    match e {
        ServiceError::McpError(data) => data.code == ErrorCode::INVALID_REQUEST,
        ServiceError::TransportSend(err) => {
            let mut source: Option<&(dyn std::error::Error + 'static)> = Some(err);
            while let Some(current) = source {
                if let Some(StreamableHttpError::<reqwest::Error>::SessionExpired) =
                    current.downcast_ref()
                {
                    return true;
                }
                source = current.source();
            }
            false
        }
        _ => false,
    }
}

fn is_method_not_found(e: &ServiceError) -> bool {
    matches!(e, ServiceError::McpError(data) if data.code == ErrorCode::METHOD_NOT_FOUND)
}

async fn list_all(peer: &Peer<RoleClient>) -> Result<Vec<ToolInfo>, ServiceError> {
    let tools = peer.list_all_tools().await?;
    Ok(tools
        .into_iter()
        .map(|t| ToolInfo {
            name: t.name.to_string(),
            description: t.description.as_ref().map(|d| d.to_string()),
            read_only_hint: t.annotations.as_ref().and_then(|a| a.read_only_hint),
            input_schema: super::bounded_schema(t.input_schema.clone()),
            definition: Arc::new(t),
        })
        .collect())
}

impl McpClient for HttpMcpClient {
    fn probe(&self) -> BoxFuture<'_, Result<(), Error>> {
        self.with_session(|peer, session| {
            async move {
                // The stateless revision has no `ping`; some servers lack it too. Fall back
                // to `tools/list`, which every tool server answers.
                if session.is_stateless || session.has_no_ping.load(Ordering::Relaxed) {
                    return list_all(peer).await.map(drop);
                }
                match peer
                    .send_request(ClientRequest::PingRequest(PingRequest::default()))
                    .await
                {
                    Ok(ServerResult::EmptyResult(_)) => Ok(()),
                    Ok(_) => Err(ServiceError::UnexpectedResponse),
                    Err(e) if is_method_not_found(&e) => {
                        session.has_no_ping.store(true, Ordering::Relaxed);
                        list_all(peer).await.map(drop)
                    }
                    Err(e) => Err(e),
                }
            }
            .boxed()
        })
        .boxed()
    }

    fn reset(&self) -> BoxFuture<'_, ()> {
        async move {
            // In-flight calls hold their own `Arc<Session>`; only new ones get a new session.
            self.session.lock().await.take();
        }
        .boxed()
    }

    fn list_tools(&self) -> BoxFuture<'_, Result<Vec<ToolInfo>, Error>> {
        self.with_session(|peer, _| list_all(peer).boxed()).boxed()
    }

    fn tool_list_changes(&self) -> Option<watch::Receiver<()>> {
        Some(self.tools_changed.subscribe())
    }

    fn call_tool<'a>(
        &'a self,
        tool: &'a str,
        arguments: Map<String, Value>,
    ) -> BoxFuture<'a, Result<ToolResult, Error>> {
        async move {
            let result = self
                .with_session(|peer, _| {
                    let mut params = CallToolRequestParams::new(tool.to_owned());
                    params.arguments = Some(arguments.clone());
                    async move { peer.call_tool(params).await }.boxed()
                })
                .await?;
            let is_error = result.is_error == Some(true);
            let body = serde_json::to_value(&result).map_err(Error::internal)?;
            Ok(ToolResult { body, is_error })
        }
        .boxed()
    }
}
