//! `deploy/kubernetes/`: a small kustomize renderer (the features the manifests use, anything
//! else is refused), schema validation (`kubernetes-validate` for the Kubernetes kinds, the
//! vendored CRDs' `openAPIV3Schema` for Traefik and the Prometheus Operator) and the
//! cross-checks against the shipped Traefik files and the sidecar's own config. Every check
//! is a function from rendered documents to a list of problems, so tests run it on broken
//! copies too.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{Value, json};

use crate::deploy::schema_errors;
use crate::process::{repo_root, which};

/// `deploy/kubernetes/<rel>`.
pub fn manifests_dir(rel: &str) -> PathBuf {
    repo_root().join("deploy/kubernetes").join(rel)
}

/// Every YAML document of a (multi-document) file, empty ones skipped.
pub fn load_documents(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    serde_yaml::Deserializer::from_str(&text)
        .map(|d| {
            let v: Value = serde::Deserialize::deserialize(d)
                .unwrap_or_else(|e| panic!("{}: invalid YAML: {e}", path.display()));
            v
        })
        .filter(|v| !v.is_null())
        .collect()
}

/// The kustomization keys [`render`] implements; any other key is refused, so a manifest
/// never relies on a feature the tests silently skip.
const KNOWN_KEYS: [&str; 8] = [
    "apiVersion",
    "kind",
    "namespace",
    "resources",
    "components",
    "patches",
    "configMapGenerator",
    "generatorOptions",
];

/// The documents `kustomize build dir` renders, for the subset of kustomize the manifests
/// use: `resources` (files and directories), `components`, `patches` (strategic-merge files),
/// `configMapGenerator` (`files`, with `disableNameSuffixHash`) and `namespace`.
pub fn render(dir: &Path) -> Vec<Value> {
    let k = load_kustomization(dir);
    let mut docs = Vec::new();
    for r in list(&k, "resources") {
        let path = dir.join(&r);
        if path.is_dir() {
            docs.extend(render(&path));
        } else {
            docs.extend(load_documents(&path));
        }
    }
    if let Some(gens) = k.get("configMapGenerator").and_then(Value::as_array) {
        assert_eq!(
            k.pointer("/generatorOptions/disableNameSuffixHash"),
            Some(&json!(true)),
            "{}: name hashes are not implemented here (and would defeat the in-place reload)",
            dir.display()
        );
        for g in gens {
            let mut data = serde_json::Map::new();
            for file in g["files"].as_array().into_iter().flatten() {
                let rel = file.as_str().expect("file name");
                let path = dir.join(rel);
                let text = std::fs::read_to_string(&path)
                    .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
                let key = Path::new(rel).file_name().expect("name").to_string_lossy();
                data.insert(key.into_owned(), json!(text));
            }
            docs.push(json!({
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": { "name": g["name"] },
                "data": data,
            }));
        }
    }
    for c in list(&k, "components") {
        let cdir = dir.join(&c);
        let ck = load_kustomization(&cdir);
        assert_eq!(
            ck["kind"],
            "Component",
            "{}: not a Component",
            cdir.display()
        );
        for r in list(&ck, "resources") {
            docs.extend(load_documents(&cdir.join(r)));
        }
        apply_patches(&cdir, &ck, &mut docs);
    }
    apply_patches(dir, &k, &mut docs);
    if let Some(ns) = k.get("namespace").and_then(Value::as_str) {
        for d in &mut docs {
            if d["kind"] != "Namespace" {
                d["metadata"]["namespace"] = json!(ns);
            }
        }
    }
    docs
}

fn load_kustomization(dir: &Path) -> Value {
    let path = dir.join("kustomization.yaml");
    let k = load_documents(&path).pop().expect("a kustomization");
    for key in k.as_object().expect("a mapping").keys() {
        assert!(
            KNOWN_KEYS.contains(&key.as_str()),
            "{}: `{key}` is not implemented by the tests' renderer",
            path.display()
        );
    }
    k
}

fn list(k: &Value, key: &str) -> Vec<String> {
    k.get(key)
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|v| v.as_str().expect("a path").to_owned())
        .collect()
}

fn apply_patches(dir: &Path, k: &Value, docs: &mut [Value]) {
    for p in k
        .get("patches")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let file = p["path"]
            .as_str()
            .expect("patches: only `path:` is implemented");
        for patch in load_documents(&dir.join(file)) {
            let target = docs
                .iter_mut()
                .find(|d| {
                    d["kind"] == patch["kind"] && d["metadata"]["name"] == patch["metadata"]["name"]
                })
                .unwrap_or_else(|| {
                    panic!(
                        "{file}: no {} {} to patch",
                        patch["kind"], patch["metadata"]["name"]
                    )
                });
            strategic_merge(target, &patch);
        }
    }
}

/// Kustomize's strategic merge for the shapes used here: mappings merge key by key, lists of
/// mappings with a `name` (containers, env, ports) merge item by item, other lists replace.
pub fn strategic_merge(base: &mut Value, patch: &Value) {
    match (base, patch) {
        (Value::Object(b), Value::Object(p)) => {
            for (k, pv) in p {
                match b.get_mut(k) {
                    Some(bv) => strategic_merge(bv, pv),
                    None => {
                        b.insert(k.clone(), pv.clone());
                    }
                }
            }
        }
        (Value::Array(b), Value::Array(p)) if p.iter().all(|v| v.get("name").is_some()) => {
            for pv in p {
                match b.iter_mut().find(|bv| bv.get("name") == pv.get("name")) {
                    Some(bv) => strategic_merge(bv, pv),
                    None => b.push(pv.clone()),
                }
            }
        }
        (b, p) => *b = p.clone(),
    }
}

/// The API groups whose kinds are CRDs, validated against `tests/fixtures/kubernetes/`.
fn crd_file(api_version: &str, kind: &str) -> Option<&'static str> {
    match (api_version.split('/').next()?, kind) {
        ("traefik.io", "Middleware") => Some("traefik.io_middlewares.yaml"),
        ("traefik.io", "IngressRoute") => Some("traefik.io_ingressroutes.yaml"),
        ("monitoring.coreos.com", "ServiceMonitor") => {
            Some("monitoring.coreos.com_servicemonitors.yaml")
        }
        _ => None,
    }
}

fn is_crd_group(api_version: &str) -> bool {
    matches!(
        api_version.split('/').next(),
        Some("traefik.io" | "monitoring.coreos.com")
    )
}

/// `kind/name` as `kubernetes-validate` names a resource.
fn resource_name(d: &Value) -> String {
    format!(
        "{}/{}",
        d["kind"].as_str().unwrap_or("").to_ascii_lowercase(),
        d["metadata"]["name"].as_str().unwrap_or("")
    )
}

/// The pinned `kubernetes-validate` (PyPI; `.ci/run` installs it) in strict mode (unknown
/// fields are errors) over every non-CRD document; each must be reported as passed.
/// Panics when the tool is missing: a validation that cannot run is a failure.
pub fn kubernetes_validate(docs: &[Value], dir: &Path) -> Result<(), String> {
    assert!(
        which("kubernetes-validate").is_some(),
        "kubernetes-validate is not installed; .ci/run installs it (pip)"
    );
    let core: Vec<&Value> = docs
        .iter()
        .filter(|d| !is_crd_group(d["apiVersion"].as_str().unwrap_or("")))
        .collect();
    let file = dir.join("core.yaml");
    let text: String = core
        .iter()
        // JSON (which is YAML): PyYAML reads YAML 1.1, where a plain `no` is false.
        .map(|d| format!("---\n{d}\n"))
        .collect();
    std::fs::write(&file, text).expect("write manifests");
    let out = Command::new("kubernetes-validate")
        .args(["--strict", "-k", KUBERNETES_VERSION])
        .arg(&file)
        .output()
        .expect("run kubernetes-validate");
    let report =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    let unvalidated: Vec<String> = core
        .iter()
        .map(|d| resource_name(d))
        .filter(|name| !report.contains(&format!("passed for resource {name} ")))
        .collect();
    if out.status.success() && unvalidated.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "kubernetes-validate: {}; not reported as passed: {unvalidated:?}\n{report}",
            out.status
        ))
    }
}

/// The Kubernetes version whose schemas `kubernetes-validate` applies.
pub const KUBERNETES_VERSION: &str = "1.33.0";

/// A vendored CRD's `openAPIV3Schema` for `version`, made strict the way the API server's
/// pruning is: an object schema with `properties` and nothing saying otherwise admits no
/// other key (the API server would silently drop a misspelt one).
pub fn crd_schema(file: &str, version: &str) -> Value {
    let crd = load_documents(&repo_root().join("tests/fixtures/kubernetes").join(file))
        .pop()
        .expect("a CRD");
    let v = crd["spec"]["versions"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|v| v["name"] == version)
        .unwrap_or_else(|| panic!("{file}: no version {version}"));
    let mut schema = v["schema"]["openAPIV3Schema"].clone();
    strictify(&mut schema);
    schema
}

fn strictify(s: &mut Value) {
    let Some(obj) = s.as_object_mut() else {
        return;
    };
    let preserves = obj.get("x-kubernetes-preserve-unknown-fields") == Some(&json!(true));
    if obj.contains_key("properties") && !obj.contains_key("additionalProperties") && !preserves {
        obj.insert("additionalProperties".into(), json!(false));
    }
    for (k, v) in obj.iter_mut() {
        match k.as_str() {
            "properties" => {
                for p in v.as_object_mut().into_iter().flatten().map(|(_, p)| p) {
                    strictify(p);
                }
            }
            "items" | "additionalProperties" => strictify(v),
            "allOf" | "anyOf" | "oneOf" => {
                for p in v.as_array_mut().into_iter().flatten() {
                    strictify(p);
                }
            }
            _ => {}
        }
    }
}

/// Schema errors of every CRD document (Traefik, Prometheus Operator) against the vendored
/// CRDs; a CRD-group kind without a vendored CRD is an error too.
pub fn crd_errors(docs: &[Value]) -> Vec<String> {
    let mut out = Vec::new();
    for d in docs {
        let api = d["apiVersion"].as_str().unwrap_or("");
        if !is_crd_group(api) {
            continue;
        }
        let kind = d["kind"].as_str().unwrap_or("");
        let Some(file) = crd_file(api, kind) else {
            out.push(format!("{api} {kind}: no vendored CRD"));
            continue;
        };
        let version = api.split('/').nth(1).unwrap_or("");
        for e in schema_errors(&crd_schema(file, version), d) {
            out.push(format!("{}: {e}", resource_name(d)));
        }
    }
    out
}

/// The documents of one kind.
pub fn of_kind<'a>(docs: &'a [Value], kind: &str) -> Vec<&'a Value> {
    docs.iter().filter(|d| d["kind"] == kind).collect()
}

/// The document of `kind` named `name`.
pub fn named<'a>(docs: &'a [Value], kind: &str, name: &str) -> Option<&'a Value> {
    docs.iter()
        .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
}

/// Whether every `matchLabels` pair is among `labels`.
pub fn selects(match_labels: &Value, labels: &Value) -> bool {
    match_labels
        .as_object()
        .is_some_and(|m| !m.is_empty() && m.iter().all(|(k, v)| labels.get(k) == Some(v)))
}

/// The Deployment whose container runs `image` (`omni2/auth-sidecar`, `omni2/omni2`).
pub fn deployment_of<'a>(docs: &'a [Value], image: &str) -> Option<&'a Value> {
    of_kind(docs, "Deployment").into_iter().find(|d| {
        d.pointer("/spec/template/spec/containers/0/image")
            .and_then(Value::as_str)
            .is_some_and(|i| i.split(':').next() == Some(image))
    })
}

pub const SIDECAR_IMAGE: &str = "omni2/auth-sidecar";
pub const OMNI2_IMAGE: &str = "omni2/omni2";

/// A container's port number by name (or the number itself).
pub fn container_port(deployment: &Value, port: &Value) -> Option<u64> {
    if let Some(n) = port.as_u64() {
        return Some(n);
    }
    deployment
        .pointer("/spec/template/spec/containers/0/ports")?
        .as_array()?
        .iter()
        .find(|p| p["name"] == *port)?["containerPort"]
        .as_u64()
}

/// The Service (and its port) that `host:port` names, resolved to the container port of the
/// pods it selects: `(service, deployment, container port)`.
fn service_target<'a>(
    docs: &'a [Value],
    host: &str,
    port: u64,
) -> Result<(&'a Value, &'a Value, u64), String> {
    let (svc_name, ns) = match host.strip_suffix(".svc.cluster.local") {
        Some(rest) => rest.split_once('.').ok_or(format!(
            "{host}: not <service>.<namespace>.svc.cluster.local"
        ))?,
        None => return Err(format!("{host}: not a fully qualified Service name")),
    };
    let svc = named(docs, "Service", svc_name).ok_or(format!("no Service {svc_name}"))?;
    if svc["metadata"]["namespace"] != ns {
        return Err(format!(
            "Service {svc_name} is in namespace {}, the address says {ns}",
            svc["metadata"]["namespace"]
        ));
    }
    let sp = svc["spec"]["ports"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|p| p["port"].as_u64() == Some(port))
        .ok_or(format!("Service {svc_name} has no port {port}"))?;
    let dep = of_kind(docs, "Deployment")
        .into_iter()
        .find(|d| {
            selects(
                &svc["spec"]["selector"],
                &d["spec"]["template"]["metadata"]["labels"],
            )
        })
        .ok_or(format!("Service {svc_name} selects no Deployment's pods"))?;
    let target = sp.get("targetPort").unwrap_or(&sp["port"]);
    let n = container_port(dep, target).ok_or(format!(
        "Service {svc_name}: targetPort {target} is no container port"
    ))?;
    Ok((svc, dep, n))
}

/// `http://host:port/path` → `(host, port, path)`.
fn split_url(url: &str) -> Option<(&str, u64, &str)> {
    let rest = url.strip_prefix("http://")?;
    let (authority, path) = rest.split_at(rest.find('/')?);
    let (host, port) = authority.split_once(':')?;
    Some((host, port.parse().ok()?, path))
}

/// The `auth` Middleware's forwardAuth: its address names the sidecar Service and a port
/// that reaches the sidecar's `listen` port (`listen_port`, from the sidecar's own config),
/// with the shipped path; `authResponseHeaders` equal `emitted` (the sidecar's own list).
pub fn check_forward_auth(
    docs: &[Value],
    shipped_address: &str,
    listen_port: u16,
    emitted: &[String],
) -> Vec<String> {
    let mut out = Vec::new();
    let fas: Vec<&Value> = of_kind(docs, "Middleware")
        .into_iter()
        .filter_map(|m| m["spec"].get("forwardAuth"))
        .collect();
    if fas.is_empty() {
        return vec!["no Middleware with forwardAuth".into()];
    }
    let want_path = split_url(shipped_address).map_or("", |(_, _, p)| p);
    for fa in fas {
        let address = fa["address"].as_str().unwrap_or("");
        match split_url(address) {
            None => out.push(format!(
                "forwardAuth address {address}: not http://host:port/path"
            )),
            Some((host, port, path)) => {
                if path != want_path {
                    out.push(format!(
                        "forwardAuth path {path}, the file provider's is {want_path}"
                    ));
                }
                match service_target(docs, host, port) {
                    Err(e) => out.push(format!("forwardAuth address {address}: {e}")),
                    Ok((_, dep, n)) => {
                        if deployment_of(docs, SIDECAR_IMAGE) != Some(dep) {
                            out.push(format!(
                                "forwardAuth address {address}: not the sidecar's pods"
                            ));
                        } else if n != u64::from(listen_port) {
                            out.push(format!(
                                "forwardAuth address {address} reaches container port {n}, the sidecar listens on {listen_port}"
                            ));
                        }
                    }
                }
            }
        }
        let headers: Vec<String> = fa["authResponseHeaders"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|h| h.as_str().map(str::to_owned))
            .collect();
        if headers != emitted {
            out.push(format!(
                "authResponseHeaders {headers:?}, the sidecar emits {emitted:?}"
            ));
        }
    }
    out
}

/// Each file-provider middleware has a Middleware of the same name and spec (the
/// forwardAuth address aside: it names the Service), and there are no others.
pub fn check_middlewares(docs: &[Value], dynamic: &Value) -> Vec<String> {
    let mut out = Vec::new();
    let empty = serde_json::Map::new();
    let file = dynamic
        .pointer("/http/middlewares")
        .and_then(Value::as_object)
        .unwrap_or(&empty);
    let crds = of_kind(docs, "Middleware");
    for (name, want) in file {
        let Some(m) = crds.iter().find(|m| m["metadata"]["name"] == *name) else {
            out.push(format!("no Middleware {name}"));
            continue;
        };
        let (mut want, mut got) = (want.clone(), m["spec"].clone());
        for v in [&mut want, &mut got] {
            if let Some(fa) = v.get_mut("forwardAuth").and_then(Value::as_object_mut) {
                fa.remove("address");
            }
        }
        if want != got {
            out.push(format!(
                "Middleware {name}: {got} differs from the file provider's {want}"
            ));
        }
    }
    for m in crds {
        let name = m["metadata"]["name"].as_str().unwrap_or("");
        if !file.contains_key(name) {
            out.push(format!("Middleware {name} is not in the file provider"));
        }
    }
    out
}

/// A route as the comparison sees it: rule, priority, entry points, middlewares, and the
/// image of the pods it reaches.
type Route = (String, i64, Vec<String>, Vec<String>, String);

/// The IngressRoutes' routes equal the file provider's routers (rule, priority, entry
/// points, middleware chain), and each reaches the pods its file service names (omni2's,
/// or the sidecar's for `http://auth-sidecar:...`) through its Service.
pub fn check_routes(docs: &[Value], dynamic: &Value) -> Vec<String> {
    let mut out = Vec::new();
    let strs = |v: &Value| -> Vec<String> {
        v.as_array()
            .into_iter()
            .flatten()
            .filter_map(|s| s.as_str().map(str::to_owned))
            .collect()
    };
    let mut want: Vec<Route> = Vec::new();
    let empty = serde_json::Map::new();
    let services = dynamic
        .pointer("/http/services")
        .and_then(Value::as_object)
        .unwrap_or(&empty);
    for (name, r) in dynamic
        .pointer("/http/routers")
        .and_then(Value::as_object)
        .unwrap_or(&empty)
    {
        let svc = r["service"].as_str().unwrap_or("");
        if !services.contains_key(svc) {
            out.push(format!("router {name}: service {svc} not in the file"));
        }
        // The pods a file service reaches, by its URL's host (`http://auth-sidecar:8700`).
        let url = services
            .get(svc)
            .and_then(|v| v.pointer("/loadBalancer/servers/0/url"))
            .and_then(Value::as_str)
            .unwrap_or("");
        let image = if url
            .strip_prefix("http://")
            .is_some_and(|rest| rest.starts_with("auth-sidecar:"))
        {
            SIDECAR_IMAGE
        } else {
            OMNI2_IMAGE
        };
        want.push((
            r["rule"].as_str().unwrap_or("").to_owned(),
            r["priority"].as_i64().unwrap_or(0),
            strs(&r["entryPoints"]),
            strs(&r["middlewares"]),
            image.into(),
        ));
    }
    let mut got: Vec<Route> = Vec::new();
    for ir in of_kind(docs, "IngressRoute") {
        let ns = ir["metadata"]["namespace"].as_str().unwrap_or("");
        for route in ir["spec"]["routes"].as_array().into_iter().flatten() {
            let middlewares = route["middlewares"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|m| m["name"].as_str().map(str::to_owned))
                .collect();
            let mut image = String::new();
            for s in route["services"].as_array().into_iter().flatten() {
                let host = format!(
                    "{}.{ns}.svc.cluster.local",
                    s["name"].as_str().unwrap_or("")
                );
                match service_target(docs, &host, s["port"].as_u64().unwrap_or(0)) {
                    Ok((_, dep, _)) => {
                        image = dep
                            .pointer("/spec/template/spec/containers/0/image")
                            .and_then(Value::as_str)
                            .and_then(|i| i.split(':').next())
                            .unwrap_or("")
                            .to_owned();
                    }
                    Err(e) => out.push(format!("route {}: {e}", route["match"])),
                }
            }
            got.push((
                route["match"].as_str().unwrap_or("").to_owned(),
                route["priority"].as_i64().unwrap_or(0),
                strs(&ir["spec"]["entryPoints"]),
                middlewares,
                image,
            ));
        }
    }
    want.sort();
    got.sort();
    if want != got {
        out.push(format!(
            "IngressRoute routes differ from the file provider's routers:\n  want {want:?}\n  got  {got:?}"
        ));
    }
    out
}

/// A NetworkPolicy selects omni2's pods, admits Ingress only from Traefik's pods (and
/// Prometheus), and only on omni2's ports.
pub fn check_network_policy(docs: &[Value]) -> Vec<String> {
    let Some(omni2) = deployment_of(docs, OMNI2_IMAGE) else {
        return vec!["no omni2 Deployment".into()];
    };
    let labels = &omni2["spec"]["template"]["metadata"]["labels"];
    let policies: Vec<&Value> = of_kind(docs, "NetworkPolicy")
        .into_iter()
        .filter(|p| selects(&p["spec"]["podSelector"]["matchLabels"], labels))
        .collect();
    if policies.is_empty() {
        return vec![format!("no NetworkPolicy selects omni2's pods {labels}")];
    }
    let mut out = Vec::new();
    for p in policies {
        let name = p["metadata"]["name"].as_str().unwrap_or("");
        if !p["spec"]["policyTypes"]
            .as_array()
            .is_some_and(|t| t.contains(&json!("Ingress")))
        {
            out.push(format!("{name}: policyTypes lacks Ingress"));
        }
        let rules = p["spec"]["ingress"].as_array().cloned().unwrap_or_default();
        let mut from_traefik = false;
        for rule in &rules {
            let peers = rule["from"].as_array().cloned().unwrap_or_default();
            if peers.is_empty() {
                out.push(format!("{name}: an ingress rule admits every source"));
            }
            for peer in &peers {
                let app = peer.pointer("/podSelector/matchLabels/app.kubernetes.io~1name");
                if peer.get("ipBlock").is_some() || peer.get("namespaceSelector").is_none() {
                    out.push(format!(
                        "{name}: peer {peer} is not a pod in a named namespace"
                    ));
                }
                match app.and_then(Value::as_str) {
                    Some("traefik") => from_traefik = true,
                    Some("prometheus") => {}
                    _ => out.push(format!(
                        "{name}: peer {peer} is neither Traefik nor Prometheus"
                    )),
                }
            }
            let ports = rule["ports"].as_array().cloned().unwrap_or_default();
            if ports.is_empty() {
                out.push(format!("{name}: an ingress rule admits every port"));
            }
            for port in ports {
                if container_port(omni2, &port["port"]).is_none() {
                    out.push(format!("{name}: port {} is not omni2's", port["port"]));
                }
            }
        }
        if !from_traefik {
            out.push(format!("{name}: does not admit Traefik's pods"));
        }
    }
    out
}

/// What the pods of every Deployment must have: non-root, read-only root, no privilege
/// escalation, every capability dropped, seccomp RuntimeDefault, resources, both probes,
/// ConfigMaps mounted as directories (a `subPath` mount never sees the kubelet's swap).
pub fn check_pod_security(docs: &[Value]) -> Vec<String> {
    let mut out = Vec::new();
    for d in of_kind(docs, "Deployment") {
        let name = d["metadata"]["name"].as_str().unwrap_or("");
        let pod = &d["spec"]["template"]["spec"];
        if pod.pointer("/securityContext/runAsNonRoot") != Some(&json!(true)) {
            out.push(format!("{name}: runAsNonRoot is not true"));
        }
        if pod.pointer("/securityContext/seccompProfile/type") != Some(&json!("RuntimeDefault")) {
            out.push(format!("{name}: seccompProfile is not RuntimeDefault"));
        }
        for c in pod["containers"].as_array().into_iter().flatten() {
            let sc = &c["securityContext"];
            if sc["readOnlyRootFilesystem"] != true {
                out.push(format!("{name}: readOnlyRootFilesystem is not true"));
            }
            if sc["allowPrivilegeEscalation"] != false {
                out.push(format!("{name}: allowPrivilegeEscalation is not false"));
            }
            if sc.pointer("/capabilities/drop") != Some(&json!(["ALL"])) {
                out.push(format!("{name}: capabilities.drop is not [ALL]"));
            }
            for k in ["requests", "limits"] {
                if c["resources"].get(k).is_none() {
                    out.push(format!("{name}: no resources.{k}"));
                }
            }
            for k in ["livenessProbe", "readinessProbe"] {
                if c.get(k).is_none() {
                    out.push(format!("{name}: no {k}"));
                }
            }
            for m in c["volumeMounts"].as_array().into_iter().flatten() {
                if m.get("subPath").is_some() {
                    out.push(format!("{name}: volume {} mounted with subPath", m["name"]));
                }
            }
        }
    }
    out
}

/// One HTTP probe: `(deployment, probe kind, path, container port)`.
pub type Probe = (String, String, String, u64);

/// Every HTTP probe of every Deployment running `image`.
pub fn http_probes(docs: &[Value], image: &str) -> Vec<Probe> {
    let mut out = Vec::new();
    if let Some(d) = deployment_of(docs, image) {
        let c = &d["spec"]["template"]["spec"]["containers"][0];
        for kind in ["livenessProbe", "readinessProbe"] {
            let get = &c[kind]["httpGet"];
            out.push((
                d["metadata"]["name"].as_str().unwrap_or("").to_owned(),
                kind.to_owned(),
                get["path"].as_str().unwrap_or("").to_owned(),
                container_port(d, &get["port"]).unwrap_or(0),
            ));
        }
    }
    out
}

/// The `--listen` argument of the omni2 Deployment's container.
pub fn omni2_listen_arg(docs: &[Value]) -> Option<SocketAddr> {
    let args = deployment_of(docs, OMNI2_IMAGE)?
        .pointer("/spec/template/spec/containers/0/args")?
        .as_array()?;
    let i = args.iter().position(|a| a == "--listen")?;
    args.get(i + 1)?.as_str()?.parse().ok()
}

/// The ConfigMap data of `name`, by key.
pub fn config_map_data(docs: &[Value], name: &str) -> BTreeMap<String, String> {
    named(docs, "ConfigMap", name)
        .and_then(|c| c["data"].as_object())
        .into_iter()
        .flatten()
        .map(|(k, v)| (k.clone(), v.as_str().unwrap_or("").to_owned()))
        .collect()
}
