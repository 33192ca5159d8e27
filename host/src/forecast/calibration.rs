//! Online calibration of a forecaster's p10-p90 interval, per horizon step and per series.
//!
//! A forecaster's own interval is a guess (a Gaussian spread, or what a model learned on other
//! series): on one series its p90 may be a p75, on another a p97, and it drifts by step. The
//! risk rules size on the p90, so Augur corrects it on what then happened: for each step `h`
//! and each side, an offset moved by online quantile tracking (the update of adaptive conformal
//! inference, Gibbs and Candès 2021) on the interval it issued:
//!
//! `offset += gain * scale_h * (miss - 0.1)`
//!
//! where `miss` is 1 when the value fell outside that side of the issued bound. A side that
//! misses more than 10% of the time widens, one that misses less narrows, and in the long run
//! each side misses 10% of the time whatever the forecaster, so p10-p90 covers 80%. `scale_h`
//! (a running mean of the median's absolute error at step `h`) makes the update scale-free.
//! The median is never moved; a bound never crosses it.

use crate::domain::Forecast;

/// Each side's target miss rate: the p10 and the p90.
pub const TAIL: f64 = 0.1;

/// An offset moves by this share of the step's error scale per point: one error scale in about
/// a hundred points when a side misses 20 points too often. (A gain near 1 would chase noise;
/// near 0 it would never adapt.)
pub const GAIN: f64 = 0.05;

/// The error scale averages over about this many points.
const SCALE_MEMORY: f64 = 100.0;

/// One step's correction.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct StepOffsets {
    /// Added to the p90 (negative narrows).
    pub upper: f64,
    /// Subtracted from the p10 (negative narrows).
    pub lower: f64,
    /// The running mean absolute error of the median at this step.
    pub scale: f64,
    /// Points scored at this step.
    pub scored: u64,
    /// The running share of those points inside the issued p10-p90 (the target is 0.8).
    pub coverage: f64,
}

/// The calibration of one forecaster's forecasts on one series. Whoever issues the forecasts
/// remembers them and scores each step on the point it predicted (`update`): the skill gate in
/// `host run`, the backtest offline.
#[derive(Debug, Clone, Default)]
pub struct Calibration {
    /// The forecaster it calibrates: another's forecasts pass unchanged.
    forecaster: String,
    steps: Vec<StepOffsets>,
}

impl Calibration {
    /// `raw` with this series' corrected interval (unchanged without one).
    pub fn issue(&self, raw: &Forecast) -> Forecast {
        let mut out = raw.clone();
        self.correct(&mut out);
        out
    }

    /// Corrects `forecast`'s interval in place (unchanged when it is another forecaster's).
    pub fn correct(&self, forecast: &mut Forecast) {
        if forecast.forecaster != self.forecaster {
            return;
        }
        let Forecast { predicted, lower, upper, .. } = forecast;
        if let (Some(lower), Some(upper)) = (lower.as_mut(), upper.as_mut()) {
            for (h, step) in self.steps.iter().enumerate().take(predicted.len()) {
                let median = predicted[h];
                let floor = if lower[h] >= 0.0 { 0.0 } else { f64::NEG_INFINITY };
                upper[h] = (upper[h] + step.upper).max(median);
                lower[h] = (lower[h] - step.lower).min(median).max(floor.min(median));
            }
        }
    }

    /// Scores step `h` of the issued `forecast` against `value`.
    pub fn update(&mut self, h: usize, value: f64, issued: &Forecast) {
        let (Some(lower), Some(upper)) = (&issued.lower, &issued.upper) else { return };
        if h < issued.predicted.len() {
            self.update_step(h, value, [lower[h], issued.predicted[h], upper[h]]);
        }
    }

    /// Scores step `h` of an issued forecast, given as its (p10, p50, p90) there.
    pub fn update_step(&mut self, h: usize, value: f64, [lower, median, upper]: [f64; 3]) {
        if !value.is_finite() {
            return;
        }
        if self.steps.len() <= h {
            self.steps.resize(h + 1, StepOffsets::default());
        }
        let step = &mut self.steps[h];
        let error = (value - median).abs();
        step.scored += 1;
        step.scale += (error - step.scale) / (step.scored as f64).min(SCALE_MEMORY);
        let inside = f64::from(u8::from(lower <= value && value <= upper));
        step.coverage += (inside - step.coverage) / (step.scored as f64).min(SCALE_MEMORY);
        let rate = GAIN * step.scale;
        step.upper += rate * (f64::from(u8::from(value > upper)) - TAIL);
        step.lower += rate * (f64::from(u8::from(value < lower)) - TAIL);
    }

    /// A calibration for `forecaster`'s forecasts, with nothing learned yet.
    pub fn for_forecaster(forecaster: &str) -> Self {
        Calibration { forecaster: forecaster.to_string(), ..Default::default() }
    }

    /// The recent share of points inside the issued p10-p90, over every scored step (what
    /// `/metrics` shows as `augur_forecast_interval_coverage`).
    pub fn coverage(&self) -> Option<f64> {
        let scored: Vec<f64> = self.steps.iter().filter(|s| s.scored > 0).map(|s| s.coverage).collect();
        (!scored.is_empty()).then(|| scored.iter().sum::<f64>() / scored.len() as f64)
    }

    /// The corrections per step, as they stand.
    pub fn steps(&self) -> &[StepOffsets] {
        &self.steps
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn forecast(median: f64, spread: f64, horizon: usize) -> Forecast {
        Forecast {
            forecaster: "test".into(),
            step_seconds: 60,
            predicted: vec![median; horizon],
            lower: Some(vec![median - spread; horizon]),
            upper: Some(vec![median + spread; horizon]),
        }
    }

    /// A noise generator from a fixed LCG: uniform in [-1, 1).
    fn noise(seed: &mut u64) -> f64 {
        *seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        ((*seed >> 11) as f64 / (1u64 << 53) as f64) * 2.0 - 1.0
    }

    /// Runs `points` of uniform noise of half-width `width` around 100, forecast as 100 with
    /// the given spread one step ahead, and returns each side's miss rate over the last half.
    fn run(spread: f64, width: f64, points: usize) -> (f64, f64, Calibration) {
        let mut c = Calibration::for_forecaster("test");
        let (mut seed, mut below, mut above, mut counted) = (7u64, 0, 0, 0);
        for i in 0..points {
            let issued = c.issue(&forecast(100.0, spread, 3));
            let y = 100.0 + width * noise(&mut seed);
            if i > points / 2 {
                counted += 1;
                below += u32::from(y < issued.lower.as_ref().unwrap()[0]);
                above += u32::from(y > issued.upper.as_ref().unwrap()[0]);
            }
            // This value is the first step of the forecast just issued.
            c.update(0, y, &issued);
        }
        (f64::from(below) / f64::from(counted), f64::from(above) / f64::from(counted), c)
    }

    #[test]
    fn an_interval_too_narrow_widens_and_one_too_wide_narrows_to_ten_percent_a_side() {
        // Uniform noise of half-width 10: the true p10/p90 are 100 -+ 8.
        for spread in [1.0, 30.0] {
            let (below, above, c) = run(spread, 10.0, 20_000);
            assert!((0.07..=0.13).contains(&below) && (0.07..=0.13).contains(&above), "spread {spread}: {below:.3} below, {above:.3} above");
            let p90 = c.issue(&forecast(100.0, spread, 3)).upper.unwrap()[0];
            let coverage = c.coverage().unwrap();
            assert!((0.7..=0.9).contains(&coverage), "spread {spread}: recent coverage {coverage:.3}");
            assert!((106.0..=110.0).contains(&p90), "spread {spread}: p90 {p90:.2}, the true one is 108");
        }
    }

    /// Each step learns from its own scores only.
    #[test]
    fn each_step_is_calibrated_on_its_own_targets() {
        let mut c = Calibration::for_forecaster("test");
        let mut seed = 3u64;
        let mut previous: Option<Forecast> = None;
        for _ in 0..30_000 {
            let issued = c.issue(&forecast(0.0, 1.0, 2));
            let y = 4.0 * noise(&mut seed);
            // The point is step 2 of the forecast before and step 1 of this one.
            if let Some(p) = &previous {
                c.update(1, y, p);
            }
            c.update(0, y, &issued);
            previous = Some(issued);
        }
        let steps = c.steps();
        assert_eq!(steps.len(), 2);
        // Uniform noise of half-width 4: each step's p90 is 3.2, so each widens by about 2.2.
        assert!(steps.iter().all(|s| s.scored > 29_000 && (1.7..=2.7).contains(&s.upper) && (1.7..=2.7).contains(&s.lower)), "{steps:?}");
    }

    #[test]
    fn the_median_never_moves_and_a_bound_never_crosses_it_nor_zero() {
        let mut c = Calibration::for_forecaster("test");
        for _ in 0..2000 {
            let issued = c.issue(&forecast(5.0, 4.0, 1));
            c.update(0, 5.0, &issued); // always at the median: the interval shrinks
        }
        let out = c.issue(&forecast(5.0, 4.0, 1));
        assert_eq!(out.predicted, vec![5.0]);
        assert!(out.upper.unwrap()[0] >= 5.0 && out.lower.unwrap()[0] <= 5.0);
        let mut wide = Calibration::for_forecaster("test");
        for i in 0..2000 {
            let issued = wide.issue(&forecast(1.0, 0.5, 1));
            wide.update(0, if i % 2 == 0 { 50.0 } else { 0.0 }, &issued);
        }
        assert!(wide.issue(&forecast(1.0, 0.5, 1)).lower.unwrap()[0] >= 0.0, "a non-negative p10 stays non-negative");
    }

    #[test]
    fn another_forecasters_forecast_passes_unchanged() {
        let mut c = Calibration::for_forecaster("test");
        for _ in 0..500 {
            let issued = c.issue(&forecast(0.0, 0.1, 1));
            c.update(0, 5.0, &issued);
        }
        assert!(c.issue(&forecast(0.0, 0.1, 1)).upper.unwrap()[0] > 1.0, "it learned to widen");
        let mut other = forecast(0.0, 0.1, 1);
        other.forecaster = "other".into();
        assert_eq!(c.issue(&other), other, "not corrected by what another forecaster's errors taught");
    }
}
