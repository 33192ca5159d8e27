//! The offline tools: what `host backtest`, `host replay`, `host anomalies` and `host nab`
//! compute on recorded series, through the same forecasters, plugins, guard and engine that
//! `host run` uses, and `plot`, their PNG charts. They read series through `crate::series`.
//!
//! Offline tools never reach a cluster or a metric store, and never write an audit log the
//! user keeps.

pub mod anomaly;
pub mod backtest;
pub mod plot;
pub mod replay;
