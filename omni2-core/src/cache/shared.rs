//! The optional second level of the tool-result cache (`cache.redis`): results shared by
//! every omni2 replica through one Redis.
//!
//! A local miss reads Redis (`GET` + `PTTL` in one round trip); a Redis miss calls upstream
//! once per replica (the local singleflight) and stores the result with `SET … PX ttl`. A
//! cache is not a security decision: any Redis error or timeout is counted in
//! `omni2_cache_redis_errors_total{operation}`, logged when Redis starts and stops failing,
//! and the call goes on as without Redis.
//!
//! The key is `key_prefix` + the hex SHA-256 of the canonical [`CacheKey`] (server, tool,
//! arguments with sorted keys, and the user for `per_user` tools), so argument order never matters and no argument text
//! reaches Redis's key space.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use prometheus::IntCounterVec;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use tokio::sync::OnceCell;

use super::CacheKey;
use crate::config::SharedCacheConfig;

/// The `operation` labels of `omni2_cache_redis_errors_total`.
pub const OPERATIONS: [&str; 2] = [GET, SET];
const GET: &str = "get";
const SET: &str = "set";

/// A result read from Redis: its JSON text and how long Redis still keeps it.
#[derive(Debug, PartialEq, Eq)]
pub struct SharedHit {
    pub json: String,
    pub remaining: Duration,
}

/// The Redis level of the cache.
pub struct SharedCache {
    client: redis::Client,
    conn: OnceCell<ConnectionManager>,
    key_prefix: String,
    connect_timeout: Duration,
    command_timeout: Duration,
    errors: IntCounterVec,
    /// Whether the last command failed: a change is logged once, not per call.
    failing: AtomicBool,
}

impl std::fmt::Debug for SharedCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedCache")
            .field("key_prefix", &self.key_prefix)
            .field("command_timeout", &self.command_timeout)
            .finish_non_exhaustive()
    }
}

impl SharedCache {
    /// No connection yet: the first call connects (inside the runtime), a failed connect is
    /// retried on the next. `Err` only for a URL the config check would have refused.
    pub fn new(config: &SharedCacheConfig, errors: IntCounterVec) -> Result<Self, String> {
        let client = redis::Client::open(config.url.as_str())
            .map_err(|e| format!("cache.redis.url: {e}"))?;
        for op in OPERATIONS {
            errors.with_label_values(&[op]);
        }
        Ok(Self {
            client,
            conn: OnceCell::new(),
            key_prefix: config.key_prefix.clone(),
            connect_timeout: config.connect_timeout,
            command_timeout: config.command_timeout,
            errors,
            failing: AtomicBool::new(false),
        })
    }

    /// `key_prefix` + hex SHA-256 of the canonical key.
    pub fn key(&self, key: &CacheKey) -> String {
        // JSON strings keep the three parts apart whatever they contain.
        let canonical = match &key.user {
            None => serde_json::json!([&*key.server, &*key.tool, key.args]),
            Some(user) => serde_json::json!([&*key.server, &*key.tool, key.args, &**user]),
        }
        .to_string();
        let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, canonical.as_bytes());
        let mut out = self.key_prefix.clone();
        for b in digest.as_ref() {
            out.push_str(&format!("{b:02x}"));
        }
        out
    }

    /// The stored result, or `None` on a miss or any failure (counted).
    pub async fn get(&self, key: &str) -> Option<SharedHit> {
        let read = self
            .run(GET, |mut c| async move {
                redis::pipe()
                    .get(key)
                    .cmd("PTTL")
                    .arg(key)
                    .query_async::<(Option<String>, i64)>(&mut c)
                    .await
            })
            .await?;
        match read {
            (Some(json), ms) if ms > 0 => {
                // Only a JSON object is a tool result; anything else is not ours.
                match serde_json::from_str::<serde_json::Value>(&json) {
                    Ok(v) if v.is_object() => Some(SharedHit {
                        json,
                        remaining: Duration::from_millis(ms as u64),
                    }),
                    _ => {
                        self.failed(GET, "the stored value is not a JSON object");
                        None
                    }
                }
            }
            // A miss, or a key without expiry (not written by omni2): not served.
            _ => None,
        }
    }

    /// Stores `json` for `ttl`; a failure is counted and otherwise ignored.
    pub async fn set(&self, key: &str, json: &str, ttl: Duration) {
        let ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1);
        self.run(SET, |mut c| async move {
            redis::cmd("SET")
                .arg(key)
                .arg(json)
                .arg("PX")
                .arg(ms)
                .query_async::<()>(&mut c)
                .await
        })
        .await;
    }

    /// Runs one command within `command_timeout` (connecting included); `None` on failure.
    async fn run<T, F, Fut>(&self, op: &'static str, command: F) -> Option<T>
    where
        F: FnOnce(ConnectionManager) -> Fut,
        Fut: Future<Output = redis::RedisResult<T>>,
    {
        let attempt = async {
            let conn = self
                .conn
                .get_or_try_init(|| {
                    let config = ConnectionManagerConfig::new()
                        .set_connection_timeout(Some(self.connect_timeout))
                        .set_response_timeout(Some(self.command_timeout))
                        .set_number_of_retries(1)
                        .set_min_delay(Duration::from_millis(50))
                        .set_max_delay(Duration::from_millis(500));
                    ConnectionManager::new_with_config(self.client.clone(), config)
                })
                .await?
                .clone();
            command(conn).await
        };
        match tokio::time::timeout(self.command_timeout, attempt).await {
            Ok(Ok(v)) => {
                if self.failing.swap(false, Ordering::Relaxed) {
                    tracing::info!("The shared cache's Redis answers again.");
                }
                Some(v)
            }
            Ok(Err(e)) => {
                self.failed(op, &e.to_string());
                None
            }
            Err(_) => {
                self.failed(op, &format!("no answer within {:?}", self.command_timeout));
                None
            }
        }
    }

    fn failed(&self, op: &'static str, why: &str) {
        self.errors.with_label_values(&[op]).inc();
        if !self.failing.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                operation = op,
                error = why,
                "The shared cache's Redis is failing; calls go on with the local cache."
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Map, json};

    fn shared(url: &str) -> SharedCache {
        let errors = IntCounterVec::new(prometheus::Opts::new("e", "test"), &["operation"])
            .expect("counter");
        let config = SharedCacheConfig {
            url: url.into(),
            key_prefix: "p:".into(),
            connect_timeout: Duration::from_millis(200),
            command_timeout: Duration::from_millis(300),
        };
        SharedCache::new(&config, errors).expect("shared cache")
    }

    fn key(server: &str, tool: &str, args: serde_json::Value) -> CacheKey {
        let args: Map<String, serde_json::Value> = args.as_object().expect("object").clone();
        CacheKey::new(server, tool, &args)
    }

    #[test]
    fn per_user_keys_differ_per_user_and_from_the_shared_key() {
        use crate::cache::CacheScope;
        let s = shared("redis://127.0.0.1:1");
        let args = Map::new();
        let k = |scope, user| s.key(&CacheKey::scoped(scope, user, "s", "t", &args));
        assert_ne!(
            k(CacheScope::PerUser, "alice"),
            k(CacheScope::PerUser, "bob")
        );
        assert_ne!(
            k(CacheScope::PerUser, "alice"),
            k(CacheScope::Shared, "alice")
        );
        assert_eq!(k(CacheScope::Shared, "alice"), k(CacheScope::Shared, "bob"));
        // Shared keys are what earlier versions wrote: a rolling upgrade keeps sharing them.
        assert_eq!(
            k(CacheScope::Shared, "x"),
            s.key(&CacheKey::new("s", "t", &args))
        );
    }

    #[test]
    fn keys_are_the_prefix_and_a_hash_of_the_canonical_key() {
        let s = shared("redis://127.0.0.1:1");
        let a = s.key(&key("s", "t", json!({"a": 1, "b": 2})));
        assert_eq!(a, s.key(&key("s", "t", json!({"b": 2, "a": 1}))));
        assert!(a.starts_with("p:") && a.len() == 2 + 64, "{a}");
        assert_ne!(a, s.key(&key("s", "t", json!({"a": 2, "b": 2}))));
        assert_ne!(a, s.key(&key("s", "u", json!({"a": 1, "b": 2}))));
        // The parts cannot run into each other.
        assert_ne!(
            s.key(&key("ab", "c", json!({}))),
            s.key(&key("a", "bc", json!({})))
        );
    }

    #[tokio::test]
    async fn an_unreachable_redis_is_a_counted_miss() {
        // Port 1 on loopback: nothing listens, the connect is refused at once.
        let s = shared("redis://127.0.0.1:1");
        assert_eq!(s.get("p:x").await, None);
        s.set("p:x", "{}", Duration::from_secs(1)).await;
        assert_eq!(s.errors.with_label_values(&[GET]).get(), 1);
        assert_eq!(s.errors.with_label_values(&[SET]).get(), 1);
    }

    #[tokio::test]
    async fn stores_and_reads_back_with_its_expiry() {
        let dir = tempfile::tempdir().expect("tempdir");
        let redis = test_support::RedisServer::start(dir.path().to_owned());
        let s = shared(&redis.url());
        assert_eq!(s.get("p:k").await, None, "a miss");
        s.set("p:k", r#"{"n":1}"#, Duration::from_secs(30)).await;
        let hit = s.get("p:k").await.expect("a hit");
        assert_eq!(hit.json, r#"{"n":1}"#);
        assert!(
            hit.remaining <= Duration::from_secs(30) && hit.remaining > Duration::from_secs(20),
            "{hit:?}"
        );
        let pttl: i64 = redis.cli(&["PTTL", "p:k"]).parse().expect("pttl");
        assert!(pttl > 0 && pttl <= 30_000, "{pttl}");
        // A value that is not a tool result, or one without expiry, is never served.
        redis.cli(&["SET", "p:bad", "not json", "PX", "30000"]);
        redis.cli(&["SET", "p:forever", "{}"]);
        assert_eq!(s.get("p:bad").await, None);
        assert_eq!(s.get("p:forever").await, None);
        assert_eq!(s.errors.with_label_values(&[GET]).get(), 1, "the bad value");
    }
}
