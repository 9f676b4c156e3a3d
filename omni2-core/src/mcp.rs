//! MCP client seam: the [`McpClient`] trait the coordinator and routes use, and
//! [`HttpMcpClient`], its implementation over rmcp's streamable-HTTP transport.
//!
//! Errors record whose fault they were ([`Fault`]): the server's (it answered with an
//! error), the transport's (unreachable, reset, timed out) or ours. Only transport faults
//! count against the circuit breaker: a server that answers "invalid arguments" is alive.

mod http;

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;
use serde::Serialize;

use serde_json::{Map, Value};
use tokio::sync::watch;

pub use http::HttpMcpClient;

/// Whose fault an error was.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Fault {
    /// The server answered with an error (JSON-RPC error, unexpected reply).
    Upstream,
    /// No usable answer: connection refused or reset, bad HTTP status, timeout.
    Transport,
    /// A bug or limit on our side (serialisation, cancelled task).
    Internal,
}

/// An MCP operation failure.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{fault:?} error: {message}")]
pub struct Error {
    /// Whose fault.
    pub fault: Fault,
    /// JSON-RPC error code when the server sent one.
    pub code: Option<i32>,
    /// Human-readable text (never contains credentials: they travel only as sensitive
    /// default headers and TLS identities, which errors do not print).
    pub message: String,
}

impl Error {
    /// A transport error.
    pub fn transport(message: impl fmt::Display) -> Self {
        Self {
            fault: Fault::Transport,
            code: None,
            message: message.to_string(),
        }
    }

    /// An error answered by the server.
    pub fn upstream(code: Option<i32>, message: impl fmt::Display) -> Self {
        Self {
            fault: Fault::Upstream,
            code,
            message: message.to_string(),
        }
    }

    /// Our own failure.
    pub fn internal(message: impl fmt::Display) -> Self {
        Self {
            fault: Fault::Internal,
            code: None,
            message: message.to_string(),
        }
    }

    /// A timeout after `after` (a transport fault).
    pub fn timeout(after: Duration) -> Self {
        Self::transport(format!(
            "timed out after {}",
            humantime::format_duration(after)
        ))
    }

    /// Should this count as a failure for health and the breaker?
    pub fn is_outage(&self) -> bool {
        self.fault == Fault::Transport
    }
}

/// What we keep of a tool from `tools/list`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ToolInfo {
    /// Tool name.
    pub name: String,
    /// Description, when given.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// `annotations.readOnlyHint`, when given.
    #[serde(rename = "readOnlyHint", skip_serializing_if = "Option::is_none")]
    pub read_only_hint: Option<bool>,
    /// The whole definition as the server sent it (schemas, annotations): what `/mcp`
    /// lists, renamed. Not in the REST status.
    #[serde(skip)]
    pub definition: std::sync::Arc<rmcp::model::Tool>,
    /// The tool's `inputSchema` (a JSON Schema object), when at most
    /// [`MAX_INPUT_SCHEMA_BYTES`] as JSON: it goes to every status client.
    #[serde(rename = "inputSchema", skip_serializing_if = "Option::is_none")]
    pub input_schema: Option<Arc<Map<String, Value>>>,
}

/// Largest `inputSchema` kept (as JSON text); a larger one is dropped (the status page then
/// offers raw JSON arguments).
pub const MAX_INPUT_SCHEMA_BYTES: usize = 16 * 1024;

/// `schema` if it is small enough to keep (see [`ToolInfo::input_schema`]).
pub fn bounded_schema(schema: Arc<Map<String, Value>>) -> Option<Arc<Map<String, Value>>> {
    let size = serde_json::to_string(&*schema).map_or(usize::MAX, |t| t.len());
    (size <= MAX_INPUT_SCHEMA_BYTES).then_some(schema)
}

/// A `tools/call` result as JSON (the MCP `CallToolResult` object).
#[derive(Clone, Debug, PartialEq)]
pub struct ToolResult {
    /// The result object (`content`, `structuredContent`, `isError`, ...).
    pub body: Value,
    /// `isError: true`: a tool-level failure, never cached.
    pub is_error: bool,
}

/// The operations omni2 needs from an MCP server. Callers apply timeouts.
pub trait McpClient: Send + Sync + 'static {
    /// A liveness check: `ping`, or a fallback for servers without it.
    fn probe(&self) -> BoxFuture<'_, Result<(), Error>>;
    /// `tools/list`, all pages.
    fn list_tools(&self) -> BoxFuture<'_, Result<Vec<ToolInfo>, Error>>;
    /// `tools/call`.
    fn call_tool<'a>(
        &'a self,
        tool: &'a str,
        arguments: Map<String, Value>,
    ) -> BoxFuture<'a, Result<ToolResult, Error>>;
    /// Drops the current session so the next operation starts a fresh one (the coordinator
    /// calls it after a probe timed out: a session the server silently stopped answering
    /// must not stay in use forever). Calls in flight keep their session until they end.
    fn reset(&self) -> BoxFuture<'_, ()> {
        Box::pin(std::future::ready(()))
    }
    /// A signal raised whenever the server may have changed its tool list (it sent
    /// `notifications/tools/list_changed`, or a new session may have missed one); bursts
    /// coalesce into one change. `None` for clients that never hear of changes: their tool
    /// lists are refreshed on the probe schedule only.
    fn tool_list_changes(&self) -> Option<watch::Receiver<()>> {
        None
    }
}
