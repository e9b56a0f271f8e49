//! Failures of harness operations that a test may want to assert on (a peer that does not
//! answer, a process that does not exit), as opposed to set-up failures, which panic.

use std::net::SocketAddr;
use std::time::Duration;

/// What went wrong, naming the namespace, peer, program or file involved.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot open namespace file {path}: {source}")]
    OpenNetns {
        path: String,
        source: std::io::Error,
    },
    #[error("cannot enter network namespace {ns}: {source}")]
    EnterNetns { ns: String, source: nix::Error },
    #[error("connect from namespace {ns} to {addr} failed: {source}")]
    Connect {
        ns: String,
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("nothing accepted connections on {addr} in namespace {ns} within {waited:?}")]
    NotReady {
        ns: String,
        addr: SocketAddr,
        waited: Duration,
    },
    #[error("talking to {addr} from namespace {ns} failed: {source}")]
    Exchange {
        ns: String,
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot start {program} in namespace {ns}: {source}")]
    Spawn {
        ns: String,
        program: String,
        source: std::io::Error,
    },
    #[error("waiting for {program} (pid {pid}) failed: {source}")]
    Wait {
        program: String,
        pid: u32,
        source: std::io::Error,
    },
    #[error("{program} (pid {pid}) did not exit within {waited:?}")]
    Timeout {
        program: String,
        pid: u32,
        waited: Duration,
    },
    #[error("{program} exited ({status}) before it was ready\n{logs}")]
    ExitedEarly {
        program: String,
        status: std::process::ExitStatus,
        logs: String,
    },
    #[error("cannot signal {program} (pid {pid}): {source}")]
    Signal {
        program: String,
        pid: u32,
        source: nix::Error,
    },
    #[error("expected {want} {what} on {addr}, saw {seen} within {waited:?}")]
    TooFew {
        what: &'static str,
        addr: SocketAddr,
        want: usize,
        seen: usize,
        waited: Duration,
    },
}
