//! Configuration problems: `path: message`, all of them, in the order found.

use std::fmt;

/// One configuration problem: where and what.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    /// The offending key in config notation, e.g. `servers[0].url`; empty for the whole file.
    pub path: String,
    /// What is wrong, quoting the value.
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

/// Every problem found in one configuration.
#[derive(Clone, Debug, Default, PartialEq, Eq, thiserror::Error)]
pub struct Problems(pub Vec<Problem>);

impl Problems {
    /// Problems holding just this one.
    pub fn one(path: impl Into<String>, message: impl Into<String>) -> Self {
        let mut p = Self::default();
        p.push(path, message);
        p
    }

    pub fn push(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.0.push(Problem {
            path: path.into(),
            message: message.into(),
        });
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// True when a problem at exactly `path` was reported (for tests and tooling).
    pub fn has(&self, path: &str) -> bool {
        self.0.iter().any(|p| p.path == path)
    }

    /// `Ok(value)` when nothing was reported, else every problem.
    pub fn or_value<T>(self, value: T) -> Result<T, Problems> {
        if self.is_empty() {
            Ok(value)
        } else {
            Err(self)
        }
    }
}

impl fmt::Display for Problems {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} configuration problem(s):", self.0.len())?;
        for p in &self.0 {
            write!(f, "\n  - {p}")?;
        }
        Ok(())
    }
}

/// A path one level below `parent`: `parent.key`, or `key` at the root.
pub fn child(parent: &str, key: &str) -> String {
    if parent.is_empty() {
        key.to_owned()
    } else {
        format!("{parent}.{key}")
    }
}

/// Whether `path` is `parent` or lies below it (`parent.x`, `parent[0]`).
pub fn is_under(path: &str, parent: &str) -> bool {
    path.strip_prefix(parent)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with(['.', '[']))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_lists_every_problem_with_its_path() {
        let mut p = Problems::one("", "invalid YAML");
        p.push("servers[0].url", "invalid URL \"x\"");
        assert_eq!(
            p.to_string(),
            "2 configuration problem(s):\n  - invalid YAML\n  - servers[0].url: invalid URL \"x\""
        );
        assert!(p.has("servers[0].url"));
        assert!(!p.has("servers[0]"));
        assert_eq!(p.len(), 2);
        assert!(Problems::default().or_value(1).is_ok());
        assert!(p.or_value(1).is_err());
    }

    #[test]
    fn paths() {
        assert_eq!(child("", "a"), "a");
        assert_eq!(child("a[0]", "b"), "a[0].b");
        assert!(is_under("a", "a"));
        assert!(is_under("a.b", "a"));
        assert!(is_under("a[1]", "a"));
        assert!(!is_under("ab", "a"));
        assert!(!is_under("b.a", "a"));
    }
}
