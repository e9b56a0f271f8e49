//! The `Node` vm-proxy presents to istiod, built the way pilot-agent builds it.

use std::collections::BTreeMap;
use std::net::IpAddr;

use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::google::protobuf::{Struct, Value, value::Kind};

/// What identifies a VM workload to istiod. Field names follow the environment variables
/// pilot-agent reads.
#[derive(Debug, Clone, Default)]
pub struct IstioNode {
    /// `INSTANCE_IP`: the address istiod knows the workload by (the WorkloadEntry address).
    pub ip: Option<IpAddr>,
    /// Further addresses of the machine, reported after `ip` in `INSTANCE_IPS`.
    pub other_ips: Vec<IpAddr>,
    /// `POD_NAME`: on a VM, the short host name.
    pub name: String,
    /// `POD_NAMESPACE`.
    pub namespace: String,
    /// The DNS domain of the id's last part; Istio's default is `<ns>.svc.cluster.local`.
    pub dns_domain: Option<String>,
    /// `ISTIO_SERVICE` (the service cluster); defaults to `<WORKLOAD_NAME>.<ns>`.
    pub service_cluster: Option<String>,
    pub istio_version: String,
    pub cluster_id: String,
    pub mesh_id: String,
    pub network: String,
    pub service_account: String,
    pub workload_name: String,
    pub labels: BTreeMap<String, String>,
    /// `ISTIO_META_<K>=<v>` settings, taken as metadata key `<K>` (string values).
    pub extra: BTreeMap<String, String>,
    /// Non-string metadata (`ISTIO_METAJSON_*` merges, `STATIC_LABELS`): above `extra`,
    /// below the typed keys.
    pub json_extra: BTreeMap<String, serde_json::Value>,
    /// The effective ProxyConfig in protojson form, sent as `PROXY_CONFIG` (istioctl
    /// proxy-status lists only proxies that send it).
    pub proxy_config: Option<serde_json::Value>,
}

impl IstioNode {
    /// `sidecar~<ip>~<name>.<ns>~<ns>.svc.cluster.local`, pilot-agent's node id.
    pub fn id(&self) -> String {
        let ip = self.ip.map(|ip| ip.to_string()).unwrap_or_default();
        let domain = self
            .dns_domain
            .clone()
            .unwrap_or_else(|| format!("{}.svc.cluster.local", self.namespace));
        format!("sidecar~{ip}~{}.{}~{domain}", self.name, self.namespace)
    }

    /// The Envoy node: id, cluster and the metadata istiod reads (Istio's
    /// `GetNodeMetaData` keys; empty values are left out as pilot-agent leaves them out).
    pub fn to_node(&self) -> Node {
        let mut fields: BTreeMap<String, Value> = BTreeMap::new();
        for (k, v) in &self.extra {
            fields.insert(k.clone(), string(v));
        }
        for (k, v) in &self.json_extra {
            fields.insert(k.clone(), from_json(v));
        }
        if let Some(config) = &self.proxy_config {
            fields.insert("PROXY_CONFIG".into(), from_json(config));
        }
        let mut put = |key: &str, value: &str| {
            if !value.is_empty() {
                fields.insert(key.to_string(), string(value));
            }
        };
        put("ISTIO_VERSION", &self.istio_version);
        put("CLUSTER_ID", &self.cluster_id);
        put("MESH_ID", &self.mesh_id);
        put("NETWORK", &self.network);
        put("NAMESPACE", &self.namespace);
        put("NAME", &self.name);
        put("SERVICE_ACCOUNT", &self.service_account);
        put("WORKLOAD_NAME", &self.workload_name);
        // Istio's StringList is sent as one comma-separated string, first the workload IP.
        let ips: Vec<String> = self
            .ip
            .iter()
            .chain(&self.other_ips)
            .map(ToString::to_string)
            .collect();
        put("INSTANCE_IPS", &ips.join(","));
        fields.insert("ENVOY_STATUS_PORT".into(), number(15021.0));
        fields.insert("ENVOY_PROMETHEUS_PORT".into(), number(15090.0));
        if !self.labels.is_empty() {
            let labels = self
                .labels
                .iter()
                .map(|(k, v)| (k.clone(), string(v)))
                .collect();
            fields.insert(
                "LABELS".into(),
                Value {
                    kind: Some(Kind::StructValue(Struct { fields: labels })),
                },
            );
        }
        let cluster = self
            .service_cluster
            .clone()
            .unwrap_or_else(|| format!("{}.{}", self.workload_name, self.namespace));
        Node {
            id: self.id(),
            cluster,
            metadata: Some(Struct {
                fields: fields.into_iter().collect(),
            }),
            user_agent_name: "vm-proxy".into(),
            ..Default::default()
        }
    }
}

fn string(s: &str) -> Value {
    Value {
        kind: Some(Kind::StringValue(s.to_string())),
    }
}

/// A JSON value as a protobuf `Value` (numbers become doubles, as in protojson).
pub fn from_json(value: &serde_json::Value) -> Value {
    use serde_json::Value as J;
    let kind = match value {
        J::Null => Kind::NullValue(0),
        J::Bool(b) => Kind::BoolValue(*b),
        J::Number(n) => Kind::NumberValue(n.as_f64().unwrap_or(f64::NAN)),
        J::String(s) => Kind::StringValue(s.clone()),
        J::Array(items) => Kind::ListValue(envoy_types::pb::google::protobuf::ListValue {
            values: items.iter().map(from_json).collect(),
        }),
        J::Object(map) => Kind::StructValue(Struct {
            fields: map.iter().map(|(k, v)| (k.clone(), from_json(v))).collect(),
        }),
    };
    Value { kind: Some(kind) }
}

fn number(n: f64) -> Value {
    Value {
        kind: Some(Kind::NumberValue(n)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta<'a>(node: &'a Node, key: &str) -> Option<&'a Kind> {
        node.metadata.as_ref()?.fields.get(key)?.kind.as_ref()
    }

    #[test]
    fn id_and_metadata_as_pilot_agent_sends_them() {
        let vm = IstioNode {
            ip: Some("10.0.0.7".parse().unwrap()),
            other_ips: vec!["fd00::7".parse().unwrap()],
            name: "vm-1".into(),
            namespace: "shop".into(),
            istio_version: "1.24.0".into(),
            cluster_id: "Kubernetes".into(),
            network: "vm-net".into(),
            service_account: "cart".into(),
            workload_name: "cart-vms".into(),
            labels: [("app".to_string(), "cart".to_string())].into(),
            extra: [("AUTO_REGISTER_GROUP".to_string(), "cart-vms".to_string())].into(),
            ..Default::default()
        };
        let node = vm.to_node();
        assert_eq!(node.id, "sidecar~10.0.0.7~vm-1.shop~shop.svc.cluster.local");
        assert_eq!(node.cluster, "cart-vms.shop");
        let s = |k: &str| match meta(&node, k) {
            Some(Kind::StringValue(v)) => v.clone(),
            other => panic!("{k}: {other:?}"),
        };
        assert_eq!(s("INSTANCE_IPS"), "10.0.0.7,fd00::7");
        assert_eq!(s("NAMESPACE"), "shop");
        assert_eq!(s("SERVICE_ACCOUNT"), "cart");
        assert_eq!(s("ISTIO_VERSION"), "1.24.0");
        assert_eq!(s("AUTO_REGISTER_GROUP"), "cart-vms");
        assert!(
            matches!(meta(&node, "ENVOY_STATUS_PORT"), Some(Kind::NumberValue(p)) if *p == 15021.0)
        );
        let Some(Kind::StructValue(labels)) = meta(&node, "LABELS") else {
            panic!("no LABELS");
        };
        assert!(labels.fields.contains_key("app"));
        assert!(
            meta(&node, "MESH_ID").is_none(),
            "empty values are left out"
        );
    }
}
