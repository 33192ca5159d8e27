//! A tick's forecasts: every due policy's rows, one `forecast_batch` call per forecaster and
//! horizon, so that policies naming the same model share one inference.
//!
//! Forecasting only reads the histories; it never assesses, decides or records.

use super::PolicyRuntime;
use crate::forecast::{ForecastError, Forecaster, Row};
use crate::domain::Forecast;
use std::collections::BTreeMap;
use std::sync::Arc;

/// The forecasts of one policy's tick, by metric.
pub type Forecasts = BTreeMap<String, Result<Forecast, ForecastError>>;

/// Forecasts the rows of every listed policy (`ready` indexes `policies`); the result has one
/// entry per listed policy, in order.
pub fn forecast_all(policies: &[PolicyRuntime], ready: &[usize]) -> Vec<Forecasts> {
    /// (forecaster identity, horizon, step) -> the forecaster and its (slot, metrics) rows.
    type Groups = BTreeMap<(usize, usize, u32), (Arc<dyn Forecaster>, Vec<(usize, Vec<String>)>)>;
    let mut groups = Groups::new();
    for (slot, &i) in ready.iter().enumerate() {
        let runtime = &policies[i];
        let spec = &runtime.policy.forecast;
        let key = (Arc::as_ptr(&runtime.forecaster) as *const () as usize, spec.horizon, spec.step.as_secs() as u32);
        let entry = groups.entry(key).or_insert_with(|| (runtime.forecaster.clone(), Vec::new()));
        entry.1.extend(runtime.forecast_rows().into_iter().map(|metrics| (slot, metrics)));
    }
    let mut out: Vec<Forecasts> = vec![Forecasts::new(); ready.len()];
    for ((_, horizon, step), (forecaster, jobs)) in groups {
        let rows: Vec<Row<'_>> = jobs.iter().map(|(slot, metrics)| metrics.iter().map(|m| policies[ready[*slot]].history(m)).collect()).collect();
        let results = forecaster.forecast_batch(&rows, horizon, step);
        for ((slot, metrics), result) in jobs.into_iter().zip(results) {
            match result {
                Ok(channels) => out[slot].extend(metrics.into_iter().zip(channels.into_iter().map(Ok))),
                Err(e) => out[slot].extend(metrics.into_iter().map(|m| (m, Err(e.clone())))),
            }
        }
    }
    out
}
