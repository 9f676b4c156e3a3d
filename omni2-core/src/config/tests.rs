//! omni2 configuration: defaults, every problem at once, interpolation, the shipped example.

use std::collections::BTreeMap;

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
    let text = include_str!("../../examples/omni2.yaml");
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

#[test]
fn websocket_allowed_origins_default_empty_and_each_bad_entry_is_named() {
    let c = Config::from_yaml("servers: []\n", &env(&[])).expect("valid");
    assert!(c.websocket.allowed_origins.is_empty());
    let c = Config::from_yaml(
        "websocket: {allowed_origins: [\"https://App.example.com\", \"http://127.0.0.1:8080\"]}\nservers: []\n",
        &env(&[]),
    )
    .expect("valid");
    assert_eq!(
        c.websocket.allowed_origins,
        ["https://app.example.com", "http://127.0.0.1:8080"]
    );
    let bad = [
        "*",
        "null",
        "https://a.example/",
        "https://a.example/x",
        "a.example",
        "ftp://a.example",
    ];
    for (i, b) in bad.iter().enumerate() {
        let yaml = format!(
            "websocket: {{allowed_origins: [\"https://ok.example\", \"{b}\"]}}\nservers: []\n"
        );
        let e = Config::from_yaml(&yaml, &env(&[]))
            .expect_err(b)
            .to_string();
        assert!(e.contains("websocket.allowed_origins[1]"), "{i} {b}: {e}");
    }
}

#[test]
fn cache_redis_is_optional_takes_defaults_and_names_bad_fields() {
    let c = Config::from_yaml("servers: []\n", &env(&[])).expect("valid");
    assert!(c.cache.redis.is_none());
    let c = Config::from_yaml(
        "cache:\n  redis: {url: \"${R}\"}\nservers: []\n",
        &env(&[("R", "redis://:hunter2@127.0.0.1:6379/2")]),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let r = c.cache.redis.expect("redis");
    assert_eq!(r.url, "redis://:hunter2@127.0.0.1:6379/2");
    assert_eq!(r.key_prefix, "omni2:cache:");
    assert_eq!(r.connect_timeout, Duration::from_millis(250));
    assert_eq!(r.command_timeout, Duration::from_millis(50));
    assert!(
        !format!("{r:?}").contains("hunter2"),
        "Debug leaves the URL out"
    );

    let bad = "cache:\n  redis:\n    url: rediss://:hunter2@h:1\n    key_prefix: \"\"\n    \
               connect_timeout: 0s\n    command_timeout: soon\n    pool: 3\nservers: []\n";
    let e = Config::from_yaml(bad, &env(&[]))
        .expect_err("refused")
        .to_string();
    for field in [
        "cache.redis.url",
        "cache.redis.key_prefix",
        "cache.redis.connect_timeout",
        "cache.redis.command_timeout",
        "cache.redis.pool",
    ] {
        assert!(e.contains(field), "{field} in {e}");
    }
    assert!(!e.contains("hunter2"), "{e}");
    let e = Config::from_yaml("cache:\n  redis: {}\nservers: []\n", &env(&[]))
        .expect_err("no url")
        .to_string();
    assert!(e.contains("cache.redis.url: required"), "{e}");
}

#[test]
fn gateway_namespacing_refuses_server_names_that_could_collide() {
    let yaml = |sep: &str| {
        format!(
            "gateway: {{separator: {sep:?}}}\nservers:\n  - {{name: a, url: http://h/mcp}}\n  - {{name: a_, url: http://h/mcp}}\n  - {{name: b__c, url: http://h/mcp}}\n"
        )
    };
    // `a_` + `__` + `b` and `a` + `__` + `_b` are the same name; `b__c` contains it.
    let e = Config::from_yaml(&yaml("__"), &env(&[]))
        .expect_err("ambiguous")
        .to_string();
    assert!(e.contains("servers[1].name") && e.contains("\"a_\""), "{e}");
    assert!(
        e.contains("servers[2].name") && e.contains("\"b__c\""),
        "{e}"
    );
    assert!(!e.contains("servers[0].name"), "{e}");
    // Another separator makes the same names fine.
    let c = Config::from_yaml(&yaml("."), &env(&[])).expect("valid");
    assert_eq!(c.gateway.separator, ".");
    let e = Config::from_yaml(&yaml(""), &env(&[]))
        .expect_err("empty")
        .to_string();
    assert!(e.contains("gateway.separator"), "{e}");
    let e = Config::from_yaml(&yaml("/"), &env(&[]))
        .expect_err("slash")
        .to_string();
    assert!(e.contains("gateway.separator"), "{e}");
}

#[test]
fn tool_roles_and_rate_limits_are_checked() {
    let c = Config::from_yaml(
        "servers:\n  - name: s\n    url: http://h/mcp\n    tools:\n      t: {roles: [ops], rate_limit: {burst: 3, every: 2s}}\n",
        &env(&[]),
    )
    .expect("valid");
    let t = &c.servers[0].tools["t"];
    assert_eq!(t.roles.as_deref(), Some(&["ops".to_owned()][..]));
    assert_eq!(
        t.rate_limit,
        Some(RateLimit {
            burst: 3,
            every: Duration::from_secs(2)
        })
    );
    assert!(c.gateway.enabled);
    assert_eq!(c.gateway.separator, "__");
    let e = Config::from_yaml(
        "servers:\n  - name: s\n    url: http://h/mcp\n    tools:\n      t: {rate_limit: {burst: 0, every: 0s, per: 1}}\n",
        &env(&[]),
    )
    .expect_err("invalid")
    .to_string();
    assert!(e.contains("servers[0].tools.t.rate_limit.burst"), "{e}");
    assert!(e.contains("servers[0].tools.t.rate_limit.every"), "{e}");
    assert!(e.contains("per"), "unknown keys are errors: {e}");
}

#[test]
fn cache_scope_defaults_to_per_user_and_names_a_bad_value() {
    let text = "servers:\n  - name: a\n    url: http://127.0.0.1:1/mcp\n    tools:\n      \
                s: {cache: true, cache_scope: shared}\n      u: {cache: true}\n";
    let c = Config::from_yaml(text, &env(&[])).expect("valid");
    let tools = &c.servers[0].tools;
    assert_eq!(tools["s"].cache_scope, CacheScope::Shared);
    assert_eq!(tools["u"].cache_scope, CacheScope::PerUser);
    let bad = text.replace("cache_scope: shared", "cache_scope: everyone");
    let e = Config::from_yaml(&bad, &env(&[])).expect_err("invalid");
    assert!(e.has("servers[0].tools.s.cache_scope"), "{e}");
}

#[test]
fn credentials_are_checked_at_load_and_errors_name_fields_not_secrets() {
    let dir = tempfile::tempdir().expect("tempdir");
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, "file-token-123\n").expect("write");
    let text = format!(
        "servers:\n  - name: a\n    url: https://127.0.0.1:1/mcp\n    credentials:\n      \
         bearer_token_file: {}\n      headers: {{X-Key: \"${{KEY}}\"}}\n",
        token_file.display()
    );
    let c = Config::from_yaml(&text, &env(&[("KEY", "env-key-456")])).expect("valid");
    let h = &c.servers[0].credentials.headers;
    assert_eq!(h["authorization"], "Bearer file-token-123");
    assert_eq!(h["x-key"], "env-key-456");
    assert!(h["x-key"].is_sensitive());
    let debug = format!("{:?}", c.servers[0]);
    assert!(
        !debug.contains("file-token-123") && !debug.contains("env-key-456"),
        "{debug}"
    );

    let bad = "servers:\n  - name: a\n    url: https://127.0.0.1:1/mcp\n    credentials:\n      \
               bearer_token: \"tok-secret\\nX: y\"\n      headers: {\"bad name\": v, X-Ok: \"s3cr3t\\r\\n\"}\n      \
               header_files: {X-F: /nonexistent/omni2-test}\n      \
               tls: {ca_file: /nonexistent/ca.pem, client_cert_file: /nonexistent/c.pem}\n";
    let e = Config::from_yaml(bad, &env(&[])).expect_err("invalid");
    for path in [
        "servers[0].credentials.bearer_token",
        "servers[0].credentials.headers.bad name",
        "servers[0].credentials.headers.X-Ok",
        "servers[0].credentials.header_files.X-F",
        "servers[0].credentials.tls.ca_file",
        "servers[0].credentials.tls.client_key_file",
    ] {
        assert!(e.has(path), "missing {path} in {e}");
    }
    let text = e.to_string();
    assert!(
        !text.contains("tok-secret") && !text.contains("s3cr3t"),
        "{text}"
    );

    let both = "servers:\n  - name: a\n    url: https://127.0.0.1:1/mcp\n    credentials:\n      \
                bearer_token: t\n      bearer_token_file: /x\n";
    let e = Config::from_yaml(both, &env(&[])).expect_err("invalid");
    assert!(e.has("servers[0].credentials.bearer_token"), "{e}");
}
