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
    /// Seasonal context read before the window (`None`: the window alone).
    #[serde(default)]
    pub context: Option<CardContext>,
}

/// A model's seasonal context: the history tensor starts with one segment per lag, in the
/// order of `lags`, then the window. A segment is the `points` values ending `horizon` points
/// after the newest point's time one lag earlier (what happened then around now and over the
/// coming horizon); NaN where that past is unknown.
#[derive(Debug, Clone, Deserialize)]
pub struct CardContext {
    #[serde(deserialize_with = "durations")]
    pub lags: Vec<Duration>,
    pub points: usize,
    /// A lag of more steps than this is unknown: the host keeps no more history (training
    /// follows the same rule).
    pub max_lag_points: usize,
}

impl CardContext {
    /// Each lag in points of `step`; `None` for a lag that is not a whole number of steps, is
    /// shorter than the horizon (its segment would reach past the newest point) or is longer
    /// than `max_lag_points`.
    pub fn lag_points(&self, step: Duration, horizon: usize) -> Vec<Option<usize>> {
        let step = step.as_secs().max(1);
        self.lags
            .iter()
            .map(|lag| {
                let lag = lag.as_secs();
                let points = (lag % step == 0).then(|| (lag / step) as usize);
                points.filter(|p| (horizon..=self.max_lag_points).contains(p))
            })
            .collect()
    }

    /// Values of context before the window in the model's input.
    pub fn len(&self) -> usize {
        self.lags.len() * self.points
    }
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
        if let Some(c) = &card.context
            && (c.lags.is_empty() || c.points == 0 || c.points > card.window + card.horizon + c.max_lag_points)
        {
            return Err(format!("{}: context: needs at least one lag and 1 to window + horizon + max_lag_points points per lag; fix: regenerate it with models/train.py", path.display()));
        }
        Ok(card)
    }

    /// Points of the ONNX input's time axis: the seasonal context, then the window.
    pub fn input_len(&self) -> usize {
        self.context.as_ref().map_or(0, CardContext::len) + self.window
    }

    /// Points of history the model reads at `step` when they are there: the window, or as far
    /// back as its oldest known lag's segment reaches.
    pub fn history_used(&self, step: Duration) -> usize {
        let Some(c) = &self.context else { return self.window };
        let reach = c.lag_points(step, self.horizon).into_iter().flatten().map(|lag| (lag + c.points).saturating_sub(self.horizon)).max().unwrap_or(0);
        reach.max(self.window)
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


#[cfg(test)]
mod tests {
    use super::*;

    fn card(context: Option<CardContext>) -> ModelCard {
        ModelCard { format: CARD_FORMAT.into(), name: "m".into(), family: String::new(), inputs: vec![ANY_INPUT.into()], window: 60, horizon: 15, steps: vec![], quantiles: QUANTILES.to_vec(), context }
    }

    fn day_and_week() -> CardContext {
        CardContext { lags: vec![Duration::from_secs(86_400), Duration::from_secs(7 * 86_400)], points: 75, max_lag_points: 2016 }
    }

    #[test]
    fn a_lag_is_known_when_it_is_whole_steps_at_least_the_horizon_and_within_what_is_kept() {
        let c = day_and_week();
        assert_eq!(c.lag_points(Duration::from_secs(300), 15), [Some(288), Some(2016)]);
        // A week of minutes is 10,080 points: more than the host keeps.
        assert_eq!(c.lag_points(Duration::from_secs(60), 15), [Some(1440), None]);
        // A day is not a whole number of 7-second steps.
        assert_eq!(c.lag_points(Duration::from_secs(7), 15), [None, None]);
        // A day of hours is 24 points, fewer than a 30-point horizon: it would read the future.
        assert_eq!(c.lag_points(Duration::from_secs(3600), 30), [None, Some(168)]);
        assert_eq!(c.len(), 150);
    }

    #[test]
    fn the_history_used_reaches_back_to_the_oldest_known_segment() {
        let with = card(Some(day_and_week()));
        assert_eq!(with.input_len(), 150 + 60);
        assert_eq!(with.history_used(Duration::from_secs(300)), 2016 + 75 - 15);
        assert_eq!(with.history_used(Duration::from_secs(60)), 1440 + 75 - 15);
        assert_eq!(with.history_used(Duration::from_secs(7)), 60, "no lag known: the window");
        let without = card(None);
        assert_eq!((without.input_len(), without.history_used(Duration::from_secs(300))), (60, 60));
    }
}
