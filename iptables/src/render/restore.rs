//! A per-family list of iptables rules and its `iptables-restore --noflush` text.
//!
//! Chains are declared (`-N`) in the order they are first used, then chains that are only jump
//! targets; tables come in sorted order and empty tables are left out. This is what makes the
//! output identical to Istio's, which the apply side and the golden tests rely on.

/// An iptables table, in the sorted order in which restore text lists them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Table {
    Filter,
    Mangle,
    Nat,
    Raw,
}

impl Table {
    const ALL: [Table; 4] = [Table::Filter, Table::Mangle, Table::Nat, Table::Raw];

    fn name(self) -> &'static str {
        match self {
            Table::Filter => "filter",
            Table::Mangle => "mangle",
            Table::Nat => "nat",
            Table::Raw => "raw",
        }
    }
}

/// Chains and targets that exist without `-N`.
const BUILT_IN: [&str; 8] = [
    "INPUT",
    "OUTPUT",
    "FORWARD",
    "PREROUTING",
    "POSTROUTING",
    "ACCEPT",
    "RETURN",
    "DROP",
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Position {
    Append,
    /// `-I CHAIN N`, 1-based like iptables.
    Insert(u32),
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Rule {
    table: Table,
    chain: &'static str,
    position: Position,
    spec: String,
}

impl Rule {
    /// The chain this rule jumps to when `-j CHAIN` ends it (targets with options do not count).
    fn jump_target(&self) -> Option<&str> {
        let mut words = self.spec.rsplit(' ');
        let target = words.next()?;
        (words.next()? == "-j").then_some(target)
    }

    fn line(&self) -> String {
        match self.position {
            Position::Append => format!("-A {} {}", self.chain, self.spec),
            Position::Insert(n) => format!("-I {} {} {}", self.chain, n, self.spec),
        }
    }
}

/// The rules of one address family, in generation order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct RuleSet {
    rules: Vec<Rule>,
}

impl RuleSet {
    pub(crate) fn push(
        &mut self,
        position: Position,
        table: Table,
        chain: &'static str,
        spec: String,
    ) {
        self.rules.push(Rule {
            table,
            chain,
            position,
            spec,
        });
    }

    /// The input for `iptables-restore --noflush`.
    pub(crate) fn restore_text(&self) -> String {
        let mut out = String::new();
        for table in Table::ALL {
            let rules: Vec<&Rule> = self.rules.iter().filter(|r| r.table == table).collect();
            if rules.is_empty() {
                continue;
            }
            out.push_str("* ");
            out.push_str(table.name());
            out.push('\n');
            let mut declared: Vec<&str> = Vec::new();
            let used = rules.iter().map(|r| r.chain);
            let jumped = rules.iter().filter_map(|r| r.jump_target());
            for chain in used.chain(jumped) {
                if !BUILT_IN.contains(&chain) && !declared.contains(&chain) {
                    declared.push(chain);
                    out.push_str("-N ");
                    out.push_str(chain);
                    out.push('\n');
                }
            }
            for rule in rules {
                out.push_str(&rule.line());
                out.push('\n');
            }
            out.push_str("COMMIT\n");
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn declares_chains_in_first_use_order_then_jump_targets() {
        let mut set = RuleSet::default();
        set.push(
            Position::Append,
            Table::Raw,
            "OUTPUT",
            "-j ISTIO_OUTPUT_DNS".into(),
        );
        set.push(Position::Append, Table::Nat, "ISTIO_B", "-j ISTIO_C".into());
        set.push(Position::Append, Table::Nat, "ISTIO_A", "-j RETURN".into());
        set.push(
            Position::Insert(2),
            Table::Mangle,
            "PREROUTING",
            "-j MARK --set-mark 1".into(),
        );
        assert_eq!(
            set.restore_text(),
            "* mangle\n-I PREROUTING 2 -j MARK --set-mark 1\nCOMMIT\n\
             * nat\n-N ISTIO_B\n-N ISTIO_A\n-N ISTIO_C\n-A ISTIO_B -j ISTIO_C\n-A ISTIO_A -j RETURN\nCOMMIT\n\
             * raw\n-N ISTIO_OUTPUT_DNS\n-A OUTPUT -j ISTIO_OUTPUT_DNS\nCOMMIT\n"
        );
    }

    #[test]
    fn empty_set_renders_nothing() {
        assert_eq!(RuleSet::default().restore_text(), "");
    }
}
