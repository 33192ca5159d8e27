//! The Prometheus source against a real Prometheus (Debian's package; see common/prometheus.rs):
//! instant and range queries, one number or a clear refusal, the prototype's fallback query,
//! stale and missing data never acted on, the warm start from history backfilled with
//! promtool, and an outage mid-run: no action, then recovery by itself.

use crate::common;

use augur::config::{self, Policy};
use augur::engine::{Engine, PolicyRuntime, Seams};
use augur::metrics::{MetricSource, PrometheusSource, SourceError};
use augur::plugins::{Limits, Plugins};
use augur::sim::{SimCluster, SimConfig};
use common::prometheus::{Prometheus, prometheus};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A policy on the simulator's `shop/web` that reads `metrics` (YAML list items) from `url`.
fn policy(dir: &Path, url: &str, metrics: &str, interval: &str) -> Policy {
    let text = format!(
        r#"name: web
target: {{ kind: Deployment, namespace: shop, name: web }}
interval: {interval}
source: {{ kind: prometheus, url: "{url}" }}
metrics:
{metrics}
forecast: {{ baseline: holt-damped, window: 20, horizon: 5, step: {interval} }}
risks:
  - {{ name: cpu, metric: cpu, plugin: {risk}, settings: {{ capacity-per-pod: 0.5 }} }}
remediations:
  - {{ name: scale-up, risk: cpu, trigger: high, plugin: {scale}, settings: {{ step: 3 }}, capabilities: {{ actions: [scale] }} }}
guard: {{ remediate: true, min_replicas: 2, max_replicas: 20, max_step: 3, cooldown: 1s, max_actions_per_hour: 100, min_history: 10, allowed_actions: [scale] }}
audit: {{ path: audit.jsonl }}
"#,
        risk = common::plugin("risk-cpu").display(),
        scale = common::plugin("scale").display(),
    );
    config::parse(&text, &dir.join("web.yaml"), &augur::config::Catalog::shipped()).unwrap_or_else(|p| panic!("{p:#?}"))
}

fn unix_now() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs_f64()
}

/// Waits for the shared Prometheus' first scrapes of itself.
async fn scraped(source: &PrometheusSource, url: &str) {
    for _ in 0..100 {
        if source.instant(url, "sum(up)").await.ok().flatten().is_some() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("Prometheus never scraped itself");
}

#[tokio::test(flavor = "multi_thread")]
async fn instant_queries_give_one_number_or_say_why_not() {
    let url = &prometheus().url;
    let source = PrometheusSource::new().unwrap();
    scraped(&source, url).await;
    assert_eq!(source.instant(url, "vector(3)").await, Ok(Some(3.0)));
    assert_eq!(source.instant(url, "scalar(vector(2)) * 2").await, Ok(Some(4.0)));
    assert_eq!(source.instant(url, "up{job=\"prometheus\"}").await, Ok(Some(1.0)));
    assert_eq!(source.instant(url, "augur_no_such_metric").await, Ok(None));
    let many = source.instant(url, "prometheus_http_requests_total").await.unwrap_err();
    assert!(many.contains("series, not one") && many.contains("fix: aggregate it, e.g. `sum(prometheus_http_requests_total)`"), "{many}");
    let bad = source.instant(url, "sum(rate(x[5m])").await.unwrap_err();
    assert!(bad.starts_with("Prometheus rejected the query (bad_data)"), "{bad}");
    let down = source.instant("http://127.0.0.1:9", "up").await.unwrap_err();
    assert!(down.starts_with("cannot reach Prometheus at http://127.0.0.1:9"), "{down}");
}

#[tokio::test(flavor = "multi_thread")]
async fn collect_reads_fresh_data_uses_the_fallback_and_refuses_missing_data() {
    let url = &prometheus().url;
    let dir = tempfile::tempdir().unwrap();
    let source = PrometheusSource::new().unwrap();
    scraped(&source, url).await;
    let fresh = policy(dir.path(), url, "  - { name: cpu, query: 'sum(up{job=\"prometheus\"})' }", "30s");
    let observation = source.collect(&fresh).await.unwrap();
    assert_eq!(observation.values["cpu"], 1.0);
    assert!(observation.ages["cpu"] < 5.0, "scraped every second: {:?}", observation.ages);
    // The prototype's CPU fallback: the first query yields nothing, the fallback serves.
    let fallback = policy(dir.path(), url, "  - { name: cpu, query: 'sum(augur_no_such_metric)', fallback_query: 'sum(up)' }", "30s");
    assert_eq!(source.collect(&fallback).await.unwrap().values["cpu"], 1.0);
    // Nothing at all: no observation, and the reason says which metric and what to check.
    let missing = policy(dir.path(), url, "  - { name: cpu, query: 'sum(augur_no_such_metric)' }", "30s");
    let err = source.collect(&missing).await.unwrap_err().to_string();
    assert!(err.contains("cpu: no series now (an empty result)"), "{err}");
}

/// One gauge per series, a sample a minute from `from` to `to` seconds ago, `value(i)` each.
fn series(name: &str, from_minutes_ago: u32, to_seconds_ago: f64, value: impl Fn(usize) -> f64) -> String {
    let end = unix_now() - to_seconds_ago;
    let mut text = format!("# TYPE {name} gauge\n");
    let points = from_minutes_ago as usize;
    for i in 0..=points {
        let t = end - 60.0 * (points - i) as f64;
        text.push_str(&format!("{name} {} {t:.3}\n", value(i)));
    }
    text
}

#[tokio::test(flavor = "multi_thread")]
async fn stale_data_is_never_acted_on() {
    let text = format!(
        "{}{}# EOF\n",
        series("augur_test_old_cores", 30, 200.0, |_| 1.0),      // newest sample 200 s ago
        series("augur_test_gone_cores", 30, 900.0, |_| 1.0),     // newest 15 min ago: beyond the lookback
    );
    let prometheus = Prometheus::backfilled(&text);
    let dir = tempfile::tempdir().unwrap();
    let source = PrometheusSource::new().unwrap();
    let old = policy(dir.path(), &prometheus.url, "  - { name: cpu, query: 'sum(augur_test_old_cores)' }", "60s");
    let err = source.collect(&old).await.unwrap_err();
    assert!(matches!(err, SourceError::Stale { .. }), "{err}");
    assert!(err.to_string().contains("more than two intervals, 120s"), "{err}");
    // With a longer interval the same data is fresh enough.
    let slow = policy(dir.path(), &prometheus.url, "  - { name: cpu, query: 'sum(augur_test_old_cores)' }", "5m");
    assert_eq!(source.collect(&slow).await.unwrap().values["cpu"], 1.0);
    let gone = policy(dir.path(), &prometheus.url, "  - { name: cpu, query: 'sum(augur_test_gone_cores)' }", "60s");
    assert!(source.collect(&gone).await.unwrap_err().to_string().contains("no series now"));
}

/// An engine over the simulator's cluster with the Prometheus source.
fn engine(policy: Policy, sim: &Arc<SimCluster>, source: PrometheusSource, audit: &Path) -> Engine {
    let plugins = Arc::new(Plugins::new(Limits::default()).unwrap());
    sim.add_deployment(&policy.target, 2);
    let runtime = PolicyRuntime::new(policy, &plugins, Some(audit), false).unwrap();
    Engine::new(plugins, Seams { metrics: Arc::new(source), ..Seams::all(sim.clone()) }, vec![runtime], false).unwrap()
}

fn audit(file: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(file).unwrap_or_default().lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

/// The warm start fills the window from the past an hour of backfilled CPU, so the first tick
/// acts; without it the first tick is refused as warming up. Then Prometheus goes away: that
/// tick records why and acts on nothing; when it is back, collection recovers by itself.
#[tokio::test(flavor = "multi_thread")]
async fn warm_start_acts_on_the_first_tick_and_an_outage_stops_action_until_recovery() {
    // CPU climbing from 0.5 to 3.5 cores over the last hour, the newest sample 20 s ago.
    let text = format!("{}# EOF\n", series("augur_test_cpu_cores", 60, 20.0, |i| 0.5 + 3.0 * i as f64 / 60.0));
    let prometheus = Prometheus::backfilled(&text);
    let dir = tempfile::tempdir().unwrap();
    let metrics = "  - { name: cpu, query: 'sum(augur_test_cpu_cores)', unit: cores }";
    let t0 = SystemTime::now();

    let cold_audit = dir.path().join("cold.jsonl");
    let mut cold = engine(policy(dir.path(), &prometheus.url, metrics, "60s"), &Arc::new(SimCluster::new(SimConfig::default())), PrometheusSource::new().unwrap(), &cold_audit);
    let counts = cold.tick(t0).await;
    assert_eq!((counts.executed, counts.rejected), (0, 1), "{:?}", audit(&cold_audit));
    assert!(audit(&cold_audit)[0]["reason"].as_str().unwrap().contains("warming up"), "{:?}", audit(&cold_audit));

    let warm_audit = dir.path().join("warm.jsonl");
    let sim = Arc::new(SimCluster::new(SimConfig::default()));
    let mut warm = engine(policy(dir.path(), &prometheus.url, metrics, "60s"), &sim, PrometheusSource::new().unwrap(), &warm_audit);
    let filled = warm.warm_start(t0).await;
    assert_eq!(filled[0].1["cpu"], 20, "a full window: {filled:?}");
    let counts = warm.tick(t0).await;
    assert_eq!(counts.executed, 1, "{:?}", audit(&warm_audit));
    let first = &audit(&warm_audit)[0];
    assert_eq!(first["proposal"]["action"], "scale", "{first}");

    prometheus.stop();
    let counts = warm.tick(t0 + Duration::from_secs(60)).await;
    assert_eq!((counts.executed, counts.errors), (0, 1));
    let outage = audit(&warm_audit).last().cloned().unwrap();
    assert_eq!(outage["error_stage"], "collect", "{outage}");
    assert!(outage["reason"].as_str().unwrap().contains("cannot reach Prometheus"), "{outage}");

    prometheus.restart();
    let counts = warm.tick(t0 + Duration::from_secs(120)).await;
    assert_eq!(counts.errors, 0, "collection recovered: {:?}", audit(&warm_audit).last());
    assert!(counts.executed + counts.rejected >= 1, "{:?}", audit(&warm_audit).last());
}

/// Augur's own /metrics, scraped by a real Prometheus while the host runs the simulator:
/// values, forecast peaks per band, risks, actions, plugin latency, tick duration, the
/// forecaster in use, reload status and leadership all arrive; /healthz and /readyz answer.
/// The text format (what a plain GET gets) passes `promtool check metrics`, and the policy
/// stays within the default cardinality budget.
#[tokio::test(flavor = "multi_thread")]
async fn prometheus_scrapes_augurs_own_metrics() {
    let port = common::k8s::free_port();
    let prometheus = Prometheus::scraping(&[format!("127.0.0.1:{port}")]);
    let dir = tempfile::tempdir().unwrap();
    let text = std::fs::read_to_string(common::root().join("policies/nginx.yaml")).unwrap();
    let text = text.replace("../plugins/dist", &common::root().join("plugins/dist").display().to_string()).replace("../models", &common::root().join("models").display().to_string());
    let file = dir.path().join("nginx.yaml");
    std::fs::write(&file, text).unwrap();
    let options = augur::commands::RunOptions {
        policies: vec![file],
        simulate: true,
        speed: 3600.0,
        run_for: Some(Duration::from_secs(12 * 3600)),
        audit_log: Some(dir.path().join("audit.jsonl")),
        echo: false,
        metrics_addr: Some(format!("127.0.0.1:{port}").parse().unwrap()),
        ..Default::default()
    };
    let run = tokio::spawn(augur::commands::run(options));
    augur::tls::install_provider(); // this test may run alone, before anything else installed it
    let http = reqwest::Client::new();
    let base = format!("http://127.0.0.1:{port}");
    let mut healthy = false;
    for _ in 0..100 {
        if http.get(format!("{base}/healthz")).send().await.is_ok_and(|r| r.status() == 200) {
            healthy = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(healthy, "/healthz answers");
    let source = PrometheusSource::new().unwrap();
    let url = &prometheus.url;
    let queries = [
        "augur_observed_value{policy=\"nginx\",metric=\"cpu\"}",
        "augur_forecast_peak{policy=\"nginx\",metric=\"cpu\",band=\"p90\"}",
        "augur_risk_level{policy=\"nginx\",rule=\"cpu\"}",
        "sum(augur_actions_total{policy=\"nginx\",verdict=\"executed\"})",
        "sum(augur_plugin_call_seconds_count{plugin=\"risk-cpu\",call=\"assess\"})",
        "augur_tick_duration_seconds_count",
        "count(augur_forecaster_info{policy=\"nginx\",metric=\"cpu\"})",
        "count(augur_forecast_interval_coverage{policy=\"nginx\",metric=\"cpu\"})",
        "augur_reload_ok{kind=\"plugin\",name=\"scale\"}",
        "augur_leader",
        "augur_build_info{wit=\"augur:plugin@0.3.0\"}",
    ];
    let mut missing = queries.to_vec();
    for _ in 0..160 {
        let mut still = Vec::new();
        for q in missing {
            if !matches!(source.instant(url, q).await, Ok(Some(v)) if v > 0.0) {
                still.push(q);
            }
        }
        missing = still;
        if missing.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(missing.is_empty(), "no data in Prometheus for {missing:#?}");
    let ready = http.get(format!("{base}/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 200);
    let openmetrics = http.get(format!("{base}/metrics")).header("Accept", "application/openmetrics-text;version=1.0.0;q=0.5,text/plain;version=0.0.4;q=0.4").send().await.unwrap();
    assert!(openmetrics.headers()["content-type"].to_str().unwrap().starts_with("application/openmetrics-text"));
    assert!(openmetrics.text().await.unwrap().ends_with("# EOF\n"), "OpenMetrics text ends with # EOF");
    let text = http.get(format!("{base}/metrics")).send().await.unwrap();
    assert!(text.headers()["content-type"].to_str().unwrap().starts_with("text/plain; version=0.0.4"));
    let text = text.text().await.unwrap();
    let mut promtool = std::process::Command::new("promtool").args(["check", "metrics"]).stdin(std::process::Stdio::piped()).stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped()).spawn().unwrap();
    std::io::Write::write_all(&mut promtool.stdin.take().unwrap(), text.as_bytes()).unwrap();
    let checked = promtool.wait_with_output().unwrap();
    let said = format!("{}{}", String::from_utf8_lossy(&checked.stdout), String::from_utf8_lossy(&checked.stderr));
    assert!(checked.status.success() && said.trim().is_empty(), "promtool check metrics:\n{said}");

    // The budget: per metric its value; per forecast metric (the 3 that risk rules read) the
    // peak per band, its interval coverage and its forecaster; per rule the score and level;
    // the policy's stale, audit and reload gauges; counters only once they count something.
    let series: Vec<&str> = text.lines().filter(|l| !l.starts_with('#') && (l.contains("policy=\"nginx\"") || l.contains("name=\"nginx\""))).collect();
    let gauges = series.iter().filter(|l| !l.contains("_total{")).count();
    assert_eq!(gauges, 5 + 3 * 5 + 3 * 2 + 3, "{series:#?}");
    assert!(series.iter().all(|l| !l.contains("step=")), "no per-step forecasts by default");
    run.await.unwrap().unwrap();
}

/// A policy on the simulator's default/nginx that reads `metrics` through Prometheus at `url`.
fn sim_policy(dir: &Path, name: &str, url: &str, metrics: &str) -> std::path::PathBuf {
    let text = format!(
        r#"name: {name}
target: {{ kind: Deployment, namespace: default, name: nginx }}
interval: 60s
source: {{ kind: prometheus, url: "{url}" }}
metrics:
{metrics}
forecast: {{ baseline: holt-damped, window: 20, horizon: 5, step: 60s }}
risks:
  - {{ name: cpu, metric: cpu, plugin: {risk}, settings: {{ capacity-per-pod: 0.5 }} }}
remediations:
  - {{ name: scale-up, risk: cpu, trigger: high, plugin: {scale}, settings: {{ step: 3 }}, capabilities: {{ actions: [scale] }} }}
guard: {{ remediate: true, min_replicas: 2, max_replicas: 10, max_step: 3, cooldown: 2m, max_actions_per_hour: 100, min_history: 3, allowed_actions: [scale] }}
audit: {{ path: audit.jsonl }}
"#,
        risk = common::plugin("risk-cpu").display(),
        scale = common::plugin("scale").display(),
    );
    let file = dir.join(format!("{name}.yaml"));
    std::fs::write(&file, text).unwrap();
    file
}

fn sim_options(policy: std::path::PathBuf, audit: &Path, minutes: u64, sim_port: u16, augur_port: u16) -> augur::commands::RunOptions {
    augur::commands::RunOptions {
        policies: vec![policy],
        simulate: true,
        speed: 240.0,
        run_for: Some(Duration::from_secs(minutes * 60)),
        audit_log: Some(audit.to_path_buf()),
        trace: Some((common::root().join("host/tests/fixtures/surge.csv"), "requests".into())),
        echo: false,
        metrics_addr: Some(format!("127.0.0.1:{augur_port}").parse().unwrap()),
        expose_sim: Some(format!("127.0.0.1:{sim_port}").parse().unwrap()),
        sim_via_prometheus: true,
        ..Default::default()
    }
}

/// The whole loop on one machine: the simulator's cAdvisor-style metrics scraped by a real
/// Prometheus, read back by Augur through it, and the simulated nginx scaled up when its load
/// surges (tests/fixtures/surge.csv), Augur's own metrics scraped beside.
///
/// First the prototype's seven queries (`{ preset: prototype }`): every one of its six
/// metrics reaches Augur through Prometheus. Then the surge, with the same queries but rate
/// windows of 10 s instead of 5 m: the simulation runs 240 times faster than Prometheus'
/// clock, and `rate()` over 5 minutes of a series scraped for a few seconds reads a tiny
/// fraction of the usage (it divides by the whole range).
#[tokio::test(flavor = "multi_thread")]
async fn the_simulation_through_prometheus_reads_the_prototypes_queries_and_scales_a_surge() {
    let ports: Vec<u16> = (0..4).map(|_| common::k8s::free_port()).collect();
    let prometheus = Prometheus::scraping(&ports.iter().map(|p| format!("127.0.0.1:{p}")).collect::<Vec<_>>());
    let dir = tempfile::tempdir().unwrap();
    let source = PrometheusSource::new().unwrap();

    let preset = sim_policy(dir.path(), "preset", &prometheus.url, "  - { preset: prototype }");
    augur::commands::run(sim_options(preset, &dir.path().join("preset.jsonl"), 60, ports[0], ports[1])).await.unwrap();
    for metric in ["cpu", "memory", "replicas", "disk_io", "latency_p95", "node_temperature"] {
        let query = format!("max_over_time(augur_observed_value{{policy=\"preset\",metric=\"{metric}\"}}[5m])");
        let value = source.instant(&prometheus.url, &query).await.unwrap();
        assert!(value.is_some_and(|v| v > 0.0), "{metric} was read through Prometheus: {value:?}");
    }

    // The first run's exporter still serves (frozen) beside this one: select this run's instance.
    let this = format!("instance=\"127.0.0.1:{}\"", ports[2]);
    let fast = format!(
        r#"  - {{ name: cpu, query: 'sum(rate(container_cpu_usage_seconds_total{{namespace="default",pod=~"nginx-.*",image!="",{this}}}[10s]))', unit: cores }}
  - {{ name: memory, query: 'sum(container_memory_working_set_bytes{{namespace="default",pod=~"nginx-.*",image!="",{this}}})', unit: bytes }}
  - {{ name: replicas, query: 'kube_deployment_status_replicas{{namespace="default",deployment="nginx",{this}}}', unit: pods }}"#
    );
    let surge = sim_policy(dir.path(), "surge", &prometheus.url, &fast);
    let audit_file = dir.path().join("surge.jsonl");
    let report = augur::commands::run(sim_options(surge, &audit_file, 110, ports[2], ports[3])).await.unwrap();
    let records = audit(&audit_file);
    let scaled: Vec<&serde_json::Value> = records.iter().filter(|r| r["verdict"] == "executed").collect();
    assert!(!scaled.is_empty() && report.totals.executed > 0, "the surge was met: {:#?}", records.iter().rev().take(3).collect::<Vec<_>>());
    assert_eq!(scaled[0]["proposal"]["action"], "scale");
    assert!(scaled[0]["observed"]["cpu"].as_f64().unwrap() > 0.5, "it acts once the ramp lifts CPU above the flat hour (0.4 cores): {}", scaled[0]);
    assert!(report.simulated[0].1.peak_replicas > 2);

    // Every query of the Grafana dashboard has data in this Prometheus.
    let vars = [("__rate_interval", "5m"), ("policy", "surge"), ("namespace", "default"), ("workload", "nginx")];
    let mut empty = Vec::new();
    for query in dashboard_queries(&vars) {
        if source.series_count(&prometheus.url, &query).await.unwrap_or(0) == 0 {
            empty.push(query);
        }
    }
    assert!(empty.is_empty(), "dashboard queries without data: {empty:#?}");
}

/// The Grafana dashboard (deploy/grafana-dashboard.json).
fn dashboard() -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(common::root().join("deploy/grafana-dashboard.json")).unwrap()).unwrap()
}

/// Every PromQL expression of the dashboard (panels' targets, annotations, and the template
/// variables' `label_values(metric, label)` as the PromQL it stands for), with its variables
/// replaced by `vars`.
pub(crate) fn dashboard_queries(vars: &[(&str, &str)]) -> Vec<String> {
    let d = dashboard();
    let mut out: Vec<String> = Vec::new();
    for panel in d["panels"].as_array().unwrap() {
        out.extend(panel["targets"].as_array().unwrap().iter().map(|t| t["expr"].as_str().unwrap().to_string()));
    }
    out.extend(d["annotations"]["list"].as_array().unwrap().iter().map(|a| a["expr"].as_str().unwrap().to_string()));
    for var in d["templating"]["list"].as_array().unwrap().iter().filter(|v| v["type"] == "query") {
        let q = var["query"]["query"].as_str().unwrap();
        let inner = q.strip_prefix("label_values(").and_then(|s| s.strip_suffix(')')).unwrap();
        let (metric, label) = inner.rsplit_once(", ").unwrap();
        out.push(format!("count by ({label}) ({metric})"));
    }
    out.into_iter()
        .map(|q| vars.iter().fold(q, |q, (name, value)| q.replace(&format!("${name}"), value)))
        .collect()
}

/// Grafana's own dashboard model: the types of @grafana/schema, checked by tsc in strict mode
/// (scripts/check-dashboard.sh; Grafana's schema types annotation targets for its own
/// datasource only, so the annotations are checked by the tests here instead).
#[test]
fn the_dashboard_fits_grafanas_schema() {
    let out = std::process::Command::new("bash").arg(common::root().join("scripts/check-dashboard.sh")).arg(common::root().join("deploy/grafana-dashboard.json")).output().unwrap();
    assert!(out.status.success(), "{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("fits Grafana's dashboard model"));
}

/// Grafana's dashboard model, as far as a dashboard file must follow it to import: a uid,
/// title and schemaVersion; panels with unique ids, a type, a gridPos inside 24 columns and
/// targets with unique refIds; every query through the `datasource` variable (type
/// `datasource`, plugin `prometheus`); every variable used is defined or one of Grafana's; and
/// every expression is PromQL.
#[test]
fn the_dashboard_follows_grafanas_dashboard_model() {
    let d = dashboard();
    assert_eq!(d["uid"], "augur-overview");
    assert!(d["title"].is_string() && d["schemaVersion"].as_u64().unwrap() >= 36);
    let vars = d["templating"]["list"].as_array().unwrap();
    let datasource = vars.iter().find(|v| v["name"] == "datasource").expect("a datasource variable");
    assert_eq!((datasource["type"].as_str(), datasource["query"].as_str()), (Some("datasource"), Some("prometheus")));
    let defined: Vec<String> = vars.iter().map(|v| v["name"].as_str().unwrap().to_string()).collect();
    let through_variable = |ds: &serde_json::Value| ds["type"] == "prometheus" && ds["uid"] == "${datasource}";
    let mut ids = std::collections::BTreeSet::new();
    let kinds = ["timeseries", "stat", "gauge", "table", "bargauge", "text", "state-timeline"];
    for panel in d["panels"].as_array().unwrap() {
        let title = panel["title"].as_str().unwrap();
        assert!(ids.insert(panel["id"].as_u64().unwrap()), "{title}: duplicate id");
        assert!(kinds.contains(&panel["type"].as_str().unwrap()), "{title}: type");
        let g = &panel["gridPos"];
        let (x, w, h) = (g["x"].as_u64().unwrap(), g["w"].as_u64().unwrap(), g["h"].as_u64().unwrap());
        assert!(x + w <= 24 && w > 0 && h > 0 && g["y"].is_u64(), "{title}: gridPos {g}");
        assert!(through_variable(&panel["datasource"]), "{title}: datasource");
        let targets = panel["targets"].as_array().unwrap();
        assert!(!targets.is_empty(), "{title}: no targets");
        let refs: std::collections::BTreeSet<&str> = targets.iter().map(|t| t["refId"].as_str().unwrap()).collect();
        assert_eq!(refs.len(), targets.len(), "{title}: refIds");
        assert!(targets.iter().all(|t| through_variable(&t["datasource"])), "{title}: a target's datasource");
    }
    let builtin = ["__rate_interval", "__interval", "__range"];
    let text = serde_json::to_string(&d).unwrap();
    for used in text.split('$').skip(1) {
        let name: String = used.trim_start_matches('{').chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
        assert!(defined.contains(&name) || builtin.contains(&name.as_str()), "`${name}` is not a variable of the dashboard");
    }
    for query in dashboard_queries(&[("__rate_interval", "5m"), ("policy", "p"), ("namespace", "n"), ("workload", "w")]) {
        augur::config::promql::check(&query).unwrap_or_else(|e| panic!("not PromQL: {query}: {e}"));
    }
}

/// The alert rules as shipped (deploy/prometheus-rules.yaml, a PrometheusRule) pass
/// `promtool check rules` and their unit tests (tests/fixtures/augur-rules-test.yaml): each
/// alert fires on the series that should raise it.
#[test]
fn the_alert_rules_pass_promtool() {
    let text = std::fs::read_to_string(common::root().join("deploy/prometheus-rules.yaml")).unwrap();
    let rule: serde_json::Value = yaml_serde::from_str(&text).unwrap();
    assert_eq!(rule["kind"], "PrometheusRule");
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("rules.yaml"), yaml_serde::to_string(&rule["spec"]).unwrap()).unwrap();
    std::fs::copy(common::root().join("host/tests/fixtures/augur-rules-test.yaml"), dir.path().join("test.yaml")).unwrap();
    let check = std::process::Command::new("promtool").args(["check", "rules", "rules.yaml"]).current_dir(dir.path()).output().unwrap();
    assert!(check.status.success(), "{}{}", String::from_utf8_lossy(&check.stdout), String::from_utf8_lossy(&check.stderr));
    let test = std::process::Command::new("promtool").args(["test", "rules", "test.yaml"]).current_dir(dir.path()).output().unwrap();
    assert!(test.status.success(), "{}{}", String::from_utf8_lossy(&test.stdout), String::from_utf8_lossy(&test.stderr));
    let alerts = rule["spec"]["groups"][0]["rules"].as_array().unwrap().len();
    let tested = std::fs::read_to_string(dir.path().join("test.yaml")).unwrap();
    for r in rule["spec"]["groups"][0]["rules"].as_array().unwrap() {
        assert!(tested.contains(&format!("alertname: {}", r["alert"].as_str().unwrap())), "{} has no promtool test", r["alert"]);
    }
    assert_eq!(alerts, 7);
}

/// Per-pod series (`sum by (pod) (...)`) give the metric's total and each pod's value, which
/// the workload's pods then carry (the restart plugin picks the heaviest pod by them).
#[tokio::test(flavor = "multi_thread")]
async fn per_pod_series_give_the_total_and_each_pods_usage() {
    let text = format!(
        "# TYPE augur_test_pod_memory_bytes gauge\naugur_test_pod_memory_bytes{{pod=\"web-a\"}} 100 {t:.3}\naugur_test_pod_memory_bytes{{pod=\"web-b\"}} 300 {t:.3}\n# EOF\n",
        t = unix_now() - 10.0
    );
    let prometheus = Prometheus::backfilled(&text);
    let dir = tempfile::tempdir().unwrap();
    let metrics = "  - { name: cpu, query: 'vector(0.5)', unit: cores }\n  - { name: memory, query: 'sum by (pod) (augur_test_pod_memory_bytes)', resource: memory, unit: bytes }";
    let policy = policy(dir.path(), &prometheus.url, metrics, "60s");
    let source = PrometheusSource::new().unwrap();
    let mut observation = source.collect(&policy).await.unwrap();
    assert_eq!(observation.values["memory"], 400.0);
    assert_eq!(observation.parts["memory"], std::collections::BTreeMap::from([("web-a".to_string(), 100.0), ("web-b".to_string(), 300.0)]));
    let pod = |name: &str| augur::domain::Pod { name: name.into(), node: "n".into(), phase: "Running".into(), ready: true, cpu_cores: None, memory_bytes: None, age_seconds: 900 , startup_seconds: None};
    let mut workload = augur::domain::Workload { target: policy.target.clone(), replicas: 3, ready_replicas: 3, pods: vec![pod("web-a"), pod("web-b"), pod("web-c")], nodes: vec![], paused: None, scaled_by: None };
    observation.fill_workload(&policy, &mut workload);
    let memory: Vec<Option<f64>> = workload.pods.iter().map(|p| p.memory_bytes).collect();
    assert_eq!(memory, [Some(100.0), Some(300.0), None]);
    assert_eq!(observation.values["memory"], 400.0, "the total over the workload's own pods");
    assert!(workload.pods.iter().all(|p| p.cpu_cores.is_none()), "cpu has no per-pod series and no resource");
}

/// A store that answers `/<scenario>/api/v1/query` as Prometheus' API would, with the faults a
/// real Prometheus cannot be made to serve: it never returns a sample stamped after the query's
/// time, never computes an age of NaN from real timestamps, and never pairs an error status
/// with a success body. A remote store (Thanos, Mimir, a proxy in front of them) can, so here
/// (and only here) a loopback stand-in serves them.
async fn faulty_store() -> String {
    use axum::extract::Path as UrlPath;
    use axum::http::{StatusCode, Uri};
    async fn query(UrlPath(scenario): UrlPath<String>, uri: Uri) -> (StatusCode, String) {
        let now = unix_now();
        // The age query of `promql::age_query`, form-encoded.
        let is_age = uri.query().is_some_and(|q| q.contains("timestamp"));
        let number = match (scenario.as_str(), is_age) {
            (_, false) => "12".to_string(),
            ("future", true) => "-3600".to_string(),
            ("nan", true) => "NaN".to_string(),
            (_, true) => "1".to_string(),
        };
        let body = format!(r#"{{"status":"success","data":{{"resultType":"vector","result":[{{"metric":{{}},"value":[{now},"{number}"]}}]}}}}"#);
        match scenario.as_str() {
            "unavailable" => (StatusCode::SERVICE_UNAVAILABLE, body),
            "forged-error" => (StatusCode::BAD_REQUEST, "{\"status\":\"error\",\"errorType\":\"bad_data\",\"error\":\"no\\nFORGED line\\u001b[2K\"}".into()),
            _ => (StatusCode::OK, body),
        }
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let app = axum::Router::new().route("/{scenario}/api/v1/query", axum::routing::get(query));
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    url
}

fn faulty_policy(dir: &Path, name: &str, url: &str) -> Policy {
    let text = format!(
        r#"name: {name}
target: {{ kind: Deployment, namespace: shop, name: {name} }}
interval: 60s
source: {{ kind: prometheus, url: "{url}" }}
metrics: [{{ name: cpu, query: 'sum(rate(container_cpu_usage_seconds_total[1m]))', unit: cores }}]
forecast: {{ baseline: last-value, horizon: 5, step: 60s }}
risks:
  - {{ name: cpu, metric: cpu, plugin: {risk}, settings: {{ capacity-per-pod: 0.5 }} }}
remediations:
  - {{ name: scale-up, risk: cpu, trigger: high, plugin: {scale}, settings: {{ step: 3 }}, capabilities: {{ actions: [scale] }} }}
guard: {{ remediate: true, min_replicas: 2, max_replicas: 20, max_step: 3, cooldown: 1s, min_history: 1, allowed_actions: [scale] }}
audit: {{ path: {name}.jsonl }}
"#,
        risk = common::plugin("risk-cpu").display(),
        scale = common::plugin("scale").display(),
    );
    config::parse(&text, &dir.join(format!("{name}.yaml")), &augur::config::Catalog::shipped()).unwrap_or_else(|p| panic!("{p:#?}"))
}

/// A sample stamped in the future, an age that computes to NaN and an error status whose body
/// says success are stale or an error, never data; a store's error text reaches the record
/// escaped; and a policy on a healthy store acts on the same tick.
#[tokio::test(flavor = "multi_thread")]
async fn data_that_is_not_fresh_is_never_acted_on() {
    let store = faulty_store().await;
    let dir = tempfile::tempdir().unwrap();
    let source = PrometheusSource::new().unwrap();
    let at = |scenario: &str| faulty_policy(dir.path(), scenario, &format!("{store}/{scenario}"));

    let future = source.collect(&at("future")).await.unwrap_err();
    assert!(matches!(future, SourceError::Stale { .. }), "{future}");
    assert!(future.to_string().contains("the newest sample is stamped 3600s in the future"), "{future}");
    let nan = source.collect(&at("nan")).await.unwrap_err();
    assert!(matches!(nan, SourceError::Stale { .. }), "{nan}");
    assert!(nan.to_string().contains("computes to NaN"), "{nan}");
    let unavailable = source.collect(&at("unavailable")).await.unwrap_err();
    assert!(matches!(unavailable, SourceError::Failed { .. }), "{unavailable}");
    assert!(unavailable.to_string().contains("answered HTTP 503 Service Unavailable"), "{unavailable}");
    let forged = source.collect(&at("forged-error")).await.unwrap_err().to_string();
    assert!(forged.contains("Prometheus rejected the query (bad_data): no\\nFORGED line\\u{1b}[2K (HTTP 400 Bad Request)"), "{forged}");
    assert!(!forged.chars().any(char::is_control), "{forged:?}");
    assert_eq!(source.collect(&at("fresh")).await.unwrap().values["cpu"], 12.0);

    // In one engine tick: the faulty stores' policies record why and hold; the healthy acts.
    let sim = Arc::new(SimCluster::new(SimConfig::default()));
    let plugins = Arc::new(Plugins::new(Limits::default()).unwrap());
    let names = ["future", "nan", "unavailable", "fresh"];
    let runtimes = names
        .iter()
        .map(|n| {
            let policy = at(n);
            sim.add_deployment(&policy.target, 2);
            PolicyRuntime::new(policy, &plugins, None, false).unwrap()
        })
        .collect();
    let mut engine = Engine::new(plugins, Seams { metrics: Arc::new(source), ..Seams::all(sim.clone()) }, runtimes, false).unwrap();
    engine.set_echo(false);
    let counts = engine.tick(sim.now()).await;
    assert_eq!(counts.executed, 1, "{counts:?}");
    for held in ["future", "nan", "unavailable"] {
        let records = audit(&dir.path().join(format!("{held}.jsonl")));
        assert!(records.iter().all(|r| r["verdict"].is_null() && r["error_stage"] == "collect"), "{held}: {records:#?}");
    }
    assert!(audit(&dir.path().join("fresh.jsonl")).iter().any(|r| r["verdict"] == "executed"));
}

/// Runs openssl (from the machine; the control plane's setup uses it too).
fn openssl(args: &[&str], dir: &Path) {
    let out = std::process::Command::new("openssl").args(args).current_dir(dir).output().unwrap();
    assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

/// A CA, and a serving certificate for localhost it signed: (ca.pem, server.pem, server.key).
fn certificates(dir: &Path) -> (std::path::PathBuf, std::path::PathBuf, std::path::PathBuf) {
    openssl(&["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem", "-days", "2", "-subj", "/CN=augur test CA"], dir);
    openssl(&["req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=localhost"], dir);
    std::fs::write(dir.join("san.ext"), "subjectAltName=DNS:localhost,IP:127.0.0.1\n").unwrap();
    openssl(&["x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial", "-out", "server.pem", "-days", "2", "-extfile", "san.ext"], dir);
    (dir.join("ca.pem"), dir.join("server.pem"), dir.join("server.key"))
}

/// `source.ca_file`: a real Prometheus serving HTTPS (its own `tls_server_config`) with a
/// certificate from a private CA. With the CA file the policy's metrics are read; without it
/// the error names the certificate, and a CA file that is no PEM says so with the fix.
#[tokio::test(flavor = "multi_thread")]
async fn a_prometheus_behind_tls_is_read_with_the_policys_ca_file() {
    let dir = tempfile::tempdir().unwrap();
    let (ca, cert, key) = certificates(dir.path());
    let prometheus = Prometheus::tls(&cert, &key);
    let metrics = "  - { name: cpu, query: \"vector(7)\", unit: cores }";
    let trusting = policy(dir.path(), &prometheus.url, metrics, "1s");
    let with_ca = |policy: &Policy, file: &Path| {
        let mut p = policy.clone();
        let config::MetricSourceSpec::Prometheus { access, .. } = &mut p.metric_source else { unreachable!() };
        access.ca_file = Some(file.to_path_buf());
        p
    };
    let source = PrometheusSource::new().unwrap();
    let observation = source.collect(&with_ca(&trusting, &ca)).await.unwrap();
    assert_eq!(observation.values["cpu"], 7.0);
    let untrusted = source.collect(&trusting).await.unwrap_err().to_string();
    assert!(untrusted.contains("cannot reach Prometheus at https://localhost") && untrusted.to_lowercase().contains("certificate"), "{untrusted}");
    std::fs::write(dir.path().join("junk.pem"), "not a certificate").unwrap();
    let junk = source.collect(&with_ca(&trusting, &dir.path().join("junk.pem"))).await.unwrap_err().to_string();
    assert!(junk.contains("source.ca_file") && junk.contains("PEM"), "{junk}");
    // And as a policy file writes it, relative to the file.
    let text = format!("source: {{ kind: prometheus, url: \"{}\", ca_file: ca.pem }}", prometheus.url);
    let file = dir.path().join("tls.yaml");
    let template = std::fs::read_to_string(common::root().join("policies/nginx.yaml")).unwrap();
    std::fs::write(&file, template.replace("interval: 15s", &format!("interval: 15s\n{text}")).replace("../", &format!("{}/", common::root().display()))).unwrap();
    let parsed = config::load(&file).unwrap_or_else(|e| panic!("{e}"));
    let config::MetricSourceSpec::Prometheus { access, .. } = &parsed.metric_source else { unreachable!() };
    assert_eq!(access.ca_file.as_deref(), Some(ca.as_path()));
}

/// A stand-in for the gateway that Mimir or Thanos puts in front of a store: it answers 401
/// unless the request carries `Authorization: Bearer <the token file's content>` and the
/// tenant header, and otherwise forwards to the real Prometheus. Prometheus itself checks no
/// bearer token (its web config has basic auth and TLS only), so a real one cannot refuse.
async fn gateway(upstream: String, token_file: std::path::PathBuf, tenant: &'static str) -> String {
    use http_body_util::Full;
    use hyper::{Request, Response, body::Incoming};
    use hyper_util::rt::TokioIo;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else { return };
            let (upstream, token_file) = (upstream.clone(), token_file.clone());
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |request: Request<Incoming>| {
                    let (upstream, token_file) = (upstream.clone(), token_file.clone());
                    async move {
                        let want = format!("Bearer {}", std::fs::read_to_string(&token_file).unwrap().trim());
                        let header = |name: &str| request.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_string);
                        if header("authorization").as_deref() != Some(want.as_str()) || header("x-scope-orgid").as_deref() != Some(tenant) {
                            return Ok::<_, std::convert::Infallible>(Response::builder().status(401).body(Full::new(bytes::Bytes::from_static(b"no org id or bad token"))).unwrap());
                        }
                        let path = request.uri().path_and_query().map(|p| p.as_str().to_string()).unwrap_or_default();
                        let body = reqwest::get(format!("{upstream}{path}")).await.unwrap().bytes().await.unwrap();
                        Ok(Response::new(Full::new(body)))
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service).await;
            });
        }
    });
    format!("http://{addr}")
}

/// `source.bearer_token_file` and `source.headers` (a Mimir tenant): sent with every query,
/// the token read afresh each time (a rotated token is used at once); without them the store's
/// 401 comes back with the fix.
#[tokio::test(flavor = "multi_thread")]
async fn a_bearer_token_file_and_tenant_header_reach_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("token");
    std::fs::write(&token, "first-token\n").unwrap();
    let url = gateway(prometheus().url.clone(), token.clone(), "team-a").await;
    let metrics = "  - { name: cpu, query: \"vector(5)\", unit: cores }";
    let bare = policy(dir.path(), &url, metrics, "1s");
    let mut with_access = bare.clone();
    let config::MetricSourceSpec::Prometheus { access, .. } = &mut with_access.metric_source else { unreachable!() };
    access.bearer_token_file = Some(token.clone());
    access.headers.insert("X-Scope-OrgID".into(), "team-a".into());
    let source = PrometheusSource::new().unwrap();
    assert_eq!(source.collect(&with_access).await.unwrap().values["cpu"], 5.0);
    // Rotated in place: the next query sends the new token.
    std::fs::write(&token, "second-token").unwrap();
    assert_eq!(source.collect(&with_access).await.unwrap().values["cpu"], 5.0);
    let refused = source.collect(&bare).await.unwrap_err().to_string();
    assert!(refused.contains("401") && refused.contains("source.bearer_token_file"), "{refused}");
    // A missing token file is named, with the fix.
    std::fs::remove_file(&token).unwrap();
    let missing = source.collect(&with_access).await.unwrap_err().to_string();
    assert!(missing.contains("source.bearer_token_file") && missing.contains(&token.display().to_string()), "{missing}");
}

/// How many instant queries Prometheus has answered, from its own /metrics.
async fn instant_queries_answered(url: &str) -> f64 {
    answered(url, "/api/v1/query").await
}

/// How many requests to `handler` Prometheus has answered.
async fn answered(url: &str, handler: &str) -> f64 {
    let text = reqwest::get(format!("{url}/metrics")).await.unwrap().text().await.unwrap();
    let handler = format!("handler=\"{handler}\"");
    text.lines().filter(|l| l.starts_with("prometheus_http_requests_total{") && l.contains(&handler)).map(|l| l.rsplit(' ').next().unwrap().parse::<f64>().unwrap()).sum()
}

/// Workload `k`'s policy: CPU as a rate over its pods' counters, memory per pod, its replica
/// count, and a cluster-wide query the same for every workload.
fn workload_policy(dir: &Path, url: &str, k: usize) -> Policy {
    let metrics = format!(
        r#"  - {{ name: cpu, query: 'sum(rate(augur_test_cpu_seconds_total{{namespace="shop",pod=~"web-{k}-.*",image!=""}}[5m]))', unit: cores }}
  - {{ name: memory, query: 'sum by (pod) (augur_test_memory_bytes{{namespace="shop",pod=~"web-{k}-.*"}})', resource: memory, unit: bytes }}
  - {{ name: replicas, query: 'augur_test_replicas{{namespace="shop",deployment="web-{k}"}}', unit: pods }}
  - {{ name: heat, query: 'avg(augur_test_celsius) * 1', unit: celsius }}"#
    );
    let mut policy = policy(dir, url, &metrics, "60s");
    policy.name = format!("web-{k}");
    policy
}

/// Many policies of one shape read through one query per shape: each gets exactly what its
/// own queries give (values, per-pod parts, the refusal of a workload without data), and the
/// queries Prometheus answers do not grow with the number of policies.
#[tokio::test(flavor = "multi_thread")]
async fn policies_of_one_shape_share_one_query_and_each_gets_its_own_answer() {
    let end = unix_now() - 5.0;
    let mut text = String::from("# TYPE augur_test_cpu_seconds_total counter\n");
    let minutes = 10;
    let samples = |text: &mut String, name: &str, labels: &str, value: &dyn Fn(usize) -> f64| {
        for i in 0..=minutes {
            let t = end - 60.0 * (minutes - i) as f64;
            text.push_str(&format!("{name}{{{labels}}} {} {t:.3}\n", value(i)));
        }
    };
    // Workloads 1..=40 have data; web-99 has none.
    for k in 1..=40 {
        for pod in ["a", "b"] {
            let cores = 0.1 * k as f64 + if pod == "a" { 0.05 } else { 0.0 };
            samples(&mut text, "augur_test_cpu_seconds_total", &format!("namespace=\"shop\",pod=\"web-{k}-{pod}\",image=\"web\""), &|i| cores * 60.0 * i as f64);
        }
    }
    text.push_str("# TYPE augur_test_memory_bytes gauge\n");
    for k in 1..=40 {
        for pod in ["a", "b"] {
            samples(&mut text, "augur_test_memory_bytes", &format!("namespace=\"shop\",pod=\"web-{k}-{pod}\""), &|_| (1000 * k + pod.len()) as f64);
        }
    }
    text.push_str("# TYPE augur_test_replicas gauge\n");
    for k in 1..=40 {
        samples(&mut text, "augur_test_replicas", &format!("namespace=\"shop\",deployment=\"web-{k}\""), &|_| (k % 5 + 1) as f64);
    }
    text.push_str("# TYPE augur_test_celsius gauge\n");
    samples(&mut text, "augur_test_celsius", "node=\"n1\"", &|_| 60.0);
    text.push_str("# EOF\n");
    let prometheus = Prometheus::backfilled(&text);
    let dir = tempfile::tempdir().unwrap();
    let source = PrometheusSource::new().unwrap();

    let mut few: Vec<Policy> = (1..=20).map(|k| workload_policy(dir.path(), &prometheus.url, k)).collect();
    few.push(workload_policy(dir.path(), &prometheus.url, 99));
    let mut many: Vec<Policy> = (1..=40).map(|k| workload_policy(dir.path(), &prometheus.url, k)).collect();
    many.push(workload_policy(dir.path(), &prometheus.url, 99));

    let before = instant_queries_answered(&prometheus.url).await;
    let together = source.collect_all(&many.iter().collect::<Vec<_>>()).await;
    let for_many = instant_queries_answered(&prometheus.url).await - before;
    let before = instant_queries_answered(&prometheus.url).await;
    source.collect_all(&few.iter().collect::<Vec<_>>()).await;
    let for_few = instant_queries_answered(&prometheus.url).await - before;
    // Three shapes (one query each, ages in the same answer) and the cluster-wide query and
    // its selector's age, once: the same for 21 policies as for 41. (web-99's empty shares
    // need no query of their own: they have no fallback.)
    assert_eq!(for_few, for_many, "the queries grow with the shapes, not with the policies");
    assert!(for_many <= 3.0 + 2.0, "{for_many} queries for 41 policies");

    for (policy, together) in many.iter().zip(&together) {
        let alone = source.collect(policy).await;
        match (alone, together) {
            (Ok(alone), Ok(together)) => {
                assert_eq!(alone.values.len(), 4);
                for (metric, value) in &alone.values {
                    assert!((together.values[metric] - value).abs() <= 1e-9 * value.abs().max(1.0), "{}: {metric} {} alone, {} together", policy.name, value, together.values[metric]);
                }
                assert_eq!(alone.parts, together.parts, "{}", policy.name);
                for (metric, age) in &alone.ages {
                    assert!((together.ages[metric] - age).abs() < 5.0, "{}: {metric} is {age} s old alone, {} together", policy.name, together.ages[metric]);
                }
            }
            (Err(alone), Err(together)) => assert_eq!(alone.to_string(), together.to_string(), "{}", policy.name),
            (alone, together) => panic!("{}: {alone:?} alone, {together:?} together", policy.name),
        }
    }
    let web7 = together[6].as_ref().unwrap();
    assert!((web7.values["cpu"] - 1.45).abs() < 1e-6, "web-7's own pods only (web-70..79 do not exist, web-17 is not web-7): {}", web7.values["cpu"]);
    assert_eq!(web7.parts["memory"].len(), 2);
    assert_eq!(web7.values["replicas"], 3.0);
    let missing = together[40].as_ref().unwrap_err().to_string();
    assert!(missing.contains("cpu: no series now") && missing.contains("replicas: no series now"), "{missing}");

    // The warm start the same way: one range query per shape, each policy its own past.
    let end = SystemTime::now() - Duration::from_secs(60);
    let asks: Vec<(&Policy, usize, SystemTime)> = many.iter().map(|p| (p, 8, end)).collect();
    let before = answered(&prometheus.url, "/api/v1/query_range").await;
    let pasts = source.backfill_all(&asks).await;
    let ranges = answered(&prometheus.url, "/api/v1/query_range").await - before;
    assert!(ranges <= 4.0, "{ranges} range queries for 41 policies");
    for (policy, together) in many.iter().zip(pasts) {
        let (alone, together) = (source.backfill(policy, 8, end).await.unwrap(), together.unwrap());
        assert_eq!(alone.keys().collect::<Vec<_>>(), together.keys().collect::<Vec<_>>());
        for (metric, points) in &alone {
            assert_eq!(points.len(), together[metric].len(), "{}: {metric}", policy.name);
            assert!(points.iter().zip(&together[metric]).all(|(a, b)| (a - b).abs() <= 1e-9 * a.abs().max(1.0)), "{}: {metric} {points:?} alone, {:?} together", policy.name, together[metric]);
        }
    }

    // Fallback queries are batched too: a query with no series in any policy, then the
    // fallbacks of all of them, one query each round.
    let fallbacks: Vec<Policy> = (1..=3)
        .map(|k| {
            let metrics = format!(r#"  - {{ name: cpu, query: 'augur_test_no_such{{deployment="web-{k}"}}', fallback_query: 'augur_test_replicas{{namespace="shop",deployment="web-{k}"}}', unit: pods }}"#);
            policy(dir.path(), &prometheus.url, &metrics, "60s")
        })
        .collect();
    let before = instant_queries_answered(&prometheus.url).await;
    let together = source.collect_all(&fallbacks.iter().collect::<Vec<_>>()).await;
    assert_eq!(instant_queries_answered(&prometheus.url).await - before, 2.0, "the queries, then the fallbacks");
    for (k, (policy, together)) in fallbacks.iter().zip(together).enumerate() {
        let (alone, together) = (source.collect(policy).await.unwrap(), together.unwrap());
        assert_eq!(together.values, alone.values);
        assert_eq!(together.values["cpu"], ((k + 1) % 5 + 1) as f64);
    }
}
