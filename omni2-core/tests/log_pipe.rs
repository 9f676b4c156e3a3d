//! Issue 10: `omni2 … 2>&1 | head -7`, then the log reader goes away. Every later log line
//! meets a broken pipe; omni2 must keep probing (a killed server turns unhealthy), keep
//! answering, and still exit 0 on SIGTERM.

use std::time::Duration;

use crate::common::*;

const WAIT: Duration = Duration::from_secs(20);

async fn state(http: &reqwest::Client, o: &Omni2) -> Option<String> {
    let s = server_status(http, o, "py").await;
    s["state"].as_str().map(str::to_owned)
}

#[tokio::test]
async fn closed_log_pipes_do_not_stop_probes_or_sigterm() {
    let mut mcp = McpServer::start(&["--json"]);
    let mut o = Omni2::start_with_logs_closed(&config(&[("py", &mcp.url())], ""));
    let http = http_client();
    eventually("py healthy", WAIT, || async {
        (state(&http, &o).await.as_deref() == Some("healthy")).then_some(())
    })
    .await;

    // The coordinator logs this change (WARN "MCP server unhealthy", breaker transitions)
    // into the closed pipe; it must still publish it.
    mcp.kill();
    eventually("py unhealthy after the kill", WAIT, || async {
        (state(&http, &o).await.as_deref() == Some("unhealthy")).then_some(())
    })
    .await;
    let health = http.get(o.url("/health")).send().await.expect("health");
    assert_eq!(health.status(), 200, "no background task died");
    let metrics = http.get(o.url("/metrics")).send().await.expect("metrics");
    let text = metrics.text().await.expect("text");
    let lost: u64 = text
        .lines()
        .find_map(|l| l.strip_prefix("omni2_log_lines_lost_total "))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no omni2_log_lines_lost_total in:\n{text}"));
    assert!(
        lost > 0,
        "the lines written into the closed pipe are counted"
    );

    // The signal task logs "Shutting down" into the closed pipe too.
    o.sigterm();
    assert!(o.wait_exit(WAIT), "omni2 exits 0 on SIGTERM");
}
