//! Trained forecasters: ONNX models run in-process by ONNX Runtime (through `ort`, with the
//! runtime library loaded at start-up, never downloaded at build time).
//!
//! A model comes with its card, `model.yaml` beside `model.onnx`, written by
//! `models/train.py`. The card says what the model reads and predicts; the host checks the
//! card against the policy (`ModelCard::problems`, at load time, so `host validate` reports it)
//! and the ONNX graph against the card (`OnnxModel::load`). One session per model file,
//! shared by every policy that names it; `forecast_batch` runs all of a tick's rows, in chunks
//! of a bounded size.

use super::{ForecastError, Forecaster, Row, finite};
use crate::config::ModelCard;
use crate::domain::Forecast;
use ndarray::{Array3, ArrayViewD};
use ort::session::Session;
use ort::session::builder::GraphOptimizationLevel;
use ort::value::TensorRef;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock, Weak};

/// The ONNX Runtime release `make onnxruntime` fetches (from the PyPI `onnxruntime` wheel).
pub const ORT_VERSION: &str = "1.32.0";
/// Why a model cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ModelError(String);

/// Loads ONNX Runtime once per process. The library is found at `ORT_DYLIB_PATH`, else where
/// `make onnxruntime` puts it, else beside the `host` binary.
pub fn init_runtime() -> Result<&'static ort::environment::Environment, ModelError> {
    static ENV: OnceLock<Result<ort::environment::Environment, String>> = OnceLock::new();
    let result = ENV.get_or_init(|| {
        let candidates = runtime_candidates();
        let Some(path) = candidates.iter().find(|p| p.is_file()) else {
            let looked = candidates.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ");
            return Err(format!(
                "ONNX Runtime is not installed (looked for {looked}); fix: run `make onnxruntime`, or set ORT_DYLIB_PATH to a libonnxruntime.so {ORT_VERSION}"
            ));
        };
        let env = ort::init_from(path).map_err(|e| format!("{}: cannot load ONNX Runtime: {e}", path.display()))?;
        env.with_name("augur").build().map_err(|e| format!("{}: cannot start ONNX Runtime: {e}", path.display()))
    });
    result.as_ref().map_err(|e| ModelError(e.clone()))
}

fn runtime_candidates() -> Vec<PathBuf> {
    let file = format!("libonnxruntime.so.{ORT_VERSION}");
    let mut out = Vec::new();
    if let Some(p) = std::env::var_os("ORT_DYLIB_PATH") {
        out.push(PathBuf::from(p));
        return out;
    }
    if let Some(home) = std::env::var_os("HOME") {
        out.push(Path::new(&home).join(".cache/augur").join(format!("onnxruntime-{ORT_VERSION}")).join(&file));
    }
    if let Some(dir) = std::env::current_exe().ok().and_then(|e| e.parent().map(Path::to_path_buf)) {
        out.push(dir.join(&file));
    }
    out
}

/// A loaded model: its card and one ONNX Runtime session.
pub struct OnnxModel {
    card: ModelCard,
    path: PathBuf,
    label: String,
    session: Mutex<Session>,
}

impl std::fmt::Debug for OnnxModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OnnxModel").field("path", &self.path).field("card", &self.card).finish()
    }
}

impl OnnxModel {
    /// The model at `path`, loaded once per process and shared by every caller.
    pub fn shared(path: &Path) -> Result<Arc<Self>, ModelError> {
        static LOADED: OnceLock<Mutex<HashMap<PathBuf, Weak<OnnxModel>>>> = OnceLock::new();
        let key = path.canonicalize().unwrap_or_else(|_| path.to_path_buf());
        let mut loaded = LOADED.get_or_init(Default::default).lock().unwrap_or_else(|e| e.into_inner());
        if let Some(model) = loaded.get(&key).and_then(Weak::upgrade) {
            return Ok(model);
        }
        let model = Arc::new(Self::load(path)?);
        loaded.insert(key, Arc::downgrade(&model));
        Ok(model)
    }

    /// Reads the card, starts a session and checks the graph's input and output against the
    /// card: `history` float32 [batch, window, channels] and `quantiles` float32
    /// [batch, horizon, channels, 3].
    pub fn load(path: &Path) -> Result<Self, ModelError> {
        let card = ModelCard::read(path).map_err(ModelError)?;
        let env = init_runtime()?;
        let fail = |what: String| ModelError(format!("{}: {what}", path.display()));
        let session = Session::builder(env)
            .and_then(|b| b.with_optimization_level(GraphOptimizationLevel::All).map_err(ort::Error::<()>::from))
            // A tick's one batch may use the machine's cores (up to 4); the pool's threads
            // sleep between batches instead of spinning, as a tick comes once a step.
            .and_then(|b| b.with_intra_threads(intra_threads()).map_err(ort::Error::<()>::from))
            .and_then(|b| b.with_intra_op_spinning(false).map_err(ort::Error::<()>::from))
            // No CPU arena: it keeps the largest batch's buffers for ever (131 MiB resident with
            // three models after a batch of 1,000, against 61 MiB without). The price: a batch
            // of 1,000 through the LSTM took ~105 ms instead of ~53 ms; the default Transformer
            // takes 10 ms without it (make bench).
            .and_then(|b| b.with_execution_providers([ort::ep::CPU::default().with_arena_allocator(false).build()]).map_err(ort::Error::<()>::from))
            .and_then(|mut b| b.commit_from_file(path))
            .map_err(|e| fail(format!("ONNX Runtime cannot load it: {e}; fix: re-export it with models/train.py")))?;
        let (c, w, h) = (card.channels() as i64, card.input_len() as i64, card.horizon as i64);
        let says = match &card.context {
            Some(ctx) => format!("{} points of seasonal context and window {}", ctx.len(), card.window),
            None => format!("window {w}"),
        };
        check_outlet(session.inputs(), "history", &[-1, w, c]).map_err(|e| fail(format!("input: {e}; the card says {says}, {c} channel(s); fix: re-export the model and its card together")))?;
        check_outlet(session.outputs(), "quantiles", &[-1, h, c, 3]).map_err(|e| fail(format!("output: {e}; the card says horizon {h}, {c} channel(s), 3 quantiles; fix: re-export the model and its card together")))?;
        let label = format!("model:{}", card.name);
        Ok(Self { card, path: path.to_path_buf(), label, session: Mutex::new(session) })
    }

    pub fn card(&self) -> &ModelCard {
        &self.card
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Runs the graph on `[batch, window, channels]` and returns `[batch, horizon, channels, 3]`
    /// exactly as the model computed it.
    pub fn infer(&self, input: &Array3<f32>) -> Result<ndarray::ArrayD<f32>, String> {
        let tensor = TensorRef::from_array_view(input.view()).map_err(|e| e.to_string())?;
        let mut session = self.session.lock().unwrap_or_else(|e| e.into_inner());
        let outputs = session.run(ort::inputs!["history" => tensor]).map_err(|e| e.to_string())?;
        let view: ArrayViewD<'_, f32> = outputs["quantiles"].try_extract_array::<f32>().map_err(|e| e.to_string())?;
        Ok(view.to_owned())
    }
}

/// Writes a history's seasonal context through `put(position, value)`: for lag `k` of `lags`
/// (in points; `None` is unknown), the `points` values ending at `horizon` points after the
/// newest point's time one lag earlier, at positions `k * points ..`. Positions the history
/// does not reach are not written (they stay NaN).
fn gather_context(history: &[f64], lags: &[Option<usize>], points: usize, horizon: usize, mut put: impl FnMut(usize, f32)) {
    let newest = history.len() as isize - 1;
    for (k, lag) in lags.iter().enumerate() {
        let Some(lag) = lag else { continue };
        let first = newest + horizon as isize - *lag as isize - points as isize + 1;
        for p in 0..points {
            let at = first + p as isize;
            if (0..history.len() as isize).contains(&at) {
                put(k * points + p, history[at as usize] as f32);
            }
        }
    }
}

/// The most rows one inference takes (see `forecast_batch`).
const CHUNK_ROWS: usize = 256;

/// Threads for one inference: the machine's cores, at most 4 (a batch of 1,000 windows gains
/// little beyond that, and the engine's other work needs the rest).
fn intra_threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get().min(4))
}

fn check_outlet(outlets: &[ort::value::Outlet], name: &str, want: &[i64]) -> Result<(), String> {
    let [outlet] = outlets else {
        return Err(format!("the graph has {} of them, expected one named `{name}`", outlets.len()));
    };
    if outlet.name() != name {
        return Err(format!("named `{}`, expected `{name}`", outlet.name()));
    }
    if outlet.dtype().tensor_type() != Some(ort::value::TensorElementType::Float32) {
        return Err(format!("`{name}` is {:?}, expected a float32 tensor", outlet.dtype()));
    }
    let shape: &[i64] = outlet.dtype().tensor_shape().map(|s| &s[..]).unwrap_or(&[]);
    let fits = shape.len() == want.len() && shape.iter().zip(want).all(|(have, want)| *want == -1 || have == want);
    if !fits {
        return Err(format!("`{name}` has shape {shape:?}, expected {want:?} (-1: any batch)"));
    }
    Ok(())
}

impl Forecaster for OnnxModel {
    fn name(&self) -> &str {
        &self.label
    }

    fn min_history(&self) -> usize {
        self.card.window
    }

    fn history_used(&self, step_seconds: u32) -> usize {
        self.card.history_used(std::time::Duration::from_secs(step_seconds.into()))
    }

    fn joint_inputs(&self) -> Option<&[String]> {
        (!self.card.is_univariate()).then_some(&self.card.inputs[..])
    }

    fn forecast(&self, history: &[f64], horizon: usize, step_seconds: u32) -> Result<Forecast, ForecastError> {
        let row: Row<'_> = vec![history; self.card.channels()];
        let mut out = self.forecast_batch(&[row], horizon, step_seconds);
        out.pop().expect("one row in, one out").map(|mut channels| channels.swap_remove(0))
    }

    /// Rows with less history than the window get `TooShort`; the rest go through the graph,
    /// `CHUNK_ROWS` at a time. Each channel's forecast is cut to `horizon`; demand does not go below zero.
    /// A model with seasonal context reads each lag's segment from further back in the row,
    /// NaN where the row does not reach (or holds NaN: a point that is not real).
    fn forecast_batch(&self, rows: &[Row<'_>], horizon: usize, step_seconds: u32) -> Vec<Result<Vec<Forecast>, ForecastError>> {
        let (w, c) = (self.card.window, self.card.channels());
        let mut results: Vec<Result<Vec<Forecast>, ForecastError>> = Vec::with_capacity(rows.len());
        let mut ready = Vec::new();
        for (i, row) in rows.iter().enumerate() {
            let have = row.iter().map(|h| h.len()).min().unwrap_or(0);
            if row.len() != c {
                results.push(Err(ForecastError::Failed { forecaster: self.label.clone(), reason: format!("{} channel(s) given, the model reads {c}", row.len()) }));
            } else if have < w {
                results.push(Err(ForecastError::too_short(&self.label, w, have)));
            } else {
                results.push(Ok(Vec::new()));
                ready.push(i);
            }
        }
        if ready.is_empty() {
            return results;
        }
        let context = self.card.context.as_ref().map(|ctx| (ctx, ctx.lag_points(std::time::Duration::from_secs(step_seconds.into()), self.card.horizon)));
        let before = context.as_ref().map_or(0, |(ctx, _)| ctx.len());
        let horizon = horizon.min(self.card.horizon);
        // Rows go through the graph in chunks of at most `CHUNK_ROWS`: the runtime's working
        // memory grows with the batch and the allocator keeps what it once held, so one batch of
        // 5,000 rows left the host 500 MiB larger for good; a chunk's costs the same per row.
        for chunk in ready.chunks(CHUNK_ROWS) {
            let mut input = Array3::<f32>::from_elem((chunk.len(), before + w, c), f32::NAN);
            for (b, &i) in chunk.iter().enumerate() {
                for (ch, history) in rows[i].iter().enumerate() {
                    for (t, v) in history[history.len() - w..].iter().enumerate() {
                        input[[b, before + t, ch]] = *v as f32;
                    }
                    if let Some((ctx, lags)) = &context {
                        let mut column = input.slice_mut(ndarray::s![b, ..before, ch]);
                        gather_context(history, lags, ctx.points, self.card.horizon, |at, v| column[at] = v);
                    }
                }
            }
            let output = match self.infer(&input) {
                Ok(output) => output,
                Err(reason) => {
                    for &i in chunk {
                        results[i] = Err(ForecastError::Failed { forecaster: self.label.clone(), reason: reason.clone() });
                    }
                    continue;
                }
            };
            for (b, &i) in chunk.iter().enumerate() {
                let channels = (0..c).map(|ch| {
                    let series = |q: usize| (0..horizon).map(|h| f64::from(output[[b, h, ch, q]])).collect::<Vec<f64>>();
                    // Checked before the floor at zero: f64::max would turn NaN into 0.
                    let raw = finite(Forecast { forecaster: self.label.clone(), step_seconds, predicted: series(1), lower: Some(series(0)), upper: Some(series(2)) })?;
                    let floor = |v: Vec<f64>| v.into_iter().map(|x| x.max(0.0)).collect::<Vec<f64>>();
                    Ok(Forecast { predicted: floor(raw.predicted), lower: raw.lower.map(floor), ..raw })
                });
                results[i] = channels.collect();
            }
        }
        results
    }
}

#[cfg(test)]
mod tests {
    use super::gather_context;

    #[test]
    fn the_context_is_the_window_and_horizon_one_lag_back_and_unknown_beyond_the_history() {
        // history[i] = i: the values say where they were read from.
        let history: Vec<f64> = (0..100).map(f64::from).collect();
        let mut row = vec![f32::NAN; 3 * 4];
        // Lags of 10 and 99 points, one unknown; 4 points each, horizon 2: the segment of lag
        // 10 ends at 99 + 2 - 10 = 91.
        gather_context(&history, &[Some(10), None, Some(99)], 4, 2, |at, v| row[at] = v);
        assert_eq!(&row[..4], &[88.0, 89.0, 90.0, 91.0]);
        assert!(row[4..8].iter().all(|v| v.is_nan()), "an unknown lag stays NaN: {row:?}");
        // Lag 99 ends at 2: its first point (-1) is before the history.
        assert!(row[8].is_nan());
        assert_eq!(&row[9..], &[0.0, 1.0, 2.0]);
    }
}
