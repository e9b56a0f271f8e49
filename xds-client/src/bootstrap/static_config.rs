//! A static bootstrap → one [`Snapshot`], with the cross-resource checks Envoy makes on
//! static resources.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use envoy_types::pb::envoy::config::bootstrap::v3::{Admin, Bootstrap, bootstrap::StaticResources};

use crate::decode::{self, DecodeError, Resource};
use crate::model::{self, ClusterSpecifier, NetworkFilter, Snapshot};

/// Decodes every resource of the bootstrap, collecting all errors so one run reports them all.
pub(crate) fn snapshot(pb: &Bootstrap) -> Result<Snapshot, Vec<DecodeError>> {
    let mut errors = Vec::new();
    let bootstrap = Resource::bootstrap();
    let ctx = decode::Ctx::new(&bootstrap);
    if let Err(err) = check_bootstrap_fields(&ctx, pb) {
        errors.push(err);
    }
    let admin = match pb.admin.as_ref().map(|a| admin(&ctx.at("admin"), a)) {
        Some(Ok(addr)) => addr,
        Some(Err(err)) => {
            errors.push(err);
            None
        }
        None => None,
    };

    let (listeners, clusters, secrets) = match &pb.static_resources {
        Some(StaticResources {
            listeners,
            clusters,
            secrets,
        }) => (
            listeners.as_slice(),
            clusters.as_slice(),
            secrets.as_slice(),
        ),
        None => (&[][..], &[][..], &[][..]),
    };
    if !secrets.is_empty() {
        errors.push(ctx.at("static_resources").unsupported("secrets (SDS)"));
    }

    let mut snapshot_clusters: HashMap<Arc<str>, Arc<model::Cluster>> = HashMap::new();
    for pb_cluster in clusters {
        match decode::cluster(pb_cluster) {
            Ok(cluster) if snapshot_clusters.contains_key(&cluster.name) => {
                errors.push(DecodeError::DuplicateName {
                    resource: Resource::cluster(cluster.name.as_ref()),
                });
            }
            Ok(cluster) if cluster.discovery == model::DiscoveryType::Eds => {
                errors.push(
                    decode::Ctx::new(&Resource::cluster(cluster.name.as_ref())).unsupported(
                        "EDS: endpoint discovery needs an xDS connection (dynamic_resources)",
                    ),
                );
            }
            Ok(cluster) => {
                snapshot_clusters.insert(cluster.name.clone(), Arc::new(cluster));
            }
            Err(err) => errors.push(err),
        }
    }
    // References are checked against every declared cluster, decodable or not, so that one
    // bad cluster does not also fail each listener that uses it.
    let declared: HashSet<&str> = clusters.iter().map(|c| c.name.as_str()).collect();

    let has_ads = pb
        .dynamic_resources
        .as_ref()
        .is_some_and(|d| d.ads_config.is_some());
    let mut snapshot_listeners: Vec<Arc<model::Listener>> = Vec::new();
    for pb_listener in listeners {
        let listener = match decode::listener(pb_listener) {
            Ok(listener) => listener,
            Err(err) => {
                errors.push(err);
                continue;
            }
        };
        let resource = Resource::listener(listener.name.as_ref());
        if snapshot_listeners.iter().any(|l| l.name == listener.name) {
            errors.push(DecodeError::DuplicateName { resource });
            continue;
        }
        if let Some(other) = snapshot_listeners
            .iter()
            .find(|l| l.address == listener.address)
        {
            errors.push(DecodeError::DuplicateAddress {
                resource,
                address: listener.address.to_string(),
                other: other.name.to_string(),
            });
            continue;
        }
        if !has_ads && uses_rds(&listener) {
            errors.push(decode::Ctx::new(&resource).invalid(
                "",
                "an HTTP connection manager takes its routes from RDS, but the bootstrap has \
                 no dynamic_resources.ads_config to fetch them over",
            ));
            continue;
        }
        let mut unknown = unknown_clusters(&listener, &declared);
        unknown.extend(unknown_route_clusters(&listener, &declared));
        if unknown.is_empty() {
            snapshot_listeners.push(Arc::new(listener));
        } else {
            errors.extend(unknown.into_iter().map(|(field, cluster)| {
                DecodeError::UnknownCluster {
                    resource: resource.clone(),
                    field,
                    cluster,
                }
            }));
        }
    }

    if errors.is_empty() {
        Ok(Snapshot {
            listeners: snapshot_listeners,
            clusters: snapshot_clusters,
            routes: Default::default(),
            admin,
        })
    } else {
        Err(errors)
    }
}

/// Every cluster named by the inline route configurations of the listener's HTTP connection
/// managers that validate them (`validate_clusters`, true by default inline) and that no
/// declared cluster answers to: Envoy refuses such a listener. Unlike tcp_proxy targets these
/// never make a listener warm.
pub(crate) fn unknown_route_clusters(
    listener: &model::Listener,
    declared: &HashSet<&str>,
) -> Vec<(String, String)> {
    let mut unknown = Vec::new();
    for (chain_path, chain) in chains_of(listener) {
        for (j, filter) in chain.filters.iter().enumerate() {
            let NetworkFilter::HttpConnectionManager(hcm) = filter else {
                continue;
            };
            let model::RouteSource::Inline(routes) = &hcm.routes else {
                continue;
            };
            if !routes.validate_clusters {
                continue;
            }
            let path = format!("{chain_path}.filters[{j}].typed_config.route_config");
            for (field, cluster) in routes.cluster_references() {
                if !declared.contains(cluster) {
                    unknown.push((format!("{path}.{field}"), cluster.to_string()));
                }
            }
        }
    }
    unknown
}

fn uses_rds(listener: &model::Listener) -> bool {
    chains_of(listener).any(|(_, chain)| {
        chain.filters.iter().any(|f| {
            matches!(f, NetworkFilter::HttpConnectionManager(h)
                if matches!(h.routes, model::RouteSource::Rds(_)))
        })
    })
}

fn chains_of(listener: &model::Listener) -> impl Iterator<Item = (String, &model::FilterChain)> {
    listener
        .filter_chains
        .iter()
        .enumerate()
        .map(|(i, c)| (format!("filter_chains[{i}]"), c))
        .chain(
            listener
                .default_filter_chain
                .iter()
                .map(|c| ("default_filter_chain".to_string(), c)),
        )
}

/// Every tcp_proxy target of the listener that no declared cluster answers to. With only
/// static resources no cluster can appear later, so such a listener could never connect.
pub(crate) fn unknown_clusters(
    listener: &model::Listener,
    declared: &HashSet<&str>,
) -> Vec<(String, String)> {
    let mut unknown = Vec::new();
    for (chain_path, chain) in chains_of(listener) {
        for (j, filter) in chain.filters.iter().enumerate() {
            // An HCM names its clusters through routes: see `unknown_route_clusters`.
            let NetworkFilter::TcpProxy(tcp) = filter else {
                continue;
            };
            let path = format!("{chain_path}.filters[{j}].typed_config");
            match &tcp.cluster {
                ClusterSpecifier::Cluster(name) => {
                    if !declared.contains(name.as_ref()) {
                        unknown.push((format!("{path}.cluster"), name.to_string()));
                    }
                }
                ClusterSpecifier::Weighted(weighted) => {
                    for (k, w) in weighted.iter().enumerate() {
                        if !declared.contains(w.name.as_ref()) {
                            unknown.push((
                                format!("{path}.weighted_clusters.clusters[{k}].name"),
                                w.name.to_string(),
                            ));
                        }
                    }
                }
            }
        }
    }
    unknown
}

#[allow(deprecated)] // deprecated fields still arrive in configs and are judged like the rest
fn admin(ctx: &decode::Ctx, pb: &Admin) -> Result<Option<std::net::SocketAddr>, DecodeError> {
    let Admin {
        access_log,
        access_log_path,
        profile_path: _, // output path of the CPU profiler endpoint, which vm-proxy does not serve
        address,
        socket_options,
        ignore_global_conn_limit: _, // an exemption from a limit vm-proxy does not impose
        allow_paths,
    } = pb;
    ctx.unsupported_fields()
        .check("access_log", !access_log.is_empty())
        .check("access_log_path", !access_log_path.is_empty())
        .check("socket_options", !socket_options.is_empty())
        .check("allow_paths", !allow_paths.is_empty())
        .finish()?;
    // Envoy runs no admin server when the bootstrap gives it no address.
    address
        .as_ref()
        .map(|a| decode::ip_socket_address(ctx, "address", Some(a)))
        .transpose()
}

/// The bootstrap's own fields: only `static_resources`, `dynamic_resources`, `admin` and
/// `node` are used.
#[allow(deprecated)] // deprecated fields still arrive in configs and are judged like the rest
fn check_bootstrap_fields(ctx: &decode::Ctx, pb: &Bootstrap) -> Result<(), DecodeError> {
    let Bootstrap {
        node: _, // sent to the ADS server (see `dynamic`)
        node_context_params,
        static_resources: _,  // decoded by the caller
        dynamic_resources: _, // decoded by the caller
        cluster_manager,
        hds_config,
        flags_path,
        stats_sinks,
        deferred_stat_options,
        stats_config,
        stats_flush_interval,
        watchdog,
        watchdogs,
        tracing,
        layered_runtime,
        admin: _, // decoded by the caller
        overload_manager,
        enable_dispatcher_stats,
        header_prefix,
        stats_server_version_override,
        use_tcp_for_dns_lookups,
        dns_resolution_config,
        typed_dns_resolver_config,
        bootstrap_extensions,
        fatal_actions,
        config_sources,
        default_config_source,
        default_socket_interface,
        certificate_provider_instances,
        inline_headers,
        perf_tracing_file_path,
        default_regex_engine,
        xds_delegate_extension,
        xds_config_tracker_extension,
        listener_manager,
        application_log_config,
        grpc_async_client_manager_config,
        memory_allocator_manager,
        enable_worker_cpu_affinity,
        stats_flush,
        stats_eviction,
    } = pb;
    ctx.unsupported_fields()
        .check("node_context_params", !node_context_params.is_empty())
        .check_msg("cluster_manager", cluster_manager)
        .check("hds_config", hds_config.is_some())
        .check("flags_path", !flags_path.is_empty())
        .check("stats_sinks", !stats_sinks.is_empty())
        .check_msg("deferred_stat_options", deferred_stat_options)
        .check_msg("stats_config", stats_config)
        .check("stats_flush_interval", stats_flush_interval.is_some())
        .check("watchdog", watchdog.is_some())
        .check("watchdogs", watchdogs.is_some())
        .check("tracing", tracing.is_some())
        .check_msg("layered_runtime", layered_runtime)
        .check_msg("overload_manager", overload_manager)
        .check("enable_dispatcher_stats", *enable_dispatcher_stats)
        .check("header_prefix", !header_prefix.is_empty())
        .check(
            "stats_server_version_override",
            stats_server_version_override.is_some(),
        )
        .check("use_tcp_for_dns_lookups", *use_tcp_for_dns_lookups)
        .check_msg("dns_resolution_config", dns_resolution_config)
        .check(
            "typed_dns_resolver_config",
            typed_dns_resolver_config.is_some(),
        )
        .check("bootstrap_extensions", !bootstrap_extensions.is_empty())
        .check("fatal_actions", !fatal_actions.is_empty())
        .check("config_sources", !config_sources.is_empty())
        .check("default_config_source", default_config_source.is_some())
        .check(
            "default_socket_interface",
            !default_socket_interface.is_empty(),
        )
        .check(
            "certificate_provider_instances",
            !certificate_provider_instances.is_empty(),
        )
        .check("inline_headers", !inline_headers.is_empty())
        .check("perf_tracing_file_path", !perf_tracing_file_path.is_empty())
        .check("default_regex_engine", default_regex_engine.is_some())
        .check("xds_delegate_extension", xds_delegate_extension.is_some())
        .check(
            "xds_config_tracker_extension",
            xds_config_tracker_extension.is_some(),
        )
        .check("listener_manager", listener_manager.is_some())
        .check_msg("application_log_config", application_log_config)
        .check(
            "grpc_async_client_manager_config",
            grpc_async_client_manager_config.is_some(),
        )
        .check(
            "memory_allocator_manager",
            memory_allocator_manager.is_some(),
        )
        .check("enable_worker_cpu_affinity", *enable_worker_cpu_affinity)
        .check("stats_flush_on_admin", stats_flush.is_some())
        .check("stats_eviction_interval", stats_eviction.is_some())
        .finish()
}
