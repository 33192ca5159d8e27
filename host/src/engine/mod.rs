//! The engine walks one tick of every policy through the stages, in order:
//! collect -> forecast -> assess -> plan -> guard -> execute -> record.
//!
//! Strategy: collection and execution are async (they talk to the cluster); the decision in
//! between is synchronous CPU work on blocking threads: the forecasts of all due policies in
//! one batch per forecaster, then each policy's plugin calls and guard on a thread of its own
//! (a few at once), on one set of plugin versions. As each decision comes back its actions are
//! executed and recorded, so a plugin that runs to its deadline delays only its own policy.
//! A policy whose stage fails gets an error record and no action; the others go on. The
//! rooms of the engine:
//! - `policy`: one policy's runtime (histories, schedule, guard state) and its `decide`;
//! - `forecasts`: the tick's forecasts, batched per forecaster;
//! - `record`: a tick's outputs (audit, the stdout line, telemetry, the saved guard state);
//! - `updates`: the reload messages the engine receives, how it applies them between two
//!   ticks, and the warm start from the metric source's past.
//!
//! The engine never watches files (the reloader does and sends it `Update`s), never talks
//! to the cluster except through its three seams, and never decides what a guard would.

mod forecasts;
mod policy;
mod record;
mod updates;

pub use forecasts::{Forecasts, forecast_all};
pub use policy::{Decision, Pending, PluginCall, PolicyRuntime, Tick, check_plugins, forecaster_for};
pub use record::{ActionReport, PolicyReport, Reports, TickCounts};
pub use updates::{Update, WarmStart};

use crate::metrics::{COLLECTING_AT_ONCE, MetricSource, Observation, WorkloadSource};
use crate::domain::Workload;
use crate::plugins::{MAX_MEMORY_BYTES, Plugins, Session};
use crate::remediation::audit::{AuditLog, Record, Verdict};
use crate::remediation::{ExecuteError, Executor, Order, Rejection};
use crate::telemetry::{PluginNameLabels, Telemetry};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

/// The engine's seams to a cluster: where metrics and the workload's state come from, and
/// what carries out actions. The simulator is all three; a real cluster has one of each.
#[derive(Clone)]
pub struct Seams {
    pub metrics: Arc<dyn MetricSource>,
    pub workloads: Arc<dyn WorkloadSource>,
    pub executor: Arc<dyn Executor>,
}

impl Seams {
    /// One thing that is all three seams (the simulator).
    pub fn all<T: MetricSource + WorkloadSource + Executor + 'static>(cluster: Arc<T>) -> Self {
        Self { metrics: cluster.clone(), workloads: cluster.clone(), executor: cluster }
    }
}

/// Every policy, the plugins, and the seams to the cluster.
pub struct Engine {
    plugins: Arc<Plugins>,
    seams: Seams,
    policies: Vec<PolicyRuntime>,
    audits: BTreeMap<PathBuf, AuditLog>,
    force_dry_run: bool,
    echo: bool,
    telemetry: Option<Arc<Telemetry>>,
    /// The forecaster last reported per (policy, metric), to retire its info series.
    forecaster_in_use: BTreeMap<(String, String), String>,
    /// New versions of policies and plugins from the reloader, applied between two ticks.
    updates: Option<tokio::sync::mpsc::UnboundedReceiver<Update>>,
    /// What each policy last did, for whoever shows it (an AugurPolicy's status); kept once
    /// asked for.
    reports: Option<Reports>,
    /// Where guard state is also kept (the cluster), and the policies whose state changed
    /// in this tick, saved there at its end.
    state_store: Option<Arc<dyn crate::remediation::state::StateStore>>,
    states_changed: Vec<String>,
}

/// One due policy's collected inputs, or why they could not be collected.
pub type Collected = Result<(Observation, Workload), String>;

impl Engine {
    /// An engine for `policies`, opening each audit log they append to. `force_dry_run` is the
    /// CLI's `--dry-run`. Readable lines go to stdout until `set_echo(false)`.
    pub fn new(plugins: Arc<Plugins>, seams: Seams, policies: Vec<PolicyRuntime>, force_dry_run: bool) -> anyhow::Result<Self> {
        let mut audits = BTreeMap::new();
        for p in &policies {
            if !audits.contains_key(&p.audit_path) {
                audits.insert(p.audit_path.clone(), AuditLog::open(&p.audit_path)?);
            }
        }
        let mut engine = Self { plugins, seams, policies, audits, force_dry_run, echo: false, telemetry: None, forecaster_in_use: BTreeMap::new(), updates: None, reports: None, state_store: None, states_changed: Vec::new() };
        engine.set_echo(true);
        Ok(engine)
    }

    /// Print readable lines to stdout (on by default).
    pub fn set_echo(&mut self, echo: bool) {
        self.echo = echo;
        for runtime in &mut self.policies {
            runtime.summarize = echo;
        }
    }

    /// Keeps every policy's guard state in `store` too: saved at the end of each tick that
    /// changed it, and read back by [`Engine::restore_states`].
    pub fn set_state_store(&mut self, store: Arc<dyn crate::remediation::state::StateStore>) {
        self.state_store = Some(store);
    }

    /// Takes each policy's guard state from the store, where it has one (on taking the
    /// leader Lease: the cooldowns and hourly count of the replica that led before).
    pub async fn restore_states(&mut self) {
        let Some(store) = self.state_store.clone() else { return };
        for runtime in &mut self.policies {
            match store.load(&runtime.policy.name).await {
                Ok(Some(state)) => {
                    tracing::info!(policy = %runtime.policy.name, "guard state restored from the cluster (cooldowns and the hourly count of the replica before)");
                    runtime.guard_state = state;
                }
                Ok(None) => {}
                Err(e) => tracing::warn!(policy = %runtime.policy.name, "cannot read the guard state kept in the cluster ({e}); the local one serves"),
            }
        }
    }

    /// Saves the guard states that this tick's actions changed: beside their audit logs, and
    /// in the cluster where a store keeps them there.
    async fn save_states(&mut self) {
        let changed = std::mem::take(&mut self.states_changed);
        if changed.is_empty() {
            return;
        }
        let names: std::collections::HashSet<&str> = changed.iter().map(String::as_str).collect();
        record::save_states(self.policies.iter().filter(|p| names.contains(p.policy.name.as_str())));
        let Some(store) = self.state_store.clone() else { return };
        for name in changed {
            let Some(runtime) = self.policies.iter().find(|p| p.policy.name == name) else { continue };
            if let Err(e) = store.save(&runtime.policy.name, &runtime.guard_state).await {
                tracing::warn!(policy = %runtime.policy.name, "cannot keep the guard state in the cluster ({e}); a replica taking over would not know this policy's cooldowns");
            }
        }
    }

    /// What each policy last did, by its source, updated after each of its ticks from now on.
    pub fn reports(&mut self) -> Reports {
        self.reports.get_or_insert_with(Reports::default).clone()
    }

    pub fn policies(&self) -> &[PolicyRuntime] {
        &self.policies
    }

    /// When the next policy is due.
    pub fn next_due(&self) -> Option<SystemTime> {
        self.policies.iter().filter_map(|p| p.next_due).min()
    }

    /// Runs one tick of every policy that is due at `now`: applies what the reloader sent,
    /// collects, forecasts, then decides each policy on a blocking thread of its own (at most
    /// `DECIDING_AT_ONCE` at a time) and, as each decision comes back, executes what the guard
    /// allowed and records it all. A plugin that runs to its deadline delays its own policy;
    /// the others decide, act and record meanwhile.
    pub async fn tick(&mut self, now: SystemTime) -> TickCounts {
        self.apply_updates(now).await;
        let started = std::time::Instant::now();
        let due: Vec<usize> = (0..self.policies.len()).filter(|i| self.policies[*i].next_due.is_none_or(|t| t <= now)).collect();
        let inputs = self.collect(&due).await;
        let mut counts = TickCounts::default();
        if due.len() == 1 {
            self.decide_one_policy(due[0], inputs, now, &mut counts).await;
        } else {
            self.decide_each_policy(&due, inputs, now, &mut counts).await;
        }
        self.save_states().await;
        if let Some(t) = &self.telemetry {
            t.tick.observe(started.elapsed().as_secs_f64());
            for (plugin, lines) in self.plugins.dropped_log_lines() {
                t.plugin_log_dropped.get_or_create(&PluginNameLabels { plugin }).inc_by(lines);
            }
            t.set_ready();
        }
        counts
    }

    /// One due policy: forecast and decide in one trip to a blocking thread (there is no
    /// other policy to wait meanwhile), then act and record.
    async fn decide_one_policy(&mut self, i: usize, inputs: Vec<Collected>, now: SystemTime, counts: &mut TickCounts) {
        let (plugins, force_dry_run) = (self.plugins.clone(), self.force_dry_run);
        let mut policies = std::mem::take(&mut self.policies);
        let work = move || {
            let decisions = decide_blocking(&plugins, &mut policies, &[i], &inputs, now, force_dry_run);
            (policies, decisions)
        };
        let (mut policies, decisions) = joined(tokio::task::spawn_blocking(work).await).await;
        for decision in decisions {
            self.settle(&mut policies[i], decision, now, counts).await;
        }
        self.policies = policies;
    }

    /// Several due policies: forecast them in one batch per forecaster, then decide each on a
    /// blocking thread of its own (at most `DECIDING_AT_ONCE` at a time, all on one set of
    /// plugin versions) and act and record each as its decision comes back.
    async fn decide_each_policy(&mut self, due: &[usize], inputs: Vec<Collected>, now: SystemTime, counts: &mut TickCounts) {
        let inputs = self.forecast_due(due, inputs, now).await;
        let published = self.plugins.published_now();
        let mut slots: Vec<Option<PolicyRuntime>> = std::mem::take(&mut self.policies).into_iter().map(Some).collect();
        let mut waiting: std::collections::VecDeque<(usize, Collected)> = due.iter().copied().zip(inputs).collect();
        let mut deciding = tokio::task::JoinSet::new();
        // Guest memory the running decisions may hold: one guest at the most any rule may have
        // (the host's peak memory stays that of one such guest), or several smaller ones.
        let mut memory_in_use = 0;
        loop {
            while deciding.len() < DECIDING_AT_ONCE
                && let Some((i, _)) = waiting.front()
                && (deciding.is_empty() || memory_in_use + slots[*i].as_ref().map_or(0, PolicyRuntime::guest_memory) <= MAX_MEMORY_BYTES)
                && let Some((i, input)) = waiting.pop_front()
            {
                let mut runtime = slots[i].take().expect("a due policy decides once a tick");
                memory_in_use += runtime.guest_memory();
                let (plugins, published, force_dry_run) = (self.plugins.clone(), published.clone(), self.force_dry_run);
                deciding.spawn_blocking(move || {
                    let decision = decide_one(&mut plugins.session_at(&published), &mut runtime, &input, now, force_dry_run);
                    (i, runtime, decision)
                });
            }
            let Some(done) = deciding.join_next().await else { break };
            let (i, mut runtime, decision) = joined(done).await;
            memory_in_use -= runtime.guest_memory();
            self.settle(&mut runtime, decision, now, counts).await;
            slots[i] = Some(runtime);
        }
        self.policies = slots.into_iter().map(|s| s.expect("every policy is back after its decision")).collect();
    }

    /// A decision's aftermath: hold what cannot be recorded, execute the rest, export, record.
    async fn settle(&mut self, runtime: &mut PolicyRuntime, mut decision: Decision, now: SystemTime, counts: &mut TickCounts) {
        self.hold_unrecordable(runtime, &mut decision);
        self.execute(runtime, &mut decision, now).await;
        self.export_decision(runtime, &decision);
        self.finish(runtime, decision, now, counts);
    }

    /// The metrics and the workload's state of each due policy, in the order of `due`: the
    /// metrics all at once (a source may read many policies in one query), the workloads up to
    /// `COLLECTING_AT_ONCE` at a time (each waits on the API server, not on the CPU).
    async fn collect(&self, due: &[usize]) -> Vec<Collected> {
        use futures::StreamExt;
        let policies: Vec<&crate::config::Policy> = due.iter().map(|&i| &self.policies[i].policy).collect();
        let mut reads = Vec::with_capacity(policies.len());
        for policy in &policies {
            reads.push(self.seams.workloads.workload(policy));
        }
        let workloads = futures::stream::iter(reads).buffered(COLLECTING_AT_ONCE).collect::<Vec<_>>();
        let (observations, workloads) = tokio::join!(self.seams.metrics.collect_all(&policies), workloads);
        let collected = policies.iter().copied().zip(observations.into_iter().zip(workloads));
        let mut inputs = Vec::with_capacity(due.len());
        for (policy, collected) in collected {
            self.export_collection(policy, &collected);
            inputs.push(match collected {
                (Ok(mut observation), Ok(mut workload)) => {
                    observation.fill_workload(policy, &mut workload);
                    Ok((observation, workload))
                }
                (Err(e), _) | (_, Err(e)) => Err(e.to_string()),
            });
        }
        inputs
    }

    /// Takes each due policy's new point and forecasts (one batch per forecaster), on a
    /// blocking thread: model inference is CPU work that must not hold an async worker. The
    /// policies travel to that thread and back.
    async fn forecast_due(&mut self, due: &[usize], inputs: Vec<Collected>, now: SystemTime) -> Vec<Collected> {
        let mut policies = std::mem::take(&mut self.policies);
        let due = due.to_vec();
        let work = move || {
            forecast_blocking(&mut policies, &due, &inputs, now);
            (policies, inputs)
        };
        let (policies, inputs) = joined(tokio::task::spawn_blocking(work).await).await;
        self.policies = policies;
        inputs
    }

    /// Carries out the actions the guard allowed (at `decided`, the tick's time) and writes the
    /// outcome into their records. A change that lands (or may have) counts for the cooldowns
    /// from when it landed.
    async fn execute(&self, runtime: &mut PolicyRuntime, decision: &mut Decision, decided: SystemTime) {
        // What the guard refused is told first (a Warning Event on a cluster): it was decided
        // before anything below was carried out.
        for record in &decision.records {
            if let Record::Action(record) = record
                && record.verdict == Some(Verdict::Rejected)
            {
                let rejection = Rejection { target: &runtime.policy.target, action: &record.proposal.action, proposed_because: &record.proposal.reason, refused_because: &record.reason };
                self.seams.executor.rejected(&rejection).await;
            }
        }
        for pending in &decision.pending {
            let Record::Action(record) = &mut decision.records[pending.record] else { unreachable!("a pending action points at its action record") };
            let order = Order::new(&runtime.policy.target, &pending.action, &record.proposal.reason).dry_run(pending.dry_run).seen_replicas(pending.seen_replicas);
            let started = Instant::now();
            let outcome = self.seams.executor.execute(&order).await;
            let (verdict, result) = match outcome {
                Ok(result) => (if pending.dry_run { Verdict::DryRun } else { Verdict::Executed }, result),
                Err(e) => (verdict_of(&e), e.to_string()),
            };
            if matches!(verdict, Verdict::Executed | Verdict::Unconfirmed) {
                runtime.guard_state.landed(pending.cooldown_key, decided, decided + started.elapsed());
                decision.state_changed = true;
            }
            record.verdict = Some(verdict);
            record.result = Some(result);
        }
    }
}

/// The audit's verdict for an action the executor did not carry out.
fn verdict_of(e: &ExecuteError) -> Verdict {
    match e {
        ExecuteError::Refused(_) | ExecuteError::Failed(_) => Verdict::Failed,
        ExecuteError::Superseded(_) => Verdict::Superseded,
        ExecuteError::Unconfirmed(_) => Verdict::Unconfirmed,
    }
}

/// A blocking task's outcome: its panic goes on; a cancellation means the runtime is shutting
/// down (it cancels a blocking task that has not started yet), and this tick ends with it
/// instead of panicking.
async fn joined<T>(result: Result<T, tokio::task::JoinError>) -> T {
    match result {
        Ok(value) => value,
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Err(_) => std::future::pending().await,
    }
}

/// Decisions of one tick that run at once, each on a blocking thread of its own (fewer when
/// their guests' memory limits add up to more than `MAX_MEMORY_BYTES`).
const DECIDING_AT_ONCE: usize = 4;

/// Each due policy's new point (`inputs[k]` belongs to `policies[due[k]]`), then the
/// forecasts of those that took one, batched per forecaster.
pub fn forecast_blocking(policies: &mut [PolicyRuntime], due: &[usize], inputs: &[Collected], now: SystemTime) {
    for (&i, input) in due.iter().zip(inputs) {
        if let Ok((observation, _)) = input {
            policies[i].observe(observation, now);
        }
    }
    // A new point asks for new forecasts; a tick within the step reuses its point's.
    let stale: Vec<usize> = due.iter().zip(inputs).filter(|(i, input)| input.is_ok() && policies[**i].kept_forecasts.is_none()).map(|(&i, _)| i).collect();
    for (i, made) in stale.iter().zip(forecast_all(policies, &stale)) {
        policies[*i].kept_forecasts = Some(made);
    }
}

/// One policy's decision of a tick, after `forecast_blocking`.
pub fn decide_one(session: &mut Session<'_>, runtime: &mut PolicyRuntime, input: &Collected, now: SystemTime, force_dry_run: bool) -> Decision {
    match input {
        Ok((observation, workload)) => {
            let forecasts = runtime.kept_forecasts.clone().expect("every ready policy has its point's forecasts");
            runtime.decide(session, &Tick { observation, workload, now, force_dry_run }, forecasts)
        }
        Err(reason) => {
            let mut decision = Decision::default();
            let head = record::head(&runtime.policy, &Observation::default(), now);
            decision.push_error(&head, crate::remediation::audit::Stage::Collect, reason.clone());
            decision
        }
    }
}

/// One tick's decisions for the due policies (`inputs[k]` belongs to `policies[due[k]]`), on
/// this thread, in one session: the engine's stages without its concurrency, for the
/// benchmarks.
pub fn decide_blocking(plugins: &Plugins, policies: &mut [PolicyRuntime], due: &[usize], inputs: &[Collected], now: SystemTime, force_dry_run: bool) -> Vec<Decision> {
    forecast_blocking(policies, due, inputs, now);
    let mut session = plugins.session();
    due.iter().zip(inputs).map(|(&i, input)| decide_one(&mut session, &mut policies[i], input, now, force_dry_run)).collect()
}

/// The same on every core: the due policies split into one run of consecutive policies per
/// core, each decided on a thread of its own with its own session, as the engine's ticks run
/// their decisions side by side. For the benchmarks; the decisions come back in `due`'s order.
pub fn decide_on_cores(plugins: &Plugins, policies: &mut [PolicyRuntime], due: &[usize], inputs: &[Collected], now: SystemTime, force_dry_run: bool) -> Vec<Decision> {
    forecast_blocking(policies, due, inputs, now);
    let mut slots: Vec<Option<&mut PolicyRuntime>> = policies.iter_mut().map(Some).collect();
    let mut work: Vec<(&mut PolicyRuntime, &Collected)> = due.iter().zip(inputs).map(|(&i, input)| (slots[i].take().expect("a due policy is named once"), input)).collect();
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get()).min(work.len());
    if cores <= 1 {
        let mut session = plugins.session();
        return work.into_iter().map(|(runtime, input)| decide_one(&mut session, runtime, input, now, force_dry_run)).collect();
    }
    let per_core = work.len().div_ceil(cores).max(1);
    std::thread::scope(|scope| {
        let runs: Vec<_> = work
            .chunks_mut(per_core)
            .map(|run| {
                scope.spawn(move || {
                    let mut session = plugins.session();
                    run.iter_mut().map(|(runtime, input)| decide_one(&mut session, runtime, input, now, force_dry_run)).collect::<Vec<_>>()
                })
            })
            .collect();
        runs.into_iter().flat_map(|run| run.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic))).collect()
    })
}
