//! The outcome of a forwardAuth call, as plain data; [`crate::http::answer`] is the only
//! place that turns it into an HTTP response.

use std::sync::Arc;

use actix_web::http::header::HeaderValue;

use crate::identity::IdentityHeaders;
pub use crate::reason::{AllowReason, DenyReason};

/// Index of a rule in the active policy; `None` when no rule matched.
pub type RuleIndex = Option<usize>;

/// How a deny is answered beyond its reason's status and challenge.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum DenyAnswer {
    /// The reason's status with `WWW-Authenticate` and the JSON body.
    #[default]
    Standard,
    /// A browser on a rule with `login_url`: `302` to this absolute URL instead of `401`.
    Redirect(HeaderValue),
    /// `429` with `Retry-After` in whole seconds (at least 1).
    RetryAfter(u64),
}

/// What the sidecar answers.
#[derive(Clone, Debug)]
pub enum Decision {
    Allow {
        rule: RuleIndex,
        reason: AllowReason,
        /// Identity headers to emit; `None` for public and preflight allows.
        identity: Option<Arc<IdentityHeaders>>,
    },
    Deny {
        rule: RuleIndex,
        reason: DenyReason,
        /// Whether a token was presented (RFC 6750 §3: error codes only then).
        token_presented: bool,
        /// Redirect or `Retry-After`; usually `Standard`.
        answer: DenyAnswer,
    },
}

/// Number of distinct outcomes: per-rule metric handles are kept in an array this long.
pub const OUTCOMES: usize = AllowReason::ALL.len() + DenyReason::ALL.len();

impl Decision {
    pub fn rule(&self) -> RuleIndex {
        match self {
            Decision::Allow { rule, .. } | Decision::Deny { rule, .. } => *rule,
        }
    }

    pub fn is_allow(&self) -> bool {
        matches!(self, Decision::Allow { .. })
    }

    /// The reason label: an allow reason or a deny reason.
    pub fn reason_str(&self) -> &'static str {
        match self {
            Decision::Allow { reason, .. } => reason.as_str(),
            Decision::Deny { reason, .. } => reason.as_str(),
        }
    }

    /// Dense index of this outcome in `0..OUTCOMES`, for pre-resolved metric handles.
    pub fn outcome_index(&self) -> usize {
        match self {
            Decision::Allow { reason, .. } => reason.index(),
            Decision::Deny { reason, .. } => AllowReason::ALL.len() + reason.index(),
        }
    }
}
