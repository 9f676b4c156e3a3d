//! The status page's memory and CPU over time (a benchmark, not a test): the page open in
//! headless Chromium behind Traefik and the sidecar (the status tests' stack), one delta per
//! second (an admin "probe now" through Traefik: every requested probe publishes a
//! `server_status`), and Chromium's own counters sampled with CDP `Performance.getMetrics`.
//!
//!   status-page-soak [--minutes N] [--sample-seconds S]     (defaults: 30, 30)
//!
//! Prints one row per sample (elapsed, JSHeapUsedSize, DOM nodes, JS listeners, TaskDuration
//! delta = CPU seconds spent by the page's main thread since the previous sample) and, at
//! the end, the last sample against the first after warm-up: the goal is flat (≈ 1.0x).
//! Run through `benches/load/status_page.sh`.

use std::time::Duration;

use e2e::browser::Browser;
use e2e::http::{Request, send};
use e2e::status::StatusStack;
use serde_json::json;
use tokio::time::{Instant, interval};

fn arg(name: &str, default: u64) -> u64 {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .map(|v| {
            v.parse()
                .unwrap_or_else(|e| panic!("{name} {v:?}: not a whole number: {e}"))
        })
        .unwrap_or(default)
}

fn metric(metrics: &[(String, f64)], name: &str) -> f64 {
    metrics
        .iter()
        .find(|(n, _)| n == name)
        .map_or(f64::NAN, |(_, v)| *v)
}

#[tokio::main]
async fn main() {
    let minutes = arg("--minutes", 30);
    let every = Duration::from_secs(arg("--sample-seconds", 30).max(1));
    let stack = StatusStack::start().await;
    let admin = stack.sidecar.token("root", "admin");
    let browser = Browser::start(stack.dir.path()).await;
    browser.goto(&stack.page_url()).await;
    // The token as the page keeps it, then a fresh load that uses it.
    browser
        .js(
            "localStorage.setItem('access_token', arguments[0]); return true;",
            vec![json!(admin)],
        )
        .await;
    browser.goto(&stack.page_url()).await;

    let probe = Request::post_json("/api/v1/mcp/servers/fast/probe", &json!({})).bearer(&admin);
    let target = stack.traefik.target();
    let end = Instant::now() + Duration::from_secs(minutes * 60);
    let mut tick = interval(Duration::from_secs(1));
    let mut next_sample = Instant::now();
    let mut samples: Vec<(f64, f64, f64, f64, f64)> = Vec::new();
    let mut last_task = None;
    let started = Instant::now();
    let mut failed = 0u64;
    println!("elapsed_s\tjs_heap_used_bytes\tnodes\tjs_listeners\ttask_s_since_last");
    while Instant::now() < end {
        tick.tick().await;
        match send(&target, &probe).await {
            Ok(r) if r.status == 200 => {}
            _ => failed += 1,
        }
        if Instant::now() >= next_sample {
            next_sample += every;
            let m = browser.performance_metrics().await;
            let task = metric(&m, "TaskDuration");
            let delta = last_task.map_or(0.0, |l| task - l);
            last_task = Some(task);
            let row = (
                started.elapsed().as_secs_f64(),
                metric(&m, "JSHeapUsedSize"),
                metric(&m, "Nodes"),
                metric(&m, "JSEventListeners"),
                delta,
            );
            println!(
                "{:.0}\t{:.0}\t{:.0}\t{:.0}\t{:.3}",
                row.0, row.1, row.2, row.3, row.4
            );
            samples.push(row);
        }
    }
    let page = browser
        .js(
            "return document.querySelectorAll('#log li').length;",
            vec![],
        )
        .await;
    browser.close().await;
    drop(stack);
    // The first sample is the page's start-up; the second is the baseline.
    if samples.len() >= 3 {
        let (first, last) = (samples[1], samples[samples.len() - 1]);
        let cpu: Vec<f64> = samples[2..].iter().map(|s| s.4).collect();
        let cpu_first = cpu.first().copied().unwrap_or(f64::NAN);
        let cpu_last = cpu.last().copied().unwrap_or(f64::NAN);
        println!(
            "heap last/baseline {:.2}x, nodes {:.2}x, listeners {:.2}x, main-thread CPU per interval last/first {:.2}x ({cpu_first:.3}s -> {cpu_last:.3}s per {}s); log entries {page}; failed probes {failed}",
            last.1 / first.1,
            last.2 / first.2,
            last.3 / first.3,
            cpu_last / cpu_first,
            every.as_secs(),
        );
    } else {
        println!("too short for a ratio: {} samples", samples.len());
    }
}
