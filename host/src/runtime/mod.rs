//! The plugin runtime: one wasmtime engine, a compile cache, and a fresh
//! sandboxed instance for every call.
//!
//! ```text
//! .wasm ──load──► Plugin (compiled, pre-linked, described)
//!                   │
//!      detect/remedy(grants, limits) ──► fresh Store ──► Report | PluginError
//! ```
//!
//! The runtime knows nothing of checks or policies: callers hand it a
//! plugin, a config, grants and limits.

pub mod bindings;
mod bounds;
mod cache;
mod call;
pub mod engine;
mod error;
mod limits;
pub(crate) mod output;
mod plugin;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::sync::Semaphore;
use wasmtime::Engine;
use wasmtime::component::Linker;

pub use self::engine::{Allocator, EngineSettings};
pub use self::error::PluginError;
pub use self::limits::Limits;
pub use self::plugin::{MAX_WASM_BYTES, Plugin};

use self::bindings::v0_1;
use self::cache::CompileCache;
use self::call::{Call, CallState, Returned, Target};
use self::plugin::Exports;
use crate::capabilities::clock::{WallClock, system_clock};
use crate::capabilities::state::StateStore;
use crate::capabilities::{self, ResolvedGrants};
use crate::contract::{Finding, Manifest, Outcome, Role};

/// How to build a [`Runtime`].
#[derive(Clone)]
pub struct RuntimeConfig {
    /// Where the compile cache and plugin state live. `None`: no cache, and
    /// no state (a plugin granted state gets an error).
    pub state_dir: Option<PathBuf>,
    pub engine: EngineSettings,
    /// Limits for `describe()` at load time.
    pub describe_limits: Limits,
    /// Bytes of stdout and of stderr kept per call.
    pub output_limit: usize,
    pub clock: WallClock,
    /// Run plugins' file I/O on the calling thread (about 3× faster) rather
    /// than on tokio's blocking pool. Inline, a plugin that opens a FIFO or
    /// a path on a hung mount inside its grant blocks a worker thread past
    /// its deadline (no timer can interrupt a syscall); on the pool, the
    /// deadline still ends the call. Default: off.
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
            clock: system_clock(),
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

/// What [`Runtime::load_dir`] found.
#[derive(Default)]
pub struct LoadedDir {
    /// By the name in each plugin's manifest.
    pub plugins: HashMap<String, Arc<Plugin>>,
    /// Files that did not load, and why.
    pub errors: HashMap<String, String>,
}

/// One detect or remedy call.
pub struct Request<'a> {
    /// The check (or policy step) the call is for.
    pub check: &'a str,
    /// The plugin's config table (a JSON object).
    pub config: &'a serde_json::Value,
    pub grants: &'a ResolvedGrants,
    pub limits: Limits,
}

pub struct Runtime {
    engine: Engine,
    linker: Linker<CallState>,
    allocator: Allocator,
    cache: Option<Arc<CompileCache>>,
    state: Option<StateStore>,
    permits: Semaphore,
    output_limit: usize,
    inline_file_io: bool,
    clock: WallClock,
    describe_limits: Limits,
    _ticker: engine::Ticker,
}

impl Runtime {
    pub fn new(config: RuntimeConfig) -> anyhow::Result<Self> {
        let (engine, allocator) = engine::build(&config.engine)?;
        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker).map_err(anyhow::Error::from)?;
        // Always linked; the per-call hooks send only to granted URLs.
        wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker)
            .map_err(anyhow::Error::from)?;
        capabilities::add_to_linker(&mut linker)?;
        let (cache, state) = match &config.state_dir {
            Some(dir) => {
                std::fs::create_dir_all(dir)
                    .with_context(|| format!("creating state directory {}", dir.display()))?;
                (
                    Some(Arc::new(CompileCache::open(&engine, dir)?)),
                    Some(StateStore::open(&dir.join("plugin-state.db"))?),
                )
            }
            None => (None, None),
        };
        let ticker = engine::Ticker::start(&engine, config.engine.epoch_tick);
        Ok(Runtime {
            engine,
            linker,
            allocator,
            cache,
            state,
            permits: Semaphore::new(config.engine.max_concurrent_calls as usize),
            output_limit: config.output_limit,
            inline_file_io: config.inline_file_io,
            clock: config.clock,
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

    /// Loads a `.wasm` file. Nothing but `.wasm` files is ever read.
    pub async fn load_file(&self, path: &Path) -> Result<Plugin, PluginError> {
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| path.display().to_string());
        let invalid = |reason: String| PluginError::InvalidComponent {
            plugin: name.clone(),
            reason,
        };
        if path.extension().and_then(|e| e.to_str()) != Some("wasm") {
            return Err(invalid("only `.wasm` files are loaded".into()));
        }
        let meta = tokio::fs::metadata(path)
            .await
            .map_err(|e| invalid(format!("{}: {e}", path.display())))?;
        if meta.len() > MAX_WASM_BYTES {
            return Err(invalid(format!(
                "{} bytes is larger than the {MAX_WASM_BYTES}-byte limit",
                meta.len()
            )));
        }
        let bytes = tokio::fs::read(path)
            .await
            .map_err(|e| invalid(format!("{}: {e}", path.display())))?;
        self.load_bytes(&name, bytes, Some(path.to_path_buf()))
            .await
    }

    /// Loads every `.wasm` in `dir`, in name order. A file that fails is
    /// logged and listed by file name; the others still load.
    pub async fn load_dir(&self, dir: &Path) -> std::io::Result<LoadedDir> {
        let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)?
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().and_then(|e| e.to_str()) == Some("wasm"))
            .collect();
        paths.sort();
        let mut loaded = LoadedDir::default();
        for path in paths {
            let file = path
                .file_name()
                .unwrap_or_default()
                .to_string_lossy()
                .into_owned();
            match self.load_file(&path).await {
                Ok(p) if loaded.plugins.contains_key(p.name()) => {
                    let why = format!(
                        "another file is also plugin `{}`; keeping the first",
                        p.name()
                    );
                    tracing::error!(file = %path.display(), "{why}");
                    loaded.errors.insert(file, why);
                }
                Ok(p) => {
                    tracing::info!(plugin = %p.name(), version = %p.manifest().version, cached = p.from_cache(), "loaded plugin");
                    loaded.plugins.insert(p.name().to_string(), Arc::new(p));
                }
                Err(e) => {
                    tracing::error!(file = %path.display(), kind = e.kind(), "{e}");
                    loaded.errors.insert(e.plugin().to_string(), e.to_string());
                }
            }
        }
        Ok(loaded)
    }

    /// Loads a component from bytes. `name` is used in errors until the
    /// plugin's own `describe()` names it.
    pub async fn load_bytes(
        &self,
        name: &str,
        bytes: Vec<u8>,
        source: Option<PathBuf>,
    ) -> Result<Plugin, PluginError> {
        let invalid = |reason: String| PluginError::InvalidComponent {
            plugin: name.into(),
            reason,
        };
        plugin::sniff(&bytes).map_err(invalid)?;
        let sha256 = cache::sha256_hex(&bytes);

        // Compiling takes ~100 ms of CPU: keep it off the async workers.
        let engine = self.engine.clone();
        let cache = self.cache.clone();
        let sha = sha256.clone();
        let (component, from_cache) = tokio::task::spawn_blocking(move || match &cache {
            Some(c) => c.load_or_compile(&engine, &bytes, &sha),
            None => wasmtime::component::Component::new(&engine, &bytes).map(|c| (c, false)),
        })
        .await
        .map_err(|e| invalid(format!("compiler task failed: {e}")))?
        .map_err(|e| invalid(format!("{:#}", anyhow::Error::from(e))))?;

        let wit_version = plugin::contract_version(name, &self.engine, &component)?;
        let pre = self.linker.instantiate_pre(&component).map_err(|e| {
            invalid(format!(
                "{:#} (the plugin imports something mend does not provide)",
                anyhow::Error::from(e)
            ))
        })?;
        let exports = Exports {
            meta: v0_1::meta::GuestIndices::new(&pre)
                .map_err(|e| invalid(format!("{:#}", anyhow::Error::from(e))))?,
            detection: v0_1::detection::GuestIndices::new(&pre).ok(),
            remediation: v0_1::remediation::GuestIndices::new(&pre).ok(),
        };

        let target = Target {
            name,
            pre: &pre,
            exports: &exports,
        };
        let invoked = self
            .invoke(
                target,
                Call::Describe,
                &ResolvedGrants::default(),
                self.describe_limits,
            )
            .await?;
        let Returned::Manifest(raw) = invoked.returned else {
            unreachable!("describe returns a manifest")
        };
        bounds::manifest(&raw).map_err(|e| invalid(format!("describe(): {e}")))?;
        let manifest: Manifest = raw.into();
        for (role, present, iface) in [
            (Role::Detector, exports.detection.is_some(), "detection"),
            (Role::Action, exports.remediation.is_some(), "remediation"),
        ] {
            if manifest.has_role(role) && !present {
                return Err(invalid(format!(
                    "declares the {role:?} role but does not export mend:plugin/{iface}"
                )));
            }
        }
        let mut roles: Vec<Role> = manifest.roles.iter().map(|r| r.role).collect();
        roles.dedup();
        if roles.len() != manifest.roles.len() {
            return Err(invalid("lists a role twice".into()));
        }
        if manifest.roles.is_empty() {
            return Err(invalid("declares no role (detector or action)".into()));
        }
        Ok(Plugin {
            manifest,
            sha256,
            source,
            wit_version,
            from_cache,
            pre,
            exports,
        })
    }

    /// Runs a detector.
    pub async fn detect(
        &self,
        plugin: &Plugin,
        req: &Request<'_>,
    ) -> Result<Report<Vec<Finding>>, PluginError> {
        if !plugin.is_detector() {
            return Err(PluginError::WrongRole {
                plugin: plugin.name().into(),
                role: "a detector",
            });
        }
        self.check_grants(plugin, Role::Detector, req.grants)?;
        let input = invocation(plugin, req)?;
        let invoked = self
            .invoke(plugin.target(), Call::Detect(input), req.grants, req.limits)
            .await?;
        let Returned::Findings(result) = invoked.returned else {
            unreachable!("detect returns findings")
        };
        let raw = result.map_err(|e| guest_error(plugin.name(), e))?;
        bounds::findings(&raw).map_err(|what| PluginError::ResultTooLarge {
            plugin: plugin.name().into(),
            what,
        })?;
        let findings = raw
            .into_iter()
            .map(|f| {
                let mut f: Finding = f.into();
                f.check = req.check.to_string();
                f
            })
            .collect();
        Ok(Report {
            value: findings,
            fuel_used: invoked.fuel_used,
            duration: invoked.duration,
        })
    }

    /// Runs an action. With `dry_run`, the action reports its plan.
    pub async fn remedy(
        &self,
        plugin: &Plugin,
        req: &Request<'_>,
        findings: &[Finding],
        dry_run: bool,
    ) -> Result<Report<Outcome>, PluginError> {
        if !plugin.is_action() {
            return Err(PluginError::WrongRole {
                plugin: plugin.name().into(),
                role: "an action",
            });
        }
        self.check_grants(plugin, Role::Action, req.grants)?;
        let request = v0_1::types::RemedyRequest {
            invocation: invocation(plugin, req)?,
            findings: findings.iter().map(Into::into).collect(),
        };
        let invoked = self
            .invoke(
                plugin.target(),
                Call::Remedy(request, dry_run),
                req.grants,
                req.limits,
            )
            .await?;
        let Returned::Outcome(result) = invoked.returned else {
            unreachable!("remedy returns an outcome")
        };
        let raw = result.map_err(|e| guest_error(plugin.name(), e))?;
        bounds::outcome(&raw).map_err(|what| PluginError::ResultTooLarge {
            plugin: plugin.name().into(),
            what,
        })?;
        Ok(Report {
            value: raw.into(),
            fuel_used: invoked.fuel_used,
            duration: invoked.duration,
        })
    }

    fn check_grants(
        &self,
        plugin: &Plugin,
        role: Role,
        grants: &ResolvedGrants,
    ) -> Result<(), PluginError> {
        let needs = plugin.manifest.needs(role).cloned().unwrap_or_default();
        match capabilities::missing_grant(&needs, grants) {
            Some(need) => Err(PluginError::MissingGrant {
                plugin: plugin.name().into(),
                need,
            }),
            None => Ok(()),
        }
    }
}

impl Plugin {
    fn target(&self) -> Target<'_> {
        Target {
            name: self.name(),
            pre: &self.pre,
            exports: &self.exports,
        }
    }
}

fn invocation(plugin: &Plugin, req: &Request<'_>) -> Result<v0_1::types::Invocation, PluginError> {
    let config = match req.config {
        serde_json::Value::Null => "{}".to_string(),
        v @ serde_json::Value::Object(_) => v.to_string(),
        _ => {
            return Err(PluginError::BadConfig {
                plugin: plugin.name().into(),
                message: "config must be a table".into(),
            });
        }
    };
    Ok(v0_1::types::Invocation {
        check: req.check.to_string(),
        config,
    })
}

fn guest_error(plugin: &str, e: v0_1::types::PluginError) -> PluginError {
    use v0_1::types::PluginError as G;
    let cut = |m: String| capabilities::log::truncate(&m, bounds::MAX_TEXT).to_string();
    let plugin = plugin.to_string();
    match e {
        G::BadConfig(m) => PluginError::BadConfig {
            plugin,
            message: cut(m),
        },
        G::Denied(m) => PluginError::Denied {
            plugin,
            message: cut(m),
        },
        G::Failed(m) => PluginError::Failed {
            plugin,
            message: cut(m),
        },
    }
}
