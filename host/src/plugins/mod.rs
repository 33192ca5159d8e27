//! The wasm runtime: compiles plugin components once, checks them against their world,
//! pre-links them, and calls them in sandboxed stores with a deadline and a memory cap.
//!
//! Strategy: a `Plugins` registry compiles each `.wasm` file once (keyed by path) into a
//! `RiskPluginPre` or `RemediationPluginPre`. For a tick, the engine opens a `Session`, which
//! instantiates each plugin at most once and reuses that instance for every workload of the
//! tick (a fresh instance costs ~9 us, a call ~2 us); an instance that traps is dropped and
//! the next call gets a fresh one. The WASI context denies files, network, environment and
//! clocks; the guest's stderr is captured so that a panic message reaches the error.
//!
//! This module never decides anything: plugins propose, the guard decides.

pub mod bindings;

use crate::domain::{self, Level, Proposal, Risk};
use bindings::{ForecastInput, RemediationPlugin, RemediationPluginPre, RiskPlugin, RiskPluginPre, wit};
use std::collections::hash_map::Entry;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use wasmtime::component::{Component, HasSelf, Linker, ResourceTable};
use wasmtime::{Engine, Store, StoreLimits, StoreLimitsBuilder, Trap};
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

/// Settings of one rule, as the plugin reads them through `host.setting`.
pub type Settings = Arc<RuleSettings>;

/// A rule's settings and their content id (the `settings-id` a plugin may cache under).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleSettings {
    id: u64,
    values: BTreeMap<String, String>,
}

impl RuleSettings {
    /// Wraps settings; equal contents get equal ids, so identical rules share a plugin's cache.
    pub fn new(values: BTreeMap<String, String>) -> Settings {
        use std::hash::{Hash, Hasher};
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        values.hash(&mut hasher);
        Arc::new(Self { id: hasher.finish(), values })
    }
}

/// The epoch ticks every this long; deadlines are counted in ticks.
const EPOCH_TICK: Duration = Duration::from_millis(5);

/// Instances alive at once: a session holds one per plugin, a few sessions may overlap.
const POOL_INSTANCES: u32 = 256;

/// Limits for every call of a plugin.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Wall-clock deadline of one call.
    pub deadline: Duration,
    /// Most linear memory one instance may grow to.
    pub memory_bytes: usize,
    /// Most proposals one `plan` may return.
    pub max_proposals: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self { deadline: Duration::from_millis(250), memory_bytes: 16 << 20, max_proposals: 64 }
    }
}

/// Which world a plugin implements.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum World {
    Risk,
    Remediation,
}

impl World {
    pub fn wit_name(self) -> &'static str {
        match self {
            World::Risk => "augur:plugin/risk-plugin@0.2.0",
            World::Remediation => "augur:plugin/remediation-plugin@0.2.0",
        }
    }
}

/// A plugin failure, naming the plugin.
#[derive(Debug, thiserror::Error)]
pub enum PluginError {
    #[error("plugin {plugin}: cannot be read or compiled: {reason}")]
    Compile { plugin: String, reason: String },
    #[error("plugin {plugin}: does not implement {world}: {reason}")]
    Incompatible { plugin: String, world: &'static str, reason: String },
    #[error("plugin {plugin}: ran past its {deadline:?} deadline")]
    Deadline { plugin: String, deadline: Duration },
    #[error("plugin {plugin}: trapped: {reason}")]
    Trap { plugin: String, reason: String },
    #[error("plugin {plugin}: returned {count} proposals, more than the limit of {limit}")]
    TooMuchOutput { plugin: String, count: usize, limit: usize },
}

/// The state of one store: the sandboxed WASI context and what the host imports need.
pub struct HostState {
    plugin: Arc<str>,
    settings: Settings,
    wasi: WasiCtx,
    table: ResourceTable,
    limits: StoreLimits,
    stderr: MemoryOutputPipe,
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView { ctx: &mut self.wasi, table: &mut self.table }
    }
}

impl bindings::host::Host for HostState {
    fn log(&mut self, level: wit::Level, message: String) {
        let plugin = &*self.plugin;
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

/// A compiled, type-checked, pre-linked plugin.
#[derive(Clone)]
pub enum Loaded {
    Risk(RiskPluginPre<HostState>),
    Remediation(RemediationPluginPre<HostState>),
}

/// The wasm engine, the linkers and every plugin compiled so far.
pub struct Plugins {
    engine: Engine,
    linker: Linker<HostState>,
    limits: Limits,
    compiled: Mutex<HashMap<(PathBuf, World), Loaded>>,
    ticker_stop: Arc<AtomicBool>,
}

impl Plugins {
    /// A runtime with epoch-based deadlines (a ticker thread) and the given limits.
    pub fn new(limits: Limits) -> anyhow::Result<Self> {
        let mut config = wasmtime::Config::new();
        config.epoch_interruption(true);
        // Pre-reserved slots make a fresh instance cheap (no mmap per instance).
        let mut pool = wasmtime::PoolingAllocationConfig::default();
        pool.total_component_instances(POOL_INSTANCES)
            .total_core_instances(POOL_INSTANCES * 4)
            .total_memories(POOL_INSTANCES)
            .total_tables(POOL_INSTANCES * 2)
            .max_memory_size(limits.memory_bytes);
        config.allocation_strategy(wasmtime::InstanceAllocationStrategy::Pooling(pool));
        let engine = Engine::new(&config)?;
        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_sync(&mut linker)?;
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
        Ok(Self { engine, linker, limits, compiled: Mutex::new(HashMap::new()), ticker_stop })
    }

    /// Compiles (once) and checks a plugin against `world`.
    pub fn load(&self, path: &Path, world: World) -> Result<Loaded, PluginError> {
        let key = (path.to_path_buf(), world);
        if let Some(loaded) = self.compiled.lock().expect("plugin cache poisoned").get(&key) {
            return Ok(loaded.clone());
        }
        let loaded = self.compile(path, world)?;
        self.compiled.lock().expect("plugin cache poisoned").insert(key, loaded.clone());
        Ok(loaded)
    }

    fn compile(&self, path: &Path, world: World) -> Result<Loaded, PluginError> {
        let plugin = plugin_name(path);
        let component = Component::from_file(&self.engine, path)
            .map_err(|e| PluginError::Compile { plugin: plugin.clone(), reason: format!("{e:#}") })?;
        let incompatible = |e: wasmtime::Error| PluginError::Incompatible { plugin: plugin.clone(), world: world.wit_name(), reason: format!("{e:#}") };
        let pre = self.linker.instantiate_pre(&component).map_err(incompatible)?;
        Ok(match world {
            World::Risk => Loaded::Risk(RiskPluginPre::new(pre).map_err(incompatible)?),
            World::Remediation => Loaded::Remediation(RemediationPluginPre::new(pre).map_err(incompatible)?),
        })
    }

    /// A session for one tick: instances are created on first use and reused.
    pub fn session(&self) -> Session<'_> {
        Session { plugins: self, risk: HashMap::new(), remediation: HashMap::new() }
    }

    /// Asks a plugin to check its settings; returns its problems.
    pub fn check_settings(&self, path: &Path, world: World, settings: &Settings) -> Result<Vec<String>, PluginError> {
        let loaded = self.load(path, world)?;
        let mut session = self.session();
        match loaded {
            Loaded::Risk(_) => session.with_risk(path, settings, |b, s| b.call_check_settings(s)),
            Loaded::Remediation(_) => session.with_remediation(path, settings, |b, s| b.call_check_settings(s)),
        }
    }

    fn store(&self, plugin: Arc<str>, settings: Settings) -> Store<HostState> {
        let stderr = MemoryOutputPipe::new(4096);
        let wasi = WasiCtx::builder().stderr(stderr.clone()).build();
        let limits = StoreLimitsBuilder::new().memory_size(self.limits.memory_bytes).trap_on_grow_failure(true).build();
        let state = HostState { plugin, settings, wasi, table: ResourceTable::new(), limits, stderr };
        let mut store = Store::new(&self.engine, state);
        store.limiter(|state| &mut state.limits);
        store.set_epoch_deadline(self.deadline_ticks()); // instantiation runs guest code too
        store
    }

    fn deadline_ticks(&self) -> u64 {
        (self.limits.deadline.as_micros() / EPOCH_TICK.as_micros()).max(1) as u64 + 1
    }
}

impl Drop for Plugins {
    fn drop(&mut self) {
        self.ticker_stop.store(true, Ordering::Relaxed);
    }
}

struct Instance<B> {
    store: Store<HostState>,
    bindings: B,
}

/// Plugin instances for one tick.
pub struct Session<'p> {
    plugins: &'p Plugins,
    risk: HashMap<PathBuf, Instance<RiskPlugin>>,
    remediation: HashMap<PathBuf, Instance<RemediationPlugin>>,
}

impl Session<'_> {
    /// Calls `assess` of a risk plugin.
    pub fn assess(&mut self, path: &Path, settings: &Settings, input: &ForecastInput<'_>) -> Result<Risk, PluginError> {
        let forecast = wit::Forecast::from(input);
        self.with_risk(path, settings, |b, s| b.call_assess(s, &forecast)).map(Risk::from)
    }

    /// Calls `plan` of a remediation plugin.
    pub fn plan(&mut self, path: &Path, settings: &Settings, risk: &Risk, trigger: Level, workload: &domain::Workload) -> Result<Vec<Proposal>, PluginError> {
        let (risk, workload) = (wit::Risk::from(risk), wit::Workload::from(workload));
        let proposals = self.with_remediation(path, settings, |b, s| b.call_plan(s, &risk, trigger.into(), &workload))?;
        let limit = self.plugins.limits.max_proposals;
        if proposals.len() > limit {
            return Err(PluginError::TooMuchOutput { plugin: plugin_name(path), count: proposals.len(), limit });
        }
        Ok(proposals.into_iter().map(Proposal::from).collect())
    }

    fn with_risk<R>(&mut self, path: &Path, settings: &Settings, call: impl FnOnce(&RiskPlugin, &mut Store<HostState>) -> wasmtime::Result<R>) -> Result<R, PluginError> {
        let plugins = self.plugins;
        let load = || match plugins.load(path, World::Risk)? {
            Loaded::Risk(pre) => Ok(pre),
            Loaded::Remediation(_) => unreachable!("loaded as a risk plugin"),
        };
        with_instance(&mut self.risk, plugins, path, settings, load, |pre, store| pre.instantiate(store), call)
    }

    fn with_remediation<R>(&mut self, path: &Path, settings: &Settings, call: impl FnOnce(&RemediationPlugin, &mut Store<HostState>) -> wasmtime::Result<R>) -> Result<R, PluginError> {
        let plugins = self.plugins;
        let load = || match plugins.load(path, World::Remediation)? {
            Loaded::Remediation(pre) => Ok(pre),
            Loaded::Risk(_) => unreachable!("loaded as a remediation plugin"),
        };
        with_instance(&mut self.remediation, plugins, path, settings, load, |pre, store| pre.instantiate(store), call)
    }
}

/// Calls a plugin on its instance of this session, instantiating it on first use (compiling
/// first, so that compilation does not eat into the guest's deadline); an instance whose call
/// failed is dropped (a trapped instance cannot be entered again).
fn with_instance<P, B, R>(
    instances: &mut HashMap<PathBuf, Instance<B>>,
    plugins: &Plugins,
    path: &Path,
    settings: &Settings,
    load: impl FnOnce() -> Result<P, PluginError>,
    instantiate: impl FnOnce(P, &mut Store<HostState>) -> wasmtime::Result<B>,
    call: impl FnOnce(&B, &mut Store<HostState>) -> wasmtime::Result<R>,
) -> Result<R, PluginError> {
    let instance = match instances.entry(path.to_path_buf()) {
        Entry::Occupied(entry) => entry.into_mut(),
        Entry::Vacant(entry) => {
            let pre = load()?;
            let mut store = plugins.store(plugin_name(path).into(), settings.clone());
            let bindings = instantiate(pre, &mut store).map_err(|err| trap(&store, err, plugins.limits.deadline))?;
            entry.insert(Instance { store, bindings })
        }
    };
    let result = invoke(plugins, instance, settings, call);
    if result.is_err() {
        instances.remove(path);
    }
    result
}

fn invoke<B, R>(plugins: &Plugins, instance: &mut Instance<B>, settings: &Settings, call: impl FnOnce(&B, &mut Store<HostState>) -> wasmtime::Result<R>) -> Result<R, PluginError> {
    instance.store.data_mut().settings = settings.clone();
    instance.store.set_epoch_deadline(plugins.deadline_ticks());
    call(&instance.bindings, &mut instance.store).map_err(|err| trap(&instance.store, err, plugins.limits.deadline))
}

/// Classifies a failed instantiation or call.
fn trap(store: &Store<HostState>, err: wasmtime::Error, deadline: Duration) -> PluginError {
    let plugin = store.data().plugin.to_string();
    if matches!(err.downcast_ref::<Trap>(), Some(Trap::Interrupt)) {
        return PluginError::Deadline { plugin, deadline };
    }
    let stderr = String::from_utf8_lossy(&store.data().stderr.contents()).trim().to_string();
    let reason = if stderr.is_empty() { format!("{err:#}") } else { format!("{err:#}; guest stderr: {stderr}") };
    PluginError::Trap { plugin, reason }
}

/// A plugin's name for messages: its file stem, e.g. `risk-cpu`.
pub fn plugin_name(path: &Path) -> String {
    path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| path.display().to_string())
}
