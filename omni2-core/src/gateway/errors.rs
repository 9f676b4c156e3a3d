//! The JSON-RPC errors `/mcp` answers for refused and failed tool calls. Each carries
//! `data.error`, the same code as the REST body and the audit record, and, when waiting
//! helps, `data.retry_after_ms` (the message says it too, for clients that only show it).

use std::time::Duration;

use rmcp::model::{ErrorCode, ErrorData};
use serde_json::json;

use crate::api_error::ApiError;
use crate::identity::IdentityError;

/// omni2's own JSON-RPC error codes (the implementation-defined server range).
pub mod codes {
    /// The server is unavailable: breaker open, disabled, unreachable or timed out.
    pub const SERVER_UNAVAILABLE: i32 = -32001;
    /// The caller's roles may not call this tool.
    pub const FORBIDDEN: i32 = -32003;
    /// The caller's rate limit for this tool is used up.
    pub const RATE_LIMITED: i32 = -32005;
}

fn retry_ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1)
}

/// A tool call's [`ApiError`] as a JSON-RPC error (`name`: the tool as the caller named
/// it, `server<sep>tool`).
pub fn api(e: &ApiError, name: &str, server: &str, tool: &str) -> ErrorData {
    let code = e.as_str();
    match e {
        ApiError::RateLimited { retry_after } => rate_limited(name, *retry_after),
        ApiError::UnknownServer | ApiError::UnknownTool => ErrorData::invalid_params(
            format!("unknown tool {tool:?}"),
            Some(json!({"error": code})),
        ),
        ApiError::BadArguments(why) => ErrorData::invalid_params(
            format!("bad arguments: {why}"),
            Some(json!({"error": code})),
        ),
        ApiError::CircuitOpen {
            server,
            retry_after,
        } => {
            let ms = retry_ms(*retry_after);
            ErrorData::new(
                ErrorCode(codes::SERVER_UNAVAILABLE),
                format!(
                    "MCP server {server:?} is unavailable (circuit breaker open); retry in {ms} ms"
                ),
                Some(json!({"error": code, "server": server, "retry_after_ms": ms})),
            )
        }
        ApiError::ServerDisabled => unavailable(code, server, "is disabled"),
        ApiError::UpstreamUnavailable => unavailable(code, server, "could not be reached"),
        ApiError::UpstreamTimeout(after) => unavailable(
            code,
            server,
            &format!(
                "did not answer within {}",
                humantime::format_duration(*after)
            ),
        ),
        ApiError::UpstreamError {
            code: upstream,
            message,
        } => ErrorData::new(
            ErrorCode(upstream.unwrap_or(ErrorCode::INTERNAL_ERROR.0)),
            message.clone(),
            Some(json!({"error": code})),
        ),
        ApiError::Internal => {
            ErrorData::internal_error("internal error", Some(json!({"error": code})))
        }
    }
}

fn unavailable(code: &str, server: &str, what: &str) -> ErrorData {
    ErrorData::new(
        ErrorCode(codes::SERVER_UNAVAILABLE),
        format!("MCP server {server:?} {what}"),
        Some(json!({"error": code, "server": server})),
    )
}

/// A refused identity (only [`IdentityError::RoleDenied`] reaches a handler).
pub fn identity(e: IdentityError) -> ErrorData {
    ErrorData::new(
        ErrorCode(codes::FORBIDDEN),
        e.to_string(),
        Some(json!({"error": e.as_str()})),
    )
}

/// The rate limit is used up; the next call is allowed after `wait`.
pub fn rate_limited(tool: &str, wait: Duration) -> ErrorData {
    let ms = retry_ms(wait);
    ErrorData::new(
        ErrorCode(codes::RATE_LIMITED),
        format!("rate limit for {tool:?} reached; retry in {ms} ms"),
        Some(json!({"error": "rate_limited", "retry_after_ms": ms})),
    )
}
