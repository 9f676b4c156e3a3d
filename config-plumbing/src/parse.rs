//! YAML text to a crate's raw config struct, reporting every type error and unknown key.
//!
//! serde stops at the first type error, so each one is recorded with its path, the
//! offending value is taken out (a map entry removed, a list item set to null) and deserialization runs
//! again, a bounded number of times.

use serde::de::DeserializeOwned;
use serde_yaml::Value;

use crate::env::{Env, interpolate};
use crate::problems::{Problems, is_under};

/// Type errors reported at most before the rest of the file is given up on.
const MAX_TYPE_ERRORS: usize = 100;

/// A raw config and the paths whose values were taken out for a type error.
#[derive(Debug)]
pub struct Parsed<T> {
    pub raw: T,
    pub cleared: Cleared,
}

/// The paths whose values were taken out for a type error.
#[derive(Debug, Default)]
pub struct Cleared(Vec<String>);

impl Cleared {
    /// Drops problems found from index `since` on that lie under a taken-out value: a
    /// value removed for its type error is not also "missing" or "required" below it.
    pub fn forget_consequences(&self, problems: &mut Problems, since: usize) {
        let mut index = 0;
        problems.0.retain(|p| {
            index += 1;
            index <= since || !self.0.iter().any(|c| is_under(&p.path, c))
        });
    }
}

/// Parses YAML (empty text is an empty mapping), interpolates `${VAR}` and deserializes
/// `T`, pushing every problem found. `None` when no `T` could be built at all.
pub fn parse<T: DeserializeOwned>(
    text: &str,
    env: &dyn Env,
    problems: &mut Problems,
) -> Option<Parsed<T>> {
    let mut value: Value = match serde_yaml::from_str(text) {
        Ok(Value::Null) => Value::Mapping(Default::default()),
        Ok(v) => v,
        Err(e) => {
            problems.push("", format!("invalid YAML: {e}"));
            return None;
        }
    };
    interpolate(&mut value, "", env, problems);
    let mut cleared = Vec::new();
    loop {
        let mut unknown = Vec::new();
        let attempt: Result<T, _> =
            serde_path_to_error::deserialize(serde_ignored::Deserializer::new(
                value.clone(),
                &mut |path: serde_ignored::Path<'_>| unknown.push(config_path(&path)),
            ));
        match attempt {
            Ok(raw) => {
                for path in unknown {
                    problems.push(path, "unknown key");
                }
                return Some(Parsed {
                    raw,
                    cleared: Cleared(cleared),
                });
            }
            Err(e) => {
                let path = e.path().clone();
                let shown = path.to_string();
                // A value that is still wrong once removed (e.g. a required list item)
                // ends the search; what was found so far is reported.
                if cleared.contains(&shown) {
                    return None;
                }
                let at = if shown == "." { "" } else { shown.as_str() };
                problems.push(at, e.inner().to_string());
                if cleared.len() >= MAX_TYPE_ERRORS || !clear_at(&mut value, &path) {
                    return None;
                }
                cleared.push(shown);
            }
        }
    }
}

/// Takes out the value at `path`: a map entry is removed (so `#[serde(default)]` applies),
/// a list item set to null. False when the path does not lead to a value to take out.
fn clear_at(value: &mut Value, path: &serde_path_to_error::Path) -> bool {
    use serde_path_to_error::Segment;
    let segments: Vec<&Segment> = path.iter().collect();
    let Some((last, parents)) = segments.split_last() else {
        return false;
    };
    let mut node = value;
    for segment in parents {
        node = match (segment, node) {
            (Segment::Seq { index }, Value::Sequence(items)) => match items.get_mut(*index) {
                Some(item) => item,
                None => return false,
            },
            (Segment::Map { key }, Value::Mapping(map)) => match map.get_mut(key.as_str()) {
                Some(item) => item,
                None => return false,
            },
            _ => return false,
        };
    }
    match (last, node) {
        (Segment::Map { key }, Value::Mapping(map)) => map.shift_remove(key.as_str()).is_some(),
        (Segment::Seq { index }, Value::Sequence(items)) => match items.get_mut(*index) {
            Some(item) if !item.is_null() => {
                *item = Value::Null;
                true
            }
            _ => false,
        },
        _ => false,
    }
}

/// A path in the notation problems use: `issuers[1].jwks.cooldown` (serde_ignored's own
/// Display gives `issuers.1.jwks.?.cooldown`).
fn config_path(path: &serde_ignored::Path<'_>) -> String {
    use serde_ignored::Path;
    match path {
        Path::Root => String::new(),
        Path::Seq { parent, index } => format!("{}[{index}]", config_path(parent)),
        Path::Map { parent, key } => crate::problems::child(&config_path(parent), key),
        Path::Some { parent }
        | Path::NewtypeStruct { parent }
        | Path::NewtypeVariant { parent } => config_path(parent),
    }
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;

    use super::*;

    #[derive(Debug, Default, Deserialize)]
    #[serde(default)]
    struct Raw {
        name: String,
        count: u32,
        items: Vec<Item>,
        nested: Option<Nested>,
    }

    #[derive(Debug, Default, Deserialize)]
    #[serde(default)]
    struct Item {
        id: u32,
    }

    #[derive(Debug, Default, Deserialize)]
    #[serde(default)]
    struct Nested {
        flag: bool,
    }

    fn no_env(_: &str) -> Option<String> {
        None
    }

    #[test]
    fn every_type_error_and_unknown_key_is_reported_with_its_path() {
        let mut problems = Problems::default();
        let text = "name: [1]\ncount: many\nitems: [{id: x}, {id: 2, idd: 3}]\nnested: {flag: 1, extra: 0}\n";
        let parsed: Parsed<Raw> = parse(text, &no_env, &mut problems).expect("raw");
        let paths: Vec<&str> = problems.0.iter().map(|p| p.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "name",
                "count",
                "items[0].id",
                "nested.flag",
                "items[1].idd",
                "nested.extra"
            ],
            "{problems}"
        );
        assert!(problems.to_string().contains("\"many\""), "{problems}");
        assert_eq!(parsed.raw.items[1].id, 2);
        assert_eq!(parsed.raw.count, 0, "the bad value is taken out");
    }

    #[test]
    fn consequences_of_a_taken_out_value_are_forgotten() {
        let mut problems = Problems::default();
        let parsed: Parsed<Raw> = parse("count: many\n", &no_env, &mut problems).expect("raw");
        let since = problems.len();
        problems.push("count", "must be at least 1");
        problems.push("name", "is required");
        parsed.cleared.forget_consequences(&mut problems, since);
        assert_eq!(problems.len(), 2, "{problems}");
        assert!(problems.0[0].message.contains("many"));
        assert_eq!(problems.0[1].path, "name");
    }

    #[test]
    fn empty_text_is_an_empty_mapping_and_broken_yaml_is_one_problem() {
        let mut problems = Problems::default();
        let parsed: Parsed<Raw> = parse("", &no_env, &mut problems).expect("empty");
        assert!(problems.is_empty());
        assert_eq!(parsed.raw.name, "");
        assert!(parse::<Raw>("a: [", &no_env, &mut problems).is_none());
        assert!(
            problems.0[0].message.starts_with("invalid YAML"),
            "{problems}"
        );
    }

    #[test]
    fn interpolation_problems_are_reported() {
        let mut problems = Problems::default();
        let _: Option<Parsed<Raw>> = parse("name: \"${UNSET}\"\n", &no_env, &mut problems);
        assert!(problems.has("name"), "{problems}");
    }
}
