//! A real Prometheus for the tests: Debian's package (`make prometheus`), started on a
//! loopback port once per test binary with a scrape of its own /metrics, and stopped when the
//! test binary exits (under the same watchdog as the control plane).

use super::k8s::{free_port, spawn};
use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

pub struct Prometheus {
    pub url: String,
    pub dir: PathBuf,
}

static PROMETHEUS: OnceLock<Prometheus> = OnceLock::new();

/// The shared Prometheus, started on first use.
pub fn prometheus() -> &'static Prometheus {
    PROMETHEUS.get_or_init(|| start().unwrap_or_else(|e| panic!("cannot start the test Prometheus: {e}")))
}

fn start() -> Result<Prometheus, String> {
    let dir = tempfile::Builder::new().prefix("augur-prometheus-").tempdir().map_err(|e| e.to_string())?.keep();
    let port = free_port();
    let config = format!("global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: prometheus\n    static_configs:\n      - targets: ['127.0.0.1:{port}']\n");
    std::fs::write(dir.join("prometheus.yml"), config).map_err(|e| e.to_string())?;
    let binary = PathBuf::from("/usr/bin/prometheus");
    if !binary.is_file() {
        return Err("/usr/bin/prometheus is missing: run `make prometheus` (or `make test`) first".into());
    }
    spawn(
        &binary,
        &[
            format!("--config.file={}", dir.join("prometheus.yml").display()),
            format!("--storage.tsdb.path={}", dir.join("data").display()),
            format!("--web.listen-address=127.0.0.1:{port}"),
            "--web.enable-lifecycle".into(),
        ],
        &dir.join("prometheus.log"),
        Some(&dir),
    )?;
    let url = format!("http://127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        let ok = Command::new("curl").args(["-s", "-o", "/dev/null", "-w", "%{http_code}"]).arg(format!("{url}/-/ready")).output();
        if ok.is_ok_and(|o| o.stdout == b"200") {
            return Ok(Prometheus { url, dir });
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let log = std::fs::read_to_string(dir.join("prometheus.log")).unwrap_or_default();
    Err(format!("Prometheus not ready after 30 s; its log ends:\n{}", &log[log.len().saturating_sub(2000)..]))
}
