//! istioctl, built from the same Istio commit as the istiod test server, run the way a user
//! runs it, but kept away from any real cluster.

use std::io::Read;
use std::os::unix::process::CommandExt;
use std::process::{Command, Output, Stdio};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::gobuild::go_binaries;
use crate::istiod::IstiodError;
use crate::netns::{kill_group, unique_name};
use crate::process::wait_with_deadline;

/// Longer than istioctl's own `--timeout` default (30 s), so its error is what we see.
const TIMEOUT: Duration = Duration::from_secs(60);

/// Runs `istioctl ARGS` (building it if needed) and returns its output whatever its exit
/// status, after at most a minute.
///
/// HOME is an empty temporary directory and KUBECONFIG names a file that does not exist, so
/// istioctl never reads a real kubeconfig or talks to a real cluster: without one, its
/// Kubernetes client falls back to `127.0.0.1:8080`, where nothing of ours listens.
/// Commands that look up the default revision in the cluster (`proxy-status`) wait for that
/// API until their timeout unless given `--revision default`.
///
/// # Panics
/// When Go is missing or the build fails (see [`go_binaries`]).
pub fn istioctl(args: &[&str]) -> Result<Output, IstiodError> {
    let bins = go_binaries();
    let home = std::env::temp_dir()
        .join("vm-proxy-tests")
        .join(unique_name("istioctl-home"));
    std::fs::create_dir_all(&home).map_err(|source| IstiodError::Write {
        path: home.clone(),
        source,
    })?;
    let result = run(&bins.istioctl, args, &home);
    let _ = std::fs::remove_dir_all(&home);
    result
}

fn run(
    program: &std::path::Path,
    args: &[&str],
    home: &std::path::Path,
) -> Result<Output, IstiodError> {
    let mut child = Command::new(program)
        .args(args)
        .env("HOME", home)
        .env("KUBECONFIG", home.join("no-kubeconfig"))
        // In-cluster configuration would otherwise win over the missing kubeconfig.
        .env_remove("KUBERNETES_SERVICE_HOST")
        .env_remove("KUBERNETES_SERVICE_PORT")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .map_err(|source| IstiodError::Spawn {
            program: program.display().to_string(),
            source,
        })?;
    // Drained on their own threads: istioctl blocked on a full pipe would never finish.
    let stdout = child.stdout.take().map(drain);
    let stderr = child.stderr.take().map(drain);
    let status = match wait_with_deadline(&mut child, "istioctl", TIMEOUT) {
        Ok(status) => status,
        Err(e) => {
            kill_group(child.id());
            let _ = child.wait();
            let program = format!("istioctl {}", args.join(" "));
            return Err(match e {
                crate::Error::Timeout { waited, .. } => IstiodError::Timeout { program, waited },
                other => IstiodError::Harness {
                    program,
                    source: other,
                },
            });
        }
    };
    Ok(Output {
        status,
        stdout: collect(stdout),
        stderr: collect(stderr),
    })
}

fn drain<R: Read + Send + 'static>(mut r: R) -> JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = r.read_to_end(&mut buf);
        buf
    })
}

fn collect(h: Option<JoinHandle<Vec<u8>>>) -> Vec<u8> {
    h.and_then(|h| h.join().ok()).unwrap_or_default()
}
