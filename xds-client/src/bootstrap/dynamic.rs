//! A bootstrap's `dynamic_resources`: the ADS server, its protocol and what comes over it.

use std::net::SocketAddr;

use envoy_types::pb::envoy::config::bootstrap::v3::bootstrap::DynamicResources;
use envoy_types::pb::envoy::config::core::v3::{
    ApiConfigSource, ApiVersion, ConfigSource, GrpcService, Node, api_config_source::ApiType,
    config_source::ConfigSourceSpecifier, grpc_service::TargetSpecifier,
};

use crate::ads::{AdsConfig, Protocol};
use crate::decode::{Ctx, DecodeError};
use crate::model::{DiscoveryType, EndpointAddress, Snapshot};

/// The ADS part of a bootstrap, decoded.
#[derive(Debug, Clone)]
pub struct AdsBootstrap {
    /// The static cluster `grpc_services` names.
    pub cluster: String,
    /// That cluster's endpoint: where the ADS server listens.
    pub server: SocketAddr,
    pub protocol: Protocol,
    /// The bootstrap's `node`, sent to the server.
    pub node: Node,
    /// `cds_config` is ADS.
    pub clusters: bool,
    /// `lds_config` is ADS.
    pub listeners: bool,
    pub node_on_first_message_only: bool,
}

impl AdsBootstrap {
    /// The client configuration for this bootstrap (plaintext, Envoy's default backoff).
    pub fn client_config(&self) -> AdsConfig {
        let mut config = AdsConfig::new(
            format!("http://{}", self.server),
            self.protocol,
            self.node.clone(),
        );
        config.clusters = self.clusters;
        config.listeners = self.listeners;
        config.node_on_first_message_only = self.node_on_first_message_only;
        config
    }
}

/// Decodes `dynamic_resources` against the already decoded static `snapshot` (the ADS
/// cluster must be one of its static clusters).
pub(crate) fn ads(
    ctx: &Ctx,
    pb: &DynamicResources,
    node: Option<&Node>,
    snapshot: &Snapshot,
) -> Result<Option<AdsBootstrap>, DecodeError> {
    let DynamicResources {
        lds_config,
        lds_resources_locator,
        cds_config,
        cds_resources_locator,
        ads_config,
    } = pb;
    ctx.unsupported_fields()
        .check("lds_resources_locator", !lds_resources_locator.is_empty())
        .check("cds_resources_locator", !cds_resources_locator.is_empty())
        .finish()?;
    let listeners = is_ads(&ctx.at("lds_config"), lds_config.as_ref())?;
    let clusters = is_ads(&ctx.at("cds_config"), cds_config.as_ref())?;
    let Some(ads_config) = ads_config else {
        if listeners || clusters {
            return Err(ctx.invalid(
                "ads_config",
                "lds_config/cds_config use ADS, but there is no ads_config",
            ));
        }
        return Ok(None);
    };
    let ctx = ctx.at("ads_config");
    let (protocol, cluster, node_on_first_message_only) = api_config_source(&ctx, ads_config)?;
    let server = server_of(&ctx, &cluster, snapshot)?;
    Ok(Some(AdsBootstrap {
        cluster,
        server,
        protocol,
        node: node.cloned().unwrap_or_default(),
        clusters,
        listeners,
        node_on_first_message_only,
    }))
}

/// Whether a config source is `ads` (the only kind vm-proxy follows); absent is `false`.
#[allow(deprecated)] // deprecated fields still arrive in configs and are judged like the rest
fn is_ads(ctx: &Ctx, pb: Option<&ConfigSource>) -> Result<bool, DecodeError> {
    let Some(ConfigSource {
        authorities,
        // The first-response wait; vm-proxy serves its static resources meanwhile and applies
        // dynamic ones when they come, which is what Istio's "0s" (wait forever) amounts to.
        initial_fetch_timeout: _,
        resource_api_version,
        config_source_specifier,
    }) = pb
    else {
        return Ok(false);
    };
    ctx.unsupported_fields()
        .check("authorities", !authorities.is_empty())
        .check(
            "resource_api_version V2",
            *resource_api_version == ApiVersion::V2 as i32,
        )
        .finish()?;
    match config_source_specifier {
        Some(ConfigSourceSpecifier::Ads(_)) => Ok(true),
        Some(_) => Err(ctx.unsupported("a config source other than ads")),
        None => Err(ctx.invalid("", "a config source is required")),
    }
}

#[allow(deprecated)] // deprecated fields still arrive in configs and are judged like the rest
fn api_config_source(
    ctx: &Ctx,
    pb: &ApiConfigSource,
) -> Result<(Protocol, String, bool), DecodeError> {
    let ApiConfigSource {
        api_type,
        transport_api_version,
        cluster_names,
        grpc_services,
        refresh_delay: _,   // REST polling only
        request_timeout: _, // REST polling only
        rate_limit_settings,
        set_node_on_first_message_only,
        config_validators,
    } = pb;
    ctx.unsupported_fields()
        .check("cluster_names (REST)", !cluster_names.is_empty())
        .check("rate_limit_settings", rate_limit_settings.is_some())
        .check("config_validators", !config_validators.is_empty())
        .check(
            "transport_api_version V2",
            *transport_api_version == ApiVersion::V2 as i32,
        )
        .finish()?;
    let protocol = match ApiType::try_from(*api_type) {
        Ok(ApiType::Grpc | ApiType::AggregatedGrpc) => Protocol::StateOfTheWorld,
        Ok(ApiType::DeltaGrpc | ApiType::AggregatedDeltaGrpc) => Protocol::Delta,
        Ok(ApiType::Rest) => return Err(ctx.unsupported("api_type REST")),
        Ok(ApiType::DeprecatedAndUnavailableDoNotUse) => {
            return Err(ctx.invalid("api_type", "must be GRPC or DELTA_GRPC"));
        }
        Err(_) => return Err(ctx.invalid("api_type", format!("unknown API type {api_type}"))),
    };
    let [service] = grpc_services.as_slice() else {
        return Err(ctx.invalid(
            "grpc_services",
            format!(
                "ADS needs exactly one gRPC service, found {}",
                grpc_services.len()
            ),
        ));
    };
    let cluster = grpc_service(&ctx.at("grpc_services[0]"), service)?;
    Ok((protocol, cluster, *set_node_on_first_message_only))
}

fn grpc_service(ctx: &Ctx, pb: &GrpcService) -> Result<String, DecodeError> {
    let GrpcService {
        timeout: _, // a per-call deadline; the ADS stream is one call meant to last forever
        initial_metadata,
        retry_policy,
        target_specifier,
    } = pb;
    ctx.unsupported_fields()
        .check("initial_metadata", !initial_metadata.is_empty())
        .check("retry_policy", retry_policy.is_some())
        .finish()?;
    match target_specifier {
        Some(TargetSpecifier::EnvoyGrpc(grpc)) => {
            if !grpc.authority.is_empty() {
                return Err(ctx.at("envoy_grpc").unsupported("authority"));
            }
            if grpc.cluster_name.is_empty() {
                return Err(ctx.invalid("envoy_grpc.cluster_name", "must not be empty"));
            }
            Ok(grpc.cluster_name.clone())
        }
        Some(TargetSpecifier::GoogleGrpc(_)) => Err(ctx.unsupported("google_grpc")),
        None => Err(ctx.invalid("", "envoy_grpc is required")),
    }
}

/// The first IP endpoint of the static cluster `name`.
fn server_of(ctx: &Ctx, name: &str, snapshot: &Snapshot) -> Result<SocketAddr, DecodeError> {
    let field = "grpc_services[0].envoy_grpc.cluster_name";
    let Some(cluster) = snapshot.clusters.get(name) else {
        return Err(ctx.invalid(field, format!("unknown cluster {name:?}")));
    };
    let address = cluster.endpoints.iter().find_map(|e| match e.address {
        EndpointAddress::Socket(a) => Some(a),
        EndpointAddress::Dns { .. } => None,
    });
    match (cluster.discovery, address) {
        (DiscoveryType::Static, Some(address)) => Ok(address),
        _ => Err(ctx.unsupported(format!(
            "ADS cluster {name:?}: only a STATIC cluster with an IP endpoint"
        ))),
    }
}
