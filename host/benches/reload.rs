//! Live reload: the time from a plugin file's write to its new version serving, and the tick's
//! latency while a reload compiles.
//!
//! - `reload_plugin`: write a new plugin version, then read + SHA-256 + compile + check against
//!   the grant and the world + check the rule's settings + publish (`Reloader::reload`, what
//!   runs after the debounce);
//! - `reload_end_to_end`: write the file and wait until the new version is published, through
//!   the real watcher (inotify) and the default 200 ms debounce;
//! - `tick`: one tick's decisions for 100 workloads, idle and while another thread compiles a
//!   plugin without pause (a reload that never ends).
//!
//! Run with `make bench`.

use augur::config;
use augur::domain::{Pod, Target, Workload};
use augur::engine::{PolicyRuntime, decide_blocking};
use augur::metrics::Observation;
use augur::plugins::{Limits, Plugins, World};
use augur::reload::{ReloadOptions, Reloader};
use divan::Bencher;
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime};

#[path = "../tests/all/common/mod.rs"]
mod common;

use common::plugin;

fn main() {
    divan::main();
}

/// A policy whose remediation plugin is `act.wasm` in `dir` (a copy of the scale plugin).
fn policy(dir: &Path, index: usize) -> config::Policy {
    let text = format!(
        r#"
name: web-{index}
target: {{ kind: Deployment, namespace: bench, name: web-{index} }}
metrics: [{{ name: cpu, query: cpu, unit: cores }}]
forecast: {{ baseline: holt-damped, window: 20, horizon: 5, step: 60s }}
risks: [{{ name: cpu, metric: cpu, plugin: {risk}, settings: {{ capacity-per-pod: 0.5 }} }}]
remediations: [{{ name: scale-up, risk: cpu, trigger: high, plugin: {act}, settings: {{ step: 3 }}, capabilities: {{ actions: [scale] }} }}]
guard: {{ dry_run: true, min_replicas: 1, max_replicas: 50, cooldown: 0s, min_history: 1, max_actions_per_hour: 3600, allowed_actions: [scale] }}
audit: {{ path: audit-{index}.jsonl }}
"#,
        risk = plugin("risk-cpu").display(),
        act = dir.join("act.wasm").display(),
    );
    config::parse(&text, &dir.join(format!("web-{index}.yaml")), &augur::config::Catalog::shipped()).unwrap()
}

struct Setup {
    dir: tempfile::TempDir,
    plugins: Arc<Plugins>,
    policy: config::Policy,
    /// Two versions of a remediation plugin, written in turn so that each write is new.
    versions: [Vec<u8>; 2],
}

fn setup() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(plugin("scale"), dir.path().join("act.wasm")).unwrap();
    let plugins = Arc::new(Plugins::new(Limits::default()).unwrap());
    let policy = policy(dir.path(), 0);
    PolicyRuntime::new(policy.clone(), &plugins, None, false).unwrap();
    let mut other = std::fs::read(plugin("scale")).unwrap();
    // A custom section appended: the same plugin, other bytes, so another digest.
    other.extend_from_slice(&[0, 6, 5, b'b', b'e', b'n', b'c', b'h']);
    Setup { versions: [std::fs::read(plugin("scale")).unwrap(), other], dir, plugins, policy }
}

#[divan::bench(sample_count = 20)]
fn reload_plugin(bencher: Bencher) {
    let s = setup();
    let (updates, _received) = tokio::sync::mpsc::unbounded_channel();
    let mut reloader = Reloader::new(s.plugins.clone(), &[s.dir.path().join("web-0.yaml")], std::slice::from_ref(&s.policy), ReloadOptions::default(), updates);
    let file = s.dir.path().join("act.wasm");
    let changed = BTreeSet::from([file.clone()]);
    let mut turn = 0;
    bencher.bench_local(|| {
        turn += 1;
        std::fs::write(&file, &s.versions[turn % 2]).unwrap();
        let log = reloader.reload(&changed, false);
        assert!(log[0].contains("reloaded"), "{log:?}");
    });
}

#[divan::bench(sample_count = 10)]
fn reload_end_to_end(bencher: Bencher) {
    let s = setup();
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let (updates, _received) = tokio::sync::mpsc::unbounded_channel();
    let reloader = Reloader::new(s.plugins.clone(), &[s.dir.path().join("web-0.yaml")], std::slice::from_ref(&s.policy), ReloadOptions::default(), updates);
    let _task = runtime.block_on(async { reloader.spawn().unwrap() });
    let file = s.dir.path().join("act.wasm");
    let digests = [augur::plugins::digest(&s.versions[0]), augur::plugins::digest(&s.versions[1])];
    let mut turn = 0;
    bencher.bench_local(|| {
        turn += 1;
        std::fs::write(&file, &s.versions[turn % 2]).unwrap();
        while s.plugins.published(&file, World::Remediation).is_none_or(|l| l.digest != digests[turn % 2]) {
            std::thread::sleep(Duration::from_millis(1));
        }
    });
}

fn workload(index: usize) -> Workload {
    let target = Target { kind: "Deployment".into(), namespace: "bench".into(), name: format!("web-{index}") };
    let pods = (0..3).map(|p| Pod { name: format!("web-{index}-{p}"), node: "n1".into(), phase: "Running".into(), ready: true, cpu_cores: Some(0.5), memory_bytes: None, age_seconds: 600 , startup_seconds: None}).collect();
    Workload { target, replicas: 3, ready_replicas: 3, pods, nodes: vec![], paused: None, scaled_by: None }
}

/// One tick of 100 workloads; `compiling`: while another thread compiles a plugin non-stop.
#[divan::bench(args = ["idle", "compiling"], sample_count = 20)]
fn tick(bencher: Bencher, load: &str) {
    const N: usize = 100;
    let s = setup();
    let mut runtimes: Vec<PolicyRuntime> = (0..N).map(|i| PolicyRuntime::new(policy(s.dir.path(), i), &s.plugins, None, false).unwrap()).collect();
    let workloads: Vec<Workload> = (0..N).map(workload).collect();
    let due: Vec<usize> = (0..N).collect();
    let now = SystemTime::UNIX_EPOCH + Duration::from_secs(2_000_000);
    for (k, value) in (0..20).map(|k| (k, 1.0 + 0.1 * k as f64)) {
        let inputs: Vec<_> = workloads.iter().map(|w| Ok((Observation { values: BTreeMap::from([("cpu".to_string(), value)]), ..Default::default() }, w.clone()))).collect();
        decide_blocking(&s.plugins, &mut runtimes, &due, &inputs, now + Duration::from_secs(60 * k), true);
    }
    let inputs: Vec<_> = workloads.iter().map(|w| Ok((Observation { values: BTreeMap::from([("cpu".to_string(), 3.0)]), ..Default::default() }, w.clone()))).collect();
    let stop = Arc::new(AtomicBool::new(false));
    let compiler = (load == "compiling").then(|| {
        let (plugins, stop, bytes, file) = (s.plugins.clone(), stop.clone(), s.versions[1].clone(), s.dir.path().join("other.wasm"));
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                plugins.compile_bytes(&file, &bytes, World::Remediation).unwrap();
            }
        })
    });
    bencher.bench_local(|| decide_blocking(&s.plugins, &mut runtimes, &due, &inputs, now + Duration::from_secs(3600), true));
    stop.store(true, Ordering::Relaxed);
    if let Some(compiler) = compiler {
        compiler.join().unwrap();
    }
}
