//! Preconditions fail loudly and say what to install.

use test_support::require::package_of;
use test_support::{require_root, require_tools};

#[test]
fn present_tools_and_root_pass() {
    require_root();
    require_tools(&[
        "ip",
        "iptables",
        "ip6tables",
        "nft",
        "setpriv",
        "curl",
        "nc",
        "socat",
        "dig",
    ]);
}

#[test]
fn missing_tools_name_their_packages() {
    let err = std::panic::catch_unwind(|| require_tools(&["ip", "no-such-tool-here"]))
        .expect_err("a missing tool fails the test");
    let msg = err.downcast_ref::<String>().cloned().unwrap_or_default();
    assert!(msg.contains("missing tools: no-such-tool-here"), "{msg}");
    assert!(
        msg.contains("no known package for: no-such-tool-here"),
        "{msg}"
    );
    assert_eq!(package_of("dig"), Some("dnsutils"));
    assert_eq!(package_of("nc"), Some("netcat-openbsd"));
    assert_eq!(package_of("setpriv"), Some("util-linux"));
}
