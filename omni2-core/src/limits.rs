//! Per-user token buckets for tools with a `rate_limit` (`servers[].tools.<tool>`): one
//! budget per user and tool, spent by REST and `/mcp` calls alike.
//!
//! A bucket idle for `burst × every` would be full again, so forgetting it then changes
//! nothing: each tool's buckets live in a moka cache with that time-to-idle (and a size
//! bound; a bucket evicted early only makes that user's limit briefly more generous).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use crate::config::RateLimit;

/// Buckets kept per tool at most.
const MAX_USERS_PER_TOOL: u64 = 100_000;

#[derive(Debug)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

struct ToolLimit {
    limit: RateLimit,
    buckets: moka::sync::Cache<String, Arc<Mutex<Bucket>>>,
}

/// Every rate-limited tool's buckets, by (server, tool), made on first use.
///
/// The limit is passed on each call, read from the server's current config: a reload that
/// changes a tool's `rate_limit` takes effect at once (its buckets start again full).
#[derive(Default)]
pub struct Limits(Mutex<HashMap<(String, String), Arc<ToolLimit>>>);

impl std::fmt::Debug for Limits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let tools = self.0.lock().map_or(0, |m| m.len());
        f.debug_struct("Limits").field("tools", &tools).finish()
    }
}

impl Limits {
    /// The buckets of `server`/`tool` under `limit`, new when the limit changed.
    fn tool(&self, server: &str, tool: &str, limit: RateLimit) -> Arc<ToolLimit> {
        let mut tools = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let key = (server.to_owned(), tool.to_owned());
        if let Some(t) = tools.get(&key)
            && t.limit == limit
        {
            return t.clone();
        }
        let idle = limit.every.saturating_mul(limit.burst).max(limit.every);
        let buckets = moka::sync::Cache::builder()
            .max_capacity(MAX_USERS_PER_TOOL)
            .time_to_idle(idle)
            .build();
        let t = Arc::new(ToolLimit { limit, buckets });
        tools.insert(key, t.clone());
        t
    }

    /// Takes one call from `user`'s bucket for `server`/`tool` under `limit` (`None`: not
    /// limited); `Err(wait)` when empty (the next call is allowed after `wait`).
    pub fn take(
        &self,
        server: &str,
        tool: &str,
        limit: Option<RateLimit>,
        user: &str,
    ) -> Result<(), Duration> {
        let Some(limit) = limit else {
            return Ok(());
        };
        let t = self.tool(server, tool, limit);
        let burst = f64::from(t.limit.burst);
        let now = Instant::now();
        let bucket = t.buckets.get_with_by_ref(user, || {
            Arc::new(Mutex::new(Bucket {
                tokens: burst,
                at: now,
            }))
        });
        let mut b = bucket.lock().unwrap_or_else(|p| p.into_inner());
        let every = t.limit.every.as_secs_f64();
        let earned = now.saturating_duration_since(b.at).as_secs_f64() / every;
        b.tokens = (b.tokens + earned).min(burst);
        b.at = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - b.tokens) * every))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `s`/`t` limited to `burst` per `every`, other tools unlimited.
    struct Fixture(Limits, RateLimit);

    impl Fixture {
        fn take(&self, server: &str, tool: &str, user: &str) -> Result<(), Duration> {
            let limit = (tool == "t").then_some(self.1);
            self.0.take(server, tool, limit, user)
        }
    }

    fn limits(burst: u32, every: Duration) -> Fixture {
        Fixture(Limits::default(), RateLimit { burst, every })
    }

    #[tokio::test(start_paused = true)]
    async fn burst_then_one_per_period_per_user() {
        let l = limits(2, Duration::from_secs(10));
        assert_eq!(l.take("s", "t", "alice"), Ok(()));
        assert_eq!(l.take("s", "t", "alice"), Ok(()));
        let wait = l.take("s", "t", "alice").expect_err("empty");
        assert!(wait > Duration::from_secs(9) && wait <= Duration::from_secs(10));
        // Another user has their own bucket; other tools are unlimited.
        assert_eq!(l.take("s", "t", "bob"), Ok(()));
        assert_eq!(l.take("s", "other", "alice"), Ok(()));
        tokio::time::advance(Duration::from_secs(5)).await;
        let wait = l.take("s", "t", "alice").expect_err("half a token");
        assert!(wait <= Duration::from_secs(5), "{wait:?}");
        tokio::time::advance(Duration::from_secs(5)).await;
        assert_eq!(l.take("s", "t", "alice"), Ok(()));
    }

    #[tokio::test(start_paused = true)]
    async fn a_changed_limit_applies_at_once() {
        let l = Limits::default();
        let one = RateLimit {
            burst: 1,
            every: Duration::from_secs(60),
        };
        assert_eq!(l.take("s", "t", Some(one), "alice"), Ok(()));
        assert!(l.take("s", "t", Some(one), "alice").is_err());
        // A reload raised the burst: the new limit counts, from full.
        let three = RateLimit { burst: 3, ..one };
        for _ in 0..3 {
            assert_eq!(l.take("s", "t", Some(three), "alice"), Ok(()));
        }
        assert!(l.take("s", "t", Some(three), "alice").is_err());
        // Reloaded away: unlimited.
        assert_eq!(l.take("s", "t", None, "alice"), Ok(()));
    }
}
