//! `envoy --mode validate` for vm-proxy: every listener, cluster, route configuration,
//! endpoint assignment and secret of an Envoy bootstrap or `/config_dump`, judged by the
//! decoders the bootstrap loader and the ADS client use, with every reason for each rejection.

mod bootstrap_file;
mod config_dump;
mod report;

pub use report::{Kind, Rejected, Report, Section, Source};

use std::path::{Path, PathBuf};

use crate::bootstrap::BootstrapError;

/// Why a file could not be checked at all (as opposed to holding rejected resources).
#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    #[error("reading {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    /// Neither JSON nor YAML.
    #[error("{origin}: not a JSON or YAML document: {message}")]
    Syntax { origin: String, message: String },
    /// A bootstrap that does not fit Envoy's `Bootstrap` message (the error names the field).
    #[error(transparent)]
    Bootstrap(#[from] BootstrapError),
    /// A config dump that does not fit Envoy's `ConfigDump` message; `path` locates the field
    /// (`configs[3].dynamic_listeners[0].active_state.listener`).
    #[error("{origin}: config dump: at {path}: {message}")]
    DumpField {
        origin: String,
        path: String,
        message: String,
    },
    /// A config dump vm-proxy's descriptors could not transcode.
    #[error("{origin}: config dump: {message}")]
    Dump { origin: String, message: String },
}

/// Checks the Envoy bootstrap or config dump in the file at `path`.
pub fn check_file(path: &Path) -> Result<Report, CheckError> {
    let text = std::fs::read_to_string(path).map_err(|source| CheckError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    check_str(&text, &path.display().to_string())
}

/// Checks an Envoy bootstrap or config dump given as text; `origin` names it in errors and,
/// as for [`crate::bootstrap::load_str`], its extension picks JSON or YAML.
///
/// A document whose top level has `configs`, a list of objects with `@type`, is a config dump
/// (Envoy's `/config_dump` output); anything else is read as a bootstrap.
pub fn check_str(text: &str, origin: &str) -> Result<Report, CheckError> {
    if is_binary_form(origin) {
        // The bootstrap loader names the unsupported protobuf form.
        return Ok(bootstrap_file::check(text, origin)?);
    }
    let value = document(text, origin)?;
    if config_dump::is_config_dump(&value) {
        config_dump::check(value, origin)
    } else {
        Ok(bootstrap_file::check(text, origin)?)
    }
}

fn is_binary_form(origin: &str) -> bool {
    matches!(
        Path::new(origin).extension().and_then(|e| e.to_str()),
        Some("pb" | "pb_text")
    )
}

/// The document as JSON values: JSON for `.json` or text starting with `{`, else YAML.
fn document(text: &str, origin: &str) -> Result<serde_json::Value, CheckError> {
    let extension = Path::new(origin).extension().and_then(|e| e.to_str());
    let json = match extension {
        Some("json") => true,
        Some("yaml" | "yml") => false,
        _ => text.trim_start().starts_with('{'),
    };
    let syntax = |message: String| CheckError::Syntax {
        origin: origin.to_string(),
        message,
    };
    if json {
        serde_json::from_str(text).map_err(|e| syntax(e.to_string()))
    } else {
        serde_saphyr::from_str(text).map_err(|e| syntax(e.to_string()))
    }
}

#[cfg(test)]
mod tests;
