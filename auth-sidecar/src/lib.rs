//! auth-sidecar: the ForwardAuth decision service in front of OMNI2.
//!
//! Traefik (or nginx, Caddy, Envoy) asks `/verify` about every request. The sidecar decides
//! from the forwarded facts (`X-Forwarded-Method/-Uri/-Host/-Proto/-For`) and answers `200`
//! with identity headers, or `401`/`403` with an RFC 6750 challenge and a small JSON body.
//!
//! Layout, in layers; a module uses only modules in lower layers (or its own children), and
//! `tests/e2e/layout.rs` fails on any cycle:
//! 1. leaves: [`reason`] (why allowed or denied: the closed vocabulary of bodies, logs and
//!    metric labels), [`clock`] (`unix_now`, read only at the edges), [`facts`] (what a
//!    decision is made from), [`net`] (CIDR sets, the right-most untrusted `X-Forwarded-For`
//!    walk), [`redis_pool`] (the optional Redis connections replicas share state through:
//!    timeouts, per-operation metrics), [`ratelimit`] (per-rule token buckets, in process
//!    or in Redis), [`supervise`] (restarts background tasks that die and reports them down
//!    to `/readyz`), [`mcp_resource`] (an MCP server as an OAuth protected resource: the
//!    canonical resource URI, its RFC 9728 metadata document, a token's audiences and
//!    scopes).
//! 2. [`policy`] (ordered rules; [`policy::path`] normalisation; [`policy::mcp`] per-tool
//!    matching on the mirrored MCP headers) and [`login`] (browser
//!    redirects to a login page); [`token`] (finding the bearer token, fixed precedence).
//! 3. [`identity`] (claims → identity headers, the optional identity signature),
//!    [`decision`] (the outcome as plain data), [`cache`] (token → verified identity,
//!    bounded, TTL never past `exp`), [`keys`] and [`keys::jwks`] (remote key sets: fetch,
//!    refresh, unknown-kid singleflight, staleness; each set counts its own fetches), [`jwt`]
//!    (JWS parsing, algorithm pinning, signature and claim checks).
//! 4. [`revocation`] (revoked `jti`s and subject not-before times, from a file and through
//!    Redis); [`config`] (YAML →
//!    validated, compiled [`config::Runtime`]; every problem reported at once). Until
//!    `Problems` leaves `config`, these two name each other: the one allow-listed cycle.
//! 5. [`decide`] (the pure decision function), [`mint`] (development tokens),
//!    [`metrics`] (Prometheus; JWKS series read from the key sets at scrape time),
//!    [`audit`] (one audit event per decision, sampled before it is built; the writer is
//!    the `audit-log` crate's).
//! 6. [`http`] (actix-web handlers and state, the public resource-metadata route;
//!    [`http::answer`] is the only place that builds responses, and sits low enough for
//!    `config` to pre-render its realm and the MCP rules' challenges).
//! 7. [`reload`] (hot reload on file change and SIGHUP).
//! 8. [`app`]: [`run`] serves a loaded config on given listeners until a shutdown future
//!    resolves, supervising the watcher; `main.rs` is arguments, logging, binding, signals.

pub mod app;
pub mod audit;
pub mod cache;
pub mod clock;
pub mod config;
pub mod decide;
pub mod decision;
pub mod facts;
pub mod http;
pub mod identity;
pub mod jwt;
pub mod keys;
pub mod login;
pub mod mcp_resource;
pub mod metrics;
pub mod mint;
pub mod net;
pub mod policy;
pub mod ratelimit;
pub mod reason;
pub mod redis_pool;
pub mod reload;
pub mod revocation;
pub mod supervise;
pub mod token;

pub use app::run;

#[cfg(any(test, feature = "test-util"))]
pub mod test_util;
