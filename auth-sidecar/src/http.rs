//! The HTTP surface: shared state and route mounting.

pub mod answer;
mod front;
mod health;
mod resource_metadata;
mod verify;

use std::future::Future;
use std::net::TcpListener;
use std::sync::Arc;

use actix_http::Request;
use actix_service::IntoServiceFactory;
use actix_web::body::BoxBody;
use actix_web::dev::{AppConfig, Response, ServiceFactory};
use actix_web::{App, HttpServer, web};
use arc_swap::ArcSwap;

use crate::audit::{AllowSampler, restart_needed};
use crate::config::Runtime;
use crate::mcp_resource::WELL_KNOWN;
use crate::metrics::{DecisionCounters, Metrics};
use crate::supervise::TaskHealth;

pub use front::is_forward_auth;
pub use verify::{facts_from_parts, facts_from_request};

/// A configuration with its pre-resolved metric handles; swapped as a unit on reload.
#[derive(Debug)]
pub struct Active {
    pub rt: Runtime,
    pub counters: DecisionCounters,
}

/// State shared by every worker.
#[derive(Debug)]
pub struct AppState {
    /// Lock-free reads on the hot path; a reload stores a new `Arc`, and requests already
    /// holding the old one finish on it.
    pub active: ArcSwap<Active>,
    pub metrics: Metrics,
    /// The supervised app-level tasks (the config watcher); down ones fail `/readyz`.
    pub tasks: Arc<TaskHealth>,
    /// The audit trail, set up from the first configuration (a reload changes only which
    /// allows are sampled).
    pub audit: audit_log::AuditLog,
    pub audit_sampler: AllowSampler,
    #[cfg(any(test, feature = "test-util"))]
    pub test_hooks: TestHooks,
}

/// Faults tests can inject into a running sidecar.
#[cfg(any(test, feature = "test-util"))]
#[derive(Debug, Default)]
pub struct TestHooks {
    /// The config watcher panics on its next wake-up (a file event or SIGHUP).
    pub panic_watcher: std::sync::atomic::AtomicBool,
}

impl AppState {
    /// Wraps a configuration; inside a tokio runtime this also starts its background tasks
    /// (remote key refresh, revocation subscriber).
    pub fn new(rt: Runtime) -> Self {
        rt.start_background();
        let metrics = Metrics::new();
        let counters = metrics.activate(&rt);
        let audit = audit_log::AuditLog::start(rt.audit.as_ref(), metrics.audit.clone());
        AppState {
            active: ArcSwap::from_pointee(Active { rt, counters }),
            metrics,
            tasks: Arc::default(),
            audit,
            audit_sampler: AllowSampler::default(),
            #[cfg(any(test, feature = "test-util"))]
            test_hooks: TestHooks::default(),
        }
    }

    /// Installs a new, already validated configuration (see [`Runtime::adopt`] to carry
    /// state over from the current one).
    pub fn install(&self, rt: Runtime) {
        rt.start_background();
        if restart_needed(self.audit.settings(), rt.audit.as_ref()) {
            tracing::warn!(
                "audit sink, file, max_bytes, keep and queue take effect only after a restart; audit.allows applies now."
            );
        }
        let counters = self.metrics.activate(&rt);
        self.active.store(Arc::new(Active { rt, counters }));
    }
}

/// Mounts the forwardAuth endpoints: `/verify`, anything under it, and the legacy
/// `/api/v1/auth/validate`, for every method; and the MCP resources' public metadata
/// (`GET /.well-known/oauth-protected-resource[/...]`).
pub fn configure_verify(cfg: &mut web::ServiceConfig) {
    cfg.route("/verify", web::route().to(verify::verify))
        .route("/verify/{tail:.*}", web::route().to(verify::verify))
        .route("/api/v1/auth/validate", web::route().to(verify::verify))
        .route(WELL_KNOWN, web::get().to(resource_metadata::metadata))
        .route(
            &format!("{WELL_KNOWN}/{{tail:.*}}"),
            web::get().to(resource_metadata::metadata),
        );
}

/// Mounts `/healthz`, `/readyz` and `/metrics`.
pub fn configure_admin(cfg: &mut web::ServiceConfig) {
    cfg.route("/healthz", web::get().to(health::healthz))
        .route("/readyz", web::get().to(health::readyz))
        .route("/metrics", web::get().to(health::metrics));
}

/// The main listener's service over `state`: forwardAuth calls answered without the App
/// layer (`src/http/front.rs`), the rest by the App: the forwardAuth routes again, the resource
/// metadata, and with `with_admin` the health and metrics endpoints.
pub fn main_service(
    state: &Arc<AppState>,
    with_admin: bool,
) -> impl ServiceFactory<
    Request,
    Config = AppConfig,
    Response = Response<BoxBody>,
    Error = actix_web::Error,
    InitError = (),
> + use<> {
    let app = App::new()
        .app_data(web::Data::from(state.clone()))
        .configure(configure_verify);
    let app = if with_admin {
        app.configure(configure_admin)
    } else {
        app
    };
    front::Front {
        state: state.clone(),
        app: app.into_factory(),
    }
}

/// Serves until `shutdown` resolves, then stops gracefully (requests in flight finish).
/// Signals are the caller's business. With an admin listener, health and metrics live
/// only there; otherwise beside `/verify`.
pub async fn serve(
    state: Arc<AppState>,
    listener: TcpListener,
    admin: Option<TcpListener>,
    workers: usize,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let split = admin.is_some();
    let main_state = state.clone();
    let main = HttpServer::new(move || main_service(&main_state, !split))
        .workers(workers)
        .disable_signals()
        .listen(listener)?
        .run();
    let admin = match admin {
        None => None,
        Some(admin) => Some(
            HttpServer::new(move || {
                App::new()
                    .app_data(web::Data::from(state.clone()))
                    .configure(configure_admin)
            })
            .workers(1)
            .disable_signals()
            .listen(admin)?
            .run(),
        ),
    };
    let handles: Vec<_> = std::iter::once(main.handle())
        .chain(admin.as_ref().map(|a| a.handle()))
        .collect();
    let servers = async move {
        match admin {
            None => main.await,
            Some(admin) => {
                let (a, b) = tokio::join!(main, admin);
                a.and(b)
            }
        }
    };
    tokio::pin!(servers);
    tokio::select! {
        served = &mut servers => return served,
        () = shutdown => {}
    }
    // The servers must keep being polled while they stop: that is where they drain.
    let stops = async {
        for handle in &handles {
            handle.stop(true).await;
        }
    };
    let (served, ()) = tokio::join!(servers, stops);
    served
}
