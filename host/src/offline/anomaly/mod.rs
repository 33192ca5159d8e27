//! The offline anomaly pass (the prototype's `python remediation.py`), done better:
//! - two detectors, both causal (a point is judged only against the points before it):
//!   MAD on the one-step forecast residuals of the policy's forecaster, and plain MAD on the
//!   values as the prototype did; a point is flagged when its robust z-score
//!   `0.6745 * |x - median| / MAD` over the trailing window passes the threshold (3.5, the
//!   Iglewicz-Hoaglin cut-off);
//! - for each anomaly, what the policy's plan would have done, in dry-run: its forecast, its
//!   risk plugin's verdict, its remediation plugins' proposals and the guard's answer;
//! - a PNG of the series, the forecast and both detectors' flags;
//! - `nab`: both detectors scored on the labelled NAB files with NAB's own scoring.

pub mod nab;

use crate::series::Series;
use crate::config::{self, Policy};
use crate::domain::{self, Target};
use crate::engine::{Decision, PolicyRuntime, Tick, forecaster_for};
use crate::remediation::audit::{Record, Verdict};
use crate::forecast::{self, Forecaster, Row};
use crate::metrics::Observation;
use crate::plugins::{Limits, Plugins};
use anyhow::{Context, bail};
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

/// The Iglewicz-Hoaglin cut-off for the modified z-score.
pub const DEFAULT_THRESHOLD: f64 = 3.5;
/// Past points a score is computed against.
pub const DEFAULT_WINDOW: usize = 288;
/// Points after a flagged one that are not flagged again.
pub const DEFAULT_QUIET: usize = 288;
/// Within a quiet period, a score this many times the highest flagged so far is a new alert.
const ESCALATION: f64 = 2.0;
/// Points needed before anything is scored.
const MIN_POINTS: usize = 12;

/// Robust z-scores: each point against the median and MAD of the `window` points before it
/// (0 until `MIN_POINTS` are there). Where the MAD is 0 (a flat stretch) the mean absolute
/// deviation stands in, scaled to match (1.2533), as the modified z-score prescribes; where
/// that is 0 too, any departure scores `f64::MAX`.
pub fn robust_scores(values: &[f64], window: usize) -> Vec<f64> {
    let mut scores = vec![0.0; values.len()];
    let mut buffer = Vec::with_capacity(window);
    for i in MIN_POINTS..values.len() {
        let past = &values[i.saturating_sub(window)..i];
        buffer.clear();
        buffer.extend_from_slice(past);
        let center = median(&mut buffer);
        for v in buffer.iter_mut() {
            *v = (*v - center).abs();
        }
        let mad = median(&mut buffer);
        let deviation = (values[i] - center).abs();
        scores[i] = if mad > 0.0 {
            0.6745 * deviation / mad
        } else {
            let mean_ad = buffer.iter().sum::<f64>() / buffer.len() as f64;
            if mean_ad > 0.0 {
                deviation / (1.2533 * mean_ad)
            } else if deviation > 0.0 {
                f64::MAX
            } else {
                0.0
            }
        };
    }
    scores
}

/// The median, reordering `values` (the scores' buffers are never empty).
fn median(values: &mut [f64]) -> f64 {
    crate::forecast::median(values).unwrap_or(f64::NAN)
}

/// One-step-ahead forecasts: point `i` forecast from the `window` points before it, by the
/// forecaster, or by the fallback while the forecaster cannot (too little history, a
/// failure); `NaN` where neither can.
pub fn one_step_forecasts(values: &[f64], window: usize, forecaster: &dyn Forecaster, fallback: &dyn Forecaster, step_seconds: u32) -> Vec<f64> {
    let mut out = vec![f64::NAN; values.len()];
    let origins: Vec<usize> = (1..values.len()).collect();
    for chunk in origins.chunks(256) {
        let rows: Vec<Row<'_>> = chunk.iter().map(|&i| vec![&values[i.saturating_sub(window)..i]]).collect();
        let results = forecaster.forecast_batch(&rows, 1, step_seconds);
        for (&i, result) in chunk.iter().zip(results) {
            let history = &values[i.saturating_sub(window)..i];
            let value = result.ok().and_then(|channels| channels.into_iter().next()).or_else(|| fallback.forecast(history, 1, step_seconds).ok()).and_then(|f| f.predicted.first().copied());
            out[i] = value.filter(|v| v.is_finite()).unwrap_or(f64::NAN);
        }
    }
    out
}

/// Both detectors' scores for one series.
#[derive(Debug, Clone)]
pub struct Scores {
    pub forecast: Vec<f64>,
    /// Robust z of the forecast residuals.
    pub residual: Vec<f64>,
    /// Robust z of the values (the prototype's method).
    pub plain: Vec<f64>,
}

/// Scores a series with a policy's forecaster (the shipped default model for `policies/nginx.yaml`).
pub fn score(values: &[f64], forecaster: &dyn Forecaster, fallback: &dyn Forecaster, history: usize, window: usize, step_seconds: u32) -> Scores {
    let forecast = one_step_forecasts(values, history, forecaster, fallback, step_seconds);
    let residuals: Vec<f64> = values.iter().zip(&forecast).map(|(v, f)| if f.is_finite() { v - f } else { 0.0 }).collect();
    Scores { residual: robust_scores(&residuals, window), plain: robust_scores(values, window), forecast }
}

/// The points whose score reaches `threshold`, one alert per anomaly: within `quiet` points
/// after a flag, a point is flagged again only when it scores at least `ESCALATION` times
/// every flag since the quiet period began, so a weak alert cannot hide a strong one.
pub fn flagged(scores: &[f64], threshold: f64, quiet: usize) -> Vec<usize> {
    let mut out: Vec<usize> = Vec::new();
    let mut ceiling = f64::NEG_INFINITY;
    for (i, &s) in scores.iter().enumerate() {
        if s < threshold {
            continue;
        }
        let quiet_now = out.last().is_some_and(|last| i <= last + quiet);
        if !quiet_now {
            ceiling = s;
            out.push(i);
        } else if s >= ESCALATION * ceiling {
            ceiling = s;
            out.push(i);
        }
    }
    out
}

/// What `host anomalies` is asked.
#[derive(Debug, Clone)]
pub struct Options {
    pub series: PathBuf,
    pub column: String,
    pub policy: PathBuf,
    /// The policy metric the series stands for (default: the first risk rule's).
    pub metric: Option<String>,
    pub step: Option<Duration>,
    pub threshold: f64,
    pub window: usize,
    /// Points after a flagged one that are not flagged again.
    pub quiet: usize,
    pub plot: Option<PathBuf>,
    /// The series is scaled so that its peak needs this share of `max_replicas` pods.
    pub peak: f64,
    pub capacity_per_pod: f64,
    pub target_utilisation: f64,
}

impl Options {
    pub fn new(series: PathBuf, column: String, policy: PathBuf) -> Self {
        Self { series, column, policy, metric: None, step: None, threshold: DEFAULT_THRESHOLD, window: DEFAULT_WINDOW, quiet: DEFAULT_QUIET, plot: None, peak: 0.8, capacity_per_pod: 0.5, target_utilisation: 0.8 }
    }
}

/// One flagged point and what the plan would have done.
#[derive(Debug, Clone, Serialize)]
pub struct Anomaly {
    pub index: usize,
    pub minute: f64,
    pub value: f64,
    pub forecast: Option<f64>,
    pub residual_z: f64,
    pub plain_z: f64,
    /// The risk plugin's level and reason.
    pub risk: String,
    /// One line per proposal: the action and the guard's verdict (dry-run).
    pub plan: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub series: String,
    pub column: String,
    pub metric: String,
    pub points: usize,
    pub step_seconds: u32,
    pub threshold: f64,
    /// Points flagged by MAD on the residuals (each with its dry-run plan).
    pub anomalies: Vec<Anomaly>,
    /// Points flagged by plain MAD on the values.
    pub plain_anomalies: Vec<usize>,
}

/// `host anomalies`.
pub fn run(options: &Options) -> anyhow::Result<Report> {
    let policy = config::load(&options.policy)?;
    let metric = match &options.metric {
        Some(m) => m.clone(),
        None => policy.risks.first().map(|r| r.metric.clone()).with_context(|| format!("{}: the policy has no risk rule to run the anomalies through", policy.source.display()))?,
    };
    let policy = only_metric(policy, &metric)?;
    let series = Series::read(&options.series, &options.column, None)?;
    let step_seconds = series.step(options.step.map(|s| s.as_secs() as u32), &options.series)?;
    let scale = super::replay::demand_scale(&series.values, options.peak, policy.guard.max_replicas, options.capacity_per_pod)
        .with_context(|| format!("{}: column `{}` has no value above 0", options.series.display(), options.column))?;
    let values: Vec<f64> = series.values.iter().map(|v| v * scale).collect();
    let forecaster = forecaster_for(&policy)?;
    let fallback = forecast::baseline(policy.forecast.fallback, policy.forecast.season);
    let scores = score(&values, &*forecaster, &*fallback, policy.forecast.window, options.window, step_seconds);
    let residual_flags = flagged(&scores.residual, options.threshold, options.quiet);
    let plain_flags = flagged(&scores.plain, options.threshold, options.quiet);

    let plans = dry_run_plans(policy, &metric, &values, &residual_flags, step_seconds, options)?;
    let minute = |i: usize| i as f64 * f64::from(step_seconds) / 60.0;
    let anomalies = residual_flags
        .iter()
        .zip(plans)
        .map(|(&i, (risk, plan))| Anomaly {
            index: i,
            minute: minute(i),
            value: values[i],
            forecast: scores.forecast[i].is_finite().then_some(scores.forecast[i]),
            residual_z: scores.residual[i],
            plain_z: scores.plain[i],
            risk,
            plan,
        })
        .collect();
    if let Some(path) = &options.plot {
        let minutes: Vec<f64> = (0..values.len()).map(minute).collect();
        let title = format!("{} `{}`: {} flagged on forecast residuals, {} by plain MAD (|z| >= {})", options.series.display(), options.column, residual_flags.len(), plain_flags.len(), options.threshold);
        super::plot::anomalies(path, &super::plot::AnomalyChart { title, minutes: &minutes, values: &values, forecast: &scores.forecast, residual_anomalies: &residual_flags, plain_anomalies: &plain_flags, windows: &[] })?;
    }
    Ok(Report {
        series: options.series.display().to_string(),
        column: options.column.clone(),
        metric,
        points: values.len(),
        step_seconds,
        threshold: options.threshold,
        anomalies,
        plain_anomalies: plain_flags,
    })
}

/// The policy with only the metric the series stands for, its risk rules and their
/// remediations.
fn only_metric(mut policy: Policy, metric: &str) -> anyhow::Result<Policy> {
    let names: Vec<String> = policy.risks.iter().map(|r| r.metric.clone()).collect();
    policy.risks.retain(|r| r.metric == metric);
    if policy.risks.is_empty() {
        bail!("{}: no risk rule watches metric `{metric}`; fix: pass `--metric` with one of: {}", policy.source.display(), names.join(", "));
    }
    let risks: Vec<String> = policy.risks.iter().map(|r| r.name.clone()).collect();
    policy.remediations.retain(|r| risks.contains(&r.risk));
    policy.metrics.retain(|m| m.name == metric);
    Ok(policy)
}

/// Replays the series through the policy, deciding (dry-run) at each flagged point: the
/// workload is assumed sized for the load of the point before (`target_utilisation` of
/// `capacity_per_pod` per pod, within the guard's range), so the question each anomaly asks
/// is whether the plan would have acted on it.
fn dry_run_plans(policy: Policy, metric: &str, values: &[f64], flags: &[usize], step_seconds: u32, options: &Options) -> anyhow::Result<Vec<(String, Vec<String>)>> {
    let plugins = Plugins::new(Limits::default())?;
    let audit = tempfile::tempdir().context("cannot create a temporary folder for the dry-run audit")?;
    let mut runtime = PolicyRuntime::new(policy, &plugins, Some(&audit.path().join("anomalies-audit.jsonl")), false)?;
    let start = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    let mut out = Vec::new();
    let mut next = flags.iter().peekable();
    for (i, value) in values.iter().enumerate() {
        let observation = Observation { values: BTreeMap::from([(metric.to_string(), *value)]), ..Default::default() };
        if next.peek() != Some(&&i) {
            runtime.observe_offline(&observation);
            continue;
        }
        next.next();
        let now = start + Duration::from_secs(u64::from(step_seconds) * i as u64);
        let before = values[i.saturating_sub(1)];
        let guard = &runtime.policy.guard;
        let replicas = ((before / (options.capacity_per_pod * options.target_utilisation)).ceil() as u32).clamp(guard.min_replicas.max(1), guard.max_replicas);
        let workload = workload(&runtime.policy.target, replicas, *value);
        let decision = runtime.decide_offline(&plugins, &Tick { observation: &observation, workload: &workload, now, force_dry_run: true });
        out.push(describe(&decision, replicas));
    }
    Ok(out)
}

fn workload(target: &Target, replicas: u32, cpu: f64) -> domain::Workload {
    let pods = (0..replicas)
        .map(|i| domain::Pod {
            name: format!("{}-{i}", target.name),
            node: "node-a".into(),
            phase: "Running".into(),
            ready: true,
            cpu_cores: Some(cpu / f64::from(replicas)),
            memory_bytes: None,
            age_seconds: 3600,
            startup_seconds: None,
        })
        .collect();
    let node = domain::Node { name: "node-a".into(), ready: true, schedulable: true, cordoned_by_augur: false, temperature_celsius: None, pressure: Vec::new(), healthy_seconds: 3600 };
    domain::Workload { target: target.clone(), replicas, ready_replicas: replicas, pods, nodes: vec![node], paused: None, scaled_by: None }
}

fn describe(decision: &Decision, replicas: u32) -> (String, Vec<String>) {
    let risk = decision.risks.iter().map(|r| format!("{} {} ({})", r.rule, r.risk.level, r.risk.reason)).collect::<Vec<_>>().join("; ");
    let mut plan = Vec::new();
    for (i, record) in decision.records.iter().enumerate() {
        plan.push(match record {
            Record::Action(r) => {
                let action = serde_json::to_string(&r.allowed.as_ref().unwrap_or(&r.proposal).action).unwrap_or_default();
                // What the guard allowed has no verdict yet, since nothing ran it offline.
                let allowed = decision.pending.iter().find(|p| p.record == i).map(|p| if p.dry_run { Verdict::DryRun } else { Verdict::Executed });
                let verdict = r.verdict.or(allowed).unwrap_or(Verdict::Rejected).as_str();
                format!("{verdict}: {action} from {replicas} replicas; {}", r.reason)
            }
            Record::Error(r) => format!("{}: {}", r.error_stage, r.reason),
            Record::Reload(r) => format!("reload: {}", r.reason),
        });
    }
    if plan.is_empty() {
        plan.push("no action proposed".into());
    }
    (if risk.is_empty() { "no risk assessed".into() } else { risk }, plan)
}

impl Report {
    pub fn table(&self) -> String {
        let mut out = format!(
            "{} `{}` as metric `{}`: {} points, step {} s; {} anomalies on forecast residuals, {} by plain MAD (|z| >= {}).\n",
            self.series,
            self.column,
            self.metric,
            self.points,
            self.step_seconds,
            self.anomalies.len(),
            self.plain_anomalies.len(),
            self.threshold
        );
        for a in &self.anomalies {
            let forecast = a.forecast.map(|f| format!("{f:.3}")).unwrap_or_else(|| "-".into());
            out.push_str(&format!("\npoint {} (minute {:.0}): value {:.3}, forecast {forecast}, residual z {:.1}, plain z {:.1}\n", a.index, a.minute, a.value, a.residual_z.min(1e6), a.plain_z.min(1e6)));
            out.push_str(&format!("  risk: {}\n", a.risk));
            for line in &a.plan {
                out.push_str(&format!("  plan (dry-run): {line}\n"));
            }
        }
        out
    }
}

/// One NAB file with its labelled windows, as row ranges.
#[derive(Debug, Clone)]
pub struct NabFile {
    pub name: String,
    pub values: Vec<f64>,
    pub windows: Vec<(usize, usize)>,
}

/// Reads the NAB corpus at `root` (`data/**.csv` and `labels/combined_windows.json`): every
/// file the windows name.
pub fn read_nab(root: &Path) -> anyhow::Result<Vec<NabFile>> {
    let labels_path = root.join("labels/combined_windows.json");
    let text = std::fs::read_to_string(&labels_path).with_context(|| format!("cannot read {}; fix: pass `--corpus` the NAB folder holding data/ and labels/", labels_path.display()))?;
    let labels: BTreeMap<String, Vec<(String, String)>> = serde_json::from_str(&text).with_context(|| format!("{}: not NAB's windows (a map of file to [start, end] pairs)", labels_path.display()))?;
    let mut files = Vec::new();
    for (name, windows) in labels {
        let path = root.join("data").join(&name);
        if !path.is_file() {
            bail!("cannot read {} (named in {})", path.display(), labels_path.display());
        }
        let series = Series::read(&path, "value", None)?;
        let find = |t: &str| series.row_at(t).with_context(|| format!("{}: window time {t} is not a row of {}", labels_path.display(), path.display()));
        let windows = windows.iter().map(|(a, b)| Ok((find(a)?, find(b)?))).collect::<anyhow::Result<Vec<_>>>()?;
        files.push(NabFile { name, values: series.values, windows });
    }
    if files.is_empty() {
        bail!("{}: names no files", labels_path.display());
    }
    Ok(files)
}

/// Scores of both detectors on a NAB corpus, per profile, at a threshold.
#[derive(Debug, Clone, Serialize)]
pub struct NabRow {
    pub detector: String,
    pub threshold: f64,
    /// (profile, normalised score).
    pub scores: Vec<(String, f64)>,
}

/// Scores both detectors on the corpus: at `threshold`, and at the best threshold of a
/// grid per profile (NAB tunes each detector's threshold per profile the same way).
pub fn nab_scores(files: &[NabFile], forecaster: &dyn Forecaster, fallback: &dyn Forecaster, history: usize, window: usize, threshold: f64, quiet: usize) -> Vec<NabRow> {
    let scored: Vec<Scores> = files.iter().map(|f| score(&f.values, forecaster, fallback, history, window, 300)).collect();
    let grid = [2.0, 2.5, 3.0, 3.5, 4.0, 5.0, 6.0, 8.0, 10.0, 15.0, 20.0, 30.0, 50.0, 100.0];
    let mut rows = Vec::new();
    for (name, pick) in [("MAD on forecast residuals", 0usize), ("plain MAD (the prototype)", 1)] {
        let at = |t: f64, profile: nab::Profile| -> f64 {
            let per_file: Vec<nab::FileScore> = files
                .iter()
                .zip(&scored)
                .map(|(f, s)| {
                    let z = if pick == 0 { &s.residual } else { &s.plain };
                    let mut detected = vec![false; z.len()];
                    for i in flagged(z, t, quiet) {
                        detected[i] = true;
                    }
                    nab::score_file(&detected, &f.windows, profile)
                })
                .collect();
            nab::normalised(&per_file, profile)
        };
        rows.push(NabRow { detector: name.into(), threshold, scores: nab::PROFILES.iter().map(|p| (p.name.to_string(), at(threshold, *p))).collect() });
        for profile in nab::PROFILES {
            let (best_t, best) = grid.iter().map(|t| (*t, at(*t, profile))).max_by(|a, b| a.1.total_cmp(&b.1)).expect("a non-empty grid");
            rows.push(NabRow { detector: format!("{name}, tuned for {}", profile.name), threshold: best_t, scores: vec![(profile.name.to_string(), best)] });
        }
    }
    rows
}

/// `host nab`: the table for the docs.
pub fn nab_table(root: &Path, policy: &Path, window: usize, threshold: f64, quiet: usize) -> anyhow::Result<String> {
    let policy = config::load(policy)?;
    let files = read_nab(root)?;
    let forecaster: Arc<dyn Forecaster> = forecaster_for(&policy)?;
    let fallback = forecast::baseline(policy.forecast.fallback, policy.forecast.season);
    let rows = nab_scores(&files, &*forecaster, &*fallback, policy.forecast.window, window, threshold, quiet);
    let windows: usize = files.iter().map(|f| f.windows.len()).sum();
    let points: usize = files.iter().map(|f| f.values.len()).sum();
    let mut out = format!("NAB corpus {}: {} files, {} rows, {} labelled windows; forecaster {} (from {}); trailing window {window} points; {quiet} quiet points after a flag.\n\n", root.display(), files.len(), points, windows, forecaster.name(), policy.source.display());
    out.push_str("| detector | threshold (robust z) | standard | reward low FP | reward low FN |\n|---|---:|---:|---:|---:|\n");
    for row in rows {
        let cell = |profile: &str| row.scores.iter().find(|(p, _)| p == profile).map(|(_, s)| format!("{s:.1}")).unwrap_or_else(|| "".into());
        out.push_str(&format!("| {} | {} | {} | {} | {} |\n", row.detector, row.threshold, cell("standard"), cell("reward_low_FP_rate"), cell("reward_low_FN_rate")));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_spike_scores_high_and_the_past_alone_judges_it() {
        let mut values: Vec<f64> = (0..100).map(|i| 10.0 + (i % 5) as f64 * 0.1).collect();
        values[60] = 30.0;
        let scores = robust_scores(&values, 50);
        assert!(scores[60] > 100.0, "{}", scores[60]);
        assert!(scores[..60].iter().all(|s| *s < 3.5), "nothing before the spike is flagged");
        assert_eq!(scores[..MIN_POINTS], [0.0; MIN_POINTS]);
    }

    #[test]
    fn a_flat_stretch_uses_the_mean_deviation_or_flags_any_departure() {
        let mut values = vec![5.0; 40];
        values[30] = 6.0;
        values[32] = 5.5;
        let scores = robust_scores(&values, 20);
        assert_eq!(scores[29], 0.0);
        assert_eq!(scores[30], f64::MAX);
        assert_eq!(scores[31], 0.0);
        // The 20 points before 32 hold one 6.0: the MAD is still 0, the mean deviation 1/20.
        assert!((scores[32] - 0.5 / (1.2533 * 0.05)).abs() < 1e-9, "{}", scores[32]);
    }

    #[test]
    fn a_quiet_period_holds_repeats_but_not_a_stronger_alert() {
        let mut scores = vec![0.0; 30];
        scores[5] = 4.0;
        scores[6] = 4.0; // the same anomaly going on: quiet
        scores[8] = 3.9; // weaker: quiet
        scores[10] = 50.0; // far stronger: flagged despite the quiet period
        scores[12] = 90.0; // less than twice 50: quiet
        scores[25] = 3.6; // after 10 quiet points: flagged
        assert_eq!(flagged(&scores, 3.5, 10), vec![5, 10, 25]);
        assert_eq!(flagged(&scores, 3.5, 0), vec![5, 6, 8, 10, 12, 25]);
    }

    #[test]
    fn the_median_of_an_even_count_is_the_midpoint() {
        assert_eq!(median(&mut [4.0, 1.0, 3.0, 2.0]), 2.5);
        assert_eq!(median(&mut [3.0, 1.0, 2.0]), 2.0);
    }
}
