//! The sandbox against hostile guests (plugins/fixtures, real `.wasm` components built by
//! `make test-plugins`): each misbehaviour ends in a typed error within the rule's limits,
//! the runtime keeps serving, and in the engine the other plugins and policies of the same
//! tick still act.

use crate::common;

use augur::config;
use augur::domain::{Action, Level, Node, Pod, Risk, Target, Workload};
use augur::engine::{Engine, PolicyRuntime, Seams};
use augur::plugins::{Limits, PluginError, PluginErrorKind, Plugins, RuleSettings, Settings, World};
use augur::sim::{SimCluster, SimConfig, Trace};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn mode(mode: &str, limits: Limits) -> Settings {
    RuleSettings::with_limits(
        BTreeMap::from([("mode".to_string(), mode.to_string())]),
        Some(limits),
    )
}

fn workload() -> Workload {
    let target = Target {
        kind: "Deployment".into(),
        namespace: "default".into(),
        name: "nginx".into(),
    };
    let pod = Pod {
        name: "nginx-0".into(),
        node: "n1".into(),
        phase: "Running".into(),
        ready: true,
        cpu_cores: None,
        memory_bytes: None,
        age_seconds: 60,
        startup_seconds: None,
    };
    let node = Node {
        name: "n1".into(),
        ready: true,
        schedulable: true,
        cordoned_by_augur: false,
        temperature_celsius: None,
        pressure: vec![],
        healthy_seconds: 0,
    };
    Workload {
        target,
        replicas: 2,
        ready_replicas: 2,
        pods: vec![pod],
        nodes: vec![node],
    }
}

fn risk() -> Risk {
    Risk {
        level: Level::High,
        score: 0.9,
        seconds_to_breach: Some(60),
        required_replicas: Some(5),
        reason: "test".into(),
    }
}

/// Plans with the hostile fixture in `mode`; returns the outcome and how long it took.
fn plan(
    plugins: &Plugins,
    mode_name: &str,
    limits: Limits,
) -> (Result<Vec<augur::domain::Proposal>, PluginError>, Duration) {
    let started = Instant::now();
    let result = plugins.session().plan(
        &common::fixture_plugin("hostile"),
        &mode(mode_name, limits),
        &risk(),
        Level::High,
        &workload(),
    );
    (result, started.elapsed())
}

/// After any failure, the same runtime serves a well-behaved call at once.
fn still_serves(plugins: &Plugins) {
    let (polite, _) = plan(plugins, "polite", Limits::default());
    assert_eq!(polite.unwrap()[0].action, Action::Scale { replicas: 7 });
}

#[test]
fn a_guest_that_loops_forever_is_stopped_at_its_deadline() {
    let plugins = Plugins::new(Limits::default()).unwrap();
    let limits = Limits {
        deadline: Duration::from_millis(50),
        ..Limits::default()
    };
    let (result, took) = plan(&plugins, "loop", limits);
    let err = result.unwrap_err();
    assert!(
        matches!(err, PluginError::Deadline { deadline, .. } if deadline == Duration::from_millis(50)),
        "{err}"
    );
    assert_eq!(err.kind(), PluginErrorKind::Deadline);
    // The epoch ticks every 5 ms; anything near a second would mean the deadline did not bite.
    assert!(took < Duration::from_secs(1), "stopped after {took:?}");
    still_serves(&plugins);
}

#[test]
fn a_guest_that_panics_traps_with_its_message() {
    let plugins = Plugins::new(Limits::default()).unwrap();
    let err = plan(&plugins, "panic", Limits::default()).0.unwrap_err();
    assert_eq!(err.kind(), PluginErrorKind::Trap, "{err}");
    assert!(
        err.to_string().contains("hostile plugin panics on purpose"),
        "the guest's panic message reaches the error: {err}"
    );
    still_serves(&plugins);
}

/// A guest that blocks in WASI (an hour's sleep; a poll on a pollable due in an hour) waits
/// in host code, out of the epoch deadline's reach: the host's clocks make every such wait
/// ready at once, so the call returns as if the hour had passed.
#[test]
fn a_guest_that_sleeps_or_polls_for_an_hour_returns_at_once() {
    let plugins = Plugins::new(Limits::default()).unwrap();
    for how in ["sleep", "poll"] {
        let (result, took) = plan(&plugins, how, Limits::default());
        let proposals = result.unwrap();
        assert_eq!(proposals[0].reason, format!("woke from {how}"));
        assert!(took < Duration::from_secs(5), "{how} took {took:?}");
    }
    still_serves(&plugins);
}

/// `check-settings` runs at validate, start and reload, often from async code: a guest that
/// blocks there returns at once, one that loops meets its deadline, one that panics traps
/// with its message (and the host does not panic starting a runtime within its own).
#[tokio::test(flavor = "multi_thread")]
async fn check_settings_that_blocks_loops_or_panics_is_bounded_and_typed_from_async_code() {
    let plugins = Plugins::new(Limits::default()).unwrap();
    let check = |how: &str| {
        let limits = Limits {
            deadline: Duration::from_millis(100),
            ..Limits::default()
        };
        let settings = RuleSettings::with_limits(
            BTreeMap::from([("check".to_string(), how.to_string())]),
            Some(limits),
        );
        let started = Instant::now();
        let result = plugins.check_settings(
            &common::fixture_plugin("hostile"),
            World::Remediation,
            &settings,
        );
        (result, started.elapsed())
    };
    for how in ["sleep", "poll"] {
        let (result, took) = check(how);
        assert!(result.unwrap().is_empty(), "{how}");
        assert!(took < Duration::from_secs(5), "{how} took {took:?}");
    }
    let (result, took) = check("loop");
    let err = result.unwrap_err();
    assert_eq!(err.kind(), PluginErrorKind::Deadline, "{err}");
    assert!(took < Duration::from_secs(5), "loop took {took:?}");
    let err = check("panic").0.unwrap_err();
    assert_eq!(err.kind(), PluginErrorKind::Trap, "{err}");
    assert!(
        err.to_string()
            .contains("hostile check-settings panics on purpose"),
        "{err}"
    );
    still_serves(&plugins);
}

#[test]
fn a_guest_that_allocates_without_end_hits_its_memory_cap() {
    let plugins = Plugins::new(Limits::default()).unwrap();
    let limits = Limits {
        memory_bytes: 8 << 20,
        ..Limits::default()
    };
    let err = plan(&plugins, "alloc", limits).0.unwrap_err();
    assert!(
        matches!(err, PluginError::Memory { limit, .. } if limit == 8 << 20),
        "{err}"
    );
    assert_eq!(err.kind(), PluginErrorKind::Limit);
    still_serves(&plugins);
}

#[test]
fn a_million_proposals_are_refused_before_they_are_copied_out() {
    let plugins = Plugins::new(Limits::default()).unwrap();
    // Room to build the million in the guest, so that the output cap is what stops them.
    let limits = Limits {
        memory_bytes: 128 << 20,
        deadline: Duration::from_secs(5),
        ..Limits::default()
    };
    let err = plan(&plugins, "flood", limits).0.unwrap_err();
    assert!(matches!(err, PluginError::TooMuchOutput { .. }), "{err}");
    assert!(err.to_string().contains("refused before it was copied out of the sandbox"), "{err}");
    assert_eq!(err.kind(), PluginErrorKind::Limit);
    // With the default memory cap the same guest cannot even build them.
    let capped = plan(&plugins, "flood", Limits::default()).0.unwrap_err();
    assert!(matches!(capped, PluginError::Memory { .. }), "{capped}");
    still_serves(&plugins);
}

#[test]
fn a_reason_over_the_text_cap_is_refused() {
    let plugins = Plugins::new(Limits::default()).unwrap();
    let err = plan(&plugins, "verbose", Limits::default()).0.unwrap_err();
    assert!(matches!(err, PluginError::TooMuchOutput { .. }), "{err}");
    assert!(err.to_string().contains("limits.max_output (65536 bytes of text)"), "{err}");
    let roomy = Limits {
        max_output_bytes: 2 << 20,
        ..Limits::default()
    };
    assert_eq!(
        plan(&plugins, "verbose", roomy).0.unwrap()[0].reason.len(),
        1 << 20
    );
}

#[test]
fn a_guest_that_recurses_without_end_traps() {
    let plugins = Plugins::new(Limits::default()).unwrap();
    let err = plan(&plugins, "recurse", Limits::default()).0.unwrap_err();
    assert_eq!(err.kind(), PluginErrorKind::Trap, "{err}");
    still_serves(&plugins);
}

#[test]
fn every_call_gets_a_fresh_instance() {
    let plugins = Plugins::new(Limits::default()).unwrap();
    let mut session = plugins.session();
    for _ in 0..3 {
        let proposals = session
            .plan(
                &common::fixture_plugin("hostile"),
                &mode("leak", Limits::default()),
                &risk(),
                Level::High,
                &workload(),
            )
            .unwrap();
        assert_eq!(
            proposals[0].action,
            Action::Scale { replicas: 1 },
            "state leaked from an earlier call: {}",
            proposals[0].reason
        );
    }
}

#[test]
fn a_guest_exporting_the_wrong_world_is_incompatible() {
    let plugins = Plugins::new(Limits::default()).unwrap();
    let err = plugins
        .compile(&common::fixture_plugin("hostile"), World::Risk)
        .unwrap_err();
    assert!(
        matches!(
            err,
            PluginError::Incompatible {
                world: "augur:plugin/risk-plugin@0.3.0",
                ..
            }
        ),
        "{err}"
    );
    let err = plugins
        .compile(&common::plugin("risk-cpu"), World::Remediation)
        .unwrap_err();
    assert_eq!(err.kind(), PluginErrorKind::Incompatible, "{err}");
}

#[test]
fn a_guest_importing_an_interface_the_host_does_not_grant_is_refused_at_load() {
    let plugins = Plugins::new(Limits::default()).unwrap();
    let err = plugins
        .compile(&common::fixture_plugin("sneaky"), World::Remediation)
        .unwrap_err();
    assert_eq!(err.kind(), PluginErrorKind::Incompatible, "{err}");
    let message = err.to_string();
    assert!(
        message.contains("`augur-fixtures:sneaky/exfil`")
            && message.contains("which Augur does not grant"),
        "{message}"
    );
    // The shipped plugins import only what is granted.
    let loaded = plugins
        .compile(&common::plugin("scale"), World::Remediation)
        .unwrap();
    assert!(
        loaded
            .imports
            .iter()
            .any(|i| i == "augur:plugin/host@0.3.0"),
        "{:?}",
        loaded.imports
    );
    assert!(
        loaded
            .imports
            .iter()
            .all(|i| !i.starts_with("wasi:sockets")),
        "{:?}",
        loaded.imports
    );
}

fn write_policy(
    dir: &Path,
    name: &str,
    scale_plugin: &Path,
    settings: &str,
    capabilities: &str,
    limits: &str,
) -> PathBuf {
    let text = format!(
        r#"name: {name}
target: {{ kind: Deployment, namespace: default, name: {name} }}
interval: 60s
metrics: [{{ name: cpu, query: cpu, unit: cores }}]
forecast: {{ baseline: last-value, horizon: 5, step: 60s }}
risks:
  - {{ name: cpu, metric: cpu, plugin: {risk}, settings: {{ capacity-per-pod: 0.05 }} }}
remediations:
  - {{ name: act, risk: cpu, trigger: high, plugin: {plugin}, settings: {settings}, capabilities: {capabilities}{limits} }}
guard: {{ remediate: true, min_replicas: 1, max_replicas: 20, max_step: 10, cooldown: 0s, min_history: 1, allowed_actions: [scale, cordon-node] }}
audit: {{ path: {name}-audit.jsonl }}
"#,
        risk = common::plugin("risk-cpu").display(),
        plugin = scale_plugin.display(),
    );
    let path = dir.join(format!("{name}.yaml"));
    std::fs::write(&path, text).unwrap();
    path
}

fn records(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// One tick of six policies on the simulator: a guest that loops, one that allocates, one
/// that proposes a scale where it was granted only cordons, two that sleep or poll for an
/// hour in WASI, and a good one. The first three get a typed error or a rejection in their
/// audit; the sleepers wake at once; the good one scales on the same tick.
#[tokio::test(flavor = "multi_thread")]
async fn hostile_plugins_do_not_stop_the_others_on_the_same_tick() {
    let dir = tempfile::tempdir().unwrap();
    let hostile = common::fixture_plugin("hostile");
    let files = [
        write_policy(
            dir.path(),
            "looper",
            &hostile,
            "{ mode: loop }",
            "{ actions: [scale] }",
            ", limits: { deadline: 20ms }",
        ),
        write_policy(
            dir.path(),
            "hoarder",
            &hostile,
            "{ mode: alloc }",
            "{ actions: [scale] }",
            ", limits: { memory: 4Mi }",
        ),
        write_policy(
            dir.path(),
            "overreach",
            &hostile,
            "{ mode: polite }",
            "{ actions: [cordon-node] }",
            "",
        ),
        write_policy(
            dir.path(),
            "sleeper",
            &hostile,
            "{ mode: sleep }",
            "{ actions: [scale] }",
            "",
        ),
        write_policy(
            dir.path(),
            "poller",
            &hostile,
            "{ mode: poll }",
            "{ actions: [scale] }",
            "",
        ),
        write_policy(
            dir.path(),
            "good",
            &common::plugin("scale"),
            "{ step: 10 }",
            "{ actions: [scale] }",
            "",
        ),
    ];
    let sim = Arc::new(SimCluster::new(SimConfig {
        trace: Trace::parse("requests\n1000\n1000\n", "requests", "constant").unwrap(),
        ..SimConfig::default()
    }));
    let plugins = Arc::new(Plugins::new(Limits::default()).unwrap());
    let mut runtimes = Vec::new();
    for file in &files {
        let policy = config::load(file).unwrap();
        sim.add_deployment(&policy.target, 1);
        runtimes.push(PolicyRuntime::new(policy, &plugins, None, false).unwrap());
    }
    // A policy whose plugin panics in check-settings does not start, with the reason; the
    // host, in async code here as at `host run`'s start, does not panic.
    let panicky = write_policy(
        dir.path(),
        "panicky",
        &hostile,
        "{ check: panic }",
        "{ actions: [scale] }",
        "",
    );
    let err = PolicyRuntime::new(config::load(&panicky).unwrap(), &plugins, None, false)
        .err()
        .expect("a policy whose check-settings traps does not start");
    assert!(
        format!("{err:#}").contains("hostile check-settings panics on purpose"),
        "{err:#}"
    );
    let mut engine = Engine::new(plugins, Seams::all(sim.clone()), runtimes, false).unwrap();
    engine.set_echo(false);
    let started = Instant::now();
    let counts = engine.tick(sim.now()).await;
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "the sleeping guests cost no more than their deadlines: {:?}",
        started.elapsed()
    );
    // The good policy and the two whose guests slept (and woke at once) scale.
    assert_eq!(counts.executed, 3, "{counts:?}");

    let audit = |name: &str| records(&dir.path().join(format!("{name}-audit.jsonl")));
    let looper = audit("looper");
    assert!(
        looper.iter().any(|r| r["error_stage"] == "plan"
            && r["reason"]
                .as_str()
                .unwrap()
                .contains("ran past its 20ms deadline")),
        "{looper:?}"
    );
    let hoarder = audit("hoarder");
    assert!(
        hoarder.iter().any(|r| r["error_stage"] == "plan"
            && r["reason"]
                .as_str()
                .unwrap()
                .contains("memory limit of 4194304 bytes")),
        "{hoarder:?}"
    );
    let overreach = audit("overreach");
    assert!(
        overreach.iter().any(|r| r["verdict"] == "rejected"
            && r["reason"]
                .as_str()
                .unwrap()
                .starts_with("not granted: this rule may propose only [cordon-node], not `scale`")),
        "{overreach:?}"
    );
    let good = audit("good");
    assert!(good.iter().any(|r| r["verdict"] == "executed"), "{good:?}");
}
