//! The systemd unit and package scripts in `packaging/` stay in step with the CLI: every
//! command the unit runs must parse as the binary parses it, and the user the proxy runs as is
//! the one capture exempts.

use clap::Parser;
use vm_proxy::cli::{Cli, Command};

const UNIT: &str = include_str!("../../packaging/vm-proxy.service");
const POSTINST: &str = include_str!("../../packaging/debian/postinst");
const RPM_POST: &str = include_str!("../../packaging/rpm/post_install.sh");

/// The `Key=value` lines of the unit with that key.
fn values<'a>(key: &'a str) -> impl Iterator<Item = &'a str> + 'a {
    UNIT.lines()
        .filter_map(move |l| l.strip_prefix(key)?.strip_prefix('='))
}

/// An Exec line's command as argv, without systemd's prefix characters.
fn argv(exec: &str) -> Vec<&str> {
    let exec = exec.trim_start_matches(['+', '-', '@', '!', ':']);
    let mut words: Vec<&str> = exec.split_whitespace().collect();
    assert_eq!(words[0], "/usr/bin/vm-proxy", "{exec}");
    words[0] = "vm-proxy";
    words
}

#[test]
fn every_exec_line_parses_with_the_cli() {
    let mut seen = Vec::new();
    for key in ["ExecStartPre", "ExecStart", "ExecStopPost"] {
        for exec in values(key) {
            let cli = Cli::try_parse_from(argv(exec))
                .unwrap_or_else(|e| panic!("{key}={exec} does not parse: {e}"));
            seen.push((key, cli.command));
        }
    }
    assert!(
        matches!(
            seen.as_slice(),
            [
                ("ExecStartPre", Command::Capture(_)),
                ("ExecStart", Command::Run(_)),
                ("ExecStopPost", Command::Capture(_)),
            ]
        ),
        "{seen:?}"
    );
}

#[test]
fn capture_runs_privileged_and_the_proxy_as_the_exempted_user() {
    for key in ["ExecStartPre", "ExecStopPost"] {
        for exec in values(key) {
            assert!(
                exec.starts_with('+'),
                "{key} needs root for the rules: {exec}"
            );
        }
    }
    // capture looks the proxy's uid up by $ENVOY_USER, default istio-proxy, like istio-iptables.
    assert_eq!(values("User").collect::<Vec<_>>(), ["istio-proxy"]);
    assert!(POSTINST.contains("istio-proxy") && RPM_POST.contains("istio-proxy"));
}

#[test]
fn cleanup_on_stop_needs_no_configuration() {
    // After kill -9 or a changed cluster.env the stop command must still find every rule:
    // it works from the machine's state, so it takes no capture flags at all.
    let stop: Vec<_> = values("ExecStopPost").collect();
    assert_eq!(argv(stop[0]), ["vm-proxy", "capture", "--cleanup-only"]);
}
