//! Configuration: YAML → interpolation → `RawConfig` → validated, compiled `Runtime`.
//!
//! Every problem is collected before failing, each as `path: message` naming the value
//! (`rules[2].allow_cidrs[0]: invalid CIDR "10.0.0/8": ...`). Unknown keys are errors: in
//! an auth policy a misspelt key must fail, not be silently ignored.

mod raw;
pub mod watch;

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use actix_web::http::header::HeaderName;
use aws_lc_rs::digest;
use ipnet::IpNet;
use jsonwebtoken::Algorithm;
use regex::Regex;

pub use config_plumbing::{Env, ProcessEnv, Problem, Problems};
use config_plumbing::{RawDuration, duration as duration_or, parse_duration};
use raw::{RawConfig, RawIssuer, RawKey, RawRule};

use crate::cache::{CacheSettings, TokenCache};
use crate::decision::Realm;
use crate::identity::{IdentityMapping, SIGNATURE_HEADER, Slot};
use crate::jwt::Issuer;
use crate::keys::jwks::{JwksSettings, JwksSource, RemoteKeys, unix_now};
use crate::keys::{KeySet, SUPPORTED, VerifyingKey};
use crate::login::LoginRedirect;
use crate::net::CidrSet;
use crate::policy::{
    Action, CidrFilter, HostMatcher, MethodSet, PathMatcher, Policy, RoleRequirement, Rule,
};
use crate::ratelimit::{RateLimit, RateLimiter};
use crate::revocation::Revocations;
use crate::token::TokenSources;

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
    /// Digest of issuers (settings and key material), identity mapping and cache settings.
    pub validation_fingerprint: Vec<u8>,
    /// SHA-256 (hex, first 16 chars) of the configuration text.
    pub hash: String,
    /// Things that work but deserve attention (inline secrets, ...).
    pub warnings: Vec<String>,
    /// The first HMAC key of the first issuer, for `auth-sidecar mint` (development).
    pub mint_key: Option<MintKey>,
}

/// An HMAC signing key kept for `mint`.
#[derive(Clone)]
pub struct MintKey {
    pub kid: Option<String>,
    pub alg: Algorithm,
    pub secret: Vec<u8>,
}

impl fmt::Debug for MintKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MintKey")
            .field("kid", &self.kid)
            .field("alg", &self.alg)
            .finish_non_exhaustive()
    }
}

/// Where a configuration comes from.
#[derive(Clone, Debug)]
pub enum Source {
    File(PathBuf),
    /// The embedded development config.
    Embedded,
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
        Runtime::from_yaml(&text, base, env)
    }

    /// The embedded development config. Its HMAC secret comes from
    /// `AUTH_SIDECAR_DEV_SECRET`, else a fixed development value (the caller warns).
    pub fn embedded(env: &dyn Env) -> Result<Runtime, Problems> {
        let with_dev_secret = |name: &str| {
            env.var(name)
                .or_else(|| (name == DEV_SECRET_ENV).then(|| DEV_SECRET.to_owned()))
        };
        Runtime::from_yaml(DEV_CONFIG, Path::new("."), &with_dev_secret)
    }

    /// Parses and validates YAML text; relative file paths resolve against `base`.
    pub fn from_yaml(text: &str, base: &Path, env: &dyn Env) -> Result<Runtime, Problems> {
        let mut problems = Problems::default();
        let Some(parsed) = config_plumbing::parse::<RawConfig>(text, env, &mut problems) else {
            return Err(problems);
        };
        let before_compile = problems.len();
        let runtime = compile(&parsed.raw, base, env, short_hash(text), &mut problems);
        parsed.cleared.forget_consequences(&mut problems, before_compile);
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
        if self.validation_fingerprint == old.validation_fingerprint {
            self.cache = old.cache.clone();
        }
        for rule in &mut self.policy.rules {
            let Some(limiter) = &rule.rate_limit else {
                continue;
            };
            if let Some(previous) = old.policy.rules.iter().find(|o| {
                o.name == rule.name
                    && o.rate_limit
                        .as_ref()
                        .is_some_and(|l| l.limit == limiter.limit)
            }) {
                rule.rate_limit = previous.rate_limit.clone();
            }
        }
    }

    /// Starts the background refresh of every remote key set (idempotent). Needs a tokio
    /// runtime; without one (`check-config`, `explain`) keys are fetched on first use.
    pub fn start_key_refresh(&self) {
        if tokio::runtime::Handle::try_current().is_err() {
            return;
        }
        for remote in self.issuers.iter().filter_map(|i| i.remote.as_ref()) {
            remote.spawn_refresh();
        }
    }

    /// The header names emitted on allow (what Traefik's `authResponseHeaders` must list).
    pub fn identity_header_names(&self) -> Vec<&str> {
        self.identity.header_names()
    }
}

fn short_hash(text: &str) -> String {
    let d = digest::digest(&digest::SHA256, text.as_bytes());
    d.as_ref()[..8].iter().map(|b| format!("{b:02x}")).collect()
}

fn socket_addr(raw: &str, path: &str, problems: &mut Problems) -> Option<SocketAddr> {
    match raw.parse() {
        Ok(a) => Some(a),
        Err(_) => {
            problems.push(
                path,
                format!("invalid address {raw:?}: expected host:port, e.g. \"127.0.0.1:8700\""),
            );
            None
        }
    }
}

fn cidrs(raw: &[String], path: &str, problems: &mut Problems) -> CidrSet {
    CidrSet::new(raw.iter().enumerate().filter_map(|(i, s)| {
        // A bare address means a single host.
        let parsed = s
            .parse::<IpNet>()
            .or_else(|_| s.parse::<std::net::IpAddr>().map(IpNet::from));
        match parsed {
            Ok(n) => Some(n),
            Err(_) => {
                problems.push(
                    format!("{path}[{i}]"),
                    format!("invalid CIDR {s:?}: expected address/prefix, e.g. \"10.0.0.0/8\""),
                );
                None
            }
        }
    }))
}

fn header_name(raw: &str, path: &str, problems: &mut Problems) -> Option<HeaderName> {
    match HeaderName::from_bytes(raw.as_bytes()) {
        Ok(h) => Some(h),
        Err(_) => {
            problems.push(path, format!("invalid header name {raw:?}"));
            None
        }
    }
}

fn read_file(base: &Path, file: &Path, path: &str, problems: &mut Problems) -> Option<Vec<u8>> {
    let full = base.join(file);
    match std::fs::read(&full) {
        Ok(bytes) => Some(bytes),
        Err(e) => {
            problems.push(
                path,
                format!("cannot read {:?}: {e}", full.display().to_string()),
            );
            None
        }
    }
}

/// A secret from exactly one of `secret_env`, `secret_file`, `secret` (inline: warning).
fn secret(
    inline: Option<&String>,
    from_env: Option<&String>,
    file: Option<&PathBuf>,
    ctx: (&Path, &dyn Env, &str),
    problems: &mut Problems,
    warnings: &mut Vec<String>,
) -> Option<Vec<u8>> {
    let (base, env, path) = ctx;
    match (inline, from_env, file) {
        (Some(s), None, None) => {
            warnings.push(format!(
                "{path}.secret: inline secret in the config file; prefer secret_env or secret_file"
            ));
            Some(s.as_bytes().to_vec())
        }
        (None, Some(var), None) => match env.var(var) {
            Some(v) if !v.is_empty() => Some(v.into_bytes()),
            _ => {
                problems.push(
                    format!("{path}.secret_env"),
                    format!("environment variable {var} is not set"),
                );
                None
            }
        },
        (None, None, Some(f)) => {
            read_file(base, f, &format!("{path}.secret_file"), problems).map(|mut b| {
                // Files usually end with a newline that is not part of the secret.
                while b.last().is_some_and(|c| *c == b'\n' || *c == b'\r') {
                    b.pop();
                }
                b
            })
        }
        (None, None, None) => {
            problems.push(path, "needs one of secret_env, secret_file or secret");
            None
        }
        _ => {
            problems.push(path, "give only one of secret_env, secret_file or secret");
            None
        }
    }
}

fn compile_key(
    raw: &RawKey,
    path: &str,
    base: &Path,
    env: &dyn Env,
    problems: &mut Problems,
    warnings: &mut Vec<String>,
    mint: &mut Option<MintKey>,
) -> Option<VerifyingKey> {
    let alg = match raw.alg.parse::<Algorithm>() {
        Ok(a) if SUPPORTED.contains(&a) => a,
        _ => {
            problems.push(
                format!("{path}.alg"),
                format!(
                    "unsupported algorithm {:?}: expected one of HS256, HS384, HS512, RS256, RS384, RS512, PS256, PS384, PS512, ES256, ES384, EdDSA",
                    raw.alg
                ),
            );
            return None;
        }
    };
    let is_hmac = matches!(alg, Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512);
    let result = if is_hmac {
        if raw.pem_file.is_some() {
            problems.push(
                format!("{path}.pem_file"),
                format!("{alg:?} takes a secret, not a PEM key"),
            );
            return None;
        }
        let secret = secret(
            raw.secret.as_ref(),
            raw.secret_env.as_ref(),
            raw.secret_file.as_ref(),
            (base, env, path),
            problems,
            warnings,
        )?;
        let key = VerifyingKey::hmac(raw.kid.clone(), alg, &secret);
        if key.is_ok() && mint.is_none() {
            *mint = Some(MintKey {
                kid: raw.kid.clone(),
                alg,
                secret,
            });
        }
        key
    } else {
        if raw.secret.is_some() || raw.secret_env.is_some() || raw.secret_file.is_some() {
            problems.push(
                path,
                format!("{alg:?} takes pem_file (a public key), not a secret"),
            );
            return None;
        }
        let Some(file) = &raw.pem_file else {
            problems.push(path, format!("{alg:?} needs pem_file"));
            return None;
        };
        let pem = read_file(base, file, &format!("{path}.pem_file"), problems)?;
        VerifyingKey::from_pem(raw.kid.clone(), alg, &pem)
    };
    match result {
        Ok(k) => Some(k),
        Err(e) => {
            problems.push(path, e.to_string());
            None
        }
    }
}

fn compile_issuer(
    raw: &RawIssuer,
    path: &str,
    base: &Path,
    env: &dyn Env,
    problems: &mut Problems,
    warnings: &mut Vec<String>,
    mint: &mut Option<MintKey>,
) -> Issuer {
    if raw.issuer.is_empty() {
        problems.push(
            format!("{path}.issuer"),
            "is required (the exact `iss` value)",
        );
    }
    let leeway = duration_or(
        raw.leeway.as_ref(),
        Duration::from_secs(30),
        &format!("{path}.leeway"),
        problems,
    );
    let max_lifetime = raw
        .max_lifetime
        .as_ref()
        .and_then(|d| match parse_duration(d) {
            Ok(d) => Some(d.as_secs() as i64),
            Err(e) => {
                problems.push(format!("{path}.max_lifetime"), e);
                None
            }
        });
    let mut keys = KeySet::default();
    for (i, k) in raw.keys.iter().enumerate() {
        let key_path = format!("{path}.keys[{i}]");
        if let Some(key) = compile_key(k, &key_path, base, env, problems, warnings, mint) {
            keys.insert(key);
        }
    }
    if let Some(file) = &raw.jwks_file {
        let jwks_path = format!("{path}.jwks_file");
        if let Some(bytes) = read_file(base, file, &jwks_path, problems) {
            match KeySet::from_jwks(&String::from_utf8_lossy(&bytes), true) {
                Ok((set, skipped)) => {
                    for s in skipped {
                        warnings.push(format!("{jwks_path}: skipped {s}"));
                    }
                    if set.is_empty() {
                        problems.push(&jwks_path, "contains no usable signing key");
                    }
                    for key in set.into_keys() {
                        keys.insert(key);
                    }
                }
                Err(e) => problems.push(&jwks_path, e),
            }
        }
    }
    let remote = remote_keys(raw, path, problems, warnings);
    if raw.keys.is_empty() && raw.jwks_file.is_none() && raw.jwks_uri.is_none() && !raw.discovery {
        problems.push(path, "needs keys, jwks_file, jwks_uri or discovery: true");
    }
    Issuer {
        issuer: raw.issuer.clone(),
        audiences: raw.audiences.clone(),
        leeway: leeway.as_secs() as i64,
        require_exp: raw.require_exp.unwrap_or(true),
        max_lifetime,
        required_claims: raw.required_claims.clone(),
        keys,
        remote,
        fingerprint: issuer_fingerprint(raw, base, env),
    }
}

/// Checks a remote URL: absolute http(s) with a host; plain http only with a warning.
fn remote_url(url: &str, path: &str, problems: &mut Problems, warnings: &mut Vec<String>) {
    match reqwest::Url::parse(url) {
        Ok(u) if matches!(u.scheme(), "http" | "https") && u.host_str().is_some() => {
            let loopback = matches!(u.host_str(), Some("localhost" | "127.0.0.1" | "[::1]"));
            if u.scheme() == "http" && !loopback {
                warnings.push(format!(
                    "{path}: {url:?} is plain http; keys fetched without TLS can be forged in transit"
                ));
            }
        }
        _ => problems.push(
            path,
            format!("invalid URL {url:?}: expected an absolute http(s) URL"),
        ),
    }
}

fn remote_keys(
    raw: &RawIssuer,
    path: &str,
    problems: &mut Problems,
    warnings: &mut Vec<String>,
) -> Option<Arc<RemoteKeys>> {
    let source = match (&raw.jwks_uri, raw.discovery) {
        (Some(_), true) => {
            problems.push(path, "give either jwks_uri or discovery: true, not both");
            return None;
        }
        (Some(uri), false) => {
            remote_url(uri, &format!("{path}.jwks_uri"), problems, warnings);
            JwksSource::Uri(uri.clone())
        }
        (None, true) => {
            remote_url(&raw.issuer, &format!("{path}.issuer"), problems, warnings);
            JwksSource::Discovery {
                issuer: raw.issuer.clone(),
            }
        }
        (None, false) => {
            if raw.jwks.is_some() {
                problems.push(
                    format!("{path}.jwks"),
                    "applies only with jwks_uri or discovery: true",
                );
            }
            return None;
        }
    };
    let mut settings = JwksSettings::new(source);
    if let Some(tuning) = &raw.jwks {
        let p = |key: &str| format!("{path}.jwks.{key}");
        let mut set = |value: &Option<RawDuration>, key: &str, target: &mut Duration| {
            *target = duration_or(value.as_ref(), *target, &p(key), problems);
            if target.is_zero() {
                problems.push(p(key), "must be greater than zero");
            }
        };
        set(&tuning.timeout, "timeout", &mut settings.timeout);
        set(
            &tuning.refresh_min,
            "refresh_min",
            &mut settings.refresh_min,
        );
        set(
            &tuning.refresh_max,
            "refresh_max",
            &mut settings.refresh_max,
        );
        set(&tuning.cooldown, "cooldown", &mut settings.cooldown);
        set(
            &tuning.unknown_kid_ttl,
            "unknown_kid_ttl",
            &mut settings.unknown_kid_ttl,
        );
        set(&tuning.max_stale, "max_stale", &mut settings.max_stale);
        settings.required = tuning.required.unwrap_or(true);
        if settings.refresh_min > settings.refresh_max {
            problems.push(
                p("refresh_min"),
                format!(
                    "{:?} is longer than refresh_max {:?}",
                    settings.refresh_min, settings.refresh_max
                ),
            );
        }
    }
    match RemoteKeys::new(&raw.issuer, settings) {
        Ok(keys) => Some(Arc::new(keys)),
        Err(e) => {
            problems.push(path, e);
            None
        }
    }
}

/// Digest of what decides which tokens an issuer accepts: its settings as written and the
/// key material behind them (files and environment variables are read again).
fn issuer_fingerprint(raw: &RawIssuer, base: &Path, env: &dyn Env) -> Vec<u8> {
    let mut ctx = digest::Context::new(&digest::SHA256);
    ctx.update(format!("{raw:?}").as_bytes());
    for key in &raw.keys {
        secret_material(
            &mut ctx,
            key.secret_env.as_ref(),
            key.secret_file.as_ref(),
            base,
            env,
        );
        if let Some(file) = &key.pem_file {
            ctx.update(&std::fs::read(base.join(file)).unwrap_or_default());
        }
    }
    if let Some(file) = &raw.jwks_file {
        ctx.update(&std::fs::read(base.join(file)).unwrap_or_default());
    }
    ctx.finish().as_ref().to_vec()
}

fn secret_material(
    ctx: &mut digest::Context,
    from_env: Option<&String>,
    file: Option<&PathBuf>,
    base: &Path,
    env: &dyn Env,
) {
    // Separators keep ("ab", "") and ("a", "b") apart.
    ctx.update(b"\0");
    if let Some(var) = from_env {
        ctx.update(env.var(var).unwrap_or_default().as_bytes());
    }
    ctx.update(b"\0");
    if let Some(file) = file {
        ctx.update(&std::fs::read(base.join(file)).unwrap_or_default());
    }
}

fn compile_rule(raw: &RawRule, path: &str, problems: &mut Problems) -> Option<Rule> {
    let before = problems.0.len();
    if raw.name.is_empty() {
        problems.push(
            format!("{path}.name"),
            "is required (it labels metrics and logs)",
        );
    }
    let given = [&raw.path, &raw.path_prefix, &raw.path_regex]
        .iter()
        .filter(|p| p.is_some())
        .count();
    if given > 1 {
        problems.push(path, "give at most one of path, path_prefix, path_regex");
    }
    let check_path = |p: &str, key: &str, problems: &mut Problems| {
        if !p.starts_with('/') {
            problems.push(
                format!("{path}.{key}"),
                format!("{p:?} must start with \"/\""),
            );
        }
    };
    let matcher = if let Some(p) = &raw.path {
        check_path(p, "path", problems);
        PathMatcher::Exact(p.clone())
    } else if let Some(p) = &raw.path_prefix {
        check_path(p, "path_prefix", problems);
        PathMatcher::Prefix(p.clone())
    } else if let Some(r) = &raw.path_regex {
        match Regex::new(r) {
            Ok(re) => PathMatcher::Regex(re),
            Err(e) => {
                problems.push(
                    format!("{path}.path_regex"),
                    format!("invalid regex {r:?}: {e}"),
                );
                PathMatcher::Any
            }
        }
    } else {
        PathMatcher::Any
    };
    let mut methods = MethodSet::default();
    for (i, m) in raw.methods.iter().enumerate() {
        match MethodSet::bit(m) {
            Some(b) => methods.insert(b),
            None => problems.push(
                format!("{path}.methods[{i}]"),
                format!("unknown HTTP method {m:?}"),
            ),
        }
    }
    let mut hosts = Vec::new();
    for (i, h) in raw.hosts.iter().enumerate() {
        let lower = h.to_ascii_lowercase();
        let body = lower.strip_prefix("*.").unwrap_or(&lower);
        if body.is_empty() || body.contains('*') || body.contains(':') || body.contains('/') {
            problems.push(
                format!("{path}.hosts[{i}]"),
                format!("invalid host {h:?}: expected a name or \"*.suffix\""),
            );
        }
        hosts.push(lower);
    }
    let action = match raw.action.as_str() {
        "public" => Action::Public,
        "authenticated" => Action::Authenticated,
        "deny" => Action::Deny,
        "roles" => {
            if raw.roles.is_empty() {
                problems.push(
                    format!("{path}.roles"),
                    "action roles needs at least one role",
                );
            }
            match raw.roles_mode.as_deref().unwrap_or("any") {
                "any" => Action::Roles(RoleRequirement::AnyOf(raw.roles.clone())),
                "all" => Action::Roles(RoleRequirement::AllOf(raw.roles.clone())),
                other => {
                    problems.push(
                        format!("{path}.roles_mode"),
                        format!("invalid value {other:?}: expected any or all"),
                    );
                    Action::Deny
                }
            }
        }
        other => {
            problems.push(
                format!("{path}.action"),
                format!("invalid action {other:?}: expected public, authenticated, roles or deny"),
            );
            Action::Deny
        }
    };
    if !matches!(action, Action::Roles(_)) && (!raw.roles.is_empty() || raw.roles_mode.is_some()) {
        problems.push(
            format!("{path}.roles"),
            "roles only apply with action: roles",
        );
    }
    let cidrs = CidrFilter {
        allow: cidrs(&raw.allow_cidrs, &format!("{path}.allow_cidrs"), problems),
        deny: cidrs(&raw.deny_cidrs, &format!("{path}.deny_cidrs"), problems),
    };
    let rate_limit = raw
        .rate_limit
        .as_ref()
        .and_then(|r| compile_rate_limit(r, &format!("{path}.rate_limit"), problems));
    let login = raw.login_url.as_ref().and_then(|url| {
        let key = format!("{path}.login_url");
        match reqwest::Url::parse(url) {
            Ok(u) if matches!(u.scheme(), "http" | "https") && u.host_str().is_some() => {
                if matches!(action, Action::Public | Action::Deny) {
                    problems.push(&key, "applies only to authenticated and roles rules");
                }
                Some(LoginRedirect { url: url.clone() })
            }
            _ => {
                problems.push(
                    key,
                    format!("invalid URL {url:?}: must be absolute (https://login.example.com/...), since a relative Location is resolved against the sidecar's address"),
                );
                None
            }
        }
    });
    (problems.0.len() == before).then(|| Rule {
        name: Arc::from(raw.name.as_str()),
        hosts: HostMatcher::new(&hosts),
        path: matcher,
        methods,
        action,
        cidrs,
        allow_query_token: raw.allow_query_token,
        allow_preflight: raw.allow_preflight,
        rate_limit,
        login,
    })
}

fn compile_rate_limit(
    raw: &raw::RawRateLimit,
    path: &str,
    problems: &mut Problems,
) -> Option<Arc<RateLimiter>> {
    let before = problems.0.len();
    if raw.requests == 0 {
        problems.push(format!("{path}.requests"), "must be at least 1");
    }
    let per = duration_or(
        raw.per.as_ref(),
        Duration::from_secs(1),
        &format!("{path}.per"),
        problems,
    );
    if per.is_zero() {
        problems.push(format!("{path}.per"), "must be greater than zero");
    }
    let burst = raw.burst.unwrap_or(raw.requests);
    if burst == 0 {
        problems.push(format!("{path}.burst"), "must be at least 1");
    }
    let max_keys = raw.max_keys.unwrap_or(100_000);
    if max_keys == 0 {
        problems.push(format!("{path}.max_keys"), "must be at least 1");
    }
    (problems.0.len() == before).then(|| {
        Arc::new(RateLimiter::new(RateLimit {
            requests: raw.requests,
            per,
            burst,
            max_keys,
        }))
    })
}

fn compile_identity(
    raw: &raw::RawIdentity,
    base: &Path,
    env: &dyn Env,
    problems: &mut Problems,
    warnings: &mut Vec<String>,
) -> Option<IdentityMapping> {
    let raw_slots = [
        &raw.user_id,
        &raw.username,
        &raw.role,
        &raw.roles,
        &raw.email,
        &raw.expires,
    ];
    let mut slots = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for (slot, raw_slot) in Slot::ALL.iter().zip(raw_slots) {
        let path = format!("identity.{}", slot.key());
        let header = raw_slot.header.as_deref().unwrap_or(slot.default_header());
        let claim = raw_slot.claim.as_deref().unwrap_or(slot.default_claim());
        if *slot == Slot::Expires && claim != "exp" {
            problems.push(
                format!("{path}.claim"),
                "the expires header always carries `exp`",
            );
        }
        if let Some(name) = header_name(header, &format!("{path}.header"), problems) {
            if !seen.insert(name.clone()) {
                problems.push(
                    format!("{path}.header"),
                    format!("header {header:?} is used twice"),
                );
            }
            slots.push((name, claim.to_owned()));
        }
    }
    let signature = raw.signature.as_ref().and_then(|sig| {
        let path = "identity.signature";
        let name = header_name(
            sig.header.as_deref().unwrap_or(SIGNATURE_HEADER),
            &format!("{path}.header"),
            problems,
        )?;
        if seen.contains(&name) {
            problems.push(format!("{path}.header"), "collides with an identity header");
        }
        let secret = secret(
            sig.secret.as_ref(),
            sig.secret_env.as_ref(),
            sig.secret_file.as_ref(),
            (base, env, path),
            problems,
            warnings,
        )?;
        if secret.len() < 32 {
            problems.push(
                path,
                format!(
                    "the signature secret is {} bytes; use at least 32",
                    secret.len()
                ),
            );
            return None;
        }
        Some((name, identity_wire::SigningKey::new(&secret)))
    });
    (slots.len() == Slot::ALL.len()).then_some(IdentityMapping { slots, signature })
}

fn compile(
    raw: &RawConfig,
    base: &Path,
    env: &dyn Env,
    hash: String,
    problems: &mut Problems,
) -> Option<Runtime> {
    let mut warnings = Vec::new();
    let listen = socket_addr(
        raw.listen.as_deref().unwrap_or(DEFAULT_LISTEN),
        "listen",
        problems,
    );
    let admin_listen = raw
        .admin_listen
        .as_deref()
        .and_then(|a| socket_addr(a, "admin_listen", problems));
    if raw.workers == Some(0) {
        problems.push("workers", "must be at least 1");
    }
    let realm = raw.realm.clone().unwrap_or_else(|| "omni2".into());
    if realm.is_empty()
        || !realm
            .bytes()
            .all(|b| (0x20..0x7f).contains(&b) && b != b'"' && b != b'\\')
    {
        problems.push(
            "realm",
            format!("invalid realm {realm:?}: printable ASCII without quotes or backslashes"),
        );
    }
    let trusted_proxies = cidrs(&raw.trusted_proxies, "trusted_proxies", problems);
    let tokens = TokenSources {
        max_length: raw.tokens.max_length.unwrap_or(8192),
        cookie: raw.tokens.cookie.clone(),
        query_param: raw
            .tokens
            .query_param
            .clone()
            .unwrap_or_else(|| "access_token".into()),
        websocket_protocol_prefix: Some(
            raw.tokens
                .websocket_protocol_prefix
                .clone()
                .unwrap_or_else(|| "base64url.bearer.authorization.k8s.io.".into()),
        )
        .filter(|p| !p.is_empty()),
    };
    if tokens.max_length == 0 {
        problems.push("tokens.max_length", "must be at least 1");
    }
    if raw.issuers.is_empty() {
        problems.push("issuers", "at least one issuer is required");
    }
    let mut mint_key = None;
    let issuers: Vec<Issuer> = raw
        .issuers
        .iter()
        .enumerate()
        .map(|(i, r)| {
            // Only the first issuer's key can mint: `mint` sets that issuer's `iss`.
            let mut scratch = None;
            let mint = if i == 0 { &mut mint_key } else { &mut scratch };
            compile_issuer(
                r,
                &format!("issuers[{i}]"),
                base,
                env,
                problems,
                &mut warnings,
                mint,
            )
        })
        .collect();
    for (i, issuer) in issuers.iter().enumerate() {
        if issuers[..i].iter().any(|o| o.issuer == issuer.issuer) {
            problems.push(
                format!("issuers[{i}].issuer"),
                format!("duplicate issuer {:?}", issuer.issuer),
            );
        }
    }
    let identity = compile_identity(&raw.identity, base, env, problems, &mut warnings);
    let revocation = match &raw.revocation_file {
        None => Some(Revocations::default()),
        Some(file) => match Revocations::load(&base.join(file), unix_now()) {
            Ok(r) => Some(r),
            Err(p) => {
                problems.0.extend(p.0);
                None
            }
        },
    };
    let validation_fingerprint = {
        let mut ctx = digest::Context::new(&digest::SHA256);
        for issuer in &issuers {
            ctx.update(&issuer.fingerprint);
        }
        ctx.update(format!("{:?}{:?}", raw.identity, raw.cache).as_bytes());
        if let Some(sig) = &raw.identity.signature {
            secret_material(
                &mut ctx,
                sig.secret_env.as_ref(),
                sig.secret_file.as_ref(),
                base,
                env,
            );
        }
        ctx.finish().as_ref().to_vec()
    };
    let defaults = CacheSettings::default();
    let cache = CacheSettings {
        max_entries: raw.cache.max_entries.unwrap_or(defaults.max_entries),
        max_bytes: raw.cache.max_bytes.unwrap_or(defaults.max_bytes),
        max_ttl: duration_or(
            raw.cache.max_ttl.as_ref(),
            defaults.max_ttl,
            "cache.max_ttl",
            problems,
        ),
        negative_ttl: duration_or(
            raw.cache.negative_ttl.as_ref(),
            defaults.negative_ttl,
            "cache.negative_ttl",
            problems,
        ),
    };
    if cache.max_entries == 0 || cache.max_bytes == 0 {
        problems.push("cache", "max_entries and max_bytes must be at least 1");
    }
    if raw.rules.is_empty() {
        problems.push(
            "rules",
            "at least one rule is required (unmatched requests are denied)",
        );
    }
    let mut rules = Vec::new();
    for (i, r) in raw.rules.iter().enumerate() {
        let path = format!("rules[{i}]");
        if raw.rules[..i].iter().any(|o| o.name == r.name) && !r.name.is_empty() {
            problems.push(
                format!("{path}.name"),
                format!("duplicate rule name {:?}", r.name),
            );
        }
        if let Some(rule) = compile_rule(r, &path, problems) {
            rules.push(rule);
        }
    }
    Some(Runtime {
        listen: listen?,
        admin_listen,
        workers: raw.workers,
        realm: if problems.is_empty() {
            Realm::new(&realm)
        } else {
            return None;
        },
        trusted_proxies,
        tokens,
        issuers,
        identity: identity?,
        policy: Policy { rules },
        cache: Arc::new(TokenCache::new(cache)),
        revocation: Arc::new(revocation?),
        validation_fingerprint,
        hash,
        warnings,
        mint_key,
    })
}

#[cfg(test)]
mod tests;
