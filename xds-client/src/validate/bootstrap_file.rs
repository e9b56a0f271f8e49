//! An Envoy bootstrap file, judged exactly as `vm-proxy run` loads it.

use envoy_types::pb::envoy::config::bootstrap::v3::Bootstrap;

use super::report::{Kind, Report, Source};
use crate::bootstrap::{self, BootstrapError, dynamic, static_config};
use crate::decode::{Ctx, DecodeError, Resource, ResourceKind};

/// Every static resource is accepted unless the loader reports an error about it.
pub(super) fn check(text: &str, origin: &str) -> Result<Report, BootstrapError> {
    let pb = bootstrap::parse(text, origin)?;
    let mut report = Report::new(origin, Source::Bootstrap);
    let errors = bootstrap_errors(&pb);

    // Errors come per problem; a resource is rejected once, with all of its reasons.
    let mut rejected: Vec<(Kind, String, Vec<String>)> = Vec::new();
    for error in &errors {
        let resource = error.resource();
        let kind = kind_of(resource.kind);
        let name = match resource.kind {
            ResourceKind::Bootstrap => "bootstrap".to_string(),
            _ => resource.name.clone(),
        };
        match rejected
            .iter_mut()
            .find(|(k, n, _)| *k == kind && *n == name)
        {
            Some((_, _, reasons)) => reasons.extend(error.reasons()),
            None => rejected.push((kind, name, error.reasons())),
        }
    }

    let (listeners, clusters, secrets) =
        pb.static_resources.as_ref().map_or((0, 0, &[][..]), |s| {
            (s.listeners.len(), s.clusters.len(), s.secrets.as_slice())
        });
    for (kind, total) in [
        (Kind::Bootstrap, 1),
        (Kind::Listener, listeners),
        (Kind::Cluster, clusters),
    ] {
        let bad = rejected.iter().filter(|(k, _, _)| *k == kind).count();
        // Two resources sharing a name are rejected under that one name.
        for _ in 0..total.saturating_sub(bad) {
            report.accept(kind);
        }
    }
    for (kind, name, reasons) in rejected {
        report.reject(kind, &name, reasons, None);
    }
    for secret in secrets {
        report.reject(
            Kind::Secret,
            &secret.name,
            vec![super::config_dump::UNSUPPORTED_SECRET.to_string()],
            None,
        );
    }
    Ok(report)
}

/// What loading the bootstrap reports: the static resources with their cross-checks, then,
/// once those pass, the ADS settings (which need the static ADS cluster).
pub(super) fn bootstrap_errors(pb: &Bootstrap) -> Vec<DecodeError> {
    match static_config::snapshot(pb) {
        Err(errors) => errors,
        Ok(snapshot) => {
            let Some(dynamic_resources) = &pb.dynamic_resources else {
                return Vec::new();
            };
            let resource = Resource::bootstrap();
            let ctx = Ctx::new(&resource).at("dynamic_resources");
            dynamic::ads(&ctx, dynamic_resources, pb.node.as_ref(), &snapshot)
                .err()
                .into_iter()
                .collect()
        }
    }
}

fn kind_of(kind: ResourceKind) -> Kind {
    match kind {
        ResourceKind::Listener => Kind::Listener,
        ResourceKind::Cluster => Kind::Cluster,
        ResourceKind::ClusterLoadAssignment => Kind::Endpoints,
        ResourceKind::RouteConfiguration => Kind::RouteConfiguration,
        ResourceKind::Bootstrap => Kind::Bootstrap,
    }
}
