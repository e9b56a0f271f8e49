//! Clients that connect from inside a namespace: readiness probes and one-shot exchanges.

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::error::Error;
use crate::netns::Netns;

/// Pause between connection attempts while waiting for a listener.
const RETRY: Duration = Duration::from_millis(20);

/// Waits until something accepts TCP connections on `addr`, connecting from inside `ns`.
pub fn wait_for_tcp(ns: &Netns, addr: SocketAddr, timeout: Duration) -> Result<(), Error> {
    let never = AtomicBool::new(false);
    match ns.in_ns(move || probe_until(addr, timeout, &never))? {
        true => Ok(()),
        false => Err(Error::NotReady {
            ns: ns.name().to_string(),
            addr,
            waited: timeout,
        }),
    }
}

/// Connects to `addr` over and over until one attempt succeeds (`true`), `timeout` passes
/// or `give_up` is set (`false`). Must run on a thread inside the namespace.
pub(crate) fn probe_until(addr: SocketAddr, timeout: Duration, give_up: &AtomicBool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        let now = Instant::now();
        if now >= deadline || give_up.load(Ordering::Relaxed) {
            return false;
        }
        let attempt = (deadline - now).min(Duration::from_secs(1));
        if TcpStream::connect_timeout(&addr, attempt).is_ok() {
            return true;
        }
        std::thread::sleep(RETRY);
    }
}

/// A TCP connection to `addr` made inside `ns`; usable from any thread afterwards.
/// Reads and writes on it time out after `timeout`.
pub fn tcp_connect(ns: &Netns, addr: SocketAddr, timeout: Duration) -> Result<TcpStream, Error> {
    let name = ns.name().to_string();
    ns.in_ns(move || {
        let s = TcpStream::connect_timeout(&addr, timeout)?;
        s.set_read_timeout(Some(timeout))?;
        s.set_write_timeout(Some(timeout))?;
        Ok(s)
    })?
    .map_err(|source| Error::Connect {
        ns: name,
        addr,
        source,
    })
}

/// What one connection of [`tcp_exchange`] saw.
#[derive(Debug, Clone)]
pub struct Exchange {
    /// The client's own address, as its namespace assigned it.
    pub local: SocketAddr,
    /// Everything received until the other side closed.
    pub received: Vec<u8>,
}

impl Exchange {
    pub fn received_str(&self) -> String {
        String::from_utf8_lossy(&self.received).into_owned()
    }
}

/// Connects from inside `ns`, sends `payload`, half-closes (FIN), and reads until the other
/// side closes, all within `timeout`. Against an echo server the reply is the payload; a
/// server that writes after seeing the FIN proves half-close passed through.
pub fn tcp_exchange(
    ns: &Netns,
    addr: SocketAddr,
    payload: &[u8],
    timeout: Duration,
) -> Result<Exchange, Error> {
    let deadline = Instant::now() + timeout;
    let mut s = tcp_connect(ns, addr, timeout)?;
    let failed = |source| Error::Exchange {
        ns: ns.name().to_string(),
        addr,
        source,
    };
    let local = s.local_addr().map_err(failed)?;
    s.write_all(payload).map_err(failed)?;
    s.shutdown(Shutdown::Write).map_err(failed)?;
    let received = read_to_eof(&mut s, deadline).map_err(failed)?;
    Ok(Exchange { local, received })
}

/// Reads until end of stream, failing with `TimedOut` at `deadline`.
pub fn read_to_eof(s: &mut TcpStream, deadline: Instant) -> std::io::Result<Vec<u8>> {
    let mut out = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(std::io::Error::new(
                ErrorKind::TimedOut,
                format!("no end of stream after {} bytes", out.len()),
            ));
        }
        s.set_read_timeout(Some(left))?;
        match s.read(&mut buf) {
            Ok(0) => return Ok(out),
            Ok(n) => out.extend_from_slice(&buf[..n]),
            // A read timeout (EAGAIN on Linux) just means: look at the deadline again.
            Err(e)
                if matches!(
                    e.kind(),
                    ErrorKind::Interrupted | ErrorKind::WouldBlock | ErrorKind::TimedOut
                ) => {}
            Err(e) => return Err(e),
        }
    }
}
