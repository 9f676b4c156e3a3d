//! End-to-end tests: one binary, so the release builds and fixtures are shared.
//!
//! - `deploy`: the shipped `traefik/` and `compose/` files against their JSON schemas, and
//!   the cross-checks (labels == file config, headers, ports, auth on every router).
//! - `layout`: neither crate's module graph has a cycle.
//! - `netns`: compose's two networks as network namespaces; only Traefik answers outside.
//! - `traefik`: real Traefik on the shipped config: the asserted transformation and the
//!   Traefik-only rows (CORS, rate limits, internal-only, stripping, floods, failures).
//! - `gateway_echo`: the release sidecar behind Traefik, nginx, Caddy and Envoy in front of an echo
//!   upstream (allow, 401, 403, forged identity never reaches the upstream).
//! - `idp`: the sidecar's remote key sets against a real OpenID Provider (npm
//!   `oidc-provider`): discovery, refresh, rotation by restart, outage, unknown kid.
//! - `mcp_auth`: the sidecar as an MCP resource server's front door behind real Traefik, with
//!   tokens from that provider: 401 + resource metadata, audience, ID tokens, scopes,
//!   per-tool rules and the protocol-version gate.
//! - `mcp_gateway`: the whole path: an MCP client (Python and TypeScript SDKs) with a token from
//!   that provider → Traefik → sidecar → omni2's `/mcp` → the Python reference server and
//!   server-everything; discovery, scopes, per-tool rules, bad input, no token leak.
//! - `kubernetes`: deploy/kubernetes rendered, validated (Kubernetes schemas, vendored CRDs)
//!   and cross-checked against traefik/dynamic and the binaries; ConfigMap symlink-swap reload.
//! - `replicas`: three sidecars and two omni2 behind one Traefik: spread, a killed sidecar
//!   replica under load, a WebSocket client of a killed omni2 replica resyncing; with Redis,
//!   a revocation within 1 s, a shared limit within the GCRA bound, an outage per `deny_on_error`.
//! - `gateway_omni2`: the issue 5 matrix per gateway (Traefik included) with the release omni2 on a unix
//!   socket (TCP behind Traefik), the Python MCP example server and Prometheus.
//! - `status_page`: omni2's `/status` page in headless Chromium behind Traefik and the
//!   sidecar: live rows, filter, notifications, reconnect, admin controls vs a user's.

mod deploy;
mod gateway_echo;
mod gateway_omni2;
mod idp;
mod kubernetes;
mod layout;
mod mcp_auth;
mod mcp_gateway;
mod netns;
mod replicas;
mod status_page;
mod traefik;
