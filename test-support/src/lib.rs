//! Test-only support for vm-proxy: real network namespaces, real processes, real peers.
//!
//! Everything created here is named uniquely per test and removed on drop, so a failing or
//! panicking test leaves nothing behind on the machine. Traffic only ever goes to loopback
//! or to addresses inside namespaces created here (198.18.0.0/15 and fd00::/8).

pub mod client;
pub mod clients;
pub mod error;
pub mod netns;
pub mod peers;
pub mod process;
pub mod require;
pub mod rules;
pub mod topology;

pub use client::{Exchange, read_to_eof, tcp_connect, tcp_exchange, wait_for_tcp};
pub use error::Error;
pub use netns::{Netns, run_ok, unique_name};
pub use peers::http::{HttpServer, Request};
pub use peers::tcp::{Connection, TcpServer};
pub use process::{Process, ProcessBuilder};
pub use require::{require_root, require_tools};
pub use rules::{ip6tables_save, iptables_save, nft_ruleset};
pub use topology::{Node, Topology, TopologyBuilder, VmAndMesh, service_ip, service_ipv6};
