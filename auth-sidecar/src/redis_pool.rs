//! The optional Redis connection that replicas share state through (the top-level `redis:`
//! block): settings, a small pool of multiplexed connections that reconnect by themselves,
//! a timeout on every command, and the per-operation error and latency metrics.
//!
//! Connections are made lazily, on first use inside the tokio runtime: compiling a config
//! (`check-config`, `explain`) never touches the network. Each command is bounded by
//! `command_timeout` whatever the connection is doing (connecting, reconnecting); what a
//! failure means is the caller's business (`deny_on_error` for limits).
//!
//! The metrics are process-wide statics: the pool is rebuilt on every reload, and counters
//! must not restart with it. [`register`] adds them to a registry.

use std::fmt;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{LazyLock, OnceLock};
use std::time::{Duration, Instant};

use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, IntGauge, Opts, Registry};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};

pub const REDIS_ERRORS_TOTAL: &str = "auth_sidecar_redis_errors_total";
pub const REDIS_COMMAND_DURATION_SECONDS: &str = "auth_sidecar_redis_command_duration_seconds";
pub const REDIS_REVOCATION_SUBSCRIBED: &str = "auth_sidecar_redis_revocation_subscribed";

/// What a Redis command was for: the closed label set of the metrics.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Operation {
    /// One GCRA check of a `store: redis` limit.
    RateLimit,
    /// Reading the stored revocation set (on start and every reconnect).
    RevocationLoad,
    /// Subscribing to (and pinging on) the revocation channel.
    RevocationSubscribe,
    /// Writing and publishing a change (the `revoke`/`unrevoke` commands).
    RevocationWrite,
}

impl Operation {
    pub const ALL: [Operation; 4] = [
        Self::RateLimit,
        Self::RevocationLoad,
        Self::RevocationSubscribe,
        Self::RevocationWrite,
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            Self::RateLimit => "rate_limit",
            Self::RevocationLoad => "revocation_load",
            Self::RevocationSubscribe => "revocation_subscribe",
            Self::RevocationWrite => "revocation_write",
        }
    }
}

/// The Redis series, shared by every configuration of the process.
pub struct RedisMetrics {
    pub errors: IntCounterVec,
    pub duration: HistogramVec,
    /// 1 while the revocation subscriber is subscribed, else 0.
    pub subscribed: IntGauge,
}

pub static METRICS: LazyLock<RedisMetrics> = LazyLock::new(|| {
    let errors = IntCounterVec::new(
        Opts::new(
            REDIS_ERRORS_TOTAL,
            "Redis commands that failed or timed out, by operation.",
        ),
        &["operation"],
    )
    .expect("static metric definition");
    // A round trip on loopback is tens of microseconds; the timeout default is 50 ms.
    let duration = HistogramVec::new(
        HistogramOpts::new(
            REDIS_COMMAND_DURATION_SECONDS,
            "Time of one Redis command, including waiting for a connection, by operation.",
        )
        .buckets(vec![
            0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1,
            0.25, 1.0,
        ]),
        &["operation"],
    )
    .expect("static metric definition");
    for op in Operation::ALL {
        errors.with_label_values(&[op.as_str()]);
        duration.with_label_values(&[op.as_str()]);
    }
    let subscribed = IntGauge::new(
        REDIS_REVOCATION_SUBSCRIBED,
        "1 while revocations through Redis are subscribed (0 while reconnecting or unused).",
    )
    .expect("static metric definition");
    RedisMetrics {
        errors,
        duration,
        subscribed,
    }
});

/// Adds the Redis series to `registry`.
pub fn register(registry: &Registry) -> prometheus::Result<()> {
    registry.register(Box::new(METRICS.errors.clone()))?;
    registry.register(Box::new(METRICS.duration.clone()))?;
    registry.register(Box::new(METRICS.subscribed.clone()))
}

/// The `redis:` block, validated.
#[derive(Clone)]
pub struct RedisSettings {
    pub client: redis::Client,
    /// `host:port/db`, without credentials: what logs and errors show.
    pub display: String,
    /// The URL as written, compared on reload (never logged).
    url: String,
    pub key_prefix: String,
    pub pool_size: usize,
    pub connect_timeout: Duration,
    pub command_timeout: Duration,
    /// Subscribe to revocations through Redis.
    pub revocation: bool,
}

impl fmt::Debug for RedisSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisSettings")
            .field("at", &self.display)
            .field("key_prefix", &self.key_prefix)
            .field("pool_size", &self.pool_size)
            .field("connect_timeout", &self.connect_timeout)
            .field("command_timeout", &self.command_timeout)
            .field("revocation", &self.revocation)
            .finish()
    }
}

impl PartialEq for RedisSettings {
    fn eq(&self, other: &Self) -> bool {
        (
            &self.url,
            &self.key_prefix,
            self.pool_size,
            self.connect_timeout,
            self.command_timeout,
            self.revocation,
        ) == (
            &other.url,
            &other.key_prefix,
            other.pool_size,
            other.connect_timeout,
            other.command_timeout,
            other.revocation,
        )
    }
}

impl RedisSettings {
    /// Parses `url` (`redis://[user:pass@]host:port[/db]`); `Err` says what is wrong.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        url: &str,
        key_prefix: String,
        pool_size: usize,
        connect_timeout: Duration,
        command_timeout: Duration,
        revocation: bool,
    ) -> Result<Self, String> {
        if !url.starts_with("redis://") {
            return Err("expected redis://[user:pass@]host:port[/db] (TLS is not built in)".into());
        }
        let client = redis::Client::open(url).map_err(|e| format!("invalid Redis URL: {e}"))?;
        let info = client.get_connection_info();
        let display = format!("{}/{}", info.addr(), info.redis_settings().db());
        Ok(RedisSettings {
            client,
            display,
            url: url.to_owned(),
            key_prefix,
            pool_size,
            connect_timeout,
            command_timeout,
            revocation,
        })
    }
}

/// Why a Redis command gave no answer.
#[derive(Clone, Debug, thiserror::Error)]
pub enum StoreError {
    #[error("Redis at {at} did not answer within {timeout:?}")]
    Timeout { at: String, timeout: Duration },
    #[error("Redis at {at}: {message}")]
    Redis { at: String, message: String },
}

/// The connections of one configuration's `redis:` block.
pub struct RedisPool {
    pub settings: RedisSettings,
    conns: OnceLock<Result<Vec<ConnectionManager>, String>>,
    next: AtomicUsize,
    /// Whether the last command failed: a change is logged once, not per request.
    failing: AtomicBool,
}

impl fmt::Debug for RedisPool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisPool")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl RedisPool {
    pub fn new(settings: RedisSettings) -> Self {
        RedisPool {
            settings,
            conns: OnceLock::new(),
            next: AtomicUsize::new(0),
            failing: AtomicBool::new(false),
        }
    }

    fn config(&self) -> ConnectionManagerConfig {
        ConnectionManagerConfig::new()
            .set_connection_timeout(Some(self.settings.connect_timeout))
            .set_response_timeout(Some(self.settings.command_timeout))
            // Few, quick retries: every command is bounded by command_timeout anyway, and a
            // failed reconnect is retried on the next command.
            .set_number_of_retries(1)
            .set_min_delay(Duration::from_millis(50))
            .set_max_delay(Duration::from_millis(500))
    }

    /// A connection, round robin. Made lazily (needs the tokio runtime).
    fn connection(&self) -> Result<ConnectionManager, StoreError> {
        let conns = self.conns.get_or_init(|| {
            (0..self.settings.pool_size.max(1))
                .map(|_| {
                    ConnectionManager::new_lazy_with_config(
                        self.settings.client.clone(),
                        self.config(),
                    )
                    .map_err(|e| e.to_string())
                })
                .collect()
        });
        match conns {
            Ok(conns) => {
                let i = self.next.fetch_add(1, Ordering::Relaxed) % conns.len();
                Ok(conns[i].clone())
            }
            Err(message) => Err(self.redis_error(message)),
        }
    }

    fn redis_error(&self, message: impl fmt::Display) -> StoreError {
        StoreError::Redis {
            at: self.settings.display.clone(),
            message: message.to_string(),
        }
    }

    /// Runs `command` on a pooled connection within `command_timeout`, timing it and
    /// counting a failure under `op`.
    pub async fn run<T, F, Fut>(&self, op: Operation, command: F) -> Result<T, StoreError>
    where
        F: FnOnce(ConnectionManager) -> Fut,
        Fut: Future<Output = redis::RedisResult<T>>,
    {
        let started = Instant::now();
        let result = match self.connection() {
            Err(e) => Err(e),
            Ok(conn) => {
                match tokio::time::timeout(self.settings.command_timeout, command(conn)).await {
                    Ok(Ok(v)) => Ok(v),
                    Ok(Err(e)) => Err(self.redis_error(e)),
                    Err(_) => Err(StoreError::Timeout {
                        at: self.settings.display.clone(),
                        timeout: self.settings.command_timeout,
                    }),
                }
            }
        };
        METRICS
            .duration
            .with_label_values(&[op.as_str()])
            .observe(started.elapsed().as_secs_f64());
        self.note(op, result.as_ref().err());
        result
    }

    /// Counts a failure of `op` and logs when Redis starts or stops failing.
    pub fn note(&self, op: Operation, error: Option<&StoreError>) {
        match error {
            Some(e) => {
                METRICS.errors.with_label_values(&[op.as_str()]).inc();
                if !self.failing.swap(true, Ordering::Relaxed) {
                    tracing::error!(operation = op.as_str(), error = %e, "Redis is failing.");
                }
            }
            None => {
                if self.failing.swap(false, Ordering::Relaxed) {
                    tracing::info!(at = %self.settings.display, "Redis answers again.");
                }
            }
        }
    }

    /// A dedicated pub/sub connection, within `connect_timeout`.
    pub async fn pubsub(&self) -> Result<redis::aio::PubSub, StoreError> {
        match tokio::time::timeout(
            self.settings.connect_timeout,
            self.settings.client.get_async_pubsub(),
        )
        .await
        {
            Ok(Ok(p)) => Ok(p),
            Ok(Err(e)) => Err(self.redis_error(e)),
            Err(_) => Err(StoreError::Timeout {
                at: self.settings.display.clone(),
                timeout: self.settings.connect_timeout,
            }),
        }
    }
}
