//! The entry point of the application side: carry out a [`Plan`] and say what happened.

use std::collections::BTreeSet;
use std::fmt;
use std::io::Write;

use crate::apply::{Desired, IptablesJob, require_ip};
use crate::cleanup::{self, Removed};
use crate::exec_error::CaptureError;
use crate::nftables;
use crate::plan::{Backend, Mode, Plan, RenderedRules, TproxyRouting};
use crate::tproxy;

/// What a run put in place (or, for [`Outcome::AlreadyInPlace`], found in place).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Applied {
    /// iptables rules, or nft `add rule`/`insert rule` commands.
    pub rules: usize,
    /// iptables chains created with `-N`, or nft `add chain` commands.
    pub chains: usize,
    /// nftables tables created or replaced.
    pub nft_tables: usize,
    /// Policy-routing rules and routes added.
    pub routing: usize,
}

impl Applied {
    pub fn is_empty(&self) -> bool {
        *self == Applied::default()
    }

    pub(crate) fn add(&mut self, o: Applied) {
        self.rules += o.rules;
        self.chains += o.chains;
        self.nft_tables += o.nft_tables;
        self.routing += o.routing;
    }
}

impl fmt::Display for Applied {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} rules, {} chains, {} nftables tables, {} routing entries",
            self.rules, self.chains, self.nft_tables, self.routing
        )
    }
}

/// What [`execute`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Dry run: the rules were printed (this many lines on stdout), nothing was touched.
    Printed { lines: usize },
    /// The rules were installed where none of ours were (for a family or table set).
    Applied(Applied),
    /// Exactly the desired rules were already there; nothing was changed (for nftables the
    /// transaction ran again, atomically, and the tables came out identical).
    AlreadyInPlace(Applied),
    /// Rules of ours that differed from the desired ones were removed, the desired ones applied.
    Reconciled { removed: Removed, applied: Applied },
    /// Cleanup only: this much of ours was removed.
    Cleaned(Removed),
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Outcome::Printed { lines } => {
                write!(f, "dry run: printed {lines} lines, changed nothing")
            }
            Outcome::Applied(a) => write!(f, "applied {a}"),
            Outcome::AlreadyInPlace(a) => write!(f, "already in place ({a}), changed nothing"),
            Outcome::Reconciled { removed, applied } => {
                write!(f, "reconciled: removed {removed}, applied {applied}")
            }
            Outcome::Cleaned(r) if r.is_empty() => write!(f, "cleaned: nothing of ours was there"),
            Outcome::Cleaned(r) => write!(f, "cleaned: removed {r}"),
        }
    }
}

/// What a dry run prints.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DryRun {
    /// Exactly what would be fed to the packet filter: the IPv4 restore text then the IPv6 one
    /// (iptables), or the transaction (nftables); each part ends with a newline.
    pub stdout: String,
    /// The policy-routing commands TPROXY would add, one per line, kept off stdout so that
    /// stdout stays comparable with the generator's goldens.
    pub stderr: String,
}

fn with_newline(s: &str) -> String {
    if s.is_empty() || s.ends_with('\n') {
        s.to_string()
    } else {
        format!("{s}\n")
    }
}

/// The text a dry run of `plan` prints.
pub fn dry_run(plan: &Plan) -> DryRun {
    let stdout = match &plan.rules {
        RenderedRules::Iptables(r) => {
            let mut s = with_newline(&r.v4);
            s.push_str(&with_newline(r.v6.as_deref().unwrap_or("")));
            s
        }
        RenderedRules::Nftables(t) => with_newline(t),
    };
    let stderr = plan
        .tproxy
        .as_ref()
        .map(|r| {
            tproxy::commands(r)
                .iter()
                .map(|c| format!("{c}\n"))
                .collect()
        })
        .unwrap_or_default();
    DryRun { stdout, stderr }
}

/// Carries out `plan`: prints it (dry run), applies it (doing nothing when exactly these
/// rules are in place, failing on drift unless the mode is reconcile), or removes everything
/// of ours from the machine (cleanup only). Nothing is left half-applied on failure.
pub fn execute(plan: &Plan) -> Result<Outcome, CaptureError> {
    match plan.mode {
        Mode::DryRun => {
            let out = dry_run(plan);
            let print = |stream: &'static str, mut w: Box<dyn Write>, text: &str| {
                w.write_all(text.as_bytes())
                    .and_then(|()| w.flush())
                    .map_err(|source| CaptureError::Print { stream, source })
            };
            print("stdout", Box::new(std::io::stdout().lock()), &out.stdout)?;
            print("stderr", Box::new(std::io::stderr().lock()), &out.stderr)?;
            Ok(Outcome::Printed {
                lines: out.stdout.lines().count(),
            })
        }
        Mode::CleanupOnly => {
            let desired = match &plan.rules {
                RenderedRules::Iptables(r) => Desired::from_plan(r)?,
                RenderedRules::Nftables(_) => Desired::default(),
            };
            let removed = cleanup::clean_all(plan.tproxy.as_ref(), &desired, false)?;
            let outcome = Outcome::Cleaned(removed);
            tracing::info!(%outcome, "cleanup finished");
            Ok(outcome)
        }
        Mode::Apply | Mode::Reconcile => {
            let reconcile = plan.mode == Mode::Reconcile;
            match (&plan.backend, &plan.rules) {
                (Backend::Iptables(forced), RenderedRules::Iptables(rules)) => IptablesJob {
                    rules,
                    forced: *forced,
                    tproxy: plan.tproxy.as_ref(),
                    reconcile,
                }
                .run(),
                (Backend::Nftables, RenderedRules::Nftables(text)) => {
                    apply_nft(text, plan.tproxy.as_ref(), reconcile)
                }
                (Backend::Iptables(_), RenderedRules::Nftables(_)) => {
                    Err(CaptureError::BackendMismatch {
                        backend: "iptables",
                        rules: "an nftables transaction",
                    })
                }
                (Backend::Nftables, RenderedRules::Iptables(_)) => {
                    Err(CaptureError::BackendMismatch {
                        backend: "nftables",
                        rules: "iptables-restore text",
                    })
                }
            }
        }
    }
}

fn nft_size(text: &str, tables: usize) -> Applied {
    let starts = |p: &[&str]| {
        text.lines()
            .filter(|l| p.iter().any(|p| l.trim_start().starts_with(p)))
            .count()
    };
    Applied {
        rules: starts(&["add rule ", "insert rule "]),
        chains: starts(&["add chain "]),
        nft_tables: tables,
        routing: 0,
    }
}

/// nftables: the transaction creates and flushes its tables itself, so applying it again
/// leaves one copy; only our tables it does not mention, and our iptables rules, are drift.
fn apply_nft(
    text: &str,
    tproxy_plan: Option<&TproxyRouting>,
    reconcile: bool,
) -> Result<Outcome, CaptureError> {
    let present = nftables::our_tables()?.ok_or(CaptureError::MissingBinary {
        binary: "nft".into(),
        package: "nftables",
    })?;
    require_ip(tproxy_plan)?;
    let plan_mark = tproxy_plan.map(|r| r.mark);
    let planned = nftables::tables_in(text);
    cleanup::remove_stale_guardrails()?;
    let extra: Vec<String> = present
        .iter()
        .filter(|t| !planned.contains(t))
        .cloned()
        .collect();
    let snaps = cleanup::snapshot_all(plan_mark)?;

    let mut drift: Vec<String> = extra
        .iter()
        .map(|t| format!("nftables table inet {t} of ours is not wanted"))
        .collect();
    for s in &snaps {
        let (rules, chains) = s.ours(None);
        if rules + chains > 0 {
            drift.push(format!(
                "{}: {rules} rules and {chains} chains of ours while nftables is used",
                s.xt
            ));
        }
    }
    let stale = match tproxy_plan {
        Some(r) => tproxy::stale(r)?,
        None => Vec::new(),
    };
    drift.extend(stale.iter().cloned());
    if !drift.is_empty() && !reconcile {
        return Err(CaptureError::Drift { differences: drift });
    }

    let mut removed = Removed::default();
    let mut transaction = String::new();
    if !drift.is_empty() {
        for d in &drift {
            tracing::info!(difference = %d, "reconciling");
        }
        for s in &snaps {
            removed.add(cleanup::clean(s, &Desired::default(), false)?);
        }
        // The policy routing of what goes away goes too (the plan's own is added back below).
        let mut marks: BTreeSet<u32> = nftables::marks(&extra)?.into_iter().collect();
        for s in snaps.iter().filter(|s| s.ours(None) != (0, 0)) {
            marks.extend(s.evidence.marks());
        }
        if !stale.is_empty() {
            marks.extend(plan_mark);
        }
        if !marks.is_empty() {
            removed.routing += tproxy::remove(&marks, None)?;
        }
        // Deleted in the same transaction that applies the rules: no moment without capture.
        for t in &extra {
            transaction.push_str(&format!("delete table inet {t}\n"));
            removed.nft_tables += 1;
        }
    }
    let existing: Vec<String> = planned
        .iter()
        .filter(|t| present.contains(t))
        .cloned()
        .collect();
    let before = nftables::listing(&existing)?;
    // The transaction's own `flush table` empties chains but keeps them, so chains an older
    // rule set declared would stay; replacing the tables in the same transaction is exact.
    for t in &existing {
        transaction.push_str(&format!("delete table inet {t}\n"));
    }
    transaction.push_str(&with_newline(text));
    tracing::info!(tables = ?planned, "applying nftables transaction");
    nftables::run_transaction(&transaction)?;
    let after = nftables::listing(&planned)?;
    let mut applied = nft_size(text, planned.len());

    if let Some(r) = tproxy_plan {
        match tproxy::ensure(r) {
            Ok(added) => applied.routing = added.len(),
            Err(cause) => {
                tracing::warn!(error = %cause, "policy routing failed, removing the nftables tables again");
                return Err(match nftables::delete_tables(&planned) {
                    Ok(()) => CaptureError::RolledBack {
                        cause: Box::new(cause),
                    },
                    Err(rollback) => CaptureError::RollbackFailed {
                        cause: Box::new(cause),
                        rollback: Box::new(rollback),
                    },
                });
            }
        }
    }
    let outcome = if !removed.is_empty() || !drift.is_empty() {
        Outcome::Reconciled { removed, applied }
    } else if existing.len() == planned.len() && before == after && applied.routing == 0 {
        Outcome::AlreadyInPlace(applied)
    } else {
        Outcome::Applied(applied)
    };
    tracing::info!(%outcome, "nftables capture done");
    Ok(outcome)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::{IptablesRules, TproxyRouting};

    #[test]
    fn dry_run_prints_v4_then_v6_and_routing_on_stderr() {
        let plan = Plan {
            mode: Mode::DryRun,
            backend: Backend::Iptables(None),
            rules: RenderedRules::Iptables(IptablesRules {
                v4: "* nat\n-N ISTIO_OUTPUT\nCOMMIT\n".into(),
                v6: Some("* nat\n-N ISTIO_OUTPUT\nCOMMIT\n".into()),
            }),
            tproxy: Some(TproxyRouting {
                mark: 1337,
                table: 133,
                ipv6: false,
            }),
        };
        let out = dry_run(&plan);
        assert_eq!(
            out.stdout,
            "* nat\n-N ISTIO_OUTPUT\nCOMMIT\n* nat\n-N ISTIO_OUTPUT\nCOMMIT\n"
        );
        assert_eq!(
            out.stderr,
            "ip -4 rule add fwmark 1337 lookup 133\nip -4 route add local default dev lo table 133\n"
        );
    }

    #[test]
    fn dry_run_of_nft_is_the_transaction() {
        let plan = Plan {
            mode: Mode::DryRun,
            backend: Backend::Nftables,
            rules: RenderedRules::Nftables(
                "add table inet istio-proxy-nat\nflush table inet istio-proxy-nat".into(),
            ),
            tproxy: None,
        };
        let out = dry_run(&plan);
        assert_eq!(
            out.stdout,
            "add table inet istio-proxy-nat\nflush table inet istio-proxy-nat\n"
        );
        assert!(out.stderr.is_empty());
    }

    #[test]
    fn nft_size_counts_commands() {
        let t = "add table inet x\nadd chain inet x output { type nat hook output priority -100 ; }\nadd rule inet x output counter return\ninsert rule inet x output index 0 return\n";
        assert_eq!(
            nft_size(t, 1),
            Applied {
                rules: 2,
                chains: 1,
                nft_tables: 1,
                routing: 0
            }
        );
    }
}
