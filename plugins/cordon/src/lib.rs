//! cordon: on node risk (temperature or pressure), propose cordoning the worst node that
//! runs the workload, never the last schedulable one; propose uncordoning a node that Augur
//! cordoned once it has been healthy for `healthy-for-seconds` (at any risk level: that is
//! restorative) and shows no trouble: never while a pressure condition or the heat persists.
//! A node an operator cordoned is never uncordoned.
//!
//! Ahead of the alarm: the node risk is a forecast of the hottest node's temperature, so
//! when it predicts a breach and no node is in trouble yet, the hottest node is the one
//! heading for it: it is cordoned before it gets there, and stays cordoned while the breach
//! is still predicted.

wit_bindgen::generate!({ world: "remediation-plugin", path: "../../wit" });

use augur::plugin::types::{Action, Node};
use augur_plugin_sdk::{Settings, human_seconds};

/// The settings of cordon.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// A schedulable node above this temperature is a candidate for cordoning.
    pub max_celsius: f64,
    /// How long a cordoned node must stay healthy before it is uncordoned.
    pub healthy_for_seconds: u64,
}

impl Config {
    /// Reads the settings; returns the config (defaults where a setting is bad) and the problems.
    pub fn read(lookup: impl Fn(&str) -> Option<String>) -> (Self, Vec<String>) {
        let mut s = Settings::new(lookup);
        let max_celsius = s.number("max-celsius", 85.0, "a temperature in (0, 150)", |v| v > 0.0 && v < 150.0);
        let healthy = s.number("healthy-for-seconds", 600.0, "a whole number of seconds at or above 0", |v| v >= 0.0 && v.fract() == 0.0);
        (Self { max_celsius, healthy_for_seconds: healthy as u64 }, s.finish())
    }
}

/// Plans uncordons of recovered nodes and at most one cordon.
pub fn plan(config: &Config, risk: &Risk, trigger: Level, workload: &Workload) -> Vec<Proposal> {
    let heading = heading(risk, workload).map(|node| node.name.as_str());
    let mut proposals: Vec<Proposal> = workload
        .nodes
        .iter()
        // Never while the trouble it was cordoned for (or any other) persists, whatever the
        // host counts as healthy time.
        .filter(|node| !node.schedulable && node.cordoned_by_augur && node.healthy_seconds >= config.healthy_for_seconds && trouble(config, node).is_none())
        .filter(|node| heading != Some(node.name.as_str()))
        .map(|node| Proposal {
            action: Action::UncordonNode(node.name.clone()),
            reason: format!("uncordon {}: healthy for {}", node.name, human_seconds(node.healthy_seconds)),
        })
        .collect();
    if (risk.level as u8) >= (trigger as u8) {
        proposals.extend(cordon(config, risk, workload));
    }
    proposals
}

fn cordon(config: &Config, risk: &Risk, workload: &Workload) -> Option<Proposal> {
    let schedulable = workload.nodes.iter().filter(|node| node.schedulable).count();
    if schedulable <= 1 {
        return None; // never the last schedulable node: its pods would have nowhere to go
    }
    let worst = workload.nodes.iter().filter(|node| node.schedulable && trouble(config, node).is_some()).max_by(|a, b| heat(a).total_cmp(&heat(b)));
    if let Some(worst) = worst {
        return Some(Proposal {
            action: Action::CordonNode(worst.name.clone()),
            reason: format!("cordon {}: {}; {}", worst.name, trouble(config, worst)?, risk.reason),
        });
    }
    let heading = heading(risk, workload).filter(|node| node.schedulable)?;
    Some(Proposal {
        action: Action::CordonNode(heading.name.clone()),
        reason: format!("cordon {} ahead of its alarm: the hottest node, at {:.1} C now; {}", heading.name, heading.temperature_celsius.unwrap_or_default(), risk.reason),
    })
}

/// The node a predicted temperature breach is about: the hottest node with a temperature
/// (cordoned or not), when the risk predicts a breach.
fn heading<'w>(risk: &Risk, workload: &'w Workload) -> Option<&'w Node> {
    risk.seconds_to_breach?;
    workload.nodes.iter().filter(|node| node.temperature_celsius.is_some_and(f64::is_finite)).max_by(|a, b| a.temperature_celsius.unwrap_or_default().total_cmp(&b.temperature_celsius.unwrap_or_default()))
}

fn heat(node: &Node) -> f64 {
    node.temperature_celsius.unwrap_or(0.0) + 1000.0 * node.pressure.len() as f64
}

fn trouble(config: &Config, node: &Node) -> Option<String> {
    if !node.pressure.is_empty() {
        return Some(node.pressure.join(", "));
    }
    match node.temperature_celsius {
        Some(t) if t > config.max_celsius => Some(format!("{t:.1} C above {:.1} C", config.max_celsius)),
        _ => None,
    }
}

augur_plugin_sdk::remediation_plugin!(Config, plan);

#[cfg(test)]
mod tests {
    use super::*;
    use augur::plugin::types::Target;

    fn node(name: &str, temperature: f64, schedulable: bool, by_augur: bool, healthy_seconds: u64) -> Node {
        Node {
            name: name.into(),
            ready: true,
            schedulable,
            cordoned_by_augur: by_augur,
            temperature_celsius: Some(temperature),
            pressure: vec![],
            healthy_seconds,
        }
    }

    fn workload(nodes: Vec<Node>) -> Workload {
        Workload {
            target: Target { kind: "Deployment".into(), namespace: "default".into(), name: "nginx".into() },
            replicas: 2,
            ready_replicas: 2,
            pods: vec![],
            nodes,
        }
    }

    fn risk(level: Level) -> Risk {
        Risk { level, score: 0.9, seconds_to_breach: Some(60), required_replicas: None, reason: "node hot".into() }
    }

    #[test]
    fn cordons_the_hottest_node() {
        let config = Config::read(|_| None).0;
        let w = workload(vec![node("a", 70.0, true, false, 0), node("b", 91.0, true, false, 0), node("c", 88.0, true, false, 0)]);
        let proposals = plan(&config, &risk(Level::High), Level::High, &w);
        assert_eq!(proposals.len(), 1);
        assert!(matches!(&proposals[0].action, Action::CordonNode(n) if n == "b"));
    }

    /// A breach predicted for the hottest node: it is cordoned before it reaches the alarm,
    /// and not uncordoned while the breach is still predicted; once it is not, it is.
    #[test]
    fn cordons_the_node_heading_for_the_alarm_and_keeps_it_while_predicted() {
        let config = Config::read(|k| (k == "healthy-for-seconds").then(|| "0".to_string())).0;
        let w = workload(vec![node("a", 70.0, true, false, 0), node("b", 80.0, true, false, 0)]);
        let proposals = plan(&config, &risk(Level::High), Level::High, &w);
        assert!(matches!(&proposals[..], [p] if matches!(&p.action, Action::CordonNode(n) if n == "b")), "{:?}", proposals.iter().map(|p| &p.reason).collect::<Vec<_>>());
        assert!(proposals[0].reason.contains("ahead of its alarm"), "{}", proposals[0].reason);

        let cordoned = workload(vec![node("a", 70.0, true, false, 0), node("b", 82.0, false, true, 100)]);
        assert!(plan(&config, &risk(Level::High), Level::High, &cordoned).is_empty(), "kept cordoned, and no second node cordoned");
        let cooled = Risk { level: Level::None, seconds_to_breach: None, ..risk(Level::None) };
        let proposals = plan(&config, &cooled, Level::High, &cordoned);
        assert!(matches!(&proposals[..], [p] if matches!(&p.action, Action::UncordonNode(n) if n == "b")));
    }

    #[test]
    fn pressure_counts_as_trouble() {
        let config = Config::read(|_| None).0;
        let mut pressured = node("a", 60.0, true, false, 0);
        pressured.pressure = vec!["MemoryPressure".into()];
        let w = workload(vec![pressured, node("b", 60.0, true, false, 0)]);
        let proposals = plan(&config, &risk(Level::High), Level::High, &w);
        assert!(matches!(&proposals[0].action, Action::CordonNode(n) if n == "a"));
        assert!(proposals[0].reason.contains("MemoryPressure"));
    }

    #[test]
    fn uncordons_only_its_own_recovered_nodes_at_any_level() {
        let config = Config::read(|_| None).0;
        let w = workload(vec![
            node("mine-recovered", 60.0, false, true, 900),
            node("mine-recent", 60.0, false, true, 100),
            node("operators", 60.0, false, false, 9000),
            node("d", 60.0, true, false, 9000),
        ]);
        let proposals = plan(&config, &risk(Level::None), Level::High, &w);
        assert_eq!(proposals.len(), 1);
        assert!(matches!(&proposals[0].action, Action::UncordonNode(n) if n == "mine-recovered"));
    }

    /// A node cordoned for MemoryPressure stays cordoned while the pressure lasts, however long
    /// it has been Ready, and is not cordoned again on the next tick (no flapping).
    #[test]
    fn never_uncordons_while_the_cause_persists() {
        let config = Config::read(|_| None).0;
        let mut pressured = node("pressured", 60.0, false, true, 9000);
        pressured.pressure = vec!["MemoryPressure".into()];
        let hot = node("hot", 95.0, false, true, 9000);
        let w = workload(vec![pressured.clone(), hot, node("b", 60.0, true, false, 0), node("c", 60.0, true, false, 0)]);
        for level in [Level::None, Level::High, Level::Critical] {
            let proposals = plan(&config, &risk(level), Level::High, &w);
            assert!(proposals.iter().all(|p| !matches!(p.action, Action::UncordonNode(_))), "{level:?}: {:?}", proposals.iter().map(|p| &p.reason).collect::<Vec<_>>());
        }
        pressured.pressure.clear();
        let recovered = workload(vec![pressured, node("b", 60.0, true, false, 0)]);
        let proposals = plan(&config, &risk(Level::None), Level::High, &recovered);
        assert!(matches!(&proposals[..], [p] if matches!(&p.action, Action::UncordonNode(n) if n == "pressured")));
    }

    #[test]
    fn never_the_last_schedulable_node() {
        let config = Config::read(|_| None).0;
        let w = workload(vec![node("a", 95.0, true, false, 0), node("b", 60.0, false, false, 0)]);
        assert!(plan(&config, &risk(Level::Critical), Level::High, &w).is_empty());
    }

    #[test]
    fn below_the_trigger_no_cordon() {
        let config = Config::read(|_| None).0;
        let w = workload(vec![node("a", 95.0, true, false, 0), node("b", 60.0, true, false, 0)]);
        assert!(plan(&config, &risk(Level::Medium), Level::High, &w).is_empty());
    }
}
