//! The Istio certificate directory layout (`cert-chain.pem`, `key.pem`, `root-cert.pem`):
//! reading it into an identity, and writing one out (0600, write-to-temp then rename).

use std::fs;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::error::FileError;
use crate::identity::WorkloadIdentity;

/// File names pilot-agent uses in `/etc/certs`.
pub const CERT_CHAIN_FILE: &str = "cert-chain.pem";
/// See [`CERT_CHAIN_FILE`].
pub const KEY_FILE: &str = "key.pem";
/// See [`CERT_CHAIN_FILE`].
pub const ROOT_CERT_FILE: &str = "root-cert.pem";

/// The three paths of a certificate directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertPaths {
    pub chain: PathBuf,
    pub key: PathBuf,
    pub roots: PathBuf,
}

impl CertPaths {
    /// The standard names inside `dir`.
    pub fn in_dir(dir: &Path) -> Self {
        Self {
            chain: dir.join(CERT_CHAIN_FILE),
            key: dir.join(KEY_FILE),
            roots: dir.join(ROOT_CERT_FILE),
        }
    }
}

/// The raw contents of the three files, so callers can tell whether anything changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct CertBytes {
    chain: Vec<u8>,
    key: Vec<u8>,
    roots: Vec<u8>,
}

pub(crate) fn read(paths: &CertPaths) -> Result<CertBytes, FileError> {
    let rd = |p: &Path| {
        fs::read(p).map_err(|source| FileError::Read {
            path: p.to_owned(),
            source,
        })
    };
    Ok(CertBytes {
        chain: rd(&paths.chain)?,
        key: rd(&paths.key)?,
        roots: rd(&paths.roots)?,
    })
}

/// Parses the files' contents, blaming the file that is wrong.
pub(crate) fn parse(paths: &CertPaths, bytes: &CertBytes) -> Result<WorkloadIdentity, FileError> {
    let chain = parse_certs(&paths.chain, &bytes.chain)?;
    let roots = parse_certs(&paths.roots, &bytes.roots)?;
    let key = PrivateKeyDer::from_pem_slice(&bytes.key).map_err(|e| FileError::Parse {
        path: paths.key.clone(),
        reason: format!("no usable PEM private key: {e}"),
    })?;
    WorkloadIdentity::new(chain, key, roots).map_err(|source| FileError::Identity {
        chain: paths.chain.clone(),
        key: paths.key.clone(),
        source,
    })
}

/// Reads and parses in one go.
pub(crate) fn load(paths: &CertPaths) -> Result<WorkloadIdentity, FileError> {
    parse(paths, &read(paths)?)
}

fn parse_certs(path: &Path, pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, FileError> {
    pem_certs(pem).map_err(|reason| FileError::Parse {
        path: path.to_owned(),
        reason,
    })
}

/// Every certificate in a PEM text; at least one.
pub(crate) fn pem_certs(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("bad PEM: {e}"))?;
    if certs.is_empty() {
        return Err("holds no PEM certificate".into());
    }
    Ok(certs)
}

/// Writes the three files into `dir` (created 0700 if missing). Each file is written to a
/// temporary name with mode 0600 and synced, then all three are renamed into place one right
/// after the other, so readers see either the old or the new file, never a partial one, and
/// the window in which key and chain disagree is as short as it can be without a lock.
/// The files belong to the user this process runs as (the proxy user).
pub(crate) fn write(
    dir: &Path,
    chain_pem: &str,
    key_pem: &str,
    roots_pem: &str,
) -> Result<(), FileError> {
    if !dir.is_dir() {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|source| FileError::Write {
                path: dir.to_owned(),
                source,
            })?;
    }
    let paths = CertPaths::in_dir(dir);
    let files = [
        (&paths.key, key_pem),
        (&paths.chain, chain_pem),
        (&paths.roots, roots_pem),
    ];
    let mut temps = Vec::with_capacity(files.len());
    for (path, contents) in files {
        match write_temp(path, contents.as_bytes()) {
            Ok(tmp) => temps.push((tmp, path)),
            Err(e) => {
                for (tmp, _) in &temps {
                    let _ = fs::remove_file(tmp);
                }
                return Err(e);
            }
        }
    }
    for (i, (tmp, path)) in temps.iter().enumerate() {
        if let Err(source) = fs::rename(tmp, path) {
            for (left, _) in &temps[i..] {
                let _ = fs::remove_file(left);
            }
            return Err(FileError::Write {
                path: (*path).clone(),
                source,
            });
        }
    }
    // Make the renames durable too.
    fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|source| FileError::Write {
            path: dir.to_owned(),
            source,
        })
}

fn write_temp(path: &Path, contents: &[u8]) -> Result<PathBuf, FileError> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy())
        .unwrap_or_default();
    let tmp = path.with_file_name(format!(
        ".{name}.tmp.{}.{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    let err = |source| FileError::Write {
        path: tmp.clone(),
        source,
    };
    let result = (|| {
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        // The umask can only remove bits; set exactly 0600 whatever it is.
        f.set_permissions(fs::Permissions::from_mode(0o600))?;
        f.write_all(contents)?;
        f.sync_all()
    })();
    match result {
        Ok(()) => Ok(tmp),
        Err(e) => {
            let _ = fs::remove_file(&tmp);
            Err(err(e))
        }
    }
}
