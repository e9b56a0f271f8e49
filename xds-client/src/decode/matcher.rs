//! Envoy's matchers: `type.matcher.v3.StringMatcher` / `RegexMatcher` and the route's
//! `HeaderMatcher` / `QueryParameterMatcher`, compiled once when decoded.

use std::sync::Arc;

use envoy_types::pb::envoy::config::route::v3::{
    HeaderMatcher, QueryParameterMatcher, header_matcher::HeaderMatchSpecifier,
    query_parameter_matcher::QueryParameterMatchSpecifier,
};
use envoy_types::pb::envoy::r#type::matcher::v3::{
    RegexMatchAndSubstitute, RegexMatcher, StringMatcher, string_matcher::MatchPattern,
};

use super::error::{Ctx, DecodeError};
use crate::model;

/// Envoy's default RE2 program size limit is 100; the `regex` crate has no such measure, so
/// the compiled size is bounded instead, well above any regex istiod writes.
const REGEX_SIZE_LIMIT: usize = 1 << 20;

/// A `safe_regex`, anchored so that it must match the whole input (Envoy's semantics for
/// every `RegexMatcher` use except substitution).
pub(crate) fn regex(ctx: &Ctx, pb: &RegexMatcher) -> Result<model::Regex, DecodeError> {
    let RegexMatcher {
        regex,
        // Only `google_re2` exists; its one field (`max_program_size`) is deprecated and
        // ignored by Envoy too.
        engine_type: _,
    } = pb;
    compile(ctx, regex, true)
}

/// A regex for substitution (`regex_rewrite`): matched anywhere in the input.
pub(crate) fn substitution(
    ctx: &Ctx,
    pb: &RegexMatchAndSubstitute,
) -> Result<(model::Regex, Arc<str>), DecodeError> {
    let RegexMatchAndSubstitute {
        pattern,
        substitution,
    } = pb;
    let Some(RegexMatcher {
        regex,
        engine_type: _,
    }) = pattern
    else {
        return Err(ctx.invalid("pattern", "is required"));
    };
    let compiled = compile(&ctx.at("pattern"), regex, false)?;
    Ok((compiled, Arc::from(substitution.as_str())))
}

fn compile(ctx: &Ctx, source: &str, whole: bool) -> Result<model::Regex, DecodeError> {
    if source.is_empty() {
        return Err(ctx.invalid("regex", "must not be empty"));
    }
    let pattern = match whole {
        true => format!("^(?:{source})$"),
        false => source.to_string(),
    };
    let compiled = regex::RegexBuilder::new(&pattern)
        .size_limit(REGEX_SIZE_LIMIT)
        .build()
        .map_err(|err| ctx.invalid("regex", format!("{source:?}: {err}")))?;
    Ok(model::Regex {
        source: Arc::from(source),
        compiled,
    })
}

pub(crate) fn string_matcher(
    ctx: &Ctx,
    pb: &StringMatcher,
) -> Result<model::StringMatcher, DecodeError> {
    let StringMatcher {
        ignore_case,
        match_pattern,
    } = pb;
    let pattern = match match_pattern {
        Some(MatchPattern::Exact(s)) => model::StringPattern::Exact(Arc::from(s.as_str())),
        Some(MatchPattern::Prefix(s)) => model::StringPattern::Prefix(nonempty(ctx, "prefix", s)?),
        Some(MatchPattern::Suffix(s)) => model::StringPattern::Suffix(nonempty(ctx, "suffix", s)?),
        Some(MatchPattern::Contains(s)) => {
            model::StringPattern::Contains(nonempty(ctx, "contains", s)?)
        }
        Some(MatchPattern::SafeRegex(re)) => {
            model::StringPattern::Regex(regex(&ctx.at("safe_regex"), re)?)
        }
        Some(MatchPattern::Custom(ext)) => {
            return Err(ctx.unsupported(format!("custom string matcher {:?}", ext.name)));
        }
        None => return Err(ctx.invalid("", "a string matcher needs a match pattern")),
    };
    Ok(model::StringMatcher {
        pattern,
        ignore_case: *ignore_case,
    })
}

fn nonempty(ctx: &Ctx, field: &str, value: &str) -> Result<Arc<str>, DecodeError> {
    match value.is_empty() {
        true => Err(ctx.invalid(field, "must not be empty")),
        false => Ok(Arc::from(value)),
    }
}

#[allow(deprecated)] // deprecated fields still arrive in configs and are judged like the rest
pub(crate) fn header_matcher(
    ctx: &Ctx,
    pb: &HeaderMatcher,
) -> Result<model::HeaderMatcher, DecodeError> {
    let HeaderMatcher {
        name,
        invert_match,
        treat_missing_header_as_empty,
        header_match_specifier,
    } = pb;
    if name.is_empty()
        || http::HeaderName::from_bytes(name.trim_start_matches(':').as_bytes()).is_err()
    {
        return Err(ctx.invalid("name", format!("{name:?} is not a header name")));
    }
    let string = |pattern| {
        model::HeaderMatchRule::String(model::StringMatcher {
            pattern,
            ignore_case: false,
        })
    };
    let rule = match header_match_specifier {
        // Envoy reads an empty `exact_match` as "any value".
        Some(HeaderMatchSpecifier::ExactMatch(s)) if s.is_empty() => {
            model::HeaderMatchRule::Present(true)
        }
        Some(HeaderMatchSpecifier::ExactMatch(s)) => {
            string(model::StringPattern::Exact(Arc::from(s.as_str())))
        }
        Some(HeaderMatchSpecifier::SafeRegexMatch(re)) => string(model::StringPattern::Regex(
            regex(&ctx.at("safe_regex_match"), re)?,
        )),
        Some(HeaderMatchSpecifier::PrefixMatch(s)) => string(model::StringPattern::Prefix(
            nonempty(ctx, "prefix_match", s)?,
        )),
        Some(HeaderMatchSpecifier::SuffixMatch(s)) => string(model::StringPattern::Suffix(
            nonempty(ctx, "suffix_match", s)?,
        )),
        Some(HeaderMatchSpecifier::ContainsMatch(s)) => string(model::StringPattern::Contains(
            nonempty(ctx, "contains_match", s)?,
        )),
        Some(HeaderMatchSpecifier::StringMatch(m)) => {
            model::HeaderMatchRule::String(string_matcher(&ctx.at("string_match"), m)?)
        }
        Some(HeaderMatchSpecifier::RangeMatch(r)) => {
            if r.start > r.end {
                return Err(ctx.invalid("range_match", "start must not be above end"));
            }
            model::HeaderMatchRule::Range {
                start: r.start,
                end: r.end,
            }
        }
        Some(HeaderMatchSpecifier::PresentMatch(present)) => {
            model::HeaderMatchRule::Present(*present)
        }
        // No specifier: Envoy matches on presence.
        None => model::HeaderMatchRule::Present(true),
    };
    Ok(model::HeaderMatcher {
        name: Arc::from(name.to_ascii_lowercase()),
        rule,
        invert: *invert_match,
        treat_missing_as_empty: *treat_missing_header_as_empty,
    })
}

pub(crate) fn query_matcher(
    ctx: &Ctx,
    pb: &QueryParameterMatcher,
) -> Result<model::QueryParameterMatcher, DecodeError> {
    let QueryParameterMatcher {
        name,
        query_parameter_match_specifier,
    } = pb;
    if name.is_empty() {
        return Err(ctx.invalid("name", "a query parameter matcher needs a name"));
    }
    let value = match query_parameter_match_specifier {
        Some(QueryParameterMatchSpecifier::StringMatch(m)) => {
            Some(string_matcher(&ctx.at("string_match"), m)?)
        }
        Some(QueryParameterMatchSpecifier::PresentMatch(true)) | None => None,
        Some(QueryParameterMatchSpecifier::PresentMatch(false)) => {
            return Err(ctx.unsupported("present_match: false"));
        }
    };
    Ok(model::QueryParameterMatcher {
        name: Arc::from(name.as_str()),
        value,
    })
}
