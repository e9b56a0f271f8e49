//! The harness's command line and what each mode measures.

use std::path::PathBuf;

use clap::Parser;

/// Benchmarks vm-proxy as a transparent L4 proxy under capture rules against no proxy,
/// haproxy (`mode tcp`) and nginx (`stream`), in network namespaces, in one run.
#[derive(Debug, Parser)]
#[command(name = "harness")]
pub struct Options {
    /// Short run (under 5 minutes): fewer rows, shorter rows, 1k idle connections.
    #[arg(long, conflicts_with = "tiny")]
    pub quick: bool,
    /// Seconds per row, one repetition: checks that every row produces a number (CI smoke
    /// test); its figures mean nothing.
    #[arg(long)]
    pub tiny: bool,
    /// Remove leftovers of earlier runs (namespaces named `vmpb-*`, the processes in them,
    /// /tmp/vmpb-<pid>) and exit.
    #[arg(long)]
    pub clean: bool,
    /// The vm-proxy binary to measure; default: `cargo build --release -p vm-proxy` and
    /// target/release/vm-proxy.
    #[arg(long, value_name = "PATH")]
    pub vm_proxy: Option<PathBuf>,
    /// Where the JSON results go; default: target/bench/harness.json in the workspace.
    #[arg(long, value_name = "PATH")]
    pub json: Option<PathBuf>,
}

/// What one mode runs.
#[derive(Debug, Clone)]
pub struct Plan {
    pub name: &'static str,
    /// Every path is measured this many times, paths interleaved within a repetition.
    pub reps: u32,
    /// Fixed-rate rows: (total requests per second, connections).
    pub latency_rows: Vec<(u32, u32)>,
    pub latency_secs: u32,
    /// Closed-loop saturation with wrk: connections and seconds.
    pub saturation_conns: u32,
    pub saturation_secs: u32,
    /// iperf3 rows: parallel streams, and seconds per row.
    pub iperf_streams: Vec<u32>,
    pub iperf_secs: u32,
    /// Idle connections held open through the proxy for the memory-per-connection row.
    pub idle_conns: u32,
}

impl Options {
    pub fn plan(&self) -> Plan {
        if self.tiny {
            Plan {
                name: "tiny",
                reps: 1,
                latency_rows: vec![(1000, 4)],
                latency_secs: 2,
                saturation_conns: 16,
                saturation_secs: 2,
                iperf_streams: vec![1, 8],
                iperf_secs: 1,
                idle_conns: 100,
            }
        } else if self.quick {
            Plan {
                name: "quick",
                reps: 2,
                latency_rows: vec![(1000, 4), (1000, 64)],
                latency_secs: 6,
                saturation_conns: 16,
                saturation_secs: 6,
                iperf_streams: vec![1, 8],
                iperf_secs: 3,
                idle_conns: 1000,
            }
        } else {
            Plan {
                name: "full",
                reps: 2,
                latency_rows: vec![
                    (1000, 1),
                    (1000, 2),
                    (1000, 4),
                    (1000, 8),
                    (1000, 16),
                    (1000, 32),
                    (1000, 64),
                    (4000, 16),
                    (4000, 64),
                ],
                latency_secs: 12,
                saturation_conns: 16,
                saturation_secs: 15,
                iperf_streams: vec![1, 8],
                iperf_secs: 8,
                idle_conns: 10_000,
            }
        }
    }
}

impl Plan {
    /// Rough wall time of the whole run, for the banner.
    pub fn estimate_secs(&self, paths: u32) -> u32 {
        let per_path = self.latency_rows.len() as u32 * (self.latency_secs + 1)
            + self.saturation_secs
            + 1
            + self.iperf_streams.len() as u32 * (self.iperf_secs + 1)
            + 3 * 2
            + self.idle_conns / 1000
            + 3;
        self.reps * paths * per_path
    }
}
