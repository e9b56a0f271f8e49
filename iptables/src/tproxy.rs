//! The policy routing TPROXY needs: packets carrying the TPROXY mark are looked up in a table
//! whose only route delivers everything locally, like Istio's `configureTProxyRoutes`:
//! `ip rule add fwmark MARK lookup TABLE` and `ip route add local default dev lo table TABLE`.

use std::collections::BTreeSet;
use std::fmt;

use crate::backend::Family;
use crate::command::Cmd;
use crate::exec_error::CaptureError;
use crate::plan::TproxyRouting;

/// One routing entry this run added, so that a failed apply can take exactly it away again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Added {
    Rule {
        family: Family,
        mark: u32,
        table: u32,
    },
    Route {
        family: Family,
        table: u32,
    },
}

impl fmt::Display for Added {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Added::Rule {
                family,
                mark,
                table,
            } => {
                write!(
                    f,
                    "ip {} rule add fwmark {mark} lookup {table}",
                    family.ip_flag()
                )
            }
            Added::Route { family, table } => {
                write!(
                    f,
                    "ip {} route add local default dev lo table {table}",
                    family.ip_flag()
                )
            }
        }
    }
}

/// The families a routing plan covers.
pub(crate) fn families(r: &TproxyRouting) -> Vec<Family> {
    if r.ipv6 {
        vec![Family::V4, Family::V6]
    } else {
        vec![Family::V4]
    }
}

/// The commands that would set up `r` on a clean machine, for dry runs.
pub(crate) fn commands(r: &TproxyRouting) -> Vec<Added> {
    families(r)
        .into_iter()
        .flat_map(|family| {
            [
                Added::Rule {
                    family,
                    mark: r.mark,
                    table: r.table,
                },
                Added::Route {
                    family,
                    table: r.table,
                },
            ]
        })
        .collect()
}

/// One `PREF: from all fwmark MARK lookup TABLE` line, the only shape we create.
#[derive(Debug, Clone, PartialEq, Eq)]
struct IpRule {
    pref: String,
    /// The table as `ip` prints it: a number, or a name from `rt_tables`.
    lookup: String,
}

fn parse_rules(out: &str, mark: u32) -> Vec<IpRule> {
    let want_mark = format!("{mark:#x}");
    out.lines()
        .filter_map(|l| {
            let (pref, rest) = l.split_once(':')?;
            let w: Vec<&str> = rest.split_whitespace().collect();
            match w.as_slice() {
                ["from", "all", "fwmark", m, "lookup", t] if *m == want_mark => Some(IpRule {
                    pref: pref.trim().to_string(),
                    lookup: (*t).to_string(),
                }),
                _ => None,
            }
        })
        .collect()
}

/// Our-shaped rules for `mark`, optionally only those looking up `table`.
fn rules(family: Family, mark: u32, table: Option<u32>) -> Result<Vec<IpRule>, CaptureError> {
    let mut cmd = Cmd::new("ip")
        .args([family.ip_flag(), "rule", "show", "fwmark"])
        .arg(mark.to_string());
    if let Some(t) = table {
        cmd = cmd.arg("table").arg(t.to_string());
    }
    Ok(parse_rules(&cmd.run_ok()?, mark))
}

fn has_local_route(family: Family, table: u32) -> Result<bool, CaptureError> {
    let cmd = Cmd::new("ip")
        .args([family.ip_flag(), "route", "show", "table"])
        .arg(table.to_string());
    let ran = cmd.run()?;
    if !ran.success {
        // An IPv4 table that never held a route does not exist yet.
        if ran.stderr.contains("does not exist") {
            return Ok(false);
        }
        return Err(cmd.failed(&ran));
    }
    Ok(ran.stdout.lines().any(|l| {
        let w: Vec<&str> = l.split_whitespace().collect();
        w.starts_with(&["local", "default", "dev", "lo"])
    }))
}

fn table_in_use(family: Family, table: u32) -> Result<bool, CaptureError> {
    let out = Cmd::new("ip")
        .args([family.ip_flag(), "rule", "show", "table"])
        .arg(table.to_string())
        .run_ok()?;
    Ok(out.lines().any(|l| !l.trim().is_empty()))
}

/// Adds what is missing of `r` (nothing when all is in place) and returns what it added.
/// On failure, whatever this call added is removed again before the error is returned.
pub(crate) fn ensure(r: &TproxyRouting) -> Result<Vec<Added>, CaptureError> {
    let mut added = Vec::new();
    let result = (|| {
        for family in families(r) {
            if rules(family, r.mark, Some(r.table))?.is_empty() {
                Cmd::new("ip")
                    .args([family.ip_flag(), "rule", "add", "fwmark"])
                    .arg(r.mark.to_string())
                    .arg("lookup")
                    .arg(r.table.to_string())
                    .run_ok()?;
                added.push(Added::Rule {
                    family,
                    mark: r.mark,
                    table: r.table,
                });
            }
            if !has_local_route(family, r.table)? {
                Cmd::new("ip")
                    .args([
                        family.ip_flag(),
                        "route",
                        "add",
                        "local",
                        "default",
                        "dev",
                        "lo",
                        "table",
                    ])
                    .arg(r.table.to_string())
                    .run_ok()?;
                added.push(Added::Route {
                    family,
                    table: r.table,
                });
            }
        }
        Ok(())
    })();
    match result {
        Ok(()) => Ok(added),
        Err(e) => match undo(&added) {
            Ok(()) => Err(e),
            Err(u) => Err(CaptureError::RollbackFailed {
                cause: Box::new(e),
                rollback: Box::new(u),
            }),
        },
    }
}

/// Removes entries added by [`ensure`], newest first.
pub(crate) fn undo(added: &[Added]) -> Result<(), CaptureError> {
    for a in added.iter().rev() {
        match a {
            Added::Rule {
                family,
                mark,
                table,
            } => Cmd::new("ip")
                .args([family.ip_flag(), "rule", "del", "fwmark"])
                .arg(mark.to_string())
                .arg("lookup")
                .arg(table.to_string())
                .run_ok()?,
            Added::Route { family, table } => Cmd::new("ip")
                .args([
                    family.ip_flag(),
                    "route",
                    "del",
                    "local",
                    "default",
                    "dev",
                    "lo",
                    "table",
                ])
                .arg(table.to_string())
                .run_ok()?,
        };
    }
    Ok(())
}

/// Rules for `r`'s mark that look up another table: left over from a run with another
/// `--istio-inbound-tproxy-route-table`.
pub(crate) fn stale(r: &TproxyRouting) -> Result<Vec<String>, CaptureError> {
    let mut out = Vec::new();
    for family in families(r) {
        let wanted: BTreeSet<String> = rules(family, r.mark, Some(r.table))?
            .into_iter()
            .map(|x| x.pref)
            .collect();
        for x in rules(family, r.mark, None)? {
            if !wanted.contains(&x.pref) {
                out.push(format!(
                    "{}: policy rule `fwmark {:#x} lookup {}` (priority {}) where table {} is wanted",
                    family.label(),
                    r.mark,
                    x.lookup,
                    x.pref,
                    r.table
                ));
            }
        }
    }
    Ok(out)
}

/// Removes every rule of our shape for `marks`, in both families, and the local default route
/// of each table such a rule (or `plan_table`) looked up, once no rule uses that table any more.
/// Returns how many entries it removed.
pub(crate) fn remove(
    marks: &BTreeSet<u32>,
    plan_table: Option<u32>,
) -> Result<usize, CaptureError> {
    let mut removed = 0;
    for family in Family::ALL {
        let mut tables: BTreeSet<u32> = plan_table.into_iter().collect();
        for &mark in marks {
            let found = match rules(family, mark, None) {
                Ok(f) => f,
                // A kernel without IPv6 has no IPv6 rules to remove.
                Err(e) if family == Family::V6 => {
                    tracing::warn!(error = %e, "cannot list IPv6 policy rules, skipping them");
                    continue;
                }
                Err(e) => return Err(e),
            };
            for x in found {
                Cmd::new("ip")
                    .args([
                        family.ip_flag(),
                        "rule",
                        "del",
                        "pref",
                        x.pref.as_str(),
                        "fwmark",
                    ])
                    .arg(mark.to_string())
                    .args(["lookup", x.lookup.as_str()])
                    .run_ok()?;
                removed += 1;
                match x.lookup.parse::<u32>() {
                    Ok(t) => {
                        tables.insert(t);
                    }
                    Err(_) => tracing::warn!(
                        table = %x.lookup,
                        "policy rule looked up a named table; its routes are left alone"
                    ),
                }
            }
        }
        if marks.is_empty() && plan_table.is_none() {
            continue;
        }
        for t in tables {
            let local = match has_local_route(family, t) {
                Ok(l) => l,
                Err(e) if family == Family::V6 => {
                    tracing::warn!(error = %e, "cannot list IPv6 routes, skipping them");
                    continue;
                }
                Err(e) => return Err(e),
            };
            if local && !table_in_use(family, t)? {
                Cmd::new("ip")
                    .args([
                        family.ip_flag(),
                        "route",
                        "del",
                        "local",
                        "default",
                        "dev",
                        "lo",
                        "table",
                    ])
                    .arg(t.to_string())
                    .run_ok()?;
                removed += 1;
            }
        }
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_exact_fwmark_lookup_rules_are_ours() {
        let out = "0:\tfrom all lookup local\n32763:\tfrom all fwmark 0x10/0xff lookup 100\n32764:\tfrom all fwmark 0x539 lookup 134\n32765:\tfrom all fwmark 0x539 lookup 133\n32766:\tfrom all iif eth0 fwmark 0x539 lookup 133\n";
        assert_eq!(
            parse_rules(out, 1337),
            [
                IpRule {
                    pref: "32764".into(),
                    lookup: "134".into()
                },
                IpRule {
                    pref: "32765".into(),
                    lookup: "133".into()
                }
            ]
        );
        assert!(parse_rules(out, 16).is_empty());
    }

    #[test]
    fn dry_run_commands() {
        let r = TproxyRouting {
            mark: 1337,
            table: 133,
            ipv6: true,
        };
        let cmds: Vec<String> = commands(&r).iter().map(ToString::to_string).collect();
        assert_eq!(
            cmds,
            [
                "ip -4 rule add fwmark 1337 lookup 133",
                "ip -4 route add local default dev lo table 133",
                "ip -6 rule add fwmark 1337 lookup 133",
                "ip -6 route add local default dev lo table 133",
            ]
        );
    }
}
