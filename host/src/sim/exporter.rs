//! The simulated cluster as Prometheus sees a real one: a `/metrics` endpoint in the text
//! format of cAdvisor (through the kubelet) and kube-state-metrics, so that a real Prometheus
//! can scrape the simulation and the host can run in Prometheus mode against it.
//!
//! Series: `container_cpu_usage_seconds_total` and `container_memory_working_set_bytes` per
//! pod (labels `namespace`, `pod`, `container`, `image`), `kube_deployment_status_replicas` and
//! `kube_deployment_spec_replicas` per Deployment, `node_thermal_zone_temp` per node (in
//! millidegrees, as the prototype's `* 0.001` expects), and, so that all seven of the
//! prototype's queries have data, `node_disk_read_bytes_total` / `node_disk_written_bytes_total`
//! (1 MiB/s read and 0.5 MiB/s written per core of demand) and an
//! `http_request_duration_seconds` histogram (100 requests/s per core of demand, latency
//! exponential with the simulator's p95).
//!
//! The CPU counters grow by each pod's cores times the *real* seconds between scrapes, so that
//! `rate()` in Prometheus reads the simulated cores whatever `--speed` the simulation runs at.

use super::SimCluster;
use axum::Router;
use axum::http::header;
use axum::routing::get;
use std::collections::BTreeMap;
use std::fmt::Write;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// The counters kept between scrapes.
#[derive(Debug, Default)]
pub struct Exporter {
    state: Mutex<(Option<Instant>, BTreeMap<String, f64>)>,
}

impl Exporter {
    /// The current exposition of `sim`.
    pub fn render(&self, sim: &SimCluster) -> String {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        let elapsed = state.0.map_or(0.0, |last| now.duration_since(last).as_secs_f64());
        state.0 = Some(now);
        let s = sim.lock();
        let mut out = String::new();
        out.push_str("# HELP container_cpu_usage_seconds_total Cumulative cpu time consumed in seconds.\n# TYPE container_cpu_usage_seconds_total counter\n");
        for d in &s.deployments {
            for p in d.pods.iter().filter(|p| p.node.is_some()) {
                let total = state.1.entry(p.name.clone()).or_insert(0.0);
                *total += p.cpu * elapsed;
                let _ = writeln!(out, "container_cpu_usage_seconds_total{{{}}} {total}", pod_labels(&d.target.namespace, &p.name, &d.target.name));
            }
        }
        out.push_str("# HELP container_memory_working_set_bytes Current working set in bytes.\n# TYPE container_memory_working_set_bytes gauge\n");
        for d in &s.deployments {
            for p in d.pods.iter().filter(|p| p.node.is_some()) {
                let _ = writeln!(out, "container_memory_working_set_bytes{{{}}} {}", pod_labels(&d.target.namespace, &p.name, &d.target.name), p.memory);
            }
        }
        out.push_str("# HELP kube_deployment_status_replicas The number of replicas per deployment.\n# TYPE kube_deployment_status_replicas gauge\n");
        for d in &s.deployments {
            let _ = writeln!(out, "kube_deployment_status_replicas{{namespace=\"{}\",deployment=\"{}\"}} {}", d.target.namespace, d.target.name, d.pods.len());
        }
        out.push_str("# HELP kube_deployment_spec_replicas Number of desired pods for a deployment.\n# TYPE kube_deployment_spec_replicas gauge\n");
        for d in &s.deployments {
            let _ = writeln!(out, "kube_deployment_spec_replicas{{namespace=\"{}\",deployment=\"{}\"}} {}", d.target.namespace, d.target.name, d.replicas);
        }
        out.push_str("# HELP node_thermal_zone_temp Zone temperature in millidegrees Celsius.\n# TYPE node_thermal_zone_temp gauge\n");
        for n in &s.nodes {
            let _ = writeln!(out, "node_thermal_zone_temp{{instance=\"{}\",zone=\"0\",type=\"x86_pkg_temp\"}} {}", n.name, n.temperature * 1000.0);
        }
        let demand: f64 = s.deployments.iter().map(|d| d.demand).sum();
        out.push_str("# TYPE node_disk_read_bytes_total counter\n# TYPE node_disk_written_bytes_total counter\n");
        for (name, per_core) in [("node_disk_read_bytes_total", 1048576.0), ("node_disk_written_bytes_total", 524288.0)] {
            let total = state.1.entry(name.to_string()).or_insert(0.0);
            *total += demand * per_core * elapsed;
            let _ = writeln!(out, "{name}{{device=\"sda\",instance=\"sim-node-a\"}} {total}");
        }
        // Requests at 100/s per core of demand; latency exponential with p95 = the simulator's.
        out.push_str("# TYPE http_request_duration_seconds histogram\n");
        let p95 = s.deployments.iter().map(|d| {
            let capacity = d.pods.iter().filter(|p| s.ready(p)).count() as f64 * s.config.capacity_per_pod;
            0.05 / (1.0 - (d.demand / capacity.max(1e-9)).min(0.95))
        }).fold(0.0, f64::max);
        let requests = demand * 100.0 * elapsed;
        let rate = if p95 > 0.0 { 20f64.ln() / p95 } else { 1.0 };
        for le in [0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, f64::INFINITY] {
            let key = format!("http_bucket_{le}");
            let total = state.1.entry(key).or_insert(0.0);
            *total += requests * if le.is_finite() { 1.0 - (-rate * le).exp() } else { 1.0 };
            let le = if le.is_finite() { le.to_string() } else { "+Inf".into() };
            let _ = writeln!(out, "http_request_duration_seconds_bucket{{le=\"{le}\"}} {total}");
        }
        let count = state.1.get("http_bucket_inf").copied().unwrap_or(0.0);
        let _ = writeln!(out, "http_request_duration_seconds_count {count}");
        // Pods gone since the last scrape: their counters go too.
        let live: std::collections::BTreeSet<&str> = s.deployments.iter().flat_map(|d| d.pods.iter().map(|p| p.name.as_str())).collect();
        state.1.retain(|name, _| live.contains(name.as_str()) || name.starts_with("node_disk") || name.starts_with("http_bucket"));
        out
    }
}

/// Serves `sim`'s exposition at `http://addr/metrics` until the process ends; returns the
/// address bound.
pub async fn serve(sim: Arc<SimCluster>, addr: SocketAddr) -> anyhow::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind(addr).await.map_err(|e| anyhow::anyhow!("cannot listen on {addr} for the simulator's metrics: {e}; fix: pick a free --expose-sim"))?;
    let bound = listener.local_addr()?;
    let exporter = Arc::new(Exporter::default());
    let app = Router::new().route(
        "/metrics",
        get(move || {
            let (sim, exporter) = (sim.clone(), exporter.clone());
            async move { ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], exporter.render(&sim)) }
        }),
    );
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!("the simulator's /metrics server stopped: {e}");
        }
    });
    tracing::info!("serving the simulated cluster's metrics on http://{bound}/metrics");
    Ok(bound)
}

fn pod_labels(namespace: &str, pod: &str, container: &str) -> String {
    format!("namespace=\"{namespace}\",pod=\"{pod}\",container=\"{container}\",image=\"sim/{container}:latest\"")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Target;
    use crate::sim::SimConfig;

    #[test]
    fn the_exposition_has_the_prototypes_series() {
        let sim = SimCluster::new(SimConfig::default());
        sim.add_deployment(&Target { kind: "Deployment".into(), namespace: "default".into(), name: "nginx".into() }, 2);
        sim.advance(std::time::Duration::from_secs(60));
        let exporter = Exporter::default();
        exporter.render(&sim);
        std::thread::sleep(std::time::Duration::from_millis(20));
        let text = exporter.render(&sim);
        let cpu: Vec<&str> = text.lines().filter(|l| l.starts_with("container_cpu_usage_seconds_total{")).collect();
        assert_eq!(cpu.len(), 2, "{text}");
        assert!(cpu[0].contains(r#"namespace="default",pod="nginx-sim-"#) && cpu[0].contains(r#"image="sim/nginx:latest""#), "{text}");
        let total: f64 = cpu[0].rsplit(' ').next().unwrap().parse().unwrap();
        assert!(total > 0.0, "the counter grew by cores x real seconds: {text}");
        assert!(text.contains("kube_deployment_status_replicas{namespace=\"default\",deployment=\"nginx\"} 2\n"), "{text}");
        assert!(text.lines().any(|l| l.starts_with("node_thermal_zone_temp{instance=\"sim-node-a\"")), "{text}");
    }
}
