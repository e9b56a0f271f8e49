use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

/// What can stop the proxy from starting, applying a snapshot or running.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A snapshot the data path cannot run; nothing of it was applied.
    #[error("{resource}: {reason}")]
    Invalid { resource: String, reason: String },
    #[error(transparent)]
    Bind(#[from] BindError),
    /// The snapshot is active, but these listeners lost their socket while being rebound to an
    /// address that only became free when their previous version stopped.
    #[error("snapshot applied, but listeners could not be rebound: {0}")]
    Rebind(BindErrors),
    #[error("admin server: cannot listen on {address}: {source}")]
    AdminBind {
        address: SocketAddr,
        #[source]
        source: io::Error,
    },
    #[error("Proxy::start needs a tokio runtime to run on: {0}")]
    NoRuntime(String),
    #[error("cannot start the {what} runtime: {source}")]
    Runtime {
        what: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("cannot install the {signal} handler: {source}")]
    Signal {
        signal: &'static str,
        #[source]
        source: io::Error,
    },
}

/// A listener whose socket could not be set up.
#[derive(Debug, thiserror::Error)]
#[error("listener {listener}: cannot listen on {address}: {source}")]
pub struct BindError {
    pub listener: Arc<str>,
    pub address: SocketAddr,
    #[source]
    pub source: io::Error,
}

/// Several [`BindError`]s, shown on one line.
#[derive(Debug)]
pub struct BindErrors(pub Vec<BindError>);

impl fmt::Display for BindErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl Error {
    pub(crate) fn invalid(resource: impl Into<String>, reason: impl Into<String>) -> Error {
        Error::Invalid {
            resource: resource.into(),
            reason: reason.into(),
        }
    }
}
