//! risk-node: node temperature heading for its alarm (the prototype's `node_temperature`
//! feature, which it answered by cordoning).
//!
//! The forecast is of the hottest node's temperature. High when the forecast crosses
//! `max-celsius`, critical when it is already above, medium within `margin-celsius` of it.
//! With `act-on: upper` the forecast's upper bound (its p90) is what must stay below the
//! alarm: it sees a climb coming while a cautious forecaster still serves a flat median.
//!
//! This plugin only assesses; it never proposes actions.

wit_bindgen::generate!({ world: "risk-plugin", path: "../../wit" });

use augur::plugin::types::Level;
use augur_plugin_sdk::{Settings, human_seconds, peak};

/// The settings of risk-node.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// Temperature alarm, degrees Celsius.
    pub max_celsius: f64,
    /// Degrees below the alarm at which the risk is medium.
    pub margin_celsius: f64,
    /// Judge the forecast's upper bound, not its median.
    pub act_on_upper: bool,
}

impl Config {
    /// Reads the settings; returns the config (defaults where a setting is bad) and the problems.
    pub fn read(lookup: impl Fn(&str) -> Option<String>) -> (Self, Vec<String>) {
        let mut s = Settings::new(lookup);
        let config = Self {
            max_celsius: s.number("max-celsius", 85.0, "a temperature in (0, 150)", |v| v > 0.0 && v < 150.0),
            margin_celsius: s.number("margin-celsius", 5.0, "a number of degrees at or above 0", |v| v >= 0.0),
            act_on_upper: s.choice("act-on", "median", &["median", "upper"]) == "upper",
        };
        (config, s.finish())
    }
}

/// Assesses one temperature forecast.
pub fn assess(config: &Config, forecast: &Forecast) -> Risk {
    let current = forecast.history.last().copied().unwrap_or(0.0);
    let (judged, judged_name) = match (&forecast.upper, config.act_on_upper) {
        (Some(upper), true) => (upper.as_slice(), "upper bound"),
        _ => (forecast.predicted.as_slice(), "median"),
    };
    let Some((peak_index, peak)) = peak(judged) else {
        return Risk { level: Level::None, score: 0.0, seconds_to_breach: None, required_replicas: None, reason: "no forecast to assess".into() };
    };
    let breach = judged.iter().position(|v| *v > config.max_celsius);
    let level = if current > config.max_celsius {
        Level::Critical
    } else if breach.is_some() {
        Level::High
    } else if peak > config.max_celsius - config.margin_celsius {
        Level::Medium
    } else {
        Level::None
    };
    let seconds_to_breach = breach.map(|i| (i as u32 + 1) * forecast.step_seconds);
    let mut reason = format!(
        "hottest node predicted at {peak:.1} C ({judged_name}) in {}, now {current:.1} C; alarm at {:.1} C",
        human_seconds(u64::from((peak_index as u32 + 1) * forecast.step_seconds)),
        config.max_celsius
    );
    if let Some(seconds) = seconds_to_breach {
        reason.push_str(&format!("; predicted breach in {}", human_seconds(u64::from(seconds))));
    }
    Risk { level, score: (peak / config.max_celsius).clamp(0.0, 1.0), seconds_to_breach, required_replicas: None, reason }
}

augur_plugin_sdk::risk_plugin!(Config, assess);

#[cfg(test)]
mod tests {
    use super::*;
    use augur::plugin::types::Target;

    fn forecast(history: &[f64], predicted: &[f64]) -> Forecast {
        Forecast {
            target: Target { kind: "Deployment".into(), namespace: "default".into(), name: "nginx".into() },
            metric: "node_temperature".into(),
            unit: "celsius".into(),
            step_seconds: 60,
            history: history.to_vec(),
            predicted: predicted.to_vec(),
            lower: None,
            upper: None,
            forecaster: "test".into(),
            replicas: 2,
            ready_replicas: 2,
            interval_seconds: 60,
            startup_seconds: Some(60),
        }
    }

    #[test]
    fn levels_follow_the_alarm() {
        let config = Config::read(|_| None).0;
        assert_eq!(assess(&config, &forecast(&[70.0], &[71.0, 72.0])).level, Level::None);
        assert_eq!(assess(&config, &forecast(&[78.0], &[80.0, 82.0])).level, Level::Medium);
        let high = assess(&config, &forecast(&[80.0], &[83.0, 86.0]));
        assert_eq!(high.level, Level::High);
        assert_eq!(high.seconds_to_breach, Some(120));
        assert_eq!(assess(&config, &forecast(&[90.0], &[91.0])).level, Level::Critical);
    }

    #[test]
    fn act_on_upper_sees_the_climb_a_flat_median_hides() {
        let mut f = forecast(&[75.0], &[75.0, 75.0, 75.0]);
        f.upper = Some(vec![79.0, 83.0, 87.0]);
        let median = Config::read(|_| None).0;
        assert_eq!(assess(&median, &f).level, Level::None);
        let upper = Config::read(|k| (k == "act-on").then(|| "upper".to_string())).0;
        let risk = assess(&upper, &f);
        assert_eq!(risk.level, Level::High);
        assert_eq!(risk.seconds_to_breach, Some(180));
        assert!(risk.reason.contains("87.0 C (upper bound)"), "{}", risk.reason);
    }
}
