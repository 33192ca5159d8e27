//! Forecasting: turns a metric's history into predicted values with a p10-p90 interval.
//!
//! `Forecaster` is the seam. The statistical forecasters live in `baseline.rs` and
//! `seasonal.rs`; trained ONNX models (`model.rs`) sit behind the same trait and override
//! `forecast_batch`, so that one inference serves every workload of a tick. Forecasters never
//! see the cluster or the plugins.

mod baseline;
pub mod calibration;
pub mod gate;
pub mod model;
mod online;
mod seasonal;

pub use baseline::{HoltDamped, LastValue, LinearTrend};
pub use model::OnnxModel;
pub use online::SeasonalBaselines;
pub use seasonal::{HoltWinters, HwParams, HwState, SeasonalNaive, carry_forward};

use crate::config::Baseline;
use crate::domain::Forecast;

/// z for the 10th/90th percentile of a normal distribution.
pub const Z_P90: f64 = 1.281_551_565_545;

/// Why a forecaster gave no forecast.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ForecastError {
    #[error("{forecaster} needs at least {needed} points of history, has {have}")]
    TooShort { forecaster: String, needed: usize, have: usize },
    #[error("{forecaster} produced a value that is not finite")]
    NotFinite { forecaster: String },
    #[error("{forecaster} failed: {reason}")]
    Failed { forecaster: String, reason: String },
}

impl ForecastError {
    pub fn too_short(forecaster: &str, needed: usize, have: usize) -> Self {
        Self::TooShort { forecaster: forecaster.to_string(), needed, have }
    }
}

/// One row of a batch: the histories of the channels forecast together (one for a
/// univariate forecaster), oldest value first.
pub type Row<'a> = Vec<&'a [f64]>;

/// Predicts `horizon` points after the end of a history.
pub trait Forecaster: Send + Sync {
    /// The name recorded in the audit log and passed to plugins.
    fn name(&self) -> &str;

    /// Points of history needed before it can forecast; the engine falls back until then.
    fn min_history(&self) -> usize {
        1
    }

    /// Points of history it reads at `step_seconds` when they are there (a model's seasonal
    /// context reaches a day or a week back): the engine keeps and warm-starts that many.
    fn history_used(&self, _step_seconds: u32) -> usize {
        self.min_history()
    }

    /// The metrics a joint (multi-channel) model reads together, in its input order; `None`
    /// for forecasters that take one metric at a time.
    fn joint_inputs(&self) -> Option<&[String]> {
        None
    }

    /// Forecasts one series; `step_seconds` is carried into the result.
    fn forecast(&self, history: &[f64], horizon: usize, step_seconds: u32) -> Result<Forecast, ForecastError>;

    /// Forecasts many rows at once, one result per row holding one forecast per channel.
    /// Models override this to batch inference.
    fn forecast_batch(&self, rows: &[Row<'_>], horizon: usize, step_seconds: u32) -> Vec<Result<Vec<Forecast>, ForecastError>> {
        rows.iter().map(|row| row.iter().map(|h| self.forecast(h, horizon, step_seconds)).collect()).collect()
    }
}

/// The forecaster for a baseline named in a policy; `season` is in points.
pub fn baseline(which: Baseline, season: usize) -> Box<dyn Forecaster> {
    match which {
        Baseline::LastValue => Box::new(LastValue),
        Baseline::LinearTrend => Box::new(LinearTrend),
        Baseline::HoltDamped => Box::new(HoltDamped::default()),
        Baseline::SeasonalNaive => Box::new(SeasonalNaive { season }),
        Baseline::HoltWinters => Box::new(HoltWinters { season }),
    }
}

/// Rejects a forecast with any value that is not finite.
pub(crate) fn finite(forecast: Forecast) -> Result<Forecast, ForecastError> {
    let all = forecast.predicted.iter().chain(forecast.lower.iter().flatten()).chain(forecast.upper.iter().flatten());
    if all.clone().all(|v| v.is_finite()) { Ok(forecast) } else { Err(ForecastError::NotFinite { forecaster: forecast.forecaster }) }
}

/// A forecast with a normal interval of `sigma * sqrt(h)` around `predicted`; the metrics
/// Augur watches (demand, usage, temperature) do not go below zero.
pub(crate) fn with_interval(forecaster: &str, predicted: Vec<f64>, sigma: f64, step_seconds: u32) -> Forecast {
    let spread = |h: usize| Z_P90 * sigma * ((h + 1) as f64).sqrt();
    let lower = predicted.iter().enumerate().map(|(h, v)| (v - spread(h)).max(0.0)).collect();
    let upper = predicted.iter().enumerate().map(|(h, v)| v + spread(h)).collect();
    let predicted = predicted.into_iter().map(|v| v.max(0.0)).collect();
    Forecast { forecaster: forecaster.to_string(), step_seconds, predicted, lower: Some(lower), upper: Some(upper) }
}

/// The median, reordering `values`; `None` when there are none.
pub fn median(values: &mut [f64]) -> Option<f64> {
    let n = values.len();
    if n == 0 {
        return None;
    }
    let mid = n / 2;
    let (_, upper, _) = values.select_nth_unstable_by(mid, f64::total_cmp);
    let upper = *upper;
    if n % 2 == 1 {
        Some(upper)
    } else {
        let lower = values[..mid].iter().copied().fold(f64::NEG_INFINITY, f64::max);
        Some((lower + upper) / 2.0)
    }
}

pub(crate) fn rms(values: &[f64]) -> f64 {
    if values.is_empty() { 0.0 } else { (values.iter().map(|v| v * v).sum::<f64>() / values.len() as f64).sqrt() }
}
