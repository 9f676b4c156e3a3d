//! One health probe: what to ask the server, and what it answered.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::{Instant, timeout};

use crate::mcp::{self, McpClient, ToolInfo};
use crate::metrics::probe_result;

/// What a probe asks, decided when it starts.
#[derive(Clone, Copy, Debug)]
pub(crate) struct ProbePlan {
    /// Also list tools after a successful probe.
    pub want_tools: bool,
    /// The server's `tool_signals` when the probe started.
    pub tool_signals: u64,
    /// It was brought forward to refresh a tool list said to have changed.
    pub is_signalled: bool,
}

/// A finished probe.
pub(crate) struct ProbeOutcome {
    /// The probed server's [`ServerEntry`](crate::coordinator::ServerEntry) id.
    pub id: u64,
    pub elapsed: Duration,
    pub result: Result<(), mcp::Error>,
    pub tools: Option<Result<Vec<ToolInfo>, mcp::Error>>,
    pub plan: ProbePlan,
    /// The `result` label of `omni2_mcp_probes_total`.
    pub result_label: &'static str,
}

/// Probes server `id` (then lists its tools if planned), each step bounded by `limit`.
/// A probe that times out also resets the client's session.
pub(crate) async fn run(
    id: u64,
    client: Arc<dyn McpClient>,
    limit: Duration,
    plan: ProbePlan,
) -> ProbeOutcome {
    let started = Instant::now();
    let (result, result_label) = match timeout(limit, client.probe()).await {
        Ok(Ok(())) => (Ok(()), probe_result::OK),
        Ok(Err(e)) => {
            let label = match e.fault {
                mcp::Fault::Transport => probe_result::TRANSPORT_ERROR,
                mcp::Fault::Upstream => probe_result::UPSTREAM_ERROR,
                mcp::Fault::Internal => probe_result::INTERNAL_ERROR,
            };
            (Err(e), label)
        }
        Err(_) => {
            client.reset().await;
            (Err(mcp::Error::timeout(limit)), probe_result::TIMEOUT)
        }
    };
    let elapsed = started.elapsed();
    let tools = if result.is_ok() && plan.want_tools {
        Some(match timeout(limit, client.list_tools()).await {
            Ok(r) => r,
            Err(_) => Err(mcp::Error::timeout(limit)),
        })
    } else {
        None
    };
    ProbeOutcome {
        id,
        elapsed,
        result,
        tools,
        plan,
        result_label,
    }
}
