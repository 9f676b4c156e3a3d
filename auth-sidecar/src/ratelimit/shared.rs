//! `store: redis`: the same GCRA as the local limiter, kept in Redis so that every replica
//! takes from one bucket per rule and identity.
//!
//! One check is one server-side script (EVALSHA, falling back to EVAL when Redis has not
//! seen it): read the arrival time, decide, write it back with an expiry of the time the
//! bucket needs to be full again. The script reads Redis's own clock (`TIME`), so replicas
//! with skewed clocks agree. Times are whole microseconds there (Lua numbers are doubles:
//! unix microseconds are exact, nanoseconds are not), so the interval is rounded down to a
//! microsecond: at most 1 µs more generous per request than the local limiter.

use std::sync::Arc;
use std::time::Duration;

use super::RateLimit;
use crate::redis_pool::{Operation, RedisPool, StoreError};

/// KEYS[1]: the bucket; ARGV[1]: interval µs; ARGV[2]: tolerance µs; ARGV[3], tests only:
/// the time in µs instead of Redis's clock.
/// Returns {1, 0} when a token was taken, {0, wait µs} when none is left.
const GCRA: &str = r"
local now
if ARGV[3] then
  now = tonumber(ARGV[3])
else
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000000 + tonumber(t[2])
end
local interval = tonumber(ARGV[1])
local tolerance = tonumber(ARGV[2])
local stored = redis.call('GET', KEYS[1])
local arrival = now
if stored then
  arrival = math.max(tonumber(stored), now)
end
local earliest = arrival - tolerance
if now < earliest then
  return {0, earliest - now}
end
local tat = arrival + interval
-- Once `tat` has passed the bucket is full again, exactly as a missing key.
local ttl_ms = math.ceil((tat - now) / 1000)
redis.call('SET', KEYS[1], string.format('%.0f', tat), 'PX', ttl_ms)
return {1, 0}
";

static SCRIPT: std::sync::LazyLock<redis::Script> =
    std::sync::LazyLock::new(|| redis::Script::new(GCRA));

/// One rule's limit in Redis.
#[derive(Debug)]
pub struct SharedLimiter {
    pub limit: RateLimit,
    /// Deny (`rate_limit_unavailable`) when Redis gives no answer; else allow.
    pub deny_on_error: bool,
    /// `{prefix}rl:{rule}:`, the identity follows.
    key_base: String,
    interval_us: u64,
    tolerance_us: u64,
    pool: Arc<RedisPool>,
}

impl SharedLimiter {
    pub fn new(limit: RateLimit, rule: &str, deny_on_error: bool, pool: Arc<RedisPool>) -> Self {
        let interval_us = (limit.per.as_micros() / u128::from(limit.requests.max(1))).max(1) as u64;
        SharedLimiter {
            limit,
            deny_on_error,
            key_base: format!("{}rl:{rule}:", pool.settings.key_prefix),
            interval_us,
            tolerance_us: interval_us.saturating_mul(u64::from(limit.burst.max(1) - 1)),
            pool,
        }
    }

    /// The Redis key of `identity`'s bucket.
    pub fn key(&self, identity: &str) -> String {
        format!("{}{identity}", self.key_base)
    }

    /// Takes one token for `identity`: `Ok(Ok(()))`, or `Ok(Err(wait))` when none is left;
    /// `Err` when Redis gave no answer within `command_timeout`.
    pub async fn check(&self, identity: &str) -> Result<Result<(), Duration>, StoreError> {
        self.check_with(identity, None).await
    }

    /// [`SharedLimiter::check`] at a given time (µs) instead of Redis's clock: tests run
    /// one sequence through this and the local limiter.
    #[cfg(any(test, feature = "test-util"))]
    pub async fn check_at(
        &self,
        identity: &str,
        now_us: u64,
    ) -> Result<Result<(), Duration>, StoreError> {
        self.check_with(identity, Some(now_us)).await
    }

    async fn check_with(
        &self,
        identity: &str,
        now_us: Option<u64>,
    ) -> Result<Result<(), Duration>, StoreError> {
        let key = self.key(identity);
        let (interval, tolerance) = (self.interval_us, self.tolerance_us);
        let (taken, wait): (i64, i64) = self
            .pool
            .run(Operation::RateLimit, |mut conn| async move {
                let mut call = SCRIPT.key(&key);
                call.arg(interval).arg(tolerance);
                if let Some(now) = now_us {
                    call.arg(now);
                }
                call.invoke_async(&mut conn).await
            })
            .await?;
        Ok(if taken == 1 {
            Ok(())
        } else {
            Err(Duration::from_micros(wait.max(1) as u64))
        })
    }
}
