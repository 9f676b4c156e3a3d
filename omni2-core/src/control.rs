//! Control actions: probe a server now, reset its breaker, invalidate its cache, disable or
//! enable it. One entry point, [`execute`], for both the REST routes and the WebSocket, so
//! the role check, the answer's shape and the audit call are the same everywhere.
//!
//! The role guard comes first: an identity without a role in `roles.control`
//! (`roles.cache_admin` for cache invalidation) gets `role_denied` and nothing happens.
//! Every attempt, refused or not, is logged and recorded once in the audit trail
//! ([`crate::audit::Audit::control_action`]; cache invalidations as
//! [`crate::audit::Audit::cache_invalidation`]).

use std::sync::Arc;
use std::time::Duration;

use actix_web::HttpResponse;
use serde_json::{Value, json};
use tokio::time::timeout;

use crate::api_error::ApiError;
use crate::breaker::CircuitState;
pub use crate::control_record::{Action, Request, ResetTo};
use crate::coordinator::{OpError, OpOutcome, ServerEntry, ServerOp};
use crate::identity::{Identity, IdentityError};
use crate::shared::Shared;

/// Why a control action did not run.
#[derive(Clone, Debug, PartialEq)]
pub enum ControlError {
    /// The identity lacks the role (`role_denied`, 403).
    Identity(IdentityError),
    /// Unknown server, disabled server, coordinator gone.
    Api(ApiError),
}

impl ControlError {
    /// The stable `error` code.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Identity(e) => e.as_str(),
            Self::Api(e) => e.as_str(),
        }
    }

    /// A sentence for people.
    pub fn message(&self) -> String {
        match self {
            Self::Identity(IdentityError::RoleDenied) => {
                "this action needs an admin role (roles.control / roles.cache_admin)".to_owned()
            }
            Self::Identity(e) => e.to_string(),
            Self::Api(ApiError::UnknownServer) => "no such MCP server".to_owned(),
            Self::Api(ApiError::ServerDisabled) => {
                "the MCP server is disabled: enable it first".to_owned()
            }
            Self::Api(ApiError::Internal) => {
                "the health coordinator did not answer (shutting down?)".to_owned()
            }
            Self::Api(e) => e.as_str().replace('_', " "),
        }
    }

    /// The REST answer.
    pub fn response(&self) -> HttpResponse {
        match self {
            Self::Identity(e) => actix_web::ResponseError::error_response(e),
            Self::Api(e) => e.response(),
        }
    }
}

/// The roles an action needs.
fn required_roles<'a>(shared: &'a Shared, action: &Action) -> &'a [String] {
    match action {
        Action::InvalidateCache { .. } => &shared.config.roles.cache_admin,
        _ => &shared.config.roles.control,
    }
}

/// The actions `who` may take (sent to the page, which shows only those buttons; the
/// server checks again on every request).
pub fn allowed_actions(shared: &Shared, who: &Identity) -> Vec<&'static str> {
    let probe = required_roles(shared, &Action::Probe);
    let cache = required_roles(shared, &Action::InvalidateCache { tool: None });
    Action::NAMES
        .into_iter()
        .filter(|name| {
            let roles = if *name == "invalidate_cache" {
                cache
            } else {
                probe
            };
            who.has_any_role(roles)
        })
        .collect()
}

/// Longest wait for a probe: the probe and its `tools/list`, each bounded by
/// `probe_timeout`, plus time for a probe slot.
fn probe_wait(entry: &ServerEntry) -> Duration {
    entry.config.probe_timeout * 2 + Duration::from_secs(5)
}

/// Checks the role, carries the action out, records the attempt. `Ok` is the answer's
/// body: `action`, `server`, and what the action reports.
pub async fn execute(
    shared: &Arc<Shared>,
    who: &Identity,
    request: Request,
) -> Result<Value, ControlError> {
    let result = run(shared, who, &request).await;
    let outcome = match &result {
        Ok(_) => "ok",
        Err(e) => e.code(),
    };
    tracing::info!(
        user = %who.id,
        action = request.action.as_str(),
        server = %request.server,
        outcome,
        "Control action."
    );
    match &request.action {
        Action::InvalidateCache { tool } => {
            shared
                .audit
                .cache_invalidation(who, Some(&request.server), tool.as_deref(), outcome);
        }
        action => shared
            .audit
            .control_action(who, action.as_str(), &request.server, outcome),
    }
    result
}

async fn run(
    shared: &Arc<Shared>,
    who: &Identity,
    request: &Request,
) -> Result<Value, ControlError> {
    who.require_any(required_roles(shared, &request.action))
        .map_err(ControlError::Identity)?;
    let entry = shared
        .registry
        .entry(&request.server)
        .ok_or(ControlError::Api(ApiError::UnknownServer))?;
    let server = request.server.as_str();
    let action = request.action.as_str();
    let op = match &request.action {
        Action::InvalidateCache { tool } => {
            shared.cache.invalidate(server, tool.as_deref());
            let invalidated = json!({"server": server, "tool": tool});
            return Ok(json!({"action": action, "server": server, "invalidated": invalidated}));
        }
        Action::Probe => ServerOp::Probe,
        Action::ResetBreaker(ResetTo::Closed) => ServerOp::ResetBreaker(CircuitState::Closed),
        Action::ResetBreaker(ResetTo::HalfOpen) => ServerOp::ResetBreaker(CircuitState::HalfOpen),
        Action::Disable => ServerOp::SetEnabled(false),
        Action::Enable => ServerOp::SetEnabled(true),
    };
    let answer = timeout(
        probe_wait(&entry),
        shared.registry.control_named(server, op),
    )
    .await
    .map_or(Err(OpError::Unavailable), |a| {
        // Removed by a reload meanwhile: it is not configured any more.
        a.unwrap_or(Err(OpError::Unavailable))
    });
    let outcome = answer.map_err(|e| {
        ControlError::Api(match e {
            OpError::Disabled => ApiError::ServerDisabled,
            OpError::Unavailable => ApiError::Internal,
        })
    })?;
    let mut body = json!({"action": action, "server": server});
    let fields = match outcome {
        OpOutcome::Probed {
            state,
            circuit,
            latency_ms,
            last_error,
        } => {
            json!({"state": state, "circuit": circuit, "latency_ms": latency_ms, "last_error": last_error})
        }
        OpOutcome::Breaker { from, to } => json!({"from": from, "to": to, "changed": from != to}),
        OpOutcome::Enabled { changed, state } => json!({"changed": changed, "state": state}),
    };
    if let (Some(body), Value::Object(fields)) = (body.as_object_mut(), fields) {
        body.extend(fields);
    }
    Ok(body)
}
