//! Network namespaces created for one test and deleted when dropped.

use std::fs::File;
use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use nix::sched::CloneFlags;

use crate::error::Error;
use crate::process::wait_with_deadline;
use crate::require::require_root;

/// A network namespace owned by a test: created with `ip netns add`, loopback up,
/// deleted with `ip netns del` on drop (also during unwinding after a failed assertion).
pub struct Netns {
    name: String,
}

static SEQ: AtomicU32 = AtomicU32::new(0);

/// A name no other test (in this or another concurrently running test binary) uses:
/// prefix, process id, and a per-process counter. Interface names never derive from it
/// (see [`crate::topology`]), so its length only matters for readability.
pub fn unique_name(prefix: &str) -> String {
    let n = SEQ.fetch_add(1, Ordering::Relaxed);
    format!("{prefix}-{}-{n}", std::process::id())
}

impl Netns {
    /// Creates a namespace named `<prefix>-<pid>-<n>` with `lo` up.
    ///
    /// # Panics
    /// When not root, or when `ip netns add` fails.
    pub fn new(prefix: &str) -> Netns {
        require_root();
        let ns = Netns {
            name: unique_name(prefix),
        };
        run_ok(Command::new("ip").args(["netns", "add", &ns.name]));
        ns.run_ok(&["ip", "link", "set", "lo", "up"]);
        ns
    }

    /// The name `ip netns` knows it by.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The bind mount that pins the namespace; what `setns` opens.
    pub fn path(&self) -> PathBuf {
        PathBuf::from(format!("/run/netns/{}", self.name))
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

    /// Runs `argv` inside the namespace, killing it (and its process group) if it has not
    /// finished after `timeout`. The output is returned whatever the exit status.
    pub fn run_timeout(&self, argv: &[&str], timeout: Duration) -> Result<Output, Error> {
        self.run_timeout_input(argv, &[], timeout)
    }

    /// Like [`Netns::run_timeout`], with `input` written to the program's stdin, which is
    /// then closed (so that `nc -N` and friends see end of input).
    pub fn run_timeout_input(
        &self,
        argv: &[&str],
        input: &[u8],
        timeout: Duration,
    ) -> Result<Output, Error> {
        use std::os::unix::process::CommandExt;
        let mut c = self.command(argv[0]);
        c.args(&argv[1..])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0);
        let mut child = c.spawn().map_err(|source| Error::Spawn {
            ns: self.name.clone(),
            program: argv[0].to_string(),
            source,
        })?;
        // Feed and drain on their own threads: a program blocked on a full pipe would
        // otherwise never finish and only ever hit the timeout.
        let feeder = child.stdin.take().map(|mut stdin| {
            let input = input.to_vec();
            std::thread::spawn(move || {
                let _ = stdin.write_all(&input);
            })
        });
        let stdout = child.stdout.take().map(drain);
        let stderr = child.stderr.take().map(drain);
        let status = wait_with_deadline(&mut child, argv[0], timeout);
        if status.is_err() {
            kill_group(child.id());
            let _ = child.wait();
        }
        if let Some(f) = feeder {
            let _ = f.join();
        }
        let status = status?;
        Ok(Output {
            status,
            stdout: collect(stdout),
            stderr: collect(stderr),
        })
    }

    /// Sets a sysctl inside the namespace (network sysctls are per namespace).
    ///
    /// # Panics
    /// When `sysctl -w` fails, e.g. for a key that does not exist.
    pub fn sysctl(&self, key: &str, value: &str) {
        self.run_ok(&["sysctl", "-q", "-w", &format!("{key}={value}")]);
    }

    /// Runs `f` on a new thread that has entered this namespace first, so every socket it
    /// creates lives here; sockets keep their namespace when handed to other threads.
    /// The thread's result is `Err` only when the namespace could not be entered.
    pub fn spawn_thread<T, F>(&self, f: F) -> JoinHandle<Result<T, Error>>
    where
        T: Send + 'static,
        F: FnOnce() -> T + Send + 'static,
    {
        spawn_in(&self.name, f)
    }

    /// Runs `f` inside this namespace and waits for it; a panic in `f` is re-raised here so
    /// that assertions inside it fail the test as usual.
    pub fn in_ns<T, F>(&self, f: F) -> Result<T, Error>
    where
        T: Send + 'static,
        F: FnOnce() -> T + Send + 'static,
    {
        match self.spawn_thread(f).join() {
            Ok(r) => r,
            Err(payload) => std::panic::resume_unwind(payload),
        }
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        // Processes started inside must not keep the namespace alive or leak: kill them first.
        let me = std::process::id().to_string();
        if let Ok(o) = Command::new("ip")
            .args(["netns", "pids", &self.name])
            .output()
        {
            for pid in String::from_utf8_lossy(&o.stdout).split_whitespace() {
                if pid != me
                    && let Ok(pid) = pid.parse::<i32>()
                {
                    let _ = nix::sys::signal::kill(
                        nix::unistd::Pid::from_raw(pid),
                        nix::sys::signal::Signal::SIGKILL,
                    );
                }
            }
        }
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// The thread behind [`Netns::spawn_thread`], for holders of just the namespace's name.
pub(crate) fn spawn_in<T, F>(ns: &str, f: F) -> JoinHandle<Result<T, Error>>
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    // Open before spawning: the namespace may be deleted by the time the thread runs, and
    // the open file keeps it alive for as long as the thread needs it.
    let path = format!("/run/netns/{ns}");
    let opened = File::open(&path).map_err(|source| Error::OpenNetns { path, source });
    let name = ns.to_string();
    std::thread::Builder::new()
        .name(format!("in-{ns}"))
        .spawn(move || {
            let file = opened?;
            nix::sched::setns(&file, CloneFlags::CLONE_NEWNET)
                .map_err(|source| Error::EnterNetns { ns: name, source })?;
            Ok(f())
        })
        .unwrap_or_else(|e| panic!("cannot spawn a thread for namespace {ns}: {e}"))
}

/// SIGKILL to the process group led by `pid` (our children are started as group leaders).
pub(crate) fn kill_group(pid: u32) {
    if let Ok(pid) = i32::try_from(pid) {
        let _ = nix::sys::signal::killpg(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
}

fn drain<R: std::io::Read + Send + 'static>(mut r: R) -> JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = r.read_to_end(&mut buf);
        buf
    })
}

fn collect(h: Option<JoinHandle<Vec<u8>>>) -> Vec<u8> {
    h.and_then(|h| h.join().ok()).unwrap_or_default()
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
