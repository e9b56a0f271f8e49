//! What the istiod tests share: the mesh they start istiod with and the node they present.

use std::time::Duration;

use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::google::protobuf::{Any, Struct, Value, value};
use prost::Message;

pub const CDS: &str = "type.googleapis.com/envoy.config.cluster.v3.Cluster";

/// How long one push may take to arrive.
pub const PUSH_TIMEOUT: Duration = Duration::from_secs(20);
pub const BACKEND_CLUSTER: &str = "outbound|8080||backend.ns.svc.cluster.local";

pub const MESH: &str = "\
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata:
  name: backend
  namespace: ns
spec:
  hosts: [backend.ns.svc.cluster.local]
  location: MESH_INTERNAL
  ports:
  - {number: 8080, name: http, protocol: HTTP, targetPort: 9080}
  resolution: STATIC
  workloadSelector:
    labels: {app: backend}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata:
  name: backend-1
  namespace: ns
spec:
  address: 198.18.0.9
  labels: {app: backend}
  serviceAccount: backend
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata:
  name: vm
  namespace: ns
spec:
  address: 198.18.0.2
  labels: {app: vm}
  serviceAccount: vm
";

fn string(s: &str) -> Value {
    Value {
        kind: Some(value::Kind::StringValue(s.to_string())),
    }
}

fn number(n: f64) -> Value {
    Value {
        kind: Some(value::Kind::NumberValue(n)),
    }
}

/// The node a VM's sidecar presents: Istio's node id format and the metadata istiod reads.
pub fn vm_node() -> Node {
    let labels = Struct {
        fields: [("app".to_string(), string("vm"))].into(),
    };
    // istiod counts a node as a proxy (e.g. for proxy-status) only when it sends its
    // ProxyConfig, as pilot-agent does.
    let proxy_config = Struct {
        fields: [
            (
                "discoveryAddress".to_string(),
                string("istiod.istio-system.svc:15012"),
            ),
            ("statusPort".to_string(), number(15020.0)),
            ("proxyAdminPort".to_string(), number(15000.0)),
        ]
        .into(),
    };
    let fields = [
        ("CLUSTER_ID", string("Kubernetes")),
        ("NAMESPACE", string("ns")),
        ("ISTIO_VERSION", string("1.31.0")),
        ("SERVICE_ACCOUNT", string("vm")),
        ("WORKLOAD_NAME", string("vm")),
        ("MESH_ID", string("cluster.local")),
        ("INTERCEPTION_MODE", string("REDIRECT")),
        ("INSTANCE_IPS", string("198.18.0.2")),
        (
            "PROXY_CONFIG",
            Value {
                kind: Some(value::Kind::StructValue(proxy_config)),
            },
        ),
        (
            "LABELS",
            Value {
                kind: Some(value::Kind::StructValue(labels)),
            },
        ),
    ];
    Node {
        id: "sidecar~198.18.0.2~vm.ns~ns.svc.cluster.local".to_string(),
        cluster: "vm.ns".to_string(),
        metadata: Some(Struct {
            fields: fields
                .into_iter()
                .map(|(k, v)| (k.to_string(), v))
                .collect(),
        }),
        ..Default::default()
    }
}

pub fn decode<M: Message + Default>(any: &Any) -> M {
    M::decode(any.value.as_slice())
        .unwrap_or_else(|e| panic!("cannot decode {}: {e}", any.type_url))
}
