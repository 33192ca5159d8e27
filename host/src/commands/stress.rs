//! `host stress`: the prototype's stress_pod.py, on a real cluster (the work is in
//! `cluster::stress`; this room reads the command's arguments).

use super::invalid;
use crate::cluster::{self, StressOptions};
use crate::config::parse_quantity;
use std::path::PathBuf;
use std::time::Duration;

/// The arguments of `host stress`, as given on the command line.
#[derive(Debug, Clone)]
pub struct StressArgs {
    pub namespace: String,
    pub selector: String,
    pub duration: Duration,
    /// Memory to hold, as a Kubernetes quantity (`256Mi`).
    pub memory: String,
    pub container: Option<String>,
    pub kubeconfig: Option<PathBuf>,
}

/// Stresses the first running pod that matches; returns what was done.
pub async fn stress(args: StressArgs) -> anyhow::Result<String> {
    let memory_bytes = parse_quantity(&args.memory)
        .filter(|b| *b >= 0.0)
        .ok_or_else(|| invalid(format!("--memory `{}` is not a quantity; fix: write e.g. `256Mi` or `1Gi`", args.memory)))? as u64;
    let options = StressOptions { namespace: args.namespace, selector: args.selector, duration: args.duration, memory_bytes, container: args.container };
    let client = cluster::connect_streaming(args.kubeconfig.as_deref()).await?;
    cluster::stress(&client, &options).await
}
