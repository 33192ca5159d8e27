//! Live reload with real files, real `.wasm` plugins and the real `host` binary: a plugin or
//! policy edited while `host run --simulate` runs serves from the next tick; a broken edit is
//! rejected (audit, /metrics) while the previous version keeps working; SIGHUP forces a
//! reload; and a tick that runs while a reload compiles finishes on the version it started with.

use crate::common;

use augur::domain::{Action, Level, Risk, Target, Workload};
use augur::plugins::{Limits, Plugins, RuleSettings, World};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn workload() -> Workload {
    let target = Target { kind: "Deployment".into(), namespace: "default".into(), name: "web".into() };
    Workload { target, replicas: 2, ready_replicas: 2, pods: vec![], nodes: vec![], paused: None, scaled_by: None }
}

fn risk() -> Risk {
    Risk { level: Level::High, score: 0.9, seconds_to_breach: Some(60), required_replicas: Some(9), reason: "test".into() }
}

/// A session opened before a publish keeps the version it started with, for every call, even
/// while the new version compiles on another thread; the next session gets the new one.
#[test]
fn a_tick_during_a_reload_runs_on_the_version_it_started_with() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("act.wasm");
    std::fs::copy(common::fixture_plugin("hostile"), &file).unwrap();
    let plugins = Arc::new(Plugins::new(Limits::default()).unwrap());
    let settings = RuleSettings::new(BTreeMap::new());
    let mut tick = plugins.session();
    let first = tick.plan(&file, &settings, &risk(), Level::High, &workload()).unwrap();
    assert_eq!(first[0].action, Action::Scale { replicas: 7 }, "the hostile fixture's polite mode");

    // The reload: the scale plugin's bytes under the same path, compiled on another thread.
    let new_bytes = std::fs::read(common::plugin("scale")).unwrap();
    std::fs::write(&file, &new_bytes).unwrap();
    let reload = {
        let (plugins, file) = (plugins.clone(), file.clone());
        std::thread::spawn(move || {
            let loaded = Arc::new(plugins.compile_bytes(&file, &new_bytes, World::Remediation).unwrap());
            plugins.publish([loaded]);
        })
    };
    let mut calls_during = 0;
    while !reload.is_finished() {
        let during = tick.plan(&file, &settings, &risk(), Level::High, &workload()).unwrap();
        assert_eq!(during[0].reason, "a polite proposal", "a call of the open tick saw a half-published version");
        calls_during += 1;
    }
    reload.join().unwrap();
    let after_publish = tick.plan(&file, &settings, &risk(), Level::High, &workload()).unwrap();
    assert_eq!(after_publish[0].reason, "a polite proposal", "the open tick keeps its version to its end");
    assert!(calls_during > 0, "the reload finished before any call could overlap it");

    let next = plugins.session().plan(&file, &settings, &risk(), Level::High, &workload()).unwrap();
    assert_eq!(next[0].action, Action::Scale { replicas: 5 }, "the next tick runs the new version: {}", next[0].reason);
    assert!(next[0].reason.starts_with("scale 2 -> 5 (step of 3, 9 needed)"), "{}", next[0].reason);
}

fn policy_text(dir: &Path, step: u32) -> String {
    format!(
        r#"name: web
target: {{ kind: Deployment, namespace: default, name: web }}
interval: 60s
metrics: [{{ name: cpu, query: cpu, unit: cores }}]
forecast: {{ baseline: last-value, horizon: 5, step: 60s }}
risks:
  - {{ name: cpu, metric: cpu, plugin: {risk}, settings: {{ capacity-per-pod: 0.01 }} }}
remediations:
  - {{ name: act, risk: cpu, trigger: high, plugin: {dir}/act.wasm, settings: {{ step: {step} }}, capabilities: {{ actions: [scale] }} }}
guard: {{ dry_run: true, min_replicas: 1, max_replicas: 50, max_step: 50, cooldown: 0s, min_history: 1, max_actions_per_hour: 3600, allowed_actions: [scale] }}
audit: {{ path: audit.jsonl }}
"#,
        risk = common::plugin("risk-cpu").display(),
        dir = dir.display(),
    )
}

struct Running {
    child: Child,
    audit: PathBuf,
    metrics: String,
}

impl Running {
    fn start(dir: &Path) -> Self {
        Self::start_on(dir, &dir.join("web.yaml"))
    }

    /// `host run --policy policy` (a file or a folder), its audit in `dir`.
    fn start_on(dir: &Path, policy: &Path) -> Self {
        let port = common::k8s::free_port();
        let child = Command::new(common::host_binary())
            // Every series, the forecasts' steps among them (what the reload tests follow).
            .args(["run", "--simulate", "--speed", "600", "--for", "48h", "--quiet", "--metrics-detail", "full", "--metrics-addr"])
            .arg(format!("127.0.0.1:{port}"))
            .arg("--policy")
            .arg(policy)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        Self { child, audit: dir.join("audit.jsonl"), metrics: format!("http://127.0.0.1:{port}/metrics") }
    }

    fn records(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(&self.audit).unwrap_or_default().lines().filter_map(|l| serde_json::from_str(l).ok()).collect()
    }

    /// Waits until the audit has a record, after the first `from`, that satisfies `want`; returns its index.
    fn wait_for(&self, from: usize, what: &str, want: impl Fn(&serde_json::Value) -> bool) -> usize {
        let started = Instant::now();
        loop {
            if let Some(i) = self.records().iter().skip(from).position(&want) {
                return from + i;
            }
            assert!(started.elapsed() < Duration::from_secs(60), "no record of {what} within 60 s; the audit ends with {:#?}", self.records().iter().rev().take(3).collect::<Vec<_>>());
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn metrics(&self) -> String {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        runtime.block_on(async { reqwest::get(&self.metrics).await.unwrap().text().await.unwrap() })
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn proposal_reason(r: &serde_json::Value) -> &str {
    r["proposal"]["reason"].as_str().unwrap_or_default()
}

fn reload_of(r: &serde_json::Value, kind: &str, outcome: &str) -> bool {
    r["reload"]["kind"] == kind && r["reload"]["outcome"] == outcome
}

#[test]
fn plugins_and_policies_reload_live_and_a_broken_edit_keeps_the_old_version() {
    augur::tls::install_provider();
    let dir = tempfile::tempdir().unwrap();
    let plugin = dir.path().join("act.wasm");
    std::fs::copy(common::fixture_plugin("hostile"), &plugin).unwrap();
    std::fs::write(dir.path().join("web.yaml"), policy_text(dir.path(), 3)).unwrap();
    let run = Running::start(dir.path());
    let mut at = run.wait_for(0, "the first plugin's proposal", |r| proposal_reason(r) == "a polite proposal");

    // 1. A new plugin build: the scale plugin over the file. The next ticks use it.
    std::fs::copy(common::plugin("scale"), &plugin).unwrap();
    at = run.wait_for(at, "the plugin reload", |r| reload_of(r, "plugin", "reloaded"));
    at = run.wait_for(at, "a proposal of the new plugin", |r| proposal_reason(r).contains("(step of 3,"));

    // 2. A broken plugin: rejected, and the scale plugin keeps proposing.
    std::fs::write(&plugin, b"\0asm this is not a component").unwrap();
    at = run.wait_for(at, "the rejection of a broken plugin", |r| reload_of(r, "plugin", "rejected") && r["error_stage"] == "reload");
    let rejected = &run.records()[at];
    assert!(rejected["reason"].as_str().unwrap().contains("rejected, the previous version keeps running"), "{rejected}");
    at = run.wait_for(at + 1, "a proposal after the rejection", |r| proposal_reason(r).contains("(step of 3,"));

    // 3. A broken policy edit: rejected with the field and the fix; the old rule still acts.
    std::fs::write(dir.path().join("web.yaml"), policy_text(dir.path(), 3).replace("max_replicas: 50", "max_replicas: lots")).unwrap();
    at = run.wait_for(at, "the rejection of a broken policy", |r| reload_of(r, "policy", "rejected"));
    let reason = run.records()[at]["reason"].as_str().unwrap().to_string();
    assert!(reason.contains("guard.max_replicas: `lots` is not valid here; fix: write a whole number"), "{reason}");
    at = run.wait_for(at + 1, "a proposal under the old policy", |r| proposal_reason(r).contains("(step of 3,"));
    let metrics = run.metrics();
    assert!(metrics.contains(r#"augur_reload_ok{kind="policy",name="web"} 0"#), "{metrics}");
    let rejected: u64 = metrics.lines().find_map(|l| l.strip_prefix(r#"augur_reloads_total{kind="plugin",result="rejected"} "#)).and_then(|n| n.parse().ok()).unwrap_or(0);
    // At least one: a file written in two steps (truncate, write) may be seen half-written too.
    assert!(rejected >= 1, "{metrics}");

    // 3b. An edit to a plugin that loops in check-settings: rejected at that plugin's deadline,
    // and the reloader goes on (the good edit below reloads).
    std::fs::copy(common::fixture_plugin("hostile"), dir.path().join("slow.wasm")).unwrap();
    std::fs::write(dir.path().join("web.yaml"), policy_text(dir.path(), 3).replace("act.wasm, settings: { step: 3 }", "slow.wasm, settings: { step: 3, check: loop }")).unwrap();
    at = run.wait_for(at, "the rejection of a policy whose plugin loops in check-settings", |r| reload_of(r, "policy", "rejected") && r["reason"].as_str().unwrap().contains("ran past its 250ms deadline"));

    // 4. A good policy edit (a threshold: the step): the next ticks use it.
    std::fs::write(dir.path().join("web.yaml"), policy_text(dir.path(), 1)).unwrap();
    at = run.wait_for(at, "the policy reload", |r| reload_of(r, "policy", "reloaded"));
    at = run.wait_for(at, "a proposal under the new policy", |r| proposal_reason(r).contains("(step of 1,"));
    assert!(run.metrics().contains(r#"augur_reload_ok{kind="policy",name="web"} 1"#));

    // 5. SIGHUP forces a reload of every file, unchanged or not.
    let before = run.records().iter().filter(|r| reload_of(r, "policy", "reloaded")).count();
    let status = Command::new("kill").args(["-HUP", &run.child.id().to_string()]).status().unwrap();
    assert!(status.success());
    run.wait_for(at, "the forced reload", |r| reload_of(r, "policy", "reloaded") && !r["reload"]["sha256"].is_null());
    let started = Instant::now();
    while run.records().iter().filter(|r| reload_of(r, "policy", "reloaded")).count() == before {
        assert!(started.elapsed() < Duration::from_secs(30), "SIGHUP did not reload the policy");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A ConfigMap mounted as a volume: every file is a link through `..data`, which the kubelet
/// swaps to a new folder to publish a new version. The swap names no policy file, yet the
/// policy must reload.
#[test]
fn a_configmap_update_through_the_data_link_reloads_the_policy() {
    use augur::engine::Update;
    use augur::reload::{ReloadOptions, Reloader};
    use std::os::unix::fs::symlink;
    let dir = tempfile::tempdir().unwrap();
    let mount = dir.path().join("policies");
    let plugin_dir = dir.path().join("plugins");
    std::fs::create_dir_all(mount.join("..v1")).unwrap();
    std::fs::create_dir_all(&plugin_dir).unwrap();
    std::fs::copy(common::plugin("scale"), plugin_dir.join("act.wasm")).unwrap();
    std::fs::write(mount.join("..v1/web.yaml"), policy_text(&plugin_dir, 3)).unwrap();
    symlink("..v1", mount.join("..data")).unwrap();
    symlink("..data/web.yaml", mount.join("web.yaml")).unwrap();

    let plugins = Arc::new(Plugins::new(Limits::default()).unwrap());
    let policy = augur::config::load(&mount.join("web.yaml")).unwrap();
    let (updates, mut received) = tokio::sync::mpsc::unbounded_channel();
    let mut reloader = Reloader::new(plugins, &[mount.clone()], &[policy], ReloadOptions::default(), updates);

    // The kubelet's swap: a new folder, a new link renamed over `..data`.
    std::fs::create_dir_all(mount.join("..v2")).unwrap();
    std::fs::write(mount.join("..v2/web.yaml"), policy_text(&plugin_dir, 1)).unwrap();
    symlink("..v2", mount.join("..data_tmp")).unwrap();
    std::fs::rename(mount.join("..data_tmp"), mount.join("..data")).unwrap();
    assert!(reloader.is_relevant(&mount.join("..data")));
    let log = reloader.reload(&std::collections::BTreeSet::from([mount.join("..data")]), false);
    assert_eq!(log.len(), 1, "{log:?}");
    match received.try_recv().unwrap() {
        Update::Policy { file, runtime, .. } => {
            assert_eq!(file, mount.join("web.yaml"));
            assert_eq!(runtime.policy.remediations[0].settings["step"], "1");
        }
        other => panic!("expected the policy's new version, got {other:?}"),
    }
}

/// `/metrics` carries only what runs: a reload drops the series its old version exported and
/// the new one does not (a renamed risk rule, forecast steps past a shorter horizon), and a
/// deleted policy's series all go, so that no dashboard reads a stopped policy's last values
/// as live ones.
#[test]
fn a_reload_or_a_deletion_drops_the_series_that_no_longer_run() {
    augur::tls::install_provider();
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(common::plugin("scale"), dir.path().join("act.wasm")).unwrap();
    let policies = dir.path().join("policies");
    std::fs::create_dir(&policies).unwrap();
    std::fs::write(policies.join("web.yaml"), policy_text(dir.path(), 3).replace("path: audit.jsonl", "path: ../audit.jsonl")).unwrap();
    // A second policy keeps the host running once web.yaml is deleted.
    let shop = policy_text(dir.path(), 3).replace("name: web\n", "name: shop\n").replace("name: web }", "name: shop }").replace("path: audit.jsonl", "path: ../shop-audit.jsonl");
    std::fs::write(policies.join("shop.yaml"), shop).unwrap();
    let run = Running::start_on(dir.path(), &policies);
    let mut at = run.wait_for(0, "a first proposal", |r| proposal_reason(r).contains("(step of 3,"));
    let before = run.metrics();
    for series in [r#"augur_risk_score{policy="web",rule="cpu"}"#, r#"augur_forecast_value{policy="web",metric="cpu",step="5",band="p50"}"#, r#"augur_observed_value{policy="web",metric="cpu"}"#] {
        assert!(before.contains(series), "{series} before the reload:\n{before}");
    }

    let edited = policy_text(dir.path(), 1).replace("- { name: cpu, metric: cpu,", "- { name: heat, metric: cpu,").replace("risk: cpu,", "risk: heat,").replace("horizon: 5", "horizon: 3");
    std::fs::write(policies.join("web.yaml"), edited.replace("path: audit.jsonl", "path: ../audit.jsonl")).unwrap();
    at = run.wait_for(at, "the policy reload", |r| reload_of(r, "policy", "reloaded"));
    run.wait_for(at, "a proposal under the new version", |r| proposal_reason(r).contains("(step of 1,"));
    let after = run.metrics();
    assert!(after.contains(r#"augur_risk_score{policy="web",rule="heat"}"#), "{after}");
    assert!(after.contains(r#"augur_forecast_value{policy="web",metric="cpu",step="3",band="p50"}"#), "{after}");
    assert!(!after.contains(r#"policy="web",rule="cpu""#), "the renamed rule's series are gone:\n{after}");
    assert!(!after.contains(r#"policy="web",metric="cpu",step="4""#) && !after.contains(r#"policy="web",metric="cpu",step="5""#), "steps past the new horizon are gone:\n{after}");
    assert!(after.contains(r#"augur_forecast_value{policy="shop",metric="cpu",step="5",band="p50"}"#), "another policy's are not:\n{after}");
    assert!(after.contains(r#"augur_observed_value{policy="web",metric="cpu"}"#), "what both versions carry stays:\n{after}");

    std::fs::remove_file(policies.join("web.yaml")).unwrap();
    let started = Instant::now();
    loop {
        let now = run.metrics();
        if !now.contains(r#"policy="web""#) && !now.contains(r#"kind="policy",name="web""#) {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(30), "a deleted policy's series stay:\n{now}");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(run.metrics().contains(r#"augur_observed_value{policy="shop",metric="cpu"}"#), "the other policy's series stay");
}
