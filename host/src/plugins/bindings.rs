//! The only module that calls `bindgen!`. It generates the host side of the two worlds in
//! `wit/plugin.wit` and converts between the generated types and the host's `domain` types,
//! so that nothing else in the host sees generated code.

use crate::domain;

mod risk_world {
    wasmtime::component::bindgen!({ world: "risk-plugin", path: "../wit" });
}

mod remediation_world {
    wasmtime::component::bindgen!({
        world: "remediation-plugin",
        path: "../wit",
        with: {
            "augur:plugin/types": super::risk_world::augur::plugin::types,
            "augur:plugin/host": super::risk_world::augur::plugin::host,
        },
    });
}

pub use remediation_world::{RemediationPlugin, RemediationPluginPre};
pub use risk_world::augur::plugin::{host, types as wit};
pub use risk_world::{RiskPlugin, RiskPluginPre};

impl From<wit::Level> for domain::Level {
    fn from(level: wit::Level) -> Self {
        match level {
            wit::Level::None => Self::None,
            wit::Level::Low => Self::Low,
            wit::Level::Medium => Self::Medium,
            wit::Level::High => Self::High,
            wit::Level::Critical => Self::Critical,
        }
    }
}

impl From<domain::Level> for wit::Level {
    fn from(level: domain::Level) -> Self {
        match level {
            domain::Level::None => Self::None,
            domain::Level::Low => Self::Low,
            domain::Level::Medium => Self::Medium,
            domain::Level::High => Self::High,
            domain::Level::Critical => Self::Critical,
        }
    }
}

impl From<&domain::Target> for wit::Target {
    fn from(t: &domain::Target) -> Self {
        Self { kind: t.kind.clone(), namespace: t.namespace.clone(), name: t.name.clone() }
    }
}

impl From<wit::Risk> for domain::Risk {
    fn from(r: wit::Risk) -> Self {
        Self {
            level: r.level.into(),
            score: r.score,
            seconds_to_breach: r.seconds_to_breach,
            required_replicas: r.required_replicas,
            // Shown on terminal lines: one line, no control characters, capped.
            reason: crate::text::shown(&r.reason).into_owned(),
        }
    }
}

impl From<&domain::Risk> for wit::Risk {
    fn from(r: &domain::Risk) -> Self {
        Self {
            level: r.level.into(),
            score: r.score,
            seconds_to_breach: r.seconds_to_breach,
            required_replicas: r.required_replicas,
            reason: r.reason.clone(),
        }
    }
}

impl From<&domain::Workload> for wit::Workload {
    fn from(w: &domain::Workload) -> Self {
        Self {
            target: (&w.target).into(),
            replicas: w.replicas,
            ready_replicas: w.ready_replicas,
            pods: w.pods.iter().map(Into::into).collect(),
            nodes: w.nodes.iter().map(Into::into).collect(),
        }
    }
}

impl From<&domain::Pod> for wit::Pod {
    fn from(p: &domain::Pod) -> Self {
        Self {
            name: p.name.clone(),
            node: p.node.clone(),
            phase: p.phase.clone(),
            ready: p.ready,
            cpu_cores: p.cpu_cores,
            memory_bytes: p.memory_bytes,
            age_seconds: p.age_seconds,
        }
    }
}

impl From<&domain::Node> for wit::Node {
    fn from(n: &domain::Node) -> Self {
        Self {
            name: n.name.clone(),
            ready: n.ready,
            schedulable: n.schedulable,
            cordoned_by_augur: n.cordoned_by_augur,
            temperature_celsius: n.temperature_celsius,
            pressure: n.pressure.clone(),
            healthy_seconds: n.healthy_seconds,
        }
    }
}

impl From<wit::Proposal> for domain::Proposal {
    fn from(p: wit::Proposal) -> Self {
        let action = match p.action {
            wit::Action::Scale(replicas) => domain::Action::Scale { replicas },
            wit::Action::RestartPod(pod) => domain::Action::RestartPod { pod },
            wit::Action::RolloutRestart => domain::Action::RolloutRestart,
            wit::Action::CordonNode(node) => domain::Action::CordonNode { node },
            wit::Action::UncordonNode(node) => domain::Action::UncordonNode { node },
        };
        Self { action, reason: crate::text::shown(&p.reason).into_owned() }
    }
}

/// What a risk plugin is given: the forecast with its context.
pub struct ForecastInput<'a> {
    pub target: &'a domain::Target,
    pub metric: &'a str,
    pub unit: &'a str,
    pub history: &'a [f64],
    pub forecast: &'a domain::Forecast,
    pub replicas: u32,
    pub ready_replicas: u32,
    /// The policy's interval: what is decided now stands at least this long.
    pub interval_seconds: u32,
    /// The pods' start-up time, creation to ready, measured or fixed by the policy.
    pub startup_seconds: Option<u32>,
}

impl From<&ForecastInput<'_>> for wit::Forecast {
    fn from(input: &ForecastInput<'_>) -> Self {
        Self {
            target: input.target.into(),
            metric: input.metric.to_string(),
            unit: input.unit.to_string(),
            step_seconds: input.forecast.step_seconds,
            history: input.history.to_vec(),
            predicted: input.forecast.predicted.clone(),
            lower: input.forecast.lower.clone(),
            upper: input.forecast.upper.clone(),
            forecaster: input.forecast.forecaster.clone(),
            replicas: input.replicas,
            ready_replicas: input.ready_replicas,
            interval_seconds: input.interval_seconds,
            startup_seconds: input.startup_seconds,
        }
    }
}
