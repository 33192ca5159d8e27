//! The guard's memory: when each action kind last ran and the times of recent actions, so
//! that cooldown and the hourly rate survive a restart of the host. Kept per policy in a small
//! JSON file beside the audit log, written atomically (temporary file, fsync, rename).
//!
//! Times later than "now" (the clock went back, or a new simulation started) are ignored.

use anyhow::Context;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Cooldown and rate-limit state of one policy.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct GuardState {
    /// Unix seconds of the last action under each cooldown key (see `guard::cooldown_key`).
    last: BTreeMap<String, u64>,
    /// Unix seconds of every action in the last hour.
    recent: Vec<u64>,
}

fn unix(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

impl GuardState {
    /// Time since the last action under `key`, if there was one not in the future.
    pub fn since_last(&self, key: &str, now: SystemTime) -> Option<Duration> {
        let last = *self.last.get(key)?;
        unix(now).checked_sub(last).map(Duration::from_secs)
    }

    /// Number of actions within `window` before `now` (future ones excluded).
    pub fn actions_within(&self, window: Duration, now: SystemTime) -> usize {
        let now = unix(now);
        self.recent.iter().filter(|t| **t <= now && now - **t < window.as_secs()).count()
    }

    /// Moves an action recorded at `decided` to `landed`, when its change reached the
    /// cluster: cooldowns and the hourly rate count from the change, not from the decision.
    pub fn landed(&mut self, key: &str, decided: SystemTime, landed: SystemTime) {
        let (decided, landed) = (unix(decided), unix(landed));
        if landed <= decided {
            return;
        }
        if let Some(last) = self.last.get_mut(key)
            && *last == decided
        {
            *last = landed;
        }
        if let Some(t) = self.recent.iter_mut().rev().find(|t| **t == decided) {
            *t = landed;
        }
    }

    /// Records an action under its cooldown key and forgets what is more than an hour old.
    pub fn record(&mut self, key: &str, now: SystemTime) {
        let now = unix(now);
        self.last.insert(key.to_string(), now);
        self.recent.retain(|t| *t <= now && now - *t < 3600);
        self.recent.push(now);
    }
}

/// The state file of a policy whose audit log is `audit_path`: `x.jsonl` -> `x.state.json`.
pub fn state_path(audit_path: &Path) -> PathBuf {
    audit_path.with_extension("state.json")
}

/// Reads a state file; a missing file is an empty state.
pub fn load<T: DeserializeOwned + Default>(path: &Path) -> anyhow::Result<T> {
    match std::fs::read_to_string(path) {
        Ok(text) => serde_json::from_str(&text).with_context(|| format!("{} is not a valid guard state file; delete it to start afresh", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(T::default()),
        Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
    }
}

/// Writes a state file atomically.
pub fn save<T: Serialize>(path: &Path, state: &T) -> anyhow::Result<()> {
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let mut temp = tempfile::NamedTempFile::new_in(dir).with_context(|| format!("cannot write in {}", dir.display()))?;
    serde_json::to_writer(&mut temp, state)?;
    temp.flush()?;
    temp.as_file().sync_all()?;
    temp.persist(path).with_context(|| format!("cannot replace {}", path.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(s)
    }

    #[test]
    fn survives_a_round_trip_through_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = state_path(&dir.path().join("audit.jsonl"));
        assert_eq!(path.file_name().unwrap(), "audit.state.json");
        let mut state: GuardState = load(&path).unwrap();
        state.record("scale-up", at(1000));
        save(&path, &state).unwrap();
        let back: GuardState = load(&path).unwrap();
        assert_eq!(back, state);
        assert_eq!(back.since_last("scale-up", at(1060)), Some(Duration::from_secs(60)));
    }

    #[test]
    fn a_cooldown_counts_from_when_the_change_landed() {
        let mut state = GuardState::default();
        state.record("scale-up", at(1000));
        state.landed("scale-up", at(1000), at(1012));
        assert_eq!(state.since_last("scale-up", at(1015)), Some(Duration::from_secs(3)), "12 s of a slow write do not count against the cooldown");
        assert_eq!(state.actions_within(Duration::from_secs(10), at(1015)), 1, "the hourly rate counts it at its landing too");
        state.record("scale-up", at(1030));
        state.landed("scale-up", at(1000), at(1040));
        assert_eq!(state.since_last("scale-up", at(1031)), Some(Duration::from_secs(1)), "a later action's time is not moved by an earlier one's landing");
    }

    #[test]
    fn future_times_are_ignored() {
        let mut state = GuardState::default();
        state.record("scale-up", at(5000));
        assert_eq!(state.since_last("scale-up", at(1000)), None);
        assert_eq!(state.actions_within(Duration::from_secs(3600), at(1000)), 0);
    }

    #[test]
    fn a_corrupt_file_says_how_to_recover() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.state.json");
        std::fs::write(&path, "{not json").unwrap();
        let err = load::<GuardState>(&path).unwrap_err();
        assert!(format!("{err:#}").contains("delete it to start afresh"));
    }
}

/// Where guard state is kept beyond this process, so that a replica taking over the leader
/// Lease keeps the cooldowns and the hourly count of the one before it (on a cluster: a
/// ConfigMap per policy, see `cluster::ClusterState`).
#[async_trait::async_trait]
pub trait StateStore: Send + Sync {
    /// The state last saved for `policy`, if any.
    async fn load(&self, policy: &str) -> Result<Option<GuardState>, String>;
    /// Saves `state` as `policy`'s.
    async fn save(&self, policy: &str, state: &GuardState) -> Result<(), String>;
}
