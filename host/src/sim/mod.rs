//! The built-in simulated cluster: a Deployment per policy whose ready pods share a load that
//! follows a real request-rate trace, with pod start-up delay, per-pod CPU capacity, memory
//! that leaks and is reset by a restart, and nodes whose temperature follows their load (and
//! one cooling failure). It serves metrics and workload state, and executes actions, so the
//! whole loop runs with no Kubernetes and no Prometheus.
//!
//! Time is simulated: the run loop calls `advance`; nothing here sleeps or reads the clock.

mod exporter;
mod trace;

pub use exporter::{Exporter, serve};

pub use trace::Trace;

use crate::config::Policy;
use crate::domain::{self, Action, Target};
use crate::metrics::{MetricSource, Observation, SourceError, WorkloadSource};
use crate::remediation::{ExecuteError, Executor, Order};
use async_trait::async_trait;
use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

const MIB: f64 = 1_048_576.0;

/// The simulation's physics, with defaults that match `policies/nginx.yaml`.
#[derive(Debug, Clone)]
pub struct SimConfig {
    pub trace: Trace,
    /// CPU demand, cores, per unit of the trace (requests per minute).
    pub cores_per_unit: f64,
    /// CPU one pod can serve, cores.
    pub capacity_per_pod: f64,
    /// Time from pod creation to ready.
    pub startup: Duration,
    /// Working set of a fresh pod, bytes.
    pub memory_base: f64,
    /// Memory a running pod leaks per minute, bytes.
    pub memory_leak_per_minute: f64,
    pub nodes: usize,
    /// CPU cores per node, for its temperature.
    pub node_cores: f64,
    /// Above this a node is unhealthy.
    pub node_alarm_celsius: f64,
    /// A cooling failure on the second node: (starts after, lasts, extra degrees).
    pub heat_event: Option<(Duration, Duration, f64)>,
    /// Physics resolution.
    pub step: Duration,
    /// Where in the trace the clock starts: the trace before it is the past that `backfill`
    /// serves (the warm start), as Prometheus serves a cluster's.
    pub start: Duration,
}

impl Default for SimConfig {
    fn default() -> Self {
        Self {
            trace: Trace::builtin(),
            cores_per_unit: 0.02,
            capacity_per_pod: 0.5,
            startup: Duration::from_secs(60),
            memory_base: 64.0 * MIB,
            memory_leak_per_minute: 0.5 * MIB,
            nodes: 3,
            node_cores: 4.0,
            node_alarm_celsius: 85.0,
            heat_event: Some((Duration::from_secs(90 * 60), Duration::from_secs(60 * 60), 40.0)),
            step: Duration::from_secs(5),
            start: Duration::ZERO,
        }
    }
}

/// What happened to one simulated Deployment, for reports and tests.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SimStats {
    /// Seconds during which demand exceeded the ready pods' capacity.
    pub overload_seconds: f64,
    /// Simulated seconds since the start when demand first exceeded capacity.
    pub first_overload: Option<f64>,
    /// (seconds since start, replicas) at every change of replicas.
    pub replica_changes: Vec<(f64, u32)>,
    pub peak_replicas: u32,
    pub restarts: u32,
}

/// One Deployment at one moment (see `SimCluster::snapshot`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Snapshot {
    /// CPU demand now, cores.
    pub demand: f64,
    /// Desired replicas (pods created, ready or not).
    pub replicas: u32,
    pub ready: u32,
    /// CPU the ready pods use, cores (at most their capacity).
    pub ready_cpu: f64,
    pub capacity_per_pod: f64,
}

#[derive(Debug)]
struct SimPod {
    name: String,
    node: Option<usize>,
    created: f64,
    cpu: f64,
    memory: f64,
}

#[derive(Debug)]
struct SimDeployment {
    target: Target,
    replicas: u32,
    pods: Vec<SimPod>,
    demand: f64,
    stats: SimStats,
}

#[derive(Debug)]
struct SimNode {
    name: String,
    schedulable: bool,
    cordoned_by_augur: bool,
    temperature: f64,
    healthy_since: f64,
}

#[derive(Debug)]
struct SimState {
    config: SimConfig,
    /// Simulated seconds since the start.
    now: f64,
    deployments: Vec<SimDeployment>,
    nodes: Vec<SimNode>,
    next_pod: u64,
}

/// The simulated cluster. Cheap to share behind an `Arc`.
#[derive(Debug)]
pub struct SimCluster {
    state: Mutex<SimState>,
}

impl SimCluster {
    pub fn new(config: SimConfig) -> Self {
        let nodes = (0..config.nodes)
            .map(|i| SimNode { name: format!("sim-node-{}", (b'a' + i as u8) as char), schedulable: true, cordoned_by_augur: false, temperature: 45.0, healthy_since: 0.0 })
            .collect();
        let now = config.start.as_secs_f64();
        Self { state: Mutex::new(SimState { config, now, deployments: Vec::new(), nodes, next_pod: 0 }) }
    }

    /// Adds a Deployment with `replicas` pods, ready from the start.
    pub fn add_deployment(&self, target: &Target, replicas: u32) {
        let mut s = self.lock();
        let (startup, now) = (s.config.startup.as_secs_f64(), s.now);
        let mut deployment = SimDeployment { target: target.clone(), replicas, pods: Vec::new(), demand: 0.0, stats: SimStats::default() };
        deployment.stats.peak_replicas = replicas;
        deployment.stats.replica_changes.push((now, replicas));
        for _ in 0..replicas {
            let pod = s.new_pod(&target.name, now - startup);
            deployment.pods.push(pod);
        }
        s.deployments.push(deployment);
        s.schedule();
        s.step(0.0); // usage at the start, before time moves
    }

    /// The simulated wall-clock time now.
    pub fn now(&self) -> SystemTime {
        let s = self.lock();
        UNIX_EPOCH + Duration::from_secs(s.config.trace.start_unix) + Duration::from_secs_f64(s.now)
    }

    /// Simulated seconds since the trace's start (the clock starts at `SimConfig::start`).
    pub fn elapsed(&self) -> Duration {
        Duration::from_secs_f64(self.lock().now)
    }

    /// Moves the simulation forward.
    pub fn advance(&self, by: Duration) {
        let mut s = self.lock();
        let end = s.now + by.as_secs_f64();
        let step = s.config.step.as_secs_f64();
        while s.now + 1e-9 < end {
            let dt = step.min(end - s.now);
            s.now += dt;
            s.step(dt);
        }
    }

    /// Sets a Deployment's replicas now (what a controller outside the policy engine does).
    pub fn set_replicas(&self, target: &Target, replicas: u32) -> Result<String, ExecuteError> {
        self.lock().scale(target, replicas, false)
    }

    /// What happened to a Deployment so far.
    pub fn stats(&self, target: &Target) -> Option<SimStats> {
        self.lock().deployments.iter().find(|d| d.target == *target).map(|d| d.stats.clone())
    }

    /// Desired replicas of a Deployment now.
    pub fn replicas(&self, target: &Target) -> Option<u32> {
        self.lock().deployments.iter().find(|d| d.target == *target).map(|d| d.replicas)
    }

    /// A Deployment's state now, as a controller outside the policy engine sees it (the
    /// replays' HPA and oracle).
    pub fn snapshot(&self, target: &Target) -> Option<Snapshot> {
        let s = self.lock();
        let d = s.deployments.iter().find(|d| d.target == *target)?;
        let ready: Vec<&SimPod> = d.pods.iter().filter(|p| s.ready(p)).collect();
        Some(Snapshot {
            demand: d.demand,
            replicas: d.replicas,
            ready: ready.len() as u32,
            ready_cpu: ready.iter().map(|p| p.cpu).sum(),
            capacity_per_pod: s.config.capacity_per_pod,
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, SimState> {
        self.state.lock().expect("simulator state poisoned")
    }
}

impl SimState {
    fn new_pod(&mut self, name: &str, created: f64) -> SimPod {
        self.next_pod += 1;
        SimPod { name: format!("{name}-sim-{:05x}", self.next_pod), node: None, created, cpu: 0.0, memory: self.config.memory_base }
    }

    fn ready(&self, pod: &SimPod) -> bool {
        pod.node.is_some() && self.now >= pod.created + self.config.startup.as_secs_f64()
    }

    /// Places pending pods on the schedulable node with the fewest pods.
    fn schedule(&mut self) {
        let mut load = vec![0usize; self.nodes.len()];
        for pod in self.deployments.iter().flat_map(|d| &d.pods) {
            if let Some(n) = pod.node {
                load[n] += 1;
            }
        }
        for pod in self.deployments.iter_mut().flat_map(|d| &mut d.pods).filter(|p| p.node.is_none()) {
            let best = (0..self.nodes.len()).filter(|n| self.nodes[*n].schedulable).min_by_key(|n| load[*n]);
            if let Some(n) = best {
                pod.node = Some(n);
                load[n] += 1;
            }
        }
    }

    fn step(&mut self, dt: f64) {
        self.schedule();
        let (now, startup) = (self.now, self.config.startup.as_secs_f64());
        let demand_now = self.config.trace.at(now) * self.config.cores_per_unit;
        let leak = self.config.memory_leak_per_minute * dt / 60.0;
        let capacity = self.config.capacity_per_pod;
        let mut node_cpu = vec![0.0; self.nodes.len()];
        for d in &mut self.deployments {
            let is_ready = |p: &SimPod| p.node.is_some() && now >= p.created + startup;
            let ready = d.pods.iter().filter(|p| is_ready(p)).count() as f64;
            d.demand = demand_now;
            let served = demand_now.min(ready * capacity);
            if dt > 0.0 && demand_now > ready * capacity + 1e-9 {
                d.stats.overload_seconds += dt;
                d.stats.first_overload.get_or_insert(now);
            }
            for pod in &mut d.pods {
                let running = is_ready(pod);
                pod.cpu = if running { served / ready } else { 0.0 };
                if running {
                    pod.memory += leak;
                }
                if let Some(n) = pod.node {
                    node_cpu[n] += pod.cpu;
                }
            }
        }
        self.heat_nodes(&node_cpu);
    }

    fn heat_nodes(&mut self, node_cpu: &[f64]) {
        let now = self.now;
        for (i, node) in self.nodes.iter_mut().enumerate() {
            let mut temperature = 45.0 + 30.0 * (node_cpu[i] / self.config.node_cores).min(1.0);
            if let Some((start, length, extra)) = self.config.heat_event
                && i == 1
            {
                // The cooling fails over 10 minutes and recovers over 10 minutes.
                let (start, end) = (start.as_secs_f64(), (start + length).as_secs_f64());
                let ramp = ((now - start) / 600.0).min((end - now) / 600.0).clamp(0.0, 1.0);
                temperature += extra * ramp;
            }
            node.temperature = temperature;
            if temperature > self.config.node_alarm_celsius {
                node.healthy_since = now;
            }
        }
    }

    fn deployment(&mut self, target: &Target) -> Result<&mut SimDeployment, ExecuteError> {
        self.deployments.iter_mut().find(|d| d.target == *target).ok_or_else(|| ExecuteError::Refused(format!("{target} does not exist in the simulation")))
    }

    fn node(&mut self, name: &str) -> Result<&mut SimNode, ExecuteError> {
        self.nodes.iter_mut().find(|n| n.name == name).ok_or_else(|| ExecuteError::Refused(format!("node {name} does not exist in the simulation")))
    }

    fn scale(&mut self, target: &Target, replicas: u32, dry_run: bool) -> Result<String, ExecuteError> {
        let now = self.now;
        let from = self.deployment(target)?.replicas;
        if dry_run {
            return Ok(format!("would scale {from} -> {replicas}"));
        }
        let mut new_pods = Vec::new();
        for _ in from..replicas {
            new_pods.push(self.new_pod(&target.name, now));
        }
        let d = self.deployment(target)?;
        d.replicas = replicas;
        d.pods.extend(new_pods);
        d.pods.sort_by(|a, b| a.created.total_cmp(&b.created));
        d.pods.truncate(replicas as usize); // scale-down removes the newest pods
        d.stats.replica_changes.push((now, replicas));
        d.stats.peak_replicas = d.stats.peak_replicas.max(replicas);
        self.schedule();
        Ok(format!("scaled {from} -> {replicas}"))
    }

    fn restart(&mut self, target: &Target, pod_name: &str, dry_run: bool) -> Result<String, ExecuteError> {
        let now = self.now;
        let d = self.deployment(target)?;
        let Some(index) = d.pods.iter().position(|p| p.name == pod_name) else {
            return Err(ExecuteError::Refused(format!("pod {pod_name} is not a pod of {target}")));
        };
        if dry_run {
            return Ok(format!("would delete pod {pod_name}"));
        }
        d.pods.remove(index);
        d.stats.restarts += 1;
        let replacement = self.new_pod(&target.name, now);
        let name = replacement.name.clone();
        self.deployment(target)?.pods.push(replacement);
        self.schedule();
        Ok(format!("deleted pod {pod_name}; replacement {name} starting"))
    }

    /// Replaces every pod with a new one (the simulator has no surge: the new pods start
    /// together, as a rollout with `maxUnavailable: 0` would end).
    fn rollout_restart(&mut self, target: &Target, dry_run: bool) -> Result<String, ExecuteError> {
        let names: Vec<String> = self.deployment(target)?.pods.iter().map(|p| p.name.clone()).collect();
        if dry_run {
            return Ok(format!("would restart {} pods", names.len()));
        }
        for name in &names {
            self.restart(target, name, false)?;
        }
        Ok(format!("restarted {} pods", names.len()))
    }

    fn set_schedulable(&mut self, node_name: &str, schedulable: bool, dry_run: bool) -> Result<String, ExecuteError> {
        let verb = if schedulable { "uncordon" } else { "cordon" };
        let node = self.node(node_name)?;
        if dry_run {
            return Ok(format!("would {verb} {node_name}"));
        }
        node.schedulable = schedulable;
        node.cordoned_by_augur = !schedulable;
        Ok(format!("{verb}ed {node_name}"))
    }
}

#[async_trait]
impl MetricSource for SimCluster {
    async fn collect(&self, policy: &Policy) -> Result<Observation, SourceError> {
        let s = self.lock();
        let d = s.deployments.iter().find(|d| d.target == policy.target).ok_or_else(|| unknown(&policy.target))?;
        let ready = d.pods.iter().filter(|p| s.ready(p)).count();
        let capacity = ready as f64 * s.config.capacity_per_pod;
        let mut values = BTreeMap::new();
        for metric in &policy.metrics {
            let value = match metric.name.as_str() {
                "cpu" => Some(d.pods.iter().map(|p| p.cpu).sum()),
                "memory" => Some(d.pods.iter().filter(|p| p.node.is_some()).map(|p| p.memory).sum()),
                "replicas" => Some(d.pods.len() as f64),
                "node_temperature" => s.nodes.iter().map(|n| n.temperature).max_by(f64::total_cmp),
                // Queueing delay grows as utilisation approaches 1 (M/M/1-like).
                "latency_p95" => Some(0.05 / (1.0 - (d.demand / capacity.max(1e-9)).min(0.95))),
                _ => None,
            };
            values.extend(value.map(|v| (metric.name.clone(), v)));
        }
        Ok(Observation { values, ..Default::default() })
    }

    /// The trace before now, as a cluster's Prometheus would serve it: the CPU of a workload
    /// that was served (its demand), one point per interval. Other metrics have no past here.
    async fn backfill(&self, policy: &Policy, points: usize, end: SystemTime) -> Result<BTreeMap<String, Vec<f64>>, SourceError> {
        let s = self.lock();
        if !s.deployments.iter().any(|d| d.target == policy.target) {
            return Err(unknown(&policy.target));
        }
        let origin = UNIX_EPOCH + Duration::from_secs(s.config.trace.start_unix);
        let mut series = BTreeMap::new();
        // Before the trace's start there is no past.
        let Ok(end) = end.duration_since(origin).map(|d| d.as_secs_f64()) else { return Ok(series) };
        let step = policy.forecast.step.as_secs_f64();
        if policy.metrics.iter().any(|m| m.name == "cpu") {
            let values = (0..points).rev().map(|k| end - k as f64 * step).filter(|t| *t >= 0.0).map(|t| s.config.trace.at(t) * s.config.cores_per_unit).collect();
            series.insert("cpu".to_string(), values);
        }
        Ok(series)
    }
}

#[async_trait]
impl WorkloadSource for SimCluster {
    async fn workload(&self, policy: &Policy) -> Result<domain::Workload, SourceError> {
        let s = self.lock();
        let d = s.deployments.iter().find(|d| d.target == policy.target).ok_or_else(|| unknown(&policy.target))?;
        let pods: Vec<domain::Pod> = d
            .pods
            .iter()
            .map(|p| domain::Pod {
                name: p.name.clone(),
                node: p.node.map(|n| s.nodes[n].name.clone()).unwrap_or_default(),
                phase: if p.node.is_some() { "Running" } else { "Pending" }.to_string(),
                ready: s.ready(p),
                cpu_cores: Some(p.cpu),
                memory_bytes: Some(p.memory),
                age_seconds: (s.now - p.created).max(0.0) as u64,
                startup_seconds: s.ready(p).then(|| s.config.startup.as_secs()),
            })
            .collect();
        let nodes = s
            .nodes
            .iter()
            .map(|n| domain::Node {
                name: n.name.clone(),
                ready: true,
                schedulable: n.schedulable,
                cordoned_by_augur: n.cordoned_by_augur,
                temperature_celsius: Some(n.temperature),
                pressure: Vec::new(),
                healthy_seconds: (s.now - n.healthy_since).max(0.0) as u64,
            })
            .collect();
        let ready_replicas = pods.iter().filter(|p| p.ready).count() as u32;
        Ok(domain::Workload { target: d.target.clone(), replicas: d.replicas, ready_replicas, pods, nodes, paused: None, scaled_by: None })
    }
}

#[async_trait]
impl Executor for SimCluster {
    async fn execute(&self, order: &Order<'_>) -> Result<String, ExecuteError> {
        let (target, dry_run) = (order.target, order.dry_run);
        let mut s = self.lock();
        match order.action {
            Action::Scale { replicas } => {
                // As on a cluster: a count changed since the decision wins.
                let now = s.deployment(target)?.replicas;
                if order.seen_replicas.is_some_and(|seen| seen != now) {
                    return Err(ExecuteError::Superseded(format!("{target} has {now} replicas, not the {} this decision saw", order.seen_replicas.unwrap_or(now))));
                }
                s.scale(target, *replicas, dry_run)
            }
            Action::RestartPod { pod } => s.restart(target, pod, dry_run),
            Action::RolloutRestart => s.rollout_restart(target, dry_run),
            Action::CordonNode { node } => s.set_schedulable(node, false, dry_run),
            Action::UncordonNode { node } => s.set_schedulable(node, true, dry_run),
        }
    }
}

fn unknown(target: &Target) -> SourceError {
    SourceError::UnknownTarget { source_name: "simulator", target: target.to_string() }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target() -> Target {
        Target { kind: "Deployment".into(), namespace: "default".into(), name: "nginx".into() }
    }

    fn flat(value: f64) -> SimConfig {
        let trace = Trace { start_unix: 0, step_seconds: 60, values: vec![value; 10] };
        SimConfig { trace, heat_event: None, ..SimConfig::default() }
    }

    #[tokio::test]
    async fn new_pods_serve_only_after_start_up() {
        let sim = SimCluster::new(flat(75.0)); // 1.5 cores of demand
        sim.add_deployment(&target(), 2); // 1.0 core of capacity
        sim.advance(Duration::from_secs(10));
        assert!(sim.stats(&target()).unwrap().overload_seconds > 0.0);
        sim.execute(&Order::new(&target(), &Action::Scale { replicas: 4 }, "test")).await.unwrap();
        sim.advance(Duration::from_secs(30));
        let before = sim.stats(&target()).unwrap().overload_seconds;
        assert!(before >= 40.0 - 1e-9, "still overloaded while the new pods start: {before}");
        sim.advance(Duration::from_secs(60));
        // Pods created at t=10 s are ready at t=70 s: the 5 s steps ending at 5..65 s were overloaded.
        let after = sim.stats(&target()).unwrap().overload_seconds;
        assert!((after - 65.0).abs() < 1e-9, "overload stops once the pods are ready: {after}");
    }

    #[tokio::test]
    async fn dry_run_changes_nothing() {
        let sim = SimCluster::new(flat(10.0));
        sim.add_deployment(&target(), 2);
        let said = sim.execute(&Order::new(&target(), &Action::Scale { replicas: 5 }, "test").dry_run(true)).await.unwrap();
        assert_eq!(said, "would scale 2 -> 5");
        assert_eq!(sim.replicas(&target()), Some(2));
    }

    #[tokio::test]
    async fn a_restart_resets_memory_and_refuses_foreign_pods() {
        let sim = SimCluster::new(flat(10.0));
        sim.add_deployment(&target(), 1);
        sim.advance(Duration::from_secs(600));
        let policy_free_workload = { sim.lock().deployments[0].pods[0].name.clone() };
        let err = sim.execute(&Order::new(&target(), &Action::RestartPod { pod: "other-pod".into() }, "t")).await.unwrap_err();
        assert!(matches!(err, ExecuteError::Refused(_)));
        sim.execute(&Order::new(&target(), &Action::RestartPod { pod: policy_free_workload }, "t")).await.unwrap();
        let s = sim.lock();
        assert_eq!(s.deployments[0].pods.len(), 1);
        assert_eq!(s.deployments[0].pods[0].memory, s.config.memory_base);
    }

    #[tokio::test]
    async fn the_trace_before_the_clock_is_served_as_history() {
        // 10 minutes of a ramp, 1 point a minute; the clock starts at minute 5.
        let trace = Trace { start_unix: 0, step_seconds: 60, values: (0..10).map(f64::from).collect() };
        let sim = SimCluster::new(SimConfig { trace, heat_event: None, start: Duration::from_secs(300), ..SimConfig::default() });
        sim.add_deployment(&target(), 2);
        let mut policy = crate::config::load(std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../policies/nginx.yaml"))).unwrap();
        policy.target = target();
        let end = sim.now() - Duration::from_secs(60);
        let past = sim.backfill(&policy, 3, end).await.unwrap();
        // Minutes 2, 3, 4 at 0.02 cores per unit.
        let cpu: Vec<f64> = past["cpu"].iter().map(|v| (v / 0.02 * 1e6).round() / 1e6).collect();
        assert_eq!(cpu, vec![2.0, 3.0, 4.0]);
        // Nothing before the trace's start.
        assert_eq!(sim.backfill(&policy, 10, end).await.unwrap()["cpu"].len(), 5);
        // Pods report their start-up once ready.
        let workload = sim.workload(&policy).await.unwrap();
        assert_eq!(workload.startup_seconds(), Some(60));
    }

    #[test]
    fn a_cordoned_node_gets_no_new_pods() {
        let sim = SimCluster::new(flat(10.0));
        {
            let mut s = sim.lock();
            s.nodes[0].schedulable = false;
        }
        sim.add_deployment(&target(), 4);
        let s = sim.lock();
        assert!(s.deployments[0].pods.iter().all(|p| p.node != Some(0)));
    }
}
