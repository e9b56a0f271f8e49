//! A UDP echo server, for capture of datagrams (DNS on port 53, say).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::net::UdpSocket;

use super::{Log, ServerThread, retry_in_use};
use crate::error::Error;
use crate::netns::Netns;

/// One datagram as the server received it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Datagram {
    pub peer: SocketAddr,
    pub payload: Vec<u8>,
}

/// Sends every datagram back to its sender, recording it.
pub struct UdpServer {
    thread: ServerThread,
    log: Arc<Log<Datagram>>,
}

impl UdpServer {
    /// Echoes on UDP `addr` inside `ns` (port 0 picks a free port).
    ///
    /// # Panics
    /// When `addr` cannot be bound inside `ns`.
    pub fn echo(ns: &Netns, addr: SocketAddr) -> UdpServer {
        let log = Log::new();
        let datagrams = log.clone();
        let thread = ServerThread::run(
            ns,
            &format!("udp server {addr}"),
            move |bound, mut stopped| async move {
                let sock = match retry_in_use(addr, || UdpSocket::bind(addr)).await {
                    Ok(s) => s,
                    Err(e) => {
                        let _ = bound.send(Err(format!("cannot bind {addr}: {e}")));
                        return;
                    }
                };
                match sock.local_addr() {
                    Ok(a) => {
                        let _ = bound.send(Ok(a));
                    }
                    Err(e) => {
                        let _ = bound.send(Err(format!("no local address for {addr}: {e}")));
                        return;
                    }
                }
                let mut buf = vec![0u8; 64 * 1024];
                loop {
                    tokio::select! {
                        _ = &mut stopped => return,
                        got = sock.recv_from(&mut buf) => match got {
                            Ok((n, peer)) => {
                                datagrams.push(Datagram { peer, payload: buf[..n].to_vec() });
                                if let Err(e) = sock.send_to(&buf[..n], peer).await {
                                    tracing::debug!(%peer, "udp echo failed: {e}");
                                }
                            }
                            Err(e) => tracing::debug!(%addr, "udp receive failed: {e}"),
                        },
                    }
                }
            },
        );
        UdpServer { thread, log }
    }

    pub fn addr(&self) -> SocketAddr {
        self.thread.addr
    }

    /// Every datagram received so far, in order.
    pub fn datagrams(&self) -> Vec<Datagram> {
        self.log.snapshot()
    }

    /// Waits until `n` datagrams have arrived, at most `timeout`.
    pub fn wait_for_datagrams(&self, n: usize, timeout: Duration) -> Result<Vec<Datagram>, Error> {
        self.log
            .wait_for(n, timeout, |_| true)
            .map_err(|seen| Error::TooFew {
                what: "datagrams",
                addr: self.addr(),
                want: n,
                seen,
                waited: timeout,
            })
    }
}

/// Sends `payload` in one datagram from inside `ns` and returns the first reply, waiting at
/// most `timeout`.
pub fn udp_exchange(
    ns: &Netns,
    addr: SocketAddr,
    payload: &[u8],
    timeout: Duration,
) -> Result<Vec<u8>, Error> {
    let payload = payload.to_vec();
    let unspecified: SocketAddr = if addr.is_ipv4() {
        (std::net::Ipv4Addr::UNSPECIFIED, 0).into()
    } else {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let deadline = Instant::now() + timeout;
    ns.in_ns(move || {
        let sock = std::net::UdpSocket::bind(unspecified)?;
        sock.connect(addr)?;
        sock.send(&payload)?;
        let mut buf = vec![0u8; 64 * 1024];
        sock.set_read_timeout(Some(
            deadline
                .saturating_duration_since(Instant::now())
                .max(Duration::from_millis(1)),
        ))?;
        let n = sock.recv(&mut buf)?;
        buf.truncate(n);
        Ok(buf)
    })?
    .map_err(|source| Error::Exchange {
        ns: ns.name().to_string(),
        addr,
        source,
    })
}
