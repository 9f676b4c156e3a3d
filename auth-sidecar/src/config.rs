//! Configuration: YAML → interpolation → `RawConfig` → validated, compiled `Runtime`.
//!
//! Every problem is collected before failing, each as `path: message` naming the value
//! (`rules[2].allow_cidrs[0]: invalid CIDR "10.0.0/8": ...`). Unknown keys are errors: in
//! an auth policy a misspelt key must fail, not be silently ignored.
//!
//! Parsing, `${VAR}`, durations and type-error collection are the `config-plumbing` crate's.
//! Sections compile in `issuer` (keys, JWKS), `rule`, `identity`, all with one
//! `compiler::Compiler` context (base directory, variables, problems, warnings, and the
//! digest of the key material read, so each file is read once and fingerprints cover the
//! bytes compiled). `raw` is the file as written; `crate::reload` reloads it.

mod compiler;
mod identity;
mod issuer;
mod raw;
mod rule;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use aws_lc_rs::digest;
use jsonwebtoken::Algorithm;

pub use config_plumbing::{Env, Problem, Problems, ProcessEnv};
use raw::{RawCache, RawConfig, RawIssuer, RawRedis, RawRule, RawTokens};

use crate::cache::{CacheSettings, TokenCache};
use crate::clock::unix_now;
use crate::http::answer::{McpChallenge, Realm};
use crate::identity::IdentityMapping;
use crate::jwt::Issuer;
use crate::mcp_resource::Resource;
use crate::net::CidrSet;
use crate::policy::{Policy, Rule};
use crate::ratelimit::Limiter;
use crate::redis_pool::{RedisPool, RedisSettings};
use crate::revocation::{Revocations, SharedRevocations};
use crate::token::TokenSources;
use compiler::Compiler;

/// The embedded development configuration (`auth-sidecar` with no arguments).
pub const DEV_CONFIG: &str = include_str!("config/dev.yaml");
/// The development HMAC secret used when `AUTH_SIDECAR_DEV_SECRET` is unset.
pub const DEV_SECRET: &str = "dev-only-insecure-secret-do-not-use-in-production";
pub const DEV_SECRET_ENV: &str = "AUTH_SIDECAR_DEV_SECRET";
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8700";

/// A validated configuration, compiled for the request path. Immutable: a reload builds a
/// new one and swaps it in, so in-flight requests finish on the one they started with.
#[derive(Debug)]
pub struct Runtime {
    pub listen: SocketAddr,
    pub admin_listen: Option<SocketAddr>,
    /// actix workers; `None` = one per CPU.
    pub workers: Option<usize>,
    pub realm: Realm,
    pub trusted_proxies: CidrSet,
    pub tokens: TokenSources,
    pub issuers: Vec<Issuer>,
    pub identity: IdentityMapping,
    pub policy: Policy,
    /// Verified tokens. A reload keeps it only when keys and validation settings are
    /// unchanged (`validation_fingerprint`); otherwise the new runtime starts empty.
    pub cache: Arc<TokenCache>,
    /// Revoked tokens; reloaded in place when the revocation file changes.
    pub revocation: Arc<Revocations>,
    /// The `redis:` block's connections, when there is one.
    pub redis: Option<Arc<RedisPool>>,
    /// Digest of issuers (settings and key material), identity mapping and cache settings.
    pub validation_fingerprint: Vec<u8>,
    /// SHA-256 (hex, first 16 chars) of the configuration text.
    pub hash: String,
    /// Things that work but deserve attention (inline secrets, ...).
    pub warnings: Vec<String>,
    /// Where the configuration came from.
    pub source: Source,
    /// The key `mint` finds in `issuers[0].keys` when asked (development).
    pub mint_key: Option<MintKey>,
    /// The audit trail; `None`: off. Its sink is set up once at start (see `http::AppState`);
    /// a reload changes only the sampling of allows.
    pub audit: Option<audit_log::AuditSettings>,
    /// The protected resources of the rules' `mcp:` blocks, whose metadata the sidecar serves.
    pub resources: Vec<Arc<Resource>>,
}

/// Where a configuration comes from.
#[derive(Clone, Debug)]
pub enum Source {
    File(PathBuf),
    /// The embedded development config.
    Embedded,
    /// Text given to `Runtime::from_yaml` (tests, tools).
    Text,
}

impl Runtime {
    /// Loads and validates a configuration file.
    pub fn load(path: &Path, env: &dyn Env) -> Result<Runtime, Problems> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            let mut p = Problems::default();
            p.push("", format!("cannot read {}: {e}", path.display()));
            p
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        Runtime::compile_text(&text, base, env, Source::File(path.to_owned()))
    }

    /// The embedded development config. Its HMAC secret comes from
    /// `AUTH_SIDECAR_DEV_SECRET`, else a fixed development value (the caller warns).
    pub fn embedded(env: &dyn Env) -> Result<Runtime, Problems> {
        Runtime::compile_text(
            DEV_CONFIG,
            Path::new("."),
            &WithDevSecret(env),
            Source::Embedded,
        )
    }

    /// Parses and validates YAML text; relative file paths resolve against `base`.
    pub fn from_yaml(text: &str, base: &Path, env: &dyn Env) -> Result<Runtime, Problems> {
        Runtime::compile_text(text, base, env, Source::Text)
    }

    fn compile_text(
        text: &str,
        base: &Path,
        env: &dyn Env,
        source: Source,
    ) -> Result<Runtime, Problems> {
        let mut problems = Problems::default();
        let Some(parsed) = config_plumbing::parse::<RawConfig>(text, env, &mut problems) else {
            return Err(problems);
        };
        let before_compile = problems.len();
        let mut c = Compiler::new(base, env, &mut problems);
        let runtime =
            compile(&parsed.raw, &mut c).map(|parts| parts.finish(short_hash(text), source));
        parsed
            .cleared
            .forget_consequences(&mut problems, before_compile);
        match runtime {
            Some(rt) if problems.is_empty() => Ok(rt),
            _ => Err(problems),
        }
    }

    /// Takes over state from the configuration this one replaces: remote key sets of issuers
    /// whose settings are unchanged (no refetch), the verification cache when keys and
    /// validation settings are unchanged, and rate-limit buckets of rules with the same name
    /// and limit.
    pub fn adopt(&mut self, old: &Runtime) {
        for issuer in &mut self.issuers {
            if issuer.remote.is_none() {
                continue;
            }
            if let Some(previous) = old.issuers.iter().find(|o| {
                o.issuer == issuer.issuer
                    && o.fingerprint == issuer.fingerprint
                    && o.remote.is_some()
            }) {
                issuer.remote = previous.remote.clone();
            }
        }
        // Cached identities carry grants only while some rule reads them (`resources`).
        if self.validation_fingerprint == old.validation_fingerprint
            && self.resources.is_empty() == old.resources.is_empty()
        {
            self.cache = old.cache.clone();
        }
        for rule in &mut self.policy.rules {
            // Buckets kept in Redis need no carrying over.
            let Some(Limiter::Local(limiter)) = &rule.rate_limit else {
                continue;
            };
            if let Some(previous) = old.policy.rules.iter().find_map(|o| match &o.rate_limit {
                Some(Limiter::Local(l)) if o.name == rule.name && l.limit == limiter.limit => {
                    Some(l)
                }
                _ => None,
            }) {
                rule.rate_limit = Some(Limiter::Local(previous.clone()));
            }
        }
        // The list through Redis and its subscriber carry over while the block is the same:
        // a reload must not open a window where a revoked token passes.
        if let (Some(revocation), Some(previous)) = (
            Arc::get_mut(&mut self.revocation),
            old.revocation.shared.as_ref(),
        ) && revocation
            .shared
            .as_ref()
            .is_some_and(|s| s.pool().settings == previous.pool().settings)
        {
            revocation.shared = Some(previous.clone());
        }
    }

    /// Starts the background tasks (idempotent): the refresh of every remote key set and
    /// the revocation subscriber. Needs a tokio runtime; without one (`check-config`,
    /// `explain`) keys are fetched on first use and Redis is not asked.
    pub fn start_background(&self) {
        if tokio::runtime::Handle::try_current().is_err() {
            return;
        }
        for remote in self.issuers.iter().filter_map(|i| i.remote.as_ref()) {
            remote.spawn_refresh();
        }
        if let Some(shared) = &self.revocation.shared {
            shared.spawn_subscriber();
        }
    }

    /// The header names emitted on allow (what Traefik's `authResponseHeaders` must list).
    pub fn identity_header_names(&self) -> Vec<&str> {
        self.identity.header_names()
    }
}

pub fn short_hash(text: &str) -> String {
    let d = digest::digest(&digest::SHA256, text.as_bytes());
    d.as_ref()[..8].iter().map(|b| format!("{b:02x}")).collect()
}

/// The embedded config's variables: `AUTH_SIDECAR_DEV_SECRET` falls back to [`DEV_SECRET`].
struct WithDevSecret<'a>(&'a dyn Env);

impl Env for WithDevSecret<'_> {
    fn var(&self, name: &str) -> Option<String> {
        self.0
            .var(name)
            .or_else(|| (name == DEV_SECRET_ENV).then(|| DEV_SECRET.to_owned()))
    }
}

/// Which compiled key `mint` signs with: the first HMAC key of the first issuer (`mint`
/// sets that issuer's `iss`). Names the key only; the secret stays inside the key set.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MintKey {
    pub kid: Option<String>,
    pub alg: Algorithm,
}

fn mint_key(issuers: &[RawIssuer]) -> Option<MintKey> {
    issuers.first()?.keys.iter().find_map(|key| {
        let alg = key
            .alg
            .parse::<Algorithm>()
            .ok()
            .filter(|a| issuer::is_hmac(*a))?;
        Some(MintKey {
            kid: key.kid.clone(),
            alg,
        })
    })
}

/// Everything a runtime is compiled from the file, before its hash and source are known.
struct Compiled {
    listen: SocketAddr,
    admin_listen: Option<SocketAddr>,
    workers: Option<usize>,
    realm: Realm,
    trusted_proxies: CidrSet,
    tokens: TokenSources,
    issuers: Vec<Issuer>,
    identity: IdentityMapping,
    rules: Vec<Rule>,
    cache: CacheSettings,
    revocation: Revocations,
    redis: Option<Arc<RedisPool>>,
    validation_fingerprint: Vec<u8>,
    warnings: Vec<String>,
    mint_key: Option<MintKey>,
    audit: Option<audit_log::AuditSettings>,
    resources: Vec<Arc<Resource>>,
}

impl Compiled {
    fn finish(self, hash: String, source: Source) -> Runtime {
        Runtime {
            listen: self.listen,
            admin_listen: self.admin_listen,
            workers: self.workers,
            realm: self.realm,
            trusted_proxies: self.trusted_proxies,
            tokens: self.tokens,
            issuers: self.issuers,
            identity: self.identity,
            policy: Policy { rules: self.rules },
            cache: Arc::new(TokenCache::new(self.cache)),
            revocation: Arc::new(self.revocation),
            redis: self.redis,
            validation_fingerprint: self.validation_fingerprint,
            hash,
            warnings: self.warnings,
            source,
            mint_key: self.mint_key,
            audit: self.audit,
            resources: self.resources,
        }
    }
}

/// Compiles every section in file order, so problems are reported in that order.
fn compile(raw: &RawConfig, c: &mut Compiler) -> Option<Compiled> {
    let listen = c.socket_addr(raw.listen.as_deref().unwrap_or(DEFAULT_LISTEN), "listen");
    let admin_listen = raw
        .admin_listen
        .as_deref()
        .and_then(|a| c.socket_addr(a, "admin_listen"));
    if raw.workers == Some(0) {
        c.push("workers", "must be at least 1");
    }
    let realm = compile_realm(raw.realm.as_deref(), c);
    let trusted_proxies = c.cidrs(&raw.trusted_proxies, "trusted_proxies");
    let tokens = compile_tokens(&raw.tokens, c);
    let issuers = compile_issuers(&raw.issuers, c);
    c.start_material(format!("{:?}{:?}", raw.identity, raw.cache).as_bytes());
    let identity = identity::compile_identity(&raw.identity, c);
    let validation_fingerprint = validation_fingerprint(&issuers, &c.finish_material());
    let redis = raw
        .redis
        .as_ref()
        .and_then(|r| compile_redis(r, c))
        .map(|settings| Arc::new(RedisPool::new(settings)));
    let revocation = compile_revocation(raw, redis.as_ref(), c);
    let cache = compile_cache(&raw.cache, c);
    let mut resources = rule::Resources::default();
    let rules = compile_rules(
        &raw.rules,
        redis.as_ref(),
        raw.redis.is_some(),
        &mut resources,
        c,
    );
    let audit = audit_log::compile(
        &raw.audit,
        "audit",
        audit_log::Binary::Sidecar,
        c.base,
        c.problems,
    );
    if let Some(audit_log::SinkSettings::File { path, .. }) = audit.as_ref().map(|a| &a.sink)
        && path.parent() == Some(c.base)
    {
        c.warn(format!(
            "audit.file {} is in the config file's directory, which is watched for changes: every audit write wakes the watcher; put it in a directory of its own (e.g. /var/log/auth-sidecar/)",
            path.display()
        ));
    }
    if !c.problems.is_empty() {
        return None;
    }
    Some(Compiled {
        listen: listen?,
        admin_listen,
        workers: raw.workers,
        realm: Realm::new(&realm).with_mcp(
            rules
                .iter()
                .map(|r| {
                    r.mcp
                        .as_ref()
                        .map(|m| McpChallenge::new(&realm, &m.resource.metadata_url, &m.scopes))
                })
                .collect(),
        ),
        trusted_proxies,
        tokens,
        issuers,
        identity: identity?,
        rules,
        cache,
        revocation: revocation?,
        redis,
        validation_fingerprint,
        warnings: std::mem::take(&mut c.warnings),
        mint_key: mint_key(&raw.issuers),
        audit,
        resources: resources.list.into_iter().map(|(_, r)| r).collect(),
    })
}

fn compile_realm(raw: Option<&str>, c: &mut Compiler) -> String {
    let realm = raw.unwrap_or("omni2").to_owned();
    if realm.is_empty()
        || !realm
            .bytes()
            .all(|b| (0x20..0x7f).contains(&b) && b != b'"' && b != b'\\')
    {
        c.push(
            "realm",
            format!("invalid realm {realm:?}: printable ASCII without quotes or backslashes"),
        );
    }
    realm
}

/// The largest `tokens.max_length`: 64 KiB, far beyond any real access token and below
/// actix-http's 128 KiB request-head limit; a larger bound only invites absurd arithmetic.
const MAX_TOKEN_LENGTH: usize = 64 * 1024;

fn compile_tokens(raw: &RawTokens, c: &mut Compiler) -> TokenSources {
    let tokens = TokenSources {
        max_length: raw.max_length.unwrap_or(8192),
        cookie: raw.cookie.clone(),
        query_param: raw
            .query_param
            .clone()
            .unwrap_or_else(|| "access_token".into()),
        websocket_protocol_prefix: Some(
            raw.websocket_protocol_prefix
                .clone()
                .unwrap_or_else(|| "base64url.bearer.authorization.k8s.io.".into()),
        )
        .filter(|p| !p.is_empty()),
    };
    if tokens.max_length == 0 {
        c.push("tokens.max_length", "must be at least 1");
    } else if tokens.max_length > MAX_TOKEN_LENGTH {
        c.push(
            "tokens.max_length",
            format!(
                "{} is more than {MAX_TOKEN_LENGTH}, far beyond any real access token",
                tokens.max_length
            ),
        );
    }
    tokens
}

fn compile_issuers(raw: &[RawIssuer], c: &mut Compiler) -> Vec<Issuer> {
    if raw.is_empty() {
        c.push("issuers", "at least one issuer is required");
    }
    let issuers: Vec<Issuer> = raw
        .iter()
        .enumerate()
        .map(|(i, r)| issuer::compile_issuer(r, &format!("issuers[{i}]"), c))
        .collect();
    for (i, issuer) in issuers.iter().enumerate() {
        if issuers[..i].iter().any(|o| o.issuer == issuer.issuer) {
            c.push(
                format!("issuers[{i}].issuer"),
                format!("duplicate issuer {:?}", issuer.issuer),
            );
        }
    }
    issuers
}

/// Digest of the issuers' fingerprints and the identity and cache settings with the
/// signature secret: equal digests let a reload keep the verification cache.
fn validation_fingerprint(issuers: &[Issuer], identity_material: &[u8]) -> Vec<u8> {
    let mut ctx = digest::Context::new(&digest::SHA256);
    for issuer in issuers {
        ctx.update(&issuer.fingerprint);
    }
    ctx.update(identity_material);
    ctx.finish().as_ref().to_vec()
}

/// The most connections one sidecar keeps to Redis: each is multiplexed (pipelined), so
/// a few carry any load one process can make.
const MAX_REDIS_POOL: usize = 64;

fn compile_redis(raw: &RawRedis, c: &mut Compiler) -> Option<RedisSettings> {
    let before = c.problem_count();
    let key_prefix = raw
        .key_prefix
        .clone()
        .unwrap_or_else(|| "auth-sidecar:".into());
    if key_prefix.is_empty()
        || key_prefix
            .chars()
            .any(|ch| ch.is_whitespace() || ch.is_control())
    {
        c.push(
            "redis.key_prefix",
            format!(
                "invalid prefix {key_prefix:?}: non-empty, without spaces or control characters"
            ),
        );
    }
    let pool_size = raw.pool_size.unwrap_or(4);
    if !(1..=MAX_REDIS_POOL).contains(&pool_size) {
        c.push(
            "redis.pool_size",
            format!("{pool_size} is not between 1 and {MAX_REDIS_POOL}"),
        );
    }
    let connect_timeout = c.duration(
        raw.connect_timeout.as_ref(),
        std::time::Duration::from_millis(250),
        "redis.connect_timeout",
    );
    let command_timeout = c.duration(
        raw.command_timeout.as_ref(),
        std::time::Duration::from_millis(50),
        "redis.command_timeout",
    );
    for (value, key) in [
        (connect_timeout, "redis.connect_timeout"),
        (command_timeout, "redis.command_timeout"),
    ] {
        if value.is_zero() {
            c.push(key, "must be greater than zero");
        }
    }
    let settings = match raw.url.as_deref() {
        None | Some("") => {
            c.push(
                "redis.url",
                "is required with a redis: block (redis://host:port)",
            );
            None
        }
        Some(url) => RedisSettings::new(
            url,
            key_prefix,
            pool_size,
            connect_timeout,
            command_timeout,
            raw.revocation,
        )
        // The URL may hold a password: never echo it.
        .map_err(|e| c.push("redis.url", e))
        .ok(),
    };
    (c.problem_count() == before).then_some(settings).flatten()
}

fn compile_revocation(
    raw: &RawConfig,
    redis: Option<&Arc<RedisPool>>,
    c: &mut Compiler,
) -> Option<Revocations> {
    let mut revocations = match &raw.revocation_file {
        None => Revocations::default(),
        Some(file) => match Revocations::load(&c.base.join(file), unix_now()) {
            Ok(r) => r,
            Err(p) => {
                c.problems.0.extend(p.0);
                return None;
            }
        },
    };
    revocations.shared = redis
        .filter(|pool| pool.settings.revocation)
        .map(|pool| Arc::new(SharedRevocations::new(pool.clone())));
    Some(revocations)
}

fn compile_cache(raw: &RawCache, c: &mut Compiler) -> CacheSettings {
    let defaults = CacheSettings::default();
    let cache = CacheSettings {
        max_entries: raw.max_entries.unwrap_or(defaults.max_entries),
        max_bytes: raw.max_bytes.unwrap_or(defaults.max_bytes),
        max_ttl: c.duration(raw.max_ttl.as_ref(), defaults.max_ttl, "cache.max_ttl"),
        negative_ttl: c.duration(
            raw.negative_ttl.as_ref(),
            defaults.negative_ttl,
            "cache.negative_ttl",
        ),
    };
    if cache.max_entries == 0 || cache.max_bytes == 0 {
        c.push("cache", "max_entries and max_bytes must be at least 1");
    }
    cache
}

fn compile_rules(
    raw: &[RawRule],
    redis: Option<&Arc<RedisPool>>,
    redis_block: bool,
    resources: &mut rule::Resources,
    c: &mut Compiler,
) -> Vec<Rule> {
    if raw.is_empty() {
        c.push(
            "rules",
            "at least one rule is required (unmatched requests are denied)",
        );
    }
    let mut rules = Vec::new();
    for (i, r) in raw.iter().enumerate() {
        let path = format!("rules[{i}]");
        if raw[..i].iter().any(|o| o.name == r.name) && !r.name.is_empty() {
            c.push(
                format!("{path}.name"),
                format!("duplicate rule name {:?}", r.name),
            );
        }
        if let Some(rule) = rule::compile_rule(r, &path, redis, redis_block, resources, c) {
            rules.push(rule);
        }
    }
    rules
}

#[cfg(test)]
mod tests;
