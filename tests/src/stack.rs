//! The real services under test: the release auth-sidecar with the shipped config
//! (compose/config/auth-sidecar.yaml), and later omni2 and a Python MCP server.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use auth_sidecar::config::Runtime;
use auth_sidecar::mint::{MintRequest, mint};

use crate::http::{Request, Target, send};
use crate::process::{Proc, eventually, free_addr, repo_root, sidecar_binary};

/// HMAC secret of the test issuer (`OMNI2_JWT_SECRET`).
pub const JWT_SECRET: &str = "e2e-jwt-secret-0123456789abcdefghijklmnopqrstuvwxyz";
/// Identity-signature secret shared by the sidecar and omni2 (`OMNI2_IDENTITY_SECRET`).
pub const IDENTITY_SECRET: &str = "e2e-identity-secret-0123456789abcdefghijklmnopqrstuv";

/// The shipped sidecar config.
pub fn shipped_sidecar_config() -> PathBuf {
    repo_root().join("compose/config/auth-sidecar.yaml")
}

/// The environment the shipped config reads, with the given listen addresses.
fn sidecar_env(listen: SocketAddr, admin: SocketAddr) -> Vec<(&'static str, String)> {
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
    let env = |name: &str| match name {
        "OMNI2_JWT_SECRET" => Some(JWT_SECRET.to_owned()),
        "OMNI2_IDENTITY_SECRET" => Some(IDENTITY_SECRET.to_owned()),
        _ => None,
    };
    Runtime::load(&shipped_sidecar_config(), &env)
        .unwrap_or_else(|problems| panic!("shipped sidecar config: {problems}"))
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
    /// Starts the sidecar and waits for `/readyz`.
    pub async fn start(dir: &Path) -> Sidecar {
        let binary = tokio::task::spawn_blocking(sidecar_binary)
            .await
            .expect("build task");
        let (addr, admin) = (free_addr(), free_addr());
        let mut cmd = Command::new(binary);
        cmd.args(["serve", "--workers", "1", "--config"])
            .arg(shipped_sidecar_config())
            .envs(sidecar_env(addr, admin));
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
            runtime: compile_shipped_sidecar_config(),
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

    /// A token for `sub` that expired an hour ago (well past the 30 s leeway).
    pub fn expired_token(&self, sub: &str) -> String {
        self.mint_at(sub, "user", now() - 7200, Duration::from_secs(3600))
    }

    fn mint_at(&self, sub: &str, role: &str, at: i64, ttl: Duration) -> String {
        let request = MintRequest {
            sub: sub.into(),
            role: Some(role.into()),
            roles: vec![role.into()],
            email: Some(format!("{sub}@example.com")),
            ttl,
            ..Default::default()
        };
        mint(&self.runtime, &request, at).expect("the shipped config has an HMAC key")
    }

    /// Stops the sidecar (to prove the gateways fail closed).
    pub fn stop(&mut self) {
        self.proc.stop();
    }

    pub fn log(&self) -> String {
        self.proc.log()
    }
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
