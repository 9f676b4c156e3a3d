//! auth-sidecar: the ForwardAuth decision service in front of OMNI2.
//!
//! Traefik (or nginx, Caddy, Envoy) asks `/verify` about every request. The sidecar decides
//! from the forwarded facts (`X-Forwarded-Method/-Uri/-Host/-Proto/-For`) and answers `200`
//! with identity headers, or `401`/`403` with an RFC 6750 challenge and a small JSON body.
//!
//! Layout:
//! - [`config`]: YAML → validated, compiled [`config::Runtime`]; every problem reported at once;
//!   [`config::watch`]: hot reload on file change and SIGHUP.
//! - [`facts`]: what a decision is made from.
//! - [`token`]: finding the bearer token (fixed precedence, no fallback).
//! - [`jwt`] and [`keys`]: JWS parsing, algorithm pinning, signature and claim checks;
//!   [`keys::jwks`]: remote key sets (fetch, refresh, unknown-kid singleflight, staleness).
//! - [`revocation`]: revoked `jti`s and subject not-before times, hot-reloaded.
//! - [`ratelimit`]: per-rule token buckets; [`login`]: browser redirects to a login page.
//! - [`policy`]: ordered rules (host, path, method, CIDRs, action); path normalisation.
//! - [`net`]: CIDR sets and the right-most untrusted `X-Forwarded-For` walk.
//! - [`identity`]: claims → identity headers, and the optional identity signature.
//! - [`cache`]: token → verified identity, bounded, TTL never past `exp`.
//! - [`decide`]: the pure decision function; [`decision`]: outcomes and the HTTP answers.
//! - [`http`]: actix-web handlers; [`metrics`]: Prometheus; [`mint`]: development tokens.

pub mod cache;
pub mod config;
pub mod decide;
pub mod decision;
pub mod facts;
pub mod http;
pub mod identity;
pub mod jwt;
pub mod keys;
pub mod login;
pub mod metrics;
pub mod mint;
pub mod net;
pub mod policy;
pub mod ratelimit;
pub mod revocation;
pub mod token;

#[cfg(any(test, feature = "test-util"))]
pub mod test_util;
