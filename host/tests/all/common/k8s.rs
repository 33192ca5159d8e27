//! A real control plane for the tests: etcd, kube-apiserver and kube-controller-manager, built
//! from Go modules by scripts/build-k8s.sh (cached in ~/.cache/augur), started on loopback
//! ports once per test binary, and stopped when the test binary exits (each process runs
//! under a watchdog that kills it when its parent is gone).
//!
//! There is no scheduler and no kubelet: Deployments get ReplicaSets and Pods (Pending), and
//! Nodes are objects the tests create. That is all the executor and the workload source touch.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

pub struct ControlPlane {
    pub dir: PathBuf,
    /// kubeconfig of the admin (system:masters).
    pub kubeconfig: PathBuf,
    pub server: String,
}

static PLANE: OnceLock<ControlPlane> = OnceLock::new();

/// The shared control plane, started on first use.
pub fn control_plane() -> &'static ControlPlane {
    PLANE.get_or_init(|| {
        // The HPA's own controller too, for the hpa-floor test (it enforces minReplicas even
        // without a metrics API), on a short sync period.
        let controllers = "deployment-controller,replicaset-controller,serviceaccount-token-controller,horizontal-pod-autoscaler-controller";
        start(controllers).unwrap_or_else(|e| panic!("cannot start the test control plane: {e}"))
    })
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

pub fn run(cmd: &mut Command) -> Result<String, String> {
    let out = cmd.output().map_err(|e| format!("{cmd:?}: {e}"))?;
    if !out.status.success() {
        return Err(format!("{cmd:?}: {}", String::from_utf8_lossy(&out.stderr)));
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// Starts `program args` in the background under a watchdog that kills it when this test
/// process exits (and then removes `cleanup`, if given); its output goes to `log`, its PID to
/// `log` with the extension `pid`.
pub fn spawn(program: &Path, args: &[String], log: &Path, cleanup: Option<&Path>) -> Result<(), String> {
    let quoted: Vec<String> = std::iter::once(program.display().to_string()).chain(args.iter().cloned()).map(|a| format!("'{a}'")).collect();
    let script = format!(
        "{} >'{}' 2>&1 & child=$!; echo $child >'{}'; parent={}; while kill -0 $parent 2>/dev/null && kill -0 $child 2>/dev/null; do sleep 0.5; done; kill $child 2>/dev/null; sleep 1; kill -9 $child 2>/dev/null; {}",
        quoted.join(" "),
        log.display(),
        log.with_extension("pid").display(),
        std::process::id(),
        cleanup.map(|d| format!("sleep 2; rm -rf '{}'", d.display())).unwrap_or_default()
    );
    Command::new("bash").arg("-c").arg(script).stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null()).spawn().map_err(|e| e.to_string())?;
    Ok(())
}

/// Runs `script` (shell) once this test process has exited, after the watchdogs of `spawn`
/// have stopped their processes: a teardown that must happen even when a test fails.
pub fn after_exit(script: &str) -> Result<(), String> {
    let watch = format!("parent={}; while kill -0 $parent 2>/dev/null; do sleep 0.5; done; sleep 3; {script}", std::process::id());
    Command::new("bash").arg("-c").arg(watch).stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null()).spawn().map_err(|e| e.to_string())?;
    Ok(())
}

/// A control plane (etcd, kube-apiserver, kube-controller-manager running `controllers`) on
/// free loopback ports, its files in a temporary folder.
pub fn start(controllers: &str) -> Result<ControlPlane, String> {
    let root = super::root();
    let bin = PathBuf::from(run(Command::new("bash").arg(root.join("scripts/build-k8s.sh")))?.lines().last().unwrap_or_default());
    let dir = tempfile::Builder::new().prefix("augur-k8s-").tempdir().map_err(|e| e.to_string())?.keep();
    let (etcd_port, peer_port, api_port) = (free_port(), free_port(), free_port());

    spawn(
        &bin.join("etcd"),
        &[
            format!("--data-dir={}", dir.join("etcd").display()),
            format!("--listen-client-urls=http://127.0.0.1:{etcd_port}"),
            format!("--advertise-client-urls=http://127.0.0.1:{etcd_port}"),
            format!("--listen-peer-urls=http://127.0.0.1:{peer_port}"),
            format!("--initial-advertise-peer-urls=http://127.0.0.1:{peer_port}"),
            format!("--initial-cluster=default=http://127.0.0.1:{peer_port}"),
            "--unsafe-no-fsync".into(),
        ],
        &dir.join("etcd.log"),
        Some(&dir),
    )?;

    run(Command::new("openssl").args(["genrsa", "-out"]).arg(dir.join("sa.key")).arg("2048"))?;
    run(Command::new("openssl").args(["rsa", "-pubout", "-in"]).arg(dir.join("sa.key")).arg("-out").arg(dir.join("sa.pub")))?;
    std::fs::write(dir.join("tokens.csv"), "admin-token,admin,admin,system:masters\n").map_err(|e| e.to_string())?;
    // The aggregation layer, as on every real cluster: the API server proxies metrics.k8s.io
    // to metrics-server (common::node) with a front-proxy client certificate.
    front_proxy_certs(&dir)?;
    spawn(
        &bin.join("kube-apiserver"),
        &[
            format!("--etcd-servers=http://127.0.0.1:{etcd_port}"),
            format!("--secure-port={api_port}"),
            "--bind-address=127.0.0.1".into(),
            "--advertise-address=127.0.0.1".into(),
            format!("--cert-dir={}", dir.join("certs").display()),
            format!("--token-auth-file={}", dir.join("tokens.csv").display()),
            "--authorization-mode=RBAC".into(),
            "--service-account-issuer=https://kubernetes.default.svc".into(),
            format!("--service-account-key-file={}", dir.join("sa.pub").display()),
            format!("--service-account-signing-key-file={}", dir.join("sa.key").display()),
            "--service-cluster-ip-range=10.0.0.0/24".into(),
            "--disable-admission-plugins=ServiceAccount".into(),
            "--allow-privileged=true".into(),
            // The test node (common::node) is reached at its InternalIP for exec and logs.
            "--kubelet-preferred-address-types=InternalIP".into(),
            format!("--requestheader-client-ca-file={}", dir.join("front-proxy-ca.crt").display()),
            "--requestheader-allowed-names=front-proxy-client".into(),
            "--requestheader-username-headers=X-Remote-User".into(),
            "--requestheader-group-headers=X-Remote-Group".into(),
            "--requestheader-extra-headers-prefix=X-Remote-Extra-".into(),
            format!("--proxy-client-cert-file={}", dir.join("front-proxy-client.crt").display()),
            format!("--proxy-client-key-file={}", dir.join("front-proxy-client.key").display()),
            // An aggregated API's Service has no cluster IP routing here (no kube-proxy): the
            // API server dials its EndpointSlice's address.
            "--enable-aggregator-routing=true".into(),
        ],
        &dir.join("kube-apiserver.log"),
        None,
    )?;
    let server = format!("https://127.0.0.1:{api_port}");
    let kubeconfig = dir.join("admin.kubeconfig");
    write_kubeconfig(&kubeconfig, &server, "admin-token");
    wait_ready(&server, &dir)?;

    spawn(
        &bin.join("kube-controller-manager"),
        &[
            format!("--kubeconfig={}", kubeconfig.display()),
            format!("--controllers={controllers}"),
            "--horizontal-pod-autoscaler-sync-period=2s".into(),
            format!("--service-account-private-key-file={}", dir.join("sa.key").display()),
            "--use-service-account-credentials=false".into(),
            "--leader-elect=false".into(),
            "--secure-port=0".into(),
        ],
        &dir.join("kube-controller-manager.log"),
        None,
    )?;
    Ok(ControlPlane { dir, kubeconfig, server })
}

/// The front proxy's CA and its client certificate (CN front-proxy-client), for the
/// aggregation layer.
fn front_proxy_certs(dir: &Path) -> Result<(), String> {
    let (ca, ca_key) = (dir.join("front-proxy-ca.crt"), dir.join("front-proxy-ca.key"));
    let (cert, key, csr) = (dir.join("front-proxy-client.crt"), dir.join("front-proxy-client.key"), dir.join("front-proxy-client.csr"));
    run(Command::new("openssl").args(["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=front-proxy-ca", "-keyout"]).arg(&ca_key).arg("-out").arg(&ca))?;
    run(Command::new("openssl").args(["req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=front-proxy-client", "-keyout"]).arg(&key).arg("-out").arg(&csr))?;
    run(Command::new("openssl").args(["x509", "-req", "-days", "2", "-in"]).arg(&csr).arg("-CA").arg(&ca).arg("-CAkey").arg(&ca_key).arg("-CAcreateserial").arg("-out").arg(&cert))?;
    Ok(())
}

/// A kubeconfig for `token` (the serving certificate is self-signed: not verified).
pub fn write_kubeconfig(path: &Path, server: &str, token: &str) {
    let text = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: test\n  cluster:\n    server: {server}\n    insecure-skip-tls-verify: true\nusers:\n- name: test\n  user:\n    token: {token}\ncontexts:\n- name: test\n  context:\n    cluster: test\n    user: test\ncurrent-context: test\n"
    );
    std::fs::write(path, text).unwrap();
}

fn wait_ready(server: &str, dir: &Path) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(90);
    while Instant::now() < deadline {
        let ok = Command::new("curl").args(["-sk", "-o", "/dev/null", "-w", "%{http_code}", "-H", "Authorization: Bearer admin-token"]).arg(format!("{server}/readyz")).output();
        if ok.is_ok_and(|o| o.stdout == b"200") {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    let log = std::fs::read_to_string(dir.join("kube-apiserver.log")).unwrap_or_default();
    Err(format!("kube-apiserver not ready after 90 s; its log ends:\n{}", &log[log.len().saturating_sub(3000)..]))
}

impl ControlPlane {
    /// A client for the admin.
    pub async fn client(&self) -> kube::Client {
        self.client_from(&self.kubeconfig).await
    }

    pub async fn client_from(&self, kubeconfig: &Path) -> kube::Client {
        augur::tls::install_provider();
        let config = kube::config::Kubeconfig::read_from(kubeconfig).unwrap();
        let config = kube::Config::from_custom_kubeconfig(config, &Default::default()).await.unwrap();
        kube::Client::try_from(config).unwrap()
    }
}
