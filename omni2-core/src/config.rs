//! Configuration: YAML text → `${ENV}` interpolation → `RawConfig` → checked [`Config`].
//!
//! Every problem is collected before failing, each as `path: message` quoting the value
//! (`servers[1].probe_timeout: invalid duration "5 sec": ...`). Unknown keys are errors: a
//! misspelt `identity_secret` must not silently turn signature checks off.

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use actix_web::http::header::HeaderName;
use serde::Deserialize;

use identity_wire::{SIGNATURE_HEADER, Slot};

use config_plumbing::{RawDuration, parse};

use crate::breaker::BreakerConfig;

pub use config_plumbing::{Env, Problem, Problems as Error, ProcessEnv};

/// The embedded default configuration (`omni2` with no `--config`).
pub const DEFAULT_CONFIG: &str = include_str!("config/default.yaml");
/// Environment variable naming one MCP server (`default`) for the embedded configuration.
pub const MCP_URL_ENV: &str = "OMNI2_MCP_URL";

// ---------------------------------------------------------------- as written

#[derive(Debug, Default, Deserialize)]
struct RawConfig {
    listen: Option<String>,
    identity_secret: Option<String>,
    #[serde(default)]
    identity_headers: RawIdentityHeaders,
    #[serde(default)]
    roles: RawRoles,
    #[serde(default)]
    probes: RawProbes,
    #[serde(default)]
    cache: RawCache,
    #[serde(default)]
    websocket: RawWebsocket,
    #[serde(default)]
    servers: Vec<RawServer>,
}

#[derive(Debug, Default, Deserialize)]
struct RawIdentityHeaders {
    user_id: Option<String>,
    username: Option<String>,
    role: Option<String>,
    roles: Option<String>,
    email: Option<String>,
    expires: Option<String>,
    signature: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
struct RawRoles {
    tool_call: Option<Vec<String>>,
    cache_admin: Option<Vec<String>>,
    ws_status: Option<Vec<String>>,
}

#[derive(Debug, Default, Deserialize)]
struct RawProbes {
    max_concurrent: Option<i64>,
}

#[derive(Debug, Default, Deserialize)]
struct RawCache {
    max_bytes: Option<i64>,
    default_ttl: Option<RawDuration>,
}

#[derive(Debug, Default, Deserialize)]
struct RawWebsocket {
    max_connections: Option<i64>,
    queue: Option<i64>,
    heartbeat_interval: Option<RawDuration>,
    client_timeout: Option<RawDuration>,
    send_timeout: Option<RawDuration>,
    max_lag_strikes: Option<i64>,
    cache_stats_interval: Option<RawDuration>,
}

#[derive(Debug, Deserialize)]
struct RawServer {
    name: Option<String>,
    url: Option<String>,
    enabled: Option<bool>,
    probe_interval: Option<RawDuration>,
    probe_timeout: Option<RawDuration>,
    call_timeout: Option<RawDuration>,
    degraded_latency: Option<RawDuration>,
    unhealthy_after: Option<i64>,
    healthy_after: Option<i64>,
    trust_annotations: Option<bool>,
    protocol: Option<String>,
    #[serde(default)]
    breaker: RawBreaker,
    #[serde(default)]
    tools: BTreeMap<String, RawToolPolicy>,
}

#[derive(Debug, Default, Deserialize)]
struct RawBreaker {
    failure_threshold: Option<i64>,
    failure_rate: Option<f64>,
    window: Option<i64>,
    min_calls: Option<i64>,
    open_duration: Option<RawDuration>,
    max_open_duration: Option<RawDuration>,
    half_open_trials: Option<i64>,
}

#[derive(Debug, Default, Deserialize)]
struct RawToolPolicy {
    cache: Option<bool>,
    ttl: Option<RawDuration>,
}

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
}

/// Tool-result cache settings.
#[derive(Clone, Debug)]
pub struct CacheConfig {
    /// Total weight bound: bytes of cached results (default 64 MiB).
    pub max_bytes: u64,
    /// TTL of a cacheable tool without its own `ttl` (default 60 s).
    pub default_ttl: Duration,
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
}

/// Per-tool cache policy.
#[derive(Clone, Debug, Default)]
pub struct ToolPolicy {
    /// `Some(true)`: cache; `Some(false)`: never cache; `None`: decided by annotations.
    pub cache: Option<bool>,
    /// TTL override; the cache's `default_ttl` otherwise.
    pub ttl: Option<Duration>,
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
#[derive(Clone, Debug)]
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
        }
    }
}

fn duration(
    raw: Option<RawDuration>,
    default: Duration,
    path: &str,
    errors: &mut Error,
) -> Duration {
    config_plumbing::duration(raw.as_ref(), default, path, errors)
}

fn positive(raw: Option<i64>, default: u64, path: &str, errors: &mut Error) -> u64 {
    match raw {
        None => default,
        Some(n) if n > 0 => n as u64,
        Some(n) => {
            errors.push(path, format!("invalid value {n}: must be > 0"));
            default
        }
    }
}

fn header(raw: Option<String>, default: HeaderName, path: &str, errors: &mut Error) -> HeaderName {
    match raw {
        None => default,
        Some(h) => HeaderName::try_from(h.as_str()).unwrap_or_else(|_| {
            errors.push(path, format!("invalid header name {h:?}"));
            default
        }),
    }
}

fn check_url(url: &str, path: &str, errors: &mut Error) {
    match reqwest::Url::parse(url) {
        Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => {}
        Ok(_) => errors.push(
            path,
            format!("invalid URL {url:?}: expected http(s)://host/..."),
        ),
        Err(e) => errors.push(path, format!("invalid URL {url:?}: {e}")),
    }
}

/// Checks a listen address: `HOST:PORT` or `unix:/path`.
pub fn check_listen(listen: &str) -> Result<(), String> {
    if let Some(path) = listen.strip_prefix("unix:") {
        if path.is_empty() {
            return Err(format!(
                "invalid listen address {listen:?}: empty socket path"
            ));
        }
        return Ok(());
    }
    listen
        .parse::<std::net::SocketAddr>()
        .map(|_| ())
        .map_err(|_| {
            format!("invalid listen address {listen:?}: expected 127.0.0.1:PORT or unix:/path")
        })
}

fn check(raw: RawConfig, errors: &mut Error) -> Config {
    let listen = raw.listen.unwrap_or_else(|| "127.0.0.1:8000".to_owned());
    if let Err(m) = check_listen(&listen) {
        errors.push("listen", m);
    }
    let identity_secret = match raw.identity_secret {
        None => None,
        // An empty value (e.g. `${SECRET:-}`) means "not configured"; a short one is refused.
        Some(s) if s.is_empty() => None,
        Some(s) if s.len() < 32 => {
            errors.push(
                "identity_secret",
                format!("too short ({} bytes): use at least 32 bytes", s.len()),
            );
            None
        }
        Some(s) => Some(s.into_bytes()),
    };
    let d = IdentityHeaders::default();
    let h = raw.identity_headers;
    let p = "identity_headers";
    let identity_headers = IdentityHeaders {
        user_id: header(h.user_id, d.user_id, &format!("{p}.user_id"), errors),
        username: header(h.username, d.username, &format!("{p}.username"), errors),
        role: header(h.role, d.role, &format!("{p}.role"), errors),
        roles: header(h.roles, d.roles, &format!("{p}.roles"), errors),
        email: header(h.email, d.email, &format!("{p}.email"), errors),
        expires: header(h.expires, d.expires, &format!("{p}.expires"), errors),
        signature: header(h.signature, d.signature, &format!("{p}.signature"), errors),
    };
    let roles = Roles {
        tool_call: raw.roles.tool_call.unwrap_or_default(),
        cache_admin: raw
            .roles
            .cache_admin
            .unwrap_or_else(|| vec!["admin".to_owned()]),
        ws_status: raw.roles.ws_status.unwrap_or_default(),
    };
    let max_concurrent_probes = positive(
        raw.probes.max_concurrent,
        8,
        "probes.max_concurrent",
        errors,
    ) as usize;
    let cache = CacheConfig {
        max_bytes: positive(raw.cache.max_bytes, 64 << 20, "cache.max_bytes", errors),
        default_ttl: duration(
            raw.cache.default_ttl,
            Duration::from_secs(60),
            "cache.default_ttl",
            errors,
        ),
    };
    let w = raw.websocket;
    let websocket = WebsocketConfig {
        max_connections: positive(
            w.max_connections,
            10_000,
            "websocket.max_connections",
            errors,
        ) as usize,
        queue: positive(w.queue, 256, "websocket.queue", errors) as usize,
        heartbeat_interval: duration(
            w.heartbeat_interval,
            Duration::from_secs(15),
            "websocket.heartbeat_interval",
            errors,
        ),
        client_timeout: duration(
            w.client_timeout,
            Duration::from_secs(45),
            "websocket.client_timeout",
            errors,
        ),
        send_timeout: duration(
            w.send_timeout,
            Duration::from_secs(5),
            "websocket.send_timeout",
            errors,
        ),
        max_lag_strikes: positive(w.max_lag_strikes, 3, "websocket.max_lag_strikes", errors) as u32,
        cache_stats_interval: duration(
            w.cache_stats_interval,
            Duration::from_secs(10),
            "websocket.cache_stats_interval",
            errors,
        ),
    };
    if websocket.client_timeout <= websocket.heartbeat_interval {
        errors.push(
            "websocket.client_timeout",
            "must be longer than websocket.heartbeat_interval",
        );
    }
    let mut names = HashSet::new();
    let servers = raw
        .servers
        .into_iter()
        .enumerate()
        .map(|(i, s)| check_server(s, &format!("servers[{i}]"), &mut names, errors))
        .collect();
    Config {
        listen,
        identity_secret,
        identity_headers,
        roles,
        max_concurrent_probes,
        cache,
        websocket,
        servers,
    }
}

fn check_server(
    raw: RawServer,
    p: &str,
    names: &mut HashSet<String>,
    errors: &mut Error,
) -> ServerConfig {
    let name = raw.name.unwrap_or_default();
    let name_ok = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
    if !name_ok {
        errors.push(
            format!("{p}.name"),
            format!("invalid server name {name:?}: 1-64 of [A-Za-z0-9._-]"),
        );
    } else if !names.insert(name.clone()) {
        errors.push(
            format!("{p}.name"),
            format!("duplicate server name {name:?}"),
        );
    }
    let url = raw.url.unwrap_or_default();
    check_url(&url, &format!("{p}.url"), errors);
    let mut s = ServerConfig::new(&name, &url);
    s.enabled = raw.enabled.unwrap_or(true);
    s.probe_interval = duration(
        raw.probe_interval,
        s.probe_interval,
        &format!("{p}.probe_interval"),
        errors,
    );
    s.probe_timeout = duration(
        raw.probe_timeout,
        s.probe_timeout,
        &format!("{p}.probe_timeout"),
        errors,
    );
    s.call_timeout = duration(
        raw.call_timeout,
        s.call_timeout,
        &format!("{p}.call_timeout"),
        errors,
    );
    s.degraded_latency = duration(
        raw.degraded_latency,
        s.degraded_latency,
        &format!("{p}.degraded_latency"),
        errors,
    );
    for (d, key) in [
        (s.probe_interval, "probe_interval"),
        (s.probe_timeout, "probe_timeout"),
        (s.call_timeout, "call_timeout"),
    ] {
        if d.is_zero() {
            errors.push(format!("{p}.{key}"), "must be > 0");
        }
    }
    s.unhealthy_after = positive(
        raw.unhealthy_after,
        3,
        &format!("{p}.unhealthy_after"),
        errors,
    ) as u32;
    s.healthy_after = positive(raw.healthy_after, 2, &format!("{p}.healthy_after"), errors) as u32;
    s.trust_annotations = raw.trust_annotations.unwrap_or(false);
    s.protocol = match raw.protocol.as_deref() {
        None | Some("auto") => Protocol::Auto,
        Some("legacy") => Protocol::Legacy,
        Some(other) => {
            errors.push(
                format!("{p}.protocol"),
                format!("invalid protocol {other:?}: expected \"auto\" or \"legacy\""),
            );
            Protocol::Auto
        }
    };
    s.breaker = check_breaker(raw.breaker, &format!("{p}.breaker"), errors);
    s.tools = raw
        .tools
        .into_iter()
        .map(|(tool, t)| {
            let ttl = t.ttl.map(|d| {
                duration(
                    Some(d),
                    Duration::ZERO,
                    &format!("{p}.tools.{tool}.ttl"),
                    errors,
                )
            });
            (
                tool,
                ToolPolicy {
                    cache: t.cache,
                    ttl,
                },
            )
        })
        .collect();
    s
}

fn check_breaker(raw: RawBreaker, p: &str, errors: &mut Error) -> BreakerConfig {
    let d = BreakerConfig::default();
    let failure_rate = match raw.failure_rate {
        Some(r) if !(r > 0.0 && r <= 1.0) => {
            errors.push(
                format!("{p}.failure_rate"),
                format!("invalid value {r}: must be in (0, 1]"),
            );
            d.failure_rate
        }
        Some(r) => Some(r),
        None => d.failure_rate,
    };
    let c = BreakerConfig {
        failure_threshold: positive(
            raw.failure_threshold,
            d.failure_threshold.into(),
            &format!("{p}.failure_threshold"),
            errors,
        ) as u32,
        failure_rate,
        window: positive(raw.window, d.window as u64, &format!("{p}.window"), errors) as usize,
        min_calls: positive(
            raw.min_calls,
            d.min_calls as u64,
            &format!("{p}.min_calls"),
            errors,
        ) as usize,
        open_duration: duration(
            raw.open_duration,
            d.open_duration,
            &format!("{p}.open_duration"),
            errors,
        ),
        max_open_duration: duration(
            raw.max_open_duration,
            d.max_open_duration,
            &format!("{p}.max_open_duration"),
            errors,
        ),
        half_open_trials: positive(
            raw.half_open_trials,
            d.half_open_trials.into(),
            &format!("{p}.half_open_trials"),
            errors,
        ) as u32,
    };
    if c.min_calls > c.window {
        errors.push(format!("{p}.min_calls"), "must be <= window");
    }
    if c.max_open_duration < c.open_duration {
        errors.push(format!("{p}.max_open_duration"), "must be >= open_duration");
    }
    c
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn embedded_default_has_no_servers_unless_env_names_one() {
        let c = Config::embedded(&env(&[])).expect("valid");
        assert!(c.servers.is_empty());
        assert_eq!(c.listen, "127.0.0.1:8000");
        assert!(c.identity_secret.is_none());
        let c = Config::embedded(&env(&[(MCP_URL_ENV, "http://127.0.0.1:9/mcp")])).expect("ok");
        assert_eq!(c.servers.len(), 1);
        assert_eq!(c.servers[0].name, "default");
        assert_eq!(c.servers[0].probe_interval, Duration::from_secs(30));
        assert!(Config::embedded(&env(&[(MCP_URL_ENV, "ftp://x")])).is_err());
    }

    #[test]
    fn example_config_is_valid() {
        let text = include_str!("../examples/omni2.yaml");
        let c = Config::from_yaml(
            text,
            &env(&[("OMNI2_IDENTITY_SECRET", "0123456789abcdef0123456789abcdef")]),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(c.servers.len(), 2);
        assert!(c.identity_secret.is_some());
    }

    #[test]
    fn default_identity_headers_are_the_wire_defaults() {
        let h = IdentityHeaders::default();
        let names: Vec<&str> = h.slots().iter().map(|n| n.as_str()).collect();
        assert_eq!(
            names,
            [
                "x-user-id",
                "x-user-username",
                "x-user-role",
                "x-user-roles",
                "x-user-email",
                "x-auth-expires"
            ]
        );
        assert_eq!(h.signature.as_str(), "x-auth-signature");
    }

    #[test]
    fn every_problem_reported_at_once_with_path() {
        let text = r#"
listen: nowhere
identity_secret: short
identty_secret: typo
cache: {max_bytes: 0}
servers:
  - name: a
    url: http://127.0.0.1:1/mcp
    probe_timeout: 5 parsecs
    breaker: {failure_rate: 2, colour: red}
  - name: a
    url: not a url
"#;
        let e = Config::from_yaml(text, &env(&[])).expect_err("invalid");
        for path in [
            "listen",
            "identity_secret",
            "identty_secret",
            "cache.max_bytes",
            "servers[0].probe_timeout",
            "servers[0].breaker.failure_rate",
            "servers[0].breaker.colour",
            "servers[1].name",
            "servers[1].url",
        ] {
            assert!(e.has(path), "missing {path} in {e}");
        }
        assert!(e.to_string().contains("\"5 parsecs\""), "{e}");
    }

    #[test]
    fn every_type_error_is_reported_not_just_the_first() {
        let text = r#"
probes: {max_concurrent: many}
websocket: {max_connections: [1, 2], queue: 8}
servers:
  - name: a
    url: http://127.0.0.1:1/mcp
    enabled: "sometimes"
    breaker: {window: ten}
"#;
        let e = Config::from_yaml(text, &env(&[])).expect_err("invalid");
        for path in [
            "probes.max_concurrent",
            "websocket.max_connections",
            "servers[0].enabled",
            "servers[0].breaker.window",
        ] {
            assert!(e.has(path), "missing {path} in {e}");
        }
        assert!(e.to_string().contains("many"), "the value is named: {e}");
        // A list item that cannot be taken out is reported once, and the search stops.
        let e = Config::from_yaml("servers: [5]\n", &env(&[])).expect_err("invalid");
        assert_eq!(e.0.len(), 1, "{e}");
        assert!(e.has("servers[0]"), "{e}");
    }

    #[test]
    fn env_interpolation() {
        let text = "identity_secret: ${S}\nservers:\n  - {name: x, url: \"${U:-http://h/mcp}\"}\n";
        let c = Config::from_yaml(text, &env(&[("S", &"k".repeat(32))])).expect("valid");
        assert_eq!(
            c.identity_secret.as_deref(),
            Some("k".repeat(32).as_bytes())
        );
        assert_eq!(c.servers[0].url, "http://h/mcp");
        let e = Config::from_yaml("identity_secret: ${NOPE}", &env(&[])).expect_err("unset");
        assert!(e.has("identity_secret"), "{e}");
        assert_eq!(
            config_plumbing::expand("a$$b", &env(&[])).expect("ok"),
            "a$b"
        );
    }
}
