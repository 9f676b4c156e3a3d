//! Path normalisation, the way Traefik's entry point does it before routing
//! (percent-decoding of unreserved characters, dot-segment removal, `//` collapse), so a
//! rule sees the path the backend will be routed on. `%2F` stays encoded: it is never a
//! separator.

use std::borrow::Cow;

/// Why a path could not be normalised.
#[derive(Debug, PartialEq, Eq)]
pub struct BadPath;

/// Splits `X-Forwarded-Uri` into (path, query). A fragment, if a client sent one, is dropped.
pub fn split_uri(uri: &str) -> (&str, Option<&str>) {
    let uri = uri.split_once('#').map_or(uri, |(before, _)| before);
    match uri.split_once('?') {
        Some((path, query)) => (path, Some(query)),
        None => (uri, None),
    }
}

/// Normalises an origin-form path. Fast path: a path with no `%`, no `.` segment and no
/// `//` is returned borrowed.
pub fn normalize(path: &str) -> Result<Cow<'_, str>, BadPath> {
    if !path.starts_with('/') {
        return Err(BadPath);
    }
    if !needs_work(path.as_bytes()) {
        return Ok(Cow::Borrowed(path));
    }
    let decoded = decode_unreserved(path)?;
    Ok(Cow::Owned(remove_dot_segments(&decoded)))
}

fn needs_work(p: &[u8]) -> bool {
    p.contains(&b'%')
        || p.windows(2).any(|w| w == b"//" || w == b"/.")
        || p.iter().any(|b| !(0x21..0x7f).contains(b))
}

fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

/// Decodes `%XX` of unreserved characters; other escapes are kept with upper-case hex.
/// Raw control characters, spaces and non-ASCII bytes are not valid in a request target.
fn decode_unreserved(path: &str) -> Result<String, BadPath> {
    let bytes = path.as_bytes();
    let mut out = String::with_capacity(path.len());
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b == b'%' {
            let hex = bytes.get(i + 1..i + 3).ok_or(BadPath)?;
            let hi = hex_value(hex[0]).ok_or(BadPath)?;
            let lo = hex_value(hex[1]).ok_or(BadPath)?;
            let decoded = hi << 4 | lo;
            if is_unreserved(decoded) {
                out.push(decoded as char);
            } else {
                out.push('%');
                out.push(hex[0].to_ascii_uppercase() as char);
                out.push(hex[1].to_ascii_uppercase() as char);
            }
            i += 3;
        } else if !(0x21..0x7f).contains(&b) {
            return Err(BadPath);
        } else {
            out.push(b as char);
            i += 1;
        }
    }
    Ok(out)
}

fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// RFC 3986 §5.2.4 on segments, with empty segments (`//`) dropped. A trailing slash or
/// trailing dot segment keeps the path a "directory" (`/a/b/..` → `/a/`).
fn remove_dot_segments(path: &str) -> String {
    let mut stack: Vec<&str> = Vec::new();
    let segments: Vec<&str> = path.split('/').skip(1).collect();
    let mut trailing_slash = false;
    for (i, seg) in segments.iter().enumerate() {
        let last = i + 1 == segments.len();
        match *seg {
            "" => trailing_slash = last,
            "." => trailing_slash = last,
            ".." => {
                stack.pop();
                trailing_slash = last;
            }
            s => {
                stack.push(s);
                trailing_slash = false;
            }
        }
    }
    let mut out = String::with_capacity(path.len());
    for seg in &stack {
        out.push('/');
        out.push_str(seg);
    }
    if trailing_slash || stack.is_empty() {
        out.push('/');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[track_caller]
    fn norm(input: &str, want: &str) {
        assert_eq!(normalize(input).expect(input), want, "input {input}");
    }

    #[test]
    fn traversal_and_encoded_forms_resolve() {
        norm("/api/v1/public/../admin", "/api/v1/admin");
        norm("/api/v1/%2e%2e/admin", "/api/admin");
        norm("/api/v1/public/%2e%2e/admin", "/api/v1/admin");
        norm("/api/v1/public/%2E%2E/admin/x", "/api/v1/admin/x");
        norm("/api/v1/public/.%2e/admin", "/api/v1/admin");
        norm("/api/v1/./admin", "/api/v1/admin");
        norm("/api//v1///admin", "/api/v1/admin");
        norm("/../../etc/passwd", "/etc/passwd");
        norm("/a/b/..", "/a/");
        norm("/a/b/.", "/a/b/");
        norm("/..", "/");
        norm("/", "/");
    }

    #[test]
    fn unreserved_decoded_others_kept_upper_case() {
        norm("/%61pi/v1", "/api/v1");
        norm("/a%7eb", "/a~b");
        norm("/api%2fv1/admin", "/api%2Fv1/admin");
        norm("/api%2Fv1", "/api%2Fv1");
        norm("/x%20y", "/x%20y");
        norm("/x%c3%a9", "/x%C3%A9");
    }

    #[test]
    fn clean_paths_are_borrowed() {
        assert!(matches!(
            normalize("/api/v1/mcp/servers"),
            Ok(Cow::Borrowed(_))
        ));
        assert!(matches!(normalize("/a.b/c..d"), Ok(Cow::Borrowed(_))));
    }

    #[test]
    fn invalid_paths_are_refused() {
        for bad in [
            "", "api", "/a%", "/a%4", "/a%zz", "/a b", "/a\u{7f}", "/\u{e9}",
        ] {
            assert_eq!(normalize(bad), Err(BadPath), "{bad:?}");
        }
    }

    #[test]
    fn split_drops_fragment() {
        assert_eq!(split_uri("/a?b=1#frag"), ("/a", Some("b=1")));
        assert_eq!(split_uri("/a#x?y"), ("/a", None));
        assert_eq!(split_uri("/a"), ("/a", None));
    }
}
