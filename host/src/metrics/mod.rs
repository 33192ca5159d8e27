//! Where observations come from: the current value of each metric of a policy
//! (`MetricSource`) and the state of the target workload (`WorkloadSource`). The built-in
//! simulator implements both; Prometheus and the Kubernetes API plug in behind the same traits.
//!
//! Sources only read; they never act on the cluster.

pub mod batch;
mod history;
mod prometheus;

pub use history::History;
pub use prometheus::PrometheusSource;

use crate::config::Policy;
use crate::domain::Workload;
use async_trait::async_trait;
use std::collections::BTreeMap;
use std::time::SystemTime;

/// The values of a policy's metrics at one instant, by metric name. A metric the source could
/// not provide is absent, never NaN.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Observation {
    pub values: BTreeMap<String, f64>,
    /// How old each metric's data is, in seconds, where the source knows.
    pub ages: BTreeMap<String, f64>,
    /// Each pod's or node's value of a metric, where the source reads it per object (by the
    /// pod's or node's name, as the metric's `resource` says).
    pub parts: BTreeMap<String, BTreeMap<String, f64>>,
}

impl Observation {
    /// Gives the workload's pods and nodes the values of the metrics that are a `resource`:
    /// each pod's `cpu` cores or `memory` bytes (the restart plugin finds the heaviest pod by
    /// them), each node's `node-temperature` (the cordon plugin finds the hottest node by it).
    /// The metric's value becomes the sum over the workload's own pods, or the hottest of the
    /// cluster's nodes: series of objects that are gone (cAdvisor reports a deleted pod's cgroup
    /// for a while after it is removed) must not count, or a risk raised by a pod already
    /// restarted would restart its healthy successors. Where none of the objects has a value
    /// yet (or the source gave no total), the source's word stands.
    pub fn fill_workload(&mut self, policy: &Policy, workload: &mut crate::domain::Workload) {
        use crate::config::Resource;
        for metric in &policy.metrics {
            let (Some(resource), Some(values)) = (metric.resource, self.parts.get(&metric.name)) else { continue };
            let mut own: Option<f64> = None;
            match resource {
                Resource::Cpu | Resource::Memory => {
                    for pod in &mut workload.pods {
                        if let Some(value) = values.get(&pod.name) {
                            *own.get_or_insert(0.0) += value;
                            match resource {
                                Resource::Cpu => pod.cpu_cores = Some(*value),
                                _ => pod.memory_bytes = Some(*value),
                            }
                        }
                    }
                }
                Resource::NodeTemperature => {
                    for node in &mut workload.nodes {
                        if let Some(value) = values.get(&node.name) {
                            own = Some(own.map_or(*value, |o| o.max(*value)));
                            node.temperature_celsius = Some(*value);
                        }
                    }
                }
            }
            if let (Some(own), Some(total)) = (own, self.values.get_mut(&metric.name)) {
                *total = own;
            }
        }
    }
}

/// Why a source gave nothing this tick.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("{target} is not known to the {source_name} source")]
    UnknownTarget { source_name: &'static str, target: String },
    #[error("the {source_name} source failed: {reason}")]
    Failed { source_name: &'static str, reason: String },
    /// The data is too old to act on.
    #[error("stale data from the {source_name} source: {reason}")]
    Stale { source_name: &'static str, reason: String },
}

/// How many policies a source collects at once by default: each waits on its store, not on
/// the CPU.
pub const COLLECTING_AT_ONCE: usize = 16;

/// Reads the current value of a policy's metrics.
#[async_trait]
pub trait MetricSource: Send + Sync {
    async fn collect(&self, policy: &Policy) -> Result<Observation, SourceError>;

    /// The observations of many policies at once, in their order. A source that can read
    /// them together (one query per shape, not per policy) overrides this; by default each
    /// policy is collected on its own, a few at once.
    async fn collect_all(&self, policies: &[&Policy]) -> Vec<Result<Observation, SourceError>> {
        use futures::StreamExt;
        let mut reads = Vec::with_capacity(policies.len());
        for policy in policies {
            reads.push(self.collect(policy));
        }
        futures::stream::iter(reads).buffered(COLLECTING_AT_ONCE).collect().await
    }

    /// Up to `points` past values of each metric, one per forecast step, oldest first,
    /// ending at `end`: the warm start. A source without history returns nothing.
    async fn backfill(&self, _policy: &Policy, _points: usize, _end: SystemTime) -> Result<BTreeMap<String, Vec<f64>>, SourceError> {
        Ok(BTreeMap::new())
    }

    /// The warm start of many policies at once (each with its points and end), in their
    /// order. A source that can read them together overrides this; by default each policy's
    /// past is read in turn.
    async fn backfill_all(&self, asks: &[(&Policy, usize, SystemTime)]) -> Vec<Result<BTreeMap<String, Vec<f64>>, SourceError>> {
        let mut filled = Vec::with_capacity(asks.len());
        for (policy, points, end) in asks {
            filled.push(self.backfill(policy, *points, *end).await);
        }
        filled
    }
}

/// Reads the state of a policy's target workload: replicas, pods, nodes.
#[async_trait]
pub trait WorkloadSource: Send + Sync {
    async fn workload(&self, policy: &Policy) -> Result<Workload, SourceError>;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{Pod, Target, Workload};

    fn pod(name: &str) -> Pod {
        Pod { name: name.into(), node: "n".into(), phase: "Running".into(), ready: true, cpu_cores: None, memory_bytes: None, age_seconds: 60, startup_seconds: Some(1) }
    }

    #[test]
    fn a_gone_pods_series_leaves_the_total_and_the_pods() {
        let text = "name: p\ntarget: { kind: Deployment, namespace: d, name: w }\nmetrics: [{ name: memory, query: 'sum by (pod) (m)', resource: memory, unit: bytes }]\nforecast: { baseline: last-value }\nrisks: []\nremediations: []\nguard: { min_replicas: 1, max_replicas: 5 }\naudit: { path: a.jsonl }\n";
        let policy = crate::config::parse(text, std::path::Path::new("p.yaml"), &crate::config::Catalog::default()).unwrap();
        let per_pod = BTreeMap::from([("w-gone".to_string(), 48.0), ("w-a".to_string(), 1.0), ("w-b".to_string(), 2.0)]);
        let mut observation = Observation { values: BTreeMap::from([("memory".to_string(), 51.0)]), parts: BTreeMap::from([("memory".to_string(), per_pod)]), ..Observation::default() };
        let mut workload = Workload { target: Target { kind: "Deployment".into(), namespace: "d".into(), name: "w".into() }, replicas: 2, ready_replicas: 2, pods: vec![pod("w-a"), pod("w-b")], nodes: Vec::new(), paused: None, scaled_by: None };
        observation.fill_workload(&policy, &mut workload);
        assert_eq!(observation.values["memory"], 3.0, "only the live pods count");
        assert_eq!(workload.pods[1].memory_bytes, Some(2.0));

        // Before any live pod has a series, the source's total stands.
        let mut fresh = Observation { values: BTreeMap::from([("memory".to_string(), 51.0)]), parts: BTreeMap::from([("memory".to_string(), BTreeMap::from([("w-gone".to_string(), 51.0)]))]), ..Observation::default() };
        fresh.fill_workload(&policy, &mut workload);
        assert_eq!(fresh.values["memory"], 51.0);
    }

    #[test]
    fn node_temperatures_go_to_their_nodes_and_the_hottest_counts() {
        let text = "name: p\ntarget: { kind: Deployment, namespace: d, name: w }\nmetrics: [{ name: heat, query: 'max by (node) (t)', resource: node-temperature, unit: celsius }]\nforecast: { baseline: last-value }\nrisks: []\nremediations: []\nguard: { min_replicas: 1, max_replicas: 5 }\naudit: { path: a.jsonl }\n";
        let policy = crate::config::parse(text, std::path::Path::new("p.yaml"), &crate::config::Catalog::default()).unwrap();
        let node = |name: &str| crate::domain::Node { name: name.into(), ready: true, schedulable: true, cordoned_by_augur: false, temperature_celsius: None, pressure: Vec::new(), healthy_seconds: 0 };
        let by_node = BTreeMap::from([("gone".to_string(), 99.0), ("a".to_string(), 70.0), ("b".to_string(), 88.0)]);
        let mut observation = Observation { values: BTreeMap::from([("heat".to_string(), 99.0)]), parts: BTreeMap::from([("heat".to_string(), by_node)]), ..Observation::default() };
        let mut workload = Workload { target: Target { kind: "Deployment".into(), namespace: "d".into(), name: "w".into() }, replicas: 2, ready_replicas: 2, pods: vec![pod("w-a")], nodes: vec![node("a"), node("b"), node("c")], paused: None, scaled_by: None };
        observation.fill_workload(&policy, &mut workload);
        assert_eq!(observation.values["heat"], 88.0, "the hottest of the cluster's own nodes");
        let temperatures: Vec<Option<f64>> = workload.nodes.iter().map(|n| n.temperature_celsius).collect();
        assert_eq!(temperatures, [Some(70.0), Some(88.0), None]);
        assert_eq!(workload.pods[0].cpu_cores, None, "a node metric leaves the pods alone");
    }
}
