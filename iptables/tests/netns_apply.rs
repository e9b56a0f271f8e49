//! Applying and removing capture rules for real, each test in its own network namespace (so
//! the host's netfilter and routing state is never touched). Needs root and the Debian
//! packages iptables, nftables and iproute2.

use std::collections::BTreeSet;
use std::io::Write;
use std::process::Stdio;

use iptables::plan::{
    Backend, IptablesFlavor, IptablesRules, Mode, Plan, RenderedRules, TproxyRouting,
};
use iptables::{CaptureError, Outcome, execute};
use test_support::netns::Netns;

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/fixtures");

/// Goldens whose rules name groups (`java`, `ftp`) that exist only on the machines they were
/// written for; iptables resolves the names, so they cannot be applied here.
const NEEDS_NAMED_GROUPS: [&str; 4] = [
    "outbound-owner-groups",
    "outbound-owner-groups-exclude",
    "ipv6-dns-outbound-owner-groups",
    "ipv6-dns-outbound-owner-groups-exclude",
];

const TPROXY: TproxyRouting = TproxyRouting {
    mark: 1337,
    table: 133,
    ipv6: true,
};

// ---------------------------------------------------------------- fixtures and plans

/// The restore text of an iptables golden: its blocks minus the `iptables-save` command
/// lines; IPv4 tables come in sorted order, so a table name that does not sort after the
/// previous one starts the IPv6 part.
fn golden(name: &str) -> IptablesRules {
    let path = format!("{FIXTURES}/istio-iptables/{name}.golden");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let mut v4 = String::new();
    let mut v6 = String::new();
    let mut last = String::new();
    let mut in_v6 = false;
    for line in text.lines() {
        if line == "iptables-save" || line == "ip6tables-save" {
            continue;
        }
        if let Some(t) = line.strip_prefix("* ") {
            if !last.is_empty() && t <= last.as_str() {
                in_v6 = true;
            }
            last = t.to_string();
        }
        let out = if in_v6 { &mut v6 } else { &mut v4 };
        out.push_str(line);
        out.push('\n');
    }
    IptablesRules {
        v4,
        v6: (!v6.is_empty()).then_some(v6),
    }
}

fn nft_golden(name: &str) -> String {
    let path = format!("{FIXTURES}/istio-nftables/{name}.golden");
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn iptables_goldens() -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(format!("{FIXTURES}/istio-iptables"))
        .expect("fixtures directory")
        .filter_map(|e| {
            let n = e.ok()?.file_name().into_string().ok()?;
            n.strip_suffix(".golden").map(str::to_string)
        })
        .filter(|n| !NEEDS_NAMED_GROUPS.contains(&n.as_str()))
        .collect();
    names.sort();
    assert!(
        names.len() >= 20,
        "expected the Istio goldens, found {names:?}"
    );
    names
}

fn plan(
    mode: Mode,
    flavor: Option<IptablesFlavor>,
    rules: IptablesRules,
    tproxy: Option<TproxyRouting>,
) -> Plan {
    Plan {
        mode,
        backend: Backend::Iptables(flavor),
        rules: RenderedRules::Iptables(rules),
        tproxy,
    }
}

fn nft_plan(mode: Mode, text: &str, tproxy: Option<TproxyRouting>) -> Plan {
    Plan {
        mode,
        backend: Backend::Nftables,
        rules: RenderedRules::Nftables(text.to_string()),
        tproxy,
    }
}

fn rules(v4: &str, v6: Option<&str>) -> IptablesRules {
    IptablesRules {
        v4: v4.to_string(),
        v6: v6.map(str::to_string),
    }
}

// ---------------------------------------------------------------- machine helpers

fn flavor_name(f: IptablesFlavor) -> &'static str {
    match f {
        IptablesFlavor::Legacy => "legacy",
        IptablesFlavor::Nft => "nft",
    }
}

fn installed(binary: &str) -> bool {
    std::process::Command::new(binary)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Both flavors when both are installed (Debian's `iptables` package ships both).
fn flavors() -> Vec<IptablesFlavor> {
    let f: Vec<IptablesFlavor> = [IptablesFlavor::Legacy, IptablesFlavor::Nft]
        .into_iter()
        .filter(|f| installed(&format!("iptables-{}-save", flavor_name(*f))))
        .collect();
    assert!(
        !f.is_empty(),
        "neither iptables-legacy nor iptables-nft is installed (apt-get install -y iptables)"
    );
    f
}

fn run(ns: &Netns, plan: &Plan) -> Result<Outcome, CaptureError> {
    let plan = plan.clone();
    ns.in_ns(move || execute(&plan))
        .unwrap_or_else(|e| panic!("cannot enter {}: {e}", ns.name()))
}

fn run_ok(ns: &Netns, plan: &Plan) -> Outcome {
    run(ns, plan).unwrap_or_else(|e| panic!("{:?} in {}: {e}", plan.mode, ns.name()))
}

/// Feeds `text` to a program inside the namespace, panicking unless it succeeds.
fn feed(ns: &Netns, argv: &[&str], text: &str) {
    let mut c = ns.command(argv[0]);
    c.args(&argv[1..])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = c.spawn().unwrap_or_else(|e| panic!("{argv:?}: {e}"));
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(text.as_bytes())
        .expect("write stdin");
    let out = child.wait_with_output().expect("wait");
    assert!(
        out.status.success(),
        "{argv:?} failed: {}\ninput:\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn restore(ns: &Netns, family: &str, flavor: IptablesFlavor, text: &str) {
    let bin = format!("{family}-{}-restore", flavor_name(flavor));
    feed(ns, &[&bin, "--noflush"], text);
}

/// `X-save` output without comment lines and with counters zeroed.
fn save(ns: &Netns, family: &str, flavor: IptablesFlavor) -> String {
    let out = ns.run_ok(&[&format!("{family}-{}-save", flavor_name(flavor))]);
    normalize(&out)
}

fn normalize(save: &str) -> String {
    save.lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| match (l.starts_with(':'), l.rfind(" [")) {
            (true, Some(i)) => format!("{} [0:0]\n", &l[..i]),
            _ => format!("{l}\n"),
        })
        .collect()
}

/// Everything a cleanup must restore: both families of both flavors, the nft ruleset
/// (stateless), and the policy routing.
fn machine(ns: &Netns) -> String {
    let mut s = String::new();
    for f in flavors() {
        for fam in ["iptables", "ip6tables"] {
            s.push_str(&format!(
                "== {fam} {}\n{}",
                flavor_name(f),
                save(ns, fam, f)
            ));
        }
    }
    s.push_str("== nft\n");
    s.push_str(&native_nft_tables(
        &ns.run_ok(&["nft", "-s", "list", "ruleset"]),
    ));
    for fam in ["-4", "-6"] {
        s.push_str(&format!(
            "== ip {fam} rule\n{}",
            ns.run_ok(&["ip", fam, "rule", "show"])
        ));
        s.push_str(&format!(
            "== ip {fam} route table 133\n{}",
            route_table(ns, fam, 133)
        ));
    }
    s
}

/// The ruleset without the tables iptables-nft manages (`ip`/`ip6` filter, nat, mangle, raw,
/// security): those are compared through iptables-nft-save, which shows them the way iptables
/// sees them. In nft terms iptables-nft creates built-in chains only when first used and never
/// deletes them, so an emptied built-in chain is still listed by nft after a cleanup.
fn native_nft_tables(ruleset: &str) -> String {
    let mut out = String::new();
    let mut keep = true;
    for line in ruleset.lines() {
        if let Some(header) = line.strip_prefix("table ") {
            let w: Vec<&str> = header.split_whitespace().collect();
            keep = !matches!(
                w.as_slice(),
                [
                    "ip" | "ip6",
                    "filter" | "nat" | "mangle" | "raw" | "security",
                    "{"
                ]
            );
        }
        if keep {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

fn route_table(ns: &Netns, fam: &str, table: u32) -> String {
    // An IPv4 table that never had a route does not exist: empty.
    String::from_utf8_lossy(
        &ns.run(&["ip", fam, "route", "show", "table", &table.to_string()])
            .stdout,
    )
    .into_owned()
}

/// Rules of someone else in every table and family, including shapes close to ours.
const FOREIGN_V4: &str = "*filter
:KEEP_ME - [0:0]
-A INPUT -p tcp --dport 22 -j ACCEPT
-A INPUT -p tcp -j DROP
-A OUTPUT -j KEEP_ME
-A KEEP_ME -j RETURN
COMMIT
*nat
:FOREIGN_NAT - [0:0]
-A PREROUTING -p tcp --dport 8080 -j REDIRECT --to-ports 80
-A PREROUTING -i eth9 -j RETURN
-A OUTPUT -d 10.0.0.0/8 -j RETURN
-A OUTPUT -o eth8 -j RETURN
-A OUTPUT -m owner --uid-owner 1337 -j RETURN
-A POSTROUTING -o eth0 -j MASQUERADE
-A FOREIGN_NAT -j RETURN
COMMIT
*mangle
-A PREROUTING -m conntrack --ctstate INVALID -j DROP
-A PREROUTING -p tcp -m mark --mark 7 -j CONNMARK --save-mark
-A OUTPUT -p tcp --dport 25 -j MARK --set-mark 7
COMMIT
*raw
-A PREROUTING -p udp --dport 123 -j CT --notrack
-A OUTPUT -p udp --dport 53 -j CT --zone 9
COMMIT
";

const FOREIGN_V6: &str = "*filter
-A INPUT -p tcp --dport 22 -j ACCEPT
COMMIT
*nat
-A PREROUTING -p tcp --dport 8080 -j REDIRECT --to-ports 80
-A OUTPUT -d fd00::/8 -j RETURN
COMMIT
*mangle
-A OUTPUT -p tcp --dport 25 -j MARK --set-mark 7
COMMIT
*raw
-A PREROUTING -p udp --dport 123 -j CT --notrack
COMMIT
";

fn add_foreign(ns: &Netns, flavor: IptablesFlavor) {
    restore(ns, "iptables", flavor, FOREIGN_V4);
    restore(ns, "ip6tables", flavor, FOREIGN_V6);
    feed(
        ns,
        &["nft", "-f", "-"],
        "add table inet keepme\nadd chain inet keepme out { type filter hook output priority 0 ; }\nadd rule inet keepme out tcp dport 9 counter accept\n",
    );
    // Someone else's TPROXY-style routing with another mark and table.
    ns.run_ok(&["ip", "-4", "rule", "add", "fwmark", "7", "lookup", "77"]);
    ns.run_ok(&[
        "ip", "-4", "route", "add", "local", "default", "dev", "lo", "table", "77",
    ]);
}

fn ns_for(test: &str) -> Netns {
    // The prefix must stay short: interface names derive from namespace names.
    Netns::new(&format!("va{}", &test[..test.len().min(4)]))
}

fn cleanup_plan(
    flavor: Option<IptablesFlavor>,
    rules: IptablesRules,
    tproxy: Option<TproxyRouting>,
) -> Plan {
    plan(Mode::CleanupOnly, flavor, rules, tproxy)
}

/// Chains a rule set creates.
fn chains_in(r: &IptablesRules) -> usize {
    let text = format!("{}{}", r.v4, r.v6.as_deref().unwrap_or(""));
    text.lines().filter(|l| l.starts_with("-N ")).count()
}

fn count_lines(text: &str, needle: &str) -> usize {
    text.lines().filter(|l| l.contains(needle)).count()
}

// ---------------------------------------------------------------- iptables

#[test]
fn apply_installs_the_rules_once_and_a_second_apply_changes_nothing() {
    for flavor in flavors() {
        let ns = ns_for("once");
        add_foreign(&ns, flavor);
        let p = plan(Mode::Apply, Some(flavor), golden("tproxy"), Some(TPROXY));

        let first = run_ok(&ns, &p);
        let Outcome::Applied(a) = first else {
            panic!("{flavor:?}: first apply gave {first:?}");
        };
        assert_eq!(a.chains, chains_in(&golden("tproxy")), "{flavor:?}: {a}");
        assert_eq!(
            a.routing, 4,
            "{flavor:?}: ip rule + route for both families: {a}"
        );
        let v4 = save(&ns, "iptables", flavor);
        assert!(v4.contains(":ISTIO_TPROXY - [0:0]"), "{v4}");
        assert!(v4.contains("-A OUTPUT -j ISTIO_OUTPUT"), "{v4}");
        assert!(v4.contains("--on-port 15006"), "{v4}");
        let v6 = save(&ns, "ip6tables", flavor);
        assert!(
            v6.contains("-A ISTIO_OUTPUT -s ::6/128 -o lo -j RETURN"),
            "{v6}"
        );
        let after_first = machine(&ns);

        let second = run_ok(&ns, &p);
        assert!(
            matches!(second, Outcome::AlreadyInPlace(_)),
            "{flavor:?}: {second:?}"
        );
        assert_eq!(
            machine(&ns),
            after_first,
            "{flavor:?}: the second apply changed something"
        );
        let v4 = save(&ns, "iptables", flavor);
        let jumps = v4
            .lines()
            .filter(|l| *l == "-A OUTPUT -j ISTIO_OUTPUT")
            .count();
        assert_eq!(jumps, 1, "{v4}");
        assert_eq!(
            count_lines(
                &ns.run_ok(&["ip", "-4", "rule", "show"]),
                "fwmark 0x539 lookup 133"
            ),
            1
        );
    }
}

#[test]
fn reconcile_mode_on_a_clean_machine_just_applies() {
    let ns = ns_for("rcln");
    let out = run_ok(&ns, &plan(Mode::Reconcile, None, golden("empty"), None));
    assert!(matches!(out, Outcome::Applied(_)), "{out:?}");
}

#[test]
fn cleanup_restores_exactly_the_state_before() {
    for flavor in flavors() {
        let ns = ns_for("exact");
        add_foreign(&ns, flavor);
        let before = machine(&ns);
        run_ok(
            &ns,
            &plan(Mode::Apply, Some(flavor), golden("tproxy"), Some(TPROXY)),
        );
        assert_ne!(machine(&ns), before);

        let out = run_ok(
            &ns,
            &cleanup_plan(Some(flavor), golden("tproxy"), Some(TPROXY)),
        );
        let Outcome::Cleaned(r) = out else {
            panic!("{out:?}");
        };
        assert_eq!(r.chains, chains_in(&golden("tproxy")), "{flavor:?}: {r}");
        assert_eq!(r.routing, 4, "{flavor:?}: {r}");
        assert_eq!(
            machine(&ns),
            before,
            "{flavor:?}: cleanup left something or took too much"
        );
        let v4 = save(&ns, "iptables", flavor);
        assert!(
            v4.contains("-A OUTPUT -j KEEP_ME") && v4.contains(":FOREIGN_NAT"),
            "{v4}"
        );

        let again = run_ok(
            &ns,
            &cleanup_plan(Some(flavor), golden("tproxy"), Some(TPROXY)),
        );
        assert_eq!(
            again,
            Outcome::Cleaned(Default::default()),
            "cleanup on a clean machine"
        );
        assert_eq!(machine(&ns), before);
    }
}

#[test]
fn cleanup_on_a_pristine_namespace_does_nothing() {
    let ns = ns_for("prist");
    let before = machine(&ns);
    let out = run_ok(&ns, &cleanup_plan(None, golden("tproxy"), Some(TPROXY)));
    assert_eq!(out, Outcome::Cleaned(Default::default()));
    assert_eq!(machine(&ns), before);
}

#[test]
fn cleanup_finds_rules_applied_with_other_flags() {
    for flavor in flavors() {
        let ns = ns_for("flags");
        add_foreign(&ns, flavor);
        let before = machine(&ns);
        // Applied with TPROXY, DNS capture, an excluded interface and IPv6 ...
        run_ok(
            &ns,
            &plan(Mode::Apply, Some(flavor), golden("tproxy"), Some(TPROXY)),
        );
        // ... cleaned with the plan of a plain IPv4 REDIRECT setup and no TPROXY at all, and
        // without forcing the flavor: the TPROXY mark is read back from the rules.
        let out = run_ok(&ns, &cleanup_plan(None, golden("empty"), None));
        assert!(
            matches!(out, Outcome::Cleaned(r) if r.routing == 4),
            "{flavor:?}: {out:?}"
        );
        assert_eq!(machine(&ns), before, "{flavor:?}");
    }
}

/// What Istio 1.24 (before istio/istio#53998) applied for DNS capture on a VM: `-p tcp` and
/// `-p udp` jumps and a `raw ISTIO_OUTPUT` chain.
const ISTIO_1_24_V4: &str = "*nat
:ISTIO_INBOUND - [0:0]
:ISTIO_REDIRECT - [0:0]
:ISTIO_IN_REDIRECT - [0:0]
:ISTIO_OUTPUT - [0:0]
-A ISTIO_INBOUND -p tcp --dport 15008 -j RETURN
-A ISTIO_REDIRECT -p tcp -j REDIRECT --to-ports 15001
-A ISTIO_IN_REDIRECT -p tcp -j REDIRECT --to-ports 15006
-A PREROUTING -p tcp -j ISTIO_INBOUND
-A ISTIO_INBOUND -p tcp --dport 22 -j RETURN
-A ISTIO_INBOUND -p tcp -j ISTIO_IN_REDIRECT
-A OUTPUT -p tcp -j ISTIO_OUTPUT
-A OUTPUT -p udp -j ISTIO_OUTPUT
-A ISTIO_OUTPUT -o lo -s 127.0.0.6/32 -j RETURN
-A ISTIO_OUTPUT -o lo ! -d 127.0.0.1/32 -p tcp ! --dport 53 -m owner --uid-owner 1337 -j ISTIO_IN_REDIRECT
-A ISTIO_OUTPUT -o lo -p tcp ! --dport 53 -m owner ! --uid-owner 1337 -j RETURN
-A ISTIO_OUTPUT -m owner --uid-owner 1337 -j RETURN
-A ISTIO_OUTPUT -p tcp --dport 53 -d 127.0.0.53/32 -j REDIRECT --to-ports 15053
-A ISTIO_OUTPUT -p udp --dport 53 -m owner --uid-owner 1337 -j RETURN
-A ISTIO_OUTPUT -p udp --dport 53 -d 127.0.0.53/32 -j REDIRECT --to-port 15053
-A ISTIO_OUTPUT -d 127.0.0.1/32 -j RETURN
-A ISTIO_OUTPUT -j ISTIO_REDIRECT
COMMIT
*raw
:ISTIO_OUTPUT - [0:0]
:ISTIO_INBOUND - [0:0]
-A OUTPUT -p udp -j ISTIO_OUTPUT
-A PREROUTING -p udp -j ISTIO_INBOUND
-A ISTIO_OUTPUT -p udp --dport 53 -m owner --uid-owner 1337 -j CT --zone 1
-A ISTIO_OUTPUT -p udp --sport 15053 -m owner --uid-owner 1337 -j CT --zone 2
-A ISTIO_OUTPUT -p udp --dport 53 -d 127.0.0.53/32 -j CT --zone 2
-A ISTIO_INBOUND -p udp --sport 53 -s 127.0.0.53/32 -j CT --zone 1
COMMIT
";

/// What Istio before 1.10 applied: the UDP DNS rules straight into the built-in chains
/// (`tools/istio-iptables/pkg/capture/testdata/dns-uid-gid.golden` of that time).
const ISTIO_PRE_1_10_V4: &str = "*nat
:ISTIO_INBOUND - [0:0]
:ISTIO_REDIRECT - [0:0]
:ISTIO_IN_REDIRECT - [0:0]
:ISTIO_OUTPUT - [0:0]
-A ISTIO_INBOUND -p tcp --dport 15008 -j RETURN
-A ISTIO_REDIRECT -p tcp -j REDIRECT --to-ports 15001
-A ISTIO_IN_REDIRECT -p tcp -j REDIRECT --to-ports 15006
-A OUTPUT -p tcp -j ISTIO_OUTPUT
-A ISTIO_OUTPUT -o lo -s 127.0.0.6/32 -j RETURN
-A ISTIO_OUTPUT -m owner --uid-owner 3 -j RETURN
-A ISTIO_OUTPUT -m owner --gid-owner 1 -j RETURN
-A ISTIO_OUTPUT -p tcp --dport 53 -d 127.0.0.53/32 -j REDIRECT --to-ports 15053
-A ISTIO_OUTPUT -d 127.0.0.1/32 -j RETURN
-A OUTPUT -p udp --dport 53 -m owner --uid-owner 3 -j RETURN
-A OUTPUT -p udp --dport 53 -m owner --gid-owner 1 -j RETURN
-A OUTPUT -p udp --dport 53 -d 127.0.0.53/32 -j REDIRECT --to-port 15053
COMMIT
*raw
-A OUTPUT -p udp --dport 53 -m owner --uid-owner 3 -j CT --zone 1
-A OUTPUT -p udp --sport 15053 -m owner --uid-owner 3 -j CT --zone 2
-A OUTPUT -p udp --dport 53 -m owner --gid-owner 1 -j CT --zone 1
-A OUTPUT -p udp --sport 15053 -m owner --gid-owner 1 -j CT --zone 2
-A OUTPUT -p udp --dport 53 -d 127.0.0.53/32 -j CT --zone 2
-A PREROUTING -p udp --sport 53 -d 127.0.0.53/32 -j CT --zone 1
COMMIT
";

#[test]
fn cleanup_removes_older_istio_layouts() {
    for flavor in flavors() {
        for (name, layout) in [("1.24", ISTIO_1_24_V4), ("pre-1.10", ISTIO_PRE_1_10_V4)] {
            let ns = ns_for("old");
            add_foreign(&ns, flavor);
            let before = machine(&ns);
            restore(&ns, "iptables", flavor, layout);
            // The current generator's plan for the same VM differs from what is there.
            let drift = run(
                &ns,
                &plan(Mode::Apply, Some(flavor), golden("dns-uid-gid"), None),
            );
            assert!(
                matches!(drift, Err(CaptureError::Drift { .. })),
                "{name} {flavor:?}: {drift:?}"
            );

            let out = run_ok(
                &ns,
                &cleanup_plan(Some(flavor), golden("dns-uid-gid"), None),
            );
            assert!(
                matches!(out, Outcome::Cleaned(r) if r.chains > 0),
                "{name}: {out:?}"
            );
            assert_eq!(
                machine(&ns),
                before,
                "{name} layout, {flavor:?}: not exactly removed"
            );
        }
    }
}

#[test]
fn reconcile_replaces_drifted_rules_with_exactly_the_desired_ones() {
    for flavor in flavors() {
        let ns = ns_for("recon");
        add_foreign(&ns, flavor);
        run_ok(
            &ns,
            &plan(Mode::Apply, Some(flavor), golden("tproxy"), Some(TPROXY)),
        );
        // Someone edits one of our chains.
        ns.run_ok(&[
            &format!("iptables-{}", flavor_name(flavor)),
            "-t",
            "nat",
            "-A",
            "ISTIO_OUTPUT",
            "-d",
            "192.0.2.1/32",
            "-j",
            "RETURN",
        ]);

        let out = run_ok(
            &ns,
            &plan(Mode::Reconcile, Some(flavor), golden("dns-uid-gid"), None),
        );
        let Outcome::Reconciled { removed, applied } = out else {
            panic!("{flavor:?}: {out:?}");
        };
        assert_eq!(removed.chains, chains_in(&golden("tproxy")), "{removed}");
        assert_eq!(
            removed.routing, 4,
            "the TPROXY routing of the old rules goes too: {removed}"
        );
        assert!(applied.rules > 0, "{applied}");

        // The result is what a fresh apply of the same plan gives on the same foreign state.
        let fresh = ns_for("fresh");
        add_foreign(&fresh, flavor);
        run_ok(
            &fresh,
            &plan(Mode::Apply, Some(flavor), golden("dns-uid-gid"), None),
        );
        assert_eq!(machine(&ns), machine(&fresh), "{flavor:?}");
        let filter = save(&ns, "iptables", flavor);
        assert!(
            !filter.contains("guardrail"),
            "guardrails left behind:\n{filter}"
        );

        let again = run_ok(
            &ns,
            &plan(Mode::Reconcile, Some(flavor), golden("dns-uid-gid"), None),
        );
        assert!(matches!(again, Outcome::AlreadyInPlace(_)), "{again:?}");
    }
}

#[test]
fn apply_without_reconcile_on_drift_fails_and_changes_nothing() {
    for flavor in flavors() {
        let ns = ns_for("drift");
        add_foreign(&ns, flavor);
        run_ok(
            &ns,
            &plan(Mode::Apply, Some(flavor), golden("tproxy"), Some(TPROXY)),
        );
        let before = machine(&ns);

        let err = run(
            &ns,
            &plan(Mode::Apply, Some(flavor), golden("dns-uid-gid"), None),
        )
        .unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, CaptureError::Drift { .. }), "{msg}");
        assert!(
            msg.contains("--reconcile") && msg.contains("--cleanup-only"),
            "{msg}"
        );
        assert!(msg.contains("ISTIO_"), "the message names the drift: {msg}");
        assert_eq!(
            machine(&ns),
            before,
            "{flavor:?}: a refused apply changed the machine"
        );
    }
}

#[test]
fn stale_routing_table_is_drift() {
    let ns = ns_for("table");
    run_ok(
        &ns,
        &plan(Mode::Apply, None, golden("tproxy"), Some(TPROXY)),
    );
    let moved = TproxyRouting {
        table: 134,
        ..TPROXY
    };
    let err = run(&ns, &plan(Mode::Apply, None, golden("tproxy"), Some(moved))).unwrap_err();
    assert!(err.to_string().contains("lookup 133"), "{err}");

    run_ok(
        &ns,
        &plan(Mode::Reconcile, None, golden("tproxy"), Some(moved)),
    );
    let rules = ns.run_ok(&["ip", "-4", "rule", "show"]);
    assert_eq!(count_lines(&rules, "fwmark 0x539"), 1, "{rules}");
    assert!(rules.contains("fwmark 0x539 lookup 134"), "{rules}");
    assert!(route_table(&ns, "-4", 133).is_empty());
    assert!(route_table(&ns, "-4", 134).contains("local default dev lo"));
}

#[test]
fn a_restore_failure_rolls_back_both_families() {
    for flavor in flavors() {
        let ns = ns_for("roll");
        add_foreign(&ns, flavor);
        let before = machine(&ns);
        let good = golden("tproxy");
        // IPv4 applies; the IPv6 text fails in its second table (after the first committed).
        let bad_v6 = good.v6.clone().unwrap().replace(
            "-A ISTIO_OUTPUT -d ::1/128 -j RETURN",
            "-A ISTIO_OUTPUT -d ::1/128 -j NO_SUCH_CHAIN",
        );
        let p = plan(
            Mode::Apply,
            Some(flavor),
            rules(&good.v4, Some(&bad_v6)),
            Some(TPROXY),
        );
        let err = run(&ns, &p).unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, CaptureError::RolledBack { .. }), "{msg}");
        assert!(
            msg.contains("ip6tables") && msg.contains("restore --noflush"),
            "names the command: {msg}"
        );
        assert!(msg.contains("exit status"), "names the status: {msg}");
        assert!(msg.contains("NO_SUCH_CHAIN"), "{msg}");
        // Legacy blames the rule's line (40), nft the COMMIT after it (41).
        assert!(
            msg.contains("(input line 40: -A ISTIO_OUTPUT -d ::1/128 -j NO_SUCH_CHAIN)")
                || msg.contains("(input line 41: COMMIT)"),
            "quotes the input line the tool blamed: {msg}"
        );
        assert_eq!(
            machine(&ns),
            before,
            "{flavor:?}: something stayed half-applied"
        );
    }
}

#[test]
fn a_failing_first_family_leaves_nothing_either() {
    let ns = ns_for("roll4");
    // With the tables already in use: iptables creates a table (and, for nft, a built-in chain)
    // on first use and never deletes it, so only a used table compares equal after a rollback.
    add_foreign(&ns, IptablesFlavor::Nft);
    let before = machine(&ns);
    let bad = "* mangle\n-N ISTIO_DROP\n-A ISTIO_DROP -j DROP\nCOMMIT\n* nat\n-N ISTIO_OUTPUT\n-A OUTPUT -j ISTIO_OUTPUT\n-A ISTIO_OUTPUT -j ISTIO_MISSING\nCOMMIT\n";
    let err = run(&ns, &plan(Mode::Apply, None, rules(bad, None), None)).unwrap_err();
    assert!(matches!(err, CaptureError::RolledBack { .. }), "{err}");
    assert_eq!(machine(&ns), before);
}

#[test]
fn a_failed_reconcile_leaves_neither_rules_nor_guardrails() {
    for flavor in flavors() {
        let ns = ns_for("rfail");
        add_foreign(&ns, flavor);
        let before = machine(&ns);
        run_ok(
            &ns,
            &plan(Mode::Apply, Some(flavor), golden("tproxy"), Some(TPROXY)),
        );
        let bad = "* nat\n-N ISTIO_OUTPUT\n-A OUTPUT -j ISTIO_OUTPUT\n-A ISTIO_OUTPUT -j ISTIO_MISSING\nCOMMIT\n";
        let err = run(
            &ns,
            &plan(Mode::Reconcile, Some(flavor), rules(bad, None), None),
        )
        .unwrap_err();
        assert!(
            matches!(err, CaptureError::RolledBack { .. }),
            "{flavor:?}: {err}"
        );
        // The old rules were removed before the new ones failed; the guardrails went last.
        assert_eq!(machine(&ns), before, "{flavor:?}");
    }
}

#[test]
fn every_golden_applies_idempotently_and_cleans_up_exactly() {
    for flavor in flavors() {
        let ns = ns_for("gold");
        add_foreign(&ns, flavor);
        let before = machine(&ns);
        for name in iptables_goldens() {
            let r = golden(&name);
            let tproxy = name.contains("tproxy").then_some(TPROXY);
            let p = plan(Mode::Apply, Some(flavor), r.clone(), tproxy);
            let first = run_ok(&ns, &p);
            assert!(
                matches!(first, Outcome::Applied(_)),
                "{name} {flavor:?}: {first:?}"
            );
            let second = run_ok(&ns, &p);
            assert!(
                matches!(second, Outcome::AlreadyInPlace(_)),
                "{name} {flavor:?}: {second:?}"
            );
            let out = run_ok(&ns, &cleanup_plan(Some(flavor), r, tproxy));
            assert!(matches!(out, Outcome::Cleaned(_)), "{name}: {out:?}");
            assert_eq!(
                machine(&ns),
                before,
                "{name} {flavor:?}: not exactly cleaned up"
            );
        }
    }
}

#[test]
fn automatic_flavor_follows_existing_legacy_rules() {
    let both = flavors();
    if both.len() < 2 {
        panic!("this test needs both iptables-legacy and iptables-nft (Debian package iptables)");
    }
    // A machine whose firewall lives in legacy tables: we go there too.
    let legacy_host = ns_for("auto");
    legacy_host.run_ok(&[
        "iptables-legacy",
        "-A",
        "INPUT",
        "-p",
        "tcp",
        "--dport",
        "22",
        "-j",
        "ACCEPT",
    ]);
    run_ok(
        &legacy_host,
        &plan(Mode::Apply, None, golden("empty"), None),
    );
    assert!(save(&legacy_host, "iptables", IptablesFlavor::Legacy).contains("ISTIO_OUTPUT"));
    assert!(!save(&legacy_host, "iptables", IptablesFlavor::Nft).contains("ISTIO_OUTPUT"));

    // A machine with empty (merely probed) legacy tables: nft is used.
    let nft_host = ns_for("auto");
    nft_host.run_ok(&["iptables-legacy", "-L", "-n"]);
    run_ok(&nft_host, &plan(Mode::Apply, None, golden("empty"), None));
    assert!(save(&nft_host, "iptables", IptablesFlavor::Nft).contains("ISTIO_OUTPUT"));
    assert!(!save(&nft_host, "iptables", IptablesFlavor::Legacy).contains("ISTIO_OUTPUT"));

    // Leftovers in the flavor not chosen are drift, and cleanup finds them in both.
    nft_host.run_ok(&[
        "iptables-legacy",
        "-A",
        "INPUT",
        "-p",
        "tcp",
        "--dport",
        "22",
        "-j",
        "ACCEPT",
    ]);
    let err = run(&nft_host, &plan(Mode::Apply, None, golden("empty"), None)).unwrap_err();
    assert!(matches!(err, CaptureError::Drift { .. }), "{err}");
    let out = run_ok(&nft_host, &cleanup_plan(None, golden("empty"), None));
    assert!(
        matches!(out, Outcome::Cleaned(r) if r.chains == 4),
        "{out:?}"
    );
}

#[test]
fn guardrails_left_by_a_crash_never_survive_a_run() {
    let guardrails = "*filter\n-I INPUT 1 -p tcp -m comment --comment vm-proxy-reconcile-guardrail -j DROP\n-I OUTPUT 1 -p udp -m comment --comment vm-proxy-reconcile-guardrail -j DROP\nCOMMIT\n";
    for flavor in flavors() {
        // What a reconcile killed with -9 while swapping leaves behind.
        let ns = ns_for("guard");
        add_foreign(&ns, flavor);
        let before = machine(&ns);
        restore(&ns, "iptables", flavor, guardrails);
        restore(&ns, "ip6tables", flavor, guardrails);
        let out = run_ok(&ns, &cleanup_plan(None, golden("empty"), None));
        assert!(
            matches!(out, Outcome::Cleaned(r) if r.rules == 4),
            "{out:?}"
        );
        assert_eq!(machine(&ns), before, "{flavor:?}");

        // A plain apply removes them too instead of failing on them while traffic is blocked.
        restore(&ns, "iptables", flavor, guardrails);
        let out = run_ok(&ns, &plan(Mode::Apply, Some(flavor), golden("empty"), None));
        assert!(matches!(out, Outcome::Applied(_)), "{out:?}");
        let filter = save(&ns, "iptables", flavor);
        assert!(!filter.contains("guardrail"), "{filter}");
        assert!(
            filter.contains("-A INPUT -p tcp -j DROP"),
            "the foreign DROP stays: {filter}"
        );
    }
}

#[test]
fn dry_run_touches_nothing() {
    let ns = ns_for("dry");
    let before = machine(&ns);
    let out = run_ok(
        &ns,
        &plan(Mode::DryRun, None, golden("tproxy"), Some(TPROXY)),
    );
    let expected = golden("tproxy");
    let lines = expected.v4.lines().count() + expected.v6.as_deref().unwrap_or("").lines().count();
    assert_eq!(out, Outcome::Printed { lines });
    assert_eq!(machine(&ns), before);
}

// ---------------------------------------------------------------- nftables

#[test]
fn nft_apply_twice_leaves_one_copy_and_cleanup_restores_the_ruleset() {
    let ns = ns_for("nft");
    add_foreign(&ns, IptablesFlavor::Nft);
    let before = machine(&ns);
    let text = nft_golden("tproxy");
    let p = nft_plan(Mode::Apply, &text, Some(TPROXY));

    let first = run_ok(&ns, &p);
    assert!(
        matches!(first, Outcome::Applied(a) if a.nft_tables == 3 && a.routing == 4),
        "{first:?}"
    );
    let tables = ns.run_ok(&["nft", "list", "tables"]);
    for t in ["istio-proxy-nat", "istio-proxy-mangle", "istio-proxy-raw"] {
        assert_eq!(
            count_lines(&tables, &format!("table inet {t}")),
            1,
            "{tables}"
        );
    }
    let after_first = machine(&ns);
    let second = run_ok(&ns, &p);
    assert!(matches!(second, Outcome::AlreadyInPlace(_)), "{second:?}");
    assert_eq!(machine(&ns), after_first, "one copy after two applies");

    let out = run_ok(&ns, &nft_plan(Mode::CleanupOnly, &text, Some(TPROXY)));
    assert!(
        matches!(out, Outcome::Cleaned(r) if r.nft_tables == 3 && r.routing == 4),
        "{out:?}"
    );
    assert_eq!(machine(&ns), before);
    let again = run_ok(&ns, &nft_plan(Mode::CleanupOnly, &text, Some(TPROXY)));
    assert_eq!(again, Outcome::Cleaned(Default::default()));
}

#[test]
fn nft_tables_not_in_the_new_transaction_are_drift_and_reconciled_atomically() {
    let ns = ns_for("nftd");
    run_ok(
        &ns,
        &nft_plan(Mode::Apply, &nft_golden("tproxy"), Some(TPROXY)),
    );
    let redirect_only = nft_golden("dns-uid-gid");
    let err = run(&ns, &nft_plan(Mode::Apply, &redirect_only, None)).unwrap_err();
    assert!(err.to_string().contains("istio-proxy-mangle"), "{err}");

    let out = run_ok(&ns, &nft_plan(Mode::Reconcile, &redirect_only, None));
    assert!(
        matches!(out, Outcome::Reconciled { removed, .. } if removed.nft_tables == 1),
        "{out:?}"
    );
    let fresh = ns_for("nftf");
    run_ok(&fresh, &nft_plan(Mode::Apply, &redirect_only, None));
    let ruleset = |n: &Netns| n.run_ok(&["nft", "-s", "list", "ruleset"]);
    assert_eq!(ruleset(&ns), ruleset(&fresh));
    for fam in ["-4", "-6"] {
        let rules = ns.run_ok(&["ip", fam, "rule", "show"]);
        assert_eq!(
            count_lines(&rules, "fwmark 0x539"),
            0,
            "TPROXY routing of the old tables stayed: {rules}"
        );
    }
}

#[test]
fn switching_backends_is_drift_and_cleanup_covers_both() {
    let ns = ns_for("swit");
    run_ok(&ns, &plan(Mode::Apply, None, golden("empty"), None));
    let err = run(&ns, &nft_plan(Mode::Apply, &nft_golden("empty"), None)).unwrap_err();
    assert!(matches!(err, CaptureError::Drift { .. }), "{err}");
    let out = run_ok(&ns, &nft_plan(Mode::Reconcile, &nft_golden("empty"), None));
    assert!(
        matches!(out, Outcome::Reconciled { removed, .. } if removed.chains == 4),
        "{out:?}"
    );
    let err = run(&ns, &plan(Mode::Apply, None, golden("empty"), None)).unwrap_err();
    assert!(err.to_string().contains("istio-proxy-nat"), "{err}");
    // Cleanup with an iptables plan removes the nft tables too.
    run_ok(&ns, &cleanup_plan(None, golden("empty"), None));
    let tables: BTreeSet<String> = ns
        .run_ok(&["nft", "list", "tables"])
        .lines()
        .map(str::to_string)
        .collect();
    assert!(
        !tables.iter().any(|t| t.contains("istio-proxy")),
        "{tables:?}"
    );
}

// ---------------------------------------------------------------- routing and the host

#[test]
fn tproxy_routing_is_added_once_and_removed() {
    let ns = ns_for("route");
    let p = plan(Mode::Apply, None, golden("tproxy"), Some(TPROXY));
    run_ok(&ns, &p);
    for fam in ["-4", "-6"] {
        let rules = ns.run_ok(&["ip", fam, "rule", "show"]);
        assert_eq!(
            count_lines(&rules, "from all fwmark 0x539 lookup 133"),
            1,
            "{fam}: {rules}"
        );
        assert!(
            route_table(&ns, fam, 133).starts_with("local default dev lo"),
            "{fam}"
        );
    }
    // The routing alone went missing (someone ran `ip rule del`): apply puts it back.
    ns.run_ok(&["ip", "-4", "rule", "del", "fwmark", "1337", "lookup", "133"]);
    let out = run_ok(&ns, &p);
    assert!(
        matches!(out, Outcome::Applied(a) if a.routing == 1 && a.rules == 0),
        "{out:?}"
    );

    run_ok(&ns, &cleanup_plan(None, golden("tproxy"), Some(TPROXY)));
    for fam in ["-4", "-6"] {
        let rules = ns.run_ok(&["ip", fam, "rule", "show"]);
        assert_eq!(count_lines(&rules, "fwmark 0x539"), 0, "{fam}: {rules}");
        assert!(
            !route_table(&ns, fam, 133).contains("local default"),
            "{fam}"
        );
    }
}

fn host_state() -> String {
    let mut s = String::new();
    for f in flavors() {
        for fam in ["iptables", "ip6tables"] {
            let out = std::process::Command::new(format!("{fam}-{}-save", flavor_name(f)))
                .output()
                .expect("host save");
            s.push_str(&normalize(&String::from_utf8_lossy(&out.stdout)));
        }
    }
    let nft = std::process::Command::new("nft")
        .args(["-s", "list", "ruleset"])
        .output()
        .expect("host nft");
    s.push_str(&String::from_utf8_lossy(&nft.stdout));
    let rules = std::process::Command::new("ip")
        .args(["rule", "show"])
        .output()
        .expect("host ip rule");
    s.push_str(&String::from_utf8_lossy(&rules.stdout));
    s
}

#[test]
fn the_host_is_never_touched() {
    let host_before = host_state();
    let ns = ns_for("host");
    for flavor in flavors() {
        run_ok(
            &ns,
            &plan(Mode::Apply, Some(flavor), golden("tproxy"), Some(TPROXY)),
        );
        assert_eq!(
            host_state(),
            host_before,
            "{flavor:?}: applying in a namespace changed the host"
        );
        run_ok(
            &ns,
            &cleanup_plan(Some(flavor), golden("tproxy"), Some(TPROXY)),
        );
    }
    run_ok(
        &ns,
        &nft_plan(Mode::Apply, &nft_golden("tproxy"), Some(TPROXY)),
    );
    run_ok(
        &ns,
        &nft_plan(Mode::CleanupOnly, &nft_golden("tproxy"), Some(TPROXY)),
    );
    assert_eq!(host_state(), host_before, "the host changed");
}
