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

/// One line of the audit log.
#[derive(Debug, Clone, Serialize)]
pub struct Record {
    /// RFC 3339, UTC (simulated time in `--simulate` mode).
    pub time: String,
    pub policy: String,
    pub target: String,
    /// Every metric collected this tick, by name.
    pub observed: BTreeMap<String, f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub forecast: Option<ForecastRecord>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub risk: Option<RiskRecord>,
    /// The remediation rule that proposed the action.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub remediation: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub proposal: Option<Proposal>,
    /// What the guard allowed, when it changed the proposal (e.g. clamped replicas).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub allowed: Option<Proposal>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub verdict: Option<Verdict>,
    /// Why the guard decided as it did; for errors, what failed.
    pub reason: String,
    /// What the cluster said it did (or would have done).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub result: Option<String>,
    /// Set on records of a stage that failed (`collect`, `forecast`, `assess`, `plan`, ...,
    /// and `reload` for a new version of a file that was rejected).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error_stage: Option<&'static str>,
    /// Set on records of a live reload, accepted or rejected.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reload: Option<ReloadRecord>,
}

/// What a live reload did to one file.
#[derive(Debug, Clone, Serialize)]
pub struct ReloadRecord {
    /// `policy` or `plugin`.
    pub kind: &'static str,
    pub file: String,
    /// `reloaded`, `rejected` (the previous version keeps running) or `removed`.
    pub outcome: &'static str,
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
}

impl AuditLog {
    /// Opens (creating it and its folder when missing) the file for appending.
    pub fn open(path: &Path) -> anyhow::Result<Self> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).with_context(|| format!("cannot create the audit folder {}", dir.display()))?;
        }
        let file = OpenOptions::new().create(true).append(true).open(path).with_context(|| format!("cannot open the audit log {}", path.display()))?;
        Ok(Self { path: path.to_path_buf(), out: BufWriter::new(file) })
    }

    /// Appends one record.
    pub fn write(&mut self, record: &Record) -> anyhow::Result<()> {
        serde_json::to_writer(&mut self.out, record)?;
        self.out.write_all(b"\n").with_context(|| format!("cannot write the audit log {}", self.path.display()))
    }

    /// Flushes buffered records to the file; called at the end of every tick.
    pub fn flush(&mut self) -> anyhow::Result<()> {
        self.out.flush().with_context(|| format!("cannot write the audit log {}", self.path.display()))
    }
}

/// The readable line for a decision.
pub fn line(record: &Record) -> String {
    let mut out = format!("{} {}", record.time, record.policy);
    if let (Some(reload), None) = (&record.reload, record.error_stage) {
        out.push_str(&format!(" RELOAD {} {}: {}", reload.kind, reload.outcome, record.reason));
        return out;
    }
    if let Some(stage) = record.error_stage {
        out.push_str(&format!(" ERROR in {stage}: {}", record.reason));
        return out;
    }
    if let Some(risk) = &record.risk {
        out.push_str(&format!(" [{} {}] {}", risk.rule, risk.risk.level, risk.risk.reason));
    }
    if let (Some(proposal), Some(verdict)) = (&record.proposal, record.verdict) {
        let action = record.allowed.as_ref().unwrap_or(proposal);
        let verdict = serde_json::to_value(verdict).ok().and_then(|v| v.as_str().map(str::to_uppercase)).unwrap_or_default();
        out.push_str(&format!(" => {} {}: {}", verdict, action.action, record.result.as_deref().unwrap_or(&record.reason)));
    }
    out
}
