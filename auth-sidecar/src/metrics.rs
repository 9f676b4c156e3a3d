//! Prometheus metrics. Names and labels are fixed here; label values come from closed sets
//! (decision, reason, rule names from config), never from requests or tokens.

use std::sync::{Arc, Mutex};

use prometheus::{
    Encoder, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};

use crate::cache::CacheUse;
use crate::clock::unix_now;
use crate::config::Runtime;
use crate::decision::{Decision, OUTCOMES};
use crate::reason::{AllowReason, DenyReason};

pub const DECISIONS_TOTAL: &str = "auth_sidecar_decisions_total";
pub const DECISION_DURATION_SECONDS: &str = "auth_sidecar_decision_duration_seconds";
pub const TOKEN_CACHE_HITS_TOTAL: &str = "auth_sidecar_token_cache_hits_total";
pub const TOKEN_CACHE_MISSES_TOTAL: &str = "auth_sidecar_token_cache_misses_total";
pub const TOKEN_CACHE_ENTRIES: &str = "auth_sidecar_token_cache_entries";
pub const CONFIG_RELOADS_TOTAL: &str = "auth_sidecar_config_reloads_total";
pub const CONFIG_INFO: &str = "auth_sidecar_config_info";
pub const BUILD_INFO: &str = "auth_sidecar_build_info";
pub const JWKS_FETCH_TOTAL: &str = "auth_sidecar_jwks_fetch_total";
pub const JWKS_AGE_SECONDS: &str = "auth_sidecar_jwks_age_seconds";
pub const JWKS_KEYS: &str = "auth_sidecar_jwks_keys";
pub const JWKS_LAST_SUCCESS: &str = "auth_sidecar_jwks_last_success_timestamp_seconds";
pub const REVOCATION_RELOADS_TOTAL: &str = "auth_sidecar_revocation_reloads_total";
pub const REVOCATION_ENTRIES: &str = "auth_sidecar_revocation_entries";

/// Rule label used when no rule matched.
pub const NO_RULE_LABEL: &str = "none";

/// All sidecar metrics, registered in their own registry.
#[derive(Clone)]
pub struct Metrics {
    pub registry: Registry,
    decisions: IntCounterVec,
    duration: Histogram,
    cache_hits: IntCounter,
    cache_misses: IntCounter,
    cache_entries: IntGauge,
    pub config_reloads: IntCounterVec,
    config_info: IntGaugeVec,
    /// `auth_sidecar_revocation_reloads_total{result}`.
    pub revocation_reloads: IntCounterVec,
    revocation_entries: IntGaugeVec,
    /// `auth_sidecar_audit_events_total{result}`, `auth_sidecar_audit_dropped_total`.
    pub audit: audit_log::AuditCounters,
    /// JWKS series, refreshed from the active configuration's remote key sets at scrape
    /// time: the key sets own their counters and outlive configurations.
    jwks: JwksSeries,
    /// One scrape at a time: a scrape rewrites the JWKS series before gathering them.
    scrape: Arc<Mutex<()>>,
}

#[derive(Clone)]
struct JwksSeries {
    /// `auth_sidecar_jwks_fetch_total{issuer,result}`.
    fetches: IntCounterVec,
    age: IntGaugeVec,
    keys: IntGaugeVec,
    last_success: IntGaugeVec,
}

impl JwksSeries {
    fn new() -> Self {
        let vec = |name: &str, help: &str| {
            IntGaugeVec::new(Opts::new(name, help), &["issuer"]).expect("static metric definition")
        };
        JwksSeries {
            fetches: IntCounterVec::new(
                Opts::new(
                    JWKS_FETCH_TOTAL,
                    "JWKS fetch attempts by issuer and result.",
                ),
                &["issuer", "result"],
            )
            .expect("static metric definition"),
            age: vec(
                JWKS_AGE_SECONDS,
                "Seconds since the issuer's keys were last fetched successfully.",
            ),
            keys: vec(JWKS_KEYS, "Keys in the issuer's installed JWKS."),
            last_success: vec(
                JWKS_LAST_SUCCESS,
                "Unix time of the issuer's last successful JWKS fetch.",
            ),
        }
    }
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

/// Decision counters resolved once per configuration, so counting is one atomic add:
/// `[rule][outcome]`, with the last row for "no rule matched".
#[derive(Debug)]
pub struct DecisionCounters(Vec<[IntCounter; OUTCOMES]>);

fn outcome_labels(i: usize) -> (&'static str, &'static str) {
    if i < AllowReason::ALL.len() {
        ("allow", AllowReason::ALL[i].as_str())
    } else {
        ("deny", DenyReason::ALL[i - AllowReason::ALL.len()].as_str())
    }
}

impl Metrics {
    pub fn new() -> Self {
        let registry = Registry::new();
        let decisions = IntCounterVec::new(
            Opts::new(
                DECISIONS_TOTAL,
                "ForwardAuth decisions by outcome, reason and matched rule.",
            ),
            &["decision", "reason", "rule"],
        )
        .expect("static metric definition");
        // Most decisions take microseconds; the tail matters when a key set is slow.
        let duration = Histogram::with_opts(
            HistogramOpts::new(
                DECISION_DURATION_SECONDS,
                "Time to decide one ForwardAuth request.",
            )
            .buckets(vec![
                0.000_025, 0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01,
                0.025, 0.1, 1.0,
            ]),
        )
        .expect("static metric definition");
        let cache_hits = IntCounter::new(
            TOKEN_CACHE_HITS_TOTAL,
            "Token verifications answered by the cache.",
        )
        .expect("static metric definition");
        let cache_misses = IntCounter::new(
            TOKEN_CACHE_MISSES_TOTAL,
            "Token verifications that ran the crypto.",
        )
        .expect("static metric definition");
        let cache_entries = IntGauge::new(
            TOKEN_CACHE_ENTRIES,
            "Entries in the token verification cache.",
        )
        .expect("static metric definition");
        let config_reloads = IntCounterVec::new(
            Opts::new(
                CONFIG_RELOADS_TOTAL,
                "Configuration reload attempts by result.",
            ),
            &["result"],
        )
        .expect("static metric definition");
        let config_info = IntGaugeVec::new(
            Opts::new(
                CONFIG_INFO,
                "The active configuration; the value is always 1.",
            ),
            &["hash"],
        )
        .expect("static metric definition");
        let build_info = IntGaugeVec::new(
            Opts::new(BUILD_INFO, "Build information; the value is always 1."),
            &["version"],
        )
        .expect("static metric definition");
        build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION")])
            .set(1);
        let revocation_reloads = IntCounterVec::new(
            Opts::new(
                REVOCATION_RELOADS_TOTAL,
                "Revocation list reload attempts by result.",
            ),
            &["result"],
        )
        .expect("static metric definition");
        let revocation_entries = IntGaugeVec::new(
            Opts::new(
                REVOCATION_ENTRIES,
                "Unexpired entries in the revocation list by kind (jti, subject).",
            ),
            &["kind"],
        )
        .expect("static metric definition");
        for result in ["success", "failure"] {
            config_reloads.with_label_values(&[result]);
            revocation_reloads.with_label_values(&[result]);
        }
        let jwks = JwksSeries::new();
        let audit = audit_log::AuditCounters::new("auth_sidecar");
        audit.register(&registry).expect("metric names are unique");
        for c in [
            Box::new(decisions.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(duration.clone()),
            Box::new(cache_hits.clone()),
            Box::new(cache_misses.clone()),
            Box::new(cache_entries.clone()),
            Box::new(config_reloads.clone()),
            Box::new(config_info.clone()),
            Box::new(build_info),
            Box::new(revocation_reloads.clone()),
            Box::new(revocation_entries.clone()),
            Box::new(jwks.fetches.clone()),
            Box::new(jwks.age.clone()),
            Box::new(jwks.keys.clone()),
            Box::new(jwks.last_success.clone()),
        ] {
            registry.register(c).expect("metric names are unique");
        }
        crate::redis_pool::register(&registry).expect("metric names are unique");
        Metrics {
            registry,
            decisions,
            duration,
            cache_hits,
            cache_misses,
            cache_entries,
            config_reloads,
            config_info,
            revocation_reloads,
            revocation_entries,
            audit,
            jwks,
            scrape: Arc::default(),
        }
    }

    /// Resolves the decision counters for a configuration and marks it active.
    pub fn activate(&self, rt: &Runtime) -> DecisionCounters {
        self.config_info.reset();
        self.config_info.with_label_values(&[&rt.hash]).set(1);
        let names = rt
            .policy
            .rules
            .iter()
            .map(|r| &*r.name)
            .chain(std::iter::once(NO_RULE_LABEL));
        DecisionCounters(
            names
                .map(|rule| {
                    std::array::from_fn(|i| {
                        let (decision, reason) = outcome_labels(i);
                        self.decisions.with_label_values(&[decision, reason, rule])
                    })
                })
                .collect(),
        )
    }

    /// Counts one decision.
    pub fn record(
        &self,
        counters: &DecisionCounters,
        decision: &Decision,
        cache: CacheUse,
        seconds: f64,
    ) {
        let row = decision.rule().unwrap_or(counters.0.len() - 1);
        if let Some(row) = counters.0.get(row) {
            row[decision.outcome_index()].inc();
        }
        match cache {
            CacheUse::Hit => self.cache_hits.inc(),
            CacheUse::Miss => self.cache_misses.inc(),
            CacheUse::NotNeeded => {}
        }
        self.duration.observe(seconds);
    }

    /// Prometheus text exposition.
    pub fn render(&self, rt: &Runtime) -> String {
        // A poisoned lock only means another scrape panicked; the series are rewritten anyway.
        let _one_scrape = self.scrape.lock().unwrap_or_else(|e| e.into_inner());
        self.cache_entries.set(rt.cache.entry_count() as i64);
        let (jtis, subjects) = rt.revocation.counts(unix_now());
        self.revocation_entries
            .with_label_values(&["jti"])
            .set(jtis as i64);
        self.revocation_entries
            .with_label_values(&["subject"])
            .set(subjects as i64);
        self.set_jwks_gauges(rt);
        let mut out = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut out)
            .expect("text encoding into a Vec cannot fail");
        String::from_utf8(out).expect("the text format is UTF-8")
    }
}

impl Metrics {
    /// Sets the JWKS series from the active configuration's remote issuers; issuers no
    /// longer configured disappear.
    fn set_jwks_gauges(&self, rt: &Runtime) {
        let jwks = &self.jwks;
        jwks.fetches.reset();
        jwks.age.reset();
        jwks.keys.reset();
        jwks.last_success.reset();
        let now = unix_now();
        for remote in rt.issuers.iter().filter_map(|i| i.remote.as_deref()) {
            let issuer = [remote.issuer()];
            for (result, count) in remote.fetch_counts() {
                jwks.fetches
                    .with_label_values(&[remote.issuer(), result])
                    .inc_by(count);
            }
            jwks.keys
                .with_label_values(&issuer)
                .set(remote.key_count() as i64);
            if let Some(last) = remote.last_success() {
                jwks.age
                    .with_label_values(&issuer)
                    .set(now.saturating_sub(last).max(0));
                jwks.last_success.with_label_values(&issuer).set(last);
            }
        }
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
