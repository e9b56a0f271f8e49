//! `type.matcher.v3.MetadataMatcher` and the `ValueMatcher` it applies.

use std::sync::Arc;

use envoy_types::pb::envoy::r#type::matcher::v3::{
    DoubleMatcher, ListMatcher, MetadataMatcher, OrMatcher, ValueMatcher, double_matcher,
    list_matcher, metadata_matcher::PathSegment, metadata_matcher::path_segment::Segment,
    value_matcher::MatchPattern,
};
use envoy_types::pb::envoy::r#type::v3::DoubleRange;

use crate::decode::error::{Ctx, DecodeError};
use crate::decode::matcher::string_matcher;
use crate::model;

pub(crate) fn metadata_matcher(
    ctx: &Ctx,
    pb: &MetadataMatcher,
) -> Result<model::MetadataMatcher, DecodeError> {
    let MetadataMatcher {
        filter,
        path,
        value,
        invert,
    } = pb;
    if filter.is_empty() {
        return Err(ctx.invalid("filter", "must not be empty"));
    }
    if path.is_empty() {
        return Err(ctx.invalid("path", "needs at least one segment"));
    }
    let path = path
        .iter()
        .enumerate()
        .map(|(i, PathSegment { segment })| match segment {
            Some(Segment::Key(key)) if !key.is_empty() => Ok(Arc::from(key.as_str())),
            _ => Err(ctx.invalid(&format!("path[{i}].key"), "must not be empty")),
        })
        .collect::<Result<_, _>>()?;
    let value = value
        .as_ref()
        .ok_or_else(|| ctx.invalid("value", "is required"))?;
    Ok(model::MetadataMatcher {
        filter: Arc::from(filter.as_str()),
        path,
        value: value_matcher(&ctx.at("value"), value)?,
        invert: *invert,
    })
}

fn value_matcher(ctx: &Ctx, pb: &ValueMatcher) -> Result<model::ValueMatcher, DecodeError> {
    Ok(match &pb.match_pattern {
        Some(MatchPattern::NullMatch(_)) => model::ValueMatcher::Null,
        Some(MatchPattern::DoubleMatch(DoubleMatcher { match_pattern })) => {
            model::ValueMatcher::Number(match match_pattern {
                Some(double_matcher::MatchPattern::Exact(v)) => model::NumberMatcher::Exact(*v),
                Some(double_matcher::MatchPattern::Range(DoubleRange { start, end })) => {
                    model::NumberMatcher::Range {
                        start: *start,
                        end: *end,
                    }
                }
                None => return Err(ctx.invalid("double_match", "needs exact or range")),
            })
        }
        Some(MatchPattern::StringMatch(m)) => {
            model::ValueMatcher::String(string_matcher(&ctx.at("string_match"), m)?)
        }
        Some(MatchPattern::BoolMatch(b)) => model::ValueMatcher::Bool(*b),
        Some(MatchPattern::PresentMatch(p)) => model::ValueMatcher::Present(*p),
        Some(MatchPattern::ListMatch(list)) => {
            let ListMatcher { match_pattern } = &**list;
            match match_pattern {
                Some(list_matcher::MatchPattern::OneOf(inner)) => model::ValueMatcher::ListOneOf(
                    Box::new(value_matcher(&ctx.at("list_match.one_of"), inner)?),
                ),
                None => return Err(ctx.invalid("list_match", "needs one_of")),
            }
        }
        Some(MatchPattern::OrMatch(OrMatcher { value_matchers })) => {
            if value_matchers.len() < 2 {
                return Err(ctx.invalid("or_match.value_matchers", "needs at least two"));
            }
            model::ValueMatcher::Or(
                value_matchers
                    .iter()
                    .enumerate()
                    .map(|(i, m)| value_matcher(&ctx.at_index("or_match.value_matchers", i), m))
                    .collect::<Result<_, _>>()?,
            )
        }
        None => return Err(ctx.invalid("", "a value matcher needs a pattern")),
    })
}
