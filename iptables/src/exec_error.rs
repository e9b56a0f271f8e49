//! What can go wrong while putting capture rules on the machine or taking them off.

use std::io;

/// An error of the application side (`execute`): every message names the command, binary or
/// resource that failed, and what to do about it where there is something to do.
#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    /// A binary the backend needs is not installed.
    #[error(
        "`{binary}` was not found on PATH: install the Debian package `{package}` (apt-get install -y {package})"
    )]
    MissingBinary {
        binary: String,
        package: &'static str,
    },

    /// A binary exists but could not be started.
    #[error("cannot run `{command}`: {source}")]
    Spawn {
        command: String,
        #[source]
        source: io::Error,
    },

    /// A command ran and failed. For `*-restore` and `nft -f -` the offending input line is
    /// quoted when the tool named one.
    #[error("`{command}` failed ({status}): {stderr}{}", failed_line.as_ref().map(|l| format!("\n(input {l})")).unwrap_or_default())]
    CommandFailed {
        command: String,
        status: String,
        stderr: String,
        failed_line: Option<String>,
    },

    /// Neither `iptables-legacy`, `iptables-nft` nor plain `iptables` works for a family.
    #[error("no usable {tool} binary for {family}: {reason}")]
    NoUsableIptables {
        tool: &'static str,
        family: &'static str,
        reason: String,
    },

    /// The output of a state dump could not be understood.
    #[error("cannot parse the output of `{command}` at line {line}: {reason}")]
    StateParse {
        command: String,
        line: usize,
        reason: String,
    },

    /// The rendered rules are not valid restore input.
    #[error(
        "the rendered {family} rules are not valid iptables-restore input at line {line}: {reason}"
    )]
    BadPlan {
        family: &'static str,
        line: usize,
        reason: String,
    },

    /// Capture rules of ours are on the machine but differ from the desired ones, and the plan
    /// did not ask to reconcile. Nothing was changed.
    #[error(
        "capture rules from an earlier run are in place but differ from the desired ones ({}); nothing was changed: rerun with --reconcile to replace them, or with --cleanup-only to remove them",
        summarize(differences)
    )]
    Drift { differences: Vec<String> },

    /// Applying failed; everything this run had applied was removed again.
    #[error(
        "applying the capture rules failed and everything applied by this run was removed again: {cause}"
    )]
    RolledBack {
        #[source]
        cause: Box<CaptureError>,
    },

    /// Applying failed and removing what had been applied failed too: the machine may hold a
    /// partial rule set, which `--cleanup-only` removes.
    #[error(
        "applying the capture rules failed ({cause}) and removing the partial rules failed too ({rollback}): run with --cleanup-only to remove them"
    )]
    RollbackFailed {
        cause: Box<CaptureError>,
        rollback: Box<CaptureError>,
    },

    /// The temporary DROP guardrails of a reconcile could not be removed: traffic is blocked
    /// until they are (`--cleanup-only` removes them).
    #[error(
        "the temporary DROP guardrails could not be removed, TCP and UDP traffic stays blocked until `--cleanup-only` succeeds: {cause}"
    )]
    GuardrailsStuck {
        #[source]
        cause: Box<CaptureError>,
    },

    /// The plan's backend and rendered rules do not belong together.
    #[error("the plan selects the {backend} backend but carries {rules}")]
    BackendMismatch {
        backend: &'static str,
        rules: &'static str,
    },

    /// Writing the dry-run output failed.
    #[error("cannot write the dry-run output to {stream}: {source}")]
    Print {
        stream: &'static str,
        #[source]
        source: io::Error,
    },
}

/// The first few differences, and how many more there are: enough to see what drifted.
fn summarize(differences: &[String]) -> String {
    const SHOWN: usize = 6;
    let mut s = differences
        .iter()
        .take(SHOWN)
        .cloned()
        .collect::<Vec<_>>()
        .join("; ");
    if differences.len() > SHOWN {
        s.push_str(&format!("; and {} more", differences.len() - SHOWN));
    }
    s
}
