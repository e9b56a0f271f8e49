//! Running the packet-filter tools (`iptables*`, `nft`, `ip`) and turning their failures into
//! [`CaptureError`]s that name the command, its exit status and what it printed.

use std::io::{ErrorKind, Write};
use std::process::{Command, Output, Stdio};

use crate::exec_error::CaptureError;

/// One invocation of an external tool.
#[derive(Debug, Clone)]
pub(crate) struct Cmd {
    program: String,
    args: Vec<String>,
    stdin: Option<String>,
}

/// What a finished command printed and how it ended.
#[derive(Debug)]
pub(crate) struct Ran {
    pub success: bool,
    pub stdout: String,
    pub stderr: String,
    status: String,
}

impl Cmd {
    pub(crate) fn new(program: &str) -> Cmd {
        Cmd {
            program: program.to_string(),
            args: Vec::new(),
            stdin: None,
        }
    }

    pub(crate) fn arg(mut self, arg: impl Into<String>) -> Cmd {
        self.args.push(arg.into());
        self
    }

    pub(crate) fn args<I, S>(mut self, args: I) -> Cmd
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    pub(crate) fn stdin(mut self, input: impl Into<String>) -> Cmd {
        self.stdin = Some(input.into());
        self
    }

    /// The command line as a user would type it, for logs and errors.
    pub(crate) fn display(&self) -> String {
        let mut s = self.program.clone();
        for a in &self.args {
            s.push(' ');
            s.push_str(a);
        }
        if self.stdin.is_some() {
            s.push_str(" < (rules on stdin)");
        }
        s
    }

    /// Runs the command to completion, whatever its exit status.
    pub(crate) fn run(&self) -> Result<Ran, CaptureError> {
        tracing::debug!(command = %self.display(), "running");
        let mut c = Command::new(&self.program);
        c.args(&self.args)
            .stdin(if self.stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = c.spawn().map_err(|e| self.spawn_error(e))?;
        let output: Output = match (&self.stdin, child.stdin.take()) {
            (Some(input), Some(mut pipe)) => {
                // Written from a second thread so that a tool printing a lot before it has read
                // all its input cannot deadlock against us.
                let (out, written) = std::thread::scope(|s| {
                    let writer = s.spawn(move || {
                        let r = pipe.write_all(input.as_bytes());
                        // Closing stdin is the end of input for the tool.
                        drop(pipe);
                        r
                    });
                    let out = child.wait_with_output();
                    let written = writer
                        .join()
                        .unwrap_or_else(|_| Err(std::io::Error::other("stdin writer panicked")));
                    (out, written)
                });
                let out = out.map_err(|e| self.spawn_error(e))?;
                // A tool that failed may stop reading early; its exit status says why. One that
                // succeeded without reading all of its input did not apply all of it.
                if let Err(e) = written
                    && out.status.success()
                {
                    return Err(CaptureError::Spawn {
                        command: self.display(),
                        source: e,
                    });
                }
                out
            }
            _ => child.wait_with_output().map_err(|e| self.spawn_error(e))?,
        };
        Ok(Ran {
            success: output.status.success(),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
            status: output.status.to_string(),
        })
    }

    /// Runs the command and returns its stdout, or an error naming it when it fails.
    pub(crate) fn run_ok(&self) -> Result<String, CaptureError> {
        let ran = self.run()?;
        if ran.success {
            Ok(ran.stdout)
        } else {
            Err(self.failed(&ran))
        }
    }

    /// The error for a run that exited unsuccessfully; quotes the stdin line the tool blamed.
    pub(crate) fn failed(&self, ran: &Ran) -> CaptureError {
        let failed_line = self.stdin.as_deref().and_then(|input| {
            let n = blamed_line(&ran.stderr)?;
            let line = input.lines().nth(n.checked_sub(1)?)?;
            Some(format!("line {n}: {line}"))
        });
        CaptureError::CommandFailed {
            command: self.display(),
            status: ran.status.clone(),
            stderr: ran.stderr.trim().to_string(),
            failed_line,
        }
    }

    fn spawn_error(&self, e: std::io::Error) -> CaptureError {
        if e.kind() == ErrorKind::NotFound {
            CaptureError::MissingBinary {
                binary: self.program.clone(),
                package: package_of(&self.program),
            }
        } else {
            CaptureError::Spawn {
                command: self.display(),
                source: e,
            }
        }
    }
}

/// The Debian package that ships a binary we call.
pub(crate) fn package_of(binary: &str) -> &'static str {
    if binary.starts_with("nft") {
        "nftables"
    } else if binary == "ip" {
        "iproute2"
    } else {
        "iptables"
    }
}

/// The input line number a tool complained about: `iptables-restore: line 5 failed` or
/// nft's `/dev/stdin:5:1-10: Error: ...`.
fn blamed_line(stderr: &str) -> Option<usize> {
    for marker in ["line: ", "line "] {
        if let Some(pos) = stderr.find(marker) {
            let digits: String = stderr[pos + marker.len()..]
                .chars()
                .take_while(char::is_ascii_digit)
                .collect();
            if let Ok(n) = digits.parse() {
                return Some(n);
            }
        }
    }
    let pos = stderr.find("/dev/stdin:")?;
    let digits: String = stderr[pos + "/dev/stdin:".len()..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blamed_line_of_iptables_restore_and_nft() {
        assert_eq!(blamed_line("iptables-restore: line 6 failed"), Some(6));
        assert_eq!(
            blamed_line(
                "iptables-nft-restore: line 12 failed: No chain/target/match by that name."
            ),
            Some(12)
        );
        assert_eq!(
            blamed_line("/dev/stdin:3:1-4: Error: Could not process rule"),
            Some(3)
        );
        assert_eq!(
            blamed_line(
                "Couldn't load target `X':No such file or directory\n\nError occurred at line: 40\n"
            ),
            Some(40)
        );
        assert_eq!(blamed_line("Bad argument"), None);
    }

    #[test]
    fn failed_restore_quotes_the_input_line() {
        let cmd = Cmd::new("iptables-restore").stdin("*nat\n-A NOPE -j RETURN\nCOMMIT\n");
        let ran = Ran {
            success: false,
            stdout: String::new(),
            stderr: "iptables-restore: line 2 failed\n".into(),
            status: "exit status: 1".into(),
        };
        let msg = cmd.failed(&ran).to_string();
        assert!(msg.contains("iptables-restore < (rules on stdin)"), "{msg}");
        assert!(msg.contains("exit status: 1"), "{msg}");
        assert!(msg.contains("line 2 failed"), "{msg}");
        assert!(msg.contains("-A NOPE -j RETURN"), "{msg}");
    }

    #[test]
    fn missing_binary_names_the_package() {
        let err = Cmd::new("nft-definitely-not-installed").run().unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("nft-definitely-not-installed"), "{msg}");
        assert!(msg.contains("nftables"), "{msg}");
        assert_eq!(package_of("ip6tables-restore"), "iptables");
        assert_eq!(package_of("ip"), "iproute2");
    }
}
