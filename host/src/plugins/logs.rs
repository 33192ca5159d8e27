//! Each plugin's share of the host's log: a token bucket per plugin (across all its calls,
//! rules and policies), so that a plugin that logs in a loop until its deadline costs a few
//! lines, not hundreds of MiB. What is dropped is counted, for `/metrics`
//! (`augur_plugin_log_lines_dropped_total`), and said once per burst on the host's own log.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

/// Lines a plugin may log at once.
pub const LOG_BURST: f64 = 50.0;
/// Lines a second a plugin may log after its burst.
pub const LOG_PER_SECOND: f64 = 10.0;

#[derive(Default)]
pub struct LogBudget {
    buckets: Mutex<HashMap<String, Bucket>>,
}

struct Bucket {
    tokens: f64,
    at: Instant,
    /// Dropped since the last `take_dropped`.
    dropped: u64,
    /// Whether the host has said, in this run of drops, that it drops.
    said: bool,
}

impl LogBudget {
    /// Whether `plugin` may log a line now; if not, the line is counted as dropped.
    pub fn admit(&self, plugin: &str) -> bool {
        let Ok(mut buckets) = self.buckets.lock() else { return false };
        let now = Instant::now();
        let bucket = buckets.entry(plugin.to_string()).or_insert(Bucket { tokens: LOG_BURST, at: now, dropped: 0, said: false });
        bucket.tokens = (bucket.tokens + now.duration_since(bucket.at).as_secs_f64() * LOG_PER_SECOND).min(LOG_BURST);
        bucket.at = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            bucket.said = false;
            return true;
        }
        bucket.dropped += 1;
        if !bucket.said {
            bucket.said = true;
            tracing::warn!(plugin, "plugin {plugin} logs more than {LOG_PER_SECOND} lines a second (after a burst of {LOG_BURST}); its further lines are dropped and counted in augur_plugin_log_lines_dropped_total");
        }
        false
    }

    /// Each plugin's lines dropped since the last call.
    pub fn take_dropped(&self) -> Vec<(String, u64)> {
        let Ok(mut buckets) = self.buckets.lock() else { return Vec::new() };
        buckets.iter_mut().filter(|(_, b)| b.dropped > 0).map(|(plugin, b)| (plugin.clone(), std::mem::take(&mut b.dropped))).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flood_keeps_its_burst_and_counts_the_rest() {
        let budget = LogBudget::default();
        let admitted = (0..10_000).filter(|_| budget.admit("loud")).count();
        // The burst, plus what refilled while the loop ran (well under a second).
        assert!((LOG_BURST as usize..LOG_BURST as usize + 10).contains(&admitted), "{admitted}");
        assert!(budget.admit("quiet"), "each plugin has its own budget");
        let dropped = budget.take_dropped();
        assert_eq!(dropped, vec![("loud".to_string(), 10_000 - admitted as u64)]);
        assert!(budget.take_dropped().is_empty(), "counted once");
    }
}
