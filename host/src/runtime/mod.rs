//! The plugin runtime: one wasmtime engine, a compile cache, and a fresh
//! sandboxed instance for every call.
//!
//! ```text
//! .wasm ──load──► Plugin (compiled, pre-linked, described)
//!                   │
//!      validate/detect/remedy(grants, limits) ──► fresh Store ──► Report | PluginError
//! ```
//!
//! The runtime knows nothing of checks or policies: callers hand it a
//! plugin, a config, grants and limits. It speaks every contract version
//! through `crate::wit`, and sees only mend's own types.

pub(crate) mod bounds;
mod cache;
mod call;
mod error;
mod limits;
mod load;
mod plugin;
mod plugin_config;
pub mod wasm;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Semaphore;
use wasmtime::Engine;
use wasmtime::component::{Component, Linker};

pub use self::call::MAX_STUCK_CALLS;
pub use self::error::PluginError;
pub use self::limits::Limits;
pub use self::load::MAX_WASM_BYTES;
pub(crate) use self::load::read_blocking as read_plugin_file;
pub use self::plugin::{Plugin, valid_name};
pub use self::plugin_config::PluginConfig;
pub use self::wasm::{Allocator, EngineSettings};

use self::cache::CompileCache;
use self::call::{CallSpec, CallState, Target};
use crate::capabilities::state::StateStore;
use crate::capabilities::{self, ResolvedGrants};
use crate::clock::Clock;
use crate::contract::{
    Finding, GuestError, Invocation, Manifest, Needs, Outcome, RemedyContext, RemedyRequest, Role,
};
use crate::tape::Tape;
use crate::wit::{self, Call, Exports, Returned, VersionError};

/// How to build a [`Runtime`].
#[derive(Clone)]
pub struct RuntimeConfig {
    /// Where the compile cache and plugin state live. `None`: no cache, and
    /// no state (a plugin granted state gets an error).
    pub state_dir: Option<PathBuf>,
    pub engine: EngineSettings,
    /// Limits for `describe()` and `validate()` calls.
    pub describe_limits: Limits,
    /// Bytes of stdout and of stderr kept per call.
    pub output_limit: usize,
    /// Run calls granted directories on the calling (async) thread rather
    /// than on a pool thread of their own; their file I/O is inline either
    /// way. Saves a thread hop per call, but a plugin that opens a FIFO or
    /// a path on a hung mount inside its grant then blocks a worker thread
    /// past its deadline (no timer can interrupt a syscall). Tests under
    /// tokio's paused clock need it (a wait on another thread lets virtual
    /// time jump to the deadline). Default: off.
    pub inline_file_io: bool,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        RuntimeConfig {
            state_dir: None,
            engine: EngineSettings::default(),
            describe_limits: Limits {
                deadline: Duration::from_secs(2),
                ..Limits::default()
            },
            output_limit: 64 * 1024,
            inline_file_io: false,
        }
    }
}

/// What a successful call returned, with what it cost.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Report<T> {
    pub value: T,
    pub fuel_used: u64,
    #[serde(serialize_with = "ser_micros", rename = "duration_us")]
    pub duration: Duration,
}

fn ser_micros<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_u64(d.as_micros() as u64)
}

/// Which plugins of a directory a caller needs compiled and resident.
#[derive(Clone, Copy)]
pub enum Wanted<'a> {
    /// Every file (`mend plugin` commands, tests).
    All,
    /// Only plugins with these names; the other files are listed as
    /// [`Unused`]. A file whose name the compile cache does not know yet is
    /// loaded once to learn it.
    Names(&'a BTreeSet<String>),
}

impl Wanted<'_> {
    fn wants(&self, name: &str) -> bool {
        match self {
            Wanted::All => true,
            Wanted::Names(names) => names.contains(name),
        }
    }
}

/// A plugin file that is not loaded because nothing asked for its name.
#[derive(Debug, Clone)]
pub struct Unused {
    pub name: String,
    pub sha256: String,
    pub source: PathBuf,
    /// Its name came from the compile cache's record (it was neither
    /// compiled nor loaded); otherwise it was loaded once to learn it.
    pub known: bool,
}

/// What [`Runtime::load_dir`] found.
#[derive(Default)]
pub struct LoadedDir {
    /// By the name in each plugin's manifest.
    pub plugins: HashMap<String, Arc<Plugin>>,
    /// Files not loaded: no one wanted their names. In file order.
    pub unused: Vec<Unused>,
    /// Files that did not load, by file path, and why.
    pub errors: BTreeMap<PathBuf, String>,
    /// Names claimed by more than one file: none of them is in `plugins`
    /// (a pin in the config may pick one).
    pub conflicts: BTreeMap<String, Vec<Arc<Plugin>>>,
}

/// What [`Runtime::load_dir`] made of one file.
enum Found {
    Loaded(Box<Plugin>),
    Unused(Unused),
}

/// Compiling a component allocates ~100 MiB on the compiling threads'
/// heaps and frees it; glibc keeps freed arena memory, so without this a
/// first start would stay ~130 MiB larger than a cached one. Building a
/// plan of 50,000 checks does the same (the parsed TOML, every check's
/// validation).
pub fn release_freed_memory() {
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim only returns free pages to the kernel.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Malloc arenas `mend run` allows itself (glibc's default is 8 per core).
const MALLOC_ARENAS: i32 = 2;

/// Caps glibc's malloc arenas before any thread starts: every thread that
/// allocates (tokio's workers, blocking-pool threads, the compiler's
/// threads on a first start) may otherwise get an arena of its own and
/// keep what it freed there (BENCHMARKS.md: +75 MB on a first start with
/// the default, +47 MB with two). `MALLOC_ARENA_MAX` set by the operator
/// wins.
pub fn limit_malloc_arenas() {
    #[cfg(target_env = "gnu")]
    if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
        // SAFETY: mallopt only changes an allocator setting; called before
        // any other thread exists.
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, MALLOC_ARENAS);
        }
    }
}

/// Reads a plugin file; errors name it.
async fn read_named(path: &Path) -> Result<(String, Vec<u8>), PluginError> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| path.display().to_string());
    match load::read(path).await {
        Ok(bytes) => Ok((name, bytes)),
        Err(reason) => Err(PluginError::InvalidComponent {
            plugin: name,
            reason: format!("{}: {reason}", path.display()),
        }),
    }
}

/// One detect or remedy call.
pub struct Request<'a> {
    /// The check (or the check a policy step is for).
    pub check: &'a str,
    /// The plugin's config table, with its JSON text made once.
    pub config: &'a PluginConfig,
    /// The check's labels.
    pub labels: &'a BTreeMap<String, String>,
    pub grants: &'a ResolvedGrants,
    pub limits: Limits,
    /// The engine's clock, which the plugin reads.
    pub clock: Clock,
}

pub struct Runtime {
    engine: Engine,
    /// WASI, every contract version's mend imports, and `wasi:http` with
    /// every way to create an HTTP object trapping: for calls not granted
    /// any URL, which so can make the host hold none.
    linker: Linker<CallState>,
    /// The same with `wasi:http` working, for calls granted URLs.
    http_linker: Linker<CallState>,
    allocator: Allocator,
    cache: Option<Arc<CompileCache>>,
    state: Option<StateStore>,
    permits: Arc<Semaphore>,
    stuck: call::StuckCalls,
    output_limit: usize,
    inline_file_io: bool,
    describe_limits: Limits,
    _ticker: wasm::Ticker,
}

impl Runtime {
    pub fn new(config: RuntimeConfig) -> anyhow::Result<Self> {
        let (engine, allocator) = wasm::build(&config.engine)?;
        let mut http_linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut http_linker).map_err(anyhow::Error::from)?;
        wit::add_to_linker(&mut http_linker)?;
        wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut http_linker)
            .map_err(anyhow::Error::from)?;
        let linker = capabilities::http::without_http(&http_linker)?;
        let (cache, state) = match &config.state_dir {
            Some(dir) => {
                crate::private_fs::dir(dir)?;
                (
                    Some(Arc::new(CompileCache::open(
                        &engine,
                        Some(wasm::compiler_config(&config.engine)),
                        dir,
                    )?)),
                    Some(StateStore::open(&dir.join("plugin-state.db"))?),
                )
            }
            None => (None, None),
        };
        let ticker = wasm::Ticker::start(&engine, config.engine.epoch_tick);
        Ok(Runtime {
            engine,
            linker,
            http_linker,
            allocator,
            cache,
            state,
            permits: Arc::new(Semaphore::new(config.engine.max_concurrent_calls as usize)),
            stuck: call::StuckCalls::default(),
            output_limit: config.output_limit,
            inline_file_io: config.inline_file_io,
            describe_limits: config.describe_limits,
            _ticker: ticker,
        })
    }

    /// Which instance allocator is in use.
    pub fn allocator(&self) -> Allocator {
        self.allocator
    }

    /// The compile cache directory, if there is one.
    pub fn cache_dir(&self) -> Option<&Path> {
        self.cache.as_ref().map(|c| c.dir())
    }

    /// Loads a `.wasm` file: regular files only, read without blocking and
    /// within [`MAX_WASM_BYTES`].
    pub async fn load_file(&self, path: &Path) -> Result<Plugin, PluginError> {
        let (name, bytes) = read_named(path).await?;
        self.load_bytes(&name, bytes, Some(path.to_path_buf()))
            .await
    }

    /// Loads the `.wasm` files in `dir` that `wanted` names, several at a
    /// time, in name order. A file that fails is logged and listed; the
    /// others still load. Two files claiming one name are both refused:
    /// which one should run is the operator's call.
    pub async fn load_dir(&self, dir: &Path, wanted: Wanted<'_>) -> std::io::Result<LoadedDir> {
        use futures_util::StreamExt;
        // Compiling is CPU-bound and runs on the blocking pool: one file
        // per core at a time.
        let parallel = std::thread::available_parallelism().map_or(1, |n| n.get());
        let found: Vec<(PathBuf, Result<Found, PluginError>)> =
            futures_util::stream::iter(load::entries(dir)?)
                .map(|path| async move {
                    let found = self.find(&path, wanted).await;
                    (path, found)
                })
                .buffered(parallel)
                .collect()
                .await;
        let compiled = found.iter().any(|(_, f)| match f {
            Ok(Found::Loaded(p)) => !p.from_cache(),
            Ok(Found::Unused(u)) => !u.known,
            Err(_) => false,
        });
        if compiled {
            release_freed_memory();
        }
        let mut loaded = LoadedDir::default();
        let mut claims: BTreeMap<String, Vec<Arc<Plugin>>> = BTreeMap::new();
        for (path, found) in found {
            match found {
                Ok(Found::Loaded(p)) => claims
                    .entry(p.name().to_string())
                    .or_default()
                    .push(Arc::from(p)),
                Ok(Found::Unused(u)) => {
                    tracing::debug!(plugin = %u.name, file = %path.display(), "not loading plugin: the config does not use it");
                    loaded.unused.push(u);
                }
                Err(e) => {
                    tracing::error!(file = %path.display(), kind = e.kind(), "{e}");
                    loaded.errors.insert(path, e.to_string());
                }
            }
        }
        for (name, mut plugins) in claims {
            if plugins.len() == 1 {
                let p = plugins.remove(0);
                tracing::info!(plugin = %p.name(), version = %p.manifest().version, cached = p.from_cache(), "loaded plugin");
                loaded.plugins.insert(name, p);
            } else {
                let files: Vec<&Path> = plugins.iter().filter_map(|p| p.source()).collect();
                tracing::warn!(plugin = %name, files = ?files, "several files claim this plugin name");
                loaded.conflicts.insert(name, plugins);
            }
        }
        Ok(loaded)
    }

    /// One file of a directory: loaded if wanted (or if its name is not
    /// known yet), else only read and hashed.
    async fn find(&self, path: &Path, wanted: Wanted<'_>) -> Result<Found, PluginError> {
        let (file, bytes) = read_named(path).await?;
        let sha256 = cache::sha256_hex(&bytes);
        if let Some(name) = self.cache.as_ref().and_then(|c| c.name_of(&sha256))
            && !wanted.wants(&name)
        {
            return Ok(Found::Unused(Unused {
                name,
                sha256,
                source: path.to_path_buf(),
                known: true,
            }));
        }
        let plugin = self
            .load_hashed(&file, bytes, sha256, Some(path.to_path_buf()))
            .await?;
        Ok(match wanted.wants(plugin.name()) {
            true => Found::Loaded(Box::new(plugin)),
            false => Found::Unused(Unused {
                name: plugin.name().to_string(),
                sha256: plugin.sha256().to_string(),
                source: path.to_path_buf(),
                known: false,
            }),
        })
    }

    /// Loads a component from bytes. `name` is used in errors until the
    /// plugin's own `describe()` names it.
    pub async fn load_bytes(
        &self,
        name: &str,
        bytes: Vec<u8>,
        source: Option<PathBuf>,
    ) -> Result<Plugin, PluginError> {
        let sha256 = cache::sha256_hex(&bytes);
        self.load_hashed(name, bytes, sha256, source).await
    }

    /// [`Runtime::load_bytes`] for bytes whose sha256 is known.
    async fn load_hashed(
        &self,
        name: &str,
        bytes: Vec<u8>,
        sha256: String,
        source: Option<PathBuf>,
    ) -> Result<Plugin, PluginError> {
        let invalid = |reason: String| PluginError::InvalidComponent {
            plugin: name.into(),
            reason,
        };
        plugin::sniff(&bytes).map_err(invalid)?;

        // Compiling takes ~100 ms of CPU: keep it off the async workers.
        let engine = self.engine.clone();
        let cache = self.cache.clone();
        let sha = sha256.clone();
        let (component, from_cache) = tokio::task::spawn_blocking(move || match &cache {
            Some(c) => c.load_or_compile(&engine, &bytes, &sha),
            None => Component::new(&engine, &bytes).map(|c| (c, false)),
        })
        .await
        .map_err(|e| invalid(format!("compiler task failed: {e}")))?
        .map_err(|e| invalid(format!("{:#}", anyhow::Error::from(e))))?;

        let (version, wit_version) =
            wit::version(&self.engine, &component).map_err(|e| match e {
                VersionError::NotAPlugin(exports) => invalid(format!(
                    "not a mend plugin: it does not export mend:plugin/meta (it exports: {exports})"
                )),
                VersionError::Unsupported(found) => PluginError::UnsupportedVersion {
                    plugin: name.into(),
                    found: if found.is_empty() {
                        "(unversioned)".into()
                    } else {
                        found
                    },
                    supported: wit::Version::supported(),
                },
            })?;
        let unresolved = |e: wasmtime::Error| {
            invalid(format!(
                "{:#} (the plugin imports something mend does not provide)",
                anyhow::Error::from(e)
            ))
        };
        let uses_http = component
            .component_type()
            .imports(&self.engine)
            .any(|(n, _)| n.starts_with("wasi:http/"));
        let pre = self
            .linker
            .instantiate_pre(&component)
            .map_err(unresolved)?;
        let pre_http = match uses_http {
            true => Some(
                self.http_linker
                    .instantiate_pre(&component)
                    .map_err(unresolved)?,
            ),
            false => None,
        };
        let exports = Exports::new(version, &pre)
            .map_err(|e| invalid(format!("{:#}", anyhow::Error::from(e))))?;

        let target = Target {
            name,
            pre: &pre,
            exports: &exports,
        };
        let invoked = self
            .invoke(target, Call::Describe, self.meta_spec())
            .await?;
        let Returned::Manifest(mut manifest) = invoked.returned else {
            unreachable!("describe returns a manifest")
        };
        accept_manifest(&mut manifest, |role| exports.has(role)).map_err(invalid)?;
        if let Some(cache) = &self.cache {
            cache.remember_name(&sha256, &manifest.name);
        }
        Ok(Plugin {
            manifest,
            sha256,
            source,
            version,
            wit_version,
            from_cache,
            pre,
            pre_http,
            exports,
        })
    }

    fn meta_spec(&self) -> CallSpec<'static> {
        static NONE: std::sync::OnceLock<ResolvedGrants> = std::sync::OnceLock::new();
        CallSpec {
            grants: NONE.get_or_init(ResolvedGrants::default),
            limits: self.describe_limits,
            clock: Clock::system(),
            dry_run: true,
            on_spawn: None,
            tape: crate::tape::Tape::off(),
        }
    }

    /// Asks the plugin whether `config` is right for `role`, without
    /// granting it anything. `Ok(None)`: its contract version cannot tell
    /// (0.1). `Ok(Some(needs))`: fine, and this is what the config reaches.
    pub async fn validate(
        &self,
        plugin: &Plugin,
        role: Role,
        config: &PluginConfig,
    ) -> Result<Option<Needs>, PluginError> {
        let config = config_json(plugin, config)?;
        let invoked = self
            .invoke(
                plugin.target(None),
                Call::Validate(role, config),
                self.meta_spec(),
            )
            .await?;
        let Returned::Validated(result) = invoked.returned else {
            unreachable!("validate returns needs")
        };
        match result {
            None => Ok(None),
            Some(Ok(needs)) => {
                bounds::needs(&needs).map_err(|what| PluginError::ResultTooLarge {
                    plugin: plugin.name().into(),
                    what: format!("validate(): {what}"),
                })?;
                Ok(Some(needs))
            }
            Some(Err(e)) => Err(guest_error(plugin.name(), e)),
        }
    }

    /// Runs a detector.
    pub async fn detect(
        &self,
        plugin: &Plugin,
        req: &Request<'_>,
    ) -> Result<Report<Vec<Finding>>, PluginError> {
        self.detect_taped(plugin, req, Tape::off()).await
    }

    /// [`Runtime::detect`] with its host calls recorded on, or answered
    /// from, `tape` (`mend plugin call --record`, `mend plugin test`).
    pub async fn detect_taped(
        &self,
        plugin: &Plugin,
        req: &Request<'_>,
        tape: Tape,
    ) -> Result<Report<Vec<Finding>>, PluginError> {
        if !plugin.is_detector() {
            return Err(PluginError::WrongRole {
                plugin: plugin.name().into(),
                role: "a detector",
            });
        }
        check_grants(plugin, Role::Detector, req.grants)?;
        let input = invocation(plugin, req)?;
        let spec = CallSpec {
            grants: req.grants,
            limits: req.limits,
            clock: req.clock,
            dry_run: false,
            on_spawn: None,
            tape,
        };
        let invoked = self
            .invoke(plugin.target(Some(req.grants)), Call::Detect(input), spec)
            .await?;
        let Returned::Findings(result) = invoked.returned else {
            unreachable!("detect returns findings")
        };
        let mut findings = result.map_err(|e| guest_error(plugin.name(), e))?;
        bounds::findings(&mut findings).map_err(|what| PluginError::ResultTooLarge {
            plugin: plugin.name().into(),
            what,
        })?;
        for f in &mut findings {
            f.check = req.check.to_string();
        }
        Ok(Report {
            value: findings,
            fuel_used: invoked.fuel_used,
            duration: invoked.duration,
        })
    }

    /// Runs an action. With `context.dry_run`, the action reports its plan,
    /// and the host makes every write through a capability impossible.
    pub async fn remedy(
        &self,
        plugin: &Plugin,
        req: &Request<'_>,
        findings: &[Finding],
        context: RemedyContext,
    ) -> Result<Report<Outcome>, PluginError> {
        self.remedy_observed(plugin, req, findings, context, None)
            .await
    }

    /// [`Runtime::remedy`], telling `on_spawn` of every process the
    /// action's commands start (the engine records them, so that after a
    /// crash it waits for an orphaned command before verifying).
    pub async fn remedy_observed(
        &self,
        plugin: &Plugin,
        req: &Request<'_>,
        findings: &[Finding],
        context: RemedyContext,
        on_spawn: Option<crate::capabilities::exec::SpawnHook>,
    ) -> Result<Report<Outcome>, PluginError> {
        self.remedy_taped(plugin, req, findings, context, on_spawn, Tape::off())
            .await
    }

    /// [`Runtime::remedy_observed`] on a tape (see [`Runtime::detect_taped`]).
    pub async fn remedy_taped(
        &self,
        plugin: &Plugin,
        req: &Request<'_>,
        findings: &[Finding],
        context: RemedyContext,
        on_spawn: Option<crate::capabilities::exec::SpawnHook>,
        tape: Tape,
    ) -> Result<Report<Outcome>, PluginError> {
        if !plugin.is_action() {
            return Err(PluginError::WrongRole {
                plugin: plugin.name().into(),
                role: "an action",
            });
        }
        check_grants(plugin, Role::Action, req.grants)?;
        let spec = CallSpec {
            grants: req.grants,
            limits: req.limits,
            clock: req.clock,
            dry_run: context.dry_run,
            on_spawn,
            tape,
        };
        let request = RemedyRequest {
            invocation: invocation(plugin, req)?,
            context,
            findings: findings.to_vec(),
        };
        let invoked = self
            .invoke(plugin.target(Some(req.grants)), Call::Remedy(request), spec)
            .await?;
        let Returned::Outcome(result) = invoked.returned else {
            unreachable!("remedy returns an outcome")
        };
        let mut outcome = result.map_err(|e| guest_error(plugin.name(), e))?;
        bounds::outcome(&mut outcome).map_err(|what| PluginError::ResultTooLarge {
            plugin: plugin.name().into(),
            what,
        })?;
        Ok(Report {
            value: outcome,
            fuel_used: invoked.fuel_used,
            duration: invoked.duration,
        })
    }
}

/// Refuses a call whose plugin declares needs beyond its grants.
fn check_grants(plugin: &Plugin, role: Role, grants: &ResolvedGrants) -> Result<(), PluginError> {
    // Borrowed, not cloned: this runs on every call.
    let none = Needs::default();
    let needs = plugin.manifest.needs(role).unwrap_or(&none);
    match capabilities::missing_grant(needs, grants) {
        Some(need) => Err(PluginError::MissingGrant {
            plugin: plugin.name().into(),
            need,
        }),
        None => Ok(()),
    }
}

impl Plugin {
    /// The pre-linked instance for a call with these grants: `wasi:http`
    /// only when URLs are granted.
    fn target(&self, grants: Option<&ResolvedGrants>) -> Target<'_> {
        let pre = match (&self.pre_http, grants) {
            (Some(http), Some(g)) if !g.urls.is_empty() => http,
            _ => &self.pre,
        };
        Target {
            name: self.name(),
            pre,
            exports: &self.exports,
        }
    }
}

fn config_json(plugin: &Plugin, config: &PluginConfig) -> Result<String, PluginError> {
    match config.text() {
        Some(text) => Ok(text.to_string()),
        None => Err(PluginError::BadConfig {
            plugin: plugin.name().into(),
            message: "config must be a table".into(),
        }),
    }
}

fn invocation(plugin: &Plugin, req: &Request<'_>) -> Result<Invocation, PluginError> {
    Ok(Invocation {
        check: req.check.to_string(),
        config: config_json(plugin, req.config)?,
        labels: req.labels.clone(),
    })
}

fn guest_error(plugin: &str, e: GuestError) -> PluginError {
    let plugin = plugin.to_string();
    match bounds::guest_error(e) {
        GuestError::BadConfig(message) => PluginError::BadConfig { plugin, message },
        GuestError::Denied(message) => PluginError::Denied { plugin, message },
        GuestError::Failed(message) => PluginError::Failed { plugin, message },
    }
}

/// What `describe()` returned, checked as a load checks it: bounded and
/// printable, each role at most once and exported (`exported(role)`).
pub(crate) fn accept_manifest(
    manifest: &mut Manifest,
    exported: impl Fn(Role) -> bool,
) -> Result<(), String> {
    bounds::manifest(manifest).map_err(|e| format!("describe(): {e}"))?;
    for role in [Role::Detector, Role::Action] {
        if manifest.has_role(role) && !exported(role) {
            let iface = match role {
                Role::Detector => "detection",
                Role::Action => "remediation",
            };
            return Err(format!(
                "declares the {role:?} role but does not export mend:plugin/{iface}"
            ));
        }
    }
    let mut roles: Vec<Role> = manifest.roles.iter().map(|r| r.role).collect();
    roles.dedup();
    if roles.len() != manifest.roles.len() {
        return Err("lists a role twice".into());
    }
    if manifest.roles.is_empty() {
        return Err("declares no role (detector or action)".into());
    }
    Ok(())
}
