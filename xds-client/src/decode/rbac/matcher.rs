//! Envoy's string, regex and header matchers, compiled into [`crate::model`] matchers.
//!
//! Written for RBAC; the route decoder needs the same three, so these are meant to be shared.

use std::sync::Arc;

use envoy_types::pb::envoy::config::route::v3::{
    HeaderMatcher, header_matcher::HeaderMatchSpecifier,
};
use envoy_types::pb::envoy::r#type::matcher::v3::{
    RegexMatcher, StringMatcher, string_matcher::MatchPattern,
};
use envoy_types::pb::envoy::r#type::v3::Int64Range;

use crate::decode::error::{Ctx, DecodeError};
use crate::model;

/// `type.matcher.v3.StringMatcher`.
pub(crate) fn string_matcher(
    ctx: &Ctx,
    pb: &StringMatcher,
) -> Result<model::StringMatcher, DecodeError> {
    let StringMatcher {
        ignore_case,
        match_pattern,
    } = pb;
    let non_empty = |field: &str, s: &str| {
        if s.is_empty() {
            Err(ctx.invalid(field, "must not be empty"))
        } else {
            Ok(Arc::<str>::from(s))
        }
    };
    let pattern = match match_pattern {
        Some(MatchPattern::Exact(s)) => model::StringPattern::Exact(Arc::from(s.as_str())),
        Some(MatchPattern::Prefix(s)) => model::StringPattern::Prefix(non_empty("prefix", s)?),
        Some(MatchPattern::Suffix(s)) => model::StringPattern::Suffix(non_empty("suffix", s)?),
        Some(MatchPattern::Contains(s)) => {
            model::StringPattern::Contains(non_empty("contains", s)?)
        }
        Some(MatchPattern::SafeRegex(re)) => {
            model::StringPattern::Regex(regex(&ctx.at("safe_regex"), re)?)
        }
        Some(MatchPattern::Custom(ext)) => {
            return Err(ctx.unsupported(format!("custom string matcher {:?}", ext.name)));
        }
        None => return Err(ctx.invalid("", "a string matcher needs a pattern")),
    };
    Ok(model::StringMatcher {
        pattern,
        ignore_case: *ignore_case,
    })
}

/// `type.matcher.v3.RegexMatcher`: RE2 syntax, which Rust's `regex` shares for everything
/// RE2 accepts (neither has look-around or back-references); always a full match.
#[allow(deprecated)] // `google_re2` is deprecated yet still accepted by Envoy
pub(crate) fn regex(ctx: &Ctx, pb: &RegexMatcher) -> Result<model::Regex, DecodeError> {
    let RegexMatcher {
        regex,
        // Only RE2 exists; its `max_program_size` is a deprecated limit Envoy no longer reads.
        engine_type: _,
    } = pb;
    let compiled = regex::Regex::new(&format!("^(?:{regex})$"))
        .map_err(|err| ctx.invalid("regex", format!("{regex:?}: {err}")))?;
    Ok(model::Regex {
        source: Arc::from(regex.as_str()),
        compiled,
    })
}

/// `config.route.v3.HeaderMatcher`.
#[allow(deprecated)] // the deprecated `*_match` forms are what istiod 1.18 still sends
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
        Some(HeaderMatchSpecifier::PrefixMatch(s)) => {
            string(model::StringPattern::Prefix(Arc::from(s.as_str())))
        }
        Some(HeaderMatchSpecifier::SuffixMatch(s)) => {
            string(model::StringPattern::Suffix(Arc::from(s.as_str())))
        }
        Some(HeaderMatchSpecifier::ContainsMatch(s)) => {
            string(model::StringPattern::Contains(Arc::from(s.as_str())))
        }
        Some(HeaderMatchSpecifier::SafeRegexMatch(re)) => string(model::StringPattern::Regex(
            regex(&ctx.at("safe_regex_match"), re)?,
        )),
        Some(HeaderMatchSpecifier::RangeMatch(Int64Range { start, end })) => {
            if start > end {
                return Err(ctx.invalid("range_match", format!("start {start} above end {end}")));
            }
            model::HeaderMatchRule::Range {
                start: *start,
                end: *end,
            }
        }
        Some(HeaderMatchSpecifier::PresentMatch(present)) => {
            model::HeaderMatchRule::Present(*present)
        }
        Some(HeaderMatchSpecifier::StringMatch(m)) => {
            model::HeaderMatchRule::String(string_matcher(&ctx.at("string_match"), m)?)
        }
        // Envoy: no specifier means "the header is present".
        None => model::HeaderMatchRule::Present(true),
    };
    Ok(model::HeaderMatcher {
        name: Arc::from(name.to_ascii_lowercase().as_str()),
        rule,
        invert: *invert_match,
        treat_missing_as_empty: *treat_missing_header_as_empty,
    })
}
