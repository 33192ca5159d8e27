//! The metrics-server source: the resource metrics API (`metrics.k8s.io/v1beta1`), as the
//! prototype's older monitor used it. It serves the pods' CPU and working-set memory, which a
//! policy reads with `source: { kind: metrics-server }` and `resource: cpu|memory` per metric
//! (summed over the target's pods), and which the workload source uses for per-pod usage.

use crate::config::{Resource, Policy, parse_quantity};
use crate::metrics::{MetricSource, Observation, SourceError};
use async_trait::async_trait;
use kube::api::{ApiResource, DynamicObject, ListParams};
use kube::{Api, Client};
use std::collections::BTreeMap;

const SOURCE: &str = "metrics-server";

/// One pod's usage: CPU cores and working-set bytes, summed over its containers.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Usage {
    pub cpu_cores: f64,
    pub memory_bytes: f64,
}

/// Reads metrics.k8s.io through the API server.
#[derive(Clone)]
pub struct MetricsServerSource {
    client: Client,
}

impl MetricsServerSource {
    pub fn new(client: Client) -> Self {
        Self { client }
    }

    /// The usage of each pod matching `selector` in `namespace`, by pod name.
    pub async fn pod_usage(&self, namespace: &str, selector: &str) -> Result<BTreeMap<String, Usage>, kube::Error> {
        let resource = ApiResource {
            group: "metrics.k8s.io".into(),
            version: "v1beta1".into(),
            api_version: "metrics.k8s.io/v1beta1".into(),
            kind: "PodMetrics".into(),
            plural: "pods".into(),
        };
        let api: Api<DynamicObject> = Api::namespaced_with(self.client.clone(), namespace, &resource);
        let list = api.list(&ListParams::default().labels(selector)).await?;
        Ok(list.items.into_iter().filter_map(|pod| Some((pod.metadata.name.clone()?, usage_of(&pod.data)))).collect())
    }
}

/// Sums a PodMetrics' containers; a quantity that does not parse counts as absent.
fn usage_of(data: &serde_json::Value) -> Usage {
    let mut usage = Usage::default();
    for container in data["containers"].as_array().into_iter().flatten() {
        usage.cpu_cores += container["usage"]["cpu"].as_str().and_then(parse_quantity).unwrap_or(0.0);
        usage.memory_bytes += container["usage"]["memory"].as_str().and_then(parse_quantity).unwrap_or(0.0);
    }
    usage
}

#[async_trait]
impl MetricSource for MetricsServerSource {
    async fn collect(&self, policy: &Policy) -> Result<Observation, SourceError> {
        let pods = self.pod_usage(&policy.target.namespace, &policy.selector).await.map_err(|e| {
            let reason = match super::status(&e) {
                Some(404 | 503) => format!("the metrics.k8s.io API is not served ({e}); fix: install metrics-server, or use `source: {{ kind: prometheus }}`"),
                _ => e.to_string(),
            };
            SourceError::Failed { source_name: SOURCE, reason }
        })?;
        let mut observation = Observation::default();
        if pods.is_empty() {
            // No pod reported yet (just started, or metrics-server's first scrape): no data.
            return Ok(observation);
        }
        for metric in &policy.metrics {
            let value = match metric.resource {
                Some(Resource::Cpu) => pods.values().map(|u| u.cpu_cores).sum(),
                Some(Resource::Memory) => pods.values().map(|u| u.memory_bytes).sum(),
                Some(Resource::NodeTemperature) | None => continue,
            };
            observation.values.insert(metric.name.clone(), value);
        }
        Ok(observation)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn containers_are_summed() {
        let data = serde_json::json!({ "containers": [
            { "name": "web", "usage": { "cpu": "250m", "memory": "100Mi" } },
            { "name": "sidecar", "usage": { "cpu": "50m", "memory": "28Mi" } },
        ] });
        let usage = usage_of(&data);
        assert!((usage.cpu_cores - 0.3).abs() < 1e-12);
        assert_eq!(usage.memory_bytes, 128.0 * 1024.0 * 1024.0);
    }
}
