//! Per-user token buckets for tools with a `rate_limit` (`servers[].tools.<tool>`).
//!
//! A bucket idle for `burst × every` would be full again, so forgetting it then changes
//! nothing: each tool's buckets live in a moka cache with that time-to-idle (and a size
//! bound; a bucket evicted early only makes that user's limit briefly more generous).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use crate::config::{Config, RateLimit};

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

/// Every rate-limited tool's buckets, by (server, tool).
#[derive(Default)]
pub struct Limits(HashMap<(String, String), ToolLimit>);

impl std::fmt::Debug for Limits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Limits")
            .field("tools", &self.0.len())
            .finish()
    }
}

impl Limits {
    /// The limits `config` sets.
    pub fn new(config: &Config) -> Self {
        let mut limits = HashMap::new();
        for server in &config.servers {
            for (tool, policy) in &server.tools {
                let Some(limit) = policy.rate_limit else {
                    continue;
                };
                let idle = limit.every.saturating_mul(limit.burst).max(limit.every);
                let buckets = moka::sync::Cache::builder()
                    .max_capacity(MAX_USERS_PER_TOOL)
                    .time_to_idle(idle)
                    .build();
                limits.insert(
                    (server.name.clone(), tool.clone()),
                    ToolLimit { limit, buckets },
                );
            }
        }
        Self(limits)
    }

    /// Takes one call from `user`'s bucket for `server`/`tool`; `Err(wait)` when empty
    /// (the next call is allowed after `wait`).
    pub fn take(&self, server: &str, tool: &str, user: &str) -> Result<(), Duration> {
        let Some(t) = self.0.get(&(server.to_owned(), tool.to_owned())) else {
            return Ok(());
        };
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

    fn limits(burst: u32, every: Duration) -> Limits {
        let yaml = format!(
            "servers:\n  - name: s\n    url: http://127.0.0.1:1/mcp\n    tools:\n      t: {{rate_limit: {{burst: {burst}, every: {}ms}}}}\n",
            every.as_millis()
        );
        let config = Config::from_yaml(&yaml, &crate::config::ProcessEnv).expect("config");
        Limits::new(&config)
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
}
