//! `host plugin run`: one call of a plugin on a sample input, as the host would make it, with
//! what it returns printed (as `kwctl run` does for a Kubewarden policy). For plugin authors:
//! the sandbox, the limits and the conversions are the host's own.

use crate::config::files;
use crate::domain::{Forecast, Level, Proposal, Risk, Target, Workload};
use crate::plugins::{Limits, PluginError, Plugins, RuleSettings, World, bindings::ForecastInput};
use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::Path;

/// A sample input: the settings of the rule, and what the plugin's world is called with (a
/// risk plugin: `forecast`; a remediation plugin: `risk`, `trigger` and `workload`).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Sample {
    /// The rule's `settings:` as in a policy (plain values).
    #[serde(default)]
    pub settings: BTreeMap<String, serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub forecast: Option<SampleForecast>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub risk: Option<Risk>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trigger: Option<Level>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workload: Option<Workload>,
}

/// The forecast a risk plugin is given, with its context (the WIT `forecast` record).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SampleForecast {
    pub target: Target,
    pub metric: String,
    pub unit: String,
    pub step_seconds: u32,
    pub history: Vec<f64>,
    pub predicted: Vec<f64>,
    #[serde(default)]
    pub lower: Option<Vec<f64>>,
    #[serde(default)]
    pub upper: Option<Vec<f64>>,
    #[serde(default = "sample_forecaster")]
    pub forecaster: String,
    pub replicas: u32,
    pub ready_replicas: u32,
    pub interval_seconds: u32,
    #[serde(default)]
    pub startup_seconds: Option<u32>,
}

fn sample_forecaster() -> String {
    "sample".into()
}

/// What one call returned.
#[derive(Debug, Clone, Serialize)]
pub struct Outcome {
    /// The world the component implements, e.g. `risk-plugin`.
    pub world: &'static str,
    /// What `check-settings` said of the sample's settings (empty: they are good).
    pub settings_problems: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub risk: Option<Risk>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub proposals: Option<Vec<Proposal>>,
}

impl Sample {
    /// A sample for `world` that the scaffolded plugins answer with something to see.
    pub fn example(world: World) -> Self {
        let target = Target { kind: "Deployment".into(), namespace: "default".into(), name: "web".into() };
        match world {
            World::Risk => Sample {
                settings: BTreeMap::from([("max".into(), serde_json::json!(1.0))]),
                forecast: Some(SampleForecast {
                    target,
                    metric: "cpu".into(),
                    unit: "cores".into(),
                    step_seconds: 60,
                    history: vec![0.5, 0.55, 0.6, 0.7],
                    predicted: vec![0.75, 0.85, 0.95, 1.0],
                    lower: Some(vec![0.7, 0.75, 0.8, 0.8]),
                    upper: Some(vec![0.8, 0.95, 1.1, 1.2]),
                    forecaster: sample_forecaster(),
                    replicas: 2,
                    ready_replicas: 2,
                    interval_seconds: 60,
                    startup_seconds: Some(45),
                }),
                ..Sample::default()
            },
            World::Remediation => {
                let pod = |name: &str, mib: f64, age_seconds: u64| crate::domain::Pod {
                    name: name.into(),
                    node: "node-1".into(),
                    phase: "Running".into(),
                    ready: true,
                    cpu_cores: Some(0.2),
                    memory_bytes: Some(mib * 1_048_576.0),
                    age_seconds,
                    startup_seconds: Some(20),
                };
                Sample {
                    settings: BTreeMap::from([("min-age-seconds".into(), serde_json::json!(300))]),
                    risk: Some(Risk { level: Level::High, score: 0.9, seconds_to_breach: Some(180), required_replicas: None, reason: "memory predicted up to 250 MiB (limit 256 MiB)".into() }),
                    trigger: Some(Level::High),
                    workload: Some(Workload { target, replicas: 2, ready_replicas: 2, pods: vec![pod("web-1", 120.0, 3600), pod("web-2", 240.0, 3600)], nodes: Vec::new(), paused: None, scaled_by: None }),
                    ..Sample::default()
                }
            }
        }
    }
}

/// Calls the plugin in `file` once with the sample in `input`.
pub fn plugin_run(file: &Path, input: &Path) -> anyhow::Result<Outcome> {
    let text = files::read_text(input, files::MAX_TEXT_BYTES).map_err(|e| anyhow::anyhow!("{} {e}; fix: {}", input.display(), e.fix()))?;
    let sample: Sample = serde_json::from_str(&text).map_err(|e| {
        super::invalid(format!("{}: not a sample input: {e}; fix: write the JSON that `host plugin new` puts in samples/ (a risk plugin: `settings` and `forecast`; a remediation plugin: `settings`, `risk`, `trigger` and `workload`)", input.display()))
    })?;
    let plugins = Plugins::new(Limits::default())?;
    let bytes = files::read(file, files::MAX_PLUGIN_BYTES).map_err(|e| anyhow::anyhow!("{} {e}; fix: {}", file.display(), e.fix()))?;
    // Compiled once: the world it implements is the one it compiles for; that build answers
    // check-settings and the call.
    let (world, loaded) = [World::Risk, World::Remediation]
        .into_iter()
        .find_map(|world| plugins.compile_bytes(file, &bytes, world).ok().map(|loaded| (world, std::sync::Arc::new(loaded))))
        .with_context(|| format!("{} is not an Augur plugin of either world; fix: see what `host plugin check {}` says", file.display(), file.display()))?;
    let values = sample.settings.iter().map(|(k, v)| Ok((k.clone(), plain(v)?))).collect::<anyhow::Result<_>>().with_context(|| format!("{}: settings", input.display()))?;
    let settings = RuleSettings::new(values);
    let settings_problems = plugins.check_settings_of(&loaded, &settings).map_err(called(file))?.into_iter().map(|p| p.message).collect();
    plugins.publish([loaded]);
    let mut session = plugins.session();
    let missing = |field: &str| super::invalid(format!("{}: `{field}` is missing: {} is called with it; fix: add it (see `host plugin new`'s samples/)", input.display(), world.wit_name()));
    let mut outcome = Outcome { world: world.wit_name(), settings_problems, risk: None, proposals: None };
    match world {
        World::Risk => {
            let f = sample.forecast.as_ref().ok_or_else(|| missing("forecast"))?;
            let forecast = Forecast { forecaster: f.forecaster.clone(), step_seconds: f.step_seconds, predicted: f.predicted.clone(), lower: f.lower.clone(), upper: f.upper.clone() };
            let call = ForecastInput {
                target: &f.target,
                metric: &f.metric,
                unit: &f.unit,
                history: &f.history,
                forecast: &forecast,
                replicas: f.replicas,
                ready_replicas: f.ready_replicas,
                interval_seconds: f.interval_seconds,
                startup_seconds: f.startup_seconds,
            };
            outcome.risk = Some(session.assess(file, &settings, &call).map_err(called(file))?);
        }
        World::Remediation => {
            let risk = sample.risk.as_ref().ok_or_else(|| missing("risk"))?;
            let trigger = sample.trigger.ok_or_else(|| missing("trigger"))?;
            let workload = sample.workload.as_ref().ok_or_else(|| missing("workload"))?;
            outcome.proposals = Some(session.plan(file, &settings, risk, trigger, workload).map_err(called(file))?);
        }
    }
    Ok(outcome)
}

fn called(file: &Path) -> impl Fn(PluginError) -> anyhow::Error + '_ {
    move |e| anyhow::anyhow!("{}: the call failed: {e}", file.display())
}

/// A setting as a policy would pass it: plain values as text, nothing nested.
fn plain(value: &serde_json::Value) -> anyhow::Result<String> {
    match value {
        serde_json::Value::String(s) => Ok(s.clone()),
        serde_json::Value::Number(n) => Ok(n.to_string()),
        serde_json::Value::Bool(b) => Ok(b.to_string()),
        other => bail!("`{other}` is not a plain value; fix: give a string, number or boolean, as a policy's settings are"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_example_samples_read_back() {
        for world in [World::Risk, World::Remediation] {
            let text = serde_json::to_string_pretty(&Sample::example(world)).unwrap();
            let back: Sample = serde_json::from_str(&text).unwrap();
            assert_eq!(back.forecast.is_some(), world == World::Risk, "{text}");
            assert_eq!(back.workload.is_some(), world == World::Remediation, "{text}");
        }
    }

    #[test]
    fn an_unknown_field_is_refused_by_name() {
        let err = serde_json::from_str::<Sample>(r#"{"forcast": {}}"#).unwrap_err();
        assert!(err.to_string().contains("unknown field `forcast`"), "{err}");
    }
}
