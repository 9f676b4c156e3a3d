//! omni2-core: the library an OMNI2 backend embeds behind the gateway.
//!
//! It trusts only the identity headers the gateway sets (optionally HMAC-signed), watches
//! MCP servers (health probes, circuit breakers), caches tool results, proxies tool calls and
//! streams status over a WebSocket.
//!
//! ```no_run
//! # async fn run() -> anyhow::Result<()> {
//! use actix_web::{App, HttpServer};
//! let config = omni2_core::config::Config::embedded(&omni2_core::config::ProcessEnv)?;
//! let omni2 = omni2_core::Omni2::from_config(config);
//! let handle = omni2.spawn();
//! let app = omni2.clone();
//! HttpServer::new(move || App::new().configure(|cfg| app.configure(cfg)))
//!     .bind("127.0.0.1:8000")?
//!     .run()
//!     .await?;
//! handle.shutdown().await;
//! # Ok(()) }
//! ```
//!
//! # Layout
//! - [`config`]: YAML → checked [`config::Config`], every problem at once.
//! - [`identity`]: the [`identity::Identity`] extractor, signature check, role guard.
//! - [`mcp`]: the [`mcp::McpClient`] seam and its rmcp streamable-HTTP implementation.
//! - [`breaker`]: the circuit breaker state machine (pure, takes `now`).
//! - [`health`]: consecutive thresholds and degraded-by-latency (pure).
//! - [`coordinator`]: the task owning server state; snapshot (`watch`) and events (`broadcast`).
//! - [`cache`]: the tool-result cache (moka, bytes-bounded, per-tool TTL, singleflight), with
//!   an optional level shared through Redis ([`cache::shared`]).
//! - [`audit`]: the audit trail of tool calls, cache invalidations and control actions
//!   (the writer is the `audit-log` crate's).
//! - [`api_error`]: [`api_error::ApiError`], the one error vocabulary of bodies, logs and
//!   the `result` label of `omni2_tool_calls_total`.
//! - [`control_record`]: the vocabulary of control requests.
//! - [`shared`]: the [`Shared`] state routes and tasks use, and [`shared::TaskHealth`].
//! - [`control`]: control actions (probe now, reset breaker, invalidate cache,
//!   disable/enable), one entry point for REST and the WebSocket, behind the role guard.
//! - [`routes`]: REST routes and the status page ([`status_page`]); [`ws`]: `/ws/mcp-status`.
//! - [`gateway`]: `/mcp`, omni2 as an MCP server aggregating every server's tools (calls go
//!   through the REST call path in [`routes`]).
//! - [`metrics`]: Prometheus metrics.
//! - [`reload`]: configuration hot reload (file changes, SIGHUP): servers in and out
//!   through the coordinator, without a restart.
//!
//! Imports point down this list's dependency order, never back to the crate root: the root
//! (`Omni2`) wires the modules together and no module uses it.

pub mod api_error;
pub mod audit;
pub mod breaker;
pub mod cache;
pub mod config;
pub mod control;
pub mod control_record;
pub mod coordinator;
pub mod gateway;
pub mod health;
pub mod identity;
mod limits;
pub mod mcp;
pub mod metrics;
pub mod reload;
pub mod routes;
pub mod shared;
pub mod status_page;
#[cfg(any(test, feature = "test-util"))]
pub mod test_util;
pub mod ws;

use std::sync::{Arc, Mutex};

use actix_web::web;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::audit::Audit;
use crate::cache::ToolCache;
use crate::config::Config;
use crate::coordinator::Coordinator;
use crate::gateway::Gateway;
use crate::identity::IdentityVerifier;
use crate::mcp::McpClient;
use crate::metrics::Metrics;
pub use crate::shared::Shared;
use crate::shared::TaskHealth;

/// An omni2 instance: mount it with [`Omni2::configure`], start it with [`Omni2::spawn`].
/// Cheap to clone (one per actix worker).
#[derive(Clone, Debug)]
pub struct Omni2 {
    shared: Arc<Shared>,
    coordinator: Arc<Mutex<Option<Coordinator>>>,
    /// `/mcp`, unless `gateway.enabled: false`.
    gateway: Option<Arc<Gateway>>,
}

impl Omni2 {
    /// Builds an instance talking to the configured servers over streamable HTTP.
    pub fn from_config(config: Config) -> Self {
        let make = reload::http_clients();
        let clients = config.servers.iter().map(|s| make(s)).collect();
        Self::with_clients(config, clients)
    }

    /// Builds an instance with given clients, one per configured server, in order (tests
    /// pass fakes here).
    pub fn with_clients(config: Config, clients: Vec<Arc<dyn McpClient>>) -> Self {
        assert_eq!(
            clients.len(),
            config.servers.len(),
            "one MCP client per configured server"
        );
        if config.identity_secret.is_none() {
            tracing::warn!(
                "No identity_secret configured: identity headers are trusted WITHOUT a signature. \
                 Anyone who can reach this port can claim any identity; run it only behind the \
                 gateway on an internal network."
            );
        }
        let metrics = Metrics::new();
        let shared_cache = config.cache.redis.as_ref().and_then(|r| {
            crate::cache::SharedCache::new(r, metrics.cache.redis_errors.clone())
                .inspect_err(|e| tracing::error!(error = %e, "Shared cache off."))
                .ok()
        });
        let cache = Arc::new(
            ToolCache::new(config.cache.max_bytes, metrics.cache.clone()).with_shared(shared_cache),
        );
        let servers = config.servers.iter().cloned().zip(clients).collect();
        let (registry, published, coordinator) = coordinator::build(
            servers,
            config.max_concurrent_probes,
            config.websocket.queue,
            metrics.clone(),
        );
        let coordinator =
            coordinator.with_cache_stats(cache.clone(), config.websocket.cache_stats_interval);
        let verifier = Arc::new(IdentityVerifier::new(
            config.identity_headers.clone(),
            config.identity_secret.as_deref(),
        ));
        let (shutdown, _) = watch::channel(false);
        let audit = Audit::new(config.audit.as_ref(), metrics.audit.clone());
        let shared = Arc::new(Shared {
            limits: limits::Limits::default(),
            audit,
            config,
            registry,
            published,
            cache,
            metrics,
            hub: ws::Hub::default(),
            shutdown,
            tasks: TaskHealth::default(),
            verifier,
        });
        let gateway = shared
            .config
            .gateway
            .enabled
            .then(|| Arc::new(Gateway::new(shared.clone())));
        Self {
            shared,
            coordinator: Arc::new(Mutex::new(Some(coordinator))),
            gateway,
        }
    }

    /// The shared state (for embedding apps and tests).
    pub fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// Mounts every route and the app data they need. Actix calls an app factory once per
    /// worker thread; each call here gets that worker its own WebSocket fan-out.
    pub fn configure(&self, cfg: &mut web::ServiceConfig) {
        cfg.app_data(web::Data::new(self.shared.clone()))
            .app_data(web::Data::new(self.shared.verifier.clone()))
            .app_data(web::Data::new(self.shared.metrics.clone()))
            .app_data(ws::WorkerFanout::default());
        routes::configure(cfg);
        if let Some(gateway) = &self.gateway {
            gateway.configure(cfg);
        }
    }

    /// Starts the background tasks (coordinator, cache stats) on the current tokio runtime.
    /// Call once; later calls return a handle with nothing to stop.
    ///
    /// The coordinator is not restarted if it dies (panics, or ends before shutdown): its
    /// state is the breakers' only writer and cannot be rebuilt under running calls. Instead
    /// [`Shared::tasks`] records it, `/health` answers 503, and [`Omni2Handle::failed`]
    /// resolves, so the embedding process can exit and be restarted clean.
    pub fn spawn(&self) -> Omni2Handle {
        let coordinator = self
            .coordinator
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        let mut tasks: Vec<JoinHandle<()>> = coordinator
            .map(|c| tokio::spawn(supervise_coordinator(c, self.shared.clone())))
            .into_iter()
            .collect();
        if !tasks.is_empty()
            && let Some(gateway) = self.gateway.clone()
        {
            // On shutdown, end `/mcp` sessions and their streams too.
            let mut shutdown = self.shared.shutdown.subscribe();
            tasks.push(tokio::spawn(async move {
                let _ = shutdown.wait_for(|stop| *stop).await;
                gateway.close();
            }));
        }
        Omni2Handle {
            shared: self.shared.clone(),
            tasks,
        }
    }
}

/// Running background tasks. [`Omni2Handle::shutdown`] (or drop) stops them and closes
/// every status WebSocket with 1001.
#[derive(Debug)]
pub struct Omni2Handle {
    shared: Arc<Shared>,
    tasks: Vec<JoinHandle<()>>,
}

/// Runs the coordinator; records its death unless it ended because of shutdown.
async fn supervise_coordinator(coordinator: Coordinator, shared: Arc<Shared>) {
    let run = tokio::spawn(coordinator.run(shared.shutdown.subscribe()));
    let ended = run.await;
    if ended.is_ok() && *shared.shutdown.borrow() {
        return;
    }
    tracing::error!(
        task = "coordinator",
        panicked = ended.is_err_and(|e| e.is_panic()),
        "The health coordinator died: health probes stopped, /health now answers 503."
    );
    shared.tasks.fail("coordinator");
}

impl Omni2Handle {
    /// Resolves when a background task has died (with its name). The `omni2` binary exits
    /// on it; an embedding app should too.
    pub async fn failed(&self) -> &'static str {
        self.shared.tasks.wait_failed().await
    }

    /// Signals shutdown and waits for the background tasks to end.
    pub async fn shutdown(mut self) {
        self.shared.shutdown.send_replace(true);
        for t in self.tasks.drain(..) {
            let _ = t.await;
        }
    }
}

impl Drop for Omni2Handle {
    fn drop(&mut self) {
        self.shared.shutdown.send_replace(true);
    }
}
