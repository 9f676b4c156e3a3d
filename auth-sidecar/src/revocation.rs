//! Revoked tokens: a YAML (or JSON) file of `jti` values and per-subject "not before" times.
//!
//! ```yaml
//! jti:                                  # each entry pruned once past its expiry
//!   - {id: 0b6f4a52-8d1e, expires: 2026-12-01T00:00:00Z}
//! subjects:                             # every token of `sub` issued before the time
//!   - {sub: alice, not_before: 2026-11-23T04:00:00Z}
//! ```
//!
//! Times are RFC 3339 or unix seconds. The list is checked after the signature and before
//! any allow, including allows answered by the verification cache, so a cached token is
//! refused as soon as its revocation is loaded. A subject entry revokes tokens without `iat`.
//! The file hot-reloads like the config; a bad file is refused and the last good list kept.
//!
//! With `redis.revocation: true` a second list comes through Redis ([`SharedRevocations`]); a token
//! revoked in either is revoked.

mod shared;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arc_swap::ArcSwap;
use serde::Deserialize;

use crate::cache::Authenticated;
use config_plumbing::Problems;
pub use shared::{Change, SharedRevocations, publish};

#[derive(Deserialize)]
#[serde(untagged)]
enum RawTime {
    Seconds(i64),
    Text(String),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawJti {
    id: String,
    expires: RawTime,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSubject {
    sub: String,
    not_before: RawTime,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
struct RawList {
    jti: Vec<RawJti>,
    subjects: Vec<RawSubject>,
}

/// A parsed revocation list.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct RevocationList {
    /// jti → unix expiry of the entry.
    jti: HashMap<Box<str>, i64>,
    /// sub → unix time before which its tokens are revoked.
    subjects: HashMap<Box<str>, i64>,
}

fn unix_time(raw: &RawTime, path: &str, problems: &mut Problems) -> Option<i64> {
    match raw {
        RawTime::Seconds(s) => Some(*s),
        RawTime::Text(t) => match parse_time(t) {
            Ok(time) => Some(time),
            Err(e) => {
                problems.push(path, e);
                None
            }
        },
    }
}

/// A time as the list and the `revoke` command take it: RFC 3339 or unix seconds.
pub fn parse_time(text: &str) -> Result<i64, String> {
    if let Ok(seconds) = text.trim().parse::<i64>() {
        return Ok(seconds);
    }
    humantime::parse_rfc3339_weak(text)
        .map(|time| {
            time.duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs() as i64)
        })
        .map_err(|e| format!("invalid time {text:?}: {e} (expected RFC 3339 or unix seconds)"))
}

impl RevocationList {
    /// Parses a list, dropping `jti` entries already expired at `now`. `at` prefixes the
    /// paths in problems (`revocation_file`).
    pub fn parse(text: &str, now: i64, at: &str) -> Result<Self, Problems> {
        let mut problems = Problems::default();
        let value: serde_yaml::Value = serde_yaml::from_str(text).map_err(|e| {
            let mut p = Problems::default();
            p.push(at, format!("invalid YAML: {e}"));
            p
        })?;
        let raw: RawList = if value.is_null() {
            RawList::default()
        } else {
            serde_path_to_error::deserialize(value).map_err(|e| {
                let mut p = Problems::default();
                p.push(format!("{at}: {}", e.path()), e.inner().to_string());
                p
            })?
        };
        let mut list = RevocationList::default();
        for (i, j) in raw.jti.iter().enumerate() {
            let path = format!("{at}: jti[{i}]");
            if j.id.is_empty() {
                problems.push(format!("{path}.id"), "must not be empty");
            }
            if let Some(expires) = unix_time(&j.expires, &format!("{path}.expires"), &mut problems)
                && expires > now
            {
                list.jti.insert(j.id.as_str().into(), expires);
            }
        }
        for (i, s) in raw.subjects.iter().enumerate() {
            let path = format!("{at}: subjects[{i}]");
            if s.sub.is_empty() {
                problems.push(format!("{path}.sub"), "must not be empty");
            }
            if let Some(t) = unix_time(&s.not_before, &format!("{path}.not_before"), &mut problems)
            {
                let entry = list.subjects.entry(s.sub.as_str().into()).or_insert(t);
                *entry = (*entry).max(t);
            }
        }
        if problems.is_empty() {
            Ok(list)
        } else {
            Err(problems)
        }
    }

    /// Whether a verified token is revoked at `now`.
    pub fn is_revoked(&self, token: &Authenticated, now: i64) -> bool {
        if let Some(jti) = &token.jti
            && self.jti.get(&**jti).is_some_and(|expires| *expires > now)
        {
            return true;
        }
        if let Some(sub) = &token.subject
            && let Some(not_before) = self.subjects.get(&**sub)
        {
            return token.issued_at.is_none_or(|iat| iat < *not_before);
        }
        false
    }

    pub fn is_empty(&self) -> bool {
        self.jti.is_empty() && self.subjects.is_empty()
    }
}

/// The active revocation list and the file it comes from, swapped atomically when the
/// file changes; and the list through Redis, if configured.
#[derive(Debug, Default)]
pub struct Revocations {
    path: Option<PathBuf>,
    list: ArcSwap<RevocationList>,
    /// Digest of the file text behind `list`, to tell a real change from a touch.
    loaded: ArcSwap<Vec<u8>>,
    /// Carried over by reloads with the same `redis:` block (`Runtime::adopt`).
    pub shared: Option<Arc<SharedRevocations>>,
}

impl Revocations {
    /// Loads the file at `path` (problems under `revocation_file`).
    pub fn load(path: &Path, now: i64) -> Result<Self, Problems> {
        let (list, loaded) = read(path, now)?;
        Ok(Revocations {
            path: Some(path.to_owned()),
            list: ArcSwap::from_pointee(list),
            loaded: ArcSwap::from_pointee(loaded),
            shared: None,
        })
    }

    /// Whether the file's content differs from the loaded list's.
    pub fn is_file_changed(&self) -> bool {
        self.path.as_deref().is_some_and(|path| {
            std::fs::read(path).map_or(true, |text| text_digest(&text) != **self.loaded.load())
        })
    }

    /// The file, if any.
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// Re-reads the file; on a problem the current list stays.
    pub fn reload(&self, now: i64) -> Result<(), Problems> {
        let Some(path) = &self.path else {
            return Ok(());
        };
        let (list, loaded) = read(path, now)?;
        self.list.store(Arc::new(list));
        self.loaded.store(Arc::new(loaded));
        Ok(())
    }

    /// Whether a verified token is revoked at `now`, by the file or through Redis.
    /// Lock-free.
    pub fn is_revoked(&self, token: &Authenticated, now: i64) -> bool {
        let list = self.list.load();
        (!list.is_empty() && list.is_revoked(token, now))
            || self
                .shared
                .as_ref()
                .is_some_and(|s| s.is_revoked(token, now))
    }

    /// Unexpired `jti` entries and subject entries in force (file and Redis), for metrics.
    pub fn counts(&self, now: i64) -> (usize, usize) {
        let list = self.list.load();
        let jtis = list.jti.values().filter(|e| **e > now).count();
        let (shared_jtis, shared_subjects) = self.shared.as_ref().map_or((0, 0), |s| s.counts(now));
        (jtis + shared_jtis, list.subjects.len() + shared_subjects)
    }
}

fn text_digest(text: &[u8]) -> Vec<u8> {
    aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, text)
        .as_ref()
        .to_vec()
}

/// The parsed list and the digest of its text.
fn read(path: &Path, now: i64) -> Result<(RevocationList, Vec<u8>), Problems> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        let mut p = Problems::default();
        p.push(
            "revocation_file",
            format!("cannot read {:?}: {e}", path.display().to_string()),
        );
        p
    })?;
    let list = RevocationList::parse(&text, now, "revocation_file")?;
    Ok((list, text_digest(text.as_bytes())))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::IdentityHeaders;

    fn token(jti: Option<&str>, sub: &str, iat: Option<i64>) -> Authenticated {
        Authenticated {
            issuer: 0,
            roles: Box::new([]),
            valid_until: None,
            headers: Arc::new(IdentityHeaders(vec![])),
            key_generation: 0,
            subject: Some(sub.into()),
            jti: jti.map(Into::into),
            grants: Default::default(),
            issued_at: iat,
        }
    }

    const LIST: &str = r#"
jti:
  - {id: gone, expires: 2000}
  - {id: old, expires: 500}
subjects:
  - {sub: alice, not_before: "1970-01-01T00:16:40Z"}
"#;

    #[test]
    fn jti_and_subject_not_before() {
        let list = RevocationList::parse(LIST, 1_000, "revocation_file").expect("valid");
        assert!(list.is_revoked(&token(Some("gone"), "bob", Some(900)), 1_000));
        // Pruned at load: its expiry was already past.
        assert!(!list.is_revoked(&token(Some("old"), "bob", Some(900)), 1_000));
        assert!(!list.is_revoked(&token(Some("gone"), "bob", Some(900)), 2_000));
        // alice: not_before 1000.
        assert!(list.is_revoked(&token(None, "alice", Some(999)), 1_500));
        assert!(!list.is_revoked(&token(None, "alice", Some(1_000)), 1_500));
        assert!(
            list.is_revoked(&token(None, "alice", None), 1_500),
            "no iat: revoked"
        );
        assert!(!list.is_revoked(&token(None, "bob", Some(1)), 1_500));
    }

    #[test]
    fn every_problem_is_named() {
        let problems = RevocationList::parse(
            "jti:\n  - {id: '', expires: tomorrow}\nsubjects:\n  - {sub: x, not_before: never}\n",
            0,
            "revocation_file",
        )
        .expect_err("refused")
        .to_string();
        assert!(
            problems.contains("revocation_file: jti[0].id: must not be empty"),
            "{problems}"
        );
        assert!(
            problems.contains("revocation_file: jti[0].expires: invalid time \"tomorrow\""),
            "{problems}"
        );
        assert!(
            problems.contains("revocation_file: subjects[0].not_before"),
            "{problems}"
        );
        let unknown = RevocationList::parse("jtis: []\n", 0, "revocation_file")
            .expect_err("unknown key")
            .to_string();
        assert!(unknown.contains("unknown field `jtis`"), "{unknown}");
    }
}
