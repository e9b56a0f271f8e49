//! What must hold before measuring: root, the tools, the open-file limit, the binary under
//! test; and what the run records about the machine and the tools.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{Value, json};

use crate::harness::error::Error;
use crate::harness::proxies::NGINX_STREAM_MODULE;

/// Programs the harness runs, with the Debian package of each.
const TOOLS: &[(&str, &str)] = &[
    ("ip", "iproute2"),
    ("ss", "iproute2"),
    ("iptables-restore", "iptables"),
    ("setpriv", "util-linux"),
    ("taskset", "util-linux"),
    ("sysctl", "procps"),
    ("nginx", "nginx"),
    ("haproxy", "haproxy"),
    ("wrk", "wrk"),
    ("h2load", "nghttp2-client"),
    ("iperf3", "iperf3"),
];

/// Open files the proxies and the harness would like: 10k idle connections through a proxy
/// are 20k sockets in it.
const NOFILE: u64 = 65_536;
/// File descriptors a proxy needs besides its connections (listeners, epoll, logs, admin).
const FD_SLACK: u64 = 200;

/// Raises RLIMIT_NOFILE for the harness and every child it starts, as far as the hard
/// limit allows (raising that needs CAP_SYS_RESOURCE, which containers often lack), and
/// returns how many connections a proxy can then hold (two sockets each).
pub fn raise_nofile() -> Result<u32, Error> {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let err = |source| Error::Rlimit {
        want: NOFILE,
        source,
    };
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).map_err(err)?;
    let limit = if hard < NOFILE && setrlimit(Resource::RLIMIT_NOFILE, NOFILE, NOFILE).is_ok() {
        NOFILE
    } else {
        let want = hard.min(NOFILE).max(soft);
        setrlimit(Resource::RLIMIT_NOFILE, want, hard).map_err(err)?;
        want
    };
    Ok(u32::try_from(limit.saturating_sub(FD_SLACK) / 2).unwrap_or(u32::MAX))
}

pub fn require_root() -> Result<(), Error> {
    if nix::unistd::geteuid().is_root() {
        Ok(())
    } else {
        Err(Error::NotRoot)
    }
}

pub fn require_tools() -> Result<(), Error> {
    let mut missing: Vec<(&str, &str)> =
        TOOLS.iter().copied().filter(|(t, _)| !on_path(t)).collect();
    if !Path::new(NGINX_STREAM_MODULE).exists() {
        missing.push((NGINX_STREAM_MODULE, "libnginx-mod-stream"));
    }
    if missing.is_empty() {
        return Ok(());
    }
    let mut packages: Vec<&str> = missing.iter().map(|(_, p)| *p).collect();
    packages.sort_unstable();
    packages.dedup();
    Err(Error::MissingTools {
        tools: missing
            .iter()
            .map(|(t, _)| *t)
            .collect::<Vec<_>>()
            .join(", "),
        packages: packages.join(" "),
    })
}

/// The workspace this crate lives in.
pub fn workspace_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf)
}

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map_or_else(|| workspace_dir().join("target"), PathBuf::from)
}

/// The vm-proxy binary: the given one, or a fresh `cargo build --release -p vm-proxy`.
pub fn vm_proxy_binary(given: Option<&Path>) -> Result<PathBuf, Error> {
    if let Some(p) = given {
        return if p.is_file() {
            Ok(p.to_path_buf())
        } else {
            Err(Error::Io {
                path: p.to_path_buf(),
                source: std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    "no such binary (--vm-proxy)",
                ),
            })
        };
    }
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    tracing::info!("building vm-proxy: cargo build --release -p vm-proxy");
    let status = Command::new(&cargo)
        .args(["build", "--release", "-p", "vm-proxy", "--manifest-path"])
        .arg(workspace_dir().join("Cargo.toml"))
        .status()
        .map_err(|source| Error::Spawn {
            program: "cargo build --release -p vm-proxy".into(),
            source,
        })?;
    if !status.success() {
        return Err(Error::Failed {
            program: "cargo build --release -p vm-proxy".into(),
            status: status.to_string(),
            stderr: "(see cargo's output above)".into(),
        });
    }
    Ok(target_dir().join("release").join("vm-proxy"))
}

/// Where the JSON goes by default.
pub fn default_json() -> PathBuf {
    target_dir().join("bench").join("harness.json")
}

/// Machine and tool facts recorded with the results.
pub fn run_facts(mode: &str, vm_proxy: &Path) -> Value {
    let first_line = |argv: &[&str]| -> String {
        let out = Command::new(argv[0]).args(&argv[1..]).output();
        out.map(|o| {
            let text = format!(
                "{}{}",
                String::from_utf8_lossy(&o.stdout),
                String::from_utf8_lossy(&o.stderr)
            );
            text.lines().next().unwrap_or("").trim().to_string()
        })
        .unwrap_or_else(|e| format!("<{e}>"))
    };
    json!({
        "mode": mode,
        "started_unix": std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0),
        "cpus": std::thread::available_parallelism().map(usize::from).unwrap_or(0),
        "kernel": first_line(&["uname", "-r"]),
        "loadavg_at_start": loadavg(),
        "pinning": "taskset: load generators (h2load, wrk, iperf3 -c) on CPU 0; proxy, upstream \
                    nginx and iperf3 -s share CPU 1; one worker per proxy",
        "vm_proxy": vm_proxy.display().to_string(),
        "versions": {
            "vm-proxy": first_line(&[&vm_proxy.to_string_lossy(), "--version"]),
            "haproxy": first_line(&["haproxy", "-v"]),
            "nginx": first_line(&["nginx", "-v"]),
            "wrk": first_line(&["wrk", "--version"]),
            "h2load": first_line(&["h2load", "--version"]),
            "iperf3": first_line(&["iperf3", "--version"]),
        },
    })
}

/// Load average, for the banner and the JSON.
pub fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

fn on_path(tool: &str) -> bool {
    use std::os::unix::fs::PermissionsExt;
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin", "/usr/bin", "/bin"].map(PathBuf::from))
        .any(|d| {
            d.join(tool)
                .metadata()
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}
