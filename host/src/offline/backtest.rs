//! `host backtest`: rolling-origin evaluation of a forecaster on a CSV series.
//!
//! The series is split in time: the first part is "in-sample" (it scales MASE and fits the
//! Holt-Winters parameters), the held-out tail supplies the forecast origins. At each origin
//! `t` every forecaster sees only points before `t` and predicts `t .. t + horizon`. An
//! origin is scored only when its window, its targets and the seasonal reference are all real
//! data (a `--mask` column marks "no data"), so every forecaster is scored on the same
//! origins and the figures are comparable.
//!
//! Per horizon step: MAE, RMSE, MASE (MAE over the in-sample one-step seasonal naive MAE),
//! pinball loss (mean over p10, p50, p90) and the share of targets inside [p10, p90].

use crate::domain::Forecast;
use crate::series::Series;
use crate::forecast::calibration::Calibration;
use crate::forecast::gate::pinball;
use crate::forecast::{self, ForecastError, Forecaster, HoltWinters, HwState, OnnxModel, Row};
use anyhow::{Context, bail};
use serde::Serialize;
use std::path::{Path, PathBuf};

/// What to evaluate.
#[derive(Debug, Clone)]
pub enum Subject {
    Model(PathBuf),
    Baseline(crate::config::Baseline),
}

#[derive(Debug, Clone)]
pub struct Options {
    pub series: PathBuf,
    pub column: String,
    pub subject: Subject,
    /// Seconds between points; read from the file's time column when `None`.
    pub step: Option<u32>,
    /// A column that is non-zero where a point is not real data.
    pub mask: Option<String>,
    /// Share of the series held out for origins (the shipped models hold out the last 20%).
    pub holdout: f64,
    /// Points predicted at each origin; the model's horizon by default, else 15.
    pub horizon: Option<usize>,
    /// History for the non-seasonal forecasters; the model's window by default, else 60.
    pub window: Option<usize>,
    /// The season; one day by default.
    pub season: Option<std::time::Duration>,
    /// Score every `every`-th origin.
    pub every: usize,
    /// Score the forecaster's own interval, not the one Augur calibrates online (as `host run`
    /// issues it).
    pub uncalibrated: bool,
    /// Score the skill gate over the subject and the simple baselines (what `host run`
    /// serves) instead of the subject alone.
    pub gate: bool,
}

/// One horizon step's scores.
#[derive(Debug, Clone, Copy, Serialize, PartialEq)]
pub struct StepScore {
    pub h: usize,
    pub mae: f64,
    pub rmse: f64,
    pub mase: f64,
    pub pinball: f64,
    pub coverage: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub series: String,
    pub column: String,
    pub forecaster: String,
    pub step_seconds: u32,
    pub season: usize,
    pub window: usize,
    pub horizon: usize,
    /// Whether the intervals were calibrated online, as `host run` issues them.
    pub calibrated: bool,
    pub points: usize,
    pub first_origin: usize,
    pub origins: usize,
    /// In-sample one-step seasonal naive MAE: the MASE denominator.
    pub scale: f64,
    pub steps: Vec<StepScore>,
    /// For the skill gate: the origins each contender served.
    #[serde(skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub served: std::collections::BTreeMap<String, usize>,
}

/// The shipped default model: `models/default.yaml` names it (`model: <dir>/model.onnx`),
/// looked up from the working directory, then beside the source tree of the binary.
pub fn default_model() -> anyhow::Result<PathBuf> {
    #[derive(serde::Deserialize)]
    struct Default {
        model: PathBuf,
    }
    let mut places = vec![PathBuf::from("models")];
    if let Some(dir) = std::env::current_exe().ok().and_then(|e| e.parent().map(Path::to_path_buf)) {
        places.push(dir.join("../../models"));
    }
    for dir in &places {
        let file = dir.join("default.yaml");
        if let Ok(text) = std::fs::read_to_string(&file) {
            let d: Default = yaml_serde::from_str(&text).with_context(|| format!("{}: expected `model: <dir>/model.onnx`", file.display()))?;
            return Ok(dir.join(d.model));
        }
    }
    bail!("no default model: models/default.yaml is not in the working directory; fix: run from the repository root, or pass --model or --baseline")
}

/// What every forecaster of one backtest shares: the series, its step, the origins and the
/// MASE scale.
struct Setup {
    series: Series,
    step: u32,
    model: Option<std::sync::Arc<OnnxModel>>,
    horizon: usize,
    window: usize,
    season: usize,
    split: usize,
    scale: f64,
    origins: Vec<usize>,
}

fn setup(options: &Options) -> anyhow::Result<Setup> {
    let series = Series::read(&options.series, &options.column, options.mask.as_deref())?;
    let step = series.step(options.step, &options.series)?;
    let model = match &options.subject {
        Subject::Model(path) => Some(OnnxModel::shared(path)?),
        Subject::Baseline(_) => None,
    };
    if let Some(model) = &model {
        let card = model.card();
        if !card.is_univariate() {
            bail!("{}: model `{}` reads {} metrics together; backtest scores one series, so use a univariate model", model.path().display(), card.name, card.inputs.len());
        }
        if !card.steps.iter().any(|s| s.as_secs() == u64::from(step)) {
            bail!("{}: model `{}` was trained on steps of {:?}, the series steps {step}s; fix: pass `--step` if the series' step was misread, or use a model for this step", model.path().display(), card.name, card.steps);
        }
    }
    let horizon = options.horizon.or(model.as_ref().map(|m| m.card().horizon)).unwrap_or(15);
    let window = options.window.or(model.as_ref().map(|m| m.card().window)).unwrap_or(60);
    let season_seconds = options.season.map_or(86_400, |s| s.as_secs());
    let season = ((season_seconds as f64 / f64::from(step.max(1))).round() as usize).max(1);
    let n = series.values.len();
    let split = ((n as f64) * (1.0 - options.holdout)).round() as usize;
    if !(0.0..1.0).contains(&options.holdout) || split < window.max(2 * season + 1) {
        bail!(
            "{}: {n} points leave {split} in-sample points before the held-out {:.0}%, fewer than the {} needed (window {window}, two seasons of {season}); fix: use a longer series or a smaller --holdout or --season",
            options.series.display(),
            options.holdout * 100.0,
            window.max(2 * season + 1)
        );
    }
    // MASE scale: in-sample one-step seasonal naive MAE over real points.
    let diffs: Vec<f64> = (season..split).filter(|&t| series.real[t] && series.real[t - season]).map(|t| (series.values[t] - series.values[t - season]).abs()).collect();
    let scale = diffs.iter().sum::<f64>() / diffs.len().max(1) as f64;
    if scale.partial_cmp(&0.0) != Some(std::cmp::Ordering::Greater) {
        bail!("{}: the in-sample seasonal naive error is zero (a constant series?): MASE is undefined", options.series.display());
    }
    // Origins scored by every forecaster alike.
    let mut bad = vec![0usize; n + 1];
    for t in 0..n {
        bad[t + 1] = bad[t] + usize::from(!series.real[t]);
    }
    let clean = |from: usize, to: usize| bad[to] - bad[from] == 0;
    let origins: Vec<usize> = (split..=n.saturating_sub(horizon))
        .step_by(options.every.max(1))
        .filter(|&t| clean(t - window, t + horizon) && clean(t - season, t - season + horizon.min(season)))
        .collect();
    if origins.is_empty() {
        bail!("{}: no held-out origin has {window} points of real history and {horizon} real targets", options.series.display());
    }
    Ok(Setup { series, step, model, horizon, window, season, split, scale, origins })
}

/// One forecaster's own forecasts at every origin: its name and them.
fn raw_forecasts(s: &Setup, subject: &Subject) -> anyhow::Result<(String, Vec<Result<Forecast, ForecastError>>)> {
    let (horizon, window, step) = (s.horizon, s.window, s.step);
    Ok(match (subject, &s.model) {
        (Subject::Model(_), Some(model)) => {
            let mut out = Vec::with_capacity(s.origins.len());
            // A model with seasonal context reads further back than its window; a point that is
            // not real is unknown to it (NaN), as a gap is on a cluster.
            let used = model.history_used(step).max(window);
            let values: Vec<f64> = s.series.values.iter().zip(&s.series.real).map(|(v, real)| if *real { *v } else { f64::NAN }).collect();
            for chunk in s.origins.chunks(1024) {
                let rows: Vec<Row<'_>> = chunk.iter().map(|&t| vec![&values[t.saturating_sub(used)..t]]).collect();
                out.extend(model.forecast_batch(&rows, horizon, step).into_iter().map(|r| r.map(|mut c| c.swap_remove(0))));
            }
            (model.name().to_string(), out)
        }
        (Subject::Model(path), None) => bail!("{}: the model is not loaded", path.display()),
        (Subject::Baseline(crate::config::Baseline::HoltWinters), _) => ("holt-winters".into(), holt_winters_rolling(&s.series, s.split, s.season, horizon, step, &s.origins)?),
        (Subject::Baseline(b), _) => {
            let forecaster = forecast::baseline(*b, s.season);
            // Seasonal naive needs a season back; the others see the window.
            let needed = forecaster.min_history().max(window);
            let out = s.origins.iter().map(|&t| forecaster.forecast(&s.series.values[t.saturating_sub(needed)..t], horizon, step)).collect();
            (forecaster.name().to_string(), out)
        }
    })
}

impl Setup {
    fn report(&self, options: &Options, forecaster: String, forecasts: &[Result<Forecast, ForecastError>], calibrated: bool) -> anyhow::Result<Report> {
        let steps = score(&self.series.values, &self.origins, forecasts, self.horizon, self.scale)?;
        Ok(Report {
            series: options.series.display().to_string(),
            column: options.column.clone(),
            forecaster,
            step_seconds: self.step,
            season: self.season,
            window: self.window,
            horizon: self.horizon,
            calibrated,
            points: self.series.values.len(),
            first_origin: self.split,
            origins: self.origins.len(),
            scale: self.scale,
            steps,
            served: Default::default(),
        })
    }
}

/// Runs a backtest of `options.subject` (of the skill gate over it and the baselines, with
/// `options.gate`).
pub fn run(options: &Options) -> anyhow::Result<Report> {
    let s = setup(options)?;
    if options.gate {
        return gate_report(options, &s);
    }
    let (name, raw) = raw_forecasts(&s, &options.subject)?;
    let forecasts = if options.uncalibrated { raw } else { calibrate_rolling(&s.series.values, &s.origins, raw) };
    s.report(options, name, &forecasts, !options.uncalibrated)
}

/// The skill gate's name in a report.
pub fn gate_name(subject: &str) -> String {
    format!("gate({subject})")
}

/// The skill gate as `host run` keeps it, walked through the held-out part: the subject first,
/// then the policy's default fallback and the simple baselines; each origin's forecast is the
/// one the gate serves there, judged on the targets seen before it (it starts unjudged at the
/// first origin, as a fresh `host run` does).
fn gate_report(options: &Options, s: &Setup) -> anyhow::Result<Report> {
    use crate::config::Baseline;
    use crate::forecast::gate::{Gate, Role};
    let (subject, primary) = raw_forecasts(s, &options.subject)?;
    let mut contenders = vec![(subject.clone(), Role::Primary, primary)];
    for b in [Baseline::HoltDamped, Baseline::LastValue, Baseline::SeasonalNaive, Baseline::HoltWinters] {
        let (name, raw) = raw_forecasts(s, &Subject::Baseline(b))?;
        if !contenders.iter().any(|(n, _, _)| *n == name) {
            contenders.push((name, Role::Baseline, raw));
        }
    }
    let names: Vec<(String, Role)> = contenders.iter().map(|(n, r, _)| (n.clone(), *r)).collect();
    let mut gate = Gate::new(&names, usize::from(names.len() > 1), true, !options.uncalibrated);
    let mut columns: Vec<std::vec::IntoIter<Result<Forecast, ForecastError>>> = contenders.into_iter().map(|(_, _, raw)| raw.into_iter()).collect();
    let values = &s.series.values;
    let mut next = s.origins[0];
    let mut served = Vec::with_capacity(s.origins.len());
    let mut counts = std::collections::BTreeMap::new();
    for &t in &s.origins {
        while next < t {
            gate.observe(values[next]);
            next += 1;
        }
        let raw: Vec<Result<Forecast, ForecastError>> = columns.iter_mut().map(|c| c.next().expect("one forecast per origin")).collect();
        let got = gate.issue(raw);
        if let Some(g) = &got {
            *counts.entry(g.choice.serving.clone()).or_insert(0usize) += 1;
        }
        served.push(got.map(|s| s.forecast).ok_or_else(|| ForecastError::Failed { forecaster: "gate".into(), reason: "no contender could forecast".into() }));
    }
    let mut report = s.report(options, gate_name(&subject), &served, !options.uncalibrated)?;
    report.served = counts;
    Ok(report)
}

/// The forecasts as `host run` issues them: each origin's interval corrected by what the
/// forecasts before it taught (`forecast::calibration`), scoring only the targets seen before
/// the origin. Origins are in time order.
fn calibrate_rolling(values: &[f64], origins: &[usize], forecasts: Vec<Result<Forecast, ForecastError>>) -> Vec<Result<Forecast, ForecastError>> {
    let mut calibration: Option<Calibration> = None;
    // Issued forecasts with their origin and their next step to score.
    let mut issued: std::collections::VecDeque<(usize, Forecast, usize)> = std::collections::VecDeque::new();
    let mut out = Vec::with_capacity(forecasts.len());
    for (&t, raw) in origins.iter().zip(forecasts) {
        if let Some(c) = calibration.as_mut() {
            for (origin, forecast, next) in issued.iter_mut() {
                while *next < forecast.predicted.len() && *origin + *next < t {
                    c.update(*next, values[*origin + *next], forecast);
                    *next += 1;
                }
            }
            issued.retain(|(_, forecast, next)| *next < forecast.predicted.len());
        }
        out.push(raw.map(|raw| {
            let c = calibration.get_or_insert_with(|| Calibration::for_forecaster(&raw.forecaster));
            let served = c.issue(&raw);
            issued.push_back((t, served.clone(), 0));
            served
        }));
    }
    out
}

/// Holt-Winters with its parameters fitted once on the in-sample part, then filtered through
/// the series, forecasting at each origin (refitting at every origin would cost O(n) each).
fn holt_winters_rolling(series: &Series, split: usize, season: usize, horizon: usize, step: u32, origins: &[usize]) -> anyhow::Result<Vec<Result<Forecast, ForecastError>>> {
    let observed: Vec<Option<f64>> = series.values.iter().zip(&series.real).map(|(v, r)| r.then_some(*v)).collect();
    // Start at the first real point; gaps in the first two seasons are carried forward.
    let start = observed.iter().position(Option::is_some).context("holt-winters: the series has no real data")?;
    let hw = HoltWinters { season };
    let (params, _, sigma) = hw.fit(&observed[start..split])?;
    let mut state = HwState::init(&forecast::carry_forward(&observed[start..start + 2 * season]), season);
    let mut out = Vec::with_capacity(origins.len());
    let mut next = origins.iter().peekable();
    for (t, y) in observed.iter().enumerate().skip(start + season) {
        while next.peek().is_some_and(|&&o| o == t) {
            next.next();
            let predicted = (1..=horizon).map(|h| state.predict(&params, h)).collect();
            out.push(forecast::finite(forecast::with_interval(hw.name(), predicted, sigma, step)));
        }
        state.update(&params, *y);
    }
    Ok(out)
}

/// Scores forecasts against the series. Errors (a forecaster that could not serve) fail the
/// backtest: a silent gap would flatter it.
pub fn score(values: &[f64], origins: &[usize], forecasts: &[Result<Forecast, ForecastError>], horizon: usize, scale: f64) -> anyhow::Result<Vec<StepScore>> {
    let mut sums = vec![[0.0f64; 4]; horizon]; // abs, sq, pinball, covered
    for (&t, forecast) in origins.iter().zip(forecasts) {
        let f = forecast.as_ref().map_err(|e| anyhow::anyhow!("origin {t}: {e}"))?;
        let (lower, upper) = (f.lower.as_ref().context("no p10")?, f.upper.as_ref().context("no p90")?);
        for h in 0..horizon {
            let y = values[t + h];
            let e = y - f.predicted[h];
            let s = &mut sums[h];
            s[0] += e.abs();
            s[1] += e * e;
            s[2] += (pinball(0.1, y, lower[h]) + pinball(0.5, y, f.predicted[h]) + pinball(0.9, y, upper[h])) / 3.0;
            s[3] += f64::from(u8::from(lower[h] <= y && y <= upper[h]));
        }
    }
    let n = origins.len() as f64;
    Ok(sums.iter().enumerate().map(|(h, s)| StepScore { h: h + 1, mae: s[0] / n, rmse: (s[1] / n).sqrt(), mase: s[0] / n / scale, pinball: s[2] / n, coverage: s[3] / n }).collect())
}

/// The simple baselines every forecaster must beat: last value, seasonal naive, Holt-Winters.
pub const BASELINES: [crate::config::Baseline; 3] = [crate::config::Baseline::LastValue, crate::config::Baseline::SeasonalNaive, crate::config::Baseline::HoltWinters];

/// `host backtest --compare`: the subject and every simple baseline on the same origins (the
/// subject's window and horizon for all), side by side per step.
#[derive(Debug, Clone, Serialize)]
pub struct Comparison {
    pub series: String,
    pub column: String,
    /// The subject first, the skill gate over it second, then the baselines.
    pub reports: Vec<Report>,
    pub steps: Vec<ComparedStep>,
}

/// One step of a comparison.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ComparedStep {
    pub h: usize,
    /// The subject's MASE.
    pub mase: f64,
    /// The best baseline's name and MASE at this step.
    pub best_baseline: String,
    pub best_baseline_mase: f64,
    /// The subject's MASE over the best baseline's: below 1 beats every baseline.
    pub ratio: f64,
    /// The subject's p10-p90 coverage.
    pub coverage: f64,
    /// The skill gate's MASE, its ratio to the best baseline and its coverage.
    pub gate_mase: f64,
    pub gate_ratio: f64,
    pub gate_coverage: f64,
}

/// Runs the comparison: `options.subject`, the skill gate over it, then each of
/// [`BASELINES`] (the subject itself skipped when it is one of them).
pub fn compare(options: &Options) -> anyhow::Result<Comparison> {
    let subject = run(&Options { gate: false, ..options.clone() })?;
    let same = Options { horizon: Some(subject.horizon), window: Some(subject.window), gate: false, ..options.clone() };
    let gate = run(&Options { gate: true, ..same.clone() })?;
    let mut reports = vec![subject, gate];
    for baseline in BASELINES {
        if matches!(options.subject, Subject::Baseline(b) if b == baseline) {
            continue;
        }
        reports.push(run(&Options { subject: Subject::Baseline(baseline), ..same.clone() })?);
    }
    let origins = reports[0].origins;
    if let Some(other) = reports.iter().find(|r| r.origins != origins) {
        bail!("{} scored {} origins and {} {}: a comparison needs the same origins", reports[0].forecaster, origins, other.forecaster, other.origins);
    }
    let steps = (0..reports[0].steps.len())
        .map(|i| {
            let (own, gate) = (reports[0].steps[i], reports[1].steps[i]);
            let best = reports[2..].iter().min_by(|a, b| a.steps[i].mase.total_cmp(&b.steps[i].mase)).expect("at least two baselines are left");
            let best_mase = best.steps[i].mase;
            ComparedStep {
                h: own.h,
                mase: own.mase,
                best_baseline: best.forecaster.clone(),
                best_baseline_mase: best_mase,
                ratio: own.mase / best_mase,
                coverage: own.coverage,
                gate_mase: gate.mase,
                gate_ratio: gate.mase / best_mase,
                gate_coverage: gate.coverage,
            }
        })
        .collect();
    Ok(Comparison { series: options.series.display().to_string(), column: options.column.clone(), reports, steps })
}

impl Comparison {
    /// One table: per step, every forecaster's MASE, the subject's ratio to the best baseline
    /// and its coverage.
    pub fn table(&self) -> String {
        let subject = &self.reports[0];
        let mut out = format!(
            "{} and {} vs {} on {} column {} ({} held-out origins, step {}s, window {}): MASE per step\n",
            subject.forecaster,
            self.reports[1].forecaster,
            self.reports[2..].iter().map(|r| r.forecaster.as_str()).collect::<Vec<_>>().join(", "),
            self.series,
            self.column,
            subject.origins,
            subject.step_seconds,
            subject.window
        );
        let width = self.reports.iter().map(|r| r.forecaster.len()).max().unwrap_or(0).max(12);
        out.push_str(&format!("{:>4}", "h"));
        for r in &self.reports {
            out.push_str(&format!(" {:>width$}", r.forecaster));
        }
        out.push_str(&format!(" {:>16} {:>7} {:>9} {:>10} {:>9}\n", "best baseline", "ratio", "coverage", "gate ratio", "coverage"));
        for (i, step) in self.steps.iter().enumerate() {
            out.push_str(&format!("{:>4}", step.h));
            for r in &self.reports {
                out.push_str(&format!(" {:>width$.4}", r.steps[i].mase));
            }
            out.push_str(&format!(" {:>16} {:>7.3} {:>8.1}% {:>10.3} {:>8.1}%\n", step.best_baseline, step.ratio, 100.0 * step.coverage, step.gate_ratio, 100.0 * step.gate_coverage));
        }
        out.push_str(&format!("{} served: {}\n", self.reports[1].forecaster, served_line(&self.reports[1].served, self.reports[1].origins)));
        for (who, worst) in [(&subject.forecaster, self.steps.iter().map(|s| s.ratio).fold(f64::NEG_INFINITY, f64::max)), (&self.reports[1].forecaster, self.steps.iter().map(|s| s.gate_ratio).fold(f64::NEG_INFINITY, f64::max))] {
            out.push_str(&format!("{who}: worst ratio {worst:.3}: {}\n", if worst < 1.0 { "beats every baseline at every step" } else { "does not beat the best baseline at every step" }));
        }
        out
    }
}


/// "model:transformer 95%, holt-damped 5%": who served the gate's origins.
fn served_line(served: &std::collections::BTreeMap<String, usize>, origins: usize) -> String {
    let mut shares: Vec<(&String, &usize)> = served.iter().collect();
    shares.sort_by(|a, b| b.1.cmp(a.1));
    shares.iter().map(|(who, n)| format!("{who} {:.0}%", 100.0 * **n as f64 / origins.max(1) as f64)).collect::<Vec<_>>().join(", ")
}

impl Report {
    /// The readable table.
    pub fn table(&self) -> String {
        let mut out = format!(
            "{} on {} column {} ({} points, step {}s, season {}, window {}; {} held-out origins from point {}; MASE scale {:.4}; intervals {})\n",
            self.forecaster,
            self.series,
            self.column,
            self.points,
            self.step_seconds,
            self.season,
            self.window,
            self.origins,
            self.first_origin,
            self.scale,
            if self.calibrated { "calibrated online, as host run issues them" } else { "the forecaster's own" }
        );
        out.push_str(&format!("{:>4} {:>12} {:>12} {:>8} {:>12} {:>9}\n", "h", "mae", "rmse", "mase", "pinball", "coverage"));
        for s in &self.steps {
            out.push_str(&format!("{:>4} {:>12.4} {:>12.4} {:>8.4} {:>12.4} {:>8.1}%\n", s.h, s.mae, s.rmse, s.mase, s.pinball, 100.0 * s.coverage));
        }
        if !self.served.is_empty() {
            out.push_str(&format!("served: {}\n", served_line(&self.served, self.origins)));
        }
        out
    }
}
