//! The actix route of `/mcp`: identity first, then the request handed to rmcp's
//! streamable-HTTP service as an `http` 1 request, and its response streamed back.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use http_body_util::{BodyExt, Full};
use serde_json::json;

use super::Gateway;
use crate::identity::Identity;

/// The session id header of revisions up to 2025-11-25.
const SESSION_ID: &str = "mcp-session-id";

/// Which user opened each session: a session id is a bearer secret, and another user
/// must not be able to ride someone else's session (nor its change notifications).
pub struct SessionOwners(moka::sync::Cache<String, String>);

impl SessionOwners {
    /// Entries idle twice as long as a session may be are forgotten (the session is gone).
    pub fn new(idle: Duration) -> Self {
        Self(
            moka::sync::Cache::builder()
                .max_capacity(1_000_000)
                .time_to_idle(idle.saturating_mul(2))
                .build(),
        )
    }
}

fn header_value(req: &HttpRequest, name: &str) -> Option<String> {
    req.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

/// `/mcp`, any method: rmcp answers 405 for the ones it does not serve.
pub async fn serve(
    id: Identity,
    req: HttpRequest,
    body: web::Bytes,
    gateway: web::Data<Arc<Gateway>>,
) -> HttpResponse {
    let session = header_value(&req, SESSION_ID);
    if let Some(s) = &session
        && gateway.owners.0.get(s).is_some_and(|owner| owner != id.id)
    {
        tracing::warn!(user = %id.id, "An /mcp session was presented by another user.");
        // As for any unknown session: the client starts a new one.
        return HttpResponse::NotFound().json(json!({
            "jsonrpc": "2.0",
            "id": null,
            "error": {"code": -32001, "message": "Session not found"},
        }));
    }
    if req.method() == actix_web::http::Method::POST
        && let Some(refused) = check_json(&body)
    {
        return refused;
    }
    if let Some(fast) = &gateway.fast
        && !gateway.service.config.cancellation_token.is_cancelled()
        && let Some(call) = fast.plain(&req, &body, &gateway.handler.catalog())
    {
        gateway.fast_answers.fetch_add(1, Ordering::Relaxed);
        return super::fast::answer(&gateway.handler, &id, call).await;
    }
    let user = id.id.clone();
    let request = match to_http(&req, body, id) {
        Ok(r) => r,
        Err(e) => {
            tracing::debug!(error = %e, "Unreadable /mcp request.");
            return HttpResponse::BadRequest().body("Bad Request: malformed request head");
        }
    };
    let response = gateway.service.handle(request).await;
    if session.is_none()
        && let Some(opened) = response
            .headers()
            .get(SESSION_ID)
            .and_then(|v| v.to_str().ok())
    {
        gateway.owners.0.insert(opened.to_owned(), user);
    }
    if req.method() == actix_web::http::Method::DELETE
        && response.status().is_success()
        && let Some(s) = session
    {
        gateway.owners.0.invalidate(&s);
    }
    from_http(response).await
}

/// A JSON-RPC error answer (HTTP 400, no id: the request was not understood).
fn bad_request(code: i32, message: &str) -> HttpResponse {
    HttpResponse::BadRequest().json(json!({
        "jsonrpc": "2.0",
        "id": null,
        "error": {"code": code, "message": message},
    }))
}

/// Refuses what no revision we serve accepts, with the JSON-RPC error rmcp would not give:
/// a body that is not JSON (-32700; rmcp answers 415), and batches (-32600; removed from
/// MCP in 2025-06-18), however large, without parsing their items.
/// The refusal, if any.
fn check_json(body: &[u8]) -> Option<HttpResponse> {
    if body.trim_ascii_start().first() == Some(&b'[') {
        return Some(bad_request(
            -32600,
            "Invalid Request: JSON-RPC batches are not supported; send one message per request",
        ));
    }
    serde_json::from_slice::<serde::de::IgnoredAny>(body)
        .err()
        .map(|e| bad_request(-32700, &format!("Parse error: {e}")))
}

/// The actix request as an `http` 1 request carrying the verified identity.
fn to_http(
    req: &HttpRequest,
    body: web::Bytes,
    id: Identity,
) -> Result<http::Request<Full<bytes::Bytes>>, http::Error> {
    let mut builder = http::Request::builder()
        .method(req.method().as_str())
        .uri(req.uri().to_string());
    for (name, value) in req.headers() {
        builder = builder.header(name.as_str(), value.as_bytes());
    }
    let mut request = builder.body(Full::new(body))?;
    request.extensions_mut().insert(id);
    Ok(request)
}

/// rmcp's response as an actix response: a known-length body in one piece, otherwise (SSE)
/// streamed as rmcp produces it.
async fn from_http(
    response: http::Response<
        http_body_util::combinators::BoxBody<bytes::Bytes, std::convert::Infallible>,
    >,
) -> HttpResponse {
    let (parts, body) = response.into_parts();
    let status =
        StatusCode::from_u16(parts.status.as_u16()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut out = HttpResponse::build(status);
    for (name, value) in &parts.headers {
        if name == http::header::CONTENT_LENGTH || name == http::header::TRANSFER_ENCODING {
            continue;
        }
        out.append_header((name.as_str(), value.as_bytes()));
    }
    if http_body::Body::size_hint(&body).exact().is_some() {
        // Infallible: the whole body is in memory.
        let bytes = match body.collect().await {
            Ok(collected) => collected.to_bytes(),
            Err(never) => match never {},
        };
        return out.body(bytes);
    }
    out.streaming(body.into_data_stream())
}
