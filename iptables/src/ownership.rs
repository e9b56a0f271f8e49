//! Which rules on the machine are ours, decided from the machine's state alone.
//!
//! The rule (tested against foreign rules in the same chains):
//!
//! 1. Every rule in an `ISTIO_*` chain, and every `ISTIO_*` chain, is ours.
//! 2. Every rule, in any other chain, whose jump or goto target is an `ISTIO_*` chain is ours
//!    (Istio <= 1.24 `-p tcp`/`-p udp` jumps included).
//! 3. Our reconcile guardrails carry the comment [`GUARDRAIL_COMMENT`] and are ours.
//! 4. Other rules in built-in chains are ours only if the same family's state holds Istio's
//!    chains (evidence), and the rule has exactly the shape of a rule Istio's generator puts in
//!    that table and built-in chain (no extra matches), with the values tied to the evidence:
//!    - interface exclusions `PREROUTING -i IF -j RETURN` / `OUTPUT -o IF -j RETURN` (nat,
//!      mangle) only when corroborated: the PREROUTING/OUTPUT pair for the same interface
//!      exists (exclude-interfaces), or a `-i IF ... -j ISTIO_*` jump exists (kube-virt), or the
//!      desired rules contain the very rule;
//!    - TPROXY mangle rules (`CONNMARK --save-mark`/`--restore-mark`, `-o lo --mark M -j
//!      RETURN`) only for a mark `M` that our `ISTIO_DIVERT`/`ISTIO_TPROXY` chains set (or the
//!      plan's mark), and `-o lo ... -m owner -j MARK --set-mark 1338` only when those chains
//!      exist or the owner is one our chains exempt;
//!    - the pre-1.10 DNS rules put straight into `nat OUTPUT` (`-p udp --dport 53` owner
//!      RETURN, `REDIRECT --to-ports 15053`) and `raw OUTPUT`/`PREROUTING` (`CT --zone 1/2` on
//!      port 53/15053), owner-matching ones only for owners our chains exempt.
//!
//! Not recognised, on purpose: a bare `-m conntrack --ctstate INVALID -j DROP` in mangle
//! PREROUTING (old `DROP_INVALID` layout): it is a common hand-written hardening rule, and
//! leaving Istio's copy behind only drops invalid packets.

use std::collections::BTreeSet;

use crate::state::{OUR_CHAIN_PREFIX, Rule, Spec, Table, mark_value};

/// Comment carried by the temporary DROP rules of a reconcile, so that a crash while they are
/// in place leaves something a later run can recognise and remove.
pub(crate) const GUARDRAIL_COMMENT: &str = "vm-proxy-reconcile-guardrail";

/// The mark Istio's generator sets on the proxy's own connections to the workload in TPROXY
/// mode; a constant in the generator, not a flag.
const OUTBOUND_MARK: u32 = 1338;
/// The agent's DNS listener port, a constant in the generator.
const DNS_CAPTURE_PORT: &str = "15053";

/// What one family's state says about Istio's presence.
#[derive(Debug, Clone, Default)]
pub(crate) struct Evidence {
    /// An `ISTIO_*` chain, or a jump to one, exists.
    present: bool,
    /// Marks set by rules in `ISTIO_*` chains (TPROXY) or named by the plan.
    marks: BTreeSet<u32>,
    /// A rule in an `ISTIO_*` chain sets a TPROXY mark: our TPROXY chains are there.
    tproxy_chains: bool,
    /// uid/gid values matched by rules in `ISTIO_*` chains.
    owners: BTreeSet<String>,
}

impl Evidence {
    pub(crate) fn from_state(tables: &[Table], plan_mark: Option<u32>) -> Evidence {
        let mut ev = Evidence::default();
        ev.marks.extend(plan_mark);
        for t in tables {
            if t.our_chains().next().is_some() {
                ev.present = true;
            }
            for r in &t.rules {
                if is_our_target(&r.parsed) {
                    ev.present = true;
                }
                if !r.chain.starts_with(OUR_CHAIN_PREFIX) {
                    continue;
                }
                for item in &r.parsed.items {
                    let arg = item.args.first().map(String::as_str);
                    match (item.option.as_str(), arg) {
                        ("--uid-owner" | "--gid-owner", Some(o)) => {
                            ev.owners.insert(o.to_string());
                        }
                        ("--set-xmark" | "--set-mark" | "--tproxy-mark", Some(m)) => {
                            if let Some(m) = mark_value(m).filter(|m| *m != OUTBOUND_MARK) {
                                ev.marks.insert(m);
                                ev.tproxy_chains = true;
                            }
                        }
                        _ => {}
                    }
                }
            }
        }
        ev
    }

    pub(crate) fn present(&self) -> bool {
        self.present
    }

    /// TPROXY marks our rules use, for finding our policy-routing rules.
    pub(crate) fn marks(&self) -> impl Iterator<Item = u32> + '_ {
        self.marks.iter().copied()
    }
}

fn is_our_target(spec: &Spec) -> bool {
    spec.target()
        .is_some_and(|t| t.starts_with(OUR_CHAIN_PREFIX))
}

/// Whether `rule` of `table` is ours (see the module documentation). `desired` is the same
/// table of the rules about to be applied, when there are any.
pub(crate) fn is_ours(table: &Table, rule: &Rule, ev: &Evidence, desired: Option<&Table>) -> bool {
    if rule.chain.starts_with(OUR_CHAIN_PREFIX) && !table.is_builtin(&rule.chain) {
        return true;
    }
    let spec = &rule.parsed;
    if is_our_target(spec) {
        return true;
    }
    if !table.is_builtin(&rule.chain) {
        return false;
    }
    if table.name == "filter" && spec.value("--comment") == Some(GUARDRAIL_COMMENT) {
        return true;
    }
    if !ev.present {
        return false;
    }
    match (table.name.as_str(), rule.chain.as_str()) {
        ("nat" | "mangle", "PREROUTING") => {
            is_corroborated_interface_return(table, rule, desired)
                || (table.name == "mangle" && is_tproxy_prerouting(spec, ev))
        }
        ("nat", "OUTPUT") => {
            is_corroborated_interface_return(table, rule, desired) || is_old_nat_dns(spec, ev)
        }
        ("mangle", "OUTPUT") => {
            is_corroborated_interface_return(table, rule, desired) || is_tproxy_output(spec, ev)
        }
        ("raw", "OUTPUT") => is_old_raw_dns_output(spec, ev),
        ("raw", "PREROUTING") => is_old_raw_dns_prerouting(spec),
        _ => false,
    }
}

/// `spec`'s options (other than `-m`) are exactly `required` plus any of `optional`.
fn has_options(spec: &Spec, required: &[(bool, &str)], optional: &[(bool, &str)]) -> bool {
    let mut opts = spec.options();
    for req in required {
        match opts.iter().position(|o| o == req) {
            Some(i) => {
                opts.remove(i);
            }
            None => return false,
        }
    }
    opts.iter().all(|o| optional.contains(o))
}

const ANY_OWNER: [(bool, &str); 2] = [(false, "--uid-owner"), (false, "--gid-owner")];

fn owner_is_ours(spec: &Spec, ev: &Evidence) -> bool {
    let owners: Vec<&str> = ANY_OWNER
        .iter()
        .filter_map(|(_, o)| spec.value(o))
        .collect();
    owners.len() == 1 && ev.owners.contains(owners[0])
}

fn with_owner<'a>(base: &[(bool, &'a str)], spec: &Spec) -> Vec<(bool, &'a str)> {
    let owner = if spec.value("--uid-owner").is_some() {
        "--uid-owner"
    } else {
        "--gid-owner"
    };
    let mut v = base.to_vec();
    v.push((false, owner));
    v
}

fn mark_is_ours(spec: &Spec, ev: &Evidence) -> bool {
    spec.value("--mark")
        .and_then(mark_value)
        .is_some_and(|m| ev.marks.contains(&m))
}

/// `-i IF -j RETURN` in PREROUTING or `-o IF -j RETURN` in OUTPUT, with one of: the other half
/// of the exclude-interface pair, a kube-virt jump for the same interface, or the same rule in
/// the desired rules.
fn is_corroborated_interface_return(table: &Table, rule: &Rule, desired: Option<&Table>) -> bool {
    let spec = &rule.parsed;
    let (this_opt, other_chain, other_opt) = match rule.chain.as_str() {
        "PREROUTING" => ("-i", "OUTPUT", "-o"),
        "OUTPUT" => ("-o", "PREROUTING", "-i"),
        _ => return false,
    };
    if spec.target() != Some("RETURN")
        || !has_options(spec, &[(false, this_opt), (false, "-j")], &[])
    {
        return false;
    }
    let Some(iface) = spec.value(this_opt) else {
        return false;
    };
    let pair = table.rules_in(other_chain).any(|r| {
        r.parsed.target() == Some("RETURN")
            && has_options(&r.parsed, &[(false, other_opt), (false, "-j")], &[])
            && r.parsed.value(other_opt) == Some(iface)
    });
    let kube_virt = rule.chain == "PREROUTING"
        && table
            .rules_in("PREROUTING")
            .any(|r| is_our_target(&r.parsed) && r.parsed.value("-i") == Some(iface));
    let planned = desired.is_some_and(|d| d.rules_in(&rule.chain).any(|r| r.parsed.same_as(spec)));
    pair || kube_virt || planned
}

fn is_tproxy_prerouting(spec: &Spec, ev: &Evidence) -> bool {
    spec.value("-p") == Some("tcp")
        && spec.target() == Some("CONNMARK")
        && has_options(
            spec,
            &[
                (false, "-p"),
                (false, "--mark"),
                (false, "-j"),
                (false, "--save-mark"),
            ],
            &[(false, "--nfmask"), (false, "--ctmask")],
        )
        && mark_is_ours(spec, ev)
}

fn is_tproxy_output(spec: &Spec, ev: &Evidence) -> bool {
    if spec.value("-p") != Some("tcp") {
        return false;
    }
    match spec.target() {
        Some("RETURN") => {
            spec.value("-o") == Some("lo")
                && has_options(
                    spec,
                    &[
                        (false, "-p"),
                        (false, "-o"),
                        (false, "--mark"),
                        (false, "-j"),
                    ],
                    &[],
                )
                && mark_is_ours(spec, ev)
        }
        Some("MARK") => {
            let set = spec
                .value("--set-xmark")
                .or_else(|| spec.value("--set-mark"));
            let set_opt = if spec.value("--set-xmark").is_some() {
                "--set-xmark"
            } else {
                "--set-mark"
            };
            spec.value("-o") == Some("lo")
                && set.and_then(mark_value) == Some(OUTBOUND_MARK)
                && has_options(
                    spec,
                    &with_owner(
                        &[
                            (true, "-d"),
                            (false, "-p"),
                            (false, "-o"),
                            (false, "-j"),
                            (false, set_opt),
                        ],
                        spec,
                    ),
                    &[],
                )
                // The owners live in nat, which a crash may have kept from being applied
                // while mangle was; the TPROXY chains next to this rule are proof enough.
                && (ev.tproxy_chains || owner_is_ours(spec, ev))
        }
        Some("CONNMARK") => {
            has_options(
                spec,
                &[
                    (false, "-p"),
                    (false, "--mark"),
                    (false, "-j"),
                    (false, "--restore-mark"),
                ],
                &[(false, "--nfmask"), (false, "--ctmask")],
            ) && mark_is_ours(spec, ev)
        }
        _ => false,
    }
}

/// Pre-1.10 layouts put the UDP DNS capture straight into `nat OUTPUT`.
fn is_old_nat_dns(spec: &Spec, ev: &Evidence) -> bool {
    if spec.value("-p") != Some("udp") || spec.value("--dport") != Some("53") {
        return false;
    }
    match spec.target() {
        Some("RETURN") => {
            has_options(
                spec,
                &with_owner(&[(false, "-p"), (false, "--dport"), (false, "-j")], spec),
                &[],
            ) && owner_is_ours(spec, ev)
        }
        Some("REDIRECT") => {
            spec.value("--to-ports") == Some(DNS_CAPTURE_PORT)
                && has_options(
                    spec,
                    &[
                        (false, "-p"),
                        (false, "--dport"),
                        (false, "-j"),
                        (false, "--to-ports"),
                    ],
                    &[(false, "-d")],
                )
        }
        _ => false,
    }
}

/// Pre-1.10 layouts put the DNS conntrack zones straight into `raw OUTPUT`.
fn is_old_raw_dns_output(spec: &Spec, ev: &Evidence) -> bool {
    if spec.value("-p") != Some("udp") || spec.target() != Some("CT") {
        return false;
    }
    let zone = spec.value("--zone");
    let base = [(false, "-p"), (false, "-j"), (false, "--zone")];
    if spec.value("--dport") == Some("53") {
        let mut b = base.to_vec();
        b.push((false, "--dport"));
        (zone == Some("1")
            && has_options(spec, &with_owner(&b, spec), &[])
            && owner_is_ours(spec, ev))
            || (zone == Some("2") && has_options(spec, &b, &[(false, "-d")]))
    } else if spec.value("--sport") == Some(DNS_CAPTURE_PORT) {
        let mut b = base.to_vec();
        b.push((false, "--sport"));
        zone == Some("2")
            && has_options(spec, &with_owner(&b, spec), &[])
            && owner_is_ours(spec, ev)
    } else {
        false
    }
}

/// Pre-1.10 layouts put the resolver's answers into conntrack zone 1 in `raw PREROUTING`.
fn is_old_raw_dns_prerouting(spec: &Spec) -> bool {
    spec.value("-p") == Some("udp")
        && spec.target() == Some("CT")
        && spec.value("--zone") == Some("1")
        && spec.value("--sport") == Some("53")
        && has_options(
            spec,
            &[
                (false, "-p"),
                (false, "--sport"),
                (false, "-j"),
                (false, "--zone"),
            ],
            &[(false, "-d"), (false, "-s")],
        )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::parse;

    fn ours(save: &str) -> Vec<String> {
        let tables = parse(save).unwrap();
        let ev = Evidence::from_state(&tables, None);
        tables
            .iter()
            .flat_map(|t| {
                let ev = &ev;
                t.rules
                    .iter()
                    .filter(move |r| is_ours(t, r, ev, None))
                    .map(move |r| format!("{} {} {}", t.name, r.chain, r.spec))
            })
            .collect()
    }

    #[test]
    fn jumps_and_our_chains_are_ours_foreign_rules_are_not() {
        let got = ours(
            "*nat
:PREROUTING ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:ISTIO_OUTPUT - [0:0]
:DOCKER - [0:0]
-A PREROUTING -m addrtype --dst-type LOCAL -j DOCKER
-A OUTPUT -p tcp -j ISTIO_OUTPUT
-A OUTPUT -d 10.0.0.0/8 -j RETURN
-A OUTPUT -o eth9 -j RETURN
-A DOCKER -i docker0 -j RETURN
-A DOCKER -j ISTIO_OUTPUT
-A ISTIO_OUTPUT -m owner --uid-owner 1337 -j RETURN
COMMIT
",
        );
        assert_eq!(
            got,
            [
                "nat OUTPUT -p tcp -j ISTIO_OUTPUT",
                "nat DOCKER -j ISTIO_OUTPUT",
                "nat ISTIO_OUTPUT -m owner --uid-owner 1337 -j RETURN",
            ]
        );
    }

    #[test]
    fn interface_returns_need_corroboration() {
        let got = ours(
            "*nat
:PREROUTING ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:ISTIO_REDIRECT - [0:0]
-A PREROUTING -i eth1 -j ISTIO_REDIRECT
-A PREROUTING -i eth1 -j RETURN
-A PREROUTING -i not-istio-nic -j RETURN
-A OUTPUT -o not-istio-nic -j RETURN
-A PREROUTING -i lonely0 -j RETURN
-A OUTPUT -o lonely1 -j RETURN
-A PREROUTING -i eth5 -p tcp -j RETURN
COMMIT
",
        );
        assert_eq!(
            got,
            [
                "nat PREROUTING -i eth1 -j ISTIO_REDIRECT",
                "nat PREROUTING -i eth1 -j RETURN",
                "nat PREROUTING -i not-istio-nic -j RETURN",
                "nat OUTPUT -o not-istio-nic -j RETURN",
            ]
        );
    }

    #[test]
    fn nothing_but_jumps_without_evidence() {
        let got = ours(
            "*nat
:PREROUTING ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
-A PREROUTING -i not-istio-nic -j RETURN
-A OUTPUT -o not-istio-nic -j RETURN
COMMIT
*raw
:PREROUTING ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
-A PREROUTING -p udp -m udp --sport 53 -s 127.0.0.53/32 -j CT --zone 1
COMMIT
",
        );
        assert!(got.is_empty(), "{got:?}");
    }

    #[test]
    fn tproxy_mangle_rules_follow_the_marks_and_owners_of_our_chains() {
        let got = ours(
            "*mangle
:PREROUTING ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:ISTIO_DIVERT - [0:0]
:ISTIO_TPROXY - [0:0]
-A PREROUTING -p tcp -m mark --mark 0x539 -j CONNMARK --save-mark --nfmask 0xffffffff --ctmask 0xffffffff
-A PREROUTING -p tcp -m mark --mark 0x7 -j CONNMARK --save-mark --nfmask 0xffffffff --ctmask 0xffffffff
-A OUTPUT -o lo -p tcp -m mark --mark 0x539 -j RETURN
-A OUTPUT ! -d 127.0.0.1/32 -o lo -p tcp -m owner --uid-owner 1337 -j MARK --set-xmark 0x53a/0xffffffff
-A OUTPUT ! -d 127.0.0.1/32 -o lo -p tcp -m owner --uid-owner 1000 -j MARK --set-xmark 0x53a/0xffffffff
-A OUTPUT -p tcp -m connmark --mark 0x539 -j CONNMARK --restore-mark --nfmask 0xffffffff --ctmask 0xffffffff
-A ISTIO_DIVERT -j MARK --set-xmark 0x539/0xffffffff
-A ISTIO_TPROXY ! -d 127.0.0.1/32 -p tcp -j TPROXY --on-port 15006 --on-ip 0.0.0.0 --tproxy-mark 0x539/0xffffffff
COMMIT
*nat
:OUTPUT ACCEPT [0:0]
:ISTIO_OUTPUT - [0:0]
-A ISTIO_OUTPUT -m owner --uid-owner 1337 -j RETURN
COMMIT
",
        );
        assert_eq!(
            got,
            [
                "mangle PREROUTING -p tcp -m mark --mark 0x539 -j CONNMARK --save-mark --nfmask 0xffffffff --ctmask 0xffffffff",
                "mangle OUTPUT -o lo -p tcp -m mark --mark 0x539 -j RETURN",
                "mangle OUTPUT ! -d 127.0.0.1/32 -o lo -p tcp -m owner --uid-owner 1337 -j MARK --set-xmark 0x53a/0xffffffff",
                "mangle OUTPUT ! -d 127.0.0.1/32 -o lo -p tcp -m owner --uid-owner 1000 -j MARK --set-xmark 0x53a/0xffffffff",
                "mangle OUTPUT -p tcp -m connmark --mark 0x539 -j CONNMARK --restore-mark --nfmask 0xffffffff --ctmask 0xffffffff",
                "mangle ISTIO_DIVERT -j MARK --set-xmark 0x539/0xffffffff",
                "mangle ISTIO_TPROXY ! -d 127.0.0.1/32 -p tcp -j TPROXY --on-port 15006 --on-ip 0.0.0.0 --tproxy-mark 0x539/0xffffffff",
                "nat ISTIO_OUTPUT -m owner --uid-owner 1337 -j RETURN",
            ]
        );
        // Without our TPROXY chains only the owners our nat chains exempt vouch for the rule.
        let got = ours(
            "*mangle
:OUTPUT ACCEPT [0:0]
-A OUTPUT ! -d 127.0.0.1/32 -o lo -p tcp -m owner --uid-owner 1337 -j MARK --set-xmark 0x53a/0xffffffff
-A OUTPUT ! -d 127.0.0.1/32 -o lo -p tcp -m owner --uid-owner 1000 -j MARK --set-xmark 0x53a/0xffffffff
COMMIT
*nat
:OUTPUT ACCEPT [0:0]
:ISTIO_OUTPUT - [0:0]
-A ISTIO_OUTPUT -m owner --uid-owner 1337 -j RETURN
COMMIT
",
        );
        assert_eq!(
            got,
            [
                "mangle OUTPUT ! -d 127.0.0.1/32 -o lo -p tcp -m owner --uid-owner 1337 -j MARK --set-xmark 0x53a/0xffffffff",
                "nat ISTIO_OUTPUT -m owner --uid-owner 1337 -j RETURN",
            ]
        );
        let tables = parse("*mangle\n:ISTIO_DIVERT - [0:0]\n-A ISTIO_DIVERT -j MARK --set-xmark 0x539/0xffffffff\nCOMMIT\n").unwrap();
        assert_eq!(
            Evidence::from_state(&tables, Some(7))
                .marks()
                .collect::<Vec<_>>(),
            [7, 1337]
        );
    }

    #[test]
    fn pre_1_10_dns_rules_in_builtin_chains() {
        let got = ours(
            "*nat
:OUTPUT ACCEPT [0:0]
:ISTIO_OUTPUT - [0:0]
-A OUTPUT -p udp -m udp --dport 53 -m owner --uid-owner 3 -j RETURN
-A OUTPUT -p udp -m udp --dport 53 -m owner --uid-owner 99 -j RETURN
-A OUTPUT -d 127.0.0.53/32 -p udp -m udp --dport 53 -j REDIRECT --to-ports 15053
-A OUTPUT -d 127.0.0.53/32 -p udp -m udp --dport 53 -j REDIRECT --to-ports 5353
-A ISTIO_OUTPUT -m owner --uid-owner 3 -j RETURN
COMMIT
*raw
:PREROUTING ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
-A OUTPUT -p udp -m udp --dport 53 -m owner --uid-owner 3 -j CT --zone 1
-A OUTPUT -p udp -m udp --sport 15053 -m owner --uid-owner 3 -j CT --zone 2
-A OUTPUT -d 127.0.0.53/32 -p udp -m udp --dport 53 -j CT --zone 2
-A OUTPUT -p udp -m udp --dport 53 -j CT --zone 9
-A PREROUTING -d 127.0.0.53/32 -p udp -m udp --sport 53 -j CT --zone 1
COMMIT
",
        );
        assert_eq!(
            got,
            [
                "nat OUTPUT -p udp -m udp --dport 53 -m owner --uid-owner 3 -j RETURN",
                "nat OUTPUT -d 127.0.0.53/32 -p udp -m udp --dport 53 -j REDIRECT --to-ports 15053",
                "nat ISTIO_OUTPUT -m owner --uid-owner 3 -j RETURN",
                "raw OUTPUT -p udp -m udp --dport 53 -m owner --uid-owner 3 -j CT --zone 1",
                "raw OUTPUT -p udp -m udp --sport 15053 -m owner --uid-owner 3 -j CT --zone 2",
                "raw OUTPUT -d 127.0.0.53/32 -p udp -m udp --dport 53 -j CT --zone 2",
                "raw PREROUTING -d 127.0.0.53/32 -p udp -m udp --sport 53 -j CT --zone 1",
            ]
        );
    }

    #[test]
    fn guardrails_are_ours_plain_drops_are_not() {
        let got = ours(&format!(
            "*filter
:INPUT ACCEPT [0:0]
-A INPUT -p tcp -m comment --comment {GUARDRAIL_COMMENT} -j DROP
-A INPUT -p tcp -j DROP
COMMIT
"
        ));
        assert_eq!(
            got,
            [format!(
                "filter INPUT -p tcp -m comment --comment {GUARDRAIL_COMMENT} -j DROP"
            )]
        );
    }
}
