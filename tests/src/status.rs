//! The stack behind the status page tests: two Python MCP servers, the release omni2 with
//! a config of its own (short probe intervals, long open breakers), the release sidecar
//! with the shipped config, and real Traefik with the shipped config in front. omni2 is
//! started on a fixed address so that it can be restarted where Traefik expects it, and
//! with Traefik's address as its one allowed browser origin.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::http::{Request, Target, send};
use crate::process::{eventually, free_addr};
use crate::stack::{McpServer, Omni2, Sidecar, shipped_sidecar_config};
use crate::traefik::Traefik;

/// `fast`: probed every 300 ms; its breaker opens after 2 failures and stays open for an
/// hour (only an operator's reset closes it). `slow`: probed once an hour (only an
/// operator's probe notices a change), unhealthy after one failure.
fn omni2_config(origin: &str) -> String {
    format!(
        r#"identity_secret: ${{OMNI2_IDENTITY_SECRET}}
websocket:
  allowed_origins: ["{origin}"]
  cache_stats_interval: 1h
servers:
  - name: fast
    url: ${{FAST_URL}}
    probe_interval: 300ms
    probe_timeout: 2s
    unhealthy_after: 2
    healthy_after: 1
    breaker: {{failure_threshold: 2, failure_rate: 0.5, window: 10, min_calls: 10, open_duration: 1h, max_open_duration: 1h}}
  - name: slow
    url: ${{SLOW_URL}}
    probe_interval: 1h
    probe_timeout: 2s
    unhealthy_after: 1
    healthy_after: 1
"#
    )
}

/// The running stack.
pub struct StatusStack {
    pub dir: tempfile::TempDir,
    pub sidecar: Sidecar,
    pub traefik: Traefik,
    pub fast: McpServer,
    pub slow: McpServer,
    pub omni2: Omni2,
    omni2_addr: SocketAddr,
    config: PathBuf,
    restarts: u32,
}

impl StatusStack {
    /// With the shipped sidecar config.
    pub async fn start() -> StatusStack {
        StatusStack::start_with_cookie(None).await
    }

    /// With the shipped sidecar config, plus `tokens.cookie: <name>` when given (a session
    /// cookie as a token source).
    pub async fn start_with_cookie(cookie: Option<&str>) -> StatusStack {
        let dir = tempfile::tempdir().expect("tempdir");
        let fast = McpServer::start_on(dir.path(), free_addr(), "mcp-fast").await;
        let slow = McpServer::start_on(dir.path(), free_addr(), "mcp-slow").await;
        let sidecar = match cookie {
            None => Sidecar::start(dir.path()).await,
            Some(name) => {
                let shipped = std::fs::read_to_string(shipped_sidecar_config())
                    .expect("read the shipped sidecar config");
                let with_cookie =
                    shipped.replacen("tokens:\n", &format!("tokens:\n  cookie: {name}\n"), 1);
                assert_ne!(
                    shipped, with_cookie,
                    "the shipped config has a `tokens:` block"
                );
                let path = dir.path().join("auth-sidecar.yaml");
                std::fs::write(&path, with_cookie).expect("write sidecar config");
                Sidecar::start_with(dir.path(), &path).await
            }
        };
        let omni2_addr = free_addr();
        // omni2 binds its port before Traefik binds its own: never the same free port twice.
        let taken = [omni2_addr.port(), sidecar.addr.port(), sidecar.admin.port()];
        let wiring = (0..16)
            .map(|_| Traefik::wiring(dir.path(), sidecar.addr, omni2_addr))
            .find(|w| {
                let ports = [w.web, w.websecure, w.metrics, w.api].map(|a| a.port());
                !ports.iter().any(|p| taken.contains(p))
            })
            .expect("16 tries at free ports for Traefik");
        let config = dir.path().join("omni2.yaml");
        std::fs::write(&config, omni2_config(&format!("http://{}", wiring.web)))
            .expect("write omni2 config");
        let omni2 = start_omni2(
            &dir.path().join("omni2-0"),
            &config,
            omni2_addr,
            &fast,
            &slow,
        )
        .await;
        let traefik = Traefik::start_wired(dir.path(), wiring).await;
        let stack = StatusStack {
            dir,
            sidecar,
            traefik,
            fast,
            slow,
            omni2,
            omni2_addr,
            config,
            restarts: 0,
        };
        stack.wait_page_served().await;
        stack
    }

    /// `http://<traefik>/status`.
    pub fn page_url(&self) -> String {
        format!("http://{}/status", self.traefik.addr())
    }

    /// Waits until Traefik serves the page (its health check of omni2 has passed).
    pub async fn wait_page_served(&self) {
        let target = self.traefik.target();
        eventually("Traefik serves /status", Duration::from_secs(60), || {
            let target = target.clone();
            async move {
                let r = send(&target, &Request::get("/status")).await?;
                (r.status == 200)
                    .then_some(())
                    .ok_or(format!("/status: {}", r.status))
            }
        })
        .await;
    }

    /// Stops omni2 (by PID).
    pub fn stop_omni2(&mut self) {
        self.omni2.stop();
    }

    /// Starts omni2 again on the same address (logs in a new directory).
    pub async fn start_omni2_again(&mut self) {
        self.restarts += 1;
        let dir = self.dir.path().join(format!("omni2-{}", self.restarts));
        self.omni2 = start_omni2(&dir, &self.config, self.omni2_addr, &self.fast, &self.slow).await;
    }

    /// Stops the `fast` MCP server.
    pub fn stop_fast(&mut self) {
        self.fast.stop();
    }

    /// Starts the `fast` MCP server again on its address.
    pub async fn start_fast_again(&mut self) {
        self.fast = McpServer::start_on(self.dir.path(), self.fast.addr, "mcp-fast-again").await;
    }

    /// Stops the `slow` MCP server.
    pub fn stop_slow(&mut self) {
        self.slow.stop();
    }

    /// Every process's log, for a failure message.
    pub fn logs(&self) -> String {
        format!(
            "--- omni2\n{}\n--- sidecar\n{}\n--- traefik\n{}",
            self.omni2.log(),
            self.sidecar.log(),
            self.traefik.log()
        )
    }
}

async fn start_omni2(
    dir: &Path,
    config: &Path,
    listen: SocketAddr,
    fast: &McpServer,
    slow: &McpServer,
) -> Omni2 {
    std::fs::create_dir_all(dir).expect("omni2 dir");
    let (fast, slow) = (fast.url(), slow.url());
    let env = [("FAST_URL", fast.as_str()), ("SLOW_URL", slow.as_str())];
    Omni2::start_with(dir, config, Target::Tcp(listen), &env).await
}
