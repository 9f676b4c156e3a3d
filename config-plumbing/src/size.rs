//! The one byte-size syntax: a whole number of bytes (`1048576`) or a number with a unit,
//! binary (`KiB`, `MiB`, `GiB`) or decimal (`KB`, `MB`, `GB`), with or without a space
//! (`"10MiB"`, `"512 KiB"`, `"1GB"`). Whole numbers only: a fraction of a byte is a typo.

use serde::Deserialize;

use crate::problems::Problems;

/// A size as written.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(untagged)]
pub enum RawSize {
    Bytes(u64),
    Text(String),
}

const UNITS: [(&str, u64); 8] = [
    ("B", 1),
    ("KB", 1_000),
    ("MB", 1_000_000),
    ("GB", 1_000_000_000),
    ("KiB", 1 << 10),
    ("MiB", 1 << 20),
    ("GiB", 1 << 30),
    ("", 1),
];

/// Parses a size in bytes; the message quotes the value and shows the syntax.
pub fn parse_size(raw: &RawSize) -> Result<u64, String> {
    let text = match raw {
        RawSize::Bytes(n) => return Ok(*n),
        RawSize::Text(t) => t.trim(),
    };
    let bad = || {
        format!("invalid size {text:?}: expected bytes or a unit (\"10MiB\", \"512KiB\", \"1GB\")")
    };
    let digits = text.bytes().take_while(u8::is_ascii_digit).count();
    let (number, unit) = text.split_at(digits);
    let number: u64 = number.parse().map_err(|_| bad())?;
    let unit = unit.trim();
    let (_, scale) = UNITS.iter().find(|(u, _)| *u == unit).ok_or_else(bad)?;
    number.checked_mul(*scale).ok_or_else(bad)
}

/// The size at `path`, `default` when not given; a bad value is reported and the default
/// returned so checking can go on.
pub fn size(raw: Option<&RawSize>, default: u64, path: &str, problems: &mut Problems) -> u64 {
    match raw.map(parse_size) {
        None => default,
        Some(Ok(n)) => n,
        Some(Err(e)) => {
            problems.push(path, e);
            default
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(yaml: &str) -> Result<u64, String> {
        parse_size(&serde_yaml::from_str(yaml).expect("yaml"))
    }

    #[test]
    fn bytes_and_units() {
        assert_eq!(parsed("4096"), Ok(4096));
        assert_eq!(parsed("\"10MiB\""), Ok(10 << 20));
        assert_eq!(parsed("\" 512 KiB \""), Ok(512 << 10));
        assert_eq!(parsed("\"1GB\""), Ok(1_000_000_000));
        assert_eq!(parsed("\"7B\""), Ok(7));
        assert_eq!(parsed("\"7\""), Ok(7));
    }

    #[test]
    fn bad_values_are_named() {
        for bad in [
            "\"1.5MiB\"",
            "\"ten\"",
            "\"5 parsecs\"",
            "\"\"",
            "\"99999999999GiB\"",
        ] {
            let e = parsed(bad).expect_err(bad);
            assert!(e.starts_with("invalid size"), "{bad}: {e}");
        }
        let mut problems = Problems::default();
        let raw = RawSize::Text("lots".into());
        assert_eq!(size(Some(&raw), 9, "audit.max_bytes", &mut problems), 9);
        assert!(problems.has("audit.max_bytes"));
    }
}
