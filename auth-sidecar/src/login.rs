//! Login redirects: a browser that would get `401` on a rule with `login_url` gets `302` to
//! the login page instead, with `return_to` set to the original URL. API clients (whose
//! `Accept` does not prefer `text/html`) keep the `401` and its `WWW-Authenticate`.
//!
//! The `Location` is always absolute (Traefik resolves a relative one against the sidecar's
//! own address; contract §1, item 5). `return_to` is built from `X-Forwarded-Proto`,
//! `-Host` and `-Uri`; a query token is removed from it, and it is left out when those
//! headers are missing or unusable. The login service must still check `return_to` against
//! its own allow-list: the host comes from the client's request.

use std::borrow::Cow;

use actix_web::http::header::HeaderValue;
use percent_encoding::{NON_ALPHANUMERIC, utf8_percent_encode};

use crate::facts::RequestFacts;
use crate::policy::path::split_uri;

/// Name of the query parameter carrying the original URL.
pub const RETURN_TO: &str = "return_to";

/// A rule's login page: an absolute `http(s)` URL, validated by config.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoginRedirect {
    pub url: String,
}

/// Whether `Accept` prefers HTML: `text/html` is listed with a non-zero quality and no
/// other explicitly listed type (wildcards aside) is preferred to it. Browsers navigating
/// send `text/html,...`; `fetch`, curl and API clients send `*/*` or a JSON type.
pub fn prefers_html(accept: &[&str]) -> bool {
    let mut html = 0.0f32;
    let mut other = 0.0f32;
    for item in accept.iter().flat_map(|line| line.split(',')) {
        let mut parts = item.split(';');
        let media = parts.next().unwrap_or("").trim().to_ascii_lowercase();
        let q = parts
            .filter_map(|p| p.trim().strip_prefix("q="))
            .find_map(|q| q.trim().parse::<f32>().ok())
            .unwrap_or(1.0);
        match media.as_str() {
            "text/html" | "application/xhtml+xml" => html = html.max(q),
            "" | "*/*" | "text/*" | "application/*" => {}
            _ => other = other.max(q),
        }
    }
    html > 0.0 && html >= other
}

fn usable_host(host: &str) -> bool {
    !host.is_empty()
        && host.len() <= 255
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b".-:[]_".contains(&b))
}

/// The URI without the query token parameter (a token must not travel to the login page).
fn without_param<'a>(uri: &'a str, param: &str) -> Cow<'a, str> {
    match split_uri(uri) {
        (path, Some(query)) => {
            let kept: Vec<(Cow<'_, str>, Cow<'_, str>)> = form_urlencoded::parse(query.as_bytes())
                .filter(|(k, _)| k != param)
                .collect();
            if kept.is_empty() {
                return Cow::Borrowed(path);
            }
            let query = form_urlencoded::Serializer::new(String::new())
                .extend_pairs(kept)
                .finish();
            Cow::Owned(format!("{path}?{query}"))
        }
        (path, None) => Cow::Borrowed(path),
    }
}

impl LoginRedirect {
    /// The `Location` for this request: the login URL plus `return_to` when the forwarded
    /// facts give a usable original URL.
    pub fn location(&self, facts: &RequestFacts<'_>, token_param: &str) -> HeaderValue {
        let original = match (facts.scheme(), facts.host.get(), facts.uri.get()) {
            (Some(scheme), Some(host), Some(uri)) if usable_host(host) && uri.starts_with('/') => {
                Some(format!(
                    "{scheme}://{host}{}",
                    without_param(uri, token_param)
                ))
            }
            _ => None,
        };
        let location = match original {
            Some(original) => {
                let sep = if self.url.contains('?') { '&' } else { '?' };
                format!(
                    "{}{sep}{RETURN_TO}={}",
                    self.url,
                    utf8_percent_encode(&original, NON_ALPHANUMERIC)
                )
            }
            None => self.url.clone(),
        };
        // Percent-encoding leaves only visible ASCII; the login URL was validated.
        HeaderValue::from_str(&location).unwrap_or_else(|_| {
            HeaderValue::from_str(&self.url).unwrap_or(HeaderValue::from_static("/"))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::facts::Single;

    #[test]
    fn browsers_prefer_html_api_clients_do_not() {
        let firefox = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8";
        assert!(prefers_html(&[firefox]));
        assert!(!prefers_html(&["*/*"]));
        assert!(!prefers_html(&["application/json"]));
        assert!(!prefers_html(&["application/json, text/html;q=0.5"]));
        assert!(!prefers_html(&["text/html;q=0"]));
        assert!(!prefers_html(&[]));
    }

    #[test]
    fn location_is_absolute_with_return_to_and_no_token() {
        let login = LoginRedirect {
            url: "https://login.example.com/start?client=omni2".into(),
        };
        let facts = RequestFacts {
            proto: Single::One("wss"),
            host: Single::One("app.example.com"),
            uri: Single::One("/ws/status?access_token=SECRET&x=1"),
            ..Default::default()
        };
        assert_eq!(
            login.location(&facts, "access_token"),
            "https://login.example.com/start?client=omni2&return_to=https%3A%2F%2Fapp%2Eexample%2Ecom%2Fws%2Fstatus%3Fx%3D1"
        );
        let no_host = RequestFacts {
            proto: Single::One("https"),
            host: Single::One("evil.example/\r\n"),
            uri: Single::One("/x"),
            ..Default::default()
        };
        assert_eq!(
            login.location(&no_host, "access_token"),
            "https://login.example.com/start?client=omni2"
        );
    }
}
