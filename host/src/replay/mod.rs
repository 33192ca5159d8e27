//! Replays: a policy, the Kubernetes HPA and an oracle over the same trace (issue 7; in
//! progress). So far: the HPA model (`hpa`).

pub mod hpa;
