//! Seasonal forecasters: seasonal naive (the value one season ago) and additive Holt-Winters
//! with a damped trend (the forecaster the predictive-horizontal-pod-autoscaler peer uses).
//! Both need whole seasons of history; the season is a number of points (a day of minutes
//! is 1,440).

use super::{ForecastError, Forecaster, Z_P90, finite};
use crate::domain::Forecast;

/// Repeats the last season: the forecast for `t + h` is the value at `t + h - season`.
#[derive(Debug, Clone, Copy)]
pub struct SeasonalNaive {
    pub season: usize,
}

impl Forecaster for SeasonalNaive {
    fn name(&self) -> &str {
        "seasonal-naive"
    }

    fn min_history(&self) -> usize {
        self.season + 1
    }

    fn forecast(&self, history: &[f64], horizon: usize, step_seconds: u32) -> Result<Forecast, ForecastError> {
        let (n, m) = (history.len(), self.season);
        if n < m + 1 {
            return Err(ForecastError::too_short(self.name(), m + 1, n));
        }
        // The forecast for h steps ahead is the value (ceil(h/m)) seasons back.
        let predicted: Vec<f64> = (0..horizon).map(|h| history[n - m + h % m]).collect();
        let errors: Vec<f64> = (m..n).map(|t| history[t] - history[t - m]).collect();
        let sigma = super::rms(&errors);
        let lower = predicted.iter().enumerate().map(|(h, v)| (v - Z_P90 * sigma * ((h / m + 1) as f64).sqrt()).max(0.0)).collect();
        let upper = predicted.iter().enumerate().map(|(h, v)| v + Z_P90 * sigma * ((h / m + 1) as f64).sqrt()).collect();
        finite(Forecast { forecaster: self.name().into(), step_seconds, predicted, lower: Some(lower), upper: Some(upper) })
    }
}

/// Additive Holt-Winters with a damped trend. Smoothing parameters are fitted on the history by
/// a grid search on one-step squared error; the interval is normal with the one-step error
/// growing as sqrt(h).
#[derive(Debug, Clone, Copy)]
pub struct HoltWinters {
    pub season: usize,
}

/// Smoothing parameters: level, trend, season, trend damping.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct HwParams {
    pub alpha: f64,
    pub beta: f64,
    pub gamma: f64,
    pub phi: f64,
}

/// The filter's state after some observations.
#[derive(Debug, Clone)]
pub struct HwState {
    pub level: f64,
    pub trend: f64,
    /// One entry per position in the season; `seasonal[t % m]` belongs to time `t`.
    pub seasonal: Vec<f64>,
    /// Index of the next observation.
    pub t: usize,
}

const ALPHAS: [f64; 5] = [0.1, 0.3, 0.5, 0.7, 0.9];
const BETAS: [f64; 2] = [0.01, 0.1];
const GAMMAS: [f64; 3] = [0.05, 0.2, 0.5];
const PHI: f64 = 0.98;

impl HwState {
    /// Initial state from the first two seasons: level is the first season's mean, trend the
    /// change of the mean per point, seasonal indices the first season's deviations.
    pub fn init(y: &[f64], m: usize) -> Self {
        let mean = |s: &[f64]| s.iter().sum::<f64>() / s.len() as f64;
        let (first, second) = (mean(&y[..m]), mean(&y[m..2 * m]));
        let seasonal = y[..m].iter().map(|v| v - first).collect();
        Self { level: first, trend: (second - first) / m as f64, seasonal, t: m }
    }

    /// The forecast `h` (1-based) steps after the last observation.
    pub fn predict(&self, p: &HwParams, h: usize) -> f64 {
        let m = self.seasonal.len();
        let damping: f64 = (1..=h).map(|i| p.phi.powi(i as i32)).sum();
        self.level + damping * self.trend + self.seasonal[(self.t + h - 1) % m]
    }

    /// Takes one observation; `None` (no data) carries the state forward on its own forecast.
    /// Returns the one-step error when there was an observation.
    pub fn update(&mut self, p: &HwParams, y: Option<f64>) -> Option<f64> {
        let m = self.seasonal.len();
        let idx = self.t % m;
        let predicted = self.predict(p, 1);
        let y_used = y.unwrap_or(predicted);
        let previous = self.level;
        let season = self.seasonal[idx];
        self.level = p.alpha * (y_used - season) + (1.0 - p.alpha) * (previous + p.phi * self.trend);
        self.trend = p.beta * (self.level - previous) + (1.0 - p.beta) * p.phi * self.trend;
        self.seasonal[idx] = p.gamma * (y_used - self.level) + (1.0 - p.gamma) * season;
        self.t += 1;
        y.map(|y| y - predicted)
    }
}

/// The values with each gap filled by the last value before it (the first must be present).
pub fn carry_forward(y: &[Option<f64>]) -> Vec<f64> {
    let mut last = 0.0;
    y.iter()
        .map(|v| {
            last = v.unwrap_or(last);
            last
        })
        .collect()
}

impl HoltWinters {
    /// Fits the smoothing parameters on `y` (observations, `None` where there is no data) and
    /// returns them with the state after the last observation and the one-step RMS error.
    pub fn fit(&self, y: &[Option<f64>]) -> Result<(HwParams, HwState, f64), ForecastError> {
        let m = self.season;
        let needed = 2 * m + 1;
        if y.len() < needed || y[0].is_none() {
            return Err(ForecastError::too_short(self.name(), needed, y.iter().flatten().count()));
        }
        let start = HwState::init(&carry_forward(&y[..2 * m]), m);
        let mut best: Option<(HwParams, HwState, f64)> = None;
        for alpha in ALPHAS {
            for beta in BETAS {
                for gamma in GAMMAS {
                    let p = HwParams { alpha, beta, gamma, phi: PHI };
                    let mut state = start.clone();
                    let (mut sse, mut count) = (0.0, 0usize);
                    for v in &y[m..] {
                        if let Some(e) = state.update(&p, *v) {
                            sse += e * e;
                            count += 1;
                        }
                    }
                    let rms = (sse / count.max(1) as f64).sqrt();
                    if best.as_ref().is_none_or(|b| rms < b.2) {
                        best = Some((p, state, rms));
                    }
                }
            }
        }
        Ok(best.expect("the grid is not empty"))
    }
}

impl Forecaster for HoltWinters {
    fn name(&self) -> &str {
        "holt-winters"
    }

    fn min_history(&self) -> usize {
        2 * self.season + 1
    }

    fn forecast(&self, history: &[f64], horizon: usize, step_seconds: u32) -> Result<Forecast, ForecastError> {
        let observed: Vec<Option<f64>> = history.iter().copied().map(Some).collect();
        let (params, state, sigma) = self.fit(&observed)?;
        let predicted: Vec<f64> = (1..=horizon).map(|h| state.predict(&params, h)).collect();
        finite(super::with_interval(self.name(), predicted, sigma, step_seconds))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wave(n: usize, m: usize) -> Vec<f64> {
        (0..n).map(|t| 100.0 + 0.1 * t as f64 + 20.0 * (2.0 * std::f64::consts::PI * (t % m) as f64 / m as f64).sin()).collect()
    }

    #[test]
    fn seasonal_naive_repeats_the_last_season() {
        let y: Vec<f64> = (0..12).map(|t| (t % 4) as f64).collect();
        let f = SeasonalNaive { season: 4 }.forecast(&y, 6, 60).unwrap();
        assert_eq!(f.predicted, vec![0.0, 1.0, 2.0, 3.0, 0.0, 1.0]);
        // An exactly periodic series has no seasonal error, so no spread.
        assert_eq!(f.upper.unwrap(), f.predicted);
    }

    #[test]
    fn holt_winters_learns_a_seasonal_wave_with_a_trend() {
        let m = 24;
        let y = wave(10 * m, m);
        let f = HoltWinters { season: m }.forecast(&y, m, 60).unwrap();
        let truth = wave(11 * m, m);
        let worst = f.predicted.iter().zip(&truth[10 * m..]).map(|(p, t)| (p - t).abs()).fold(0.0, f64::max);
        // The wave's amplitude is 20; the damped trend gives up a little of the 0.1/step
        // slope over a whole season ahead, on purpose.
        assert!(worst < 3.0, "worst error {worst}: {:?}", f.predicted);
    }

    #[test]
    fn seasonal_forecasters_need_whole_seasons() {
        assert!(matches!(SeasonalNaive { season: 10 }.forecast(&[1.0; 10], 3, 60), Err(ForecastError::TooShort { needed: 11, .. })));
        assert!(matches!(HoltWinters { season: 10 }.forecast(&[1.0; 20], 3, 60), Err(ForecastError::TooShort { needed: 21, .. })));
    }

    #[test]
    fn holt_winters_carries_gaps_on_its_own_forecast() {
        let m = 12;
        let mut y: Vec<Option<f64>> = wave(8 * m, m).into_iter().map(Some).collect();
        for v in &mut y[5 * m..5 * m + 5] {
            *v = None;
        }
        let (params, state, rms) = HoltWinters { season: m }.fit(&y).unwrap();
        assert!(rms < 2.0, "{rms}");
        assert!((state.predict(&params, 1) - wave(8 * m + 1, m)[8 * m]).abs() < 2.0);
    }
}
