//! Policy files: reading, validating and reporting every problem at once with the file, the
//! field path and the fix. The rest of the host uses only the validated `Policy`.
//!
//! The ground floor of the policy's data: config imports nothing of the rooms above it
//! (metrics, forecast, plugins, remediation, cluster, engine). What those rooms and the
//! parser share (a rule's call limits, a model's card, PromQL syntax, Kubernetes
//! quantities, the key of a file path) lives here, below them.

mod card;
pub mod catalog;
pub mod document;
pub mod files;
mod limits;
mod parse;
mod paths;
mod policy;
pub mod promql;
mod quantity;
mod reader;
mod selector;

pub use card::{ANY_INPUT, CARD_FORMAT, ModelCard};
pub use catalog::Catalog;
pub use limits::{Limits, MAX_DEADLINE, MAX_MEMORY_BYTES, MAX_REPLICAS};
pub use parse::parse;
pub use paths::normal;
pub use policy::{Baseline, Capabilities, ForecastMethod, ForecastSpec, GuardSpec, Metric, MetricSourceSpec, Policy, PrometheusAccess, RemediationRule, Resource, RiskRule, wildcard};
pub use quantity::parse_quantity;
pub use reader::Problem;

use std::fmt;
use std::path::{Path, PathBuf};

/// A policy file that could not be used, with every problem found in it.
#[derive(Debug, thiserror::Error)]
pub struct PolicyError {
    pub file: PathBuf,
    pub problems: Vec<Problem>,
}

impl fmt::Display for PolicyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.problems.len();
        write!(f, "{}: {n} problem{}", self.file.display(), if n == 1 { "" } else { "s" })?;
        for problem in &self.problems {
            write!(f, "\n  - {problem}")?;
        }
        Ok(())
    }
}

/// Reads and validates one policy file, its plugins and models by name among the shipped ones.
pub fn load(file: &Path) -> Result<Policy, PolicyError> {
    load_in(file, &Catalog::shipped())
}

/// Reads and validates one policy file, its plugins and models by name in `catalog`.
pub fn load_in(file: &Path, catalog: &Catalog) -> Result<Policy, PolicyError> {
    let text = files::read_text(file, files::MAX_TEXT_BYTES).map_err(|e| PolicyError {
        file: file.to_path_buf(),
        problems: vec![Problem { path: "(file)".into(), message: e.to_string(), fix: e.fix().into() }],
    })?;
    parse(&text, file, catalog).map_err(|problems| PolicyError { file: file.to_path_buf(), problems })
}

/// Why `policy` cannot run beside `others`: two policies with one name would share an audit
/// and a metrics label; two on one workload would fight over its replicas (each undoing the
/// other's scale, each change a hand-over outside the other's `max_step`). None if it can.
pub fn clash<'a>(policy: &Policy, others: impl IntoIterator<Item = &'a Policy>) -> Option<Problem> {
    for other in others {
        if other.name == policy.name {
            return Some(Problem { path: "name".into(), message: format!("`{}` is already the name of the policy in {}", policy.name, other.source.display()), fix: "give each policy its own name".into() });
        }
        if other.target == policy.target {
            return Some(Problem {
                path: "target".into(),
                message: format!("{} is already the target of policy `{}` in {}: two policies on one workload would fight over its replicas", policy.target, other.name, other.source.display()),
                fix: "merge the two policies into one file (one policy may hold many rules), or point this one at another workload".into(),
            });
        }
    }
    None
}
