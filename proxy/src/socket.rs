//! Socket options shared by downstream (accepted) and upstream sockets.

use std::io;
use std::os::fd::AsFd;

use socket2::{SockRef, TcpKeepalive};

use crate::options::Keepalive;

/// `TCP_NODELAY` (a proxy must not add Nagle delay on top of the application's own) and the
/// configured keepalive.
pub(crate) fn tune<S: AsFd>(socket: &S, keepalive: Option<Keepalive>) -> io::Result<()> {
    let sock = SockRef::from(socket);
    sock.set_tcp_nodelay(true)?;
    if let Some(k) = keepalive {
        let params = TcpKeepalive::new()
            .with_time(k.time)
            .with_interval(k.interval)
            .with_retries(k.retries);
        sock.set_tcp_keepalive(&params)?;
    }
    Ok(())
}
