//! AugurPolicy: a namespaced custom resource (`augur.io/v1alpha1`) whose spec is a policy
//! document, so that a team owns its workload's policy in its own namespace, `kubectl get
//! augurpolicies` shows what each does, and Argo CD reads its health.
//!
//! - The schema is generated from the policy document's types (`config::document`); `host
//!   crd` prints the CRD and a test checks that the shipped one (`deploy/crd.yaml`) is it.
//! - [`PolicyWatch`] lists and watches AugurPolicies (kube-runtime's watcher) and hands each
//!   version to the reloader as a document, where it is checked and hot-swapped exactly as a
//!   file is: a version that fails is reported in its status (`InvalidSpec`, with each
//!   problem's field and fix) while the previous version keeps running.
//! - The status holds the conditions (Ready, InvalidSpec, Forecasting, ScalingLimited,
//!   TargetManagedByHPA, Paused), the serving forecaster, the risk, the last action and
//!   `observedGeneration`, written by the replica that leads (every write passes its fence)
//!   when they change; Events on the AugurPolicy say when a spec is accepted or refused and
//!   which scaling mode applies (`kubectl describe augurpolicy`).
//! - The annotation `augur.io/paused: "true"` on an AugurPolicy runs it in `observe` mode
//!   (it assesses and records, acts on nothing) until it is removed.
//!
//! An AugurPolicy acts only in its own namespace: a `target.namespace` elsewhere is refused.
//! Its plugins and models are best given by name (the host's search path); relative paths
//! resolve against the host's `--policy-base` folder.

use super::calls;
use super::events::{EventType, Events, Note};
use super::leader::Fence;
use crate::domain::Scaler;
use k8s_openapi::api::core::v1::ObjectReference;
use crate::config::document::{AuditDoc, PolicySpec};
use futures::StreamExt;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::watcher;
use kube::runtime::WatchStreamExt;
use kube::{Client, CustomResource, CustomResourceExt, ResourceExt};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};
use tokio::sync::{mpsc, oneshot};

pub use crate::reload::{Considered, DocumentChange};

/// A policy as a Kubernetes resource: the spec is the policy document without its `name`
/// (the resource's own name gives it).
#[derive(CustomResource, Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "augur.io",
    version = "v1alpha1",
    kind = "AugurPolicy",
    plural = "augurpolicies",
    namespaced,
    status = "AugurPolicyStatus",
    shortname = "augp",
    category = "augur",
    doc = "An Augur policy: the workload it watches, how its metrics are forecast, the rules that assess and remediate, and the guard rails.",
    printcolumn(name = "Target", type_ = "string", json_path = ".spec.target.name"),
    printcolumn(name = "Forecaster", type_ = "string", json_path = ".status.forecaster"),
    printcolumn(name = "Risk", type_ = "string", json_path = ".status.risk"),
    printcolumn(name = "Last action", type_ = "string", json_path = ".status.lastAction.summary"),
    printcolumn(name = "Ready", type_ = "string", json_path = ".status.conditions[?(@.type==\"Ready\")].status"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
pub struct AugurPolicySpec {
    #[serde(flatten)]
    pub policy: PolicySpec,
}

/// What Augur says of an AugurPolicy.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AugurPolicyStatus {
    /// The generation of the spec these conditions speak of.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Ready, InvalidSpec, Forecasting, ScalingLimited, in the Kubernetes convention.
    #[serde(default)]
    pub conditions: Vec<Condition>,
    /// The forecaster serving the first watched metric.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub forecaster: Option<String>,
    /// The highest risk of the last assessment, e.g. `high (cpu)`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub risk: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_action: Option<LastAction>,
}

/// One condition, as `metav1.Condition` has it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    #[serde(rename = "type")]
    pub type_: String,
    /// `True`, `False` or `Unknown`.
    pub status: String,
    pub reason: String,
    pub message: String,
    /// When `status` last changed (RFC 3339).
    pub last_transition_time: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

/// The last action Augur decided on, and what became of it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LastAction {
    /// When (RFC 3339).
    pub time: String,
    /// e.g. `scale to 4`.
    pub action: String,
    /// executed, dry-run, rejected, failed, superseded or unconfirmed.
    pub verdict: String,
    /// The guard's reason, and the plugin's.
    pub reason: String,
    /// `action (verdict)`, for the printer column.
    pub summary: String,
}

/// What the engine last saw a policy do, as the status shows it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Observed {
    /// Serving forecaster per metric.
    pub forecasters: BTreeMap<String, String>,
    /// e.g. `high (cpu)`, and its reason.
    pub risk: Option<(String, String)>,
    pub last_action: Option<LastAction>,
    /// Why the guard last held an action back, if it still does.
    pub limited: Option<String>,
    /// Who moves the target's replicas, as last read.
    pub scaler: Option<Scaler>,
}

/// The CRD, generated from the types.
pub fn crd() -> k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition {
    AugurPolicy::crd()
}

/// The CRD as the YAML `host crd` prints and `deploy/crd.yaml` holds.
pub fn crd_yaml() -> String {
    let header = "# The AugurPolicy CRD, generated from the policy's types: `host crd > deploy/crd.yaml`.\n";
    format!("{header}{}", yaml_serde::to_string(&crd()).unwrap_or_default())
}

/// Why an AugurPolicy cannot become a policy document (before the parser reads it).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}; fix: {fix}")]
pub struct DocumentError {
    pub field: String,
    pub message: String,
    pub fix: String,
}

/// Where a watch puts AugurPolicies' documents: the folder their relative paths resolve
/// against, and the folder of their audit logs when the spec names none.
#[derive(Debug, Clone)]
pub struct Placement {
    pub base: PathBuf,
    pub audit_dir: PathBuf,
}

impl Placement {
    /// The source an AugurPolicy is known by in the reloader and the engine (it is no file).
    pub fn source(&self, namespace: &str, name: &str) -> PathBuf {
        self.base.join(format!("augurpolicy.{namespace}.{name}"))
    }

    /// The policy document of `policy` (its name `<namespace>-<name>`, its target in its own
    /// namespace, an audit log by default) and the source it is known by.
    pub fn document(&self, policy: &AugurPolicy) -> Result<(PathBuf, String), DocumentError> {
        let namespace = policy.namespace().unwrap_or_else(|| "default".into());
        let name = policy.name_any();
        let mut spec = policy.spec.policy.clone();
        if is_paused(policy) {
            spec.guard.mode = Some("observe".into());
            spec.guard.dry_run = None;
            spec.guard.remediate = None;
        }
        match &spec.target.namespace {
            Some(ns) if *ns != namespace => {
                return Err(DocumentError {
                    field: "spec.target.namespace".into(),
                    message: format!("`{ns}` is not this AugurPolicy's namespace `{namespace}`: an AugurPolicy acts only in its own namespace"),
                    fix: format!("remove spec.target.namespace, or create the AugurPolicy in namespace `{ns}`"),
                });
            }
            _ => spec.target.namespace = Some(namespace.clone()),
        }
        if spec.audit.is_none() {
            spec.audit = Some(AuditDoc { path: self.audit_dir.join(format!("{namespace}.{name}.jsonl")).display().to_string() });
        }
        let mut document = serde_json::to_value(&spec).map_err(|e| DocumentError { field: "spec".into(), message: e.to_string(), fix: "report this as a bug".into() })?;
        if let Value::Object(fields) = &mut document {
            fields.insert("name".into(), Value::String(format!("{namespace}-{name}")));
        }
        let text = yaml_serde::to_string(&document).map_err(|e| DocumentError { field: "spec".into(), message: e.to_string(), fix: "report this as a bug".into() })?;
        Ok((self.source(&namespace, &name), text))
    }
}

/// Whether the AugurPolicy has the annotation `augur.io/paused: "true"`.
pub fn is_paused(policy: &AugurPolicy) -> bool {
    policy.annotations().get(super::PAUSED).is_some_and(|v| v.trim().eq_ignore_ascii_case("true"))
}

/// The condition `Paused` after a version was handed over: True while the annotation holds
/// (the policy runs in `observe` mode), False once it is removed (absent if it never was).
pub fn mark_paused(status: &mut AugurPolicyStatus, paused: bool, generation: Option<i64>, now: &str) {
    let c = &mut status.conditions;
    if paused {
        let message = format!("the annotation {}: \"true\" runs this policy in observe mode: it assesses and records, and acts on nothing (remove the annotation to resume)", super::PAUSED);
        set_condition(c, "Paused", true, "PausedByAnnotation", &message, generation, now);
    } else if c.iter().any(|c| c.type_ == "Paused") {
        set_condition(c, "Paused", false, "Resumed", "not paused: the policy acts as its guard.mode says", generation, now);
    }
}

/// The condition of who scales the target, as its status and Events say it.
fn scaling_condition(scaler: &Scaler) -> (bool, &'static str, String) {
    match scaler {
        Scaler::Hpa(hpa) => (true, "HpaFloor", format!("HPA {hpa} scales the target: Augur raises its minReplicas ahead of a predicted peak and lowers it back after (mode hpa-floor), and never writes the target's replicas")),
        Scaler::Augur => (false, "ScalesDirectly", "no HPA scales the target: Augur writes its replicas".into()),
    }
}

/// Sets the condition `type_` in `conditions`, keeping its transition time when its status
/// does not change. Returns whether anything changed.
pub fn set_condition(conditions: &mut Vec<Condition>, type_: &str, status: bool, reason: &str, message: &str, generation: Option<i64>, now: &str) -> bool {
    let status = if status { "True" } else { "False" };
    let new = |time: &str| Condition { type_: type_.into(), status: status.into(), reason: reason.into(), message: capped(message), last_transition_time: time.into(), observed_generation: generation };
    match conditions.iter_mut().find(|c| c.type_ == type_) {
        Some(c) => {
            let time = if c.status == status { c.last_transition_time.clone() } else { now.to_string() };
            let updated = new(&time);
            let changed = *c != updated;
            *c = updated;
            changed
        }
        None => {
            conditions.push(new(now));
            true
        }
    }
}

/// The most bytes of a condition's message (the API allows 32 KiB).
const MAX_MESSAGE_BYTES: usize = 4096;

fn capped(message: &str) -> String {
    if message.len() <= MAX_MESSAGE_BYTES {
        return message.to_string();
    }
    let cut = message.floor_char_boundary(MAX_MESSAGE_BYTES - 40);
    format!("{}… ({} more bytes)", &message[..cut], message.len() - cut)
}

/// The status after the reloader's verdict on a generation of the spec. `running`: a
/// previous version runs (it keeps running when this one is refused).
pub fn status_after_spec(old: &AugurPolicyStatus, generation: Option<i64>, verdict: &SpecVerdict, running: bool, now: &str) -> AugurPolicyStatus {
    let mut status = old.clone();
    status.observed_generation = generation;
    let c = &mut status.conditions;
    match verdict {
        SpecVerdict::Accepted => {
            set_condition(c, "InvalidSpec", false, "Valid", "the spec passed every check", generation, now);
            set_condition(c, "Ready", true, "Accepted", "checked and loaded: Augur watches the target and acts under the guard", generation, now);
        }
        SpecVerdict::Refused(reason) => {
            set_condition(c, "InvalidSpec", true, "InvalidSpec", reason, generation, now);
            if running {
                set_condition(c, "Ready", true, "PreviousVersionRuns", "this generation was refused (see InvalidSpec); the previous accepted version keeps running", generation, now);
            } else {
                set_condition(c, "Ready", false, "InvalidSpec", "refused (see InvalidSpec): nothing runs for this policy", generation, now);
            }
        }
    }
    status
}

/// The status with what the engine last saw the policy do.
pub fn status_after_ticks(old: &AugurPolicyStatus, observed: &Observed, now: &str) -> AugurPolicyStatus {
    let mut status = old.clone();
    let generation = status.observed_generation;
    status.forecaster = observed.forecasters.values().next().cloned();
    if !observed.forecasters.is_empty() {
        let each: Vec<String> = observed.forecasters.iter().map(|(metric, f)| format!("{metric}: {f}")).collect();
        set_condition(&mut status.conditions, "Forecasting", true, "Serving", &format!("serving forecaster per metric: {}", each.join(", ")), generation, now);
    }
    status.risk = observed.risk.as_ref().map(|(risk, _)| risk.clone());
    if observed.last_action.is_some() {
        status.last_action = observed.last_action.clone();
    }
    if let Some(scaler) = &observed.scaler {
        let (managed, reason, message) = scaling_condition(scaler);
        set_condition(&mut status.conditions, "TargetManagedByHPA", managed, reason, &message, generation, now);
    }
    match &observed.limited {
        Some(reason) => set_condition(&mut status.conditions, "ScalingLimited", true, "GuardHeldBack", reason, generation, now),
        None if status.conditions.iter().any(|c| c.type_ == "ScalingLimited") => set_condition(&mut status.conditions, "ScalingLimited", false, "WithinLimits", "the guard let the last action through whole", generation, now),
        None => false,
    };
    status
}

/// The reloader's verdict on a generation of the spec, as the status tells it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SpecVerdict {
    Accepted,
    Refused(String),
}

/// How often the statuses are brought up to date with what the engine saw.
pub const STATUS_PERIOD: Duration = Duration::from_secs(2);

/// Watches AugurPolicies (in one namespace, or all) and hands each version to the reloader.
pub struct PolicyWatch {
    pub client: Client,
    pub namespace: Option<String>,
    pub placement: Placement,
    /// Status writes and Events pass it: only the leader writes.
    pub fence: Fence,
    /// The Events on AugurPolicies, as this replica.
    pub events: Events,
}

/// One AugurPolicy as the watch knows it.
struct Known {
    namespace: String,
    name: String,
    uid: Option<String>,
    /// The status as last read or written.
    status: AugurPolicyStatus,
    /// Whether a version of it runs (the reloader accepted one since it was last deleted).
    running: bool,
}

impl Known {
    /// The AugurPolicy, as an Event's `regarding`.
    fn reference(&self) -> ObjectReference {
        ObjectReference {
            api_version: Some("augur.io/v1alpha1".into()),
            kind: Some("AugurPolicy".into()),
            namespace: Some(self.namespace.clone()),
            name: Some(self.name.clone()),
            uid: self.uid.clone(),
            ..Default::default()
        }
    }
}

impl PolicyWatch {
    /// Whether the API server serves AugurPolicies here: an error that says how to install
    /// the CRD, or how to grant the access, if it does not.
    pub async fn check(&self) -> Result<(), String> {
        let api: Api<AugurPolicy> = match &self.namespace {
            Some(ns) => Api::namespaced(self.client.clone(), ns),
            None => Api::all(self.client.clone()),
        };
        match api.list(&kube::api::ListParams::default().limit(1)).await {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(status)) if status.code == 404 => Err("--cluster-policies: the API server does not serve augurpolicies.augur.io; fix: install the CRD (`host crd | kubectl apply -f -`, or deploy/crd.yaml)".into()),
            Err(kube::Error::Api(status)) if status.code == 403 => Err(format!("--cluster-policies: not allowed to list AugurPolicies ({}); fix: apply deploy/rbac.yaml, which grants get, list and watch on augurpolicies and patch on their status", status.message)),
            Err(e) => Err(format!("--cluster-policies: cannot list AugurPolicies: {e}")),
        }
    }

    /// Runs until the reloader's end of `documents` is gone. `observe` gives, per source,
    /// what the engine last saw each policy do.
    pub fn spawn(self, documents: mpsc::UnboundedSender<DocumentChange>, observe: impl Fn() -> BTreeMap<PathBuf, Observed> + Send + 'static) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move { self.run(documents, observe).await })
    }

    async fn run(self, documents: mpsc::UnboundedSender<DocumentChange>, observe: impl Fn() -> BTreeMap<PathBuf, Observed>) {
        let api: Api<AugurPolicy> = match &self.namespace {
            Some(ns) => Api::namespaced(self.client.clone(), ns),
            None => Api::all(self.client.clone()),
        };
        let mut events = watcher(api, watcher::Config::default()).default_backoff().boxed();
        let mut known: BTreeMap<PathBuf, Known> = BTreeMap::new();
        // The sources seen since a relist began: those not seen again by its end are gone.
        let mut relisted: Option<Vec<PathBuf>> = None;
        let mut every = tokio::time::interval(STATUS_PERIOD);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                event = events.next() => match event {
                    Some(Ok(watcher::Event::Init)) => relisted = Some(Vec::new()),
                    Some(Ok(watcher::Event::InitApply(policy))) => {
                        if let Some(source) = self.apply(&documents, &mut known, policy).await {
                            relisted.get_or_insert_with(Vec::new).push(source);
                        }
                    }
                    Some(Ok(watcher::Event::InitDone)) => {
                        let seen = relisted.take().unwrap_or_default();
                        let gone: Vec<PathBuf> = known.keys().filter(|s| !seen.contains(s)).cloned().collect();
                        for source in gone {
                            known.remove(&source);
                            delete(&documents, source, "the AugurPolicy is gone").await;
                        }
                    }
                    Some(Ok(watcher::Event::Apply(policy))) => {
                        self.apply(&documents, &mut known, policy).await;
                    }
                    Some(Ok(watcher::Event::Delete(policy))) => {
                        let source = self.placement.source(&policy.namespace().unwrap_or_default(), &policy.name_any());
                        known.remove(&source);
                        delete(&documents, source, "the AugurPolicy was deleted").await;
                    }
                    // The backoff retries; say why.
                    Some(Err(e)) => tracing::warn!("watching AugurPolicies: {e}"),
                    None => break,
                },
                _ = every.tick() => self.report(&mut known, &observe()).await,
            }
            if documents.is_closed() {
                break;
            }
        }
    }

    /// Hands a version to the reloader, and writes its verdict in the status.
    async fn apply(&self, documents: &mpsc::UnboundedSender<DocumentChange>, known: &mut BTreeMap<PathBuf, Known>, policy: AugurPolicy) -> Option<PathBuf> {
        let (namespace, name) = (policy.namespace().unwrap_or_default(), policy.name_any());
        let generation = policy.metadata.generation;
        let old = policy.status.clone().unwrap_or_default();
        let source = self.placement.source(&namespace, &name);
        let mut running = known.get(&source).is_some_and(|k| k.running);
        let verdict = match self.placement.document(&policy) {
            Err(e) => {
                tracing::error!("AugurPolicy {namespace}/{name}: rejected, the previous version keeps running: {e}");
                Some(SpecVerdict::Refused(e.to_string()))
            }
            Ok((source, text)) => {
                let (reply, answer) = oneshot::channel();
                documents.send(DocumentChange::Apply { source, text, reply }).ok()?;
                match answer.await.ok()? {
                    Considered::Accepted { .. } => Some(SpecVerdict::Accepted),
                    Considered::Rejected { reason, .. } => Some(SpecVerdict::Refused(reason)),
                    // Already running as it is (a resync, or a status write): only a status
                    // that lags the generation is brought up to date.
                    Considered::Unchanged => {
                        running = true;
                        (old.observed_generation != generation).then_some(SpecVerdict::Accepted)
                    }
                    // Refused before, and said so then.
                    Considered::StillRefused => None,
                }
            }
        };
        running |= verdict == Some(SpecVerdict::Accepted);
        let mut entry = Known { namespace: namespace.clone(), name: name.clone(), uid: policy.metadata.uid.clone(), status: old.clone(), running };
        if let Some(verdict) = verdict {
            let now = now();
            let mut status = status_after_spec(&old, generation, &verdict, running, &now);
            mark_paused(&mut status, is_paused(&policy), generation, &now);
            if status != old && self.write(&namespace, &name, &status).await {
                entry.status = status;
                let said = match &verdict {
                    SpecVerdict::Accepted => Note { type_: EventType::Normal, reason: "Accepted", action: "LoadedSpec", note: "checked and loaded: this version runs from the next tick" },
                    SpecVerdict::Refused(why) => Note { type_: EventType::Warning, reason: "InvalidSpec", action: "RefusedSpec", note: why },
                };
                self.events.publish(entry.reference(), &format!("AugurPolicy {namespace}/{name}"), said, &self.fence).await;
            }
        }
        known.insert(source.clone(), entry);
        Some(source)
    }

    /// Brings each status up to date with what the engine saw; writes only what changed.
    async fn report(&self, known: &mut BTreeMap<PathBuf, Known>, observed: &BTreeMap<PathBuf, Observed>) {
        if self.fence.open().is_err() {
            return;
        }
        let now = now();
        for (source, entry) in known.iter_mut() {
            let Some(seen) = observed.get(source) else { continue };
            let status = status_after_ticks(&entry.status, seen, &now);
            if status != entry.status && self.write(&entry.namespace, &entry.name, &status).await {
                let mode = |s: &AugurPolicyStatus| s.conditions.iter().find(|c| c.type_ == "TargetManagedByHPA").map(|c| (c.status.clone(), c.reason.clone(), c.message.clone()));
                let changed = mode(&status).filter(|now| mode(&entry.status).as_ref() != Some(now));
                entry.status = status;
                if let Some((_, reason, message)) = changed {
                    let said = Note { type_: EventType::Normal, reason: &reason, action: "ChoseScalingMode", note: &message };
                    self.events.publish(entry.reference(), &format!("AugurPolicy {}/{}", entry.namespace, entry.name), said, &self.fence).await;
                }
            }
        }
    }

    /// Writes a status (a merge patch of the status subresource); false if it did not land.
    async fn write(&self, namespace: &str, name: &str, status: &AugurPolicyStatus) -> bool {
        let api: Api<AugurPolicy> = Api::namespaced(self.client.clone(), namespace);
        let patch = Patch::Merge(serde_json::json!({ "status": status }));
        let params = PatchParams::default();
        let what = format!("status of AugurPolicy {namespace}/{name}");
        match calls::call(&what, &self.fence, |_| api.patch_status(name, &params, &patch)).await {
            Ok(_) => true,
            Err(calls::CallError::Fenced(_)) => false,
            Err(e) => {
                tracing::warn!("{what}: {e}");
                false
            }
        }
    }
}

async fn delete(documents: &mpsc::UnboundedSender<DocumentChange>, source: PathBuf, why: &str) {
    let (reply, answer) = oneshot::channel();
    if documents.send(DocumentChange::Delete { source, why: why.into(), reply }).is_ok() {
        let _ = answer.await;
    }
}

/// Now in RFC 3339, as conditions write it (and the audit).
fn now() -> String {
    crate::remediation::audit::timestamp(SystemTime::now())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(namespace: &str, target_ns: Option<&str>) -> AugurPolicy {
        let mut spec = PolicySpec::default();
        spec.target.kind = "Deployment".into();
        spec.target.name = "web".into();
        spec.target.namespace = target_ns.map(Into::into);
        let mut p = AugurPolicy::new("web", AugurPolicySpec { policy: spec });
        p.metadata.namespace = Some(namespace.into());
        p
    }

    fn placement() -> Placement {
        Placement { base: "/opt/augur".into(), audit_dir: "/var/augur".into() }
    }

    #[test]
    fn a_document_is_named_for_its_namespace_targets_it_and_has_an_audit() {
        let (source, text) = placement().document(&policy("shop", None)).unwrap();
        assert_eq!(source, PathBuf::from("/opt/augur/augurpolicy.shop.web"));
        let doc: Value = yaml_serde::from_str(&text).unwrap();
        assert_eq!(doc["name"], "shop-web");
        assert_eq!(doc["target"]["namespace"], "shop");
        assert_eq!(doc["audit"]["path"], "/var/augur/shop.web.jsonl");
        // Its own namespace, written out, is fine.
        assert!(placement().document(&policy("shop", Some("shop"))).is_ok());
    }

    #[test]
    fn a_target_in_another_namespace_is_refused_with_the_fix() {
        let e = placement().document(&policy("shop", Some("kube-system"))).unwrap_err();
        assert_eq!(e.field, "spec.target.namespace");
        assert!(e.message.contains("acts only in its own namespace"), "{e}");
        assert!(e.fix.contains("create the AugurPolicy in namespace `kube-system`"), "{e}");
    }

    #[test]
    fn a_condition_keeps_its_transition_time_until_its_status_changes() {
        let mut c = Vec::new();
        assert!(set_condition(&mut c, "Ready", true, "Accepted", "ok", Some(1), "t1"));
        assert!(!set_condition(&mut c, "Ready", true, "Accepted", "ok", Some(1), "t2"), "nothing new");
        assert!(set_condition(&mut c, "Ready", true, "Accepted", "ok", Some(2), "t3"), "a new generation");
        assert_eq!(c[0].last_transition_time, "t1");
        assert!(set_condition(&mut c, "Ready", false, "InvalidSpec", "bad", Some(3), "t4"));
        assert_eq!((c[0].status.as_str(), c[0].last_transition_time.as_str()), ("False", "t4"));
        assert_eq!(c.len(), 1);
    }

    #[test]
    fn a_refused_generation_keeps_ready_while_the_previous_version_runs() {
        let accepted = status_after_spec(&AugurPolicyStatus::default(), Some(1), &SpecVerdict::Accepted, true, "t1");
        let refused = status_after_spec(&accepted, Some(2), &SpecVerdict::Refused("guard.max_replicas: is missing; fix: add it".into()), true, "t2");
        let get = |s: &AugurPolicyStatus, t: &str| s.conditions.iter().find(|c| c.type_ == t).cloned().unwrap();
        assert_eq!(refused.observed_generation, Some(2));
        assert_eq!((get(&refused, "Ready").status.as_str(), get(&refused, "Ready").reason.as_str()), ("True", "PreviousVersionRuns"));
        assert_eq!(get(&refused, "InvalidSpec").status, "True");
        assert!(get(&refused, "InvalidSpec").message.contains("guard.max_replicas"));
        // Nothing ran before: not ready.
        let first = status_after_spec(&AugurPolicyStatus::default(), Some(1), &SpecVerdict::Refused("bad".into()), false, "t1");
        assert_eq!(get(&first, "Ready").status, "False");
    }

    #[test]
    fn what_the_engine_saw_fills_forecaster_risk_last_action_and_limits() {
        let observed = Observed {
            forecasters: [("cpu".to_string(), "transformer".to_string())].into(),
            risk: Some(("high (cpu)".into(), "breach".into())),
            last_action: Some(LastAction { time: "t".into(), action: "scale to 4".into(), verdict: "rejected".into(), reason: "max".into(), summary: "scale to 4 (rejected)".into() }),
            limited: Some("replicas held at guard.max_replicas (3)".into()),
            scaler: Some(Scaler::Hpa("web-hpa".into())),
        };
        let s = status_after_ticks(&AugurPolicyStatus::default(), &observed, "t1");
        let mode = s.conditions.iter().find(|c| c.type_ == "TargetManagedByHPA").unwrap();
        assert_eq!((mode.status.as_str(), mode.reason.as_str()), ("True", "HpaFloor"));
        assert!(mode.message.starts_with("HPA web-hpa scales the target"), "{mode:?}");
        assert_eq!(s.forecaster.as_deref(), Some("transformer"));
        assert_eq!(s.risk.as_deref(), Some("high (cpu)"));
        assert_eq!(s.last_action.as_ref().unwrap().summary, "scale to 4 (rejected)");
        let limited = s.conditions.iter().find(|c| c.type_ == "ScalingLimited").unwrap();
        assert_eq!((limited.status.as_str(), limited.reason.as_str()), ("True", "GuardHeldBack"));
        let clear = status_after_ticks(&s, &Observed { limited: None, scaler: Some(Scaler::Augur), ..observed }, "t2");
        assert_eq!(clear.conditions.iter().find(|c| c.type_ == "ScalingLimited").unwrap().status, "False");
        let mode = clear.conditions.iter().find(|c| c.type_ == "TargetManagedByHPA").unwrap();
        assert_eq!((mode.status.as_str(), mode.reason.as_str(), mode.last_transition_time.as_str()), ("False", "ScalesDirectly", "t2"));
    }

    #[test]
    fn the_paused_condition_follows_the_annotation_and_is_absent_if_never_paused() {
        let mut s = AugurPolicyStatus::default();
        mark_paused(&mut s, false, Some(1), "t0");
        assert!(s.conditions.is_empty());
        mark_paused(&mut s, true, Some(1), "t1");
        assert_eq!(s.conditions[0].status, "True");
        mark_paused(&mut s, false, Some(1), "t2");
        assert_eq!((s.conditions[0].status.as_str(), s.conditions[0].reason.as_str()), ("False", "Resumed"));
    }

    #[test]
    fn a_paused_augur_policy_runs_in_observe_mode() {
        let mut policy = policy("shop", None);
        policy.spec.policy.guard.mode = Some("act".into());
        policy.metadata.annotations = Some([(super::super::PAUSED.to_string(), "true".to_string())].into());
        let (_, text) = placement().document(&policy).unwrap();
        let doc: Value = yaml_serde::from_str(&text).unwrap();
        assert_eq!(doc["guard"]["mode"], "observe", "{text}");
    }

    /// The shipped CRDs (deploy/ and the Helm chart's) are the one the types generate.
    #[test]
    fn the_shipped_crd_is_generated_from_the_types() {
        for file in ["deploy/crd.yaml", "deploy/helm/augur/crds/augurpolicies.yaml"] {
            let shipped = std::fs::read_to_string(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(file)).unwrap();
            assert!(shipped == crd_yaml(), "{file} is stale; fix: `host crd > {file}`");
        }
    }
}
