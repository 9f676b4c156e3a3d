//! `GET /status`: the live status page. Its HTML, CSS and JS are embedded in the binary and
//! hold no data: the page reads everything from `/ws/mcp-status`. No identity is needed to
//! load it (the gateway serves it publicly); the WebSocket is what needs a token.
//!
//! The script and the style sheet are separate files so that the Content-Security-Policy
//! can forbid every inline script and style: `'self'` only, no CDN, no `eval`.

use actix_web::http::header::{CACHE_CONTROL, CONTENT_TYPE};
use actix_web::{HttpResponse, web};

const INDEX_HTML: &str = include_str!("../static/status/index.html");
const APP_JS: &str = include_str!("../static/status/app.js");
const APP_CSS: &str = include_str!("../static/status/app.css");

/// The page's policy: its own script, style and WebSocket, nothing else; no framing.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
    style-src 'self'; img-src 'self' data:; connect-src 'self'; base-uri 'none'; \
    form-action 'none'; frame-ancestors 'none'";

/// Mounts `/status`, `/status/app.js` and `/status/app.css`.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/status", web::get().to(index))
        .route("/status/app.js", web::get().to(script))
        .route("/status/app.css", web::get().to(style));
}

fn asset(content_type: &str, body: &'static str) -> HttpResponse {
    HttpResponse::Ok()
        .insert_header((CONTENT_TYPE, content_type))
        .insert_header(("content-security-policy", CONTENT_SECURITY_POLICY))
        .insert_header(("x-content-type-options", "nosniff"))
        .insert_header(("x-frame-options", "DENY"))
        .insert_header(("referrer-policy", "no-referrer"))
        // Revalidated on every load: a new binary's page never runs an old script.
        .insert_header((CACHE_CONTROL, "no-cache"))
        .body(body)
}

async fn index() -> HttpResponse {
    asset("text/html; charset=utf-8", INDEX_HTML)
}

async fn script() -> HttpResponse {
    asset("text/javascript; charset=utf-8", APP_JS)
}

async fn style() -> HttpResponse {
    asset("text/css; charset=utf-8", APP_CSS)
}
