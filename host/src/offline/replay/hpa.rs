//! A model of the Kubernetes HorizontalPodAutoscaler (autoscaling/v2) for replays: what
//! users run today, to compare Augur against on the same trace.
//!
//! It follows the controller's algorithm as documented
//! (https://kubernetes.io/docs/tasks/run-application/horizontal-pod-autoscale/) and as
//! written in `pkg/controller/podautoscaler/horizontal.go`:
//! - every `sync` (15 s), `desired = ceil(current * metric / target)`, left alone while the
//!   ratio is within `tolerance` (10%) of 1;
//! - when scaling up with pods that are not ready yet, those count as using nothing (the
//!   controller's conservative assumption), so a start-up does not double-count;
//! - stabilisation: the recommendation is held between the lowest recommendation of the
//!   scale-up window (default 0 s) and the highest of the scale-down window (default 300 s);
//! - rate: the default scale-up policies (add 4 pods or 100%, whichever is more, per 15 s)
//!   and scale-down policy (100% per 15 s), counted from the replicas at the start of the
//!   policy's period;
//! - then `min_replicas..=max_replicas`.

use std::collections::VecDeque;

/// One scaling policy of `behavior`: at most `value` pods, or `value` percent, per `period`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum RatePolicy {
    Pods { value: u32, period_s: f64 },
    Percent { value: f64, period_s: f64 },
}

impl RatePolicy {
    fn period(self) -> f64 {
        match self {
            RatePolicy::Pods { period_s, .. } | RatePolicy::Percent { period_s, .. } => period_s,
        }
    }
}

/// An HPA's spec for one CPU-utilisation target, with the controller's defaults.
#[derive(Debug, Clone, PartialEq)]
pub struct HpaSpec {
    pub min_replicas: u32,
    pub max_replicas: u32,
    /// Target utilisation, e.g. 0.8 for 80% of each pod's capacity.
    pub target_utilisation: f64,
    pub tolerance: f64,
    pub sync_s: f64,
    pub scale_up_window_s: f64,
    pub scale_down_window_s: f64,
    pub scale_up: Vec<RatePolicy>,
    pub scale_down: Vec<RatePolicy>,
}

impl HpaSpec {
    /// The controller's defaults around a replica range and a utilisation target.
    pub fn new(min_replicas: u32, max_replicas: u32, target_utilisation: f64) -> Self {
        Self {
            min_replicas,
            max_replicas,
            target_utilisation,
            tolerance: 0.1,
            sync_s: 15.0,
            scale_up_window_s: 0.0,
            scale_down_window_s: 300.0,
            scale_up: vec![RatePolicy::Pods { value: 4, period_s: 15.0 }, RatePolicy::Percent { value: 100.0, period_s: 15.0 }],
            scale_down: vec![RatePolicy::Percent { value: 100.0, period_s: 15.0 }],
        }
    }
}

/// What the controller sees at a sync: replicas, how many are ready, and the usage of the
/// ready ones as a fraction of their capacity (1.0: every ready pod at its capacity).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Observed {
    pub replicas: u32,
    pub ready: u32,
    /// Mean utilisation of the ready pods.
    pub utilisation: f64,
}

/// The controller's memory: past recommendations and past scale events.
#[derive(Debug, Clone)]
pub struct Hpa {
    pub spec: HpaSpec,
    recommendations: VecDeque<(f64, u32)>,
    /// (time, replicas added (positive) or removed (negative)).
    events: VecDeque<(f64, i64)>,
}

impl Hpa {
    pub fn new(spec: HpaSpec) -> Self {
        Self { spec, recommendations: VecDeque::new(), events: VecDeque::new() }
    }

    /// One sync at `now` (seconds): the replicas the controller sets.
    pub fn sync(&mut self, now: f64, observed: Observed) -> u32 {
        self.sync_with(now, observed, None)
    }

    /// One sync with a second metric's recommendation beside CPU's: the controller takes the
    /// larger of the two before stabilising, as it does for an HPA with several metrics.
    pub fn sync_with(&mut self, now: f64, observed: Observed, other: Option<u32>) -> u32 {
        let current = observed.replicas;
        let raw = self.raw_recommendation(observed).max(other.unwrap_or(0));
        let stabilised = self.stabilise(now, current, raw);
        let limited = self.rate_limit(now, current, stabilised);
        let desired = limited.clamp(self.spec.min_replicas, self.spec.max_replicas);
        if desired != current {
            self.events.push_back((now, i64::from(desired) - i64::from(current)));
        }
        desired
    }

    /// `ceil(current * metric / target)`, within the tolerance, with unready pods at zero
    /// usage when that would scale up.
    fn raw_recommendation(&self, o: Observed) -> u32 {
        if o.ready == 0 {
            return o.replicas;
        }
        let ratio = o.utilisation / self.spec.target_utilisation;
        if (ratio - 1.0).abs() <= self.spec.tolerance {
            return o.replicas;
        }
        let unready = o.replicas.saturating_sub(o.ready);
        if ratio > 1.0 && unready > 0 {
            // The not-ready pods count as using nothing; recompute over all pods.
            let total = o.utilisation * f64::from(o.ready) / f64::from(o.replicas);
            let ratio = total / self.spec.target_utilisation;
            if ratio <= 1.0 + self.spec.tolerance {
                return o.replicas;
            }
            return (f64::from(o.replicas) * ratio).ceil() as u32;
        }
        (f64::from(o.ready) * ratio).ceil() as u32
    }

    /// The recommendation for a metric of type `External` with an `AverageValue` target, e.g.
    /// a predicted total of CPU cores against `per_pod` cores a pod: `ceil(total / per_pod)`,
    /// left at `current` within the tolerance.
    pub fn average_value_recommendation(&self, current: u32, total: f64, per_pod: f64) -> u32 {
        let ratio = total / (per_pod * f64::from(current.max(1)));
        if (ratio - 1.0).abs() <= self.spec.tolerance {
            return current;
        }
        ((total / per_pod) - 1e-9).ceil().max(0.0) as u32
    }

    fn stabilise(&mut self, now: f64, current: u32, raw: u32) -> u32 {
        let keep = self.spec.scale_up_window_s.max(self.spec.scale_down_window_s);
        while self.recommendations.front().is_some_and(|(t, _)| now - t > keep) {
            self.recommendations.pop_front();
        }
        let (mut up, mut down) = (raw, raw);
        for &(t, r) in &self.recommendations {
            if now - t < self.spec.scale_up_window_s {
                up = up.min(r);
            }
            if now - t < self.spec.scale_down_window_s {
                down = down.max(r);
            }
        }
        self.recommendations.push_back((now, raw));
        current.max(up).min(down)
    }

    fn rate_limit(&mut self, now: f64, current: u32, desired: u32) -> u32 {
        let longest = self.spec.scale_up.iter().chain(&self.spec.scale_down).map(|p| p.period()).fold(0.0, f64::max);
        while self.events.front().is_some_and(|(t, _)| now - t >= longest) {
            self.events.pop_front();
        }
        let changed_within = |period: f64, sign: i64| -> i64 { self.events.iter().filter(|(t, d)| now - t < period && d.signum() == sign).map(|(_, d)| d).sum() };
        if desired > current {
            let limit = self.spec.scale_up.iter().map(|p| {
                let start = i64::from(current) - changed_within(p.period(), 1);
                match *p {
                    RatePolicy::Pods { value, .. } => start + i64::from(value),
                    RatePolicy::Percent { value, .. } => (start as f64 * (1.0 + value / 100.0)).ceil() as i64,
                }
            });
            desired.min(limit.max().unwrap_or(i64::MAX).max(i64::from(current)) as u32)
        } else if desired < current {
            let limit = self.spec.scale_down.iter().map(|p| {
                let start = i64::from(current) - changed_within(p.period(), -1);
                match *p {
                    RatePolicy::Pods { value, .. } => start - i64::from(value),
                    RatePolicy::Percent { value, .. } => (start as f64 * (1.0 - value / 100.0)).ceil() as i64,
                }
            });
            desired.max(limit.min().unwrap_or(0).clamp(0, i64::from(current)) as u32)
        } else {
            desired
        }
    }
}

/// What metrics-server shows: it scrapes every `resolution` seconds, and each scrape is the
/// mean of the pods' usage since the one before (kubelet's CPU is a rate between two cAdvisor
/// samples). The HPA reads the newest scrape, so it sees a window's mean, a window late.
#[derive(Debug, Clone)]
pub struct MetricsServer {
    pub resolution_s: f64,
    /// The ready pods' utilisation at every simulator step of the current window.
    window: Vec<f64>,
    /// When the current window opened (the last scrape, or the first sample).
    window_start: Option<f64>,
    /// The newest scrape: the mean utilisation of the window before it.
    latest: Option<f64>,
}

impl MetricsServer {
    pub fn new(resolution_s: f64) -> Self {
        Self { resolution_s, window: Vec::new(), window_start: None, latest: None }
    }

    /// Takes the ready pods' utilisation at `now`; a scrape happens at every resolution boundary.
    pub fn sample(&mut self, now: f64, utilisation: f64) {
        if self.resolution_s <= 0.0 {
            self.latest = Some(utilisation);
            return;
        }
        let start = *self.window_start.get_or_insert(now);
        self.window.push(utilisation);
        if now - start + 1e-9 >= self.resolution_s {
            self.latest = Some(self.window.iter().sum::<f64>() / self.window.len() as f64);
            self.window.clear();
            self.window_start = Some(now);
        }
    }

    /// What the HPA reads now: the newest scrape, or `now_value` before the first one.
    pub fn read(&self, now_value: f64) -> f64 {
        self.latest.unwrap_or(now_value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hpa() -> Hpa {
        Hpa::new(HpaSpec::new(1, 100, 0.5))
    }

    fn all_ready(replicas: u32, utilisation: f64) -> Observed {
        Observed { replicas, ready: replicas, utilisation }
    }

    /// The documentation's example: a metric at 200m against a 100m target doubles the
    /// replicas; at 50m it halves them.
    #[test]
    fn the_replica_formula_doubles_and_halves() {
        assert_eq!(hpa().sync(0.0, all_ready(4, 1.0)), 8);
        assert_eq!(hpa().sync(0.0, all_ready(4, 0.25)), 2);
    }

    /// Within 10% of the target nothing changes; just past it, the formula applies.
    #[test]
    fn the_tolerance_holds_small_deviations() {
        assert_eq!(hpa().sync(0.0, all_ready(10, 0.54)), 10);
        assert_eq!(hpa().sync(0.0, all_ready(10, 0.46)), 10);
        assert_eq!(hpa().sync(0.0, all_ready(10, 0.56)), 12); // ceil(10 * 1.12)
    }

    /// The default scale-up policies: max(+4 pods, +100%) per 15 s, from the replicas at the
    /// period's start: 1 -> 5 -> 10 -> 20 for a target needing 20.
    #[test]
    fn scale_up_is_limited_by_the_default_policies() {
        let mut h = hpa();
        let need_20 = |r: u32| all_ready(r, 0.5 * 20.0 / f64::from(r));
        let r1 = h.sync(0.0, need_20(1));
        assert_eq!(r1, 5);
        // A second sync within the same 15 s period may not add more.
        assert_eq!(h.sync(10.0, need_20(r1)), 5);
        let r2 = h.sync(15.0, need_20(r1));
        assert_eq!(r2, 10);
        assert_eq!(h.sync(30.0, need_20(r2)), 20);
    }

    /// The 5-minute scale-down stabilisation: the highest recommendation of the last 300 s
    /// holds, so a dip right after a peak does not scale down.
    #[test]
    fn scale_down_waits_for_the_stabilisation_window() {
        let mut h = hpa();
        assert_eq!(h.sync(0.0, all_ready(8, 0.5)), 8);
        assert_eq!(h.sync(15.0, all_ready(8, 0.125)), 8, "8 was recommended 15 s ago");
        assert_eq!(h.sync(295.0, all_ready(8, 0.125)), 8);
        assert_eq!(h.sync(315.0, all_ready(8, 0.125)), 2, "after 300 s the low recommendation wins");
    }

    /// Pods that are not ready count as using nothing when scaling up: 4 replicas, 2 ready at
    /// 100% of a 50% target, look like 4 pods at 50%: no change, where counting only the ready
    /// pods would have asked for 4 -> 8 (2 * 2 = 4 more).
    #[test]
    fn unready_pods_count_as_idle_when_scaling_up() {
        assert_eq!(hpa().sync(0.0, Observed { replicas: 4, ready: 2, utilisation: 1.0 }), 4);
        assert_eq!(hpa().sync(0.0, Observed { replicas: 4, ready: 2, utilisation: 1.5 }), 6);
    }

    #[test]
    fn a_second_metric_wins_when_it_asks_for_more() {
        let mut h = hpa();
        // CPU at target: 4 stays 4; the other metric asks for 6.
        assert_eq!(h.sync_with(0.0, all_ready(4, 0.5), Some(6)), 6);
        // 3.0 cores predicted at 0.5 a pod: 6 pods; within 10% of 4 x 0.5 = 2.0: unchanged.
        assert_eq!(h.average_value_recommendation(4, 3.0, 0.5), 6);
        assert_eq!(h.average_value_recommendation(4, 2.1, 0.5), 4);
    }

    #[test]
    fn metrics_server_shows_the_last_window_mean_late() {
        let mut m = MetricsServer::new(15.0);
        // Steps of 5 s: 0, 5, 10 -> the window closes at 15 with the mean of 0.2, 0.4, 0.6, 0.8.
        for (t, u) in [(0.0, 0.2), (5.0, 0.4), (10.0, 0.6)] {
            m.sample(t, u);
            assert_eq!(m.read(u), u, "before the first scrape the value itself");
        }
        m.sample(15.0, 0.8);
        assert!((m.read(1.0) - 0.5).abs() < 1e-12);
        m.sample(20.0, 1.0);
        assert!((m.read(1.0) - 0.5).abs() < 1e-12, "the next scrape is not due yet");
    }

    #[test]
    fn the_replica_range_bounds_the_result() {
        let mut h = Hpa::new(HpaSpec::new(2, 6, 0.5));
        assert_eq!(h.sync(0.0, all_ready(4, 2.0)), 6);
        assert_eq!(Hpa::new(HpaSpec::new(2, 6, 0.5)).sync(0.0, all_ready(4, 0.01)), 2);
    }
}
