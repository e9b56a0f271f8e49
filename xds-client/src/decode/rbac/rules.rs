//! `config.rbac.v3.RBAC`: the action, its policies, and their permission and principal trees.

use std::sync::Arc;

use envoy_types::pb::envoy::config::rbac::v3::{
    MetadataSource, Permission, Policy, Principal, Rbac, SourcedMetadata, permission::Rule,
    principal::Authenticated, principal::Identifier, rbac::Action,
};
use envoy_types::pb::envoy::r#type::matcher::v3::{
    FilterStateMatcher, PathMatcher, filter_state_matcher, path_matcher,
};
use envoy_types::pb::envoy::r#type::v3::Int32Range;

use super::metadata::metadata_matcher;
use crate::decode::address::cidr;
use crate::decode::error::{Ctx, DecodeError, Problems};
use crate::decode::matcher::{header_matcher, string_matcher};
use crate::model;

/// The filter state key Istio 1.18/1.19's authn filter writes the mTLS peer's SPIFFE ID to.
const PEER_PRINCIPAL: &str = "io.istio.peer_principal";

pub(crate) fn rules(ctx: &Ctx, pb: &Rbac) -> Result<model::RbacRules, DecodeError> {
    let Rbac {
        action,
        policies,
        audit_logging_options,
    } = pb;
    let mut problems = Problems::new(ctx);
    problems.take(
        ctx.unsupported_fields()
            .check_msg("audit_logging_options", audit_logging_options)
            .finish(),
    );
    let action = match Action::try_from(*action) {
        Ok(Action::Allow) => Some(model::RbacAction::Allow),
        Ok(Action::Deny) => Some(model::RbacAction::Deny),
        Ok(Action::Log) => Some(model::RbacAction::Log),
        Err(_) => {
            problems.push(ctx.invalid("action", format!("unknown action {action}")));
            None
        }
    };
    let mut names: Vec<&String> = policies.keys().collect();
    names.sort();
    let policies = problems.take_all(names.into_iter().map(|name| {
        policy(
            &ctx.at(&format!("policies[{name:?}]")),
            name,
            &policies[name],
        )
    }));
    problems.finish(action.map(|action| model::RbacRules { action, policies }))
}

fn policy(ctx: &Ctx, name: &str, pb: &Policy) -> Result<model::RbacPolicy, DecodeError> {
    let Policy {
        permissions,
        principals,
        condition,
        checked_condition,
        cel_config,
    } = pb;
    let mut problems = Problems::new(ctx);
    problems.take(
        ctx.unsupported_fields()
            .check("condition (CEL)", condition.is_some())
            .check("checked_condition (CEL)", checked_condition.is_some())
            .check_msg("cel_config", cel_config)
            .finish(),
    );
    if permissions.is_empty() {
        problems.push(ctx.invalid("permissions", "needs at least one permission"));
    }
    if principals.is_empty() {
        problems.push(ctx.invalid("principals", "needs at least one principal"));
    }
    let permissions = problems.take_all(
        permissions
            .iter()
            .enumerate()
            .map(|(i, p)| permission(&ctx.at_index("permissions", i), p)),
    );
    let principals = problems.take_all(
        principals
            .iter()
            .enumerate()
            .map(|(i, p)| principal(&ctx.at_index("principals", i), p)),
    );
    problems.finish(Some(model::RbacPolicy {
        name: Arc::from(name),
        permissions,
        principals,
    }))
}

#[allow(deprecated)] // `metadata` is deprecated for `sourced_metadata` but istiod sends it
fn permission(ctx: &Ctx, pb: &Permission) -> Result<model::Permission, DecodeError> {
    let Some(rule) = &pb.rule else {
        return Err(ctx.invalid("", "a permission needs a rule"));
    };
    Ok(match rule {
        Rule::AndRules(set) => {
            model::Permission::And(permissions(&ctx.at("and_rules"), &set.rules)?)
        }
        Rule::OrRules(set) => model::Permission::Or(permissions(&ctx.at("or_rules"), &set.rules)?),
        Rule::NotRule(inner) => {
            model::Permission::Not(Box::new(permission(&ctx.at("not_rule"), inner)?))
        }
        Rule::Any(true) => model::Permission::Any,
        Rule::Any(false) => return Err(ctx.invalid("any", "must be true when set")),
        Rule::Header(h) => model::Permission::Header(header_matcher(&ctx.at("header"), h)?),
        Rule::UrlPath(p) => model::Permission::UrlPath(path(&ctx.at("url_path"), p)?),
        Rule::DestinationIp(c) => {
            model::Permission::DestinationIp(cidr(&ctx.at("destination_ip"), c)?)
        }
        Rule::DestinationPort(port) => model::Permission::DestinationPort(
            u16::try_from(*port)
                .map_err(|_| ctx.invalid("destination_port", format!("{port} is above 65535")))?,
        ),
        Rule::DestinationPortRange(Int32Range { start, end }) => {
            let ok = (0..=65535).contains(start) && (0..=65536).contains(end) && start < end;
            if !ok {
                return Err(ctx.invalid(
                    "destination_port_range",
                    format!("[{start}, {end}) is not a port range"),
                ));
            }
            model::Permission::DestinationPortRange {
                start: start.unsigned_abs(),
                end: end.unsigned_abs(),
            }
        }
        Rule::RequestedServerName(m) => model::Permission::RequestedServerName(string_matcher(
            &ctx.at("requested_server_name"),
            m,
        )?),
        Rule::Metadata(m) => model::Permission::Metadata(metadata_matcher(&ctx.at("metadata"), m)?),
        Rule::SourcedMetadata(m) => {
            model::Permission::Metadata(sourced_metadata(&ctx.at("sourced_metadata"), m)?)
        }
        Rule::Matcher(ext) => {
            return Err(ctx.unsupported(format!("permission matcher extension {:?}", ext.name)));
        }
        Rule::UriTemplate(ext) => {
            return Err(ctx.unsupported(format!("uri_template {:?}", ext.name)));
        }
    })
}

fn permissions(ctx: &Ctx, rules: &[Permission]) -> Result<Vec<model::Permission>, DecodeError> {
    if rules.is_empty() {
        return Err(ctx.invalid("rules", "needs at least one rule"));
    }
    let mut problems = Problems::new(ctx);
    let decoded = problems.take_all(
        rules
            .iter()
            .enumerate()
            .map(|(i, r)| permission(&ctx.at_index("rules", i), r)),
    );
    problems.finish(Some(decoded))
}

#[allow(deprecated)] // `source_ip` and `metadata` are deprecated but still valid
fn principal(ctx: &Ctx, pb: &Principal) -> Result<model::Principal, DecodeError> {
    let Some(id) = &pb.identifier else {
        return Err(ctx.invalid("", "a principal needs an identifier"));
    };
    Ok(match id {
        Identifier::AndIds(set) => model::Principal::And(principals(&ctx.at("and_ids"), &set.ids)?),
        Identifier::OrIds(set) => model::Principal::Or(principals(&ctx.at("or_ids"), &set.ids)?),
        Identifier::NotId(inner) => {
            model::Principal::Not(Box::new(principal(&ctx.at("not_id"), inner)?))
        }
        Identifier::Any(true) => model::Principal::Any,
        Identifier::Any(false) => return Err(ctx.invalid("any", "must be true when set")),
        Identifier::Authenticated(Authenticated { principal_name }) => {
            model::Principal::Authenticated(
                principal_name
                    .as_ref()
                    .map(|m| string_matcher(&ctx.at("authenticated.principal_name"), m))
                    .transpose()?,
            )
        }
        Identifier::SourceIp(c) => model::Principal::DirectRemoteIp(cidr(&ctx.at("source_ip"), c)?),
        Identifier::DirectRemoteIp(c) => {
            model::Principal::DirectRemoteIp(cidr(&ctx.at("direct_remote_ip"), c)?)
        }
        Identifier::RemoteIp(c) => model::Principal::RemoteIp(cidr(&ctx.at("remote_ip"), c)?),
        Identifier::Header(h) => model::Principal::Header(header_matcher(&ctx.at("header"), h)?),
        Identifier::UrlPath(p) => model::Principal::UrlPath(path(&ctx.at("url_path"), p)?),
        Identifier::Metadata(m) => {
            model::Principal::Metadata(metadata_matcher(&ctx.at("metadata"), m)?)
        }
        Identifier::SourcedMetadata(m) => {
            model::Principal::Metadata(sourced_metadata(&ctx.at("sourced_metadata"), m)?)
        }
        Identifier::FilterState(f) => filter_state(&ctx.at("filter_state"), f)?,
        Identifier::Custom(ext) => {
            return Err(ctx.unsupported(format!("custom principal {:?}", ext.name)));
        }
    })
}

fn principals(ctx: &Ctx, ids: &[Principal]) -> Result<Vec<model::Principal>, DecodeError> {
    if ids.is_empty() {
        return Err(ctx.invalid("ids", "needs at least one principal"));
    }
    let mut problems = Problems::new(ctx);
    let decoded = problems.take_all(
        ids.iter()
            .enumerate()
            .map(|(i, p)| principal(&ctx.at_index("ids", i), p)),
    );
    problems.finish(Some(decoded))
}

fn path(ctx: &Ctx, pb: &PathMatcher) -> Result<model::StringMatcher, DecodeError> {
    match &pb.rule {
        Some(path_matcher::Rule::Path(m)) => string_matcher(&ctx.at("path"), m),
        None => Err(ctx.invalid("path", "a path matcher needs a string matcher")),
    }
}

/// Only the dynamic metadata source exists on vm-proxy's data path; route metadata would
/// need routes carrying it.
fn sourced_metadata(
    ctx: &Ctx,
    pb: &SourcedMetadata,
) -> Result<model::MetadataMatcher, DecodeError> {
    let SourcedMetadata {
        metadata_matcher: matcher,
        metadata_source,
    } = pb;
    match MetadataSource::try_from(*metadata_source) {
        Ok(MetadataSource::Dynamic) => {}
        Ok(MetadataSource::Route) => {
            return Err(ctx.unsupported("metadata_source ROUTE"));
        }
        Err(_) => {
            return Err(ctx.invalid(
                "metadata_source",
                format!("unknown metadata source {metadata_source}"),
            ));
        }
    }
    let matcher = matcher
        .as_ref()
        .ok_or_else(|| ctx.invalid("metadata_matcher", "is required"))?;
    metadata_matcher(&ctx.at("metadata_matcher"), matcher)
}

/// vm-proxy's filters write one filter state object: Istio's peer principal.
fn filter_state(ctx: &Ctx, pb: &FilterStateMatcher) -> Result<model::Principal, DecodeError> {
    let FilterStateMatcher { key, matcher } = pb;
    if key != PEER_PRINCIPAL {
        return Err(ctx.unsupported(format!("filter state key {key:?}")));
    }
    match matcher {
        Some(filter_state_matcher::Matcher::StringMatch(m)) => Ok(model::Principal::PeerPrincipal(
            string_matcher(&ctx.at("string_match"), m)?,
        )),
        Some(filter_state_matcher::Matcher::AddressMatch(_)) => {
            Err(ctx.unsupported(format!("address_match on filter state {key:?}")))
        }
        None => Err(ctx.invalid("", "a filter state matcher needs a matcher")),
    }
}
