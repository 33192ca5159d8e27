//! The policy parser: the raw YAML into the validated `Policy`, collecting every problem
//! with its field path and fix. It reads the model card a policy names (to size the window),
//! checks PromQL syntax and Kubernetes quantities, and nothing else from outside the file.
//!
//! This module never loads plugins or touches a cluster; `host validate` does the plugin
//! checks on top of it.

use super::policy::*;
use super::reader::{Problem, Reader, join};
use super::catalog::{self, Catalog, Kind};
use super::{Limits, MAX_DEADLINE, MAX_MEMORY_BYTES, MAX_REPLICAS, ModelCard};
use crate::domain::{ActionKind, Level, Target};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;
use yaml_serde::{Mapping, Value};

const TOP: &[&str] = &["name", "target", "interval", "source", "metrics", "forecast", "risks", "remediations", "guard", "audit"];
const TARGET: &[&str] = &["kind", "namespace", "name", "selector", "startup"];
const SOURCE: &[&str] = &["kind", "url", "bearer_token_file", "ca_file", "headers"];
const PRESET: &[&str] = &["preset"];
const METRIC: &[&str] = &["name", "query", "fallback_query", "resource", "unit"];
const FORECAST: &[&str] = &["baseline", "model", "window", "horizon", "step", "season", "fallback", "calibrate", "gate"];
const RISK: &[&str] = &["name", "metric", "plugin", "settings", "limits"];
const REMEDIATION: &[&str] = &["name", "risk", "trigger", "plugin", "settings", "limits", "capabilities"];
const LIMITS: &[&str] = &["deadline", "memory", "max_proposals", "max_output"];
const CAPABILITIES: &[&str] = &["actions", "nodes"];
const GUARD: &[&str] = &["mode", "dry_run", "remediate", "min_replicas", "max_replicas", "max_step", "cooldown", "scale_down_delay", "max_actions_per_hour", "min_history", "allowed_actions"];
const AUDIT: &[&str] = &["path"];

/// The fields the parser accepts, per section (`metrics[]`: a metric or a preset), which the
/// document's types (document.rs, the CRD's schema) must name exactly.
#[cfg(test)]
pub const SECTIONS: &[(&str, &[&[&str]])] = &[
    ("", &[TOP]),
    ("target", &[TARGET]),
    ("source", &[SOURCE]),
    ("metrics[]", &[PRESET, METRIC]),
    ("forecast", &[FORECAST]),
    ("risks[]", &[RISK]),
    ("risks[].limits", &[LIMITS]),
    ("remediations[]", &[REMEDIATION]),
    ("remediations[].limits", &[LIMITS]),
    ("remediations[].capabilities", &[CAPABILITIES]),
    ("guard", &[GUARD]),
    ("audit", &[AUDIT]),
];
const DNS_LABEL: &str = "lower-case letters, digits and `-`, starting and ending with a letter or digit, at most 63 characters";

/// Parses and validates a policy from its text; `source` is used to resolve relative paths
/// (plugins, models, audit log) against the file's folder, `catalog` to look up plugins and
/// models given by name.
pub fn parse(text: &str, source: &Path, catalog: &Catalog) -> Result<Policy, Vec<Problem>> {
    let mut r = Reader::default();
    let doc: Value = match yaml_serde::from_str(text) {
        Ok(doc) => doc,
        Err(e) => {
            r.problem("(document)", format!("is not valid YAML: {e}"), "fix the syntax at the line and column given");
            return Err(r.problems);
        }
    };
    let base = source.parent().unwrap_or(Path::new("."));
    let files = Files { base, catalog };
    let Some(top) = r.mapping(&doc, "(document)") else { return Err(r.problems) };
    r.deny_unknown(top, "", TOP);

    let name: Option<String> = r.required(top, "", "name", "the policy's name, e.g. `nginx`");
    if let Some(name) = &name {
        check_dns_label(&mut r, "name", name);
    }
    let (target, selector, startup) = match section(&mut r, top, "target", target).flatten() {
        Some((target, selector, startup)) => (Some(target), selector, startup),
        None => (None, None, None),
    };
    let interval = r.duration(top, "", "interval", Some(Duration::from_secs(60)));
    if interval.is_some_and(|i| i < Duration::from_secs(1)) {
        r.problem("interval", "is below 1s", "use an interval of at least `1s` (the prototype used `60s`)");
    }
    let metric_source = match top.get("source") {
        None => Some(MetricSourceSpec::Prometheus { url: MetricSourceSpec::DEFAULT_PROMETHEUS.into(), access: PrometheusAccess::default() }),
        Some(value) => r.mapping(value, "source").and_then(|m| metric_source(&mut r, m, base)),
    };
    let metrics: Vec<Metric> = list(&mut r, top, "metrics", |r, m, p| metric_entry(r, m, p, target.as_ref())).map(|v| v.into_iter().flatten().collect()).unwrap_or_default();
    if let Some(spec) = &metric_source {
        source_problems(&mut r, spec, &metrics);
    }
    let forecast = section(&mut r, top, "forecast", |r, m| forecast(r, m, &files));
    let risks = list(&mut r, top, "risks", |r, m, p| risk_rule(r, m, p, &files)).unwrap_or_default();
    let remediations = list(&mut r, top, "remediations", |r, m, p| remediation_rule(r, m, p, &files)).unwrap_or_default();
    let guard = section(&mut r, top, "guard", guard);
    let audit_path = section(&mut r, top, "audit", |r, m| {
        r.deny_unknown(m, "audit", AUDIT);
        let path = r.required::<String>(m, "audit", "path", "a file path for the audit log, e.g. `../var/nginx-audit.jsonl`").map(|p| base.join(p))?;
        // Opening a FIFO for writing blocks until a reader comes; a directory cannot be appended to.
        if let Ok(meta) = std::fs::metadata(&path) {
            use std::os::unix::fs::FileTypeExt;
            let kind = meta.file_type();
            let what = if kind.is_dir() { Some("a directory") } else if kind.is_fifo() { Some("a FIFO") } else if kind.is_socket() { Some("a socket") } else { None };
            if let Some(what) = what {
                r.problem("audit.path", format!("{} is {what}, which Augur cannot append records to", path.display()), "name a regular file (it is created if missing)");
            }
        }
        Some(path)
    });

    cross_check(&mut r, &metrics, &risks, &remediations);
    if let Some(Some(guard)) = &guard {
        for (i, rule) in remediations.iter().enumerate() {
            for kind in rule.capabilities.actions.difference(&guard.allowed_actions) {
                r.problem(
                    format!("remediations[{i}].capabilities.actions"),
                    format!("grants `{}`, which guard.allowed_actions does not allow, so it could never run", kind.as_str()),
                    format!("add `{}` to guard.allowed_actions, or remove it here", kind.as_str()),
                );
            }
        }
    }
    if let (Some(Some(spec)), Some(interval)) = (&forecast, interval)
        && interval > spec.step
    {
        // The histories hold a point per step: a tick less often than that leaves holes the
        // forecaster would read as the step.
        r.problem(
            "interval",
            format!("`{}` is longer than forecast.step `{}`, so the history would miss points the forecaster expects", humantime::format_duration(interval), humantime::format_duration(spec.step)),
            "tick at least once a step: set `interval` to the step or less (between steps a tick updates the current reading), or lengthen forecast.step",
        );
    }
    if let (Some(Some(spec)), Some(Value::Mapping(m))) = (&forecast, top.get("forecast")) {
        model_problems(&mut r, m, spec, &metrics, &risks);
    }
    match (name, target, interval, metric_source, forecast.flatten(), guard.flatten(), audit_path.flatten()) {
        (Some(name), Some(target), Some(interval), Some(metric_source), Some(forecast), Some(guard), Some(audit_path))
            if r.problems.is_empty() =>
        {
            let selector = selector.unwrap_or_else(|| format!("app={}", target.name));
            Ok(Policy { name, source: source.to_path_buf(), target, selector, startup, interval, metric_source, metrics, forecast, risks, remediations, guard, audit_path })
        }
        _ => Err(r.problems),
    }
}

/// Reads a required sub-mapping with `read`.
fn section<T>(r: &mut Reader, top: &Mapping, key: &str, read: impl FnOnce(&mut Reader, &Mapping) -> T) -> Option<T> {
    let Some(value) = top.get(key) else {
        r.problem(key, "is missing", format!("add a `{key}:` section (see policies/nginx.yaml)"));
        return None;
    };
    let map = r.mapping(value, key)?;
    Some(read(r, map))
}

/// Reads an optional list of mappings with `read`; entries that fail are dropped (their
/// problems are recorded).
fn list<T>(r: &mut Reader, top: &Mapping, key: &str, mut read: impl FnMut(&mut Reader, &Mapping, &str) -> Option<T>) -> Option<Vec<T>> {
    let items = r.sequence(top.get(key)?, key)?;
    let mut out = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let path = format!("{key}[{i}]");
        if let Some(map) = r.mapping(item, &path) {
            out.extend(read(r, map, &path));
        }
    }
    Some(out)
}

fn target(r: &mut Reader, m: &Mapping) -> Option<(Target, Option<String>, Option<Duration>)> {
    r.deny_unknown(m, "target", TARGET);
    let kind: Option<String> = r.required(m, "target", "kind", "`Deployment` or `StatefulSet`");
    if let Some(k) = &kind
        && k != "Deployment"
        && k != "StatefulSet"
    {
        r.problem("target.kind", format!("`{k}` cannot be scaled by Augur"), "use `Deployment` or `StatefulSet`");
    }
    let namespace: Option<String> = r.optional(m, "target", "namespace", "a namespace name").or(Some("default".into()));
    let name: Option<String> = r.required(m, "target", "name", "the workload's name, e.g. `nginx`");
    for (field, value) in [("target.namespace", &namespace), ("target.name", &name)] {
        if let Some(value) = value {
            check_dns_label(r, field, value);
        }
    }
    let selector: Option<String> = r.optional(m, "target", "selector", "a label selector such as `app=nginx`");
    if let Some(Err(e)) = selector.as_deref().map(super::selector::check) {
        r.problem("target.selector", format!("is not a Kubernetes label selector: {e}"), "write requirements separated by commas, e.g. `app=nginx,tier=web` or `tier in (web,api)`, or leave it out for `app=<name>`");
    }
    // Creation to ready of a new pod: measured on the cluster unless the policy fixes it.
    let startup = if m.contains_key("startup") { r.duration(m, "target", "startup", None) } else { None };
    if startup.is_some_and(|s| s > Duration::from_secs(3600)) {
        r.problem("target.startup", "is above 1h", "write the time a new pod needs from creation to ready, e.g. `45s`, or leave it out to have it measured");
    }
    Some((Target { kind: kind?, namespace: namespace?, name: name? }, selector, startup))
}

fn metric_source(r: &mut Reader, m: &Mapping, base: &Path) -> Option<MetricSourceSpec> {
    r.deny_unknown(m, "source", SOURCE);
    let kind: String = r.optional(m, "source", "kind", "`prometheus` or `metrics-server`").unwrap_or_else(|| "prometheus".into());
    let url: Option<String> = r.optional(m, "source", "url", "the Prometheus base URL, e.g. `http://prometheus.monitoring:9090`");
    match kind.as_str() {
        "prometheus" => {
            let access = prometheus_access(r, m, base);
            let url = url.unwrap_or_else(|| MetricSourceSpec::DEFAULT_PROMETHEUS.into());
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                r.problem("source.url", format!("`{url}` is not an http(s) URL"), "write the Prometheus base URL, e.g. `http://prometheus.monitoring:9090`");
                return None;
            }
            if access.ca_file.is_some() && url.starts_with("http://") {
                r.problem("source.ca_file", "is set, but source.url is plain http, so no certificate is checked", "use an `https://` URL, or remove `ca_file:`");
            }
            Some(MetricSourceSpec::Prometheus { url: url.trim_end_matches('/').to_string(), access })
        }
        "metrics-server" => {
            for key in ["url", "bearer_token_file", "ca_file", "headers"] {
                if m.contains_key(key) {
                    r.problem(join("source", key), "is set, but metrics-server is reached through the Kubernetes API (with Augur's own credentials)", format!("remove `{key}:` (or use `kind: prometheus`)"));
                }
            }
            Some(MetricSourceSpec::MetricsServer)
        }
        other => {
            r.problem("source.kind", format!("`{other}` is not a metric source"), "use `prometheus` (PromQL `query` per metric) or `metrics-server` (`resource` per metric)");
            None
        }
    }
}

/// A Prometheus source's token file, CA file and headers (files relative to the policy's).
fn prometheus_access(r: &mut Reader, m: &Mapping, base: &Path) -> PrometheusAccess {
    let file = |r: &mut Reader, key: &str, what: &str| -> Option<PathBuf> {
        let path = base.join(r.optional::<String>(m, "source", key, what)?);
        // Not read here: a token may be mounted after the policy is checked; its absence is
        // an error of the collection that needs it, which says so.
        if let Ok(meta) = std::fs::metadata(&path)
            && !meta.is_file()
        {
            r.problem(join("source", key), format!("{} is not a regular file", path.display()), format!("give the path of {what}"));
        }
        Some(path)
    };
    let bearer_token_file = file(r, "bearer_token_file", "a file holding the bearer token, e.g. `/var/run/secrets/prometheus/token`");
    let ca_file = file(r, "ca_file", "a PEM file of the CA that signed the store's certificate");
    let mut headers = BTreeMap::new();
    if let Some(value) = m.get("headers")
        && let Some(map) = r.mapping(value, "source.headers")
    {
        for (name, value) in map {
            let (Some(name), Some(value)) = (name.as_str(), value.as_str()) else {
                r.problem("source.headers", "holds a name or value that is not text", "write each header as `Name: value`, both strings, e.g. `X-Scope-OrgID: team-a`");
                continue;
            };
            let field = format!("source.headers.{name}");
            if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)) {
                r.problem(&field, format!("`{name}` is not an HTTP header name"), "use letters, digits and `-`, e.g. `X-Scope-OrgID`");
            } else if value.bytes().any(|b| b < 0x20 && b != b'\t' || b == 0x7f) {
                r.problem(&field, "holds a control character", "write the value on one line, without control characters");
            } else if name.eq_ignore_ascii_case("authorization") && bearer_token_file.is_some() {
                r.problem(&field, "is set together with source.bearer_token_file, which sends its own Authorization", "keep one of them");
            } else {
                headers.insert(name.to_string(), value.to_string());
            }
        }
    }
    PrometheusAccess { bearer_token_file, ca_file, headers }
}

/// A `metrics[]` entry: one metric, or `{ preset: prototype }` for the prototype's queries.
fn metric_entry(r: &mut Reader, m: &Mapping, path: &str, target: Option<&Target>) -> Option<Vec<Metric>> {
    if !m.contains_key("preset") {
        return metric(r, m, path).map(|metric| vec![metric]);
    }
    r.deny_unknown(m, path, PRESET);
    let preset: String = r.required(m, path, "preset", "`prototype`")?;
    if preset != "prototype" {
        r.problem(join(path, "preset"), format!("`{preset}` is not a preset"), "use `prototype` (the Python prototype's PromQL for the target), or list the metrics");
        return None;
    }
    Some(prototype_metrics(target?))
}

/// The prototype's PromQL (../shared/ORIGIN.md) for `target`: CPU (with its cfs-periods
/// fallback), memory, replicas, disk I/O, p95 latency and node temperature.
pub fn prototype_metrics(target: &Target) -> Vec<Metric> {
    let (ns, name) = (&target.namespace, &target.name);
    let pods = format!("namespace=\"{ns}\",pod=~\"{name}-.*\",image!=\"\"");
    let metric = |name: &str, query: String, fallback_query: Option<String>, resource: Option<Resource>, unit: &str| Metric { name: name.into(), query, fallback_query, resource, unit: unit.into() };
    vec![
        metric("cpu", format!("sum(rate(container_cpu_usage_seconds_total{{{pods}}}[5m]))"), Some(format!("sum(rate(container_cpu_cfs_periods_total{{{pods}}}[5m]))")), Some(Resource::Cpu), "cores"),
        metric("memory", format!("sum(container_memory_working_set_bytes{{{pods}}})"), None, Some(Resource::Memory), "bytes"),
        metric("replicas", format!("kube_deployment_status_replicas{{namespace=\"{ns}\",deployment=\"{name}\"}}"), None, None, "pods"),
        metric("disk_io", "sum(rate(node_disk_read_bytes_total[5m]) + rate(node_disk_written_bytes_total[5m]))".into(), None, None, "bytes/s"),
        metric("latency_p95", "histogram_quantile(0.95, sum(rate(http_request_duration_seconds_bucket[5m])) by (le))".into(), None, None, "seconds"),
        metric("node_temperature", "avg(node_thermal_zone_temp) * 0.001".into(), None, None, "celsius"),
    ]
}

fn metric(r: &mut Reader, m: &Mapping, path: &str) -> Option<Metric> {
    r.deny_unknown(m, path, METRIC);
    let name: Option<String> = r.required(m, path, "name", "a short name such as `cpu`");
    let query: String = r.optional(m, path, "query", "the PromQL expression").unwrap_or_default();
    if m.contains_key("query") && query.trim().is_empty() {
        r.problem(join(path, "query"), "is empty", "write the PromQL expression that yields this metric");
    }
    let fallback_query: Option<String> = r.optional(m, path, "fallback_query", "a PromQL expression");
    for (field, text) in [("query", Some(&query)), ("fallback_query", fallback_query.as_ref())] {
        if let Some(text) = text.filter(|t| !t.trim().is_empty())
            && let Err(e) = super::promql::check(text)
        {
            r.problem(join(path, field), format!("is not valid PromQL: {}", e.lines().next().unwrap_or_default()), "fix the expression (try it in Prometheus' expression browser)");
        }
    }
    let resource = match r.optional::<String>(m, path, "resource", "`cpu`, `memory` or `node-temperature`").as_deref() {
        None => None,
        Some("cpu") => Some(Resource::Cpu),
        Some("memory") => Some(Resource::Memory),
        Some("node-temperature") => Some(Resource::NodeTemperature),
        Some(other) => {
            r.problem(
                join(path, "resource"),
                format!("`{other}` is not a resource Augur knows"),
                "use `cpu` (cores) or `memory` (working-set bytes), summed over the target's pods, or `node-temperature` (Celsius per node, the hottest counts)",
            );
            None
        }
    };
    let unit = r.optional(m, path, "unit", "a unit such as `cores` or `bytes`").unwrap_or_default();
    Some(Metric { name: name?, query, fallback_query, resource, unit })
}

/// Each metric must say how the policy's source yields it.
fn source_problems(r: &mut Reader, spec: &MetricSourceSpec, metrics: &[Metric]) {
    for (i, metric) in metrics.iter().enumerate() {
        match spec {
            MetricSourceSpec::Prometheus { .. } if metric.query.trim().is_empty() => r.problem(
                format!("metrics[{i}].query"),
                "is missing (the source is Prometheus)",
                "add `query:` with the PromQL expression, or set `source: { kind: metrics-server }` and `resource: cpu|memory`",
            ),
            MetricSourceSpec::MetricsServer if metric.resource == Some(Resource::NodeTemperature) => r.problem(
                format!("metrics[{i}].resource"),
                format!("is `node-temperature` for `{}`, which metrics-server does not serve (only the pods' cpu and memory)", metric.name),
                "read node temperatures with `source: { kind: prometheus }` and a query with one series per node (a `node` label)",
            ),
            MetricSourceSpec::MetricsServer if metric.resource.is_none() => r.problem(
                format!("metrics[{i}].resource"),
                format!("is missing for `{}` (the source is metrics-server, which serves only the pods' cpu and memory)", metric.name),
                "add `resource: cpu` or `resource: memory`, remove the metric, or use `source: { kind: prometheus }`",
            ),
            _ => {}
        }
    }
}

fn forecast(r: &mut Reader, m: &Mapping, files: &Files<'_>) -> Option<ForecastSpec> {
    const P: &str = "forecast";
    r.deny_unknown(m, P, FORECAST);
    let baseline: Option<String> = r.optional(m, P, "baseline", "a baseline name");
    let model: Option<String> = r.optional(m, P, "model", "a model's name (e.g. `lstm`) or the path of an .onnx file");
    let parse_baseline = |r: &mut Reader, field: &str, name: &str| {
        let parsed = Baseline::parse(name);
        if parsed.is_none() {
            r.problem(field, format!("`{name}` is not a built-in forecaster"), format!("use one of {}", Baseline::NAMES.join(", ")));
        }
        parsed
    };
    let method = match (baseline, model) {
        (Some(_), Some(_)) => {
            r.problem("forecast", "sets both `baseline` and `model`", "keep one of them");
            None
        }
        (None, None) => Some(ForecastMethod::Baseline(Baseline::HoltDamped)),
        (Some(name), None) => parse_baseline(r, "forecast.baseline", &name).map(ForecastMethod::Baseline),
        (None, Some(raw)) => files.find(r, "forecast.model", Kind::Model, &raw, "give a model's name (e.g. `transformer`) or the path of a model.onnx relative to the policy file").map(ForecastMethod::Model),
    };
    let fallback = match r.optional::<String>(m, P, "fallback", "a baseline name") {
        Some(name) => parse_baseline(r, "forecast.fallback", &name),
        None => Some(Baseline::HoltDamped),
    };
    let step = r.duration(m, P, "step", Some(Duration::from_secs(60)))?;
    if step < Duration::from_secs(1) {
        r.problem("forecast.step", "is below 1s", "use a step of at least `1s`");
        return None;
    }
    let season = r.duration(m, P, "season", Some(Duration::from_secs(86_400)))?;
    let season = (season.as_secs_f64() / step.as_secs_f64()).round() as usize;
    if season < 2 {
        r.problem("forecast.season", "is shorter than two steps", "give the length of the demand cycle, e.g. `1d`");
    }
    let window: Option<usize> = r.optional(m, P, "window", "a whole number of points");
    let horizon: usize = r.optional(m, P, "horizon", "a whole number of points").unwrap_or(5);
    if !(1..=240).contains(&horizon) {
        r.problem("forecast.horizon", format!("{horizon} is out of range"), "use 1 to 240 points (the prototype used 5)");
    }
    let window = match method.as_ref()? {
        ForecastMethod::Model(path) => match ModelCard::read(path) {
            // The model's card sets the window; `model_problems` checks the rest once the
            // metrics and risks are read.
            Ok(card) => window.unwrap_or(card.window),
            Err(e) => {
                r.problem("forecast.model", e, "use a model exported by models/train.py");
                return None;
            }
        },
        ForecastMethod::Baseline(b) => {
            let needed = b.min_history(season);
            let window = window.unwrap_or(needed.max(20));
            if window < needed {
                r.problem("forecast.window", format!("is {window}, but {} with a season of {season} points needs {needed}", b.name()), format!("set `window` to at least {needed}, or shorten `season`"));
            }
            window
        }
    };
    if !(3..=100_000).contains(&window) {
        r.problem("forecast.window", format!("{window} is out of range"), "use 3 to 100000 points (the prototype used 20)");
    }
    let calibrate = r.optional(m, P, "calibrate", "`true` or `false`").unwrap_or(true);
    let gate = r.optional(m, P, "gate", "`true` or `false`").unwrap_or(true);
    Some(ForecastSpec { method: method?, window, horizon, step, season, fallback: fallback?, calibrate, gate })
}

/// A model's card against the policy: window, horizon, step and (for a joint model) metrics.
fn model_problems(r: &mut Reader, m: &Mapping, spec: &ForecastSpec, metrics: &[Metric], risks: &[RiskRule]) {
    let ForecastMethod::Model(path) = &spec.method else { return };
    let Ok(card) = ModelCard::read(path) else { return };
    let explicit_window = m.get("window").map(|_| spec.window);
    let names: Vec<&str> = metrics.iter().map(|m| m.name.as_str()).collect();
    let forecast: Vec<&str> = risks.iter().map(|r| r.metric.as_str()).collect();
    for (field, problem, fix) in card.problems(explicit_window, spec.horizon, spec.step, &names, &forecast) {
        r.problem(field, format!("{problem} (card {})", ModelCard::path_for(path).display()), fix);
    }
}

fn risk_rule(r: &mut Reader, m: &Mapping, path: &str, files: &Files<'_>) -> Option<RiskRule> {
    r.deny_unknown(m, path, RISK);
    let name = r.required(m, path, "name", "a short name such as `cpu`");
    let metric = r.required(m, path, "metric", "the name of an entry in `metrics`");
    let plugin = plugin_path(r, m, path, files);
    let settings = settings(r, m, path);
    let limits = limits(r, m, path);
    Some(RiskRule { name: name?, metric: metric?, plugin: plugin?, settings, limits: limits? })
}

fn remediation_rule(r: &mut Reader, m: &Mapping, path: &str, files: &Files<'_>) -> Option<RemediationRule> {
    r.deny_unknown(m, path, REMEDIATION);
    let name = r.required(m, path, "name", "a short name such as `scale-up`");
    let risk = r.required(m, path, "risk", "the name of an entry in `risks`");
    let trigger_name: String = r.optional(m, path, "trigger", "a level").unwrap_or_else(|| "high".into());
    let trigger = Level::ALL.into_iter().find(|l| l.as_str() == trigger_name);
    if trigger.is_none() {
        let names: Vec<_> = Level::ALL.iter().map(|l| l.as_str()).collect();
        r.problem(join(path, "trigger"), format!("`{trigger_name}` is not a risk level"), format!("use one of {}", names.join(", ")));
    }
    let plugin = plugin_path(r, m, path, files);
    let settings = settings(r, m, path);
    let limits = limits(r, m, path);
    let capabilities = capabilities(r, m, path);
    Some(RemediationRule { name: name?, risk: risk?, trigger: trigger?, plugin: plugin?, settings, limits: limits?, capabilities: capabilities? })
}

/// `limits:` of a rule: every field optional, the host's default where absent. `Some(None)`
/// when the rule sets none; `None` when one is wrong (the problem is recorded).
fn limits(r: &mut Reader, m: &Mapping, path: &str) -> Option<Option<Limits>> {
    let Some(value) = m.get("limits") else { return Some(None) };
    let path = join(path, "limits");
    let map = r.mapping(value, &path)?;
    r.deny_unknown(map, &path, LIMITS);
    let defaults = Limits::default();
    let before = r.problems.len();
    let deadline = r.duration(map, &path, "deadline", Some(defaults.deadline));
    if let Some(d) = deadline
        && (d < Duration::from_millis(1) || d > MAX_DEADLINE)
    {
        r.problem(join(&path, "deadline"), format!("{d:?} is out of range"), format!("use from `1ms` to `{}s` (default `{}ms`)", MAX_DEADLINE.as_secs(), defaults.deadline.as_millis()));
    }
    let memory = bytes(r, map, &path, "memory", defaults.memory_bytes, 1 << 20, MAX_MEMORY_BYTES);
    let max_output = bytes(r, map, &path, "max_output", defaults.max_output_bytes, 1 << 10, 16 << 20);
    let max_proposals: usize = r.optional(map, &path, "max_proposals", "a whole number from 1 to 10000").unwrap_or(defaults.max_proposals);
    if !(1..=10_000).contains(&max_proposals) {
        r.problem(join(&path, "max_proposals"), format!("{max_proposals} is out of range"), format!("use a whole number from 1 to 10000 (default {})", defaults.max_proposals));
    }
    if r.problems.len() > before {
        return None;
    }
    Some(Some(Limits { deadline: deadline?, memory_bytes: memory?, max_proposals, max_output_bytes: max_output? }))
}

/// A size in bytes, written as a number or a Kubernetes quantity (`16Mi`, `64Ki`).
fn bytes(r: &mut Reader, map: &Mapping, path: &str, key: &str, default: usize, min: usize, max: usize) -> Option<usize> {
    let Some(value) = map.get(key) else { return Some(default) };
    let text = super::reader::show(value);
    let fix = format!("write a size from {min} to {max} bytes, e.g. `{}` (default {default})", if max >= 1 << 20 { "16Mi" } else { "64Ki" });
    match super::parse_quantity(&text) {
        Some(n) if n.fract() == 0.0 && n >= min as f64 && n <= max as f64 => Some(n as usize),
        _ => {
            r.problem(join(path, key), format!("`{text}` is not a size in range"), fix);
            None
        }
    }
}

/// `capabilities:` of a remediation rule: required, so that what a plugin may do is written
/// down where the policy's reader sees it.
fn capabilities(r: &mut Reader, m: &Mapping, path: &str) -> Option<Capabilities> {
    let cpath = join(path, "capabilities");
    let Some(value) = m.get("capabilities") else {
        r.problem(cpath, "is missing: a remediation plugin may propose nothing it is not granted", "add e.g. `capabilities: { actions: [scale] }` naming the action kinds this rule may propose");
        return None;
    };
    let map = r.mapping(value, &cpath)?;
    r.deny_unknown(map, &cpath, CAPABILITIES);
    let names: Vec<String> = r.required(map, &cpath, "actions", "a list of action kinds, e.g. `[scale]`")?;
    let actions = action_kinds(r, &names, &join(&cpath, "actions"));
    let nodes: Vec<String> = r.optional(map, &cpath, "nodes", "a list of node name patterns, e.g. `[\"worker-*\"]`").unwrap_or_default();
    Some(Capabilities { actions, nodes })
}

fn plugin_path(r: &mut Reader, m: &Mapping, path: &str, files: &Files<'_>) -> Option<PathBuf> {
    let raw: String = r.required(m, path, "plugin", "a plugin's name (e.g. `risk-cpu`) or the path of a .wasm component relative to the policy file")?;
    files.find(r, &join(path, "plugin"), Kind::Plugin, &raw, "run `make build` to build the plugins, or fix the path (relative to the policy file)")
}

/// Where the files a policy names are: its paths relative to its folder, its names in the
/// catalog.
struct Files<'a> {
    base: &'a Path,
    catalog: &'a Catalog,
}

impl Files<'_> {
    /// The file of a plugin or model given as `raw` (a name or a path), checked readable;
    /// `missing` is the fix when a path names nothing. A problem at `field` when it is not.
    fn find(&self, r: &mut Reader, field: &str, kind: Kind, raw: &str, missing: &str) -> Option<PathBuf> {
        let file = if catalog::is_name(raw) {
            match self.catalog.find(kind, raw) {
                Ok(file) => file,
                Err(e) => {
                    r.problem(field, e.to_string(), e.fix());
                    return None;
                }
            }
        } else {
            self.base.join(raw)
        };
        let max = match kind {
            Kind::Plugin => super::files::MAX_PLUGIN_BYTES,
            Kind::Model => super::files::MAX_MODEL_BYTES,
        };
        if let Err(e) = super::files::readable(&file, max) {
            r.problem(field, format!("{} {e}", file.display()), e.fix_or(missing));
            return (kind == Kind::Plugin).then_some(file);
        }
        Some(file)
    }
}

fn settings(r: &mut Reader, m: &Mapping, path: &str) -> BTreeMap<String, String> {
    let path = join(path, "settings");
    let Some(value) = m.get("settings") else { return BTreeMap::new() };
    let Some(map) = r.mapping(value, &path) else { return BTreeMap::new() };
    let mut out = BTreeMap::new();
    for (key, value) in map {
        let key = super::reader::show(key);
        match value {
            Value::String(_) | Value::Number(_) | Value::Bool(_) => {
                out.insert(key, super::reader::show(value));
            }
            _ => r.problem(join(&path, &key), "is not a plain value", "write a number, a word or a boolean; plugins read settings as text"),
        }
    }
    out
}

/// `guard.mode` (`observe`, `rehearse` or `act`), or the older pair of booleans it stands for:
/// `(dry_run, remediate)`. Both may be written only where they agree.
fn mode(r: &mut Reader, m: &Mapping) -> (bool, bool) {
    const MODES: [(&str, (bool, bool)); 3] = [("observe", (false, false)), ("rehearse", (true, false)), ("act", (false, true))];
    let dry_run: Option<bool> = r.optional(m, "guard", "dry_run", "`true` or `false`");
    let remediate: Option<bool> = r.optional(m, "guard", "remediate", "`true` or `false`");
    let from_booleans = (dry_run.unwrap_or(false), remediate.unwrap_or(false));
    let Some(mode) = r.optional::<String>(m, "guard", "mode", "one of `observe`, `rehearse`, `act`") else { return from_booleans };
    let Some((_, pair)) = MODES.iter().find(|(name, _)| *name == mode) else {
        r.problem("guard.mode", format!("`{mode}` is not a mode"), "use `observe` (assess only), `rehearse` (dry-run every action) or `act`");
        return from_booleans;
    };
    let disagrees = [("dry_run", dry_run, pair.0), ("remediate", remediate, pair.1)].into_iter().filter(|(_, set, want)| set.is_some_and(|v| v != *want)).map(|(field, set, _)| format!("guard.{field}: {}", set.unwrap_or_default())).collect::<Vec<_>>();
    if !disagrees.is_empty() {
        r.problem("guard.mode", format!("`{mode}` disagrees with {}", disagrees.join(" and ")), "write only `mode:` (dry_run and remediate are its older spelling)");
    }
    *pair
}

fn guard(r: &mut Reader, m: &Mapping) -> Option<GuardSpec> {
    const P: &str = "guard";
    r.deny_unknown(m, P, GUARD);
    let (dry_run, remediate) = mode(r, m);
    let min_replicas: Option<u32> = r.required(m, P, "min_replicas", "a whole number, e.g. `1`");
    let max_replicas: Option<u32> = r.required(m, P, "max_replicas", "a whole number, e.g. `10`");
    let max_step: u32 = r.optional(m, P, "max_step", "a whole number of replicas").unwrap_or(3);
    let cooldown = r.duration(m, P, "cooldown", Some(Duration::from_secs(300)));
    let scale_down_delay = r.duration(m, P, "scale_down_delay", Some(Duration::from_secs(900)));
    let max_actions_per_hour: u32 = r.optional(m, P, "max_actions_per_hour", "a whole number").unwrap_or(6);
    if let (Some(min), Some(max)) = (min_replicas, max_replicas) {
        if min > max {
            r.problem("guard.max_replicas", format!("{max} is below guard.min_replicas ({min})"), format!("raise max_replicas to at least {min}, or lower min_replicas"));
        }
        if max == 0 {
            r.problem("guard.max_replicas", "is 0", "allow at least 1 replica");
        }
    }
    if max_step == 0 {
        r.problem("guard.max_step", "is 0, so no scale action could ever pass", "use at least 1");
    }
    // Kubernetes keeps replicas in an int32.
    for (field, value) in [("min_replicas", min_replicas), ("max_replicas", max_replicas), ("max_step", Some(max_step))] {
        if value.is_some_and(|v| v > MAX_REPLICAS) {
            r.problem(&format!("guard.{field}"), format!("{} is more replicas than Kubernetes can hold (an int32, at most {MAX_REPLICAS})", value.unwrap_or_default()), "use a realistic number of replicas");
        }
    }
    if max_actions_per_hour > 3600 {
        r.problem("guard.max_actions_per_hour", format!("{max_actions_per_hour} is more than one action a second"), "use at most 3600");
    }
    let min_history: usize = r.optional(m, P, "min_history", "a whole number of points").unwrap_or(10);
    if max_actions_per_hour == 0 {
        r.problem("guard.max_actions_per_hour", "is 0, so no action could ever pass", "use at least 1, or set `remediate: false`");
    }
    let allowed_actions = allowed_actions(r, m)?;
    Some(GuardSpec { dry_run, remediate, min_replicas: min_replicas?, max_replicas: max_replicas?, max_step, cooldown: cooldown?, scale_down_delay: scale_down_delay?, max_actions_per_hour, min_history, allowed_actions })
}

fn allowed_actions(r: &mut Reader, m: &Mapping) -> Option<BTreeSet<ActionKind>> {
    let names: Vec<String> = r.optional(m, "guard", "allowed_actions", "a list of action kinds").unwrap_or_default();
    Some(action_kinds(r, &names, "guard.allowed_actions"))
}

/// Action kinds by name; each unknown name is a problem at `path[i]`.
fn action_kinds(r: &mut Reader, names: &[String], path: &str) -> BTreeSet<ActionKind> {
    let mut kinds = BTreeSet::new();
    for (i, name) in names.iter().enumerate() {
        match ActionKind::ALL.into_iter().find(|k| k.as_str() == name) {
            Some(kind) => {
                kinds.insert(kind);
            }
            None => {
                let known: Vec<_> = ActionKind::ALL.iter().map(|k| k.as_str()).collect();
                r.problem(format!("{path}[{i}]"), format!("`{name}` is not an action kind"), format!("use any of {}", known.join(", ")));
            }
        }
    }
    kinds
}

/// Checks references between sections: every risk names a metric, every remediation a risk;
/// names are unique.
fn cross_check(r: &mut Reader, metrics: &[Metric], risks: &[RiskRule], remediations: &[RemediationRule]) {
    unique(r, "metrics", metrics.iter().map(|m| m.name.as_str()));
    unique(r, "risks", risks.iter().map(|m| m.name.as_str()));
    unique(r, "remediations", remediations.iter().map(|m| m.name.as_str()));
    let metric_names: Vec<&str> = metrics.iter().map(|m| m.name.as_str()).collect();
    for (i, rule) in risks.iter().enumerate() {
        if !metric_names.contains(&rule.metric.as_str()) {
            r.problem(format!("risks[{i}].metric"), format!("`{}` is not a metric of this policy", rule.metric), format!("use one of: {}", metric_names.join(", ")));
        }
    }
    let risk_names: Vec<&str> = risks.iter().map(|m| m.name.as_str()).collect();
    for (i, rule) in remediations.iter().enumerate() {
        if !risk_names.contains(&rule.risk.as_str()) {
            r.problem(format!("remediations[{i}].risk"), format!("`{}` is not a risk of this policy", rule.risk), format!("use one of: {}", risk_names.join(", ")));
        }
    }
}

fn unique<'a>(r: &mut Reader, section: &str, names: impl Iterator<Item = &'a str>) {
    let mut seen = BTreeSet::new();
    for (i, name) in names.enumerate() {
        if !seen.insert(name) {
            r.problem(format!("{section}[{i}].name"), format!("`{name}` is used twice"), "give each entry its own name");
        }
    }
}

fn check_dns_label(r: &mut Reader, path: &str, value: &str) {
    let ok = !value.is_empty()
        && value.len() <= 63
        && value.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !value.starts_with('-')
        && !value.ends_with('-');
    if !ok {
        r.problem(path, format!("`{value}` is not a valid Kubernetes name"), format!("use {DNS_LABEL}"));
    }
}
