//! CPU time and memory of processes, read from /proc: what each proxy costs.

use std::path::Path;

/// Clock ticks per second of /proc/*/stat times (USER_HZ, 100 on Linux).
pub fn ticks_per_sec() -> f64 {
    match nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK) {
        Ok(Some(t)) if t > 0 => t as f64,
        _ => 100.0,
    }
}

/// Pids of every process in process group `pgid` (a program we started and its forks,
/// e.g. nginx's master and worker).
pub fn group_pids(pgid: u32) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()))
        .filter(|pid| stat_fields(*pid).is_some_and(|f| f.pgrp == pgid))
        .collect()
}

/// user+system CPU seconds used so far by the whole process group `pgid`.
pub fn group_cpu_secs(pgid: u32) -> f64 {
    let ticks: u64 = group_pids(pgid)
        .into_iter()
        .filter_map(stat_fields)
        .map(|f| f.utime + f.stime)
        .sum();
    ticks as f64 / ticks_per_sec()
}

/// Resident memory of a process group, summed over its processes, in KiB.
#[derive(Debug, Clone, Copy, Default)]
pub struct Mem {
    /// VmRSS now.
    pub rss_kb: u64,
    /// VmHWM: the peak since each process started.
    pub hwm_kb: u64,
}

pub fn group_mem(pgid: u32) -> Mem {
    group_pids(pgid)
        .into_iter()
        .filter_map(|pid| std::fs::read_to_string(format!("/proc/{pid}/status")).ok())
        .map(|s| Mem {
            rss_kb: status_kb(&s, "VmRSS:"),
            hwm_kb: status_kb(&s, "VmHWM:"),
        })
        .fold(Mem::default(), |a, m| Mem {
            rss_kb: a.rss_kb + m.rss_kb,
            hwm_kb: a.hwm_kb + m.hwm_kb,
        })
}

/// Busy CPU seconds of the whole machine (all CPUs; everything but idle and iowait).
pub fn machine_busy_secs() -> f64 {
    let text = std::fs::read_to_string(Path::new("/proc/stat")).unwrap_or_default();
    let Some(line) = text.lines().find(|l| l.starts_with("cpu ")) else {
        return 0.0;
    };
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|n| n.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal (guest time is already in user)
    let busy: u64 = v
        .iter()
        .take(8)
        .enumerate()
        .filter(|(i, _)| *i != 3 && *i != 4)
        .map(|(_, n)| n)
        .sum();
    busy as f64 / ticks_per_sec()
}

/// CPU seconds used by this harness and every child it has waited for (load generators).
pub fn self_and_children_secs() -> f64 {
    use nix::sys::resource::{UsageWho, getrusage};
    let secs = |who| {
        getrusage(who)
            .map(|u| {
                let t =
                    |tv: nix::sys::time::TimeVal| tv.tv_sec() as f64 + tv.tv_usec() as f64 / 1e6;
                t(u.user_time()) + t(u.system_time())
            })
            .unwrap_or(0.0)
    };
    secs(UsageWho::RUSAGE_SELF) + secs(UsageWho::RUSAGE_CHILDREN)
}

struct StatFields {
    pgrp: u32,
    utime: u64,
    stime: u64,
}

fn stat_fields(pid: u32) -> Option<StatFields> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_stat(&text)
}

/// Fields after the command name, which is in parentheses and may itself hold spaces and
/// parentheses: state ppid pgrp session tty tpgid flags minflt cminflt majflt cmajflt utime
/// stime ...
fn parse_stat(text: &str) -> Option<StatFields> {
    let rest = &text[text.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    Some(StatFields {
        pgrp: f.get(2)?.parse().ok()?,
        utime: f.get(11)?.parse().ok()?,
        stime: f.get(12)?.parse().ok()?,
    })
}

fn status_kb(status: &str, key: &str) -> u64 {
    status
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_with_odd_command_name() {
        let s = "42 (ng inx) (x)) S 1 42 42 0 -1 4194560 10 0 0 0 7 3 0 0 20 0 1 0 5 0 0";
        let f = parse_stat(s).unwrap();
        assert_eq!((f.pgrp, f.utime, f.stime), (42, 7, 3));
    }

    #[test]
    fn status_values_in_kb() {
        let s = "Name:\tx\nVmHWM:\t   2048 kB\nVmRSS:\t   1024 kB\n";
        assert_eq!(status_kb(s, "VmRSS:"), 1024);
        assert_eq!(status_kb(s, "VmHWM:"), 2048);
        assert_eq!(status_kb(s, "VmSwap:"), 0);
    }

    #[test]
    fn own_group_is_found_and_uses_cpu() {
        let me = std::process::id();
        let pgid = nix::unistd::getpgrp().as_raw() as u32;
        assert!(group_pids(pgid).contains(&me));
        assert!(group_mem(pgid).rss_kb > 0);
        assert!(machine_busy_secs() > 0.0);
    }
}
