//! `store: redis`: the same GCRA as the local limiter, kept in Redis so that every replica
//! takes from one bucket per rule and identity.
//!
//! One check is one server-side script (EVALSHA, falling back to EVAL when Redis has not
//! seen it): read the arrival time, decide, write it back with an expiry of the time the
//! bucket needs to be full again. The script reads Redis's own clock (`TIME`), so replicas
//! with skewed clocks agree. Times are whole microseconds there (Lua numbers are doubles:
//! unix microseconds are exact, nanoseconds are not), so the interval is rounded down to a
//! microsecond: at most 1 µs more generous per request than the local limiter.
//!
//! With `lease: N` (N > 1) a replica takes up to N tokens in one script call and spends them
//! here, one per request, for at most [`LEASE_HOLD`]; what is left then is dropped. The
//! tokens are taken from the shared bucket before they are spent, so the only slack is in
//! time: a token taken at t may be spent up to `LEASE_HOLD` later. Over any window of length
//! w the requests allowed across R replicas stay within
//! `burst + w × rate + min(R × (N − 1), ⌈rate × LEASE_HOLD⌉)`
//! (`tests/redis.rs` checks this bound on random sequences). An empty bucket is remembered
//! too (until Redis said a token comes, at most `LEASE_HOLD`): nothing can refill it sooner,
//! so that answer is exact. One call per identity is in flight at a time; the requests that
//! waited for it share its failure, so an outage costs one `command_timeout`, not one per
//! queued request. `deny_on_error` applies whenever Redis must be asked.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use super::RateLimit;
use crate::redis_pool::{Operation, RedisPool, StoreError};

/// How long leased tokens may be spent after Redis handed them out.
pub const LEASE_HOLD: Duration = Duration::from_secs(1);

/// `lease` accepted by the config: 1 (every request asks Redis) ..= this.
pub const MAX_LEASE: u32 = 10_000;

/// KEYS[1]: the bucket; ARGV[1]: interval µs; ARGV[2]: tolerance µs; ARGV[3]: tokens wanted
/// (at least 1); ARGV[4], tests only: the time in µs instead of Redis's clock.
/// Returns {taken, 0} when 1..=wanted tokens were taken (as many as the bucket holds, which
/// is what `taken` checks one after the other at this instant would allow), {0, wait µs}
/// when none is left.
const GCRA: &str = r"
local now
if ARGV[4] then
  now = tonumber(ARGV[4])
else
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000000 + tonumber(t[2])
end
local interval = tonumber(ARGV[1])
local tolerance = tonumber(ARGV[2])
local wanted = tonumber(ARGV[3])
local stored = redis.call('GET', KEYS[1])
local arrival = now
if stored then
  arrival = math.max(tonumber(stored), now)
end
local earliest = arrival - tolerance
if now < earliest then
  return {0, earliest - now}
end
local taken = math.min(wanted, math.floor((now - earliest) / interval) + 1)
local tat = arrival + taken * interval
-- Once `tat` has passed the bucket is full again, exactly as a missing key.
local ttl_ms = math.ceil((tat - now) / 1000)
redis.call('SET', KEYS[1], string.format('%.0f', tat), 'PX', ttl_ms)
return {taken, 0}
";

static SCRIPT: std::sync::LazyLock<redis::Script> =
    std::sync::LazyLock::new(|| redis::Script::new(GCRA));

/// One rule's limit in Redis.
#[derive(Debug)]
pub struct SharedLimiter {
    pub limit: RateLimit,
    /// Deny (`rate_limit_unavailable`) when Redis gives no answer; else allow.
    pub deny_on_error: bool,
    /// Tokens taken per script call (1: every request asks Redis).
    pub lease: u32,
    /// `{prefix}rl:{rule}:`, the identity follows.
    key_base: String,
    interval_us: u64,
    tolerance_us: u64,
    pool: Arc<RedisPool>,
    /// With `lease > 1`: what this replica holds, per identity.
    leases: Option<moka::sync::Cache<Box<str>, Arc<Lease>>>,
}

/// One identity's leased tokens in this replica.
#[derive(Debug, Default)]
struct Lease {
    /// Script calls finished for this identity: a request that waited while one ran shares
    /// its failure instead of asking again.
    calls: AtomicU64,
    held: tokio::sync::Mutex<Held>,
}

#[derive(Debug, Default)]
struct Held {
    /// Tokens left to spend before `until`.
    tokens: u32,
    /// When nonzero tokens run out, or a remembered empty bucket is asked about again.
    until: Option<Instant>,
    /// The bucket was empty: the first token comes at this instant.
    next_token: Option<Instant>,
    /// The last call failed (shared with the requests that waited for it).
    failed: Option<StoreError>,
}

impl SharedLimiter {
    pub fn new(limit: RateLimit, rule: &str, deny_on_error: bool, pool: Arc<RedisPool>) -> Self {
        let interval_us = (limit.per.as_micros() / u128::from(limit.requests.max(1))).max(1) as u64;
        SharedLimiter {
            limit,
            deny_on_error,
            lease: 1,
            key_base: format!("{}rl:{rule}:", pool.settings.key_prefix),
            interval_us,
            tolerance_us: interval_us.saturating_mul(u64::from(limit.burst.max(1) - 1)),
            pool,
            leases: None,
        }
    }

    /// Takes up to `lease` tokens per script call and spends them here (see the module
    /// docs for the bound). `lease` is clamped to `1..=MAX_LEASE`; 1 is the plain check.
    pub fn with_lease(mut self, lease: u32) -> Self {
        self.lease = lease.clamp(1, MAX_LEASE);
        self.leases = (self.lease > 1).then(|| {
            moka::sync::Cache::builder()
                .max_capacity(self.limit.max_keys)
                // Tokens held longer are dropped anyway.
                .time_to_idle(LEASE_HOLD)
                .build()
        });
        self
    }

    /// The Redis key of `identity`'s bucket.
    pub fn key(&self, identity: &str) -> String {
        format!("{}{identity}", self.key_base)
    }

    /// Takes one token for `identity`: `Ok(Ok(()))`, or `Ok(Err(wait))` when none is left;
    /// `Err` when Redis gave no answer within `command_timeout`.
    pub async fn check(&self, identity: &str) -> Result<Result<(), Duration>, StoreError> {
        match &self.leases {
            None => self.check_with(identity, None).await,
            Some(leases) => self.leased(leases, identity, None).await,
        }
    }

    /// [`SharedLimiter::check`] at a given time (µs) instead of Redis's clock, one script
    /// call whatever the lease: tests run one sequence through this and the local limiter.
    #[cfg(any(test, feature = "test-util"))]
    pub async fn check_at(
        &self,
        identity: &str,
        now_us: u64,
    ) -> Result<Result<(), Duration>, StoreError> {
        self.check_with(identity, Some(now_us)).await
    }

    /// Takes up to `wanted` tokens at a given time (µs): how many, or the wait when none.
    #[cfg(any(test, feature = "test-util"))]
    pub async fn take_at(
        &self,
        identity: &str,
        wanted: u32,
        now_us: u64,
    ) -> Result<Result<u32, Duration>, StoreError> {
        self.take(identity, wanted, Some(now_us)).await
    }

    /// [`SharedLimiter::check`] through the lease (when `lease > 1`) at Redis time `now_us`
    /// and local time `local`: tests drive both clocks without sleeping.
    #[cfg(any(test, feature = "test-util"))]
    pub async fn check_leased_at(
        &self,
        identity: &str,
        now_us: u64,
        local: Instant,
    ) -> Result<Result<(), Duration>, StoreError> {
        match &self.leases {
            None => self.check_with(identity, Some(now_us)).await,
            Some(leases) => self.leased(leases, identity, Some((now_us, local))).await,
        }
    }

    /// Tokens this replica holds for `identity` now (tests: held + spent + dropped = taken).
    #[cfg(any(test, feature = "test-util"))]
    pub async fn held_at(&self, identity: &str, local: Instant) -> u32 {
        let Some(lease) = self.leases.as_ref().and_then(|l| l.get(identity)) else {
            return 0;
        };
        let held = lease.held.lock().await;
        match held.until {
            Some(until) if local < until => held.tokens,
            _ => 0,
        }
    }

    async fn leased(
        &self,
        leases: &moka::sync::Cache<Box<str>, Arc<Lease>>,
        identity: &str,
        at: Option<(u64, Instant)>,
    ) -> Result<Result<(), Duration>, StoreError> {
        let lease = match leases.get(identity) {
            Some(lease) => lease,
            None => leases
                .entry(identity.into())
                .or_insert_with(|| Arc::new(Lease::default()))
                .into_value(),
        };
        let calls = lease.calls.load(Ordering::Acquire);
        let mut held = lease.held.lock().await;
        let now = at.map_or_else(Instant::now, |(_, local)| local);
        if held.until.is_some_and(|until| now < until) {
            if held.tokens > 0 {
                held.tokens -= 1;
                return Ok(Ok(()));
            }
            if let Some(next) = held.next_token {
                return Ok(Err(next
                    .saturating_duration_since(now)
                    .max(Duration::from_micros(1))));
            }
        }
        // A call finished while this request waited: its failure is this request's answer.
        if lease.calls.load(Ordering::Acquire) != calls
            && let Some(e) = &held.failed
        {
            return Err(e.clone());
        }
        let taken = self.take(identity, self.lease, at.map(|(us, _)| us)).await;
        lease.calls.fetch_add(1, Ordering::Release);
        *held = Held::default();
        match taken {
            Err(e) => {
                held.failed = Some(e.clone());
                Err(e)
            }
            Ok(Ok(n)) => {
                held.tokens = n - 1;
                held.until = Some(now + LEASE_HOLD);
                Ok(Ok(()))
            }
            Ok(Err(wait)) => {
                held.until = Some(now + wait.min(LEASE_HOLD));
                held.next_token = Some(now + wait);
                Ok(Err(wait))
            }
        }
    }

    async fn check_with(
        &self,
        identity: &str,
        now_us: Option<u64>,
    ) -> Result<Result<(), Duration>, StoreError> {
        Ok(self.take(identity, 1, now_us).await?.map(|_| ()))
    }

    /// One script call: up to `wanted` tokens, or the wait when none is left.
    async fn take(
        &self,
        identity: &str,
        wanted: u32,
        now_us: Option<u64>,
    ) -> Result<Result<u32, Duration>, StoreError> {
        let key = self.key(identity);
        let (interval, tolerance) = (self.interval_us, self.tolerance_us);
        let (taken, wait): (i64, i64) = self
            .pool
            .run(Operation::RateLimit, |mut conn| async move {
                let mut call = SCRIPT.key(&key);
                call.arg(interval).arg(tolerance).arg(wanted.max(1));
                if let Some(now) = now_us {
                    call.arg(now);
                }
                call.invoke_async(&mut conn).await
            })
            .await?;
        Ok(if taken >= 1 {
            Ok((taken as u32).min(wanted.max(1)))
        } else {
            Err(Duration::from_micros(wait.max(1) as u64))
        })
    }
}
