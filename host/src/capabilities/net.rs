//! Address grants: outbound TCP to an allowlist of `host:port`.
//!
//! wasmtime 48 denies all sockets by default. When a plugin is granted
//! addresses, TCP is switched on with a check that allows exactly one thing:
//! connecting to a granted address. Explicit binds, listening and UDP stay
//! denied (connect's implicit bind to the wildcard address with port 0 is
//! allowed, since the OS picks the port).

use std::collections::HashSet;
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::Arc;

use wasmtime_wasi::WasiCtxBuilder;
use wasmtime_wasi::sockets::SocketAddrUse;

/// A granted `host:port` and the socket addresses it resolved to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedAddress {
    pub spec: String,
    pub addrs: Vec<SocketAddr>,
}

pub(super) fn resolve(specs: &[String]) -> anyhow::Result<Vec<ResolvedAddress>> {
    specs
        .iter()
        .map(|spec| {
            let addrs: Vec<SocketAddr> = spec
                .to_socket_addrs()
                .map_err(|e| anyhow::anyhow!("address grant `{spec}`: {e} (expected host:port)"))?
                .collect();
            if addrs.is_empty() {
                anyhow::bail!("address grant `{spec}`: resolves to no address");
            }
            Ok(ResolvedAddress {
                spec: spec.clone(),
                addrs,
            })
        })
        .collect()
}

/// The first address need not covered by the grants.
pub(super) fn missing(needs: &[String], granted: &[ResolvedAddress]) -> Option<String> {
    for need in needs {
        let ok = if need == "*" {
            !granted.is_empty()
        } else {
            granted.iter().any(|g| &g.spec == need)
                || need
                    .parse::<SocketAddr>()
                    .is_ok_and(|a| granted.iter().any(|g| g.addrs.contains(&a)))
        };
        if !ok {
            return Some(format!("address `{need}`"));
        }
    }
    None
}

/// Allows TCP connections to the granted addresses and nothing else.
pub(crate) fn configure(builder: &mut WasiCtxBuilder, granted: &[ResolvedAddress]) {
    if granted.is_empty() {
        return; // wasmtime's default: no sockets at all.
    }
    let allowed: Arc<HashSet<SocketAddr>> = Arc::new(
        granted
            .iter()
            .flat_map(|g| g.addrs.iter().copied())
            .collect(),
    );
    builder
        .allow_tcp(true)
        .allow_udp(false)
        // Grants are resolved to IP addresses when the config loads; name
        // lookups from the plugin would be a channel out (DNS) for nothing.
        .allow_ip_name_lookup(false)
        .socket_addr_check(move |addr, use_| {
            let ok = permitted(&allowed, addr, use_);
            if !ok {
                tracing::debug!(%addr, ?use_, "socket use denied");
            }
            Box::pin(async move { ok })
        });
}

fn permitted(allowed: &HashSet<SocketAddr>, addr: SocketAddr, use_: SocketAddrUse) -> bool {
    match use_ {
        SocketAddrUse::TcpConnect => allowed.contains(&addr),
        // The implicit bind before a connect.
        SocketAddrUse::TcpBind => addr.ip().is_unspecified() && addr.port() == 0,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_connects_to_granted_addresses() {
        let allowed: HashSet<SocketAddr> = ["127.0.0.1:5432".parse().unwrap()].into();
        let ok: SocketAddr = "127.0.0.1:5432".parse().unwrap();
        let other: SocketAddr = "127.0.0.1:22".parse().unwrap();
        assert!(permitted(&allowed, ok, SocketAddrUse::TcpConnect));
        assert!(!permitted(&allowed, other, SocketAddrUse::TcpConnect));
        assert!(permitted(
            &allowed,
            "0.0.0.0:0".parse().unwrap(),
            SocketAddrUse::TcpBind
        ));
        assert!(!permitted(
            &allowed,
            "0.0.0.0:8080".parse().unwrap(),
            SocketAddrUse::TcpBind
        ));
        assert!(!permitted(&allowed, ok, SocketAddrUse::TcpListen));
        assert!(!permitted(&allowed, ok, SocketAddrUse::UdpSend));
    }

    #[test]
    fn resolves_and_matches_needs() {
        let g = resolve(&["127.0.0.1:6379".into()]).unwrap();
        assert_eq!(missing(&["127.0.0.1:6379".into()], &g), None);
        assert_eq!(missing(&["*".into()], &g), None);
        assert_eq!(
            missing(&["10.0.0.1:22".into()], &g).unwrap(),
            "address `10.0.0.1:22`"
        );
        assert!(resolve(&["no-port".into()]).is_err());
    }
}
