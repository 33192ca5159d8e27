//! The real cluster, through `kube`: the executor (scale, restart a pod, cordon and uncordon a
//! node, each with server-side dry-run and an Event that says why) and the workload source
//! (replicas, the target's pods, the nodes).
//!
//! Every write carries the field manager `augur` and goes through one retry policy
//! ([`calls`]): a deadline on every attempt, `Retry-After` honoured, no retries underneath
//! (the client's own are off), and every attempt fenced by the leader Lease. Each write is
//! idempotent (an absolute replica count written only while the count is the one the decision
//! saw, a pod deleted by name and UID, a node's unschedulable flag), so a retry after a lost
//! answer never acts twice, and a write whose answer was lost is read back and recorded as
//! what happened.

mod calls;
mod events;
mod executor;
mod leader;
mod metrics_server;
pub mod policies;
mod state;
mod stress;
mod workloads;

pub use events::{EventType, Events, Note};
pub use executor::{KubeExecutor, WriteHook};
pub use calls::{ATTEMPT_TIMEOUT, ATTEMPTS, CallError};
pub use leader::{Fence, LeaderElector, Leadership};
pub use metrics_server::{MetricsServerSource, Usage};
pub use policies::{AugurPolicy, Placement, PolicyWatch};
pub use state::ClusterState;
pub use stress::{StressOptions, choose_pod, script as stress_script, stress};
pub use workloads::KubeWorkloads;

use std::path::Path;
use std::time::Duration;

/// The field manager of every write, and the Events' reporting controller.
pub const MANAGER: &str = "augur";
/// Set on a node Augur cordoned, so that it uncordons only its own cordons.
pub const CORDONED_BY: &str = "augur.io/cordoned-by";

/// The annotation on a target that pauses Augur's actions on it: `augur.io/paused: "true"`.
pub const PAUSED: &str = "augur.io/paused";

/// A client from `kubeconfig` if given, else the default chain (`KUBECONFIG`,
/// `~/.kube/config`, the in-cluster service account), checked by asking the API server its
/// version: a cluster that cannot be reached is an error here, never later.
pub async fn connect(kubeconfig: Option<&Path>) -> anyhow::Result<kube::Client> {
    connect_with(kubeconfig, with_deadlines).await
}

/// As [`connect`], for a long-lived stream (`host stress` execs in a pod): no read deadline.
pub async fn connect_streaming(kubeconfig: Option<&Path>) -> anyhow::Result<kube::Client> {
    connect_with(kubeconfig, |config| config).await
}

async fn connect_with(kubeconfig: Option<&Path>, configure: fn(kube::Config) -> kube::Config) -> anyhow::Result<kube::Client> {
    crate::tls::install_provider();
    let no_cluster = |e: &dyn std::fmt::Display| {
        anyhow::anyhow!("no Kubernetes cluster configured: {e}; fix: pass --kubeconfig or set KUBECONFIG (or run in a pod with a service account), or add `--simulate` to use the built-in simulated cluster")
    };
    let config = match kubeconfig {
        Some(path) => {
            let file = kube::config::Kubeconfig::read_from(path).map_err(|e| no_cluster(&format!("{}: {e}", path.display())))?;
            kube::Config::from_custom_kubeconfig(file, &Default::default()).await.map_err(|e| no_cluster(&format!("{}: {e}", path.display())))?
        }
        None => kube::Config::infer().await.map_err(|e| no_cluster(&e))?,
    };
    let client = kube::Client::try_from(configure(config)).map_err(|e| no_cluster(&e))?;
    let version = tokio::time::timeout(Duration::from_secs(10), client.apiserver_version()).await;
    match version {
        Ok(Ok(_)) => Ok(client),
        Ok(Err(e)) => anyhow::bail!("the Kubernetes API server does not answer: {e}; fix: check KUBECONFIG and that the cluster is up, or add `--simulate`"),
        Err(_) => anyhow::bail!("the Kubernetes API server did not answer in 10 s; fix: check KUBECONFIG and that the cluster is up, or add `--simulate`"),
    }
}

/// The client's part of the one retry policy: no retries of its own (every retry is
/// [`calls::call`]'s), and no request without a deadline (Augur makes no watches or
/// long-lived streams, so a read timeout cuts nothing that should last).
pub fn with_deadlines(mut config: kube::Config) -> kube::Config {
    config.default_retry = false;
    config.connect_timeout = Some(ATTEMPT_TIMEOUT);
    config.read_timeout = Some(ATTEMPT_TIMEOUT);
    config.write_timeout = Some(ATTEMPT_TIMEOUT);
    // The read timeout counts from each request, not from when a pooled connection went idle.
    config.reset_reader_on_write = true;
    config
}

/// The HTTP status of an API error, if it is one.
pub(crate) fn status(e: &kube::Error) -> Option<u16> {
    match e {
        kube::Error::Api(status) => Some(status.code),
        _ => None,
    }
}
