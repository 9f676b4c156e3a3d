//! Checks over the shipped deployment files (`traefik/`, `compose/`): JSON-schema validation
//! and the cross-checks that keep the zero-trust promise. Every check is a pure function
//! from parsed files to a list of problems, so tests can run it on broken copies too.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::process::repo_root;

/// A YAML file as a JSON value (the schemas are JSON Schema draft-07).
pub fn load_yaml(path: &Path) -> Value {
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    serde_yaml::from_str(&text).unwrap_or_else(|e| panic!("{}: invalid YAML: {e}", path.display()))
}

/// A schema vendored in `tests/fixtures/schemas/` (sources in its README).
pub fn load_schema(name: &str) -> Value {
    let path = repo_root().join("tests/fixtures/schemas").join(name);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    serde_json::from_str(&text).expect("schema is JSON")
}

/// Every draft-07 validation error of `instance` against `schema`, as `path: message`.
pub fn schema_errors(schema: &Value, instance: &Value) -> Vec<String> {
    let validator = jsonschema::draft7::new(schema).expect("schema compiles");
    validator
        .iter_errors(instance)
        .map(|e| format!("{}: {e}", e.instance_path()))
        .collect()
}

/// The shipped files.
pub struct Shipped {
    pub traefik_static: Value,
    /// `traefik/dynamic/*.yml`, by path.
    pub dynamic: Vec<(PathBuf, Value)>,
    pub compose: Value,
}

impl Shipped {
    pub fn load() -> Shipped {
        let root = repo_root();
        let mut dynamic: Vec<(PathBuf, Value)> = std::fs::read_dir(root.join("traefik/dynamic"))
            .expect("traefik/dynamic")
            .map(|e| e.expect("dir entry").path())
            .filter(|p| p.extension().is_some_and(|e| e == "yml" || e == "yaml"))
            .map(|p| {
                let v = load_yaml(&p);
                (p, v)
            })
            .collect();
        dynamic.sort_by(|a, b| a.0.cmp(&b.0));
        Shipped {
            traefik_static: load_yaml(&root.join("traefik/traefik.yml")),
            dynamic,
            compose: load_yaml(&root.join("compose/docker-compose.yml")),
        }
    }

    /// Every `traefik/dynamic/*.yml` as one document: Traefik's file provider merges them
    /// the same way (routers, middlewares and services each in one namespace).
    pub fn merged_dynamic(&self) -> Value {
        let mut http = serde_json::Map::new();
        for (_, doc) in &self.dynamic {
            for (kind, objects) in doc["http"].as_object().into_iter().flatten() {
                let into = http
                    .entry(kind.clone())
                    .or_insert_with(|| Value::Object(serde_json::Map::new()));
                for (name, object) in objects.as_object().into_iter().flatten() {
                    into[name] = object.clone();
                }
            }
        }
        serde_json::json!({ "http": http })
    }

    /// `traefik/dynamic/omni2.yml`.
    pub fn omni2_dynamic(&self) -> &Value {
        &self
            .dynamic
            .iter()
            .find(|(p, _)| p.ends_with("omni2.yml"))
            .expect("traefik/dynamic/omni2.yml")
            .1
    }
}

/// Traefik HTTP config (routers, middlewares, services) flattened to lower-case dotted
/// keys with comma-joined lists: the shape of Docker labels. The file provider and labels
/// both map into it, so "equivalent" means "equal".
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HttpConfig(pub BTreeMap<String, String>);

impl HttpConfig {
    /// From a file-provider document (`http:` at the top).
    pub fn from_file(doc: &Value) -> HttpConfig {
        let mut out = BTreeMap::new();
        flatten(&doc["http"], "", &mut out);
        HttpConfig(out)
    }

    /// From a compose service's `labels` (map or list form); `traefik.http.*` only.
    pub fn from_labels(labels: &Value) -> HttpConfig {
        let mut out = BTreeMap::new();
        for (key, value) in label_pairs(labels) {
            if let Some(rest) = key.to_ascii_lowercase().strip_prefix("traefik.http.") {
                out.insert(rest.to_owned(), value);
            }
        }
        HttpConfig(out)
    }

    /// Names of the objects of one kind (`routers`, `middlewares`, `services`).
    pub fn names(&self, kind: &str) -> BTreeSet<String> {
        let prefix = format!("{kind}.");
        self.0
            .keys()
            .filter_map(|k| k.strip_prefix(&prefix))
            .filter_map(|rest| rest.split('.').next())
            .map(str::to_owned)
            .collect()
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(String::as_str)
    }

    /// A router's middleware names, without `@provider`.
    pub fn router_middlewares(&self, router: &str) -> Vec<String> {
        self.get(&format!("routers.{router}.middlewares"))
            .map(|list| {
                list.split(',')
                    .map(|m| m.trim().split('@').next().unwrap_or("").to_owned())
                    .filter(|m| !m.is_empty())
                    .collect()
            })
            .unwrap_or_default()
    }
}

fn scalar(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

fn flatten(v: &Value, prefix: &str, out: &mut BTreeMap<String, String>) {
    let join = |k: &str| {
        if prefix.is_empty() {
            k.to_ascii_lowercase()
        } else {
            format!("{prefix}.{}", k.to_ascii_lowercase())
        }
    };
    match v {
        Value::Object(map) => {
            for (k, child) in map {
                flatten(child, &join(k), out);
            }
        }
        Value::Array(items) if items.iter().all(|i| !i.is_object() && !i.is_array()) => {
            let joined: Vec<String> = items.iter().map(scalar).collect();
            out.insert(prefix.to_owned(), joined.join(","));
        }
        Value::Array(items) => {
            for (i, child) in items.iter().enumerate() {
                flatten(child, &join(&i.to_string()), out);
            }
        }
        other => {
            out.insert(prefix.to_owned(), scalar(other));
        }
    }
}

fn label_pairs(labels: &Value) -> Vec<(String, String)> {
    match labels {
        Value::Object(map) => map.iter().map(|(k, v)| (k.clone(), scalar(v))).collect(),
        Value::Array(items) => items
            .iter()
            .filter_map(Value::as_str)
            .filter_map(|s| s.split_once('='))
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect(),
        _ => Vec::new(),
    }
}

/// The compose services, by name.
pub fn services(compose: &Value) -> BTreeMap<String, &Value> {
    compose["services"]
        .as_object()
        .map(|m| m.iter().map(|(k, v)| (k.clone(), v)).collect())
        .unwrap_or_default()
}

/// The file-provider config and omni2's labels describe the same routers, priorities,
/// middlewares and options. The service target differs only in form: `url:
/// http://omni2:8000` in the file, `loadbalancer.server.port: 8000` on the container.
pub fn check_labels_match_file(compose: &Value, dynamic: &Value) -> Vec<String> {
    check_container_labels_match_file(compose, "omni2", dynamic)
}

/// [`check_labels_match_file`] for the labels of compose service `container` (whose
/// file-provider URL is `http://<container>:<port>`).
pub fn check_container_labels_match_file(
    compose: &Value,
    container: &str,
    dynamic: &Value,
) -> Vec<String> {
    let mut problems = Vec::new();
    let svcs = services(compose);
    let Some(omni2) = svcs.get(container) else {
        return vec![format!("compose: no {container} service")];
    };
    let mut labels = HttpConfig::from_labels(&omni2["labels"]);
    let mut file = HttpConfig::from_file(dynamic);

    for name in file.names("services") {
        let url_key = format!("services.{name}.loadbalancer.servers.0.url");
        let port_key = format!("services.{name}.loadbalancer.server.port");
        let url = file.0.remove(&url_key);
        let port = labels.0.remove(&port_key);
        match (url.as_deref(), port.as_deref()) {
            (Some(url), Some(port)) if url == format!("http://{container}:{port}") => {}
            (url, port) => problems.push(format!(
                "service {name}: file url {url:?} does not match label port {port:?} on the {container} container"
            )),
        }
    }
    let keys: BTreeSet<&String> = file.0.keys().chain(labels.0.keys()).collect();
    for key in keys {
        match (file.0.get(key), labels.0.get(key)) {
            (Some(f), Some(l)) if f == l => {}
            (f, l) => problems.push(format!("{key}: file {f:?} != labels {l:?}")),
        }
    }
    problems
}

/// Every forwardAuth middleware (file and labels) lists exactly `expected` (the headers
/// the shipped sidecar config emits) in `authResponseHeaders`.
pub fn check_auth_response_headers(
    compose: &Value,
    dynamic: &[&Value],
    expected: &[String],
) -> Vec<String> {
    let want: BTreeSet<String> = expected.iter().map(|h| h.to_ascii_lowercase()).collect();
    let mut configs: Vec<(String, HttpConfig)> = dynamic
        .iter()
        .map(|d| ("file".to_owned(), HttpConfig::from_file(d)))
        .collect();
    for (name, svc) in services(compose) {
        configs.push((
            format!("labels of {name}"),
            HttpConfig::from_labels(&svc["labels"]),
        ));
    }
    let mut problems = Vec::new();
    let mut found = 0;
    for (origin, cfg) in &configs {
        for mw in cfg.names("middlewares") {
            let prefix = format!("middlewares.{mw}.forwardauth.");
            if !cfg.0.keys().any(|k| k.starts_with(&prefix)) {
                continue;
            }
            found += 1;
            let listed = cfg
                .get(&format!("{prefix}authresponseheaders"))
                .unwrap_or("");
            let got: BTreeSet<String> = listed
                .split(',')
                .map(|h| h.trim().to_ascii_lowercase())
                .filter(|h| !h.is_empty())
                .collect();
            if got != want {
                problems.push(format!(
                    "{origin}: middleware {mw} authResponseHeaders {got:?} != sidecar identity headers {want:?}"
                ));
            }
            if cfg.get(&format!("{prefix}trustforwardheader")) != Some("false") {
                problems.push(format!(
                    "{origin}: middleware {mw} must set trustForwardHeader: false explicitly"
                ));
            }
        }
    }
    if found == 0 {
        problems.push("no forwardAuth middleware found".into());
    }
    problems
}

/// Only traefik publishes ports, each bound to 127.0.0.1; nobody uses host networking.
pub fn check_ports(compose: &Value) -> Vec<String> {
    let mut problems = Vec::new();
    for (name, svc) in services(compose) {
        if svc["network_mode"].as_str() == Some("host") {
            problems.push(format!("{name}: network_mode host bypasses the networks"));
        }
        let ports = svc["ports"].as_array().cloned().unwrap_or_default();
        if name != "traefik" {
            if !ports.is_empty() {
                problems.push(format!(
                    "{name}: publishes ports {ports:?}; only traefik may"
                ));
            }
            continue;
        }
        if ports.is_empty() {
            problems.push("traefik publishes no ports".into());
        }
        for port in &ports {
            let host_ip = match port {
                Value::String(s) => {
                    // host_ip:host:container; anything shorter binds every interface.
                    let parts: Vec<&str> = s.split(':').collect();
                    (parts.len() == 3).then(|| parts[0].to_owned())
                }
                Value::Object(o) => o.get("host_ip").and_then(Value::as_str).map(str::to_owned),
                _ => None,
            };
            if host_ip.as_deref() != Some("127.0.0.1") {
                problems.push(format!("traefik: port {port} is not bound to 127.0.0.1"));
            }
        }
    }
    problems
}

/// Every router to the omni2 service carries the `auth` forwardAuth middleware, except the
/// public health route, which must match `/health` exactly. `cors` (if any) runs before
/// `auth`, and `ratelimit` after it.
pub fn check_routers_carry_auth(cfg: &HttpConfig) -> Vec<String> {
    let mut problems = Vec::new();
    let auth_is_forward_auth = cfg
        .0
        .keys()
        .any(|k| k.starts_with("middlewares.auth.forwardauth."));
    if !auth_is_forward_auth {
        problems.push("middleware `auth` is not a forwardAuth middleware".into());
    }
    for router in cfg.names("routers") {
        let service = cfg.get(&format!("routers.{router}.service")).unwrap_or("");
        if service.split('@').next() != Some("omni2") {
            continue;
        }
        let rule = cfg.get(&format!("routers.{router}.rule")).unwrap_or("");
        let mws = cfg.router_middlewares(&router);
        let pos = |name: &str| mws.iter().position(|m| m == name);
        match pos("auth") {
            None if rule == "Path(`/health`)" => {}
            None => problems.push(format!("router {router} ({rule}) to omni2 has no auth")),
            Some(auth) => {
                if pos("cors").is_some_and(|c| c > auth) {
                    problems.push(format!("router {router}: cors must run before auth"));
                }
                if pos("ratelimit").is_some_and(|r| r < auth) {
                    problems.push(format!("router {router}: ratelimit must run after auth"));
                }
            }
        }
    }
    problems
}

/// Names removed or renamed in Traefik v3 (the schemas still accept some).
const V2_KEYS: &[&str] = &[
    "ipwhitelist",
    "sslredirect",
    "ssltemporaryredirect",
    "sslhost",
    "sslproxyheaders",
    "sslforcehost",
    "featurepolicy",
    "swarmmode",
    "swarmmoderefreshseconds",
    "pilot",
];
/// Rule matchers removed in v3.
const V2_MATCHERS: &[&str] = &["Headers(", "HeadersRegexp(", "HostHeader("];

/// Flags v2 names in keys (any depth; label keys too) and v2 rule matchers, including
/// multi-value matchers like ``Host(`a`,`b`)``.
pub fn lint_v2_names(doc: &Value) -> Vec<String> {
    let mut problems = Vec::new();
    lint_walk(doc, "", &mut problems);
    problems
}

fn lint_walk(v: &Value, path: &str, problems: &mut Vec<String>) {
    match v {
        Value::Object(map) => {
            for (k, child) in map {
                let here = format!("{path}/{k}");
                for part in k.to_ascii_lowercase().split('.') {
                    if V2_KEYS.contains(&part) {
                        problems.push(format!("{here}: `{part}` is a Traefik v2 name"));
                    }
                }
                lint_walk(child, &here, problems);
            }
        }
        Value::Array(items) => {
            for (i, child) in items.iter().enumerate() {
                lint_walk(child, &format!("{path}/{i}"), problems);
            }
        }
        Value::String(s) if path.to_ascii_lowercase().ends_with("rule") => {
            for m in V2_MATCHERS {
                if s.contains(m) {
                    problems.push(format!("{path}: matcher {m}..) is v2 syntax"));
                }
            }
            if s.contains("`,`") || s.contains("`, `") {
                problems.push(format!(
                    "{path}: multi-value matcher in {s:?}; v3 matchers take one value"
                ));
            }
        }
        _ => {}
    }
}

/// Static-config invariants: Docker provider opt-in only, alias headers deleted and encoded
/// separators refused on every entry point that serves routers, no
/// `forwardedHeaders.insecure`.
pub fn check_static(traefik: &Value) -> Vec<String> {
    let mut problems = Vec::new();
    if traefik["providers"]["docker"]["exposedByDefault"] != Value::Bool(false) {
        problems.push("providers.docker.exposedByDefault must be false".into());
    }
    for ep in ["web", "websecure"] {
        let e = &traefik["entryPoints"][ep];
        if e.is_null() {
            problems.push(format!("entry point {ep} missing"));
            continue;
        }
        if e["http"]["aliasHeadersStrategy"].as_str() != Some("delete") {
            problems.push(format!(
                "entryPoints.{ep}.http.aliasHeadersStrategy must be delete"
            ));
        }
        for (option, value) in e["http"]["encodedCharacters"]
            .as_object()
            .into_iter()
            .flatten()
        {
            if value != &Value::Bool(false) {
                problems.push(format!(
                    "entryPoints.{ep}.http.encodedCharacters.{option} must be false"
                ));
            }
        }
        if e["http"]["encodedCharacters"]
            .as_object()
            .is_none_or(|o| o.len() < 7)
        {
            problems.push(format!(
                "entryPoints.{ep}.http.encodedCharacters must set all seven allow* to false"
            ));
        }
        if e["forwardedHeaders"]["insecure"] == Value::Bool(true) {
            problems.push(format!("entryPoints.{ep}.forwardedHeaders.insecure is on"));
        }
    }
    problems
}

/// omni2, the sidecar and MCP servers sit only on an `internal: true` network; every
/// service has a healthcheck and a pinned image tag.
pub fn check_compose_hygiene(compose: &Value) -> Vec<String> {
    let mut problems = Vec::new();
    let networks = compose["networks"].as_object().cloned().unwrap_or_default();
    let internal: BTreeSet<&String> = networks
        .iter()
        .filter(|(_, n)| n["internal"] == Value::Bool(true))
        .map(|(k, _)| k)
        .collect();
    if internal.is_empty() {
        problems.push("no network with internal: true".into());
    }
    for (name, svc) in services(compose) {
        let nets: Vec<String> = match &svc["networks"] {
            Value::Array(a) => a
                .iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect(),
            Value::Object(o) => o.keys().cloned().collect(),
            _ => Vec::new(),
        };
        if name != "traefik" && (nets.is_empty() || nets.iter().any(|n| !internal.contains(n))) {
            problems.push(format!(
                "{name}: must be on internal networks only, has {nets:?}"
            ));
        }
        if svc["healthcheck"]["test"].is_null() {
            problems.push(format!("{name}: no healthcheck"));
        }
        match svc["image"].as_str().and_then(|i| i.rsplit_once(':')) {
            Some((_, tag)) if !tag.is_empty() && tag != "latest" && !tag.contains('/') => {}
            _ => problems.push(format!("{name}: image tag not pinned ({:?})", svc["image"])),
        }
    }
    problems
}

/// The addresses that tie the stack together agree: forwardAuth calls the sidecar's listen
/// port, omni2 listens where Traefik sends it, healthchecks probe the right ports.
pub fn check_wiring(
    compose: &Value,
    dynamic: &Value,
    sidecar_port: u16,
    sidecar_admin_port: u16,
) -> Vec<String> {
    let mut problems = Vec::new();
    let file = HttpConfig::from_file(dynamic);
    let want = format!("http://auth-sidecar:{sidecar_port}/verify");
    if file.get("middlewares.auth.forwardauth.address") != Some(want.as_str()) {
        problems.push(format!(
            "forwardAuth address {:?} != {want:?}",
            file.get("middlewares.auth.forwardauth.address")
        ));
    }
    let svcs = services(compose);
    let args: Vec<&str> = svcs
        .get("omni2")
        .and_then(|s| s["command"].as_array())
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let listen = args
        .iter()
        .position(|a| *a == "--listen")
        .and_then(|i| args.get(i + 1))
        .and_then(|l| l.rsplit_once(':'))
        .map(|(_, port)| port.to_owned());
    let url = file.get("services.omni2.loadbalancer.servers.0.url");
    match (&listen, url) {
        (Some(port), Some(url)) if url == format!("http://omni2:{port}") => {}
        _ => problems.push(format!(
            "omni2 --listen port {listen:?} does not match the service url {url:?}"
        )),
    }
    let healthcheck = |name: &str| {
        svcs.get(name)
            .map(|s| s["healthcheck"]["test"].to_string())
            .unwrap_or_default()
    };
    if !healthcheck("auth-sidecar").contains(&format!(":{sidecar_admin_port}/")) {
        problems.push(format!(
            "auth-sidecar healthcheck does not probe admin port {sidecar_admin_port}"
        ));
    }
    if let Some(port) = &listen
        && !healthcheck("omni2").contains(&format!(":{port}/health"))
    {
        problems.push(format!("omni2 healthcheck does not probe :{port}/health"));
    }
    problems
}

/// A Dockerfile is multi-stage with pinned base images, runs as a non-root user and has a
/// HEALTHCHECK.
pub fn check_dockerfile(text: &str) -> Vec<String> {
    let mut problems = Vec::new();
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.starts_with('#'))
        .collect();
    let froms: Vec<&str> = lines
        .iter()
        .filter_map(|l| l.strip_prefix("FROM "))
        .collect();
    if froms.len() < 2 {
        problems.push("not multi-stage (fewer than two FROM)".into());
    }
    for from in &froms {
        let image = from.split_whitespace().next().unwrap_or("");
        match image.rsplit_once(':') {
            Some((_, tag)) if tag != "latest" && !tag.contains('/') => {}
            _ => problems.push(format!("base image {image:?} is not pinned")),
        }
    }
    let last_from = lines
        .iter()
        .rposition(|l| l.starts_with("FROM "))
        .unwrap_or(0);
    let user = lines[last_from..]
        .iter()
        .rev()
        .find_map(|l| l.strip_prefix("USER "))
        .map(str::trim);
    match user {
        Some(u) if !["root", "0", "0:0", "root:root"].contains(&u) => {}
        _ => problems.push(format!("final stage runs as {user:?}, not a non-root user")),
    }
    if !lines[last_from..]
        .iter()
        .any(|l| l.starts_with("HEALTHCHECK "))
    {
        problems.push("no HEALTHCHECK in the final stage".into());
    }
    problems
}
