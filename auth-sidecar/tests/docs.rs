//! The docs against the code: every sidecar config shown in the docs compiles with the
//! sidecar's own loader, the deny-reason table in auth-sidecar/README.md is exactly
//! `DenyReason::ALL`, and every relative markdown link in the docs resolves.
//!
//! Each ```yaml block in the docs is preceded by a marker line naming what it is:
//! `<!-- doc-config: sidecar -->` (a complete config), `<!-- doc-config: sidecar-rules -->`
//! (a `rules:` list fragment, wrapped into a minimal config here), `<!-- doc-config:
//! revocation -->` (a revocation file), `<!-- doc-config: omni2 -->` (compiled by
//! omni2-core's tests/docs.rs) or `<!-- doc-config: none (why) -->` (not a config of ours).
//! An unmarked block fails, so a new example cannot skip the check.

use std::collections::BTreeSet;

use auth_sidecar::config::Runtime;
use auth_sidecar::reason::DenyReason;
use auth_sidecar::revocation::Revocations;
use auth_sidecar::test_util::asymmetric_key;
use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use jsonwebtoken::Algorithm;
use serde_json::json;
use test_support::docs::{all_yaml_blocks, doc_files, read, repo_root};

const JWT_SECRET: &str = "docs-test-jwt-secret-0123456789abcdefghijklmnopqrstuvwxyz";
const IDENTITY_SECRET: &str = "docs-test-identity-secret-0123456789abcdefghijklmnopqrst";

fn env(name: &str) -> Option<String> {
    match name {
        "OMNI2_JWT_SECRET" => Some(JWT_SECRET.to_owned()),
        "OMNI2_IDENTITY_SECRET" => Some(IDENTITY_SECRET.to_owned()),
        // Compiling a redis: block connects nowhere.
        "REDIS_URL" => Some("redis://127.0.0.1:6379/0".to_owned()),
        _ => None,
    }
}

/// A directory holding the files the reference config names: an RSA public key, a local
/// JWKS with one ES256 key, and a revocation file.
fn config_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::create_dir(dir.path().join("keys")).expect("keys/");
    std::fs::create_dir(dir.path().join("log")).expect("log/ (the audit file's directory)");
    let der = asymmetric_key(Algorithm::RS256, "rsa-1").public;
    let b64 = STANDARD.encode(der);
    let body: Vec<&str> = b64
        .as_bytes()
        .chunks(64)
        .map(|c| std::str::from_utf8(c).expect("base64 is ASCII"))
        .collect();
    let pem = format!(
        "-----BEGIN RSA PUBLIC KEY-----\n{}\n-----END RSA PUBLIC KEY-----\n",
        body.join("\n")
    );
    std::fs::write(dir.path().join("keys/rsa-1.pub.pem"), pem).expect("write PEM");
    let pair = EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING).expect("P-256 keygen");
    let point = pair.public_key().as_ref();
    let jwks = json!({"keys": [{"kty": "EC", "crv": "P-256", "alg": "ES256", "kid": "ec-1",
        "x": URL_SAFE_NO_PAD.encode(&point[1..33]), "y": URL_SAFE_NO_PAD.encode(&point[33..65])}]});
    std::fs::write(dir.path().join("keys/jwks.json"), jwks.to_string()).expect("write JWKS");
    std::fs::write(dir.path().join("revoked.yaml"), "jti: []\n").expect("write revocations");
    dir
}

/// The smallest valid config a `rules:` fragment is wrapped into.
const RULES_HEAD: &str = "\
issuers:
  - issuer: omni2-dev
    audiences: [omni2]
    keys:
      - {kid: hs-1, alg: HS256, secret_env: OMNI2_JWT_SECRET}
rules:
";

fn compile(yaml: &str, at: &str) -> Runtime {
    let dir = config_dir();
    Runtime::from_yaml(yaml, dir.path(), &env)
        .unwrap_or_else(|problems| panic!("{at}: the docs' config is refused:\n{problems}"))
}

#[test]
fn every_sidecar_config_in_the_docs_compiles() {
    let blocks = all_yaml_blocks();
    let mut checked = 0;
    for b in &blocks {
        match b.kind.as_str() {
            "sidecar" => {
                compile(&b.text, &b.at);
            }
            "sidecar-rules" => {
                compile(&format!("{RULES_HEAD}{}", b.text), &b.at);
            }
            "revocation" => {
                let dir = tempfile::tempdir().expect("temp dir");
                let path = dir.path().join("revoked.yaml");
                std::fs::write(&path, &b.text).expect("write revocations");
                if let Err(problems) = Revocations::load(&path, 0) {
                    panic!(
                        "{}: the docs' revocation file is refused:\n{problems}",
                        b.at
                    );
                }
            }
            "omni2" | "none" => continue,
            other => panic!("{}: unknown doc-config kind {other:?}", b.at),
        }
        checked += 1;
    }
    // The reference config, the revocation file and the deployment's rules fragment.
    assert!(
        checked >= 3,
        "only {checked} sidecar examples found in the docs"
    );
}

/// The full reference config is a real one: the rules a reader copies are the rules compiled.
#[test]
fn the_reference_config_keeps_its_rules_and_issuers() {
    let block = all_yaml_blocks()
        .into_iter()
        .find(|b| b.kind == "sidecar")
        .expect("a complete sidecar config in the docs");
    let rt = compile(&block.text, &block.at);
    let names: Vec<&str> = rt.policy.rules.iter().map(|r| &*r.name).collect();
    assert_eq!(
        names,
        [
            "health",
            "ws-status",
            "status-page",
            "admin",
            "admin-rest",
            "app",
            "api"
        ],
        "{}: the compiled rules",
        block.at
    );
    assert_eq!(rt.issuers.len(), 2, "{}: the compiled issuers", block.at);
}

/// The deny-reason table in auth-sidecar/README.md, between its begin/end markers:
/// (reason, status, message) per row.
fn documented_reasons() -> Vec<(String, u16, String)> {
    let readme = read(&repo_root().join("auth-sidecar/README.md"));
    let begin = readme
        .find("<!-- deny-reasons: begin -->")
        .expect("deny-reasons begin marker");
    let end = readme
        .find("<!-- deny-reasons: end -->")
        .expect("deny-reasons end marker");
    readme[begin..end]
        .lines()
        .filter_map(|l| {
            let cells: Vec<&str> = l
                .trim()
                .trim_matches('|')
                .split('|')
                .map(str::trim)
                .collect();
            let name = cells.first()?.strip_prefix('`')?.strip_suffix('`')?;
            let status = cells.get(1)?.parse().ok()?;
            Some((name.to_owned(), status, cells.get(2)?.to_string()))
        })
        .collect()
}

fn status(reason: DenyReason) -> u16 {
    match reason {
        DenyReason::RateLimited | DenyReason::RateLimitUnavailable => 429,
        r if r.is_unauthenticated() => 401,
        _ => 403,
    }
}

#[test]
fn the_documented_deny_reasons_are_exactly_the_code_s() {
    let documented = documented_reasons();
    let in_docs: BTreeSet<&str> = documented.iter().map(|(n, _, _)| n.as_str()).collect();
    let in_code: BTreeSet<&str> = DenyReason::ALL.iter().map(|r| r.as_str()).collect();
    assert_eq!(in_docs.len(), documented.len(), "a reason is listed twice");
    let undocumented: Vec<_> = in_code.difference(&in_docs).collect();
    let unknown: Vec<_> = in_docs.difference(&in_code).collect();
    assert!(
        undocumented.is_empty() && unknown.is_empty(),
        "auth-sidecar/README.md deny reasons: missing {undocumented:?}, not in DenyReason::ALL {unknown:?}"
    );
    for reason in DenyReason::ALL {
        let (_, st, message) = documented
            .iter()
            .find(|(n, _, _)| n == reason.as_str())
            .expect("checked above");
        assert_eq!(*st, status(reason), "status of {}", reason.as_str());
        assert!(
            message.starts_with(reason.message()),
            "message of {}: docs {message:?}, code {:?}",
            reason.as_str(),
            reason.message()
        );
    }
}

/// GitHub's heading anchor: lower case, punctuation dropped (except `-` and `_`), spaces → `-`.
fn slug(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric() || matches!(c, ' ' | '-' | '_'))
        .map(|c| if c == ' ' { '-' } else { c })
        .collect()
}

fn anchors(markdown: &str) -> BTreeSet<String> {
    outside_code(markdown)
        .filter_map(|l| l.strip_prefix('#'))
        .map(|h| slug(h.trim_start_matches('#')))
        .collect()
}

/// The lines of a markdown text outside fenced code blocks.
fn outside_code(markdown: &str) -> impl Iterator<Item = &str> {
    let mut fenced = false;
    markdown.lines().filter(move |l| {
        if l.trim_start().starts_with("```") {
            fenced = !fenced;
            return false;
        }
        !fenced
    })
}

/// `[text](target)` targets on a line, skipping inline code spans.
fn link_targets(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut code = false;
    let bytes = line.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'`' => code = !code,
            b']' if !code && bytes.get(i + 1) == Some(&b'(') => {
                if let Some(len) = line[i + 2..].find(')') {
                    out.push(line[i + 2..i + 2 + len].to_owned());
                    i += 2 + len;
                }
            }
            _ => {}
        }
        i += 1;
    }
    out
}

#[test]
fn every_relative_link_in_the_docs_resolves() {
    let mut broken = Vec::new();
    let mut checked = 0;
    for doc in doc_files() {
        let text = read(&doc);
        for target in outside_code(&text).flat_map(link_targets) {
            if target.contains("://") || target.starts_with("mailto:") {
                continue;
            }
            checked += 1;
            let (path, anchor) = target.split_once('#').unwrap_or((&target, ""));
            let file = if path.is_empty() {
                doc.clone()
            } else {
                doc.parent().expect("doc dir").join(path)
            };
            if !file.exists() {
                broken.push(format!("{}: {target} (no such file)", doc.display()));
            } else if !anchor.is_empty() && !anchors(&read(&file)).contains(anchor) {
                broken.push(format!("{}: {target} (no such heading)", doc.display()));
            }
        }
    }
    assert!(broken.is_empty(), "broken links:\n{}", broken.join("\n"));
    assert!(
        checked > 20,
        "only {checked} links found: is the parser broken?"
    );
}
