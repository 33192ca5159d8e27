//! restart: on memory risk, propose restarting the pod that holds the most memory (the
//! prototype's `restart_pod`), one at a time: nothing is proposed while any pod of the
//! workload is not ready (a restart may still be in progress), nor for a pod younger than
//! `min-age-seconds`.
//!
//! With `mode: rollout` it proposes a rollout restart of the whole workload instead (every pod
//! replaced one by one, as `kubectl rollout restart` does): for a leak that every pod has, where
//! deleting the heaviest pod only moves the problem.

wit_bindgen::generate!({ world: "remediation-plugin", path: "../../wit" });

use augur::plugin::types::{Action, Pod};
use augur_plugin_sdk::{Settings};

/// The settings of restart.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// Pods younger than this are never restarted.
    pub min_age_seconds: u64,
    /// Delete the heaviest pod (`pod`, the prototype's way) or restart them all (`rollout`).
    pub rollout: bool,
}

impl Config {
    /// Reads the settings; returns the config (defaults where a setting is bad) and the problems.
    pub fn read(lookup: impl Fn(&str) -> Option<String>) -> (Self, Vec<String>) {
        let mut s = Settings::new(lookup);
        let age = s.number("min-age-seconds", 300.0, "a whole number of seconds at or above 0", |v| v >= 0.0 && v.fract() == 0.0);
        let mode = s.choice("mode", "pod", &["pod", "rollout"]);
        (Self { min_age_seconds: age as u64, rollout: mode == "rollout" }, s.finish())
    }
}

/// Plans at most one pod restart.
pub fn plan(config: &Config, risk: &Risk, trigger: Level, workload: &Workload) -> Vec<Proposal> {
    if (risk.level as u8) < (trigger as u8) {
        return Vec::new();
    }
    if workload.pods.iter().any(|pod| !pod.ready) || workload.ready_replicas < workload.replicas {
        return Vec::new();
    }
    let heaviest = workload
        .pods
        .iter()
        .filter(|pod| pod.age_seconds >= config.min_age_seconds)
        .filter_map(|pod| pod.memory_bytes.map(|memory| (pod, memory)))
        .max_by(|a, b| a.1.total_cmp(&b.1));
    let Some((pod, memory)) = heaviest else { return Vec::new() };
    vec![proposal(config, pod, memory, risk)]
}

fn proposal(config: &Config, pod: &Pod, memory: f64, risk: &Risk) -> Proposal {
    let mib = memory / 1_048_576.0;
    if config.rollout {
        return Proposal {
            action: Action::RolloutRestart,
            reason: format!("rollout restart (heaviest pod {}: {mib:.0} MiB): {}", pod.name, risk.reason),
        };
    }
    Proposal { action: Action::RestartPod(pod.name.clone()), reason: format!("restart {} (most memory: {mib:.0} MiB): {}", pod.name, risk.reason) }
}

augur_plugin_sdk::remediation_plugin!(Config, plan);

#[cfg(test)]
mod tests {
    use super::*;
    use augur::plugin::types::Target;

    fn pod(name: &str, memory_mib: f64, ready: bool, age_seconds: u64) -> Pod {
        Pod {
            name: name.into(),
            node: "node-a".into(),
            phase: "Running".into(),
            ready,
            cpu_cores: Some(0.1),
            memory_bytes: Some(memory_mib * 1_048_576.0),
            age_seconds,
        }
    }

    fn workload(pods: Vec<Pod>) -> Workload {
        let ready = pods.iter().filter(|p| p.ready).count() as u32;
        Workload {
            target: Target { kind: "Deployment".into(), namespace: "default".into(), name: "nginx".into() },
            replicas: pods.len() as u32,
            ready_replicas: ready,
            pods,
            nodes: vec![],
        }
    }

    fn risk(level: Level) -> Risk {
        Risk { level, score: 0.9, seconds_to_breach: Some(60), required_replicas: None, reason: "memory breach".into() }
    }

    #[test]
    fn restarts_the_heaviest_old_enough_pod() {
        let config = Config::read(|_| None).0;
        let w = workload(vec![pod("a", 100.0, true, 900), pod("b", 240.0, true, 900), pod("c", 250.0, true, 60)]);
        let proposals = plan(&config, &risk(Level::High), Level::High, &w);
        assert_eq!(proposals.len(), 1);
        assert!(matches!(&proposals[0].action, Action::RestartPod(name) if name == "b"));
        assert!(proposals[0].reason.contains("240 MiB"));
    }

    #[test]
    fn rollout_mode_restarts_the_workload() {
        let (config, problems) = Config::read(|key| (key == "mode").then(|| "rollout".to_string()));
        assert!(problems.is_empty(), "{problems:?}");
        let w = workload(vec![pod("a", 100.0, true, 900), pod("b", 240.0, true, 900)]);
        let proposals = plan(&config, &risk(Level::High), Level::High, &w);
        assert_eq!(proposals.len(), 1);
        assert!(matches!(proposals[0].action, Action::RolloutRestart));
        assert!(proposals[0].reason.contains("heaviest pod b: 240 MiB"), "{}", proposals[0].reason);
    }

    #[test]
    fn an_unknown_mode_is_a_problem() {
        let (_, problems) = Config::read(|key| (key == "mode").then(|| "all".to_string()));
        assert_eq!(problems.len(), 1);
        assert!(problems[0].contains("mode"), "{problems:?}");
    }

    #[test]
    fn one_at_a_time() {
        let config = Config::read(|_| None).0;
        let w = workload(vec![pod("a", 100.0, false, 10), pod("b", 240.0, true, 900)]);
        assert!(plan(&config, &risk(Level::Critical), Level::High, &w).is_empty());
    }

    #[test]
    fn below_the_trigger_nothing_is_proposed() {
        let config = Config::read(|_| None).0;
        let w = workload(vec![pod("b", 240.0, true, 900)]);
        assert!(plan(&config, &risk(Level::Medium), Level::High, &w).is_empty());
    }
}
