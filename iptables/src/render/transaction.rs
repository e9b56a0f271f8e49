//! An nft transaction over Istio's three `inet` tables, rendered one command per line.
//!
//! Each table is created and flushed, then only the chains that receive rules are added (base
//! chains with their hook), then the rules. An insert into a chain that does not yet hold more
//! rules than its index becomes an append, because nft rejects it otherwise (Istio does the same).

use std::collections::HashMap;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum NftTable {
    Nat,
    Mangle,
    Raw,
}

impl NftTable {
    const ALL: [NftTable; 3] = [NftTable::Nat, NftTable::Mangle, NftTable::Raw];

    pub(crate) fn name(self) -> &'static str {
        match self {
            NftTable::Nat => "istio-proxy-nat",
            NftTable::Mangle => "istio-proxy-mangle",
            NftTable::Raw => "istio-proxy-raw",
        }
    }

    /// The chains of the table in declaration order, with the hook of base chains.
    fn chains(self) -> &'static [(&'static str, Option<&'static str>)] {
        match self {
            NftTable::Nat => &[
                ("prerouting", Some("type nat hook prerouting priority -100")),
                ("output", Some("type nat hook output priority -100")),
                ("istio-inbound", None),
                ("istio-redirect", None),
                ("istio-in-redirect", None),
                ("istio-output", None),
                ("istio-output-dns", None),
            ],
            NftTable::Mangle => &[
                (
                    "prerouting",
                    Some("type filter hook prerouting priority -150"),
                ),
                ("output", Some("type route hook output priority -150")),
                ("istio-divert", None),
                ("istio-tproxy", None),
                ("istio-inbound", None),
                ("istio-drop", None),
            ],
            NftTable::Raw => &[
                (
                    "prerouting",
                    Some("type filter hook prerouting priority -300"),
                ),
                ("output", Some("type filter hook output priority -300")),
                ("istio-inbound", None),
                ("istio-output-dns", None),
            ],
        }
    }

    fn slot(self) -> usize {
        match self {
            NftTable::Nat => 0,
            NftTable::Mangle => 1,
            NftTable::Raw => 2,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct NftRule {
    chain: &'static str,
    /// `Some(i)`: insert before the rule at 0-based index `i`.
    index: Option<usize>,
    expr: String,
}

/// Rules per table in generation order; IPv6-only rules are dropped when IPv6 is off.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Transaction {
    ipv6: bool,
    tables: [Vec<NftRule>; 3],
}

impl Transaction {
    pub(crate) fn new(ipv6: bool) -> Self {
        Transaction {
            ipv6,
            tables: [Vec::new(), Vec::new(), Vec::new()],
        }
    }

    pub(crate) fn add(&mut self, table: NftTable, chain: &'static str, expr: String) {
        self.tables[table.slot()].push(NftRule {
            chain,
            index: None,
            expr,
        });
    }

    pub(crate) fn add_v6(&mut self, table: NftTable, chain: &'static str, expr: String) {
        if self.ipv6 {
            self.add(table, chain, expr);
        }
    }

    pub(crate) fn insert(
        &mut self,
        table: NftTable,
        chain: &'static str,
        index: usize,
        expr: String,
    ) {
        self.tables[table.slot()].push(NftRule {
            chain,
            index: Some(index),
            expr,
        });
    }

    pub(crate) fn insert_v6(
        &mut self,
        table: NftTable,
        chain: &'static str,
        index: usize,
        expr: String,
    ) {
        if self.ipv6 {
            self.insert(table, chain, index, expr);
        }
    }

    /// The transaction as `nft -f` reads it, each command ending in a newline.
    pub(crate) fn render(&self) -> String {
        let mut out = String::new();
        for table in NftTable::ALL {
            let rules = &self.tables[table.slot()];
            let chains: Vec<_> = table
                .chains()
                .iter()
                .filter(|(name, _)| rules.iter().any(|r| r.chain == *name))
                .collect();
            if chains.is_empty() {
                continue;
            }
            let t = table.name();
            out.push_str(&format!("add table inet {t}\nflush table inet {t}\n"));
            for (name, hook) in chains {
                match hook {
                    Some(hook) => {
                        out.push_str(&format!("add chain inet {t} {name} {{ {hook} ; }}\n"))
                    }
                    None => out.push_str(&format!("add chain inet {t} {name}\n")),
                }
            }
            let mut counts: HashMap<&str, usize> = HashMap::new();
            for rule in rules {
                let count = counts.entry(rule.chain).or_insert(0);
                match rule.index {
                    Some(i) if i < *count => out.push_str(&format!(
                        "insert rule inet {t} {} index {i} {}\n",
                        rule.chain, rule.expr
                    )),
                    _ => out.push_str(&format!("add rule inet {t} {} {}\n", rule.chain, rule.expr)),
                }
                *count += 1;
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inserts_into_short_chains_become_appends() {
        let mut tx = Transaction::new(false);
        tx.insert(
            NftTable::Nat,
            "prerouting",
            0,
            "iifname a counter return".into(),
        );
        tx.insert(
            NftTable::Nat,
            "prerouting",
            0,
            "iifname b counter return".into(),
        );
        tx.insert(
            NftTable::Nat,
            "prerouting",
            5,
            "iifname c counter return".into(),
        );
        tx.add_v6(
            NftTable::Nat,
            "output",
            "ip6 daddr ::1 counter return".into(),
        );
        assert_eq!(
            tx.render(),
            "add table inet istio-proxy-nat\n\
             flush table inet istio-proxy-nat\n\
             add chain inet istio-proxy-nat prerouting { type nat hook prerouting priority -100 ; }\n\
             add rule inet istio-proxy-nat prerouting iifname a counter return\n\
             insert rule inet istio-proxy-nat prerouting index 0 iifname b counter return\n\
             add rule inet istio-proxy-nat prerouting iifname c counter return\n"
        );
    }

    #[test]
    fn tables_without_rules_are_left_out() {
        assert_eq!(Transaction::new(true).render(), "");
    }
}
