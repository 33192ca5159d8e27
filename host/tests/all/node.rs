//! On a real node (common::node: kubelet, containerd, runc): pods of the busybox image really
//! run; Augur's workload source reads them Ready with the start-up time the real kubelet
//! reports; `host stress` execs the prototype's script into a real container and its CPU shows
//! in the kubelet's cAdvisor metrics.

use crate::common::node::{BUSYBOX, NODE, node_cluster};
use crate::kubernetes::namespace;

use augur::metrics::WorkloadSource;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{ListParams, PostParams};
use kube::{Api, Client};
use serde_json::json;
use std::time::Duration;

/// A Deployment of the busybox image on the node: host network (the node has no pod
/// network), CPU requests and limits, a process that idles until stressed.
pub async fn busybox_deployment(client: &Client, ns: &str, name: &str, replicas: i32) {
    let deployment: Deployment = serde_json::from_value(json!({
        "metadata": { "name": name, "namespace": ns },
        "spec": {
            "replicas": replicas,
            "selector": { "matchLabels": { "app": name } },
            "template": {
                "metadata": { "labels": { "app": name } },
                "spec": {
                    "hostNetwork": true,
                    "terminationGracePeriodSeconds": 1,
                    "containers": [{
                        "name": "main",
                        "image": BUSYBOX,
                        "imagePullPolicy": "Never",
                        "command": ["sh", "-c", "trap 'exit 0' TERM; while true; do sleep 1; done"],
                        "resources": { "requests": { "cpu": "100m", "memory": "32Mi" }, "limits": { "cpu": "500m", "memory": "320Mi" } }
                    }]
                }
            }
        }
    }))
    .unwrap();
    Api::<Deployment>::namespaced(client.clone(), ns).create(&PostParams::default(), &deployment).await.unwrap();
}

/// Waits until `count` pods matching `selector` are Ready; otherwise fails with their status
/// and the namespace's Events, which say what the scheduler or kubelet refused.
pub async fn ready_on_node(client: &Client, ns: &str, selector: &str, count: usize, limit: Duration) {
    let pods = Api::<Pod>::namespaced(client.clone(), ns);
    let deadline = std::time::Instant::now() + limit;
    loop {
        let list = pods.list(&ListParams::default().labels(selector)).await.unwrap().items;
        let ready = list.iter().filter(|p| p.status.as_ref().and_then(|s| s.conditions.as_ref()).is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))).count();
        if ready >= count {
            return;
        }
        if std::time::Instant::now() > deadline {
            let events: Vec<String> = crate::kubernetes::events(client, ns).await.iter().map(|e| format!("{} {}: {}", e.regarding.as_ref().and_then(|r| r.name.clone()).unwrap_or_default(), e.reason.clone().unwrap_or_default(), e.note.clone().unwrap_or_default())).collect();
            let status: Vec<String> = list.iter().map(|p| format!("{}: {}", p.metadata.name.clone().unwrap_or_default(), serde_json::to_string(&p.status).unwrap())).collect();
            panic!("{ready} of {count} pods Ready after {limit:?}\npods:\n{}\nevents:\n{}", status.join("\n"), events.join("\n"));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn pods_run_on_the_real_node_and_host_stress_loads_one() {
    let cluster = node_cluster();
    let client = cluster.plane.client().await;
    namespace(&client, "real").await;
    busybox_deployment(&client, "real", "web", 2).await;
    let policy_text = "name: web\ntarget: { kind: Deployment, namespace: real, name: web }\nmetrics: [{ name: cpu, query: cpu }]\nforecast: { baseline: last-value }\nrisks: []\nremediations: []\nguard: { min_replicas: 1, max_replicas: 5 }\naudit: { path: a.jsonl }\n";
    let policy = augur::config::parse(policy_text, &crate::common::root().join("policies/t.yaml"), &augur::config::Catalog::shipped()).unwrap();
    let source = augur::cluster::KubeWorkloads::new(client.clone());
    ready_on_node(&client, "real", "app=web", 2, Duration::from_secs(60)).await;
    let workload = source.workload(&policy).await.unwrap();
    assert!(workload.pods.iter().all(|p| p.node == NODE && p.phase == "Running" && p.ready), "{:?}", workload.pods);
    let startup = workload.startup_seconds().expect("the kubelet reports when each pod became Ready");
    assert!(startup < 60, "creation to Ready on this node: {startup} s");

    // The prototype's stress script, exec'd into a real container.
    let options = augur::cluster::StressOptions { namespace: "real".into(), selector: "app=web".into(), duration: Duration::from_secs(4), memory_bytes: 16 << 20, container: None };
    let said = augur::cluster::stress(&client, &options).await.unwrap();
    assert!(said.contains("held 16 MiB and busy-looped for 4 s"), "{said}");

    // cAdvisor on the kubelet counts the container's CPU (it refreshes every housekeeping
    // interval, 5 s here).
    let mut last = Vec::new();
    for _ in 0..30 {
        let metrics = reqwest::get(format!("{}/metrics/cadvisor", cluster.kubelet_metrics)).await.unwrap().text().await.unwrap();
        last = metrics.lines().filter(|l| l.starts_with("container_cpu_usage_seconds_total{") && l.contains("namespace=\"real\"") && l.contains("container=\"main\"")).map(str::to_string).collect();
        let most = last.iter().filter_map(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok()).fold(0.0, f64::max);
        if last.len() == 2 && most > 1.0 {
            return;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    panic!("cAdvisor shows no container with over a CPU-second after the 4 s busy loop (one series per pod expected):\n{}", last.join("\n"));
}
