//! AugurPolicy resources against the real kube-apiserver of the tests: the shipped CRD
//! installs and is served; `host run --cluster-policies` picks a policy up, acts on it, and
//! shows its conditions and last action in `status`; an invalid edit is reported in status
//! while the previous version keeps acting; a policy reaching outside its namespace is refused.

use crate::common;
use crate::kubernetes::{cluster_policy, deployment, eventually, install_crd, namespace, replicas};

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
