//! Configuration: every problem reported at once with its path, unknown keys refused,
//! `${ENV}` interpolation, and the embedded development config.

use std::path::Path;
use std::time::Duration;

use super::*;

fn env(name: &str) -> Option<String> {
    match name {
        "SECRET" => Some("a-development-secret-of-at-least-32-bytes".into()),
        _ => None,
    }
}

fn problems(yaml: &str) -> String {
    match Runtime::from_yaml(yaml, Path::new("."), &env) {
        Ok(_) => panic!("expected the config to be refused"),
        Err(p) => p.to_string(),
    }
}

#[test]
fn a_token_length_bound_past_any_header_is_refused() {
    let yaml = format!("{GOOD}tokens:\n  max_length: 18446744073709551615\n");
    let p = problems(&yaml);
    assert!(
        p.contains("tokens.max_length: 18446744073709551615 is more than 65536"),
        "{p}"
    );
}

const GOOD: &str = r#"
issuers:
  - issuer: https://idp.test
    audiences: [omni2]
    keys: [{kid: k, alg: HS256, secret_env: SECRET}]
rules:
  - name: api
    path_prefix: /api
    action: authenticated
"#;

#[test]
fn a_minimal_config_is_valid_with_documented_defaults() {
    let rt = Runtime::from_yaml(GOOD, Path::new("."), &env).expect("valid");
    assert_eq!(rt.listen.to_string(), DEFAULT_LISTEN);
    assert_eq!(rt.tokens.max_length, 8192);
    assert_eq!(rt.tokens.query_param, "access_token");
    assert_eq!(rt.issuers[0].leeway, 30);
    assert!(rt.issuers[0].require_exp);
    assert_eq!(
        rt.identity_header_names(),
        [
            "x-user-id",
            "x-user-username",
            "x-user-role",
            "x-user-roles",
            "x-user-email",
            "x-auth-expires"
        ]
    );
    assert!(rt.warnings.is_empty(), "{:?}", rt.warnings);
}

#[test]
fn every_problem_is_reported_at_once_with_its_path() {
    let text = problems(
        r#"
listen: "not an address"
trusted_proxies: ["10.0.0/8"]
issuers:
  - issuer: https://idp.test
    leeway: forever
    keys:
      - {kid: a, alg: HS257, secret_env: SECRET}
      - {kid: b, alg: RS256}
      - {kid: c, alg: HS256, secret_env: NOT_SET}
rules:
  - name: admin
    path_prefix: api/admin
    action: roles
  - name: internal
    path: /internal
    action: authenticated
    allow_cidrs: ["10.0.0.1/33"]
    methods: ["GET", "NOT A METHOD"]
  - name: weird
    path_regex: "("
    action: maybe
"#,
    );
    insta::assert_snapshot!(text, @r#"
    12 configuration problem(s):
      - listen: invalid address "not an address": expected host:port, e.g. "127.0.0.1:8700"
      - trusted_proxies[0]: invalid CIDR "10.0.0/8": expected address/prefix, e.g. "10.0.0.0/8"
      - issuers[0].leeway: invalid duration "forever": expected number at 0 (examples: "30s", "5m", "1h")
      - issuers[0].keys[0].alg: unsupported algorithm "HS257": expected one of HS256, HS384, HS512, RS256, RS384, RS512, PS256, PS384, PS512, ES256, ES384, EdDSA
      - issuers[0].keys[1]: RS256 needs pem_file
      - issuers[0].keys[2].secret_env: environment variable NOT_SET is not set
      - rules[0].path_prefix: "api/admin" must start with "/"
      - rules[0].roles: action roles needs at least one role
      - rules[1].methods[1]: unknown HTTP method "NOT A METHOD"
      - rules[1].allow_cidrs[0]: invalid CIDR "10.0.0.1/33": expected address/prefix, e.g. "10.0.0.0/8"
      - rules[2].path_regex: invalid regex "(": regex parse error:
        (
        ^
    error: unclosed group
      - rules[2].action: invalid action "maybe": expected public, authenticated, roles or deny
    "#);
}

#[test]
fn unknown_keys_are_refused_not_ignored() {
    let text = problems(&format!(
        "{GOOD}\nrules_typo: []\ncache:\n  max_entires: 10\n"
    ));
    assert!(text.contains("rules_typo: unknown key"), "{text}");
    assert!(text.contains("cache.max_entires: unknown key"), "{text}");
}

#[test]
fn wrong_types_name_the_path() {
    let text = problems("issuers:\n  - issuer: x\n    audiences: 7\n");
    assert!(text.contains("issuers[0].audiences"), "{text}");
}

#[test]
fn environment_interpolation() {
    let yaml = GOOD.replace("secret_env: SECRET", "secret: \"${SECRET}\"");
    let rt = Runtime::from_yaml(&yaml, Path::new("."), &env).expect("valid");
    // Inline secrets work but are flagged.
    assert!(
        rt.warnings.iter().any(|w| w.contains("inline")),
        "{:?}",
        rt.warnings
    );
    let text = problems(&GOOD.replace("/api", "${MISSING_PREFIX}"));
    assert!(text.contains("MISSING_PREFIX"), "{text}");
    let rt = Runtime::from_yaml(
        &GOOD.replace("/api", "${MISSING_PREFIX:-/fallback}"),
        Path::new("."),
        &env,
    )
    .expect("default applies");
    assert_eq!(rt.policy.rules.len(), 1);
}

#[test]
fn no_issuer_or_no_rule_is_refused() {
    let text = problems("rules: []\n");
    assert!(text.contains("issuers"), "{text}");
}

#[test]
fn the_embedded_config_is_valid_and_uses_the_dev_secret() {
    let none = |_: &str| None;
    let rt = Runtime::embedded(&none).expect("embedded config is valid");
    let names: Vec<&str> = rt.policy.rules.iter().map(|r| &*r.name).collect();
    assert_eq!(names, ["health", "ws-status", "admin", "api"]);
    // `mint` signs with the dev secret: the token verifies under DEV_SECRET.
    let request = crate::mint::MintRequest {
        sub: "alice".into(),
        ttl: Duration::from_secs(60),
        ..Default::default()
    };
    let token = crate::mint::mint(&rt, &request, unix_now()).expect("minted");
    let mut validation = jsonwebtoken::Validation::new(Algorithm::HS256);
    validation.validate_aud = false;
    jsonwebtoken::decode::<serde_json::Value>(
        &token,
        &jsonwebtoken::DecodingKey::from_secret(DEV_SECRET.as_bytes()),
        &validation,
    )
    .expect("signed with the dev secret");
    assert!(rt.listen.ip().is_loopback());
}

#[test]
fn remote_keys_rate_limits_and_login_urls_are_validated() {
    let text = problems(
        r#"
revocation_file: no-such-revocations.yaml
issuers:
  - issuer: https://a.test
    jwks_uri: https://a.test/jwks
    discovery: true
  - issuer: https://b.test
    jwks_uri: "not a url"
    jwks: {timeout: 0s, refresh_min: 2h, refresh_max: 1h, cooldwn: 5s}
  - issuer: https://c.test
    keys: [{kid: k, alg: HS256, secret_env: SECRET}]
    jwks: {cooldown: 5s}
  - issuer: https://d.test
rules:
  - name: api
    path_prefix: /api
    action: authenticated
    rate_limit: {requests: 0, per: 0s, burst: 0}
    login_url: /login
  - name: open
    path_prefix: /open
    action: public
    login_url: https://login.test/
"#,
    );
    insta::assert_snapshot!(text, @r#"
    13 configuration problem(s):
      - issuers[1].jwks.cooldwn: unknown key
      - issuers[0]: give either jwks_uri or discovery: true, not both
      - issuers[1].jwks_uri: invalid URL "not a url": expected an absolute http(s) URL
      - issuers[1].jwks.timeout: must be greater than zero
      - issuers[1].jwks.refresh_min: 7200s is longer than refresh_max 3600s
      - issuers[2].jwks: applies only with jwks_uri or discovery: true
      - issuers[3]: needs keys, jwks_file, jwks_uri or discovery: true
      - revocation_file: cannot read "./no-such-revocations.yaml": No such file or directory (os error 2)
      - rules[0].rate_limit.requests: must be at least 1
      - rules[0].rate_limit.per: must be greater than zero
      - rules[0].rate_limit.burst: must be at least 1
      - rules[0].login_url: invalid URL "/login": must be absolute (https://login.example.com/...), since a relative Location is resolved against the sidecar's address
      - rules[1].login_url: applies only to authenticated and roles rules
    "#);
}

#[test]
fn remote_issuers_take_documented_defaults() {
    let rt = Runtime::from_yaml(
        "issuers:\n  - {issuer: https://idp.test, discovery: true}\nrules:\n  - {name: api, action: authenticated, rate_limit: {requests: 10}}\n",
        Path::new("."),
        &env,
    )
    .expect("valid");
    let remote = rt.issuers[0].remote.as_ref().expect("remote keys");
    let s = remote.settings();
    assert_eq!(
        (
            s.timeout,
            s.refresh_min,
            s.refresh_max,
            s.cooldown,
            s.max_stale,
            s.required
        ),
        (
            Duration::from_secs(5),
            Duration::from_secs(300),
            Duration::from_secs(86_400),
            Duration::from_secs(30),
            Duration::from_secs(86_400),
            true
        )
    );
    let limit = rt.policy.rules[0]
        .rate_limit
        .as_ref()
        .expect("limit")
        .limit();
    assert_eq!(
        (limit.requests, limit.per, limit.burst, limit.max_keys),
        (10, Duration::from_secs(1), 10, 100_000)
    );
    // Plain http to a non-loopback host works, with a warning.
    let rt = Runtime::from_yaml(
        "issuers:\n  - {issuer: https://idp.test, jwks_uri: \"http://keycloak:8080/certs\"}\nrules:\n  - {name: api, action: authenticated}\n",
        Path::new("."),
        &env,
    )
    .expect("valid");
    assert!(
        rt.warnings.iter().any(|w| w.contains("plain http")),
        "{:?}",
        rt.warnings
    );
}

#[test]
fn every_type_error_is_reported_not_just_the_first() {
    let text = problems(&format!(
        "{}\nworkers: many\ntrusted_proxies: 7\n",
        GOOD.replace("audiences: [omni2]", "audiences: 7")
    ));
    for path in ["workers", "trusted_proxies", "issuers[0].audiences"] {
        assert!(
            text.contains(&format!("  - {path}: invalid type")),
            "{path} in {text}"
        );
    }
    assert!(text.starts_with("3 configuration problem(s)"), "{text}");
}

#[test]
fn durations_are_seconds_fractional_or_text() {
    let per = |written: &str| {
        let yaml = GOOD.replace(
            "action: authenticated",
            &format!("action: authenticated\n    rate_limit: {{requests: 1, per: {written}}}"),
        );
        let rt = Runtime::from_yaml(&yaml, Path::new("."), &env).expect("valid");
        let limiter = rt.policy.rules[0].rate_limit.clone().expect("limited");
        limiter.limit().per
    };
    assert_eq!(per("2"), Duration::from_secs(2));
    assert_eq!(per("0.5"), Duration::from_millis(500));
    assert_eq!(per("\"1m\""), Duration::from_secs(60));
    let yaml = GOOD.replace("audiences: [omni2]", "audiences: [omni2]\n    leeway: 45");
    let rt = Runtime::from_yaml(&yaml, Path::new("."), &env).expect("valid");
    assert_eq!(rt.issuers[0].leeway, 45);
}

#[test]
fn a_value_taken_out_for_its_type_is_not_also_missing() {
    let text = problems("issuers: 7\nrules: [{name: api, action: authenticated}]\n");
    assert!(text.contains("  - issuers: invalid type"), "{text}");
    assert!(text.starts_with("1 configuration problem(s)"), "{text}");
}

#[test]
fn fingerprints_cover_the_key_material_read() {
    let with =
        |secret: &'static str| move |name: &str| (name == "SECRET").then(|| secret.to_owned());
    let a = Runtime::from_yaml(
        GOOD,
        Path::new("."),
        &with("a-development-secret-of-at-least-32-bytes"),
    )
    .expect("valid");
    let same = Runtime::from_yaml(
        GOOD,
        Path::new("."),
        &with("a-development-secret-of-at-least-32-bytes"),
    )
    .expect("valid");
    let other = Runtime::from_yaml(
        GOOD,
        Path::new("."),
        &with("b-development-secret-of-at-least-32-bytes"),
    )
    .expect("valid");
    assert_eq!(a.issuers[0].fingerprint, same.issuers[0].fingerprint);
    assert_eq!(a.validation_fingerprint, same.validation_fingerprint);
    assert_ne!(a.issuers[0].fingerprint, other.issuers[0].fingerprint);
    assert_ne!(a.validation_fingerprint, other.validation_fingerprint);
}

#[test]
fn the_cache_is_kept_across_a_reload_only_while_mcp_rules_stay_present_or_absent() {
    let plain = || Runtime::from_yaml(GOOD, Path::new("."), &env).expect("valid");
    let with_mcp = || {
        let yaml = GOOD.replace(
            "action: authenticated",
            "action: authenticated\n    mcp: {resource: https://mcp.example.com/mcp, authorization_servers: [https://idp.test]}",
        );
        Runtime::from_yaml(&yaml, Path::new("."), &env).expect("valid")
    };
    let old = plain();
    let mut same = plain();
    same.adopt(&old);
    assert!(Arc::ptr_eq(&same.cache, &old.cache));
    // Identities cached without grants must not serve rules that read them.
    let mut gained = with_mcp();
    gained.adopt(&old);
    assert!(!Arc::ptr_eq(&gained.cache, &old.cache));
}

#[test]
fn the_redis_block_takes_documented_defaults_and_is_optional() {
    let limited = GOOD.replace(
        "action: authenticated",
        "action: authenticated\n    rate_limit: {requests: 5, store: redis}",
    );
    let yaml = format!("{limited}redis:\n  url: redis://10.1.2.3:6380/2\n");
    let rt = Runtime::from_yaml(&yaml, Path::new("."), &env).expect("valid");
    let pool = rt.redis.as_ref().expect("a redis block");
    let s = &pool.settings;
    assert_eq!(
        (
            s.display.as_str(),
            s.key_prefix.as_str(),
            s.pool_size,
            s.connect_timeout,
            s.command_timeout,
            s.revocation
        ),
        (
            "10.1.2.3:6380/2",
            "auth-sidecar:",
            4,
            Duration::from_millis(250),
            Duration::from_millis(50),
            false
        )
    );
    match rt.policy.rules[0].rate_limit.as_ref().expect("limited") {
        crate::ratelimit::Limiter::Shared(l) => {
            assert!(l.deny_on_error, "deny_on_error defaults to true");
            assert_eq!(l.key("sub:alice"), "auth-sidecar:rl:api:sub:alice");
        }
        other => panic!("expected a shared limiter, got {other:?}"),
    }
    assert!(
        rt.revocation.shared.is_none(),
        "revocation defaults to false"
    );
    // Without the block: no Redis anywhere, local limits.
    let rt = Runtime::from_yaml(
        &GOOD.replace(
            "action: authenticated",
            "action: authenticated\n    rate_limit: {requests: 5}",
        ),
        Path::new("."),
        &env,
    )
    .expect("valid");
    assert!(rt.redis.is_none() && rt.revocation.shared.is_none());
    assert!(matches!(
        rt.policy.rules[0].rate_limit,
        Some(crate::ratelimit::Limiter::Local(_))
    ));
}

#[test]
fn a_reload_with_the_same_redis_block_keeps_the_revocation_subscriber() {
    let yaml = |prefix: &str| {
        format!(
            "{GOOD}redis:\n  url: redis://127.0.0.1:6379\n  key_prefix: \"{prefix}\"\n  revocation: true\n"
        )
    };
    let compile = |text: &str| Runtime::from_yaml(text, Path::new("."), &env).expect("valid");
    let old = compile(&yaml("a:"));
    let kept = old
        .revocation
        .shared
        .clone()
        .expect("revocations through Redis");
    let mut same = compile(&format!("{}workers: 2\n", yaml("a:")));
    same.adopt(&old);
    assert!(Arc::ptr_eq(
        same.revocation.shared.as_ref().expect("shared"),
        &kept
    ));
    let mut other = compile(&yaml("b:"));
    other.adopt(&old);
    assert!(
        !Arc::ptr_eq(other.revocation.shared.as_ref().expect("shared"), &kept),
        "another prefix is another set: a new subscriber"
    );
}

const MCP_ISSUER: &str = r#"
issuers:
  - issuer: https://idp.test
    keys: [{kid: k, alg: HS256, secret_env: SECRET}]
"#;

fn mcp_rule(block: &str) -> String {
    format!("{MCP_ISSUER}rules:\n  - name: mcp\n    path: /mcp\n    action: authenticated\n{block}")
}

#[test]
fn mcp_blocks_are_validated_naming_the_field() {
    for (block, want) in [
        (
            "    mcp: {authorization_servers: [https://idp.test]}\n",
            "rules[0].mcp.resource: is required",
        ),
        (
            "    mcp: {resource: http://mcp.example.com/mcp, authorization_servers: [https://idp.test]}\n",
            "rules[0].mcp.resource: \"http://mcp.example.com/mcp\" must use https",
        ),
        (
            "    mcp: {resource: \"https://mcp.example.com/mcp#frag\", authorization_servers: [https://idp.test]}\n",
            "rules[0].mcp.resource: \"https://mcp.example.com/mcp#frag\" must not have a fragment",
        ),
        (
            "    mcp: {resource: \"https://mcp.example.com/mcp?x=1\", authorization_servers: [https://idp.test]}\n",
            "rules[0].mcp.resource: \"https://mcp.example.com/mcp?x=1\" must not have a query",
        ),
        (
            "    mcp: {resource: /mcp, authorization_servers: [https://idp.test]}\n",
            "rules[0].mcp.resource: \"/mcp\" is not an absolute URI",
        ),
        (
            "    mcp: {resource: https://mcp.example.com/mcp}\n",
            "rules[0].mcp.authorization_servers: needs at least one issuer URL",
        ),
        (
            "    mcp: {resource: https://mcp.example.com/mcp, authorization_servers: [http://idp.example.com]}\n",
            "rules[0].mcp.authorization_servers[0]: \"http://idp.example.com\" must use https",
        ),
        (
            "    mcp: {resource: https://mcp.example.com/mcp, authorization_servers: [https://idp.test], scopes: [\"a b\"]}\n",
            "rules[0].mcp.scopes[0]: invalid scope \"a b\"",
        ),
        (
            "    mcp: {resource: https://mcp.example.com/mcp, authorization_servers: [https://idp.test], scopes_supported: [\"q\\\"\"]}\n",
            "rules[0].mcp.scopes_supported[0]: invalid scope",
        ),
        (
            "    mcp: {resource: https://mcp.example.com/mcp, authorization_servers: [https://idp.test], resource_documentation: docs}\n",
            "rules[0].mcp.resource_documentation: \"docs\" is not an absolute URI",
        ),
        (
            "    allow_query_token: true\n    mcp: {resource: https://mcp.example.com/mcp, authorization_servers: [https://idp.test]}\n",
            "rules[0].mcp: cannot be combined with allow_query_token",
        ),
        (
            "    mcp: {resource: https://mcp.example.com/mcp, authorization_servers: [https://idp.test], scope: [x]}\n",
            "rules[0].mcp.scope",
        ),
        (
            "    mcp_tools: [\"a*b\"]\n",
            "rules[0].mcp_tools[0]: invalid name \"a*b\"",
        ),
        (
            "    mcp_methods: [tools/list]\n    mcp_tools: [echo]\n",
            "rules[0].mcp_methods: mcp_tools match tools/call only",
        ),
    ] {
        let p = problems(&mcp_rule(block));
        assert!(p.contains(want), "{block}\nwant: {want}\ngot: {p}");
    }
    let public = format!(
        "{MCP_ISSUER}rules:\n  - name: mcp\n    path: /mcp\n    action: public\n    mcp: {{resource: https://mcp.example.com/mcp, authorization_servers: [https://idp.test]}}\n"
    );
    assert!(
        problems(&public).contains("rules[0].mcp: applies only to authenticated and roles rules"),
        "{}",
        problems(&public)
    );
}

#[test]
fn rules_naming_one_resource_must_describe_it_alike() {
    let yaml = format!(
        "{MCP_ISSUER}rules:
  - name: a
    path: /mcp
    mcp_tools: [echo]
    action: authenticated
    mcp: {{resource: https://mcp.example.com/mcp, authorization_servers: [https://idp.test]}}
  - name: b
    path: /mcp
    action: authenticated
    mcp: {{resource: https://MCP.example.com/mcp, authorization_servers: [https://other.test]}}
"
    );
    let p = problems(&yaml);
    assert!(
        p.contains("rules[1].mcp: describes resource \"https://mcp.example.com/mcp\" unlike an earlier rule"),
        "{p}"
    );
    let same = yaml.replace("https://other.test", "https://idp.test");
    let rt = Runtime::from_yaml(&same, Path::new("."), &env).expect("valid");
    assert_eq!(rt.resources.len(), 1);
    assert!(std::sync::Arc::ptr_eq(
        &rt.policy.rules[0].mcp.as_ref().expect("mcp").resource,
        &rt.policy.rules[1].mcp.as_ref().expect("mcp").resource
    ));
}

#[test]
fn require_typ_is_validated_and_loopback_http_is_fine_for_development() {
    let p = problems(&format!(
        "{}    require_typ: [\"\"]\n{}",
        MCP_ISSUER, "rules: [{name: a, action: authenticated}]\n"
    ));
    assert!(
        p.contains("issuers[0].require_typ[0]: invalid media type"),
        "{p}"
    );
    let dev = mcp_rule(
        "    mcp: {resource: \"http://127.0.0.1:8080/mcp/\", authorization_servers: [\"http://localhost:9000\"]}\n",
    );
    let rt = Runtime::from_yaml(&dev, Path::new("."), &env).expect("valid");
    assert_eq!(rt.resources[0].uri, "http://127.0.0.1:8080/mcp/");
}
