//! vm-proxy's own configuration model: plain Rust values, validated when decoded.
//!
//! A [`Snapshot`] is immutable; the proxy swaps whole snapshots atomically and each connection
//! keeps the snapshot it was accepted under.

mod cluster;
mod listener;
mod tls;

pub use cluster::*;
pub use listener::*;
pub use tls::*;

use std::collections::HashMap;
use std::sync::Arc;

/// One complete, consistent configuration.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    pub listeners: Vec<Arc<Listener>>,
    pub clusters: HashMap<Arc<str>, Arc<Cluster>>,
    /// Where the admin server listens, when the bootstrap asks for one.
    pub admin: Option<std::net::SocketAddr>,
}
