//! The configuration as written. Enumerations and addresses stay strings here so that
//! validation can report every problem at once, each with its path.

use std::path::PathBuf;

use config_plumbing::RawDuration;
use serde::Deserialize;

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct RawConfig {
    pub listen: Option<String>,
    pub admin_listen: Option<String>,
    pub workers: Option<usize>,
    pub realm: Option<String>,
    pub trusted_proxies: Vec<String>,
    pub tokens: RawTokens,
    pub issuers: Vec<RawIssuer>,
    pub identity: RawIdentity,
    pub cache: RawCache,
    pub rules: Vec<RawRule>,
    /// A YAML/JSON list of revoked `jti`s and subject not-before times; hot-reloaded.
    pub revocation_file: Option<PathBuf>,
    /// Shared state between replicas (rate limits with `store: redis`, revocations).
    pub redis: Option<RawRedis>,
    /// The audit trail (`audit-log`'s shared block); absent: off.
    pub audit: audit_log::RawAudit,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct RawRedis {
    pub url: Option<String>,
    pub key_prefix: Option<String>,
    pub pool_size: Option<usize>,
    pub connect_timeout: Option<RawDuration>,
    pub command_timeout: Option<RawDuration>,
    pub revocation: bool,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct RawTokens {
    pub max_length: Option<usize>,
    pub cookie: Option<String>,
    pub query_param: Option<String>,
    pub websocket_protocol_prefix: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct RawIssuer {
    pub issuer: String,
    pub audiences: Vec<String>,
    pub leeway: Option<RawDuration>,
    pub require_exp: Option<bool>,
    pub max_lifetime: Option<RawDuration>,
    pub required_claims: Vec<String>,
    pub keys: Vec<RawKey>,
    pub jwks_file: Option<PathBuf>,
    /// Remote JWKS URL.
    pub jwks_uri: Option<String>,
    /// Find the JWKS URL through `<issuer>/.well-known/openid-configuration`.
    pub discovery: bool,
    /// Fetch and freshness tuning of the remote set.
    pub jwks: Option<RawJwks>,
    /// Accept ID tokens (`nonce`/`at_hash`) as access tokens (default false).
    pub accept_id_tokens: bool,
    /// Accepted JOSE `typ` values (e.g. `[at+jwt, application/at+jwt]`); empty: not checked.
    pub require_typ: Vec<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct RawJwks {
    pub timeout: Option<RawDuration>,
    pub refresh_min: Option<RawDuration>,
    pub refresh_max: Option<RawDuration>,
    pub cooldown: Option<RawDuration>,
    pub unknown_kid_ttl: Option<RawDuration>,
    pub max_stale: Option<RawDuration>,
    pub required: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct RawRateLimit {
    pub requests: u32,
    pub per: Option<RawDuration>,
    pub burst: Option<u32>,
    pub max_keys: Option<u64>,
    /// `local` (default) or `redis`.
    pub store: Option<String>,
    /// With `store: redis`: deny when Redis does not answer (default true).
    pub deny_on_error: Option<bool>,
    /// With `store: redis`: tokens taken from Redis per call and spent locally (default 1).
    pub lease: Option<u32>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct RawKey {
    pub kid: Option<String>,
    pub alg: String,
    /// Inline HMAC secret: allowed, with a warning.
    pub secret: Option<String>,
    pub secret_env: Option<String>,
    pub secret_file: Option<PathBuf>,
    pub pem_file: Option<PathBuf>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct RawSlot {
    pub header: Option<String>,
    pub claim: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct RawSignature {
    pub header: Option<String>,
    pub secret: Option<String>,
    pub secret_env: Option<String>,
    pub secret_file: Option<PathBuf>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct RawIdentity {
    pub user_id: RawSlot,
    pub username: RawSlot,
    pub role: RawSlot,
    pub roles: RawSlot,
    pub email: RawSlot,
    pub expires: RawSlot,
    pub signature: Option<RawSignature>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct RawCache {
    pub max_entries: Option<u64>,
    pub max_bytes: Option<u64>,
    pub max_ttl: Option<RawDuration>,
    pub negative_ttl: Option<RawDuration>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct RawRule {
    pub name: String,
    pub hosts: Vec<String>,
    pub path: Option<String>,
    pub path_prefix: Option<String>,
    pub path_regex: Option<String>,
    pub methods: Vec<String>,
    pub action: String,
    pub roles: Vec<String>,
    pub roles_mode: Option<String>,
    pub allow_cidrs: Vec<String>,
    pub deny_cidrs: Vec<String>,
    pub allow_query_token: bool,
    pub allow_preflight: bool,
    /// Refuse `%2F`, `%5C`, `%00` in the path (default on; ignored on `public` rules).
    pub deny_encoded_separators: Option<bool>,
    pub rate_limit: Option<RawRateLimit>,
    /// Absolute login page; browsers get a 302 there instead of a 401.
    pub login_url: Option<String>,
    /// Match on the forwarded `Mcp-Method` (MCP 2026-07-28 and later).
    pub mcp_methods: Vec<String>,
    /// Match `tools/call` on the forwarded `Mcp-Name` (MCP 2026-07-28 and later).
    pub mcp_tools: Vec<String>,
    /// The rule guards an MCP server: an OAuth protected resource.
    pub mcp: Option<RawMcp>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct RawMcp {
    /// The canonical resource URI (RFC 8707); tokens must carry it in `aud`.
    pub resource: String,
    pub authorization_servers: Vec<String>,
    pub scopes_supported: Vec<String>,
    pub resource_documentation: Option<String>,
    /// Scopes the token must carry on this rule.
    pub scopes: Vec<String>,
}
