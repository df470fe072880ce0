//! One PostgreSQL session over a stream mend opens itself, so every reply
//! passes through the [`BackendFramer`] before tokio-postgres buffers it.
//!
//! tokio-postgres's own `connect` hides its socket; `connect_raw` takes
//! any stream but skips host selection and socket options. This module
//! does those the way `connect` does (each host and address in turn, the
//! config's ports, `hostaddr`, `connect_timeout`, TCP keepalives and user
//! timeout, `load_balance_hosts`, `target_session_attrs`) and keeps the
//! address, which query cancellation needs.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use tokio_postgres::config::{Host, LoadBalanceHosts, TargetSessionAttrs};
use tokio_postgres::{CancelToken, Client, Config, NoTls};

use super::wire::{BackendFramer, Overflow};
use crate::capabilities::limited_stream::{LimitedStream, Socket, Tripwire};

/// Where a session's server listens.
#[derive(Debug, Clone)]
pub(crate) enum Target {
    Tcp(SocketAddr),
    /// The socket file itself (`DIR/.s.PGSQL.PORT`).
    Unix(PathBuf),
}

/// A live session: the client, why its stream failed (if it did), and
/// where to send a cancel request.
pub(crate) struct Session {
    pub(crate) client: Client,
    pub(crate) tripwire: Tripwire<Overflow>,
    /// Set once tokio-postgres looked up a type that is not built in.
    pub(crate) custom_types: AtomicBool,
    target: Target,
    keepalive: Option<socket2::TcpKeepalive>,
    tcp_user_timeout: Option<Duration>,
    connect_timeout: Option<Duration>,
}

impl Session {
    /// Connects as `config` says, with every reply bounded by `limit`.
    pub(crate) async fn connect(config: &Config, limit: u64) -> Result<Session, String> {
        let hosts = targets(config)?;
        let mut last = None;
        for (host, port) in hosts {
            let random = config.get_load_balance_hosts() == LoadBalanceHosts::Random;
            let addrs = match resolve(&host, port, random).await {
                Ok(a) => a,
                Err(e) => {
                    last = Some(e);
                    continue;
                }
            };
            for target in addrs {
                match Session::connect_to(config, limit, target).await {
                    Ok(s) => return Ok(s),
                    Err(e) => last = Some(e),
                }
            }
        }
        Err(last.unwrap_or_else(|| "no host to connect to".into()))
    }

    async fn connect_to(config: &Config, limit: u64, target: Target) -> Result<Session, String> {
        let keepalive = config.get_keepalives().then(|| keepalive(config));
        let tcp_user_timeout = config.get_tcp_user_timeout().copied();
        let connect_timeout = config.get_connect_timeout().copied();
        let socket = open(
            &target,
            connect_timeout,
            keepalive.as_ref(),
            tcp_user_timeout,
        )
        .await
        .map_err(|e| format!("{}: {e}", target.describe()))?;
        let (stream, tripwire) = LimitedStream::new(socket, BackendFramer::new(limit));
        let (client, connection) = match config.connect_raw(stream, NoTls).await {
            Ok(c) => c,
            Err(e) => {
                let why = tripwire
                    .tripped()
                    .map(|o| o.to_string())
                    .unwrap_or_else(|| super::describe(&e));
                return Err(format!("{}: {why}", target.describe()));
            }
        };
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!("postgres connection closed: {e}");
            }
        });
        let session = Session {
            client,
            tripwire,
            custom_types: AtomicBool::new(false),
            target,
            keepalive,
            tcp_user_timeout,
            connect_timeout,
        };
        session
            .check_attrs(config.get_target_session_attrs())
            .await?;
        Ok(session)
    }

    /// `target_session_attrs`, as tokio-postgres checks it.
    async fn check_attrs(&self, want: TargetSessionAttrs) -> Result<(), String> {
        let want_read_only = match want {
            TargetSessionAttrs::ReadWrite => false,
            TargetSessionAttrs::ReadOnly => true,
            _ => return Ok(()),
        };
        let rows = self
            .client
            .simple_query("SHOW transaction_read_only")
            .await
            .map_err(|e| format!("{}: {}", self.target.describe(), super::describe(&e)))?;
        let read_only = rows.iter().find_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(r) => r.get(0).map(|v| v == "on"),
            _ => None,
        });
        match read_only {
            Some(ro) if ro == want_read_only => Ok(()),
            Some(true) => Err(format!(
                "{}: the database does not allow writes",
                self.target.describe()
            )),
            _ => Err(format!(
                "{}: the database is not read-only",
                self.target.describe()
            )),
        }
    }

    /// What cancels the statement running on this session.
    pub(crate) fn canceller(&self) -> Canceller {
        Canceller {
            token: self.client.cancel_token(),
            target: self.target.clone(),
            keepalive: self.keepalive.clone(),
            tcp_user_timeout: self.tcp_user_timeout,
            connect_timeout: self.connect_timeout,
        }
    }
}

/// Sends a cancel request for a session's running statement.
pub(crate) struct Canceller {
    token: CancelToken,
    target: Target,
    keepalive: Option<socket2::TcpKeepalive>,
    tcp_user_timeout: Option<Duration>,
    connect_timeout: Option<Duration>,
}

impl Canceller {
    pub(crate) async fn cancel(self) {
        let socket = open(
            &self.target,
            self.connect_timeout,
            self.keepalive.as_ref(),
            self.tcp_user_timeout,
        )
        .await;
        if let Ok(s) = socket {
            let _ = self.token.cancel_query_raw(s, NoTls).await;
        }
    }
}

impl Target {
    fn describe(&self) -> String {
        match self {
            Target::Tcp(a) => a.to_string(),
            Target::Unix(p) => p.display().to_string(),
        }
    }
}

/// The (host, port) pairs to try, in order.
fn targets(config: &Config) -> Result<Vec<(Host, u16)>, String> {
    let hosts = config.get_hosts();
    let addrs = config.get_hostaddrs();
    if hosts.is_empty() && addrs.is_empty() {
        return Err("both host and hostaddr are missing".into());
    }
    if !hosts.is_empty() && !addrs.is_empty() && hosts.len() != addrs.len() {
        return Err(format!(
            "number of hosts ({}) is different from number of hostaddrs ({})",
            hosts.len(),
            addrs.len()
        ));
    }
    let n = hosts.len().max(addrs.len());
    let ports = config.get_ports();
    if ports.len() > 1 && ports.len() != n {
        return Err("invalid number of ports".into());
    }
    let mut out: Vec<(Host, u16)> = (0..n)
        .map(|i| {
            let port = ports.get(i).or(ports.first()).copied().unwrap_or(5432);
            // `hostaddr` wins over `host` for where to connect.
            let host = match addrs.get(i) {
                Some(ip) => Host::Tcp(ip.to_string()),
                None => hosts[i].clone(),
            };
            (host, port)
        })
        .collect();
    if config.get_load_balance_hosts() == LoadBalanceHosts::Random {
        fastrand::shuffle(&mut out);
    }
    Ok(out)
}

async fn resolve(host: &Host, port: u16, random: bool) -> Result<Vec<Target>, String> {
    match host {
        Host::Tcp(name) => {
            let addrs = tokio::net::lookup_host((name.as_str(), port))
                .await
                .map_err(|e| format!("resolving {name}: {e}"))?;
            let mut addrs: Vec<Target> = addrs.map(Target::Tcp).collect();
            if addrs.is_empty() {
                return Err(format!("{name} resolves to no address"));
            }
            if random {
                fastrand::shuffle(&mut addrs);
            }
            Ok(addrs)
        }
        Host::Unix(dir) => Ok(vec![Target::Unix(dir.join(format!(".s.PGSQL.{port}")))]),
    }
}

async fn within<T>(
    timeout: Option<Duration>,
    f: impl Future<Output = std::io::Result<T>>,
) -> std::io::Result<T> {
    match timeout {
        Some(t) => tokio::time::timeout(t, f).await.unwrap_or_else(|_| {
            Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "connection timed out",
            ))
        }),
        None => f.await,
    }
}

async fn open(
    target: &Target,
    connect_timeout: Option<Duration>,
    keepalive: Option<&socket2::TcpKeepalive>,
    tcp_user_timeout: Option<Duration>,
) -> std::io::Result<Socket> {
    match target {
        Target::Tcp(addr) => {
            let tcp = within(connect_timeout, tokio::net::TcpStream::connect(addr)).await?;
            tcp.set_nodelay(true)?;
            let sock = socket2::SockRef::from(&tcp);
            if let Some(t) = tcp_user_timeout {
                sock.set_tcp_user_timeout(Some(t))?;
            }
            if let Some(k) = keepalive {
                sock.set_tcp_keepalive(k)?;
            }
            Ok(Socket::Tcp(tcp))
        }
        Target::Unix(path) => within(connect_timeout, tokio::net::UnixStream::connect(path))
            .await
            .map(Socket::Unix),
    }
}

fn keepalive(config: &Config) -> socket2::TcpKeepalive {
    let mut k = socket2::TcpKeepalive::new().with_time(config.get_keepalives_idle());
    if let Some(i) = config.get_keepalives_interval() {
        k = k.with_interval(i);
    }
    if let Some(r) = config.get_keepalives_retries() {
        k = k.with_retries(r);
    }
    k
}
