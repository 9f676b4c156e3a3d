//! The real services under test: the release auth-sidecar with the shipped config
//! (compose/config/auth-sidecar.yaml), and later omni2 and a Python MCP server.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use auth_sidecar::config::Runtime;
use auth_sidecar::mint::{MintRequest, mint};

use crate::http::{Request, Target, send};
use crate::process::{Proc, eventually, free_addr, repo_root, sidecar_binary, wait_listening};

/// HMAC secret of the test issuer (`OMNI2_JWT_SECRET`).
pub const JWT_SECRET: &str = "e2e-jwt-secret-0123456789abcdefghijklmnopqrstuvwxyz";
/// Identity-signature secret shared by the sidecar and omni2 (`OMNI2_IDENTITY_SECRET`).
pub const IDENTITY_SECRET: &str = "e2e-identity-secret-0123456789abcdefghijklmnopqrstuv";

/// The shipped sidecar config.
pub fn shipped_sidecar_config() -> PathBuf {
    repo_root().join("compose/config/auth-sidecar.yaml")
}

/// The environment the shipped config reads, with the given listen addresses.
pub fn sidecar_env(listen: SocketAddr, admin: SocketAddr) -> Vec<(&'static str, String)> {
    vec![
        ("OMNI2_JWT_SECRET", JWT_SECRET.into()),
        ("OMNI2_IDENTITY_SECRET", IDENTITY_SECRET.into()),
        ("AUTH_SIDECAR_LISTEN", listen.to_string()),
        ("AUTH_SIDECAR_ADMIN_LISTEN", admin.to_string()),
    ]
}

/// Compiles the shipped sidecar config with the sidecar's own code (test secrets, default
/// addresses), e.g. to read the identity header names it emits.
pub fn compile_shipped_sidecar_config() -> Runtime {
    compile_sidecar_config(&shipped_sidecar_config())
}

/// Compiles a sidecar config with the test secrets and (unless set) loopback addresses.
pub fn compile_sidecar_config(path: &Path) -> Runtime {
    compile_sidecar_config_with(path, &[])
}

/// [`compile_sidecar_config`] with `extra` variables too (e.g. `REDIS_URL`).
pub fn compile_sidecar_config_with(path: &Path, extra: &[(String, String)]) -> Runtime {
    let env = |name: &str| match name {
        "OMNI2_JWT_SECRET" => Some(JWT_SECRET.to_owned()),
        "OMNI2_IDENTITY_SECRET" => Some(IDENTITY_SECRET.to_owned()),
        _ => extra
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone()),
    };
    Runtime::load(path, &env).unwrap_or_else(|problems| panic!("{}: {problems}", path.display()))
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// The release sidecar serving the shipped config on free loopback ports.
pub struct Sidecar {
    /// The forwardAuth address (`/verify`).
    pub addr: SocketAddr,
    /// `admin_listen`: `/healthz`, `/readyz`, `/metrics`.
    pub admin: SocketAddr,
    runtime: Runtime,
    proc: Proc,
}

impl Sidecar {
    /// Starts the sidecar with the shipped config and waits for `/readyz`.
    pub async fn start(dir: &Path) -> Sidecar {
        Sidecar::start_with(dir, &shipped_sidecar_config()).await
    }

    /// Starts the sidecar with `config` (which reads the same variables as the shipped one).
    pub async fn start_with(dir: &Path, config: &Path) -> Sidecar {
        Sidecar::start_on(dir, config, free_addr(), free_addr(), &[]).await
    }

    /// Starts the sidecar with `config` on the given addresses, with `extra_env` besides the
    /// shipped config's variables (e.g. `REDIS_URL`); logs to `dir/auth-sidecar.log`.
    pub async fn start_on(
        dir: &Path,
        config: &Path,
        addr: SocketAddr,
        admin: SocketAddr,
        extra_env: &[(String, String)],
    ) -> Sidecar {
        let binary = tokio::task::spawn_blocking(sidecar_binary)
            .await
            .expect("build task");
        let mut cmd = Command::new(binary);
        cmd.args(["serve", "--workers", "1", "--config"])
            .arg(config)
            .envs(sidecar_env(addr, admin))
            .envs(extra_env.iter().map(|(k, v)| (k, v)));
        let mut proc = Proc::spawn("auth-sidecar", cmd, dir.join("auth-sidecar.log"));
        eventually("auth-sidecar /readyz", Duration::from_secs(20), || {
            proc.check_alive().unwrap_or_else(|e| panic!("{e}"));
            async move {
                let r = send(&Target::Tcp(admin), &Request::get("/readyz")).await?;
                if r.status == 200 {
                    Ok(())
                } else {
                    Err(format!("/readyz: {}", r.status))
                }
            }
        })
        .await;
        Sidecar {
            addr,
            admin,
            runtime: compile_sidecar_config_with(config, extra_env),
            proc,
        }
    }

    /// The identity headers the sidecar emits on allow (configured spelling).
    pub fn identity_headers(&self) -> Vec<String> {
        identity_header_names(&self.runtime)
    }

    /// A token for `sub` with `role`, valid for an hour.
    pub fn token(&self, sub: &str, role: &str) -> String {
        self.mint_at(sub, role, now(), Duration::from_secs(3600))
    }

    /// A `user` token for `sub` that expires `ttl` from now.
    pub fn token_expiring_in(&self, sub: &str, ttl: Duration) -> String {
        self.mint_at(sub, "user", now(), ttl)
    }

    /// A token for `sub` that expired an hour ago (well past the 30 s leeway).
    pub fn expired_token(&self, sub: &str) -> String {
        self.mint_at(sub, "user", now() - 7200, Duration::from_secs(3600))
    }

    fn mint_at(&self, sub: &str, role: &str, at: i64, ttl: Duration) -> String {
        mint_at(&self.runtime, sub, role, at, ttl)
    }

    pub fn pid(&self) -> Option<u32> {
        self.proc.pid()
    }

    /// Sends `signal` (SIGSTOP / SIGCONT: a hung sidecar).
    pub fn signal(&self, signal: nix::sys::signal::Signal) {
        self.proc.signal(signal);
    }

    /// Stops the sidecar (to prove the gateways fail closed).
    pub fn stop(&mut self) {
        self.proc.stop();
    }

    pub fn log(&self) -> String {
        self.proc.log()
    }
}

/// A token for `sub` with `role`, valid for an hour, signed with `rt`'s HMAC key.
pub fn token_for(rt: &Runtime, sub: &str, role: &str) -> String {
    mint_at(rt, sub, role, now(), Duration::from_secs(3600))
}

fn mint_at(rt: &Runtime, sub: &str, role: &str, at: i64, ttl: Duration) -> String {
    let request = MintRequest {
        sub: sub.into(),
        role: Some(role.into()),
        roles: vec![role.into()],
        email: Some(format!("{sub}@example.com")),
        ttl,
        ..Default::default()
    };
    mint(rt, &request, at).expect("the shipped config has an HMAC key")
}

/// Identity header names in their canonical spelling (`X-User-Id`), in emission order.
pub fn identity_header_names(rt: &Runtime) -> Vec<String> {
    rt.identity_header_names()
        .into_iter()
        .map(canonical_header)
        .collect()
}

/// `x-user-id` → `X-User-Id`.
pub fn canonical_header(name: &str) -> String {
    name.split('-')
        .map(|part| {
            let mut chars = part.chars();
            chars.next().map_or_else(String::new, |first| {
                first.to_ascii_uppercase().to_string() + &chars.as_str().to_ascii_lowercase()
            })
        })
        .collect::<Vec<_>>()
        .join("-")
}

/// The shipped omni2 config.
pub fn shipped_omni2_config() -> PathBuf {
    repo_root().join("compose/config/omni2.yaml")
}

/// The example MCP server shipped with compose (Python MCP SDK, streamable HTTP).
pub struct McpServer {
    pub addr: SocketAddr,
    proc: Proc,
}

impl McpServer {
    pub async fn start(dir: &Path) -> McpServer {
        McpServer::start_on(dir, free_addr(), "mcp-example").await
    }

    /// On `addr`, logging to `dir/<name>.log` (several servers share one directory).
    pub async fn start_on(dir: &Path, addr: SocketAddr, name: &str) -> McpServer {
        let mut cmd = Command::new("python3");
        cmd.arg(repo_root().join("compose/mcp-example/server.py"))
            .args(["--host", "127.0.0.1", "--port", &addr.port().to_string()]);
        let mut proc = Proc::spawn(name, cmd, dir.join(format!("{name}.log")));
        wait_listening(&mut proc, addr, "MCP server listening").await;
        McpServer { addr, proc }
    }

    /// The streamable-HTTP endpoint.
    pub fn url(&self) -> String {
        format!("http://{}/mcp", self.addr)
    }

    /// Stops it (by PID): its port refuses connections until [`McpServer::start_on`]
    /// starts another on the same address.
    pub fn stop(&mut self) {
        self.proc.stop();
    }

    pub fn log(&self) -> String {
        self.proc.log()
    }
}

/// The release `omni2` with the shipped config, listening on a unix socket (nginx, Caddy,
/// Envoy) or a loopback TCP port (Traefik, which proxies to TCP only).
pub struct Omni2 {
    listen: Target,
    proc: Proc,
}

impl Omni2 {
    /// On `dir/omni2.sock`, no TCP listener at all.
    pub async fn start(dir: &Path, mcp_url: &str) -> Omni2 {
        Omni2::start_on(dir, mcp_url, Target::Unix(dir.join("omni2.sock"))).await
    }

    /// On a free loopback TCP port.
    pub async fn start_tcp(dir: &Path, mcp_url: &str) -> Omni2 {
        Omni2::start_on(dir, mcp_url, Target::Tcp(free_addr())).await
    }

    async fn start_on(dir: &Path, mcp_url: &str, listen: Target) -> Omni2 {
        let env = [("OMNI2_MCP_EXAMPLE_URL", mcp_url)];
        Omni2::start_with(dir, &shipped_omni2_config(), listen, &env).await
    }

    /// With `config` (which may read `OMNI2_IDENTITY_SECRET`) and extra environment, on
    /// `listen`; logs to `dir/omni2.log`.
    pub async fn start_with(
        dir: &Path,
        config: &Path,
        listen: Target,
        env: &[(&str, &str)],
    ) -> Omni2 {
        let binary = tokio::task::spawn_blocking(crate::process::omni2_binary)
            .await
            .expect("build task");
        let listen_arg = match &listen {
            Target::Unix(socket) => format!("unix:{}", socket.display()),
            Target::Tcp(addr) => addr.to_string(),
        };
        let mut cmd = Command::new(binary);
        cmd.arg("--config")
            .arg(config)
            .arg("--listen")
            .arg(listen_arg)
            .args(["--workers", "1"])
            .env("OMNI2_IDENTITY_SECRET", IDENTITY_SECRET)
            .envs(env.iter().copied())
            // The WebSocket logs which identity it accepted: the tests read it back.
            .env("RUST_LOG", "info,omni2_core::ws=debug");
        let mut proc = Proc::spawn("omni2", cmd, dir.join("omni2.log"));
        let target = listen.clone();
        eventually("omni2 /health", Duration::from_secs(30), || {
            proc.check_alive().unwrap_or_else(|e| panic!("{e}"));
            let target = target.clone();
            async move {
                let r = send(&target, &Request::get("/health")).await?;
                (r.status == 200)
                    .then_some(())
                    .ok_or(format!("/health: {}", r.status))
            }
        })
        .await;
        Omni2 { listen, proc }
    }

    /// What a gateway proxies to.
    pub fn upstream(&self) -> crate::gateway::Upstream {
        match &self.listen {
            Target::Unix(p) => crate::gateway::Upstream::Unix(p.clone()),
            Target::Tcp(a) => crate::gateway::Upstream::Tcp(*a),
        }
    }

    pub fn target(&self) -> Target {
        self.listen.clone()
    }

    pub fn pid(&self) -> u32 {
        self.proc.pid().expect("omni2 is running")
    }

    /// Sends `signal` (SIGKILL: a replica that dies).
    pub fn signal(&self, signal: nix::sys::signal::Signal) {
        self.proc.signal(signal);
    }

    /// Stops it (by PID).
    pub fn stop(&mut self) {
        self.proc.stop();
    }

    pub fn log(&self) -> String {
        self.proc.log()
    }
}

/// A real Prometheus scraping `jobs` (name, target, bearer token) every second.
pub struct Prometheus {
    pub addr: SocketAddr,
    proc: Proc,
}

impl Prometheus {
    pub async fn start(dir: &Path, jobs: &[(&str, SocketAddr, Option<&str>)]) -> Prometheus {
        let dir = dir.join("prometheus");
        std::fs::create_dir_all(&dir).expect("prometheus dir");
        let mut config =
            String::from("global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\nscrape_configs:\n");
        for (name, target, token) in jobs {
            config.push_str(&format!("  - job_name: {name}\n"));
            if let Some(token) = token {
                config.push_str(&format!("    authorization:\n      credentials: {token}\n"));
            }
            config.push_str(&format!(
                "    static_configs:\n      - targets: [\"{target}\"]\n"
            ));
        }
        let file = dir.join("prometheus.yml");
        std::fs::write(&file, config).expect("write prometheus.yml");
        let addr = free_addr();
        let mut cmd = Command::new("prometheus");
        cmd.arg(format!("--config.file={}", file.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address={addr}"));
        let mut proc = Proc::spawn("prometheus", cmd, dir.join("prometheus.log"));
        eventually("prometheus ready", Duration::from_secs(30), || {
            proc.check_alive().unwrap_or_else(|e| panic!("{e}"));
            async move {
                let r = send(&Target::Tcp(addr), &Request::get("/-/ready")).await?;
                (r.status == 200)
                    .then_some(())
                    .ok_or(format!("/-/ready: {}", r.status))
            }
        })
        .await;
        Prometheus { addr, proc }
    }

    /// `up` per job, from the HTTP query API (jobs not scraped yet are absent).
    pub async fn up(&self) -> Result<Vec<(String, String)>, String> {
        let r = send(
            &Target::Tcp(self.addr),
            &Request::get("/api/v1/query?query=up"),
        )
        .await?;
        let body = r.json();
        if body["status"] != "success" {
            return Err(format!("query failed: {}", r.text()));
        }
        Ok(up_by_job(&body))
    }

    pub fn log(&self) -> String {
        self.proc.log()
    }
}

pub use test_support::promtool_check_metrics;

/// Inodes of the TCP sockets in LISTEN state (IPv4 and IPv6) on this machine.
fn tcp_listen_inodes() -> Vec<String> {
    let mut inodes = Vec::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let text = std::fs::read_to_string(table).unwrap_or_default();
        for line in text.lines().skip(1) {
            let cols: Vec<&str> = line.split_whitespace().collect();
            // st == 0A is TCP_LISTEN; column 9 is the inode.
            if cols.len() > 9 && cols[3] == "0A" {
                inodes.push(cols[9].to_owned());
            }
        }
    }
    inodes
}

/// The socket inodes a process holds open.
fn socket_inodes(pid: u32) -> Vec<String> {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .into_iter()
        .flatten()
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .filter_map(|link| {
            link.to_str()?
                .strip_prefix("socket:[")?
                .strip_suffix(']')
                .map(str::to_owned)
        })
        .collect()
}

/// Listening TCP sockets held by `pid` (from /proc): must be empty for omni2.
pub fn tcp_listeners_of(pid: u32) -> Vec<String> {
    let listening = tcp_listen_inodes();
    socket_inodes(pid)
        .into_iter()
        .filter(|inode| listening.contains(inode))
        .collect()
}

/// Whether `pid` holds any socket at all (guards the check above against reading nothing).
pub fn holds_sockets(pid: u32) -> bool {
    !socket_inodes(pid).is_empty()
}

/// `(job, value)` of each series in a Prometheus `query?query=up` answer.
pub fn up_by_job(body: &serde_json::Value) -> Vec<(String, String)> {
    body["data"]["result"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|s| {
            (
                s["metric"]["job"].as_str().unwrap_or("").to_owned(),
                s["value"][1].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect()
}
