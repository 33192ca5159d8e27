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
        let ready = list.iter().filter(|p| is_ready(p)).count();
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
    let policy = watching("real", "web", "{ name: cpu, query: cpu }");
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

/// Kills the `host run` child when the test ends, however it ends.
struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// What the demo says as it goes (shown by `make demo-node`, which runs this test with
/// --nocapture; a failing test shows it too).
fn say(what: impl std::fmt::Display) {
    println!("[{}] {what}", chrono_now());
}

fn chrono_now() -> String {
    let secs = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    format!("{:02}:{:02}:{:02}", secs / 3600 % 24, secs / 60 % 60, secs % 60)
}

/// Polls the audit log until `find` picks a record, for up to `limit`; fails with the last
/// records otherwise.
async fn audited(audit: &std::path::Path, what: &str, limit: Duration, find: impl Fn(&serde_json::Value) -> bool) -> serde_json::Value {
    let deadline = std::time::Instant::now() + limit;
    loop {
        let records = if audit.exists() { crate::common::records(audit) } else { Vec::new() };
        if let Some(found) = records.iter().find(|r| find(r)) {
            return found.clone();
        }
        if std::time::Instant::now() > deadline {
            let tail: Vec<String> = records.iter().rev().take(6).map(|r| r.to_string()).collect();
            let host = std::fs::read_to_string(audit.with_file_name("host.out")).unwrap_or_default();
            let host = &host[host.floor_char_boundary(host.len().saturating_sub(3000))..];
            panic!("no {what} in the audit after {limit:?}; its last records:\n{}\nhost run said:\n{host}", tail.join("\n"));
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// The prototype's demo, for real, on the node: nginx (the busybox stand-in) in `default`, a
/// real Prometheus scraping the kubelet's cAdvisor and kube-state-metrics, `host run` on
/// policies/node-demo.yaml (5 s interval). `host stress` first holds memory in one pod (the
/// script's /dev/shm file): the restart plugin restarts it and its replacement becomes Ready.
/// Then it busy-loops in one pod: the CPU climbs in Prometheus, the forecast sees the breach
/// coming and Augur scales before the usage reaches what the pods serve, looking ahead by the
/// start-up time it measured from the kubelet; the new pods become Ready on the node, and the
/// audit and the Events say why. Augur's own metrics are scraped beside, and every query of the
/// Grafana dashboard has data.
#[tokio::test(flavor = "multi_thread")]
async fn the_prototypes_demo_runs_for_real_on_the_node() {
    use crate::common::{self, prometheus::Prometheus};
    use augur::metrics::PrometheusSource;

    let cluster = node_cluster();
    let client = cluster.plane.client().await;
    say("the node is Ready; nginx (busybox, 100m/500m CPU) gets 2 replicas");
    busybox_deployment(&client, "default", "nginx", 2).await;
    ready_on_node(&client, "default", "app=nginx", 2, Duration::from_secs(60)).await;

    let augur_metrics = crate::common::k8s::free_port();
    let jobs = format!("{}  - job_name: augur\n    static_configs:\n      - targets: ['127.0.0.1:{augur_metrics}']\n", cluster.scrape_jobs());
    let prometheus = Prometheus::scraping_jobs(&jobs);
    let source = PrometheusSource::new().unwrap();
    say(format!("Prometheus at {} scrapes the kubelet's cAdvisor and resource metrics, kube-state-metrics and Augur", prometheus.url));

    // The prototype's own queries (the preset) read this node's data.
    let preset = watching("default", "nginx", "{ preset: prototype }");
    for name in ["cpu", "memory", "replicas"] {
        let metric = preset.metrics.iter().find(|m| m.name == name).unwrap();
        let mut value = None;
        for _ in 0..60 {
            value = source.instant(prometheus.url.as_str(), &metric.query).await.unwrap();
            if value.is_some_and(|v| v > 0.0) {
                break;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        let value = value.unwrap_or_else(|| panic!("the prototype's {name} query has no data from the node: {}", metric.query));
        say(format!("the prototype's {name} query reads {value:.4} {}", metric.unit));
        if name == "replicas" {
            assert_eq!(value, 2.0, "kube-state-metrics counts the Deployment's replicas");
        }
    }

    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("node-demo.yaml");
    let text = std::fs::read_to_string(common::root().join("policies/node-demo.yaml")).unwrap();
    std::fs::write(&policy, text.replace("url: http://127.0.0.1:9090", &format!("url: {}", prometheus.url))).unwrap();
    let audit = dir.path().join("audit.jsonl");
    let out = std::fs::File::create(dir.path().join("host.out")).unwrap();
    let _host = Child(
        std::process::Command::new(common::host_binary())
            .args(["run", "--no-leader-election", "--policy"])
            .arg(&policy)
            .arg("--kubeconfig")
            .arg(&cluster.plane.kubeconfig)
            .arg("--audit-log")
            .arg(&audit)
            .args(["--metrics-addr", &format!("127.0.0.1:{augur_metrics}")])
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .unwrap(),
    );
    say("host run --policy policies/node-demo.yaml: every 5 s it reads Prometheus, forecasts 60 s ahead, assesses, guards, acts");

    // The memory leak: the script's /dev/shm file held in one pod: 48 of the 52 MiB the two pods use, 26 MiB a pod
    // against the policy's 16 (50% of 32 MiB).
    let victim = augur::cluster::choose_pod(&client, "default", "app=nginx").await.unwrap();
    // guard.min_history (6 points): remediations act only after 30 s of history.
    let said = dir.path().join("host.out");
    let deadline = std::time::Instant::now() + Duration::from_secs(90);
    while std::fs::read_to_string(&said).unwrap_or_default().matches(" nginx memory: now ").count() < 8 {
        assert!(std::time::Instant::now() < deadline, "host run did not assess 8 ticks in 90 s:\n{}", std::fs::read_to_string(&said).unwrap_or_default());
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    say(format!("host stress: {victim} holds 48 MiB in /dev/shm (and busy-loops)"));
    let leak = augur::cluster::StressOptions { namespace: "default".into(), selector: "app=nginx".into(), duration: Duration::from_secs(120), memory_bytes: 48 << 20, container: None };
    let leaking = {
        let client = client.clone();
        tokio::spawn(async move { augur::cluster::stress(&client, &leak).await })
    };
    let restart = audited(&audit, "executed restart", Duration::from_secs(90), |r| r["verdict"] == "executed" && r["proposal"]["action"] == "restart-pod").await;
    assert!(restart["proposal"].to_string().contains(&victim), "the leaking pod is restarted: {restart}");
    say(format!("Augur restarted {victim}: {}", restart["proposal"]["reason"]));
    leaking.abort();
    let pods = Api::<Pod>::namespaced(client.clone(), "default");
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let list = pods.list(&ListParams::default().labels("app=nginx")).await.unwrap().items;
        let ready: Vec<String> = list.iter().filter(|p| p.metadata.deletion_timestamp.is_none() && is_ready(p)).filter_map(|p| p.metadata.name.clone()).collect();
        if ready.len() >= 2 && !ready.contains(&victim) {
            say(format!("its replacement is Ready: {ready:?}"));
            break;
        }
        assert!(std::time::Instant::now() < deadline, "no Ready replacement for {victim}: {ready:?}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    let startup = augur::cluster::KubeWorkloads::new(client.clone()).workload(&watching("default", "nginx", "{ name: cpu, query: cpu }")).await.unwrap().startup_seconds().expect("Ready pods have a start-up time");
    say(format!("the kubelet reports the pods Ready {startup} s after they were created: the start-up Augur looks ahead by"));

    // The CPU: one pod busy-loops at its 500m limit; two pods serve 0.45 cores at 90% of 0.25.
    let busy = augur::cluster::StressOptions { namespace: "default".into(), selector: "app=nginx".into(), duration: Duration::from_secs(150), memory_bytes: 0, container: None };
    say("host stress: one pod busy-loops for 150 s; the 1-minute rate climbs towards 0.5 cores");
    let stressing = {
        let client = client.clone();
        tokio::spawn(async move { augur::cluster::stress(&client, &busy).await })
    };
    let scale = audited(&audit, "executed scale-up", Duration::from_secs(150), |r| r["verdict"] == "executed" && r["proposal"]["action"] == "scale").await;
    let reason = scale["risk"].to_string();
    say(format!("Augur scaled: {}; the risk: {}", scale["result"], scale["risk"]));
    let observed = scale["observed"]["cpu"].as_f64().unwrap();
    assert!(reason.contains("predicted breach in"), "the forecast saw the breach coming: {reason}");
    assert!(observed < 0.45, "scaled ahead: when it acted the usage ({observed:.3} cores) was still below what 2 pods serve (0.45): {scale}");
    assert!(reason.contains(&format!("(start-up {startup}s + interval 5s)")), "the look-ahead is the measured start-up ({startup} s): {reason}");
    let wanted = crate::kubernetes::replicas(&client, "default", "nginx").await;
    assert!(wanted > 2, "{scale}");
    ready_on_node(&client, "default", "app=nginx", wanted as usize, Duration::from_secs(60)).await;
    say(format!("{wanted} pods Ready on {NODE}"));
    stressing.abort();

    let events = crate::kubernetes::events(&client, "default").await;
    let scaled = events.iter().find(|e| e.reason.as_deref() == Some("Scaled")).expect("a Scaled Event on the Deployment");
    assert!(scaled.note.as_deref().unwrap_or_default().contains("scale 2 -> "), "the Event says why: {scaled:?}");
    assert!(events.iter().any(|e| e.reason.as_deref() == Some("RestartedPod")), "a RestartedPod Event: {events:?}");

    // Augur's own metrics are in the same Prometheus: every query of the dashboard has data,
    // but those of the node's metrics this node has no exporter for (disk I/O and temperature
    // need a node exporter and thermal zones, latency an application's histogram; the README
    // says so).
    tokio::time::sleep(Duration::from_secs(3)).await;
    let vars = [("__rate_interval", "1m"), ("policy", "nginx"), ("namespace", "default"), ("workload", "nginx")];
    let not_here = ["node_disk_", "http_request_duration_seconds", "node_thermal_zone_temp"];
    let (mut answered, mut empty) = (0, Vec::new());
    for query in crate::prometheus::dashboard_queries(&vars) {
        if not_here.iter().any(|m| query.contains(m)) {
            continue;
        }
        match source.series_count(prometheus.url.as_str(), &query).await.unwrap_or(0) {
            0 => empty.push(query),
            _ => answered += 1,
        }
    }
    assert!(empty.is_empty(), "dashboard queries without data: {empty:#?}");
    say(format!("all {answered} of the Grafana dashboard's queries on Augur, CPU, memory and replicas are answered by this Prometheus"));
}

fn is_ready(p: &Pod) -> bool {
    p.status.as_ref().and_then(|s| s.conditions.as_ref()).is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// A policy that only watches Deployment `ns/name` (selector `app=name`) with `metric`: what
/// the tests read through Augur's own sources.
fn watching(ns: &str, name: &str, metric: &str) -> augur::config::Policy {
    let text = format!("name: {name}\ntarget: {{ kind: Deployment, namespace: {ns}, name: {name} }}\nmetrics: [{metric}]\nforecast: {{ baseline: last-value }}\nrisks: []\nremediations: []\nguard: {{ min_replicas: 1, max_replicas: 5 }}\naudit: {{ path: a.jsonl }}\n");
    augur::config::parse(&text, &crate::common::root().join("policies/watching.yaml"), &augur::config::Catalog::shipped()).unwrap()
}
