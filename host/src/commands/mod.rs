//! The commands' work, behind the thin binary: each command of `host` that reaches the
//! cluster or the plugins has its room here (`run`, `validate`, `plugin check|new|run`, `stress`);
//! the offline tools (backtest, replay, anomalies, nab) are in `offline`.
//!
//! Commands wire rooms together and report; they decide nothing a room below owns.

mod plugin_check;
mod plugin_new;
mod plugin_run;
pub mod run;
mod stress;
mod validate;

pub use plugin_check::plugin_check;
pub use plugin_new::{Scaffold, plugin_new};
pub use plugin_run::{Outcome, Sample, SampleForecast, plugin_run};
pub use run::{ClusterPolicies, LeaseOptions, RunOptions, RunReport, run};
pub use stress::{StressArgs, stress};
pub use validate::validate;

use crate::config::{self, Catalog, Policy};
use anyhow::Context;
use std::path::PathBuf;

/// Input that cannot be used as given (a policy with problems, a flag out of range): the
/// binary exits 2 for it, as for a usage error, and 1 for any other failure.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct InvalidInput(pub String);

/// An `InvalidInput` error.
pub fn invalid(message: String) -> anyhow::Error {
    anyhow::Error::new(InvalidInput(message))
}

/// Loads every policy file, reporting all problems of all files at once; plugins and models
/// by name are looked up in `catalog`.
pub fn load_policies(files: &[PathBuf], catalog: &Catalog) -> anyhow::Result<Vec<Policy>> {
    let (mut policies, mut errors) = (Vec::new(), Vec::new());
    for file in files {
        match config::load_in(file, catalog) {
            Ok(policy) => policies.push(policy),
            Err(e) => errors.push(e.to_string()),
        }
    }
    for (i, policy) in policies.iter().enumerate() {
        if let Some(problem) = config::clash(policy, &policies[..i]) {
            errors.push(config::PolicyError { file: policy.source.clone(), problems: vec![problem] }.to_string());
        }
    }
    if !errors.is_empty() {
        return Err(invalid(errors.join("\n")));
    }
    if files.is_empty() {
        return Err(invalid("no policy given; fix: pass `--policy FILE` (e.g. `--policy policies/nginx.yaml`)".into()));
    }
    Ok(policies)
}

/// Resolves `--policy` arguments: files as given, folders to their `*.yaml` files.
pub fn expand_policy_args(args: &[PathBuf]) -> anyhow::Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for arg in args {
        if arg.is_dir() {
            let mut found: Vec<PathBuf> = std::fs::read_dir(arg)
                .with_context(|| format!("cannot list {}", arg.display()))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "yaml" || x == "yml"))
                .collect();
            found.sort();
            files.extend(found);
        } else {
            files.push(arg.clone());
        }
    }
    Ok(files)
}

