//! template: a risk plugin to copy. It raises the risk when the forecast's upper bound (p90,
//! or the median when the forecaster gives no interval) crosses `max`, in the metric's unit.
//!
//! The shape every plugin follows: a `Config` read from the policy's `settings` (every problem
//! collected, so that `check-settings` reports them all), a pure function from the inputs to
//! the output (tested natively, below), and one macro that exports it as the WIT world.
//! See docs/plugins.md for the walkthrough.

wit_bindgen::generate!({ world: "risk-plugin", path: "../../wit" });

use augur::plugin::types::Level;
use augur_plugin_sdk::{Settings, human_seconds};

/// The settings of this plugin (`settings:` of its rule in the policy).
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// The value not to cross, in the metric's unit.
    pub max: f64,
}

impl Config {
    /// Reads the settings; returns the config (defaults where a setting is bad) and the problems.
    pub fn read(lookup: impl Fn(&str) -> Option<String>) -> (Self, Vec<String>) {
        let mut s = Settings::new(lookup);
        let max = s.number("max", 1.0, "a number above 0", |v| v > 0.0);
        (Self { max }, s.finish())
    }
}

/// Assesses one forecast.
pub fn assess(config: &Config, forecast: &Forecast) -> Risk {
    let bound = forecast.upper.as_ref().unwrap_or(&forecast.predicted);
    let breach = bound.iter().position(|v| *v > config.max);
    let now = forecast.history.last().copied().unwrap_or(0.0);
    let peak = bound.iter().copied().fold(f64::MIN, f64::max);
    let level = match breach {
        _ if now > config.max => Level::Critical,
        Some(_) => Level::High,
        None if peak > 0.9 * config.max => Level::Medium,
        None => Level::None,
    };
    let seconds_to_breach = breach.map(|i| (i as u32 + 1) * forecast.step_seconds);
    let mut reason = format!("{} predicted up to {peak:.2} {} (limit {:.2}), now {now:.2}", forecast.metric, forecast.unit, config.max);
    if let Some(seconds) = seconds_to_breach {
        reason.push_str(&format!("; predicted breach in {}", human_seconds(u64::from(seconds))));
    }
    Risk { level, score: (peak / config.max).clamp(0.0, 1.0), seconds_to_breach, required_replicas: None, reason }
}

augur_plugin_sdk::risk_plugin!(Config, assess);

#[cfg(test)]
mod tests {
    use super::*;
    use augur::plugin::types::Target;

    fn forecast(history: &[f64], predicted: &[f64], upper: Option<&[f64]>) -> Forecast {
        Forecast {
            target: Target { kind: "Deployment".into(), namespace: "default".into(), name: "web".into() },
            metric: "cpu".into(),
            unit: "cores".into(),
            step_seconds: 60,
            history: history.to_vec(),
            predicted: predicted.to_vec(),
            lower: None,
            upper: upper.map(<[f64]>::to_vec),
            forecaster: "test".into(),
            replicas: 2,
            ready_replicas: 2,
            interval_seconds: 60,
            startup_seconds: Some(60),
        }
    }

    #[test]
    fn the_upper_bound_crossing_the_limit_is_high() {
        let risk = assess(&Config { max: 1.0 }, &forecast(&[0.5], &[0.6, 0.8], Some(&[0.9, 1.2])));
        assert_eq!(risk.level, Level::High);
        assert_eq!(risk.seconds_to_breach, Some(120));
        assert!(risk.reason.ends_with("predicted breach in 2m"), "{}", risk.reason);
    }

    #[test]
    fn without_an_interval_the_median_is_used() {
        let risk = assess(&Config { max: 1.0 }, &forecast(&[0.5], &[0.6, 0.95], None));
        assert_eq!(risk.level, Level::Medium);
        assert_eq!(risk.seconds_to_breach, None);
    }

    #[test]
    fn bad_settings_are_all_reported() {
        let (_, problems) = Config::read(|key| (key == "max").then(|| "-3".to_string()));
        assert_eq!(problems, ["setting `max` is `-3`; it must be a number above 0 (default 1)"]);
    }
}
