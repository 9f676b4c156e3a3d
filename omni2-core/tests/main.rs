//! omni2-core's integration tests, in one binary: one link instead of one per file.
//! A new test file is a new `mod` line here (`autotests = false` in Cargo.toml).

mod common;

mod audit;
mod audit_topic;
mod control;
mod credentials;
mod docs;
mod gateway;
mod log_pipe;
mod mcp_live;
mod metrics;
mod reload;
mod rmcp_server;
mod semantics;
mod shared_cache;
mod ws_status;
