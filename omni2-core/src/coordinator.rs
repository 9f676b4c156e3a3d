//! The registry of servers and the one task that owns their health state.
//!
//! The coordinator probes each enabled server every `probe_interval` (at most
//! `max_concurrent_probes` at once, each bounded by `probe_timeout`), feeds the results to the
//! health tracker and the breaker, publishes a [`Snapshot`] (tokio `watch`) after every change
//! and an [`Event`] (tokio `broadcast`) per change. Tool calls share the breakers through
//! [`Registry`]; their transitions reach the task as commands so that it stays the only
//! writer of the published state.
//!
//! A server that says its tool list changed ([`crate::mcp::McpClient::tool_list_changes`]) gets its next
//! probe, with `tools/list`, brought forward: at once, then at most once per
//! [`TOOLS_CHANGED_MIN_GAP`], within the probe cap, and only while its breaker is closed. The
//! periodic refresh stays as a safety net for lost notifications.
//!
//! Operators act through [`Registry::control`] ([`ServerOp`]: probe now, reset the breaker,
//! disable or enable); the task carries the action out and answers, and the changes go out
//! as ordinary events. A disabled server is neither probed nor called.
//!
//! # Layout
//! - `ops`: operator actions, their outcomes and errors.
//! - `registry`: the servers and the breakers calls share (`Registry`, `CallPermit`).
//! - `status`: what is published (`Snapshot`, `ServerStatus`, `Event`).
//! - `probe`: one probe, planned and run.
//! - `server_state`: one server's state as the task owns it; a probe's effect on it.
//! - `task`: the task itself (`build`, `Coordinator::run`), the only writer.
//!
//! Imports point down this list; nothing imports this root module.

mod ops;
mod probe;
mod registry;
mod server_state;
mod status;
mod task;

pub use ops::{OpError, OpOutcome, ServerOp};
pub use registry::{CallPermit, MakeClient, Registry, ReloadSummary, ServerEntry};
pub use server_state::TOOLS_CHANGED_MIN_GAP;
pub use status::{Event, EventKind, Published, ServerStatus, Snapshot, now_rfc3339};
pub use task::{Coordinator, build};

#[cfg(test)]
mod tests;
