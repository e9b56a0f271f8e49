//! A TCP server that greets, echoes, and answers the client's FIN with a last word.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::{Log, ServerThread};
use crate::error::Error;
use crate::netns::Netns;

/// One accepted connection as the server saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Connection {
    /// The client's address: after a proxy, whoever the proxy made it look like.
    pub peer: SocketAddr,
    /// The address the client reached on this side (the original destination, if a proxy
    /// preserved it).
    pub local: SocketAddr,
    /// Bytes read from the client so far.
    pub received: u64,
    /// The client half-closed (FIN) and the server finished its side.
    pub finished: bool,
}

/// Runs inside a namespace until dropped. For each connection it writes `banner`, echoes
/// everything until the client's FIN, then writes `trailer` and closes: a `trailer` that
/// arrives at the client shows the FIN was forwarded without closing the return direction.
pub struct TcpServer {
    thread: ServerThread,
    log: Arc<Log<Connection>>,
}

impl TcpServer {
    /// A plain echo server on `addr` inside `ns` (port 0 picks a free port).
    ///
    /// # Panics
    /// When `addr` cannot be bound inside `ns`.
    pub fn echo(ns: &Netns, addr: SocketAddr) -> TcpServer {
        TcpServer::hello(ns, addr, b"", b"")
    }

    /// An echo server that speaks first with `banner` and last with `trailer`.
    ///
    /// # Panics
    /// When `addr` cannot be bound inside `ns`.
    pub fn hello(ns: &Netns, addr: SocketAddr, banner: &[u8], trailer: &[u8]) -> TcpServer {
        let log = Log::new();
        let banner: Arc<[u8]> = banner.into();
        let trailer: Arc<[u8]> = trailer.into();
        let conns = log.clone();
        let thread = ServerThread::start(ns, addr, move |stream, peer, local| {
            let log = conns.clone();
            let banner = banner.clone();
            let trailer = trailer.clone();
            async move {
                let index = log.push(Connection {
                    peer,
                    local,
                    received: 0,
                    finished: false,
                });
                if let Err(e) = serve(stream, &banner, &trailer, &log, index).await {
                    tracing::debug!(%peer, %local, "connection ended: {e}");
                }
            }
        });
        TcpServer { thread, log }
    }

    /// The bound address (with the real port when 0 was asked for).
    pub fn addr(&self) -> SocketAddr {
        self.thread.addr
    }

    /// Every connection accepted so far, in order.
    pub fn connections(&self) -> Vec<Connection> {
        self.log.snapshot()
    }

    /// Waits until `n` connections have finished (client FIN seen, trailer sent), at most
    /// `timeout`; returns all connections.
    pub fn wait_for_connections(
        &self,
        n: usize,
        timeout: Duration,
    ) -> Result<Vec<Connection>, Error> {
        self.log
            .wait_for(n, timeout, |c| c.finished)
            .map_err(|seen| Error::TooFew {
                what: "finished connections",
                addr: self.addr(),
                want: n,
                seen,
                waited: timeout,
            })
    }
}

async fn serve(
    mut stream: TcpStream,
    banner: &[u8],
    trailer: &[u8],
    log: &Log<Connection>,
    index: usize,
) -> std::io::Result<()> {
    stream.write_all(banner).await?;
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        log.update(index, |c| c.received += n as u64);
        stream.write_all(&buf[..n]).await?;
    }
    stream.write_all(trailer).await?;
    stream.shutdown().await?;
    log.update(index, |c| c.finished = true);
    Ok(())
}
