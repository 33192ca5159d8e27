//! The built-in statistical forecasters: last value, linear trend, and Holt's damped trend
//! (double exponential smoothing with a damped trend, fitted by a small grid search on the
//! window). Each gives a p10-p90 interval from its in-sample one-step errors.

use super::{ForecastError, Forecaster, finite, rms, with_interval};
use crate::domain::Forecast;

/// Repeats the last value; the interval comes from the spread of one-step changes.
#[derive(Debug, Clone, Copy, Default)]
pub struct LastValue;

impl Forecaster for LastValue {
    fn name(&self) -> &str {
        "last-value"
    }

    fn forecast(&self, history: &[f64], horizon: usize, step_seconds: u32) -> Result<Forecast, ForecastError> {
        let Some(&last) = history.last() else {
            return Err(ForecastError::too_short(self.name(), 1, 0));
        };
        let errors: Vec<f64> = history.windows(2).map(|w| w[1] - w[0]).collect();
        finite(with_interval(self.name(), vec![last; horizon], rms(&errors), step_seconds))
    }
}

/// Least-squares line through the window, extended.
#[derive(Debug, Clone, Copy, Default)]
pub struct LinearTrend;

impl Forecaster for LinearTrend {
    fn name(&self) -> &str {
        "linear-trend"
    }

    fn forecast(&self, history: &[f64], horizon: usize, step_seconds: u32) -> Result<Forecast, ForecastError> {
        let n = history.len();
        if n < 2 {
            return Err(ForecastError::too_short(self.name(), 2, n));
        }
        let mean_x = (n - 1) as f64 / 2.0;
        let mean_y = history.iter().sum::<f64>() / n as f64;
        let (mut sxy, mut sxx) = (0.0, 0.0);
        for (i, y) in history.iter().enumerate() {
            let dx = i as f64 - mean_x;
            sxy += dx * (y - mean_y);
            sxx += dx * dx;
        }
        let slope = sxy / sxx;
        let at = |x: f64| mean_y + slope * (x - mean_x);
        let residuals: Vec<f64> = history.iter().enumerate().map(|(i, y)| y - at(i as f64)).collect();
        let predicted = (0..horizon).map(|h| at((n + h) as f64)).collect();
        finite(with_interval(self.name(), predicted, rms(&residuals), step_seconds))
    }
}

/// Holt's linear method with a damped trend (Gardner & McKenzie), the usual first choice for
/// short-horizon demand with trends that do not last for ever.
#[derive(Debug, Clone, Copy)]
pub struct HoltDamped {
    /// Trend damping per step, 0 < phi <= 1.
    pub phi: f64,
}

impl Default for HoltDamped {
    fn default() -> Self {
        Self { phi: 0.9 }
    }
}

const ALPHAS: [f64; 4] = [0.2, 0.4, 0.6, 0.8];
const BETAS: [f64; 3] = [0.05, 0.2, 0.4];

struct Fit {
    level: f64,
    trend: f64,
    sse: f64,
    count: usize,
}

impl HoltDamped {
    fn fit(&self, history: &[f64], alpha: f64, beta: f64) -> Fit {
        let mut level = history[0];
        let mut trend = history[1] - history[0];
        let (mut sse, mut count) = (0.0, 0);
        for &y in &history[1..] {
            let predicted = level + self.phi * trend;
            sse += (y - predicted).powi(2);
            count += 1;
            let previous = level;
            level = alpha * y + (1.0 - alpha) * predicted;
            trend = beta * (level - previous) + (1.0 - beta) * self.phi * trend;
        }
        Fit { level, trend, sse, count }
    }
}

impl Forecaster for HoltDamped {
    fn name(&self) -> &str {
        "holt-damped"
    }

    fn forecast(&self, history: &[f64], horizon: usize, step_seconds: u32) -> Result<Forecast, ForecastError> {
        if history.len() < 3 {
            return Err(ForecastError::too_short(self.name(), 3, history.len()));
        }
        let best = ALPHAS
            .iter()
            .flat_map(|&a| BETAS.iter().map(move |&b| (a, b)))
            .map(|(a, b)| self.fit(history, a, b))
            .min_by(|x, y| x.sse.total_cmp(&y.sse))
            .expect("the grid is not empty");
        let mut damping = 0.0;
        let mut phi_h = 1.0;
        let predicted = (0..horizon)
            .map(|_| {
                phi_h *= self.phi;
                damping += phi_h;
                best.level + damping * best.trend
            })
            .collect();
        let sigma = (best.sse / best.count as f64).sqrt();
        finite(with_interval(self.name(), predicted, sigma, step_seconds))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn last_value_repeats_with_a_widening_interval() {
        let f = LastValue.forecast(&[1.0, 2.0, 1.0, 2.0], 3, 60).unwrap();
        assert_eq!(f.predicted, vec![2.0, 2.0, 2.0]);
        let upper = f.upper.unwrap();
        assert!(upper[0] > 2.0 && upper[2] > upper[0]);
    }

    #[test]
    fn linear_trend_extends_a_line_exactly() {
        let f = LinearTrend.forecast(&[1.0, 2.0, 3.0, 4.0], 2, 60).unwrap();
        assert!((f.predicted[0] - 5.0).abs() < 1e-12 && (f.predicted[1] - 6.0).abs() < 1e-12);
        // A perfect fit has no spread.
        assert_eq!(f.upper.unwrap()[0], f.predicted[0]);
    }

    #[test]
    fn holt_damped_follows_a_ramp_but_flattens() {
        let ramp: Vec<f64> = (0..20).map(|i| 10.0 + 2.0 * i as f64).collect();
        let f = HoltDamped::default().forecast(&ramp, 5, 60).unwrap();
        assert!(f.predicted[0] > 48.0, "{:?}", f.predicted);
        let steps: Vec<f64> = f.predicted.windows(2).map(|w| w[1] - w[0]).collect();
        assert!(steps.windows(2).all(|w| w[1] < w[0]), "the trend must damp: {steps:?}");
        assert!(f.predicted[4] < 48.0 + 5.0 * 2.0);
    }

    #[test]
    fn holt_damped_on_a_flat_series_is_flat() {
        let f = HoltDamped::default().forecast(&[5.0; 10], 4, 60).unwrap();
        assert!(f.predicted.iter().all(|v| (v - 5.0).abs() < 1e-9));
    }

    #[test]
    fn too_short_and_not_finite_are_errors() {
        assert!(matches!(HoltDamped::default().forecast(&[1.0, 2.0], 3, 60), Err(ForecastError::TooShort { needed: 3, .. })));
        assert!(matches!(LastValue.forecast(&[1.0, f64::INFINITY], 2, 60), Err(ForecastError::NotFinite { .. })));
    }
}
