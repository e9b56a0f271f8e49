//! Errors per area. Messages name what failed: the variable, the file, the CA, the socket,
//! the peer identity.

use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use crate::spiffe::SpiffeId;

/// Renders an error with its whole `source()` chain: tonic and rustls put the useful part
/// (refused, unknown issuer, ...) in the sources.
pub(crate) fn chain(err: &dyn std::error::Error) -> String {
    let mut out = err.to_string();
    let mut next = err.source();
    while let Some(e) = next {
        let s = e.to_string();
        if !out.contains(&s) {
            out.push_str(": ");
            out.push_str(&s);
        }
        next = e.source();
    }
    out
}

/// A gRPC status' message followed by its transport-level causes, if any.
pub(crate) fn status_text(status: &tonic::Status) -> String {
    let mut out = status.message().to_owned();
    if let Some(source) = std::error::Error::source(status) {
        out.push_str(": ");
        out.push_str(&chain(source));
    }
    out
}

/// A peer's (or our own) certificate does not carry an acceptable SPIFFE identity.
///
/// `Debug` prints the message: rustls shows a rejection's reason through `Debug`.
#[derive(Clone, thiserror::Error)]
pub enum PeerIdentityError {
    #[error("SPIFFE ID {id:?} {reason}")]
    InvalidSpiffeId { id: String, reason: &'static str },
    #[error("certificate has no spiffe:// URI SAN (URI SANs presented: {presented:?})")]
    NoSpiffeId { presented: Vec<String> },
    #[error("certificate has more than one spiffe:// URI SAN: {presented:?}")]
    SeveralSpiffeIds { presented: Vec<String> },
    #[error("peer identity {presented} is not allowed: expected {expected}")]
    NotAllowed {
        presented: SpiffeId,
        expected: String,
    },
    #[error("cannot parse certificate: {0}")]
    BadCertificate(String),
    #[error("peer presented no certificate")]
    NoCertificate,
}

impl std::fmt::Debug for PeerIdentityError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(self, f)
    }
}

/// A certificate chain, key and trust bundle that do not form a usable workload identity.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error("certificate chain is empty")]
    EmptyChain,
    #[error("trust bundle is empty")]
    NoRoots,
    #[error("certificate {index} of the chain cannot be parsed: {reason}")]
    BadCertificate { index: usize, reason: String },
    #[error("root certificate {index} of the trust bundle cannot be used: {reason}")]
    BadRoot { index: usize, reason: String },
    #[error("leaf certificate: {0}")]
    Spiffe(#[from] PeerIdentityError),
    #[error("private key cannot be used: {0}")]
    BadKey(String),
    #[error("private key does not belong to the leaf certificate")]
    KeyMismatch,
    #[error(
        "leaf certificate ({spiffe_id}) is not valid now: valid {not_before:?} .. {not_after:?}"
    )]
    NotValidNow {
        spiffe_id: SpiffeId,
        not_before: SystemTime,
        not_after: SystemTime,
    },
    #[error("certificate chain does not verify against its own trust bundle: {0}")]
    Untrusted(String),
}

/// Generating the workload key or its CSR failed.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("cannot generate a {algorithm} key: {source}")]
    Generate {
        algorithm: String,
        source: rcgen::Error,
    },
    #[error("cannot build a CSR for {spiffe_id}: {source}")]
    Csr {
        spiffe_id: SpiffeId,
        source: rcgen::Error,
    },
}

/// An environment variable (or a config field set from one) has an unusable value.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{var}={value:?}: {reason}")]
    Invalid {
        var: &'static str,
        value: String,
        reason: String,
    },
    #[error("{var}: {reason}")]
    Header { var: String, reason: String },
    #[error("workload identity: {0}")]
    Identity(#[from] PeerIdentityError),
}

/// Getting a certificate from the istiod CA failed.
#[derive(Debug, thiserror::Error)]
pub enum CaError {
    #[error("CA {addr}: cannot read root certificates {path}: {reason}")]
    ReadRoots {
        addr: String,
        path: PathBuf,
        reason: String,
    },
    #[error(
        "CA {addr}: no root certificate to verify it with ({path} is empty and no trust bundle is held)"
    )]
    NoRoots { addr: String, path: PathBuf },
    #[error("CA {addr}: cannot build the TLS client: {reason}")]
    Tls { addr: String, reason: String },
    #[error("CA {addr}: connection failed: {reason}")]
    Connect { addr: String, reason: String },
    #[error("CA {addr}: CreateCertificate failed: {code:?}: {message}")]
    Rpc {
        addr: String,
        code: tonic::Code,
        message: String,
    },
    #[error("CA {addr}: no answer within {after:?}")]
    Timeout { addr: String, after: Duration },
    #[error("CA {addr}: unusable response: {reason}")]
    BadResponse { addr: String, reason: String },
    #[error("CA {addr}: {source}")]
    Key { addr: String, source: KeyError },
}

/// Getting certificates from a local SDS server failed.
#[derive(Debug, thiserror::Error)]
pub enum SdsError {
    #[error("SDS {path}: cannot connect: {reason}")]
    Connect { path: PathBuf, reason: String },
    #[error("SDS {path}: stream failed: {code:?}: {message}")]
    Stream {
        path: PathBuf,
        code: tonic::Code,
        message: String,
    },
    #[error("SDS {path}: server closed the stream")]
    Closed { path: PathBuf },
    #[error("SDS {path}: secret {name:?} rejected: {reason}")]
    BadSecret {
        path: PathBuf,
        name: String,
        reason: String,
    },
}

/// Reading certificate files, or writing them out, failed.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {reason}")]
    Parse { path: PathBuf, reason: String },
    #[error("{chain} and {key} do not form a usable identity: {source}")]
    Identity {
        chain: PathBuf,
        key: PathBuf,
        source: IdentityError,
    },
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Any source's failure, as kept in the manager's status.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error(transparent)]
    Ca(#[from] CaError),
    #[error(transparent)]
    Sds(#[from] SdsError),
    #[error(transparent)]
    Files(#[from] FileError),
}

/// Building a rustls configuration failed.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot build the TLS {side} configuration: {source}")]
    Build {
        side: &'static str,
        source: rustls::Error,
    },
}

/// The rotation manager was started outside a Tokio runtime.
#[derive(Debug, thiserror::Error)]
#[error("the certificate rotation manager must be started inside a Tokio runtime")]
pub struct NoRuntime;
