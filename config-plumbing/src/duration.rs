//! The one duration syntax: humantime text (`"30s"`, `"5m"`, `"1h 30m"`, `"250ms"`) or a
//! number of seconds, fractional allowed (`0.25`).
//!
//! Fractional because omni2's configs use sub-second numbers and every integer is also a
//! valid fraction, so the sidecar's integer files keep loading unchanged.

use std::time::Duration;

use serde::Deserialize;

use crate::problems::Problems;

/// A duration as written.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(untagged)]
pub enum RawDuration {
    Seconds(f64),
    Text(String),
}

/// Parses a duration; the message quotes the value and shows the syntax.
pub fn parse_duration(raw: &RawDuration) -> Result<Duration, String> {
    match raw {
        RawDuration::Seconds(s) => Duration::try_from_secs_f64(*s)
            .map_err(|_| format!("invalid duration {s}: must be a number of seconds >= 0")),
        RawDuration::Text(t) => humantime::parse_duration(t.trim()).map_err(|e| {
            format!("invalid duration {t:?}: {e} (examples: \"30s\", \"5m\", \"1h\")")
        }),
    }
}

/// The duration at `path`, `default` when not given; a bad value is reported and the
/// default returned so checking can go on.
pub fn duration(
    raw: Option<&RawDuration>,
    default: Duration,
    path: &str,
    problems: &mut Problems,
) -> Duration {
    match raw.map(parse_duration) {
        None => default,
        Some(Ok(d)) => d,
        Some(Err(e)) => {
            problems.push(path, e);
            default
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(yaml: &str) -> Result<Duration, String> {
        parse_duration(&serde_yaml::from_str(yaml).expect("yaml"))
    }

    #[test]
    fn integers_fractions_and_text() {
        assert_eq!(parsed("30"), Ok(Duration::from_secs(30)));
        assert_eq!(parsed("0.25"), Ok(Duration::from_millis(250)));
        assert_eq!(parsed("\"1m 30s\""), Ok(Duration::from_secs(90)));
        assert_eq!(parsed("\" 250ms \""), Ok(Duration::from_millis(250)));
        assert_eq!(parsed("0"), Ok(Duration::ZERO));
    }

    #[test]
    fn bad_values_are_named() {
        assert_eq!(
            parsed("-1"),
            Err("invalid duration -1: must be a number of seconds >= 0".into())
        );
        assert!(parsed(".nan").is_err());
        assert!(parsed(".inf").is_err());
        let e = parsed("forever").expect_err("text");
        assert!(e.starts_with("invalid duration \"forever\": "), "{e}");
    }

    #[test]
    fn a_bad_value_is_reported_and_the_default_kept() {
        let mut problems = Problems::default();
        let raw = RawDuration::Text("soon".into());
        let d = duration(Some(&raw), Duration::from_secs(5), "a.b", &mut problems);
        assert_eq!(d, Duration::from_secs(5));
        assert!(problems.has("a.b"));
        assert_eq!(
            duration(None, Duration::from_secs(7), "a", &mut problems),
            Duration::from_secs(7)
        );
    }
}
