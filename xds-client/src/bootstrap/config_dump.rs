//! Envoy's admin `/config_dump` view of a static bootstrap.

use std::time::{SystemTime, UNIX_EPOCH};

use envoy_types::pb::envoy::admin::v3::{
    BootstrapConfigDump, ClustersConfigDump, ConfigDump as PbConfigDump, ListenersConfigDump,
    RoutesConfigDump, ScopedRoutesConfigDump, SecretsConfigDump,
    clusters_config_dump::StaticCluster, listeners_config_dump::StaticListener,
};
use envoy_types::pb::envoy::config::bootstrap::v3::Bootstrap;
use envoy_types::pb::google::protobuf::Timestamp;
use envoy_types::util::pack_any;

use crate::ads::{AdsStatus, DynamicResource, XdsType};
use crate::proto::{self, ProtoError};

/// What Envoy's admin `/config_dump` shows for the loaded configuration.
///
/// Rendered once, when the configuration is loaded, so that serving it cannot fail.
#[derive(Debug, Clone, PartialEq)]
pub struct ConfigDump {
    json: serde_json::Value,
}

impl ConfigDump {
    /// Envoy's `envoy.admin.v3.ConfigDump` as proto3 JSON with proto field names, the form
    /// `istioctl proxy-config` reads: `{"configs": [BootstrapConfigDump, ClustersConfigDump,
    /// ListenersConfigDump, ScopedRoutesConfigDump, RoutesConfigDump, SecretsConfigDump]}`, in
    /// Envoy's order, each with its `@type`.
    pub fn to_json(&self) -> serde_json::Value {
        self.json.clone()
    }

    /// This dump with the dynamic resources the ADS client holds: Envoy's
    /// `dynamic_active_clusters`/`dynamic_warming_clusters`, `dynamic_listeners` (with
    /// `active_state` or `warming_state`) and `dynamic_route_configs`, each with its version
    /// and update time.
    pub fn with_dynamic(&self, status: &AdsStatus) -> serde_json::Value {
        let mut json = self.json.clone();
        let Some(configs) = json.get_mut("configs").and_then(|c| c.as_array_mut()) else {
            return json;
        };
        for config in configs {
            let Some(object) = config.as_object_mut() else {
                continue;
            };
            let type_url = object.get("@type").and_then(|t| t.as_str()).unwrap_or("");
            if type_url.ends_with(".ClustersConfigDump") {
                let (warming, active): (Vec<_>, Vec<_>) =
                    status.clusters.iter().partition(|c| c.warming);
                let entry = |c: &&DynamicResource| dynamic_entry(c, XdsType::Cluster, "cluster");
                object.insert("version_info".into(), status.cluster_version.clone().into());
                object.insert(
                    "dynamic_active_clusters".into(),
                    active.iter().map(entry).collect(),
                );
                object.insert(
                    "dynamic_warming_clusters".into(),
                    warming.iter().map(entry).collect(),
                );
            } else if type_url.ends_with(".ListenersConfigDump") {
                object.insert(
                    "version_info".into(),
                    status.listener_version.clone().into(),
                );
                let listeners = status
                    .listeners
                    .iter()
                    .map(|l| {
                        let state = if l.warming {
                            "warming_state"
                        } else {
                            "active_state"
                        };
                        serde_json::json!({
                            "name": l.name,
                            state: dynamic_entry(l, XdsType::Listener, "listener"),
                        })
                    })
                    .collect();
                object.insert("dynamic_listeners".into(), listeners);
            } else if type_url.ends_with(".RoutesConfigDump") {
                // What RDS delivered, as `istioctl proxy-config route` reads it.
                let routes = status
                    .routes
                    .iter()
                    .map(|r| dynamic_entry(r, XdsType::Route, "route_config"))
                    .collect();
                object.insert("dynamic_route_configs".into(), routes);
            }
        }
        json
    }

    /// The dump of a static bootstrap: its listeners and clusters all count as static, stamped
    /// with the load time `loaded_at`.
    pub(crate) fn from_static_bootstrap(
        bootstrap: &Bootstrap,
        loaded_at: SystemTime,
    ) -> Result<Self, ProtoError> {
        let last_updated = Some(timestamp(loaded_at));
        let (listeners, clusters) = bootstrap
            .static_resources
            .as_ref()
            .map(|s| (s.listeners.as_slice(), s.clusters.as_slice()))
            .unwrap_or_default();
        let dump = PbConfigDump {
            configs: vec![
                pack_any(BootstrapConfigDump {
                    bootstrap: Some(bootstrap.clone()),
                    last_updated,
                }),
                pack_any(ClustersConfigDump {
                    static_clusters: clusters
                        .iter()
                        .map(|c| StaticCluster {
                            cluster: Some(pack_any(c.clone())),
                            last_updated,
                        })
                        .collect(),
                    ..Default::default()
                }),
                pack_any(ListenersConfigDump {
                    static_listeners: listeners
                        .iter()
                        .map(|l| StaticListener {
                            listener: Some(pack_any(l.clone())),
                            last_updated,
                        })
                        .collect(),
                    ..Default::default()
                }),
                pack_any(ScopedRoutesConfigDump::default()),
                pack_any(RoutesConfigDump::default()),
                pack_any(SecretsConfigDump::default()),
            ],
        };
        Ok(Self {
            json: proto::to_json(&dump)?,
        })
    }
}

/// One dynamic resource as Envoy dumps it: `{version_info, <field>: {"@type", ...}, last_updated}`.
fn dynamic_entry(resource: &DynamicResource, kind: XdsType, field: &str) -> serde_json::Value {
    let mut config = (*resource.config).clone();
    if let Some(object) = config.as_object_mut() {
        object.insert("@type".into(), kind.type_url().into());
    }
    let last_updated =
        proto::to_json(&timestamp(resource.last_updated)).unwrap_or(serde_json::Value::Null);
    serde_json::json!({
        "version_info": resource.version,
        field: config,
        "last_updated": last_updated,
    })
}

/// Envoy stamps config dumps with millisecond precision.
fn timestamp(at: SystemTime) -> Timestamp {
    let since_epoch = at.duration_since(UNIX_EPOCH).unwrap_or_default();
    let millis = since_epoch.subsec_millis();
    Timestamp {
        seconds: i64::try_from(since_epoch.as_secs()).unwrap_or(i64::MAX),
        nanos: i32::try_from(millis * 1_000_000).unwrap_or(0),
    }
}
