//! Builds the Go programs of `test-support/istiod` (istiod's discovery server for tests,
//! and istioctl from the same Istio commit) with `go build`, once per test process.
//!
//! Go's build cache (kept under the workspace's `target/go-cache`, so CI can cache it with
//! the rest of `target/`) makes a build with unchanged sources a no-op, so this simply runs
//! `go build` every time; a lock file serialises test processes that build at once.
//! Modules come from the Go module proxy into the default module cache (`go env GOMODCACHE`).

use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::Instant;

use nix::fcntl::{Flock, FlockArg};

/// The built programs.
#[derive(Debug, Clone)]
pub struct GoBinaries {
    /// The istiod test server (`test-support/istiod`, see [`crate::istiod`]).
    pub istiod: PathBuf,
    /// istioctl built from the same Istio module.
    pub istioctl: PathBuf,
}

/// Where Go is usually installed when it is not on PATH (its official tarball's location).
const GO_FALLBACK: &str = "/usr/local/go/bin/go";

/// Go version the module needs (its `go` directive).
const GO_NEEDED: &str = "1.26";

/// istioctl's main package at the pinned Istio commit.
const ISTIOCTL_PACKAGE: &str = "istio.io/istio/istioctl/cmd/istioctl";

static BUILT: OnceLock<GoBinaries> = OnceLock::new();

/// Builds both programs (once per process) and returns their paths.
///
/// # Panics
/// When Go is not installed, when the module proxy cannot be reached for modules not yet
/// downloaded, or when `go build` fails: the message says what to install or fix.
pub fn go_binaries() -> &'static GoBinaries {
    BUILT.get_or_init(build_all)
}

/// The workspace's target directory: `CARGO_TARGET_DIR` if set, else `target/` beside
/// the workspace's Cargo.toml.
pub fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) if !dir.is_empty() => {
            let dir = PathBuf::from(dir);
            if dir.is_absolute() {
                dir
            } else {
                workspace_root().join(dir)
            }
        }
        _ => workspace_root().join("target"),
    }
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")))
}

fn module_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("istiod")
}

fn build_all() -> GoBinaries {
    let go = find_go();
    let target = target_dir();
    let bin_dir = target.join("go-bin");
    let cache = target.join("go-cache");
    for dir in [&bin_dir, &cache] {
        std::fs::create_dir_all(dir)
            .unwrap_or_else(|e| panic!("cannot create {}: {e}", dir.display()));
    }
    let _lock = lock(&bin_dir.join(".build.lock"));
    let bins = GoBinaries {
        istiod: bin_dir.join("istiod-test"),
        istioctl: bin_dir.join("istioctl"),
    };
    go_build(&go, &cache, &bins.istiod, ".");
    go_build(&go, &cache, &bins.istioctl, ISTIOCTL_PACKAGE);
    bins
}

/// Holds an exclusive lock on `path` until dropped, so that only one test process at a
/// time writes the binaries.
fn lock(path: &Path) -> Flock<File> {
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .unwrap_or_else(|e| panic!("cannot open lock file {}: {e}", path.display()));
    Flock::lock(file, FlockArg::LockExclusive)
        .unwrap_or_else(|(_, e)| panic!("cannot lock {}: {e}", path.display()))
}

fn find_go() -> PathBuf {
    let on_path = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join("go"))
            .find(|p| p.is_file())
    });
    if let Some(go) = on_path.or_else(|| Some(PathBuf::from(GO_FALLBACK)).filter(|p| p.is_file())) {
        return go;
    }
    panic!(
        "Go is not installed: the istiod tests build istiod and istioctl from {} with `go build`. \
         Install Go {GO_NEEDED} or newer (the official tarball into /usr/local/go, with \
         /usr/local/go/bin on PATH; Debian's golang-go is too old) and make sure the Go module \
         proxy (GOPROXY) is reachable for the first build",
        module_dir().display()
    );
}

fn go_build(go: &Path, cache: &Path, out: &Path, package: &str) {
    let started = Instant::now();
    let output = Command::new(go)
        .args(["build", "-o"])
        .arg(out)
        .arg(package)
        .current_dir(module_dir())
        .env("GOCACHE", cache)
        // -mod=mod lets go fill go.sum for the pinned modules; -buildvcs=false because the
        // repository's git metadata is no input of these programs.
        .env("GOFLAGS", "-mod=mod -buildvcs=false")
        // An older Go says so instead of fetching a newer toolchain behind our back.
        .env("GOTOOLCHAIN", "local")
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {} build: {e}", go.display()));
    if output.status.success() {
        tracing::info!(package, out = %out.display(), took = ?started.elapsed(), "go build");
        return;
    }
    let stderr = String::from_utf8_lossy(&output.stderr);
    panic!(
        "`go build -o {} {package}` in {} failed ({}){}:\n{stderr}",
        out.display(),
        module_dir().display(),
        output.status,
        hint(&stderr),
    );
}

/// What to do about a failed build, when its output says.
fn hint(stderr: &str) -> String {
    let unreachable = [
        "dial tcp",
        "i/o timeout",
        "no such host",
        "connection refused",
        "TLS handshake",
    ];
    if unreachable.iter().any(|s| stderr.contains(s)) {
        "; the Go module proxy could not be reached: the first build downloads istio.io/istio \
         and its dependencies (about 750 MB) into the Go module cache, so GOPROXY must be \
         reachable (or the module cache filled beforehand)"
            .to_string()
    } else if stderr.contains("requires go >=") || stderr.contains("toolchain") {
        format!("; this Go is too old: install Go {GO_NEEDED} or newer")
    } else {
        String::new()
    }
}
