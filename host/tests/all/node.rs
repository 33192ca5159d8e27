//! On a real node (common::node: kubelet, containerd, runc): pods of the busybox image really
//! run; Augur's workload source reads them Ready with the start-up time the real kubelet
//! reports; `host stress` execs the prototype's script into a real container and its CPU shows
//! in the kubelet's cAdvisor metrics; metrics-server serves those pods' usage to Augur.

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
    let (cluster, _node) = node_cluster();
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

/// metrics-server on the node, behind the API server's aggregation layer: Augur's
/// metrics-server source (`source: { kind: metrics-server }`) reads the real pods' CPU and
/// memory summed over the target, and its workload source gives each pod its own usage (what
/// the restart plugin ranks pods by).
#[tokio::test(flavor = "multi_thread")]
async fn metrics_server_serves_the_real_pods_usage_to_augur() {
    use augur::metrics::MetricSource;
    let (cluster, _node) = node_cluster();
    let client = cluster.plane.client().await;
    namespace(&client, "top").await;
    busybox_deployment(&client, "top", "top", 2).await;
    ready_on_node(&client, "top", "app=top", 2, Duration::from_secs(60)).await;
    let busy = augur::cluster::choose_pod(&client, "top", "app=top").await.unwrap();
    let stress = augur::cluster::StressOptions { namespace: "top".into(), selector: "app=top".into(), duration: Duration::from_secs(60), memory_bytes: 24 << 20, container: None };
    let stressing = {
        let client = client.clone();
        tokio::spawn(async move { augur::cluster::stress(&client, &stress).await })
    };

    let text = "name: top\ntarget: { kind: Deployment, namespace: top, name: top }\nsource: { kind: metrics-server }\nmetrics: [{ name: cpu, resource: cpu }, { name: memory, resource: memory }]\nforecast: { baseline: last-value }\nrisks: []\nremediations: []\nguard: { min_replicas: 1, max_replicas: 5 }\naudit: { path: a.jsonl }\n";
    let policy = augur::config::parse(text, &crate::common::root().join("policies/top.yaml"), &augur::config::Catalog::shipped()).unwrap_or_else(|p| panic!("{p:?}"));
    let source = augur::cluster::MetricsServerSource::new(client.clone());
    // The busy loop runs at the pod's 500m limit; metrics-server's window needs two scrapes
    // (10 s apart) of the kubelet after it began.
    let mut last = None;
    for _ in 0..50 {
        let observation = source.collect(&policy).await.unwrap();
        let (cpu, memory) = (observation.values.get("cpu").copied().unwrap_or(0.0), observation.values.get("memory").copied().unwrap_or(0.0));
        last = Some(observation);
        if cpu > 0.3 && memory > (24 << 20) as f64 {
            break;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let observation = last.unwrap();
    assert!(observation.values["cpu"] > 0.3 && observation.values["cpu"] < 0.6, "two pods, one busy at its 500m limit: {observation:?}");
    assert!(observation.values["memory"] > (24 << 20) as f64, "one pod holds 24 MiB in /dev/shm: {observation:?}");

    let workload = augur::cluster::KubeWorkloads::new(client.clone()).workload(&watching("top", "top", "{ name: cpu, query: cpu }")).await.unwrap();
    let (stressed, idle): (Vec<_>, Vec<_>) = workload.pods.iter().partition(|p| p.name == busy);
    assert_eq!((stressed.len(), idle.len()), (1, 1), "{:?}", workload.pods);
    let (stressed, idle) = (stressed[0], idle[0]);
    assert!(stressed.cpu_cores.is_some_and(|c| c > 0.3) && stressed.memory_bytes.is_some_and(|m| m > (24 << 20) as f64), "the stressed pod's own usage: {stressed:?}");
    assert!(idle.cpu_cores.is_some_and(|c| c < 0.1) && idle.memory_bytes.is_some_and(|m| m < (8 << 20) as f64), "the idle pod's own usage: {idle:?}");
    stressing.abort();
}

/// Kills the `host run` child when the test ends, however it ends.
struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `host run` on `policy` against the node's cluster (and `extra` arguments), its audit log
/// and its output (`host.out`) in `dir`; stopped when the returned guard drops.
fn host_run(cluster: &crate::common::node::NodeCluster, dir: &std::path::Path, policy: &std::path::Path, extra: &[&str]) -> (Child, std::path::PathBuf) {
    let audit = dir.join("audit.jsonl");
    let out = std::fs::File::create(dir.join("host.out")).unwrap();
    let child = std::process::Command::new(crate::common::host_binary())
        .args(["run", "--no-leader-election", "--policy"])
        .arg(policy)
        .arg("--kubeconfig")
        .arg(&cluster.plane.kubeconfig)
        .arg("--audit-log")
        .arg(&audit)
        .args(extra)
        .stdout(out.try_clone().unwrap())
        .stderr(out)
        .spawn()
        .unwrap();
    (Child(child), audit)
}

/// Waits until `host run` (its output in `dir`) has assessed `rule` (`<policy> <rule>`) on
/// `ticks` ticks: the history its guard wants before remediations act.
async fn assessed(dir: &std::path::Path, rule: &str, ticks: usize, limit: Duration) {
    let said = dir.join("host.out");
    let deadline = std::time::Instant::now() + limit;
    while std::fs::read_to_string(&said).unwrap_or_default().matches(&format!(" {rule}: now ")).count() < ticks {
        assert!(std::time::Instant::now() < deadline, "host run did not assess {ticks} ticks in {limit:?}:\n{}", std::fs::read_to_string(&said).unwrap_or_default());
        tokio::time::sleep(Duration::from_secs(1)).await;
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

    let (cluster, _node) = node_cluster();
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
    let (_host, audit) = host_run(cluster, dir.path(), &policy, &["--metrics-addr", &format!("127.0.0.1:{augur_metrics}")]);
    say("host run --policy policies/node-demo.yaml: every 5 s it reads Prometheus, forecasts 60 s ahead, assesses, guards, acts");

    // The memory leak: the script's /dev/shm file held in one pod: 48 of the 52 MiB the two pods use, 26 MiB a pod
    // against the policy's 16 (50% of 32 MiB).
    let victim = augur::cluster::choose_pod(&client, "default", "app=nginx").await.unwrap();
    // guard.min_history (6 points): remediations act only after 30 s of history.
    assessed(dir.path(), "nginx memory", 8, Duration::from_secs(90)).await;
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
            // Counters appear with their first increment (the default cardinality budget): a
            // run that had no stage error has no series to show one.
            0 if query.contains("augur_stage_errors_total") => {
                let errors: Vec<_> = crate::common::records(&audit).into_iter().filter(|r| r.get("error_stage").is_some()).collect();
                assert!(errors.is_empty(), "stage errors were recorded but the dashboard shows none: {errors:?}");
            }
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

/// A stand-in for node-exporter's thermal zones: this machine has none, and no test can heat
/// a CPU on demand, so a loopback exporter serves `node_thermal_zone_temp` (Celsius, as
/// node-exporter does) at the temperature the test sets, one path per node. Prometheus adds
/// the `node` label, as a relabelling of node-exporter's targets does.
struct Thermometer {
    port: u16,
    celsius: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

impl Thermometer {
    async fn start(celsius: f64) -> Self {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let shared = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(celsius.to_bits()));
        let reading = shared.clone();
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                let mut request = vec![0u8; 2048];
                let n = socket.read(&mut request).await.unwrap_or(0);
                let hot = String::from_utf8_lossy(&request[..n]).starts_with(&format!("GET /metrics/{NODE} "));
                // The node under test reads what the test set; the other stays cool.
                let value = if hot { f64::from_bits(reading.load(std::sync::atomic::Ordering::Relaxed)) } else { 40.0 };
                let body = format!("# TYPE node_thermal_zone_temp gauge\nnode_thermal_zone_temp{{type=\"x86_pkg_temp\",zone=\"0\"}} {value}\n");
                let response = format!("HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len());
                let _ = socket.write_all(response.as_bytes()).await;
            }
        });
        Self { port, celsius: shared }
    }

    fn set(&self, celsius: f64) {
        self.celsius.store(celsius.to_bits(), std::sync::atomic::Ordering::Relaxed);
    }

    /// One scrape job per node, each labelled with its node.
    fn scrape_jobs(&self, nodes: &[&str]) -> String {
        nodes.iter().map(|node| format!("  - job_name: thermal-{node}\n    metrics_path: /metrics/{node}\n    static_configs:\n      - targets: ['127.0.0.1:{}']\n        labels: {{ node: {node} }}\n", self.port)).collect()
    }
}

/// A second Node object with no kubelet: the guard never cordons the last schedulable node,
/// and this one node is all this machine runs. A taint keeps the scheduler off it. Removed,
/// and the real node made schedulable again, when the test ends however it ends.
struct FakeNode(String);

const FAKE_NODE: &str = "augur-node-fake";

impl FakeNode {
    async fn create(client: &Client, server: &str) -> Self {
        let node: k8s_openapi::api::core::v1::Node = serde_json::from_value(json!({
            "metadata": { "name": FAKE_NODE, "labels": { "kubernetes.io/hostname": FAKE_NODE } },
            "spec": { "taints": [{ "key": "augur.test/no-kubelet", "effect": "NoSchedule" }] }
        }))
        .unwrap();
        Api::<k8s_openapi::api::core::v1::Node>::all(client.clone()).create(&PostParams::default(), &node).await.unwrap();
        Self(server.to_string())
    }
}

impl Drop for FakeNode {
    fn drop(&mut self) {
        let curl = |args: &[&str]| std::process::Command::new("curl").args(["-sk", "-o", "/dev/null", "-H", "Authorization: Bearer admin-token"]).args(args).status();
        let _ = curl(&["-X", "DELETE", &format!("{}/api/v1/nodes/{FAKE_NODE}", self.0)]);
        let _ = curl(&["-X", "PATCH", "-H", "Content-Type: application/merge-patch+json", "-d", r#"{"spec":{"unschedulable":null}}"#, &format!("{}/api/v1/nodes/{NODE}", self.0)]);
    }
}

/// Cordon on the real node: the node's temperature (a stand-in thermometer, scraped by a real
/// Prometheus) climbs towards its 85 C alarm; `host run` forecasts the breach and cordons the
/// node before it is reached; the real kube-scheduler then keeps a new pod of the workload
/// off it (Pending, Unschedulable) while the running pod keeps running. When the node cools,
/// Augur uncordons it (its own cordon only) and the pending pod starts.
#[tokio::test(flavor = "multi_thread")]
async fn a_hot_node_is_cordoned_before_its_alarm_and_uncordoned_when_cool() {
    use crate::common::prometheus::Prometheus;
    let (cluster, _alone) = crate::common::node::node_cluster_alone();
    let client = cluster.plane.client().await;
    namespace(&client, "heat").await;
    busybox_deployment(&client, "heat", "warm", 1).await;
    ready_on_node(&client, "heat", "app=warm", 1, Duration::from_secs(60)).await;
    let _fake = FakeNode::create(&client, &cluster.plane.server).await;
    let thermometer = Thermometer::start(60.0).await;
    let prometheus = Prometheus::scraping_jobs(&thermometer.scrape_jobs(&[NODE, FAKE_NODE]));

    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("heat.yaml");
    std::fs::write(
        &policy,
        format!(
            r#"name: warm
target: {{ kind: Deployment, namespace: heat, name: warm }}
interval: 2s
source: {{ kind: prometheus, url: "{url}" }}
metrics:
  - name: heat
    query: max by (node) (node_thermal_zone_temp)
    resource: node-temperature
    unit: celsius
forecast: {{ baseline: holt-damped, horizon: 10, step: 2s }}
risks:
  - {{ name: node-heat, metric: heat, plugin: risk-node, settings: {{ max-celsius: 85, act-on: upper }} }}
remediations:
  - name: cordon-hot-node
    risk: node-heat
    trigger: high
    plugin: cordon
    capabilities: {{ actions: [cordon-node, uncordon-node] }}
    settings: {{ max-celsius: 85, healthy-for-seconds: 0 }}
guard:
  mode: act
  min_replicas: 1
  max_replicas: 3
  cooldown: 2s
  max_actions_per_hour: 12
  min_history: 5
  allowed_actions: [cordon-node, uncordon-node]
audit: {{ path: audit.jsonl }}
"#,
            url = prometheus.url
        ),
    )
    .unwrap();
    let (_host, audit) = host_run(cluster, dir.path(), &policy, &[]);
    say("the node idles at 60 C; host run watches its temperature every 2 s");
    assessed(dir.path(), "warm node-heat", 6, Duration::from_secs(60)).await;

    // It heats by 1 C a second towards 95 C.
    let heating = {
        let celsius = thermometer.celsius.clone();
        tokio::spawn(async move {
            for t in 60..=95 {
                celsius.store(f64::from(t).to_bits(), std::sync::atomic::Ordering::Relaxed);
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        })
    };
    let cordon = audited(&audit, "executed cordon", Duration::from_secs(60), |r| r["verdict"] == "executed" && r["proposal"]["action"] == "cordon-node").await;
    heating.abort();
    let observed = cordon["observed"]["heat"].as_f64().unwrap();
    say(format!("Augur cordoned {NODE} at {observed:.0} C: {}", cordon["proposal"]["reason"]));
    assert!(cordon["proposal"].to_string().contains(NODE) && !cordon["proposal"].to_string().contains(FAKE_NODE), "the hot node, not the cool one: {cordon}");
    assert!(observed < 85.0, "cordoned ahead of the alarm (85 C): {cordon}");
    assert!(cordon["risk"].to_string().contains("predicted breach in"), "{cordon}");
    let nodes = Api::<k8s_openapi::api::core::v1::Node>::all(client.clone());
    let node = nodes.get(NODE).await.unwrap();
    assert_eq!(node.spec.as_ref().and_then(|s| s.unschedulable), Some(true), "{NODE} is cordoned");

    // The real scheduler honours it: a new pod stays Pending; the running one keeps running.
    thermometer.set(95.0);
    let deployments = Api::<Deployment>::namespaced(client.clone(), "heat");
    deployments.patch("warm", &Default::default(), &kube::api::Patch::Merge(json!({ "spec": { "replicas": 2 } }))).await.unwrap();
    let pods = Api::<Pod>::namespaced(client.clone(), "heat");
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let list = pods.list(&ListParams::default().labels("app=warm")).await.unwrap().items;
        let unschedulable = list.iter().any(|p| p.status.as_ref().and_then(|s| s.conditions.as_ref()).is_some_and(|c| c.iter().any(|c| c.type_ == "PodScheduled" && c.status == "False" && c.reason.as_deref() == Some("Unschedulable"))));
        if unschedulable {
            assert_eq!(list.iter().filter(|p| is_ready(p)).count(), 1, "the pod already running keeps running");
            say("kube-scheduler keeps the second pod off the cordoned node: Pending, Unschedulable");
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the scheduler did not refuse the cordoned node: {:?}", list.iter().map(|p| &p.status).collect::<Vec<_>>());
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    // Cool again: Augur undoes its own cordon, and the pending pod starts.
    thermometer.set(50.0);
    let uncordon = audited(&audit, "executed uncordon", Duration::from_secs(60), |r| r["verdict"] == "executed" && r["proposal"]["action"] == "uncordon-node").await;
    say(format!("Augur uncordoned {NODE}: {}", uncordon["proposal"]["reason"]));
    ready_on_node(&client, "heat", "app=warm", 2, Duration::from_secs(60)).await;
    say("both pods Ready on the node");
    let events = crate::kubernetes::events(&client, "heat").await;
    let all_events = crate::kubernetes::events(&client, "default").await;
    let reasons: Vec<&str> = events.iter().chain(&all_events).filter_map(|e| e.reason.as_deref()).collect();
    assert!(reasons.contains(&"CordonedNode") && reasons.contains(&"UncordonedNode"), "{reasons:?}");
}
