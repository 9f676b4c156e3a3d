//! REST routes (and the WebSocket route from `ws`), mounted by [`crate::Omni2::configure`].
//!
//! Error bodies are [`ApiError`]s: small JSON objects with a stable `error` code, the same
//! word as the `result` label of `omni2_tool_calls_total`; upstream details go to logs,
//! except the MCP error text on `upstream_error`, which the caller needs.

use std::sync::Arc;
use std::time::Duration;

use actix_web::http::header::{CACHE_CONTROL, CONTENT_TYPE};
use actix_web::{HttpResponse, web};
use serde_json::{Map, Value, json};
use tokio::time::{Instant, timeout};

use crate::api_error::ApiError;
use crate::audit::{self, ToolCall};
use crate::cache::{CacheKey, CacheScope, Uncached};
use crate::control;
use crate::coordinator::ServerEntry;
use crate::health::HealthState;
use crate::identity::{Identity, IdentityError};
use crate::mcp::ToolResult;
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
        .route(
            "/api/v1/mcp/servers/{name}/probe",
            web::post().to(probe_server),
        )
        .service(
            web::resource("/api/v1/mcp/servers/{name}/breaker/reset")
                .app_data(web::PayloadConfig::new(MAX_CONTROL_BODY_BYTES))
                .route(web::post().to(reset_breaker)),
        )
        .route(
            "/api/v1/mcp/servers/{name}/disable",
            web::post().to(disable_server),
        )
        .route(
            "/api/v1/mcp/servers/{name}/enable",
            web::post().to(enable_server),
        )
        .route("/ws/mcp-status", web::get().to(crate::ws::upgrade));
    crate::status_page::configure(cfg);
}

/// Largest accepted control body (`{"to":"half_open"}`).
const MAX_CONTROL_BODY_BYTES: usize = 1024;

/// Runs a control action and answers with its body (200) or its error.
async fn control(shared: &Arc<Shared>, id: &Identity, request: control::Request) -> HttpResponse {
    match control::execute(shared, id, request).await {
        Ok(body) => HttpResponse::Ok()
            .insert_header((CACHE_CONTROL, "no-store"))
            .json(body),
        Err(e) => e.response(),
    }
}

fn request(server: String, action: control::Action) -> control::Request {
    control::Request { server, action }
}

async fn probe_server(
    id: Identity,
    shared: web::Data<Arc<Shared>>,
    name: web::Path<String>,
) -> HttpResponse {
    let r = request(name.into_inner(), control::Action::Probe);
    control(&shared, &id, r).await
}

/// Body: empty, or `{"to": "closed" | "half_open"}` (default `closed`).
async fn reset_breaker(
    id: Identity,
    shared: web::Data<Arc<Shared>>,
    name: web::Path<String>,
    body: web::Bytes,
) -> HttpResponse {
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Body {
        #[serde(default)]
        to: control::ResetTo,
    }
    let to = if body.iter().all(u8::is_ascii_whitespace) {
        control::ResetTo::default()
    } else {
        match serde_json::from_slice::<Body>(&body) {
            Ok(b) => b.to,
            Err(e) => {
                return ApiError::BadArguments(format!(
                    "expected {{\"to\": \"closed\" | \"half_open\"}}: {e}"
                ))
                .response();
            }
        }
    };
    let r = request(name.into_inner(), control::Action::ResetBreaker(to));
    control(&shared, &id, r).await
}

async fn disable_server(
    id: Identity,
    shared: web::Data<Arc<Shared>>,
    name: web::Path<String>,
) -> HttpResponse {
    let r = request(name.into_inner(), control::Action::Disable);
    control(&shared, &id, r).await
}

async fn enable_server(
    id: Identity,
    shared: web::Data<Arc<Shared>>,
    name: web::Path<String>,
) -> HttpResponse {
    let r = request(name.into_inner(), control::Action::Enable);
    control(&shared, &id, r).await
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
    // moka counts lazily: settle pending work so the size gauges are current.
    shared.cache.run_pending_tasks().await;
    let stats = shared.cache.stats();
    shared.metrics.set_cache_size(stats.entries, stats.bytes);
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
        None => ApiError::UnknownServer.response(),
    }
}

/// A resolved tool call: which server, which tool, what arguments, and whether it may be
/// served from the cache.
struct Target {
    entry: Arc<ServerEntry>,
    server: String,
    tool: String,
    /// The tool's metric label: its name if the server advertises it, else `other`.
    tool_label: String,
    arguments: Map<String, Value>,
    /// `Some(ttl)` when the result may be cached.
    cache_ttl: Option<Duration>,
    /// Who shares its cached result.
    cache_scope: CacheScope,
}

/// What a call produced: a body to send and whether it came from the cache.
pub(crate) struct Answer {
    pub(crate) body: Body,
    pub(crate) is_hit: bool,
}

/// Why a tool call got no result: the caller's roles, or an [`ApiError`].
pub(crate) enum Refusal {
    Identity(IdentityError),
    Api(ApiError),
}

/// Whether `id` may call `tool` of `server`: its own `roles`, else `roles.tool_call`.
pub(crate) fn require_tool_roles(
    shared: &Shared,
    id: &Identity,
    server: &str,
    tool: &str,
) -> Result<(), IdentityError> {
    let entry = shared.registry.entry(server);
    let own = entry
        .as_deref()
        .and_then(|e| e.config.tools.get(tool))
        .and_then(|p| p.roles.as_deref());
    id.require_any(own.unwrap_or(&shared.config.roles.tool_call))
}

async fn call_tool(
    id: Identity,
    shared: web::Data<Arc<Shared>>,
    path: web::Path<(String, String)>,
    body: web::Bytes,
) -> HttpResponse {
    let (server, tool) = path.into_inner();
    match run_tool_call(&shared, &id, server, tool, || parse_arguments(&body)).await {
        Ok(answer) => HttpResponse::Ok()
            .insert_header((CACHE_CONTROL, "no-store"))
            .insert_header((CONTENT_TYPE, "application/json"))
            .body(answer.body.with_cached(answer.is_hit)),
        Err(Refusal::Identity(e)) => actix_web::ResponseError::error_response(&e),
        Err(Refusal::Api(e)) => e.response(),
    }
}

/// One tool call as REST and `/mcp` make it: role guard, rate limit, resolve, cache or breaker-guarded
/// upstream call with its timeout, then the metric and the audit record.
pub(crate) async fn run_tool_call(
    shared: &web::Data<Arc<Shared>>,
    id: &Identity,
    server: String,
    tool: String,
    arguments: impl FnOnce() -> Result<Map<String, Value>, String>,
) -> Result<Answer, Refusal> {
    let started = Instant::now();
    let refused = |result: &str| {
        shared.audit.tool_call(ToolCall {
            actor: id,
            server: &server,
            tool: &tool,
            arguments: None,
            result,
            cached: false,
            latency: started.elapsed(),
        });
    };
    if let Err(e) = require_tool_roles(shared, id, &server, &tool) {
        refused(e.as_str());
        return Err(Refusal::Identity(e));
    }
    // After the roles (a refused caller spends no tokens); one budget for REST and /mcp.
    let limit = shared
        .registry
        .entry(&server)
        .and_then(|e| e.config.tools.get(&tool).and_then(|p| p.rate_limit));
    if let Err(retry_after) = shared.limits.take(&server, &tool, limit, &id.id) {
        shared.metrics.gateway_rate_limited.inc();
        let e = ApiError::RateLimited { retry_after };
        refused(e.as_str());
        return Err(Refusal::Api(e));
    }
    let target = match resolve(shared, server.clone(), tool.clone(), arguments) {
        Ok(t) => t,
        Err(e) => {
            refused(e.as_str());
            return Err(Refusal::Api(e));
        }
    };
    let outcome = call(shared, &target, &id.id).await;
    let result = match &outcome {
        Ok(a) if a.is_hit => call_result::CACHED,
        Ok(a) if a.body.is_error() => call_result::TOOL_ERROR,
        Ok(_) => call_result::OK,
        Err(e) => e.as_str(),
    };
    shared
        .metrics
        .count_tool_call(&target.server, &target.tool_label, result);
    shared.audit.tool_call(ToolCall {
        actor: id,
        server: &target.server,
        tool: &target.tool,
        arguments: Some(&target.arguments),
        result,
        cached: matches!(&outcome, Ok(a) if a.is_hit),
        latency: started.elapsed(),
    });
    outcome.map_err(Refusal::Api)
}

/// Finds the server and tool and checks the arguments, without calling anything.
fn resolve(
    shared: &Shared,
    server: String,
    tool: String,
    arguments: impl FnOnce() -> Result<Map<String, Value>, String>,
) -> Result<Target, ApiError> {
    let entry = shared
        .registry
        .entry(&server)
        .ok_or(ApiError::UnknownServer)?;
    let arguments = arguments().map_err(ApiError::BadArguments)?;
    // By name: a reload may have published a new list since the entry was read.
    let status = shared
        .published
        .snapshot
        .borrow()
        .get(&server)
        .cloned()
        .ok_or(ApiError::UnknownServer)?;
    if status.state == HealthState::Disabled {
        return Err(ApiError::ServerDisabled);
    }
    // Known tool list: refuse unknown tools without bothering the server, and keep metric
    // labels to names the server advertised.
    let advertised = status.tools.iter().find(|t| t.name == tool);
    if advertised.is_none() && status.tool_count > 0 {
        return Err(ApiError::UnknownTool);
    }
    let policy = entry.config.tools.get(&tool);
    let is_cacheable = match policy.and_then(|p| p.cache) {
        Some(explicit) => explicit,
        None => {
            entry.config.trust_annotations
                && advertised.is_some_and(|t| t.read_only_hint == Some(true))
        }
    };
    let cache_ttl = is_cacheable.then(|| {
        policy
            .and_then(|p| p.ttl)
            .unwrap_or(shared.config.cache.default_ttl)
    });
    let cache_scope = policy.map(|p| p.cache_scope).unwrap_or_default();
    let tool_label = crate::metrics::tool_label(&status.tools, &tool).to_owned();
    Ok(Target {
        entry,
        server,
        tool,
        tool_label,
        arguments,
        cache_ttl,
        cache_scope,
    })
}

/// Through the cache when the tool is cacheable (keyed per `user` unless the tool is
/// `shared`), else straight upstream.
async fn call(
    shared: &web::Data<Arc<Shared>>,
    target: &Target,
    user: &str,
) -> Result<Answer, ApiError> {
    let upstream = upstream_call(shared.clone(), target);
    let Some(ttl) = target.cache_ttl else {
        let r = upstream.await?;
        return Ok(Answer {
            body: Body::Value(r.body),
            is_hit: false,
        });
    };
    let key = CacheKey::scoped(
        target.cache_scope,
        user,
        &target.server,
        &target.tool,
        &target.arguments,
    );
    match shared.cache.get_or_call(key, ttl, upstream).await {
        Ok((cached, is_hit)) => Ok(Answer {
            body: Body::Text(cached.json.clone()),
            is_hit,
        }),
        Err(Uncached::ToolError(v) | Uncached::NotStored(v)) => Ok(Answer {
            body: Body::Value(v),
            is_hit: false,
        }),
        Err(Uncached::Failed(e)) => Err(e),
    }
}

/// The upstream call: breaker admission, timeout, outcome back to the breaker.
fn upstream_call(
    shared: web::Data<Arc<Shared>>,
    target: &Target,
) -> impl Future<Output = Result<ToolResult, ApiError>> + use<> {
    let entry = target.entry.clone();
    let (server, tool) = (target.server.clone(), target.tool.clone());
    let tool_label = target.tool_label.clone();
    let arguments = target.arguments.clone();
    async move {
        let permit =
            shared
                .registry
                .admit_entry(&entry)
                .map_err(|retry_after| ApiError::CircuitOpen {
                    server: server.clone(),
                    retry_after,
                })?;
        let limit = entry.config.call_timeout;
        let started = Instant::now();
        let result = timeout(limit, entry.client.call_tool(&tool, arguments)).await;
        shared
            .metrics
            .observe_tool_call(&server, &tool_label, started.elapsed().as_secs_f64());
        let failure = match result {
            Ok(Ok(r)) => {
                permit.finish(true);
                return Ok(r);
            }
            Err(_) => {
                permit.finish(false);
                (ApiError::UpstreamTimeout(limit), String::new())
            }
            Ok(Err(e)) => {
                permit.finish(!e.is_outage());
                let detail = e.message.clone();
                (ApiError::from_mcp(e), detail)
            }
        };
        let (error, detail) = failure;
        tracing::warn!(
            server = %server,
            tool = %tool_label,
            error = error.as_str(),
            detail = %detail,
            "Tool call failed."
        );
        Err(error)
    }
}

/// A result ready to send: cached JSON text, or a fresh value.
pub(crate) enum Body {
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

/// The whole cache (every server): not a per-server control action.
async fn clear_cache(id: Identity, shared: web::Data<Arc<Shared>>) -> HttpResponse {
    if let Err(e) = id.require_any(&shared.config.roles.cache_admin) {
        shared.audit.cache_invalidation(&id, None, None, e.as_str());
        return actix_web::ResponseError::error_response(&e);
    }
    shared.cache.invalidate_all();
    shared.audit.cache_invalidation(&id, None, None, audit::OK);
    tracing::info!(user = %id.id, server = "*", tool = "*", "Tool cache invalidated.");
    HttpResponse::Ok().json(json!({"invalidated": {"server": null, "tool": null}}))
}

/// One server's cache: the `invalidate_cache` control action.
async fn clear_server_cache(
    id: Identity,
    shared: web::Data<Arc<Shared>>,
    server: web::Path<String>,
) -> HttpResponse {
    let action = control::Action::InvalidateCache { tool: None };
    control(&shared, &id, request(server.into_inner(), action)).await
}

/// One tool's cache: the `invalidate_cache` control action.
async fn clear_tool_cache(
    id: Identity,
    shared: web::Data<Arc<Shared>>,
    path: web::Path<(String, String)>,
) -> HttpResponse {
    let (server, tool) = path.into_inner();
    let action = control::Action::InvalidateCache { tool: Some(tool) };
    control(&shared, &id, request(server, action)).await
}

#[cfg(test)]
mod tests;
