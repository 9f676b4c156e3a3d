//! Writes the shipped Traefik config, transformed exactly as the tests transform it
//! (`e2e::traefik::transform`), into a directory, for load scripts and manual runs:
//!
//!   traefik-config [--bench] OUT_DIR SIDECAR_ADDR BACKEND_ADDR [WEB API METRICS WEBSECURE]
//!
//! Entry-point addresses default to free loopback ports. Prints the addresses as
//! `name=addr` lines; then run `traefik --configFile=OUT_DIR/traefik.yml`.
//!
//! `--bench` (for `benches/load/traefik.sh`) changes two more things after the transform:
//! every `rateLimit` middleware is taken out of the router chains (one load client from one
//! IP with one token would otherwise measure the 429 path), and a router `bench-noauth`
//! (`PathPrefix(/noauth)`, no middlewares, same service) gives the no-auth baseline.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use e2e::traefik::{Wiring, write_config};
use serde_json::{Value, json};

fn addr(arg: Option<String>, what: &str) -> Option<SocketAddr> {
    arg.map(|a| {
        a.parse()
            .unwrap_or_else(|e| panic!("{what}: {a:?} is not ip:port: {e}"))
    })
}

/// The `--bench` variant of one written dynamic file (see the module doc).
fn bench_variant(doc: &mut Value) {
    let Some(http) = doc.get_mut("http") else {
        return;
    };
    let rate_limits: Vec<String> = http["middlewares"]
        .as_object()
        .into_iter()
        .flatten()
        .filter(|(_, mw)| mw.get("rateLimit").is_some())
        .map(|(name, _)| name.clone())
        .collect();
    if let Some(routers) = http.get_mut("routers").and_then(Value::as_object_mut) {
        for router in routers.values_mut() {
            if let Some(chain) = router.get_mut("middlewares").and_then(Value::as_array_mut) {
                chain.retain(|m| {
                    !m.as_str()
                        .is_some_and(|m| rate_limits.iter().any(|r| r == m))
                });
            }
        }
        let service = routers
            .values()
            .find_map(|r| r["service"].as_str().map(str::to_owned));
        if let Some(service) = service {
            routers.insert(
                "bench-noauth".into(),
                json!({"rule": "PathPrefix(`/noauth`)", "priority": 300,
                       "entryPoints": ["web"], "service": service}),
            );
        }
    }
}

fn rewrite_for_bench(dynamic_dir: &Path) {
    let entries = std::fs::read_dir(dynamic_dir).expect("read dynamic dir");
    for entry in entries {
        let path = entry.expect("dynamic dir entry").path();
        let text = std::fs::read_to_string(&path).expect("read dynamic file");
        let mut doc: Value = serde_yaml::from_str(&text).expect("dynamic file is YAML");
        bench_variant(&mut doc);
        std::fs::write(&path, serde_yaml::to_string(&doc).expect("YAML")).expect("write");
    }
}

fn main() {
    let mut args = std::env::args().skip(1).peekable();
    let bench = args.next_if(|a| a == "--bench").is_some();
    let usage = "usage: traefik-config [--bench] OUT_DIR SIDECAR_ADDR BACKEND_ADDR [WEB API METRICS WEBSECURE]";
    let out = PathBuf::from(args.next().expect(usage));
    let sidecar = addr(args.next(), "SIDECAR_ADDR").expect(usage);
    let backend = addr(args.next(), "BACKEND_ADDR").expect(usage);
    let mut w = Wiring::loopback(sidecar, backend, out.join("dynamic"));
    if let Some(a) = addr(args.next(), "WEB") {
        w.web = a;
    }
    if let Some(a) = addr(args.next(), "API") {
        w.api = a;
    }
    if let Some(a) = addr(args.next(), "METRICS") {
        w.metrics = a;
    }
    if let Some(a) = addr(args.next(), "WEBSECURE") {
        w.websecure = a;
    }
    std::fs::create_dir_all(&out).expect("create OUT_DIR");
    let config = write_config(&out, &w);
    if bench {
        rewrite_for_bench(&w.dynamic_dir);
    }
    println!("config={}", config.display());
    println!(
        "web={}\napi={}\nmetrics={}\nwebsecure={}",
        w.web, w.api, w.metrics, w.websecure
    );
}
