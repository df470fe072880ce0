//! `mend:plugin/sql`: named PostgreSQL connections.
//!
//! The operator defines `[connections.NAME] kind = "postgres"`; the
//! credentials never enter the sandbox, a plugin only names the
//! connection. Every statement is bounded by the connection's timeout (the
//! server-side query is cancelled when it runs over) and by a result-size
//! limit. A call may ask for a fresh connection, so that a detector really
//! tests connectivity instead of reusing a socket that happens to be open.

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use serde::Deserialize;
use tokio_postgres::types::{IsNull, ToSql, Type, to_sql_checked};
use tokio_postgres::{Client, NoTls, Row, Statement};

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
/// Bytes of text a query may return.
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

/// A named connection: its settings and the host's reusable client.
pub struct PgConnection {
    pub name: String,
    config: tokio_postgres::Config,
    timeout: Duration,
    read_only: bool,
    shared: tokio::sync::Mutex<Option<Client>>,
}

impl std::fmt::Debug for PgConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the config: it holds the password.
        f.debug_struct("PgConnection")
            .field("name", &self.name)
            .finish_non_exhaustive()
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

    async fn connect(&self) -> Result<Client, String> {
        let (client, connection) = self
            .config
            .connect(NoTls)
            .await
            .map_err(|e| format!("connecting: {}", describe(&e)))?;
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!("postgres connection closed: {e}");
            }
        });
        Ok(client)
    }

    /// Runs `work` on a fresh or the shared client, within `timeout` in
    /// all: connecting gets what it needs, the statement the rest (and is
    /// cancelled on the server when that runs out).
    async fn with_client<T>(
        &self,
        fresh: bool,
        read_only: bool,
        timeout: Duration,
        work: impl AsyncFnOnce(&Client) -> Result<T, String>,
    ) -> Result<T, String> {
        let deadline = tokio::time::Instant::now() + timeout;
        let timed_out = || format!("timed out after {}", humantime::format_duration(timeout));
        let connect = async || {
            tokio::time::timeout_at(deadline, self.connect())
                .await
                .unwrap_or_else(|_| Err(timed_out()))
        };
        let result = if fresh {
            match connect().await {
                Ok(client) => {
                    self.run_on(&client, read_only, deadline, timeout, work)
                        .await
                        .0
                }
                Err(e) => Err(e),
            }
        } else {
            let mut shared = match tokio::time::timeout_at(deadline, self.shared.lock()).await {
                Ok(guard) => guard,
                Err(_) => return Err(format!("connection `{}`: {}", self.name, timed_out())),
            };
            if shared.as_ref().is_none_or(|c| c.is_closed()) {
                *shared = None;
                match connect().await {
                    Ok(c) => *shared = Some(c),
                    Err(e) => return Err(format!("connection `{}`: {e}", self.name)),
                }
            }
            let client = shared.as_ref().expect("just connected");
            let (result, clean) = self
                .run_on(client, read_only, deadline, timeout, work)
                .await;
            if !clean || client.is_closed() {
                // Never hand a session in an unknown state to the next call.
                *shared = None;
            }
            result
        };
        result.map_err(|e| format!("connection `{}`: {e}", self.name))
    }

    /// One statement on `client`: inside a read-only transaction when the
    /// connection is read-only, and with the session reset afterwards, so
    /// nothing one call does (SET, BEGIN, temp tables, advisory locks)
    /// outlives it. Returns the result and whether the session is clean.
    async fn run_on<T>(
        &self,
        client: &Client,
        read_only: bool,
        deadline: tokio::time::Instant,
        timeout: Duration,
        work: impl AsyncFnOnce(&Client) -> Result<T, String>,
    ) -> (Result<T, String>, bool) {
        let within = async |sql: &str| {
            matches!(
                tokio::time::timeout_at(deadline, client.batch_execute(sql)).await,
                Ok(Ok(()))
            )
        };
        if (self.read_only || read_only) && !within("BEGIN READ ONLY").await {
            return (Err("cannot start a read-only transaction".into()), false);
        }
        let result = run_cancellable(client, deadline, timeout, work).await;
        if result.is_err() {
            return (result, false);
        }
        let clean = within("ROLLBACK").await && within(RESET_SESSION).await;
        (result, clean)
    }

    pub async fn query(
        &self,
        statement: &str,
        params: &[Value],
        options: &QueryOptions,
    ) -> Result<Rows, String> {
        let timeout = self.timeout_for(options);
        self.with_client(options.fresh, options.read_only, timeout, async |client| {
            let stmt = client.prepare(statement).await.map_err(|e| describe(&e))?;
            let params = bind(&stmt, params)?;
            let stream = client
                .query_raw(&stmt, refs(&params))
                .await
                .map_err(|e| describe(&e))?;
            // Count while rows arrive: a huge result is stopped at the
            // limit, never collected.
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
    ) -> Result<u64, String> {
        let timeout = self.timeout_for(options);
        self.with_client(options.fresh, options.read_only, timeout, async |client| {
            let stmt = client.prepare(statement).await.map_err(|e| describe(&e))?;
            let params = bind(&stmt, params)?;
            client
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

/// Undoes what a statement may leave in a session (everything `DISCARD
/// ALL` does but deallocating prepared statements, which the client
/// caches).
const RESET_SESSION: &str = "SET SESSION AUTHORIZATION DEFAULT; RESET ALL; CLOSE ALL; \
    UNLISTEN *; SELECT pg_advisory_unlock_all(); DISCARD PLANS; DISCARD TEMP; DISCARD SEQUENCES";

/// Runs `work`; if it fails, the time runs out, or the call is dropped
/// (the plugin's own deadline), asks the server to cancel the statement
/// (a result over the limits is abandoned mid-stream).
async fn run_cancellable<T>(
    client: &Client,
    deadline: tokio::time::Instant,
    timeout: Duration,
    work: impl AsyncFnOnce(&Client) -> Result<T, String>,
) -> Result<T, String> {
    let mut guard = CancelOnDrop(Some(client.cancel_token()));
    let result = tokio::time::timeout_at(deadline, work(client)).await;
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
struct CancelOnDrop(Option<tokio_postgres::CancelToken>);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        if let Some(token) = self.0.take() {
            tokio::spawn(async move {
                let _ = token.cancel_query(NoTls).await;
            });
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

/// Rows converted for the plugin as they arrive, within the limits.
struct RowsBuilder<'a> {
    stmt: &'a Statement,
    bytes: usize,
    rows: Vec<Vec<Value>>,
}

impl<'a> RowsBuilder<'a> {
    fn new(stmt: &'a Statement) -> Self {
        RowsBuilder {
            stmt,
            bytes: 0,
            rows: Vec::new(),
        }
    }

    fn push(&mut self, row: &Row) -> Result<(), String> {
        if self.rows.len() >= MAX_ROWS {
            return Err(format!("more than the {MAX_ROWS}-row limit (add a LIMIT)"));
        }
        let mut values = Vec::with_capacity(self.stmt.columns().len());
        for (i, col) in self.stmt.columns().iter().enumerate() {
            let v = value(row, i, col)?;
            if let Some(Value::Text(t)) = &v {
                self.bytes += t.len();
            }
            values.push(v.unwrap_or(Value::Null));
        }
        if self.bytes > MAX_BYTES {
            return Err(format!("the result is larger than {MAX_BYTES} bytes"));
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
            .map_err(classify)
    }

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
        conn.execute(statement, params, &options)
            .await
            .map_err(classify)
    }
}

/// The kind of a failure, from the connection's own messages.
fn classify(m: String) -> HostError {
    if m.contains("timed out") || m.contains("statement cancelled after") {
        HostError::TimedOut(m)
    } else if m.contains("-row limit") || m.contains("result is larger than") {
        HostError::Limit(m)
    } else if m.contains("read-only transaction") {
        HostError::Denied(m)
    } else {
        HostError::Failed(m)
    }
}
