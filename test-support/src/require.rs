//! Preconditions of the end-to-end tests, checked up front so that a machine that cannot run
//! them fails loudly with what to do, instead of skipping or failing obscurely.

use std::path::Path;

/// Debian packages that provide the tools these tests run.
const PACKAGES: &[(&str, &str)] = &[
    ("ip", "iproute2"),
    ("ss", "iproute2"),
    ("bridge", "iproute2"),
    ("iptables", "iptables"),
    ("ip6tables", "iptables"),
    ("iptables-save", "iptables"),
    ("ip6tables-save", "iptables"),
    ("iptables-restore", "iptables"),
    ("ip6tables-restore", "iptables"),
    ("iptables-legacy", "iptables"),
    ("iptables-legacy-save", "iptables"),
    ("nft", "nftables"),
    ("setpriv", "util-linux"),
    ("sysctl", "procps"),
    ("curl", "curl"),
    ("nc", "netcat-openbsd"),
    ("socat", "socat"),
    ("dig", "dnsutils"),
    ("prometheus", "prometheus"),
];

/// Fails the test unless it runs as root (namespaces, veths and packet filters need it).
///
/// # Panics
/// When the effective uid is not 0.
pub fn require_root() {
    let uid = nix::unistd::geteuid();
    assert!(
        uid.is_root(),
        "these tests create network namespaces and packet-filter rules and must run as root \
         (effective uid is {uid}); run them as root, e.g. `sudo -E cargo test`"
    );
}

/// Fails the test unless every program in `tools` is installed, naming the Debian packages
/// to install for the missing ones.
///
/// # Panics
/// When one or more tools are not found.
pub fn require_tools(tools: &[&str]) {
    let missing: Vec<&str> = tools.iter().copied().filter(|t| !installed(t)).collect();
    if missing.is_empty() {
        return;
    }
    let mut packages: Vec<&str> = missing.iter().filter_map(|t| package_of(t)).collect();
    packages.sort_unstable();
    packages.dedup();
    let unknown: Vec<&str> = missing
        .iter()
        .copied()
        .filter(|t| package_of(t).is_none())
        .collect();
    let mut msg = format!("missing tools: {}", missing.join(", "));
    if !packages.is_empty() {
        msg.push_str(&format!(
            "; install them with: apt-get install -y {}",
            packages.join(" ")
        ));
    }
    if !unknown.is_empty() {
        msg.push_str(&format!("; no known package for: {}", unknown.join(", ")));
    }
    panic!("{msg}");
}

/// The Debian package that ships `tool`, if we know it.
pub fn package_of(tool: &str) -> Option<&'static str> {
    PACKAGES.iter().find(|(t, _)| *t == tool).map(|(_, p)| *p)
}

fn installed(tool: &str) -> bool {
    // sbin directories are searched even when PATH lacks them (as it does for non-root
    // shells): `ip netns exec` and `Command` find programs there when run as root.
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin", "/usr/bin", "/bin"].map(Into::into))
        .any(|dir| is_executable(&dir.join(tool)))
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    p.metadata()
        .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}
