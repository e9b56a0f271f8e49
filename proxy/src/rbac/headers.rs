//! Envoy's header matching rules over a request's headers.

use std::borrow::Cow;

use xds_client::model::{HeaderMatchRule, HeaderMatcher};

use super::attributes::Request;

/// A header's value as Envoy's matchers see it: pseudo-headers from the request line,
/// repeated headers joined with `,`; `None` when absent (always, without a request).
fn value<'a>(request: Option<&Request<'a>>, name: &str) -> Option<Cow<'a, str>> {
    let request = request?;
    match name {
        ":method" => return Some(Cow::Borrowed(request.method)),
        ":path" => return Some(Cow::Borrowed(request.path)),
        ":authority" => return Some(Cow::Borrowed(request.authority)),
        ":scheme" => return Some(Cow::Borrowed(request.scheme)),
        _ if name.starts_with(':') => return None,
        _ => {}
    }
    let mut values = request.headers.get_all(name).iter();
    let first = values.next()?;
    let text = |v: &'a http::HeaderValue| String::from_utf8_lossy(v.as_bytes());
    let mut joined = text(first);
    for more in values {
        let all = joined.to_mut();
        all.push(',');
        all.push_str(&text(more));
    }
    Some(joined)
}

/// Envoy's `HeaderUtility::matchHeaders`.
pub(super) fn matches(m: &HeaderMatcher, request: Option<&Request<'_>>) -> bool {
    let found = value(request, &m.name);
    let value = match (&found, m.treat_missing_as_empty) {
        (Some(v), _) => v.as_ref(),
        (None, true) => "",
        // A missing header matches `present_match: false`, and, inverted, `present_match:
        // true`; nothing else (inversion does not turn "absent" into a match).
        (None, false) => {
            return matches!(m.rule, HeaderMatchRule::Present(present) if present == m.invert);
        }
    };
    let matched = match &m.rule {
        HeaderMatchRule::Present(present) => *present,
        HeaderMatchRule::String(s) => s.matches(value),
        HeaderMatchRule::Range { start, end } => {
            value.parse::<i64>().is_ok_and(|n| *start <= n && n < *end)
        }
    };
    matched != m.invert
}
