//! vm-proxy's data path and process shell: transparent L4 proxying driven by an
//! [`xds_client::model::Snapshot`].
//!
//! One connection reads top to bottom through the modules:
//! `listener` accepts → `original_dst` restores the destination → `inspect` peeks at the
//! first bytes → [`chain`] picks the filter chain → `tcp_proxy` picks a cluster and an endpoint
//! (`cluster`), connects (`upstream`) and copies bytes both ways (`copy`).
//! [`Proxy`] owns the pieces: the snapshot holder (`state`), the bound listeners, the admin
//! server (`admin`) and the drain (`drain`).

mod admin;
pub mod chain;
mod check_config;
pub mod cli;
mod cluster;
pub mod config;
mod connection;
mod copy;
mod drain;
pub mod duration;
mod error;
pub mod identity;
mod inspect;
pub mod istiod_xds;
mod listener;
pub mod metrics;
mod options;
mod original_dst;
mod outlier;
mod proxy;
mod random;
pub mod rbac;
mod socket;
mod state;
mod status;
mod tcp_proxy;
mod tls;
mod upstream;
mod validate;
pub mod xds;

pub use admin::ConfigDumpFn;
pub use error::{BindError, BindErrors, Error};
pub use options::{Keepalive, Options};
pub use proxy::{DrainOutcome, Proxy};
