//! The local workload, for Istio's metric labels, from the node metadata pilot-agent sends
//! (`WORKLOAD_NAME`, `NAMESPACE`, `CLUSTER_ID`, `LABELS`).

use std::sync::Arc;

use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::google::protobuf::{Struct, value::Kind};

use crate::model::WorkloadInfo;

const CANONICAL_NAME: &str = "service.istio.io/canonical-name";
const CANONICAL_REVISION: &str = "service.istio.io/canonical-revision";

/// What `node` says of the workload; fields it lacks stay `None` (rendered `unknown`).
/// Canonical service and revision fall back as Istio's do: the canonical-name label, else
/// `app.kubernetes.io/name`, else `app`, else the workload name; the canonical-revision
/// label, else `app.kubernetes.io/version`, else `version`, else `latest`.
pub fn local_workload(node: Option<&Node>) -> WorkloadInfo {
    let Some(metadata) = node.and_then(|n| n.metadata.as_ref()) else {
        return WorkloadInfo::default();
    };
    let labels = match metadata.fields.get("LABELS").and_then(|v| v.kind.as_ref()) {
        Some(Kind::StructValue(s)) => Some(s),
        _ => None,
    };
    let label = |key: &str| labels.and_then(|l| string(l, key));
    let workload_name = string(metadata, "WORKLOAD_NAME").or_else(|| string(metadata, "NAME"));
    let canonical_service = label(CANONICAL_NAME)
        .or_else(|| label("app.kubernetes.io/name"))
        .or_else(|| label("app"))
        .or_else(|| workload_name.clone());
    let canonical_revision = label(CANONICAL_REVISION)
        .or_else(|| label("app.kubernetes.io/version"))
        .or_else(|| label("version"))
        .or_else(|| Some(Arc::from("latest")));
    WorkloadInfo {
        namespace: string(metadata, "NAMESPACE"),
        cluster_id: string(metadata, "CLUSTER_ID"),
        app: label("app"),
        version: label("version"),
        canonical_service,
        canonical_revision,
        workload_name,
    }
}

fn string(s: &Struct, key: &str) -> Option<Arc<str>> {
    match s.fields.get(key).and_then(|v| v.kind.as_ref()) {
        Some(Kind::StringValue(v)) if !v.is_empty() => Some(Arc::from(v.as_str())),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::node::from_json;

    fn node(metadata: serde_json::Value) -> Node {
        let Some(Kind::StructValue(metadata)) = from_json(&metadata).kind else {
            panic!("not an object");
        };
        Node {
            metadata: Some(metadata),
            ..Node::default()
        }
    }

    #[test]
    fn canonical_labels_and_fallbacks() {
        let w = local_workload(Some(&node(serde_json::json!({
            "NAME": "vm-1", "WORKLOAD_NAME": "ratings-vm", "NAMESPACE": "bookinfo",
            "CLUSTER_ID": "Kubernetes",
            "LABELS": {"app": "ratings", "version": "v2",
                       "service.istio.io/canonical-name": "ratings-canon"},
        }))));
        assert_eq!(w.workload_name.as_deref(), Some("ratings-vm"));
        assert_eq!(w.namespace.as_deref(), Some("bookinfo"));
        assert_eq!(w.cluster_id.as_deref(), Some("Kubernetes"));
        assert_eq!(w.app.as_deref(), Some("ratings"));
        assert_eq!(w.version.as_deref(), Some("v2"));
        assert_eq!(w.canonical_service.as_deref(), Some("ratings-canon"));
        assert_eq!(w.canonical_revision.as_deref(), Some("v2"));

        let bare = local_workload(Some(&node(serde_json::json!({"NAME": "vm-2"}))));
        assert_eq!(bare.workload_name.as_deref(), Some("vm-2"));
        assert_eq!(bare.canonical_service.as_deref(), Some("vm-2"));
        assert_eq!(bare.canonical_revision.as_deref(), Some("latest"));
        assert_eq!(bare.app, None);
        assert_eq!(local_workload(None), WorkloadInfo::default());
    }
}
