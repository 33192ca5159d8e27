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
        paused: None,
        scaled_by: None,
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
    // Within a roomy limit the call succeeds; the reason is kept to one readable line.
    let reason = plan(&plugins, "verbose", roomy).0.unwrap()[0].reason.clone();
    assert!(reason.starts_with(&"x".repeat(augur::text::MAX_SHOWN_CHARS)), "{reason}");
    assert!(reason.ends_with(&format!("… ({} more bytes)", (1 << 20) - augur::text::MAX_SHOWN_CHARS)), "{reason}");
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
guard: {{ remediate: true, min_replicas: 1, max_replicas: 20, max_step: 10, cooldown: 0s, min_history: 1, allowed_actions: [scale, cordon-node, restart-pod] }}
audit: {{ path: {name}-audit.jsonl }}
"#,
        risk = common::plugin("risk-cpu").display(),
        plugin = scale_plugin.display(),
    );
    let path = dir.join(format!("{name}.yaml"));
    std::fs::write(&path, text).unwrap();
    path
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

    let audit = |name: &str| common::records(&dir.path().join(format!("{name}-audit.jsonl")));
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

/// A tmpfs of 256 KiB at `dir`: a real file system that fills on demand. Unmounted on drop.
struct SmallDisk(PathBuf);

impl SmallDisk {
    fn mount(dir: PathBuf) -> Self {
        std::fs::create_dir_all(&dir).unwrap();
        let ok = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=256k", "tmpfs"])
            .arg(&dir)
            .status()
            .unwrap();
        assert!(ok.success(), "mounting a tmpfs needs root, which the test machine has");
        Self(dir)
    }

    /// Writes a filler file until the disk is full.
    fn fill(&self) {
        use std::io::Write;
        let mut filler = std::fs::File::create(self.0.join("filler")).unwrap();
        while filler.write_all(&[0u8; 4096]).is_ok() {}
        let _ = filler.flush();
    }

    fn free(&self) {
        std::fs::remove_file(self.0.join("filler")).unwrap();
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(&self.0).status();
    }
}

/// One tick of plans that would do harm against the picture taken before the tick: restart
/// every pod, cordon every node, scale to u32::MAX, forge log lines and names, flood the log,
/// act with an audit on a full disk. The guard judges each proposal against the workload as
/// the tick's earlier actions left it, so one pod restarts and one node stays schedulable;
/// the scale is clamped; forged text reaches no record raw; the flood is rate-limited and
/// counted; the action that cannot be recorded does not run (and runs once the disk has
/// room); and the good policy acts on the same tick.
#[tokio::test(flavor = "multi_thread")]
async fn harmful_plans_are_held_to_the_invariants_on_the_same_tick() {
    let dir = tempfile::tempdir().unwrap();
    let hostile = common::fixture_plugin("hostile");
    let disk = SmallDisk::mount(dir.path().join("disk"));
    let unrecorded = write_policy(dir.path(), "unrecorded", &common::plugin("scale"), "{ step: 10 }", "{ actions: [scale] }", "");
    let text = std::fs::read_to_string(&unrecorded).unwrap().replace("path: unrecorded-audit.jsonl", "path: disk/unrecorded-audit.jsonl");
    std::fs::write(&unrecorded, text).unwrap();
    let files = [
        write_policy(dir.path(), "restarter", &hostile, "{ mode: restart-all }", "{ actions: [restart-pod] }", ""),
        write_policy(dir.path(), "cordoner", &hostile, "{ mode: cordon-all }", "{ actions: [cordon-node] }", ""),
        write_policy(dir.path(), "huge", &hostile, "{ mode: huge-scale }", "{ actions: [scale] }", ""),
        write_policy(dir.path(), "forger", &hostile, "{ mode: forge }", "{ actions: [scale, restart-pod] }", ""),
        write_policy(dir.path(), "flooder", &hostile, "{ mode: log-flood }", "{ actions: [scale] }", ", limits: { deadline: 50ms }"),
        unrecorded,
        write_policy(dir.path(), "good", &common::plugin("scale"), "{ step: 10 }", "{ actions: [scale] }", ""),
    ];
    let sim = Arc::new(SimCluster::new(SimConfig {
        trace: Trace::parse("requests\n1000\n1000\n1000\n", "requests", "constant").unwrap(),
        ..SimConfig::default()
    }));
    let plugins = Arc::new(Plugins::new(Limits::default()).unwrap());
    let mut runtimes = Vec::new();
    let mut targets = BTreeMap::new();
    for file in &files {
        let policy = config::load(file).unwrap();
        sim.add_deployment(&policy.target, 3);
        targets.insert(policy.name.clone(), policy.target.clone());
        runtimes.push(PolicyRuntime::new(policy, &plugins, None, false).unwrap());
    }
    let telemetry = augur::telemetry::Telemetry::new();
    let mut engine = Engine::new(plugins.clone(), Seams::all(sim.clone()), runtimes, false).unwrap();
    engine.set_echo(false);
    engine.set_telemetry(telemetry.clone());
    disk.fill();
    let started = Instant::now();
    let counts = engine.tick(sim.now()).await;
    assert!(started.elapsed() < Duration::from_secs(10), "{:?}", started.elapsed());
    let audit = |name: &str| common::records(&dir.path().join(format!("{name}-audit.jsonl")));
    let verdicts = |name: &str, verdict: &str| audit(name).iter().filter(|r| r["verdict"] == verdict).count();

    // One pod of three restarts; the others wait for it to be ready again.
    assert_eq!(verdicts("restarter", "executed"), 1, "{:#?}", audit("restarter"));
    assert!(audit("restarter").iter().filter(|r| r["verdict"] == "rejected").all(|r| r["reason"].as_str().unwrap().contains("of 3 replicas are ready")), "{:#?}", audit("restarter"));
    // Two nodes of three are cordoned; the last schedulable one is kept.
    assert_eq!(verdicts("cordoner", "executed"), 2, "{:#?}", audit("cordoner"));
    assert!(audit("cordoner").iter().any(|r| r["verdict"] == "rejected" && r["reason"].as_str().unwrap().contains("is the last schedulable node")));
    // u32::MAX replicas: clamped by max_replicas and max_step.
    assert_eq!(sim.replicas(&targets["huge"]), Some(13));
    // Forged text: the guest's lines and reasons reach no record with a control character;
    // the forged pod name is refused, escaped.
    for record in audit("forger") {
        for field in ["reason", "result"] {
            if let Some(text) = record[field].as_str() {
                assert!(!text.chars().any(char::is_control), "{text:?}");
            }
        }
        assert!(!record["proposal"]["reason"].as_str().unwrap_or_default().chars().any(char::is_control), "{record}");
    }
    assert!(audit("forger").iter().any(|r| r["verdict"] == "rejected" && r["reason"].as_str().unwrap().starts_with("pod nginx-0ok\\n2026-01-01T00:00:00Z")), "{:#?}", audit("forger"));
    // The flood: the call ends at its deadline and the log keeps a burst of lines.
    assert!(audit("flooder").iter().any(|r| r["error_stage"] == "plan" && r["reason"].as_str().unwrap().contains("deadline")));
    let metrics = telemetry.encode();
    let dropped: f64 = metrics.lines().find(|l| l.starts_with("augur_plugin_log_lines_dropped_total{plugin=\"hostile\"}")).and_then(|l| l.split(' ').nth(1)).map(|v| v.parse().unwrap()).unwrap_or_else(|| panic!("{metrics}"));
    assert!(dropped > 1000.0, "{dropped}");
    // Fail closed: the audit cannot be written, so the action does not run.
    assert_eq!(sim.replicas(&targets["unrecorded"]), Some(3), "an action that cannot be recorded is not executed");
    assert!(metrics.contains("augur_audit_write_failing{policy=\"unrecorded\"} 1"), "{metrics}");
    assert!(metrics.contains("augur_audit_write_failing{policy=\"good\"} 0"), "{metrics}");
    // The good policy acted on the same tick.
    assert_eq!(verdicts("good", "executed"), 1);
    assert!(sim.replicas(&targets["good"]).unwrap() > 3);
    // restarter 1, cordoner 2, huge 1, good 1.
    assert_eq!(counts.executed, 5, "{counts:?}");

    // Room again: the next tick records the held action's rejection and acts.
    disk.free();
    sim.advance(Duration::from_secs(60));
    engine.tick(sim.now()).await;
    let kept = common::records(&dir.path().join("disk/unrecorded-audit.jsonl"));
    assert!(kept.iter().any(|r| r["verdict"] == "rejected" && r["reason"].as_str().unwrap().starts_with("not executed: its audit record cannot be written")), "nothing is lost: {kept:#?}");
    assert!(kept.iter().any(|r| r["verdict"] == "executed"), "{kept:#?}");
    assert!(sim.replicas(&targets["unrecorded"]).unwrap() > 3);
    assert!(telemetry.encode().contains("augur_audit_write_failing{policy=\"unrecorded\"} 0"));
}

/// A plugin that runs to its deadline delays only its own policy: the good policy of the same
/// tick decides, scales and records while the slow one is still running.
#[tokio::test(flavor = "multi_thread")]
async fn a_slow_plugin_delays_only_its_own_policy() {
    let dir = tempfile::tempdir().unwrap();
    let files = [
        write_policy(dir.path(), "slowpoke", &common::fixture_plugin("hostile"), "{ mode: loop }", "{ actions: [scale] }", ", limits: { deadline: 5s }"),
        write_policy(dir.path(), "good", &common::plugin("scale"), "{ step: 10 }", "{ actions: [scale] }", ""),
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
    let mut engine = Engine::new(plugins, Seams::all(sim.clone()), runtimes, false).unwrap();
    engine.set_echo(false);
    let now = sim.now();
    let started = Instant::now();
    let tick = tokio::spawn(async move { engine.tick(now).await });
    let good = dir.path().join("good-audit.jsonl");
    while !common::records(&good).iter().any(|r| r["verdict"] == "executed") {
        assert!(!tick.is_finished(), "the good policy's action came only with the slow one's end");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let acted_after = started.elapsed();
    assert!(!tick.is_finished(), "the slow policy is still deciding when the good one has acted");
    let counts = tick.await.unwrap();
    assert!(acted_after < Duration::from_secs(3), "{acted_after:?}");
    assert!(started.elapsed() >= Duration::from_secs(5), "the slow plugin ran to its deadline: {:?}", started.elapsed());
    assert_eq!(counts.executed, 1, "{counts:?}");
    let slow = common::records(&dir.path().join("slowpoke-audit.jsonl"));
    assert!(slow.iter().any(|r| r["error_stage"] == "plan" && r["reason"].as_str().unwrap().contains("ran past its 5s deadline")), "{slow:?}");
}
