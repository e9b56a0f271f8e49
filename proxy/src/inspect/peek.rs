//! Looking at a connection's first bytes without taking them: whatever is peeked here is
//! still read, in full, by the filter that handles the connection.

use std::io;
use std::os::fd::AsRawFd;

use nix::sys::socket::{MsgFlags, recv};
use tokio::io::Interest;
use tokio::net::TcpStream;

/// First allocation; doubled whenever a peek fills it, up to the caller's limit.
const INITIAL: usize = 1024;

/// The bytes peeked so far from one connection.
#[derive(Debug, Default)]
pub(crate) struct Peeker {
    buf: Vec<u8>,
    len: usize,
    eof: bool,
}

impl Peeker {
    pub fn bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }

    /// Waits until more bytes than already seen are queued on `stream`, keeping at most
    /// `limit` of them. `Ok(false)`: no more will come (the client closed its side) or
    /// `limit` is reached.
    pub async fn more(&mut self, stream: &TcpStream, limit: usize) -> io::Result<bool> {
        if self.eof || self.len >= limit {
            return Ok(false);
        }
        if self.len == self.buf.len() {
            let grown = (self.buf.len() * 2).max(INITIAL).min(limit);
            self.buf.resize(grown, 0);
        }
        let have = self.len;
        loop {
            let ready = stream.ready(Interest::READABLE).await?;
            // A peek that finds nothing new must report WouldBlock so that tokio clears the
            // readiness and the next `ready` waits for new bytes instead of spinning on the
            // old ones. tokio only clears it if no event arrived since `ready`, so bytes
            // landing in between are not missed.
            let peeked = stream.try_io(Interest::READABLE, || {
                let n = recv(
                    stream.as_raw_fd(),
                    &mut self.buf,
                    MsgFlags::MSG_PEEK | MsgFlags::MSG_DONTWAIT,
                )
                .map_err(io::Error::from)?;
                if n > have {
                    Ok(Some(n))
                } else if ready.is_read_closed() {
                    Ok(None)
                } else {
                    Err(io::ErrorKind::WouldBlock.into())
                }
            });
            match peeked {
                Ok(Some(n)) => {
                    self.len = n;
                    return Ok(true);
                }
                Ok(None) => {
                    self.eof = true;
                    return Ok(false);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Err(e),
            }
        }
    }
}
