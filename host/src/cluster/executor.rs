//! Carries out guarded actions on a real cluster.

use super::calls::{self, CallError};
use super::events::{EventType, Events, Note};
use super::leader::Fence;
use super::{CORDONED_BY, MANAGER, status};
use crate::domain::{Action, Target};
use crate::remediation::{ExecuteError, Executor, Order, Rejection};
use async_trait::async_trait;
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::{Node, ObjectReference, Pod};
use k8s_openapi::jiff::Timestamp;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams, Preconditions};
use kube::{Api, Client, Resource};
use serde_json::json;
use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// Runs between the read and the write of an optimistic update (see [`KubeExecutor::before_write`]).
pub type WriteHook = Arc<dyn Fn() -> Pin<Box<dyn Future<Output = ()> + Send>> + Send + Sync>;

/// The executor for a real cluster.
pub struct KubeExecutor {
    client: Client,
    /// The Events that explain each action, as this replica.
    events: Events,
    before_write: Option<WriteHook>,
    fence: Fence,
    /// Per (workload, Event reason): when the last `Rejected<Action>` Event was published, and
    /// how many have been left out since.
    rejections: std::sync::Mutex<std::collections::HashMap<(String, String), (std::time::Instant, u32)>>,
}

impl KubeExecutor {
    /// `instance` names this Augur replica in the Events it publishes (its pod name in a cluster).
    pub fn new(client: Client, instance: &str) -> Self {
        Self { events: Events::new(client.clone(), instance), client, before_write: None, fence: Fence::always(), rejections: Default::default() }
    }

    /// Every attempt of every write passes `fence` first (leadership, the run's end).
    pub fn fenced(mut self, fence: Fence) -> Self {
        self.fence = fence;
        self
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

    async fn scale(&self, order: &Order<'_>, replicas: u32) -> Result<String, ExecuteError> {
        let target = order.target;
        // Peace with an HPA: where one scales the target, Augur never writes spec.replicas
        // (the two would fight); it moves the HPA's floor instead (`hpa-floor`).
        if let Some(hpa) = self.hpa_of(target).await? {
            return self.move_hpa_floor(order, &hpa, replicas).await;
        }
        match target.kind.as_str() {
            "Deployment" => self.scale_api(Api::<Deployment>::namespaced(self.client.clone(), &target.namespace), order, replicas).await,
            "StatefulSet" => self.scale_api(Api::<StatefulSet>::namespaced(self.client.clone(), &target.namespace), order, replicas).await,
            other => Err(ExecuteError::Refused(format!("{other} cannot be scaled by Augur"))),
        }
    }

    async fn restart_pod(&self, order: &Order<'_>, pod: &str) -> Result<String, ExecuteError> {
        let (target, dry_run) = (order.target, order.dry_run);
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), &target.namespace);
        let pods = &pods;
        let found = calls::call(&format!("read pod {pod}"), &self.fence, |_| pods.get_opt(pod)).await.map_err(failed)?;
        let found = found.ok_or_else(|| ExecuteError::Refused(format!("pod {}/{pod} does not exist", target.namespace)))?;
        // Delete exactly the pod that was assessed: a retry after a lost answer finds it gone
        // (404) or replaced under a new UID (409), and deletes nothing else.
        let mut params = DeleteParams { preconditions: found.metadata.uid.clone().map(|uid| Preconditions { uid: Some(uid), resource_version: None }), ..Default::default() };
        params.dry_run = dry_run;
        let params = &params;
        let result = calls::call(&format!("delete pod {pod}"), &self.fence, |attempt| async move {
            match pods.delete(pod, params).await {
                Ok(_) => Ok(Deleted::Now),
                Err(e) if !dry_run && matches!(status(&e), Some(404 | 409)) => Ok(if attempt.after_lost_answer { Deleted::Earlier } else { Deleted::Already }),
                Err(e) => Err(e),
            }
        })
        .await;
        match result {
            Ok(_) if dry_run => Ok(format!("would delete pod {pod}")),
            Ok(Deleted::Now) => Ok(format!("deleted pod {pod}; its controller starts a replacement")),
            Ok(Deleted::Earlier) => Ok(format!("deleted pod {pod}; its controller starts a replacement (an answer was lost; read back: the pod is gone)")),
            Ok(Deleted::Already) => Ok(format!("pod {pod} was already gone")),
            Err(e) => {
                let uid = found.metadata.uid.as_ref();
                let gone = || async move { Ok(pods.get_opt(pod).await?.is_none_or(|now| now.metadata.uid.as_ref() != uid || now.metadata.deletion_timestamp.is_some())) };
                let landed = self.read_back(Err::<(), _>(e), dry_run, &format!("delete pod {pod}"), gone).await?;
                Ok(format!("deleted pod {pod}; its controller starts a replacement{landed}"))
            }
        }
    }

    /// Sets the replica count through the scale subresource as an optimistic update: read the
    /// scale with its resourceVersion, write it back with the new count. Every attempt re-reads
    /// and re-decides: if the count is no longer the one the decision saw (an operator changed
    /// it), nothing is written and the change made meanwhile wins; if a write's answer was lost
    /// and the count now is the one it wrote, it landed, and is recorded so.
    async fn scale_api<K>(&self, api: Api<K>, order: &Order<'_>, replicas: u32) -> Result<String, ExecuteError>
    where
        K: Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
    {
        let (target, dry_run) = (order.target, order.dry_run);
        let params = PostParams { dry_run, field_manager: Some(MANAGER.into()) };
        let what = format!("scale {target}");
        let wanted = i32::try_from(replicas).map_err(|_| ExecuteError::Refused(format!("{replicas} replicas is more than Kubernetes can hold (an int32)")))?;
        let seen = order.seen_replicas.map(|s| i32::try_from(s).unwrap_or(i32::MAX));
        let wrote = AtomicBool::new(false);
        let (api, params, wrote) = (&api, &params, &wrote);
        let result = calls::call(&what, &self.fence, |attempt| async move {
            let mut scale = api.get_scale(&target.name).await?;
            let now = scale.spec.as_ref().and_then(|s| s.replicas).unwrap_or(0);
            if attempt.after_lost_answer && wrote.load(Ordering::Relaxed) && now == wanted {
                return Ok(Scaled::Earlier { before: seen.unwrap_or(now), after: now });
            }
            if let Some(seen) = seen
                && now != seen
            {
                return Ok(Scaled::Superseded { now, seen });
            }
            if let Some(hook) = &self.before_write {
                hook().await;
            }
            scale.spec.get_or_insert_default().replicas = Some(wanted);
            wrote.store(!dry_run, Ordering::Relaxed);
            let after = api.replace_scale(&target.name, params, &scale).await?;
            Ok(Scaled::Now { before: now, after: after.spec.and_then(|s| s.replicas).unwrap_or(0) })
        })
        .await;
        let verb = if dry_run { "would scale" } else { "scaled" };
        match result {
            Ok(Scaled::Now { before, after }) => Ok(format!("{verb} {before} -> {after}")),
            Ok(Scaled::Earlier { before, after }) => Ok(format!("{verb} {before} -> {after} (an answer was lost; read back: the write landed)")),
            Ok(Scaled::Superseded { now, seen }) => Err(ExecuteError::Superseded(format!(
                "{target} has {now} replicas, not the {seen} this decision saw: the change made meanwhile wins, and the next tick decides again"
            ))),
            Err(why @ (CallError::Unanswered(_) | CallError::Fenced(_))) if wrote.load(Ordering::Relaxed) => {
                let back = calls::call(&format!("read back {what}"), &after_the_fact(), |_| api.get_scale(&target.name)).await;
                match back.map(|s| s.spec.and_then(|s| s.replicas).unwrap_or(0)) {
                    Ok(now) if now == wanted => Ok(format!("{verb} {} -> {now} (the answer was lost; read back: the write landed)", seen.unwrap_or(now))),
                    Ok(now) => Err(ExecuteError::Failed(format!("{what}: {why}; read back: {now} replicas, so the write did not land"))),
                    Err(e) => Err(ExecuteError::Unconfirmed(format!("{what} to {wanted}: {why}; reading it back failed too: {e}"))),
                }
            }
            Err(e) if e.status() == Some(404) => Err(ExecuteError::Refused(format!("{what}: not found"))),
            Err(e) => Err(failed(e)),
        }
    }

    /// The HorizontalPodAutoscaler whose scaleTargetRef is the target, if any.
    async fn hpa_of(&self, target: &Target) -> Result<Option<HorizontalPodAutoscaler>, ExecuteError> {
        let api: Api<HorizontalPodAutoscaler> = Api::namespaced(self.client.clone(), &target.namespace);
        let (api, params) = (&api, &ListParams::default());
        let all = calls::call(&format!("list the HPAs of {}", target.namespace), &self.fence, |_| api.list(params)).await.map_err(failed)?;
        Ok(all.items.into_iter().find(|h| super::workloads::scales(h, target)))
    }

    /// `hpa-floor`: the replicas a forecast asks for become the HPA's `minReplicas` (within its
    /// `maxReplicas`, never below the floor it had before Augur touched it, which is kept in the
    /// annotation [`HPA_FLOOR_BEFORE`]), so the HPA stays the reactive controller and scales the
    /// workload up to the floor itself; a scale-down lowers the floor back towards that first
    /// value. An optimistic update (the HPA's resourceVersion), retried on conflict.
    async fn move_hpa_floor(&self, order: &Order<'_>, hpa: &HorizontalPodAutoscaler, replicas: u32) -> Result<String, ExecuteError> {
        let (target, dry_run) = (order.target, order.dry_run);
        let name = hpa.metadata.name.clone().unwrap_or_default();
        let api: Api<HorizontalPodAutoscaler> = Api::namespaced(self.client.clone(), &target.namespace);
        let params = PostParams { dry_run, field_manager: Some(MANAGER.into()) };
        let wanted = i32::try_from(replicas).unwrap_or(i32::MAX);
        let (api, params, name) = (&api, &params, name.as_str());
        let moved = calls::call(&format!("move the floor of HPA {}/{name}", target.namespace), &self.fence, |_| async move {
            let mut hpa = api.get(name).await?;
            let spec = hpa.spec.get_or_insert_default();
            let now = spec.min_replicas.unwrap_or(1);
            let annotations = hpa.metadata.annotations.get_or_insert_default();
            let before: i32 = annotations.get(HPA_FLOOR_BEFORE).and_then(|v| v.parse().ok()).unwrap_or(now);
            let floor = wanted.clamp(before, spec.max_replicas.max(before));
            if floor == now {
                return Ok((now, now, spec.max_replicas));
            }
            annotations.insert(HPA_FLOOR_BEFORE.into(), before.to_string());
            spec.min_replicas = Some(floor);
            let max = spec.max_replicas;
            api.replace(name, params, &hpa).await?;
            Ok((now, floor, max))
        })
        .await
        .map_err(failed)?;
        let (before, after, max) = moved;
        let verb = if dry_run { "would move" } else { "moved" };
        Ok(match after.cmp(&before) {
            std::cmp::Ordering::Equal if i64::from(after) < i64::from(wanted) && after == max => format!("hpa-floor: HPA {name} minReplicas stays {after}, its maxReplicas; {replicas} asked for"),
            std::cmp::Ordering::Equal => format!("hpa-floor: HPA {name} minReplicas stays {after}"),
            _ => format!("hpa-floor: {verb} HPA {name} minReplicas {before} -> {after}; the HPA scales the workload"),
        })
    }

    /// `kubectl rollout restart`: stamps the pod template with the time, so the Deployment's
    /// controller replaces every pod under its rollout strategy. The stamp is chosen once, so
    /// a retry writes the same template and starts no second rollout.
    async fn rollout_restart(&self, order: &Order<'_>) -> Result<String, ExecuteError> {
        let (target, dry_run) = (order.target, order.dry_run);
        let stamp = Timestamp::now().to_string();
        let landed = match target.kind.as_str() {
            "Deployment" => {
                let template = |d: Deployment| d.spec.and_then(|s| s.template.metadata).and_then(|m| m.annotations);
                self.stamp_template(Api::namespaced(self.client.clone(), &target.namespace), order, &stamp, template).await?
            }
            "StatefulSet" => {
                let template = |d: StatefulSet| d.spec.and_then(|s| s.template.metadata).and_then(|m| m.annotations);
                self.stamp_template(Api::namespaced(self.client.clone(), &target.namespace), order, &stamp, template).await?
            }
            other => return Err(ExecuteError::Refused(format!("{other} cannot be rollout-restarted by Augur"))),
        };
        Ok(if dry_run { format!("would restart every pod of {target}") } else { format!("restarting every pod of {target} (restartedAt {stamp}){landed}") })
    }

    /// Patches the restart stamp into a workload's pod template; `annotations` reads the
    /// template's annotations back.
    async fn stamp_template<K>(&self, api: Api<K>, order: &Order<'_>, stamp: &str, annotations: fn(K) -> Option<BTreeMap<String, String>>) -> Result<&'static str, ExecuteError>
    where
        K: Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
    {
        let target = order.target;
        let patch = Patch::Merge(json!({ "spec": { "template": { "metadata": { "annotations": { RESTARTED_AT: stamp } } } } }));
        let params = Self::params(order.dry_run);
        let what = format!("rollout restart {target}");
        let (api, patch, params) = (&api, &patch, &params);
        let done = calls::call(&what, &self.fence, |_| api.patch(&target.name, params, patch)).await;
        self.read_back(done, order.dry_run, &what, || async move {
            let now = api.get(&target.name).await?;
            Ok(annotations(now).is_some_and(|a| a.get(RESTARTED_AT).map(String::as_str) == Some(stamp)))
        })
        .await
    }

    async fn set_unschedulable(&self, order: &Order<'_>, node: &str, cordon: bool) -> Result<String, ExecuteError> {
        let dry_run = order.dry_run;
        let nodes: Api<Node> = Api::all(self.client.clone());
        let nodes = &nodes;
        let current = calls::call(&format!("read node {node}"), &self.fence, |_| nodes.get_opt(node)).await.map_err(failed)?;
        let current = current.ok_or_else(|| ExecuteError::Refused(format!("node {node} does not exist")))?;
        if !cordon && !cordoned_by_us(&current) {
            return Err(ExecuteError::Refused(format!("node {node} was not cordoned by Augur; it uncordons only its own cordons")));
        }
        let annotation = if cordon { json!(MANAGER) } else { serde_json::Value::Null };
        let patch = Patch::Merge(json!({ "metadata": { "annotations": { CORDONED_BY: annotation } }, "spec": { "unschedulable": cordon } }));
        let params = Self::params(dry_run);
        let what = format!("patch node {node}");
        let (patch, params) = (&patch, &params);
        let done = calls::call(&what, &self.fence, |_| nodes.patch(node, params, patch)).await;
        let landed = self
            .read_back(done, dry_run, &what, || async move {
                let now = nodes.get(node).await?;
                Ok(now.spec.and_then(|s| s.unschedulable).unwrap_or(false) == cordon)
            })
            .await?;
        let verb = match (cordon, dry_run) {
            (true, false) => "cordoned",
            (true, true) => "would cordon",
            (false, false) => "uncordoned",
            (false, true) => "would uncordon",
        };
        Ok(format!("{verb} {node}{landed}"))
    }

    /// The outcome of an idempotent write: done, or, when its last answer was lost, what a
    /// read-back says (`landed` reads whether the write is there). Returns a note for the
    /// record: empty when the answer came.
    async fn read_back<T, F, Fut>(&self, done: Result<T, CallError>, dry_run: bool, what: &str, landed: F) -> Result<&'static str, ExecuteError>
    where
        F: Fn() -> Fut,
        Fut: Future<Output = Result<bool, kube::Error>>,
    {
        match done {
            Ok(_) => Ok(""),
            Err(why @ (CallError::Unanswered(_) | CallError::Fenced(_))) if !dry_run => match calls::call(&format!("read back: {what}"), &after_the_fact(), |_| landed()).await {
                Ok(true) => Ok(" (the answer was lost; read back: the write landed)"),
                Ok(false) => Err(ExecuteError::Failed(format!("{what}: {why}; read back: the write did not land"))),
                Err(e) => Err(ExecuteError::Unconfirmed(format!("{what}: {why}; reading it back failed too: {e}"))),
            },
            Err(e) => Err(failed(e)),
        }
    }

    /// Publishes an Event on the action's object (the workload, or the node): Normal for what
    /// was done or would have been, Warning for what failed.
    async fn publish(&self, order: &Order<'_>, outcome: &Result<String, ExecuteError>) {
        let named = Named::of(order.action);
        let (type_, event_reason, result) = match outcome {
            Ok(result) if order.dry_run => (Normal, format!("DryRun{}", named.done), result.clone()),
            Ok(result) => (Normal, named.done.to_string(), result.clone()),
            Err(e @ ExecuteError::Superseded(_)) => (Normal, format!("Superseded{}", named.noun), e.to_string()),
            Err(e) => (Warning, format!("Failed{}", named.noun), e.to_string()),
        };
        self.publish_event(order.target, order.action, type_, event_reason, &format!("{result}: {}", order.reason), &after_the_fact()).await;
    }

    /// Publishes one Event on the action's object. `fence` bounds its attempts.
    async fn publish_event(&self, target: &Target, action: &Action, type_: EventType, event_reason: String, note: &str, fence: &Fence) {
        let named = Named::of(action);
        let said = Note { type_, reason: &event_reason, action: named.done, note };
        self.events.publish(named.object(target), &target.to_string(), said, fence).await;
    }
}

/// On an HPA whose floor Augur moved: the `minReplicas` it had before, which Augur never
/// goes below and lowers back to.
pub const HPA_FLOOR_BEFORE: &str = "augur.io/min-replicas-before";

/// The pod-template annotation `kubectl rollout restart` sets.
const RESTARTED_AT: &str = "kubectl.kubernetes.io/restartedAt";

fn failed(e: CallError) -> ExecuteError {
    match e.status() {
        Some(403) => ExecuteError::Refused(format!("forbidden by RBAC: {e}")),
        Some(404) => ExecuteError::Refused(format!("not found: {e}")),
        _ if matches!(e, CallError::Fenced(_)) => ExecuteError::Refused(format!("not written: {e}")),
        _ => ExecuteError::Failed(e.to_string()),
    }
}

/// Reading back what a write did (or publishing the Event of a change that landed) needs no
/// leadership, only a short deadline of its own, so that it works after the fence closed and
/// never holds up the end.
fn after_the_fact() -> Fence {
    Fence::until(tokio::time::Instant::now() + READ_BACK_TIME)
}

/// The most a read-back may take.
const READ_BACK_TIME: std::time::Duration = std::time::Duration::from_secs(2);

/// Whether Augur cordoned this node (it uncordons only its own cordons).
fn cordoned_by_us(node: &Node) -> bool {
    node.metadata.annotations.as_ref().is_some_and(|a| a.get(CORDONED_BY).is_some_and(|v| v == MANAGER))
}

/// How a scale attempt ended.
enum Scaled {
    /// Written by this attempt.
    Now { before: i32, after: i32 },
    /// Written by an earlier attempt whose answer was lost: the count is the one it wrote.
    Earlier { before: i32, after: i32 },
    /// The count is not the one the decision saw: nothing written.
    Superseded { now: i32, seen: i32 },
}

/// How a pod deletion ended.
enum Deleted {
    Now,
    /// An earlier attempt's answer was lost and the pod is gone: that attempt deleted it.
    Earlier,
    /// Gone before Augur deleted it.
    Already,
}

fn workload_ref(target: &Target) -> ObjectReference {
    ObjectReference { api_version: Some("apps/v1".into()), kind: Some(target.kind.clone()), name: Some(target.name.clone()), namespace: Some(target.namespace.clone()), ..Default::default() }
}

fn node_ref(node: &str) -> ObjectReference {
    ObjectReference { api_version: Some("v1".into()), kind: Some("Node".into()), name: Some(node.into()), ..Default::default() }
}

#[async_trait]
impl Executor for KubeExecutor {
    async fn execute(&self, order: &Order<'_>) -> Result<String, ExecuteError> {
        let outcome = match order.action {
            Action::Scale { replicas } => self.scale(order, *replicas).await,
            Action::RestartPod { pod } => self.restart_pod(order, pod).await,
            Action::RolloutRestart => self.rollout_restart(order).await,
            Action::CordonNode { node } => self.set_unschedulable(order, node, true).await,
            Action::UncordonNode { node } => self.set_unschedulable(order, node, false).await,
        };
        self.publish(order, &outcome).await;
        outcome
    }

    /// A Warning Event `Rejected<Action>` with the guard's reason. The guard refuses the same
    /// thing tick after tick while its cause lasts (a cooldown, the hourly cap), so one such
    /// Event per workload and action kind is published every `REJECTION_EVERY` at most; the
    /// next one counts those left out.
    async fn rejected(&self, rejection: &Rejection<'_>) {
        let named = Named::of(rejection.action);
        let event_reason = format!("Rejected{}", named.noun);
        let key = (rejection.target.to_string(), event_reason.clone());
        let left_out = {
            let mut throttle = self.rejections.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            let now = std::time::Instant::now();
            match throttle.get_mut(&key) {
                Some((last, left_out)) if now.duration_since(*last) < REJECTION_EVERY => {
                    *left_out += 1;
                    return;
                }
                Some((last, left_out)) => {
                    *last = now;
                    std::mem::take(left_out)
                }
                None => {
                    throttle.insert(key, (now, 0));
                    0
                }
            }
        };
        let mut note = format!("guard refused it: {}; proposed because: {}", rejection.refused_because, rejection.proposed_because);
        if left_out > 0 {
            note = format!("{note} ({left_out} more refused since the last such Event)");
        }
        self.publish_event(rejection.target, rejection.action, Warning, event_reason, &note, &self.fence).await;
    }
}

use EventType::{Normal, Warning};

/// At most one `Rejected<Action>` Event per workload, action and this long.
pub const REJECTION_EVERY: std::time::Duration = std::time::Duration::from_secs(300);

/// An action's names in Events: what it did (`Scaled`), what it is (`Scale`), and its object.
struct Named<'a> {
    done: &'static str,
    noun: &'static str,
    node: Option<&'a str>,
}

impl<'a> Named<'a> {
    fn of(action: &'a Action) -> Self {
        let (done, noun, node) = match action {
            Action::Scale { .. } => ("Scaled", "Scale", None),
            Action::RestartPod { .. } => ("RestartedPod", "RestartPod", None),
            Action::RolloutRestart => ("RolloutRestarted", "RolloutRestart", None),
            Action::CordonNode { node } => ("CordonedNode", "CordonNode", Some(node.as_str())),
            Action::UncordonNode { node } => ("UncordonedNode", "UncordonNode", Some(node.as_str())),
        };
        Self { done, noun, node }
    }

    /// The object the Event is about: the node for a cordon, else the workload.
    fn object(&self, target: &Target) -> ObjectReference {
        self.node.map_or_else(|| workload_ref(target), node_ref)
    }
}
