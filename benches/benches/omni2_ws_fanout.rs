//! WebSocket fan-out: N clients on `/ws/mcp-status` of a real `omni2` process; one status
//! change (the MCP server is killed); the spread of arrival times across clients, and the
//! omni2 process's RSS. Bounded in time, loopback only, stops by itself.
//!
//! ```sh
//! cargo build --release -p omni2-core --bin omni2
//! OMNI2_FANOUT_CLIENTS=1000 cargo bench -p benches --bench omni2_ws_fanout
//! OMNI2_FANOUT_CLIENTS=10000 cargo bench -p benches --bench omni2_ws_fanout
//! ```
//! omni2 runs with one HTTP worker, pinned to CPU 0 with `taskset` when available. Latency is
//! measured from the first client's receipt (the publish instant is inside another process),
//! so it is the fan-out spread, not including the probe that detected the change.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn first_line(child: &mut Child, prefix: &str) -> String {
    let out = child.stdout.take().expect("stdout");
    let mut reader = BufReader::new(out);
    let mut line = String::new();
    loop {
        line.clear();
        if reader.read_line(&mut line).expect("read") == 0 {
            panic!("process exited before printing {prefix:?}");
        }
        if let Some(rest) = line.strip_prefix(prefix) {
            let rest = rest.trim().to_owned();
            // Keep draining stdout in the background.
            std::thread::spawn(move || for _ in reader.lines() {});
            return rest;
        }
    }
}

fn rss_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

fn omni2_binary() -> PathBuf {
    if let Ok(p) = std::env::var("OMNI2_BIN") {
        return p.into();
    }
    // target/release/deps/omni2_ws_fanout-… → target/release/omni2
    let exe = std::env::current_exe().expect("exe");
    exe.parent()
        .and_then(|d| d.parent())
        .expect("target dir")
        .join("omni2")
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn main() {
    let Some(clients) = std::env::var("OMNI2_FANOUT_CLIENTS")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
    else {
        eprintln!("omni2_ws_fanout: skipped (set OMNI2_FANOUT_CLIENTS=1000, see the file header)");
        return;
    };
    let bin = omni2_binary();
    assert!(
        bin.exists(),
        "{} missing: cargo build --release -p omni2-core --bin omni2",
        bin.display()
    );

    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../omni2-core/tests/fixtures/mcp_server.py"
    );
    let mut py = Command::new("python3")
        .args([script, "--json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("python3 with mcp");
    let port = first_line(&mut py, "PORT ");
    let mut py = Proc(py);

    let dir = std::env::temp_dir().join(format!("omni2-fanout-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let config = dir.join("omni2.yaml");
    std::fs::write(
        &config,
        format!(
            "websocket: {{max_connections: 20000, queue: 64, heartbeat_interval: 60s, client_timeout: 180s, cache_stats_interval: 1h}}\n\
             servers:\n  - {{name: py, url: \"http://127.0.0.1:{port}/mcp\", probe_interval: 250ms, probe_timeout: 1s, unhealthy_after: 1}}\n"
        ),
    )
    .expect("config");
    // OMNI2_FANOUT_WORKERS (default 1) and OMNI2_FANOUT_PIN=0 are for comparisons only.
    let workers = std::env::var("OMNI2_FANOUT_WORKERS").unwrap_or_else(|_| "1".to_owned());
    let pin = std::env::var("OMNI2_FANOUT_PIN").as_deref() != Ok("0")
        && Command::new("taskset").arg("--version").output().is_ok();
    let mut cmd = if pin {
        let mut c = Command::new("taskset");
        c.args(["-c", "0"]).arg(&bin);
        c
    } else {
        Command::new(&bin)
    };
    let mut omni2 = cmd
        .arg("--config")
        .arg(&config)
        .args(["--listen", "127.0.0.1:0", "--workers", &workers])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .spawn()
        .expect("omni2");
    let addr = first_line(&mut omni2, "omni2 listening on ");
    let omni2 = Proc(omni2);
    let pid = omni2.0.id();
    let rss_idle = rss_mib(pid);

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("rt");
    rt.block_on(async move {
        let url = format!("ws://{addr}/ws/mcp-status");
        let exp = (std::time::SystemTime::now() + Duration::from_secs(3600))
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .as_secs()
            .to_string();
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Instant>();
        let connect_started = Instant::now();
        let deadline = Duration::from_secs(120);
        // Connect with bounded concurrency; each client then waits for the change.
        let connected = futures_util::stream::iter(0..clients)
            .map(|i| {
                let (url, exp, tx) = (url.clone(), exp.clone(), tx.clone());
                async move {
                    let mut req = url.into_client_request().expect("req");
                    let h = req.headers_mut();
                    h.insert("x-user-id", format!("client-{i}").parse().expect("hv"));
                    h.insert("x-auth-expires", exp.parse().expect("hv"));
                    let (mut ws, _) = tokio_tungstenite::connect_async(req).await.expect("connect");
                    // The snapshot.
                    let _ = ws.next().await;
                    tokio::spawn(async move {
                        while let Some(Ok(m)) = ws.next().await {
                            if let Message::Text(t) = m
                                && t.contains("\"server_status\"")
                                && t.contains("\"unhealthy\"")
                            {
                                let _ = tx.send(Instant::now());
                                break;
                            }
                        }
                        // Keep the socket open until the process ends.
                        std::future::pending::<()>().await;
                    });
                }
            })
            .buffer_unordered(200)
            .count();
        tokio::time::timeout(deadline, connected).await.expect("all clients connected in time");
        let connect_time = connect_started.elapsed();
        let rss_connected = rss_mib(pid);

        // The status change: the MCP server dies; the next probe marks it unhealthy.
        let _ = py.0.kill();
        let _ = py.0.wait();
        let mut arrivals = Vec::with_capacity(clients);
        let collect = async {
            while arrivals.len() < clients {
                arrivals.push(rx.recv().await.expect("sender alive"));
            }
        };
        tokio::time::timeout(deadline, collect).await.expect("every client got the change in time");
        let first = *arrivals.iter().min().expect("some");
        let mut lat: Vec<Duration> = arrivals.iter().map(|t| *t - first).collect();
        lat.sort();
        println!(
            "omni2_ws_fanout clients={clients} workers={workers} pinned_cpu0={pin} connect_all={:.2?} \
             spread_p50={:.2?} spread_p99={:.2?} spread_max={:.2?} rss_idle={rss_idle:.1}MiB rss_connected={rss_connected:.1}MiB rss_after={:.1}MiB",
            connect_time,
            percentile(&lat, 0.50),
            percentile(&lat, 0.99),
            lat[lat.len() - 1],
            rss_mib(pid),
        );
    });
    drop(omni2);
    let _ = std::fs::remove_dir_all(&dir);
}
