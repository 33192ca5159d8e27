//! The executor and the workload source against a real kube-apiserver (with etcd and
//! kube-controller-manager; see common/k8s.rs). Each test works in its own namespace.

use crate::common;

use augur::cluster::{KubeExecutor, KubeWorkloads};
use augur::config;
use augur::domain::{Action, Target};
use augur::metrics::WorkloadSource;
use augur::remediation::{ExecuteError, Executor, Order};
use common::k8s::control_plane;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Namespace, Node, Pod};
use k8s_openapi::api::events::v1::Event;
use kube::api::{ListParams, PostParams};
use kube::{Api, Client};
use serde_json::json;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

pub(crate) async fn namespace(client: &Client, name: &str) {
    let ns: Namespace = serde_json::from_value(json!({ "metadata": { "name": name } })).unwrap();
    let _ = Api::<Namespace>::all(client.clone()).create(&PostParams::default(), &ns).await;
}

pub(crate) async fn deployment(client: &Client, ns: &str, name: &str, replicas: i32) {
    let d: Deployment = serde_json::from_value(json!({
        "metadata": { "name": name, "namespace": ns },
        "spec": {
            "replicas": replicas,
            "selector": { "matchLabels": { "app": name } },
            "template": { "metadata": { "labels": { "app": name } }, "spec": { "containers": [{ "name": "web", "image": "nginx" }] } }
        }
    }))
    .unwrap();
    Api::<Deployment>::namespaced(client.clone(), ns).create(&PostParams::default(), &d).await.unwrap();
}

pub(crate) async fn node(client: &Client, name: &str) {
    let n: Node = serde_json::from_value(json!({ "metadata": { "name": name } })).unwrap();
    let _ = Api::<Node>::all(client.clone()).create(&PostParams::default(), &n).await;
}

pub(crate) fn target(ns: &str, name: &str) -> Target {
    Target { kind: "Deployment".into(), namespace: ns.into(), name: name.into() }
}

/// An HPA named `name` on Deployment `target` (CPU at 50%), between `min` and `max`; its Api.
pub(crate) async fn hpa(client: &Client, ns: &str, name: &str, target: &str, min: i32, max: i32) -> Api<k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler> {
    let hpa = serde_json::from_value(json!({
        "metadata": { "name": name, "namespace": ns },
        "spec": {
            "scaleTargetRef": { "apiVersion": "apps/v1", "kind": "Deployment", "name": target },
            "minReplicas": min, "maxReplicas": max,
            "metrics": [{ "type": "Resource", "resource": { "name": "cpu", "target": { "type": "Utilization", "averageUtilization": 50 } } }]
        }
    }))
    .unwrap();
    let hpas = Api::namespaced(client.clone(), ns);
    hpas.create(&PostParams::default(), &hpa).await.unwrap();
    hpas
}

pub(crate) async fn replicas(client: &Client, ns: &str, name: &str) -> i32 {
    Api::<Deployment>::namespaced(client.clone(), ns).get(name).await.unwrap().spec.unwrap().replicas.unwrap()
}

/// Polls `check` for up to 30 s (controllers work asynchronously).
pub(crate) async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    for _ in 0..120 {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    panic!("timed out waiting for {what}");
}

pub(crate) async fn events(client: &Client, ns: &str) -> Vec<Event> {
    Api::<Event>::namespaced(client.clone(), ns).list(&ListParams::default()).await.unwrap().items
}

#[tokio::test(flavor = "multi_thread")]
async fn scale_goes_through_the_scale_subresource_and_publishes_an_event() {
    let client = control_plane().client().await;
    namespace(&client, "scale").await;
    deployment(&client, "scale", "web", 2).await;
    let executor = KubeExecutor::new(client.clone(), "augur-test");
    let result = executor.execute(&Order::new(&target("scale", "web"), &Action::Scale { replicas: 5 }, "predicted breach in 4m")).await.unwrap();
    assert_eq!(result, "scaled 2 -> 5");
    assert_eq!(replicas(&client, "scale", "web").await, 5);
    let events = events(&client, "scale").await;
    let ours = events.iter().find(|e| e.reason.as_deref() == Some("Scaled")).expect("a Scaled event");
    assert_eq!(ours.reporting_controller.as_deref(), Some("augur"));
    assert!(ours.note.as_deref().unwrap().contains("predicted breach in 4m"), "{ours:?}");
    assert_eq!(ours.regarding.as_ref().unwrap().name.as_deref(), Some("web"));
}

#[tokio::test(flavor = "multi_thread")]
async fn server_side_dry_run_changes_nothing_and_says_so() {
    let client = control_plane().client().await;
    namespace(&client, "dry").await;
    deployment(&client, "dry", "web", 2).await;
    node(&client, "dry-node").await;
    let executor = KubeExecutor::new(client.clone(), "augur-test");
    let result = executor.execute(&Order::new(&target("dry", "web"), &Action::Scale { replicas: 7 }, "why").dry_run(true)).await.unwrap();
    assert_eq!(result, "would scale 2 -> 7");
    executor.execute(&Order::new(&target("dry", "web"), &Action::CordonNode { node: "dry-node".into() }, "hot").dry_run(true)).await.unwrap();
    assert_eq!(replicas(&client, "dry", "web").await, 2);
    let node = Api::<Node>::all(client.clone()).get("dry-node").await.unwrap();
    assert_ne!(node.spec.and_then(|s| s.unschedulable), Some(true));
    // The API server validated it: a dry run of something invalid fails.
    let err = executor.execute(&Order::new(&target("dry", "missing"), &Action::Scale { replicas: 3 }, "why").dry_run(true)).await.unwrap_err();
    assert!(matches!(err, ExecuteError::Refused(_)), "{err}");
    assert!(events(&client, "dry").await.iter().any(|e| e.reason.as_deref() == Some("DryRunScaled")));
}

#[tokio::test(flavor = "multi_thread")]
async fn restart_deletes_the_pod_and_its_replicaset_replaces_it() {
    let client = control_plane().client().await;
    namespace(&client, "restart").await;
    deployment(&client, "restart", "web", 2).await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), "restart");
    let live = |pods: Api<Pod>| async move { pods.list(&ListParams::default().labels("app=web")).await.unwrap().items.into_iter().filter(|p| p.metadata.deletion_timestamp.is_none()).collect::<Vec<_>>() };
    eventually("2 pods from the ReplicaSet", || { let p = pods.clone(); async move { live(p).await.len() == 2 } }).await;
    let victim = live(pods.clone()).await[0].metadata.name.clone().unwrap();
    let executor = KubeExecutor::new(client.clone(), "augur-test");
    let result = executor.execute(&Order::new(&target("restart", "web"), &Action::RestartPod { pod: victim.clone() }, "memory")).await.unwrap();
    assert!(result.starts_with(&format!("deleted pod {victim}")), "{result}");
    eventually("a replacement pod", || {
        let (p, victim) = (pods.clone(), victim.clone());
        async move {
            let now = live(p).await;
            now.len() == 2 && now.iter().all(|x| x.metadata.name.as_deref() != Some(&victim))
        }
    })
    .await;
    // Deleting it again is not an error and deletes nothing else: it is already gone.
    let again = executor.execute(&Order::new(&target("restart", "web"), &Action::RestartPod { pod: victim.clone() }, "memory")).await;
    assert!(matches!(again, Err(ExecuteError::Refused(ref m)) if m.contains("does not exist")), "{again:?}");
    assert_eq!(live(pods.clone()).await.len(), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn cordon_and_uncordon_only_its_own() {
    let client = control_plane().client().await;
    node(&client, "hot-node").await;
    node(&client, "manual-node").await;
    let nodes: Api<Node> = Api::all(client.clone());
    let executor = KubeExecutor::new(client.clone(), "augur-test");
    let t = target("default", "web");
    executor.execute(&Order::new(&t, &Action::CordonNode { node: "hot-node".into() }, "84 C predicted")).await.unwrap();
    let n = nodes.get("hot-node").await.unwrap();
    assert_eq!(n.spec.as_ref().unwrap().unschedulable, Some(true));
    assert_eq!(n.metadata.annotations.as_ref().unwrap().get("augur.io/cordoned-by").map(String::as_str), Some("augur"));
    executor.execute(&Order::new(&t, &Action::UncordonNode { node: "hot-node".into() }, "cool again")).await.unwrap();
    let n = nodes.get("hot-node").await.unwrap();
    assert_ne!(n.spec.as_ref().unwrap().unschedulable, Some(true));
    assert!(!n.metadata.annotations.unwrap_or_default().contains_key("augur.io/cordoned-by"));
    // A node someone else cordoned is not Augur's to uncordon.
    nodes.patch("manual-node", &kube::api::PatchParams::default(), &kube::api::Patch::Merge(json!({ "spec": { "unschedulable": true } }))).await.unwrap();
    let err = executor.execute(&Order::new(&t, &Action::UncordonNode { node: "manual-node".into() }, "cool")).await.unwrap_err();
    assert!(err.to_string().contains("not cordoned by Augur"), "{err}");
    assert_eq!(nodes.get("manual-node").await.unwrap().spec.unwrap().unschedulable, Some(true));
}

#[tokio::test(flavor = "multi_thread")]
async fn the_workload_source_reads_replicas_pods_and_nodes() {
    let client = control_plane().client().await;
    namespace(&client, "state").await;
    deployment(&client, "state", "shop", 3).await;
    node(&client, "state-node").await;
    let text = "name: shop\ntarget: { kind: Deployment, namespace: state, name: shop }\nmetrics: [{ name: cpu, query: cpu }]\nforecast: { baseline: last-value }\nrisks: []\nremediations: []\nguard: { min_replicas: 1, max_replicas: 5 }\naudit: { path: a.jsonl }\n".to_string();
    let policy = config::parse(&text, &common::root().join("policies/t.yaml"), &augur::config::Catalog::shipped()).unwrap_or_else(|p| panic!("{p:?}"));
    let source = KubeWorkloads::new(client.clone());
    let pods: Api<Pod> = Api::namespaced(client.clone(), "state");
    eventually("3 pods", || { let p = pods.clone(); async move { p.list(&ListParams::default().labels("app=shop")).await.unwrap().items.len() == 3 } }).await;
    let w = source.workload(&policy).await.unwrap();
    assert_eq!((w.replicas, w.ready_replicas), (3, 0), "no kubelet: nothing gets ready");
    assert_eq!(w.pods.len(), 3);
    assert!(w.pods.iter().all(|p| p.name.starts_with("shop-") && p.phase == "Pending" && !p.ready), "{:?}", w.pods);
    let n = w.nodes.iter().find(|n| n.name == "state-node").unwrap();
    assert!(n.schedulable && !n.cordoned_by_augur && !n.ready);
    let missing = config::parse(&text.replace("name: shop }", "name: gone }"), &common::root().join("policies/t.yaml"), &augur::config::Catalog::shipped()).unwrap();
    assert!(source.workload(&missing).await.unwrap_err().to_string().contains("not known"));
}

/// Applies deploy/rbac.yaml as it ships (as the admin).
async fn apply_shipped_rbac(client: &Client) {
    use k8s_openapi::api::core::v1::ServiceAccount;
    use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
    let text = std::fs::read_to_string(common::root().join("deploy/rbac.yaml")).unwrap();
    let pp = PostParams::default();
    for doc in text.split("\n---\n") {
        let value: serde_json::Value = yaml_serde::from_str(doc).unwrap();
        let ns = value["metadata"]["namespace"].as_str().unwrap_or("augur").to_string();
        let created = match value["kind"].as_str().unwrap() {
            "Namespace" => Api::<Namespace>::all(client.clone()).create(&pp, &serde_json::from_value(value).unwrap()).await.map(|_| ()),
            "ServiceAccount" => Api::<ServiceAccount>::namespaced(client.clone(), &ns).create(&pp, &serde_json::from_value(value).unwrap()).await.map(|_| ()),
            "ClusterRole" => Api::<ClusterRole>::all(client.clone()).create(&pp, &serde_json::from_value(value).unwrap()).await.map(|_| ()),
            "ClusterRoleBinding" => Api::<ClusterRoleBinding>::all(client.clone()).create(&pp, &serde_json::from_value(value).unwrap()).await.map(|_| ()),
            "Role" => Api::<Role>::namespaced(client.clone(), &ns).create(&pp, &serde_json::from_value(value).unwrap()).await.map(|_| ()),
            "RoleBinding" => Api::<RoleBinding>::namespaced(client.clone(), &ns).create(&pp, &serde_json::from_value(value).unwrap()).await.map(|_| ()),
            other => panic!("deploy/rbac.yaml: unexpected kind {other}"),
        };
        if let Err(e) = created {
            assert!(e.to_string().contains("AlreadyExists"), "{e}");
        }
    }
}

/// A client that authenticates as the augur ServiceAccount with a token from the TokenRequest
/// API: the credentials Augur has in a cluster.
async fn service_account_client(admin: &Client) -> Client {
    use k8s_openapi::api::authentication::v1::TokenRequest;
    use k8s_openapi::api::core::v1::ServiceAccount;
    let request: TokenRequest = serde_json::from_value(json!({ "spec": { "audiences": ["https://kubernetes.default.svc"], "expirationSeconds": 3600 } })).unwrap();
    let token = Api::<ServiceAccount>::namespaced(admin.clone(), "augur").create_token_request("augur", &PostParams::default(), &request).await.unwrap();
    let token = token.status.unwrap().token;
    let plane = control_plane();
    let path = plane.dir.join("augur-sa.kubeconfig");
    common::k8s::write_kubeconfig(&path, &plane.server, &token);
    plane.client_from(&path).await
}

async fn allowed(client: &Client, group: &str, resource: &str, subresource: &str, verb: &str, ns: &str) -> bool {
    use k8s_openapi::api::authorization::v1::SelfSubjectAccessReview;
    let review: SelfSubjectAccessReview = serde_json::from_value(json!({
        "spec": { "resourceAttributes": { "group": group, "resource": resource, "subresource": subresource, "verb": verb, "namespace": ns } }
    }))
    .unwrap();
    let out = Api::<SelfSubjectAccessReview>::all(client.clone()).create(&PostParams::default(), &review).await.unwrap();
    out.status.unwrap().allowed
}

#[tokio::test(flavor = "multi_thread")]
async fn with_its_service_account_and_the_shipped_rbac_augur_can_do_its_work_and_no_more() {
    let admin = control_plane().client().await;
    apply_shipped_rbac(&admin).await;
    namespace(&admin, "rbac").await;
    deployment(&admin, "rbac", "web", 2).await;
    node(&admin, "rbac-node").await;
    let sa = service_account_client(&admin).await;
    // (group, resource, subresource, verb, namespace, allowed?)
    let table = [
        ("apps", "deployments", "", "get", "rbac", true),
        ("apps", "deployments", "scale", "update", "rbac", true),
        ("apps", "statefulsets", "scale", "update", "rbac", true),
        ("apps", "deployments", "", "patch", "rbac", true),
        ("", "pods", "", "list", "rbac", true),
        ("", "pods", "", "delete", "rbac", true),
        ("", "nodes", "", "patch", "rbac", true),
        ("events.k8s.io", "events", "", "create", "rbac", true),
        ("metrics.k8s.io", "pods", "", "list", "rbac", true),
        ("coordination.k8s.io", "leases", "", "update", "augur", true),
        ("coordination.k8s.io", "leases", "", "create", "augur", true),
        ("", "configmaps", "", "update", "augur", true),
        ("", "configmaps", "", "get", "rbac", false),
        ("autoscaling", "horizontalpodautoscalers", "", "update", "rbac", true),
        ("autoscaling", "horizontalpodautoscalers", "", "delete", "rbac", false),
        ("augur.io", "augurpolicies", "", "watch", "rbac", true),
        ("augur.io", "augurpolicies", "status", "patch", "rbac", true),
        ("augur.io", "augurpolicies", "", "update", "rbac", false),
        ("augur.io", "augurpolicies", "", "delete", "rbac", false),
        ("apps", "deployments", "", "delete", "rbac", false),
        ("apps", "deployments", "", "update", "rbac", false),
        ("apps", "deployments", "", "create", "rbac", false),
        ("", "secrets", "", "get", "rbac", false),
        ("", "nodes", "", "delete", "rbac", false),
        ("", "pods", "", "create", "rbac", false),
        ("rbac.authorization.k8s.io", "clusterroles", "", "create", "rbac", false),
        ("coordination.k8s.io", "leases", "", "update", "kube-system", false),
    ];
    for (group, resource, sub, verb, ns, want) in table {
        assert_eq!(allowed(&sa, group, resource, sub, verb, ns).await, want, "{verb} {group}/{resource}/{sub} in {ns}");
    }
    // And for real, with those credentials: the executor works, deleting the Deployment is refused.
    let executor = KubeExecutor::new(sa.clone(), "augur-test");
    executor.execute(&Order::new(&target("rbac", "web"), &Action::Scale { replicas: 4 }, "rbac test")).await.unwrap();
    executor.execute(&Order::new(&target("rbac", "web"), &Action::CordonNode { node: "rbac-node".into() }, "rbac test")).await.unwrap();
    assert_eq!(replicas(&admin, "rbac", "web").await, 4);
    let err = Api::<Deployment>::namespaced(sa.clone(), "rbac").delete("web", &Default::default()).await.unwrap_err();
    assert!(err.to_string().contains("forbidden"), "{err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_conflict_is_retried_and_the_scale_applied_once() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let client = control_plane().client().await;
    namespace(&client, "conflict").await;
    deployment(&client, "conflict", "web", 2).await;
    // Between the executor's read and its write, another writer changes the Deployment (once):
    // the real API server then answers 409 Conflict to the stale write.
    let calls = std::sync::Arc::new(AtomicUsize::new(0));
    let (other, counter) = (client.clone(), calls.clone());
    let hook: augur::cluster::WriteHook = std::sync::Arc::new(move || {
        let (other, counter) = (other.clone(), counter.clone());
        Box::pin(async move {
            if counter.fetch_add(1, Ordering::SeqCst) == 0 {
                let patch = kube::api::Patch::Merge(json!({ "metadata": { "annotations": { "someone": "else" } } }));
                Api::<Deployment>::namespaced(other, "conflict").patch("web", &Default::default(), &patch).await.unwrap();
            }
        })
    });
    let executor = KubeExecutor::new(client.clone(), "augur-test").before_write(hook);
    let result = executor.execute(&Order::new(&target("conflict", "web"), &Action::Scale { replicas: 4 }, "surge")).await.unwrap();
    // At least our conflict; the Deployment controller's own status writes may add another.
    let attempts = calls.load(Ordering::SeqCst);
    assert!((2..=4).contains(&attempts), "a conflict, then retries until the write lands: {attempts} attempts");
    assert_eq!(result, "scaled 2 -> 4");
    assert_eq!(replicas(&client, "conflict", "web").await, 4);
    let scaled = events(&client, "conflict").await.into_iter().filter(|e| e.reason.as_deref() == Some("Scaled")).count();
    assert_eq!(scaled, 1, "applied and explained once");
}

#[tokio::test(flavor = "multi_thread")]
async fn rollout_restart_stamps_the_template_and_the_controller_rolls_the_pods() {
    use k8s_openapi::api::apps::v1::ReplicaSet;
    let client = control_plane().client().await;
    namespace(&client, "rollout").await;
    deployment(&client, "rollout", "web", 2).await;
    let sets: Api<ReplicaSet> = Api::namespaced(client.clone(), "rollout");
    eventually("the first ReplicaSet", || { let s = sets.clone(); async move { s.list(&ListParams::default()).await.unwrap().items.len() == 1 } }).await;
    let executor = KubeExecutor::new(client.clone(), "augur-test");
    let dry = executor.execute(&Order::new(&target("rollout", "web"), &Action::RolloutRestart, "leak everywhere").dry_run(true)).await.unwrap();
    assert_eq!(dry, "would restart every pod of Deployment rollout/web");
    let template = |d: Deployment| d.spec.unwrap().template.metadata.and_then(|m| m.annotations).unwrap_or_default();
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), "rollout");
    assert!(!template(deployments.get("web").await.unwrap()).contains_key("kubectl.kubernetes.io/restartedAt"), "dry run changed nothing");
    let result = executor.execute(&Order::new(&target("rollout", "web"), &Action::RolloutRestart, "leak everywhere")).await.unwrap();
    assert!(result.starts_with("restarting every pod of Deployment rollout/web"), "{result}");
    assert!(template(deployments.get("web").await.unwrap()).contains_key("kubectl.kubernetes.io/restartedAt"));
    eventually("a second ReplicaSet for the new template", || { let s = sets.clone(); async move { s.list(&ListParams::default()).await.unwrap().items.len() == 2 } }).await;
    let reasons: Vec<String> = events(&client, "rollout").await.into_iter().filter_map(|e| e.reason).collect();
    assert!(reasons.contains(&"RolloutRestarted".to_string()) && reasons.contains(&"DryRunRolloutRestarted".to_string()), "{reasons:?}");
}

/// A policy for `host run` on the test cluster: CPU from the real Prometheus (a constant
/// PromQL expression: 20 cores, far beyond 2 pods), scaled 3 pods a step, with a 1 s interval
/// and cooldown so that a few seconds show several actions.
pub(crate) fn cluster_policy(dir: &Path, ns: &str, prometheus: &str) -> PathBuf {
    let text = format!(
        r#"name: web
target: {{ kind: Deployment, namespace: {ns}, name: web }}
interval: 1s
source: {{ kind: prometheus, url: "{prometheus}" }}
metrics:
  - {{ name: cpu, query: "vector(20)", unit: cores }}
forecast: {{ baseline: last-value, horizon: 3, step: 1s }}
risks:
  - {{ name: cpu, metric: cpu, plugin: {risk}, settings: {{ capacity-per-pod: 0.5 }} }}
remediations:
  - {{ name: scale-up, risk: cpu, trigger: high, plugin: {scale}, settings: {{ step: 3 }}, capabilities: {{ actions: [scale] }} }}
guard: {{ remediate: true, min_replicas: 1, max_replicas: 60, max_step: 3, cooldown: 1s, max_actions_per_hour: 1000, min_history: 1, allowed_actions: [scale] }}
audit: {{ path: audit.jsonl }}
"#,
        risk = common::plugin("risk-cpu").display(),
        scale = common::plugin("scale").display(),
    );
    let file = dir.join(format!("{ns}.yaml"));
    std::fs::write(&file, text).unwrap();
    file
}

pub(crate) fn cluster_options(policy: &Path, audit: &Path, identity: &str, run_for: Duration, lease_ns: &str) -> augur::commands::RunOptions {
    augur::commands::RunOptions {
        policies: vec![policy.to_path_buf()],
        run_for: Some(run_for),
        audit_log: Some(audit.to_path_buf()),
        echo: false,
        leader_election: Some(augur::commands::LeaseOptions {
            namespace: lease_ns.into(),
            name: "augur".into(),
            timing: Some((Duration::from_secs(4), Duration::from_secs(3), Duration::from_millis(500))),
        }),
        identity: Some(identity.into()),
        kubeconfig: Some(control_plane().kubeconfig.clone()),
        ..Default::default()
    }
}

pub(crate) fn executed(audit: &Path) -> Vec<serde_json::Value> {
    let text = std::fs::read_to_string(audit).unwrap_or_default();
    text.lines().map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()).filter(|r| r["verdict"] == "executed").collect()
}

/// Two replicas of Augur against the same cluster and policy, with leader election: only the
/// Lease holder acts. The first starts and takes the Lease; the second starts while the first
/// leads and stands by; when the first stops, it releases the Lease and the second takes over.
#[tokio::test(flavor = "multi_thread")]
async fn two_hosts_with_leader_election_only_one_acts() {
    use k8s_openapi::api::coordination::v1::Lease;
    let client = control_plane().client().await;
    let prometheus = common::prometheus::prometheus();
    namespace(&client, "leader").await;
    deployment(&client, "leader", "web", 2).await;
    let dir = tempfile::tempdir().unwrap();
    let policy = cluster_policy(dir.path(), "leader", &prometheus.url);
    let (audit_a, audit_b) = (dir.path().join("a.jsonl"), dir.path().join("b.jsonl"));

    let a = tokio::spawn(augur::commands::run(cluster_options(&policy, &audit_a, "augur-a", Duration::from_secs(6), "leader")));
    let leases: Api<Lease> = Api::namespaced(client.clone(), "leader");
    let holder = |leases: Api<Lease>| async move { leases.get_opt("augur").await.unwrap().and_then(|l| l.spec?.holder_identity) };
    eventually("augur-a to hold the Lease", || { let l = leases.clone(); async move { holder(l).await.as_deref() == Some("augur-a") } }).await;
    let b_started = std::time::SystemTime::now();
    let b = tokio::spawn(augur::commands::run(cluster_options(&policy, &audit_b, "augur-b", Duration::from_secs(16), "leader")));
    let report_a = a.await.unwrap().unwrap();
    let a_stopped = std::time::SystemTime::now();
    let report_b = b.await.unwrap().unwrap();

    let (acts_a, acts_b) = (executed(&audit_a), executed(&audit_b));
    let reasons = |audit: &Path| std::fs::read_to_string(audit).unwrap_or_default().lines().take(3).collect::<Vec<_>>().join("\n");
    assert!(!acts_a.is_empty() && report_a.totals.executed > 0, "the leader acted; its audit begins:\n{}", reasons(&audit_a));
    assert!(!acts_b.is_empty() && report_b.totals.executed > 0, "the standby took over once the leader stopped");
    // The standby did nothing while the leader held the Lease: all its records are later.
    let b_first = k8s_openapi::jiff::Timestamp::from_str(acts_b[0]["time"].as_str().unwrap()).unwrap();
    let a_last = k8s_openapi::jiff::Timestamp::from_str(acts_a.last().unwrap()["time"].as_str().unwrap()).unwrap();
    assert!(b_first > a_last, "augur-b acted at {b_first}, before augur-a's last action at {a_last}");
    assert!(std::time::SystemTime::from(b_first) >= a_stopped - Duration::from_secs(1), "augur-b acted only after augur-a stopped");
    assert!(std::time::SystemTime::from(b_first) > b_started);
    // Every action is explained once, by the replica that did it.
    let scaled: Vec<Event> = events(&client, "leader").await.into_iter().filter(|e| e.reason.as_deref() == Some("Scaled")).collect();
    let by = |who: &str| scaled.iter().filter(|e| e.reporting_instance.as_deref() == Some(who)).count();
    assert_eq!((by("augur-a"), by("augur-b")), (acts_a.len(), acts_b.len()), "{scaled:#?}");
    let lease = leases.get("augur").await.unwrap().spec.unwrap();
    assert!(lease.lease_transitions.unwrap_or(0) >= 1, "{lease:?}");
    assert_eq!(lease.holder_identity, None, "released on a clean stop");
}

/// No cluster: `host run` without `--simulate` refuses to start and says how to fix it; it
/// never falls back to the simulator.
#[test]
fn without_a_reachable_cluster_host_run_refuses_to_start() {
    let dir = tempfile::tempdir().unwrap();
    let dead = dir.path().join("dead.kubeconfig");
    common::k8s::write_kubeconfig(&dead, "https://127.0.0.1:9", "token");
    let missing = dir.path().join("missing.kubeconfig");
    for (kubeconfig, expect) in [(&dead, "does not answer"), (&missing, "no Kubernetes cluster configured")] {
        let out = std::process::Command::new(common::host_binary())
            .args(["run", "--policy"])
            .arg(common::root().join("policies/nginx.yaml"))
            .env("KUBECONFIG", kubeconfig)
            .env("HOME", dir.path())
            .env_remove("KUBERNETES_SERVICE_HOST")
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{stderr}");
        assert!(stderr.contains(expect) && stderr.contains("--simulate"), "{stderr}");
        assert!(!String::from_utf8_lossy(&out.stdout).contains("ticks"), "no loop ran");
    }
}

/// Every object in deploy/ as it ships is accepted by the real API server (server-side dry
/// run, after the Namespace exists): the kinds, fields and references are valid.
#[tokio::test(flavor = "multi_thread")]
async fn the_deploy_manifests_are_accepted_by_the_api_server() {
    let client = control_plane().client().await;
    namespace(&client, "augur").await;
    let mut checked = Vec::new();
    for file in ["deploy/crd.yaml", "deploy/rbac.yaml", "deploy/augur.yaml"] {
        let text = std::fs::read_to_string(common::root().join(file)).unwrap();
        checked.extend(dry_run_create(&client, file, &text).await);
    }
    for kind in ["CustomResourceDefinition", "Namespace", "ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding", "Deployment", "Service"] {
        assert!(checked.iter().any(|k| k == kind), "deploy/ has no {kind}: {checked:?}");
    }
}

/// Installs the CRD in `file` (server-side apply) and waits until `name` is established.
pub(crate) async fn install_crd(client: &Client, file: &Path, name: &str) {
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
    use kube::api::{Patch, PatchParams};
    let crd: CustomResourceDefinition = yaml_serde::from_str(&std::fs::read_to_string(file).unwrap()).unwrap();
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    api.patch(name, &PatchParams::apply("augur-test").force(), &Patch::Apply(&crd)).await.unwrap();
    eventually(&format!("{name} to be established"), || {
        let api = api.clone();
        async move { api.get(name).await.unwrap().status.and_then(|s| s.conditions).unwrap_or_default().iter().any(|c| c.type_ == "Established" && c.status == "True") }
    })
    .await;
}

/// Creates every object of a YAML stream with a server-side dry run (an object that exists
/// already counts as accepted), panicking with `file`, the kind and the API server's answer
/// on the first it refuses; returns the kinds.
pub(crate) async fn dry_run_create(client: &Client, file: &str, text: &str) -> Vec<String> {
    use kube::api::{DynamicObject, GroupVersionKind};
    let mut kinds = Vec::new();
    for doc in text.split("\n---") {
        let doc = doc.trim_start_matches('\n');
        let value: serde_json::Value = yaml_serde::from_str(doc).unwrap_or_else(|e| panic!("{file}: {e}"));
        if value.is_null() {
            continue;
        }
        let object: DynamicObject = serde_json::from_value(value).unwrap_or_else(|e| panic!("{file}: {e}"));
        let types = object.types.clone().unwrap_or_else(|| panic!("{file}: a document without apiVersion/kind"));
        let gvk = GroupVersionKind::try_from(&types).unwrap();
        let (resource, caps) = kube::discovery::pinned_kind(client, &gvk).await.unwrap_or_else(|e| panic!("{file}: {} is not served: {e}", types.kind));
        let api: Api<DynamicObject> = match caps.scope {
            kube::discovery::Scope::Namespaced => Api::namespaced_with(client.clone(), object.metadata.namespace.as_deref().unwrap_or("default"), &resource),
            kube::discovery::Scope::Cluster => Api::all_with(client.clone(), &resource),
        };
        let params = PostParams { dry_run: true, field_manager: None };
        match api.create(&params, &object).await {
            Ok(_) => {}
            Err(e) if e.to_string().contains("AlreadyExists") => {}
            Err(e) => panic!("{file}: {} {}: {e}", types.kind, object.metadata.name.unwrap_or_default()),
        }
        kinds.push(types.kind);
    }
    kinds
}

/// metrics-server reads pods' usage from kubelets, which this test cluster has none of, so
/// here (and only here) a stand-in serves the metrics.k8s.io API: a loopback HTTP server that
/// answers the PodMetricsList request as metrics-server does. It checks the request and the
/// sums; the real API server is not involved.
#[tokio::test(flavor = "multi_thread")]
async fn the_metrics_server_source_sums_the_target_pods_usage() {
    use augur::metrics::MetricSource;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let body = json!({
        "kind": "PodMetricsList", "apiVersion": "metrics.k8s.io/v1beta1", "metadata": {},
        "items": [
            { "metadata": { "name": "shop-a", "namespace": "shop" }, "timestamp": "2026-11-24T10:00:00Z", "window": "15s",
              "containers": [{ "name": "web", "usage": { "cpu": "250m", "memory": "100Mi" } }, { "name": "log", "usage": { "cpu": "50000000n", "memory": "28Mi" } }] },
            { "metadata": { "name": "shop-b", "namespace": "shop" }, "timestamp": "2026-11-24T10:00:00Z", "window": "15s",
              "containers": [{ "name": "web", "usage": { "cpu": "1", "memory": "1Gi" } }] }
        ]
    })
    .to_string();
    let server = tokio::spawn(async move {
        let (mut socket, _) = listener.accept().await.unwrap();
        let mut request = vec![0u8; 4096];
        let n = socket.read(&mut request).await.unwrap();
        let request = String::from_utf8_lossy(&request[..n]).to_string();
        let response = format!("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len());
        socket.write_all(response.as_bytes()).await.unwrap();
        request
    });
    let config = kube::Config::new(format!("http://127.0.0.1:{port}").parse().unwrap());
    augur::tls::install_provider();
    let source = augur::cluster::MetricsServerSource::new(Client::try_from(config).unwrap());
    let text = "name: shop\ntarget: { kind: Deployment, namespace: shop, name: shop }\nsource: { kind: metrics-server }\nmetrics: [{ name: cpu, resource: cpu }, { name: memory, resource: memory }]\nforecast: { baseline: last-value }\nrisks: []\nremediations: []\nguard: { min_replicas: 1, max_replicas: 5 }\naudit: { path: a.jsonl }\n";
    let policy = config::parse(text, &common::root().join("policies/t.yaml"), &augur::config::Catalog::shipped()).unwrap_or_else(|p| panic!("{p:?}"));
    let observation = source.collect(&policy).await.unwrap();
    let request = server.await.unwrap();
    assert!(request.starts_with("GET /apis/metrics.k8s.io/v1beta1/namespaces/shop/pods?"), "{request}");
    assert!(request.contains("labelSelector=app%3Dshop"), "{request}");
    assert!((observation.values["cpu"] - 1.3).abs() < 1e-9, "{observation:?}");
    assert_eq!(observation.values["memory"], (128.0 + 1024.0) * 1024.0 * 1024.0);
}

/// `host stress` finds its pod through the real API server; with no kubelet no pod runs, so
/// the exec itself (a kubelet's streaming endpoint) cannot be exercised here: the script is
/// run under a real `sh` by a unit test in host/src/cluster/stress.rs instead.
#[tokio::test(flavor = "multi_thread")]
async fn stress_picks_a_running_pod_or_says_why_not() {
    let client = control_plane().client().await;
    namespace(&client, "stress").await;
    let none = augur::cluster::choose_pod(&client, "stress", "app=nginx").await.unwrap_err().to_string();
    assert!(none.contains("no pod in namespace stress matches `app=nginx`"), "{none}");
    deployment(&client, "stress", "nginx", 2).await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), "stress");
    eventually("2 pods", || { let p = pods.clone(); async move { p.list(&ListParams::default().labels("app=nginx")).await.unwrap().items.len() == 2 } }).await;
    let pending = augur::cluster::choose_pod(&client, "stress", "app=nginx").await.unwrap_err().to_string();
    assert!(pending.contains("2 pod(s)") && pending.contains("none is Running"), "{pending}");
    // Mark one Running through the status subresource, as its kubelet would.
    let name = pods.list(&ListParams::default().labels("app=nginx")).await.unwrap().items[1].metadata.name.clone().unwrap();
    let status = kube::api::Patch::Merge(json!({ "status": { "phase": "Running" } }));
    pods.patch_status(&name, &Default::default(), &status).await.unwrap();
    assert_eq!(augur::cluster::choose_pod(&client, "stress", "app=nginx").await.unwrap(), name);
}

/// Where kubectl users look: an action that fails is a Warning Event (`FailedScale`) with the
/// cluster's answer, and one that succeeds stays Normal.
#[tokio::test(flavor = "multi_thread")]
async fn a_failed_action_is_a_warning_event() {
    let client = control_plane().client().await;
    namespace(&client, "failed").await;
    let executor = KubeExecutor::new(client.clone(), "augur-test");
    let err = executor.execute(&Order::new(&target("failed", "gone"), &Action::Scale { replicas: 4 }, "predicted breach in 2m")).await.unwrap_err();
    assert!(matches!(err, ExecuteError::Refused(_)), "{err}");
    let events = events(&client, "failed").await;
    let warning = events.iter().find(|e| e.reason.as_deref() == Some("FailedScale")).expect("a FailedScale event");
    assert_eq!(warning.type_.as_deref(), Some("Warning"));
    let note = warning.note.as_deref().unwrap();
    assert!(note.contains("not found") && note.contains("predicted breach in 2m"), "{note}");
    assert_eq!(warning.regarding.as_ref().unwrap().name.as_deref(), Some("gone"));
}

/// `host run` on a cluster: the guard refuses every scale past `max_replicas` (3) tick after
/// tick; the refusal is a Warning Event `RejectedScale` on the Deployment with the guard's
/// reason, published once (not once a tick: at most one per workload, action and 5 minutes),
/// while the audit records each refusal.
#[tokio::test(flavor = "multi_thread")]
async fn the_guards_refusals_are_warning_events_without_a_flood() {
    let client = control_plane().client().await;
    let prometheus = common::prometheus::prometheus();
    namespace(&client, "refused").await;
    deployment(&client, "refused", "web", 2).await;
    let dir = tempfile::tempdir().unwrap();
    let policy = cluster_policy(dir.path(), "refused", &prometheus.url);
    std::fs::write(&policy, std::fs::read_to_string(&policy).unwrap().replace("max_replicas: 60", "max_replicas: 3")).unwrap();
    let audit = dir.path().join("refused.jsonl");
    let mut options = cluster_options(&policy, &audit, "augur-a", Duration::from_secs(5), "refused");
    options.leader_election = None;
    augur::commands::run(options).await.unwrap();
    assert_eq!(replicas(&client, "refused", "web").await, 3);
    let records = common::records(&audit);
    let refusals: Vec<_> = records.iter().filter(|r| r["verdict"] == "rejected").collect();
    assert!(refusals.len() >= 2, "the guard refused on several ticks: {records:?}");
    let events = events(&client, "refused").await;
    let warnings: Vec<_> = events.iter().filter(|e| e.reason.as_deref() == Some("RejectedScale")).collect();
    assert_eq!(warnings.len(), 1, "one Warning for {} refusals: {warnings:?}", refusals.len());
    let warning = warnings[0];
    assert_eq!(warning.type_.as_deref(), Some("Warning"));
    let note = warning.note.as_deref().unwrap();
    assert!(note.contains("guard refused it: replicas held at guard.max_replicas (3)"), "{note}");
    assert!(note.contains("proposed because: scale 3 -> "), "the plugin's reason follows: {note}");
    assert_eq!(warning.regarding.as_ref().unwrap().name.as_deref(), Some("web"));
    // The executed scale stays a Normal Event.
    assert!(events.iter().any(|e| e.reason.as_deref() == Some("Scaled") && e.type_.as_deref() == Some("Normal")));
}

/// `augur.io/paused: "true"` on the target: `host run` proposes as usual, but the guard refuses
/// every action while the annotation is there ("paused by an operator", in the audit and in a
/// Warning Event); the Deployment keeps its replicas. The source reads the annotation afresh
/// each tick, so removing it resumes.
#[tokio::test(flavor = "multi_thread")]
async fn an_annotated_target_is_paused() {
    use kube::api::{Patch, PatchParams};
    let client = control_plane().client().await;
    let prometheus = common::prometheus::prometheus();
    namespace(&client, "paused").await;
    deployment(&client, "paused", "web", 2).await;
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), "paused");
    let annotate = |value: &str| Patch::Merge(json!({ "metadata": { "annotations": { "augur.io/paused": value } } }));
    deployments.patch("web", &PatchParams::default(), &annotate("true")).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let policy = cluster_policy(dir.path(), "paused", &prometheus.url);
    let audit = dir.path().join("paused.jsonl");
    let options = |audit: &Path| {
        let mut o = cluster_options(&policy, audit, "augur-a", Duration::from_secs(3), "paused");
        o.leader_election = None;
        o
    };
    augur::commands::run(options(&audit)).await.unwrap();
    assert_eq!(replicas(&client, "paused", "web").await, 2, "nothing is written to a paused target");
    let records = common::records(&audit);
    let actions: Vec<_> = records.iter().filter(|r| r.get("verdict").is_some()).collect();
    assert!(!actions.is_empty(), "{records:?}");
    assert!(actions.iter().all(|r| r["verdict"] == "rejected" && r["reason"].as_str().unwrap().starts_with("paused by an operator: Deployment paused/web has the annotation augur.io/paused")), "{actions:?}");
    let warning = events(&client, "paused").await.into_iter().find(|e| e.reason.as_deref() == Some("RejectedScale")).expect("a RejectedScale Warning");
    assert!(warning.note.as_deref().unwrap().contains("paused by an operator"), "{warning:?}");
    // Resumed: the next run acts.
    deployments.patch("web", &PatchParams::default(), &annotate("false")).await.unwrap();
    let resumed = dir.path().join("resumed.jsonl");
    augur::commands::run(options(&resumed)).await.unwrap();
    assert!(replicas(&client, "paused", "web").await > 2, "{:?}", std::fs::read_to_string(&resumed));
}

/// Peace with the HPA: with an HPA on the target, `host run` never writes the Deployment's
/// replicas; its scale-up raises the HPA's `minReplicas` (`hpa-floor`, within the HPA's
/// `maxReplicas`, the HPA's own floor kept in an annotation), and the real HPA controller of
/// the test control plane scales the Deployment up to that floor. A scale-down lowers the floor
/// back, never below the HPA's own.
#[tokio::test(flavor = "multi_thread")]
async fn an_hpa_on_the_target_switches_augur_to_moving_its_floor() {
    use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
    let client = control_plane().client().await;
    let prometheus = common::prometheus::prometheus();
    namespace(&client, "hpa").await;
    deployment(&client, "hpa", "web", 1).await;
    let hpas = hpa(&client, "hpa", "web", "web", 1, 8).await;
    let dir = tempfile::tempdir().unwrap();
    let policy = cluster_policy(dir.path(), "hpa", &prometheus.url);
    let audit = dir.path().join("hpa.jsonl");
    let mut options = cluster_options(&policy, &audit, "augur-a", Duration::from_secs(4), "hpa");
    options.leader_election = None;
    augur::commands::run(options).await.unwrap();

    let floor = |h: HorizontalPodAutoscaler| (h.spec.unwrap().min_replicas.unwrap_or(1), h.metadata.annotations.unwrap_or_default().get("augur.io/min-replicas-before").cloned());
    let (min, before) = floor(hpas.get("web").await.unwrap());
    assert!(min > 1, "the floor rose: {min}");
    assert_eq!(before.as_deref(), Some("1"), "the HPA's own floor is kept");
    let acts = executed(&audit);
    assert!(!acts.is_empty() && acts.iter().all(|r| r["result"].as_str().unwrap().starts_with("hpa-floor: moved HPA web minReplicas") || r["result"].as_str().unwrap().starts_with("hpa-floor: HPA web minReplicas stays")), "{acts:?}");
    // The HPA, not Augur, scales the Deployment: its controller raises it to the floor.
    eventually("the HPA controller to scale the Deployment to the floor", || {
        let client = client.clone();
        async move { replicas(&client, "hpa", "web").await >= min }
    })
    .await;
    // A scale-down lowers the floor, to the HPA's own at the lowest.
    let executor = KubeExecutor::new(client.clone(), "augur-test");
    let result = executor.execute(&Order::new(&target("hpa", "web"), &Action::Scale { replicas: 0 }, "the forecast's peak has passed")).await.unwrap();
    assert_eq!(result, format!("hpa-floor: moved HPA web minReplicas {min} -> 1; the HPA scales the workload"));
    assert_eq!(floor(hpas.get("web").await.unwrap()).0, 1);
}

/// State that survives failover: the leader (a `host` process) scales, then is killed
/// (SIGKILL: no clean release of the Lease); the standby takes the Lease once it expires,
/// reads the guard state the leader kept in the cluster (ConfigMap `augur-state-web`), and
/// the 10-minute cooldown still holds: it proposes again and again, and the guard refuses each,
/// so nothing is scaled a second time. (Its own audit is in another folder: no local state file
/// is shared between the two.)
#[tokio::test(flavor = "multi_thread")]
async fn after_a_failover_the_cooldown_still_holds() {
    use k8s_openapi::api::coordination::v1::Lease;
    use k8s_openapi::api::core::v1::ConfigMap;
    let client = control_plane().client().await;
    let prometheus = common::prometheus::prometheus();
    namespace(&client, "failover").await;
    deployment(&client, "failover", "web", 2).await;
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let policy = cluster_policy(dir_a.path(), "failover", &prometheus.url);
    std::fs::write(&policy, std::fs::read_to_string(&policy).unwrap().replace("cooldown: 1s", "cooldown: 10m")).unwrap();
    let mut leader = std::process::Command::new(common::host_binary())
        .args(["run", "--quiet", "--no-watch", "--identity", "augur-a", "--lease-namespace", "failover", "--policy"])
        .arg(&policy)
        .arg("--audit-log")
        .arg(dir_a.path().join("a.jsonl"))
        .arg("--kubeconfig")
        .arg(&control_plane().kubeconfig)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let configmaps: Api<ConfigMap> = Api::namespaced(client.clone(), "failover");
    eventually("the leader to scale and keep its guard state in the cluster", || {
        let (client, configmaps) = (client.clone(), configmaps.clone());
        async move { replicas(&client, "failover", "web").await == 5 && configmaps.get_opt("augur-state-web").await.unwrap().is_some() }
    })
    .await;
    leader.kill().unwrap();
    leader.wait().unwrap();

    let audit_b = dir_b.path().join("b.jsonl");
    let report = augur::commands::run(cluster_options(&policy, &audit_b, "augur-b", Duration::from_secs(24), "failover")).await.unwrap();
    let lease = Api::<Lease>::namespaced(client.clone(), "failover").get("augur").await.unwrap().spec.unwrap();
    assert!(lease.lease_transitions.unwrap_or(0) >= 1, "the standby took the Lease over: {lease:?}");
    let records = common::records(&audit_b);
    let refused: Vec<_> = records.iter().filter(|r| r["verdict"] == "rejected").collect();
    assert!(!refused.is_empty(), "the new leader decided after taking over: {records:?}");
    assert!(refused.iter().all(|r| r["reason"].as_str().unwrap().contains("cooldown")), "{refused:?}");
    assert_eq!(report.totals.executed, 0, "nothing executed inside the cooldown: {records:?}");
    assert_eq!(replicas(&client, "failover", "web").await, 5);
}
