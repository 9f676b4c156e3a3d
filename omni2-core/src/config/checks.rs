//! Checks `RawConfig` and builds [`Config`], reporting every problem with its path.

use std::collections::HashSet;
use std::time::Duration;

use actix_web::http::header::HeaderName;
use config_plumbing::RawDuration;

use super::raw::*;
use super::{
    CacheConfig, CacheScope, Config, Error, GatewayConfig, IdentityHeaders, Protocol, RateLimit,
    Roles, ServerConfig, SharedCacheConfig, ToolPolicy, WebsocketConfig,
};
use crate::breaker::BreakerConfig;

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

pub(super) fn check_url(url: &str, path: &str, errors: &mut Error) {
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

pub(super) fn check(raw: RawConfig, errors: &mut Error) -> Config {
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
        control: raw
            .roles
            .control
            .unwrap_or_else(|| vec!["admin".to_owned()]),
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
        redis: raw.cache.redis.map(|r| check_shared_cache(r, errors)),
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
        allowed_origins: origins(w.allowed_origins, "websocket.allowed_origins", errors),
    };
    if websocket.client_timeout <= websocket.heartbeat_interval {
        errors.push(
            "websocket.client_timeout",
            "must be longer than websocket.heartbeat_interval",
        );
    }
    let mut names = HashSet::new();
    let servers: Vec<ServerConfig> = raw
        .servers
        .into_iter()
        .enumerate()
        .map(|(i, s)| check_server(s, &format!("servers[{i}]"), &mut names, errors))
        .collect();
    let gateway = check_gateway(raw.gateway, &servers, errors);
    let audit = audit_log::compile(
        &raw.audit,
        "audit",
        audit_log::Binary::Omni2,
        std::path::Path::new("."),
        errors,
    );
    Config {
        listen,
        identity_secret,
        identity_headers,
        roles,
        max_concurrent_probes,
        cache,
        websocket,
        servers,
        audit,
        gateway,
    }
}

/// `gateway`, and the namespacing it implies: no server name may contain the separator,
/// so `server + separator + tool` never names two tools.
fn check_gateway(raw: RawGateway, servers: &[ServerConfig], errors: &mut Error) -> GatewayConfig {
    let d = GatewayConfig::default();
    let separator = raw.separator.unwrap_or(d.separator);
    let valid = |c: char| c.is_ascii_alphanumeric() || "_-.".contains(c);
    if separator.is_empty() || separator.len() > 8 || !separator.chars().all(valid) {
        errors.push(
            "gateway.separator",
            format!("invalid separator {separator:?}: 1-8 of [A-Za-z0-9_.-]"),
        );
    } else {
        for (i, s) in servers.iter().enumerate() {
            // The listed name splits at the separator's first occurrence: it must be the
            // one right after the server name (`a_` with `__` would split as `a`).
            let prefix = format!("{}{separator}", s.name);
            if prefix.find(&separator) != Some(s.name.len()) {
                errors.push(
                    format!("servers[{i}].name"),
                    format!(
                        "server name {:?} contains (or ends with part of) the gateway \
                         separator {separator:?}: its tool names on /mcp could collide \
                         with another server's; rename it or set gateway.separator",
                        s.name
                    ),
                );
            }
        }
    }
    let session_idle_timeout = duration(
        raw.session_idle_timeout,
        d.session_idle_timeout,
        "gateway.session_idle_timeout",
        errors,
    );
    if session_idle_timeout.is_zero() {
        errors.push("gateway.session_idle_timeout", "must be > 0");
    }
    GatewayConfig {
        enabled: raw.enabled.unwrap_or(d.enabled),
        separator,
        allowed_hosts: raw.allowed_hosts.unwrap_or_default(),
        session_idle_timeout,
    }
}

fn check_rate_limit(raw: RawRateLimit, p: &str, errors: &mut Error) -> RateLimit {
    let burst = positive(raw.burst, 1, &format!("{p}.burst"), errors).min(u64::from(u32::MAX));
    let every = duration(
        raw.every,
        Duration::from_secs(1),
        &format!("{p}.every"),
        errors,
    );
    if every.is_zero() {
        errors.push(format!("{p}.every"), "must be > 0");
    }
    RateLimit {
        burst: burst as u32,
        every,
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
    s.credentials = raw.credentials.map_or_else(Default::default, |c| {
        super::credentials::check_credentials(c, &format!("{p}.credentials"), errors)
    });
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
            let cache_scope = match t.cache_scope.as_deref() {
                None | Some("per_user") => CacheScope::PerUser,
                Some("shared") => CacheScope::Shared,
                Some(other) => {
                    errors.push(
                        format!("{p}.tools.{tool}.cache_scope"),
                        format!("invalid scope {other:?}: expected \"per_user\" or \"shared\""),
                    );
                    CacheScope::PerUser
                }
            };
            let rate_limit = t
                .rate_limit
                .map(|r| check_rate_limit(r, &format!("{p}.tools.{tool}.rate_limit"), errors));
            (
                tool,
                ToolPolicy {
                    cache: t.cache,
                    ttl,
                    cache_scope,
                    roles: t.roles,
                    rate_limit,
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

/// Each entry a serialised origin as browsers send it: `http(s)://host[:port]`, no path,
/// no `*` or `null` (an opaque origin proves nothing). Stored lowercase.
fn origins(raw: Option<Vec<String>>, field: &str, errors: &mut Error) -> Vec<String> {
    let mut out = Vec::new();
    for (i, o) in raw.unwrap_or_default().into_iter().enumerate() {
        let lower = o.to_ascii_lowercase();
        let serialised = reqwest::Url::parse(&lower)
            .ok()
            .filter(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some())
            .map(|u| u.origin().ascii_serialization());
        if serialised.as_deref() == Some(lower.as_str()) {
            out.push(lower);
        } else {
            errors.push(
                format!("{field}[{i}]"),
                "must be an origin like https://app.example.com[:port] (no path, no trailing /, no *)",
            );
        }
    }
    out
}

/// `cache.redis`: a `redis://` URL (TLS is not built in), a prefix, timeouts above zero.
fn check_shared_cache(raw: RawSharedCache, errors: &mut Error) -> SharedCacheConfig {
    let url = match raw.url {
        None => {
            errors.push(
                "cache.redis.url",
                "required: redis://[user:pass@]host:port[/db]",
            );
            String::new()
        }
        Some(url) if !url.starts_with("redis://") => {
            // The value may hold a password: only its scheme is shown.
            let scheme = url.split_once("://").map_or("none", |(s, _)| s).to_owned();
            errors.push(
                "cache.redis.url",
                format!(
                    "scheme {scheme:?}: expected redis://[user:pass@]host:port[/db] (TLS is not built in)"
                ),
            );
            url
        }
        Some(url) => {
            if let Err(e) = redis::Client::open(url.as_str()) {
                errors.push("cache.redis.url", format!("invalid Redis URL: {e}"));
            }
            url
        }
    };
    let key_prefix = raw.key_prefix.unwrap_or_else(|| "omni2:cache:".into());
    if key_prefix.is_empty() {
        errors.push(
            "cache.redis.key_prefix",
            "must not be empty: keys would mix with others",
        );
    }
    let mut timeout = |raw: Option<RawDuration>, default_ms: u64, field: &str| {
        let path = format!("cache.redis.{field}");
        let d = duration(raw, Duration::from_millis(default_ms), &path, errors);
        if d.is_zero() {
            errors.push(&path, "must be > 0");
        }
        d
    };
    let connect_timeout = timeout(raw.connect_timeout, 250, "connect_timeout");
    let command_timeout = timeout(raw.command_timeout, 50, "command_timeout");
    SharedCacheConfig {
        url,
        key_prefix,
        connect_timeout,
        command_timeout,
    }
}
