//! The validated policy: what one watched workload is, how it is measured, forecast, assessed
//! and remediated, and the guard rails around every action. Built from the raw YAML by
//! `parse` (parse.rs), which reports every problem at once; the rest of the host only sees
//! these types.
//!
//! This module holds data only: it never loads plugins, models or touches a cluster.

use super::Limits;
use crate::domain::{ActionKind, Level, Target};
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::Duration;

/// One policy file, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct Policy {
    /// The policy's name, used in the audit log and state file.
    pub name: String,
    /// The file it was read from.
    pub source: PathBuf,
    pub target: Target,
    /// Label selector of the target's pods, e.g. `app=nginx`.
    pub selector: String,
    /// Time a new pod of the target needs from creation to ready (`target.startup`), when the
    /// policy fixes it; otherwise it is measured from the pods (`Workload::startup_seconds`).
    pub startup: Option<Duration>,
    /// Time between two ticks.
    pub interval: Duration,
    /// Where the metrics come from on a real cluster (the simulator serves them by name).
    pub metric_source: MetricSourceSpec,
    pub metrics: Vec<Metric>,
    pub forecast: ForecastSpec,
    pub risks: Vec<RiskRule>,
    pub remediations: Vec<RemediationRule>,
    pub guard: GuardSpec,
    /// Where decisions are appended, one JSON object per line.
    pub audit_path: PathBuf,
}

/// Where a policy's metrics come from on a real cluster (`source:` in the file).
#[derive(Debug, Clone, PartialEq)]
pub enum MetricSourceSpec {
    /// A Prometheus server's HTTP API (or a compatible store: Thanos, Mimir, VictoriaMetrics);
    /// each metric is a PromQL `query`.
    Prometheus { url: String, access: PrometheusAccess },
    /// The resource metrics API (metrics.k8s.io, served by metrics-server); each metric is a
    /// `resource` of the target's pods.
    MetricsServer,
}

impl MetricSourceSpec {
    pub const DEFAULT_PROMETHEUS: &'static str = "http://localhost:9090";
}

/// How Augur reaches a Prometheus that asks for more than a URL.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PrometheusAccess {
    /// A file whose content is sent as `Authorization: Bearer ...` (read afresh on each
    /// request: a mounted token is rotated in place).
    pub bearer_token_file: Option<PathBuf>,
    /// A PEM file of the CA(s) that signed the store's certificate, trusted besides the system's.
    pub ca_file: Option<PathBuf>,
    /// Headers sent with every request, e.g. `X-Scope-OrgID` for a Mimir tenant.
    pub headers: BTreeMap<String, String>,
}

/// What a metric measures per object, beyond its total: each pod's CPU or memory (from
/// metrics-server, or PromQL with one series per pod), or each node's temperature (PromQL with
/// one series per node). The host gives the workload's pods and nodes those values, which the
/// restart and cordon plugins rank by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resource {
    /// CPU cores in use, summed over the target's pods.
    Cpu,
    /// Working-set bytes, summed over the target's pods.
    Memory,
    /// Degrees Celsius per node (a `node` label on each series); the metric is the hottest node's.
    NodeTemperature,
}

impl Resource {
    /// The label that names each series' object.
    pub fn label(self) -> &'static str {
        match self {
            Resource::Cpu | Resource::Memory => "pod",
            Resource::NodeTemperature => "node",
        }
    }
}

/// A metric to collect.
#[derive(Debug, Clone, PartialEq)]
pub struct Metric {
    pub name: String,
    /// PromQL for the Prometheus source (empty when the policy reads metrics-server only).
    pub query: String,
    /// PromQL tried when `query` yields no series (the prototype's CPU fallback).
    pub fallback_query: Option<String>,
    /// What the metric measures per pod or node, if anything.
    pub resource: Option<Resource>,
    pub unit: String,
}

/// The built-in statistical forecasters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Baseline {
    LastValue,
    LinearTrend,
    HoltDamped,
    SeasonalNaive,
    HoltWinters,
}

impl Baseline {
    pub const NAMES: [&'static str; 5] = ["last-value", "linear-trend", "holt-damped", "seasonal-naive", "holt-winters"];

    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "last-value" | "last" => Some(Self::LastValue),
            "linear-trend" | "linear" => Some(Self::LinearTrend),
            "holt-damped" => Some(Self::HoltDamped),
            "seasonal-naive" => Some(Self::SeasonalNaive),
            "holt-winters" => Some(Self::HoltWinters),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        Self::NAMES[self as usize]
    }

    /// Points of history it needs for a season of `season` points.
    pub fn min_history(self, season: usize) -> usize {
        match self {
            Self::LastValue => 1,
            Self::LinearTrend => 2,
            Self::HoltDamped => 3,
            Self::SeasonalNaive => season + 1,
            Self::HoltWinters => 2 * season + 1,
        }
    }
}

/// How to forecast.
#[derive(Debug, Clone, PartialEq)]
pub enum ForecastMethod {
    Baseline(Baseline),
    /// A trained ONNX model (`model.onnx` with its card `model.yaml` beside it).
    Model(PathBuf),
}

#[derive(Debug, Clone, PartialEq)]
pub struct ForecastSpec {
    pub method: ForecastMethod,
    /// Points of history kept and given to the forecaster (for a model: its card's window).
    pub window: usize,
    /// Points predicted ahead.
    pub horizon: usize,
    /// Time between two points.
    pub step: Duration,
    /// Season of the seasonal baselines, in points (a day by default).
    pub season: usize,
    /// What serves while the forecaster cannot: too little history, a failed or non-finite
    /// model output. Last value serves when this cannot either.
    pub fallback: Baseline,
    /// Correct the p10-p90 interval per step on the series' own errors (on by default; off:
    /// the forecaster's own interval reaches the rules).
    pub calibrate: bool,
    /// Serve, per series, whichever of the forecaster and the simple baselines has the best
    /// recent skill on it (on by default; off: the forecaster serves whenever it can).
    pub gate: bool,
}

/// A risk rule: a plugin assessing the forecast of one metric.
#[derive(Debug, Clone, PartialEq)]
pub struct RiskRule {
    pub name: String,
    pub metric: String,
    pub plugin: PathBuf,
    pub settings: BTreeMap<String, String>,
    /// Limits of each call of the plugin (`None`: the host's defaults).
    pub limits: Option<Limits>,
}

/// A remediation rule: a plugin planning actions for one risk.
#[derive(Debug, Clone, PartialEq)]
pub struct RemediationRule {
    pub name: String,
    pub risk: String,
    /// Corrective actions only at or above this level.
    pub trigger: Level,
    pub plugin: PathBuf,
    pub settings: BTreeMap<String, String>,
    /// Limits of each call of the plugin (`None`: the host's defaults).
    pub limits: Option<Limits>,
    /// What the plugin may propose; the guard rejects anything else.
    pub capabilities: Capabilities,
}

/// What a remediation rule's plugin is granted (`capabilities:`): the action kinds it may
/// propose and the nodes it may name. Pods are always those of the policy's target, and the
/// workload is always the target itself.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Capabilities {
    pub actions: BTreeSet<ActionKind>,
    /// Node name patterns (`*` matches any run of characters) a cordon or uncordon may name;
    /// empty: any node (the guard still requires a node that runs the target's pods).
    pub nodes: Vec<String>,
}

/// Matches `text` against `pattern`, where `*` matches any run of characters.
pub fn wildcard(pattern: &str, text: &str) -> bool {
    let mut parts = pattern.split('*');
    let first = parts.next().unwrap_or_default();
    let Some(mut rest) = text.strip_prefix(first) else { return false };
    let parts: Vec<&str> = parts.collect();
    let Some((last, middle)) = parts.split_last() else { return rest.is_empty() };
    for part in middle {
        match rest.find(part) {
            Some(at) => rest = &rest[at + part.len()..],
            None => return false,
        }
    }
    rest.len() >= last.len() && rest.ends_with(last)
}

/// The guard rails.
#[derive(Debug, Clone, PartialEq)]
pub struct GuardSpec {
    /// Validate and record actions, change nothing.
    pub dry_run: bool,
    /// Must be true for anything to be executed (the prototype's REMEDIATE).
    pub remediate: bool,
    pub min_replicas: u32,
    pub max_replicas: u32,
    /// Most replicas added or removed by one action.
    pub max_step: u32,
    /// Least time between two actions of one kind on one target.
    pub cooldown: Duration,
    /// Least time from a scale-up to the next scale-down (the HPA's stabilisation window).
    pub scale_down_delay: Duration,
    pub max_actions_per_hour: u32,
    /// Points of history a risk's metric must have before its remediations may act: a
    /// forecast from a handful of points (a fresh start) has an interval too wild to act on.
    pub min_history: usize,
    /// Action kinds this policy may execute; everything else is rejected.
    pub allowed_actions: BTreeSet<ActionKind>,
}

