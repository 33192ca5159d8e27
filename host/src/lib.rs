//! Augur watches Kubernetes workloads, forecasts their next minutes, and remediates ahead of
//! trouble through sandboxed WebAssembly plugins that propose actions and a guard that decides.
//!
//! The rooms, from the ground up (each imports only rooms listed before it; see
//! docs/architecture.md): `domain` (the types that cross the plugin boundary), `config` (policy
//! files, model cards, limits), `text` (outside text made safe for a terminal line), `series`
//! (CSV series), `tls`, `metrics` (sources), `forecast`
//! (forecasters), `plugins` (the wasm runtime), `remediation` (guard, executor seam, audit,
//! state), `cluster` (Kubernetes), `sim` (the built-in simulated cluster), `telemetry` (Augur's
//! own metrics), `engine` (one tick through all of them), `reload` (live reload, feeding the
//! engine), `commands` (run, validate, plugin check, stress) and `offline` (backtest, replay,
//! anomalies, NAB, plots).

pub mod cluster;
pub mod commands;
pub mod config;
pub mod domain;
pub mod engine;
pub mod forecast;
pub mod metrics;
pub mod offline;
pub mod plugins;
pub mod reload;
pub mod remediation;
pub mod series;
pub mod sim;
pub mod telemetry;
pub mod text;
pub mod tls;
