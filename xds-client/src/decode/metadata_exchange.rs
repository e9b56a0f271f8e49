//! Istio's TCP metadata exchange (`istio.metadata_exchange`), as a listener's network filter
//! and as a cluster's upstream filter → the ALPN protocol that would start the exchange.

use std::sync::Arc;

use envoy_types::pb::envoy::config::cluster::v3::Filter as ClusterFilter;
use envoy_types::pb::google::protobuf::{Struct, value::Kind};
use prost::Name;

use super::error::{Ctx, DecodeError};
use super::extension::Extension;
use super::istio_proto::MetadataExchange;

/// The filter's `protocol` (istiod: `istio-peer-exchange`). Envoy runs the exchange only on a
/// connection whose negotiated ALPN is that protocol. Otherwise, with `enable_discovery`, it
/// asks the proxy's workload-metadata provider (the `workload_discovery` bootstrap
/// extension) for the peer; vm-proxy's bootstrap has none, like a sidecar bootstrap
/// without it, so the lookup finds nothing and `enable_discovery` changes nothing. Extra
/// labels would be copied from the exchanged metadata, and are refused by name.
pub(crate) fn metadata_exchange(ctx: &Ctx, ext: &Extension) -> Result<Arc<str>, DecodeError> {
    let config = match ext.typed_struct(&MetadataExchange::full_name()) {
        Some(value) => from_struct(&ctx.at("typed_config.value"), value)?,
        None => ext.config::<MetadataExchange>(ctx)?,
    };
    let MetadataExchange {
        protocol,
        enable_discovery: _, // see above: no provider to ask
        additional_labels,
    } = config;
    let ctx = ctx.at("typed_config");
    ctx.unsupported_fields()
        .check("additional_labels", !additional_labels.is_empty())
        .finish()?;
    // vm-proxy leaves `istio-peer-exchange` out of what TLS offers and selects, so the
    // exchange never starts and bytes pass untouched, exactly as with a peer that does not
    // speak it. Another protocol could be negotiated, and would need the exchange itself.
    if protocol != ISTIO_PEER_EXCHANGE {
        return Err(ctx.unsupported(format!(
            "metadata exchange on ALPN {protocol:?} (only {ISTIO_PEER_EXCHANGE:?}, which vm-proxy never negotiates)"
        )));
    }
    Ok(protocol.into())
}

/// A cluster's `filters`: Istio's upstream metadata exchange is the only one there is.
pub(crate) fn cluster_filters(
    ctx: &Ctx,
    filters: &[ClusterFilter],
) -> Result<Option<Arc<str>>, DecodeError> {
    let mut protocol = None;
    for (i, f) in filters.iter().enumerate() {
        let ctx = ctx.at_index("filters", i);
        let ClusterFilter {
            name,
            typed_config,
            config_discovery,
        } = f;
        if config_discovery.is_some() {
            return Err(ctx.unsupported(format!("{name:?}: config_discovery (ECDS)")));
        }
        let ext = Extension::new(&ctx, name, typed_config.as_ref())?;
        if !ext.is::<MetadataExchange>("istio.metadata_exchange") {
            return Err(ctx.unsupported(format!("cluster filter {ext}")));
        }
        protocol = Some(metadata_exchange(&ctx, &ext)?);
    }
    Ok(protocol)
}

const ISTIO_PEER_EXCHANGE: &str = "istio-peer-exchange";

fn from_struct(ctx: &Ctx, value: &Struct) -> Result<MetadataExchange, DecodeError> {
    let mut out = MetadataExchange::default();
    for (key, field) in &value.fields {
        match (key.as_str(), &field.kind) {
            ("protocol", Some(Kind::StringValue(s))) => out.protocol = s.clone(),
            ("enable_discovery", Some(Kind::BoolValue(b))) => out.enable_discovery = *b,
            ("additional_labels", Some(Kind::ListValue(l))) => {
                out.additional_labels = l
                    .values
                    .iter()
                    .map(|v| match &v.kind {
                        Some(Kind::StringValue(s)) => Ok(s.clone()),
                        _ => Err(ctx.invalid(key, "must be a list of strings")),
                    })
                    .collect::<Result<_, _>>()?;
            }
            (_, Some(Kind::NullValue(_))) => {}
            ("protocol" | "enable_discovery" | "additional_labels", _) => {
                return Err(ctx.invalid(key, "has the wrong type"));
            }
            (other, _) => return Err(ctx.unsupported(format!("metadata exchange field {other:?}"))),
        }
    }
    Ok(out)
}
