//! What can stop a benchmark run, naming the program, file, namespace or row involved.

use std::path::PathBuf;

/// Failures of the harness; each aborts the run (after cleanup) with this message.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("must run as root: the harness creates network namespaces and capture rules")]
    NotRoot,
    #[error("missing programs: {tools}; install them with: apt-get install -y {packages}")]
    MissingTools { tools: String, packages: String },
    #[error(
        "leftovers of an earlier (or concurrent) run are present: {what}; \
         remove them with `harness --clean` (this kills whatever runs in those namespaces)"
    )]
    Leftovers { what: String },
    #[error("cannot run {program}: {source}")]
    Spawn {
        program: String,
        source: std::io::Error,
    },
    #[error("{program} failed ({status}): {stderr}")]
    Failed {
        program: String,
        status: String,
        stderr: String,
    },
    #[error("{what}: {source}")]
    Harness {
        what: String,
        source: test_support::Error,
    },
    #[error("cannot read or write {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot parse the output of {program}: {why}")]
    Parse { program: String, why: String },
    #[error("{row}: {why}")]
    Row { row: String, why: String },
    #[error("cannot raise the open-file limit to {want}: {source}")]
    Rlimit { want: u64, source: nix::Error },
    #[error("cannot install the signal handler: {0}")]
    Signals(nix::Error),
    #[error("cannot encode the results as JSON: {0}")]
    Json(#[from] serde_json::Error),
}

impl Error {
    /// Wraps a file-system error with the path it concerns.
    pub fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> Error {
        let path = path.into();
        move |source| Error::Io { path, source }
    }

    /// Wraps a test-support error with what the harness was doing.
    pub fn harness(what: impl Into<String>) -> impl FnOnce(test_support::Error) -> Error {
        let what = what.into();
        move |source| Error::Harness { what, source }
    }
}
