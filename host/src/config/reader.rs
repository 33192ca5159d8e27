//! A reader over a parsed YAML document that pulls typed fields one by one and collects every
//! problem (missing, wrong type, bad value, unknown field) with its field path and its fix,
//! instead of stopping at the first as serde's `deny_unknown_fields` would.
//!
//! It never decides what a policy means; `policy.rs` does.

use serde::de::DeserializeOwned;
use std::fmt;
use std::time::Duration;
use yaml_serde::{Mapping, Value};

/// The longest duration a policy may give (any field): 30 days.
pub const MAX_DURATION: Duration = Duration::from_secs(30 * 86_400);

/// One problem in a file: where, what, and how to fix it. The host finds some (the policy
/// parser); a plugin finds others (its `check-settings`), whose message already names the
/// setting and the fix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Field path, e.g. `guard.max_replicas` or `risks[0].plugin`.
    pub path: String,
    pub message: String,
    /// How to fix it; empty when `message` says so itself (a plugin's own words).
    pub fix: String,
}

impl Problem {
    /// A problem a plugin found in its rule's `settings`, in the plugin's words.
    pub fn in_settings(message: String) -> Self {
        Self { path: "settings".into(), message, fix: String::new() }
    }

    /// A plugin that cannot serve its rule (`plugin`): it does not load, or fails when called.
    pub fn plugin(rule: &str, error: &dyn std::error::Error) -> Self {
        Self { path: join(rule, "plugin"), message: error.to_string(), fix: String::new() }
    }

    /// The same problem under a parent field, e.g. `settings` under `risks[0]`.
    pub fn under(mut self, parent: &str) -> Self {
        self.path = join(parent, &self.path);
        self
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)?;
        if !self.fix.is_empty() {
            write!(f, "; fix: {}", self.fix)?;
        }
        Ok(())
    }
}

/// Collects problems while fields are read.
#[derive(Debug, Default)]
pub struct Reader {
    pub problems: Vec<Problem>,
}

/// Joins a parent path and a key: `guard` + `cooldown` -> `guard.cooldown`.
pub fn join(parent: &str, key: &str) -> String {
    if parent.is_empty() { key.to_string() } else { format!("{parent}.{key}") }
}

impl Reader {
    /// Records a problem.
    pub fn problem(&mut self, path: impl Into<String>, message: impl Into<String>, fix: impl Into<String>) {
        self.problems.push(Problem { path: path.into(), message: message.into(), fix: fix.into() });
    }

    /// The value as a mapping, or a problem.
    pub fn mapping<'v>(&mut self, value: &'v Value, path: &str) -> Option<&'v Mapping> {
        match value {
            Value::Mapping(map) => Some(map),
            other => {
                self.problem(path, format!("expected a mapping of fields, found {}", kind(other)), "write it as `key: value` lines indented under it");
                None
            }
        }
    }

    /// The value as a sequence, or a problem.
    pub fn sequence<'v>(&mut self, value: &'v Value, path: &str) -> Option<&'v [Value]> {
        match value {
            Value::Sequence(items) => Some(items),
            other => {
                self.problem(path, format!("expected a list, found {}", kind(other)), "write each entry on its own line starting with `- `");
                None
            }
        }
    }

    /// A field that must be present. `expect` describes a good value for the fix.
    pub fn required<T: DeserializeOwned>(&mut self, map: &Mapping, parent: &str, key: &str, expect: &str) -> Option<T> {
        let path = join(parent, key);
        match map.get(key) {
            Some(value) => self.convert(value, &path, expect),
            None => {
                self.problem(&path, "is missing", format!("add `{key}:` with {expect}"));
                None
            }
        }
    }

    /// A field that may be absent.
    pub fn optional<T: DeserializeOwned>(&mut self, map: &Mapping, parent: &str, key: &str, expect: &str) -> Option<T> {
        let value = map.get(key)?;
        self.convert(value, &join(parent, key), expect)
    }

    /// A duration written as `30s`, `5m`, `1h 30m`, or a number of seconds, at most
    /// `MAX_DURATION`: a longer one is refused here, so that no clock arithmetic on it can
    /// overflow.
    pub fn duration(&mut self, map: &Mapping, parent: &str, key: &str, default: Option<Duration>) -> Option<Duration> {
        let path = join(parent, key);
        let expect = "a duration such as `60s`, `5m` or `1h`";
        let Some(value) = map.get(key) else {
            if default.is_none() {
                self.problem(&path, "is missing", format!("add `{key}:` with {expect}"));
            }
            return default;
        };
        let parsed = match value {
            Value::Number(n) => n.as_u64().map(Duration::from_secs),
            Value::String(s) => humantime::parse_duration(s.trim()).ok(),
            _ => None,
        };
        match parsed {
            None => self.problem(&path, format!("`{}` is not a duration", show(value)), format!("write {expect}")),
            Some(d) if d > MAX_DURATION => {
                self.problem(&path, format!("`{}` is longer than 30 days, the most any duration in a policy may be", show(value)), format!("write {expect}"));
                return None;
            }
            Some(_) => {}
        }
        parsed
    }

    /// Reports every key of `map` that is not in `known`, with the closest known key.
    pub fn deny_unknown(&mut self, map: &Mapping, parent: &str, known: &[&str]) {
        for key in map.keys() {
            let name = match key {
                Value::String(name) => name.clone(),
                other => show(other),
            };
            if known.contains(&name.as_str()) {
                continue;
            }
            let fix = match closest(&name, known) {
                Some(near) => format!("did you mean `{near}`? (known fields: {})", known.join(", ")),
                None => format!("remove it (known fields: {})", known.join(", ")),
            };
            self.problem(join(parent, &name), "unknown field", fix);
        }
    }

    fn convert<T: DeserializeOwned>(&mut self, value: &Value, path: &str, expect: &str) -> Option<T> {
        match yaml_serde::from_value::<T>(value.clone()) {
            Ok(v) => Some(v),
            Err(_) => {
                self.problem(path, format!("`{}` is not valid here", show(value)), format!("write {expect}"));
                None
            }
        }
    }
}

/// The known name closest to `name`, if it is close enough to be a typo.
fn closest<'k>(name: &str, known: &[&'k str]) -> Option<&'k str> {
    known
        .iter()
        .map(|k| (*k, strsim::damerau_levenshtein(name, k)))
        .filter(|(k, distance)| *distance <= 2.max(k.len() / 4))
        .min_by_key(|(_, distance)| *distance)
        .map(|(k, _)| k)
}

/// A short rendering of a value for messages.
pub fn show(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        Value::Null => "null".to_string(),
        other => kind(other).to_string(),
    }
}

fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "nothing",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Sequence(_) => "a list",
        Value::Mapping(_) => "a mapping",
        Value::Tagged(_) => "a tagged value",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(yaml: &str) -> Mapping {
        yaml_serde::from_str(yaml).unwrap()
    }

    #[test]
    fn unknown_fields_suggest_the_closest_known_one() {
        let mut reader = Reader::default();
        reader.deny_unknown(&map("max_replica: 3\nzzz: 1"), "guard", &["max_replicas", "min_replicas"]);
        assert_eq!(reader.problems.len(), 2);
        assert_eq!(reader.problems[0].path, "guard.max_replica");
        assert!(reader.problems[0].fix.starts_with("did you mean `max_replicas`?"));
        assert!(reader.problems[1].fix.starts_with("remove it"));
    }

    #[test]
    fn durations_accept_units_and_seconds() {
        let mut reader = Reader::default();
        let m = map("a: 5m\nb: 30\nc: soon");
        assert_eq!(reader.duration(&m, "", "a", None), Some(Duration::from_secs(300)));
        assert_eq!(reader.duration(&m, "", "b", None), Some(Duration::from_secs(30)));
        assert_eq!(reader.duration(&m, "", "c", None), None);
        assert_eq!(reader.problems[0].path, "c");
    }

    #[test]
    fn wrong_types_name_the_path_and_the_expectation() {
        let mut reader = Reader::default();
        let value: Option<u32> = reader.required(&map("n: many"), "guard", "n", "a whole number");
        assert_eq!(value, None);
        assert_eq!(reader.problems[0].to_string(), "guard.n: `many` is not valid here; fix: write a whole number");
    }
}
