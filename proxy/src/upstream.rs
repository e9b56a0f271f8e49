//! Opening the upstream connection of a proxied connection.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use nix::sys::socket::{setsockopt, sockopt};
use tokio::net::{TcpSocket, TcpStream};
use tracing::trace;

use crate::cluster::Target;
use crate::options::Keepalive;

#[derive(Debug, thiserror::Error)]
pub(crate) enum ConnectError {
    #[error("resolving {host}:{port}: {source}")]
    Resolve {
        host: Arc<str>,
        port: u16,
        #[source]
        source: io::Error,
    },
    #[error("{host}:{port} resolved to no address")]
    Unresolved { host: Arc<str>, port: u16 },
    #[error("binding the upstream source address {address}: {source}")]
    Bind {
        address: SocketAddr,
        #[source]
        source: io::Error,
    },
    #[error("connecting to {target}: {source}")]
    Connect {
        target: SocketAddr,
        #[source]
        source: io::Error,
    },
    #[error("connecting to {target}: no answer within {timeout:?}")]
    Timeout {
        target: SocketAddr,
        timeout: Duration,
    },
}

/// The address to connect to. DNS endpoints are looked up at connect time and the first
/// answer is used.
pub(crate) async fn resolve(target: &Target) -> Result<SocketAddr, ConnectError> {
    match target {
        Target::Socket(a) => Ok(*a),
        Target::Dns { host, port } => {
            let mut addrs = tokio::net::lookup_host((&**host, *port))
                .await
                .map_err(|source| ConnectError::Resolve {
                    host: host.clone(),
                    port: *port,
                    source,
                })?;
            addrs.next().ok_or_else(|| ConnectError::Unresolved {
                host: host.clone(),
                port: *port,
            })
        }
    }
}

/// Connects to `target` within `timeout`, from `bind` when given (Istio's inbound
/// passthrough uses 127.0.0.6 so its own capture rules let the connection through).
pub(crate) async fn connect(
    target: SocketAddr,
    bind: Option<SocketAddr>,
    timeout: Duration,
    keepalive: Option<Keepalive>,
) -> Result<TcpStream, ConnectError> {
    let connect_err = |source| ConnectError::Connect { target, source };
    let socket = if target.is_ipv4() {
        TcpSocket::new_v4()
    } else {
        TcpSocket::new_v6()
    }
    .map_err(connect_err)?;
    crate::socket::tune(&socket, keepalive).map_err(connect_err)?;
    if let Some(address) = bind {
        bind_source(&socket, address).map_err(|source| ConnectError::Bind { address, source })?;
    }
    match tokio::time::timeout(timeout, socket.connect(target)).await {
        Ok(Ok(stream)) => Ok(stream),
        Ok(Err(source)) => Err(ConnectError::Connect { target, source }),
        Err(_) => Err(ConnectError::Timeout { target, timeout }),
    }
}

fn bind_source(socket: &TcpSocket, address: SocketAddr) -> io::Result<()> {
    if address.port() == 0 {
        // Without this the kernel reserves an ephemeral port at bind time, not knowing the
        // destination, and one source address runs out of ports after ~28k connections in
        // total instead of per destination.
        setsockopt(socket, sockopt::IpBindAddressNoPort, &true)?;
    }
    match socket.bind(address) {
        // An address not (yet) configured on this host: only IP_FREEBIND lets us use it.
        Err(e) if e.raw_os_error() == Some(nix::libc::EADDRNOTAVAIL) => {
            trace!(%address, "source address not local, binding with IP_FREEBIND");
            let sock = socket2::SockRef::from(socket);
            if address.is_ipv4() {
                sock.set_freebind_v4(true)?;
            } else {
                sock.set_freebind_v6(true)?;
            }
            socket.bind(address)
        }
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_source_address_not_on_this_host_is_bound_with_freebind() {
        // TEST-NET-1 is never configured here; binding sends no packet anywhere.
        let source: SocketAddr = "192.0.2.1:0".parse().unwrap();
        let plain = TcpSocket::new_v4().unwrap();
        let e = plain.bind(source).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(nix::libc::EADDRNOTAVAIL));
        let socket = TcpSocket::new_v4().unwrap();
        bind_source(&socket, source).unwrap();
        assert_eq!(socket.local_addr().unwrap().ip(), source.ip());
    }

    #[test]
    fn a_local_source_address_needs_no_freebind() {
        let socket = TcpSocket::new_v4().unwrap();
        bind_source(&socket, "127.0.0.6:0".parse().unwrap()).unwrap();
        let freebind = socket2::SockRef::from(&socket).freebind_v4().unwrap();
        assert!(!freebind);
    }
}
