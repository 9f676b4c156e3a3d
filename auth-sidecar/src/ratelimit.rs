//! Per-rule rate limits: a token bucket per identity (`sub`), or per client address on
//! public rules, in a bounded moka cache.
//!
//! The bucket is kept as GCRA (one "theoretical arrival time" per key), which is exactly a
//! token bucket of `burst` tokens refilled at `requests / per`, in one `u64` per key. Keys
//! idle long enough to be full again expire, and at most `max_keys` are held: under a flood
//! of identities moka evicts some (they start full again).
//! Time is passed in (`now`), so tests drive it without sleeping.
//!
//! A rule with `store: redis` keeps the same GCRA in Redis instead ([`SharedLimiter`]), so that
//! replicas share one bucket per identity; [`Limiter`] is either.

mod shared;

use std::sync::Arc;
use std::time::{Duration, Instant};

pub use shared::{LEASE_HOLD, MAX_LEASE, SharedLimiter};

use moka::ops::compute::Op;

/// A rule's limit as configured.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RateLimit {
    /// Sustained rate: `requests` per `per`.
    pub requests: u32,
    pub per: Duration,
    /// Requests allowed at once from a full bucket. Default: `requests`.
    pub burst: u32,
    /// Identities (or addresses) tracked at most. Default 100 000.
    pub max_keys: u64,
}

/// A rule's limiter: in this process (the default) or in Redis.
#[derive(Clone, Debug)]
pub enum Limiter {
    Local(Arc<RateLimiter>),
    Shared(Arc<SharedLimiter>),
}

impl Limiter {
    pub fn limit(&self) -> RateLimit {
        match self {
            Limiter::Local(l) => l.limit,
            Limiter::Shared(s) => s.limit,
        }
    }
}

/// The state of one rule's limit, in this process.
pub struct RateLimiter {
    pub limit: RateLimit,
    /// Nanoseconds between two requests at the sustained rate.
    interval: u64,
    /// How far ahead of `now` the arrival time may run: `(burst - 1) × interval`.
    tolerance: u64,
    /// Instants are stored as nanoseconds since this one.
    epoch: Instant,
    arrivals: moka::sync::Cache<Box<str>, u64>,
}

impl std::fmt::Debug for RateLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateLimiter")
            .field("limit", &self.limit)
            .finish_non_exhaustive()
    }
}

impl RateLimiter {
    /// `requests`, `burst` and `per` must be non-zero (config validation checks).
    pub fn new(limit: RateLimit) -> Self {
        let interval = (limit.per.as_nanos() / u128::from(limit.requests.max(1))).max(1) as u64;
        let tolerance = interval.saturating_mul(u64::from(limit.burst.max(1) - 1));
        RateLimiter {
            limit,
            interval,
            tolerance,
            epoch: Instant::now(),
            arrivals: moka::sync::Cache::builder()
                .max_capacity(limit.max_keys)
                // After this long without requests a bucket is full again: forget it.
                .time_to_idle(Duration::from_nanos(interval.saturating_add(tolerance)))
                .build(),
        }
    }

    /// Takes one token for `key` at `now`; when none is left, how long until one is.
    pub fn check(&self, key: &str, now: Instant) -> Result<(), Duration> {
        let now = now.saturating_duration_since(self.epoch).as_nanos() as u64;
        let mut wait = None;
        // Per-key serialised: concurrent requests of one identity cannot both take the last token.
        self.arrivals.entry(key.into()).and_compute_with(|entry| {
            let arrival = entry.map_or(now, |e| e.into_value()).max(now);
            let earliest = arrival.saturating_sub(self.tolerance);
            if now < earliest {
                wait = Some(Duration::from_nanos(earliest - now));
                Op::Nop
            } else {
                Op::Put(arrival + self.interval)
            }
        });
        wait.map_or(Ok(()), Err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limiter(requests: u32, per_secs: u64, burst: u32) -> RateLimiter {
        RateLimiter::new(RateLimit {
            requests,
            per: Duration::from_secs(per_secs),
            burst,
            max_keys: 1000,
        })
    }

    #[test]
    fn burst_then_sustained_rate() {
        let l = limiter(10, 60, 3); // one token every 6 s, three at once
        let t0 = Instant::now();
        for _ in 0..3 {
            assert_eq!(l.check("alice", t0), Ok(()));
        }
        let wait = l.check("alice", t0).expect_err("bucket empty");
        assert_eq!(wait, Duration::from_secs(6));
        assert_eq!(
            l.check("alice", t0 + Duration::from_secs(5)),
            Err(Duration::from_secs(1))
        );
        assert_eq!(l.check("alice", t0 + Duration::from_secs(6)), Ok(()));
        assert!(l.check("alice", t0 + Duration::from_secs(6)).is_err());
        // Another identity has its own bucket.
        assert_eq!(l.check("bob", t0), Ok(()));
        // A long pause refills to the burst, never beyond.
        let later = t0 + Duration::from_secs(3600);
        for _ in 0..3 {
            assert_eq!(l.check("alice", later), Ok(()));
        }
        assert!(l.check("alice", later).is_err());
    }
}
