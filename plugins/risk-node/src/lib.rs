//! risk-node: node temperature heading for its alarm (the prototype's `node_temperature`
//! feature, which it answered by cordoning).
//!
//! The forecast is of the hottest node's temperature. High when the forecast crosses
//! `max-celsius`, critical when it is already above, medium within `margin-celsius` of it.
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
}

impl Config {
    /// Reads the settings; returns the config (defaults where a setting is bad) and the problems.
    pub fn read(lookup: impl Fn(&str) -> Option<String>) -> (Self, Vec<String>) {
        let mut s = Settings::new(lookup);
        let config = Self {
            max_celsius: s.number("max-celsius", 85.0, "a temperature in (0, 150)", |v| v > 0.0 && v < 150.0),
            margin_celsius: s.number("margin-celsius", 5.0, "a number of degrees at or above 0", |v| v >= 0.0),
        };
        (config, s.finish())
    }
}

/// Assesses one temperature forecast.
pub fn assess(config: &Config, forecast: &Forecast) -> Risk {
    let current = forecast.history.last().copied().unwrap_or(0.0);
    let Some((peak_index, peak)) = peak(&forecast.predicted) else {
        return Risk { level: Level::None, score: 0.0, seconds_to_breach: None, required_replicas: None, reason: "no forecast to assess".into() };
    };
    let breach = forecast.predicted.iter().position(|v| *v > config.max_celsius);
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
        "hottest node predicted at {peak:.1} C in {}, now {current:.1} C; alarm at {:.1} C",
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
}
