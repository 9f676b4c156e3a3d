//! Dev-only helpers shared by the tests of every crate (never a normal dependency).
//!
//! Layout:
//! - [`wait`]: `eventually` (async and blocking), bounded polling with a patience knob.
//! - [`promtool`]: `promtool check metrics` / `check config`; fails loudly when missing.
//! - [`process`]: [`Proc`], a child killed by PID on drop that keeps its log; log-line waits.
//! - [`net`]: free loopback addresses.
//! - [`redis`]: a real `redis-server` on a free port, killed by PID; fails loudly when missing.
//! - [`mcp`]: what the MCP gateway tests run: server-everything, a recording TCP proxy,
//!   the SDK client scripts and their JSON lines.
//! - [`docs`]: the markdown docs and their marked ```yaml blocks, for the doc checks.

pub mod docs;
pub mod mcp;
pub mod net;
pub mod process;
pub mod promtool;
pub mod redis;
pub mod wait;

pub use net::{free_addr, free_port};
pub use nix::sys::signal::Signal;
pub use process::{Proc, wait_for_log_line, wait_listening};
pub use promtool::{assert_promtool_config, assert_promtool_metrics, promtool_check_metrics};
pub use redis::RedisServer;
pub use wait::{Probe, eventually, eventually_blocking, patience, poll_blocking};
