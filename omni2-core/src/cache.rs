//! Tool-result cache: moka, bounded by bytes, TTL per tool, one upstream call per key.
//!
//! The key is server + tool + the arguments canonicalised (object keys sorted at every
//! depth), so `{"a":1,"b":2}` and `{"b":2,"a":1}` share an entry. Concurrent identical calls
//! share one upstream call (moka's `or_try_insert_with`). Failures and `isError: true`
//! results reach every waiter but are never stored.
//!
//! A tool's [`CacheScope`] decides who shares an entry: `per_user` (the default) puts the
//! verified user in the key, `shared` leaves it out. A server may narrow both per result,
//! in the result's `_meta` (an omni2 convention, see [`ResultHints`]): `cacheScope:
//! "private"` keeps a result out of a shared entry, `ttlMs` shortens its TTL (0: not
//! stored).
//!
//! With `cache.redis` ([`shared`]) a local miss first reads the result other replicas stored
//! in Redis, and an upstream answer is stored there too (same TTL, errors never); Redis
//! failing only means falling back to this replica's cache and upstream.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use moka::Expiry;
use moka::future::Cache;
use moka::notification::RemovalCause;
use prometheus::IntCounter;
use serde::Serialize;
use serde_json::{Map, Value};

pub use crate::config::CacheScope;
use crate::mcp::ToolResult;

pub mod shared;
pub use shared::SharedCache;

/// Cache key: server, tool, canonical arguments, and the user for `per_user` entries.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct CacheKey {
    server: Arc<str>,
    tool: Arc<str>,
    args: String,
    user: Option<Arc<str>>,
}

impl CacheKey {
    /// A key shared by every caller; argument order never matters.
    pub fn new(server: &str, tool: &str, arguments: &Map<String, Value>) -> Self {
        Self {
            server: server.into(),
            tool: tool.into(),
            args: canonical_object(arguments),
            user: None,
        }
    }

    /// The key for `scope`: `per_user` adds the verified `user`.
    pub fn scoped(
        scope: CacheScope,
        user: &str,
        server: &str,
        tool: &str,
        arguments: &Map<String, Value>,
    ) -> Self {
        let mut key = Self::new(server, tool, arguments);
        if scope == CacheScope::PerUser {
            key.user = Some(user.into());
        }
        key
    }

    /// Shared by every caller (no user in it).
    pub fn is_shared(&self) -> bool {
        self.user.is_none()
    }
}

/// A server's caching hints on one `tools/call` result, read from its `_meta`.
///
/// MCP has no caching fields for `tools/call`: SEP-2549 (revision 2026-07-28) gives
/// `ttlMs`/`cacheScope` (`public` | `private`) to list and read results only. omni2 reads the
/// same names from a tool result's `_meta` as its own convention.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ResultHints {
    /// `_meta.cacheScope == "private"`: never in an entry other users share.
    pub is_private: bool,
    /// `_meta.ttlMs`: at most this long (a negative or non-integer value counts as 0).
    pub ttl: Option<Duration>,
}

impl ResultHints {
    /// Reads the hints of a `CallToolResult` object.
    pub fn of(body: &Value) -> Self {
        let Some(meta) = body.get("_meta").and_then(Value::as_object) else {
            return Self::default();
        };
        let ttl = meta
            .get("ttlMs")
            .map(|v| Duration::from_millis(v.as_u64().unwrap_or(0)));
        Self {
            is_private: meta.get("cacheScope").and_then(Value::as_str) == Some("private"),
            ttl,
        }
    }
}

/// An object as canonical JSON (what the cache key and the audit hash are made of).
pub fn canonical_object(map: &Map<String, Value>) -> String {
    let mut out = String::new();
    write_canonical_object(map, &mut out);
    out
}

/// JSON with object keys sorted at every depth (independent of serde_json's map order).
pub fn canonical_json(value: &Value) -> String {
    let mut out = String::new();
    write_canonical(value, &mut out);
    out
}

fn write_canonical(value: &Value, out: &mut String) {
    match value {
        Value::Object(map) => write_canonical_object(map, out),
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(item, out);
            }
            out.push(']');
        }
        // Scalars: serde_json's own (escaped) text.
        scalar => out.push_str(&scalar.to_string()),
    }
}

fn write_canonical_object(map: &Map<String, Value>, out: &mut String) {
    let mut entries: Vec<_> = map.iter().collect();
    entries.sort_unstable_by(|a, b| a.0.cmp(b.0));
    out.push('{');
    for (i, (k, v)) in entries.into_iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(&Value::String(k.clone()).to_string());
        out.push(':');
        write_canonical(v, out);
    }
    out.push('}');
}

/// A stored result: the `CallToolResult` JSON text, serialised once.
#[derive(Debug)]
pub struct CachedResult {
    /// JSON object text of the result.
    pub json: String,
    ttl: Duration,
    /// Read from Redis (`cache.redis`), not from this replica's upstream call.
    from_shared: bool,
}

/// Why a cached call produced no storable value.
#[derive(Clone, Debug)]
pub enum Uncached<E> {
    /// The call failed.
    Failed(E),
    /// The tool answered `isError: true` (passed through, not stored).
    ToolError(Value),
    /// The server's hints kept it out of the cache (`ttlMs: 0`, or `cacheScope: private`
    /// on a shared entry). Given only to the caller whose call produced it.
    NotStored(Value),
}

/// Counters and sizes, for `GET /api/v1/cache` and `cache_stats` messages.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct CacheStats {
    /// Lookups served from the cache (including waiters on another caller's fill).
    pub hits: u64,
    /// Lookups that called the server.
    pub misses: u64,
    /// Entries removed for size or expiry.
    pub evictions: u64,
    /// Entries now.
    pub entries: u64,
    /// Bytes of cached results now.
    pub bytes: u64,
}

struct PerEntryTtl;

impl Expiry<CacheKey, Arc<CachedResult>> for PerEntryTtl {
    fn expire_after_create(
        &self,
        _key: &CacheKey,
        value: &Arc<CachedResult>,
        _created_at: Instant,
    ) -> Option<Duration> {
        Some(value.ttl)
    }
}

/// Prometheus counters the cache feeds.
#[derive(Clone, Debug)]
pub struct CacheCounters {
    /// `omni2_tool_cache_hits_total`.
    pub hits: IntCounter,
    /// `omni2_tool_cache_misses_total`.
    pub misses: IntCounter,
    /// `omni2_tool_cache_evictions_total`.
    pub evictions: IntCounter,
    /// `omni2_cache_redis_errors_total{operation}` (`cache.redis` only).
    pub redis_errors: prometheus::IntCounterVec,
}

/// The tool-result cache.
pub struct ToolCache {
    cache: Cache<CacheKey, Arc<CachedResult>>,
    hits: AtomicU64,
    misses: AtomicU64,
    evictions: Arc<AtomicU64>,
    counters: CacheCounters,
    shared: Option<SharedCache>,
}

impl std::fmt::Debug for ToolCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ToolCache")
            .field("stats", &self.stats())
            .finish()
    }
}

impl ToolCache {
    /// A cache holding at most `max_bytes` of results.
    pub fn new(max_bytes: u64, counters: CacheCounters) -> Self {
        let evictions = Arc::new(AtomicU64::new(0));
        let listener_evictions = evictions.clone();
        let listener_counter = counters.evictions.clone();
        let cache = Cache::builder()
            .max_capacity(max_bytes)
            .weigher(|k: &CacheKey, v: &Arc<CachedResult>| {
                let bytes = v.json.len() + k.args.len() + k.server.len() + k.tool.len();
                u32::try_from(bytes).unwrap_or(u32::MAX)
            })
            .expire_after(PerEntryTtl)
            .support_invalidation_closures()
            .eviction_listener(move |_k, _v, cause| {
                if matches!(cause, RemovalCause::Size | RemovalCause::Expired) {
                    listener_evictions.fetch_add(1, Ordering::Relaxed);
                    listener_counter.inc();
                }
            })
            .build();
        Self {
            cache,
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
            evictions,
            counters,
            shared: None,
        }
    }

    /// Shares results with other replicas through `shared` (`cache.redis`).
    pub fn with_shared(mut self, shared: Option<SharedCache>) -> Self {
        self.shared = shared;
        self
    }

    /// Returns the cached result for `key`, or runs `call` once for all concurrent callers
    /// and stores its result for `ttl` (or the server's shorter `ttlMs`) unless it failed,
    /// is `isError`, or its hints say not to ([`ResultHints`]).
    /// The flag is `true` when the result came from the cache (or another caller's fill).
    pub async fn get_or_call<F, E>(
        &self,
        key: CacheKey,
        ttl: Duration,
        call: F,
    ) -> Result<(Arc<CachedResult>, bool), Uncached<E>>
    where
        F: Future<Output = Result<ToolResult, E>>,
        E: Clone + Send + Sync + 'static,
    {
        let is_shared_key = key.is_shared();
        let shared = self.shared.as_ref().map(|s| (s, s.key(&key)));
        // The call runs in whichever caller fills the entry; a caller that only waited
        // still holds its own (for a result it may not be given).
        let own_call = std::sync::Mutex::new(Some(call));
        let take_call = || own_call.lock().unwrap_or_else(|p| p.into_inner()).take();
        let fill = async {
            if let Some((s, k)) = &shared
                && let Some(hit) = s.get(k).await
            {
                // Never kept here longer than the replica that called upstream allowed.
                return Ok(Arc::new(CachedResult {
                    json: hit.json,
                    ttl: hit.remaining.min(ttl),
                    from_shared: true,
                }));
            }
            let Some(call) = take_call() else {
                return Err(Uncached::NotStored(Value::Null));
            };
            match call.await {
                Ok(r) if r.is_error => Err(Uncached::ToolError(r.body)),
                Ok(r) => {
                    let hints = ResultHints::of(&r.body);
                    let ttl = hints.ttl.map_or(ttl, |t| t.min(ttl));
                    if ttl.is_zero() || (hints.is_private && is_shared_key) {
                        return Err(Uncached::NotStored(r.body));
                    }
                    let json = r.body.to_string();
                    if let Some((s, k)) = &shared {
                        s.set(k, &json, ttl).await;
                    }
                    Ok(Arc::new(CachedResult {
                        json,
                        ttl,
                        from_shared: false,
                    }))
                }
                Err(e) => Err(Uncached::Failed(e)),
            }
        };
        match self.cache.entry(key).or_try_insert_with(fill).await {
            Ok(entry) => {
                let hit = !entry.is_fresh() || entry.value().from_shared;
                if hit {
                    self.hits.fetch_add(1, Ordering::Relaxed);
                    self.counters.hits.inc();
                } else {
                    self.misses.fetch_add(1, Ordering::Relaxed);
                    self.counters.misses.inc();
                }
                Ok((entry.into_value(), hit))
            }
            Err(e) => {
                self.misses.fetch_add(1, Ordering::Relaxed);
                self.counters.misses.inc();
                match (&*e, take_call()) {
                    // Another caller's result its server would not let us store (it may be
                    // private to that caller): make our own call, uncached.
                    (Uncached::NotStored(_), Some(call)) => match call.await {
                        Ok(r) if r.is_error => Err(Uncached::ToolError(r.body)),
                        Ok(r) => Err(Uncached::NotStored(r.body)),
                        Err(e) => Err(Uncached::Failed(e)),
                    },
                    (other, _) => Err(other.clone()),
                }
            }
        }
    }

    /// Drops every entry.
    pub fn invalidate_all(&self) {
        self.cache.invalidate_all();
    }

    /// Drops the entries of one server, or of one of its tools.
    pub fn invalidate(&self, server: &str, tool: Option<&str>) {
        let server: Arc<str> = server.into();
        let tool: Option<Arc<str>> = tool.map(Into::into);
        let result = self.cache.invalidate_entries_if(move |k, _| {
            k.server == server && tool.as_ref().is_none_or(|t| *t == k.tool)
        });
        if let Err(e) = result {
            // Only possible without support_invalidation_closures(); fall back to everything.
            tracing::warn!(error = %e, "Selective cache invalidation failed; clearing all.");
            self.cache.invalidate_all();
        }
    }

    /// Applies pending maintenance (evictions, invalidations) now.
    pub async fn run_pending_tasks(&self) {
        self.cache.run_pending_tasks().await;
    }

    /// Current counters and sizes.
    pub fn stats(&self) -> CacheStats {
        CacheStats {
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
            evictions: self.evictions.load(Ordering::Relaxed),
            entries: self.cache.entry_count(),
            bytes: self.cache.weighted_size(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mcp;
    use serde_json::json;
    use std::sync::atomic::AtomicUsize;

    fn cache_counters_for_test() -> CacheCounters {
        let c = |n: &str| IntCounter::new(n, "test").expect("counter");
        CacheCounters {
            hits: c("h"),
            misses: c("m"),
            evictions: c("e"),
            redis_errors: prometheus::IntCounterVec::new(
                prometheus::Opts::new("r", "test"),
                &["operation"],
            )
            .expect("counter"),
        }
    }

    fn cache() -> ToolCache {
        ToolCache::new(1 << 20, cache_counters_for_test())
    }

    fn args(v: Value) -> Map<String, Value> {
        v.as_object().expect("object").clone()
    }

    #[test]
    fn canonical_keys_ignore_order_at_every_depth() {
        let a = CacheKey::new(
            "s",
            "t",
            &args(json!({"a": 1, "b": {"y": [1, {"q": 1, "p": 2}], "x": "\""}})),
        );
        let b = CacheKey::new(
            "s",
            "t",
            &args(json!({"b": {"x": "\"", "y": [1, {"p": 2, "q": 1}]}, "a": 1})),
        );
        assert_eq!(a, b);
        assert_eq!(a.args, r#"{"a":1,"b":{"x":"\"","y":[1,{"p":2,"q":1}]}}"#);
        assert_ne!(a, CacheKey::new("s", "u", &args(json!({"a": 1}))));
        // Array order is meaningful.
        assert_ne!(
            canonical_json(&json!([1, 2])),
            canonical_json(&json!([2, 1]))
        );
    }

    fn ok(body: Value) -> Result<ToolResult, mcp::Error> {
        Ok(ToolResult {
            body,
            is_error: false,
        })
    }

    #[tokio::test]
    async fn hit_after_miss_and_errors_never_stored() {
        let c = cache();
        let key = || CacheKey::new("s", "t", &Map::new());
        let ttl = Duration::from_secs(60);
        let (_, hit) = c
            .get_or_call(key(), ttl, async { ok(json!({"n": 1})) })
            .await
            .expect("ok");
        assert!(!hit);
        let (r, hit) = c
            .get_or_call(key(), ttl, async { ok(json!({"n": 2})) })
            .await
            .expect("ok");
        assert!(hit);
        assert_eq!(r.json, r#"{"n":1}"#);

        let k2 = || CacheKey::new("s", "err", &Map::new());
        let tool_error = async {
            Ok::<_, mcp::Error>(ToolResult {
                body: json!({"isError": true}),
                is_error: true,
            })
        };
        assert!(matches!(
            c.get_or_call(k2(), ttl, tool_error).await,
            Err(Uncached::ToolError(_))
        ));
        let failure = async { Err(mcp::Error::transport("refused")) };
        assert!(matches!(
            c.get_or_call(k2(), ttl, failure).await,
            Err(Uncached::Failed(_))
        ));
        let (_, hit) = c
            .get_or_call(k2(), ttl, async { ok(json!({})) })
            .await
            .expect("ok");
        assert!(
            !hit,
            "neither the isError result nor the failure was stored"
        );

        c.invalidate("s", Some("t"));
        c.run_pending_tasks().await;
        let (_, hit) = c
            .get_or_call(key(), ttl, async { ok(json!({})) })
            .await
            .expect("ok");
        assert!(!hit, "invalidated");
        let s = c.stats();
        assert_eq!((s.hits, s.misses), (1, 5));
    }

    #[tokio::test]
    async fn per_user_keys_never_serve_another_user() {
        let c = cache();
        let ttl = Duration::from_secs(60);
        let key = |scope, user| CacheKey::scoped(scope, user, "s", "t", &Map::new());
        let per_user = CacheScope::PerUser;
        c.get_or_call(key(per_user, "alice"), ttl, async {
            ok(json!({"u": "alice"}))
        })
        .await
        .expect("ok");
        let (r, hit) = c
            .get_or_call(key(per_user, "bob"), ttl, async { ok(json!({"u": "bob"})) })
            .await
            .expect("ok");
        assert!(!hit, "bob never gets alice's entry");
        assert_eq!(r.json, r#"{"u":"bob"}"#);
        let (r, hit) = c
            .get_or_call(key(per_user, "alice"), ttl, async { ok(json!({})) })
            .await
            .expect("ok");
        assert!(hit);
        assert_eq!(r.json, r#"{"u":"alice"}"#);
        // A shared tool: one entry for everybody.
        let shared = CacheScope::Shared;
        c.get_or_call(key(shared, "alice"), ttl, async { ok(json!({"n": 1})) })
            .await
            .expect("ok");
        let (_, hit) = c
            .get_or_call(key(shared, "bob"), ttl, async { ok(json!({"n": 2})) })
            .await
            .expect("ok");
        assert!(hit);
        assert_ne!(key(per_user, "alice"), key(shared, "alice"));
    }

    #[tokio::test]
    async fn server_hints_private_and_ttl_ms() {
        let c = cache();
        let ttl = Duration::from_secs(60);
        let shared = || CacheKey::new("s", "t", &Map::new());
        let private = json!({"n": 1, "_meta": {"cacheScope": "private"}});
        let r = c
            .get_or_call(shared(), ttl, async { ok(private.clone()) })
            .await;
        assert!(matches!(r, Err(Uncached::NotStored(ref v)) if *v == private));
        let (_, hit) = c
            .get_or_call(shared(), ttl, async { ok(json!({})) })
            .await
            .expect("ok");
        assert!(!hit, "a private result never fills a shared entry");
        // ...but may fill a per-user one.
        let mine = || CacheKey::scoped(CacheScope::PerUser, "alice", "s", "p", &Map::new());
        c.get_or_call(mine(), ttl, async { ok(private.clone()) })
            .await
            .expect("stored for alice");
        assert!(
            c.get_or_call(mine(), ttl, async { ok(json!({})) })
                .await
                .expect("ok")
                .1
        );
        // ttlMs: 0 is not stored; a shorter ttlMs wins over the configured TTL.
        let zero = || CacheKey::new("s", "z", &Map::new());
        let r = c
            .get_or_call(zero(), ttl, async { ok(json!({"_meta": {"ttlMs": 0}})) })
            .await;
        assert!(matches!(r, Err(Uncached::NotStored(_))));
        let short = || CacheKey::new("s", "short", &Map::new());
        let (r, _) = c
            .get_or_call(short(), ttl, async {
                ok(json!({"_meta": {"ttlMs": 1500}}))
            })
            .await
            .expect("ok");
        assert_eq!(r.ttl, Duration::from_millis(1500));
        let (r, _) = c
            .get_or_call(CacheKey::new("s", "long", &Map::new()), ttl, async {
                ok(json!({"_meta": {"ttlMs": 3_600_000}}))
            })
            .await
            .expect("ok");
        assert_eq!(r.ttl, ttl, "a hint never extends the configured TTL");
    }

    #[tokio::test]
    async fn a_waiter_never_gets_another_callers_private_result() {
        let c = Arc::new(cache());
        let ttl = Duration::from_secs(60);
        let key = || CacheKey::new("s", "t", &Map::new());
        let (release, wait) = tokio::sync::oneshot::channel::<()>();
        let leader = {
            let c = c.clone();
            tokio::spawn(async move {
                c.get_or_call(key(), ttl, async move {
                    let _ = wait.await;
                    ok(json!({"who": "leader", "_meta": {"cacheScope": "private"}}))
                })
                .await
                .map(|_| ())
            })
        };
        // Let the leader start its fill, then join as a waiter.
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
        let waiter = {
            let c = c.clone();
            tokio::spawn(async move {
                c.get_or_call(key(), ttl, async { ok(json!({"who": "waiter"})) })
                    .await
            })
        };
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
        let _ = release.send(());
        assert!(matches!(
            leader.await.expect("join"),
            Err(Uncached::NotStored(_))
        ));
        match waiter.await.expect("join") {
            // It made its own call (or filled the entry after the leader's refusal).
            Err(Uncached::NotStored(v)) => assert_eq!(v["who"], "waiter"),
            Ok((r, _)) => assert!(r.json.contains("waiter"), "{}", r.json),
            Err(e) => panic!("unexpected {e:?}"),
        }
    }

    #[tokio::test]
    async fn bounded_by_bytes_with_per_entry_ttl() {
        // ~1 KiB per entry, 8 KiB bound: filling 64 entries must evict most of them.
        let c = ToolCache::new(8 << 10, cache_counters_for_test());
        let big = "x".repeat(1000);
        for i in 0..64 {
            let key = CacheKey::new("s", "t", &args(json!({ "i": i })));
            let body = json!({ "pad": big });
            c.get_or_call(key, Duration::from_secs(60), async move { ok(body) })
                .await
                .expect("ok");
        }
        c.run_pending_tasks().await;
        let s = c.stats();
        assert!(s.bytes <= 8 << 10, "{s:?}");
        assert!(s.entries < 64 && s.evictions > 0, "{s:?}");
        assert_eq!(c.counters.evictions.get(), s.evictions);

        // The TTL moka applies is the one stored with the entry (per tool).
        let value = Arc::new(CachedResult {
            json: String::new(),
            ttl: Duration::from_millis(1500),
            from_shared: false,
        });
        let ttl = PerEntryTtl.expire_after_create(
            &CacheKey::new("s", "t", &Map::new()),
            &value,
            Instant::now(),
        );
        assert_eq!(ttl, Some(Duration::from_millis(1500)));
    }

    #[tokio::test(start_paused = true)]
    async fn concurrent_identical_calls_share_one_upstream_call() {
        let c = Arc::new(cache());
        let calls = Arc::new(AtomicUsize::new(0));
        let (release, gate) = tokio::sync::watch::channel(false);
        let mut tasks = Vec::new();
        for order in [json!({"a": 1, "b": 2}), json!({"b": 2, "a": 1})]
            .into_iter()
            .cycle()
            .take(10)
        {
            let (c, calls, mut gate) = (c.clone(), calls.clone(), gate.clone());
            tasks.push(tokio::spawn(async move {
                let call = async move {
                    calls.fetch_add(1, Ordering::SeqCst);
                    // Hold the fill open until every caller is waiting on it.
                    let _ = gate.wait_for(|open| *open).await;
                    ok(json!({"v": 1}))
                };
                c.get_or_call(
                    CacheKey::new("s", "t", &args(order)),
                    Duration::from_secs(9),
                    call,
                )
                .await
                .map(|(_, hit)| hit)
            }));
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
        release.send(true).expect("open");
        let mut misses = 0;
        for t in tasks {
            if !t.await.expect("join").expect("ok") {
                misses += 1;
            }
        }
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        assert_eq!(misses, 1);
    }

    fn with_redis(url: &str) -> ToolCache {
        let counters = cache_counters_for_test();
        let config = crate::config::SharedCacheConfig {
            url: url.into(),
            key_prefix: "t:".into(),
            connect_timeout: Duration::from_millis(200),
            command_timeout: Duration::from_millis(300),
        };
        let shared = SharedCache::new(&config, counters.redis_errors.clone()).expect("shared");
        ToolCache::new(1 << 20, counters).with_shared(Some(shared))
    }

    #[tokio::test]
    async fn a_second_replica_hits_in_redis_and_a_dead_redis_only_costs_the_sharing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut redis = test_support::RedisServer::start(dir.path().to_owned());
        let (a, b) = (with_redis(&redis.url()), with_redis(&redis.url()));
        let key = || CacheKey::new("s", "t", &args(json!({"q": 1})));
        let ttl = Duration::from_secs(60);
        let (r, hit) = a
            .get_or_call(key(), ttl, async { ok(json!({"n": 1})) })
            .await
            .expect("a");
        assert!(!hit);
        assert_eq!(r.json, r#"{"n":1}"#);
        let calls = AtomicUsize::new(0);
        let (r, hit) = b
            .get_or_call(key(), ttl, async {
                calls.fetch_add(1, Ordering::SeqCst);
                ok(json!({"n": 2}))
            })
            .await
            .expect("b");
        assert!(hit, "served from Redis");
        assert_eq!(
            (r.json.as_str(), calls.load(Ordering::SeqCst)),
            (r#"{"n":1}"#, 0)
        );
        assert!(r.ttl <= ttl);
        // Errors are never stored in Redis either.
        let k = CacheKey::new("s", "t", &Map::new());
        let e: Result<_, Uncached<mcp::Error>> = a
            .get_or_call(k.clone(), ttl, async { Err(mcp::Error::transport("x")) })
            .await;
        assert!(matches!(e, Err(Uncached::Failed(_))));
        assert!(
            b.shared
                .as_ref()
                .expect("shared")
                .get(&b.shared.as_ref().expect("shared").key(&k))
                .await
                .is_none()
        );

        redis.kill();
        let k = CacheKey::new("s", "other", &Map::new());
        let (_, hit) = b
            .get_or_call(k, ttl, async { ok(json!({"n": 3})) })
            .await
            .expect("still answers");
        assert!(!hit);
        assert_eq!(b.counters.redis_errors.with_label_values(&["get"]).get(), 1);
        assert_eq!(b.counters.redis_errors.with_label_values(&["set"]).get(), 1);
    }
}
