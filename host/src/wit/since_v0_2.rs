//! `mend:plugin@0.2.0`, the newest contract: its generated bindings, the
//! conversions between them and mend's own types, and its host imports,
//! each a thin call into the capability that owns it.

use std::marker::PhantomData;

use wasmtime::Store;
use wasmtime::component::{HasData, Instance, InstancePre, Linker};

use super::{Call, Returned};
use crate::capabilities::{self, HasCaps, HostCaps};
use crate::contract as c;
use crate::tape::Tape;

wasmtime::component::bindgen!({
    path: "../wit/0.2.0",
    world: "plugin",
    exports: { default: async },
    // Trappable: a replay that diverges traps the call.
    imports: {
        "mend:plugin/exec.run": async | trappable,
        "mend:plugin/sql.query": async | trappable,
        "mend:plugin/sql.execute": async | trappable,
        "mend:plugin/redis.command": async | trappable,
        "mend:plugin/redis.scan": async | trappable,
        "mend:plugin/system.cpu": async | trappable,
        "mend:plugin/system.filesystems": async | trappable,
        "mend:plugin/system.processes": async | trappable,
        default: trappable,
    },
    // The tape keeps arguments and results as they cross the contract.
    additional_derives: [serde::Serialize, serde::Deserialize],
});

use self::exports::mend::plugin::{detection, meta, remediation};
use self::mend::plugin::{clock, exec, fs, log, redis, sql, state, system, types};

/// The versions these bindings serve (semver-compatible with 0.2.0).
pub const VERSION: &str = "0.2";

/// Where each exported interface sits in a component of this version.
#[derive(Clone)]
pub(crate) struct Exports {
    meta: meta::GuestIndices,
    detection: Option<detection::GuestIndices>,
    remediation: Option<remediation::GuestIndices>,
}

impl Exports {
    pub(crate) fn new<T>(pre: &InstancePre<T>) -> wasmtime::Result<Exports> {
        Ok(Exports {
            meta: meta::GuestIndices::new(pre)?,
            detection: detection::GuestIndices::new(pre).ok(),
            remediation: remediation::GuestIndices::new(pre).ok(),
        })
    }

    pub(crate) fn has_detection(&self) -> bool {
        self.detection.is_some()
    }

    pub(crate) fn has_remediation(&self) -> bool {
        self.remediation.is_some()
    }
}

/// Makes one call on a fresh instance.
pub(crate) async fn call<T: Send>(
    store: &mut Store<T>,
    instance: &Instance,
    exports: &Exports,
    call: Call,
) -> wasmtime::Result<Returned> {
    Ok(match call {
        Call::Describe => {
            let meta = exports.meta.load(&mut *store, instance)?;
            Returned::Manifest(meta.call_describe(&mut *store).await?.into())
        }
        Call::Validate(role, config) => {
            let meta = exports.meta.load(&mut *store, instance)?;
            let r = meta
                .call_validate(&mut *store, role.into(), &config)
                .await?;
            Returned::Validated(Some(r.map(Into::into).map_err(Into::into)))
        }
        Call::Detect(input) => {
            let idx = exports.detection.as_ref().ok_or_else(|| {
                wasmtime::format_err!("the component does not export mend:plugin/detection")
            })?;
            let detection = idx.load(&mut *store, instance)?;
            let r = detection.call_detect(&mut *store, &input.into()).await?;
            Returned::Findings(
                r.map(|fs| fs.into_iter().map(Into::into).collect())
                    .map_err(Into::into),
            )
        }
        Call::Remedy(request) => {
            let idx = exports.remediation.as_ref().ok_or_else(|| {
                wasmtime::format_err!("the component does not export mend:plugin/remediation")
            })?;
            let remediation = idx.load(&mut *store, instance)?;
            let r = remediation
                .call_remedy(&mut *store, &request.into())
                .await?;
            Returned::Outcome(r.map(Into::into).map_err(Into::into))
        }
    })
}

/// One capability and the call's tape: what each import of this version
/// is implemented on, so that every call goes through the tape.
pub(crate) struct Taped<'a, C> {
    cap: &'a mut C,
    tape: &'a Tape,
}

/// [`HasData`] for an interface served by capability `C`.
struct Via<C>(PhantomData<C>);

impl<C: Send + 'static> HasData for Via<C> {
    type Data<'a> = Taped<'a, C>;
}

/// Borrows one capability and the tape out of the call's [`HostCaps`].
macro_rules! taped {
    ($field:ident) => {
        |t| {
            let HostCaps { $field, tape, .. } = t.caps();
            Taped { cap: $field, tape }
        }
    };
}

/// Links this version's imports; each goes through the tape to its
/// capability.
pub(crate) fn add_to_linker<T: HasCaps>(linker: &mut Linker<T>) -> anyhow::Result<()> {
    log::add_to_linker::<T, Via<capabilities::log::LogCap>>(linker, taped!(log))?;
    clock::add_to_linker::<T, Via<capabilities::clock::ClockCap>>(linker, taped!(clock))?;
    state::add_to_linker::<T, Via<capabilities::state::StateCap>>(linker, taped!(state))?;
    fs::add_to_linker::<T, Via<capabilities::fs::FsCap>>(linker, taped!(fs))?;
    exec::add_to_linker::<T, Via<capabilities::exec::ExecCap>>(linker, taped!(exec))?;
    sql::add_to_linker::<T, Via<capabilities::sql::SqlCap>>(linker, taped!(sql))?;
    redis::add_to_linker::<T, Via<capabilities::redis::RedisCap>>(linker, taped!(redis))?;
    system::add_to_linker::<T, Via<capabilities::system::SystemCap>>(linker, taped!(system))?;
    Ok(())
}

// ---- host imports -------------------------------------------------------
//
// Each import: its arguments to the tape (`tape.args`, nothing when the
// tape is off), then the capability call as `live`, which a replay never
// runs. The tape's call names are `interface.function`.

impl From<c::HostError> for types::HostError {
    fn from(e: c::HostError) -> Self {
        match e {
            c::HostError::Denied(m) => types::HostError::Denied(m),
            c::HostError::Failed(m) => types::HostError::Failed(m),
            c::HostError::TimedOut(m) => types::HostError::TimedOut(m),
            c::HostError::Limit(m) => types::HostError::Limit(m),
        }
    }
}

type HostResult<T> = Result<T, types::HostError>;
type Trappable<T> = wasmtime::Result<T>;

impl log::Host for Taped<'_, capabilities::log::LogCap> {
    fn log(
        &mut self,
        level: log::Level,
        message: String,
        fields: Vec<(String, String)>,
    ) -> Trappable<()> {
        use capabilities::log::Level as L;
        let args = self.tape.args(&(&level, &message, &fields));
        let l = match level {
            log::Level::Trace => L::Trace,
            log::Level::Debug => L::Debug,
            log::Level::Info => L::Info,
            log::Level::Warn => L::Warn,
            log::Level::Error => L::Error,
        };
        self.tape.sync("log.log", args, || {
            capabilities::log::LogCap::log(self.cap, l, &message, &fields)
        })
    }
}

impl clock::Host for Taped<'_, capabilities::clock::ClockCap> {
    fn now_ms(&mut self) -> Trappable<u64> {
        let args = self.tape.args(&());
        self.tape.sync("clock.now-ms", args, || self.cap.now_ms())
    }
}

impl state::Host for Taped<'_, capabilities::state::StateCap> {
    fn get(&mut self, key: String) -> Trappable<HostResult<Option<Vec<u8>>>> {
        let args = self.tape.args(&(&key,));
        self.tape.sync("state.get", args, || {
            Ok(capabilities::state::StateCap::get(self.cap, &key)?)
        })
    }
    fn set(&mut self, key: String, value: Vec<u8>) -> Trappable<HostResult<()>> {
        let args = self.tape.args(&(&key, &value));
        self.tape.sync("state.set", args, || {
            Ok(capabilities::state::StateCap::set(self.cap, &key, &value)?)
        })
    }
    fn delete(&mut self, key: String) -> Trappable<HostResult<()>> {
        let args = self.tape.args(&(&key,));
        self.tape.sync("state.delete", args, || {
            Ok(capabilities::state::StateCap::delete(self.cap, &key)?)
        })
    }
    fn compare_and_swap(
        &mut self,
        key: String,
        expected: Option<Vec<u8>>,
        value: Vec<u8>,
    ) -> Trappable<HostResult<bool>> {
        let args = self.tape.args(&(&key, &expected, &value));
        self.tape.sync("state.compare-and-swap", args, || {
            Ok(capabilities::state::StateCap::compare_and_swap(
                self.cap,
                &key,
                expected.as_deref(),
                &value,
            )?)
        })
    }
}

impl From<capabilities::fs::FileStat> for fs::FileStat {
    fn from(s: capabilities::fs::FileStat) -> Self {
        use capabilities::fs::FileKind as K;
        fs::FileStat {
            kind: match s.kind {
                K::File => fs::FileKind::File,
                K::Directory => fs::FileKind::Directory,
                K::Symlink => fs::FileKind::Symlink,
                K::Fifo => fs::FileKind::Fifo,
                K::Socket => fs::FileKind::Socket,
                K::BlockDevice => fs::FileKind::BlockDevice,
                K::CharDevice => fs::FileKind::CharDevice,
                K::Unknown => fs::FileKind::Unknown,
            },
            size: s.size,
            modified_ms: s.modified_ms,
            mode: s.mode,
        }
    }
}

impl fs::Host for Taped<'_, capabilities::fs::FsCap> {
    fn disk_usage(&mut self, path: String) -> Trappable<HostResult<fs::Usage>> {
        let args = self.tape.args(&(&path,));
        self.tape.sync("fs.disk-usage", args, || {
            let u = capabilities::fs::FsCap::disk_usage(self.cap, &path)?;
            Ok(fs::Usage {
                total_bytes: u.total_bytes,
                free_bytes: u.free_bytes,
                available_bytes: u.available_bytes,
                total_inodes: u.total_inodes,
                free_inodes: u.free_inodes,
            })
        })
    }
    fn stat_many(
        &mut self,
        paths: Vec<String>,
        follow_symlinks: bool,
    ) -> Trappable<HostResult<Vec<HostResult<Option<fs::FileStat>>>>> {
        let args = self.tape.args(&(&paths, &follow_symlinks));
        self.tape.sync("fs.stat-many", args, || {
            let stats = capabilities::fs::FsCap::stat_many(self.cap, &paths, follow_symlinks)?;
            Ok(stats
                .into_iter()
                .map(|r| r.map(|s| s.map(Into::into)).map_err(Into::into))
                .collect())
        })
    }
    fn walk(
        &mut self,
        dir: String,
        limits: fs::WalkLimits,
    ) -> Trappable<HostResult<Vec<fs::DirEntry>>> {
        let args = self.tape.args(&(&dir, &limits));
        self.tape.sync("fs.walk", args, || {
            let limits = capabilities::fs::WalkLimits {
                max_depth: limits.max_depth,
                max_entries: limits.max_entries,
            };
            let entries = capabilities::fs::FsCap::walk(self.cap, &dir, limits)?;
            Ok(entries
                .into_iter()
                .map(|e| fs::DirEntry {
                    path: e.path,
                    stat: e.stat.into(),
                })
                .collect())
        })
    }
}

impl exec::Host for Taped<'_, capabilities::exec::ExecCap> {
    async fn run(&mut self, name: String) -> Trappable<HostResult<exec::CommandOutput>> {
        let args = self.tape.args(&(&name,));
        let cap = &mut *self.cap;
        self.tape
            .run("exec.run", args, async {
                let o = capabilities::exec::ExecCap::run(cap, &name).await?;
                Ok(exec::CommandOutput {
                    exit_code: o.exit_code,
                    stdout: o.stdout,
                    stderr: o.stderr,
                    timed_out: o.timed_out,
                    truncated: o.truncated,
                    duration_ms: o.duration_ms,
                })
            })
            .await
    }

    fn argv(&mut self, name: String) -> Trappable<HostResult<Vec<String>>> {
        let args = self.tape.args(&(&name,));
        self.tape.sync("exec.argv", args, || {
            Ok(capabilities::exec::ExecCap::argv(self.cap, &name)?)
        })
    }
}

impl From<sql::Value> for capabilities::sql::Value {
    fn from(v: sql::Value) -> Self {
        use capabilities::sql::Value as V;
        match v {
            sql::Value::Null => V::Null,
            sql::Value::Boolean(b) => V::Boolean(b),
            sql::Value::Int(i) => V::Int(i),
            sql::Value::Float(f) => V::Float(f),
            sql::Value::Text(t) => V::Text(t),
        }
    }
}

impl From<capabilities::sql::Value> for sql::Value {
    fn from(v: capabilities::sql::Value) -> Self {
        use capabilities::sql::Value as V;
        match v {
            V::Null => sql::Value::Null,
            V::Boolean(b) => sql::Value::Boolean(b),
            V::Int(i) => sql::Value::Int(i),
            V::Float(f) => sql::Value::Float(f),
            V::Text(t) => sql::Value::Text(t),
        }
    }
}

fn query_options(o: sql::Options) -> capabilities::sql::QueryOptions {
    capabilities::sql::QueryOptions {
        fresh: o.fresh,
        timeout_ms: o.timeout_ms,
        read_only: false,
    }
}

impl sql::Host for Taped<'_, capabilities::sql::SqlCap> {
    async fn query(
        &mut self,
        connection: String,
        statement: String,
        params: Vec<sql::Value>,
        options: sql::Options,
    ) -> Trappable<HostResult<sql::Rows>> {
        let args = self
            .tape
            .args(&(&connection, &statement, &params, &options));
        let cap = &mut *self.cap;
        self.tape
            .run("sql.query", args, async {
                let params: Vec<_> = params.into_iter().map(Into::into).collect();
                let rows = capabilities::sql::SqlCap::query(
                    cap,
                    &connection,
                    &statement,
                    &params,
                    query_options(options),
                )
                .await?;
                Ok(sql::Rows {
                    columns: rows.columns,
                    rows: rows
                        .rows
                        .into_iter()
                        .map(|r| r.into_iter().map(Into::into).collect())
                        .collect(),
                })
            })
            .await
    }

    async fn execute(
        &mut self,
        connection: String,
        statement: String,
        params: Vec<sql::Value>,
        options: sql::Options,
    ) -> Trappable<HostResult<u64>> {
        let args = self
            .tape
            .args(&(&connection, &statement, &params, &options));
        let cap = &mut *self.cap;
        self.tape
            .run("sql.execute", args, async {
                let params: Vec<_> = params.into_iter().map(Into::into).collect();
                Ok(capabilities::sql::SqlCap::execute(
                    cap,
                    &connection,
                    &statement,
                    &params,
                    query_options(options),
                )
                .await?)
            })
            .await
    }
}

impl From<capabilities::redis::Reply> for redis::Reply {
    fn from(r: capabilities::redis::Reply) -> Self {
        use capabilities::redis::Reply as R;
        match r {
            R::Nil => redis::Reply::Nil,
            R::Int(i) => redis::Reply::Int(i),
            R::Data(d) => redis::Reply::Data(d),
            R::Array(a) => redis::Reply::Array(a),
        }
    }
}

impl redis::Host for Taped<'_, capabilities::redis::RedisCap> {
    async fn command(
        &mut self,
        connection: String,
        args: Vec<Vec<u8>>,
    ) -> Trappable<HostResult<redis::Reply>> {
        let taped = self.tape.args(&(&connection, &args));
        let cap = &mut *self.cap;
        self.tape
            .run("redis.command", taped, async {
                Ok(
                    capabilities::redis::RedisCap::command(cap, &connection, &args)
                        .await?
                        .into(),
                )
            })
            .await
    }

    async fn scan(
        &mut self,
        connection: String,
        cursor: u64,
        pattern: String,
        count: u32,
    ) -> Trappable<HostResult<(u64, Vec<String>)>> {
        let args = self.tape.args(&(&connection, &cursor, &pattern, &count));
        let cap = &mut *self.cap;
        self.tape
            .run("redis.scan", args, async {
                Ok(
                    capabilities::redis::RedisCap::scan(cap, &connection, cursor, &pattern, count)
                        .await?,
                )
            })
            .await
    }
}

impl system::Host for Taped<'_, capabilities::system::SystemCap> {
    async fn cpu(&mut self, interval_ms: u32) -> Trappable<HostResult<system::CpuUsage>> {
        let args = self.tape.args(&(&interval_ms,));
        let cap = &mut *self.cap;
        self.tape
            .run("system.cpu", args, async {
                let u = capabilities::system::SystemCap::cpu(cap, interval_ms).await?;
                Ok(system::CpuUsage {
                    busy: u.busy,
                    user: u.user,
                    system: u.system,
                    iowait: u.iowait,
                    steal: u.steal,
                    per_core: u.per_core,
                    interval_ms: u.interval_ms,
                })
            })
            .await
    }

    fn load(&mut self) -> Trappable<HostResult<system::LoadAverage>> {
        let args = self.tape.args(&());
        self.tape.sync("system.load", args, || {
            let l = capabilities::system::SystemCap::load(self.cap)?;
            Ok(system::LoadAverage {
                one: l.one,
                five: l.five,
                fifteen: l.fifteen,
                cores: l.cores,
                runnable: l.runnable,
                threads: l.threads,
            })
        })
    }

    fn memory(&mut self) -> Trappable<HostResult<system::MemoryInfo>> {
        let args = self.tape.args(&());
        self.tape.sync("system.memory", args, || {
            let m = capabilities::system::SystemCap::memory(self.cap)?;
            Ok(system::MemoryInfo {
                total_bytes: m.total_bytes,
                available_bytes: m.available_bytes,
                free_bytes: m.free_bytes,
                cached_bytes: m.cached_bytes,
                swap_total_bytes: m.swap_total_bytes,
                swap_free_bytes: m.swap_free_bytes,
            })
        })
    }

    fn pressure(&mut self) -> Trappable<HostResult<system::PressureInfo>> {
        let args = self.tape.args(&());
        self.tape.sync("system.pressure", args, || {
            let p = capabilities::system::SystemCap::pressure(self.cap)?;
            let stall = |s: capabilities::system::Stall| system::Stall {
                avg10: s.avg10,
                avg60: s.avg60,
                avg300: s.avg300,
                total_us: s.total_us,
            };
            let res = |r: capabilities::system::ResourcePressure| system::ResourcePressure {
                some: stall(r.some),
                full: stall(r.full),
            };
            Ok(system::PressureInfo {
                cpu: res(p.cpu),
                memory: res(p.memory),
                io: res(p.io),
            })
        })
    }

    async fn filesystems(&mut self) -> Trappable<HostResult<Vec<system::Filesystem>>> {
        let args = self.tape.args(&());
        let cap = &mut *self.cap;
        self.tape
            .run("system.filesystems", args, async {
                let fs = capabilities::system::SystemCap::filesystems(cap).await?;
                Ok(fs
                    .into_iter()
                    .map(|f| system::Filesystem {
                        mount_point: f.mount_point,
                        fs_type: f.fs_type,
                        total_bytes: f.total_bytes,
                        free_bytes: f.free_bytes,
                        available_bytes: f.available_bytes,
                        total_inodes: f.total_inodes,
                        free_inodes: f.free_inodes,
                    })
                    .collect())
            })
            .await
    }

    fn interfaces(&mut self) -> Trappable<HostResult<Vec<system::NetInterface>>> {
        let args = self.tape.args(&());
        self.tape.sync("system.interfaces", args, || {
            let nics = capabilities::system::SystemCap::interfaces(self.cap)?;
            Ok(nics
                .into_iter()
                .map(|n| system::NetInterface {
                    name: n.name,
                    rx_bytes: n.rx_bytes,
                    rx_packets: n.rx_packets,
                    rx_errors: n.rx_errors,
                    rx_dropped: n.rx_dropped,
                    tx_bytes: n.tx_bytes,
                    tx_packets: n.tx_packets,
                    tx_errors: n.tx_errors,
                    tx_dropped: n.tx_dropped,
                })
                .collect())
        })
    }

    async fn processes(
        &mut self,
        q: system::ProcessQuery,
    ) -> Trappable<HostResult<system::ProcessList>> {
        let args = self.tape.args(&(&q,));
        let cap = &mut *self.cap;
        self.tape
            .run("system.processes", args, async {
                let q = capabilities::system::ProcessQuery {
                    name: q.name,
                    cmdline: q.cmdline,
                    sample_ms: q.sample_ms,
                };
                let p = capabilities::system::SystemCap::processes(cap, &q).await?;
                Ok(system::ProcessList {
                    matched: p.matched,
                    processes: p
                        .processes
                        .into_iter()
                        .map(|p| system::Process {
                            pid: p.pid,
                            name: p.name,
                            state: p.state,
                            rss_bytes: p.rss_bytes,
                            cpu_seconds: p.cpu_seconds,
                            cpu_percent: p.cpu_percent,
                            age_ms: p.age_ms,
                            open_fds: p.open_fds,
                            argv: p.argv,
                        })
                        .collect(),
                })
            })
            .await
    }
}

// ---- exports ------------------------------------------------------------

impl From<types::Status> for c::Status {
    fn from(s: types::Status) -> Self {
        match s {
            types::Status::Ok => c::Status::Ok,
            types::Status::Warn => c::Status::Warn,
            types::Status::Fail => c::Status::Fail,
            types::Status::Unknown => c::Status::Unknown,
        }
    }
}

impl From<c::Status> for types::Status {
    fn from(s: c::Status) -> Self {
        match s {
            c::Status::Ok => types::Status::Ok,
            c::Status::Warn => types::Status::Warn,
            c::Status::Fail => types::Status::Fail,
            c::Status::Unknown => types::Status::Unknown,
        }
    }
}

impl From<types::Finding> for c::Finding {
    fn from(f: types::Finding) -> Self {
        c::Finding {
            check: f.check,
            code: f.code,
            status: f.status.into(),
            summary: f.summary,
            metrics: f.metrics.into_iter().collect(),
            labels: f.labels.into_iter().collect(),
        }
    }
}

impl From<c::Finding> for types::Finding {
    fn from(f: c::Finding) -> Self {
        types::Finding {
            check: f.check,
            code: f.code,
            status: f.status.into(),
            summary: f.summary,
            metrics: f.metrics.into_iter().collect(),
            labels: f.labels.into_iter().collect(),
        }
    }
}

impl From<types::Outcome> for c::Outcome {
    fn from(o: types::Outcome) -> Self {
        c::Outcome {
            changed: o.changed,
            steps: o.steps,
            message: o.message,
        }
    }
}

impl From<types::PluginError> for c::GuestError {
    fn from(e: types::PluginError) -> Self {
        match e {
            types::PluginError::BadConfig(m) => c::GuestError::BadConfig(m),
            types::PluginError::Denied(m) => c::GuestError::Denied(m),
            types::PluginError::Failed(m) => c::GuestError::Failed(m),
        }
    }
}

impl From<c::Role> for types::Role {
    fn from(r: c::Role) -> Self {
        match r {
            c::Role::Detector => types::Role::Detector,
            c::Role::Action => types::Role::Action,
        }
    }
}

impl From<types::Needs> for c::Needs {
    fn from(n: types::Needs) -> Self {
        c::Needs {
            dirs: n
                .dirs
                .into_iter()
                .map(|d| c::DirNeed {
                    path: d.path,
                    write: d.write,
                })
                .collect(),
            addresses: n.addresses,
            urls: n.urls,
            connections: n.connections,
            commands: n.commands,
            state: n.state,
            system: n.system,
            processes: n.processes,
        }
    }
}

impl From<types::Manifest> for c::Manifest {
    fn from(m: types::Manifest) -> Self {
        c::Manifest {
            name: m.name,
            version: m.version,
            description: m.description,
            roles: m
                .roles
                .into_iter()
                .map(|r| c::RoleNeeds {
                    role: match r.role {
                        types::Role::Detector => c::Role::Detector,
                        types::Role::Action => c::Role::Action,
                    },
                    needs: r.needs.into(),
                })
                .collect(),
        }
    }
}

impl From<c::Invocation> for types::Invocation {
    fn from(i: c::Invocation) -> Self {
        types::Invocation {
            check: i.check,
            config: i.config,
            labels: i.labels.into_iter().collect(),
        }
    }
}

impl From<c::RemedyRequest> for types::RemedyRequest {
    fn from(r: c::RemedyRequest) -> Self {
        let cx = r.context;
        types::RemedyRequest {
            invocation: r.invocation.into(),
            context: types::RemedyContext {
                incident: cx.incident,
                policy: cx.policy,
                step: cx.step,
                step_ref: match cx.step_ref {
                    c::StepRef::Ladder(i) => types::StepRef::Ladder(i),
                    c::StepRef::Escalation => types::StepRef::Escalation,
                },
                attempt: cx.attempt,
                severity: match cx.severity {
                    c::Severity::Critical => types::Severity::Critical,
                    c::Severity::Warning => types::Severity::Warning,
                    c::Severity::Info => types::Severity::Info,
                },
                dry_run: cx.dry_run,
                trail: cx.trail,
                link: cx.link,
            },
            findings: r.findings.into_iter().map(Into::into).collect(),
        }
    }
}
