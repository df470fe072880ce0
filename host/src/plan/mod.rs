//! The plan: a config resolved against the system and the plugins, once.
//!
//! ```text
//! mend.toml ──config::load──► Config ──┐
//! plugins/*.wasm ──load_dir──► PluginSet ─┴─► Plan::compile ──► Plan | every problem
//! ```
//!
//! Compiling is the one validation there is: `mend run` refuses to start
//! on any error, a SIGHUP or plugin reload keeps the running plan and logs
//! every error, `mend check-config` prints them. It resolves checks,
//! policies and steps; grants (directories, addresses, URLs, named
//! connections and commands) against the plugins' declared needs; roles;
//! limits; dependencies; and asks each plugin whether its config is right
//! and what that config will reach (`validate`), so a typo or a URL outside
//! the grants is a config error with its position, not a failing call.
//! Nothing downstream re-checks: the engine takes a `Plan` as given.

mod plugins;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use globset::{Glob, GlobSet, GlobSetBuilder};

pub use self::plugins::PluginSet;
use crate::capabilities::{Backends, Grants, ResolvedGrants, missing_grant};
use crate::config::{self, Config, ConfigError, StepConfig};
use crate::contract::{Needs, Role, Severity, Status};
use crate::policy::backoff::Backoff;
use crate::policy::breaker::BreakerConfig;
use crate::policy::flap::FlapConfig;
use crate::policy::health::HealthConfig;
use crate::policy::maintenance::MaintenanceWindow;
use crate::policy::trigger::Trigger;
use crate::policy::verify::Verify;
use crate::runtime::{Limits, PluginConfig, Runtime, Wanted};

/// A config ready to run.
pub struct Plan {
    /// The config as written (for display, and to compare on reload).
    pub config: Config,
    pub backends: Backends,
    pub plugins: Arc<PluginSet>,
    pub checks: Vec<CheckPlan>,
    pub policies: Vec<PolicyPlan>,
    /// Check name → the checks it depends on.
    pub dependencies: BTreeMap<String, Vec<String>>,
    /// What compiled but deserves the operator's eye (a plugin whose
    /// contract cannot validate its config, a file that did not load).
    pub warnings: Vec<ConfigError>,
}

/// One check, resolved.
pub struct CheckPlan {
    pub name: String,
    /// The detector plugin, by name.
    pub plugin: String,
    pub interval: Duration,
    pub jitter: Duration,
    pub limits: Limits,
    pub grants: ResolvedGrants,
    /// The plugin's config table, as JSON.
    pub config: PluginConfig,
    pub labels: BTreeMap<String, String>,
    pub severity: Severity,
    pub health: HealthConfig,
    pub flap: FlapConfig,
    /// What its steps learn is kept under this key: its `stats_key`, else
    /// its name.
    pub stats_key: String,
    /// Indices of the policies that watch it.
    pub policies: Vec<usize>,
}

/// One policy, resolved.
pub struct PolicyPlan {
    pub name: String,
    /// Index of the check it watches.
    pub check: usize,
    /// Shared by the policies with the same list: a compiled set is a few
    /// KB, and thousands of policies often say the same `["*"]`.
    pub codes: Arc<GlobSet>,
    pub statuses: Vec<Status>,
    pub trigger: Trigger,
    /// With an anomaly trigger, a matching finding is evidence only when
    /// its metric departs from the baseline (`engine/evaluate.rs`).
    pub anomaly: Option<crate::policy::baseline::AnomalyRule>,
    pub steps: Vec<StepPlan>,
    pub escalate: Option<StepPlan>,
    pub cooldown: Duration,
    pub max_attempts: u32,
    pub window: Duration,
    pub backoff: Backoff,
    pub breaker: BreakerConfig,
    pub adaptive: bool,
    /// Plan only (this policy's `dry_run`, or the engine's).
    pub dry_run: bool,
    pub maintenance: Vec<MaintenanceWindow>,
    pub paused: bool,
    pub exit_on_exhausted: bool,
    /// Escalate an incident open this long (the ladder goes on).
    pub escalate_after: Option<Duration>,
    /// Where `escalate` comes from: `policy.escalate`, or
    /// `escalate.SEVERITY` (the route of its check's severity).
    pub escalate_route: Option<String>,
    /// When a step counts as healed, and a heal as relapsed.
    pub verify: Verify,
}

/// A ladder step (or the escalation), resolved.
pub struct StepPlan {
    /// Names the step in stats, breakers and incidents.
    pub name: String,
    /// The action plugin, by name.
    pub action: String,
    pub config: PluginConfig,
    pub grants: ResolvedGrants,
    pub limits: Limits,
    pub settle: Duration,
    /// The fleet budget (`[fleet.budget.NAME]`) the step holds a slot of.
    pub budget: Option<String>,
}

impl PolicyPlan {
    /// Whether a finding is evidence for this policy (for an anomaly
    /// policy: whether its metric is judged).
    pub fn matches(&self, f: &crate::contract::Finding) -> bool {
        self.statuses.contains(&f.status) && self.codes.is_match(&f.code)
    }
}

/// Every problem found, and what is only worth a warning.
#[derive(Debug, Default)]
pub struct Problems {
    pub errors: Vec<ConfigError>,
    pub warnings: Vec<ConfigError>,
}

impl std::fmt::Display for Problems {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, e) in self.errors.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Problems {}

/// Reads `path`, loads its plugins directory and compiles the plan: what
/// `mend run`, reload and `mend check-config` all do.
pub async fn load(path: &Path, runtime: &Runtime) -> Result<Plan, Problems> {
    from_parsed(config::load_partial(path), runtime).await
}

/// [`load`] for a config already read (its problems are kept).
pub async fn from_parsed(parsed: config::Parsed, runtime: &Runtime) -> Result<Plan, Problems> {
    let Some(config) = parsed.config else {
        return Err(Problems {
            errors: parsed.errors,
            warnings: Vec::new(),
        });
    };
    let plugins = load_plugins(&config, runtime).await;
    let mut result = Plan::compile(config, plugins, runtime).await;
    if !parsed.errors.is_empty() {
        let mut problems = match result {
            Ok(plan) => Problems {
                errors: Vec::new(),
                warnings: plan.warnings,
            },
            Err(p) => p,
        };
        problems.errors.splice(0..0, parsed.errors);
        problems.errors.sort_by_key(|e| e.position);
        result = Err(problems);
    }
    result
}

/// Loads the plugins of the config's plugins directory that the config
/// names (checks, steps, escalations, pins); the other files are only
/// listed, so unused files cost nothing. An unreadable directory is a plan
/// error, reported by [`Plan::compile`].
pub async fn load_plugins(config: &Config, runtime: &Runtime) -> PluginSet {
    let dir = config.plugins_dir();
    let names = referenced_plugins(config);
    match runtime.load_dir(&dir, Wanted::Names(&names)).await {
        Ok(loaded) => PluginSet::new(dir, loaded, &config.plugins),
        Err(e) => {
            let mut set = PluginSet {
                dir: dir.clone(),
                ..PluginSet::default()
            };
            set.broken
                .insert(dir, format!("cannot read the plugins directory: {e}"));
            set
        }
    }
}

/// Every plugin name the config refers to (checks, ladder steps, a
/// policy's or a severity's escalation, pins).
fn referenced_plugins(config: &Config) -> BTreeSet<String> {
    let checks = config.checks.iter().map(|c| c.plugin.get_ref());
    let steps = config
        .policies
        .iter()
        .flat_map(|p| p.steps.iter().chain(p.escalate.as_ref()))
        .chain(config.escalate.values())
        .map(|s| s.action.get_ref());
    checks
        .chain(steps)
        .chain(config.plugins.keys())
        .cloned()
        .collect()
}

impl Plan {
    /// Resolves `config` against `plugins` (asking each plugin to validate
    /// its configs through `runtime`). Every problem is reported.
    pub async fn compile(
        config: Config,
        plugins: PluginSet,
        runtime: &Runtime,
    ) -> Result<Plan, Problems> {
        let mut c = Compiler {
            source: config.source.clone(),
            problems: Problems::default(),
            runtime,
            plugins: &plugins,
            validated: HashMap::new(),
        };
        c.plugins_dir(&config);
        let backends = c.backends(&config);
        c.read_only_roles(&backends).await;
        let own_dirs = own_dirs(&config);

        let mut checks = Vec::with_capacity(config.checks.len());
        for (i, check) in config.checks.iter().enumerate() {
            let key = format!("check[{i}]");
            let grants = c.grants(&key, &check.grants, &backends, &own_dirs);
            let json = to_json(&check.config);
            if let Some(g) = &grants {
                c.plugin(
                    &key,
                    "plugin",
                    check.plugin.get_ref(),
                    Role::Detector,
                    g,
                    &json,
                )
                .await;
            }
            let grants = grants.unwrap_or_default();
            checks.push(CheckPlan {
                name: check.name().to_string(),
                plugin: check.plugin.get_ref().clone(),
                interval: check.interval(&config.engine),
                jitter: check.jitter(&config.engine),
                limits: check
                    .limits
                    .over_for(config.plugin_limits(check.plugin.get_ref()), &grants),
                grants,
                config: json,
                labels: check.labels.clone(),
                severity: check.severity,
                health: check.health(),
                flap: check.flap,
                stats_key: check
                    .stats_key
                    .clone()
                    .unwrap_or_else(|| check.name().to_string()),
                policies: Vec::new(),
            });
        }

        let mut policies = Vec::with_capacity(config.policies.len());
        let mut code_sets: HashMap<&[String], Arc<GlobSet>> = HashMap::new();
        for (i, p) in config.policies.iter().enumerate() {
            let key = format!("policy[{i}]");
            let Some(check) = config.check_position(p.check.get_ref()) else {
                continue; // reported by config validation
            };
            checks[check].policies.push(policies.len());
            let mut steps = Vec::with_capacity(p.steps.len());
            for (j, s) in p.steps.iter().enumerate() {
                let step = c
                    .step(
                        &format!("{key}.step[{j}]"),
                        s,
                        &config,
                        &backends,
                        &own_dirs,
                    )
                    .await;
                steps.push(step);
            }
            // Its own escalation, else its check's severity's route.
            let route = config.escalation_of(p);
            let escalate = match &route {
                Some((route, s)) => {
                    let at = if p.escalate.is_some() {
                        format!("{key}.escalate")
                    } else {
                        route.clone()
                    };
                    Some(c.step(&at, s, &config, &backends, &own_dirs).await)
                }
                None => None,
            };
            let trigger = p.trigger.trigger().unwrap_or(Trigger::Consecutive(3));
            policies.push(PolicyPlan {
                name: p.name().to_string(),
                check,
                codes: code_sets
                    .entry(&p.codes)
                    .or_insert_with(|| Arc::new(globs(&p.codes)))
                    .clone(),
                statuses: p.statuses(),
                trigger,
                anomaly: p
                    .trigger
                    .anomaly
                    .as_ref()
                    .map(|a| a.rule(checks[check].interval)),
                steps,
                escalate,
                cooldown: p.cooldown.0,
                max_attempts: p.max_attempts,
                window: p.window.0,
                backoff: p.backoff.backoff(),
                breaker: p.breaker.breaker(),
                adaptive: p.adaptive,
                dry_run: p.dry_run || config.engine.dry_run,
                maintenance: p.maintenance.clone(),
                paused: p.paused,
                exit_on_exhausted: p.exit_on_exhausted,
                escalate_after: p.escalate_after.map(|d| d.0),
                escalate_route: route.map(|(r, _)| r),
                verify: p.verify(checks[check].interval),
            });
        }
        c.pins(&config);
        c.leftovers(&config);

        let Compiler { mut problems, .. } = c;
        if !problems.errors.is_empty() {
            problems.errors.sort_by_key(|e| e.position);
            return Err(problems);
        }
        Ok(Plan {
            dependencies: config::dependency_graph(&config.checks),
            config,
            backends,
            plugins: Arc::new(plugins),
            checks,
            policies,
            warnings: problems.warnings,
        })
    }
}

fn to_json(t: &toml::Table) -> PluginConfig {
    PluginConfig::new(serde_json::to_value(t).unwrap_or(serde_json::Value::Null))
}

fn globs(codes: &[String]) -> GlobSet {
    let mut b = GlobSetBuilder::new();
    for code in codes {
        // Bad globs were reported by config validation.
        if let Ok(g) = Glob::new(code) {
            b.add(g);
        }
    }
    b.build().unwrap_or_else(|_| GlobSet::empty())
}

/// mend's own directories, which no grant may reach into or cover.
fn own_dirs(config: &Config) -> Vec<(&'static str, PathBuf)> {
    let mut dirs = vec![("plugins directory", config.plugins_dir())];
    if let Some(state) = config.state_dir() {
        dirs.push(("compile cache", state.join("cache")));
        dirs.push(("state directory", state));
    }
    dirs.into_iter()
        .map(|(what, d)| (what, d.canonicalize().unwrap_or(d)))
        .collect()
}

struct Compiler<'a> {
    source: Arc<config::Source>,
    problems: Problems,
    runtime: &'a Runtime,
    plugins: &'a PluginSet,
    /// (plugin, role, config) already validated, and the answer.
    validated: HashMap<(String, Role, String), Result<Option<Needs>, String>>,
}

impl Compiler<'_> {
    fn error(&mut self, key: impl Into<String>, message: impl Into<String>) {
        self.problems.errors.push(self.source.error(key, message));
    }

    fn warning(&mut self, key: impl Into<String>, message: impl Into<String>) {
        self.problems.warnings.push(self.source.error(key, message));
    }

    fn plugins_dir(&mut self, config: &Config) {
        let dir = config.plugins_dir();
        if let Some(why) = self.plugins.broken.get(&dir) {
            self.error("engine.plugins_dir", format!("{}: {why}", dir.display()));
        }
    }

    /// Checks `[connections]` and `[commands]` one by one, so each problem
    /// is reported; grants are then resolved against those that are sound.
    fn backends(&mut self, config: &Config) -> Backends {
        let mut b = Backends::default();
        for (name, def) in &config.connections {
            if let Err(e) = b.add_connection(name, def) {
                self.error(format!("connections.{name}"), format!("{e:#}"));
            }
        }
        for (name, def) in &config.commands {
            if let Err(e) = b.add_command(name, def) {
                self.error(format!("commands.{name}"), format!("{e:#}"));
            }
        }
        b
    }

    /// A `read_only` PostgreSQL connection must not log in as a role that
    /// gets past a read-only transaction (a superuser, or one of the roles
    /// that read or write server files or run programs): the promise would
    /// be hollow. Checked by connecting; a server that cannot be reached
    /// now is a warning (mend heals databases that are down), and every
    /// new session is checked again before it runs anything.
    async fn read_only_roles(&mut self, backends: &Backends) {
        for conn in backends.postgres().filter(|c| c.is_read_only()) {
            let key = format!("connections.{}", conn.name);
            match conn.role_risks().await {
                Ok(r) => {
                    if let Some(why) = r.refusal(&conn.name) {
                        self.error(
                            key,
                            format!("{why}; log in as a role without them, or drop `read_only`"),
                        );
                    }
                }
                Err(e) => self.warning(
                    key,
                    format!(
                        "cannot check the role of read-only {e}: every session will be checked when it opens"
                    ),
                ),
            }
        }
    }

    fn grants(
        &mut self,
        key: &str,
        grants: &Grants,
        backends: &Backends,
        own: &[(&str, PathBuf)],
    ) -> Option<ResolvedGrants> {
        let key = format!("{key}.grants");
        let resolved = match grants.resolve_with(backends) {
            Ok(r) => r,
            Err(e) => {
                self.error(key, format!("{e:#}"));
                return None;
            }
        };
        let mut ok = true;
        for (i, d) in resolved.dirs.iter().enumerate() {
            if d.host.starts_with("/tmp") || d.host.starts_with("/var/tmp") {
                self.warning(
                    format!("{key}.dirs[{i}]"),
                    format!(
                        "{} is under /tmp: under systemd (PrivateTmp=yes in mend.service) mend sees a private /tmp there, not the system's; grant a directory elsewhere",
                        d.host.display()
                    ),
                );
            }
            let reached: Vec<String> = own
                .iter()
                .filter(|(_, dir)| d.host.starts_with(dir) || dir.starts_with(&d.host))
                .map(|(what, dir)| format!("{what} ({})", dir.display()))
                .collect();
            if !reached.is_empty() {
                ok = false;
                self.error(
                    format!("{key}.dirs[{i}]"),
                    format!(
                        "directory grant {} reaches mend's own {}: a plugin could read or plant what mend trusts; grant a directory that neither contains nor lies inside them",
                        d.host.display(),
                        reached.join(", ")
                    ),
                );
            }
        }
        ok.then_some(resolved)
    }

    async fn step(
        &mut self,
        key: &str,
        s: &StepConfig,
        config: &Config,
        backends: &Backends,
        own: &[(&str, PathBuf)],
    ) -> StepPlan {
        let grants = self.grants(key, &s.grants, backends, own);
        let json = to_json(&s.config);
        if let Some(g) = &grants {
            self.plugin(key, "action", s.action.get_ref(), Role::Action, g, &json)
                .await;
        }
        let grants = grants.unwrap_or_default();
        StepPlan {
            name: s.name().to_string(),
            action: s.action.get_ref().clone(),
            limits: s
                .limits
                .over_for(config.plugin_limits(s.action.get_ref()), &grants),
            grants,
            config: json,
            settle: s.settle.0,
            budget: s.budget.as_ref().map(|b| b.get_ref().clone()),
        }
    }

    /// The plugin exists, plays the role, its declared needs fit the
    /// grants, and it accepts this config (whose concrete needs fit too).
    async fn plugin(
        &mut self,
        key: &str,
        field: &str,
        name: &str,
        role: Role,
        grants: &ResolvedGrants,
        config: &PluginConfig,
    ) {
        let at = format!("{key}.{field}");
        let Some(plugin) = self.plugins.get(name).cloned() else {
            let why = self.plugins.why_missing(name);
            self.error(at, why);
            return;
        };
        if !plugin.plays(role) {
            let (is, want) = match role {
                Role::Detector => ("an action", "a detector"),
                Role::Action => ("a detector", "an action"),
            };
            self.error(
                at,
                format!("plugin `{name}` is {is}, not {want}: it cannot be used here"),
            );
            return;
        }
        if let Some(need) = plugin
            .manifest()
            .needs(role)
            .and_then(|n| missing_grant(n, grants))
        {
            self.error(
                format!("{key}.grants"),
                format!("plugin `{name}` needs {need}, which is not granted here"),
            );
            return;
        }
        let text = config
            .text()
            .map_or_else(|| config.to_string(), str::to_string);
        let cache_key = (name.to_string(), role, text);
        let answer = match self.validated.get(&cache_key) {
            Some(a) => a.clone(),
            None => {
                let a = self
                    .runtime
                    .validate(&plugin, role, config)
                    .await
                    .map_err(|e| match e {
                        crate::runtime::PluginError::BadConfig { message, .. } => message,
                        other => format!("validating the config failed: {other}"),
                    });
                self.validated.insert(cache_key, a.clone());
                a
            }
        };
        let config_key = format!("{key}.config");
        match answer {
            Err(message) => self.error(
                config_key,
                format!(
                    "plugin `{name}`: {}",
                    config::suggest::with_field_hint(&message)
                ),
            ),
            Ok(None) => self.warning(
                config_key,
                format!(
                    "plugin `{name}` speaks mend:plugin@{}, which cannot check a config before running it: a mistake here shows only when it runs",
                    plugin.wit_version()
                ),
            ),
            Ok(Some(needs)) => {
                if let Some(need) = missing_grant(&needs, grants) {
                    self.error(
                        config_key,
                        format!(
                            "with this config plugin `{name}` reaches {need}, which is not granted here"
                        ),
                    );
                }
            }
        }
    }

    /// Pins that name no plugin file.
    fn pins(&mut self, config: &Config) {
        for name in config.plugins.keys() {
            let known = self.plugins.plugins.contains_key(name)
                || self.plugins.conflicts.contains_key(name)
                || self.plugins.pin_mismatches.contains_key(name);
            if !known {
                let m = format!(
                    "no plugin named `{name}` in {}{}",
                    self.plugins.dir.display(),
                    config::suggest::hint(name, self.plugins.plugins.keys().map(String::as_str))
                );
                self.error(format!("plugins.{name}"), m);
            }
        }
    }

    /// What is wrong in the plugins directory but used by nothing.
    fn leftovers(&mut self, config: &Config) {
        let dir = config.plugins_dir();
        let broken: Vec<(PathBuf, String)> = self
            .plugins
            .broken
            .iter()
            .filter(|(f, _)| **f != dir)
            .map(|(f, w)| (f.clone(), w.clone()))
            .collect();
        for (file, why) in broken {
            self.warning(
                "engine.plugins_dir",
                format!(
                    "{} did not load (nothing uses it by name): {why}",
                    file.display()
                ),
            );
        }
        let used: Vec<&str> = config
            .checks
            .iter()
            .map(|c| c.plugin.get_ref().as_str())
            .chain(config.policies.iter().flat_map(|p| {
                p.steps
                    .iter()
                    .chain(p.escalate.iter())
                    .map(|s| s.action.get_ref().as_str())
            }))
            .chain(
                config
                    .escalate
                    .values()
                    .map(|s| s.action.get_ref().as_str()),
            )
            .collect();
        let unused: Vec<String> = self
            .plugins
            .conflicts
            .keys()
            .filter(|n| !used.contains(&n.as_str()))
            .cloned()
            .collect();
        for name in unused {
            let why = self.plugins.why_missing(&name);
            self.warning("engine.plugins_dir", why);
        }
    }
}

#[cfg(test)]
mod tests;
