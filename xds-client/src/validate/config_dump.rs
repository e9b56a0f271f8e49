//! An Envoy admin `/config_dump` (`envoy.admin.v3.ConfigDump`): every resource it shows,
//! static or dynamic, active, warming or failed, judged with the ADS client's decoders.

use std::collections::HashSet;

use envoy_types::pb::envoy::admin::v3::{
    BootstrapConfigDump, ClustersConfigDump, ConfigDump, EndpointsConfigDump, ListenersConfigDump,
    RoutesConfigDump, ScopedRoutesConfigDump, SecretsConfigDump, UpdateFailureState,
};
use envoy_types::pb::envoy::config::cluster::v3::Cluster;
use envoy_types::pb::envoy::config::endpoint::v3::ClusterLoadAssignment;
use envoy_types::pb::envoy::config::listener::v3::Listener;
use envoy_types::pb::envoy::config::route::v3::{RouteConfiguration, ScopedRouteConfiguration};
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::Secret;
use envoy_types::pb::google::protobuf::Any;
use prost::{Message, Name};
use serde_json::Value;

use super::CheckError;
use super::bootstrap_file::bootstrap_errors;
use super::report::{Kind, Report, Source};
use crate::bootstrap::static_config::{unknown_clusters, unknown_route_clusters};
use crate::decode::{self, Ctx, DecodeError, Resource, ResourceKind};
use crate::proto::{self, ProtoError};

/// The reason every scoped route configuration is rejected with.
const UNSUPPORTED_SCOPED_ROUTES: &str =
    "unsupported: scoped route configuration decoding (HTTP routing not implemented)";
/// The reason every secret is rejected with until vm-proxy speaks SDS and TLS.
pub(super) const UNSUPPORTED_SECRET: &str =
    "unsupported: secret decoding (SDS and TLS not implemented)";

/// Whether the document is a config dump: `configs`, a list of objects with `@type`.
pub(super) fn is_config_dump(value: &Value) -> bool {
    value
        .get("configs")
        .and_then(Value::as_array)
        .is_some_and(|configs| {
            !configs.is_empty() && configs.iter().all(|c| c.get("@type").is_some())
        })
}

/// Static ones came from the bootstrap; dynamic ones over xDS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Origin {
    Static,
    Dynamic,
}

/// One resource as the dump shows it.
#[derive(Debug, Clone, PartialEq)]
struct Found {
    kind: Kind,
    origin: Origin,
    /// The name the dump entry gives (empty where the entry has none).
    name: String,
    any: Any,
    /// Envoy's reason, for a configuration Envoy refused (`error_state.failed_configuration`).
    envoy_rejected: Option<String>,
}

pub(super) fn check(value: Value, origin: &str) -> Result<Report, CheckError> {
    let dump: ConfigDump = proto::from_json_value(value).map_err(|err| match err {
        ProtoError::Json { path, message } => CheckError::DumpField {
            origin: origin.to_string(),
            path,
            message,
        },
        other => CheckError::Dump {
            origin: origin.to_string(),
            message: other.to_string(),
        },
    })?;
    let mut report = Report::new(origin, Source::ConfigDump);
    let mut found: Vec<Found> = Vec::new();
    let mut has_clusters = false;
    for (i, section) in dump.configs.iter().enumerate() {
        let name = decode::type_name_of(&section.type_url).to_string();
        let bad_section =
            |err: prost::DecodeError| vec![format!("configs[{i}]: cannot decode {name}: {err}")];
        let result = match name.as_str() {
            n if n == BootstrapConfigDump::full_name() => {
                section_of::<BootstrapConfigDump>(section).map(|b| {
                    bootstrap_section(&mut report, b);
                })
            }
            n if n == ListenersConfigDump::full_name() => {
                section_of(section).map(|s| listeners(s, &mut found))
            }
            n if n == ClustersConfigDump::full_name() => {
                has_clusters = true;
                section_of(section).map(|s| clusters(s, &mut found))
            }
            n if n == RoutesConfigDump::full_name() => {
                section_of(section).map(|s| routes(s, &mut found))
            }
            n if n == ScopedRoutesConfigDump::full_name() => {
                section_of(section).map(|s| scoped_routes(s, &mut found))
            }
            n if n == EndpointsConfigDump::full_name() => {
                section_of(section).map(|s| endpoints(s, &mut found))
            }
            n if n == SecretsConfigDump::full_name() => {
                section_of(section).map(|s| secrets(s, &mut found))
            }
            _ => {
                report.reject(
                    Kind::Other,
                    &name,
                    vec![format!(
                        "configs[{i}]: config dump section not known to vm-proxy"
                    )],
                    None,
                );
                Ok(())
            }
        };
        if let Err(err) = result {
            report.reject(Kind::Other, &name, bad_section(err), None);
        }
    }

    // A failed update that Envoy shows twice (once per listener entry, once unnamed) is one
    // resource.
    let mut distinct: Vec<Found> = Vec::new();
    for f in found {
        let same = distinct
            .iter()
            .any(|d| d.kind == f.kind && d.any == f.any && (f.name.is_empty() || d.name == f.name));
        if !same {
            distinct.push(f);
        }
    }
    // As over ADS, a listener must name clusters that exist; only a dump that shows clusters
    // can tell. Every cluster shown counts, decodable or not, so that one bad cluster is not
    // also blamed on each listener using it.
    let declared: Option<HashSet<String>> = has_clusters.then(|| {
        distinct
            .iter()
            .filter(|f| f.kind == Kind::Cluster)
            .filter_map(|f| Cluster::decode(f.any.value.as_slice()).ok())
            .map(|c| c.name)
            .collect()
    });
    for f in &distinct {
        let (name, reasons) = judge(f, declared.as_ref());
        if reasons.is_empty() {
            report.accept(f.kind);
        } else {
            report.reject(f.kind, &name, reasons, f.envoy_rejected.clone());
        }
    }
    Ok(report)
}

fn section_of<T: Message + Default>(any: &Any) -> Result<T, prost::DecodeError> {
    T::decode(any.value.as_slice())
}

/// The dump's bootstrap: only its own settings are judged here, as its static resources are
/// shown (and judged) in the other sections.
fn bootstrap_section(report: &mut Report, section: BootstrapConfigDump) {
    let Some(bootstrap) = section.bootstrap else {
        return;
    };
    let reasons: Vec<String> = bootstrap_errors(&bootstrap)
        .iter()
        .filter(|e| e.resource().kind == ResourceKind::Bootstrap)
        .flat_map(DecodeError::reasons)
        .collect();
    if reasons.is_empty() {
        report.accept(Kind::Bootstrap);
    } else {
        report.reject(Kind::Bootstrap, "bootstrap", reasons, None);
    }
}

fn push(
    out: &mut Vec<Found>,
    kind: Kind,
    origin: Origin,
    name: &str,
    any: Option<Any>,
    envoy_rejected: Option<String>,
) {
    if let Some(any) = any {
        out.push(Found {
            kind,
            origin,
            name: name.to_string(),
            any,
            envoy_rejected,
        });
    }
}

/// A failed update's configuration and Envoy's reason (its first line: the rest repeats the
/// offending message).
fn failed(state: Option<UpdateFailureState>) -> Option<(Option<Any>, Option<String>)> {
    state.map(|s| {
        let reason = s
            .details
            .lines()
            .next()
            .unwrap_or_default()
            .trim()
            .to_string();
        (s.failed_configuration, Some(reason))
    })
}

fn listeners(section: ListenersConfigDump, out: &mut Vec<Found>) {
    for s in section.static_listeners {
        push(out, Kind::Listener, Origin::Static, "", s.listener, None);
    }
    // Draining listeners are on their way out and not part of the configuration any more.
    for d in section.dynamic_listeners {
        for state in [d.active_state, d.warming_state].into_iter().flatten() {
            push(
                out,
                Kind::Listener,
                Origin::Dynamic,
                &d.name,
                state.listener,
                None,
            );
        }
        if let Some((any, why)) = failed(d.error_state) {
            push(out, Kind::Listener, Origin::Dynamic, &d.name, any, why);
        }
    }
}

fn clusters(section: ClustersConfigDump, out: &mut Vec<Found>) {
    for s in section.static_clusters {
        push(out, Kind::Cluster, Origin::Static, "", s.cluster, None);
    }
    for d in section
        .dynamic_active_clusters
        .into_iter()
        .chain(section.dynamic_warming_clusters)
    {
        push(out, Kind::Cluster, Origin::Dynamic, "", d.cluster, None);
        if let Some((any, why)) = failed(d.error_state) {
            push(out, Kind::Cluster, Origin::Dynamic, "", any, why);
        }
    }
}

fn routes(section: RoutesConfigDump, out: &mut Vec<Found>) {
    for s in section.static_route_configs {
        push(
            out,
            Kind::RouteConfiguration,
            Origin::Static,
            "",
            s.route_config,
            None,
        );
    }
    for d in section.dynamic_route_configs {
        push(
            out,
            Kind::RouteConfiguration,
            Origin::Dynamic,
            "",
            d.route_config,
            None,
        );
        if let Some((any, why)) = failed(d.error_state) {
            push(out, Kind::RouteConfiguration, Origin::Dynamic, "", any, why);
        }
    }
}

fn scoped_routes(section: ScopedRoutesConfigDump, out: &mut Vec<Found>) {
    for s in section.inline_scoped_route_configs {
        for any in s.scoped_route_configs {
            push(
                out,
                Kind::RouteConfiguration,
                Origin::Static,
                &s.name,
                Some(any),
                None,
            );
        }
    }
    for d in section.dynamic_scoped_route_configs {
        for any in d.scoped_route_configs {
            push(
                out,
                Kind::RouteConfiguration,
                Origin::Dynamic,
                &d.name,
                Some(any),
                None,
            );
        }
    }
}

fn endpoints(section: EndpointsConfigDump, out: &mut Vec<Found>) {
    for s in section.static_endpoint_configs {
        push(
            out,
            Kind::Endpoints,
            Origin::Static,
            "",
            s.endpoint_config,
            None,
        );
    }
    for d in section.dynamic_endpoint_configs {
        push(
            out,
            Kind::Endpoints,
            Origin::Dynamic,
            "",
            d.endpoint_config,
            None,
        );
        if let Some((any, why)) = failed(d.error_state) {
            push(out, Kind::Endpoints, Origin::Dynamic, "", any, why);
        }
    }
}

fn secrets(section: SecretsConfigDump, out: &mut Vec<Found>) {
    for s in section.static_secrets {
        push(out, Kind::Secret, Origin::Static, &s.name, s.secret, None);
    }
    for d in section
        .dynamic_active_secrets
        .into_iter()
        .chain(section.dynamic_warming_secrets)
    {
        push(out, Kind::Secret, Origin::Dynamic, &d.name, d.secret, None);
        if let Some((any, why)) = failed(d.error_state) {
            push(out, Kind::Secret, Origin::Dynamic, &d.name, any, why);
        }
    }
}

/// The resource's name and every reason it is rejected for (none: accepted).
fn judge(f: &Found, declared: Option<&HashSet<String>>) -> (String, Vec<String>) {
    match f.kind {
        Kind::Listener => judge_listener(f, declared),
        Kind::Cluster => match message::<Cluster>(f) {
            Ok(pb) => (pb.name.clone(), reasons(decode::cluster(&pb))),
            Err(e) => (f.name.clone(), e),
        },
        Kind::Endpoints => match message::<ClusterLoadAssignment>(f) {
            Ok(pb) => {
                let resource = Resource::assignment(pb.cluster_name.as_str());
                // A static assignment is a bootstrap cluster's own and may name DNS hosts for
                // its DNS cluster (judged with that cluster); EDS delivers IPs only.
                let dns_names = f.origin == Origin::Static;
                let result = decode::endpoints(&Ctx::new(&resource), &pb, dns_names);
                (pb.cluster_name.clone(), reasons(result))
            }
            Err(e) => (f.name.clone(), e),
        },
        Kind::RouteConfiguration => {
            let scoped = f
                .any
                .type_url
                .ends_with(&ScopedRouteConfiguration::full_name());
            match scoped {
                true => match message::<ScopedRouteConfiguration>(f) {
                    Ok(r) => (r.name, vec![UNSUPPORTED_SCOPED_ROUTES.to_string()]),
                    Err(e) => (f.name.clone(), e),
                },
                false => match message::<RouteConfiguration>(f) {
                    Ok(pb) => judge_route(&pb, f.origin, declared),
                    Err(e) => (f.name.clone(), e),
                },
            }
        }
        Kind::Secret => match message::<Secret>(f) {
            Ok(pb) if f.name.is_empty() => (pb.name, vec![UNSUPPORTED_SECRET.to_string()]),
            Ok(_) => (f.name.clone(), vec![UNSUPPORTED_SECRET.to_string()]),
            Err(e) => (f.name.clone(), e),
        },
        Kind::Bootstrap | Kind::Other => (f.name.clone(), Vec::new()),
    }
}

/// A route configuration as RDS delivers it: a route naming an unknown cluster is fine (it
/// answers 503) unless the configuration asks for `validate_clusters`.
fn judge_route(
    pb: &RouteConfiguration,
    origin: Origin,
    declared: Option<&HashSet<String>>,
) -> (String, Vec<String>) {
    // Static ones are the inline tables of the bootstrap's listeners, shown on their own.
    let result = match origin {
        Origin::Static => {
            let resource = Resource::route(pb.name.as_str());
            decode::route_config(&Ctx::new(&resource), pb, true)
        }
        Origin::Dynamic => decode::route_configuration(pb),
    };
    let routes = match result {
        Ok(routes) => routes,
        Err(err) => return (pb.name.clone(), err.reasons()),
    };
    let resource = Resource::route(pb.name.as_str());
    let reasons = match (routes.validate_clusters, declared) {
        (true, Some(declared)) => routes
            .cluster_references()
            .into_iter()
            .filter(|(_, cluster)| !declared.contains(*cluster))
            .flat_map(|(field, cluster)| {
                DecodeError::UnknownCluster {
                    resource: resource.clone(),
                    field,
                    cluster: cluster.to_string(),
                }
                .reasons()
            })
            .collect(),
        _ => Vec::new(),
    };
    (pb.name.clone(), reasons)
}

fn judge_listener(f: &Found, declared: Option<&HashSet<String>>) -> (String, Vec<String>) {
    let pb = match message::<Listener>(f) {
        Ok(pb) => pb,
        Err(e) => return (f.name.clone(), e),
    };
    let name = match (pb.name.is_empty(), f.name.is_empty()) {
        (false, _) | (true, true) => pb.name.clone(),
        (true, false) => f.name.clone(),
    };
    if pb.name.is_empty() && f.origin == Origin::Dynamic {
        let resource = Resource::listener(name.as_str());
        return (
            name,
            vec![
                DecodeError::reasons(
                    &Ctx::new(&resource).invalid("name", "a listener from LDS needs a name"),
                )
                .join("; "),
            ],
        );
    }
    match decode::listener(&pb) {
        Err(err) => (err.resource().name.clone(), err.reasons()),
        Ok(listener) => {
            let declared: Option<HashSet<&str>> =
                declared.map(|d| d.iter().map(String::as_str).collect());
            let unknown = declared
                .map(|d| {
                    let mut unknown = unknown_clusters(&listener, &d);
                    unknown.extend(unknown_route_clusters(&listener, &d));
                    unknown
                })
                .unwrap_or_default();
            let resource = Resource::listener(listener.name.as_ref());
            let reasons = unknown
                .into_iter()
                .flat_map(|(field, cluster)| {
                    DecodeError::UnknownCluster {
                        resource: resource.clone(),
                        field,
                        cluster,
                    }
                    .reasons()
                })
                .collect();
            (listener.name.to_string(), reasons)
        }
    }
}

fn reasons<T>(result: Result<T, DecodeError>) -> Vec<String> {
    result.err().map(|e| e.reasons()).unwrap_or_default()
}

/// The resource's message, or why it cannot be read as one.
fn message<T: Message + Name + Default>(f: &Found) -> Result<T, Vec<String>> {
    let expected = T::full_name();
    if decode::type_name_of(&f.any.type_url) != expected {
        return Err(vec![format!(
            "type {} where {expected} was expected",
            f.any.type_url
        )]);
    }
    T::decode(f.any.value.as_slice())
        .map_err(|err| vec![format!("cannot decode {expected}: {err}")])
}
