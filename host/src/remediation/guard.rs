//! The guard: the only place that decides whether a proposed action may run, in one call
//! (`judge`). Default-deny. In order: the metric must be past its warm-up, the rule must have
//! been granted the action (`capabilities:`), the policy must allow its kind, the action must
//! fit the workload and the policy's bounds (every kind by its own arm, with no catch-all,
//! so a new kind does not compile until someone decides its rules), then the safety flags,
//! the cooldowns and the hourly rate apply.
//!
//! guard.rs never calls the cluster, never writes a file and never changes its inputs: it
//! decides from the workload state and the guard state it is given, and the caller records
//! what it allowed.

use super::state::GuardState;
use crate::config::{Capabilities, GuardSpec, MAX_REPLICAS, wildcard};
use crate::domain::{Action, Proposal, Workload};
use std::time::{Duration, SystemTime};

/// What the guard decided about one proposal.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// Run it for real. The action may have been clamped (e.g. to max_replicas); `note` says how.
    Execute { action: Action, note: Option<String> },
    /// Run it as a dry-run: validated, recorded, nothing changes.
    DryRun { action: Action, note: Option<String> },
    /// Do not run it.
    Reject { reason: String },
}

/// Everything the guard judges a proposal against.
#[derive(Debug, Clone, Copy)]
pub struct Case<'a> {
    /// The policy's guard rails.
    pub spec: &'a GuardSpec,
    /// What the proposing rule was granted.
    pub capabilities: &'a Capabilities,
    /// The metric whose risk led to the proposal, and how many of its points were seen
    /// (`guard.min_history`: a forecast from a handful of points has intervals too wild to
    /// act on).
    pub metric: &'a str,
    pub seen: usize,
    /// The target's state as collected this tick, changed by the actions the guard has
    /// already allowed in it (`Workload::after`).
    pub workload: &'a Workload,
    /// When each kind of action last ran, for cooldowns and the hourly rate.
    pub state: &'a GuardState,
    pub now: SystemTime,
    /// The CLI's `--dry-run`, which wins over the policy.
    pub force_dry_run: bool,
}

/// Judges one proposal: the whole decision, from warm-up to the hourly rate.
pub fn judge(case: &Case<'_>, proposal: &Proposal) -> Verdict {
    let spec = case.spec;
    if let Some(why) = &case.workload.paused {
        return reject(format!("paused by an operator: {why}"));
    }
    if case.seen < spec.min_history {
        return reject(format!("warming up: {} of guard.min_history {} points of `{}` seen; a forecast from so few points is not acted on", case.seen, spec.min_history, case.metric));
    }
    if let Some(reason) = not_granted(case.capabilities, &proposal.action) {
        return reject(reason);
    }
    let kind = proposal.action.kind();
    if !spec.allowed_actions.contains(&kind) {
        return reject(format!("action kind `{}` is not in guard.allowed_actions", kind.as_str()));
    }
    let (action, note) = match allowed_shape(spec, &proposal.action, case.workload) {
        Ok(shaped) => shaped,
        Err(reason) => return reject(reason),
    };
    let dry_run = case.force_dry_run || spec.dry_run;
    if !dry_run && !spec.remediate {
        return reject("guard.mode is observe: Augur only assesses (set `mode: act` to act, or `mode: rehearse` to dry-run)".into());
    }
    if let Some(reason) = cooling_down(spec, &action, case) {
        return reject(reason);
    }
    let recent = case.state.actions_within(Duration::from_secs(3600), case.now);
    if recent >= spec.max_actions_per_hour as usize {
        return reject(format!("rate limit: {recent} actions in the last hour, guard.max_actions_per_hour is {}", spec.max_actions_per_hour));
    }
    if dry_run { Verdict::DryRun { action, note } } else { Verdict::Execute { action, note } }
}

/// Whether a proposal asks for nothing the bounds could ever allow and is not worth judging
/// or recording: a scale-down at `min_replicas`. A plugin does not know the guard's bounds,
/// so at the floor a quiet risk asks for fewer every tick; `judge` would reject each one.
pub fn idle(spec: &GuardSpec, proposal: &Proposal, workload: &Workload) -> bool {
    matches!(proposal.action, Action::Scale { replicas } if replicas < workload.replicas && workload.replicas <= spec.min_replicas)
}

/// The rule's grant (`capabilities:`): the kinds it may propose and, for the kinds that name
/// a node, the nodes it may name. Why `action` is not granted, or `None` when it is.
fn not_granted(capabilities: &Capabilities, action: &Action) -> Option<String> {
    let kind = action.kind();
    if !capabilities.actions.contains(&kind) {
        let granted: Vec<&str> = capabilities.actions.iter().map(|k| k.as_str()).collect();
        return Some(format!("not granted: this rule may propose only [{}], not `{}` (capabilities.actions)", granted.join(", "), kind.as_str()));
    }
    let node = match action {
        Action::CordonNode { node } | Action::UncordonNode { node } => node,
        // Pods are always the target's, checked by `allowed_shape`; the workload is the target.
        Action::Scale { .. } | Action::RestartPod { .. } | Action::RolloutRestart => return None,
    };
    let patterns = &capabilities.nodes;
    (!patterns.is_empty() && !patterns.iter().any(|p| wildcard(p, node))).then(|| format!("not granted: node `{}` matches none of capabilities.nodes [{}]", crate::text::shown(node), patterns.join(", ")))
}

/// The cooldown the action is still inside, if any.
fn cooling_down(spec: &GuardSpec, action: &Action, case: &Case<'_>) -> Option<String> {
    for &(key, delay) in cooldown_checks(action, case.workload) {
        let (wait, field) = match delay {
            Delay::Cooldown => (spec.cooldown, "cooldown"),
            Delay::ScaleDown => (spec.scale_down_delay.max(spec.cooldown), "scale_down_delay"),
        };
        if let Some(since) = case.state.since_last(key, case.now)
            && since < wait
        {
            return Some(format!("cooldown: last {key} was {} ago, guard.{field} is {}", human(since), human(wait)));
        }
    }
    None
}

/// The key under which an allowed action is recorded for cooldowns.
pub fn cooldown_key(action: &Action, workload: &Workload) -> &'static str {
    match action {
        Action::Scale { replicas } if *replicas > workload.replicas => "scale-up",
        Action::Scale { .. } => "scale-down",
        Action::RestartPod { .. } => "restart-pod",
        Action::RolloutRestart => "rollout-restart",
        Action::CordonNode { .. } => "cordon-node",
        Action::UncordonNode { .. } => "uncordon-node",
    }
}

/// Which of the policy's waits applies to a cooldown key.
#[derive(Debug, Clone, Copy)]
enum Delay {
    Cooldown,
    ScaleDown,
}

/// The cooldown keys an action must be clear of, and how long each.
fn cooldown_checks(action: &Action, workload: &Workload) -> &'static [(&'static str, Delay)] {
    match action {
        Action::Scale { replicas } if *replicas > workload.replicas => &[("scale-up", Delay::Cooldown)],
        Action::Scale { .. } => &[("scale-up", Delay::ScaleDown), ("scale-down", Delay::ScaleDown)],
        Action::RestartPod { .. } => &[("restart-pod", Delay::Cooldown)],
        Action::RolloutRestart => &[("rollout-restart", Delay::Cooldown), ("restart-pod", Delay::Cooldown)],
        Action::CordonNode { .. } => &[("cordon-node", Delay::Cooldown)],
        Action::UncordonNode { .. } => &[("uncordon-node", Delay::Cooldown)],
    }
}

/// Checks the action against the workload and the policy's bounds, per kind. Returns the
/// action to run (clamped where the policy clamps) and a note when it was changed.
fn allowed_shape(spec: &GuardSpec, action: &Action, workload: &Workload) -> Result<(Action, Option<String>), String> {
    match action {
        Action::Scale { replicas } => scale(spec, *replicas, workload.replicas),
        Action::RestartPod { pod } => {
            if !workload.pods.iter().any(|p| &p.name == pod) {
                // A name from the plugin: shown safe (it may hold anything).
                return Err(format!("pod {} is not a pod of {}", crate::text::shown(pod), workload.target));
            }
            if workload.ready_replicas < workload.replicas {
                return Err(format!("only {} of {} replicas are ready; restarting another pod now would cut capacity further", workload.ready_replicas, workload.replicas));
            }
            Ok((action.clone(), None))
        }
        Action::RolloutRestart => {
            if workload.ready_replicas < workload.replicas {
                return Err(format!("only {} of {} replicas are ready; a rollout restart now would cut capacity further", workload.ready_replicas, workload.replicas));
            }
            Ok((action.clone(), None))
        }
        Action::CordonNode { node } => {
            let Some(found) = workload.nodes.iter().find(|n| &n.name == node) else {
                return Err(format!("node {} does not run pods of {}", crate::text::shown(node), workload.target));
            };
            if !found.schedulable {
                return Err(format!("node {node} is already cordoned"));
            }
            if workload.nodes.iter().filter(|n| n.schedulable).count() <= 1 {
                return Err(format!("node {node} is the last schedulable node"));
            }
            Ok((action.clone(), None))
        }
        Action::UncordonNode { node } => match workload.nodes.iter().find(|n| &n.name == node) {
            None => Err(format!("node {} does not run pods of {}", crate::text::shown(node), workload.target)),
            Some(n) if n.schedulable => Err(format!("node {node} is not cordoned")),
            Some(n) if !n.cordoned_by_augur => Err(format!("node {node} was cordoned by someone else; Augur only undoes its own cordons")),
            Some(_) => Ok((action.clone(), None)),
        },
    }
}

fn scale(spec: &GuardSpec, wanted: u32, current: u32) -> Result<(Action, Option<String>), String> {
    // Kubernetes keeps replicas in an int32, whatever the policy says (validation refuses
    // larger bounds; a policy built in code is held to it here too).
    let bounded = wanted.clamp(spec.min_replicas, spec.max_replicas).min(MAX_REPLICAS);
    let stepped = if bounded > current { bounded.min(current.saturating_add(spec.max_step)) } else { bounded.max(current.saturating_sub(spec.max_step)) };
    if stepped == current {
        let why = if wanted > current {
            format!("replicas held at guard.max_replicas ({})", spec.max_replicas)
        } else if wanted < current {
            format!("replicas held at guard.min_replicas ({})", spec.min_replicas)
        } else {
            format!("the workload already has {current} replicas")
        };
        return Err(why);
    }
    let note = match (stepped != wanted, bounded != wanted) {
        (false, _) => None,
        (true, true) => Some(format!("clamped from {wanted} to {stepped} by guard.min/max_replicas ({}..{}) and guard.max_step ({})", spec.min_replicas, spec.max_replicas, spec.max_step)),
        (true, false) => Some(format!("limited from {wanted} to {stepped} by guard.max_step ({})", spec.max_step)),
    };
    Ok((Action::Scale { replicas: stepped }, note))
}

fn reject(reason: String) -> Verdict {
    Verdict::Reject { reason }
}

fn human(d: Duration) -> String {
    humantime::format_duration(Duration::from_secs(d.as_secs())).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{ActionKind, Node, Pod, Target};
    use rstest::rstest;
    use std::collections::BTreeSet;

    const T0: u64 = 1_000_000;

    fn spec() -> GuardSpec {
        GuardSpec {
            dry_run: false,
            remediate: true,
            min_replicas: 2,
            max_replicas: 10,
            max_step: 3,
            cooldown: Duration::from_secs(300),
            scale_down_delay: Duration::from_secs(900),
            max_actions_per_hour: 4,
            min_history: 10,
            allowed_actions: ActionKind::ALL.into_iter().collect(),
        }
    }

    fn node(name: &str, schedulable: bool, by_augur: bool) -> Node {
        Node { name: name.into(), ready: true, schedulable, cordoned_by_augur: by_augur, temperature_celsius: Some(60.0), pressure: vec![], healthy_seconds: 0 }
    }

    fn workload(replicas: u32) -> Workload {
        let pods = (0..replicas)
            .map(|i| Pod { name: format!("nginx-{i}"), node: "a".into(), phase: "Running".into(), ready: true, cpu_cores: None, memory_bytes: None, age_seconds: 600 , startup_seconds: None})
            .collect();
        Workload {
            target: Target { kind: "Deployment".into(), namespace: "default".into(), name: "nginx".into() },
            replicas,
            ready_replicas: replicas,
            pods,
            nodes: vec![node("a", true, false), node("b", true, false), node("c", false, true), node("d", false, false)],
            paused: None,
            scaled_by: None,
        }
    }

    fn at(seconds: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(seconds)
    }

    fn proposal(action: Action) -> Proposal {
        Proposal { action, reason: "test".into() }
    }

    fn scale(replicas: u32) -> Action {
        Action::Scale { replicas }
    }

    fn restart(pod: &str) -> Action {
        Action::RestartPod { pod: pod.into() }
    }

    fn cordon(node: &str) -> Action {
        Action::CordonNode { node: node.into() }
    }

    fn uncordon(node: &str) -> Action {
        Action::UncordonNode { node: node.into() }
    }

    fn with(edit: impl FnOnce(&mut GuardSpec)) -> GuardSpec {
        let mut s = spec();
        edit(&mut s);
        s
    }

    #[rstest]
    #[case::scale_up_within_bounds(spec(), scale(5), "execute scale to 5")]
    #[case::scale_clamped_to_max(with(|s| s.max_step = 20), scale(14), "execute scale to 10 (clamped from 14 to 10 by guard.min/max_replicas (2..10) and guard.max_step (20))")]
    #[case::scale_limited_by_step(spec(), scale(9), "execute scale to 5 (limited from 9 to 5 by guard.max_step (3))")]
    #[case::scale_below_min_clamped(spec(), scale(1), "reject replicas held at guard.min_replicas (2)")]
    #[case::scale_no_change(spec(), scale(2), "reject the workload already has 2 replicas")]
    #[case::kind_not_allowed(with(|s| s.allowed_actions = BTreeSet::from([ActionKind::Scale])), restart("nginx-0"), "reject action kind `restart-pod` is not in guard.allowed_actions")]
    #[case::nothing_allowed_by_default(with(|s| s.allowed_actions.clear()), scale(3), "reject action kind `scale` is not in guard.allowed_actions")]
    #[case::restart_own_pod(spec(), restart("nginx-1"), "execute restart pod nginx-1")]
    #[case::restart_foreign_pod(spec(), restart("postgres-0"), "reject pod postgres-0 is not a pod of Deployment default/nginx")]
    #[case::cordon_schedulable(spec(), cordon("a"), "execute cordon node a")]
    #[case::cordon_already_cordoned(spec(), cordon("c"), "reject node c is already cordoned")]
    #[case::cordon_unknown(spec(), cordon("zz"), "reject node zz does not run pods of Deployment default/nginx")]
    #[case::uncordon_own(spec(), uncordon("c"), "execute uncordon node c")]
    #[case::uncordon_operators(spec(), uncordon("d"), "reject node d was cordoned by someone else; Augur only undoes its own cordons")]
    #[case::uncordon_not_cordoned(spec(), uncordon("a"), "reject node a is not cordoned")]
    #[case::remediate_off(with(|s| s.remediate = false), scale(4), "reject guard.mode is observe: Augur only assesses (set `mode: act` to act, or `mode: rehearse` to dry-run)")]
    #[case::dry_run_policy(with(|s| { s.dry_run = true; s.remediate = false }), scale(4), "dry-run scale to 4")]
    fn verdicts(#[case] spec: GuardSpec, #[case] action: Action, #[case] expected: &str) {
        let verdict = check(&spec, false, &proposal(action), &workload(2), &GuardState::default(), at(T0));
        assert_eq!(render(&verdict), expected);
    }

    #[test]
    fn a_scale_down_at_the_floor_is_idle_and_nothing_else_is() {
        assert!(idle(&spec(), &proposal(scale(1)), &workload(2)));
        assert!(!idle(&spec(), &proposal(scale(2)), &workload(3)), "above the floor it is judged");
        assert!(!idle(&spec(), &proposal(scale(3)), &workload(2)), "a scale-up is judged");
        assert!(!idle(&spec(), &proposal(restart("nginx-0")), &workload(2)));
    }

    #[test]
    fn the_last_schedulable_node_is_never_cordoned() {
        let mut w = workload(2);
        w.nodes[1].schedulable = false;
        let verdict = check(&spec(), false, &proposal(cordon("a")), &w, &GuardState::default(), at(T0));
        assert_eq!(render(&verdict), "reject node a is the last schedulable node");
    }

    #[test]
    fn no_restart_while_a_replica_is_not_ready() {
        let mut w = workload(3);
        w.ready_replicas = 2;
        let verdict = check(&spec(), false, &proposal(restart("nginx-0")), &w, &GuardState::default(), at(T0));
        assert!(render(&verdict).starts_with("reject only 2 of 3 replicas are ready"));
    }

    #[test]
    fn a_paused_workload_is_not_acted_on_even_in_a_dry_run() {
        let mut w = workload(2);
        w.paused = Some("Deployment default/nginx has the annotation augur.io/paused".into());
        for (spec, force_dry_run) in [(spec(), false), (spec(), true), (with(|s| s.dry_run = true), false)] {
            let verdict = check(&spec, force_dry_run, &proposal(scale(4)), &w, &GuardState::default(), at(T0));
            assert_eq!(render(&verdict), "reject paused by an operator: Deployment default/nginx has the annotation augur.io/paused");
        }
        w.paused = None;
        assert_eq!(render(&check(&spec(), false, &proposal(scale(4)), &w, &GuardState::default(), at(T0))), "execute scale to 4");
    }

    #[test]
    fn cli_dry_run_wins_over_the_policy() {
        let verdict = check(&spec(), true, &proposal(scale(4)), &workload(2), &GuardState::default(), at(T0));
        assert_eq!(render(&verdict), "dry-run scale to 4");
    }

    #[test]
    fn cooldown_applies_per_kind() {
        let mut state = GuardState::default();
        state.record("scale-up", at(T0));
        let verdict = check(&spec(), false, &proposal(scale(4)), &workload(2), &state, at(T0 + 120));
        assert_eq!(render(&verdict), "reject cooldown: last scale-up was 2m ago, guard.cooldown is 5m");
        let other_kind = check(&spec(), false, &proposal(cordon("a")), &workload(2), &state, at(T0 + 120));
        assert_eq!(render(&other_kind), "execute cordon node a");
        let later = check(&spec(), false, &proposal(scale(4)), &workload(2), &state, at(T0 + 301));
        assert_eq!(render(&later), "execute scale to 4");
    }

    #[test]
    fn a_scale_down_never_delays_a_scale_up_but_waits_for_any_scale() {
        let mut state = GuardState::default();
        state.record("scale-down", at(T0));
        let up = check(&spec(), false, &proposal(scale(6)), &workload(4), &state, at(T0 + 60));
        assert_eq!(render(&up), "execute scale to 6");
        let mut after_up = GuardState::default();
        after_up.record("scale-up", at(T0));
        let down = check(&spec(), false, &proposal(scale(3)), &workload(4), &after_up, at(T0 + 600));
        assert_eq!(render(&down), "reject cooldown: last scale-up was 10m ago, guard.scale_down_delay is 15m");
        let later = check(&spec(), false, &proposal(scale(3)), &workload(4), &after_up, at(T0 + 900));
        assert_eq!(render(&later), "execute scale to 3");
        assert_eq!(cooldown_key(&scale(3), &workload(4)), "scale-down");
    }

    #[test]
    fn the_hourly_rate_is_enforced() {
        let mut state = GuardState::default();
        for (i, key) in ["scale-up", "restart-pod", "cordon-node", "uncordon-node"].into_iter().enumerate() {
            state.record(key, at(T0 + i as u64 * 600));
        }
        let verdict = check(&spec(), false, &proposal(scale(4)), &workload(2), &state, at(T0 + 2400));
        assert_eq!(render(&verdict), "reject rate limit: 4 actions in the last hour, guard.max_actions_per_hour is 4");
        let an_hour_later = check(&spec(), false, &proposal(scale(4)), &workload(2), &state, at(T0 + 3601));
        assert_eq!(render(&an_hour_later), "execute scale to 4");
    }

    /// The guard's judgement with every capability granted and the warm-up passed.
    fn check(spec: &GuardSpec, force_dry_run: bool, proposal: &Proposal, workload: &Workload, state: &GuardState, now: SystemTime) -> Verdict {
        let capabilities = Capabilities { actions: ActionKind::ALL.into_iter().collect(), nodes: Vec::new() };
        judge(&Case { spec, capabilities: &capabilities, metric: "cpu", seen: spec.min_history, workload, state, now, force_dry_run }, proposal)
    }

    fn render(verdict: &Verdict) -> String {
        let with_note = |word: &str, action: &Action, note: &Option<String>| match note {
            Some(note) => format!("{word} {action} ({note})"),
            None => format!("{word} {action}"),
        };
        match verdict {
            Verdict::Execute { action, note } => with_note("execute", action, note),
            Verdict::DryRun { action, note } => with_note("dry-run", action, note),
            Verdict::Reject { reason } => format!("reject {reason}"),
        }
    }

    #[test]
    fn a_forecast_from_too_few_points_is_not_acted_on() {
        let (spec, w, state) = (spec(), workload(2), GuardState::default());
        let capabilities = Capabilities { actions: ActionKind::ALL.into_iter().collect(), nodes: Vec::new() };
        let case = |seen| Case { spec: &spec, capabilities: &capabilities, metric: "cpu", seen, workload: &w, state: &state, now: at(T0), force_dry_run: false };
        let verdict = judge(&case(3), &proposal(scale(4)));
        assert_eq!(render(&verdict), "reject warming up: 3 of guard.min_history 10 points of `cpu` seen; a forecast from so few points is not acted on");
        assert_eq!(render(&judge(&case(10), &proposal(scale(4)))), "execute scale to 4");
    }

    #[rstest]
    #[case::kind_not_granted(&[ActionKind::CordonNode], &[], scale(4), "reject not granted: this rule may propose only [cordon-node], not `scale` (capabilities.actions)")]
    #[case::node_not_granted(&[ActionKind::CordonNode], &["worker-*"], cordon("a"), "reject not granted: node `a` matches none of capabilities.nodes [worker-*]")]
    #[case::node_granted(&[ActionKind::CordonNode], &["*"], cordon("a"), "execute cordon node a")]
    #[case::uncordon_node_not_granted(&[ActionKind::UncordonNode], &["b"], uncordon("c"), "reject not granted: node `c` matches none of capabilities.nodes [b]")]
    #[case::patterns_do_not_limit_pods(&[ActionKind::RestartPod], &["worker-*"], restart("nginx-0"), "execute restart pod nginx-0")]
    fn capabilities_are_checked_before_anything_else(#[case] kinds: &[ActionKind], #[case] nodes: &[&str], #[case] action: Action, #[case] expected: &str) {
        let (spec, w, state) = (spec(), workload(2), GuardState::default());
        let capabilities = Capabilities { actions: kinds.iter().copied().collect(), nodes: nodes.iter().map(|n| n.to_string()).collect() };
        let case = Case { spec: &spec, capabilities: &capabilities, metric: "cpu", seen: 10, workload: &w, state: &state, now: at(T0), force_dry_run: false };
        assert_eq!(render(&judge(&case, &proposal(action))), expected);
    }
}
