//! Our generators against every golden of Istio's own generator tests
//! (`shared/fixtures/istio-iptables`, `shared/fixtures/istio-nftables`).
//!
//! Each case is Istio's base test configuration with the overrides of the upstream
//! `getCommonTestCases()` (listed in the fixtures' SOURCES.md). A golden without a case fails.

use std::collections::HashMap;
use std::ffi::OsString;
use std::fs;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use ipnet::IpNet;
use iptables::args::{CaptureArgs, Host};
use iptables::config::{
    CaptureConfig, InboundPorts, InterceptionMode, Nameserver, OutboundRanges, OwnerGroups,
};
use iptables::error::ConfigError;
use iptables::plan::{Backend, Mode, RenderedRules};
use iptables::render;

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/fixtures");

fn nets(cidrs: &[&str]) -> Vec<IpNet> {
    cidrs.iter().map(|c| c.parse().unwrap()).collect()
}

fn servers(addrs: &[&str]) -> Vec<Nameserver> {
    addrs
        .iter()
        .map(|a| Nameserver::parse(a).unwrap())
        .collect()
}

fn groups(names: &[&str]) -> Vec<String> {
    names.iter().map(|g| g.to_string()).collect()
}

fn ifaces(names: &[&str]) -> Vec<String> {
    groups(names)
}

/// The configuration of the upstream test case `name`.
fn case(name: &str) -> Option<CaptureConfig> {
    let base = CaptureConfig::istio_test_base();
    let cfg = match name {
        "ipv6-empty-inbound-ports" => CaptureConfig {
            inbound_ports: InboundPorts::None,
            enable_ipv6: true,
            ..base
        },
        // DryRun=true upstream only swaps the executor; it does not change the rules.
        "ip-range" => CaptureConfig {
            outbound_ranges_exclude: nets(&["1.1.0.0/16"]),
            outbound_ranges: OutboundRanges::Cidrs(nets(&["9.9.0.0/16"])),
            redirect_dns: true,
            enable_ipv6: false,
            proxy_gids: vec![1, 2],
            proxy_uids: vec![3, 4],
            dns_servers: servers(&["127.0.0.53"]),
            ..base
        },
        "tproxy" => CaptureConfig {
            inbound_mode: InterceptionMode::Tproxy,
            inbound_ports: InboundPorts::All { except: vec![] },
            outbound_ranges_exclude: nets(&["1.1.0.0/16"]),
            outbound_ranges: OutboundRanges::Cidrs(nets(&["9.9.0.0/16"])),
            redirect_dns: true,
            dns_servers: servers(&["127.0.0.53"]),
            proxy_gids: vec![1337],
            proxy_uids: vec![1337],
            exclude_interfaces: ifaces(&["not-istio-nic"]),
            enable_ipv6: true,
            ..base
        },
        "ipv6-inbound-ports" => CaptureConfig {
            inbound_ports: InboundPorts::Only(vec![4000, 5000]),
            enable_ipv6: true,
            ..base
        },
        "ipv6-virt-interfaces" => CaptureConfig {
            inbound_ports: InboundPorts::Only(vec![4000, 5000]),
            kube_virt_interfaces: ifaces(&["eth0", "eth1"]),
            enable_ipv6: true,
            ..base
        },
        // Upstream also sets InboundPortsExclude="6000,7000,", which only applies to "*" and so
        // cannot be expressed next to a port list.
        "ipv6-ipnets" => CaptureConfig {
            inbound_ports: InboundPorts::Only(vec![4000, 5000]),
            kube_virt_interfaces: ifaces(&["eth0", "eth1"]),
            outbound_ranges_exclude: nets(&["2001:db8::/32"]),
            outbound_ranges: OutboundRanges::Cidrs(nets(&["2001:db8::/32"])),
            enable_ipv6: true,
            ..base
        },
        // Same note on InboundPortsExclude="6000,7000".
        "ipv6-uid-gid" => CaptureConfig {
            inbound_ports: InboundPorts::Only(vec![4000, 5000]),
            kube_virt_interfaces: ifaces(&["eth0", "eth1"]),
            proxy_gids: vec![1, 2],
            proxy_uids: vec![3, 4],
            enable_ipv6: true,
            outbound_ranges_exclude: nets(&["2001:db8::/32"]),
            outbound_ranges: OutboundRanges::Cidrs(nets(&["2001:db8::/32"])),
            ..base
        },
        "ipv6-outbound-ports" => CaptureConfig {
            inbound_ports: InboundPorts::None,
            outbound_ports: vec![32000, 31000],
            enable_ipv6: true,
            ..base
        },
        "empty" => base,
        "kube-virt-interfaces" => CaptureConfig {
            kube_virt_interfaces: ifaces(&["eth1", "eth2"]),
            outbound_ranges: OutboundRanges::All,
            ..base
        },
        "ipnets" => CaptureConfig {
            outbound_ranges: OutboundRanges::Cidrs(nets(&["10.0.0.0/8"])),
            ..base
        },
        "ipnets-with-kube-virt-interfaces" => CaptureConfig {
            kube_virt_interfaces: ifaces(&["eth1", "eth2"]),
            outbound_ranges: OutboundRanges::Cidrs(nets(&["10.0.0.0/8"])),
            ..base
        },
        "inbound-ports-include" => CaptureConfig {
            inbound_ports: InboundPorts::Only(vec![32000, 31000]),
            ..base
        },
        "inbound-ports-wildcard" => CaptureConfig {
            inbound_ports: InboundPorts::All { except: vec![] },
            ..base
        },
        "inbound-ports-tproxy" => CaptureConfig {
            inbound_ports: InboundPorts::Only(vec![32000, 31000]),
            inbound_mode: InterceptionMode::Tproxy,
            ..base
        },
        "inbound-ports-wildcard-tproxy" => CaptureConfig {
            inbound_ports: InboundPorts::All { except: vec![] },
            inbound_mode: InterceptionMode::Tproxy,
            ..base
        },
        "inbound-ports-empty-tproxy" => CaptureConfig {
            inbound_ports: InboundPorts::None,
            inbound_mode: InterceptionMode::Tproxy,
            ..base
        },
        "dns-uid-gid" => CaptureConfig {
            redirect_dns: true,
            dns_servers: servers(&["127.0.0.53", "::127.0.0.53"]),
            proxy_gids: vec![1, 2],
            proxy_uids: vec![3, 4],
            enable_ipv6: true,
            ..base
        },
        "ipv6-dns-uid-gid" => CaptureConfig {
            enable_ipv6: true,
            redirect_dns: true,
            proxy_gids: vec![1, 2],
            proxy_uids: vec![3, 4],
            ..base
        },
        "outbound-owner-groups" => CaptureConfig {
            owner_groups: OwnerGroups::Only(groups(&["java", "202"])),
            ..base
        },
        "outbound-owner-groups-exclude" => CaptureConfig {
            owner_groups: OwnerGroups::AllExcept(groups(&["888", "ftp"])),
            ..base
        },
        "ipv6-dns-outbound-owner-groups" => CaptureConfig {
            enable_ipv6: true,
            redirect_dns: true,
            owner_groups: OwnerGroups::Only(groups(&["java", "202"])),
            ..base
        },
        "ipv6-dns-outbound-owner-groups-exclude" => CaptureConfig {
            enable_ipv6: true,
            redirect_dns: true,
            owner_groups: OwnerGroups::AllExcept(groups(&["888", "ftp"])),
            ..base
        },
        "outbound-ports-include" => CaptureConfig {
            outbound_ports: vec![32000, 31000],
            ..base
        },
        "loopback-outbound-iprange" => CaptureConfig {
            outbound_ranges: OutboundRanges::Cidrs(nets(&["127.1.2.3/32"])),
            redirect_dns: true,
            dns_servers: servers(&["127.0.0.53"]),
            enable_ipv6: false,
            proxy_gids: vec![1, 2],
            proxy_uids: vec![3, 4],
            ..base
        },
        "basic-exclude-nic" => CaptureConfig {
            exclude_interfaces: ifaces(&["not-istio-nic"]),
            ..base
        },
        "drop-invalid" => CaptureConfig {
            drop_invalid: true,
            ..base
        },
        "host-ipv4-loopback-cidr" => CaptureConfig {
            host_ipv4_loopback_cidr: "127.0.0.1/8".parse().unwrap(),
            ..base
        },
        _ => return None,
    };
    Some(cfg)
}

/// Every `*.golden` in a fixture folder, sorted by name.
fn goldens(folder: &str) -> Vec<(String, PathBuf)> {
    let dir = Path::new(FIXTURES).join(folder);
    let mut found: Vec<(String, PathBuf)> = fs::read_dir(&dir)
        .unwrap_or_else(|err| panic!("reading {}: {err}", dir.display()))
        .map(|entry| entry.unwrap().path())
        .filter_map(|path| {
            let name = path
                .file_name()?
                .to_str()?
                .strip_suffix(".golden")?
                .to_string();
            Some((name, path))
        })
        .collect();
    found.sort();
    found
}

/// The first line where two line lists differ, for a readable failure.
fn first_difference(expected: &[&str], actual: &[&str]) -> String {
    let at = expected
        .iter()
        .zip(actual)
        .position(|(e, a)| e != a)
        .unwrap_or(expected.len().min(actual.len()));
    format!(
        "line {}: expected {:?}, got {:?} ({} vs {} lines)",
        at + 1,
        expected.get(at),
        actual.get(at),
        expected.len(),
        actual.len()
    )
}

/// Runs `check` on every golden, then fails listing every mismatch and every uncovered golden.
fn check_all(
    folder: &str,
    expected_count: usize,
    check: impl Fn(&str, &CaptureConfig, &str) -> Result<(), String>,
) {
    let files = goldens(folder);
    assert_eq!(files.len(), expected_count, "number of goldens in {folder}");
    let mut failures = Vec::new();
    for (name, path) in &files {
        let golden = fs::read_to_string(path)
            .unwrap_or_else(|err| panic!("reading {}: {err}", path.display()));
        match case(name) {
            None => failures.push(format!("{name}: no case covers this golden")),
            Some(cfg) => {
                if let Err(why) = check(name, &cfg, &golden) {
                    failures.push(format!("{name}: {why}"));
                }
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} goldens failed:\n{}",
        failures.len(),
        files.len(),
        failures.join("\n")
    );
}

#[test]
fn iptables_goldens() {
    check_all("istio-iptables", 27, |_, cfg, golden| {
        let lines: Vec<&str> = golden.lines().collect();
        let expected: Vec<&str> = lines
            .iter()
            .copied()
            .filter(|l| *l != "iptables-save" && *l != "ip6tables-save")
            .collect();
        let rules = render::iptables(cfg);
        let v6 = rules.v6.as_deref().unwrap_or("");
        let actual: Vec<&str> = rules.v4.lines().chain(v6.lines()).collect();
        if expected != actual {
            return Err(first_difference(&expected, &actual));
        }
        // Istio dumps the final IPv6 state only when it generated IPv6 rules.
        let dumps_v6 = lines.last() == Some(&"ip6tables-save");
        if dumps_v6 != rules.v6.is_some() {
            return Err(format!(
                "IPv6 rules present: {}, golden dumps IPv6: {dumps_v6}",
                rules.v6.is_some()
            ));
        }
        Ok(())
    });
}

#[test]
fn nftables_goldens() {
    check_all("istio-nftables", 28, |_, cfg, golden| {
        let actual = render::nftables(cfg);
        if actual == golden {
            return Ok(());
        }
        let expected: Vec<&str> = golden.lines().collect();
        let actual: Vec<&str> = actual.lines().collect();
        Err(first_difference(&expected, &actual))
    });
}

#[test]
fn restore_text_ends_every_table_with_commit() {
    let cfg = case("tproxy").unwrap();
    let rules = render::iptables(&cfg);
    for text in [rules.v4.as_str(), rules.v6.as_deref().unwrap()] {
        assert!(text.ends_with("COMMIT\n"));
        assert_eq!(
            text.matches("\n* ").count() + 1,
            text.matches("COMMIT\n").count()
        );
    }
}

/// A VM as `istioctl x workload entry configure` sets it up: an IPv4 host, user istio-proxy,
/// one resolver, and the cluster.env capture variables.
struct DefaultVm {
    env: HashMap<&'static str, &'static str>,
}

impl Host for DefaultVm {
    fn env(&self, name: &str) -> Option<OsString> {
        self.env.get(name).map(OsString::from)
    }
    fn uid_of_user(&self, name: &str) -> Option<u32> {
        (name == "istio-proxy").then_some(983)
    }
    fn interface_addresses(&self) -> Result<Vec<IpAddr>, ConfigError> {
        Ok(vec![
            "127.0.0.1".parse().unwrap(),
            "10.10.10.10".parse().unwrap(),
        ])
    }
    fn resolv_conf(&self) -> std::io::Result<String> {
        Ok("nameserver 127.0.0.53\noptions edns0 trust-ad\nsearch .\n".to_string())
    }
}

#[test]
fn default_vm_matches_the_reference_ruleset() {
    let host = DefaultVm {
        env: HashMap::from([
            ("ISTIO_INBOUND_PORTS", "*"),
            ("ISTIO_LOCAL_EXCLUDE_PORTS", "22,15090,15021,15020"),
            ("ISTIO_SERVICE_CIDR", "*"),
            ("ISTIO_META_DNS_CAPTURE", "true"),
        ]),
    };
    let plan = CaptureArgs::default().plan_on(&host).unwrap();
    assert_eq!(
        (plan.mode, plan.backend, plan.tproxy),
        (Mode::Apply, Backend::Iptables(None), None)
    );
    let RenderedRules::Iptables(rules) = plan.rules else {
        panic!("iptables rules expected");
    };
    assert_eq!(rules.v6, None);

    // SOURCES.md spells the proxy uid as U; its only code block starting with "* nat" is the ruleset.
    let sources =
        fs::read_to_string(Path::new(FIXTURES).join("istio-iptables/SOURCES.md")).unwrap();
    let start = sources
        .find("```\n* nat\n")
        .expect("reference ruleset in SOURCES.md")
        + 4;
    let end = start + sources[start..].find("```").unwrap();
    let reference = sources[start..end].replace("-owner U ", "-owner 983 ");
    assert_eq!(rules.v4, reference);
}
