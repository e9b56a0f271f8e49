//! Envoy's RBAC engine: policies, permissions and principals.

use std::sync::Arc;

use tracing::debug;
use xds_client::model::{
    HttpRbac, MetadataMatcher, NetworkRbac, NumberMatcher, Permission, Principal, RbacAction,
    RbacRules, ValueMatcher,
};

use super::attributes::{Connection, Request};
use super::headers;
use super::metadata::MetadataValue;

/// What one set of rules says about a connection or request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub allowed: bool,
    /// The first policy (by name) that matched, for logs and stats.
    pub policy: Option<Arc<str>>,
}

/// Both rule sets of a filter: `enforced` decides (`None`: no rules, allowed), `shadow` is
/// only reported.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    pub enforced: Option<Decision>,
    pub shadow: Option<Decision>,
}

impl Verdict {
    pub fn allowed(&self) -> bool {
        self.enforced.as_ref().is_none_or(|d| d.allowed)
    }
}

/// The network filter on a connection: request attributes are absent, so a path never
/// matches and headers are empty, as in Envoy's network RBAC.
pub fn check_network(rbac: &NetworkRbac, connection: &Connection<'_>) -> Verdict {
    verdict(
        rbac.rules.as_ref(),
        rbac.shadow_rules.as_ref(),
        connection,
        None,
    )
}

/// The HTTP filter on one request of `connection`.
pub fn check_http(rbac: &HttpRbac, connection: &Connection<'_>, request: &Request<'_>) -> Verdict {
    verdict(
        rbac.rules.as_ref(),
        rbac.shadow_rules.as_ref(),
        connection,
        Some(request),
    )
}

fn verdict(
    rules: Option<&RbacRules>,
    shadow: Option<&RbacRules>,
    connection: &Connection<'_>,
    request: Option<&Request<'_>>,
) -> Verdict {
    Verdict {
        enforced: rules.map(|r| evaluate(r, connection, request)),
        shadow: shadow.map(|r| evaluate(r, connection, request)),
    }
}

/// One rule set: ALLOW allows only on a match, DENY denies only on a match, LOG allows.
pub fn evaluate(
    rules: &RbacRules,
    connection: &Connection<'_>,
    request: Option<&Request<'_>>,
) -> Decision {
    let input = Input {
        connection,
        request,
    };
    let policy = rules
        .policies
        .iter()
        .find(|p| {
            p.permissions.iter().any(|m| input.permission(m))
                && p.principals.iter().any(|m| input.principal(m))
        })
        .map(|p| p.name.clone());
    let matched = policy.is_some();
    let allowed = match rules.action {
        RbacAction::Allow => matched,
        RbacAction::Deny => !matched,
        RbacAction::Log => true,
    };
    debug!(action = ?rules.action, policy = policy.as_deref(), allowed, "rbac evaluated");
    Decision { allowed, policy }
}

struct Input<'c, 'a> {
    connection: &'c Connection<'a>,
    request: Option<&'c Request<'a>>,
}

impl Input<'_, '_> {
    fn permission(&self, p: &Permission) -> bool {
        let c = self.connection;
        match p {
            Permission::And(all) => all.iter().all(|p| self.permission(p)),
            Permission::Or(any) => any.iter().any(|p| self.permission(p)),
            Permission::Not(p) => !self.permission(p),
            Permission::Any => true,
            Permission::Header(h) => headers::matches(h, self.request),
            Permission::UrlPath(m) => self.path_matches(m),
            Permission::DestinationIp(net) => net.contains(&c.destination.ip()),
            Permission::DestinationPort(port) => c.destination.port() == *port,
            Permission::DestinationPortRange { start, end } => {
                (*start..*end).contains(&u32::from(c.destination.port()))
            }
            Permission::RequestedServerName(m) => m.matches(c.server_name.unwrap_or("")),
            Permission::Metadata(m) => self.metadata(m),
        }
    }

    fn principal(&self, p: &Principal) -> bool {
        let c = self.connection;
        match p {
            Principal::And(all) => all.iter().all(|p| self.principal(p)),
            Principal::Or(any) => any.iter().any(|p| self.principal(p)),
            Principal::Not(p) => !self.principal(p),
            Principal::Any => true,
            Principal::Authenticated(None) => c.peer_principal.is_some(),
            Principal::Authenticated(Some(m)) | Principal::PeerPrincipal(m) => {
                c.peer_principal.is_some_and(|id| m.matches(id))
            }
            Principal::DirectRemoteIp(net) => net.contains(&c.source.ip()),
            Principal::RemoteIp(net) => {
                net.contains(&self.request.map_or(c.source.ip(), |r| r.remote_ip))
            }
            Principal::Header(h) => headers::matches(h, self.request),
            Principal::UrlPath(m) => self.path_matches(m),
            Principal::Metadata(m) => self.metadata(m),
        }
    }

    /// Envoy's `PathMatcher`: the path without query and fragment; no request, no match.
    fn path_matches(&self, m: &xds_client::model::StringMatcher) -> bool {
        self.request.is_some_and(|r| {
            let end = r.path.find(['?', '#']).unwrap_or(r.path.len());
            m.matches(&r.path[..end])
        })
    }

    /// Envoy's `MetadataMatcher`: request metadata on a request, else the connection's.
    fn metadata(&self, m: &MetadataMatcher) -> bool {
        let source = self
            .request
            .map_or(self.connection.metadata, |r| r.metadata);
        value_matches(&m.value, source.get(&m.filter, &m.path)) != m.invert
    }
}

/// Envoy's `ValueMatcher` on a value that may be absent.
fn value_matches(m: &ValueMatcher, value: Option<&MetadataValue>) -> bool {
    match (m, value) {
        (ValueMatcher::Present(present), v) => *present == v.is_some(),
        (ValueMatcher::Null, Some(MetadataValue::Null)) => true,
        (ValueMatcher::Number(n), Some(MetadataValue::Number(v))) => match n {
            NumberMatcher::Exact(x) => v == x,
            NumberMatcher::Range { start, end } => start <= v && v < end,
        },
        (ValueMatcher::String(s), Some(MetadataValue::String(v))) => s.matches(v),
        (ValueMatcher::Bool(b), Some(MetadataValue::Bool(v))) => b == v,
        (ValueMatcher::ListOneOf(inner), Some(MetadataValue::List(items))) => {
            items.iter().any(|item| value_matches(inner, Some(item)))
        }
        (ValueMatcher::Or(any), v) => any.iter().any(|m| value_matches(m, v)),
        _ => false,
    }
}
