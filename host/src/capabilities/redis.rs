//! `mend:plugin/redis`: named Redis connections.
//!
//! As with SQL, the operator defines `[connections.NAME] kind = "redis"`
//! and the plugin only names it. A plugin that heals a cache must not be
//! able to take the cache down, so commands that administer or block the
//! server (FLUSHALL, CONFIG, SHUTDOWN, KEYS, MONITOR, ...) are refused;
//! iteration goes through `scan`. Every command is bounded by the
//! connection's timeout, and every reply by a size limit that the host
//! keeps while the reply arrives (see [`resp`]).

mod resp;

use std::sync::Arc;
use std::time::Duration;

use redis::aio::MultiplexedConnection;
use serde::Deserialize;

use self::resp::{Overflow, RespFramer};
use super::limited_stream::{LimitedStream, Socket, Tripwire};
use crate::contract::HostError;
use crate::values::Dur;

/// A reply as the plugin sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    Nil,
    Int(i64),
    /// A bulk string or a status reply.
    Data(Vec<u8>),
    /// An array of scalars (integers as their decimal text).
    Array(Vec<Option<Vec<u8>>>),
}

/// Payload bytes (strings, lines) one reply may carry. Kept on the wire:
/// a reply that would go over is refused from its header, before its
/// body reaches the host.
pub const MAX_REPLY_BYTES: usize = 4 * 1024 * 1024;
/// Values (an aggregate and each of its members) one reply may hold, so
/// that many tiny values cannot cost the host more than the byte limit.
pub const MAX_REPLY_VALUES: usize = 50_000;
/// Largest COUNT for one SCAN step.
pub const MAX_SCAN_COUNT: u32 = 10_000;
/// Most elements an `LRANGE` or `ZRANGE` may ask for.
pub const MAX_RANGE: i64 = 10_000;

/// What a plugin may run. An allowlist, not a denylist: every command
/// here does work bounded by its arguments or by one value (so it cannot
/// stall the server the way `KEYS` or `HGETALL` on a huge hash does),
/// cannot block, cannot leave the connection's database or user, and
/// cannot administer the server. Iteration goes through `scan`. Every
/// reply, whatever the command, is bounded by the host as it arrives.
/// These read; the writes a plugin may run are [`WRITES`].
const READS: &[&str] = &[
    // Server facts.
    "PING",
    "ECHO",
    "INFO",
    "DBSIZE",
    "TIME",
    // Key metadata.
    "EXISTS",
    "TYPE",
    "TTL",
    "PTTL",
    "EXPIRETIME",
    "PEXPIRETIME",
    "STRLEN",
    "HSTRLEN",
    "HEXISTS",
    "HLEN",
    "LLEN",
    "SCARD",
    "ZCARD",
    "XLEN",
    "SISMEMBER",
    "OBJECT",
    "MEMORY",
    // Reads of one value, or of the values named in the arguments.
    "GET",
    "GETRANGE",
    "MGET",
    "HGET",
    "HMGET",
    "LINDEX",
    "SMISMEMBER",
    "ZSCORE",
    "ZMSCORE",
    "ZRANK",
    "ZREVRANK",
    // Reads of a range, at most MAX_RANGE long.
    "LRANGE",
    "ZRANGE",
];

fn is_allowed(name: &str) -> bool {
    READS.contains(&name) || WRITES.contains(&name)
}

/// Subcommands allowed for the container commands above.
const SUBCOMMANDS: &[(&str, &[&str])] = &[
    ("OBJECT", &["ENCODING", "FREQ", "IDLETIME", "REFCOUNT"]),
    ("MEMORY", &["USAGE"]),
];

/// Checks a command against the allowlist; returns its upper-case name.
fn admit(args: &[Vec<u8>]) -> Result<String, String> {
    let Some(first) = args.first() else {
        return Err("denied: empty command".into());
    };
    // Plain ASCII names only: Redis compares names in ways (NUL, case
    // folding) an exact-match list could miss.
    let plain = |b: &[u8]| {
        !b.is_empty()
            && b.len() <= 32
            && b[0].is_ascii_alphabetic()
            && b.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'_')
    };
    if !plain(first) {
        return Err("denied: not a Redis command name".into());
    }
    let name = String::from_utf8_lossy(first).to_ascii_uppercase();
    if name == "KEYS" || name == "SCAN" {
        return Err(format!("denied: {name} is refused: iterate with scan()"));
    }
    if !is_allowed(&name) {
        return Err(format!(
            "denied: {name} is not among the commands plugins may run"
        ));
    }
    if name == "LRANGE" || name == "ZRANGE" {
        bounded_range(&name, args)?;
    }
    if let Some((_, subs)) = SUBCOMMANDS.iter().find(|(c, _)| *c == name) {
        let sub = args
            .get(1)
            .filter(|s| plain(s))
            .map(|s| String::from_utf8_lossy(s).to_ascii_uppercase())
            .unwrap_or_default();
        if !subs.contains(&sub.as_str()) {
            return Err(format!("denied: {name} {sub} is not allowed"));
        }
    }
    Ok(name)
}

/// `LRANGE key start stop` and `ZRANGE key start stop [REV]
/// [WITHSCORES]`: by index only, both ends on the same side (so the span
/// is known without the length), at most [`MAX_RANGE`] elements.
fn bounded_range(name: &str, args: &[Vec<u8>]) -> Result<(), String> {
    let int = |a: Option<&Vec<u8>>| {
        a.and_then(|b| std::str::from_utf8(b).ok())
            .and_then(|s| s.parse::<i64>().ok())
    };
    let (Some(start), Some(stop)) = (int(args.get(2)), int(args.get(3))) else {
        return Err(format!("denied: {name} needs integer start and stop"));
    };
    let options_ok = args.get(4..).unwrap_or_default().iter().all(|o| {
        name == "ZRANGE"
            && ["REV", "WITHSCORES"]
                .iter()
                .any(|k| o.eq_ignore_ascii_case(k.as_bytes()))
    });
    if args.len() < 4 || !options_ok {
        return Err(format!(
            "denied: {name} is allowed as `{name} key start stop`{}",
            if name == "ZRANGE" {
                " [REV] [WITHSCORES] (no BYSCORE, BYLEX or LIMIT)"
            } else {
                ""
            }
        ));
    }
    if (start < 0) != (stop < 0) || stop.saturating_sub(start) >= MAX_RANGE {
        return Err(format!(
            "denied: {name} {start} {stop}: ask for at most {MAX_RANGE} elements, with start and stop both from the head or both from the tail"
        ));
    }
    Ok(())
}

/// `[connections.NAME]` with `kind = "redis"`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedisDef {
    /// `redis://[user:password@]host:port/db`.
    pub url: String,
    /// Bounds connecting and each command.
    #[serde(default = "default_timeout")]
    pub timeout: Dur,
}

fn default_timeout() -> Dur {
    Dur(Duration::from_secs(2))
}

/// A named connection and the host's reusable multiplexed connection.
pub struct RedisConnection {
    pub name: String,
    client: redis::Client,
    timeout: Duration,
    shared: tokio::sync::Mutex<Option<Live>>,
}

/// An open connection and why its stream failed, if it did.
#[derive(Clone)]
struct Live {
    conn: MultiplexedConnection,
    tripwire: Tripwire<Overflow>,
}

impl std::fmt::Debug for RedisConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisConnection")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl RedisConnection {
    pub(super) fn new(name: &str, def: &RedisDef) -> anyhow::Result<RedisConnection> {
        let client = redis::Client::open(def.url.as_str())
            .map_err(|e| anyhow::anyhow!("connection `{name}`: `url` is not a Redis URL: {e}"))?;
        if def.timeout.0.is_zero() {
            anyhow::bail!("connection `{name}`: `timeout` must be more than 0s");
        }
        if matches!(
            client.get_connection_info().addr(),
            redis::ConnectionAddr::TcpTls { .. }
        ) {
            anyhow::bail!(
                "connection `{name}`: rediss:// (TLS) is not supported yet; use a local socket, a loopback address or a tunnel"
            );
        }
        Ok(RedisConnection {
            name: name.to_string(),
            client,
            timeout: def.timeout.0,
            shared: tokio::sync::Mutex::new(None),
        })
    }

    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Opens a connection whose replies pass through the RESP framer.
    async fn connect(&self) -> Result<Live, String> {
        let info = self.client.get_connection_info();
        let socket = match info.addr() {
            redis::ConnectionAddr::Tcp(host, port) => {
                let tcp = tokio::net::TcpStream::connect((host.as_str(), *port))
                    .await
                    .map_err(|e| format!("connecting to {host}:{port}: {e}"))?;
                let tcp_settings = info.tcp_settings();
                let sock = socket2::SockRef::from(&tcp);
                let options = sock
                    .set_tcp_nodelay(tcp_settings.nodelay())
                    .and_then(|()| match tcp_settings.keepalive() {
                        Some(k) => sock.set_tcp_keepalive(k),
                        None => Ok(()),
                    })
                    .and_then(|()| sock.set_tcp_user_timeout(tcp_settings.user_timeout()));
                options.map_err(|e| format!("setting up the socket to {host}:{port}: {e}"))?;
                Socket::Tcp(tcp)
            }
            redis::ConnectionAddr::Unix(path) => tokio::net::UnixStream::connect(path)
                .await
                .map(Socket::Unix)
                .map_err(|e| format!("connecting to {}: {e}", path.display()))?,
            _ => return Err("only TCP and Unix sockets are supported".into()),
        };
        let framer = RespFramer::new(MAX_REPLY_BYTES as u64, MAX_REPLY_VALUES as u64);
        let (stream, tripwire) = LimitedStream::new(socket, framer);
        let config = redis::AsyncConnectionConfig::new().set_response_timeout(Some(self.timeout));
        let (conn, driver) =
            MultiplexedConnection::new_with_config(info.redis_settings(), stream, config)
                .await
                .map_err(|e| match tripwire.tripped() {
                    Some(o) => format!("connecting: {o}"),
                    None => format!("connecting: {e}"),
                })?;
        tokio::spawn(driver);
        Ok(Live { conn, tripwire })
    }

    /// Runs one command on the shared connection, reconnecting if needed.
    pub async fn run(&self, cmd: redis::Cmd) -> Result<redis::Value, HostError> {
        let work = async {
            let mut shared = self.shared.lock().await;
            let mut live = match shared.as_ref() {
                Some(l) => l.clone(),
                None => {
                    let l = self.connect().await.map_err(HostError::Failed)?;
                    *shared = Some(l.clone());
                    l
                }
            };
            let result: redis::RedisResult<redis::Value> = cmd.query_async(&mut live.conn).await;
            if let Err(e) = &result {
                if let Some(o) = live.tripwire.tripped() {
                    *shared = None;
                    return Err(HostError::limit(o.to_string()));
                }
                if e.is_io_error() || e.is_connection_dropped() || e.is_unrecoverable_error() {
                    *shared = None;
                }
            }
            result.map_err(|e| HostError::failed(e.to_string()))
        };
        let at = format!("connection `{}`", self.name);
        match tokio::time::timeout(self.timeout, work).await {
            Ok(r) => r.map_err(|e| e.context(&at)),
            Err(_) => {
                // The connection may hold a late reply: start over.
                *self.shared.lock().await = None;
                Err(HostError::timed_out(format!(
                    "{at}: timed out after {}",
                    humantime::format_duration(self.timeout)
                )))
            }
        }
    }
}

/// Converts a reply for the plugin, within the size limit.
fn to_reply(v: redis::Value) -> Result<Reply, String> {
    let mut size = 0usize;
    let mut count = |n: usize| {
        size += n;
        if size > MAX_REPLY_BYTES {
            Err(format!("the reply is larger than {MAX_REPLY_BYTES} bytes"))
        } else {
            Ok(())
        }
    };
    Ok(match v {
        redis::Value::Nil => Reply::Nil,
        redis::Value::Int(i) => Reply::Int(i),
        redis::Value::Array(items) | redis::Value::Set(items) => {
            let mut out = Vec::with_capacity(items.len());
            for item in items {
                let e = match scalar(item)? {
                    Some(bytes) => {
                        count(bytes.len())?;
                        Some(bytes)
                    }
                    None => None,
                };
                out.push(e);
            }
            Reply::Array(out)
        }
        redis::Value::Map(pairs) => {
            let mut out = Vec::with_capacity(pairs.len() * 2);
            for (k, v) in pairs {
                for item in [k, v] {
                    let e = scalar(item)?;
                    count(e.as_ref().map_or(0, |b| b.len()))?;
                    out.push(e);
                }
            }
            Reply::Array(out)
        }
        redis::Value::ServerError(e) => {
            return Err(format!("{} {}", e.code(), e.details().unwrap_or_default()));
        }
        other => match scalar(other)? {
            Some(bytes) => {
                count(bytes.len())?;
                Reply::Data(bytes)
            }
            None => Reply::Nil,
        },
    })
}

/// A non-aggregate value as bytes (integers as their decimal text).
fn scalar(v: redis::Value) -> Result<Option<Vec<u8>>, String> {
    Ok(Some(match v {
        redis::Value::Nil => return Ok(None),
        redis::Value::Int(i) => i.to_string().into_bytes(),
        redis::Value::BulkString(b) => b,
        redis::Value::SimpleString(s) => s.into_bytes(),
        redis::Value::Okay => b"OK".to_vec(),
        redis::Value::Double(d) => d.to_string().into_bytes(),
        redis::Value::Boolean(b) => (if b { "1" } else { "0" }).as_bytes().to_vec(),
        redis::Value::VerbatimString { text, .. } => text.into_bytes(),
        redis::Value::BigNumber(n) => n,
        redis::Value::ServerError(e) => {
            return Err(format!("{} {}", e.code(), e.details().unwrap_or_default()));
        }
        _ => return Err("nested replies are not supported".into()),
    }))
}

/// The commands plugins may run that change data: refused in a dry run.
const WRITES: &[&str] = &[
    "GETDEL",
    "SET",
    "SETEX",
    "PSETEX",
    "SETNX",
    "APPEND",
    "DEL",
    "UNLINK",
    "EXPIRE",
    "PEXPIRE",
    "EXPIREAT",
    "PEXPIREAT",
    "PERSIST",
    "INCR",
    "INCRBY",
    "INCRBYFLOAT",
    "DECR",
    "DECRBY",
    "HSET",
    "HDEL",
    "HINCRBY",
    "SADD",
    "SREM",
    "ZADD",
    "ZREM",
    "LPUSH",
    "RPUSH",
    "PUBLISH",
];

/// Per-call state: the Redis connections granted to this call.
pub struct RedisCap {
    pub(crate) connections: Vec<Arc<RedisConnection>>,
    /// A dry run: only commands that read.
    pub(crate) dry_run: bool,
}

impl RedisCap {
    fn get(&self, name: &str) -> Result<Arc<RedisConnection>, HostError> {
        self.connections
            .iter()
            .find(|c| c.name == name)
            .cloned()
            .ok_or_else(|| {
                HostError::denied(format!(
                    "Redis connection `{name}` is not granted to this plugin"
                ))
            })
    }

    /// Runs one allowed command; in a dry run, one that only reads.
    pub async fn command(
        &mut self,
        connection: &str,
        args: &[Vec<u8>],
    ) -> Result<Reply, HostError> {
        let conn = self.get(connection)?;
        let name = admit(args).map_err(denied)?;
        if self.dry_run && WRITES.contains(&name.as_str()) {
            return Err(HostError::denied(format!(
                "dry run: {name} changes data and was not run"
            )));
        }
        let mut cmd = redis::cmd(&name);
        for a in &args[1..] {
            cmd.arg(a.as_slice());
        }
        to_reply(conn.run(cmd).await?).map_err(HostError::Failed)
    }

    /// One SCAN step.
    pub async fn scan(
        &mut self,
        connection: &str,
        cursor: u64,
        pattern: &str,
        count: u32,
    ) -> Result<(u64, Vec<String>), HostError> {
        let conn = self.get(connection)?;
        let mut cmd = redis::cmd("SCAN");
        cmd.arg(cursor)
            .arg("MATCH")
            .arg(pattern)
            .arg("COUNT")
            .arg(count.clamp(1, MAX_SCAN_COUNT));
        let (next, raw): (u64, Vec<Vec<u8>>) = redis::from_redis_value(conn.run(cmd).await?)
            .map_err(|e| HostError::failed(e.to_string()))?;
        // A key that is not UTF-8 cannot be named back through this
        // interface: skip it rather than fail the whole scan.
        let total = raw.len();
        let keys: Vec<String> = raw
            .into_iter()
            .filter_map(|k| String::from_utf8(k).ok())
            .collect();
        if keys.len() < total {
            tracing::debug!(connection = %connection, skipped = total - keys.len(), "scan skipped keys that are not UTF-8");
        }
        Ok((next, keys))
    }
}

/// `admit`'s refusals carry a `denied: ` prefix; the kind says it now.
fn denied(m: String) -> HostError {
    HostError::Denied(m.strip_prefix("denied: ").map(str::to_string).unwrap_or(m))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(a: &[&str]) -> Vec<Vec<u8>> {
        a.iter().map(|s| s.as_bytes().to_vec()).collect()
    }

    #[test]
    fn only_allowlisted_commands_pass() {
        for c in [
            &["flushall"][..],
            &["KEYS", "*"],
            &["Config", "GET", "x"],
            &["shutdown"],
            &["blpop", "q", "0"],
            &["eval", "return 1", "0"],
            &["RESET"],
            &["MOVE", "k", "1"],
            &["COPY", "a", "b", "DB", "1"],
            &["SELECT", "1"],
            &["SCAN", "0", "COUNT", "1000000000"],
            &["XREAD", "BLOCK", "0", "STREAMS", "s", "$"],
            &["OBJECT", "HELP"],
            &["MEMORY", "PURGE"],
            // O(N) in the collection, whatever the reply.
            &["HGETALL", "h"],
            &["SMEMBERS", "s"],
            &["HKEYS", "h"],
            // Ranges must be short and anchored at one end.
            &["LRANGE", "l", "0", "-1"],
            &["LRANGE", "l", "0", "10000"],
            &["LRANGE", "l", "-20000", "-1"],
            &["LRANGE", "l", "x", "1"],
            &["LRANGE", "l", "0"],
            &["LRANGE", "l", "0", "1", "2"],
            &["ZRANGE", "z", "0", "-1"],
            &["ZRANGE", "z", "0", "10", "BYSCORE"],
            &["ZRANGE", "z", "(1", "+inf", "BYSCORE", "LIMIT", "0", "10"],
        ] {
            assert!(admit(&args(c)).is_err(), "{c:?}");
        }
        for c in [
            &["GET", "k"][..],
            &["set", "k", "v", "EX", "60"],
            &["UNLINK", "a", "b"],
            &["INFO", "memory"],
            &["ttl", "k"],
            &["PING"],
            &["object", "encoding", "k"],
            &["MEMORY", "USAGE", "k"],
            &["MGET", "a", "b", "c"],
            &["HMGET", "h", "f1", "f2"],
            &["SET", "k", "v", "GET"],
            &["LRANGE", "l", "0", "9999"],
            &["lrange", "l", "-100", "-1"],
            &["ZRANGE", "z", "0", "99", "rev", "WITHSCORES"],
            &["GETRANGE", "k", "0", "-1"],
        ] {
            assert!(admit(&args(c)).is_ok(), "{c:?}");
        }
    }

    #[test]
    fn odd_bytes_in_a_name_are_refused() {
        for name in [
            &b"flushall\0xy"[..],
            b"GET\0",
            b"",
            b"g\xc3\xa9t",
            b"1GET",
            b"GET KEYS",
        ] {
            assert!(admit(&[name.to_vec()]).is_err(), "{name:?}");
        }
    }

    #[test]
    fn every_write_is_an_allowed_command() {
        for w in WRITES {
            assert!(is_allowed(w), "{w}");
            assert!(!READS.contains(w), "{w} is listed as a read and a write");
        }
    }

    #[test]
    fn replies_are_flattened_and_bounded() {
        let r = to_reply(redis::Value::Array(vec![
            redis::Value::BulkString(b"a".to_vec()),
            redis::Value::Nil,
            redis::Value::Int(3),
        ]))
        .unwrap();
        let Reply::Array(items) = r else {
            panic!("expected an array");
        };
        assert_eq!(items, vec![Some(b"a".to_vec()), None, Some(b"3".to_vec())]);
        assert!(to_reply(redis::Value::Array(vec![redis::Value::Array(vec![])])).is_err());
        let big = redis::Value::BulkString(vec![0; MAX_REPLY_BYTES + 1]);
        assert!(to_reply(big).is_err());
    }
}
