//! The real `.wasm` plugins, loaded and called by the host's wasm runtime: each world, the
//! settings a plugin reads through its import, settings checks, and the typed errors for a
//! component that is not a plugin of the expected world.

use crate::common;

use augur::config::Problem;
use augur::domain::{Action, Forecast, Level, Node, Pod, Risk, Target, Workload};
use augur::plugins::bindings::ForecastInput;
use augur::plugins::{Limits, PluginError, Plugins, RuleSettings, Settings, World};
use std::collections::BTreeMap;

fn settings(pairs: &[(&str, &str)]) -> Settings {
    RuleSettings::new(pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect::<BTreeMap<_, _>>())
}

fn target() -> Target {
    Target { kind: "Deployment".into(), namespace: "default".into(), name: "nginx".into() }
}

fn forecast(predicted: Vec<f64>, upper: Option<Vec<f64>>) -> Forecast {
    Forecast { forecaster: "test".into(), step_seconds: 60, predicted, lower: None, upper }
}

fn workload(replicas: u32) -> Workload {
    let pods = (0..replicas)
        .map(|i| Pod { name: format!("nginx-{i}"), node: "n1".into(), phase: "Running".into(), ready: true, cpu_cores: Some(0.4), memory_bytes: Some(100e6 + i as f64 * 50e6), age_seconds: 3600 , startup_seconds: None})
        .collect();
    let node = |name: &str, t: f64| Node { name: name.into(), ready: true, schedulable: true, cordoned_by_augur: false, temperature_celsius: Some(t), pressure: vec![], healthy_seconds: 0 };
    Workload { target: target(), replicas, ready_replicas: replicas, pods, nodes: vec![node("n1", 60.0), node("n2", 92.0)], paused: None, scaled_by: None }
}

fn high(required: Option<u32>) -> Risk {
    Risk { level: Level::High, score: 0.9, seconds_to_breach: Some(120), required_replicas: required, reason: "test risk".into() }
}

#[test]
fn risk_cpu_assesses_a_surge_through_wasm() {
    let plugins = Plugins::new(Limits::default()).unwrap();
    let mut session = plugins.session();
    let f = forecast(vec![0.7, 0.9, 1.2, 1.5, 1.9], None);
    let input = ForecastInput { target: &target(), metric: "cpu", unit: "cores", history: &[0.5, 0.6], forecast: &f, replicas: 2, ready_replicas: 2, interval_seconds: 60, startup_seconds: Some(60) };
    let risk = session.assess(&common::plugin("risk-cpu"), &settings(&[("sizing", "surge")]), &input).unwrap();
    assert_eq!(risk.level, Level::High);
    assert_eq!(risk.required_replicas, Some(5));
    assert_eq!(risk.seconds_to_breach, Some(120));
    assert!(risk.reason.contains("predicted breach in 2m"), "{}", risk.reason);
}

/// The default rule sizes for the look-ahead the host passes: the start-up it measured plus
/// the interval. The same forecast needs more pods when pods start slowly.
#[test]
fn risk_cpu_sizes_for_the_start_up_and_interval_the_host_passes() {
    let plugins = Plugins::new(Limits::default()).unwrap();
    let mut session = plugins.session();
    let f = forecast(vec![0.7, 0.9, 1.2, 1.5, 1.9], None);
    let plugin = common::plugin("risk-cpu");
    let mut input = ForecastInput { target: &target(), metric: "cpu", unit: "cores", history: &[0.5, 0.6], forecast: &f, replicas: 2, ready_replicas: 2, interval_seconds: 60, startup_seconds: Some(60) };
    let quick = session.assess(&plugin, &settings(&[]), &input).unwrap();
    // 2 minutes ahead: 0.9 cores at 0.4 a pod.
    assert_eq!((quick.level, quick.required_replicas), (Level::High, Some(3)));
    assert!(quick.reason.contains("within 2m (start-up 1m + interval 1m)"), "{}", quick.reason);
    input.startup_seconds = Some(240);
    let slow = session.assess(&plugin, &settings(&[]), &input).unwrap();
    assert_eq!(slow.required_replicas, Some(5), "5 minutes ahead: 1.9 cores");
}

#[test]
fn settings_reach_the_plugin_through_its_import() {
    let plugins = Plugins::new(Limits::default()).unwrap();
    let mut session = plugins.session();
    let f = forecast(vec![0.6, 0.6], Some(vec![0.9, 1.3]));
    let input = ForecastInput { target: &target(), metric: "cpu", unit: "cores", history: &[0.5], forecast: &f, replicas: 2, ready_replicas: 2, interval_seconds: 60, startup_seconds: Some(60) };
    let plugin = common::plugin("risk-cpu");
    let median = session.assess(&plugin, &settings(&[]), &input).unwrap();
    // The same instance, called again with other settings, must read the new ones.
    let upper = session.assess(&plugin, &settings(&[("act-on", "upper"), ("capacity-per-pod", "0.25")]), &input).unwrap();
    assert_eq!(median.level, Level::None);
    assert_eq!(upper.required_replicas, Some(7)); // ceil(1.3 / (0.25 * 0.8))
    assert!(upper.reason.contains("upper bound"));
}

#[test]
fn the_other_risk_plugins_run() {
    let plugins = Plugins::new(Limits::default()).unwrap();
    let mut session = plugins.session();
    let mem = forecast(vec![440e6, 470e6, 500e6], None);
    let input = ForecastInput { target: &target(), metric: "memory", unit: "bytes", history: &[400e6], forecast: &mem, replicas: 2, ready_replicas: 2, interval_seconds: 60, startup_seconds: Some(60) };
    let risk = session.assess(&common::plugin("risk-memory"), &settings(&[("limit-bytes", "268435456")]), &input).unwrap();
    assert_eq!(risk.level, Level::High, "{}", risk.reason);
    let heat = forecast(vec![83.0, 86.0], None);
    let input = ForecastInput { target: &target(), metric: "node_temperature", unit: "celsius", history: &[80.0], forecast: &heat, replicas: 2, ready_replicas: 2, interval_seconds: 60, startup_seconds: Some(60) };
    let risk = session.assess(&common::plugin("risk-node"), &settings(&[]), &input).unwrap();
    assert_eq!(risk.level, Level::High);
    assert_eq!(risk.seconds_to_breach, Some(120));
}

#[test]
fn remediation_plugins_propose_through_wasm() {
    let plugins = Plugins::new(Limits::default()).unwrap();
    let mut session = plugins.session();
    let w = workload(3);
    let scale = session.plan(&common::plugin("scale"), &settings(&[("step", "2")]), &high(Some(9)), Level::High, &w).unwrap();
    assert_eq!(scale.len(), 1);
    assert_eq!(scale[0].action, Action::Scale { replicas: 5 });
    assert!(scale[0].reason.contains("step of 2, 9 needed"));
    let restart = session.plan(&common::plugin("restart"), &settings(&[]), &high(None), Level::High, &w).unwrap();
    assert_eq!(restart[0].action, Action::RestartPod { pod: "nginx-2".into() });
    let cordon = session.plan(&common::plugin("cordon"), &settings(&[]), &high(None), Level::High, &w).unwrap();
    assert_eq!(cordon[0].action, Action::CordonNode { node: "n2".into() });
    let below_trigger = session.plan(&common::plugin("scale"), &settings(&[]), &high(Some(9)), Level::Critical, &w).unwrap();
    assert!(below_trigger.is_empty());
}

#[test]
fn plugins_check_their_settings() {
    let plugins = Plugins::new(Limits::default()).unwrap();
    let problems = plugins.check_settings(&common::plugin("risk-cpu"), World::Risk, &settings(&[("ratio", "0.5"), ("act-on", "p99")])).unwrap();
    assert_eq!(problems.len(), 2, "{problems:?}");
    assert!(problems[0].message.contains("`ratio` is `0.5`; it must be a number above 1"));
    assert!(problems[1].message.contains("`act-on` is `p99`; it must be one of median, upper"));
    let good = plugins.check_settings(&common::plugin("scale"), World::Remediation, &settings(&[("step", "2")])).unwrap();
    assert!(good.is_empty());
}

#[test]
fn a_plugin_of_the_wrong_world_is_incompatible() {
    let plugins = Plugins::new(Limits::default()).unwrap();
    let err = plugins.load(&common::plugin("scale"), World::Risk).err().expect("scale is not a risk plugin");
    assert!(matches!(err, PluginError::Incompatible { ref plugin, world: "augur:plugin/risk-plugin@0.3.0", .. } if plugin == "scale"), "{err}");
}

#[test]
fn a_file_that_is_not_a_component_does_not_compile() {
    let dir = tempfile::tempdir().unwrap();
    let bogus = dir.path().join("bogus.wasm");
    std::fs::write(&bogus, b"not wasm").unwrap();
    let plugins = Plugins::new(Limits::default()).unwrap();
    let err = plugins.load(&bogus, World::Risk).err().expect("garbage does not compile");
    assert!(matches!(err, PluginError::Compile { ref plugin, .. } if plugin == "bogus"), "{err}");
}

#[test]
fn a_plan_over_the_proposal_cap_is_refused_and_the_session_goes_on() {
    let plugins = Plugins::new(Limits { max_proposals: 0, ..Limits::default() }).unwrap();
    let mut session = plugins.session();
    let err = session.plan(&common::plugin("scale"), &settings(&[]), &high(Some(9)), Level::High, &workload(3)).unwrap_err();
    assert!(matches!(err, PluginError::TooMuchOutput { ref plugin, .. } if plugin == "scale"), "{err}");
    assert!(err.to_string().ends_with("returned too much: 1 proposals, more than limits.max_proposals, 0"), "{err}");
    // An empty plan is within the cap; the same session keeps serving.
    let none = session.plan(&common::plugin("scale"), &settings(&[]), &high(Some(2)), Level::High, &workload(3)).unwrap();
    assert!(none.is_empty());
}

#[test]
fn host_plugin_check_reports_the_world_and_refuses_what_is_not_a_plugin() {
    use std::process::Command;
    let out = Command::new(common::host_binary()).args(["plugin", "check"]).arg(common::fixture_plugin("template")).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("world:   augur:plugin/risk-plugin@0.3.0 (loads)"), "{stdout}");
    assert!(stdout.contains("exports: assess, check-settings"), "{stdout}");
    assert!(stdout.contains("imports: augur:plugin/types@0.3.0, augur:plugin/host@0.3.0"), "{stdout}");

    let out = Command::new(common::host_binary()).args(["plugin", "check"]).arg(common::fixture_plugin("sneaky")).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    // A file that is no plugin is a failure of the check (1), not a usage error (2).
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("not an Augur plugin of either world") && stderr.contains("`augur-fixtures:sneaky/exfil`, which Augur does not grant"), "{stderr}");

    let out = Command::new(common::host_binary()).args(["plugin", "check"]).arg(common::root().join("Makefile")).output().unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("is not a WebAssembly file"), "{}", String::from_utf8_lossy(&out.stderr));
}

/// The template of docs/plugins.md, built as a component, runs in a policy through the host.
#[test]
fn the_plugin_template_runs_as_wasm() {
    let plugins = Plugins::new(Limits::default()).unwrap();
    let mut session = plugins.session();
    let f = forecast(vec![0.6, 0.8], Some(vec![0.9, 1.2]));
    let input = ForecastInput { target: &target(), metric: "cpu", unit: "cores", history: &[0.5], forecast: &f, replicas: 2, ready_replicas: 2, interval_seconds: 60, startup_seconds: Some(60) };
    let risk = session.assess(&common::fixture_plugin("template"), &settings(&[("max", "1.0")]), &input).unwrap();
    assert_eq!(risk.level, Level::High);
    assert_eq!(risk.seconds_to_breach, Some(120));
    let problems = plugins.check_settings(&common::fixture_plugin("template"), World::Risk, &settings(&[("max", "-1")])).unwrap();
    assert_eq!(problems, [Problem::in_settings("setting `max` is `-1`; it must be a number above 0 (default 1)".into())]);
}

/// The template's rule written in Python (plugins/python-threshold, built with componentize-py
/// by `make python-plugin`): the same contract, the same answers as the Rust template, through
/// the same sandbox.
#[test]
fn a_plugin_in_python_implements_the_same_contract() {
    let plugins = Plugins::new(Limits::default()).unwrap();
    let python = common::fixture_plugin("python-threshold");
    let rust = common::fixture_plugin("template");
    let loaded = plugins.compile(&python, World::Risk).unwrap();
    assert_eq!(loaded.imports, ["augur:plugin/types@0.3.0", "augur:plugin/host@0.3.0"], "the Python runtime's WASI imports are stubbed out");
    let cases = [
        (vec![0.6, 0.8], Some(vec![0.9, 1.2]), 0.5),
        (vec![0.6, 0.95], None, 0.5),
        (vec![0.2, 0.3], None, 0.1),
        (vec![0.6, 0.7], Some(vec![0.8, 0.85]), 1.5),
    ];
    let mut session = plugins.session();
    for (predicted, upper, now) in cases {
        let f = forecast(predicted, upper);
        let history = [now];
        let input = ForecastInput { target: &target(), metric: "cpu", unit: "cores", history: &history, forecast: &f, replicas: 2, ready_replicas: 2, interval_seconds: 60, startup_seconds: Some(60) };
        let from_python = session.assess(&python, &settings(&[("max", "1.0")]), &input).unwrap();
        let from_rust = session.assess(&rust, &settings(&[("max", "1.0")]), &input).unwrap();
        assert_eq!(from_python, from_rust, "the two languages disagree on {f:?}");
    }
    let problems = plugins.check_settings(&python, World::Risk, &settings(&[("max", "-1")])).unwrap();
    assert_eq!(problems, [Problem::in_settings("setting `max` is `-1`; it must be a number above 0 (default 1)".into())]);
}

/// Compiled components are kept on disk (wasmtime's cache, keyed by the component's bytes
/// and the engine): a second start with the same plugins compiles nothing, calls them as
/// before, and a changed plugin is compiled again.
#[test]
fn a_second_start_reads_its_plugins_compiled_and_a_changed_one_compiles() {
    let cache = tempfile::tempdir().unwrap();
    let names = ["risk-cpu", "risk-memory", "risk-node", "scale", "restart", "cordon"];
    let world = |name: &str| if name.starts_with("risk-") { World::Risk } else { World::Remediation };
    let first = Plugins::with_compile_cache(Limits::default(), Some(cache.path())).unwrap();
    for name in names {
        first.load(&common::plugin(name), world(name)).unwrap();
    }
    let used = first.cache_use().unwrap();
    assert_eq!((used.hits, used.misses), (0, 6), "{used:?}");
    drop(first);

    let second = Plugins::with_compile_cache(Limits::default(), Some(cache.path())).unwrap();
    for name in names {
        second.load(&common::plugin(name), world(name)).unwrap();
    }
    let used = second.cache_use().unwrap();
    assert_eq!((used.hits, used.misses), (6, 0), "a restart compiles nothing: {used:?}");
    let f = forecast(vec![0.7, 0.9, 1.2, 1.5, 1.9], None);
    let input = ForecastInput { target: &target(), metric: "cpu", unit: "cores", history: &[0.5, 0.6], forecast: &f, replicas: 2, ready_replicas: 2, interval_seconds: 60, startup_seconds: Some(60) };
    let risk = second.session().assess(&common::plugin("risk-cpu"), &settings(&[("sizing", "surge")]), &input).unwrap();
    assert_eq!((risk.level, risk.required_replicas), (Level::High, Some(5)), "the cached build runs as the compiled one did");

    // The cache is by content: the same bytes at another path are read back; other bytes
    // at that path (the plugin template, a risk plugin not yet compiled) compile.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("risk.wasm");
    std::fs::copy(common::plugin("risk-node"), &path).unwrap();
    second.compile(&path, World::Risk).unwrap();
    std::fs::copy(common::root().join("var/test-plugins/template.wasm"), &path).unwrap();
    second.compile(&path, World::Risk).unwrap();
    let used = second.cache_use().unwrap();
    assert_eq!((used.hits, used.misses), (7, 1), "{used:?}");
}

/// `host run` says at start how its plugins were compiled: the first run compiles them into
/// the cache, the next reads every one back.
#[test]
fn host_run_reads_unchanged_plugins_from_the_compile_cache() {
    let cache = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let text = std::fs::read_to_string(common::root().join("policies/nginx.yaml")).unwrap();
    let text = text.replace("../plugins/dist", &common::root().join("plugins/dist").display().to_string()).replace("../models", &common::root().join("models").display().to_string());
    std::fs::write(dir.path().join("nginx.yaml"), text).unwrap();
    let start = || {
        let out = std::process::Command::new(common::host_binary())
            .args(["run", "--simulate", "--speed", "3600", "--for", "10m", "--quiet", "--policy"])
            .arg(dir.path().join("nginx.yaml"))
            .arg("--audit-log")
            .arg(dir.path().join("audit.jsonl"))
            .env("AUGUR_COMPILE_CACHE", cache.path())
            .env("RUST_LOG", "info")
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stderr).lines().find(|l| l.contains("plugins: ")).map(str::to_string).unwrap_or_default()
    };
    let first = start();
    assert!(first.contains("plugins: 0 read compiled from") && first.contains(", 6 compiled"), "{first}");
    let second = start();
    assert!(second.contains("plugins: 6 read compiled from") && second.contains(", 0 compiled"), "{second}");
}
