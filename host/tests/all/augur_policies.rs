//! AugurPolicy resources against the real kube-apiserver of the tests: the shipped CRD
//! installs and is served; `host run --cluster-policies` picks a policy up, acts on it, and
//! shows its conditions and last action in `status`; an invalid edit is reported in status
//! while the previous version keeps acting; a policy reaching outside its namespace is refused.

use crate::common;
use crate::kubernetes::{cluster_policy, deployment, eventually, hpa, install_crd, namespace, replicas};

use augur::cluster::policies::{AugurPolicy, AugurPolicyStatus};
use augur::cluster::Placement;
use augur::commands::{ClusterPolicies, RunOptions};
use common::k8s::control_plane;
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, Client};
use serde_json::{Value, json};
use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

/// Installs deploy/crd.yaml as shipped and waits until it is served.
async fn install(client: &Client) {
    install_crd(client, &common::root().join("deploy/crd.yaml"), "augurpolicies.augur.io").await;
}

/// The test policy (as `cluster_policy` writes it for a file) as an AugurPolicy's spec.
fn spec(dir: &Path, ns: &str) -> Value {
    let file = cluster_policy(dir, ns, &common::prometheus::prometheus().url);
    let mut doc: Value = yaml_serde::from_str(&std::fs::read_to_string(file).unwrap()).unwrap();
    let fields = doc.as_object_mut().unwrap();
    fields.remove("name");
    fields.remove("audit");
    fields["target"].as_object_mut().unwrap().remove("namespace");
    doc
}

async fn create(client: &Client, ns: &str, name: &str, spec: Value) {
    let policy: AugurPolicy = serde_json::from_value(json!({ "apiVersion": "augur.io/v1alpha1", "kind": "AugurPolicy", "metadata": { "name": name, "namespace": ns }, "spec": spec })).unwrap();
    Api::<AugurPolicy>::namespaced(client.clone(), ns).create(&PostParams::default(), &policy).await.unwrap();
}

async fn status(client: &Client, ns: &str, name: &str) -> AugurPolicyStatus {
    Api::<AugurPolicy>::namespaced(client.clone(), ns).get(name).await.unwrap().status.unwrap_or_default()
}

/// The Events on an AugurPolicy: (type, reason, note), oldest first.
async fn events_on(client: &Client, ns: &str, name: &str) -> Vec<(String, String, String)> {
    use k8s_openapi::api::events::v1::Event;
    let mut events: Vec<Event> = Api::<Event>::namespaced(client.clone(), ns).list(&Default::default()).await.unwrap().items;
    events.retain(|e| e.regarding.as_ref().is_some_and(|r| r.kind.as_deref() == Some("AugurPolicy") && r.name.as_deref() == Some(name)));
    events.sort_by_key(|e| e.event_time.as_ref().map(|t| t.0));
    events.into_iter().map(|e| (e.type_.unwrap_or_default(), e.reason.unwrap_or_default(), e.note.unwrap_or_default())).collect()
}

fn condition<'s>(status: &'s AugurPolicyStatus, type_: &str) -> Option<&'s augur::cluster::policies::Condition> {
    status.conditions.iter().find(|c| c.type_ == type_)
}

fn options(dir: &Path, ns: &str, audit: &Path, run_for: Duration) -> RunOptions {
    RunOptions {
        run_for: Some(run_for),
        audit_log: Some(audit.to_path_buf()),
        echo: false,
        identity: Some("augur-a".into()),
        kubeconfig: Some(control_plane().kubeconfig.clone()),
        cluster_policies: Some(ClusterPolicies { namespace: Some(ns.into()), placement: Placement { base: dir.to_path_buf(), audit_dir: dir.to_path_buf() } }),
        ..Default::default()
    }
}

/// The whole life of one AugurPolicy under `host run --cluster-policies`: picked up and acting
/// (the Deployment scales, status says Ready with the serving forecaster, the risk and the last
/// action at the current generation); an edit the parser refuses (`forecast.baseline:
/// crystal-ball`) is InvalidSpec with the field and the fix, Ready stays True because the
/// previous version keeps acting, and it does act after the edit.
#[tokio::test(flavor = "multi_thread")]
async fn an_augur_policy_is_picked_up_acts_and_an_invalid_edit_keeps_the_old_version() {
    let client = control_plane().client().await;
    install(&client).await;
    namespace(&client, "crd").await;
    deployment(&client, "crd", "web", 2).await;
    let dir = tempfile::tempdir().unwrap();
    create(&client, "crd", "web", spec(dir.path(), "crd")).await;
    let audit = dir.path().join("audit.jsonl");
    let run = tokio::spawn(augur::commands::run(options(dir.path(), "crd", &audit, Duration::from_secs(14))));

    eventually("the AugurPolicy to be ready and to have acted", || {
        let client = client.clone();
        async move {
            let s = status(&client, "crd", "web").await;
            condition(&s, "Ready").is_some_and(|c| c.status == "True") && s.last_action.is_some()
        }
    })
    .await;
    let first = status(&client, "crd", "web").await;
    assert_eq!(first.observed_generation, Some(1));
    assert_eq!(condition(&first, "Ready").unwrap().reason, "Accepted");
    assert_eq!(condition(&first, "InvalidSpec").unwrap().status, "False");
    // The skill gate serves the fallback (holt-damped) until the policy's own forecaster has
    // shown skill; either way the status names the one serving.
    let forecaster = first.forecaster.clone().unwrap_or_default();
    assert!(["last-value", "holt-damped"].contains(&forecaster.as_str()), "{first:?}");
    assert!(condition(&first, "Forecasting").is_some_and(|c| c.message.contains(&format!("cpu: {forecaster}"))), "{first:?}");
    assert_eq!(first.risk.as_deref(), Some("high (cpu)"), "{first:?}");
    let last = first.last_action.clone().unwrap();
    assert!(last.action.starts_with("scale") && last.verdict == "executed", "{last:?}");
    assert!(replicas(&client, "crd", "web").await > 2);
    let mode = condition(&first, "TargetManagedByHPA").expect("the scaling mode in status");
    assert_eq!((mode.status.as_str(), mode.reason.as_str()), ("False", "ScalesDirectly"), "no HPA: {mode:?}");

    // An edit the API server accepts (it fits the schema) but the parser refuses.
    let policies: Api<AugurPolicy> = Api::namespaced(client.clone(), "crd");
    policies.patch("web", &PatchParams::default(), &Patch::Merge(json!({ "spec": { "forecast": { "baseline": "crystal-ball" } } }))).await.unwrap();
    let edited = std::time::SystemTime::now();
    eventually("the invalid edit to be reported in status", || {
        let client = client.clone();
        async move { condition(&status(&client, "crd", "web").await, "InvalidSpec").is_some_and(|c| c.status == "True") }
    })
    .await;
    let refused = status(&client, "crd", "web").await;
    assert_eq!(refused.observed_generation, Some(2));
    let invalid = condition(&refused, "InvalidSpec").unwrap();
    assert!(invalid.message.contains("forecast.baseline") && invalid.message.contains("crystal-ball") && invalid.message.contains("use one of"), "{invalid:?}");
    let ready = condition(&refused, "Ready").unwrap();
    assert_eq!((ready.status.as_str(), ready.reason.as_str()), ("True", "PreviousVersionRuns"), "{ready:?}");
    // Where `kubectl describe augurpolicy` looks: accepted, the mode, then the refusal as a Warning.
    let events = events_on(&client, "crd", "web").await;
    assert!(events.iter().any(|(t, r, _)| t == "Normal" && r == "Accepted"), "{events:?}");
    assert!(events.iter().any(|(t, r, n)| t == "Normal" && r == "ScalesDirectly" && n.contains("Augur writes its replicas")), "{events:?}");
    assert!(events.iter().any(|(t, r, n)| t == "Warning" && r == "InvalidSpec" && n.contains("crystal-ball")), "{events:?}");

    let report = run.await.unwrap().unwrap();
    assert!(report.totals.executed >= 2, "{:?}", report.totals);
    // The previous version kept acting after the refused edit.
    let after: Vec<_> = common::records(&audit)
        .into_iter()
        .filter(|r| r["verdict"] == "executed")
        .filter(|r| std::time::SystemTime::from(k8s_openapi::jiff::Timestamp::from_str(r["time"].as_str().unwrap()).unwrap()) > edited)
        .collect();
    assert!(!after.is_empty(), "no action after the refused edit");
}

/// An AugurPolicy acts only in its own namespace: one whose target names another is refused
/// in its status (not Ready, InvalidSpec naming spec.target.namespace and the fix), and
/// nothing is written to the other namespace's workload.
#[tokio::test(flavor = "multi_thread")]
async fn an_augur_policy_reaching_outside_its_namespace_is_refused() {
    let client = control_plane().client().await;
    install(&client).await;
    namespace(&client, "crd-team").await;
    namespace(&client, "crd-other").await;
    deployment(&client, "crd-other", "web", 2).await;
    let dir = tempfile::tempdir().unwrap();
    let mut reaching = spec(dir.path(), "crd-team");
    reaching["target"]["namespace"] = json!("crd-other");
    create(&client, "crd-team", "web", reaching).await;
    let audit = dir.path().join("audit.jsonl");
    augur::commands::run(options(dir.path(), "crd-team", &audit, Duration::from_secs(4))).await.unwrap();
    let s = status(&client, "crd-team", "web").await;
    let invalid = condition(&s, "InvalidSpec").expect("an InvalidSpec condition");
    assert_eq!(invalid.status, "True");
    assert!(invalid.message.contains("spec.target.namespace") && invalid.message.contains("create the AugurPolicy in namespace `crd-other`"), "{invalid:?}");
    assert_eq!(condition(&s, "Ready").unwrap().status, "False");
    assert_eq!(replicas(&client, "crd-other", "web").await, 2);
}

/// The shipped example, deploy/augurpolicy-nginx.yaml, is policies/kind-nginx.yaml as an
/// AugurPolicy: the API server accepts it (server-side dry run, through the shipped CRD's
/// schema, nothing pruned), and it reads into the same policy as the file, but for its name,
/// its source and its audit log.
#[tokio::test(flavor = "multi_thread")]
async fn the_shipped_augur_policy_is_the_kind_policy_and_the_api_server_takes_it() {
    let client = control_plane().client().await;
    install(&client).await;
    let text = std::fs::read_to_string(common::root().join("deploy/augurpolicy-nginx.yaml")).unwrap();
    let example: AugurPolicy = yaml_serde::from_str(&text).unwrap();
    let dry = PostParams { dry_run: true, field_manager: None };
    let served = Api::<AugurPolicy>::namespaced(client.clone(), "default").create(&dry, &example).await.unwrap();
    assert_eq!(served.spec, example.spec, "the schema pruned or changed a field");

    let dir = tempfile::tempdir().unwrap();
    let placement = Placement { base: common::root().join("policies"), audit_dir: dir.path().to_path_buf() };
    let (source, document) = placement.document(&example).unwrap();
    let from_resource = augur::config::parse(&document, &source, &augur::config::Catalog::shipped()).unwrap_or_else(|p| panic!("{p:?}"));
    let from_file = augur::config::load(&common::root().join("policies/kind-nginx.yaml")).unwrap();
    assert_eq!(from_resource.name, "default-nginx");
    assert_eq!(from_resource.audit_path, dir.path().join("default.nginx.jsonl"));
    let same = augur::config::Policy { name: from_file.name.clone(), source: from_file.source.clone(), audit_path: from_file.audit_path.clone(), ..from_resource };
    assert_eq!(same, from_file);
}

/// An HPA on an AugurPolicy's target: the status says so (TargetManagedByHPA, True, HpaFloor)
/// and an Event on the AugurPolicy names the mode. Paused by its annotation, the policy acts on
/// nothing (the HPA's floor stays) and says so (Paused); unpaused, Augur raises the HPA's
/// minReplicas ahead of the surge the test metrics show, and never writes the Deployment's
/// replicas itself.
#[tokio::test(flavor = "multi_thread")]
async fn an_augur_policy_on_an_hpa_target_moves_the_floor_and_pauses_by_annotation() {
    let client = control_plane().client().await;
    install(&client).await;
    namespace(&client, "crd-hpa").await;
    deployment(&client, "crd-hpa", "web", 2).await;
    let hpas = hpa(&client, "crd-hpa", "web-hpa", "web", 2, 8).await;
    let floor = || async { hpas.get("web-hpa").await.unwrap().spec.unwrap().min_replicas.unwrap_or(1) };
    let dir = tempfile::tempdir().unwrap();
    let policy: AugurPolicy = serde_json::from_value(json!({
        "apiVersion": "augur.io/v1alpha1", "kind": "AugurPolicy",
        "metadata": { "name": "web", "namespace": "crd-hpa", "annotations": { "augur.io/paused": "true" } },
        "spec": spec(dir.path(), "crd-hpa"),
    }))
    .unwrap();
    let policies: Api<AugurPolicy> = Api::namespaced(client.clone(), "crd-hpa");
    policies.create(&PostParams::default(), &policy).await.unwrap();

    let audit = dir.path().join("audit.jsonl");
    augur::commands::run(options(dir.path(), "crd-hpa", &audit, Duration::from_secs(6))).await.unwrap();
    let paused = status(&client, "crd-hpa", "web").await;
    assert_eq!(condition(&paused, "Paused").map(|c| c.status.as_str()), Some("True"), "{paused:?}");
    let mode = condition(&paused, "TargetManagedByHPA").expect("the scaling mode in status");
    assert_eq!((mode.status.as_str(), mode.reason.as_str()), ("True", "HpaFloor"), "{mode:?}");
    assert!(mode.message.contains("HPA web-hpa scales the target"), "{mode:?}");
    assert_eq!(floor().await, 2, "paused: the floor stays");
    assert_eq!(replicas(&client, "crd-hpa", "web").await, 2);
    assert!(common::records(&audit).iter().all(|r| r["verdict"] != "executed"), "paused: nothing executed");
    let events = events_on(&client, "crd-hpa", "web").await;
    assert!(events.iter().any(|(t, r, n)| t == "Normal" && r == "HpaFloor" && n.contains("raises its minReplicas")), "{events:?}");

    // Unpaused: the floor rises; the HPA scales the Deployment.
    policies.patch("web", &PatchParams::default(), &Patch::Merge(json!({ "metadata": { "annotations": { "augur.io/paused": null } } }))).await.unwrap();
    augur::commands::run(options(dir.path(), "crd-hpa", &audit, Duration::from_secs(6))).await.unwrap();
    assert!(floor().await > 2, "the floor rose");
    let resumed = status(&client, "crd-hpa", "web").await;
    assert_eq!(condition(&resumed, "Paused").map(|c| c.status.as_str()), Some("False"), "{resumed:?}");
    let executed: Vec<_> = common::records(&audit).into_iter().filter(|r| r["verdict"] == "executed").collect();
    assert!(!executed.is_empty() && executed.iter().all(|r| r["result"].as_str().unwrap().starts_with("hpa-floor:")), "{executed:?}");
}
