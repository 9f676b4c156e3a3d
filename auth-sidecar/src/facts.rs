//! The facts a decision is made from: what the gateway forwarded, never our own request line.

use std::net::IpAddr;

use actix_web::http::header::{HeaderMap, HeaderName, HeaderValue};

/// How often a single-valued header appeared.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Single<'a> {
    #[default]
    Absent,
    One(&'a str),
    /// Sent more than once, or not visible ASCII: ambiguous, so never trusted.
    Invalid,
}

impl<'a> Single<'a> {
    /// Folds one more occurrence in (`None` = a value that was not valid text).
    pub fn push(&mut self, value: Option<&'a str>) {
        *self = match (*self, value) {
            (Single::Absent, Some(v)) => Single::One(v),
            _ => Single::Invalid,
        };
    }

    pub fn get(self) -> Option<&'a str> {
        match self {
            Single::One(v) => Some(v),
            _ => None,
        }
    }
}

/// The value as text when it is visible ASCII or tab: exactly what
/// `HeaderValue::to_str` accepts. That checks byte by byte with an early exit, about ten
/// instructions a byte, and a bearer token is hundreds of bytes; this check has no branch
/// per byte, so the compiler vectorises it.
pub(crate) fn text(value: &HeaderValue) -> Option<&str> {
    let bytes = value.as_bytes();
    let visible = bytes.iter().fold(true, |ok, &b| {
        ok & ((0x20..0x7f).contains(&b) | (b == b'\t'))
    });
    if visible {
        std::str::from_utf8(bytes).ok()
    } else {
        None
    }
}

/// The header when sent once as visible ASCII (the audit's request id reads it too).
pub(crate) fn single<'a>(headers: &'a HeaderMap, name: &HeaderName) -> Single<'a> {
    let mut s = Single::Absent;
    for v in headers.get_all(name) {
        s.push(text(v));
    }
    s
}

/// Everything `decide` reads about a request.
#[derive(Clone, Debug, Default)]
pub struct RequestFacts<'a> {
    /// `X-Forwarded-Method`.
    pub method: Single<'a>,
    /// `X-Forwarded-Uri`: path and query of the original request.
    pub uri: Single<'a>,
    /// `X-Forwarded-Host`.
    pub host: Single<'a>,
    /// `X-Forwarded-Proto`.
    pub proto: Single<'a>,
    /// Every `X-Forwarded-For` line, in order.
    pub forwarded_for: Vec<&'a str>,
    /// The TCP peer of this auth request (the gateway), used only without `X-Forwarded-For`.
    pub peer: Option<IpAddr>,
    pub authorization: Single<'a>,
    /// Every `Cookie` line (HTTP/2 may split them).
    pub cookies: Vec<&'a str>,
    /// Every `Sec-WebSocket-Protocol` line.
    pub websocket_protocols: Vec<&'a str>,
    pub has_origin: bool,
    pub has_preflight_method: bool,
    /// Every `Accept` line (for login redirects: browsers prefer `text/html`).
    pub accept: Vec<&'a str>,
    /// `Mcp-Method`, `Mcp-Name`, `MCP-Protocol-Version` (per-tool rules, `policy::mcp`).
    pub mcp_method: Single<'a>,
    pub mcp_name: Single<'a>,
    pub mcp_protocol_version: Single<'a>,
}

impl RequestFacts<'_> {
    /// `http` or `https`; `ws`/`wss` (Traefik's WebSocket handshakes) count as those.
    pub fn scheme(&self) -> Option<&'static str> {
        match self.proto.get()?.trim().to_ascii_lowercase().as_str() {
            "http" | "ws" => Some("http"),
            "https" | "wss" => Some("https"),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_text_accepts_what_to_str_accepts() {
        let mut cases: Vec<Vec<u8>> = (0u8..=255).map(|b| vec![b'a', b, b'z']).collect();
        cases.push(b"Bearer eyJ.x-y_z~".repeat(40));
        cases.push(Vec::new());
        for bytes in cases {
            let Ok(value) = HeaderValue::from_bytes(&bytes) else {
                continue;
            };
            assert_eq!(text(&value), value.to_str().ok(), "{bytes:?}");
        }
    }

    #[test]
    fn single_detects_repeats_and_invalid() {
        let mut s = Single::default();
        s.push(Some("a"));
        assert_eq!(s.get(), Some("a"));
        s.push(Some("b"));
        assert_eq!(s, Single::Invalid);
        let mut t = Single::default();
        t.push(None);
        assert_eq!(t, Single::Invalid);
    }

    #[test]
    fn websocket_protos_count_as_http() {
        for (p, want) in [
            ("ws", "http"),
            ("WSS", "https"),
            ("http", "http"),
            ("https", "https"),
        ] {
            let facts = RequestFacts {
                proto: Single::One(p),
                ..Default::default()
            };
            assert_eq!(facts.scheme(), Some(want));
        }
        let bogus = RequestFacts {
            proto: Single::One("gopher"),
            ..Default::default()
        };
        assert_eq!(bogus.scheme(), None);
    }
}
