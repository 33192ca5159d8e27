//! The skill gate: per series, a rolling backtest of every forecaster Augur could use for it,
//! and the choice of the one that serves.
//!
//! At every point each contender (the policy's forecaster, its fallback, last value, seasonal
//! naive, Holt-Winters) forecasts; the gate calibrates each forecast on that contender's own
//! errors (`calibration`), remembers it, and scores it step by step as the points it predicted
//! arrive: the mean pinball loss of its p10, p50 and p90, averaged over about
//! [`SKILL_MEMORY`] points per step. A contender's *skill* is that loss averaged over the
//! horizon, once it has been scored [`MIN_SCORED`] times at every step.
//!
//! The chosen contender serves whenever it can forecast. It starts as the policy's fallback
//! (a baseline), so a model is *shadowed* (its forecasts recorded and scored, not acted on)
//! until it has shown skill on this series; a contender replaces the chosen one when its skill
//! is better by more than [`MARGIN`], which promotes a model that beats the baselines and
//! demotes one whose skill decays below theirs. A contender that cannot forecast at a point
//! (too little history, a failed model) is stood in for by the best of the rest.
//!
//! Losses are in the metric's unit, so they compare contenders on one series only; the audit
//! and `/metrics` show each one's skill over the best baseline's.

use super::calibration::Calibration;
use super::{ForecastError, Forecaster, LastValue};
use super::online::SeasonalBaselines;
use crate::domain::Forecast;
use serde::Serialize;
use std::collections::VecDeque;

/// A step's loss averages over about this many points: a day of 5-minute points, nearly five
/// hours of minutes. Long enough that a contender is not promoted on one lucky burst, short
/// enough to follow a series that changes its habits within the day.
pub const SKILL_MEMORY: f64 = 288.0;

/// Points a contender is scored at each step before its skill counts (an hour of minutes).
pub const MIN_SCORED: u64 = 60;

/// A contender replaces the chosen one only with a skill this much better (5% less loss), so
/// that two near-equal contenders do not take turns on noise.
pub const MARGIN: f64 = 0.05;

/// What a contender is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    /// The policy's own forecaster (a trained model, or the baseline the policy names).
    Primary,
    /// A simple baseline it must beat.
    Baseline,
    /// The two contenders with the best recent skill, averaged quantile by quantile with
    /// weights 1/loss² (Bates and Granger's combination): often better than either when their
    /// errors differ, and judged like any other contender.
    Blend,
}

/// The blend contender's name.
pub const BLEND: &str = "blend";

#[derive(Debug, Clone)]
struct Contender {
    name: String,
    role: Role,
    /// Per step: the recent mean pinball loss and the points scored.
    loss: Vec<f64>,
    scored: Vec<u64>,
    calibration: Calibration,
}

impl Contender {
    /// The recent loss over the horizon, once scored enough at every step.
    fn skill(&self) -> Option<f64> {
        if self.scored.is_empty() || self.scored.iter().any(|n| *n < MIN_SCORED) {
            return None;
        }
        Some(self.loss.iter().sum::<f64>() / self.loss.len() as f64)
    }

    fn score(&mut self, h: usize, value: f64, band: [f32; 3], calibrate: bool) {
        if self.loss.len() <= h {
            self.loss.resize(h + 1, 0.0);
            self.scored.resize(h + 1, 0);
        }
        let [lower, median, upper] = band.map(f64::from);
        let loss = (pinball(0.1, value, lower) + pinball(0.5, value, median) + pinball(0.9, value, upper)) / 3.0;
        self.scored[h] += 1;
        self.loss[h] += (loss - self.loss[h]) / (self.scored[h] as f64).min(SKILL_MEMORY);
        if calibrate {
            self.calibration.update_step(h, value, [lower, median, upper]);
        }
    }
}

/// The forecasts issued at one point, kept small until scored (a lineup holds a horizon's
/// worth of them for every contender): per contender and step, its (p10, p50, p90) as `f32`,
/// NaN where it did not forecast that step.
#[derive(Debug, Clone)]
struct Issued {
    at: u64,
    horizon: usize,
    bands: Vec<[f32; 3]>,
}

impl Issued {
    fn new(at: u64, forecasts: &[Option<Forecast>]) -> Self {
        let horizon = forecasts.iter().flatten().map(|f| f.predicted.len()).max().unwrap_or(0);
        let mut bands = vec![[f32::NAN; 3]; horizon * forecasts.len()];
        for (c, f) in forecasts.iter().enumerate() {
            let Some(f) = f else { continue };
            for (h, median) in f.predicted.iter().enumerate() {
                let lower = f.lower.as_ref().map_or(*median, |l| l[h]);
                let upper = f.upper.as_ref().map_or(*median, |u| u[h]);
                bands[c * horizon + h] = [lower as f32, *median as f32, upper as f32];
            }
        }
        Self { at, horizon, bands }
    }
}

/// The pinball (quantile) loss of predicting `predicted` for quantile `q` when `y` came.
pub fn pinball(q: f64, y: f64, predicted: f64) -> f64 {
    let d = y - predicted;
    (q * d).max((q - 1.0) * d)
}

/// Why the served forecaster serves.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Why {
    /// The gate is off: the policy's forecaster serves whenever it can.
    Fixed,
    /// The chosen contender has not yet been scored enough on this series to be judged: it
    /// serves as first chosen (the fallback) and the others are shadowed.
    Unproven { needed: u64, scored: u64 },
    /// It has the best recent skill: no other beats it by the margin. `since` is the point of
    /// the last change, and whom it replaced.
    BestSkill {
        #[serde(skip_serializing_if = "Option::is_none")]
        replaced: Option<String>,
        #[serde(skip_serializing_if = "Option::is_none")]
        since_point: Option<u64>,
    },
    /// The chosen contender could not forecast at this point; this one stands in.
    StandIn { chosen: String, error: String },
}

impl std::fmt::Display for Why {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Why::Fixed => write!(f, "the policy's forecaster (the skill gate is off)"),
            Why::Unproven { needed, scored } => write!(f, "first choice: no contender is judged before {needed} points scored at each step ({scored} so far)"),
            Why::BestSkill { replaced: Some(r), since_point: Some(p) } => write!(f, "best recent skill (replaced {r} at point {p})"),
            Why::BestSkill { .. } => write!(f, "best recent skill"),
            Why::StandIn { chosen, error } => write!(f, "stands in: {chosen} could not forecast ({error})"),
        }
    }
}

/// One contender's standing, as the audit and `/metrics` show it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Standing {
    pub forecaster: String,
    pub role: Role,
    /// Its recent mean pinball loss over the horizon, in the metric's unit (none until scored
    /// enough).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub loss: Option<f64>,
    /// Its loss over the best baseline's: below 1 it beats every baseline.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vs_best_baseline: Option<f64>,
    /// Whether it forecast at this point.
    pub available: bool,
    /// Why it could not, when it could not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// The gate's choice at a point.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Choice {
    /// The forecaster whose forecast serves.
    pub serving: String,
    pub why: Why,
    /// Every contender, in the gate's order (the policy's forecaster first).
    pub standings: Vec<Standing>,
    /// When the blend serves: what it averages, and with which weights.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub blend: Vec<(String, f64)>,
}

impl Choice {
    /// The serving forecaster's standing.
    pub fn served(&self) -> Option<&Standing> {
        self.standings.iter().find(|s| s.forecaster == self.serving)
    }

    /// Why the policy's own forecaster does not serve when it could not forecast (its error
    /// and who served instead), for the audit's `fallback`; `None` when it served or was only
    /// shadowed.
    pub fn fallback_note(&self) -> Option<String> {
        let primary = self.standings.first()?;
        (primary.forecaster != self.serving).then_some(())?;
        primary.error.as_ref().map(|e| format!("{e}; used {}", self.serving))
    }
}

/// The served forecast (calibrated when the gate calibrates) and why it serves.
#[derive(Debug, Clone, PartialEq)]
pub struct Served {
    pub forecast: Forecast,
    pub choice: Choice,
}

/// The skill gate of one series.
#[derive(Debug, Clone)]
pub struct Gate {
    contenders: Vec<Contender>,
    /// The contender chosen to serve.
    chosen: usize,
    /// Whether the choice follows skill (off: the first contender that can forecast serves).
    switching: bool,
    calibrate: bool,
    /// The forecasts issued at each point, per contender, not yet scored at every step.
    issued: VecDeque<Issued>,
    /// Points observed so far (the index the next point takes).
    points: u64,
    /// The last change of the chosen contender: whom it replaced, at which point.
    changed: Option<(String, u64)>,
    /// The blend's index (the last contender), when the gate switches and has two to blend.
    blend: Option<usize>,
}

impl Gate {
    /// A gate over `contenders` (name, role), in order of preference when none is judged yet;
    /// `first` is chosen until skill says otherwise. With `switching` off the choice never
    /// follows skill (the first contender that can forecast serves), but skill is still kept.
    pub fn new(contenders: &[(String, Role)], first: usize, switching: bool, calibrate: bool) -> Self {
        let contender = |name: &str, role: Role| Contender { name: name.to_string(), role, loss: Vec::new(), scored: Vec::new(), calibration: Calibration::for_forecaster(name) };
        let mut all: Vec<Contender> = contenders.iter().map(|(name, role)| contender(name, *role)).collect();
        let first = if switching { first.min(all.len().saturating_sub(1)) } else { 0 };
        let blend = (switching && all.len() >= 2).then(|| {
            all.push(contender(BLEND, Role::Blend));
            all.len() - 1
        });
        Self { contenders: all, chosen: first, switching, calibrate, issued: VecDeque::new(), points: 0, changed: None, blend }
    }

    /// The names of the contenders `issue` takes forecasts of, in order (the blend is made
    /// by the gate).
    /// Every contender's name, blends too (each may have a skill series in `/metrics`).
    pub fn every_name(&self) -> impl Iterator<Item = &str> {
        self.contenders.iter().map(|c| c.name.as_str())
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.contenders.iter().filter(|c| c.role != Role::Blend).map(|c| c.name.as_str())
    }

    /// Points observed.
    pub fn points(&self) -> u64 {
        self.points
    }

    /// Each contender's forecast at this point (in the gate's order; an error where it could
    /// not forecast): calibrates each on its own errors, remembers them to be scored by the
    /// points to come, and returns the one that serves. `None` when none could forecast.
    /// Issuing twice at one point replaces the first issue.
    pub fn issue(&mut self, raw: Vec<Result<Forecast, ForecastError>>) -> Option<Served> {
        self.reconsider();
        let mut errors: Vec<Option<String>> = Vec::with_capacity(raw.len());
        let mut issued: Vec<Option<Forecast>> = Vec::with_capacity(raw.len());
        for (i, r) in raw.into_iter().enumerate() {
            match r {
                Ok(mut f) => {
                    if let Some(c) = self.contenders.get(i).filter(|_| self.calibrate) {
                        c.calibration.correct(&mut f);
                    }
                    errors.push(None);
                    issued.push(Some(f));
                }
                Err(e) => {
                    errors.push(Some(e.to_string()));
                    issued.push(None);
                }
            }
        }
        let real = self.blend.unwrap_or(self.contenders.len());
        issued.resize(real, None);
        errors.resize(real, Some("not forecast".into()));
        let skills: Vec<Option<f64>> = self.contenders.iter().map(Contender::skill).collect();
        let mut weights = Vec::new();
        if let Some(b) = self.blend {
            match blended(&issued, &skills[..real]) {
                Ok((mut forecast, w)) => {
                    if self.calibrate {
                        self.contenders[b].calibration.correct(&mut forecast);
                    }
                    issued.push(Some(forecast));
                    errors.push(None);
                    weights = w.into_iter().map(|(i, w)| (self.contenders[i].name.clone(), w)).collect();
                }
                Err(e) => {
                    issued.push(None);
                    errors.push(Some(e));
                }
            }
        }
        let serving = if !self.switching {
            issued.iter().position(Option::is_some)
        } else if issued[self.chosen].is_some() {
            Some(self.chosen)
        } else {
            // The best available by skill; unjudged ones after, baselines before the primary.
            let mut available: Vec<usize> = (0..issued.len()).filter(|&i| issued[i].is_some()).collect();
            available.sort_by(|&a, &b| {
                let key = |i: usize| (skills[i].is_none(), skills[i].unwrap_or(0.0), self.contenders[i].role == Role::Primary);
                let (ka, kb) = (key(a), key(b));
                ka.0.cmp(&kb.0).then(ka.1.total_cmp(&kb.1)).then(ka.2.cmp(&kb.2)).then(a.cmp(&b))
            });
            available.first().copied()
        }?;
        let why = if !self.switching {
            if serving == 0 { Why::Fixed } else { Why::StandIn { chosen: self.contenders[0].name.clone(), error: errors[0].clone().unwrap_or_default() } }
        } else if serving != self.chosen {
            Why::StandIn { chosen: self.contenders[self.chosen].name.clone(), error: errors[self.chosen].clone().unwrap_or_default() }
        } else if skills[serving].is_none() {
            Why::Unproven { needed: MIN_SCORED, scored: self.contenders[serving].scored.iter().copied().min().unwrap_or(0) }
        } else {
            Why::BestSkill { replaced: self.changed.as_ref().map(|c| c.0.clone()), since_point: self.changed.as_ref().map(|c| c.1) }
        };
        let best_baseline = self.contenders.iter().zip(&skills).filter(|(c, _)| c.role == Role::Baseline).filter_map(|(_, s)| *s).fold(None, |b: Option<f64>, s| Some(b.map_or(s, |b| b.min(s))));
        let standings = self
            .contenders
            .iter()
            .zip(&skills)
            .zip(&issued)
            .zip(&errors)
            .map(|(((c, skill), f), error)| Standing {
                forecaster: c.name.clone(),
                role: c.role,
                loss: *skill,
                vs_best_baseline: skill.zip(best_baseline).filter(|(_, b)| *b > 0.0).map(|(s, b)| s / b),
                available: f.is_some(),
                error: error.clone(),
            })
            .collect();
        if self.issued.back().is_some_and(|i| i.at == self.points) {
            self.issued.pop_back();
        }
        self.issued.push_back(Issued::new(self.points, &issued));
        let forecast = issued.swap_remove(serving).expect("the serving contender forecast");
        let blend = if Some(serving) == self.blend { weights } else { Vec::new() };
        Some(Served { forecast, choice: Choice { serving: self.contenders[serving].name.clone(), why, standings, blend } })
    }

    /// The next point of the series: scores every remembered forecast that predicted it.
    pub fn observe(&mut self, value: f64) {
        let index = self.points;
        self.points += 1;
        if !value.is_finite() {
            return;
        }
        for issued in &self.issued {
            let h = (index - issued.at) as usize;
            if h >= issued.horizon {
                continue;
            }
            for (c, contender) in self.contenders.iter_mut().enumerate() {
                let band = issued.bands.get(c * issued.horizon + h).copied().unwrap_or([f32::NAN; 3]);
                if band.iter().all(|v| v.is_finite()) {
                    contender.score(h, value, band, self.calibrate);
                }
            }
        }
        let points = self.points;
        self.issued.retain(|i| i.at + i.horizon as u64 > points);
    }

    /// Drops the forecasts waiting for their points (the series was refilled from elsewhere);
    /// what the gate learned stays.
    pub fn forget_issued(&mut self) {
        self.issued.clear();
    }

    /// Moves the choice to the contender with the best skill when it beats the chosen one's
    /// by the margin.
    fn reconsider(&mut self) {
        if !self.switching {
            return;
        }
        let Some((best, best_skill)) = self.contenders.iter().enumerate().filter_map(|(i, c)| c.skill().map(|s| (i, s))).min_by(|a, b| a.1.total_cmp(&b.1)) else {
            return;
        };
        // An unjudged chosen one is judged first (it serves, or the best stands in for it).
        let switch = self.contenders[self.chosen].skill().is_some_and(|chosen| best != self.chosen && best_skill < (1.0 - MARGIN) * chosen);
        if switch {
            self.changed = Some((self.contenders[self.chosen].name.clone(), self.points));
            self.chosen = best;
        }
    }

    /// A contender's recent skill (its mean pinball loss over the horizon), once judged.
    pub fn skill(&self, forecaster: &str) -> Option<f64> {
        self.contenders.iter().find(|c| c.name == forecaster).and_then(Contender::skill)
    }

    /// The contender chosen to serve (it serves whenever it can forecast).
    pub fn chosen(&self) -> &str {
        &self.contenders[self.chosen].name
    }

    /// How a contender's interval is being calibrated.
    pub fn calibration(&self, forecaster: &str) -> Option<&Calibration> {
        self.contenders.iter().find(|c| c.name == forecaster).map(|c| &c.calibration)
    }

    /// The recent p10-p90 coverage of a contender's issued intervals.
    pub fn coverage(&self, forecaster: &str) -> Option<f64> {
        self.contenders.iter().find(|c| c.name == forecaster).and_then(|c| c.calibration.coverage())
    }
}

/// Points of a warm start's history the contenders are rehearsed on: enough to judge them
/// ([`MIN_SCORED`] at every step of a horizon of up to 15) with room to compare, and one
/// batch of the model per series.
pub const REHEARSAL: usize = 4 * MIN_SCORED as usize;

/// The longest season the lineup keeps online, in points (a week of 5-minute points; two of
/// them fit in one Prometheus range query, at most 11,000 points): a longer one (a day of
/// seconds) leaves the seasonal contenders out.
pub const MAX_SEASON: usize = 7 * 288;

/// The blend of the two available contenders with the best skill (weights 1/loss²) and
/// those weights by contender index; why not, when fewer than two are judged.
fn blended(issued: &[Option<Forecast>], skills: &[Option<f64>]) -> Result<(Forecast, Vec<(usize, f64)>), String> {
    let mut judged: Vec<(usize, f64)> = (0..issued.len()).filter(|&i| issued[i].is_some()).filter_map(|i| skills[i].map(|s| (i, s))).collect();
    judged.sort_by(|a, b| a.1.total_cmp(&b.1));
    let [(a, la), (b, lb), ..] = judged[..] else {
        return Err(format!("blends two judged contenders, {} available", judged.len()));
    };
    let inverse = |l: f64| 1.0 / (l * l).max(f64::MIN_POSITIVE);
    let wa = inverse(la) / (inverse(la) + inverse(lb));
    let (fa, fb) = (issued[a].as_ref().expect("available"), issued[b].as_ref().expect("available"));
    let n = fa.predicted.len().min(fb.predicted.len());
    let mix = |x: &[f64], y: &[f64]| (0..n).map(|h| wa * x[h] + (1.0 - wa) * y[h]).collect::<Vec<f64>>();
    let band = |x: &Option<Vec<f64>>, y: &Option<Vec<f64>>, m: &Vec<f64>| Some(mix(x.as_ref().unwrap_or(m), y.as_ref().unwrap_or(m)));
    let forecast = Forecast {
        forecaster: BLEND.into(),
        step_seconds: fa.step_seconds,
        predicted: mix(&fa.predicted, &fb.predicted),
        lower: band(&fa.lower, &fb.lower, &fa.predicted).filter(|_| fa.lower.is_some() || fb.lower.is_some()),
        upper: band(&fa.upper, &fb.upper, &fa.predicted).filter(|_| fa.upper.is_some() || fb.upper.is_some()),
    };
    Ok((forecast, vec![(a, wa), (b, 1.0 - wa)]))
}

/// The contenders of one series in `host run`: the policy's forecaster (its forecast comes
/// from the tick's batch), its fallback and last value on the kept window, and the seasonal
/// baselines kept online. Duplicates by name are left out.
pub struct Lineup {
    fallback: Option<Box<dyn Forecaster>>,
    last_value: bool,
    seasonal: Option<SeasonalBaselines>,
    gate: Gate,
}

impl std::fmt::Debug for Lineup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lineup").field("gate", &self.gate).finish_non_exhaustive()
    }
}

impl Lineup {
    /// With `gate` off, the policy's forecaster serves, its fallback when it cannot, last
    /// value when neither can (and no seasonal baselines are kept).
    pub fn new(primary: &str, fallback: Box<dyn Forecaster>, season: usize, gate: bool, calibrate: bool) -> Self {
        let mut names = vec![(primary.to_string(), Role::Primary)];
        let mut add = |name: &str| {
            let fresh = !names.iter().any(|(n, _)| n == name);
            if fresh {
                names.push((name.to_string(), Role::Baseline));
            }
            fresh
        };
        let fallback = add(fallback.name()).then_some(fallback);
        let last_value = add(LastValue.name());
        let seasonal = (gate && season <= MAX_SEASON).then(|| SeasonalBaselines::new(season));
        if seasonal.is_some() {
            // Both or neither: the primary may be one of them, and is then forecast by the batch.
            add("seasonal-naive");
            add("holt-winters");
        }
        // The fallback is chosen first (a baseline); the primary when it is the only one.
        let first = usize::from(names.len() > 1);
        let gate = Gate::new(&names, first, gate, calibrate);
        Self { fallback, last_value, seasonal, gate }
    }

    /// Points of history the lineup wants at a warm start, for a forecaster that reads
    /// `window` points: what the contenders need before the rehearsal (the window, or two
    /// seasons and a point for Holt-Winters) and the [`REHEARSAL`] itself.
    pub fn history_wanted(&self, window: usize) -> usize {
        self.seasonal.as_ref().map_or(window, |s| (2 * s.season() + 1).max(window)) + REHEARSAL
    }

    /// Takes the next point.
    pub fn observe(&mut self, value: f64) {
        self.gate.observe(value);
        if let Some(s) = &mut self.seasonal {
            s.push(value);
        }
    }

    /// The series was refilled (a warm start) with `values`, oldest first: the seasonal
    /// baselines start from them, and the contenders are rehearsed on the newest
    /// [`REHEARSAL`] of them (as if the gate had run there), so that a restart does not shadow
    /// a model that the series' recent past already judges. `primary` forecasts the policy's
    /// forecaster at those points from windows of `window` (one batch); without it (a
    /// forecaster that reads several metrics together) only the seasonal history is refilled.
    pub fn refilled(&mut self, values: &[f64], primary: Option<&dyn Forecaster>, window: usize, horizon: usize, step_seconds: u32) {
        self.gate.forget_issued();
        let values: Vec<f64> = values.iter().copied().filter(|v| v.is_finite()).collect();
        let needed = primary.map_or(1, Forecaster::min_history).max(window).max(1);
        let start = values.len().saturating_sub(REHEARSAL).max(needed.min(values.len()));
        if let Some(s) = &mut self.seasonal {
            s.clear();
            values[..start].iter().for_each(|v| s.push(*v));
        }
        let Some(primary) = primary else {
            if let Some(s) = &mut self.seasonal {
                values[start..].iter().for_each(|v| s.push(*v));
            }
            return;
        };
        let origins = start..values.len();
        let used = primary.history_used(step_seconds).max(window);
        let rows: Vec<super::Row<'_>> = origins.clone().map(|t| vec![&values[t.saturating_sub(used)..t]]).collect();
        let forecasts = primary.forecast_batch(&rows, horizon, step_seconds);
        for (t, forecast) in origins.zip(forecasts) {
            let forecast = forecast.map(|mut channels| channels.swap_remove(0));
            self.issue(forecast, &values[t.saturating_sub(window)..t], horizon, step_seconds);
            self.observe(values[t]);
        }
    }

    /// Every contender's forecast at this point (the primary's given) and the one that serves.
    pub fn issue(&mut self, primary: Result<Forecast, ForecastError>, history: &[f64], horizon: usize, step_seconds: u32) -> Option<Served> {
        let mut raw = Vec::with_capacity(self.gate.contenders.len());
        raw.push(primary);
        for contender in self.gate.contenders.iter().skip(1).filter(|c| c.role != Role::Blend) {
            let name = contender.name.as_str();
            raw.push(match name {
                n if self.fallback.as_ref().is_some_and(|f| f.name() == n) => self.fallback.as_ref().expect("checked").forecast(history, horizon, step_seconds),
                "last-value" if self.last_value => LastValue.forecast(history, horizon, step_seconds),
                "seasonal-naive" => self.seasonal.as_ref().map_or_else(|| Err(ForecastError::too_short(name, 1, 0)), |s| s.seasonal_naive(horizon, step_seconds)),
                "holt-winters" => self.seasonal.as_ref().map_or_else(|| Err(ForecastError::too_short(name, 1, 0)), |s| s.holt_winters(horizon, step_seconds)),
                _ => Err(ForecastError::Failed { forecaster: name.to_string(), reason: "not a contender".into() }),
            });
        }
        self.gate.issue(raw)
    }

    pub fn gate(&self) -> &Gate {
        &self.gate
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn forecast(name: &str, median: f64, spread: f64, horizon: usize) -> Forecast {
        Forecast { forecaster: name.into(), step_seconds: 60, predicted: vec![median; horizon], lower: Some(vec![median - spread; horizon]), upper: Some(vec![median + spread; horizon]) }
    }

    fn noise(seed: &mut u64) -> f64 {
        *seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        ((*seed >> 11) as f64 / (1u64 << 53) as f64) * 2.0 - 1.0
    }

    const H: usize = 3;

    fn gate() -> Gate {
        Gate::new(&[("model:m".into(), Role::Primary), ("holt-damped".into(), Role::Baseline), ("last-value".into(), Role::Baseline)], 1, true, true)
    }

    /// Runs `points` of a series that is 100 plus noise of half-width 5; the model forecasts
    /// `model_at(i)` and both baselines 100 +- their error. Returns who served at each point.
    fn run(gate: &mut Gate, points: usize, model_at: impl Fn(usize) -> f64) -> Vec<Served> {
        let mut seed = 11u64;
        let mut served = Vec::new();
        for i in 0..points {
            let raw = vec![Ok(forecast("model:m", model_at(i), 5.0, H)), Ok(forecast("holt-damped", 103.0, 5.0, H)), Ok(forecast("last-value", 104.0, 5.0, H))];
            served.push(gate.issue(raw).unwrap());
            gate.observe(100.0 + 5.0 * noise(&mut seed));
        }
        served
    }

    #[test]
    fn a_model_is_shadowed_until_it_beats_the_baselines_then_promoted() {
        let mut g = gate();
        // The model is right (100), the baselines 3 and 4 off.
        let served = run(&mut g, 400, |_| 100.0);
        let first = &served[0];
        assert_eq!(first.choice.serving, "holt-damped", "the fallback serves first");
        assert!(matches!(first.choice.why, Why::Unproven { .. }), "{:?}", first.choice.why);
        assert!(first.choice.standings.iter().all(|s| s.loss.is_none()));
        // Shadowed for at least MIN_SCORED points and the horizon.
        let promoted = served.iter().position(|s| s.choice.serving == "model:m").expect("promoted");
        assert!(promoted >= MIN_SCORED as usize + H - 1 && promoted < 100, "promoted at point {promoted}");
        assert!(served[promoted..].iter().all(|s| s.choice.serving == "model:m"), "and it stays");
        let last = served.last().unwrap();
        assert_eq!(last.choice.why, Why::BestSkill { replaced: Some("holt-damped".into()), since_point: Some(promoted as u64) });
        let model = last.choice.served().unwrap();
        assert!(model.vs_best_baseline.unwrap() < 0.9, "{model:?}");
        assert_eq!(last.forecast.forecaster, "model:m");
    }

    #[test]
    fn a_model_that_loses_is_never_promoted_and_one_that_decays_is_demoted() {
        // Always 8 off: worse than both baselines.
        let mut g = gate();
        let served = run(&mut g, 400, |_| 108.0);
        assert!(served.iter().all(|s| s.choice.serving != "model:m"), "a losing model is never served");
        let standing = served.last().unwrap().choice.standings[0].clone();
        assert!(standing.vs_best_baseline.unwrap() > 1.2, "{standing:?}");
        // Good for 400 points, then 10 off: demoted within a few hundred points.
        let mut g = gate();
        let served = run(&mut g, 1200, |i| if i < 400 { 100.0 } else { 110.0 });
        assert_eq!(served[399].choice.serving, "model:m");
        let demoted = served[400..].iter().position(|s| s.choice.serving != "model:m").expect("demoted") + 400;
        assert!(demoted < 700, "demoted at point {demoted}");
        assert_eq!(served[demoted].choice.why, Why::BestSkill { replaced: Some("model:m".into()), since_point: Some(demoted as u64) });
        assert!(served[demoted..].iter().all(|s| ["holt-damped", BLEND].contains(&s.choice.serving.as_str())), "the better baseline, or its blend with the next");
    }

    /// Two unbiased contenders with independent errors: their blend has less error than
    /// either, is judged like the others, and serves with its weights said.
    #[test]
    fn the_blend_of_two_with_independent_errors_serves_when_it_is_better() {
        let mut g = Gate::new(&[("model:m".into(), Role::Primary), ("last-value".into(), Role::Baseline)], 1, true, true);
        let (mut seed, mut last) = (3u64, None);
        for _ in 0..1500 {
            let y = 100.0 + 2.0 * noise(&mut seed);
            // Each is the truth plus its own noise of half-width 6.
            let a = y + 6.0 * noise(&mut seed);
            let b = y + 6.0 * noise(&mut seed);
            let raw = vec![Ok(forecast("model:m", a, 5.0, 1)), Ok(forecast("last-value", b, 5.0, 1))];
            last = g.issue(raw);
            g.observe(y);
        }
        let last = last.unwrap();
        assert_eq!(last.choice.serving, BLEND, "{:?}", last.choice);
        assert_eq!(last.choice.blend.len(), 2);
        assert!(last.choice.blend.iter().all(|(_, w)| (0.3..0.7).contains(w)), "near-equal skill, near-equal weights: {:?}", last.choice.blend);
        let blend = last.choice.standings.iter().find(|s| s.role == Role::Blend).unwrap();
        assert!(blend.vs_best_baseline.unwrap() < 0.9, "{blend:?}");
    }

    #[test]
    fn near_equal_contenders_do_not_take_turns() {
        let mut g = Gate::new(&[("a".into(), Role::Primary), ("b".into(), Role::Baseline)], 1, true, true);
        let mut seed = 5u64;
        let mut changes = 0;
        let mut last = String::new();
        for i in 0..3000 {
            // Both unbiased, one a hair noisier: within the margin of each other.
            let y = 100.0 + 5.0 * noise(&mut seed);
            let raw = vec![Ok(forecast("a", 100.0 + 0.1 * noise(&mut seed), 4.0, H)), Ok(forecast("b", 100.0, 4.0, H))];
            let s = g.issue(raw).unwrap();
            if i > 0 && s.choice.serving != last {
                changes += 1;
            }
            last = s.choice.serving;
            g.observe(y);
        }
        assert!(changes <= 1, "{changes} changes");
    }

    #[test]
    fn one_that_cannot_forecast_is_stood_in_for_and_the_gate_off_keeps_the_primary() {
        let mut g = gate();
        run(&mut g, 200, |_| 100.0);
        assert_eq!(g.chosen(), "model:m");
        let raw = vec![Err(ForecastError::too_short("model:m", 60, 3)), Ok(forecast("holt-damped", 103.0, 5.0, H)), Ok(forecast("last-value", 104.0, 5.0, H))];
        let s = g.issue(raw).unwrap();
        assert!(["holt-damped", BLEND].contains(&s.choice.serving.as_str()), "the better baseline (or the blend of the two available) stands in: {}", s.choice.serving);
        assert!(matches!(&s.choice.why, Why::StandIn { chosen, error } if chosen == "model:m" && error.contains("60 points")), "{:?}", s.choice.why);
        assert!(!s.choice.standings[0].available);

        let mut off = Gate::new(&[("model:m".into(), Role::Primary), ("holt-damped".into(), Role::Baseline)], 1, false, true);
        let served = (0..300)
            .map(|_| {
                let s = off.issue(vec![Ok(forecast("model:m", 120.0, 5.0, H)), Ok(forecast("holt-damped", 100.0, 5.0, H))]).unwrap();
                off.observe(100.0);
                s
            })
            .collect::<Vec<_>>();
        assert!(served.iter().all(|s| s.choice.serving == "model:m" && s.choice.why == Why::Fixed), "the gate off never switches");
        assert!(served.last().unwrap().choice.standings[0].vs_best_baseline.unwrap() > 1.0, "but the skill is still kept");
        assert!(off.issue(vec![Err(ForecastError::too_short("model:m", 60, 3)), Err(ForecastError::too_short("holt-damped", 3, 1))]).is_none());
    }

    #[test]
    fn the_lineup_scores_the_seasonal_baselines_online() {
        let m = 20;
        let mut lineup = Lineup::new("model:m", Box::new(crate::forecast::HoltDamped::default()), m, true, true);
        assert_eq!(lineup.gate().names().collect::<Vec<_>>(), ["model:m", "holt-damped", "last-value", "seasonal-naive", "holt-winters"]);
        assert_eq!(lineup.history_wanted(60), (2 * m + 1).max(60) + REHEARSAL);
        assert_eq!(lineup.history_wanted(30), 2 * m + 1 + REHEARSAL);
        // A pure season: seasonal naive is exact, and wins once judged.
        let y = |t: usize| 100.0 + 30.0 * ((t % m) as f64 / m as f64 * std::f64::consts::TAU).sin();
        let mut history = Vec::new();
        let mut last = None;
        for t in 0..600 {
            history.push(y(t));
            lineup.observe(y(t));
            let window = &history[history.len().saturating_sub(30)..];
            last = lineup.issue(Err(ForecastError::too_short("model:m", 60, 0)), window, H, 60);
        }
        let last = last.unwrap();
        assert!(["seasonal-naive", "holt-winters"].contains(&last.choice.serving.as_str()), "{:?}", last.choice);
        // A warm start's history judges the contenders at once: here the primary is linear
        // trend on a ramp, which it extrapolates exactly.
        let mut warm = Lineup::new("linear-trend", Box::new(crate::forecast::HoltDamped::default()), m, true, true);
        let ramp: Vec<f64> = (0..400).map(|t| 10.0 + 0.5 * f64::from(t)).collect();
        warm.refilled(&ramp, Some(&crate::forecast::LinearTrend), 20, H, 60);
        let next = warm.issue(crate::forecast::LinearTrend.forecast(&ramp[380..], H, 60), &ramp[380..], H, 60).unwrap();
        assert_eq!(next.choice.serving, "linear-trend", "{:?}", next.choice);
        assert_eq!(warm.gate().points(), REHEARSAL as u64, "rehearsed on the newest {REHEARSAL} points");
        let lineup_off = Lineup::new("holt-damped", Box::new(crate::forecast::HoltDamped::default()), m, false, true);
        assert_eq!(lineup_off.gate().names().collect::<Vec<_>>(), ["holt-damped", "last-value"], "the fallback is the primary: one of them");
        assert_eq!(lineup_off.history_wanted(60), 60 + REHEARSAL);
    }
}
