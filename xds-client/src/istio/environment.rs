//! The environment pilot-agent sees on a VM: the inherited process environment, overridden
//! by `sidecar.env`, overridden by `cluster.env` — `istio-start.sh` sources both files with
//! `set -a`, so their assignments replace inherited variables of the same name.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use super::cluster_env::{self, EnvFileError};

/// Where a variable's value came from, for error messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// Inherited from the process environment.
    Process,
    /// Assigned in an env file.
    File { path: PathBuf, line: usize },
    /// Computed the way `istio-start.sh` computes it.
    Derived,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::Process => f.write_str("the process environment"),
            Origin::File { path, line } => write!(f, "{}:{line}", path.display()),
            Origin::Derived => f.write_str("istio-start.sh's defaults"),
        }
    }
}

/// Variables by name; later layers replace earlier ones.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VmEnv {
    vars: BTreeMap<String, (String, Origin)>,
}

impl VmEnv {
    /// The process environment (variables that are not UTF-8 are left out: nothing Istio
    /// reads can be one).
    pub fn from_process() -> VmEnv {
        VmEnv::from_vars(
            std::env::vars_os()
                .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?))),
        )
    }

    /// An environment made of `vars`.
    pub fn from_vars(vars: impl IntoIterator<Item = (String, String)>) -> VmEnv {
        VmEnv {
            vars: vars
                .into_iter()
                .map(|(k, v)| (k, (v, Origin::Process)))
                .collect(),
        }
    }

    /// Sources `path` on top: a missing file is skipped, as `istio-start.sh` skips an
    /// unreadable one (`[[ -r FILE ]]`) — but a file that exists and cannot be read or
    /// parsed is an error, since silently dropping an operator's settings would be worse.
    pub fn source_if_present(&mut self, path: &Path) -> Result<bool, EnvFileError> {
        if !path.exists() {
            return Ok(false);
        }
        self.source(path)?;
        Ok(true)
    }

    /// Sources `path` on top; the file must exist.
    pub fn source(&mut self, path: &Path) -> Result<(), EnvFileError> {
        for a in cluster_env::read(path)? {
            let origin = Origin::File {
                path: path.to_path_buf(),
                line: a.line,
            };
            self.vars.insert(a.name, (a.value, origin));
        }
        Ok(())
    }

    /// Sets one variable as `istio-start.sh` would.
    pub fn derive(&mut self, name: &str, value: &str) {
        self.vars
            .insert(name.to_string(), (value.to_string(), Origin::Derived));
    }

    /// A variable, set or not.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.vars.get(name).map(|(v, _)| v.as_str())
    }

    /// Where a variable was set.
    pub fn origin(&self, name: &str) -> Option<&Origin> {
        self.vars.get(name).map(|(_, o)| o)
    }

    /// A variable that is set and not empty (bash's `${NAME:-default}` test).
    pub fn non_empty(&self, name: &str) -> Option<&str> {
        self.get(name).filter(|v| !v.is_empty())
    }

    /// Every variable, sorted by name.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.vars.iter().map(|(k, (v, _))| (k.as_str(), v.as_str()))
    }

    /// Every variable whose name starts with `prefix`, with the prefix removed.
    pub fn with_prefix<'a>(&'a self, prefix: &'a str) -> impl Iterator<Item = (&'a str, &'a str)> {
        self.iter()
            .filter_map(move |(k, v)| Some((k.strip_prefix(prefix)?, v)))
    }
}
