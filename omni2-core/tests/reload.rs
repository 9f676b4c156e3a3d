//! Config hot reload of the real binary: real files (replaced the way editors and
//! Kubernetes do), SIGHUP, real MCP servers, and one status WebSocket client that stays
//! connected throughout and sees the servers come and go.

use std::path::Path;
use std::time::Duration;

use crate::common::*;
use crate::ws_status::{Ws, connect, send, until};
use serde_json::Value;
use test_support::Signal;

const WAIT: Duration = Duration::from_secs(20);

/// Replaces the file by rename, as editors and Kubernetes' symlink swap do.
fn replace(path: &Path, text: &str) {
    let tmp = path.with_extension("yaml.tmp");
    std::fs::write(&tmp, text).expect("write");
    std::fs::rename(&tmp, path).expect("rename");
}

fn counter(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| {
            l.strip_prefix(series)?
                .strip_prefix(' ')?
                .trim()
                .parse()
                .ok()
        })
        .unwrap_or(0.0)
}

async fn reloads(o: &Omni2, http: &reqwest::Client, result: &str) -> f64 {
    let text = o.metrics(http).await;
    counter(
        &text,
        &format!(r#"omni2_config_reloads_total{{result="{result}"}}"#),
    )
}

async fn wait_reloads(o: &Omni2, http: &reqwest::Client, result: &str, n: f64) {
    eventually(&format!("{n} reloads {result}"), WAIT, || async {
        (reloads(o, http, result).await >= n).then_some(())
    })
    .await;
}

/// The client is still live: a ping is answered in sequence.
async fn still_connected(ws: &mut Ws, seq: &mut u64) {
    send(ws, serde_json::json!({"action": "ping"})).await;
    until(ws, seq, |m| m["type"] == "pong").await;
}

async fn status_code(http: &reqwest::Client, o: &Omni2, name: &str) -> u16 {
    with(
        http.get(o.url(&format!("/api/v1/mcp/servers/{name}"))),
        &user(),
    )
    .send()
    .await
    .expect("request")
    .status()
    .as_u16()
}

#[tokio::test]
async fn servers_come_and_go_without_restart_and_bad_files_keep_the_last_good() {
    let a = McpServer::start(&["--json"]);
    let b = McpServer::start(&["--json"]);
    let o = Omni2::start(&config(&[("a", &a.url())], ""), None);
    let path = o.config_path();
    let http = http_client();
    let mut ws = connect(&o, &user()).await;
    let mut seq = 0;
    let snapshot = until(&mut ws, &mut seq, |m| m["type"] == "snapshot").await;
    assert_eq!(snapshot["servers"].as_array().map(Vec::len), Some(1));
    until(&mut ws, &mut seq, |m| {
        m["type"] == "server_status" && m["server"] == "a" && m["state"] == "healthy"
    })
    .await;

    // Added: b appears on the open socket and is probed.
    replace(&path, &config(&[("a", &a.url()), ("b", &b.url())], ""));
    let added = until(&mut ws, &mut seq, |m| m["type"] == "server_added").await;
    assert_eq!(added["server"], "b");
    assert_eq!(added["replaced"], false);
    until(&mut ws, &mut seq, |m| {
        m["type"] == "server_status" && m["server"] == "b" && m["state"] == "healthy"
    })
    .await;
    wait_reloads(&o, &http, "success", 1.0).await;
    let call = with(
        http.post(o.url("/api/v1/mcp/servers/b/tools/echo/call")),
        &user(),
    )
    .body(r#"{"text":"hi"}"#)
    .send()
    .await
    .expect("call");
    assert_eq!(call.status(), 200, "the new server takes calls");

    // A bad file: refused, every problem counted, a and b stay.
    let bad = config(&[("a", "not a url"), ("b", &b.url())], "no_such_setting: 1");
    replace(&path, &bad);
    wait_reloads(&o, &http, "failure", 1.0).await;
    let text = o.metrics(&http).await;
    assert!(
        counter(&text, "omni2_config_reload_problems_total") >= 2.0,
        "both problems counted:\n{text}"
    );
    assert_eq!(reloads(&o, &http, "success").await, 1.0);
    assert_eq!(status_code(&http, &o, "a").await, 200);
    assert_eq!(status_code(&http, &o, "b").await, 200);
    still_connected(&mut ws, &mut seq).await;

    // SIGHUP retries the file as it is: the same bad file is refused again.
    o.signal(Signal::SIGHUP);
    wait_reloads(&o, &http, "failure", 2.0).await;

    // Removed and changed at once: a goes, b's probe interval changes (replaced).
    let only_b =
        config(&[("b", &b.url())], "").replace("probe_interval: 200ms", "probe_interval: 300ms");
    std::fs::write(&path, &only_b).expect("write in place");
    let mut removed = Vec::new();
    let mut replaced = None;
    while replaced.is_none() {
        let m = until(&mut ws, &mut seq, |m| {
            m["type"] == "server_removed" || m["type"] == "server_added"
        })
        .await;
        if m["type"] == "server_removed" {
            removed.push(m["server"].as_str().unwrap_or_default().to_owned());
        } else {
            replaced = Some(m);
        }
    }
    removed.sort();
    assert_eq!(removed, ["a", "b"], "a removed, b replaced");
    let replaced: Value = replaced.unwrap_or_default();
    assert_eq!(replaced["server"], "b");
    assert_eq!(replaced["replaced"], true);
    wait_reloads(&o, &http, "success", 2.0).await;
    assert_eq!(status_code(&http, &o, "a").await, 404);
    eventually("b healthy again", WAIT, || async {
        (server_status(&http, &o, "b").await["state"] == "healthy").then_some(())
    })
    .await;
    let text = o.metrics(&http).await;
    assert!(
        !text.contains("server=\"a\""),
        "a's series are gone:\n{text}"
    );

    // SIGHUP on a good file reloads it (nothing changes) and the process lives on.
    o.signal(Signal::SIGHUP);
    wait_reloads(&o, &http, "success", 3.0).await;
    still_connected(&mut ws, &mut seq).await;
    let resync = {
        send(&mut ws, serde_json::json!({"action": "resync"})).await;
        until(&mut ws, &mut seq, |m| m["type"] == "snapshot").await
    };
    let names: Vec<&str> = resync["servers"]
        .as_array()
        .expect("servers")
        .iter()
        .filter_map(|s| s["name"].as_str())
        .collect();
    assert_eq!(names, ["b"]);
}
