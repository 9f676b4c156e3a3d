//! Rules with an `mcp:` block and per-tool matchers: the resource audience, scopes, ID
//! tokens, `typ`, the protocol version gate, and the challenges they answer with.

use std::path::Path;

use jsonwebtoken::Algorithm;
use serde_json::{Value, json};

use super::*;
use crate::facts::Single;
use crate::http::answer::to_response;
use crate::reason::AllowReason;
use crate::test_util::{TestKey, hmac_key};

const NOW: i64 = 1_800_000_000;
const RESOURCE: &str = "https://mcp.example.test/mcp";
const METADATA: &str = "https://mcp.example.test/.well-known/oauth-protected-resource/mcp";

const CONFIG: &str = r#"
issuers:
  - issuer: https://idp.test
    keys: [{kid: hs, alg: HS256, secret_env: TEST_SECRET}]
  - issuer: https://typed.test
    require_typ: [at+jwt, application/at+jwt]
    keys: [{kid: typed, alg: HS256, secret_env: TEST_SECRET}]
rules:
  - name: mcp-echo
    path: /mcp
    methods: [POST]
    mcp_tools: [echo]
    action: authenticated
    mcp:
      resource: HTTPS://MCP.example.test:443/mcp
      authorization_servers: [https://idp.test]
      scopes_supported: [mcp:tools, mcp:admin]
      scopes: [mcp:tools]
  - name: mcp-admin-tools
    path: /mcp
    methods: [POST]
    mcp_tools: ["admin__*"]
    action: authenticated
    mcp:
      resource: HTTPS://MCP.example.test:443/mcp
      authorization_servers: [https://idp.test]
      scopes_supported: [mcp:tools, mcp:admin]
      scopes: [mcp:tools, mcp:admin]
  - name: mcp-other-tools
    path: /mcp
    methods: [POST]
    mcp_methods: [tools/call]
    action: deny
  - name: mcp
    path: /mcp
    action: authenticated
    mcp:
      resource: HTTPS://MCP.example.test:443/mcp
      authorization_servers: [https://idp.test]
      scopes_supported: [mcp:tools, mcp:admin]
"#;

fn secret(name: &str) -> Option<String> {
    (name == "TEST_SECRET").then(|| String::from_utf8(hs().public).expect("ascii secret"))
}

fn runtime() -> Runtime {
    Runtime::from_yaml(CONFIG, Path::new("."), &secret).expect("the test config is valid")
}

fn hs() -> TestKey {
    hmac_key(Algorithm::HS256, "hs")
}

fn token(patch: Value) -> String {
    let mut c = json!({
        "iss": "https://idp.test", "aud": RESOURCE, "sub": "agent-1",
        "scope": "mcp:tools", "iat": NOW - 60, "exp": NOW + 600,
    });
    for (k, v) in patch.as_object().expect("object") {
        if v.is_null() {
            c.as_object_mut().expect("object").remove(k);
        } else {
            c[k] = v.clone();
        }
    }
    hs().mint(&c)
}

fn call<'a>(
    auth: Option<&'a str>,
    version: Option<&'a str>,
    tool: Option<&'a str>,
) -> RequestFacts<'a> {
    let one = |v: Option<&'a str>| v.map_or(Single::Absent, Single::One);
    RequestFacts {
        method: Single::One("POST"),
        uri: Single::One("/mcp"),
        host: Single::One("mcp.example.test"),
        proto: Single::One("https"),
        forwarded_for: vec!["203.0.113.9"],
        authorization: one(auth),
        mcp_protocol_version: one(version),
        mcp_method: if tool.is_some() {
            Single::One("tools/call")
        } else {
            Single::Absent
        },
        mcp_name: one(tool),
        ..Default::default()
    }
}

/// Status, `WWW-Authenticate` and the deny reason (or the allowing rule).
fn answer(rt: &Runtime, facts: &RequestFacts<'_>) -> (u16, String, String) {
    let decision = decide(facts, rt, NOW).decision;
    let res = to_response(&decision, &rt.realm);
    let challenge = res
        .headers()
        .get("www-authenticate")
        .map(|v| v.to_str().expect("ascii").to_owned())
        .unwrap_or_default();
    let what = match &decision {
        Decision::Allow { rule, reason, .. } => {
            assert_eq!(*reason, AllowReason::Authenticated);
            format!("allow {}", rt.policy.rules[rule.expect("a rule")].name)
        }
        Decision::Deny { reason, .. } => reason.as_str().to_owned(),
    };
    (res.status().as_u16(), challenge, what)
}

const V: Option<&str> = Some("2026-07-28");

#[test]
fn no_token_gets_the_resource_metadata_and_scope() {
    let rt = runtime();
    let (status, challenge, what) = answer(&rt, &call(None, V, Some("echo")));
    assert_eq!((status, what.as_str()), (401, "missing_token"));
    assert_eq!(
        challenge,
        format!("Bearer realm=\"omni2\", resource_metadata=\"{METADATA}\", scope=\"mcp:tools\"")
    );
    // A rule without required scopes names none (a GET: the per-tool rules are POST only).
    let mut get = call(None, None, None);
    get.method = Single::One("GET");
    let (status, challenge, _) = answer(&rt, &get);
    assert_eq!(status, 401);
    assert_eq!(
        challenge,
        format!("Bearer realm=\"omni2\", resource_metadata=\"{METADATA}\"")
    );
}

#[test]
fn a_bad_token_gets_invalid_token_with_the_metadata() {
    let rt = runtime();
    let expired = format!("Bearer {}", token(json!({"exp": NOW - 100})));
    let (status, challenge, what) = answer(&rt, &call(Some(&expired), V, Some("echo")));
    assert_eq!((status, what.as_str()), (401, "expired"));
    assert_eq!(
        challenge,
        format!(
            "Bearer realm=\"omni2\", resource_metadata=\"{METADATA}\", scope=\"mcp:tools\", error=\"invalid_token\", error_description=\"the token has expired\""
        )
    );
}

#[test]
fn the_audience_must_name_the_resource_in_canonical_form() {
    let rt = runtime();
    for aud in [
        json!(RESOURCE),
        json!(["x", "https://MCP.EXAMPLE.TEST:443/mcp"]),
    ] {
        let t = format!("Bearer {}", token(json!({ "aud": aud })));
        assert_eq!(
            answer(&rt, &call(Some(&t), V, Some("echo"))).2,
            "allow mcp-echo",
            "{aud}"
        );
    }
    for aud in [
        json!("https://other.example.test/mcp"),
        json!("https://mcp.example.test/mcp2"),
        json!(null),
    ] {
        let t = format!("Bearer {}", token(json!({ "aud": aud })));
        let (status, challenge, what) = answer(&rt, &call(Some(&t), V, Some("echo")));
        assert_eq!((status, what.as_str()), (401, "bad_audience"), "{aud}");
        assert!(challenge.contains("error=\"invalid_token\""), "{challenge}");
    }
}

#[test]
fn missing_scopes_get_insufficient_scope_with_everything_needed() {
    let rt = runtime();
    let t = format!("Bearer {}", token(json!({})));
    let (status, challenge, what) = answer(&rt, &call(Some(&t), V, Some("admin__reset")));
    assert_eq!((status, what.as_str()), (403, "insufficient_scope"));
    assert_eq!(
        challenge,
        format!(
            "Bearer realm=\"omni2\", resource_metadata=\"{METADATA}\", scope=\"mcp:tools mcp:admin\", error=\"insufficient_scope\", error_description=\"the token lacks a required scope\""
        )
    );
    let both = format!("Bearer {}", token(json!({"scope": "mcp:admin mcp:tools"})));
    assert_eq!(
        answer(&rt, &call(Some(&both), V, Some("admin__reset"))).2,
        "allow mcp-admin-tools"
    );
    let scp = format!(
        "Bearer {}",
        token(json!({"scope": null, "scp": ["mcp:tools"]}))
    );
    assert_eq!(
        answer(&rt, &call(Some(&scp), V, Some("echo"))).2,
        "allow mcp-echo"
    );
}

#[test]
fn per_tool_rules_allow_one_tool_deny_another_and_need_a_recent_version() {
    let rt = runtime();
    let t = format!("Bearer {}", token(json!({})));
    assert_eq!(
        answer(&rt, &call(Some(&t), V, Some("echo"))).2,
        "allow mcp-echo"
    );
    let (status, _, what) = answer(&rt, &call(Some(&t), V, Some("add")));
    assert_eq!((status, what.as_str()), (403, "rule_denied"));
    for old in [None, Some("2025-11-25"), Some("2025-06-18")] {
        let (status, challenge, what) = answer(&rt, &call(Some(&t), old, Some("echo")));
        assert_eq!(
            (status, what.as_str()),
            (403, "mcp_protocol_version"),
            "{old:?}"
        );
        assert_eq!(challenge, "", "not a token problem");
    }
    // A GET (the SSE stream) is not matched by the POST-only per-tool rules.
    let mut get = call(Some(&t), None, None);
    get.method = Single::One("GET");
    assert_eq!(answer(&rt, &get).2, "allow mcp");
    let mut twice = call(Some(&t), V, Some("echo"));
    twice.mcp_name.push(Some("add"));
    assert_eq!(answer(&rt, &twice).2, "malformed");
}

#[test]
fn id_tokens_are_not_access_tokens() {
    let rt = runtime();
    for patch in [json!({"nonce": "n-1"}), json!({"at_hash": "abc"})] {
        let t = format!("Bearer {}", token(patch.clone()));
        let (status, challenge, what) = answer(&rt, &call(Some(&t), V, Some("echo")));
        assert_eq!((status, what.as_str()), (401, "id_token"), "{patch}");
        assert!(
            challenge.contains("an ID token is not an access token"),
            "{challenge}"
        );
    }
}

#[test]
fn require_typ_accepts_only_the_listed_media_types() {
    let rt = runtime();
    let typed = hmac_key(Algorithm::HS256, "typed");
    let claims = json!({
        "iss": "https://typed.test", "aud": RESOURCE, "sub": "a", "scope": "mcp:tools",
        "iat": NOW - 60, "exp": NOW + 600,
    });
    for (typ, want) in [
        (Some("at+jwt"), "allow mcp-echo"),
        (Some("application/AT+JWT"), "allow mcp-echo"),
        (Some("JWT"), "bad_token_type"),
        (None, "bad_token_type"),
    ] {
        let t = format!("Bearer {}", typed.mint_with_typ(&claims, typ));
        assert_eq!(
            answer(&rt, &call(Some(&t), V, Some("echo"))).2,
            want,
            "{typ:?}"
        );
    }
}

#[test]
fn resources_are_shared_and_published() {
    let rt = runtime();
    assert_eq!(rt.resources.len(), 1);
    let r = &rt.resources[0];
    assert_eq!(r.uri, RESOURCE);
    assert_eq!(r.metadata_url, METADATA);
    let doc: Value = serde_json::from_str(&r.document).expect("JSON");
    assert_eq!(doc["resource"], RESOURCE);
    assert_eq!(doc["authorization_servers"], json!(["https://idp.test"]));
    assert_eq!(doc["scopes_supported"], json!(["mcp:tools", "mcp:admin"]));
}
