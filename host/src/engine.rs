//! The engine walks one tick of every policy through the stages, in order:
//! collect -> forecast -> assess -> plan -> guard -> execute -> audit.
//!
//! Strategy: collection and execution are async (they talk to the cluster); the decision in
//! between (forecast, the plugin calls, the guard) is synchronous CPU work that runs for all
//! due policies in one plugin `Session`, so each plugin is instantiated once per tick and
//! reused across workloads, off the async worker's cooperative slot (`block_in_place`). A
//! policy whose stage fails gets an error record and no action; the others go on.

use crate::config::{ForecastMethod, GuardSpec, Policy};
use crate::domain::{Action, Forecast, Proposal, Risk, Workload};
use crate::forecast::{self, ForecastError, Forecaster, LastValue, OnnxModel, Row};
use crate::metrics::{History, MetricSource, Observation, SourceError, WorkloadSource};
use crate::telemetry::{ActionLabels, ErrorLabels, ForecastLabels, MetricLabels, ModelLabels, PolicyLabels, ReloadLabels, ReloadResultLabels, RuleLabels, Telemetry};
use crate::plugins::bindings::ForecastInput;
use crate::plugins::{Plugins, RuleSettings, Session, Settings, World, plugin_name};
use crate::reload::{Kind, Update};
use crate::remediation::audit::{self, AuditLog, ForecastRecord, Record, ReloadRecord, RiskRecord, Verdict};
use crate::remediation::guard;
use crate::remediation::state::{self, GuardState};
use crate::remediation::Executor;
use anyhow::bail;
use std::cell::OnceCell;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

/// One policy with everything it keeps between ticks.
pub struct PolicyRuntime {
    pub policy: Policy,
    forecaster: Arc<dyn Forecaster>,
    fallback: Box<dyn Forecaster>,
    histories: BTreeMap<String, History>,
    risk_settings: Vec<Settings>,
    remediation_settings: Vec<Settings>,
    guard_state: GuardState,
    audit_path: PathBuf,
    next_due: Option<SystemTime>,
    /// Build the readable per-rule summary lines (only when someone reads them).
    summarize: bool,
}

impl PolicyRuntime {
    /// Prepares a policy: its forecaster, its plugins (compiled and type-checked now), its
    /// settings (checked by each plugin) and, with `resume`, its saved guard state (a new
    /// simulation starts its clock afresh, so it starts with an empty state).
    pub fn new(policy: Policy, plugins: &Plugins, audit_override: Option<&Path>, resume: bool) -> anyhow::Result<Self> {
        let forecaster = forecaster_for(&policy)?;
        let fallback = forecast::baseline(policy.forecast.fallback, policy.forecast.season);
        let problems = check_plugins(&policy, plugins);
        if !problems.is_empty() {
            bail!("{}: {} problem(s) with its plugins:\n  - {}", policy.source.display(), problems.len(), problems.join("\n  - "));
        }
        let audit_path = audit_override.map(Path::to_path_buf).unwrap_or_else(|| policy.audit_path.clone());
        let guard_state = if resume { load_state(&audit_path, &policy.name)? } else { GuardState::default() };
        let histories = policy.metrics.iter().map(|m| (m.name.clone(), History::new(policy.forecast.window))).collect();
        let risk_settings = policy.risks.iter().map(|r| RuleSettings::with_limits(r.settings.clone(), r.limits)).collect();
        let remediation_settings = policy.remediations.iter().map(|r| RuleSettings::with_limits(r.settings.clone(), r.limits)).collect();
        Ok(Self { policy, forecaster, fallback, histories, risk_settings, remediation_settings, guard_state, audit_path, next_due: None, summarize: false })
    }

    /// The audit log this policy appends to.
    pub fn audit_path(&self) -> &Path {
        &self.audit_path
    }

    /// Takes an observation into the histories without deciding (offline passes).
    pub fn observe_offline(&mut self, observation: &Observation) {
        self.observe(observation);
    }

    /// One tick of this policy alone, offline: takes the observation, forecasts, assesses,
    /// plans and guards (the offline anomaly pass). Nothing is executed or written.
    pub fn decide_offline(&mut self, plugins: &Plugins, observation: &Observation, workload: &Workload, now: SystemTime, force_dry_run: bool) -> Decision {
        self.observe(observation);
        let forecasts = forecast_all(std::slice::from_ref(self), &[0]).pop().unwrap_or_default();
        let mut session = plugins.session();
        self.decide(&mut session, observation, workload, forecasts, now, force_dry_run)
    }

    /// Takes a tick's observation into the histories.
    fn observe(&mut self, observation: &Observation) {
        for (metric, value) in &observation.values {
            if let Some(history) = self.histories.get_mut(metric) {
                history.push(*value);
            }
        }
    }

    /// The rows this policy needs forecast, each a list of metrics read together: a joint
    /// model's inputs in one row, otherwise one row per metric a risk rule watches.
    fn forecast_rows(&self) -> Vec<Vec<String>> {
        match self.forecaster.joint_inputs() {
            Some(inputs) => vec![inputs.to_vec()],
            None => {
                let metrics: std::collections::BTreeSet<&String> = self.policy.risks.iter().map(|r| &r.metric).collect();
                metrics.into_iter().map(|m| vec![m.clone()]).collect()
            }
        }
    }

    fn history(&self, metric: &str) -> &[f64] {
        self.histories.get(metric).map(History::values).unwrap_or_default()
    }

    /// Assesses, plans and guards one tick from the tick's forecasts (see `forecast_all`).
    /// Records come back in order; those with an action to run carry it in `Decision::pending`.
    pub fn decide(&mut self, session: &mut Session<'_>, observation: &Observation, workload: &Workload, forecasts: Forecasts, now: SystemTime, force_dry_run: bool) -> Decision {
        let mut decision = Decision::default();
        let base = RecordBase { policy: &self.policy, observation, now, built: OnceCell::new() };
        let mut assessed: BTreeMap<String, (ForecastRecord, RiskRecord)> = BTreeMap::new();
        for (i, rule) in self.policy.risks.iter().enumerate() {
            let metric = self.policy.metrics.iter().find(|m| m.name == rule.metric).expect("validated: risk metrics exist");
            let history = self.histories.get(&rule.metric).expect("one history per metric").values();
            let primary = forecasts.get(&rule.metric).cloned().unwrap_or_else(|| Err(ForecastError::too_short(self.forecaster.name(), 1, 0)));
            let Some((forecast, fallback)) = with_fallback(primary, &*self.fallback, history, &self.policy) else {
                decision.push_error(base.get(), "collect", format!("no value yet for metric `{}`", rule.metric));
                continue;
            };
            let input = ForecastInput { target: &self.policy.target, metric: &metric.name, unit: &metric.unit, history, forecast: &forecast, replicas: workload.replicas, ready_replicas: workload.ready_replicas };
            let started = std::time::Instant::now();
            let assessed_risk = session.assess(&rule.plugin, &self.risk_settings[i], &input);
            decision.plugin_calls.push((PluginCall::Assess(i), started.elapsed()));
            match assessed_risk {
                Ok(risk) => {
                    if self.summarize {
                        decision.summary.push(summary(&rule.name, history, &forecast, &metric.unit, &risk));
                    }
                    let forecast = ForecastRecord { metric: metric.name.clone(), forecast, fallback };
                    assessed.insert(rule.name.clone(), (forecast, RiskRecord { rule: rule.name.clone(), plugin: plugin_name(&rule.plugin), risk }));
                }
                Err(e) => decision.push_error(base.get(), "assess", e.to_string()),
            }
        }
        for (i, rule) in self.policy.remediations.iter().enumerate() {
            let Some((forecast, risk)) = assessed.get(&rule.risk) else { continue };
            let started = std::time::Instant::now();
            let planned = session.plan(&rule.plugin, &self.remediation_settings[i], &risk.risk, rule.trigger, workload);
            decision.plugin_calls.push((PluginCall::Plan(i), started.elapsed()));
            let proposals = match planned {
                Ok(proposals) => proposals,
                Err(e) => {
                    decision.push_error(base.get(), "plan", e.to_string());
                    continue;
                }
            };
            let seen = self.histories.get(&forecast.metric).map_or(0, |h| h.values().len());
            for proposal in proposals {
                let mut record = base.get().clone();
                record.forecast = Some(forecast.clone());
                record.risk = Some(risk.clone());
                record.remediation = Some(rule.name.clone());
                if let Some(reason) = guard::warming_up(&self.policy.guard, &forecast.metric, seen) {
                    record.verdict = Some(Verdict::Rejected);
                    record.reason = reason;
                    record.proposal = Some(proposal);
                    decision.records.push(record);
                    continue;
                }
                if let Some(reason) = guard::granted(&rule.capabilities, &proposal) {
                    record.verdict = Some(Verdict::Rejected);
                    record.reason = reason;
                    record.proposal = Some(proposal);
                    decision.records.push(record);
                    continue;
                }
                guard_one(&self.policy.guard, &mut self.guard_state, &mut decision, record, proposal, workload, now, force_dry_run);
            }
        }
        (decision.forecasts, decision.risks) = assessed.into_values().unzip();
        decision
    }
}

/// The part of an audit record that every record of a policy's tick shares, built on first
/// use: most ticks record nothing, and the hot path should not format times for them.
struct RecordBase<'a> {
    policy: &'a Policy,
    observation: &'a Observation,
    now: SystemTime,
    built: OnceCell<Record>,
}

impl RecordBase<'_> {
    fn get(&self) -> &Record {
        self.built.get_or_init(|| record_base(self.policy, self.observation, self.now))
    }
}

fn record_base(policy: &Policy, observation: &Observation, now: SystemTime) -> Record {
    Record {
        time: audit::timestamp(now),
        policy: policy.name.clone(),
        target: policy.target.to_string(),
        observed: observation.values.clone(),
        forecast: None,
        risk: None,
        remediation: None,
        proposal: None,
        allowed: None,
        verdict: None,
        reason: String::new(),
        result: None,
        error_stage: None,
        reload: None,
    }
}

/// Puts one proposal before the guard and records the verdict; allowed actions become pending.
#[allow(clippy::too_many_arguments)]
fn guard_one(spec: &GuardSpec, guard_state: &mut GuardState, decision: &mut Decision, mut record: Record, proposal: Proposal, workload: &Workload, now: SystemTime, force_dry_run: bool) {
    let verdict = guard::check(spec, force_dry_run, &proposal, workload, guard_state, now);
    let (action, note, dry_run) = match verdict {
        guard::Verdict::Reject { reason } => {
            record.verdict = Some(Verdict::Rejected);
            record.reason = reason;
            record.proposal = Some(proposal);
            decision.records.push(record);
            return;
        }
        guard::Verdict::Execute { action, note } => (action, note, false),
        guard::Verdict::DryRun { action, note } => (action, note, true),
    };
    // Count it now, so that a second proposal of this tick sees the cooldown.
    guard_state.record(guard::cooldown_key(&action, workload), now);
    decision.state_changed = true;
    record.reason = note.unwrap_or_else(|| "allowed by the guard".into());
    if action != proposal.action {
        record.allowed = Some(Proposal { action: action.clone(), reason: proposal.reason.clone() });
    }
    record.proposal = Some(proposal);
    decision.pending.push(Pending { record: decision.records.len(), action, dry_run });
    decision.records.push(record);
}

/// The outcome of `PolicyRuntime::decide`.
#[derive(Debug, Default)]
pub struct Decision {
    pub records: Vec<Record>,
    /// Actions the guard allowed, pointing into `records`.
    pub pending: Vec<Pending>,
    /// One readable line per risk rule: the forecast and the risk.
    pub summary: Vec<String>,
    /// The forecast each risk rule assessed, with the fallback note when one served.
    pub forecasts: Vec<ForecastRecord>,
    /// The risk of each rule, beside `forecasts`.
    pub risks: Vec<RiskRecord>,
    /// Each plugin call: the plugin, `assess` or `plan`, and how long it took.
    pub plugin_calls: Vec<(PluginCall, std::time::Duration)>,
    state_changed: bool,
}

/// A plugin call of a tick, by the index of its rule (named only when exported, so the
/// decision path allocates nothing for it).
#[derive(Debug, Clone, Copy)]
pub enum PluginCall {
    /// `assess` by `policy.risks[i]`.
    Assess(usize),
    /// `plan` by `policy.remediations[i]`.
    Plan(usize),
}

/// An action to run and the record it belongs to.
#[derive(Debug)]
pub struct Pending {
    pub record: usize,
    pub action: Action,
    pub dry_run: bool,
}

impl Decision {
    fn push_error(&mut self, base: &Record, stage: &'static str, reason: String) {
        let mut record = base.clone();
        record.error_stage = Some(stage);
        record.reason = reason;
        self.records.push(record);
    }
}

/// Counts of one tick, for the run loop and tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TickCounts {
    pub executed: usize,
    pub dry_run: usize,
    pub rejected: usize,
    pub failed: usize,
    pub errors: usize,
}

/// Every policy, the plugins, and the seams to the cluster.
pub struct Engine {
    plugins: Arc<Plugins>,
    metrics: Arc<dyn MetricSource>,
    workloads: Arc<dyn WorkloadSource>,
    executor: Arc<dyn Executor>,
    policies: Vec<PolicyRuntime>,
    audits: BTreeMap<PathBuf, AuditLog>,
    force_dry_run: bool,
    echo: bool,
    telemetry: Option<Arc<Telemetry>>,
    /// The forecaster last reported per (policy, metric), to retire its info series.
    forecaster_in_use: BTreeMap<(String, String), String>,
    /// New versions of policies and plugins from the reloader, applied between two ticks.
    updates: Option<tokio::sync::mpsc::UnboundedReceiver<Update>>,
}

impl Engine {
    pub fn new(plugins: Arc<Plugins>, metrics: Arc<dyn MetricSource>, workloads: Arc<dyn WorkloadSource>, executor: Arc<dyn Executor>, policies: Vec<PolicyRuntime>, force_dry_run: bool) -> anyhow::Result<Self> {
        let mut audits = BTreeMap::new();
        for p in &policies {
            if !audits.contains_key(&p.audit_path) {
                audits.insert(p.audit_path.clone(), AuditLog::open(&p.audit_path)?);
            }
        }
        let mut engine = Self { plugins, metrics, workloads, executor, policies, audits, force_dry_run, echo: false, telemetry: None, forecaster_in_use: BTreeMap::new(), updates: None };
        engine.set_echo(true);
        Ok(engine)
    }

    /// Exports each tick's values, forecasts, risks, verdicts and timings to `telemetry`.
    pub fn set_telemetry(&mut self, telemetry: Arc<Telemetry>) {
        for runtime in &self.policies {
            telemetry.reload_ok.get_or_create(&ReloadLabels { kind: "policy".into(), name: runtime.policy.name.clone() }).set(1);
            // Counters start at 0, so that the first action or error shows as an increase.
            let policy = &runtime.policy.name;
            for kind in &runtime.policy.guard.allowed_actions {
                for verdict in ["executed", "dry-run", "rejected", "failed"] {
                    let _ = telemetry.actions.get_or_create(&ActionLabels { policy: policy.clone(), kind: kind.as_str().into(), verdict: verdict.into() });
                }
            }
            for stage in ["collect", "stale", "workload", "forecast", "assess", "plan"] {
                let _ = telemetry.errors.get_or_create(&ErrorLabels { policy: policy.clone(), stage: stage.into() });
            }
            let plugins = runtime.policy.risks.iter().map(|r| &r.plugin).chain(runtime.policy.remediations.iter().map(|r| &r.plugin));
            for plugin in plugins {
                telemetry.reload_ok.get_or_create(&ReloadLabels { kind: "plugin".into(), name: plugin_name(plugin) }).set(1);
            }
        }
        for kind in [Kind::Policy, Kind::Plugin] {
            for result in ["reloaded", "rejected", "removed"] {
                let _ = telemetry.reloads.get_or_create(&ReloadResultLabels { kind: kind.as_str().into(), result: result.into() });
            }
        }
        self.telemetry = Some(telemetry);
    }

    /// Takes new versions of policies and plugins from a `Reloader` (see `reload`): they are
    /// applied at the start of the next tick, never during one.
    pub fn set_updates(&mut self, updates: tokio::sync::mpsc::UnboundedReceiver<Update>) {
        self.updates = Some(updates);
    }

    /// Applies what the reloader sent since the last tick: a policy's new runtime replaces the
    /// old one (keeping the history of every metric whose definition is unchanged, the guard
    /// state and the schedule), a new one is added and warm-started, a deleted one stops.
    /// Every outcome is written to the audit of the policies it concerns and counted.
    pub async fn apply_updates(&mut self, now: SystemTime) {
        let Some(updates) = self.updates.as_mut() else { return };
        let mut pending = Vec::new();
        while let Ok(update) = updates.try_recv() {
            pending.push(update);
        }
        for update in pending {
            match update {
                Update::Policy { file, runtime, digest } => {
                    let name = runtime.policy.name.clone();
                    let index = self.adopt(&file, *runtime);
                    self.reload_outcome(Kind::Policy, &name, &[index], &file, "reloaded", Some(digest), None, now);
                    self.warm_start_one(index, now).await;
                }
                Update::Removed { file } => {
                    if let Some(i) = self.policy_from(&file) {
                        let name = self.policies[i].policy.name.clone();
                        self.reload_outcome(Kind::Policy, &name, &[i], &file, "removed", None, None, now);
                        self.policies.remove(i);
                    }
                }
                Update::Plugin { file, digest } => {
                    let users = self.users_of(&file);
                    self.reload_outcome(Kind::Plugin, &plugin_name(&file), &users, &file, "reloaded", Some(digest), None, now);
                }
                Update::Rejected { kind, file, reason } => {
                    let (name, users) = match kind {
                        Kind::Plugin => (plugin_name(&file), self.users_of(&file)),
                        Kind::Policy => match self.policy_from(&file) {
                            Some(i) => (self.policies[i].policy.name.clone(), vec![i]),
                            None => (plugin_name(&file), Vec::new()),
                        },
                    };
                    self.reload_outcome(kind, &name, &users, &file, "rejected", None, Some(reason), now);
                }
            }
        }
    }

    /// Puts a reloaded policy in place of the one from the same file (or adds it); returns
    /// its index.
    fn adopt(&mut self, file: &Path, mut runtime: PolicyRuntime) -> usize {
        runtime.summarize = self.echo;
        if !self.audits.contains_key(&runtime.audit_path) {
            match AuditLog::open(&runtime.audit_path) {
                Ok(log) => {
                    self.audits.insert(runtime.audit_path.clone(), log);
                }
                Err(e) => tracing::error!("{e:#}"),
            }
        }
        let Some(i) = self.policy_from(file) else {
            self.policies.push(runtime);
            return self.policies.len() - 1;
        };
        let old = &mut self.policies[i];
        for metric in &runtime.policy.metrics {
            let unchanged = old.policy.metrics.iter().any(|m| m == metric) && old.policy.forecast.window == runtime.policy.forecast.window;
            if unchanged && let (Some(kept), Some(history)) = (old.histories.remove(&metric.name), runtime.histories.get_mut(&metric.name)) {
                *history = kept;
            }
        }
        if old.policy.name == runtime.policy.name {
            runtime.guard_state = std::mem::take(&mut old.guard_state);
        }
        runtime.next_due = old.next_due;
        *old = runtime;
        i
    }

    /// The index of the policy read from `file`.
    fn policy_from(&self, file: &Path) -> Option<usize> {
        let key = crate::reload::normal(file);
        self.policies.iter().position(|p| crate::reload::normal(&p.policy.source) == key)
    }

    /// Indices of the policies that use a plugin file.
    fn users_of(&self, file: &Path) -> Vec<usize> {
        let key = crate::reload::normal(file);
        (0..self.policies.len())
            .filter(|&i| {
                let p = &self.policies[i].policy;
                p.risks.iter().map(|r| &r.plugin).chain(p.remediations.iter().map(|r| &r.plugin)).any(|f| crate::reload::normal(f) == key)
            })
            .collect()
    }

    /// Logs, counts and audits one reload outcome.
    #[allow(clippy::too_many_arguments)]
    fn reload_outcome(&mut self, kind: Kind, name: &str, policies: &[usize], file: &Path, outcome: &'static str, sha256: Option<String>, rejected: Option<String>, now: SystemTime) {
        if let Some(t) = &self.telemetry {
            let labels = ReloadLabels { kind: kind.as_str().into(), name: name.to_string() };
            match outcome {
                "removed" => {
                    t.reload_ok.remove(&labels);
                }
                _ => {
                    t.reload_ok.get_or_create(&labels).set(i64::from(rejected.is_none()));
                }
            }
            t.reloads.get_or_create(&ReloadResultLabels { kind: kind.as_str().into(), result: outcome.into() }).inc();
        }
        let reason = match (&rejected, outcome) {
            (Some(reason), _) => format!("{} {} rejected, the previous version keeps running: {reason}", kind.as_str(), file.display()),
            (None, "removed") => format!("policy file {} deleted; this policy stops", file.display()),
            (None, _) => format!("{} {} reloaded (sha256 {}); serving from this tick", kind.as_str(), file.display(), sha256.as_deref().map_or("?", |d| &d[..12.min(d.len())])),
        };
        for &i in policies {
            let runtime = &self.policies[i];
            let mut record = record_base(&runtime.policy, &Observation::default(), now);
            record.reason = reason.clone();
            record.error_stage = rejected.is_some().then_some("reload");
            record.reload = Some(ReloadRecord { kind: kind.as_str(), file: file.display().to_string(), outcome, sha256: sha256.clone() });
            if self.echo {
                println!("{}", audit::line(&record));
            }
            if let Some(log) = self.audits.get_mut(&runtime.audit_path) {
                if let Err(e) = log.write(&record).and_then(|()| log.flush()) {
                    tracing::error!("{e:#}");
                }
            }
        }
    }

    /// The warm start of one policy: the metrics whose history is empty (new ones) are filled
    /// from the source's past, where it has one.
    async fn warm_start_one(&mut self, i: usize, now: SystemTime) {
        let runtime = &mut self.policies[i];
        if runtime.histories.values().all(|h| !h.values().is_empty()) {
            return;
        }
        let end = now.checked_sub(runtime.policy.interval).unwrap_or(now);
        match self.metrics.backfill(&runtime.policy, runtime.policy.forecast.window, end).await {
            Ok(series) => {
                for (metric, values) in series {
                    if let Some(history) = runtime.histories.get_mut(&metric).filter(|h| h.values().is_empty()) {
                        values.iter().for_each(|v| history.push(*v));
                    }
                }
            }
            Err(e) => tracing::warn!(policy = %runtime.policy.name, "warm start after reload failed ({e}); the history fills tick by tick"),
        }
    }

    /// Print readable lines to stdout (on by default).
    pub fn set_echo(&mut self, echo: bool) {
        self.echo = echo;
        for runtime in &mut self.policies {
            runtime.summarize = echo;
        }
    }

    pub fn policies(&self) -> &[PolicyRuntime] {
        &self.policies
    }

    /// When the next policy is due.
    pub fn next_due(&self) -> Option<SystemTime> {
        self.policies.iter().filter_map(|p| p.next_due).min()
    }

    /// The warm start: refills each policy's history from its metric source's past (up to a
    /// window of points, one per interval, ending one interval before `now`), so that the
    /// first tick can forecast and act instead of waiting a window's worth of intervals.
    /// Returns, per policy, the points filled per metric; a source without history (the
    /// simulator) fills nothing, and a failure leaves the history to fill tick by tick.
    pub async fn warm_start(&mut self, now: SystemTime) -> Vec<(String, BTreeMap<String, usize>)> {
        let mut report = Vec::new();
        for runtime in &mut self.policies {
            let end = now.checked_sub(runtime.policy.interval).unwrap_or(now);
            match self.metrics.backfill(&runtime.policy, runtime.policy.forecast.window, end).await {
                Ok(series) => {
                    let mut filled = BTreeMap::new();
                    for (metric, values) in series {
                        if let Some(history) = runtime.histories.get_mut(&metric) {
                            history.clear();
                            values.iter().for_each(|v| history.push(*v));
                            filled.insert(metric, history.values().len());
                        }
                    }
                    tracing::info!(policy = %runtime.policy.name, "warm start: {filled:?} points");
                    report.push((runtime.policy.name.clone(), filled));
                }
                Err(e) => tracing::warn!(policy = %runtime.policy.name, "warm start failed ({e}); the history fills tick by tick"),
            }
        }
        report
    }

    /// Runs one tick of every policy that is due at `now`.
    pub async fn tick(&mut self, now: SystemTime) -> TickCounts {
        self.apply_updates(now).await;
        let started = std::time::Instant::now();
        let due: Vec<usize> = (0..self.policies.len()).filter(|i| self.policies[*i].next_due.is_none_or(|t| t <= now)).collect();
        let mut inputs = Vec::with_capacity(due.len());
        for &i in &due {
            let policy = &self.policies[i].policy;
            let collected = tokio::join!(self.metrics.collect(policy), self.workloads.workload(policy));
            self.export_collection(policy, &collected);
            inputs.push(match collected {
                (Ok(observation), Ok(mut workload)) => {
                    observation.fill_pod_usage(policy, &mut workload);
                    Ok((observation, workload))
                }
                (Err(e), _) | (_, Err(e)) => Err(e.to_string()),
            });
        }
        let decisions = self.decide_all(&due, inputs, now).await;
        let mut counts = TickCounts::default();
        for (&i, mut decision) in due.iter().zip(decisions) {
            self.execute(i, &mut decision).await;
            self.export_decision(i, &decision);
            self.finish(i, decision, now, &mut counts);
        }
        if let Some(t) = &self.telemetry {
            t.tick.observe(started.elapsed().as_secs_f64());
            t.set_ready();
        }
        counts
    }

    fn export_collection(&self, policy: &Policy, collected: &(Result<Observation, SourceError>, Result<Workload, SourceError>)) {
        let Some(t) = &self.telemetry else { return };
        let stale = t.data_stale.get_or_create(&PolicyLabels { policy: policy.name.clone() });
        match collected {
            (Ok(observation), Ok(_)) => {
                stale.set(0);
                for (metric, value) in &observation.values {
                    t.observed.get_or_create(&MetricLabels { policy: policy.name.clone(), metric: metric.clone() }).set(*value);
                }
                for (metric, age) in &observation.ages {
                    t.data_age.get_or_create(&MetricLabels { policy: policy.name.clone(), metric: metric.clone() }).set(*age);
                }
            }
            (metrics, workload) => {
                stale.set(1);
                let stage = match (metrics, workload) {
                    (Err(SourceError::Stale { .. }), _) => "stale",
                    (Err(_), _) => "collect",
                    _ => "workload",
                };
                t.errors.get_or_create(&ErrorLabels { policy: policy.name.clone(), stage: stage.into() }).inc();
            }
        }
    }

    fn export_decision(&mut self, i: usize, decision: &Decision) {
        let Some(t) = &self.telemetry else { return };
        let spec = &self.policies[i].policy;
        let policy = &spec.name;
        for (call, took) in &decision.plugin_calls {
            let (plugin, name) = match *call {
                PluginCall::Assess(r) => (&spec.risks[r].plugin, "assess"),
                PluginCall::Plan(r) => (&spec.remediations[r].plugin, "plan"),
            };
            t.plugin_call(&plugin_name(plugin), name, *took);
        }
        for record in &decision.forecasts {
            let f = &record.forecast;
            let bands = [("p10", f.lower.as_ref()), ("p50", Some(&f.predicted)), ("p90", f.upper.as_ref())];
            for (quantile, values) in bands {
                for (step, value) in values.into_iter().flatten().enumerate() {
                    let labels = ForecastLabels { policy: policy.clone(), metric: record.metric.clone(), step: (step + 1).to_string(), quantile: quantile.into() };
                    t.forecast.get_or_create(&labels).set(*value);
                }
            }
            let key = (policy.clone(), record.metric.clone());
            if let Some(previous) = self.forecaster_in_use.insert(key, f.forecaster.clone())
                && previous != f.forecaster
            {
                t.forecaster.remove(&ModelLabels { policy: policy.clone(), metric: record.metric.clone(), forecaster: previous });
            }
            t.forecaster.get_or_create(&ModelLabels { policy: policy.clone(), metric: record.metric.clone(), forecaster: f.forecaster.clone() }).set(1);
        }
        for risk in &decision.risks {
            let labels = RuleLabels { policy: policy.clone(), rule: risk.rule.clone() };
            t.risk_score.get_or_create(&labels).set(risk.risk.score);
            t.risk_level.get_or_create(&labels).set(risk.risk.level as i64);
        }
        for record in &decision.records {
            if let (Some(verdict), Some(proposal)) = (record.verdict, &record.proposal) {
                let verdict = match verdict {
                    Verdict::Executed => "executed",
                    Verdict::DryRun => "dry-run",
                    Verdict::Rejected => "rejected",
                    Verdict::Failed => "failed",
                };
                t.actions.get_or_create(&ActionLabels { policy: policy.clone(), kind: proposal.action.kind().as_str().into(), verdict: verdict.into() }).inc();
            } else if let Some(stage) = record.error_stage.filter(|s| *s != "collect") {
                t.errors.get_or_create(&ErrorLabels { policy: policy.clone(), stage: stage.into() }).inc();
            }
        }
    }

    /// Forecasts every due policy (one batch per forecaster) and decides, on a blocking
    /// thread: model inference and plugin calls are CPU work that must not hold an async
    /// worker. The policies travel to that thread and back.
    async fn decide_all(&mut self, due: &[usize], inputs: Vec<Result<(Observation, Workload), String>>, now: SystemTime) -> Vec<Decision> {
        let (plugins, force_dry_run) = (self.plugins.clone(), self.force_dry_run);
        let mut policies = std::mem::take(&mut self.policies);
        let due_owned = due.to_vec();
        let work = move || {
            let decisions = decide_blocking(&plugins, &mut policies, &due_owned, &inputs, now, force_dry_run);
            (policies, decisions)
        };
        let (policies, decisions) = match tokio::task::spawn_blocking(work).await {
            Ok(done) => done,
            Err(e) => std::panic::resume_unwind(e.into_panic()),
        };
        self.policies = policies;
        decisions
    }

    async fn execute(&self, i: usize, decision: &mut Decision) {
        let policy = &self.policies[i].policy;
        for pending in &decision.pending {
            let record = &mut decision.records[pending.record];
            let reason = record.proposal.as_ref().map(|p| p.reason.as_str()).unwrap_or_default();
            match self.executor.execute(&policy.target, &pending.action, pending.dry_run, reason).await {
                Ok(result) => {
                    record.verdict = Some(if pending.dry_run { Verdict::DryRun } else { Verdict::Executed });
                    record.result = Some(result);
                }
                Err(e) => {
                    record.verdict = Some(Verdict::Failed);
                    record.result = Some(e.to_string());
                }
            }
        }
    }

    fn finish(&mut self, i: usize, decision: Decision, now: SystemTime, counts: &mut TickCounts) {
        let runtime = &mut self.policies[i];
        runtime.next_due = Some(now + runtime.policy.interval);
        if decision.state_changed
            && let Err(e) = save_state(&runtime.audit_path, &runtime.policy.name, &runtime.guard_state)
        {
            tracing::error!(policy = %runtime.policy.name, "{e:#}");
        }
        if self.echo {
            for line in &decision.summary {
                println!("{} {} {line}", audit::timestamp(now), runtime.policy.name);
            }
        }
        let audit = self.audits.get_mut(&runtime.audit_path).expect("an audit log per path");
        for record in &decision.records {
            match (record.verdict, record.error_stage) {
                (Some(Verdict::Executed), _) => counts.executed += 1,
                (Some(Verdict::DryRun), _) => counts.dry_run += 1,
                (Some(Verdict::Rejected), _) => counts.rejected += 1,
                (Some(Verdict::Failed), _) => counts.failed += 1,
                (None, _) => counts.errors += 1,
            }
            if self.echo && (record.verdict.is_some() || record.error_stage.is_some()) {
                println!("{}", audit::line(record));
            }
            if let Err(e) = audit.write(record) {
                tracing::error!("{e:#}");
            }
        }
        if let Err(e) = audit.flush() {
            tracing::error!("{e:#}");
        }
    }
}

/// The forecasts of one policy's tick, by metric.
pub type Forecasts = BTreeMap<String, Result<Forecast, ForecastError>>;

/// One tick's decisions for the due policies (`inputs[k]` belongs to `policies[due[k]]`).
pub fn decide_blocking(plugins: &Plugins, policies: &mut [PolicyRuntime], due: &[usize], inputs: &[Result<(Observation, Workload), String>], now: SystemTime, force_dry_run: bool) -> Vec<Decision> {
    let ready: Vec<usize> = due.iter().zip(inputs).filter(|(_, input)| input.is_ok()).map(|(&i, _)| i).collect();
    for (&i, input) in due.iter().zip(inputs) {
        if let Ok((observation, _)) = input {
            policies[i].observe(observation);
        }
    }
    let mut forecasts = forecast_all(policies, &ready).into_iter();
    let mut session = plugins.session();
    due.iter()
        .zip(inputs)
        .map(|(&i, input)| match input {
            Ok((observation, workload)) => {
                let forecasts = forecasts.next().expect("one forecast set per ready policy");
                policies[i].decide(&mut session, observation, workload, forecasts, now, force_dry_run)
            }
            Err(reason) => {
                let mut decision = Decision::default();
                decision.push_error(&record_base(&policies[i].policy, &Observation::default(), now), "collect", reason.clone());
                decision
            }
        })
        .collect()
}

/// Forecasts the rows of every listed policy, one `forecast_batch` call per forecaster
/// (policies naming the same model share it, so one inference serves them all) and horizon.
pub fn forecast_all(policies: &[PolicyRuntime], ready: &[usize]) -> Vec<Forecasts> {
    /// (forecaster identity, horizon, step) -> the forecaster and its (slot, metrics) rows.
    type Groups = BTreeMap<(usize, usize, u32), (Arc<dyn Forecaster>, Vec<(usize, Vec<String>)>)>;
    let mut groups = Groups::new();
    for (slot, &i) in ready.iter().enumerate() {
        let runtime = &policies[i];
        let spec = &runtime.policy.forecast;
        let key = (Arc::as_ptr(&runtime.forecaster) as *const () as usize, spec.horizon, spec.step.as_secs() as u32);
        let entry = groups.entry(key).or_insert_with(|| (runtime.forecaster.clone(), Vec::new()));
        entry.1.extend(runtime.forecast_rows().into_iter().map(|metrics| (slot, metrics)));
    }
    let mut out: Vec<Forecasts> = vec![Forecasts::new(); ready.len()];
    for ((_, horizon, step), (forecaster, jobs)) in groups {
        let rows: Vec<Row<'_>> = jobs.iter().map(|(slot, metrics)| metrics.iter().map(|m| policies[ready[*slot]].history(m)).collect()).collect();
        let results = forecaster.forecast_batch(&rows, horizon, step);
        for ((slot, metrics), result) in jobs.into_iter().zip(results) {
            match result {
                Ok(channels) => out[slot].extend(metrics.into_iter().zip(channels.into_iter().map(Ok))),
                Err(e) => out[slot].extend(metrics.into_iter().map(|m| (m, Err(e.clone())))),
            }
        }
    }
    out
}

/// The policy's forecaster: a baseline, or its model (loaded once per process, checked
/// against its card and the policy).
pub fn forecaster_for(policy: &Policy) -> anyhow::Result<Arc<dyn Forecaster>> {
    match &policy.forecast.method {
        ForecastMethod::Baseline(baseline) => Ok(Arc::from(forecast::baseline(*baseline, policy.forecast.season))),
        ForecastMethod::Model(path) => match OnnxModel::shared(path) {
            Ok(model) => Ok(model),
            Err(e) => bail!("{}: forecast.model: {e}", policy.source.display()),
        },
    }
}

/// Compiles and type-checks every plugin of a policy and asks each to check its settings.
/// Returns every problem found (a plugin that does not load, a bad setting), one line each,
/// prefixed with the rule's field path.
pub fn check_plugins(policy: &Policy, plugins: &Plugins) -> Vec<String> {
    let mut problems = Vec::new();
    let rules = policy.risks.iter().enumerate().map(|(i, r)| (format!("risks[{i}]"), &r.plugin, &r.settings, r.limits, World::Risk));
    let remediations = policy.remediations.iter().enumerate().map(|(i, r)| (format!("remediations[{i}]"), &r.plugin, &r.settings, r.limits, World::Remediation));
    for (path, plugin, settings, limits, world) in rules.chain(remediations) {
        match plugins.check_settings(plugin, world, &RuleSettings::with_limits(settings.clone(), limits)) {
            Ok(found) => problems.extend(found.into_iter().map(|p| format!("{path}.settings: {p}"))),
            Err(e) => problems.push(format!("{path}.plugin: {e}")),
        }
    }
    problems
}

/// The forecaster's forecast, or the fallback's when it could not serve (too little
/// history, a failed model, a value that is not finite), or the last value's when neither
/// could; the second item says why, for the audit. `None` with no history at all.
fn with_fallback(primary: Result<Forecast, ForecastError>, fallback: &dyn Forecaster, history: &[f64], policy: &Policy) -> Option<(Forecast, Option<String>)> {
    let (horizon, step) = (policy.forecast.horizon, policy.forecast.step.as_secs() as u32);
    let e = match primary {
        Ok(forecast) => return Some((forecast, None)),
        Err(e) => e,
    };
    match fallback.forecast(history, horizon, step) {
        Ok(f) => Some((f, Some(format!("{e}; used {}", fallback.name())))),
        Err(e2) => LastValue.forecast(history, horizon, step).ok().map(|f| (f, Some(format!("{e}; {e2}; used last-value")))),
    }
}

fn summary(rule: &str, history: &[f64], forecast: &Forecast, unit: &str, risk: &Risk) -> String {
    let current = history.last().copied().unwrap_or(f64::NAN);
    let peak = forecast.predicted.iter().copied().fold(f64::MIN, f64::max);
    let minutes = forecast.predicted.len() as u32 * forecast.step_seconds / 60;
    let (scale, unit) = if unit == "bytes" { (1.0 / 1_048_576.0, "MiB") } else { (1.0, unit) };
    let bounds = match (&forecast.lower, &forecast.upper) {
        (Some(lower), Some(upper)) => format!(" [p10 {:.2} .. p90 {:.2}]", scale * lower.last().unwrap_or(&0.0), scale * upper.iter().copied().fold(f64::MIN, f64::max)),
        _ => String::new(),
    };
    let (current, peak) = (current * scale, peak * scale);
    let mut line = format!("{rule}: now {current:.2} {unit}, next {minutes}m peak {peak:.2}{bounds} ({}) -> risk {}", forecast.forecaster, risk.level);
    if risk.level >= crate::domain::Level::Medium {
        line.push_str(&format!(": {}", risk.reason));
    }
    line
}

type StateFile = BTreeMap<String, GuardState>;

fn load_state(audit_path: &Path, policy: &str) -> anyhow::Result<GuardState> {
    let mut file: StateFile = state::load(&state::state_path(audit_path))?;
    Ok(file.remove(policy).unwrap_or_default())
}

/// Saves one policy's state into the state file it shares with the other policies of the
/// same audit log.
fn save_state(audit_path: &Path, policy: &str, guard_state: &GuardState) -> anyhow::Result<()> {
    let path = state::state_path(audit_path);
    let mut file: StateFile = state::load(&path).unwrap_or_default();
    file.insert(policy.to_string(), guard_state.clone());
    state::save(&path, &file)
}
