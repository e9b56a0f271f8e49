//! Everything a run creates is named with one prefix, so that leftovers of a run that was
//! killed can be found and removed, and so that an interrupted run can clean up after itself
//! without knowing how far it got.

use std::io::{BufRead, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

use nix::sys::signal::{SigSet, Signal};

use crate::harness::error::Error;

/// Prefix of every namespace label (`vmpb-cli` → namespace `vmpb-cli-<pid>-<n>`) and of the
/// work directory (`/tmp/vmpb-<pid>`).
pub const PREFIX: &str = "vmpb";

/// The work directory of this run: configuration files and load-generator logs.
pub fn workdir() -> PathBuf {
    std::env::temp_dir().join(format!("{PREFIX}-{}", std::process::id()))
}

/// Names of our namespaces and work directories that exist now, as `netns NAME` and
/// `dir PATH`.
pub fn leftovers() -> Vec<String> {
    let mut found: Vec<String> = our_namespaces()
        .into_iter()
        .map(|n| format!("netns {n}"))
        .collect();
    found.extend(
        our_dirs()
            .into_iter()
            .map(|d| format!("dir {}", d.display())),
    );
    found
}

/// Kills every process inside our namespaces (by pid), deletes the namespaces (and with them
/// every capture rule, veth and address in them) and removes our work directories.
/// Returns what was removed.
pub fn clean_all() -> Vec<String> {
    let me = std::process::id();
    let mut removed = Vec::new();
    for ns in our_namespaces() {
        for pid in netns_pids(&ns) {
            if pid != me {
                // The pid was read from the namespace just now; a process that exited in
                // between makes this fail harmlessly.
                let _ =
                    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), Signal::SIGKILL);
            }
        }
        let deleted = Command::new("ip")
            .args(["netns", "del", &ns])
            .output()
            .is_ok_and(|o| o.status.success());
        if deleted {
            removed.push(format!("netns {ns}"));
        } else {
            tracing::warn!(netns = %ns, "could not delete namespace");
        }
    }
    for dir in our_dirs() {
        match std::fs::remove_dir_all(&dir) {
            Ok(()) => removed.push(format!("dir {}", dir.display())),
            Err(e) => tracing::warn!(dir = %dir.display(), "could not remove: {e}"),
        }
    }
    removed
}

/// Refuses to go on while leftovers exist; on a terminal, offers to remove them first.
pub fn refuse_leftovers() -> Result<(), Error> {
    let found = leftovers();
    if found.is_empty() {
        return Ok(());
    }
    let what = found.join(", ");
    if std::io::stdin().is_terminal() {
        eprint!("leftovers of an earlier run: {what}\nremove them now? [y/N] ");
        let _ = std::io::stderr().flush();
        let mut answer = String::new();
        let read = std::io::stdin().lock().read_line(&mut answer);
        if read.is_ok() && answer.trim().eq_ignore_ascii_case("y") {
            for r in clean_all() {
                eprintln!("removed {r}");
            }
            let still = leftovers();
            if still.is_empty() {
                return Ok(());
            }
            return Err(Error::Leftovers {
                what: still.join(", "),
            });
        }
    }
    Err(Error::Leftovers { what })
}

/// Blocks SIGINT, SIGTERM and SIGHUP in this thread (and so in every thread started after
/// it) and starts a thread that, on any of them, cleans everything up and exits with
/// 128 + the signal number. Must run before any other thread is started. Children get a
/// clean signal mask from `std::process::Command`.
pub fn cleanup_on_signals() -> Result<(), Error> {
    let mut set = SigSet::empty();
    for s in [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP] {
        set.add(s);
    }
    set.thread_block().map_err(Error::Signals)?;
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            if let Ok(sig) = set.wait() {
                eprintln!("\nharness: {sig} received, cleaning up");
                for r in clean_all() {
                    eprintln!("removed {r}");
                }
                std::process::exit(128 + sig as i32);
            }
        })
        .map_err(|source| Error::Spawn {
            program: "signal thread".into(),
            source,
        })?;
    Ok(())
}

fn our_namespaces() -> Vec<String> {
    let Ok(out) = Command::new("ip").args(["netns", "list"]).output() else {
        return Vec::new();
    };
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|n| n.starts_with(&format!("{PREFIX}-")))
        .map(str::to_string)
        .collect()
}

fn netns_pids(ns: &str) -> Vec<u32> {
    let Ok(out) = Command::new("ip").args(["netns", "pids", ns]).output() else {
        return Vec::new();
    };
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect()
}

fn our_dirs() -> Vec<PathBuf> {
    let tmp = std::env::temp_dir();
    let Ok(entries) = std::fs::read_dir(&tmp) else {
        return Vec::new();
    };
    entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| is_workdir_name(p))
        .collect()
}

/// `vmpb-<digits>`: only directories named exactly like [`workdir`] are ours.
fn is_workdir_name(p: &Path) -> bool {
    p.file_name()
        .and_then(|n| n.to_str())
        .and_then(|n| n.strip_prefix(&format!("{PREFIX}-")))
        .is_some_and(|pid| !pid.is_empty() && pid.bytes().all(|b| b.is_ascii_digit()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_workdir_shaped_names_are_ours() {
        assert!(is_workdir_name(Path::new("/tmp/vmpb-123")));
        assert!(!is_workdir_name(Path::new("/tmp/vmpb-")));
        assert!(!is_workdir_name(Path::new("/tmp/vmpb-12x")));
        assert!(!is_workdir_name(Path::new("/tmp/other-123")));
    }
}
