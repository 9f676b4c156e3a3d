//! `${VAR}` / `${VAR:-default}` interpolation in string values (`$$` is a literal `$`).
//! Done on parsed YAML values, never on the text, so a variable can't inject structure.

use std::collections::BTreeMap;

use serde_yaml::Value;

use crate::problems::{Problems, child};

/// Where variables come from: the process environment, or a map or closure in tests.
pub trait Env {
    /// The variable's value, if set.
    fn var(&self, name: &str) -> Option<String>;
}

/// The process environment.
#[derive(Clone, Copy, Debug, Default)]
pub struct ProcessEnv;

impl Env for ProcessEnv {
    fn var(&self, name: &str) -> Option<String> {
        std::env::var(name).ok()
    }
}

impl<F: Fn(&str) -> Option<String>> Env for F {
    fn var(&self, name: &str) -> Option<String> {
        self(name)
    }
}

impl Env for BTreeMap<String, String> {
    fn var(&self, name: &str) -> Option<String> {
        self.get(name).cloned()
    }
}

/// Interpolates every string in `value`, recording problems under their path.
pub fn interpolate(value: &mut Value, path: &str, env: &dyn Env, problems: &mut Problems) {
    match value {
        Value::String(s) if s.contains('$') => match expand(s, env) {
            Ok(expanded) => *s = expanded,
            Err(message) => problems.push(path, message),
        },
        Value::Sequence(items) => {
            for (i, item) in items.iter_mut().enumerate() {
                interpolate(item, &format!("{path}[{i}]"), env, problems);
            }
        }
        Value::Mapping(map) => {
            for (k, v) in map.iter_mut() {
                let key = k.as_str().map_or_else(|| format!("{k:?}"), str::to_owned);
                interpolate(v, &child(path, &key), env, problems);
            }
        }
        Value::Tagged(tagged) => interpolate(&mut tagged.value, path, env, problems),
        _ => {}
    }
}

/// Expands one string.
pub fn expand(s: &str, env: &dyn Env) -> Result<String, String> {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(pos) = rest.find('$') {
        out.push_str(&rest[..pos]);
        let after = &rest[pos + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some(body) = after.strip_prefix('{') {
            let end = body
                .find('}')
                .ok_or_else(|| format!("unterminated \"${{\" in {s:?}"))?;
            let expr = &body[..end];
            let (name, default) = match expr.split_once(":-") {
                Some((n, d)) => (n, Some(d)),
                None => (expr, None),
            };
            if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
                return Err(format!("invalid variable name {name:?}"));
            }
            match (env.var(name), default) {
                (Some(v), _) => out.push_str(&v),
                (None, Some(d)) => out.push_str(d),
                (None, None) => return Err(format!("environment variable {name} is not set")),
            }
            rest = &body[end + 1..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        (name == "HOME_DIR").then(|| "/home/x".to_owned())
    }

    #[test]
    fn expands_defaults_and_escapes() {
        assert_eq!(expand("${HOME_DIR}/a", &env).expect("set"), "/home/x/a");
        assert_eq!(
            expand("${NOPE:-fallback}", &env).expect("default"),
            "fallback"
        );
        assert_eq!(expand("${NOPE:-}", &env).expect("empty default"), "");
        assert_eq!(
            expand("cost $$5 and $x", &env).expect("literal"),
            "cost $5 and $x"
        );
        assert_eq!(
            expand("${NOPE}", &env).expect_err("unset"),
            "environment variable NOPE is not set"
        );
        assert!(expand("${bad-name}", &env).is_err());
        assert!(expand("${OPEN", &env).is_err());
    }

    #[test]
    fn interpolates_nested_values_and_names_the_path() {
        let mut value: Value =
            serde_yaml::from_str("a: [x, \"${HOME_DIR}\"]\nb: {c: \"${UNSET}\"}\n").expect("yaml");
        let mut problems = Problems::default();
        let map: BTreeMap<String, String> = [("HOME_DIR".to_owned(), "/h".to_owned())].into();
        interpolate(&mut value, "", &map, &mut problems);
        assert_eq!(value["a"][1].as_str(), Some("/h"));
        assert_eq!(
            problems.to_string(),
            "1 configuration problem(s):\n  - b.c: environment variable UNSET is not set"
        );
    }
}
