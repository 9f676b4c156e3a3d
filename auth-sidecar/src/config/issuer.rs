//! `issuers[i]`: validation settings and keys (inline, PEM files, a JWKS file, remote).

use std::sync::Arc;
use std::time::Duration;

use config_plumbing::{RawDuration, parse_duration};
use jsonwebtoken::Algorithm;

use super::compiler::Compiler;
use super::raw::{RawIssuer, RawKey};
use crate::jwt::Issuer;
use crate::keys::jwks::{JwksSettings, JwksSource, RemoteKeys};
use crate::keys::{KeySet, SUPPORTED, VerifyingKey};

/// The HMAC secret of a key, from exactly one of its secret sources.
pub(super) fn key_secret(raw: &RawKey, path: &str, c: &mut Compiler) -> Option<Vec<u8>> {
    c.secret(
        raw.secret.as_ref(),
        raw.secret_env.as_ref(),
        raw.secret_file.as_ref(),
        path,
    )
}

/// Whether `alg` names an HMAC algorithm.
pub(super) fn is_hmac(alg: Algorithm) -> bool {
    matches!(alg, Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512)
}

fn compile_key(raw: &RawKey, path: &str, c: &mut Compiler) -> Option<VerifyingKey> {
    let alg = match raw.alg.parse::<Algorithm>() {
        Ok(a) if SUPPORTED.contains(&a) => a,
        _ => {
            c.push(
                format!("{path}.alg"),
                format!(
                    "unsupported algorithm {:?}: expected one of HS256, HS384, HS512, RS256, RS384, RS512, PS256, PS384, PS512, ES256, ES384, EdDSA",
                    raw.alg
                ),
            );
            return None;
        }
    };
    let result = if is_hmac(alg) {
        if raw.pem_file.is_some() {
            c.push(
                format!("{path}.pem_file"),
                format!("{alg:?} takes a secret, not a PEM key"),
            );
            return None;
        }
        let secret = key_secret(raw, path, c)?;
        VerifyingKey::hmac(raw.kid.clone(), alg, &secret)
    } else {
        if raw.secret.is_some() || raw.secret_env.is_some() || raw.secret_file.is_some() {
            c.push(
                path,
                format!("{alg:?} takes pem_file (a public key), not a secret"),
            );
            return None;
        }
        let Some(file) = &raw.pem_file else {
            c.push(path, format!("{alg:?} needs pem_file"));
            return None;
        };
        let pem = c.read_file(file, &format!("{path}.pem_file"))?;
        VerifyingKey::from_pem(raw.kid.clone(), alg, &pem)
    };
    match result {
        Ok(k) => Some(k),
        Err(e) => {
            c.push(path, e.to_string());
            None
        }
    }
}

/// Compiles one issuer; its fingerprint digests its settings as written and the key
/// material read while compiling it.
pub(super) fn compile_issuer(raw: &RawIssuer, path: &str, c: &mut Compiler) -> Issuer {
    c.start_material(format!("{raw:?}").as_bytes());
    if raw.issuer.is_empty() {
        c.push(
            format!("{path}.issuer"),
            "is required (the exact `iss` value)",
        );
    }
    let leeway = c.duration(
        raw.leeway.as_ref(),
        Duration::from_secs(30),
        &format!("{path}.leeway"),
    );
    let max_lifetime = raw
        .max_lifetime
        .as_ref()
        .and_then(|d| match parse_duration(d) {
            Ok(d) => Some(d.as_secs() as i64),
            Err(e) => {
                c.push(format!("{path}.max_lifetime"), e);
                None
            }
        });
    let mut keys = KeySet::default();
    for (i, k) in raw.keys.iter().enumerate() {
        let key_path = format!("{path}.keys[{i}]");
        if let Some(key) = compile_key(k, &key_path, c) {
            keys.insert(key);
        }
    }
    if let Some(file) = &raw.jwks_file {
        let jwks_path = format!("{path}.jwks_file");
        if let Some(bytes) = c.read_file(file, &jwks_path) {
            match KeySet::from_jwks(&String::from_utf8_lossy(&bytes), true) {
                Ok((set, skipped)) => {
                    for s in skipped {
                        c.warn(format!("{jwks_path}: skipped {s}"));
                    }
                    if set.is_empty() {
                        c.push(&jwks_path, "contains no usable signing key");
                    }
                    for key in set.into_keys() {
                        keys.insert(key);
                    }
                }
                Err(e) => c.push(&jwks_path, e),
            }
        }
    }
    let remote = remote_keys(raw, path, c);
    let mut require_typ = Vec::new();
    for (i, typ) in raw.require_typ.iter().enumerate() {
        let t = crate::jwt::media_type(typ);
        if t.is_empty() || !t.bytes().all(|b| b.is_ascii_graphic()) {
            c.push(
                format!("{path}.require_typ[{i}]"),
                format!("invalid media type {typ:?}: expected e.g. at+jwt"),
            );
        }
        require_typ.push(t);
    }
    if raw.keys.is_empty() && raw.jwks_file.is_none() && raw.jwks_uri.is_none() && !raw.discovery {
        c.push(path, "needs keys, jwks_file, jwks_uri or discovery: true");
    }
    Issuer {
        issuer: raw.issuer.clone(),
        audiences: raw.audiences.clone(),
        leeway: leeway.as_secs() as i64,
        require_exp: raw.require_exp.unwrap_or(true),
        max_lifetime,
        required_claims: raw.required_claims.clone(),
        accept_id_tokens: raw.accept_id_tokens,
        require_typ,
        keys,
        remote,
        fingerprint: c.finish_material(),
    }
}

/// Checks a remote URL: absolute http(s) with a host; plain http only with a warning.
fn remote_url(url: &str, path: &str, c: &mut Compiler) {
    match reqwest::Url::parse(url) {
        Ok(u) if matches!(u.scheme(), "http" | "https") && u.host_str().is_some() => {
            let loopback = matches!(u.host_str(), Some("localhost" | "127.0.0.1" | "[::1]"));
            if u.scheme() == "http" && !loopback {
                c.warn(format!(
                    "{path}: {url:?} is plain http; keys fetched without TLS can be forged in transit"
                ));
            }
        }
        _ => c.push(
            path,
            format!("invalid URL {url:?}: expected an absolute http(s) URL"),
        ),
    }
}

fn remote_keys(raw: &RawIssuer, path: &str, c: &mut Compiler) -> Option<Arc<RemoteKeys>> {
    let source = match (&raw.jwks_uri, raw.discovery) {
        (Some(_), true) => {
            c.push(path, "give either jwks_uri or discovery: true, not both");
            return None;
        }
        (Some(uri), false) => {
            remote_url(uri, &format!("{path}.jwks_uri"), c);
            JwksSource::Uri(uri.clone())
        }
        (None, true) => {
            remote_url(&raw.issuer, &format!("{path}.issuer"), c);
            JwksSource::Discovery {
                issuer: raw.issuer.clone(),
            }
        }
        (None, false) => {
            if raw.jwks.is_some() {
                c.push(
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
            *target = c.duration(value.as_ref(), *target, &p(key));
            if target.is_zero() {
                c.push(p(key), "must be greater than zero");
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
            c.push(
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
            c.push(path, e);
            None
        }
    }
}
