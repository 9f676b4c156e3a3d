//! Harness for the end-to-end tests: the real binaries (release `auth-sidecar`, `omni2`),
//! real gateways (Traefik, nginx, Caddy, Envoy), a real Python MCP server and Prometheus, all on
//! loopback with free ports and stopped by PID; plus the checks over the shipped Traefik
//! and compose files.
//!
//! Layout:
//! - [`process`]: free ports, release binaries (built once), `Proc` guards, `eventually`.
//! - [`http`]: raw HTTP/1.1 and WebSocket clients, the echo upstream.
//! - [`gateway`]: the gateway kinds of the matrix and their processes: Traefik (below), and
//!   nginx / Caddy / Envoy configs (contract §4.2).
//! - [`traefik`]: real Traefik on the shipped config, changed by one asserted transformation.
//! - [`idp`]: a real OpenID Provider (npm `oidc-provider`) issuing JWT access tokens for a
//!   resource, and ID tokens.
//! - [`mcp_gateway`]: server-everything, a recording proxy, the MCP SDK client scripts.
//! - [`stack`]: the sidecar with the shipped config, token minting.
//! - [`replicas`]: N sidecar and M omni2 replicas behind one Traefik (load balancing, health checks).
//! - [`netns`]: compose's networks as network namespaces (outside, Traefik, internal).
//! - [`browser`]: headless Chromium over WebDriver (chromedriver + fantoccini).
//! - [`status`]: the status page's stack (two MCP servers, omni2, sidecar, Traefik).
//! - [`deploy`]: schema validation and cross-checks of `traefik/` and `compose/`.
//! - [`kubernetes`]: `deploy/kubernetes/` rendering, validation and cross-checks.

pub mod browser;
pub mod deploy;
pub mod gateway;
pub mod http;
pub mod idp;
pub mod kubernetes;
pub mod mcp_gateway;
pub mod netns;
pub mod process;
pub mod replicas;
pub mod stack;
pub mod status;
pub mod traefik;
