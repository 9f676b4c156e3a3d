//! The fast path of `/mcp`: a `tools/call` on the stateless revision (2026-07-28), answered
//! without rmcp's per-request machinery (a spawned service with its channels and peer, the
//! header checks' JSON round trip of the whole message, a clone of the tool per lookup),
//! which costs several times a cache hit itself.
//!
//! It takes a request only when every check rmcp 3.11 makes on the way to our handler
//! (`StreamableHttpService::handle` → `handle_post` → `serve_negotiated_request_directly`)
//! is known to pass: [`FastPath::plain`] lists them, each as strict as rmcp's or stricter.
//! Anything else, unusual but valid included, takes the full path; so does everything
//! after shutdown. A taken call runs [`GatewayHandler::call`], the function behind rmcp's
//! `call_tool`, and its answer is built from rmcp's own message types the way rmcp builds
//! it (the 2026-07-28 result fix-ups, the HTTP status of an error). Sessions always take
//! the full path: their worker owns the idle timer and the event ids a resumed stream
//! replays, which a bypass would skip. `gateway/tests.rs` sends each request both ways.

use actix_web::http::header::{self, HeaderMap};
use actix_web::http::{Method, StatusCode};
use actix_web::{HttpRequest, HttpResponse};
use rmcp::model::{
    CallToolResponse, ErrorCode, JsonObject, JsonRpcVersion2_0, ProtocolVersion, RequestId,
    RequestMetaObject, ServerJsonRpcMessage, ServerResult,
};
use rmcp::transport::StreamableHttpServerConfig;
use serde::Deserialize;

use super::catalog::Catalog;
use super::handler::GatewayHandler;
use crate::identity::Identity;

const JSON: &str = "application/json";
const EVENT_STREAM: &str = "text/event-stream";
/// rmcp's wrapping of a header value that is not plain ASCII (SEP-2243).
const BASE64_PREFIX: &str = "=?base64?";
const BASE64_SUFFIX: &str = "?=";

/// A plain stateless `tools/call`: a JSON-RPC request whose params hold `name`,
/// `arguments` and `_meta` and nothing else, each part read with rmcp's own type. rmcp's
/// parse of the whole message (untagged, buffered) costs a third of a cache hit; on these
/// bodies it reads the same (`gateway/tests.rs` checks), and any other body goes to rmcp.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Call {
    /// Read to require `"2.0"`.
    #[serde(rename = "jsonrpc")]
    _jsonrpc: JsonRpcVersion2_0,
    pub(super) id: RequestId,
    /// Read to require `tools/call`.
    #[serde(rename = "method")]
    _method: ToolsCall,
    pub(super) params: Params,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Params {
    pub(super) name: String,
    #[serde(default)]
    pub(super) arguments: Option<JsonObject>,
    #[serde(rename = "_meta")]
    pub(super) meta: RequestMetaObject,
}

/// The method `tools/call`, nothing else.
#[derive(Deserialize)]
enum ToolsCall {
    #[serde(rename = "tools/call")]
    ToolsCall,
}

/// `body` as a plain `tools/call`, if it is one.
pub(super) fn parse(body: &[u8]) -> Option<Call> {
    serde_json::from_slice(body).ok()
}

/// What the fast path needs of the service's config, read once.
pub(super) struct FastPath {
    /// `allowed_hosts` as rmcp normalises them; `None`: every host (an empty list).
    hosts: Option<Vec<(String, Option<u16>)>>,
    /// The service answers a one-message reply as JSON, not as an SSE stream.
    is_json: bool,
    requires_meta: bool,
}

impl FastPath {
    pub(super) fn new(config: &StreamableHttpServerConfig) -> Self {
        let hosts = (!config.allowed_hosts.is_empty()).then(|| {
            config
                .allowed_hosts
                .iter()
                .filter_map(|h| allowed_authority(h))
                .collect()
        });
        Self {
            hosts,
            is_json: config.json_response,
            requires_meta: config.stateless_protocol_metadata_required,
        }
    }

    /// The call, when `req` with `body` is a `tools/call` that rmcp would hand to our
    /// handler unchanged; `None`: let rmcp have it. The checks follow rmcp's order.
    pub(super) fn plain(&self, req: &HttpRequest, body: &[u8], catalog: &Catalog) -> Option<Call> {
        let headers = req.headers();
        if !self.is_json || self.requires_meta || req.method() != Method::POST {
            return None;
        }
        // Sessions, resumption, and the Origin check stay rmcp's.
        if ["mcp-session-id", "last-event-id", "origin"]
            .iter()
            .any(|h| headers.contains_key(*h))
        {
            return None;
        }
        if !self.is_allowed_host(headers) || !accepts_json_and_sse(headers) {
            return None;
        }
        let content_type = single(headers, header::CONTENT_TYPE.as_str())?;
        let essence = content_type.split(';').next().unwrap_or_default();
        if !essence.trim().eq_ignore_ascii_case(JSON) {
            return None;
        }
        let modern = ProtocolVersion::V_2026_07_28;
        if single(headers, "mcp-protocol-version")? != modern.as_str()
            || single(headers, "mcp-method")? != "tools/call"
        {
            return None;
        }
        let call = parse(body)?;
        // Routed stateless, and negotiated per request, only with complete `_meta` naming
        // the same revision as the header.
        let meta = &call.params.meta;
        if meta.protocol_version().as_ref() != Some(&modern)
            || !meta.missing_required_keys(&modern).is_empty()
        {
            return None;
        }
        // `Mcp-Name` as sent, equal to the body's name (a Base64-wrapped one is rmcp's to
        // decode); `Mcp-Param-*` checks only for tools whose schema asks for them.
        let name = single(headers, "mcp-name")?;
        let is_wrapped = name.starts_with(BASE64_PREFIX) && name.ends_with(BASE64_SUFFIX);
        if is_wrapped || name != call.params.name || catalog.mirrors_params(name) {
            return None;
        }
        Some(call)
    }

    /// rmcp's DNS-rebinding check, on a single `Host` header.
    fn is_allowed_host(&self, headers: &HeaderMap) -> bool {
        let Some(host) = single(headers, header::HOST.as_str()) else {
            return false;
        };
        let Ok(authority) = http::uri::Authority::try_from(host) else {
            return false;
        };
        let Some(hosts) = &self.hosts else {
            return true;
        };
        let (host, port) = (normalize_host(authority.host()), authority.port_u16());
        hosts
            .iter()
            .any(|(h, p)| *h == host && p.is_none_or(|p| port == Some(p)))
    }
}

/// The handler's answer to `call`, as rmcp would send it.
pub(super) async fn answer(handler: &GatewayHandler, id: &Identity, call: Call) -> HttpResponse {
    let Call {
        id: rpc_id, params, ..
    } = call;
    let outcome = handler.call(id, &params.name, params.arguments).await;
    let message = match outcome {
        Ok(result) => {
            let mut result = ServerResult::from(CallToolResponse::from(result));
            result.fill_missing_cache_hints();
            ServerJsonRpcMessage::response(result, rpc_id)
        }
        Err(mut error) => {
            // rmcp's handler dispatch: 2026-07-28 peers get INVALID_PARAMS for this one.
            if error.code == ErrorCode::RESOURCE_NOT_FOUND {
                error.code = ErrorCode::INVALID_PARAMS;
            }
            ServerJsonRpcMessage::error(error, Some(rpc_id))
        }
    };
    match serde_json::to_vec(&message) {
        Ok(body) => HttpResponse::build(status(&message))
            .insert_header((header::CONTENT_TYPE, JSON))
            .body(body),
        Err(e) => {
            tracing::error!(error = %e, "An /mcp answer did not serialise.");
            HttpResponse::InternalServerError().body(format!(
                "Encounter an error when serialize json response: {e}"
            ))
        }
    }
}

/// rmcp's HTTP status of a stateless one-message answer (request `_meta` complete).
fn status(message: &ServerJsonRpcMessage) -> StatusCode {
    let ServerJsonRpcMessage::Error(error) = message else {
        return StatusCode::OK;
    };
    match error.error.code {
        ErrorCode::UNSUPPORTED_PROTOCOL_VERSION
        | ErrorCode::MISSING_REQUIRED_CLIENT_CAPABILITY
        | ErrorCode::HEADER_MISMATCH => StatusCode::BAD_REQUEST,
        ErrorCode::METHOD_NOT_FOUND => StatusCode::NOT_FOUND,
        _ => StatusCode::OK,
    }
}

/// The only value of `name`, as text; `None` when absent, repeated or not visible ASCII.
fn single<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    let mut values = headers.get_all(name);
    let value = values.next()?;
    if values.next().is_some() {
        return None;
    }
    value.to_str().ok()
}

/// Both media types offered, in the plain form only (no parameters, no quotes), where
/// rmcp's parsing of `Accept` cannot read anything else.
fn accepts_json_and_sse(headers: &HeaderMap) -> bool {
    let (mut json, mut sse) = (false, false);
    for value in headers.get_all(header::ACCEPT) {
        let Ok(value) = value.to_str() else {
            return false;
        };
        for entry in value.split(',') {
            if entry.contains([';', '"']) {
                return false;
            }
            let essence = entry.trim();
            json |= essence.eq_ignore_ascii_case(JSON);
            sse |= essence.eq_ignore_ascii_case(EVENT_STREAM);
        }
    }
    json && sse
}

fn normalize_host(host: &str) -> String {
    host.trim_matches('[')
        .trim_matches(']')
        .to_ascii_lowercase()
}

/// One `allowed_hosts` entry as rmcp reads it.
fn allowed_authority(allowed: &str) -> Option<(String, Option<u16>)> {
    let allowed = allowed.trim();
    if allowed.is_empty() {
        return None;
    }
    Some(match http::uri::Authority::try_from(allowed) {
        Ok(a) => (normalize_host(a.host()), a.port_u16()),
        Err(_) => (normalize_host(allowed), None),
    })
}
