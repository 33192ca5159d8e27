//! Reads a policy's target from the API: replicas, the HPA that scales it (if one does), its
//! pods (by the policy's selector) with their node and phase, and the nodes with their
//! conditions and schedulability. Per-pod CPU
//! and memory come from metrics-server when the cluster serves metrics.k8s.io.

use super::leader::Fence;
use super::metrics_server::MetricsServerSource;
use super::{CORDONED_BY, MANAGER};
use crate::config::Policy;
use crate::domain::{Node, Pod, Workload};
use crate::metrics::{SourceError, WorkloadSource};
use async_trait::async_trait;
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::{Node as K8sNode, NodeCondition, Pod as K8sPod};
use k8s_openapi::jiff::Timestamp;
use kube::api::ListParams;
use kube::{Api, Client};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use super::metrics_server::Usage;

const SOURCE: &str = "kubernetes";

/// The workload source for a real cluster.
pub struct KubeWorkloads {
    client: Client,
    /// Open until the run ends (reads need no leadership).
    until: Fence,
    usage: MetricsServerSource,
    /// Set once metrics.k8s.io answered that it is not served; pods then carry no usage.
    no_usage: AtomicBool,
}

impl KubeWorkloads {
    pub fn new(client: Client) -> Self {
        Self { usage: MetricsServerSource::new(client.clone()), client, until: Fence::always(), no_usage: AtomicBool::new(false) }
    }

    /// The same source, its reads cut at `end` (the end of `host run --for`).
    pub fn ending(mut self, end: Option<tokio::time::Instant>) -> Self {
        self.until = Fence::always().ending(end);
        self
    }

    /// Each pod's usage from metrics-server, or nothing (said once) when it is not installed.
    async fn usage(&self, policy: &Policy) -> BTreeMap<String, Usage> {
        if self.no_usage.load(Ordering::Relaxed) {
            return BTreeMap::new();
        }
        match self.usage.pod_usage(&policy.target.namespace, &policy.selector).await {
            Ok(usage) => usage,
            Err(e) => {
                if matches!(super::status(&e), Some(404 | 503)) {
                    self.no_usage.store(true, Ordering::Relaxed);
                    tracing::info!("metrics.k8s.io is not served ({e}); pods carry no CPU or memory usage (the restart plugin needs it: install metrics-server)");
                } else {
                    tracing::warn!("cannot read pod usage from metrics.k8s.io: {e}");
                }
                BTreeMap::new()
            }
        }
    }
}

fn failed(e: impl std::fmt::Display) -> SourceError {
    SourceError::Failed { source_name: SOURCE, reason: e.to_string() }
}

#[async_trait]
impl WorkloadSource for KubeWorkloads {
    /// Each request has the client's deadline; the whole read also ends with the run
    /// (`ending`), so that a stalled API server cannot hold `host run` past its `--for`.
    async fn workload(&self, policy: &Policy) -> Result<Workload, SourceError> {
        let left = self.until.open().map_err(failed)?;
        match tokio::time::timeout(left, self.read(policy)).await {
            Ok(read) => read,
            Err(_) => Err(failed("the run ended while the workload was being read")),
        }
    }
}

impl KubeWorkloads {
    async fn read(&self, policy: &Policy) -> Result<Workload, SourceError> {
        let t = &policy.target;
        let unknown = || SourceError::UnknownTarget { source_name: SOURCE, target: t.to_string() };
        let (replicas, ready_replicas, paused) = match t.kind.as_str() {
            "Deployment" => {
                let d = Api::<Deployment>::namespaced(self.client.clone(), &t.namespace).get_opt(&t.name).await.map_err(failed)?.ok_or_else(unknown)?;
                let paused = paused(&d.metadata, t);
                (d.spec.and_then(|s| s.replicas).unwrap_or(1), d.status.and_then(|s| s.ready_replicas).unwrap_or(0), paused)
            }
            "StatefulSet" => {
                let s = Api::<StatefulSet>::namespaced(self.client.clone(), &t.namespace).get_opt(&t.name).await.map_err(failed)?.ok_or_else(unknown)?;
                let paused = paused(&s.metadata, t);
                (s.spec.and_then(|s| s.replicas).unwrap_or(1), s.status.and_then(|s| s.ready_replicas).unwrap_or(0), paused)
            }
            _ => return Err(unknown()),
        };
        let hpas = Api::<HorizontalPodAutoscaler>::namespaced(self.client.clone(), &t.namespace).list(&ListParams::default()).await.map_err(failed)?;
        let scaled_by = hpas.items.iter().find(|h| scales(h, t)).map(|h| h.metadata.name.clone().unwrap_or_default());
        let usage = self.usage(policy).await;
        let now = Timestamp::now();
        let pods = Api::<K8sPod>::namespaced(self.client.clone(), &t.namespace).list(&ListParams::default().labels(&policy.selector)).await.map_err(failed)?;
        let pods = pods
            .items
            .into_iter()
            .filter(|p| p.metadata.deletion_timestamp.is_none())
            .map(|p| {
                let status = p.status.unwrap_or_default();
                let ready_condition = status.conditions.iter().flatten().find(|c| c.type_ == "Ready" && c.status == "True");
                let ready = ready_condition.is_some();
                // Creation to Ready: the lead a new pod of this workload needs.
                let created = p.metadata.creation_timestamp.as_ref().map(|t| t.0);
                let startup_seconds = match (created, ready_condition.and_then(|c| c.last_transition_time.as_ref())) {
                    (Some(created), Some(ready_at)) => Some(seconds_between(created, ready_at.0)),
                    _ => None,
                };
                let started = status.start_time.map(|t| t.0).or(p.metadata.creation_timestamp.map(|t| t.0));
                let name = p.metadata.name.unwrap_or_default();
                let used = usage.get(&name);
                Pod {
                    node: p.spec.and_then(|s| s.node_name).unwrap_or_default(),
                    phase: status.phase.unwrap_or_else(|| "Unknown".into()),
                    ready,
                    cpu_cores: used.map(|u| u.cpu_cores),
                    memory_bytes: used.map(|u| u.memory_bytes),
                    name,
                    age_seconds: started.map_or(0, |s| seconds_between(s, now)),
                    startup_seconds,
                }
            })
            .collect();
        let nodes = Api::<K8sNode>::all(self.client.clone()).list(&ListParams::default()).await.map_err(failed)?;
        let nodes = nodes
            .items
            .into_iter()
            .map(|n| {
                let conditions = n.status.and_then(|s| s.conditions).unwrap_or_default();
                let ready = conditions.iter().any(|c| c.type_ == "Ready" && c.status == "True");
                let pressure = conditions.iter().filter(|c| c.type_.ends_with("Pressure") && c.status == "True").map(|c| c.type_.clone()).collect();
                let healthy_seconds = healthy_seconds(&conditions, now);
                Node {
                    schedulable: !n.spec.and_then(|s| s.unschedulable).unwrap_or(false),
                    cordoned_by_augur: n.metadata.annotations.as_ref().is_some_and(|a| a.get(CORDONED_BY).is_some_and(|v| v == MANAGER)),
                    name: n.metadata.name.unwrap_or_default(),
                    ready,
                    temperature_celsius: None,
                    pressure,
                    healthy_seconds,
                }
            })
            .collect();
        Ok(Workload { target: t.clone(), replicas: replicas.max(0) as u32, ready_replicas: ready_replicas.max(0) as u32, pods, nodes, paused, scaled_by })
    }
}

/// How long a node has been healthy on every count: Ready, and no pressure condition, since
/// the latest of their transitions (0 while any is unhealthy). Counting from Ready alone would
/// call a node healthy while its MemoryPressure persists, and uncordon it under that pressure.
fn healthy_seconds(conditions: &[NodeCondition], now: Timestamp) -> u64 {
    let counted = |c: &&NodeCondition| c.type_ == "Ready" || c.type_.ends_with("Pressure");
    let healthy = |c: &NodeCondition| if c.type_ == "Ready" { c.status == "True" } else { c.status != "True" };
    let mut since = None;
    for condition in conditions.iter().filter(counted) {
        if !healthy(condition) {
            return 0;
        }
        let Some(at) = condition.last_transition_time.as_ref() else { return 0 };
        since = Some(since.map_or(at.0, |s: Timestamp| s.max(at.0)));
    }
    since.map_or(0, |s| seconds_between(s, now))
}

fn seconds_between(from: Timestamp, to: Timestamp) -> u64 {
    (to.as_second() - from.as_second()).max(0) as u64
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    fn condition(kind: &str, status: &str, minutes_ago: i64, now: Timestamp) -> NodeCondition {
        let at = Timestamp::from_second(now.as_second() - minutes_ago * 60).unwrap();
        NodeCondition { type_: kind.into(), status: status.into(), last_transition_time: Some(Time(at)), ..Default::default() }
    }

    #[test]
    fn a_node_is_healthy_from_the_last_of_its_conditions_to_clear() {
        let now = Timestamp::from_second(1_000_000).unwrap();
        let ready_long = condition("Ready", "True", 60, now);
        let pressure_now = condition("MemoryPressure", "True", 5, now);
        assert_eq!(healthy_seconds(&[ready_long.clone(), pressure_now], now), 0, "ready, but under memory pressure: not healthy");
        let pressure_cleared = condition("MemoryPressure", "False", 3, now);
        assert_eq!(healthy_seconds(&[ready_long.clone(), pressure_cleared], now), 180, "healthy since the pressure cleared, not since Ready");
        assert_eq!(healthy_seconds(&[condition("Ready", "False", 60, now)], now), 0);
        assert_eq!(healthy_seconds(&[ready_long, condition("DiskPressure", "False", 90, now)], now), 3600);
        assert_eq!(healthy_seconds(&[], now), 0, "no conditions: nothing says it is healthy");
    }
}

/// Whether `hpa` scales `target` (its scaleTargetRef names it).
pub(super) fn scales(hpa: &HorizontalPodAutoscaler, target: &crate::domain::Target) -> bool {
    hpa.spec.as_ref().is_some_and(|s| s.scale_target_ref.kind == target.kind && s.scale_target_ref.name == target.name)
}

/// Why the target is paused, when its annotation `augur.io/paused` is `"true"`.
fn paused(meta: &kube::api::ObjectMeta, target: &crate::domain::Target) -> Option<String> {
    let on = meta.annotations.as_ref().and_then(|a| a.get(super::PAUSED)).is_some_and(|v| v.trim().eq_ignore_ascii_case("true"));
    on.then(|| format!("{target} has the annotation {}: \"true\" (remove it, or set it to \"false\", to resume)", super::PAUSED))
}
