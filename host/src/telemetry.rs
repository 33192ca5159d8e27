//! Augur's own metrics (OpenMetrics, through `prometheus-client`) and the small HTTP server
//! that serves them with `/healthz` and `/readyz`, on `--metrics-addr`.
//!
//! What a dashboard or an alert needs to see Augur work: per workload the observed value, the
//! forecast's peak over the horizon per band (p10, p50, p90; every step with
//! `Detail::Full`), the risk score and level, and the age of the data;
//! actions by kind and verdict; plugin call latency and dropped log lines; whether each
//! policy's audit takes writes; the forecaster in use; tick duration;
//! collection failures; reload status per plugin and policy; leadership.
//!
//! A cardinality budget: by default (`Detail::Summary`) a policy carries about five series per
//! forecast metric, one per other metric, two per risk rule and a few of its own, and its
//! counters appear with their first increment (the shipped alerts are written for that);
//! `Detail::Full` adds every step of every forecast, the skill gate's ratios and the counters
//! at 0 from the start. Served as OpenMetrics to a scraper that asks for it (Prometheus does)
//! and as the text format 0.0.4 otherwise (what `promtool check metrics` reads).

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

type FloatGauge = Gauge<f64, AtomicU64>;
type Histograms<L> = Family<L, Histogram, fn() -> Histogram>;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct MetricLabels {
    pub policy: String,
    pub metric: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ForecastLabels {
    pub policy: String,
    pub metric: String,
    /// Steps ahead, 1 = the next point.
    pub step: String,
    /// `p10`, `p50` or `p90` (not `quantile`: Prometheus keeps that label for summaries).
    pub band: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BandLabels {
    pub policy: String,
    pub metric: String,
    /// `p10`, `p50` or `p90`.
    pub band: String,
}

/// How many series each policy carries on `/metrics`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Detail {
    /// The budget: each forecast's peak per band, counters from their first increment.
    #[default]
    Summary,
    /// Also every forecast step, the skill ratios, and every counter at 0 from the start.
    Full,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RuleLabels {
    pub policy: String,
    pub rule: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ActionLabels {
    pub policy: String,
    pub kind: String,
    pub verdict: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PluginLabels {
    pub plugin: String,
    /// `assess` or `plan`.
    pub call: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PluginNameLabels {
    pub plugin: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReloadResultLabels {
    /// `policy` or `plugin`.
    pub kind: String,
    /// `reloaded`, `rejected` or `removed`.
    pub result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReloadLabels {
    /// `policy` or `plugin`.
    pub kind: String,
    pub name: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ModelLabels {
    pub policy: String,
    pub metric: String,
    pub forecaster: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    pub policy: String,
    /// The stage that failed: `collect`, `stale`, `forecast`, `assess`, `plan`, ...
    pub stage: String,
}

/// What this build is: `augur_build_info`'s labels.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BuildLabels {
    /// The host's version (its crate's).
    pub version: String,
    /// The plugin contract it serves.
    pub wit: String,
}

/// The plugin contract's package and version, as `wit/plugin.wit` declares it.
pub const WIT_PACKAGE: &str = "augur:plugin@0.3.0";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PolicyLabels {
    pub policy: String,
}

/// One labelled series of a policy's, in whichever families carry those labels: what
/// `Telemetry::forget` drops when the policy goes (removed, or reloaded without it), or when
/// this replica stands by (its last values would read as live ones).
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
pub enum Series {
    /// `observed_value`, `data_age_seconds`, `forecast_interval_coverage`.
    Metric(MetricLabels),
    /// `forecast_value`.
    Forecast(ForecastLabels),
    /// `forecast_peak`.
    Peak(BandLabels),
    /// `risk_score`, `risk_level`.
    Rule(RuleLabels),
    /// `actions_total`.
    Action(ActionLabels),
    /// `stage_errors_total`.
    Error(ErrorLabels),
    /// `data_stale`, `audit_write_failing`.
    Policy(PolicyLabels),
    /// `forecaster_info`, `forecast_skill_ratio`.
    Model(ModelLabels),
}

/// Every metric Augur exports.
pub struct Telemetry {
    registry: Registry,
    pub observed: Family<MetricLabels, FloatGauge>,
    pub data_age: Family<MetricLabels, FloatGauge>,
    pub forecast: Family<ForecastLabels, FloatGauge>,
    pub forecast_peak: Family<BandLabels, FloatGauge>,
    pub risk_score: Family<RuleLabels, FloatGauge>,
    pub risk_level: Family<RuleLabels, Gauge>,
    pub actions: Family<ActionLabels, Counter>,
    pub errors: Family<ErrorLabels, Counter>,
    pub data_stale: Family<PolicyLabels, Gauge>,
    pub plugin_call: Histograms<PluginLabels>,
    pub plugin_log_dropped: Family<PluginNameLabels, Counter>,
    pub audit_failing: Family<PolicyLabels, Gauge>,
    pub reload_ok: Family<ReloadLabels, Gauge>,
    pub reloads: Family<ReloadResultLabels, Counter>,
    pub forecaster: Family<ModelLabels, Gauge>,
    pub interval_coverage: Family<MetricLabels, FloatGauge>,
    pub forecast_skill: Family<ModelLabels, FloatGauge>,
    pub tick: Histogram,
    pub leader: Gauge,
    pub detail: Detail,
    ready: AtomicBool,
}

fn plugin_buckets() -> Histogram {
    // 5 us .. ~1.3 s: a warm call is ~4 us, a fresh instance ~50 us, the deadline 250 ms.
    Histogram::new(exponential_buckets(5e-6, 4.0, 10))
}

impl Telemetry {
    /// The metrics within the default budget (`Detail::Summary`).
    pub fn new() -> Arc<Self> {
        Self::with_detail(Detail::Summary)
    }

    pub fn with_detail(detail: Detail) -> Arc<Self> {
        let mut registry = Registry::with_prefix("augur");
        let t = Self {
            observed: Family::default(),
            data_age: Family::default(),
            forecast: Family::default(),
            forecast_peak: Family::default(),
            risk_score: Family::default(),
            risk_level: Family::default(),
            actions: Family::default(),
            errors: Family::default(),
            data_stale: Family::default(),
            plugin_call: Family::new_with_constructor(plugin_buckets),
            plugin_log_dropped: Family::default(),
            audit_failing: Family::default(),
            reload_ok: Family::default(),
            reloads: Family::default(),
            forecaster: Family::default(),
            interval_coverage: Family::default(),
            forecast_skill: Family::default(),
            tick: Histogram::new(exponential_buckets(1e-4, 4.0, 10)),
            leader: Gauge::default(),
            detail,
            ready: AtomicBool::new(false),
            registry: Registry::default(),
        };
        registry.register("observed_value", "The last value collected, per policy and metric", t.observed.clone());
        registry.register("data_age_seconds", "Age of the newest sample behind each metric at the last collection", t.data_age.clone());
        registry.register("forecast_peak", "The peak of the last forecast over its horizon per policy, metric and band (p10, p50, p90)", t.forecast_peak.clone());
        if detail == Detail::Full {
            registry.register("forecast_value", "The last forecast per policy, metric, step ahead and band (p10, p50, p90)", t.forecast.clone());
        }
        registry.register("risk_score", "The last risk score (0..1) per policy and risk rule", t.risk_score.clone());
        registry.register("risk_level", "The last risk level per policy and risk rule: 0 none, 1 low, 2 medium, 3 high, 4 critical", t.risk_level.clone());
        registry.register("actions", "Proposed actions by kind and verdict (executed, dry-run, rejected, failed, superseded, unconfirmed)", t.actions.clone());
        registry.register("stage_errors", "Ticks of a policy that failed at a stage (collect, stale, forecast, assess, plan)", t.errors.clone());
        registry.register("data_stale", "1 while a policy's last collection failed or was stale (it takes no action), else 0", t.data_stale.clone());
        registry.register("plugin_call_seconds", "Time of one plugin call", t.plugin_call.clone());
        registry.register("plugin_log_lines_dropped", "Log lines of a plugin dropped by its rate limit (a burst of 50, then 10 a second)", t.plugin_log_dropped.clone());
        registry.register("audit_write_failing", "1 while a policy's audit log cannot be written (the policy executes no action), else 0", t.audit_failing.clone());
        registry.register("reload_ok", "1 if the last load of a policy or plugin succeeded (the previous version keeps running if not)", t.reload_ok.clone());
        registry.register("reloads", "Live reloads of policy and plugin files, by outcome (reloaded, rejected, removed)", t.reloads.clone());
        registry.register("forecast_interval_coverage", "The recent share of each metric's points inside the p10-p90 Augur issued for them (calibrated to 0.8)", t.interval_coverage.clone());
        if detail == Detail::Full {
            registry.register("forecast_skill_ratio", "Each contender's recent pinball loss on a metric over the best simple baseline's (below 1: it beats them), as the skill gate scores it", t.forecast_skill.clone());
        }
        registry.register("forecaster_info", "The forecaster that served each metric's last forecast (a model, or the fallback)", t.forecaster.clone());
        registry.register("tick_duration_seconds", "Time of one tick of every due policy", t.tick.clone());
        registry.register("leader", "1 while this replica holds the leader Lease (or runs without election)", t.leader.clone());
        // Always 1; its labels say what is running (the Prometheus convention for `_info`).
        let build: Family<BuildLabels, Gauge> = Family::default();
        build.get_or_create(&BuildLabels { version: env!("CARGO_PKG_VERSION").into(), wit: WIT_PACKAGE.into() }).set(1);
        registry.register("build_info", "Always 1: the host's version and the plugin contract it serves, as labels", build);
        Arc::new(Self { registry, ..t })
    }

    /// Drops these series from every family that carries them.
    pub fn forget<'s>(&self, series: impl IntoIterator<Item = &'s Series>) {
        for s in series {
            match s {
                Series::Metric(l) => {
                    self.observed.remove(l);
                    self.data_age.remove(l);
                    self.interval_coverage.remove(l);
                }
                Series::Forecast(l) => {
                    self.forecast.remove(l);
                }
                Series::Peak(l) => {
                    self.forecast_peak.remove(l);
                }
                Series::Rule(l) => {
                    self.risk_score.remove(l);
                    self.risk_level.remove(l);
                }
                Series::Action(l) => {
                    self.actions.remove(l);
                }
                Series::Error(l) => {
                    self.errors.remove(l);
                }
                Series::Policy(l) => {
                    self.data_stale.remove(l);
                    self.audit_failing.remove(l);
                }
                Series::Model(l) => {
                    self.forecaster.remove(l);
                    self.forecast_skill.remove(l);
                }
            }
        }
    }

    /// The OpenMetrics text of every metric.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry).expect("writing to a String cannot fail");
        out
    }

    /// The same in the Prometheus text format 0.0.4, for a scraper that does not ask for
    /// OpenMetrics (and for `promtool check metrics`).
    pub fn encode_text(&self) -> String {
        text_format(&self.encode())
    }

    /// Marks the host ready (its first tick, or its warm start, is done).
    pub fn set_ready(&self) {
        self.ready.store(true, Ordering::Relaxed);
    }

    pub fn plugin_call(&self, plugin: &str, call: &str, took: Duration) {
        self.plugin_call.get_or_create(&PluginLabels { plugin: plugin.into(), call: call.into() }).observe(took.as_secs_f64());
    }

    /// Serves `/metrics`, `/healthz` and `/readyz` on `addr` until the process ends. Returns the
    /// address bound (for `:0`).
    pub async fn serve(self: &Arc<Self>, addr: SocketAddr) -> anyhow::Result<SocketAddr> {
        let listener = tokio::net::TcpListener::bind(addr).await.map_err(|e| anyhow::anyhow!("cannot listen on {addr} for /metrics: {e}; fix: pick a free --metrics-addr"))?;
        let bound = listener.local_addr()?;
        let app = Router::new().route("/metrics", get(metrics)).route("/healthz", get(|| async { "ok\n" })).route("/readyz", get(ready)).with_state(self.clone());
        tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, app).await {
                tracing::error!("the /metrics server stopped: {e}");
            }
        });
        tracing::info!("serving /metrics, /healthz and /readyz on http://{bound}");
        Ok(bound)
    }
}

/// OpenMetrics to a scraper that accepts it (Prometheus asks for it first), the text format
/// 0.0.4 to anyone else.
async fn metrics(State(t): State<Arc<Telemetry>>, headers: axum::http::HeaderMap) -> impl IntoResponse {
    let accepts = headers.get_all(header::ACCEPT).iter().filter_map(|v| v.to_str().ok()).any(|v| v.contains("application/openmetrics-text"));
    if accepts {
        ([(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], t.encode())
    } else {
        ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], t.encode_text())
    }
}

/// OpenMetrics text as the Prometheus text format 0.0.4: a counter's HELP and TYPE name its
/// `_total` samples, `unknown` is `untyped`, and the UNIT and EOF lines (OpenMetrics only) go.
/// prometheus-client encodes only OpenMetrics; what it writes here has no exemplars, `_created`
/// samples or info and stateset types, the rest of what differs.
fn text_format(openmetrics: &str) -> String {
    let mut counters = std::collections::HashSet::new();
    for line in openmetrics.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ")
            && let Some((name, "counter")) = rest.split_once(' ')
        {
            counters.insert(name.to_string());
        }
    }
    let mut out = String::with_capacity(openmetrics.len());
    for line in openmetrics.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        let comment = ["# HELP ", "# TYPE "].into_iter().find_map(|p| line.strip_prefix(p).map(|rest| (p, rest)));
        match comment {
            Some((prefix, rest)) => {
                let (name, tail) = rest.split_once(' ').unwrap_or((rest, ""));
                let name = if counters.contains(name) { format!("{name}_total") } else { name.to_string() };
                let tail = if prefix == "# TYPE " && tail == "unknown" { "untyped" } else { tail };
                out.push_str(&format!("{prefix}{name} {tail}\n"));
            }
            None => {
                out.push_str(line);
                out.push('\n');
            }
        }
    }
    out
}

async fn ready(State(t): State<Arc<Telemetry>>) -> impl IntoResponse {
    if t.ready.load(Ordering::Relaxed) { (StatusCode::OK, "ready\n") } else { (StatusCode::SERVICE_UNAVAILABLE, "starting\n") }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn build_info_names_this_version_and_the_contract_in_wit() {
        let wit = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../wit/plugin.wit")).unwrap();
        assert!(wit.lines().any(|l| l.trim() == format!("package {WIT_PACKAGE};")), "wit/plugin.wit declares {WIT_PACKAGE}");
        let text = Telemetry::new().encode();
        let line = format!("augur_build_info{{version=\"{}\",wit=\"{WIT_PACKAGE}\"}} 1", env!("CARGO_PKG_VERSION"));
        assert!(text.lines().any(|l| l == line), "{line} in:\n{text}");
    }

    #[test]
    fn the_text_format_names_counters_by_their_samples() {
        let t = Telemetry::new();
        t.actions.get_or_create(&ActionLabels { policy: "p".into(), kind: "scale".into(), verdict: "executed".into() }).inc();
        let text = t.encode_text();
        assert!(text.contains("# HELP augur_actions_total Proposed actions"), "{text}");
        assert!(text.contains("# TYPE augur_actions_total counter\n"), "{text}");
        assert!(text.contains("augur_actions_total{policy=\"p\",kind=\"scale\",verdict=\"executed\"} 1\n"), "{text}");
        assert!(text.contains("# TYPE augur_leader gauge\n") && !text.contains("# EOF"), "{text}");
        assert!(t.encode().ends_with("# EOF\n"), "OpenMetrics keeps its EOF");
    }
}
