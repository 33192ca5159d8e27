//! The limits of each plugin call that a policy may set (`limits:` of a rule), with the
//! host's defaults and the ceilings no policy may pass. The plugin runtime enforces them;
//! this module only says what they are.

use std::time::Duration;

/// The most linear memory any policy may give a plugin (the pooling allocator reserves this
/// much address space per slot).
pub const MAX_MEMORY_BYTES: usize = 128 << 20;

/// The most replicas a policy may name: Kubernetes' `replicas` is an int32.
pub const MAX_REPLICAS: u32 = i32::MAX as u32;

/// The most time any policy may give one plugin call.
pub const MAX_DEADLINE: Duration = Duration::from_secs(10);

/// Limits for every call of a plugin.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Wall-clock deadline of one call (instantiation included).
    pub deadline: Duration,
    /// Most linear memory one instance may grow to (at most `MAX_MEMORY_BYTES`).
    pub memory_bytes: usize,
    /// Most proposals one `plan` may return (a far longer list is refused before it is copied
    /// out of the guest).
    pub max_proposals: usize,
    /// Most bytes of text one call may return (reasons, names, settings problems).
    pub max_output_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self { deadline: Duration::from_millis(250), memory_bytes: 16 << 20, max_proposals: 64, max_output_bytes: 64 << 10 }
    }
}
