//! The audit log: one JSON object per line per decision, appended to the policy's audit file,
//! and a readable line on stdout for a person watching. The fields are documented in the
//! README ("The audit log").
//!
//! The audit only records; it never changes a decision.

use crate::domain::{Forecast, Proposal, Risk};
use anyhow::Context;
use serde::Serialize;
use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

/// The outcome of a decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Verdict {
    /// The guard allowed it and the cluster carried it out.
    Executed,
    /// The guard allowed it as a dry-run: validated, nothing changed.
    DryRun,
    /// The guard refused it; `reason` says why.
    Rejected,
    /// The guard allowed it but the cluster refused or the call failed; `result` says why.
    Failed,
    /// The guard allowed it, but the workload changed before it could be written (an
    /// operator's change wins); nothing was written and the next tick decides again.
    Superseded,
    /// A write was sent, its answer lost, and reading it back failed: it may have landed.
    Unconfirmed,
}

impl Verdict {
    pub const ALL: [Verdict; 6] = [Verdict::Executed, Verdict::DryRun, Verdict::Rejected, Verdict::Failed, Verdict::Superseded, Verdict::Unconfirmed];

    /// The verdict's name in the audit and in /metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Executed => "executed",
            Verdict::DryRun => "dry-run",
            Verdict::Rejected => "rejected",
            Verdict::Failed => "failed",
            Verdict::Superseded => "superseded",
            Verdict::Unconfirmed => "unconfirmed",
        }
    }
}

/// The forecast behind a decision.
#[derive(Debug, Clone, Serialize)]
pub struct ForecastRecord {
    pub metric: String,
    #[serde(flatten)]
    pub forecast: Forecast,
    /// Set when the policy's forecaster could not serve and a simpler one did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fallback: Option<String>,
    /// The skill gate's choice: who serves, why, and every contender's recent skill.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gate: Option<crate::forecast::gate::Choice>,
}

/// The risk behind a decision.
#[derive(Debug, Clone, Serialize)]
pub struct RiskRecord {
    /// The risk rule's name in the policy.
    pub rule: String,
    pub plugin: String,
    #[serde(flatten)]
    pub risk: Risk,
}

/// The stage of a tick (or a reload) that failed, as the audit and /metrics name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Stage {
    /// The metrics could not be collected (or a metric has no value yet).
    Collect,
    /// The metrics are older than the source allows.
    Stale,
    /// The target workload's state could not be read.
    Workload,
    /// The forecaster failed (a fallback served, or none could).
    Forecast,
    /// A risk plugin's `assess` failed.
    Assess,
    /// A remediation plugin's `plan` failed.
    Plan,
    /// A new version of a policy or plugin file was rejected.
    Reload,
}

impl Stage {
    /// Every stage a tick can fail in (a reload is not part of a tick).
    pub const TICK: [Stage; 6] = [Stage::Collect, Stage::Stale, Stage::Workload, Stage::Forecast, Stage::Assess, Stage::Plan];

    /// The stage's name in the audit and in /metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Stage::Collect => "collect",
            Stage::Stale => "stale",
            Stage::Workload => "workload",
            Stage::Forecast => "forecast",
            Stage::Assess => "assess",
            Stage::Plan => "plan",
            Stage::Reload => "reload",
        }
    }
}

impl std::fmt::Display for Stage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What every line of the audit log starts with: when, which policy and target, and what
/// was observed.
#[derive(Debug, Clone, Serialize)]
pub struct Head {
    /// RFC 3339, UTC (simulated time in `--simulate` mode).
    pub time: String,
    pub policy: String,
    pub target: String,
    /// Every metric collected this tick, by name.
    pub observed: BTreeMap<String, f64>,
}

/// One line of the audit log: a proposal and what became of it, a stage that failed, or a
/// live reload. Each serialises as one flat JSON object (the README's "The audit log").
#[derive(Debug, Clone, Serialize)]
#[serde(untagged)]
pub enum Record {
    /// Boxed: it is ten times the size of the other kinds, and most records of a tick are not
    /// actions.
    Action(Box<ActionRecord>),
    Error(ErrorRecord),
    Reload(ReloadEntry),
}

/// A proposal, the guard's verdict on it and, when it ran, what the cluster said.
#[derive(Debug, Clone, Serialize)]
pub struct ActionRecord {
    #[serde(flatten)]
    pub head: Head,
    pub forecast: ForecastRecord,
    pub risk: RiskRecord,
    /// The remediation rule that proposed the action.
    pub remediation: String,
    pub proposal: Proposal,
    /// What the guard allowed, when it changed the proposal (e.g. clamped replicas).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub allowed: Option<Proposal>,
    /// `None` only between the guard's yes and the executor's answer.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub verdict: Option<Verdict>,
    /// Why the guard decided as it did.
    pub reason: String,
    /// What the cluster said it did (or would have done).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub result: Option<String>,
}

/// A stage of a tick that failed: the policy took no action from it.
#[derive(Debug, Clone, Serialize)]
pub struct ErrorRecord {
    #[serde(flatten)]
    pub head: Head,
    /// What failed.
    pub reason: String,
    pub error_stage: Stage,
}

/// What a live reload did to one file, as written for each policy it concerns.
#[derive(Debug, Clone, Serialize)]
pub struct ReloadEntry {
    #[serde(flatten)]
    pub head: Head,
    pub reason: String,
    /// `reload` when the new version was rejected.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error_stage: Option<Stage>,
    pub reload: ReloadRecord,
}

impl Record {
    /// The line's common part.
    pub fn head(&self) -> &Head {
        match self {
            Record::Action(r) => &r.head,
            Record::Error(r) => &r.head,
            Record::Reload(r) => &r.head,
        }
    }
}

/// What a reload did to a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ReloadOutcome {
    /// The new version was accepted and serves from the next tick.
    Reloaded,
    /// The new version was refused; the previous one keeps running.
    Rejected,
    /// The policy file was deleted; its policy stops.
    Removed,
}

impl ReloadOutcome {
    pub const ALL: [ReloadOutcome; 3] = [ReloadOutcome::Reloaded, ReloadOutcome::Rejected, ReloadOutcome::Removed];

    /// The outcome's name in the audit and in /metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            ReloadOutcome::Reloaded => "reloaded",
            ReloadOutcome::Rejected => "rejected",
            ReloadOutcome::Removed => "removed",
        }
    }
}

/// What kind of file a reload is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum FileKind {
    Policy,
    Plugin,
}

impl FileKind {
    pub const ALL: [FileKind; 2] = [FileKind::Policy, FileKind::Plugin];

    /// The kind's name in the audit, in /metrics and in log lines.
    pub fn as_str(self) -> &'static str {
        match self {
            FileKind::Policy => "policy",
            FileKind::Plugin => "plugin",
        }
    }
}

/// What a live reload did to one file.
#[derive(Debug, Clone, Serialize)]
pub struct ReloadRecord {
    pub kind: FileKind,
    pub file: String,
    pub outcome: ReloadOutcome,
    /// SHA-256 of the new version, when it was read.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
}

/// RFC 3339 time with seconds, UTC.
pub fn timestamp(t: SystemTime) -> String {
    humantime::format_rfc3339_seconds(t).to_string()
}

/// An append-only audit file.
pub struct AuditLog {
    path: PathBuf,
    out: BufWriter<File>,
    /// Whether the last write, flush or reservation failed (see `reserve`).
    failing: bool,
}

impl AuditLog {
    /// Opens (creating it and its folder when missing) the file for appending.
    pub fn open(path: &Path) -> anyhow::Result<Self> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).with_context(|| format!("cannot create the audit folder {}", dir.display()))?;
        }
        let file = OpenOptions::new().create(true).append(true).open(path).with_context(|| format!("cannot open the audit log {}", path.display()))?;
        Ok(Self { path: path.to_path_buf(), out: BufWriter::new(file), failing: false })
    }

    /// Appends one record.
    pub fn write(&mut self, record: &Record) -> anyhow::Result<()> {
        let written = serde_json::to_writer(&mut self.out, record).map_err(std::io::Error::from).and_then(|()| self.out.write_all(b"\n"));
        self.failing |= written.is_err();
        written.with_context(|| format!("cannot write the audit log {}", self.path.display()))
    }

    /// Whether the audit cannot be written now: its last write, flush or reservation failed,
    /// and none has succeeded since.
    pub fn failing(&self) -> bool {
        self.failing
    }

    /// Makes sure that `bytes` more of records can be written, before an action they record
    /// is executed (fail closed: an action whose record cannot be written does not run).
    /// What was buffered is flushed, then room is reserved on the disk (`fallocate`, keeping
    /// the file's size), so that a full disk or a quota is found before the action, not
    /// after it. A file system that cannot reserve is trusted on the flush alone; a device
    /// (`/dev/null`, `/dev/full`) is probed with a blank line, the only write that tells.
    pub fn reserve(&mut self, bytes: u64) -> anyhow::Result<()> {
        let reserved = self.try_reserve(bytes);
        self.failing = reserved.is_err();
        reserved
    }

    fn try_reserve(&mut self, bytes: u64) -> anyhow::Result<()> {
        self.flush()?;
        let cannot = || format!("cannot write the audit log {}", self.path.display());
        let file = self.out.get_ref();
        let meta = file.metadata().with_context(cannot)?;
        if !meta.is_file() {
            self.out.write_all(b"\n").with_context(cannot)?;
            return self.flush();
        }
        match rustix::fs::fallocate(file, rustix::fs::FallocateFlags::KEEP_SIZE, meta.len(), bytes) {
            Ok(()) | Err(rustix::io::Errno::OPNOTSUPP | rustix::io::Errno::NOSYS) => Ok(()),
            Err(e) => Err(std::io::Error::from(e)).with_context(cannot),
        }
    }

    /// Flushes buffered records to the file; called at the end of every tick.
    pub fn flush(&mut self) -> anyhow::Result<()> {
        let had = !self.out.buffer().is_empty();
        let flushed = self.out.flush();
        // A flush that wrote something proves the audit takes writes again.
        if flushed.is_err() || had {
            self.failing = flushed.is_err();
        }
        flushed.with_context(|| format!("cannot write the audit log {}", self.path.display()))
    }
}

/// The readable line for a record.
pub fn line(record: &Record) -> String {
    let head = record.head();
    let mut out = format!("{} {}", head.time, head.policy);
    match record {
        Record::Reload(r) => match r.error_stage {
            None => out.push_str(&format!(" RELOAD {} {}: {}", r.reload.kind.as_str(), r.reload.outcome.as_str(), r.reason)),
            Some(stage) => out.push_str(&format!(" ERROR in {stage}: {}", r.reason)),
        },
        Record::Error(r) => out.push_str(&format!(" ERROR in {}: {}", r.error_stage, r.reason)),
        Record::Action(r) => {
            out.push_str(&format!(" [{} {}] {}", r.risk.rule, r.risk.risk.level, r.risk.risk.reason));
            if let Some(verdict) = r.verdict {
                let action = r.allowed.as_ref().unwrap_or(&r.proposal);
                out.push_str(&format!(" => {} {}: {}", verdict.as_str().to_uppercase(), action.action, r.result.as_deref().unwrap_or(&r.reason)));
            }
        }
    }
    // Parts of it came from plugins and the cluster (a proposed pod's name, an API error):
    // one record, one terminal line.
    crate::text::one_line(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{Action, Level};

    fn head() -> Head {
        Head { time: "2026-01-01T00:00:00Z".into(), policy: "nginx".into(), target: "Deployment default/nginx".into(), observed: BTreeMap::from([("cpu".into(), 1.5)]) }
    }

    /// The audit's JSON is the README's format: one flat object per line, with the fields in
    /// the order they had before the record became an enum of its kinds.
    #[test]
    fn each_kind_of_record_keeps_the_audit_format() {
        let forecast = ForecastRecord { metric: "cpu".into(), forecast: Forecast { forecaster: "holt-damped".into(), step_seconds: 60, predicted: vec![2.0], lower: None, upper: None }, fallback: None, gate: None };
        let risk = RiskRecord { rule: "cpu".into(), plugin: "risk-cpu".into(), risk: Risk { level: Level::High, score: 0.9, seconds_to_breach: Some(60), required_replicas: Some(4), reason: "hot".into() } };
        let proposal = Proposal { action: Action::Scale { replicas: 9 }, reason: "surge".into() };
        let allowed = Proposal { action: Action::Scale { replicas: 5 }, reason: "surge".into() };
        let action = Record::Action(Box::new(ActionRecord { head: head(), forecast, risk, remediation: "scale-up".into(), proposal, allowed: Some(allowed), verdict: Some(Verdict::DryRun), reason: "limited".into(), result: Some("would scale".into()) }));
        assert_eq!(
            serde_json::to_string(&action).unwrap(),
            r#"{"time":"2026-01-01T00:00:00Z","policy":"nginx","target":"Deployment default/nginx","observed":{"cpu":1.5},"forecast":{"metric":"cpu","forecaster":"holt-damped","step_seconds":60,"predicted":[2.0]},"risk":{"rule":"cpu","plugin":"risk-cpu","level":"high","score":0.9,"seconds_to_breach":60,"required_replicas":4,"reason":"hot"},"remediation":"scale-up","proposal":{"action":"scale","replicas":9,"reason":"surge"},"allowed":{"action":"scale","replicas":5,"reason":"surge"},"verdict":"dry-run","reason":"limited","result":"would scale"}"#
        );
        let error = Record::Error(ErrorRecord { head: head(), reason: "no value yet".into(), error_stage: Stage::Collect });
        assert_eq!(serde_json::to_string(&error).unwrap(), r#"{"time":"2026-01-01T00:00:00Z","policy":"nginx","target":"Deployment default/nginx","observed":{"cpu":1.5},"reason":"no value yet","error_stage":"collect"}"#);
        let reload = ReloadRecord { kind: FileKind::Plugin, file: "scale.wasm".into(), outcome: ReloadOutcome::Rejected, sha256: None };
        let rejected = Record::Reload(ReloadEntry { head: head(), reason: "bad".into(), error_stage: Some(Stage::Reload), reload });
        assert_eq!(
            serde_json::to_string(&rejected).unwrap(),
            r#"{"time":"2026-01-01T00:00:00Z","policy":"nginx","target":"Deployment default/nginx","observed":{"cpu":1.5},"reason":"bad","error_stage":"reload","reload":{"kind":"plugin","file":"scale.wasm","outcome":"rejected"}}"#
        );
        assert_eq!(line(&rejected), "2026-01-01T00:00:00Z nginx ERROR in reload: bad");
        assert_eq!(line(&action), "2026-01-01T00:00:00Z nginx [cpu high] hot => DRY-RUN scale to 5: would scale");
    }
}
