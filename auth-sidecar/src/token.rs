//! Finding the bearer token in a request. No crypto here.
//!
//! Precedence (fixed): `Authorization: Bearer` → `Sec-WebSocket-Protocol` (prefixed) →
//! cookie → query parameter (only on rules with `allow_query_token`). The first source that
//! is present is the only one used: a present but invalid token never falls back to another.

use std::borrow::Cow;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use crate::facts::{RequestFacts, Single};
use crate::policy::path::split_uri;
use crate::reason::DenyReason;

/// Where tokens may come from (from config).
#[derive(Clone, Debug)]
pub struct TokenSources {
    /// Tokens longer than this (in bytes, as sent) are refused before any parsing.
    pub max_length: usize,
    pub cookie: Option<String>,
    pub query_param: String,
    /// Sub-protocol prefix; the rest of the item is the base64url-encoded token.
    pub websocket_protocol_prefix: Option<String>,
}

/// Which source a token came from (for logs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    Authorization,
    WebSocketProtocol,
    Cookie,
    Query,
}

/// Finds the token. `Ok(None)`: no source present. `Err(malformed)`: a source is present but
/// unusable (wrong scheme, repeated, empty, too long, undecodable).
pub fn extract<'a>(
    facts: &RequestFacts<'a>,
    sources: &TokenSources,
    allow_query: bool,
) -> Result<Option<(Cow<'a, str>, Source)>, DenyReason> {
    match facts.authorization {
        Single::Absent => {}
        Single::Invalid => return Err(DenyReason::Malformed),
        Single::One(value) => {
            return bearer(value, sources.max_length)
                .map(|t| Some((Cow::Borrowed(t), Source::Authorization)));
        }
    }
    if let Some(prefix) = &sources.websocket_protocol_prefix
        && let Some(token) =
            from_websocket_protocols(&facts.websocket_protocols, prefix, sources.max_length)?
    {
        return Ok(Some((Cow::Owned(token), Source::WebSocketProtocol)));
    }
    if let Some(name) = &sources.cookie
        && let Some(token) = from_cookies(&facts.cookies, name, sources.max_length)?
    {
        return Ok(Some((Cow::Borrowed(token), Source::Cookie)));
    }
    if allow_query
        && let Some(uri) = facts.uri.get()
        && let Some(token) = from_query(uri, &sources.query_param, sources.max_length)?
    {
        return Ok(Some((token, Source::Query)));
    }
    Ok(None)
}

fn check_length(token: &str, max: usize) -> Result<&str, DenyReason> {
    if token.is_empty() || token.len() > max {
        Err(DenyReason::Malformed)
    } else {
        Ok(token)
    }
}

/// `Bearer <token>`, scheme case-insensitive (RFC 7235 §2.1), exactly one space-separated token.
fn bearer(value: &str, max: usize) -> Result<&str, DenyReason> {
    // Saturating: config bounds `max`, but a bound is no reason for an overflow to be possible.
    if value.len() > max.saturating_add(16) {
        return Err(DenyReason::Malformed);
    }
    let (scheme, token) = value.trim().split_once(' ').ok_or(DenyReason::Malformed)?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(DenyReason::Malformed);
    }
    let token = token.trim_start();
    if has_whitespace(token) {
        return Err(DenyReason::Malformed);
    }
    check_length(token, max)
}

/// `str::contains(char::is_whitespace)`, at byte speed for ASCII (what header values are):
/// ASCII whitespace is `\t`, `\n`, `\x0B`, `\x0C`, `\r` and space, found by two SIMD
/// `memchr3` scans. A bearer token is hundreds of bytes; a byte-wise fold here (which the
/// compiler did not vectorise) was ~2,800 instructions of every cached decision.
fn has_whitespace(s: &str) -> bool {
    if s.is_ascii() {
        let b = s.as_bytes();
        memchr::memchr3(b' ', b'\t', b'\n', b).is_some()
            || memchr::memchr3(0x0b, 0x0c, b'\r', b).is_some()
    } else {
        s.contains(char::is_whitespace)
    }
}

fn from_websocket_protocols(
    lines: &[&str],
    prefix: &str,
    max: usize,
) -> Result<Option<String>, DenyReason> {
    let mut found = None;
    for item in lines.iter().flat_map(|l| l.split(',')).map(str::trim) {
        if let Some(encoded) = item.strip_prefix(prefix) {
            if found.is_some() {
                return Err(DenyReason::Malformed);
            }
            found = Some(encoded);
        }
    }
    let Some(encoded) = found else {
        return Ok(None);
    };
    if encoded.len() > max.saturating_mul(4) / 3 + 4 {
        return Err(DenyReason::Malformed);
    }
    let bytes = URL_SAFE_NO_PAD
        .decode(encoded)
        .map_err(|_| DenyReason::Malformed)?;
    let token = String::from_utf8(bytes).map_err(|_| DenyReason::Malformed)?;
    check_length(&token, max)?;
    Ok(Some(token))
}

fn from_cookies<'a>(
    lines: &[&'a str],
    name: &str,
    max: usize,
) -> Result<Option<&'a str>, DenyReason> {
    let mut found = None;
    for pair in lines.iter().flat_map(|l| l.split(';')) {
        let Some((k, v)) = pair.split_once('=') else {
            continue;
        };
        if k.trim() == name {
            if found.is_some() {
                // Two cookies of that name: which one the backend sees is not ours to guess.
                return Err(DenyReason::Malformed);
            }
            let v = v.trim();
            let v = v
                .strip_prefix('"')
                .and_then(|v| v.strip_suffix('"'))
                .unwrap_or(v);
            found = Some(check_length(v, max)?);
        }
    }
    Ok(found)
}

fn from_query<'a>(
    uri: &'a str,
    param: &str,
    max: usize,
) -> Result<Option<Cow<'a, str>>, DenyReason> {
    let (_, Some(query)) = split_uri(uri) else {
        return Ok(None);
    };
    let mut found = None;
    for (k, v) in form_urlencoded::parse(query.as_bytes()) {
        if k == param {
            if found.is_some() {
                return Err(DenyReason::Malformed);
            }
            if v.len() > max || v.is_empty() {
                return Err(DenyReason::Malformed);
            }
            found = Some(v);
        }
    }
    Ok(found)
}

/// Replaces every query value with `REDACTED`, for logging a URI without leaking tokens.
pub fn redact_uri(uri: &str) -> Cow<'_, str> {
    match split_uri(uri) {
        (path, Some(query)) => {
            let keys: Vec<String> = form_urlencoded::parse(query.as_bytes())
                .map(|(k, _)| format!("{k}=REDACTED"))
                .collect();
            Cow::Owned(format!("{path}?{}", keys.join("&")))
        }
        (path, None) => Cow::Borrowed(path),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whitespace_scan_matches_the_char_scan() {
        let mut cases: Vec<String> = (0u8..128).map(|b| format!("ab{}cd", b as char)).collect();
        cases.extend(["a\u{a0}b", "a\u{2003}b", "é", "tok-en"].map(String::from));
        for s in cases {
            assert_eq!(has_whitespace(&s), s.contains(char::is_whitespace), "{s:?}");
        }
        // Every byte at every position of strings around the SIMD chunk sizes.
        for len in [1, 7, 8, 15, 16, 17, 31, 32, 33, 63, 64, 65, 130] {
            for at in 0..len {
                for b in 0u8..128 {
                    let mut bytes = vec![b'x'; len];
                    bytes[at] = b;
                    let s = String::from_utf8(bytes).expect("ascii");
                    assert_eq!(has_whitespace(&s), s.contains(char::is_whitespace), "{s:?}");
                }
            }
        }
    }

    fn sources() -> TokenSources {
        TokenSources {
            max_length: 64,
            cookie: Some("session".into()),
            query_param: "access_token".into(),
            websocket_protocol_prefix: Some("base64url.bearer.authorization.k8s.io.".into()),
        }
    }

    #[test]
    fn the_largest_length_bound_cannot_overflow() {
        // Found by the config_load fuzz target's review: `max + 16` overflowed for usize::MAX.
        assert_eq!(bearer("Bearer abc", usize::MAX), Ok("abc"));
    }

    #[track_caller]
    fn check(
        facts: RequestFacts<'_>,
        allow_query: bool,
        want: Result<Option<(&str, Source)>, DenyReason>,
    ) {
        let got = extract(&facts, &sources(), allow_query);
        let got = got
            .as_ref()
            .map(|o| o.as_ref().map(|(t, s)| (t.as_ref(), *s)))
            .map_err(|e| *e);
        assert_eq!(got, want);
    }

    fn ws(token: &str) -> String {
        format!(
            "base64url.bearer.authorization.k8s.io.{}",
            URL_SAFE_NO_PAD.encode(token)
        )
    }

    #[test]
    fn each_source_alone() {
        check(
            RequestFacts {
                authorization: Single::One("Bearer abc"),
                ..Default::default()
            },
            false,
            Ok(Some(("abc", Source::Authorization))),
        );
        check(
            RequestFacts {
                authorization: Single::One("bEaReR abc"),
                ..Default::default()
            },
            false,
            Ok(Some(("abc", Source::Authorization))),
        );
        let proto = ws("abc");
        check(
            RequestFacts {
                websocket_protocols: vec!["v1.mcp", proto.as_str()],
                ..Default::default()
            },
            false,
            Ok(Some(("abc", Source::WebSocketProtocol))),
        );
        check(
            RequestFacts {
                cookies: vec!["a=1; session=abc"],
                ..Default::default()
            },
            false,
            Ok(Some(("abc", Source::Cookie))),
        );
        check(
            RequestFacts {
                uri: Single::One("/ws?x=1&access_token=abc"),
                ..Default::default()
            },
            true,
            Ok(Some(("abc", Source::Query))),
        );
        check(
            RequestFacts {
                uri: Single::One("/ws?access_token=a%2Bb"),
                ..Default::default()
            },
            true,
            Ok(Some(("a+b", Source::Query))),
        );
    }

    #[test]
    fn query_only_when_the_rule_allows_it() {
        check(
            RequestFacts {
                uri: Single::One("/ws?access_token=abc"),
                ..Default::default()
            },
            false,
            Ok(None),
        );
    }

    #[test]
    fn precedence_and_no_fallback() {
        let proto = ws("from-ws");
        let all = RequestFacts {
            authorization: Single::One("Bearer from-header"),
            websocket_protocols: vec![proto.as_str()],
            cookies: vec!["session=from-cookie"],
            uri: Single::One("/ws?access_token=from-query"),
            ..Default::default()
        };
        check(
            all.clone(),
            true,
            Ok(Some(("from-header", Source::Authorization))),
        );
        check(
            RequestFacts {
                authorization: Single::Absent,
                ..all.clone()
            },
            true,
            Ok(Some(("from-ws", Source::WebSocketProtocol))),
        );
        check(
            RequestFacts {
                authorization: Single::Absent,
                websocket_protocols: vec![],
                ..all.clone()
            },
            true,
            Ok(Some(("from-cookie", Source::Cookie))),
        );
        // A present but unusable header never falls back to the cookie or the query.
        check(
            RequestFacts {
                authorization: Single::One("Basic dXNlcjpwYXNz"),
                ..all.clone()
            },
            true,
            Err(DenyReason::Malformed),
        );
        check(
            RequestFacts {
                authorization: Single::One("Bearer"),
                ..all.clone()
            },
            true,
            Err(DenyReason::Malformed),
        );
        check(
            RequestFacts {
                authorization: Single::Invalid,
                ..all.clone()
            },
            true,
            Err(DenyReason::Malformed),
        );
        check(
            RequestFacts {
                authorization: Single::Absent,
                websocket_protocols: vec!["base64url.bearer.authorization.k8s.io.!!"],
                ..all
            },
            true,
            Err(DenyReason::Malformed),
        );
    }

    #[test]
    fn ambiguity_and_length_are_malformed() {
        check(
            RequestFacts {
                cookies: vec!["session=a", "session=b"],
                ..Default::default()
            },
            false,
            Err(DenyReason::Malformed),
        );
        check(
            RequestFacts {
                uri: Single::One("/ws?access_token=a&access_token=b"),
                ..Default::default()
            },
            true,
            Err(DenyReason::Malformed),
        );
        check(
            RequestFacts {
                authorization: Single::One("Bearer a b"),
                ..Default::default()
            },
            false,
            Err(DenyReason::Malformed),
        );
        let long = format!("Bearer {}", "x".repeat(65));
        check(
            RequestFacts {
                authorization: Single::One(&long),
                ..Default::default()
            },
            false,
            Err(DenyReason::Malformed),
        );
        let ok = format!("Bearer {}", "x".repeat(64));
        assert!(
            extract(
                &RequestFacts {
                    authorization: Single::One(&ok),
                    ..Default::default()
                },
                &sources(),
                false
            )
            .is_ok()
        );
    }

    #[test]
    fn redaction_hides_every_query_value() {
        assert_eq!(
            redact_uri("/ws?access_token=secret&x=1"),
            "/ws?access_token=REDACTED&x=REDACTED"
        );
        assert_eq!(redact_uri("/plain"), "/plain");
    }
}
