//! `mend:plugin@0.1.0`, released with wave 1 and frozen (`wit/0.1.0/`).
//! Its imports delegate to the same capability functions as the newest
//! contract; what changed is only how answers are spelt: host errors are
//! strings (`denied: ...` for a refusal), a remedy gets no context, a call
//! no labels, and there is no `validate`.

use wasmtime::Store;
use wasmtime::component::{HasSelf, Instance, InstancePre, Linker};

use super::{Call, Returned};
use crate::capabilities::{self, HasCaps};
use crate::contract as c;

wasmtime::component::bindgen!({
    path: "../wit/0.1.0",
    world: "plugin",
    exports: { default: async },
    imports: {
        "mend:plugin/exec.run": async,
        "mend:plugin/sql.query": async,
        "mend:plugin/sql.execute": async,
        "mend:plugin/redis.command": async,
        "mend:plugin/redis.scan": async,
    },
});

use self::exports::mend::plugin::{detection, meta, remediation};
use self::mend::plugin::{clock, exec, fs, log, redis, sql, state, types};

/// The versions these bindings serve (semver-compatible with 0.1.0).
pub const VERSION: &str = "0.1";

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
        // 0.1 cannot check a config without running it.
        Call::Validate(..) => Returned::Validated(None),
        Call::Detect(input) => {
            let idx = exports.detection.as_ref().ok_or_else(|| {
                wasmtime::format_err!("the component does not export mend:plugin/detection")
            })?;
            let detection = idx.load(&mut *store, instance)?;
            let input = types::Invocation {
                check: input.check,
                config: input.config,
            };
            let r = detection.call_detect(&mut *store, &input).await?;
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
            let dry_run = request.context.dry_run;
            let request = types::RemedyRequest {
                invocation: types::Invocation {
                    check: request.invocation.check,
                    config: request.invocation.config,
                },
                findings: request.findings.into_iter().map(Into::into).collect(),
            };
            let r = remediation
                .call_remedy(&mut *store, &request, dry_run)
                .await?;
            Returned::Outcome(r.map(Into::into).map_err(Into::into))
        }
    })
}

pub(crate) fn add_to_linker<T: HasCaps>(linker: &mut Linker<T>) -> anyhow::Result<()> {
    log::add_to_linker::<T, HasSelf<capabilities::log::LogCap>>(linker, |t| &mut t.caps().log)?;
    clock::add_to_linker::<T, HasSelf<capabilities::clock::ClockCap>>(linker, |t| {
        &mut t.caps().clock
    })?;
    state::add_to_linker::<T, HasSelf<capabilities::state::StateCap>>(linker, |t| {
        &mut t.caps().state
    })?;
    fs::add_to_linker::<T, HasSelf<capabilities::fs::FsCap>>(linker, |t| &mut t.caps().fs)?;
    exec::add_to_linker::<T, HasSelf<capabilities::exec::ExecCap>>(linker, |t| &mut t.caps().exec)?;
    sql::add_to_linker::<T, HasSelf<capabilities::sql::SqlCap>>(linker, |t| &mut t.caps().sql)?;
    redis::add_to_linker::<T, HasSelf<capabilities::redis::RedisCap>>(linker, |t| {
        &mut t.caps().redis
    })?;
    Ok(())
}

// ---- host imports: 0.1 spells every host error as a string --------------

fn spell(e: c::HostError) -> String {
    match e {
        c::HostError::Denied(m) => format!("denied: {m}"),
        c::HostError::Failed(m) | c::HostError::TimedOut(m) | c::HostError::Limit(m) => m,
    }
}

impl log::Host for capabilities::log::LogCap {
    fn log(&mut self, level: log::Level, message: String, fields: Vec<(String, String)>) {
        use capabilities::log::Level as L;
        let level = match level {
            log::Level::Trace => L::Trace,
            log::Level::Debug => L::Debug,
            log::Level::Info => L::Info,
            log::Level::Warn => L::Warn,
            log::Level::Error => L::Error,
        };
        capabilities::log::LogCap::log(self, level, &message, &fields);
    }
}

impl clock::Host for capabilities::clock::ClockCap {
    fn now_ms(&mut self) -> u64 {
        capabilities::clock::ClockCap::now_ms(self)
    }
}

impl state::Host for capabilities::state::StateCap {
    fn get(&mut self, key: String) -> Result<Option<Vec<u8>>, String> {
        capabilities::state::StateCap::get(self, &key).map_err(spell)
    }
    fn set(&mut self, key: String, value: Vec<u8>) -> Result<(), String> {
        capabilities::state::StateCap::set(self, &key, &value).map_err(spell)
    }
    fn delete(&mut self, key: String) -> Result<(), String> {
        capabilities::state::StateCap::delete(self, &key).map_err(spell)
    }
    fn compare_and_swap(
        &mut self,
        key: String,
        expected: Option<Vec<u8>>,
        value: Vec<u8>,
    ) -> Result<bool, String> {
        capabilities::state::StateCap::compare_and_swap(self, &key, expected.as_deref(), &value)
            .map_err(spell)
    }
}

impl fs::Host for capabilities::fs::FsCap {
    fn disk_usage(&mut self, path: String) -> Result<fs::Usage, String> {
        let u = capabilities::fs::FsCap::disk_usage(self, &path).map_err(spell)?;
        Ok(fs::Usage {
            total_bytes: u.total_bytes,
            free_bytes: u.free_bytes,
            available_bytes: u.available_bytes,
            total_inodes: u.total_inodes,
            free_inodes: u.free_inodes,
        })
    }
}

impl exec::Host for capabilities::exec::ExecCap {
    async fn run(&mut self, name: String) -> Result<exec::CommandOutput, String> {
        let o = capabilities::exec::ExecCap::run(self, &name)
            .await
            .map_err(spell)?;
        Ok(exec::CommandOutput {
            exit_code: o.exit_code,
            stdout: o.stdout,
            stderr: o.stderr,
            timed_out: o.timed_out,
            truncated: o.truncated,
            duration_ms: o.duration_ms,
        })
    }
}

fn value_in(v: sql::Value) -> capabilities::sql::Value {
    use capabilities::sql::Value as V;
    match v {
        sql::Value::Null => V::Null,
        sql::Value::Boolean(b) => V::Boolean(b),
        sql::Value::Int(i) => V::Int(i),
        sql::Value::Float(f) => V::Float(f),
        sql::Value::Text(t) => V::Text(t),
    }
}

fn value_out(v: capabilities::sql::Value) -> sql::Value {
    use capabilities::sql::Value as V;
    match v {
        V::Null => sql::Value::Null,
        V::Boolean(b) => sql::Value::Boolean(b),
        V::Int(i) => sql::Value::Int(i),
        V::Float(f) => sql::Value::Float(f),
        V::Text(t) => sql::Value::Text(t),
    }
}

fn query_options(o: sql::Options) -> capabilities::sql::QueryOptions {
    capabilities::sql::QueryOptions {
        fresh: o.fresh,
        timeout_ms: o.timeout_ms,
        read_only: false,
    }
}

impl sql::Host for capabilities::sql::SqlCap {
    async fn query(
        &mut self,
        connection: String,
        statement: String,
        params: Vec<sql::Value>,
        options: sql::Options,
    ) -> Result<sql::Rows, String> {
        let params: Vec<_> = params.into_iter().map(value_in).collect();
        let rows = capabilities::sql::SqlCap::query(
            self,
            &connection,
            &statement,
            &params,
            query_options(options),
        )
        .await
        .map_err(spell)?;
        Ok(sql::Rows {
            columns: rows.columns,
            rows: rows
                .rows
                .into_iter()
                .map(|r| r.into_iter().map(value_out).collect())
                .collect(),
        })
    }

    async fn execute(
        &mut self,
        connection: String,
        statement: String,
        params: Vec<sql::Value>,
        options: sql::Options,
    ) -> Result<u64, String> {
        let params: Vec<_> = params.into_iter().map(value_in).collect();
        capabilities::sql::SqlCap::execute(
            self,
            &connection,
            &statement,
            &params,
            query_options(options),
        )
        .await
        .map_err(spell)
    }
}

impl redis::Host for capabilities::redis::RedisCap {
    async fn command(
        &mut self,
        connection: String,
        args: Vec<Vec<u8>>,
    ) -> Result<redis::Reply, String> {
        use capabilities::redis::Reply as R;
        Ok(
            match capabilities::redis::RedisCap::command(self, &connection, &args)
                .await
                .map_err(spell)?
            {
                R::Nil => redis::Reply::Nil,
                R::Int(i) => redis::Reply::Int(i),
                R::Data(d) => redis::Reply::Data(d),
                R::Array(a) => redis::Reply::Array(a),
            },
        )
    }

    async fn scan(
        &mut self,
        connection: String,
        cursor: u64,
        pattern: String,
        count: u32,
    ) -> Result<(u64, Vec<String>), String> {
        capabilities::redis::RedisCap::scan(self, &connection, cursor, &pattern, count)
            .await
            .map_err(spell)
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
                    needs: c::Needs {
                        dirs: r
                            .needs
                            .dirs
                            .into_iter()
                            .map(|d| c::DirNeed {
                                path: d.path,
                                write: d.write,
                            })
                            .collect(),
                        addresses: r.needs.addresses,
                        urls: r.needs.urls,
                        connections: r.needs.connections,
                        commands: r.needs.commands,
                        state: r.needs.state,
                        ..Default::default()
                    },
                })
                .collect(),
        }
    }
}
