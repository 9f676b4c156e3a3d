//! omni2's configuration as written; `check` turns it into [`super::Config`].

use std::collections::BTreeMap;

use config_plumbing::RawDuration;
use serde::Deserialize;

#[derive(Debug, Default, Deserialize)]
pub(super) struct RawConfig {
    pub(super) listen: Option<String>,
    pub(super) identity_secret: Option<String>,
    #[serde(default)]
    pub(super) identity_headers: RawIdentityHeaders,
    #[serde(default)]
    pub(super) roles: RawRoles,
    #[serde(default)]
    pub(super) probes: RawProbes,
    #[serde(default)]
    pub(super) cache: RawCache,
    #[serde(default)]
    pub(super) websocket: RawWebsocket,
    #[serde(default)]
    pub(super) servers: Vec<RawServer>,
    #[serde(default)]
    pub(super) audit: audit_log::RawAudit,
    #[serde(default)]
    pub(super) gateway: RawGateway,
}

#[derive(Debug, Default, Deserialize)]
pub(super) struct RawGateway {
    pub(super) enabled: Option<bool>,
    pub(super) separator: Option<String>,
    pub(super) allowed_hosts: Option<Vec<String>>,
    pub(super) session_idle_timeout: Option<RawDuration>,
}

#[derive(Debug, Default, Deserialize)]
pub(super) struct RawRateLimit {
    pub(super) burst: Option<i64>,
    pub(super) every: Option<RawDuration>,
}

#[derive(Debug, Default, Deserialize)]
pub(super) struct RawIdentityHeaders {
    pub(super) user_id: Option<String>,
    pub(super) username: Option<String>,
    pub(super) role: Option<String>,
    pub(super) roles: Option<String>,
    pub(super) email: Option<String>,
    pub(super) expires: Option<String>,
    pub(super) signature: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
pub(super) struct RawRoles {
    pub(super) tool_call: Option<Vec<String>>,
    pub(super) cache_admin: Option<Vec<String>>,
    pub(super) ws_status: Option<Vec<String>>,
    pub(super) control: Option<Vec<String>>,
}

#[derive(Debug, Default, Deserialize)]
pub(super) struct RawProbes {
    pub(super) max_concurrent: Option<i64>,
}

#[derive(Debug, Default, Deserialize)]
pub(super) struct RawCache {
    pub(super) max_bytes: Option<i64>,
    pub(super) default_ttl: Option<RawDuration>,
    pub(super) redis: Option<RawSharedCache>,
}

#[derive(Debug, Default, Deserialize)]
pub(super) struct RawSharedCache {
    pub(super) url: Option<String>,
    pub(super) key_prefix: Option<String>,
    pub(super) connect_timeout: Option<RawDuration>,
    pub(super) command_timeout: Option<RawDuration>,
}

#[derive(Debug, Default, Deserialize)]
pub(super) struct RawWebsocket {
    pub(super) max_connections: Option<i64>,
    pub(super) queue: Option<i64>,
    pub(super) heartbeat_interval: Option<RawDuration>,
    pub(super) client_timeout: Option<RawDuration>,
    pub(super) send_timeout: Option<RawDuration>,
    pub(super) max_lag_strikes: Option<i64>,
    pub(super) cache_stats_interval: Option<RawDuration>,
    pub(super) allowed_origins: Option<Vec<String>>,
}

#[derive(Debug, Deserialize)]
pub(super) struct RawServer {
    pub(super) name: Option<String>,
    pub(super) url: Option<String>,
    pub(super) enabled: Option<bool>,
    pub(super) probe_interval: Option<RawDuration>,
    pub(super) probe_timeout: Option<RawDuration>,
    pub(super) call_timeout: Option<RawDuration>,
    pub(super) degraded_latency: Option<RawDuration>,
    pub(super) unhealthy_after: Option<i64>,
    pub(super) healthy_after: Option<i64>,
    pub(super) trust_annotations: Option<bool>,
    pub(super) protocol: Option<String>,
    #[serde(default)]
    pub(super) breaker: RawBreaker,
    #[serde(default)]
    pub(super) tools: BTreeMap<String, RawToolPolicy>,
    pub(super) credentials: Option<super::credentials::RawCredentials>,
}

#[derive(Debug, Default, Deserialize)]
pub(super) struct RawBreaker {
    pub(super) failure_threshold: Option<i64>,
    pub(super) failure_rate: Option<f64>,
    pub(super) window: Option<i64>,
    pub(super) min_calls: Option<i64>,
    pub(super) open_duration: Option<RawDuration>,
    pub(super) max_open_duration: Option<RawDuration>,
    pub(super) half_open_trials: Option<i64>,
}

#[derive(Debug, Default, Deserialize)]
pub(super) struct RawToolPolicy {
    pub(super) cache: Option<bool>,
    pub(super) cache_scope: Option<String>,
    pub(super) ttl: Option<RawDuration>,
    pub(super) roles: Option<Vec<String>>,
    pub(super) rate_limit: Option<RawRateLimit>,
}
