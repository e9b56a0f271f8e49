//! Envoy's role-based access control (`config.rbac.v3.RBAC`), as istiod writes Istio
//! `AuthorizationPolicy` into the network and HTTP RBAC filters.
//!
//! A policy matches when at least one of its permissions (what is done) and at least one of
//! its principals (who does it) match. Regexes are compiled when decoded.

use std::sync::Arc;
use std::time::Duration;

use ipnet::IpNet;

use super::{HeaderMatcher, StringMatcher};

/// Envoy's `config.rbac.v3.RBAC`: an action and named policies.
#[derive(Debug, Clone)]
pub struct RbacRules {
    pub action: RbacAction,
    /// In name order (Envoy keeps them in a map; the first matching name is reported, so a
    /// stable order keeps logs deterministic).
    pub policies: Vec<RbacPolicy>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RbacAction {
    /// Allow only what a policy matches.
    Allow,
    /// Deny what a policy matches, allow the rest.
    Deny,
    /// Allow everything; a match only marks the request for access logging.
    Log,
}

#[derive(Debug, Clone)]
pub struct RbacPolicy {
    pub name: Arc<str>,
    /// Any of them.
    pub permissions: Vec<Permission>,
    /// Any of them.
    pub principals: Vec<Principal>,
}

/// What a connection or request does (`config.rbac.v3.Permission`).
#[derive(Debug, Clone)]
pub enum Permission {
    And(Vec<Permission>),
    Or(Vec<Permission>),
    Not(Box<Permission>),
    Any,
    /// A request header (pseudo-headers included); on a connection without a request the
    /// headers are empty, as in Envoy's network filter.
    Header(HeaderMatcher),
    /// The request path without query and fragment; never matches without a request.
    UrlPath(StringMatcher),
    DestinationIp(IpNet),
    DestinationPort(u16),
    /// `[start, end)`.
    DestinationPortRange {
        start: u32,
        end: u32,
    },
    /// The TLS SNI; the empty string when the client sent none.
    RequestedServerName(StringMatcher),
    /// Dynamic metadata (`metadata`, and `sourced_metadata` from the DYNAMIC source).
    Metadata(MetadataMatcher),
}

/// Who is connecting (`config.rbac.v3.Principal`).
#[derive(Debug, Clone)]
pub enum Principal {
    And(Vec<Principal>),
    Or(Vec<Principal>),
    Not(Box<Principal>),
    Any,
    /// The peer of a TLS connection. `None` matches any peer that presented a certificate;
    /// `Some` is compared with the peer's SPIFFE ID, the one URI SAN of a mesh certificate
    /// (Envoy would go on to DNS SANs and the subject, which mesh certificates leave empty).
    Authenticated(Option<StringMatcher>),
    /// The peer address of the connection (`direct_remote_ip`, and the deprecated
    /// `source_ip`, which is the same address without PROXY protocol).
    DirectRemoteIp(IpNet),
    /// The client address as trusted (`x-forwarded-for` per the HCM), else the peer address.
    RemoteIp(IpNet),
    Header(HeaderMatcher),
    UrlPath(StringMatcher),
    Metadata(MetadataMatcher),
    /// Filter state `io.istio.peer_principal` (Istio 1.18/1.19): the mTLS peer's SPIFFE ID,
    /// set by Istio's authn filter; absent on plaintext connections.
    PeerPrincipal(StringMatcher),
}

/// Envoy's `type.matcher.v3.MetadataMatcher`: the value at `path` inside the dynamic
/// metadata of `filter`.
#[derive(Debug, Clone)]
pub struct MetadataMatcher {
    pub filter: Arc<str>,
    /// Keys into nested structs; never empty.
    pub path: Vec<Arc<str>>,
    pub value: ValueMatcher,
    pub invert: bool,
}

/// Envoy's `type.matcher.v3.ValueMatcher` (a `google.protobuf.Value` test).
#[derive(Debug, Clone)]
pub enum ValueMatcher {
    Null,
    Number(NumberMatcher),
    String(StringMatcher),
    Bool(bool),
    /// `present_match`: whether a value is there at all.
    Present(bool),
    /// `list_match.one_of`: a list with at least one element matching.
    ListOneOf(Box<ValueMatcher>),
    Or(Vec<ValueMatcher>),
}

/// Envoy's `type.matcher.v3.DoubleMatcher`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum NumberMatcher {
    Exact(f64),
    /// `[start, end)`.
    Range {
        start: f64,
        end: f64,
    },
}

/// `envoy.filters.network.rbac` (`extensions.filters.network.rbac.v3.RBAC`).
#[derive(Debug, Clone)]
pub struct NetworkRbac {
    /// `None`: nothing is enforced (Envoy: rules absent). Present but without policies, an
    /// ALLOW denies every connection.
    pub rules: Option<RbacRules>,
    /// Evaluated and reported, never enforced (Istio: dry-run policies).
    pub shadow_rules: Option<RbacRules>,
    pub stat_prefix: Arc<str>,
    pub shadow_rules_stat_prefix: Arc<str>,
    pub enforcement: Enforcement,
    /// How long a denied connection is held open before it is closed; `None`: at once.
    pub delay_deny: Option<Duration>,
}

/// Envoy's `EnforcementType`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Enforcement {
    #[default]
    OneTimeOnFirstByte,
    /// Re-evaluated on every read: only dynamic metadata could change the answer, so for
    /// vm-proxy (whose network filters write none) the first answer holds.
    Continuous,
}

/// `envoy.filters.http.rbac` (`extensions.filters.http.rbac.v3.RBAC`).
#[derive(Debug, Clone)]
pub struct HttpRbac {
    pub rules: Option<RbacRules>,
    pub shadow_rules: Option<RbacRules>,
    pub rules_stat_prefix: Arc<str>,
    pub shadow_rules_stat_prefix: Arc<str>,
    /// Envoy counts each policy's allows/denies under its name when set.
    pub track_per_rule_stats: bool,
}
