//! Test-only support for vm-proxy: real network namespaces, real processes, real peers.
//!
//! Everything created here is named uniquely per test and removed on drop, so a failing or
//! panicking test leaves nothing behind on the machine. Traffic only ever goes to loopback
//! or to addresses inside namespaces created here (198.18.0.0/15 and fd00::/8).
//!
//! The shape of an end-to-end test: capture rules in the VM namespace, a proxy running as
//! uid 1337 (excluded from capture), an app connecting to a service address, and a mesh
//! peer that records who connected. Here `socat` stands in for the proxy:
//!
//! ```
//! use std::time::Duration;
//! use test_support::{TcpServer, Topology, iptables_save, service_ip, tcp_exchange};
//!
//! let t = Topology::vm_and_mesh();
//! let upstream = TcpServer::hello(&t.mesh, t.mesh.addr(8080), b"hi ", b" bye");
//! let rules = "*nat\n\
//!     -A OUTPUT -p tcp -m owner --uid-owner 1337 -j RETURN\n\
//!     -A OUTPUT -p tcp -d 198.19.0.0/16 -j REDIRECT --to-ports 15001\n\
//!     COMMIT\n";
//! let out = t.vm.run_timeout_input(&["iptables-restore"], rules.as_bytes(), Duration::from_secs(5))?;
//! assert!(out.status.success(), "{out:?}");
//! let before = iptables_save(&t.vm);
//!
//! let mut proxy = t.vm
//!     .process("socat")
//!     .args(["TCP-LISTEN:15001,reuseaddr,fork", &format!("TCP:{}", upstream.addr())])
//!     .user(1337, 1337)
//!     .spawn();
//! proxy.wait_for_tcp("127.0.0.1:15001".parse()?, Duration::from_secs(5))?;
//!
//! let app = tcp_exchange(&t.vm, (service_ip(10), 80).into(), b"there", Duration::from_secs(5))?;
//! assert_eq!(app.received_str(), "hi there bye");
//! let seen = upstream.wait_for_connections(1, Duration::from_secs(5))?;
//! assert_eq!(seen[0].peer.ip(), t.vm.ipv4());
//! assert_eq!(iptables_save(&t.vm), before, "counters moved, rules did not");
//! proxy.terminate(Duration::from_secs(5))?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub mod ads_server;
pub mod ca;
pub mod client;
pub mod clients;
pub mod error;
pub mod gobuild;
pub mod istioctl;
pub mod istiod;
pub mod netns;
pub mod peers;
pub mod pki;
pub mod process;
pub mod require;
pub mod rules;
pub mod tempdir;
pub mod topology;

pub use ads_server::{AdsServer, Opened, Received};
pub use ca::{CaStats, Fault, TestCa, TestCaOptions};
pub use client::{Exchange, read_to_eof, tcp_connect, tcp_exchange, wait_for_tcp};
pub use error::Error;
pub use gobuild::{GoBinaries, go_binaries};
pub use istioctl::istioctl;
pub use istiod::{IstiodBuilder, IstiodError, IstiodServer};
pub use netns::{Netns, run_ok, unique_name};
pub use peers::http::{HttpServer, Request};
pub use peers::tcp::{Connection, TcpServer};
pub use peers::udp::{Datagram, UdpServer, udp_exchange};
pub use pki::{IssuedCert, LeafSpec, TestKey, TestPki};
pub use process::{Process, ProcessBuilder};
pub use require::{require_root, require_tools};
pub use rules::{ip6tables_save, iptables_save, nft_ruleset};
pub use tempdir::TempDir;
pub use topology::{Node, Topology, TopologyBuilder, VmAndMesh, service_ip, service_ipv6};
