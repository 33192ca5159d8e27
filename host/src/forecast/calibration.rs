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
use std::collections::VecDeque;

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

/// The calibration of one series' forecasts.
#[derive(Debug, Clone, Default)]
pub struct Calibration {
    /// The forecaster it learned on: another one starts afresh.
    forecaster: String,
    steps: Vec<StepOffsets>,
    /// The forecasts issued and not yet scored at every step, with the point index their
    /// first step predicts.
    issued: VecDeque<(u64, Forecast)>,
    /// Points observed so far (the index the next point takes).
    points: u64,
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

    /// Remembers a forecast as issued after the points seen so far: the next points score it.
    pub fn record(&mut self, issued: &Forecast) {
        if issued.lower.is_none() || issued.upper.is_none() {
            return;
        }
        if issued.forecaster != self.forecaster {
            *self = Calibration { forecaster: issued.forecaster.clone(), points: self.points, ..Default::default() };
        }
        // One forecast per point: a second one at the same point replaces the first.
        if self.issued.back().is_some_and(|(at, _)| *at == self.points) {
            self.issued.pop_back();
        }
        self.issued.push_back((self.points, issued.clone()));
    }

    /// The next point of the series: scores every remembered forecast that predicted it.
    pub fn observe(&mut self, value: f64) {
        let index = self.points;
        let issued = std::mem::take(&mut self.issued);
        for (at, forecast) in &issued {
            if let Some(h) = index.checked_sub(*at).map(|h| h as usize)
                && h < forecast.predicted.len()
            {
                self.update(h, value, forecast);
            }
        }
        self.points += 1;
        self.issued = issued.into_iter().filter(|(at, f)| at + (f.predicted.len() as u64) > self.points).collect();
    }

    /// Scores step `h` of the issued `forecast` against `value`.
    pub fn update(&mut self, h: usize, value: f64, issued: &Forecast) {
        let (Some(lower), Some(upper)) = (&issued.lower, &issued.upper) else { return };
        if !value.is_finite() || h >= issued.predicted.len() {
            return;
        }
        if self.steps.len() <= h {
            self.steps.resize(h + 1, StepOffsets::default());
        }
        let step = &mut self.steps[h];
        let error = (value - issued.predicted[h]).abs();
        step.scored += 1;
        step.scale += (error - step.scale) / (step.scored as f64).min(SCALE_MEMORY);
        let inside = f64::from(u8::from(lower[h] <= value && value <= upper[h]));
        step.coverage += (inside - step.coverage) / (step.scored as f64).min(SCALE_MEMORY);
        let rate = GAIN * step.scale;
        step.upper += rate * (f64::from(u8::from(value > upper[h])) - TAIL);
        step.lower += rate * (f64::from(u8::from(value < lower[h])) - TAIL);
    }

    /// Drops the forecasts waiting for their points (the series was refilled from elsewhere).
    pub fn forget_issued(&mut self) {
        self.issued.clear();
    }

    /// Starts over for `forecaster` (the backtest, which scores outside `observe`).
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
    /// the given spread, and returns each side's miss rate over the last half.
    fn run(spread: f64, width: f64, points: usize) -> (f64, f64, Calibration) {
        let mut c = Calibration::default();
        let (mut seed, mut below, mut above, mut counted) = (7u64, 0, 0, 0);
        for i in 0..points {
            let issued = c.issue(&forecast(100.0, spread, 3));
            c.record(&issued);
            let y = 100.0 + width * noise(&mut seed);
            if i > points / 2 {
                // This value is the first step of the forecast just issued.
                counted += 1;
                below += u32::from(y < issued.lower.as_ref().unwrap()[0]);
                above += u32::from(y > issued.upper.as_ref().unwrap()[0]);
            }
            c.observe(y);
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

    /// Every step of every forecast is scored once, against the point it predicted.
    #[test]
    fn each_step_is_calibrated_on_its_own_targets() {
        let mut c = Calibration::default();
        let mut seed = 3u64;
        for _ in 0..30_000 {
            let issued = c.issue(&forecast(0.0, 1.0, 2));
            c.record(&issued);
            c.observe(4.0 * noise(&mut seed));
        }
        let steps = c.steps();
        assert_eq!(steps.len(), 2);
        // Uniform noise of half-width 4: each step's p90 is 3.2, so each widens by about 2.2.
        assert!(steps.iter().all(|s| s.scored > 29_000 && (1.7..=2.7).contains(&s.upper) && (1.7..=2.7).contains(&s.lower)), "{steps:?}");
    }

    #[test]
    fn the_median_never_moves_and_a_bound_never_crosses_it_nor_zero() {
        let mut c = Calibration::default();
        for _ in 0..2000 {
            let issued = c.issue(&forecast(5.0, 4.0, 1));
            c.record(&issued);
            c.observe(5.0); // always at the median: the interval shrinks
        }
        let out = c.issue(&forecast(5.0, 4.0, 1));
        assert_eq!(out.predicted, vec![5.0]);
        assert!(out.upper.unwrap()[0] >= 5.0 && out.lower.unwrap()[0] <= 5.0);
        let mut wide = Calibration::default();
        for _ in 0..2000 {
            let issued = wide.issue(&forecast(1.0, 0.5, 1));
            wide.record(&issued);
            wide.observe(if wide.points % 2 == 0 { 50.0 } else { 0.0 });
        }
        assert!(wide.issue(&forecast(1.0, 0.5, 1)).lower.unwrap()[0] >= 0.0, "a non-negative p10 stays non-negative");
    }

    #[test]
    fn another_forecaster_starts_afresh() {
        let mut c = Calibration::default();
        for _ in 0..500 {
            let issued = c.issue(&forecast(0.0, 0.1, 1));
            c.record(&issued);
            c.observe(5.0);
        }
        let mut other = forecast(0.0, 0.1, 1);
        other.forecaster = "other".into();
        assert_eq!(c.issue(&other), other, "not corrected by what another forecaster's errors taught");
        c.record(&other);
        assert!(c.steps().is_empty());
    }
}
