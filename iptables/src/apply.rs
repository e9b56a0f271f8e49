//! Putting iptables rules on the machine: compare with what is there, apply with one
//! `iptables-restore --noflush` per family, roll back whatever a failure left, and reconcile
//! drift behind DROP guardrails.

use std::collections::{BTreeMap, BTreeSet};

use crate::backend::{self, Family, Xtables};
use crate::cleanup::{self, Guardrails, Removed, Snapshot};
use crate::command::Cmd;
use crate::exec_error::CaptureError;
use crate::execute::{Applied, Outcome};
use crate::nftables;
use crate::plan::{IptablesFlavor, IptablesRules, TproxyRouting};
use crate::state::{self, Table};
use crate::tproxy;

/// The plan's iptables rules, read into tables per family.
#[derive(Debug, Clone, Default)]
pub(crate) struct Desired {
    v4: Vec<Table>,
    v6: Option<Vec<Table>>,
}

impl Desired {
    pub(crate) fn from_plan(rules: &IptablesRules) -> Result<Desired, CaptureError> {
        let read = |family: Family, text: &str| {
            state::parse(text).map_err(|e| CaptureError::BadPlan {
                family: family.label(),
                line: e.line,
                reason: e.reason,
            })
        };
        Ok(Desired {
            v4: read(Family::V4, &rules.v4)?,
            v6: rules
                .v6
                .as_deref()
                .map(|t| read(Family::V6, t))
                .transpose()?,
        })
    }

    pub(crate) fn for_family(&self, family: Family) -> Option<&[Table]> {
        match family {
            Family::V4 => Some(&self.v4),
            Family::V6 => self.v6.as_deref(),
        }
    }
}

/// Rules and chains a set of tables creates.
pub(crate) fn size(tables: &[Table]) -> Applied {
    Applied {
        rules: tables.iter().map(|t| t.rules.len()).sum(),
        chains: tables.iter().map(|t| t.chains.len()).sum(),
        ..Applied::default()
    }
}

fn text_for(rules: &IptablesRules, family: Family) -> Option<&str> {
    match family {
        Family::V4 => Some(&rules.v4),
        Family::V6 => rules.v6.as_deref(),
    }
}

/// How one family's chosen tables compare with the desired ones.
#[derive(Debug)]
enum Status {
    /// Nothing of ours.
    Clean,
    /// Exactly the desired rules.
    InPlace,
    Drift(Vec<String>),
}

/// Counts of rules per chain, for comparing chain by chain.
fn counts<'a>(rules: impl Iterator<Item = &'a str>) -> BTreeMap<&'a str, usize> {
    let mut m = BTreeMap::new();
    for c in rules {
        *m.entry(c).or_insert(0) += 1;
    }
    m
}

/// Chain-level differences between our part of `snap` and `desired`: the same `ISTIO_*`
/// chains, the same number of rules in each, and the same number of our rules in every other
/// chain. (Rule contents are checked afterwards with `iptables -C`; like Istio, rule order is
/// not compared.)
fn structural_differences(snap: &Snapshot, desired: &[Table]) -> Vec<String> {
    let empty = Table::default();
    let mut names: BTreeSet<&str> = desired.iter().map(|t| t.name.as_str()).collect();
    names.extend(snap.tables.iter().map(|t| t.name.as_str()));
    let mut diffs = Vec::new();
    for name in names {
        let st = snap
            .tables
            .iter()
            .find(|t| t.name == name)
            .unwrap_or(&empty);
        let dt = desired.iter().find(|t| t.name == name).unwrap_or(&empty);
        let want_chains: BTreeSet<&str> = dt.chains.iter().map(|c| c.name.as_str()).collect();
        let mut have_chains: BTreeSet<&str> = st.our_chains().map(|c| c.name.as_str()).collect();
        have_chains.extend(
            want_chains
                .iter()
                .copied()
                .filter(|c| st.chain(c).is_some_and(|x| !x.builtin)),
        );
        for c in want_chains.difference(&have_chains) {
            diffs.push(format!("{}: {name} chain {c} is missing", snap.xt));
        }
        for c in have_chains.difference(&want_chains) {
            diffs.push(format!("{}: {name} chain {c} is not wanted", snap.xt));
        }
        let want = counts(dt.rules.iter().map(|r| r.chain.as_str()));
        let have = counts(
            st.rules
                .iter()
                .filter(|r| {
                    have_chains.contains(r.chain.as_str())
                        || crate::ownership::is_ours(st, r, &snap.evidence, Some(dt))
                })
                .map(|r| r.chain.as_str()),
        );
        let chains: BTreeSet<&str> = want.keys().chain(have.keys()).copied().collect();
        for c in chains {
            let (w, h) = (
                want.get(c).copied().unwrap_or(0),
                have.get(c).copied().unwrap_or(0),
            );
            if w != h {
                diffs.push(format!(
                    "{}: {name} chain {c} has {h} rules of ours, {w} wanted",
                    snap.xt
                ));
            }
        }
    }
    diffs
}

fn assess(snap: &Snapshot, desired: Option<&[Table]>) -> Result<Status, CaptureError> {
    let (rules, chains) = snap.ours(desired);
    if rules + chains == 0 {
        return Ok(Status::Clean);
    }
    let Some(desired) = desired else {
        return Ok(Status::Drift(vec![format!(
            "{}: {rules} rules and {chains} chains of ours while no {} capture is wanted",
            snap.xt,
            snap.xt.family.label()
        )]));
    };
    let diffs = structural_differences(snap, desired);
    if !diffs.is_empty() {
        return Ok(Status::Drift(diffs));
    }
    for t in desired {
        for r in &t.rules {
            if !snap.xt.has_rule(&t.name, &r.chain, &r.parsed.tokens)? {
                return Ok(Status::Drift(vec![format!(
                    "{}: {} rule `-A {} {}` is missing",
                    snap.xt, t.name, r.chain, r.spec
                )]));
            }
        }
    }
    Ok(Status::InPlace)
}

/// Everything the iptables path needs to know about the plan.
pub(crate) struct IptablesJob<'a> {
    pub rules: &'a IptablesRules,
    pub forced: Option<IptablesFlavor>,
    pub tproxy: Option<&'a TproxyRouting>,
    pub reconcile: bool,
}

/// `ip` must be there before anything is changed when policy routing is needed.
pub(crate) fn require_ip(tproxy: Option<&TproxyRouting>) -> Result<(), CaptureError> {
    if tproxy.is_some() {
        Cmd::new("ip").arg("-V").run_ok()?;
    }
    Ok(())
}

impl IptablesJob<'_> {
    pub(crate) fn run(&self) -> Result<Outcome, CaptureError> {
        let desired = Desired::from_plan(self.rules)?;
        let plan_mark = self.tproxy.map(|r| r.mark);
        let mut chosen: Vec<Xtables> = vec![backend::detect(Family::V4, self.forced)?];
        if desired.v6.is_some() {
            chosen.push(backend::detect(Family::V6, self.forced)?);
        }
        require_ip(self.tproxy)?;
        for xt in &chosen {
            tracing::info!(backend = %xt, "using iptables binaries");
        }

        cleanup::remove_stale_guardrails()?;
        let mut snaps = cleanup::snapshot_all(plan_mark)?;
        for xt in &chosen {
            if !snaps.iter().any(|s| &s.xt == xt) {
                snaps.push(Snapshot::take(xt.clone(), plan_mark)?);
            }
        }
        let mut drift = Vec::new();
        let mut to_apply: Vec<Xtables> = Vec::new();
        for family in Family::ALL {
            let want = desired.for_family(family);
            let mine = chosen.iter().find(|x| x.family == family);
            for snap in snaps.iter().filter(|s| s.xt.family == family) {
                if Some(&snap.xt) == mine {
                    match assess(snap, want)? {
                        Status::Clean => to_apply.push(snap.xt.clone()),
                        Status::InPlace => {}
                        Status::Drift(d) => drift.extend(d),
                    }
                } else {
                    let (rules, chains) = snap.ours(want);
                    if rules + chains > 0 {
                        drift.push(match mine {
                            Some(m) => format!(
                                "{}: {rules} rules and {chains} chains of ours while {m} is used",
                                snap.xt
                            ),
                            None => format!(
                                "{}: {rules} rules and {chains} chains of ours while no {} capture is wanted",
                                snap.xt,
                                family.label()
                            ),
                        });
                    }
                }
            }
        }
        match nftables::our_tables() {
            Ok(Some(t)) if !t.is_empty() => drift.push(format!(
                "nftables tables {t:?} of ours exist while iptables is used"
            )),
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(error = %e, "cannot list nftables tables; not checking them for leftovers")
            }
        }
        if let Some(r) = self.tproxy {
            drift.extend(tproxy::stale(r)?);
        }

        if !drift.is_empty() {
            if !self.reconcile {
                return Err(CaptureError::Drift { differences: drift });
            }
            for d in &drift {
                tracing::info!(difference = %d, "reconciling");
            }
            return self.reconcile(&desired, chosen);
        }

        let to_apply: Vec<Xtables> = to_apply
            .into_iter()
            .filter(|xt| desired.for_family(xt.family).is_some_and(|t| !t.is_empty()))
            .collect();
        let mut applied = self.apply_families(&to_apply, &desired, false)?;
        applied.routing = self.ensure_routing(&to_apply, &desired, false)?;
        if applied.is_empty() {
            let mut in_place = Applied::default();
            for family in Family::ALL {
                in_place.add(desired.for_family(family).map(size).unwrap_or_default());
            }
            tracing::info!(%in_place, "capture rules already in place, nothing changed");
            return Ok(Outcome::AlreadyInPlace(in_place));
        }
        tracing::info!(%applied, "capture rules applied");
        Ok(Outcome::Applied(applied))
    }

    /// One `X-restore --noflush` per family. If one fails, everything of ours is removed again
    /// from every family this call touched (they had nothing of ours before).
    fn apply_families(
        &self,
        xts: &[Xtables],
        desired: &Desired,
        keep_guardrails: bool,
    ) -> Result<Applied, CaptureError> {
        let mut applied = Applied::default();
        for (i, xt) in xts.iter().enumerate() {
            let Some(text) = text_for(self.rules, xt.family) else {
                continue;
            };
            tracing::info!(backend = %xt, "applying capture rules");
            if let Err(e) = xt.restore(text) {
                return Err(self.roll_back(e, &xts[..=i], desired, keep_guardrails));
            }
            applied.add(desired.for_family(xt.family).map(size).unwrap_or_default());
        }
        Ok(applied)
    }

    /// Adds the policy routing; if that fails, takes the rules of `xts` away again.
    fn ensure_routing(
        &self,
        xts: &[Xtables],
        desired: &Desired,
        keep_guardrails: bool,
    ) -> Result<usize, CaptureError> {
        let Some(r) = self.tproxy else {
            return Ok(0);
        };
        match tproxy::ensure(r) {
            Ok(added) => {
                for a in &added {
                    tracing::info!(entry = %a, "policy routing added");
                }
                Ok(added.len())
            }
            Err(e) => Err(self.roll_back(e, xts, desired, keep_guardrails)),
        }
    }

    fn roll_back(
        &self,
        cause: CaptureError,
        xts: &[Xtables],
        desired: &Desired,
        keep_guardrails: bool,
    ) -> CaptureError {
        tracing::warn!(error = %cause, "apply failed, removing what was applied");
        let plan_mark = self.tproxy.map(|r| r.mark);
        for xt in xts {
            if let Err(rollback) = cleanup::clean_now(xt, plan_mark, desired, keep_guardrails) {
                return CaptureError::RollbackFailed {
                    cause: Box::new(cause),
                    rollback: Box::new(rollback),
                };
            }
        }
        CaptureError::RolledBack {
            cause: Box::new(cause),
        }
    }

    /// Guardrails on, everything of ours off, the desired rules on, guardrails off.
    fn reconcile(&self, desired: &Desired, chosen: Vec<Xtables>) -> Result<Outcome, CaptureError> {
        let mut guarded = chosen.clone();
        if !guarded.iter().any(|x| x.family == Family::V6) {
            match backend::detect(Family::V6, self.forced) {
                Ok(xt) => guarded.push(xt),
                Err(e) => tracing::debug!(error = %e, "no ip6tables for IPv6 guardrails"),
            }
        }
        let guards = Guardrails::install(&guarded)?;
        let result = (|| {
            let removed: Removed = cleanup::clean_all(self.tproxy, desired, true)?;
            let to_apply: Vec<Xtables> = chosen
                .iter()
                .filter(|xt| desired.for_family(xt.family).is_some_and(|t| !t.is_empty()))
                .cloned()
                .collect();
            let mut applied = self.apply_families(&to_apply, desired, true)?;
            applied.routing = self.ensure_routing(&to_apply, desired, true)?;
            Ok(Outcome::Reconciled { removed, applied })
        })();
        match (result, guards.remove()) {
            (Ok(o), Ok(())) => {
                tracing::info!(outcome = %o, "capture rules reconciled");
                Ok(o)
            }
            (Err(e), Ok(())) => Err(e),
            (result, Err(stuck)) => {
                if let Err(e) = result {
                    tracing::error!(error = %e, "reconcile failed before the guardrails could be removed");
                }
                Err(stuck)
            }
        }
    }
}
