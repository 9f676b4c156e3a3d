//! Revocations through Redis (`redis.revocation: true`), beside the file.
//!
//! Stored set: two sorted sets, `{prefix}revoked:jti` (member `jti`, score its expiry) and
//! `{prefix}revoked:sub` (member `sub`, score its not-before time), unix seconds. Every
//! change is written and published on `{prefix}revocations` in one MULTI, so a replica
//! that is subscribed applies it at once and one that starts or reconnects finds it in the
//! set. The subscriber subscribes first and loads the set second: a change published in
//! between is in the set, applied again from the channel, and the last one wins either way.
//!
//! The subscriber is supervised ([`crate::supervise`]): a task that dies is restarted and
//! fails `/readyz` meanwhile. A lost connection is not a death: it is logged, counted in
//! `auth_sidecar_redis_errors_total{operation="revocation_subscribe"}`, shown by
//! `auth_sidecar_redis_revocation_subscribed 0`, and retried with backoff (at most 5 s);
//! the list loaded last stays in force. Until the first load `/readyz` fails: a replica
//! that has not caught up does not take traffic.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use arc_swap::ArcSwap;
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};

use super::RevocationList;
use crate::cache::Authenticated;
use crate::clock::unix_now;
use crate::redis_pool::{METRICS, Operation, RedisPool, StoreError};
use crate::supervise::{Restart, TaskHealth, supervise};

/// How often a quiet subscription is checked with a PING (a dead peer can stay silent).
const PING_EVERY: Duration = Duration::from_secs(5);
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// One change to the stored set, as published on the channel (JSON).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum Change {
    RevokeJti { id: String, expires: i64 },
    RevokeSub { sub: String, not_before: i64 },
    UnrevokeJti { id: String },
    UnrevokeSub { sub: String },
}

/// The key names under a prefix.
struct Keys {
    jti: String,
    sub: String,
    channel: String,
}

impl Keys {
    fn new(prefix: &str) -> Self {
        Keys {
            jti: format!("{prefix}revoked:jti"),
            sub: format!("{prefix}revoked:sub"),
            channel: format!("{prefix}revocations"),
        }
    }
}

/// Writes `change` to the stored set and publishes it, in one MULTI; drops jti entries
/// already expired on the way. What `revoke`/`unrevoke` run.
pub async fn publish(pool: &RedisPool, change: &Change) -> Result<(), StoreError> {
    let keys = Keys::new(&pool.settings.key_prefix);
    let message = serde_json::to_string(change).expect("a change serialises");
    let mut pipe = redis::pipe();
    pipe.atomic();
    match change {
        Change::RevokeJti { id, expires } => pipe.zadd(&keys.jti, id, *expires).ignore(),
        Change::RevokeSub { sub, not_before } => pipe.zadd(&keys.sub, sub, *not_before).ignore(),
        Change::UnrevokeJti { id } => pipe.zrem(&keys.jti, id).ignore(),
        Change::UnrevokeSub { sub } => pipe.zrem(&keys.sub, sub).ignore(),
    };
    pipe.zrembyscore(&keys.jti, "-inf", unix_now()).ignore();
    pipe.publish(&keys.channel, message).ignore();
    pool.run(Operation::RevocationWrite, |mut conn| async move {
        pipe.query_async::<()>(&mut conn).await
    })
    .await
}

/// Members of a sorted set with their scores (unix seconds).
type Scored = Vec<(String, f64)>;

/// The list kept from Redis, and its subscriber.
pub struct SharedRevocations {
    pool: Arc<RedisPool>,
    keys: Keys,
    list: ArcSwap<RevocationList>,
    /// Whether the stored set was loaded at least once.
    loaded: AtomicBool,
    /// The subscriber task, aborted when these revocations are dropped.
    subscriber: Mutex<Option<tokio::task::AbortHandle>>,
    health: Arc<TaskHealth>,
}

impl std::fmt::Debug for SharedRevocations {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedRevocations")
            .field("pool", &self.pool)
            .field("loaded", &self.loaded)
            .finish_non_exhaustive()
    }
}

impl Drop for SharedRevocations {
    fn drop(&mut self) {
        if let Some(task) = self.subscriber.lock().map(|mut t| t.take()).ok().flatten() {
            task.abort();
        }
    }
}

impl SharedRevocations {
    pub fn new(pool: Arc<RedisPool>) -> Self {
        SharedRevocations {
            keys: Keys::new(&pool.settings.key_prefix),
            pool,
            list: ArcSwap::from_pointee(RevocationList::default()),
            loaded: AtomicBool::new(false),
            subscriber: Mutex::new(None),
            health: Arc::default(),
        }
    }

    /// The Redis settings these revocations come through.
    pub fn pool(&self) -> &RedisPool {
        &self.pool
    }

    pub fn is_revoked(&self, token: &Authenticated, now: i64) -> bool {
        let list = self.list.load();
        !list.is_empty() && list.is_revoked(token, now)
    }

    /// Unexpired jti entries and subject entries.
    pub fn counts(&self, now: i64) -> (usize, usize) {
        let list = self.list.load();
        let jtis = list.jti.values().filter(|e| **e > now).count();
        (jtis, list.subjects.len())
    }

    /// Why this replica must not take traffic yet: the subscriber is down, or the stored
    /// set was never loaded.
    pub fn not_ready(&self) -> Option<String> {
        if let Some((_, why)) = self.health.down().into_iter().next() {
            return Some(format!("the revocation subscriber is down: {why}"));
        }
        (!self.loaded.load(Ordering::Acquire))
            .then(|| "revocations through Redis are not loaded yet".to_owned())
    }

    /// Starts the subscriber (idempotent). It holds only a weak reference and is aborted
    /// when these revocations are dropped. Must be called inside a tokio runtime.
    pub fn spawn_subscriber(self: &Arc<Self>) {
        let Ok(mut slot) = self.subscriber.lock() else {
            return;
        };
        if slot.is_some() {
            return;
        }
        let weak = Arc::downgrade(self);
        let supervised = supervise(
            "revocation_subscriber",
            self.health.clone(),
            Restart::DEFAULT,
            move || {
                let weak = weak.clone();
                async move {
                    subscriber_loop(weak).await;
                    Ok(())
                }
            },
        );
        *slot = Some(tokio::spawn(supervised).abort_handle());
    }

    /// Replaces the list with the stored set.
    async fn load(&self) -> Result<(), StoreError> {
        let now = unix_now();
        let (jti_key, sub_key) = (self.keys.jti.clone(), self.keys.sub.clone());
        let (jtis, subs): (Scored, Scored) = self
            .pool
            .run(Operation::RevocationLoad, |mut conn| async move {
                redis::pipe()
                    .zrangebyscore_withscores(&jti_key, format!("({now}"), "+inf")
                    .zrange_withscores(&sub_key, 0, -1)
                    .query_async(&mut conn)
                    .await
            })
            .await?;
        let list = RevocationList {
            jti: jtis
                .into_iter()
                .map(|(id, t)| (id.into_boxed_str(), t as i64))
                .collect(),
            subjects: subs
                .into_iter()
                .map(|(sub, t)| (sub.into_boxed_str(), t as i64))
                .collect(),
        };
        self.list.store(Arc::new(list));
        self.loaded.store(true, Ordering::Release);
        Ok(())
    }

    /// Applies one published change (copy on write: changes are rare, reads are not).
    fn apply(&self, change: Change) {
        let current = self.list.load();
        let mut list = RevocationList {
            jti: current.jti.clone(),
            subjects: current.subjects.clone(),
        };
        match change {
            Change::RevokeJti { id, expires } => {
                list.jti.insert(id.into_boxed_str(), expires);
            }
            Change::RevokeSub { sub, not_before } => {
                list.subjects.insert(sub.into_boxed_str(), not_before);
            }
            Change::UnrevokeJti { id } => {
                list.jti.remove(id.as_str());
            }
            Change::UnrevokeSub { sub } => {
                list.subjects.remove(sub.as_str());
            }
        }
        let now = unix_now();
        list.jti.retain(|_, expires| *expires > now);
        self.list.store(Arc::new(list));
    }
}

/// Subscribes, loads, applies; reconnects with backoff after a lost connection, forever.
async fn subscriber_loop(weak: Weak<SharedRevocations>) {
    let mut failures = 0u32;
    loop {
        let result = session(&weak, &mut failures).await;
        METRICS.subscribed.set(0);
        let Some(this) = weak.upgrade() else { return };
        let e = match result {
            Ok(()) => return,
            Err(e) => e,
        };
        this.pool.note(Operation::RevocationSubscribe, Some(&e));
        let delay = Duration::from_millis(250)
            .saturating_mul(1 << failures.min(5))
            .min(MAX_BACKOFF);
        tracing::warn!(error = %e, ?delay, "Revocations through Redis: connection lost; reconnecting (the last loaded list stays in force).");
        drop(this);
        failures = failures.saturating_add(1);
        tokio::time::sleep(delay).await;
    }
}

/// One connection's life: `Ok` only when the revocations were dropped.
async fn session(weak: &Weak<SharedRevocations>, failures: &mut u32) -> Result<(), StoreError> {
    let Some(this) = weak.upgrade() else {
        return Ok(());
    };
    let pool = this.pool.clone();
    let wait = pool
        .settings
        .connect_timeout
        .max(pool.settings.command_timeout);
    let timeout = || StoreError::Timeout {
        at: pool.settings.display.clone(),
        timeout: wait,
    };
    let redis_error = |e: redis::RedisError| StoreError::Redis {
        at: pool.settings.display.clone(),
        message: e.to_string(),
    };
    let started = std::time::Instant::now();
    let mut pubsub = pool.pubsub().await?;
    tokio::time::timeout(wait, pubsub.subscribe(&this.keys.channel))
        .await
        .map_err(|_| timeout())?
        .map_err(redis_error)?;
    METRICS
        .duration
        .with_label_values(&[Operation::RevocationSubscribe.as_str()])
        .observe(started.elapsed().as_secs_f64());
    this.load().await?;
    METRICS.subscribed.set(1);
    pool.note(Operation::RevocationSubscribe, None);
    if *failures > 0 {
        tracing::info!(at = %pool.settings.display, "Revocations through Redis: subscribed again and caught up.");
    }
    *failures = 0;
    drop(this);
    let (mut sink, mut stream) = pubsub.split();
    let mut ping = tokio::time::interval(PING_EVERY);
    ping.tick().await;
    loop {
        tokio::select! {
            message = stream.next() => {
                let Some(message) = message else {
                    return Err(StoreError::Redis {
                        at: pool.settings.display.clone(),
                        message: "the subscription connection closed".into(),
                    });
                };
                let Some(this) = weak.upgrade() else { return Ok(()) };
                match serde_json::from_slice::<Change>(message.get_payload_bytes()) {
                    Ok(change) => this.apply(change),
                    // Not ours, or from a newer version: the stored set still has it.
                    Err(e) => tracing::warn!(error = %e, "Revocations through Redis: ignored a message that is not a change."),
                }
            }
            _ = ping.tick() => {
                tokio::time::timeout(wait, sink.ping::<redis::Value>())
                    .await
                    .map_err(|_| timeout())?
                    .map_err(redis_error)?;
            }
        }
    }
}
