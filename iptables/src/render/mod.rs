//! Rule generation: a [`CaptureConfig`] in, the exact text Istio's generators produce out.
//!
//! Pure functions, so `--dry-run` and the golden tests see exactly what would be applied.

mod iptables;
mod nft;
mod restore;
mod transaction;

use crate::config::CaptureConfig;
use crate::plan::{Backend, IptablesRules, RenderedRules};

/// Envoy's inbound passthrough cluster binds these sources; traffic from them is never captured.
const PASSTHROUGH_SOURCE_V4: &str = "127.0.0.6/32";
const PASSTHROUGH_SOURCE_V6: &str = "::6/128";
/// The IPv6 counterpart of the configurable IPv4 loopback CIDR.
const V6_LOOPBACK: &str = "::1/128";
/// Where the agent's DNS proxy listens.
const AGENT_DNS_PORT: u16 = 15053;

/// `iptables-restore --noflush` input, as `istio-iptables` generates it.
pub fn iptables(cfg: &CaptureConfig) -> IptablesRules {
    iptables::render(cfg)
}

/// The nft transaction, one command per line, as `istio-nftables` generates it.
pub fn nftables(cfg: &CaptureConfig) -> String {
    nft::render(cfg)
}

/// The rules for `backend`.
pub fn render(cfg: &CaptureConfig, backend: Backend) -> RenderedRules {
    match backend {
        Backend::Iptables(_) => RenderedRules::Iptables(iptables(cfg)),
        Backend::Nftables => RenderedRules::Nftables(nftables(cfg)),
    }
}
