//! Errors of turning `vm-proxy capture` flags, environment and machine facts into a configuration.

use std::path::PathBuf;

/// Why a capture configuration could not be built. Nothing is rendered when one of these occurs.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A flag or environment variable has a value that is not acceptable.
    ///
    /// `origin` names the flag, and the environment variable when the value came from one.
    #[error("{origin}: {value:?}: {reason}")]
    Invalid {
        origin: String,
        value: String,
        reason: String,
    },
    /// Two settings were given that contradict each other or where one would be silently ignored.
    #[error("{first} and {second} cannot be used together: {reason}")]
    Conflict {
        first: String,
        second: String,
        reason: String,
    },
    /// An environment variable holds bytes that are not UTF-8.
    #[error("environment variable {var} is not valid UTF-8")]
    NotUnicode { var: String },
    /// `/etc/resolv.conf` was needed for the DNS servers to capture and could not be read.
    #[error("reading {path}: {source}", path = path.display())]
    ResolvConf {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The interface addresses needed to decide on IPv6 capture could not be listed.
    #[error("listing interface addresses to detect IPv6 (set --ipv6 to skip detection): {0}")]
    InterfaceAddresses(#[source] nix::Error),
    /// No address usable for the IPv6 decision exists; Istio refuses to run in this case too.
    #[error(
        "no non-loopback, non-link-local address on any interface to detect IPv6 from; \
         set --ipv6=true or --ipv6=false"
    )]
    NoHostAddress,
}

impl ConfigError {
    pub(crate) fn invalid(
        origin: impl Into<String>,
        value: impl Into<String>,
        reason: impl Into<String>,
    ) -> Self {
        ConfigError::Invalid {
            origin: origin.into(),
            value: value.into(),
            reason: reason.into(),
        }
    }
}
