//! WebSocket fan-out: N clients on `/ws/mcp-status` of a real `omni2` process; one status
//! change (the MCP server is killed); how long until every client has it, and the omni2
//! process's RSS. Then, side by side in the same run, the floor: one thread on the same core
//! doing nothing but one `send()` of a frame of the same size to each of N loopback sockets,
//! read by the same kind of client. Bounded in time, loopback only, stops by itself.
//!
//! ```sh
//! cargo build --release -p omni2-core --bin omni2
//! OMNI2_FANOUT_CLIENTS=1000 cargo bench -p benches --bench omni2_ws_fanout
//! OMNI2_FANOUT_CLIENTS=10000 taskset -c 1 cargo bench -p benches --bench omni2_ws_fanout
//! ```
//! omni2 (one HTTP worker) and the floor's sender are pinned to CPU 0 with `taskset` when
//! available; run the bench itself on the other core (`taskset -c 1`) so the clients do not
//! compete with them. Reported per run:
//! - `spread`: from the first client's receipt to each other's (monotonic clock);
//! - `publish_to_receipt`: from the event's `ts` (omni2's wall clock when it published, ms
//!   precision) to each receipt: the whole fan-out;
//! - `floor_spread`: the same spread for the bare `send()` loop, and the ratio of the two p99s.
//!
//! On loopback the sending core also runs the receiving side of TCP (softirq) for every
//! client, so the floor is the kernel's cost, not omni2's; a ratio near 1 means omni2 adds
//! little on top of it.

mod support;

use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use futures_util::StreamExt;
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::Role;

use support::PythonMcp;

const DEADLINE: Duration = Duration::from_secs(120);
/// Connections opened at once while setting up.
const CONNECT_CONCURRENCY: usize = 200;

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

/// Spreads from the earliest instant, sorted.
fn spreads(arrivals: impl Iterator<Item = Instant> + Clone) -> Vec<Duration> {
    let first = arrivals.clone().min().expect("some arrivals");
    let mut lat: Vec<Duration> = arrivals.map(|t| t - first).collect();
    lat.sort();
    lat
}

/// A receipt: when (monotonic and wall clock), and the message.
type Receipt = (Instant, SystemTime, String);

/// What every client does, in the omni2 run and in the floor run alike: read until the
/// `unhealthy` status arrives, report it, keep the socket open.
async fn await_change<S>(mut ws: WebSocketStream<S>, tx: UnboundedSender<Receipt>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    while let Some(Ok(m)) = ws.next().await {
        if let Message::Text(t) = m
            && t.contains("\"server_status\"")
            && t.contains("\"unhealthy\"")
        {
            let _ = tx.send((Instant::now(), SystemTime::now(), t.to_string()));
            break;
        }
    }
    // Keep the socket open until the runtime ends.
    std::future::pending::<()>().await;
}

/// Waits (bounded) for `n` receipts.
async fn receipts(rx: &mut UnboundedReceiver<Receipt>, n: usize) -> Vec<Receipt> {
    let mut arrivals = Vec::with_capacity(n);
    let collect = async {
        while arrivals.len() < n {
            arrivals.push(rx.recv().await.expect("clients alive"));
        }
    };
    tokio::time::timeout(DEADLINE, collect)
        .await
        .expect("every client got the change in time");
    arrivals
}

/// The clients' runtime: one thread, like one dashboard process serving many sockets.
fn client_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
}

/// `taskset -c 0 <program>` when taskset exists and pinning is not turned off.
fn pinned(program: &std::path::Path) -> (Command, bool) {
    let pin = std::env::var("OMNI2_FANOUT_PIN").as_deref() != Ok("0")
        && Command::new("taskset").arg("--version").output().is_ok();
    if pin {
        let mut c = Command::new("taskset");
        c.args(["-c", "0"]).arg(program);
        (c, true)
    } else {
        (Command::new(program), false)
    }
}

fn main() {
    // The floor's sender: this same binary, re-run pinned (see `floor`).
    if let Ok(spec) = std::env::var("OMNI2_FANOUT_FLOOR_SENDER") {
        floor_sender(&spec);
        return;
    }
    let Some(clients) = std::env::var("OMNI2_FANOUT_CLIENTS")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
    else {
        eprintln!("omni2_ws_fanout: skipped (set OMNI2_FANOUT_CLIENTS=1000, see the file header)");
        return;
    };
    let (omni2_p99, message) = omni2_fanout(clients);
    let floor_p99 = floor(clients, &message);
    println!(
        "omni2_ws_fanout ratio spread_p99 omni2/floor = {:.2}",
        omni2_p99.as_secs_f64() / floor_p99.as_secs_f64()
    );
}

/// The omni2 run; returns its spread p99 and the message each client got.
fn omni2_fanout(clients: usize) -> (Duration, String) {
    let bin = omni2_binary();
    assert!(
        bin.exists(),
        "{} missing: cargo build --release -p omni2-core --bin omni2",
        bin.display()
    );

    let mut py = PythonMcp::start().expect("python3 with the mcp package");
    let mcp_url = py.url();

    let dir = std::env::temp_dir().join(format!("omni2-fanout-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let config = dir.join("omni2.yaml");
    // Profiling knobs: a periodic `cache_stats` delta to every client, and a pause (with the
    // clients connected) before the change, to attach `perf record -p` to omni2.
    let stats_interval =
        std::env::var("OMNI2_FANOUT_STATS_INTERVAL").unwrap_or_else(|_| "1h".to_owned());
    let hold = Duration::from_secs(
        std::env::var("OMNI2_FANOUT_HOLD_SECS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(0),
    );
    std::fs::write(
        &config,
        format!(
            "websocket: {{max_connections: 20000, queue: 64, heartbeat_interval: 60s, client_timeout: 180s, cache_stats_interval: {stats_interval}}}\n\
             servers:\n  - {{name: py, url: \"{mcp_url}\", probe_interval: 250ms, probe_timeout: 1s, unhealthy_after: 1}}\n"
        ),
    )
    .expect("config");
    // OMNI2_FANOUT_WORKERS (default 1) and OMNI2_FANOUT_PIN=0 are for comparisons only.
    let workers = std::env::var("OMNI2_FANOUT_WORKERS").unwrap_or_else(|_| "1".to_owned());
    let (mut cmd, pin) = pinned(&bin);
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

    let rt = client_runtime();
    let result = rt.block_on(async move {
        let url = format!("ws://{addr}/ws/mcp-status");
        let exp = (SystemTime::now() + Duration::from_secs(3600))
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .as_secs()
            .to_string();
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let connect_started = Instant::now();
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
                    tokio::spawn(await_change(ws, tx));
                }
            })
            .buffer_unordered(CONNECT_CONCURRENCY)
            .count();
        tokio::time::timeout(DEADLINE, connected).await.expect("all clients connected in time");
        let connect_time = connect_started.elapsed();
        let rss_connected = rss_mib(pid);
        if !hold.is_zero() {
            eprintln!("omni2 pid {pid}: holding {hold:?} before the change");
            tokio::time::sleep(hold).await;
        }

        // The status change: the MCP server dies; the next probe marks it unhealthy.
        py.kill();
        let arrivals = receipts(&mut rx, clients).await;
        let lat = spreads(arrivals.iter().map(|a| a.0));
        // From the event's `ts` (set when omni2 published it, millisecond precision, same
        // machine clock) to receipt: the whole fan-out, not only its spread.
        let mut e2e: Vec<Duration> = arrivals
            .iter()
            .map(|(_, wall, text)| {
                let v: serde_json::Value = serde_json::from_str(text).expect("json");
                let ts = humantime::parse_rfc3339(v["ts"].as_str().expect("ts")).expect("rfc3339");
                wall.duration_since(ts).unwrap_or_default()
            })
            .collect();
        e2e.sort();
        println!(
            "omni2_ws_fanout clients={clients} workers={workers} pinned_cpu0={pin} connect_all={:.2?} \
             spread_p50={:.2?} spread_p99={:.2?} spread_max={:.2?} \
             publish_to_receipt_p50={:.2?} p99={:.2?} max={:.2?} rss_idle={rss_idle:.1}MiB rss_connected={rss_connected:.1}MiB rss_after={:.1}MiB",
            connect_time,
            percentile(&lat, 0.50),
            percentile(&lat, 0.99),
            lat[lat.len() - 1],
            percentile(&e2e, 0.50),
            percentile(&e2e, 0.99),
            e2e[e2e.len() - 1],
            rss_mib(pid),
        );
        (percentile(&lat, 0.99), arrivals[0].2.clone())
    });
    // Dropping the runtime closes every client socket before the floor run.
    drop(rt);
    drop(omni2);
    let _ = std::fs::remove_dir_all(&dir);
    result
}

/// The floor run: a pinned sender process writes the same WebSocket frame once to each of
/// `clients` loopback sockets, read by the same client code; returns the spread p99.
fn floor(clients: usize, message: &str) -> Duration {
    let exe = std::env::current_exe().expect("exe");
    let (mut cmd, _) = pinned(&exe);
    let mut sender = cmd
        .env("OMNI2_FANOUT_FLOOR_SENDER", clients.to_string())
        .env("OMNI2_FANOUT_FLOOR_MESSAGE", message)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("floor sender");
    let addr = first_line(&mut sender, "FLOOR listening on ");
    let mut go = sender.stdin.take().expect("stdin");
    let sender = Proc(sender);

    let rt = client_runtime();
    let p99 = rt.block_on(async move {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let connected = futures_util::stream::iter(0..clients)
            .map(|_| {
                let (addr, tx) = (addr.clone(), tx.clone());
                async move {
                    let s = tokio::net::TcpStream::connect(&addr).await.expect("connect");
                    // No handshake: the sender speaks bare frames.
                    let ws = WebSocketStream::from_raw_socket(s, Role::Client, None).await;
                    tokio::spawn(await_change(ws, tx));
                }
            })
            .buffer_unordered(CONNECT_CONCURRENCY)
            .count();
        tokio::time::timeout(DEADLINE, connected).await.expect("floor clients connected");
        // Let the sender finish accepting, and the kernel finish closing the omni2 run's
        // sockets: without this pause the floor came out 3x slower in 2 runs of 3.
        tokio::time::sleep(Duration::from_secs(1)).await;
        go.write_all(b"go\n").expect("go");
        let lat = spreads(receipts(&mut rx, clients).await.iter().map(|a| a.0));
        println!(
            "omni2_ws_fanout floor clients={clients} frame={}B floor_spread_p50={:.2?} floor_spread_p99={:.2?} floor_spread_max={:.2?}",
            message.len() + 4,
            percentile(&lat, 0.50),
            percentile(&lat, 0.99),
            lat[lat.len() - 1],
        );
        percentile(&lat, 0.99)
    });
    drop(rt);
    drop(sender);
    p99
}

/// Accepts N loopback connections, waits for "go" on stdin, then writes one unmasked
/// WebSocket text frame of `OMNI2_FANOUT_FLOOR_MESSAGE` to each, in one thread, as fast as
/// the kernel allows.
fn floor_sender(n: &str) {
    let n: usize = n.parse().expect("N");
    let message = std::env::var("OMNI2_FANOUT_FLOOR_MESSAGE").expect("message");
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    println!(
        "FLOOR listening on {}",
        listener.local_addr().expect("addr")
    );
    std::io::stdout().flush().expect("flush");
    // Default socket options, as omni2's (actix leaves Nagle on unless configured).
    let sockets: Vec<std::net::TcpStream> = (0..n)
        .map(|_| listener.accept().expect("accept").0)
        .collect();
    let len = u16::try_from(message.len()).expect("message under 64 KiB");
    let mut frame = vec![0x81, 126];
    if len < 126 {
        frame = vec![0x81, len as u8];
    } else {
        frame.extend_from_slice(&len.to_be_bytes());
    }
    frame.extend_from_slice(message.as_bytes());
    let mut line = String::new();
    std::io::stdin().read_line(&mut line).expect("go");
    let started = Instant::now();
    for mut s in &sockets {
        s.write_all(&frame).expect("write");
    }
    eprintln!("floor sender: {n} writes in {:.2?}", started.elapsed());
    // Keep the sockets open until the bench is done with them (it kills this process).
    #[expect(
        clippy::disallowed_methods,
        reason = "a child process parked until the bench kills it; nothing to poll"
    )]
    std::thread::sleep(DEADLINE);
}
