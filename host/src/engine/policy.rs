//! One policy at run time: its forecaster, the history of each metric, its plugins'
//! settings, its guard state and its schedule, and `decide`, which takes a tick's forecasts
//! through the risk plugins, the remediation plugins and the guard.
//!
//! A policy never executes, writes or exports anything: `decide` returns the records and the
//! actions the guard allowed, and the engine carries them out.

use super::Forecasts;
use super::record::LazyHead;
use crate::config::{ForecastMethod, Policy, Problem};
use crate::domain::{Action, Forecast, Risk, Workload};
use crate::forecast::gate::{Lineup, Served};
use crate::forecast::{self, ForecastError, Forecaster, OnnxModel};
use crate::metrics::{History, Observation};
use crate::plugins::bindings::ForecastInput;
use crate::plugins::{Plugins, RuleSettings, Session, Settings, World, plugin_name};
use crate::remediation::audit::{ActionRecord, ErrorRecord, ForecastRecord, Record, RiskRecord, Stage, Verdict};
use crate::remediation::guard::{self, Case};
use crate::remediation::state::GuardState;
use anyhow::bail;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

/// One policy with everything it keeps between ticks.
pub struct PolicyRuntime {
    pub policy: Policy,
    pub(super) forecaster: Arc<dyn Forecaster>,
    pub(super) histories: BTreeMap<String, History>,
    risk_settings: Vec<Settings>,
    remediation_settings: Vec<Settings>,
    pub(super) guard_state: GuardState,
    pub(super) audit_path: PathBuf,
    pub(super) next_due: Option<SystemTime>,
    /// Build the readable per-rule summary lines (only when someone reads them).
    pub(super) summarize: bool,
    /// The metrics whose newest point was not trusted this tick, with why (see `observe`).
    untrusted: BTreeMap<String, String>,
    /// The pods' start-up time last measured (pods that started long ago may be gone).
    startup_seen: Option<u64>,
    /// When the newest history point was taken: the histories hold one point per forecast
    /// step, and the ticks between (an interval shorter than the step) only update the
    /// current reading (see `observe`).
    pub(super) point_at: Option<SystemTime>,
    /// The forecasts made at the newest point, which the ticks until the next point reuse.
    pub(super) kept_forecasts: Option<Forecasts>,
    /// Per metric a risk rule watches: every forecaster that could serve it, scored on what
    /// then happened, each one's interval calibrated per step, and the choice of the one that
    /// serves (`forecast::gate`).
    lineups: BTreeMap<String, Lineup>,
    /// Per metric: what the lineup served at its newest point (with the gate's point count),
    /// which the ticks until the next point reuse.
    served: BTreeMap<String, (u64, Served)>,
}

/// Points of a metric's recent history that judge whether a drop to zero is believable.
const TRUST_WINDOW: usize = 10;

/// The inputs of one policy's decision in a tick.
pub struct Tick<'a> {
    pub observation: &'a Observation,
    pub workload: &'a Workload,
    pub now: SystemTime,
    /// The CLI's `--dry-run`.
    pub force_dry_run: bool,
}

impl PolicyRuntime {
    /// Prepares a policy: its forecaster, its plugins (compiled and type-checked now), its
    /// settings (checked by each plugin) and, with `resume`, its saved guard state (a new
    /// simulation starts its clock afresh, so it starts with an empty state).
    pub fn new(policy: Policy, plugins: &Plugins, audit_override: Option<&Path>, resume: bool) -> anyhow::Result<Self> {
        let forecaster = forecaster_for(&policy)?;
        let problems = check_plugins(&policy, plugins);
        if !problems.is_empty() {
            let lines: Vec<String> = problems.iter().map(ToString::to_string).collect();
            bail!("{}: {} problem(s) with its plugins:\n  - {}", policy.source.display(), problems.len(), lines.join("\n  - "));
        }
        let audit_path = audit_override.map(Path::to_path_buf).unwrap_or_else(|| policy.audit_path.clone());
        let guard_state = if resume { super::record::load_state(&audit_path, &policy.name)? } else { GuardState::default() };
        // The forecaster may read further back than its window (a model's seasonal context).
        let kept = history_used(&*forecaster, &policy.forecast);
        let histories = policy.metrics.iter().map(|m| (m.name.clone(), History::new(kept))).collect();
        let risk_settings = policy.risks.iter().map(|r| RuleSettings::with_limits(r.settings.clone(), r.limits)).collect();
        let remediation_settings = policy.remediations.iter().map(|r| RuleSettings::with_limits(r.settings.clone(), r.limits)).collect();
        let spec = &policy.forecast;
        let lineups = policy
            .risks
            .iter()
            .map(|r| (r.metric.clone(), Lineup::new(forecaster.name(), forecast::baseline(spec.fallback, spec.season), spec.season, spec.gate, spec.calibrate)))
            .collect();
        Ok(Self { policy, forecaster, histories, risk_settings, remediation_settings, guard_state, audit_path, next_due: None, summarize: false, untrusted: BTreeMap::new(), startup_seen: None, point_at: None, kept_forecasts: None, lineups, served: BTreeMap::new() })
    }

    /// The most linear memory one of this policy's plugin calls may take (its rules' largest
    /// `limits.memory`; the host's default for a rule that sets none): its calls run one after
    /// another, so this is what its decision can hold at once.
    pub fn guest_memory(&self) -> usize {
        let rules = self.policy.risks.iter().map(|r| r.limits).chain(self.policy.remediations.iter().map(|r| r.limits));
        rules.map(|l| l.unwrap_or_default().memory_bytes).max().unwrap_or(0)
    }

    /// The pods' start-up time the rules size for: the policy's `target.startup`, else the
    /// last measured from the workload's pods.
    pub fn startup_seconds(&self) -> Option<u32> {
        self.policy.startup.map(|s| s.as_secs() as u32).or(self.startup_seen.map(|s| s.min(u64::from(u32::MAX)) as u32))
    }

    /// The audit log this policy appends to.
    pub fn audit_path(&self) -> &Path {
        &self.audit_path
    }

    /// Takes an observation into the histories without deciding (offline passes, where
    /// each observation is one step's point).
    pub fn observe_offline(&mut self, observation: &Observation) {
        self.take(observation, true);
    }

    /// One tick of this policy alone, offline: takes the observation, forecasts, assesses,
    /// plans and guards (the offline anomaly pass). Nothing is executed or written.
    pub fn decide_offline(&mut self, plugins: &Plugins, tick: &Tick<'_>) -> Decision {
        self.take(tick.observation, true);
        let forecasts = super::forecasts::forecast_all(std::slice::from_ref(self), &[0]).pop().unwrap_or_default();
        let mut session = plugins.session();
        self.decide(&mut session, tick, forecasts)
    }

    /// Takes a tick's observation at `now` into the histories. The histories hold one point
    /// per forecast step, as the forecaster reads them: a tick a step (less half an interval)
    /// after the newest point adds a point and asks for new forecasts; a tick within the step
    /// (an interval shorter than the step) only updates the current reading, so that the
    /// rules see the newest usage every interval while the step's forecasts stand.
    pub(super) fn observe(&mut self, observation: &Observation, now: SystemTime) {
        let half = self.policy.interval / 2;
        let new_point = self.point_at.is_none_or(|at| now.duration_since(at).map_or(true, |since| since + half >= self.policy.forecast.step));
        if new_point {
            self.point_at = Some(now);
            self.kept_forecasts = None;
        }
        self.take(observation, new_point);
    }

    /// Takes an observation into the histories (as a new point, or as the current reading
    /// within the newest point's step), except the values that cannot be trusted: a metric
    /// that was not collected this tick, or a resource metric (`cores`, `bytes`) that reads
    /// zero or less where its recent points were above zero (running pods always use some
    /// CPU and memory: such a zero is an outage or a collection gap read as zeros, not a
    /// load). Those are left out and remembered for `decide`, which holds the rules that
    /// watch them.
    fn take(&mut self, observation: &Observation, new_point: bool) {
        self.untrusted.clear();
        for metric in &self.policy.metrics {
            let Some(history) = self.histories.get_mut(&metric.name) else { continue };
            let Some(&value) = observation.values.get(&metric.name) else {
                if !history.values().is_empty() {
                    self.untrusted.insert(metric.name.clone(), "no value was collected this tick (a collection gap)".into());
                }
                continue;
            };
            let usage = metric.unit == "cores" || metric.unit == "bytes";
            if usage && value <= 0.0 {
                let recent = history.values();
                let mut recent = recent[recent.len().saturating_sub(TRUST_WINDOW)..].to_vec();
                if let Some(median) = forecast::median(&mut recent).filter(|m| *m > 0.0) {
                    self.untrusted.insert(
                        metric.name.clone(),
                        format!("read {value} {} after a median of {median:.3} over its last {} points: treated as missing (an outage or a collection gap read as zeros)", metric.unit, recent.len()),
                    );
                    continue;
                }
            }
            if new_point {
                history.push(value);
                if let Some(lineup) = self.lineups.get_mut(&metric.name) {
                    lineup.observe(value);
                }
            } else {
                history.note_between(value);
            }
        }
    }

    /// Points of each metric's past a warm start fetches: what the forecaster reads (its window,
    /// or as far back as a model's seasonal context reaches), or what the skill gate needs to
    /// rehearse its contenders (with Holt-Winters' two seasons before).
    pub(super) fn history_wanted(&self) -> usize {
        let used = self.history_used();
        self.lineups.values().map(|l| l.history_wanted(used)).fold(used, usize::max)
    }

    /// Points of history the policy's forecaster reads at its step.
    fn history_used(&self) -> usize {
        history_used(&*self.forecaster, &self.policy.forecast)
    }

    /// A metric's history was refilled (a warm start) with `values`, oldest first: the
    /// forecasts still waiting for their points would be scored against other points, so they
    /// are dropped (what the gate learned stays), and the seasonal baselines start from them.
    pub(super) fn history_refilled(&mut self, metric: &str, values: &[f64]) {
        self.served.remove(metric);
        let spec = &self.policy.forecast;
        let primary = self.forecaster.joint_inputs().is_none().then_some(&*self.forecaster);
        if let Some(lineup) = self.lineups.get_mut(metric) {
            lineup.refilled(values, primary, spec.window, spec.horizon, spec.step.as_secs() as u32);
        }
    }

    /// The rows this policy needs forecast, each a list of metrics read together: a joint
    /// model's inputs in one row, otherwise one row per metric a risk rule watches.
    pub(super) fn forecast_rows(&self) -> Vec<Vec<String>> {
        match self.forecaster.joint_inputs() {
            Some(inputs) => vec![inputs.to_vec()],
            None => {
                let metrics: std::collections::BTreeSet<&String> = self.policy.risks.iter().map(|r| &r.metric).collect();
                metrics.into_iter().map(|m| vec![m.clone()]).collect()
            }
        }
    }

    /// A metric's history points, one per forecast step, oldest first (what the forecaster reads).
    pub fn history(&self, metric: &str) -> &[f64] {
        self.histories.get(metric).map(History::values).unwrap_or_default()
    }

    /// A metric's newest reading: the newest point, or a reading taken since within its step.
    pub fn reading(&self, metric: &str) -> Option<f64> {
        self.histories.get(metric).and_then(History::newest)
    }

    /// When the forecasts the rules read were made: at the newest point.
    pub fn forecasts_made_at(&self) -> Option<SystemTime> {
        self.kept_forecasts.as_ref().and(self.point_at)
    }

    /// A metric's skill gate: its contenders' skill and the one chosen (none for a metric no
    /// risk rule watches).
    pub fn gate(&self, metric: &str) -> Option<&forecast::gate::Gate> {
        self.lineups.get(metric).map(Lineup::gate)
    }

    /// Each watched metric's contenders forecast at a new point (the policy forecaster's from
    /// the tick's batch) and the gate chooses; the ticks until the next point reuse it.
    fn serve(&mut self, forecasts: &Forecasts) {
        let (horizon, step, window) = (self.policy.forecast.horizon, self.policy.forecast.step.as_secs() as u32, self.policy.forecast.window);
        for (metric, lineup) in &mut self.lineups {
            let points = lineup.gate().points();
            if self.untrusted.contains_key(metric) || self.served.get(metric).is_some_and(|(at, _)| *at == points) {
                continue;
            }
            let Some(history) = self.histories.get(metric) else { continue };
            let primary = forecasts.get(metric).cloned().unwrap_or_else(|| Err(ForecastError::too_short(self.forecaster.name(), 1, 0)));
            match lineup.issue(primary, newest(history.values(), window), horizon, step) {
                Some(served) => {
                    self.served.insert(metric.clone(), (points, served));
                }
                None => {
                    self.served.remove(metric);
                }
            }
        }
    }

    /// Assesses, plans and guards one tick from the tick's forecasts (see `forecast_all`).
    /// Records come back in order; those with an action to run carry it in `Decision::pending`.
    pub fn decide(&mut self, session: &mut Session<'_>, tick: &Tick<'_>, forecasts: Forecasts) -> Decision {
        let mut decision = Decision { scaler: Some(tick.workload.scaler()), ..Decision::default() };
        self.serve(&forecasts);
        let head = LazyHead::new(&self.policy, tick.observation, tick.now);
        if self.policy.startup.is_none()
            && let Some(measured) = tick.workload.startup_seconds()
        {
            self.startup_seen = Some(measured);
        }
        let assessed = self.assess(session, tick, &head, &mut decision);
        // The workload as this tick's allowed actions leave it: each later proposal (and each
        // later rule's plan) is judged against it, not against the picture before them. It is
        // copied only when a proposal comes after an allowed action (`pending[applied..]`).
        let mut projected = std::borrow::Cow::Borrowed(tick.workload);
        let mut applied = 0;
        let mut catch_up = |projected: &mut std::borrow::Cow<'_, Workload>, pending: &[Pending]| {
            for p in &pending[applied..] {
                projected.to_mut().after(&p.action);
            }
            applied = pending.len();
        };
        for (i, rule) in self.policy.remediations.iter().enumerate() {
            let Some((forecast, risk)) = assessed.get(&rule.risk) else { continue };
            catch_up(&mut projected, &decision.pending);
            let started = std::time::Instant::now();
            let planned = session.plan(&rule.plugin, &self.remediation_settings[i], &risk.risk, rule.trigger, &projected);
            decision.plugin_calls.push((PluginCall::Plan(i), started.elapsed()));
            let proposals = match planned {
                Ok(proposals) => proposals,
                Err(e) => {
                    decision.push_error(head.get(), Stage::Plan, e.to_string());
                    continue;
                }
            };
            let seen = self.histories.get(&forecast.metric).map_or(0, |h| h.values().len());
            for proposal in proposals {
                catch_up(&mut projected, &decision.pending);
                if guard::idle(&self.policy.guard, &proposal, &projected) {
                    continue;
                }
                let case = Case { spec: &self.policy.guard, capabilities: &rule.capabilities, metric: &forecast.metric, seen, workload: &projected, state: &self.guard_state, now: tick.now, force_dry_run: tick.force_dry_run };
                let verdict = guard::judge(&case, &proposal);
                let mut record = ActionRecord { head: head.get().clone(), forecast: forecast.clone(), risk: risk.clone(), remediation: rule.name.clone(), proposal, allowed: None, verdict: None, reason: String::new(), result: None };
                let (action, note, dry_run) = match verdict {
                    guard::Verdict::Reject { reason } => {
                        record.verdict = Some(Verdict::Rejected);
                        record.reason = reason;
                        decision.records.push(Record::Action(Box::new(record)));
                        continue;
                    }
                    guard::Verdict::Execute { action, note } => (action, note, false),
                    guard::Verdict::DryRun { action, note } => (action, note, true),
                };
                // Counted now, so that a second proposal of this tick sees the cooldown; counted
                // again from when the change lands (see `Engine::execute`).
                let cooldown_key = guard::cooldown_key(&action, &projected);
                self.guard_state.record(cooldown_key, tick.now);
                decision.state_changed = true;
                record.reason = note.unwrap_or_else(|| "allowed by the guard".into());
                if action != record.proposal.action {
                    record.allowed = Some(crate::domain::Proposal { action: action.clone(), reason: record.proposal.reason.clone() });
                }
                decision.pending.push(Pending { record: decision.records.len(), action, dry_run, seen_replicas: projected.replicas, cooldown_key });
                decision.records.push(Record::Action(Box::new(record)));
            }
        }
        (decision.forecasts, decision.risks) = assessed.into_values().unzip();
        decision
    }

    /// Each risk rule's assessment of its metric's served forecast, by rule name.
    fn assess(&self, session: &mut Session<'_>, tick: &Tick<'_>, head: &LazyHead<'_>, decision: &mut Decision) -> BTreeMap<String, (ForecastRecord, RiskRecord)> {
        let mut assessed = BTreeMap::new();
        for (i, rule) in self.policy.risks.iter().enumerate() {
            let metric = self.policy.metrics.iter().find(|m| m.name == rule.metric).expect("validated: risk metrics exist");
            if let Some(why) = self.untrusted.get(&rule.metric) {
                // Hold: no assessment, so no remediation of this risk acts on a point that is not there.
                decision.push_error(head.get(), Stage::Collect, format!("metric `{}`: {why}; holding: risk `{}` and its remediations skip this tick", rule.metric, rule.name));
                continue;
            }
            let history = self.histories.get(&rule.metric).expect("one history per metric").current(self.policy.forecast.window);
            let history = &*history;
            let Some((_, served)) = self.served.get(&rule.metric) else {
                decision.push_error(head.get(), Stage::Collect, format!("no value yet for metric `{}`", rule.metric));
                continue;
            };
            let forecast = &served.forecast;
            let input = ForecastInput {
                target: &self.policy.target,
                metric: &metric.name,
                unit: &metric.unit,
                history,
                forecast,
                replicas: tick.workload.replicas,
                ready_replicas: tick.workload.ready_replicas,
                interval_seconds: self.policy.interval.as_secs() as u32,
                startup_seconds: self.startup_seconds(),
            };
            let started = std::time::Instant::now();
            let assessed_risk = session.assess(&rule.plugin, &self.risk_settings[i], &input);
            decision.plugin_calls.push((PluginCall::Assess(i), started.elapsed()));
            match assessed_risk {
                Ok(risk) => {
                    // Once a step: on the tick that took the step's point.
                    if self.summarize && self.point_at == Some(tick.now) {
                        decision.summary.push(summary(&rule.name, history, forecast, &metric.unit, &risk));
                    }
                    let forecast = ForecastRecord { metric: metric.name.clone(), forecast: forecast.clone(), fallback: served.choice.fallback_note(), gate: Some(served.choice.clone()) };
                    assessed.insert(rule.name.clone(), (forecast, RiskRecord { rule: rule.name.clone(), plugin: plugin_name(&rule.plugin), risk }));
                }
                Err(e) => decision.push_error(head.get(), Stage::Assess, e.to_string()),
            }
        }
        assessed
    }
}

/// The outcome of `PolicyRuntime::decide`.
#[derive(Debug, Default)]
pub struct Decision {
    pub records: Vec<Record>,
    /// Actions the guard allowed, pointing into `records`.
    pub pending: Vec<Pending>,
    /// One readable line per risk rule: the forecast and the risk (on the ticks that add a
    /// history point: once a forecast step).
    pub summary: Vec<String>,
    /// The forecast each risk rule assessed, with the fallback note when one served.
    pub forecasts: Vec<ForecastRecord>,
    /// The risk of each rule, beside `forecasts`.
    pub risks: Vec<RiskRecord>,
    /// Each plugin call: the plugin, `assess` or `plan`, and how long it took.
    pub plugin_calls: Vec<(PluginCall, Duration)>,
    /// Who moves the target's replicas, as this tick read the workload (none when it could
    /// not be read).
    pub scaler: Option<crate::domain::Scaler>,
    pub(super) state_changed: bool,
}

impl Decision {
    pub(super) fn push_error(&mut self, head: &crate::remediation::audit::Head, stage: Stage, reason: String) {
        self.records.push(Record::Error(ErrorRecord { head: head.clone(), reason, error_stage: stage }));
    }
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
    /// The replicas the decision saw (the executor writes a scale only while they are there).
    pub seen_replicas: u32,
    /// Where the guard counted it (at the tick's time): moved to when the change lands.
    pub cooldown_key: &'static str,
}

/// Points of history `forecaster` reads at the policy's step: its window, or as far back as a
/// model's seasonal context reaches. The engine keeps that many of each metric.
fn history_used(forecaster: &dyn Forecaster, spec: &crate::config::ForecastSpec) -> usize {
    forecaster.history_used(spec.step.as_secs() as u32).max(spec.window)
}

/// The newest `window` points of a history: what the rules and the simple forecasters see
/// (the history may be kept longer for a model's seasonal context).
fn newest(history: &[f64], window: usize) -> &[f64] {
    &history[history.len().saturating_sub(window)..]
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
/// Returns every problem found (a plugin that does not load, a bad setting), each at the
/// rule's field path.
pub fn check_plugins(policy: &Policy, plugins: &Plugins) -> Vec<Problem> {
    let mut problems = Vec::new();
    let rules = policy.risks.iter().enumerate().map(|(i, r)| (format!("risks[{i}]"), &r.plugin, &r.settings, r.limits, World::Risk));
    let remediations = policy.remediations.iter().enumerate().map(|(i, r)| (format!("remediations[{i}]"), &r.plugin, &r.settings, r.limits, World::Remediation));
    for (path, plugin, settings, limits, world) in rules.chain(remediations) {
        match plugins.check_settings(plugin, world, &RuleSettings::with_limits(settings.clone(), limits)) {
            Ok(found) => problems.extend(found.into_iter().map(|p| p.under(&path))),
            Err(e) => problems.push(Problem::plugin(&path, &e)),
        }
    }
    problems
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
