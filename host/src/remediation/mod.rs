//! After the plugins propose: the guard decides, the executor acts, the audit records, and the
//! guard's state persists across restarts.

pub mod audit;
mod executor;
pub mod guard;
pub mod state;

pub use executor::{ExecuteError, Executor, Order, Rejection};
