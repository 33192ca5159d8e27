//! risk-memory: per-pod memory heading for its limit.
//!
//! The forecast is of the workload's total working set (the prototype's memory query sums it
//! over pods); the plugin divides by the replicas and compares the predicted peak per pod with
//! `threshold` x `limit-bytes`. Growth that will not stop by itself (a leak) is what the restart
//! plugin answers.
//!
//! This plugin only assesses; it never proposes actions.

wit_bindgen::generate!({ world: "risk-plugin", path: "../../wit" });

use augur::plugin::types::Level;
use augur_plugin_sdk::{Settings, human_seconds, peak};

/// The settings of risk-memory.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// The memory limit of one pod, bytes.
    pub limit_bytes: f64,
    /// Fraction of the limit at which the risk is high.
    pub threshold: f64,
}

impl Config {
    /// Reads the settings; returns the config (defaults where a setting is bad) and the problems.
    pub fn read(lookup: impl Fn(&str) -> Option<String>) -> (Self, Vec<String>) {
        let mut s = Settings::new(lookup);
        let config = Self {
            limit_bytes: s.number("limit-bytes", 268_435_456.0, "a number of bytes above 0", |v| v > 0.0),
            threshold: s.number("threshold", 0.9, "a fraction in (0, 1]", |v| v > 0.0 && v <= 1.0),
        };
        (config, s.finish())
    }
}

/// Assesses one memory forecast.
pub fn assess(config: &Config, forecast: &Forecast) -> Risk {
    let replicas = f64::from(forecast.replicas.max(1));
    let current = forecast.history.last().copied().unwrap_or(0.0) / replicas;
    let Some((peak_index, total_peak)) = peak(&forecast.predicted) else {
        return Risk { level: Level::None, score: 0.0, seconds_to_breach: None, required_replicas: None, reason: "no forecast to assess".into() };
    };
    let peak = total_peak / replicas;
    let alarm = config.limit_bytes * config.threshold;
    let breach = forecast.predicted.iter().position(|v| v / replicas > alarm);
    let level = match (current > alarm, breach.is_some(), peak > 0.8 * alarm) {
        (true, _, _) => Level::Critical,
        (false, true, _) => Level::High,
        (false, false, true) => Level::Low,
        _ => Level::None,
    };
    let mib = |bytes: f64| bytes / 1_048_576.0;
    let mut reason = format!(
        "memory per pod predicted to reach {:.0} MiB in {}, now {:.0} MiB; alarm at {:.0} MiB ({:.0}% of the {:.0} MiB limit)",
        mib(peak),
        human_seconds(u64::from((peak_index as u32 + 1) * forecast.step_seconds)),
        mib(current),
        mib(alarm),
        config.threshold * 100.0,
        mib(config.limit_bytes),
    );
    let seconds_to_breach = breach.map(|i| (i as u32 + 1) * forecast.step_seconds);
    if let Some(seconds) = seconds_to_breach {
        reason.push_str(&format!("; predicted breach in {}", human_seconds(u64::from(seconds))));
    }
    Risk { level, score: (peak / config.limit_bytes).clamp(0.0, 1.0), seconds_to_breach, required_replicas: None, reason }
}

augur_plugin_sdk::risk_plugin!(Config, assess);

#[cfg(test)]
mod tests {
    use super::*;
    use augur::plugin::types::Target;

    const MIB: f64 = 1_048_576.0;

    fn forecast(history: &[f64], predicted: &[f64], replicas: u32) -> Forecast {
        Forecast {
            target: Target { kind: "Deployment".into(), namespace: "default".into(), name: "nginx".into() },
            metric: "memory".into(),
            unit: "bytes".into(),
            step_seconds: 60,
            history: history.to_vec(),
            predicted: predicted.to_vec(),
            lower: None,
            upper: None,
            forecaster: "test".into(),
            replicas,
            ready_replicas: replicas,
            interval_seconds: 60,
            startup_seconds: Some(60),
        }
    }

    #[test]
    fn growth_past_the_alarm_is_high() {
        // 2 pods; per pod 200 -> 240 MiB; alarm at 0.9 x 256 = 230.4 MiB, crossed at step 3.
        let config = Config::read(|_| None).0;
        let risk = assess(&config, &forecast(&[400.0 * MIB], &[440.0 * MIB, 460.0 * MIB, 470.0 * MIB, 480.0 * MIB], 2));
        assert_eq!(risk.level, Level::High);
        assert_eq!(risk.seconds_to_breach, Some(180));
    }

    #[test]
    fn steady_memory_is_no_risk() {
        let config = Config::read(|_| None).0;
        let risk = assess(&config, &forecast(&[200.0 * MIB], &[200.0 * MIB, 201.0 * MIB], 2));
        assert_eq!(risk.level, Level::None);
    }

    #[test]
    fn above_the_alarm_now_is_critical() {
        let config = Config::read(|k| (k == "limit-bytes").then(|| (100.0 * MIB).to_string())).0;
        let risk = assess(&config, &forecast(&[95.0 * MIB], &[96.0 * MIB], 1));
        assert_eq!(risk.level, Level::Critical);
    }

    #[test]
    fn a_zero_limit_is_reported() {
        let (_, problems) = Config::read(|k| (k == "limit-bytes").then(|| "0".to_string()));
        assert_eq!(problems.len(), 1);
        assert!(problems[0].contains("limit-bytes"));
    }
}
