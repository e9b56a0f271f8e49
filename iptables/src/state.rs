//! The iptables-save / iptables-restore text format, read into tables, chains and rules.
//!
//! Both the machine's state (`iptables-save`) and the desired rules (the restore text of the
//! plan) are read with the same parser, so the two can be compared chain by chain.

/// The chains every iptables table may have built in; a chain with a policy is built in.
const BUILTIN_CHAINS: [&str; 5] = ["PREROUTING", "INPUT", "FORWARD", "OUTPUT", "POSTROUTING"];

/// Prefix of every chain Istio's generators create (and hence every chain of ours).
pub(crate) const OUR_CHAIN_PREFIX: &str = "ISTIO_";

/// One `*table` ... `COMMIT` block.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Table {
    pub name: String,
    /// Chains declared with `:NAME POLICY` (save output) or `-N NAME` (restore input).
    pub chains: Vec<Chain>,
    pub rules: Vec<Rule>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Chain {
    pub name: String,
    pub builtin: bool,
}

/// One `-A CHAIN spec` (or `-I CHAIN [N] spec`) line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Rule {
    pub chain: String,
    /// The rule text after the chain (and insert position), exactly as written: what
    /// `-D CHAIN spec` / `-C CHAIN spec` take.
    pub spec: String,
    pub parsed: Spec,
}

/// A rule's options, split into `[!] -opt args...` items for order-insensitive matching.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Spec {
    pub tokens: Vec<String>,
    pub items: Vec<Item>,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Item {
    pub negated: bool,
    pub option: String,
    pub args: Vec<String>,
}

/// Where a line of the text could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ParseError {
    pub line: usize,
    pub reason: String,
}

impl Table {
    pub(crate) fn chain(&self, name: &str) -> Option<&Chain> {
        self.chains.iter().find(|c| c.name == name)
    }

    /// Chains named `ISTIO_*` in this table.
    pub(crate) fn our_chains(&self) -> impl Iterator<Item = &Chain> {
        self.chains
            .iter()
            .filter(|c| !c.builtin && c.name.starts_with(OUR_CHAIN_PREFIX))
    }

    pub(crate) fn rules_in<'a>(&'a self, chain: &'a str) -> impl Iterator<Item = &'a Rule> {
        self.rules.iter().filter(move |r| r.chain == chain)
    }

    /// Whether `chain` is built in: declared with a policy, or (in restore input, where built-in
    /// chains are not declared) one of the standard names and not created with `-N`.
    pub(crate) fn is_builtin(&self, chain: &str) -> bool {
        match self.chain(chain) {
            Some(c) => c.builtin,
            None => BUILTIN_CHAINS.contains(&chain),
        }
    }
}

impl Spec {
    pub(crate) fn parse(text: &str) -> Result<Spec, String> {
        let tokens = split_words(text)?;
        let mut items: Vec<Item> = Vec::new();
        let mut negate_next = false;
        for t in &tokens {
            if t == "!" {
                negate_next = true;
            } else if t.starts_with('-') && t.len() > 1 && !is_negative_number(t) {
                items.push(Item {
                    negated: negate_next,
                    option: canonical_option(t).to_string(),
                    args: Vec::new(),
                });
                negate_next = false;
            } else if let Some(last) = items.last_mut() {
                // The old `--dport ! 53` spelling puts the `!` after the option.
                if negate_next {
                    last.negated = true;
                    negate_next = false;
                }
                last.args.push(t.clone());
            } else {
                return Err(format!("`{t}` is not an option"));
            }
        }
        Ok(Spec { tokens, items })
    }

    /// The jump (`-j`) or goto (`-g`) target.
    pub(crate) fn target(&self) -> Option<&str> {
        self.items
            .iter()
            .find(|i| i.option == "-j" || i.option == "-g")
            .and_then(|i| i.args.first())
            .map(String::as_str)
    }

    /// The first argument of a non-negated `option`.
    pub(crate) fn value(&self, option: &str) -> Option<&str> {
        self.items
            .iter()
            .find(|i| i.option == option && !i.negated)
            .and_then(|i| i.args.first())
            .map(String::as_str)
    }

    /// The items other than `-m MODULE`, keyed by (negated, option): what a rule matches on and
    /// does, independent of the order iptables prints it in.
    pub(crate) fn options(&self) -> Vec<(bool, &str)> {
        let mut v: Vec<(bool, &str)> = self
            .items
            .iter()
            .filter(|i| i.option != "-m")
            .map(|i| (i.negated, i.option.as_str()))
            .collect();
        v.sort_unstable();
        v
    }

    /// Whether two specs say the same thing, ignoring option order and the `-m tcp`/`-m udp`
    /// that iptables-save adds for `--dport`/`--sport`.
    pub(crate) fn same_as(&self, other: &Spec) -> bool {
        fn key(s: &Spec) -> Vec<&Item> {
            let mut v: Vec<&Item> = s
                .items
                .iter()
                .filter(|i| {
                    !(i.option == "-m"
                        && matches!(i.args.first().map(String::as_str), Some("tcp" | "udp")))
                })
                .collect();
            v.sort_unstable();
            v
        }
        key(self) == key(other)
    }
}

fn is_negative_number(t: &str) -> bool {
    t[1..].chars().all(|c| c.is_ascii_digit())
}

/// iptables-save prints short options; restore input may use the long ones.
fn canonical_option(opt: &str) -> &str {
    match opt {
        "--jump" => "-j",
        "--goto" => "-g",
        "--match" => "-m",
        "--protocol" => "-p",
        "--source" | "--src" => "-s",
        "--destination" | "--dst" => "-d",
        "--in-interface" => "-i",
        "--out-interface" => "-o",
        "--destination-port" => "--dport",
        "--source-port" => "--sport",
        "--to-port" => "--to-ports",
        other => other,
    }
}

/// Splits a rule the way iptables-restore does: on blanks, with `"..."` quoting (and `\"`
/// inside quotes).
pub(crate) fn split_words(text: &str) -> Result<Vec<String>, String> {
    let mut words = Vec::new();
    let mut cur = String::new();
    let mut in_word = false;
    let mut quoted = false;
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        match c {
            '"' => {
                quoted = !quoted;
                in_word = true;
            }
            '\\' if quoted => match chars.next() {
                Some(n) => cur.push(n),
                None => return Err("trailing backslash".into()),
            },
            c if c.is_whitespace() && !quoted => {
                if in_word {
                    words.push(std::mem::take(&mut cur));
                    in_word = false;
                }
            }
            c => {
                cur.push(c);
                in_word = true;
            }
        }
    }
    if quoted {
        return Err("unterminated quote".into());
    }
    if in_word {
        words.push(cur);
    }
    Ok(words)
}

/// Reads iptables-save output or iptables-restore input. Comments and blank lines are
/// skipped; `-N`, `-A` and `-I` build the chains and rules (`-I` rules are listed where they
/// appear: their position only matters to the kernel, not to what is ours).
pub(crate) fn parse(text: &str) -> Result<Vec<Table>, ParseError> {
    let mut tables: Vec<Table> = Vec::new();
    let mut current: Option<Table> = None;
    for (idx, raw) in text.lines().enumerate() {
        let line_no = idx + 1;
        let err = |reason: String| ParseError {
            line: line_no,
            reason,
        };
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if let Some(name) = line.strip_prefix('*') {
            if current.is_some() {
                return Err(err("a new table starts before COMMIT".into()));
            }
            let name = name.trim();
            if name.is_empty() {
                return Err(err("table name missing after `*`".into()));
            }
            current = Some(Table {
                name: name.to_string(),
                ..Table::default()
            });
            continue;
        }
        let Some(table) = current.as_mut() else {
            return Err(err(format!("`{line}` outside of a table block")));
        };
        if line == "COMMIT" {
            if let Some(t) = current.take() {
                tables.push(t);
            }
            continue;
        }
        if let Some(decl) = line.strip_prefix(':') {
            let mut parts = decl.split_whitespace();
            let name = parts
                .next()
                .ok_or_else(|| err("chain name missing".into()))?;
            let policy = parts.next().unwrap_or("-");
            table.chains.push(Chain {
                name: name.to_string(),
                builtin: policy != "-",
            });
            continue;
        }
        let (op, rest) = line.split_once(char::is_whitespace).unwrap_or((line, ""));
        let rest = rest.trim_start();
        let (chain, spec) = rest.split_once(char::is_whitespace).unwrap_or((rest, ""));
        if chain.is_empty() {
            return Err(err(format!("`{op}` without a chain")));
        }
        match op {
            "-N" | "--new-chain" => table.chains.push(Chain {
                name: chain.to_string(),
                builtin: false,
            }),
            "-A" | "--append" | "-I" | "--insert" => {
                let mut spec = spec.trim();
                if (op == "-I" || op == "--insert")
                    && let Some((first, after)) = spec.split_once(char::is_whitespace)
                    && first.chars().all(|c| c.is_ascii_digit())
                {
                    spec = after.trim_start();
                }
                let parsed = Spec::parse(spec).map_err(err)?;
                table.rules.push(Rule {
                    chain: chain.to_string(),
                    spec: spec.to_string(),
                    parsed,
                });
            }
            other => return Err(err(format!("unsupported command `{other}`"))),
        }
    }
    if current.is_some() {
        return Err(ParseError {
            line: text.lines().count(),
            reason: "the last table has no COMMIT".into(),
        });
    }
    Ok(tables)
}

/// A mark or mark/mask as iptables prints or takes it (`0x539`, `1337`, `0x539/0xffffffff`):
/// the mark value.
pub(crate) fn mark_value(text: &str) -> Option<u32> {
    let v = text.split('/').next()?;
    match v.strip_prefix("0x") {
        Some(hex) => u32::from_str_radix(hex, 16).ok(),
        None => v.parse().ok(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAVE: &str = "# Generated by iptables-save v1.8.9 on Tue Dec  1 21:22:18 2026
*nat
:PREROUTING ACCEPT [0:0]
:INPUT ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
:ISTIO_A - [0:0]
-A OUTPUT ! -d 127.0.0.1/32 -o lo -p tcp -m multiport ! --dports 53,15008 -m owner --uid-owner 1337 -j ISTIO_A
-A ISTIO_A -p tcp -m tcp --dport 15008 -j RETURN
-A POSTROUTING -m comment --comment \"two words\" -j MASQUERADE
COMMIT
# Completed on Tue Dec  1 21:22:18 2026
";

    #[test]
    fn parses_save_output() {
        let t = parse(SAVE).unwrap();
        assert_eq!(t.len(), 1);
        let nat = &t[0];
        assert_eq!(nat.name, "nat");
        assert!(nat.is_builtin("OUTPUT"));
        assert!(!nat.is_builtin("ISTIO_A"));
        assert_eq!(nat.our_chains().count(), 1);
        assert_eq!(nat.rules.len(), 3);
        let r = &nat.rules[0];
        assert_eq!(r.chain, "OUTPUT");
        assert_eq!(r.parsed.target(), Some("ISTIO_A"));
        assert!(r.parsed.items.contains(&Item {
            negated: true,
            option: "--dports".into(),
            args: vec!["53,15008".into()]
        }));
        assert!(r.parsed.items.contains(&Item {
            negated: true,
            option: "-d".into(),
            args: vec!["127.0.0.1/32".into()]
        }));
        assert_eq!(
            nat.rules[2].parsed.value("--comment"),
            Some("two words"),
            "quoted words stay one argument"
        );
    }

    #[test]
    fn parses_restore_input_with_inserts_and_spaced_table_header() {
        let t = parse(
            "* nat\n-N ISTIO_X\n-I PREROUTING 1 -i eth1 -j RETURN\n-A OUTPUT -j ISTIO_X\nCOMMIT\n",
        )
        .unwrap();
        assert_eq!(t[0].name, "nat");
        assert_eq!(t[0].rules[0].spec, "-i eth1 -j RETURN");
        assert!(t[0].is_builtin("PREROUTING"));
        assert!(!t[0].is_builtin("ISTIO_X"));
    }

    #[test]
    fn same_as_ignores_order_and_implicit_protocol_module() {
        let plan = Spec::parse("-o lo -s 127.0.0.6/32 -p tcp --dport 53 -j RETURN").unwrap();
        let saved =
            Spec::parse("-s 127.0.0.6/32 -o lo -p tcp -m tcp --dport 53 -j RETURN").unwrap();
        assert!(plan.same_as(&saved));
        let other =
            Spec::parse("-s 127.0.0.6/32 -o lo -p tcp -m tcp ! --dport 53 -j RETURN").unwrap();
        assert!(!plan.same_as(&other));
    }

    #[test]
    fn rejects_broken_text() {
        assert_eq!(
            parse("*nat\n-A OUTPUT -j RETURN\n").unwrap_err().reason,
            "the last table has no COMMIT"
        );
        assert_eq!(parse("-A OUTPUT -j RETURN\n").unwrap_err().line, 1);
        assert!(parse("*nat\n-A OUTPUT -m comment --comment \"open\nCOMMIT\n").is_err());
    }

    #[test]
    fn mark_values() {
        assert_eq!(mark_value("0x539"), Some(1337));
        assert_eq!(mark_value("1337/0xffffffff"), Some(1337));
        assert_eq!(mark_value("0x53a/0xffffffff"), Some(1338));
        assert_eq!(mark_value("lo"), None);
    }
}
