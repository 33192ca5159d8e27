//! End-to-end runs of the whole loop on the built-in simulated cluster, with the real plugins:
//! the README's acceptance run, dry-run, a surge met before overload, the guard's maximum,
//! a failing policy beside a good one, and guard state surviving a restart of the host.

use crate::common;

use augur::config;
use augur::engine::{Engine, PolicyRuntime, Seams};
use augur::plugins::{Limits, Plugins};
use augur::commands::{RunOptions, run};
use augur::sim::{SimCluster, SimConfig, Trace};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

/// `policies/nginx.yaml`, with absolute plugin paths, its audit log in `dir`, and `edit` applied.
fn policy(dir: &Path, name: &str, edit: impl Fn(String) -> String) -> PathBuf {
    let text = std::fs::read_to_string(common::root().join("policies/nginx.yaml")).unwrap();
    let dist = common::root().join("plugins/dist");
    let models = common::root().join("models");
    let text = text.replace("../plugins/dist", &dist.display().to_string()).replace("../models", &models.display().to_string()).replace("../var/nginx-audit.jsonl", &format!("{name}-audit.jsonl")).replace("name: nginx\n", &format!("name: {name}\n"));
    let file = dir.join(format!("{name}.yaml"));
    std::fs::write(&file, edit(text)).unwrap();
    file
}

fn options(policies: Vec<PathBuf>, run_for: &str, dry_run: bool, trace: Option<&str>) -> RunOptions {
    RunOptions {
        policies,
        simulate: true,
        speed: 1e9, // as fast as the machine goes
        run_for: Some(humantime::parse_duration(run_for).unwrap()),
        dry_run,
        trace: trace.map(|f| (PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(f), "requests".to_string())),
        echo: false,
        ..Default::default()
    }
}

fn executed_scales(records: &[Value]) -> Vec<&Value> {
    records.iter().filter(|r| r["verdict"] == "executed" && r["proposal"]["action"] == "scale").collect()
}

/// An engine running `policy` alone on the simulator with the surge fixture, 2 replicas.
fn on_the_surge(policy: config::Policy) -> (Arc<SimCluster>, Engine) {
    let trace = Trace::from_file(&PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/surge.csv"), "requests").unwrap();
    let sim = Arc::new(SimCluster::new(SimConfig { trace, ..SimConfig::default() }));
    sim.add_deployment(&policy.target, 2);
    let plugins = Arc::new(Plugins::new(Limits::default()).unwrap());
    let runtime = PolicyRuntime::new(policy, &plugins, None, false).unwrap();
    let mut engine = Engine::new(plugins, Seams::all(sim.clone()), vec![runtime], false).unwrap();
    engine.set_echo(false);
    (sim, engine)
}

/// Seconds since the start of the trace at which a record was made.
fn offset(record: &Value, trace_start: u64) -> f64 {
    let t = humantime::parse_rfc3339(record["time"].as_str().unwrap()).unwrap();
    t.duration_since(UNIX_EPOCH).unwrap().as_secs_f64() - trace_start as f64
}

#[test]
fn the_acceptance_run_executes_a_scale_that_cites_a_predicted_breach() {
    common::plugin("scale");
    let dir = tempfile::tempdir().unwrap();
    let audit = dir.path().join("audit.jsonl");
    let out = Command::new(common::host_binary())
        .current_dir(common::root())
        .args(["run", "--policy", "policies/nginx.yaml", "--simulate", "--speed", "3600", "--for", "6h", "--audit-log"])
        .arg(&audit)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("-> risk high"), "forecasts and risks are printed");
    assert!(stdout.contains("=> EXECUTED scale to"), "the scale-up is printed");
    let all = common::records(&audit);
    let scales = executed_scales(&all);
    assert!(!scales.is_empty(), "no executed scale in {} records", all.len());
    assert!(scales.iter().any(|r| r["proposal"]["reason"].as_str().unwrap().contains("predicted breach in")), "{scales:#?}");
    let first = scales[0];
    for field in ["time", "policy", "target", "observed", "forecast", "risk", "proposal", "verdict", "reason", "result"] {
        assert!(!first[field].is_null(), "audit field {field} missing: {first}");
    }
    assert_eq!(first["forecast"]["predicted"].as_array().unwrap().len(), 10, "nginx.yaml forecasts 10 minutes ahead");
    // guard.min_history: 10: nothing acts on the first minutes' forecasts; the audit says why.
    assert!(all.iter().any(|r| r["verdict"] == "rejected" && r["reason"].as_str().unwrap().starts_with("warming up: ")), "warm-up rejections are recorded");
    assert!(first["time"].as_str().unwrap() >= "1995-07-05T08:09:00Z", "first action at {}", first["time"]);
    // The shipped model forecasts once it has its 60-point window; before that the fallback
    // serves and says so.
    let by = |r: &&serde_json::Value| r["forecast"]["forecaster"].as_str().unwrap_or_default().to_string();
    assert!(all.iter().filter(|r| !r["forecast"].is_null()).any(|r| by(&r) == "model:transformer"), "the demo forecasts with the shipped model");
    let early = all.iter().find(|r| !r["forecast"].is_null()).unwrap();
    assert_ne!(by(&early), "model:transformer", "the first records come before the model's window is full");
    assert!(early["forecast"]["fallback"].as_str().unwrap().contains("model:transformer needs at least 60 points"), "{early}");
    // Every forecast in the audit says who served it, why, and how each contender scores.
    let by_model = scales.iter().find(|r| by(r) == "model:transformer").expect("the model serves some executed scale");
    let gate = &by_model["forecast"]["gate"];
    assert_eq!(gate["serving"], "model:transformer", "{gate}");
    assert_eq!(gate["why"]["kind"], "best-skill", "promoted on its skill: {gate}");
    let standings = gate["standings"].as_array().unwrap();
    assert_eq!(standings[0]["forecaster"], "model:transformer");
    // Serving, it stays within the margin of the best baseline (beyond it, it is demoted).
    assert!(standings[0]["vs_best_baseline"].as_f64().unwrap() < 1.0 / 0.95, "{gate}");
    assert!(standings.iter().any(|s| s["forecaster"] == "last-value" && s["loss"].as_f64().is_some()), "{gate}");
}

#[tokio::test(flavor = "multi_thread")]
async fn dry_run_records_dry_run_verdicts_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let file = policy(dir.path(), "nginx", |t| t);
    let report = run(options(vec![file], "6h", true, None)).await.unwrap();
    let all = common::records(&dir.path().join("nginx-audit.jsonl"));
    assert!(all.iter().any(|r| r["verdict"] == "dry-run" && r["proposal"]["action"] == "scale"));
    assert!(all.iter().all(|r| r["verdict"] != "executed"));
    assert_eq!(report.totals.executed, 0);
    let (_, stats) = &report.simulated[0];
    assert_eq!(stats.replica_changes, vec![(0.0, 2)], "the simulated replicas never change");
    assert_eq!(stats.restarts, 0);
}

/// The synthetic surge: without Augur (dry-run) the 2 pods overload during the ramp; with
/// Augur a scale-up is executed before that moment and the overload shrinks.
#[tokio::test(flavor = "multi_thread")]
async fn a_surge_is_met_by_a_scale_up_before_the_overload() {
    let start = Trace::from_file(&PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/surge.csv"), "requests").unwrap().start_unix;
    let dir = tempfile::tempdir().unwrap();
    let idle = run(options(vec![policy(dir.path(), "idle", |t| t)], "3h", true, Some("surge.csv"))).await.unwrap();
    let acting = run(options(vec![policy(dir.path(), "acting", |t| t)], "3h", false, Some("surge.csv"))).await.unwrap();
    let overload_at = idle.simulated[0].1.first_overload.expect("without action the surge overloads 2 pods");
    assert!((60.0 * 60.0..80.0 * 60.0).contains(&overload_at), "the fixture overloads during its ramp: {overload_at}");

    let all = common::records(&dir.path().join("acting-audit.jsonl"));
    let scales = executed_scales(&all);
    let first = offset(scales[0], start);
    assert!(first >= 60.0 * 60.0, "no scale-up on the flat hour before the ramp (first at {first} s)");
    assert!(first < overload_at, "the first scale-up ({first} s) comes before the overload ({overload_at} s)");
    assert!(scales[0]["proposal"]["reason"].as_str().unwrap().contains("predicted breach in"));
    let (with, without) = (acting.simulated[0].1.overload_seconds, idle.simulated[0].1.overload_seconds);
    assert!(with < without / 4.0, "overload with Augur {with} s, without {without} s");
}

/// tests/fixtures/gap.csv: a steady load needing 5-6 pods, then 30 minutes of zeros (a
/// collection gap) from minute 150, then the load again. Augur treats the zeros as missing,
/// says so in the audit, and holds its replicas through the gap.
#[tokio::test(flavor = "multi_thread")]
async fn zeros_in_a_gap_are_treated_as_missing_and_the_replicas_held() {
    let dir = tempfile::tempdir().unwrap();
    let report = run(options(vec![policy(dir.path(), "gap", |t| t)], "4h", false, Some("gap.csv"))).await.unwrap();
    let all = common::records(&dir.path().join("gap-audit.jsonl"));
    let held: Vec<&Value> = all.iter().filter(|r| r["error_stage"] == "collect" && r["reason"].as_str().unwrap().contains("treated as missing")).collect();
    let ticks = 30 * 60 / config::load(&dir.path().join("gap.yaml")).unwrap().interval.as_secs() as usize;
    assert!((ticks * 5 / 6..=ticks + 4).contains(&held.len()), "one hold a tick of the 30-minute gap ({ticks} ticks): {}", held.len());
    assert!(held[0]["reason"].as_str().unwrap().contains("holding: risk `cpu` and its remediations skip this tick"), "{}", held[0]);
    let changes = &report.simulated[0].1.replica_changes;
    let at = |seconds: f64| changes.iter().rev().find(|(t, _)| *t <= seconds).map(|(_, r)| *r).unwrap();
    let before = at(149.0 * 60.0);
    assert!(before >= 4, "the load needs more than the floor: {changes:?}");
    assert!((150..180).all(|m| at(f64::from(m) * 60.0) >= before), "no replica given away in the gap: {changes:?}");
}

/// nginx.yaml ticks every 15 s (the HPA's sync period) on its forecast step of a minute, with a
/// cooldown of one tick: the history keeps one point a minute, as the model reads it; the ticks between read the current usage and reuse their
/// minute's forecast; so the reactive floor acts between the minutes.
#[tokio::test(flavor = "multi_thread")]
async fn ticks_between_forecast_steps_read_the_current_usage_and_reuse_the_steps_forecast() {
    let dir = tempfile::tempdir().unwrap();
    let file = policy(dir.path(), "substep", |t| t);
    let loaded = config::load(&file).unwrap();
    assert_eq!((loaded.interval, loaded.forecast.step), (Duration::from_secs(15), Duration::from_secs(60)));
    let (sim, mut engine) = on_the_surge(loaded);
    // Into the fixture's ramp (minute 60 on), where the usage changes within every minute.
    sim.advance(Duration::from_secs(62 * 60));
    let mut seen = Vec::new();
    for _ in 0..12 {
        engine.tick(sim.now()).await;
        let p = &engine.policies()[0];
        seen.push((p.history("cpu").len(), p.history("cpu").last().copied(), p.reading("cpu"), p.forecasts_made_at()));
        sim.advance(Duration::from_secs(15));
    }
    for minute in seen.chunks(4) {
        let (points, newest, _, made) = minute[0];
        assert!(minute.iter().all(|(n, p, _, m)| (*n, *p, *m) == (points, newest, made)), "one point and one forecast a minute: {seen:?}");
        assert_eq!(minute[0].2, newest, "the minute's first tick is its point");
        assert!(minute[1..].iter().any(|(_, _, reading, _)| *reading != newest), "the ticks between read the current usage: {seen:?}");
    }
    assert!(seen[4].0 == seen[0].0 + 1 && seen[8].0 == seen[4].0 + 1, "a point a minute: {seen:?}");
    assert!(seen[0].3 < seen[4].3 && seen[4].3 < seen[8].3, "a new forecast a minute: {seen:?}");
}

/// The engine calibrates the interval of every forecaster that could serve, per step, on the
/// points that follow: one forecast remembered per forecast step (not per 15 s tick), each of
/// its steps scored once by the point it predicted.
#[tokio::test(flavor = "multi_thread")]
async fn the_engine_calibrates_each_steps_interval_on_the_points_that_follow() {
    let dir = tempfile::tempdir().unwrap();
    let baseline = |t: String| t.lines().filter(|l| !l.trim_start().starts_with("fallback:")).map(|l| if l.trim_start().starts_with("model:") { "  baseline: last-value" } else { l }).collect::<Vec<_>>().join("\n");
    let file = policy(dir.path(), "calibrated", baseline);
    let (sim, mut engine) = on_the_surge(config::load(&file).unwrap());
    for _ in 0..(120 * 4) {
        engine.tick(sim.now()).await;
        sim.advance(Duration::from_secs(15));
    }
    let p = &engine.policies()[0];
    let gate = p.gate("cpu").expect("the cpu rule's metric has a gate");
    let steps = gate.calibration("last-value").expect("the policy's forecaster is a contender").steps();
    assert_eq!(steps.len(), 10, "every step of the 10-point horizon");
    assert!((100..120).contains(&steps[0].scored), "about one forecast a minute for 2 hours (less the warm-up): {}", steps[0].scored);
    for (h, step) in steps.iter().enumerate() {
        assert_eq!(step.scored, steps[0].scored - h as u64, "step {} is scored by one point fewer than the step before", h + 1);
        assert!(step.scale > 0.0);
    }
    let coverage = gate.coverage("last-value").unwrap();
    assert!((0.0..=1.0).contains(&coverage) && coverage > 0.3, "the issued intervals hold most points: {coverage}");
}

/// An engine over the simulator replaying `points` minutes of a wave of `period` minutes (with
/// a little noise), `hours` into the trace, warm-started; with the points filled per metric.
async fn warm_started(dir: &Path, name: &str, points: usize, period: f64, hours: u64, edit: impl Fn(String) -> String) -> (Engine, Arc<SimCluster>, Vec<(String, BTreeMap<String, usize>)>) {
    let rows: Vec<String> = (0..points).map(|t| format!("{},{:.3}", 804_931_200 + 60 * t, 60.0 + 30.0 * (t as f64 / period * std::f64::consts::TAU).sin() + ((t * 7919) % 7) as f64)).collect();
    let csv = dir.join(format!("{name}.csv"));
    std::fs::write(&csv, format!("unix_time,requests\n{}\n", rows.join("\n"))).unwrap();
    let policy = config::load(&policy(dir, name, edit)).unwrap();
    let sim = Arc::new(SimCluster::new(SimConfig { trace: Trace::from_file(&csv, "requests").unwrap(), ..SimConfig::default() }));
    sim.add_deployment(&policy.target, 2);
    sim.advance(Duration::from_secs(hours * 3600));
    let plugins = Arc::new(Plugins::new(Limits::default()).unwrap());
    let runtime = PolicyRuntime::new(policy, &plugins, None, false).unwrap();
    let mut engine = Engine::new(plugins, Seams::all(sim.clone()), vec![runtime], false).unwrap();
    engine.set_echo(false);
    let filled = engine.warm_start(sim.now()).await;
    (engine, sim, filled)
}

/// A model with seasonal context reads a day back: the engine keeps that much of the metric it
/// forecasts and a warm start fetches it, with the gate's rehearsal after it.
#[tokio::test(flavor = "multi_thread")]
async fn a_warm_start_fetches_the_day_a_seasonal_model_reads() {
    let dir = tempfile::tempdir().unwrap();
    // Two days of minutes: a daily wave, 40 hours in.
    let (mut engine, sim, filled) = warm_started(dir.path(), "seasonal", 2880, 1440.0, 40, |t| t.replace("  model: transformer\n", "  model: transformer-seasonal\n")).await;
    // The day back at minutes (1,440 points) plus its 75-point segment, less the model's
    // 15-point horizon that the segment reaches beyond the lag: 1,500 points kept.
    assert_eq!(filled[0].1["cpu"], 1440 + 75 - 15, "{filled:?}");
    engine.tick(sim.now()).await;
    let runtime = &engine.policies()[0];
    assert_eq!(runtime.history("cpu").len(), 1500, "the history keeps what the model reads");
    let gate = runtime.gate("cpu").unwrap();
    assert_eq!(gate.points(), 240 + 1, "the rehearsal after the fetched day and the first tick's point");
    assert!(gate.skill("model:transformer-seasonal").is_some(), "the model is judged at the first tick");
}

/// A warm start fetches the two seasons the gate's Holt-Winters needs (not only the model's
/// window) and rehearses every contender on the newest of them, so the first tick after a
/// (re)start is served by a judged forecaster instead of shadowing the model for an hour.
#[tokio::test(flavor = "multi_thread")]
async fn a_warm_start_judges_the_contenders_on_the_fetched_history() {
    let dir = tempfile::tempdir().unwrap();
    // Ten hours of minutes: a two-hour wave, 9 hours in.
    let (mut engine, sim, filled) = warm_started(dir.path(), "warm", 600, 120.0, 9, |t| t.replace("  fallback: holt-damped\n", "  fallback: holt-damped\n  season: 2h\n")).await;
    assert_eq!(filled[0].1["cpu"], 60, "the model's window is full: {filled:?}");
    engine.tick(sim.now()).await;
    let runtime = &engine.policies()[0];
    assert_eq!(runtime.history("cpu").len(), 60, "the history keeps the window");
    let gate = runtime.gate("cpu").unwrap();
    // 481 points fetched: two 120-point seasons and one for Holt-Winters before the
    // rehearsal, 240 rehearsed; then the first tick's point.
    assert_eq!(gate.points(), 240 + 1);
    for contender in ["model:transformer", "holt-damped", "last-value", "seasonal-naive", "holt-winters"] {
        assert!(gate.skill(contender).is_some(), "{contender} is judged at the first tick");
    }
    assert_ne!(gate.chosen(), "holt-damped", "the first choice was replaced on the rehearsal's evidence");
}

/// At nginx.yaml's 15 s ticks in the surge run, the reactive floor adds a pod between the minutes: a scale lands at a
/// tick that is not on a forecast step. The rule acts on last value's median with the skill
/// gate off: that forecast lags the ramp by construction (it stands for the minute while the
/// usage climbs), so the floor has something to add; a forecast that keeps ahead (the model's,
/// or any upper bound) leaves it nothing.
#[tokio::test(flavor = "multi_thread")]
async fn a_scale_can_land_between_the_forecast_steps() {
    let dir = tempfile::tempdir().unwrap();
    let lagging = |t: String| {
        let lines: Vec<&str> = t
            .lines()
            .map(|l| match l {
                l if l.starts_with("  model: ") => "  baseline: last-value\n  gate: false",
                l if l.starts_with("      act-on: upper") => "      act-on: median",
                l => l,
            })
            .collect();
        lines.join("\n") + "\n"
    };
    run(options(vec![policy(dir.path(), "between", lagging)], "3h", false, Some("surge.csv"))).await.unwrap();
    let all = common::records(&dir.path().join("between-audit.jsonl"));
    let at = |r: &Value| humantime::parse_rfc3339(r["time"].as_str().unwrap()).unwrap().duration_since(UNIX_EPOCH).unwrap().as_secs();
    let between: Vec<&Value> = executed_scales(&all).into_iter().filter(|r| at(r) % 60 != 0).collect();
    assert!(!between.is_empty(), "some scale lands between the minutes");
    assert!(between.iter().all(|r| r["proposal"]["reason"].as_str().unwrap().contains("interval 15s")), "{between:#?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_guard_holds_replicas_at_the_policy_maximum() {
    let dir = tempfile::tempdir().unwrap();
    let file = policy(dir.path(), "capped", |t| t.replace("max_replicas: 10", "max_replicas: 3"));
    let report = run(options(vec![file], "8h", false, None)).await.unwrap();
    let stats = &report.simulated[0].1;
    assert_eq!(stats.peak_replicas, 3);
    assert!(stats.replica_changes.iter().all(|(_, r)| *r <= 3));
    let all = common::records(&dir.path().join("capped-audit.jsonl"));
    assert!(all.iter().any(|r| r["verdict"] == "rejected" && r["reason"] == "replicas held at guard.max_replicas (3)"), "the guard's refusals are recorded");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failing_policy_does_not_stop_the_others() {
    let dir = tempfile::tempdir().unwrap();
    let good = policy(dir.path(), "good", |t| t);
    // The simulator serves no `disk_io`: this policy's only risk fails to collect every tick.
    let broken = policy(dir.path(), "broken", |t| {
        t.replace("name: cpu\n    metric: cpu", "name: cpu\n    metric: disk_io")
            .replace("  - name: cpu\n    query:", "  - name: disk_io\n    query: sum(rate(node_disk_read_bytes_total[5m]))\n    unit: bytes\n  - name: cpu\n    query:")
            .replace("name: nginx\n  selector", "name: shop\n  selector")
    });
    let report = run(options(vec![broken, good], "6h", false, None)).await.unwrap();
    let broken_records = common::records(&dir.path().join("broken-audit.jsonl"));
    assert!(broken_records.iter().any(|r| r["error_stage"] == "collect" && r["reason"] == "no value yet for metric `disk_io`"));
    assert!(!executed_scales(&common::records(&dir.path().join("good-audit.jsonl"))).is_empty(), "the good policy still scales");
    assert!(report.totals.errors > 0 && report.totals.executed > 0);
}

/// Cooldown and rate state live in a file beside the audit log: a host restarted right after
/// a scale-up must not scale again within the cooldown.
#[tokio::test(flavor = "multi_thread")]
async fn guard_state_survives_a_restart_of_the_host() {
    let dir = tempfile::tempdir().unwrap();
    let file = policy(dir.path(), "restarted", |t| {
        let edited = t.replace("  cooldown: 15s", "  cooldown: 1h");
        assert_ne!(edited, t, "nginx.yaml's guard has `cooldown: 15s`");
        edited
    });
    let trace = Trace::from_file(&PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/surge.csv"), "requests").unwrap();
    let sim = Arc::new(SimCluster::new(SimConfig { trace, ..SimConfig::default() }));
    let plugins = Arc::new(Plugins::new(Limits::default()).unwrap());
    let policy = config::load(&file).unwrap();
    sim.add_deployment(&policy.target, 2);
    let engine = |resume: bool| {
        let runtime = PolicyRuntime::new(policy.clone(), &plugins, None, resume).unwrap();
        let mut engine = Engine::new(plugins.clone(), Seams::all(sim.clone()), vec![runtime], false).unwrap();
        engine.set_echo(false);
        engine
    };
    let mut first = engine(true);
    let mut minutes = 0;
    while first.tick(sim.now()).await.executed == 0 {
        sim.advance(Duration::from_secs(60));
        minutes += 1;
        assert!(minutes < 180, "the surge never led to a scale-up");
    }
    drop(first);
    assert!(dir.path().join("restarted-audit.state.json").is_file());
    sim.advance(Duration::from_secs(60));

    // The restarted host starts with an empty history (no warm start yet), so give it ticks
    // until the surge shows again: every scale it proposes must meet the saved cooldown.
    let mut restarted = engine(true);
    let mut rejected = 0;
    for _ in 0..20 {
        let counts = restarted.tick(sim.now()).await;
        assert_eq!(counts.executed, 0, "the restarted host must keep the 1h cooldown");
        rejected += counts.rejected;
        sim.advance(Duration::from_secs(60));
    }
    assert!(rejected > 0, "the restarted host proposed nothing to reject");
    let cooldowns = common::records(&dir.path().join("restarted-audit.jsonl")).into_iter().filter(|r| r["verdict"] == "rejected").count();
    assert_eq!(cooldowns, rejected);
    let last = common::records(&dir.path().join("restarted-audit.jsonl")).into_iter().rfind(|r| r["verdict"] == "rejected").unwrap();
    assert!(last["reason"].as_str().unwrap().starts_with("cooldown: last scale-up was"), "{last}");
}

/// `--log-format json`: every line the host logs on stderr is one JSON object with its level
/// and message (for a log pipeline); `text`, the default, has no colour codes when stderr is
/// not a terminal (as here, and in a pod).
#[test]
fn log_lines_are_json_objects_or_plain_text() {
    let dir = tempfile::tempdir().unwrap();
    let run = |format: &str| {
        let out = Command::new(common::host_binary())
            .current_dir(common::root())
            .env("RUST_LOG", "info")
            .args(["run", "--policy", "policies/nginx.yaml", "--simulate", "--speed", "3600", "--for", "10m", "--quiet", "--log-format", format, "--audit-log"])
            .arg(dir.path().join(format!("{format}.jsonl")))
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stderr).unwrap()
    };
    let json = run("json");
    let lines: Vec<serde_json::Value> = json.lines().filter(|l| !l.trim().is_empty()).map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}"))).collect();
    assert!(!lines.is_empty(), "RUST_LOG=info logs the warm start");
    assert!(lines.iter().all(|l| l["level"].is_string() && l["fields"]["message"].is_string()), "{lines:?}");
    assert!(lines.iter().any(|l| l["level"] == "INFO" && l["fields"]["message"].as_str().unwrap().starts_with("warm start")), "{lines:?}");
    let text = run("text");
    assert!(text.contains("warm start"), "{text}");
    assert!(!text.contains('\u{1b}'), "no colour codes off a terminal: {text:?}");
}
