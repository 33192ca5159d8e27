//! A model's card: `models/<name>/model.yaml`, beside `model.onnx`, written by
//! `models/train.py`. It says what the model reads and predicts, and is checked against the
//! policy that names the model (`ModelCard::problems`) while the policy is read, so that
//! `host validate` reports a mismatch. The card is data about a file the policy names, so it
//! lives with the policy's data; `forecast` runs the model it describes.
//!
//! This module never loads the ONNX graph.

use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The card format this host reads.
pub const CARD_FORMAT: &str = "augur-forecaster/1";
/// Card input name meaning "whichever metric a risk rule forecasts" (univariate models).
pub const ANY_INPUT: &str = "any";
const QUANTILES: [f64; 3] = [0.1, 0.5, 0.9];

/// What `models/<name>/model.yaml` says about a model. Fields the host does not use (training
/// data, scores) are kept in the file for people.
#[derive(Debug, Clone, Deserialize)]
pub struct ModelCard {
    pub format: String,
    pub name: String,
    #[serde(default)]
    pub family: String,
    /// Channel order; `[any]` for a univariate model.
    pub inputs: Vec<String>,
    pub window: usize,
    pub horizon: usize,
    /// Sampling steps the model was trained on.
    #[serde(deserialize_with = "durations")]
    pub steps: Vec<Duration>,
    pub quantiles: Vec<f64>,
}

fn durations<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<Duration>, D::Error> {
    let raw: Vec<String> = Vec::deserialize(d)?;
    raw.iter().map(|s| humantime::parse_duration(s).map_err(|e| serde::de::Error::custom(format!("steps: `{s}`: {e}")))).collect()
}

impl ModelCard {
    /// The card beside a model file.
    pub fn path_for(model: &Path) -> PathBuf {
        model.with_file_name("model.yaml")
    }

    /// Reads and checks the card of `model` (the `.onnx` path).
    pub fn read(model: &Path) -> Result<Self, String> {
        let path = Self::path_for(model);
        let text = super::files::read_text(&path, super::files::MAX_TEXT_BYTES).map_err(|e| format!("{}: cannot read the model card: it {e}; fix: keep model.yaml (written by models/train.py) beside the .onnx file", path.display()))?;
        let card: Self = yaml_serde::from_str(&text).map_err(|e| format!("{}: {e}; fix: regenerate it with models/train.py", path.display()))?;
        if card.format != CARD_FORMAT {
            return Err(format!("{}: format is `{}`; this host reads `{CARD_FORMAT}`; fix: retrain or re-export the model with this release's models/train.py", path.display(), card.format));
        }
        if card.quantiles != QUANTILES {
            return Err(format!("{}: quantiles are {:?}; the host needs exactly [0.1, 0.5, 0.9]; fix: retrain with models/train.py", path.display(), card.quantiles));
        }
        if card.inputs.is_empty() || card.window == 0 || card.horizon == 0 {
            return Err(format!("{}: inputs, window and horizon must be set; fix: regenerate it with models/train.py", path.display()));
        }
        Ok(card)
    }

    /// Channels of the ONNX input and output.
    pub fn channels(&self) -> usize {
        self.inputs.len()
    }

    /// A univariate model serves any one metric.
    pub fn is_univariate(&self) -> bool {
        self.inputs == [ANY_INPUT]
    }

    /// Everything in a policy's forecast section that does not fit this model, as
    /// `(field, problem, fix)`. `metrics` are the policy's metric names, `forecast_metrics`
    /// those its risk rules forecast.
    pub fn problems(&self, window: Option<usize>, horizon: usize, step: Duration, metrics: &[&str], forecast_metrics: &[&str]) -> Vec<(&'static str, String, String)> {
        let mut out = Vec::new();
        let steps = self.steps.iter().map(|s| humantime::format_duration(*s).to_string()).collect::<Vec<_>>().join(", ");
        if !self.steps.contains(&step) {
            out.push(("forecast.step", format!("is {}, but model `{}` was trained on steps of {steps}", humantime::format_duration(step), self.name), format!("set `step` to one of {steps}")));
        }
        if let Some(window) = window.filter(|w| *w != self.window) {
            out.push(("forecast.window", format!("is {window}, but model `{}` reads exactly {} points", self.name, self.window), format!("remove `window` (the model's card sets it) or set it to {}", self.window)));
        }
        if horizon > self.horizon {
            out.push(("forecast.horizon", format!("is {horizon}, but model `{}` predicts {} points", self.name, self.horizon), format!("use a horizon of at most {}", self.horizon)));
        }
        if !self.is_univariate() {
            for input in &self.inputs {
                if !metrics.contains(&input.as_str()) {
                    out.push(("metrics", format!("has no metric `{input}`, which model `{}` reads (inputs, in order: {})", self.name, self.inputs.join(", ")), format!("add a metric named `{input}` or use a univariate model")));
                }
            }
            for metric in forecast_metrics {
                if !self.inputs.iter().any(|i| i == metric) {
                    out.push(("risks", format!("forecast metric `{metric}`, which model `{}` does not predict (it predicts {})", self.name, self.inputs.join(", ")), "point the risk rule at one of the model's inputs or use a univariate model".into()));
                }
            }
        }
        out
    }
}

