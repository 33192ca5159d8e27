//! The real cluster, through `kube`: the executor (scale, restart a pod, cordon and uncordon a
//! node, each with server-side dry-run and an Event that says why) and the workload source
//! (replicas, the target's pods, the nodes).
//!
//! Every write carries the field manager `augur`. Conflicts, 429 and 5xx are retried with
//! backoff; each write is idempotent (an absolute replica count, a pod deleted by name and
//! UID, a node's unschedulable flag), so a retry after a lost response never acts twice.

mod executor;
mod leader;
mod metrics_server;
mod stress;
mod workloads;

pub use executor::{KubeExecutor, WriteHook};
pub use leader::{LeaderElector, Leadership};
pub use metrics_server::{MetricsServerSource, Usage};
pub use stress::{StressOptions, choose_pod, script as stress_script, stress};
pub use workloads::KubeWorkloads;

use std::path::Path;
use std::time::Duration;

/// The field manager of every write, and the Events' reporting controller.
pub const MANAGER: &str = "augur";
/// Set on a node Augur cordoned, so that it uncordons only its own cordons.
pub const CORDONED_BY: &str = "augur.io/cordoned-by";

/// A client from `kubeconfig` if given, else the default chain (`KUBECONFIG`,
/// `~/.kube/config`, the in-cluster service account), checked by asking the API server its
/// version: a cluster that cannot be reached is an error here, never later.
pub async fn connect(kubeconfig: Option<&Path>) -> anyhow::Result<kube::Client> {
    crate::tls::install_provider();
    let no_cluster = |e: &dyn std::fmt::Display| {
        anyhow::anyhow!("no Kubernetes cluster configured: {e}; fix: pass --kubeconfig or set KUBECONFIG (or run in a pod with a service account), or add `--simulate` to use the built-in simulated cluster")
    };
    let client = match kubeconfig {
        Some(path) => {
            let file = kube::config::Kubeconfig::read_from(path).map_err(|e| no_cluster(&format!("{}: {e}", path.display())))?;
            let config = kube::Config::from_custom_kubeconfig(file, &Default::default()).await.map_err(|e| no_cluster(&format!("{}: {e}", path.display())))?;
            kube::Client::try_from(config).map_err(|e| no_cluster(&e))?
        }
        None => kube::Client::try_default().await.map_err(|e| no_cluster(&e))?,
    };
    let version = tokio::time::timeout(Duration::from_secs(10), client.apiserver_version()).await;
    match version {
        Ok(Ok(_)) => Ok(client),
        Ok(Err(e)) => anyhow::bail!("the Kubernetes API server does not answer: {e}; fix: check KUBECONFIG and that the cluster is up, or add `--simulate`"),
        Err(_) => anyhow::bail!("the Kubernetes API server did not answer in 10 s; fix: check KUBECONFIG and that the cluster is up, or add `--simulate`"),
    }
}

/// Retries `call` on conflicts, throttling and server errors: 4 attempts, 200 ms doubling.
pub(crate) async fn with_retries<T, F, Fut>(what: &str, mut call: F) -> Result<T, kube::Error>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, kube::Error>>,
{
    let mut delay = Duration::from_millis(200);
    let mut attempt = 1;
    loop {
        match call().await {
            Err(e) if attempt < 4 && retryable(&e) => {
                tracing::warn!("{what}: attempt {attempt} failed ({e}); retrying in {delay:?}");
                tokio::time::sleep(delay).await;
                delay *= 2;
                attempt += 1;
            }
            other => return other,
        }
    }
}

/// Conflicts, throttling, server errors and lost connections are worth another try.
pub(crate) fn retryable(e: &kube::Error) -> bool {
    match e {
        kube::Error::Api(status) => status.code == 409 || status.code == 429 || status.code >= 500,
        kube::Error::HyperError(_) | kube::Error::Service(_) => true,
        _ => false,
    }
}

/// The HTTP status of an API error, if it is one.
pub(crate) fn status(e: &kube::Error) -> Option<u16> {
    match e {
        kube::Error::Api(status) => Some(status.code),
        _ => None,
    }
}
