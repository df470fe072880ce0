//! `pg-reconnect`: notices when an application can no longer get at its
//! PostgreSQL database, and clears what usually wedges it: sessions left
//! idle inside a transaction by a leaking connection pool, which hold locks
//! and connection slots until the server runs out of both.
//!
//! The detector connects afresh (`SELECT 1` on a new connection, so a dead
//! server or a full `max_connections` really shows), then measures
//! connection saturation and idle-in-transaction sessions.
//!
//! The action terminates (`pg_terminate_backend`) sessions that have been
//! idle (in a transaction) longer than `older_than`, and only those of the
//! configured `application_name` *and* `user`: never another role's, never
//! its own backend, never a superuser's other than the configured user's.
//! The conditions are checked again in the very statement that terminates,
//! so a session that woke up in between is spared. It can then ask the
//! application to reset its pool (an HTTP POST). In dry-run it lists the
//! sessions (pid, application, user, state, age) it would terminate.
//!
//! A server that answers "too many clients" (SQLSTATE 53300) is up and
//! full, not down: that is `db.connections.exhausted`, so a "database
//! down" policy does not restart a healthy server. At 100% the action can
//! still act through `reserved_connection`: a connection whose role may
//! use the slots PostgreSQL keeps back (`superuser_reserved_connections`
//! for superusers; from PostgreSQL 16, `reserved_connections` for roles
//! granted `pg_use_reserved_connections`).
//!
//! Detector codes: `db.unreachable` (fail), `db.connections.exhausted`
//! (fail), `db.connections.high` (warn/fail), `db.idle_in_transaction`
//! (fail), `db.ok`.

use std::time::Duration;

use mend_sdk::host::sql::{self, Options, Rows, Value};
use mend_sdk::{Action, Context, Detector, Error, Finding, Needs, Outcome, Plugin, Result};
use serde::Deserialize;

/// The detector's config.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DetectConfig {
    /// The named connection (under `[connections]`) to test.
    pub connection: String,
    /// Time allowed to connect and answer `SELECT 1`; at most (and by
    /// default) the connection's `timeout`.
    #[serde(default)]
    pub timeout: Option<mend_sdk::Duration>,
    /// Client connections as a percent of `max_connections`.
    #[serde(default)]
    pub warn_connections_percent: Option<f64>,
    #[serde(default)]
    pub fail_connections_percent: Option<f64>,
    /// Count sessions idle in a transaction for longer than this.
    #[serde(default)]
    pub idle_in_transaction_after: Option<mend_sdk::Duration>,
    /// Fail when more than this many such sessions are found.
    #[serde(default)]
    pub idle_in_transaction_max: u32,
    /// Only count sessions with one of these `application_name`s...
    #[serde(default)]
    pub application_names: Vec<String>,
    /// ...and of this user.
    #[serde(default)]
    pub user: Option<String>,
    /// A connection using reserved slots, to measure a full server.
    #[serde(default)]
    pub reserved_connection: Option<String>,
}

/// The action's config.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TerminateConfig {
    pub connection: String,
    /// Only sessions with exactly this `application_name`...
    pub application_name: String,
    /// ...and of exactly this user are ever terminated.
    pub user: String,
    /// Idle (in that state) for at least this long.
    pub older_than: mend_sdk::Duration,
    /// The session states that may be terminated.
    #[serde(default = "default_states")]
    pub states: Vec<String>,
    /// At most this many sessions per call.
    #[serde(default = "default_max_sessions")]
    pub max_sessions: u32,
    /// How long to wait for each terminated backend to exit.
    #[serde(default = "default_terminate_wait")]
    pub terminate_wait: mend_sdk::Duration,
    /// POSTed to after terminating, for the application to reset its pool.
    #[serde(default)]
    pub pool_reset_url: Option<String>,
    #[serde(default = "default_pool_reset_timeout")]
    pub pool_reset_timeout: mend_sdk::Duration,
    /// Act through this connection instead (a role that may use reserved
    /// slots), so the action works when every ordinary slot is taken.
    #[serde(default)]
    pub reserved_connection: Option<String>,
}

impl TerminateConfig {
    /// The connection the action's statements go through.
    fn via(&self) -> &str {
        self.reserved_connection
            .as_deref()
            .unwrap_or(&self.connection)
    }
}

/// SQLSTATE `too_many_connections`; the host puts the code in brackets
/// after the server's message.
const TOO_MANY_CONNECTIONS: &str = "(53300)";

/// States a session may be terminated in (`pg_stat_activity.state`).
pub const STATES: &[&str] = &[
    "idle in transaction",
    "idle in transaction (aborted)",
    "idle",
];

fn default_states() -> Vec<String> {
    vec![
        "idle in transaction".into(),
        "idle in transaction (aborted)".into(),
    ]
}

fn default_max_sessions() -> u32 {
    100
}

fn default_terminate_wait() -> mend_sdk::Duration {
    mend_sdk::Duration(Duration::from_millis(500))
}

fn default_pool_reset_timeout() -> mend_sdk::Duration {
    mend_sdk::Duration(Duration::from_secs(5))
}

fn percent(name: &str, v: Option<f64>) -> Result<Option<f64>> {
    match v {
        Some(p) if !(0.0..=100.0).contains(&p) => Err(Error::bad_config(format!(
            "`{name}` must be between 0 and 100"
        ))),
        other => Ok(other),
    }
}

fn not_empty(name: &str, v: &str) -> Result<()> {
    if v.trim().is_empty() {
        Err(Error::bad_config(format!("`{name}` is empty")))
    } else {
        Ok(())
    }
}

/// `$first, $first+1, ...` for `n` parameters.
fn placeholders(first: usize, n: usize) -> String {
    (first..first + n)
        .map(|i| format!("${i}::text"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn int(rows: &Rows, row: usize, column: &str) -> i64 {
    rows.get(row, column).and_then(Value::as_i64).unwrap_or(0)
}

fn float(rows: &Rows, row: usize, column: &str) -> f64 {
    rows.get(row, column).and_then(Value::as_f64).unwrap_or(0.0)
}

fn text(rows: &Rows, row: usize, column: &str) -> String {
    rows.get(row, column)
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string()
}

/// A session the action may terminate.
#[derive(Debug, Clone, PartialEq)]
pub struct Session {
    pub pid: i64,
    pub application_name: String,
    pub user: String,
    pub state: String,
    pub idle_seconds: f64,
}

impl Session {
    fn describe(&self) -> String {
        format!(
            "pid {} (application `{}`, user `{}`, {} for {:.0}s)",
            self.pid, self.application_name, self.user, self.state, self.idle_seconds
        )
    }
}

pub struct PgReconnect;

impl Plugin for PgReconnect {
    fn needs() -> Needs {
        Needs::new().connection("*")
    }
}

impl Detector for PgReconnect {
    type Config = DetectConfig;

    /// The connection it watches must be granted.
    fn config_needs(c: &DetectConfig) -> Result<Needs> {
        not_empty("connection", &c.connection)?;
        let n = Needs::new().connection(&c.connection);
        Ok(match &c.reserved_connection {
            Some(r) => n.connection(r),
            None => n,
        })
    }

    fn detect(_cx: &Context, c: DetectConfig) -> Result<Vec<Finding>> {
        not_empty("connection", &c.connection)?;
        let warn = percent("warn_connections_percent", c.warn_connections_percent)?;
        let fail = percent("fail_connections_percent", c.fail_connections_percent)?;

        // Reachability, on a new connection.
        let mut options = Options::fresh();
        if let Some(t) = c.timeout {
            options = options.timeout(t.0);
        }
        match sql::query(&c.connection, "SELECT 1 AS one", &[], options) {
            Ok(_) => {}
            // Not granted or not defined: the operator's problem, not the
            // database's.
            Err(Error::Denied(m)) => return Err(Error::Denied(m)),
            Err(e) if e.to_string().contains(TOO_MANY_CONNECTIONS) => {
                return Ok(vec![exhausted(&c, &e)]);
            }
            Err(e) => {
                return Ok(vec![
                    Finding::fail(
                        "db.unreachable",
                        format!("cannot reach `{}`: {e}", c.connection),
                    )
                    .label("connection", &c.connection)
                    .label("error", e.to_string()),
                ]);
            }
        }

        let mut findings = Vec::new();
        if warn.is_some() || fail.is_some() {
            findings.extend(saturation(&c.connection, warn, fail)?);
        }
        if let Some(after) = c.idle_in_transaction_after {
            findings.extend(idle_in_transaction(&c, after.0)?);
        }
        if findings.iter().all(|f| f.code == "db.ok") {
            let summary = format!("`{}` answers", c.connection);
            let mut ok = Finding::ok("db.ok", summary).label("connection", &c.connection);
            for f in findings.drain(..) {
                for (k, v) in f.metrics {
                    ok = ok.metric(k, v);
                }
            }
            findings.push(ok);
        }
        Ok(findings)
    }
}

/// The server is up but refuses new clients. Through the reserved
/// connection, if any, the finding also says how full it is.
fn exhausted(c: &DetectConfig, e: &Error) -> Finding {
    let mut f = Finding::fail(
        "db.connections.exhausted",
        format!(
            "`{}` is up but has no connection slot left: {e}",
            c.connection
        ),
    )
    .label("connection", &c.connection)
    .label("error", e.to_string());
    if let Some(r) = &c.reserved_connection {
        match saturation(r, None, None) {
            Ok(s) => {
                for (k, v) in s.into_iter().flat_map(|s| s.metrics) {
                    f = f.metric(k, v);
                }
            }
            Err(e) => f = f.label("reserved_error", e.to_string()),
        }
    }
    f
}

/// `db.connections.high`, or a `db.ok` carrying the measurements.
fn saturation(connection: &str, warn: Option<f64>, fail: Option<f64>) -> Result<Vec<Finding>> {
    let rows = sql::query(
        connection,
        "SELECT (SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend') AS used, \
                current_setting('max_connections')::int8 AS max",
        &[],
        Options::default(),
    )
    .map_err(|e| Error::failed(format!("reading connection counts on `{connection}`: {e}")))?;
    let used = int(&rows, 0, "used");
    let max = int(&rows, 0, "max").max(1);
    let pct = used as f64 * 100.0 / max as f64;
    let summary = format!("`{connection}` uses {used} of {max} connections ({pct:.0}%)");
    let f = if fail.is_some_and(|f| pct >= f) {
        Finding::fail("db.connections.high", summary)
    } else if warn.is_some_and(|w| pct >= w) {
        Finding::warn("db.connections.high", summary)
    } else {
        Finding::ok("db.ok", summary)
    };
    Ok(vec![
        f.metric("connections", used as f64)
            .metric("max_connections", max as f64)
            .metric("connections_percent", pct)
            .label("connection", connection),
    ])
}

/// `db.idle_in_transaction`, or a `db.ok` carrying the count.
fn idle_in_transaction(c: &DetectConfig, after: Duration) -> Result<Vec<Finding>> {
    let mut params: Vec<Value> = vec![Value::Float(after.as_secs_f64())];
    let mut filter = String::new();
    if !c.application_names.is_empty() {
        filter += &format!(
            " AND application_name IN ({})",
            placeholders(params.len() + 1, c.application_names.len())
        );
        params.extend(c.application_names.iter().map(|a| Value::from(a.as_str())));
    }
    if let Some(user) = &c.user {
        filter += &format!(" AND usename::text = ${}::text", params.len() + 1);
        params.push(user.as_str().into());
    }
    let statement = format!(
        "SELECT count(*) AS n, \
                coalesce(max(extract(epoch from clock_timestamp() - state_change)), 0)::float8 AS oldest, \
                coalesce(string_agg(pid::text, ',' ORDER BY state_change), '') AS pids \
         FROM pg_stat_activity \
         WHERE state IN ('idle in transaction', 'idle in transaction (aborted)') \
           AND pid <> pg_backend_pid() \
           AND state_change < clock_timestamp() - make_interval(secs => $1::float8){filter}"
    );
    let rows = sql::query(&c.connection, &statement, &params, Options::default()).map_err(|e| {
        Error::failed(format!(
            "reading idle-in-transaction sessions on `{}`: {e}",
            c.connection
        ))
    })?;
    let n = int(&rows, 0, "n");
    let oldest = float(&rows, 0, "oldest");
    let pids = text(&rows, 0, "pids");
    let scope = match (&c.application_names[..], &c.user) {
        ([], None) => String::new(),
        (apps, user) => {
            let mut s = String::from(" (");
            if !apps.is_empty() {
                s += &format!("application {}", apps.join("|"));
            }
            if let Some(u) = user {
                if !apps.is_empty() {
                    s += ", ";
                }
                s += &format!("user {u}");
            }
            s + ")"
        }
    };
    let f = if n > c.idle_in_transaction_max as i64 {
        Finding::fail(
            "db.idle_in_transaction",
            format!(
                "{n} session(s){scope} idle in transaction for over {}s on `{}`, oldest {oldest:.0}s",
                after.as_secs(),
                c.connection
            ),
        )
        .label("pids", pids.chars().take(512).collect::<String>())
    } else {
        Finding::ok("db.ok", "no session stuck idle in transaction")
    };
    Ok(vec![
        f.metric("idle_in_transaction", n as f64)
            .metric("idle_in_transaction_oldest_seconds", oldest)
            .label("connection", &c.connection),
    ])
}

/// The sessions `c` allows terminating, oldest first. With `pids`, only
/// those, and the terminating statement itself (see [`terminate`]) shares
/// this filter.
fn session_filter(c: &TerminateConfig) -> (String, Vec<Value>) {
    let params: Vec<Value> = [
        Value::from(c.application_name.as_str()),
        Value::from(c.user.as_str()),
        Value::Float(c.older_than.0.as_secs_f64()),
    ]
    .into_iter()
    .chain(c.states.iter().map(|s| Value::from(s.as_str())))
    .collect();
    let filter = format!(
        "a.application_name = $1::text \
         AND a.usename::text = $2::text \
         AND a.state_change < clock_timestamp() - make_interval(secs => $3::float8) \
         AND a.state IN ({}) \
         AND a.pid <> pg_backend_pid() \
         AND a.backend_type = 'client backend' \
         AND NOT (coalesce(r.rolsuper, true) AND a.usename::text <> $2::text)",
        placeholders(4, c.states.len())
    );
    (filter, params)
}

const FROM: &str = "FROM pg_stat_activity a LEFT JOIN pg_roles r ON r.oid = a.usesysid";

fn sessions(rows: &Rows) -> Vec<Session> {
    (0..rows.len())
        .map(|i| Session {
            pid: int(rows, i, "pid"),
            application_name: text(rows, i, "application_name"),
            user: text(rows, i, "usename"),
            state: text(rows, i, "state"),
            idle_seconds: float(rows, i, "idle_seconds"),
        })
        .collect()
}

const COLUMNS: &str = "a.pid::int8 AS pid, a.application_name, a.usename::text AS usename, a.state, \
     extract(epoch from clock_timestamp() - a.state_change)::float8 AS idle_seconds";

fn candidates(c: &TerminateConfig) -> Result<Vec<Session>> {
    let (filter, params) = session_filter(c);
    let statement = format!(
        "SELECT {COLUMNS} {FROM} WHERE {filter} ORDER BY a.state_change LIMIT {}",
        c.max_sessions
    );
    let rows = sql::query(c.via(), &statement, &params, Options::default())
        .map_err(|e| Error::failed(format!("listing sessions on `{}`: {e}", c.via())))?;
    Ok(sessions(&rows))
}

/// Terminates `pids` that still match the filter; returns those that did
/// and whether each exited within the wait.
fn terminate(c: &TerminateConfig, pids: &[i64]) -> Result<Vec<(Session, bool)>> {
    let (filter, params) = session_filter(c);
    // The pids are integers the server just gave us.
    let list = pids
        .iter()
        .map(i64::to_string)
        .collect::<Vec<_>>()
        .join(", ");
    let wait_ms = c.terminate_wait.0.as_millis().min(60_000);
    let statement = format!(
        "SELECT {COLUMNS}, pg_terminate_backend(a.pid, {wait_ms}) AS terminated \
         {FROM} WHERE a.pid IN ({list}) AND {filter}"
    );
    let rows = sql::query(c.via(), &statement, &params, Options::default())
        .map_err(|e| Error::failed(format!("terminating sessions on `{}`: {e}", c.via())))?;
    Ok(sessions(&rows)
        .into_iter()
        .enumerate()
        .map(|(i, s)| {
            let done = rows
                .get(i, "terminated")
                .and_then(Value::as_bool)
                .unwrap_or(false);
            (s, done)
        })
        .collect())
}

fn pool_reset(url: &str, timeout: Duration) -> Result<String> {
    let r = mend_sdk::http::post(url)
        .json(&serde_json::json!({ "reason": "mend pg-reconnect terminated stuck sessions" }))?
        .timeout(timeout)
        .send()
        // The SDK's errors already name the URL.
        .map_err(|e| match e {
            Error::Denied(m) => Error::Denied(format!("pool reset: {m}")),
            other => Error::failed(format!("pool reset: {other}")),
        })?;
    if !r.is_success() {
        let body: String = r.text().chars().take(200).collect();
        return Err(Error::failed(format!(
            "pool reset POST {url} answered {}: {}",
            r.status,
            body.trim()
        )));
    }
    Ok(format!("POST {url}: {}", r.status))
}

fn validate(c: &TerminateConfig) -> Result<()> {
    not_empty("connection", &c.connection)?;
    not_empty("application_name", &c.application_name)?;
    not_empty("user", &c.user)?;
    if c.states.is_empty() {
        return Err(Error::bad_config("`states` is empty"));
    }
    for s in &c.states {
        if !STATES.contains(&s.as_str()) {
            return Err(Error::bad_config(format!(
                "state `{s}` cannot be terminated: use one of {STATES:?}"
            )));
        }
    }
    if c.max_sessions == 0 {
        return Err(Error::bad_config("`max_sessions` must be at least 1"));
    }
    if let Some(u) = &c.pool_reset_url
        && !(u.starts_with("http://") || u.starts_with("https://"))
    {
        return Err(Error::bad_config(format!(
            "`pool_reset_url` {u:?} is not an http(s) URL"
        )));
    }
    Ok(())
}

impl Action for PgReconnect {
    type Config = TerminateConfig;

    /// The connection it works on, and the pool-reset URL if set.
    fn config_needs(c: &TerminateConfig) -> Result<Needs> {
        not_empty("connection", &c.connection)?;
        let n = Needs::new().connection(c.via());
        Ok(match &c.pool_reset_url {
            Some(url) => n.url(url),
            None => n,
        })
    }

    fn remedy(
        _cx: &Context,
        c: TerminateConfig,
        _findings: &[Finding],
        dry_run: bool,
    ) -> Result<Outcome> {
        validate(&c)?;
        let found = candidates(&c)?;
        let mut out = Outcome::new();
        if dry_run {
            for s in &found {
                out.step(format!("would terminate {}", s.describe()));
            }
            if let Some(u) = &c.pool_reset_url {
                out.step(format!("would POST {u} to reset the application's pool"));
            }
            return Ok(out.message(format!(
                "would terminate {} session(s) of application `{}`, user `{}`",
                found.len(),
                c.application_name,
                c.user
            )));
        }

        let mut terminated = 0;
        if !found.is_empty() {
            let pids: Vec<i64> = found.iter().map(|s| s.pid).collect();
            let done = terminate(&c, &pids)?;
            for (s, exited) in &done {
                out.step(format!(
                    "terminated {}{}",
                    s.describe(),
                    if *exited { "" } else { " (still exiting)" }
                ));
            }
            terminated = done.len();
            let spared = pids.len() - done.len();
            if spared > 0 {
                out.step(format!(
                    "spared {spared} session(s) that became busy or went away meanwhile"
                ));
            }
        }
        if let Some(u) = &c.pool_reset_url {
            out.step(pool_reset(u, c.pool_reset_timeout.0)?);
        }
        let changed = terminated > 0 || c.pool_reset_url.is_some();
        let out = out.message(format!(
            "terminated {terminated} session(s) of application `{}`, user `{}`",
            c.application_name, c.user
        ));
        Ok(if changed { out.changed() } else { out })
    }
}

mend_sdk::export!(PgReconnect: Detector, Action);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_are_numbered_from_first() {
        assert_eq!(placeholders(4, 2), "$4::text, $5::text");
        assert_eq!(placeholders(1, 0), "");
    }
}
