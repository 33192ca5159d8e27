//! The trained forecasters through the real ONNX Runtime: parity with PyTorch, card checks,
//! the fallbacks, and `host backtest` (figures checked against an independent computation,
//! and the shipped default against the seasonal baselines on real held-out data).
//!
//! `make test` trains the tiny CI model (var/models/tiny) with models/train.py before these
//! run, and fetches ONNX Runtime.

use crate::common;

use augur::config;
use augur::domain::{Pod, Target, Workload};
use augur::engine::{PolicyRuntime, decide_blocking};
use augur::forecast::{ForecastError, Forecaster, OnnxModel};
use augur::metrics::Observation;
use augur::plugins::{Limits, Plugins};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, SystemTime};

fn model(name: &str) -> PathBuf {
    common::root().join("models").join(name).join("model.onnx")
}

fn tiny() -> PathBuf {
    let path = common::root().join("var/models/tiny/model.onnx");
    assert!(path.is_file(), "{} is missing: `make test` trains it (make tiny-model)", path.display());
    path
}

/// Runs the reference inputs models/train.py saved through ort and compares with PyTorch's
/// outputs. float32 keeps about 7 digits, so above 1 the difference is taken relative.
fn assert_matches_pytorch(path: &Path) {
    let reference: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(path.with_file_name("reference.json")).unwrap()).unwrap();
    let shape: Vec<usize> = reference["shape_in"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as usize).collect();
    // null: a point of seasonal context that is unknown (NaN to the model).
    let input: Vec<f32> = reference["input"].as_array().unwrap().iter().map(|v| v.as_f64().map_or(f32::NAN, |v| v as f32)).collect();
    let want: Vec<f64> = reference["output"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
    let model = OnnxModel::load(path).unwrap();
    let input = ndarray::Array3::from_shape_vec((shape[0], shape[1], shape[2]), input).unwrap();
    let got = model.infer(&input).unwrap();
    let out_shape: Vec<usize> = reference["shape_out"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as usize).collect();
    assert_eq!(got.shape(), &out_shape[..]);
    let worst = got.iter().zip(&want).map(|(g, w)| (f64::from(*g) - w).abs() / w.abs().max(1.0)).fold(0.0, f64::max);
    assert!(worst <= 1e-4, "{}: ort differs from PyTorch by {worst}", path.display());
    // A model with seasonal context: the host gathers the lags' segments from a real history
    // as models/train.py does (the card's layout read by two programs), and the forecasts agree.
    let histories = reference["histories"].as_array().cloned().unwrap_or_default();
    assert_eq!(histories.is_empty(), model.card().context.is_none(), "{}: reference.json has histories exactly when the card has a context", path.display());
    for history in histories {
        let step = history["step"].as_u64().unwrap() as u32;
        let values: Vec<f64> = history["values"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap_or(f64::NAN)).collect();
        let want: Vec<f64> = history["output"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
        let horizon = model.card().horizon;
        let got = model.forecast_batch(&[vec![&values[..]]], horizon, step).pop().unwrap().unwrap().swap_remove(0);
        for h in 0..horizon {
            let (lower, upper) = (got.lower.as_ref().unwrap()[h], got.upper.as_ref().unwrap()[h]);
            for (g, w) in [(lower, want[3 * h].max(0.0)), (got.predicted[h], want[3 * h + 1].max(0.0)), (upper, want[3 * h + 2])] {
                assert!((g - w).abs() / w.abs().max(1.0) <= 1e-4, "{}: step {step}s, h={}: the host's forecast {g} differs from PyTorch's {w} on the same history", path.display(), h + 1);
            }
        }
    }
}

#[test]
fn the_model_trained_in_this_test_run_matches_pytorch() {
    let path = tiny();
    assert_matches_pytorch(&path);
    let card = OnnxModel::load(&path).unwrap().card().clone();
    assert_eq!((card.window, card.horizon, card.name.as_str()), (20, 5, "tiny"));
}

#[test]
fn the_seasonal_model_trained_in_this_test_run_matches_pytorch_and_reads_a_day_back() {
    let path = common::root().join("var/models/tiny-seasonal/model.onnx");
    assert!(path.is_file(), "{} is missing: `make test` trains it (make tiny-model)", path.display());
    assert_matches_pytorch(&path);
    let model = OnnxModel::load(&path).unwrap();
    let context = model.card().context.clone().expect("the card has a context");
    assert_eq!((context.lags.as_slice(), context.points), (&[Duration::from_secs(86_400)][..], 25));
    // One day at minutes, plus the segment's points before the lag less the horizon.
    assert_eq!(model.history_used(60), 1440 + 25 - 5);
}

#[test]
fn every_shipped_model_matches_pytorch() {
    for name in ["lstm", "lstm-seasonal", "dlinear", "dlinear-seasonal", "transformer", "transformer-seasonal", "prototype"] {
        assert_matches_pytorch(&model(name));
    }
}

fn policy_text(forecast: &str, metrics: &str) -> String {
    let dist = common::root().join("plugins/dist");
    format!(
        r#"
name: web
target: {{ kind: Deployment, namespace: default, name: web }}
metrics: [{metrics}]
forecast: {forecast}
risks: [{{ name: cpu, metric: cpu, plugin: {dist}/risk-cpu.wasm, settings: {{ capacity-per-pod: 0.5 }} }}]
remediations: [{{ name: up, risk: cpu, trigger: high, plugin: {dist}/scale.wasm, capabilities: {{ actions: [scale] }} }}]
guard: {{ dry_run: true, min_replicas: 1, max_replicas: 20, cooldown: 0s, allowed_actions: [scale] }}
audit: {{ path: audit.jsonl }}
"#,
        dist = dist.display()
    )
}

const CPU: &str = "{ name: cpu, query: cpu, unit: cores }";

fn problems(forecast: &str, metrics: &str) -> Vec<String> {
    match config::parse(&policy_text(forecast, metrics), &common::root().join("policies/test.yaml"), &augur::config::Catalog::shipped()) {
        Ok(_) => Vec::new(),
        Err(problems) => problems.iter().map(|p| p.to_string()).collect(),
    }
}

#[test]
fn a_policy_that_does_not_fit_the_models_card_is_refused() {
    let lstm = model("lstm");
    let at = |extra: &str| format!("{{ model: {}, {extra} }}", lstm.display());
    assert!(problems(&at("horizon: 10, step: 60s"), CPU).is_empty(), "{:?}", problems(&at("horizon: 10"), CPU));
    let window = problems(&at("window: 20"), CPU);
    assert!(window.iter().any(|p| p.contains("forecast.window") && p.contains("reads exactly 60 points") && p.contains("model.yaml")), "{window:?}");
    let step = problems(&at("step: 30s"), CPU);
    assert!(step.iter().any(|p| p.contains("forecast.step") && p.contains("1m, 5m")), "{step:?}");
    let horizon = problems(&at("horizon: 30"), CPU);
    assert!(horizon.iter().any(|p| p.contains("forecast.horizon") && p.contains("at most 15")), "{horizon:?}");
    // The prototype's 7-metric layout needs its seven metrics, and forecasts only those.
    let joint = problems(&format!("{{ model: {}, horizon: 5 }}", model("prototype").display()), CPU);
    assert!(joint.iter().any(|p| p.contains("metrics") && p.contains("node_cpu_usage")), "{joint:?}");
    assert!(joint.iter().any(|p| p.contains("risks") && p.contains("`cpu`")), "{joint:?}");
}

#[test]
fn a_graph_that_does_not_match_its_card_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(tiny(), dir.path().join("model.onnx")).unwrap();
    let card = std::fs::read_to_string(tiny().with_file_name("model.yaml")).unwrap().replace("window: 20", "window: 30");
    std::fs::write(dir.path().join("model.yaml"), card).unwrap();
    let err = OnnxModel::load(&dir.path().join("model.onnx")).unwrap_err().to_string();
    assert!(err.contains("input") && err.contains("[-1, 30, 1]") && err.contains("fix"), "{err}");
    std::fs::remove_file(dir.path().join("model.yaml")).unwrap();
    let err = OnnxModel::load(&dir.path().join("model.onnx")).unwrap_err().to_string();
    assert!(err.contains("cannot read the model card"), "{err}");
}

fn workload() -> Workload {
    let pods = (0..2).map(|i| Pod { name: format!("web-{i}"), node: "n1".into(), phase: "Running".into(), ready: true, cpu_cores: Some(0.2), memory_bytes: Some(1e8), age_seconds: 600 , startup_seconds: None}).collect();
    Workload { target: Target { kind: "Deployment".into(), namespace: "default".into(), name: "web".into() }, replicas: 2, ready_replicas: 2, pods, nodes: vec![], paused: None, scaled_by: None }
}

#[test]
fn the_fallback_serves_while_the_window_fills_and_when_the_model_output_is_not_finite() {
    // The skill gate off: the model serves whenever it can (the gate's own test is below).
    let policy = config::parse(&policy_text(&format!("{{ model: {}, horizon: 5, gate: false }}", tiny().display()), CPU), &common::root().join("policies/test.yaml"), &augur::config::Catalog::shipped()).unwrap();
    let plugins = Plugins::new(Limits::default()).unwrap();
    let mut runtimes = vec![PolicyRuntime::new(policy, &plugins, None, false).unwrap()];
    let mut tick = |value: f64, t: u64| {
        let inputs = vec![Ok((Observation { values: BTreeMap::from([("cpu".to_string(), value)]), ..Default::default() }, workload()))];
        let mut decisions = decide_blocking(&plugins, &mut runtimes, &[0], &inputs, SystemTime::UNIX_EPOCH + Duration::from_secs(60 * t), true);
        decisions.remove(0).forecasts.remove(0)
    };
    for t in 0..19 {
        let f = tick(0.3 + 0.01 * t as f64, t);
        assert_eq!(f.forecast.forecaster, if t < 2 { "last-value" } else { "holt-damped" });
        assert!(f.fallback.as_deref().unwrap().contains("model:tiny needs at least 20 points"), "{:?}", f.fallback);
    }
    let f = tick(0.5, 19);
    assert_eq!((f.forecast.forecaster.as_str(), f.fallback), ("model:tiny", None));
    // A real fault through the real model: 1e39 is finite as f64 but overflows the model's
    // float32 input, and the output is not finite. The fallback serves and says why.
    let f = tick(1e39, 20);
    assert_eq!(f.forecast.forecaster, "holt-damped");
    assert!(f.fallback.as_deref().unwrap().contains("model:tiny produced a value that is not finite"), "{:?}", f.fallback);
}

/// The skill gate through the engine: the policy's own forecaster (here linear trend, so that
/// the series can be built to make it win and then lose) is shadowed until it has shown skill,
/// promoted on a ramp it extrapolates exactly, and demoted on a random walk where it chases
/// slopes that are not there. Every forecast record names who served, why, and each
/// contender's skill against the best baseline.
#[test]
fn the_skill_gate_shadows_promotes_and_demotes_the_policys_forecaster() {
    let policy = config::parse(&policy_text("{ baseline: linear-trend, window: 20, horizon: 5, season: 10m }", CPU), &common::root().join("policies/test.yaml"), &augur::config::Catalog::shipped()).unwrap();
    let plugins = Plugins::new(Limits::default()).unwrap();
    let mut runtimes = vec![PolicyRuntime::new(policy, &plugins, None, false).unwrap()];
    let (mut walk, mut seed) = (0.0f64, 7u64);
    let mut records = Vec::new();
    for t in 0..900u64 {
        let value = if t < 300 {
            1.0 + 0.01 * t as f64
        } else {
            seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            walk += ((seed >> 11) as f64 / (1u64 << 53) as f64 - 0.5) * 0.2;
            4.0 + walk
        };
        let inputs = vec![Ok((Observation { values: BTreeMap::from([("cpu".to_string(), value)]), ..Default::default() }, workload()))];
        let mut decisions = decide_blocking(&plugins, &mut runtimes, &[0], &inputs, SystemTime::UNIX_EPOCH + Duration::from_secs(60 * t), true);
        records.push(decisions.remove(0).forecasts.remove(0));
    }
    let serving = |t: usize| records[t].forecast.forecaster.clone();
    let gate = |t: usize| serde_json::to_value(records[t].gate.as_ref().unwrap()).unwrap();
    // Shadowed first: the fallback serves while nothing is judged.
    assert_eq!(serving(30), "holt-damped", "{}", gate(30));
    assert_eq!(gate(30)["why"]["kind"], "unproven", "{}", gate(30));
    assert_eq!(gate(30)["standings"][0]["forecaster"], "linear-trend");
    // Promoted on the ramp once judged (60 points at each of 5 steps, from the third point).
    let promoted = (0..300).find(|&t| serving(t) == "linear-trend").expect("promoted on the ramp");
    assert!((60..120).contains(&promoted), "promoted at {promoted}");
    let on_ramp = gate(299);
    assert_eq!(on_ramp["why"]["kind"], "best-skill");
    assert_eq!(on_ramp["why"]["replaced"], "holt-damped");
    assert!(on_ramp["standings"][0]["vs_best_baseline"].as_f64().unwrap() < 0.5, "{on_ramp}");
    // Demoted on the walk, and not back.
    let demoted = (300..900).find(|&t| serving(t) != "linear-trend").expect("demoted on the walk");
    assert!(demoted < 600, "demoted at {demoted}");
    assert!((demoted..900).all(|t| serving(t) != "linear-trend"), "stays demoted");
    assert_eq!(gate(demoted)["why"]["replaced"], "linear-trend", "{}", gate(demoted));
    let last = gate(899);
    assert!(last["standings"][0]["vs_best_baseline"].as_f64().unwrap() > 1.05, "{last}");
    // The seasonal baselines (a 10-point season here) joined once they had their history.
    assert!(last["standings"].as_array().unwrap().iter().any(|s| s["forecaster"] == "holt-winters" && s["available"] == true), "{last}");
    assert_eq!(records[899].fallback, None, "shadowed is not a fallback: the forecaster could forecast");
}

#[test]
fn the_prototypes_seven_metric_layout_forecasts_its_metrics_together() {
    const SEVEN: [&str; 7] = ["cpu_allocation_efficiency", "memory_allocation_efficiency", "disk_io", "network_latency", "node_cpu_usage", "node_memory_usage", "node_temperature"];
    let metrics = SEVEN.iter().map(|m| format!("{{ name: {m}, query: {m} }}")).collect::<Vec<_>>().join(", ");
    let text = policy_text(&format!("{{ model: {}, horizon: 5, gate: false }}", model("prototype").display()), &metrics).replace("metric: cpu,", "metric: node_cpu_usage,");
    let policy = config::parse(&text, &common::root().join("policies/test.yaml"), &augur::config::Catalog::shipped()).unwrap_or_else(|p| panic!("{p:?}"));
    assert_eq!(policy.forecast.window, 20, "the card's window");
    let plugins = Plugins::new(Limits::default()).unwrap();
    let mut runtimes = vec![PolicyRuntime::new(policy, &plugins, None, false).unwrap()];
    let mut last = None;
    for t in 0..20u64 {
        let values = SEVEN.iter().enumerate().map(|(i, m)| (m.to_string(), 10.0 * (i + 1) as f64 + (t % 3) as f64)).collect();
        let inputs = vec![Ok((Observation { values, ..Default::default() }, workload()))];
        last = Some(decide_blocking(&plugins, &mut runtimes, &[0], &inputs, SystemTime::UNIX_EPOCH + Duration::from_secs(60 * t), true).remove(0));
    }
    let forecast = &last.unwrap().forecasts[0];
    assert_eq!((forecast.metric.as_str(), forecast.forecast.forecaster.as_str(), &forecast.fallback), ("node_cpu_usage", "model:prototype", &None));
    // node_cpu_usage hovers at 50-52: the joint model's median stays near it.
    assert!(forecast.forecast.predicted.iter().all(|v| (45.0..58.0).contains(v)), "{:?}", forecast.forecast.predicted);
}

#[test]
fn a_batch_gives_the_same_forecasts_as_one_row_at_a_time() {
    let model = OnnxModel::load(&model("lstm")).unwrap();
    let series: Vec<Vec<f64>> = (0..5).map(|k| (0..60).map(|i| 10.0 * (k + 1) as f64 + ((i * 7 + k) % 9) as f64).collect()).collect();
    let rows: Vec<Vec<&[f64]>> = series.iter().map(|s| vec![&s[..]]).collect();
    let batched = model.forecast_batch(&rows, 15, 60);
    for (s, b) in series.iter().zip(batched) {
        let one = model.forecast(s, 15, 60).unwrap();
        assert_eq!(b.unwrap()[0], one);
    }
    assert!(matches!(model.forecast(&series[0][..30], 15, 60), Err(ForecastError::TooShort { needed: 60, have: 30, .. })));
}

#[test]
fn a_batch_larger_than_a_chunk_gives_every_row_its_own_forecast() {
    // 600 rows run as chunks of 256: each row's forecast is the one it gets alone, a row too
    // short for the window among them keeps its own error, and no row takes another's place.
    let model = OnnxModel::load(&model("transformer")).unwrap();
    let series: Vec<Vec<f64>> = (0..600).map(|k| (0..60).map(|i| 1.0 + (k % 37) as f64 + ((i * 7 + k) % 11) as f64 * 0.1).collect()).collect();
    let mut rows: Vec<Vec<&[f64]>> = series.iter().map(|s| vec![&s[..]]).collect();
    rows[300] = vec![&series[300][..30]];
    let batched = model.forecast_batch(&rows, 15, 60);
    assert_eq!(batched.len(), 600);
    for (k, (s, b)) in series.iter().zip(batched).enumerate() {
        if k == 300 {
            assert!(matches!(b, Err(ForecastError::TooShort { needed: 60, have: 30, .. })), "row 300: {b:?}");
            continue;
        }
        let (got, one) = (b.unwrap().swap_remove(0), model.forecast(s, 15, 60).unwrap());
        for (g, o) in got.predicted.iter().zip(&one.predicted) {
            assert!((g - o).abs() <= 1e-4 * o.abs().max(1.0), "row {k}: {g} batched, {o} alone");
        }
    }
}

// --- host backtest ----------------------------------------------------------------------

fn backtest(args: &[&str]) -> serde_json::Value {
    let out = Command::new(common::host_binary()).current_dir(common::root()).arg("backtest").args(args).arg("--json").output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

/// A small series: a daily-like cycle of 48 points with noise from a fixed LCG, 1 minute apart.
fn fixture(dir: &Path) -> (PathBuf, Vec<f64>) {
    let mut seed: u64 = 42;
    let mut noise = || {
        seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (seed >> 33) as f64 / (1u64 << 31) as f64 - 0.5
    };
    let values: Vec<f64> = (0..480).map(|t| 50.0 + 20.0 * (2.0 * std::f64::consts::PI * (t % 48) as f64 / 48.0).sin() + 8.0 * noise()).collect();
    let mut csv = String::from("unix_time,load\n");
    for (t, v) in values.iter().enumerate() {
        csv.push_str(&format!("{},{v}\n", 1_000_000 + 60 * t));
    }
    let path = dir.join("series.csv");
    std::fs::write(&path, csv).unwrap();
    (path, values)
}

#[test]
fn backtest_figures_match_an_independent_computation() {
    let dir = tempfile::tempdir().unwrap();
    let (path, y) = fixture(dir.path());
    let (n, m, window, horizon) = (y.len(), 48, 10, 4);
    let split = (n as f64 * 0.75).round() as usize;
    // The forecaster's own interval (`--uncalibrated`): its formula is checked here.
    let report = backtest(&["--series", path.to_str().unwrap(), "--column", "load", "--baseline", "last", "--holdout", "0.25", "--season", "48m", "--window", "10", "--horizon", "4", "--uncalibrated"]);
    assert_eq!(report["step_seconds"], 60, "the step comes from unix_time");
    // Independently: the MASE scale, then last-value forecasts from every origin.
    let scale = (m..split).map(|t| (y[t] - y[t - m]).abs()).sum::<f64>() / (split - m) as f64;
    assert!((report["scale"].as_f64().unwrap() - scale).abs() < 1e-9);
    let origins: Vec<usize> = (split..=n - horizon).collect();
    assert_eq!(report["origins"], origins.len());
    let z = 1.281_551_565_545;
    for h in 0..horizon {
        let (mut abs, mut sq, mut pin, mut cov) = (0.0, 0.0, 0.0, 0.0);
        for &t in &origins {
            let hist = &y[t - window..t];
            let last = hist[window - 1];
            let sigma = (hist.windows(2).map(|w| (w[1] - w[0]).powi(2)).sum::<f64>() / (window - 1) as f64).sqrt();
            let spread = z * sigma * ((h + 1) as f64).sqrt();
            let (lo, hi) = ((last - spread).max(0.0), last + spread);
            let target = y[t + h];
            abs += (target - last).abs();
            sq += (target - last).powi(2);
            let q = |q: f64, p: f64| (q * (target - p)).max((q - 1.0) * (target - p));
            pin += (q(0.1, lo) + q(0.5, last) + q(0.9, hi)) / 3.0;
            cov += f64::from(u8::from(lo <= target && target <= hi));
        }
        let k = origins.len() as f64;
        let step = &report["steps"][h];
        assert_eq!(step["h"], h + 1);
        for (field, want) in [("mae", abs / k), ("rmse", (sq / k).sqrt()), ("mase", abs / k / scale), ("pinball", pin / k), ("coverage", cov / k)] {
            assert!((step[field].as_f64().unwrap() - want).abs() < 1e-9, "h={} {field}: {} vs {want}", h + 1, step[field]);
        }
    }
    // Seasonal naive: the value one season back, checked for its MAE.
    let report = backtest(&["--series", path.to_str().unwrap(), "--column", "load", "--baseline", "seasonal-naive", "--holdout", "0.25", "--season", "48m", "--window", "10", "--horizon", "4"]);
    for h in 0..horizon {
        let mae = origins.iter().map(|&t| (y[t + h] - y[t + h - m]).abs()).sum::<f64>() / origins.len() as f64;
        assert!((report["steps"][h]["mae"].as_f64().unwrap() - mae).abs() < 1e-9);
    }
}

/// As `host run` issues them, intervals are calibrated online per step: on a series whose
/// noise has heavy tails (a Gaussian interval from the typical step misjudges them), last
/// value's own p10-p90 misses 80% coverage, the calibrated one meets it at every step.
#[test]
fn calibrated_intervals_cover_eighty_percent_at_every_step() {
    let dir = tempfile::tempdir().unwrap();
    let mut seed: u64 = 9;
    let mut uniform = || {
        seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (seed >> 11) as f64 / (1u64 << 53) as f64
    };
    let mut csv = String::from("unix_time,load\n");
    for t in 0..20_000 {
        let spike = if uniform() < 0.15 { 60.0 * (uniform() - 0.5) } else { 0.0 };
        let v = 200.0 + 50.0 * (2.0 * std::f64::consts::PI * (t % 288) as f64 / 288.0).sin() + 4.0 * (uniform() - 0.5) + spike;
        csv.push_str(&format!("{},{v}\n", 1_000_000 + 300 * t));
    }
    let path = dir.path().join("tails.csv");
    std::fs::write(&path, csv).unwrap();
    let args = ["--series", path.to_str().unwrap(), "--column", "load", "--baseline", "last", "--horizon", "6"];
    let own = backtest(&[&args[..], &["--uncalibrated"]].concat());
    let calibrated = backtest(&args);
    assert_eq!(calibrated["calibrated"], true);
    let coverage = |r: &serde_json::Value| r["steps"].as_array().unwrap().iter().map(|s| s["coverage"].as_f64().unwrap()).collect::<Vec<_>>();
    assert!(coverage(&own).iter().any(|c| !(0.76..=0.84).contains(c)), "the fixture must miscalibrate the raw interval: {:?}", coverage(&own));
    assert!(coverage(&calibrated).iter().all(|c| (0.77..=0.83).contains(c)), "{:?}", coverage(&calibrated));
    assert_eq!(own["steps"][0]["mase"], calibrated["steps"][0]["mase"], "the median is never moved");
}

/// `--compare`: the subject, the skill gate over it and each simple baseline on the same
/// origins, each column what its own backtest says, the ratio to the best baseline at each step.
#[test]
fn backtest_compare_sets_the_gate_and_every_baseline_beside_the_subject() {
    let dir = tempfile::tempdir().unwrap();
    let (path, _) = fixture(dir.path());
    let args = ["--series", path.to_str().unwrap(), "--column", "load", "--holdout", "0.25", "--season", "48m", "--window", "10", "--horizon", "4"];
    let compared = backtest(&[&args[..], &["--baseline", "holt-damped", "--compare"]].concat());
    let reports = compared["reports"].as_array().unwrap();
    let names: Vec<&str> = reports.iter().map(|r| r["forecaster"].as_str().unwrap()).collect();
    assert_eq!(names, ["holt-damped", "gate(holt-damped)", "last-value", "seasonal-naive", "holt-winters"]);
    assert!(reports.iter().all(|r| r["origins"] == reports[0]["origins"]), "the same origins for all");
    for (report, who) in reports.iter().zip([&["--baseline", "holt-damped"][..], &["--baseline", "holt-damped", "--gate"], &["--baseline", "last"], &["--baseline", "seasonal-naive"], &["--baseline", "holt-winters"]]) {
        let alone = backtest(&[&args[..], who].concat());
        assert_eq!(report["steps"], alone["steps"], "{who:?}: as its own backtest says");
    }
    // The gate served every origin, each by one of its contenders.
    let served = reports[1]["served"].as_object().unwrap();
    assert_eq!(served.values().map(|n| n.as_u64().unwrap()).sum::<u64>(), reports[1]["origins"].as_u64().unwrap());
    assert!(served.keys().all(|k| ["holt-damped", "last-value", "seasonal-naive", "holt-winters", "blend"].contains(&k.as_str())), "{served:?}");
    for (i, step) in compared["steps"].as_array().unwrap().iter().enumerate() {
        let mase = |r: &serde_json::Value| r["steps"][i]["mase"].as_f64().unwrap();
        let best = reports[2..].iter().min_by(|a, b| mase(a).total_cmp(&mase(b))).unwrap();
        assert_eq!(step["best_baseline"], best["forecaster"]);
        assert!((step["ratio"].as_f64().unwrap() - mase(&reports[0]) / mase(best)).abs() < 1e-12);
        assert!((step["gate_ratio"].as_f64().unwrap() - mase(&reports[1]) / mase(best)).abs() < 1e-12);
    }
    // The table says the same, one row per step.
    let out = Command::new(common::host_binary()).current_dir(common::root()).arg("backtest").args(args).args(["--baseline", "holt-damped", "--compare"]).output().unwrap();
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && table.lines().filter(|l| l.trim_start().starts_with(char::is_numeric)).count() == 4, "{table}");
    assert!(table.contains("worst ratio") && table.contains("gate ratio") && table.contains("gate(holt-damped) served: "), "{table}");
}

#[test]
fn backtest_refuses_bad_input_with_the_fix() {
    let dir = tempfile::tempdir().unwrap();
    let (path, _) = fixture(dir.path());
    let run = |args: &[&str]| {
        let out = Command::new(common::host_binary()).current_dir(common::root()).arg("backtest").args(args).output().unwrap();
        assert!(!out.status.success());
        String::from_utf8_lossy(&out.stderr).to_string()
    };
    let err = run(&["--series", path.to_str().unwrap(), "--column", "nope", "--baseline", "last"]);
    assert!(err.contains("no column `nope`") && err.contains("load"), "{err}");
    let err = run(&["--series", path.to_str().unwrap(), "--column", "load", "--baseline", "prophet"]);
    assert!(err.contains("not a built-in forecaster") && err.contains("holt-winters"), "{err}");
    let err = run(&["--series", path.to_str().unwrap(), "--column", "load", "--baseline", "holt-winters"]);
    assert!(err.contains("two seasons") && err.contains("fix"), "{err}");
}

/// The acceptance figures, on real held-out data (../shared/data, beside the repository):
/// the shipped default beats seasonal naive and Holt-Winters in MASE at every step, with
/// p10-p90 coverage between 70% and 90%. Every 5th origin keeps it quick.
#[test]
fn the_default_model_beats_the_seasonal_baselines_on_real_held_out_data() {
    let data = common::root().join("../shared/data");
    let series = [
        ("nasa-http-1995/nasa_http_requests_per_minute.csv", "requests", Some("server_outage")),
        ("twitter-stream-2021-08/twitter_stream_messages_per_minute.csv", "messages", Some("in_collection_gap")),
        ("bitbrains-rnd/2013-8/9.csv", "CPU usage [MHZ]", None),
    ];
    for (file, column, mask) in series {
        let path = data.join(file);
        let mut args = vec!["--series", path.to_str().unwrap(), "--column", column, "--every", "5", "--horizon", "15"];
        if let Some(mask) = mask {
            args.extend(["--mask", mask]);
        }
        let default = backtest(&args);
        assert_eq!(default["forecaster"], "model:transformer", "models/default.yaml names the model the backtest chose");
        for baseline in ["seasonal-naive", "holt-winters"] {
            let other = backtest(&[&args[..], &["--baseline", baseline]].concat());
            assert_eq!(other["origins"], default["origins"], "the same origins for every forecaster");
            for (d, o) in default["steps"].as_array().unwrap().iter().zip(other["steps"].as_array().unwrap()) {
                assert!(d["mase"].as_f64() < o["mase"].as_f64(), "{file} h={}: model {} vs {baseline} {}", d["h"], d["mase"], o["mase"]);
            }
        }
        for step in default["steps"].as_array().unwrap() {
            let c = step["coverage"].as_f64().unwrap();
            assert!((0.7..=0.9).contains(&c), "{file} h={}: coverage {c}", step["h"]);
        }
    }
}

/// The skill gate protects from a model that does not fit, on real held-out data: on
/// Bitbrains VM 45 (a series where last value beats the shipped model at every step) the gate
/// does better than the model at every step, others serving where the model loses; on NASA, where
/// the model beats every baseline, the gate serves the model and loses almost nothing to it.
#[test]
fn the_skill_gate_protects_from_a_model_that_does_not_fit_and_keeps_one_that_does() {
    let data = common::root().join("../shared/data");
    let compare = |file: &str, column: &str, extra: &[&str]| {
        let path = data.join(file);
        backtest(&[&["--series", path.to_str().unwrap(), "--column", column, "--horizon", "15", "--compare"][..], extra].concat())
    };
    let bad = compare("bitbrains-rnd/2013-8/45.csv", "CPU usage [MHZ]", &[]);
    let steps = bad["steps"].as_array().unwrap();
    assert!(steps.iter().all(|s| s["ratio"].as_f64().unwrap() > 1.0), "the model loses here: {steps:?}");
    assert!(steps.iter().all(|s| s["gate_mase"].as_f64().unwrap() < s["mase"].as_f64().unwrap()), "the gate does better at every step: {steps:?}");
    let served = &bad["reports"][1]["served"];
    let origins = bad["reports"][1]["origins"].as_f64().unwrap();
    assert!(served["model:transformer"].as_f64().unwrap_or(0.0) < 0.8 * origins, "the others serve a fifth or more: {served}");
    let good = compare("nasa-http-1995/nasa_http_requests_per_minute.csv", "requests", &["--mask", "server_outage"]);
    let steps = good["steps"].as_array().unwrap();
    assert!(steps.iter().all(|s| s["gate_mase"].as_f64().unwrap() <= 1.01 * s["mase"].as_f64().unwrap()), "{steps:?}");
    assert!(good["reports"][1]["served"]["model:transformer"].as_f64().unwrap() > 0.95 * good["reports"][1]["origins"].as_f64().unwrap());
}
