//! scale: propose scaling the workload to the replicas a risk requires, both ways.
//!
//! Up: when the risk is at or above the trigger and needs more replicas, in steps of at most
//! `step` (the prototype's `max_delta`). Down (`scale-down: true`, the default): when the risk
//! is below the trigger and its rule says fewer replicas suffice (risk-cpu's forecast sizing
//! already keeps its tolerance and the reactive floor), straight to that number, but only
//! while no pod is starting (a half-started workload's usage says little). The host's guard
//! still clamps to the policy's min/max replicas and max step, and holds a scale-down for
//! `scale_down_delay` after the last scale.

wit_bindgen::generate!({ world: "remediation-plugin", path: "../../wit" });

use augur::plugin::types::Action;
use augur_plugin_sdk::Settings;

/// The settings of scale.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// Most replicas added by one proposal.
    pub step: u32,
    /// Give back replicas the risk rule says are not needed.
    pub scale_down: bool,
}

impl Config {
    /// Reads the settings; returns the config (defaults where a setting is bad) and the problems.
    pub fn read(lookup: impl Fn(&str) -> Option<String>) -> (Self, Vec<String>) {
        let mut s = Settings::new(lookup);
        let step = s.number("step", 3.0, "a whole number of replicas from 1 to 100", |v| v.fract() == 0.0 && (1.0..=100.0).contains(&v));
        let scale_down = s.choice("scale-down", "true", &["true", "false"]) == "true";
        (Self { step: step as u32, scale_down }, s.finish())
    }
}

/// Plans at most one scale action.
pub fn plan(config: &Config, risk: &Risk, trigger: Level, workload: &Workload) -> Vec<Proposal> {
    let Some(required) = risk.required_replicas else { return Vec::new() };
    if (risk.level as u8) < (trigger as u8) {
        return scale_down(config, required, risk, workload).into_iter().collect();
    }
    if required <= workload.replicas {
        return Vec::new();
    }
    let to = required.min(workload.replicas.saturating_add(config.step));
    let stepped = if to < required { format!(" (step of {}, {required} needed)", config.step) } else { String::new() };
    vec![Proposal {
        action: Action::Scale(to),
        reason: format!("scale {} -> {to}{stepped}: {}", workload.replicas, risk.reason),
    }]
}

/// Down to what the risk requires, when allowed and no pod is starting.
fn scale_down(config: &Config, required: u32, risk: &Risk, workload: &Workload) -> Option<Proposal> {
    let settled = workload.ready_replicas >= workload.replicas;
    if !(config.scale_down && settled && required < workload.replicas) {
        return None;
    }
    Some(Proposal { action: Action::Scale(required), reason: format!("scale {} -> {required}: {}", workload.replicas, risk.reason) })
}

augur_plugin_sdk::remediation_plugin!(Config, plan);

#[cfg(test)]
mod tests {
    use super::*;
    use augur::plugin::types::Target;

    fn risk(level: Level, required: Option<u32>) -> Risk {
        Risk { level, score: 0.9, seconds_to_breach: Some(120), required_replicas: required, reason: "cpu breach".into() }
    }

    fn workload(replicas: u32) -> Workload {
        Workload {
            target: Target { kind: "Deployment".into(), namespace: "default".into(), name: "nginx".into() },
            replicas,
            ready_replicas: replicas,
            pods: vec![],
            nodes: vec![],
        }
    }

    #[test]
    fn scales_to_the_required_replicas() {
        let config = Config::read(|_| None).0;
        let proposals = plan(&config, &risk(Level::High, Some(4)), Level::High, &workload(2));
        assert_eq!(proposals.len(), 1);
        assert!(matches!(proposals[0].action, Action::Scale(4)));
        assert!(proposals[0].reason.starts_with("scale 2 -> 4: cpu breach"));
    }

    #[test]
    fn large_needs_are_met_in_steps() {
        let config = Config::read(|k| (k == "step").then(|| "2".to_string())).0;
        let proposals = plan(&config, &risk(Level::Critical, Some(9)), Level::High, &workload(2));
        assert!(matches!(proposals[0].action, Action::Scale(4)));
        assert!(proposals[0].reason.contains("step of 2, 9 needed"));
    }

    #[test]
    fn below_the_trigger_or_with_enough_replicas_nothing_is_proposed() {
        let config = Config::read(|_| None).0;
        assert!(plan(&config, &risk(Level::Medium, Some(4)), Level::High, &workload(2)).is_empty());
        assert!(plan(&config, &risk(Level::High, Some(2)), Level::High, &workload(2)).is_empty());
        assert!(plan(&config, &risk(Level::High, None), Level::High, &workload(2)).is_empty());
    }

    #[test]
    fn scale_down_goes_to_what_the_risk_requires_unless_turned_off() {
        let on = Config::read(|_| None).0;
        let off = Config::read(|k| (k == "scale-down").then(|| "false".to_string())).0;
        let quiet = risk(Level::None, Some(3));
        assert!(plan(&off, &quiet, Level::High, &workload(8)).is_empty());
        let proposals = plan(&on, &quiet, Level::High, &workload(8));
        assert!(matches!(proposals[0].action, Action::Scale(3)));
        assert!(proposals[0].reason.starts_with("scale 8 -> 3: cpu breach"));
        // A medium risk below the trigger may still give back what its rule says is spare.
        assert!(matches!(plan(&on, &risk(Level::Medium, Some(7)), Level::High, &workload(8))[0].action, Action::Scale(7)));
        // Nothing spare, nothing proposed.
        assert!(plan(&on, &risk(Level::None, Some(8)), Level::High, &workload(8)).is_empty());
        // Not while replicas are starting.
        let mut starting = workload(8);
        starting.ready_replicas = 6;
        assert!(plan(&on, &quiet, Level::High, &starting).is_empty());
    }

    #[test]
    fn a_fractional_step_is_reported() {
        let (_, problems) = Config::read(|k| (k == "step").then(|| "1.5".to_string()));
        assert_eq!(problems.len(), 1);
    }
}
