//! The process shell: `Proxy::run` until SIGTERM, then a drain, then a clean return.
//!
//! Alone in its test binary: the signal goes to the whole process.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{echo_server, listener, snapshot, static_cluster};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use vm_proxy::{Options, Proxy};

/// Fixed addresses on a loopback IP of their own: `run` cannot report kernel-chosen ports.
const ADMIN: &str = "127.0.0.77:15000";
const LISTENER: &str = "127.0.0.77:15001";

/// Polls `f` every 10 ms for at most 10 s.
fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !f() {
        assert!(Instant::now() < deadline, "{what}: not within 10 s");
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn ready(admin: SocketAddr) -> Option<String> {
    let mut s = TcpStream::connect(admin).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    s.write_all(b"GET /ready HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
        .ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    out.split_once("\r\n\r\n").map(|(_, body)| body.to_owned())
}

fn echo_once(s: &mut TcpStream, msg: &[u8]) -> Vec<u8> {
    s.write_all(msg).unwrap();
    let mut got = vec![0u8; msg.len()];
    s.read_exact(&mut got).unwrap();
    got
}

#[test]
fn sigterm_drains_open_connections_and_returns() {
    let upstream = tokio::runtime::Runtime::new().unwrap();
    let up = upstream.block_on(echo_server());
    let admin: SocketAddr = ADMIN.parse().unwrap();
    let mut l = listener("l", "c");
    l.address = LISTENER.parse().unwrap();
    let mut snap = snapshot(vec![l], vec![static_cluster("c", &[up])]);
    snap.admin = Some(admin);
    let options = Options {
        drain_timeout: Duration::from_secs(30),
        worker_threads: Some(2),
        ..Options::default()
    };
    let dump = Arc::new(|| serde_json::json!({}));
    let run = std::thread::spawn(move || Proxy::run(snap, dump, options));

    eventually("LIVE", || ready(admin).as_deref() == Some("LIVE\n"));
    let mut open = TcpStream::connect(LISTENER).unwrap();
    open.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    assert_eq!(echo_once(&mut open, b"before"), b"before");

    kill(Pid::this(), Signal::SIGTERM).unwrap();
    eventually("listener closed", || TcpStream::connect(LISTENER).is_err());
    assert_eq!(ready(admin).as_deref(), Some("DRAINING\n"));
    // The open connection carries on through the drain...
    assert_eq!(echo_once(&mut open, b"during"), b"during");
    assert!(!run.is_finished());
    // ...and once it ends, so does the drain, long before its 30 s.
    drop(open);
    eventually("run returned", || run.is_finished());
    run.join().unwrap().expect("run returns Ok");
    assert!(TcpStream::connect(admin).is_err(), "admin stopped");
}
