//! Leader election on a coordination.k8s.io Lease, so that of several Augur replicas exactly
//! one acts. The algorithm is client-go's:
//!
//! - The leader renews the Lease every `retry` period; a replica that cannot renew within
//!   `renew_deadline` stops acting before its Lease can expire for the others.
//! - A candidate takes the Lease over only when it has seen the same record unchanged for a
//!   whole `lease_duration`, measured on its own clock (no cross-node clock comparison).
//! - Every write is an optimistic update (the Lease's resourceVersion): of two candidates
//!   racing for it, the API server lets one win and answers the other 409 Conflict.
//! - On a clean stop the leader releases the Lease, so a standby takes over at its next retry.

use super::status;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::Timestamp;
use kube::api::PostParams;
use kube::{Api, Client};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;

/// Competes for one Lease.
pub struct LeaderElector {
    api: Api<Lease>,
    name: String,
    identity: String,
    lease_duration: Duration,
    renew_deadline: Duration,
    retry: Duration,
    /// The last record seen (holder, renew time) and when this replica first saw it.
    observed: Option<((Option<String>, Option<String>), Instant)>,
}

impl LeaderElector {
    /// `namespace/name` is the Lease; `identity` this replica (its pod name). Timing is
    /// client-go's default: lease 15 s, renew deadline 10 s, retry every 2 s.
    pub fn new(client: Client, namespace: &str, name: &str, identity: &str) -> Self {
        Self {
            api: Api::namespaced(client, namespace),
            name: name.into(),
            identity: identity.into(),
            lease_duration: Duration::from_secs(15),
            renew_deadline: Duration::from_secs(10),
            retry: Duration::from_secs(2),
            observed: None,
        }
    }

    /// Other timing (tests use a short lease); `renew_deadline` must lie between `retry` and
    /// `lease_duration`.
    pub fn with_timing(mut self, lease_duration: Duration, renew_deadline: Duration, retry: Duration) -> Self {
        assert!(retry < renew_deadline && renew_deadline < lease_duration, "leader election needs retry < renew deadline < lease duration");
        (self.lease_duration, self.renew_deadline, self.retry) = (lease_duration, renew_deadline, retry);
        self
    }

    /// One round: creates, renews or takes over the Lease. `Ok(true)`: this replica leads.
    pub async fn try_acquire_or_renew(&mut self) -> Result<bool, kube::Error> {
        let now = MicroTime(Timestamp::now());
        let Some(mut lease) = self.api.get_opt(&self.name).await? else {
            let lease = Lease {
                metadata: kube::api::ObjectMeta { name: Some(self.name.clone()), ..Default::default() },
                spec: Some(self.spec(now.clone(), now, 0)),
            };
            return match self.api.create(&PostParams::default(), &lease).await {
                Ok(_) => Ok(true),
                Err(e) if status(&e) == Some(409) => Ok(false),
                Err(e) => Err(e),
            };
        };
        let spec = lease.spec.clone().unwrap_or_default();
        let record = (spec.holder_identity.clone(), spec.renew_time.as_ref().map(|t| t.0.to_string()));
        let changed = self.observed.as_ref().is_none_or(|(seen, _)| *seen != record);
        if changed {
            self.observed = Some((record, Instant::now()));
        }
        let held_by_me = spec.holder_identity.as_deref() == Some(self.identity.as_str());
        let vacant = spec.holder_identity.as_deref().is_none_or(str::is_empty);
        let expired = self.observed.as_ref().is_some_and(|(_, seen_at)| seen_at.elapsed() > self.lease_duration);
        if !(held_by_me || vacant || expired) {
            return Ok(false);
        }
        let (acquired, transitions) = if held_by_me {
            (spec.acquire_time.unwrap_or_else(|| now.clone()), spec.lease_transitions.unwrap_or(0))
        } else {
            (now.clone(), spec.lease_transitions.unwrap_or(0) + 1)
        };
        lease.spec = Some(self.spec(acquired, now, transitions));
        // `replace` sends the resourceVersion we read: a concurrent writer makes it fail with 409.
        match self.api.replace(&self.name, &PostParams::default(), &lease).await {
            Ok(_) => Ok(true),
            Err(e) if status(&e) == Some(409) => Ok(false),
            Err(e) => Err(e),
        }
    }

    fn spec(&self, acquire_time: MicroTime, renew_time: MicroTime, transitions: i32) -> LeaseSpec {
        LeaseSpec {
            holder_identity: Some(self.identity.clone()),
            lease_duration_seconds: Some(self.lease_duration.as_secs().max(1) as i32),
            acquire_time: Some(acquire_time),
            renew_time: Some(renew_time),
            lease_transitions: Some(transitions),
            ..Default::default()
        }
    }

    /// Gives the Lease up if this replica holds it, so a standby need not wait for it to expire.
    pub async fn release(&mut self) -> Result<(), kube::Error> {
        let Some(mut lease) = self.api.get_opt(&self.name).await? else { return Ok(()) };
        let Some(spec) = lease.spec.as_mut() else { return Ok(()) };
        if spec.holder_identity.as_deref() != Some(self.identity.as_str()) {
            return Ok(());
        }
        spec.holder_identity = None;
        spec.lease_duration_seconds = Some(1);
        spec.renew_time = Some(MicroTime(Timestamp::now()));
        self.api.replace(&self.name, &PostParams::default(), &lease).await.map(|_| ())
    }

    /// Runs the election in the background until [`Leadership::stop`].
    pub fn spawn(mut self) -> Leadership {
        let (tx, rx) = watch::channel(false);
        let stop = Arc::new(Notify::new());
        let stopped = stop.clone();
        let lease = format!("{}/{}", self.api.namespace().unwrap_or_default(), self.name);
        let task = tokio::spawn(async move {
            let mut last_renewal: Option<Instant> = None;
            loop {
                let leading = match self.try_acquire_or_renew().await {
                    Ok(true) => {
                        last_renewal = Some(Instant::now());
                        true
                    }
                    Ok(false) => false,
                    Err(e) => {
                        tracing::warn!("leader election on Lease {lease}: {e}");
                        // Keep leading only while the last renewal is within the deadline.
                        *tx.borrow() && last_renewal.is_some_and(|t| t.elapsed() < self.renew_deadline)
                    }
                };
                if leading != *tx.borrow() {
                    if leading {
                        tracing::info!("leading: holds Lease {lease} as {}", self.identity);
                    } else {
                        tracing::warn!("standing by: Lease {lease} is not held by {}", self.identity);
                    }
                    let _ = tx.send(leading);
                }
                tokio::select! {
                    _ = tokio::time::sleep(self.retry) => {}
                    _ = stopped.notified() => break,
                }
            }
            let _ = tx.send(false);
            if let Err(e) = self.release().await {
                tracing::warn!("cannot release Lease {lease}: {e}");
            }
        });
        Leadership { rx, stop, task }
    }
}

/// What the rest of the host sees of the election.
pub struct Leadership {
    rx: watch::Receiver<bool>,
    stop: Arc<Notify>,
    task: JoinHandle<()>,
}

impl Leadership {
    /// Whether this replica leads now.
    pub fn is_leader(&self) -> bool {
        *self.rx.borrow()
    }

    /// A receiver that follows the election.
    pub fn watch(&self) -> watch::Receiver<bool> {
        self.rx.clone()
    }

    /// Stops competing and releases the Lease if held.
    pub async fn stop(self) {
        self.stop.notify_one();
        let _ = self.task.await;
    }
}
