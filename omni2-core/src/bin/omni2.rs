//! `omni2`: the reference backend embedding omni2-core.
//!
//! `omni2 [--config FILE] [--listen ADDR]`, ADDR = `127.0.0.1:PORT` or `unix:/path`. Without
//! `--config`: the embedded default (127.0.0.1:8000, no servers unless `OMNI2_MCP_URL`,
//! unsigned identity accepted with a warning). Prints `omni2 listening on ADDR` on stdout once
//! bound (port 0 shows the real port). SIGTERM/SIGINT: WebSockets close with 1001, in-flight
//! requests finish, then it exits. SIGHUP, or a change of the `--config` file, reloads its
//! `servers` (see `omni2_core::reload`).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use actix_web::{App, HttpServer};
use anyhow::Context;
use clap::Parser;
use omni2_core::Omni2;
use omni2_core::config::{Config, ProcessEnv, check_listen};

#[derive(Debug, Parser)]
#[command(
    name = "omni2",
    version,
    about = "OMNI2 backend: MCP health, breakers, tool cache, status WebSocket"
)]
struct Args {
    /// YAML configuration; without it, the embedded default.
    #[arg(long)]
    config: Option<PathBuf>,
    /// `HOST:PORT` or `unix:/path/to.sock`; overrides the config's `listen`.
    #[arg(long)]
    listen: Option<String>,
    /// HTTP worker threads (default: one per CPU).
    #[arg(long)]
    workers: Option<usize>,
    /// Log as JSON lines.
    #[arg(long)]
    log_json: bool,
}

fn main() -> ExitCode {
    let args = Args::parse();
    // rmcp's worker logs every refused connection at ERROR; the coordinator already reports
    // state changes once, with the error text. actix-http's dispatcher logs every malformed
    // or oversized request (a client's header flood, answered 431) at ERROR: a log amplifier
    // for clients, nothing for a person to do. A broken stderr loses lines, never the process.
    safe_log::init(
        "info,rmcp=warn,rmcp::transport::worker=off,actix_http::h1::dispatcher=off",
        if args.log_json {
            safe_log::Format::Json
        } else {
            safe_log::Format::Text
        },
    );
    match actix_web::rt::System::new().block_on(run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            safe_log::stderr_line(&format!("omni2: {e:#}"));
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> anyhow::Result<()> {
    let config = match &args.config {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading {}", path.display()))?;
            Config::from_yaml(&text, &ProcessEnv).with_context(|| format!("{}", path.display()))?
        }
        None => {
            tracing::warn!("No --config: running the embedded default configuration.");
            Config::embedded(&ProcessEnv)?
        }
    };
    let listen = args.listen.clone().unwrap_or_else(|| config.listen.clone());
    check_listen(&listen).map_err(anyhow::Error::msg)?;
    let servers = config.servers.len();

    let omni2 = Omni2::from_config(config);
    let handle = omni2.spawn();
    let app = omni2.clone();
    let mut server = HttpServer::new(move || {
        let app = app.clone();
        App::new()
            .wrap(actix_web::middleware::from_fn(
                omni2_core::metrics::count_http_requests,
            ))
            .configure(move |cfg| app.configure(cfg))
    })
    // We handle signals ourselves to close WebSockets (1001) before the graceful stop.
    .disable_signals()
    .shutdown_timeout(5);
    if let Some(workers) = args.workers {
        server = server.workers(workers);
    }
    let shown = if let Some(path) = listen.strip_prefix("unix:") {
        remove_stale_socket(path)?;
        server = server
            .bind_uds(path)
            .with_context(|| format!("binding unix socket {path}"))?;
        listen.clone()
    } else {
        server = server
            .bind(&listen)
            .with_context(|| format!("binding {listen}"))?;
        server
            .addrs()
            .first()
            .map(|a| a.to_string())
            .unwrap_or_else(|| listen.clone())
    };
    let server = server.run();
    let server_handle = server.handle();
    tracing::info!(listen = %shown, servers, "omni2 started.");
    // Tests and scripts wait for this line (and read the port from it). Nobody reading
    // stdout any more is no reason to stop.
    safe_log::stdout_line(&format!("omni2 listening on {shown}"));

    let shared = omni2.shared().clone();
    actix_web::rt::spawn(supervise_reload(shared.clone(), args.config.clone()));
    let stopper = actix_web::rt::spawn(stop_on_signal_or_failure(
        shared.clone(),
        server_handle.clone(),
    ));
    // The stopper is what makes SIGTERM work: should it die, stop now rather than run on
    // deaf to signals.
    let watchdog_shared = shared.clone();
    actix_web::rt::spawn(async move {
        if stopper.await.is_err() {
            tracing::error!(task = "signals", "The signal task died; stopping.");
            watchdog_shared.tasks.fail("signals");
            server_handle.stop(false).await;
        }
    });
    server.await.context("HTTP server")?;
    handle.shutdown().await;
    if let Some(path) = listen.strip_prefix("unix:") {
        let _ = std::fs::remove_file(path);
    }
    if let Some(task) = shared.tasks.failed() {
        anyhow::bail!("stopped because the {task} task died");
    }
    tracing::info!("omni2 stopped.");
    Ok(())
}

/// Stops the server gracefully on SIGTERM/SIGINT, or when a background task has died (the
/// process then exits 1, for the supervisor to restart it).
async fn stop_on_signal_or_failure(
    shared: std::sync::Arc<omni2_core::Shared>,
    server: actix_web::dev::ServerHandle,
) {
    tokio::select! {
        () = wait_for_signal() => {
            tracing::info!("Shutting down: closing WebSockets, finishing requests.");
        }
        task = shared.tasks.wait_failed() => {
            tracing::error!(task, "A background task died; shutting down.");
        }
    }
    shared.shutdown.send_replace(true);
    // Let close frames go out before connections are torn down.
    tokio::time::sleep(Duration::from_millis(200)).await;
    server.stop(true).await;
}

/// Restarts of the config watcher before the process gives up on it.
const RELOAD_RESTARTS: u32 = 3;

/// Runs the config watcher (also SIGHUP's handler: without it SIGHUP would end the
/// process); restarts it if it ends or panics, then marks it dead (the process exits 1).
async fn supervise_reload(shared: std::sync::Arc<omni2_core::Shared>, path: Option<PathBuf>) {
    let clients = omni2_core::reload::http_clients();
    for attempt in 0..=RELOAD_RESTARTS {
        let run = tokio::spawn(omni2_core::reload::watch(
            shared.clone(),
            path.clone(),
            Box::new(ProcessEnv),
            clients.clone(),
        ));
        let ended = run.await;
        if *shared.shutdown.borrow() {
            return;
        }
        let error = match &ended {
            Ok(Ok(())) => "ended".to_owned(),
            Ok(Err(e)) => e.to_string(),
            Err(e) => e.to_string(),
        };
        tracing::error!(
            task = "config-reload",
            attempt,
            error,
            "The config watcher stopped."
        );
    }
    shared.tasks.fail("config-reload");
}

/// A socket file left by a previous run would make bind fail; remove only sockets.
fn remove_stale_socket(path: &str) -> anyhow::Result<()> {
    use std::os::unix::fs::FileTypeExt;
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_socket() => {
            std::fs::remove_file(path).with_context(|| format!("removing stale socket {path}"))
        }
        Ok(_) => anyhow::bail!("{path} exists and is not a socket"),
        Err(_) => Ok(()),
    }
}

async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let term = signal(SignalKind::terminate());
    let int = signal(SignalKind::interrupt());
    match (term, int) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        }
        _ => {
            tracing::error!("Cannot install signal handlers; stop with SIGKILL.");
            std::future::pending::<()>().await;
        }
    }
}
