//! risk-cpu: sizes a workload for its CPU forecast.
//!
//! Two rules, chosen by `sizing`:
//! - `forecast` (the default): predictive sizing both ways. The look-ahead that matters is
//!   the pods' start-up time plus the decision interval (both from the host: a pod created
//!   now serves only after its start-up, and the next decision can act only an interval from
//!   now). The forecast (its upper bound with `act-on: upper`) over that look-ahead is sized
//!   at `target-utilisation` of `capacity-per-pod`, and never below what the current usage
//!   needs at that utilisation (the reactive floor, as the HPA computes it). More replicas
//!   than the workload has is a `high` risk, and `critical` when it is overloaded now; fewer
//!   is a quiet risk whose `required-replicas` lets a remediation give the spare back. Giving
//!   back is stabilised on the forecast: the peak over the whole horizon (not just the
//!   look-ahead: a pod given back should not be wanted again within it, and the horizon's
//!   peak wobbles less than two points do) must fit in fewer pods with `tolerance` to spare
//!   (the HPA's 10% by default), so that noise within that band never flaps the workload.
//! - `surge`: the prototype's rule. Risk when the current CPU is above `floor` and the
//!   predicted peak over the whole horizon exceeds `ratio` x current (a surge), or when the
//!   peak exceeds what the replicas serve at the target utilisation (a capacity breach).
//!   Required replicas = ceil(peak / (capacity-per-pod x target-utilisation)).
//!
//! This plugin only assesses; it never proposes actions.

wit_bindgen::generate!({ world: "risk-plugin", path: "../../wit" });

use augur::plugin::types::Level;
use augur_plugin_sdk::{Settings, human_seconds, peak};

/// Start-up time assumed until the host has seen a pod start (the simulator's and a small
/// web server's order of magnitude).
pub const DEFAULT_STARTUP_SECONDS: u32 = 60;

/// Which rule sizes the workload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sizing {
    /// Predictive sizing both ways over the start-up + interval look-ahead.
    Forecast,
    /// The prototype's surge ratio over the whole horizon.
    Surge,
}

/// The settings of risk-cpu.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub sizing: Sizing,
    /// Below this current CPU (cores) a surge ratio means nothing (idle noise; `surge` only).
    pub floor: f64,
    /// Predicted peak / current above which a surge is a risk (`surge` only).
    pub ratio: f64,
    /// CPU one pod can serve, cores.
    pub capacity_per_pod: f64,
    /// Fraction of capacity a pod should run at, 0 < u <= 1.
    pub target_utilisation: f64,
    /// Act on the median forecast or on its upper bound.
    pub act_on_upper: bool,
    /// Spare fraction the look-ahead's peak must leave before replicas are given back.
    pub tolerance: f64,
    /// When the ready pods run at their capacity, usage no longer measures demand (it is
    /// censored at the capacity): size for at least this many times the ready pods.
    pub saturation_factor: f64,
}

/// Usage at or above this fraction of the ready pods' capacity reads as saturated.
pub const SATURATED: f64 = 0.97;

impl Config {
    /// Reads the settings; returns the config (defaults where a setting is bad) and the problems.
    pub fn read(lookup: impl Fn(&str) -> Option<String>) -> (Self, Vec<String>) {
        let mut s = Settings::new(lookup);
        let config = Self {
            sizing: if s.choice("sizing", "forecast", &["forecast", "surge"]) == "surge" { Sizing::Surge } else { Sizing::Forecast },
            floor: s.number("floor", 0.05, "a number of cores at or above 0", |v| v >= 0.0),
            ratio: s.number("ratio", 1.5, "a number above 1", |v| v > 1.0),
            capacity_per_pod: s.number("capacity-per-pod", 0.5, "a number of cores above 0", |v| v > 0.0),
            target_utilisation: s.number("target-utilisation", 0.8, "a fraction in (0, 1]", |v| v > 0.0 && v <= 1.0),
            act_on_upper: s.choice("act-on", "median", &["median", "upper"]) == "upper",
            tolerance: s.number("tolerance", 0.1, "a fraction in [0, 0.5)", |v| (0.0..0.5).contains(&v)),
            saturation_factor: s.number("saturation-factor", 2.0, "a number from 1 to 10", |v| (1.0..=10.0).contains(&v)),
        };
        (config, s.finish())
    }
}

/// Assesses one CPU forecast.
pub fn assess(config: &Config, forecast: &Forecast) -> Risk {
    match config.sizing {
        Sizing::Forecast => size_for_forecast(config, forecast),
        Sizing::Surge => surge(config, forecast),
    }
}

/// The forecast to act on, and its name for the reason.
fn acted_on<'f>(config: &Config, forecast: &'f Forecast) -> (&'f [f64], &'static str) {
    match (&forecast.upper, config.act_on_upper) {
        (Some(upper), true) => (upper.as_slice(), "upper bound"),
        _ => (forecast.predicted.as_slice(), "median"),
    }
}

/// Pods needed for `cores` at `per_pod` cores each (at least 1).
fn pods_for(cores: f64, per_pod: f64) -> u32 {
    ((cores / per_pod) - 1e-9).ceil().max(1.0) as u32
}

/// Predictive sizing both ways (see the module's documentation).
pub fn size_for_forecast(config: &Config, forecast: &Forecast) -> Risk {
    let (series, which) = acted_on(config, forecast);
    let current = forecast.history.last().copied().unwrap_or(0.0);
    let startup = forecast.startup_seconds.unwrap_or(DEFAULT_STARTUP_SECONDS);
    let look_ahead = startup.saturating_add(forecast.interval_seconds);
    let points = (look_ahead.div_ceil(forecast.step_seconds.max(1)) as usize).clamp(1, series.len().max(1));
    let Some((peak_index, peak)) = peak(&series[..points.min(series.len())]) else {
        return quiet("no forecast to assess".to_string());
    };
    let per_pod = config.capacity_per_pod * config.target_utilisation;
    let replicas = forecast.replicas.max(1);
    let serving = per_pod * f64::from(replicas);
    let ready = forecast.ready_replicas;
    let overloaded_now = ready > 0 && current >= config.capacity_per_pod * f64::from(ready) * SATURATED;
    // The reactive floor; when saturated, the demand is at least the capacity and unknown
    // beyond it, so the floor grows by the saturation factor (the HPA's fastest default
    // scale-up policy is +100% per period: a factor of 2).
    let mut floor = pods_for(current, per_pod);
    if overloaded_now {
        floor = floor.max((f64::from(ready) * config.saturation_factor).ceil() as u32);
    }
    let up = pods_for(peak, per_pod).max(floor);
    // A breach later in the horizon than the look-ahead: worth saying, not yet worth a pod.
    let later = series.iter().position(|v| *v > serving);
    let seconds_to_breach = later.map(|i| (i as u32 + 1) * forecast.step_seconds);
    let mut horizon = None;
    let (level, required) = if up > replicas {
        (if overloaded_now { Level::Critical } else { Level::High }, up)
    } else {
        // Giving back is judged on the whole horizon: a pod given back now is not worth
        // asking for again within the horizon, and the horizon's peak wobbles less.
        let horizon_peak = augur_plugin_sdk::peak(series).map_or(peak, |(_, v)| v).max(peak);
        let down = pods_for(horizon_peak, per_pod * (1.0 - config.tolerance)).max(floor).min(replicas);
        horizon = Some(horizon_peak);
        let level = if later.is_some() { Level::Medium } else if peak > 0.8 * serving { Level::Low } else { Level::None };
        (level, down)
    };
    let when = human_seconds(u64::from((peak_index as u32 + 1) * forecast.step_seconds));
    let mut reason = format!(
        "{metric} {which} peaks at {peak:.2} {unit} within {ahead} (start-up {start} + interval {interval}) in {when}, now {current:.2}; \
         {replicas} pods serve {serving:.2} at {util:.0}% of {cap} each",
        metric = forecast.metric,
        unit = forecast.unit,
        ahead = human_seconds(u64::from(look_ahead)),
        start = human_seconds(u64::from(startup)),
        interval = human_seconds(u64::from(forecast.interval_seconds)),
        util = config.target_utilisation * 100.0,
        cap = config.capacity_per_pod,
    );
    if let Some(seconds) = seconds_to_breach {
        reason.push_str(&format!("; predicted breach in {}", human_seconds(u64::from(seconds))));
    }
    if overloaded_now {
        reason.push_str(&format!("; the {ready} ready pods are at capacity, so demand is above what they show"));
    }
    if required > replicas {
        reason.push_str(&format!("; needs {required} replicas"));
    } else if let (true, Some(horizon_peak)) = (required < replicas, horizon) {
        let whole = human_seconds(u64::from(series.len() as u32 * forecast.step_seconds));
        reason.push_str(&format!(
            "; over the whole {whole} the {which} peaks at {horizon_peak:.2}: {required} replicas suffice with {:.0}% to spare (current usage needs {floor})",
            config.tolerance * 100.0
        ));
    }
    Risk { level, score: (peak / serving / 2.0).clamp(0.0, 1.0), seconds_to_breach, required_replicas: Some(required), reason }
}

/// The prototype's surge rule (see the module's documentation).
pub fn surge(config: &Config, forecast: &Forecast) -> Risk {
    let (series, which) = acted_on(config, forecast);
    let current = forecast.history.last().copied().unwrap_or(0.0);
    let Some((peak_index, peak)) = peak(series) else {
        return quiet("no forecast to assess".to_string());
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

fn quiet(reason: String) -> Risk {
    Risk { level: Level::None, score: 0.0, seconds_to_breach: None, required_replicas: None, reason }
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
            interval_seconds: 60,
            startup_seconds: Some(60),
        }
    }

    /// The prototype's rule, as the tests below from its time exercise it.
    fn defaults() -> Config {
        Config::read(|k| (k == "sizing").then(|| "surge".to_string())).0
    }

    /// Predictive sizing on the median, at 80% of 0.5 cores: 0.4 cores a pod.
    fn sizing() -> Config {
        Config::read(|_| None).0
    }

    #[test]
    fn sizing_scales_up_ahead_for_the_look_ahead_only() {
        // Now 0.7 cores on 2 pods (0.8 serve). Start-up 60 s + interval 60 s: the first two
        // points matter. 1.1 in two minutes needs 3 pods now; 3.0 in ten minutes is only said.
        let risk = assess(&sizing(), &forecast(&[0.7], &[0.9, 1.1, 1.3, 1.5, 1.8, 2.0, 2.3, 2.6, 2.8, 3.0], 2));
        assert_eq!(risk.level, Level::High);
        assert_eq!(risk.required_replicas, Some(3));
        assert_eq!(risk.seconds_to_breach, Some(60));
        assert!(risk.reason.contains("within 2m (start-up 1m + interval 1m)"), "{}", risk.reason);
        // A slower start-up widens the look-ahead: 5 minutes sees 1.8, 5 pods.
        let mut slow = forecast(&[0.7], &[0.9, 1.1, 1.3, 1.5, 1.8, 2.0, 2.3, 2.6, 2.8, 3.0], 2);
        slow.startup_seconds = Some(240);
        assert_eq!(assess(&sizing(), &slow).required_replicas, Some(5));
    }

    #[test]
    fn sizing_gives_back_only_when_the_upper_bound_fits_with_the_tolerance() {
        let config = Config::read(|k| (k == "act-on").then(|| "upper".to_string())).0;
        // 6 pods, the median falls to 0.9 but the upper bound stays at 1.5: 1.5 / (0.4 x 0.9)
        // needs 5 (not the median's 3).
        let mut f = forecast(&[1.0], &[0.9, 0.9, 0.9], 6);
        f.upper = Some(vec![1.5, 1.5, 1.5]);
        let risk = assess(&config, &f);
        assert_eq!(risk.required_replicas, Some(5));
        assert!(risk.level < Level::High);
        // Within the tolerance band nothing is given back: 1.9 cores fit 5 pods at 95% of target,
        // but not with 10% to spare.
        f.upper = Some(vec![1.9, 1.9, 1.9]);
        assert_eq!(assess(&config, &f).required_replicas, Some(6));
    }

    #[test]
    fn sizing_never_goes_below_the_reactive_floor() {
        // The forecast says the load vanishes; the current 1.5 cores still need 4 pods.
        let risk = assess(&sizing(), &forecast(&[1.5], &[0.1, 0.1, 0.1], 6));
        assert_eq!(risk.required_replicas, Some(4));
        // And above the replicas the floor alone scales up, critical when overloaded now.
        let risk = assess(&sizing(), &forecast(&[0.9], &[0.2, 0.2], 2));
        assert_eq!((risk.level, risk.required_replicas), (Level::High, Some(3)));
    }

    #[test]
    fn sizing_at_capacity_scales_by_the_saturation_factor() {
        // 2 ready pods at their 1.0-core capacity: demand is censored, so at least 2 x 2 pods.
        let risk = assess(&sizing(), &forecast(&[1.0], &[1.0, 1.0], 2));
        assert_eq!((risk.level, risk.required_replicas), (Level::Critical, Some(4)));
        assert!(risk.reason.contains("at capacity"), "{}", risk.reason);
        // With pods already starting (4 desired, 2 ready) nothing more is needed.
        let mut f = forecast(&[1.0], &[1.0, 1.0], 4);
        f.ready_replicas = 2;
        assert_eq!(assess(&sizing(), &f).required_replicas, Some(4));
    }

    #[test]
    fn sizing_without_a_measured_start_up_assumes_a_minute() {
        let mut f = forecast(&[0.3], &[0.3, 0.3, 0.3, 2.0], 2);
        f.startup_seconds = None;
        // 2 minutes ahead: 0.3 cores, no scale-up; the horizon's 2.0 keeps both pods.
        assert_eq!(assess(&sizing(), &f).required_replicas, Some(2));
        f.startup_seconds = Some(180);
        assert_eq!(assess(&sizing(), &f).required_replicas, Some(5));
    }

    #[test]
    fn giving_back_is_judged_on_the_whole_horizon() {
        // 6 pods; the next 2 minutes need 2, but the horizon rises to 1.7 cores again: keep 5.
        let risk = assess(&sizing(), &forecast(&[0.5], &[0.5, 0.5, 0.6, 0.9, 1.7], 6));
        assert_eq!(risk.required_replicas, Some(5));
        assert!(risk.level < Level::High);
        // A quiet horizon gives back down to the reactive floor and the look-ahead's need.
        assert_eq!(assess(&sizing(), &forecast(&[0.5], &[0.5, 0.5, 0.5, 0.5, 0.5], 6)).required_replicas, Some(2));
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
        let (config, problems) = Config::read(|k| match k {
            "act-on" => Some("upper".to_string()),
            "sizing" => Some("surge".to_string()),
            _ => None,
        });
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
