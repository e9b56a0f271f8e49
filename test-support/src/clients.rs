//! Real client programs we did not write, run inside a namespace with a hard time limit
//! (their own, and [`Netns::run_timeout`]'s as a backstop).

use std::process::Output;
use std::time::Duration;

use crate::error::Error;
use crate::netns::Netns;

/// Grace beyond a client's own time limit before it is killed.
const BACKSTOP: Duration = Duration::from_secs(5);

/// `curl -sS --max-time T ARGS...` inside `ns`; exit code and output as curl left them
/// (code 7: connection refused, 28: timed out, 52: empty reply).
pub fn curl(ns: &Netns, args: &[&str], timeout: Duration) -> Result<Output, Error> {
    let secs = whole_secs(timeout).to_string();
    let mut argv = vec!["curl", "-sS", "--max-time", &secs];
    argv.extend_from_slice(args);
    ns.run_timeout(&argv, timeout + BACKSTOP)
}

/// `dig +time=T +tries=1 ARGS...` inside `ns` (one try, so `timeout` bounds it).
pub fn dig(ns: &Netns, args: &[&str], timeout: Duration) -> Result<Output, Error> {
    let time = format!("+time={}", whole_secs(timeout));
    let mut argv = vec!["dig", &time, "+tries=1"];
    argv.extend_from_slice(args);
    ns.run_timeout(&argv, timeout + BACKSTOP)
}

/// Sends `input` with OpenBSD `nc -N -w T HOST PORT` from inside `ns`, half-closing after
/// it, and returns what came back before the server closed.
pub fn nc(
    ns: &Netns,
    host: &str,
    port: u16,
    input: &[u8],
    timeout: Duration,
) -> Result<Output, Error> {
    let secs = whole_secs(timeout).to_string();
    let port = port.to_string();
    ns.run_timeout_input(
        &["nc", "-N", "-w", &secs, host, &port],
        input,
        timeout + BACKSTOP,
    )
}

/// `socat ARGS...` inside `ns` with `input` on its stdin, e.g.
/// `["-t", "2", "-", "TCP:198.18.0.3:80"]`.
pub fn socat(ns: &Netns, args: &[&str], input: &[u8], timeout: Duration) -> Result<Output, Error> {
    let mut argv = vec!["socat"];
    argv.extend_from_slice(args);
    ns.run_timeout_input(&argv, input, timeout)
}

/// Client tools count in whole seconds; never ask one for zero (which means "no limit").
fn whole_secs(d: Duration) -> u64 {
    d.as_secs().max(1)
}
