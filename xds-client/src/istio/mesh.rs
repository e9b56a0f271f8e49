//! `mesh.yaml` (`/etc/istio/config/mesh`, a MeshConfig) and the `PROXY_CONFIG` overlay: the
//! effective ProxyConfig, as pilot-agent computes it.
//!
//! MeshConfig and ProxyConfig are large. The effective ProxyConfig is kept whole, as JSON
//! (it is sent to istiod as node metadata `PROXY_CONFIG`, which istiod reads for many
//! things, e.g. `readinessProbe`), and the fields vm-proxy acts on are decoded from it into
//! [`ProxySettings`]. Unknown fields are accepted.
//!
//! Layers, lowest first: Istio's defaults (`DefaultProxyConfig`, without `binaryPath`: there
//! is no Envoy binary), `defaultConfig` of the mesh file, `PROXY_CONFIG`. A field set in a
//! higher layer replaces the lower one, except `proxyMetadata`, which is merged by key.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;
use serde_json::{Map, Value, json};

/// A mesh file or `PROXY_CONFIG` that could not be used; `origin` names which.
#[derive(Debug, thiserror::Error)]
#[error("{origin}: {message}")]
pub struct MeshError {
    pub origin: String,
    pub message: String,
}

/// pilot-agent's ProxyConfig defaults that describe what vm-proxy does too.
fn defaults() -> Map<String, Value> {
    [
        ("configPath", json!("./etc/istio/proxy")),
        ("serviceCluster", json!("istio-proxy")),
        ("drainDuration", json!("45s")),
        ("terminationDrainDuration", json!("5s")),
        ("proxyAdminPort", json!(15000)),
        ("controlPlaneAuthPolicy", json!("MUTUAL_TLS")),
        ("discoveryAddress", json!("istiod.istio-system.svc:15012")),
        ("statNameLength", json!(189)),
        ("statusPort", json!(15020)),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect()
}

/// The effective ProxyConfig.
#[derive(Debug, Clone, PartialEq)]
pub struct ProxyConfig {
    json: Map<String, Value>,
    settings: ProxySettings,
}

/// How the control plane is authenticated (`controlPlaneAuthPolicy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum AuthPolicy {
    MutualTls,
    None,
}

/// The ProxyConfig fields vm-proxy uses.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProxySettings {
    /// `host:port` of istiod's xDS (and, without `CA_ADDR`, CA) endpoint.
    pub discovery_address: String,
    /// Environment-style settings; the `ISTIO_META_*` ones become node metadata.
    #[serde(default)]
    pub proxy_metadata: BTreeMap<String, String>,
    pub control_plane_auth_policy: AuthPolicy,
    /// How long connections may drain after SIGTERM.
    #[serde(deserialize_with = "proto_duration")]
    pub termination_drain_duration: Duration,
    /// Envoy's admin port, on 127.0.0.1.
    pub proxy_admin_port: u16,
    /// Worker threads; 0 or absent: one per CPU.
    #[serde(default)]
    pub concurrency: Option<u16>,
    /// `serviceCluster`: the Envoy node cluster.
    #[serde(default)]
    pub service_cluster: String,
}

impl ProxyConfig {
    /// Defaults, then `defaultConfig` of the mesh file text (empty text is an empty mesh
    /// config, as postinst leaves it), then the `PROXY_CONFIG` YAML if given.
    pub fn load(
        mesh: &str,
        mesh_origin: &str,
        overlay: Option<&str>,
    ) -> Result<ProxyConfig, MeshError> {
        let mut json = defaults();
        let mesh_doc = yaml_object(mesh, mesh_origin)?;
        match mesh_doc.get("defaultConfig") {
            None | Some(Value::Null) => {}
            Some(Value::Object(config)) => merge(&mut json, config),
            Some(other) => {
                return Err(MeshError {
                    origin: mesh_origin.to_string(),
                    message: format!("defaultConfig must be a mapping, not {other}"),
                });
            }
        }
        if let Some(text) = overlay {
            merge(&mut json, &yaml_object(text, "PROXY_CONFIG")?);
        }
        let settings = settings(&json, mesh_origin, overlay.is_some())?;
        Ok(ProxyConfig { json, settings })
    }

    /// The fields vm-proxy uses.
    pub fn settings(&self) -> &ProxySettings {
        &self.settings
    }

    /// The whole effective ProxyConfig in protojson form (camelCase), for node metadata
    /// `PROXY_CONFIG`.
    pub fn to_json(&self) -> Value {
        Value::Object(self.json.clone())
    }
}

/// A YAML document that must be a mapping; empty or `null` is an empty one.
fn yaml_object(text: &str, origin: &str) -> Result<Map<String, Value>, MeshError> {
    if text.trim().is_empty() {
        return Ok(Map::new());
    }
    let value: Value = serde_saphyr::from_str(text).map_err(|e| MeshError {
        origin: origin.to_string(),
        message: format!("not a YAML document: {e}"),
    })?;
    match value {
        Value::Object(map) => Ok(map),
        Value::Null => Ok(Map::new()),
        other => Err(MeshError {
            origin: origin.to_string(),
            message: format!("must be a YAML mapping, not {other}"),
        }),
    }
}

fn merge(into: &mut Map<String, Value>, from: &Map<String, Value>) {
    for (key, value) in from {
        match (key.as_str(), into.get_mut(key), value) {
            ("proxyMetadata", Some(Value::Object(have)), Value::Object(add)) => {
                have.extend(add.iter().map(|(k, v)| (k.clone(), v.clone())));
            }
            _ => {
                into.insert(key.clone(), value.clone());
            }
        }
    }
}

fn settings(
    json: &Map<String, Value>,
    mesh_origin: &str,
    overlay: bool,
) -> Result<ProxySettings, MeshError> {
    let value = Value::Object(json.clone());
    serde_path_to_error::deserialize(value).map_err(|e| {
        let layers = if overlay {
            format!("{mesh_origin} defaultConfig or PROXY_CONFIG")
        } else {
            format!("{mesh_origin} defaultConfig")
        };
        MeshError {
            origin: layers,
            message: format!("at {}: {}", e.path(), e.inner()),
        }
    })
}

/// protojson `google.protobuf.Duration`: decimal seconds with an `s` suffix (`5s`, `0.5s`).
fn proto_duration<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let text = String::deserialize(d)?;
    parse_duration(&text).ok_or_else(|| {
        serde::de::Error::custom(format!(
            "{text:?} is not a duration (decimal seconds ending in s, e.g. 5s)"
        ))
    })
}

pub(crate) fn parse_duration(text: &str) -> Option<Duration> {
    let seconds = text.strip_suffix('s')?;
    if seconds.is_empty() || !seconds.chars().all(|c| c.is_ascii_digit() || c == '.') {
        return None;
    }
    Duration::try_from_secs_f64(seconds.parse::<f64>().ok()?).ok()
}
