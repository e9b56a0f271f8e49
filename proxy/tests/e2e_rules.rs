//! The life of the capture rules as an operator sees it, through the `vm-proxy` binary:
//! cleanup restores the machine exactly (foreign rules kept), a restart after `kill -9`
//! neither duplicates rules nor breaks traffic, and bad flags change nothing. Both backends.
//! Needs root.

mod e2e;

use e2e::*;
use nix::sys::signal::Signal;
use std::os::unix::process::ExitStatusExt;
use test_support::{Netns, TcpServer, Topology, iptables_save, tcp_exchange};

/// Rules of someone else's in the tables we use, which cleanup must leave alone: a chain of
/// their own jumped to from OUTPUT (nat), a mark in mangle, a notrack in raw, and an nft
/// table.
fn add_foreign_rules(ns: &Netns) {
    for argv in [
        "iptables -w -t nat -N FOREIGN",
        "iptables -w -t nat -A FOREIGN -p tcp --dport 7777 -j RETURN",
        "iptables -w -t nat -A OUTPUT -p tcp -d 203.0.113.0/24 -j FOREIGN",
        "iptables -w -t nat -A PREROUTING -p tcp --dport 7778 -j RETURN",
        "iptables -w -t mangle -A PREROUTING -p udp --dport 5000 -j MARK --set-mark 7",
        "iptables -w -t raw -A OUTPUT -p udp --dport 5001 -j CT --notrack",
    ] {
        ns.run_ok(&argv.split(' ').collect::<Vec<_>>());
    }
    let table = "table inet foreign {\n\
        chain output {\n\
            type filter hook output priority 0; policy accept;\n\
            tcp dport 7777 counter accept\n\
        }\n\
    }\n";
    let out = ns
        .run_timeout_input(&["nft", "-f", "-"], table.as_bytes(), WAIT)
        .unwrap();
    assert!(out.status.success(), "{}", describe(&out));
}

/// Lines of ours in the rule text: iptables chains and jumps named ISTIO_*, nft tables
/// named istio-proxy-*.
fn our_lines(rules: &str) -> Vec<&str> {
    rules
        .lines()
        .filter(|l| l.contains("ISTIO_") || l.contains("istio-"))
        .collect()
}

fn cleanup_restores_everything(backend: Backend, foreign: bool) {
    // A VM has an address (capture decides IPv6 from it, even for a cleanup).
    let t = Topology::vm_and_mesh();
    let ns: &Netns = &t.vm;
    if foreign {
        add_foreign_rules(ns);
    }
    // What the backend writes to: iptables-save for iptables; both views for nft, whose
    // tables must not show up in iptables-save either.
    let view = |ns: &Netns| match backend {
        Backend::Iptables => iptables_save(ns),
        Backend::Nftables => rules_of(ns),
    };
    let before = view(ns);
    let mut flags = vm_flags();
    flags.extend(["--redirect-dns", "--dns-servers", "198.18.0.3"].map(String::from));
    capture_ok(ns, &flags, backend);
    let applied = view(ns);
    assert_ne!(applied, before);
    assert!(!our_lines(&applied).is_empty(), "{applied}");

    // Cleanup is driven by what is on the machine, not by the flags it was applied with.
    capture_ok(ns, &["--cleanup-only".to_string()], backend);
    let after = view(ns);
    // And again: nothing of ours left to remove, still nothing else touched.
    let out = capture(ns, &["--cleanup-only".to_string()], backend);
    assert!(out.status.success(), "{}", describe(&out));
    assert_eq!(view(ns), after, "a second cleanup changed something");

    if foreign || backend == Backend::Nftables {
        assert_eq!(after, before, "after cleanup");
    } else {
        // iptables-nft makes the tables (nat, raw) that the restore names; like Istio's
        // cleanup, ours removes its chains and rules but not the tables, which are left
        // with nothing but built-in chains that accept everything.
        assert_eq!(
            without_empty_tables(&after),
            before,
            "after cleanup, beyond empty tables:\n{after}"
        );
    }
}

/// iptables-save text without tables (`*name` ... `COMMIT`) that hold no rules and no
/// chains but built-in ones with policy ACCEPT.
fn without_empty_tables(save: &str) -> String {
    let mut out = String::new();
    let mut table: Vec<&str> = Vec::new();
    for line in save.lines() {
        if line.starts_with('*') || !table.is_empty() {
            table.push(line);
            if line != "COMMIT" {
                continue;
            }
            let empty = table[1..table.len() - 1]
                .iter()
                .all(|l| l.starts_with(':') && l.contains(" ACCEPT "));
            if !empty {
                table.iter().for_each(|l| {
                    out.push_str(l);
                    out.push('\n');
                });
            }
            table.clear();
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}

#[test]
fn cleanup_restores_an_empty_namespace_iptables() {
    cleanup_restores_everything(Backend::Iptables, false);
}

#[test]
fn cleanup_restores_an_empty_namespace_nftables() {
    cleanup_restores_everything(Backend::Nftables, false);
}

#[test]
fn cleanup_keeps_foreign_rules_iptables() {
    cleanup_restores_everything(Backend::Iptables, true);
}

#[test]
fn cleanup_keeps_foreign_rules_nftables() {
    cleanup_restores_everything(Backend::Nftables, true);
}

/// How many times our entry points are hooked in: the jump from OUTPUT into our chain
/// (iptables) or our nat table (nft). One copy of the rules has exactly one.
fn hooks(rules: &str, backend: Backend) -> usize {
    let needle = match backend {
        Backend::Iptables => "-A OUTPUT -j ISTIO_OUTPUT",
        Backend::Nftables => "table inet istio-proxy-nat {",
    };
    rules.lines().filter(|l| l.trim() == needle).count()
}

/// `kill -9` of the proxy leaves the rules behind; the restart sequence (capture with the
/// same flags, then run) must end with one copy of them and working traffic.
fn restart_after_kill(backend: Backend) {
    let t = Topology::vm_and_mesh();
    let peer = TcpServer::hello(&t.mesh, t.mesh.addr(8080), b"peer:", b":end");
    let dir = ConfigDir::new();
    let config = dir.write("bootstrap.yaml", &sidecar_bootstrap(&[], false));
    let flags = vm_flags();
    capture_ok(&t.vm, &flags, backend);
    let first = rules_of(&t.vm);
    assert_eq!(hooks(&first, backend), 1, "{first}");

    let mut proxy = start_proxy(&t.vm, &config, &[]);
    let x = tcp_exchange(&t.vm, t.mesh.addr(8080), b"one", WAIT).unwrap();
    assert_eq!(x.received_str(), "peer:one:end");
    let status = proxy.kill().unwrap();
    assert_eq!(status.signal(), Some(Signal::SIGKILL as i32));
    // The rules outlive the proxy: the app's traffic now goes nowhere.
    assert!(refused(&t.vm, t.mesh.addr(8080)));

    capture_ok(&t.vm, &flags, backend);
    let second = rules_of(&t.vm);
    assert_eq!(second, first, "one copy, the same as before");
    assert_eq!(hooks(&second, backend), 1);
    assert_eq!(our_lines(&second).len(), our_lines(&first).len());

    let mut proxy = start_proxy(&t.vm, &config, &[]);
    let x = tcp_exchange(&t.vm, t.mesh.addr(8080), b"two", WAIT).unwrap();
    assert_eq!(x.received_str(), "peer:two:end");
    let seen = peer.wait_for_connections(2, WAIT).unwrap();
    assert_eq!(seen.len(), 2, "{seen:?}");
    stop_proxy(&mut proxy);
}

#[test]
fn restart_after_kill_9_iptables() {
    restart_after_kill(Backend::Iptables);
}

#[test]
fn restart_after_kill_9_nftables() {
    restart_after_kill(Backend::Nftables);
}

/// Bad flag values are rejected before anything is touched, naming the flag, whether the
/// namespace is empty or already has our rules.
fn bad_flags_change_nothing(backend: Backend) {
    let ns = Netns::new("vm");
    let bad: [(&str, &str, &str); 4] = [
        ("-b", "80,abc", "--istio-inbound-ports"),
        ("-i", "10.0.0.0/99", "--istio-service-cidr"),
        ("-o", "70000", "--istio-local-outbound-ports-exclude"),
        ("-m", "SIDEWAYS", "--istio-inbound-interception-mode"),
    ];
    for installed in [false, true] {
        if installed {
            capture_ok(&ns, &vm_flags(), backend);
        }
        let before = rules_of(&ns);
        for (flag, value, named) in bad {
            let mut flags = vm_flags();
            // Later occurrences of a flag would be rejected by clap itself; replace it.
            match flags.iter().position(|f| f == flag) {
                Some(i) => flags[i + 1] = value.to_string(),
                None => flags.extend([flag.to_string(), value.to_string()]),
            }
            let out = capture(&ns, &flags, backend);
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert!(!out.status.success(), "{flag} {value}: {}", describe(&out));
            assert!(
                stderr.contains(named) && stderr.contains(value),
                "{flag} {value}: {stderr}"
            );
            assert_eq!(rules_of(&ns), before, "{flag} {value} changed the rules");
        }
    }
}

#[test]
fn bad_flags_change_nothing_iptables() {
    bad_flags_change_nothing(Backend::Iptables);
}

#[test]
fn bad_flags_change_nothing_nftables() {
    bad_flags_change_nothing(Backend::Nftables);
}
