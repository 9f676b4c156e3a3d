//! Several sidecar and omni2 replicas behind one real Traefik, the way a Kubernetes Service
//! spreads them: each sidecar replica on its own loopback address (127.0.0.x, like a pod IP)
//! with the same ports, so Traefik's service health check can name the admin port once.
//!
//! [`transform_replicas`] is the one change on top of [`crate::traefik::transform`]: omni2's
//! service lists every omni2 replica (its shipped `healthCheck` kept), and forwardAuth calls
//! a load-balancing entry point (`auth-lb`) whose `auth-sidecar` service lists every sidecar
//! replica with a `healthCheck` on `/readyz` (the Service + readiness probe of
//! deploy/kubernetes). `tests/e2e/replicas.rs` asserts it changes exactly that.
//!
//! Adding Redis (as `tests/e2e/replicas.rs`'s revocation test does): start a
//! `test_support::RedisServer`, then pass [`ReplicaOptions::sidecar_config`] =
//! [`shipped_sidecar_config_plus`] with the sidecar's `redis:` block reading `${REDIS_URL}`
//! (and `store: redis` on a rule's `rate_limit` for shared limits), and
//! [`ReplicaOptions::sidecar_env`] = `[("REDIS_URL", redis.url())]`: every replica (and
//! [`Replicas::restart_sidecar`]) gets both. `RedisServer::kill`/`restart` is the outage;
//! the replicas stay up throughout.

use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{Value, json};

use crate::http::{Request, Target, send};
use crate::process::{eventually, free_addr};
use crate::stack::{McpServer, Omni2, Sidecar, shipped_sidecar_config};
use crate::traefik::{Traefik, Wiring, shipped, transform};

/// The Traefik service name of the sidecar replicas, and the router that serves it.
pub const SIDECAR_SERVICE: &str = "auth-sidecar";
/// The entry point forwardAuth calls (Traefik itself, balancing over the sidecars).
pub const AUTH_LB_ENTRY_POINT: &str = "auth-lb";
/// The dynamic file the sidecar service goes into.
pub const AUTH_LB_FILE: &str = "auth-lb.yml";
/// The sidecar service's health check: the readiness probe of deploy/kubernetes, faster so
/// the tests see a dead replica leave within seconds.
pub const SIDECAR_HEALTH_INTERVAL: &str = "1s";
pub const SIDECAR_HEALTH_TIMEOUT: &str = "1s";

/// Where the replicas listen.
#[derive(Clone, Debug)]
pub struct ReplicaWiring {
    /// The single-backend wiring [`transform`] takes (its `sidecar` is the `auth-lb` entry
    /// point, its `backend` the first omni2).
    pub base: Wiring,
    /// The `auth-lb` entry point.
    pub auth_lb: SocketAddr,
    /// Each sidecar replica's `/verify` listener (127.0.0.x, same port).
    pub sidecars: Vec<SocketAddr>,
    /// The admin port every sidecar replica uses (health check `port`).
    pub sidecar_admin_port: u16,
    /// Each omni2 replica.
    pub omni2s: Vec<SocketAddr>,
}

/// The shipped config changed for replicas: [`transform`], then omni2's servers are every
/// replica, and the `auth-lb` entry point with the `auth-sidecar` service (one server per
/// sidecar replica, health-checked on `/readyz`) that forwardAuth calls.
pub fn transform_replicas(
    static_config: &Value,
    dynamic: &[(String, Value)],
    w: &ReplicaWiring,
) -> (Value, Vec<(String, Value)>) {
    let (mut st, mut dynamic) = transform(static_config, dynamic, &w.base);
    st["entryPoints"][AUTH_LB_ENTRY_POINT] = json!({
        "address": w.auth_lb.to_string(),
        // forwardAuth's X-Forwarded-Method/-Uri come from Traefik itself: keep them.
        "forwardedHeaders": { "trustedIPs": ["127.0.0.1/32"] },
    });
    let omni2_servers: Vec<Value> = w
        .omni2s
        .iter()
        .map(|a| json!({ "url": format!("http://{a}") }))
        .collect();
    for (_, doc) in &mut dynamic {
        if let Some(services) = doc
            .pointer_mut("/http/services")
            .and_then(Value::as_object_mut)
        {
            // The sidecar's own services (its metadata route) stay on the balancing entry
            // point the base transform gave them.
            let sidecar = json!(format!("http://{}", w.base.sidecar));
            for svc in services.values_mut() {
                if let Some(lb) = svc.get_mut("loadBalancer")
                    && lb.pointer("/servers/0/url") != Some(&sidecar)
                {
                    lb["servers"] = json!(omni2_servers);
                }
            }
        }
    }
    let sidecar_servers: Vec<Value> = w
        .sidecars
        .iter()
        .map(|a| json!({ "url": format!("http://{a}") }))
        .collect();
    dynamic.push((
        AUTH_LB_FILE.into(),
        json!({ "http": {
            "routers": { SIDECAR_SERVICE: {
                "rule": "PathPrefix(`/`)",
                "entryPoints": [AUTH_LB_ENTRY_POINT],
                "service": SIDECAR_SERVICE,
            }},
            "services": { SIDECAR_SERVICE: { "loadBalancer": {
                "servers": sidecar_servers,
                "healthCheck": {
                    "path": "/readyz",
                    "port": w.sidecar_admin_port,
                    "interval": SIDECAR_HEALTH_INTERVAL,
                    "timeout": SIDECAR_HEALTH_TIMEOUT,
                },
            }}},
        }}),
    ));
    (st, dynamic)
}

/// How many replicas, and what every sidecar replica gets besides the shipped setup.
#[derive(Clone, Debug, Default)]
pub struct ReplicaOptions {
    pub sidecars: usize,
    pub omni2s: usize,
    /// The sidecar config text (default: the shipped one). It must read the same variables.
    pub sidecar_config: Option<String>,
    /// Extra environment of every sidecar replica (e.g. `REDIS_URL`).
    pub sidecar_env: Vec<(String, String)>,
}

/// The shipped sidecar config with `snippet` (top-level YAML keys) appended.
pub fn shipped_sidecar_config_plus(snippet: &str) -> String {
    let text = std::fs::read_to_string(shipped_sidecar_config()).expect("shipped config");
    format!("{text}\n{snippet}\n")
}

/// The shipped sidecar config with `rules` (YAML list items, two-space indented) placed
/// first in its `rules:` list (first match wins) and `snippet` (top-level keys) appended.
pub fn shipped_sidecar_config_with_rules(rules: &str, snippet: &str) -> String {
    let text = shipped_sidecar_config_plus(snippet);
    let at = text
        .find("\nrules:\n")
        .expect("the shipped config has a rules: list")
        + 8;
    format!("{}{rules}{}", &text[..at], &text[at..])
}

/// `127.0.0.{10 + i}`: one loopback address per sidecar replica.
pub fn replica_ip(i: usize) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 0, 0, 10 + i as u8))
}

/// A port free on every one of `ips` (bounded tries).
pub fn port_free_on_all(ips: &[IpAddr]) -> u16 {
    for _ in 0..200 {
        let first = TcpListener::bind((ips[0], 0)).expect("bind");
        let port = first.local_addr().expect("addr").port();
        if ips[1..]
            .iter()
            .all(|ip| TcpListener::bind((*ip, port)).is_ok())
        {
            return port;
        }
    }
    panic!("no port free on all of {ips:?}");
}

/// The stack: the Python MCP example server, omni2 replicas, sidecar replicas, Traefik.
pub struct Replicas {
    pub dir: PathBuf,
    pub mcp: McpServer,
    pub sidecars: Vec<Option<Sidecar>>,
    pub omni2s: Vec<Option<Omni2>>,
    pub traefik: Traefik,
    pub wiring: ReplicaWiring,
    /// The sidecar config every replica runs, and their extra environment.
    sidecar_config: PathBuf,
    sidecar_env: Vec<(String, String)>,
}

impl Replicas {
    /// Starts everything and waits until Traefik reports every server of both services up.
    pub async fn start(dir: &Path, opts: &ReplicaOptions) -> Replicas {
        let mcp = McpServer::start(dir).await;
        let mut omni2s = Vec::new();
        for i in 0..opts.omni2s {
            let d = dir.join(format!("omni2-{i}"));
            std::fs::create_dir_all(&d).expect("omni2 dir");
            omni2s.push(Omni2::start_tcp(&d, &mcp.url()).await);
        }
        let ips: Vec<IpAddr> = (0..opts.sidecars).map(replica_ip).collect();
        let (port, admin_port) = loop {
            let (p, a) = (port_free_on_all(&ips), port_free_on_all(&ips));
            if p != a {
                break (p, a);
            }
        };
        let config = dir.join("auth-sidecar.yaml");
        let text = opts.sidecar_config.clone().unwrap_or_else(|| {
            std::fs::read_to_string(shipped_sidecar_config()).expect("shipped config")
        });
        std::fs::write(&config, text).expect("write sidecar config");
        let mut sidecars = Vec::new();
        for (i, ip) in ips.iter().enumerate() {
            let d = dir.join(format!("sidecar-{i}"));
            std::fs::create_dir_all(&d).expect("sidecar dir");
            let (addr, admin) = (SocketAddr::new(*ip, port), SocketAddr::new(*ip, admin_port));
            sidecars.push(Sidecar::start_on(&d, &config, addr, admin, &opts.sidecar_env).await);
        }
        let auth_lb = free_addr();
        let tdir = dir.join("traefik");
        std::fs::create_dir_all(&tdir).expect("traefik dir");
        let omni2_addrs: Vec<SocketAddr> = omni2s
            .iter()
            .map(|o| match o.target() {
                Target::Tcp(a) => a,
                Target::Unix(_) => unreachable!("start_tcp"),
            })
            .collect();
        let wiring = ReplicaWiring {
            base: Wiring::loopback(auth_lb, omni2_addrs[0], tdir.join("dynamic")),
            auth_lb,
            sidecars: sidecars.iter().map(|s| s.addr).collect(),
            sidecar_admin_port: admin_port,
            omni2s: omni2_addrs,
        };
        let (st, dynamic) = shipped();
        let (st, dynamic) = transform_replicas(&st, &dynamic, &wiring);
        let traefik = Traefik::start_config(&tdir, wiring.base.clone(), &st, &dynamic).await;
        let replicas = Replicas {
            dir: dir.to_owned(),
            mcp,
            sidecars: sidecars.into_iter().map(Some).collect(),
            omni2s: omni2s.into_iter().map(Some).collect(),
            traefik,
            wiring,
            sidecar_config: config,
            sidecar_env: opts.sidecar_env.clone(),
        };
        for (service, n) in [(SIDECAR_SERVICE, opts.sidecars), ("omni2", opts.omni2s)] {
            replicas
                .wait_servers(service, n, 0, Duration::from_secs(40))
                .await;
        }
        replicas
    }

    /// Starts sidecar replica `i` again on its addresses (after it was killed and taken out
    /// of [`Replicas::sidecars`]), e.g. to see a replica that starts late catch up.
    pub async fn restart_sidecar(&mut self, i: usize) {
        assert!(self.sidecars[i].is_none(), "sidecar {i} is still running");
        let addr = self.wiring.sidecars[i];
        let admin = SocketAddr::new(addr.ip(), self.wiring.sidecar_admin_port);
        let d = self.dir.join(format!("sidecar-{i}-restarted"));
        std::fs::create_dir_all(&d).expect("sidecar dir");
        let s = Sidecar::start_on(&d, &self.sidecar_config, addr, admin, &self.sidecar_env).await;
        self.sidecars[i] = Some(s);
    }

    /// The sidecar config file every replica runs (e.g. for `auth-sidecar revoke --config`).
    pub fn sidecar_config(&self) -> &Path {
        &self.sidecar_config
    }

    /// Sidecar replica `i`'s decision for `GET path` with `token`, asked directly (not
    /// through Traefik), as Traefik's forwardAuth would.
    pub async fn decision_of(&self, i: usize, path: &str, token: &str) -> Result<u16, String> {
        let s = self.sidecars[i]
            .as_ref()
            .ok_or(format!("sidecar {i} is not running"))?;
        let r = send(
            &Target::Tcp(s.addr),
            &Request::get("/verify")
                .header("X-Forwarded-Method", "GET")
                .header("X-Forwarded-Proto", "http")
                .header("X-Forwarded-Host", "omni2.example.com")
                .header("X-Forwarded-Uri", path)
                .bearer(token),
        )
        .await?;
        Ok(r.status.as_u16())
    }

    /// Traefik's view of a service's servers: `url -> "UP" | "DOWN"`.
    pub async fn server_status(&self, service: &str) -> Result<Vec<(String, String)>, String> {
        let r = send(
            &Target::Tcp(self.wiring.base.api),
            &Request::get(&format!("/api/http/services/{service}@file")),
        )
        .await?;
        if r.status != 200 {
            return Err(format!("{service}: {} {}", r.status, r.text()));
        }
        Ok(r.json()["serverStatus"]
            .as_object()
            .into_iter()
            .flatten()
            .map(|(url, s)| (url.clone(), s.as_str().unwrap_or("").to_owned()))
            .collect())
    }

    /// Waits until Traefik reports `up` servers UP and `down` DOWN for `service`.
    pub async fn wait_servers(&self, service: &str, up: usize, down: usize, bound: Duration) {
        eventually(
            &format!("traefik: {service} has {up} servers up, {down} down"),
            bound,
            || async move {
                let s = self.server_status(service).await?;
                let count = |w: &str| s.iter().filter(|(_, v)| v == w).count();
                (count("UP") == up && count("DOWN") == down)
                    .then_some(())
                    .ok_or(format!("{s:?}"))
            },
        )
        .await;
    }

    /// The `web` entry point.
    pub fn target(&self) -> Target {
        self.traefik.target()
    }

    /// Any running sidecar replica (to mint tokens with the shipped keys).
    pub fn any_sidecar(&self) -> &Sidecar {
        self.sidecars.iter().flatten().next().expect("a sidecar")
    }

    /// `auth_sidecar_decisions_total` summed over labels, per running replica (`None` for
    /// one that was killed).
    pub async fn sidecar_decisions(&self) -> Vec<Option<f64>> {
        let mut out = Vec::new();
        for s in &self.sidecars {
            out.push(match s {
                None => None,
                Some(s) => {
                    Some(metric_sum(&Target::Tcp(s.admin), "auth_sidecar_decisions_total").await)
                }
            });
        }
        out
    }

    /// Every log, for failure messages.
    pub fn logs(&self) -> String {
        let mut out = format!("== traefik\n{}\n", self.traefik.log());
        for (i, s) in self.sidecars.iter().enumerate() {
            if let Some(s) = s {
                out.push_str(&format!("== sidecar {i}\n{}\n", s.log()));
            }
        }
        for (i, o) in self.omni2s.iter().enumerate() {
            if let Some(o) = o {
                out.push_str(&format!("== omni2 {i}\n{}\n", o.log()));
            }
        }
        out
    }
}

/// The sum of every sample of `metric` (all label sets) on `target`'s `/metrics`.
pub async fn metric_sum(target: &Target, metric: &str) -> f64 {
    metric_sum_where(target, metric, &[]).await
}

/// The sum of the samples of `metric` on `target`'s `/metrics` whose labels include every
/// `name="value"` of `labels`.
pub async fn metric_sum_where(target: &Target, metric: &str, labels: &[(&str, &str)]) -> f64 {
    let r = send(target, &Request::get("/metrics"))
        .await
        .unwrap_or_else(|e| panic!("/metrics: {e}"));
    sum_samples(&r.text(), metric, labels)
}

/// [`metric_sum_where`] on an exposition text.
pub fn sum_samples(text: &str, metric: &str, labels: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter_map(|l| {
            let rest = l.strip_prefix(metric)?;
            let (set, value) = match rest.strip_prefix('{') {
                Some(r) => r.split_once("} ")?,
                None => ("", rest.strip_prefix(' ')?),
            };
            let has = |(k, v): &(&str, &str)| {
                set.split(',')
                    .any(|pair| pair.trim() == format!("{k}=\"{v}\""))
            };
            labels
                .iter()
                .all(has)
                .then(|| value.trim().parse::<f64>().ok())?
        })
        .sum()
}

/// A WebSocket client that stays open (the `http::websocket` helper reads one message and
/// closes).
pub struct WsClient {
    ws: tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>,
}

impl WsClient {
    /// Connects to `target` (path and query) on `addr`; `Err` on a refused upgrade too.
    pub async fn connect(addr: SocketAddr, target: &str) -> Result<WsClient, String> {
        let attempt = async {
            let stream = tokio::net::TcpStream::connect(addr)
                .await
                .map_err(|e| e.to_string())?;
            let (ws, _) = tokio_tungstenite::client_async(format!("ws://{addr}{target}"), stream)
                .await
                .map_err(|e| e.to_string())?;
            Ok(WsClient { ws })
        };
        tokio::time::timeout(Duration::from_secs(10), attempt)
            .await
            .map_err(|_| "WebSocket handshake: nothing within 10 s".to_owned())?
    }

    /// The next JSON text message within `bound`; `Err` when the connection ends.
    pub async fn next_json(&mut self, bound: Duration) -> Result<Value, String> {
        use futures_util::StreamExt;
        use tokio_tungstenite::tungstenite::Message;
        let read = async {
            while let Some(msg) = self.ws.next().await {
                match msg.map_err(|e| format!("connection ended: {e}"))? {
                    Message::Text(text) => {
                        return serde_json::from_str(text.as_str())
                            .map_err(|e| format!("non-JSON message {text}: {e}"));
                    }
                    Message::Close(frame) => return Err(format!("closed: {frame:?}")),
                    _ => {}
                }
            }
            Err("connection ended".to_owned())
        };
        tokio::time::timeout(bound, read)
            .await
            .map_err(|_| format!("no message within {bound:?}"))?
    }

    /// Sends a JSON text message.
    pub async fn send_json(&mut self, v: &Value) -> Result<(), String> {
        use futures_util::SinkExt;
        self.ws
            .send(tokio_tungstenite::tungstenite::Message::text(v.to_string()))
            .await
            .map_err(|e| e.to_string())
    }
}
