//! The wasm runtime: compiles plugin components, checks them against their world and against
//! what the host grants, publishes them as one atomic set, and calls each in a fresh,
//! sandboxed store with the calling rule's limits.
//!
//! Strategy: `Plugins` keeps the *published* set, `(path, world) -> Arc<Loaded>`, behind one
//! lock that is held only to clone or swap an `Arc`. A tick opens a `Session`, which takes a
//! snapshot of that set, so one tick never mixes two versions of a plugin; a reload compiles
//! off the tick's path (`Plugins::compile`) and `publish`es the new set, which the next
//! session sees. Calls in flight keep their version alive through the `Arc`.
//!
//! Every call gets a fresh store and instance (no state leaks between calls, rules,
//! workloads or policies), a deadline (epoch interruption), a memory cap (a resource
//! limiter), and a cap on what it returns (wasmtime's hostcall fuel bounds what is copied out
//! of the guest before the host allocates it; proposals and text bytes are then counted). WASI is deny-by-default: a component may import
//! only `augur:plugin/*` and the WASI interfaces a language runtime needs to start (cli, io,
//! clocks, random, filesystem), and at run time those give no files, no environment, no
//! arguments, no network and a clock frozen at 0. Anything else it imports is refused at load.
//!
//! This module never decides anything: plugins propose, the guard decides.

pub mod bindings;
mod logs;

pub use crate::config::{Limits, MAX_DEADLINE, MAX_MEMORY_BYTES};
use crate::config::{Problem, files};
use crate::domain::{self, Level, Proposal, Risk};
use bindings::{ForecastInput, RemediationPluginPre, RiskPlugin, RiskPluginPre, wit};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;
use wasmtime::component::{Component, ComponentExportIndex, HasSelf, InstancePre, Linker, ResourceTable};
use wasmtime::{Engine, ResourceLimiter, Store, Trap};
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;
use wasmtime_wasi::{HostMonotonicClock, HostWallClock, WasiCtx, WasiCtxView, WasiView};

/// Settings of one rule, as the plugin reads them through `host.setting`, and the rule's limits.
pub type Settings = Arc<RuleSettings>;

/// A rule's settings, their content id (the `settings-id` a plugin may cache under) and the
/// limits of its calls (`None`: the runtime's defaults).
#[derive(Debug, Clone, PartialEq)]
pub struct RuleSettings {
    id: u64,
    values: BTreeMap<String, String>,
    limits: Option<Limits>,
}

impl RuleSettings {
    /// Wraps settings; equal contents get equal ids, so identical rules share a plugin's cache.
    pub fn new(values: BTreeMap<String, String>) -> Settings {
        Self::with_limits(values, None)
    }

    /// Settings whose calls run under `limits` instead of the runtime's defaults.
    pub fn with_limits(values: BTreeMap<String, String>, limits: Option<Limits>) -> Settings {
        use std::hash::{Hash, Hasher};
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        values.hash(&mut hasher);
        Arc::new(Self { id: hasher.finish(), values, limits })
    }
}

/// The epoch ticks every this long; deadlines are counted in ticks.
const EPOCH_TICK: Duration = Duration::from_millis(5);

/// Instances alive at once: every call has its own, and a few calls may overlap (the tick,
/// a reload checking settings, `host plugin check`).
const POOL_INSTANCES: u32 = 64;

/// What a warm pool slot keeps resident between calls (see `Plugins::with_compile_cache`).
const KEEP_RESIDENT_BYTES: usize = 2 << 20;

/// Idle slots kept warm (their touched pages resident, up to `KEEP_RESIDENT_BYTES` each): as
/// many as the calls that overlap in a tick, and a few for the other callers. The other idle
/// slots give all their memory back; with every slot warm, 64 slots held 100 MiB.
const WARM_SLOTS: u32 = 8;

/// Slots whose remainder goes back to the kernel in one batch.
const DECOMMIT_BATCH: usize = 8;

/// Which world a plugin implements.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum World {
    Risk,
    Remediation,
}

impl World {
    pub fn wit_name(self) -> &'static str {
        match self {
            World::Risk => "augur:plugin/risk-plugin@0.3.0",
            World::Remediation => "augur:plugin/remediation-plugin@0.3.0",
        }
    }
}

/// What a component may import. Everything else is refused at load, before it can run.
/// The WASI interfaces are those a language runtime (Rust's std, a JavaScript or Python
/// engine) imports to start; at run time they give nothing (see `Plugins::store`).
const GRANTED_IMPORTS: &[&str] = &["augur:plugin/types@0.3.0", "augur:plugin/host@0.3.0", "wasi:cli/", "wasi:io/", "wasi:clocks/", "wasi:random/", "wasi:filesystem/"];

fn granted(import: &str) -> bool {
    GRANTED_IMPORTS.iter().any(|g| if g.ends_with('/') { import.starts_with(g) } else { import == *g })
}

/// A plugin failure, naming the plugin.
#[derive(Debug, thiserror::Error)]
pub enum PluginError {
    // The reasons may carry the guest's own text (names in its binary, its panic message,
    // its stderr): each is shown as one safe line (`text::shown`).
    #[error("plugin {plugin}: cannot be read or compiled: {}", crate::text::shown(.reason))]
    Compile { plugin: String, reason: String },
    #[error("plugin {plugin}: does not implement {world}: {}", crate::text::shown(.reason))]
    Incompatible { plugin: String, world: &'static str, reason: String },
    #[error("plugin {plugin}: ran past its {deadline:?} deadline")]
    Deadline { plugin: String, deadline: Duration },
    #[error("plugin {plugin}: trapped: {}", crate::text::shown(.reason))]
    Trap { plugin: String, reason: String },
    #[error("plugin {plugin}: went over its memory limit of {limit} bytes (limits.memory)")]
    Memory { plugin: String, limit: usize },
    #[error("plugin {plugin}: declares {declared} bytes of memory or data, more than its limit of {limit} bytes (limits.memory); refused before it was instantiated")]
    DeclaredMemory { plugin: String, declared: u64, limit: usize },
    #[error("plugin {plugin}: returned too much: {detail}")]
    TooMuchOutput { plugin: String, detail: String },
}

/// The kind of a plugin failure, for metrics, logs and tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PluginErrorKind {
    Compile,
    Incompatible,
    Deadline,
    Trap,
    /// Over a limit of the rule: memory or output.
    Limit,
}

impl PluginErrorKind {
    pub fn as_str(self) -> &'static str {
        match self {
            PluginErrorKind::Compile => "compile",
            PluginErrorKind::Incompatible => "incompatible",
            PluginErrorKind::Deadline => "deadline",
            PluginErrorKind::Trap => "trap",
            PluginErrorKind::Limit => "limit",
        }
    }
}

impl PluginError {
    /// The kind of failure.
    pub fn kind(&self) -> PluginErrorKind {
        match self {
            PluginError::Compile { .. } => PluginErrorKind::Compile,
            PluginError::Incompatible { .. } => PluginErrorKind::Incompatible,
            PluginError::Deadline { .. } => PluginErrorKind::Deadline,
            PluginError::Trap { .. } => PluginErrorKind::Trap,
            PluginError::Memory { .. } | PluginError::DeclaredMemory { .. } | PluginError::TooMuchOutput { .. } => PluginErrorKind::Limit,
        }
    }
}

/// Caps a store's memory and tables, and remembers that it did (so that the failure is
/// reported as the limit, not as whatever the guest did when its allocation failed).
struct Limiter {
    memory_bytes: usize,
    hit: bool,
}

impl ResourceLimiter for Limiter {
    fn memory_growing(&mut self, _current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        if desired > self.memory_bytes {
            self.hit = true;
            wasmtime::bail!("memory limit of {} bytes reached", self.memory_bytes);
        }
        Ok(true)
    }

    fn table_growing(&mut self, _current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        if desired > 100_000 {
            self.hit = true;
            wasmtime::bail!("table limit of 100000 elements reached");
        }
        Ok(true)
    }
}

/// The clocks a plugin sees: frozen at 0. Plugins get time from their inputs (the forecast's
/// step, a pod's age), so that a call depends on nothing but its arguments.
struct FrozenClock;

impl HostWallClock for FrozenClock {
    fn resolution(&self) -> Duration {
        Duration::from_secs(1)
    }
    fn now(&self) -> Duration {
        Duration::ZERO
    }
}

impl HostMonotonicClock for FrozenClock {
    fn resolution(&self) -> u64 {
        1_000_000_000
    }
    fn now(&self) -> u64 {
        0
    }
}

/// The WASI version whose clocks `never_block` replaces (the one wasmtime-wasi implements; a
/// guest built against an older 0.2 release links to it too).
const WASI_CLOCKS: &str = "wasi:clocks/monotonic-clock@0.2.12";

/// Makes every clock subscription ready at once. wasmtime-wasi's `subscribe-duration` and
/// `subscribe-instant` sleep on the host's real clock, where the epoch deadline cannot reach:
/// a guest that sleeps for an hour, or polls a pollable due in an hour, would block its
/// thread (and the tick) for that long. With a clock frozen at 0 no time passes for the
/// guest, so every deadline it waits for is already due; its sleeps return at once and its
/// loops around them meet the epoch deadline like any other loop. The other pollables a
/// plugin can reach are ready at once too (stdin is empty, stdout/stderr are memory
/// pipes that never wait), and sockets are not granted, so no WASI call can block.
fn never_block(linker: &mut Linker<HostState>) -> anyhow::Result<()> {
    linker.allow_shadowing(true);
    let mut clock = linker.instance(WASI_CLOCKS)?;
    // Both take a u64 (a duration or an instant, in ns) and return a pollable.
    for name in ["subscribe-duration", "subscribe-instant"] {
        clock.func_wrap(name, ready)?;
    }
    linker.allow_shadowing(false);
    Ok(())
}

/// A pollable that is always ready.
struct Ready;

#[wasmtime_wasi::async_trait]
impl wasmtime_wasi::p2::Pollable for Ready {
    async fn ready(&mut self) {}
}

/// A clock subscription that is due at once, whatever its argument.
fn ready(mut store: wasmtime::StoreContextMut<'_, HostState>, _when: (u64,)) -> wasmtime::Result<(wasmtime::component::Resource<wasmtime_wasi::p2::DynPollable>,)> {
    let table = &mut store.data_mut().table;
    let pollable = table.push(Ready)?;
    Ok((wasmtime_wasi::p2::subscribe(table, pollable)?,))
}

/// The state of one store: what the host imports need, and the sandboxed WASI context.
pub struct HostState {
    plugin: Arc<str>,
    settings: Settings,
    /// Built on the guest's first WASI call (with its stderr pipe): most calls make none, and
    /// a context costs more than the rest of a fresh store (a seeded random source, clocks,
    /// pipes).
    wasi: Option<(WasiCtx, MemoryOutputPipe)>,
    table: ResourceTable,
    limiter: Limiter,
    logs: Arc<logs::LogBudget>,
}

impl HostState {
    /// What the guest wrote to its stderr (its panic message, say), if it wrote at all.
    fn stderr(&self) -> String {
        self.wasi.as_ref().map(|(_, stderr)| String::from_utf8_lossy(&stderr.contents()).trim().to_string()).unwrap_or_default()
    }
}

/// A WASI context that gives nothing: no network, no files, no environment, frozen clocks
/// (see `never_block`), stderr kept in memory for the error a trap becomes.
fn sandboxed_wasi() -> (WasiCtx, MemoryOutputPipe) {
    let stderr = MemoryOutputPipe::new(4096);
    let wasi = WasiCtx::builder()
        .stderr(stderr.clone())
        .wall_clock(FrozenClock)
        .monotonic_clock(FrozenClock)
        .allow_tcp(false)
        .allow_udp(false)
        .allow_ip_name_lookup(false)
        .build();
    (wasi, stderr)
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        let (ctx, _) = self.wasi.get_or_insert_with(sandboxed_wasi);
        WasiCtxView { ctx, table: &mut self.table }
    }
}

impl bindings::host::Host for HostState {
    fn log(&mut self, level: wit::Level, message: String) {
        let plugin = &*self.plugin;
        if !self.logs.admit(plugin) {
            return;
        }
        // One line, no control characters (a guest cannot forge a log line or steer the
        // terminal), and capped: a guest cannot flood the log with one call either.
        let message = crate::text::shown(&message);
        match domain::Level::from(level) {
            Level::None | Level::Low => tracing::debug!(plugin, "{message}"),
            Level::Medium => tracing::info!(plugin, "{message}"),
            Level::High | Level::Critical => tracing::warn!(plugin, "{message}"),
        }
    }

    fn setting(&mut self, key: String) -> Option<String> {
        self.settings.values.get(&key).cloned()
    }

    fn settings_id(&mut self) -> u64 {
        self.settings.id
    }
}

impl wit::Host for HostState {}

/// A compiled, checked, pre-linked plugin, with the exports it is called through.
pub struct Loaded {
    pub path: PathBuf,
    pub world: World,
    /// SHA-256 of the file's bytes, hex.
    pub digest: String,
    /// Every interface the component imports, e.g. `augur:plugin/host@0.3.0`, `wasi:cli/exit@0.2.6`.
    pub imports: Vec<String>,
    /// Every name the component exports, e.g. `plan`, `check-settings`.
    pub exports: Vec<String>,
    /// The most linear memory one of its modules needs at start (its initial memory, or its
    /// data segments if larger), in bytes: a call under a smaller `limits.memory` is refused
    /// before instantiation.
    pub declared_memory: u64,
    /// Its name for messages (`plugin_name`), shared by every call's store.
    name: Arc<str>,
    pre: InstancePre<HostState>,
    main: ComponentExportIndex,
    check: ComponentExportIndex,
}

impl std::fmt::Debug for Loaded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Loaded").field("path", &self.path).field("world", &self.world).field("digest", &self.digest).finish_non_exhaustive()
    }
}

/// The published plugins.
type PluginSet = HashMap<(PathBuf, World), Arc<Loaded>>;

/// Where compiled components are kept between runs: `AUGUR_COMPILE_CACHE` (a folder, or
/// `off`), else `$XDG_CACHE_HOME/augur/compiled`, else `~/.cache/augur/compiled`; none where
/// there is no home.
pub fn compile_cache_dir() -> Option<PathBuf> {
    let env = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty()).map(PathBuf::from);
    match env("AUGUR_COMPILE_CACHE") {
        Some(dir) if dir.as_os_str() == "off" => None,
        Some(dir) => Some(dir),
        None => env("XDG_CACHE_HOME").or_else(|| env("HOME").map(|h| h.join(".cache"))).map(|c| c.join("augur/compiled")),
    }
}

/// How the compile cache served this process' compilations so far.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheUse {
    pub directory: PathBuf,
    /// Components read back compiled.
    pub hits: usize,
    /// Components compiled (and stored).
    pub misses: usize,
}

/// The wasm engine, the linker and the published plugins.
pub struct Plugins {
    engine: Engine,
    /// wasmtime's own cache of compiled code, keyed by the component's bytes and the
    /// engine's settings and version: a restart, or a reload of an unchanged plugin, does
    /// not compile again.
    cache: Option<wasmtime::Cache>,
    linker: Linker<HostState>,
    limits: Limits,
    published: RwLock<Arc<PluginSet>>,
    ticker_stop: Arc<AtomicBool>,
    logs: Arc<logs::LogBudget>,
}

impl Plugins {
    /// A runtime with epoch-based deadlines (a ticker thread); `limits` serve the calls of
    /// rules that set none. Compiled components are cached in `compile_cache_dir()`.
    pub fn new(limits: Limits) -> anyhow::Result<Self> {
        Self::with_compile_cache(limits, compile_cache_dir().as_deref())
    }

    /// The same, with compiled components cached in `cache` (none: compile every time). A
    /// folder that cannot be used is said once and compiled without.
    pub fn with_compile_cache(limits: Limits, cache: Option<&Path>) -> anyhow::Result<Self> {
        let mut config = wasmtime::Config::new();
        config.epoch_interruption(true);
        let cache = cache.and_then(|dir| {
            let mut settings = wasmtime::CacheConfig::new();
            settings.with_directory(dir);
            wasmtime::Cache::new(settings).inspect_err(|e| tracing::warn!("plugins compile without a cache: {e:#}; fix: make {} writable, or set AUGUR_COMPILE_CACHE to a writable folder (or `off`)", dir.display())).ok()
        });
        config.cache(cache.clone());
        // Pre-reserved slots make a fresh instance cheap (no mmap per instance, copy-on-write
        // memory images).
        let mut pool = wasmtime::PoolingAllocationConfig::default();
        pool.total_component_instances(POOL_INSTANCES)
            .total_core_instances(POOL_INSTANCES * 4)
            .total_memories(POOL_INSTANCES)
            .total_tables(POOL_INSTANCES * 2)
            .max_memory_size(MAX_MEMORY_BYTES)
            // A slot is reset for its next call by rewriting the pages the last call touched
            // (found with Linux's PAGEMAP_SCAN where the kernel has it) rather than by
            // `madvise`: no system call, no TLB shoot-down across the cores, and no page
            // faults when the next instance touches the same pages. Up to this much of a
            // slot stays resident (a call of the shipped plugins touches well under it); the
            // rest is given back to the kernel, in batches.
            .linear_memory_keep_resident(KEEP_RESIDENT_BYTES)
            .table_keep_resident(KEEP_RESIDENT_BYTES / 16)
            .pagemap_scan(wasmtime::Enabled::Auto)
            .max_unused_warm_slots(WARM_SLOTS)
            .decommit_batch_size(DECOMMIT_BATCH);
        config.allocation_strategy(wasmtime::InstanceAllocationStrategy::Pooling(pool));
        let engine = Engine::new(&config)?;
        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_sync(&mut linker)?;
        never_block(&mut linker)?;
        RiskPlugin::add_to_linker::<_, HasSelf<_>>(&mut linker, |state| state)?;
        let ticker_stop = Arc::new(AtomicBool::new(false));
        let (weak_engine, stop) = (engine.weak(), ticker_stop.clone());
        std::thread::Builder::new().name("augur-epoch".into()).spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                std::thread::sleep(EPOCH_TICK);
                match weak_engine.upgrade() {
                    Some(engine) => engine.increment_epoch(),
                    None => break,
                }
            }
        })?;
        Ok(Self { engine, cache, linker, limits, published: RwLock::new(Arc::new(PluginSet::new())), ticker_stop, logs: Arc::default() })
    }

    /// How the compile cache has served so far (none without one).
    pub fn cache_use(&self) -> Option<CacheUse> {
        self.cache.as_ref().map(|c| CacheUse { directory: c.directory().clone(), hits: c.cache_hits(), misses: c.cache_misses() })
    }

    /// The published version of a plugin, compiling and publishing it on first use.
    pub fn load(&self, path: &Path, world: World) -> Result<Arc<Loaded>, PluginError> {
        if let Some(loaded) = self.snapshot().get(&(path.to_path_buf(), world)) {
            return Ok(loaded.clone());
        }
        let loaded = Arc::new(self.compile(path, world)?);
        self.publish([loaded.clone()]);
        Ok(loaded)
    }

    /// Reads, compiles and checks a plugin without publishing it: the component must import
    /// nothing the host does not grant and must export `world`.
    pub fn compile(&self, path: &Path, world: World) -> Result<Loaded, PluginError> {
        let plugin = plugin_name(path);
        let bytes = files::read(path, files::MAX_PLUGIN_BYTES).map_err(|e| PluginError::Compile { plugin: plugin.clone(), reason: format!("{} {e}; fix: {}", path.display(), e.fix()) })?;
        self.compile_bytes(path, &bytes, world)
    }

    /// `compile` from bytes already read (`path` names it).
    pub fn compile_bytes(&self, path: &Path, bytes: &[u8], world: World) -> Result<Loaded, PluginError> {
        let plugin = plugin_name(path);
        if !bytes.starts_with(b"\0asm") {
            return Err(PluginError::Compile { plugin, reason: format!("{} is not a WebAssembly file", path.display()) });
        }
        // Before compiling: a component that declares more memory or data than any rule may
        // have is refused without allocating it (compiling copies its data into an image).
        let declared_memory = declared_memory(bytes).map_err(|reason| PluginError::Compile { plugin: plugin.clone(), reason })?;
        if declared_memory > MAX_MEMORY_BYTES as u64 {
            return Err(PluginError::DeclaredMemory { plugin, declared: declared_memory, limit: MAX_MEMORY_BYTES });
        }
        let component = Component::new(&self.engine, bytes).map_err(|e| PluginError::Compile { plugin: plugin.clone(), reason: format!("{e:#}") })?;
        let incompatible = |reason: String| PluginError::Incompatible { plugin: plugin.clone(), world: world.wit_name(), reason };
        let imports: Vec<String> = component.component_type().imports(&self.engine).map(|(name, _)| name.to_string()).collect();
        let exports: Vec<String> = component.component_type().exports(&self.engine).map(|(name, _)| name.to_string()).collect();
        let denied: Vec<&String> = imports.iter().filter(|i| !granted(i)).collect();
        if !denied.is_empty() {
            let list = denied.iter().map(|d| format!("`{d}`")).collect::<Vec<_>>().join(", ");
            return Err(incompatible(format!(
                "it imports {list}, which Augur does not grant; a plugin may import augur:plugin/host and the WASI cli, io, clocks, random and filesystem interfaces (which give it nothing); fix: remove the import (a plugin gets its data as arguments)"
            )));
        }
        let pre = self.linker.instantiate_pre(&component).map_err(|e| incompatible(format!("{e:#}")))?;
        // The generated bindings check every export of the world and its types.
        let (main, check) = match world {
            World::Risk => RiskPluginPre::new(pre.clone()).map(|_| ("assess", "check-settings")),
            World::Remediation => RemediationPluginPre::new(pre.clone()).map(|_| ("plan", "check-settings")),
        }
        .map_err(|e| incompatible(format!("{e:#}")))?;
        let export = |name: &str| component.get_export_index(None, name).ok_or_else(|| incompatible(format!("no export `{name}`")));
        Ok(Loaded { path: path.to_path_buf(), world, digest: digest(bytes), imports, exports, declared_memory, name: plugin.as_str().into(), pre, main: export(main)?, check: export(check)? })
    }

    /// Publishes new versions of plugins, all at once: the next session sees all of them,
    /// sessions already open keep what they had.
    pub fn publish(&self, loaded: impl IntoIterator<Item = Arc<Loaded>>) {
        let mut published = self.published.write().expect("plugin set poisoned");
        let mut next = PluginSet::clone(&published);
        for plugin in loaded {
            next.insert((plugin.path.clone(), plugin.world), plugin);
        }
        *published = Arc::new(next);
    }

    /// The published version of a plugin, if any.
    pub fn published(&self, path: &Path, world: World) -> Option<Arc<Loaded>> {
        self.snapshot().get(&(path.to_path_buf(), world)).cloned()
    }

    fn snapshot(&self) -> Arc<PluginSet> {
        self.published.read().expect("plugin set poisoned").clone()
    }

    /// Each plugin's log lines dropped by its rate limit since the last call (see `logs`).
    pub fn dropped_log_lines(&self) -> Vec<(String, u64)> {
        self.logs.take_dropped()
    }

    /// A session for one tick: the plugins published now, whatever is published during it.
    pub fn session(&self) -> Session<'_> {
        Session { plugins: self, set: self.snapshot() }
    }

    /// The plugins published now, for the sessions of one tick opened on several threads
    /// (`session_at`): all of them see the same versions.
    pub fn published_now(&self) -> Published {
        Published(self.snapshot())
    }

    /// A session on the versions of `published`.
    pub fn session_at(&self, published: &Published) -> Session<'_> {
        Session { plugins: self, set: published.0.clone() }
    }

    /// Asks the published version of a plugin to check its settings; returns its problems,
    /// each at `settings`.
    pub fn check_settings(&self, path: &Path, world: World, settings: &Settings) -> Result<Vec<Problem>, PluginError> {
        let loaded = self.load(path, world)?;
        self.check_settings_of(&loaded, settings)
    }

    /// Asks a compiled (maybe not yet published) plugin to check its settings.
    ///
    /// The call runs on a thread of its own: it is made at load, validate and reload, often
    /// from async code, where wasmtime-wasi's synchronous WASI (a guest writing its panic
    /// message to stderr) would start a runtime within the caller's and panic.
    pub fn check_settings_of(&self, loaded: &Loaded, settings: &Settings) -> Result<Vec<Problem>, PluginError> {
        std::thread::scope(|scope| {
            std::thread::Builder::new()
                .name("augur-check-settings".into())
                .spawn_scoped(scope, || self.check_settings_here(loaded, settings))
                .map_err(|e| PluginError::Trap { plugin: plugin_name(&loaded.path), reason: format!("cannot start a thread for the call: {e}") })?
                .join()
                .unwrap_or_else(|_| Err(PluginError::Trap { plugin: plugin_name(&loaded.path), reason: "the host's call of check-settings panicked".into() }))
        })
    }

    fn check_settings_here(&self, loaded: &Loaded, settings: &Settings) -> Result<Vec<Problem>, PluginError> {
        self.call(loaded, settings, |store, instance, limits| {
            let problems = instance.get_typed_func::<(), (Vec<String>,)>(&mut *store, &loaded.check)?.call(&mut *store, ())?.0;
            let bytes: usize = problems.iter().map(String::len).sum();
            Ok(if problems.len() > limits.max_proposals || bytes > limits.max_output_bytes { Err(text_limit(loaded, limits)) } else { Ok(problems.iter().map(|p| Problem::in_settings(crate::text::shown(p).into_owned())).collect()) })
        })
    }

    /// One call in a fresh store and instance, under the rule's limits.
    fn call<R>(
        &self,
        loaded: &Loaded,
        settings: &Settings,
        body: impl FnOnce(&mut Store<HostState>, &wasmtime::component::Instance, &Limits) -> wasmtime::Result<Result<R, PluginError>>,
    ) -> Result<R, PluginError> {
        let limits = settings.limits.unwrap_or(self.limits);
        if loaded.declared_memory > limits.memory_bytes as u64 {
            return Err(PluginError::DeclaredMemory { plugin: plugin_name(&loaded.path), declared: loaded.declared_memory, limit: limits.memory_bytes });
        }
        let mut store = self.store(loaded.name.clone(), settings.clone(), &limits);
        let instance = loaded.pre.instantiate(&mut store).map_err(|e| classify(&store, e, &limits))?;
        body(&mut store, &instance, &limits).map_err(|e| classify(&store, e, &limits))?
    }

    fn store(&self, plugin: Arc<str>, settings: Settings, limits: &Limits) -> Store<HostState> {
        let limiter = Limiter { memory_bytes: limits.memory_bytes, hit: false };
        let state = HostState { plugin, settings, wasi: None, table: ResourceTable::new(), limiter, logs: self.logs.clone() };
        let mut store = Store::new(&self.engine, state);
        store.limiter(|state| &mut state.limiter);
        // What the host copies out of the guest in one call (lists counted at the host's size
        // of an element, text in bytes): a longer list or text is refused before any of it is
        // allocated on the host, so a guest cannot amplify its 16 MiB into gigabytes (a
        // million proposals pointing at one long string).
        store.set_hostcall_fuel(output_fuel(limits));
        // Instantiation runs guest code too: the deadline covers it and the call.
        store.set_epoch_deadline((limits.deadline.as_micros() / EPOCH_TICK.as_micros()).max(1) as u64 + 1);
        store
    }
}

impl Drop for Plugins {
    fn drop(&mut self) {
        self.ticker_stop.store(true, Ordering::Relaxed);
    }
}

fn output_fuel(limits: &Limits) -> usize {
    limits.max_output_bytes + (limits.max_proposals + 1) * std::mem::size_of::<wit::Proposal>()
}

fn text_limit(loaded: &Loaded, limits: &Limits) -> PluginError {
    PluginError::TooMuchOutput { plugin: plugin_name(&loaded.path), detail: format!("more than limits.max_output, {} bytes of text", limits.max_output_bytes) }
}

/// SHA-256 of some bytes, hex.
pub fn digest(bytes: &[u8]) -> String {
    ring::digest::digest(&ring::digest::SHA256, bytes).as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

/// The published plugins at one moment (`Plugins::published_now`).
#[derive(Clone)]
pub struct Published(Arc<PluginSet>);

/// The plugins of one tick.
pub struct Session<'p> {
    plugins: &'p Plugins,
    set: Arc<PluginSet>,
}

impl Session<'_> {
    fn loaded(&mut self, path: &Path, world: World) -> Result<Arc<Loaded>, PluginError> {
        let key = (path.to_path_buf(), world);
        if let Some(loaded) = self.set.get(&key) {
            return Ok(loaded.clone());
        }
        // Not published when the session opened: load it now (first use), and keep that
        // version for the rest of the session.
        let loaded = self.plugins.load(path, world)?;
        Arc::make_mut(&mut self.set).insert(key, loaded.clone());
        Ok(loaded)
    }

    /// Calls `assess` of a risk plugin.
    pub fn assess(&mut self, path: &Path, settings: &Settings, input: &ForecastInput<'_>) -> Result<Risk, PluginError> {
        let loaded = self.loaded(path, World::Risk)?;
        let forecast = wit::Forecast::from(input);
        self.plugins.call(&loaded, settings, |store, instance, limits| {
            let risk = instance.get_typed_func::<(&wit::Forecast,), (wit::Risk,)>(&mut *store, &loaded.main)?.call(&mut *store, (&forecast,))?.0;
            Ok(if risk.reason.len() > limits.max_output_bytes { Err(text_limit(&loaded, limits)) } else { Ok(Risk::from(risk)) })
        })
    }

    /// Calls `plan` of a remediation plugin. What it returns is copied out of the guest only
    /// within the store's output fuel (see `Plugins::store`), so a plugin that returns a
    /// million proposals is refused before the host allocates them.
    pub fn plan(&mut self, path: &Path, settings: &Settings, risk: &Risk, trigger: Level, workload: &domain::Workload) -> Result<Vec<Proposal>, PluginError> {
        let loaded = self.loaded(path, World::Remediation)?;
        let (risk, workload) = (wit::Risk::from(risk), wit::Workload::from(workload));
        self.plugins.call(&loaded, settings, |store, instance, limits| {
            let plan = instance.get_typed_func::<(&wit::Risk, wit::Level, &wit::Workload), (Vec<wit::Proposal>,)>(&mut *store, &loaded.main)?;
            let list = plan.call(&mut *store, (&risk, trigger.into(), &workload))?.0;
            if list.len() > limits.max_proposals {
                let detail = format!("{} proposals, more than limits.max_proposals, {}", list.len(), limits.max_proposals);
                return Ok(Err(PluginError::TooMuchOutput { plugin: plugin_name(&loaded.path), detail }));
            }
            let (mut proposals, mut bytes) = (Vec::with_capacity(list.len()), 0);
            for proposal in list {
                let proposal = Proposal::from(proposal);
                bytes += proposal.reason.len() + proposal.action.target().map_or(0, str::len);
                if bytes > limits.max_output_bytes {
                    return Ok(Err(text_limit(&loaded, limits)));
                }
                proposals.push(proposal);
            }
            Ok(Ok(proposals))
        })
    }
}

/// Classifies a failed instantiation or call.
fn classify(store: &Store<HostState>, err: wasmtime::Error, limits: &Limits) -> PluginError {
    let state = store.data();
    let plugin = state.plugin.to_string();
    if matches!(err.downcast_ref::<Trap>(), Some(Trap::Interrupt)) {
        return PluginError::Deadline { plugin, deadline: limits.deadline };
    }
    if state.limiter.hit {
        return PluginError::Memory { plugin, limit: limits.memory_bytes };
    }
    // wasmtime's message when the output fuel runs out (its error type is private).
    if format!("{err:#}").contains("fuel allocated for hostcalls has been exhausted") {
        let detail = format!(
            "more than limits.max_proposals ({}) and limits.max_output ({} bytes of text) allow; refused before it was copied out of the sandbox",
            limits.max_proposals, limits.max_output_bytes
        );
        return PluginError::TooMuchOutput { plugin, detail };
    }
    let stderr = state.stderr();
    // The guest's own words (its panic message) first: the reason is shown capped, and
    // wasmtime's backtrace after them is the part that may be cut.
    let reason = if stderr.is_empty() { format!("{err:#}") } else { format!("guest stderr: {stderr}; {err:#}") };
    PluginError::Trap { plugin, reason }
}

/// The most memory one core module of a component declares it needs at start: its largest
/// initial memory, or the sum of its data segments if that is more. Read with `wasmparser`
/// over the bytes as they are (nested modules included), allocating nothing of their size.
fn declared_memory(bytes: &[u8]) -> Result<u64, String> {
    use wasmparser::{Parser, Payload};
    let (mut most, mut data) = (0u64, 0u64);
    for payload in Parser::new(0).parse_all(bytes) {
        match payload.map_err(|e| format!("is not a valid component: {e}"))? {
            Payload::ModuleSection { .. } | Payload::End(_) => data = 0,
            Payload::MemorySection(memories) => {
                for memory in memories {
                    let memory = memory.map_err(|e| format!("is not a valid component: {e}"))?;
                    let page = 1u64 << memory.page_size_log2.unwrap_or(16);
                    most = most.max(memory.initial.saturating_mul(page));
                }
            }
            Payload::DataSection(segments) => {
                for segment in segments {
                    data = data.saturating_add(segment.map_err(|e| format!("is not a valid component: {e}"))?.data.len() as u64);
                    most = most.max(data);
                }
            }
            _ => {}
        }
    }
    Ok(most)
}

/// A plugin's name for messages: its file stem, e.g. `risk-cpu`.
pub fn plugin_name(path: &Path) -> String {
    path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| path.display().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leb(mut n: u64, out: &mut Vec<u8>) {
        loop {
            let byte = (n & 0x7f) as u8;
            n >>= 7;
            out.push(if n == 0 { byte } else { byte | 0x80 });
            if n == 0 {
                break;
            }
        }
    }

    fn section(id: u8, body: &[u8], out: &mut Vec<u8>) {
        out.push(id);
        leb(body.len() as u64, out);
        out.extend_from_slice(body);
    }

    /// A component holding one core module with a memory of `pages` and a data segment of
    /// `data` bytes: the shape of a plugin with a large static.
    fn component(pages: u64, data: usize) -> Vec<u8> {
        let mut module = b"\0asm\x01\0\0\0".to_vec();
        let mut memory = vec![1, 0];
        leb(pages, &mut memory);
        section(5, &memory, &mut module);
        let mut segment = vec![1, 0, 0x41, 0, 0x0b];
        leb(data as u64, &mut segment);
        segment.resize(segment.len() + data, 7);
        section(11, &segment, &mut module);
        let mut out = b"\0asm\x0d\0\x01\0".to_vec();
        section(1, &module, &mut out);
        out
    }

    #[test]
    fn declared_memory_is_the_larger_of_initial_memory_and_data() {
        assert_eq!(declared_memory(&component(2, 10)).unwrap(), 2 << 16);
        assert_eq!(declared_memory(&component(1, 3 << 16)).unwrap(), 3 << 16);
        assert!(declared_memory(b"\0asm\x0d\0\x01\0\x01\xff").unwrap_err().starts_with("is not a valid component"));
    }

    #[test]
    fn a_component_declaring_more_memory_than_any_rule_may_have_is_refused_before_compiling() {
        let plugins = Plugins::new(Limits::default()).unwrap();
        // One page (64 KiB) over the most any rule may allow; never allocated.
        let pages = (MAX_MEMORY_BYTES >> 16) as u64 + 1;
        let err = plugins.compile_bytes(Path::new("bloated.wasm"), &component(pages, 0), World::Risk).unwrap_err();
        assert!(matches!(err, PluginError::DeclaredMemory { declared, limit, .. } if declared == pages << 16 && limit == MAX_MEMORY_BYTES), "{err}");
        assert_eq!(err.kind(), PluginErrorKind::Limit);
        assert!(err.to_string().contains("refused before it was instantiated"), "{err}");
    }
}
