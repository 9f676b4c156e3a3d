//! Prometheus metrics (text format). Names and labels are fixed here; label values come from
//! closed sets: configured server names, states from enums, tool names the server advertised
//! (unknown tools are counted as `other`), never from users or tokens.

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
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
    /// `omni2_tool_call_duration_seconds` (upstream calls only).
    pub tool_call_duration: Histogram,
    /// Cache hits, misses, evictions.
    pub cache: CacheCounters,
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
    /// `omni2_gateway_rate_limited_total`: `/mcp` tool calls refused by a rate limit.
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
        let tool_call_duration = must(Histogram::with_opts(
            HistogramOpts::new(
                "omni2_tool_call_duration_seconds",
                "Duration of upstream tool calls (cache hits excluded).",
            )
            .buckets(vec![
                0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
            ]),
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
        Self {
            registry,
            server_up,
            server_state,
            probe_duration,
            circuit_state,
            circuit_transitions,
            tool_calls,
            tool_call_duration,
            cache,
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

    /// Creates every `result` series at 0 for these tools of `server` (and `other`), so
    /// that rates of a result never seen yet read 0 rather than nothing.
    pub fn precreate_tool_calls<'a>(&self, server: &str, tools: impl Iterator<Item = &'a str>) {
        for tool in tools.chain([call_result::OTHER_TOOL]) {
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
}
