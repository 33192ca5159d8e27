//! The executor seam: carries out an action that the guard allowed. The simulator implements
//! it in-process; the Kubernetes executor (through `kube`, with server-side dry-run) plugs in
//! behind the same trait.
//!
//! An executor never decides whether to act; it is only called after the guard said yes.

use crate::domain::{Action, Target};
use async_trait::async_trait;

/// Why an action was not carried out.
#[derive(Debug, thiserror::Error)]
pub enum ExecuteError {
    /// The target refused it (it does not exist, the pod is not the target's, ...).
    #[error("refused: {0}")]
    Refused(String),
    /// The call failed (network, server error) after its retries.
    #[error("failed: {0}")]
    Failed(String),
}

/// Carries out actions on a cluster.
#[async_trait]
pub trait Executor: Send + Sync {
    /// Executes `action` on `target`. With `dry_run` the cluster validates the action and
    /// changes nothing. Returns a short description of what changed (or would have).
    async fn execute(&self, target: &Target, action: &Action, dry_run: bool, reason: &str) -> Result<String, ExecuteError>;
}
