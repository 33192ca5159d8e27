//! Augur watches Kubernetes workloads, forecasts their next minutes, and remediates ahead of
//! trouble through sandboxed WebAssembly plugins that propose actions and a guard that decides.
//!
//! The modules follow the data's trip through one tick: `config` (policy files), `metrics`
//! (sources), `forecast` (forecasters), `plugins` (the wasm runtime), `remediation` (guard,
//! executor, audit, state), and `engine`, which walks a tick through them in order. `sim` is
//! the built-in simulated cluster; `telemetry` Augur's own metrics; `run` and `backtest` hold
//! the commands' work; `replay` (a policy against the HPA and an oracle on a trace),
//! `anomaly` (the offline anomaly pass and NAB scoring) and `plot` (their PNG charts).

pub mod anomaly;
pub mod backtest;
pub mod cluster;
pub mod config;
pub mod domain;
pub mod engine;
pub mod forecast;
pub mod metrics;
pub mod plot;
pub mod plugins;
pub mod reload;
pub mod remediation;
pub mod replay;
pub mod run;
pub mod sim;
pub mod telemetry;
