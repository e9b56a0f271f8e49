//! The network and HTTP RBAC filter configs around the shared rules.

use std::sync::Arc;

use envoy_types::pb::envoy::extensions::filters::http::rbac::v3::{Rbac as HttpRbac, RbacPerRoute};
use envoy_types::pb::envoy::extensions::filters::network::rbac::v3::{
    Rbac as NetworkRbac, rbac::EnforcementType,
};

use super::rules::rules;
use crate::decode::error::{Ctx, DecodeError, Problems};
use crate::decode::time::duration;
use crate::model;

/// `extensions.filters.network.rbac.v3.RBAC`.
pub(crate) fn network_rbac(ctx: &Ctx, pb: &NetworkRbac) -> Result<model::NetworkRbac, DecodeError> {
    let NetworkRbac {
        rules: enforced,
        matcher,
        shadow_rules,
        shadow_matcher,
        shadow_rules_stat_prefix,
        stat_prefix,
        enforcement_type,
        delay_deny,
    } = pb;
    let mut problems = Problems::new(ctx);
    problems.take(
        ctx.unsupported_fields()
            .check("matcher", matcher.is_some())
            .check("shadow_matcher", shadow_matcher.is_some())
            .finish(),
    );
    if stat_prefix.is_empty() {
        problems.push(ctx.invalid("stat_prefix", "must not be empty"));
    }
    let enforcement = match EnforcementType::try_from(*enforcement_type) {
        Ok(EnforcementType::OneTimeOnFirstByte) => model::Enforcement::OneTimeOnFirstByte,
        Ok(EnforcementType::Continuous) => model::Enforcement::Continuous,
        Err(_) => {
            problems.push(ctx.invalid(
                "enforcement_type",
                format!("unknown enforcement type {enforcement_type}"),
            ));
            model::Enforcement::default()
        }
    };
    let delay_deny = problems
        .take(
            delay_deny
                .as_ref()
                .map(|d| duration(ctx, "delay_deny", d))
                .transpose(),
        )
        .flatten()
        .filter(|d| !d.is_zero());
    let enforced = problems.take(
        enforced
            .as_ref()
            .map(|r| rules(&ctx.at("rules"), r))
            .transpose(),
    );
    let shadow = problems.take(
        shadow_rules
            .as_ref()
            .map(|r| rules(&ctx.at("shadow_rules"), r))
            .transpose(),
    );
    problems.finish(Some(model::NetworkRbac {
        rules: enforced.flatten(),
        shadow_rules: shadow.flatten(),
        stat_prefix: Arc::from(stat_prefix.as_str()),
        shadow_rules_stat_prefix: Arc::from(shadow_rules_stat_prefix.as_str()),
        enforcement,
        delay_deny,
    }))
}

/// `extensions.filters.http.rbac.v3.RBAC`, for the HTTP filter decoder.
pub(crate) fn http_rbac(ctx: &Ctx, pb: &HttpRbac) -> Result<model::HttpRbac, DecodeError> {
    let HttpRbac {
        rules: enforced,
        rules_stat_prefix,
        matcher,
        shadow_rules,
        shadow_matcher,
        shadow_rules_stat_prefix,
        track_per_rule_stats,
    } = pb;
    let mut problems = Problems::new(ctx);
    problems.take(
        ctx.unsupported_fields()
            .check("matcher", matcher.is_some())
            .check("shadow_matcher", shadow_matcher.is_some())
            .finish(),
    );
    let enforced = problems.take(
        enforced
            .as_ref()
            .map(|r| rules(&ctx.at("rules"), r))
            .transpose(),
    );
    let shadow = problems.take(
        shadow_rules
            .as_ref()
            .map(|r| rules(&ctx.at("shadow_rules"), r))
            .transpose(),
    );
    problems.finish(Some(model::HttpRbac {
        rules: enforced.flatten(),
        shadow_rules: shadow.flatten(),
        rules_stat_prefix: Arc::from(rules_stat_prefix.as_str()),
        shadow_rules_stat_prefix: Arc::from(shadow_rules_stat_prefix.as_str()),
        track_per_rule_stats: *track_per_rule_stats,
    }))
}

/// `extensions.filters.http.rbac.v3.RBACPerRoute` (in a route's `typed_per_filter_config`):
/// the config that replaces the listener's for that route; `None` turns RBAC off there.
pub(crate) fn http_rbac_per_route(
    ctx: &Ctx,
    pb: &RbacPerRoute,
) -> Result<Option<model::HttpRbac>, DecodeError> {
    let RbacPerRoute { rbac } = pb;
    rbac.as_ref()
        .map(|r| http_rbac(&ctx.at("rbac"), r))
        .transpose()
}
