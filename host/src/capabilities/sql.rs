//! `mend:plugin/sql`: named PostgreSQL connections.
//!
//! The operator defines `[connections.NAME] kind = "postgres"`; the
//! credentials never enter the sandbox, a plugin only names the
//! connection. Every statement is bounded by the connection's timeout (the
//! server-side query is cancelled when it runs over) and by a result-size
//! limit. A call may ask for a fresh connection, so that a detector really
//! tests connectivity instead of reusing a socket that happens to be open.

mod roles;
mod session;
mod wire;

use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use futures_util::StreamExt;
use serde::Deserialize;
use tokio_postgres::types::{IsNull, ToSql, Type, to_sql_checked};
use tokio_postgres::{Row, Statement};

pub use self::roles::{RoleRisk, RoleRisks, SERVER_ACCESS_ROLES};
use self::session::Session;
use crate::contract::HostError;
use crate::values::Dur;

/// A value crossing the boundary: a parameter or a column.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Null,
    Boolean(bool),
    Int(i64),
    Float(f64),
    Text(String),
}

/// What a query returned.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Rows {
    pub columns: Vec<String>,
    pub rows: Vec<Vec<Value>>,
}

/// How to run one statement.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QueryOptions {
    /// A new connection rather than the host's shared one.
    pub fresh: bool,
    /// At most (and by default) the connection's timeout.
    pub timeout_ms: Option<u32>,
    /// Inside a read-only transaction whatever the connection says (a
    /// dry run).
    pub read_only: bool,
}

/// Rows a query may return.
pub const MAX_ROWS: usize = 10_000;
/// Bytes the rows of one statement may take as the server sends them (the
/// values, plus 4 bytes a value and 2 a row), and bytes any other single
/// message from the server may take. Counted from each message's header
/// as it arrives, so the host never holds much more.
pub const MAX_BYTES: usize = 4 * 1024 * 1024;

/// `[connections.NAME]` with `kind = "postgres"`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PostgresDef {
    /// `host=... user=... dbname=...` or a `postgresql://` URL.
    pub url: String,
    /// Bounds connecting and each statement.
    #[serde(default = "default_timeout")]
    pub timeout: Dur,
    /// Make every transaction read-only (for detectors).
    #[serde(default)]
    pub read_only: bool,
}

fn default_timeout() -> Dur {
    Dur(Duration::from_secs(5))
}

/// A named connection: its settings and the host's reusable session.
pub struct PgConnection {
    pub name: String,
    config: tokio_postgres::Config,
    timeout: Duration,
    read_only: bool,
    shared: tokio::sync::Mutex<Option<Session>>,
}

impl std::fmt::Debug for PgConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the config: it holds the password.
        f.debug_struct("PgConnection")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

/// Why a call failed: refused by the host, over a limit, out of time, or
/// failed on the way.
enum Failure {
    Denied(String),
    Limit(String),
    TimedOut(String),
    Failed(String),
}

impl From<String> for Failure {
    fn from(m: String) -> Self {
        if m.contains("-row limit") {
            Failure::Limit(m)
        } else {
            Failure::Failed(m)
        }
    }
}

impl PgConnection {
    pub(super) fn new(name: &str, def: &PostgresDef) -> anyhow::Result<PgConnection> {
        let mut config = tokio_postgres::Config::from_str(&def.url).map_err(|e| {
            anyhow::anyhow!("connection `{name}`: `url` is not a PostgreSQL connection string: {e}")
        })?;
        if def.timeout.0.is_zero() {
            anyhow::bail!("connection `{name}`: `timeout` must be more than 0s");
        }
        config.connect_timeout(def.timeout.0);
        if config.get_application_name().is_none() {
            config.application_name("mend");
        }
        if config.get_ssl_mode() == tokio_postgres::config::SslMode::Require {
            anyhow::bail!(
                "connection `{name}`: sslmode=require is not supported yet (mend connects without TLS); use a local socket, a loopback address or a tunnel"
            );
        }
        if def.read_only {
            // A startup option, so it is also the session's reset value.
            let opts = config.get_options().unwrap_or_default().to_string();
            config.options(format!("{opts} -c default_transaction_read_only=on").trim());
        }
        Ok(PgConnection {
            name: name.to_string(),
            config,
            timeout: def.timeout.0,
            read_only: def.read_only,
            shared: tokio::sync::Mutex::new(None),
        })
    }

    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Whether every statement runs in a read-only transaction.
    pub fn is_read_only(&self) -> bool {
        self.read_only
    }

    /// Connects (within the connection's timeout) and reports what the
    /// login role can do past a read-only transaction: superuser, or
    /// membership in one of [`SERVER_ACCESS_ROLES`]. For config checks:
    /// on a `read_only` connection any risk means the promise cannot be
    /// kept ([`RoleRisks::refusal`] says so), and every statement on it
    /// is refused. An `Err` means the server could not be asked (it names
    /// the connection).
    pub async fn role_risks(&self) -> Result<RoleRisks, String> {
        let ask = async {
            let session = self.open().await?;
            RoleRisks::query(&session.client)
                .await
                .map_err(|e| format!("asking for the role's attributes: {}", describe(&e)))
        };
        tokio::time::timeout(self.timeout, ask)
            .await
            .unwrap_or_else(|_| {
                Err(format!(
                    "timed out after {}",
                    humantime::format_duration(self.timeout)
                ))
            })
            .map_err(|e| format!("connection `{}`: {e}", self.name))
    }

    async fn open(&self) -> Result<Session, String> {
        Session::connect(&self.config, MAX_BYTES as u64)
            .await
            .map_err(|e| format!("connecting: {e}"))
    }

    /// A new session, refused if it is read-only and its role can get
    /// past that.
    async fn connect(&self) -> Result<Session, Failure> {
        let session = self.open().await?;
        if self.read_only {
            let risks = RoleRisks::query(&session.client).await.map_err(|e| {
                format!("checking the role of a read-only session: {}", describe(&e))
            })?;
            if let Some(why) = risks.explain() {
                return Err(Failure::Denied(why));
            }
        }
        Ok(session)
    }

    /// Runs `work` on a fresh or the shared session, within `timeout` in
    /// all: connecting gets what it needs, the statement the rest (and is
    /// cancelled on the server when that runs out).
    async fn with_session<T>(
        &self,
        fresh: bool,
        read_only: bool,
        timeout: Duration,
        work: impl AsyncFnOnce(&Session) -> Result<T, String>,
    ) -> Result<T, HostError> {
        let deadline = tokio::time::Instant::now() + timeout;
        let timed_out = || format!("timed out after {}", humantime::format_duration(timeout));
        let connect = async || {
            tokio::time::timeout_at(deadline, self.connect())
                .await
                .unwrap_or_else(|_| Err(Failure::TimedOut(timed_out())))
        };
        let result = if fresh {
            match connect().await {
                Ok(session) => {
                    self.run_on(&session, read_only, deadline, timeout, work)
                        .await
                        .0
                }
                Err(e) => Err(e),
            }
        } else {
            match tokio::time::timeout_at(deadline, self.shared.lock()).await {
                Err(_) => Err(Failure::TimedOut(timed_out())),
                Ok(mut shared) => {
                    let live = match shared.take() {
                        Some(s) if !s.client.is_closed() => Ok(s),
                        _ => connect().await,
                    };
                    match live {
                        Err(e) => Err(e),
                        Ok(session) => {
                            let (result, clean) = self
                                .run_on(&session, read_only, deadline, timeout, work)
                                .await;
                            // Never hand a session in an unknown state to
                            // the next call.
                            if clean && !session.client.is_closed() {
                                *shared = Some(session);
                            }
                            result
                        }
                    }
                }
            }
        };
        let at = |m: String| format!("connection `{}`: {m}", self.name);
        result.map_err(|e| match e {
            Failure::Denied(m) => HostError::Denied(at(m)),
            Failure::Limit(m) => HostError::Limit(at(m)),
            Failure::TimedOut(m) => HostError::TimedOut(at(m)),
            Failure::Failed(m) if m.contains("statement cancelled after") => {
                HostError::TimedOut(at(m))
            }
            Failure::Failed(m) => HostError::Failed(at(m)),
        })
    }

    /// One statement on `session`: inside a read-only transaction when
    /// the connection is read-only, and with the session reset afterwards
    /// (`DISCARD ALL`: settings, prepared statements, cursors, temp
    /// tables, advisory locks, `LISTEN`), so nothing one call does
    /// outlives it. Returns the result and whether the session is clean.
    async fn run_on<T>(
        &self,
        session: &Session,
        read_only: bool,
        deadline: tokio::time::Instant,
        timeout: Duration,
        work: impl AsyncFnOnce(&Session) -> Result<T, String>,
    ) -> (Result<T, Failure>, bool) {
        let client = &session.client;
        let within = async |sql: &str| {
            matches!(
                tokio::time::timeout_at(deadline, client.batch_execute(sql)).await,
                Ok(Ok(()))
            )
        };
        if (self.read_only || read_only) && !within("BEGIN READ ONLY").await {
            let e = session
                .overflow()
                .unwrap_or_else(|| Failure::Failed("cannot start a read-only transaction".into()));
            return (Err(e), false);
        }
        let result = run_cancellable(session, deadline, timeout, work).await;
        if let Err(e) = result {
            return (Err(session.overflow().unwrap_or(Failure::from(e))), false);
        }
        // Two queries, sent together: DISCARD ALL cannot run inside the
        // transaction a plugin may have left open.
        let (rolled_back, discarded) = tokio::join!(within("ROLLBACK"), within("DISCARD ALL"));
        // DISCARD ALL also dropped the statements tokio-postgres caches
        // for looking up non-built-in types: a session that cached one is
        // not reused.
        let clean = rolled_back && discarded && !session.cached_types();
        (result.map_err(Failure::from), clean)
    }

    pub async fn query(
        &self,
        statement: &str,
        params: &[Value],
        options: &QueryOptions,
    ) -> Result<Rows, HostError> {
        let timeout = self.timeout_for(options);
        self.with_session(options.fresh, options.read_only, timeout, async |session| {
            let client = &session.client;
            let stmt = session.prepare(statement).await?;
            let params = bind(&stmt, params)?;
            let stream = client
                .query_raw(&stmt, refs(&params))
                .await
                .map_err(|e| describe(&e))?;
            // Convert rows while they arrive: a result over the row limit
            // is stopped there (the byte limit is kept by the stream).
            let mut rows = RowsBuilder::new(&stmt);
            futures_util::pin_mut!(stream);
            while let Some(row) = stream.next().await {
                rows.push(&row.map_err(|e| describe(&e))?)?;
            }
            Ok(rows.finish())
        })
        .await
    }

    pub async fn execute(
        &self,
        statement: &str,
        params: &[Value],
        options: &QueryOptions,
    ) -> Result<u64, HostError> {
        let timeout = self.timeout_for(options);
        self.with_session(options.fresh, options.read_only, timeout, async |session| {
            let stmt = session.prepare(statement).await?;
            let params = bind(&stmt, params)?;
            session
                .client
                .execute(&stmt, &refs(&params))
                .await
                .map_err(|e| describe(&e))
        })
        .await
    }

    fn timeout_for(&self, options: &QueryOptions) -> Duration {
        options
            .timeout_ms
            .map(|ms| Duration::from_millis(ms.into()).min(self.timeout))
            .unwrap_or(self.timeout)
    }
}

impl Session {
    /// Prepares `statement`, noting whether tokio-postgres had to look up
    /// (and so cached a statement for) a type that is not built in.
    async fn prepare(&self, statement: &str) -> Result<Statement, String> {
        let stmt = self
            .client
            .prepare(statement)
            .await
            .map_err(|e| describe(&e))?;
        let custom = |t: &Type| Type::from_oid(t.oid()).is_none();
        if stmt.params().iter().any(custom) || stmt.columns().iter().any(|c| custom(c.type_())) {
            self.custom_types.store(true, Ordering::Relaxed);
        }
        Ok(stmt)
    }

    fn cached_types(&self) -> bool {
        self.custom_types.load(Ordering::Relaxed)
    }

    /// The refusal, when the stream stopped a reply over the limits.
    fn overflow(&self) -> Option<Failure> {
        self.tripwire
            .tripped()
            .map(|o| Failure::Limit(o.to_string()))
    }
}

/// Runs `work`; if it fails, the time runs out, or the call is dropped
/// (the plugin's own deadline), asks the server to cancel the statement
/// (a result over the limits is abandoned mid-stream).
async fn run_cancellable<T>(
    session: &Session,
    deadline: tokio::time::Instant,
    timeout: Duration,
    work: impl AsyncFnOnce(&Session) -> Result<T, String>,
) -> Result<T, String> {
    let mut guard = CancelOnDrop(Some(session.canceller()));
    let result = tokio::time::timeout_at(deadline, work(session)).await;
    match result {
        Ok(Ok(v)) => {
            guard.0 = None;
            Ok(v)
        }
        Ok(Err(e)) => Err(e),
        Err(_) => Err(format!(
            "statement cancelled after {}",
            humantime::format_duration(timeout)
        )),
    }
}

/// Cancels the running statement unless disarmed.
struct CancelOnDrop(Option<session::Canceller>);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        if let Some(c) = self.0.take() {
            tokio::spawn(c.cancel());
        }
    }
}

/// The server's message when there is one ("db error" alone says nothing).
fn describe(e: &tokio_postgres::Error) -> String {
    if let Some(db) = e.as_db_error() {
        return format!("{} ({})", db.message(), db.code().code());
    }
    let mut s = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(inner) = source {
        s = format!("{s}: {inner}");
        source = inner.source();
    }
    s
}

type Param = Box<dyn ToSql + Sync + Send>;

/// NULL for a placeholder of any type.
#[derive(Debug)]
struct Null;

impl ToSql for Null {
    fn to_sql(
        &self,
        _: &Type,
        _: &mut bytes::BytesMut,
    ) -> Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        Ok(IsNull::Yes)
    }
    fn accepts(_: &Type) -> bool {
        true
    }
    to_sql_checked!();
}

fn is_text(t: &Type) -> bool {
    [
        Type::TEXT,
        Type::VARCHAR,
        Type::NAME,
        Type::BPCHAR,
        Type::UNKNOWN,
    ]
    .contains(t)
}

/// Converts each value to the type the server inferred for its `$n`.
fn bind(stmt: &Statement, values: &[Value]) -> Result<Vec<Param>, String> {
    let types = stmt.params();
    if types.len() != values.len() {
        return Err(format!(
            "the statement has {} parameters, {} given",
            types.len(),
            values.len()
        ));
    }
    types
        .iter()
        .zip(values)
        .enumerate()
        .map(|(i, (t, v))| {
            let n = i + 1;
            let mismatch = || {
                format!(
                    "parameter ${n} has type {t}; {v:?} does not fit (cast it in SQL, e.g. `${n}::text`)"
                )
            };
            let p: Param = match v {
                Value::Null => Box::new(Null),
                Value::Boolean(b) if *t == Type::BOOL => Box::new(*b),
                Value::Int(i) => match *t {
                    Type::INT2 => Box::new(i16::try_from(*i).map_err(|_| mismatch())?),
                    Type::INT4 => Box::new(i32::try_from(*i).map_err(|_| mismatch())?),
                    Type::INT8 => Box::new(*i),
                    Type::OID => Box::new(u32::try_from(*i).map_err(|_| mismatch())?),
                    Type::FLOAT4 => Box::new(*i as f32),
                    Type::FLOAT8 => Box::new(*i as f64),
                    ref t if is_text(t) => Box::new(i.to_string()),
                    _ => return Err(mismatch()),
                },
                Value::Float(f) => match *t {
                    Type::FLOAT4 => Box::new(*f as f32),
                    Type::FLOAT8 => Box::new(*f),
                    ref t if is_text(t) => Box::new(f.to_string()),
                    _ => return Err(mismatch()),
                },
                Value::Text(s) if is_text(t) => Box::new(s.clone()),
                _ => return Err(mismatch()),
            };
            Ok(p)
        })
        .collect()
}

fn refs(params: &[Param]) -> Vec<&(dyn ToSql + Sync)> {
    params
        .iter()
        .map(|p| p.as_ref() as &(dyn ToSql + Sync))
        .collect()
}

/// Rows converted for the plugin as they arrive, within the row limit.
struct RowsBuilder<'a> {
    stmt: &'a Statement,
    rows: Vec<Vec<Value>>,
}

impl<'a> RowsBuilder<'a> {
    fn new(stmt: &'a Statement) -> Self {
        RowsBuilder {
            stmt,
            rows: Vec::new(),
        }
    }

    fn push(&mut self, row: &Row) -> Result<(), String> {
        if self.rows.len() >= MAX_ROWS {
            return Err(format!("more than the {MAX_ROWS}-row limit (add a LIMIT)"));
        }
        let mut values = Vec::with_capacity(self.stmt.columns().len());
        for (i, col) in self.stmt.columns().iter().enumerate() {
            values.push(value(row, i, col)?.unwrap_or(Value::Null));
        }
        self.rows.push(values);
        Ok(())
    }

    fn finish(self) -> Rows {
        Rows {
            columns: self
                .stmt
                .columns()
                .iter()
                .map(|c| c.name().to_string())
                .collect(),
            rows: self.rows,
        }
    }
}

/// Column `i` of `row` as a plugin value.
fn value(row: &Row, i: usize, col: &tokio_postgres::Column) -> Result<Option<Value>, String> {
    let bad = |e: tokio_postgres::Error| format!("column `{}`: {}", col.name(), describe(&e));
    Ok(match *col.type_() {
        Type::VOID => None,
        Type::BOOL => row
            .try_get::<_, Option<bool>>(i)
            .map_err(bad)?
            .map(Value::Boolean),
        Type::INT2 => row
            .try_get::<_, Option<i16>>(i)
            .map_err(bad)?
            .map(|v| Value::Int(v.into())),
        Type::INT4 => row
            .try_get::<_, Option<i32>>(i)
            .map_err(bad)?
            .map(|v| Value::Int(v.into())),
        Type::INT8 => row
            .try_get::<_, Option<i64>>(i)
            .map_err(bad)?
            .map(Value::Int),
        Type::OID => row
            .try_get::<_, Option<u32>>(i)
            .map_err(bad)?
            .map(|v| Value::Int(v.into())),
        Type::FLOAT4 => row
            .try_get::<_, Option<f32>>(i)
            .map_err(bad)?
            .map(|v| Value::Float(v.into())),
        Type::FLOAT8 => row
            .try_get::<_, Option<f64>>(i)
            .map_err(bad)?
            .map(Value::Float),
        Type::CHAR => row
            .try_get::<_, Option<i8>>(i)
            .map_err(bad)?
            .map(|v| Value::Text(((v as u8) as char).to_string())),
        ref t if is_text(t) => row
            .try_get::<_, Option<String>>(i)
            .map_err(bad)?
            .map(Value::Text),
        ref other => {
            return Err(format!(
                "column `{}` has type {other}, which plugins cannot read: cast it in SQL (e.g. `{}::text`)",
                col.name(),
                col.name()
            ));
        }
    })
}

/// Per-call state: the PostgreSQL connections granted to this call.
pub struct SqlCap {
    pub(crate) connections: Vec<Arc<PgConnection>>,
    /// A dry run: read-only transactions only, no `execute`.
    pub(crate) dry_run: bool,
}

impl SqlCap {
    fn get(&self, name: &str) -> Result<Arc<PgConnection>, HostError> {
        self.connections
            .iter()
            .find(|c| c.name == name)
            .cloned()
            .ok_or_else(|| {
                HostError::denied(format!(
                    "PostgreSQL connection `{name}` is not granted to this plugin"
                ))
            })
    }

    /// Runs a statement that returns rows (read-only in a dry run).
    pub async fn query(
        &mut self,
        connection: &str,
        statement: &str,
        params: &[Value],
        mut options: QueryOptions,
    ) -> Result<Rows, HostError> {
        options.read_only |= self.dry_run;
        self.get(connection)?
            .query(statement, params, &options)
            .await
    }

    /// Runs a statement (refused in a dry run).
    pub async fn execute(
        &mut self,
        connection: &str,
        statement: &str,
        params: &[Value],
        options: QueryOptions,
    ) -> Result<u64, HostError> {
        let conn = self.get(connection)?;
        if self.dry_run {
            return Err(HostError::denied(format!(
                "dry run: connection `{connection}`: execute was not run (query runs read-only)"
            )));
        }
        conn.execute(statement, params, &options).await
    }
}
