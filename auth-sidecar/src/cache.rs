//! Verification cache: token → verified identity (or a recent failure).
//!
//! Signature checks dominate the cost of a decision, and the same token arrives on every
//! request of a session. Policy is never cached: it depends on path, method and address.
//! A positive entry lives at most `max_ttl` and never past the token's own expiry; bad
//! signatures and malformed tokens live `negative_ttl`, so a flood of one forged token
//! costs one verification. Each entry weighs at least `max_bytes / max_entries`, so both
//! bounds hold with one weigher.
//!
//! Entries are keyed by a 128-bit keyed hash of the token (two randomly seeded ahash states)
//! and hold the token itself, which a lookup compares before answering: a hash collision can
//! only cost a miss, never another token's identity. Short keys matter because moka's table
//! re-hashes every key when it cleans up after evictions; with the ~300-byte tokens
//! themselves as keys, that re-hashing was 11% of a fresh-token request's CPU.

use std::sync::Arc;
use std::time::{Duration, Instant};

use moka::Expiry;
use moka::sync::Cache;

use crate::reason::DenyReason;

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
    /// Audiences and scopes, for rules with an `mcp:` block.
    pub grants: crate::mcp_resource::Grants,
}

#[derive(Debug)]
enum Entry {
    Valid(Arc<Authenticated>, Duration),
    Invalid(DenyReason, Duration),
}

/// What one key holds: the token it was made from, and the verdict.
#[derive(Debug)]
struct Slot {
    token: Box<str>,
    entry: Entry,
}

struct PerEntryTtl;

impl Expiry<u128, Arc<Slot>> for PerEntryTtl {
    fn expire_after_create(&self, _: &u128, slot: &Arc<Slot>, _: Instant) -> Option<Duration> {
        Some(match slot.entry {
            Entry::Valid(_, ttl) | Entry::Invalid(_, ttl) => ttl,
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
    /// Values are `Arc`s because moka clones a value on every hit.
    cache: Cache<u128, Arc<Slot>, ahash::RandomState>,
    /// The two halves of the key; random per cache, so keys cannot be predicted.
    key_hashers: [ahash::RandomState; 2],
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
        let cache = Cache::builder()
            .max_capacity(settings.max_bytes)
            .weigher(move |_: &u128, slot: &Arc<Slot>| {
                let payload = match &slot.entry {
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
                let weight = (slot.token.len() + payload) as u64;
                weight.max(min_weight).min(u64::from(u32::MAX)) as u32
            })
            .expire_after(PerEntryTtl)
            .build_with_hasher(ahash::RandomState::new());
        TokenCache {
            cache,
            key_hashers: [ahash::RandomState::new(), ahash::RandomState::new()],
            settings,
        }
    }

    fn key(&self, token: &str) -> u128 {
        let [a, b] = &self.key_hashers;
        (u128::from(a.hash_one(token)) << 64) | u128::from(b.hash_one(token))
    }

    pub fn get(&self, token: &str, now: i64) -> Lookup {
        let Some(slot) = self.cache.get(&self.key(token)) else {
            return Lookup::Miss;
        };
        if *slot.token != *token {
            return Lookup::Miss;
        }
        match &slot.entry {
            // The TTL already ends at expiry; re-check so a clock jump never extends it.
            Entry::Valid(a, _) => match a.valid_until {
                Some((until, reason)) if now >= until => Lookup::Invalid(reason),
                _ => Lookup::Valid(a.clone()),
            },
            Entry::Invalid(reason, _) => Lookup::Invalid(*reason),
        }
    }

    fn insert(&self, token: &str, entry: Entry) {
        let slot = Slot {
            token: token.into(),
            entry,
        };
        self.cache.insert(self.key(token), Arc::new(slot));
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
        self.insert(token, Entry::Valid(value, ttl));
    }

    pub fn insert_invalid(&self, token: &str, reason: DenyReason) {
        if is_cacheable_failure(reason) && !self.settings.negative_ttl.is_zero() {
            self.insert(token, Entry::Invalid(reason, self.settings.negative_ttl));
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

/// Whether the verification cache answered (for metrics).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CacheUse {
    NotNeeded,
    Hit,
    Miss,
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
            grants: Default::default(),
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
    fn a_key_collision_is_a_miss_never_another_identity() {
        let cache = TokenCache::new(CacheSettings::default());
        cache.insert_valid("alice-token", auth(None), 0);
        // Force a collision: store alice's verdict under bob's key.
        let alice = cache.cache.get(&cache.key("alice-token")).expect("cached");
        cache.cache.insert(cache.key("bob-token"), alice);
        assert!(matches!(cache.get("bob-token", 0), Lookup::Miss));
        assert!(matches!(cache.get("alice-token", 0), Lookup::Valid(_)));
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
