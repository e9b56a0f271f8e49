//! The iptables binaries of one address family and flavor (legacy or nft), chosen the way
//! Istio's `DetectIptablesVersion` chooses them, and the few operations run through them.

use std::fmt;

use crate::command::Cmd;
use crate::exec_error::CaptureError;
use crate::plan::IptablesFlavor;
use crate::state::{self, Table};

/// An address family: `iptables*` or `ip6tables*`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Family {
    V4,
    V6,
}

impl Family {
    pub const ALL: [Family; 2] = [Family::V4, Family::V6];

    pub fn label(self) -> &'static str {
        match self {
            Family::V4 => "IPv4",
            Family::V6 => "IPv6",
        }
    }

    fn base(self) -> &'static str {
        match self {
            Family::V4 => "iptables",
            Family::V6 => "ip6tables",
        }
    }

    /// The `ip` flag selecting this family.
    pub(crate) fn ip_flag(self) -> &'static str {
        match self {
            Family::V4 => "-4",
            Family::V6 => "-6",
        }
    }
}

fn flavor_label(f: IptablesFlavor) -> &'static str {
    match f {
        IptablesFlavor::Legacy => "legacy",
        IptablesFlavor::Nft => "nft",
    }
}

/// Seconds a legacy write waits for the xtables lock (Istio waits 30 s too).
const LOCK_WAIT: &str = "--wait=30";

/// One usable set of `X`, `X-save` and `X-restore` binaries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Xtables {
    pub family: Family,
    pub flavor: IptablesFlavor,
    /// `iptables-nft`, `ip6tables-legacy`, or plain `iptables` when no suffixed binary exists.
    binary: String,
    /// Legacy iptables >= 1.6.2 takes the xtables lock and accepts `--wait`.
    takes_lock: bool,
}

impl fmt::Display for Xtables {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} ({}, {})",
            self.family.label(),
            flavor_label(self.flavor),
            self.binary
        )
    }
}

/// What probing one binary set found.
struct Probe {
    xt: Xtables,
    /// The `-save` output shows at least one rule or user-defined chain.
    has_rules: bool,
}

impl Xtables {
    fn save_binary(&self) -> String {
        format!("{}-save", self.binary)
    }

    fn restore_binary(&self) -> String {
        format!("{}-restore", self.binary)
    }

    fn with_lock(&self, cmd: Cmd) -> Cmd {
        if self.takes_lock {
            cmd.arg(LOCK_WAIT)
        } else {
            cmd
        }
    }

    /// The tables as `X-save` shows them now.
    pub(crate) fn read_state(&self) -> Result<Vec<Table>, CaptureError> {
        let cmd = Cmd::new(&self.save_binary());
        let out = cmd.run_ok()?;
        state::parse(&out).map_err(|e| CaptureError::StateParse {
            command: cmd.display(),
            line: e.line,
            reason: e.reason,
        })
    }

    /// Feeds restore text to `X-restore --noflush` (each table block is committed atomically).
    pub(crate) fn restore(&self, text: &str) -> Result<(), CaptureError> {
        let cmd = self
            .with_lock(Cmd::new(&self.restore_binary()).arg("--noflush"))
            .stdin(text);
        cmd.run_ok().map(drop)
    }

    /// Whether `X -t table -C chain spec` finds the rule.
    pub(crate) fn has_rule(
        &self,
        table: &str,
        chain: &str,
        spec: &[String],
    ) -> Result<bool, CaptureError> {
        let cmd = self
            .with_lock(Cmd::new(&self.binary))
            .args(["-t", table, "-C", chain])
            .args(spec.iter().cloned());
        let ran = cmd.run()?;
        if !ran.success {
            tracing::debug!(command = %cmd.display(), stderr = %ran.stderr.trim(), "rule not found");
        }
        Ok(ran.success)
    }

    /// Probes `binary`: runs `binary-save` (which reads and changes nothing) and
    /// `binary-save --version`. `None` when it is not installed or does not work here.
    fn probe(family: Family, binary: &str) -> Result<Option<Probe>, CaptureError> {
        let save = format!("{binary}-save");
        let dump = match Cmd::new(&save).run() {
            Ok(r) if r.success => r.stdout,
            Ok(r) => {
                tracing::debug!(binary = %save, stderr = %r.stderr.trim(), "not usable");
                return Ok(None);
            }
            Err(CaptureError::MissingBinary { .. }) => return Ok(None),
            Err(e) => return Err(e),
        };
        let version = Cmd::new(&save).arg("--version").run()?;
        let version = format!("{}{}", version.stdout, version.stderr);
        let flavor = if version.contains("nf_tables") {
            IptablesFlavor::Nft
        } else {
            IptablesFlavor::Legacy
        };
        let takes_lock = flavor == IptablesFlavor::Legacy && locks(&version);
        Ok(Some(Probe {
            xt: Xtables {
                family,
                flavor,
                binary: binary.to_string(),
                takes_lock,
            },
            has_rules: shows_rules(&dump),
        }))
    }
}

/// `v1.6.2` or later: the version from which legacy iptables(-restore) takes the lock and `-w`.
fn locks(version: &str) -> bool {
    // Very old `-save` binaries do not know `--version`; they predate the lock too.
    let Some(pos) = version.find(" v") else {
        return false;
    };
    let nums: Vec<u32> = version[pos + 2..]
        .split(|c: char| !c.is_ascii_digit() && c != '.')
        .next()
        .unwrap_or("")
        .split('.')
        .filter_map(|n| n.parse().ok())
        .collect();
    nums >= vec![1, 6, 2]
}

/// Whether a `-save` dump shows a rule or a user-defined chain. Istio counts three or more
/// lines instead, but a table that was merely probed or cleaned (built-in chains only, no
/// rules) prints seven lines, which made Istio flip to legacy on nft hosts (istio/istio#61020).
fn shows_rules(dump: &str) -> bool {
    dump.lines().any(|l| {
        l.starts_with("-A ") || (l.starts_with(':') && l.split_whitespace().nth(1) == Some("-"))
    })
}

fn suffixed(family: Family, flavor: IptablesFlavor) -> String {
    format!("{}-{}", family.base(), flavor_label(flavor))
}

/// Picks the binaries for `family`: a forced flavor wins; otherwise `X-legacy` when its
/// tables hold rules (the host's firewall lives there), else `X-nft` when it works, else plain
/// `X`. Unlike Istio this adds no probe rule: probing must not create tables.
pub fn detect(family: Family, forced: Option<IptablesFlavor>) -> Result<Xtables, CaptureError> {
    if let Some(flavor) = forced {
        let binary = suffixed(family, flavor);
        return match Xtables::probe(family, &binary)? {
            Some(p) => Ok(p.xt),
            None => Err(CaptureError::MissingBinary {
                binary: format!("{binary}-save"),
                package: "iptables",
            }),
        };
    }
    if let Some(p) = Xtables::probe(family, &suffixed(family, IptablesFlavor::Legacy))?
        && p.has_rules
    {
        tracing::debug!(
            family = family.label(),
            "legacy iptables holds rules, using it"
        );
        return Ok(p.xt);
    }
    if let Some(p) = Xtables::probe(family, &suffixed(family, IptablesFlavor::Nft))? {
        return Ok(p.xt);
    }
    match Xtables::probe(family, family.base())? {
        Some(p) => Ok(p.xt),
        None => Err(CaptureError::NoUsableIptables {
            tool: family.base(),
            family: family.label(),
            reason: format!(
                "none of {0}-legacy-save, {0}-nft-save, {0}-save runs (install the Debian package `iptables`)",
                family.base()
            ),
        }),
    }
}

/// Every flavor installed for `family`, for finding our rules wherever they are: the suffixed
/// legacy and nft binaries, or plain `X` when neither exists.
pub(crate) fn installed(family: Family) -> Result<Vec<Xtables>, CaptureError> {
    let mut found = Vec::new();
    for flavor in [IptablesFlavor::Legacy, IptablesFlavor::Nft] {
        if let Some(p) = Xtables::probe(family, &suffixed(family, flavor))? {
            found.push(p.xt);
        }
    }
    if found.is_empty()
        && let Some(p) = Xtables::probe(family, family.base())?
    {
        found.push(p.xt);
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lock_support_by_version() {
        assert!(locks("iptables-save v1.8.9 (legacy)"));
        assert!(locks("iptables v1.6.2"));
        assert!(!locks("iptables v1.6.1"));
        assert!(!locks("iptables v1.4.21"));
    }

    #[test]
    fn rules_are_rules_empty_tables_are_not() {
        let probed_only = "# Generated by iptables-save v1.8.9\n*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\nCOMMIT\n# Completed\n";
        assert!(!shows_rules(probed_only));
        assert!(!shows_rules(""));
        assert!(shows_rules(
            "*nat\n:PREROUTING ACCEPT [0:0]\n-A PREROUTING -j DOCKER\nCOMMIT\n"
        ));
        assert!(shows_rules(
            "*nat\n:PREROUTING ACCEPT [0:0]\n:DOCKER - [0:0]\nCOMMIT\n"
        ));
    }
}
