//! Liveness, readiness and metrics.

use actix_web::http::header::ContentType;
use actix_web::{HttpResponse, web};

use super::AppState;
use crate::clock::unix_now;

/// The process is up and serving.
pub(super) async fn healthz() -> HttpResponse {
    HttpResponse::Ok()
        .content_type(ContentType::plaintext())
        .body("ok\n")
}

/// Ready when a configuration is loaded and every issuer has keys: static ones, or, for a
/// remote issuer marked `required`, a fetched set younger than `max_stale`. The body names
/// each issuer that is not ready and why, and the active config hash. A supervised
/// background task that is down (being restarted) also makes it not ready, and so do
/// revocations through Redis until their stored set is first loaded (or while their
/// subscriber task is down; a lost connection alone is not, see `revocation::shared`).
pub(super) async fn readyz(state: web::Data<AppState>) -> HttpResponse {
    let active = state.active.load();
    let now = unix_now();
    let mut missing = Vec::new();
    let mut not_ready = Vec::new();
    for issuer in &active.rt.issuers {
        match &issuer.remote {
            None if issuer.keys.is_empty() => {
                missing.push(issuer.issuer.as_str());
                not_ready.push(
                    serde_json::json!({"issuer": issuer.issuer, "reason": "no keys configured"}),
                );
            }
            None => {}
            Some(remote) => {
                if let Some(why) = remote.refresh_down() {
                    missing.push(issuer.issuer.as_str());
                    not_ready.push(serde_json::json!({
                        "issuer": issuer.issuer,
                        "reason": format!("the key refresh task is down: {why}"),
                    }));
                } else if let Err(why) = remote.availability(now)
                    && remote.settings().required
                {
                    missing.push(issuer.issuer.as_str());
                    not_ready.push(
                        serde_json::json!({"issuer": issuer.issuer, "reason": why.to_string()}),
                    );
                }
            }
        }
    }
    let revocations = active
        .rt
        .revocation
        .shared
        .as_ref()
        .and_then(|s| s.not_ready());
    if let Some(why) = &revocations {
        not_ready.push(serde_json::json!({"revocations": "redis", "reason": why}));
    }
    let tasks_down = state.tasks.down();
    for (task, why) in &tasks_down {
        not_ready.push(serde_json::json!({"task": task, "reason": why}));
    }
    let ready = missing.is_empty() && tasks_down.is_empty() && revocations.is_none();
    let body = serde_json::json!({
        "ready": ready,
        "config_hash": active.rt.hash,
        "issuers_without_keys": missing,
        "not_ready": not_ready,
        "version": env!("CARGO_PKG_VERSION"),
    });
    if ready {
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
