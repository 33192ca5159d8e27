//! A real one-node cluster for the tests that need pods to run: a control plane of its own
//! (so that the other tests' Deployments stay unscheduled), kube-scheduler, and a kubelet on
//! containerd and runc, with the two local images (scripts/build-node.sh). Started once per
//! test binary; torn down when it exits, even after a failure: every process by its
//! watchdog, then the containers, their mounts and cgroups, and the sysctls the kubelet set
//! restored to what they were. The last run's logs stay in /tmp/augur-node-logs.
//!
//! metrics-server runs beside it and serves metrics.k8s.io through the API server's
//! aggregation layer.
//!
//! What this node cannot do (the README says so too): pod networking (pods run with
//! `hostNetwork: true`; the CNI config has only the loopback plugin), image pulls (the images
//! are imported; pods use `imagePullPolicy: Never`), more than one node.

use super::k8s::{ControlPlane, after_exit, free_port, run, spawn, start};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The workload image: Debian's static busybox, every applet in /bin.
pub const BUSYBOX: &str = "augur.local/busybox:1";
/// The node's name.
pub const NODE: &str = "augur-node";

pub struct NodeCluster {
    pub plane: ControlPlane,
    /// The kubelet's read-only port: /metrics/cadvisor, /metrics/resource, /stats/summary.
    pub kubelet_metrics: String,
    /// kube-state-metrics' /metrics (`host:port`).
    pub kube_state_metrics: String,
    pub dir: PathBuf,
}

static NODE_CLUSTER: OnceLock<NodeCluster> = OnceLock::new();

/// The node tests share the node; one that cordons it holds it alone.
static IN_USE: std::sync::RwLock<()> = std::sync::RwLock::new(());

/// The shared one-node cluster, started on first use, for a test that leaves the node
/// schedulable: the guard keeps a test that cordons it from running meanwhile.
pub fn node_cluster() -> (&'static NodeCluster, std::sync::RwLockReadGuard<'static, ()>) {
    let guard = IN_USE.read().unwrap_or_else(|e| e.into_inner());
    (started(), guard)
}

/// The node cluster for a test that cordons the node: no other node test runs meanwhile.
pub fn node_cluster_alone() -> (&'static NodeCluster, std::sync::RwLockWriteGuard<'static, ()>) {
    let guard = IN_USE.write().unwrap_or_else(|e| e.into_inner());
    (started(), guard)
}

fn started() -> &'static NodeCluster {
    NODE_CLUSTER.get_or_init(|| start_node().unwrap_or_else(|e| panic!("cannot start the test node: {e}")))
}

/// The sysctls the kubelet sets at start, restored at teardown.
const SYSCTLS: [&str; 3] = ["vm/overcommit_memory", "kernel/panic", "kernel/panic_on_oops"];

fn start_node() -> Result<NodeCluster, String> {
    let root = super::root();
    let cache = PathBuf::from(run(Command::new("bash").arg(root.join("scripts/build-node.sh")))?.lines().last().unwrap_or_default());
    let (bin, images) = (cache.join("bin"), cache.join("images"));
    let plane = start("deployment-controller,replicaset-controller,serviceaccount-token-controller,garbage-collector-controller,node-lifecycle-controller")?;
    // Apart from the control plane's folder, which its own watchdog removes: this one holds
    // the containers' mounts, which the teardown below unmounts first.
    let dir = tempfile::Builder::new().prefix("augur-node-").tempdir().map_err(|e| e.to_string())?.keep();
    std::fs::create_dir_all(dir.join("cni")).map_err(|e| e.to_string())?;
    let socket = dir.join("containerd.sock");

    // The teardown, registered before anything starts: whatever runs is undone.
    let saved: Vec<String> = SYSCTLS.iter().map(|k| std::fs::read_to_string(format!("/proc/sys/{k}")).map(|v| v.trim().to_string()).unwrap_or_default()).collect();
    let restore: Vec<String> = SYSCTLS.iter().zip(&saved).filter(|(_, v)| !v.is_empty()).map(|(k, v)| format!("echo {v} > /proc/sys/{k}")).collect();
    let teardown = format!(
        "d='{d}'; \
         for f in $(find /sys/fs/cgroup/*/kubepods -name cgroup.procs 2>/dev/null); do for p in $(cat $f); do kill -9 $p 2>/dev/null; done; done; \
         pkill -9 -f \"containerd-shim-runc-v2 .*-address $d/containerd.sock\"; sleep 1; \
         grep -E \" ($d|/run/containerd/io.containerd.runtime.v2.task/k8s.io|/run/containerd/io.containerd.grpc.v1.cri)\" /proc/mounts | cut -d' ' -f2 | sort -r | while read m; do umount -l \"$m\"; done; \
         for c in /sys/fs/cgroup/*/kubepods; do find \"$c\" -depth -type d -exec rmdir {{}} \\; 2>/dev/null; done; \
         {restore}; rm -rf /tmp/augur-node-logs; mkdir -p /tmp/augur-node-logs; cp \"$d\"/*.log /tmp/augur-node-logs/ 2>/dev/null; rm -rf /run/containerd/io.containerd.runtime.v2.task/k8s.io \"$d\"",
        d = dir.display(),
        restore = restore.join("; ")
    );
    after_exit(&teardown)?;

    std::fs::write(dir.join("cni/10-loopback.conflist"), r#"{"cniVersion": "1.0.0", "name": "loopback", "plugins": [{"type": "loopback"}]}"#).map_err(|e| e.to_string())?;
    let config = format!(
        r#"version = 2
root = "{d}/containerd"
state = "{d}/containerd-state"
[grpc]
  address = "{sock}"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "augur.local/pause:1"
  # Root here lacks CAP_SYS_RESOURCE: runc cannot lower a container's oom_score_adj.
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
    runtime_type = "io.containerd.runc.v2"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
      SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "{d}/cni"
"#,
        d = dir.display(),
        sock = socket.display()
    );
    std::fs::write(dir.join("containerd.toml"), config).map_err(|e| e.to_string())?;
    spawn(Path::new("/usr/bin/containerd"), &[format!("--config={}", dir.join("containerd.toml").display())], &dir.join("containerd.log"), None)?;
    wait_for("containerd's socket", Duration::from_secs(30), || socket.exists(), &dir.join("containerd.log"))?;
    for image in ["busybox.tar", "pause.tar"] {
        run(Command::new("ctr").arg("-a").arg(&socket).args(["-n", "k8s.io", "images", "import"]).arg(images.join(image)))?;
    }

    spawn(
        &bin.join("kube-scheduler"),
        &[format!("--kubeconfig={}", plane.kubeconfig.display()), "--leader-elect=false".into(), "--secure-port=0".into()],
        &dir.join("kube-scheduler.log"),
        None,
    )?;

    // The kubelet refuses a loopback node IP, and the API server dials the node's InternalIP
    // for exec: the kubelet listens on this machine's own address (the one its default route
    // leaves from; no traffic leaves the machine).
    let ip = run(Command::new("hostname").arg("-I"))?.split_whitespace().find(|a| a.parse::<std::net::Ipv4Addr>().is_ok_and(|a| !a.is_loopback())).map(str::to_string).ok_or("the test node needs a non-loopback IPv4 address on this machine (hostname -I lists none)")?;
    let (port, read_only, healthz) = (free_port(), free_port(), free_port());
    let kubelet_config = format!(
        r#"apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: {ip}
port: {port}
readOnlyPort: {read_only}
healthzBindAddress: 127.0.0.1
healthzPort: {healthz}
authentication:
  anonymous: {{ enabled: true }}
  webhook: {{ enabled: false }}
authorization: {{ mode: AlwaysAllow }}
# Hybrid cgroup v1 here; no systemd.
failCgroupV1: false
cgroupDriver: cgroupfs
oomScoreAdj: 0
failSwapOn: false
containerRuntimeEndpoint: unix://{sock}
podLogsDir: {d}/pod-logs
resolvConf: ""
nodeStatusUpdateFrequency: 4s
# The imported images must never be collected, and a busy test disk must not evict.
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard: {{ memory.available: "1Mi", nodefs.available: "1%", imagefs.available: "1%" }}
maxPods: 30
"#,
        d = dir.display(),
        sock = socket.display()
    );
    std::fs::write(dir.join("kubelet.yaml"), kubelet_config).map_err(|e| e.to_string())?;
    spawn(
        &bin.join("kubelet"),
        &[
            format!("--config={}", dir.join("kubelet.yaml").display()),
            format!("--kubeconfig={}", plane.kubeconfig.display()),
            format!("--root-dir={}", dir.join("kubelet").display()),
            format!("--cert-dir={}", dir.join("kubelet-pki").display()),
            format!("--hostname-override={NODE}"),
            format!("--node-ip={ip}"),
            // cAdvisor (inside the kubelet) labels containers by asking containerd itself, at
            // /run/containerd/containerd.sock unless told: this flag is deprecated but is the
            // only way to point it at a private socket.
            format!("--containerd={}", socket.display()),
            "--housekeeping-interval=5s".into(),
        ],
        &dir.join("kubelet.log"),
        None,
    )?;
    wait_for("the node to be Ready", Duration::from_secs(120), || node_ready(&plane), &dir.join("kubelet.log"))?;

    let (ksm, ksm_telemetry) = (free_port(), free_port());
    spawn(
        &bin.join("kube-state-metrics"),
        &[
            format!("--kubeconfig={}", plane.kubeconfig.display()),
            "--host=127.0.0.1".into(),
            format!("--port={ksm}"),
            "--telemetry-host=127.0.0.1".into(),
            format!("--telemetry-port={ksm_telemetry}"),
            "--resources=deployments,replicasets,pods,nodes".into(),
        ],
        &dir.join("kube-state-metrics.log"),
        None,
    )?;
    let kube_state_metrics = format!("127.0.0.1:{ksm}");
    wait_for("kube-state-metrics", Duration::from_secs(60), || std::net::TcpStream::connect(&kube_state_metrics).is_ok(), &dir.join("kube-state-metrics.log"))?;
    start_metrics_server(&plane, &bin, &dir, &ip)?;
    Ok(NodeCluster { plane, kubelet_metrics: format!("http://{ip}:{read_only}"), kube_state_metrics, dir })
}

/// metrics-server, registered as the metrics.k8s.io APIService as its own manifest does: it
/// scrapes the kubelet's /metrics/resource (the kubelet's own serving certificate is
/// self-signed, hence `--kubelet-insecure-tls`) and is reached by the API server's aggregation
/// layer. With no pod network it runs beside the node, on the node's address (an EndpointSlice
/// may not point at loopback), behind a Service without a selector.
fn start_metrics_server(plane: &ControlPlane, bin: &Path, dir: &Path, ip: &str) -> Result<(), String> {
    let port = free_port();
    let kubeconfig = plane.kubeconfig.display().to_string();
    spawn(
        &bin.join("metrics-server"),
        &[
            format!("--kubeconfig={kubeconfig}"),
            format!("--authentication-kubeconfig={kubeconfig}"),
            format!("--authorization-kubeconfig={kubeconfig}"),
            format!("--bind-address={ip}"),
            format!("--secure-port={port}"),
            format!("--cert-dir={}", dir.join("metrics-server-pki").display()),
            "--kubelet-insecure-tls".into(),
            "--kubelet-use-node-status-port".into(),
            "--kubelet-preferred-address-types=InternalIP".into(),
            // Its shortest (the default is 1m): the tests wait for two scrapes.
            "--metric-resolution=10s".into(),
            "--kubelet-request-timeout=5s".into(),
        ],
        &dir.join("metrics-server.log"),
        None,
    )?;
    let service = serde_json::json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": { "name": "metrics-server", "namespace": "kube-system" },
        "spec": { "ports": [{ "name": "https", "port": 443, "targetPort": port }] }
    });
    let slice = serde_json::json!({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": { "name": "metrics-server", "namespace": "kube-system", "labels": { "kubernetes.io/service-name": "metrics-server" } },
        "addressType": "IPv4",
        "endpoints": [{ "addresses": [ip], "conditions": { "ready": true } }],
        "ports": [{ "name": "https", "port": port, "protocol": "TCP" }]
    });
    let api_service = serde_json::json!({
        "apiVersion": "apiregistration.k8s.io/v1", "kind": "APIService",
        "metadata": { "name": "v1beta1.metrics.k8s.io" },
        "spec": {
            "group": "metrics.k8s.io", "version": "v1beta1",
            "service": { "name": "metrics-server", "namespace": "kube-system", "port": 443 },
            // metrics-server serves a self-signed certificate (its manifest does the same).
            "insecureSkipTLSVerify": true, "groupPriorityMinimum": 100, "versionPriority": 100
        }
    });
    create(plane, "/api/v1/namespaces/kube-system/services", &service)?;
    create(plane, "/apis/discovery.k8s.io/v1/namespaces/kube-system/endpointslices", &slice)?;
    create(plane, "/apis/apiregistration.k8s.io/v1/apiservices", &api_service)?;
    wait_for("metrics.k8s.io to be Available", Duration::from_secs(90), || api_service_available(plane), &dir.join("metrics-server.log"))
}

/// POSTs `object` to `path` as the admin.
fn create(plane: &ControlPlane, path: &str, object: &serde_json::Value) -> Result<(), String> {
    let out = run(Command::new("curl")
        .args(["-sk", "-w", "\n%{http_code}", "-X", "POST", "-H", "Authorization: Bearer admin-token", "-H", "Content-Type: application/json", "-d"])
        .arg(object.to_string())
        .arg(format!("{}{path}", plane.server)))?;
    match out.rsplit_once('\n') {
        Some((_, "201")) => Ok(()),
        _ => Err(format!("POST {path} answered: {out}")),
    }
}

fn api_service_available(plane: &ControlPlane) -> bool {
    let out = Command::new("curl").args(["-sk", "-H", "Authorization: Bearer admin-token"]).arg(format!("{}/apis/apiregistration.k8s.io/v1/apiservices/v1beta1.metrics.k8s.io", plane.server)).output();
    let Ok(out) = out else { return false };
    let Ok(service) = serde_json::from_slice::<serde_json::Value>(&out.stdout) else { return false };
    service["status"]["conditions"].as_array().is_some_and(|c| c.iter().any(|c| c["type"] == "Available" && c["status"] == "True"))
}

impl NodeCluster {
    /// Prometheus scrape jobs for what the prototype read (as kube-prometheus-stack scrapes
    /// them): the kubelet's cAdvisor and resource metrics, and kube-state-metrics; every 2 s.
    pub fn scrape_jobs(&self) -> String {
        let kubelet = self.kubelet_metrics.trim_start_matches("http://");
        let job = |name: &str, path: &str, target: &str| format!("  - job_name: {name}\n    scrape_interval: 2s\n    metrics_path: {path}\n    static_configs:\n      - targets: ['{target}']\n");
        [job("kubelet-cadvisor", "/metrics/cadvisor", kubelet), job("kubelet-resource", "/metrics/resource", kubelet), job("kube-state-metrics", "/metrics", &self.kube_state_metrics)].concat()
    }
}

fn node_ready(plane: &ControlPlane) -> bool {
    let out = Command::new("curl").args(["-sk", "-H", "Authorization: Bearer admin-token"]).arg(format!("{}/api/v1/nodes/{NODE}", plane.server)).output();
    let Ok(out) = out else { return false };
    let Ok(node) = serde_json::from_slice::<serde_json::Value>(&out.stdout) else { return false };
    node["status"]["conditions"].as_array().is_some_and(|c| c.iter().any(|c| c["type"] == "Ready" && c["status"] == "True"))
}

fn wait_for(what: &str, limit: Duration, mut done: impl FnMut() -> bool, log: &Path) -> Result<(), String> {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if done() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    let log = std::fs::read_to_string(log).unwrap_or_default();
    Err(format!("waited {limit:?} for {what}; the log ends:\n{}", &log[log.floor_char_boundary(log.len().saturating_sub(4000))..]))
}
