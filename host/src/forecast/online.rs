//! The seasonal baselines kept online for one series, so that the skill gate can score them
//! at every point without refitting on a long history each time: the last two seasons of
//! points in a ring, seasonal naive read from it, and additive Holt-Winters filtered point by
//! point with parameters refitted once a season on the ring.
//!
//! Memory: two seasons and a point of `f32` per series and a season of Holt-Winters' seasonal
//! indices (a day of minutes: 23 KiB).

use super::{ForecastError, HoltWinters, HwParams, HwState, SeasonalNaive, Z_P90, finite, with_interval};
use crate::domain::Forecast;
use std::collections::VecDeque;

/// Seasonal naive and Holt-Winters for one series, updated one point at a time.
#[derive(Debug, Clone)]
pub struct SeasonalBaselines {
    season: usize,
    /// The newest `2 * season + 1` points, oldest first (`f32`: seven digits are plenty for a
    /// seasonal baseline, and it halves the largest part of a lineup).
    ring: VecDeque<f32>,
    /// The running mean of the squared seasonal difference (seasonal naive's one-season error).
    seasonal_sq: Option<f64>,
    seasonal_n: u64,
    hw: Option<OnlineHw>,
}

#[derive(Debug, Clone)]
struct OnlineHw {
    params: HwParams,
    state: HwState,
    /// The running mean of the squared one-step error.
    sq: f64,
    n: u64,
    /// Points since the parameters were fitted.
    since_fit: usize,
}

/// The running means average over about this many points.
const MEMORY: f64 = 1000.0;

impl SeasonalBaselines {
    pub fn new(season: usize) -> Self {
        let season = season.max(2);
        // The ring grows as points come (a fresh series holds what it has seen, not two days
        // of room), doubling up to exactly two seasons and a point.
        Self { season, ring: VecDeque::new(), seasonal_sq: None, seasonal_n: 0, hw: None }
    }

    pub fn season(&self) -> usize {
        self.season
    }

    /// Points it holds (at most two seasons and one).
    pub fn len(&self) -> usize {
        self.ring.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ring.is_empty()
    }

    /// Forgets every point (the series was refilled from elsewhere).
    pub fn clear(&mut self) {
        *self = Self::new(self.season);
    }

    /// Takes the next point; values that are not finite are skipped.
    pub fn push(&mut self, value: f64) {
        if !value.is_finite() {
            return;
        }
        let m = self.season;
        if self.ring.len() >= m {
            let d = value - f64::from(self.ring[self.ring.len() - m]);
            self.seasonal_n += 1;
            let mean = self.seasonal_sq.get_or_insert(d * d);
            *mean += (d * d - *mean) / (self.seasonal_n as f64).min(MEMORY);
        }
        if self.ring.len() == 2 * m + 1 {
            self.ring.pop_front();
        }
        if self.ring.len() == self.ring.capacity() {
            self.ring.reserve_exact(self.ring.capacity().max(16).min(2 * m + 1 - self.ring.len()));
        }
        self.ring.push_back(value as f32);
        if let Some(hw) = &mut self.hw {
            if let Some(e) = hw.state.update(&hw.params, Some(value)) {
                hw.n += 1;
                hw.sq += (e * e - hw.sq) / (hw.n as f64).min(MEMORY);
            }
            hw.since_fit += 1;
        }
        // Fitted once two seasons are in, and again once a season after (on the ring).
        if self.ring.len() == 2 * m + 1 && self.hw.as_ref().is_none_or(|hw| hw.since_fit >= m) {
            self.refit();
        }
    }

    fn refit(&mut self) {
        let observed: Vec<Option<f64>> = self.ring.iter().map(|v| Some(f64::from(*v))).collect();
        if let Ok((params, state, rms)) = (HoltWinters { season: self.season }).fit(&observed) {
            // The error so far carries over a refit: the fit's in-sample RMS is optimistic.
            let (sq, n) = match &self.hw {
                Some(old) => (old.sq, old.n),
                None => (rms * rms, 0),
            };
            self.hw = Some(OnlineHw { params, state, sq, n, since_fit: 0 });
        }
    }

    /// The value one season before each step ahead, with a normal interval from the running
    /// seasonal error; `TooShort` before a season and a point are in.
    pub fn seasonal_naive(&self, horizon: usize, step_seconds: u32) -> Result<Forecast, ForecastError> {
        let (n, m) = (self.ring.len(), self.season);
        let name = SeasonalNaive { season: m };
        let Some(sq) = self.seasonal_sq.filter(|_| n > m) else {
            return Err(ForecastError::too_short(super::Forecaster::name(&name), m + 1, n));
        };
        let sigma = sq.sqrt();
        let predicted: Vec<f64> = (0..horizon).map(|h| f64::from(self.ring[n - m + h % m])).collect();
        let spread = |h: usize| Z_P90 * sigma * ((h / m + 1) as f64).sqrt();
        let lower = predicted.iter().enumerate().map(|(h, v)| (v - spread(h)).max(0.0)).collect();
        let upper = predicted.iter().enumerate().map(|(h, v)| v + spread(h)).collect();
        finite(Forecast { forecaster: "seasonal-naive".into(), step_seconds, predicted, lower: Some(lower), upper: Some(upper) })
    }

    /// Holt-Winters from the filtered state; `TooShort` before two seasons and a point are in.
    pub fn holt_winters(&self, horizon: usize, step_seconds: u32) -> Result<Forecast, ForecastError> {
        let Some(hw) = &self.hw else {
            return Err(ForecastError::too_short("holt-winters", 2 * self.season + 1, self.ring.len()));
        };
        let predicted = (1..=horizon).map(|h| hw.state.predict(&hw.params, h)).collect();
        finite(with_interval("holt-winters", predicted, hw.sq.sqrt(), step_seconds))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::forecast::Forecaster;

    fn wave(n: usize, m: usize) -> Vec<f64> {
        (0..n).map(|t| 100.0 + 20.0 * (2.0 * std::f64::consts::PI * (t % m) as f64 / m as f64).sin()).collect()
    }

    #[test]
    fn seasonal_naive_matches_the_batch_forecaster() {
        let m = 12;
        let y = wave(5 * m + 3, m);
        let mut online = SeasonalBaselines::new(m);
        y.iter().for_each(|v| online.push(*v));
        let batch = SeasonalNaive { season: m }.forecast(&y, 5, 60).unwrap();
        let online = online.seasonal_naive(5, 60).unwrap().predicted;
        assert!(online.iter().zip(&batch.predicted).all(|(a, b)| (a - b).abs() <= 1e-6 * b.abs()), "the same to f32's precision: {online:?} vs {:?}", batch.predicted);
    }

    #[test]
    fn holt_winters_is_there_after_two_seasons_and_follows_the_wave() {
        let m = 24;
        let y = wave(10 * m, m);
        let mut online = SeasonalBaselines::new(m);
        for (i, v) in y.iter().enumerate() {
            assert_eq!(online.holt_winters(3, 60).is_ok(), i > 2 * m, "point {i}");
            online.push(*v);
        }
        let f = online.holt_winters(m, 60).unwrap();
        let truth = wave(11 * m, m);
        let worst = f.predicted.iter().zip(&truth[10 * m..]).map(|(p, t)| (p - t).abs()).fold(0.0, f64::max);
        assert!(worst < 3.0, "worst error {worst}");
        assert!(online.len() == 2 * m + 1, "the ring holds two seasons and a point");
    }

    #[test]
    fn the_ring_holds_room_for_what_it_has_seen_and_no_more_than_two_seasons() {
        let m = 1440;
        let mut online = SeasonalBaselines::new(m);
        assert_eq!(online.ring.capacity(), 0, "a fresh series takes no room");
        (0..120).for_each(|i| online.push(f64::from(i)));
        assert!(online.ring.capacity() < 4 * 120, "two hours of a day's season: {}", online.ring.capacity());
        (0..5 * m).for_each(|i| online.push(f64::from(i as u32)));
        assert_eq!(online.len(), 2 * m + 1);
        assert_eq!(online.ring.capacity(), 2 * m + 1, "exactly two seasons and a point once full");
    }

    #[test]
    fn too_short_before_a_season() {
        let mut online = SeasonalBaselines::new(10);
        (0..10).for_each(|i| online.push(f64::from(i)));
        assert!(matches!(online.seasonal_naive(3, 60), Err(ForecastError::TooShort { needed: 11, .. })));
        online.push(f64::NAN);
        assert_eq!(online.len(), 10, "a value that is not finite is skipped");
    }
}
