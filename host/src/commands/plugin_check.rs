//! `host plugin check`: what a component is, as the host sees it, before any policy uses it.

use crate::plugins::{Limits, Plugins};
use crate::config::files;
use anyhow::bail;

/// `host plugin check`: which world a component implements, what it imports and exports,
/// and whether it loads (compiles, imports only what is granted, exports its world, and
/// answers `check-settings` within the default limits). An error when it is no plugin.
pub fn plugin_check(file: &std::path::Path) -> anyhow::Result<String> {
    use crate::plugins::{PluginError, RuleSettings, World};
    use std::fmt::Write;
    let plugins = Plugins::new(Limits::default())?;
    let bytes = files::read(file, files::MAX_PLUGIN_BYTES).map_err(|e| anyhow::anyhow!("{} {e}; fix: {}", file.display(), e.fix()))?;
    let mut out = format!("{}: {} bytes, sha256 {}\n", file.display(), bytes.len(), crate::plugins::digest(&bytes));
    let mut failures = Vec::new();
    for world in [World::Risk, World::Remediation] {
        let loaded = match plugins.compile_bytes(file, &bytes, world) {
            Ok(loaded) => loaded,
            Err(e @ PluginError::Compile { .. }) => bail!("{e}; fix: build it as a component (`cargo build --target wasm32-wasip2`), see docs/plugins.md"),
            Err(e) => {
                failures.push(e.to_string());
                continue;
            }
        };
        writeln!(out, "  world:   {} (loads)", world.wit_name())?;
        writeln!(out, "  imports: {}", loaded.imports.join(", "))?;
        writeln!(out, "  exports: {}", loaded.exports.join(", "))?;
        let limits = Limits::default();
        match plugins.check_settings_of(&loaded, &RuleSettings::new(Default::default())) {
            Ok(problems) if problems.is_empty() => writeln!(out, "  check-settings with no settings: ok (default limits: {:?} deadline, {} MiB memory)", limits.deadline, limits.memory_bytes >> 20)?,
            Ok(problems) => writeln!(out, "  check-settings with no settings: {}", problems.iter().map(|p| p.message.as_str()).collect::<Vec<_>>().join("; "))?,
            Err(e) => bail!("{out}  but it fails when called: {e}"),
        }
        return Ok(out);
    }
    bail!("{}: not an Augur plugin of either world:\n  - {}", file.display(), failures.join("\n  - "))
}

