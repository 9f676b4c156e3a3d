//! Serving, start to stop: load the configuration, enforce the development-mode rules,
//! build the state, serve, hot-reload, and stop when told. `main.rs` only parses
//! arguments, sets up logging, binds and turns signals into the `shutdown` future.
//!
//! Background tasks and what happens when one dies (it is logged, `/readyz` turns 503 while
//! it is down, and [`crate::supervise`] restarts it after a growing delay):
//! - the config and revocation watcher ([`crate::reload::watch`]): restarted up to
//!   [`Restart::DEFAULT`]`.max_restarts` times; after that [`run`] stops serving and fails,
//!   so the process exits non-zero and its supervisor (systemd, Kubernetes) restarts it —
//!   a sidecar that silently stops picking up revocations must not keep answering;
//! - each remote key set's refresh ([`crate::keys::jwks`]): restarted the same way; past
//!   its restarts `/readyz` stays 503 and the keys age out at `max_stale` (then deny).

use std::future::Future;
use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, bail};

use crate::config::{DEV_SECRET_ENV, ProcessEnv, Runtime};
use crate::http::{AppState, serve};
use crate::reload::watch;
use crate::supervise::{Restart, supervise};

/// Where the configuration comes from.
#[derive(Clone, Debug)]
pub enum ConfigSource {
    /// A YAML file, hot-reloaded.
    File(PathBuf),
    /// The built-in development config: loopback only, never reloaded.
    Embedded,
}

/// A loaded configuration and how to serve it.
#[derive(Debug)]
pub struct Serve {
    pub rt: Runtime,
    pub source: ConfigSource,
    /// Worker threads of the main listener.
    pub workers: usize,
}

impl Serve {
    /// Loads and validates the configuration (every problem in the error); logs its
    /// warnings. Workers: the config's `workers`, else one per CPU.
    pub fn load(source: ConfigSource) -> anyhow::Result<Serve> {
        let rt = match &source {
            ConfigSource::File(path) => Runtime::load(path, &ProcessEnv),
            ConfigSource::Embedded => Runtime::embedded(&ProcessEnv),
        }
        .map_err(|problems| anyhow::anyhow!("{problems}"))?;
        for w in &rt.warnings {
            tracing::warn!(warning = %w, "Configuration warning.");
        }
        let workers = rt
            .workers
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
        Ok(Serve {
            rt,
            source,
            workers,
        })
    }

    /// The development-mode rule: the embedded config serves loopback only. Call it before
    /// binding; [`run`] checks its listeners again.
    pub fn check_listen(&self, addr: SocketAddr) -> anyhow::Result<()> {
        if self.embedded() && !addr.ip().is_loopback() {
            bail!(
                "refusing to listen on {addr} with the embedded development config; pass --config with a real one"
            );
        }
        Ok(())
    }

    fn embedded(&self) -> bool {
        matches!(self.source, ConfigSource::Embedded)
    }
}

/// Serves `serve` on `listener` (and `admin`, for health and metrics) until `shutdown`
/// resolves, then drains and returns. Needs an actix/tokio runtime (see `main.rs`).
pub async fn run(
    listener: TcpListener,
    admin: Option<TcpListener>,
    serve: Serve,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    for l in std::iter::once(&listener).chain(admin.as_ref()) {
        serve.check_listen(l.local_addr().context("listener address")?)?;
    }
    if serve.embedded() && std::env::var_os(DEV_SECRET_ENV).is_none() {
        tracing::warn!(
            "DEVELOPMENT MODE: no {DEV_SECRET_ENV} set, signing with a fixed, publicly known secret. Never use this outside a laptop."
        );
    }
    let Serve {
        rt,
        source,
        workers,
    } = serve;
    // Inside the runtime, so the remote key sets start refreshing.
    let state = Arc::new(AppState::new(rt));
    run_state(state, listener, admin, source, workers, shutdown).await
}

/// [`run`] once the state exists; tests call it to keep a handle on the state.
pub async fn run_state(
    state: Arc<AppState>,
    listener: TcpListener,
    admin: Option<TcpListener>,
    source: ConfigSource,
    workers: usize,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let watched = state.clone();
    let watcher = async move {
        match source {
            ConfigSource::File(path) => {
                let state = watched;
                supervise(
                    "config_watcher",
                    state.tasks.clone(),
                    Restart::DEFAULT,
                    move || {
                        let (state, path) = (state.clone(), path.clone());
                        async move {
                            watch(state, path, Box::new(ProcessEnv))
                                .await
                                .map_err(|e| format!("cannot watch the configuration: {e}"))
                        }
                    },
                )
                .await
            }
            ConfigSource::Embedded => std::future::pending().await,
        }
    };
    let mut died = None;
    let stop = async {
        tokio::select! {
            () = shutdown => {}
            why = watcher => died = Some(why),
        }
    };
    serve(state, listener, admin, workers, stop).await?;
    match died {
        Some(why) => bail!("the config watcher died and has no restarts left: {why}"),
        None => {
            tracing::info!("Stopped.");
            Ok(())
        }
    }
}
