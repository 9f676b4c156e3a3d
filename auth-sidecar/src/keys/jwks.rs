//! Remote key sets: an issuer's JWKS fetched over HTTP(S), kept fresh in the background.
//!
//! - **Install once**: a fetched document is parsed into ready-to-verify keys when it is
//!   installed; requests only look keys up. A key missing from a fresh document stops being
//!   accepted as soon as that document is installed (the generation changes, so cached
//!   verifications made with the old set are re-checked).
//! - **Background refresh** follows `Cache-Control: max-age`, clamped to
//!   `[refresh_min, refresh_max]`, minus up to 20 % jitter so replicas do not fetch in step.
//! - **Unknown kid**: at most one fetch in flight per issuer (concurrent requests wait for
//!   it, bounded by the timeout), a cooldown between forced fetches, and a negative cache of
//!   kids that stayed unknown. A flood of random kids costs at most one fetch per cooldown.
//! - **Outage**: a failed fetch keeps the last good keys; they are served until they are
//!   `max_stale` old, then requests for this issuer are denied `keys_unavailable`.
//!
//! Time is passed in as unix seconds (`now`), so tests move the clock without sleeping.

use std::fmt;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Mutex, Weak};
use std::time::Duration;

use arc_swap::ArcSwapOption;
use aws_lc_rs::digest;
use jsonwebtoken::Algorithm;
use reqwest::header::{ACCEPT, CACHE_CONTROL};

use super::{KeySet, VerifyingKey};
use crate::clock::unix_now;
use crate::supervise::{Restart, TaskHealth, supervise};

/// Largest JWKS or discovery document we read; real ones are a few KiB.
const MAX_DOCUMENT_BYTES: usize = 1024 * 1024;
/// Kids longer than this are never looked up remotely nor remembered.
const MAX_KID_BYTES: usize = 256;
/// Byte budget of the negative kid cache.
const UNKNOWN_KIDS_BYTES: u64 = 1024 * 1024;

/// Where an issuer's key set lives.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum JwksSource {
    /// A fixed JWKS URL.
    Uri(String),
    /// `jwks_uri` from `<issuer>/.well-known/openid-configuration` (OpenID Connect
    /// Discovery 1.0 §4); the document's `issuer` must equal ours (§4.3).
    Discovery { issuer: String },
}

/// Fetch and freshness settings of one remote key set.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JwksSettings {
    pub source: JwksSource,
    /// Bound on one fetch (discovery and JWKS together). Default 5 s.
    pub timeout: Duration,
    /// Lower clamp of `Cache-Control: max-age`. Default 5 min.
    pub refresh_min: Duration,
    /// Upper clamp, also used without `max-age`. Default 24 h.
    pub refresh_max: Duration,
    /// Minimum time between two fetches forced by unknown kids. Default 30 s.
    pub cooldown: Duration,
    /// How long an unknown kid is remembered (cleared when a new set is installed).
    /// Default 5 min.
    pub unknown_kid_ttl: Duration,
    /// Last good keys are served until this old, then the issuer denies. Default 24 h.
    pub max_stale: Duration,
    /// `/readyz` waits for this issuer's keys. Default true.
    pub required: bool,
}

impl JwksSettings {
    /// The documented defaults for `source`.
    pub fn new(source: JwksSource) -> Self {
        JwksSettings {
            source,
            timeout: Duration::from_secs(5),
            refresh_min: Duration::from_secs(5 * 60),
            refresh_max: Duration::from_secs(24 * 3600),
            cooldown: Duration::from_secs(30),
            unknown_kid_ttl: Duration::from_secs(5 * 60),
            max_stale: Duration::from_secs(24 * 3600),
            required: true,
        }
    }
}

/// Why a fetch failed. The `label` is the `result` label of `auth_sidecar_jwks_fetch_total`.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("timed out after {0:?}")]
    Timeout(Duration),
    #[error("request to {url} failed: {message}")]
    Transport { url: String, message: String },
    #[error("{url} answered HTTP {status}")]
    Status { url: String, status: u16 },
    #[error("{url}: {message}")]
    Invalid { url: String, message: String },
    #[error("{url} holds no usable signing key")]
    Empty { url: String },
}

impl FetchError {
    /// Every `result` label value, success first.
    pub const LABELS: [&'static str; 6] = [
        "success",
        "timeout",
        "transport",
        "http_status",
        "invalid",
        "empty",
    ];

    pub fn label(&self) -> &'static str {
        Self::LABELS[self.index()]
    }

    /// Position of [`FetchError::label`] in [`FetchError::LABELS`].
    fn index(&self) -> usize {
        match self {
            FetchError::Timeout(_) => 1,
            FetchError::Transport { .. } => 2,
            FetchError::Status { .. } => 3,
            FetchError::Invalid { .. } => 4,
            FetchError::Empty { .. } => 5,
        }
    }
}

/// An installed key set.
#[derive(Debug)]
pub struct Installed {
    pub keys: KeySet,
    /// Bumped whenever the set's content changes; cached verifications remember it.
    pub generation: u64,
    digest: Vec<u8>,
}

/// What a fetch brought back.
struct Fetched {
    keys: KeySet,
    digest: Vec<u8>,
    max_age: Option<Duration>,
}

/// Why an issuer's keys cannot be used right now (for `/readyz` and logs).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Unavailable {
    /// No fetch has succeeded yet.
    NeverFetched { last_error: Option<String> },
    /// The last good keys are older than `max_stale`.
    Stale {
        age: u64,
        max_stale: u64,
        last_error: Option<String>,
    },
}

impl fmt::Display for Unavailable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (what, error) = match self {
            Unavailable::NeverFetched { last_error } => {
                ("no keys fetched yet".to_owned(), last_error)
            }
            Unavailable::Stale {
                age,
                max_stale,
                last_error,
            } => (
                format!("keys are {age}s old, older than max_stale {max_stale}s"),
                last_error,
            ),
        };
        match error {
            Some(e) => write!(f, "{what}; last fetch failed: {e}"),
            None => f.write_str(&what),
        }
    }
}

/// One issuer's remote keys. Shared (`Arc`) by every runtime whose settings for this issuer
/// are equal, so a reload that does not touch the issuer keeps its keys.
pub struct RemoteKeys {
    issuer: String,
    settings: JwksSettings,
    client: reqwest::Client,
    installed: ArcSwapOption<Installed>,
    /// Unix seconds of the last successful fetch; `i64::MIN` = never.
    last_success: AtomicI64,
    /// Unix seconds when the last forced (unknown-kid) fetch started; `i64::MIN` = never.
    last_forced: AtomicI64,
    /// Completed fetch attempts; a waiter compares it to see whether a fetch happened.
    attempts: AtomicU64,
    /// Fetch attempts by result, indexed like [`FetchError::LABELS`]; read by the metrics
    /// at scrape time. They live as long as these keys, so they survive reloads too.
    fetches: [AtomicU64; FetchError::LABELS.len()],
    /// Held for the whole of a fetch: the singleflight. tokio's mutex is fair (FIFO), so a
    /// waiter gets in right after the fetch it waited for.
    fetching: tokio::sync::Mutex<()>,
    unknown_kids: moka::sync::Cache<Box<str>, ()>,
    /// The discovered JWKS URL, reused until a fetch fails.
    discovered: Mutex<Option<String>>,
    last_error: Mutex<Option<String>>,
    /// The background refresh task, aborted when the last runtime using these keys drops.
    refresher: Mutex<Option<tokio::task::AbortHandle>>,
    /// Whether the refresh task is down (it is restarted; see [`crate::supervise`]).
    refresh_health: Arc<TaskHealth>,
    /// Test hook: the refresh task panics at the start of its next round.
    #[cfg(any(test, feature = "test-util"))]
    panic_refresh: std::sync::atomic::AtomicBool,
}

impl fmt::Debug for RemoteKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RemoteKeys")
            .field("issuer", &self.issuer)
            .field("settings", &self.settings)
            .field("keys", &self.key_count())
            .finish_non_exhaustive()
    }
}

impl Drop for RemoteKeys {
    fn drop(&mut self) {
        if let Some(task) = self.refresher.lock().map(|mut t| t.take()).ok().flatten() {
            task.abort();
        }
    }
}

/// Reads the `max-age` directive of a `Cache-Control` value; `no-store`/`no-cache` mean 0.
pub fn max_age(cache_control: &str) -> Option<Duration> {
    let mut found = None;
    for directive in cache_control.split(',') {
        let directive = directive.trim();
        let (name, value) = directive.split_once('=').unwrap_or((directive, ""));
        match name.trim().to_ascii_lowercase().as_str() {
            "no-store" | "no-cache" => return Some(Duration::ZERO),
            "max-age" => {
                found = value
                    .trim()
                    .trim_matches('"')
                    .parse::<u64>()
                    .ok()
                    .map(Duration::from_secs);
            }
            _ => {}
        }
    }
    found
}

/// Delay until the next background refresh after a success: `max_age` clamped to
/// `[min, max]` (`max` without one), shortened by `jitter` ∈ [0, 1) × 20 %.
pub fn refresh_delay(
    max_age: Option<Duration>,
    min: Duration,
    max: Duration,
    jitter: f64,
) -> Duration {
    let base = max_age.unwrap_or(max).clamp(min, max);
    base.mul_f64(1.0 - 0.2 * jitter.clamp(0.0, 1.0))
}

/// Delay before retrying after `failures` consecutive failures: the cooldown doubled per
/// failure, at most `refresh_min`, shortened by up to 20 % jitter.
pub fn retry_delay(
    failures: u32,
    cooldown: Duration,
    refresh_min: Duration,
    jitter: f64,
) -> Duration {
    let doubled = cooldown.saturating_mul(1 << failures.saturating_sub(1).min(16));
    let base = doubled.min(refresh_min.max(cooldown));
    base.mul_f64(1.0 - 0.2 * jitter.clamp(0.0, 1.0))
}

/// The one HTTP client of every key set, for the whole process. Building a client loads
/// the system's root certificates from disk (milliseconds, most of a config load's time),
/// which every load and reload would otherwise repeat for every JWKS issuer. Timeouts are
/// per request ([`RemoteKeys::get`]), so issuers with different ones share it.
fn http_client() -> Result<reqwest::Client, String> {
    static CLIENT: LazyLock<Result<reqwest::Client, String>> = LazyLock::new(|| {
        reqwest::Client::builder()
            // Fetches are rare; no pooled connection outlives the runtime that opened it.
            .pool_max_idle_per_host(0)
            .redirect(reqwest::redirect::Policy::limited(3))
            .user_agent(concat!("auth-sidecar/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| format!("cannot build the HTTP client: {e}"))
    });
    CLIENT.clone()
}

impl RemoteKeys {
    /// A key set with nothing installed yet. No I/O happens until the first lookup or
    /// [`RemoteKeys::spawn_refresh`].
    pub fn new(issuer: &str, settings: JwksSettings) -> Result<Self, String> {
        let client = http_client()?;
        let ttl = settings.unknown_kid_ttl.max(Duration::from_secs(1));
        #[expect(
            clippy::borrowed_box,
            reason = "moka's weigher takes &K, and K is Box<str>"
        )]
        let weigh = |kid: &Box<str>, _: &()| kid.len() as u32 + 32;
        Ok(RemoteKeys {
            issuer: issuer.to_owned(),
            client,
            installed: ArcSwapOption::empty(),
            last_success: AtomicI64::new(i64::MIN),
            last_forced: AtomicI64::new(i64::MIN),
            attempts: AtomicU64::new(0),
            fetches: Default::default(),
            fetching: tokio::sync::Mutex::new(()),
            unknown_kids: moka::sync::Cache::builder()
                .max_capacity(UNKNOWN_KIDS_BYTES)
                .weigher(weigh)
                .time_to_live(ttl)
                .build(),
            discovered: Mutex::new(None),
            last_error: Mutex::new(None),
            refresher: Mutex::new(None),
            refresh_health: Arc::default(),
            #[cfg(any(test, feature = "test-util"))]
            panic_refresh: Default::default(),
            settings,
        })
    }

    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    pub fn settings(&self) -> &JwksSettings {
        &self.settings
    }

    /// The installed set, if any.
    pub fn current(&self) -> Option<Arc<Installed>> {
        self.installed.load_full()
    }

    /// Number of installed keys (0 before the first successful fetch).
    pub fn key_count(&self) -> usize {
        self.installed.load().as_ref().map_or(0, |i| i.keys.len())
    }

    /// Unix seconds of the last successful fetch.
    pub fn last_success(&self) -> Option<i64> {
        Some(self.last_success.load(Ordering::Acquire)).filter(|t| *t != i64::MIN)
    }

    /// Completed fetch attempts (successful or not) since creation.
    pub fn attempts(&self) -> u64 {
        self.attempts.load(Ordering::Acquire)
    }

    /// Fetch attempts so far per `result` label, in [`FetchError::LABELS`] order.
    pub fn fetch_counts(&self) -> [(&'static str, u64); FetchError::LABELS.len()] {
        std::array::from_fn(|i| {
            (
                FetchError::LABELS[i],
                self.fetches[i].load(Ordering::Relaxed),
            )
        })
    }

    /// Whether the keys may be used at `now`.
    pub fn availability(&self, now: i64) -> Result<(), Unavailable> {
        let last_error = || self.last_error.lock().ok().and_then(|e| e.clone());
        let Some(last) = self.last_success() else {
            return Err(Unavailable::NeverFetched {
                last_error: last_error(),
            });
        };
        let age = now.saturating_sub(last).max(0) as u64;
        if age > self.settings.max_stale.as_secs() {
            return Err(Unavailable::Stale {
                age,
                max_stale: self.settings.max_stale.as_secs(),
                last_error: last_error(),
            });
        }
        Ok(())
    }

    /// The key for a token and the set's generation, if usable at `now`.
    pub fn find(
        &self,
        kid: Option<&str>,
        alg: Algorithm,
        now: i64,
    ) -> Result<(Option<Arc<VerifyingKey>>, u64), Unavailable> {
        self.availability(now)?;
        let installed = self.installed.load();
        let Some(installed) = installed.as_ref() else {
            return Err(Unavailable::NeverFetched { last_error: None });
        };
        Ok((installed.keys.find(kid, alg).cloned(), installed.generation))
    }

    /// The generation of the installed set, if usable at `now` (checked on cache hits).
    pub fn generation(&self, now: i64) -> Option<u64> {
        self.availability(now).ok()?;
        self.installed.load().as_ref().map(|i| i.generation)
    }

    /// Called when a token names a kid we do not have, or the keys are missing or stale.
    /// Fetches at most once per cooldown; when a fetch is already running, waits for it
    /// (at most `timeout`). Returns true when a fetch completed meanwhile, so the caller
    /// should decide again.
    pub async fn refresh_for_kid(&self, kid: Option<&str>, now: i64) -> bool {
        if let Some(kid) = kid
            && (kid.len() > MAX_KID_BYTES || self.unknown_kids.contains_key(kid))
        {
            return false;
        }
        let seen = self.attempts();
        match self.fetching.try_lock() {
            Ok(guard) => {
                let last = self.last_forced.load(Ordering::Acquire);
                let cooldown = self.settings.cooldown.as_secs() as i64;
                if last != i64::MIN && now < last.saturating_add(cooldown) {
                    return false;
                }
                self.last_forced.store(now, Ordering::Release);
                let _ = self.fetch_and_install(now).await;
                drop(guard);
            }
            Err(_) => {
                // Someone is fetching: share that fetch instead of starting another.
                let waited = tokio::time::timeout(self.settings.timeout, self.fetching.lock());
                drop(waited.await);
            }
        }
        let fetched = self.attempts() != seen;
        if let Some(kid) = kid
            && fetched
            && !self.has_kid(kid)
        {
            self.unknown_kids.insert(kid.into(), ());
        }
        fetched
    }

    fn has_kid(&self, kid: &str) -> bool {
        self.installed
            .load()
            .as_ref()
            .is_some_and(|i| i.keys.has_kid(kid))
    }

    /// One fetch, installed on success. Callers hold `fetching`.
    async fn fetch_and_install(&self, now: i64) -> Result<Option<Duration>, FetchError> {
        let timeout = self.settings.timeout;
        let result = match tokio::time::timeout(timeout, self.fetch()).await {
            Ok(r) => r,
            Err(_) => Err(FetchError::Timeout(timeout)),
        };
        let index = match &result {
            Ok(_) => 0,
            Err(e) => e.index(),
        };
        self.fetches[index].fetch_add(1, Ordering::Relaxed);
        let outcome = match result {
            Ok(fetched) => {
                self.install(fetched.keys, fetched.digest, now);
                if let Ok(mut e) = self.last_error.lock() {
                    *e = None;
                }
                Ok(fetched.max_age)
            }
            Err(e) => {
                if let Ok(mut d) = self.discovered.lock() {
                    *d = None;
                }
                tracing::warn!(
                    issuer = %self.issuer,
                    error = %e,
                    keys = self.key_count(),
                    "JWKS fetch failed; serving the last good keys."
                );
                if let Ok(mut last) = self.last_error.lock() {
                    *last = Some(e.to_string());
                }
                Err(e)
            }
        };
        self.attempts.fetch_add(1, Ordering::AcqRel);
        outcome
    }

    fn install(&self, keys: KeySet, digest: Vec<u8>, now: i64) {
        let current = self.installed.load();
        let unchanged = current.as_ref().is_some_and(|c| c.digest == digest);
        if !unchanged {
            let generation = current.as_ref().map_or(1, |c| c.generation + 1);
            tracing::info!(
                issuer = %self.issuer,
                keys = keys.len(),
                generation,
                "JWKS installed."
            );
            self.installed.store(Some(Arc::new(Installed {
                keys,
                generation,
                digest,
            })));
            // A kid unknown to the old set may be in the new one.
            self.unknown_kids.invalidate_all();
        }
        self.last_success.store(now, Ordering::Release);
    }

    async fn fetch(&self) -> Result<Fetched, FetchError> {
        let url = self.jwks_url().await?;
        let (body, max_age) = self.get(&url).await?;
        let text = std::str::from_utf8(&body).map_err(|_| FetchError::Invalid {
            url: url.clone(),
            message: "not UTF-8".into(),
        })?;
        // Remote sets never carry shared secrets: a symmetric key published over HTTP is
        // not a secret.
        let (keys, skipped) =
            KeySet::from_jwks(text, false).map_err(|message| FetchError::Invalid {
                url: url.clone(),
                message,
            })?;
        for s in skipped {
            tracing::warn!(issuer = %self.issuer, skipped = %s, "JWKS key skipped.");
        }
        if keys.is_empty() {
            return Err(FetchError::Empty { url });
        }
        Ok(Fetched {
            keys,
            digest: digest::digest(&digest::SHA256, &body).as_ref().to_vec(),
            max_age,
        })
    }

    async fn jwks_url(&self) -> Result<String, FetchError> {
        let issuer = match &self.settings.source {
            JwksSource::Uri(uri) => return Ok(uri.clone()),
            JwksSource::Discovery { issuer } => issuer,
        };
        if let Some(url) = self.discovered.lock().ok().and_then(|d| d.clone()) {
            return Ok(url);
        }
        let url = discovery_url(issuer);
        let (body, _) = self.get(&url).await?;
        #[derive(serde::Deserialize)]
        struct Discovery {
            issuer: String,
            jwks_uri: String,
        }
        let doc: Discovery = serde_json::from_slice(&body).map_err(|e| FetchError::Invalid {
            url: url.clone(),
            message: format!("invalid discovery document: {e}"),
        })?;
        if doc.issuer != *issuer {
            return Err(FetchError::Invalid {
                url,
                message: format!(
                    "discovery document names issuer {:?}, expected {issuer:?}",
                    doc.issuer
                ),
            });
        }
        if let Ok(mut d) = self.discovered.lock() {
            *d = Some(doc.jwks_uri.clone());
        }
        Ok(doc.jwks_uri)
    }

    /// GET with a size bound; returns the body and the `Cache-Control` max-age.
    async fn get(&self, url: &str) -> Result<(Vec<u8>, Option<Duration>), FetchError> {
        let transport = |e: reqwest::Error| {
            if e.is_timeout() {
                FetchError::Timeout(self.settings.timeout)
            } else {
                FetchError::Transport {
                    url: url.to_owned(),
                    message: error_chain(&e),
                }
            }
        };
        let mut response = self
            .client
            .get(url)
            .timeout(self.settings.timeout)
            .header(ACCEPT, "application/json")
            .send()
            .await
            .map_err(transport)?;
        let status = response.status();
        if status != reqwest::StatusCode::OK {
            return Err(FetchError::Status {
                url: url.to_owned(),
                status: status.as_u16(),
            });
        }
        let max_age = response
            .headers()
            .get(CACHE_CONTROL)
            .and_then(|v| v.to_str().ok())
            .and_then(max_age);
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(transport)? {
            if body.len() + chunk.len() > MAX_DOCUMENT_BYTES {
                return Err(FetchError::Invalid {
                    url: url.to_owned(),
                    message: format!("document larger than {MAX_DOCUMENT_BYTES} bytes"),
                });
            }
            body.extend_from_slice(&chunk);
        }
        Ok((body, max_age))
    }

    /// Starts the background refresh (idempotent). It holds only a weak reference and is
    /// aborted when these keys are dropped, so a reload that drops the issuer stops it.
    /// Must be called inside a tokio runtime.
    pub fn spawn_refresh(self: &Arc<Self>) {
        let Ok(mut slot) = self.refresher.lock() else {
            return;
        };
        if slot.is_some() {
            return;
        }
        // Restarted when it dies; a set whose refresh is down keeps serving its keys until
        // `max_stale` (then denies) and makes `/readyz` fail meanwhile.
        let weak = Arc::downgrade(self);
        let health = self.refresh_health.clone();
        let supervised = supervise("jwks_refresh", health, Restart::DEFAULT, move || {
            let weak = weak.clone();
            async move {
                refresh_loop(weak).await;
                Ok(())
            }
        });
        *slot = Some(tokio::spawn(supervised).abort_handle());
    }

    /// Test hook: makes the refresh task panic at the start of its next round.
    #[cfg(any(test, feature = "test-util"))]
    pub fn panic_refresh(&self) {
        self.panic_refresh.store(true, Ordering::SeqCst);
    }

    /// Why the background refresh is down, if it is.
    pub fn refresh_down(&self) -> Option<String> {
        self.refresh_health
            .down()
            .into_iter()
            .next()
            .map(|(_, why)| why)
    }
}

async fn refresh_loop(weak: Weak<RemoteKeys>) {
    let mut failures = 0u32;
    loop {
        let delay = {
            let Some(keys) = weak.upgrade() else { return };
            #[cfg(any(test, feature = "test-util"))]
            if keys.panic_refresh.swap(false, Ordering::SeqCst) {
                panic!("test hook: the key refresh panics");
            }
            let _fetching = keys.fetching.lock().await;
            let s = &keys.settings;
            match keys.fetch_and_install(unix_now()).await {
                Ok(max_age) => {
                    failures = 0;
                    refresh_delay(max_age, s.refresh_min, s.refresh_max, fastrand::f64())
                }
                Err(_) => {
                    failures = failures.saturating_add(1);
                    retry_delay(failures, s.cooldown, s.refresh_min, fastrand::f64())
                }
            }
        };
        tokio::time::sleep(delay).await;
    }
}

/// `<issuer>/.well-known/openid-configuration`, without doubling a trailing slash.
pub fn discovery_url(issuer: &str) -> String {
    format!(
        "{}/.well-known/openid-configuration",
        issuer.trim_end_matches('/')
    )
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_control_max_age() {
        assert_eq!(
            max_age("public, max-age=600"),
            Some(Duration::from_secs(600))
        );
        assert_eq!(max_age("MAX-AGE=\"60\""), Some(Duration::from_secs(60)));
        assert_eq!(max_age("no-cache, max-age=600"), Some(Duration::ZERO));
        assert_eq!(max_age("public"), None);
        assert_eq!(max_age("max-age=soon"), None);
    }

    #[test]
    fn refresh_follows_max_age_within_bounds_with_jitter() {
        let (min, max) = (Duration::from_secs(300), Duration::from_secs(86_400));
        let at = |age: Option<u64>, jitter| {
            refresh_delay(age.map(Duration::from_secs), min, max, jitter).as_secs()
        };
        assert_eq!(at(Some(3600), 0.0), 3600);
        assert_eq!(at(Some(3600), 0.5), 3240);
        assert_eq!(at(Some(10), 0.0), 300, "clamped up to refresh_min");
        assert_eq!(
            at(Some(10_000_000), 0.0),
            86_400,
            "clamped down to refresh_max"
        );
        assert_eq!(at(None, 0.0), 86_400, "no max-age: refresh_max");
        // Jitter only ever shortens, by at most 20 %.
        assert!((240..=300).contains(&at(Some(0), 0.999)));
    }

    #[test]
    fn retries_back_off_from_the_cooldown_to_refresh_min() {
        let (cooldown, min) = (Duration::from_secs(30), Duration::from_secs(300));
        let at = |n| retry_delay(n, cooldown, min, 0.0).as_secs();
        assert_eq!(
            [at(1), at(2), at(3), at(4), at(5), at(40)],
            [30, 60, 120, 240, 300, 300]
        );
    }

    #[test]
    fn discovery_url_has_one_slash() {
        assert_eq!(
            discovery_url("https://idp.test/realms/x/"),
            "https://idp.test/realms/x/.well-known/openid-configuration"
        );
    }

    #[test]
    fn availability_before_any_fetch_and_when_stale() {
        let keys = RemoteKeys::new(
            "https://idp.test",
            JwksSettings::new(JwksSource::Uri("http://127.0.0.1:9/jwks".into())),
        )
        .expect("client");
        assert!(matches!(
            keys.availability(1_000),
            Err(Unavailable::NeverFetched { .. })
        ));
        keys.install(KeySet::default(), vec![1], 1_000);
        assert_eq!(keys.availability(1_000 + 86_400), Ok(()));
        let stale = keys.availability(1_000 + 86_401).expect_err("stale");
        assert_eq!(
            stale.to_string(),
            "keys are 86401s old, older than max_stale 86400s"
        );
        // Same content again: same generation; new content: next generation.
        assert_eq!(keys.current().expect("installed").generation, 1);
        keys.install(KeySet::default(), vec![1], 2_000);
        assert_eq!(keys.current().expect("installed").generation, 1);
        keys.install(KeySet::default(), vec![2], 2_000);
        assert_eq!(keys.current().expect("installed").generation, 2);
    }
}
