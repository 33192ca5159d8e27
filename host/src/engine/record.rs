//! A tick's outputs: the audit records (and their readable lines on stdout), the counts,
//! Augur's own metrics, and the guard state saved after an action.
//!
//! Recording never changes a decision, with one exception that fails closed: an action whose
//! record cannot be written is not executed (`hold_unrecordable`). A write that fails is said
//! once on stderr and in `/metrics`; the policy acts again once its audit takes writes.

use super::{Decision, Engine, PluginCall, PolicyRuntime};
use crate::config::Policy;
use crate::domain::{Level, Workload};
use crate::metrics::{Observation, SourceError};
use crate::plugins::plugin_name;
use crate::remediation::audit::{self, AuditLog, Head, Record, ReloadOutcome, FileKind, Stage, Verdict};
use crate::remediation::state::{self, GuardState};
use crate::telemetry::{ActionLabels, BandLabels, Detail, ErrorLabels, ForecastLabels, MetricLabels, ModelLabels, PolicyLabels, ReloadLabels, ReloadResultLabels, RuleLabels, Series, Telemetry};
use std::cell::OnceCell;
use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

/// Room reserved in the audit per action before it runs: more than a record holds (its
/// texts are capped at 512 characters each, its forecast at the horizon's points).
const RESERVED_PER_ACTION: u64 = 64 << 10;

/// Counts of one tick, for the run loop and tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TickCounts {
    pub executed: usize,
    pub dry_run: usize,
    pub rejected: usize,
    pub failed: usize,
    pub errors: usize,
}

impl TickCounts {
    fn count(&mut self, record: &Record) {
        match record {
            Record::Action(r) => match r.verdict {
                Some(Verdict::Executed) => self.executed += 1,
                Some(Verdict::DryRun) => self.dry_run += 1,
                Some(Verdict::Rejected) => self.rejected += 1,
                // Not carried out as decided (the audit says which and why).
                Some(Verdict::Failed | Verdict::Superseded | Verdict::Unconfirmed) => self.failed += 1,
                None => {}
            },
            Record::Error(_) | Record::Reload(_) => self.errors += 1,
        }
    }
}

/// The head of a policy's records at `now`.
pub fn head(policy: &Policy, observation: &Observation, now: SystemTime) -> Head {
    Head { time: audit::timestamp(now), policy: policy.name.clone(), target: policy.target.to_string(), observed: observation.values.clone() }
}

/// The head that every record of a policy's tick shares, built on first use: most ticks
/// record nothing, and the hot path should not format times for them.
pub struct LazyHead<'a> {
    policy: &'a Policy,
    observation: &'a Observation,
    now: SystemTime,
    built: OnceCell<Head>,
}

impl<'a> LazyHead<'a> {
    pub fn new(policy: &'a Policy, observation: &'a Observation, now: SystemTime) -> Self {
        Self { policy, observation, now, built: OnceCell::new() }
    }

    pub fn get(&self) -> &Head {
        self.built.get_or_init(|| head(self.policy, self.observation, self.now))
    }
}

impl Engine {
    /// Exports each tick's values, forecasts, risks, verdicts and timings to `telemetry`.
    pub fn set_telemetry(&mut self, telemetry: Arc<Telemetry>) {
        for runtime in &self.policies {
            telemetry.reload_ok.get_or_create(&ReloadLabels { kind: FileKind::Policy.as_str().into(), name: runtime.policy.name.clone() }).set(1);
            telemetry.audit_failing.get_or_create(&PolicyLabels { policy: runtime.policy.name.clone() }).set(0);
            let plugins = runtime.policy.risks.iter().map(|r| &r.plugin).chain(runtime.policy.remediations.iter().map(|r| &r.plugin));
            for plugin in plugins {
                telemetry.reload_ok.get_or_create(&ReloadLabels { kind: FileKind::Plugin.as_str().into(), name: plugin_name(plugin) }).set(1);
            }
        }
        for kind in FileKind::ALL {
            for result in ReloadOutcome::ALL {
                let _ = telemetry.reloads.get_or_create(&ReloadResultLabels { kind: kind.as_str().into(), result: result.as_str().into() });
            }
        }
        self.telemetry = Some(telemetry);
        self.announce_series();
    }

    /// With `Detail::Full`, creates each policy's counters at 0, so that the first action or
    /// error shows as an increase: at start, and again on taking the Lease over (a standby
    /// drops them). Within the budget they appear with their first increment instead.
    pub fn announce_series(&self) {
        let Some(telemetry) = &self.telemetry else { return };
        if telemetry.detail != Detail::Full {
            return;
        }
        for runtime in &self.policies {
            let policy = &runtime.policy.name;
            for kind in &runtime.policy.guard.allowed_actions {
                for verdict in Verdict::ALL {
                    let _ = telemetry.actions.get_or_create(&ActionLabels { policy: policy.clone(), kind: kind.as_str().into(), verdict: verdict.as_str().into() });
                }
            }
            for stage in Stage::TICK {
                let _ = telemetry.errors.get_or_create(&ErrorLabels { policy: policy.clone(), stage: stage.as_str().into() });
            }
        }
    }

    /// Drops every policy's series, as a replica does when it stands by: its last values
    /// would read as live ones beside the leader's. Taking the Lease again re-creates them
    /// (the counters from 0: `announce_series`).
    pub fn forget_all_series(&mut self) {
        let Some(t) = &self.telemetry else { return };
        for runtime in &self.policies {
            t.forget(&series_of(runtime, &self.forecaster_in_use));
        }
        self.forecaster_in_use.clear();
    }

    pub(super) fn export_collection(&self, policy: &Policy, collected: &(Result<Observation, SourceError>, Result<Workload, SourceError>)) {
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
                    (Err(SourceError::Stale { .. }), _) => Stage::Stale,
                    (Err(_), _) => Stage::Collect,
                    _ => Stage::Workload,
                };
                t.errors.get_or_create(&ErrorLabels { policy: policy.name.clone(), stage: stage.as_str().into() }).inc();
            }
        }
    }

    pub(super) fn export_decision(&mut self, runtime: &PolicyRuntime, decision: &Decision) {
        let Some(t) = &self.telemetry else { return };
        let spec = &runtime.policy;
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
            for (band, values) in bands {
                let Some(values) = values else { continue };
                if let Some(peak) = values.iter().copied().filter(|v| v.is_finite()).reduce(f64::max) {
                    t.forecast_peak.get_or_create(&BandLabels { policy: policy.clone(), metric: record.metric.clone(), band: band.into() }).set(peak);
                }
                if t.detail == Detail::Full {
                    for (step, value) in values.iter().enumerate() {
                        let labels = ForecastLabels { policy: policy.clone(), metric: record.metric.clone(), step: (step + 1).to_string(), band: band.into() };
                        t.forecast.get_or_create(&labels).set(*value);
                    }
                }
            }
            let key = (policy.clone(), record.metric.clone());
            if let Some(previous) = self.forecaster_in_use.insert(key, f.forecaster.clone())
                && previous != f.forecaster
            {
                t.forecaster.remove(&ModelLabels { policy: policy.clone(), metric: record.metric.clone(), forecaster: previous });
            }
            t.forecaster.get_or_create(&ModelLabels { policy: policy.clone(), metric: record.metric.clone(), forecaster: f.forecaster.clone() }).set(1);
            if let Some(coverage) = runtime.gate(&record.metric).and_then(|g| g.coverage(&f.forecaster)) {
                t.interval_coverage.get_or_create(&MetricLabels { policy: policy.clone(), metric: record.metric.clone() }).set(coverage);
            }
            for standing in record.gate.iter().flat_map(|c| &c.standings).filter(|_| t.detail == Detail::Full) {
                if let Some(ratio) = standing.vs_best_baseline {
                    t.forecast_skill.get_or_create(&ModelLabels { policy: policy.clone(), metric: record.metric.clone(), forecaster: standing.forecaster.clone() }).set(ratio);
                }
            }
        }
        for risk in &decision.risks {
            let labels = RuleLabels { policy: policy.clone(), rule: risk.rule.clone() };
            t.risk_score.get_or_create(&labels).set(risk.risk.score);
            t.risk_level.get_or_create(&labels).set(risk.risk.level as i64);
        }
        for record in &decision.records {
            match record {
                Record::Action(r) => {
                    if let Some(verdict) = r.verdict {
                        t.actions.get_or_create(&ActionLabels { policy: policy.clone(), kind: r.proposal.action.kind().as_str().into(), verdict: verdict.as_str().into() }).inc();
                    }
                }
                // Collection failures were counted when collected.
                Record::Error(r) if r.error_stage != Stage::Collect => {
                    t.errors.get_or_create(&ErrorLabels { policy: policy.clone(), stage: r.error_stage.as_str().into() }).inc();
                }
                Record::Error(_) | Record::Reload(_) => {}
            }
        }
    }

    /// Schedules the policy's next tick, marks its guard state to be saved (at the end of
    /// the tick) when an action changed it, prints the readable lines and appends the records
    /// to its audit log.
    pub(super) fn finish(&mut self, runtime: &mut PolicyRuntime, decision: Decision, now: SystemTime, counts: &mut super::TickCounts) {
        runtime.next_due = Some(now + runtime.policy.interval);
        if decision.state_changed {
            self.states_changed.push(runtime.policy.name.clone());
        }
        if self.echo {
            for line in &decision.summary {
                println!("{} {} {line}", audit::timestamp(now), runtime.policy.name);
            }
        }
        let audit = self.audits.get_mut(&runtime.audit_path).expect("an audit log per path");
        let was_failing = audit.failing();
        let mut first_error = None;
        for record in &decision.records {
            counts.count(record);
            if self.echo && !matches!(record, Record::Action(r) if r.verdict.is_none()) {
                println!("{}", audit::line(record));
            }
            if let Err(e) = audit.write(record) {
                first_error.get_or_insert(e);
            }
        }
        if let Err(e) = audit.flush() {
            first_error.get_or_insert(e);
        }
        self.report_audit(runtime, was_failing, first_error);
        if let Some(reports) = &self.reports {
            reports.update(runtime, &decision, now);
        }
    }

    /// Fail closed on the audit: the actions the guard allowed run only if their records can
    /// be written. When room for them cannot be reserved (a full disk, a quota, a device that
    /// refuses writes), each is turned into a rejection that says why, so this policy stops
    /// acting; it acts again on the first tick its audit takes writes. Stderr says so when
    /// it stops and when it recovers; `/metrics` has `augur_audit_write_failing`.
    pub(super) fn hold_unrecordable(&mut self, runtime: &PolicyRuntime, decision: &mut Decision) {
        if decision.pending.is_empty() {
            return;
        }
        let audit = self.audits.get_mut(&runtime.audit_path).expect("an audit log per path");
        let was_failing = audit.failing();
        let reserved = audit.reserve(RESERVED_PER_ACTION * decision.pending.len() as u64);
        if let Err(e) = &reserved {
            for pending in decision.pending.drain(..) {
                let Record::Action(record) = &mut decision.records[pending.record] else { unreachable!("a pending action points at its action record") };
                record.verdict = Some(Verdict::Rejected);
                record.reason = format!("not executed: its audit record cannot be written ({e:#}), and Augur runs only what it can record; fix: free space for audit.path");
            }
        }
        self.report_audit(runtime, was_failing, reserved.err());
    }

    /// Says on stderr when a policy's audit stops or starts taking writes, and exports
    /// whether it is failing now.
    fn report_audit(&self, runtime: &PolicyRuntime, was_failing: bool, error: Option<anyhow::Error>) {
        let failing = self.audits.get(&runtime.audit_path).is_some_and(AuditLog::failing);
        let policy = &runtime.policy.name;
        match (was_failing, failing, error) {
            (false, true, Some(e)) => tracing::error!(policy = %policy, "{e:#}; policy {policy} executes no action until its audit log can be written again"),
            (false, true, None) => tracing::error!(policy = %policy, "the audit log {} cannot be written; policy {policy} executes no action until it can", runtime.audit_path.display()),
            (true, false, _) => tracing::warn!(policy = %policy, "the audit log {} takes writes again; policy {policy} acts again", runtime.audit_path.display()),
            _ => {}
        }
        if let Some(t) = &self.telemetry {
            t.audit_failing.get_or_create(&PolicyLabels { policy: policy.clone() }).set(i64::from(failing));
        }
    }

    /// Writes one record to the audit log of each listed policy (and its line to stdout).
    pub(super) fn record_for(&mut self, policies: &[usize], record: impl Fn(&Policy) -> Record) {
        for &i in policies {
            let runtime = &self.policies[i];
            let record = record(&runtime.policy);
            if self.echo {
                println!("{}", audit::line(&record));
            }
            if let Some(log) = self.audits.get_mut(&runtime.audit_path)
                && let Err(e) = log.write(&record).and_then(|()| log.flush())
            {
                tracing::error!("{e:#}");
            }
        }
    }
}

type StateFile = BTreeMap<String, GuardState>;

/// The saved guard state of one policy (empty when none was saved).
pub fn load_state(audit_path: &Path, policy: &str) -> anyhow::Result<GuardState> {
    let mut file: StateFile = state::load(&state::state_path(audit_path))?;
    Ok(file.remove(policy).unwrap_or_default())
}

/// Saves the states of `changed` policies, each into the state file it shares with the other
/// policies of the same audit log: each file read and written (atomically, once) however many
/// of its policies changed, so that a thousand policies beside one audit log cost a write a
/// tick, not a thousand.
pub(super) fn save_states<'r>(changed: impl IntoIterator<Item = &'r PolicyRuntime>) {
    let mut files: BTreeMap<PathBuf, Vec<&PolicyRuntime>> = BTreeMap::new();
    for runtime in changed {
        files.entry(state::state_path(&runtime.audit_path)).or_default().push(runtime);
    }
    for (path, runtimes) in files {
        let mut file: StateFile = state::load(&path).unwrap_or_default();
        for runtime in &runtimes {
            file.insert(runtime.policy.name.clone(), runtime.guard_state.clone());
        }
        if let Err(e) = state::save(&path, &file) {
            let names: Vec<&str> = runtimes.iter().map(|r| r.policy.name.as_str()).collect();
            tracing::error!("{e:#} (the guard state of {})", names.join(", "));
        }
    }
}

/// The forecast's bands, as `/metrics` names them.
const BANDS: [&str; 3] = ["p10", "p50", "p90"];

/// Every series `/metrics` may carry for this policy (see `Series`); `in_use`: the forecaster
/// serving each (policy, metric).
pub(super) fn series_of(runtime: &PolicyRuntime, in_use: &BTreeMap<(String, String), String>) -> HashSet<Series> {
    let spec = &runtime.policy;
    let policy = &spec.name;
    let mut out = HashSet::new();
    out.insert(Series::Policy(PolicyLabels { policy: policy.clone() }));
    for kind in crate::domain::ActionKind::ALL {
        for verdict in Verdict::ALL {
            out.insert(Series::Action(ActionLabels { policy: policy.clone(), kind: kind.as_str().into(), verdict: verdict.as_str().into() }));
        }
    }
    for stage in Stage::TICK.into_iter().chain([Stage::Reload]) {
        out.insert(Series::Error(ErrorLabels { policy: policy.clone(), stage: stage.as_str().into() }));
    }
    for rule in &spec.risks {
        out.insert(Series::Rule(RuleLabels { policy: policy.clone(), rule: rule.name.clone() }));
    }
    for metric in &spec.metrics {
        let metric = &metric.name;
        out.insert(Series::Metric(MetricLabels { policy: policy.clone(), metric: metric.clone() }));
        for step in 1..=spec.forecast.horizon {
            for band in BANDS {
                out.insert(Series::Forecast(ForecastLabels { policy: policy.clone(), metric: metric.clone(), step: step.to_string(), band: band.into() }));
            }
        }
        for band in BANDS {
            out.insert(Series::Peak(BandLabels { policy: policy.clone(), metric: metric.clone(), band: band.into() }));
        }
        let contenders = runtime.gate(metric).into_iter().flat_map(|g| g.every_name().map(str::to_string));
        let served = in_use.get(&(policy.clone(), metric.clone())).cloned();
        for forecaster in contenders.chain(served) {
            out.insert(Series::Model(ModelLabels { policy: policy.clone(), metric: metric.clone(), forecaster }));
        }
    }
    out
}

/// Drops `runtime`'s series from `/metrics`: all of them (`keep` empty), or those that its
/// next version (`keep`, that version's `series_of`) does not carry.
pub(super) fn forget_series(telemetry: Option<&Telemetry>, in_use: &mut BTreeMap<(String, String), String>, runtime: &PolicyRuntime, keep: &HashSet<Series>) {
    let Some(t) = telemetry else { return };
    let gone: Vec<Series> = series_of(runtime, in_use).into_iter().filter(|s| !keep.contains(s)).collect();
    t.forget(&gone);
    for s in &gone {
        if let Series::Model(l) = s {
            let key = (l.policy.clone(), l.metric.clone());
            if in_use.get(&key) == Some(&l.forecaster) {
                in_use.remove(&key);
            }
        }
    }
}

/// What each policy last did, by its source: shared with whoever shows it, updated after
/// each of the policy's ticks.
#[derive(Debug, Clone, Default)]
pub struct Reports(Arc<std::sync::Mutex<BTreeMap<PathBuf, PolicyReport>>>);

/// What one policy last did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PolicyReport {
    /// The forecaster that served each watched metric, by metric.
    pub forecasters: BTreeMap<String, String>,
    /// The highest risk of the last tick that assessed one: its rule, level and reason.
    pub risk: Option<(String, Level, String)>,
    /// The last action with a verdict.
    pub last_action: Option<ActionReport>,
    /// Why the guard last held an action back (refused or clamped it), and when; cleared by an
    /// action it let through whole.
    pub limited: Option<(SystemTime, String)>,
    /// Who moves the target's replicas, as last read.
    pub scaler: Option<crate::domain::Scaler>,
}

/// An action and what became of it.
#[derive(Debug, Clone, PartialEq)]
pub struct ActionReport {
    pub time: SystemTime,
    /// The action as proposed, e.g. `scale to 4`.
    pub action: String,
    pub verdict: Verdict,
    /// The guard's reason (and the plugin's).
    pub reason: String,
}

impl Reports {
    /// A copy of every report.
    pub fn snapshot(&self) -> BTreeMap<PathBuf, PolicyReport> {
        self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }

    pub(super) fn forget(&self, source: &Path) {
        self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner).remove(source);
    }

    pub(super) fn update(&self, runtime: &PolicyRuntime, decision: &Decision, now: SystemTime) {
        let mut all = self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let report = all.entry(runtime.policy.source.clone()).or_default();
        if decision.scaler.is_some() {
            report.scaler.clone_from(&decision.scaler);
        }
        for record in &decision.forecasts {
            report.forecasters.insert(record.metric.clone(), record.forecast.forecaster.clone());
        }
        if let Some(top) = decision.risks.iter().max_by_key(|r| r.risk.level as u8) {
            report.risk = Some((top.rule.clone(), top.risk.level, top.risk.reason.clone()));
        }
        for record in &decision.records {
            let Record::Action(r) = record else { continue };
            let Some(verdict) = r.verdict else { continue };
            let held = verdict == Verdict::Rejected || r.allowed.as_ref().is_some_and(|a| a.action != r.proposal.action);
            if held {
                report.limited = Some((now, r.reason.clone()));
            } else if matches!(verdict, Verdict::Executed | Verdict::DryRun) {
                report.limited = None;
            }
            let action = r.allowed.as_ref().unwrap_or(&r.proposal).action.to_string();
            report.last_action = Some(ActionReport { time: now, action, verdict, reason: r.reason.clone() });
        }
    }
}
