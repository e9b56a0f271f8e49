//! The hand-off between rule generation and rule application.
//!
//! Generation is pure (config in, text out) so that `--dry-run` and the golden tests see exactly
//! what would be applied; application only ever consumes these rendered values.

/// Input for `iptables-restore --noflush` / `ip6tables-restore --noflush`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IptablesRules {
    /// `* table` ... `COMMIT` blocks for IPv4, tables in sorted order, ending with a newline.
    pub v4: String,
    /// The IPv6 blocks, present only when IPv6 capture is enabled.
    pub v6: Option<String>,
}

/// Policy routing that TPROXY interception needs besides the packet rules
/// (`ip rule add fwmark MARK lookup TABLE` and `ip route add local default dev lo table TABLE`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TproxyRouting {
    pub mark: u32,
    pub table: u32,
    pub ipv6: bool,
}

/// Which packet filter the rules are written for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// iptables; `None` picks legacy or nft the way Istio does.
    Iptables(Option<IptablesFlavor>),
    /// Native nftables tables `inet istio-proxy-*`.
    Nftables,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IptablesFlavor {
    Legacy,
    Nft,
}

/// A rendered rule set for the chosen backend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RenderedRules {
    Iptables(IptablesRules),
    /// One `nft` command per line, as `nft -f` reads it.
    Nftables(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Install the rules (doing nothing when the machine already has exactly them).
    Apply,
    /// Print what would be applied and touch nothing.
    DryRun,
    /// Remove every rule and chain/table of ours found on the machine, apply nothing.
    CleanupOnly,
    /// On drift, remove what is there and apply the rules again.
    Reconcile,
}

/// Everything the application side needs: what to apply, with which backend, and how.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub mode: Mode,
    pub backend: Backend,
    pub rules: RenderedRules,
    pub tproxy: Option<TproxyRouting>,
}
