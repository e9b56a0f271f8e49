//! Network namespaces created for one test and deleted when dropped.

use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

/// A network namespace owned by a test: created with `ip netns add`, loopback up,
/// deleted with `ip netns del` on drop (also during unwinding after a failed assertion).
pub struct Netns {
    name: String,
}

static SEQ: AtomicU32 = AtomicU32::new(0);

/// A name no other test (in this or another concurrently running test binary) uses:
/// prefix, process id, and a per-process counter. Kept short: interface names derive from it.
pub fn unique_name(prefix: &str) -> String {
    let n = SEQ.fetch_add(1, Ordering::Relaxed);
    format!("{prefix}-{}-{n}", std::process::id())
}

impl Netns {
    /// Creates a namespace named `<prefix>-<pid>-<n>` with `lo` up.
    pub fn new(prefix: &str) -> Netns {
        let ns = Netns {
            name: unique_name(prefix),
        };
        run_ok(Command::new("ip").args(["netns", "add", &ns.name]));
        ns.run_ok(&["ip", "link", "set", "lo", "up"]);
        ns
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// A command that runs inside the namespace (`ip netns exec NAME ...`).
    pub fn command(&self, program: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name, program]);
        c
    }

    /// Runs `argv` inside the namespace and returns its output, whatever the exit status.
    pub fn run(&self, argv: &[&str]) -> Output {
        let mut c = self.command(argv[0]);
        c.args(&argv[1..]);
        output_of(&mut c)
    }

    /// Runs `argv` inside the namespace, panicking with its stderr unless it succeeds;
    /// returns its stdout.
    pub fn run_ok(&self, argv: &[&str]) -> String {
        let mut c = self.command(argv[0]);
        c.args(&argv[1..]);
        run_ok(&mut c)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        // Processes started inside must not keep the namespace alive or leak: kill them first.
        let _ = Command::new("ip")
            .args(["netns", "pids", &self.name])
            .output()
            .map(|o| {
                for pid in String::from_utf8_lossy(&o.stdout).split_whitespace() {
                    let _ = Command::new("kill").args(["-9", pid]).status();
                }
            });
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

fn output_of(c: &mut Command) -> Output {
    c.output()
        .unwrap_or_else(|e| panic!("cannot run {c:?}: {e}"))
}

/// Runs a command, panicking with its stderr unless it succeeds; returns its stdout.
pub fn run_ok(c: &mut Command) -> String {
    let out = output_of(c);
    assert!(
        out.status.success(),
        "{c:?} failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}
