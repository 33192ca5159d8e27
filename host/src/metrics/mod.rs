//! Where observations come from: the current value of each metric of a policy
//! (`MetricSource`) and the state of the target workload (`WorkloadSource`). The built-in
//! simulator implements both; Prometheus and the Kubernetes API plug in behind the same traits.
//!
//! Sources only read; they never act on the cluster.

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
    /// Each pod's value of a metric, where the source reads it per pod (by pod name).
    pub per_pod: BTreeMap<String, BTreeMap<String, f64>>,
}

impl Observation {
    /// Gives the workload's pods the per-pod values of the metrics that are a pod `resource`
    /// (`cpu` cores, `memory` bytes): the restart plugin finds the heaviest pod by them.
    pub fn fill_pod_usage(&self, policy: &Policy, workload: &mut crate::domain::Workload) {
        for metric in &policy.metrics {
            let (Some(resource), Some(values)) = (metric.resource, self.per_pod.get(&metric.name)) else { continue };
            for pod in &mut workload.pods {
                if let Some(value) = values.get(&pod.name) {
                    match resource {
                        crate::config::PodResource::Cpu => pod.cpu_cores = Some(*value),
                        crate::config::PodResource::Memory => pod.memory_bytes = Some(*value),
                    }
                }
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

/// Reads the current value of a policy's metrics.
#[async_trait]
pub trait MetricSource: Send + Sync {
    async fn collect(&self, policy: &Policy) -> Result<Observation, SourceError>;

    /// Up to `points` past values of each metric, one per forecast step, oldest first,
    /// ending at `end`: the warm start. A source without history returns nothing.
    async fn backfill(&self, _policy: &Policy, _points: usize, _end: SystemTime) -> Result<BTreeMap<String, Vec<f64>>, SourceError> {
        Ok(BTreeMap::new())
    }
}

/// Reads the state of a policy's target workload: replicas, pods, nodes.
#[async_trait]
pub trait WorkloadSource: Send + Sync {
    async fn workload(&self, policy: &Policy) -> Result<Workload, SourceError>;
}
