//! Carries out guarded actions on a real cluster.

use super::{CORDONED_BY, MANAGER, status, with_retries};
use crate::domain::{Action, Target};
use crate::remediation::{ExecuteError, Executor};
use async_trait::async_trait;
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{Node, ObjectReference, Pod};
use kube::api::{DeleteParams, Patch, PatchParams, Preconditions};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::{Api, Client, Resource};
use serde_json::json;

/// The executor for a real cluster.
pub struct KubeExecutor {
    client: Client,
    recorder: Recorder,
}

impl KubeExecutor {
    /// `instance` names this Augur replica in the Events it publishes (its pod name in a cluster).
    pub fn new(client: Client, instance: &str) -> Self {
        let reporter = Reporter { controller: MANAGER.into(), instance: Some(instance.to_string()) };
        Self { recorder: Recorder::new(client.clone(), reporter), client }
    }

    fn params(dry_run: bool) -> PatchParams {
        let mut params = PatchParams { field_manager: Some(MANAGER.into()), ..Default::default() };
        params.dry_run = dry_run;
        params
    }

    async fn scale(&self, target: &Target, replicas: u32, dry_run: bool) -> Result<String, ExecuteError> {
        let patch = Patch::Merge(json!({ "spec": { "replicas": replicas } }));
        let params = Self::params(dry_run);
        let what = format!("scale {target}");
        let (before, after) = match target.kind.as_str() {
            "Deployment" => scale_api(Api::<Deployment>::namespaced(self.client.clone(), &target.namespace), &target.name, &patch, &params, &what).await?,
            "StatefulSet" => scale_api(Api::<StatefulSet>::namespaced(self.client.clone(), &target.namespace), &target.name, &patch, &params, &what).await?,
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
            Action::CordonNode { node } => ("CordonedNode", node_ref(node)),
            Action::UncordonNode { node } => ("UncordonedNode", node_ref(node)),
        };
        let event_reason = if dry_run { format!("DryRun{kind_reason}") } else { kind_reason.to_string() };
        let mut note = format!("{result}: {reason}");
        note.truncate(1000);
        let event = Event { type_: EventType::Normal, reason: event_reason, note: Some(note), action: kind_reason.into(), secondary: None };
        if let Err(e) = self.recorder.publish(&event, &object).await {
            tracing::warn!("cannot publish the Event for {target}: {e}");
        }
    }
}

async fn scale_api<K>(api: Api<K>, name: &str, patch: &Patch<serde_json::Value>, params: &PatchParams, what: &str) -> Result<(i32, i32), ExecuteError>
where
    K: Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let before = api.get_scale(name).await.map_err(|e| if status(&e) == Some(404) { ExecuteError::Refused(format!("{what}: not found")) } else { failed(e) })?;
    let before = before.spec.and_then(|s| s.replicas).unwrap_or(0);
    let after = with_retries(what, || api.patch_scale(name, params, patch)).await.map_err(failed)?;
    Ok((before, after.spec.and_then(|s| s.replicas).unwrap_or(0)))
}

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
            Action::CordonNode { node } => self.set_unschedulable(node, true, dry_run).await,
            Action::UncordonNode { node } => self.set_unschedulable(node, false, dry_run).await,
        }?;
        self.publish(target, action, dry_run, reason, &result).await;
        Ok(result)
    }
}
