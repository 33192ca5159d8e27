//! `host replay`: one trace, four controllers, the same simulated Deployment.
//!
//! The trace drives the simulator's CPU demand (scaled so that its peak needs a set share of
//! the policy's `max_replicas`), and each controller runs on its own copy of the cluster,
//! with the same replica range, pod capacity and pod start-up delay, from the same point of
//! the trace (one forecast window in: the points before it are the past that the simulator
//! serves as history, so Augur's warm start fills its window as Prometheus would):
//! - **augur**: the policy itself, through the real engine (forecaster, plugins, guard), its
//!   guard's `dry_run` and `remediate` overridden so that it acts;
//! - **hpa**: a model of the Kubernetes HPA v2 (`hpa`), syncing every 15 s on the pods' CPU
//!   utilisation as metrics-server reports it (a window's mean, a scrape late);
//! - **ehpa**: a model of the predictive method of Crane's EHPA (`ehpa`): the same HPA fed
//!   also with the maximum of a seasonal forecast over the next 10 minutes;
//! - **oracle**: knows the demand ahead and starts each pod exactly one start-up delay before
//!   it is needed (`oracle_plan`): no controller can have fewer overload minutes, and none
//!   with as few can use fewer replica-minutes.
//!
//! Time is simulated and nothing sleeps: a three-day trace replays in seconds.

pub mod ehpa;
pub mod hpa;

use crate::series::Series;
use crate::config;
use crate::domain::Target;
use crate::engine::{Engine, PolicyRuntime, Seams};
use crate::plugins::{Limits, Plugins};
use crate::sim::{SimCluster, SimConfig, SimStats, Snapshot, Trace};
use anyhow::{Context, bail};
use ehpa::{Ehpa, EhpaSpec};
use hpa::{Hpa, HpaSpec, MetricsServer, Observed};
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// The simulator's step in a replay; the HPA syncs every third, samples are every twelfth.
const SIM_STEP_S: f64 = 5.0;

/// What to replay.
#[derive(Debug, Clone)]
pub struct Options {
    pub policy: PathBuf,
    pub trace: PathBuf,
    pub column: String,
    /// The trace's step, when it has no time column.
    pub step: Option<Duration>,
    /// The trace is scaled so that its peak needs this share of `max_replicas` pods.
    pub peak: f64,
    /// CPU one pod serves, cores.
    pub capacity_per_pod: f64,
    /// The HPA's `averageUtilization` target, as a fraction.
    pub hpa_target: f64,
    /// Time from a pod's creation to ready, for every controller.
    pub startup: Duration,
    /// How often metrics-server scrapes (its `--metric-resolution`, 15 s by default): the
    /// HPA and the EHPA read the mean of the last such window.
    pub metrics_resolution: Duration,
}

impl Options {
    /// The defaults: those of `policies/nginx.yaml` and of the simulator.
    pub fn new(policy: PathBuf, trace: PathBuf, column: String) -> Self {
        Self {
            policy,
            trace,
            column,
            step: None,
            peak: 0.8,
            capacity_per_pod: 0.5,
            hpa_target: 0.8,
            startup: Duration::from_secs(60),
            metrics_resolution: Duration::from_secs(15),
        }
    }
}

/// One controller's account of a replay.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Outcome {
    /// Minutes during which demand exceeded the ready pods' capacity.
    pub overload_minutes: f64,
    /// Replicas (ready or starting) integrated over time.
    pub replica_minutes: f64,
    pub peak_replicas: u32,
    /// Changes of the replica count.
    pub actions: u32,
    /// Changes of the replica count per day of the replay.
    pub changes_per_day: f64,
}

impl Outcome {
    /// The outcome over the replay's span, `from_s` to `to_s` simulated seconds.
    fn from_stats(stats: &SimStats, from_s: f64, to_s: f64) -> Self {
        let mut replica_seconds = 0.0;
        for (i, (at, replicas)) in stats.replica_changes.iter().enumerate() {
            let until = stats.replica_changes.get(i + 1).map_or(to_s, |(t, _)| *t).min(to_s);
            replica_seconds += f64::from(*replicas) * (until - at.max(from_s)).max(0.0);
        }
        let actions = stats.replica_changes.len().saturating_sub(1) as u32;
        let days = ((to_s - from_s) / 86_400.0).max(1e-9);
        Self {
            overload_minutes: stats.overload_seconds / 60.0,
            replica_minutes: replica_seconds / 60.0,
            peak_replicas: stats.peak_replicas,
            actions,
            changes_per_day: f64::from(actions) / days,
        }
    }
}

/// Demand, ready capacity and replicas, one sample a minute.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Timeline {
    pub minutes: Vec<f64>,
    pub demand: Vec<f64>,
    pub capacity: Vec<f64>,
    pub replicas: Vec<u32>,
}

impl Timeline {
    fn sample(&mut self, seconds: f64, s: Snapshot) {
        self.minutes.push(seconds / 60.0);
        self.demand.push(s.demand);
        self.capacity.push(f64::from(s.ready) * s.capacity_per_pod);
        self.replicas.push(s.replicas);
    }
}

/// The set-up every controller shared.
#[derive(Debug, Clone, PartialEq)]
pub struct Setup {
    pub policy: String,
    pub trace: String,
    pub column: String,
    pub points: usize,
    pub step_seconds: u32,
    pub cores_per_unit: f64,
    pub capacity_per_pod: f64,
    pub min_replicas: u32,
    pub max_replicas: u32,
    pub startup_seconds: f64,
    pub initial_replicas: u32,
    pub hpa_target: f64,
    pub peak: f64,
    /// Seconds of trace before the replay starts: the history served to the warm start.
    pub warm_seconds: f64,
    pub metrics_resolution_seconds: f64,
}

/// The replay's result: `--json` prints `{augur, hpa, ehpa, oracle}`.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub augur: Outcome,
    pub hpa: Outcome,
    pub ehpa: Outcome,
    pub oracle: Outcome,
    #[serde(skip)]
    pub setup: Setup,
    /// The timelines of augur, hpa, ehpa and oracle, in that order (see `controllers`).
    #[serde(skip)]
    pub timelines: [Timeline; 4],
}

/// Runs the four controllers over the trace.
pub async fn run(options: &Options) -> anyhow::Result<Report> {
    check(options)?;
    let mut policy = config::load(&options.policy)?;
    // The replay asks what the policy would do if it acted.
    policy.guard.dry_run = false;
    policy.guard.remediate = true;
    let series = Series::read(&options.trace, &options.column, None)?;
    let step_seconds = series.step(options.step.map(|s| s.as_secs() as u32), &options.trace)?;
    let (min, max) = (policy.guard.min_replicas.max(1), policy.guard.max_replicas);
    let cores_per_unit = demand_scale(&series.values, options.peak, max, options.capacity_per_pod)
        .with_context(|| format!("{}: column `{}` has no value above 0, so it cannot drive a demand", options.trace.display(), options.column))?;
    let trace = Trace { start_unix: 1_700_000_000, step_seconds: u64::from(step_seconds), values: series.values.clone() };
    let end_s = (series.values.len() - 1) as f64 * f64::from(step_seconds);
    // One forecast window of the policy's steps is the past the warm start reads.
    let warm_s = (policy.forecast.window as f64 * policy.forecast.step.as_secs_f64()).min(end_s / 2.0);
    let sim_config = SimConfig {
        trace,
        cores_per_unit,
        capacity_per_pod: options.capacity_per_pod,
        startup: options.startup,
        // Scaling only: no memory leak to restart for, no cooling failure to cordon for.
        memory_leak_per_minute: 0.0,
        heat_event: None,
        step: Duration::from_secs_f64(SIM_STEP_S),
        start: Duration::from_secs_f64(warm_s),
        ..SimConfig::default()
    };
    // The workload has been running: every controller starts with the replicas the HPA's
    // target asks for at the replay's first point, not at the floor under a high load.
    let initial = initial_replicas(&sim_config, options.hpa_target, min, max);
    let setup = Setup {
        policy: options.policy.display().to_string(),
        trace: options.trace.display().to_string(),
        column: options.column.clone(),
        points: series.values.len(),
        step_seconds,
        cores_per_unit,
        capacity_per_pod: options.capacity_per_pod,
        min_replicas: min,
        max_replicas: max,
        startup_seconds: options.startup.as_secs_f64(),
        initial_replicas: initial,
        hpa_target: options.hpa_target,
        peak: options.peak,
        warm_seconds: warm_s,
        metrics_resolution_seconds: options.metrics_resolution.as_secs_f64(),
    };

    let target = policy.target.clone();
    let new_sim = || {
        let sim = Arc::new(SimCluster::new(sim_config.clone()));
        sim.add_deployment(&target, initial);
        sim
    };
    let span = (warm_s, end_s);

    let sim = new_sim();
    let audit = tempfile::tempdir().context("cannot create a temporary folder for the replay's audit log")?;
    let plugins = Arc::new(Plugins::new(Limits::default())?);
    let runtime = PolicyRuntime::new(policy, &plugins, Some(&audit.path().join("replay-audit.jsonl")), false)?;
    let mut engine = Engine::new(plugins, Seams::all(sim.clone()), vec![runtime], false)?;
    engine.set_echo(false);
    engine.warm_start(sim.now()).await;
    let augur = replay_one(&sim, &target, span, Controller::Augur(&mut engine)).await;

    let resolution = options.metrics_resolution.as_secs_f64();
    let spec = HpaSpec::new(min, max, options.hpa_target);
    let sim = new_sim();
    let hpa = replay_one(&sim, &target, span, Controller::Hpa(Hpa::new(spec.clone()), MetricsServer::new(resolution))).await;

    let sim = new_sim();
    let ehpa = Ehpa::new(Hpa::new(spec), EhpaSpec::new(options.capacity_per_pod * options.hpa_target));
    let ehpa = replay_one(&sim, &target, span, Controller::Ehpa(Box::new(ehpa), MetricsServer::new(resolution))).await;

    let plan = oracle_schedule(&sim_config, min, max, end_s);
    let oracle = replay_schedule(&sim_config, &target, initial, end_s, plan).await;

    let [augur, hpa, ehpa] = [augur, hpa, ehpa].map(|(stats, timeline)| (Outcome::from_stats(&stats, warm_s, end_s), timeline));
    Ok(Report { augur: augur.0, hpa: hpa.0, ehpa: ehpa.0, oracle: oracle.0, setup, timelines: [augur.1, hpa.1, ehpa.1, oracle.1] })
}

/// Cores per unit of a series whose peak should need `peak` of `max_replicas` pods of
/// `capacity_per_pod` cores; `None` when no value is above 0.
pub fn demand_scale(values: &[f64], peak: f64, max_replicas: u32, capacity_per_pod: f64) -> Option<f64> {
    let top = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    (top > 0.0).then(|| peak * f64::from(max_replicas) * capacity_per_pod / top)
}

fn check(options: &Options) -> anyhow::Result<()> {
    if !(options.peak > 0.0 && options.peak.is_finite()) {
        bail!("--peak must be above 0 (the share of max_replicas the trace's peak needs), got {}", options.peak);
    }
    if !(options.capacity_per_pod > 0.0 && options.capacity_per_pod.is_finite()) {
        bail!("--capacity-per-pod must be above 0 cores, got {}", options.capacity_per_pod);
    }
    if !(options.hpa_target > 0.0 && options.hpa_target <= 1.0) {
        bail!("--hpa-target must be in (0, 1] (0.8 for averageUtilization: 80), got {}", options.hpa_target);
    }
    Ok(())
}

/// Ready replicas at the start: the demand where the replay starts at `target` utilisation, in range.
pub fn initial_replicas(config: &SimConfig, target: f64, min: u32, max: u32) -> u32 {
    let demand = config.trace.at(config.start.as_secs_f64()) * config.cores_per_unit;
    ((demand / (config.capacity_per_pod * target) - 1e-9).ceil().max(0.0) as u32).clamp(min, max)
}

/// The oracle's schedule for a simulated cluster: replicas at every simulator step from
/// the config's start to `end_s` seconds (see `oracle_plan`).
pub fn oracle_schedule(config: &SimConfig, min: u32, max: u32, end_s: f64) -> Vec<u32> {
    let step = config.step.as_secs_f64();
    let start = config.start.as_secs_f64();
    let lag = (config.startup.as_secs_f64() / step).ceil() as usize;
    let steps = ((end_s - start) / step).ceil().max(0.0) as usize + lag + 1;
    let demand: Vec<f64> = (0..steps).map(|k| config.trace.at(start + k as f64 * step) * config.cores_per_unit).collect();
    oracle_plan(&demand, config.capacity_per_pod, lag, min, max)
}

/// Replays a fixed schedule (replicas at every simulator step) on a fresh cluster that
/// starts with `initial` ready pods, from the config's start to `end_s`: the oracle's, or
/// any other to compare with it.
pub async fn replay_schedule(config: &SimConfig, target: &Target, initial: u32, end_s: f64, schedule: Vec<u32>) -> (Outcome, Timeline) {
    let sim = SimCluster::new(config.clone());
    sim.add_deployment(target, initial);
    let span = (config.start.as_secs_f64(), end_s);
    let (stats, timeline) = replay_one(&sim, target, span, Controller::Schedule(schedule)).await;
    (Outcome::from_stats(&stats, span.0, span.1), timeline)
}

enum Controller<'e> {
    Augur(&'e mut Engine),
    Hpa(Hpa, MetricsServer),
    Ehpa(Box<Ehpa>, MetricsServer),
    /// Replicas at every simulator step (the oracle's).
    Schedule(Vec<u32>),
}

/// Drives one controller over the trace from `span.0` to `span.1` simulated seconds, one
/// simulator step at a time.
async fn replay_one(sim: &SimCluster, target: &Target, span: (f64, f64), mut controller: Controller<'_>) -> (SimStats, Timeline) {
    let step = SIM_STEP_S;
    let hpa_every = 3; // 15 s
    let sample_every = 12; // 60 s
    let steps = ((span.1 - span.0) / step).ceil().max(0.0) as usize;
    let mut timeline = Timeline::default();
    let mut ticked = false;
    for k in 0..steps {
        let t = span.0 + k as f64 * step;
        let snapshot = sim.snapshot(target).expect("the replay's deployment exists");
        let utilisation = if snapshot.ready == 0 { 0.0 } else { snapshot.ready_cpu / (f64::from(snapshot.ready) * snapshot.capacity_per_pod) };
        let wanted = match &mut controller {
            Controller::Augur(engine) => {
                let now = sim.now();
                if !ticked || engine.next_due().is_some_and(|due| due <= now + Duration::from_millis(1)) {
                    engine.tick(now).await;
                    ticked = true;
                }
                None
            }
            Controller::Hpa(hpa, metrics) => {
                metrics.sample(t, utilisation);
                (k % hpa_every == 0).then(|| hpa.sync(t, Observed { replicas: snapshot.replicas, ready: snapshot.ready, utilisation: metrics.read(utilisation) }))
            }
            Controller::Ehpa(ehpa, metrics) => {
                metrics.sample(t, utilisation);
                ehpa.observe(t, snapshot.ready_cpu);
                (k % hpa_every == 0).then(|| ehpa.sync(t, Observed { replicas: snapshot.replicas, ready: snapshot.ready, utilisation: metrics.read(utilisation) }))
            }
            Controller::Schedule(plan) => plan.get(k).copied(),
        };
        if let Some(replicas) = wanted.filter(|r| *r != snapshot.replicas) {
            sim.set_replicas(target, replicas).expect("the replay's deployment exists");
        }
        if k % sample_every == 0 {
            timeline.sample(t - span.0, sim.snapshot(target).expect("the replay's deployment exists"));
        }
        sim.advance(Duration::from_secs_f64(step));
    }
    (sim.stats(target).unwrap_or_default(), timeline)
}

/// The oracle's replicas at each step, from the demand at each step (cores): the fewest
/// pods that leave no step's demand above the ready capacity, where a pod is ready `lag`
/// steps after it is created and scale-down removes the newest pods.
///
/// A pod that serves step `j` must exist, continuously, from step `j - lag`; so at step `k`
/// at least `max(need[k..=k + lag])` pods must exist, and keeping exactly that many (oldest
/// first) leaves `need[k]` of them ready at every step. Demand above `max` pods is overload
/// no controller in the range can avoid.
pub fn oracle_plan(demand: &[f64], capacity_per_pod: f64, lag: usize, min: u32, max: u32) -> Vec<u32> {
    let need: Vec<u32> = demand.iter().map(|d| ((d / capacity_per_pod - 1e-9).ceil().max(0.0) as u32).clamp(min, max)).collect();
    (0..need.len()).map(|k| need[k..need.len().min(k + lag + 1)].iter().copied().max().unwrap_or(min)).collect()
}

impl Report {
    /// Each controller's name, outcome and timeline: augur, hpa, ehpa, oracle.
    pub fn controllers(&self) -> [(&'static str, Outcome, &Timeline); 4] {
        let [augur, hpa, ehpa, oracle] = &self.timelines;
        [("augur", self.augur, augur), ("hpa", self.hpa, hpa), ("ehpa", self.ehpa, ehpa), ("oracle", self.oracle, oracle)]
    }

    /// Every controller's timeline as CSV: `minute,controller,demand,capacity,replicas`.
    pub fn timeline_csv(&self) -> String {
        let mut out = String::from("minute,controller,demand,capacity,replicas\n");
        for (name, _, t) in self.controllers() {
            for i in 0..t.minutes.len() {
                out.push_str(&format!("{:.0},{name},{:.4},{:.4},{}\n", t.minutes[i], t.demand[i], t.capacity[i], t.replicas[i]));
            }
        }
        out
    }

    /// A Markdown table, with the set-up above it.
    pub fn table(&self) -> String {
        let s = &self.setup;
        let days = s.points.saturating_sub(1) as f64 * f64::from(s.step_seconds) / 86_400.0;
        let mut out = format!(
            "{} column `{}`: {} points, step {} s ({:.1} days; the first {:.0} min are the warm start's history). Peak demand = {:.0}% of {} pods x {} cores; replicas {}..{}, {} at the start; pods ready {} s after creation; HPA target {:.0}% CPU, read through metrics-server every {} s.\n\n",
            s.trace,
            s.column,
            s.points,
            s.step_seconds,
            days,
            s.warm_seconds / 60.0,
            s.peak * 100.0,
            s.max_replicas,
            s.capacity_per_pod,
            s.min_replicas,
            s.max_replicas,
            s.initial_replicas,
            s.startup_seconds,
            s.hpa_target * 100.0,
            s.metrics_resolution_seconds
        );
        out.push_str("| controller | overload minutes | replica-minutes | peak replicas | replica changes | changes per day |\n|---|---:|---:|---:|---:|---:|\n");
        let name = Path::new(&s.policy).file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let rows = [
            (format!("augur ({name})"), self.augur),
            ("hpa (autoscaling/v2 defaults)".to_string(), self.hpa),
            ("ehpa (a model of Crane EHPA's method)".to_string(), self.ehpa),
            ("oracle (lower bound)".to_string(), self.oracle),
        ];
        for (label, o) in rows {
            out.push_str(&format!("| {label} | {:.1} | {:.0} | {} | {} | {:.1} |\n", o.overload_minutes, o.replica_minutes, o.peak_replicas, o.actions, o.changes_per_day));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_oracle_starts_pods_one_start_up_ahead() {
        // 1 pod of capacity 1.0; demand needs 3 pods at step 5 only; pods take 2 steps.
        let demand = [0.5, 0.5, 0.5, 0.5, 0.5, 2.5, 0.5, 0.5];
        assert_eq!(oracle_plan(&demand, 1.0, 2, 1, 10), vec![1, 1, 1, 3, 3, 3, 1, 1]);
    }

    #[test]
    fn the_oracle_stays_in_the_replica_range() {
        assert_eq!(oracle_plan(&[0.0, 50.0, 0.0], 1.0, 0, 2, 10), vec![2, 10, 2]);
    }
}
