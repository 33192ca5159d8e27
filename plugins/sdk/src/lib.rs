//! Helpers that every Augur plugin needs and that do not depend on the WIT bindings:
//! reading typed settings from the policy, with every problem collected so that
//! `check-settings` can report them all at once.
//!
//! This crate never touches the host: the plugin passes in the function that reads a
//! setting (the `host.setting` import in a guest, a map in a native test).

/// Reads typed settings through a lookup function and collects every problem.
pub struct Settings<F> {
    lookup: F,
    problems: Vec<String>,
}

impl<F: Fn(&str) -> Option<String>> Settings<F> {
    /// Wraps a lookup, e.g. `|key| host::setting(key)`.
    pub fn new(lookup: F) -> Self {
        Self { lookup, problems: Vec::new() }
    }

    /// A number setting with a default, which must satisfy `valid` (described by `rule`,
    /// e.g. "a number above 0").
    pub fn number(&mut self, key: &str, default: f64, rule: &str, valid: impl Fn(f64) -> bool) -> f64 {
        let Some(raw) = (self.lookup)(key) else { return default };
        match raw.trim().parse::<f64>() {
            Ok(value) if value.is_finite() && valid(value) => value,
            _ => {
                self.problems.push(format!(
                    "setting `{key}` is `{raw}`; it must be {rule} (default {default})"
                ));
                default
            }
        }
    }

    /// A setting that must be one of `choices`, with a default.
    pub fn choice(&mut self, key: &str, default: &'static str, choices: &[&'static str]) -> &'static str {
        let Some(raw) = (self.lookup)(key) else { return default };
        match choices.iter().find(|choice| **choice == raw.trim()) {
            Some(choice) => choice,
            None => {
                self.problems.push(format!(
                    "setting `{key}` is `{raw}`; it must be one of {} (default {default})",
                    choices.join(", ")
                ));
                default
            }
        }
    }

    /// The problems found so far, one sentence each.
    pub fn finish(self) -> Vec<String> {
        self.problems
    }
}

/// A parsed configuration kept under the host's `settings-id`, so that a plugin reads its
/// settings through the host only when they change. Wasm guests are single-threaded; use it
/// from a `thread_local!`.
pub struct ConfigCache<C> {
    cached: std::cell::RefCell<Option<(u64, C)>>,
}

impl<C: Clone> ConfigCache<C> {
    pub const fn new() -> Self {
        Self { cached: std::cell::RefCell::new(None) }
    }

    /// The configuration for settings `id`, parsed with `read` when `id` is new.
    pub fn get(&self, id: u64, read: impl FnOnce() -> C) -> C {
        let mut cached = self.cached.borrow_mut();
        match &*cached {
            Some((cached_id, config)) if *cached_id == id => config.clone(),
            _ => {
                let config = read();
                *cached = Some((id, config.clone()));
                config
            }
        }
    }
}

impl<C: Clone> Default for ConfigCache<C> {
    fn default() -> Self {
        Self::new()
    }
}

/// Defines `fn config() -> $config` in a plugin crate: the plugin's settings parsed by
/// `$config::read`, read through the host's `setting` import only when `settings-id` changes.
/// Expands in the plugin, where `wit_bindgen::generate!` put the `augur::plugin::host` imports.
#[macro_export]
macro_rules! cached_config {
    ($config:ty) => {
        thread_local! {
            static CONFIG: $crate::ConfigCache<$config> = const { $crate::ConfigCache::new() };
        }

        /// The settings, read through the host only when their id changes.
        fn config() -> $config {
            let id = augur::plugin::host::settings_id();
            CONFIG.with(|cache| cache.get(id, || <$config>::read(augur::plugin::host::setting).0))
        }
    };
}

/// Exports a risk plugin: `$assess(&Config, &Forecast) -> Risk` with its settings type
/// `$config` (which has `fn read(lookup) -> (Self, Vec<String>)`). Use it after
/// `wit_bindgen::generate!({ world: "risk-plugin", .. })`.
#[macro_export]
macro_rules! risk_plugin {
    ($config:ty, $assess:path) => {
        $crate::cached_config!($config);

        struct Plugin;

        impl Guest for Plugin {
            fn assess(forecast: Forecast) -> Risk {
                $assess(&config(), &forecast)
            }

            fn check_settings() -> Vec<String> {
                <$config>::read(augur::plugin::host::setting).1
            }
        }

        export!(Plugin);
    };
}

/// Exports a remediation plugin: `$plan(&Config, &Risk, Level, &Workload) -> Vec<Proposal>`
/// with its settings type `$config`. Use it after
/// `wit_bindgen::generate!({ world: "remediation-plugin", .. })`.
#[macro_export]
macro_rules! remediation_plugin {
    ($config:ty, $plan:path) => {
        $crate::cached_config!($config);

        struct Plugin;

        impl Guest for Plugin {
            fn plan(risk: Risk, trigger: Level, workload: Workload) -> Vec<Proposal> {
                $plan(&config(), &risk, trigger, &workload)
            }

            fn check_settings() -> Vec<String> {
                <$config>::read(augur::plugin::host::setting).1
            }
        }

        export!(Plugin);
    };
}

/// The largest value of a series, or `None` when it is empty or holds no finite value.
pub fn peak(series: &[f64]) -> Option<(usize, f64)> {
    series
        .iter()
        .copied()
        .enumerate()
        .filter(|(_, value)| value.is_finite())
        .max_by(|a, b| a.1.total_cmp(&b.1))
}

/// Formats a duration in seconds for a reason line: `45s`, `4m`, `1m15s`, `1h10m`.
pub fn human_seconds(seconds: u64) -> String {
    match seconds {
        s if s < 60 => format!("{s}s"),
        s if s < 3600 && s % 60 == 0 => format!("{}m", s / 60),
        s if s < 3600 => format!("{}m{}s", s / 60, s % 60),
        s => format!("{}h{}m", s / 3600, (s % 3600) / 60),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn lookup(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> =
            pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        move |key| map.get(key).cloned()
    }

    #[test]
    fn defaults_apply_when_unset() {
        let mut settings = Settings::new(lookup(&[]));
        assert_eq!(settings.number("ratio", 1.5, "above 1", |v| v > 1.0), 1.5);
        assert!(settings.finish().is_empty());
    }

    #[test]
    fn every_bad_setting_is_reported() {
        let mut settings = Settings::new(lookup(&[("ratio", "abc"), ("mode", "p99"), ("floor", "-1")]));
        settings.number("ratio", 1.5, "a number above 1", |v| v > 1.0);
        settings.number("floor", 0.0, "a number at or above 0", |v| v >= 0.0);
        settings.choice("mode", "p50", &["p50", "upper"]);
        let problems = settings.finish();
        assert_eq!(problems.len(), 3);
        assert!(problems[0].contains("`ratio` is `abc`; it must be a number above 1"));
        assert!(problems[2].contains("one of p50, upper"));
    }

    #[test]
    fn the_cache_reads_again_only_when_the_id_changes() {
        let cache = ConfigCache::new();
        let reads = std::cell::Cell::new(0);
        let read = |v: u32| {
            reads.set(reads.get() + 1);
            v
        };
        assert_eq!(cache.get(1, || read(10)), 10);
        assert_eq!(cache.get(1, || read(99)), 10);
        assert_eq!(cache.get(2, || read(20)), 20);
        assert_eq!(reads.get(), 2);
    }

    #[test]
    fn peak_skips_non_finite_values() {
        assert_eq!(peak(&[1.0, f64::NAN, 3.0, 2.0]), Some((2, 3.0)));
        assert_eq!(peak(&[]), None);
    }

    #[test]
    fn human_seconds_reads_well() {
        assert_eq!(human_seconds(45), "45s");
        assert_eq!(human_seconds(240), "4m");
        assert_eq!(human_seconds(75), "1m15s");
        assert_eq!(human_seconds(4200), "1h10m");
    }
}
