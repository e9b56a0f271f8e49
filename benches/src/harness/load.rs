//! The load generators from Debian, run in the client node pinned to [`CLIENT_CPU`]:
//! h2load for fixed-rate latency, wrk for saturation, iperf3 for bulk TCP.

use std::path::Path;
use std::time::{Duration, Instant};

use test_support::Netns;

use crate::harness::error::Error;
use crate::harness::net::CLIENT_CPU;

/// Latency percentiles of a fixed-rate row, in microseconds, and what was achieved.
#[derive(Debug, Clone, Copy)]
pub struct Latency {
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub p999: f64,
    pub rps: f64,
    pub failed: u64,
}

/// `h2load --h1` at `rate` requests/s spread over `conns` keep-alive connections for about
/// `secs` seconds. Each connection sends at rate/conns on its own timer; connections start
/// 1 ms apart (`-r 1 --rate-period 1ms`) so their timers do not fire together (fixed-rate
/// load that bursts inflates p50, see benchmarking.md). Percentiles come from h2load's
/// per-request log, without the first 10 % of requests (connection start-up).
pub fn h2load(
    ns: &Netns,
    url: &str,
    rate: u32,
    conns: u32,
    secs: u32,
    log: &Path,
) -> Result<Latency, Error> {
    let per_conn = f64::from(rate) / f64::from(conns);
    let total = u64::from(rate) * u64::from(secs);
    let log_s = log.to_string_lossy();
    let argv = [
        "taskset",
        "-c",
        CLIENT_CPU,
        "h2load",
        "--h1",
        "-t",
        "1",
        "-c",
        &conns.to_string(),
        "--rps",
        &format!("{per_conn}"),
        "-n",
        &total.to_string(),
        "-r",
        "1",
        "--rate-period",
        "1ms",
        "--log-file",
        &log_s,
        url,
    ];
    let started = Instant::now();
    let out = run_tool(ns, "h2load", &argv, secs * 3 + 20)?;
    let wall = started.elapsed().as_secs_f64();
    let summary = requests_line(&out);
    let text = std::fs::read_to_string(log).map_err(Error::io(log))?;
    let mut rows: Vec<(u64, u32, f64)> = text
        .lines()
        .filter_map(|l| {
            let mut f = l.split('\t');
            Some((
                f.next()?.parse().ok()?,
                f.next()?.parse().ok()?,
                f.next()?.parse().ok()?,
            ))
        })
        .collect();
    if rows.is_empty() {
        return Err(Error::Parse {
            program: "h2load".into(),
            why: format!("no requests in {} ({summary})", log.display()),
        });
    }
    rows.sort_by_key(|r| r.0);
    let bad = rows.iter().filter(|r| r.1 != 200).count() as u64;
    let skip = rows.len() / 10;
    let mut lat: Vec<f64> = rows[skip..].iter().map(|r| r.2).collect();
    lat.sort_by(f64::total_cmp);
    let failed = summary.failed + bad;
    Ok(Latency {
        p50: percentile(&lat, 50.0),
        p90: percentile(&lat, 90.0),
        p99: percentile(&lat, 99.0),
        p999: percentile(&lat, 99.9),
        rps: rows.len() as f64 / wall,
        failed,
    })
}

/// Requests per second of `wrk -t1 -cN -dS` (closed loop: as fast as it goes), and how many
/// requests failed (socket errors or non-2xx).
pub fn wrk(ns: &Netns, url: &str, conns: u32, secs: u32) -> Result<(f64, u64), Error> {
    let argv = [
        "taskset",
        "-c",
        CLIENT_CPU,
        "wrk",
        "-t1",
        &format!("-c{conns}"),
        &format!("-d{secs}s"),
        url,
    ];
    let out = run_tool(ns, "wrk", &argv, secs + 20)?;
    let rps = out
        .lines()
        .find_map(|l| l.trim().strip_prefix("Requests/sec:"))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .ok_or_else(|| Error::Parse {
            program: "wrk".into(),
            why: format!("no Requests/sec in: {out}"),
        })?;
    let mut errors = 0;
    for l in out.lines().map(str::trim) {
        if let Some(n) = l.strip_prefix("Non-2xx or 3xx responses:") {
            errors += n.trim().parse::<u64>().unwrap_or(0);
        }
        if let Some(list) = l.strip_prefix("Socket errors:") {
            errors += list
                .split(',')
                .filter_map(|kv| kv.split_whitespace().nth(1))
                .filter_map(|n| n.parse::<u64>().ok())
                .sum::<u64>();
        }
    }
    Ok((rps, errors))
}

/// Gbit/s received by the server in `iperf3 -c -P streams -t secs`.
pub fn iperf3(ns: &Netns, server: &str, port: u16, streams: u32, secs: u32) -> Result<f64, Error> {
    let argv = [
        "taskset",
        "-c",
        CLIENT_CPU,
        "iperf3",
        "-c",
        server,
        "-p",
        &port.to_string(),
        "-P",
        &streams.to_string(),
        "-t",
        &secs.to_string(),
        "-J",
    ];
    let out = run_tool(ns, "iperf3", &argv, secs + 20)?;
    let v: serde_json::Value = serde_json::from_str(&out).map_err(|e| Error::Parse {
        program: "iperf3".into(),
        why: e.to_string(),
    })?;
    if let Some(e) = v.get("error").and_then(|e| e.as_str()) {
        return Err(Error::Parse {
            program: "iperf3".into(),
            why: e.to_string(),
        });
    }
    v.pointer("/end/sum_received/bits_per_second")
        .and_then(serde_json::Value::as_f64)
        .map(|bps| bps / 1e9)
        .ok_or_else(|| Error::Parse {
            program: "iperf3".into(),
            why: "no end.sum_received.bits_per_second".into(),
        })
}

/// Nearest-rank percentile of sorted values.
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    // The epsilon keeps 99.9 % of 1000 at rank 999 despite binary floating point.
    let rank = ((p / 100.0) * sorted.len() as f64 - 1e-9).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

struct Summary {
    failed: u64,
    line: String,
}

impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.line)
    }
}

/// h2load's `requests: N total, N started, N done, N succeeded, N failed, N errored, N
/// timeout` line: failed, errored and timed-out requests all count as failures.
fn requests_line(out: &str) -> Summary {
    let line = out
        .lines()
        .find(|l| l.starts_with("requests:"))
        .unwrap_or_default()
        .to_string();
    let count = |what: &str| {
        line.split(',')
            .map(str::trim)
            .find(|p| p.ends_with(what))
            .and_then(|p| p.split_whitespace().next())
            .and_then(|n| n.parse::<u64>().ok())
            .unwrap_or(0)
    };
    Summary {
        failed: count("failed") + count("errored") + count("timeout"),
        line,
    }
}

fn run_tool(ns: &Netns, program: &str, argv: &[&str], timeout_secs: u32) -> Result<String, Error> {
    let out = ns
        .run_timeout(argv, Duration::from_secs(u64::from(timeout_secs)))
        .map_err(Error::harness(format!("{program} in {}", ns.name())))?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() {
        return Err(Error::Failed {
            program: format!("{program} in {}", ns.name()),
            status: out.status.to_string(),
            stderr: format!("{}{stdout}", String::from_utf8_lossy(&out.stderr)),
        });
    }
    Ok(stdout)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank() {
        let v: Vec<f64> = (1..=1000).map(f64::from).collect();
        assert_eq!(percentile(&v, 50.0), 500.0);
        assert_eq!(percentile(&v, 99.9), 999.0);
        assert_eq!(percentile(&v, 100.0), 1000.0);
        assert_eq!(percentile(&[7.0], 99.0), 7.0);
    }

    #[test]
    fn h2load_failures() {
        let s = requests_line(
            "x\nrequests: 100 total, 100 started, 97 done, 95 succeeded, 2 failed, 1 errored, 2 timeout\n",
        );
        assert_eq!(s.failed, 5);
    }
}
