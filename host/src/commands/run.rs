//! `host run`: the control loop, on a real cluster or on the built-in simulated one. It
//! loads the policies, wires the engine to its seams (Prometheus or metrics-server, the
//! Kubernetes workload source and executor behind leader election, or the simulator), starts
//! the live reload and /metrics, and drives the clock.
//!
//! It never decides anything itself: the engine and its guard do.

use super::{invalid, load_policies};
use crate::cluster::policies::{LastAction, Observed};
use crate::cluster::{self, ClusterState, Fence, KubeExecutor, KubeWorkloads, LeaderElector, Leadership, MetricsServerSource, Placement, PolicyWatch};
use crate::config::{Catalog, MetricSourceSpec, Policy};
use crate::engine::{Engine, PolicyRuntime, Reports, Seams, TickCounts};
use crate::metrics::{MetricSource, Observation, PrometheusSource, SourceError};
use crate::plugins::{Limits, Plugins};
use crate::reload::{DocumentChange, ReloadOptions, Reloader};
use crate::sim::{SimCluster, SimConfig, SimStats, Trace};
use anyhow::Context;
use async_trait::async_trait;
use crate::telemetry::Telemetry;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

/// Options of `host run`; `Default` is a plain simulated-cluster-ready set (speed 1, readable
/// lines on), to be filled with the fields a caller needs.
#[derive(Debug, Clone)]
pub struct RunOptions {
    pub policies: Vec<PathBuf>,
    pub simulate: bool,
    /// Simulated seconds per real second.
    pub speed: f64,
    /// Stop after this much (simulated) time.
    pub run_for: Option<Duration>,
    /// Overrides every policy's audit log.
    pub audit_log: Option<PathBuf>,
    /// Forces dry-run whatever the policies say.
    pub dry_run: bool,
    /// A CSV trace for the simulator instead of the built-in one, and its column.
    pub trace: Option<(PathBuf, String)>,
    /// Print readable lines to stdout.
    pub echo: bool,
    /// On a real cluster: compete for a Lease so that one replica acts.
    pub leader_election: Option<LeaseOptions>,
    /// This replica's name in the Lease and in Events (default: `$POD_NAME`, else the host name).
    pub identity: Option<String>,
    /// The kubeconfig to use instead of the default chain.
    pub kubeconfig: Option<PathBuf>,
    /// Serve /metrics, /healthz and /readyz here.
    pub metrics_addr: Option<SocketAddr>,
    /// How many series /metrics carries per policy.
    pub metrics_detail: crate::telemetry::Detail,
    /// With `simulate`: serve the simulated cluster's metrics (cAdvisor and kube-state-metrics
    /// style) here, for a real Prometheus to scrape.
    pub expose_sim: Option<SocketAddr>,
    /// With `simulate`: read the metrics through the policies' Prometheus instead of from the
    /// simulator directly (the simulator -> Prometheus -> Augur -> simulator loop).
    pub sim_via_prometheus: bool,
    /// Reload the policies and their plugins live when these `--policy` arguments (files or
    /// folders) or the plugins change, and on SIGHUP; `None`: never.
    pub watch: Option<Vec<PathBuf>>,
    /// On a cluster: also run the AugurPolicy resources, hot-swapped as they change.
    pub cluster_policies: Option<ClusterPolicies>,
    /// Where plugins and models named in a policy are looked up.
    pub catalog: Catalog,
}

/// Which AugurPolicies `host run` runs, and where their paths and audit logs go.
#[derive(Debug, Clone)]
pub struct ClusterPolicies {
    /// One namespace's, or (None) every namespace's.
    pub namespace: Option<String>,
    pub placement: Placement,
}

impl Default for RunOptions {
    fn default() -> Self {
        Self {
            policies: Vec::new(),
            simulate: false,
            speed: 1.0,
            run_for: None,
            audit_log: None,
            dry_run: false,
            trace: None,
            echo: true,
            leader_election: None,
            identity: None,
            kubeconfig: None,
            metrics_addr: None,
            metrics_detail: Default::default(),
            expose_sim: None,
            sim_via_prometheus: false,
            watch: None,
            cluster_policies: None,
            catalog: Catalog::shipped(),
        }
    }
}

/// Where the leader-election Lease lives, and its timing.
#[derive(Debug, Clone)]
pub struct LeaseOptions {
    pub namespace: String,
    pub name: String,
    /// (lease duration, renew deadline, retry period); `None`: client-go's 15 s, 10 s, 2 s.
    pub timing: Option<(Duration, Duration, Duration)>,
}

impl LeaseOptions {
    /// The Lease `augur` in `namespace`, or else in the pod's own namespace (in a cluster), or
    /// else in `augur`.
    pub fn in_namespace(namespace: Option<String>) -> Self {
        let own = std::fs::read_to_string("/var/run/secrets/kubernetes.io/serviceaccount/namespace").ok().map(|s| s.trim().to_string());
        Self { namespace: namespace.or(own).unwrap_or_else(|| "augur".into()), name: "augur".into(), timing: None }
    }
}

/// What a run did, per policy.
#[derive(Debug, Clone)]
pub struct RunReport {
    pub ticks: usize,
    pub totals: TickCounts,
    /// The simulator's account of each policy's target (empty on a real cluster).
    pub simulated: Vec<(String, SimStats)>,
}

/// `host run`.
pub async fn run(options: RunOptions) -> anyhow::Result<RunReport> {
    if options.cluster_policies.is_some() && options.simulate {
        return Err(invalid("--cluster-policies reads AugurPolicies from a cluster, which --simulate has none of; fix: drop one of them".into()));
    }
    // AugurPolicies alone are enough to start with (there may be none yet).
    let policies = if options.policies.is_empty() && options.cluster_policies.is_some() { Vec::new() } else { load_policies(&options.policies, &options.catalog)? };
    if options.simulate { simulate(policies, &options).await } else { on_cluster(policies, &options).await }
}

/// The control loop on a real cluster: kubeconfig or in-cluster credentials, the policies'
/// metric sources, the Kubernetes workload source and executor, and (unless disabled) leader
/// election, so that only the replica holding the Lease acts. A cluster that cannot be
/// reached is an error before anything starts; there is no fallback to the simulator.
async fn on_cluster(policies: Vec<Policy>, options: &RunOptions) -> anyhow::Result<RunReport> {
    let client = cluster::connect(options.kubeconfig.as_deref()).await?;
    let identity = options.identity.clone().unwrap_or_else(default_identity);
    let plugins = Arc::new(Plugins::new(Limits::default())?);
    let mut runtimes = Vec::new();
    for policy in policies {
        let file = policy.source.clone();
        runtimes.push(PolicyRuntime::new(policy, &plugins, options.audit_log.as_deref(), true).with_context(|| format!("cannot start policy {}", file.display()))?);
    }
    say_compile_cache(&plugins);
    let leadership = options.leader_election.as_ref().map(|lease| {
        let mut elector = LeaderElector::new(client.clone(), &lease.namespace, &lease.name, &identity);
        if let Some((duration, deadline, retry)) = lease.timing {
            elector = elector.with_timing(duration, deadline, retry);
        }
        elector.spawn()
    });
    let metrics = Arc::new(SourceBySpec { prometheus: PrometheusSource::new()?, metrics_server: MetricsServerSource::new(client.clone()) });
    // Every write passes the fence: this replica leads (if it competes) and the run has not ended.
    let deadline = options.run_for.and_then(|d| Instant::now().checked_add(d));
    let fence = leadership.as_ref().map_or_else(Fence::always, Leadership::fence).ending(deadline.map(Into::into));
    let executor = Arc::new(KubeExecutor::new(client.clone(), &identity).fenced(fence.clone()));
    let running: Vec<Policy> = runtimes.iter().map(|r| r.policy.clone()).collect();
    let seams = Seams { metrics, workloads: Arc::new(KubeWorkloads::new(client.clone()).ending(deadline.map(Into::into))), executor };
    let mut engine = Engine::new(plugins.clone(), seams, runtimes, options.dry_run)?;
    engine.set_echo(options.echo);
    // With leader election, the guard's state is kept in the Lease's namespace too, so that
    // the replica taking over keeps the cooldowns and the hourly count.
    if let Some(lease) = &options.leader_election {
        engine.set_state_store(Arc::new(ClusterState::new(client.clone(), &lease.namespace, fence.clone())));
    }
    let documents = watch(&mut engine, plugins, &running, options, true)?;
    if let (Some(documents), Some(wanted)) = (documents, &options.cluster_policies) {
        let reports = engine.reports();
        let events = cluster::Events::new(client.clone(), &identity);
        let watch = PolicyWatch { client: client.clone(), namespace: wanted.namespace.clone(), placement: wanted.placement.clone(), fence: fence.clone(), events };
        watch.check().await.map_err(invalid)?;
        watch.spawn(documents, move || observed(&reports));
        tracing::info!("running the AugurPolicies of {}", wanted.namespace.as_deref().map_or("every namespace".to_string(), |ns| format!("namespace {ns}")));
    }
    let telemetry = serve_telemetry(&mut engine, options).await?;
    tracing::info!("running on the cluster as {identity}");
    let idle = options.cluster_policies.is_some().then_some(IDLE_TICK);
    let report = drive_cluster(&mut engine, leadership.as_ref(), telemetry.as_deref(), deadline, idle).await;
    if let Some(leadership) = leadership {
        leadership.stop().await;
    }
    print_summary(&report);
    Ok(report)
}

/// How often an engine with no policy due looks for new ones (AugurPolicies may come).
const IDLE_TICK: Duration = Duration::from_secs(1);

/// What the engine saw each policy do, as an AugurPolicy's status tells it.
fn observed(reports: &Reports) -> BTreeMap<PathBuf, Observed> {
    reports
        .snapshot()
        .into_iter()
        .map(|(source, r)| {
            let last_action = r.last_action.map(|a| {
                let time = crate::remediation::audit::timestamp(a.time);
                LastAction { summary: format!("{} ({})", a.action, a.verdict.as_str()), time, action: a.action, verdict: a.verdict.as_str().into(), reason: a.reason }
            });
            let risk = r.risk.map(|(rule, level, reason)| (format!("{} ({rule})", level.as_str()), reason));
            (source, Observed { forecasters: r.forecasters, risk, last_action, limited: r.limited.map(|(_, why)| why), scaler: r.scaler })
        })
        .collect()
}

/// The wall clock: tick while leading, then sleep until the next policy is due.
/// `deadline`: the end of `--for` (none: a `--for` past what the clock can hold, or none given).
/// `idle`: with no policy due, look again after this (None: stop).
async fn drive_cluster(engine: &mut Engine, leadership: Option<&Leadership>, telemetry: Option<&Telemetry>, deadline: Option<Instant>, idle: Option<Duration>) -> RunReport {
    let mut report = RunReport { ticks: 0, totals: TickCounts::default(), simulated: Vec::new() };
    let mut leading = leadership.map(Leadership::watch);
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    let until_deadline = async move {
        match deadline {
            Some(d) => tokio::time::sleep_until(d.into()).await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(until_deadline);
    let mut warm = false;
    loop {
        // A standby waits for the Lease: it neither collects nor acts.
        if let Some(rx) = leading.as_mut()
            && !*rx.borrow()
        {
            if let Some(t) = telemetry {
                t.leader.set(0);
                t.set_ready();
            }
            // Its per-policy series would read as live beside the leader's.
            engine.forget_all_series();
            tokio::select! {
                changed = rx.wait_for(|l| *l) => if changed.is_err() { break },
                _ = &mut ctrl_c => break,
                _ = &mut until_deadline => break,
            }
            warm = false;
        }
        // On start and on taking the Lease over: the histories from the source's past.
        if !warm {
            engine.restore_states().await;
            engine.warm_start(SystemTime::now()).await;
            engine.announce_series();
            warm = true;
        }
        if let Some(t) = telemetry {
            t.leader.set(1);
        }
        let counts = engine.tick(SystemTime::now()).await;
        report.ticks += 1;
        add(&mut report.totals, counts);
        let Some(next) = engine.next_due().or_else(|| idle.map(|d| SystemTime::now() + d)) else { break };
        let wait = next.duration_since(SystemTime::now()).unwrap_or_default();
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = &mut ctrl_c => break,
            _ = &mut until_deadline => break,
        }
    }
    report
}

/// Starts the live reload of the policies and plugins when asked (`--no-watch` turns it off),
/// and always for AugurPolicies, whose versions it takes from the sender it returns.
fn watch(engine: &mut Engine, plugins: Arc<Plugins>, running: &[Policy], options: &RunOptions, resume: bool) -> anyhow::Result<Option<tokio::sync::mpsc::UnboundedSender<DocumentChange>>> {
    if options.watch.is_none() && options.cluster_policies.is_none() {
        return Ok(None);
    }
    let args = options.watch.clone().unwrap_or_default();
    let (updates, received) = tokio::sync::mpsc::unbounded_channel();
    let reload_options = ReloadOptions { audit_override: options.audit_log.clone(), resume, debounce: None, catalog: options.catalog.clone() };
    let reloader = Reloader::new(plugins, &args, running, reload_options, updates);
    let folders = reloader.folders();
    let (documents, changes) = options.cluster_policies.is_some().then(tokio::sync::mpsc::unbounded_channel).unzip();
    reloader.spawn_with(changes)?;
    engine.set_updates(received);
    if options.watch.is_some() {
        tracing::info!("watching {} for changes to policies and plugins (SIGHUP reloads all)", folders.iter().map(|f| f.display().to_string()).collect::<Vec<_>>().join(", "));
    }
    Ok(documents)
}

/// Says how the start's plugins were compiled: read back from the compile cache, or compiled.
fn say_compile_cache(plugins: &Plugins) {
    match plugins.cache_use() {
        Some(u) => tracing::info!("plugins: {} read compiled from {}, {} compiled (and kept there)", u.hits, u.directory.display(), u.misses),
        None => tracing::info!("plugins: compiled without a compile cache"),
    }
}

/// Starts the /metrics server when asked, and connects the engine to it.
async fn serve_telemetry(engine: &mut Engine, options: &RunOptions) -> anyhow::Result<Option<Arc<Telemetry>>> {
    let Some(addr) = options.metrics_addr else { return Ok(None) };
    let telemetry = Telemetry::with_detail(options.metrics_detail);
    telemetry.serve(addr).await?;
    engine.set_telemetry(telemetry.clone());
    Ok(Some(telemetry))
}

fn default_identity() -> String {
    std::env::var("POD_NAME")
        .ok()
        .filter(|s| !s.is_empty())
        .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok().map(|s| s.trim().to_string()))
        .unwrap_or_else(|| format!("augur-{}", std::process::id()))
}

/// Routes each policy to the source its `source:` names.
struct SourceBySpec {
    prometheus: PrometheusSource,
    metrics_server: MetricsServerSource,
}

#[async_trait]
impl MetricSource for SourceBySpec {
    async fn collect(&self, policy: &Policy) -> Result<Observation, SourceError> {
        match policy.metric_source {
            MetricSourceSpec::Prometheus { .. } => self.prometheus.collect(policy).await,
            MetricSourceSpec::MetricsServer => self.metrics_server.collect(policy).await,
        }
    }

    /// The Prometheus policies together (one query per shape), the others each on its own.
    async fn collect_all(&self, policies: &[&Policy]) -> Vec<Result<Observation, SourceError>> {
        let (prometheus, others): (Vec<(usize, &Policy)>, Vec<(usize, &Policy)>) = policies.iter().copied().enumerate().partition(|(_, p)| matches!(p.metric_source, MetricSourceSpec::Prometheus { .. }));
        let (to_prometheus, to_metrics_server): (Vec<&Policy>, Vec<&Policy>) = (prometheus.iter().map(|(_, p)| *p).collect(), others.iter().map(|(_, p)| *p).collect());
        let (read, rest) = tokio::join!(self.prometheus.collect_all(&to_prometheus), self.metrics_server.collect_all(&to_metrics_server));
        in_order(prometheus.iter().map(|(i, _)| *i).zip(read).chain(others.iter().map(|(i, _)| *i).zip(rest)))
    }

    /// The Prometheus policies' pasts together, the others' each on its own.
    async fn backfill_all(&self, asks: &[(&Policy, usize, SystemTime)]) -> Vec<Result<BTreeMap<String, Vec<f64>>, SourceError>> {
        let (prometheus, others): (Vec<(usize, &(&Policy, usize, SystemTime))>, Vec<_>) = asks.iter().enumerate().partition(|(_, (p, _, _))| matches!(p.metric_source, MetricSourceSpec::Prometheus { .. }));
        let (to_prometheus, to_metrics_server): (Vec<_>, Vec<_>) = (prometheus.iter().map(|(_, a)| **a).collect(), others.iter().map(|(_, a)| **a).collect());
        let (read, rest) = tokio::join!(self.prometheus.backfill_all(&to_prometheus), self.metrics_server.backfill_all(&to_metrics_server));
        in_order(prometheus.iter().map(|(i, _)| *i).zip(read).chain(others.iter().map(|(i, _)| *i).zip(rest)))
    }

    /// The warm start comes from the same source that collects.
    async fn backfill(&self, policy: &Policy, points: usize, end: SystemTime) -> Result<BTreeMap<String, Vec<f64>>, SourceError> {
        match policy.metric_source {
            MetricSourceSpec::Prometheus { .. } => self.prometheus.backfill(policy, points, end).await,
            MetricSourceSpec::MetricsServer => self.metrics_server.backfill(policy, points, end).await,
        }
    }
}

/// Answers that came back by source, put back in the order asked (by their index).
fn in_order<T>(answers: impl Iterator<Item = (usize, T)>) -> Vec<T> {
    let mut all: Vec<(usize, T)> = answers.collect();
    all.sort_by_key(|(i, _)| *i);
    all.into_iter().map(|(_, answer)| answer).collect()
}

/// The slowest and fastest `--speed`: a thousandth of real time, and a billion times it.
const MIN_SPEED: f64 = 1e-3;
const MAX_SPEED: f64 = 1e9;

async fn simulate(policies: Vec<Policy>, options: &RunOptions) -> anyhow::Result<RunReport> {
    if !(MIN_SPEED..=MAX_SPEED).contains(&options.speed) {
        return Err(invalid(format!("--speed must be from {MIN_SPEED} to {MAX_SPEED:e} (simulated seconds per real second), got {}", options.speed)));
    }
    let mut sim_config = SimConfig::default();
    if let Some((file, column)) = &options.trace {
        sim_config.trace = Trace::from_file(file, column)?;
    }
    let sim = Arc::new(SimCluster::new(sim_config));
    if let Some(addr) = options.expose_sim {
        crate::sim::serve(sim.clone(), addr).await?;
    }
    let plugins = Arc::new(Plugins::new(Limits::default())?);
    let mut runtimes = Vec::new();
    for policy in policies {
        sim.add_deployment(&policy.target, policy.guard.min_replicas.max(1));
        let file = policy.source.clone();
        runtimes.push(PolicyRuntime::new(policy, &plugins, options.audit_log.as_deref(), false).with_context(|| format!("cannot start policy {}", file.display()))?);
    }
    say_compile_cache(&plugins);
    let metrics: Arc<dyn MetricSource> = if options.sim_via_prometheus {
        if let Some(p) = runtimes.iter().find(|r| !matches!(r.policy.metric_source, MetricSourceSpec::Prometheus { .. })) {
            return Err(invalid(format!("{}: `source` is not Prometheus, but --sim-via-prometheus reads every policy's metrics through Prometheus; fix: set `source: {{ kind: prometheus, url: ... }}`", p.policy.source.display())));
        }
        Arc::new(PrometheusSource::new()?)
    } else {
        sim.clone()
    };
    let running: Vec<Policy> = runtimes.iter().map(|r| r.policy.clone()).collect();
    let seams = Seams { metrics, ..Seams::all(sim.clone()) };
    let mut engine = Engine::new(plugins.clone(), seams, runtimes, options.dry_run)?;
    engine.set_echo(options.echo);
    watch(&mut engine, plugins, &running, options, false)?;
    if let Some(t) = serve_telemetry(&mut engine, options).await? {
        t.leader.set(1);
    }
    // The simulator serves the trace before its clock as history, as Prometheus would.
    engine.warm_start(sim.now()).await;
    let report = drive(&mut engine, &sim, options).await;
    let simulated = engine.policies().iter().filter_map(|p| sim.stats(&p.policy.target).map(|s| (p.policy.name.clone(), s))).collect();
    let report = RunReport { simulated, ..report };
    print_summary(&report);
    Ok(report)
}

/// The simulated clock: tick, then advance to the next due policy, pacing by `speed`.
async fn drive(engine: &mut Engine, sim: &SimCluster, options: &RunOptions) -> RunReport {
    let started = Instant::now();
    let mut report = RunReport { ticks: 0, totals: TickCounts::default(), simulated: Vec::new() };
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    loop {
        let counts = engine.tick(sim.now()).await;
        report.ticks += 1;
        add(&mut report.totals, counts);
        let Some(next) = engine.next_due() else { break };
        let step = next.duration_since(sim.now()).unwrap_or_default();
        if options.run_for.is_some_and(|limit| sim.elapsed() + step > limit) {
            break;
        }
        // Within the checked speeds and a policy's 30-day interval the sum fits; were it ever
        // not to, the tick would not wait.
        let wake = Duration::try_from_secs_f64((sim.elapsed() + step).as_secs_f64() / options.speed).ok().and_then(|d| started.checked_add(d)).unwrap_or_else(Instant::now);
        tokio::select! {
            _ = tokio::time::sleep_until(wake.into()) => {}
            _ = &mut ctrl_c => break,
        }
        sim.advance(step);
    }
    report
}

fn add(total: &mut TickCounts, tick: TickCounts) {
    total.executed += tick.executed;
    total.dry_run += tick.dry_run;
    total.rejected += tick.rejected;
    total.failed += tick.failed;
    total.errors += tick.errors;
}

fn print_summary(report: &RunReport) {
    let t = report.totals;
    println!(
        "augur: {} ticks; actions executed {}, dry-run {}, rejected {}, failed {}; stage errors {}",
        report.ticks, t.executed, t.dry_run, t.rejected, t.failed, t.errors
    );
    for (policy, stats) in &report.simulated {
        println!(
            "augur: simulated {policy}: overload {:.1} min, peak replicas {}, replica changes {}, pod restarts {}",
            stats.overload_seconds / 60.0,
            stats.peak_replicas,
            stats.replica_changes.len().saturating_sub(1),
            stats.restarts
        );
    }
}
