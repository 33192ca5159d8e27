//! template-remediation: a remediation plugin to copy. When its risk reaches the trigger, it
//! proposes restarting the ready pod that holds the most memory, if that pod is older than
//! `min-age-seconds` (a pod just started is not the one leaking).
//!
//! The shape every plugin follows: a `Config` read from the policy's `settings` (every problem
//! collected, so that `check-settings` reports them all), a pure function from the inputs to
//! the proposals (tested natively, below), and one macro that exports it as the WIT world.
//! The plugin only proposes: the host's guard decides, within the rule's `capabilities`.

wit_bindgen::generate!({ world: "remediation-plugin", path: "../../wit" });

use augur::plugin::types::Action;
use augur_plugin_sdk::{Settings, human_seconds};

/// The settings of this plugin (`settings:` of its rule in the policy).
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// The youngest a pod may be and still be restarted, in seconds.
    pub min_age_seconds: u64,
}

impl Config {
    /// Reads the settings; returns the config (defaults where a setting is bad) and the problems.
    pub fn read(lookup: impl Fn(&str) -> Option<String>) -> (Self, Vec<String>) {
        let mut s = Settings::new(lookup);
        let min_age = s.number("min-age-seconds", 300.0, "a whole number of seconds from 0 to 86400", |v| v.fract() == 0.0 && (0.0..=86_400.0).contains(&v));
        (Self { min_age_seconds: min_age as u64 }, s.finish())
    }
}

/// Plans at most one restart.
pub fn plan(config: &Config, risk: &Risk, trigger: Level, workload: &Workload) -> Vec<Proposal> {
    if (risk.level as u8) < (trigger as u8) {
        return Vec::new();
    }
    let heaviest = workload
        .pods
        .iter()
        .filter(|p| p.ready && p.age_seconds >= config.min_age_seconds)
        .filter_map(|p| Some((p, p.memory_bytes?)))
        .max_by(|a, b| a.1.total_cmp(&b.1));
    let Some((pod, bytes)) = heaviest else { return Vec::new() };
    let reason = format!("restart {} ({:.0} MiB, up {}): {}", pod.name, bytes / 1_048_576.0, human_seconds(pod.age_seconds), risk.reason);
    vec![Proposal { action: Action::RestartPod(pod.name.clone()), reason }]
}

augur_plugin_sdk::remediation_plugin!(Config, plan);

#[cfg(test)]
mod tests {
    use super::*;
    use augur::plugin::types::{Pod, Target};

    fn pod(name: &str, memory_mib: f64, age_seconds: u64) -> Pod {
        Pod { name: name.into(), node: "n1".into(), phase: "Running".into(), ready: true, cpu_cores: None, memory_bytes: Some(memory_mib * 1_048_576.0), age_seconds }
    }

    fn workload(pods: Vec<Pod>) -> Workload {
        Workload { target: Target { kind: "Deployment".into(), namespace: "default".into(), name: "web".into() }, replicas: 2, ready_replicas: 2, pods, nodes: vec![] }
    }

    fn risk(level: Level) -> Risk {
        Risk { level, score: 0.9, seconds_to_breach: Some(120), required_replicas: None, reason: "memory breach".into() }
    }

    #[test]
    fn the_heaviest_old_enough_pod_is_restarted() {
        let pods = vec![pod("a", 100.0, 900), pod("b", 250.0, 900), pod("c", 400.0, 60)];
        let plan = plan(&Config { min_age_seconds: 300 }, &risk(Level::High), Level::High, &workload(pods));
        assert_eq!(plan.len(), 1);
        assert!(matches!(&plan[0].action, Action::RestartPod(pod) if pod == "b"), "{:?}", plan[0].action);
        assert!(plan[0].reason.starts_with("restart b (250 MiB, up 15m): memory breach"), "{}", plan[0].reason);
    }

    #[test]
    fn below_the_trigger_or_without_a_candidate_nothing_is_proposed() {
        let config = Config { min_age_seconds: 300 };
        assert!(plan(&config, &risk(Level::Medium), Level::High, &workload(vec![pod("a", 100.0, 900)])).is_empty());
        assert!(plan(&config, &risk(Level::Critical), Level::High, &workload(vec![pod("young", 900.0, 10)])).is_empty());
    }

    #[test]
    fn a_bad_setting_is_reported_and_the_default_kept() {
        let (config, problems) = Config::read(|key| (key == "min-age-seconds").then(|| "soon".to_string()));
        assert_eq!(config.min_age_seconds, 300);
        assert_eq!(problems, ["setting `min-age-seconds` is `soon`; it must be a whole number of seconds from 0 to 86400 (default 300)"]);
    }
}
