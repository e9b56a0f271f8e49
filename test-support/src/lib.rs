//! Test-only support for vm-proxy: real network namespaces, real processes, real peers.
//!
//! Everything created here is named uniquely per test and removed on drop, so a failing or
//! panicking test leaves nothing behind on the machine.

pub mod netns;
pub mod netns_enter;
