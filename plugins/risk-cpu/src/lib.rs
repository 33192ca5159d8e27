//! risk-cpu: the prototype's CPU rule, tuned by settings.
//!
//! Risk when the current CPU is above a floor and the predicted peak over the horizon exceeds
//! `ratio` x current (a surge), or when the peak exceeds what the replicas can serve at the
//! target utilisation (a capacity breach). Required replicas = ceil(peak / (capacity-per-pod x
//! target-utilisation)). With `act-on: upper` the plugin uses the upper bound of the forecast
//! interval (e.g. p90) instead of the median, so that "p90 demand fits".
//!
//! This plugin only assesses; it never proposes actions.

wit_bindgen::generate!({ world: "risk-plugin", path: "../../wit" });

use augur::plugin::types::Level;
use augur_plugin_sdk::{Settings, human_seconds, peak};

/// The settings of risk-cpu, with the prototype's values as defaults.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// Below this current CPU (cores) a surge ratio means nothing (idle noise).
    pub floor: f64,
    /// Predicted peak / current above which a surge is a risk.
    pub ratio: f64,
    /// CPU one pod can serve, cores.
    pub capacity_per_pod: f64,
    /// Fraction of capacity a pod should run at, 0 < u <= 1.
    pub target_utilisation: f64,
    /// Act on the median forecast or on its upper bound.
    pub act_on_upper: bool,
}

impl Config {
    /// Reads the settings; returns the config (defaults where a setting is bad) and the problems.
    pub fn read(lookup: impl Fn(&str) -> Option<String>) -> (Self, Vec<String>) {
        let mut s = Settings::new(lookup);
        let config = Self {
            floor: s.number("floor", 0.05, "a number of cores at or above 0", |v| v >= 0.0),
            ratio: s.number("ratio", 1.5, "a number above 1", |v| v > 1.0),
            capacity_per_pod: s.number("capacity-per-pod", 0.5, "a number of cores above 0", |v| v > 0.0),
            target_utilisation: s.number("target-utilisation", 0.8, "a fraction in (0, 1]", |v| v > 0.0 && v <= 1.0),
            act_on_upper: s.choice("act-on", "median", &["median", "upper"]) == "upper",
        };
        (config, s.finish())
    }
}

/// Assesses one CPU forecast.
pub fn assess(config: &Config, forecast: &Forecast) -> Risk {
    let (series, which) = match (&forecast.upper, config.act_on_upper) {
        (Some(upper), true) => (upper.as_slice(), "upper bound"),
        _ => (forecast.predicted.as_slice(), "median"),
    };
    let current = forecast.history.last().copied().unwrap_or(0.0);
    let Some((peak_index, peak)) = peak(series) else {
        return quiet(0.0, "no forecast to assess".to_string());
    };
    let per_pod = config.capacity_per_pod * config.target_utilisation;
    let replicas = forecast.replicas.max(1);
    let serving = per_pod * f64::from(replicas);
    let required = (peak / per_pod).ceil().max(1.0) as u32;
    let surge = current > config.floor && peak > config.ratio * current;
    let breach_index = series.iter().position(|v| *v > serving);
    let seconds_to_breach = breach_index.map(|i| (i as u32 + 1) * forecast.step_seconds);
    let overloaded_now = current > config.capacity_per_pod * f64::from(forecast.ready_replicas.max(1));

    let level = if overloaded_now && required > replicas {
        Level::Critical
    } else if breach_index.is_some() || (surge && required > replicas) {
        Level::High
    } else if surge {
        Level::Medium
    } else if peak > 0.8 * serving {
        Level::Low
    } else {
        Level::None
    };
    let when = human_seconds(u64::from((peak_index as u32 + 1) * forecast.step_seconds));
    let mut reason = format!(
        "{metric} predicted to peak at {peak:.2} {unit} ({which}) in {when}, now {current:.2}; \
         {replicas} pods serve {serving:.2} at {util:.0}% of {cap} each",
        metric = forecast.metric,
        unit = forecast.unit,
        util = config.target_utilisation * 100.0,
        cap = config.capacity_per_pod,
    );
    if let Some(seconds) = seconds_to_breach {
        reason.push_str(&format!("; predicted breach in {}", human_seconds(u64::from(seconds))));
    }
    if surge {
        reason.push_str(&format!("; surge x{:.1} over current", peak / current));
    }
    if required != replicas {
        reason.push_str(&format!("; needs {required} replicas"));
    }
    Risk {
        level,
        score: (peak / serving / 2.0).clamp(0.0, 1.0),
        seconds_to_breach,
        required_replicas: Some(required),
        reason,
    }
}

fn quiet(score: f64, reason: String) -> Risk {
    Risk { level: Level::None, score, seconds_to_breach: None, required_replicas: None, reason }
}

augur_plugin_sdk::risk_plugin!(Config, assess);

#[cfg(test)]
mod tests {
    use super::*;
    use augur::plugin::types::Target;

    fn forecast(history: &[f64], predicted: &[f64], replicas: u32) -> Forecast {
        Forecast {
            target: Target { kind: "Deployment".into(), namespace: "default".into(), name: "nginx".into() },
            metric: "cpu".into(),
            unit: "cores".into(),
            step_seconds: 60,
            history: history.to_vec(),
            predicted: predicted.to_vec(),
            lower: None,
            upper: None,
            forecaster: "test".into(),
            replicas,
            ready_replicas: replicas,
        }
    }

    fn defaults() -> Config {
        Config::read(|_| None).0
    }

    #[test]
    fn a_surge_beyond_capacity_is_high_with_required_replicas() {
        // 2 pods x 0.5 x 0.8 = 0.8 cores serve; a peak of 1.9 needs ceil(1.9 / 0.4) = 5.
        let risk = assess(&defaults(), &forecast(&[0.5, 0.6], &[0.7, 0.9, 1.2, 1.5, 1.9], 2));
        assert_eq!(risk.level, Level::High);
        assert_eq!(risk.required_replicas, Some(5));
        assert_eq!(risk.seconds_to_breach, Some(120));
        assert!(risk.reason.contains("predicted breach in 2m"), "{}", risk.reason);
    }

    #[test]
    fn a_flat_load_within_capacity_is_no_risk() {
        let risk = assess(&defaults(), &forecast(&[0.3, 0.3], &[0.3, 0.31, 0.3, 0.3, 0.3], 2));
        assert_eq!(risk.level, Level::None);
        assert_eq!(risk.seconds_to_breach, None);
        assert_eq!(risk.required_replicas, Some(1));
    }

    #[test]
    fn a_surge_below_the_floor_is_ignored() {
        // 0.01 -> 0.04 is x4 but below the 0.05-core floor and far below capacity.
        let risk = assess(&defaults(), &forecast(&[0.01], &[0.02, 0.04], 2));
        assert_eq!(risk.level, Level::None);
    }

    #[test]
    fn a_surge_within_capacity_is_medium() {
        // x2 surge, but 4 pods serve 1.6 cores and the peak is 0.8.
        let risk = assess(&defaults(), &forecast(&[0.4], &[0.6, 0.8], 4));
        assert_eq!(risk.level, Level::Medium);
    }

    #[test]
    fn current_overload_is_critical() {
        let risk = assess(&defaults(), &forecast(&[1.5], &[1.5, 1.6], 2));
        assert_eq!(risk.level, Level::Critical);
        assert_eq!(risk.required_replicas, Some(4));
    }

    #[test]
    fn act_on_upper_uses_the_interval() {
        let (config, problems) = Config::read(|k| (k == "act-on").then(|| "upper".to_string()));
        assert!(problems.is_empty());
        let mut f = forecast(&[0.5], &[0.6, 0.6], 2);
        f.upper = Some(vec![0.9, 1.3]);
        let risk = assess(&config, &f);
        assert_eq!(risk.required_replicas, Some(4));
        assert!(risk.reason.contains("upper bound"));
        // Without the setting the median is within capacity.
        assert_eq!(assess(&defaults(), &f).level, Level::None);
    }

    #[test]
    fn bad_settings_are_all_reported() {
        let (_, problems) = Config::read(|k| match k {
            "ratio" => Some("0.5".into()),
            "target-utilisation" => Some("1.5".into()),
            _ => None,
        });
        assert_eq!(problems.len(), 2, "{problems:?}");
    }
}
