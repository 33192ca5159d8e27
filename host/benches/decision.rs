//! The per-tick decision path: forecast + risk plugin call + remediation plugin call + guard,
//! for 1 and for 1,000 workloads in one tick (one plugin session, a fresh sandboxed instance
//! per call, as the engine does), and the cost of its parts: one plugin call, one forecast.
//!
//! Run with `make bench` (it builds the plugins first). Per-workload cost = time / workloads.

use augur::config;
use augur::domain::{Forecast, Pod, Target, Workload};
use augur::engine::{PolicyRuntime, decide_blocking, decide_on_cores};
use augur::forecast::{Forecaster, HoltDamped};
use augur::metrics::Observation;
use augur::plugins::bindings::ForecastInput;
use augur::plugins::{Limits, Plugins, RuleSettings};
use divan::{Bencher, counter::ItemsCount};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

#[path = "../tests/all/common/mod.rs"]
mod common;

use common::plugin;

fn main() {
    let before = rss_mib();
    let lineups = lineups_after_two_days(1000);
    println!("resident memory: {before:.1} MiB, {:.1} MiB with 1,000 skill-gate lineups after two days of minutes ({:.1} KiB each)", rss_mib(), (rss_mib() - before) * 1024.0 / 1000.0);
    drop(lineups);
    divan::main();
}

fn rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let kb: f64 = status.lines().find_map(|l| l.strip_prefix("VmRSS:")).and_then(|v| v.split_whitespace().next()?.parse().ok()).unwrap_or(0.0);
    kb / 1024.0
}

/// `n` lineups as `host run` keeps them for `n` watched metrics at a one-day season of minutes,
/// each fed two days and an hour of points with a forecast at each (what they hold then: two
/// seasons, Holt-Winters fitted, every contender's forecasts in flight).
fn lineups_after_two_days(n: usize) -> Vec<augur::forecast::gate::Lineup> {
    let history = day_and_more();
    (0..n)
        .map(|_| {
            let mut lineup = augur::forecast::gate::Lineup::new("model:m", Box::new(HoltDamped::default()), 1440, true, true);
            history[..2880].iter().for_each(|v| lineup.observe(*v));
            for t in 2880..2940 {
                let primary = Forecast { forecaster: "model:m".into(), ..HoltDamped::default().forecast(&history[t - 60..t], 15, 60).unwrap() };
                lineup.issue(Ok(primary), &history[t - 60..t], 15, 60);
                lineup.observe(history[t]);
            }
            lineup
        })
        .collect()
}

/// A policy with one CPU risk rule (risk-cpu) and one remediation (scale).
fn policy(dir: &std::path::Path, index: usize) -> config::Policy {
    let text = format!(
        r#"
name: web-{index}
target: {{ kind: Deployment, namespace: bench, name: web-{index} }}
metrics: [{{ name: cpu, query: 'cpu', unit: cores }}]
forecast: {{ baseline: holt-damped, window: 20, horizon: 5, step: 60s }}
risks: [{{ name: cpu, metric: cpu, plugin: {risk} }}]
remediations: [{{ name: scale-up, risk: cpu, trigger: high, plugin: {scale}, capabilities: {{ actions: [scale] }} }}]
guard: {{ dry_run: true, min_replicas: 2, max_replicas: 50, cooldown: 0s, max_actions_per_hour: 3600, allowed_actions: [scale] }}
audit: {{ path: audit.jsonl }}
"#,
        risk = plugin("risk-cpu").display(),
        scale = plugin("scale").display()
    );
    config::parse(&text, &dir.join("bench.yaml"), &augur::config::Catalog::shipped()).expect("the bench policy is valid")
}

fn workload(index: usize) -> Workload {
    let target = Target { kind: "Deployment".into(), namespace: "bench".into(), name: format!("web-{index}") };
    let pods = (0..3)
        .map(|i| Pod { name: format!("web-{index}-{i}"), node: "n1".into(), phase: "Running".into(), ready: true, cpu_cores: Some(0.3), memory_bytes: Some(1e8), age_seconds: 600 , startup_seconds: None})
        .collect();
    Workload { target, replicas: 3, ready_replicas: 3, pods, nodes: vec![], paused: None, scaled_by: None }
}

/// A rising CPU series (the NASA morning ramp's shape) so that risks are high and the scale
/// plugin proposes an action that the guard then checks.
fn series() -> Vec<f64> {
    (0..20).map(|i| 0.6 + 0.05 * i as f64 + 0.03 * ((i * 7 % 5) as f64)).collect()
}

struct Setup {
    plugins: Arc<Plugins>,
    runtimes: Vec<PolicyRuntime>,
    workloads: Vec<Workload>,
    observations: Vec<Observation>,
    _dir: tempfile::TempDir,
}

fn setup(n: usize) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let plugins = Arc::new(Plugins::new(Limits::default()).unwrap());
    let mut runtimes = Vec::with_capacity(n);
    let mut observations = Vec::with_capacity(n);
    for i in 0..n {
        runtimes.push(PolicyRuntime::new(policy(dir.path(), i), &plugins, None, false).unwrap());
        observations.push(Observation { values: BTreeMap::from([("cpu".to_string(), 1.5)]), ..Default::default() });
    }
    // Fill every history with 20 points, as after 20 ticks a step apart.
    let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
    let step = runtimes[0].policy.forecast.step;
    let workloads: Vec<Workload> = (0..n).map(workload).collect();
    let due: Vec<usize> = (0..n).collect();
    for (k, value) in series().into_iter().enumerate() {
        let inputs: Vec<_> = workloads.iter().map(|w| Ok((Observation { values: BTreeMap::from([("cpu".to_string(), value)]), ..Default::default() }, w.clone()))).collect();
        decide_blocking(&plugins, &mut runtimes, &due, &inputs, t0 + step * k as u32, true);
    }
    Setup { plugins, runtimes, workloads, observations, _dir: dir }
}

type Decide = fn(&Plugins, &mut [PolicyRuntime], &[usize], &[augur::engine::Collected], SystemTime, bool) -> Vec<augur::engine::Decision>;

/// One tick's decisions for `n` workloads, on every core as the engine runs them. Divide the
/// time by `n` for the per-workload cost.
#[divan::bench(args = [1, 1000], sample_count = 30)]
fn decision_path(bencher: Bencher, n: usize) {
    bench_ticks(bencher, n, decide_on_cores);
}

/// The same 1,000 workloads on one thread (`decide_blocking`): beside `decision_path`, what
/// running the decisions on every core gains on this machine.
#[divan::bench(args = [1000], sample_count = 30)]
fn decision_path_one_thread(bencher: Bencher, n: usize) {
    bench_ticks(bencher, n, decide_blocking);
}

fn bench_ticks(bencher: Bencher, n: usize, decide: Decide) {
    let mut s = setup(n);
    let mut now = SystemTime::UNIX_EPOCH + Duration::from_secs(2_000_000);
    let step = s.runtimes[0].policy.forecast.step;
    let due: Vec<usize> = (0..n).collect();
    let inputs: Vec<_> = s.observations.iter().zip(&s.workloads).map(|(o, w)| Ok((o.clone(), w.clone()))).collect();
    // Each measured tick is a step after the last, so it takes a point and forecasts (the
    // whole path; a tick between steps reuses the step's forecasts and costs less).
    bencher.counter(ItemsCount::new(n)).bench_local(|| {
        now += step;
        let decisions = decide(&s.plugins, &mut s.runtimes, &due, &inputs, now, true);
        let proposals: usize = decisions.iter().map(|d| d.records.len()).sum();
        assert!(proposals >= n, "every workload gets a guarded proposal");
        proposals
    });
}

fn forecast_input_parts() -> (Target, Forecast, Vec<f64>) {
    let history = series();
    let forecast = HoltDamped::default().forecast(&history, 5, 60).unwrap();
    (workload(0).target, forecast, history)
}

/// One `assess` call: a fresh store and instance under the default limits, as every call.
#[divan::bench(sample_count = 50)]
fn plugin_call(bencher: Bencher) {
    let plugins = Plugins::new(Limits::default()).unwrap();
    let (target, forecast, history) = forecast_input_parts();
    let risk = plugin("risk-cpu");
    let settings = RuleSettings::new(BTreeMap::new());
    let input = ForecastInput { target: &target, metric: "cpu", unit: "cores", history: &history, forecast: &forecast, replicas: 3, ready_replicas: 3, interval_seconds: 60, startup_seconds: Some(60) };
    let mut session = plugins.session();
    session.assess(&risk, &settings, &input).unwrap();
    bencher.bench_local(|| session.assess(&risk, &settings, &input).unwrap());
}

/// Holt's damped trend on a 20-point window, 5 steps ahead.
#[divan::bench]
fn forecast_holt_damped(bencher: Bencher) {
    let history = series();
    bencher.bench_local(|| HoltDamped::default().forecast(divan::black_box(&history), 5, 60).unwrap());
}

/// The calibration's bookkeeping for one series and one forecast step: issue the corrected
/// interval of a 10-step forecast and score one step of it on the point that arrives.
#[divan::bench]
fn calibration_per_series_and_step(bencher: Bencher) {
    let history = series();
    let raw = HoltDamped::default().forecast(&history, 10, 60).unwrap();
    let mut calibration = augur::forecast::calibration::Calibration::for_forecaster(&raw.forecaster);
    let mut i = 0usize;
    bencher.bench_local(|| {
        let issued = calibration.issue(divan::black_box(&raw));
        i += 1;
        calibration.update(i % 10, history[i % history.len()], &issued);
    });
}

/// A day of minutes of a noisy daily wave: the gate's seasonal baselines are all live on it.
fn day_and_more() -> Vec<f64> {
    (0..3000).map(|t| 50.0 + 20.0 * (t as f64 / 1440.0 * std::f64::consts::TAU).sin() + ((t * 7919) % 13) as f64 * 0.3).collect()
}

/// The skill gate's bookkeeping for one series and one point, over the engine's contenders (a
/// model, holt-damped, last value, seasonal naive, Holt-Winters and their blend) at a 15-step
/// horizon: calibrate and remember each contender's forecast, choose, blend, and score every
/// remembered forecast on the point that arrives. The contenders' forecasts are made outside.
#[divan::bench]
fn gate_per_series_and_point(bencher: Bencher) {
    use augur::forecast::gate::{Gate, Role};
    let history = day_and_more();
    let names = ["model:m", "holt-damped", "last-value", "seasonal-naive", "holt-winters"];
    let raw: Vec<Forecast> = names.iter().enumerate().map(|(i, n)| Forecast { forecaster: n.to_string(), ..HoltDamped::default().forecast(&history[i..60 + i], 15, 60).unwrap() }).collect();
    let contenders: Vec<(String, Role)> = names.iter().enumerate().map(|(i, n)| (n.to_string(), if i == 0 { Role::Primary } else { Role::Baseline })).collect();
    let mut gate = Gate::new(&contenders, 1, true, true);
    let mut i = 0usize;
    // Past the warm-up, so that skill, choice and blend are all live.
    for _ in 0..200 {
        gate.issue(raw.iter().cloned().map(Ok).collect());
        gate.observe(history[i % history.len()]);
        i += 1;
    }
    bencher.with_inputs(|| raw.iter().cloned().map(Ok).collect::<Vec<_>>()).bench_local_values(|forecasts| {
        let served = gate.issue(divan::black_box(forecasts));
        i += 1;
        gate.observe(history[i % history.len()]);
        served
    });
}

/// The same with the baselines' own forecasts made by the lineup, as `host run` does per
/// series and point (holt-damped and last value on a 60-point window, seasonal naive and
/// Holt-Winters online over two days): everything the gate adds but the model's inference.
#[divan::bench]
fn lineup_per_series_and_point(bencher: Bencher) {
    use augur::forecast::gate::Lineup;
    let history = day_and_more();
    let mut lineup = Lineup::new("model:m", Box::new(HoltDamped::default()), 1440, true, true);
    history.iter().for_each(|v| lineup.observe(*v));
    let model = Forecast { forecaster: "model:m".into(), ..HoltDamped::default().forecast(&history[..60], 15, 60).unwrap() };
    let mut i = 0usize;
    bencher.with_inputs(|| model.clone()).bench_local_values(|primary| {
        i += 1;
        let window = &history[(i % 2000)..(i % 2000) + 60];
        let served = lineup.issue(Ok(primary), divan::black_box(window), 15, 60);
        lineup.observe(history[(i % 2000) + 60]);
        served
    });
}
