//! A model of the predictive method of the best open peer, Crane's
//! EffectiveHorizontalPodAutoscaler (EHPA, https://gocrane.io): an HPA v2 fed, beside the
//! pods' CPU, with the maximum of a seasonal forecast of the workload's CPU over a prediction
//! window. This is a model of the method, not Crane itself:
//! - the forecast is additive Holt-Winters with a daily season (Crane's default predictor is
//!   DSP, a spectral method; both are seasonal statistical forecasters), on one-minute means
//!   of the pods' CPU, fitted on up to three days of history (Crane's default history length)
//!   and refitted once a day;
//! - until two days have been seen there is no forecast, and the EHPA is the plain HPA
//!   (Crane's EHPA also falls back to the resource metric without a prediction);
//! - the predicted metric is the forecast's maximum over the next `window` minutes (10), as an
//!   `External` metric with an `AverageValue` target of the HPA's target utilisation of a pod;
//! - the HPA takes the larger of the two recommendations, then stabilises and rate-limits
//!   as `hpa` does (the same defaults, and the same metrics-server lag on CPU).

use super::hpa::{Hpa, Observed};
use crate::forecast::{HoltWinters, HwParams, HwState};

/// The method's settings.
#[derive(Debug, Clone, PartialEq)]
pub struct EhpaSpec {
    /// Points per season: a day of minutes.
    pub season: usize,
    /// Points forecast ahead whose maximum is the predicted metric.
    pub window: usize,
    /// Points of history a fit uses.
    pub history: usize,
    /// Points between two fits.
    pub refit_every: usize,
    /// Cores a pod should use (capacity x target utilisation): the AverageValue target.
    pub per_pod: f64,
}

impl EhpaSpec {
    /// A daily season of minutes, a 10-minute window, 3 days of history, refitted daily.
    pub fn new(per_pod: f64) -> Self {
        Self { season: 1440, window: 10, history: 3 * 1440, refit_every: 1440, per_pod }
    }
}

/// The controller: an HPA and its predictor.
#[derive(Debug, Clone)]
pub struct Ehpa {
    pub hpa: Hpa,
    pub spec: EhpaSpec,
    /// One-minute means of the pods' CPU, cores.
    samples: Vec<f64>,
    /// The minute being averaged: (its index, sum, count).
    minute: Option<(u64, f64, u32)>,
    model: Option<(HwParams, HwState)>,
    fitted_at: usize,
}

impl Ehpa {
    pub fn new(hpa: Hpa, spec: EhpaSpec) -> Self {
        Self { hpa, spec, samples: Vec::new(), minute: None, model: None, fitted_at: 0 }
    }

    /// Takes the pods' CPU (cores) at `now` seconds; a minute's mean becomes a sample.
    pub fn observe(&mut self, now: f64, cores: f64) {
        let index = (now / 60.0).floor().max(0.0) as u64;
        match &mut self.minute {
            Some((i, sum, count)) if *i == index => {
                *sum += cores;
                *count += 1;
            }
            Some((_, sum, count)) => {
                let mean = *sum / f64::from((*count).max(1));
                self.minute = Some((index, cores, 1));
                self.take(mean);
            }
            None => self.minute = Some((index, cores, 1)),
        }
    }

    fn take(&mut self, sample: f64) {
        self.samples.push(sample);
        if let Some((params, state)) = &mut self.model {
            state.update(params, Some(sample));
        }
        let n = self.samples.len();
        let due = self.model.is_none() || n - self.fitted_at >= self.spec.refit_every;
        if due && n > 2 * self.spec.season {
            let history: Vec<Option<f64>> = self.samples[n.saturating_sub(self.spec.history)..].iter().copied().map(Some).collect();
            if let Ok((params, state, _)) = (HoltWinters { season: self.spec.season }).fit(&history) {
                self.model = Some((params, state));
                self.fitted_at = n;
            }
        }
    }

    /// The predicted metric: the forecast's maximum over the window, cores; `None` before the
    /// first fit.
    pub fn predicted_peak(&self) -> Option<f64> {
        let (params, state) = self.model.as_ref()?;
        (1..=self.spec.window).map(|h| state.predict(params, h).max(0.0)).reduce(f64::max)
    }

    /// One HPA sync with the prediction beside CPU.
    pub fn sync(&mut self, now: f64, observed: Observed) -> u32 {
        let predicted = self.predicted_peak().map(|peak| self.hpa.average_value_recommendation(observed.replicas, peak, self.spec.per_pod));
        self.hpa.sync_with(now, observed, predicted)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::offline::replay::hpa::HpaSpec;

    fn ehpa(season: usize) -> Ehpa {
        let spec = EhpaSpec { season, window: 3, history: 3 * season, refit_every: season, per_pod: 0.4 };
        Ehpa::new(Hpa::new(HpaSpec::new(1, 20, 0.8)), spec)
    }

    /// Feeds `minutes` of a load that is 0.4 cores except 4.0 cores in minutes 10..13 of every
    /// 20-minute season, one sample a minute.
    fn feed(e: &mut Ehpa, minutes: usize) {
        for m in 0..minutes {
            let load = if (10..13).contains(&(m % 20)) { 4.0 } else { 0.4 };
            e.observe(m as f64 * 60.0, load);
        }
    }

    #[test]
    fn without_two_seasons_it_is_the_plain_hpa() {
        let mut e = ehpa(20);
        feed(&mut e, 30);
        assert_eq!(e.predicted_peak(), None);
        // 1 pod at 50% of a 0.5-core pod (0.25 of 0.8 target... ): the HPA alone decides.
        let plain = Hpa::new(HpaSpec::new(1, 20, 0.8)).sync(0.0, Observed { replicas: 2, ready: 2, utilisation: 0.4 });
        assert_eq!(e.sync(0.0, Observed { replicas: 2, ready: 2, utilisation: 0.4 }), plain);
    }

    /// Worked by hand: an exactly periodic load (season 4: 1, 1, 5, 1 cores) has a flat level
    /// and no trend after two seasons, and every update keeps it so, whatever the smoothing:
    /// Holt-Winters then predicts the season itself. With the last sample at position 0 (1.0),
    /// the 3-point window holds positions 1, 2, 3 (1, 5, 1): a peak of 5.0 cores, which at 0.4
    /// cores a pod is ceil(12.5) = 13 pods, and at 2 pods now the HPA's default scale-up
    /// policies allow max(2 + 4, 2 x 2) = 6 this sync.
    #[test]
    fn a_periodic_load_is_predicted_exactly() {
        let spec = EhpaSpec { season: 4, window: 3, history: 12, refit_every: 4, per_pod: 0.4 };
        let mut e = Ehpa::new(Hpa::new(HpaSpec::new(1, 20, 0.8)), spec);
        let season = [1.0, 1.0, 5.0, 1.0];
        // 3 seasons and one point: the samples of minutes 0..=12 (minute 13 is being averaged).
        for m in 0..14 {
            e.observe(m as f64 * 60.0, season[m % 4]);
        }
        assert_eq!(e.samples.len(), 13);
        let peak = e.predicted_peak().unwrap();
        assert!((peak - 5.0).abs() < 1e-9, "{peak}");
        assert_eq!(e.hpa.average_value_recommendation(2, peak, 0.4), 13);
        assert_eq!(e.sync(0.0, Observed { replicas: 2, ready: 2, utilisation: 0.5 }), 6);
    }

    #[test]
    fn it_scales_ahead_of_a_seasonal_peak() {
        let mut e = ehpa(20);
        // Eight seasons, ending at minute 8 of a season (the samples of minutes 0..=7 are in;
        // minute 8 is being averaged): the peak at 10..13 is within the 3-minute window.
        feed(&mut e, 7 * 20 + 9);
        let peak = e.predicted_peak().expect("fitted after two seasons");
        assert!(peak > 2.0, "the forecast sees the coming 4-core peak: {peak}");
        // At 0.4 cores on 2 pods the CPU alone would keep 1-2 pods; the prediction asks for
        // ceil(peak / 0.4) pods now.
        let replicas = e.sync(0.0, Observed { replicas: 2, ready: 2, utilisation: 0.4 });
        assert!(replicas >= 6, "{replicas} for a predicted peak of {peak}");
    }
}
