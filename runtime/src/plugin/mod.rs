//! The WebAssembly plugin host. Every wasmtime type stays inside this module: its API moves
//! between releases and one module absorbs that.
//!
//! Lifetimes follow the cost of each step:
//! - once per process, a [`PluginHost`]: the `Engine` (component model, epoch interruption) and
//!   the `Linker` (WASI with nothing granted, plus the contract's `log` import), and one thread
//!   that ticks the epoch;
//! - once per plugin file, a [`LoadedPlugin`]: the compiled component and its pre-instantiated
//!   handle, checked against the contract;
//! - once per worker, an instance in its own `Store` with a memory limit and a wall-clock limit
//!   per call (see [`instance`]). A trap or a limit hit fails the records of that call and the
//!   instance is rebuilt before the next call.

mod bindings;
mod clocks;
mod current;
mod fields;
mod guard;
mod instance;
mod limits;
mod log;
mod pool;
mod stats;
pub mod types;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use wasmtime::component::{Component, HasSelf, Linker, ResourceTable};
use wasmtime::{Config, Engine, ProfilingStrategy};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use crate::config::PluginSettings;
pub(crate) use current::Current;
pub use fields::FieldReader;
pub use pool::{Completed, PluginPool, Prepared, Route};
pub use stats::PluginStats;
pub(crate) use stats::{Export, Scope};

/// The contract's version this host speaks: the `@` suffix of its WIT package.
pub const CONTRACT: &str = "streaminfer:plugin/plugin@0.3.0";

/// How the SDK's panic hook starts the line it logs (`streaminfer_sdk::export::PANIC_PREFIX`).
const PANIC_PREFIX: &str = "panicked at ";

/// Set (to anything but empty) to have `perf` show plugin functions by name.
pub const PERF_MAP_ENV: &str = "STREAMINFER_PERF_MAP";

/// How often the epoch advances; the resolution of the per-call wall-clock limit.
const EPOCH_TICK: Duration = Duration::from_millis(10);

/// Why a plugin could not be loaded, configured or kept running.
#[derive(Debug, thiserror::Error)]
pub enum PluginError {
    #[error("cannot create the WebAssembly engine: {0}")]
    Engine(String),
    #[error("cannot read plugin {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("plugin {path} is not a valid WebAssembly component: {message}")]
    Compile { path: PathBuf, message: String },
    #[error("plugin {path} does not implement the plugin contract (world {CONTRACT}): {message}")]
    Contract { path: PathBuf, message: String },
    #[error("plugin {path} failed to instantiate: {message}")]
    Instantiate { path: PathBuf, message: String },
    #[error("plugin {path} refused its settings: {message}")]
    Configure { path: PathBuf, message: String },
    #[error("plugin workers have stopped")]
    Stopped,
}

/// Engine and linker, once per process.
pub struct PluginHost {
    engine: Engine,
    linker: Arc<Linker<StoreState>>,
    /// Shared by every plugin this host loads, so that counts carry over a reload.
    stats: Arc<PluginStats>,
}

impl std::fmt::Debug for PluginHost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PluginHost").finish_non_exhaustive()
    }
}

impl PluginHost {
    /// Creates the engine, links WASI (granting nothing) and the `log` import, and starts the
    /// epoch ticker. Compiles every plugin afresh.
    ///
    /// # Errors
    /// [`PluginError::Engine`] when wasmtime cannot be set up on this machine.
    pub fn new() -> Result<Self, PluginError> {
        Self::with_cache(None)
    }

    /// As [`PluginHost::new`], keeping compiled plugins in `cache` (wasmtime's compilation cache,
    /// keyed by the component's bytes and the engine's settings): a restart or a reload of an
    /// unchanged plugin skips compilation.
    ///
    /// # Errors
    /// [`PluginError::Engine`] when wasmtime cannot be set up, or the cache cannot be.
    pub fn with_cache(cache: Option<&std::path::Path>) -> Result<Self, PluginError> {
        let mut config = Config::new();
        config.wasm_component_model(true).epoch_interruption(true);
        if let Some(dir) = cache {
            let mut settings = wasmtime::CacheConfig::new();
            settings.with_directory(dir);
            let cache = wasmtime::Cache::new(settings).map_err(|e| {
                PluginError::Engine(format!(
                    "cannot use {} for compiled plugins: {e:#}",
                    dir.display()
                ))
            })?;
            config.cache(Some(cache));
        }
        if std::env::var_os(PERF_MAP_ENV).is_some_and(|v| !v.is_empty()) {
            // Names plugin functions for `perf` (/tmp/perf-<pid>.map) instead of `[JIT]`.
            config.profiler(ProfilingStrategy::PerfMap);
        }
        let engine = Engine::new(&config).map_err(|e| PluginError::Engine(format!("{e:#}")))?;
        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_sync(&mut linker)
            .map_err(|e| PluginError::Engine(format!("linking WASI: {e:#}")))?;
        clocks::hold_waits_to_the_deadline(&mut linker)
            .map_err(|e| PluginError::Engine(format!("linking the clock: {e:#}")))?;
        bindings::streaminfer::plugin::log::add_to_linker::<_, HasSelf<_>>(&mut linker, |s| s)
            .map_err(|e| PluginError::Engine(format!("linking the log import: {e:#}")))?;
        let ticker = engine.weak();
        std::thread::Builder::new()
            .name("wasm-epoch".into())
            .spawn(move || {
                loop {
                    std::thread::sleep(EPOCH_TICK);
                    match ticker.upgrade() {
                        Some(engine) => engine.increment_epoch(),
                        None => break,
                    }
                }
            })
            .map_err(|e| PluginError::Engine(format!("starting the epoch thread: {e}")))?;
        Ok(Self {
            engine,
            linker: Arc::new(linker),
            stats: Arc::default(),
        })
    }

    /// What the plugins of this host did, across reloads.
    pub fn stats(&self) -> &Arc<PluginStats> {
        &self.stats
    }

    /// Compiles the plugin file and checks that it implements the contract.
    ///
    /// # Errors
    /// [`PluginError::Read`], [`PluginError::Compile`] or [`PluginError::Contract`], naming the
    /// file.
    pub fn load(&self, settings: &PluginSettings) -> Result<Arc<LoadedPlugin>, PluginError> {
        let path = settings.path.clone();
        let bytes = std::fs::read(&path).map_err(|source| PluginError::Read {
            path: path.clone(),
            source,
        })?;
        if let Some(problem) = not_a_component(&bytes) {
            return Err(PluginError::Compile {
                path,
                message: problem.to_owned(),
            });
        }
        let digest = digest(&bytes);
        let component = Component::new(&self.engine, &bytes).map_err(|e| PluginError::Compile {
            path: path.clone(),
            message: format!("{e:#}"),
        })?;
        // Only when linking fails is the version looked at: wasmtime itself decides what is
        // compatible, and the version found only words its refusal better.
        let pre = self
            .linker
            .instantiate_pre(&component)
            .and_then(bindings::PluginPre::new)
            .map_err(|e| PluginError::Contract {
                path: path.clone(),
                message: older_contract(&component, &self.engine)
                    .unwrap_or_else(|| format!("{e:#}")),
            })?;
        let name = path
            .file_stem()
            .map_or_else(|| "plugin".into(), |s| s.to_string_lossy().into());
        Ok(Arc::new(LoadedPlugin {
            engine: self.engine.clone(),
            digest,
            pre,
            path,
            name,
            memory_limit: usize::try_from(settings.memory_limit).unwrap_or(usize::MAX),
            deadline_ticks: ticks(settings.call_timeout),
            call_timeout: settings.call_timeout,
            settings: settings.settings.clone(),
            outputs: settings.outputs.clone(),
            stats: self.stats.clone(),
        }))
    }
}

/// Tells, from its header, why a file cannot be a component; wasmtime's own message for these
/// cases speaks of magic numbers and offsets.
fn not_a_component(bytes: &[u8]) -> Option<&'static str> {
    const MAGIC: &[u8] = b"\0asm";
    const CORE_MODULE: &[u8] = &[1, 0, 0, 0];
    match (bytes.get(..4), bytes.get(4..8)) {
        (Some(MAGIC), Some(CORE_MODULE)) => Some(
            "it is a core WebAssembly module, not a component: build the plugin for the \
             wasm32-wasip2 target (or wrap the module with `wasm-tools component new`)",
        ),
        (Some(MAGIC), _) => None,
        _ => Some("it is not WebAssembly (the file does not start with the \\0asm header)"),
    }
}

/// Says so when a component that cannot be linked exports the handler of another version of
/// the contract: wasmtime would only report that the current one is missing.
fn older_contract(component: &Component, engine: &Engine) -> Option<String> {
    const HANDLER: &str = "streaminfer:plugin/handler@";
    let current = &CONTRACT[CONTRACT.rfind('@')? + 1..];
    let ty = component.component_type();
    let found = ty
        .exports(engine)
        .find_map(|(name, _)| name.strip_prefix(HANDLER).map(str::to_owned))?;
    (found != current).then(|| {
        format!(
            "it was built for version {found} of the contract, this runtime speaks {current}: \
             rebuild it against the current SDK (see docs/plugins.md for what changed)"
        )
    })
}

/// `sha256:<hex>` of a component's bytes.
pub fn digest(bytes: &[u8]) -> Arc<str> {
    use sha2::Digest;
    use std::fmt::Write;
    let hash = sha2::Sha256::digest(bytes);
    let mut out = String::with_capacity(7 + 64);
    out.push_str("sha256:");
    for byte in hash {
        let _ = write!(out, "{byte:02x}");
    }
    out.into()
}

fn ticks(limit: Duration) -> u64 {
    (limit.as_micros().div_ceil(EPOCH_TICK.as_micros())).max(1) as u64
}

/// A compiled plugin, ready to instantiate.
pub struct LoadedPlugin {
    engine: Engine,
    digest: Arc<str>,
    pre: bindings::PluginPre<StoreState>,
    path: PathBuf,
    name: Arc<str>,
    memory_limit: usize,
    deadline_ticks: u64,
    call_timeout: Duration,
    settings: Vec<(String, String)>,
    outputs: crate::config::OutputLimits,
    stats: Arc<PluginStats>,
}

impl std::fmt::Debug for LoadedPlugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadedPlugin")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl LoadedPlugin {
    pub fn path(&self) -> &std::path::Path {
        &self.path
    }

    /// `sha256:<hex>` of the component file: which plugin version made an output.
    pub fn digest(&self) -> &Arc<str> {
        &self.digest
    }
}

/// What one `Store` holds: a WASI context that grants nothing, and the memory limiter.
struct StoreState {
    wasi: WasiCtx,
    table: ResourceTable,
    limiter: limits::Limits,
    plugin: Arc<str>,
    log: log::LogGate,
    /// What the SDK said of a panic during the current call, for the trap's failure.
    panic: Option<String>,
    /// When the current call's time runs out; the clock's waits end there.
    call_deadline: Option<std::time::Instant>,
    /// The instant the guest's monotonic clock counts from.
    clock_origin: std::time::Instant,
}

impl WasiView for StoreState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl types::Host for StoreState {}

impl bindings::streaminfer::plugin::log::Host for StoreState {
    fn log(&mut self, level: bindings::streaminfer::plugin::log::Level, message: String) {
        use bindings::streaminfer::plugin::log::Level;
        let plugin = &*self.plugin;
        // A panic's line is kept for the trap's failure even when the log is over its limit.
        if matches!(level, Level::Error) && message.starts_with(PANIC_PREFIX) {
            self.panic = Some(log::one_line(&message));
        }
        match self.log.admit(std::time::Instant::now()) {
            log::Admit::Write { dropped: 0 } => {}
            log::Admit::Write { dropped } => tracing::warn!(
                plugin,
                dropped,
                "plugin log lines dropped: over the rate limit"
            ),
            log::Admit::FirstDropped => {
                tracing::warn!(
                    plugin,
                    per_second = log::PER_SECOND,
                    "plugin log over its rate limit: dropping lines"
                );
                return;
            }
            log::Admit::Dropped => return,
        }
        let message = log::one_line(&message);
        match level {
            Level::Trace => tracing::trace!(plugin, "{message}"),
            Level::Debug => tracing::debug!(plugin, "{message}"),
            Level::Info => tracing::info!(plugin, "{message}"),
            Level::Warn => tracing::warn!(plugin, "{message}"),
            Level::Error => tracing::error!(plugin, "{message}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_tell_modules_and_junk_from_components() {
        assert_eq!(not_a_component(b"\0asm\x0d\0\x01\0"), None);
        let module = not_a_component(b"\0asm\x01\0\0\0").expect("a core module is refused");
        assert!(module.contains("core WebAssembly module"), "{module}");
        let junk = not_a_component(b"hello world").expect("junk is refused");
        assert!(junk.contains("not WebAssembly"), "{junk}");
        assert!(not_a_component(b"").is_some());
    }

    #[test]
    fn the_contract_version_written_here_is_the_wit_package_s() {
        let wit = include_str!("../../../wit/plugin.wit");
        let version = CONTRACT.rsplit('@').next().expect("a versioned world");
        assert!(
            wit.contains(&format!("package streaminfer:plugin@{version};")),
            "wit/plugin.wit is not version {version}"
        );
        assert!(types::INSTANCE.ends_with(&format!("@{version}")));
    }

    #[test]
    fn the_sdk_ships_the_same_contract_as_wit() {
        // The SDK carries its own copy so that it builds without the rest of the checkout (a
        // path or git dependency of a plugin elsewhere); the copy must not drift.
        assert_eq!(
            include_str!("../../../guest-sdk/wit/plugin.wit"),
            include_str!("../../../wit/plugin.wit"),
            "guest-sdk/wit/plugin.wit differs from wit/plugin.wit: copy wit/plugin.wit over it"
        );
    }

    #[test]
    fn the_sdk_keeps_the_workspace_s_lints_and_package_facts() {
        // The SDK's manifest inherits nothing, so that it builds outside the workspace.
        let sdk: toml::Table = include_str!("../../../guest-sdk/Cargo.toml")
            .parse()
            .expect("SDK manifest");
        let root: toml::Table = include_str!("../../../Cargo.toml")
            .parse()
            .expect("workspace manifest");
        let workspace = &root["workspace"];
        assert_eq!(
            sdk["lints"], workspace["lints"],
            "guest-sdk/Cargo.toml [lints]"
        );
        for key in ["version", "edition", "rust-version", "license"] {
            assert_eq!(
                sdk["package"][key], workspace["package"][key],
                "guest-sdk/Cargo.toml package.{key}"
            );
        }
    }

    #[test]
    fn deadlines_round_up_to_whole_ticks() {
        assert_eq!(ticks(Duration::from_millis(1)), 1);
        assert_eq!(ticks(Duration::from_millis(10)), 1);
        assert_eq!(ticks(Duration::from_millis(11)), 2);
        assert_eq!(ticks(Duration::from_secs(1)), 100);
    }
}
