//! The executor and the workload source against a real kube-apiserver (with etcd and
//! kube-controller-manager; see common/k8s.rs). Each test works in its own namespace.

mod common;

use augur::cluster::{KubeExecutor, KubeWorkloads};
use augur::config;
use augur::domain::{Action, Target};
use augur::metrics::WorkloadSource;
use augur::remediation::{ExecuteError, Executor};
use common::k8s::control_plane;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Namespace, Node, Pod};
use k8s_openapi::api::events::v1::Event;
use kube::api::{ListParams, PostParams};
use kube::{Api, Client};
use serde_json::json;
use std::time::Duration;

async fn namespace(client: &Client, name: &str) {
    let ns: Namespace = serde_json::from_value(json!({ "metadata": { "name": name } })).unwrap();
    let _ = Api::<Namespace>::all(client.clone()).create(&PostParams::default(), &ns).await;
}

async fn deployment(client: &Client, ns: &str, name: &str, replicas: i32) {
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

async fn node(client: &Client, name: &str) {
    let n: Node = serde_json::from_value(json!({ "metadata": { "name": name } })).unwrap();
    let _ = Api::<Node>::all(client.clone()).create(&PostParams::default(), &n).await;
}

fn target(ns: &str, name: &str) -> Target {
    Target { kind: "Deployment".into(), namespace: ns.into(), name: name.into() }
}

async fn replicas(client: &Client, ns: &str, name: &str) -> i32 {
    Api::<Deployment>::namespaced(client.clone(), ns).get(name).await.unwrap().spec.unwrap().replicas.unwrap()
}

/// Polls `check` for up to 30 s (controllers work asynchronously).
async fn eventually<F, Fut>(what: &str, mut check: F)
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

async fn events(client: &Client, ns: &str) -> Vec<Event> {
    Api::<Event>::namespaced(client.clone(), ns).list(&ListParams::default()).await.unwrap().items
}

#[tokio::test(flavor = "multi_thread")]
async fn scale_goes_through_the_scale_subresource_and_publishes_an_event() {
    let client = control_plane().client().await;
    namespace(&client, "scale").await;
    deployment(&client, "scale", "web", 2).await;
    let executor = KubeExecutor::new(client.clone(), "augur-test");
    let result = executor.execute(&target("scale", "web"), &Action::Scale { replicas: 5 }, false, "predicted breach in 4m").await.unwrap();
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
    let result = executor.execute(&target("dry", "web"), &Action::Scale { replicas: 7 }, true, "why").await.unwrap();
    assert_eq!(result, "would scale 2 -> 7");
    executor.execute(&target("dry", "web"), &Action::CordonNode { node: "dry-node".into() }, true, "hot").await.unwrap();
    assert_eq!(replicas(&client, "dry", "web").await, 2);
    let node = Api::<Node>::all(client.clone()).get("dry-node").await.unwrap();
    assert_ne!(node.spec.and_then(|s| s.unschedulable), Some(true));
    // The API server validated it: a dry run of something invalid fails.
    let err = executor.execute(&target("dry", "missing"), &Action::Scale { replicas: 3 }, true, "why").await.unwrap_err();
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
    let result = executor.execute(&target("restart", "web"), &Action::RestartPod { pod: victim.clone() }, false, "memory").await.unwrap();
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
    let again = executor.execute(&target("restart", "web"), &Action::RestartPod { pod: victim.clone() }, false, "memory").await;
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
    executor.execute(&t, &Action::CordonNode { node: "hot-node".into() }, false, "84 C predicted").await.unwrap();
    let n = nodes.get("hot-node").await.unwrap();
    assert_eq!(n.spec.as_ref().unwrap().unschedulable, Some(true));
    assert_eq!(n.metadata.annotations.as_ref().unwrap().get("augur.io/cordoned-by").map(String::as_str), Some("augur"));
    executor.execute(&t, &Action::UncordonNode { node: "hot-node".into() }, false, "cool again").await.unwrap();
    let n = nodes.get("hot-node").await.unwrap();
    assert_ne!(n.spec.as_ref().unwrap().unschedulable, Some(true));
    assert!(!n.metadata.annotations.unwrap_or_default().contains_key("augur.io/cordoned-by"));
    // A node someone else cordoned is not Augur's to uncordon.
    nodes.patch("manual-node", &kube::api::PatchParams::default(), &kube::api::Patch::Merge(json!({ "spec": { "unschedulable": true } }))).await.unwrap();
    let err = executor.execute(&t, &Action::UncordonNode { node: "manual-node".into() }, false, "cool").await.unwrap_err();
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
    let policy = config::parse(&text, &common::root().join("policies/t.yaml")).unwrap_or_else(|p| panic!("{p:?}"));
    let source = KubeWorkloads::new(client.clone());
    let pods: Api<Pod> = Api::namespaced(client.clone(), "state");
    eventually("3 pods", || { let p = pods.clone(); async move { p.list(&ListParams::default().labels("app=shop")).await.unwrap().items.len() == 3 } }).await;
    let w = source.workload(&policy).await.unwrap();
    assert_eq!((w.replicas, w.ready_replicas), (3, 0), "no kubelet: nothing gets ready");
    assert_eq!(w.pods.len(), 3);
    assert!(w.pods.iter().all(|p| p.name.starts_with("shop-") && p.phase == "Pending" && !p.ready), "{:?}", w.pods);
    let n = w.nodes.iter().find(|n| n.name == "state-node").unwrap();
    assert!(n.schedulable && !n.cordoned_by_augur && !n.ready);
    let missing = config::parse(&text.replace("name: shop }", "name: gone }"), &common::root().join("policies/t.yaml")).unwrap();
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
        ("apps", "deployments", "scale", "patch", "rbac", true),
        ("apps", "statefulsets", "scale", "patch", "rbac", true),
        ("", "pods", "", "list", "rbac", true),
        ("", "pods", "", "delete", "rbac", true),
        ("", "nodes", "", "patch", "rbac", true),
        ("events.k8s.io", "events", "", "create", "rbac", true),
        ("metrics.k8s.io", "pods", "", "list", "rbac", true),
        ("coordination.k8s.io", "leases", "", "update", "augur", true),
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
    executor.execute(&target("rbac", "web"), &Action::Scale { replicas: 4 }, false, "rbac test").await.unwrap();
    executor.execute(&target("rbac", "web"), &Action::CordonNode { node: "rbac-node".into() }, false, "rbac test").await.unwrap();
    assert_eq!(replicas(&admin, "rbac", "web").await, 4);
    let err = Api::<Deployment>::namespaced(sa.clone(), "rbac").delete("web", &Default::default()).await.unwrap_err();
    assert!(err.to_string().contains("forbidden"), "{err}");
}
