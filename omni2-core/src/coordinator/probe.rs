//! One health probe: what to ask the server, and what it answered.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::{Instant, timeout};

use crate::mcp::{self, McpClient, ToolInfo};

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
    pub index: usize,
    pub elapsed: Duration,
    pub result: Result<(), mcp::Error>,
    pub tools: Option<Result<Vec<ToolInfo>, mcp::Error>>,
    pub plan: ProbePlan,
}

/// Probes server `index` (then lists its tools if planned), each step bounded by `limit`.
/// A probe that times out also resets the client's session.
pub(crate) async fn run(
    index: usize,
    client: Arc<dyn McpClient>,
    limit: Duration,
    plan: ProbePlan,
) -> ProbeOutcome {
    let started = Instant::now();
    let result = match timeout(limit, client.probe()).await {
        Ok(r) => r,
        Err(_) => {
            client.reset().await;
            Err(mcp::Error::timeout(limit))
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
        index,
        elapsed,
        result,
        tools,
        plan,
    }
}
