//! vm-proxy's own configuration model: plain Rust values, validated when decoded.
//!
//! A [`Snapshot`] is immutable; the proxy swaps whole snapshots atomically and each connection
//! keeps the snapshot it was accepted under.

mod cluster;
mod http;
mod limits;
mod listener;
mod outlier;
mod rbac;
mod route;
mod telemetry;
mod tls;

pub use cluster::*;
pub use http::*;
pub use limits::*;
pub use listener::*;
pub use outlier::*;
pub use rbac::*;
pub use route::*;
pub use telemetry::*;
pub use tls::*;

use std::collections::HashMap;
use std::sync::Arc;

/// One complete, consistent configuration.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    pub listeners: Vec<Arc<Listener>>,
    pub clusters: HashMap<Arc<str>, Arc<Cluster>>,
    /// Route configurations by name (RDS, and those inline in listeners' HCMs are not here).
    pub routes: HashMap<Arc<str>, Arc<RouteConfig>>,
    /// Where the admin server listens, when the bootstrap asks for one.
    pub admin: Option<std::net::SocketAddr>,
}
