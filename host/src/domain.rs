//! The host's own types for what crosses the plugin boundary: targets, risks, workload
//! state, actions. The wasm bindings convert to and from these in `plugins::bindings`; no
//! other module sees the generated types.

use serde::{Deserialize, Serialize};
use std::fmt;

/// How bad a risk is, in increasing order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    None,
    Low,
    Medium,
    High,
    Critical,
}

impl Level {
    /// Every level, lowest first; used for parsing and error messages.
    pub const ALL: [Level; 5] = [Level::None, Level::Low, Level::Medium, Level::High, Level::Critical];

    /// The level's name as written in policies and the audit log.
    pub fn as_str(self) -> &'static str {
        match self {
            Level::None => "none",
            Level::Low => "low",
            Level::Medium => "medium",
            Level::High => "high",
            Level::Critical => "critical",
        }
    }
}

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The workload a policy watches.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Target {
    pub kind: String,
    pub namespace: String,
    pub name: String,
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}/{}", self.kind, self.namespace, self.name)
    }
}

/// A forecast of one metric, as the host computed it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Forecast {
    /// Name of the forecaster that produced it.
    pub forecaster: String,
    /// Seconds between points.
    pub step_seconds: u32,
    /// Median prediction, one value per step.
    pub predicted: Vec<f64>,
    /// Lower bound (p10), when the forecaster gives one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lower: Option<Vec<f64>>,
    /// Upper bound (p90), when the forecaster gives one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub upper: Option<Vec<f64>>,
}

/// What a risk plugin concluded.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Risk {
    pub level: Level,
    pub score: f64,
    pub seconds_to_breach: Option<u32>,
    pub required_replicas: Option<u32>,
    pub reason: String,
}

/// A pod of the target workload.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Pod {
    pub name: String,
    pub node: String,
    pub phase: String,
    pub ready: bool,
    pub cpu_cores: Option<f64>,
    pub memory_bytes: Option<f64>,
    pub age_seconds: u64,
    /// Seconds from the pod's creation to its Ready condition, once it has been ready.
    pub startup_seconds: Option<u64>,
}

/// A node that runs (or could run) pods of the target.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Node {
    pub name: String,
    pub ready: bool,
    pub schedulable: bool,
    pub cordoned_by_augur: bool,
    pub temperature_celsius: Option<f64>,
    #[serde(default)]
    pub pressure: Vec<String>,
    pub healthy_seconds: u64,
}

/// Who moves the target's replicas when Augur scales it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Scaler {
    /// No HPA scales the target: Augur writes its replicas.
    Augur,
    /// The HPA of this name scales it: Augur moves the HPA's floor (`hpa-floor`).
    Hpa(String),
}

/// The state of the target workload.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Workload {
    pub target: Target,
    pub replicas: u32,
    pub ready_replicas: u32,
    #[serde(default)]
    pub pods: Vec<Pod>,
    #[serde(default)]
    pub nodes: Vec<Node>,
    /// Why Augur must not act on the workload now, when an operator paused it (the
    /// annotation `augur.io/paused: "true"` on the target); `None` when it may.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paused: Option<String>,
    /// The HorizontalPodAutoscaler that scales the target, when one does: Augur then moves
    /// its floor (`hpa-floor`) and never writes the workload's replicas.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scaled_by: Option<String>,
}

impl Workload {
    /// Who moves the replicas.
    pub fn scaler(&self) -> Scaler {
        match &self.scaled_by {
            Some(hpa) => Scaler::Hpa(hpa.clone()),
            None => Scaler::Augur,
        }
    }

    /// The pods' start-up time, creation to ready: the median of the pods that report one
    /// (the median, so that one pod stuck on an image pull or a slow node does not set the
    /// lead for all). `None` when no pod has been seen ready.
    pub fn startup_seconds(&self) -> Option<u64> {
        let mut seen: Vec<u64> = self.pods.iter().filter_map(|p| p.startup_seconds).collect();
        if seen.is_empty() {
            return None;
        }
        seen.sort_unstable();
        Some(seen[seen.len() / 2])
    }

    /// The workload as it will be once `action` lands, as far as the guard's rules need it:
    /// what a later proposal of the same tick is judged against, so that one tick cannot
    /// restart every pod or cordon every node on the strength of the picture before its own
    /// actions. New pods count as not ready yet; a restarted pod is not ready; a rollout
    /// restart takes a pod down first.
    pub fn after(&mut self, action: &Action) {
        match action {
            Action::Scale { replicas } => {
                self.replicas = *replicas;
                self.ready_replicas = self.ready_replicas.min(*replicas);
            }
            Action::RestartPod { pod } => {
                if let Some(p) = self.pods.iter_mut().find(|p| &p.name == pod).filter(|p| p.ready) {
                    p.ready = false;
                    self.ready_replicas = self.ready_replicas.saturating_sub(1);
                }
            }
            Action::RolloutRestart => self.ready_replicas = self.ready_replicas.min(self.replicas).saturating_sub(1),
            Action::CordonNode { node } | Action::UncordonNode { node } => {
                let cordon = matches!(action, Action::CordonNode { .. });
                if let Some(n) = self.nodes.iter_mut().find(|n| &n.name == node) {
                    n.schedulable = !cordon;
                    n.cordoned_by_augur = cordon;
                }
            }
        }
    }
}

/// An action a plugin proposes and the host may execute.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(tag = "action", rename_all = "kebab-case")]
pub enum Action {
    Scale { replicas: u32 },
    RestartPod { pod: String },
    /// Restart every pod of the workload, one by one, as `kubectl rollout restart` does.
    RolloutRestart,
    CordonNode { node: String },
    UncordonNode { node: String },
}

/// The kind of an action, without its argument: what the guard allows and counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ActionKind {
    Scale,
    RestartPod,
    RolloutRestart,
    CordonNode,
    UncordonNode,
}

impl ActionKind {
    /// Every kind; used for parsing and error messages.
    pub const ALL: [ActionKind; 5] = [
        ActionKind::Scale,
        ActionKind::RestartPod,
        ActionKind::RolloutRestart,
        ActionKind::CordonNode,
        ActionKind::UncordonNode,
    ];

    /// The kind's name as written in policies and the audit log.
    pub fn as_str(self) -> &'static str {
        match self {
            ActionKind::Scale => "scale",
            ActionKind::RestartPod => "restart-pod",
            ActionKind::RolloutRestart => "rollout-restart",
            ActionKind::CordonNode => "cordon-node",
            ActionKind::UncordonNode => "uncordon-node",
        }
    }
}

impl Action {
    /// The kind of this action.
    pub fn kind(&self) -> ActionKind {
        match self {
            Action::Scale { .. } => ActionKind::Scale,
            Action::RestartPod { .. } => ActionKind::RestartPod,
            Action::RolloutRestart => ActionKind::RolloutRestart,
            Action::CordonNode { .. } => ActionKind::CordonNode,
            Action::UncordonNode { .. } => ActionKind::UncordonNode,
        }
    }

    /// The pod or node the action names, if it names one.
    pub fn target(&self) -> Option<&str> {
        match self {
            Action::RestartPod { pod } => Some(pod),
            Action::CordonNode { node } | Action::UncordonNode { node } => Some(node),
            Action::Scale { .. } | Action::RolloutRestart => None,
        }
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Action::Scale { replicas } => write!(f, "scale to {replicas}"),
            Action::RestartPod { pod } => write!(f, "restart pod {pod}"),
            Action::RolloutRestart => write!(f, "rollout restart"),
            Action::CordonNode { node } => write!(f, "cordon node {node}"),
            Action::UncordonNode { node } => write!(f, "uncordon node {node}"),
        }
    }
}

/// An action with the plugin's reason.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Proposal {
    #[serde(flatten)]
    pub action: Action,
    pub reason: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(startup: Option<u64>) -> Pod {
        Pod { name: "p".into(), node: "n".into(), phase: "Running".into(), ready: startup.is_some(), cpu_cores: None, memory_bytes: None, age_seconds: 600, startup_seconds: startup }
    }

    #[test]
    fn the_start_up_is_the_median_of_the_pods_that_report_one() {
        let target = Target { kind: "Deployment".into(), namespace: "default".into(), name: "web".into() };
        let mut workload = Workload { target, replicas: 4, ready_replicas: 3, pods: vec![pod(Some(40)), pod(Some(45)), pod(Some(600)), pod(None)], nodes: vec![], paused: None, scaled_by: None };
        // One pod stuck on a slow image pull does not set the lead for all.
        assert_eq!(workload.startup_seconds(), Some(45));
        workload.pods = vec![pod(None)];
        assert_eq!(workload.startup_seconds(), None);
    }
}
