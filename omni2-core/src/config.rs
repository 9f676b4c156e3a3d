//! Configuration: YAML text → `${ENV}` interpolation → `RawConfig` → checked [`Config`].
//!
//! Every problem is collected before failing, each as `path: message` quoting the value
//! (`servers[1].probe_timeout: invalid duration "5 sec": ...`). Unknown keys are errors: a
//! misspelt `identity_secret` must not silently turn signature checks off.
//!
//! Parsing, `${VAR}`, durations and type-error collection are the `config-plumbing` crate's
//! (shared with auth-sidecar); `raw` is the file as written, `checks` builds [`Config`].

use std::collections::BTreeMap;
use std::time::Duration;

use actix_web::http::header::HeaderName;

use identity_wire::{SIGNATURE_HEADER, Slot};

use config_plumbing::parse;

mod checks;
mod credentials;
mod raw;

pub use credentials::Credentials;

pub use checks::check_listen;
use checks::{check, check_url};
use raw::RawConfig;

use crate::breaker::BreakerConfig;

pub use config_plumbing::{Env, Problem, Problems as Error, ProcessEnv};

/// The embedded default configuration (`omni2` with no `--config`).
pub const DEFAULT_CONFIG: &str = include_str!("config/default.yaml");
/// Environment variable naming one MCP server (`default`) for the embedded configuration.
pub const MCP_URL_ENV: &str = "OMNI2_MCP_URL";

// ---------------------------------------------------------------- checked

/// The identity header names, lower-cased.
#[derive(Clone, Debug)]
pub struct IdentityHeaders {
    /// Default `X-User-Id`.
    pub user_id: HeaderName,
    /// Default `X-User-Username`.
    pub username: HeaderName,
    /// Default `X-User-Role`.
    pub role: HeaderName,
    /// Default `X-User-Roles` (comma-separated, items percent-encoded).
    pub roles: HeaderName,
    /// Default `X-User-Email`.
    pub email: HeaderName,
    /// Default `X-Auth-Expires` (unix seconds).
    pub expires: HeaderName,
    /// Default `X-Auth-Signature`.
    pub signature: HeaderName,
}

impl Default for IdentityHeaders {
    fn default() -> Self {
        let [user_id, username, role, roles, email, expires] =
            Slot::ALL.map(|slot| wire_header(slot.default_header()));
        Self {
            user_id,
            username,
            role,
            roles,
            email,
            expires,
            signature: wire_header(SIGNATURE_HEADER),
        }
    }
}

impl IdentityHeaders {
    /// The slot headers in `identity_wire::Slot::ALL` (signing) order.
    pub fn slots(&self) -> [&HeaderName; 6] {
        [
            &self.user_id,
            &self.username,
            &self.role,
            &self.roles,
            &self.email,
            &self.expires,
        ]
    }
}

/// A default name from the wire crate; its unit test shows every one is valid.
fn wire_header(name: &'static str) -> HeaderName {
    HeaderName::from_bytes(name.as_bytes()).unwrap_or_else(|_| HeaderName::from_static("x-invalid"))
}

/// Who may do what. An empty list means any authenticated identity.
#[derive(Clone, Debug, Default)]
pub struct Roles {
    /// `POST .../tools/{tool}/call`; default: any authenticated.
    pub tool_call: Vec<String>,
    /// `DELETE /api/v1/cache...`; default `[admin]`.
    pub cache_admin: Vec<String>,
    /// `GET /ws/mcp-status`; default: any authenticated.
    pub ws_status: Vec<String>,
    /// Control actions (probe now, reset a breaker, disable/enable a server), over REST
    /// and the WebSocket; default `[admin]`. Cache invalidation uses `cache_admin`.
    pub control: Vec<String>,
}

/// Tool-result cache settings.
#[derive(Clone, Debug)]
pub struct CacheConfig {
    /// Total weight bound: bytes of cached results (default 64 MiB).
    pub max_bytes: u64,
    /// TTL of a cacheable tool without its own `ttl` (default 60 s).
    pub default_ttl: Duration,
    /// `cache.redis`: results shared with the other replicas (default: none).
    pub redis: Option<SharedCacheConfig>,
}

/// `cache.redis`: where replicas share tool results. Its `Debug` leaves the URL out (it
/// may hold a password).
#[derive(Clone)]
pub struct SharedCacheConfig {
    /// `redis://[user:pass@]host:port[/db]`, checked.
    pub url: String,
    /// Every key starts with it (default `omni2:cache:`).
    pub key_prefix: String,
    /// Bound on connecting (default 250 ms).
    pub connect_timeout: Duration,
    /// Bound on one command, waiting for a connection included (default 50 ms).
    pub command_timeout: Duration,
}

impl std::fmt::Debug for SharedCacheConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedCacheConfig")
            .field("key_prefix", &self.key_prefix)
            .field("connect_timeout", &self.connect_timeout)
            .field("command_timeout", &self.command_timeout)
            .finish_non_exhaustive()
    }
}

/// `/ws/mcp-status` settings.
#[derive(Clone, Debug)]
pub struct WebsocketConfig {
    /// Connections past this are closed with 1013 (default 10 000).
    pub max_connections: usize,
    /// Events buffered for each worker's fan-out task (default 256). Each connection's own
    /// backlog is bounded by actix-ws's 32-frame channel: past it, deltas are missed.
    pub queue: usize,
    /// Server ping period (default 15 s).
    pub heartbeat_interval: Duration,
    /// A client silent this long is closed (default 45 s).
    pub client_timeout: Duration,
    /// A frame not accepted within this counts as lag (default 5 s).
    pub send_timeout: Duration,
    /// Lag episodes within one connection before it is closed with 1013 (default 3).
    pub max_lag_strikes: u32,
    /// Period of `cache_stats` messages (default 10 s).
    pub cache_stats_interval: Duration,
    /// Browser origins (`scheme://host[:port]`, lowercase) allowed to open the socket. A
    /// handshake with any other `Origin` is refused with 403 (cross-site WebSocket
    /// hijacking); one without `Origin` (a non-browser client) is allowed. Default: none.
    pub allowed_origins: Vec<String>,
}

/// Who may be served a tool's cached result (`tools.<name>.cache_scope`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum CacheScope {
    /// Only the user whose call filled the entry (the default).
    #[default]
    PerUser,
    /// Every caller: the config says the result does not depend on who asks.
    Shared,
}

/// Per-tool policy: cache, who may call it, how often.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ToolPolicy {
    /// `Some(true)`: cache; `Some(false)`: never cache; `None`: decided by annotations.
    pub cache: Option<bool>,
    /// TTL override; the cache's `default_ttl` otherwise.
    pub ttl: Option<Duration>,
    /// Who shares a cached result: `per_user` (default) or `shared` (`cache_scope`).
    pub cache_scope: CacheScope,
    /// Roles that may call (and, on `/mcp`, see) the tool; `None`: `roles.tool_call`.
    pub roles: Option<Vec<String>>,
    /// Calls per user, REST and `/mcp` together (token bucket); `None`: unlimited.
    pub rate_limit: Option<RateLimit>,
}

/// A token bucket per user: `burst` calls at once, one more every `every`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RateLimit {
    /// Bucket size (> 0).
    pub burst: u32,
    /// Time to earn one call back (> 0).
    pub every: Duration,
}

/// `gateway`: the MCP endpoint `/mcp` (see [`crate::gateway`]).
#[derive(Clone, Debug)]
pub struct GatewayConfig {
    /// Serve `/mcp` (default true).
    pub enabled: bool,
    /// Between server and tool name in the tools `/mcp` lists (default `__`). No server
    /// name may contain it, so every listed name splits back one way only.
    pub separator: String,
    /// `Host` values accepted (DNS-rebinding guard); empty (default): any, since every
    /// request must carry the sidecar's signed identity anyway.
    pub allowed_hosts: Vec<String>,
    /// A session (revisions up to 2025-11-25) idle this long is closed (default 5 min).
    pub session_idle_timeout: Duration,
}

impl Default for GatewayConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            separator: "__".to_owned(),
            allowed_hosts: Vec::new(),
            session_idle_timeout: Duration::from_secs(300),
        }
    }
}

/// How a session with an MCP server starts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Protocol {
    /// `server/discover` (stateless revision 2026-07-28), falling back to `initialize`.
    #[default]
    Auto,
    /// `initialize` + `Mcp-Session-Id` only (revisions up to 2025-11-25).
    Legacy,
}

/// One MCP server.
#[derive(Clone, Debug, PartialEq)]
pub struct ServerConfig {
    /// Unique name, used in routes, events and metric labels.
    pub name: String,
    /// Streamable-HTTP endpoint, e.g. `http://mcp-a:8080/mcp`.
    pub url: String,
    /// Disabled servers are listed (state `disabled`) but never probed or called.
    pub enabled: bool,
    /// Time between probes (default 30 s).
    pub probe_interval: Duration,
    /// One probe's limit, connection included (default 5 s).
    pub probe_timeout: Duration,
    /// One tool call's limit (default 30 s).
    pub call_timeout: Duration,
    /// A successful probe slower than this is `degraded` (default 1 s).
    pub degraded_latency: Duration,
    /// Consecutive failed probes before `unhealthy` (default 3).
    pub unhealthy_after: u32,
    /// Consecutive good probes before leaving `unhealthy` (default 2).
    pub healthy_after: u32,
    /// Trust the server's `readOnlyHint` annotations for caching (default false).
    pub trust_annotations: bool,
    /// Session start (default `auto`).
    pub protocol: Protocol,
    /// Circuit breaker settings.
    pub breaker: BreakerConfig,
    /// Cache policy per tool name.
    pub tools: BTreeMap<String, ToolPolicy>,
    /// What omni2 sends this server to authenticate (never the caller's token).
    pub credentials: Credentials,
}

/// A checked configuration.
#[derive(Clone, Debug)]
pub struct Config {
    /// `127.0.0.1:PORT` or `unix:/path` (the binary's default listen address).
    pub listen: String,
    /// HMAC-SHA256 secret for `X-Auth-Signature`; `None` accepts unsigned identity.
    pub identity_secret: Option<Vec<u8>>,
    /// Identity header names.
    pub identity_headers: IdentityHeaders,
    /// Role guards.
    pub roles: Roles,
    /// At most this many probes run at once (default 8).
    pub max_concurrent_probes: usize,
    /// Tool-result cache.
    pub cache: CacheConfig,
    /// Status WebSocket.
    pub websocket: WebsocketConfig,
    /// MCP servers, in configured order.
    pub servers: Vec<ServerConfig>,
    /// The audit trail (`audit-log`'s shared block); `None`: off. A relative `file` is
    /// relative to the working directory.
    pub audit: Option<audit_log::AuditSettings>,
    /// The MCP endpoint `/mcp`.
    pub gateway: GatewayConfig,
}

impl Config {
    /// Parses YAML text, interpolating `${VAR}`, `${VAR:-default}` and `$$` in string values.
    pub fn from_yaml(text: &str, env: &dyn Env) -> Result<Self, Error> {
        let mut errors = Error::default();
        let Some(parsed) = parse::<RawConfig>(text, env, &mut errors) else {
            return Err(errors);
        };
        let before_check = errors.len();
        let config = check(parsed.raw, &mut errors);
        parsed
            .cleared
            .forget_consequences(&mut errors, before_check);
        errors.or_value(config)
    }

    /// The embedded default: no servers, unless `OMNI2_MCP_URL` names one (`default`).
    pub fn embedded(env: &dyn Env) -> Result<Self, Error> {
        let mut config = Self::from_yaml(DEFAULT_CONFIG, env)?;
        if let Some(url) = env.var(MCP_URL_ENV).filter(|u| !u.is_empty()) {
            let mut errors = Error::default();
            check_url(&url, MCP_URL_ENV, &mut errors);
            if !errors.0.is_empty() {
                return Err(errors);
            }
            config.servers.push(ServerConfig::new("default", &url));
        }
        Ok(config)
    }
}

impl ServerConfig {
    /// A server with every setting at its default.
    pub fn new(name: &str, url: &str) -> Self {
        Self {
            name: name.to_owned(),
            url: url.to_owned(),
            enabled: true,
            probe_interval: Duration::from_secs(30),
            probe_timeout: Duration::from_secs(5),
            call_timeout: Duration::from_secs(30),
            degraded_latency: Duration::from_secs(1),
            unhealthy_after: 3,
            healthy_after: 2,
            trust_annotations: false,
            protocol: Protocol::Auto,
            breaker: BreakerConfig::default(),
            tools: BTreeMap::new(),
            credentials: Credentials::default(),
        }
    }
}

#[cfg(test)]
mod tests;
