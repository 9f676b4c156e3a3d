//! Liveness, readiness and metrics.

use actix_web::http::header::ContentType;
use actix_web::{HttpResponse, web};

use super::AppState;

/// The process is up and serving.
pub(super) async fn healthz() -> HttpResponse {
    HttpResponse::Ok()
        .content_type(ContentType::plaintext())
        .body("ok\n")
}

/// Ready when a configuration is loaded and every issuer has keys.
pub(super) async fn readyz(state: web::Data<AppState>) -> HttpResponse {
    let active = state.active.load();
    let missing: Vec<&str> = active
        .rt
        .issuers
        .iter()
        .filter(|i| i.keys.is_empty())
        .map(|i| i.issuer.as_str())
        .collect();
    let body = serde_json::json!({
        "ready": missing.is_empty(),
        "config_hash": active.rt.hash,
        "issuers_without_keys": missing,
        "version": env!("CARGO_PKG_VERSION"),
    });
    if missing.is_empty() {
        HttpResponse::Ok().json(body)
    } else {
        HttpResponse::ServiceUnavailable().json(body)
    }
}

pub(super) async fn metrics(state: web::Data<AppState>) -> HttpResponse {
    let active = state.active.load();
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4; charset=utf-8")
        .body(state.metrics.render(&active.rt))
}
