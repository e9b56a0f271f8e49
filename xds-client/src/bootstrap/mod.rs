//! Envoy bootstrap files (proto3 JSON or YAML) → a [`Snapshot`] and a config dump.

mod config_dump;
pub(crate) mod dynamic;
pub(crate) mod static_config;

pub use config_dump::ConfigDump;
pub use dynamic::AdsBootstrap;

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use envoy_types::pb::envoy::config::bootstrap::v3::Bootstrap;

use crate::decode::{Ctx, DecodeError, Resource};
use crate::model::Snapshot;
use crate::proto::{self, ProtoError};

/// A bootstrap, decoded.
#[derive(Debug, Clone)]
pub struct LoadedConfig {
    /// Its static listeners and clusters, and the admin address.
    pub snapshot: Snapshot,
    /// What the admin server shows at `/config_dump`.
    pub dump: ConfigDump,
    /// The ADS server to follow, when the bootstrap has `dynamic_resources`.
    pub ads: Option<AdsBootstrap>,
    /// The local workload named by the bootstrap's node metadata, for metric labels.
    pub local_workload: crate::model::WorkloadInfo,
}

/// Why a bootstrap could not be loaded. `origin` is the file path (or the label given to
/// [`load_str`]).
#[derive(Debug, thiserror::Error)]
pub enum BootstrapError {
    /// The file could not be read.
    #[error("reading {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    /// YAML syntax error.
    #[error("{origin}: not a YAML document: {message}")]
    Yaml { origin: String, message: String },
    /// Envoy's `.pb` / `.pb_text` bootstrap forms.
    #[error("{origin}: {format} form of protobuf is not supported, only JSON and YAML")]
    Format {
        origin: String,
        format: &'static str,
    },
    /// The document does not fit Envoy's Bootstrap message; `path` locates the field
    /// (`static_resources.clusters[0].connect_timeout`).
    #[error("{origin}: at {path}: {message}")]
    Field {
        origin: String,
        path: String,
        message: String,
    },
    /// Valid JSON that vm-proxy could not decode or render (its descriptors disagree).
    #[error("{origin}: {message}")]
    Protobuf { origin: String, message: String },
    /// Resources that Envoy would reject, or that vm-proxy does not implement: every one found.
    #[error("{origin}: {}", join(.errors))]
    Resources {
        origin: String,
        errors: Vec<DecodeError>,
    },
}

fn join(errors: &[DecodeError]) -> String {
    errors
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

/// Loads an Envoy bootstrap file: JSON for `.json`, YAML for `.yaml`/`.yml`, otherwise by
/// content.
pub fn load_file(path: &Path) -> Result<LoadedConfig, BootstrapError> {
    let text = std::fs::read_to_string(path).map_err(|source| BootstrapError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    load_str(&text, &path.display().to_string())
}

/// Loads an Envoy bootstrap from text. `origin` names it in errors, and its extension, if it
/// has one, picks the format as in [`load_file`].
pub fn load_str(text: &str, origin: &str) -> Result<LoadedConfig, BootstrapError> {
    let bootstrap = parse(text, origin)?;
    let snapshot =
        static_config::snapshot(&bootstrap).map_err(|errors| BootstrapError::Resources {
            origin: origin.to_string(),
            errors,
        })?;
    let ads = match &bootstrap.dynamic_resources {
        Some(dynamic) => {
            let resource = Resource::bootstrap();
            let ctx = Ctx::new(&resource).at("dynamic_resources");
            dynamic::ads(&ctx, dynamic, bootstrap.node.as_ref(), &snapshot).map_err(|err| {
                BootstrapError::Resources {
                    origin: origin.to_string(),
                    errors: vec![err],
                }
            })?
        }
        None => None,
    };
    let dump = ConfigDump::from_static_bootstrap(&bootstrap, SystemTime::now())
        .map_err(|err| proto_error(origin, err))?;
    tracing::info!(
        origin,
        listeners = snapshot.listeners.len(),
        clusters = snapshot.clusters.len(),
        admin = ?snapshot.admin,
        ads = ?ads.as_ref().map(|a| a.server),
        "bootstrap loaded"
    );
    Ok(LoadedConfig {
        snapshot,
        dump,
        ads,
        local_workload: crate::decode::local_workload(bootstrap.node.as_ref()),
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    Json,
    Yaml,
}

/// Envoy picks the format by extension; without a known one, a document starting with `{` is
/// JSON (YAML would read it too, but JSON errors point at line and column).
fn format_of(text: &str, origin: &str) -> Result<Format, BootstrapError> {
    let extension = Path::new(origin).extension().and_then(|e| e.to_str());
    match extension {
        Some("json") => Ok(Format::Json),
        Some("yaml" | "yml") => Ok(Format::Yaml),
        Some(ext @ ("pb" | "pb_text")) => Err(BootstrapError::Format {
            origin: origin.to_string(),
            format: if ext == "pb" { "binary" } else { "text" },
        }),
        _ if text.trim_start().starts_with('{') => Ok(Format::Json),
        _ => Ok(Format::Yaml),
    }
}

/// The text as Envoy's `Bootstrap` message.
pub(crate) fn parse(text: &str, origin: &str) -> Result<Bootstrap, BootstrapError> {
    let parsed = match format_of(text, origin)? {
        Format::Json => proto::from_json_str::<Bootstrap>(text),
        Format::Yaml => {
            let value: serde_json::Value =
                serde_saphyr::from_str(text).map_err(|err| BootstrapError::Yaml {
                    origin: origin.to_string(),
                    message: err.to_string(),
                })?;
            proto::from_json_value::<Bootstrap>(value)
        }
    };
    parsed.map_err(|err| proto_error(origin, err))
}

fn proto_error(origin: &str, err: ProtoError) -> BootstrapError {
    match err {
        ProtoError::Json { path, message } => BootstrapError::Field {
            origin: origin.to_string(),
            path,
            message,
        },
        other => BootstrapError::Protobuf {
            origin: origin.to_string(),
            message: other.to_string(),
        },
    }
}

#[cfg(test)]
mod tests;
