//! JSON for the fixed event schemas, written straight into the line buffer: no serde and no
//! formatting machinery per event, and the time text reused within a second. The output is
//! byte for byte what `serde_json` writes for the same fields (the tests compare the two).

use std::io::Write as _;
use std::net::IpAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// One JSON object being written into a line: the fields in the order they are written.
/// Made by [`crate::AuditLog::submit_object`] (or [`Object::write`]).
pub struct Object<'a> {
    out: &'a mut Vec<u8>,
    clock: &'a mut TimeText,
    first: bool,
}

impl Object<'_> {
    /// Writes `{`, the fields `fields` writes, and `}` to `out` (no newline). `clock` caches
    /// the time text between calls.
    pub fn write(out: &mut Vec<u8>, clock: &mut TimeText, fields: impl FnOnce(&mut Object<'_>)) {
        out.push(b'{');
        let mut object = Object {
            out,
            clock,
            first: true,
        };
        fields(&mut object);
        object.out.push(b'}');
    }

    /// `key` is one of the schema's names, plain ASCII: written as is, not escaped.
    fn key(&mut self, key: &'static str) {
        debug_assert!(is_plain(key.as_bytes()), "{key:?}");
        let comma = if self.first { &b""[..] } else { b"," };
        self.first = false;
        self.out.reserve(comma.len() + key.len() + 3);
        self.out.extend_from_slice(comma);
        self.out.push(b'"');
        self.out.extend_from_slice(key.as_bytes());
        self.out.extend_from_slice(b"\":");
    }

    /// `"key":"value"`, escaped.
    pub fn str(&mut self, key: &'static str, value: &str) {
        self.key(key);
        string(self.out, value);
    }

    /// `"key":"value"`, or `"key":null`.
    pub fn opt_str(&mut self, key: &'static str, value: Option<&str>) {
        match value {
            Some(v) => self.str(key, v),
            None => self.null(key),
        }
    }

    pub fn u64(&mut self, key: &'static str, value: u64) {
        self.key(key);
        self.u64_value(value);
    }

    /// The address as a string (`"203.0.113.9"`, `"2001:db8::1"`), or null.
    pub fn ip(&mut self, key: &'static str, value: Option<IpAddr>) {
        self.key(key);
        self.ip_value(value);
    }

    /// The time as RFC 3339 UTC with milliseconds, as [`crate::Timestamp`] writes it.
    pub fn time(&mut self, key: &'static str, value: SystemTime) {
        self.key(key);
        self.out.push(b'"');
        self.clock.write(self.out, value);
        self.out.push(b'"');
    }

    pub fn null(&mut self, key: &'static str) {
        self.key(key);
        self.out.extend_from_slice(b"null");
    }

    /// Fixed JSON text of a schema, written as is: keys with their quotes, colons and
    /// commas in one copy (`","reason":"`). The caller owns its validity.
    pub fn raw(&mut self, json: &'static str) {
        self.first = false;
        self.out.extend_from_slice(json.as_bytes());
    }

    /// One of the schema's own fixed words (`allow`, `role_denied`), plain ASCII: written
    /// as is, without the escape scan, between quotes the caller's [`Object::raw`] wrote.
    pub fn word(&mut self, word: &'static str) {
        debug_assert!(is_plain(word.as_bytes()), "{word:?}");
        self.out.extend_from_slice(word.as_bytes());
    }

    /// A value without its key: the string escaped and quoted, or null.
    pub fn opt_str_value(&mut self, value: Option<&str>) {
        match value {
            Some(v) => string(self.out, v),
            None => self.out.extend_from_slice(b"null"),
        }
    }

    pub fn u64_value(&mut self, value: u64) {
        let mut digits = [0u8; 20];
        self.out.extend_from_slice(decimal(value, &mut digits));
    }

    /// The time text without its quotes (see [`Object::time`]).
    pub fn time_value(&mut self, value: SystemTime) {
        self.clock.write(self.out, value);
    }

    /// See [`Object::ip`].
    pub fn ip_value(&mut self, value: Option<IpAddr>) {
        match value {
            Some(IpAddr::V4(ip)) => {
                self.out.push(b'"');
                for (i, octet) in ip.octets().into_iter().enumerate() {
                    if i > 0 {
                        self.out.push(b'.');
                    }
                    let mut digits = [0u8; 20];
                    self.out
                        .extend_from_slice(decimal(u64::from(octet), &mut digits));
                }
                self.out.push(b'"');
            }
            // Rarer, and its text needs no escaping: the standard formatting will do.
            Some(IpAddr::V6(ip)) => {
                let _ = write!(self.out, "\"{ip}\"");
            }
            None => self.out.extend_from_slice(b"null"),
        }
    }
}

/// The latest second's `YYYY-MM-DDTHH:MM:SS.` text: formatting the date once a second
/// instead of once per event.
#[derive(Debug, Default)]
pub struct TimeText {
    second: Option<u64>,
    text: [u8; 20],
}

/// The last instant RFC 3339 with four-digit years can show.
const LAST: Duration = Duration::new(253_402_300_799, 999_999_999);

impl TimeText {
    /// Appends `t` as `2026-12-02T02:05:56.123Z` (milliseconds truncated, as `humantime`
    /// does). A time outside 1970..=9999 (a clock gone badly wrong) is shown clamped.
    pub fn write(&mut self, out: &mut Vec<u8>, t: SystemTime) {
        let since = t
            .duration_since(UNIX_EPOCH)
            .unwrap_or(Duration::ZERO)
            .min(LAST);
        let second = since.as_secs();
        if self.second != Some(second) {
            let whole = UNIX_EPOCH + Duration::from_secs(second);
            // `YYYY-MM-DDTHH:MM:SSZ`: the first 19 bytes, then the millisecond point.
            let mut text = [0u8; 20];
            let _ = write!(
                &mut text[..],
                "{}",
                humantime::format_rfc3339_seconds(whole)
            );
            text[19] = b'.';
            self.text = text;
            self.second = Some(second);
        }
        out.extend_from_slice(&self.text);
        let ms = since.subsec_millis();
        out.extend_from_slice(&[
            b'0' + (ms / 100) as u8,
            b'0' + (ms / 10 % 10) as u8,
            b'0' + (ms % 10) as u8,
            b'Z',
        ]);
    }
}

/// `value` in decimal, in the tail of `digits`.
fn decimal(mut value: u64, digits: &mut [u8; 20]) -> &[u8] {
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b'0' + (value % 10) as u8;
        value /= 10;
        if value == 0 {
            return &digits[at..];
        }
    }
}

/// `s` as a JSON string: quoted, with `"`, `\` and control characters escaped the way
/// `serde_json` does (`\n`-style where JSON has one, else `\u00XX`). Everything else,
/// non-ASCII included, is copied as is: `s` is UTF-8, so the output is too.
pub fn string(out: &mut Vec<u8>, s: &str) {
    let bytes = s.as_bytes();
    out.reserve(bytes.len() + 2);
    out.push(b'"');
    if is_plain(bytes) {
        // Most text needs no escaping: one copy.
        out.extend_from_slice(bytes);
    } else {
        escape(out, bytes);
    }
    out.push(b'"');
}

/// Whether no byte needs escaping, eight at a time (the tail padded with spaces).
fn is_plain(bytes: &[u8]) -> bool {
    let words = bytes.chunks_exact(8);
    let mut tail = [b' '; 8];
    tail[..words.remainder().len()].copy_from_slice(words.remainder());
    words
        .map(|w| <[u8; 8]>::try_from(w).map_or(u64::MAX, u64::from_le_bytes))
        .chain(std::iter::once(u64::from_le_bytes(tail)))
        .all(|w| !needs_escape(w))
}

fn escape(out: &mut Vec<u8>, bytes: &[u8]) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut plain = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let escaped: &[u8] = match b {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0x08 => b"\\b",
            0x0c => b"\\f",
            0..0x20 => &[
                b'\\',
                b'u',
                b'0',
                b'0',
                HEX[usize::from(b >> 4)],
                HEX[usize::from(b & 0xf)],
            ],
            _ => continue,
        };
        out.extend_from_slice(&bytes[plain..i]);
        out.extend_from_slice(escaped);
        plain = i + 1;
    }
    out.extend_from_slice(&bytes[plain..]);
}

/// Whether any byte of `w` is below 0x20, `"` or `\`: the classic bit tricks (exact as a
/// yes/no answer for thresholds up to 0x80).
fn needs_escape(w: u64) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let below = |x: u64, n: u64| x.wrapping_sub(ONES * n) & !x & HIGH;
    (below(w, 0x20) | below(w ^ (ONES * 0x22), 1) | below(w ^ (ONES * 0x5c), 1)) != 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ours(s: &str) -> String {
        let mut out = Vec::new();
        string(&mut out, s);
        String::from_utf8(out).expect("UTF-8 in, UTF-8 out")
    }

    /// Strings from a small alphabet of the characters JSON treats specially, and some it
    /// does not (non-ASCII, DEL, U+2028), in every mix: a fixed xorshift sequence.
    fn hostile_strings() -> Vec<String> {
        const PARTS: &[&str] = &[
            "\"", "\\", "\\\"", "\n", "\r", "\t", "\u{8}", "\u{c}", "\u{0}", "\u{1}", "\u{1f}",
            "\u{7f}", "/", "a", "Z", "é", "☃", "😀", "\u{2028}", "\u{fffd}", "\u{feff}", "</",
            "u0000", " ",
        ];
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            usize::try_from(x % 1024).expect("small")
        };
        let mut all: Vec<String> = PARTS.iter().map(|p| (*p).to_owned()).collect();
        all.push(String::new());
        all.push((0u8..0x80).map(char::from).collect());
        for _ in 0..2000 {
            let len = next() % 12;
            all.push((0..len).map(|_| PARTS[next() % PARTS.len()]).collect());
        }
        all
    }

    #[test]
    fn strings_are_escaped_exactly_as_serde_json_does_and_round_trip() {
        for s in hostile_strings() {
            let text = ours(&s);
            assert_eq!(text, serde_json::to_string(&s).expect("serde"), "{s:?}");
            let back: String = serde_json::from_str(&text).expect("valid JSON");
            assert_eq!(back, s);
            assert!(
                !text.bytes().any(|b| b < 0x20),
                "no raw control byte: {text:?}"
            );
        }
    }

    #[derive(serde::Serialize)]
    struct Fields<'a> {
        time: crate::Timestamp,
        s: &'a str,
        none: Option<&'a str>,
        some: Option<&'a str>,
        n: u64,
        ip: Option<IpAddr>,
        null: (),
    }

    #[test]
    fn an_object_is_what_serde_json_writes_for_the_same_fields() {
        let mut clock = TimeText::default();
        let t = UNIX_EPOCH + Duration::new(1_764_641_947, 412_999_999);
        let ips: [Option<IpAddr>; 5] = [
            None,
            Some("0.0.0.0".parse().expect("ip")),
            Some("203.0.113.255".parse().expect("ip")),
            Some("2001:db8::1".parse().expect("ip")),
            Some("::ffff:198.51.100.7".parse().expect("ip")),
        ];
        for (i, ip) in ips.into_iter().enumerate() {
            let n = [0, 9, 10, 99_999, u64::MAX][i];
            let s = ["", "a\"b", "\\", "\n", "ok"][i];
            let mut out = Vec::new();
            Object::write(&mut out, &mut clock, |o| {
                o.time("time", t);
                o.str("s", s);
                o.opt_str("none", None);
                o.opt_str("some", Some(s));
                o.u64("n", n);
                o.ip("ip", ip);
                o.null("null");
            });
            let want = Fields {
                time: crate::Timestamp(t),
                s,
                none: None,
                some: Some(s),
                n,
                ip,
                null: (),
            };
            let text = String::from_utf8(out).expect("utf-8");
            assert_eq!(text, serde_json::to_string(&want).expect("serde"));
        }
        let mut out = Vec::new();
        Object::write(&mut out, &mut clock, |_| {});
        assert_eq!(out, b"{}");
    }

    #[test]
    fn the_eight_byte_test_finds_exactly_the_bytes_to_escape() {
        for b in 0..=u8::MAX {
            let special = b < 0x20 || b == b'"' || b == b'\\';
            for at in 0..8 {
                // Beside plain ASCII, and beside bytes of multi-byte characters.
                for filler in [b'a', 0x80, 0xff, 0x21, 0x5d] {
                    let mut w = [filler; 8];
                    w[at] = b;
                    assert_eq!(needs_escape(u64::from_le_bytes(w)), special, "{w:?}");
                }
            }
        }
    }

    #[test]
    fn numbers_in_decimal() {
        for n in [
            0,
            1,
            9,
            10,
            11,
            99,
            100,
            12_345,
            u64::from(u32::MAX),
            u64::MAX - 1,
            u64::MAX,
        ] {
            let mut digits = [0u8; 20];
            assert_eq!(decimal(n, &mut digits), n.to_string().as_bytes());
        }
    }

    #[test]
    fn the_time_text_is_humantimes_also_when_reused_within_a_second() {
        let mut clock = TimeText::default();
        let at = |s: u64, ns: u32| UNIX_EPOCH + Duration::new(s, ns);
        let times = [
            at(0, 0),
            at(1_764_641_947, 0),
            at(1_764_641_947, 1_000_000),
            at(1_764_641_947, 412_999_999), // truncated, not rounded
            at(1_764_641_947, 999_999_999),
            at(1_764_641_948, 5_000_000),
            at(1_764_641_947, 7_000_000), // back a second (the clock stepped)
            at(1_709_164_800, 123_000_000), // 2024-02-29
            at(951_782_400, 0),           // 2000-02-29
            at(253_402_300_799, 999_000_000), // 9999-12-31T23:59:59.999Z
        ];
        for t in times {
            let mut out = Vec::new();
            clock.write(&mut out, t);
            let want = humantime::format_rfc3339_millis(t).to_string();
            assert_eq!(String::from_utf8(out).expect("utf-8"), want);
        }
        // Outside what the format shows: clamped, never a panic.
        let mut out = Vec::new();
        clock.write(&mut out, UNIX_EPOCH - Duration::from_secs(1));
        assert_eq!(out, b"1970-01-01T00:00:00.000Z");
        out.clear();
        clock.write(&mut out, at(300_000_000_000, 0));
        assert_eq!(out, b"9999-12-31T23:59:59.999Z");
    }
}
