//! Prometheus metrics (text format). Names and labels are fixed here; label values come from
//! closed sets: configured server names, states from enums, tool names the server advertised
//! (unknown tools are counted as `other`), never from users or tokens.

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};

use crate::breaker::CircuitState;
use crate::cache::CacheCounters;
use crate::health::HealthState;

/// Every omni2 metric, registered in its own registry.
#[derive(Clone, Debug)]
pub struct Metrics {
    registry: Registry,
    /// `omni2_mcp_server_up{server}`: 1 when healthy or degraded.
    pub server_up: IntGaugeVec,
    /// `omni2_mcp_server_state{server,state}`: 1 for the current state, 0 for the others.
    pub server_state: IntGaugeVec,
    /// `omni2_mcp_probe_duration_seconds{server}`.
    pub probe_duration: HistogramVec,
    /// `omni2_circuit_state{server,state}`: 1 for the current state.
    pub circuit_state: IntGaugeVec,
    /// `omni2_circuit_transitions_total{server,to}`.
    pub circuit_transitions: IntCounterVec,
    /// `omni2_tool_calls_total{server,tool,result}`.
    pub tool_calls: IntCounterVec,
    /// `omni2_tool_call_duration_seconds{server,tool}` (upstream calls only; `tool` as in
    /// `omni2_tool_calls_total`).
    pub tool_call_duration: HistogramVec,
    /// `omni2_mcp_probes_total{server,result}`: finished probes by [`probe_result`].
    pub probes: IntCounterVec,
    /// Cache hits, misses, evictions.
    pub cache: CacheCounters,
    /// `omni2_tool_cache_entries`: entries in the tool-result cache (set on scrape).
    pub cache_entries: IntGauge,
    /// `omni2_tool_cache_bytes`: bytes of cached results (set on scrape).
    pub cache_bytes: IntGauge,
    /// `omni2_http_requests_total{route,status}`: `route` is the matched pattern (a closed
    /// set: the routes mounted) or `unmatched`.
    pub http_requests: IntCounterVec,
    /// `omni2_ws_handshakes_rejected_total{reason}`, reasons in [`ws_reject`].
    pub ws_rejected: IntCounterVec,
    /// `omni2_ws_closes_total{reason}`, reasons in [`ws_close`].
    pub ws_closes: IntCounterVec,
    /// `omni2_config_reloads_total{result}`: `success` or `failure`.
    pub config_reloads: IntCounterVec,
    /// `omni2_config_reload_problems_total`: problems found in refused config files.
    pub config_reload_problems: IntCounter,
    /// `omni2_config_reload_last_success_timestamp_seconds`.
    pub config_reload_last_success: IntGauge,
    /// `omni2_ws_connections`.
    pub ws_connections: IntGauge,
    /// `omni2_ws_messages_total`: messages sent to clients.
    pub ws_messages: IntCounter,
    /// `omni2_ws_dropped_total`: deltas dropped for lagging clients.
    pub ws_dropped: IntCounter,
    /// `omni2_ws_origin_refused_total`: handshakes refused for an `Origin` not allowed.
    pub ws_origin_refused: IntCounter,
    /// `omni2_log_lines_lost_total`: log lines a broken log sink swallowed (from
    /// `safe_log`, brought up to date on every scrape).
    pub log_lines_lost: IntCounter,
    /// `omni2_audit_events_total{result}`, `omni2_audit_dropped_total`.
    pub audit: audit_log::AuditCounters,
    /// `omni2_gateway_rate_limited_total`: tool calls (REST and `/mcp`) refused by a tool's
    /// `rate_limit`.
    pub gateway_rate_limited: IntCounter,
}

/// Result labels of `omni2_tool_calls_total`: these three for answered calls, and
/// [`ApiError::UPSTREAM_CODES`](crate::api_error::ApiError::UPSTREAM_CODES) (the body's `error` code) for failed ones.
pub mod call_result {
    use crate::api_error::ApiError;

    /// Upstream answered (not `isError`).
    pub const OK: &str = "ok";
    /// Served from the cache.
    pub const CACHED: &str = "cached";
    /// Upstream answered `isError: true`.
    pub const TOOL_ERROR: &str = "tool_error";
    /// The `tool` label of tools the server does not advertise.
    pub const OTHER_TOOL: &str = "other";

    /// Every `result` value, answered ones first.
    pub fn all() -> impl Iterator<Item = &'static str> {
        [OK, CACHED, TOOL_ERROR]
            .into_iter()
            .chain(ApiError::UPSTREAM_CODES)
    }
}

/// The most tools of one server that get their own `tool` label; later ones in its
/// `tools/list` count as `other`. A server advertising thousands of tools cannot blow up
/// the series count: at most this many tools times the results, per configured server.
pub const MAX_TOOL_LABELS: usize = 64;

/// The `tool` label of `tool` on a server advertising `advertised` (in its order): its name
/// when it is one of the first [`MAX_TOOL_LABELS`], else `other`.
pub fn tool_label<'a>(advertised: &[crate::mcp::ToolInfo], tool: &'a str) -> &'a str {
    if advertised
        .iter()
        .take(MAX_TOOL_LABELS)
        .any(|t| t.name == tool)
    {
        tool
    } else {
        call_result::OTHER_TOOL
    }
}

/// `result` labels of `omni2_mcp_probes_total`.
pub mod probe_result {
    /// The server answered.
    pub const OK: &str = "ok";
    /// No answer within `probe_timeout`.
    pub const TIMEOUT: &str = "timeout";
    /// Connection refused or reset, bad HTTP status.
    pub const TRANSPORT_ERROR: &str = "transport_error";
    /// The server answered with an error.
    pub const UPSTREAM_ERROR: &str = "upstream_error";
    /// A failure on our side.
    pub const INTERNAL_ERROR: &str = "internal_error";
    /// Every value.
    pub const ALL: [&str; 5] = [OK, TIMEOUT, TRANSPORT_ERROR, UPSTREAM_ERROR, INTERNAL_ERROR];
}

/// `reason` labels of `omni2_ws_handshakes_rejected_total`.
pub mod ws_reject {
    /// `Origin` not in `websocket.allowed_origins` (403).
    pub const ORIGIN: &str = "origin";
    /// No valid identity (401).
    pub const IDENTITY: &str = "identity";
    /// Identity without a `roles.ws_status` role (403).
    pub const ROLE: &str = "role";
    /// Not a WebSocket handshake (400).
    pub const BAD_HANDSHAKE: &str = "bad_handshake";
    /// `websocket.max_connections` reached (accepted, then closed 1013).
    pub const TOO_MANY: &str = "too_many_connections";
    /// Every value.
    pub const ALL: [&str; 5] = [ORIGIN, IDENTITY, ROLE, BAD_HANDSHAKE, TOO_MANY];
}

/// `reason` labels of `omni2_ws_closes_total`: why an open status WebSocket ended.
pub mod ws_close {
    /// omni2 shutting down (1001).
    pub const SHUTDOWN: &str = "shutdown";
    /// The identity's `expires` passed (1008).
    pub const TOKEN_EXPIRED: &str = "token_expired";
    /// Lagged `max_lag_strikes` times (1013).
    pub const TOO_SLOW: &str = "client_too_slow";
    /// Nothing heard for `client_timeout` (1000).
    pub const IDLE: &str = "idle_timeout";
    /// The client closed, or the connection broke.
    pub const CLIENT: &str = "client";
    /// Sending failed: the socket is gone.
    pub const SEND_FAILED: &str = "send_failed";
    /// Every value.
    pub const ALL: [&str; 6] = [SHUTDOWN, TOKEN_EXPIRED, TOO_SLOW, IDLE, CLIENT, SEND_FAILED];
}

fn must<T>(r: prometheus::Result<T>) -> T {
    // expect: names and labels are constants checked by the unit test below.
    r.expect("metric definition is valid")
}

impl Metrics {
    /// Creates and registers every metric.
    pub fn new() -> Self {
        let registry = Registry::new();
        let reg = |c: Box<dyn prometheus::core::Collector>| must(registry.register(c));
        let server_up = must(IntGaugeVec::new(
            Opts::new(
                "omni2_mcp_server_up",
                "1 when the MCP server is healthy or degraded.",
            ),
            &["server"],
        ));
        let server_state = must(IntGaugeVec::new(
            Opts::new(
                "omni2_mcp_server_state",
                "1 for the MCP server's current health state.",
            ),
            &["server", "state"],
        ));
        let probe_duration = must(HistogramVec::new(
            HistogramOpts::new(
                "omni2_mcp_probe_duration_seconds",
                "Duration of MCP health probes, failures included.",
            )
            .buckets(vec![
                0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
            ]),
            &["server"],
        ));
        let circuit_state = must(IntGaugeVec::new(
            Opts::new(
                "omni2_circuit_state",
                "1 for the circuit breaker's current state.",
            ),
            &["server", "state"],
        ));
        let circuit_transitions = must(IntCounterVec::new(
            Opts::new(
                "omni2_circuit_transitions_total",
                "Circuit breaker transitions.",
            ),
            &["server", "to"],
        ));
        let tool_calls = must(IntCounterVec::new(
            Opts::new("omni2_tool_calls_total", "Tool calls by outcome."),
            &["server", "tool", "result"],
        ));
        let tool_call_duration = must(HistogramVec::new(
            HistogramOpts::new(
                "omni2_tool_call_duration_seconds",
                "Duration of upstream tool calls (cache hits excluded).",
            )
            .buckets(vec![
                0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
            ]),
            &["server", "tool"],
        ));
        let probes = must(IntCounterVec::new(
            Opts::new(
                "omni2_mcp_probes_total",
                "Finished MCP health probes by result.",
            ),
            &["server", "result"],
        ));
        let cache_entries = must(IntGauge::new(
            "omni2_tool_cache_entries",
            "Entries in the tool-result cache.",
        ));
        let cache_bytes = must(IntGauge::new(
            "omni2_tool_cache_bytes",
            "Bytes of results in the tool-result cache.",
        ));
        let http_requests = must(IntCounterVec::new(
            Opts::new(
                "omni2_http_requests_total",
                "HTTP requests by matched route pattern and status code.",
            ),
            &["route", "status"],
        ));
        let ws_rejected = must(IntCounterVec::new(
            Opts::new(
                "omni2_ws_handshakes_rejected_total",
                "/ws/mcp-status handshakes refused, by reason.",
            ),
            &["reason"],
        ));
        let ws_closes = must(IntCounterVec::new(
            Opts::new(
                "omni2_ws_closes_total",
                "/ws/mcp-status connections ended, by reason.",
            ),
            &["reason"],
        ));
        for r in ws_reject::ALL {
            ws_rejected.with_label_values(&[r]);
        }
        for r in ws_close::ALL {
            ws_closes.with_label_values(&[r]);
        }
        let config_reloads = must(IntCounterVec::new(
            Opts::new(
                "omni2_config_reloads_total",
                "Configuration reload attempts by result.",
            ),
            &["result"],
        ));
        for r in ["success", "failure"] {
            config_reloads.with_label_values(&[r]);
        }
        let config_reload_problems = must(IntCounter::new(
            "omni2_config_reload_problems_total",
            "Problems found in configuration files a reload refused.",
        ));
        let config_reload_last_success = must(IntGauge::new(
            "omni2_config_reload_last_success_timestamp_seconds",
            "When the configuration was last loaded or reloaded, Unix seconds.",
        ));
        config_reload_last_success.set(unix_seconds());
        let build_info = must(IntGaugeVec::new(
            Opts::new(
                "omni2_build_info",
                "Build information; the value is always 1.",
            ),
            &["version"],
        ));
        build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION")])
            .set(1);
        reg(Box::new(build_info));
        #[cfg(target_os = "linux")]
        reg(Box::new(
            prometheus::process_collector::ProcessCollector::for_self(),
        ));
        let cache = CacheCounters {
            hits: must(IntCounter::new(
                "omni2_tool_cache_hits_total",
                "Tool-result cache hits.",
            )),
            misses: must(IntCounter::new(
                "omni2_tool_cache_misses_total",
                "Tool-result cache misses (upstream calls).",
            )),
            evictions: must(IntCounter::new(
                "omni2_tool_cache_evictions_total",
                "Tool-result cache entries evicted for size or expiry.",
            )),
            redis_errors: must(IntCounterVec::new(
                Opts::new(
                    "omni2_cache_redis_errors_total",
                    "Shared tool-result cache (cache.redis) commands that failed or timed out.",
                ),
                &["operation"],
            )),
        };
        let ws_connections = must(IntGauge::new(
            "omni2_ws_connections",
            "Open /ws/mcp-status connections.",
        ));
        let ws_messages = must(IntCounter::new(
            "omni2_ws_messages_total",
            "Messages sent on /ws/mcp-status.",
        ));
        let ws_dropped = must(IntCounter::new(
            "omni2_ws_dropped_total",
            "Messages dropped for lagging /ws/mcp-status clients.",
        ));
        let ws_origin_refused = must(IntCounter::new(
            "omni2_ws_origin_refused_total",
            "/ws/mcp-status handshakes refused for an Origin not in websocket.allowed_origins.",
        ));
        let log_lines_lost = must(IntCounter::new(
            "omni2_log_lines_lost_total",
            "Log lines lost because the log sink (stderr) failed.",
        ));
        reg(Box::new(log_lines_lost.clone()));
        let gateway_rate_limited = must(IntCounter::new(
            "omni2_gateway_rate_limited_total",
            "/mcp tool calls refused because the caller's rate limit for the tool was used up.",
        ));
        reg(Box::new(gateway_rate_limited.clone()));
        let audit = audit_log::AuditCounters::new("omni2");
        must(audit.register(&registry));
        reg(Box::new(server_up.clone()));
        reg(Box::new(server_state.clone()));
        reg(Box::new(probe_duration.clone()));
        reg(Box::new(circuit_state.clone()));
        reg(Box::new(circuit_transitions.clone()));
        reg(Box::new(tool_calls.clone()));
        reg(Box::new(tool_call_duration.clone()));
        reg(Box::new(cache.hits.clone()));
        reg(Box::new(cache.misses.clone()));
        reg(Box::new(cache.evictions.clone()));
        for op in crate::cache::shared::OPERATIONS {
            cache.redis_errors.with_label_values(&[op]);
        }
        reg(Box::new(cache.redis_errors.clone()));
        reg(Box::new(ws_connections.clone()));
        reg(Box::new(ws_messages.clone()));
        reg(Box::new(ws_dropped.clone()));
        reg(Box::new(ws_origin_refused.clone()));
        for c in [
            Box::new(probes.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(cache_entries.clone()),
            Box::new(cache_bytes.clone()),
            Box::new(http_requests.clone()),
            Box::new(ws_rejected.clone()),
            Box::new(ws_closes.clone()),
            Box::new(config_reloads.clone()),
            Box::new(config_reload_problems.clone()),
            Box::new(config_reload_last_success.clone()),
        ] {
            reg(c);
        }
        Self {
            registry,
            server_up,
            server_state,
            probe_duration,
            circuit_state,
            circuit_transitions,
            tool_calls,
            tool_call_duration,
            probes,
            cache,
            cache_entries,
            cache_bytes,
            http_requests,
            ws_rejected,
            ws_closes,
            config_reloads,
            config_reload_problems,
            config_reload_last_success,
            ws_connections,
            ws_messages,
            ws_dropped,
            ws_origin_refused,
            log_lines_lost,
            audit,
            gateway_rate_limited,
        }
    }

    /// Sets the health gauges of `server` to `state`.
    pub fn set_health(&self, server: &str, state: HealthState) {
        self.server_up
            .with_label_values(&[server])
            .set(i64::from(state.is_up()));
        for s in HealthState::ALL {
            self.server_state
                .with_label_values(&[server, s.as_str()])
                .set(i64::from(s == state));
        }
    }

    /// Sets the circuit gauges of `server` to `state`.
    pub fn set_circuit(&self, server: &str, state: CircuitState) {
        for s in CircuitState::ALL {
            self.circuit_state
                .with_label_values(&[server, s.as_str()])
                .set(i64::from(s == state));
        }
    }

    /// Counts one tool call with `result` (from [`call_result`]).
    pub fn count_tool_call(&self, server: &str, tool: &str, result: &str) {
        self.tool_calls
            .with_label_values(&[server, tool, result])
            .inc();
    }

    /// Records an upstream call's duration.
    pub fn observe_tool_call(&self, server: &str, tool: &str, seconds: f64) {
        self.tool_call_duration
            .with_label_values(&[server, tool])
            .observe(seconds);
    }

    /// Counts a finished probe of `server` with `result` (from [`probe_result`]).
    pub fn count_probe(&self, server: &str, result: &str) {
        self.probes.with_label_values(&[server, result]).inc();
    }

    /// Sets the cache size gauges.
    pub fn set_cache_size(&self, entries: u64, bytes: u64) {
        self.cache_entries
            .set(i64::try_from(entries).unwrap_or(i64::MAX));
        self.cache_bytes
            .set(i64::try_from(bytes).unwrap_or(i64::MAX));
    }

    /// Counts one HTTP request.
    pub fn count_http(&self, route: &str, status: u16) {
        self.http_requests
            .with_label_values(&[route, &status.to_string()])
            .inc();
    }

    /// Creates every per-server series at 0 (probe results, tool `other`), so that rates
    /// of a server never probed yet read 0 rather than nothing.
    pub fn precreate_server(&self, server: &str) {
        for result in probe_result::ALL {
            self.probes.with_label_values(&[server, result]);
        }
        self.precreate_tool_calls(server, std::iter::empty());
    }

    /// Drops every series of a server removed from the configuration (a reload), so that
    /// label values stay the servers configured now. `tools`: its last advertised tools.
    pub fn forget_server<'a>(&self, server: &str, tools: impl Iterator<Item = &'a str>) {
        // Err only for a series that never existed: nothing to drop then.
        let _ = self.server_up.remove_label_values(&[server]);
        let _ = self.probe_duration.remove_label_values(&[server]);
        for s in HealthState::ALL {
            let _ = self.server_state.remove_label_values(&[server, s.as_str()]);
        }
        for s in CircuitState::ALL {
            let _ = self
                .circuit_state
                .remove_label_values(&[server, s.as_str()]);
            let _ = self
                .circuit_transitions
                .remove_label_values(&[server, s.as_str()]);
        }
        for r in probe_result::ALL {
            let _ = self.probes.remove_label_values(&[server, r]);
        }
        for tool in tools.take(MAX_TOOL_LABELS).chain([call_result::OTHER_TOOL]) {
            let _ = self.tool_call_duration.remove_label_values(&[server, tool]);
            for r in call_result::all() {
                let _ = self.tool_calls.remove_label_values(&[server, tool, r]);
            }
        }
    }

    /// Creates every `result` series at 0 for these tools of `server` (and `other`), so
    /// that rates of a result never seen yet read 0 rather than nothing. Only the first
    /// [`MAX_TOOL_LABELS`] tools get series (see [`tool_label`]).
    pub fn precreate_tool_calls<'a>(&self, server: &str, tools: impl Iterator<Item = &'a str>) {
        for tool in tools.take(MAX_TOOL_LABELS).chain([call_result::OTHER_TOOL]) {
            for result in call_result::all() {
                self.tool_calls.with_label_values(&[server, tool, result]);
            }
        }
    }

    /// The text exposition.
    pub fn render(&self) -> String {
        let lost = safe_log::lost_lines();
        let shown = self.log_lines_lost.get();
        if lost > shown {
            self.log_lines_lost.inc_by(lost - shown);
        }
        let mut out = Vec::new();
        // A text encoder writing to a Vec cannot fail on valid families.
        if let Err(e) = TextEncoder::new().encode(&self.registry.gather(), &mut out) {
            tracing::error!(error = %e, "Metrics encoding failed.");
        }
        String::from_utf8(out).unwrap_or_default()
    }
}

/// Middleware counting every request in `omni2_http_requests_total` by matched route
/// pattern (`unmatched` for none) and status. Wrap the whole `App` with
/// `actix_web::middleware::from_fn(count_http_requests)`; it finds the metrics that
/// [`crate::Omni2::configure`] mounted, and counts nothing without them.
pub async fn count_http_requests(
    req: actix_web::dev::ServiceRequest,
    next: actix_web::middleware::Next<impl actix_web::body::MessageBody>,
) -> Result<actix_web::dev::ServiceResponse<impl actix_web::body::MessageBody>, actix_web::Error> {
    let metrics = req.app_data::<actix_web::web::Data<Metrics>>().cloned();
    let answer = next.call(req).await;
    if let Some(metrics) = metrics {
        match &answer {
            Ok(res) => {
                let route = res.request().match_pattern();
                let route = route.as_deref().unwrap_or("unmatched");
                metrics.count_http(route, res.status().as_u16());
            }
            // An error not turned into a response yet: its status is the one sent.
            Err(e) => {
                let status = e.as_response_error().status_code().as_u16();
                metrics.count_http("unmatched", status);
            }
        }
    }
    answer
}

fn unix_seconds() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registers_and_renders() {
        let m = Metrics::new();
        m.set_health("a", HealthState::Degraded);
        m.set_circuit("a", CircuitState::Open);
        let text = m.render();
        assert!(
            text.contains("omni2_mcp_server_up{server=\"a\"} 1"),
            "{text}"
        );
        assert!(text.contains("omni2_circuit_state{server=\"a\",state=\"open\"} 1"));
        assert!(text.contains("omni2_mcp_server_state{server=\"a\",state=\"healthy\"} 0"));
        assert!(text.contains("omni2_log_lines_lost_total 0"), "{text}");
    }

    #[test]
    fn tool_labels_are_bounded_per_server() {
        let tools: Vec<crate::mcp::ToolInfo> = (0..MAX_TOOL_LABELS + 10)
            .map(|i| crate::test_util::tool(&format!("t{i}"), None))
            .collect();
        assert_eq!(tool_label(&tools, "t0"), "t0");
        let last = format!("t{}", MAX_TOOL_LABELS - 1);
        assert_eq!(tool_label(&tools, &last), last);
        let past = format!("t{MAX_TOOL_LABELS}");
        assert_eq!(tool_label(&tools, &past), "other");
        assert_eq!(tool_label(&tools, "unknown"), "other");
        let m = Metrics::new();
        m.precreate_tool_calls("a", tools.iter().map(|t| t.name.as_str()));
        let text = m.render();
        let labelled: std::collections::HashSet<&str> = text
            .lines()
            .filter(|l| l.starts_with("omni2_tool_calls_total{"))
            .filter_map(|l| l.split("tool=\"").nth(1)?.split('"').next())
            .collect();
        assert_eq!(labelled.len(), MAX_TOOL_LABELS + 1, "64 tools and `other`");
        m.forget_server("a", tools.iter().map(|t| t.name.as_str()));
        assert!(
            !m.render().contains("server=\"a\""),
            "every series of `a` dropped"
        );
    }
}
