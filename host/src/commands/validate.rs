//! `host validate`: policy files, their plugins and their forecasters, checked without
//! touching a cluster.

use super::{invalid, load_policies};
use crate::config::Catalog;
use crate::engine::{check_plugins, forecaster_for};
use crate::plugins::{Limits, Plugins};
use std::path::PathBuf;

/// `host validate`: the files, then each policy's plugins (compiled, checked against their
/// world, settings checked by the plugin) and its forecaster. Returns one line per good file.
pub fn validate(files: &[PathBuf], catalog: &Catalog) -> anyhow::Result<Vec<String>> {
    let policies = load_policies(files, catalog)?;
    let plugins = Plugins::new(Limits::default())?;
    let (mut good, mut errors) = (Vec::new(), Vec::new());
    for policy in &policies {
        let checked = forecaster_for(policy).map(|_| check_plugins(policy, &plugins));
        match checked {
            Ok(problems) if problems.is_empty() => good.push(format!(
                "{}: ok (target {}, {} metrics, {} risk rules, {} remediations; plugins load)",
                policy.source.display(),
                policy.target,
                policy.metrics.len(),
                policy.risks.len(),
                policy.remediations.len()
            )),
            Ok(problems) => {
                let lines: Vec<String> = problems.iter().map(ToString::to_string).collect();
                errors.push(format!("{}: {} problem(s)\n  - {}", policy.source.display(), problems.len(), lines.join("\n  - ")));
            }
            Err(e) => errors.push(format!("{e:#}")),
        }
    }
    if errors.is_empty() { Ok(good) } else { Err(invalid(errors.join("\n"))) }
}

