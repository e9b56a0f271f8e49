//! Idle connections held open through a proxy, to weigh what each one costs it.
//!
//! A plain socket loop, not a load generator: it opens N keep-alive connections from the
//! client node, makes one request on each (so every proxy has connected upstream and moved
//! a response), and keeps them open while the proxy's memory is read.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use test_support::Netns;

use crate::harness::error::Error;

const IO_TIMEOUT: Duration = Duration::from_secs(10);

/// Opens `n` connections to `addr` from `ns`, each having completed one request.
pub fn open(ns: &Netns, addr: SocketAddr, n: u32) -> Result<Vec<TcpStream>, Error> {
    let row = format!("idle connections to {addr}");
    let opened = ns
        .in_ns(move || -> Result<Vec<TcpStream>, String> {
            let mut conns = Vec::with_capacity(n as usize);
            for i in 0..n {
                let s = TcpStream::connect_timeout(&addr, IO_TIMEOUT)
                    .map_err(|e| format!("connection {i}: connect: {e}"))?;
                one_request(&s).map_err(|e| format!("connection {i}: {e}"))?;
                conns.push(s);
            }
            Ok(conns)
        })
        .map_err(Error::harness(row.clone()))?;
    opened.map_err(|why| Error::Row { row, why })
}

/// GET / and read the whole response (headers, then Content-Length bytes).
fn one_request(mut s: &TcpStream) -> Result<(), String> {
    s.set_read_timeout(Some(IO_TIMEOUT))
        .and_then(|()| s.set_write_timeout(Some(IO_TIMEOUT)))
        .map_err(|e| format!("socket options: {e}"))?;
    s.write_all(b"GET / HTTP/1.1\r\nHost: upstream\r\n\r\n")
        .map_err(|e| format!("write: {e}"))?;
    let mut buf = Vec::with_capacity(2048);
    let mut chunk = [0u8; 4096];
    // Bounded: a response larger than 64 KiB is not the one the app sends.
    while buf.len() < 64 * 1024 {
        let n = s.read(&mut chunk).map_err(|e| format!("read: {e}"))?;
        if n == 0 {
            return Err("closed before the response was complete".into());
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(end) = find(&buf, b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
            if !head.starts_with("http/1.1 200") {
                return Err(format!(
                    "unexpected response: {}",
                    head.lines().next().unwrap_or("")
                ));
            }
            let len: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse().ok())
                .ok_or("response without Content-Length")?;
            if buf.len() >= end + 4 + len {
                return Ok(());
            }
        }
    }
    Err("response larger than 64 KiB".into())
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}
