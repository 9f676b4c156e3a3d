//! Verification cache: token → verified identity (or a recent failure).
//!
//! Signature checks dominate the cost of a decision, and the same token arrives on every
//! request of a session. Policy is never cached: it depends on path, method and address.
//! A positive entry lives at most `max_ttl` and never past the token's own expiry; bad
//! signatures and malformed tokens live `negative_ttl`, so a flood of one forged token
//! costs one verification. Each entry weighs at least `max_bytes / max_entries`, so both
//! bounds hold with one weigher.

use std::sync::Arc;
use std::time::{Duration, Instant};

use moka::Expiry;
use moka::sync::Cache;

use crate::decision::DenyReason;

/// A verified token, as cached.
#[derive(Debug)]
pub struct Authenticated {
    pub issuer: usize,
    /// Union of the role claim and the roles-array claim, for role rules.
    pub roles: Box<[String]>,
    /// Unix time after which the token fails, and the reason it then fails with.
    pub valid_until: Option<(i64, DenyReason)>,
    /// Shared, so an allow clones a pointer, not six headers.
    pub headers: Arc<crate::identity::IdentityHeaders>,
    /// The issuer's key generation at verification; another generation means the keys
    /// changed and the token must be verified again.
    pub key_generation: u64,
    /// `sub`, for revocation and per-identity rate limits.
    pub subject: Option<Box<str>>,
    /// `jti`, for revocation.
    pub jti: Option<Box<str>>,
    /// `iat`, for per-subject revocation.
    pub issued_at: Option<i64>,
}

#[derive(Clone, Debug)]
enum Entry {
    Valid(Arc<Authenticated>, Duration),
    Invalid(DenyReason, Duration),
}

struct PerEntryTtl;

impl Expiry<Box<str>, Entry> for PerEntryTtl {
    fn expire_after_create(&self, _: &Box<str>, value: &Entry, _: Instant) -> Option<Duration> {
        Some(match value {
            Entry::Valid(_, ttl) | Entry::Invalid(_, ttl) => *ttl,
        })
    }
}

/// Cache limits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CacheSettings {
    pub max_entries: u64,
    pub max_bytes: u64,
    pub max_ttl: Duration,
    pub negative_ttl: Duration,
}

impl Default for CacheSettings {
    fn default() -> Self {
        CacheSettings {
            max_entries: 100_000,
            max_bytes: 64 * 1024 * 1024,
            max_ttl: Duration::from_secs(300),
            negative_ttl: Duration::from_secs(10),
        }
    }
}

/// A cache lookup result.
#[derive(Debug)]
pub enum Lookup {
    Valid(Arc<Authenticated>),
    Invalid(DenyReason),
    Miss,
}

pub struct TokenCache {
    cache: Cache<Box<str>, Entry>,
    settings: CacheSettings,
}

impl std::fmt::Debug for TokenCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenCache")
            .field("settings", &self.settings)
            .field("entries", &self.cache.entry_count())
            .finish()
    }
}

/// Token failures that are a property of the token alone, safe to remember.
fn is_cacheable_failure(reason: DenyReason) -> bool {
    matches!(
        reason,
        DenyReason::Malformed | DenyReason::BadSignature | DenyReason::AlgMismatch
    )
}

impl TokenCache {
    pub fn new(settings: CacheSettings) -> Self {
        let min_weight = (settings.max_bytes / settings.max_entries.max(1)).max(1);
        #[expect(
            clippy::borrowed_box,
            reason = "moka's weigher takes &K, and K is Box<str>"
        )]
        let cache = Cache::builder()
            .max_capacity(settings.max_bytes)
            .weigher(move |token: &Box<str>, entry: &Entry| {
                let payload = match entry {
                    Entry::Valid(a, _) => {
                        a.headers
                            .iter()
                            .map(|(n, v)| n.as_str().len() + v.len())
                            .sum::<usize>()
                            + a.roles.iter().map(String::len).sum::<usize>()
                            + 128
                    }
                    Entry::Invalid(..) => 16,
                };
                let weight = (token.len() + payload) as u64;
                weight.max(min_weight).min(u64::from(u32::MAX)) as u32
            })
            .expire_after(PerEntryTtl)
            .build();
        TokenCache { cache, settings }
    }

    pub fn get(&self, token: &str, now: i64) -> Lookup {
        match self.cache.get(token) {
            // The TTL already ends at expiry; re-check so a clock jump never extends it.
            Some(Entry::Valid(a, _)) => match a.valid_until {
                Some((until, reason)) if now >= until => Lookup::Invalid(reason),
                _ => Lookup::Valid(a),
            },
            Some(Entry::Invalid(reason, _)) => Lookup::Invalid(reason),
            None => Lookup::Miss,
        }
    }

    pub fn insert_valid(&self, token: &str, value: Arc<Authenticated>, now: i64) {
        let mut ttl = self.settings.max_ttl;
        if let Some((until, _)) = value.valid_until {
            let left = until.saturating_sub(now);
            if left <= 0 {
                return;
            }
            ttl = ttl.min(Duration::from_secs(left as u64));
        }
        self.cache.insert(token.into(), Entry::Valid(value, ttl));
    }

    pub fn insert_invalid(&self, token: &str, reason: DenyReason) {
        if is_cacheable_failure(reason) && !self.settings.negative_ttl.is_zero() {
            self.cache.insert(
                token.into(),
                Entry::Invalid(reason, self.settings.negative_ttl),
            );
        }
    }

    pub fn clear(&self) {
        self.cache.invalidate_all();
    }

    pub fn entry_count(&self) -> u64 {
        self.cache.run_pending_tasks();
        self.cache.entry_count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::IdentityHeaders;

    fn auth(valid_until: Option<(i64, DenyReason)>) -> Arc<Authenticated> {
        Arc::new(Authenticated {
            issuer: 0,
            roles: Box::new([]),
            valid_until,
            headers: Arc::new(IdentityHeaders(vec![])),
            key_generation: 0,
            subject: None,
            jti: None,
            issued_at: None,
        })
    }

    #[test]
    fn valid_entries_are_served_until_expiry() {
        let cache = TokenCache::new(CacheSettings::default());
        cache.insert_valid("t", auth(Some((1_000, DenyReason::Expired))), 900);
        assert!(matches!(cache.get("t", 950), Lookup::Valid(_)));
        assert!(matches!(
            cache.get("t", 1_000),
            Lookup::Invalid(DenyReason::Expired)
        ));
        // Already expired at insert: not cached at all.
        cache.insert_valid("old", auth(Some((10, DenyReason::Expired))), 20);
        assert!(matches!(cache.get("old", 20), Lookup::Miss));
    }

    #[test]
    fn only_token_intrinsic_failures_are_remembered() {
        let cache = TokenCache::new(CacheSettings::default());
        cache.insert_invalid("forged", DenyReason::BadSignature);
        cache.insert_invalid("late", DenyReason::Expired);
        cache.insert_invalid("kid", DenyReason::UnknownKid);
        assert!(matches!(
            cache.get("forged", 0),
            Lookup::Invalid(DenyReason::BadSignature)
        ));
        assert!(matches!(cache.get("late", 0), Lookup::Miss));
        assert!(matches!(cache.get("kid", 0), Lookup::Miss));
        cache.clear();
        assert!(matches!(cache.get("forged", 0), Lookup::Miss));
    }

    #[test]
    fn entry_count_is_bounded() {
        let cache = TokenCache::new(CacheSettings {
            max_entries: 10,
            max_bytes: 10_000,
            ..Default::default()
        });
        for i in 0..100 {
            cache.insert_valid(&format!("token-{i}"), auth(None), 0);
        }
        assert!(cache.entry_count() <= 10, "{}", cache.entry_count());
    }
}
