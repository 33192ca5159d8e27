//! Augur on the API server's bad days: the real test API server behind a fault-injecting proxy
//! of our own (`common::faults` says why a proxy is needed). For each class of fault the test
//! reads the outcome from the real API server (replicas, Events, the Lease), the audit, and
//! how long `host run` took.

use crate::common::faults::{Fault, FaultProxy, Rule};
use crate::common::{self, k8s::control_plane};
use crate::kubernetes::{cluster_options, cluster_policy, deployment, eventually, events, namespace, node, replicas, target};
use augur::cluster::KubeExecutor;
use augur::domain::Action;
use augur::remediation::{ExecuteError, Executor, Order};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Node;
use kube::api::{Patch, PatchParams};
use kube::{Api, Client};
use serde_json::{Value, json};
use std::path::Path;
use std::time::{Duration, Instant};

/// A client through `proxy`, built as `host run` builds its own (its deadlines, no retries of
/// its own).
async fn through(proxy: &FaultProxy, dir: &Path) -> Client {
    augur::cluster::connect(Some(&proxy.kubeconfig(dir))).await.unwrap()
}

/// The executor tests' set-up: namespace `ns` with Deployment `web` at `replicas`, a proxy, and
/// the admin's client and a client through the proxy.
async fn behind_a_proxy(ns: &str, replicas: i32) -> (Client, FaultProxy, Client) {
    let admin = control_plane().client().await;
    namespace(&admin, ns).await;
    deployment(&admin, ns, "web", replicas).await;
    let (dir, proxy) = (tempfile::tempdir().unwrap(), FaultProxy::start().await);
    let client = through(&proxy, dir.path()).await;
    (admin, proxy, client)
}

/// When each scale write reached the API server, as the proxy forwarded it.
fn scale_writes(proxy: &FaultProxy) -> Vec<Instant> {
    proxy.seen().into_iter().filter(|s| s.method == "PUT" && s.path.contains("/scale")).filter_map(|s| s.forwarded_at).collect()
}

/// When the first request matching `method` and `path` reached the proxy.
fn first(proxy: &FaultProxy, method: &str, path: &str) -> Instant {
    proxy.seen().into_iter().find(|s| s.method == method && s.path.contains(path)).map(|s| s.at).expect("such a request")
}

fn scale_puts(proxy: &FaultProxy) -> usize {
    proxy.seen().iter().filter(|s| s.method == "PUT" && s.path.contains("/scale")).count()
}

fn with_verdict<'a>(records: &'a [Value], verdict: &str) -> Vec<&'a Value> {
    records.iter().filter(|r| r["verdict"] == verdict).collect()
}

async fn scaled_events(client: &Client, ns: &str) -> Vec<String> {
    events(client, ns).await.into_iter().filter(|e| e.reason.as_deref() == Some("Scaled")).map(|e| e.reporting_instance.unwrap_or_default()).collect()
}

async fn lease_holder(client: &Client, ns: &str) -> Option<String> {
    Api::<Lease>::namespaced(client.clone(), ns).get_opt("augur").await.unwrap().and_then(|l| l.spec?.holder_identity)
}

/// One `host run` case: a namespace with Deployment `web` at 2 replicas, the scaling policy
/// of `kubernetes::cluster_policy` (edited by `edit`), and a proxy of its own.
struct RunCase {
    ns: &'static str,
    admin: Client,
    dir: tempfile::TempDir,
    policy: std::path::PathBuf,
    proxy: FaultProxy,
}

impl RunCase {
    async fn new(ns: &'static str, edit: impl Fn(String) -> String) -> Self {
        let admin = control_plane().client().await;
        let prometheus = common::prometheus::prometheus();
        namespace(&admin, ns).await;
        deployment(&admin, ns, "web", 2).await;
        let dir = tempfile::tempdir().unwrap();
        let policy = cluster_policy(dir.path(), ns, &prometheus.url);
        std::fs::write(&policy, edit(std::fs::read_to_string(&policy).unwrap())).unwrap();
        Self { ns, admin, dir, policy, proxy: FaultProxy::start().await }
    }

    fn audit(&self, identity: &str) -> std::path::PathBuf {
        self.dir.path().join(format!("{identity}.jsonl"))
    }

    /// `host run` as `identity` for `run_for`, through `proxy` (this case's when `None`), with
    /// leader election when `lease`.
    fn options(&self, identity: &str, run_for: Duration, lease: bool, proxy: Option<&FaultProxy>) -> augur::commands::RunOptions {
        let mut options = cluster_options(&self.policy, &self.audit(identity), identity, run_for, self.ns);
        options.kubeconfig = Some(proxy.unwrap_or(&self.proxy).kubeconfig(self.dir.path()));
        if !lease {
            options.leader_election = None;
        }
        options
    }
}

/// Class 1. The leader's Lease renewals fail (503, 429, a reset connection, or answers slower
/// than the renew deadline) while a standby watches the Lease. The standby takes over, and at no instant do
/// both write: every scale the old leader wrote reached the API server before the new
/// leader's first. The old leader ends within its `--for` plus a few seconds.
#[tokio::test(flavor = "multi_thread")]
async fn when_the_leaders_renewals_fail_it_stops_writing_before_the_standby_takes_over() {
    let cases = [
        ("renew-503", Fault::Status { code: 503, retry_after: None }),
        ("renew-slow", Fault::Delay(Duration::from_secs(20))),
        ("renew-429", Fault::Status { code: 429, retry_after: Some(1) }),
        ("renew-reset", Fault::ResetBefore),
    ];
    let runs = cases.into_iter().map(|(ns, fault)| tokio::spawn(two_leaders_case(ns, fault)));
    for run in runs {
        run.await.unwrap();
    }
}

async fn two_leaders_case(ns: &'static str, fault: Fault) {
    let case = RunCase::new(ns, |p| p).await;
    let (admin, proxy_a, proxy_b) = (&case.admin, &case.proxy, FaultProxy::start().await);
    let (audit_a, audit_b) = (case.audit("augur-a"), case.audit("augur-b"));
    let run_for = Duration::from_secs(14);
    let mut options_a = case.options("augur-a", run_for, true, None);
    let port_a = common::k8s::free_port();
    options_a.metrics_addr = Some(format!("127.0.0.1:{port_a}").parse().unwrap());
    let options_b = case.options("augur-b", run_for, true, Some(&proxy_b));

    let a = tokio::spawn(augur::commands::run(options_a));
    eventually("augur-a to lead and scale", || async { !scale_writes(&proxy_a).is_empty() }).await;
    let b = tokio::spawn(augur::commands::run(options_b));
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(lease_holder(admin, ns).await.as_deref(), Some("augur-a"), "{ns}");
    proxy_a.add(Rule::new("PUT", "/leases/augur", fault.clone()));
    let faulted = Instant::now();
    // Standing by, augur-a's /metrics drops its per-policy series: its last values would read
    // as live beside the new leader's.
    let metrics_a = format!("http://127.0.0.1:{port_a}/metrics");
    eventually("augur-a's /metrics to show a standby with no series of policy web", || {
        let url = metrics_a.clone();
        async move {
            let Ok(answer) = reqwest::get(&url).await else { return false };
            let text = answer.text().await.unwrap_or_default();
            text.contains("augur_leader 0") && !text.contains("policy=\"web\"")
        }
    })
    .await;
    let report_a = a.await.unwrap().unwrap();
    // `--for` counts from when the replica is ready to compete: its first Lease request
    // (starting, it compiles its plugins, which takes seconds on a loaded machine).
    let a_took = first(proxy_a, "GET", "/leases/augur").elapsed();
    let report_b = b.await.unwrap().unwrap();

    let (writes_a, writes_b) = (scale_writes(&proxy_a), scale_writes(&proxy_b));
    assert!(!writes_b.is_empty() && report_b.totals.executed > 0, "{ns}: the standby took over");
    let b_first = writes_b[0];
    assert!(b_first > faulted, "{ns}: the standby waited for the Lease");
    let late: Vec<Duration> = writes_a.iter().filter(|t| **t >= b_first).map(|t| t.duration_since(faulted)).collect();
    assert!(late.is_empty(), "{ns}: augur-a wrote {late:?} after the fault, at or after augur-b's first write ({:?})", b_first.duration_since(faulted));
    assert!(a_took < run_for + Duration::from_secs(5), "{ns}: augur-a ran {a_took:?} for a --for of {run_for:?}");
    // The audit is honest: every Event has its executed record, by the replica that wrote it.
    let scaled = scaled_events(admin, ns).await;
    let by = |who: &str| scaled.iter().filter(|r| *r == who).count();
    assert_eq!((by("augur-a"), by("augur-b")), (with_verdict(&common::records(&audit_a), "executed").len(), with_verdict(&common::records(&audit_b), "executed").len()), "{ns}");
    assert!(report_a.totals.executed > 0, "{ns}");
}

/// Class 2. The leader's renewals land, but their answers are lost (the body is cut short).
/// It reads the Lease back, sees its own renewal there, and keeps leading: actions go on
/// through the whole run, and the Lease never changes hands.
#[tokio::test(flavor = "multi_thread")]
async fn when_renewals_land_but_their_answers_are_lost_the_leader_keeps_leading() {
    let case = RunCase::new("renew-lost", |p| p).await;
    let (proxy, audit) = (&case.proxy, case.audit("augur-a"));
    let options = case.options("augur-a", Duration::from_secs(10), true, None);
    let run = tokio::spawn(augur::commands::run(options));
    eventually("augur-a to lead and scale", || async { !scale_writes(proxy).is_empty() }).await;
    proxy.add(Rule::new("PUT", "/leases/augur", Fault::Truncate));
    let faulted = Instant::now();
    run.await.unwrap().unwrap();
    let renewals = proxy.seen().iter().filter(|s| s.method == "PUT" && s.path.contains("/leases/augur") && s.fault == Some(Fault::Truncate)).count();
    assert!(renewals >= 4, "the renewals went on, their answers cut: {renewals}");
    // Later than the renew deadline (3 s) after the fault, the leader still writes.
    let late = scale_writes(proxy).into_iter().filter(|t| t.duration_since(faulted) > Duration::from_secs(4)).count();
    assert!(late > 0, "no write more than 4 s after the renewals' answers were lost: {:?}", common::records(&audit).iter().rev().take(3).collect::<Vec<_>>());
    let lease = Api::<Lease>::namespaced(case.admin.clone(), case.ns).get("augur").await.unwrap().spec.unwrap();
    assert_eq!(lease.lease_transitions, Some(0), "the Lease never changed hands: {lease:?}");
}

/// Class 3. A scale whose answer never comes: each attempt is cut at its deadline, no attempt
/// starts after the run's end, `host run` (the binary) ends within `--for` plus a few seconds
/// with exit code 0, and the audit says what happened (the write is read back: it did not land).
#[tokio::test(flavor = "multi_thread")]
async fn a_write_that_never_answers_is_cut_and_host_run_ends_on_time() {
    let case = RunCase::new("stall", |p| p).await;
    case.proxy.add(Rule::new("PUT", "/scale", Fault::Stall));
    let (audit, run_for) = (case.audit("augur-a"), Duration::from_secs(4));
    // The real binary, so that its exit code and its time are the user's.
    let kubeconfig = case.proxy.kubeconfig(case.dir.path());
    let args: Vec<String> = ["run", "--no-leader-election", "--no-watch", "--quiet", "--for", "4s"].map(String::from).into_iter().chain(["--policy".into(), case.policy.display().to_string(), "--kubeconfig".into(), kubeconfig.display().to_string(), "--audit-log".into(), audit.display().to_string()]).collect();
    let out = tokio::task::spawn_blocking(move || std::process::Command::new(common::host_binary()).args(&args).output().unwrap()).await.unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    // `--for` counts from the first tick, which begins by reading the Deployment (starting,
    // the binary compiles its plugins, which takes seconds on a loaded machine).
    let took = first(&case.proxy, "GET", "/deployments/web").elapsed();
    assert!(took < run_for + Duration::from_secs(4), "host run took {took:?} for a --for of {run_for:?}");
    let all = common::records(&audit);
    let failed = with_verdict(&all, "failed");
    assert!(!failed.is_empty(), "{:?}", common::records(&audit));
    assert!(failed[0]["result"].as_str().unwrap().contains("did not land"), "{}", failed[0]);
    assert_eq!(replicas(&case.admin, case.ns, "web").await, 2, "nothing reached the API server");
    assert!(scaled_events(&case.admin, case.ns).await.is_empty());
}

/// Class 3, reads: the workload's read stalls (the Deployment GET never answers). The read
/// ends with the run, so `host run` still ends on time, and the audit says why it held.
#[tokio::test(flavor = "multi_thread")]
async fn a_read_that_never_answers_does_not_hold_the_run_past_its_end() {
    let case = RunCase::new("stall-read", |p| p).await;
    case.proxy.add(Rule::new("GET", "/namespaces/stall-read/deployments/web", Fault::Stall));
    let (audit, run_for) = (case.audit("augur-a"), Duration::from_secs(3));
    let options = case.options("augur-a", run_for, false, None);
    augur::commands::run(options).await.unwrap();
    let took = first(&case.proxy, "GET", "/deployments/web").elapsed();
    assert!(took < run_for + Duration::from_secs(2), "host run took {took:?} after its first tick, for a --for of {run_for:?}");
    let all = common::records(&audit);
    assert!(all.iter().any(|r| r["error_stage"] == "collect" && r["reason"].as_str().unwrap_or_default().contains("the run ended")), "{all:?}");
    assert!(with_verdict(&all, "executed").is_empty());
}

/// Class 3, the client's own retries: a 429 with Retry-After is retried once, after the wait
/// the server asked for; a 503 that does not end is tried exactly `ATTEMPTS` times (no retry
/// layer underneath), and recorded as failed.
#[tokio::test(flavor = "multi_thread")]
async fn one_retry_policy_honours_retry_after_and_stacks_nothing() {
    let ns = "retries";
    let (admin, proxy, client) = behind_a_proxy(ns, 2).await;
    let executor = KubeExecutor::new(client, "augur-test");

    proxy.add(Rule::new("PUT", "/scale", Fault::Status { code: 429, retry_after: Some(1) }).times(1));
    let started = Instant::now();
    let result = executor.execute(&Order::new(&target(ns, "web"), &Action::Scale { replicas: 3 }, "429").seen_replicas(2)).await.unwrap();
    assert_eq!(result, "scaled 2 -> 3");
    // The throttled write and one retry (and one more if the retry met a 409 from the
    // Deployment controller's own status write, which a conflict retry re-reads).
    let conflicts = proxy.seen().iter().filter(|s| s.method == "PUT" && s.answered.is_some_and(|(_, status)| status == 409)).count();
    assert_eq!(scale_puts(&proxy), 2 + conflicts, "the throttled write and one retry");
    assert!(started.elapsed() >= Duration::from_secs(1), "the retry waited for Retry-After: {:?}", started.elapsed());

    proxy.clear();
    proxy.add(Rule::new("PUT", "/scale", Fault::Status { code: 503, retry_after: None }));
    let before = scale_puts(&proxy);
    let err = executor.execute(&Order::new(&target(ns, "web"), &Action::Scale { replicas: 4 }, "503").seen_replicas(3)).await.unwrap_err();
    assert!(matches!(err, ExecuteError::Failed(_)), "{err}");
    assert_eq!(scale_puts(&proxy) - before, augur::cluster::ATTEMPTS as usize, "one retry policy: no retries stacked underneath");
    assert_eq!(replicas(&admin, ns, "web").await, 3);
}

/// Class 4. During an outage (the write answered 503) an operator scales the Deployment to 5.
/// Augur's retry re-reads, sees a count other than the one its decision saw, and writes
/// nothing: the operator's change wins, and the record says so (no `scaled 5 -> 4`).
#[tokio::test(flavor = "multi_thread")]
async fn an_operators_change_during_an_outage_wins_over_a_retry() {
    let ns = "operator";
    let (admin, proxy, client) = behind_a_proxy(ns, 3).await;
    proxy.add(Rule::new("PUT", "/scale", Fault::Status { code: 503, retry_after: None }).times(1));
    // Between Augur's first read and its (failing) write, the operator scales to 5 directly.
    let operator = admin.clone();
    let hook: augur::cluster::WriteHook = std::sync::Arc::new(move || {
        let operator = operator.clone();
        Box::pin(async move {
            let deployments = Api::<k8s_openapi::api::apps::v1::Deployment>::namespaced(operator, "operator");
            if deployments.get("web").await.unwrap().spec.unwrap().replicas == Some(3) {
                deployments.patch("web", &PatchParams::default(), &Patch::Merge(json!({ "spec": { "replicas": 5 } }))).await.unwrap();
            }
        })
    });
    let executor = KubeExecutor::new(client, "augur-test").before_write(hook);
    let err = executor.execute(&Order::new(&target(ns, "web"), &Action::Scale { replicas: 4 }, "decided on 3").seen_replicas(3)).await.unwrap_err();
    assert!(matches!(&err, ExecuteError::Superseded(m) if m.contains("has 5 replicas, not the 3")), "{err}");
    assert_eq!(replicas(&admin, ns, "web").await, 5, "the operator's change stands");
    assert!(scaled_events(&admin, ns).await.is_empty(), "nothing was scaled by Augur");
    assert_eq!(scale_puts(&proxy), 1, "the one write that failed; the retry wrote nothing");
}

/// Class 5. Writes whose answers are lost are read back and recorded as what happened, each
/// with exactly one Event: a scale that landed (connection reset after forwarding), a cordon
/// whose every answer was cut short, an Event whose first POST got a 500 and one whose first
/// answer was lost (the retry meets the first: one Event, not two), a pod deletion and a
/// rollout restart.
#[tokio::test(flavor = "multi_thread")]
async fn writes_whose_answers_are_lost_are_recorded_as_what_happened() {
    let ns = "lost";
    let (admin, proxy, client) = behind_a_proxy(ns, 2).await;
    node(&admin, "lost-node").await;
    node(&admin, "lost-node-2").await;
    let executor = KubeExecutor::new(client, "augur-test");
    let t = target(ns, "web");

    proxy.add(Rule::new("PUT", "/scale", Fault::ResetAfter).times(1));
    let result = executor.execute(&Order::new(&t, &Action::Scale { replicas: 4 }, "lost answer").seen_replicas(2)).await.unwrap();
    // The write whose answer was cut landed if the API server carried it out (it may have met
    // a conflict with the controller's own update, or on a loaded machine the proxy's request
    // may have failed: then the retry wrote it, and the record says so plainly).
    let cut = proxy.seen().into_iter().find(|s| s.fault == Some(Fault::ResetAfter)).unwrap();
    assert!(result.starts_with("scaled 2 -> 4") && result.contains("landed") == cut.carried_out(), "{result} ({cut:?})");
    assert_eq!(replicas(&admin, ns, "web").await, 4);
    assert_eq!(scaled_events(&admin, ns).await.len(), 1);

    proxy.add(Rule::new("PATCH", "/nodes/lost-node", Fault::Truncate));
    let result = executor.execute(&Order::new(&t, &Action::CordonNode { node: "lost-node".into() }, "hot")).await.unwrap();
    assert!(result.starts_with("cordoned lost-node") && result.contains("landed"), "{result}");
    let cordoned = Api::<Node>::all(admin.clone()).get("lost-node").await.unwrap();
    assert_eq!(cordoned.spec.unwrap().unschedulable, Some(true));
    let cordon_events = |all: Vec<k8s_openapi::api::events::v1::Event>, name: &str| all.into_iter().filter(|e| e.reason.as_deref() == Some("CordonedNode") && e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name)).count();
    assert_eq!(cordon_events(events(&admin, "default").await, "lost-node"), 1, "one Event for the cordon that landed");

    proxy.clear();
    proxy.add(Rule::new("POST", "/events", Fault::Status { code: 500, retry_after: None }).times(1));
    executor.execute(&Order::new(&t, &Action::Scale { replicas: 5 }, "event 500").seen_replicas(4)).await.unwrap();
    assert_eq!(scaled_events(&admin, ns).await.len(), 2, "the Event after a 500 was retried");

    proxy.add(Rule::new("POST", "/events", Fault::ResetAfter).times(1));
    executor.execute(&Order::new(&t, &Action::CordonNode { node: "lost-node-2".into() }, "event lost")).await.unwrap();
    assert_eq!(cordon_events(events(&admin, "default").await, "lost-node-2"), 1, "the retry met the first Event: one, not two");

    // A pod deleted with its answer lost: the retry finds it gone, and says the delete landed.
    let pods: Api<k8s_openapi::api::core::v1::Pod> = Api::namespaced(admin.clone(), ns);
    eventually("the pods of web", || async { !pods.list(&Default::default()).await.unwrap().items.is_empty() }).await;
    let victim = pods.list(&Default::default()).await.unwrap().items[0].metadata.name.clone().unwrap();
    proxy.clear();
    proxy.add(Rule::new("DELETE", &format!("/pods/{victim}"), Fault::ResetAfter).times(1));
    let result = executor.execute(&Order::new(&t, &Action::RestartPod { pod: victim.clone() }, "leak")).await.unwrap();
    let cut = proxy.seen().into_iter().find(|s| s.method == "DELETE" && s.fault == Some(Fault::ResetAfter)).unwrap();
    assert!(result.starts_with(&format!("deleted pod {victim}")) && result.contains("the pod is gone") == cut.carried_out(), "{result} ({cut:?})");
    assert!(pods.get_opt(&victim).await.unwrap().is_none_or(|p| p.metadata.deletion_timestamp.is_some()));

    // A rollout restart whose every answer is cut short: read back, the stamp is there.
    proxy.add(Rule::new("PATCH", "/deployments/web", Fault::Truncate));
    let result = executor.execute(&Order::new(&t, &Action::RolloutRestart, "leak everywhere")).await.unwrap();
    assert!(result.starts_with("restarting every pod") && result.contains("landed"), "{result}");
    let deployment = Api::<k8s_openapi::api::apps::v1::Deployment>::namespaced(admin.clone(), ns).get("web").await.unwrap();
    let stamped = deployment.spec.unwrap().template.metadata.unwrap().annotations.unwrap_or_default();
    assert!(stamped.contains_key("kubectl.kubernetes.io/restartedAt"), "{stamped:?}");
}

/// Class 6. One scale write is delayed 3.5 s (under a 3 s cooldown); the next scale waits the
/// cooldown from when that write landed, not from when it was decided.
#[tokio::test(flavor = "multi_thread")]
async fn cooldowns_count_from_when_the_change_lands() {
    let case = RunCase::new("landed", |p| p.replace("cooldown: 1s", "cooldown: 3s")).await;
    // 3.5 s: longer than the cooldown, well inside an attempt's 5 s deadline.
    case.proxy.add(Rule::new("PUT", "/scale", Fault::Delay(Duration::from_millis(3500))).times(1));
    let audit = case.audit("augur-a");
    let options = case.options("augur-a", Duration::from_secs(10), false, None);
    augur::commands::run(options).await.unwrap();
    let writes = scale_writes(&case.proxy);
    assert!(writes.len() >= 2, "{:?}", common::records(&audit));
    let gap = writes[1].duration_since(writes[0]);
    // The guard keeps whole seconds: 3 s from the landing is at least 2 s after it.
    assert!(gap >= Duration::from_secs(2), "the second scale landed {gap:?} after the delayed first");
}

/// Class 8. `host run` on a cluster warms its histories from the policy's Prometheus through
/// the same source that collects, so with `min_history: 5` the first tick already acts.
#[tokio::test(flavor = "multi_thread")]
async fn on_a_cluster_the_warm_start_fills_the_history_and_the_first_tick_acts() {
    let case = RunCase::new("warm", |p| p.replace("min_history: 1", "min_history: 5")).await;
    let audit = case.audit("augur-a");
    let options = case.options("augur-a", Duration::from_secs(2), false, None);
    augur::commands::run(options).await.unwrap();
    let all = common::records(&audit);
    assert!(!all.is_empty());
    assert_eq!(all[0]["verdict"], "executed", "the first record is an action, not a warm-up refusal: {}", all[0]);
    assert!(all.iter().all(|r| !r.to_string().contains("warming up")), "{all:?}");
}

/// Class 7, the source's half (the plugin's half is its native test): a node Ready for an
/// hour but under MemoryPressure is not healthy, so Augur does not uncordon it.
#[tokio::test(flavor = "multi_thread")]
async fn a_node_under_pressure_is_not_healthy_however_long_it_has_been_ready() {
    use augur::metrics::WorkloadSource;
    let admin = control_plane().client().await;
    namespace(&admin, "pressure").await;
    deployment(&admin, "pressure", "web", 1).await;
    node(&admin, "pressure-node").await;
    let hour_ago = k8s_openapi::jiff::Timestamp::now() - k8s_openapi::jiff::SignedDuration::from_secs(3600);
    let minute_ago = k8s_openapi::jiff::Timestamp::now() - k8s_openapi::jiff::SignedDuration::from_secs(60);
    let status = |pressure: &str, at: k8s_openapi::jiff::Timestamp| {
        json!({ "status": { "conditions": [
            { "type": "Ready", "status": "True", "reason": "KubeletReady", "message": "ok", "lastHeartbeatTime": hour_ago.to_string(), "lastTransitionTime": hour_ago.to_string() },
            { "type": "MemoryPressure", "status": pressure, "reason": "Test", "message": "test", "lastHeartbeatTime": at.to_string(), "lastTransitionTime": at.to_string() },
        ] } })
    };
    let nodes: Api<Node> = Api::all(admin.clone());
    nodes.patch_status("pressure-node", &PatchParams::default(), &Patch::Merge(status("True", minute_ago))).await.unwrap();
    let text = "name: web\ntarget: { kind: Deployment, namespace: pressure, name: web }\nmetrics: [{ name: cpu, query: cpu }]\nforecast: { baseline: last-value }\nrisks: []\nremediations: []\nguard: { min_replicas: 1, max_replicas: 5 }\naudit: { path: a.jsonl }\n";
    let policy = augur::config::parse(text, &common::root().join("policies/t.yaml"), &augur::config::Catalog::shipped()).unwrap_or_else(|p| panic!("{p:?}"));
    let source = augur::cluster::KubeWorkloads::new(admin.clone());
    let seen = source.workload(&policy).await.unwrap();
    let n = seen.nodes.iter().find(|n| n.name == "pressure-node").unwrap();
    assert!(n.ready && n.pressure == ["MemoryPressure"] && n.healthy_seconds == 0, "{n:?}");
    nodes.patch_status("pressure-node", &PatchParams::default(), &Patch::Merge(status("False", minute_ago))).await.unwrap();
    let seen = source.workload(&policy).await.unwrap();
    let n = seen.nodes.iter().find(|n| n.name == "pressure-node").unwrap();
    assert!(n.pressure.is_empty() && (55..=70).contains(&n.healthy_seconds), "healthy since the pressure cleared a minute ago, not since Ready an hour ago: {n:?}");
}
