//! ONNX inference through ort: one forward pass of each shipped model at batch 1 and at
//! batch 1,000 (one tick of 1,000 workloads), and the host's resident memory with the models
//! loaded (printed before the timings). Series of 5-minute points, each as long as the model
//! reads (a seasonal model's day and week of context included).
//!
//! Run with `make bench`. Per-series cost = time / batch.

use augur::forecast::{Forecaster, OnnxModel};
use divan::{Bencher, counter::ItemsCount};
use std::path::PathBuf;

const MODELS: [&str; 6] = ["lstm", "lstm-seasonal", "dlinear", "dlinear-seasonal", "transformer", "transformer-seasonal"];
const STEP: u32 = 300;

fn model_path(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../models").join(name).join("model.onnx")
}

fn rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let kb: f64 = status.lines().find_map(|l| l.strip_prefix("VmRSS:")).and_then(|v| v.split_whitespace().next()?.parse().ok()).unwrap_or(0.0);
    kb / 1024.0
}

fn main() {
    let before = rss_mib();
    let models: Vec<_> = MODELS.iter().map(|m| OnnxModel::shared(&model_path(m)).expect("the shipped models load")).collect();
    let loaded = rss_mib();
    // One batch through each, so that lazily allocated buffers count too.
    for model in &models {
        let history: Vec<f64> = (0..model.history_used(STEP)).map(|i| 50.0 + (i % 7) as f64).collect();
        let rows: Vec<Vec<&[f64]>> = (0..1000).map(|_| vec![&history[..]]).collect();
        model.forecast_batch(&rows, model.card().horizon, STEP);
    }
    let warm = rss_mib();
    println!("resident memory: {before:.1} MiB before ONNX Runtime, {loaded:.1} MiB with {} models loaded, {warm:.1} MiB after a batch of 1,000 through each", models.len());
    divan::main();
}

fn bench_model(bencher: Bencher, name: &str, batch: usize) {
    let model = OnnxModel::shared(&model_path(name)).unwrap();
    let length = model.history_used(STEP);
    let series: Vec<Vec<f64>> = (0..batch).map(|b| (0..length).map(|i| 40.0 + b as f64 * 0.01 + ((i * 13 + b) % 11) as f64).collect()).collect();
    let rows: Vec<Vec<&[f64]>> = series.iter().map(|s| vec![&s[..]]).collect();
    let horizon = model.card().horizon;
    bencher.counter(ItemsCount::new(batch)).bench_local(|| {
        let out = model.forecast_batch(divan::black_box(&rows), horizon, STEP);
        assert!(out.iter().all(Result::is_ok));
        out
    });
}

#[divan::bench(args = [1, 1000], sample_count = 30)]
fn lstm(bencher: Bencher, batch: usize) {
    bench_model(bencher, "lstm", batch);
}

#[divan::bench(args = [1, 1000], sample_count = 30)]
fn lstm_seasonal(bencher: Bencher, batch: usize) {
    bench_model(bencher, "lstm-seasonal", batch);
}

#[divan::bench(args = [1, 1000], sample_count = 30)]
fn dlinear_seasonal(bencher: Bencher, batch: usize) {
    bench_model(bencher, "dlinear-seasonal", batch);
}

#[divan::bench(args = [1, 1000], sample_count = 30)]
fn dlinear(bencher: Bencher, batch: usize) {
    bench_model(bencher, "dlinear", batch);
}

#[divan::bench(args = [1, 1000], sample_count = 30)]
fn transformer(bencher: Bencher, batch: usize) {
    bench_model(bencher, "transformer", batch);
}

#[divan::bench(args = [1, 1000], sample_count = 30)]
fn transformer_seasonal(bencher: Bencher, batch: usize) {
    bench_model(bencher, "transformer-seasonal", batch);
}
