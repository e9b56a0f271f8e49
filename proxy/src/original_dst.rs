//! The destination a connection was addressed to before the kernel redirected it to us.

use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};

use nix::sys::socket::{getsockopt, sockopt};
use tokio::net::TcpStream;
use tracing::trace;

/// Where a downstream connection was going.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Destination {
    pub addr: SocketAddr,
    /// Whether `addr` is a destination restored from the kernel (NAT table, or the local
    /// address of a TPROXY socket) rather than simply the address the client connected to.
    /// Hand-off to another listener and ORIGINAL_DST clusters need a restored address:
    /// without one, "the original destination" is this proxy itself.
    pub restored: bool,
}

impl Destination {
    /// The socket's own local address, not restored.
    pub fn local(addr: SocketAddr) -> Destination {
        Destination {
            addr,
            restored: false,
        }
    }
}

/// The original destination of `stream`, accepted on a socket listening at `listening`:
/// under TPROXY (`transparent`) the local address is the original destination; otherwise
/// `SO_ORIGINAL_DST` / `IP6T_SO_ORIGINAL_DST` asks the NAT table (iptables/nft REDIRECT).
/// When nothing was redirected (no NAT entry, or a client connecting to the listener
/// itself), the local address is kept, unrestored: taking it as the original destination
/// would make ORIGINAL_DST clusters connect back to this listener, without end.
pub(crate) fn detect(
    stream: &TcpStream,
    local: SocketAddr,
    transparent: bool,
    listening: SocketAddr,
) -> Destination {
    if transparent {
        return if is_listener_itself(local, listening) {
            Destination::local(local)
        } else {
            Destination {
                addr: local,
                restored: true,
            }
        };
    }
    match nat_original_dst(stream, local) {
        // A conntrack entry without NAT reports the address we were reached at.
        Ok(addr) if canonical(addr) == canonical(local) => Destination::local(local),
        Ok(addr) => Destination {
            addr,
            restored: true,
        },
        Err(e) => {
            trace!(%local, error = %e, "no original destination from the NAT table");
            Destination::local(local)
        }
    }
}

/// Whether a connection reached at `local` was addressed to the listener at `listening`
/// (which may be a wildcard address) rather than redirected to it.
fn is_listener_itself(local: SocketAddr, listening: SocketAddr) -> bool {
    let (local, listening) = (canonical(local), canonical(listening));
    local.port() == listening.port()
        && (listening.ip().is_unspecified() || listening.ip() == local.ip())
}

fn nat_original_dst(stream: &TcpStream, local: SocketAddr) -> io::Result<SocketAddr> {
    let v4 = match local {
        SocketAddr::V4(_) => true,
        // A dual-stack socket carries IPv4 connections as v4-mapped addresses; their NAT
        // entries are IPv4 ones.
        SocketAddr::V6(a) => a.ip().to_ipv4_mapped().is_some(),
    };
    if v4 {
        let sin = getsockopt(stream, sockopt::OriginalDst)?;
        Ok(SocketAddr::V4(SocketAddrV4::new(
            Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr)),
            u16::from_be(sin.sin_port),
        )))
    } else {
        let sin6 = getsockopt(stream, sockopt::Ip6tOriginalDst)?;
        Ok(SocketAddr::V6(SocketAddrV6::new(
            Ipv6Addr::from(sin6.sin6_addr.s6_addr),
            u16::from_be(sin6.sin6_port),
            u32::from_be(sin6.sin6_flowinfo),
            sin6.sin6_scope_id,
        )))
    }
}

/// IPv4 addresses carried as v4-mapped IPv6 ones compare equal to their plain IPv4 form.
pub(crate) fn canonical(addr: SocketAddr) -> SocketAddr {
    SocketAddr::new(addr.ip().to_canonical(), addr.port())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_connection_to_the_listener_itself_is_not_redirected() {
        let on = |l: &str, a: &str| is_listener_itself(a.parse().unwrap(), l.parse().unwrap());
        assert!(on("0.0.0.0:15006", "10.0.0.5:15006"));
        assert!(on("127.0.0.1:15006", "127.0.0.1:15006"));
        assert!(on("[::]:15006", "[::ffff:10.0.0.5]:15006"));
        assert!(!on("0.0.0.0:15006", "10.0.0.5:8080"));
        assert!(!on("127.0.0.1:15006", "127.0.0.2:15006"));
    }
}
