//! The MCP gateway tests' helpers (server-everything, the recording proxy, the SDK client
//! scripts) live in `test-support`, shared with omni2-core's gateway tests.

pub use test_support::mcp::*;
