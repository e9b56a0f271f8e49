//! Traffic capture for vm-proxy: the same redirection rules as Istio's `istio-iptables`
//! (iptables-restore text) and `istio-nftables` (an nft transaction), applied atomically,
//! and removed from the machine's actual state rather than from memory.
//!
//! The crate is split in two halves that meet at [`plan::Plan`]:
//! - `args`/`config`/`render` turn flags and environment into a validated configuration and
//!   render it, byte for byte, into what Istio's generators produce;
//! - `backend`/`state`/`apply`/`cleanup`/`execute` put a rendered rule set on the machine,
//!   detect drift, and remove exactly what is ours.

pub mod args;
pub mod config;
pub mod error;
pub mod plan;
pub mod render;

mod apply;
mod backend;
mod cleanup;
mod command;
pub mod exec_error;
pub mod execute;
mod nftables;
mod ownership;
mod state;
mod tproxy;

pub use cleanup::Removed;
pub use exec_error::CaptureError;
pub use execute::{Applied, DryRun, Outcome, dry_run, execute};
