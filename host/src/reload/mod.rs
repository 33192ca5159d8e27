//! Live reload of policy files and plugin `.wasm` files while `host run` runs.
//!
//! Strategy: a `Reloader` task watches the folders of the policy files and of the plugins they
//! use (`notify`, non-recursive, so that an editor's save-by-rename is seen), gathers events
//! until the files have been quiet for the debounce, and then, on a blocking thread (off the
//! tick's path), re-reads each changed file. A file whose SHA-256 is unchanged is skipped
//! (unless SIGHUP forced the reload). A plugin is compiled, checked against what the host
//! grants and against its world, and asked to check the settings of every rule that uses it;
//! only then is it published, for all its users at once. A policy is parsed and validated, its
//! plugins and forecaster are loaded and checked, and the new `PolicyRuntime` goes to the
//! engine, which swaps it in between two ticks, keeping the history and guard state that still
//! apply. Anything that fails is rejected whole: the previous version keeps running, and the
//! failure is logged, counted in /metrics and written to the audit by the engine.

use crate::config::{self, Catalog, Policy, files, normal};
use crate::engine::{PolicyRuntime, Update};
use crate::plugins::{Plugins, RuleSettings, World, digest, plugin_name};
use crate::remediation::audit::FileKind;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

mod watch;

pub use watch::DocumentChange;

/// How long the files must be quiet before a reload: editors and `cp` write in several steps.
pub const DEFAULT_DEBOUNCE: Duration = Duration::from_millis(200);

/// A rule that uses a plugin: its world, the plugin path as the policy wrote it, its
/// settings and limits, and the rule's field path (with its policy file) for messages.
type RuleUse = (World, PathBuf, Arc<RuleSettings>, String);

/// How reloaded policies are started, as `host run` started the first ones.
#[derive(Debug, Clone, Default)]
pub struct ReloadOptions {
    pub audit_override: Option<PathBuf>,
    /// Load the guard state from the state file for a policy new to this run.
    pub resume: bool,
    pub debounce: Option<Duration>,
    /// Where plugins and models named in a policy are looked up.
    pub catalog: Catalog,
}

/// The reloader's view of the files: the `--policy` arguments, the accepted version of each
/// policy file, and the digest of every file it has accepted.
pub struct Reloader {
    plugins: Arc<Plugins>,
    args: Vec<PathBuf>,
    /// Accepted policies by canonical file, with the path as the engine knows it.
    policies: BTreeMap<PathBuf, (PathBuf, Policy)>,
    digests: BTreeMap<PathBuf, String>,
    /// The digest of the last version of each file that was rejected: seen again, it is not
    /// reported again.
    rejected: BTreeMap<PathBuf, String>,
    options: ReloadOptions,
    updates: mpsc::UnboundedSender<Update>,
}

impl Reloader {
    /// A reloader for the policies `host run` started with (and the plugins they use), which
    /// sends what it finds to `updates`.
    pub fn new(plugins: Arc<Plugins>, args: &[PathBuf], running: &[Policy], options: ReloadOptions, updates: mpsc::UnboundedSender<Update>) -> Self {
        let mut reloader = Self { plugins, args: args.iter().map(|a| normal(a)).collect(), policies: BTreeMap::new(), digests: BTreeMap::new(), rejected: BTreeMap::new(), options, updates };
        for policy in running {
            reloader.accept_policy(&policy.source, policy.clone());
        }
        reloader
    }

    fn accept_policy(&mut self, file: &Path, policy: Policy) {
        let key = normal(file);
        if let Ok(bytes) = files::read(file, files::MAX_TEXT_BYTES) {
            self.digests.insert(key.clone(), digest(&bytes));
        }
        for plugin in plugin_files(&policy) {
            if !self.digests.contains_key(&normal(&plugin))
                && let Some(d) = [World::Risk, World::Remediation].iter().find_map(|w| self.plugins.published(&plugin, *w)).map(|l| l.digest.clone())
            {
                self.digests.insert(normal(&plugin), d);
            }
        }
        self.policies.insert(key, (file.to_path_buf(), policy));
    }

    /// The folders to watch: those of the policy arguments and of every plugin in use.
    pub fn folders(&self) -> BTreeSet<PathBuf> {
        let mut folders = BTreeSet::new();
        for arg in &self.args {
            folders.insert(if arg.is_dir() { arg.clone() } else { arg.parent().map(Path::to_path_buf).unwrap_or_default() });
        }
        for (_, policy) in self.policies.values() {
            folders.extend(plugin_files(policy).iter().filter_map(|p| normal(p).parent().map(Path::to_path_buf)));
        }
        folders
    }

    /// Re-reads the given files (all known files with `force`), sends an `Update` for each
    /// that changed, and returns them for the log. Blocking: it compiles.
    pub fn reload(&mut self, changed: &BTreeSet<PathBuf>, force: bool) -> Vec<String> {
        let mut changed: BTreeSet<PathBuf> = if force { self.digests.keys().cloned().chain(self.policies.keys().cloned()).collect() } else { changed.iter().map(|p| normal(p)).collect() };
        // A ConfigMap's `..data` link swapped: every file of that folder may have changed.
        let swapped: Vec<PathBuf> = changed.iter().filter(|p| p.file_name().is_some_and(|n| n == KUBELET_DATA_LINK)).filter_map(|p| p.parent().map(Path::to_path_buf)).collect();
        for folder in swapped {
            changed.extend(self.policies.keys().chain(self.digests.keys()).filter(|f| f.parent() == Some(&folder)).cloned());
            if let Ok(entries) = std::fs::read_dir(&folder) {
                changed.extend(entries.filter_map(|e| e.ok()).map(|e| normal(&e.path())).filter(|p| self.is_policy_file(p)));
            }
        }
        let mut log = Vec::new();
        let users = self.plugin_users();
        for (plugin, rules) in &users {
            if changed.contains(plugin) {
                log.extend(self.reload_plugin(plugin, rules, force));
            }
        }
        let candidates: Vec<PathBuf> = changed.iter().filter(|p| self.is_policy_file(p)).cloned().collect();
        for file in candidates {
            log.extend(self.reload_policy(&file, force));
        }
        log
    }

    /// Every plugin file in use, with each rule that uses it: (world, settings, limits, rule's
    /// field path, policy file).
    fn plugin_users(&self) -> BTreeMap<PathBuf, Vec<RuleUse>> {
        let mut users: BTreeMap<PathBuf, Vec<_>> = BTreeMap::new();
        for (file, policy) in self.policies.values() {
            for (i, r) in policy.risks.iter().enumerate() {
                users.entry(normal(&r.plugin)).or_default().push((World::Risk, r.plugin.clone(), RuleSettings::with_limits(r.settings.clone(), r.limits), format!("{}: risks[{i}]", file.display())));
            }
            for (i, r) in policy.remediations.iter().enumerate() {
                users.entry(normal(&r.plugin)).or_default().push((World::Remediation, r.plugin.clone(), RuleSettings::with_limits(r.settings.clone(), r.limits), format!("{}: remediations[{i}]", file.display())));
            }
        }
        users
    }

    /// Whether a file event concerns a policy or a plugin in use (a watched folder also holds
    /// other files, e.g. an audit log written every tick, which must not delay a reload).
    pub fn is_relevant(&self, path: &Path) -> bool {
        let file = normal(path);
        if file.file_name().is_some_and(|n| n == KUBELET_DATA_LINK) {
            return true;
        }
        self.is_policy_file(&file) || self.policies.values().any(|(_, p)| plugin_files(p).iter().any(|f| normal(f) == file))
    }

    fn is_policy_file(&self, file: &Path) -> bool {
        self.policies.contains_key(file)
            || self.args.iter().any(|a| a == file)
            || (file.extension().is_some_and(|x| x == "yaml" || x == "yml") && file.parent().is_some_and(|dir| self.args.iter().any(|a| a == dir)))
    }

    fn send(&self, update: Update) {
        // The engine is gone only when the run is over.
        let _ = self.updates.send(update);
    }

    fn reject(&self, kind: FileKind, file: &Path, reason: String) -> String {
        let line = format!("{} {}: rejected, the previous version keeps running: {reason}", kind.as_str(), file.display());
        tracing::error!("{line}");
        self.send(Update::Rejected { kind, file: file.to_path_buf(), reason });
        line
    }

    /// Compiles a plugin's new version for every world it is used in, checks it against
    /// every rule's settings, and publishes it only if all pass.
    fn reload_plugin(&mut self, file: &Path, rules: &[RuleUse], force: bool) -> Option<String> {
        let bytes = match files::read(file, files::MAX_PLUGIN_BYTES) {
            Ok(bytes) => bytes,
            Err(e) => return Some(self.reject(FileKind::Plugin, file, format!("{e}; fix: {}", e.fix()))),
        };
        let new = digest(&bytes);
        if !force && (self.digests.get(file) == Some(&new) || self.rejected.get(file) == Some(&new)) {
            return None;
        }
        let mut compiled = Vec::new();
        let mut problems = Vec::new();
        for (world, path, settings, field) in rules {
            let loaded = match compiled.iter().find(|l: &&Arc<crate::plugins::Loaded>| l.world == *world && l.path == *path) {
                Some(loaded) => loaded.clone(),
                None => match self.plugins.compile_bytes(path, &bytes, *world) {
                    Ok(loaded) => {
                        let loaded = Arc::new(loaded);
                        compiled.push(loaded.clone());
                        loaded
                    }
                    Err(e) => {
                        problems.push(format!("{field}.plugin: {e}"));
                        continue;
                    }
                },
            };
            match self.plugins.check_settings_of(&loaded, settings) {
                Ok(found) => problems.extend(found.into_iter().map(|p| p.under(field).to_string())),
                Err(e) => problems.push(format!("{field}.plugin: {e}")),
            }
        }
        if !problems.is_empty() {
            problems.dedup();
            self.rejected.insert(file.to_path_buf(), new);
            return Some(self.reject(FileKind::Plugin, file, problems.join("; ")));
        }
        self.plugins.publish(compiled);
        self.rejected.remove(file);
        self.digests.insert(file.to_path_buf(), new.clone());
        let line = format!("plugin {} reloaded (sha256 {}), serving from the next tick", plugin_name(file), &new[..12]);
        tracing::info!("{line}");
        self.send(Update::Plugin { file: file.to_path_buf(), digest: new });
        Some(line)
    }

    /// Parses, validates and loads a policy file's new version.
    fn reload_policy(&mut self, file: &Path, force: bool) -> Option<String> {
        let known = self.policies.get(file).map(|(given, _)| given.clone());
        let shown = known.clone().unwrap_or_else(|| file.to_path_buf());
        let text = match files::read_text(file, files::MAX_TEXT_BYTES) {
            Ok(text) => text,
            Err(files::FileError::Missing) => {
                let given = known?;
                return Some(self.stop_policy(file, &given, "the file was deleted"));
            }
            Err(e) => return Some(self.reject(FileKind::Policy, &shown, format!("{e}; fix: {}", e.fix()))),
        };
        match self.consider_policy(file, &shown, &text, force) {
            Considered::Unchanged | Considered::StillRefused => None,
            Considered::Accepted { line } | Considered::Rejected { line, .. } => Some(line),
        }
    }

    /// A policy that does not live in a file (an AugurPolicy resource): its document, named
    /// by `source` (a path under the folder its relative paths resolve against), read,
    /// checked and loaded exactly as a file's new version is.
    pub fn apply_document(&mut self, source: &Path, text: &str) -> Considered {
        let key = normal(source);
        let shown = self.policies.get(&key).map(|(given, _)| given.clone()).unwrap_or_else(|| source.to_path_buf());
        self.consider_policy(&key, &shown, text, false)
    }

    /// A policy that does not live in a file was deleted: it stops. False if none ran.
    pub fn remove_document(&mut self, source: &Path, why: &str) -> bool {
        let key = normal(source);
        let Some(given) = self.policies.get(&key).map(|(given, _)| given.clone()) else {
            self.rejected.remove(&key);
            return false;
        };
        self.stop_policy(&key, &given, why);
        true
    }

    fn stop_policy(&mut self, key: &Path, given: &Path, why: &str) -> String {
        self.policies.remove(key);
        self.digests.remove(key);
        self.rejected.remove(key);
        let line = format!("policy {}: {why}; its policy stops", given.display());
        tracing::warn!("{line}");
        self.send(Update::Removed { file: given.to_path_buf() });
        line
    }

    /// Parses, validates and loads a policy's text; `key` is its file's key, `shown` its
    /// path as the engine knows it.
    fn consider_policy(&mut self, file: &Path, shown: &Path, text: &str, force: bool) -> Considered {
        let new = digest(text.as_bytes());
        if !force && self.digests.get(file) == Some(&new) {
            return Considered::Unchanged;
        }
        if !force && self.rejected.get(file) == Some(&new) {
            return Considered::StillRefused;
        }
        // Remembered now; forgotten below if it is accepted.
        self.rejected.insert(file.to_path_buf(), new.clone());
        let policy = match config::parse(text, shown, &self.options.catalog) {
            Ok(policy) => policy,
            Err(problems) => {
                let list: Vec<String> = problems.iter().map(ToString::to_string).collect();
                return self.refuse(shown, format!("{} problem(s): {}", list.len(), list.join("; ")));
            }
        };
        if let Some(problem) = config::clash(&policy, self.policies.iter().filter(|(f, _)| *f != file).map(|(_, (_, p))| p)) {
            return self.refuse(shown, problem.to_string());
        }
        let runtime = match PolicyRuntime::new(policy.clone(), &self.plugins, self.options.audit_override.as_deref(), self.options.resume) {
            Ok(runtime) => runtime,
            Err(e) => return self.refuse(shown, format!("{e:#}")),
        };
        // The engine appends to it from the next tick: it must open now.
        if let Err(e) = crate::remediation::audit::AuditLog::open(runtime.audit_path()) {
            return self.refuse(shown, format!("audit.path: {e:#}"));
        }
        self.accept_policy(shown, policy);
        self.rejected.remove(file);
        self.digests.insert(file.to_path_buf(), new.clone());
        let line = format!("policy {} reloaded (sha256 {}), serving from the next tick", shown.display(), &new[..12]);
        tracing::info!("{line}");
        self.send(Update::Policy { file: shown.to_path_buf(), runtime: Box::new(runtime), digest: new });
        Considered::Accepted { line }
    }

    fn refuse(&self, shown: &Path, reason: String) -> Considered {
        Considered::Rejected { line: self.reject(FileKind::Policy, shown, reason.clone()), reason }
    }
}

/// What became of a policy's new version, with the line logged about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Considered {
    /// The same text as the running version: nothing to do.
    Unchanged,
    /// The same text as the version last refused: refused again, and not reported again.
    StillRefused,
    /// Checked and loaded: it serves from the next tick.
    Accepted { line: String },
    /// Refused, and why (every problem, with its field and fix): the previous version, if
    /// any, keeps running.
    Rejected { line: String, reason: String },
}

/// The plugin files a policy uses.
fn plugin_files(policy: &Policy) -> Vec<PathBuf> {
    policy.risks.iter().map(|r| r.plugin.clone()).chain(policy.remediations.iter().map(|r| r.plugin.clone())).collect()
}

/// The link a mounted ConfigMap or Secret swaps to publish a new version of all its files.
const KUBELET_DATA_LINK: &str = "..data";
