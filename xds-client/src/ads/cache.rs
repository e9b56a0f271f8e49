//! The last good xDS resources and the snapshot they make together with the static ones.
//!
//! An update is judged resource by resource, as Envoy does: the good ones are taken, a bad
//! one keeps its previous version (or stays absent) and is reported for the NACK.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::Arc;
use std::time::SystemTime;

use envoy_types::pb::envoy::config::cluster::v3::Cluster;
use envoy_types::pb::envoy::config::endpoint::v3::ClusterLoadAssignment;
use envoy_types::pb::envoy::config::listener::v3::Listener;
use envoy_types::pb::envoy::config::route::v3::RouteConfiguration;
use envoy_types::pb::google::protobuf::Any;
use prost::{Message, Name};

use super::kind::XdsType;
use super::status::{AdsStatus, DynamicResource};
use crate::bootstrap::static_config::{unknown_clusters, unknown_route_clusters};
use crate::decode::{self, Ctx, DecodeError, Resource};
use crate::model::{self, DiscoveryType, Snapshot};
use crate::proto;

/// One resource as it arrived: Delta names it next to the payload, SotW only inside it.
#[derive(Debug, Clone)]
pub(crate) struct Incoming {
    pub name: Option<String>,
    pub version: String,
    pub any: Option<Any>,
}

/// One response's worth of changes to a type.
#[derive(Debug)]
pub(crate) struct Update {
    pub kind: XdsType,
    pub resources: Vec<Incoming>,
    pub removed: Vec<String>,
    /// SotW LDS and CDS: what the response leaves out is gone.
    pub replace: bool,
}

#[derive(Debug, Clone)]
struct Entry<T> {
    version: String,
    model: Arc<T>,
    json: Arc<serde_json::Value>,
    updated: SystemTime,
}

/// Accepted resources of every type, plus the static snapshot of the bootstrap.
#[derive(Debug, Clone)]
pub(crate) struct Cache {
    base: Snapshot,
    clusters: BTreeMap<String, Entry<model::Cluster>>,
    assignments: BTreeMap<String, Entry<Vec<model::Endpoint>>>,
    listeners: BTreeMap<String, Entry<model::Listener>>,
    routes: BTreeMap<String, Entry<model::RouteConfig>>,
    /// The `version_info` of the last SotW response taken whole, per type.
    versions: BTreeMap<XdsType, String>,
    /// Whether a CDS response was ever processed: until then LDS waits (Envoy's ordering).
    clusters_received: bool,
}

impl Cache {
    pub(crate) fn new(base: Snapshot) -> Cache {
        Cache {
            base,
            clusters: BTreeMap::new(),
            assignments: BTreeMap::new(),
            listeners: BTreeMap::new(),
            routes: BTreeMap::new(),
            versions: BTreeMap::new(),
            clusters_received: false,
        }
    }

    pub(crate) fn clusters_received(&self) -> bool {
        self.clusters_received
    }

    /// The SotW `version_info` last accepted for `kind` (empty before any).
    pub(crate) fn version(&self, kind: XdsType) -> String {
        self.versions.get(&kind).cloned().unwrap_or_default()
    }

    pub(crate) fn set_version(&mut self, kind: XdsType, version: String) {
        self.versions.insert(kind, version);
    }

    /// Per-resource versions held for `kind`: Delta's `initial_resource_versions`.
    pub(crate) fn resource_versions(&self, kind: XdsType) -> BTreeMap<String, String> {
        fn of<T>(m: &BTreeMap<String, Entry<T>>) -> BTreeMap<String, String> {
            m.iter()
                .map(|(n, e)| (n.clone(), e.version.clone()))
                .collect()
        }
        match kind {
            XdsType::Cluster => of(&self.clusters),
            XdsType::Endpoint => of(&self.assignments),
            XdsType::Listener => of(&self.listeners),
            XdsType::Route => of(&self.routes),
        }
    }

    /// The RDS names the bootstrap's listeners and the accepted ones (serving or warming) ask
    /// for.
    pub(crate) fn route_names(&self) -> BTreeSet<String> {
        self.base
            .listeners
            .iter()
            .map(|l| &**l)
            .chain(self.listeners.values().map(|e| &*e.model))
            .flat_map(rds_names)
            .map(str::to_string)
            .collect()
    }

    /// The EDS names the accepted EDS clusters ask for.
    pub(crate) fn eds_names(&self) -> BTreeSet<String> {
        self.clusters
            .values()
            .filter_map(|e| e.model.eds_service_name.as_deref().map(str::to_string))
            .collect()
    }

    /// Applies `update` to a copy of the cache. Returns the copy, whether anything changed,
    /// and one message per rejected resource.
    pub(crate) fn apply(&self, update: Update) -> (Cache, bool, Vec<String>) {
        let mut next = self.clone();
        let now = SystemTime::now();
        let mut errors = Vec::new();
        let kind = update.kind;
        if kind == XdsType::Cluster {
            next.clusters_received = true;
        }
        let decoded = decode_all(&self.base, &update, now, &mut errors);
        let named = &decoded.named;
        let mut changed = match kind {
            XdsType::Cluster => merge(&mut next.clusters, decoded.clusters, &update, named),
            XdsType::Endpoint => merge(&mut next.assignments, decoded.assignments, &update, named),
            XdsType::Listener => merge(&mut next.listeners, decoded.listeners, &update, named),
            XdsType::Route => merge(&mut next.routes, decoded.routes, &update, named),
        };
        if kind == XdsType::Listener {
            next.check_listeners(self, &mut errors);
            // Envoy drops a route configuration with the last listener that used it.
            let wanted = next.route_names();
            let before = next.routes.len();
            next.routes.retain(|name, _| wanted.contains(name));
            changed |= next.routes.len() != before;
        }
        if kind == XdsType::Route {
            next.check_routes(self, &mut errors);
            // A SotW response may carry more than was asked for: only the listeners' are kept.
            let wanted = next.route_names();
            next.routes.retain(|name, _| wanted.contains(name));
        }
        if kind == XdsType::Cluster {
            // Envoy drops a load assignment with the last cluster that used it.
            let wanted = next.eds_names();
            let before = next.assignments.len();
            next.assignments.retain(|name, _| wanted.contains(name));
            changed |= next.assignments.len() != before;
        }
        (next, changed, errors)
    }

    /// Undoes listeners of this update that point at clusters nobody defined or collide on an
    /// address: each keeps its previous version, if it had one.
    fn check_listeners(&mut self, previous: &Cache, errors: &mut Vec<String>) {
        let names: Vec<String> = self
            .listeners
            .iter()
            .filter(|(n, e)| {
                previous
                    .listeners
                    .get(*n)
                    .is_none_or(|old| !Arc::ptr_eq(&old.model, &e.model))
            })
            .map(|(n, _)| n.clone())
            .collect();
        for name in names {
            let Some(entry) = self.listeners.get(&name) else {
                continue;
            };
            let listener = entry.model.clone();
            let declared: HashSet<&str> = self
                .base
                .clusters
                .keys()
                .map(|k| &**k)
                .chain(self.clusters.keys().map(String::as_str))
                .collect();
            let resource = Resource::listener(name.as_str());
            let mut problems: Vec<DecodeError> = unknown_clusters(&listener, &declared)
                .into_iter()
                .chain(unknown_route_clusters(&listener, &declared))
                .map(|(field, cluster)| DecodeError::UnknownCluster {
                    resource: resource.clone(),
                    field,
                    cluster,
                })
                .collect();
            if listener.address.port() != 0 {
                let other = self
                    .base
                    .listeners
                    .iter()
                    .map(|l| (&*l.name, l.address))
                    .chain(
                        self.listeners
                            .iter()
                            .map(|(n, e)| (n.as_str(), e.model.address)),
                    )
                    .find(|(n, a)| *n != name && *a == listener.address);
                if let Some((other, address)) = other {
                    problems.push(DecodeError::DuplicateAddress {
                        resource: resource.clone(),
                        address: address.to_string(),
                        other: other.to_string(),
                    });
                }
            }
            if problems.is_empty() {
                continue;
            }
            errors.extend(problems.iter().map(ToString::to_string));
            match previous.listeners.get(&name) {
                Some(old) => self.listeners.insert(name, old.clone()),
                None => self.listeners.remove(&name),
            };
        }
    }

    /// Undoes route configurations of this update that ask for `validate_clusters` and name
    /// clusters nobody defined (without it, Envoy takes them and such a route answers 503).
    fn check_routes(&mut self, previous: &Cache, errors: &mut Vec<String>) {
        let declared: HashSet<&str> = self
            .base
            .clusters
            .keys()
            .map(|k| &**k)
            .chain(self.clusters.keys().map(String::as_str))
            .collect();
        let mut undo = Vec::new();
        for (name, entry) in &self.routes {
            let unchanged = previous
                .routes
                .get(name)
                .is_some_and(|old| Arc::ptr_eq(&old.model, &entry.model));
            if unchanged || !entry.model.validate_clusters {
                continue;
            }
            let resource = Resource::route(name.as_str());
            let problems: Vec<String> = entry
                .model
                .cluster_references()
                .into_iter()
                .filter(|(_, cluster)| !declared.contains(cluster))
                .map(|(field, cluster)| {
                    DecodeError::UnknownCluster {
                        resource: resource.clone(),
                        field,
                        cluster: cluster.to_string(),
                    }
                    .to_string()
                })
                .collect();
            if !problems.is_empty() {
                errors.extend(problems);
                undo.push(name.clone());
            }
        }
        for name in undo {
            match previous.routes.get(&name) {
                Some(old) => self.routes.insert(name, old.clone()),
                None => self.routes.remove(&name),
            };
        }
    }

    /// Whether every route configuration the listener's connection managers take from RDS
    /// has arrived: until then it warms.
    fn routes_ready(&self, listener: &model::Listener) -> bool {
        rds_names(listener)
            .into_iter()
            .all(|name| self.routes.contains_key(name))
    }

    /// The clusters that can take traffic: static ones, and dynamic ones that are not
    /// warming (an EDS cluster warms until its load assignment arrives).
    fn active_clusters(&self) -> std::collections::HashMap<Arc<str>, Arc<model::Cluster>> {
        let mut clusters = self.base.clusters.clone();
        for entry in self.clusters.values() {
            let cluster = &entry.model;
            match &cluster.eds_service_name {
                Some(service) if cluster.discovery == DiscoveryType::Eds => {
                    if let Some(assignment) = self.assignments.get(&**service) {
                        let mut with_endpoints = (**cluster).clone();
                        with_endpoints.endpoints = (*assignment.model).clone();
                        clusters.insert(cluster.name.clone(), Arc::new(with_endpoints));
                    }
                }
                _ => {
                    clusters.insert(cluster.name.clone(), cluster.clone());
                }
            }
        }
        clusters
    }

    /// Static plus active dynamic resources. A dynamic listener whose clusters are not all
    /// active warms: it is left out until they are, so no listener points at a missing one.
    pub(crate) fn snapshot(&self) -> Snapshot {
        let clusters = self.active_clusters();
        let active: HashSet<&str> = clusters.keys().map(|k| &**k).collect();
        // A bootstrap listener waits for its route configurations too.
        let mut listeners: Vec<Arc<model::Listener>> = self
            .base
            .listeners
            .iter()
            .filter(|l| self.routes_ready(l))
            .cloned()
            .collect();
        listeners.extend(
            self.listeners
                .values()
                .filter(|e| {
                    unknown_clusters(&e.model, &active).is_empty() && self.routes_ready(&e.model)
                })
                .map(|e| e.model.clone()),
        );
        let mut routes = self.base.routes.clone();
        routes.extend(
            self.routes
                .values()
                .map(|e| (e.model.name.clone(), e.model.clone())),
        );
        Snapshot {
            listeners,
            clusters,
            routes,
            admin: self.base.admin,
        }
    }

    /// What `/config_dump` and tests see.
    pub(crate) fn status(&self, connected: bool, rejected: Vec<String>) -> AdsStatus {
        let clusters = self.active_clusters();
        let active: HashSet<&str> = clusters.keys().map(|k| &**k).collect();
        fn list<T>(
            m: &BTreeMap<String, Entry<T>>,
            warming: impl Fn(&T) -> bool,
        ) -> Vec<DynamicResource> {
            m.iter()
                .map(|(name, e)| DynamicResource {
                    name: name.clone(),
                    version: e.version.clone(),
                    warming: warming(&e.model),
                    last_updated: e.updated,
                    config: e.json.clone(),
                })
                .collect()
        }
        AdsStatus {
            connected,
            clusters: list(&self.clusters, |c| !clusters.contains_key(&c.name)),
            assignments: list(&self.assignments, |_| false),
            listeners: list(&self.listeners, |l| {
                !unknown_clusters(l, &active).is_empty() || !self.routes_ready(l)
            }),
            routes: list(&self.routes, |_| false),
            cluster_version: self.version(XdsType::Cluster),
            listener_version: self.version(XdsType::Listener),
            rejected,
        }
    }
}

#[derive(Default)]
struct Decoded {
    clusters: Vec<(String, Entry<model::Cluster>)>,
    assignments: Vec<(String, Entry<Vec<model::Endpoint>>)>,
    listeners: Vec<(String, Entry<model::Listener>)>,
    routes: Vec<(String, Entry<model::RouteConfig>)>,
    /// Every name the update carried, good or bad: a bad one is not "left out" of a SotW
    /// response, so its previous version stays.
    named: BTreeSet<String>,
}

fn decode_all(
    base: &Snapshot,
    update: &Update,
    now: SystemTime,
    errors: &mut Vec<String>,
) -> Decoded {
    let mut out = Decoded::default();
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    for (i, incoming) in update.resources.iter().enumerate() {
        let kind = update.kind;
        let Some(any) = &incoming.any else {
            let name = incoming.name.as_deref().unwrap_or("");
            errors.push(format!(
                "{kind} resource #{i} {name:?}: has no resource body"
            ));
            continue;
        };
        if any.type_url != kind.type_url() {
            errors.push(format!(
                "{kind} resource #{i}: type {} where {} was expected",
                any.type_url,
                kind.type_url()
            ));
            continue;
        }
        let result = match kind {
            XdsType::Cluster => decode_cluster(base, any).map(|(n, m, j)| {
                let e = entry(incoming, m, j, now);
                out.clusters.push((n.clone(), e));
                n
            }),
            XdsType::Endpoint => decode_assignment(any).map(|(n, m, j)| {
                let e = entry(incoming, m, j, now);
                out.assignments.push((n.clone(), e));
                n
            }),
            XdsType::Listener => decode_listener(any).map(|(n, m, j)| {
                let e = entry(incoming, m, j, now);
                out.listeners.push((n.clone(), e));
                n
            }),
            XdsType::Route => decode_route(any).map(|(n, m, j)| {
                let e = entry(incoming, m, j, now);
                out.routes.push((n.clone(), e));
                n
            }),
        };
        match result {
            Ok(name) => {
                if let Some(expected) = &incoming.name
                    && *expected != name
                {
                    errors.push(format!(
                        "{kind} resource {expected:?}: carries a {} named {name:?}",
                        kind_noun(kind)
                    ));
                    drop_named(&mut out, &name);
                }
                *seen.entry(name.clone()).or_default() += 1;
                out.named.insert(name);
            }
            Err((name, err)) => {
                errors.push(err);
                if let Some(name) = name.or_else(|| incoming.name.clone()) {
                    *seen.entry(name.clone()).or_default() += 1;
                    out.named.insert(name);
                }
            }
        }
    }
    for (name, count) in seen {
        if count > 1 {
            let resource = match update.kind {
                XdsType::Cluster => Resource::cluster(name.as_str()),
                XdsType::Endpoint => Resource::assignment(name.as_str()),
                XdsType::Listener => Resource::listener(name.as_str()),
                XdsType::Route => Resource::route(name.as_str()),
            };
            errors.push(format!(
                "{}: appears {count} times in one response",
                DecodeError::DuplicateName { resource }
            ));
            drop_named(&mut out, &name);
        }
    }
    out
}

fn kind_noun(kind: XdsType) -> &'static str {
    match kind {
        XdsType::Cluster => "cluster",
        XdsType::Endpoint => "load assignment",
        XdsType::Listener => "listener",
        XdsType::Route => "route configuration",
    }
}

fn drop_named(out: &mut Decoded, name: &str) {
    out.clusters.retain(|(n, _)| n != name);
    out.assignments.retain(|(n, _)| n != name);
    out.listeners.retain(|(n, _)| n != name);
    out.routes.retain(|(n, _)| n != name);
}

fn entry<T>(incoming: &Incoming, model: T, json: serde_json::Value, now: SystemTime) -> Entry<T> {
    Entry {
        version: incoming.version.clone(),
        model: Arc::new(model),
        json: Arc::new(json),
        updated: now,
    }
}

/// A decode failure: the resource's name when it got that far, and the message.
type Failure = (Option<String>, String);

fn message<T: Message + Name + Default>(any: &Any) -> Result<T, Failure> {
    T::decode(any.value.as_slice())
        .map_err(|err| (None, format!("cannot decode {}: {err}", T::full_name())))
}

fn render<T: Message + Name>(pb: &T) -> serde_json::Value {
    proto::to_json(pb).unwrap_or_else(|err| serde_json::json!({ "error": err.to_string() }))
}

fn decode_cluster(
    base: &Snapshot,
    any: &Any,
) -> Result<(String, model::Cluster, serde_json::Value), Failure> {
    let pb: Cluster = message(any)?;
    let name = pb.name.clone();
    let fail = |err: DecodeError| (Some(name.clone()), err.to_string());
    if base.clusters.contains_key(name.as_str()) {
        return Err(fail(Ctx::new(&Resource::cluster(name.as_str())).invalid(
            "name",
            "a static cluster of the bootstrap cannot be replaced by CDS",
        )));
    }
    let cluster = decode::cluster(&pb).map_err(fail)?;
    Ok((name, cluster, render(&pb)))
}

fn decode_assignment(
    any: &Any,
) -> Result<(String, Vec<model::Endpoint>, serde_json::Value), Failure> {
    let pb: ClusterLoadAssignment = message(any)?;
    let name = pb.cluster_name.clone();
    let resource = Resource::assignment(name.as_str());
    let endpoints = decode::endpoints(&Ctx::new(&resource), &pb, false)
        .map_err(|err| (Some(name.clone()), err.to_string()))?;
    Ok((name, endpoints, render(&pb)))
}

fn decode_listener(any: &Any) -> Result<(String, model::Listener, serde_json::Value), Failure> {
    let pb: Listener = message(any)?;
    if pb.name.is_empty() {
        return Err((
            None,
            Ctx::new(&Resource::listener(""))
                .invalid("name", "a listener from LDS needs a name")
                .to_string(),
        ));
    }
    let name = pb.name.clone();
    let listener = decode::listener(&pb).map_err(|err| (Some(name.clone()), err.to_string()))?;
    Ok((name, listener, render(&pb)))
}

fn decode_route(any: &Any) -> Result<(String, model::RouteConfig, serde_json::Value), Failure> {
    let pb: RouteConfiguration = message(any)?;
    let name = pb.name.clone();
    let routes =
        decode::route_configuration(&pb).map_err(|err| (Some(name.clone()), err.to_string()))?;
    Ok((name, routes, render(&pb)))
}

/// The route configurations the listener's connection managers take from RDS.
fn rds_names(listener: &model::Listener) -> Vec<&str> {
    listener
        .filter_chains
        .iter()
        .chain(&listener.default_filter_chain)
        .flat_map(|chain| &chain.filters)
        .filter_map(|filter| match filter {
            model::NetworkFilter::HttpConnectionManager(hcm) => match &hcm.routes {
                model::RouteSource::Rds(name) => Some(&**name),
                model::RouteSource::Inline(_) => None,
            },
            _ => None,
        })
        .collect()
}

/// Puts the decoded entries of one type into `map`; returns whether it changed.
fn merge<T>(
    map: &mut BTreeMap<String, Entry<T>>,
    decoded: Vec<(String, Entry<T>)>,
    update: &Update,
    named: &BTreeSet<String>,
) -> bool {
    let before = map.len();
    let mut changed = false;
    if update.replace {
        map.retain(|name, _| named.contains(name));
    }
    for name in &update.removed {
        changed |= map.remove(name).is_some();
    }
    changed |= map.len() != before;
    for (name, entry) in decoded {
        let same = map
            .get(&name)
            .is_some_and(|old| old.json == entry.json && old.version == entry.version);
        if !same {
            map.insert(name, entry);
            changed = true;
        }
    }
    changed
}
