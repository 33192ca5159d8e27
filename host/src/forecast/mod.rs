//! Forecasting: turns a metric's history into predicted values with an interval.
//!
//! `Forecaster` is the seam: the built-in statistical forecasters live in `baseline.rs`; the
//! ONNX models arrive behind the same trait. `forecast_batch` exists so that a model can
//! batch all workloads of a tick in one inference. Forecasters never see the cluster or
//! the plugins.

mod baseline;

pub use baseline::{HoltDamped, LastValue, LinearTrend};

use crate::config::Baseline;
use crate::domain::Forecast;

/// z for the 10th/90th percentile of a normal distribution.
pub const Z_P90: f64 = 1.281_551_565_545;

/// Why a forecaster gave no forecast.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ForecastError {
    #[error("{forecaster} needs at least {needed} points of history, has {have}")]
    TooShort { forecaster: &'static str, needed: usize, have: usize },
    #[error("{forecaster} produced a value that is not finite")]
    NotFinite { forecaster: &'static str },
}

/// Predicts `horizon` points after the end of a history.
pub trait Forecaster: Send + Sync {
    /// The name recorded in the audit log and passed to plugins.
    fn name(&self) -> &'static str;

    /// Forecasts one series; `step_seconds` is carried into the result.
    fn forecast(&self, history: &[f64], horizon: usize, step_seconds: u32) -> Result<Forecast, ForecastError>;

    /// Forecasts many series at once. Models override this to batch inference.
    fn forecast_batch(&self, histories: &[&[f64]], horizon: usize, step_seconds: u32) -> Vec<Result<Forecast, ForecastError>> {
        histories.iter().map(|h| self.forecast(h, horizon, step_seconds)).collect()
    }
}

/// The forecaster for a baseline named in a policy.
pub fn baseline(which: Baseline) -> Box<dyn Forecaster> {
    match which {
        Baseline::LastValue => Box::new(LastValue),
        Baseline::LinearTrend => Box::new(LinearTrend),
        Baseline::HoltDamped => Box::new(HoltDamped::default()),
    }
}

/// Rejects a forecast with any value that is not finite.
pub(crate) fn finite(forecast: Forecast, forecaster: &'static str) -> Result<Forecast, ForecastError> {
    let all = forecast.predicted.iter().chain(forecast.lower.iter().flatten()).chain(forecast.upper.iter().flatten());
    if all.clone().all(|v| v.is_finite()) { Ok(forecast) } else { Err(ForecastError::NotFinite { forecaster }) }
}

/// A forecast with a normal interval of `sigma * sqrt(h)` around `predicted`; demand does not
/// go below zero.
pub(crate) fn with_interval(forecaster: &str, predicted: Vec<f64>, sigma: f64, step_seconds: u32) -> Forecast {
    let spread = |h: usize| Z_P90 * sigma * ((h + 1) as f64).sqrt();
    let lower = predicted.iter().enumerate().map(|(h, v)| (v - spread(h)).max(0.0)).collect();
    let upper = predicted.iter().enumerate().map(|(h, v)| v + spread(h)).collect();
    let predicted = predicted.into_iter().map(|v| v.max(0.0)).collect();
    Forecast { forecaster: forecaster.to_string(), step_seconds, predicted, lower: Some(lower), upper: Some(upper) }
}
