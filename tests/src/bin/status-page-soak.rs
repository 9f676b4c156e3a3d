//! The status page's memory and CPU over time (a benchmark, not a test): the page open in
//! headless Chromium behind Traefik and the sidecar (the status tests' stack), one delta per
//! second (an admin "probe now" through Traefik: every requested probe publishes a
//! `server_status`), and Chromium's own counters sampled with CDP `Performance.getMetrics`.
//!
//!   status-page-soak [--minutes N] [--sample-seconds S]     (defaults: 30, 30)
//!
//! Prints one row per sample (elapsed, JSHeapUsedSize, DOM nodes, JS listeners, TaskDuration
//! delta = seconds the page's main thread spent in tasks since the previous sample) and, at
//! the end, the second half of the run against the first (peaks; CPU means): the goal is
//! flat (≈ 1.0x). The event log fills to its 500-entry bound in about 8 minutes of one
//! delta per second (plus the page's own entries), so only runs longer than ~16 minutes
//! compare two halves at the bound.
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
    // The first sample is the page's start-up. The heap is a GC sawtooth, so a single
    // sample against another says little: compare the second half of the run with the
    // first, peak against peak (heap, nodes, listeners) and mean against mean (CPU).
    let rest = samples.get(1..).unwrap_or_default();
    if rest.len() >= 4 {
        let (a, b) = rest.split_at(rest.len() / 2);
        let peak = |s: &[(f64, f64, f64, f64, f64)], f: fn(&(f64, f64, f64, f64, f64)) -> f64| {
            s.iter().map(f).fold(f64::MIN, f64::max)
        };
        let mean =
            |s: &[(f64, f64, f64, f64, f64)]| s.iter().map(|x| x.4).sum::<f64>() / s.len() as f64;
        let (heap_a, heap_b) = (peak(a, |x| x.1), peak(b, |x| x.1));
        let (nodes_a, nodes_b) = (peak(a, |x| x.2), peak(b, |x| x.2));
        let (lis_a, lis_b) = (peak(a, |x| x.3), peak(b, |x| x.3));
        let (cpu_a, cpu_b) = (mean(a), mean(b));
        println!(
            "second half vs first: heap peak {:.2}x ({heap_a:.0} -> {heap_b:.0} B), nodes peak {:.2}x ({nodes_a:.0} -> {nodes_b:.0}), listeners peak {:.2}x ({lis_a:.0} -> {lis_b:.0}), main-thread CPU mean {:.2}x ({cpu_a:.3} -> {cpu_b:.3} s per {} s); log entries {page}; failed probes {failed}",
            heap_b / heap_a,
            nodes_b / nodes_a,
            lis_b / lis_a,
            cpu_b / cpu_a,
            every.as_secs(),
        );
    } else {
        println!("too short for a ratio: {} samples", samples.len());
    }
}
