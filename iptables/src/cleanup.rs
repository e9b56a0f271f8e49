//! Removing exactly our rules, found from the machine's actual state: every iptables flavor
//! and family that is installed, our nftables tables, and our TPROXY policy routing.

use std::collections::BTreeSet;
use std::fmt;

use crate::apply::Desired;
use crate::backend::{self, Family, Xtables};
use crate::exec_error::CaptureError;
use crate::nftables;
use crate::ownership::{self, Evidence, GUARDRAIL_COMMENT};
use crate::plan::TproxyRouting;
use crate::state::Table;
use crate::tproxy;

/// What a cleanup removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Removed {
    /// iptables rules deleted from other chains plus those flushed with our chains.
    pub rules: usize,
    /// `ISTIO_*` chains deleted.
    pub chains: usize,
    /// nftables tables deleted.
    pub nft_tables: usize,
    /// Policy-routing rules and routes deleted.
    pub routing: usize,
}

impl Removed {
    pub fn is_empty(&self) -> bool {
        *self == Removed::default()
    }

    pub(crate) fn add(&mut self, o: Removed) {
        self.rules += o.rules;
        self.chains += o.chains;
        self.nft_tables += o.nft_tables;
        self.routing += o.routing;
    }
}

impl fmt::Display for Removed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} iptables rules, {} chains, {} nftables tables, {} routing entries",
            self.rules, self.chains, self.nft_tables, self.routing
        )
    }
}

/// One flavor and family's tables as just read, and what they say about Istio.
#[derive(Debug, Clone)]
pub(crate) struct Snapshot {
    pub xt: Xtables,
    pub tables: Vec<Table>,
    pub evidence: Evidence,
}

impl Snapshot {
    pub(crate) fn take(xt: Xtables, plan_mark: Option<u32>) -> Result<Snapshot, CaptureError> {
        let tables = xt.read_state()?;
        let evidence = Evidence::from_state(&tables, plan_mark);
        Ok(Snapshot {
            xt,
            tables,
            evidence,
        })
    }

    /// How many rules and chains of ours this state holds.
    pub(crate) fn ours(&self, desired: Option<&[Table]>) -> (usize, usize) {
        let mut rules = 0;
        let mut chains = 0;
        for t in &self.tables {
            let d = desired.and_then(|d| d.iter().find(|x| x.name == t.name));
            rules += t
                .rules
                .iter()
                .filter(|r| ownership::is_ours(t, r, &self.evidence, d))
                .count();
            chains += t.our_chains().count();
        }
        (rules, chains)
    }
}

/// Snapshots of every installed flavor of both families.
pub(crate) fn snapshot_all(plan_mark: Option<u32>) -> Result<Vec<Snapshot>, CaptureError> {
    let mut out = Vec::new();
    for family in Family::ALL {
        for xt in backend::installed(family)? {
            out.push(Snapshot::take(xt, plan_mark)?);
        }
    }
    Ok(out)
}

fn is_guardrail(t: &Table, chain: &str, spec_comment: Option<&str>) -> bool {
    t.name == "filter" && t.is_builtin(chain) && spec_comment == Some(GUARDRAIL_COMMENT)
}

/// The restore text deleting our rules from other chains, then flushing and deleting our
/// chains (all flushes first: our chains jump to each other). Empty when nothing is ours.
/// `desired` (the plan's tables for this family) corroborates interface exclusions.
pub(crate) fn script(
    tables: &[Table],
    ev: &Evidence,
    desired: Option<&[Table]>,
    keep_guardrails: bool,
) -> (String, Removed) {
    let mut text = String::new();
    let mut removed = Removed::default();
    for t in tables {
        let d = desired.and_then(|d| d.iter().find(|x| x.name == t.name));
        let mut block = String::new();
        for r in &t.rules {
            let in_our_chain = t.our_chains().any(|c| c.name == r.chain);
            if in_our_chain || !ownership::is_ours(t, r, ev, d) {
                continue;
            }
            if keep_guardrails && is_guardrail(t, &r.chain, r.parsed.value("--comment")) {
                continue;
            }
            block.push_str(&format!("-D {} {}\n", r.chain, r.spec));
            removed.rules += 1;
        }
        let chains: Vec<&str> = t.our_chains().map(|c| c.name.as_str()).collect();
        for c in &chains {
            removed.rules += t.rules_in(c).count();
            block.push_str(&format!("-F {c}\n"));
        }
        for c in &chains {
            block.push_str(&format!("-X {c}\n"));
        }
        removed.chains += chains.len();
        if !block.is_empty() {
            text.push_str(&format!("*{}\n{block}COMMIT\n", t.name));
        }
    }
    (text, removed)
}

/// Removes everything of ours from one snapshot's flavor and family.
pub(crate) fn clean(
    snap: &Snapshot,
    desired: &Desired,
    keep_guardrails: bool,
) -> Result<Removed, CaptureError> {
    let (text, removed) = script(
        &snap.tables,
        &snap.evidence,
        desired.for_family(snap.xt.family),
        keep_guardrails,
    );
    if !text.is_empty() {
        tracing::info!(backend = %snap.xt, %removed, "removing capture rules");
        snap.xt.restore(&text)?;
    }
    Ok(removed)
}

/// Re-reads `xt`'s state and removes everything of ours from it (used to roll back an apply
/// onto a state that had nothing of ours).
pub(crate) fn clean_now(
    xt: &Xtables,
    plan_mark: Option<u32>,
    desired: &Desired,
    keep_guardrails: bool,
) -> Result<Removed, CaptureError> {
    clean(
        &Snapshot::take(xt.clone(), plan_mark)?,
        desired,
        keep_guardrails,
    )
}

/// Removes every rule, chain, nftables table and policy-routing entry of ours from the machine.
/// `tproxy` adds the configured mark and table to what the state itself shows.
/// `keep_guardrails` leaves the DROP guardrails of a running reconcile in place.
pub(crate) fn clean_all(
    tproxy: Option<&TproxyRouting>,
    desired: &Desired,
    keep_guardrails: bool,
) -> Result<Removed, CaptureError> {
    let plan_mark = tproxy.map(|r| r.mark);
    let snaps = snapshot_all(plan_mark)?;
    let nft_present = nftables::our_tables()?.unwrap_or_default();

    // Marks are read before anything is removed, so that a run interrupted after the packet
    // rules went still finds its policy routing on the next try (the plan's mark aside).
    let mut marks: BTreeSet<u32> = plan_mark.into_iter().collect();
    let istio_seen = snaps.iter().any(|s| s.evidence.present()) || !nft_present.is_empty();
    if istio_seen {
        for s in &snaps {
            marks.extend(s.evidence.marks());
        }
        marks.extend(nftables::marks(&nft_present)?);
    }

    let mut removed = Removed::default();
    if !marks.is_empty() {
        removed.routing += tproxy::remove(&marks, tproxy.map(|r| r.table))?;
    }
    for s in &snaps {
        removed.add(clean(s, desired, keep_guardrails)?);
    }
    if !nft_present.is_empty() {
        tracing::info!(tables = ?nft_present, "deleting nftables tables");
        nftables::delete_tables(&nft_present)?;
        removed.nft_tables += nft_present.len();
    }
    Ok(removed)
}

/// Guardrails: while a reconcile swaps the rules, all TCP and UDP is dropped (as Istio does),
/// so no connection slips through half-built capture.
pub(crate) struct Guardrails {
    on: Vec<Xtables>,
}

const GUARDED_CHAINS: [&str; 3] = ["INPUT", "FORWARD", "OUTPUT"];

impl Guardrails {
    /// Inserts the DROP rules at the top of filter INPUT/FORWARD/OUTPUT for each of `xts`
    /// (after removing any a crashed run left behind).
    pub(crate) fn install(xts: &[Xtables]) -> Result<Guardrails, CaptureError> {
        let mut g = Guardrails { on: Vec::new() };
        let mut text = String::from("*filter\n");
        for chain in GUARDED_CHAINS {
            for proto in ["tcp", "udp"] {
                text.push_str(&format!(
                    "-I {chain} 1 -p {proto} -m comment --comment {GUARDRAIL_COMMENT} -j DROP\n"
                ));
            }
        }
        text.push_str("COMMIT\n");
        for xt in xts {
            let result = remove_guardrails(xt).and_then(|_| xt.restore(&text));
            if let Err(e) = result {
                return Err(match g.remove() {
                    Ok(()) => e,
                    Err(stuck) => stuck,
                });
            }
            tracing::info!(backend = %xt, "guardrails installed");
            g.on.push(xt.clone());
        }
        Ok(g)
    }

    /// Removes the guardrails from every family they were installed in.
    pub(crate) fn remove(self) -> Result<(), CaptureError> {
        let mut first_err = None;
        for xt in &self.on {
            match remove_guardrails(xt) {
                Ok(_) => tracing::info!(backend = %xt, "guardrails removed"),
                Err(e) => {
                    first_err.get_or_insert(e);
                }
            }
        }
        match first_err {
            None => Ok(()),
            Some(e) => Err(CaptureError::GuardrailsStuck { cause: Box::new(e) }),
        }
    }
}

/// Removes guardrails a reconcile killed mid-way left behind, from every installed flavor.
/// They are never wanted and block all traffic, so no run may leave them, drift or not.
pub(crate) fn remove_stale_guardrails() -> Result<usize, CaptureError> {
    let mut n = 0;
    for family in Family::ALL {
        for xt in backend::installed(family)? {
            let removed = remove_guardrails(&xt)?;
            if removed > 0 {
                tracing::warn!(backend = %xt, removed, "removed DROP guardrails left by an interrupted reconcile");
            }
            n += removed;
        }
    }
    Ok(n)
}

/// Deletes every guardrail rule from `xt`'s filter table; returns how many there were.
fn remove_guardrails(xt: &Xtables) -> Result<usize, CaptureError> {
    let tables = xt.read_state()?;
    let mut text = String::new();
    let mut n = 0;
    for t in tables.iter().filter(|t| t.name == "filter") {
        for r in &t.rules {
            if is_guardrail(t, &r.chain, r.parsed.value("--comment")) {
                text.push_str(&format!("-D {} {}\n", r.chain, r.spec));
                n += 1;
            }
        }
    }
    if n > 0 {
        xt.restore(&format!("*filter\n{text}COMMIT\n"))?;
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::parse;

    #[test]
    fn script_deletes_ours_then_flushes_then_deletes_chains() {
        let tables = parse(
            "*nat
:PREROUTING ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:ISTIO_INBOUND - [0:0]
:ISTIO_IN_REDIRECT - [0:0]
:KEEP - [0:0]
-A PREROUTING -p tcp -j ISTIO_INBOUND
-A PREROUTING -p tcp -m tcp --dport 8080 -j KEEP
-A ISTIO_INBOUND -p tcp -j ISTIO_IN_REDIRECT
-A ISTIO_IN_REDIRECT -p tcp -j REDIRECT --to-ports 15006
-A KEEP -j RETURN
COMMIT
*filter
:INPUT ACCEPT [0:0]
-A INPUT -p tcp -m comment --comment vm-proxy-reconcile-guardrail -j DROP
-A INPUT -j ACCEPT
COMMIT
",
        )
        .unwrap();
        let ev = Evidence::from_state(&tables, None);
        let (text, removed) = script(&tables, &ev, None, false);
        assert_eq!(
            text,
            "*nat
-D PREROUTING -p tcp -j ISTIO_INBOUND
-F ISTIO_INBOUND
-F ISTIO_IN_REDIRECT
-X ISTIO_INBOUND
-X ISTIO_IN_REDIRECT
COMMIT
*filter
-D INPUT -p tcp -m comment --comment vm-proxy-reconcile-guardrail -j DROP
COMMIT
"
        );
        assert_eq!(
            removed,
            Removed {
                rules: 4,
                chains: 2,
                nft_tables: 0,
                routing: 0
            }
        );
        let (kept, _) = script(&tables, &ev, None, true);
        assert!(!kept.contains("guardrail"), "{kept}");
    }

    #[test]
    fn nothing_of_ours_means_no_script() {
        let tables =
            parse("*nat\n:OUTPUT ACCEPT [0:0]\n-A OUTPUT -o eth0 -j RETURN\nCOMMIT\n").unwrap();
        let (text, removed) = script(&tables, &Evidence::from_state(&tables, None), None, false);
        assert!(text.is_empty());
        assert!(removed.is_empty());
    }
}
