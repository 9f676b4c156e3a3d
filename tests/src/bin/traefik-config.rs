//! Writes the shipped Traefik config, transformed exactly as the tests transform it
//! (`e2e::traefik::transform`), into a directory, for load scripts and manual runs:
//!
//!   traefik-config OUT_DIR SIDECAR_ADDR BACKEND_ADDR [WEB API METRICS WEBSECURE]
//!
//! Entry-point addresses default to free loopback ports. Prints the addresses as
//! `name=addr` lines; then run `traefik --configFile=OUT_DIR/traefik.yml`.

use std::net::SocketAddr;
use std::path::PathBuf;

use e2e::traefik::{Wiring, write_config};

fn addr(arg: Option<String>, what: &str) -> Option<SocketAddr> {
    arg.map(|a| {
        a.parse()
            .unwrap_or_else(|e| panic!("{what}: {a:?} is not ip:port: {e}"))
    })
}

fn main() {
    let mut args = std::env::args().skip(1);
    let usage =
        "usage: traefik-config OUT_DIR SIDECAR_ADDR BACKEND_ADDR [WEB API METRICS WEBSECURE]";
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
    println!("config={}", config.display());
    println!(
        "web={}\napi={}\nmetrics={}\nwebsecure={}",
        w.web, w.api, w.metrics, w.websecure
    );
}
