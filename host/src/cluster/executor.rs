//! Carries out guarded actions on a real cluster.

use super::{CORDONED_BY, MANAGER, status, with_retries};
use crate::domain::{Action, Target};
use crate::remediation::{ExecuteError, Executor};
use async_trait::async_trait;
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{Node, ObjectReference, Pod};
use k8s_openapi::jiff::Timestamp;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams, Preconditions};
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::{Api, Client, Resource};
use serde_json::json;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

/// Runs between the read and the write of an optimistic update (see [`KubeExecutor::before_write`]).
pub type WriteHook = Arc<dyn Fn() -> Pin<Box<dyn Future<Output = ()> + Send>> + Send + Sync>;

/// The executor for a real cluster.
pub struct KubeExecutor {
    client: Client,
    /// This replica's name in the Events (`reportingInstance`).
    instance: String,
    before_write: Option<WriteHook>,
}

impl KubeExecutor {
    /// `instance` names this Augur replica in the Events it publishes (its pod name in a cluster).
    pub fn new(client: Client, instance: &str) -> Self {
        Self { instance: instance.to_string(), client, before_write: None }
    }

    /// For tests: `hook` runs after a scale has been read and before it is written back, so a
    /// test can change the object in between and make the real API server answer 409 Conflict.
    #[doc(hidden)]
    pub fn before_write(mut self, hook: WriteHook) -> Self {
        self.before_write = Some(hook);
        self
    }

    fn params(dry_run: bool) -> PatchParams {
        let mut params = PatchParams { field_manager: Some(MANAGER.into()), ..Default::default() };
        params.dry_run = dry_run;
        params
    }

    async fn scale(&self, target: &Target, replicas: u32, dry_run: bool) -> Result<String, ExecuteError> {
        let (before, after) = match target.kind.as_str() {
            "Deployment" => self.scale_api(Api::<Deployment>::namespaced(self.client.clone(), &target.namespace), target, replicas, dry_run).await?,
            "StatefulSet" => self.scale_api(Api::<StatefulSet>::namespaced(self.client.clone(), &target.namespace), target, replicas, dry_run).await?,
            other => return Err(ExecuteError::Refused(format!("{other} cannot be scaled by Augur"))),
        };
        let verb = if dry_run { "would scale" } else { "scaled" };
        Ok(format!("{verb} {before} -> {after}"))
    }

    async fn restart_pod(&self, target: &Target, pod: &str, dry_run: bool) -> Result<String, ExecuteError> {
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), &target.namespace);
        let found = pods.get_opt(pod).await.map_err(failed)?.ok_or_else(|| ExecuteError::Refused(format!("pod {}/{pod} does not exist", target.namespace)))?;
        // Delete exactly the pod that was assessed: a retry after a lost response finds it gone
        // (404) or replaced under a new UID (409), and deletes nothing else.
        let mut params = DeleteParams { preconditions: found.metadata.uid.clone().map(|uid| Preconditions { uid: Some(uid), resource_version: None }), ..Default::default() };
        params.dry_run = dry_run;
        let result = with_retries(&format!("delete pod {pod}"), || pods.delete(pod, &params)).await;
        match result {
            Ok(_) => Ok(if dry_run { format!("would delete pod {pod}") } else { format!("deleted pod {pod}; its controller starts a replacement") }),
            Err(e) if !dry_run && matches!(status(&e), Some(404 | 409)) => Ok(format!("pod {pod} was already gone")),
            Err(e) => Err(failed(e)),
        }
    }

    /// Sets the replica count through the scale subresource as an optimistic update: read the
    /// scale with its resourceVersion, write it back with the new count. If anything changed
    /// the workload in between, the API server answers 409 Conflict and the whole read-write
    /// is retried; the count is absolute, so a retry never scales twice.
    async fn scale_api<K>(&self, api: Api<K>, target: &Target, replicas: u32, dry_run: bool) -> Result<(i32, i32), ExecuteError>
    where
        K: Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
    {
        let params = PostParams { dry_run, field_manager: Some(MANAGER.into()) };
        let what = format!("scale {target}");
        let replicas = i32::try_from(replicas).map_err(|_| ExecuteError::Refused(format!("{replicas} replicas is more than Kubernetes can hold (an int32)")))?;
        let result = with_retries(&what, || async {
            let mut scale = api.get_scale(&target.name).await?;
            let before = scale.spec.as_ref().and_then(|s| s.replicas).unwrap_or(0);
            if let Some(hook) = &self.before_write {
                hook().await;
            }
            scale.spec.get_or_insert_default().replicas = Some(replicas);
            let after = api.replace_scale(&target.name, &params, &scale).await?;
            Ok((before, after.spec.and_then(|s| s.replicas).unwrap_or(0)))
        })
        .await;
        result.map_err(|e| if status(&e) == Some(404) { ExecuteError::Refused(format!("{what}: not found")) } else { failed(e) })
    }

    /// `kubectl rollout restart`: stamps the pod template with the time, so the Deployment's
    /// controller replaces every pod under its rollout strategy. The stamp is chosen once, so
    /// a retry writes the same template and starts no second rollout.
    async fn rollout_restart(&self, target: &Target, dry_run: bool) -> Result<String, ExecuteError> {
        let stamp = Timestamp::now().to_string();
        let patch = Patch::Merge(json!({ "spec": { "template": { "metadata": { "annotations": { RESTARTED_AT: stamp } } } } }));
        let params = Self::params(dry_run);
        let what = format!("rollout restart {target}");
        match target.kind.as_str() {
            "Deployment" => {
                let api = Api::<Deployment>::namespaced(self.client.clone(), &target.namespace);
                with_retries(&what, || api.patch(&target.name, &params, &patch)).await.map_err(failed)?;
            }
            "StatefulSet" => {
                let api = Api::<StatefulSet>::namespaced(self.client.clone(), &target.namespace);
                with_retries(&what, || api.patch(&target.name, &params, &patch)).await.map_err(failed)?;
            }
            other => return Err(ExecuteError::Refused(format!("{other} cannot be rollout-restarted by Augur"))),
        }
        Ok(if dry_run { format!("would restart every pod of {target}") } else { format!("restarting every pod of {target} (restartedAt {stamp})") })
    }

    async fn set_unschedulable(&self, node: &str, cordon: bool, dry_run: bool) -> Result<String, ExecuteError> {
        let nodes: Api<Node> = Api::all(self.client.clone());
        let current = nodes.get_opt(node).await.map_err(failed)?.ok_or_else(|| ExecuteError::Refused(format!("node {node} does not exist")))?;
        let ours = current.metadata.annotations.as_ref().is_some_and(|a| a.get(CORDONED_BY).is_some_and(|v| v == MANAGER));
        if !cordon && !ours {
            return Err(ExecuteError::Refused(format!("node {node} was not cordoned by Augur; it uncordons only its own cordons")));
        }
        let annotation = if cordon { json!(MANAGER) } else { serde_json::Value::Null };
        let patch = Patch::Merge(json!({ "metadata": { "annotations": { CORDONED_BY: annotation } }, "spec": { "unschedulable": cordon } }));
        let params = Self::params(dry_run);
        with_retries(&format!("patch node {node}"), || nodes.patch(node, &params, &patch)).await.map_err(failed)?;
        let verb = match (cordon, dry_run) {
            (true, false) => "cordoned",
            (true, true) => "would cordon",
            (false, false) => "uncordoned",
            (false, true) => "would uncordon",
        };
        Ok(format!("{verb} {node}"))
    }

    /// Publishes an Event on the action's object: the workload, or the node.
    async fn publish(&self, target: &Target, action: &Action, dry_run: bool, reason: &str, result: &str) {
        let (kind_reason, object) = match action {
            Action::Scale { .. } => ("Scaled", workload_ref(target)),
            Action::RestartPod { .. } => ("RestartedPod", workload_ref(target)),
            Action::RolloutRestart => ("RolloutRestarted", workload_ref(target)),
            Action::CordonNode { node } => ("CordonedNode", node_ref(node)),
            Action::UncordonNode { node } => ("UncordonedNode", node_ref(node)),
        };
        let event_reason = if dry_run { format!("DryRun{kind_reason}") } else { kind_reason.to_string() };
        let mut note = format!("{result}: {reason}");
        note.truncate(1000);
        // One Event per action, each with its own note. (kube's `Recorder` folds repeats of a
        // reason on an object into a series that keeps the first note, which would lose the
        // reasons of every later action.)
        let now = Timestamp::now();
        let namespace = object.namespace.clone().unwrap_or_else(|| "default".into());
        let name = format!("{}.augur-{:x}", object.name.as_deref().unwrap_or("object"), now.as_nanosecond());
        let event = Event {
            metadata: kube::api::ObjectMeta { name: Some(name), namespace: Some(namespace.clone()), ..Default::default() },
            event_time: Some(MicroTime(now)),
            type_: Some("Normal".into()),
            reason: Some(event_reason),
            action: Some(kind_reason.into()),
            note: Some(note),
            regarding: Some(object),
            reporting_controller: Some(MANAGER.into()),
            reporting_instance: Some(self.instance.clone()),
            ..Default::default()
        };
        let events: Api<Event> = Api::namespaced(self.client.clone(), &namespace);
        if let Err(e) = events.create(&PostParams::default(), &event).await {
            tracing::warn!("cannot publish the Event for {target}: {e}");
        }
    }
}

/// The pod-template annotation `kubectl rollout restart` sets.
const RESTARTED_AT: &str = "kubectl.kubernetes.io/restartedAt";

fn failed(e: kube::Error) -> ExecuteError {
    match status(&e) {
        Some(403) => ExecuteError::Refused(format!("forbidden by RBAC: {e}")),
        Some(404) => ExecuteError::Refused(format!("not found: {e}")),
        _ => ExecuteError::Failed(e.to_string()),
    }
}

fn workload_ref(target: &Target) -> ObjectReference {
    ObjectReference { api_version: Some("apps/v1".into()), kind: Some(target.kind.clone()), name: Some(target.name.clone()), namespace: Some(target.namespace.clone()), ..Default::default() }
}

fn node_ref(node: &str) -> ObjectReference {
    ObjectReference { api_version: Some("v1".into()), kind: Some("Node".into()), name: Some(node.into()), ..Default::default() }
}

#[async_trait]
impl Executor for KubeExecutor {
    async fn execute(&self, target: &Target, action: &Action, dry_run: bool, reason: &str) -> Result<String, ExecuteError> {
        let result = match action {
            Action::Scale { replicas } => self.scale(target, *replicas, dry_run).await,
            Action::RestartPod { pod } => self.restart_pod(target, pod, dry_run).await,
            Action::RolloutRestart => self.rollout_restart(target, dry_run).await,
            Action::CordonNode { node } => self.set_unschedulable(node, true, dry_run).await,
            Action::UncordonNode { node } => self.set_unschedulable(node, false, dry_run).await,
        }?;
        self.publish(target, action, dry_run, reason, &result).await;
        Ok(result)
    }
}
