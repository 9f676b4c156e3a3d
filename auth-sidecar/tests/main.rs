//! The sidecar's integration tests, in one binary: one link instead of one per file.
//! A new test file is a new `mod` line here (`autotests = false` in Cargo.toml).

mod jwks_support;
mod support;

mod adversarial;
mod audit;
mod cli;
mod docs;
mod http;
mod jwks;
mod log_pipe;
mod mcp;
mod ratelimit;
mod redis;
mod reload;
mod revocation;
mod run;
mod wycheproof;
