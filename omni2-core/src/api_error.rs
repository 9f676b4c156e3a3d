//! omni2's one error vocabulary: every refused or failed tool call, cache or server request
//! is an [`ApiError`]. Its [`ApiError::as_str`] is the body's `error` code, the log's `error`
//! field and (for tool calls) the `result` label of `omni2_tool_calls_total`.

use std::time::Duration;

use actix_web::HttpResponse;
use actix_web::http::StatusCode;
use actix_web::http::header::{CACHE_CONTROL, RETRY_AFTER};
use serde_json::json;

use crate::mcp::{self, Fault};

/// Why a request got no result.
#[derive(Clone, Debug, PartialEq)]
pub enum ApiError {
    /// No configured server by that name (404).
    UnknownServer,
    /// The server does not advertise that tool (404).
    UnknownTool,
    /// The body is not a JSON object (400).
    BadArguments(String),
    /// The server is configured `enabled: false` (503).
    ServerDisabled,
    /// The caller's `rate_limit` for this tool is used up (429 with `Retry-After`).
    RateLimited {
        /// Until the next call is allowed.
        retry_after: Duration,
    },
    /// Fast-failed by the open breaker (503 with `Retry-After`).
    CircuitOpen {
        /// Server name, echoed in the body.
        server: String,
        /// Until the breaker lets a trial through.
        retry_after: Duration,
    },
    /// No answer within `call_timeout` (504).
    UpstreamTimeout(Duration),
    /// The server answered a JSON-RPC error (502; its code and text go to the caller).
    UpstreamError {
        /// JSON-RPC error code.
        code: Option<i32>,
        /// The server's message.
        message: String,
    },
    /// The server could not be reached (502).
    UpstreamUnavailable,
    /// A fault on our side (500).
    Internal,
}

impl ApiError {
    /// Every code, in a fixed order (metric label values are pre-created from it).
    pub const CODES: [&'static str; 10] = [
        "unknown_server",
        "unknown_tool",
        "bad_arguments",
        "rate_limited",
        "server_disabled",
        "circuit_open",
        "upstream_timeout",
        "upstream_error",
        "upstream_unavailable",
        "internal",
    ];

    /// Codes of failures after the call was admitted to the upstream path: the only ones
    /// `omni2_tool_calls_total` counts (refusals have no tool label worth keeping).
    pub const UPSTREAM_CODES: [&'static str; 5] = [
        "circuit_open",
        "upstream_timeout",
        "upstream_error",
        "upstream_unavailable",
        "internal",
    ];

    /// The stable code.
    pub const fn as_str(&self) -> &'static str {
        match self {
            Self::UnknownServer => "unknown_server",
            Self::UnknownTool => "unknown_tool",
            Self::BadArguments(_) => "bad_arguments",
            Self::RateLimited { .. } => "rate_limited",
            Self::ServerDisabled => "server_disabled",
            Self::CircuitOpen { .. } => "circuit_open",
            Self::UpstreamTimeout(_) => "upstream_timeout",
            Self::UpstreamError { .. } => "upstream_error",
            Self::UpstreamUnavailable => "upstream_unavailable",
            Self::Internal => "internal",
        }
    }

    /// The HTTP status.
    pub const fn status(&self) -> StatusCode {
        match self {
            Self::UnknownServer | Self::UnknownTool => StatusCode::NOT_FOUND,
            Self::BadArguments(_) => StatusCode::BAD_REQUEST,
            Self::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            Self::ServerDisabled | Self::CircuitOpen { .. } => StatusCode::SERVICE_UNAVAILABLE,
            Self::UpstreamTimeout(_) => StatusCode::GATEWAY_TIMEOUT,
            Self::UpstreamError { .. } | Self::UpstreamUnavailable => StatusCode::BAD_GATEWAY,
            Self::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The error of a failed MCP call, by who is at fault.
    pub fn from_mcp(e: mcp::Error) -> Self {
        match e.fault {
            Fault::Upstream => Self::UpstreamError {
                code: e.code,
                message: e.message,
            },
            Fault::Transport => Self::UpstreamUnavailable,
            Fault::Internal => Self::Internal,
        }
    }

    /// The JSON error body (`error`, `message`, and what the caller needs to act on it).
    pub fn response(&self) -> HttpResponse {
        let code = self.as_str();
        let mut answer = HttpResponse::build(self.status());
        answer.insert_header((CACHE_CONTROL, "no-store"));
        let body = match self {
            Self::UnknownServer => json!({"error": code, "message": "no such MCP server"}),
            Self::UnknownTool => {
                json!({"error": code, "message": "the server does not advertise this tool"})
            }
            Self::BadArguments(m) => json!({"error": code, "message": m}),
            Self::ServerDisabled => json!({"error": code, "message": "MCP server is disabled"}),
            Self::RateLimited { retry_after } => {
                let secs = retry_secs(*retry_after);
                answer.insert_header((RETRY_AFTER, secs.to_string()));
                json!({
                    "error": code,
                    "message": "your rate limit for this tool is used up",
                    "retry_after_seconds": secs,
                })
            }
            Self::CircuitOpen {
                server,
                retry_after,
            } => {
                let secs = retry_secs(*retry_after);
                answer.insert_header((RETRY_AFTER, secs.to_string()));
                json!({
                    "error": code,
                    "message": "the MCP server's circuit breaker is open",
                    "server": server,
                    "retry_after_seconds": secs,
                })
            }
            Self::UpstreamTimeout(after) => json!({
                "error": code,
                "message": format!("no answer within {}", humantime::format_duration(*after)),
            }),
            Self::UpstreamError { code: rpc, message } => {
                json!({"error": code, "code": rpc, "message": message})
            }
            Self::UpstreamUnavailable => {
                json!({"error": code, "message": "the MCP server could not be reached"})
            }
            Self::Internal => json!({"error": code, "message": "internal error"}),
        };
        answer.json(body)
    }
}

/// Whole seconds, rounded up, at least 1 (what `Retry-After` carries).
fn retry_secs(d: Duration) -> u64 {
    (d.as_secs() + u64::from(d.subsec_nanos() > 0)).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn every() -> Vec<ApiError> {
        vec![
            ApiError::UnknownServer,
            ApiError::UnknownTool,
            ApiError::BadArguments("x".into()),
            ApiError::RateLimited {
                retry_after: Duration::from_millis(2500),
            },
            ApiError::ServerDisabled,
            ApiError::CircuitOpen {
                server: "s".into(),
                retry_after: Duration::from_millis(1500),
            },
            ApiError::UpstreamTimeout(Duration::from_secs(2)),
            ApiError::UpstreamError {
                code: Some(-32000),
                message: "m".into(),
            },
            ApiError::UpstreamUnavailable,
            ApiError::Internal,
        ]
    }

    #[test]
    fn codes_list_every_variant_once_in_order() {
        let codes: Vec<&str> = every().iter().map(ApiError::as_str).collect();
        assert_eq!(codes, ApiError::CODES);
        for c in ApiError::UPSTREAM_CODES {
            assert!(ApiError::CODES.contains(&c), "{c}");
        }
    }

    #[actix_web::test]
    async fn body_code_and_status_agree() {
        for e in every() {
            let resp = e.response();
            assert_eq!(resp.status(), e.status());
            let body = actix_web::body::to_bytes(resp.into_body()).await.unwrap();
            let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
            assert_eq!(v["error"], e.as_str(), "{v}");
        }
    }

    #[test]
    fn circuit_open_rounds_retry_after_up() {
        let e = ApiError::CircuitOpen {
            server: "s".into(),
            retry_after: Duration::from_millis(1500),
        };
        let resp = e.response();
        assert_eq!(resp.headers().get(RETRY_AFTER).unwrap(), "2");
    }
}
