//! `deploy/kubernetes/`: every rendered manifest (base, production, production + Redis)
//! against the Kubernetes schemas (`kubernetes-validate`) and the vendored CRDs, the
//! cross-checks against the shipped Traefik files and the binaries themselves, each shown
//! to fail on a broken copy, and the sidecar's hot reload through a kubelet-style
//! ConfigMap symlink swap.

use std::path::Path;
use std::time::Duration;

use e2e::deploy::Shipped;
use e2e::http::{Request, Target, send};
use e2e::kubernetes::*;
use e2e::process::{eventually, repo_root};
use e2e::stack::{Omni2, Sidecar, compile_sidecar_config, identity_header_names};
use serde_json::{Value, json};

/// A named way to break a copy of one document (or of all of them).
type Break = (&'static str, fn(&mut Value));
type BreakAll = (&'static str, fn(&mut [Value]));
/// `(kind, name, how)`.
type BreakDoc = (&'static str, &'static str, fn(&mut Value));

const RENDERINGS: [&str; 3] = ["base", "overlays/production", "overlays/production-redis"];

fn renderings() -> Vec<(&'static str, Vec<Value>)> {
    RENDERINGS
        .iter()
        .map(|r| (*r, render(&manifests_dir(r))))
        .collect()
}

fn tempdir() -> tempfile::TempDir {
    tempfile::tempdir().expect("tempdir")
}

/// A mutable handle on the first document of `kind` named `name`.
fn doc<'a>(docs: &'a mut [Value], kind: &str, name: &str) -> &'a mut Value {
    docs.iter_mut()
        .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} {name}"))
}

#[test]
fn every_rendering_has_the_resources_of_the_issue() {
    for (name, docs) in renderings() {
        for kind in [
            "Namespace",
            "Deployment",
            "Service",
            "ConfigMap",
            "Secret",
            "PodDisruptionBudget",
            "HorizontalPodAutoscaler",
            "ServiceMonitor",
            "NetworkPolicy",
            "Middleware",
            "IngressRoute",
        ] {
            assert!(!of_kind(&docs, kind).is_empty(), "{name}: no {kind}");
        }
        for image in [SIDECAR_IMAGE, OMNI2_IMAGE] {
            let dep = deployment_of(&docs, image).unwrap_or_else(|| panic!("{name}: {image}"));
            let dname = &dep["metadata"]["name"];
            let labels = &dep["spec"]["template"]["metadata"]["labels"];
            let pdb = of_kind(&docs, "PodDisruptionBudget")
                .into_iter()
                .find(|p| selects(&p["spec"]["selector"]["matchLabels"], labels))
                .unwrap_or_else(|| panic!("{name}: no PDB for {dname}"));
            assert_eq!(pdb["spec"]["minAvailable"], 1, "{name}: {dname}");
            let hpa = of_kind(&docs, "HorizontalPodAutoscaler")
                .into_iter()
                .find(|h| h["spec"]["scaleTargetRef"]["name"] == *dname)
                .unwrap_or_else(|| panic!("{name}: no HPA for {dname}"));
            assert!(
                hpa["spec"]["minReplicas"].as_u64() >= Some(2),
                "{name}: {hpa}"
            );
            assert!(
                of_kind(&docs, "ServiceMonitor")
                    .iter()
                    .any(|m| selects(&m["spec"]["selector"]["matchLabels"], labels)),
                "{name}: no ServiceMonitor selects {dname}'s Service labels"
            );
        }
        for d in &docs {
            if d["kind"] == "Secret" {
                for (k, v) in d["stringData"].as_object().into_iter().flatten() {
                    assert!(
                        v.as_str().is_some_and(|v| v.starts_with("PLACEHOLDER")),
                        "{name}: Secret key {k} must be a clearly fake placeholder"
                    );
                }
            }
        }
    }
    let redis = render(&manifests_dir("overlays/production-redis"));
    assert!(deployment_of(&redis, "redis").is_some());
    let plain = render(&manifests_dir("overlays/production"));
    assert!(deployment_of(&plain, "redis").is_none(), "Redis is opt-in");
    let sidecar = deployment_of(&redis, SIDECAR_IMAGE).expect("sidecar");
    let env = sidecar["spec"]["template"]["spec"]["containers"][0]["env"].clone();
    assert!(
        env.as_array()
            .is_some_and(|e| e.iter().any(|v| v["name"] == "REDIS_URL")),
        "the Redis component gives the sidecar REDIS_URL: {env}"
    );
    // The production patches merged, not replaced: the secrets' env survives.
    assert_eq!(
        deployment_of(&plain, SIDECAR_IMAGE).expect("sidecar")["spec"]["replicas"],
        3
    );
    assert!(env.as_array().is_some_and(|e| e.len() == 3), "{env}");
}

#[test]
fn every_manifest_validates_against_the_kubernetes_schemas() {
    let dir = tempdir();
    for (name, docs) in renderings() {
        if let Err(e) = kubernetes_validate(&docs, dir.path()) {
            panic!("{name}: {e}");
        }
    }
    // Broken copies: an unknown field (strict mode) and a wrong type.
    let mut docs = render(&manifests_dir("base"));
    doc(&mut docs, "Deployment", "omni2")["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] =
        json!({});
    let e = kubernetes_validate(&docs, dir.path()).expect_err("misspelt field");
    assert!(e.contains("readinesProbe"), "{e}");
    let mut docs = render(&manifests_dir("base"));
    doc(&mut docs, "PodDisruptionBudget", "auth-sidecar")["spec"]["selector"] = json!("all");
    kubernetes_validate(&docs, dir.path()).expect_err("selector of the wrong type");
}

#[test]
fn crd_manifests_validate_against_the_vendored_crds() {
    for (name, docs) in renderings() {
        let errors = crd_errors(&docs);
        assert!(errors.is_empty(), "{name}: {errors:#?}");
    }
    let base = render(&manifests_dir("base"));
    let broken: [BreakDoc; 4] = [
        ("Middleware", "auth", |d| {
            d["spec"]["forwardAuth"]["adress"] = json!("http://x/verify");
        }),
        ("Middleware", "ratelimit", |d| {
            d["spec"]["rateLimit"]["burst"] = json!("a hundred");
        }),
        ("IngressRoute", "omni2", |d| {
            d["spec"]["routes"][0]["priority"] = json!("high");
        }),
        ("ServiceMonitor", "omni2", |d| {
            d["spec"]["endpoints"][0]["interval"] = json!(["30s"]);
        }),
    ];
    for (kind, name, breaks) in broken {
        let mut docs = base.clone();
        breaks(doc(&mut docs, kind, name));
        assert!(
            !crd_errors(&docs).is_empty(),
            "{kind} {name}: broken copy passed"
        );
    }
    let mut docs = base.clone();
    docs.push(json!({"apiVersion": "traefik.io/v1alpha1", "kind": "TLSOption", "metadata": {"name": "x"}}));
    assert!(
        !crd_errors(&docs).is_empty(),
        "a CRD kind without a schema passed"
    );
}

#[test]
fn pods_are_locked_down() {
    for (name, docs) in renderings() {
        let problems = check_pod_security(&docs);
        assert!(problems.is_empty(), "{name}: {problems:#?}");
    }
    let base = render(&manifests_dir("base"));
    let broken: [Break; 4] = [
        ("readOnlyRootFilesystem", |d| {
            d["spec"]["template"]["spec"]["containers"][0]["securityContext"]["readOnlyRootFilesystem"] =
                json!(false);
        }),
        ("runAsNonRoot", |d| {
            d["spec"]["template"]["spec"]["securityContext"]
                .as_object_mut()
                .expect("securityContext")
                .remove("runAsNonRoot");
        }),
        ("capabilities", |d| {
            d["spec"]["template"]["spec"]["containers"][0]["securityContext"]["capabilities"] =
                json!({"drop": ["NET_RAW"]});
        }),
        ("subPath", |d| {
            d["spec"]["template"]["spec"]["containers"][0]["volumeMounts"][0]["subPath"] =
                json!("auth-sidecar.yaml");
        }),
    ];
    for (what, breaks) in broken {
        let mut docs = base.clone();
        breaks(doc(&mut docs, "Deployment", "auth-sidecar"));
        let problems = check_pod_security(&docs);
        assert!(
            problems.iter().any(|p| p.contains(what)),
            "{what}: {problems:?}"
        );
    }
}

#[test]
fn config_maps_are_the_shipped_configs() {
    for (name, docs) in renderings() {
        for (cm, file) in [
            ("auth-sidecar-config", "auth-sidecar.yaml"),
            ("omni2-config", "omni2.yaml"),
        ] {
            let data = config_map_data(&docs, cm);
            let shipped = std::fs::read_to_string(repo_root().join("compose/config").join(file))
                .expect("shipped config");
            assert_eq!(
                data.get(file),
                Some(&shipped),
                "{name}: {cm} != compose/config/{file}"
            );
        }
    }
}

/// The sidecar's own view of its ConfigMap: `(listen port, emitted identity headers)`.
fn sidecar_facts(docs: &[Value], dir: &Path) -> (u16, Option<u16>, Vec<String>) {
    let data = config_map_data(docs, "auth-sidecar-config");
    let path = dir.join("auth-sidecar.yaml");
    std::fs::write(&path, &data["auth-sidecar.yaml"]).expect("write config");
    let rt = compile_sidecar_config(&path);
    (
        rt.listen.port(),
        rt.admin_listen.map(|a| a.port()),
        identity_header_names(&rt),
    )
}

fn shipped_forward_auth_address() -> String {
    Shipped::load().omni2_dynamic()["http"]["middlewares"]["auth"]["forwardAuth"]["address"]
        .as_str()
        .expect("the shipped forwardAuth address")
        .to_owned()
}

#[test]
fn forward_auth_names_the_sidecar_and_its_headers() {
    let dir = tempdir();
    let shipped = shipped_forward_auth_address();
    for (name, docs) in renderings() {
        let (listen, _, emitted) = sidecar_facts(&docs, dir.path());
        assert!(emitted.len() >= 7, "{emitted:?}");
        let problems = check_forward_auth(&docs, &shipped, listen, &emitted);
        assert!(problems.is_empty(), "{name}: {problems:#?}");
    }
    let base = render(&manifests_dir("base"));
    let (listen, _, emitted) = sidecar_facts(&base, dir.path());
    let broken: [BreakAll; 5] = [
        ("no Service", |d| {
            doc(d, "Middleware", "auth")["spec"]["forwardAuth"]["address"] =
                json!("http://auth-sidcar.omni2.svc.cluster.local:8700/verify");
        }),
        ("no port", |d| {
            doc(d, "Middleware", "auth")["spec"]["forwardAuth"]["address"] =
                json!("http://auth-sidecar.omni2.svc.cluster.local:8000/verify");
        }),
        ("reaches container port 8701", |d| {
            doc(d, "Middleware", "auth")["spec"]["forwardAuth"]["address"] =
                json!("http://auth-sidecar.omni2.svc.cluster.local:8701/verify");
        }),
        ("authResponseHeaders", |d| {
            doc(d, "Middleware", "auth")["spec"]["forwardAuth"]["authResponseHeaders"]
                .as_array_mut()
                .expect("list")
                .retain(|h| h != "X-Auth-Signature");
        }),
        ("not the sidecar's pods", |d| {
            doc(d, "Middleware", "auth")["spec"]["forwardAuth"]["address"] =
                json!("http://omni2.omni2.svc.cluster.local:8000/verify");
        }),
    ];
    for (what, breaks) in broken {
        let mut docs = base.clone();
        breaks(&mut docs);
        let problems = check_forward_auth(&docs, &shipped, listen, &emitted);
        assert!(
            problems.iter().any(|p| p.contains(what)),
            "{what}: {problems:?}"
        );
    }
}

#[test]
fn middlewares_and_routes_equal_the_file_provider() {
    let shipped = Shipped::load();
    let merged = shipped.merged_dynamic();
    let dynamic = &merged;
    for (name, docs) in renderings() {
        let problems = check_middlewares(&docs, dynamic);
        assert!(problems.is_empty(), "{name}: {problems:#?}");
        let problems = check_routes(&docs, dynamic);
        assert!(problems.is_empty(), "{name}: {problems:#?}");
    }
    let base = render(&manifests_dir("base"));
    let broken_routes: [BreakAll; 4] = [
        ("priority", |d| {
            doc(d, "IngressRoute", "omni2")["spec"]["routes"][1]["priority"] = json!(99);
        }),
        ("rule", |d| {
            doc(d, "IngressRoute", "omni2")["spec"]["routes"][0]["match"] =
                json!("PathPrefix(`/ws`)");
        }),
        ("middleware chain", |d| {
            doc(d, "IngressRoute", "omni2")["spec"]["routes"][3]["middlewares"]
                .as_array_mut()
                .expect("list")
                .retain(|m| m["name"] != "auth");
        }),
        ("service", |d| {
            doc(d, "IngressRoute", "omni2")["spec"]["routes"][2]["services"][0]["name"] =
                json!("auth-sidecar");
            doc(d, "IngressRoute", "omni2")["spec"]["routes"][2]["services"][0]["port"] =
                json!(8700);
        }),
    ];
    for (what, breaks) in broken_routes {
        let mut docs = base.clone();
        breaks(&mut docs);
        assert!(
            !check_routes(&docs, dynamic).is_empty(),
            "{what}: broken copy passed"
        );
    }
    let mut docs = base.clone();
    doc(&mut docs, "Middleware", "ratelimit")["spec"]["rateLimit"]["average"] = json!(500);
    assert!(
        !check_middlewares(&docs, dynamic).is_empty(),
        "changed rate passed"
    );
    let mut docs = base.clone();
    docs.retain(|d| !(d["kind"] == "Middleware" && d["metadata"]["name"] == "strip-identity"));
    assert!(
        !check_middlewares(&docs, dynamic).is_empty(),
        "missing middleware passed"
    );
}

#[test]
fn network_policy_admits_only_traefik_to_omni2() {
    for (name, docs) in renderings() {
        let problems = check_network_policy(&docs);
        assert!(problems.is_empty(), "{name}: {problems:#?}");
    }
    let base = render(&manifests_dir("base"));
    let broken: [Break; 4] = [
        ("no NetworkPolicy selects", |p| {
            p["spec"]["podSelector"]["matchLabels"]["app.kubernetes.io/name"] = json!("omni-2");
        }),
        ("neither Traefik nor Prometheus", |p| {
            p["spec"]["ingress"][0]["from"][0]["podSelector"]["matchLabels"]["app.kubernetes.io/name"] =
                json!("anything");
        }),
        ("admits every source", |p| {
            p["spec"]["ingress"][0]["from"] = json!([]);
        }),
        ("is not omni2's", |p| {
            p["spec"]["ingress"][0]["ports"][0]["port"] = json!("admin");
        }),
    ];
    for (what, breaks) in broken {
        let mut docs = base.clone();
        breaks(doc(&mut docs, "NetworkPolicy", "omni2-ingress"));
        let problems = check_network_policy(&docs);
        assert!(
            problems.iter().any(|p| p.contains(what)),
            "{what}: {problems:?}"
        );
    }
}

/// GETs every probe on the listener its container port maps to; problems for any that is
/// not 200 or maps to no listener.
async fn probe_problems(
    probes: &[Probe],
    listener_of: &dyn Fn(u64) -> Option<Target>,
) -> Vec<String> {
    let mut out = Vec::new();
    for (dep, kind, path, port) in probes {
        let Some(target) = listener_of(*port) else {
            out.push(format!(
                "{dep} {kind}: port {port} is no listener of the binary"
            ));
            continue;
        };
        match send(&target, &Request::get(path)).await {
            Ok(r) if r.status == 200 => {}
            Ok(r) => out.push(format!(
                "{dep} {kind}: GET {path} on port {port}: {}",
                r.status
            )),
            Err(e) => out.push(format!("{dep} {kind}: GET {path} on port {port}: {e}")),
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probes_hit_real_endpoints() {
    let dir = tempdir();
    let docs = render(&manifests_dir("overlays/production"));
    // The release binaries with the ConfigMaps' configs, on free ports that stand for the
    // container ports.
    let (listen, admin, _) = sidecar_facts(&docs, dir.path());
    let admin = admin.expect("the ConfigMap config has admin_listen");
    let sidecar = Sidecar::start_with(dir.path(), &dir.path().join("auth-sidecar.yaml")).await;
    let omni2_port = u64::from(omni2_listen_arg(&docs).expect("omni2 --listen").port());
    let omni2 = Omni2::start_tcp(dir.path(), "http://127.0.0.1:9/mcp").await;

    let sidecar_listener = |port: u64| {
        (port == u64::from(listen))
            .then_some(Target::Tcp(sidecar.addr))
            .or((port == u64::from(admin)).then_some(Target::Tcp(sidecar.admin)))
    };
    let omni2_listener = |port: u64| (port == omni2_port).then(|| omni2.target());

    let sidecar_probes = http_probes(&docs, SIDECAR_IMAGE);
    let omni2_probes = http_probes(&docs, OMNI2_IMAGE);
    assert_eq!((sidecar_probes.len(), omni2_probes.len()), (2, 2));
    let problems = probe_problems(&sidecar_probes, &sidecar_listener).await;
    assert!(problems.is_empty(), "{problems:#?}");
    let problems = probe_problems(&omni2_probes, &omni2_listener).await;
    assert!(problems.is_empty(), "{problems:#?}");

    // Broken copies: a wrong path, the other listener, a port nothing listens on.
    let broken: [Break; 3] = [
        ("GET /health on port 8701", |d| {
            d["spec"]["template"]["spec"]["containers"][0]["livenessProbe"]["httpGet"]["path"] =
                json!("/health");
        }),
        ("GET /readyz on port 8700", |d| {
            d["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["httpGet"]["port"] =
                json!("http");
        }),
        ("port 9000 is no listener", |d| {
            d["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["httpGet"]["port"] =
                json!(9000);
        }),
    ];
    for (what, breaks) in broken {
        let mut copy = docs.clone();
        breaks(doc(&mut copy, "Deployment", "auth-sidecar"));
        let problems = probe_problems(&http_probes(&copy, SIDECAR_IMAGE), &sidecar_listener).await;
        assert!(
            problems.iter().any(|p| p.contains(what)),
            "{what}: {problems:?}"
        );
    }
    let mut copy = docs.clone();
    doc(&mut copy, "Deployment", "omni2")["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]
        ["httpGet"]["path"] = json!("/readyz");
    let problems = probe_problems(&http_probes(&copy, OMNI2_IMAGE), &omni2_listener).await;
    assert!(
        problems.iter().any(|p| p.contains("/readyz")),
        "{problems:?}"
    );
}

/// `GET /verify` for an anonymous `GET path`.
async fn anonymous_decision(sidecar: &Sidecar, path: &str) -> Result<u16, String> {
    let r = send(
        &Target::Tcp(sidecar.addr),
        &Request::get("/verify")
            .header("X-Forwarded-Method", "GET")
            .header("X-Forwarded-Proto", "http")
            .header("X-Forwarded-Host", "omni2.example.com")
            .header("X-Forwarded-Uri", path),
    )
    .await?;
    Ok(r.status.as_u16())
}

/// The kubelet's ConfigMap volume: `..<timestamp>/` data dirs, `..data` pointing at the
/// current one, and each key a symlink through `..data`. An update writes a new data dir,
/// points `..data_tmp` at it and renames that over `..data` (one atomic rename), then
/// removes the old dir.
struct ConfigMapVolume {
    dir: std::path::PathBuf,
    generation: u32,
}

impl ConfigMapVolume {
    fn new(dir: &Path, key: &str, content: &str) -> ConfigMapVolume {
        std::fs::create_dir_all(dir).expect("volume dir");
        let mut v = ConfigMapVolume {
            dir: dir.to_owned(),
            generation: 0,
        };
        v.update(key, content);
        std::os::unix::fs::symlink(format!("..data/{key}"), dir.join(key)).expect("key symlink");
        v
    }

    fn update(&mut self, key: &str, content: &str) {
        self.generation += 1;
        let old = format!("..2026_12_02_00_00_00.{:09}", self.generation - 1);
        let new = format!("..2026_12_02_00_00_00.{:09}", self.generation);
        std::fs::create_dir(self.dir.join(&new)).expect("data dir");
        std::fs::write(self.dir.join(&new).join(key), content).expect("data file");
        let tmp = self.dir.join("..data_tmp");
        std::os::unix::fs::symlink(&new, &tmp).expect("..data_tmp");
        std::fs::rename(&tmp, self.dir.join("..data")).expect("swap ..data");
        if self.generation > 1 {
            std::fs::remove_dir_all(self.dir.join(old)).expect("remove old data dir");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_map_symlink_swap_is_hot_reloaded() {
    let dir = tempdir();
    let key = "auth-sidecar.yaml";
    let shipped = std::fs::read_to_string(repo_root().join("compose/config").join(key))
        .expect("shipped config");
    let mut volume = ConfigMapVolume::new(&dir.path().join("etc-auth-sidecar"), key, &shipped);
    let sidecar = Sidecar::start_with(dir.path(), &volume.dir.join(key)).await;
    let path = "/api/v1/k8s-swap";
    assert_eq!(anonymous_decision(&sidecar, path).await, Ok(401));

    // The updated ConfigMap makes the path public (a rule before `api`).
    let updated = shipped.replace(
        "rules:\n",
        "rules:\n  - name: k8s-swap\n    path: /api/v1/k8s-swap\n    action: public\n",
    );
    assert_ne!(updated, shipped);
    volume.update(key, &updated);
    eventually(
        "the swapped ConfigMap is served",
        Duration::from_secs(20),
        || {
            let sidecar = &sidecar;
            async move {
                match anonymous_decision(sidecar, path).await? {
                    200 => Ok(()),
                    s => Err(format!("still {s}")),
                }
            }
        },
    )
    .await;
    // And a second swap back (the watch survives the first swap's removed directory).
    volume.update(key, &shipped);
    eventually("the second swap is served", Duration::from_secs(20), || {
        let sidecar = &sidecar;
        async move {
            match anonymous_decision(sidecar, path).await? {
                401 => Ok(()),
                s => Err(format!("still {s}")),
            }
        }
    })
    .await;
    assert!(
        sidecar.log().matches("Configuration reloaded.").count() >= 2,
        "{}",
        sidecar.log()
    );
}
