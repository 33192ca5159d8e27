//! What the engine receives between two ticks: new versions of policies and plugins from the
//! reloader (`Update`, a message type that belongs here, its receiver, so that the reloader
//! depends on the engine and never the other way round), how they are applied, and the warm
//! start that fills a policy's history from its metric source's past.
//!
//! Updates are applied at the start of a tick, never during one. Nothing here reads a file
//! or compiles a plugin: the reloader did that before it sent the update.

use super::{Engine, PolicyRuntime};
use crate::config::normal;
use crate::metrics::Observation;
use crate::plugins::plugin_name;
use crate::remediation::audit::{AuditLog, FileKind, Record, ReloadEntry, ReloadOutcome, ReloadRecord, Stage};
use crate::telemetry::{ReloadLabels, ReloadResultLabels};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

/// What a reload found, for the engine to apply between two ticks.
pub enum Update {
    /// A policy file's new version, loaded and checked. `file` is as the engine knows it.
    Policy { file: PathBuf, runtime: Box<PolicyRuntime>, digest: String },
    /// A policy file was deleted: its policy stops.
    Removed { file: PathBuf },
    /// A plugin's new version is published (and serves from the next tick).
    Plugin { file: PathBuf, digest: String },
    /// A file's new version was refused; the previous version keeps running.
    Rejected { kind: FileKind, file: PathBuf, reason: String },
}

impl std::fmt::Debug for Update {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Update::Policy { file, digest, .. } => write!(f, "Policy({}, {digest})", file.display()),
            Update::Removed { file } => write!(f, "Removed({})", file.display()),
            Update::Plugin { file, digest } => write!(f, "Plugin({}, {digest})", file.display()),
            Update::Rejected { kind, file, reason } => write!(f, "Rejected({}, {}: {reason})", kind.as_str(), file.display()),
        }
    }
}

/// Which metrics a warm start fills.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WarmStart {
    /// Every metric, replacing what its history holds (at start).
    Every,
    /// Only metrics whose history is empty (new ones, after a reload).
    EmptyOnly,
}

/// One reload outcome, as the engine logs, counts and audits it.
struct Outcome<'a> {
    kind: FileKind,
    name: &'a str,
    file: &'a Path,
    outcome: ReloadOutcome,
    sha256: Option<String>,
    /// Why the new version was refused.
    rejected: Option<String>,
}

impl Engine {
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
                    // What the old version exported and the new one does not (a metric, a
                    // rule, forecast steps, a renamed policy's every series) leaves /metrics.
                    if let Some(i) = self.policy_from(&file) {
                        let keep = super::record::series_of(&runtime, &self.forecaster_in_use);
                        super::record::forget_series(self.telemetry.as_deref(), &mut self.forecaster_in_use, &self.policies[i], &keep);
                    }
                    let index = self.adopt(&file, *runtime);
                    self.reload_outcome(&[index], Outcome { kind: FileKind::Policy, name: &name, file: &file, outcome: ReloadOutcome::Reloaded, sha256: Some(digest), rejected: None }, now);
                    self.warm_start_policy(index, now, WarmStart::EmptyOnly).await;
                }
                Update::Removed { file } => {
                    if let Some(i) = self.policy_from(&file) {
                        let name = self.policies[i].policy.name.clone();
                        self.reload_outcome(&[i], Outcome { kind: FileKind::Policy, name: &name, file: &file, outcome: ReloadOutcome::Removed, sha256: None, rejected: None }, now);
                        let gone = self.policies.remove(i);
                        if let Some(reports) = &self.reports {
                            reports.forget(&gone.policy.source);
                        }
                        super::record::forget_series(self.telemetry.as_deref(), &mut self.forecaster_in_use, &gone, &Default::default());
                    }
                }
                Update::Plugin { file, digest } => {
                    let users = self.users_of(&file);
                    let name = plugin_name(&file);
                    self.reload_outcome(&users, Outcome { kind: FileKind::Plugin, name: &name, file: &file, outcome: ReloadOutcome::Reloaded, sha256: Some(digest), rejected: None }, now);
                }
                Update::Rejected { kind, file, reason } => {
                    let (name, users) = match kind {
                        FileKind::Plugin => (plugin_name(&file), self.users_of(&file)),
                        FileKind::Policy => match self.policy_from(&file) {
                            Some(i) => (self.policies[i].policy.name.clone(), vec![i]),
                            None => (plugin_name(&file), Vec::new()),
                        },
                    };
                    self.reload_outcome(&users, Outcome { kind, name: &name, file: &file, outcome: ReloadOutcome::Rejected, sha256: None, rejected: Some(reason) }, now);
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
            let spacing = old.policy.forecast.window == runtime.policy.forecast.window && old.policy.forecast.step == runtime.policy.forecast.step;
            let unchanged = spacing && old.policy.metrics.iter().any(|m| m == metric);
            if unchanged && let (Some(kept), Some(history)) = (old.histories.remove(&metric.name), runtime.histories.get_mut(&metric.name)) {
                *history = kept;
            }
        }
        if old.policy.name == runtime.policy.name {
            runtime.guard_state = std::mem::take(&mut old.guard_state);
        }
        runtime.next_due = old.next_due;
        runtime.point_at = old.point_at;
        *old = runtime;
        i
    }

    /// The index of the policy read from `file`.
    fn policy_from(&self, file: &Path) -> Option<usize> {
        let key = normal(file);
        self.policies.iter().position(|p| normal(&p.policy.source) == key)
    }

    /// Indices of the policies that use a plugin file.
    fn users_of(&self, file: &Path) -> Vec<usize> {
        let key = normal(file);
        (0..self.policies.len())
            .filter(|&i| {
                let p = &self.policies[i].policy;
                p.risks.iter().map(|r| &r.plugin).chain(p.remediations.iter().map(|r| &r.plugin)).any(|f| normal(f) == key)
            })
            .collect()
    }

    /// Logs, counts and audits one reload outcome for the policies it concerns.
    fn reload_outcome(&mut self, policies: &[usize], o: Outcome<'_>, now: SystemTime) {
        if let Some(t) = &self.telemetry {
            let labels = ReloadLabels { kind: o.kind.as_str().into(), name: o.name.to_string() };
            match o.outcome {
                ReloadOutcome::Removed => {
                    t.reload_ok.remove(&labels);
                }
                ReloadOutcome::Reloaded | ReloadOutcome::Rejected => {
                    t.reload_ok.get_or_create(&labels).set(i64::from(o.rejected.is_none()));
                }
            }
            t.reloads.get_or_create(&ReloadResultLabels { kind: o.kind.as_str().into(), result: o.outcome.as_str().into() }).inc();
        }
        let (kind, file) = (o.kind.as_str(), o.file.display());
        let reason = match (&o.rejected, o.outcome) {
            (Some(reason), _) => format!("{kind} {file} rejected, the previous version keeps running: {reason}"),
            (None, ReloadOutcome::Removed) => format!("policy file {file} deleted; this policy stops"),
            (None, ReloadOutcome::Reloaded | ReloadOutcome::Rejected) => format!("{kind} {file} reloaded (sha256 {}); serving from this tick", o.sha256.as_deref().map_or("?", |d| &d[..12.min(d.len())])),
        };
        let reload = ReloadRecord { kind: o.kind, file: file.to_string(), outcome: o.outcome, sha256: o.sha256.clone() };
        let error_stage = o.rejected.is_some().then_some(Stage::Reload);
        self.record_for(policies, |policy| Record::Reload(ReloadEntry { head: super::record::head(policy, &Observation::default(), now), reason: reason.clone(), error_stage, reload: reload.clone() }));
    }

    /// The warm start: refills each policy's history from its metric source's past (one point
    /// per forecast step, ending a step before `now`: the window, and what the skill gate
    /// rehearses its contenders on, after two seasons for Holt-Winters), so that the first
    /// tick can forecast and act with judged forecasters instead of waiting for them.
    /// Returns, per policy, the points filled per metric; a source without history (the
    /// simulator) fills nothing, and a failure leaves the history to fill tick by tick.
    pub async fn warm_start(&mut self, now: SystemTime) -> Vec<(String, BTreeMap<String, usize>)> {
        // All policies' pasts in one call: a source may read copies of a policy together.
        let asks: Vec<(&crate::config::Policy, usize, SystemTime)> = self.policies.iter().map(|r| (&r.policy, r.history_wanted(), warm_end(&r.policy, now))).collect();
        let pasts = self.seams.metrics.backfill_all(&asks).await;
        let mut report = Vec::new();
        for (i, past) in pasts.into_iter().enumerate() {
            if let Some(filled) = self.refill(i, past, WarmStart::Every) {
                report.push((self.policies[i].policy.name.clone(), filled));
            }
        }
        report
    }

    /// The warm start of one policy; the points filled per metric, or `None` when nothing was
    /// asked of the source or it failed.
    async fn warm_start_policy(&mut self, i: usize, now: SystemTime, which: WarmStart) -> Option<BTreeMap<String, usize>> {
        let runtime = &self.policies[i];
        if which == WarmStart::EmptyOnly && runtime.histories.values().all(|h| !h.values().is_empty()) {
            return None;
        }
        let past = self.seams.metrics.backfill(&runtime.policy, runtime.history_wanted(), warm_end(&runtime.policy, now)).await;
        self.refill(i, past, which)
    }

    /// Fills policy `i`'s histories with its past, as `which` says.
    fn refill(&mut self, i: usize, past: Result<BTreeMap<String, Vec<f64>>, crate::metrics::SourceError>, which: WarmStart) -> Option<BTreeMap<String, usize>> {
        let runtime = &mut self.policies[i];
        let series = match past {
            Ok(series) => series,
            Err(e) => {
                tracing::warn!(policy = %runtime.policy.name, "warm start failed ({e}); the history fills tick by tick");
                return None;
            }
        };
        let mut filled = BTreeMap::new();
        runtime.point_at = None;
        runtime.kept_forecasts = None;
        for (metric, values) in series {
            let Some(history) = runtime.histories.get_mut(&metric) else { continue };
            match which {
                WarmStart::Every => history.clear(),
                WarmStart::EmptyOnly if !history.values().is_empty() => continue,
                WarmStart::EmptyOnly => {}
            }
            values.iter().for_each(|v| history.push(*v));
            filled.insert(metric.clone(), history.values().len());
            runtime.history_refilled(&metric, &values);
        }
        tracing::info!(policy = %runtime.policy.name, "warm start: {filled:?} points");
        Some(filled)
    }
}

/// The newest point of a warm start: a forecast step before the first tick's.
fn warm_end(policy: &crate::config::Policy, now: SystemTime) -> SystemTime {
    now.checked_sub(policy.forecast.step).unwrap_or(now)
}
