//! The rmcp server handler behind `/mcp`. One value per session (or stateless request),
//! all sharing one [`State`].

use std::borrow::Cow;
use std::sync::Arc;
use std::time::Duration;

use actix_web::web;
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, ErrorData, Implementation,
    InitializeResult, JsonObject, ListToolsResult, PaginatedRequestParams, ProtocolVersion,
    ResultType, ServerCapabilities, SubscriptionFilter, Tool,
};
use rmcp::service::{NotificationContext, RequestContext, SubscriptionContext};
use rmcp::{Peer, RoleServer, ServerHandler};
use serde_json::Value;

use super::catalog::{self, Catalog, CatalogCache, Fingerprint};
use super::errors;
use crate::identity::Identity;
use crate::routes::{self, Body, Refusal};
use crate::shared::Shared;

/// `_meta` key of a tool result: `true` when omni2 served it from its cache.
pub const CACHED_META: &str = "omni2/cached";

/// How often a session's notifier looks whether its client is gone.
const CLOSED_CHECK: Duration = Duration::from_secs(5);

pub(super) struct State {
    shared: web::Data<Arc<Shared>>,
    catalog: CatalogCache,
}

/// The handler rmcp runs; cheap to clone.
#[derive(Clone)]
pub struct GatewayHandler(Arc<State>);

impl GatewayHandler {
    pub fn new(shared: Arc<Shared>) -> Self {
        Self(Arc::new(State {
            shared: web::Data::new(shared),
            catalog: CatalogCache::default(),
        }))
    }

    pub(super) fn catalog(&self) -> Arc<Catalog> {
        let snapshot = self.0.shared.published.snapshot.borrow().clone();
        let shared = &self.0.shared;
        // Per-tool roles from the registry: after a reload, `shared.config.servers` is stale.
        self.0.catalog.get(snapshot, |snapshot| {
            Catalog::build_with(&shared.config, snapshot, |server, tool| {
                let entry = shared.registry.entry(server)?;
                entry
                    .config
                    .tools
                    .get(tool)?
                    .roles
                    .as_deref()
                    .map(Into::into)
            })
        })
    }

    /// `tools/call` of `name` for `id`: what rmcp's `call_tool` answers, and the fast
    /// path ([`super::fast`]) too, so both give the same result, refusals included.
    pub(super) async fn call(
        &self,
        id: &Identity,
        name: &str,
        arguments: Option<JsonObject>,
    ) -> Result<CallToolResult, ErrorData> {
        let shared = &self.0.shared;
        let Some((server, tool)) = catalog::split(name, &shared.config.gateway.separator) else {
            return Err(ErrorData::invalid_params(
                format!("unknown tool {name:?}"),
                Some(serde_json::json!({"error": "unknown_tool"})),
            ));
        };
        let arguments = arguments.unwrap_or_default();
        let outcome = routes::run_tool_call(shared, id, server.to_owned(), tool.to_owned(), || {
            Ok(arguments)
        })
        .await;
        match outcome {
            Ok(answer) => tool_result(answer.body, answer.is_hit),
            Err(Refusal::Identity(e)) => Err(errors::identity(e)),
            Err(Refusal::Api(e)) => Err(errors::api(&e, name, server, tool)),
        }
    }

    /// Waits for the next change of what clients list; `false` once omni2 shuts down.
    async fn next_change(&self, last: &mut Fingerprint) -> bool {
        let mut snapshots = self.0.shared.published.snapshot.clone();
        let mut shutdown = self.0.shared.shutdown.subscribe();
        loop {
            if *shutdown.borrow_and_update() {
                return false;
            }
            let now = Fingerprint::of(&snapshots.borrow_and_update());
            if now != *last {
                *last = now;
                return true;
            }
            tokio::select! {
                changed = snapshots.changed() => if changed.is_err() { return false },
                _ = shutdown.changed() => {}
            }
        }
    }

    /// Sends `notifications/tools/list_changed` on a session until its client is gone.
    async fn notify_session(self, peer: Peer<RoleServer>) {
        let mut last = Fingerprint::of(&self.0.shared.published.snapshot.borrow());
        let mut check = tokio::time::interval(CLOSED_CHECK);
        loop {
            tokio::select! {
                more = self.next_change(&mut last) => {
                    if !more || peer.notify_tool_list_changed().await.is_err() {
                        return;
                    }
                }
                _ = check.tick() => if peer.is_transport_closed() { return },
            }
        }
    }
}

/// The caller's identity, put there by the bridge. Missing means a bug: refuse.
fn caller(extensions: &rmcp::model::Extensions) -> Result<&Identity, ErrorData> {
    extensions
        .get::<http::request::Parts>()
        .and_then(|p| p.extensions.get::<Identity>())
        .ok_or_else(|| {
            tracing::error!("An /mcp request reached the handler without an identity.");
            ErrorData::internal_error("no verified identity", None)
        })
}

/// A stored or fresh `CallToolResult` JSON, with the cache flag in `_meta`.
fn tool_result(body: Body, is_hit: bool) -> Result<CallToolResult, ErrorData> {
    let parsed = match body {
        Body::Text(text) => serde_json::from_str::<CallToolResult>(&text),
        Body::Value(value) => serde_json::from_value::<CallToolResult>(value),
    };
    let mut result = parsed.map_err(|e| {
        tracing::warn!(error = %e, "A tool result is not a CallToolResult.");
        ErrorData::internal_error("the MCP server's result is not a tool result", None)
    })?;
    // A result stored from an older server has no `resultType`; 2026-07-28 callers need it
    // (rmcp drops it again for callers on older revisions).
    result.result_type.get_or_insert(ResultType::COMPLETE);
    result
        .meta
        .get_or_insert_with(Default::default)
        .insert(CACHED_META.to_owned(), Value::Bool(is_hit));
    Ok(result)
}

impl ServerHandler for GatewayHandler {
    fn get_info(&self) -> InitializeResult {
        InitializeResult::new(
            ServerCapabilities::builder()
                .enable_tools()
                .enable_tool_list_changed()
                .build(),
        )
        .with_server_info(Implementation::new("omni2", env!("CARGO_PKG_VERSION")))
        .with_instructions(format!(
            "Tools of several MCP servers, named server{}tool.",
            self.0.shared.config.gateway.separator
        ))
    }

    fn supported_protocol_versions(&self) -> Cow<'static, [ProtocolVersion]> {
        Cow::Borrowed(&[
            ProtocolVersion::V_2026_07_28,
            ProtocolVersion::V_2025_11_25,
            ProtocolVersion::V_2025_06_18,
        ])
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        let id = caller(&context.extensions)?;
        Ok(ListToolsResult::with_all_items(self.catalog().visible(id)))
    }

    fn get_tool(&self, name: &str) -> Option<Tool> {
        self.catalog().get(name).cloned()
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        let id = caller(&context.extensions)?;
        self.call(id, &request.name, request.arguments)
            .await
            .map(Into::into)
    }

    async fn on_initialized(&self, context: NotificationContext<RoleServer>) {
        tokio::spawn(self.clone().notify_session(context.peer));
    }

    fn accepted_subscription_filter(
        &self,
        requested: &SubscriptionFilter,
    ) -> Option<SubscriptionFilter> {
        Some(requested.clone())
    }

    async fn listen(&self, context: SubscriptionContext) -> Result<(), ErrorData> {
        let mut last = Fingerprint::of(&self.0.shared.published.snapshot.borrow());
        loop {
            tokio::select! {
                more = self.next_change(&mut last) => {
                    if !more || context.sink().notify_tool_list_changed().await.is_err() {
                        return Ok(());
                    }
                }
                _ = context.cancelled() => return Ok(()),
            }
        }
    }
}
