//! A real Prometheus for the tests: Debian's package (`make prometheus`), started on a
//! loopback port with a temporary config and data folder, under the same watchdog as the
//! control plane (it dies with the test binary). `prometheus()` is one shared instance that
//! scrapes itself every second; `Prometheus::backfilled` starts a private one on data written
//! by `promtool tsdb create-blocks-from openmetrics`, which a test may stop and start again.

use super::k8s::{free_port, spawn};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

pub struct Prometheus {
    pub url: String,
    pub dir: PathBuf,
    port: u16,
    /// Its web config (TLS), when it has one.
    web_config: Option<PathBuf>,
    /// The shared instance is never dropped: its watchdog removes its folder. A private one
    /// may stop and start again, so its folder goes when it is dropped.
    shared: bool,
}

static PROMETHEUS: OnceLock<Prometheus> = OnceLock::new();

/// The shared Prometheus, started on first use.
pub fn prometheus() -> &'static Prometheus {
    PROMETHEUS.get_or_init(|| Prometheus::start(None, "").unwrap_or_else(|e| panic!("cannot start the test Prometheus: {e}")))
}

impl Prometheus {
    /// A private Prometheus whose storage holds `openmetrics` (OpenMetrics text ending in
    /// `# EOF`, timestamps in seconds) before it starts.
    pub fn backfilled(openmetrics: &str) -> Self {
        Self::start(Some(openmetrics), "").unwrap_or_else(|e| panic!("cannot start a backfilled Prometheus: {e}"))
    }

    /// A private Prometheus that also scrapes `targets` (`host:port`, path /metrics) every
    /// second, as the job `augur`.
    pub fn scraping(targets: &[String]) -> Self {
        let list = targets.iter().map(|t| format!("'{t}'")).collect::<Vec<_>>().join(", ");
        Self::scraping_jobs(&format!("  - job_name: augur\n    static_configs:\n      - targets: [{list}]\n"))
    }

    /// A private Prometheus that also runs `jobs`: entries of `scrape_configs` (YAML, indented
    /// as list items under it).
    pub fn scraping_jobs(jobs: &str) -> Self {
        Self::start(Some("# EOF\n"), jobs).unwrap_or_else(|e| panic!("cannot start a scraping Prometheus: {e}"))
    }

    /// A private Prometheus serving HTTPS with `cert` and `key` (PEM files), through its own
    /// web config (`tls_server_config`).
    pub fn tls(cert: &Path, key: &Path) -> Self {
        let mut prometheus = Self::start(Some("# EOF\n"), "").unwrap_or_else(|e| panic!("cannot start Prometheus: {e}"));
        prometheus.stop();
        let web = prometheus.dir.join("web.yml");
        std::fs::write(&web, format!("tls_server_config:\n  cert_file: {}\n  key_file: {}\n", cert.display(), key.display())).unwrap();
        prometheus.web_config = Some(web);
        prometheus.url = format!("https://localhost:{}", prometheus.port);
        prometheus.run().unwrap_or_else(|e| panic!("cannot start Prometheus with TLS: {e}"));
        prometheus
    }

    fn start(openmetrics: Option<&str>, jobs: &str) -> Result<Self, String> {
        let dir = tempfile::Builder::new().prefix("augur-prometheus-").tempdir().map_err(|e| e.to_string())?.keep();
        let port = free_port();
        let mut config = format!("global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: prometheus\n    static_configs:\n      - targets: ['127.0.0.1:{port}']\n");
        config.push_str(jobs);
        std::fs::write(dir.join("prometheus.yml"), config).map_err(|e| e.to_string())?;
        if let Some(text) = openmetrics.filter(|t| t.trim() != "# EOF") {
            let file = dir.join("backfill.om");
            std::fs::write(&file, text).map_err(|e| e.to_string())?;
            let out = Command::new("promtool").args(["tsdb", "create-blocks-from", "openmetrics"]).arg(&file).arg(dir.join("data")).output().map_err(|e| format!("promtool: {e}; fix: run `make prometheus`"))?;
            if !out.status.success() {
                return Err(format!("promtool: {}", String::from_utf8_lossy(&out.stderr)));
            }
        }
        let prometheus = Self { url: format!("http://127.0.0.1:{port}"), dir, port, web_config: None, shared: openmetrics.is_none() };
        prometheus.run()?;
        Ok(prometheus)
    }

    fn run(&self) -> Result<(), String> {
        let binary = Path::new("/usr/bin/prometheus");
        if !binary.is_file() {
            return Err("/usr/bin/prometheus is missing: run `make prometheus` (or `make test`) first".into());
        }
        let mut args = vec![
            format!("--config.file={}", self.dir.join("prometheus.yml").display()),
            format!("--storage.tsdb.path={}", self.dir.join("data").display()),
            format!("--web.listen-address=127.0.0.1:{}", self.port),
            "--web.enable-lifecycle".into(),
        ];
        if let Some(web) = &self.web_config {
            args.push(format!("--web.config.file={}", web.display()));
        }
        spawn(binary, &args, &self.dir.join("prometheus.log"), self.shared.then_some(self.dir.as_path()))?;
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            // -k: readiness only; what a client trusts is the test's business.
            let ok = Command::new("curl").args(["-s", "-k", "-o", "/dev/null", "-w", "%{http_code}"]).arg(format!("{}/-/ready", self.url)).output();
            if ok.is_ok_and(|o| o.stdout == b"200") {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        let log = std::fs::read_to_string(self.dir.join("prometheus.log")).unwrap_or_default();
        Err(format!("Prometheus not ready after 30 s; its log ends:\n{}", &log[log.len().saturating_sub(2000)..]))
    }

    /// Stops it (SIGTERM, as an outage) and waits until the port is closed.
    pub fn stop(&self) {
        let pid = std::fs::read_to_string(self.dir.join("prometheus.pid")).unwrap();
        Command::new("kill").arg(pid.trim()).status().unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
            assert!(Instant::now() < deadline, "Prometheus did not stop");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Starts it again on the same port and data.
    pub fn restart(&self) {
        self.run().unwrap_or_else(|e| panic!("cannot restart Prometheus: {e}"));
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        if !self.shared {
            if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                self.stop();
            }
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}
