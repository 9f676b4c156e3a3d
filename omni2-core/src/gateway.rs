//! `/mcp`: omni2 as an MCP server (streamable HTTP) in front of every configured server.
//!
//! # Transport: rmcp's own, bridged onto actix-web
//! rmcp's [`StreamableHttpService`] already implements the transport of every revision we
//! serve: sessions (`Mcp-Session-Id`, the standalone GET stream, DELETE) for 2025-06-18 and
//! 2025-11-25; the stateless 2026-07-28 revision (`server/discover`, per-request
//! `_meta`, `subscriptions/listen`), with its mirrored `Mcp-Method`/`Mcp-Name`/
//! `MCP-Protocol-Version` headers checked against the body (400 with JSON-RPC `-32020`).
//! Writing that again on actix types would be a second, less tested copy of a spec. So
//! `bridge` turns the actix request into an `http` 1 request (the body is read first,
//! bounded), calls the service, and streams its answer back (SSE included). The only
//! per-request state it adds is the caller's verified [`Identity`](crate::identity::Identity), in the request's
//! extensions, which rmcp hands to our handler.
//!
//! # Identity and credentials
//! Identity comes only from the sidecar's identity-wire headers, checked by the same
//! extractor as REST (401/403 otherwise, before any MCP processing). A session is bound to
//! the user who opened it. Nothing of the client's request (its bearer token included)
//! reaches a backend: tool calls go out on omni2's own sessions with the servers.
//!
//! # Layout
//! - `catalog`: the namespaced tool list built from the coordinator's snapshot, filtered
//!   per caller; what counts as a change worth `notifications/tools/list_changed`.
//! - `errors`: the JSON-RPC errors of refused and failed calls.
//! - `handler`: the rmcp [`ServerHandler`](rmcp::ServerHandler): `tools/list`, `tools/call`
//!   (through [`crate::routes`]' call path: roles, rate limit, breaker, cache, timeout,
//!   metric, audit),
//!   `ping`, `server/discover`, change notifications.
//! - `fast`: a plain stateless `tools/call` answered without rmcp's per-request service,
//!   through the handler's own call and rmcp's message types (anything else: rmcp).
//! - `bridge`: the actix route and the session-owner check.
//!
//! Imports point down this list.

mod bridge;
mod catalog;
mod errors;
mod fast;
mod handler;
#[cfg(test)]
mod tests;

use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use actix_web::web;
use rmcp::transport::streamable_http_server::session::local::{LocalSessionManager, SessionConfig};
use rmcp::transport::{StreamableHttpServerConfig, StreamableHttpService};

pub use catalog::Catalog;
pub use errors::codes;

use crate::shared::Shared;
use handler::GatewayHandler;

/// Largest accepted `/mcp` request body.
pub const MAX_BODY_BYTES: usize = 1 << 20;

/// The `/mcp` endpoint's state (one per [`crate::Omni2`], shared by every worker).
pub struct Gateway {
    service: StreamableHttpService<GatewayHandler, LocalSessionManager>,
    owners: bridge::SessionOwners,
    handler: GatewayHandler,
    /// `None`: every request takes the full path (tests compare the two).
    fast: Option<fast::FastPath>,
    /// Requests the fast path answered (tests check they took it).
    fast_answers: AtomicU64,
}

impl std::fmt::Debug for Gateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gateway").finish_non_exhaustive()
    }
}

impl Gateway {
    /// The endpoint for `shared`'s servers and `gateway` config.
    pub fn new(shared: Arc<Shared>) -> Self {
        let config = &shared.config.gateway;
        let mut sessions = LocalSessionManager::default();
        let mut session_config = SessionConfig::default();
        session_config.keep_alive = Some(config.session_idle_timeout);
        sessions.session_config = session_config;
        // JSON, not a one-event SSE stream, for a stateless (2026-07-28) request answered
        // by one message; `subscriptions/listen` and sessions still stream.
        let http_config = StreamableHttpServerConfig::default()
            .with_json_response(true)
            .with_allowed_hosts(config.allowed_hosts.clone())
            .with_max_request_body_bytes(MAX_BODY_BYTES);
        let owners = bridge::SessionOwners::new(config.session_idle_timeout);
        let handler = GatewayHandler::new(shared);
        let fast = Some(fast::FastPath::new(&http_config));
        let factory = handler.clone();
        let service = StreamableHttpService::new(
            move || Ok(factory.clone()),
            Arc::new(sessions),
            http_config,
        );
        Self {
            service,
            owners,
            handler,
            fast,
            fast_answers: AtomicU64::new(0),
        }
    }

    /// This endpoint with every request on rmcp's full path.
    #[cfg(test)]
    fn without_fast_path(mut self) -> Self {
        self.fast = None;
        self
    }

    /// Ends every session and stream (on shutdown).
    pub fn close(&self) {
        self.service.config.cancellation_token.cancel();
    }

    /// Mounts `/mcp` (GET, POST, DELETE).
    pub fn configure(self: &Arc<Self>, cfg: &mut web::ServiceConfig) {
        cfg.service(
            web::resource("/mcp")
                .app_data(web::Data::new(self.clone()))
                .app_data(web::PayloadConfig::new(MAX_BODY_BYTES))
                .to(bridge::serve),
        );
    }
}
