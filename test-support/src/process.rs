//! Programs started inside a namespace, optionally as another user, supervised for one test:
//! output goes to files that are printed if the test fails, and the whole process group is
//! killed on drop.

use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::net::SocketAddr;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

use crate::client::probe_until;
use crate::error::Error;
use crate::netns::{Netns, kill_group, spawn_in, unique_name};

/// How often bounded waits look again.
const POLL: Duration = Duration::from_millis(10);
/// How long a SIGKILLed process gets to be reaped before we give up on it.
const REAP: Duration = Duration::from_secs(5);
/// How much of each log is printed when a test fails.
const LOG_TAIL: u64 = 64 * 1024;

/// What to start; made by [`Netns::process`].
pub struct ProcessBuilder<'a> {
    ns: &'a Netns,
    program: OsString,
    args: Vec<OsString>,
    envs: Vec<(OsString, OsString)>,
    user: Option<(u32, u32)>,
    caps: Vec<String>,
    cwd: Option<PathBuf>,
}

impl Netns {
    /// Starts describing a program to run inside this namespace.
    pub fn process(&self, program: impl AsRef<OsStr>) -> ProcessBuilder<'_> {
        ProcessBuilder {
            ns: self,
            program: program.as_ref().to_os_string(),
            args: Vec::new(),
            envs: Vec::new(),
            user: None,
            caps: Vec::new(),
            cwd: None,
        }
    }
}

impl<'a> ProcessBuilder<'a> {
    pub fn arg(mut self, a: impl AsRef<OsStr>) -> Self {
        self.args.push(a.as_ref().to_os_string());
        self
    }

    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.args
            .extend(args.into_iter().map(|a| a.as_ref().to_os_string()));
        self
    }

    /// Adds to the environment, which is otherwise inherited from the test.
    pub fn env(mut self, key: impl AsRef<OsStr>, value: impl AsRef<OsStr>) -> Self {
        self.envs
            .push((key.as_ref().to_os_string(), value.as_ref().to_os_string()));
        self
    }

    /// Runs the program with real, effective and saved uid `uid` and gid `gid` and no
    /// supplementary groups (through `setpriv`), so rules matching `--uid-owner` see it.
    pub fn user(mut self, uid: u32, gid: u32) -> Self {
        self.user = Some((uid, gid));
        self
    }

    /// Keeps these capabilities (names as `setpriv` spells them, e.g. `net_admin`) as ambient
    /// capabilities across the uid change of [`ProcessBuilder::user`], the way a proxy
    /// running as 1337 keeps `CAP_NET_ADMIN` for TPROXY.
    pub fn ambient_caps(mut self, caps: &[&str]) -> Self {
        self.caps.extend(caps.iter().map(|c| c.to_string()));
        self
    }

    pub fn current_dir(mut self, dir: impl AsRef<Path>) -> Self {
        self.cwd = Some(dir.as_ref().to_path_buf());
        self
    }

    /// Starts the program as the leader of a new process group.
    ///
    /// # Panics
    /// When the log files cannot be created, when capabilities are asked for without a
    /// user, or when the program cannot be started at all (`ip netns exec` itself failing
    /// later, e.g. for a missing program, shows up as an early exit with its stderr).
    pub fn spawn(self) -> Process {
        let program = self.program.to_string_lossy().into_owned();
        let label = Path::new(&program)
            .file_name()
            .map(|f| f.to_string_lossy().into_owned())
            .unwrap_or_else(|| "process".to_string());
        let log_dir = std::env::temp_dir()
            .join("vm-proxy-tests")
            .join(unique_name(&label));
        std::fs::create_dir_all(&log_dir)
            .unwrap_or_else(|e| panic!("cannot create log dir {}: {e}", log_dir.display()));
        let stdout_path = log_dir.join("stdout.log");
        let stderr_path = log_dir.join("stderr.log");
        let create = |p: &Path| {
            File::create(p).unwrap_or_else(|e| panic!("cannot create {}: {e}", p.display()))
        };

        let mut c = Command::new("ip");
        c.args(["netns", "exec", self.ns.name()]);
        match self.user {
            Some((uid, gid)) => {
                c.args([
                    "setpriv",
                    "--reuid",
                    &uid.to_string(),
                    "--regid",
                    &gid.to_string(),
                    "--clear-groups",
                ]);
                if !self.caps.is_empty() {
                    let caps = self
                        .caps
                        .iter()
                        .map(|c| format!("+{c}"))
                        .collect::<Vec<_>>()
                        .join(",");
                    c.args(["--inh-caps", &caps, "--ambient-caps", &caps]);
                }
                c.arg("--");
            }
            None => assert!(
                self.caps.is_empty(),
                "ambient_caps for {program} need user(): root has all capabilities already"
            ),
        }
        c.arg(&self.program)
            .args(&self.args)
            .envs(self.envs.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(create(&stdout_path))
            .stderr(create(&stderr_path))
            .process_group(0);
        if let Some(dir) = &self.cwd {
            c.current_dir(dir);
        }
        let child = c.spawn().unwrap_or_else(|e| {
            panic!(
                "cannot start {program} in namespace {}: {e}",
                self.ns.name()
            )
        });
        tracing::debug!(%program, pid = child.id(), ns = self.ns.name(), "started");
        Process {
            child,
            program,
            ns: self.ns.name().to_string(),
            log_dir,
            stdout_path,
            stderr_path,
            status: None,
        }
    }
}

/// A running (or exited) program; SIGKILLed with its process group on drop.
///
/// `ip netns exec` and `setpriv` exec the program in place, so [`Process::pid`] is the
/// program itself.
pub struct Process {
    child: Child,
    program: String,
    ns: String,
    log_dir: PathBuf,
    stdout_path: PathBuf,
    stderr_path: PathBuf,
    status: Option<ExitStatus>,
}

impl Process {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Where stdout.log and stderr.log are; removed on drop unless the test is failing.
    pub fn log_dir(&self) -> &Path {
        &self.log_dir
    }

    /// Everything the program wrote to stdout so far.
    pub fn stdout(&self) -> String {
        read_lossy(&self.stdout_path, None)
    }

    /// Everything the program wrote to stderr so far.
    pub fn stderr(&self) -> String {
        read_lossy(&self.stderr_path, None)
    }

    /// Both logs (their last 64 KiB each), labelled, for assertion messages.
    pub fn logs(&self) -> String {
        format!(
            "----- {} (pid {}) in {}: stdout -----\n{}\n----- stderr -----\n{}\n----- end -----",
            self.program,
            self.pid(),
            self.ns,
            read_lossy(&self.stdout_path, Some(LOG_TAIL)),
            read_lossy(&self.stderr_path, Some(LOG_TAIL)),
        )
    }

    /// The exit status if the program has exited (reaping it), `None` while it runs.
    pub fn try_status(&mut self) -> Result<Option<ExitStatus>, Error> {
        if self.status.is_none() {
            self.status = self.child.try_wait().map_err(|source| Error::Wait {
                program: self.program.clone(),
                pid: self.child.id(),
                source,
            })?;
        }
        Ok(self.status)
    }

    /// Sends `signal` to the program alone (not its group).
    pub fn signal(&mut self, signal: Signal) -> Result<(), Error> {
        if self.try_status()?.is_some() {
            return Ok(());
        }
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        nix::sys::signal::kill(pid, signal).map_err(|source| Error::Signal {
            program: self.program.clone(),
            pid: self.child.id(),
            source,
        })
    }

    /// Waits up to `timeout` for the program to exit by itself.
    pub fn wait_timeout(&mut self, timeout: Duration) -> Result<ExitStatus, Error> {
        if let Some(s) = self.status {
            return Ok(s);
        }
        let s = wait_with_deadline(&mut self.child, &self.program, timeout)?;
        self.status = Some(s);
        Ok(s)
    }

    /// SIGTERM, then waits up to `timeout` for the exit: what a graceful shutdown test needs.
    pub fn terminate(&mut self, timeout: Duration) -> Result<ExitStatus, Error> {
        self.signal(Signal::SIGTERM)?;
        self.wait_timeout(timeout)
    }

    /// `kill -9` of the whole process group, then reaps the program. Members of the group
    /// are killed even when the program itself has already exited: its pid stays reserved
    /// as their group id while any of them lives, so the signal cannot hit a stranger.
    pub fn kill(&mut self) -> Result<ExitStatus, Error> {
        kill_group(self.child.id());
        self.wait_timeout(REAP)
    }

    /// Waits until something accepts TCP connections on `addr` inside the program's
    /// namespace, failing early (with the program's logs) if the program exits first.
    pub fn wait_for_tcp(&mut self, addr: SocketAddr, timeout: Duration) -> Result<(), Error> {
        let give_up = Arc::new(AtomicBool::new(false));
        let probe = {
            let give_up = give_up.clone();
            spawn_in(&self.ns, move || probe_until(addr, timeout, &give_up))
        };
        let deadline = Instant::now() + timeout + REAP;
        // Bounded twice: the probe stops at its own deadline, and so do we.
        while Instant::now() < deadline {
            if probe.is_finished() {
                return match probe.join() {
                    Ok(Ok(true)) => Ok(()),
                    Ok(Ok(false)) => Err(Error::NotReady {
                        ns: self.ns.clone(),
                        addr,
                        waited: timeout,
                    }),
                    Ok(Err(e)) => Err(e),
                    Err(payload) => std::panic::resume_unwind(payload),
                };
            }
            if let Some(status) = self.try_status()? {
                give_up.store(true, Ordering::Relaxed);
                return Err(Error::ExitedEarly {
                    program: self.program.clone(),
                    status,
                    logs: self.logs(),
                });
            }
            std::thread::sleep(POLL);
        }
        give_up.store(true, Ordering::Relaxed);
        Err(Error::NotReady {
            ns: self.ns.clone(),
            addr,
            waited: timeout,
        })
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let status = self.kill();
        if std::thread::panicking() {
            eprintln!("{}", self.logs());
            eprintln!("(logs kept in {})", self.log_dir.display());
            return;
        }
        if let Err(e) = status {
            eprintln!("{e}; logs kept in {}", self.log_dir.display());
            return;
        }
        let _ = std::fs::remove_dir_all(&self.log_dir);
    }
}

/// Polls `child` until it exits or `timeout` passes; the child is left running on timeout.
pub(crate) fn wait_with_deadline(
    child: &mut Child,
    program: &str,
    timeout: Duration,
) -> Result<ExitStatus, Error> {
    let deadline = Instant::now() + timeout;
    loop {
        let polled = child.try_wait().map_err(|source| Error::Wait {
            program: program.to_string(),
            pid: child.id(),
            source,
        })?;
        if let Some(s) = polled {
            return Ok(s);
        }
        if Instant::now() >= deadline {
            return Err(Error::Timeout {
                program: program.to_string(),
                pid: child.id(),
                waited: timeout,
            });
        }
        std::thread::sleep(POLL);
    }
}

fn read_lossy(path: &Path, tail: Option<u64>) -> String {
    let mut buf = Vec::new();
    let read = File::open(path).and_then(|mut f| {
        if let Some(tail) = tail {
            let len = f.metadata()?.len();
            f.seek(SeekFrom::Start(len.saturating_sub(tail)))?;
        }
        f.read_to_end(&mut buf)
    });
    match read {
        Ok(_) => String::from_utf8_lossy(&buf).into_owned(),
        Err(e) => format!("<cannot read {}: {e}>", path.display()),
    }
}
