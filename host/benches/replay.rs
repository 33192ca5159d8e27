//! `host replay` and the anomaly pass: how fast a trace replays (the policy through the real
//! engine, the default model and plugins, the HPA model and the oracle, each on its own simulated cluster),
//! and how fast the two detectors score a NAB-sized series.
//!
//! Run with `make bench`. Figures: time per replay of the built-in three-day NASA slice
//! (4,320 minutes), and per 4,032-point series scored.

#[path = "../tests/all/common/mod.rs"]
mod common;

use augur::offline::anomaly;
use augur::forecast::{self, Forecaster};
use augur::offline::replay;
use divan::Bencher;

fn main() {
    divan::main();
}

#[divan::bench(sample_count = 3, sample_size = 1)]
fn replay_three_days_of_minutes(bencher: Bencher) {
    let root = common::root();
    let options = replay::Options::new(root.join("policies/nginx.yaml"), root.join("host/data/nasa-http-1995-07-05.csv"), "requests".into());
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    bencher.bench_local(|| runtime.block_on(replay::run(&options)).expect("the replay runs"));
}

#[divan::bench(sample_count = 5, sample_size = 1)]
fn score_a_nab_sized_series(bencher: Bencher) {
    let model = forecast::OnnxModel::shared(&common::root().join("models/transformer/model.onnx")).expect("the shipped default model loads");
    let fallback = forecast::HoltDamped::default();
    let values: Vec<f64> = (0..4032).map(|i| 20.0 + 5.0 * (i as f64 / 288.0 * std::f64::consts::TAU).sin() + ((i * 7919) % 13) as f64 * 0.05).collect();
    let window = model.card().window;
    bencher.bench_local(|| anomaly::score(&values, &*model as &dyn Forecaster, &fallback, window, anomaly::DEFAULT_WINDOW, 300));
}
