//! REST routes (and the WebSocket route from `ws`), mounted by [`crate::Omni2::configure`].
//!
//! Error bodies are small JSON objects with a stable `error` code; upstream details go to
//! logs, except the MCP error text on `upstream_error`, which the caller needs.

use std::sync::Arc;
use std::time::Duration;

use actix_web::http::StatusCode;
use actix_web::http::header::{CACHE_CONTROL, CONTENT_TYPE, RETRY_AFTER};
use actix_web::{HttpResponse, web};
use serde_json::{Map, Value, json};
use tokio::time::{Instant, timeout};

use crate::cache::{CacheKey, Uncached};
use crate::coordinator::ServerEntry;
use crate::health::HealthState;
use crate::identity::Identity;
use crate::mcp::{self, Fault, ToolResult};
use crate::metrics::call_result;
use crate::shared::Shared;

/// Largest accepted tool-call body (JSON arguments).
const MAX_ARGUMENTS_BYTES: usize = 1 << 20;

/// Mounts every route.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/health", web::get().to(health))
        .route("/metrics", web::get().to(metrics))
        .route("/api/v1/mcp/servers", web::get().to(list_servers))
        .route("/api/v1/mcp/servers/{name}", web::get().to(get_server))
        .service(
            web::resource("/api/v1/mcp/servers/{name}/tools/{tool}/call")
                .app_data(web::PayloadConfig::new(MAX_ARGUMENTS_BYTES))
                .route(web::post().to(call_tool)),
        )
        .route("/api/v1/cache", web::get().to(cache_stats))
        .route("/api/v1/cache", web::delete().to(clear_cache))
        .route(
            "/api/v1/cache/{server}",
            web::delete().to(clear_server_cache),
        )
        .route(
            "/api/v1/cache/{server}/{tool}",
            web::delete().to(clear_tool_cache),
        )
        .route("/ws/mcp-status", web::get().to(crate::ws::upgrade));
}

fn error(status: StatusCode, code: &str, message: impl Into<String>) -> HttpResponse {
    HttpResponse::build(status)
        .insert_header((CACHE_CONTROL, "no-store"))
        .json(json!({"error": code, "message": message.into()}))
}

/// Liveness: no identity, no details. 503 once a background task has died (the log names
/// it): a process that no longer probes must not look alive.
async fn health(shared: web::Data<Arc<Shared>>) -> HttpResponse {
    let (mut answer, status) = match shared.tasks.failed() {
        None => (HttpResponse::Ok(), "ok"),
        Some(_) => (HttpResponse::ServiceUnavailable(), "failed"),
    };
    answer
        .insert_header((CACHE_CONTROL, "no-store"))
        .json(json!({ "status": status }))
}

async fn metrics(shared: web::Data<Arc<Shared>>) -> HttpResponse {
    HttpResponse::Ok()
        .insert_header((CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8"))
        .body(shared.metrics.render())
}

async fn list_servers(_id: Identity, shared: web::Data<Arc<Shared>>) -> HttpResponse {
    let snapshot = shared.published.snapshot.borrow().clone();
    HttpResponse::Ok().json(json!({ "servers": snapshot.servers }))
}

async fn get_server(
    _id: Identity,
    shared: web::Data<Arc<Shared>>,
    name: web::Path<String>,
) -> HttpResponse {
    let snapshot = shared.published.snapshot.borrow().clone();
    match snapshot.get(&name) {
        Some(s) => HttpResponse::Ok().json(s),
        None => error(
            StatusCode::NOT_FOUND,
            "unknown_server",
            "no such MCP server",
        ),
    }
}

/// What went wrong on the way to a tool result.
#[derive(Clone, Debug)]
enum CallFailure {
    CircuitOpen(Duration),
    Timeout(Duration),
    Mcp(mcp::Error),
}

async fn call_tool(
    id: Identity,
    shared: web::Data<Arc<Shared>>,
    path: web::Path<(String, String)>,
    body: web::Bytes,
) -> HttpResponse {
    if let Err(e) = id.require_any(&shared.config.roles.tool_call) {
        return actix_web::ResponseError::error_response(&e);
    }
    let (server, tool) = path.into_inner();
    let Some(index) = shared.registry.index(&server) else {
        return error(
            StatusCode::NOT_FOUND,
            "unknown_server",
            "no such MCP server",
        );
    };
    let entry = shared.registry.get(index).clone();
    let arguments = match parse_arguments(&body) {
        Ok(a) => a,
        Err(m) => return error(StatusCode::BAD_REQUEST, "bad_arguments", m),
    };
    let status = shared.published.snapshot.borrow().servers[index].clone();
    if status.state == HealthState::Disabled {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "server_disabled",
            "MCP server is disabled",
        );
    }
    // Known tool list: refuse unknown tools without bothering the server, and keep metric
    // labels to names the server advertised.
    let advertised = status.tools.iter().find(|t| t.name == tool);
    if advertised.is_none() && status.tool_count > 0 {
        return error(
            StatusCode::NOT_FOUND,
            "unknown_tool",
            "the server does not advertise this tool",
        );
    }
    let tool_label = if advertised.is_some() {
        tool.as_str()
    } else {
        "other"
    };
    let policy = entry.config.tools.get(&tool);
    let is_cacheable = match policy.and_then(|p| p.cache) {
        Some(explicit) => explicit,
        None => {
            entry.config.trust_annotations
                && advertised.is_some_and(|t| t.read_only_hint == Some(true))
        }
    };

    let upstream = upstream_call(
        shared.clone(),
        entry.clone(),
        index,
        &tool,
        arguments.clone(),
    );
    let outcome = if is_cacheable {
        let ttl = policy
            .and_then(|p| p.ttl)
            .unwrap_or(shared.config.cache.default_ttl);
        let key = CacheKey::new(&server, &tool, &arguments);
        match shared.cache.get_or_call(key, ttl, upstream).await {
            Ok((cached, hit)) => Ok((Body::Text(cached.json.clone()), hit)),
            Err(Uncached::ToolError(v)) => Ok((Body::Value(v), false)),
            Err(Uncached::Failed(f)) => Err(f),
        }
    } else {
        upstream.await.map(|r| (Body::Value(r.body), false))
    };
    let labels = |result: &str| {
        shared
            .metrics
            .tool_calls
            .with_label_values(&[server.as_str(), tool_label, result])
            .inc();
    };
    match outcome {
        Ok((body, hit)) => {
            let is_error = body.is_error();
            labels(if hit {
                call_result::CACHED
            } else if is_error {
                call_result::TOOL_ERROR
            } else {
                call_result::OK
            });
            HttpResponse::Ok()
                .insert_header((CACHE_CONTROL, "no-store"))
                .insert_header((CONTENT_TYPE, "application/json"))
                .body(body.with_cached(hit))
        }
        Err(CallFailure::CircuitOpen(retry)) => {
            labels(call_result::CIRCUIT_OPEN);
            let secs = retry.as_secs() + u64::from(retry.subsec_nanos() > 0);
            HttpResponse::ServiceUnavailable()
                .insert_header((RETRY_AFTER, secs.max(1).to_string()))
                .insert_header((CACHE_CONTROL, "no-store"))
                .json(json!({
                    "error": "circuit_open",
                    "message": "the MCP server's circuit breaker is open",
                    "server": server,
                    "retry_after_seconds": secs.max(1),
                }))
        }
        Err(CallFailure::Timeout(after)) => {
            labels(call_result::TIMEOUT);
            error(
                StatusCode::GATEWAY_TIMEOUT,
                "upstream_timeout",
                format!("no answer within {}", humantime::format_duration(after)),
            )
        }
        Err(CallFailure::Mcp(e)) => {
            labels(call_result::ERROR);
            tracing::warn!(server = %server, tool = tool_label, fault = ?e.fault, error = %e.message, "Tool call failed.");
            match e.fault {
                Fault::Upstream => HttpResponse::BadGateway()
                    .insert_header((CACHE_CONTROL, "no-store"))
                    .json(json!({"error": "upstream_error", "code": e.code, "message": e.message})),
                Fault::Transport => error(
                    StatusCode::BAD_GATEWAY,
                    "upstream_unavailable",
                    "the MCP server could not be reached",
                ),
                Fault::Internal => error(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal",
                    "internal error",
                ),
            }
        }
    }
}

/// The upstream call: breaker admission, timeout, outcome back to the breaker.
fn upstream_call(
    shared: web::Data<Arc<Shared>>,
    entry: Arc<ServerEntry>,
    index: usize,
    tool: &str,
    arguments: Map<String, Value>,
) -> impl Future<Output = Result<ToolResult, CallFailure>> + use<> {
    let tool = tool.to_owned();
    async move {
        let permit = shared
            .registry
            .admit(index)
            .map_err(CallFailure::CircuitOpen)?;
        let limit = entry.config.call_timeout;
        let started = Instant::now();
        let result = timeout(limit, entry.client.call_tool(&tool, arguments)).await;
        shared
            .metrics
            .tool_call_duration
            .observe(started.elapsed().as_secs_f64());
        match result {
            Err(_) => {
                permit.finish(false);
                Err(CallFailure::Timeout(limit))
            }
            Ok(Err(e)) => {
                permit.finish(!e.is_outage());
                Err(CallFailure::Mcp(e))
            }
            Ok(Ok(r)) => {
                permit.finish(true);
                Ok(r)
            }
        }
    }
}

/// A result ready to send: cached JSON text, or a fresh value.
enum Body {
    Text(String),
    Value(Value),
}

impl Body {
    fn is_error(&self) -> bool {
        match self {
            Body::Value(v) => v.get("isError") == Some(&Value::Bool(true)),
            // Only non-error results are stored.
            Body::Text(_) => false,
        }
    }

    /// The result object plus `"cached": hit`.
    fn with_cached(self, hit: bool) -> String {
        match self {
            Body::Value(Value::Object(mut map)) => {
                map.insert("cached".to_owned(), Value::Bool(hit));
                Value::Object(map).to_string()
            }
            Body::Value(other) => json!({"result": other, "cached": hit}).to_string(),
            Body::Text(text) => {
                // A stored result is always a JSON object: splice the flag before its `}`.
                let body = text.trim_end();
                let inner = &body[..body.len().saturating_sub(1)];
                let sep = if inner.trim_end().ends_with('{') {
                    ""
                } else {
                    ","
                };
                format!("{inner}{sep}\"cached\":{hit}}}")
            }
        }
    }
}

fn parse_arguments(body: &[u8]) -> Result<Map<String, Value>, String> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Map::new());
    }
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err("arguments must be a JSON object".to_owned()),
        Err(e) => Err(format!("invalid JSON: {e}")),
    }
}

async fn cache_stats(_id: Identity, shared: web::Data<Arc<Shared>>) -> HttpResponse {
    // moka counts lazily; settle pending work so `entries` and `bytes` are current.
    shared.cache.run_pending_tasks().await;
    HttpResponse::Ok().json(shared.cache.stats())
}

async fn clear_cache(id: Identity, shared: web::Data<Arc<Shared>>) -> HttpResponse {
    clear(&id, &shared, None, None)
}

async fn clear_server_cache(
    id: Identity,
    shared: web::Data<Arc<Shared>>,
    server: web::Path<String>,
) -> HttpResponse {
    clear(&id, &shared, Some(&server), None)
}

async fn clear_tool_cache(
    id: Identity,
    shared: web::Data<Arc<Shared>>,
    path: web::Path<(String, String)>,
) -> HttpResponse {
    clear(&id, &shared, Some(&path.0), Some(&path.1))
}

fn clear(id: &Identity, shared: &Shared, server: Option<&str>, tool: Option<&str>) -> HttpResponse {
    if let Err(e) = id.require_any(&shared.config.roles.cache_admin) {
        return actix_web::ResponseError::error_response(&e);
    }
    match server {
        None => shared.cache.invalidate_all(),
        Some(s) if shared.registry.index(s).is_none() => {
            return error(
                StatusCode::NOT_FOUND,
                "unknown_server",
                "no such MCP server",
            );
        }
        Some(s) => shared.cache.invalidate(s, tool),
    }
    tracing::info!(user = %id.id, server = server.unwrap_or("*"), tool = tool.unwrap_or("*"), "Tool cache invalidated.");
    HttpResponse::Ok().json(json!({"invalidated": {"server": server, "tool": tool}}))
}

#[cfg(test)]
mod tests;
