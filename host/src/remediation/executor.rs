//! The executor seam: carries out an action that the guard allowed. The simulator implements
//! it in-process; the Kubernetes executor (through `kube`, with server-side dry-run) plugs in
//! behind the same trait.
//!
//! An executor never decides whether to act; it is only called after the guard said yes, and
//! it carries out that decision only on the workload the decision saw. It is also told of the
//! actions the guard refused (`rejected`), so that a cluster can show them where its users
//! look (a Warning Event); the simulator has no one to tell.

use crate::domain::{Action, Target};
use async_trait::async_trait;

/// An action the guard allowed, as the executor receives it.
#[derive(Debug, Clone, Copy)]
pub struct Order<'a> {
    pub target: &'a Target,
    pub action: &'a Action,
    /// Validate only, change nothing (server-side dry-run on a cluster).
    pub dry_run: bool,
    /// Why, for the Event.
    pub reason: &'a str,
    /// The replicas the decision saw. A scale is written only while the workload still has
    /// them: if anything (an operator) changed the count meanwhile, that change wins and the
    /// next tick decides again. `None`: no expectation.
    pub seen_replicas: Option<u32>,
}

impl<'a> Order<'a> {
    pub fn new(target: &'a Target, action: &'a Action, reason: &'a str) -> Self {
        Self { target, action, dry_run: false, reason, seen_replicas: None }
    }

    pub fn dry_run(mut self, dry_run: bool) -> Self {
        self.dry_run = dry_run;
        self
    }

    pub fn seen_replicas(mut self, replicas: u32) -> Self {
        self.seen_replicas = Some(replicas);
        self
    }
}

/// Why an action was not carried out, or may not have been.
#[derive(Debug, thiserror::Error)]
pub enum ExecuteError {
    /// The target refused it (it does not exist, the pod is not the target's, ...).
    #[error("refused: {0}")]
    Refused(String),
    /// The call failed (network, server error) after its retries; nothing changed.
    #[error("failed: {0}")]
    Failed(String),
    /// The workload changed before the action could be written (an operator's change wins);
    /// nothing was written, and the next tick decides again on what is there now.
    #[error("superseded: {0}")]
    Superseded(String),
    /// A write was sent, its answer was lost and reading it back failed too: whether it
    /// landed is unknown. The next tick reads the workload afresh.
    #[error("unconfirmed: {0}")]
    Unconfirmed(String),
}

/// An action the guard refused: the proposal (its `reason` is the plugin's) and the guard's reason.
#[derive(Debug, Clone, Copy)]
pub struct Rejection<'a> {
    pub target: &'a Target,
    pub action: &'a Action,
    /// Why the plugin proposed it.
    pub proposed_because: &'a str,
    /// Why the guard refused it.
    pub refused_because: &'a str,
}

/// Carries out actions on a cluster.
#[async_trait]
pub trait Executor: Send + Sync {
    /// Executes the order. With `dry_run` the cluster validates the action and changes
    /// nothing. Returns a short description of what changed (or would have).
    async fn execute(&self, order: &Order<'_>) -> Result<String, ExecuteError>;

    /// Tells the cluster's users that the guard refused an action. Nothing by default.
    async fn rejected(&self, _rejection: &Rejection<'_>) {}
}
