//! `host stress`: the prototype's load generator (stress_pod.py). It finds a running pod by
//! label and execs a shell script in it that holds memory in /dev/shm and busy-loops for a
//! while, so that Augur (or anything else) has a real surge to see.

use k8s_openapi::api::core::v1::Pod;
use kube::api::{AttachParams, ListParams};
use kube::{Api, Client};
use std::time::Duration;
use tokio::io::AsyncReadExt;

/// What to stress and how hard.
#[derive(Debug, Clone)]
pub struct StressOptions {
    pub namespace: String,
    pub selector: String,
    /// How long the busy loop runs.
    pub duration: Duration,
    /// Bytes written to /dev/shm and held until the end.
    pub memory_bytes: u64,
    /// The container to exec in (default: the pod's first).
    pub container: Option<String>,
}

/// The script run in the pod: `sh`-only (busybox, Debian and Alpine images all have it), and
/// it removes its file on every exit path.
pub fn script(seconds: u64, memory_bytes: u64) -> String {
    let mib = memory_bytes.div_ceil(1024 * 1024);
    format!(
        "f=/dev/shm/augur-stress; trap 'rm -f $f' EXIT INT TERM; \
         dd if=/dev/zero of=$f bs=1M count={mib} 2>/dev/null || echo 'augur-stress: /dev/shm is smaller than {mib} MiB' >&2; \
         end=$(( $(date +%s) + {seconds} )); while [ \"$(date +%s)\" -le \"$end\" ]; do :; done; \
         echo \"augur-stress: held {mib} MiB and busy-looped for {seconds} s\""
    )
}

/// The pod to stress: the first running one (by name) that matches.
pub async fn choose_pod(client: &Client, namespace: &str, selector: &str) -> anyhow::Result<String> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let list = pods.list(&ListParams::default().labels(selector)).await?;
    let total = list.items.len();
    let mut running: Vec<String> = list
        .items
        .into_iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none() && p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running"))
        .filter_map(|p| p.metadata.name)
        .collect();
    running.sort();
    running.into_iter().next().ok_or_else(|| match total {
        0 => anyhow::anyhow!("no pod in namespace {namespace} matches `{selector}`; fix: check --namespace and --selector (e.g. `kubectl get pods -n {namespace} -l {selector}`)"),
        n => anyhow::anyhow!("{n} pod(s) in namespace {namespace} match `{selector}`, but none is Running; fix: wait for one to start"),
    })
}

/// Runs the stress script in the chosen pod and returns what it printed.
pub async fn stress(client: &Client, options: &StressOptions) -> anyhow::Result<String> {
    let pod = choose_pod(client, &options.namespace, &options.selector).await?;
    let pods: Api<Pod> = Api::namespaced(client.clone(), &options.namespace);
    let mut params = AttachParams::default().stdout(true).stderr(true).stdin(false);
    if let Some(container) = &options.container {
        params = params.container(container);
    }
    let command = ["sh", "-c", &script(options.duration.as_secs(), options.memory_bytes)];
    tracing::info!("stressing pod {}/{pod} for {:?}", options.namespace, options.duration);
    let mut process = pods.exec(&pod, command, &params).await.map_err(|e| anyhow::anyhow!("cannot exec in pod {}/{pod}: {e}; fix: Augur's user needs `create` on pods/exec", options.namespace))?;
    let (mut out, mut err) = (String::new(), String::new());
    if let Some(mut stdout) = process.stdout() {
        stdout.read_to_string(&mut out).await?;
    }
    if let Some(mut stderr) = process.stderr() {
        stderr.read_to_string(&mut err).await?;
    }
    let status = match process.take_status() {
        Some(status) => status.await,
        None => None,
    };
    process.join().await?;
    if let Some(status) = status
        && status.status.as_deref() == Some("Failure")
    {
        anyhow::bail!("the stress script failed in pod {pod}: {} {}", status.message.unwrap_or_default(), err.trim());
    }
    Ok(format!("pod {}/{pod}: {}{}", options.namespace, out.trim(), if err.trim().is_empty() { String::new() } else { format!(" ({})", err.trim()) }))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The script runs under a real `sh`: a short run with a little memory (in a temporary
    /// folder standing in for /dev/shm) finishes and cleans up.
    #[test]
    fn the_script_holds_memory_busy_loops_and_cleans_up() {
        let dir = tempfile::tempdir().unwrap();
        let text = script(1, 3 * 1024 * 1024).replace("/dev/shm", dir.path().to_str().unwrap());
        let started = std::time::Instant::now();
        let out = std::process::Command::new("sh").arg("-c").arg(&text).output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        assert!(started.elapsed() >= Duration::from_secs(1), "it busy-loops for at least the duration");
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "augur-stress: held 3 MiB and busy-looped for 1 s");
        assert!(!dir.path().join("augur-stress").exists(), "the file is removed at exit");
    }
}
