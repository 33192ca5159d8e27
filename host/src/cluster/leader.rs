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
//!
//! Safe by construction, on the local monotonic clock:
//! - Every write Augur makes is fenced ([`Fence`]): an attempt starts only while the last
//!   *confirmed* renewal is younger than the renew deadline, counted from when that renewal
//!   was sent, and its deadline ends when the fence closes. A standby waits a whole lease
//!   duration after it last saw the record change, which is after the renewal landed; so the
//!   old leader's fence closes `lease_duration - renew_deadline` (5 s by default) before any
//!   standby can take over, however the renewals fail.
//! - Every round has a deadline, so a renewal that hangs cannot keep a replica leading.
//! - A renewal whose answer was lost is confirmed by the next round's read: the Lease holds
//!   the renew time this replica sent, so it did land (and the leader does not step down
//!   while the Lease still says it leads).

use super::calls::ATTEMPT_TIMEOUT;
use super::status;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::Timestamp;
use kube::api::PostParams;
use kube::{Api, Client};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// The most a release on a clean stop may take.
const RELEASE_TIMEOUT: Duration = Duration::from_secs(2);

/// Whether this replica may write now, and for how long. Open while it leads (its last
/// confirmed renewal, counted from when it was sent, is within the renew deadline) and the
/// run has not ended; checked right before every attempt of every write.
#[derive(Clone, Debug, Default)]
pub struct Fence {
    lease: Option<Arc<LeaseClock>>,
    until: Option<Instant>,
}

/// When the last confirmed renewal was sent, shared by the election and the fence.
#[derive(Debug)]
struct LeaseClock {
    renewed: Mutex<Option<Instant>>,
    renew_deadline: Duration,
}

impl LeaseClock {
    fn set(&self, renewed: Option<Instant>) {
        *self.renewed.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = renewed;
    }

    fn get(&self) -> Option<Instant> {
        *self.renewed.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl Fence {
    /// Open always: one replica without leader election, and no end.
    pub fn always() -> Self {
        Self::default()
    }

    /// Open until `end`.
    pub fn until(end: Instant) -> Self {
        Self { lease: None, until: Some(end) }
    }

    /// The same fence, also closed from `end` on.
    pub fn ending(mut self, end: Option<Instant>) -> Self {
        self.until = end;
        self
    }

    /// The time left before the fence closes, or why it is closed.
    pub fn open(&self) -> Result<Duration, &'static str> {
        let now = Instant::now();
        let mut left = Duration::MAX;
        if let Some(until) = self.until {
            left = until.checked_duration_since(now).filter(|d| !d.is_zero()).ok_or("the run has ended")?;
        }
        if let Some(lease) = &self.lease {
            let renewed = lease.get().ok_or("this replica does not hold the leader Lease")?;
            let closes = renewed + lease.renew_deadline;
            left = left.min(closes.checked_duration_since(now).filter(|d| !d.is_zero()).ok_or("this replica's last confirmed renewal of the leader Lease is older than its renew deadline")?);
        }
        Ok(left)
    }
}

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
    /// The renew time this replica last wrote, and when it sent it, until a read confirms it.
    sent: Option<(String, Instant)>,
    /// When the last renewal that is known to have landed was sent.
    confirmed: Option<Instant>,
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
            sent: None,
            confirmed: None,
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
        let sent_at = Instant::now();
        // To the microsecond, as the API server keeps it, so that a read-back compares equal.
        let micros = Timestamp::now().as_microsecond();
        let now = MicroTime(Timestamp::from_microsecond(micros).unwrap_or_else(|_| Timestamp::now()));
        let Some(mut lease) = self.api.get_opt(&self.name).await? else {
            let lease = Lease {
                metadata: kube::api::ObjectMeta { name: Some(self.name.clone()), ..Default::default() },
                spec: Some(self.spec(now.clone(), now, 0)),
            };
            self.sent = Some((lease.spec.as_ref().and_then(|s| s.renew_time.as_ref()).map(|t| t.0.to_string()).unwrap_or_default(), sent_at));
            return match self.api.create(&PostParams::default(), &lease).await {
                Ok(_) => {
                    self.confirmed = Some(sent_at);
                    Ok(true)
                }
                Err(e) if status(&e) == Some(409) => Ok(false),
                Err(e) => Err(e),
            };
        };
        let spec = lease.spec.clone().unwrap_or_default();
        let record = (spec.holder_identity.clone(), spec.renew_time.as_ref().map(|t| t.0.to_string()));
        let changed = self.observed.as_ref().is_none_or(|(seen, _)| *seen != record);
        let renew_time = record.1.clone();
        if changed {
            self.observed = Some((record, Instant::now()));
        }
        let held_by_me = spec.holder_identity.as_deref() == Some(self.identity.as_str());
        // A renewal whose answer was lost: the Lease holds what it wrote, so it landed.
        if let Some((time, at)) = &self.sent
            && held_by_me
            && renew_time.as_deref() == Some(time.as_str())
        {
            self.confirmed = Some(self.confirmed.map_or(*at, |c| c.max(*at)));
        }
        if !held_by_me {
            self.confirmed = None;
        }
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
        lease.spec = Some(self.spec(acquired, now.clone(), transitions));
        self.sent = Some((now.0.to_string(), sent_at));
        // `replace` sends the resourceVersion we read: a concurrent writer makes it fail with 409.
        match self.api.replace(&self.name, &PostParams::default(), &lease).await {
            Ok(_) => {
                self.confirmed = Some(sent_at);
                Ok(true)
            }
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
        let clock = Arc::new(LeaseClock { renewed: Mutex::new(None), renew_deadline: self.renew_deadline });
        let fence = Fence { lease: Some(clock.clone()), until: None };
        let theirs = fence.clone();
        let lease = format!("{}/{}", self.api.namespace().unwrap_or_default(), self.name);
        let task = tokio::spawn(async move {
            loop {
                // A round never outlasts the leadership it renews (nor an attempt's deadline).
                let budget = fence.open().map_or(ATTEMPT_TIMEOUT, |left| left.min(ATTEMPT_TIMEOUT));
                let round = tokio::select! {
                    round = tokio::time::timeout(budget, self.try_acquire_or_renew()) => round,
                    _ = stopped.notified() => break,
                };
                match round {
                    Ok(Ok(_)) => {}
                    Ok(Err(e)) => tracing::warn!("leader election on Lease {lease}: {e}"),
                    Err(_) => tracing::warn!("leader election on Lease {lease}: no answer within {budget:?}"),
                }
                clock.set(self.confirmed);
                let leading = fence.open().is_ok();
                if leading != *tx.borrow() {
                    if leading {
                        tracing::info!("leading: holds Lease {lease} as {}", self.identity);
                    } else {
                        tracing::warn!("standing by: Lease {lease} is not held by {} (or its renewal is overdue)", self.identity);
                    }
                    let _ = tx.send(leading);
                }
                // Wake when the fence would close, to say so on time.
                let wait = fence.open().map_or(self.retry, |left| left.min(self.retry));
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = stopped.notified() => break,
                }
            }
            clock.set(None);
            let _ = tx.send(false);
            // A clean stop is quick: a release that does not answer soon is left to expire.
            match tokio::time::timeout(RELEASE_TIMEOUT, self.release()).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::warn!("cannot release Lease {lease}: {e}"),
                Err(_) => tracing::warn!("cannot release Lease {lease}: no answer within {RELEASE_TIMEOUT:?}; it expires instead"),
            }
        });
        Leadership { rx, stop, task, fence: theirs }
    }
}

/// What the rest of the host sees of the election.
pub struct Leadership {
    rx: watch::Receiver<bool>,
    stop: Arc<Notify>,
    task: JoinHandle<()>,
    fence: Fence,
}

impl Leadership {
    /// Whether this replica leads now.
    pub fn is_leader(&self) -> bool {
        *self.rx.borrow()
    }

    /// The fence every write of this replica passes.
    pub fn fence(&self) -> Fence {
        self.fence.clone()
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
